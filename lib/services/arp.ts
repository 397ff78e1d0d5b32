/**
 * ARP responder (RFC 826): tapir answers every ARP request of the guest with
 * its own MAC, except for the guest's own address.
 *
 * ## Theory of operation
 *
 * To the guest, tapir is the whole link: the gateway, and every other host
 * the guest may think is on-link. Answering every target means any route the
 * guest sets up works (a second gateway, an on-link route to a wider prefix,
 * a static neighbour), because whatever next hop it picks resolves to tapir,
 * and tapir routes by IP address, not by MAC.
 *
 * Left unanswered (consumed, counted as ignored):
 * - requests for the guest's own address ({@linkcode GuestNet4.addr}): an
 *   answer would make the guest's duplicate-address check fail;
 * - gratuitous ARP (sender IP equals target IP): an announcement, not a
 *   question;
 * - ARP probes (sender IP 0.0.0.0, RFC 5227 §2.1.1): the guest is checking
 *   that an address it wants to use is free, and an answer would tell it the
 *   address is taken;
 * - ARP replies and unknown operations;
 * - ARP for anything but Ethernet/IPv4.
 *
 * A truncated ARP packet is dropped (`dropped.truncated`). With IPv4 off or
 * the service switched off, every ARP frame passes ({@linkcode ServiceVerdict.Pass}).
 *
 * The reply goes to the requester's hardware address (RFC 826: "send the
 * packet to the (new) target hardware address"), with tapir's MAC as sender
 * and the requested address as sender IP. It is built from a repr owned by
 * the service: no allocation per request.
 *
 * @module
 */

import { formatIp4 } from "../addr.ts";
import { logEnabled, LogLevel, logTrace } from "../log.ts";
import type { GuestNet4 } from "../net.ts";
import { u32ToIp4 } from "../net.ts";
import { ARP_LEN, arpEmit, ArpOp, ArpPacket, arpReprNew } from "../packet/arp.ts";
import { ETH_ADDR_LEN, ETH_HEADER_LEN, ethEmit, EtherType, type EthFrame } from "../packet/eth.ts";
import { bytesCopy, WireError } from "../packet/wire.ts";
import { TAP_HEADROOM } from "../tap/tap.ts";
import {
  type ServiceContext,
  type ServiceStats,
  serviceStatsNew,
  ServiceVerdict,
} from "./service.ts";

/** Options of the ARP responder. */
export interface ArpOptions {
  /** Answer ARP at all (default true). */
  readonly enabled?: boolean;
}

/** Drop reasons of the ARP responder. */
export type ArpDropReason = "truncated";
/** Counters of the ARP responder. */
export type ArpStats = ServiceStats<ArpDropReason>;

/** Length of an ARP reply frame (before padding to the Ethernet minimum). */
export const ARP_REPLY_FRAME_LEN: number = ETH_HEADER_LEN + ARP_LEN;

/** The ARP responder; see the module comment. */
export class ArpService {
  /** Counters. */
  readonly stats: ArpStats = serviceStatsNew<ArpDropReason>(["truncated"]);
  /** Whether the service answers at all. */
  readonly enabled: boolean;
  readonly #pkt = new ArpPacket();
  readonly #reply = arpReprNew();

  /** A responder with the given options. */
  constructor(opts: ArpOptions = {}) {
    this.enabled = opts.enabled ?? true;
  }

  /**
   * Handles the ARP frame `eth` (EtherType ARP; any other EtherType passes).
   * Returns Replied if an ARP reply was queued on `ctx.tap`.
   */
  input(ctx: ServiceContext, eth: EthFrame): ServiceVerdict {
    const net4 = ctx.net.ip4;
    if (!this.enabled || net4 === null || eth.ethertype !== EtherType.Arp) {
      return ServiceVerdict.Pass;
    }
    this.stats.received++;
    const pkt = this.#pkt;
    const err = pkt.wrap(eth.buf, eth.payloadOffset, eth.payloadLen);
    if (err === WireError.Truncated) {
      this.stats.drop.truncated++;
      return ServiceVerdict.Dropped;
    }
    if (err !== 0 || !this.#wantsAnswer(pkt, net4)) {
      this.stats.ignored++;
      return ServiceVerdict.Ignored;
    }

    const r = this.#reply;
    r.op = ArpOp.Reply;
    bytesCopy(r.sha, 0, ctx.net.ourMac, 0, ETH_ADDR_LEN);
    r.spa = pkt.tpa;
    pkt.copySha(r.tha);
    r.tpa = pkt.spa;

    const frame = ctx.tap.take();
    const slot = ctx.tap.slot(frame);
    let p = TAP_HEADROOM;
    p += ethEmit(slot, p, r.tha, r.sha, EtherType.Arp);
    p += arpEmit(slot, p, r);
    ctx.tap.commit(frame, p - TAP_HEADROOM);
    this.stats.sent++;
    if (logEnabled(LogLevel.trace)) {
      logTrace(`ARP: ${formatIp4(u32ToIp4(r.spa))} is-at us, told ${formatIp4(u32ToIp4(r.tpa))}`);
    }
    return ServiceVerdict.Replied;
  }

  /** True for a request tapir should answer; see the module comment. */
  #wantsAnswer(pkt: ArpPacket, net4: GuestNet4): boolean {
    if (pkt.op !== ArpOp.Request) return false;
    const spa = pkt.spa;
    const tpa = pkt.tpa;
    return spa !== tpa && spa !== 0 && tpa !== net4.addr;
  }
}
