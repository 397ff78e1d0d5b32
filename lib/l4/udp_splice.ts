/**
 * UDP from the namespace's loopback to the host's loopback (`-U`), never
 * through the tap.
 *
 * # Theory of operation
 *
 * For each forwarded port, a UDP socket bound to the namespace's loopback
 * (127.0.0.1 and ::1, or the address the spec names). A socket's network
 * namespace is fixed when it is created, so these come from the namespace
 * worker (`NsAccess.sockets`); binding and all I/O then happen here, on the
 * main thread.
 *
 * A datagram from a namespace client (address, port) to such a socket opens
 * a flow of type UDP_SPLICE: side 0 is the client → our namespace socket,
 * side 1 a host socket `connect`ed to host loopback at the target port. The
 * datagram goes out on the host socket; what comes back on it is sent from
 * the namespace socket to the client. The flow idles out like any UDP flow.
 *
 * Datagrams are read in batches (`recvmmsg`) into a preallocated pool and
 * written with one `sendmsg` each; nothing is copied in between.
 *
 * `-U auto` binds and closes namespace sockets one port at a time at run
 * time ({@linkcode UdpSplice.bindAuto}, {@linkcode UdpSplice.closePort}).
 * A socket's slot is its epoll tag; a closed one's slot is reused by the
 * next, and a late event for it finds the slot empty. The flows of a closed
 * socket answer their clients through it, so they end with it: each is
 * marked closed and freed (its host socket closed) by the flow table's
 * deferred pass.
 *
 * @module
 */

import { FlowSide, flowSidx, type FlowTable, FlowType, Pif, sidxFlow } from "../flow/table.ts";
import { LOOPBACK4, LOOPBACK6, type PortFwd } from "../fwd.ts";
import { logDebug, logWarn } from "../log.ts";
import type { Loop } from "../loop.ts";
import { type GuestNet, ip4ToU32 } from "../net.ts";
import { IpProto } from "../packet/wire.ts";
import * as sys from "../sys/mod.ts";
import { forEachListenPort, PortSockets, udpRcvbufSet } from "./listen.ts";
import { MAX_DGRAMS_PER_READ } from "./udp.ts";

/** What makes sockets inside the namespace (the worker). */
export interface UdpNsSocketSource {
  /** `count` non-blocking sockets of `family`; `udp` for datagram sockets. */
  sockets(family: 4 | 6, count: number, udp: boolean): Promise<number[]>;
}

/** Per-flow data of UDP_SPLICE flows. */
interface SpliceFlow {
  /** The flow's index in the table. */
  readonly index: number;
  /** Host socket, connected to host loopback at the target port. */
  readonly hostFd: number;
  /** The namespace socket the client sent to. */
  readonly nsFd: number;
  /** The namespace socket's record (its flows end when it closes). */
  readonly sock: NsSocket;
  /** The client's socket address (in the namespace) and its length. */
  readonly peer: Uint8Array;
  lastMs: number;
  /** The namespace socket closed; the flow is freed at the end of the turn. */
  closed: boolean;
}

interface NsSocket {
  readonly fd: number;
  readonly v6: boolean;
  readonly port: number;
  readonly target: number;
  /** Indices of the flows using this socket. */
  readonly flows: Set<number>;
}

/** Counters of the UDP splice path. */
export interface UdpSpliceStats {
  /** Flows opened. */
  flows: number;
  /** Datagrams namespace → host. */
  datagramsToHost: number;
  /** Datagrams host → namespace. */
  datagramsToGuest: number;
  /** Namespace datagrams with no flow to take them (table full, no socket). */
  dropNoFlow: number;
  /** Datagrams a socket refused (send failed), either way. */
  dropSendFailed: number;
  /** Flows that idled out. */
  expired: number;
  /** Namespace sockets bound. */
  listening: number;
}

/** Largest UDP payload. */
const MAX_DATAGRAM = 65535;
const LOOP4_BYTES = new Uint8Array([127, 0, 0, 1]);
const LOOP6 = LOOPBACK6 as Uint8Array;

