/**
 * ICMP and ICMPv6 echo ("ping") through the host's ping sockets.
 *
 * An unprivileged process can send echo requests through a `SOCK_DGRAM`
 * socket of protocol ICMP/ICMPv6 (a "ping socket", allowed for the groups
 * in `net.ipv4.ping_group_range`). The kernel picks the echo identifier
 * (the socket's "port"), fills in the checksum and delivers only the echo
 * replies that match, without IP header.
 *
 * One flow per (guest address, echo id, destination) — type PING4 or PING6
 * in the flow table. Side 0 is the guest (TAP): its address and echo id, and
 * the address it pinged. Side 1 is the host (HOST): the address the socket
 * sends to — the destination, or host loopback when the guest pinged the
 * gateway (see `natFromTap4`/`natFromTap6`). A reply is sent back to the
 * guest from the address it pinged, with the guest's own identifier.
 *
 * A flow idles out after {@linkcode PING_IDLE_MS} without requests. With
 * `--loopback-only`, a request to anything but host loopback opens no socket:
 * the guest gets "administratively prohibited" and a counter records it.
 *
 * @module
 */

import { OutboundBind } from "./outbound.ts";
import { logDebug, logWarn } from "../log.ts";
import { FlowSide, flowSidx, type FlowTable, FlowType, Pif, sidxFlow } from "../flow/table.ts";
import { natFromTap4, natFromTap6 } from "../fwd.ts";
import type { Loop } from "../loop.ts";
import type { GuestNet } from "../net.ts";
import { checksumUpdate16, icmp6ChecksumFill } from "../packet/checksum.ts";
import { type IcmpPacket, IcmpType, IcmpUnreachCode } from "../packet/icmp.ts";
import { type Icmp6Packet, Icmp6Type } from "../packet/icmp6.ts";
import type { Ip4Packet } from "../packet/ip4.ts";
import { IP6_HEADER_LEN, type Ip6Packet } from "../packet/ip6.ts";
import { get16, IpProto, set16 } from "../packet/wire.ts";
import * as sys from "../sys/mod.ts";
import { TAP_HEADROOM, type TapSender } from "../tap/tap.ts";
import { type GuestHeaders, icmpErrorToGuest4, icmpErrorToGuest6, L4_OFF4, L4_OFF6 } from "./ip.ts";

/** A ping flow idles out after this long without a request from the guest. */
export const PING_IDLE_MS = 60_000;

/** ICMPv6 destination-unreachable code: communication administratively prohibited. */
const ICMP6_UNREACH_ADMIN = 1;

/** Per-flow data of PING4 and PING6 flows. */
interface PingFlow {
  /** The flow's index in the table. */
  readonly index: number;
  /** The ping socket. */
  readonly fd: number;
  /** When the guest last sent a request (performance.now() ms). */
  lastMs: number;
}

/** Counters of echo translation. */
export interface PingStats {
  /** Echo requests from the guest forwarded to a host socket. */
  requests: number;
  /** Echo replies delivered to the guest. */
  replies: number;
  /** Requests refused by `--loopback-only`. */
  refused: number;
  /** Requests the ping socket refused (send failed). */
  dropSendFailed: number;
  /** Requests that found the flow table full. */
  dropTableFull: number;
  /** Requests for which no ping socket could be opened (not permitted). */
  dropNoSocket: number;
  /** Flows that idled out. */
  expired: number;
}

/** Echo translation for both families; see the module comment. */
export class Ping {
  /** Counters. */
  readonly stats: PingStats = {
    requests: 0,
    replies: 0,
    refused: 0,
    dropSendFailed: 0,
    dropTableFull: 0,
    dropNoSocket: 0,
    expired: 0,
  };
  readonly #loop: Loop;
  readonly #flows: FlowTable;
  readonly #net: GuestNet;
  readonly #hdrs: GuestHeaders;
  readonly #tap: TapSender;
  readonly #fdType: number;
  /** Source binding of outbound sockets (`-o`). */
  readonly #outbound: OutboundBind;
  readonly #key = new FlowSide();
  readonly #tgt = new FlowSide();
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #addrs = new Uint8Array(32);
  readonly #target6 = new Uint8Array(16);
  #warnedPermission = false;

  /** Registers with the reactor and the flow table. */
  constructor(loop: Loop, flows: FlowTable, net: GuestNet, hdrs: GuestHeaders, tap: TapSender) {
    this.#loop = loop;
    this.#flows = flows;
    this.#net = net;
    this.#hdrs = hdrs;
    this.#tap = tap;
    this.#outbound = new OutboundBind(net.outbound4, net.outbound6);
    this.#fdType = loop.defineType("ping", (index) => this.#readable(index));
    const timer = (index: number, now: number) => this.#timer(index, now);
    const guestGone = (index: number) => this.#end(index);
    flows.setHandlers(FlowType.PING4, { timer, guestGone });
    flows.setHandlers(FlowType.PING6, { timer, guestGone });
  }

