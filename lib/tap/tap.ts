/**
 * The guest-facing side: frame buffers, the backend interface, and the one
 * send path every protocol uses to reach the guest.
 *
 * # Theory of operation
 *
 * **Frames live in slots.** A {@linkcode FrameBatch} is a fixed set of
 * preallocated buffers ("slots"), each big enough for the largest frame plus
 * {@linkcode TAP_HEADROOM} bytes in front. A frame always starts at offset
 * `TAP_HEADROOM` of its slot; the headroom belongs to the backend, which
 * writes its own per-frame header there (the QEMU stream socket's 4-byte
 * length, a virtio-net header) so a frame is never copied to prepend one.
 * Lengths are explicit: `lens[i]` is frame i's Ethernet length, never
 * derived from the slot's size.
 *
 * **One send path.** Protocols do not write to the guest. They take the next
 * slot with {@linkcode TapSender.next}, build the frame in place and
 * {@linkcode TapSender.commit} its length. The reactor flushes once per loop
 * turn ({@linkcode TapSender.flush}), so all frames of a turn — ARP replies,
 * TCP segments, UDP datagrams — go to the backend in one batch, and a full
 * batch flushes early. `flush` is where the three things every frame needs
 * happen, once: padding to the Ethernet minimum, the backend send, and the
 * pcap tee of exactly the frames that went out.
 *
 * **Whole frames only.** A backend's `send` returns how many *whole* frames it
 * delivered and never leaves a frame half-written (on a stream socket it
 * completes a frame it started; a tap device takes frames atomically). Frames
 * it could not deliver (the guest is not reading: EAGAIN) are dropped and
 * counted; the guest's own retransmission, or TCP's rewind, recovers. Callers
 * that must know — TCP rewinding its sequence — use the return value of
 * `flush`.
 *
 * @module
 */

import { checksumFill, checksumFold } from "../packet/checksum.ts";
import { set16 } from "../packet/wire.ts";
import { pcapActive, pcapFrame, pcapNow } from "../pcap.ts";
import { addrOf, IovecArray } from "../sys/mod.ts";

/** Bytes reserved in front of every frame for a backend's own header. */
export const TAP_HEADROOM = 16;
/** Ethernet frames shorter than this (without FCS) are padded with zeros. */
export const ETH_MIN_FRAME = 60;
/** Largest Ethernet frame: a 65535-byte IP packet (MTU 65520 plus slack) and its header. */
export const ETH_MAX_FRAME = 65535 + 14;
/** Slot size for full-size frames. */
export const TAP_SLOT_SIZE = TAP_HEADROOM + ETH_MAX_FRAME + 1;

/** A fixed set of frame slots with explicit lengths; see the module comment. */
export class FrameBatch {
  /** The slots; frame i starts at `TAP_HEADROOM` of `slots[i]`. */
  readonly slots: Uint8Array[];
  /** Ethernet length of each frame. */
  readonly lens: Uint32Array;
  /** One iovec per slot pointing at its frame (a backend sets lengths before I/O). */
  readonly iov: IovecArray;
  /** Address of each slot's first byte, for backends that build their own iovecs. */
  readonly addrs: Float64Array;
  /**
   * Per frame, 0 or where its TCP/UDP checksum was left partial (holding
   * only the pseudo-header sum): the L4 header's offset in the frame
   * (`csumStart`) and the checksum field's offset in that header
   * (`csumOffset`). Received: the guest's kernel left it so (vnet header
   * NEEDS_CSUM) and it must not be verified. Sent: tapir left it so, and
   * the guest's kernel takes it as checked.
   */
  readonly csumStart: Uint16Array;
  /** See {@linkcode csumStart}. */
  readonly csumOffset: Uint8Array;
  /** Frames in use, from slot 0. */
  count = 0;

  /** Allocates `capacity` slots of `slotSize` bytes each. */
  constructor(capacity: number, slotSize: number = TAP_SLOT_SIZE) {
    // One backing buffer: slots are adjacent, so a batch costs one allocation.
    const backing = new Uint8Array(capacity * slotSize);
    this.slots = [];
    this.lens = new Uint32Array(capacity);
    this.iov = new IovecArray(capacity);
    this.addrs = new Float64Array(capacity);
    this.csumStart = new Uint16Array(capacity);
    this.csumOffset = new Uint8Array(capacity);
    for (let i = 0; i < capacity; i++) {
      const slot = backing.subarray(i * slotSize, (i + 1) * slotSize);
      this.slots.push(slot);
      this.addrs[i] = addrOf(slot);
    }
  }

  /** Number of slots. */
  get capacity(): number {
    return this.slots.length;
  }

  /** Bytes a frame may occupy in a slot. */
  get maxFrame(): number {
    return this.slots[0].length - TAP_HEADROOM;
  }
}

/** The guest side of tapir: a tap device, a QEMU socket, or vhost-user. */
export interface TapBackend {
  /** What it is, for logs ("tap eth0", "qemu socket"). */
  readonly name: string;
  /** The fd the reactor watches for incoming frames (EPOLLIN). */
  readonly fd: number;
  /**
   * True if frames may carry a partial TCP/UDP checksum in both directions
   * (vnet header NEEDS_CSUM): the guest's kernel treats ours as checked, and
   * tapir must not verify the guest's.
   */
  readonly checksumOffload: boolean;
  /**
   * Reads frames from the guest into `batch` slots from 0, up to its
   * capacity, without blocking; sets `lens` and `count`. Returns the number
   * of frames, or -errno on a fatal error (the guest is gone).
   */
  receive(batch: FrameBatch): number;
  /**
   * Sends frames `0..count-1` of `batch` in order, without blocking, and
   * returns how many whole frames were delivered. Never leaves a frame
   * partly sent.
   */
  send(batch: FrameBatch, count: number): number;
}

