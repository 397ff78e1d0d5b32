/**
 * Shared ground of the wire-format layer: the one error type, big-endian byte
 * access, byte-run helpers and the IP protocol numbers.
 *
 * ## The pattern every protocol module follows
 *
 * Each `lib/packet/<proto>.ts` has the same parts, in this order, so a reader
 * who knows one knows them all:
 *
 * 1. **Layout.** A private `as const` table of field offsets under a comment
 *    that names the RFC diagram it comes from; the fixed header length is
 *    exported as `<PROTO>_HEADER_LEN` and derived from the table.
 * 2. **Numbers.** Enum-like `as const` objects (types, flags, codes) with a
 *    type alias. Unknown numbers are kept as plain numbers, never rejected by
 *    the view.
 * 3. **View.** A class (`EthFrame`, `Ip4Packet`, `TcpPacket`, ...) holding
 *    `buf`, `off` (first byte of this header) and `len` (bytes of this packet).
 *    It allocates nothing after construction: `wrap(buf, off, len)` re-points
 *    it and returns 0 or a {@linkcode WireError}. A successful `wrap` proves
 *    that every accessor stays inside `[off, off + len)` and that the cheap
 *    structural rules hold (versions, header-length fields, length fields that
 *    must fit); `len` may shrink to what the packet's own length field says
 *    (so Ethernet padding falls away). `static checked(buf)` is the allocating
 *    convenience for tests and slow paths. Fields are getters/setters; payload
 *    is `payloadOffset`/`payloadLen` (numbers, no allocation) plus `payload()`
 *    (a subarray). Costlier meaning checks (checksums, fragments, option
 *    walks) are separate methods or functions the caller runs when it needs.
 * 4. **Repr.** A plain mutable interface `<Proto>Repr` with the fields a
 *    builder needs, a factory `<proto>ReprNew()`, and `<proto>Parse(view,
 *    out?)` that fills it (slow paths and tests). Parse checks every meaning
 *    the packet's own bytes can prove (IPv4 header checksum, fragments, port
 *    0, option syntax); checks that need the outer layer (pseudo-header
 *    checksums, NDP's hop limit) are view methods the caller runs first, e.g.
 *    `tcp.checksumOk4(ip.src, ip.dst)`. Reprs are meant to be kept and reused.
 * 5. **Builder.** `<proto>Emit(buf, off, repr, ...)` writes every header byte
 *    (no stale bytes survive) and returns the number of bytes written; it
 *    throws (a programming error) if they do not fit. The payload is the
 *    caller's: it is expected in place right after the header when a checksum
 *    covering it is computed. Builders of headers whose checksum covers a
 *    pseudo-header (TCP, UDP, ICMPv6) take an optional pseudo-header sum
 *    (`checksumPseudo4`/`checksumPseudo6`): given, they fill the checksum;
 *    omitted, they leave 0 for the caller (or offload) to fill. IPv4 and ICMPv4
 *    have no pseudo-header and always fill theirs.
 * 6. **Options.** Variable option lists (TCP, NDP; DHCP next) are walked into
 *    a caller-owned reusable class with a `reset()` (`TcpOptions`,
 *    `NdpOptions`) that records values or offsets, never copies; a malformed
 *    option is {@linkcode WireError.BadOption}. Option writers are functions
 *    `<proto>Opt<Name>Emit(buf, off, ...)` returning bytes written.
 *
 * Parsers never throw on packet bytes: bad input is an ordinary outcome, a
 * {@linkcode WireError} number the caller counts (see
 * {@linkcode WIRE_ERROR_NAMES}) and drops. Exceptions are reserved for
 * programming errors (e.g. a builder handed a buffer too small).
 *
 * @module
 */

/**
 * Why a packet was refused. One type for the whole wire layer so drop counters
 * can be an array indexed by it. 0 is never an error: `wrap` returns 0 for OK.
 *
 * - `Truncated`: fewer bytes available than the fixed header, or than a
 *   length field of the header, says must be there.
 * - `BadVersion`: IP version field does not match the parser.
 * - `BadHeaderLen`: a header-length field below its minimum (IPv4 IHL < 5,
 *   TCP data offset < 5).
 * - `BadLength`: a length field contradicting another (IPv4 total length below
 *   the header length, UDP length below 8).
 * - `BadChecksum`: a checksum that does not verify.
 * - `Fragmented`: an IP fragment (tapir does not reassemble).
 * - `BadOption`: a malformed option (zero/short/overlong length, wrong size
 *   for its kind).
 * - `Unsupported`: well-formed but not something tapir handles (e.g. ARP for
 *   a non-Ethernet/IPv4 pair).
 * - `VlanTagged`: an 802.1Q or 802.1ad tagged Ethernet frame.
 * - `Malformed`: any other structural violation (e.g. extension header chain
 *   too long, hop-by-hop header not first).
 */
