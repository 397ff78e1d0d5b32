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
 * @module
 */

import * as sys from "../sys/mod.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend, tapWireLen } from "./tap.ts";

/** Size of `struct ifreq`. */
const IFREQ_SIZE = 40;
/** Offset of `ifr_flags` in `struct ifreq`. */
const IFR_FLAGS = 16;

/** A tap device opened by {@linkcode tuntapOpen}. */
export interface TuntapDevice {
  /** The device fd (non-blocking, close-on-exec). */
  readonly fd: number;
  /** The interface name the kernel gave it. */
  readonly name: string;
}

/**
 * Creates (or attaches to) tap interface `name` in the calling thread's
 * network namespace. Returns the device, or -errno. `flags` are the IFF_*
 * bits for TUNSETIFF (default: a tap without packet-information prefix).
 */
export function tuntapOpen(
  name: string,
  flags: number = sys.IFF_TAP | sys.IFF_NO_PI,
): TuntapDevice | number {
  const nameBytes = new TextEncoder().encode(name);
  if (nameBytes.length === 0 || nameBytes.length >= sys.IFNAMSIZ) return -sys.Errno.EINVAL;
  const fd = sys.open("/dev/net/tun", sys.O_RDWR | sys.O_NONBLOCK | sys.O_CLOEXEC);
  if (fd < 0) return fd;
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(nameBytes, 0);
  new DataView(ifr.buffer).setUint16(IFR_FLAGS, flags, true);
  const rc = sys.ioctl(fd, sys.TUNSETIFF, ifr);
  if (rc < 0) {
    sys.close(fd);
    return rc;
  }
  const end = ifr.indexOf(0);
  return { fd, name: new TextDecoder().decode(ifr.subarray(0, end < 0 ? sys.IFNAMSIZ : end)) };
}

/** Counters of the tap backend. */
export interface TuntapStats {
  /** Frames read from the guest. */
  framesIn: number;
  /** Bytes of those frames. */
  bytesIn: number;
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
  readonly stats: TuntapStats = { framesIn: 0, bytesIn: 0, writeErrors: 0 };
  /** The last errno of a failed write, for diagnostics. */
  lastWriteError = 0;

  /** Wraps an open tap `fd` for interface `ifname`. */
  constructor(fd: number, ifname: string) {
    this.fd = fd;
    this.name = `tap ${ifname}`;
  }

  /** Reads frames until the device is empty or the batch is full. */
  receive(batch: FrameBatch): number {
    const max = batch.maxFrame;
    let n = 0;
    while (n < batch.capacity) {
      batch.iov.setRaw(n, batch.addrs[n] + TAP_HEADROOM, max);
      const rc = sys.readv(this.fd, batch.iov, 1, n);
      if (rc === -sys.Errno.EAGAIN || rc === -sys.Errno.EINTR) break;
      if (rc < 0) {
        if (n === 0) return rc;
        break;
      }
      batch.lens[n] = rc;
      this.stats.bytesIn += rc;
      n++;
    }
    this.stats.framesIn += n;
    batch.count = n;
    return n;
  }

  /** Writes frames one by one; stops at the first the device refuses. */
  send(batch: FrameBatch, count: number): number {
    for (let i = 0; i < count; i++) {
      batch.iov.setRaw(i, batch.addrs[i] + TAP_HEADROOM, tapWireLen(batch.lens[i]));
      const rc = sys.writev(this.fd, batch.iov, 1, i);
      if (rc < 0) {
        this.stats.writeErrors++;
        this.lastWriteError = -rc;
        return i;
      }
    }
    return count;
  }
}
