/**
 * docs/BENCHMARKS.md: the machine, the results table, tapir's ratios to the
 * other translators, the translators' cost, why any cell is empty, how the
 * numbers were made and how to make them again.
 *
 * Every cell is either "median (min–max)" over the repetitions or "not
 * measured" with a numbered note carrying the reason recorded at the time.
 * A cell measured in only some repetitions shows how many, and the note
 * says what happened to the others.
 *
 * @module
 */

import {
  type ContenderName,
  type Metric,
  METRICS,
  type Results,
  summarize,
  type Summary,
} from "./metrics.ts";

/** The machine the run happened on. */
export interface Machine {
  /** CPU model. */
  readonly cpu: string;
  /** Logical cores. */
  readonly cores: number;
  /** Kernel release. */
  readonly kernel: string;
  /** Program → version text. */
  readonly versions: Readonly<Record<string, string>>;
}

/** How the run was made. */
export interface RunInfo {
  /** When it started (ISO 8601). */
  readonly date: string;
  /** Repetitions. */
  readonly reps: number;
  /** Seconds per throughput and connection-rate scenario. */
  readonly durationS: number;
  /** Round trips in the ping-pong. */
  readonly roundTrips: number;
  /** UDP offered rate (iperf3 `-b`). */
  readonly udpRate: string;
  /** UDP datagram payload size. */
  readonly udpLength: number;
  /** Start-up launches per repetition. */
  readonly startupRuns: number;
  /** Quick (smoke test) mode. */
  readonly quick: boolean;
  /** Wall-clock seconds the whole run took. */
  readonly elapsedS: number;
  /** 1-minute load average just before the run: other work on the machine. */
  readonly loadBefore: number;
  /** Contender order in each repetition. */
  readonly order: readonly (readonly ContenderName[])[];
  /** The user pasta and slirp4netns ran as. */
  readonly rootlessUser: string;
}

/** Numbered notes for reasons, each distinct text once. */
class Notes {
  readonly #list: string[] = [];

  /** The note number for `reason`, adding it if new. */
  ref(reason: string): number {
    let i = this.#list.indexOf(reason);
    if (i < 0) i = this.#list.push(reason) - 1;
    return i + 1;
  }

  /** The notes as a Markdown list. */
  render(): string {
    return this.#list.map((r, i) => `${i + 1}. ${r.replace(/\|/g, "\\|")}`).join("\n");
  }

  /** True when there are none. */
  get empty(): boolean {
    return this.#list.length === 0;
  }
}