/** Counters of the send path. */
export interface TapSendStats {
  /** Frames delivered to the guest. */
  framesOut: number;
  /** Bytes of those frames (Ethernet length, before padding). */
  bytesOut: number;
  /** Frames dropped because the backend would not take them. */
  dropped: number;
  /** Flushes (backend send calls). */
  flushes: number;
}

/** The one send path; see the module comment. */
export class TapSender {
  /** Counters. */
  readonly stats: TapSendStats = { framesOut: 0, bytesOut: 0, dropped: 0, flushes: 0 };
  readonly #backend: TapBackend;
  readonly #batch: FrameBatch;

  /** Sends through `backend`, batching up to `capacity` frames of up to `slotSize` bytes. */
  constructor(backend: TapBackend, capacity = 128, slotSize: number = TAP_SLOT_SIZE) {
    this.#backend = backend;
    this.#batch = new FrameBatch(capacity, slotSize);
  }

  /** Frames waiting for the next flush. */
  get pending(): number {
    return this.#batch.count;
  }

  /** The largest Ethernet frame a slot holds. */
  get maxFrame(): number {
    return this.#batch.maxFrame;
  }

  /**
   * False when TCP/UDP checksums toward the guest may be left partial (see
   * {@linkcode commitPartial}): the backend offloads them and no capture is
   * running (a capture should show correct checksums).
   */
  checksumsNeeded(): boolean {
    return !this.#backend.checksumOffload || pcapActive();
  }

  /**
   * Like {@linkcode commit}, for a TCP/UDP frame whose checksum field (at
   * `field` in the L4 header at slot offset `l4`) is still 0: fills the
   * checksum from `pseudoSum` over the L4 header and payload, or, where
   * {@linkcode checksumsNeeded} says so, leaves it partial for the guest's
   * kernel (the folded `pseudoSum` in the field, as offload expects, and
   * where it is). A computed 0 is sent as 0xffff, the same value in ones'
   * complement and the only one UDP allows.
   */
  commitChecksummed(len: number, l4: number, field: number, pseudoSum: number): void {
    const b = this.#batch;
    const slot = b.slots[b.count];
    if (this.checksumsNeeded()) {
      const at = l4 + field;
      if (checksumFill(slot, l4, TAP_HEADROOM + len - l4, at, pseudoSum) === 0) {
        set16(slot, at, 0xffff);
      }
      this.commit(len);
      return;
    }
    set16(slot, l4 + field, checksumFold(pseudoSum));
    this.commit(len);
    b.csumStart[b.count - 1] = l4 - TAP_HEADROOM;
    b.csumOffset[b.count - 1] = field;
  }

  /**
   * The slot for the next frame: build it at offset {@linkcode TAP_HEADROOM},
   * then {@linkcode commit} its length (or do nothing to abandon it). Flushes
   * first if the batch is full.
   */
  next(): Uint8Array {
    if (this.#batch.count === this.#batch.capacity) this.flush();
    return this.#batch.slots[this.#batch.count];
  }

  /**
   * Free slots before the batch is full; flushes first if there are none, so
   * the answer is at least 1. For callers filling several slots in one go
   * (one `recvmsg` peeking into the payload areas of k frames).
   */
  room(): number {
    if (this.#batch.count === this.#batch.capacity) this.flush();
    return this.#batch.capacity - this.#batch.count;
  }

  /**
   * The slot `k` places after the next one (`slotAhead(0)` is what
   * {@linkcode next} returns). `k` must be below {@linkcode room}. Commit the
   * slots in order: each {@linkcode commit} takes the next one.
   */
  slotAhead(k: number): Uint8Array {
    return this.#batch.slots[this.#batch.count + k];
  }

  /** Queues the frame just built in the slot from {@linkcode next}: `len` Ethernet bytes. */
  commit(len: number): void {
    const b = this.#batch;
    if (len > b.maxFrame) throw new RangeError(`frame of ${len} bytes exceeds ${b.maxFrame}`);
    b.csumOffset[b.count] = 0;
    b.lens[b.count++] = len;
  }

  /**
   * Sends every queued frame: pads short ones, hands the batch to the backend
   * in one call, records the frames that went out in the pcap file, counts
   * the rest as dropped. Returns the number of whole frames delivered.
   */
  flush(): number {
    const b = this.#batch;
    const n = b.count;
    if (n === 0) return 0;
    b.count = 0;
    for (let i = 0; i < n; i++) {
      const len = b.lens[i];
      if (len < ETH_MIN_FRAME) b.slots[i].fill(0, TAP_HEADROOM + len, TAP_HEADROOM + ETH_MIN_FRAME);
    }
    const sent = this.#backend.send(b, n);
    this.stats.flushes++;
    this.stats.framesOut += sent;
    this.stats.dropped += n - sent;
    let bytes = 0;
    for (let i = 0; i < sent; i++) bytes += b.lens[i];
    this.stats.bytesOut += bytes;
    if (pcapActive()) {
      const ts = pcapNow();
      for (let i = 0; i < sent; i++) pcapFrame(b.slots[i], b.lens[i], ts, TAP_HEADROOM);
    }
    return sent;
  }
}

/** The length a frame goes out with: padded to the Ethernet minimum. */
export function tapWireLen(len: number): number {
  return len < ETH_MIN_FRAME ? ETH_MIN_FRAME : len;
}
