/**
 * What the TCP and UDP forwarders (`-t`, `-u`) share: which host ports a
 * forwarding spec binds, and how a listening socket is opened.
 *
 * A spec's rule with an address binds that family only; without one, both
 * families (IPv4 on 0.0.0.0, IPv6 on [::] with `IPV6_V6ONLY`, so the two are
 * independent), each only if the guest has that family. With `all`, the
 * host's ephemeral port range is left out, so tapir does not take the ports
 * the host's own outgoing connections use.
 *
 * @module
 */

import { type PortFwd, portFwdRules } from "../fwd.ts";
import type { Loop } from "../loop.ts";
import type { GuestNet } from "../net.ts";
import * as sys from "../sys/mod.ts";

const EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range";

/**
 * Calls `fn` for every (family, host port) that `fwd` forwards: bind address
 * (null: any) and interface, the port, the guest port it maps to, and
 * whether the user named the port explicitly (a failure to bind is then
 * worth a warning rather than a debug line).
 */
export function forEachListenPort(
  fwd: PortFwd,
  net: GuestNet,
  fn: (
    family: 4 | 6,
    addr: Uint8Array | null,
    ifname: string | null,
    port: number,
    target: number,
    explicit: boolean,
  ) => void,
): void {
  if (fwd.mode === "none" || fwd.mode === "auto") return;
  let skipLo = 0, skipHi = -1;
  if (fwd.mode === "all") {
    try {
      [skipLo, skipHi] = Deno.readTextFileSync(EPHEMERAL_RANGE).trim().split(/\s+/).map(Number);
    } catch { /* no range known: bind everything */ }
  }
  const explicit = fwd.mode === "ports";
  for (const rule of portFwdRules(fwd)) {
    const families: (4 | 6)[] = rule.addr ? [rule.addr.length === 4 ? 4 : 6] : [4, 6];
    for (let port = rule.first; port <= rule.last; port++) {
      if (port >= skipLo && port <= skipHi) continue;
      for (const family of families) {
        if (!guestFamilies(net).includes(family)) continue;
        fn(family, rule.addr, rule.ifname, port, rule.target + (port - rule.first), explicit);
      }
    }
  }
}

/** The families the guest has (forwarding to a family it lacks goes nowhere). */
export function guestFamilies(net: GuestNet): (4 | 6)[] {
  const out: (4 | 6)[] = [];
  if (net.ip4 !== null) out.push(4);
  if (net.ip6 !== null) out.push(6);
  return out;
}

/**
 * Receive buffer asked for on tapir's UDP sockets toward the host (flows,
 * forwarded ports, spliced flows); the kernel caps it at
 * `net.core.rmem_max`. The default (`rmem_default`, 208 KiB: some 90
 * datagrams of 1400 bytes) overflowed while tapir was busy elsewhere:
 * measured with iperf3 at 500 Mbit/s host → guest, tapir's socket dropped
 * 640–1 650 datagrams in 5 s (0.3–0.7 %), none with 4 MiB.
 */
export const UDP_RCVBUF = 4 << 20;

/** Gives UDP socket `fd` a receive buffer of {@linkcode UDP_RCVBUF} (or the most the kernel allows). */
export function udpRcvbufSet(fd: number): void {
  sys.setsockoptInt(fd, sys.SOL_SOCKET, sys.SO_RCVBUF, UDP_RCVBUF);
}

/**
 * Opens a non-blocking socket of `type` (SOCK_STREAM: listening; SOCK_DGRAM:
 * bound) on `port` of `addr` (null: any) and optionally interface `ifname`.
 * Returns the fd or -errno.
 */
export function listenSocket(
  type: number,
  family: 4 | 6,
  addr: Uint8Array | null,
  ifname: string | null,
  port: number,
): number {
  const v6 = family === 6;
  const fd = sys.socket(
    v6 ? sys.AF_INET6 : sys.AF_INET,
    type | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
  );
  if (fd < 0) return fd;
  sys.setsockoptInt(fd, sys.SOL_SOCKET, sys.SO_REUSEADDR, 1);
  if (v6) sys.setsockoptInt(fd, sys.IPPROTO_IPV6, sys.IPV6_V6ONLY, 1);
  if (type === sys.SOCK_DGRAM) udpRcvbufSet(fd);
  let rc = 0;
  if (ifname !== null) {
    rc = sys.setsockopt(
      fd,
      sys.SOL_SOCKET,
      sys.SO_BINDTODEVICE,
      new TextEncoder().encode(`${ifname}\0`),
    );
  }
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const any = new Uint8Array(v6 ? 16 : 4);
  const len = v6 ? sys.sockaddrIn6(sa, addr ?? any, port) : sys.sockaddrIn4(sa, addr ?? any, port);
  if (rc === 0) rc = sys.bind(fd, sa, len);
  if (rc === 0 && type === sys.SOCK_STREAM) rc = sys.listen(fd, 128);
  if (rc < 0) {
    sys.close(fd);
    return rc;
  }
  return fd;
}

