/**
 * Scatter-gather byte arrays ("iovs").
 *
 * An iov is a list of `Uint8Array` views that together hold one logical run of
 * bytes: a frame built from a backend header, prebuilt Ethernet/IP headers and
 * a payload buffer, or a virtqueue element whose descriptors split a frame
 * anywhere. Entries may be zero-length and may view any part of any buffer.
 *
 * Theory of operation:
 *
 * - **Lengths are explicit.** Every function that reads or writes takes an
 *   offset and a length from the caller. The size of an iov is only how much
 *   room there is; it is never taken as the length of the frame inside it,
 *   because buffers handed to us (vhost-user descriptors, preallocated frame
 *   slots) are routinely larger than the frame.
 * - **Running past the end clamps.** When `offset + length` goes beyond the
 *   bytes an iov (or a flat buffer) holds, the operation does what fits and
 *   returns the number of bytes it actually processed. Nothing throws and
 *   nothing is written outside the views. Negative or NaN offsets and lengths
 *   count as 0; fractional ones are rounded down. Callers compare the return
 *   value with what they asked for when a shortfall matters.
 * - **Positions.** {@linkcode iovSkip} turns a byte offset into a cursor
 *   (entry index, offset inside that entry). It writes into a caller-supplied
 *   {@linkcode IovCursor} so per-packet code allocates nothing. An
 *   {@linkcode IovTail} is a cursor bundled with its iov: "the bytes from here
 *   on", which is how later stages say where a header or payload starts.
 * - **Hot path.** The fill/copy loops walk entries with local variables and a
 *   module-private scratch cursor (all functions are synchronous and never
 *   re-enter each other, so sharing it is safe). Short copies go byte by byte,
 *   longer ones through `TypedArray.set`, which costs one small view object.
 * - **Overlap.** Source and destination ranges of a copy must not share
 *   memory, as with `memcpy`. If they do, the result is unspecified, but still
 *   stays within bounds.
 *
 * `iovToBytes` and `iovFromBytes` allocate and are meant for tests and slow
 * paths.
 *
 * @module
 */

/** A scatter-gather array: views whose concatenation is the logical byte run. */
export type Iov = readonly Uint8Array[];

/**
 * A position in an iov: entry `index`, byte `offset` inside it. After
 * {@linkcode iovSkip}, `offset < iov[index].length` whenever `index < iov.length`;
 * `index === iov.length` means the position is at or beyond the end, and then
 * `offset` is how many bytes beyond.
 */
export interface IovCursor {
  /** Entry index, or the iov's length when at/after the end. */
  index: number;
  /** Byte offset inside the entry (or past the end, see above). */
  offset: number;
}

/**
 * "The bytes of `iov` from this position on." Mutable so code can advance it
 * in place as it consumes headers. Invariant kept by the functions here:
 * either `index < iov.length` and `offset < iov[index].length`, or the tail is
 * empty with `index === iov.length` and `offset === 0`.
 */
export interface IovTail {
  /** The underlying iov (not copied). */
  iov: Iov;
  /** Entry where the tail starts. */
  index: number;
  /** Byte offset of the tail's first byte inside `iov[index]`. */
  offset: number;
}

/** Copies at most this many bytes with a plain loop rather than `set()` (no view allocated). */
const SMALL_COPY = 32;

/** Scratch cursors for the copy and fill loops; see "Hot path" above. */
const scratchA: IovCursor = { index: 0, offset: 0 };
const scratchB: IovCursor = { index: 0, offset: 0 };

/** Normalises an offset or length: negative and NaN become 0, fractions round down. */
function toCount(n: number): number {
  return n > 0 ? Math.floor(n) : 0;
}

/** Copies `n` bytes, which the caller has bounds-checked on both sides. */
function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number) {
  if (n <= SMALL_COPY) {
    for (let k = 0; k < n; k++) dst[dstOff + k] = src[srcOff + k];
  } else {
    dst.set(src.subarray(srcOff, srcOff + n), dstOff);
  }
}

/** Creates a cursor at the start; reuse it across calls to {@linkcode iovSkip}. */
export function iovCursor(): IovCursor {
  return { index: 0, offset: 0 };
}

/** Total number of bytes the iov's entries hold (its capacity, not a frame length). */
export function iovSize(iov: Iov): number {
  let n = 0;
  for (let i = 0; i < iov.length; i++) n += iov[i].length;
  return n;
}

