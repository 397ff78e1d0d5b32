/**
 * Which TCP ports are listened on: the kernel's `/proc/net/tcp` and
 * `/proc/net/tcp6` tables, and the choice of ports `auto` forwarding makes
 * from them.
 *
 * # Theory of operation
 *
 * `-t auto` forwards the ports something listens on inside the namespace,
 * `-T auto` the ports something listens on in the host's namespace. Both
 * learn this the way `ss` does without netlink: each line of
 * `/proc/thread-self/net/tcp[6]` is one socket, and state `0A` is LISTEN.
 * The table shows the namespace of the *reading thread* (`thread-self`, not
 * `self`, which is the main thread's): the namespace worker reads the
 * namespace's, the main thread the host's.
 *
 * Line format (fields separated by blanks):
 *
 *     sl  local_address          rem_address   st ...
 *     0:  0100007F:1F90          00000000:0000 0A ...
 *
 * The local address is the `in_addr` (IPv6: four 32-bit words) printed as
 * hex of the word's *host-order* value, the port as hex of its numeric
 * value. tapir runs on little-endian machines (x86_64, aarch64), so each
 * 8-digit group is byte-reversed to get network order.
 *
 * {@linkcode autoPorts} turns two scans into the ports to forward: every
 * port listened on in either family, less the spec's exclusions and less
 * the ports tapir itself listens on on that side — otherwise `-t auto` and
 * `-T auto` together would forward each other's listeners in a loop.
 *
 * @module
 */

import type { PortFwd } from "../fwd.ts";

/** One listening socket: its port and bound address (4 or 16 bytes; all zero for the wildcard). */
export interface TcpListenEntry {
  /** The port. */
  readonly port: number;
  /** The bound address in network order, as a plain array (crosses threads as JSON). */
  readonly addr: readonly number[];
}

/** The listening sockets of one namespace, by family. */
export interface TcpListenScan {
  /** From `tcp` (IPv4). */
  readonly v4: readonly TcpListenEntry[];
  /** From `tcp6` (IPv6, including dual-stack wildcard sockets). */
  readonly v6: readonly TcpListenEntry[];
}

/** An empty scan. */
export const TCP_SCAN_EMPTY: TcpListenScan = Object.freeze({ v4: [], v6: [] });

/** The kernel's code for LISTEN in the `st` column. */
const TCP_LISTEN_STATE = "0A";

/**
 * The listening sockets in the text of `/proc/net/tcp` (`v6` false) or
 * `/proc/net/tcp6` (`v6` true). Lines that do not parse are skipped; each
 * (address, port) appears once even if several sockets share it
 * (`SO_REUSEPORT`).
 */
export function parseProcNetTcp(text: string, v6: boolean): TcpListenEntry[] {
  const hexLen = v6 ? 32 : 8;
  const out: TcpListenEntry[] = [];
  const seen = new Set<string>();
  for (const line of text.split("\n")) {
    const f = line.trim().split(/\s+/);
    // f[0] "sl:", f[1] local, f[2] remote, f[3] state. The header's f[3] is "st".
    if (f.length < 4 || f[3] !== TCP_LISTEN_STATE) continue;
    const local = f[1];
    const colon = local.indexOf(":");
    if (colon !== hexLen || local.length !== hexLen + 5) continue;
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

/**
 * Reads the listening sockets of the calling thread's network namespace. A
 * table that cannot be read (no IPv6 in the kernel) counts as empty.
 */
export function readTcpListening(): TcpListenScan {
  const read = (name: string, v6: boolean) => {
    try {
      return parseProcNetTcp(Deno.readTextFileSync(`/proc/thread-self/net/${name}`), v6);
    } catch {
      return [];
    }
  };
  return { v4: read("tcp", false), v6: read("tcp6", true) };
}

/** True for the wildcard or a loopback address (4 or 16 bytes). */
export function isWildcardOrLoopback(addr: readonly number[]): boolean {
  if (addr.length === 4) return addr[0] === 127 || addr.every((b) => b === 0);
  let zeroHead = true;
  for (let i = 0; i < 15; i++) if (addr[i] !== 0) zeroHead = false;
  if (zeroHead && (addr[15] === 0 || addr[15] === 1)) return true;
  // ::ffff:127.x.y.z, ::ffff:0.0.0.0
  const mapped = addr.slice(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
    addr[11] === 0xff;
  return mapped && (addr[12] === 127 || addr.slice(12).every((b) => b === 0));
}

/** Options of {@linkcode autoPorts}. */
export interface AutoPortsOptions {
  /** Ports tapir itself listens on on the scanned side: never forwarded (no loops). */
  readonly own: ReadonlySet<number>;
  /**
   * Only sockets bound to the wildcard or loopback count (for `-T auto`,
   * whose connections go to the host's loopback and could reach nothing else).
   */
  readonly loopbackReachable?: boolean;
}

/**
 * The ports `auto` forwards given a scan of the other side: listened on in
 * either family, not excluded by `fwd` (`~PORT`), not tapir's own. Sorted.
 */
export function autoPorts(scan: TcpListenScan, fwd: PortFwd, opts: AutoPortsOptions): number[] {
  const ports = new Set<number>();
  for (const list of [scan.v4, scan.v6]) {
    for (const e of list) {
      if (opts.loopbackReachable && !isWildcardOrLoopback(e.addr)) continue;
      if (opts.own.has(e.port)) continue;
      if (fwd.excluded.some((r) => e.port >= r.first && e.port <= r.last)) continue;
      ports.add(e.port);
    }
  }
  return [...ports].sort((a, b) => a - b);
}
