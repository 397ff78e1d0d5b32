/**
 * Frame tails: the part of a frame that lives in memory that is not a slot
 * of ours — the guest's own buffers, under vhost-user — so that payload
 * bytes are copied once, by the kernel, between the guest and a socket.
 *
 * # Theory of operation
 *
 * A frame is its slot's bytes from `TAP_HEADROOM` up to
 * {@linkcode FrameTail.headEnd}, followed by the tail's pieces from that
 * point on. Pieces are (buffer, offset, length) triples in frame order;
 * they describe the frame from slot offset {@linkcode FrameTail.at}, which
 * may lie before `headEnd`: a frame from the guest is listed whole in its
 * pieces, and only its first bytes are gathered into the slot to be parsed.
 * Whoever reads the frame takes slot bytes below `headEnd` and piece bytes
 * from `headEnd` on, so a byte changed in the slot (a checksum completed
 * for a capture) wins over its copy in guest memory.
 *
 * Two directions use it:
 *
 * - **From the guest**: the device gathers the headers into the slot and
 *   lists the whole frame as pieces over its transmit buffers. TCP writes
 *   the payload to its socket from the pieces (`pieces`); everything else
 *   that wants contiguous bytes asks for them first (`gather`), a copy the
 *   bulk path never pays.
 * - **To the guest**: the device reserves receive buffers for a frame
 *   before it is built; the producer's payload area is the tail (TCP peeks
 *   into it), its headers go into the slot as always, and the device writes
 *   them in front of the payload when it sends the frame.
 *
 * @module
 */

import { checksumAdd, checksumSwap } from "../packet/checksum.ts";

/** Most pieces one tail may have (one per guest buffer it spans). */
export const TAIL_MAX_PIECES = 64;

const EMPTY = new Uint8Array(0);

/** The pieces of one frame past its slot's bytes; see the module comment. */
export class FrameTail {
  /** Slot offset of the first piece's first byte. */
  at = 0;
  /** Slot offset where the slot's own bytes of the frame end. */
  headEnd = 0;
  /** Pieces listed; 0: the frame is wholly in its slot. */
  count = 0;
  /** Bytes in the pieces. */
  total = 0;
  /** Per piece: its buffer, offset and length. */
  readonly bufs: Uint8Array[] = new Array(TAIL_MAX_PIECES).fill(EMPTY);
  readonly offs: Float64Array = new Float64Array(TAIL_MAX_PIECES);
  readonly lens: Uint32Array = new Uint32Array(TAIL_MAX_PIECES);

  /** Starts an empty list of pieces from slot offset `at`, with the slot's bytes up to `headEnd`. */
  reset(at: number, headEnd: number): void {
    this.at = at;
    this.headEnd = headEnd;
    this.count = 0;
    this.total = 0;
  }

  /** Appends a piece; false (nothing added) if the list is full. */
  add(buf: Uint8Array, off: number, len: number): boolean {
    const k = this.count;
    if (k === TAIL_MAX_PIECES) return false;
    this.bufs[k] = buf;
    this.offs[k] = off;
    this.lens[k] = len;
    this.count = k + 1;
    this.total += len;
    return true;
  }

  /** Slot offset just past the frame's last byte. */
  get end(): number {
    return this.at + this.total;
  }

  /** Keeps the first `len` bytes of the pieces, dropping the rest. */
  truncate(len: number): void {
    if (len >= this.total) return;
    let sum = 0;
    let k = 0;
    while (k < this.count && sum + this.lens[k] < len) sum += this.lens[k++];
    if (k < this.count) {
      this.lens[k] = len - sum;
      k = this.lens[k] > 0 ? k + 1 : k;
    }
    this.count = k;
    this.total = len;
  }

  /**
   * Appends to `bufs/offs/lens[k..max)` the pieces holding the frame's bytes
   * at slot offsets `[from, from + len)` (all at or past {@linkcode at});
   * returns the new count, or -1 if they need more than `max - k` entries.
   */
  pieces(
    from: number,
    len: number,
    bufs: Uint8Array[],
    offs: Float64Array,
    lens: Uint32Array,
    k: number,
    max: number,
  ): number {
    let skip = from - this.at;
    for (let p = 0; p < this.count && len > 0; p++) {
      const l = this.lens[p];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      if (k === max) return -1;
      const n = Math.min(l - skip, len);
      bufs[k] = this.bufs[p];
      offs[k] = this.offs[p] + skip;
      lens[k] = n;
      k++;
      len -= n;
      skip = 0;
    }
    return k;
  }

  /**
   * Copies the frame's bytes past the slot's own (`headEnd` up to `end`)
   * into `slot` at their slot offsets, making the frame whole in its slot;
   * the tail is then empty. `slot` must have room (a slot holds any frame).
   */
  gather(slot: Uint8Array): void {
    let skip = this.headEnd - this.at;
    let to = this.headEnd;
    for (let p = 0; p < this.count; p++) {
      const l = this.lens[p];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const off = this.offs[p] + skip;
      const n = l - skip;
      slot.set(this.bufs[p].subarray(off, off + n), to);
      to += n;
      skip = 0;
    }
    this.count = 0;
    this.total = 0;
    this.at = this.headEnd = to;
  }

  /**
   * Adds the frame's bytes at slot offsets `[from, end)` — slot bytes below
   * `headEnd`, pieces past it — to the running checksum `sum`, `from` taken
   * as an even position.
   */
  checksumAdd(sum: number, slot: Uint8Array, from: number, end: number): number {
    const headEnd = Math.min(this.headEnd, end);
    if (from < headEnd) sum = checksumAdd(sum, slot, from, headEnd - from);
    let pos = Math.max(from, this.headEnd);
    let skip = pos - this.at;
    for (let p = 0; p < this.count && pos < end; p++) {
      const l = this.lens[p];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const n = Math.min(l - skip, end - pos);
      const run = checksumAdd(0, this.bufs[p], this.offs[p] + skip, n);
      sum += (pos - from) & 1 ? checksumSwap(run) : run;
      pos += n;
      skip = 0;
    }
    return sum;
  }

  /**
   * The frame as views for a capture: the slot's bytes from `start`, then
   * the pieces past `headEnd` (views made here: only while capturing).
   */
  views(slot: Uint8Array, start: number): Uint8Array[] {
    const out = [slot.subarray(start, this.headEnd)];
    let skip = this.headEnd - this.at;
    for (let p = 0; p < this.count; p++) {
      const l = this.lens[p];
      if (skip >= l) {
        skip -= l;
        continue;
      }
      const off = this.offs[p] + skip;
      out.push(this.bufs[p].subarray(off, off + l - skip));
      skip = 0;
    }
    return out;
  }
}
