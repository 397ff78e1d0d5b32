/**
 * docs/BENCHMARKS.md: the machine, the results table, tapir's ratios to the
 * other translators, the translators' cost, the TCP rows at guest MTU 1500
 * (with tapir without offloads, and ratios to veth) and the targets tracked
 * there, why any cell is empty, how the numbers were made and how to make
 * them again.
 *
 * Every cell is either "median (min–max)" over the repetitions or "not
 * measured" with a numbered note carrying the reason recorded at the time.
 * A cell measured in only some repetitions shows how many, and the note
 * says what happened to the others.
 *
 * @module
 */

import type { StreamRscResults, StreamRscRun } from "./rsc_stream.ts";
import type { BackendResults, BackendRun } from "./vhost_backend.ts";
import type { QemuResults, QemuRun } from "./qemu_guest.ts";
import { API_POLLERS, type ApiLoadResults } from "./api_load.ts";
import { FLOWS_TARGET, type FlowsResults, SETTLE_MARGIN } from "./flows_scale.ts";
import type { EngineStartupResults } from "./engine_startup.ts";
import { IDLE_SETTLE_MS } from "./session.ts";
import {
  atDefaultMtu,
  type ContenderName,
  DEFAULT_MTU,
  measures,
  type Metric,
  metric,
  METRICS,
  type Results,
  SMALL_MTU,
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

/** A ratio column: `a`'s value over `b`'s. */
type Pair = readonly [ContenderName, ContenderName];

function ratioCell(results: Results, m: Metric, [a, b]: Pair, bMetricId = m.id): string {
  const s = summarize(results.ratios(m.id, a, b, bMetricId));
  if (!s) return "—";
  return `${formatSummary(s, 2)}×`;
}

/** The ratio columns among `wanted` whose two contenders both ran. */
function pairs(names: readonly ContenderName[], wanted: readonly Pair[]): Pair[] {
  return wanted.filter(([a, b]) => names.includes(a) && names.includes(b));
}

/** A table of `metrics`: a column per contender measured in any of them, then the ratios. */
function table(
  results: Results,
  metrics: readonly Metric[],
  all: readonly ContenderName[],
  ratios: readonly Pair[],
  notes: Notes,
): string {
  const names = all.filter((c) => metrics.some((m) => measures(m, c)));
  const head = [
    "scenario",
    "unit",
    ...names,
    ...ratios.map(([a, b]) => `${a}/${b}`),
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
          ...ratios.map((p) => ratioCell(results, m, p)),
        ].join(" | ")
      } |`,
    );
  }
  return rows.join("\n");
}

/** One target tracked at {@linkcode SMALL_MTU}: tapir's rows against reference rows. */
interface Target {
  /** What is aimed for, as the report says it. */
  readonly text: string;
  /** Which of the small-MTU rows it is about. */
  readonly group: "throughput" | "cost";
  /** The contender tapir is held against. */
  readonly against: ContenderName;
  /** The reference's metric id for tapir's metric id. */
  readonly refMetric: (id: string) => string;
  /** Whether a median ratio tapir / reference meets the target. */
  readonly met: (ratio: number) => boolean;
}

/** The targets tracked at {@linkcode SMALL_MTU}. */
const TARGETS: readonly Target[] = [
  {
    text: `throughput at least half of veth's`,
    group: "throughput",
    against: "veth",
    refMetric: (id) => id,
    met: (r) => r >= 0.5,
  },
  {
    text: `CPU s/GB below pasta's at MTU ${DEFAULT_MTU}`,
    group: "cost",
    against: "pasta",
    refMetric: atDefaultMtu,
    met: (r) => r < 1,
  },
];

