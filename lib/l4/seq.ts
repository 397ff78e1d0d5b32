/**
 * TCP sequence-number arithmetic, modulo 2^32 (RFC 9293 §3.4): the one place
 * that compares sequence numbers. A comparison looks at the signed 32-bit
 * difference, so it is right as long as the two numbers are less than 2^31
 * apart, which every window guarantees.
 *
 * **One form: signed.** tapir carries a sequence number as its 32 bits
 * read as a signed number (`x | 0`): segments parsed from the wire
 * (`TcpPacket.seq`/`ack`), {@linkcode seqAdd}, and every field and column
 * that keeps one. V8 holds a signed 32-bit value as a small integer, but an
 * unsigned one from 2^31 up, half of all sequence numbers, as a 16-byte
 * heap number, allocated wherever it is stored or passed: on every segment
 * and every connection's handshake, feeding the garbage collector. The
 * comparisons below work on either form; `===` needs both sides in the same
 * one, which is why there is only one. {@linkcode seqDiff} is a byte count,
 * not a sequence number, and stays unsigned.
 *
 * @module
 */

/** `a + n` modulo 2^32, in the signed form. */
export function seqAdd(a: number, n: number): number {
  return (a + n) | 0;
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
