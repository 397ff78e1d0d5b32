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
 * its readable buffers (iPXE puts the header alone in one). The chain's
 * bytes are gathered into a slot so that the header lands in the slot's
 * headroom and the frame at `TAP_HEADROOM`: the header fields become the
 * frame's descriptor (a partial checksum, a GSO type and size), and the
 * frame's length is the chain's readable length less the header — never a
 * buffer's size. The chain goes straight back as used (length 0: the device
 * wrote nothing), and the batch's used entries are published with one
 * interrupt, if the guest asked for one. When the ring runs dry we ask for
 * the next kick and look once more, so a chain offered in between is not
 * left waiting.
 *
 * **To the guest** ({@linkcode VhostNetDevice.send}): each frame goes into
 * the receive ring through {@linkcode VnetRx} (header, frame and padding
 * across as many buffers and merged chains as it needs). When the guest has
 * not made room, the send stops there, `sendBlocked` is set, and we ask for
 * a kick on the receive ring — its eventfd is the backend's
 * {@linkcode wakeFd}, which the reactor watches so the producers resume when
 * the guest has made room, as they do on EPOLLOUT of a tap.
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
 * **Copies**: two per byte each way for now, as with the tap device —
 * between the rings and a slot here, between the slot and the host socket
 * in the kernel. Frames are not yet built in guest memory (TCP peeking
 * straight into receive buffers) nor written to sockets from it (iovecs
 * over transmit buffers), which would leave one.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend } from "../tap/tap.ts";
import {
  type VhostRingUser,
  VhostUserBackend,
  VIRTIO_F_VERSION_1_HI,
  VirtioNetFeature as F,
} from "./backend.ts";
import { RxResult, VNET_HDR_SIZE, VNET_HDR_SIZE_LEGACY, VnetRx } from "./rx.ts";
import { DescChain } from "./virtqueue.ts";

/** Receive ring (to the guest) and transmit ring (from it). */
export const VHOST_RX_RING = 0;
export const VHOST_TX_RING = 1;

/** Counters of the device, beyond its rings' own. */
export interface VhostNetStats {
  /** Frames taken from the transmit ring. */
  framesIn: number;
  /** Bytes of those frames (Ethernet length). */
  bytesIn: number;
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
    framesIn: 0,
    bytesIn: 0,
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
    // The ring is still mapped here: what is held goes back before it changes.
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

  /** Reads frames from the transmit ring into `batch`; see the module comment. */
  receive(batch: FrameBatch): number {
    const v = this.control.vrings[VHOST_TX_RING];
    batch.count = 0;
    if (!v.running) return 0;
    sys.read(v.kickFd, this.#drain, 8);
    const q = v.queue;
    const c = this.#chain;
    const hdr = this.#hdrSize;
    const max = batch.maxFrame;
    let n = 0;
    let asked = false;
    while (n < batch.capacity) {
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
      this.#gather(c, batch.slots[n], TAP_HEADROOM - hdr);
      q.push(c.head, 0);
      batch.setFromVnetHeader(n, len, batch.slots[n], TAP_HEADROOM - hdr);
      this.stats.bytesIn += len;
      n++;
    }
    this.#publish(VHOST_TX_RING);
    this.stats.framesIn += n;
    batch.count = n;
    return n;
  }

  /** Copies the readable bytes of chain `c` to `dst[at..]`. */
  #gather(c: DescChain, dst: Uint8Array, at: number): void {
    for (let b = 0; b < c.readable; b++) {
      const src = c.bufs[b];
      const off = c.offs[b];
      const len = c.lens[b];
      if (len <= 16) {
        for (let k = 0; k < len; k++) dst[at + k] = src[off + k];
      } else {
        dst.set(src.subarray(off, off + len), at);
      }
      at += len;
    }
  }

  /** Writes frames `order[0..count)` into the receive ring; see the module comment. */
  send(batch: FrameBatch, count: number): number {
    const v = this.control.vrings[VHOST_RX_RING];
    this.sendBlocked = false;
    if (!v.running) return 0; // no receive ring yet: the frames are lost, as on a link that is down
    const rx = this.rx;
    const q = v.queue;
    let k = 0;
    let asked = false;
    while (k < count) {
      const i = batch.order[k];
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
    this.#publish(VHOST_RX_RING);
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
