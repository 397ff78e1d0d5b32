import { equal, ok } from "node:assert/strict";
import { RuntimeStats } from "../lib/runtime_stats.ts";

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
