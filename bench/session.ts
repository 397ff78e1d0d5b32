/**
 * One contender, one repetition: start it, find out what gets through, run
 * every scenario, measure its cost, then time fresh start-ups.
 *
 * Theory of operation. The contender runs a placeholder guest command
 * (`sleep` with a unique argument, so the harness can find it in `/proc`
 * whatever pid namespace tricks a launcher plays). Every scenario's client
 * then runs in that guest's network namespace through `nsenter -n`, as root,
 * so the clients are the same programs with the same privileges for every
 * contender. Servers run in the host namespace, bound to the address the
 * contender's guest reaches.
 *
 * Before measuring anything, three probes run side by side: ping to the
 * gateway, one TCP exchange, one UDP echo. A scenario whose protocol did not
 * get through is not attempted; its cells get the probe's own error as the
 * reason (e.g. "connect ... timed out"), so a contender that lacks TCP shows
 * that in the report instead of a stalled run or a zero.
 *
 * Translator cost: CPU ticks of the translator's processes are read before
 * and after each iperf3 run and divided by the bytes the receiver got; the
 * peak resident set is read once at the end of the session.
 *
 * Start-up: after the session's translator is gone, the contender is
 * launched afresh with a small bash script as the guest command (tapir
 * without its control socket, which the others lack too). The script
 * prints a line as soon as it runs, then (concurrently) keeps trying ping and
 * a one-byte TCP exchange until each works; the harness timestamps each line
 * as it arrives, from the moment it spawned the launch.
 *
 * Guest MTU: everything above happens at the default MTU. Last, the
 * contender is launched once more with guest MTU {@linkcode SMALL_MTU}, and
 * only the TCP scenarios at that MTU run there (after a TCP probe), costed
 * the same way. A contender measured only at that MTU (`tapir-nooffload`)
 * skips the default-MTU guest and the start-up timing.
 *
 * @module
 */

import type { Contender } from "./contenders.ts";
import { denoInHost, type HostEnv, inHost } from "./hostns.ts";
import {
  type ContenderName,
  DEFAULT_MTU,
  measures,
  median,
  METRICS,
  type Outcome,
  type Results,
  SMALL_MTU,
  SMALL_MTU_ONLY,
  THROUGHPUT,
  type Throughput,
} from "./metrics.ts";
import {
  allProcs,
  cmdline,
  cpuTicks,
  peakRssKiB,
  processTree,
  runBounded,
  spawnTracked,
  ticksPerSecond,
  type Tracked,
} from "./proc.ts";
import { crrPort } from "./rr_server.ts";
import { ctlCall } from "../lib/ctl.ts";
import type { RuntimeReport } from "../lib/runtime_stats.ts";
import type { StatsReport } from "../lib/tapir.ts";

/** Knobs for a run. */
export interface SessionConfig {
  /** Seconds per throughput and connection-rate scenario. */
  readonly durationS: number;
  /** Round trips in the ping-pong scenario. */
  readonly roundTrips: number;
  /** iperf3 `-b` for the UDP scenarios, e.g. "500M". */
  readonly udpRate: string;
  /** iperf3 `-l` for the UDP scenarios (bytes). */
  readonly udpLength: number;
  /** Fresh launches per repetition for the start-up time. */
  readonly startupRuns: number;
  /** Seconds a probe (or a start-up stage) may take before it counts as failed. */
  readonly probeTimeoutS: number;
}

/** Where a session reports progress. */
export type Progress = (line: string) => void;

const here = new URL(".", import.meta.url).pathname;
const RR_SERVER = `${here}rr_server.ts`;
const RR_CLIENT = `${here}rr_client.ts`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * tapir's runtime statistics (its JavaScript heap) from its control socket;
 * null for a contender without one, or when it does not answer in 5 s.
 */
async function runtimeOf(contender: Contender): Promise<RuntimeReport | null> {
  if (contender.apiSocket === undefined) return null;
  try {
    const reply = await ctlCall(contender.apiSocket, { cmd: "stats" });
    return reply.ok ? (reply.value as StatsReport).runtime ?? null : null;
  } catch {
    return null;
  }
}

