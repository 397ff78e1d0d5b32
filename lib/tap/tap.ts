/**
 * The guest-facing side: frame buffers with their descriptors, the backend
 * interface, and the one send path every protocol uses to reach the guest.
 *
 * # Theory of operation
 *
 * **Frames live in slots.** A {@linkcode FrameBatch} is a fixed set of
 * preallocated buffers ("slots"), each big enough for the largest frame plus
 * {@linkcode TAP_HEADROOM} bytes in front. A frame always starts at offset
 * `TAP_HEADROOM` of its slot; the headroom belongs to the backend, which
 * writes its own per-frame header there (the QEMU stream socket's 4-byte
 * length, a virtio-net header) so a frame is never copied to prepend one.
 *
 * **Each frame carries a descriptor**: its Ethernet length (explicit, never
 * derived from the slot's size) and the fields of a virtio-net header —
 * flags (checksum left partial, or already valid), GSO type and size,
 * header length, checksum start and offset. The descriptor is the one
 * place offload metadata lives, in both directions: a backend that reads a
 * vnet header fills it, one that writes a vnet header is built from it, and
 * a backend without one (the QEMU stream socket) never receives a frame
 * that needs it — producers ask {@linkcode TapSender.gsoTcp} and
 * {@linkcode TapSender.checksumOffload} before they build one.
 *
 * **A producer commits the slot it filled.** {@linkcode TapSender.take}
 * hands out the index of a free slot; the producer builds its frame there
 * and commits that index ({@linkcode TapSender.commit} and its variants),
 * or never commits it to abandon it. Frames go out in commit order, so one
 * producer may hold several slots at once (a peek into k payload areas, a
 * `recvmmsg` into k datagrams) and drop any of them without moving the
 * others.
 *
 * **Payload in guest memory.** Where the backend lends the guest's own
 * buffers (vhost-user), a producer that reads a payload from a socket asks
 * {@linkcode TapSender.payloadIov} where to put it: into buffers the
 * backend reserved for the frame, which become the frame's tail
 * (`tail.ts`), or, without a reservation, into the slot. The headers are
 * built in the slot either way; the backend writes them in front of the
 * payload in place. Checksums and captures read a frame through its tail.
 *
 * **One send path.** The reactor flushes once per loop turn
 * ({@linkcode TapSender.flush}), so all frames of a turn — ARP replies, TCP
 * segments, UDP datagrams — go to the backend in one batch, and a full
 * batch flushes early. `flush` is where the things every frame needs happen,
 * once: padding to the Ethernet minimum, the backend send, and the pcap tee
 * of exactly the frames that went out (a checksum left partial is completed
 * first, so a capture shows real checksums, a GSO frame as one record).
 *
 * **Whole frames only, and undelivered frames are reported.** A backend's
 * `send` returns how many *whole* frames it delivered and never leaves a
 * frame half-written. Frames it could not deliver are counted; if it stopped
 * because the guest is not reading (EAGAIN), each one a producer marked with
 * {@linkcode TapSender.setOwner} is reported back to it
 * ({@linkcode TapSender.onUndelivered}): TCP rewinds its sequence to the
 * first undelivered byte at once instead of waiting for the guest to time
 * out. {@linkcode TapSender.blocked} then tells the reactor to wait until
 * the backend is writable and let the producers resume.
 *
 * @module
 */

import {
  checksumComplete,
  checksumFill,
  checksumFinish,
  checksumFold,
} from "../packet/checksum.ts";
import { get16, set16 } from "../packet/wire.ts";
import { pcapActive, pcapFrame, pcapNow, type PcapTimestamp } from "../pcap.ts";
import { addrOf, IovecArray, VNET_HDR_LEN } from "../sys/mod.ts";
import { FrameTail, TAIL_MAX_PIECES } from "./tail.ts";

/** Bytes reserved in front of every frame for a backend's own header. */
export const TAP_HEADROOM = 16;
/** Ethernet frames shorter than this (without FCS) are padded with zeros. */
export const ETH_MIN_FRAME = 60;
/** Largest Ethernet frame: a 65535-byte IP packet (MTU 65520 plus slack) and its header. */
export const ETH_MAX_FRAME = 65535 + 14;
/** Slot size for full-size frames. */
export const TAP_SLOT_SIZE = TAP_HEADROOM + ETH_MAX_FRAME + 1;

