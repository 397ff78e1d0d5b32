/**
 * Inbound TCP port forwarding (`-t SPEC`): listening sockets on the host
 * whose connections are opened toward the guest.
 *
 * Each forwarded port gets a listening socket per family (IPv4 on 0.0.0.0,
 * IPv6 on [::] with `IPV6_V6ONLY`), or one bound to the address or interface
 * the spec names. A port that cannot be bound (already in use, privileged) is
 * skipped with a debug line, as pasta does for `all`; an explicit single
 * port that fails is a warning. With `all`, the host's ephemeral port range
 * is left out, so tapir does not take the ports outgoing connections use.
 *
 * On accept, the connection becomes a TCP flow (see `tcp.ts`,
 * `Tcp.inbound`): side 0 is the host client → our listener; side 1 is the
 * guest's address and target port, seen from the client's address — except
 * that a client on host loopback appears to come from the gateway address,
 * since the guest has no route to the host's loopback. So does a client
 * using the guest's own address (the guest copies the host's address by
 * default): the guest's kernel would drop a segment "from itself".
 *
 * A loopback client can instead be handed to a hook
 * ({@linkcode TcpListeners.setLoopbackHook}): in namespace mode it is
 * spliced to the namespace's own loopback (`tcp_splice.ts`), as pasta does.
 * If the hook declines, the connection takes the tap path as above.
 *
 * `-t auto` opens and closes listeners one port at a time at run time
 * ({@linkcode TcpListeners.listenAuto}, {@linkcode TcpListeners.closePort});
 * slots of closed listeners are reused, and a late event for a closed
 * listener finds an empty slot and is ignored.
 *
 * @module
 */

import { formatIp, ipEqual, isIp6Loopback } from "../addr.ts";
import { FlowSide, Pif } from "../flow/table.ts";
import type { PortFwd } from "../fwd.ts";
import { logDebug, logWarn } from "../log.ts";
import type { Loop } from "../loop.ts";
import { type GuestNet, ip4ToU32 } from "../net.ts";
import * as sys from "../sys/mod.ts";
import {
  guestFamilies,
  openAllListenPorts,
  openListenPorts,
  openWatchedListener,
  PortSockets,
} from "./listen.ts";
import type { Tcp } from "./tcp.ts";

/** One listening socket. */
interface Listener {
  readonly fd: number;
  readonly v6: boolean;
  /** The host port. */
  readonly port: number;
  /** The guest port connections go to. */
  readonly target: number;
}

/** An accepted connection offered to the loopback hook. */
export interface AcceptedConn {
  /** The accepted socket (non-blocking). Whoever takes the connection owns it. */
  readonly fd: number;
  /** IPv6 (else IPv4). */
  readonly v6: boolean;
  /** The client's address (4 or 16 bytes). */
  readonly clientAddr: Uint8Array;
  /** The client's port. */
  readonly clientPort: number;
  /** The address the client connected to (4 or 16 bytes). */
  readonly localAddr: Uint8Array;
  /** The port the client connected to. */
  readonly port: number;
  /** The guest port the connection is forwarded to. */
  readonly target: number;
}

/**
 * Takes a connection from a client on host loopback instead of the tap path.
 * Returns true if it took it (and owns `conn.fd`), false to leave it to the
 * tap path.
 */
export type LoopbackHook = (conn: AcceptedConn) => boolean;

/** Counters of the listeners. */
export interface TcpListenStats {
  /** Listening sockets open. */
  listening: number;
  /** Connections accepted. */
  accepted: number;
  /** Accepted connections dropped (family off, no flow). */
  refused: number;
  /** Loopback connections taken by the loopback hook (spliced). */
  hooked: number;
}

/** The host-side listeners of `-t`; see the module comment. */
export class TcpListeners {
  /** Counters. */
  readonly stats: TcpListenStats = { listening: 0, accepted: 0, refused: 0, hooked: 0 };
  readonly #loop: Loop;
  readonly #net: GuestNet;
  readonly #tcp: Tcp;
  /** Indexed by epoll tag; null: a closed listener's slot, reused by the next. */
  readonly #listeners = new PortSockets<Listener>();
  #loopbackHook: LoopbackHook | null = null;
  readonly #fdType: number;
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #saLen = new Uint32Array(1);
  readonly #ini = new FlowSide();
  readonly #tgt = new FlowSide();

  /** Registers with the reactor; {@linkcode bind} opens the sockets. */
  constructor(loop: Loop, net: GuestNet, tcp: Tcp) {
    this.#loop = loop;
    this.#net = net;
    this.#tcp = tcp;
    this.#fdType = loop.defineType("tcp-listen", (index) => this.#accept(index));
  }

  /** Offers connections from host loopback clients to `hook` first (see the module comment). */
  setLoopbackHook(hook: LoopbackHook | null): void {
    this.#loopbackHook = hook;
  }

  /**
   * Opens listening sockets for every port `fwd` forwards; a port that
   * cannot be bound is skipped (see the module comment). Returns the fds
   * opened, for {@linkcode closeFds}.
   */
  bind(fwd: PortFwd): number[] {
    return openListenPorts(
      fwd,
      this.#net,
      (family, addr, ifname, port, target) =>
        this.#openListener(family, addr, ifname, port, target),
      (rc, family, port, explicit) => this.#failed(rc, family, port, explicit),
    );
  }

