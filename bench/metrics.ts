/**
 * What the benchmark measures, and how repetitions are summarised.
 *
 * Every number the harness produces is one {@linkcode Outcome} in a cell
 * (metric × contender × repetition): a value, or the reason it could not be
 * measured. A reason is text taken from the failure itself (a probe's error,
 * iperf3's `error` field, a process's last words), never a canned label, so a
 * report cannot claim "not supported" for something that merely broke.
 *
 * Summaries are the median with the min–max range over repetitions. Ratios
 * between two contenders are taken pair by pair within the same repetition
 * (the two ran minutes apart on the same machine state), then summarised
 * the same way.
 *
 * @module
 */

/**
 * The contenders, in their default order. `tapir-nooffload` is tapir with
 * `--no-offload`: what the tap's offloads (checksum, segmentation) are worth.
 */
export const CONTENDERS = ["tapir", "tapir-nooffload", "pasta", "slirp4netns", "veth"] as const;

/** One contender's name. */
export type ContenderName = typeof CONTENDERS[number];

/**
 * The guest MTU unless a scenario says otherwise: tapir's and pasta's
 * default, and what the harness gives slirp4netns and the veth pair.
 */
export const DEFAULT_MTU = 65520;

/**
 * The guest MTU of the extra TCP rows: Ethernet's, where every frame is
 * small and per-frame work (or the lack of offloads) shows.
 */
export const SMALL_MTU = 1500;

/**
 * Contenders measured only in the {@linkcode SMALL_MTU} scenarios, to keep
 * the run short: elsewhere they would repeat their sibling's numbers.
 */
export const SMALL_MTU_ONLY: readonly ContenderName[] = ["tapir-nooffload"];

/**
 * Whether `contender` is measured in a metric or scenario: at guest MTU
 * `mtu`, and if the metric is one contender's `only`, that one.
 */
export function measures(
  what: { readonly mtu?: number; readonly only?: ContenderName },
  contender: ContenderName,
): boolean {
  if (what.only !== undefined && what.only !== contender) return false;
  return what.mtu === SMALL_MTU || !SMALL_MTU_ONLY.includes(contender);
}

/** Suffix of the ids of the {@linkcode SMALL_MTU} scenarios and their metrics. */
const SMALL_SUFFIX = `_mtu${SMALL_MTU}`;

/** The id of the same scenario at the default MTU, for a metric id (unchanged if it is one). */
export function atDefaultMtu(id: string): string {
  return id.endsWith(SMALL_SUFFIX) ? id.slice(0, -SMALL_SUFFIX.length) : id;
}

/**
 * One measurement: a value (with a caveat worth printing, if any), or why
 * there is none.
 */
export type Outcome = { readonly ok: true; readonly value: number; readonly note?: string } | {
  readonly ok: false;
  readonly reason: string;
};

/** Which way is better for a metric. */
export type Better = "higher" | "lower";

/** How a metric is reported. */
export interface Metric {
  /** Stable identifier (JSON key). */
  readonly id: string;
  /** Human label for tables and the chart. */
  readonly label: string;
  /** Unit as printed. */
  readonly unit: string;
  /** Which direction is better. */
  readonly better: Better;
  /** Table section. */
  readonly group: "throughput" | "latency" | "startup" | "cost" | "heap";
  /** Decimal places when printed. */
  readonly digits: number;
  /** Drawn in docs/bench.svg. */
  readonly chart: boolean;
  /**
   * Measured only where the contender offers the feature (ping to the
   * gateway is not something every translator does): a reason in the cell is
   * a finding about the contender, not a broken harness.
   */
  readonly optional?: boolean;
  /** Needs a translator process (the veth ceiling has none). */
  readonly translatorOnly?: boolean;
  /** Guest MTU of the scenario behind a throughput or cost metric; absent for the others. */
  readonly mtu?: number;
  /** The one contender measured (tapir's own JavaScript heap); absent: every one. */
  readonly only?: ContenderName;
}

/** A throughput scenario run with iperf3. */
export interface Throughput {
  /** Scenario id; its metrics are `ID` (rate), `ID_loss` (UDP) and `cpu_ID`. */
  readonly id: string;
  /** Human label. */
  readonly label: string;
  /** Extra iperf3 client arguments (stream count, direction, UDP). */
  readonly args: readonly string[];
  /** UDP at a fixed offered rate (reports loss too). */
  readonly udp: boolean;
  /** Guest MTU it runs at: one guest per MTU, so a contender is launched once per MTU. */
  readonly mtu: number;
}

/** The TCP scenarios, run at both MTUs. */
const TCP: readonly { id: string; label: string; args: readonly string[] }[] = [
  { id: "tcp_up_1", label: "TCP guest→host, 1 stream", args: [] },
  { id: "tcp_up_4", label: "TCP guest→host, 4 streams", args: ["-P", "4"] },
  { id: "tcp_down_1", label: "TCP host→guest, 1 stream", args: ["-R"] },
  { id: "tcp_down_4", label: "TCP host→guest, 4 streams", args: ["-R", "-P", "4"] },
];

