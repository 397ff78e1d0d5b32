/**
 * Frames from the guest: checked layer by layer, then handed to the service
 * or translation layer they belong to.
 *
 * The guest is untrusted. Each layer is wrapped with its checked view, and
 * any failure — a truncated header, a length field that lies, a bad
 * checksum, a fragment, an oversize frame — drops the frame and counts it
 * under the reason ({@linkcode TapInputStats.dropped}, indexed by
 * `WireError`). Nothing here throws on guest bytes, and nothing allocates
 * per frame: the views are reused.
 *
 * Order of checks, per family:
 * - Ethernet (802.1Q tags refused), learn the guest's MAC from the source.
 * - ARP → ARP service.
 * - IPv4: header (version, lengths), header checksum, no fragments; then
 *   ICMP (checksum; echo requests → ping), TCP (header, checksum → TCP
 *   translation), UDP (length, checksum; DHCP port → DHCP server, the rest →
 *   UDP translation).
 * - IPv6: header, extension-header walk (no fragments); then ICMPv6 (NDP →
 *   NDP service, which checks its own rules and checksum; echo requests,
 *   checksum checked here → ping), TCP, UDP (DHCPv6 port → DHCPv6 server,
 *   the rest → UDP translation).
 *
 * What no consumer takes (other protocols, ICMP types tapir does not
 * forward) is counted as `unhandled`.
 *
 * @module
 */

import { EtherType, EthFrame } from "../packet/eth.ts";
import { IcmpPacket, IcmpType } from "../packet/icmp.ts";
import { Icmp6Packet, Icmp6Type } from "../packet/icmp6.ts";
import { Ip4Packet } from "../packet/ip4.ts";
import { Ip6Packet, ip6UpperNew } from "../packet/ip6.ts";
import { TcpPacket } from "../packet/tcp.ts";
import { UdpPacket } from "../packet/udp.ts";
import { IpProto, WIRE_ERROR_COUNT, WireError } from "../packet/wire.ts";
import { DHCP_SERVER_PORT } from "../packet/dhcp.ts";
import { DHCP6_SERVER_PORT } from "../packet/dhcpv6.ts";
import type { ServiceContext, ServiceVerdict } from "../services/service.ts";

/** What the dispatcher hands frames to. Each returns a verdict; Pass (0) means "not mine". */
export interface TapConsumers {
  /** ARP service. */
  arp(ctx: ServiceContext, eth: EthFrame): ServiceVerdict;
  /** NDP service (NS, NA, RS, RA). */
  ndp(ctx: ServiceContext, eth: EthFrame, ip: Ip6Packet, icmp: Icmp6Packet): ServiceVerdict;
  /** DHCP server (UDP to port 67). */
  dhcp(ctx: ServiceContext, eth: EthFrame, ip: Ip4Packet, udp: UdpPacket): ServiceVerdict;
  /** DHCPv6 server (UDP to port 547). */
  dhcpv6(ctx: ServiceContext, eth: EthFrame, ip: Ip6Packet, udp: UdpPacket): ServiceVerdict;
  /** ICMP echo request (checksum verified). */
  ping4(ip: Ip4Packet, icmp: IcmpPacket): void;
  /** ICMPv6 echo request (checksum verified). */
  ping6(ip: Ip6Packet, icmp: Icmp6Packet): void;
  /** TCP segment over IPv4 (checksum verified). */
  tcp4(ip: Ip4Packet, seg: TcpPacket): void;
  /** TCP segment over IPv6 (checksum verified); `upperOff` is where TCP starts. */
  tcp6(ip: Ip6Packet, seg: TcpPacket, upperOff: number): void;
  /** UDP datagram over IPv4 not taken by a service (checksum verified). */
  udp4(ip: Ip4Packet, d: UdpPacket): void;
  /** UDP datagram over IPv6 not taken by a service (checksum verified). */
  udp6(ip: Ip6Packet, d: UdpPacket, upperOff: number): void;
}

/** Counters of the dispatcher. */
export interface TapInputStats {
  /** Frames looked at. */
  frames: number;
  /** Frames dropped as malformed, by `WireError` (index 0 unused). */
  readonly dropped: Uint32Array;
  /** Frames larger than the MTU allows. */
  oversize: number;
  /** Well-formed frames nothing here handles (yet). */
  unhandled: number;
}

/** The guest-frame dispatcher; see the module comment. */
export class TapInput {
  /** Counters. */
  readonly stats: TapInputStats = {
    frames: 0,
    dropped: new Uint32Array(WIRE_ERROR_COUNT),
    oversize: 0,
    unhandled: 0,
  };
  readonly #ctx: ServiceContext;
  readonly #to: TapConsumers;
  readonly #maxFrame: number;
  readonly #eth = new EthFrame();
  readonly #ip4 = new Ip4Packet();
  readonly #ip6 = new Ip6Packet();
  readonly #upper = ip6UpperNew();
  readonly #icmp = new IcmpPacket();
  readonly #icmp6 = new Icmp6Packet();
  readonly #udp = new UdpPacket();
  readonly #tcp = new TcpPacket();
  #partial = false;

