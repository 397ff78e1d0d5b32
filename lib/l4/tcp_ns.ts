/**
 * Namespace-side TCP forwarding: `-T` listeners inside the namespace, the
 * splice path for `-t` clients on host loopback, and `auto` for both.
 * Namespace mode only.
 *
 * # Theory of operation
 *
 * **Sockets from the worker.** A socket belongs to the namespace of the
 * thread that called `socket()`; after that, `bind`, `listen`, `connect`
 * and `accept` work from any thread. The main thread stays in the host's
 * namespace, so every namespace-side socket is made by the namespace worker
 * (`lib/ns.ts`) and used here by number. Asking the worker is asynchronous
 * (a message each way, and the main thread reads messages only when its
 * loop yields), so sockets for *connections* come from a small pool per
 * family ({@linkcode NsSocketPool}), refilled in the background when it
 * runs low: an accept on the host is spliced at once. Listening sockets are
 * made on demand, in one batch per family.
 *
 * **Replies run inside loop turns.** A worker reply resolves a promise
 * outside the reactor's turn. Its continuation is queued on a
 * {@linkcode Mailbox} (over `Loop.post`, which wakes an idle loop) and runs
 * in the next turn, so flows are created and freed only inside turns.
 *
 * **`-T`.** For each port, a listener on the namespace's loopback
 * (127.0.0.1 and ::1, or the address the spec names). A connection accepted
 * there is joined by {@linkcode TcpSplice} to a new host socket connecting
 * to the host's loopback at the target port.
 *
 * **`-t`, loopback clients.** {@linkcode TcpListeners} offers each
 * connection from a host loopback client to {@linkcode TcpNsForward.hook}:
 * a pooled namespace socket connects to the namespace's loopback at the
 * target port, and the two are spliced. If the pool is empty, the
 * connection waits (bounded) for the refill; if the family's sockets cannot
 * be made at all, or too many wait, it takes the tap path instead. A
 * refused namespace connect resets the host client.
 *
 * **`auto`.** Once a second: `-t auto` asks the worker for the namespace's
 * listening ports and opens (or closes) host listeners to match; `-T auto`
 * reads the host's listening ports (on the main thread, so the host's
 * namespace) and opens (or closes) namespace listeners. Ports tapir itself
 * listens on at the scanned side are never forwarded, so the two cannot
 * chase each other in a loop, and `~PORT` exclusions hold. A port whose
 * listener cannot be bound (taken at our side) is not retried until it
 * disappears from the scan.
 *
 * @module
 */

import { type PortFwd, portFwdRules } from "../fwd.ts";
import { logDebug, logWarn } from "../log.ts";
import { type Loop, Timer } from "../loop.ts";
import * as sys from "../sys/mod.ts";
import { FlowSide, Pif } from "../flow/table.ts";
import { ip4ToU32 } from "../net.ts";
import type { AcceptedConn, TcpListeners } from "./tcp_listen.ts";
import { autoPorts, readTcpListening, type TcpListenScan } from "./tcp_scan.ts";
import type { TcpSplice } from "./tcp_splice.ts";

/** Namespace sockets kept ready per family. */
export const NS_POOL_SIZE = 8;
/** Host connections that may wait for a namespace socket at once. */
export const NS_POOL_WAITERS = 64;
/** After the worker failed to make sockets of a family, wait this long before asking again. */
export const NS_POOL_RETRY_MS = 1000;
/** Interval of the `auto` scans. */
export const AUTO_SCAN_MS = 1000;

const EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range";
const LOOPBACK4 = new Uint8Array([127, 0, 0, 1]);
const LOOPBACK6 = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);

/** What this module needs from the namespace (`NsAccess` in `lib/ns.ts` provides it). */
export interface NsSocketSource {
  /** `count` non-blocking TCP sockets of `family` made in the namespace. */
  sockets(family: 4 | 6, count: number): Promise<number[]>;
  /** The namespace's listening TCP sockets. */
  scanTcp(): Promise<TcpListenScan>;
}

/**
 * Runs closures inside the loop's turns (`Loop.post`), and can be closed so
 * that nothing posted runs after the forwarder shut down.
 */
export class Mailbox {
  readonly #loop: Loop;
  #closed = false;

  /** Posts through `loop` (see `Loop.post`). */
  constructor(loop: Loop) {
    this.#loop = loop;
  }