/**
 * Asks tapir for its runtime statistics until they include V8's (the first
 * request loads them); null if they never do.
 */
async function runtimeReady(contender: Contender): Promise<RuntimeReport | null> {
  for (let i = 0; i < 40 && contender.apiSocket !== undefined; i++) {
    const r = await runtimeOf(contender);
    if (r?.heapAllocatedBytes != null && r.gc !== null) return r;
    await sleep(50);
  }
  return null;
}

/** KiB V8 allocated between two reports, or null if either lacks the figure. */
function allocatedKiB(before: RuntimeReport | null, after: RuntimeReport | null): number | null {
  if (before?.heapAllocatedBytes == null || after?.heapAllocatedBytes == null) return null;
  return (after.heapAllocatedBytes - before.heapAllocatedBytes) / 1024;
}

/** The last meaningful line of some output, for a failure reason. */
export function lastLine(text: string): string {
  const lines = text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !/syslog/i.test(l));
  return lines.at(-1) ?? "";
}

/** Starts `argv` and resolves once a line of its output matches `ready`. */
async function startServer(
  env: HostEnv,
  argv: string[],
  ready: RegExp,
  timeoutMs = 10_000,
): Promise<Tracked> {
  let signal = () => {};
  const seen = new Promise<void>((r) => signal = r);
  const t = spawnTracked(env.cleanup, argv, {
    onStdoutLine: (line) => ready.test(line) && signal(),
  });
  const exited = t.status.then(() => "exited" as const);
  const limit = sleep(timeoutMs).then(() => "timeout" as const);
  const how = await Promise.race([seen.then(() => "ready" as const), exited, limit]);
  if (how !== "ready") {
    await t.stop();
    throw new Error(
      `${argv.join(" ")}: ${how === "timeout" ? "not ready in time" : "exited"}: ${
        lastLine(t.stderr.text + "\n" + t.stdout.text)
      }`,
    );
  }
  return t;
}

/** A guest started by a contender, ready to have clients run inside it. */
interface Guest {
  readonly launch: Tracked;
  /** Pid of the guest command (its network namespace is the guest's). */
  readonly pid: number;
  /** Pids of the translator's processes. */
  readonly translator: number[];
}

/** Starts `contender` with a placeholder guest; the reason it failed as an Error. */
async function startGuest(
  env: HostEnv,
  contender: Contender,
  mtu: number,
  timeoutMs = 20_000,
  control = true,
): Promise<Guest> {
  const marker = `86400.${Date.now() % 1e6}${Math.floor(Math.random() * 1e6)}`;
  const launch = spawnTracked(env.cleanup, contender.command(["sleep", marker], mtu, control), {
    env: contender.env,
    clearEnv: contender.env !== undefined,
  });
  let exited = false;
  launch.status.then(() => exited = true);
  const deadline = performance.now() + timeoutMs;
  while (!exited && performance.now() < deadline) {
    const procs = allProcs();
    const tree = processTree(launch.pid, procs);
    const guest = tree.find((p) => p.comm === "sleep" && cmdline(p.pid)[1] === marker);
    if (guest) {
      const guestSide = new Set(processTree(guest.pid, procs).map((p) => p.pid));
      const translator = tree
        .filter((p) =>
          !guestSide.has(p.pid) && contender.translatorComms.some((name) => p.comm.startsWith(name))
        )
        .map((p) => p.pid);
      return { launch, pid: guest.pid, translator };
    }
    await sleep(10);
  }
  await launch.stop();
  const said = lastLine(launch.stderr.text + "\n" + launch.stdout.text);
  const at = mtu === DEFAULT_MTU ? "" : ` at MTU ${mtu}`;
  throw new Error(
    `${contender.name} did not start its command${at}${
      exited ? "" : ` within ${timeoutMs / 1000} s`
    }${said ? `: ${said}` : ""}`,
  );
}

/** The argument vector running `argv` in the guest's network namespace. */
function inGuest(guest: Guest, argv: readonly string[]): string[] {
  return ["nsenter", "-t", String(guest.pid), "-n", "--", ...argv];
}

