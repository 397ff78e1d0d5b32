/**
 * Frames from the guest: checked layer by layer, then handed to the service
 * or translation layer they belong to.
 *
 * The guest is untrusted. Each layer is wrapped with its checked view, and
 * any failure — a truncated header, a length field that lies, a bad
 * checksum, a fragment, an oversize frame — drops the frame and counts it
 * under the reason ({@linkcode TapInputStats.drop}, indexed by
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
 * forward) is counted as `dropUnhandled`.
 *
 * **Offload descriptors.** A frame may come with what the guest's kernel
 * left undone (the backend's vnet header, see `FrameBatch`): a checksum
 * left partial (NEEDS_CSUM: not verified, the bytes are the guest kernel's
 * own) and a GSO type and size (one frame standing for several segments
 * of `gsoSize` payload bytes). Only a GSO frame may exceed the MTU; its
 * type must match what it carries (TCPV4 an IPv4 TCP segment, TCPV6 an
 * IPv6 one, UDP_L4 a UDP datagram), it must have a partial checksum and a
 * non-zero size, or it is dropped as `dropBadGso`. TCP needs nothing more (the
 * payload goes to the socket in one write); UDP gets the size, to send the
 * payload as the datagrams the guest meant.
 *
 * **Frames with a tail** (vhost-user: only the first bytes in the slot, the
 * frame in the guest's buffers, see `tail.ts`) are parsed from the slot.
 * TCP and UDP get the tail and write the payload to their sockets from
 * it; everything else — a checksum to verify, a service, ICMP, IPv6
 * extension headers — first has the frame made whole in its slot
 * (counted as `gathered`).
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
import type { FrameTail } from "./tail.ts";
import { GsoType, VnetFlag } from "./tap.ts";

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
  /**
   * TCP segment over IPv4 (checksum verified). With a `tail`, the payload
   * is read from the tail's pieces (the slot holds the headers only).
   */
  tcp4(ip: Ip4Packet, seg: TcpPacket, tail: FrameTail | null): void;
  /** TCP segment over IPv6 (checksum verified); `upperOff` is where TCP starts; see `tcp4`. */
  tcp6(ip: Ip6Packet, seg: TcpPacket, upperOff: number, tail: FrameTail | null): void;
  /**
   * UDP datagram over IPv4 not taken by a service (checksum verified);
   * `gsoSize` > 0: a UDP GSO frame, payload meant as datagrams of that size.
   * With a `tail`, as for `tcp4`.
   */
  udp4(ip: Ip4Packet, d: UdpPacket, gsoSize: number, tail: FrameTail | null): void;
  /** UDP datagram over IPv6 not taken by a service (checksum verified); see `udp4`. */
  udp6(
    ip: Ip6Packet,
    d: UdpPacket,
    upperOff: number,
    gsoSize: number,
    tail: FrameTail | null,
  ): void;
}

/** Counters of the dispatcher. */
export interface TapInputStats {
  /** Frames looked at. */
  framesToHost: number;
  /** Bytes of those frames (Ethernet header on; a GSO frame counts whole). */
  bytesToHost: number;
  /** Frames dropped as malformed, by `WireError` (index 0 unused). */
  readonly drop: Uint32Array;
  /** Frames larger than the MTU allows. */
  dropOversize: number;
  /** Well-formed frames nothing here handles (yet). */
  dropUnhandled: number;
  /** GSO frames accepted. */
  gsoFramesToHost: number;
  /** Segments those GSO frames stand for. */
  gsoSegmentsToHost: number;
  /** Frames whose GSO descriptor does not match what they carry. */
  dropBadGso: number;
  /** Frames with a tail made whole in their slot (for a consumer other than TCP's payload path). */
  gathered: number;
  /** Frames handed over: taken by a service (ARP, NDP, DHCP, DHCPv6), echo requests, TCP, UDP. */
  toServices: number;
  toPing: number;
  toTcp: number;
  toUdp: number;
}

/**
 * Frames looked at but neither handed over nor dropped under a reason:
 * always 0 (each frame has exactly one outcome), which the fuzzer checks.
 */
export function framesUnaccounted(s: TapInputStats): number {
  let dropped = s.dropOversize + s.dropUnhandled + s.dropBadGso;
  for (let i = 0; i < s.drop.length; i++) dropped += s.drop[i];
  return s.framesToHost - dropped - s.toServices - s.toPing - s.toTcp - s.toUdp;
}

