import { deepEqual, equal, ok } from "node:assert/strict";
import { MALLOC_TRIM_WINDOW_MS, MallocTrimmer, RuntimeStats } from "../lib/runtime_stats.ts";
import * as sys from "../lib/sys/mod.ts";

/** Allocates about `mib` MiB of short-lived objects (young-generation garbage). */
function garbage(mib: number): number {
  let keep = 0;
  const ring: unknown[] = new Array(256);
  for (let i = 0; i < mib * 1024 * 1024 / 32; i++) {
    const o = { i, next: null as unknown };
    ring[i & 255] = o;
    keep += o.i & 1;
  }
  return keep + ring.length;
}

Deno.test("runtime statistics: memory at once, V8's allocation and collections from the first request on", async () => {
  const rt = new RuntimeStats();
  const first = rt.report();
  ok(first.rssBytes > 0 && first.heapUsedBytes > 0 && first.heapTotalBytes >= first.heapUsedBytes);
  equal(first.heapAllocatedBytes, null, "node:v8 is loaded by this first request, not before");
  equal(first.gc, null);

  let ready = first;
  for (let i = 0; i < 100 && (ready.heapAllocatedBytes === null || ready.gc === null); i++) {
    await new Promise((r) => setTimeout(r, 10));
    ready = rt.report();
  }
  ok(ready.heapAllocatedBytes !== null && ready.heapAllocatedBytes > 0);
  ok(ready.gc !== null);
  const before = ready.gc.count;

  garbage(64);
  rt.drain(); // folds the profiler's records; `report` does too
  const after = rt.report();
  ok(after.heapAllocatedBytes! - ready.heapAllocatedBytes >= 32 * 1024 * 1024, "64 MiB allocated");
  ok(after.gc!.count > before, "the garbage made collections");
  ok(
    after.gc!.pauseMs > 0 && after.gc!.maxPauseMs > 0 && after.gc!.maxPauseMs <= after.gc!.pauseMs,
  );
  ok(after.gc!.sinceS > 0);
});

Deno.test("the malloc trimmer trims each second while the flow count moves, and for a minute after, never when quiet", () => {
  let calls = 0;
  const trimmer = new MallocTrimmer(() => (calls++ % 2 === 0 ? 1 : 0));
  let now = 0;
  const second = (live: number) => trimmer.tick(now += 1000, live);
  second(0); // the first count seen is a change
  const startup = calls;
  equal(startup, 1);
  for (let s = 0; s < 70; s++) second(0);
  equal(calls, 1 + MALLOC_TRIM_WINDOW_MS / 1000, "a minute after the last change, then no more");
  const quiet = calls;
  for (let s = 1; s <= 10; s++) second(s * 100); // flows opening
  equal(calls, quiet + 10, "every second while they change");
  for (let s = 0; s < 200; s++) second(1000); // all open, then quiet
  equal(calls, quiet + 10 + MALLOC_TRIM_WINDOW_MS / 1000);
  deepEqual(trimmer.stats, { trims: calls, released: Math.ceil(calls / 2) });
});

Deno.test("malloc_trim gives freed memory in the middle of the heap back to the kernel", () => {
  // Scattered blocks kept alive pin the heap's top, so free() alone cannot
  // shrink it: the freed memory between them stays resident until trimmed.
  const libc = Deno.dlopen("libc.so.6", {
    malloc: { parameters: ["usize"], result: "pointer" },
    free: { parameters: ["pointer"], result: "void" },
    memset: { parameters: ["pointer", "i32", "usize"], result: "pointer" },
  });
  const BLOCK = 16 * 1024;
  const blocks: Deno.PointerValue[] = [];
  try {
    sys.mallocTrim();
    for (let i = 0; i < 4096; i++) {
      const p = libc.symbols.malloc(BigInt(BLOCK));
      libc.symbols.memset(p, 1, BigInt(BLOCK)); // resident
      blocks.push(p);
    }
    for (let i = 0; i < blocks.length; i++) {
      if (i % 64 !== 63) libc.symbols.free(blocks[i]);
    }
    const before = Deno.memoryUsage().rss;
    equal(sys.mallocTrim(), 1, "memory was released");
    const after = Deno.memoryUsage().rss;
    ok(before - after >= 48 * 1024 * 1024, `RSS ${before >> 20} -> ${after >> 20} MiB`);
  } finally {
    for (let i = 63; i < blocks.length; i += 64) libc.symbols.free(blocks[i]);
    libc.close();
  }
});