/** Result of a probe: null when it worked, else what went wrong. */
type ProbeError = string | null;

async function probePing(env: HostEnv, guest: Guest, target: string, limitS: number) {
  const deadline = performance.now() + limitS * 1000;
  let last = "";
  while (performance.now() < deadline) {
    const r = await runBounded(
      env.cleanup,
      inGuest(guest, ["ping", "-c", "1", "-W", "0.5", "-q", target]),
      5000,
    );
    if (r.code === 0) return null;
    last = lastLine(r.stderr);
  }
  return `no ping reply from ${target} within ${limitS} s${last ? ` (${last})` : ""}`;
}

async function runClient(
  env: HostEnv,
  guest: Guest,
  args: string[],
  limitMs: number,
): Promise<Record<string, unknown>> {
  const r = await runBounded(
    env.cleanup,
    inGuest(guest, [Deno.execPath(), "run", "-A", RR_CLIENT, ...args]),
    limitMs,
  );
  if (r.timedOut) return { ok: false, error: `client did not finish within ${limitMs / 1000} s` };
  try {
    return JSON.parse(r.stdout.trim().split("\n").at(-1) ?? "");
  } catch {
    return { ok: false, error: lastLine(r.stderr) || `client exited with status ${r.code}` };
  }
}

async function probeTcp(env: HostEnv, guest: Guest, target: string, port: number, limitS: number) {
  const deadline = performance.now() + limitS * 1000;
  let error = "";
  // A refused connection right after start-up is retried; a timeout is final.
  while (performance.now() < deadline) {
    const left = Math.max(1, Math.ceil((deadline - performance.now()) / 1000));
    const r = await runClient(env, guest, [
      "--mode",
      "probe-tcp",
      "--addr",
      target,
      "--port",
      String(port),
      "--timeout",
      String(left),
    ], left * 1000 + 10_000);
    if (r.ok === true) return null;
    error = String(r.error);
    await sleep(100);
  }
  return error;
}

async function probeUdp(env: HostEnv, guest: Guest, target: string, port: number, limitS: number) {
  const r = await runClient(env, guest, [
    "--mode",
    "probe-udp",
    "--addr",
    target,
    "--port",
    String(port),
    "--timeout",
    String(limitS),
  ], limitS * 1000 + 10_000);
  return r.ok === true ? null : String(r.error);
}

/** What the probes found, as reasons for each kind of scenario (null: go ahead). */
interface Reach {
  readonly ping: ProbeError;
  readonly tcp: ProbeError;
  readonly udp: ProbeError;
}

/** Why a TCP scenario cannot run, or null. */
function tcpBlocker(name: string, reach: Reach): string | null {
  if (reach.tcp === null) return null;
  return `${name}: TCP does not get through (${reach.tcp}); ping ${
    reach.ping === null ? "does" : "does not either"
  }`;
}

/** Why an iperf3 UDP scenario cannot run, or null. */
function udpBlocker(name: string, reach: Reach): string | null {
  const parts: string[] = [];
  if (reach.udp !== null) parts.push(`${name}: UDP does not get through (${reach.udp})`);
  const tcp = tcpBlocker(name, reach);
  if (tcp !== null) parts.push(`iperf3 needs TCP for its control connection, and ${tcp}`);
  return parts.length ? parts.join("; ") : null;
}

/** What one iperf3 run gives. */
interface IperfResult {
  readonly gbps: number;
  readonly bytes: number;
  readonly lossPct: number | null;
}

type IperfJson = {
  error?: string;
  end?: { sum_received?: { bits_per_second?: number; bytes?: number; lost_percent?: number } };
};

