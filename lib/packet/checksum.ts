/**
 * The Internet checksum (RFC 1071), the only implementation in tapir.
 *
 * ## Theory of operation
 *
 * The checksum is the ones'-complement of the ones'-complement sum of the data
 * taken as big-endian 16-bit words. Ones'-complement addition is addition
 * modulo 0xffff (with 0xffff standing for zero), so three facts make it cheap:
 *
 * - **Sums can be lazy.** A JS number holds integers exactly up to 2^53, so we
 *   add words as plain numbers and fold carries back in only at the end
 *   ({@linkcode checksumFold}). A *running sum* is any non-negative integer
 *   below 2^53 that is congruent to the true sum; every function here takes and
 *   returns one, folding its own contribution so callers can chain thousands
 *   of calls.
 * - **Word size does not matter.** 2^16 ≡ 1 (mod 0xffff), so a 32-bit word adds
 *   the same as its two 16-bit halves. The fast path reads 32-bit words through
 *   a cached `Uint32Array` over the buffer's `ArrayBuffer`.
 * - **Byte order is a rotation.** Swapping the bytes of every word swaps the
 *   bytes of the sum (RFC 1071 §2(B)). A little-endian host therefore sums
 *   native words and swaps once at the end; and a run of bytes that starts at
 *   an *odd* position of the checksummed data (its first byte is the low half
 *   of a word) is summed as if it were even and then swapped
 *   ({@linkcode checksumSwap}). {@linkcode checksumAddIov} uses that to chain
 *   buffers of odd length. The buffer offset itself never matters for
 *   correctness: the first byte of a run is always taken as a high byte;
 *   alignment only picks how many leading bytes go through the byte path.
 *
 * A trailing odd byte is the high half of a word whose low half is zero
 * (RFC 1071 §4.1), so an odd-length run followed by another run must use
 * {@linkcode checksumSwap} on the second, as {@linkcode checksumAddIov} does.
 *
 * Filling a checksum: zero the field, sum (pseudo-header + data), store the
 * complement of the fold. Verifying: the fold of the sum including the field is
 * 0xffff. UDP stores a computed 0 as 0xffff because 0 means "no checksum"
 * (RFC 768). Rewriting one field of a checksummed header uses RFC 1624
 * eqn. 3 ({@linkcode checksumUpdate16}) instead of a full pass.
 *
 * @module
 */

import { get16, IpProto, set16 } from "./wire.ts";

/** Below this many bytes the plain byte loop is faster than the word path. */
const SMALL_RUN = 48;
/** Words summed between folds on the fast path; keeps sums far below 2^53. */
const FOLD_EVERY_WORDS = 1 << 20;

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// A few most recent `ArrayBuffer`s and a `Uint32Array` over each: creating a
// typed array per call would allocate on the per-packet path. Frame buffers
// are long-lived and few, so a tiny round-robin cache hits nearly always.
const CACHE_SIZE = 4;
const cacheBuffers: (ArrayBufferLike | null)[] = [null, null, null, null];
const cacheWords: Uint32Array[] = [];
for (let i = 0; i < CACHE_SIZE; i++) cacheWords.push(new Uint32Array(0));
let cacheNext = 0;

function wordsOf(ab: ArrayBufferLike, needWords: number): Uint32Array {
  for (let i = 0; i < CACHE_SIZE; i++) {
    // Length check too: a growable buffer may have grown since it was cached.
    if (cacheBuffers[i] === ab && cacheWords[i].length >= needWords) return cacheWords[i];
  }
  const words = new Uint32Array(ab, 0, ab.byteLength >>> 2);
  cacheBuffers[cacheNext] = ab;
  cacheWords[cacheNext] = words;
  cacheNext = (cacheNext + 1) % CACHE_SIZE;
  return words;
}

/**
 * Folds a running sum to 16 bits with end-around carry. Returns 0 only for a
 * zero sum; any non-zero sum folds into [1, 0xffff].
 */
