/**
 * Which ports are bound: the kernel's `/proc/net/tcp[6]` and
 * `/proc/net/udp[6]` tables, and the choice of ports `auto` forwarding makes
 * from them.
 *
 * # Theory of operation
 *
 * `-t auto` and `-u auto` forward the ports something serves inside the
 * namespace, `-T auto` and `-U auto` the ports something serves in the
 * host's namespace. They learn this the way `ss` does without netlink: each
 * line of `/proc/thread-self/net/{tcp,udp}[6]` is one socket. The table
 * shows the namespace of the *reading thread* (`thread-self`, not `self`,
 * which is the main thread's): the namespace worker reads the namespace's,
 * the main thread the host's.
 *
 * Line format (fields separated by blanks; the same for both protocols):
 *
 *     sl  local_address          rem_address   st ...
 *     0:  0100007F:1F90          00000000:0000 0A ...
 *
 * The local address is the `in_addr` (IPv6: four 32-bit words) printed as
 * hex of the word's *host-order* value, the port as hex of its numeric
 * value. tapir runs on little-endian machines (x86_64, aarch64), so each
 * 8-digit group is byte-reversed to get network order.
 *
 * **Which sockets serve.** TCP: state `0A`, LISTEN. UDP has no listening
 * state; the kernel prints its sockets with TCP's state numbers: `07`
 * (CLOSE, "unconnected") for a merely bound socket, `01` (ESTABLISHED) once
 * `connect`ed. A server's socket is bound and not connected (its remote
 * address is all zero); a connected socket is a client talking to one peer
 * and is left out. So is a UDP socket whose port lies in the ephemeral range
 * (`ip_local_port_range`): that is where the kernel puts a client socket
 * that sends without binding first, and servers choose their ports below
 * it. The range is read at the same time as the table, in the same thread:
 * files under `/proc/sys/net` also follow the reading thread's namespace.
 *
 * {@linkcode autoPorts} turns two scans into the ports to forward: every
 * port bound in either family, less the spec's exclusions and less the
 * ports tapir itself has bound on that side — otherwise `auto` in both
 * directions would forward each other's sockets in a loop.
 *
 * @module
 */

import type { PortFwd, PortRange } from "../fwd.ts";

/** One bound socket: its port and bound address (4 or 16 bytes; all zero for the wildcard). */
export interface BoundPort {
  /** The port. */
  readonly port: number;
  /** The bound address in network order, as a plain array (crosses threads as JSON). */
  readonly addr: readonly number[];
}

/** The serving sockets of one protocol in one namespace, by family. */
export interface PortScan {
  /** From `tcp` / `udp` (IPv4). */
  readonly v4: readonly BoundPort[];
  /** From `tcp6` / `udp6` (IPv6, including dual-stack wildcard sockets). */
  readonly v6: readonly BoundPort[];
}

/** One listening TCP socket (a {@linkcode BoundPort}). */
export type TcpListenEntry = BoundPort;
/** The listening TCP sockets of one namespace (a {@linkcode PortScan}). */
export type TcpListenScan = PortScan;

/** An empty scan. */
export const PORT_SCAN_EMPTY: PortScan = Object.freeze({ v4: [], v6: [] });
/** An empty TCP scan (the same value as {@linkcode PORT_SCAN_EMPTY}). */
export const TCP_SCAN_EMPTY: TcpListenScan = PORT_SCAN_EMPTY;

/** The protocols whose tables are read. */
export type ScanProto = "tcp" | "udp";

/** The `st` column of a serving socket: TCP LISTEN, UDP bound and unconnected (CLOSE). */
const SERVING_STATE: Readonly<Record<ScanProto, string>> = { tcp: "0A", udp: "07" };

const EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range";

/**
 * The serving sockets of `proto` in the text of `/proc/net/PROTO` (`v6`
 * false) or `/proc/net/PROTO6` (`v6` true): in the protocol's serving state
 * and without a remote address. Lines that do not parse are skipped; each
 * (address, port) appears once even if several sockets share it
 * (`SO_REUSEPORT`).
 */
export function parseProcNet(text: string, v6: boolean, proto: ScanProto): BoundPort[] {
  const hexLen = v6 ? 32 : 8;
  const state = SERVING_STATE[proto];
  const out: BoundPort[] = [];
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    // f[0] "sl:", f[1] local, f[2] remote, f[3] state. The header's f[3] is "st".
    if (f.length < 4 || f[3] !== state) continue;
    const local = f[1];
    const colon = local.indexOf(":");
    if (colon !== hexLen || local.length !== hexLen + 5) continue;
    if (!/^0+:0000$/.test(f[2]) || f[2].length !== hexLen + 5) continue;
    const port = parseInt(local.slice(colon + 1), 16);
    if (!(port > 0 && port <= 65535)) continue;
    const addr = hexWordsToBytes(local.slice(0, colon));
    if (addr === null) continue;
    if (seen.has(local)) continue;
    seen.add(local);
    out.push({ port, addr });
  }
  return out;
}

/** The LISTEN sockets in `/proc/net/tcp` or `tcp6` text: {@linkcode parseProcNet} for TCP. */
export function parseProcNetTcp(text: string, v6: boolean): TcpListenEntry[] {
  return parseProcNet(text, v6, "tcp");
}