/**
 * The iperf3 scenarios, in the order they run: TCP and UDP at the default
 * MTU, then TCP again at {@linkcode SMALL_MTU}. TCP labels name the MTU; the
 * UDP datagrams (1400 bytes) fit either.
 */
export const THROUGHPUT: readonly Throughput[] = [
  ...TCP.map((t) => ({
    ...t,
    label: `${t.label}, MTU ${DEFAULT_MTU}`,
    udp: false,
    mtu: DEFAULT_MTU,
  })),
  { id: "udp_up", label: "UDP guest→host", args: ["-u"], udp: true, mtu: DEFAULT_MTU },
  { id: "udp_down", label: "UDP host→guest", args: ["-u", "-R"], udp: true, mtu: DEFAULT_MTU },
  ...TCP.map((t) => ({
    id: `${t.id}${SMALL_SUFFIX}`,
    label: `${t.label}, MTU ${SMALL_MTU}`,
    args: t.args,
    udp: false,
    mtu: SMALL_MTU,
  })),
];

/** Whether the chart gets a panel for scenario `t` (the rest are in the tables). */
function charted(t: Throughput): boolean {
  // At the small MTU only the single-stream rows, to keep the chart readable.
  return t.mtu !== SMALL_MTU || !t.args.includes("-P");
}

function throughputMetrics(): Metric[] {
  const out: Metric[] = [];
  for (const t of THROUGHPUT) {
    // UDP runs at a fixed offered rate of some hundred Mbit/s: whole Mbit/s read best.
    out.push({
      id: t.id,
      label: t.udp ? `${t.label}, achieved` : t.label,
      unit: t.udp ? "Mbit/s" : "Gbit/s",
      better: "higher",
      group: "throughput",
      digits: t.udp ? 0 : 2,
      chart: charted(t),
      mtu: t.mtu,
    });
    if (t.udp) {
      out.push({
        id: `${t.id}_loss`,
        label: `${t.label}, loss`,
        unit: "%",
        better: "lower",
        group: "throughput",
        digits: 2,
        chart: false,
        mtu: t.mtu,
      });
    }
  }
  return out;
}

function costMetrics(): Metric[] {
  const out: Metric[] = THROUGHPUT.map((t) => ({
    id: `cpu_${t.id}`,
    label: `CPU, ${t.label}`,
    unit: "s/GB",
    better: "lower" as const,
    group: "cost" as const,
    digits: 2,
    // The single-stream TCP costs make the chart; the rest are in the tables.
    chart: !t.udp && !t.args.includes("-P"),
    translatorOnly: true,
    mtu: t.mtu,
  }));
  out.push({
    id: "rss_idle",
    label: "Peak RSS, idle guest, no control socket (VmHWM)",
    unit: "MiB",
    better: "lower",
    group: "cost",
    digits: 1,
    chart: false,
    translatorOnly: true,
  });
  out.push({
    id: "rss",
    label: "Peak RSS (VmHWM)",
    unit: "MiB",
    better: "lower",
    group: "cost",
    digits: 1,
    chart: true,
    translatorOnly: true,
  });
  return out;
}

/**
 * tapir's JavaScript heap (from its control socket's statistics, see
 * `lib/runtime_stats.ts`): bytes V8 allocated per MiB each default-MTU
 * scenario moved, per 1000 ping-pongs, and the collections during those.
 */
function heapMetrics(): Metric[] {
  const heap = {
    group: "heap" as const,
    better: "lower" as const,
    chart: false,
    only: "tapir" as const,
  };
  return [
    ...THROUGHPUT.filter((t) => t.mtu === DEFAULT_MTU).map((t) => ({
      ...heap,
      id: `alloc_${t.id}`,
      label: `Allocated, ${t.label}`,
      unit: "KiB/MiB",
      digits: 1,
    })),
    {
      ...heap,
      id: "alloc_rr",
      label: "Allocated, TCP 1-byte ping-pong",
      unit: "KiB/1000",
      digits: 1,
    },
    {
      ...heap,
      id: "gc_rr_count",
      label: "GC pauses during the ping-pong",
      unit: "count",
      digits: 0,
    },
    { ...heap, id: "gc_rr_ms", label: "GC pause time during the ping-pong", unit: "ms", digits: 2 },
  ];
}

