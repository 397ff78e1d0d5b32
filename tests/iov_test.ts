import { deepEqual, equal, ok } from "node:assert/strict";
import {
  type Iov,
  iovCursor,
  iovFromBuf,
  iovFromBytes,
  iovMemcopy,
  iovMemset,
  iovSize,
  iovSkip,
  iovTail,
  iovTailAdvance,
  iovTailOffset,
  iovTailPeek,
  iovTailSize,
  iovToBuf,
  iovToBytes,
} from "../lib/iov.ts";

/** Bytes 1, 2, 3, … n (never 0, so a fill with 0 is visible). */
function counting(n: number, first = 1): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (first + i) & 0xff || 0xee;
  return out;
}

/**
 * An iov with entries of the given sizes, each a view into one backing buffer
 * with guard bytes (0xa5) around every entry, so writes out of bounds show.
 */
function guarded(
  sizes: readonly number[],
  fill: Uint8Array,
): { iov: Uint8Array[]; backing: Uint8Array; check(): void } {
  const GUARD = 3;
  const total = sizes.reduce((a, b) => a + b, 0) + GUARD * (sizes.length + 1);
  const backing = new Uint8Array(total).fill(0xa5);
  const iov: Uint8Array[] = [];
  let pos = GUARD;
  let from = 0;
  for (const size of sizes) {
    const entry = backing.subarray(pos, pos + size);
    entry.set(fill.subarray(from, from + size));
    iov.push(entry);
    from += size;
    pos += size + GUARD;
  }
  const check = () => {
    let p = 0;
    for (const size of [0, ...sizes]) {
      p += size;
      for (let g = 0; g < GUARD; g++) equal(backing[p + g], 0xa5, `guard byte at ${p + g} changed`);
      p += GUARD;
    }
  };
  return { iov, backing, check };
}

Deno.test("iovSize adds entry lengths, counting zero-length entries as nothing", () => {
  equal(iovSize([]), 0);
  equal(iovSize([new Uint8Array(0)]), 0);
  equal(iovSize([new Uint8Array(4), new Uint8Array(0), new Uint8Array(10)]), 14);
});

Deno.test("iovSkip names the entry holding the byte, stepping over boundaries and empty entries", () => {
  const iov: Iov = [new Uint8Array(4), new Uint8Array(0), new Uint8Array(3), new Uint8Array(0)];
  deepEqual(iovSkip(iov, 0), { index: 0, offset: 0 });
  deepEqual(iovSkip(iov, 3), { index: 0, offset: 3 });
  deepEqual(iovSkip(iov, 4), { index: 2, offset: 0 }, "boundary skips the empty entry 1");
  deepEqual(iovSkip(iov, 6), { index: 2, offset: 2 });
  deepEqual(iovSkip(iov, 7), { index: 4, offset: 0 }, "exactly the end");
  deepEqual(iovSkip(iov, 12), { index: 4, offset: 5 }, "beyond the end: excess in offset");
  deepEqual(iovSkip(iov, -3), { index: 0, offset: 0 }, "negative counts as 0");
  deepEqual(iovSkip([], 2), { index: 0, offset: 2 });
});

Deno.test("iovSkip fills and returns the caller's cursor", () => {
  const cur = iovCursor();
  const got = iovSkip([new Uint8Array(2), new Uint8Array(2)], 3, cur);
  ok(got === cur);
  deepEqual(cur, { index: 1, offset: 1 });
});

Deno.test("iovMemset fills a range that starts, ends and straddles entry boundaries", () => {
  const sizes = [3, 0, 4, 2];
  const cases: [number, number][] = [[0, 3], [3, 4], [2, 3], [1, 8], [6, 1], [0, 9], [7, 2]];
  for (const [offset, length] of cases) {
    const g = guarded(sizes, counting(9));
    const flat = counting(9);
    flat.fill(0, offset, offset + length);
    equal(iovMemset(g.iov, offset, 0, length), length);
    deepEqual(iovToBytes(g.iov), flat, `memset(${offset}, ${length})`);
    g.check();
  }
});

Deno.test("iovMemset clamps at the end and returns the bytes set", () => {
  const g = guarded([2, 3], counting(5));
  equal(iovMemset(g.iov, 3, 0x1ff, 10), 2, "only two bytes past offset 3");
  deepEqual([...iovToBytes(g.iov)], [1, 2, 3, 0xff, 0xff], "value taken modulo 256");
  equal(iovMemset(g.iov, 5, 0, 4), 0, "offset at the end");
  equal(iovMemset(g.iov, 50, 0, 4), 0, "offset beyond the end");
  equal(iovMemset(g.iov, 0, 0, -1), 0, "negative length");
  deepEqual([...iovToBytes(g.iov)], [1, 2, 3, 0xff, 0xff]);
  g.check();
});