  /** True once closed: posts are dropped. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Runs `fn` in the loop's next turn, unless the mailbox is closed by then. */
  post(fn: () => void): void {
    if (this.#closed) return;
    this.#loop.post(() => {
      if (!this.#closed) fn();
    });
  }

  /** Drops everything posted and not yet run, and every later post. */
  close(): void {
    this.#closed = true;
  }
}

/** What this module needs from the host-side `-t` listeners ({@linkcode TcpListeners}). */
export type HostListeners = Pick<
  TcpListeners,
  "setLoopbackHook" | "listenAuto" | "closePort" | "ports"
>;

/** Counters of a {@linkcode NsSocketPool}. */
export interface NsSocketPoolStats {
  /** Sockets handed out. */
  taken: number;
  /** Refill requests answered. */
  refills: number;
  /** Refill requests that failed. */
  failures: number;
}

/** A pool of namespace TCP sockets per family; see the module comment. */
export class NsSocketPool {
  /** Counters. */
  readonly stats: NsSocketPoolStats = { taken: 0, refills: 0, failures: 0 };
  readonly #source: NsSocketSource;
  readonly #mailbox: Mailbox;
  readonly #size: number;
  readonly #free: [number[], number[]] = [[], []];
  readonly #refilling = [false, false];
  readonly #failedAt = [-Infinity, -Infinity];
  /** Called (in a loop turn) after each refill attempt of a family. */
  onRefill: ((family: 4 | 6) => void) | null = null;

  /** A pool asking `source` for sockets, `size` per family; continuations run via `mailbox`. */
  constructor(source: NsSocketSource, mailbox: Mailbox, size = NS_POOL_SIZE) {
    this.#source = source;
    this.#mailbox = mailbox;
    this.#size = size;
  }

  /** Sockets ready for `family`. */
  available(family: 4 | 6): number {
    return this.#free[family === 4 ? 0 : 1].length;
  }

  /** True if the last attempt to make sockets of `family` failed (a retry is due later). */
  failing(family: 4 | 6): boolean {
    return this.#failedAt[family === 4 ? 0 : 1] > -Infinity;
  }

  /** True while a refill of `family` is outstanding. */
  refilling(family: 4 | 6): boolean {
    return this.#refilling[family === 4 ? 0 : 1];
  }

  /** A namespace socket of `family` (the caller owns it), or -1 if none is ready. */
  take(family: 4 | 6): number {
    const free = this.#free[family === 4 ? 0 : 1];
    const fd = free.length > 0 ? free.pop()! : -1;
    if (fd >= 0) this.stats.taken++;
    if (free.length <= this.#size >>> 1) this.refill(family);
    return fd;
  }

  /** Asks the worker for sockets up to the pool's size (once at a time per family). */
  refill(family: 4 | 6): void {
    const f = family === 4 ? 0 : 1;
    const want = this.#size - this.#free[f].length;
    if (want <= 0 || this.#refilling[f] || this.#mailbox.closed) return;
    if (performance.now() - this.#failedAt[f] < NS_POOL_RETRY_MS) return;
    this.#refilling[f] = true;
    this.#source.sockets(family, want).then(
      (fds) => {
        if (this.#mailbox.closed) return closeAll(fds);
        this.#mailbox.post(() => {
          this.#refilling[f] = false;
          this.#failedAt[f] = -Infinity;
          this.stats.refills++;
          this.#free[f].push(...fds);
          this.onRefill?.(family);
        });
      },
      (err: Error) => {
        this.#mailbox.post(() => {
          this.#refilling[f] = false;
          this.#failedAt[f] = performance.now();
          this.stats.failures++;
          logDebug(`namespace sockets (IPv${family}): ${err.message}`);
          this.onRefill?.(family);
        });
      },
    );
  }

  /** Fills the pool for `families` and waits for it (at start-up, before the loop runs). */
  async prime(families: readonly (4 | 6)[]): Promise<void> {
    for (const family of families) {
      const f = family === 4 ? 0 : 1;
      try {
        this.#free[f].push(...await this.#source.sockets(family, this.#size));
      } catch (err) {
        this.#failedAt[f] = performance.now();
        logDebug(`namespace sockets (IPv${family}): ${(err as Error).message}`);
      }
    }
  }

  /** Closes every pooled socket. */
  close(): void {
    for (const free of this.#free) closeAll(free.splice(0));
  }
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) sys.close(fd);
}

