/**
 * `auto` port forwarding for UDP in namespace mode: `-u auto` and `-U auto`.
 *
 * # Theory of operation
 *
 * UDP has no listening state, so "a port something serves" is a socket that
 * is bound and not connected, outside the ephemeral range (see
 * `tcp_scan.ts`). Once a second:
 *
 * - **`-u auto`** asks the namespace worker for the namespace's bound UDP
 *   ports (`/proc/thread-self/net/udp[6]` must be read by a thread inside)
 *   and opens (or closes) host listeners of {@linkcode Udp} to match. A
 *   socket bound to a loopback address in the namespace does not count:
 *   `-u` delivers through the tap, to the guest's address, which such a
 *   socket never sees.
 * - **`-U auto`** reads the host's bound UDP ports on the main thread (the
 *   host's namespace) and binds (or closes) namespace sockets of
 *   {@linkcode UdpSplice} to match. Only host sockets bound to the wildcard
 *   or loopback count: `-U` sends to the host's loopback. The namespace
 *   sockets come from the worker, one batch per family; they are bound when
 *   the reply arrives.
 *
 * Worker replies resolve outside the reactor's turns; their continuations go
 * through a {@linkcode Mailbox}, so sockets (and the flows that end with
 * them) are opened and closed only inside turns.
 *
 * **No loops.** Ports tapir has bound on the scanned side are never
 * forwarded: for `-u auto` the namespace sockets of `-U` (bound or being
 * bound), for `-U auto` the host listeners of `-u`. Without this, `auto` in
 * both directions would forward each other's sockets back and forth. A port
 * already forwarded by an explicit `-u`/`-U` is left to it: UDP listeners
 * set `SO_REUSEADDR`, so a second socket on the port could bind, and
 * closing the port later would close both.
 *
 * `~PORT` exclusions hold. A port whose socket cannot be bound (taken at our
 * side) is not retried until it disappears from the scan.
 *
 * @module
 */

import type { PortFwd } from "../fwd.ts";
import { logDebug } from "../log.ts";
import { type Loop, Timer } from "../loop.ts";
import * as sys from "../sys/mod.ts";
import { AUTO_SCAN_MS, Mailbox } from "./tcp_ns.ts";
import { autoPorts, type PortScan, readUdpBound } from "./tcp_scan.ts";
import type { Udp } from "./udp.ts";
import type { UdpSplice } from "./udp_splice.ts";

/** What this module needs from the namespace (`NsAccess` in `lib/ns.ts` provides it). */
export interface UdpNsSource {
  /** `count` non-blocking sockets of `family` made in the namespace; `udp` for datagram ones. */
  sockets(family: 4 | 6, count: number, udp: boolean): Promise<number[]>;
  /** The namespace's bound, unconnected UDP sockets, ephemeral ports left out. */
  scanUdp(): Promise<PortScan>;
}

/** What `-u auto` needs from the host listeners ({@linkcode Udp}). */
export type UdpHostListeners = Pick<Udp, "listenAuto" | "closePort" | "ports">;

/** What `-U auto` needs from the namespace sockets ({@linkcode UdpSplice}). */
export type UdpNsSockets = Pick<UdpSplice, "bindAuto" | "closePort" | "ports">;

/** Options of {@linkcode UdpNsForward}. */
export interface UdpNsForwardOptions {
  /** `-u`: host → namespace. */
  readonly udp: PortFwd;
  /** `-U`: namespace → host. */
  readonly udpNs: PortFwd;
  /** Bind IPv4 sockets on the namespace side. */
  readonly ipv4: boolean;
  /** Bind IPv6 sockets on the namespace side. */
  readonly ipv6: boolean;
}

/** Counters of {@linkcode UdpNsForward}. */
export interface UdpNsForwardStats {
  /** Host ports `-u auto` forwards now. */
  autoUdp: number;
  /** Namespace ports `-U auto` forwards now. */
  autoUdpNs: number;
  /** Scans applied (both sides). */
  scans: number;
  /** Namespace scans that failed. */
  scanErrors: number;
}

/** `-u auto` and `-U auto`; see the module comment. */
export class UdpNsForward {
  /** Counters. */
  readonly stats: UdpNsForwardStats = { autoUdp: 0, autoUdpNs: 0, scans: 0, scanErrors: 0 };
  readonly #loop: Loop;
  readonly #host: UdpHostListeners;
  readonly #ns: UdpNsSockets;
  readonly #source: UdpNsSource;
  readonly #opts: UdpNsForwardOptions;
  readonly #readHost: () => PortScan;
  readonly #mailbox: Mailbox;
  readonly #scanTimer: Timer;
  /** `-u auto`: host ports we opened, and ports whose listener could not be opened. */
  readonly #autoHost = new Set<number>();
  readonly #autoHostFailed = new Set<number>();
  /** `-U auto`: namespace ports we bound, being bound, and ones that could not be. */
  readonly #autoNs = new Set<number>();
  readonly #autoNsPending = new Set<number>();
  readonly #autoNsFailed = new Set<number>();
  #scanInFlight = false;
  #closed = false;

  /**
   * Wires to the reactor; {@linkcode start} starts the scans. `readHost`
   * reads the host's bound UDP ports (tests replace it).
   */
  constructor(
    loop: Loop,
    host: UdpHostListeners,
    ns: UdpNsSockets,
    source: UdpNsSource,
    opts: UdpNsForwardOptions,
    readHost: () => PortScan = () => readUdpBound(),
  ) {
    this.#loop = loop;
    this.#host = host;
    this.#ns = ns;
    this.#source = source;
    this.#opts = opts;
    this.#readHost = readHost;
    this.#mailbox = new Mailbox(loop);
    this.#scanTimer = new Timer(() => this.#scan());
  }

