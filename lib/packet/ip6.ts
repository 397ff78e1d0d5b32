/**
 * IPv6 headers (RFC 8200) and IPv6 addresses.
 *
 * `wrap` checks the version and that the payload length fits, and clips `len`
 * to 40 + payload length (dropping Ethernet padding). Jumbograms (RFC 2675)
 * are not supported: a payload length of 0 means an empty payload.
 *
 * Finding the transport header takes a walk over extension headers:
 * {@linkcode Ip6Packet.findUpper} follows hop-by-hop (only first, as RFC 8200
 * §4.1 requires), routing, destination-options and fragment headers, at most
 * {@linkcode IP6_MAX_EXT_HEADERS} of them, each checked to fit. A fragment
 * header makes it return {@linkcode WireError.Fragmented}, except an atomic
 * fragment (offset 0, no more fragments: RFC 6946), which is walked over.
 * Anything else (TCP, UDP, ICMPv6, but also AH, ESP, "no next header") ends the
 * walk as the upper layer.
 *
 * Addresses stay in the packet: the view gives their offsets and copies and
 * compares 16-byte addresses at an offset, so the hot path creates no
 * subarrays. Address text lives in `lib/addr.ts`.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { isIp6Multicast } from "../addr.ts";
import {
  bytesCopy,
  bytesEqual,
  emitSpace,
  EMPTY_BYTES,
  get16,
  get32,
  IpProto,
  set16,
  set32,
  WireError,
} from "./wire.ts";

// RFC 8200 §3, IPv6 Header Format:
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |Version| Traffic Class |           Flow Label                  |   0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |         Payload Length        |  Next Header  |   Hop Limit   |   4
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                      Source Address (128 bits)                |   8
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                   Destination Address (128 bits)              |  24
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//                                                                    40
const F = {
  verTcFlow: 0,
  payloadLen: 4,
  nextHeader: 6,
  hopLimit: 7,
  src: 8,
  dst: 24,
  payload: 40,
} as const;

// RFC 8200 §4.3-4.6: hop-by-hop, routing and destination options headers
// start with next header (1 byte) and length in 8-byte units not counting the
// first 8 (1 byte). The fragment header (§4.5) is always 8 bytes:
// | Next Header | Reserved | Fragment Offset (13) |Res|M| Identification (32) |
const X = { nextHeader: 0, extLen: 1, fragWord: 2, fragIdent: 4, fragEnd: 8 } as const;

/** Length of the IPv6 header. */
export const IP6_HEADER_LEN: number = F.payload;
/** Length of an IPv6 address. */
export const IP6_ADDR_LEN = 16;
/** Most extension headers {@linkcode Ip6Packet.findUpper} walks before giving up. */
export const IP6_MAX_EXT_HEADERS = 8;

/** Where the upper-layer header of an IPv6 packet is; filled by {@linkcode Ip6Packet.findUpper}. */
export interface Ip6Upper {
  /** Upper-layer protocol ({@linkcode IpProto}). */
  proto: number;
  /** Offset of the upper-layer header in the packet's buffer. */
  offset: number;
  /** Bytes from {@linkcode offset} to the end of the packet. */
  len: number;
}

/** A zeroed {@linkcode Ip6Upper} to reuse across packets. */
export function ip6UpperNew(): Ip6Upper {
  return { proto: 0, offset: 0, len: 0 };
}

/** Reusable view of an IPv6 packet; see `wire.ts` for the contract. */
export class Ip6Packet {
  /** Buffer holding the packet. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the packet: 40 + payload length, after a successful wrap. */
  len = 0;

