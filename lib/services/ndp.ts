/**
 * Neighbor Discovery (RFC 4861) as the guest's router: neighbor
 * advertisements for every address the guest asks about, and router
 * advertisements that configure the guest's IPv6 (prefix for SLAAC, MTU, DNS
 * servers and search list, and whether to ask DHCPv6).
 *
 * ## Theory of operation
 *
 * **Validation** (RFC 4861 §6.1.1, §7.1.1) comes first for every NDP message
 * (types 133 to 137) the guest sends: IP hop limit 255 (proof that it was not
 * forwarded from off-link), a good ICMPv6 checksum, code 0, options of
 * non-zero length that fit, an NS/NA target that is not multicast, and no
 * source link-layer address option when the source is unspecified. A message
 * failing a check is dropped and counted by reason (`hopLimit`, `checksum`,
 * `malformed`). The ICMPv6 checksum is verified here, not trusted from an
 * offload: kernels compute ICMPv6 checksums in software, so a guest never
 * hands over a partial one.
 *
 * **Neighbor solicitation → advertisement.** As with ARP, tapir claims every
 * address the guest solicits (so any route or neighbour the guest configures
 * resolves to tapir, which routes by address), except the guest's own: its
 * configured address {@linkcode GuestNet6.addr} and the NS's own source
 * address. A solicitation from the unspecified address is the guest's
 * duplicate address detection (RFC 4862 §5.4) and is never answered, or every
 * address the guest tried would look taken. The advertisement carries the
 * solicited, override and router flags and a target link-layer address option
 * with tapir's MAC; it goes from the target address to the soliciting address,
 * at the MAC from the solicitation's source link-layer option or, without
 * one, the frame's source MAC.
 *
 * **Router advertisements** answer a router solicitation (unicast to the
 * soliciting address, or to all-nodes ff02::1 when it came from the
 * unspecified address) and go out unsolicited to all-nodes whenever the
 * reactor calls {@linkcode NdpService.advertise} (once at start, then
 * periodically: the router lifetime of {@linkcode NDP_ROUTER_LIFETIME} s
 * must be refreshed). Source is {@linkcode GuestNet6.ourLinkLocal}, hop limit
 * 255. Fields: current hop limit 64, router lifetime 9000 s, reachable time
 * and retransmission timer unspecified, M and O set when DHCPv6 is on.
 * Options, in order: source link-layer address (tapir's MAC); MTU, when the
 * guest's MTU is a valid IPv6 one (≥ 1280); prefix information for
 * {@linkcode GuestNet6.addr}'s prefix, on-link and autonomous with infinite
 * lifetimes, so the kernel configures an address by SLAAC and never lets it
 * expire; RDNSS (RFC 8106 §5.1) with the DNS servers; DNSSL (§5.2) with the
 * search list. RDNSS and DNSSL lifetimes are infinite too: tapir's
 * configuration does not change while it runs. Both lists are cut (whole
 * entries only) so the advertisement fits one packet of the link's MTU (or
 * 1280 if that is larger) and each option its 8-bit length field.
 *
 * **Ignored** (consumed, counted): solicitations for the guest's own
 * addresses, DAD solicitations, router solicitations while router
 * advertisements are off, and the advertisements and redirects the guest
 * sends (tapir keeps no neighbour cache). Other ICMPv6 types pass, as does
 * everything when the service is off or IPv6 is off.
 *
 * Replies are written straight into the send slot from reprs owned by the
 * service; no per-frame allocation.
 *
 * @module
 */

