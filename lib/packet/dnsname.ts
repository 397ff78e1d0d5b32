/**
 * Domain names in DNS wire form (RFC 1035 §3.1), as DHCP carries them: the
 * domain search list of DHCPv4 option 119 (RFC 3397) and the domain list of
 * DHCPv6 option 24 (RFC 8415 §10, RFC 3646). One encoder and one decoder serve
 * both.
 *
 * ## Theory of operation
 *
 * A name is a sequence of labels, each written as a length byte (1..63) and
 * that many bytes, ended by a zero byte (the root label). `example.com` is
 * `07 'example' 03 'com' 00`; the root name itself is the single byte `00`.
 * The whole wire form is at most 255 bytes. A list is names back to back.
 *
 * - **Encoding** never compresses: DHCPv6 forbids compression, and for
 *   DHCPv4 it is optional and saves little for the short lists tapir sends.
 *   Text names are what the user configured: labels separated by `.`, one
 *   trailing `.` allowed, the empty string or `.` meaning the root. Labels may
 *   hold printable ASCII except `.` and `\` (no escapes, no IDN: a name must
 *   already be in its ASCII form). {@linkcode dnsNameWireLen} tells whether a
 *   name is acceptable (configuration checks use it); the emitters throw on a
 *   name it refuses, as on any other programming error.
 * - **Decoding** turns a list back into text names, the exact inverse of the
 *   encoder, and optionally follows RFC 1035 §4.1.4 compression pointers,
 *   which RFC 3397 allows in option 119; their offsets count from the first
 *   byte of the list. A pointer must point strictly backwards, and a decoded
 *   name may not exceed 255 bytes in uncompressed form: between two pointer
 *   hops the walk either consumes a label (bounded by the 255 bytes) or moves
 *   to a lower offset, so every walk ends, whatever the bytes.
 *   Anything malformed — a label past the end, a missing terminator, a
 *   reserved label type (0x40, 0x80), a pointer where none is allowed, a byte
 *   the encoder would refuse — is {@linkcode WireError.BadOption}, because
 *   these names always sit inside an option.
 *
 * @module
 */

import { emitSpace, WireError } from "./wire.ts";

/** Longest name in wire form, length bytes and the final zero included (RFC 1035 §3.1). */
export const DNS_NAME_MAX_LEN = 255;
/** Longest label (RFC 1035 §2.3.4). */
export const DNS_LABEL_MAX_LEN = 63;

const DOT = 0x2e;
const BACKSLASH = 0x5c;
/** The two top bits of a length byte that mark a compression pointer. */
const POINTER_BITS = 0xc0;

/** True for the bytes a label may hold: printable ASCII except `.` and `\`. */
function labelByteOk(c: number): boolean {
  return c >= 0x21 && c <= 0x7e && c !== DOT && c !== BACKSLASH;
}

/** Length of `name` without its one optional trailing dot. */
function textLen(name: string): number {
  const n = name.length;
  return n > 0 && name.charCodeAt(n - 1) === DOT ? n - 1 : n;
}

/**
 * Bytes the wire form of `name` takes, or -1 if `name` is not an acceptable
 * name (empty label, label over 63 bytes, a byte outside printable ASCII or a
 * `\`, wire form over 255 bytes). `""` and `"."` are the root, 1 byte.
 */
export function dnsNameWireLen(name: string): number {
  const n = textLen(name);
  if (n === 0) return 1;
  let total = 1;
  let label = 0;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c === DOT) {
      if (label === 0) return -1;
      total += 1 + label;
      label = 0;
    } else if (!labelByteOk(c) || ++label > DNS_LABEL_MAX_LEN) {
      return -1;
    }
  }
  if (label === 0) return -1;
  total += 1 + label;
  return total > DNS_NAME_MAX_LEN ? -1 : total;
}

/**
 * Writes the wire form of `name` at `buf[off..]` and returns its length.
 *
 * @throws RangeError if {@linkcode dnsNameWireLen} refuses the name or it does not fit
 */
