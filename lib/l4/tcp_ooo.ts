/**
 * Out-of-order bytes from the guest: what arrived past a hole, kept until
 * the hole is filled.
 *
 * # Theory of operation
 *
 * **Why.** When a frame from the guest is lost before tapir reads it (a tap
 * device drops frames when its queue is full), every later segment lies
 * past a hole. Dropping them all makes tapir a go-back-N receiver, and a
 * Linux guest without SACK recovers from that badly: after its
 * retransmission timeout it marks everything in flight lost, resends some
 * of it out of order, and never resends what it sent once in that episode,
 * so it waits for the next, backed-off timeout — measured, a 1 GiB upload
 * at MTU 1500 without offloads spent minutes in timeouts of up to 28 s.
 * Keeping those bytes means the retransmission that fills the hole is
 * acknowledged together with everything held behind it, as by any TCP
 * receiver.
 *
 * **How.** A connection gets a queue only when it first needs one. Bytes
 * are stored at their place in sequence space, `buf[seq - base]`, and a
 * short sorted list of disjoint ranges says which are present (a segment
 * overlapping held bytes merges with them; a segment that would need more
 * ranges than {@linkcode TCP_OOO_MAX_RANGES}, or lies past the buffer, is
 * not kept: the guest sends it again). When in-order data reaches a held
 * range, TCP writes the range straight from `buf` behind that data in the
 * same `sendmsg` ({@linkcode TcpOoo.heldFrom}), then {@linkcode
 * TcpOoo.advance} forgets what was taken, moving what is left to the front.
 *
 * **Bounds.** Each queue is {@linkcode TCP_OOO_SIZE} bytes, and all queues
 * together at most {@linkcode TCP_OOO_TOTAL}: a guest cannot make tapir
 * hold more than that, however many connections it opens. A queue is
 * released as soon as it is empty.
 *
 * @module
 */

import { seqAdd, seqDiff, seqGt, seqLe, seqLt } from "./seq.ts";

/** Bytes one connection may hold past a hole. */
export const TCP_OOO_SIZE = 1 << 20;
/** Bytes all connections may hold together. */
export const TCP_OOO_TOTAL = 32 << 20;
/** Disjoint ranges one queue tracks. */
export const TCP_OOO_MAX_RANGES = 16;

let allocated = 0;

/** Bytes held in queues now (for tests and counters). */
export function tcpOooAllocated(): number {
  return allocated;
}

/** One connection's out-of-order bytes; see the module comment. */
export class TcpOoo {
  /** Sequence number of `buf[0]`. */
  base: number;
  /** The bytes, at their place from `base`. */
  readonly buf: Uint8Array;
  /** Ranges held, sorted, disjoint and not touching: `[starts[i], ends[i])` as sequence numbers. */
  readonly starts: Int32Array = new Int32Array(TCP_OOO_MAX_RANGES);
  readonly ends: Int32Array = new Int32Array(TCP_OOO_MAX_RANGES);
  /** Ranges in use. */
  count = 0;

  private constructor(base: number) {
    this.base = base;
    this.buf = new Uint8Array(TCP_OOO_SIZE);
    allocated += TCP_OOO_SIZE;
  }

  /** A queue for bytes after `base` (the next byte expected), or null if the budget is spent. */
  static create(base: number): TcpOoo | null {
    if (allocated + TCP_OOO_SIZE > TCP_OOO_TOTAL) return null;
    return new TcpOoo(base);
  }

  /** Gives the queue's bytes back to the budget; the queue must not be used after. */
  release(): void {
    allocated -= TCP_OOO_SIZE;
    this.count = 0;
  }

  /** True when nothing is held. */
  get empty(): boolean {
    return this.count === 0;
  }

  /**
   * Keeps `len` bytes with sequence numbers from `seq`, found in the pieces
   * `bufs[i][offs[i]..+lens[i])` for `first <= i < end`. Returns false, with
   * nothing changed, if they do not fit (past the buffer, or more ranges
   * than tracked).
   */
  store(
    seq: number,
    len: number,
    bufs: readonly Uint8Array[],
    offs: Float64Array,
    lens: Uint32Array,
    first: number,
    end: number,
  ): boolean {
    if (len === 0) return true;
    const at = seqDiff(seq, this.base);
    if (at < 0 || at + len > this.buf.length) return false;
    const segEnd = seqAdd(seq, len);
    // Ranges the new one overlaps or touches: [lo, hi).
    let lo = 0;
    while (lo < this.count && seqLt(this.ends[lo], seq)) lo++;
    let hi = lo;
    while (hi < this.count && seqLe(this.starts[hi], segEnd)) hi++;
    if (hi === lo && this.count === TCP_OOO_MAX_RANGES) return false;
    let pos = at;
    for (let i = first; i < end; i++) {
      const n = lens[i];
      if (n <= 0) continue;
      this.buf.set(bufs[i].subarray(offs[i], offs[i] + n), pos);
      pos += n;
    }
    let start = seq;
    let stop = segEnd;
    if (hi > lo) {
      if (seqLt(this.starts[lo], start)) start = this.starts[lo];
      if (seqGt(this.ends[hi - 1], stop)) stop = this.ends[hi - 1];
    }
    // Replace ranges lo..hi-1 with the one merged range.
    const remove = hi - lo;
    if (remove !== 1) {
      const shift = 1 - remove;
      if (shift > 0) {
        for (let i = this.count - 1; i >= hi; i--) {
          this.starts[i + shift] = this.starts[i];
          this.ends[i + shift] = this.ends[i];
        }
      } else {
        for (let i = hi; i < this.count; i++) {
          this.starts[i + shift] = this.starts[i];
          this.ends[i + shift] = this.ends[i];
        }
      }
      this.count += shift;
    }
    this.starts[lo] = start;
    this.ends[lo] = stop;
    return true;
  }

  /**
   * Held bytes that continue the stream at `seq`: their count (0 if none),
   * found at `buf[seq - base ..]`. A range that starts at or before `seq`
   * and ends after it counts from `seq`.
   */
  heldFrom(seq: number): number {
    if (this.count === 0) return 0;
    const s = this.starts[0];
    const e = this.ends[0];
    if (seqGt(s, seq) || seqLe(e, seq)) return 0;
    return seqDiff(e, seq);
  }

  /** Offset in `buf` of sequence number `seq`. */
  offsetOf(seq: number): number {
    return seqDiff(seq, this.base);
  }

  /** Forgets every byte before `seq` (taken in order) and moves the rest to the front. */
  advance(seq: number): void {
    let drop = 0;
    while (drop < this.count && seqLe(this.ends[drop], seq)) drop++;
    if (drop > 0) {
      for (let i = drop; i < this.count; i++) {
        this.starts[i - drop] = this.starts[i];
        this.ends[i - drop] = this.ends[i];
      }
      this.count -= drop;
    }
    if (this.count > 0 && seqLt(this.starts[0], seq)) this.starts[0] = seq;
    const shift = seqDiff(seq, this.base);
    if (shift <= 0) return;
    if (this.count > 0) {
      const from = seqDiff(this.starts[0], this.base);
      const to = seqDiff(this.ends[this.count - 1], this.base);
      this.buf.copyWithin(from - shift, from, to);
    }
    this.base = seq | 0;
  }
}