function num(v: number, digits: number): string {
  return v.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

/** "median (min–max)", or just the median when there was one value or no spread. */
export function formatSummary(s: Summary, digits: number): string {
  const med = num(s.median, digits);
  const lo = num(s.min, digits);
  const hi = num(s.max, digits);
  return s.n > 1 && lo !== hi ? `${med} (${lo}–${hi})` : med;
}

function cell(results: Results, m: Metric, c: ContenderName, notes: Notes): string {
  const s = summarize(results.values(m.id, c));
  const reasons = results.reasons(m.id, c);
  const refs = reasons.map((r) => `[${notes.ref(r)}]`).join(" ");
  if (!s) return reasons.length ? `not measured ${refs}` : "not run";
  const caveats = results.notes(m.id, c).map((r) => ` [${notes.ref(r)}]`).join("");
  const text = formatSummary(s, m.digits) + caveats;
  return s.n < results.reps ? `${text}, ${s.n} of ${results.reps} runs ${refs}` : text;
}

function ratioCell(results: Results, m: Metric, a: ContenderName, b: ContenderName): string {
  const s = summarize(results.ratios(m.id, a, b));
  if (!s) return "—";
  return `${formatSummary(s, 2)}×`;
}

function table(
  results: Results,
  metrics: readonly Metric[],
  names: readonly ContenderName[],
  ratioTo: readonly ContenderName[],
  notes: Notes,
): string {
  const head = [
    "scenario",
    "unit",
    ...names,
    ...ratioTo.map((b) => `tapir/${b}`),
  ];
  const rows = [
    `| ${head.join(" | ")} |`,
    `| ${head.map((_, i) => i < 2 ? "---" : "---:").join(" | ")} |`,
  ];
  for (const m of metrics) {
    const arrow = m.better === "higher" ? "↑" : "↓";
    rows.push(
      `| ${
        [
          m.label,
          `${m.unit} ${arrow}`,
          ...names.map((c) => cell(results, m, c, notes)),
          ...ratioTo.map((b) => ratioCell(results, m, "tapir", b)),
        ].join(" | ")
      } |`,
    );
  }
  return rows.join("\n");
}

/** The whole report. `chart` is the SVG's file name, relative to the report. */
export function renderMarkdown(
  results: Results,
  names: readonly ContenderName[],
  noTranslator: readonly ContenderName[],
  machine: Machine,
  run: RunInfo,
  chart: string,
): string {
  const notes = new Notes();
  const ratioTo = (["pasta", "slirp4netns"] as const).filter((b) =>
    names.includes("tapir") && names.includes(b)
  );
  const main = METRICS.filter((m) => m.group !== "cost");
  const cost = METRICS.filter((m) => m.group === "cost");
  const versions = Object.entries(machine.versions).map(([k, v]) => `- ${k}: ${v}`).join("\n");
  const orders = run.order.map((o, i) => `${i + 1}: ${o.join(", ")}`).join("; ");
  const minutes = run.elapsedS >= 120
    ? `${(run.elapsedS / 60).toFixed(1)} min`
    : `${run.elapsedS.toFixed(0)} s`;

  const mainTable = table(results, main, names, ratioTo, notes);
  const translated = names.filter((c) => !noTranslator.includes(c));
  const costTable = table(results, cost, translated, ratioTo, notes);
  const kernelOnly = names.filter((c) => noTranslator.includes(c));

  return `# Benchmarks

tapir side by side with pasta and slirp4netns, the two user-mode networking programs it is meant to
replace, and with a plain veth pair: the kernel alone, the ceiling for any of them. Every number
below was measured in the same run, on the same machine, in alternating order.

Generated by \`deno task bench\`${
    run.quick
      ? " in **quick mode** (smoke test: 1 s per scenario, one repetition — these numbers are not for comparison)"
      : ""
  }
on ${run.date}; the whole run took ${minutes}. Do not edit by hand: run it again.

![Bar chart of the results, one panel per scenario](${chart})

## Machine

- CPU: ${machine.cpu}, ${machine.cores} logical cores
- Kernel: ${machine.kernel}
- 1-minute load average just before the run: ${
    run.loadBefore.toFixed(2)
  } (other work on the machine; 0 is quiet)
${versions}

## Results

Median of ${run.reps} repetition${
    run.reps === 1 ? "" : "s"
  }, min–max in brackets. ↑ higher is better, ↓ lower is better.
The ratio columns divide tapir's value by the other's within each repetition, then take the median
(min–max) of those ratios; for ↑ rows above 1× means tapir is ahead, for ↓ rows below 1× does.

${mainTable}

## Cost of the translator

CPU time (user + system, every thread) of the translator's processes per GB the receiver got, read
from \`/proc/PID/stat\` before and after each throughput scenario; peak resident set is \`VmHWM\` from
\`/proc/PID/status\` at the end of each repetition's session. tapir's process is \`deno\`; pasta's
\`pasta\` (on CPUs with AVX2 Debian's build runs as \`passt.avx2\`); slirp4netns's \`slirp4netns\`.${
    kernelOnly.length
      ? ` ${
        kernelOnly.join(", ")
      } has no translator process (the kernel does the work), so no column here.`
      : ""
  }

${costTable}

## Notes

Why a cell is empty, or what to keep in mind about its number.

${notes.empty ? "Every cell was measured." : notes.render()}

## How the numbers are made

- Everything runs inside a throwaway "host" network namespace made by the harness: its \`eth0\` is
  one end of a veth pair whose other end is a dead end in the same namespace (192.0.2.2/24 via
  192.0.2.1, 2001:db8::2/64 via 2001:db8::1). Servers listen on its loopback. No traffic can leave
  the machine; every namespace, process and file is removed at the end, also on failure or Ctrl-C.
- Each contender connects a fresh guest namespace to that host namespace:
  - **tapir**: \`deno run -A main.ts ns --config-net -q -- CMD\` as root; the guest dials the
    gateway 192.0.2.1, which tapir maps to host loopback.
  - **pasta**: \`pasta -f -q --config-net -t none -u none -T none -U none -- CMD\` as the
    unprivileged user \`${run.rootlessUser}\` (pasta refuses root); gateway 192.0.2.1, mapped to host
    loopback by default. Port forwarding is off, as in tapir's defaults.
  - **slirp4netns**: a guest made with \`unshare --user --map-root-user --net\` as
    \`${run.rootlessUser}\`, then \`slirp4netns --configure --mtu=65520 PID tap0\`; host loopback
    is 10.0.2.2.
  - **veth**: \`unshare --net\` and a veth pair (MTU 65520) into the guest; the server address sits
    on the host namespace's loopback. No translator: the kernel-only ceiling.
  - The guest command starts only once its network is configured, for every contender.
- Clients run inside the guest (\`nsenter -n\`, as root, identical for every contender):
  - TCP throughput: \`iperf3 -J -t ${run.durationS}\`, 1 and 4 streams (\`-P 4\`); host→guest is
    \`-R\`. Rate is the receiver's.
  - UDP: \`iperf3 -u -b ${run.udpRate} -l ${run.udpLength}\` (fixed offered rate), achieved rate and
    loss as the receiver saw them.
  - Ping-pong: \`bench/rr_client.ts\` against \`bench/rr_server.ts\` (Deno), one connection with
    TCP_NODELAY, ${run.roundTrips} round trips of one byte each way after a warm-up; p50 and p99.
    Both ends are the same Deno programs for every contender, so their own overhead is in every
    column, the veth one included.
  - Connection rate: for ${run.durationS} s, connect, one byte each way, the server closes,
    the client closes; connections per second.
  - Start-up: the contender is launched afresh ${run.startupRuns} time${
    run.startupRuns === 1 ? "" : "s"
  } per repetition with a bash
    script as its command; times from the launch to the script's first line (command running), to
    its first ping reply from the gateway, and to its first one-byte TCP exchange with the server.
- Before measuring, the harness probes ping, one TCP exchange and one UDP echo through the
  contender. Scenarios whose protocol does not get through are skipped and the probe's error is the
  reason in the note.
- ${run.reps} repetition${
    run.reps === 1 ? "" : "s"
  }; the contender order rotates between them (${orders}).

## Reproduce

As root, on a machine with \`iperf3\`, \`passt\` (for pasta), \`slirp4netns\`, \`iproute2\` and
\`util-linux\` installed (\`.ci/run\` installs them):

\`\`\`sh
deno task bench                  # full run: writes docs/BENCHMARKS.md and docs/bench.svg
deno task bench --quick --out /tmp/bench   # smoke test, about a minute
deno run -A bench/run.ts --help  # options: --reps, --duration, --round-trips, --udp-rate, ...
\`\`\`

The harness creates the user \`${run.rootlessUser}\` if it is missing, and for the length of the run makes
\`/dev/net/tun\` usable by it and allows unprivileged user namespaces if the kernel forbids them;
both are put back afterwards.
`;
}
