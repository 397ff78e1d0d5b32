/**
 * The control socket under load: an iperf3 transfer from the host namespace
 * through `tapir ns -t 5201` (the tap path: the client uses the host's own
 * address, not loopback) to a server in tapir's namespace, once alone and
 * once while 50 clients poll `stats` on `--api-socket` as fast as replies
 * come. Both transfers run in the same tapir, alternating which goes first.
 * The pollers run in this process, so on a small machine they also take
 * CPU from everything else: the figure is what a busy control socket costs
 * the data path here, whoever pays.
 *
 * @module
 */

import { denoInHost, HOST, type HostEnv, inHost } from "./hostns.ts";
import { runBounded, spawnTracked } from "./proc.ts";

/** Clients polling `stats` during the busy transfer. */
export const API_POLLERS = 50;
const IPERF_PORT = 5201;

/** One run's outcome, or why there is none. */
export type ApiLoadRun = {
  /** iperf3 alone, Gbit/s. */
  readonly quietGbps: number;
  /** iperf3 with the pollers, Gbit/s. */
  readonly busyGbps: number;
  /** `stats` replies per second during the busy transfer. */
  readonly repliesPerS: number;
} | { readonly error: string };

/** Every run of the scenario. */
export interface ApiLoadResults {
  /** Seconds each transfer lasts. */
  readonly seconds: number;
  readonly runs: ApiLoadRun[];
}

async function iperf(env: HostEnv, seconds: number): Promise<number> {
  const r = await runBounded(
    env.cleanup,
    inHost(env.ns, ["iperf3", "-c", HOST.addr4, "-p", `${IPERF_PORT}`, "-t", `${seconds}`, "-J"]),
    (seconds + 20) * 1000,
  );
  if (r.code !== 0 || r.timedOut) throw new Error(`iperf3: ${r.stderr.trim() || r.stdout.trim()}`);
  return JSON.parse(r.stdout).end.sum_received.bits_per_second / 1e9;
}

/** Polls `stats` on `sock` until `stop()` says so; counts the replies. */
async function poll(sock: string, stop: () => boolean, count: { replies: number }): Promise<void> {
  const conn = await Deno.connect({ transport: "unix", path: sock });
  const request = new TextEncoder().encode('{"cmd":"stats"}\n');
  const chunk = new Uint8Array(1 << 16);
  const dec = new TextDecoder();
  let buf = "";
  try {
    while (!stop()) {
      await conn.write(request);
      let nl;
      while ((nl = buf.indexOf("\n")) < 0) {
        const n = await conn.read(chunk);
        if (n === null) throw new Error("the control socket closed");
        buf += dec.decode(chunk.subarray(0, n), { stream: true });
      }
      if (!("return" in JSON.parse(buf.slice(0, nl)))) throw new Error("an error reply");
      buf = buf.slice(nl + 1);
      count.replies++;
    }
  } finally {
    conn.close();
  }
}

/** Runs the scenario once (`rep` decides which transfer goes first). */
export async function apiLoadRun(
  env: HostEnv,
  mainTs: string,
  seconds: number,
  rep: number,
): Promise<ApiLoadRun> {
  const dir = await Deno.makeTempDir({ dir: env.dir, prefix: "api-" });
  const sock = `${dir}/api.sock`;
  const script = [
    `iperf3 -s -p ${IPERF_PORT} >/dev/null 2>&1 & p=$!`,
    `until ss -Hltn "sport = :${IPERF_PORT}" | grep -q .; do sleep 0.05; done`,
    `touch ${dir}/ready`,
    `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
    "kill $p; wait",
  ].join("\n");
  const tapir = spawnTracked(
    env.cleanup,
    denoInHost(env.ns, mainTs, [
      "ns",
      "--config-net",
      "-q",
      "-t",
      `${IPERF_PORT}`,
      "--api-socket",
      sock,
      "--",
      "sh",
      "-c",
      script,
    ]),
  );
  try {
    for (let i = 0; !(await Deno.stat(`${dir}/ready`).then(() => true, () => false)); i++) {
      if (i > 200) throw new Error("tapir's namespace did not get ready");
      await new Promise((r) => setTimeout(r, 50));
    }
    const busyRun = async () => {
      let stop = false;
      const count = { replies: 0 };
      const pollers = Array.from({ length: API_POLLERS }, () => poll(sock, () => stop, count));
      // A poller that fails is reported by the `Promise.all` below, not as
      // an unhandled rejection while iperf3 runs (which would end the bench).
      for (const p of pollers) p.catch(() => {});
      const started = performance.now();
      try {
        const gbps = await iperf(env, seconds);
        return { gbps, repliesPerS: count.replies / ((performance.now() - started) / 1000) };
      } finally {
        stop = true;
        await Promise.all(pollers);
      }
    };
    let quietGbps: number, busy: { gbps: number; repliesPerS: number };
    if (rep % 2 === 0) {
      quietGbps = await iperf(env, seconds);
      busy = await busyRun();
    } else {
      busy = await busyRun();
      quietGbps = await iperf(env, seconds);
    }
    return { quietGbps, busyGbps: busy.gbps, repliesPerS: busy.repliesPerS };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
    await Promise.race([tapir.status, new Promise((r) => setTimeout(r, 5000))]);
    await tapir.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