Deno.test("iovMemcopy copies between iovs split at different places", () => {
  const src = iovFromBytes(counting(12), [5, 0, 1, 6]);
  const g = guarded([2, 7, 0, 3], new Uint8Array(12));
  equal(iovMemcopy(g.iov, 1, src, 3, 9), 9);
  const want = new Uint8Array(12);
  want.set(counting(12).subarray(3, 12), 1);
  deepEqual(iovToBytes(g.iov), want);
  g.check();
});

Deno.test("iovMemcopy clamps to the shorter side and to the requested length", () => {
  const src = iovFromBytes(counting(6), [3, 3]);
  const dst = iovFromBytes(new Uint8Array(10), [4, 6]);
  equal(iovMemcopy(dst, 7, src, 0, 6), 3, "destination has 3 bytes left");
  equal(iovMemcopy(dst, 0, src, 4, 6), 2, "source has 2 bytes left");
  equal(iovMemcopy(dst, 0, src, 40, 6), 0, "source offset beyond the end");
  equal(iovMemcopy(dst, 40, src, 0, 6), 0, "destination offset beyond the end");
  deepEqual([...iovToBytes(dst)], [5, 6, 0, 0, 0, 0, 0, 1, 2, 3]);
});

Deno.test("iovMemcopy copies large chunks through set() and small ones byte by byte alike", () => {
  const big = counting(300);
  const src = iovFromBytes(big, [1, 100, 0, 199]);
  const dst = iovFromBytes(new Uint8Array(300), [150, 150]);
  equal(iovMemcopy(dst, 0, src, 0, 300), 300);
  deepEqual(iovToBytes(dst), big);
});

Deno.test("iovToBuf and iovFromBuf gather and scatter, clamped at both ends", () => {
  const iov = iovFromBytes(counting(8), [2, 0, 3, 3]);
  const buf = new Uint8Array(5);
  equal(iovToBuf(iov, 1, buf, 1, 10), 4, "buffer has 4 bytes from offset 1");
  deepEqual([...buf], [0, 2, 3, 4, 5]);
  equal(iovToBuf(iov, 6, buf, 0, 10), 2, "iov has 2 bytes from offset 6");
  deepEqual([...buf], [7, 8, 3, 4, 5]);
  equal(iovToBuf(iov, 0, buf, 9, 1), 0, "buffer offset beyond its end");

  equal(iovFromBuf(iov, 5, new Uint8Array([90, 91, 92, 93, 94]), 1, 10), 3);
  deepEqual([...iovToBytes(iov)], [1, 2, 3, 4, 5, 91, 92, 93]);
});

Deno.test("iovToBytes copies a clamped range; iovFromBytes splits a copy by sizes", () => {
  const bytes = counting(7);
  const iov = iovFromBytes(bytes, [2, 0, 9]);
  deepEqual(iov.map((e) => e.length), [2, 0, 5], "sizes cut short at the end");
  deepEqual(iovFromBytes(bytes, [3]).map((e) => e.length), [3, 4], "leftover forms an entry");
  bytes[0] = 99;
  equal(iov[0][0], 1, "entries are copies");
  deepEqual([...iovToBytes(iov, 3, 2)], [4, 5]);
  deepEqual([...iovToBytes(iov, 5)], [6, 7]);
  equal(iovToBytes(iov, 9).length, 0);
});

Deno.test("a tail starts at an offset, reports its size and advances", () => {
  const iov = iovFromBytes(counting(10), [4, 0, 6]);
  const tail = iovTail(iov, 4);
  deepEqual([tail.index, tail.offset], [2, 0]);
  equal(iovTailSize(tail), 6);
  equal(iovTailOffset(tail), 4);
  equal(iovTailAdvance(tail, 2), 2);
  equal(iovTailOffset(tail), 6);
  deepEqual([...iovToBytes(tail.iov, iovTailOffset(tail))], [7, 8, 9, 10]);
  equal(iovTailAdvance(tail, 9), 4, "advance clamps at the end");
  equal(iovTailSize(tail), 0);
  deepEqual([tail.index, tail.offset], [3, 0]);
  equal(iovTailAdvance(tail, 1), 0);

  const empty = iovTail(iov, 99);
  equal(iovTailSize(empty), 0);
  equal(iovTailOffset(empty), 10);

  const reused = iovTail(iov, 1, tail);
  ok(reused === tail);
  equal(iovTailSize(tail), 9);
});

