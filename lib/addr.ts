/**
 * IP address text ⇄ bytes, and the few facts about an address that
 * configuration checks need.
 *
 * This is the one place that reads or writes address text. Everything else in
 * tapir handles addresses as bytes in network order — a 4-byte or 16-byte
 * `Uint8Array`, or a slice of a frame buffer at an offset — because that is
 * what goes on the wire and what the socket calls take.
 *
 * Parsing is strict on purpose: the text comes from the command line, and an
 * address that a lenient parser "fixes" (`01.2.3.4` read as octal by some C
 * libraries, a zone id silently dropped) would be a quiet misconfiguration.
 *
 * - IPv4: exactly four decimal parts 0-255, no leading zeros, no other forms.
 * - IPv6: every text form of RFC 4291 section 2.2 — eight groups, `::`
 *   standing for one or more zero groups, and a dotted IPv4 tail in place of
 *   the last two groups. Zone ids (`%eth0`) are not addresses and are refused.
 *
 * Formatting follows RFC 5952: lowercase hex, no leading zeros in a group, the
 * longest run of two or more zero groups shortened to `::` (the first such run
 * on a tie), and IPv4-mapped addresses (`::ffff:0:0/96`) written with their
 * IPv4 tail in dotted form (section 5).
 *
 * @module
 */

/** An IP address of either family: 4 bytes for IPv4, 16 for IPv6, network order. */
export interface IpAddr {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The address bytes; length 4 when `family` is 4, 16 when it is 6. */
  readonly bytes: Uint8Array;
}

/** What kind of address something is, as far as configuration checks care. */
export type IpKind = "unspecified" | "loopback" | "multicast" | "broadcast" | "unicast";

const IP4_PART = /^(?:0|[1-9][0-9]{0,2})$/;
const IP6_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses a strict dotted quad (`192.0.2.1`) into 4 bytes, or returns null. */
export function parseIp4(s: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return parseIp4Into(s, out, 0) ? out : null;
}

/** Writes the dotted quad `s` into `out[off..off+4)`; false (and `out` undefined) if malformed. */
function parseIp4Into(s: string, out: Uint8Array, off: number): boolean {
  const parts = s.split(".");
  if (parts.length !== 4) return false;
  for (let i = 0; i < 4; i++) {
    if (!IP4_PART.test(parts[i])) return false;
    const n = Number(parts[i]);
    if (n > 255) return false;
    out[off + i] = n;
  }
  return true;
}

/**
 * Reads the colon-separated parts of one side of an IPv6 address into 16-bit
 * group values. A dotted IPv4 tail is accepted only as the last part of the
 * whole address (`v4TailAllowed`), and counts as two groups.
 */
function ip6Groups(parts: readonly string[], v4TailAllowed: boolean): number[] | null {
  const groups: number[] = [];
  const v4 = new Uint8Array(4);
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (IP6_GROUP.test(part)) {
      groups.push(parseInt(part, 16));
    } else if (v4TailAllowed && i === parts.length - 1 && parseIp4Into(part, v4, 0)) {
      groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else {
      return null;
    }
  }
  return groups;
}

