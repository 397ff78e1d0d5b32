/**
 * Frames written into a receive ring, read back as the guest's driver
 * would: header and frame split at every byte, padding across buffers, a
 * 64 KiB GSO frame over many mergeable buffers, and what happens when the
 * guest has not made room.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { FrameTail } from "../../lib/tap/tail.ts";
import { RxResult, VNET_HDR_SIZE, VnetRx } from "../../lib/vhost/rx.ts";
import { RingDriver } from "./frontend.ts";

/** A frame of `len` bytes counting from 1 (so a stray zero is visible). */
function frameOf(len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => (i % 255) + 1);
}

/** What the guest expects to find: header (these fields, `numBuffers`), frame, zeros to 60. */
function expected(frame: Uint8Array, numBuffers: number, gso = [0, 0, 0, 0, 0, 0]): Uint8Array {
  const out = new Uint8Array(VNET_HDR_SIZE + Math.max(frame.length, 60));
  const v = new DataView(out.buffer);
  v.setUint8(0, gso[0]);
  v.setUint8(1, gso[1]);
  [2, 4, 6, 8].forEach((at, k) => v.setUint16(at, gso[k + 2], true));
  v.setUint16(10, numBuffers, true);
  out.set(frame, VNET_HDR_SIZE);
  return out;
}

