/** The out-of-order queue on its own: ranges, refusals, compaction, the budget. */
import { equal, ok } from "node:assert/strict";
import {
  TCP_OOO_MAX_RANGES,
  TCP_OOO_SIZE,
  TCP_OOO_TOTAL,
  TcpOoo,
  tcpOooAllocated,
} from "../../lib/l4/tcp_ooo.ts";
import { seqAdd } from "../../lib/l4/seq.ts";

/** Near the top of sequence space: every case here wraps. */
const BASE = 0xffff_ff00;

/** Stores `len` bytes whose value is their offset from BASE (mod 256). */
function put(q: TcpOoo, off: number, len: number): boolean {
  const bytes = Uint8Array.from({ length: len }, (_, i) => (off + i) & 0xff);
  return q.store(seqAdd(BASE, off), len, [bytes], Float64Array.of(0), Uint32Array.of(len), 0, 1);
}

function ranges(q: TcpOoo): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i < q.count; i++) {
    out.push([(q.starts[i] - BASE) >>> 0, (q.ends[i] - BASE) >>> 0]);
  }
  return out;
}

Deno.test("ranges merge when they overlap or touch, and stay sorted", () => {
  const q = TcpOoo.create(BASE)!;
  try {
    ok(put(q, 500, 100));
    ok(put(q, 100, 100));
    ok(put(q, 300, 100));
    equal(JSON.stringify(ranges(q)), "[[100,200],[300,400],[500,600]]");
    ok(put(q, 200, 100), "touches both neighbours");
    equal(JSON.stringify(ranges(q)), "[[100,400],[500,600]]");
    ok(put(q, 350, 200), "overlaps both");
    equal(JSON.stringify(ranges(q)), "[[100,600]]");
    equal(q.heldFrom(seqAdd(BASE, 50)), 0, "nothing held at a hole");
    equal(q.heldFrom(seqAdd(BASE, 100)), 500);
    equal(q.heldFrom(seqAdd(BASE, 250)), 350, "counted from inside a range");
    const at = q.offsetOf(seqAdd(BASE, 250));
    ok(q.buf.subarray(at, at + 350).every((b, i) => b === ((250 + i) & 0xff)), "bytes in place");
  } finally {
    q.release();
  }
});

Deno.test("what does not fit is refused whole, and nothing changes", () => {
  const q = TcpOoo.create(BASE)!;
  try {
    equal(put(q, TCP_OOO_SIZE - 10, 20), false, "past the buffer");
    for (let i = 0; i < TCP_OOO_MAX_RANGES; i++) ok(put(q, 10 + 20 * i, 10));
    equal(put(q, 1000, 10), false, "one range too many");
    ok(put(q, 20, 10), "a segment that merges needs no new range");
    equal(q.count, TCP_OOO_MAX_RANGES - 1);
  } finally {
    q.release();
  }
});

Deno.test("advance forgets what was taken and moves the rest to the front", () => {
  const q = TcpOoo.create(BASE)!;
  try {
    ok(put(q, 100, 100));
    ok(put(q, 300, 100));
    q.advance(seqAdd(BASE, 150));
    equal(JSON.stringify(ranges(q)), "[[150,200],[300,400]]");
    equal(q.offsetOf(seqAdd(BASE, 150)), 0);
    ok(q.buf.subarray(0, 50).every((b, i) => b === ((150 + i) & 0xff)));
    const at = q.offsetOf(seqAdd(BASE, 300));
    ok(q.buf.subarray(at, at + 100).every((b, i) => b === ((300 + i) & 0xff)));
    q.advance(seqAdd(BASE, 400));
    ok(q.empty);
  } finally {
    q.release();
  }
});

Deno.test("all queues together stay within the budget", () => {
  const before = tcpOooAllocated();
  const queues: TcpOoo[] = [];
  for (;;) {
    const q = TcpOoo.create(BASE);
    if (q === null) break;
    queues.push(q);
  }
  ok(tcpOooAllocated() <= TCP_OOO_TOTAL);
  equal(queues.length, Math.floor((TCP_OOO_TOTAL - before) / TCP_OOO_SIZE));
  for (const q of queues) q.release();
  equal(tcpOooAllocated(), before);
});
