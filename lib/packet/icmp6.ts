/**
 * ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861, RDNSS from RFC 8106).
 *
 * ## Messages
 *
 * Every ICMPv6 message tapir handles starts with 8 bytes: type, code,
 * checksum and a 4-byte word (echo ident + sequence, packet-too-big MTU,
 * parameter-problem pointer, NDP flags or reserved). `wrap` requires those 8
 * bytes and, for NDP types, the fixed body of the type (RA 16, NS/NA 24,
 * redirect 40), so the accessors of the message's own type stay in bounds.
 * Accessors of another type's fields are meaningless (and may reach past
 * `len`): switch on `type` first.
 *
 * The checksum covers an IPv6 pseudo-header, so it is verified and filled
 * with the addresses (usually read in place from the IPv6 header):
 * {@linkcode Icmp6Packet.checksumOk}, {@linkcode Icmp6Packet.fillChecksum}.
 *
 * ## Neighbor Discovery
 *
 * {@linkcode ndpParse} reads RS/RA/NS/NA bodies into an {@linkcode NdpRepr};
 * {@linkcode ndpOptionsParse} walks the options into a reusable
 * {@linkcode NdpOptions} that records *where* each option is (offsets), so
 * nothing is copied. Per RFC 4861 §6.1/§7.1 a zero option length invalidates
 * the message, as does a non-zero code or a multicast NS/NA target; the IP
 * hop limit of 255 is the caller's check, since it lives in the IPv6 header.
 *
 * Building an NDP message: {@linkcode ndpEmit} writes header and body with a
 * zero checksum and returns their length, option writers append and return
 * their lengths, then the caller writes the IPv6 header with the total and
 * fills the checksum.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { checksumFill, icmp6ChecksumFill, icmp6ChecksumOk } from "./checksum.ts";
import { ETH_ADDR_LEN } from "./eth.ts";
import { isIp6Multicast } from "../addr.ts";
import { IP6_ADDR_LEN } from "./ip6.ts";
import {
  bytesCopy,
  bytesZero,
  emitSpace,
  EMPTY_BYTES,
  get16,
  get32,
  set16,
  set32,
  WireError,
} from "./wire.ts";

// RFC 4443 §2.1, message header, with the 4-byte word every message has:
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |     Type      |     Code      |          Checksum             |  0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// | echo: Identifier + Sequence / MTU / Pointer / NDP flags       |  4
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// | data (echo payload, invoking packet) / NDP body + options     |  8
const F = { type: 0, code: 1, checksum: 2, rest: 4, ident: 4, seq: 6, data: 8 } as const;

// RFC 4861 §4.1-4.4, NDP bodies (offsets from the ICMPv6 header):
// RS:  | reserved (4) @4 | options @8
// RA:  | cur hop limit @4 | M O flags @5 | router lifetime @6 | reachable time @8
//      | retrans timer @12 | options @16
// NS:  | reserved (4) @4 | target address @8 | options @24
// NA:  | R S O flags @4, reserved | target address @8 | options @24
// Redirect (§4.5): | reserved @4 | target @8 | destination @24 | options @40
const N = {
  raCurHopLimit: 4,
  raFlags: 5,
  raRouterLifetime: 6,
  raReachableTime: 8,
  raRetransTimer: 12,
  naFlags: 4,
  target: 8,
  rsOptions: 8,
  raOptions: 16,
  nsOptions: 24,
  naOptions: 24,
  redirectOptions: 40,
} as const;

// RFC 4861 §4.6, option TLV: | type | length (8-byte units) | value...
// Prefix information (§4.6.2), 32 bytes:
// | 3 | 4 | prefix length @2 | L A flags @3 | valid lifetime @4
// | preferred lifetime @8 | reserved @12 | prefix @16
// MTU (§4.6.4), 8 bytes: | 5 | 1 | reserved @2 | MTU @4
// RDNSS (RFC 8106 §5.1): | 25 | 1+2n | reserved @2 | lifetime @4 | addresses @8
const O = {
  type: 0,
  len: 1,
  linkAddr: 2,
  piPrefixLen: 2,
  piFlags: 3,
  piValid: 4,
  piPreferred: 8,
  piReserved: 12,
  piPrefix: 16,
  piEnd: 32,
  mtuReserved: 2,
  mtu: 4,
  mtuEnd: 8,
  rdnssReserved: 2,
  rdnssLifetime: 4,
  rdnssAddrs: 8,
} as const;

/** Length of the ICMPv6 header including its 4-byte type-specific word. */
export const ICMP6_HEADER_LEN: number = F.data;

