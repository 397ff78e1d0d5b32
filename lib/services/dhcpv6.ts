/**
 * DHCPv6 server (RFC 8415) for the one guest: it assigns the guest's
 * configured address, {@linkcode GuestNet6.addr}, forever, and tells it the
 * DNS servers and search list.
 *
 * ## Theory of operation
 *
 * As with DHCPv4 there is one client and one address, so there is no binding
 * table: every IA_NA the client sends gets that address back, with its IAID
 * echoed, preferred and valid lifetimes infinite and T1/T2 0 (the client
 * picks its own renewal times; with infinite lifetimes it never needs them).
 * The server's DUID is a DUID-LL (RFC 8415 §11.4) built from tapir's MAC, so
 * it is stable across restarts without any stored state.
 *
 * **Messages** (client to server, UDP port 547):
 * - SOLICIT → ADVERTISE with PREFERENCE 255, which tells the client to stop
 *   waiting for other servers (§18.2.1), or, if the client included
 *   RAPID_COMMIT, → REPLY with RAPID_COMMIT (§18.3.1).
 * - REQUEST, RENEW, REBIND → REPLY with the address in each IA_NA. RENEW and
 *   REBIND also list any other address the client had in the IA, with
 *   lifetimes 0, so it stops using it (§18.3.4, §18.3.5).
 * - CONFIRM → REPLY with status Success if every address the client lists is
 *   on the guest's prefix, NotOnLink otherwise; no reply if it lists none
 *   (§18.3.3).
 * - INFORMATION-REQUEST → REPLY with the configuration and no IA.
 * - RELEASE, DECLINE → REPLY with status Success (§18.3.7, §18.3.8).
 * - A SOLICIT, REQUEST, RENEW or REBIND without any IA_NA gets status
 *   NoAddrsAvail instead of addresses: tapir delegates no prefixes and has no
 *   temporary addresses.
 * Every reply carries the client's CLIENTID and tapir's SERVERID; ADVERTISE
 * and REPLY to SOLICIT, REQUEST, RENEW, REBIND and INFORMATION-REQUEST also
 * carry DNS_SERVERS (RFC 3646) and DOMAIN_LIST when those are non-empty,
 * whether or not the client's ORO asked (RFC 8415 §18.3 allows it), and
 * with `--dhcp-bootfile` OPT_BOOTFILE_URL (59), only when the ORO asks for
 * it (RFC 5970 §3.1).
 *
 * **Refused** (dropped, by reason): a message that breaks the format at any
 * level `dhcp6Parse` checks (`malformed`, also a source address a reply
 * cannot go to); a message other than INFORMATION-REQUEST without CLIENTID
 * (`clientId`, §16); a REQUEST, RENEW, RELEASE or DECLINE whose SERVERID is
 * absent or not tapir's, a SOLICIT, CONFIRM or REBIND that has one, or an
 * INFORMATION-REQUEST with someone else's (`serverId`, §16). Server messages
 * (ADVERTISE, REPLY, RECONFIGURE) and relay messages are ignored.
 *
 * **Addressing**: from {@linkcode GuestNet6.ourLinkLocal} port 547 to the
 * client's source address port 546, at the client's MAC (the frame's source),
 * from tapir's MAC. The UDP checksum of requests is the dispatcher's to check.
 * DHCPv6 is a slow path: requests are parsed with `dhcp6Parse` and replies
 * built from small objects, for clarity.
 *
 * With IPv6 off or the service switched off, or for any other UDP port,
 * datagrams pass.
 *
 * @module
 */

