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
import { GOLDEN_FRAMES, mutateFrame, parseFrame, prng } from "./golden.ts";

const ITERATIONS = 100_000;
const SEED = 0x7a919;

Deno.test("fuzz: 100 000 mutated frames never throw and never escape their bounds", () => {
  const rand = prng(SEED);
  const frames = Object.values(GOLDEN_FRAMES);
  const seen = new Map<WireError | 0, number>();
  for (let i = 0; i < ITERATIONS; i++) {
    const frame = mutateFrame(rand, frames[i % frames.length]);
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
