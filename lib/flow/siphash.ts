/**
 * HalfSipHash-1-3: a keyed 32-bit hash over 32-bit words.
 *
 * The flow table hashes tuples a guest chooses. With an unkeyed hash a guest
 * could pick tuples that all land in one bucket and turn every lookup into a
 * linear scan. HalfSipHash (the 32-bit member of the SipHash family, the
 * variant Linux uses for its own flow hashing) with a random key per run
 * makes that infeasible, and its operations — 32-bit add, rotate, xor — are
 * exactly the ones JavaScript does fast with `| 0`.
 *
 * The message is a sequence of 32-bit words (the flow key is 10 of them), so
 * there is never a partial final block; the length goes into the last block
 * as the algorithm specifies. One compression round per word, three
 * finalisation rounds ("1-3").
 *
 * @module
 */

/** A 64-bit key as two 32-bit words. */
export type SipKey = Uint32Array;

/** A new random key from the platform's cryptographic generator. */
export function sipKeyRandom(): SipKey {
  return crypto.getRandomValues(new Uint32Array(2));
}

/**
 * HalfSipHash-1-3 of `n` 32-bit words of `words` from `off`, under `key`;
 * returns an unsigned 32-bit hash. Allocation-free; the state lives in local
 * variables, which is what makes it cheap in JavaScript.
 *
 * One loop does everything: words 0..n-1 are compressed with one round each,
 * word n is the length block, and after it `v2 ^= 0xff` starts finalisation,
 * whose three rounds are the last three iterations with a zero message
 * (xoring 0 into v3 and v0 changes nothing).
 */
export function halfSipHash(key: SipKey, words: ArrayLike<number>, off: number, n: number): number {
  let v0 = key[0] | 0;
  let v1 = key[1] | 0;
  let v2 = (0x6c796765 ^ key[0]) | 0;
  let v3 = (0x74656462 ^ key[1]) | 0;
  const lengthBlock = (n * 4) << 24;
  for (let i = 0; i < n + 4; i++) {
    const m = i < n ? words[off + i] | 0 : i === n ? lengthBlock : 0;
    v3 ^= m;
    v0 = (v0 + v1) | 0;
    v1 = (v1 << 5) | (v1 >>> 27);
    v1 ^= v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = (v3 << 8) | (v3 >>> 24);
    v3 ^= v2;
    v0 = (v0 + v3) | 0;
    v3 = (v3 << 7) | (v3 >>> 25);
    v3 ^= v0;
    v2 = (v2 + v1) | 0;
    v1 = (v1 << 13) | (v1 >>> 19);
    v1 ^= v2;
    v2 = (v2 << 16) | (v2 >>> 16);
    v0 ^= m;
    if (i === n) v2 ^= 0xff;
  }
  return (v1 ^ v3) >>> 0;
}
