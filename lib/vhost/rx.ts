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
 * @module
 */

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
  tooBig: number;
  /** Chains with device-readable buffers, which a receive ring must not have: given back unused. */
  badChains: number;
}

/** Writes frames into a receive ring; see the module comment. */
export class VnetRx {
  /** Counters. */
  readonly stats: VnetRxStats = { frames: 0, chains: 0, noRoom: 0, tooBig: 0, badChains: 0 };
  /** The guest accepted VIRTIO_NET_F_MRG_RXBUF. */
  mergeable = true;
  /** Header bytes in front of each frame: {@linkcode VNET_HDR_SIZE}, or the legacy 10. */
  hdrSize: number = VNET_HDR_SIZE;

  readonly #queue: SplitQueue;
  readonly #hdr = new Uint8Array(VNET_HDR_SIZE);
  readonly #hdrView = new DataView(this.#hdr.buffer);
  readonly #chains: DescChain[] = [];
  /** Chains taken from the ring and not used yet (`#chains[0..#held)`). */
  #held = 0;

  constructor(queue: SplitQueue) {
    this.#queue = queue;
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
    const q = this.#queue;
    const hdrSize = this.hdrSize;
    const total = hdrSize + Math.max(len, ETH_MIN);
    let taken = 0;
    let room = 0;
    while (room < total) {
      if (taken === RX_MAX_CHAINS || (taken === 1 && !this.mergeable)) {
        this.stats.tooBig++; // the chains stay held for the next frame
        return RxResult.DROPPED;
      }
      if (taken === this.#held) {
        const c = this.#chain(taken);
        if (!q.pop(c)) {
          if (q.lastError !== null) continue; // a broken chain, given back: the next one
          this.stats.noRoom++;
          return RxResult.NO_ROOM;
        }
        if (c.readable > 0) {
          // A receive buffer the device may only read: useless, given back as is.
          this.stats.badChains++;
          q.push(c.head, 0);
          continue;
        }
        this.#held++;
      }
      room += this.#chains[taken].writeLen;
      taken++;
    }
    const h = this.#hdrView;
    h.setUint8(0, flags);
    h.setUint8(1, gsoType);
    h.setUint16(2, hdrLen, true);
    h.setUint16(4, gsoSize, true);
    h.setUint16(6, csumStart, true);
    h.setUint16(8, csumOffset, true);
    h.setUint16(10, taken, true); // num_buffers; not copied with the legacy header
    // Copy the stream header + frame + padding across the chains.
    let pos = 0;
    for (let k = 0; k < taken; k++) {
      const c = this.#chains[k];
      let wrote = 0;
      for (let b = 0; b < c.count && pos < total; b++) {
        const n = Math.min(c.lens[b], total - pos);
        this.#copy(c.bufs[b], c.offs[b], pos, n, hdrSize, frame, off, len);
        pos += n;
        wrote += n;
      }
      q.push(c.head, wrote);
    }
    // Chains held past those used move to the front for the next frame.
    const chains = this.#chains;
    for (let k = taken; k < this.#held; k++) {
      const spare = chains[k - taken];
      chains[k - taken] = chains[k];
      chains[k] = spare;
    }
    this.#held -= taken;
    this.stats.frames++;
    this.stats.chains += taken;
    return RxResult.WRITTEN;
  }

  /** Writes stream bytes `[pos, pos+n)` (header, frame, zeros) to `dst[at..]`. */
  #copy(
    dst: Uint8Array,
    at: number,
    pos: number,
    n: number,
    hdrSize: number,
    frame: Uint8Array,
    off: number,
    len: number,
  ): void {
    const end = pos + n;
    if (pos < hdrSize) {
      // At most 12 bytes: a loop, not a subarray view per copy.
      const hdrEnd = Math.min(end, hdrSize);
      while (pos < hdrEnd) dst[at++] = this.#hdr[pos++];
    }
    const frameEnd = hdrSize + len;
    if (pos < end && pos < frameEnd) {
      const k = Math.min(end, frameEnd) - pos;
      const from = off + pos - hdrSize;
      dst.set(frame.subarray(from, from + k), at);
      at += k;
      pos += k;
    }
    if (pos < end) dst.fill(0, at, at + end - pos);
  }

  /**
   * Gives the chains held for a frame that did not fit back to the guest
   * unused (length 0), before the ring stops or its memory is unmapped: a
   * held chain points into it, and one never given back would be lost to
   * the guest's receive ring for good. Returns how many there were; the
   * caller publishes.
   */
  release(): number {
    const n = this.#held;
    for (let k = 0; k < n; k++) {
      this.#queue.push(this.#chains[k].head, 0);
      this.#chains[k].reset();
    }
    this.#held = 0;
    return n;
  }

  #chain(k: number): DescChain {
    while (this.#chains.length <= k) this.#chains.push(new DescChain());
    return this.#chains[k];
  }
}
