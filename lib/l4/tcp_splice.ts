/**
 * Spliced TCP: connections joined socket to socket inside the kernel, never
 * through the tap. Namespace mode only.
 *
 * # Theory of operation
 *
 * **When.** A connection between the host's loopback and the namespace's
 * loopback needs no translation: both ends are ordinary sockets. An inbound
 * `-t` connection from a host loopback client is joined to a socket that
 * connects to the namespace's loopback, and a `-T` connection accepted in
 * the namespace to a socket that connects to the host's loopback. The
 * namespace-side socket was created by the namespace worker (a socket's
 * namespace is fixed at `socket()`); this module does not care which side is
 * which, beyond the counters.
 *
 * **The flow.** A TCP_SPLICE flow: side 0 is the accepted socket (the
 * client), side 1 the socket we connect to the target. The flow goes through
 * the table's states like any other (alloc → INI → connect → TGT → TYPED →
 * ACTIVE) and is freed by the deferred pass once closed. Both sockets sit in
 * epoll tagged with the flow's sidx (`index * 2 + side`), so an event names
 * the flow and the side at once. No hash entry: no packet ever looks these
 * flows up.
 *
 * **Moving bytes.** Each direction `d` (from side `d` to side `1 - d`) owns
 * one pipe: `splice(socket → pipe)`, then `splice(pipe → peer)`, both with
 * `SPLICE_F_MOVE | SPLICE_F_NONBLOCK`, so pages change owners and bytes are
 * never copied to user space. `pending[d]` counts what sits in the pipe.
 * When a read took most of the room asked for, more is probably queued, so
 * the write says `SPLICE_F_MORE` (the kernel may hold a partial segment for
 * the next write); if the round then ends with the pipe empty, setting
 * `TCP_NODELAY` again pushes out what was held. Pipes are raised to
 * {@linkcode SPLICE_PIPE_SIZE} with `F_SETPIPE_SZ` when the kernel allows
 * (else they keep the default) and pooled ({@linkcode PipePool}): a pipe
 * left empty by a closed flow serves the next one without a `pipe2`.
 *
 * **Events and backpressure.** Sockets are registered once, edge-triggered,
 * for `EPOLLIN | EPOLLOUT | EPOLLRDHUP`; the mask never changes, so no
 * `epoll_ctl` per state change. Edge-triggered means every round must run
 * until the kernel says EAGAIN: a direction moves until its reader is dry
 * (EAGAIN with the pipe empty — with bytes in it, EAGAIN may only mean "pipe
 * full") or its writer is full. A full writer leaves bytes in the pipe: the
 * direction is marked WAIT_OUT and the reader is not read again until the
 * writer's `EPOLLOUT` edge — the pipe is the only buffer, so memory per
 * connection is bounded by two pipes and the sockets' own buffers, and the
 * sender is slowed by TCP's own flow control. A direction that has run
 * {@linkcode SPLICE_ROUNDS} rounds without finishing yields and resumes in
 * the deferred pass, so one fast connection cannot starve the others.
 *
 * **Closing.** EOF from side `d` (splice returns 0) and an empty pipe `d` →
 * `shutdown(SHUT_WR)` on side `1 - d`: the half-close passes through. When
 * both directions are done, both sockets are closed (the kernel finishes
 * sending and keeps TIME_WAIT) and the empty pipes go back to the pool.
 * `EPOLLERR`, a failed splice or shutdown, a refused or timed-out connect →
 * reset: `SO_LINGER` 0 on both sockets, so `close` sends RSTs, and the
 * pipes (possibly holding bytes) are closed. Either way the fds leave epoll
 * at once and the flow is freed by the deferred pass.
 *
 * @module
 */

import {
  addrWordsIs4,
  type FlowSide,
  flowSidx,
  type FlowTable,
  FlowType,
  Pif,
} from "../flow/table.ts";
import { log, logDebug, logEnabled, LogLevel } from "../log.ts";
import type { Loop } from "../loop.ts";
import * as sys from "../sys/mod.ts";