  /** Dispatches to `to`; frames above the MTU (plus the Ethernet header) are refused. */
  constructor(ctx: ServiceContext, to: TapConsumers) {
    this.#ctx = ctx;
    this.#to = to;
    this.#maxFrame = ctx.net.mtu + 14;
  }

  #drop(err: WireError): void {
    this.stats.dropped[err]++;
  }

  /**
   * Handles the frame at `buf[off..off+len)`. `csumPartial`: the guest's
   * kernel left its TCP/UDP checksum to be filled in (vnet header), so it is
   * not verified.
   */
  frame(buf: Uint8Array, off: number, len: number, csumPartial = false): void {
    this.#partial = csumPartial;
    this.stats.frames++;
    if (len > this.#maxFrame) {
      this.stats.oversize++;
      return;
    }
    const eth = this.#eth;
    const err = eth.wrap(buf, off, len);
    if (err !== 0) return this.#drop(err);
    this.#ctx.guest.learnMac(buf, eth.srcOffset);
    switch (eth.ethertype) {
      case EtherType.Arp:
        if (this.#to.arp(this.#ctx, eth) === 0) this.stats.unhandled++;
        return;
      case EtherType.Ipv4:
        return this.#ipv4(eth);
      case EtherType.Ipv6:
        return this.#ipv6(eth);
      default:
        this.stats.unhandled++;
    }
  }

  #ipv4(eth: EthFrame): void {
    const ip = this.#ip4;
    const err = ip.wrap(eth.buf, eth.payloadOffset, eth.payloadLen);
    if (err !== 0) return this.#drop(err);
    if (!ip.headerChecksumOk()) return this.#drop(WireError.BadChecksum);
    if (ip.isFragment) return this.#drop(WireError.Fragmented);
    const l4 = ip.off + ip.headerLen;
    const l4len = ip.len - ip.headerLen;
    switch (ip.proto) {
      case IpProto.Icmp: {
        const icmp = this.#icmp;
        const e = icmp.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!icmp.checksumOk()) return this.#drop(WireError.BadChecksum);
        if (icmp.type === IcmpType.EchoRequest) this.#to.ping4(ip, icmp);
        else this.stats.unhandled++;
        return;
      }
      case IpProto.Tcp: {
        const seg = this.#tcp;
        const e = seg.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!this.#partial && !seg.checksumOk4(ip.src, ip.dst)) {
          return this.#drop(WireError.BadChecksum);
        }
        this.#to.tcp4(ip, seg);
        return;
      }
      case IpProto.Udp: {
        const udp = this.#udp;
        const e = udp.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!this.#partial && !udp.checksumOk4(ip.src, ip.dst)) {
          return this.#drop(WireError.BadChecksum);
        }
        if (udp.dstPort === DHCP_SERVER_PORT && this.#to.dhcp(this.#ctx, eth, ip, udp) !== 0) {
          return;
        }
        this.#to.udp4(ip, udp);
        return;
      }
      default:
        this.stats.unhandled++;
    }
  }

  #ipv6(eth: EthFrame): void {
    const ip = this.#ip6;
    const err = ip.wrap(eth.buf, eth.payloadOffset, eth.payloadLen);
    if (err !== 0) return this.#drop(err);
    const up = this.#upper;
    const e = ip.findUpper(up);
    if (e !== 0) return this.#drop(e);
    switch (up.proto) {
      case IpProto.Icmp6: {
        const icmp = this.#icmp6;
        const e2 = icmp.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        const t = icmp.type;
        if (t >= Icmp6Type.RouterSolicit && t <= Icmp6Type.NeighborAdvert) {
          if (this.#to.ndp(this.#ctx, eth, ip, icmp) === 0) this.stats.unhandled++;
          return;
        }
        if (t !== Icmp6Type.EchoRequest) {
          this.stats.unhandled++;
          return;
        }
        if (!icmp.checksumOk(ip.buf, ip.srcOffset, ip.dstOffset)) {
          return this.#drop(WireError.BadChecksum);
        }
        this.#to.ping6(ip, icmp);
        return;
      }
      case IpProto.Tcp: {
        const seg = this.#tcp;
        const e2 = seg.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        if (!this.#partial && !seg.checksumOk6(ip.buf, ip.srcOffset, ip.dstOffset)) {
          return this.#drop(WireError.BadChecksum);
        }
        this.#to.tcp6(ip, seg, up.offset);
        return;
      }
      case IpProto.Udp: {
        const udp = this.#udp;
        const e2 = udp.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        if (!this.#partial && !udp.checksumOk6(ip.buf, ip.srcOffset, ip.dstOffset)) {
          return this.#drop(WireError.BadChecksum);
        }
        if (udp.dstPort === DHCP6_SERVER_PORT && this.#to.dhcpv6(this.#ctx, eth, ip, udp) !== 0) {
          return;
        }
        this.#to.udp6(ip, udp, up.offset);
        return;
      }
      default:
        this.stats.unhandled++;
    }
  }
}