import { formatIp6, isIp6Unspecified } from "../addr.ts";
import { logEnabled, LogLevel, logTrace } from "../log.ts";
import type { GuestNet6 } from "../net.ts";
import { icmp6ChecksumFill } from "../packet/checksum.ts";
import { dnsNameEmit, dnsNameWireLen } from "../packet/dnsname.ts";
import { ETH_ADDR_LEN, ETH_HEADER_LEN, ethEmit, EtherType, type EthFrame } from "../packet/eth.ts";
import {
  type Icmp6Packet,
  Icmp6Type,
  NDP_NA_OVERRIDE,
  NDP_NA_ROUTER,
  NDP_NA_SOLICITED,
  NDP_PREFIX_AUTONOMOUS,
  NDP_PREFIX_ON_LINK,
  NDP_RA_MANAGED,
  NDP_RA_OTHER,
  ndpEmit,
  NdpOpt,
  NdpOptions,
  ndpOptionsParse,
  ndpOptLinkAddrEmit,
  ndpOptMtuEmit,
  ndpOptPrefixInfoEmit,
  ndpOptRdnssEmit,
  ndpParse,
  ndpPrefixInfoNew,
  ndpReprNew,
} from "../packet/icmp6.ts";
import {
  IP6_ADDR_LEN,
  IP6_HEADER_LEN,
  ip6Emit,
  ip6MulticastMac,
  type Ip6Packet,
  ip6ReprNew,
} from "../packet/ip6.ts";
import {
  bytesCopy,
  bytesEqual,
  bytesZero,
  IpProto,
  isWireError,
  set16,
  set32,
} from "../packet/wire.ts";
import { TAP_HEADROOM } from "../tap/tap.ts";
import {
  type ServiceContext,
  type ServiceStats,
  serviceStatsNew,
  ServiceVerdict,
} from "./service.ts";

/** Options of the NDP service. */
export interface NdpServiceOptions {
  /** Answer NDP at all: NS, RS, unsolicited RAs (`--no-ndp` turns it off). Default true. */
  readonly enabled?: boolean;
  /** Send router advertisements, solicited and unsolicited (`--no-ra`). Default true. */
  readonly routerAdvertisements?: boolean;
  /** DHCPv6 is on: set the M and O flags in router advertisements. Default true. */
  readonly dhcpv6?: boolean;
}

/** Drop reasons of the NDP service. */
export type NdpDropReason = "hopLimit" | "checksum" | "malformed";
/** Counters of the NDP service. */
export type NdpStats = ServiceStats<NdpDropReason>;

/** IPv6 hop limit of every NDP message, sent and accepted (RFC 4861 §6.1, §7.1). */
export const NDP_HOP_LIMIT = 255;
/** Current hop limit advertised to the guest for its own packets. */
export const NDP_CUR_HOP_LIMIT = 64;
/** Router lifetime advertised, in seconds: the largest RFC 4861 §6.2.1 allows. */
export const NDP_ROUTER_LIFETIME = 9000;
/** "Infinity" for prefix, RDNSS and DNSSL lifetimes. */
export const NDP_LIFETIME_INFINITE = 0xffffffff;
/** Smallest IPv6 MTU (RFC 8200 §5); a smaller MTU is not advertised. */
export const IP6_MIN_MTU = 1280;
/** NDP option type of the DNS search list (RFC 8106 §5.2); `icmp6.ts` has no writer for it. */
export const NDP_OPT_DNSSL = 31;

/** The all-nodes multicast address ff02::1. Shared: never write into it. */
export const IP6_ALL_NODES: Uint8Array = new Uint8Array([
  0xff,
  0x02,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  1,
]);

// RFC 8106 §5.1/§5.2: | type | length | reserved (2) | lifetime (4) | data...
const DNSSL_HEADER_LEN = 8;
const RDNSS_HEADER_LEN = 8;
// An option's length field counts 8-byte units in one byte.
const NDP_OPT_MAX_LEN = 255 * 8;

/** The NDP service; see the module comment. */
export class NdpService {
  /** Counters; `sent` counts advertisements of both kinds, solicited and not. */
  readonly stats: NdpStats = serviceStatsNew<NdpDropReason>(["hopLimit", "checksum", "malformed"]);
  /** Whether the service answers at all. */
  readonly enabled: boolean;
  /** Whether it sends router advertisements. */
  readonly routerAdvertisements: boolean;
  /** Whether RAs carry the M and O flags. */
  readonly dhcpv6: boolean;