async function iperf(
  env: HostEnv,
  guest: Guest,
  contender: Contender,
  port: number,
  t: Throughput,
  cfg: SessionConfig,
): Promise<IperfResult> {
  const server = await startServer(
    env,
    inHost(env.ns, [
      "iperf3",
      "-s",
      "-1",
      "--forceflush",
      "-B",
      contender.serverAddr,
      "-p",
      String(port),
    ]),
    /Server listening/,
  );
  try {
    const args = [
      "iperf3",
      "-c",
      contender.target,
      "-p",
      String(port),
      "-t",
      String(cfg.durationS),
      "-J",
      "--connect-timeout",
      String(cfg.probeTimeoutS * 1000),
      ...t.args,
    ];
    if (t.udp) args.push("-b", cfg.udpRate, "-l", String(cfg.udpLength));
    const limitMs = (cfg.durationS + cfg.probeTimeoutS + 20) * 1000;
    const r = await runBounded(env.cleanup, inGuest(guest, args), limitMs);
    if (r.timedOut) throw new Error(`iperf3 did not finish within ${limitMs / 1000} s`);
    let json: IperfJson;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      throw new Error(`iperf3 exited ${r.code}: ${lastLine(r.stderr) || "no JSON output"}`);
    }
    if (json.error) throw new Error(`iperf3: ${json.error}`);
    const sum = json.end?.sum_received;
    if (!sum || typeof sum.bits_per_second !== "number" || typeof sum.bytes !== "number") {
      throw new Error("iperf3: no receiver summary in its output");
    }
    return {
      gbps: sum.bits_per_second / 1e9,
      bytes: sum.bytes,
      lossPct: t.udp ? sum.lost_percent ?? null : null,
    };
  } finally {
    // A one-off server exits after its test; give it a moment, then end it.
    await Promise.race([server.status, sleep(3000)]);
    await server.stop();
  }
}

/** Start-up stage names as the guest script prints them. */
type Stage = "cmd" | "ping" | "tcp";

/** The guest command for a start-up launch: see the module comment. */
function startupScript(
  target: string,
  port: number,
  stages: { ping: boolean; tcp: boolean },
  limitS: number,
) {
  return [
    "echo '@bench cmd'",
    `lim=$(( \${EPOCHREALTIME/./} + ${Math.round(limitS * 1e6)} ))`,
    "probe() {",
    "  local name=$1; shift",
    '  until "$@" >/dev/null 2>&1; do',
    '    if (( ${EPOCHREALTIME/./} > lim )); then echo "@bench $name-fail"; return; fi',
    "  done",
    '  echo "@bench $name"',
    "}",
    stages.ping ? `probe ping ping -c 1 -W 0.2 -q ${target} &` : "",
    stages.tcp
      ? `probe tcp timeout 0.5 bash -c 'exec 3<>/dev/tcp/${target}/${port} && printf x >&3 && ` +
        `read -r -n 1 -t 0.5 r <&3 && [ "$r" = x ]' &`
      : "",
    "wait",
  ].join("\n");
}

/** Times one fresh launch; the milliseconds to each stage (absent: failed). */
async function startupOnce(
  env: HostEnv,
  contender: Contender,
  port: number,
  stages: { ping: boolean; tcp: boolean },
  limitS: number,
): Promise<{ times: Partial<Record<Stage, number>>; error: string }> {
  const times: Partial<Record<Stage, number>> = {};
  const script = startupScript(contender.target, crrPort(port), stages, limitS);
  const t0 = performance.now();
  const r = await runBounded(
    env.cleanup,
    contender.command(["bash", "-c", script], undefined, false),
    (limitS + 20) * 1000,
    {
      env: contender.env,
      clearEnv: contender.env !== undefined,
      onStdoutLine: (line, at) => {
        const m = /^@bench (cmd|ping|tcp)$/.exec(line.trim());
        if (m) times[m[1] as Stage] = at - t0;
      },
    },
  );
  const error = r.timedOut
    ? `launch did not finish within ${limitS + 20} s`
    : lastLine(r.stderr) || `exit status ${r.code}`;
  return { times, error };
}

/** Clock ticks below which a CPU figure is too coarse to take at face value. */
const FEW_TICKS = 10;