/** virtio-net header flags (`VIRTIO_NET_HDR_F_*`). */
export const VnetFlag = {
  /** The TCP/UDP checksum holds only the pseudo-header sum; fill it from `csumStart`. */
  NEEDS_CSUM: 1,
  /** The checksum was verified already. */
  DATA_VALID: 2,
} as const;

/** virtio-net GSO types (`VIRTIO_NET_HDR_GSO_*`). */
export const GsoType = {
  NONE: 0,
  TCPV4: 1,
  UDP: 3,
  TCPV6: 4,
  UDP_L4: 5,
  /** Flag: the segments carry ECN's CWR. */
  ECN: 0x80,
} as const;

export { VNET_HDR_LEN };
/** Offsets of its fields (16-bit ones little-endian: virtio 1.x, or a legacy header on LE hosts). */
const VNET_FLAGS = 0;
const VNET_GSO_TYPE = 1;
const VNET_HDR_LEN_AT = 2;
const VNET_GSO_SIZE = 4;
const VNET_CSUM_START = 6;
const VNET_CSUM_OFFSET = 8;

/** A fixed set of frame slots, each with its descriptor; see the module comment. */
export class FrameBatch {
  /** The slots; frame i starts at `TAP_HEADROOM` of `slots[i]`. */
  readonly slots: Uint8Array[];
  /** Ethernet length of each frame. */
  readonly lens: Uint32Array;
  /** Per frame: {@linkcode VnetFlag} bits. */
  readonly vnetFlags: Uint8Array;
  /** Per frame: {@linkcode GsoType} (NONE for a plain frame). */
  readonly gsoType: Uint8Array;
  /** Per frame with a GSO type: the payload bytes of each segment it stands for. */
  readonly gsoSize: Uint16Array;
  /** Per GSO frame: bytes of Ethernet, IP and L4 headers. */
  readonly hdrLen: Uint16Array;
  /**
   * Per frame with NEEDS_CSUM: where its checksum was left partial —
   * the L4 header's offset in the frame (`csumStart`) and the checksum
   * field's offset in that header (`csumOffset`).
   */
  readonly csumStart: Uint16Array;
  /** See {@linkcode csumStart}. */
  readonly csumOffset: Uint16Array;
  /**
   * Frames to send, as slot indices in commit order (`order[0..count)`).
   * Received frames are in slots `0..count-1` and `order` is unused.
   */
  readonly order: Uint16Array;
  /** Frames in the batch: received, or committed for sending. */
  count = 0;
  /** One iovec per slot (a backend sets them before I/O). */
  readonly iov: IovecArray;
  /** Address of each slot's first byte, for backends that build their own iovecs. */
  readonly addrs: Float64Array;
  /**
   * Per frame: the part of it in guest memory (`tail.ts`); a frame whose
   * tail has no pieces is wholly in its slot. Only vhost-user makes tails.
   */
  readonly tails: FrameTail[];
  /** Every slot, adjacent: slot i is `backing[i * slotSize ..]`. */
  readonly backing: Uint8Array;
  /** Bytes per slot. */
  readonly slotSize: number;