/** Pipe size asked for with `F_SETPIPE_SZ`. */
export const SPLICE_PIPE_SIZE = 1 << 20;
/** Empty pipes kept for reuse. */
export const SPLICE_POOL_MAX = 32;
/** Read/write rounds per direction before yielding to other connections. */
export const SPLICE_ROUNDS = 16;
/** A connect to the target not finished after this long resets the connection. */
export const SPLICE_CONNECT_TIMEOUT_MS = 10_000;

const MOVE = sys.SPLICE_F_MOVE | sys.SPLICE_F_NONBLOCK;
const EAGAIN = -sys.Errno.EAGAIN;

/** A pipe: read end, write end, capacity in bytes. */
export interface Pipe {
  /** Read end. */
  readonly r: number;
  /** Write end. */
  readonly w: number;
  /** Capacity in bytes (`F_GETPIPE_SZ`). */
  readonly size: number;
}

/** Counters of a {@linkcode PipePool}. */
export interface PipePoolStats {
  /** Pipes created. */
  created: number;
  /** Pipes handed out from the pool instead of created. */
  reused: number;
  /** Pipes closed (pool full, or not empty). */
  closed: number;
  /** Pipes whose size could not be raised. */
  smallPipes: number;
}

/**
 * A bounded pool of empty non-blocking pipes of (ideally) `size` bytes: see
 * the module comment.
 */
export class PipePool {
  /** Counters. */
  readonly stats: PipePoolStats = { created: 0, reused: 0, closed: 0, smallPipes: 0 };
  /** Size asked for. */
  readonly size: number;
  /** Most pipes kept. */
  readonly max: number;
  readonly #free: Pipe[] = [];
  readonly #fds = new Int32Array(2);

  /** An empty pool of pipes of `size` bytes, keeping at most `max`. */
  constructor(size = SPLICE_PIPE_SIZE, max = SPLICE_POOL_MAX) {
    this.size = size;
    this.max = max;
  }

  /** Pipes waiting in the pool. */
  get available(): number {
    return this.#free.length;
  }

  /** An empty pipe, from the pool or new; null if `pipe2` fails (out of descriptors). */
  take(): Pipe | null {
    const p = this.#free.pop();
    if (p !== undefined) {
      this.stats.reused++;
      return p;
    }
    return this.#create();
  }