/** ICMPv6 message types tapir deals with (IANA registry). */
export const Icmp6Type = {
  DestUnreachable: 1,
  PacketTooBig: 2,
  TimeExceeded: 3,
  ParamProblem: 4,
  EchoRequest: 128,
  EchoReply: 129,
  RouterSolicit: 133,
  RouterAdvert: 134,
  NeighborSolicit: 135,
  NeighborAdvert: 136,
  Redirect: 137,
} as const;
/** One of the {@linkcode Icmp6Type} values. */
export type Icmp6Type = (typeof Icmp6Type)[keyof typeof Icmp6Type];

/** Codes of {@linkcode Icmp6Type.DestUnreachable} (RFC 4443 §3.1). */
export const Icmp6UnreachCode = {
  NoRoute: 0,
  AdminProhibited: 1,
  BeyondScope: 2,
  Address: 3,
  Port: 4,
} as const;
/** One of the {@linkcode Icmp6UnreachCode} values. */
export type Icmp6UnreachCode = (typeof Icmp6UnreachCode)[keyof typeof Icmp6UnreachCode];

/** NDP option types (RFC 4861 §4.6, RFC 8106). */
export const NdpOpt = {
  SrcLinkAddr: 1,
  TgtLinkAddr: 2,
  PrefixInfo: 3,
  RedirectedHeader: 4,
  Mtu: 5,
  Rdnss: 25,
} as const;
/** One of the {@linkcode NdpOpt} values. */
export type NdpOpt = (typeof NdpOpt)[keyof typeof NdpOpt];

/** Router advertisement flag: addresses via DHCPv6 ("managed"). */
export const NDP_RA_MANAGED = 0x80;
/** Router advertisement flag: other configuration via DHCPv6. */
export const NDP_RA_OTHER = 0x40;
/** Neighbor advertisement flag: sender is a router. */
export const NDP_NA_ROUTER = 0x80;
/** Neighbor advertisement flag: sent in response to a solicitation. */
export const NDP_NA_SOLICITED = 0x40;
/** Neighbor advertisement flag: override an existing cache entry. */
export const NDP_NA_OVERRIDE = 0x20;
/** Prefix information flag: on-link. */
export const NDP_PREFIX_ON_LINK = 0x80;
/** Prefix information flag: usable for stateless autoconfiguration. */
export const NDP_PREFIX_AUTONOMOUS = 0x40;
/** Most prefix information options {@linkcode NdpOptions} records. */
export const NDP_MAX_PREFIXES = 4;

// Bytes of a message of `type` before its options, or the plain header for
// non-NDP types; `wrap` requires this many.
function minLen(type: number): number {
  switch (type) {
    case Icmp6Type.RouterAdvert:
      return N.raOptions;
    case Icmp6Type.NeighborSolicit:
      return N.nsOptions;
    case Icmp6Type.NeighborAdvert:
      return N.naOptions;
    case Icmp6Type.Redirect:
      return N.redirectOptions;
    default:
      return ICMP6_HEADER_LEN;
  }
}

/** Offset of the options of an NDP message of `type` from its start, or -1 if not NDP. */
export function ndpOptionsStart(type: number): number {
  switch (type) {
    case Icmp6Type.RouterSolicit:
      return N.rsOptions;
    case Icmp6Type.RouterAdvert:
      return N.raOptions;
    case Icmp6Type.NeighborSolicit:
      return N.nsOptions;
    case Icmp6Type.NeighborAdvert:
      return N.naOptions;
    case Icmp6Type.Redirect:
      return N.redirectOptions;
    default:
      return -1;
  }
}

