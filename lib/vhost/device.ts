/**
 * The vhost-user network device: tapir's guest backend when QEMU hands it
 * the virtqueues. Ring 1 (transmit) brings frames from the guest, ring 0
 * (receive) takes frames to it; both live in guest memory mapped from the
 * front-end (see `backend.ts`).
 *
 * # Theory of operation
 *
 * To the rest of tapir this is a {@linkcode TapBackend} like the tap device
 * and the stream socket: frames in slots with their descriptors.
 *
 * **From the guest** ({@linkcode VhostNetDevice.receive}): the reactor
 * watches the transmit ring's kick eventfd ({@linkcode fd}). Each chain
 * taken holds the virtio-net header and the frame, split anywhere across
 * its readable buffers (iPXE puts the header alone in one). The header
 * lands in the slot's headroom and becomes the frame's descriptor (a
 * partial checksum, a GSO type and size); the frame's length is the
 * chain's readable length less the header — never a buffer's size. A
 * short frame is gathered whole into the slot. Of a longer one only the
 * first 256 bytes are, for the dispatcher to parse, and
 * the whole frame is listed as the slot's tail (`tail.ts`) over the guest's
 * buffers: TCP and UDP write its payload to their sockets from there, so
 * the kernel's copy is the only one. The chains go back as used (length 0:
 * the device wrote nothing) only once the batch has been handled
 * ({@linkcode VhostNetDevice.receiveDone}), all in one publish with one
 * interrupt if the guest asked. When the ring runs dry we ask for the next
 * kick and look once more, so a chain offered in between is not left
 * waiting.
 *
 * **To the guest** ({@linkcode VhostNetDevice.send}): a producer that fills
 * a payload from a socket asks first for room in the guest's own receive
 * buffers ({@linkcode VhostNetDevice.reserve}, through the send path's
 * `payloadIov`), and TCP peeks, UDP receives, straight into them; at send
 * time only the header and the frame's headers are written in front. Any
 * other frame is copied from its slot by {@linkcode VnetRx} (header, frame
 * and padding across as many buffers and merged chains as it needs). When
 * the guest has not made room, the send stops there, `sendBlocked` is set,
 * reservations of the frames after it go back, and we ask for a kick on the
 * receive ring — its eventfd is the backend's {@linkcode wakeFd}, which the
 * reactor watches so the producers resume when the guest has made room, as
 * they do on EPOLLOUT of a tap. The frames sent become visible to the guest
 * in {@linkcode VhostNetDevice.afterSend}, once the send path has captured
 * them: a guest may reuse a buffer as soon as it sees it.
 *
 * **What the guest accepted decides the offloads**: partial checksums
 * toward it with GUEST_CSUM; TCP GSO frames toward it with GUEST_TSO4 and
 * GUEST_TSO6 (and merged buffers, without which a 64 KiB frame would need
 * one huge chain). Its own partial checksums and GSO frames arrive with
 * CSUM and HOST_TSO4/6 and are handled by the dispatcher from the
 * descriptors, as from a tap.
 *
 * **Rings come and go** with the front-end's requests. Before any request
 * that changes rings or memory the control side calls
 * {@linkcode VhostNetDevice.quiesce}: the reactor stops watching the kick
 * fds, and chains held for a frame that did not fit are given back empty
 * while the ring is still mapped, so nothing points into memory that may
 * be unmapped and no receive buffer is lost to the guest. After it,
 * {@linkcode VhostNetDevice.resume} takes up the rings that run then.
 *
 * **Copies**: one per payload byte each way, the kernel's, between a
 * socket and guest memory — for TCP and UDP. tapir itself copies headers,
 * short frames, frames a consumer needs whole (a checksum to verify, a
 * service, ICMP), and frames that found no reservation (a receive ring
 * short of room when the payload was read).
 *
 * @module
 */

import * as sys from "../sys/mod.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend } from "../tap/tap.ts";
import type { FrameTail } from "../tap/tail.ts";
import {
  type VhostRingUser,
  VhostUserBackend,
  VIRTIO_F_VERSION_1_HI,
  VirtioNetFeature as F,
} from "./backend.ts";
import { RxResult, VNET_HDR_SIZE, VNET_HDR_SIZE_LEGACY, VnetRx } from "./rx.ts";
import { DescChain } from "./virtqueue.ts";

