/**
 * `deno task bench`: tapir against pasta, slirp4netns and a plain veth pair,
 * measured side by side, with the TCP scenarios also at guest MTU 1500
 * (where tapir without offloads, `tapir-nooffload`, joins them); writes
 * docs/BENCHMARKS.md and docs/bench.svg.
 *
 * Theory of operation: build a sandbox (bench/hostns.ts), then for each
 * repetition run every contender's session (bench/session.ts) in an order
 * that rotates between repetitions, collecting outcomes into one
 * {@linkcode Results}; then describe the machine, and render the report and
 * the chart from the results alone. The sandbox is torn down whatever
 * happens: a normal end, an exception, or SIGINT/SIGTERM.
 *
 * `--quick` is the smoke test CI runs (tests/bench_test.ts): every scenario
 * once, briefly, to show that each contender and scenario still works. Its
 * numbers are for nothing else.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { VERSION } from "../lib/version.ts";
import { contenders, ROOTLESS_USER, writeLaunchers } from "./contenders.ts";
import { createHostEnv } from "./hostns.ts";
import { type ContenderName, CONTENDERS, Results } from "./metrics.ts";
import { Cleanup } from "./proc.ts";
import { type Machine, renderMarkdown, type RunInfo } from "./report.ts";
import { runSession, type SessionConfig } from "./session.ts";
import { type StreamRscResults, streamRscRun } from "./rsc_stream.ts";
import { BACKEND_CASES, type BackendResults, backendRun } from "./vhost_backend.ts";
import { qemuGuestRun, type QemuResults } from "./qemu_guest.ts";
import { type ApiLoadResults, apiLoadRun } from "./api_load.ts";
import { flowsCount, type FlowsResults, flowsRun, SETTLE_LIMIT_S } from "./flows_scale.ts";
import {
  type EngineStartupResults,
  engineStartupResults,
  engineStartupRun,
} from "./engine_startup.ts";
import { renderSvg } from "./svg.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const MAIN_TS = `${ROOT}/main.ts`;

const USAGE = `Usage: deno run -A bench/run.ts [OPTIONS]   (as root)

Benchmarks tapir against pasta, slirp4netns and a plain veth pair inside a
throwaway network namespace, the TCP scenarios at guest MTU 65520 and 1500
(tapir-nooffload, tapir with --no-offload, runs only at 1500); writes
BENCHMARKS.md and bench.svg.

Options:
  --quick               smoke test: 1 s per scenario, 1 repetition, fewer round trips
  --out DIR             where to write BENCHMARKS.md and bench.svg (default: docs/)
  --json FILE           also write every outcome as JSON to FILE
  --reps N              repetitions (default 3; quick 1)
  --duration S          seconds per throughput / connection-rate scenario (default 5; quick 1)
  --round-trips N       ping-pong round trips (default 20000; quick 2000)
  --udp-rate RATE       UDP offered rate, iperf3 -b syntax (default 500M)
  --startup-runs N      fresh launches per repetition for start-up time (default 3; quick 1)
  --contenders LIST     comma-separated subset of ${CONTENDERS.join(",")}
  -h, --help            show this help
`;

/** Parsed command line. */
export interface BenchOptions {
  /** Session knobs. */
  readonly session: SessionConfig;
  /** Repetitions. */
  readonly reps: number;
  /** Output directory. */
  readonly out: string;
  /** JSON output file, if wanted. */
  readonly json: string | null;
  /** Quick mode. */
  readonly quick: boolean;
  /** Contenders to run, in base order. */
  readonly contenders: readonly ContenderName[];
}

/** A bad command line: the message names the option. */
export class UsageError extends Error {}

function positive(name: string, text: string | undefined, fallback: number, int = true): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0 || (int && !Number.isInteger(n))) {
    throw new UsageError(`--${name}: ${text} is not a positive ${int ? "integer" : "number"}`);
  }
  return n;
}