  /**
   * Opens listening sockets for every port `fwd` forwards, all or nothing
   * (a forward added at run time). Returns the fds opened, or why not.
   */
  bindAll(fwd: PortFwd): number[] | string {
    return openAllListenPorts(
      fwd,
      this.#net,
      (family, addr, ifname, port, target) =>
        this.#openListener(family, addr, ifname, port, target),
      (fds) => this.closeFds(fds),
    );
  }

  /** Closes the listening sockets `fds` (from {@linkcode bind} or {@linkcode bindAll}). */
  closeFds(fds: readonly number[]): void {
    for (const l of this.#listeners.takeFds(fds)) {
      this.#loop.remove(l.fd);
      sys.close(l.fd);
      this.stats.listening--;
    }
  }

  /** Opens and watches one listening socket; returns its fd or -errno. */
  #openListener(
    family: 4 | 6,
    addr: Uint8Array | null,
    ifname: string | null,
    port: number,
    target: number,
  ): number {
    const fd = openWatchedListener(
      this.#loop,
      this.#fdType,
      this.#listeners,
      sys.SOCK_STREAM,
      family,
      addr,
      ifname,
      port,
      (fd) => ({ fd, v6: family === 6, port, target }),
    );
    if (fd >= 0) this.stats.listening++;
    return fd;
  }

  #failed(rc: number, family: 4 | 6, port: number, explicit: boolean): void {
    const msg = `-t: cannot listen on IPv${family} port ${port}: ${sys.errnoName(-rc)}`;
    if (explicit) logWarn(msg);
    else logDebug(msg);
  }

  /**
   * Listens on host `port` of both families (wildcard address), forwarding
   * to the same guest port, as `-t auto` does for a port found in the
   * namespace. Failures are debug lines. Returns the number of sockets opened.
   */
  listenAuto(port: number): number {
    let opened = 0;
    for (const family of guestFamilies(this.#net)) {
      const fd = this.#openListener(family, null, null, port, port);
      if (fd >= 0) opened++;
      else this.#failed(fd, family, port, false);
    }
    return opened;
  }

  /** Closes every listening socket on host `port`. */
  closePort(port: number): void {
    for (const l of this.#listeners.takePort(port)) {
      this.#loop.remove(l.fd);
      sys.close(l.fd);
      this.stats.listening--;
    }
  }

  /** The host ports with an open listening socket. */
  ports(): Set<number> {
    return this.#listeners.ports();
  }

  /** Accepts every pending connection on listener `index` and opens each toward the guest. */
  #accept(index: number): void {
    const l = this.#listeners.get(index);
    if (l === null) return; // closed earlier in this turn
    for (;;) {
      this.#saLen[0] = this.#sa.length;
      const fd = sys.accept4(l.fd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, this.#sa, this.#saLen);
      if (fd < 0) return;
      this.stats.accepted++;
      if (!this.#open(fd, l)) this.stats.refused++;
    }
  }

  #open(fd: number, l: Listener): boolean {
    const client = sys.sockaddrDecode(this.#sa, this.#saLen[0]);
    const net = this.#net;
    if (client === null || client.family === "unix") {
      sys.close(fd);
      return false;
    }
    const hook = this.#loopbackHook;
    if (
      hook !== null && (client.family === 4 ? client.addr[0] === 127 : isIp6Loopback(client.addr))
    ) {
      const conn: AcceptedConn = {
        fd,
        v6: l.v6,
        clientAddr: client.addr,
        clientPort: client.port,
        localAddr: this.#local(fd, l.v6 ? 16 : 4),
        port: l.port,
        target: l.target,
      };
      if (hook(conn)) {
        this.stats.hooked++;
        return true;
      }
    }
    if (l.v6) {
      const n6 = net.ip6;
      if (n6 === null) {
        sys.close(fd);
        return false;
      }
      this.#ini.set6(Pif.HOST, client.addr, 0, client.port, this.#local(fd, 16), 0, l.port);
      const local = isIp6Loopback(client.addr) || ipEqual(client.addr, n6.addr);
      const from = local ? (net.mapLo6[0] ?? n6.gateway) : client.addr;
      this.#tgt.set6(Pif.TAP, n6.addr, 0, l.target, from, 0, client.port);
    } else {
      const n4 = net.ip4;
      if (n4 === null) {
        sys.close(fd);
        return false;
      }
      const src = ip4ToU32(client.addr);
      this.#ini.set4(Pif.HOST, src, client.port, ip4ToU32(this.#local(fd, 4)), l.port);
      const local = src >>> 24 === 127 || src === n4.addr;
      const from = local ? (net.mapLo4[0] ?? n4.gateway) : src;
      this.#tgt.set4(Pif.TAP, n4.addr, l.target, from, client.port);
    }
    logDebug(
      `-t: connection from ${
        formatIp({ family: l.v6 ? 6 : 4, bytes: client.addr })
      } to port ${l.port}`,
    );
    return this.#tcp.inbound(fd, l.v6, this.#ini, this.#tgt);
  }

  /** The local address of accepted socket `fd` (the address the client connected to). */
  #local(fd: number, size: 4 | 16): Uint8Array {
    const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
    const len = new Uint32Array([sa.length]);
    const local = sys.getsockname(fd, sa, len) === 0 ? sys.sockaddrDecode(sa, len[0]) : null;
    return local !== null && local.family !== "unix" ? local.addr : new Uint8Array(size);
  }

  /** Closes every listening socket. */
  close(): void {
    for (const l of this.#listeners.takeAll()) {
      this.#loop.remove(l.fd);
      sys.close(l.fd);
    }
    this.stats.listening = 0;
  }
}
