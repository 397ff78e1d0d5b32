/**
 * Frame tails: a frame whose bytes are split between a slot and pieces of
 * other memory reads the same, whichever way it is cut, as the frame whole.
 */
import { deepEqual, equal } from "node:assert/strict";
import { checksumAdd, checksumFold } from "../../lib/packet/checksum.ts";
import { FrameTail } from "../../lib/tap/tail.ts";

const AT = 16;

/** A frame of `len` bytes, and a tail listing its bytes from `AT + from` over pieces cut at `cuts` (offsets into it). */
function split(len: number, headEnd: number, from: number, cuts: number[]): {
  frame: Uint8Array;
  slot: Uint8Array;
  tail: FrameTail;
} {
  const frame = Uint8Array.from({ length: len }, (_, i) => (i * 37 + 11) & 0xff);
  const slot = new Uint8Array(AT + len + 64);
  slot.set(frame.subarray(0, headEnd), AT);
  const tail = new FrameTail();
  tail.reset(AT + from, AT + headEnd);
  const bounds = [from, ...cuts.filter((c) => c > from && c < len), len];
  const memory = new Uint8Array(len + 8 * bounds.length);
  let at = 3; // pieces at odd places of their buffer
  for (let k = 0; k + 1 < bounds.length; k++) {
    const n = bounds[k + 1] - bounds[k];
    memory.set(frame.subarray(bounds[k], bounds[k + 1]), at);
    tail.add(memory, at, n);
    at += n + 5;
  }
  return { frame, slot, tail };
}

Deno.test("a tail's checksum is the frame's, whatever the parity of its pieces", () => {
  for (const cuts of [[], [61], [60, 61, 62], [100, 333, 334, 1001], [7, 8, 9, 10, 11]]) {
    for (const [headEnd, from] of [[54, 54], [40, 0], [54, 13]]) {
      const { frame, slot, tail } = split(1500, headEnd, from, cuts);
      for (const start of [14, 34, 35]) {
        const want = checksumFold(checksumAdd(0, frame, start, frame.length - start));
        const got = checksumFold(tail.checksumAdd(0, slot, AT + start, tail.end));
        equal(got, want, `cuts ${cuts}, head ${headEnd}, from ${from}, start ${start}`);
      }
    }
  }
});

Deno.test("pieces of a byte range, a gathered tail and a truncated one hold the frame's bytes", () => {
  const { frame, slot, tail } = split(3000, 54, 0, [10, 54, 55, 1024, 2047]);
  const bufs: Uint8Array[] = [];
  const offs = new Float64Array(8);
  const lens = new Uint32Array(8);
  const n = tail.pieces(AT + 100, 2000, bufs, offs, lens, 0, 8);
  const out: number[] = [];
  for (let k = 0; k < n; k++) out.push(...bufs[k].subarray(offs[k], offs[k] + lens[k]));
  deepEqual(out, [...frame.subarray(100, 2100)]);
  equal(tail.pieces(AT + 100, 2000, bufs, offs, lens, 0, 2), -1, "too many pieces for the room");
  tail.truncate(1000);
  equal(tail.end, AT + 1000);
  tail.gather(slot);
  equal(tail.count, 0);
  deepEqual(slot.subarray(AT, AT + 1000), frame.subarray(0, 1000));
});
