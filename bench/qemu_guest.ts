/**
 * The real-guest rows: the VM tests' Linux guest (tests/vm/build.sh) under
 * QEMU, TCG as on these machines, on `tapir vm -m 1500` over the stream
 * socket and over vhost-user, downloads BYTES over HTTP from a server on the
 * host namespace's loopback (through the gateway address) and uploads as
 * many. The guest times each transfer itself (wget, centiseconds). Under
 * TCG the emulated guest, not tapir, sets the pace: these rows say what a
 * VM gets here, not what tapir can do.
 *
 * @module
 */

import { buildGuest, guestAppend, qemuArgs } from "../tests/vm/qemu.ts";
import { denoInHost, type HostEnv, inHost } from "./hostns.ts";
import { runBounded, spawnTracked } from "./proc.ts";
import { GUEST, socketReady, spawnTapirVm } from "./vm_guest.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/** Boot, two transfers and power-off must fit in this. */
const QEMU_LIMIT_MS = 300_000;

/** One run's outcome, or why there is none. */
export type QemuRun = { readonly downMbps: number; readonly upMbps: number } | {
  readonly error: string;
};

/** Every run, by backend. */
export interface QemuResults {
  /** Bytes each transfer moves. */
  readonly bytes: number;
  readonly stream: QemuRun[];
  readonly vhost: QemuRun[];
}

/** One boot: download and upload of `bytes` over the stream socket or vhost-user. */
export async function qemuGuestRun(
  env: HostEnv,
  mainTs: string,
  port: number,
  bytes: number,
  vhost: boolean,
): Promise<QemuRun> {
  const cleanup = env.cleanup;
  const socket = `${env.dir}/qemu-${port}.sock`;
  const file = `${env.dir}/qemu-${port}.bin`;
  const image = await buildGuest();
  await Deno.writeFile(file, new Uint8Array(bytes));
  const server = spawnTracked(
    cleanup,
    denoInHost(env.ns, `${ROOT}/tests/vm/host_peer.ts`, [
      "serve",
      `${port}`,
      file,
    ]),
  );
  const tapir = spawnTapirVm(env, mainTs, socket, vhost);
  try {
    await socketReady(socket);
    const append = guestAppend({
      steps: "dhcp,download,upload",
      addr: GUEST.addr,
      prefix: GUEST.prefix,
      gw: GUEST.gw,
      mtu: 1500,
      http_port: port,
      dl_path: "/download",
      dl_size: bytes,
      up_path: "/upload",
      up_size: bytes,
      wait: 120,
      deadline: QEMU_LIMIT_MS / 1000 - 20,
    });
    const qemu = await runBounded(
      cleanup,
      inHost(env.ns, ["qemu-system-x86_64", ...qemuArgs(image, append, socket, vhost)]),
      QEMU_LIMIT_MS,
    );
    const seconds = (step: string) => {
      const m = new RegExp(`^TAPIR-VM STEP ${step} ok .*seconds=([0-9.]+)`, "m").exec(qemu.stdout);
      return m ? Number(m[1]) : NaN;
    };
    const down = seconds("download");
    const up = seconds("upload");
    if (!(down > 0 && up > 0)) {
      const steps = qemu.stdout.split("\n").filter((l) => l.includes("TAPIR-VM")).join("; ");
      return { error: `guest (${qemu.timedOut ? "timed out" : `exit ${qemu.code}`}): ${steps}` };
    }
    return { downMbps: (bytes * 8) / down / 1e6, upMbps: (bytes * 8) / up / 1e6 };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    await tapir.stop();
    await server.stop();
    await Deno.remove(file).catch(() => {});
  }
}