  /** Starts the once-a-second scans if `-u` or `-U` is `auto`; the first runs at once. */
  start(): void {
    if (this.#opts.udp.mode === "auto" || this.#opts.udpNs.mode === "auto") {
      this.#loop.arm(this.#scanTimer, 0);
    }
  }

  #scan(): void {
    if (this.#closed) return;
    this.#loop.arm(this.#scanTimer, AUTO_SCAN_MS);
    if (this.#opts.udpNs.mode === "auto") this.#applyHostScan(this.#readHost());
    if (this.#opts.udp.mode === "auto" && !this.#scanInFlight) {
      this.#scanInFlight = true;
      this.#source.scanUdp().then(
        (scan) => this.#mailbox.post(() => this.#applyNsScan(scan)),
        (err: Error) =>
          this.#mailbox.post(() => {
            this.#scanInFlight = false;
            this.stats.scanErrors++;
            logDebug(`-u auto: namespace scan failed: ${err.message}`);
          }),
      );
    }
  }

  /** The namespace ports tapir has bound (`-U`), or is about to (`-U auto`). */
  #nsOwn(): Set<number> {
    const own = this.#ns.ports();
    for (const port of this.#autoNsPending) own.add(port);
    return own;
  }

  /** `-u auto`: host listeners for the namespace's bound ports. */
  #applyNsScan(scan: PortScan): void {
    this.#scanInFlight = false;
    this.stats.scans++;
    const want = new Set(
      autoPorts(scan, this.#opts.udp, { own: this.#nsOwn(), notLoopback: true }),
    );
    for (const port of this.#autoHostFailed) if (!want.has(port)) this.#autoHostFailed.delete(port);
    for (const port of this.#autoHost) {
      if (want.has(port)) continue;
      this.#host.closePort(port);
      this.#autoHost.delete(port);
      logDebug(`-u auto: port ${port} no longer bound in the namespace`);
    }
    const taken = this.#host.ports();
    for (const port of want) {
      if (this.#autoHost.has(port) || this.#autoHostFailed.has(port)) continue;
      if (!taken.has(port) && this.#host.listenAuto(port) > 0) {
        this.#autoHost.add(port);
        logDebug(`-u auto: forwarding host port ${port}`);
      } else {
        this.#autoHostFailed.add(port);
      }
    }
    this.stats.autoUdp = this.#autoHost.size;
  }

  /** `-U auto`: namespace sockets for the host's bound ports. */
  #applyHostScan(scan: PortScan): void {
    this.stats.scans++;
    const want = new Set(
      autoPorts(scan, this.#opts.udpNs, { own: this.#host.ports(), loopbackReachable: true }),
    );
    for (const port of this.#autoNsFailed) if (!want.has(port)) this.#autoNsFailed.delete(port);
    for (const port of this.#autoNs) {
      if (want.has(port)) continue;
      this.#ns.closePort(port);
      this.#autoNs.delete(port);
      logDebug(`-U auto: host port ${port} no longer bound`);
    }
    this.stats.autoUdpNs = this.#autoNs.size;
    const taken = this.#ns.ports();
    const ports: number[] = [];
    for (const port of want) {
      if (this.#autoNs.has(port) || this.#autoNsPending.has(port)) continue;
      if (this.#autoNsFailed.has(port)) continue;
      if (taken.has(port)) this.#autoNsFailed.add(port); // an explicit -U socket has it
      else ports.push(port);
    }
    const families: (4 | 6)[] = [];
    if (this.#opts.ipv4) families.push(4);
    if (this.#opts.ipv6) families.push(6);
    if (ports.length === 0 || families.length === 0) return;
    for (const port of ports) this.#autoNsPending.add(port);
    Promise.allSettled(families.map((f) => this.#source.sockets(f, ports.length, true))).then(
      (results) => {
        if (this.#mailbox.closed) {
          for (const r of results) if (r.status === "fulfilled") closeAll(r.value);
          return;
        }
        this.#mailbox.post(() => this.#nsOpened(ports, families, results));
      },
    );
  }

  /** Binds the sockets the worker made for `ports`, one list per family. */
  #nsOpened(
    ports: readonly number[],
    families: readonly (4 | 6)[],
    results: readonly PromiseSettledResult<number[]>[],
  ): void {
    const bound = new Set<number>();
    families.forEach((family, j) => {
      const r = results[j];
      if (r.status === "rejected") {
        logDebug(`-U auto: no IPv${family} sockets in the namespace: ${String(r.reason)}`);
        return;
      }
      const fds = r.value;
      ports.forEach((port, i) => {
        if (i >= fds.length) return;
        if (this.#ns.bindAuto(fds[i], family, port)) {
          bound.add(port);
          logDebug(`-U auto: forwarding namespace port ${port} (IPv${family})`);
        }
      });
      closeAll(fds.slice(ports.length));
    });
    for (const port of ports) {
      this.#autoNsPending.delete(port);
      if (bound.has(port)) this.#autoNs.add(port);
      else this.#autoNsFailed.add(port);
    }
    this.stats.autoUdpNs = this.#autoNs.size;
  }

  /**
   * Stops the scans; replies still on their way are dropped. The sockets
   * belong to {@linkcode Udp} and {@linkcode UdpSplice}, which close them.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#loop.disarm(this.#scanTimer);
    this.#mailbox.close();
  }
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) sys.close(fd);
}