/** CPU seconds per GB from a tick count; a caveat when the count is small. */
export function cpuPerGB(ticks: number, ticksPerS: number, bytes: number): Outcome {
  if (bytes <= 0) return { ok: false, reason: "no bytes moved" };
  const value = ticks / ticksPerS / (bytes / 1e9);
  if (ticks >= FEW_TICKS) return { ok: true, value };
  // One shared caveat text, so repetitions share one note in the report.
  return {
    ok: true,
    value,
    note: `fewer than ${FEW_TICKS} clock ticks (${
      1000 / ticksPerS
    } ms each) of CPU time in a run: too few for /proc/PID/stat to resolve; a rough figure`,
  };
}

/** Where a session records outcomes and says what it did. */
interface Sink {
  readonly results: Results;
  readonly rep: number;
  readonly say: Progress;
}

/** Everything measured for one contender in one repetition goes into `results`. */
export async function runSession(
  env: HostEnv,
  contender: Contender,
  rep: number,
  port: number,
  cfg: SessionConfig,
  results: Results,
  progress: Progress,
): Promise<void> {
  const name = contender.name;
  const say = (what: string) => progress(`[rep ${rep + 1}] ${name}: ${what}`);
  const out: Sink = { results, rep, say };
  const mine = METRICS.filter((m) => measures(m, name));
  const setAll = (ids: string[], o: Outcome) => ids.forEach((id) => results.set(id, name, rep, o));
  const allIds = mine.map((m) => m.id);

  const unavailable = contender.unavailable();
  if (unavailable) {
    setAll(allIds, { ok: false, reason: `${name}: ${unavailable}` });
    say(`skipped: ${unavailable}`);
    return;
  }
  if (contender.translatorComms.length === 0) {
    setAll(mine.filter((m) => m.group === "cost").map((m) => m.id), {
      ok: false,
      reason: "no translator process: the kernel does the work",
    });
  }

  let rrServer: Tracked;
  try {
    rrServer = await startServer(
      env,
      denoInHost(env.ns, RR_SERVER, [
        "--addr",
        contender.serverAddr,
        "--port",
        String(port),
      ]),
      /^listening$/,
    );
  } catch (err) {
    setAll(allIds, { ok: false, reason: `server did not start: ${(err as Error).message}` });
    return;
  }
  try {
    if (!SMALL_MTU_ONLY.includes(name)) await defaultMtuPass(env, contender, port, cfg, out);
    await smallMtuPass(env, contender, port, cfg, out);
  } finally {
    await rrServer.stop();
  }
}

/** Every scenario but the small-MTU ones, then the start-up times. */
async function defaultMtuPass(
  env: HostEnv,
  contender: Contender,
  port: number,
  cfg: SessionConfig,
  { results, rep, say }: Sink,
): Promise<void> {
  const name = contender.name;
  let guest: Guest;
  try {
    guest = await startGuest(env, contender, DEFAULT_MTU);
  } catch (err) {
    const reason = (err as Error).message;
    for (const m of METRICS) {
      if (m.mtu !== SMALL_MTU && measures(m, name)) {
        results.set(m.id, name, rep, { ok: false, reason });
      }
    }
    say(reason);
    return;
  }
  let reach: Reach;
  try {
    reach = await measureInGuest(env, contender, guest, rep, port, cfg, results, say);
  } finally {
    await guest.launch.stop();
  }

  // Start-up, with the session's translator gone.
  const stages = { ping: reach.ping === null, tcp: reach.tcp === null };
  const samples: Record<Stage, number[]> = { cmd: [], ping: [], tcp: [] };
  let error = "";
  for (let i = 0; i < cfg.startupRuns; i++) {
    const r = await startupOnce(env, contender, port, stages, cfg.probeTimeoutS);
    for (const s of ["cmd", "ping", "tcp"] as const) {
      if (r.times[s] !== undefined) samples[s].push(r.times[s]);
    }
    error = r.error;
  }
  const setStage = (s: Stage, blocker: string | null) => {
    const id = `startup_${s}`;
    if (samples[s].length) {
      results.set(id, name, rep, { ok: true, value: median(samples[s]) });
    } else {
      results.set(id, name, rep, {
        ok: false,
        reason: blocker ?? `${name}: the start-up ${s} stage never completed (${error})`,
      });
    }
  };
  setStage("cmd", null);
  setStage("ping", reach.ping === null ? null : `${name}: ${reach.ping}`);
  setStage("tcp", tcpBlocker(name, reach));
  say(
    `start-up: command ${fmt(samples.cmd)} ms, ping ${fmt(samples.ping)} ms, TCP ${
      fmt(samples.tcp)
    } ms`,
  );
  await idleRss(env, contender, results, rep, say);
}