  #create(): Pipe | null {
    if (sys.pipe2(this.#fds, sys.O_NONBLOCK | sys.O_CLOEXEC) < 0) return null;
    const r = this.#fds[0], w = this.#fds[1];
    // Raising can fail (EPERM past the user's pipe-pages limit); the default size works too.
    if (sys.fcntl(w, sys.F_SETPIPE_SZ, this.size) < 0) this.stats.smallPipes++;
    const size = sys.fcntl(w, sys.F_GETPIPE_SZ);
    this.stats.created++;
    return { r, w, size: size > 0 ? size : 65536 };
  }

  /** Returns a pipe known to be empty; it is kept if there is room, else closed. */
  give(p: Pipe): void {
    if (this.#free.length < this.max) this.#free.push(p);
    else this.discard(p);
  }

  /** Closes a pipe (one that may hold bytes). */
  discard(p: Pipe): void {
    sys.close(p.r);
    sys.close(p.w);
    this.stats.closed++;
  }

  /** Creates pipes until `n` wait in the pool (at most {@linkcode max}). */
  fill(n: number): void {
    while (this.#free.length < Math.min(n, this.max)) {
      const p = this.#create();
      if (p === null) return;
      this.#free.push(p);
    }
  }

  /** Closes every pooled pipe. */
  close(): void {
    for (const p of this.#free.splice(0)) this.discard(p);
  }
}

/** What has happened on a spliced connection. */
export const SpliceEv = {
  /** The target connect is in progress. */
  CONNECTING: 1 << 0,
  /** Both sockets connected; bytes move. */
  ESTABLISHED: 1 << 1,
  /** EOF read from side 0. */
  FIN_FROM_0: 1 << 2,
  /** EOF read from side 1. */
  FIN_FROM_1: 1 << 3,
  /** Direction 0 → 1 finished: side 1 was shut down for writing. */
  DONE_0: 1 << 4,
  /** Direction 1 → 0 finished: side 0 was shut down for writing. */
  DONE_1: 1 << 5,
  /** Closed; the flow is freed by the deferred pass. */
  CLOSED: 1 << 6,
} as const;

const EV_NAMES = Object.keys(SpliceEv);
const FIN_FROM = [SpliceEv.FIN_FROM_0, SpliceEv.FIN_FROM_1] as const;
const DONE = [SpliceEv.DONE_0, SpliceEv.DONE_1] as const;

/** Per-direction duties, as bits `flag << d`. */
const WAIT_OUT = 1; // bytes left in pipe d: wait for EPOLLOUT on side 1 - d
const RESUME = 4; // direction d yielded: continue in the deferred pass
const CORKED = 16; // the last write to side 1 - d said SPLICE_F_MORE

/** Counters of the splice path. */
export interface TcpSpliceStats {
  /** Connections opened. */
  connections: number;
  /** Connections whose target refused (or did not answer) the connect. */
  refused: number;
  /** Connections closed after both directions finished. */
  closed: number;
  /** Connections reset (errors, refusals). */
  resets: number;
  /** Connections refused because the flow table was full. */
  tableFull: number;
  /** Bytes delivered to the namespace side. */
  bytesToGuest: number;
  /** Bytes delivered to the host side. */
  bytesToHost: number;
  /** Directions that yielded before finishing (fairness). */
  yields: number;
}

/** A spliced connection: the TCP_SPLICE flow's data. */
class SpliceConn {
  /** Socket per side; -1 once closed. */
  readonly fds: Int32Array = new Int32Array(2);
  /** Pipe per direction: `pipes[d]` carries side d → side 1 - d. */
  readonly pipes: (Pipe | null)[] = [null, null];
  /** Bytes sitting in each pipe. */
  readonly pending: Float64Array = new Float64Array(2);
  events = 0;
  flags = 0;
  /** Which side is in the namespace (for the byte counters): 0, 1, or -1 unknown. */
  readonly nsSide: number;
  readonly startMs: number = performance.now();

  constructor(fd0: number, fd1: number, nsSide: number) {
    this.fds[0] = fd0;
    this.fds[1] = fd1;
    this.nsSide = nsSide;
  }
}

/** The splice path; see the module comment. */
export class TcpSplice {
  /** Counters. */
  readonly stats: TcpSpliceStats = {
    connections: 0,
    refused: 0,
    closed: 0,
    resets: 0,
    tableFull: 0,
    bytesToGuest: 0,
    bytesToHost: 0,
    yields: 0,
  };
  /** The pipe pool. */
  readonly pipes: PipePool;
  readonly #loop: Loop;
  readonly #flows: FlowTable;
  readonly #fdType: number;
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #saLen = new Uint32Array(1);
  readonly #addr = new Uint8Array(16);
  readonly #errBuf = new Uint8Array(4);
  readonly #errLen = new Uint32Array(1);
  readonly #linger = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]); // l_onoff 1, l_linger 0

  /** Registers with the reactor and the flow table. */
  constructor(loop: Loop, flows: FlowTable, pipes: PipePool = new PipePool()) {
    this.#loop = loop;
    this.#flows = flows;
    this.pipes = pipes;
    this.#fdType = loop.defineType("tcp-splice", (sidx, events) => this.#ready(sidx, events));
    flows.setHandlers(FlowType.TCP_SPLICE, {
      deferred: (index) => this.#deferred(index),
      timer: (index, now) => this.#timer(index, now),
    });
  }

  // -------------------------------------------------------------------------
  // Opening

  /**
   * Joins connected socket `fd0` (a client: side 0, endpoints `ini`) to a
   * new connection from socket `fd1` to the far end of `tgt` (its `e`
   * address and port; `o` is filled in from the socket once connecting).
   * Both sockets must be non-blocking TCP sockets of `tgt`'s family. On
   * success the flow owns both fds; on failure (table full, connect refused
   * at once, no pipe) `fd0` is reset, `fd1` closed, and false returned; a
   * refusal that comes later resets `fd0` the same way.
   */
  open(fd0: number, fd1: number, ini: FlowSide, tgt: FlowSide): boolean {
    const flows = this.#flows;
    const index = flows.alloc();
    if (index < 0) {
      this.stats.tableFull++;
      this.#abandon(fd0, fd1);
      return false;
    }
    flows.setIni(index, ini);
    const v6 = !addrWordsIs4(tgt.eaddr);
    const sa = this.#sa;
    const addr = this.#addr;
    for (let i = 0; i < 16; i++) addr[i] = tgt.eaddr[i >> 2] >>> (24 - 8 * (i & 3));
    const len = v6
      ? sys.sockaddrIn6(sa, addr, tgt.eport)
      : sys.sockaddrIn4(sa, addr, tgt.eport, 12);
    sys.setsockoptInt(fd1, sys.IPPROTO_TCP, sys.TCP_NODELAY, 1);
    const rc = sys.connect(fd1, sa, len);
    if (rc < 0 && rc !== -sys.Errno.EINPROGRESS) {
      flows.cancel(index);
      this.stats.refused++;
      logDebug(`splice: connect to port ${tgt.eport} failed at once: ${sys.errnoName(-rc)}`);
      this.#abandon(fd0, fd1);
      return false;
    }
    this.#localSide(fd1, tgt);
    flows.setTgt(index, tgt);
    const p0 = this.pipes.take();
    const p1 = p0 === null ? null : this.pipes.take();
    if (p0 === null || p1 === null) {
      if (p0 !== null) this.pipes.give(p0);
      flows.cancel(index);
      logDebug("splice: no pipe (out of descriptors)");
      this.#abandon(fd0, fd1);
      return false;
    }
    const nsSide = ini.pif === Pif.SPLICE ? 0 : tgt.pif === Pif.SPLICE ? 1 : -1;
    const c = new SpliceConn(fd0, fd1, nsSide);
    c.pipes[0] = p0;
    c.pipes[1] = p1;
    sys.setsockoptInt(fd0, sys.IPPROTO_TCP, sys.TCP_NODELAY, 1);
    flows.setType(index, FlowType.TCP_SPLICE, c);
    flows.activate(index);
    this.stats.connections++;
    if (logEnabled(LogLevel.debug)) {
      flows.log(
        index,
        LogLevel.debug,
        `${flows.formatSide(flowSidx(index, 0))} => ${flows.formatSide(flowSidx(index, 1))}`,
      );
    }
    const mask = (sys.EPOLLIN | sys.EPOLLOUT | sys.EPOLLRDHUP | sys.EPOLLET) >>> 0;
    for (let side = 0; side < 2; side++) {
      const added = this.#loop.add(c.fds[side], mask, this.#fdType, flowSidx(index, side as 0 | 1));
      if (added < 0) {
        flows.log(index, LogLevel.error, `epoll_ctl: ${sys.errnoName(-added)}`);
        this.#close(index, c, true); // removing an fd that was never added is harmless
        return false;
      }
    }
    if (rc === 0) this.#established(index, c);
    else this.#event(index, c, SpliceEv.CONNECTING);
    return true;
  }

  /** Fills `side.oaddr`/`oport` from the local address of `fd`. */
  #localSide(fd: number, side: FlowSide): void {
    this.#saLen[0] = this.#sa.length;
    if (sys.getsockname(fd, this.#sa, this.#saLen) < 0) return;
    const local = sys.sockaddrDecode(this.#sa, this.#saLen[0]);
    if (local === null || local.family === "unix") return;
    const words = side.oaddr;
    if (local.family === 4) {
      words[0] = words[1] = 0;
      words[2] = 0xffff;
      words[3] = ((local.addr[0] << 24) | (local.addr[1] << 16) | (local.addr[2] << 8) |
        local.addr[3]) >>> 0;
    } else {
      for (let i = 0; i < 4; i++) {
        const o = i * 4;
        words[i] = ((local.addr[o] << 24) | (local.addr[o + 1] << 16) | (local.addr[o + 2] << 8) |
          local.addr[o + 3]) >>> 0;
      }
    }
    side.oport = local.port;
  }

  /** Resets `fd0` (the client learns at once) and closes `fd1`. */
  #abandon(fd0: number, fd1: number): void {
    sys.setsockopt(fd0, sys.SOL_SOCKET, sys.SO_LINGER, this.#linger);
    sys.close(fd0);
    sys.close(fd1);
    this.stats.resets++;
  }

  // -------------------------------------------------------------------------
  // Events

  #event(index: number, c: SpliceConn, ev: number): void {
    if (c.events & ev) return;
    c.events |= ev;
    if (logEnabled(LogLevel.debug)) {
      this.#flows.log(index, LogLevel.debug, `event ${EV_NAMES[31 - Math.clz32(ev)]}`);
    }
  }

  #ready(sidx: number, events: number): void {
    const index = sidx >>> 1;
    const side = sidx & 1;
    const c = this.#flows.data<SpliceConn>(index, FlowType.TCP_SPLICE);
    if (c.events & SpliceEv.CLOSED) return; // a stale event from this turn's batch
    if (c.events & SpliceEv.CONNECTING) {
      if (side === 1 && events & (sys.EPOLLOUT | sys.EPOLLERR | sys.EPOLLHUP)) {
        this.#connectDone(index, c);
      }
      return; // side 0's data waits in its socket until the target answers
    }
    if (events & sys.EPOLLERR) return this.#close(index, c, true);
    const hup = (events & sys.EPOLLHUP) !== 0;
    // Readable (data, EOF) on this side: direction `side`, unless it waits for its writer.
    if (events & (sys.EPOLLIN | sys.EPOLLRDHUP) || hup) {
      if (!(c.flags & (WAIT_OUT << side))) this.#move(index, c, side);
    }
    // Writable on this side: the direction into it, if it was waiting.
    const into = 1 - side;
    if (events & sys.EPOLLOUT || hup) {
      if (c.flags & (WAIT_OUT << into)) {
        c.flags &= ~(WAIT_OUT << into);
        this.#move(index, c, into);
      }
    }
  }

  #connectDone(index: number, c: SpliceConn): void {
    this.#errLen[0] = 4;
    const rc = sys.getsockopt(c.fds[1], sys.SOL_SOCKET, sys.SO_ERROR, this.#errBuf, this.#errLen);
    const err = rc < 0 ? -rc : new DataView(this.#errBuf.buffer).getInt32(0, true);
    if (err !== 0) {
      this.stats.refused++;
      this.#flows.log(index, LogLevel.debug, `connect failed: ${sys.errnoName(err)}`);
      return this.#close(index, c, true);
    }
    c.events &= ~SpliceEv.CONNECTING;
    this.#established(index, c);
  }

  #established(index: number, c: SpliceConn): void {
    this.#event(index, c, SpliceEv.ESTABLISHED);
    // Whatever arrived meanwhile raised its edge already: move it now.
    this.#move(index, c, 0);
    if (!(c.events & SpliceEv.CLOSED)) this.#move(index, c, 1);
  }

  // -------------------------------------------------------------------------
  // Moving bytes

  /** Moves direction `d` (side d → side 1 - d) until dry, blocked, yielded or finished. */
  #move(index: number, c: SpliceConn, d: number): void {
    if (c.events & (DONE[d] | SpliceEv.CLOSED)) return;
    const src = c.fds[d];
    const dst = c.fds[1 - d];
    const p = c.pipes[d]!;
    const pending = c.pending;
    for (let round = 0;; round++) {
      if (round === SPLICE_ROUNDS) {
        c.flags |= RESUME << d;
        this.stats.yields++;
        this.#flows.defer(index);
        break;
      }
      let dry = false;
      let more = false;
      if (!(c.events & FIN_FROM[d])) {
        const room = p.size - pending[d];
        if (room > 0) {
          const before = pending[d];
          const n = sys.splice(src, p.w, room, MOVE);
          if (n > 0) {
            pending[d] += n;
            more = n >= room - (room >>> 2);
          } else if (n === 0) {
            this.#event(index, c, FIN_FROM[d]);
          } else if (n === EAGAIN) {
            // With bytes in the pipe, EAGAIN may only mean "pipe full".
            dry = before === 0;
          } else {
            return this.#fail(index, c, "splice from socket", n);
          }
        }
      }
      if (pending[d] > 0) {
        const m = sys.splice(p.r, dst, pending[d], more ? MOVE | sys.SPLICE_F_MORE : MOVE);
        if (m > 0) {
          pending[d] -= m;
          this.#count(index, c, d, m);
          if (more) c.flags |= CORKED << d;
          else c.flags &= ~(CORKED << d);
        } else if (m === EAGAIN || m === 0) {
          c.flags |= WAIT_OUT << d;
          break;
        } else {
          return this.#fail(index, c, "splice to socket", m);
        }
      }
      if (pending[d] === 0 && (dry || c.events & FIN_FROM[d])) break;
    }
    if (pending[d] === 0 && c.flags & (CORKED << d)) {
      // The last write asked the kernel to wait for more, and none came: push it out.
      c.flags &= ~(CORKED << d);
      sys.setsockoptInt(dst, sys.IPPROTO_TCP, sys.TCP_NODELAY, 1);
    }
    if (pending[d] === 0 && c.events & FIN_FROM[d]) {
      const rc = sys.shutdown(dst, sys.SHUT_WR);
      if (rc < 0) return this.#fail(index, c, "shutdown", rc);
      this.#event(index, c, DONE[d]);
      if (
        (c.events & (SpliceEv.DONE_0 | SpliceEv.DONE_1)) === (SpliceEv.DONE_0 | SpliceEv.DONE_1)
      ) {
        this.#close(index, c, false);
      }
    }
  }

  #count(index: number, c: SpliceConn, d: number, n: number): void {
    this.#flows.bytesFrom[index * 2 + d] += n;
    if (c.nsSide === 1 - d) this.stats.bytesToGuest += n;
    else if (c.nsSide === d) this.stats.bytesToHost += n;
  }

  #fail(index: number, c: SpliceConn, what: string, rc: number): void {
    this.#flows.log(index, LogLevel.debug, `${what}: ${sys.errnoName(-rc)}`);
    this.#close(index, c, true);
  }

