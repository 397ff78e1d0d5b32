import { deepEqual, equal, notEqual, ok, throws } from "node:assert/strict";
import {
  addrWordsFormat,
  FLOW_INITIAL_SLOTS,
  FlowSide,
  flowSidx,
  FlowState,
  FlowTable,
  FlowType,
  Pif,
  sidxFlow,
  sidxSide,
} from "../../lib/flow/table.ts";
import { halfSipHash } from "../../lib/flow/siphash.ts";
import { logClose, LogLevel, logSetup } from "../../lib/log.ts";

const TCP = 6;
const KEY = new Uint32Array([0x01234567, 0x89abcdef]);

/** A guest→host TCP flow's two sides for guest port `port`. */
function sides(port: number): [FlowSide, FlowSide] {
  const ini = new FlowSide().set4(Pif.TAP, 0xc0000202, port, 0xc0000201, 80); // guest → gateway
  const tgt = new FlowSide().set4(Pif.HOST, 0x7f000001, 80, 0x7f000001, 40000 + (port & 0x3fff));
  return [ini, tgt];
}

/** Takes a new flow all the way to ACTIVE, both sides hashed. */
function open(table: FlowTable, port: number, data: unknown = { port }): number {
  const i = table.alloc();
  ok(i >= 0, "allocated");
  const [ini, tgt] = sides(port);
  table.setIni(i, ini);
  table.setTgt(i, tgt);
  table.setType(i, FlowType.TCP, data);
  table.hashInsert(flowSidx(i, 0));
  table.hashInsert(flowSidx(i, 1));
  table.activate(i);
  return i;
}

Deno.test("a flow walks FREE → NEW → INI → TGT → TYPED → ACTIVE and the deferred pass frees it", () => {
  const table = new FlowTable(64, { hashKey: KEY });
  const closing = new Set<number>();
  table.setHandlers(FlowType.TCP, { deferred: (i) => closing.has(i) });
  const i = table.alloc();
  equal(table.state(i), FlowState.NEW);
  const [ini, tgt] = sides(1234);
  table.setIni(i, ini);
  equal(table.state(i), FlowState.INI);
  table.setTgt(i, tgt);
  equal(table.state(i), FlowState.TGT);
  table.setType(i, FlowType.TCP, { conn: "x" });
  equal(table.state(i), FlowState.TYPED);
  table.activate(i);
  equal(table.state(i), FlowState.ACTIVE);
  deepEqual(table.stats(), {
    byState: { NEW: 0, INI: 0, TGT: 0, TYPED: 0, ACTIVE: 1 },
    byType: { TCP: 1, TCP_SPLICE: 0, PING4: 0, PING6: 0, UDP: 0, UDP_SPLICE: 0 },
    allocFailures: 0,
    live: 1,
  });

  table.defer(i);
  table.deferredPass(0);
  equal(table.state(i), FlowState.ACTIVE, "handler returned false: kept");
  closing.add(i);
  table.defer(i);
  table.deferredPass(0);
  equal(table.state(i), FlowState.FREE);
  equal(table.live, 0);
  equal(table.countType(FlowType.TCP), 0);
});

type Op = "setIni" | "setTgt" | "setType" | "activate" | "cancel" | "hashInsert";
const OPS: Op[] = ["setIni", "setTgt", "setType", "activate", "cancel", "hashInsert"];
/** Which operations each state allows. */
const ALLOWED: Record<number, Op[]> = {
  [FlowState.NEW]: ["setIni", "cancel"],
  [FlowState.INI]: ["setTgt", "cancel"],
  [FlowState.TGT]: ["setType", "cancel"],
  [FlowState.TYPED]: ["activate", "cancel", "hashInsert"],
  [FlowState.ACTIVE]: ["hashInsert"],
};

function driveTo(table: FlowTable, state: FlowState): number {
  const i = table.alloc();
  const [ini, tgt] = sides(1000 + i);
  if (state >= FlowState.INI) table.setIni(i, ini);
  if (state >= FlowState.TGT) table.setTgt(i, tgt);
  if (state >= FlowState.TYPED) table.setType(i, FlowType.UDP, {});
  if (state >= FlowState.ACTIVE) table.activate(i);
  equal(table.state(i), state);
  return i;
}

function apply(table: FlowTable, i: number, op: Op): void {
  const [ini, tgt] = sides(2000 + i);
  if (op === "setIni") table.setIni(i, ini);
  else if (op === "setTgt") table.setTgt(i, tgt);
  else if (op === "setType") table.setType(i, FlowType.UDP, {});
  else if (op === "activate") table.activate(i);
  else if (op === "cancel") table.cancel(i);
  else table.hashInsert(flowSidx(i, 0));
}

