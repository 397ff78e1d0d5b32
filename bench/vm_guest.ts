/**
 * One run of `tapir vm -m 1500` with a guest program in place of QEMU
 * (bench/stream_guest.ts over the stream socket, bench/vhost_guest.ts over
 * vhost-user) and socat on the host namespace's loopback as the TCP peer,
 * reached through the gateway address: a sink for an upload, a source of
 * BYTES zeros for a download. The scenarios built on it: RSC on the stream
 * backend (rsc_stream.ts) and stream socket against vhost-user
 * (vhost_backend.ts).
 *
 * @module
 */

import { denoInHost, type HostEnv, inHost } from "./hostns.ts";
import { runBounded, spawnTracked, ticksPerSecond, type Tracked } from "./proc.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/** The guest's address, prefix and gateway in the VM scenarios. */
export const GUEST = { addr: "10.0.2.15", prefix: "24", gw: "10.0.2.2" } as const;
/** socat's block size for the host peer. */
const PEER_BLOCK = 1 << 20;

/** What one run is. */
export interface VmGuestRun {
  /** vhost-user (bench/vhost_guest.ts) or the stream socket (bench/stream_guest.ts). */
  readonly vhost: boolean;
  /** Guest to host, or host to guest. */
  readonly upload: boolean;
  /** Payload bytes. */
  readonly bytes: number;
  /** More `tapir vm` options. */
  readonly tapirArgs: readonly string[];
}

/** What one run measured: rate, tapir's CPU during the transfer, and tapir's log (`-d`). */
export type VmGuestOutcome = {
  readonly gbps: number;
  readonly cpuSPerGB: number;
  readonly log: string;
} | { readonly error: string };

/**
 * Starts `tapir vm -m 1500` in the host namespace serving one guest on
 * `socket` (by vhost-user or the stream protocol), with `more` options.
 */
export function spawnTapirVm(
  env: HostEnv,
  mainTs: string,
  socket: string,
  vhost: boolean,
  more: readonly string[] = [],
): Tracked {
  return spawnTracked(
    env.cleanup,
    denoInHost(env.ns, mainTs, [
      "vm",
      ...(vhost ? ["--vhost-user"] : []),
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
      ...more,
    ]),
  );
}

/** Waits (up to 10 s) for `socket` to exist: tapir listens. */
export async function socketReady(socket: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const st = await Deno.stat(socket).catch(() => null);
    if (st?.isSocket) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Runs `run` once, the host peer on `port`. */
export async function vmGuestRun(
  env: HostEnv,
  mainTs: string,
  port: number,
  run: VmGuestRun,
): Promise<VmGuestOutcome> {
  const cleanup = env.cleanup;
  const socket = `${env.dir}/guest-${port}.sock`;
  const log = `${env.dir}/guest-${port}.log`;
  const listen = `TCP4-LISTEN:${port},bind=127.0.0.1,reuseaddr`;
  const peer = spawnTracked(
    cleanup,
    inHost(
      env.ns,
      // 1 MiB blocks, and zeros read straight from /dev/zero: with socat's
      // default 8 KiB blocks, or a pipe from `head`, the peer itself capped
      // the transfer at 2 to 5 Gbit/s, below tapir.
      run.upload
        ? ["socat", "-b", `${PEER_BLOCK}`, "-u", listen, "OPEN:/dev/null"]
        : ["socat", "-b", `${PEER_BLOCK}`, "-U", listen, `OPEN:/dev/zero,readbytes=${run.bytes}`],
    ),
  );
  const tapir = spawnTapirVm(env, mainTs, socket, run.vhost, [
    "-d",
    "--log-file",
    log,
    ...run.tapirArgs,
  ]);
  try {
    await socketReady(socket);
    const guest = await runBounded(
      cleanup,
      denoInHost(env.ns, `${ROOT}/bench/${run.vhost ? "vhost_guest" : "stream_guest"}.ts`, [
        socket,
        GUEST.addr,
        GUEST.gw,
        String(port),
        String(run.bytes),
        run.upload ? "up" : "down",
        String(tapir.pid),
      ]),
      120_000,
    );
    if (guest.code !== 0 || guest.timedOut) {
      return { error: `guest: ${guest.timedOut ? "timed out" : guest.stderr.trim()}` };
    }
    const { ms, cpuTicks } = JSON.parse(guest.stdout.trim().split("\n").pop()!);
    await Promise.race([tapir.status, new Promise((r) => setTimeout(r, 5000))]);
    const cpuS = cpuTicks / await ticksPerSecond();
    return {
      gbps: (run.bytes * 8) / (ms / 1000) / 1e9,
      cpuSPerGB: cpuS / (run.bytes / 1e9),
      log: await Deno.readTextFile(log),
    };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    await tapir.stop();
    await peer.stop();
    await Deno.remove(log).catch(() => {});
  }
}