/**
 * Sockets bound to forwarded ports, each in a stable slot: the slot number is
 * the socket's epoll tag, so it must not change while the socket is open.
 * Freed slots are reused (`auto` forwarding opens and closes ports for as
 * long as tapir runs, and the slot numbers must not grow without bound).
 */
export class PortSockets<T extends { readonly fd: number; readonly port: number }> {
  readonly #slots: (T | null)[] = [];
  readonly #free: number[] = [];

  /** The slot the next {@linkcode add} takes (register the fd under it first). */
  nextSlot(): number {
    return this.#free.length > 0 ? this.#free[this.#free.length - 1] : this.#slots.length;
  }

  /** Stores `entry` in {@linkcode nextSlot} and returns that slot. */
  add(entry: T): number {
    const slot = this.#free.length > 0 ? this.#free.pop()! : this.#slots.length;
    this.#slots[slot] = entry;
    return slot;
  }

  /** The entry in `slot`, or null (a late event for a closed socket). */
  get(slot: number): T | null {
    return this.#slots[slot] ?? null;
  }

  /** Removes and returns every entry bound to `port`. */
  takePort(port: number): T[] {
    const out: T[] = [];
    for (let i = 0; i < this.#slots.length; i++) {
      const e = this.#slots[i];
      if (e === null || e.port !== port) continue;
      out.push(e);
      this.#slots[i] = null;
      this.#free.push(i);
    }
    return out;
  }

  /** Removes and returns the entries whose socket is one of `fds`. */
  takeFds(fds: readonly number[]): T[] {
    const want = new Set(fds);
    const out: T[] = [];
    for (let i = 0; i < this.#slots.length; i++) {
      const e = this.#slots[i];
      if (e === null || !want.has(e.fd)) continue;
      out.push(e);
      this.#slots[i] = null;
      this.#free.push(i);
    }
    return out;
  }

  /** Removes and returns every entry. */
  takeAll(): T[] {
    const out = this.#slots.filter((e): e is T => e !== null);
    this.#slots.length = 0;
    this.#free.length = 0;
    return out;
  }

  /** The ports with an open socket. */
  ports(): Set<number> {
    const out = new Set<number>();
    for (const e of this.#slots) if (e !== null) out.add(e.port);
    return out;
  }
}

/**
 * Opens a socket for every (family, port) that `fwd` forwards, all or
 * nothing, as a forward added at run time must: `open` returns the fd or
 * -errno; on the first failure every socket opened so far is given to
 * `close` and the result is a message naming the port and the error.
 * Otherwise the result is the fds opened.
 */
export function openAllListenPorts(
  fwd: PortFwd,
  net: GuestNet,
  open: (
    family: 4 | 6,
    addr: Uint8Array | null,
    ifname: string | null,
    port: number,
    target: number,
  ) => number,
  close: (fds: number[]) => void,
): number[] | string {
  let error = "";
  const fds = openListenPorts(
    fwd,
    net,
    // After the first failure nothing more is opened: the forward is refused whole.
    (family, addr, ifname, port, target) =>
      error === "" ? open(family, addr, ifname, port, target) : -sys.Errno.ECANCELED,
    (rc, family, port) => {
      if (error === "") error = `cannot listen on IPv${family} port ${port}: ${sys.errnoName(-rc)}`;
    },
  );
  if (error === "") return fds;
  close(fds);
  return error;
}

/**
 * Opens a socket for every (family, port) that `fwd` forwards with `open`
 * (fd or -errno), as at start-up: a port that fails is reported to `failed`
 * and skipped. Returns the fds opened.
 */
export function openListenPorts(
  fwd: PortFwd,
  net: GuestNet,
  open: (
    family: 4 | 6,
    addr: Uint8Array | null,
    ifname: string | null,
    port: number,
    target: number,
  ) => number,
  failed: (rc: number, family: 4 | 6, port: number, explicit: boolean) => void,
): number[] {
  const fds: number[] = [];
  forEachListenPort(fwd, net, (family, addr, ifname, port, target, explicit) => {
    const fd = open(family, addr, ifname, port, target);
    if (fd >= 0) fds.push(fd);
    else failed(fd, family, port, explicit);
  });
  return fds;
}

/**
 * Opens a listening socket of `sockType` (see {@linkcode listenSocket}),
 * watches it for input under (`fdType`, its slot in `sockets`) and stores
 * `entry(fd)` there. Returns the fd, or -errno with nothing left open.
 */
export function openWatchedListener<T extends { readonly fd: number; readonly port: number }>(
  loop: Loop,
  fdType: number,
  sockets: PortSockets<T>,
  sockType: number,
  family: 4 | 6,
  addr: Uint8Array | null,
  ifname: string | null,
  port: number,
  entry: (fd: number) => T,
): number {
  const fd = listenSocket(sockType, family, addr, ifname, port);
  if (fd < 0) return fd;
  const rc = loop.add(fd, sys.EPOLLIN, fdType, sockets.nextSlot());
  if (rc < 0) {
    sys.close(fd);
    return rc;
  }
  sockets.add(entry(fd));
  return fd;
}