Deno.test("iovTailPeek returns a view within one entry, a scratch copy across entries, else null", () => {
  const iov = iovFromBytes(counting(10), [4, 6]);
  const tail = iovTail(iov, 1);
  const view = iovTailPeek(tail, 3);
  ok(view !== null);
  deepEqual([...view], [2, 3, 4]);
  view[0] = 42;
  equal(iov[0][1], 42, "a view writes through to the frame");

  equal(iovTailPeek(tail, 5), null, "straddles without scratch");
  const scratch = new Uint8Array(16);
  const copy = iovTailPeek(tail, 5, scratch);
  ok(copy !== null);
  deepEqual([...copy], [42, 3, 4, 5, 6]);
  ok(copy.buffer === scratch.buffer);
  equal(iovTailPeek(tail, 10, scratch), null, "only 9 bytes in the tail");
  equal(iovTailPeek(tail, 5, new Uint8Array(4)), null, "scratch too small");
});

/** A small deterministic PRNG (mulberry32) so failures reproduce. */
function prng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

function randomSizes(rand: (n: number) => number): number[] {
  const count = rand(6);
  const sizes: number[] = [];
  // Mostly small entries, sometimes one big enough for the set() path.
  for (let i = 0; i < count; i++) {
    sizes.push(rand(5) === 0 ? 0 : rand(4) === 0 ? 20 + rand(60) : rand(9));
  }
  return sizes;
}

Deno.test("random fills and copies match a flat reference model (4000 cases)", () => {
  const rand = prng(0x7a91);
  for (let c = 0; c < 4000; c++) {
    const dstSizes = randomSizes(rand);
    const srcSizes = randomSizes(rand);
    const dstTotal = dstSizes.reduce((a, b) => a + b, 0);
    const srcTotal = srcSizes.reduce((a, b) => a + b, 0);
    const dstFlat = counting(dstTotal, rand(256));
    const srcFlat = counting(srcTotal, 100 + rand(100));
    const dst = guarded(dstSizes, dstFlat);
    const src = guarded(srcSizes, srcFlat);
    const dOff = rand(dstTotal + 4);
    const sOff = rand(srcTotal + 4);
    const len = rand(Math.max(dstTotal, srcTotal) + 6);
    const what = `case ${c}: dst ${dstSizes} @${dOff}, src ${srcSizes} @${sOff}, len ${len}`;

    switch (rand(4)) {
      case 0: {
        const n = Math.min(len, Math.max(0, dstTotal - dOff));
        dstFlat.fill(0, dOff, dOff + n);
        equal(iovMemset(dst.iov, dOff, 0, len), n, what);
        break;
      }
      case 1: {
        const n = Math.min(len, Math.max(0, dstTotal - dOff), Math.max(0, srcTotal - sOff));
        if (n > 0) dstFlat.set(srcFlat.subarray(sOff, sOff + n), dOff);
        equal(iovMemcopy(dst.iov, dOff, src.iov, sOff, len), n, what);
        break;
      }
      case 2: {
        // Gather src into a flat buffer standing in for dst.
        const n = Math.min(len, Math.max(0, srcTotal - sOff), Math.max(0, dstTotal - dOff));
        const buf = dstFlat.slice();
        const want = dstFlat.slice();
        if (n > 0) want.set(srcFlat.subarray(sOff, sOff + n), dOff);
        equal(iovToBuf(src.iov, sOff, buf, dOff, len), n, what);
        deepEqual(buf, want, what);
        break;
      }
      default: {
        // Scatter a flat buffer standing in for src.
        const n = Math.min(len, Math.max(0, dstTotal - dOff), Math.max(0, srcTotal - sOff));
        if (n > 0) dstFlat.set(srcFlat.subarray(sOff, sOff + n), dOff);
        equal(iovFromBuf(dst.iov, dOff, srcFlat, sOff, len), n, what);
        break;
      }
    }
    deepEqual(iovToBytes(dst.iov), dstFlat, what);
    deepEqual(iovToBytes(src.iov), srcFlat, `${what} (source unchanged)`);
    dst.check();
    src.check();

    const cur = iovSkip(dst.iov, dOff);
    const before = dst.iov.slice(0, cur.index).reduce((a, e) => a + e.length, 0);
    if (dOff < dstTotal) {
      ok(cur.offset < dst.iov[cur.index].length, what);
      equal(before + cur.offset, dOff, what);
    } else {
      deepEqual([cur.index, cur.offset], [dstSizes.length, dOff - dstTotal], what);
    }
  }
});
