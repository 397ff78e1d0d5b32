/**
 * Headers of frames tapir sends to the guest, and ICMP errors.
 *
 * Every frame toward the guest starts the same way: Ethernet from tapir's
 * MAC to the guest's, then an IPv4 or IPv6 header. {@linkcode GuestHeaders}
 * writes both in one call into a frame slot, with reusable reprs, so the
 * translation layers (ICMP echo, UDP, TCP) only fill in their own protocol.
 *
 * ICMP errors toward the guest ({@linkcode icmpErrorToGuest4} and
 * {@linkcode icmpErrorToGuest6}) quote the guest's offending packet as the
 * RFCs ask: IPv4 the IP header and at least 8 bytes more (RFC 792; we quote
 * up to 548 bytes of the packet so the error fits in 576, RFC 1812 §4.3.2.3),
 * IPv6 as much as fits in the minimum MTU of 1280 (RFC 4443 §2.4).
 *
 * @module
 */

import {
  checksumPseudo4,
  checksumPseudo6,
  icmp4ChecksumFill,
  icmp6ChecksumFill,
} from "../packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType } from "../packet/eth.ts";
import { icmpEmit, icmpReprNew } from "../packet/icmp.ts";
import { icmp6Emit, icmp6ReprNew } from "../packet/icmp6.ts";
import { IP4_HEADER_LEN, ip4Emit, type Ip4Packet, ip4ReprNew } from "../packet/ip4.ts";
import { IP6_HEADER_LEN, ip6Emit, type Ip6Packet, ip6ReprNew } from "../packet/ip6.ts";
import { IpProto } from "../packet/wire.ts";
import type { TapSender } from "../tap/tap.ts";
import { TAP_HEADROOM } from "../tap/tap.ts";

/** Where a frame to the guest comes from and goes to at layer 2. */
export interface GuestL2 {
  /** tapir's MAC. */
  readonly ourMac: Uint8Array;
  /** The guest's MAC (broadcast until learned). */
  readonly guestMac: Uint8Array;
}

/** A flow's addresses toward the guest, as a flow keeps them for {@linkcode GuestHeaders.emitFor}. */
export interface GuestEndpoints {
  /** IPv6 (else IPv4). */
  readonly v6: boolean;
  /** Source (ours, as the guest sees it) at `addrsOff`, destination (the guest) 16 on; IPv4 mapped. */
  readonly addrs: Uint8Array;
  readonly addrsOff: number;
  /**
   * IPv4 source and destination as 32-bit numbers, unsigned or signed:
   * only their bits are written (signed ones are never heap numbers; see
   * `Ip4Packet.srcBits`).
   */
  readonly src4: number;
  readonly dst4: number;
}

/** Writes Ethernet + IP headers toward the guest; see the module comment. */
export class GuestHeaders {
  readonly #l2: GuestL2;
  readonly #ip4 = ip4ReprNew();
  readonly #ip6 = ip6ReprNew();

  /** Uses `l2` for the MAC addresses (read at each call, so a learned guest MAC applies). */
  constructor(l2: GuestL2) {
    this.#l2 = l2;
  }