/** One listening socket inside the namespace. */
interface NsListener {
  readonly fd: number;
  readonly v6: boolean;
  /** The namespace port. */
  readonly port: number;
  /** The host port connections go to. */
  readonly target: number;
  /** Opened by `-T auto` (closed again when the host port goes away). */
  readonly auto: boolean;
}

/** One namespace listener to open. */
interface NsListenSpec {
  readonly family: 4 | 6;
  /** Address to bind (null: the namespace's loopback). */
  readonly addr: Uint8Array | null;
  readonly ifname: string | null;
  readonly port: number;
  readonly target: number;
  /** A port the user named: failures are warnings. */
  readonly explicit: boolean;
  readonly auto: boolean;
}

/** Counters of {@linkcode TcpNsForward}. */
export interface TcpNsForwardStats {
  /** Listening sockets open in the namespace (`-T`). */
  nsListening: number;
  /** Connections accepted in the namespace. */
  nsAccepted: number;
  /** `-t` loopback connections joined to a namespace socket. */
  loopbackSpliced: number;
  /** `-t` loopback connections that had to wait for the socket pool. */
  waited: number;
  /** `-t` loopback connections left to the tap path (no namespace socket). */
  declined: number;
  /** Host ports forwarded by `-t auto` now. */
  autoTcp: number;
  /** Namespace ports forwarded by `-T auto` now. */
  autoTcpNs: number;
  /** `auto` scans done. */
  scans: number;
  /** `auto` scans that failed. */
  scanErrors: number;
}

/** Options of {@linkcode TcpNsForward}. */
export interface TcpNsForwardOptions {
  /** `-t`: host → namespace. */
  readonly tcp: PortFwd;
  /** `-T`: namespace → host. */
  readonly tcpNs: PortFwd;
  /** Use IPv4 on the namespace side. */
  readonly ipv4: boolean;
  /** Use IPv6 on the namespace side. */
  readonly ipv6: boolean;
}

/** `-T` listeners, the `-t` splice path and `auto`; see the module comment. */
export class TcpNsForward {
  /** Counters. */
  readonly stats: TcpNsForwardStats = {
    nsListening: 0,
    nsAccepted: 0,
    loopbackSpliced: 0,
    waited: 0,
    declined: 0,
    autoTcp: 0,
    autoTcpNs: 0,
    scans: 0,
    scanErrors: 0,
  };
  /** The namespace socket pool. */
  readonly pool: NsSocketPool;
  readonly #loop: Loop;
  readonly #splice: TcpSplice;
  readonly #listeners: HostListeners;
  readonly #source: NsSocketSource;
  readonly #opts: TcpNsForwardOptions;
  readonly #mailbox: Mailbox;
  readonly #fdType: number;
  readonly #ns: (NsListener | null)[] = [];
  readonly #nsFree: number[] = [];
  readonly #waiting: AcceptedConn[] = [];
  readonly #ini = new FlowSide();
  readonly #tgt = new FlowSide();
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #saLen = new Uint32Array(1);
  readonly #linger = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);
  /** `-t auto`: host ports we opened, and ports whose listener could not be opened. */
  readonly #autoHost = new Set<number>();
  readonly #autoHostFailed = new Set<number>();
  /** `-T auto`: namespace ports being opened, and ones that could not be. */
  readonly #autoNsPending = new Set<number>();
  readonly #autoNsFailed = new Set<number>();
  readonly #scanTimer: Timer;
  #scanInFlight = false;
  #closed = false;
  /** Loopback clients of `-t` are spliced (see {@linkcode spliceLoopback}). */
  #hooked = false;

