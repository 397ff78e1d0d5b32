/**
 * A JSON-lines control-socket server (`--api-socket PATH`).
 *
 * # Theory of operation
 *
 * The server frames, parses and replies; what a request means is up to the
 * {@linkcode ApiHandler} it is given, so one server carries tapir's own
 * requests and other protocols of the same shape (slirp4netns's API).
 *
 * **Socket.** A UNIX stream socket at PATH, mode 0600 set before it accepts
 * anyone (`lib/unix_socket.ts`). A live socket at PATH is an error; a stale
 * one is replaced. {@linkcode ApiServer.close} removes the file if it is
 * still ours.
 *
 * **Framing.** A request is one line of JSON text holding an object. A
 * trailing `\r` is ignored, and so are blank lines. A line over
 * {@linkcode MAX_REQUEST_BYTES} is answered with one error, and its bytes up
 * to the next newline are discarded. When the client shuts down its write
 * side with an unterminated line pending, that line is a last request (a
 * slirp4netns client sends one object without a newline, shuts down, and
 * reads the reply until end of stream). After the client's end of stream,
 * once every reply is written, the server closes the connection.
 *
 * **Replies.** The handler's return value is the whole reply; it is written
 * as `JSON.stringify(reply) + "\n"`. A handler that throws or rejects gets
 * `{"error":{"desc":"<message>"}}`, as do malformed JSON, a value that is not
 * an object and an oversize line. Replies go out in request order: while an
 * async handler is pending, the client's later requests wait in its queue.
 * A reply for a client gone meanwhile is dropped.
 *
 * **Sharing the loop.** The reactor also moves packets, so every step is
 * non-blocking and bounded. Per readiness event a client gets at most
 * {@linkcode READS_PER_EVENT} reads of one shared 64 KiB buffer (each keeps
 * only its own partial line) and at most {@linkcode REQUESTS_PER_EVENT}
 * handler calls; leftover requests are resumed in a later turn through
 * `loop.post`. A client whose queue of waiting requests is long stops being
 * read until it shrinks. Output is written at once when the socket takes it;
 * the rest is kept and EPOLLOUT watched. A client that lets more than
 * `maxOutput` bytes pile up (it does not read its replies) is disconnected.
 * Each client's fd is in the (level-triggered) epoll set only while there is
 * something to wait for: a client waiting on an async handler with nothing
 * to read or write is taken out, so a hang-up cannot make the loop spin.
 *
 * **A bounded share.** The time spent serving clients (reading, handlers,
 * writing) is charged to a token bucket that refills at
 * {@linkcode API_CPU_SHARE} of wall-clock time. When it runs dry every client
 * is taken out of the epoll set until it has refilled: fifty clients
 * polling `stats` as fast as they can get replies at that pace, and the
 * packets keep the rest of the loop. The clients themselves then mostly
 * wait, instead of spinning on the same cores.
 *
 * Nothing thrown escapes the loop handlers: a failure inside the server
 * (a bug) disconnects that client and is counted.
 *
 * @module
 */

import { logDebug, logWarn } from "../log.ts";
import type { Loop, Timer } from "../loop.ts";
import * as sys from "../sys/mod.ts";
import { listenUnix, removeUnixSocket, type UnixListener } from "../unix_socket.ts";

/** Largest request line, in bytes (without its newline). */
export const MAX_REQUEST_BYTES = 65536;

/** Default bound on a client's unsent output before it is disconnected. */
export const DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024;

/** Reads per client per readiness event. */
export const READS_PER_EVENT = 4;

/** Handler calls per client per readiness event (or resumption). */
export const REQUESTS_PER_EVENT = 64;

/** Waiting requests at which a client stops being read. */
const MAX_QUEUED = 256;

/** Connections accepted per readiness event of the listener. */
const ACCEPTS_PER_EVENT = 16;

/** Pause after accept fails for lack of fds, in ms. */
const ACCEPT_PAUSE_MS = 100;

/**
 * Share of wall-clock time the control socket may take from the loop, and
 * the burst it may spend at once (ms): past it, clients wait.
 */
export const API_CPU_SHARE = 0.02;
const API_BURST_MS = 5;

/** Output chunks are merged up to this size before a write. */
const WRITE_MERGE_BYTES = 65536;

/** Who sent a request. */
export interface ApiClientInfo {
  /** The connection's number, unique for the server's lifetime, from 1. */
  readonly id: number;
}

