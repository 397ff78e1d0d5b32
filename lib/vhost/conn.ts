/**
 * One front-end's vhost-user connection: reads whole messages (and the
 * descriptors that come with them) off the UNIX socket without blocking,
 * hands each to the {@linkcode VhostUserBackend}, writes the replies.
 *
 * # Theory of operation
 *
 * A front-end sends each message with one `sendmsg`, its descriptors
 * attached to the first byte. {@linkcode VhostUserConn.readable} therefore
 * reads the 12-byte header alone, with `SCM_RIGHTS` (so the descriptors
 * land with their own message), then the payload it announces. A payload
 * not all there yet (the socket had only part of it) is kept, and the read
 * goes on at the next readable event; nothing blocks the reactor.
 *
 * A malformed message, a request the back-end refuses, a reply that cannot
 * be written whole, or the end of the stream makes `readable` return
 * false with {@linkcode VhostUserConn.error} set: the owner closes the
 * connection ({@linkcode VhostUserConn.close}), which also resets the
 * back-end, unmapping the guest's memory and closing its eventfds, so the
 * next front-end starts from nothing.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";
import { VhostUserBackend } from "./backend.ts";
import { VHOST_USER_HDR_SIZE, VHOST_USER_MAX_PAYLOAD, VhostUserMsg } from "./protocol.ts";

/** Counters of one connection. */
export interface VhostUserConnStats {
  /** Messages handled. */
  messages: number;
  /** Replies written. */
  replies: number;
}

/** One front-end's connection; see the module comment. */
export class VhostUserConn {
  /** Counters (shared by the connections of one run when the caller passes them in). */
  readonly stats: VhostUserConnStats;
  /** The back-end state this connection drives. */
  readonly backend: VhostUserBackend;
  /** Why the connection must end (after `readable` returned false). */
  error = "";

  readonly #fd: number;
  readonly #buf = new Uint8Array(VHOST_USER_HDR_SIZE + VHOST_USER_MAX_PAYLOAD);
  readonly #view = new DataView(this.#buf.buffer);
  readonly #reply = new Uint8Array(VHOST_USER_HDR_SIZE + 64);
  readonly #fds = new Int32Array(sys.MAX_PASSED_FDS);
  readonly #msg = new VhostUserMsg();
  /** Bytes of the current message read so far. */
  #have = 0;

  /** Serves the front-end on the connected, non-blocking socket `fd`, counting into `stats`. */
  constructor(
    fd: number,
    backend: VhostUserBackend = new VhostUserBackend(),
    stats: VhostUserConnStats = { messages: 0, replies: 0 },
  ) {
    this.#fd = fd;
    this.backend = backend;
    this.stats = stats;
    this.#fds.fill(-1);
  }

  /** The socket. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Reads and handles every whole message the socket holds. Returns true
   * to go on, false when the connection must end (see {@linkcode error}).
   */
  readable(): boolean {
    const buf = this.#buf;
    for (;;) {
      if (this.#have < VHOST_USER_HDR_SIZE) {
        // The header comes alone, so the descriptors with it are this message's.
        const rc = this.#have === 0
          ? sys.recvWithFds(this.#fd, buf, 0, VHOST_USER_HDR_SIZE, sys.MSG_DONTWAIT, this.#fds)
          : sys.recvAt(
            this.#fd,
            buf,
            this.#have,
            VHOST_USER_HDR_SIZE - this.#have,
            sys.MSG_DONTWAIT,
          );
        if (rc === -sys.Errno.EAGAIN || rc === -sys.Errno.EINTR) return true;
        if (rc <= 0) return this.#end(rc === 0 ? "the front-end closed the connection" : rc);
        this.#have += rc;
        if (this.#have < VHOST_USER_HDR_SIZE) continue;
      }
      const size = this.#view.getUint32(8, true);
      if (size > VHOST_USER_MAX_PAYLOAD) return this.#end(`payload of ${size} bytes`);
      const total = VHOST_USER_HDR_SIZE + size;
      while (this.#have < total) {
        const rc = sys.recvAt(this.#fd, buf, this.#have, total - this.#have, sys.MSG_DONTWAIT);
        if (rc === -sys.Errno.EAGAIN || rc === -sys.Errno.EINTR) return true;
        if (rc <= 0) return this.#end(rc === 0 ? "the front-end closed mid-message" : rc);
        this.#have += rc;
      }
      this.#have = 0;
      if (!this.#handle(total)) return false;
    }
  }

  #handle(len: number): boolean {
    const m = this.#msg;
    const bad = m.wrap(this.#buf, 0, len);
    if (bad !== null) return this.#end(bad);
    this.stats.messages++;
    const n = this.backend.handle(m, this.#fds, this.#reply);
    this.#fds.fill(-1); // the back-end kept or closed every one
    if (n < 0) return this.#end(this.backend.error);
    if (n > 0) {
      const rc = sys.sendAt(this.#fd, this.#reply, 0, n, sys.MSG_DONTWAIT | sys.MSG_NOSIGNAL);
      if (rc !== n) return this.#end(rc < 0 ? rc : "a reply written in part");
      this.stats.replies++;
    }
    return true;
  }

  #end(why: string | number): false {
    this.error = typeof why === "number" ? sys.errnoName(-why) : why;
    this.#closePending();
    return false;
  }

  /** Closes the descriptors that came with a message not handled yet. */
  #closePending(): void {
    for (let i = 0; i < this.#fds.length; i++) {
      if (this.#fds[i] >= 0) sys.close(this.#fds[i]);
    }
    this.#fds.fill(-1);
  }

  /**
   * Closes the socket and resets the back-end (memory unmapped, eventfds
   * closed), and closes the descriptors of a message cut short: a
   * front-end that goes away mid-message (found by the vhost-user fuzzer)
   * would otherwise leave them open.
   */
  close(): void {
    this.#closePending();
    this.backend.reset();
    sys.close(this.#fd);
  }
}