  /**
   * Points the view at the IPv6 packet at `buf[off..]` with `len` bytes
   * available, and clips `len` to 40 + payload length. On error the view is
   * unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < IP6_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    if (buf[off + F.verTcFlow] >>> 4 !== 6) return WireError.BadVersion;
    const total = IP6_HEADER_LEN + get16(buf, off + F.payloadLen);
    if (total > len) return WireError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = total;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): Ip6Packet | WireError {
    const p = new Ip6Packet();
    const err = p.wrap(buf, off, len);
    return err === 0 ? p : err;
  }

  /** IP version (6 after a successful wrap). */
  get version(): number {
    return this.buf[this.off + F.verTcFlow] >>> 4;
  }
  /** Traffic class (DSCP/ECN). */
  get trafficClass(): number {
    return (get16(this.buf, this.off + F.verTcFlow) >>> 4) & 0xff;
  }
  set trafficClass(v: number) {
    const w = get32(this.buf, this.off + F.verTcFlow);
    set32(this.buf, this.off + F.verTcFlow, (w & 0xf00fffff) | ((v & 0xff) << 20));
  }
  /** Flow label (20 bits). */
  get flowLabel(): number {
    return get32(this.buf, this.off + F.verTcFlow) & 0xfffff;
  }
  set flowLabel(v: number) {
    const w = get32(this.buf, this.off + F.verTcFlow);
    set32(this.buf, this.off + F.verTcFlow, ((w & 0xfff00000) | (v & 0xfffff)) >>> 0);
  }
  /** Payload length: bytes after the 40-byte header (extension headers included). */
  get payloadLen(): number {
    return get16(this.buf, this.off + F.payloadLen);
  }
  set payloadLen(v: number) {
    set16(this.buf, this.off + F.payloadLen, v);
  }
  /** Next header ({@linkcode IpProto}). */
  get nextHeader(): number {
    return this.buf[this.off + F.nextHeader];
  }
  set nextHeader(v: number) {
    this.buf[this.off + F.nextHeader] = v;
  }
  /** Hop limit. */
  get hopLimit(): number {
    return this.buf[this.off + F.hopLimit];
  }
  set hopLimit(v: number) {
    this.buf[this.off + F.hopLimit] = v;
  }
  /** Offset of the source address in {@linkcode buf}. */
  get srcOffset(): number {
    return this.off + F.src;
  }
  /** Offset of the destination address in {@linkcode buf}. */
  get dstOffset(): number {
    return this.off + F.dst;
  }
  /** Copies the source address into `out[outOff..]`. */
  copySrc(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.src, IP6_ADDR_LEN);
  }
  /** Copies the destination address into `out[outOff..]`. */
  copyDst(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.dst, IP6_ADDR_LEN);
  }
  /** Overwrites the source address from `addr[addrOff..]`. */
  setSrc(addr: Uint8Array, addrOff = 0): void {
    bytesCopy(this.buf, this.off + F.src, addr, addrOff, IP6_ADDR_LEN);
  }
  /** Overwrites the destination address from `addr[addrOff..]`. */
  setDst(addr: Uint8Array, addrOff = 0): void {
    bytesCopy(this.buf, this.off + F.dst, addr, addrOff, IP6_ADDR_LEN);
  }
  /** True if the source address equals the one at `addr[addrOff..]`. */
  srcEquals(addr: Uint8Array, addrOff = 0): boolean {
    return bytesEqual(this.buf, this.off + F.src, addr, addrOff, IP6_ADDR_LEN);
  }
  /** True if the destination address equals the one at `addr[addrOff..]`. */
  dstEquals(addr: Uint8Array, addrOff = 0): boolean {
    return bytesEqual(this.buf, this.off + F.dst, addr, addrOff, IP6_ADDR_LEN);
  }
  /** Offset of the payload (first extension or upper-layer header) in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + F.payload;
  }
  /** The payload as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.off + F.payload, this.off + this.len);
  }

  /**
   * Walks the extension headers and stores the upper-layer protocol, offset
   * and length in `out`. Returns 0, or {@linkcode WireError.Fragmented} for a
   * (non-atomic) fragment, {@linkcode WireError.Truncated} for a header that
   * does not fit, {@linkcode WireError.Malformed} for a hop-by-hop header not
   * first or a chain longer than {@linkcode IP6_MAX_EXT_HEADERS}. `out` is
   * only written on success.
   */
  findUpper(out: Ip6Upper): WireError | 0 {
    const buf = this.buf;
    const end = this.off + this.len;
    let nh = buf[this.off + F.nextHeader];
    let pos = this.off + F.payload;
    for (let i = 0; i <= IP6_MAX_EXT_HEADERS; i++) {
      switch (nh) {
        case IpProto.HopByHop:
        case IpProto.Routing:
        case IpProto.DstOpts: {
          if (nh === IpProto.HopByHop && i !== 0) return WireError.Malformed;
          if (pos + 2 > end) return WireError.Truncated;
          const extLen = (buf[pos + X.extLen] + 1) * 8;
          if (pos + extLen > end) return WireError.Truncated;
          nh = buf[pos + X.nextHeader];
          pos += extLen;
          break;
        }
        case IpProto.Fragment: {
          if (pos + X.fragEnd > end) return WireError.Truncated;
          // Offset (high 13 bits) or M (bit 0) set: a real fragment.
          if ((get16(buf, pos + X.fragWord) & 0xfff9) !== 0) return WireError.Fragmented;
          nh = buf[pos + X.nextHeader];
          pos += X.fragEnd;
          break;
        }
        default:
          out.proto = nh;
          out.offset = pos;
          out.len = end - pos;
          return 0;
      }
    }
    return WireError.Malformed;
  }
}