/** Everything the used entries from `from` on delivered, in order. */
function delivered(d: RingDriver, from: number, to: number): Uint8Array {
  const parts: Uint8Array[] = [];
  for (let k = from; k < to; k++) parts.push(d.readChain(...d.used(k)));
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("a 42-byte ARP reply is padded to 60 across buffers split at every byte", () => {
  const frame = frameOf(42);
  const want = expected(frame, 1);
  for (let split = 1; split < want.length; split++) {
    const d = new RingDriver(false, 8);
    const rx = new VnetRx(d.queue);
    d.offerWritable([split, 200]);
    equal(rx.write(frame, 0, 42, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN, `split at ${split}`);
    d.queue.publish();
    deepEqual(d.used(0)[1], want.length, `used length, split at ${split}`);
    deepEqual(delivered(d, 0, 1), want, `split at ${split}`);
  }
});

Deno.test("a 64 KiB GSO frame spreads over mergeable buffers, num_buffers says how many", () => {
  const d = new RingDriver(false, 64);
  const rx = new VnetRx(d.queue);
  const frame = frameOf(65535);
  const gso = [1, 1, 66, 1448, 34, 16]; // NEEDS_CSUM, TCPV4, header length, MSS, csum start/offset
  for (let k = 0; k < 64; k++) d.offerWritable([1536]);
  const chains = Math.ceil((VNET_HDR_SIZE + 65535) / 1536);
  equal(
    rx.write(frame, 0, frame.length, ...gso as [number, number, number, number, number, number]),
    RxResult.WRITTEN,
  );
  d.queue.publish();
  equal(d.usedIdx, chains);
  deepEqual(delivered(d, 0, chains), expected(frame, chains, gso));
  equal(rx.stats.chains, chains);
});

Deno.test("without room the frame waits, and the chains already taken serve it when more come", () => {
  const d = new RingDriver(false, 64);
  const rx = new VnetRx(d.queue);
  const frame = frameOf(20000);
  for (let k = 0; k < 5; k++) d.offerWritable([1536]);
  equal(rx.write(frame, 0, frame.length, 0, 0, 0, 0, 0, 0), RxResult.NO_ROOM);
  equal(d.usedIdx, 0, "nothing given back");
  for (let k = 0; k < 20; k++) d.offerWritable([1536]);
  equal(rx.write(frame, 0, frame.length, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
  d.queue.publish();
  const chains = Math.ceil((VNET_HDR_SIZE + 20000) / 1536);
  equal(d.usedIdx, chains);
  deepEqual(delivered(d, 0, chains), expected(frame, chains));
  // The chains held beyond those carry the next frame.
  const small = frameOf(100);
  equal(rx.write(small, 0, 100, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
  d.queue.publish();
  deepEqual(delivered(d, chains, chains + 1), expected(small, 1));
  equal(rx.stats.noRoom, 1);
});

Deno.test("chains held for a frame that did not fit are given back empty when the ring changes", () => {
  const d = new RingDriver(false, 64);
  const rx = new VnetRx(d.queue);
  const heads = [0, 1, 2].map(() => d.offerWritable([1536]));
  const frame = frameOf(20000);
  equal(rx.write(frame, 0, frame.length, 0, 0, 0, 0, 0, 0), RxResult.NO_ROOM);
  equal(rx.release(), 3);
  d.queue.publish();
  equal(d.usedIdx, 3);
  deepEqual([0, 1, 2].map((k) => d.used(k)), heads.map((h) => [h, 0]));
  equal(rx.release(), 0, "nothing held any more");
});

Deno.test("without mergeable buffers a frame must fit one chain, or is dropped", () => {
  const d = new RingDriver(false, 8);
  const rx = new VnetRx(d.queue);
  rx.mergeable = false;
  d.offerWritable([1526]);
  d.offerWritable([1526]);
  equal(rx.write(frameOf(3000), 0, 3000, 0, 0, 0, 0, 0, 0), RxResult.DROPPED);
  equal(rx.write(frameOf(1514), 0, 1514, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
  d.queue.publish();
  deepEqual(delivered(d, 0, 1), expected(frameOf(1514), 1));
  equal(rx.stats.dropTooBig, 1);
});

Deno.test("a receive chain with a device-readable buffer is given back unused", () => {
  const d = new RingDriver(false, 8);
  const rx = new VnetRx(d.queue);
  const bad = d.chain(7, [{ addr: d.alloc(64), len: 64 }]); // readable: wrong for receive
  d.offer(bad);
  d.offerWritable([1536]);
  equal(rx.write(frameOf(64), 0, 64, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
  d.queue.publish();
  deepEqual(d.used(0), [bad, 0]);
  equal(d.used(1)[1], VNET_HDR_SIZE + 64);
  equal(rx.stats.badChains, 1);
});

/** Writes `payload` into a reserved frame's tail, as a producer's read would. */
function fillTail(tail: FrameTail, payload: Uint8Array): void {
  let at = 0;
  for (let p = 0; p < tail.count && at < payload.length; p++) {
    const n = Math.min(tail.lens[p], payload.length - at);
    tail.bufs[p].set(payload.subarray(at, at + n), tail.offs[p]);
    at += n;
  }
}

Deno.test("a reserved frame gets its payload in place and its headers in front, split at every byte; unused room goes to the next frame", () => {
  const frame = frameOf(54 + 1000);
  const want = expected(frame, 2);
  for (let split = 1; split < VNET_HDR_SIZE + 54 + 20; split++) {
    const d = new RingDriver(false, 8);
    const rx = new VnetRx(d.queue);
    d.offerWritable([split]);
    d.offerWritable([VNET_HDR_SIZE + 54 + 1000 - split, 700]);
    d.offerWritable([3000]);
    const tail = new FrameTail();
    tail.reset(54, 54);
    // Room for 2000 bytes of payload: all three chains.
    ok(rx.reserve(3, 54, 2000, tail), `reserved, split at ${split}`);
    equal(tail.total, 2000);
    fillTail(tail, frame.subarray(54));
    // The payload came short (1000 bytes): two chains carry the frame.
    rx.writeReserved(3, frame, 0, 54, frame.length, 0, 0, 0, 0, 0, 0);
    d.queue.publish();
    equal(d.usedIdx, 2, `two chains used, split at ${split}`);
    deepEqual(delivered(d, 0, 2), want, `split at ${split}`);
    equal(rx.stats.bytesInPlace, 1000);
    equal(rx.stats.bytesCopied, 54);
    // The third chain stayed held: the next frame goes there without taking from the ring.
    equal(rx.write(frameOf(100), 0, 100, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
    d.queue.publish();
    deepEqual(delivered(d, 2, 3), expected(frameOf(100), 1));
  }
});

Deno.test("a reserved frame shorter than 60 bytes is padded after its payload, across buffers", () => {
  const d = new RingDriver(false, 8);
  const rx = new VnetRx(d.queue);
  d.offerWritable([VNET_HDR_SIZE + 50, 5, 100]);
  const tail = new FrameTail();
  tail.reset(54, 54);
  ok(rx.reserve(0, 54, 1460, tail) === false, "a chain too small for the most it may hold");
  ok(rx.reserve(0, 54, 3, tail));
  const frame = frameOf(57);
  fillTail(tail, frame.subarray(54));
  rx.writeReserved(0, frame, 0, 54, 57, 0, 0, 0, 0, 0, 0);
  d.queue.publish();
  deepEqual(delivered(d, 0, 1), expected(frame, 1));
});

Deno.test("reservations are given back empty when the ring changes, and their frames are dropped when sent", () => {
  const d = new RingDriver(false, 8);
  const rx = new VnetRx(d.queue);
  d.offerWritable([2000]);
  d.offerWritable([2000]);
  const tail = new FrameTail();
  tail.reset(54, 54);
  ok(rx.reserve(5, 54, 1000, tail));
  equal(rx.write(frameOf(60), 0, 60, 0, 0, 0, 0, 0, 0), RxResult.WRITTEN);
  equal(rx.release(), 1, "the reserved chain");
  d.queue.publish();
  equal(d.usedIdx, 2);
  equal(d.used(1)[1], 0, "given back with nothing written");
  ok(rx.reserved(5), "the sender still has to be told");
  equal(rx.writeReserved(5, frameOf(100), 0, 54, 100, 0, 0, 0, 0, 0, 0), RxResult.DROPPED);
  equal(rx.stats.dropRevoked, 1);
  ok(!rx.reserved(5));
});