export function checksumFold(sum: number): number {
  // Bit operators only see 32 bits; past that, divide.
  while (sum > 0xffffffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** Complement of the folded sum: the value stored in a checksum field. */
export function checksumFinish(sum: number): number {
  return ~checksumFold(sum) & 0xffff;
}

/**
 * Folds `sum` and swaps its two bytes: the contribution of a run whose first
 * byte sits at an odd position of the checksummed data.
 */
export function checksumSwap(sum: number): number {
  const s = checksumFold(sum);
  return ((s & 0xff) << 8) | (s >>> 8);
}

// Sum of `len` bytes as big-endian words counted from `off` (odd tail padded).
function sumBytes(buf: Uint8Array, off: number, len: number): number {
  let s = 0;
  let i = off;
  const end = off + len;
  for (; i + 8 <= end; i += 8) {
    s += ((buf[i] << 8) | buf[i + 1]) + ((buf[i + 2] << 8) | buf[i + 3]) +
      ((buf[i + 4] << 8) | buf[i + 5]) + ((buf[i + 6] << 8) | buf[i + 7]);
  }
  for (; i + 2 <= end; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i < end) s += buf[i] << 8;
  return s;
}

// Sum of the native 32-bit words in [i, end). Two accumulators and paired
// adds give the CPU independent chains; each word is < 2^32, so a chunk of
// FOLD_EVERY_WORDS words stays far below 2^53.
function sumWordsChunk(words: Uint32Array, i: number, end: number): number {
  let s = 0;
  let t = 0;
  for (; i + 16 <= end; i += 16) {
    s += (words[i] + words[i + 1]) + (words[i + 2] + words[i + 3]) +
      (words[i + 4] + words[i + 5]) + (words[i + 6] + words[i + 7]);
    t += (words[i + 8] + words[i + 9]) + (words[i + 10] + words[i + 11]) +
      (words[i + 12] + words[i + 13]) + (words[i + 14] + words[i + 15]);
  }
  for (; i < end; i++) s += words[i];
  return s + t;
}

// Folded sum of `n` native 32-bit words starting at word index `w`.
function sumWords(words: Uint32Array, w: number, n: number): number {
  let s = 0;
  const end = w + n;
  for (let i = w; i < end; i += FOLD_EVERY_WORDS) {
    s = checksumFold(s + sumWordsChunk(words, i, Math.min(end, i + FOLD_EVERY_WORDS)));
  }
  return s;
}

/**
 * Adds `len` bytes of `buf` from `off` to the running `sum` and returns the
 * new running sum. The run's first byte is taken as the high byte of a word
 * (an even position); for a run at an odd position add
 * `checksumSwap(checksumAdd(0, ...))` instead. An odd final byte is padded with
 * a zero low byte. The caller guarantees `[off, off + len)` is inside `buf`.
 */
export function checksumAdd(sum: number, buf: Uint8Array, off: number, len: number): number {
  if (len < SMALL_RUN) return sum + checksumFold(sumBytes(buf, off, len));
  const abs = buf.byteOffset + off;
  const head = (4 - (abs & 3)) & 3; // bytes before the first aligned word
  const nWords = (len - head) >>> 2;
  const tailStart = off + head + nWords * 4;
  const firstWord = (abs + head) / 4; // exact: abs + head is aligned
  const words = wordsOf(buf.buffer, firstWord + nWords);
  // Middle + tail, as big-endian words counted from the aligned start.
  let mid = sumWords(words, firstWord, nWords);
  if (LITTLE_ENDIAN) mid = checksumSwap(mid);
  mid += sumBytes(buf, tailStart, off + len - tailStart);
  // The aligned start is at an odd distance from `off`: rotate into place.
  if (head & 1) mid = checksumSwap(mid);
  return sum + checksumFold(sumBytes(buf, off, head) + mid);
}

/**
 * Adds the first `count` buffers of `iov`, taken as one contiguous byte
 * stream, to `sum`. Buffers of odd length shift the word boundary for the
 * ones after them; that is accounted for.
 */
export function checksumAddIov(
  sum: number,
  iov: readonly Uint8Array[],
  count: number = iov.length,
): number {
  let odd = false;
  for (let i = 0; i < count; i++) {
    const b = iov[i];
    const run = checksumAdd(0, b, 0, b.length);
    sum += odd ? checksumSwap(run) : run;
    if (b.length & 1) odd = !odd;
  }
  return sum;
}

/**
 * Sum of the IPv4 pseudo-header (RFC 793 §3.1, RFC 768): source and
 * destination addresses (u32 numbers), protocol and upper-layer length.
 */
export function checksumPseudo4(src: number, dst: number, proto: number, len: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + len;
}

/**
 * Sum of the IPv6 pseudo-header (RFC 8200 §8.1): the 16-byte addresses read
 * in place from `src[srcOff..]` and `dst[dstOff..]`, the 32-bit upper-layer
 * length and the next-header value.
 */
export function checksumPseudo6(
  src: Uint8Array,
  srcOff: number,
  dst: Uint8Array,
  dstOff: number,
  nextHeader: number,
  len: number,
): number {
  return sumBytes(src, srcOff, 16) + sumBytes(dst, dstOff, 16) + (len >>> 16) + (len & 0xffff) +
    nextHeader;
}

/**
 * New checksum after a 16-bit field changed from `oldValue` to `newValue`
 * (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')). Equals a full recomputation
 * except when every covered byte is zero (then a full pass gives 0xffff and
 * this 0), which a real header with its pseudo-header never is. For UDP the
 * caller keeps the rule that a stored 0 means "no checksum" (leave it) and a
 * result 0 is sent as 0xffff.
 */
export function checksumUpdate16(check: number, oldValue: number, newValue: number): number {
  return ~checksumFold((~check & 0xffff) + (~oldValue & 0xffff) + (newValue & 0xffff)) & 0xffff;
}

/** {@linkcode checksumUpdate16} for a 32-bit field (an IPv4 address, a sequence number). */
export function checksumUpdate32(check: number, oldValue: number, newValue: number): number {
  return ~checksumFold(
    (~check & 0xffff) + (~(oldValue >>> 16) & 0xffff) + (~oldValue & 0xffff) +
      (newValue >>> 16) + (newValue & 0xffff),
  ) & 0xffff;
}

/**
 * Fills the 16-bit checksum at `buf[fieldOff]`, covering `len` bytes from `off`
 * plus `initial` (a pseudo-header sum or 0). Returns the value stored.
 */
export function checksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  fieldOff: number,
  initial: number,
): number {
  set16(buf, fieldOff, 0);
  const c = checksumFinish(checksumAdd(initial, buf, off, len));
  set16(buf, fieldOff, c);
  return c;
}

/** True if `len` bytes from `off`, plus `initial`, sum to all ones (checksum verifies). */
export function checksumOk(buf: Uint8Array, off: number, len: number, initial: number): boolean {
  return checksumFold(checksumAdd(initial, buf, off, len)) === 0xffff;
}

// Checksum field offsets within each header.
const IP4_CHECKSUM_AT = 10;
const ICMP_CHECKSUM_AT = 2;
const TCP_CHECKSUM_AT = 16;
const UDP_CHECKSUM_AT = 6;

/** Fills the IPv4 header checksum of the `hdrLen`-byte header at `off`. */
export function ip4HeaderChecksumFill(buf: Uint8Array, off: number, hdrLen: number): number {
  return checksumFill(buf, off, hdrLen, off + IP4_CHECKSUM_AT, 0);
}

/** True if the IPv4 header checksum of the `hdrLen`-byte header at `off` verifies. */
export function ip4HeaderChecksumOk(buf: Uint8Array, off: number, hdrLen: number): boolean {
  return checksumOk(buf, off, hdrLen, 0);
}

/** Fills the checksum of the `len`-byte ICMPv4 message at `off` (no pseudo-header). */
export function icmp4ChecksumFill(buf: Uint8Array, off: number, len: number): number {
  return checksumFill(buf, off, len, off + ICMP_CHECKSUM_AT, 0);
}

/** True if the checksum of the `len`-byte ICMPv4 message at `off` verifies. */
export function icmp4ChecksumOk(buf: Uint8Array, off: number, len: number): boolean {
  return checksumOk(buf, off, len, 0);
}

/** Fills the checksum of the `len`-byte TCP segment at `off` carried over IPv4. */
export function tcp4ChecksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
): number {
  return checksumFill(
    buf,
    off,
    len,
    off + TCP_CHECKSUM_AT,
    checksumPseudo4(src, dst, IpProto.Tcp, len),
  );
}