/** How long an idle guest is left alone before its translator's peak RSS is read. */
export const IDLE_SETTLE_MS = 2000;

/**
 * Peak RSS of a translator serving a guest that does nothing, launched as
 * the start-up runs are (no control socket: tapir then starts no namespace
 * worker, see `lib/ns.ts`).
 */
async function idleRss(
  env: HostEnv,
  contender: Contender,
  results: Results,
  rep: number,
  say: Progress,
): Promise<void> {
  const name = contender.name;
  if (contender.translatorComms.length === 0) return;
  let outcome: Outcome;
  try {
    const guest = await startGuest(env, contender, DEFAULT_MTU, 20_000, false);
    try {
      await sleep(IDLE_SETTLE_MS);
      const kib = peakRssKiB(guest.translator);
      outcome = kib === null
        ? { ok: false, reason: `${name}: could not read VmHWM of its processes` }
        : { ok: true, value: kib / 1024 };
    } finally {
      await guest.launch.stop();
    }
  } catch (err) {
    outcome = { ok: false, reason: `${name}: idle guest: ${(err as Error).message}` };
  }
  results.set("rss_idle", name, rep, outcome);
  if (outcome.ok) say(`idle guest: peak RSS ${outcome.value.toFixed(1)} MiB`);
}

/** The TCP scenarios at {@linkcode SMALL_MTU}, in a guest launched at that MTU. */
async function smallMtuPass(
  env: HostEnv,
  contender: Contender,
  port: number,
  cfg: SessionConfig,
  out: Sink,
): Promise<void> {
  const name = contender.name;
  const scenarios = THROUGHPUT.filter((t) => t.mtu === SMALL_MTU && measures(t, name));
  if (scenarios.length === 0) return;
  const setScenarios = (reason: string, costToo: boolean) => {
    for (const t of scenarios) {
      for (const id of scenarioIds(t, costToo)) {
        out.results.set(id, name, out.rep, { ok: false, reason });
      }
    }
  };
  let guest: Guest;
  try {
    guest = await startGuest(env, contender, SMALL_MTU);
  } catch (err) {
    setScenarios((err as Error).message, true);
    out.say((err as Error).message);
    return;
  }
  try {
    const missing = missingTranslator(contender, guest);
    if (missing) {
      for (const t of scenarios) out.results.set(`cpu_${t.id}`, name, out.rep, missing);
    }
    const tcp = await probeTcp(env, guest, contender.target, port, cfg.probeTimeoutS);
    out.say(`reach at MTU ${SMALL_MTU}: TCP ${tcp ?? "ok"}`);
    if (tcp !== null) {
      const reason = `${name}: TCP does not get through at MTU ${SMALL_MTU} (${tcp})`;
      setScenarios(reason, guest.translator.length > 0);
      return;
    }
    await measureThroughput(env, contender, guest, scenarios, () => null, port, cfg, out);
  } finally {
    await guest.launch.stop();
  }
}

/** The metric ids of scenario `t`; the CPU one only with `cost`. */
function scenarioIds(t: Throughput, cost: boolean): string[] {
  return [t.id, ...(t.udp ? [`${t.id}_loss`] : []), ...(cost ? [`cpu_${t.id}`] : [])];
}

/** Why the cost of a translator cannot be read in `guest`, or null. */
function missingTranslator(contender: Contender, guest: Guest): Outcome | null {
  if (guest.translator.length || contender.translatorComms.length === 0) return null;
  return {
    ok: false,
    reason: `${contender.name}: no process named ${
      contender.translatorComms.join(" or ")
    } in its process tree`,
  };
}

function fmt(values: number[]): string {
  return values.length ? median(values).toFixed(0) : "—";
}

