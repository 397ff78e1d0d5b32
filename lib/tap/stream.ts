/**
 * The QEMU stream-socket backend (VM mode): frames over a UNIX stream socket,
 * each preceded by its length as a 4-byte big-endian number — what QEMU's
 * `-netdev stream` (and passt) speak.
 *
 * # Theory of operation
 *
 * A stream has no frame boundaries of its own, so both directions must keep
 * the length prefixes in step with the bytes, or every later frame is
 * misread.
 *
 * **Receiving.** Reads go into a staging buffer; complete frames are copied
 * from it into the batch's slots, and a partial frame (or a partial length
 * prefix) stays at the front of the buffer for the next read. A length that
 * cannot be an Ethernet frame (below 14 bytes or above the largest frame)
 * means the stream is out of step: that is fatal for this guest (-EPROTO),
 * not something to guess around.
 *
 * **Sending.** Each frame's length is written into the 4 bytes of headroom
 * in front of it (see `tap.ts`), so a batch goes out as one `sendmsg` with one
 * iovec per frame and nothing is copied. A short send ends in the middle of
 * some frame. That frame is completed before anything else is sent: the
 * socket is switched to blocking with a send timeout
 * ({@linkcode STREAM_COMPLETE_TIMEOUT_MS}) for the rest of it, which is what
 * keeps the stream in step; frames after it are dropped and counted by the
 * send path. If even that times out, the guest is not reading at all and is
 * disconnected.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";
import {
  ETH_MAX_FRAME,
  type FrameBatch,
  TAP_HEADROOM,
  type TapBackend,
  tapWireLen,
} from "./tap.ts";

/** Bytes of the length prefix. */
export const STREAM_LEN_BYTES = 4;
/** Longest wait to complete a frame that a send cut short. */
export const STREAM_COMPLETE_TIMEOUT_MS = 1000;
/** Smallest frame: an Ethernet header. */
const MIN_FRAME = 14;
/** Staging buffer: room for several frames per read. */
const STAGING_SIZE = 1 << 20;

/** Counters of the stream backend. */
export interface StreamStats {
  /** Frames read from the guest. */
  framesToHost: number;
  /** Bytes read (prefixes included). */
  bytesToHost: number;
  /** Sends that ended inside a frame and were completed. */
  completed: number;
  /** Guests disconnected because the stream went out of step or stalled. */
  desyncs: number;
}