  /** Allocates `capacity` slots of `slotSize` bytes each. */
  constructor(capacity: number, slotSize: number = TAP_SLOT_SIZE) {
    // One backing buffer: slots are adjacent, so a batch costs one allocation.
    const backing = new Uint8Array(capacity * slotSize);
    this.backing = backing;
    this.slotSize = slotSize;
    this.slots = [];
    this.lens = new Uint32Array(capacity);
    this.vnetFlags = new Uint8Array(capacity);
    this.gsoType = new Uint8Array(capacity);
    this.gsoSize = new Uint16Array(capacity);
    this.hdrLen = new Uint16Array(capacity);
    this.csumStart = new Uint16Array(capacity);
    this.csumOffset = new Uint16Array(capacity);
    this.order = new Uint16Array(capacity);
    this.iov = new IovecArray(capacity);
    this.addrs = new Float64Array(capacity);
    this.tails = [];
    for (let i = 0; i < capacity; i++) {
      this.tails.push(new FrameTail());
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

  /**
   * Sets slot `i`'s descriptor to a frame of `len` bytes with the fields of
   * the virtio-net header at `src[at..]`, as the guest's kernel wrote them
   * (the dispatcher checks them against the frame before trusting any).
   */
  setFromVnetHeader(i: number, len: number, src: Uint8Array, at: number): void {
    this.lens[i] = len;
    this.vnetFlags[i] = src[at + VNET_FLAGS];
    this.gsoType[i] = src[at + VNET_GSO_TYPE];
    this.hdrLen[i] = get16le(src, at + VNET_HDR_LEN_AT);
    this.gsoSize[i] = get16le(src, at + VNET_GSO_SIZE);
    this.csumStart[i] = get16le(src, at + VNET_CSUM_START);
    this.csumOffset[i] = get16le(src, at + VNET_CSUM_OFFSET);
  }

  /**
   * Writes slot `i`'s descriptor as a virtio-net header at `dst[at..]`: only
   * NEEDS_CSUM of the flags, and the checksum fields only with it.
   */
  writeVnetHeader(i: number, dst: Uint8Array, at: number): void {
    const flags = this.vnetFlags[i] & VnetFlag.NEEDS_CSUM;
    dst[at + VNET_FLAGS] = flags;
    dst[at + VNET_GSO_TYPE] = this.gsoType[i];
    set16le(dst, at + VNET_HDR_LEN_AT, this.hdrLen[i]);
    set16le(dst, at + VNET_GSO_SIZE, this.gsoSize[i]);
    set16le(dst, at + VNET_CSUM_START, flags ? this.csumStart[i] : 0);
    set16le(dst, at + VNET_CSUM_OFFSET, flags ? this.csumOffset[i] : 0);
  }

  /**
   * Fills the checksum at slot offset `field` over the frame's bytes from
   * slot offset `from` to its end, its tail included, plus `initial`.
   * Returns the value stored.
   */
  checksumFill(i: number, from: number, field: number, initial: number): number {
    const slot = this.slots[i];
    const tail = this.tails[i];
    const end = TAP_HEADROOM + this.lens[i];
    if (tail.count === 0) return checksumFill(slot, from, end - from, field, initial);
    set16(slot, field, 0);
    const c = checksumFinish(tail.checksumAdd(initial, slot, from, end));
    set16(slot, field, c);
    return c;
  }

  /**
   * Completes frame `i`'s partial checksum (NEEDS_CSUM) in its slot, as the
   * guest's kernel or hardware would: for a capture. Skipped if the field
   * is not among the slot's bytes.
   */
  completeChecksum(i: number): void {
    const tail = this.tails[i];
    if (tail.count === 0) {
      checksumComplete(
        this.slots[i],
        TAP_HEADROOM,
        this.lens[i],
        this.csumStart[i],
        this.csumOffset[i],
      );
      return;
    }
    const from = TAP_HEADROOM + this.csumStart[i];
    const field = from + this.csumOffset[i];
    if (field + 2 > tail.headEnd) return;
    this.checksumFill(i, from, field, get16(this.slots[i], field));
  }

  /** Records frame `i` in the capture (real checksums, tail included). */
  record(i: number, ts: PcapTimestamp): void {
    if (this.vnetFlags[i] & VnetFlag.NEEDS_CSUM) this.completeChecksum(i);
    const tail = this.tails[i];
    if (tail.count === 0) pcapFrame(this.slots[i], this.lens[i], ts, TAP_HEADROOM);
    else pcapFrame(tail.views(this.slots[i], TAP_HEADROOM), this.lens[i], ts);
  }

  /** Sets slot `i`'s descriptor to a plain frame of `len` bytes (no offload). */
  setPlain(i: number, len: number): void {
    this.lens[i] = len;
    this.vnetFlags[i] = 0;
    this.gsoType[i] = GsoType.NONE;
    this.gsoSize[i] = 0;
    this.hdrLen[i] = 0;
    this.csumStart[i] = 0;
    this.csumOffset[i] = 0;
  }
}

/** The guest side of tapir: a tap device, a QEMU socket, or vhost-user. */
export interface TapBackend {
  /** What it is, for logs ("tap eth0", "qemu socket"). */
  readonly name: string;
  /** The fd the reactor watches for incoming frames (EPOLLIN), or -1. */
  readonly fd: number;
  /**
   * For a backend whose `fd` cannot report EPOLLOUT (vhost-user: an
   * eventfd), an fd that turns readable when a send that stopped for want
   * of room may go on; -1 (or absent) where `fd` reports EPOLLOUT.
   */
  readonly wakeFd?: number;
  /** Empties {@linkcode wakeFd} once the reactor saw it readable. */
  drainWake?(): void;
  /**
   * True if frames may carry a partial TCP/UDP checksum in both directions
   * (vnet header NEEDS_CSUM): the guest's kernel treats ours as checked, and
   * tapir must not verify the guest's.
   */
  readonly checksumOffload: boolean;
  /** True if frames toward the guest may be TCP GSO frames (TCPV4, TCPV6). */
  readonly gsoTcp: boolean;
  /** True if frames toward the guest may also be UDP GSO frames (UDP_L4); absent: no. */
  readonly gsoUdp?: boolean;
  /**
   * Frames from the guest this backend queues before it drops more (a tap's
   * queue), when the guest sends TCP one segment per frame; absent: it
   * never drops (a stream socket pushes back; a vhost-user ring makes the
   * guest wait), or the guest's frames hold many segments each.
   */
  readonly guestQueueFrames?: number;
  /**
   * True if the last `send` stopped because the guest was not reading
   * (EAGAIN): the fd will report EPOLLOUT when it can take more. False after
   * a send that delivered everything, or failed for another reason.
   */
  readonly sendBlocked: boolean;
  /**
   * Reads frames from the guest into `batch` slots from 0, up to its
   * capacity (or up to `limit`, a hint a backend may ignore), without
   * blocking; sets each frame's descriptor and `count`. Returns the number
   * of frames, or -errno on a fatal error (the guest is gone).
   */
  receive(batch: FrameBatch, limit?: number): number;
  /**
   * Sends frames `order[0..count)` of `batch` in that order, without
   * blocking, and returns how many whole frames were delivered. Never leaves
   * a frame partly sent.
   */
  send(batch: FrameBatch, count: number): number;
  /**
   * Optional (vhost-user): called once the send path is done with the
   * frames of the last `send` (counted and captured them). A backend that
   * shares memory with the guest makes them visible to it here, not before:
   * the guest may reuse a buffer as soon as it sees it.
   */
  afterSend?(): void;
  /**
   * Optional (vhost-user): reserves room in the guest's own buffers for
   * frame `i` of the sending `batch` — `headLen` bytes the backend will
   * copy from the slot when it sends the frame, then `max` bytes the
   * producer writes in place — and lists that payload room as the frame's
   * tail. False (nothing reserved) if the guest has not made room or the
   * room is split too finely; the frame is then built in its slot.
   */
  reserve?(batch: FrameBatch, i: number, headLen: number, max: number): boolean;
  /** Gives back the reservation of frame `i`, which will not be sent. */
  unreserve?(i: number): void;
  /**
   * Optional (vhost-user): the frames of the last `receive` have been
   * handled; their tails, which point into the guest's buffers, are no
   * longer read, and the buffers may go back to the guest.
   */
  receiveDone?(): void;
}

/** Counters of the send path. */
export interface TapSendStats {
  /** Frames delivered to the guest. */
  framesToGuest: number;
  /** Bytes of those frames (Ethernet length, before padding). */
  bytesToGuest: number;
  /** Frames the backend did not take (the guest not reading, or gone). */
  undelivered: number;
  /** Flushes (backend send calls). */
  flushes: number;
  /** GSO frames delivered. */
  gsoFramesToGuest: number;
  /** Segments those GSO frames stand for. */
  gsoSegmentsToGuest: number;
}

/** Most iovec entries {@linkcode TapSender.payloadIov} fills for one frame. */
export const PAYLOAD_IOV_MAX = TAIL_MAX_PIECES;
/** Slot states of the send path: reserved by the backend, then committed. */
const RESERVED = 1;
const COMMITTED = 2;

/** Called for a frame the backend did not deliver, with what its producer set. */
export type UndeliveredHandler = (flow: number, seq: number) => void;

/** Largest number of producers that may ask for undelivered reports. */
const MAX_PRODUCERS = 4;

/** The one send path; see the module comment. */
export class TapSender {
  /** Counters. */
  readonly stats: TapSendStats = {
    framesToGuest: 0,
    bytesToGuest: 0,
    undelivered: 0,
    flushes: 0,
    gsoFramesToGuest: 0,
    gsoSegmentsToGuest: 0,
  };
  readonly #backend: TapBackend;
  readonly #batch: FrameBatch;
  /** Slots handed out since the last flush (slots `0..taken-1`). */
  #taken = 0;
  /** Per slot: the producer to tell if it is not delivered (0: none), and its values. */
  readonly #owner: Uint8Array;
  readonly #ownerFlow: Int32Array;
  readonly #ownerSeq: Uint32Array;
  readonly #handlers: (UndeliveredHandler | null)[] = new Array(MAX_PRODUCERS).fill(null);
  readonly #resumers: (() => void)[] = [];
  #producers = 0;
  readonly #offload: boolean;
  /** Per slot: 0, or a reservation of the backend's ({@linkcode RESERVED}, {@linkcode COMMITTED}). */
  readonly #resv: Uint8Array;
  /** Slots reserved since the last flush. */
  #reserved = 0;
  /** Set by a flush that left frames undelivered for EAGAIN; cleared by the reactor. */
  blocked = false;
  /**
   * Set by {@linkcode payloadIov} when the backend lends guest buffers but
   * the guest had no room for that frame: a producer filling several
   * frames stops there, rather than read data it could not deliver.
   */
  guestFull = false;

  /**
   * Sends through `backend`, batching up to `capacity` frames of up to
   * `slotSize` bytes. `offload: false` (`--no-offload`) builds no GSO frames
   * even where the backend would take them.
   */
  constructor(
    backend: TapBackend,
    capacity = 128,
    slotSize: number = TAP_SLOT_SIZE,
    offload = true,
  ) {
    this.#backend = backend;
    this.#batch = new FrameBatch(capacity, slotSize);
    this.#owner = new Uint8Array(capacity);
    this.#ownerFlow = new Int32Array(capacity);
    this.#ownerSeq = new Uint32Array(capacity);
    this.#offload = offload;
    this.#resv = new Uint8Array(capacity);
  }

  /**
   * TCP GSO frames allowed: the backend takes them (for vhost-user, what
   * the guest accepted, which a new guest may change) and offloads are on.
   */
  get gsoTcp(): boolean {
    return this.#offload && this.#backend.gsoTcp;
  }

  /**
   * Segments of its own a TCP connection may have in flight from the guest
   * without risking the backend's queue (see `TapBackend.guestQueueFrames`),
   * or Infinity.
   */
  get guestWindowSegments(): number {
    const frames = this.#backend.guestQueueFrames;
    return frames === undefined ? Infinity : Math.max(16, frames >> 1);
  }

  /** UDP GSO frames (UDP_L4) allowed: the backend takes them and offloads are on. */
  get gsoUdp(): boolean {
    return this.#offload && this.#backend.gsoUdp === true;
  }

  /**
   * Copies `len` bytes from frame offset `from` of slot `src` to frame
   * offset `to` of slot `dst` (both taken, payloads in the slots): one
   * `copyWithin` over the batch's memory, no view per call.
   */
  copyBetween(src: number, from: number, dst: number, to: number, len: number): void {
    const b = this.#batch;
    const at = b.slotSize * src + TAP_HEADROOM + from;
    b.backing.copyWithin(b.slotSize * dst + TAP_HEADROOM + to, at, at + len);
  }

  /** Frames committed and waiting for the next flush. */
  get pending(): number {
    return this.#batch.count;
  }

  /** The largest Ethernet frame a slot holds. */
  get maxFrame(): number {
    return this.#batch.maxFrame;
  }

  /** True when TCP/UDP checksums toward the guest may be left partial. */
  get checksumOffload(): boolean {
    return this.#backend.checksumOffload;
  }

  /**
   * Registers a producer that wants to hear of its frames the backend did
   * not deliver; returns its id for {@linkcode setOwner}.
   */
  onUndelivered(handler: UndeliveredHandler): number {
    if (this.#producers + 1 >= MAX_PRODUCERS) throw new RangeError("too many producers");
    this.#handlers[++this.#producers] = handler;
    return this.#producers;
  }

  /** Registers `fn` to run when the backend can take frames again after {@linkcode blocked}. */
  onResume(fn: () => void): void {
    this.#resumers.push(fn);
  }

  /**
   * The backend can take frames again (the reactor saw it writable): clears
   * {@linkcode blocked} and lets the producers that were told of
   * undelivered frames send again.
   */
  resume(): void {
    this.blocked = false;
    for (const fn of this.#resumers) fn();
  }

  /**
   * Free slots before the batch is full; flushes first if there are none, so
   * the answer is at least 1. A producer filling several slots in one go
   * takes at most this many, then commits (or abandons) each.
   */
  room(): number {
    if (this.#taken === this.#batch.capacity) this.flush();
    return this.#batch.capacity - this.#taken;
  }

  /**
   * The index of a free slot (flushing first if the batch is full): build
   * the frame at {@linkcode TAP_HEADROOM} of {@linkcode slot}, then commit
   * the index, or leave it to abandon the slot.
   */
  take(): number {
    if (this.#taken === this.#batch.capacity) this.flush();
    const i = this.#taken++;
    this.#owner[i] = 0;
    this.#batch.tails[i].count = 0;
    return i;
  }

  /**
   * Points iovecs `iov[k..)` at the payload area of slot `i`'s frame: `max`
   * bytes from frame offset `at` (its headers come before). Where the
   * backend lends the guest's own buffers ({@linkcode TapBackend.reserve}),
   * that is where the payload goes, copied once by whoever fills it;
   * otherwise into the slot. Returns the next free entry: the caller leaves
   * room for {@linkcode PAYLOAD_IOV_MAX} entries. Commit the frame with its
   * headers in the slot, as always, or release or abandon it.
   */
  payloadIov(i: number, at: number, max: number, iov: IovecArray, k: number): number {
    const b = this.#batch;
    const be = this.#backend;
    this.guestFull = false;
    if (be.reserve !== undefined) {
      if (be.reserve(b, i, at, max)) {
        this.#resv[i] = RESERVED;
        this.#reserved++;
        const tail = b.tails[i];
        for (let p = 0; p < tail.count; p++) iov.set(k++, tail.bufs[p], tail.offs[p], tail.lens[p]);
        return k;
      }
      this.guestFull = true;
    }
    iov.set(k, b.slots[i], TAP_HEADROOM + at, max);
    return k + 1;
  }

  /** Gives back the backend's reservations of slots from `from` that were not committed. */
  #unreserve(from: number): void {
    for (let j = from; j < this.#taken; j++) {
      if (this.#resv[j] === RESERVED) {
        this.#resv[j] = 0;
        this.#batch.tails[j].count = 0;
        this.#backend.unreserve!(j);
      }
    }
  }

  /**
   * Gives back slot `i` and every slot taken after it, none of them
   * committed: a producer that took more than it filled (a peek that came
   * back short) returns the rest for the next producer.
   */
  release(i: number): void {
    if (i >= this.#taken) return;
    if (this.#reserved > 0) this.#unreserve(i);
    this.#taken = i;
  }

  /** The buffer of slot `i` (from {@linkcode take}). */
  slot(i: number): Uint8Array {
    return this.#batch.slots[i];
  }

  /** Queues the frame built in slot `i`: `len` Ethernet bytes, no offload. */
  commit(i: number, len: number): void {
    const b = this.#batch;
    if (len > b.maxFrame) throw new RangeError(`frame of ${len} bytes exceeds ${b.maxFrame}`);
    b.setPlain(i, len);
    b.order[b.count++] = i;
    if (this.#resv[i] === RESERVED) {
      // The payload in the guest's buffers is what the producer filled.
      this.#resv[i] = COMMITTED;
      const tail = b.tails[i];
      tail.truncate(TAP_HEADROOM + len - tail.at);
    }
  }

  /**
   * Like {@linkcode commit}, for a TCP/UDP frame whose checksum field (at
   * `field` in the L4 header at slot offset `l4`) is still 0: leaves the
   * checksum partial for the guest's kernel where the backend offloads it
   * (the folded `pseudoSum` in the field, NEEDS_CSUM in the descriptor),
   * else fills it from `pseudoSum` over the L4 header and payload. A
   * computed 0 is sent as 0xffff, the same value in ones' complement and
   * the only one UDP allows.
   */
  commitChecksummed(i: number, len: number, l4: number, field: number, pseudoSum: number): void {
    const b = this.#batch;
    const slot = b.slots[i];
    if (!this.#backend.checksumOffload) {
      this.commit(i, len);
      const at = l4 + field;
      if (b.checksumFill(i, l4, at, pseudoSum) === 0) set16(slot, at, 0xffff);
      return;
    }
    set16(slot, l4 + field, checksumFold(pseudoSum));
    this.commit(i, len);
    b.vnetFlags[i] = VnetFlag.NEEDS_CSUM;
    b.csumStart[i] = l4 - TAP_HEADROOM;
    b.csumOffset[i] = field;
  }

  /**
   * Queues a GSO frame built in slot `i` (TCP only where {@linkcode gsoTcp},
   * UDP only where {@linkcode gsoUdp}):
   * `len` Ethernet bytes standing for segments of `gsoSize` payload bytes
   * each behind `hdrLen` bytes of headers, checksum left partial as in
   * {@linkcode commitChecksummed}.
   */
  commitGso(
    i: number,
    len: number,
    l4: number,
    field: number,
    pseudoSum: number,
    type: number,
    gsoSize: number,
    hdrLen: number,
  ): void {
    if (type === GsoType.UDP_L4 ? !this.gsoUdp : !this.gsoTcp) {
      throw new Error("GSO frame for a backend without GSO");
    }
    this.commitChecksummed(i, len, l4, field, pseudoSum);
    const b = this.#batch;
    b.gsoType[i] = type;
    b.gsoSize[i] = gsoSize;
    b.hdrLen[i] = hdrLen;
  }

  /**
   * Marks the frame in slot `i` (taken, committed or not) as `producer`'s:
   * if the backend does not deliver it, the producer's handler gets `flow`
   * and `seq`.
   */
  setOwner(i: number, producer: number, flow: number, seq: number): void {
    this.#owner[i] = producer;
    this.#ownerFlow[i] = flow;
    this.#ownerSeq[i] = seq;
  }

  /**
   * Sends every queued frame: pads short ones, hands the batch to the backend
   * in one call, records the frames that went out in the pcap file, reports
   * the rest to their producers. Returns the number of whole frames delivered.
   */
  flush(): number {
    const b = this.#batch;
    const n = b.count;
    if (this.#reserved > 0) {
      this.#unreserve(0); // taken, reserved, never committed: abandoned
      this.#reserved = 0;
      this.#resv.fill(0); // the backend sends (or drops) the committed ones
    }
    this.#taken = 0;
    if (n === 0) return 0;
    b.count = 0;
    const order = b.order;
    for (let k = 0; k < n; k++) {
      const i = order[k];
      const len = b.lens[i];
      // A frame with a tail is padded by its backend, after the tail.
      if (len < ETH_MIN_FRAME && b.tails[i].count === 0) {
        b.slots[i].fill(0, TAP_HEADROOM + len, TAP_HEADROOM + ETH_MIN_FRAME);
      }
    }
    const sent = this.#backend.send(b, n);
    const st = this.stats;
    st.flushes++;
    st.framesToGuest += sent;
    let bytes = 0;
    for (let k = 0; k < sent; k++) {
      const i = order[k];
      bytes += b.lens[i];
      if (b.gsoType[i] !== GsoType.NONE) {
        st.gsoFramesToGuest++;
        st.gsoSegmentsToGuest += Math.ceil((b.lens[i] - b.hdrLen[i]) / b.gsoSize[i]);
      }
    }
    st.bytesToGuest += bytes;
    if (pcapActive()) {
      const ts = pcapNow();
      for (let k = 0; k < sent; k++) b.record(order[k], ts);
    }
    this.#backend.afterSend?.();
    if (sent < n) {
      st.undelivered += n - sent;
      // Only a full backend (EAGAIN) has producers rewind and wait for it to
      // take frames again. Frames refused for another reason are lost, as on
      // a wire: rewinding to them would resend at once, every turn, while the
      // error lasts; TCP's retransmission timer resends them with backoff.
      if (this.#backend.sendBlocked) {
        this.blocked = true;
        for (let k = sent; k < n; k++) {
          const i = order[k];
          const p = this.#owner[i];
          if (p !== 0) this.#handlers[p]!(this.#ownerFlow[i], this.#ownerSeq[i]);
        }
      }
    }
    return sent;
  }
}

function get16le(b: Uint8Array, at: number): number {
  return b[at] | (b[at + 1] << 8);
}

function set16le(b: Uint8Array, at: number, v: number): void {
  b[at] = v;
  b[at + 1] = v >> 8;
}

/** The length a frame goes out with: padded to the Ethernet minimum. */
export function tapWireLen(len: number): number {
  return len < ETH_MIN_FRAME ? ETH_MIN_FRAME : len;
}