/** The targets table: one row per target and scenario. */
function targetTable(results: Results, names: readonly ContenderName[]): string {
  const rows = [
    "| target | tapir | reference | tapir / reference | met |",
    "| --- | --- | --- | ---: | --- |",
  ];
  for (const t of TARGETS) {
    for (const m of METRICS.filter((m) => m.mtu === SMALL_MTU && m.group === t.group)) {
      const ref = t.refMetric(m.id);
      const ran = names.includes("tapir") && names.includes(t.against);
      const s = ran ? summarize(results.ratios(m.id, "tapir", t.against, ref)) : null;
      const ratio = s ? `${formatSummary(s, 2)}×` : "—";
      const met = s ? (t.met(s.median) ? "yes" : "no") : "not measured";
      rows.push(
        `| ${t.text} | ${m.label} | ${t.against}, ${metric(ref).label} | ${ratio} | ${met} |`,
      );
    }
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
  streamRsc: StreamRscResults | null = null,
  backends: BackendResults | null = null,
  qemu: QemuResults | null = null,
  apiLoad: ApiLoadResults | null = null,
  engineStartup: EngineStartupResults | null = null,
  flows: FlowsResults | null = null,
): string {
  const notes = new Notes();
  const ratioTo = pairs(names, [["tapir", "pasta"], ["tapir", "slirp4netns"]]);
  const smallRatios = pairs(names, [
    ["tapir", "pasta"],
    ["tapir", "slirp4netns"],
    ["tapir", "veth"],
    ["tapir", "tapir-nooffload"],
  ]);
  const smallCostRatios = smallRatios.filter(([, b]) => !noTranslator.includes(b));
  const atDefault = METRICS.filter((m) => m.mtu !== SMALL_MTU);
  const main = atDefault.filter((m) => m.group !== "cost" && m.group !== "heap");
  const heap = METRICS.filter((m) => m.group === "heap");
  const cost = atDefault.filter((m) => m.group === "cost");
  const atSmall = METRICS.filter((m) => m.mtu === SMALL_MTU);
  const versions = Object.entries(machine.versions).map(([k, v]) => `- ${k}: ${v}`).join("\n");
  const orders = run.order.map((o, i) => `${i + 1}: ${o.join(", ")}`).join("; ");
  const minutes = run.elapsedS >= 120
    ? `${(run.elapsedS / 60).toFixed(1)} min`
    : `${run.elapsedS.toFixed(0)} s`;

  const mainTable = table(results, main, names, ratioTo, notes);
  const translated = names.filter((c) => !noTranslator.includes(c));
  const costTable = table(results, cost, translated, ratioTo, notes);
  const heapTable = names.includes("tapir") ? table(results, heap, ["tapir"], [], notes) : "";
  const kernelOnly = names.filter((c) => noTranslator.includes(c));
  const smallTable = table(
    results,
    atSmall.filter((m) => m.group !== "cost"),
    names,
    smallRatios,
    notes,
  );
  const smallCostTable = table(
    results,
    atSmall.filter((m) => m.group === "cost"),
    translated,
    smallCostRatios,
    notes,
  );

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
\`/proc/PID/status\` at the end of each repetition's session, and for the idle guest, of a fresh launch
as the start-up runs make it (no control socket) left alone for ${
    IDLE_SETTLE_MS / 1000
  } s. tapir's process is \`deno\`; pasta's
\`pasta\` (on CPUs with AVX2 Debian's build runs as \`passt.avx2\`); slirp4netns's \`slirp4netns\`.${
    kernelOnly.length
      ? ` ${
        kernelOnly.join(", ")
      } has no translator process (the kernel does the work), so no column here.`
      : ""
  }

${costTable}
${
    heapTable &&
    `
### tapir's JavaScript heap

What V8 allocated on tapir's heap per MiB each scenario moved (the data path is written to allocate
nothing per packet; what is left feeds the young-generation collector, whose pauses land on packets
in flight) and per 1000 ping-pongs (with the connection's set-up and the client's warm-up), and the
garbage collections during the ping-pong: \`runtime\` of the control socket's \`stats\`
(\`lib/runtime_stats.ts\`), read before and after each scenario.

${heapTable}
`
  }
## At guest MTU ${SMALL_MTU}

