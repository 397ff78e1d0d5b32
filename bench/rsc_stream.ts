/**
 * The RSC scenario: `tapir vm` at MTU 1500 over QEMU's stream socket, with
 * a guest program (bench/stream_guest.ts) in place of QEMU that sends one
 * TCP upload in MSS-sized segments, as a VM without offloads does. Run with
 * RSC on and with `--no-rsc`; what it reports per run: Gbit/s from the first
 * data byte to the ACK of the FIN, and tapir's writes to the host socket per
 * MiB (from its counters at exit, `-d`). The receiver is socat on the host
 * namespace's loopback, reached through the gateway address.
 *
 * @module
 */

import { statsReportFromLog } from "../lib/tapir.ts";
import type { HostEnv } from "./hostns.ts";
import { vmGuestRun } from "./vm_guest.ts";

/** One run's outcome, or why there is none. */
export type StreamRscRun = { readonly gbps: number; readonly writesPerMiB: number } | {
  readonly error: string;
};

/** Every run of the scenario, by setting. */
export interface StreamRscResults {
  /** Bytes each run sends. */
  readonly bytes: number;
  /** Runs with RSC on (the default). */
  readonly on: StreamRscRun[];
  /** Runs with `--no-rsc`. */
  readonly off: StreamRscRun[];
}

/** Runs the scenario once with RSC `on` or off, sending `bytes` to a sink on `port`. */
export async function streamRscRun(
  env: HostEnv,
  mainTs: string,
  port: number,
  bytes: number,
  on: boolean,
): Promise<StreamRscRun> {
  const r = await vmGuestRun(env, mainTs, port, {
    vhost: false,
    upload: true,
    bytes,
    tapirArgs: on ? [] : ["--no-rsc"],
  });
  if ("error" in r) return r;
  const tcp = statsReportFromLog(r.log)?.counters.tcp;
  if (tcp === undefined) return { error: "no tcp counters in tapir's log" };
  const writes = tcp.sockWrites;
  return { gbps: r.gbps, writesPerMiB: writes / (bytes / 2 ** 20) };
}