/**
 * Finds byte `offset` of `iov`. Zero-length entries and entries that end
 * exactly at `offset` are stepped over, so the cursor names the entry that
 * holds the byte. Beyond the end, `index` is `iov.length` and `offset` is the
 * excess (0 when `offset` equals the size).
 *
 * @param out cursor to fill (pass one to avoid an allocation per call)
 * @returns `out`
 */
export function iovSkip(iov: Iov, offset: number, out: IovCursor = iovCursor()): IovCursor {
  let rest = toCount(offset);
  let i = 0;
  for (; i < iov.length; i++) {
    const len = iov[i].length;
    if (rest < len) break;
    rest -= len;
  }
  out.index = i;
  out.offset = rest;
  return out;
}

/**
 * Makes a tail of `iov` starting at byte `offset`. An offset at or past the
 * end gives an empty tail.
 *
 * @param out tail to fill instead of allocating one
 */
export function iovTail(iov: Iov, offset: number, out?: IovTail): IovTail {
  iovSkip(iov, offset, scratchA);
  const index = scratchA.index;
  const off = index < iov.length ? scratchA.offset : 0;
  if (out === undefined) return { iov, index, offset: off };
  out.iov = iov;
  out.index = index;
  out.offset = off;
  return out;
}

/** Number of bytes from the tail's start to the end of its iov. */
export function iovTailSize(tail: IovTail): number {
  const iov = tail.iov;
  if (tail.index >= iov.length) return 0;
  let n = iov[tail.index].length - tail.offset;
  for (let i = tail.index + 1; i < iov.length; i++) n += iov[i].length;
  return n;
}

/** Absolute byte offset of the tail's start within its iov, for the offset-taking functions. */
export function iovTailOffset(tail: IovTail): number {
  const iov = tail.iov;
  const end = tail.index < iov.length ? tail.index : iov.length;
  let n = tail.offset;
  for (let i = 0; i < end; i++) n += iov[i].length;
  return n;
}

/**
 * Moves the tail's start forward by `length` bytes (consuming a header).
 *
 * @returns bytes actually skipped: less than `length` only if the tail ran out
 */
export function iovTailAdvance(tail: IovTail, length: number): number {
  const want = toCount(length);
  const iov = tail.iov;
  let rest = tail.offset + want;
  let i = tail.index;
  for (; i < iov.length; i++) {
    const len = iov[i].length;
    if (rest < len) break;
    rest -= len;
  }
  tail.index = i;
  if (i < iov.length) {
    tail.offset = rest;
    return want;
  }
  tail.offset = 0;
  return want - rest;
}

/**
 * Returns the tail's first `length` bytes as one contiguous array, for
 * parsing a header. When they lie within one entry this is a view (no copy,
 * writes go through to the frame). When they straddle entries and `scratch`
 * is given and big enough, they are copied into `scratch` and a view of it is
 * returned (writes do not reach the frame). Otherwise, or if the tail holds
 * fewer than `length` bytes, returns null. The tail is not advanced.
 */
export function iovTailPeek(
  tail: IovTail,
  length: number,
  scratch?: Uint8Array,
): Uint8Array | null {
  const want = toCount(length);
  const iov = tail.iov;
  if (tail.index >= iov.length) return want === 0 ? new Uint8Array(0) : null;
  const first = iov[tail.index];
  if (tail.offset + want <= first.length) return first.subarray(tail.offset, tail.offset + want);
  if (scratch === undefined || scratch.length < want) return null;
  const got = iovToBuf(iov, iovTailOffset(tail), scratch, 0, want);
  return got === want ? scratch.subarray(0, want) : null;
}

/**
 * Sets `length` bytes of `iov`, starting at byte `offset`, to `value`
 * (taken modulo 256), across entry boundaries.
 *
 * @returns bytes actually set (clamped at the end of the iov)
 */
export function iovMemset(iov: Iov, offset: number, value: number, length: number): number {
  const want = toCount(length);
  if (want === 0) return 0;
  iovSkip(iov, offset, scratchA);
  const byte = value & 0xff;
  let i = scratchA.index;
  let off = scratchA.offset;
  let done = 0;
  for (; i < iov.length && done < want; i++) {
    const entry = iov[i];
    const n = Math.min(entry.length - off, want - done);
    if (n > 0) {
      entry.fill(byte, off, off + n);
      done += n;
    }
    off = 0;
  }
  return done;
}

