/**
 * What both modes do before they run.
 *
 * @module
 */

import { controlHandler } from "../api/control.ts";
import { type ApiHandler, ApiServer } from "../api/server.ts";
import type { NsConfig, VmConfig } from "../conf.ts";
import type { ForwardTable } from "../forwards.ts";
import { allowPingSockets } from "../l4/icmp.ts";
import { logError, logInfo } from "../log.ts";
import { type GuestNet, guestNetOf, type HostFacts } from "../net.ts";
import { pcapOpen } from "../pcap.ts";
import type { Tapir } from "../tapir.ts";

/**
 * The guest's network from the configuration and the host's facts
 * (`guestNetOf`), then what serving it needs ({@linkcode prepareServing}).
 * Returns null after one error line when the guest cannot be served.
 */
export function prepareGuest(conf: NsConfig | VmConfig, host: HostFacts): GuestNet | null {
  const net = guestNetOf(conf, host);
  if (typeof net === "string") {
    logError(net);
    return null;
  }
  return prepareServing(conf) ? net : null;
}

/**
 * Ping sockets allowed, the capture opened (`--pcap`): what the translator
 * needs before its first frame. Returns false after one error line.
 */
export function prepareServing(conf: NsConfig | VmConfig): boolean {
  allowPingSockets();
  if (conf.pcap) {
    try {
      pcapOpen(conf.pcap);
    } catch (err) {
      logError(`--pcap: cannot open ${conf.pcap}: ${(err as Error).message}`);
      return false;
    }
  }
  return true;
}

/**
 * `--api-socket`: serves control requests for `t` and its forwarding
 * tables until the loop stops (or with `handler`: another protocol, such as
 * slirp4netns's API); the socket file goes with it. Returns false
 * after one error line when the socket cannot be made (a live socket at the
 * path, a bad directory); true otherwise, and without the option.
 */
export function startControl(
  conf: NsConfig | VmConfig,
  t: Tapir,
  forwards: ForwardTable,
  handler: ApiHandler | null = null,
): boolean {
  if (conf.apiSocket === null) return true;
  let server: ApiServer;
  try {
    server = ApiServer.open(
      t.loop,
      conf.apiSocket,
      handler ?? controlHandler({ tapir: t, forwards }),
    );
  } catch (err) {
    logError((err as Error).message);
    return false;
  }
  t.stats.add("api", server.stats);
  t.loop.onStop(() => server.close());
  logInfo(
    handler === null
      ? `control socket: ${conf.apiSocket} (tapir ctl --socket ${conf.apiSocket} stats)`
      : `API socket: ${conf.apiSocket}`,
  );
  return true;
}