/** The bound, unconnected sockets in `/proc/net/udp` or `udp6` text ({@linkcode parseProcNet}). */
export function parseProcNetUdp(text: string, v6: boolean): BoundPort[] {
  return parseProcNet(text, v6, "udp");
}

/** Host-order hex words (8 digits each) to network-order bytes; null if not hex. */
function hexWordsToBytes(hex: string): number[] | null {
  if (!/^[0-9A-Fa-f]+$/.test(hex)) return null;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    // Little-endian host: the word's lowest byte is the first in memory.
    for (let b = 3; b >= 0; b--) bytes.push(parseInt(hex.slice(w + b * 2, w + b * 2 + 2), 16));
  }
  return bytes;
}

/** One protocol's tables in the calling thread's namespace; one that cannot be read is empty. */
function readProcNet(proto: ScanProto): PortScan {
  const read = (v6: boolean) => {
    try {
      const text = Deno.readTextFileSync(`/proc/thread-self/net/${proto}${v6 ? "6" : ""}`);
      return parseProcNet(text, v6, proto);
    } catch {
      return [];
    }
  };
  return { v4: read(false), v6: read(true) };
}

/**
 * Reads the listening sockets of the calling thread's network namespace. A
 * table that cannot be read (no IPv6 in the kernel) counts as empty.
 */
export function readTcpListening(): TcpListenScan {
  return readProcNet("tcp");
}

/**
 * The calling thread's namespace's ephemeral port range
 * (`ip_local_port_range`), or null if it cannot be read.
 */
export function ephemeralPortRange(): PortRange | null {
  try {
    const [first, last] = Deno.readTextFileSync(EPHEMERAL_RANGE).trim().split(/\s+/).map(Number);
    return first > 0 && last >= first ? { first, last } : null;
  } catch {
    return null;
  }
}

/**
 * Reads the bound, unconnected UDP sockets of the calling thread's network
 * namespace, leaving out those on a port in `ephemeral` (by default the
 * namespace's own range; see the module comment). A table that cannot be
 * read counts as empty.
 */
export function readUdpBound(ephemeral: PortRange | null = ephemeralPortRange()): PortScan {
  const scan = readProcNet("udp");
  if (ephemeral === null) return scan;
  const keep = (e: BoundPort) => e.port < ephemeral.first || e.port > ephemeral.last;
  return { v4: scan.v4.filter(keep), v6: scan.v6.filter(keep) };
}

/** True for the wildcard address (4 or 16 bytes, or `::ffff:0.0.0.0`). */
function isWildcard(addr: readonly number[]): boolean {
  if (addr.length === 4) return addr.every((b) => b === 0);
  if (addr.every((b) => b === 0)) return true;
  return isMapped(addr) && addr.slice(12).every((b) => b === 0);
}

/** True for an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`). */
function isMapped(addr: readonly number[]): boolean {
  return addr.length === 16 && addr.slice(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
    addr[11] === 0xff;
}

/** True for a loopback address: 127.0.0.0/8, `::1`, `::ffff:127.x.y.z` (4 or 16 bytes). */
export function isLoopbackAddr(addr: readonly number[]): boolean {
  if (addr.length === 4) return addr[0] === 127;
  if (isMapped(addr)) return addr[12] === 127;
  for (let i = 0; i < 15; i++) if (addr[i] !== 0) return false;
  return addr[15] === 1;
}

/** True for the wildcard or a loopback address (4 or 16 bytes). */
export function isWildcardOrLoopback(addr: readonly number[]): boolean {
  return isWildcard(addr) || isLoopbackAddr(addr);
}

/** Options of {@linkcode autoPorts}. */
export interface AutoPortsOptions {
  /** Ports tapir itself has bound on the scanned side: never forwarded (no loops). */
  readonly own: ReadonlySet<number>;
  /**
   * Only sockets bound to the wildcard or loopback count (for `-T auto` and
   * `-U auto`, whose traffic goes to the host's loopback and could reach
   * nothing else).
   */
  readonly loopbackReachable?: boolean;
  /**
   * Sockets bound to a loopback address do not count (for `-u auto`, whose
   * datagrams reach the namespace through the tap, at the guest's address).
   */
  readonly notLoopback?: boolean;
}

/**
 * The ports `auto` forwards given a scan of the other side: bound in either
 * family, not excluded by `fwd` (`~PORT`), not tapir's own. Sorted.
 */
export function autoPorts(scan: PortScan, fwd: PortFwd, opts: AutoPortsOptions): number[] {
  const ports = new Set<number>();
  for (const list of [scan.v4, scan.v6]) {
    for (const e of list) {
      if (opts.loopbackReachable && !isWildcardOrLoopback(e.addr)) continue;
      if (opts.notLoopback && isLoopbackAddr(e.addr)) continue;
      if (opts.own.has(e.port)) continue;
      if (fwd.excluded.some((r) => e.port >= r.first && e.port <= r.last)) continue;
      ports.add(e.port);
    }
  }
  return [...ports].sort((a, b) => a - b);
}
