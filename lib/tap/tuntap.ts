/**
 * The tap device backend (namespace mode).
 *
 * The device is created with `/dev/net/tun` + `TUNSETIFF` by the thread that
 * is inside the guest's network namespace ({@linkcode tuntapOpen}); the fd
 * then works from any thread of the process, so the main thread reads and
 * writes it ({@linkcode TuntapBackend}).
 *
 * A tap fd moves one frame per read or write and takes a frame atomically,
 * so there is no partial-frame state: a write either delivers the frame or
 * fails (EAGAIN when the device's queue is full, EIO while the guest has the
 * link down), and the send path drops what fails. Each call goes through a
 * prebuilt iovec pointing into the frame's slot, so no view is created per
 * frame.
 *
 * **Checksum offload.** Opened with a vnet header (`IFF_VNET_HDR`), every
 * frame is preceded by a 10-byte virtio-net header, which lives in the
 * slot's headroom. With `TUN_F_CSUM` the guest's kernel hands over TCP/UDP
 * segments with the checksum left for "hardware" (flag NEEDS_CSUM): the
 * dispatcher must not verify those, and need not — the bytes come straight
 * from the guest's kernel. Toward the guest tapir does the same: the checksum
 * field holds only the pseudo-header sum and the header says NEEDS_CSUM with
 * where the checksum is; the guest's kernel takes a partial checksum as
 * checked for local delivery. (DATA_VALID, measured, is ignored on a tap
 * write: the checksum is then verified and a zero one fails.) Each saves a
 * pass over up to 64 KiB per frame.
 *
 * **Segmentation offload.** The header also carries GSO metadata (see
 * `FrameBatch`): a frame *written* with a GSO type is accepted whatever
 * `TUNSETOFFLOAD` says, and the namespace's kernel delivers it to the local
 * socket as one large segment (as GRO would have made it), so tapir sends
 * TCP toward the guest in frames of up to 64 KiB. What the guest may send
 * us is what `TUNSETOFFLOAD` grants ({@linkcode tuntapGrantOffloads}): with
 * TSO4/TSO6 the guest's kernel hands over TCP segments of up to 64 KiB
 * (checksum partial, the GSO size its MSS), with USO4/USO6 UDP buffers
 * meant to become datagrams of the GSO size.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";
import { log, LogLevel } from "../log.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend, tapWireLen, VNET_HDR_LEN } from "./tap.ts";

export { VNET_HDR_LEN };

/** What {@linkcode tuntapGrantOffloads} asks for, most first; each needs TUN_F_CSUM. */
const OFFLOAD_TRIES: readonly number[] = [
  sys.TUN_F_CSUM | sys.TUN_F_TSO4 | sys.TUN_F_TSO6 | sys.TUN_F_USO4 | sys.TUN_F_USO6,
  sys.TUN_F_CSUM | sys.TUN_F_TSO4 | sys.TUN_F_TSO6,
  sys.TUN_F_CSUM,
];

/**
 * Grants the guest what it may send through tap `fd` (opened with a vnet
 * header): TSO and USO where the kernel accepts them, else TSO only, else
 * checksum offload only; `segmentation: false` (`--no-offload`) asks for
 * checksum offload only. Returns the TUN_F_* flags granted (0 if none).
 */
export function tuntapGrantOffloads(fd: number, segmentation: boolean): number {
  for (const flags of OFFLOAD_TRIES) {
    if (!segmentation && flags !== sys.TUN_F_CSUM) continue;
    if (sys.ioctlInt(fd, sys.TUNSETOFFLOAD, flags) === 0) {
      log(LogLevel.debug, `tap offloads granted: 0x${flags.toString(16)}`);
      return flags;
    }
  }
  return 0;
}

/**
 * Frames a tap queues from the guest before it drops: the interface's
 * `txqueuelen`, 1000 for the taps tapir makes here (it leaves the length
 * alone). A queue of 500 would still hold the half that
 * `Tap.guestWindowSegments` lets a connection use.
 */
export const TAP_QUEUE_FRAMES = 1000;

/** Counters of the tap backend. */
export interface TuntapStats {
  /** Frames read from the guest. */
  framesToHost: number;
  /** Bytes of those frames. */
  bytesToHost: number;
  /** Writes refused by the device (queue full, link down). */
  writeErrors: number;
}