/** Parses any RFC 4291 IPv6 text form into 16 bytes, or returns null. Zone ids are refused. */
export function parseIp6(s: string): Uint8Array | null {
  const halves = s.split("::");
  if (halves.length > 2) return null;
  let groups: number[];
  if (halves.length === 1) {
    const all = ip6Groups(s.split(":"), true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  } else {
    // Splitting "" would give [""], which is one empty (invalid) group; an
    // empty side of "::" is zero groups instead.
    const head = ip6Groups(halves[0] === "" ? [] : halves[0].split(":"), false);
    const tail = ip6Groups(halves[1] === "" ? [] : halves[1].split(":"), true);
    if (head === null || tail === null) return null;
    const zeros = 8 - head.length - tail.length;
    // "::" stands for at least one zero group.
    if (zeros < 1) return null;
    groups = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >>> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  return out;
}

/** Parses an address of either family; IPv6 is recognised by its colon. */
export function parseIp(s: string): IpAddr | null {
  if (s.includes(":")) {
    const bytes = parseIp6(s);
    return bytes === null ? null : { family: 6, bytes };
  }
  const bytes = parseIp4(s);
  return bytes === null ? null : { family: 4, bytes };
}

/** Formats the 4 bytes at `bytes[off]` as a dotted quad. */
export function formatIp4(bytes: Uint8Array, off = 0): string {
  return `${bytes[off]}.${bytes[off + 1]}.${bytes[off + 2]}.${bytes[off + 3]}`;
}

/** Formats the 16 bytes at `bytes[off]` in RFC 5952 canonical form. */
export function formatIp6(bytes: Uint8Array, off = 0): string {
  if (isIp6V4Mapped(bytes, off)) return `::ffff:${formatIp4(bytes, off + 12)}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[off + 2 * i] << 8) | bytes[off + 2 * i + 1]);

  // Longest run of zero groups; a strict ">" keeps the first run on a tie.
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never shortened
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (from: number, to: number) =>
    groups.slice(from, to).map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(0, 8);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLen, 8)}`;
}

/** Formats an address of either family. */
export function formatIp(addr: IpAddr): string {
  return addr.family === 4 ? formatIp4(addr.bytes) : formatIp6(addr.bytes);
}

/** True if the two byte strings hold the same address (same length, same bytes). */
export function ipEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** 0.0.0.0 */
export function isIp4Unspecified(bytes: Uint8Array, off = 0): boolean {
  return (bytes[off] | bytes[off + 1] | bytes[off + 2] | bytes[off + 3]) === 0;
}

/** 127.0.0.0/8 */
export function isIp4Loopback(bytes: Uint8Array, off = 0): boolean {
  return bytes[off] === 127;
}

/** 224.0.0.0/4 */
export function isIp4Multicast(bytes: Uint8Array, off = 0): boolean {
  return (bytes[off] & 0xf0) === 0xe0;
}

/** 255.255.255.255, the limited broadcast address. */
export function isIp4Broadcast(bytes: Uint8Array, off = 0): boolean {
  return (bytes[off] & bytes[off + 1] & bytes[off + 2] & bytes[off + 3]) === 0xff;
}

/** :: */
export function isIp6Unspecified(bytes: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 16; i++) if (bytes[off + i] !== 0) return false;
  return true;
}

/** ::1 */
export function isIp6Loopback(bytes: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 15; i++) if (bytes[off + i] !== 0) return false;
  return bytes[off + 15] === 1;
}

/** ff00::/8 */
export function isIp6Multicast(bytes: Uint8Array, off = 0): boolean {
  return bytes[off] === 0xff;
}

/** ::ffff:0:0/96, an IPv4 address written as IPv6. */
export function isIp6V4Mapped(bytes: Uint8Array, off = 0): boolean {
  for (let i = 0; i < 10; i++) if (bytes[off + i] !== 0) return false;
  return bytes[off + 10] === 0xff && bytes[off + 11] === 0xff;
}

/** Classifies an address for "must be unicast" checks on user input. */
export function ipKind(addr: IpAddr): IpKind {
  const b = addr.bytes;
  if (addr.family === 4) {
    if (isIp4Unspecified(b)) return "unspecified";
    if (isIp4Loopback(b)) return "loopback";
    if (isIp4Multicast(b)) return "multicast";
    if (isIp4Broadcast(b)) return "broadcast";
    return "unicast";
  }
  if (isIp6Unspecified(b)) return "unspecified";
  if (isIp6Loopback(b)) return "loopback";
  if (isIp6Multicast(b)) return "multicast";
  return "unicast";
}

/**
 * The prefix length of a contiguous IPv4 netmask (`255.255.255.0` → 24), or -1
 * if the mask has a one bit after a zero bit (`255.0.255.0`).
 */
export function ip4MaskPrefix(mask: Uint8Array, off = 0): number {
  const m = ((mask[off] << 24) | (mask[off + 1] << 16) | (mask[off + 2] << 8) | mask[off + 3]) >>>
    0;
  // A contiguous mask is all ones then all zeros, so its inverse plus one is a
  // power of two (or 2^32 for /0, which wraps to 0 in 32 bits).
  const inverse = ~m >>> 0;
  if (((inverse + 1) & inverse) >>> 0 !== 0) return -1;
  return Math.clz32(inverse);
}

/** Why `name` cannot be a Linux interface name, or null if it can be. */
export function ifnameProblem(name: string): string | null {
  const len = new TextEncoder().encode(name).length;
  if (len === 0) return "interface name is empty";
  // IFNAMSIZ is 16 including the terminating NUL.
  if (len > 15) return `interface name '${name}' is longer than 15 bytes`;
  if (name === "." || name === "..") return `'${name}' is not a valid interface name`;
  // The kernel's dev_valid_name() refuses these; ':' would read as an alias.
  if (/[/:\s]/.test(name)) {
    return `interface name '${name}' contains '/', ':' or whitespace`;
  }
  return null;
}