/** Parses the command line (without the program name); throws {@linkcode UsageError}. */
export function parseOptions(args: string[]): BenchOptions | "help" {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      options: {
        quick: { type: "boolean" },
        out: { type: "string" },
        json: { type: "string" },
        reps: { type: "string" },
        duration: { type: "string" },
        "round-trips": { type: "string" },
        "udp-rate": { type: "string" },
        "startup-runs": { type: "string" },
        contenders: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (values.help) return "help";
  const quick = values.quick ?? false;
  const udpRate = values["udp-rate"] ?? "500M";
  if (!/^\d+(\.\d+)?[KMG]?$/.test(udpRate)) {
    throw new UsageError(`--udp-rate: ${udpRate} is not a rate like 500M or 1G`);
  }
  let chosen: ContenderName[] = [...CONTENDERS];
  if (values.contenders !== undefined) {
    const list = values.contenders.split(",").map((s) => s.trim()).filter((s) => s !== "");
    for (const c of list) {
      if (!(CONTENDERS as readonly string[]).includes(c)) {
        throw new UsageError(`--contenders: ${c} is not one of ${CONTENDERS.join(", ")}`);
      }
    }
    if (list.length === 0) throw new UsageError("--contenders: the list is empty");
    chosen = CONTENDERS.filter((c) => list.includes(c));
  }
  return {
    session: {
      durationS: positive("duration", values.duration, quick ? 1 : 5),
      roundTrips: positive("round-trips", values["round-trips"], quick ? 2000 : 20000),
      udpRate,
      udpLength: 1400,
      startupRuns: positive("startup-runs", values["startup-runs"], quick ? 1 : 3),
      probeTimeoutS: quick ? 2 : 3,
    },
    reps: positive("reps", values.reps, quick ? 1 : 3),
    out: values.out ?? `${ROOT}/docs`,
    json: values.json ?? null,
    quick,
    contenders: chosen,
  };
}

/** `list` rotated left by `by` places: the order for repetition `by`. */
export function rotate<T>(list: readonly T[], by: number): T[] {
  const k = list.length ? by % list.length : 0;
  return [...list.slice(k), ...list.slice(0, k)];
}

const dec = new TextDecoder();

async function firstLine(argv: string[], env?: Record<string, string>): Promise<string | null> {
  try {
    const out = await new Deno.Command(argv[0], {
      args: argv.slice(1),
      stdout: "piped",
      stderr: "piped",
      env,
    }).output();
    const text = dec.decode(out.stdout).trim() || dec.decode(out.stderr).trim();
    return out.success && text ? text.split("\n")[0] : null;
  } catch {
    return null;
  }
}

async function describeMachine(): Promise<Machine> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown CPU";
  const git = await firstLine(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]);
  // GIT_OPTIONAL_LOCKS=0: look, do not refresh the index (no git state changes).
  const dirty = await firstLine([
    "git",
    "-C",
    ROOT,
    "status",
    "--porcelain",
    "--untracked-files=no",
  ], {
    GIT_OPTIONAL_LOCKS: "0",
  });
  const passt = await firstLine(["dpkg-query", "-W", "-f=${Version}", "passt"]);
  const slirp = await new Deno.Command("slirp4netns", { args: ["--version"], stdout: "piped" })
    .output().then((o) => dec.decode(o.stdout)).catch(() => "");
  const slirpVersion = /slirp4netns version (\S+)/.exec(slirp)?.[1];
  const libslirp = /libslirp: (\S+)/.exec(slirp)?.[1];
  const iperf = await firstLine(["iperf3", "--version"]);
  return {
    cpu,
    cores: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    versions: {
      tapir: `${VERSION}${git ? ` (git ${git}${dirty ? ", with uncommitted changes" : ""})` : ""}`,
      deno: `${Deno.version.deno} (V8 ${Deno.version.v8})`,
      pasta: passt ? `Debian passt ${passt}` : "not installed",
      slirp4netns: slirpVersion ? `${slirpVersion} (libslirp ${libslirp ?? "?"})` : "not installed",
      iperf3: iperf ?? "not installed",
    },
  };
}

/**
 * Runs `deno fmt` on the generated files with the project's settings, so the
 * committed report and chart pass `deno fmt --check` (Markdown tables
 * aligned and prose wrapped, SVG indented) without the renderers imitating
 * the formatter.
 */
async function formatOutputs(paths: string[]): Promise<void> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "--quiet", "--config", `${ROOT}/deno.json`, ...paths],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    console.error(`bench: deno fmt ${paths.join(" ")} failed: ${dec.decode(out.stderr).trim()}`);
  }
}

/** The 1-minute load average. */
function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

