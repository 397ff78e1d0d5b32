/**
 * The vhost-user back-end's control side: one front-end's requests, in
 * order, each answered or acknowledged, and the state they build — the
 * negotiated features, the guest's memory, and for each of the two rings
 * (0: receive, to the guest; 1: transmit, from it) its size, addresses,
 * base and the eventfds for kicks and interrupts.
 *
 * # Theory of operation
 *
 * {@linkcode VhostUserBackend.handle} takes one checked message
 * ({@linkcode VhostUserMsg}) with the file descriptors that came with it
 * and either writes a reply (possibly empty) or refuses the message; a
 * refusal ends the connection, and {@linkcode VhostUserBackend.error} says
 * why in one line. Descriptors are owned from the moment they arrive: the
 * ones a request keeps (region fds until mapped, kick and call eventfds)
 * are stored, every other one is closed at once, so a misbehaving
 * front-end cannot leak descriptors into tapir.
 *
 * **Memory.** `SET_MEM_TABLE` maps each region's fd shared, read-write,
 * whole up to its offset plus size, and hands the region's bytes to
 * {@linkcode GuestMemory}; the fd is closed once mapped (the mapping keeps
 * the pages). A new table replaces the old one, and the rings are mapped
 * again against it. A mapped page the file no longer has would fault
 * (SIGBUS, which ends tapir) when read: a region longer than its file is
 * refused, and a memfd is sealed against shrinking (`F_SEAL_SHRINK`)
 * unless it is already — QEMU's `memory-backend-memfd` seals it itself by
 * default. A file that cannot be sealed (a plain or hugetlbfs file, a memfd
 * sealed for good) is mapped with a warning: it is the front-end's memory,
 * and only the front-end could shrink it.
 *
 * **Ring life.** A ring is mapped once it has a size and addresses and
 * memory holds them. It runs when it has a kick fd and is enabled: at once
 * without `VHOST_USER_F_PROTOCOL_FEATURES`, else only after
 * `SET_VRING_ENABLE` (the spec's rule). `GET_VRING_BASE` stops it and
 * answers where it stopped, so the front-end can restart it elsewhere.
 *
 * @module
 */

import { logWarn } from "../log.ts";
import * as sys from "../sys/mod.ts";
import { GuestMemory } from "./memory.ts";
import {
  type MemRegionDesc,
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  vhostReplyState,
  vhostReplyU64,
  type VhostUserMsg,
  VhostUserRequest as Req,
} from "./protocol.ts";
import { SplitQueue, VIRTQ_MAX_SIZE } from "./virtqueue.ts";

/** virtio-net feature bits (low word) tapir understands. */
export const VirtioNetFeature = {
  /** The guest may send frames with a partial checksum (we complete or offload it). */
  CSUM: 0,
  /** We may send the guest frames with a partial checksum. */
  GUEST_CSUM: 1,
  /** We may send the guest TCP GSO frames, IPv4 and IPv6. */
  GUEST_TSO4: 7,
  GUEST_TSO6: 8,
  /** The guest may send us TCP GSO frames, IPv4 and IPv6. */
  HOST_TSO4: 11,
  HOST_TSO6: 12,
  /** Receive buffers may be merged: a frame spans several chains (`num_buffers`). */
  MRG_RXBUF: 15,
  /** Descriptors may point to tables of descriptors. */
  INDIRECT_DESC: 28,
  /** `used_event` and `avail_event` replace the ring flags for notification. */
  EVENT_IDX: 29,
} as const;
/** Feature bit 32 (bit 0 of the high word): a virtio 1.x device. */
export const VIRTIO_F_VERSION_1_HI = 0;

const F = VirtioNetFeature;
/**
 * The feature words offered: [bits 0–31, bits 32–63]. Checksum and TCP
 * segmentation offload both ways — the guest sends and receives 64 KiB
 * segments through the same frame descriptors as the tap device — merged
 * receive buffers, indirect descriptors, event index, protocol features.
 */
export const VHOST_OFFERED_FEATURES: readonly [number, number] = [
  ((1 << F.CSUM) | (1 << F.GUEST_CSUM) | (1 << F.GUEST_TSO4) | (1 << F.GUEST_TSO6) |
    (1 << F.HOST_TSO4) | (1 << F.HOST_TSO6) | (1 << F.MRG_RXBUF) | (1 << F.INDIRECT_DESC) |
    (1 << F.EVENT_IDX) | (1 << VHOST_USER_F_PROTOCOL_FEATURES)) >>> 0,
  1 << VIRTIO_F_VERSION_1_HI,
];
/** Protocol features offered: REPLY_ACK. */
export const VHOST_OFFERED_PROTOCOL_FEATURES = 1 << VHOST_USER_PROTOCOL_F_REPLY_ACK;
/** Rings of a single-queue-pair network device. */
export const VHOST_QUEUES = 2;