  /** An ICMP echo request from the guest (checksum already verified). */
  request4(ip: Ip4Packet, icmp: IcmpPacket): void {
    const key = this.#key.set4(Pif.TAP, ip.srcBits, icmp.ident, ip.dstBits, 0);
    let sidx = this.#flows.lookup(IpProto.Icmp, key);
    if (sidx < 0) {
      const target = natFromTap4(this.#net, ip.dst);
      if (target < 0) {
        this.stats.refused++;
        icmpErrorToGuest4(
          this.#tap,
          this.#hdrs,
          ip.dst,
          ip,
          IcmpType.DestUnreachable,
          IcmpUnreachCode.AdminProhibited,
        );
        return;
      }
      const index = this.#open(FlowType.PING4, key, this.#tgt.set4(Pif.HOST, target, 0, 0, 0));
      if (index < 0) return;
      sidx = flowSidx(index, 0);
    }
    const flow = this.#flows.data<PingFlow>(sidxFlow(sidx), FlowType.PING4);
    const addrLen = sys.sockaddrIn4(this.#sa, this.#hostAddr4(sidx), 0);
    this.#send(flow, icmp.buf, icmp.off, icmp.len, addrLen);
  }

  /** An ICMPv6 echo request from the guest (checksum already verified). */
  request6(ip: Ip6Packet, icmp: Icmp6Packet): void {
    const key = this.#key.set6(Pif.TAP, ip.buf, ip.srcOffset, icmp.ident, ip.buf, ip.dstOffset, 0);
    let sidx = this.#flows.lookup(IpProto.Icmp6, key);
    if (sidx < 0) {
      if (!natFromTap6(this.#net, ip.buf, ip.dstOffset, this.#target6)) {
        this.stats.refused++;
        icmpErrorToGuest6(
          this.#tap,
          this.#hdrs,
          ip.buf,
          ip.dstOffset,
          ip,
          IpProto.Icmp6,
          icmp.off,
          Icmp6Type.DestUnreachable,
          ICMP6_UNREACH_ADMIN,
        );
        return;
      }
      const tgt = this.#tgt.set6(Pif.HOST, this.#target6, 0, 0, this.#target6, 0, 0);
      tgt.oaddr.fill(0);
      const index = this.#open(FlowType.PING6, key, tgt);
      if (index < 0) return;
      sidx = flowSidx(index, 0);
    }
    const flow = this.#flows.data<PingFlow>(sidxFlow(sidx), FlowType.PING6);
    this.#flows.eaddrCopy(sidx ^ 1, this.#addrs, 0);
    const addrLen = sys.sockaddrIn6(this.#sa, this.#addrs, 0);
    this.#send(flow, icmp.buf, icmp.off, icmp.len, addrLen);
  }

  #hostAddr4(sidx: number): Uint8Array {
    this.#flows.eaddrCopy(sidx ^ 1, this.#addrs, 0);
    return this.#addrs.subarray(12, 16);
  }

  #send(flow: PingFlow, buf: Uint8Array, off: number, len: number, addrLen: number): void {
    flow.lastMs = performance.now();
    const rc = sys.sendAt(flow.fd, buf, off, len, sys.MSG_DONTWAIT, this.#sa, addrLen);
    if (rc < 0) this.stats.dropSendFailed++;
    else {
      this.stats.requests++;
      this.#flows.bytesFrom[flow.index * 2] += len;
    }
  }

  /** Creates the flow and its socket; returns the flow index, or -1 (counted). */
  #open(type: FlowType, ini: FlowSide, tgt: FlowSide): number {
    const flows = this.#flows;
    const index = flows.alloc();
    if (index < 0) {
      this.stats.dropTableFull++;
      return -1;
    }
    flows.setIni(index, ini);
    flows.setTgt(index, tgt);
    const v6 = type === FlowType.PING6;
    const fd = sys.socket(
      v6 ? sys.AF_INET6 : sys.AF_INET,
      sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
      v6 ? sys.IPPROTO_ICMPV6 : sys.IPPROTO_ICMP,
    );
    if (fd < 0) {
      flows.cancel(index);
      this.stats.dropNoSocket++;
      if (!this.#warnedPermission) {
        this.#warnedPermission = true;
        logWarn(
          `ping: cannot open a ping socket (${sys.errnoName(-fd)}); echo requests are dropped. ` +
            "Ping sockets need the group in net.ipv4.ping_group_range.",
        );
      }
      return -1;
    }
    if (this.#outbound.apply(fd, v6) < 0) {
      sys.close(fd);
      flows.cancel(index);
      this.stats.dropNoSocket++;
      return -1;
    }
    flows.setType(index, type, { index, fd, lastMs: performance.now() } satisfies PingFlow);
    flows.hashInsert(flowSidx(index, 0));
    sys.sysCheck(this.#loop.add(fd, sys.EPOLLIN, this.#fdType, index), "epoll_ctl ping");
    flows.activate(index);
    return index;
  }

  /** The socket has replies: turn each into a frame to the guest. */
  #readable(index: number): void {
    const flows = this.#flows;
    const type = flows.type(index);
    const v6 = type === FlowType.PING6;
    const flow = flows.data<PingFlow>(index, type);
    const guest = flowSidx(index, 0);
    const l4 = v6 ? L4_OFF6 : L4_OFF4;
    const tap = this.#tap;
    // One slot, taken once: a reply that is not ours leaves it for the next.
    let frame = -1;
    for (;;) {
      if (frame < 0) frame = tap.take();
      const slot = tap.slot(frame);
      const n = sys.recvAt(flow.fd, slot, l4, tap.maxFrame + TAP_HEADROOM - l4, sys.MSG_DONTWAIT);
      if (n < 8) break; // EAGAIN, an error, or a runt the kernel would not deliver
      if (slot[l4] !== (v6 ? Icmp6Type.EchoReply : IcmpType.EchoReply)) continue;
      // Put back the guest's identifier; the kernel used the socket's.
      const ident = flows.eport(guest);
      const cksumAt = l4 + 2;
      if (v6) {
        // ICMPv6's checksum covers addresses the kernel did not know: recompute.
        set16(slot, l4 + 4, ident);
        flows.oaddrCopy(guest, this.#addrs, 0);
        flows.eaddrCopy(guest, this.#addrs, 16);
        this.#hdrs.emit6(slot, TAP_HEADROOM, this.#addrs, 0, this.#addrs, 16, IpProto.Icmp6, n);
        set16(slot, cksumAt, 0);
        icmp6Fill(slot, l4, n);
      } else {
        set16(slot, cksumAt, checksumUpdate16(get16(slot, cksumAt), get16(slot, l4 + 4), ident));
        set16(slot, l4 + 4, ident);
        const src = flows.oaddrWord(guest, 3);
        const dst = flows.eaddrWord(guest, 3);
        this.#hdrs.emit4(slot, TAP_HEADROOM, src, dst, IpProto.Icmp, n);
      }
      tap.commit(frame, l4 - TAP_HEADROOM + n);
      frame = -1;
      this.stats.replies++;
      flows.bytesFrom[index * 2 + 1] += n;
    }
  }

  #timer(index: number, now: number): boolean {
    const flow = this.#flows.data<PingFlow>(index, this.#flows.type(index));
    return now - flow.lastMs >= (this.#net.pingIdleMs ?? PING_IDLE_MS) && this.#end(index);
  }

  /** Closes the flow's socket; true: free it. */
  #end(index: number): boolean {
    const flow = this.#flows.data<PingFlow>(index, this.#flows.type(index));
    this.#loop.remove(flow.fd);
    sys.close(flow.fd);
    this.stats.expired++;
    return true;
  }
}

/** Fills the ICMPv6 checksum of the message at `l4`, whose IPv6 header precedes it. */
function icmp6Fill(slot: Uint8Array, l4: number, len: number): void {
  const ip = l4 - IP6_HEADER_LEN;
  icmp6ChecksumFill(slot, l4, len, slot, ip + 8, ip + 24);
}

const PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range";

/**
 * As root, lets our group open ping sockets by widening
 * `net.ipv4.ping_group_range` to include it (the host side's namespace).
 */
export function allowPingSockets(): void {
  // Only real root can; mapped root in a user namespace fails the write below.
  if (Deno.uid() !== 0) return;
  const gid = Deno.gid() ?? 0;
  try {
    const [lo, hi] = Deno.readTextFileSync(PING_GROUP_RANGE).trim().split(/\s+/).map(Number);
    if (lo <= gid && gid <= hi) return;
    const range = lo > hi ? `${gid} ${gid}` : `${Math.min(lo, gid)} ${Math.max(hi, gid)}`;
    Deno.writeTextFileSync(PING_GROUP_RANGE, range);
    logDebug(`ping_group_range set to ${range}`);
  } catch (err) {
    logDebug(`cannot widen ping_group_range: ${(err as Error).message}`);
  }
}