/** The guest-frame dispatcher; see the module comment. */
export class TapInput {
  /** Counters. */
  readonly stats: TapInputStats = {
    framesToHost: 0,
    bytesToHost: 0,
    drop: new Uint32Array(WIRE_ERROR_COUNT),
    dropOversize: 0,
    dropUnhandled: 0,
    gsoFramesToHost: 0,
    gsoSegmentsToHost: 0,
    dropBadGso: 0,
    gathered: 0,
    toServices: 0,
    toPing: 0,
    toTcp: 0,
    toUdp: 0,
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
  /** The current frame's slot, and its tail while part of it is elsewhere. */
  #buf: Uint8Array = new Uint8Array(0);
  #tail: FrameTail | null = null;
  /** The current frame's GSO type (ECN bit cleared) and size, or 0. */
  #gsoType = 0;
  #gsoSize = 0;

  /** Dispatches to `to`; frames above the MTU (plus the Ethernet header) are refused. */
  constructor(ctx: ServiceContext, to: TapConsumers) {
    this.#ctx = ctx;
    this.#to = to;
    this.#maxFrame = ctx.net.mtu + 14;
  }

  #drop(err: WireError): void {
    this.stats.drop[err]++;
  }

  /**
   * A GSO frame must carry what its type says (`want`); counts it if so.
   * True for a plain frame, or a GSO frame that may go on.
   */
  #gsoOk(want: number, payloadLen: number): boolean {
    const t = this.#gsoType;
    if (t === GsoType.NONE) return true;
    if (t !== want) {
      this.stats.dropBadGso++;
      return false;
    }
    this.stats.gsoFramesToHost++;
    this.stats.gsoSegmentsToHost += Math.max(1, Math.ceil(payloadLen / this.#gsoSize));
    return true;
  }

  /**
   * Makes the current frame whole in its slot: every consumer but TCP's
   * payload path reads it there. A no-op for a frame without a tail.
   */
  #whole(): void {
    const t = this.#tail;
    if (t === null) return;
    t.gather(this.#buf);
    this.#tail = null;
    this.stats.gathered++;
  }

  /** A GSO type on anything but TCP and UDP is a lie. */
  #noGso(): boolean {
    if (this.#gsoType === GsoType.NONE) return true;
    this.stats.dropBadGso++;
    return false;
  }

  /**
   * Handles the frame at `buf[off..off+len)` with its descriptor (see the
   * module comment): `vnetFlags` (NEEDS_CSUM: the guest's kernel left its
   * TCP/UDP checksum to be filled in, so it is not verified), `gsoType` and
   * `gsoSize`. A frame with a `tail` has only its first bytes in `buf`
   * (from `off` to the tail's `headEnd`), the rest in the tail's pieces.
   */
  frame(
    buf: Uint8Array,
    off: number,
    len: number,
    vnetFlags = 0,
    gsoType: number = GsoType.NONE,
    gsoSize = 0,
    tail: FrameTail | null = null,
  ): void {
    this.#buf = buf;
    this.#tail = tail !== null && tail.count > 0 ? tail : null;
    this.#partial = (vnetFlags & VnetFlag.NEEDS_CSUM) !== 0;
    this.stats.framesToHost++;
    this.stats.bytesToHost += len;
    const type = gsoType & ~GsoType.ECN;
    this.#gsoType = type;
    this.#gsoSize = type === GsoType.NONE ? 0 : gsoSize;
    if (type !== GsoType.NONE && (gsoSize === 0 || !this.#partial)) {
      this.stats.dropBadGso++;
      return;
    }
    if (len > this.#maxFrame && type === GsoType.NONE) {
      this.stats.dropOversize++;
      return;
    }
    const eth = this.#eth;
    const err = eth.wrap(buf, off, len);
    if (err !== 0) return this.#drop(err);
    this.#ctx.guest.learnMac(buf, eth.srcOffset);
    switch (eth.ethertype) {
      case EtherType.Arp:
        if (!this.#noGso()) return;
        this.#whole();
        if (this.#to.arp(this.#ctx, eth) === 0) this.stats.dropUnhandled++;
        else this.stats.toServices++;
        return;
      case EtherType.Ipv4:
        return this.#ipv4(eth);
      case EtherType.Ipv6:
        return this.#ipv6(eth);
      default:
        this.stats.dropUnhandled++;
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
        if (!this.#noGso()) return;
        this.#whole();
        const icmp = this.#icmp;
        const e = icmp.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!icmp.checksumOk()) return this.#drop(WireError.BadChecksum);
        if (icmp.type !== IcmpType.EchoRequest) {
          this.stats.dropUnhandled++;
          return;
        }
        this.stats.toPing++;
        this.#to.ping4(ip, icmp);
        return;
      }
      case IpProto.Tcp: {
        const seg = this.#tcp;
        const e = seg.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!this.#partial) {
          this.#whole();
          if (!seg.checksumOk4(ip.srcBits, ip.dstBits)) return this.#drop(WireError.BadChecksum);
        }
        if (!this.#gsoOk(GsoType.TCPV4, seg.payloadLen)) return;
        this.stats.toTcp++;
        this.#to.tcp4(ip, seg, this.#tail);
        return;
      }
      case IpProto.Udp: {
        const udp = this.#udp;
        const e = udp.wrap(ip.buf, l4, l4len);
        if (e !== 0) return this.#drop(e);
        if (!this.#partial) {
          this.#whole();
          if (!udp.checksumOk4(ip.srcBits, ip.dstBits)) return this.#drop(WireError.BadChecksum);
        }
        if (!this.#gsoOk(GsoType.UDP_L4, udp.payloadLen)) return;
        if (this.#gsoSize === 0 && udp.dstPort === DHCP_SERVER_PORT) {
          this.#whole();
          if (this.#to.dhcp(this.#ctx, eth, ip, udp) !== 0) {
            this.stats.toServices++;
            return;
          }
        }
        this.stats.toUdp++;
        this.#to.udp4(ip, udp, this.#gsoSize, this.#tail);
        return;
      }
      default:
        this.stats.dropUnhandled++;
    }
  }

  #ipv6(eth: EthFrame): void {
    const ip = this.#ip6;
    const err = ip.wrap(eth.buf, eth.payloadOffset, eth.payloadLen);
    if (err !== 0) return this.#drop(err);
    // Extension headers may reach past the bytes in the slot.
    if (ip.nextHeader !== IpProto.Tcp && ip.nextHeader !== IpProto.Udp) this.#whole();
    const up = this.#upper;
    const e = ip.findUpper(up);
    if (e !== 0) return this.#drop(e);
    switch (up.proto) {
      case IpProto.Icmp6: {
        if (!this.#noGso()) return;
        const icmp = this.#icmp6;
        const e2 = icmp.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        const t = icmp.type;
        if (t >= Icmp6Type.RouterSolicit && t <= Icmp6Type.NeighborAdvert) {
          if (this.#to.ndp(this.#ctx, eth, ip, icmp) === 0) this.stats.dropUnhandled++;
          else this.stats.toServices++;
          return;
        }
        if (t !== Icmp6Type.EchoRequest) {
          this.stats.dropUnhandled++;
          return;
        }
        if (!icmp.checksumOk(ip.buf, ip.srcOffset, ip.dstOffset)) {
          return this.#drop(WireError.BadChecksum);
        }
        this.stats.toPing++;
        this.#to.ping6(ip, icmp);
        return;
      }
      case IpProto.Tcp: {
        const seg = this.#tcp;
        const e2 = seg.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        if (!this.#partial) {
          this.#whole();
          if (!seg.checksumOk6(ip.buf, ip.srcOffset, ip.dstOffset)) {
            return this.#drop(WireError.BadChecksum);
          }
        }
        if (!this.#gsoOk(GsoType.TCPV6, seg.payloadLen)) return;
        this.stats.toTcp++;
        this.#to.tcp6(ip, seg, up.offset, this.#tail);
        return;
      }
      case IpProto.Udp: {
        const udp = this.#udp;
        const e2 = udp.wrap(ip.buf, up.offset, up.len);
        if (e2 !== 0) return this.#drop(e2);
        if (!this.#partial) {
          this.#whole();
          if (!udp.checksumOk6(ip.buf, ip.srcOffset, ip.dstOffset)) {
            return this.#drop(WireError.BadChecksum);
          }
        }
        if (!this.#gsoOk(GsoType.UDP_L4, udp.payloadLen)) return;
        if (this.#gsoSize === 0 && udp.dstPort === DHCP6_SERVER_PORT) {
          this.#whole();
          if (this.#to.dhcpv6(this.#ctx, eth, ip, udp) !== 0) {
            this.stats.toServices++;
            return;
          }
        }
        this.stats.toUdp++;
        this.#to.udp6(ip, udp, up.offset, this.#gsoSize, this.#tail);
        return;
      }
      default:
        this.stats.dropUnhandled++;
    }
  }
}