/** One ring's control state. */
export class VringControl {
  readonly queue: SplitQueue;
  /** Ring size from SET_VRING_NUM (0: not set). */
  num = 0;
  /** Ring addresses from SET_VRING_ADDR, in the front-end's space (-1: not set). */
  desc = -1;
  avail = -1;
  used = -1;
  /** eventfds: kick (the guest made chains available), call (interrupt the guest), err. */
  kickFd = -1;
  callFd = -1;
  errFd = -1;
  /** SET_VRING_ENABLE's last word (or implied; see the module comment). */
  enabled = false;

  constructor(mem: GuestMemory) {
    this.queue = new SplitQueue(mem);
  }

  /** True when the ring is mapped, has a kick fd and is enabled. */
  get running(): boolean {
    return this.queue.ready && this.kickFd >= 0 && this.enabled;
  }
}

/**
 * Who uses the rings between requests (the data path): told before a
 * request changes rings or memory, so it lets go of everything that points
 * into them (registered kick fds, held chains), and after, so it takes up
 * what is running then.
 */
export interface VhostRingUser {
  /** Rings or memory are about to change: stop touching them. */
  quiesce(): void;
  /** The change is done: take up the rings that run now. */
  resume(): void;
}

/** The control side of one front-end's session; see the module comment. */
export class VhostUserBackend {
  /** Guest memory, as mapped from the last SET_MEM_TABLE. */
  readonly memory: GuestMemory = new GuestMemory();
  /** The rings, by index. */
  readonly vrings: VringControl[];
  /** Accepted features: [bits 0–31, bits 32–63]. */
  features: [number, number] = [0, 0];
  /** Accepted protocol features (bits 0–31). */
  protocolFeatures = 0;
  /** SET_OWNER seen. */
  owner = false;
  /** Why the last message was refused. */
  error = "";
  /** The data path, told around every change to rings or memory. */
  ringUser: VhostRingUser | null = null;

  readonly #mappings: sys.Mapping[] = [];
  readonly #region: MemRegionDesc = { guestAddr: 0, size: 0, userAddr: 0, mmapOffset: 0 };

  constructor() {
    this.vrings = Array.from({ length: VHOST_QUEUES }, () => new VringControl(this.memory));
  }

  /**
   * Handles `msg` with the descriptors in `fds` (-1 where none), writing
   * any reply into `reply`. Returns the reply's length (0 for none), or -1
   * if the message is refused: see {@linkcode error}, and close the
   * connection.
   */
  handle(msg: VhostUserMsg, fds: Int32Array, reply: Uint8Array): number {
    this.error = "";
    // Received descriptors come first in `fds`. Those the request may not
    // take are closed now; those it may take and did not (it sets the
    // entry to -1 when it does), once it is done.
    let count = 0;
    while (count < fds.length && fds[count] >= 0) count++;
    const keep = Math.min(count, this.#fdsKept(msg));
    for (let i = keep; i < count; i++) fds[i] = closeFd(fds[i]);
    const changes = changesRings(msg.request);
    if (changes) this.ringUser?.quiesce();
    const rc = this.#dispatch(msg, fds, keep, reply);
    if (changes) this.ringUser?.resume();
    for (let i = 0; i < keep; i++) fds[i] = closeFd(fds[i]);
    if (rc !== 0) return rc;
    // REPLY_ACK: a request without a reply of its own is acknowledged when asked.
    if (msg.needReply && this.protocolFeatures & (1 << VHOST_USER_PROTOCOL_F_REPLY_ACK)) {
      return vhostReplyU64(reply, 0, msg.request, 0);
    }
    return 0;
  }

  /** How many descriptors `msg` may bring; the rest are closed unread. */
  #fdsKept(msg: VhostUserMsg): number {
    switch (msg.request) {
      case Req.SET_MEM_TABLE:
        return msg.regionCount;
      case Req.SET_VRING_KICK:
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR:
        return msg.vringNoFd ? 0 : 1;
      default:
        return 0;
    }
  }

