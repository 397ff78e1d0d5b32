/**
 * What every service shares: the context a handler runs in, the verdict it
 * returns and the shape of its counters.
 *
 * ## Theory of operation
 *
 * The services (`arp.ts`, `ndp.ts`, `dhcp.ts`, `dhcpv6.ts`) answer the part of
 * the guest's traffic that tapir handles itself instead of forwarding. They
 * sit behind the dispatcher, which has already wrapped and checked the outer
 * layers of a frame (Ethernet; the IPv4 header checksum and fragments; the
 * IPv6 extension headers; the UDP length and checksum) and learned the
 * guest's MAC from it. Services check what belongs to their own protocol,
 * including the ICMPv6 checksum of NDP.
 *
 * Each service is a class built once with its options (the switches
 * `--no-dhcp`, `--no-ndp`, `--no-ra`, `--no-dhcpv6` map to them); it owns
 * its reusable reprs and scratch buffers (so answering allocates little or
 * nothing) and its counters, and has one entry point of the same shape:
 *
 *     input(ctx, eth, [ip, upper]) → ServiceVerdict
 *
 * `ctx` carries what is shared and may change over a run (the guest's
 * network, what was learned about the guest, the send path), so a service
 * survives a new guest or a new backend without being rebuilt.
 *
 * **Verdicts.** {@linkcode ServiceVerdict.Pass} means "not mine": the service
 * is switched off, the family is off, or the frame is for another port or
 * type; the dispatcher offers it to the next consumer or drops it. Every
 * other verdict means the frame was consumed and is counted in `received`,
 * and in `sent` (a reply was queued), `ignored` or `dropped` (by reason). A
 * switched-off service counts nothing.
 *
 * **Replies** are built whole in a slot of the {@linkcode TapSender}
 * (Ethernet, IP with header checksum, UDP or ICMPv6 with checksum) and
 * committed; the reactor's flush sends them. Nothing is written to the guest
 * any other way.
 *
 * @module
 */

import type { GuestNet } from "../net.ts";
import type { TapSender } from "../tap/tap.ts";
import type { GuestState } from "./guest.ts";

/** What a handler needs besides the frame: built once by the reactor, passed to every call. */
export interface ServiceContext {
  /** The network as tapir presents it to the guest. */
  readonly net: GuestNet;
  /** What tapir has learned about the guest. */
  readonly guest: GuestState;
  /** The one send path to the guest. */
  readonly tap: TapSender;
}

/** What a handler did with a frame; see the module comment. */
export const ServiceVerdict = {
  /** Not for this service (switched off, family off, other port or type): not consumed. */
  Pass: 0,
  /** Consumed; a reply was queued on the send path. */
  Replied: 1,
  /** Consumed and deliberately left unanswered (a reply from the guest, a DAD probe, ...). */
  Ignored: 2,
  /** Consumed and refused as invalid; counted under a reason. */
  Dropped: 3,
} as const;
/** One of the {@linkcode ServiceVerdict} values. */
export type ServiceVerdict = (typeof ServiceVerdict)[keyof typeof ServiceVerdict];

/** Printable names of {@linkcode ServiceVerdict} values, for logs and tests. */
export const SERVICE_VERDICT_NAMES: Record<ServiceVerdict, string> = {
  0: "pass",
  1: "replied",
  2: "ignored",
  3: "dropped",
};

/**
 * Counters every service keeps, in the same shape so the project's counter
 * dump can list them uniformly. `Reason` names the service's drop reasons.
 */
export interface ServiceStats<Reason extends string> {
  /** Frames the service took (every verdict but Pass). */
  received: number;
  /** Frames it queued to the guest: replies, and for NDP unsolicited RAs. */
  sent: number;
  /** Frames taken and deliberately left unanswered. */
  ignored: number;
  /** Frames refused as invalid, per reason. */
  drop: Record<Reason, number>;
}

/** Zeroed {@linkcode ServiceStats} with a counter for each of `reasons`. */
export function serviceStatsNew<Reason extends string>(
  reasons: readonly Reason[],
): ServiceStats<Reason> {
  const drop = {} as Record<Reason, number>;
  for (const r of reasons) drop[r] = 0;
  return { received: 0, sent: 0, ignored: 0, drop };
}

/** Sum of all drop counters of `stats`. */
export function serviceDroppedTotal<Reason extends string>(stats: ServiceStats<Reason>): number {
  let n = 0;
  for (const k in stats.drop) n += stats.drop[k];
  return n;
}