/** Frames from the guest up to this length are gathered whole into their slot. */
const GATHER_WHOLE_MAX = 512;
/**
 * Of a longer frame, the bytes gathered into the slot for the dispatcher to
 * parse: any Ethernet, IPv4 and TCP headers fit (14 + 60 + 60).
 */
const GATHER_HEAD = 256;

/** Receive ring (to the guest) and transmit ring (from it). */
export const VHOST_RX_RING = 0;
export const VHOST_TX_RING = 1;

/** Counters of the device, beyond its rings' own. */
export interface VhostNetStats {
  /** Frames taken from the transmit ring. */
  framesToHost: number;
  /** Bytes of those frames (Ethernet length). */
  bytesToHost: number;
  /** Of those, bytes copied into slots: whole short frames, the first bytes of long ones. */
  bytesGathered: number;
  /** Transmit chains dropped: shorter than a header and an Ethernet header, or longer than a slot. */
  badFrames: number;
  /** Interrupts (call eventfd writes), both rings. */
  calls: number;
  /** Chains held for a frame that did not fit, given back empty when the rings changed. */
  heldReleased: number;
}

/** One guest's vhost-user network device; see the module comment. */
export class VhostNetDevice implements TapBackend {
  /** For logs. */
  readonly name = "vhost-user";
  /** The control side whose rings and memory this uses. */
  readonly control: VhostUserBackend;
  /** Counters. */
  readonly stats: VhostNetStats = {
    framesToHost: 0,
    bytesToHost: 0,
    bytesGathered: 0,
    badFrames: 0,
    calls: 0,
    heldReleased: 0,
  };
  /** See `TapBackend.sendBlocked`. */
  sendBlocked = false;
  /** Frames to the guest, into the receive ring. */
  readonly rx: VnetRx;

  readonly #chain = new DescChain();
  readonly #one = new Uint8Array(new BigUint64Array([1n]).buffer);
  readonly #drain = new Uint8Array(8);
  /** Header bytes per frame for the features accepted. */
  #hdrSize = VNET_HDR_SIZE;
  /** Heads of transmit chains received and not given back yet (their frames are being handled). */
  readonly #txHeads = new Uint16Array(1024);
  #txN = 0;
  /** Receive chains were given back and not published yet. */
  #rxUnpublished = false;

  constructor(control: VhostUserBackend = new VhostUserBackend()) {
    this.control = control;
    this.rx = new VnetRx(control.vrings[VHOST_RX_RING].queue);
  }

