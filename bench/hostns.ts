/**
 * The benchmark's sandbox: a throwaway "host" network namespace, and the few
 * machine settings the rootless contenders need, each put back afterwards.
 *
 * The host namespace is held by a process of the harness's own (not an
 * `ip netns` name, which anything else on the machine could delete) and
 * follows the shape of the tests' `withHostNs`
 * (tests/helpers/netns.ts): `eth0` is one end of a veth pair whose other end
 * stays in the same namespace with no address, a dead end, with fixed
 * documentation addresses and default routes. Translators copy their guest's
 * addresses from it, servers listen on its loopback, and nothing can leave
 * the machine whatever a contender does. One more address sits on its
 * loopback, {@linkcode VETH_SERVER}, for the plain-veth contender, whose guest
 * reaches the host namespace's own addresses rather than a mapped loopback.
 *
 * pasta refuses to run as root, and slirp4netns is meant to run without it,
 * so both run as an unprivileged user ({@linkcode BENCH_USER}, created if
 * missing). They need `/dev/net/tun` usable by that user and unprivileged
 * user namespaces; where the machine says otherwise, the setting is changed
 * for the run and restored by the cleanup.
 *
 * @module
 */

import { type Cleanup, runBounded, runOk, spawnTracked } from "./proc.ts";

/** Addresses of the simulated host namespace. */
export const HOST = {
  addr4: "192.0.2.2",
  prefix4: 24,
  gw4: "192.0.2.1",
  addr6: "2001:db8::2",
  prefix6: 64,
  gw6: "2001:db8::1",
} as const;

/** Where the servers for the veth contender listen (on the host namespace's loopback). */
export const VETH_SERVER = "198.51.100.1";

/** The veth contender's guest address (same /24 as {@linkcode VETH_SERVER}). */
export const VETH_GUEST = "198.51.100.2";

/** The unprivileged user pasta and slirp4netns run as. */
export const BENCH_USER = "tapirbench";

/** What the contenders need to know about the sandbox. */
export interface HostEnv {
  /** Pid of the process that holds the host namespace (enter it with `nsenter -t`). */
  readonly ns: number;
  /** Scratch directory, world-readable (launcher scripts live here). */
  readonly dir: string;
  /** Scratch directory owned by {@linkcode BENCH_USER}. */
  readonly userDir: string;
  /** Numeric uid of {@linkcode BENCH_USER}. */
  readonly uid: number;
  /** Numeric gid of {@linkcode BENCH_USER}. */
  readonly gid: number;
  /** The cleanup everything is registered with. */
  readonly cleanup: Cleanup;
}

/** The argument vector running `argv` in the network namespace of process `ns`. */
export function inHost(ns: number, argv: readonly string[]): string[] {
  return ["nsenter", "-t", String(ns), "-n", "--", ...argv];
}

/** The argument vector running Deno program `script` with `args` in host namespace `ns`. */
export function denoInHost(ns: number, script: string, args: readonly string[]): string[] {
  return inHost(ns, [Deno.execPath(), "run", "-A", script, ...args]);
}

async function ensureUser(cleanup: Cleanup): Promise<{ uid: number; gid: number }> {
  let r = await runBounded(cleanup, ["id", "-u", BENCH_USER], 5000);
  if (r.code !== 0) {
    // Another run may create it at the same moment: what counts is that it exists after.
    const add = await runBounded(cleanup, [
      "useradd",
      "--system",
      "--no-create-home",
      "--home-dir",
      "/nonexistent",
      "--shell",
      "/usr/sbin/nologin",
      BENCH_USER,
    ], 30_000);
    r = await runBounded(cleanup, ["id", "-u", BENCH_USER], 5000);
    if (r.code !== 0) throw new Error(`cannot create user ${BENCH_USER}: ${add.stderr.trim()}`);
  }
  const gid = await runOk(cleanup, ["id", "-g", BENCH_USER]);
  return { uid: Number(r.stdout.trim()), gid: Number(gid.trim()) };
}

/** Makes `/dev/net/tun` read-write for everyone for the run; the old mode comes back after. */
function openTun(cleanup: Cleanup): void {
  const path = "/dev/net/tun";
  const mode = Deno.statSync(path).mode;
  if (mode === null || (mode & 0o666) === 0o666) return;
  Deno.chmodSync(path, (mode & 0o7777) | 0o666);
  cleanup.add(() => Promise.resolve(Deno.chmodSync(path, mode & 0o7777)));
}