  // -------------------------------------------------------------------------
  // Deferred work, timeouts, closing

  /** End of turn: resume yielded directions; free a closed connection. */
  #deferred(index: number): boolean {
    const c = this.#flows.data<SpliceConn>(index, FlowType.TCP_SPLICE);
    for (let d = 0; d < 2; d++) {
      if (c.events & SpliceEv.CLOSED) break;
      if (c.flags & (RESUME << d)) {
        c.flags &= ~(RESUME << d);
        this.#move(index, c, d);
      }
    }
    return (c.events & SpliceEv.CLOSED) !== 0;
  }

  /** Once a second: the connect timeout. */
  #timer(index: number, now: number): boolean {
    const c = this.#flows.data<SpliceConn>(index, FlowType.TCP_SPLICE);
    if (c.events & SpliceEv.CONNECTING && now - c.startMs > SPLICE_CONNECT_TIMEOUT_MS) {
      this.stats.refused++;
      this.#close(index, c, true);
    }
    return (c.events & SpliceEv.CLOSED) !== 0;
  }

  /**
   * Ends a connection: both sockets leave epoll and are closed (with
   * `reset`, with `SO_LINGER` 0 so the peers get RSTs); empty pipes go back
   * to the pool. The flow is freed by the deferred pass.
   */
  #close(index: number, c: SpliceConn, reset: boolean): void {
    if (c.events & SpliceEv.CLOSED) return;
    for (let side = 0; side < 2; side++) {
      const fd = c.fds[side];
      if (fd < 0) continue;
      this.#loop.remove(fd);
      if (reset) sys.setsockopt(fd, sys.SOL_SOCKET, sys.SO_LINGER, this.#linger);
      sys.close(fd);
      c.fds[side] = -1;
    }
    for (let d = 0; d < 2; d++) {
      const p = c.pipes[d];
      if (p === null) continue;
      if (c.pending[d] === 0) this.pipes.give(p);
      else this.pipes.discard(p);
      c.pipes[d] = null;
    }
    c.events = (c.events & ~SpliceEv.CONNECTING) | SpliceEv.CLOSED;
    if (reset) this.stats.resets++;
    else this.stats.closed++;
    if (logEnabled(LogLevel.debug)) {
      log(LogLevel.debug, `flow ${index} TCP_SPLICE: ${reset ? "reset" : "closed"}`);
    }
    this.#flows.defer(index);
  }

  /** Closes the pooled pipes (at exit). */
  close(): void {
    this.pipes.close();
  }
}