/** True if the checksum of the `len`-byte TCP segment at `off` over IPv4 verifies. */
export function tcp4ChecksumOk(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
): boolean {
  return checksumOk(buf, off, len, checksumPseudo4(src, dst, IpProto.Tcp, len));
}

/**
 * Fills the checksum of the `len`-byte TCP segment at `off` carried over IPv6;
 * the addresses are read from `addrs` at `srcOff` and `dstOff` (typically the
 * IPv6 header in the same frame).
 */
export function tcp6ChecksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): number {
  const pseudo = checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Tcp, len);
  return checksumFill(buf, off, len, off + TCP_CHECKSUM_AT, pseudo);
}

/** True if the checksum of the `len`-byte TCP segment at `off` over IPv6 verifies. */
export function tcp6ChecksumOk(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): boolean {
  return checksumOk(buf, off, len, checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Tcp, len));
}

// UDP over either family: a computed 0 is sent as 0xffff (RFC 768).
function udpFill(buf: Uint8Array, off: number, len: number, pseudo: number): number {
  let c = checksumFill(buf, off, len, off + UDP_CHECKSUM_AT, pseudo);
  if (c === 0) {
    c = 0xffff;
    set16(buf, off + UDP_CHECKSUM_AT, c);
  }
  return c;
}

