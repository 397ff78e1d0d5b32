/**
 * Mutation fuzzing of the whole wire layer: 100 000 damaged copies of the
 * golden frames go through every parser ({@linkcode parseFrame}), which must
 * never throw, must keep every range it reports inside the frame, and must
 * not depend on the bytes around the frame in its buffer. Seeded, so a
 * failure reproduces; the seed and iteration are in the message.
 *
 * @module
 */

import { equal, ok } from "node:assert/strict";
import { WIRE_ERROR_NAMES, type WireError } from "../../lib/packet/wire.ts";
import { GOLDEN_FRAMES, parseFrame, prng } from "./golden.ts";

const ITERATIONS = 100_000;
const SEED = 0x7a919;

// Byte values that make length and offset fields lie in interesting ways.
const NASTY = [
  0,
  1,
  2,
  3,
  4,
  5,
  7,
  8,
  0x0f,
  0x10,
  0x3f,
  0x40,
  0x45,
  0x46,
  0x4f,
  0x60,
  0x7f,
  0x80,
  0xf0,
  0xfe,
  0xff,
];

function mutate(rand: () => number, frame: Uint8Array): Uint8Array {
  let out = frame.slice();
  const edits = 1 + ((rand() * 4) | 0);
  for (let e = 0; e < edits; e++) {
    const kind = rand();
    if (out.length === 0) break;
    const at = (rand() * out.length) | 0;
    if (kind < 0.35) {
      out[at] = (rand() * 256) | 0; // random byte
    } else if (kind < 0.7) {
      // Headers and their length fields live in the first ~100 bytes.
      const h = (rand() * Math.min(out.length, 100)) | 0;
      out[h] = NASTY[(rand() * NASTY.length) | 0];
    } else if (kind < 0.8) {
      out[at] = (out[at] + (rand() < 0.5 ? 1 : 255)) & 0xff; // off by one
    } else if (kind < 0.9) {
      out = out.slice(0, (rand() * out.length) | 0); // truncate
    } else {
      const grown = new Uint8Array(out.length + 1 + ((rand() * 40) | 0));
      grown.set(out);
      for (let i = out.length; i < grown.length; i++) grown[i] = (rand() * 256) | 0;
      out = grown; // extra bytes past the end
    }
  }
  return out;
}

Deno.test("fuzz: 100 000 mutated frames never throw and never escape their bounds", () => {
  const rand = prng(SEED);
  const frames = Object.values(GOLDEN_FRAMES);
  const seen = new Map<WireError | 0, number>();
  for (let i = 0; i < ITERATIONS; i++) {
    const frame = mutate(rand, frames[i % frames.length]);
    let result: WireError | 0;
    try {
      result = parseFrame(frame);
    } catch (e) {
      throw new Error(`seed ${SEED} iteration ${i}: ${e}\nframe ${Array.from(frame).join(",")}`);
    }
    seen.set(result, (seen.get(result) ?? 0) + 1);
    ok(result === 0 || result in WIRE_ERROR_NAMES, `unknown result ${result}`);
    if (i % 10 === 0) {
      // Same frame inside a larger buffer with garbage around: same answer.
      const pad = 1 + ((rand() * 7) | 0);
      const big = new Uint8Array(frame.length + 2 * pad);
      for (let j = 0; j < big.length; j++) big[j] = (rand() * 256) | 0;
      big.set(frame, pad);
      equal(parseFrame(big, pad, frame.length), result, `iteration ${i} at offset ${pad}`);
    }
  }
  // Not vacuous: plenty were refused, for several reasons, and some survived.
  ok((seen.get(0) ?? 0) > 100, "some mutated frames still parse");
  ok(seen.size >= 6, `results seen: ${[...seen.keys()].join(", ")}`);
});

Deno.test("fuzz: the unmutated golden frames all parse", () => {
  for (const [name, frame] of Object.entries(GOLDEN_FRAMES)) equal(parseFrame(frame), 0, name);
});