import { formatIp6, isIp6Multicast, isIp6Unspecified } from "../addr.ts";
import { logDebug, logEnabled, LogLevel } from "../log.ts";
import type { GuestNet, GuestNet6 } from "../net.ts";
import { checksumPseudo6 } from "../packet/checksum.ts";
import {
  DHCP6_CLIENT_PORT,
  DHCP6_HWTYPE_ETHERNET,
  DHCP6_INFINITY,
  DHCP6_MESSAGE_TYPE_NAMES,
  DHCP6_SERVER_PORT,
  dhcp6DuidLlEmit,
  dhcp6Emit,
  dhcp6EmitLen,
  dhcp6IaAddrNew,
  type Dhcp6IaNa,
  dhcp6IaNaNew,
  Dhcp6Message,
  Dhcp6MessageType,
  Dhcp6Option,
  dhcp6Parse,
  type Dhcp6Repr,
  dhcp6ReprNew,
  Dhcp6Status,
} from "../packet/dhcpv6.ts";
import { dnsNameWireLen } from "../packet/dnsname.ts";
import { ETH_ADDR_LEN, ETH_HEADER_LEN, ethEmit, EtherType, type EthFrame } from "../packet/eth.ts";
import {
  IP6_ADDR_LEN,
  IP6_HEADER_LEN,
  ip6Emit,
  type Ip6Packet,
  ip6ReprNew,
} from "../packet/ip6.ts";
import { UDP_HEADER_LEN, udpEmit, type UdpPacket, udpReprNew } from "../packet/udp.ts";
import { bytesCopy, bytesEqual, IpProto, isWireError, WireError } from "../packet/wire.ts";
import { TAP_HEADROOM } from "../tap/tap.ts";
import {
  type ServiceContext,
  type ServiceStats,
  serviceStatsNew,
  ServiceVerdict,
} from "./service.ts";
import { IP6_MIN_MTU } from "./ndp.ts";

/** Options of the DHCPv6 server. */
export interface Dhcp6ServiceOptions {
  /** Answer DHCPv6 at all (`--no-dhcpv6` turns it off). Default true. */
  readonly enabled?: boolean;
}

/** Drop reasons of the DHCPv6 server. */
export type Dhcp6DropReason = "malformed" | "clientId" | "serverId";
/** Counters of the DHCPv6 server. */
export type Dhcp6Stats = ServiceStats<Dhcp6DropReason>;

/** PREFERENCE of tapir's ADVERTISE: the highest, so clients take it at once. */
export const DHCP6_PREFERENCE_MAX = 255;
/** Hop limit of DHCPv6 replies. */
export const DHCP6_REPLY_HOP_LIMIT = 64;

/** What a message type requires of the SERVERID option (RFC 8415 §16). */
const ServerIdRule = { MustBeAbsent: 0, MustBeOurs: 1, OursIfPresent: 2 } as const;
type ServerIdRule = (typeof ServerIdRule)[keyof typeof ServerIdRule];

/** The rule for each client message type; types not listed are not for a server. */
const SERVER_ID_RULES: Partial<Record<number, ServerIdRule>> = {
  [Dhcp6MessageType.Solicit]: ServerIdRule.MustBeAbsent,
  [Dhcp6MessageType.Request]: ServerIdRule.MustBeOurs,
  [Dhcp6MessageType.Confirm]: ServerIdRule.MustBeAbsent,
  [Dhcp6MessageType.Renew]: ServerIdRule.MustBeOurs,
  [Dhcp6MessageType.Rebind]: ServerIdRule.MustBeAbsent,
  [Dhcp6MessageType.Release]: ServerIdRule.MustBeOurs,
  [Dhcp6MessageType.Decline]: ServerIdRule.MustBeOurs,
  [Dhcp6MessageType.InformationRequest]: ServerIdRule.OursIfPresent,
};

/** The DHCPv6 server; see the module comment. */
export class Dhcp6Service {
  /** Counters. */
  readonly stats: Dhcp6Stats = serviceStatsNew<Dhcp6DropReason>([
    "malformed",
    "clientId",
    "serverId",
  ]);
  /** Whether the server answers at all. */
  readonly enabled: boolean;

  readonly #msg = new Dhcp6Message();
  readonly #req = dhcp6ReprNew();
  readonly #reply = dhcp6ReprNew();
  readonly #ip = ip6ReprNew();
  readonly #udp = udpReprNew();
  readonly #dstMac = new Uint8Array(ETH_ADDR_LEN);
  /** Our DUID-LL (type, hardware type, 6-byte MAC). */
  readonly #duid = new Uint8Array(4 + ETH_ADDR_LEN);
  #searchFrom: readonly string[] | null = null;
  #search: string[] = [];

  /** A DHCPv6 server with the given options. */
  constructor(opts: Dhcp6ServiceOptions = {}) {
    this.enabled = opts.enabled ?? true;
  }

