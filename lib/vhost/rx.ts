/**
 * Frames to the guest over vhost-user: each written into the receive
 * ring's buffers behind its virtio-net header, spread over as many chains
 * as it needs when the guest accepted mergeable receive buffers.
 *
 * # Theory of operation
 *
 * What goes into the guest's buffers is one stream of bytes: the 12-byte
 * virtio-net header (`virtio_net_hdr_mrg_rxbuf`: flags, GSO type, header
 * length, GSO size, checksum start and offset, then `num_buffers`), the
 * frame, and zeros up to the Ethernet minimum of 60 bytes. Its length is
 * known before anything is written, so {@linkcode VnetRx.write} first takes
 * chains until their writable room holds it all (with
 * `VIRTIO_NET_F_MRG_RXBUF`; without it, one chain must), then sets
 * `num_buffers` to the number taken, then copies the stream across the
 * chains' buffers wherever they split it — inside the header, inside the
 * frame, inside the padding — and gives each chain back with the bytes it
 * got. Nothing is published here: the caller publishes once per batch and
 * interrupts the guest if it asked (see {@linkcode SplitQueue.publish}).
 *
 * **No room** (the guest has not made enough buffers available): the chains
 * taken so far are held, untouched and not given back, for the next write,
 * and `write` returns false, so the caller keeps the frame and tries again
 * on the guest's next kick, as the tap backend does on EAGAIN. (Rewinding
 * the ring's read position instead would be wrong: a broken chain met on
 * the way has already been given back.) Should the ring change meanwhile,
 * {@linkcode VnetRx.release} gives the held chains back empty.
 *
 * **Reserving** ({@linkcode VnetRx.reserve}): for a frame whose payload a
 * producer will write itself — TCP peeking from its socket straight into
 * the guest's buffers — the chains are taken before the frame exists, for
 * the most it may hold, and the payload's room in them is listed as the
 * frame's tail. {@linkcode VnetRx.writeReserved} later writes what is left
 * of the stream — header, the frame's headers, padding — around the
 * payload already in place, gives back the chains it needed, and keeps the
 * rest held for the next frame. The chains of a receive ring may be given
 * back in any order (no `VIRTIO_F_IN_ORDER`), so a frame reserved early and
 * sent late is no harm; the chains of one frame still go back together, in
 * order, as `num_buffers` requires.
 *
 * @module
 */

import type { FrameTail } from "../tap/tail.ts";
import { DescChain, type SplitQueue } from "./virtqueue.ts";

/** Bytes of the virtio-net header with `num_buffers` (always, with VERSION_1). */
export const VNET_HDR_SIZE = 12;
/** Bytes of the legacy header without `num_buffers` (neither VERSION_1 nor MRG_RXBUF). */
export const VNET_HDR_SIZE_LEGACY = 10;
/** Ethernet frames shorter than this are padded with zeros. */
const ETH_MIN = 60;
/** Most chains one frame may take. */
export const RX_MAX_CHAINS = 1024;

/** What {@linkcode VnetRx.write} did with a frame. */
export const RxResult = {
  /** Written; used entries pushed, to publish with the batch. */
  WRITTEN: 1,
  /** The guest has not made room yet: keep the frame, try again after its kick. */
  NO_ROOM: 0,
  /** It can never fit (one chain without mergeable buffers, or past the chain limit): dropped. */
  DROPPED: -1,
} as const;

/** Counters of the receive path. */
export interface VnetRxStats {
  /** Frames written. */
  frames: number;
  /** Chains those frames took. */
  chains: number;
  /** Writes that found too little room (the frame waits). */
  noRoom: number;
  /** Frames dropped: larger than the ring could ever hold (no mergeable buffers, or past the chain limit). */
  dropTooBig: number;
  /** Chains with device-readable buffers, which a receive ring must not have: given back unused. */
  badChains: number;
  /** Frames reserved in guest buffers (their payload written in place). */
  reserved: number;
  /** Frame bytes copied here from slots (whole frames, and the headers of reserved ones). */
  bytesCopied: number;
  /** Frame bytes a producer wrote in place into reserved buffers (not copied here). */
  bytesInPlace: number;
  /** Reservations refused: too little room, or room split too finely. */
  reserveFailed: number;
  /** Reserved frames dropped because the ring changed before they were sent. */
  dropRevoked: number;
}