/**
 * Runs iperf3 `scenarios` in `guest`, with the translator's CPU time per GB;
 * a scenario `blocker` names a reason is recorded as not measured instead.
 */
async function measureThroughput(
  env: HostEnv,
  contender: Contender,
  guest: Guest,
  scenarios: readonly Throughput[],
  blocker: (t: Throughput) => string | null,
  port: number,
  cfg: SessionConfig,
  { results, rep, say }: Sink,
): Promise<void> {
  const name = contender.name;
  const costed = guest.translator.length > 0;
  const ticksPerS = await ticksPerSecond();
  for (const t of scenarios) {
    const ids = scenarioIds(t, costed);
    const blocked = blocker(t);
    if (blocked) {
      for (const id of ids) results.set(id, name, rep, { ok: false, reason: blocked });
      continue;
    }
    const heaped = contender.apiSocket !== undefined && t.mtu === DEFAULT_MTU;
    const heapBefore = heaped ? await runtimeReady(contender) : null;
    const before = cpuTicks(guest.translator);
    try {
      const r = await iperf(env, guest, contender, port + 10 + THROUGHPUT.indexOf(t), t, cfg);
      const ticks = cpuTicks(guest.translator) - before;
      if (heaped) {
        const kib = allocatedKiB(heapBefore, await runtimeOf(contender));
        results.set(
          `alloc_${t.id}`,
          name,
          rep,
          kib === null
            ? { ok: false, reason: `${name}: no heap statistics from its control socket` }
            : { ok: true, value: kib / (r.bytes / 1048576) },
        );
      }
      const cpuS = ticks / ticksPerS;
      results.set(t.id, name, rep, { ok: true, value: t.udp ? r.gbps * 1000 : r.gbps });
      if (t.udp) {
        results.set(
          `${t.id}_loss`,
          name,
          rep,
          r.lossPct === null
            ? { ok: false, reason: "iperf3 reported no loss figure" }
            : { ok: true, value: r.lossPct },
        );
      }
      if (costed) results.set(`cpu_${t.id}`, name, rep, cpuPerGB(ticks, ticksPerS, r.bytes));
      say(
        `${t.label}: ${
          t.udp ? `${(r.gbps * 1000).toFixed(0)} Mbit/s` : `${r.gbps.toFixed(2)} Gbit/s`
        }${r.lossPct !== null ? `, loss ${r.lossPct.toFixed(2)} %` : ""}${
          costed ? `, ${(cpuS / (r.bytes / 1e9)).toFixed(2)} CPU s/GB` : ""
        }`,
      );
    } catch (err) {
      const reason = `${name}: ${(err as Error).message}`;
      for (const id of ids) results.set(id, name, rep, { ok: false, reason });
      say(`${t.label}: ${reason}`);
    }
  }
}

/**
 * tapir's heap during the ping-pong: KiB allocated per 1000 round trips (the
 * connection's set-up and the client's warm-up included), collections and
 * their pause time.
 */
function heapDuringRr(
  before: RuntimeReport | null,
  after: RuntimeReport | null,
  cfg: SessionConfig,
  { results, rep, say, name }: Sink & { name: ContenderName },
): void {
  const kib = allocatedKiB(before, after);
  const gcBefore = before?.gc, gcAfter = after?.gc;
  if (kib === null || !gcBefore || !gcAfter) {
    const reason = `${name}: no heap statistics from its control socket`;
    for (const id of ["alloc_rr", "gc_rr_count", "gc_rr_ms"]) {
      results.set(id, name, rep, { ok: false, reason });
    }
    return;
  }
  const count = gcAfter.count - gcBefore.count;
  const ms = gcAfter.pauseMs - gcBefore.pauseMs;
  results.set("alloc_rr", name, rep, { ok: true, value: kib / (cfg.roundTrips / 1000) });
  results.set("gc_rr_count", name, rep, { ok: true, value: count });
  results.set("gc_rr_ms", name, rep, { ok: true, value: ms });
  say(
    `ping-pong heap: ${(kib / (cfg.roundTrips / 1000)).toFixed(1)} KiB per 1000, ${count} GCs, ${
      ms.toFixed(2)
    } ms`,
  );
}