/** Fills the checksum of the `len`-byte UDP datagram at `off` over IPv4 (0 sent as 0xffff). */
export function udp4ChecksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
): number {
  return udpFill(buf, off, len, checksumPseudo4(src, dst, IpProto.Udp, len));
}

/**
 * True if the UDP-over-IPv4 checksum verifies, or is 0, which in IPv4 means
 * the sender computed none (RFC 768).
 */
export function udp4ChecksumOk(
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
): boolean {
  if (get16(buf, off + UDP_CHECKSUM_AT) === 0) return true;
  return checksumOk(buf, off, len, checksumPseudo4(src, dst, IpProto.Udp, len));
}

/** Fills the checksum of the `len`-byte UDP datagram at `off` over IPv6 (0 sent as 0xffff). */
export function udp6ChecksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): number {
  return udpFill(buf, off, len, checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Udp, len));
}

/** True if the UDP-over-IPv6 checksum verifies; 0 is invalid over IPv6 (RFC 8200 §8.1). */
export function udp6ChecksumOk(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): boolean {
  if (get16(buf, off + UDP_CHECKSUM_AT) === 0) return false;
  return checksumOk(buf, off, len, checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Udp, len));
}

/** Fills the checksum of the `len`-byte ICMPv6 message at `off` (RFC 4443 §2.3). */
export function icmp6ChecksumFill(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): number {
  const pseudo = checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Icmp6, len);
  return checksumFill(buf, off, len, off + ICMP_CHECKSUM_AT, pseudo);
}

/** True if the checksum of the `len`-byte ICMPv6 message at `off` verifies. */
export function icmp6ChecksumOk(
  buf: Uint8Array,
  off: number,
  len: number,
  addrs: Uint8Array,
  srcOff: number,
  dstOff: number,
): boolean {
  return checksumOk(
    buf,
    off,
    len,
    checksumPseudo6(addrs, srcOff, addrs, dstOff, IpProto.Icmp6, len),
  );
}

/**
 * Completes a checksum left partial for offload: `frame[off..off+len)` is
 * the frame, the covered data starts `start` bytes in, and the field at
 * `start + field` holds the folded pseudo-header sum. Replaces it with the
 * full checksum (what hardware would write).
 */
export function checksumComplete(
  frame: Uint8Array,
  off: number,
  len: number,
  start: number,
  field: number,
): void {
  if (start + field + 2 > len) return;
  const at = off + start + field;
  checksumFill(frame, off + start, len - start, at, get16(frame, at));
}