/** Fields of an IPv6 header without extension headers. Addresses are 16-byte arrays. */
export interface Ip6Repr {
  /** Source address. */
  src: Uint8Array;
  /** Destination address. */
  dst: Uint8Array;
  /** Next header ({@linkcode IpProto}). */
  nextHeader: number;
  /** Hop limit. */
  hopLimit: number;
  /** Traffic class. */
  trafficClass: number;
  /** Flow label (20 bits). */
  flowLabel: number;
  /** Bytes after the 40-byte header. */
  payloadLen: number;
}

/** A zeroed {@linkcode Ip6Repr} with its own address arrays and hop limit 64. */
export function ip6ReprNew(): Ip6Repr {
  return {
    src: new Uint8Array(IP6_ADDR_LEN),
    dst: new Uint8Array(IP6_ADDR_LEN),
    nextHeader: 0,
    hopLimit: 64,
    trafficClass: 0,
    flowLabel: 0,
    payloadLen: 0,
  };
}

/**
 * Reads a wrapped packet's fixed header into `out`. Refuses a multicast source
 * address ({@linkcode WireError.Malformed}, RFC 4291 §2.7). Extension headers
 * are not interpreted: use {@linkcode Ip6Packet.findUpper}.
 */
export function ip6Parse(pkt: Ip6Packet, out: Ip6Repr = ip6ReprNew()): Ip6Repr | WireError {
  if (isIp6Multicast(pkt.buf, pkt.srcOffset)) return WireError.Malformed;
  pkt.copySrc(out.src);
  pkt.copyDst(out.dst);
  out.nextHeader = pkt.nextHeader;
  out.hopLimit = pkt.hopLimit;
  out.trafficClass = pkt.trafficClass;
  out.flowLabel = pkt.flowLabel;
  out.payloadLen = pkt.payloadLen;
  return out;
}

/** Writes the 40-byte IPv6 header for `r` at `buf[off..]` and returns 40. */
export function ip6Emit(buf: Uint8Array, off: number, r: Ip6Repr): number {
  emitSpace(buf, off, IP6_HEADER_LEN, "ip6Emit");
  set32(
    buf,
    off + F.verTcFlow,
    ((6 << 28) | ((r.trafficClass & 0xff) << 20) | (r.flowLabel & 0xfffff)) >>> 0,
  );
  set16(buf, off + F.payloadLen, r.payloadLen);
  buf[off + F.nextHeader] = r.nextHeader;
  buf[off + F.hopLimit] = r.hopLimit;
  bytesCopy(buf, off + F.src, r.src, 0, IP6_ADDR_LEN);
  bytesCopy(buf, off + F.dst, r.dst, 0, IP6_ADDR_LEN);
  return IP6_HEADER_LEN;
}

/** True if the address at `buf[off..]` is link-local unicast (fe80::/10). */
export function ip6IsLinkLocal(buf: Uint8Array, off: number): boolean {
  return buf[off] === 0xfe && (buf[off + 1] & 0xc0) === 0x80;
}

/**
 * Writes the solicited-node multicast address of `addr[addrOff..]`
 * (ff02::1:ffXX:XXXX, RFC 4291 §2.7.1) to `out[outOff..]`.
 */
export function ip6SolicitedNode(
  out: Uint8Array,
  outOff: number,
  addr: Uint8Array,
  addrOff: number,
): void {
  out.fill(0, outOff, outOff + IP6_ADDR_LEN);
  out[outOff] = 0xff;
  out[outOff + 1] = 0x02;
  out[outOff + 11] = 0x01;
  out[outOff + 12] = 0xff;
  bytesCopy(out, outOff + 13, addr, addrOff + 13, 3);
}

/**
 * Writes the Ethernet multicast MAC for the IPv6 multicast address at
 * `addr[addrOff..]` (33:33 + its last four bytes, RFC 2464 §7) to `out[outOff..]`.
 */
export function ip6MulticastMac(
  out: Uint8Array,
  outOff: number,
  addr: Uint8Array,
  addrOff: number,
): void {
  out[outOff] = 0x33;
  out[outOff + 1] = 0x33;
  bytesCopy(out, outOff + 2, addr, addrOff + 12, 4);
}
