/**
 * Many concurrent TCP flows: what tapir's memory does with them, and that
 * it comes back when they end.
 *
 * A server on host loopback (`flows_peer.ts server`) accepts and holds
 * connections; the guest of `tapir ns` (its command) opens `count` of them
 * through the gateway mapping, spread over four ports, holds them, then
 * closes them all. tapir's resident set is read idle (before), with every
 * flow open (and its peak, VmHWM), once its TCP flow count is back where
 * it started, and then each second until it is back near idle (the
 * criterion: memory returns within the flow timeouts) — how long each takes
 * is reported too. The flow count and the runtime's figures come from the
 * control socket's `stats`.
 *
 * The count is 100 000, or what the machine's descriptor limit allows: each
 * of tapir, the server and the client holds one descriptor per flow, and
 * raising a hard limit needs CAP_SYS_RESOURCE. The report says which.
 *
 * @module
 */

import { ctlCall } from "../lib/ctl.ts";
import type { StatsReport } from "../lib/tapir.ts";
import { denoInHost, type HostEnv } from "./hostns.ts";
import { spawnTracked } from "./proc.ts";

/** Flows the scenario aims for. */
export const FLOWS_TARGET = 100_000;
/** Descriptors each process keeps for everything but the flows. */
const FD_MARGIN = 500;
/** Server ports: the guest's source ports are per destination. */
const PORTS = [6001, 6002, 6003, 6004];
/** How long the flows may take to go once closed. */
const RETURN_LIMIT_S = 60;
/**
 * RSS counts as back to idle within this fraction of the idle figure: code
 * pages the flows' paths touched stay resident, a few MiB.
 */
export const SETTLE_MARGIN = 0.05;
/**
 * How long the resident set may take to come back once the flows are gone.
 * V8 collects the closed flows' objects in its own time (8-30 s measured
 * when idle); the criterion allows the UDP timeout, 180 s, of which the
 * benchmark waits this much.
 */
export const SETTLE_LIMIT_S = 60;

/** One run's outcome, or why there is none. */
export type FlowsRun = {
  /** Flows opened and held. */
  readonly count: number;
  /** Seconds the guest took to open them. */
  readonly openS: number;
  /** tapir's resident set idle, with the flows held, and once they are gone (MiB). */
  readonly idleMiB: number;
  readonly heldMiB: number;
  readonly afterMiB: number;
  /** VmHWM at the end (MiB). */
  readonly peakMiB: number;
  /** Seconds from the close until the flow count was back to idle. */
  readonly returnS: number;
  /**
   * Seconds from then until the resident set was within {@linkcode SETTLE_MARGIN}
   * of idle, or null if it was not within the run's limit; and the
   * resident set then (MiB).
   */
  readonly settleS: number | null;
  readonly settledMiB: number;
} | { readonly error: string };

/** Every run, and the count aimed for on this machine. */
export interface FlowsResults {
  /** Flows each run opens. */
  readonly count: number;
  /** Why it is less than {@linkcode FLOWS_TARGET}, or null. */
  readonly limitedBy: string | null;
  /** Seconds each run waits for the resident set to settle (see {@linkcode flowsRun}). */
  readonly settleLimitS: number;
  readonly runs: FlowsRun[];
}

/** The hard limit on open files of this process (children inherit it). */
async function fdHardLimit(): Promise<number> {
  const text = await Deno.readTextFile("/proc/self/limits");
  const line = text.split("\n").find((l) => l.startsWith("Max open files")) ?? "";
  const hard = line.trim().split(/\s+/)[4];
  return hard === "unlimited" ? Infinity : Number(hard);
}

/** The count for this machine, and why it is not the target if it is not. */
export async function flowsCount(
  quick: boolean,
): Promise<{ count: number; limitedBy: string | null }> {
  const target = quick ? 2000 : FLOWS_TARGET;
  const hard = await fdHardLimit();
  if (hard - FD_MARGIN >= target) return { count: target, limitedBy: null };
  return {
    count: Math.max(0, hard - FD_MARGIN),
    limitedBy: `this machine's hard limit of ${hard} open files per process (raising it needs ` +
      `CAP_SYS_RESOURCE, which the harness does not have)`,
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `stats` from tapir's control socket: its TCP flows and its resident set. */
async function tapirState(sock: string): Promise<{ flows: number; rssMiB: number }> {
  const reply = await ctlCall(sock, { cmd: "stats" });
  if (!reply.ok) throw new Error(`stats: ${reply.desc}`);
  const r = reply.value as StatsReport;
  return { flows: r.flows.byType.TCP ?? 0, rssMiB: r.runtime.rssBytes / 1048576 };
}

/** VmHWM of `pid`, MiB. */
async function peakMiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kib = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]);
  return kib / 1024;
}