/** Reads and writes frames on a tap fd; see the module comment. */
export class TuntapBackend implements TapBackend {
  /** For logs. */
  readonly name: string;
  /** The tap fd. */
  readonly fd: number;
  /** Counters. */
  readonly stats: TuntapStats = { framesToHost: 0, bytesToHost: 0, writeErrors: 0 };
  /** The last errno of a failed write, for diagnostics. */
  lastWriteError = 0;

  /** Frames carry a 10-byte virtio-net header. */
  readonly #vnet: number;
  /** See `TapBackend.checksumOffload`. */
  readonly checksumOffload: boolean;
  /** See `TapBackend.gsoTcp`: a tap with a vnet header takes GSO writes. */
  readonly gsoTcp: boolean;
  /** TUN_F_* flags the guest was granted (what its frames may carry). */
  readonly granted: number;
  /**
   * See `TapBackend.gsoUdp`: a kernel that grants USO (Linux 6.2 on) also
   * parses UDP_L4 in the vnet headers written to it.
   */
  readonly gsoUdp: boolean;
  /** See `TapBackend.guestQueueFrames`: the tap's queue, unless the guest may send TSO frames. */
  readonly guestQueueFrames: number | undefined;
  /** See `TapBackend.sendBlocked`. */
  sendBlocked = false;

  /**
   * Wraps an open tap `fd` for interface `ifname` (`vnetHdr`: opened with
   * IFF_VNET_HDR). With a vnet header, grants the guest segmentation
   * offloads unless `segmentation` is false ({@linkcode tuntapGrantOffloads}).
   */
  constructor(fd: number, ifname: string, vnetHdr = false, segmentation = true) {
    this.fd = fd;
    this.name = `tap ${ifname}`;
    this.#vnet = vnetHdr ? VNET_HDR_LEN : 0;
    this.checksumOffload = vnetHdr;
    this.gsoTcp = vnetHdr;
    this.granted = vnetHdr ? tuntapGrantOffloads(fd, segmentation) : 0;
    this.gsoUdp = (this.granted & sys.TUN_F_USO4) !== 0;
    this.guestQueueFrames = this.granted & (sys.TUN_F_TSO4 | sys.TUN_F_TSO6)
      ? undefined
      : TAP_QUEUE_FRAMES;
  }

  /**
   * Reads frames until the device is empty, the batch is full or `limit`
   * frames are read. The device is watched level-triggered, so frames left
   * behind by a limit are reported again at once.
   */
  receive(batch: FrameBatch, limit = batch.capacity): number {
    const max = batch.maxFrame;
    let n = 0;
    const v = this.#vnet;
    const end = Math.min(limit, batch.capacity);
    while (n < end) {
      // The vnet header, if any, lands in the headroom just before the frame.
      batch.iov.setRawAt(n, batch.addrs, n, TAP_HEADROOM - v, max + v);
      const rc = sys.readv(this.fd, batch.iov, 1, n);
      if (rc === -sys.Errno.EAGAIN || rc === -sys.Errno.EINTR) break;
      if (rc < v) {
        if (n === 0) return rc < 0 ? rc : -sys.Errno.EPROTO; // an error, or not even a header
        break;
      }
      const len = rc - v;
      if (v > 0) batch.setFromVnetHeader(n, len, batch.slots[n], TAP_HEADROOM - v);
      else batch.setPlain(n, len);
      this.stats.bytesToHost += len;
      n++;
    }
    this.stats.framesToHost += n;
    batch.count = n;
    return n;
  }

  /** Writes frames one by one, each with its vnet header; stops at the first the device refuses. */
  send(batch: FrameBatch, count: number): number {
    const v = this.#vnet;
    this.sendBlocked = false;
    for (let k = 0; k < count; k++) {
      const i = batch.order[k];
      if (v) batch.writeVnetHeader(i, batch.slots[i], TAP_HEADROOM - v);
      batch.iov.setRawAt(i, batch.addrs, i, TAP_HEADROOM - v, tapWireLen(batch.lens[i]) + v);
      const rc = sys.writev(this.fd, batch.iov, 1, i);
      if (rc < 0) {
        this.stats.writeErrors++;
        this.lastWriteError = -rc;
        this.sendBlocked = rc === -sys.Errno.EAGAIN || rc === -sys.Errno.ENOBUFS;
        return k;
      }
    }
    return count;
  }
}