/** Reusable view of an ICMPv6 message; see `wire.ts` and the module notes for the contract. */
export class Icmp6Packet {
  /** Buffer holding the message. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the message (the upper-layer length from IPv6). */
  len = 0;

  /**
   * Points the view at the `len`-byte ICMPv6 message at `buf[off..]`. Refuses
   * messages shorter than 8 bytes or than the fixed body of their NDP type.
   * On error the view is unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < ICMP6_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    if (len < minLen(buf[off + F.type])) return WireError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(
    buf: Uint8Array,
    off = 0,
    len: number = buf.length - off,
  ): Icmp6Packet | WireError {
    const p = new Icmp6Packet();
    const err = p.wrap(buf, off, len);
    return err === 0 ? p : err;
  }

  /** Message type ({@linkcode Icmp6Type}). */
  get type(): number {
    return this.buf[this.off + F.type];
  }
  set type(v: number) {
    this.buf[this.off + F.type] = v;
  }
  /** Message code. */
  get code(): number {
    return this.buf[this.off + F.code];
  }
  set code(v: number) {
    this.buf[this.off + F.code] = v;
  }
  /** Checksum field. */
  get checksum(): number {
    return get16(this.buf, this.off + F.checksum);
  }
  set checksum(v: number) {
    set16(this.buf, this.off + F.checksum, v);
  }
  /** The raw 4-byte word after the checksum. */
  get rest(): number {
    return get32(this.buf, this.off + F.rest);
  }
  set rest(v: number) {
    set32(this.buf, this.off + F.rest, v);
  }
  /** Echo identifier (echo request/reply). */
  get ident(): number {
    return get16(this.buf, this.off + F.ident);
  }
  set ident(v: number) {
    set16(this.buf, this.off + F.ident, v);
  }
  /** Echo sequence number (echo request/reply). */
  get seq(): number {
    return get16(this.buf, this.off + F.seq);
  }
  set seq(v: number) {
    set16(this.buf, this.off + F.seq, v);
  }
  /** MTU (packet too big); the same word is the pointer of a parameter problem. */
  get mtu(): number {
    return this.rest;
  }
  /** Offset of the data after the 8-byte header in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + F.data;
  }
  /** Bytes of data after the 8-byte header. */
  get payloadLen(): number {
    return this.len - F.data;
  }
  /** The data as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.off + F.data, this.off + this.len);
  }

  /** RA: current hop limit. */
  get raCurHopLimit(): number {
    return this.buf[this.off + N.raCurHopLimit];
  }
  /** RA: flags byte ({@linkcode NDP_RA_MANAGED}, {@linkcode NDP_RA_OTHER}). */
  get raFlags(): number {
    return this.buf[this.off + N.raFlags];
  }
  /** RA: router lifetime in seconds. */
  get raRouterLifetime(): number {
    return get16(this.buf, this.off + N.raRouterLifetime);
  }
  /** RA: reachable time in milliseconds. */
  get raReachableTime(): number {
    return get32(this.buf, this.off + N.raReachableTime);
  }
  /** RA: retransmission timer in milliseconds. */
  get raRetransTimer(): number {
    return get32(this.buf, this.off + N.raRetransTimer);
  }
  /** NA: flags byte ({@linkcode NDP_NA_ROUTER}, ...). */
  get naFlags(): number {
    return this.buf[this.off + N.naFlags];
  }
  /** NS/NA/redirect: offset of the target address in {@linkcode buf}. */
  get targetOffset(): number {
    return this.off + N.target;
  }
  /** NDP: offset of the options in {@linkcode buf} (for other types: the end). */
  get optionsOffset(): number {
    const start = ndpOptionsStart(this.type);
    return start < 0 ? this.off + this.len : this.off + start;
  }
  /** NDP: bytes of options. */
  get optionsLen(): number {
    return this.off + this.len - this.optionsOffset;
  }