  #has(bit: number): boolean {
    return (this.control.features[0] & (1 << bit)) !== 0;
  }

  /** The transmit ring's kick eventfd while it runs, else -1. */
  get fd(): number {
    const v = this.control.vrings[VHOST_TX_RING];
    return v.running ? v.kickFd : -1;
  }

  /** The receive ring's kick eventfd while it runs, else -1: the guest made room. */
  get wakeFd(): number {
    const v = this.control.vrings[VHOST_RX_RING];
    return v.running ? v.kickFd : -1;
  }

  /** Partial checksums toward the guest: it accepted GUEST_CSUM. */
  get checksumOffload(): boolean {
    return this.#has(F.GUEST_CSUM);
  }

  /** TCP GSO frames toward the guest: it accepted GUEST_TSO4/6, with checksum offload and merged buffers. */
  get gsoTcp(): boolean {
    return this.#has(F.GUEST_CSUM) && this.#has(F.GUEST_TSO4) && this.#has(F.GUEST_TSO6) &&
      this.#has(F.MRG_RXBUF);
  }

  /** Empties the receive ring's kick eventfd (the reactor saw it readable). */
  drainWake(): void {
    const fd = this.wakeFd;
    if (fd >= 0) sys.read(fd, this.#drain, 8);
  }

  /** See the module comment: let go of the rings before they change. */
  quiesce(): void {
    // The rings are still mapped here: what is held goes back before they change.
    this.receiveDone();
    this.afterSend();
    const held = this.rx.release();
    if (held > 0) {
      this.stats.heldReleased += held;
      this.#publish(VHOST_RX_RING);
    }
    this.sendBlocked = false;
  }

  /** See the module comment: take up the rings that run after a change. */
  resume(): void {
    const legacy = !this.#has(F.MRG_RXBUF) &&
      (this.control.features[1] & (1 << VIRTIO_F_VERSION_1_HI)) === 0;
    this.#hdrSize = legacy ? VNET_HDR_SIZE_LEGACY : VNET_HDR_SIZE;
    this.rx.hdrSize = this.#hdrSize;
    this.rx.mergeable = this.#has(F.MRG_RXBUF);
    // Each receive reads the kick fd whether or not a kick came; QEMU only
    // writes to it, so making it non-blocking changes nothing on its side.
    for (const v of this.control.vrings) {
      if (v.running) {
        sys.fcntl(v.kickFd, sys.F_SETFL, sys.fcntl(v.kickFd, sys.F_GETFL) | sys.O_NONBLOCK);
      }
    }
  }

  /** Interrupts the guest for ring `index` if its last publish asked for it. */
  #publish(index: number): void {
    const v = this.control.vrings[index];
    if (v.queue.publish() && v.callFd >= 0) {
      sys.write(v.callFd, this.#one, 8);
      this.stats.calls++;
    }
  }

  /**
   * Gives the transmit chains of the last receive back to the guest, with
   * one interrupt if it asked: their frames have been handled, and the tails
   * that pointed into them are no longer read.
   */
  receiveDone(): void {
    const n = this.#txN;
    if (n === 0) return;
    this.#txN = 0;
    const v = this.control.vrings[VHOST_TX_RING];
    if (!v.queue.ready) return;
    for (let k = 0; k < n; k++) v.queue.push(this.#txHeads[k], 0);
    this.#publish(VHOST_TX_RING);
  }

  /** Reads frames from the transmit ring into `batch`; see the module comment. */
  receive(batch: FrameBatch): number {
    const v = this.control.vrings[VHOST_TX_RING];
    batch.count = 0;
    this.receiveDone(); // a caller that did not say so is done with the last batch
    if (!v.running) return 0;
    sys.read(v.kickFd, this.#drain, 8);
    const q = v.queue;
    const c = this.#chain;
    const hdr = this.#hdrSize;
    const max = batch.maxFrame;
    let n = 0;
    let asked = false;
    while (n < batch.capacity && this.#txN < this.#txHeads.length) {
      if (!q.pop(c)) {
        if (q.lastError !== null) continue; // a broken chain, given back: the next one
        if (asked) break;
        // Dry: ask for a kick, then look once more (see the module comment).
        q.wantKick();
        asked = true;
        continue;
      }
      asked = false;
      const len = c.readLen - hdr;
      if (len < 14 || len > max) {
        this.stats.badFrames++;
        q.push(c.head, 0);
        continue;
      }
      const slot = batch.slots[n];
      const tail = batch.tails[n];
      if (len <= GATHER_WHOLE_MAX) {
        this.#gather(c, slot, TAP_HEADROOM - hdr, hdr + len);
        tail.count = 0;
        this.stats.bytesGathered += len;
      } else {
        this.#gather(c, slot, TAP_HEADROOM - hdr, hdr + GATHER_HEAD);
        this.#listFrame(c, tail, hdr);
        this.stats.bytesGathered += GATHER_HEAD;
      }
      this.#txHeads[this.#txN++] = c.head;
      batch.setFromVnetHeader(n, len, slot, TAP_HEADROOM - hdr);
      this.stats.bytesToHost += len;
      n++;
    }
    this.#publish(VHOST_TX_RING); // chains refused on the way
    this.stats.framesToHost += n;
    batch.count = n;
    return n;
  }

  /** Copies the first `max` readable bytes of chain `c` to `dst[at..]`. */
  #gather(c: DescChain, dst: Uint8Array, at: number, max: number): void {
    for (let b = 0; b < c.readable && max > 0; b++) {
      const src = c.bufs[b];
      const off = c.offs[b];
      const len = Math.min(c.lens[b], max);
      if (len <= 16) {
        for (let k = 0; k < len; k++) dst[at + k] = src[off + k];
      } else {
        dst.set(src.subarray(off, off + len), at);
      }
      at += len;
      max -= len;
    }
  }

  /**
   * Lists the frame in chain `c` (past its `hdr` header bytes) as `tail`'s
   * pieces, whole: the slot holds a copy of its first {@linkcode GATHER_HEAD}
   * bytes for parsing, and its payload is read from guest memory.
   */
  #listFrame(c: DescChain, tail: FrameTail, hdr: number): void {
    tail.reset(TAP_HEADROOM, TAP_HEADROOM + GATHER_HEAD);
    let skip = hdr;
    for (let b = 0; b < c.readable; b++) {
      const len = c.lens[b];
      if (skip >= len) {
        skip -= len;
        continue;
      }
      tail.add(c.bufs[b], c.offs[b] + skip, len - skip); // a chain has no more buffers than a tail pieces
      skip = 0;
    }
  }

  /**
   * Reserves receive buffers for frame `i` of the sending batch; see
   * `TapBackend.reserve` and `VnetRx.reserve`.
   */
  reserve(batch: FrameBatch, i: number, headLen: number, max: number): boolean {
    if (!this.control.vrings[VHOST_RX_RING].running || !this.rx.canReserve(i)) return false;
    const tail = batch.tails[i];
    tail.reset(TAP_HEADROOM + headLen, TAP_HEADROOM + headLen);
    return this.rx.reserve(i, headLen, max, tail);
  }

  /** Gives frame `i`'s reservation back; see `TapBackend.unreserve`. */
  unreserve(i: number): void {
    this.rx.unreserve(i);
  }

  /** Publishes the frames of the last send, with one interrupt if the guest asked. */
  afterSend(): void {
    if (!this.#rxUnpublished) return;
    this.#rxUnpublished = false;
    this.#publish(VHOST_RX_RING);
  }

  /** Writes frames `order[0..count)` into the receive ring; see the module comment. */
  send(batch: FrameBatch, count: number): number {
    const v = this.control.vrings[VHOST_RX_RING];
    this.sendBlocked = false;
    if (!v.running) {
      // No receive ring: the frames are lost, as on a link that is down.
      for (let j = 0; j < count; j++) this.rx.unreserve(batch.order[j]);
      return 0;
    }
    const rx = this.rx;
    const q = v.queue;
    let k = 0;
    let asked = false;
    while (k < count) {
      const i = batch.order[k];
      if (rx.reserved(i)) {
        // The payload is in place: the header and the frame's headers go in front.
        const tail = batch.tails[i];
        rx.writeReserved(
          i,
          batch.slots[i],
          TAP_HEADROOM,
          tail.headEnd - TAP_HEADROOM,
          batch.lens[i],
          batch.vnetFlags[i],
          batch.gsoType[i],
          batch.hdrLen[i],
          batch.gsoSize[i],
          batch.csumStart[i],
          batch.csumOffset[i],
        );
        k++;
        continue;
      }
      const r = rx.write(
        batch.slots[i],
        TAP_HEADROOM,
        batch.lens[i],
        batch.vnetFlags[i],
        batch.gsoType[i],
        batch.hdrLen[i],
        batch.gsoSize[i],
        batch.csumStart[i],
        batch.csumOffset[i],
      );
      if (r === RxResult.NO_ROOM) {
        if (asked) {
          this.sendBlocked = true;
          break;
        }
        q.wantKick();
        asked = true;
        continue;
      }
      asked = false;
      k++; // written, or dropped as too big for the ring (counted there)
    }
    // Frames after one that found no room are not sent: their reservations go back.
    for (let j = k; j < count; j++) rx.unreserve(batch.order[j]);
    this.#rxUnpublished = true; // published by `afterSend`
    return k;
  }
}

/** What watches a backend's fds: the reactor side of `Tapir`. */
export interface BackendWatcher {
  /** Watches the backend's current fds (its frame fd and wake fd). */
  watchBackend(): void;
  /** Stops watching them. */
  unwatchBackend(): void;
}

/**
 * Makes `dev` the data path of its control side, with `watcher` (the
 * `Tapir` it serves) watching the kick fds of whatever rings run: before a
 * change the fds are let go and the device quiesces, after it the device
 * takes up the rings and the fds are watched again.
 */
export function vhostServe(dev: VhostNetDevice, watcher: BackendWatcher): void {
  const user: VhostRingUser = {
    quiesce: () => {
      watcher.unwatchBackend();
      dev.quiesce();
    },
    resume: () => {
      dev.resume();
      watcher.watchBackend();
    },
  };
  dev.control.ringUser = user;
}