  /** Wires to the reactor; {@linkcode start} opens sockets. */
  constructor(
    loop: Loop,
    splice: TcpSplice,
    listeners: HostListeners,
    source: NsSocketSource,
    opts: TcpNsForwardOptions,
  ) {
    this.#loop = loop;
    this.#splice = splice;
    this.#listeners = listeners;
    this.#source = source;
    this.#opts = opts;
    this.#mailbox = new Mailbox(loop);
    this.pool = new NsSocketPool(source, this.#mailbox);
    this.pool.onRefill = (family) => this.#serveWaiting(family);
    this.#fdType = loop.defineType("tcp-ns-listen", (index) => this.#accept(index));
    this.#scanTimer = new Timer(() => this.#scan());
  }

  #families(): (4 | 6)[] {
    const out: (4 | 6)[] = [];
    if (this.#opts.ipv4) out.push(4);
    if (this.#opts.ipv6) out.push(6);
    return out;
  }

  /**
   * Opens the `-T` listeners, fills the socket pool, hooks the `-t`
   * listeners and starts the `auto` scans. Call before the loop runs (and
   * before the namespace's command starts, so its `-T` ports are ready).
   */
  async start(): Promise<number[]> {
    const { tcp, tcpNs } = this.#opts;
    if (tcp.mode !== "none") await this.spliceLoopback();
    const fds = await this.#openNs(this.#explicitNsSpecs(tcpNs));
    if (tcp.mode === "auto" || tcpNs.mode === "auto") this.#loop.arm(this.#scanTimer, 0);
    return fds;
  }

  /**
   * Splices host loopback clients of the `-t` listeners to the namespace's
   * loopback from now on (at start with `-t`; when the first `-t` forward
   * is added at run time otherwise).
   */
  async spliceLoopback(): Promise<void> {
    if (this.#hooked) return;
    this.#hooked = true;
    await this.pool.prime(this.#families());
    if (!this.#closed) this.#listeners.setLoopbackHook((conn) => this.hook(conn));
  }

  /**
   * Opens namespace listeners for every port `fwd` forwards (`-T`); ports
   * that cannot be bound are skipped with a message. Resolves to the fds
   * opened, for {@linkcode closeFds}.
   */
  listen(fwd: PortFwd): Promise<number[]> {
    return this.#openNs(this.#explicitNsSpecs(fwd));
  }

  /**
   * Opens namespace listeners for every port `fwd` forwards, all or nothing
   * (a `-T` forward added at run time). Resolves to the fds opened, for
   * {@linkcode closeFds}, or to why not.
   */
  async listenAll(fwd: PortFwd): Promise<number[] | string> {
    const specs = this.#explicitNsSpecs(fwd);
    const opened: number[] = [];
    for (const family of [4, 6] as const) {
      const mine = specs.filter((s) => s.family === family);
      if (mine.length === 0) continue;
      let fds: number[];
      try {
        fds = await this.#source.sockets(family, mine.length);
      } catch (err) {
        this.closeFds(opened);
        return `no IPv${family} sockets in the namespace: ${(err as Error).message}`;
      }
      if (this.#closed) {
        closeAll(fds);
        return "shutting down";
      }
      for (let i = 0; i < mine.length; i++) {
        const fd = fds[i];
        const rc = fd === undefined ? -sys.Errno.EMFILE : this.#nsBind(fd, mine[i]);
        if (rc < 0) {
          closeAll(fds.slice(i + 1));
          this.closeFds(opened);
          return `cannot listen on IPv${family} port ${mine[i].port} in the namespace: ${
            sys.errnoName(-rc)
          }`;
        }
        opened.push(fd);
      }
    }
    return opened;
  }

  /** Closes the namespace listeners `fds` (from {@linkcode start} or {@linkcode listenAll}). */
  closeFds(fds: readonly number[]): void {
    const want = new Set(fds);
    for (let i = 0; i < this.#ns.length; i++) {
      const l = this.#ns[i];
      if (l === null || !want.has(l.fd)) continue;
      this.#loop.remove(l.fd);
      sys.close(l.fd);
      this.#ns[i] = null;
      this.#nsFree.push(i);
      this.stats.nsListening--;
    }
  }

  // -------------------------------------------------------------------------
  // -T listeners

  #explicitNsSpecs(fwd: PortFwd): NsListenSpec[] {
    if (fwd.mode === "none" || fwd.mode === "auto") return [];
    let skipLo = 0, skipHi = -1;
    if (fwd.mode === "all") {
      try {
        [skipLo, skipHi] = Deno.readTextFileSync(EPHEMERAL_RANGE).trim().split(/\s+/).map(Number);
      } catch { /* no range known: bind everything */ }
    }
    const out: NsListenSpec[] = [];
    for (const rule of portFwdRules(fwd)) {
      for (let port = rule.first; port <= rule.last; port++) {
        if (port >= skipLo && port <= skipHi) continue;
        const target = rule.target + (port - rule.first);
        const families = rule.addr ? [rule.addr.length === 4 ? 4 : 6] as const : this.#families();
        for (const family of families) {
          out.push({
            family,
            addr: rule.addr,
            ifname: rule.ifname,
            port,
            target,
            explicit: fwd.mode === "ports",
            auto: false,
          });
        }
      }
    }
    return out;
  }

  /** Gets sockets from the worker for `specs`, then binds them (at start-up: directly); returns those bound. */
  async #openNs(specs: readonly NsListenSpec[]): Promise<number[]> {
    const bound: number[] = [];
    for (const family of [4, 6] as const) {
      const mine = specs.filter((s) => s.family === family);
      for (let i = 0; i < mine.length;) {
        let fds: number[];
        try {
          fds = await this.#source.sockets(family, mine.length - i);
        } catch (err) {
          for (; i < mine.length; i++) this.#nsFailed(mine[i], (err as Error).message);
          break;
        }
        for (const fd of fds) if (this.#nsListen(fd, mine[i++])) bound.push(fd);
        if (fds.length === 0) break;
      }
    }
    return bound;
  }

  #nsListen(fd: number, s: NsListenSpec): boolean {
    const rc = this.#nsBind(fd, s);
    if (rc < 0) this.#nsFailed(s, sys.errnoName(-rc));
    return rc === 0;
  }

  /** Binds, listens on and watches namespace socket `fd` for `s`; on failure closes it. Returns 0 or -errno. */
  #nsBind(fd: number, s: NsListenSpec): number {
    const v6 = s.family === 6;
    sys.setsockoptInt(fd, sys.SOL_SOCKET, sys.SO_REUSEADDR, 1);
    if (v6) sys.setsockoptInt(fd, sys.IPPROTO_IPV6, sys.IPV6_V6ONLY, 1);
    let rc = 0;
    if (s.ifname !== null) {
      rc = sys.setsockopt(
        fd,
        sys.SOL_SOCKET,
        sys.SO_BINDTODEVICE,
        new TextEncoder().encode(`${s.ifname}\0`),
      );
    }
    const addr = s.addr ?? (v6 ? LOOPBACK6 : LOOPBACK4);
    const len = v6
      ? sys.sockaddrIn6(this.#sa, addr, s.port)
      : sys.sockaddrIn4(this.#sa, addr, s.port);
    const slot = this.#nsFree.length > 0 ? this.#nsFree.pop()! : this.#ns.length;
    if (rc === 0) rc = sys.bind(fd, this.#sa, len);
    if (rc === 0) rc = sys.listen(fd, 128);
    if (rc === 0) rc = this.#loop.add(fd, sys.EPOLLIN, this.#fdType, slot);
    if (rc < 0) {
      if (slot < this.#ns.length) this.#nsFree.push(slot);
      sys.close(fd);
      return rc;
    }
    this.#ns[slot] = { fd, v6, port: s.port, target: s.target, auto: s.auto };
    this.stats.nsListening++;
    return 0;
  }

  #nsFailed(s: NsListenSpec, why: string): void {
    const msg = `-T: cannot listen on IPv${s.family} port ${s.port} in the namespace: ${why}`;
    if (s.explicit) logWarn(msg);
    else logDebug(msg);
  }

  /** The namespace ports tapir listens on (or is about to). */
  nsPorts(): Set<number> {
    const out = new Set<number>(this.#autoNsPending);
    for (const l of this.#ns) if (l !== null) out.add(l.port);
    return out;
  }

  #closeNsPort(port: number): void {
    for (let i = 0; i < this.#ns.length; i++) {
      const l = this.#ns[i];
      if (l === null || l.port !== port) continue;
      this.#loop.remove(l.fd);
      sys.close(l.fd);
      this.#ns[i] = null;
      this.#nsFree.push(i);
      this.stats.nsListening--;
    }
  }

  /** Accepts every pending connection on namespace listener `index`; splices each to the host. */
  #accept(index: number): void {
    const l = this.#ns[index];
    if (!l) return; // closed earlier in this turn
    for (;;) {
      this.#saLen[0] = this.#sa.length;
      const fd = sys.accept4(l.fd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, this.#sa, this.#saLen);
      if (fd < 0) return;
      this.stats.nsAccepted++;
      const client = sys.sockaddrDecode(this.#sa, this.#saLen[0]);
      const host = sys.socket(
        l.v6 ? sys.AF_INET6 : sys.AF_INET,
        sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
      );
      if (client === null || client.family === "unix" || host < 0) {
        this.#reset(fd);
        if (host >= 0) sys.close(host);
        continue;
      }
      const local = this.#localAddr(fd, l.v6);
      const lo = l.v6 ? LOOPBACK6 : LOOPBACK4;
      setSide(this.#ini, Pif.SPLICE, client.addr, client.port, local, l.port);
      setSide(this.#tgt, Pif.HOST, lo, l.target, lo.map(() => 0), 0);
      this.#splice.open(fd, host, this.#ini, this.#tgt);
    }
  }

  #localAddr(fd: number, v6: boolean): Uint8Array {
    const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
    const len = new Uint32Array([sa.length]);
    const local = sys.getsockname(fd, sa, len) === 0 ? sys.sockaddrDecode(sa, len[0]) : null;
    return local !== null && local.family !== "unix" ? local.addr : new Uint8Array(v6 ? 16 : 4);
  }

  #reset(fd: number): void {
    sys.setsockopt(fd, sys.SOL_SOCKET, sys.SO_LINGER, this.#linger);
    sys.close(fd);
  }

  // -------------------------------------------------------------------------
  // -t loopback clients

  /**
   * The {@linkcode TcpListeners} loopback hook: splices `conn` to the
   * namespace's loopback, or queues it until a namespace socket is ready.
   * False leaves it to the tap path.
   */
  hook(conn: AcceptedConn): boolean {
    const family = conn.v6 ? 6 : 4;
    const fd = this.pool.take(family);
    if (fd >= 0) {
      this.#spliceToNs(conn, fd);
      return true;
    }
    if (
      this.#waiting.length >= NS_POOL_WAITERS ||
      (this.pool.failing(family) && !this.pool.refilling(family))
    ) {
      this.stats.declined++;
      return false;
    }
    this.stats.waited++;
    this.#waiting.push(conn);
    return true;
  }

  #spliceToNs(conn: AcceptedConn, nsFd: number): void {
    const lo = conn.v6 ? LOOPBACK6 : LOOPBACK4;
    setSide(this.#ini, Pif.HOST, conn.clientAddr, conn.clientPort, conn.localAddr, conn.port);
    setSide(this.#tgt, Pif.SPLICE, lo, conn.target, lo.map(() => 0), 0);
    this.stats.loopbackSpliced++;
    this.#splice.open(conn.fd, nsFd, this.#ini, this.#tgt);
  }

  /** After a refill of `family`: serve waiting connections; reset them if none can be made. */
  #serveWaiting(family: 4 | 6): void {
    const waiting = this.#waiting;
    let kept = 0;
    for (const conn of waiting) {
      if ((conn.v6 ? 6 : 4) !== family) {
        waiting[kept++] = conn;
        continue;
      }
      const fd = this.pool.take(family);
      if (fd >= 0) this.#spliceToNs(conn, fd);
      else if (this.pool.failing(family)) this.#reset(conn.fd);
      else waiting[kept++] = conn;
    }
    waiting.length = kept;
  }

  // -------------------------------------------------------------------------
  // auto

  /** The once-a-second scan for `-t auto` and `-T auto`. */
  #scan(): void {
    if (this.#closed) return;
    this.#loop.arm(this.#scanTimer, AUTO_SCAN_MS);
    if (this.#opts.tcpNs.mode === "auto") this.#applyHostScan(readTcpListening());
    if (this.#opts.tcp.mode === "auto" && !this.#scanInFlight) {
      this.#scanInFlight = true;
      this.#source.scanTcp().then(
        (scan) => this.#mailbox.post(() => this.#applyNsScan(scan)),
        (err: Error) =>
          this.#mailbox.post(() => {
            this.#scanInFlight = false;
            this.stats.scanErrors++;
            logDebug(`-t auto: namespace scan failed: ${err.message}`);
          }),
      );
    }
  }

  /** `-t auto`: host listeners for the namespace's listening ports. */
  #applyNsScan(scan: TcpListenScan): void {
    this.#scanInFlight = false;
    this.stats.scans++;
    const want = new Set(autoPorts(scan, this.#opts.tcp, { own: this.nsPorts() }));
    for (const port of this.#autoHostFailed) if (!want.has(port)) this.#autoHostFailed.delete(port);
    for (const port of this.#autoHost) {
      if (want.has(port)) continue;
      this.#listeners.closePort(port);
      this.#autoHost.delete(port);
      logDebug(`-t auto: port ${port} no longer listened on in the namespace`);
    }
    for (const port of want) {
      if (this.#autoHost.has(port) || this.#autoHostFailed.has(port)) continue;
      if (this.#listeners.listenAuto(port) > 0) {
        this.#autoHost.add(port);
        logDebug(`-t auto: forwarding host port ${port}`);
      } else {
        this.#autoHostFailed.add(port);
      }
    }
    this.stats.autoTcp = this.#autoHost.size;
  }

  /** `-T auto`: namespace listeners for the host's listening ports. */
  #applyHostScan(scan: TcpListenScan): void {
    this.stats.scans++;
    const want = new Set(
      autoPorts(scan, this.#opts.tcpNs, { own: this.#listeners.ports(), loopbackReachable: true }),
    );
    for (const port of this.#autoNsFailed) if (!want.has(port)) this.#autoNsFailed.delete(port);
    const open = new Set<number>();
    for (const l of this.#ns) {
      if (l === null || !l.auto) continue;
      if (want.has(l.port)) open.add(l.port);
      else {
        this.#closeNsPort(l.port);
        logDebug(`-T auto: host port ${l.port} no longer listened on`);
      }
    }
    const specs: NsListenSpec[] = [];
    for (const port of want) {
      if (open.has(port) || this.#autoNsPending.has(port) || this.#autoNsFailed.has(port)) continue;
      this.#autoNsPending.add(port);
      for (const family of this.#families()) {
        specs.push({
          family,
          addr: null,
          ifname: null,
          port,
          target: port,
          explicit: false,
          auto: true,
        });
      }
    }
    if (specs.length === 0) return;
    for (const family of this.#families()) {
      const mine = specs.filter((s) => s.family === family);
      this.#source.sockets(family, mine.length).then(
        (fds) => {
          if (this.#mailbox.closed) return closeAll(fds);
          this.#mailbox.post(() => this.#autoNsOpened(mine, fds));
        },
        (err: Error) => this.#mailbox.post(() => this.#autoNsOpened(mine, [], err.message)),
      );
    }
  }

  #autoNsOpened(specs: readonly NsListenSpec[], fds: readonly number[], error?: string): void {
    for (let i = 0; i < specs.length; i++) {
      const s = specs[i];
      this.#autoNsPending.delete(s.port);
      let ok = false;
      if (i < fds.length) ok = this.#nsListen(fds[i], s);
      else this.#nsFailed(s, error ?? "no socket");
      if (ok) logDebug(`-T auto: forwarding namespace port ${s.port} (IPv${s.family})`);
      else if (!this.nsPorts().has(s.port)) this.#autoNsFailed.add(s.port);
    }
    const ports = new Set<number>();
    for (const l of this.#ns) if (l !== null && l.auto) ports.add(l.port);
    this.stats.autoTcpNs = ports.size;
  }

  /** Closes every namespace listener and pooled socket; waiting connections are reset. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#loop.disarm(this.#scanTimer);
    this.#listeners.setLoopbackHook(null);
    for (const l of this.#ns) {
      if (l === null) continue;
      this.#loop.remove(l.fd);
      sys.close(l.fd);
    }
    this.#ns.length = 0;
    this.#nsFree.length = 0;
    this.stats.nsListening = 0;
    for (const conn of this.#waiting.splice(0)) this.#reset(conn.fd);
    this.pool.close();
    this.#mailbox.close();
  }
}

/** Fills `side` from byte addresses (4 or 16 bytes each, same family). */
function setSide(
  side: FlowSide,
  pif: Pif,
  eaddr: Uint8Array,
  eport: number,
  oaddr: Uint8Array,
  oport: number,
): void {
  if (eaddr.length === 4) side.set4(pif, ip4ToU32(eaddr), eport, ip4ToU32(oaddr), oport);
  else side.set6(pif, eaddr, 0, eport, oaddr, 0, oport);
}