/** Per-slot reservation states. */
const RESERVED = 1;
const REVOKED = 2;

/** Writes frames into a receive ring; see the module comment. */
export class VnetRx {
  /** Counters. */
  readonly stats: VnetRxStats = {
    frames: 0,
    chains: 0,
    noRoom: 0,
    dropTooBig: 0,
    badChains: 0,
    reserved: 0,
    bytesCopied: 0,
    bytesInPlace: 0,
    reserveFailed: 0,
    dropRevoked: 0,
  };
  /** The guest accepted VIRTIO_NET_F_MRG_RXBUF. */
  mergeable = true;
  /** Header bytes in front of each frame: {@linkcode VNET_HDR_SIZE}, or the legacy 10. */
  hdrSize: number = VNET_HDR_SIZE;

  readonly #queue: SplitQueue;
  readonly #hdr = new Uint8Array(VNET_HDR_SIZE);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  /** Chains taken from the ring and not used yet (`#held[0..#heldN)`), used first. */
  readonly #held: DescChain[] = [];
  #heldN = 0;
  /** Chain objects not holding a chain. */
  readonly #free: DescChain[] = [];
  /** The chains of the frame being copied. */
  readonly #cur: DescChain[] = [];
  /** Per sending slot: its reservation state, chains and their number. */
  readonly #state: Uint8Array;
  readonly #resv: DescChain[][] = [];
  readonly #resvN: Uint32Array;

  /** Writes into `queue`, for a sender of up to `slots` frames at once (for reservations). */
  constructor(queue: SplitQueue, slots = 256) {
    this.#queue = queue;
    this.#state = new Uint8Array(slots);
    this.#resvN = new Uint32Array(slots);
    for (let i = 0; i < slots; i++) this.#resv.push([]);
  }

  /** The next chain for a frame: a held one, else one from the ring; null if there is none. */
  #obtain(): DescChain | null {
    if (this.#heldN > 0) return this.#held[--this.#heldN];
    const q = this.#queue;
    const c = this.#free.length > 0 ? this.#free.pop()! : new DescChain();
    for (;;) {
      if (!q.pop(c)) {
        if (q.lastError !== null) continue; // a broken chain, given back: the next one
        this.#free.push(c);
        return null;
      }
      if (c.readable === 0) return c;
      // A receive buffer the device may only read: useless, given back as is.
      this.stats.badChains++;
      q.push(c.head, 0);
    }
  }