/**
 * Copies `length` bytes from `src` (starting at byte `srcOffset`) to `dst`
 * (starting at byte `dstOffset`), walking both iovs' entries independently.
 * The ranges must not overlap in memory.
 *
 * @returns bytes actually copied (clamped at the end of either iov)
 */
export function iovMemcopy(
  dst: Iov,
  dstOffset: number,
  src: Iov,
  srcOffset: number,
  length: number,
): number {
  const want = toCount(length);
  if (want === 0) return 0;
  iovSkip(dst, dstOffset, scratchA);
  iovSkip(src, srcOffset, scratchB);
  let di = scratchA.index;
  let dOff = scratchA.offset;
  let si = scratchB.index;
  let sOff = scratchB.offset;
  let done = 0;
  while (done < want && di < dst.length && si < src.length) {
    const d = dst[di];
    const s = src[si];
    const dRoom = d.length - dOff;
    const sRoom = s.length - sOff;
    if (dRoom === 0) {
      di++;
      dOff = 0;
      continue;
    }
    if (sRoom === 0) {
      si++;
      sOff = 0;
      continue;
    }
    const n = Math.min(dRoom, sRoom, want - done);
    copyBytes(d, dOff, s, sOff, n);
    done += n;
    dOff += n;
    sOff += n;
  }
  return done;
}

/**
 * Walks `length` bytes of `iov` from byte `offset` alongside the flat `buf`
 * from `bufOffset`, copying iov → buf (`gather`) or buf → iov.
 */
function iovFlatCopy(
  iov: Iov,
  offset: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
  gather: boolean,
): number {
  const start = toCount(bufOffset);
  const want = Math.min(toCount(length), Math.max(0, buf.length - start));
  if (want === 0) return 0;
  iovSkip(iov, offset, scratchA);
  let i = scratchA.index;
  let off = scratchA.offset;
  let done = 0;
  for (; i < iov.length && done < want; i++) {
    const entry = iov[i];
    const n = Math.min(entry.length - off, want - done);
    if (n > 0) {
      if (gather) copyBytes(buf, start + done, entry, off, n);
      else copyBytes(entry, off, buf, start + done, n);
      done += n;
    }
    off = 0;
  }
  return done;
}

/**
 * Gathers `length` bytes of `iov`, from byte `offset`, into the flat `buf`
 * at `bufOffset`.
 *
 * @returns bytes actually copied (clamped at the end of the iov or of `buf`)
 */
export function iovToBuf(
  iov: Iov,
  offset: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
): number {
  return iovFlatCopy(iov, offset, buf, bufOffset, length, true);
}

/**
 * Scatters `length` bytes of the flat `buf`, from `bufOffset`, into `iov`
 * starting at byte `offset`.
 *
 * @returns bytes actually copied (clamped at the end of the iov or of `buf`)
 */
export function iovFromBuf(
  iov: Iov,
  offset: number,
  buf: Uint8Array,
  bufOffset: number,
  length: number,
): number {
  return iovFlatCopy(iov, offset, buf, bufOffset, length, false);
}

/**
 * Copies bytes of `iov` into a new array: from byte `offset`, `length` bytes
 * (default: to the end), clamped to what the iov holds. Allocates.
 */
export function iovToBytes(iov: Iov, offset = 0, length?: number): Uint8Array {
  const avail = Math.max(0, iovSize(iov) - toCount(offset));
  const n = length === undefined ? avail : Math.min(toCount(length), avail);
  const out = new Uint8Array(n);
  iovToBuf(iov, offset, out, 0, n);
  return out;
}

/**
 * Splits a copy of `bytes` into a new iov whose entries have the given
 * `sizes` (zero allowed). Sizes beyond the bytes left are cut short; bytes
 * left over after the last size form one more entry. Allocates; for tests and
 * slow paths.
 */
export function iovFromBytes(bytes: Uint8Array, sizes: readonly number[] = []): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pos = 0;
  for (const size of sizes) {
    const n = Math.min(toCount(size), bytes.length - pos);
    out.push(bytes.slice(pos, pos + n));
    pos += n;
  }
  if (pos < bytes.length || out.length === 0) out.push(bytes.slice(pos));
  return out;
}
