/**
 * What both modes do before they run.
 *
 * @module
 */

import type { NsConfig, VmConfig } from "../conf.ts";
import { allowPingSockets } from "../l4/icmp.ts";
import { logError } from "../log.ts";
import { type GuestNet, guestNetFrom, type HostFacts } from "../net.ts";
import { pcapOpen } from "../pcap.ts";

/**
 * The guest's network from the configuration and the host's facts; ping
 * sockets allowed; the capture opened (`--pcap`). Returns null after one
 * error line when the guest cannot be served.
 */
export function prepareGuest(conf: NsConfig | VmConfig, host: HostFacts): GuestNet | null {
  const net = guestNetFrom(conf, host);
  if (!net.ip4 && !net.ip6) {
    logError("no address for the guest: the host has none to copy; give one with -a");
    return null;
  }
  allowPingSockets();
  if (conf.pcap) {
    try {
      pcapOpen(conf.pcap);
    } catch (err) {
      logError(`--pcap: cannot open ${conf.pcap}: ${(err as Error).message}`);
      return null;
    }
  }
  return net;
}