/**
 * Settings that can forbid unprivileged user namespaces, with the value that
 * allows them and whether a current value already does.
 */
const USERNS_SETTINGS: readonly { path: string; allow: string; allows: (v: string) => boolean }[] =
  [
    { path: "/proc/sys/kernel/unprivileged_userns_clone", allow: "1", allows: (v) => v === "1" },
    { path: "/proc/sys/user/max_user_namespaces", allow: "1024", allows: (v) => Number(v) > 16 },
    {
      path: "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
      allow: "0",
      allows: (v) => v === "0",
    },
  ];

function allowUserNamespaces(cleanup: Cleanup): void {
  for (const s of USERNS_SETTINGS) {
    let old: string;
    try {
      old = Deno.readTextFileSync(s.path).trim();
    } catch {
      continue; // this kernel has no such knob
    }
    if (s.allows(old)) continue;
    Deno.writeTextFileSync(s.path, s.allow);
    cleanup.add(() => Promise.resolve(Deno.writeTextFileSync(s.path, old)));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The network namespace identity of process `pid` (`net:[inode]`), or null if gone. */
function netnsOf(pid: number | "self"): string | null {
  try {
    return Deno.readLinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/**
 * Starts the process that holds the host namespace and waits until it is in
 * a namespace of its own. A process rather than an `ip netns` name: nothing
 * else on the machine can delete it from under the run (by name or with
 * `ip -all netns delete`), and it goes away with the process.
 */
async function startAnchor(cleanup: Cleanup): Promise<number> {
  const anchor = spawnTracked(cleanup, ["unshare", "--net", "--", "sleep", "infinity"]);
  const ours = netnsOf("self");
  const deadline = performance.now() + 10_000;
  for (;;) {
    const theirs = netnsOf(anchor.pid);
    if (theirs === null || performance.now() > deadline) {
      await anchor.stop();
      throw new Error(`unshare --net did not start: ${anchor.stderr.text.trim()}`);
    }
    if (theirs !== ours) {
      cleanup.add(() => Promise.resolve(killAllIn(theirs)));
      return anchor.pid;
    }
    await sleep(5);
  }
}

/** SIGKILLs every process in network namespace `netns` (a final sweep for strays). */
function killAllIn(netns: string): void {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || netnsOf(Number(e.name)) !== netns) continue;
    try {
      Deno.kill(Number(e.name), "SIGKILL");
    } catch { /* gone already */ }
  }
}

/**
 * Builds the sandbox: user, device and namespace settings, scratch
 * directories, and the host namespace. Everything is undone by `cleanup`.
 */
export async function createHostEnv(cleanup: Cleanup): Promise<HostEnv> {
  const { uid, gid } = await ensureUser(cleanup);
  openTun(cleanup);
  allowUserNamespaces(cleanup);

  const dir = await Deno.makeTempDir({ prefix: "tapir-bench-" });
  cleanup.add(() => Deno.remove(dir, { recursive: true }));
  await Deno.chmod(dir, 0o755);
  const userDir = `${dir}/user`;
  await Deno.mkdir(userDir, { mode: 0o700 });
  await Deno.chown(userDir, uid, gid);

  const ns = await startAnchor(cleanup);
  const setup = [
    "set -e",
    "ip link set lo up",
    "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
    // Ping sockets for every group: the translators answer the guest's
    // ping with unprivileged ICMP sockets in this namespace.
    "sysctl -qw net.ipv4.ping_group_range='0 2147483647'",
    "ip link add eth0 type veth peer name deadend",
    "ip link set deadend up",
    "ip link set eth0 up",
    `ip addr add ${HOST.addr4}/${HOST.prefix4} dev eth0`,
    `ip -6 addr add ${HOST.addr6}/${HOST.prefix6} dev eth0 nodad`,
    `ip route add default via ${HOST.gw4}`,
    `ip -6 route add default via ${HOST.gw6}`,
    `ip addr add ${VETH_SERVER}/32 dev lo`,
  ].join("\n");
  await runOk(cleanup, inHost(ns, ["sh", "-c", setup]));
  return { ns, dir, userDir, uid, gid, cleanup };
}