async function until<T>(what: string, limitMs: number, probe: () => Promise<T | null>): Promise<T> {
  const deadline = performance.now() + limitMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v !== null) return v;
    if (performance.now() > deadline) throw new Error(`${what}: not within ${limitMs / 1000} s`);
    await sleep(100);
  }
}

/**
 * Runs the scenario once with `count` flows, waiting at most `settleLimitS`
 * for the resident set to come back once they are gone.
 */
export async function flowsRun(
  env: HostEnv,
  mainTs: string,
  count: number,
  settleLimitS: number = SETTLE_LIMIT_S,
): Promise<FlowsRun> {
  const dir = await Deno.makeTempDir({ dir: env.dir, prefix: "flows-" });
  const sock = `${dir}/api.sock`;
  const peer = new URL("./flows_peer.ts", import.meta.url).pathname;
  const ports = PORTS.join(",");
  const server = spawnTracked(
    env.cleanup,
    denoInHost(env.ns, peer, ["server", "--ports", ports]),
  );
  // The guest: wait for the word, widen its own port range (a namespace's
  // own setting), open the flows, hold them until told, close them.
  const script = [
    `while [ ! -e ${dir}/go ]; do sleep 0.05; done`,
    `sysctl -qw net.ipv4.ip_local_port_range="1024 65535"`,
    // No update check: its lookup would be a UDP flow of its own.
    `DENO_NO_UPDATE_CHECK=1 ${Deno.execPath()} run -A ${peer} client --addr 192.0.2.1 ` +
    `--ports ${ports} ` +
    `--count ${count} --window 512 --hold ${dir}/close > ${dir}/client.log 2>&1`,
    `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
  ].join("\n");
  const args = ["ns", "--config-net", "-q", "--api-socket", sock, "--", "sh", "-c", script];
  const tapir = spawnTracked(env.cleanup, denoInHost(env.ns, mainTs, args));
  try {
    await until(
      "the server",
      20_000,
      () => Promise.resolve(server.stdout.text.includes("listening") || null),
    );
    const idle = await until("tapir's control socket", 20_000, () => tapirState(sock));
    await sleep(1000); // settled: start-up's garbage collected
    const idleState = await tapirState(sock);
    await Deno.writeTextFile(`${dir}/go`, "");
    const log = () => Deno.readTextFile(`${dir}/client.log`).catch(() => "");
    const opened = await until("the guest's connections", 300_000, async () => {
      const line = (await log()).split("\n").find((l) => l.startsWith("{"));
      return line ? JSON.parse(line) : null;
    });
    if (!opened.ok) throw new Error(`the guest: ${opened.error ?? `${opened.failed} failed`}`);
    const held = await tapirState(sock);
    if (held.flows < count) throw new Error(`tapir holds ${held.flows} flows of ${count}`);
    await Deno.writeTextFile(`${dir}/close`, "");
    const closedAt = performance.now();
    const after = await until("the flows' end", RETURN_LIMIT_S * 1000, async () => {
      const s = await tapirState(sock);
      return s.flows <= idle.flows ? s : null;
    });
    const returnS = (performance.now() - closedAt) / 1000;
    const goneAt = performance.now();
    let settled = after.rssMiB;
    let settleS: number | null = null;
    for (;;) {
      const waited = (performance.now() - goneAt) / 1000;
      if (settled <= idleState.rssMiB * (1 + SETTLE_MARGIN)) {
        settleS = waited;
        break;
      }
      if (waited >= settleLimitS) break;
      await sleep(1000);
      settled = (await tapirState(sock)).rssMiB;
    }
    return {
      count,
      openS: opened.seconds,
      idleMiB: idleState.rssMiB,
      heldMiB: held.rssMiB,
      afterMiB: after.rssMiB,
      peakMiB: await peakMiB(tapir.pid),
      returnS,
      settleS,
      settledMiB: settled,
    };
  } catch (err) {
    return { error: (err as Error).message };
  } finally {
    await Deno.writeTextFile(`${dir}/close`, "").catch(() => {});
    await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
    await Promise.race([tapir.status, sleep(10_000)]);
    await tapir.stop();
    await server.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
