// Flow table micro benchmarks: `deno bench -A bench/flow_bench.ts`.
// Lookup and alloc+free cost with 100 000 live flows, against a table of the
// default capacity, so the numbers include the cost of a realistically large
// hash table and bitmap.
import { FlowSide, flowSidx, FlowTable, FlowType, Pif } from "../lib/flow/table.ts";

const LIVE = 100_000;
const table = new FlowTable();
const key = new FlowSide();

function tuple(n: number): FlowSide {
  return key.set4(Pif.TAP, 0xc0000202, 1 + (n % 65535), 0xc0000201, 1 + Math.floor(n / 65535));
}

for (let n = 0; n < LIVE; n++) {
  const i = table.alloc();
  table.setIni(i, tuple(n));
  table.setTgt(i, tuple(n));
  table.setType(i, FlowType.UDP, null);
  table.hashInsert(flowSidx(i, 0));
  table.activate(i);
}

// The same lookup against 1 000 live flows: the cost should not grow with the
// table's population (flat), only with cache misses.
const small = new FlowTable();
for (let n = 0; n < 1000; n++) {
  const i = small.alloc();
  small.setIni(i, tuple(n));
  small.setTgt(i, tuple(n));
  small.setType(i, FlowType.UDP, null);
  small.hashInsert(flowSidx(i, 0));
  small.activate(i);
}
let m = 0;
Deno.bench("flow lookup, 1k live flows (hit)", () => {
  m = (m + 7) % 1000;
  if (small.lookup(17, tuple(m)) < 0) throw new Error("lost flow");
});

let n = 0;
Deno.bench("flow lookup, 100k live flows (hit)", () => {
  n = (n + 7919) % LIVE;
  if (table.lookup(17, tuple(n)) < 0) throw new Error("lost flow");
});

Deno.bench("flow lookup, 100k live flows (miss)", () => {
  n = (n + 7919) % LIVE;
  key.set4(Pif.HOST, 0x7f000001, 1 + (n % 65535), 0x7f000001, 7);
  if (table.lookup(17, key) >= 0) throw new Error("phantom flow");
});

Deno.bench("flow alloc + cancel, 100k live flows", () => {
  const i = table.alloc();
  table.cancel(i);
});

Deno.bench("flow alloc, both sides set, hash insert + remove, cancel, 100k live flows", () => {
  const i = table.alloc();
  n = (n + 1) % 50_000;
  key.set4(Pif.HOST, 0x7f000002, 1 + n, 0x7f000002, 9);
  table.setIni(i, key);
  table.setTgt(i, key);
  table.setType(i, FlowType.UDP, null);
  table.hashInsert(flowSidx(i, 0));
  table.cancel(i);
});
