/**
 * DHCPv4 server (RFC 2131) for the one guest: it always hands out the
 * guest's configured address, {@linkcode GuestNet4.addr}, forever.
 *
 * ## Theory of operation
 *
 * There is exactly one client and one address, so there is no pool and no
 * lease table: every DISCOVER gets an OFFER of the address, and a REQUEST is
 * acknowledged exactly when it asks for that address. The lease is infinite
 * (0xffffffff), as pasta's is: the guest never has to renew, and if it does,
 * the answer is the same.
 *
 * **Messages** (from the guest, BOOTREQUEST on UDP port 67):
 * - DISCOVER → OFFER with `yiaddr` = the address.
 * - REQUEST → ACK if the address asked for — the requested-address option 50
 *   (SELECTING, INIT-REBOOT) or else `ciaddr` (RENEWING, REBINDING) — is the
 *   guest's address, else NAK. A REQUEST naming another server in option 54
 *   is the client declining tapir's offer for someone else's (RFC 2131
 *   §3.1 step 4, §4.3.2): no reply.
 * - INFORM → ACK with the configuration but no `yiaddr` and no lease time
 *   (§4.3.5).
 * - RELEASE, DECLINE → no reply: there is nothing to give back or to mark.
 * - BOOTREPLY messages, BOOTP (no message type), relayed messages (`giaddr`
 *   set: tapir's link has no relays) and non-Ethernet hardware types are
 *   ignored. A message that breaks the format (cut off, an option running past
 *   the end, an option of the wrong size) is dropped as `malformed`.
 *
 * **Options** of OFFER and ACK, in `dhcpEmit`'s order: message type (53), the
 * client identifier echoed (61, RFC 6842), server identifier (54) = the
 * gateway address, lease time (51, not in the ACK of an INFORM), subnet mask
 * (1), router (3) = the gateway, DNS servers (6) if any, domain search (119,
 * RFC 3397) if any, interface MTU (26) when the MTU fits DHCP's 16-bit field
 * (capped at 65535) and is at least 68, the IPv4 minimum, and the boot file
 * name (67) with `--dhcp-bootfile` (for network boot: iPXE takes it as the
 * URL of its script). A NAK carries only
 * the message type, the client identifier and the server identifier. Should
 * the reply exceed what the client accepts (576 bytes of IP datagram, or its
 * option 57), the search list is left out, then the boot file.
 *
 * **Addressing** (§4.1): from the gateway address and tapir's MAC, UDP port
 * 67 to 68. A NAK, a reply to a client without an address (`ciaddr` 0) and a
 * reply to a client that set the BROADCAST flag go to 255.255.255.255 and
 * ff:ff:ff:ff:ff:ff — clients such as busybox udhcpc listen on a raw socket
 * and expect the broadcast while unconfigured. Otherwise the reply is unicast
 * to `ciaddr` at the client's hardware address (`chaddr`).
 *
 * The IP destination of a request is not checked: a broadcast, the gateway
 * (a unicast renewal) or any other address with port 67 reaches this server,
 * the only one on the link. The UDP checksum is the dispatcher's to check.
 * DHCP is a slow path: the request is parsed with `dhcpParse` (which
 * allocates); the reply is built in a repr owned by the service.
 *
 * With IPv4 off or the service switched off, or for any other UDP port,
 * datagrams pass.
 *
 * @module
 */

import { formatIp4 } from "../addr.ts";
import { logDebug, logEnabled, LogLevel } from "../log.ts";
import type { GuestNet, GuestNet4 } from "../net.ts";
import { u32ToIp4 } from "../net.ts";
import { checksumPseudo4 } from "../packet/checksum.ts";
import {
  BootpOp,
  DHCP_CLIENT_PORT,
  DHCP_FLAG_BROADCAST,
  DHCP_HTYPE_ETHERNET,
  DHCP_MESSAGE_TYPE_NAMES,
  DHCP_SERVER_PORT,
  dhcpEmit,
  dhcpEmitLen,
  DhcpMessage,
  DhcpMessageType,
  dhcpParse,
  type DhcpRepr,
  dhcpReprNew,
} from "../packet/dhcp.ts";
import { dnsNameWireLen } from "../packet/dnsname.ts";
import {
  ETH_ADDR_LEN,
  ETH_BROADCAST,
  ETH_HEADER_LEN,
  ethEmit,
  EtherType,
  type EthFrame,
} from "../packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, type Ip4Packet, ip4ReprNew } from "../packet/ip4.ts";
import { UDP_HEADER_LEN, udpEmit, type UdpPacket, udpReprNew } from "../packet/udp.ts";
import { bytesCopy, IpProto, isWireError, WireError } from "../packet/wire.ts";
import { TAP_HEADROOM } from "../tap/tap.ts";
import { macToString } from "./guest.ts";
import {
  type ServiceContext,
  type ServiceStats,
  serviceStatsNew,
  ServiceVerdict,
} from "./service.ts";