Deno.test("every legal operation succeeds and every illegal one is refused, in every state", () => {
  for (
    const state of [FlowState.NEW, FlowState.INI, FlowState.TGT, FlowState.TYPED, FlowState.ACTIVE]
  ) {
    for (const op of OPS) {
      const table = new FlowTable(8, { hashKey: KEY });
      const i = driveTo(table, state);
      if (ALLOWED[state].includes(op)) {
        apply(table, i, op);
      } else {
        throws(() => apply(table, i, op), Error, `${op} in state ${state} must be refused`);
        equal(table.state(i), state, "a refused operation changes nothing");
      }
    }
  }
  // A FREE slot allows nothing but alloc.
  const table = new FlowTable(8, { hashKey: KEY });
  for (const op of OPS) throws(() => apply(table, 3, op), Error);
});

Deno.test("type-specific data is reachable only once TYPED, and only as its own type", () => {
  const table = new FlowTable(8, { hashKey: KEY });
  for (const state of [FlowState.NEW, FlowState.INI, FlowState.TGT]) {
    const i = driveTo(table, state);
    throws(() => table.data(i, FlowType.UDP), /data requested in state/);
    table.cancel(i);
  }
  const i = driveTo(table, FlowState.TYPED);
  const data = table.data<object>(i, FlowType.UDP);
  ok(typeof data === "object");
  throws(() => table.data(i, FlowType.TCP), /TCP data requested/);
  table.activate(i);
  equal(table.data<object>(i, FlowType.UDP), data);
});

Deno.test("allocation takes the first free slot and entries never move", () => {
  const table = new FlowTable(200, { hashKey: KEY });
  const ids = Array.from({ length: 100 }, () => driveTo(table, FlowState.TYPED));
  deepEqual(ids, Array.from({ length: 100 }, (_, i) => i));
  table.cancel(37);
  table.cancel(5);
  table.cancel(99);
  equal(table.alloc(), 5);
  equal(table.alloc(), 37);
  equal(table.alloc(), 99);
  equal(table.alloc(), 100);
  equal(table.state(50), FlowState.TYPED, "untouched flows stay where they are");
});

Deno.test("a full table refuses the next allocation with -1 and a counter, then serves again", () => {
  const table = new FlowTable(70, { hashKey: KEY }); // not a multiple of 32
  for (let i = 0; i < 70; i++) equal(table.alloc(), i);
  equal(table.alloc(), -1);
  equal(table.alloc(), -1);
  equal(table.allocFailures, 2);
  equal(table.stats().allocFailures, 2);
  table.cancel(42);
  equal(table.alloc(), 42);
  equal(table.alloc(), -1);
});

Deno.test("hash: both sides of IPv4 and IPv6 flows are found; other tuples and removed sides are not", () => {
  const table = new FlowTable(16, { hashKey: KEY });
  const i4 = open(table, 5555);
  const [ini4, tgt4] = sides(5555);
  equal(table.lookup(TCP, ini4), flowSidx(i4, 0));
  equal(table.lookup(TCP, tgt4), flowSidx(i4, 1));
  equal(table.lookup(17, ini4), -1, "another protocol");
  equal(table.lookup(TCP, new FlowSide().set4(Pif.TAP, 0xc0000202, 5556, 0xc0000201, 80)), -1);

  const g = new Uint8Array(16), h = new Uint8Array(16);
  g.set([0x20, 0x01, 0x0d, 0xb8], 0);
  g[15] = 2;
  h.set([0x20, 0x01, 0x0d, 0xb8], 0);
  h[15] = 1;
  const i6 = table.alloc();
  const ini6 = new FlowSide().set6(Pif.TAP, g, 0, 4444, h, 0, 443);
  table.setIni(i6, ini6);
  table.setTgt(i6, new FlowSide().set6(Pif.HOST, h, 0, 443, h, 0, 50000));
  table.setType(i6, FlowType.TCP, {});
  table.hashInsert(flowSidx(i6, 0));
  table.activate(i6);
  const found = table.lookup(TCP, ini6);
  equal(sidxFlow(found), i6);
  equal(sidxSide(found), 0);
  equal(table.formatSide(found), "TAP [2001:db8::2]:4444 -> [2001:db8::1]:443");
  equal(table.formatSide(flowSidx(i4, 1)), "HOST [127.0.0.1]:80 -> [127.0.0.1]:45555");

  table.hashRemove(flowSidx(i4, 0));
  equal(table.lookup(TCP, ini4), -1);
  equal(table.lookup(TCP, tgt4), flowSidx(i4, 1), "the other side stays");
  throws(() => table.hashInsert(flowSidx(i4, 1)), /hashed twice/);
});