export function dnsNameEmit(buf: Uint8Array, off: number, name: string): number {
  const len = dnsNameWireLen(name);
  if (len < 0) {
    throw new RangeError(`dnsNameEmit: not a valid domain name: ${JSON.stringify(name)}`);
  }
  emitSpace(buf, off, len, "dnsNameEmit");
  const n = textLen(name);
  let lenAt = off; // where the current label's length byte goes
  let p = off + 1;
  for (let i = 0; i < n; i++) {
    const c = name.charCodeAt(i);
    if (c === DOT) {
      buf[lenAt] = p - lenAt - 1;
      lenAt = p++;
    } else {
      buf[p++] = c;
    }
  }
  if (n > 0) {
    buf[lenAt] = p - lenAt - 1;
    lenAt = p++;
  }
  buf[lenAt] = 0;
  return len;
}

/** Bytes the wire form of the list `names` takes, or -1 if any name is refused. */
export function dnsNameListWireLen(names: readonly string[]): number {
  let total = 0;
  for (const name of names) {
    const len = dnsNameWireLen(name);
    if (len < 0) return -1;
    total += len;
  }
  return total;
}

/**
 * Writes the names of `names` back to back at `buf[off..]` (no compression)
 * and returns the bytes written.
 *
 * @throws RangeError if a name is refused or the list does not fit
 */
export function dnsNameListEmit(buf: Uint8Array, off: number, names: readonly string[]): number {
  let p = off;
  for (const name of names) p += dnsNameEmit(buf, p, name);
  return p - off;
}

/** A name read by {@linkcode dnsNameDecodeAt}: its text and where the list continues. */
interface DecodedName {
  name: string;
  next: number;
}

/**
 * Reads one name starting at `buf[pos]` of the list `buf[start..end)`.
 * Pointers (if `compression`) count from `start`.
 */
function dnsNameDecodeAt(
  buf: Uint8Array,
  start: number,
  pos: number,
  end: number,
  compression: boolean,
): DecodedName | WireError {
  let name = "";
  let wire = 1; // the final zero byte
  let next = -1; // where the list goes on: set at the first pointer or the end
  for (;;) {
    if (pos >= end) return WireError.BadOption;
    const l = buf[pos];
    if (l === 0) {
      if (next < 0) next = pos + 1;
      return { name, next };
    }
    if ((l & POINTER_BITS) === POINTER_BITS) {
      if (!compression || pos + 1 >= end) return WireError.BadOption;
      const target = start + (((l & ~POINTER_BITS) << 8) | buf[pos + 1]);
      if (target >= pos) return WireError.BadOption;
      if (next < 0) next = pos + 2;
      pos = target;
      continue;
    }
    if ((l & POINTER_BITS) !== 0) return WireError.BadOption;
    if (pos + 1 + l > end) return WireError.BadOption;
    wire += 1 + l;
    if (wire > DNS_NAME_MAX_LEN) return WireError.BadOption;
    if (name.length > 0) name += ".";
    for (let i = pos + 1; i <= pos + l; i++) {
      const c = buf[i];
      if (!labelByteOk(c)) return WireError.BadOption;
      name += String.fromCharCode(c);
    }
    pos += 1 + l;
  }
}

/**
 * Decodes the list of names in `buf[off..off+len)` into text names (no
 * trailing dot; the root is `""`). With `compression`, RFC 1035 pointers are
 * followed (DHCPv4 option 119); without, they are refused (DHCPv6). Allocates:
 * for slow paths and tests.
 */
export function dnsNameListDecode(
  buf: Uint8Array,
  off: number,
  len: number,
  compression = false,
): string[] | WireError {
  const end = off + len;
  if (off < 0 || len < 0 || end > buf.length) return WireError.Truncated;
  const names: string[] = [];
  let pos = off;
  while (pos < end) {
    const r = dnsNameDecodeAt(buf, off, pos, end, compression);
    if (typeof r === "number") return r;
    names.push(r.name);
    pos = r.next;
  }
  return names;
}