  readonly #req = ndpReprNew();
  readonly #opts = new NdpOptions();
  readonly #reply = ndpReprNew();
  readonly #ip = ip6ReprNew();
  readonly #prefix = ndpPrefixInfoNew();
  readonly #dstMac = new Uint8Array(ETH_ADDR_LEN);

  /** An NDP service with the given options. */
  constructor(opts: NdpServiceOptions = {}) {
    this.enabled = opts.enabled ?? true;
    this.routerAdvertisements = opts.routerAdvertisements ?? true;
    this.dhcpv6 = opts.dhcpv6 ?? true;
  }

  /**
   * Handles the ICMPv6 message `icmp` carried by `ip6` in `eth`. NDP types
   * are consumed (answered, ignored or dropped); other types pass. Returns
   * Replied if an advertisement was queued on `ctx.tap`.
   */
  input(ctx: ServiceContext, eth: EthFrame, ip6: Ip6Packet, icmp: Icmp6Packet): ServiceVerdict {
    const net6 = ctx.net.ip6;
    const type = icmp.type;
    if (
      !this.enabled || net6 === null || type < Icmp6Type.RouterSolicit ||
      type > Icmp6Type.Redirect
    ) return ServiceVerdict.Pass;
    const stats = this.stats;
    stats.received++;

    if (ip6.hopLimit !== NDP_HOP_LIMIT) {
      stats.drop.hopLimit++;
      return ServiceVerdict.Dropped;
    }
    if (!icmp.checksumOk(ip6.buf, ip6.srcOffset, ip6.dstOffset)) {
      stats.drop.checksum++;
      return ServiceVerdict.Dropped;
    }
    if (type === Icmp6Type.Redirect) return this.#ignore();
    const req = ndpParse(icmp, this.#req);
    if (isWireError(req) || ndpOptionsParse(icmp, this.#opts) !== 0) return this.#malformed();
    const srcUnspecified = isIp6Unspecified(ip6.buf, ip6.srcOffset);
    if (srcUnspecified && this.#opts.srcLinkAddrOffset >= 0) return this.#malformed();

    if (type === Icmp6Type.RouterSolicit) {
      if (!this.routerAdvertisements) return this.#ignore();
      if (srcUnspecified) {
        this.#sendRa(ctx, net6, IP6_ALL_NODES, 0, null);
      } else {
        this.#sendRa(ctx, net6, ip6.buf, ip6.srcOffset, this.#replyMac(eth));
      }
      stats.sent++;
      return ServiceVerdict.Replied;
    }
    if (type !== Icmp6Type.NeighborSolicit) return this.#ignore(); // RA, NA from the guest

    const target = req.target;
    if (
      srcUnspecified || isIp6Unspecified(target) ||
      bytesEqual(target, 0, net6.addr, 0, IP6_ADDR_LEN) || ip6.srcEquals(target)
    ) return this.#ignore();
    this.#sendNa(ctx, ip6, target, this.#replyMac(eth));
    stats.sent++;
    return ServiceVerdict.Replied;
  }

  /**
   * Sends an unsolicited router advertisement to all-nodes (ff02::1). The
   * reactor calls it once at start and then periodically, well within
   * {@linkcode NDP_ROUTER_LIFETIME}. Returns false (and sends nothing) if the
   * service or router advertisements are off or IPv6 is off.
   */
  advertise(ctx: ServiceContext): boolean {
    const net6 = ctx.net.ip6;
    if (!this.enabled || !this.routerAdvertisements || net6 === null) return false;
    this.#sendRa(ctx, net6, IP6_ALL_NODES, 0, null);
    this.stats.sent++;
    return true;
  }

  #ignore(): ServiceVerdict {
    this.stats.ignored++;
    return ServiceVerdict.Ignored;
  }

  #malformed(): ServiceVerdict {
    this.stats.drop.malformed++;
    return ServiceVerdict.Dropped;
  }

  /** The soliciting node's MAC: its source link-layer option, else the frame's source. */
  #replyMac(eth: EthFrame): Uint8Array {
    const sll = this.#opts.srcLinkAddrOffset;
    if (sll >= 0) bytesCopy(this.#dstMac, 0, eth.buf, sll, ETH_ADDR_LEN);
    else eth.copySrc(this.#dstMac);
    return this.#dstMac;
  }

  /** Queues a neighbor advertisement for `target` to the source of `ns` at `dstMac`. */
  #sendNa(ctx: ServiceContext, ns: Ip6Packet, target: Uint8Array, dstMac: Uint8Array): void {
    const ourMac = ctx.net.ourMac;
    const na = this.#reply;
    na.type = Icmp6Type.NeighborAdvert;
    na.flags = NDP_NA_ROUTER | NDP_NA_SOLICITED | NDP_NA_OVERRIDE;
    bytesCopy(na.target, 0, target, 0, IP6_ADDR_LEN);

    const frame = ctx.tap.take();
    const slot = ctx.tap.slot(frame);
    const ipOff = TAP_HEADROOM + ETH_HEADER_LEN;
    const icmpOff = ipOff + IP6_HEADER_LEN;
    let icmpLen = ndpEmit(slot, icmpOff, na);
    icmpLen += ndpOptLinkAddrEmit(slot, icmpOff + icmpLen, NdpOpt.TgtLinkAddr, ourMac);

    const ip = this.#ip;
    bytesCopy(ip.src, 0, target, 0, IP6_ADDR_LEN);
    ns.copySrc(ip.dst);
    this.#finish(ctx, frame, icmpLen, dstMac);
    if (logEnabled(LogLevel.trace)) {
      logTrace(`NDP: ${formatIp6(target)} is-at us, told ${formatIp6(ip.dst)}`);
    }
  }

  /**
   * Queues a router advertisement to the address at `dst[dstOff..]`, at
   * `dstMac`, or at the multicast MAC of `dst` when `dstMac` is null.
   */
  #sendRa(
    ctx: ServiceContext,
    net6: GuestNet6,
    dst: Uint8Array,
    dstOff: number,
    dstMac: Uint8Array | null,
  ): void {
    const net = ctx.net;
    const tap = ctx.tap;
    const ra = this.#reply;
    ra.type = Icmp6Type.RouterAdvert;
    ra.curHopLimit = NDP_CUR_HOP_LIMIT;
    ra.flags = this.dhcpv6 ? NDP_RA_MANAGED | NDP_RA_OTHER : 0;
    ra.routerLifetime = NDP_ROUTER_LIFETIME;
    ra.reachableTime = 0;
    ra.retransTimer = 0;

    // What the advertisement may take: one packet of the link MTU (at least
    // the IPv6 minimum, which every link carries) and one slot.
    const mtu = Math.max(IP6_MIN_MTU, net.mtu);
    const budget = Math.min(mtu, tap.maxFrame - ETH_HEADER_LEN) - IP6_HEADER_LEN;

    const frame = tap.take();
    const slot = tap.slot(frame);
    const ipOff = TAP_HEADROOM + ETH_HEADER_LEN;
    const icmpOff = ipOff + IP6_HEADER_LEN;
    let p = icmpOff;
    p += ndpEmit(slot, p, ra);
    p += ndpOptLinkAddrEmit(slot, p, NdpOpt.SrcLinkAddr, net.ourMac);
    if (net.mtu >= IP6_MIN_MTU) p += ndpOptMtuEmit(slot, p, net.mtu);

    const pi = this.#prefix;
    pi.prefixLen = net6.prefixLen;
    pi.flags = NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS;
    pi.validLifetime = NDP_LIFETIME_INFINITE;
    pi.preferredLifetime = NDP_LIFETIME_INFINITE;
    prefixOf(pi.prefix, net6.addr, net6.prefixLen);
    p += ndpOptPrefixInfoEmit(slot, p, pi);

    const dns = net6.dns;
    if (dns.length > 0) {
      const room = Math.min(NDP_OPT_MAX_LEN, budget - (p - icmpOff)) - RDNSS_HEADER_LEN;
      const fit = Math.min(dns.length, Math.floor(room / IP6_ADDR_LEN));
      if (fit > 0) {
        // Cutting the list allocates; it only happens with over 70 servers.
        const list = fit === dns.length ? dns : dns.slice(0, fit);
        p += ndpOptRdnssEmit(slot, p, NDP_LIFETIME_INFINITE, list);
      }
    }
    if (net.search.length > 0) {
      const room = Math.min(NDP_OPT_MAX_LEN, budget - (p - icmpOff));
      p += ndpOptDnsslEmit(slot, p, NDP_LIFETIME_INFINITE, net.search, room);
    }

    const ip = this.#ip;
    bytesCopy(ip.src, 0, net6.ourLinkLocal, 0, IP6_ADDR_LEN);
    bytesCopy(ip.dst, 0, dst, dstOff, IP6_ADDR_LEN);
    let mac = dstMac;
    if (mac === null) {
      ip6MulticastMac(this.#dstMac, 0, dst, dstOff);
      mac = this.#dstMac;
    }
    this.#finish(ctx, frame, p - icmpOff, mac);
    if (logEnabled(LogLevel.trace)) logTrace(`NDP: router advertisement to ${formatIp6(ip.dst)}`);
  }

  /**
   * Completes the frame in `slot` whose ICMPv6 message (`icmpLen` bytes) is
   * already written: IPv6 header from {@linkcode #ip} (addresses set by the
   * caller), checksum, Ethernet header; then commits it.
   */
  #finish(ctx: ServiceContext, frame: number, icmpLen: number, dstMac: Uint8Array): void {
    const slot = ctx.tap.slot(frame);
    const ipOff = TAP_HEADROOM + ETH_HEADER_LEN;
    const icmpOff = ipOff + IP6_HEADER_LEN;
    const ip = this.#ip;
    ip.nextHeader = IpProto.Icmp6;
    ip.hopLimit = NDP_HOP_LIMIT;
    ip.trafficClass = 0;
    ip.flowLabel = 0;
    ip.payloadLen = icmpLen;
    ip6Emit(slot, ipOff, ip);
    icmp6ChecksumFill(slot, icmpOff, icmpLen, slot, ipOff + 8, ipOff + 24);
    ethEmit(slot, TAP_HEADROOM, dstMac, ctx.net.ourMac, EtherType.Ipv6);
    ctx.tap.commit(frame, ETH_HEADER_LEN + IP6_HEADER_LEN + icmpLen);
  }
}

/** Writes the first `prefixLen` bits of `addr` to `out`, the rest zero. */
function prefixOf(out: Uint8Array, addr: Uint8Array, prefixLen: number): void {
  for (let i = 0; i < IP6_ADDR_LEN; i++) {
    const bits = prefixLen - 8 * i;
    out[i] = bits >= 8 ? addr[i] : bits <= 0 ? 0 : addr[i] & (0xff << (8 - bits));
  }
}

/**
 * Writes a DNS search list option (RFC 8106 §5.2) with as many of `names` as
 * fit in `maxLen` bytes, valid for `lifetime` seconds; names that are not
 * valid domain names are skipped. The names are in DNS wire form without
 * compression, zero-padded to a multiple of 8 bytes. Returns the bytes
 * written, 0 if no name fits (then nothing is written).
 */
export function ndpOptDnsslEmit(
  buf: Uint8Array,
  off: number,
  lifetime: number,
  names: readonly string[],
  maxLen: number = NDP_OPT_MAX_LEN,
): number {
  const limit = Math.min(maxLen, NDP_OPT_MAX_LEN);
  let p = off + DNSSL_HEADER_LEN;
  for (const name of names) {
    const len = dnsNameWireLen(name);
    if (len < 0) continue;
    if (roundUp8(p + len - off) > limit) break;
    p += dnsNameEmit(buf, p, name);
  }
  if (p === off + DNSSL_HEADER_LEN) return 0;
  const total = roundUp8(p - off);
  bytesZero(buf, p, off + total - p);
  buf[off] = NDP_OPT_DNSSL;
  buf[off + 1] = total / 8;
  set16(buf, off + 2, 0);
  set32(buf, off + 4, lifetime);
  return total;
}

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}