  /** Returns a reply length (> 0), 0 for none, or -1 with {@linkcode error} set. */
  #dispatch(msg: VhostUserMsg, fds: Int32Array, nfds: number, reply: Uint8Array): number {
    const r = msg.request;
    switch (r) {
      case Req.GET_FEATURES:
        return vhostReplyU64(reply, 0, r, VHOST_OFFERED_FEATURES[0], VHOST_OFFERED_FEATURES[1]);
      case Req.SET_FEATURES: {
        const lo = msg.u64Lo;
        const hi = msg.u64Hi;
        if ((lo & ~VHOST_OFFERED_FEATURES[0]) || (hi & ~VHOST_OFFERED_FEATURES[1])) {
          return this.#refuse(`features ${hex(hi, lo)} not offered`);
        }
        this.features = [lo >>> 0, hi >>> 0];
        const eventIdx = (lo & (1 << F.EVENT_IDX)) !== 0;
        for (const v of this.vrings) v.queue.eventIdx = eventIdx;
        return 0;
      }
      case Req.GET_PROTOCOL_FEATURES:
        return vhostReplyU64(reply, 0, r, VHOST_OFFERED_PROTOCOL_FEATURES);
      case Req.SET_PROTOCOL_FEATURES:
        if (msg.u64Hi !== 0 || msg.u64Lo & ~VHOST_OFFERED_PROTOCOL_FEATURES) {
          return this.#refuse(`protocol features ${hex(msg.u64Hi, msg.u64Lo)} not offered`);
        }
        this.protocolFeatures = msg.u64Lo;
        return 0;
      case Req.SET_OWNER:
        this.owner = true;
        return 0;
      case Req.RESET_OWNER:
        this.reset();
        return 0;
      case Req.GET_QUEUE_NUM:
        return vhostReplyU64(reply, 0, r, VHOST_QUEUES);
      case Req.SET_MEM_TABLE:
        return this.#setMemTable(msg, fds, nfds);
    }
    // The rest address one ring.
    const index = msg.vringIndex;
    if (index >= VHOST_QUEUES) return this.#refuse(`request ${r} for ring ${index}`);
    const v = this.vrings[index];
    switch (r) {
      case Req.SET_VRING_NUM: {
        const num = msg.vringNum;
        if (!(num > 0 && num <= VIRTQ_MAX_SIZE && (num & (num - 1)) === 0)) {
          return this.#refuse(`ring ${index}: size ${num}`);
        }
        v.num = num;
        // Front-ends send the size first; should the addresses have come first, map now.
        if (!this.#mapRing(v)) return this.#refuse(`ring ${index}: outside guest memory`);
        return 0;
      }
      case Req.SET_VRING_ADDR:
        v.desc = msg.descAddr;
        v.avail = msg.availAddr;
        v.used = msg.usedAddr;
        if (!this.#mapRing(v)) return this.#refuse(`ring ${index}: addresses outside guest memory`);
        return 0;
      case Req.SET_VRING_BASE:
        v.queue.setBase(msg.vringNum);
        return 0;
      case Req.GET_VRING_BASE: {
        // Stops the ring: no more kicks are taken for it.
        v.kickFd = closeFd(v.kickFd);
        v.enabled = false;
        return vhostReplyState(reply, 0, r, index, v.queue.lastAvail);
      }
      case Req.SET_VRING_KICK:
        if (nfds === 0) return this.#refuse(`ring ${index}: no kick fd (polling is not offered)`);
        closeFd(v.kickFd);
        v.kickFd = fds[0];
        fds[0] = -1;
        // Without protocol features a ring runs as soon as it has its kick fd.
        if (!(this.features[0] & (1 << VHOST_USER_F_PROTOCOL_FEATURES))) v.enabled = true;
        return 0;
      case Req.SET_VRING_CALL:
      case Req.SET_VRING_ERR: {
        const fd = nfds > 0 ? fds[0] : -1;
        if (nfds > 0) fds[0] = -1;
        if (r === Req.SET_VRING_CALL) {
          closeFd(v.callFd);
          v.callFd = fd;
        } else {
          closeFd(v.errFd);
          v.errFd = fd;
        }
        return 0;
      }
      case Req.SET_VRING_ENABLE:
        v.enabled = msg.vringNum !== 0;
        return 0;
    }
    return this.#refuse(`request ${r} not handled`);
  }

  #setMemTable(msg: VhostUserMsg, fds: Int32Array, nfds: number): number {
    const n = msg.regionCount;
    if (nfds !== n) return this.#refuse(`memory table of ${n} regions came with ${nfds} fds`);
    this.#unmapAll();
    const d = this.#region;
    for (let i = 0; i < n; i++) {
      msg.region(i, d);
      if (d.size <= 0 || d.guestAddr < 0 || d.userAddr < 0 || d.mmapOffset < 0) {
        return this.#refuse(`memory region ${i}: bad addresses or size`);
      }
      // Pages past the end of the file would fault (SIGBUS) when the rings
      // or a buffer there were read: a front-end's lie would end tapir.
      // Sealed first, so the size checked next is the least it will have.
      if (!sealAgainstShrink(fds[i])) {
        logWarn(`vhost-user: memory region ${i} cannot be sealed against shrinking`);
      }
      const fileBytes = sys.fileSize(fds[i]);
      if (fileBytes < d.mmapOffset + d.size) {
        const has = fileBytes < 0 ? sys.errnoName(-fileBytes) : `${fileBytes} bytes`;
        return this.#refuse(
          `memory region ${i}: ${d.mmapOffset + d.size} bytes asked of a file of ${has}`,
        );
      }
      const m = sys.mmap(
        d.mmapOffset + d.size,
        sys.PROT_READ | sys.PROT_WRITE,
        sys.MAP_SHARED,
        fds[i],
        0,
      );
      if (typeof m === "number") {
        return this.#refuse(`memory region ${i}: mmap: ${sys.errnoName(-m)}`);
      }
      fds[i] = closeFd(fds[i]); // the mapping keeps the pages
      this.#mappings.push(m);
      try {
        this.memory.add({
          guestAddr: d.guestAddr,
          userAddr: d.userAddr,
          bytes: m.bytes.subarray(d.mmapOffset, d.mmapOffset + d.size),
        });
      } catch (err) {
        return this.#refuse(`memory region ${i}: ${(err as Error).message}`);
      }
    }
    // Rings set up before the new table are found again in it.
    for (const v of this.vrings) {
      if (v.desc >= 0 && !this.#mapRing(v)) return this.#refuse("a ring is outside the new memory");
    }
    return 0;
  }

