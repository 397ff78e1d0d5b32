/**
 * What tapir learns about the guest while it runs.
 *
 * The guest's MAC is not configured anywhere: tapir learns it from the
 * source address of the guest's frames. Until the first frame arrives it is
 * the broadcast address, so anything sent before then (an unsolicited router
 * advertisement, a reply to traffic that opened a flow from the host side)
 * still reaches the guest. Group addresses (multicast and broadcast) are
 * never a valid source (IEEE 802.3 §3.2.3) and are ignored, as is the
 * all-zero address some drivers emit while initialising.
 *
 * @module
 */

import { logDebug, logEnabled, LogLevel } from "../log.ts";
import { bytesCopy, bytesEqual } from "../packet/wire.ts";
import { ETH_ADDR_LEN } from "../packet/eth.ts";

/** What tapir knows about the guest; see the module comment. One per guest connection. */
export class GuestState {
  /** The guest's MAC: ff:ff:ff:ff:ff:ff until learned. Read it, never write into it. */
  readonly mac: Uint8Array = new Uint8Array(ETH_ADDR_LEN).fill(0xff);
  /** True once {@linkcode mac} holds an address learned from a frame. */
  macKnown = false;

  /**
   * Learns the guest's MAC from the 6 bytes at `buf[off..]`, the source
   * address of a frame the dispatcher accepted. Group and all-zero addresses
   * are ignored. Returns true if the stored MAC changed. Allocates nothing
   * unless debug logging is on and the address changed.
   */
  learnMac(buf: Uint8Array, off: number): boolean {
    if ((buf[off] & 1) !== 0) return false;
    if (
      (buf[off] | buf[off + 1] | buf[off + 2] | buf[off + 3] | buf[off + 4] | buf[off + 5]) === 0
    ) return false;
    if (this.macKnown && bytesEqual(this.mac, 0, buf, off, ETH_ADDR_LEN)) return false;
    bytesCopy(this.mac, 0, buf, off, ETH_ADDR_LEN);
    this.macKnown = true;
    if (logEnabled(LogLevel.debug)) logDebug(`guest MAC is ${macToString(this.mac)}`);
    return true;
  }

  /** Forgets the MAC (a new guest connected): back to broadcast. */
  forget(): void {
    this.mac.fill(0xff);
    this.macKnown = false;
  }
}

/** Formats the 6 bytes at `mac[off..]` as `aa:bb:cc:dd:ee:ff`, for logs. */
export function macToString(mac: Uint8Array, off = 0): string {
  let s = "";
  for (let i = 0; i < ETH_ADDR_LEN; i++) {
    if (i > 0) s += ":";
    s += mac[off + i].toString(16).padStart(2, "0");
  }
  return s;
}