/** One guest connection at a time over a stream socket; see the module comment. */
export class StreamBackend implements TapBackend {
  /** For logs. */
  readonly name = "qemu stream socket";
  /** QEMU's stream protocol has no vnet header: every checksum must be right. */
  readonly checksumOffload = false;
  /** Nor GSO: frames toward the guest are at most its MTU (the guest's RSC coalescer is ours). */
  readonly gsoTcp = false;
  /** See `TapBackend.sendBlocked`. */
  sendBlocked = false;
  /** Counters. */
  readonly stats: StreamStats = { framesToHost: 0, bytesToHost: 0, completed: 0, desyncs: 0 };
  #fd = -1;
  readonly #staging = new Uint8Array(STAGING_SIZE);
  #staged = 0;
  readonly #hdr = new sys.MmsgHdrArray(1);
  readonly #timeval = new BigInt64Array([
    BigInt(Math.floor(STREAM_COMPLETE_TIMEOUT_MS / 1000)),
    BigInt((STREAM_COMPLETE_TIMEOUT_MS % 1000) * 1000),
  ]);

  /** The connected socket, or -1 with no guest. */
  get fd(): number {
    return this.#fd;
  }

  /** Takes `fd` (a connected, non-blocking stream socket) as the guest. */
  attach(fd: number): void {
    this.#fd = fd;
    this.#staged = 0;
  }

  /** Forgets the guest and closes its socket. */
  detach(): void {
    if (this.#fd >= 0) sys.close(this.#fd);
    this.#fd = -1;
    this.#staged = 0;
  }

  /** Reads what the socket has and hands over every complete frame. */
  receive(batch: FrameBatch): number {
    batch.count = 0;
    if (this.#fd < 0) return 0;
    const st = this.#staging;
    let n = 0;
    for (;;) {
      // Hand over complete frames first: they may already be staged.
      let off = 0;
      while (n < batch.capacity && this.#staged - off >= STREAM_LEN_BYTES) {
        const len = ((st[off] << 24) | (st[off + 1] << 16) | (st[off + 2] << 8) | st[off + 3]) >>>
          0;
        if (len < MIN_FRAME || len > ETH_MAX_FRAME || len > batch.maxFrame) {
          this.stats.desyncs++;
          return -sys.Errno.EPROTO;
        }
        if (this.#staged - off < STREAM_LEN_BYTES + len) break;
        batch.slots[n].set(
          st.subarray(off + STREAM_LEN_BYTES, off + STREAM_LEN_BYTES + len),
          TAP_HEADROOM,
        );
        batch.setPlain(n++, len);
        off += STREAM_LEN_BYTES + len;
      }
      if (off > 0) {
        st.copyWithin(0, off, this.#staged);
        this.#staged -= off;
      }
      if (n === batch.capacity) break;
      const rc = sys.recvAt(this.#fd, st, this.#staged, st.length - this.#staged, sys.MSG_DONTWAIT);
      if (rc === -sys.Errno.EAGAIN || rc === -sys.Errno.EINTR) break;
      if (rc <= 0) {
        if (n > 0) break; // deliver what we have; the error comes back next time
        return rc === 0 ? -sys.Errno.ECONNRESET : rc;
      }
      this.#staged += rc;
      this.stats.bytesToHost += rc;
    }
    batch.count = n;
    this.stats.framesToHost += n;
    return n;
  }

  /** Sends frames with their length prefixes in one call; never leaves a frame half-sent. */
  send(batch: FrameBatch, count: number): number {
    this.sendBlocked = false;
    if (this.#fd < 0 || count === 0) return 0;
    // The iovecs go in send order: entry k for the frame in slot order[k].
    const iov = batch.iov;
    let total = 0;
    for (let k = 0; k < count; k++) {
      const i = batch.order[k];
      const len = tapWireLen(batch.lens[i]);
      const slot = batch.slots[i];
      const p = TAP_HEADROOM - STREAM_LEN_BYTES;
      slot[p] = len >>> 24;
      slot[p + 1] = len >>> 16;
      slot[p + 2] = len >>> 8;
      slot[p + 3] = len;
      iov.setRawAt(k, batch.addrs, i, p, STREAM_LEN_BYTES + len);
      total += STREAM_LEN_BYTES + len;
    }
    const hdr = this.#hdr;
    hdr.setName(0, null);
    hdr.setIov(0, iov, count);
    hdr.setControl(0, null);
    const sent = sys.sendmsg(this.#fd, hdr, sys.MSG_DONTWAIT | sys.MSG_NOSIGNAL);
    if (sent === total) return count;
    if (sent <= 0) {
      this.sendBlocked = sent === -sys.Errno.EAGAIN;
      return 0; // nothing went: the stream is still in step
    }
    this.sendBlocked = true; // the socket buffer is full
    // Find the frame the send stopped in.
    let done = 0;
    let whole = 0;
    while (whole < count) {
      const size = STREAM_LEN_BYTES + tapWireLen(batch.lens[batch.order[whole]]);
      if (done + size > sent) break;
      done += size;
      whole++;
    }
    if (done === sent) return whole;
    // Frame `whole` is cut: send the rest of it, blocking, before anything else.
    const cut = batch.order[whole];
    const slot = batch.slots[cut];
    const start = TAP_HEADROOM - STREAM_LEN_BYTES + (sent - done);
    const end = TAP_HEADROOM + tapWireLen(batch.lens[cut]);
    if (!this.#complete(slot, start, end)) {
      this.stats.desyncs++;
      this.sendBlocked = false;
      this.detach(); // not completed: the stream cannot be trusted any more
      return whole;
    }
    this.stats.completed++;
    return whole + 1;
  }

  /** Writes `buf[start..end)` to the socket, blocking up to the timeout. */
  #complete(buf: Uint8Array, start: number, end: number): boolean {
    const fd = this.#fd;
    const flags = sys.fcntl(fd, sys.F_GETFL);
    sys.fcntl(fd, sys.F_SETFL, flags & ~sys.O_NONBLOCK);
    sys.setsockopt(fd, sys.SOL_SOCKET, sys.SO_SNDTIMEO, new Uint8Array(this.#timeval.buffer));
    let off = start;
    while (off < end) {
      const rc = sys.sendAt(fd, buf, off, end - off, sys.MSG_NOSIGNAL);
      if (rc === -sys.Errno.EINTR) continue;
      if (rc <= 0) break;
      off += rc;
    }
    sys.fcntl(fd, sys.F_SETFL, flags);
    return off === end;
  }
}
