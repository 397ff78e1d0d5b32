/**
 * The vhost-user scenario: the same guest program's TCP transfer through
 * `tapir vm -m 1500` over QEMU's stream socket and over vhost-user, both
 * directions (bench/vm_guest.ts). Over the stream socket frames are
 * MSS-sized and RSC merges them; over vhost-user the guest and tapir
 * exchange 64 KiB GSO frames through the shared rings.
 *
 * @module
 */

import type { HostEnv } from "./hostns.ts";
import { vmGuestRun } from "./vm_guest.ts";

/** One run's outcome, or why there is none. */
export type BackendRun = { readonly gbps: number; readonly cpuSPerGB: number } | {
  readonly error: string;
};

/** The four settings: backend × direction. */
export const BACKEND_CASES = [
  { key: "streamUp", vhost: false, upload: true },
  { key: "streamDown", vhost: false, upload: false },
  { key: "vhostUp", vhost: true, upload: true },
  { key: "vhostDown", vhost: true, upload: false },
] as const;

/** Every run of the scenario, by setting. */
export interface BackendResults {
  /** Bytes each run moves. */
  readonly bytes: number;
  readonly runs: Record<(typeof BACKEND_CASES)[number]["key"], BackendRun[]>;
}

/** Runs one setting once, the host peer on `port`. */
export async function backendRun(
  env: HostEnv,
  mainTs: string,
  port: number,
  bytes: number,
  vhost: boolean,
  upload: boolean,
): Promise<BackendRun> {
  const r = await vmGuestRun(env, mainTs, port, { vhost, upload, bytes, tapirArgs: [] });
  return "error" in r ? r : { gbps: r.gbps, cpuSPerGB: r.cpuSPerGB };
}