/** Options of the DHCP server. */
export interface DhcpServiceOptions {
  /** Answer DHCP at all (`--no-dhcp` turns it off). Default true. */
  readonly enabled?: boolean;
}

/** Drop reasons of the DHCP server. */
export type DhcpDropReason = "malformed";
/** Counters of the DHCP server. */
export type DhcpStats = ServiceStats<DhcpDropReason>;

/** Lease time offered: infinite. */
export const DHCP_LEASE_INFINITE = 0xffffffff;
/** Smallest MTU the interface MTU option may carry (RFC 2132 §5.1). */
export const DHCP_MIN_MTU = 68;
/** Largest MTU the 16-bit interface MTU option can carry. */
export const DHCP_MAX_MTU = 65535;
/** IP datagram size every DHCP client accepts (RFC 2131 §2). */
export const DHCP_MIN_CLIENT_DATAGRAM = 576;
/** IPv4 broadcast address 255.255.255.255. */
export const IP4_BROADCAST = 0xffffffff;

/** The DHCP server; see the module comment. */
export class DhcpService {
  /** Counters. */
  readonly stats: DhcpStats = serviceStatsNew<DhcpDropReason>(["malformed"]);
  /** Whether the server answers at all. */
  readonly enabled: boolean;

  readonly #msg = new DhcpMessage();
  readonly #req = dhcpReprNew();
  readonly #reply = dhcpReprNew();
  readonly #ip = ip4ReprNew();
  readonly #udp = udpReprNew();
  readonly #dstMac = new Uint8Array(ETH_ADDR_LEN);
  // The search list as given and its encodable names, recomputed when it changes.
  #searchFrom: readonly string[] | null = null;
  #search: string[] = [];

  /** A DHCP server with the given options. */
  constructor(opts: DhcpServiceOptions = {}) {
    this.enabled = opts.enabled ?? true;
  }

  /**
   * Handles the UDP datagram `udp` carried by `ip4` in `eth`. Datagrams to
   * port 67 are consumed; others pass. Returns Replied if a reply was queued
   * on `ctx.tap`.
   */
  input(ctx: ServiceContext, _eth: EthFrame, _ip4: Ip4Packet, udp: UdpPacket): ServiceVerdict {
    const net4 = ctx.net.ip4;
    if (!this.enabled || net4 === null || udp.dstPort !== DHCP_SERVER_PORT) {
      return ServiceVerdict.Pass;
    }
    this.stats.received++;
    const msg = this.#msg;
    const err = msg.wrap(udp.buf, udp.payloadOffset, udp.payloadLen);
    if (err === WireError.Unsupported) return this.#ignore(); // BOOTP: no magic cookie
    if (err !== 0) return this.#malformed();
    if (
      msg.op !== BootpOp.Request || msg.htype !== DHCP_HTYPE_ETHERNET ||
      msg.hlen !== ETH_ADDR_LEN ||
      msg.giaddr !== 0
    ) return this.#ignore();
    const req = dhcpParse(msg, this.#req);
    if (req === WireError.Unsupported) return this.#ignore(); // BOOTP: no message type
    if (isWireError(req)) return this.#malformed();

    let replyType: number;
    switch (req.messageType) {
      case DhcpMessageType.Discover:
        replyType = DhcpMessageType.Offer;
        break;
      case DhcpMessageType.Request: {
        if (req.serverId >= 0 && req.serverId !== net4.gateway) return this.#ignore();
        const asked = req.requestedIp >= 0 ? req.requestedIp : req.ciaddr;
        replyType = asked === net4.addr ? DhcpMessageType.Ack : DhcpMessageType.Nak;
        break;
      }
      case DhcpMessageType.Inform:
        replyType = DhcpMessageType.Ack;
        break;
      default: // RELEASE, DECLINE, and server messages a client has no business sending
        return this.#ignore();
    }
    this.#send(ctx, net4, req, replyType);
    this.stats.sent++;
    return ServiceVerdict.Replied;
  }

  #ignore(): ServiceVerdict {
    this.stats.ignored++;
    return ServiceVerdict.Ignored;
  }