/**
 * Answers one request: `request` is the parsed JSON object, the return
 * value (or what its promise resolves to) the whole reply, e.g.
 * `{ return: {...} }` or `{ error: { desc: "..." } }`. Throwing (or
 * rejecting) replies `{"error":{"desc":<message>}}`.
 */
export type ApiHandler = (
  request: Record<string, unknown>,
  client: ApiClientInfo,
) => unknown | Promise<unknown>;

/**
 * A reply already serialised: a handler that answers many clients with the
 * same value (the same turn's statistics) serialises it once. `bytes` is
 * the JSON text with its newline; it is written as it is.
 */
export class ApiRawReply {
  /** The reply's line, newline included. */
  readonly bytes: Uint8Array;

  /** Wraps `value`, serialised once now. */
  constructor(value: unknown) {
    this.bytes = encoder.encode(JSON.stringify(value) + "\n");
  }
}

/** Options of {@linkcode ApiServer.open}. */
export interface ApiServerOptions {
  /** The option named in error messages; default `--api-socket`. */
  readonly option?: string;
  /** File mode of the socket; default 0o600. */
  readonly mode?: number;
  /** listen(2) backlog; default 128. */
  readonly backlog?: number;
  /** Unsent output at which a client is disconnected; default {@linkcode DEFAULT_MAX_OUTPUT}. */
  readonly maxOutput?: number;
}

/** Counters of the server. */
export interface ApiServerStats {
  /** Clients connected now. */
  clients: number;
  /** Connections accepted. */
  accepted: number;
  /** accept(2) failures other than "none pending". */
  acceptErrors: number;
  /** Requests read (valid or not; blank lines are not requests). */
  requests: number;
  /** Replies queued for writing. */
  replies: number;
  /** Replies with a top-level `error` member (the server's or the handler's). */
  errors: number;
  /** Lines over {@linkcode MAX_REQUEST_BYTES}. */
  oversize: number;
  /** Lines that are not JSON (or not UTF-8). */
  malformed: number;
  /** JSON values that are not objects. */
  notObject: number;
  /** Handlers that threw or rejected. */
  handlerErrors: number;
  /** Replies that could not be serialised (or were undefined). */
  badReplies: number;
  /** Replies dropped because their client had gone. */
  lateReplies: number;
  /** Times every client was paused because the time budget ran out. */
  throttled: number;
  /** Clients disconnected for piling up more than `maxOutput` unsent bytes. */
  dropSlowClient: number;
  /** Clients disconnected on a read or write error (reset, broken pipe). */
  dropSocketError: number;
  /** Clients disconnected by a failure inside the server (a bug). */
  dropInternalError: number;
}

/** A reply made by the server itself, waiting in a client's queue in request order. */
interface ReadyReply {
  readonly reply: unknown;
}

/** One connection. */
class Client {
  readonly info: ApiClientInfo;
  readonly fd: number;
  /** Its tag index in the epoll set. */
  readonly slot: number;
  closed = false;
  /** The client shut down its write side (or closed). */
  eof = false;
  /** Bytes of the line being received. */
  partial = new Uint8Array(0);
  partialLen = 0;
  /** Discarding an oversize line up to its newline. */
  skipping = false;
  /** Requests (lines) and server-made replies, in arrival order. */
  readonly queue: (string | ReadyReply)[] = [];
  queueHead = 0;
  /** An async handler is pending. */
  busy = false;
  /** A resumption is posted to the loop. */
  resumePosted = false;
  /** Encoded replies not written yet; the first from `outOffset`. */
  out: Uint8Array[] = [];
  outOffset = 0;
  outBytes = 0;
  /** Events the fd is registered for in the loop; 0: not registered. */
  watched = 0;

  constructor(id: number, fd: number, slot: number) {
    this.info = { id };
    this.fd = fd;
    this.slot = slot;
  }

  get queued(): number {
    return this.queue.length - this.queueHead;
  }
}

const encoder = new TextEncoder();

/** The message of a thrown value. */
function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** An error reply. */
function errorReply(desc: string): ReadyReply {
  return { reply: { error: { desc } } };
}

