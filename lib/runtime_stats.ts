/**
 * What the JavaScript runtime spends on tapir: memory, bytes allocated,
 * garbage-collection pauses.
 *
 * # Theory of operation
 *
 * Every object the data path allocates feeds V8's young-generation
 * collector, whose pauses land on whatever packet is in flight; the hot path
 * is written to allocate nothing per packet, and this is how that is checked
 * from outside. V8 counts every byte it has ever allocated on the heap
 * (`total_allocated_bytes` of `node:v8`'s heap statistics), so two reports
 * give the allocation of what happened between them, and `GCProfiler`
 * reports each collection with its duration.
 *
 * `node:v8` costs ~12 ms to load, too much for start-up and for a user who
 * never asks: it is loaded by the first report that wants it, and from then
 * on collections are counted. Until it has loaded, a report has the
 * process's memory only. The profiler keeps one record per collection until
 * it is stopped, so {@linkcode RuntimeStats.drain} (once a second, from the
 * reactor) folds the records into totals and starts it afresh.
 *
 * **Giving memory back.** Memory freed with `free()` stays in the process:
 * glibc returns an arena's pages only from its top, and only above a
 * threshold that rises to the largest block it ever unmapped — the flow
 * table's arrays are megabytes. Measured with 19 500 TCP flows opened and
 * closed: once V8 had collected their objects, malloc's arenas still held
 * 14 MiB more than when idle, for good; with the flows open, 7 MiB of them
 * were already free. {@linkcode MallocTrimmer} calls `malloc_trim(0)` once a
 * second while flows come and go and for {@linkcode MALLOC_TRIM_WINDOW_MS}
 * after the count last changed (V8 frees what the closed flows' objects held
 * only when it collects them, 8–30 s later when idle), never on a quiet
 * tapir. A call takes 10–350 µs (measured with arenas of 1–150 MiB).
 *
 * @module
 */

import { logDebug } from "./log.ts";

/** Garbage collections since the runtime statistics were first asked for. */
export interface GcReport {
  /** Collections of every kind. */
  readonly count: number;
  /** Their pauses, summed, in milliseconds. */
  readonly pauseMs: number;
  /** The longest pause, in milliseconds. */
  readonly maxPauseMs: number;
  /** Seconds since the process started when counting began. */
  readonly sinceS: number;
}

/** The runtime's part of the statistics report. */
export interface RuntimeReport {
  /** Resident set of the process, in bytes. */
  readonly rssBytes: number;
  /** V8 heap in use and reserved, in bytes. */
  readonly heapUsedBytes: number;
  readonly heapTotalBytes: number;
  /** Bytes V8 has allocated since the process started (null until `node:v8` is loaded). */
  readonly heapAllocatedBytes: number | null;
  /** Collections (null until `node:v8` is loaded). */
  readonly gc: GcReport | null;
}

/** The part of `node:v8` used here. */
interface V8Module {
  getHeapStatistics(): { total_allocated_bytes?: number };
  GCProfiler?: new () => GcProfiler;
}

/** `node:v8`'s GCProfiler: `cost` is the pause in nanoseconds (measured against `--trace-gc`). */
interface GcProfiler {
  start(): void;
  stop(): { statistics?: { cost: number }[] } | undefined;
}

/** How long after the flow count last changed {@linkcode MallocTrimmer} goes on trimming. */
export const MALLOC_TRIM_WINDOW_MS = 60_000;

/** Counters of {@linkcode MallocTrimmer}. */
export interface MallocTrimStats {
  /** Calls of `malloc_trim`. */
  trims: number;
  /** Of those, calls that gave memory back to the kernel. */
  released: number;
}

/** Hands malloc's free pages back to the kernel while flows come and go; see the module comment. */
export class MallocTrimmer {
  /** Counters, for the statistics report. */
  readonly stats: MallocTrimStats = { trims: 0, released: 0 };
  readonly #trim: () => number;
  #live = -1;
  #changedMs = -Infinity;

  /** `trim` is `malloc_trim(0)` (`sys.mallocTrim`): 1 if memory was released. */
  constructor(trim: () => number) {
    this.#trim = trim;
  }

  /** Once a second: the clock (ms) and the flows live now. */
  tick(nowMs: number, live: number): void {
    if (live !== this.#live) {
      this.#live = live;
      this.#changedMs = nowMs;
    }
    if (nowMs - this.#changedMs > MALLOC_TRIM_WINDOW_MS) return;
    this.stats.trims++;
    if (this.#trim() === 1) this.stats.released++;
  }
}

/** Runtime statistics of this process; see the module comment. */
export class RuntimeStats {
  #v8: V8Module | null = null;
  #loading = false;
  #profiler: GcProfiler | null = null;
  #gcCount = 0;
  #gcPauseNs = 0;
  #gcMaxPauseNs = 0;
  #sinceS = 0;

  /** The report now; the first call starts loading `node:v8`. */
  report(): RuntimeReport {
    const mem = Deno.memoryUsage();
    this.#load();
    this.drain();
    const v8 = this.#v8;
    return {
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
      heapTotalBytes: mem.heapTotal,
      heapAllocatedBytes: v8?.getHeapStatistics().total_allocated_bytes ?? null,
      gc: this.#profiler === null ? null : {
        count: this.#gcCount,
        pauseMs: this.#gcPauseNs / 1e6,
        maxPauseMs: this.#gcMaxPauseNs / 1e6,
        sinceS: this.#sinceS,
      },
    };
  }

  /** Folds the profiler's records into the totals (call now and then: they pile up). */
  drain(): void {
    const p = this.#profiler;
    if (p === null) return;
    const records = p.stop()?.statistics ?? [];
    p.start();
    for (const r of records) {
      this.#gcCount++;
      this.#gcPauseNs += r.cost;
      if (r.cost > this.#gcMaxPauseNs) this.#gcMaxPauseNs = r.cost;
    }
  }

  #load(): void {
    if (this.#loading) return;
    this.#loading = true;
    import("node:v8").then((m) => {
      const v8 = (m.default ?? m) as unknown as V8Module;
      this.#v8 = v8;
      if (typeof v8.GCProfiler === "function") {
        this.#profiler = new v8.GCProfiler();
        this.#profiler.start();
        this.#sinceS = Math.round(performance.now()) / 1000;
      }
    }).catch((err) => logDebug(`runtime statistics: node:v8: ${err}`));
  }
}