export const WireError = {
  Truncated: 1,
  BadVersion: 2,
  BadHeaderLen: 3,
  BadLength: 4,
  BadChecksum: 5,
  Fragmented: 6,
  BadOption: 7,
  Unsupported: 8,
  VlanTagged: 9,
  Malformed: 10,
} as const;
/** One of the {@linkcode WireError} numbers. */
export type WireError = (typeof WireError)[keyof typeof WireError];

/** Printable names of {@linkcode WireError} values, for drop counters and logs. */
export const WIRE_ERROR_NAMES: Record<WireError, string> = {
  1: "truncated",
  2: "bad version",
  3: "bad header length",
  4: "bad length",
  5: "bad checksum",
  6: "fragmented",
  7: "bad option",
  8: "unsupported",
  9: "VLAN tagged",
  10: "malformed",
};

/** Size of an array indexed by {@linkcode WireError} (index 0 unused). */
export const WIRE_ERROR_COUNT = 11;

/**
 * Tells a {@linkcode WireError} from a successful result. Views and reprs are
 * objects, errors are numbers, so `checked()` and `xxxParse()` results are
 * told apart by this.
 */
export function isWireError(x: unknown): x is WireError {
  return typeof x === "number";
}

/**
 * IP protocol numbers (IPv4 `protocol`, IPv6 `next header`), IANA registry.
 * The IPv6 extension headers tapir walks over are included.
 */
export const IpProto = {
  HopByHop: 0,
  Icmp: 1,
  Tcp: 6,
  Udp: 17,
  Routing: 43,
  Fragment: 44,
  Esp: 50,
  Ah: 51,
  Icmp6: 58,
  NoNext: 59,
  DstOpts: 60,
} as const;
/** One of the {@linkcode IpProto} numbers (other values are kept as numbers). */
export type IpProto = (typeof IpProto)[keyof typeof IpProto];

/** Empty buffer that fresh views point at until their first `wrap`. */
export const EMPTY_BYTES: Uint8Array = new Uint8Array(0);

/** Reads a big-endian u16 at `off`. The caller has checked bounds. */
export function get16(buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1];
}

/** Writes the low 16 bits of `v` big-endian at `off`. */
export function set16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 8;
  buf[off + 1] = v;
}

/** Reads a big-endian u32 at `off` (as an unsigned number). */
export function get32(buf: Uint8Array, off: number): number {
  return get32Signed(buf, off) >>> 0;
}

/**
 * Reads a big-endian 32-bit value as a signed integer: the bits of
 * {@linkcode get32}, but a small integer to V8. Its small integers are 32
 * bits wide in Deno's build (measured: a one-field object takes 32 bytes, so
 * no pointer compression), and an unsigned value from 2^31 up is a heap
 * number instead: an allocation whenever it leaves an inlined function.
 */
export function get32Signed(buf: Uint8Array, off: number): number {
  return (buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3];
}

/** Writes the low 32 bits of `v` big-endian at `off`. */
export function set32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = v >>> 16;
  buf[off + 2] = v >>> 8;
  buf[off + 3] = v;
}

/** Copies `n` bytes from `src[srcOff..]` to `dst[dstOff..]` without allocating. */
export function bytesCopy(
  dst: Uint8Array,
  dstOff: number,
  src: Uint8Array,
  srcOff: number,
  n: number,
): void {
  // A byte loop beats `set(subarray())` for the short runs (addresses) this is
  // used for, and allocates nothing.
  for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i];
}

/** True if the `n` bytes at `a[aOff..]` equal those at `b[bOff..]`. */
export function bytesEqual(
  a: Uint8Array,
  aOff: number,
  b: Uint8Array,
  bOff: number,
  n: number,
): boolean {
  for (let i = 0; i < n; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** Writes `n` zero bytes at `buf[off..]`. */
export function bytesZero(buf: Uint8Array, off: number, n: number): void {
  buf.fill(0, off, off + n);
}

/**
 * Throws if `buf` has fewer than `n` bytes from `off`. Builders call this:
 * a too-small output buffer is a programming error, not bad input.
 */
export function emitSpace(buf: Uint8Array, off: number, n: number, what: string): void {
  if (off < 0 || off + n > buf.length) {
    throw new RangeError(`${what}: ${n} bytes do not fit at offset ${off} of ${buf.length}`);
  }
}