/** A JSON-lines control server on a UNIX socket; see the module comment. */
export class ApiServer {
  /** Counters. */
  readonly stats: ApiServerStats = {
    clients: 0,
    accepted: 0,
    acceptErrors: 0,
    requests: 0,
    replies: 0,
    errors: 0,
    oversize: 0,
    malformed: 0,
    notObject: 0,
    handlerErrors: 0,
    badReplies: 0,
    lateReplies: 0,
    throttled: 0,
    dropSlowClient: 0,
    dropSocketError: 0,
    dropInternalError: 0,
  };
  readonly #loop: Loop;
  readonly #listener: UnixListener;
  readonly #handler: ApiHandler;
  readonly #maxOutput: number;
  readonly #clientType: number;
  readonly #listenType: number;
  /** Clients by slot; null: a free slot. */
  readonly #clients: (Client | null)[] = [];
  readonly #freeSlots: number[] = [];
  readonly #readBuf = new Uint8Array(65536);
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });
  #nextId = 1;
  #listening = false;
  #acceptPause: Timer | null = null;
  #closed = false;
  /** The time budget (see the module comment), in ms, as of `#tokensAt`. */
  #tokensMs = API_BURST_MS;
  #tokensAt = performance.now();
  /** Out of budget: no client is watched until the timer refills it. */
  #paused = false;
  #unpause: Timer | null = null;

  private constructor(
    loop: Loop,
    listener: UnixListener,
    handler: ApiHandler,
    maxOutput: number,
  ) {
    this.#loop = loop;
    this.#listener = listener;
    this.#handler = handler;
    this.#maxOutput = maxOutput;
    this.#listenType = loop.defineType("api-listen", () => this.#accept());
    this.#clientType = loop.defineType("api-client", (slot, events) => this.#event(slot, events));
  }

  /**
   * Listens on `path` (mode 0600 unless `opts.mode`) and serves requests
   * with `handler` from `loop`. Throws an `Error` whose message is one line
   * for the user, starting with `--api-socket: ` (or `opts.option`).
   */
  static open(
    loop: Loop,
    path: string,
    handler: ApiHandler,
    opts: ApiServerOptions = {},
  ): ApiServer {
    const option = opts.option ?? "--api-socket";
    const listener = listenUnix(path, {
      option,
      backlog: opts.backlog ?? 128,
      mode: opts.mode ?? 0o600,
    });
    if (typeof listener === "string") throw new Error(listener);
    const server = new ApiServer(loop, listener, handler, opts.maxOutput ?? DEFAULT_MAX_OUTPUT);
    const rc = loop.add(listener.fd, sys.EPOLLIN, server.#listenType, 0);
    if (rc < 0) {
      server.close();
      throw new Error(`${option}: cannot watch ${path}: ${sys.errnoName(-rc)}`);
    }
    server.#listening = true;
    return server;
  }

  /** The socket's path. */
  get path(): string {
    return this.#listener.path;
  }

  /**
   * Closes every client and the listening socket and removes the socket
   * file if it is still the one this server made. Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const c of this.#clients) if (c !== null) this.#drop(c);
    if (this.#acceptPause !== null) this.#loop.disarm(this.#acceptPause);
    if (this.#unpause !== null) this.#loop.disarm(this.#unpause);
    if (this.#listening) this.#loop.remove(this.#listener.fd);
    this.#listening = false;
    sys.close(this.#listener.fd);
    removeUnixSocket(this.#listener);
  }

  // -------------------------------------------------------------------------
  // Accepting

  #accept(): void {
    for (let i = 0; i < ACCEPTS_PER_EVENT && !this.#closed; i++) {
      const fd = sys.accept4(this.#listener.fd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
      if (fd === -sys.Errno.EAGAIN) return;
      if (fd < 0) {
        this.stats.acceptErrors++;
        if (fd === -sys.Errno.EMFILE || fd === -sys.Errno.ENFILE || fd === -sys.Errno.ENOMEM) {
          this.#pauseAccepting(fd);
          return;
        }
        continue; // ECONNABORTED and the like: that connection is gone
      }
      const slot = this.#freeSlots.pop() ?? this.#clients.length;
      const c = new Client(this.#nextId++, fd, slot);
      this.#clients[slot] = c;
      this.stats.accepted++;
      this.stats.clients++;
      if (!this.#watch(c)) this.#drop(c);
    }
  }

  /** Out of fds: stop watching the listener (it would stay ready) for a while. */
  #pauseAccepting(rc: number): void {
    logWarn(`api: accept: ${sys.errnoName(-rc)}; pausing for ${ACCEPT_PAUSE_MS} ms`);
    this.#loop.remove(this.#listener.fd);
    this.#listening = false;
    this.#acceptPause ??= this.#loop.after(ACCEPT_PAUSE_MS, () => {
      this.#acceptPause = null;
      if (this.#closed) return;
      this.#listening = this.#loop.add(this.#listener.fd, sys.EPOLLIN, this.#listenType, 0) === 0;
    });
  }

  // -------------------------------------------------------------------------
  // Serving a client

  #event(slot: number, events: number): void {
    const c = this.#clients[slot];
    if (c === null || c === undefined) return; // a late event for a closed client
    const t0 = performance.now();
    try {
      this.#eventFor(c, events);
    } finally {
      this.#charge(t0);
    }
  }

  /**
   * Charges the time since `t0` to the budget; when it is spent, stops
   * watching every client until it has refilled.
   */
  #charge(t0: number): void {
    const now = performance.now();
    this.#tokensMs =
      Math.min(API_BURST_MS, this.#tokensMs + (now - this.#tokensAt) * API_CPU_SHARE) -
      (now - t0);
    this.#tokensAt = now;
    if (this.#tokensMs >= 0 || this.#paused || this.#closed) return;
    this.#paused = true;
    this.stats.throttled++;
    for (const c of this.#clients) if (c !== null && !this.#watch(c)) this.#dropFor(c, "epoll_ctl");
    this.#unpause = this.#loop.after(-this.#tokensMs / API_CPU_SHARE, () => {
      this.#unpause = null;
      this.#paused = false;
      for (const c of this.#clients) {
        if (c === null || this.#closed) continue;
        if (!c.busy && c.queued > 0 && !c.resumePosted) {
          c.resumePosted = true;
          this.#loop.post(() => this.#resume(c, true));
        } else if (!this.#watch(c)) this.#dropFor(c, "epoll_ctl");
      }
    });
  }

  #eventFor(c: Client, events: number): void {
    try {
      if ((events & sys.EPOLLERR) !== 0) {
        const err = sys.getsockoptInt(c.fd, sys.SOL_SOCKET, sys.SO_ERROR);
        if (err !== 0) {
          this.#dropFor(c, "socket error");
          return;
        }
      }
      if (!c.eof && c.queued < MAX_QUEUED && !this.#readSome(c)) return;
      this.#serve(c);
    } catch (e) {
      logWarn(`api: client ${c.info.id}: internal error: ${messageOf(e)}`);
      this.stats.dropInternalError++;
      this.#drop(c);
    }
  }

  /** Reads a bounded amount and splits it into lines. False if the client was dropped. */
  #readSome(c: Client): boolean {
    const buf = this.#readBuf;
    for (let i = 0; i < READS_PER_EVENT && c.queued < MAX_QUEUED; i++) {
      const n = sys.read(c.fd, buf);
      if (n === -sys.Errno.EAGAIN) return true;
      if (n < 0) {
        if (n === -sys.Errno.EINTR) continue;
        this.#dropFor(c, `read: ${sys.errnoName(-n)}`);
        return false;
      }
      if (n === 0) {
        c.eof = true;
        if (!c.skipping && c.partialLen > 0) {
          this.#line(c, c.partial.subarray(0, c.partialLen));
        }
        c.partialLen = 0;
        c.partial = new Uint8Array(0);
        return true;
      }
      this.#split(c, buf, n);
    }
    return true;
  }

  /** Splits `buf[0..n)` into lines, keeping an unterminated tail as the partial line. */
  #split(c: Client, buf: Uint8Array, n: number): void {
    let start = 0;
    const data = buf.subarray(0, n);
    while (start < n) {
      const nl = data.indexOf(0x0a, start);
      const end = nl < 0 ? n : nl;
      const piece = data.subarray(start, end);
      if (c.skipping) {
        if (nl >= 0) c.skipping = false;
      } else if (c.partialLen + piece.length > MAX_REQUEST_BYTES) {
        this.stats.requests++;
        this.stats.oversize++;
        c.queue.push(errorReply(`request over ${MAX_REQUEST_BYTES} bytes`));
        c.partialLen = 0;
        c.partial = new Uint8Array(0);
        c.skipping = nl < 0;
      } else if (nl < 0) {
        this.#keepPartial(c, piece);
      } else if (c.partialLen > 0) {
        this.#keepPartial(c, piece);
        this.#line(c, c.partial.subarray(0, c.partialLen));
        c.partialLen = 0;
      } else {
        this.#line(c, piece);
      }
      if (nl < 0) break;
      start = end + 1;
    }
  }

  #keepPartial(c: Client, piece: Uint8Array): void {
    const need = c.partialLen + piece.length;
    if (need > c.partial.length) {
      const grown = new Uint8Array(
        Math.min(MAX_REQUEST_BYTES, Math.max(need, 2 * c.partial.length, 256)),
      );
      grown.set(c.partial.subarray(0, c.partialLen));
      c.partial = grown;
    }
    c.partial.set(piece, c.partialLen);
    c.partialLen = need;
  }

  /** Queues one complete line (without its newline); blank ones are skipped. */
  #line(c: Client, bytes: Uint8Array): void {
    let text: string;
    try {
      text = this.#decoder.decode(bytes);
    } catch {
      this.stats.requests++;
      this.stats.malformed++;
      c.queue.push(errorReply("malformed JSON: not UTF-8 text"));
      return;
    }
    if (text.trim() === "") return;
    this.stats.requests++;
    c.queue.push(text);
  }

  /** Runs queued requests, writes what is ready, and updates what to wait for. */
  #serve(c: Client): void {
    let budget = REQUESTS_PER_EVENT;
    while (!c.busy && c.queued > 0 && budget > 0 && !c.closed) {
      const item = c.queue[c.queueHead];
      c.queue[c.queueHead++] = "";
      if (c.queueHead === c.queue.length) {
        c.queue.length = 0;
        c.queueHead = 0;
      }
      if (typeof item === "string") {
        budget--;
        this.#request(c, item);
      } else {
        this.#reply(c, item.reply);
      }
    }
    if (c.closed) return;
    if (!this.#flush(c)) return;
    if (!c.busy && c.queued > 0 && !c.resumePosted) {
      c.resumePosted = true;
      this.#loop.post(() => this.#resume(c, true));
    }
    if (c.eof && !c.busy && c.queued === 0 && c.outBytes === 0) {
      this.#drop(c); // all answered: the normal end of a connection
      return;
    }
    if (!this.#watch(c)) this.#dropFor(c, "epoll_ctl");
  }

  /** Continues a client's queue in a later turn (`posted`: the resumption posted by `#serve`). */
  #resume(c: Client, posted: boolean): void {
    if (posted) c.resumePosted = false;
    if (c.closed) return;
    if (this.#paused && posted) return; // the end of the pause resumes it
    const t0 = performance.now();
    try {
      this.#serve(c);
    } catch (e) {
      logWarn(`api: client ${c.info.id}: internal error: ${messageOf(e)}`);
      this.stats.dropInternalError++;
      this.#drop(c);
    } finally {
      this.#charge(t0);
    }
  }

  /** Parses and hands one request to the handler. */
  #request(c: Client, line: string): void {
    if (line.endsWith("\r")) line = line.slice(0, -1);
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      this.stats.malformed++;
      this.#reply(c, errorReply(`malformed JSON: ${messageOf(e)}`).reply);
      return;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      this.stats.notObject++;
      this.#reply(c, errorReply("request must be a JSON object").reply);
      return;
    }
    let result: unknown;
    try {
      result = this.#handler(value as Record<string, unknown>, c.info);
    } catch (e) {
      this.stats.handlerErrors++;
      this.#reply(c, errorReply(messageOf(e)).reply);
      return;
    }
    if (!isThenable(result)) {
      this.#reply(c, result);
      return;
    }
    c.busy = true;
    const settle = (reply: unknown) => {
      if (c.closed || this.#closed) {
        this.stats.lateReplies++;
        return;
      }
      this.#loop.post(() => {
        if (c.closed) {
          this.stats.lateReplies++;
          return;
        }
        c.busy = false;
        this.#reply(c, reply);
        this.#resume(c, false);
      });
    };
    Promise.resolve(result).then(settle, (e) => {
      this.stats.handlerErrors++;
      settle(errorReply(messageOf(e)).reply);
    });
  }

  /** Serialises and queues one reply. */
  #reply(c: Client, reply: unknown): void {
    if (reply instanceof ApiRawReply) {
      this.stats.replies++;
      c.out.push(reply.bytes);
      c.outBytes += reply.bytes.length;
      return;
    }
    let text: string | undefined;
    try {
      text = JSON.stringify(reply);
    } catch (e) {
      text = undefined;
      logDebug(`api: client ${c.info.id}: reply not serialisable: ${messageOf(e)}`);
    }
    if (text === undefined) {
      this.stats.badReplies++;
      reply = errorReply("internal error: the reply cannot be serialised").reply;
      text = JSON.stringify(reply);
    }
    if (typeof reply === "object" && reply !== null && "error" in reply) this.stats.errors++;
    this.stats.replies++;
    const bytes = encoder.encode(text + "\n");
    c.out.push(bytes);
    c.outBytes += bytes.length;
  }

  /** Writes queued output until the socket is full. False if the client was dropped. */
  #flush(c: Client): boolean {
    while (c.outBytes > 0) {
      if (c.out.length > 1 && c.out[0].length - c.outOffset < WRITE_MERGE_BYTES) this.#merge(c);
      const head = c.out[0];
      const n = sys.send(
        c.fd,
        head.subarray(c.outOffset),
        head.length - c.outOffset,
        sys.MSG_NOSIGNAL,
      );
      if (n === -sys.Errno.EAGAIN) break;
      if (n < 0) {
        if (n === -sys.Errno.EINTR) continue;
        this.#dropFor(c, `write: ${sys.errnoName(-n)}`);
        return false;
      }
      c.outBytes -= n;
      c.outOffset += n;
      if (c.outOffset === head.length) {
        c.out.shift();
        c.outOffset = 0;
      }
    }
    if (c.outBytes > this.#maxOutput) {
      logDebug(`api: client ${c.info.id}: ${c.outBytes} bytes unsent: disconnected`);
      this.stats.dropSlowClient++;
      this.#drop(c);
      return false;
    }
    return true;
  }

  /** Merges the first output chunks (from the write offset) into one of up to WRITE_MERGE_BYTES. */
  #merge(c: Client): void {
    let total = c.out[0].length - c.outOffset;
    let count = 1;
    while (count < c.out.length && total + c.out[count].length <= WRITE_MERGE_BYTES) {
      total += c.out[count++].length;
    }
    if (count === 1) return;
    const merged = new Uint8Array(total);
    merged.set(c.out[0].subarray(c.outOffset));
    let at = c.out[0].length - c.outOffset;
    for (let i = 1; i < count; i++) {
      merged.set(c.out[i], at);
      at += c.out[i].length;
    }
    c.out.splice(0, count, merged);
    c.outOffset = 0;
  }

  /**
   * Registers the client's fd for what it waits for now — or takes it out of
   * the loop when it waits for nothing but a handler. False on failure.
   */
  #watch(c: Client): boolean {
    let want = 0;
    if (!c.eof && c.queued < MAX_QUEUED && !this.#paused) want |= sys.EPOLLIN;
    if (c.outBytes > 0 && !this.#paused) want |= sys.EPOLLOUT;
    if (want === c.watched) return true;
    let rc = 0;
    if (want === 0) rc = this.#loop.remove(c.fd);
    else if (c.watched === 0) rc = this.#loop.add(c.fd, want, this.#clientType, c.slot);
    else rc = this.#loop.modify(c.fd, want, this.#clientType, c.slot);
    if (rc < 0) return false;
    c.watched = want;
    return true;
  }

  /** Disconnects on a socket failure. */
  #dropFor(c: Client, why: string): void {
    logDebug(`api: client ${c.info.id}: ${why}: disconnected`);
    this.stats.dropSocketError++;
    this.#drop(c);
  }

  /** Forgets a client and closes its connection. */
  #drop(c: Client): void {
    if (c.closed) return;
    c.closed = true;
    if (c.watched !== 0) this.#loop.remove(c.fd);
    c.watched = 0;
    sys.close(c.fd);
    c.queue.length = 0;
    c.out = [];
    c.outBytes = 0;
    this.#clients[c.slot] = null;
    this.#freeSlots.push(c.slot);
    this.stats.clients--;
  }
}

/** True for a promise or promise-like value. */
function isThenable(v: unknown): v is PromiseLike<unknown> {
  return (typeof v === "object" || typeof v === "function") && v !== null &&
    typeof (v as { then?: unknown }).then === "function";
}