Deno.test("freeing a flow removes its hashed sides", () => {
  const table = new FlowTable(16, { hashKey: KEY });
  table.setHandlers(FlowType.TCP, { deferred: () => true });
  const i = open(table, 7000);
  table.defer(i);
  table.deferredPass(0);
  const [ini, tgt] = sides(7000);
  equal(table.lookup(TCP, ini), -1);
  equal(table.lookup(TCP, tgt), -1);
});

Deno.test("timer handlers run once a second for ACTIVE flows; returning true frees", () => {
  const table = new FlowTable(64, { hashKey: KEY });
  const calls: number[] = [];
  table.setHandlers(FlowType.TCP, {
    timer: (i, now) => {
      calls.push(i);
      return now >= 2000 && i === 1;
    },
  });
  open(table, 1);
  open(table, 2);
  open(table, 3);
  table.deferredPass(0);
  table.deferredPass(500); // within the second: no timers
  table.deferredPass(1000);
  table.deferredPass(2000);
  deepEqual(calls, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
  equal(table.state(1), FlowState.FREE);
  equal(table.live, 2);
});

Deno.test("the timer pass reports a flow left half set up", () => {
  const table = new FlowTable(8, { hashKey: KEY });
  driveTo(table, FlowState.TGT);
  throws(() => table.deferredPass(0), /left in state TGT/);
});

Deno.test("a deferred handler's own deferrals run on the next pass", () => {
  const table = new FlowTable(8, { hashKey: KEY });
  const runs: number[] = [];
  let a = -1, b = -1;
  table.setHandlers(FlowType.TCP, {
    deferred: (i) => {
      runs.push(i);
      if (i === a) table.defer(b);
      return false;
    },
  });
  a = open(table, 1);
  b = open(table, 2);
  table.defer(a);
  table.deferredPass(0);
  deepEqual(runs, [a]);
  table.deferredPass(1);
  deepEqual(runs, [a, b]);
});

Deno.test("transitions are logged with the flow's prefix at debug level", () => {
  const dir = Deno.makeTempDirSync();
  try {
    logSetup({ level: LogLevel.debug, file: `${dir}/log`, stderr: false });
    const table = new FlowTable(8, { hashKey: KEY });
    open(table, 9);
    logClose();
    const text = Deno.readTextFileSync(`${dir}/log`);
    for (
      const t of [
        "flow 0 NONE: FREE -> NEW",
        "flow 0 NONE: NEW -> INI",
        "flow 0 NONE: INI -> TGT",
        "flow 0 TCP: TGT -> TYPED",
        "flow 0 TCP: TYPED -> ACTIVE",
      ]
    ) ok(text.includes(t), `log has "${t}"`);
  } finally {
    logSetup({ level: LogLevel.info });
    Deno.removeSync(dir, { recursive: true });
  }
});

/** Deterministic PRNG (mulberry32) so a failure replays. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("1 000 000 random alloc/free/lookup operations agree with a reference model", () => {
  const cap = 512;
  const table = new FlowTable(cap, { hashKey: KEY });
  const closing = new Set<number>();
  table.setHandlers(FlowType.TCP, { deferred: (i) => closing.delete(i) });
  const rand = prng(42);
  const model = new Map<number, number>(); // guest port → flow index
  const key = new FlowSide();
  const PORTS = 2048; // small space: keys collide in buckets and get reused often

  for (let step = 0; step < 1_000_000; step++) {
    const r = rand();
    const port = 1 + Math.floor(rand() * PORTS);
    if (r < 0.35) {
      if (model.has(port)) continue;
      if (model.size === cap) {
        equal(table.alloc(), -1, `step ${step}: full table must refuse`);
        continue;
      }
      // The model's first free index is the smallest index not in use.
      const used = new Set(model.values());
      let expect = 0;
      while (used.has(expect)) expect++;
      equal(open(table, port), expect, `step ${step}: first free slot`);
      model.set(port, expect);
    } else if (r < 0.65) {
      const i = model.get(port);
      if (i === undefined) continue;
      model.delete(port);
      closing.add(i);
      table.defer(i);
      table.deferredPass(step);
      equal(table.state(i), FlowState.FREE, `step ${step}: freed`);
    } else {
      const want = model.get(port);
      const [ini, tgt] = sides(port);
      key.set4(ini.pif, 0xc0000202, port, 0xc0000201, 80);
      equal(table.lookup(TCP, key), want === undefined ? -1 : flowSidx(want, 0), `step ${step}`);
      equal(table.lookup(TCP, tgt), want === undefined ? -1 : flowSidx(want, 1), `step ${step}`);
    }
  }
  equal(table.live, model.size);
  const listed: number[] = [];
  table.forEachUsed((i) => listed.push(i));
  deepEqual(listed, [...model.values()].sort((a, b) => a - b), "exactly the live flows");
  for (const [port, i] of model) {
    const [ini, tgt] = sides(port);
    equal(table.lookup(TCP, ini), flowSidx(i, 0));
    equal(table.lookup(TCP, tgt), flowSidx(i, 1));
  }
});

Deno.test("the table grows with the flows in use up to its capacity, and shrinks once they close", () => {
  const table = new FlowTable(6000, { hashKey: KEY });
  table.setHandlers(FlowType.TCP, { timer: () => false });
  equal(table.size, FLOW_INITIAL_SLOTS, "starts small");
  const sizes: number[] = [];
  table.onResize((size) => sizes.push(size));
  deepEqual(sizes, [FLOW_INITIAL_SLOTS], "a listener hears the size at once");
  const index = new Map<number, number>();
  for (let port = 1; port <= 6000; port++) index.set(port, open(table, port));
  equal(table.size, 6000, "doubled until the capacity");
  equal(table.alloc(), -1, "and no further");
  deepEqual(sizes, [1024, 2048, 4096, 6000], "and each resize");
  for (const [port, i] of index) {
    equal(i, port - 1, "entries never move");
    const [ini, tgt] = sides(port);
    equal(table.lookup(TCP, ini), flowSidx(i, 0));
    equal(table.lookup(TCP, tgt), flowSidx(i, 1));
  }
  table.bytesFrom[flowSidx(10, 0)] = 77;

  // Close all but the first 300 (and one high flow, which holds the size).
  const closing = new Set<number>();
  table.setHandlers(FlowType.TCP, { timer: (i) => closing.has(i) });
  for (const [port, i] of index) {
    if (i >= 300 && port !== 3500) closing.add(i), index.delete(port);
  }
  let now = 0;
  for (let pass = 0; pass < 5; pass++) table.deferredPass(now += 1000);
  equal(table.live, 301);
  equal(table.size, 6000, "a flow in the upper half keeps the size");
  closing.add(3499);
  index.delete(3500);
  for (let pass = 0; pass < 5; pass++) table.deferredPass(now += 1000);
  equal(table.live, 300);
  equal(table.size, FLOW_INITIAL_SLOTS, "halved step by step back to the start");
  deepEqual(sizes.slice(4), [3000, 1500, 1024], "the listener heard the halving too");
  equal(table.bytesFrom[flowSidx(10, 0)], 77, "kept across resizes");
  for (const [port, i] of index) {
    const [ini, tgt] = sides(port);
    equal(table.lookup(TCP, ini), flowSidx(i, 0));
    equal(table.lookup(TCP, tgt), flowSidx(i, 1));
  }
  const [gone] = sides(4000);
  equal(table.lookup(TCP, gone), -1);
  equal(open(table, 9000), 300, "the first free slot again");
});

Deno.test("100 000 flows whose tuples differ only in one port are all found", () => {
  const table = new FlowTable(131072);
  const key = new FlowSide();
  for (let n = 0; n < 100_000; n++) {
    const i = table.alloc();
    key.set4(Pif.HOST, 0x7f000001, 1 + (n % 65535), 0x7f000001, 1 + Math.floor(n / 65535));
    table.setIni(i, key);
    table.setTgt(i, key);
    table.setType(i, FlowType.UDP, null);
    table.hashInsert(flowSidx(i, 0));
    table.activate(i);
  }
  for (let n = 0; n < 100_000; n++) {
    key.set4(Pif.HOST, 0x7f000001, 1 + (n % 65535), 0x7f000001, 1 + Math.floor(n / 65535));
    equal(table.lookup(17, key), flowSidx(n, 0));
  }
});

Deno.test("HalfSipHash depends on the key and every word, and is stable for one key", () => {
  const hash = (key: Uint32Array, words: number[]) => halfSipHash(key, words, 0, words.length);
  const k1 = new Uint32Array([1, 2]), k2 = new Uint32Array([1, 3]);
  const base = hash(k1, [10, 20, 30]);
  equal(hash(k1, [10, 20, 30]), base);
  notEqual(hash(k2, [10, 20, 30]), base);
  notEqual(hash(k1, [10, 20, 31]), base);
  notEqual(hash(k1, [11, 20, 30]), base);
  notEqual(hash(k1, [10, 20, 30, 0]), base, "length matters");
  // Sequential inputs spread over buckets: no bucket of 1024 gets 4x its share.
  const counts = new Uint32Array(1024);
  for (let i = 0; i < 100_000; i++) counts[hash(k1, [i]) & 1023]++;
  ok(Math.max(...counts) < 4 * (100_000 / 1024), `max bucket ${Math.max(...counts)}`);
});

Deno.test("address words format as IPv4 for mapped addresses and IPv6 otherwise", () => {
  equal(addrWordsFormat([0, 0, 0xffff, 0xc0000201]), "192.0.2.1");
  equal(addrWordsFormat([0x20010db8, 0, 0, 1]), "2001:db8::1");
});