async function bench(opts: BenchOptions, cleanup: Cleanup): Promise<void> {
  const started = performance.now();
  const loadBefore = loadAverage();
  const date = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const progress = (line: string) => console.error(line);
  const env = await createHostEnv(cleanup);
  await writeLaunchers(env);
  const wired = contenders(env, MAIN_TS).filter((c) => opts.contenders.includes(c.name));
  const results = new Results(opts.reps);
  const order: ContenderName[][] = [];
  let port = 20000;
  for (let rep = 0; rep < opts.reps; rep++) {
    const these = rotate(wired, rep);
    order.push(these.map((c) => c.name));
    for (const c of these) {
      await runSession(env, c, rep, port, opts.session, results, progress);
      port += 100;
    }
  }
  let streamRsc: StreamRscResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const r: StreamRscResults = { bytes: opts.quick ? 64 * 2 ** 20 : 2 ** 30, on: [], off: [] };
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const on of rep % 2 ? [false, true] : [true, false]) {
        progress(`bench: rep ${rep + 1}: stream backend, RSC ${on ? "on" : "off"}`);
        (on ? r.on : r.off).push(await streamRscRun(env, MAIN_TS, port++, r.bytes, on));
      }
    }
    streamRsc = r;
  }
  let backends: BackendResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const b: BackendResults = {
      bytes: opts.quick ? 64 * 2 ** 20 : 2 * 2 ** 30,
      runs: { streamUp: [], streamDown: [], vhostUp: [], vhostDown: [] },
    };
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const c of rotate([...BACKEND_CASES], rep)) {
        progress(`bench: rep ${rep + 1}: ${c.key}`);
        b.runs[c.key].push(await backendRun(env, MAIN_TS, port++, b.bytes, c.vhost, c.upload));
      }
    }
    backends = b;
  }
  let qemu: QemuResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const q: QemuResults = { bytes: (opts.quick ? 4 : 32) * 2 ** 20, stream: [], vhost: [] };
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const vhost of rep % 2 ? [true, false] : [false, true]) {
        progress(
          `bench: rep ${rep + 1}: QEMU guest over ${vhost ? "vhost-user" : "the stream socket"}`,
        );
        (vhost ? q.vhost : q.stream).push(await qemuGuestRun(env, MAIN_TS, port++, q.bytes, vhost));
      }
    }
    qemu = q;
  }
  let apiLoad: ApiLoadResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const a: ApiLoadResults = { seconds: opts.quick ? 2 : 5, runs: [] };
    for (let rep = 0; rep < opts.reps; rep++) {
      progress(`bench: rep ${rep + 1}: iperf3 with and without 50 clients polling stats`);
      a.runs.push(await apiLoadRun(env, MAIN_TS, a.seconds, rep));
    }
    apiLoad = a;
  }
  let engineStartup: EngineStartupResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const e = engineStartupResults(opts.session.startupRuns);
    for (let rep = 0; rep < opts.reps; rep++) {
      progress(`bench: rep ${rep + 1}: start-up as slirp4netns and as pasta, beside the real ones`);
      await engineStartupRun(env, MAIN_TS, e, rep);
    }
    engineStartup = e;
  }
  let flows: FlowsResults | null = null;
  if (opts.contenders.includes("tapir")) {
    const { count, limitedBy } = await flowsCount(opts.quick);
    // Quick runs (the test suite's) wait less for the resident set to settle.
    const settleLimitS = opts.quick ? 10 : SETTLE_LIMIT_S;
    const f: FlowsResults = { count, limitedBy, settleLimitS, runs: [] };
    for (let rep = 0; rep < opts.reps; rep++) {
      progress(`bench: rep ${rep + 1}: ${count} TCP flows held and closed`);
      f.runs.push(await flowsRun(env, MAIN_TS, count, settleLimitS));
    }
    flows = f;
  }
  const machine = await describeMachine();
  const run: RunInfo = {
    date,
    reps: opts.reps,
    durationS: opts.session.durationS,
    roundTrips: opts.session.roundTrips,
    udpRate: opts.session.udpRate,
    udpLength: opts.session.udpLength,
    startupRuns: opts.session.startupRuns,
    quick: opts.quick,
    elapsedS: (performance.now() - started) / 1000,
    loadBefore,
    order,
    rootlessUser: ROOTLESS_USER,
  };
  await Deno.mkdir(opts.out, { recursive: true });
  const title =
    `tapir vs pasta vs slirp4netns vs veth — ${machine.cores} cores, Linux ${machine.kernel}${
      opts.quick ? " (quick mode)" : ""
    }`;
  const noTranslator = wired.filter((c) => c.translatorComms.length === 0).map((c) => c.name);
  await Deno.writeTextFile(
    `${opts.out}/bench.svg`,
    renderSvg(results, opts.contenders, noTranslator, title),
  );
  const report = `${opts.out}/BENCHMARKS.md`;
  await Deno.writeTextFile(
    report,
    renderMarkdown(
      results,
      opts.contenders,
      noTranslator,
      machine,
      run,
      "bench.svg",
      streamRsc,
      backends,
      qemu,
      apiLoad,
      engineStartup,
      flows,
    ),
  );
  await formatOutputs([report, `${opts.out}/bench.svg`]);
  if (opts.json) {
    await Deno.writeTextFile(
      opts.json,
      JSON.stringify(
        {
          machine,
          run,
          results: results.toJSON(),
          streamRsc,
          backends,
          qemu,
          apiLoad,
          engineStartup,
          flows,
        },
        null,
        2,
      ) +
        "\n",
    );
  }
  progress(`bench: wrote ${opts.out}/BENCHMARKS.md and bench.svg in ${run.elapsedS.toFixed(0)} s`);
}

/** Runs the benchmark with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  let opts;
  try {
    opts = parseOptions(args);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`bench: ${err.message}`);
    return 1;
  }
  if (opts === "help") {
    console.log(USAGE);
    return 0;
  }
  if (Deno.uid() !== 0) {
    console.error("bench: must run as root (it creates network namespaces and a user)");
    return 1;
  }
  const cleanup = new Cleanup();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) return;
    interrupted = true;
    console.error("bench: interrupted; cleaning up");
    cleanup.runAll().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    await bench(opts, cleanup);
    return 0;
  } catch (err) {
    console.error(`bench: ${(err as Error).message}`);
    return 1;
  } finally {
    await cleanup.runAll();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