  #malformed(): ServiceVerdict {
    this.stats.drop.malformed++;
    return ServiceVerdict.Dropped;
  }

  /** The search names that can be encoded (configuration normally guarantees all). */
  #searchList(net: GuestNet): string[] {
    if (this.#searchFrom !== net.search) {
      this.#searchFrom = net.search;
      this.#search = net.search.filter((n) => dnsNameWireLen(n) >= 0);
    }
    return this.#search;
  }

  /** Fills the reply repr for `req` with message type `type`. */
  #fill(net: GuestNet, net4: GuestNet4, req: DhcpRepr, type: number): DhcpRepr {
    const r = this.#reply;
    const isInform = req.messageType === DhcpMessageType.Inform;
    r.op = BootpOp.Reply;
    r.htype = DHCP_HTYPE_ETHERNET;
    r.hlen = ETH_ADDR_LEN;
    r.hops = 0;
    r.xid = req.xid;
    r.secs = 0;
    r.flags = req.flags & DHCP_FLAG_BROADCAST;
    // RFC 2131 Table 3: ciaddr is echoed in an ACK, zero in OFFER and NAK.
    r.ciaddr = type === DhcpMessageType.Ack ? req.ciaddr : 0;
    r.yiaddr = type === DhcpMessageType.Nak || isInform ? 0 : net4.addr;
    r.siaddr = 0;
    r.giaddr = 0;
    bytesCopy(r.chaddr, 0, req.chaddr, 0, r.chaddr.length);
    r.messageType = type;
    r.clientId = req.clientId;
    r.serverId = net4.gateway;
    const config = type !== DhcpMessageType.Nak;
    r.leaseTime = config && !isInform ? DHCP_LEASE_INFINITE : -1;
    r.subnetMask = config ? prefixMask(net4.prefixLen) : -1;
    r.routers.length = 0;
    r.dnsServers.length = 0;
    r.domainSearch = [];
    if (config) {
      r.routers.push(net4.gateway);
      for (const d of net4.dns) r.dnsServers.push(d);
      r.domainSearch = this.#searchList(net);
    }
    r.mtu = config && net.mtu >= DHCP_MIN_MTU ? Math.min(net.mtu, DHCP_MAX_MTU) : -1;
    r.bootfile = config ? net.bootfile : "";
    return r;
  }

  /** Queues the reply of type `type` to `req`; see the module comment for its addressing. */
  #send(ctx: ServiceContext, net4: GuestNet4, req: DhcpRepr, type: number): void {
    const { net, tap } = ctx;
    const r = this.#fill(net, net4, req, type);
    const headers = IP4_HEADER_LEN + UDP_HEADER_LEN;
    const clientMax = Math.max(DHCP_MIN_CLIENT_DATAGRAM, req.maxMessageSize);
    const limit = Math.min(clientMax, tap.maxFrame - ETH_HEADER_LEN);
    if (headers + dhcpEmitLen(r) > limit) r.domainSearch = [];
    if (headers + dhcpEmitLen(r) > limit) r.bootfile = "";

    const broadcast = type === DhcpMessageType.Nak || req.ciaddr === 0 ||
      (req.flags & DHCP_FLAG_BROADCAST) !== 0;
    const dst = broadcast ? IP4_BROADCAST : req.ciaddr;
    const dstMac = this.#dstMac;
    bytesCopy(dstMac, 0, broadcast ? ETH_BROADCAST : req.chaddr, 0, ETH_ADDR_LEN);

    const frame = tap.take();
    const slot = tap.slot(frame);
    const ipOff = TAP_HEADROOM + ETH_HEADER_LEN;
    const udpOff = ipOff + IP4_HEADER_LEN;
    const dhcpLen = dhcpEmit(slot, udpOff + UDP_HEADER_LEN, r);
    const udpLen = UDP_HEADER_LEN + dhcpLen;
    const u = this.#udp;
    u.srcPort = DHCP_SERVER_PORT;
    u.dstPort = DHCP_CLIENT_PORT;
    u.payloadLen = dhcpLen;
    udpEmit(slot, udpOff, u, checksumPseudo4(net4.gateway, dst, IpProto.Udp, udpLen));
    const ip = this.#ip;
    ip.src = net4.gateway;
    ip.dst = dst;
    ip.proto = IpProto.Udp;
    ip.ttl = 64;
    ip.tos = 0;
    ip.ident = 0;
    ip.dontFragment = false;
    ip.payloadLen = udpLen;
    ip4Emit(slot, ipOff, ip);
    ethEmit(slot, TAP_HEADROOM, dstMac, net.ourMac, EtherType.Ipv4);
    tap.commit(frame, ETH_HEADER_LEN + IP4_HEADER_LEN + udpLen);

    if (logEnabled(LogLevel.debug)) {
      const names = DHCP_MESSAGE_TYPE_NAMES as Record<number, string>;
      logDebug(
        `DHCP: ${names[req.messageType]} from ${macToString(req.chaddr)} -> ${names[type]}` +
          (r.yiaddr !== 0 ? ` ${formatIp4(u32ToIp4(r.yiaddr))}` : "") +
          ` to ${formatIp4(u32ToIp4(dst))}`,
      );
    }
  }
}

/** The subnet mask of a prefix length, as a u32. */
function prefixMask(prefixLen: number): number {
  return prefixLen <= 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}