  /**
   * Writes Ethernet + IPv4 headers at `buf[off..]` for a packet of `proto`
   * with `payloadLen` bytes after the IP header, from `src` to `dst` (32-bit
   * numbers, unsigned or signed).
   * Returns the offset where the payload starts.
   */
  emit4(
    buf: Uint8Array,
    off: number,
    src: number,
    dst: number,
    proto: number,
    payloadLen: number,
  ): number {
    const l3 = off + ethEmit(buf, off, this.#l2.guestMac, this.#l2.ourMac, EtherType.Ipv4);
    const r = this.#ip4;
    r.src = src;
    r.dst = dst;
    r.proto = proto;
    r.payloadLen = payloadLen;
    r.ttl = 64;
    r.dontFragment = true;
    return l3 + ip4Emit(buf, l3, r);
  }

  /**
   * Writes Ethernet + IP headers for a layer-4 message of `proto` and `len`
   * bytes from flow endpoints `ep`, at {@linkcode TAP_HEADROOM} of `slot`;
   * returns the pseudo-header sum the message's checksum starts from.
   */
  emitFor(slot: Uint8Array, ep: GuestEndpoints, proto: number, len: number): number {
    if (ep.v6) {
      const a = ep.addrs;
      const o = ep.addrsOff;
      this.emit6(slot, TAP_HEADROOM, a, o, a, o + 16, proto, len);
      return checksumPseudo6(a, o, a, o + 16, proto, len);
    }
    this.emit4(slot, TAP_HEADROOM, ep.src4, ep.dst4, proto, len);
    return checksumPseudo4(ep.src4, ep.dst4, proto, len);
  }

  /**
   * Writes Ethernet + IPv6 headers at `buf[off..]`: source and destination
   * addresses copied from `srcBuf[srcOff..]` and `dstBuf[dstOff..]`. Returns
   * the offset where the payload starts.
   */
  emit6(
    buf: Uint8Array,
    off: number,
    srcBuf: Uint8Array,
    srcOff: number,
    dstBuf: Uint8Array,
    dstOff: number,
    nextHeader: number,
    payloadLen: number,
  ): number {
    const l3 = off + ethEmit(buf, off, this.#l2.guestMac, this.#l2.ourMac, EtherType.Ipv6);
    const r = this.#ip6;
    // Byte by byte: a subarray per address would be an allocation per packet.
    const src = r.src;
    const dst = r.dst;
    for (let i = 0; i < 16; i++) {
      src[i] = srcBuf[srcOff + i];
      dst[i] = dstBuf[dstOff + i];
    }
    r.nextHeader = nextHeader;
    r.hopLimit = 64;
    r.payloadLen = payloadLen;
    return l3 + ip6Emit(buf, l3, r);
  }
}

/** Most bytes of the guest's IPv4 packet quoted in an error (576 - 20 - 8). */
const ICMP4_QUOTE_MAX = 548;
/** Most bytes of the guest's IPv6 packet quoted in an error (1280 - 40 - 8). */
const ICMP6_QUOTE_MAX = 1232;
/** Offset of the IPv4 header in a frame slot. */
const L3_OFF = TAP_HEADROOM + ETH_HEADER_LEN;

const icmpRepr = icmpReprNew();
const icmp6Repr = icmp6ReprNew();

/**
 * Sends the guest an ICMP error (`type`, `code`, rest-of-header `rest`) about
 * its IPv4 packet `orig`, from `from` (u32, usually the address the packet
 * was sent to). Never answers an ICMP error with an error (RFC 1122 §3.2.2).
 */
export function icmpErrorToGuest4(
  tap: TapSender,
  hdrs: GuestHeaders,
  from: number,
  orig: Ip4Packet,
  type: number,
  code: number,
  rest = 0,
): void {
  if (orig.proto === IpProto.Icmp && orig.len > orig.headerLen) {
    const t = orig.buf[orig.off + orig.headerLen];
    if (t !== 0 && t !== 8) return; // only echo messages may draw errors
  }
  const quote = Math.min(orig.len, ICMP4_QUOTE_MAX);
  const frame = tap.take();
  const slot = tap.slot(frame);
  const l4 = hdrs.emit4(slot, TAP_HEADROOM, from, orig.src, IpProto.Icmp, 8 + quote);
  slot.set(orig.buf.subarray(orig.off, orig.off + quote), l4 + 8);
  icmpRepr.type = type;
  icmpRepr.code = code;
  icmpRepr.rest = rest;
  icmpRepr.payloadLen = quote;
  icmpEmit(slot, l4, icmpRepr);
  icmp4ChecksumFill(slot, l4, 8 + quote);
  tap.commit(frame, l4 - TAP_HEADROOM + 8 + quote);
}

/**
 * Sends the guest an ICMPv6 error about its IPv6 packet `orig`, from the
 * address at `fromBuf[fromOff..]`. Errors are not answered with errors.
 */
export function icmpErrorToGuest6(
  tap: TapSender,
  hdrs: GuestHeaders,
  fromBuf: Uint8Array,
  fromOff: number,
  orig: Ip6Packet,
  upperProto: number,
  upperOff: number,
  type: number,
  code: number,
  rest = 0,
): void {
  if (upperProto === IpProto.Icmp6 && upperOff < orig.off + orig.len) {
    if (orig.buf[upperOff] < 128) return; // an error message: never answer it
  }
  const quote = Math.min(orig.len, ICMP6_QUOTE_MAX);
  const frame = tap.take();
  const slot = tap.slot(frame);
  const l4 = hdrs.emit6(
    slot,
    TAP_HEADROOM,
    fromBuf,
    fromOff,
    orig.buf,
    orig.srcOffset,
    IpProto.Icmp6,
    8 + quote,
  );
  slot.set(orig.buf.subarray(orig.off, orig.off + quote), l4 + 8);
  icmp6Repr.type = type;
  icmp6Repr.code = code;
  icmp6Repr.rest = rest;
  icmp6Repr.payloadLen = quote;
  icmp6Emit(slot, l4, icmp6Repr);
  const ip = l4 - IP6_HEADER_LEN;
  icmp6ChecksumFill(slot, l4, 8 + quote, slot, ip + 8, ip + 24);
  tap.commit(frame, l4 - TAP_HEADROOM + 8 + quote);
}

/** Offset of the layer-4 header in a frame slot for IPv4 (no options) and IPv6. */
export const L4_OFF4: number = L3_OFF + IP4_HEADER_LEN;
/** See {@linkcode L4_OFF4}. */
export const L4_OFF6: number = L3_OFF + IP6_HEADER_LEN;
