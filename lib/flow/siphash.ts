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
 * Incremental HalfSipHash-1-3 state: {@linkcode reset} with a key, {@linkcode add}
 * words, {@linkcode finish}. Reused across calls, so hashing allocates nothing.
 */
export class HalfSipHash {
  #v0 = 0;
  #v1 = 0;
  #v2 = 0;
  #v3 = 0;
  #words = 0;

  /** Starts a new message under `key`. */
  reset(key: SipKey): void {
    this.#v0 = key[0] | 0;
    this.#v1 = key[1] | 0;
    this.#v2 = (0x6c796765 ^ key[0]) | 0;
    this.#v3 = (0x74656462 ^ key[1]) | 0;
    this.#words = 0;
  }

  #round(): void {
    let v0 = this.#v0, v1 = this.#v1, v2 = this.#v2, v3 = this.#v3;
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
    this.#v0 = v0;
    this.#v1 = v1;
    this.#v2 = v2;
    this.#v3 = v3;
  }

  /** Adds one 32-bit word (little-endian in SipHash's byte view). */
  add(word: number): void {
    this.#v3 ^= word;
    this.#round();
    this.#v0 ^= word;
    this.#words++;
  }

  /** Finishes the message and returns its 32-bit hash (unsigned). */
  finish(): number {
    const b = ((this.#words * 4) << 24) | 0;
    this.#v3 ^= b;
    this.#round();
    this.#v0 ^= b;
    this.#v2 ^= 0xff;
    this.#round();
    this.#round();
    this.#round();
    return (this.#v1 ^ this.#v3) >>> 0;
  }
}