/** Probes, throughput, latency and cost inside a started guest; returns what the probes found. */
async function measureInGuest(
  env: HostEnv,
  contender: Contender,
  guest: Guest,
  rep: number,
  port: number,
  cfg: SessionConfig,
  results: Results,
  say: Progress,
): Promise<Reach> {
  const name = contender.name;
  const target = contender.target;
  const [ping, tcp, udp] = await Promise.all([
    probePing(env, guest, target, cfg.probeTimeoutS),
    probeTcp(env, guest, target, port, cfg.probeTimeoutS),
    probeUdp(env, guest, target, port, cfg.probeTimeoutS),
  ]);
  const reach: Reach = { ping, tcp, udp };
  const scenarios = THROUGHPUT.filter((t) => t.mtu === DEFAULT_MTU);
  const missing = missingTranslator(contender, guest);
  if (missing) {
    for (const t of scenarios) results.set(`cpu_${t.id}`, name, rep, missing);
    results.set("rss", name, rep, missing);
  }
  say(
    `reach: ping ${ping ?? "ok"}; TCP ${tcp ?? "ok"}; UDP ${udp ?? "ok"}`,
  );
  await measureThroughput(
    env,
    contender,
    guest,
    scenarios,
    (t) => t.udp ? udpBlocker(name, reach) : tcpBlocker(name, reach),
    port,
    cfg,
    { results, rep, say },
  );

  const tcpBlock = tcpBlocker(name, reach);
  if (tcpBlock) {
    for (const id of ["rr_p50", "rr_p99", "crr"]) {
      results.set(id, name, rep, { ok: false, reason: tcpBlock });
    }
  } else {
    const heapBefore = await runtimeReady(contender);
    const rr = await runClient(env, guest, [
      "--mode",
      "rr",
      "--addr",
      target,
      "--port",
      String(port),
      "--count",
      String(cfg.roundTrips),
      "--timeout",
      String(cfg.probeTimeoutS),
    ], cfg.roundTrips * 5 + 30_000);
    const heapAfter = contender.apiSocket === undefined ? null : await runtimeOf(contender);
    if (rr.ok === true && typeof rr.p50Us === "number" && typeof rr.p99Us === "number") {
      results.set("rr_p50", name, rep, { ok: true, value: rr.p50Us });
      results.set("rr_p99", name, rep, { ok: true, value: rr.p99Us });
      say(`ping-pong: p50 ${rr.p50Us.toFixed(0)} µs, p99 ${rr.p99Us.toFixed(0)} µs`);
      if (contender.apiSocket !== undefined) {
        heapDuringRr(heapBefore, heapAfter, cfg, { results, rep, say, name });
      }
    } else {
      const reason = `${name}: ping-pong failed: ${rr.error}`;
      results.set("rr_p50", name, rep, { ok: false, reason });
      results.set("rr_p99", name, rep, { ok: false, reason });
      say(reason);
    }
    const crr = await runClient(env, guest, [
      "--mode",
      "crr",
      "--addr",
      target,
      "--port",
      String(port),
      "--seconds",
      String(cfg.durationS),
      "--timeout",
      String(cfg.probeTimeoutS),
    ], (cfg.durationS + 30) * 1000);
    if (crr.ok === true && typeof crr.connsPerSec === "number") {
      results.set("crr", name, rep, { ok: true, value: crr.connsPerSec });
      say(`connection rate: ${crr.connsPerSec.toFixed(0)} conn/s`);
    } else {
      const reason = `${name}: connection rate failed: ${crr.error}`;
      results.set("crr", name, rep, { ok: false, reason });
      say(reason);
    }
  }

  if (guest.translator.length) {
    const kib = peakRssKiB(guest.translator);
    results.set(
      "rss",
      name,
      rep,
      kib === null
        ? { ok: false, reason: `${name}: could not read VmHWM of its processes` }
        : { ok: true, value: kib / 1024 },
    );
    if (kib !== null) say(`peak RSS ${(kib / 1024).toFixed(1)} MiB`);
  }
  return reach;
}
