/**
 * TCP sequence-number arithmetic, modulo 2^32 (RFC 9293 §3.4): the one place
 * that compares sequence numbers. A comparison looks at the signed 32-bit
 * difference, so it is right as long as the two numbers are less than 2^31
 * apart, which every window guarantees.
 *
 * @module
 */

/** `a + n` modulo 2^32. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** `a - b` modulo 2^32, as an unsigned count (bytes from b up to a). */
export function seqDiff(a: number, b: number): number {
  return (a - b) >>> 0;
}

/** True if `a` comes before `b`. */
export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}

/** True if `a` comes before or is `b`. */
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}

/** True if `a` comes after `b`. */
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

/** True if `a` comes after or is `b`. */
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