The TCP scenarios once more, in a guest launched with MTU ${SMALL_MTU} (Ethernet's), where every
frame is small and per-frame work shows. The rows above ran at MTU ${DEFAULT_MTU}: tapir's and pasta's
default, and what the harness gives slirp4netns and veth.${
    names.includes("tapir-nooffload")
      ? " **tapir-nooffload** is tapir with `--no-offload`: no segmentation offload either way and no" +
        " RSC (checksum offload stays), so the difference to tapir is what TSO and RSC are worth;" +
        " it runs only here."
      : ""
  } veth is a pair at MTU ${SMALL_MTU} here, the kernel's own ceiling (its GSO/GRO still works).

${smallTable}

CPU time of the translator per GB, measured as above:

${smallCostTable}

### Targets

What tapir aims for at MTU ${SMALL_MTU}: at least half of veth's throughput, and less CPU per GB
than pasta needs at its default MTU ${DEFAULT_MTU}. Ratios are taken within each repetition as above,
median (min–max); "met" judges the median.

${targetTable(results, names)}
${streamRscSection(streamRsc)}${backendSection(backends)}${qemuSection(qemu)}${
    apiLoadSection(apiLoad)
  }${engineStartupSection(engineStartup)}${flowsSection(flows)}
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
  - **tapir-nooffload**: the same with \`--no-offload\` (MTU ${SMALL_MTU} rows only).
  - **pasta**: \`pasta -f -q --config-net -t none -u none -T none -U none -- CMD\` as the
    unprivileged user \`${run.rootlessUser}\` (pasta refuses root); gateway 192.0.2.1, mapped to host
    loopback by default. Port forwarding is off, as in tapir's defaults.
  - **slirp4netns**: a guest made with \`unshare --user --map-root-user --net\` as
    \`${run.rootlessUser}\`, then \`slirp4netns --configure --mtu=${DEFAULT_MTU} PID tap0\`; host
    loopback is 10.0.2.2.
  - **veth**: \`unshare --net\` and a veth pair (MTU ${DEFAULT_MTU}) into the guest; the server
    address sits on the host namespace's loopback. No translator: the kernel-only ceiling.
  - The guest command starts only once its network is configured, for every contender.
  - For the MTU ${SMALL_MTU} rows each contender is launched again with a guest at that MTU: tapir and
    pasta with \`-m ${SMALL_MTU}\`, slirp4netns with \`--mtu=${SMALL_MTU}\`, veth with both ends of
    the pair at ${SMALL_MTU}.
- Clients run inside the guest (\`nsenter -n\`, as root, identical for every contender):
  - TCP throughput: \`iperf3 -J -t ${run.durationS}\`, 1 and 4 streams (\`-P 4\`); host→guest is
    \`-R\`. Rate is the receiver's. At MTU ${DEFAULT_MTU} and again at ${SMALL_MTU}.
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
    script as its command (tapir without \`--api-socket\`, which would hold the command back until
    the socket listens; the others have none); times from the launch to the script's first line
    (command running), to its first ping reply from the gateway, and to its first one-byte TCP
    exchange with the server.
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

/** One row of the RSC table: on, off, and on/off, each "median (min–max)". */
function streamRscRow(
  label: string,
  r: StreamRscResults,
  pick: (run: { gbps: number; writesPerMiB: number }) => number,
  digits: number,
): string {
  const values = (runs: StreamRscRun[]) =>
    runs.flatMap((x) => "error" in x ? [] : [pick(x as { gbps: number; writesPerMiB: number })]);
  const on = values(r.on);
  const off = values(r.off);
  const ratios = on.length === off.length ? on.map((v, i) => v / off[i]) : [];
  const show = (v: number[], d: number) => {
    const s = summarize(v);
    return s === null ? "not measured" : formatSummary(s, d);
  };
  return `| ${label} | ${show(on, digits)} | ${show(off, digits)} | ${
    ratios.length ? `${show(ratios, 2)}×` : "—"
  } |`;
}

/** The section on RSC over the stream backend, or nothing when it did not run. */
function streamRscSection(r: StreamRscResults | null): string {
  if (r === null) return "";
  const errors = [...r.on, ...r.off].flatMap((x) => "error" in x ? [x.error] : []);
  return `
## RSC on the stream backend

\`tapir vm -m 1500\` over QEMU's stream socket, which carries no offload metadata, so a guest sends
MSS-sized (1460-byte) segments. In place of QEMU, \`bench/stream_guest.ts\` connects to the socket
and uploads ${(r.bytes / 2 ** 20).toFixed(0)} MiB over one TCP connection as fast as tapir's window
allows; socat on the host namespace's loopback receives (1 MiB blocks). With RSC, tapir merges the in-order segments
of each receive batch into one socket write; \`--no-rsc\` writes each segment. Rate from the first
data byte to the ACK of the FIN; writes from tapir's counters at exit. The guest program's own cost
(frames and checksums built in JavaScript) is in the rate.

| | RSC on | \`--no-rsc\` | on/off |
| --- | --: | --: | --: |
${streamRscRow("Gbit/s ↑", r, (x) => x.gbps, 2)}
${streamRscRow("writes to the host socket per MiB ↓", r, (x) => x.writesPerMiB, 1)}
${errors.length ? `\nRuns that failed: ${errors.join("; ")}\n` : ""}`;
}