/** The `-U` forwarder; see the module comment. */
export class UdpSplice {
  /** Counters. */
  readonly stats: UdpSpliceStats = {
    flows: 0,
    datagramsToHost: 0,
    datagramsToGuest: 0,
    dropNoFlow: 0,
    dropSendFailed: 0,
    expired: 0,
    listening: 0,
  };
  readonly #loop: Loop;
  readonly #flows: FlowTable;
  readonly #net: GuestNet;
  readonly #nsType: number;
  readonly #hostType: number;
  /** Indexed by epoll tag; null: a closed socket's slot, reused by the next. */
  readonly #sockets = new PortSockets<NsSocket>();
  readonly #pool = new Uint8Array(MAX_DGRAMS_PER_READ * MAX_DATAGRAM);
  readonly #names = new Uint8Array(MAX_DGRAMS_PER_READ * sys.SOCKADDR_STORAGE_SIZE);
  readonly #mmsg = new sys.MmsgHdrArray(MAX_DGRAMS_PER_READ);
  readonly #iov = new sys.IovecArray(MAX_DGRAMS_PER_READ);
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #key = new FlowSide();
  readonly #tgt = new FlowSide();

  /** Registers with the reactor and the flow table. */
  constructor(loop: Loop, flows: FlowTable, net: GuestNet) {
    this.#loop = loop;
    this.#flows = flows;
    this.#net = net;
    this.#nsType = loop.defineType("udp-ns", (index) => this.#nsReady(index));
    this.#hostType = loop.defineType("udp-splice", (index) => this.#hostReady(index));
    flows.setHandlers(FlowType.UDP_SPLICE, {
      timer: (index, now) => this.#timer(index, now),
      deferred: (index) => this.#reapClosed(index),
    });
    for (let k = 0; k < MAX_DGRAMS_PER_READ; k++) {
      this.#iov.set(k, this.#pool, k * MAX_DATAGRAM, MAX_DATAGRAM);
      this.#mmsg.setIov(k, this.#iov, 1, k);
      this.#mmsg.setControl(k, null);
    }
  }