  /** True if the checksum verifies with the addresses at `addrs[srcOff..]`, `addrs[dstOff..]`. */
  checksumOk(addrs: Uint8Array, srcOff: number, dstOff: number): boolean {
    return icmp6ChecksumOk(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
  /** Recomputes and stores the checksum with the given addresses. */
  fillChecksum(addrs: Uint8Array, srcOff: number, dstOff: number): void {
    icmp6ChecksumFill(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
}

/** Fields of an ICMPv6 echo or error message header. */
export interface Icmp6Repr {
  /** Message type ({@linkcode Icmp6Type}). */
  type: number;
  /** Message code. */
  code: number;
  /** The word after the checksum: `ident << 16 | seq`, an MTU or a pointer. */
  rest: number;
  /** Bytes of data after the 8-byte header (in place in the buffer). */
  payloadLen: number;
}

/** A zeroed {@linkcode Icmp6Repr}. */
export function icmp6ReprNew(): Icmp6Repr {
  return { type: 0, code: 0, rest: 0, payloadLen: 0 };
}

/**
 * Reads a wrapped message's header into `out`. The checksum needs the IPv6
 * addresses: verify it first with {@linkcode Icmp6Packet.checksumOk}.
 */
export function icmp6Parse(
  pkt: Icmp6Packet,
  out: Icmp6Repr = icmp6ReprNew(),
): Icmp6Repr | WireError {
  out.type = pkt.type;
  out.code = pkt.code;
  out.rest = pkt.rest;
  out.payloadLen = pkt.payloadLen;
  return out;
}

/**
 * Writes the 8-byte ICMPv6 header for `r` at `buf[off..]` and returns 8. With
 * `pseudoSum` (from `checksumPseudo6` for length 8 + `r.payloadLen`) the
 * checksum is filled over the header and the data that must already follow
 * it; without, it is left 0.
 */
export function icmp6Emit(buf: Uint8Array, off: number, r: Icmp6Repr, pseudoSum?: number): number {
  emitSpace(buf, off, ICMP6_HEADER_LEN + r.payloadLen, "icmp6Emit");
  buf[off + F.type] = r.type;
  buf[off + F.code] = r.code;
  set16(buf, off + F.checksum, 0);
  set32(buf, off + F.rest, r.rest);
  if (pseudoSum !== undefined) {
    checksumFill(buf, off, ICMP6_HEADER_LEN + r.payloadLen, off + F.checksum, pseudoSum);
  }
  return ICMP6_HEADER_LEN;
}

/** Fields of an NDP router/neighbor solicitation or advertisement (without options). */
export interface NdpRepr {
  /** RouterSolicit, RouterAdvert, NeighborSolicit or NeighborAdvert. */
  type: number;
  /** RA: current hop limit (0: unspecified). */
  curHopLimit: number;
  /** RA: flags byte ({@linkcode NDP_RA_MANAGED} | {@linkcode NDP_RA_OTHER}); NA: flags byte. */
  flags: number;
  /** RA: router lifetime in seconds (0: not a default router). */
  routerLifetime: number;
  /** RA: reachable time in milliseconds (0: unspecified). */
  reachableTime: number;
  /** RA: retransmission timer in milliseconds (0: unspecified). */
  retransTimer: number;
  /** NS/NA: target address (16 bytes, owned by the repr). */
  target: Uint8Array;
}

/** A zeroed {@linkcode NdpRepr} with its own target array. */
export function ndpReprNew(): NdpRepr {
  return {
    type: 0,
    curHopLimit: 0,
    flags: 0,
    routerLifetime: 0,
    reachableTime: 0,
    retransTimer: 0,
    target: new Uint8Array(IP6_ADDR_LEN),
  };
}

/**
 * Reads the body of a wrapped RS/RA/NS/NA into `out` (fields the type lacks
 * are zeroed). Refuses other types ({@linkcode WireError.Unsupported}), a
 * non-zero code or a multicast NS/NA target ({@linkcode WireError.Malformed}).
 * Options are read separately with {@linkcode ndpOptionsParse}; the checksum
 * and the IP hop limit of 255 are the caller's checks.
 */
export function ndpParse(pkt: Icmp6Packet, out: NdpRepr = ndpReprNew()): NdpRepr | WireError {
  const type = pkt.type;
  if (
    type !== Icmp6Type.RouterSolicit && type !== Icmp6Type.RouterAdvert &&
    type !== Icmp6Type.NeighborSolicit && type !== Icmp6Type.NeighborAdvert
  ) return WireError.Unsupported;
  if (pkt.code !== 0) return WireError.Malformed;
  out.type = type;
  out.curHopLimit = 0;
  out.flags = 0;
  out.routerLifetime = 0;
  out.reachableTime = 0;
  out.retransTimer = 0;
  if (type === Icmp6Type.RouterAdvert) {
    out.curHopLimit = pkt.raCurHopLimit;
    out.flags = pkt.raFlags;
    out.routerLifetime = pkt.raRouterLifetime;
    out.reachableTime = pkt.raReachableTime;
    out.retransTimer = pkt.raRetransTimer;
  }
  if (type === Icmp6Type.NeighborSolicit || type === Icmp6Type.NeighborAdvert) {
    if (isIp6Multicast(pkt.buf, pkt.targetOffset)) return WireError.Malformed;
    if (type === Icmp6Type.NeighborAdvert) out.flags = pkt.naFlags;
    bytesCopy(out.target, 0, pkt.buf, pkt.targetOffset, IP6_ADDR_LEN);
  } else {
    bytesZero(out.target, 0, IP6_ADDR_LEN);
  }
  return out;
}

/**
 * Writes the header and body of the RS/RA/NS/NA `r` at `buf[off..]` with a
 * zero checksum, and returns their length (8, 16 or 24): options go there.
 * Throws on other types (a programming error).
 */
export function ndpEmit(buf: Uint8Array, off: number, r: NdpRepr): number {
  const len = ndpOptionsStart(r.type);
  if (len < 0 || r.type === Icmp6Type.Redirect) {
    throw new RangeError(`ndpEmit: type ${r.type} is not RS, RA, NS or NA`);
  }
  emitSpace(buf, off, len, "ndpEmit");
  buf[off + F.type] = r.type;
  buf[off + F.code] = 0;
  set16(buf, off + F.checksum, 0);
  switch (r.type) {
    case Icmp6Type.RouterSolicit:
      set32(buf, off + F.rest, 0);
      break;
    case Icmp6Type.RouterAdvert:
      buf[off + N.raCurHopLimit] = r.curHopLimit;
      buf[off + N.raFlags] = r.flags;
      set16(buf, off + N.raRouterLifetime, r.routerLifetime);
      set32(buf, off + N.raReachableTime, r.reachableTime);
      set32(buf, off + N.raRetransTimer, r.retransTimer);
      break;
    default: // NS, NA
      set32(buf, off + N.naFlags, r.type === Icmp6Type.NeighborAdvert ? (r.flags << 24) >>> 0 : 0);
      bytesCopy(buf, off + N.target, r.target, 0, IP6_ADDR_LEN);
  }
  return len;
}

/**
 * Where the options of one NDP message are, filled by
 * {@linkcode ndpOptionsParse}. Offsets point into the message's buffer; -1 (or
 * a count of 0) means absent. Reuse one instance: parsing resets it.
 */
export class NdpOptions {
  /** Offset of the source link-layer address (6-byte MAC) or -1. */
  srcLinkAddrOffset = -1;
  /** Offset of the target link-layer address (6-byte MAC) or -1. */
  tgtLinkAddrOffset = -1;
  /** MTU from the MTU option, or -1. */
  mtu = -1;
  /** Prefix information options recorded (at most {@linkcode NDP_MAX_PREFIXES}). */
  prefixCount = 0;
  /** Offsets of the recorded prefix information options (read with {@linkcode ndpPrefixInfoRead}). */
  readonly prefixOffsets: Int32Array = new Int32Array(NDP_MAX_PREFIXES);
  /** Prefix information options beyond {@linkcode NDP_MAX_PREFIXES}, not recorded. */
  prefixesDropped = 0;
  /** Offset of the first address of the first RDNSS option, or -1. */
  rdnssOffset = -1;
  /** Addresses in that RDNSS option. */
  rdnssCount = 0;
  /** Lifetime of that RDNSS option in seconds. */
  rdnssLifetime = 0;

  /** Forgets everything recorded. */
  reset(): void {
    this.srcLinkAddrOffset = -1;
    this.tgtLinkAddrOffset = -1;
    this.mtu = -1;
    this.prefixCount = 0;
    this.prefixesDropped = 0;
    this.rdnssOffset = -1;
    this.rdnssCount = 0;
    this.rdnssLifetime = 0;
  }
}

/**
 * Walks the options of the wrapped NDP message `pkt` into `out` (reset
 * first). Returns 0, {@linkcode WireError.Unsupported} if `pkt` is not an NDP
 * type, or {@linkcode WireError.BadOption} for an option of length 0, one
 * running past the message, or a known option of the wrong size (prefix
 * information not 4 units, MTU not 1, RDNSS not an odd number ≥ 3). Unknown
 * options are skipped; of repeated link-layer, MTU or RDNSS options the first
 * counts.
 */
export function ndpOptionsParse(pkt: Icmp6Packet, out: NdpOptions): WireError | 0 {
  out.reset();
  const start = ndpOptionsStart(pkt.type);
  if (start < 0) return WireError.Unsupported;
  const buf = pkt.buf;
  const end = pkt.off + pkt.len;
  let pos = pkt.off + start;
  while (pos < end) {
    if (pos + 2 > end) return WireError.BadOption;
    const units = buf[pos + O.len];
    const optLen = units * 8;
    if (units === 0 || pos + optLen > end) return WireError.BadOption;
    switch (buf[pos + O.type]) {
      case NdpOpt.SrcLinkAddr:
        if (out.srcLinkAddrOffset < 0) out.srcLinkAddrOffset = pos + O.linkAddr;
        break;
      case NdpOpt.TgtLinkAddr:
        if (out.tgtLinkAddrOffset < 0) out.tgtLinkAddrOffset = pos + O.linkAddr;
        break;
      case NdpOpt.PrefixInfo:
        if (optLen !== O.piEnd) return WireError.BadOption;
        if (out.prefixCount < NDP_MAX_PREFIXES) out.prefixOffsets[out.prefixCount++] = pos;
        else out.prefixesDropped++;
        break;
      case NdpOpt.Mtu:
        if (optLen !== O.mtuEnd) return WireError.BadOption;
        if (out.mtu < 0) out.mtu = get32(buf, pos + O.mtu);
        break;
      case NdpOpt.Rdnss:
        if (units < 3 || (units & 1) === 0) return WireError.BadOption;
        if (out.rdnssOffset < 0) {
          out.rdnssOffset = pos + O.rdnssAddrs;
          out.rdnssCount = (units - 1) >>> 1;
          out.rdnssLifetime = get32(buf, pos + O.rdnssLifetime);
        }
        break;
    }
    pos += optLen;
  }
  return 0;
}

/** Contents of a prefix information option. */
export interface NdpPrefixInfo {
  /** Prefix length in bits. */
  prefixLen: number;
  /** Flags byte ({@linkcode NDP_PREFIX_ON_LINK} | {@linkcode NDP_PREFIX_AUTONOMOUS}). */
  flags: number;
  /** Valid lifetime in seconds (0xffffffff: infinite). */
  validLifetime: number;
  /** Preferred lifetime in seconds. */
  preferredLifetime: number;
  /** The prefix (16 bytes, owned by the object). */
  prefix: Uint8Array;
}

/** A zeroed {@linkcode NdpPrefixInfo} with its own prefix array. */
export function ndpPrefixInfoNew(): NdpPrefixInfo {
  return {
    prefixLen: 0,
    flags: 0,
    validLifetime: 0,
    preferredLifetime: 0,
    prefix: new Uint8Array(IP6_ADDR_LEN),
  };
}

/**
 * Reads the prefix information option at `buf[optOff..]` (an offset recorded
 * by {@linkcode ndpOptionsParse}, so known to be 32 bytes) into `out`.
 */
export function ndpPrefixInfoRead(
  buf: Uint8Array,
  optOff: number,
  out: NdpPrefixInfo = ndpPrefixInfoNew(),
): NdpPrefixInfo {
  out.prefixLen = buf[optOff + O.piPrefixLen];
  out.flags = buf[optOff + O.piFlags];
  out.validLifetime = get32(buf, optOff + O.piValid);
  out.preferredLifetime = get32(buf, optOff + O.piPreferred);
  bytesCopy(out.prefix, 0, buf, optOff + O.piPrefix, IP6_ADDR_LEN);
  return out;
}

/**
 * Writes a source (`type` {@linkcode NdpOpt.SrcLinkAddr}) or target
 * ({@linkcode NdpOpt.TgtLinkAddr}) link-layer address option carrying the
 * 6-byte `mac`; returns 8.
 */
export function ndpOptLinkAddrEmit(
  buf: Uint8Array,
  off: number,
  type: number,
  mac: Uint8Array,
): number {
  emitSpace(buf, off, 8, "ndpOptLinkAddrEmit");
  buf[off + O.type] = type;
  buf[off + O.len] = 1;
  bytesCopy(buf, off + O.linkAddr, mac, 0, ETH_ADDR_LEN);
  return 8;
}

/** Writes a prefix information option for `p`; returns 32. */
export function ndpOptPrefixInfoEmit(buf: Uint8Array, off: number, p: NdpPrefixInfo): number {
  emitSpace(buf, off, O.piEnd, "ndpOptPrefixInfoEmit");
  buf[off + O.type] = NdpOpt.PrefixInfo;
  buf[off + O.len] = O.piEnd / 8;
  buf[off + O.piPrefixLen] = p.prefixLen;
  buf[off + O.piFlags] = p.flags;
  set32(buf, off + O.piValid, p.validLifetime);
  set32(buf, off + O.piPreferred, p.preferredLifetime);
  set32(buf, off + O.piReserved, 0);
  bytesCopy(buf, off + O.piPrefix, p.prefix, 0, IP6_ADDR_LEN);
  return O.piEnd;
}

/** Writes an MTU option; returns 8. */
export function ndpOptMtuEmit(buf: Uint8Array, off: number, mtu: number): number {
  emitSpace(buf, off, O.mtuEnd, "ndpOptMtuEmit");
  buf[off + O.type] = NdpOpt.Mtu;
  buf[off + O.len] = 1;
  set16(buf, off + O.mtuReserved, 0);
  set32(buf, off + O.mtu, mtu);
  return O.mtuEnd;
}

/**
 * Writes a recursive DNS server option (RFC 8106) listing `addrs` (16-byte
 * arrays, at least one) valid for `lifetime` seconds; returns 8 + 16 × count.
 */
export function ndpOptRdnssEmit(
  buf: Uint8Array,
  off: number,
  lifetime: number,
  addrs: readonly Uint8Array[],
): number {
  if (addrs.length === 0 || addrs.length > 127) {
    throw new RangeError(`ndpOptRdnssEmit: ${addrs.length} addresses (1 to 127 fit)`);
  }
  const len = O.rdnssAddrs + IP6_ADDR_LEN * addrs.length;
  emitSpace(buf, off, len, "ndpOptRdnssEmit");
  buf[off + O.type] = NdpOpt.Rdnss;
  buf[off + O.len] = len / 8;
  set16(buf, off + O.rdnssReserved, 0);
  set32(buf, off + O.rdnssLifetime, lifetime);
  for (let i = 0; i < addrs.length; i++) {
    bytesCopy(buf, off + O.rdnssAddrs + IP6_ADDR_LEN * i, addrs[i], 0, IP6_ADDR_LEN);
  }
  return len;
}