  /** Maps `v`'s ring if it has a size and addresses; false if they are not in guest memory. */
  #mapRing(v: VringControl): boolean {
    if (v.num === 0 || v.desc < 0) return true; // not complete yet: nothing to check
    return v.queue.map(v.num, v.desc, v.avail, v.used);
  }

  #refuse(why: string): number {
    this.error = why;
    return -1;
  }

  #unmapAll(): void {
    this.memory.clear();
    for (const m of this.#mappings) sys.munmap(m);
    this.#mappings.length = 0;
  }

  /** Back to the state before any request: memory unmapped, eventfds closed, features cleared. */
  reset(): void {
    this.ringUser?.quiesce();
    this.#unmapAll();
    for (const v of this.vrings) {
      v.kickFd = closeFd(v.kickFd);
      v.callFd = closeFd(v.callFd);
      v.errFd = closeFd(v.errFd);
      v.num = 0;
      v.desc = v.avail = v.used = -1;
      v.enabled = false;
      v.queue.unmap();
    }
    this.features = [0, 0];
    this.protocolFeatures = 0;
    this.owner = false;
  }
}

/** True for the requests that may change what the data path uses. */
function changesRings(request: number): boolean {
  switch (request) {
    case Req.SET_FEATURES:
    case Req.RESET_OWNER:
    case Req.SET_MEM_TABLE:
    case Req.SET_VRING_NUM:
    case Req.SET_VRING_ADDR:
    case Req.SET_VRING_BASE:
    case Req.GET_VRING_BASE:
    case Req.SET_VRING_KICK:
    case Req.SET_VRING_CALL:
    case Req.SET_VRING_ENABLE:
      return true;
  }
  return false;
}

/** Closes `fd` if it is one; returns -1, for the slot that held it. */
function closeFd(fd: number): number {
  if (fd >= 0) sys.close(fd);
  return -1;
}

function hex(hi: number, lo: number): string {
  return `0x${(hi >>> 0).toString(16)}${(lo >>> 0).toString(16).padStart(8, "0")}`;
}

/**
 * Makes sure the memfd `fd` cannot shrink: true if it is sealed so, already
 * or now; false for a file that cannot be (not a memfd, or sealed for good).
 */
function sealAgainstShrink(fd: number): boolean {
  const seals = sys.fcntl(fd, sys.F_GET_SEALS);
  if (seals < 0) return false;
  if (seals & sys.F_SEAL_SHRINK) return true;
  return (seals & sys.F_SEAL_SEAL) === 0 &&
    sys.fcntl(fd, sys.F_ADD_SEALS, sys.F_SEAL_SHRINK) === 0;
}