  /**
   * Handles the UDP datagram `udp` carried by `ip6` in `eth`. Datagrams to
   * port 547 are consumed; others pass. Returns Replied if a reply was queued
   * on `ctx.tap`.
   */
  input(ctx: ServiceContext, eth: EthFrame, ip6: Ip6Packet, udp: UdpPacket): ServiceVerdict {
    const net6 = ctx.net.ip6;
    if (!this.enabled || net6 === null || udp.dstPort !== DHCP6_SERVER_PORT) {
      return ServiceVerdict.Pass;
    }
    const stats = this.stats;
    stats.received++;
    const msg = this.#msg;
    const err = msg.wrap(udp.buf, udp.payloadOffset, udp.payloadLen);
    if (err === WireError.Unsupported) return this.#ignore(); // relay message
    if (err !== 0) return this.#drop("malformed");
    const rule = SERVER_ID_RULES[msg.msgType];
    if (rule === undefined) return this.#ignore();
    if (isIp6Unspecified(ip6.buf, ip6.srcOffset) || isIp6Multicast(ip6.buf, ip6.srcOffset)) {
      return this.#drop("malformed");
    }
    const req = dhcp6Parse(msg, this.#req);
    if (isWireError(req)) return this.#drop("malformed");
    if (req.clientId === null && req.msgType !== Dhcp6MessageType.InformationRequest) {
      return this.#drop("clientId");
    }
    const duid = this.#duid;
    dhcp6DuidLlEmit(duid, 0, DHCP6_HWTYPE_ETHERNET, ctx.net.ourMac);
    const sid = req.serverId;
    const ours = sid !== null && sid.length === duid.length &&
      bytesEqual(sid, 0, duid, 0, duid.length);
    if (
      (rule === ServerIdRule.MustBeAbsent && sid !== null) ||
      (rule === ServerIdRule.MustBeOurs && !ours) ||
      (rule === ServerIdRule.OursIfPresent && sid !== null && !ours)
    ) return this.#drop("serverId");

    const r = this.#answer(ctx.net, net6, req);
    if (r === null) return this.#ignore();
    this.#send(ctx, net6, eth, ip6, r);
    stats.sent++;
    if (logEnabled(LogLevel.debug)) {
      const names = DHCP6_MESSAGE_TYPE_NAMES as Record<number, string>;
      logDebug(
        `DHCPv6: ${names[req.msgType]} from ${formatIp6(ip6.buf, ip6.srcOffset)} -> ` +
          names[r.msgType] + (r.iaNa.length > 0 ? ` ${formatIp6(net6.addr)}` : ""),
      );
    }
    return ServiceVerdict.Replied;
  }

  #ignore(): ServiceVerdict {
    this.stats.ignored++;
    return ServiceVerdict.Ignored;
  }

  #drop(reason: Dhcp6DropReason): ServiceVerdict {
    this.stats.drop[reason]++;
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