/** "median (min–max)" of the runs that did not fail, or "not measured". */
function backendCell(
  runs: BackendRun[],
  pick: (r: { gbps: number; cpuSPerGB: number }) => number,
  digits: number,
): string {
  const v = runs.flatMap((x) =>
    "error" in x ? [] : [pick(x as { gbps: number; cpuSPerGB: number })]
  );
  const s = summarize(v);
  return s === null ? "not measured" : formatSummary(s, digits);
}

/** Median of `a` over median of `b`, or "—". */
function medianRatio(
  a: BackendRun[],
  b: BackendRun[],
  pick: (r: { gbps: number; cpuSPerGB: number }) => number,
): string {
  const med = (runs: BackendRun[]) =>
    summarize(
      runs.flatMap((x) => "error" in x ? [] : [pick(x as { gbps: number; cpuSPerGB: number })]),
    );
  const x = med(a);
  const y = med(b);
  return x === null || y === null ? "—" : `${(x.median / y.median).toFixed(2)}×`;
}

/** The section comparing the stream socket with vhost-user, or nothing when it did not run. */
function backendSection(r: BackendResults | null): string {
  if (r === null) return "";
  const all = Object.values(r.runs).flat();
  const errors = all.flatMap((x) => "error" in x ? [x.error] : []);
  const row = (
    label: string,
    stream: BackendRun[],
    vhost: BackendRun[],
    pick: (r: { gbps: number; cpuSPerGB: number }) => number,
    digits: number,
  ) =>
    `| ${label} | ${backendCell(stream, pick, digits)} | ${backendCell(vhost, pick, digits)} | ${
      medianRatio(vhost, stream, pick)
    } |`;
  const { streamUp, streamDown, vhostUp, vhostDown } = r.runs;
  return `
## Stream socket vs vhost-user

\`tapir vm -m 1500\` with a guest program in place of QEMU, one TCP connection of
${(r.bytes / 2 ** 20).toFixed(0)} MiB each way to socat on the host namespace's loopback (1 MiB
blocks; zeros from \`/dev/zero\` toward the guest). Over the
stream socket (\`bench/stream_guest.ts\`) the guest sends MSS-sized segments, which RSC merges, and
receives MTU-sized frames; over vhost-user (\`bench/vhost_guest.ts\`: guest memory in a memfd, rings
and eventfds as QEMU sets them up) guest and tapir exchange 64 KiB GSO frames through the rings. Rate
from the first data byte to the end of the transfer; CPU is tapir's own over the same interval. The
guest programs are JavaScript and their cost is in the rate; a real guest is QEMU under TCG here,
slower than both.

| | stream socket | vhost-user | vhost-user/stream |
| --- | --: | --: | --: |
${row("guest → host, Gbit/s ↑", streamUp, vhostUp, (x) => x.gbps, 2)}
${row("host → guest, Gbit/s ↑", streamDown, vhostDown, (x) => x.gbps, 2)}
${row("guest → host, tapir CPU s/GB ↓", streamUp, vhostUp, (x) => x.cpuSPerGB, 2)}
${row("host → guest, tapir CPU s/GB ↓", streamDown, vhostDown, (x) => x.cpuSPerGB, 2)}
${errors.length ? `\nRuns that failed: ${errors.join("; ")}\n` : ""}`;
}

