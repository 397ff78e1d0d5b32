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

import { type HostEnv, inHost } from "./hostns.ts";
import { runBounded, spawnTracked } from "./proc.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const GUEST = { addr: "10.0.2.15", prefix: "24", gw: "10.0.2.2" } as const;

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
  const cleanup = env.cleanup;
  const socket = `${env.dir}/rsc-${port}.sock`;
  const log = `${env.dir}/rsc-${port}.log`;
  const sink = spawnTracked(
    cleanup,
    inHost(env.ns, [
      "socat",
      "-u",
      `TCP4-LISTEN:${port},bind=127.0.0.1,reuseaddr`,
      "OPEN:/dev/null",
    ]),
  );
  const tapir = spawnTracked(
    cleanup,
    inHost(env.ns, [
      Deno.execPath(),
      "run",
      "-A",
      mainTs,
      "vm",
      "--socket",
      socket,
      "-m",
      "1500",
      "-a",
      GUEST.addr,
      "-n",
      GUEST.prefix,
      "-g",
      GUEST.gw,
      "-f",
      "-1",
      "-d",
      "--log-file",
      log,
      ...(on ? [] : ["--no-rsc"]),
    ]),
  );
  try {
    for (let i = 0; i < 100; i++) {
      const st = await Deno.stat(socket).catch(() => null);
      if (st?.isSocket) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const guest = await runBounded(
      cleanup,
      inHost(env.ns, [
        Deno.execPath(),
        "run",
        "-A",
        `${ROOT}/bench/stream_guest.ts`,
        socket,
        GUEST.addr,
        GUEST.gw,
        String(port),
        String(bytes),
      ]),
      120_000,
    );
    if (guest.code !== 0 || guest.timedOut) {
      return { error: `guest: ${guest.timedOut ? "timed out" : guest.stderr.trim()}` };
    }
    const { ms } = JSON.parse(guest.stdout.trim().split("\n").pop()!);
    await Promise.race([tapir.status, new Promise((r) => setTimeout(r, 5000))]);
    const text = await Deno.readTextFile(log);
    const tcp = /tcp: (\{.*\})/.exec(text);
    if (tcp === null) return { error: "no tcp counters in tapir's log" };
    const writes = JSON.parse(tcp[1]).sockWrites as number;
    return { gbps: (bytes * 8) / (ms / 1000) / 1e9, writesPerMiB: writes / (bytes / 2 ** 20) };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    await tapir.stop();
    await sink.stop();
    await Deno.remove(log).catch(() => {});
  }
}