  /** Keeps `list[from..to)` held for the next frame. */
  #hold(list: DescChain[], from: number, to: number): void {
    for (let k = from; k < to; k++) this.#held[this.#heldN++] = list[k];
  }

  /**
   * Takes chains into `list` until their room holds `total` bytes; returns
   * how many (at least 1), or NO_ROOM (0) or DROPPED (-1) with any taken
   * held again.
   */
  #collect(list: DescChain[], total: number): number {
    let n = 0;
    let room = 0;
    while (room < total) {
      if (n === RX_MAX_CHAINS || (n === 1 && !this.mergeable)) {
        this.#hold(list, 0, n);
        return RxResult.DROPPED;
      }
      const c = this.#obtain();
      if (c === null) {
        this.#hold(list, 0, n);
        return RxResult.NO_ROOM;
      }
      list[n++] = c;
      room += c.writeLen;
    }
    return n;
  }

  /**
   * Writes `frame[off..off+len)` with a header of these fields; returns an
   * {@linkcode RxResult}.
   */
  write(
    frame: Uint8Array,
    off: number,
    len: number,
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
  ): number {
    const total = this.hdrSize + Math.max(len, ETH_MIN);
    const n = this.#collect(this.#cur, total);
    if (n === RxResult.NO_ROOM) {
      this.stats.noRoom++;
      return n;
    }
    if (n === RxResult.DROPPED) {
      this.stats.dropTooBig++; // the chains stay held for the next frame
      return n;
    }
    this.#setHeader(flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset);
    this.#stream(this.#cur, n, total, frame, off, len, len);
    return RxResult.WRITTEN;
  }

  /**
   * Reserves chains for a frame of sending slot `i`: `headLen` bytes of
   * headers to come, then room for `max` bytes of payload, which are
   * listed as pieces of `tail` (already reset by the caller). False, with
   * nothing reserved, if the guest has not made room or the payload's room
   * needs more pieces than a tail holds.
   */
  reserve(i: number, headLen: number, max: number, tail: FrameTail): boolean {
    const list = this.#resv[i];
    const hdrSize = this.hdrSize;
    const n = this.#collect(list, hdrSize + Math.max(headLen + max, ETH_MIN));
    if (n <= 0) { // NO_ROOM (0) or DROPPED
      this.stats.reserveFailed++;
      return false;
    }
    let skip = hdrSize + headLen;
    let left = max;
    for (let k = 0; k < n && left > 0; k++) {
      const c = list[k];
      for (let b = 0; b < c.count && left > 0; b++) {
        const l = c.lens[b];
        if (skip >= l) {
          skip -= l;
          continue;
        }
        const take = Math.min(l - skip, left);
        if (!tail.add(c.bufs[b], c.offs[b] + skip, take)) {
          this.#hold(list, 0, n);
          tail.reset(tail.at, tail.headEnd);
          this.stats.reserveFailed++;
          return false;
        }
        left -= take;
        skip = 0;
      }
    }
    this.#state[i] = RESERVED;
    this.#resvN[i] = n;
    this.stats.reserved++;
    return true;
  }

  /** True if slot `i` is one this writer can reserve for. */
  canReserve(i: number): boolean {
    return i < this.#state.length;
  }

  /** True if slot `i`'s frame was reserved (send it with {@linkcode writeReserved}). */
  reserved(i: number): boolean {
    return i < this.#state.length && this.#state[i] !== 0;
  }

  /** Gives slot `i`'s reservation back to the held chains (the frame is not sent). */
  unreserve(i: number): void {
    if (i >= this.#state.length) return;
    if (this.#state[i] === RESERVED) this.#hold(this.#resv[i], 0, this.#resvN[i]);
    this.#state[i] = 0;
    this.#resvN[i] = 0;
  }

  /**
   * Sends the frame reserved for slot `i`: its first `headLen` bytes from
   * `frame[off..]`, the rest already in the reserved buffers, `len` in all,
   * with a header of these fields. Returns WRITTEN, or DROPPED if the
   * reservation was given back when the ring changed.
   */
  writeReserved(
    i: number,
    frame: Uint8Array,
    off: number,
    headLen: number,
    len: number,
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
  ): number {
    const state = this.#state[i];
    this.#state[i] = 0;
    if (state !== RESERVED) {
      this.stats.dropRevoked++;
      return RxResult.DROPPED;
    }
    const list = this.#resv[i];
    const n = this.#resvN[i];
    this.#resvN[i] = 0;
    const total = this.hdrSize + Math.max(len, ETH_MIN);
    // The payload may have come short of what was reserved: fewer chains.
    let used = 0;
    for (let room = 0; room < total; used++) room += list[used].writeLen;
    this.#hold(list, used, n);
    this.#setHeader(flags, gsoType, hdrLen, gsoSize, csumStart, csumOffset);
    this.#stream(list, used, total, frame, off, headLen, len);
    return RxResult.WRITTEN;
  }

  #setHeader(
    flags: number,
    gsoType: number,
    hdrLen: number,
    gsoSize: number,
    csumStart: number,
    csumOffset: number,
  ): void {
    const h = this.#hdrView;
    h.setUint8(0, flags);
    h.setUint8(1, gsoType);
    h.setUint16(2, hdrLen, true);
    h.setUint16(4, gsoSize, true);
    h.setUint16(6, csumStart, true);
    h.setUint16(8, csumOffset, true);
  }

  /**
   * Writes the stream (header, the frame's first `headLen` bytes from
   * `frame[off..]`, bytes up to `len` left as they are, zeros up to
   * `total`) across `list[0..n)`, with `num_buffers` = n, and gives each
   * chain back with the bytes it got.
   */
  #stream(
    list: DescChain[],
    n: number,
    total: number,
    frame: Uint8Array,
    off: number,
    headLen: number,
    len: number,
  ): void {
    const q = this.#queue;
    const hdrSize = this.hdrSize;
    this.#hdrView.setUint16(10, n, true); // num_buffers; not copied with the legacy header
    let pos = 0;
    for (let k = 0; k < n; k++) {
      const c = list[k];
      let wrote = 0;
      for (let b = 0; b < c.count && pos < total; b++) {
        const m = Math.min(c.lens[b], total - pos);
        this.#copy(c.bufs[b], c.offs[b], pos, m, hdrSize, frame, off, headLen, len);
        pos += m;
        wrote += m;
      }
      q.push(c.head, wrote);
      c.reset();
      this.#free.push(c);
    }
    const st = this.stats;
    st.frames++;
    st.chains += n;
    st.bytesCopied += headLen;
    st.bytesInPlace += len - headLen;
  }

  /**
   * Writes stream bytes `[pos, pos+n)` to `dst[at..]`: header, the frame's
   * first `headLen` bytes, nothing for the rest of its `len` (in place
   * already), zeros past it.
   */
  #copy(
    dst: Uint8Array,
    at: number,
    pos: number,
    n: number,
    hdrSize: number,
    frame: Uint8Array,
    off: number,
    headLen: number,
    len: number,
  ): void {
    const end = pos + n;
    if (pos < hdrSize) {
      // At most 12 bytes: a loop, not a subarray view per copy.
      const hdrEnd = Math.min(end, hdrSize);
      while (pos < hdrEnd) dst[at++] = this.#hdr[pos++];
    }
    const headEnd = hdrSize + headLen;
    if (pos < end && pos < headEnd) {
      const k = Math.min(end, headEnd) - pos;
      const from = off + pos - hdrSize;
      if (k <= 32) {
        for (let j = 0; j < k; j++) dst[at + j] = frame[from + j];
      } else {
        dst.set(frame.subarray(from, from + k), at);
      }
      at += k;
      pos += k;
    }
    const frameEnd = hdrSize + len;
    if (pos < end && pos < frameEnd) {
      const k = Math.min(end, frameEnd) - pos;
      at += k;
      pos += k;
    }
    if (pos < end) dst.fill(0, at, at + end - pos);
  }

  /**
   * Gives every chain taken and not used — held, or reserved for a frame
   * not sent yet — back to the guest unused (length 0), before the ring
   * stops or its memory is unmapped: such a chain points into it, and one
   * never given back would be lost to the guest's receive ring for good.
   * Reserved frames are dropped when sent. Returns how many chains there
   * were; the caller publishes.
   */
  release(): number {
    const q = this.#queue;
    let count = 0;
    const back = (c: DescChain) => {
      q.push(c.head, 0);
      c.reset();
      this.#free.push(c);
      count++;
    };
    for (let k = 0; k < this.#heldN; k++) back(this.#held[k]);
    this.#heldN = 0;
    for (let i = 0; i < this.#state.length; i++) {
      if (this.#state[i] !== RESERVED) continue;
      for (let k = 0; k < this.#resvN[i]; k++) back(this.#resv[i][k]);
      this.#resvN[i] = 0;
      this.#state[i] = REVOKED;
    }
    return count;
  }
}