/** The section on a real guest under QEMU, or nothing when it did not run. */
function qemuSection(r: QemuResults | null): string {
  if (r === null) return "";
  const errors = [...r.stream, ...r.vhost].flatMap((x) => "error" in x ? [x.error] : []);
  type Ok = { downMbps: number; upMbps: number };
  const values = (runs: QemuRun[], pick: (x: Ok) => number) =>
    runs.flatMap((x) => "error" in x ? [] : [pick(x as Ok)]);
  const cell = (runs: QemuRun[], pick: (x: Ok) => number) => {
    const s = summarize(values(runs, pick));
    return s === null ? "not measured" : formatSummary(s, 0);
  };
  const ratio = (pick: (x: Ok) => number) => {
    const a = summarize(values(r.vhost, pick));
    const b = summarize(values(r.stream, pick));
    return a === null || b === null ? "—" : `${(a.median / b.median).toFixed(2)}×`;
  };
  const row = (label: string, pick: (x: Ok) => number) =>
    `| ${label} | ${cell(r.stream, pick)} | ${cell(r.vhost, pick)} | ${ratio(pick)} |`;
  return `
## A QEMU guest: stream socket vs vhost-user

The VM tests' guest (Debian's kernel, busybox) under QEMU 7.2 with TCG — no KVM on these machines —
on \`tapir vm -m 1500\`, downloads ${(r.bytes / 2 ** 20).toFixed(0)} MiB with wget from a server on
the host namespace's loopback and uploads as many; the guest times each transfer. The emulated guest
is the bottleneck here, not tapir: these rows are what such a VM gets on this machine.

| | stream socket | vhost-user | vhost-user/stream |
| --- | --: | --: | --: |
${row("host → guest (download), Mbit/s ↑", (x) => x.downMbps)}
${row("guest → host (upload), Mbit/s ↑", (x) => x.upMbps)}
${errors.length ? `\nRuns that failed: ${errors.join("; ")}\n` : ""}`;
}

/** The section on the control socket under load, or nothing when it did not run. */
function apiLoadSection(r: ApiLoadResults | null): string {
  if (r === null) return "";
  type Ok = { quietGbps: number; busyGbps: number; repliesPerS: number };
  const ok = r.runs.flatMap((x) => "error" in x ? [] : [x as Ok]);
  const errors = r.runs.flatMap((x) => "error" in x ? [x.error] : []);
  const cell = (pick: (x: Ok) => number, digits: number) => {
    const s = summarize(ok.map(pick));
    return s === null ? "not measured" : formatSummary(s, digits);
  };
  return `
## The control socket under load

One \`tapir ns -t 5201 --api-socket S\`: iperf3 (${r.seconds} s) from the host namespace's own address to a
server in tapir's namespace (the tap path), alone and while ${API_POLLERS} clients poll \`stats\` on the
control socket as fast as the replies come. The pollers run in the benchmark's own process on the same
cores, so their CPU is part of what the transfer loses.

| | Gbit/s ↑ |
| --- | --: |
| iperf3 alone | ${cell((x) => x.quietGbps, 2)} |
| iperf3 with ${API_POLLERS} clients polling \`stats\` | ${cell((x) => x.busyGbps, 2)} |
| with/alone | ${cell((x) => x.busyGbps / x.quietGbps, 2)} |

\`stats\` replies per second during the busy transfer: ${cell((x) => x.repliesPerS, 0)}.
${errors.length ? `\nRuns that failed: ${errors.join("; ")}\n` : ""}`;
}