/** Every metric, in report order. */
export const METRICS: readonly Metric[] = [
  ...throughputMetrics(),
  {
    id: "rr_p50",
    label: "TCP 1-byte ping-pong, p50",
    unit: "µs",
    better: "lower",
    group: "latency",
    digits: 0,
    chart: true,
  },
  {
    id: "rr_p99",
    label: "TCP 1-byte ping-pong, p99",
    unit: "µs",
    better: "lower",
    group: "latency",
    digits: 0,
    chart: true,
  },
  {
    id: "crr",
    label: "TCP connection rate",
    unit: "conn/s",
    better: "higher",
    group: "latency",
    digits: 0,
    chart: true,
  },
  {
    id: "startup_cmd",
    label: "Start-up: command running",
    unit: "ms",
    better: "lower",
    group: "startup",
    digits: 0,
    chart: true,
  },
  {
    id: "startup_ping",
    label: "Start-up: first ping reply from the gateway",
    unit: "ms",
    better: "lower",
    group: "startup",
    digits: 0,
    chart: true,
    optional: true,
  },
  {
    id: "startup_tcp",
    label: "Start-up: first TCP reply from the server",
    unit: "ms",
    better: "lower",
    group: "startup",
    digits: 0,
    chart: true,
  },
  ...costMetrics(),
  ...heapMetrics(),
];

/** The metric with `id`; throws for an unknown id (a harness bug). */
export function metric(id: string): Metric {
  const m = METRICS.find((x) => x.id === id);
  if (!m) throw new Error(`unknown metric ${id}`);
  return m;
}

/** Median, minimum and maximum of a non-empty list. */
export interface Summary {
  /** Median (mean of the middle two for an even count). */
  readonly median: number;
  /** Smallest value. */
  readonly min: number;
  /** Largest value. */
  readonly max: number;
  /** How many values. */
  readonly n: number;
}

/** Summarises `values`; null when empty. */
export function summarize(values: readonly number[]): Summary | null {
  if (values.length === 0) return null;
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  return { median, min: s[0], max: s[s.length - 1], n: s.length };
}

/** The median of a non-empty list. */
export function median(values: readonly number[]): number {
  return summarize(values)?.median ?? NaN;
}

/** All results of a run: cells of outcomes, one per repetition. */
export class Results {
  readonly #cells = new Map<string, Outcome[]>();
  /** Number of repetitions. */
  readonly reps: number;

  /** Empty results for `reps` repetitions. */
  constructor(reps: number) {
    this.reps = reps;
  }

  /** Records the outcome of `metricId` for `contender` in repetition `rep`. */
  set(metricId: string, contender: ContenderName, rep: number, outcome: Outcome): void {
    metric(metricId); // unknown ids are a harness bug: fail loudly
    const key = `${metricId}/${contender}`;
    let list = this.#cells.get(key);
    if (!list) this.#cells.set(key, list = []);
    list[rep] = outcome;
  }

  /** Outcomes of one cell, indexed by repetition (holes: not run). */
  get(metricId: string, contender: ContenderName): readonly (Outcome | undefined)[] {
    return this.#cells.get(`${metricId}/${contender}`) ?? [];
  }

  /** Measured values of one cell. */
  values(metricId: string, contender: ContenderName): number[] {
    const out: number[] = [];
    for (const o of this.get(metricId, contender)) if (o?.ok) out.push(o.value);
    return out;
  }

  /** Distinct caveats noted on measured values of one cell. */
  notes(metricId: string, contender: ContenderName): string[] {
    const out = new Set<string>();
    for (const o of this.get(metricId, contender)) if (o?.ok && o.note) out.add(o.note);
    return [...out];
  }

  /** Distinct reasons recorded for one cell, most frequent first. */
  reasons(metricId: string, contender: ContenderName): string[] {
    const counts = new Map<string, number>();
    for (const o of this.get(metricId, contender)) {
      if (o && !o.ok) counts.set(o.reason, (counts.get(o.reason) ?? 0) + 1);
    }
    return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([r]) => r);
  }

  /**
   * Ratios `a / b` for one metric (or `a`'s `metricId` over `b`'s
   * `bMetricId`), repetition by repetition, over the repetitions where both
   * were measured.
   */
  ratios(
    metricId: string,
    a: ContenderName,
    b: ContenderName,
    bMetricId: string = metricId,
  ): number[] {
    const xs = this.get(metricId, a);
    const ys = this.get(bMetricId, b);
    const out: number[] = [];
    for (let r = 0; r < this.reps; r++) {
      const x = xs[r];
      const y = ys[r];
      if (x?.ok && y?.ok && y.value !== 0) out.push(x.value / y.value);
    }
    return out;
  }

  /** Plain-object form for JSON output: `{ metricId: { contender: Outcome[] } }`. */
  toJSON(): Record<string, Record<string, (Outcome | null)[]>> {
    const out: Record<string, Record<string, (Outcome | null)[]>> = {};
    for (const m of METRICS) {
      const row: Record<string, (Outcome | null)[]> = {};
      for (const c of CONTENDERS) {
        const cell = this.get(m.id, c);
        if (cell.length === 0) continue;
        row[c] = Array.from({ length: this.reps }, (_, r) => cell[r] ?? null);
      }
      out[m.id] = row;
    }
    return out;
  }
}