  /**
   * Binds a namespace socket for every port `fwd` forwards (`-U`); a port
   * that cannot be bound is skipped with a message. Resolves to the fds
   * bound, for {@linkcode closeFds}.
   */
  async listen(fwd: PortFwd, source: UdpNsSocketSource): Promise<number[]> {
    const bound: number[] = [];
    const wanted: [4 | 6, Uint8Array | null, number, number, boolean][] = [];
    forEachListenPort(fwd, this.#net, (family, addr, _ifname, port, target, explicit) => {
      wanted.push([family, addr, port, target, explicit]);
    });
    for (const family of [4, 6] as const) {
      const mine = wanted.filter((w) => w[0] === family);
      if (mine.length === 0) continue;
      let fds: number[];
      try {
        fds = await source.sockets(family, mine.length, true);
      } catch (err) {
        logWarn(`-U: no IPv${family} sockets in the namespace: ${(err as Error).message}`);
        continue;
      }
      mine.forEach(([, addr, port, target, explicit], i) => {
        const fd = fds[i];
        if (fd !== undefined && this.#bind(fd, family, addr, port, target, explicit)) {
          bound.push(fd);
        }
      });
      for (const fd of fds.slice(mine.length)) sys.close(fd);
    }
    return bound;
  }

  /**
   * Binds a namespace socket for every port `fwd` forwards, all or nothing
   * (a `-U` forward added at run time). Resolves to the fds bound, or to
   * why not.
   */
  async listenAll(fwd: PortFwd, source: UdpNsSocketSource): Promise<number[] | string> {
    const wanted: [4 | 6, Uint8Array | null, number, number][] = [];
    forEachListenPort(fwd, this.#net, (family, addr, _ifname, port, target) => {
      wanted.push([family, addr, port, target]);
    });
    const bound: number[] = [];
    for (const family of [4, 6] as const) {
      const mine = wanted.filter((w) => w[0] === family);
      if (mine.length === 0) continue;
      let fds: number[];
      try {
        fds = await source.sockets(family, mine.length, true);
      } catch (err) {
        this.closeFds(bound);
        return `no IPv${family} sockets in the namespace: ${(err as Error).message}`;
      }
      for (let i = 0; i < mine.length; i++) {
        const [, addr, port, target] = mine[i];
        const fd = fds[i];
        const rc = fd === undefined
          ? -sys.Errno.EMFILE
          : this.#bindNs(fd, family, addr, port, target);
        if (rc < 0) {
          for (const rest of fds.slice(i + 1)) sys.close(rest);
          this.closeFds(bound);
          return `cannot bind IPv${family} port ${port} in the namespace: ${sys.errnoName(-rc)}`;
        }
        bound.push(fd);
      }
      for (const fd of fds.slice(mine.length)) sys.close(fd);
    }
    return bound;
  }

  /** Closes the namespace sockets `fds` (from {@linkcode listen} or {@linkcode listenAll}); their flows end. */
  closeFds(fds: readonly number[]): void {
    this.#closeSockets(this.#sockets.takeFds(fds));
  }

  /** Binds namespace socket `fd` and watches it; on failure closes it and says why. */
  #bind(
    fd: number,
    family: 4 | 6,
    addr: Uint8Array | null,
    port: number,
    target: number,
    explicit: boolean,
  ): boolean {
    const rc = this.#bindNs(fd, family, addr, port, target);
    if (rc < 0) {
      const msg = `-U: cannot bind IPv${family} port ${port} in the namespace: ${
        sys.errnoName(-rc)
      }`;
      if (explicit) logWarn(msg);
      else logDebug(msg);
      return false;
    }
    return true;
  }

  /** Binds namespace socket `fd` and watches it; on failure closes it. Returns 0 or -errno. */
  #bindNs(
    fd: number,
    family: 4 | 6,
    addr: Uint8Array | null,
    port: number,
    target: number,
  ): number {
    const bindAddr = addr ?? (family === 4 ? LOOP4_BYTES : LOOP6);
    const len = family === 4
      ? sys.sockaddrIn4(this.#sa, bindAddr, port)
      : sys.sockaddrIn6(this.#sa, bindAddr, port);
    if (family === 6) sys.setsockoptInt(fd, sys.IPPROTO_IPV6, sys.IPV6_V6ONLY, 1);
    let rc = sys.bind(fd, this.#sa, len);
    if (rc === 0) rc = this.#loop.add(fd, sys.EPOLLIN, this.#nsType, this.#sockets.nextSlot());
    if (rc < 0) {
      sys.close(fd);
      return rc;
    }
    this.#sockets.add({ fd, v6: family === 6, port, target, flows: new Set() });
    this.stats.listening++;
    return 0;
  }

  /**
   * Binds `fd`, a UDP socket of `family` the worker made in the namespace,
   * to the namespace's loopback at `port`, forwarding to the same port on
   * host loopback, as `-U auto` does for a port found on the host. Takes
   * `fd` over: on failure (a debug line) it is closed. Returns true if bound.
   */
  bindAuto(fd: number, family: 4 | 6, port: number): boolean {
    return this.#bind(fd, family, null, port, port, false);
  }

  /** Closes every namespace socket on `port`; their flows end (see the module comment). */
  closePort(port: number): void {
    this.#closeSockets(this.#sockets.takePort(port));
  }

  #closeSockets(sockets: NsSocket[]): void {
    for (const s of sockets) {
      this.#loop.remove(s.fd);
      sys.close(s.fd);
      this.stats.listening--;
      for (const index of s.flows) {
        this.#flows.data<SpliceFlow>(index, FlowType.UDP_SPLICE).closed = true;
        this.#flows.defer(index);
      }
      s.flows.clear();
    }
  }

  /** The namespace ports with a bound socket. */
  ports(): Set<number> {
    return this.#sockets.ports();
  }

  /** Datagrams from namespace clients: to the host, each through its flow. */
  #nsReady(index: number): void {
    const s = this.#sockets.get(index);
    if (s === null) return; // closed earlier in this turn
    const mm = this.#mmsg;
    for (;;) {
      for (let k = 0; k < MAX_DGRAMS_PER_READ; k++) {
        mm.setName(k, this.#names.subarray(k * 128, k * 128 + 128));
      }
      const n = sys.recvmmsg(s.fd, mm, MAX_DGRAMS_PER_READ, sys.MSG_DONTWAIT);
      if (n <= 0) return;
      for (let k = 0; k < n; k++) {
        const f = this.#flowFor(s, k);
        if (f === null) {
          this.stats.dropNoFlow++;
          continue;
        }
        f.lastMs = performance.now();
        const rc = sys.sendAt(
          f.hostFd,
          this.#pool,
          k * MAX_DATAGRAM,
          mm.msgLen(k),
          sys.MSG_DONTWAIT,
        );
        if (rc < 0) this.stats.dropSendFailed++;
        else {
          this.stats.datagramsToHost++;
          this.#flows.bytesFrom[f.index * 2] += rc;
        }
      }
      if (n < MAX_DGRAMS_PER_READ) return;
    }
  }

  /** The flow for datagram `k` of the last batch on namespace socket `s`: found or opened. */
  #flowFor(s: NsSocket, k: number): SpliceFlow | null {
    const nameLen = this.#mmsg.nameLen(k);
    const name = this.#names.subarray(k * 128, k * 128 + 128);
    const client = sys.sockaddrDecode(name, nameLen);
    if (client === null || client.family === "unix") return null;
    const key = this.#key;
    const tgt = this.#tgt;
    if (s.v6) {
      key.set6(Pif.SPLICE, client.addr, 0, client.port, LOOP6, 0, s.port);
      tgt.set6(Pif.HOST, LOOP6, 0, s.target, LOOP6, 0, 0);
    } else {
      key.set4(Pif.SPLICE, ip4ToU32(client.addr), client.port, LOOPBACK4, s.port);
      tgt.set4(Pif.HOST, LOOPBACK4, s.target, LOOPBACK4, 0);
    }
    const flows = this.#flows;
    const sidx = flows.lookup(IpProto.Udp, key);
    if (sidx >= 0) {
      const f = flows.data<SpliceFlow>(sidxFlow(sidx), FlowType.UDP_SPLICE);
      return f.closed ? null : f; // a closed socket's flow, freed at the end of this turn
    }
    const index = flows.alloc();
    if (index < 0) return null;
    flows.setIni(index, key);
    flows.setTgt(index, tgt);
    const fd = sys.socket(
      s.v6 ? sys.AF_INET6 : sys.AF_INET,
      sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
    );
    const len = s.v6
      ? sys.sockaddrIn6(this.#sa, LOOP6, s.target)
      : sys.sockaddrIn4(this.#sa, LOOP4_BYTES, s.target);
    if (fd < 0 || sys.connect(fd, this.#sa, len) < 0) {
      if (fd >= 0) sys.close(fd);
      flows.cancel(index);
      return null;
    }
    udpRcvbufSet(fd);
    const f: SpliceFlow = {
      index,
      hostFd: fd,
      nsFd: s.fd,
      sock: s,
      peer: name.slice(0, nameLen),
      lastMs: performance.now(),
      closed: false,
    };
    flows.setType(index, FlowType.UDP_SPLICE, f);
    flows.hashInsert(flowSidx(index, 0));
    sys.sysCheck(this.#loop.add(fd, sys.EPOLLIN, this.#hostType, index), "epoll_ctl udp-splice");
    flows.activate(index);
    s.flows.add(index);
    this.stats.flows++;
    return f;
  }

  /** Replies from the host: back to the namespace client. */
  #hostReady(index: number): void {
    const f = this.#flows.data<SpliceFlow>(index, FlowType.UDP_SPLICE);
    if (f.closed) return; // nowhere to send: freed at the end of this turn
    const mm = this.#mmsg;
    for (;;) {
      for (let k = 0; k < MAX_DGRAMS_PER_READ; k++) mm.setName(k, null);
      const n = sys.recvmmsg(f.hostFd, mm, MAX_DGRAMS_PER_READ, sys.MSG_DONTWAIT);
      if (n <= 0) return;
      f.lastMs = performance.now();
      for (let k = 0; k < n; k++) {
        const rc = sys.sendAt(
          f.nsFd,
          this.#pool,
          k * MAX_DATAGRAM,
          mm.msgLen(k),
          sys.MSG_DONTWAIT,
          f.peer,
          f.peer.length,
        );
        if (rc < 0) this.stats.dropSendFailed++;
        else {
          this.stats.datagramsToGuest++;
          this.#flows.bytesFrom[index * 2 + 1] += rc;
        }
      }
      if (n < MAX_DGRAMS_PER_READ) return;
    }
  }

  #timer(index: number, now: number): boolean {
    const f = this.#flows.data<SpliceFlow>(index, FlowType.UDP_SPLICE);
    if (now - f.lastMs < this.#net.udpTimeoutMs) return false;
    f.sock.flows.delete(index);
    this.#loop.remove(f.hostFd);
    sys.close(f.hostFd);
    this.stats.expired++;
    return true;
  }

  /** The deferred handler: frees a flow whose namespace socket closed. */
  #reapClosed(index: number): boolean {
    const f = this.#flows.data<SpliceFlow>(index, FlowType.UDP_SPLICE);
    if (!f.closed) return false;
    this.#loop.remove(f.hostFd);
    sys.close(f.hostFd);
    return true;
  }

  /** Closes the namespace sockets. */
  close(): void {
    for (const s of this.#sockets.takeAll()) {
      this.#loop.remove(s.fd);
      sys.close(s.fd);
    }
    this.stats.listening = 0;
  }
}