/** The section on many concurrent TCP flows, or nothing when it did not run. */
function flowsSection(r: FlowsResults | null): string {
  if (r === null) return "";
  type Ok = Exclude<FlowsResults["runs"][number], { error: string }>;
  const ok = r.runs.flatMap((x) => "error" in x ? [] : [x as Ok]);
  const errors = r.runs.flatMap((x) => "error" in x ? [x.error] : []);
  const cell = (pick: (x: Ok) => number, digits: number) => {
    const s = summarize(ok.map(pick));
    return s === null ? "not measured" : formatSummary(s, digits);
  };
  const count = r.count.toLocaleString("en-US");
  const unsettled = ok.filter((x) => x.settleS === null).length;
  const margin = `${SETTLE_MARGIN * 100} %`;
  return `
## Many TCP flows

tapir's memory with ${count} TCP connections open at once: the guest of one \`tapir ns\` opens them
through the gateway mapping to a server on host loopback (\`bench/flows_peer.ts\`, over four ports),
holds them, then closes them all. Resident set from the control socket's \`stats\` (idle before, with
every flow open, once the flow count is back to idle, and then each second until it is within
${margin} of idle, for at most ${r.settleLimitS} s), peak from \`VmHWM\`.${
    r.limitedBy ? ` Fewer than ${FLOWS_TARGET.toLocaleString("en-US")}: ${r.limitedBy}.` : ""
  }

| | tapir |
| --- | --: |
| seconds to open them | ${cell((x) => x.openS, 1)} |
| RSS idle, MiB | ${cell((x) => x.idleMiB, 1)} |
| RSS with the flows open, MiB | ${cell((x) => x.heldMiB, 1)} |
| per flow, KiB | ${cell((x) => (x.heldMiB - x.idleMiB) * 1024 / x.count, 2)} |
| peak (VmHWM), MiB | ${cell((x) => x.peakMiB, 1)} |
| RSS once they are gone, MiB | ${cell((x) => x.afterMiB, 1)} |
| seconds until the TCP flow count was back to idle | ${cell((x) => x.returnS, 1)} |
| then seconds until RSS was within ${margin} of idle | ${
    cell((x) => x.settleS ?? r.settleLimitS, 1)
  }${unsettled ? ` (not within ${r.settleLimitS} s in ${unsettled} of ${ok.length} runs)` : ""} |
| RSS then, MiB | ${cell((x) => x.settledMiB, 1)} |
${errors.length ? `\nRuns that failed: ${errors.join("; ")}\n` : ""}`;
}

/** The section on start-up as container engines see it, or nothing when it did not run. */
function engineStartupSection(r: EngineStartupResults | null): string {
  if (r === null) return "";
  const cell = (values: readonly number[]) => {
    const s = summarize(values);
    return s === null ? "not measured" : formatSummary(s, 0);
  };
  const ratio = (a: readonly number[], b: readonly number[]) => {
    const ma = summarize(a)?.median;
    const mb = summarize(b)?.median;
    return ma === undefined || mb === undefined ? "—" : num(ma / mb, 2);
  };
  const ms = r.ms;
  return `
## Start-up for container engines

Time from exec of the network helper until the engine may go on, ${r.launches} launch${
    r.launches === 1 ? "" : "es"
  } per repetition, each
with a fresh namespace, all as root in the host namespace; median (min–max) in ms ↓. tapir runs as
\`deno run -A main.ts\` under the program's name (the wrapper a user installs).

| | real program | tapir | tapir/real |
| --- | --: | --: | --: |
| slirp4netns contract (podman 4.3's arguments): exec → "1" on the ready fd | ${
    cell(ms["slirp4netns"])
  } | ${cell(ms["tapir-slirp4netns"])} | ${ratio(ms["tapir-slirp4netns"], ms["slirp4netns"])} |
| pasta contract (podman 5's arguments): exec → first process exits 0 | ${cell(ms["pasta"])} | ${
    cell(ms["tapir-pasta"])
  } | ${ratio(ms["tapir-pasta"], ms["pasta"])} |

A bare \`deno run\` of an empty file, timed the same way: ${cell(ms["deno-empty"])} ms — the
runtime's own share of tapir's figures.
${r.errors.length ? `\nLaunches that failed: ${r.errors.join("; ")}\n` : ""}`;
}