  /** The reply to the valid client message `req`, or null if it gets none. */
  #answer(net: GuestNet, net6: GuestNet6, req: Dhcp6Repr): Dhcp6Repr | null {
    const r = this.#reply;
    r.msgType = Dhcp6MessageType.Reply;
    r.transactionId = req.transactionId;
    r.clientId = req.clientId;
    r.serverId = this.#duid;
    r.elapsedTime = -1;
    r.oro = [];
    r.preference = -1;
    r.rapidCommit = false;
    r.iaNa = [];
    r.status = -1;
    r.statusMessage = "";
    r.dnsServers = [];
    r.domainList = [];
    r.bootfileUrl = "";
    let config = true;
    switch (req.msgType) {
      case Dhcp6MessageType.Solicit:
        if (req.rapidCommit) r.rapidCommit = true;
        else {
          r.msgType = Dhcp6MessageType.Advertise;
          r.preference = DHCP6_PREFERENCE_MAX;
        }
        assign(r, req, net6, false);
        break;
      case Dhcp6MessageType.Request:
        assign(r, req, net6, false);
        break;
      case Dhcp6MessageType.Renew:
      case Dhcp6MessageType.Rebind:
        assign(r, req, net6, true);
        break;
      case Dhcp6MessageType.Confirm: {
        let any = false;
        let onLink = true;
        for (const ia of req.iaNa) {
          for (const a of ia.addrs) {
            any = true;
            if (!samePrefix(a.addr, net6.addr, net6.prefixLen)) onLink = false;
          }
        }
        if (!any) return null;
        r.status = onLink ? Dhcp6Status.Success : Dhcp6Status.NotOnLink;
        r.statusMessage = onLink ? "addresses are on-link" : "addresses are not on this link";
        config = false;
        break;
      }
      case Dhcp6MessageType.Release:
      case Dhcp6MessageType.Decline:
        r.status = Dhcp6Status.Success;
        r.statusMessage = req.msgType === Dhcp6MessageType.Release ? "released" : "declined";
        config = false;
        break;
      default: // INFORMATION-REQUEST
        break;
    }
    if (config) {
      r.dnsServers = net6.dns.slice();
      r.domainList = this.#searchList(net);
      // RFC 5970 §3.1: only to a client that asked for it.
      if (req.oro.includes(Dhcp6Option.BootfileUrl)) r.bootfileUrl = net.bootfile;
    }
    return r;
  }

  /** Queues the reply `r` to the client that sent `ip6` in `eth`. */
  #send(ctx: ServiceContext, net6: GuestNet6, eth: EthFrame, ip6: Ip6Packet, r: Dhcp6Repr): void {
    const { net, tap } = ctx;
    // DHCPv6 relies on IP fragmentation for big messages; tapir's replies
    // stay within one packet, so the lists give way if they would not.
    const limit = Math.min(Math.max(IP6_MIN_MTU, net.mtu), tap.maxFrame - ETH_HEADER_LEN) -
      IP6_HEADER_LEN - UDP_HEADER_LEN;
    if (dhcp6EmitLen(r) > limit) r.domainList = [];
    if (dhcp6EmitLen(r) > limit) r.bootfileUrl = "";
    while (dhcp6EmitLen(r) > limit && r.dnsServers.length > 0) r.dnsServers.pop();

    const ip = this.#ip;
    bytesCopy(ip.src, 0, net6.ourLinkLocal, 0, IP6_ADDR_LEN);
    ip6.copySrc(ip.dst);
    eth.copySrc(this.#dstMac);

    const frame = tap.take();
    const slot = tap.slot(frame);
    const ipOff = TAP_HEADROOM + ETH_HEADER_LEN;
    const udpOff = ipOff + IP6_HEADER_LEN;
    const dhcpLen = dhcp6Emit(slot, udpOff + UDP_HEADER_LEN, r);
    const udpLen = UDP_HEADER_LEN + dhcpLen;
    const u = this.#udp;
    u.srcPort = DHCP6_SERVER_PORT;
    u.dstPort = DHCP6_CLIENT_PORT;
    u.payloadLen = dhcpLen;
    udpEmit(slot, udpOff, u, checksumPseudo6(ip.src, 0, ip.dst, 0, IpProto.Udp, udpLen));
    ip.nextHeader = IpProto.Udp;
    ip.hopLimit = DHCP6_REPLY_HOP_LIMIT;
    ip.trafficClass = 0;
    ip.flowLabel = 0;
    ip.payloadLen = udpLen;
    ip6Emit(slot, ipOff, ip);
    ethEmit(slot, TAP_HEADROOM, this.#dstMac, net.ourMac, EtherType.Ipv6);
    tap.commit(frame, ETH_HEADER_LEN + IP6_HEADER_LEN + udpLen);
  }
}

/**
 * Puts the guest's address into `r` for every IA_NA of `req` (IAID echoed,
 * lifetimes infinite, T1/T2 0). With `expireOthers`, the other addresses the
 * client listed follow with lifetimes 0. Without any IA_NA, `r` gets status
 * NoAddrsAvail instead.
 */
function assign(r: Dhcp6Repr, req: Dhcp6Repr, net6: GuestNet6, expireOthers: boolean): void {
  if (req.iaNa.length === 0) {
    r.status = Dhcp6Status.NoAddrsAvail;
    r.statusMessage = "only IA_NA is served";
    return;
  }
  for (const asked of req.iaNa) {
    const ia: Dhcp6IaNa = dhcp6IaNaNew(asked.iaid, 0, 0);
    ia.addrs.push(dhcp6IaAddrNew(net6.addr, DHCP6_INFINITY, DHCP6_INFINITY));
    if (expireOthers) {
      for (const a of asked.addrs) {
        if (!bytesEqual(a.addr, 0, net6.addr, 0, IP6_ADDR_LEN)) {
          ia.addrs.push(dhcp6IaAddrNew(a.addr, 0, 0));
        }
      }
    }
    r.iaNa.push(ia);
  }
}

/** True if the first `prefixLen` bits of `a` and `b` are equal. */
function samePrefix(a: Uint8Array, b: Uint8Array, prefixLen: number): boolean {
  for (let i = 0; i < IP6_ADDR_LEN; i++) {
    const bits = prefixLen - 8 * i;
    if (bits <= 0) return true;
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((a[i] ^ b[i]) & mask) !== 0) return false;
  }
  return true;
}
