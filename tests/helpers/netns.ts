/**
 * Network namespaces for tests, made and removed by the test itself.
 *
 * The network rule for every test: traffic goes only to loopback or to
 * namespaces the test made. {@linkcode withHostNs} builds the safest shape
 * (see DESIGN.md): a throwaway "host" namespace whose `eth0` is one end of a
 * veth pair whose other end stays in the same namespace with no address — a
 * dead end — with fixed documentation addresses and default routes. Whatever
 * runs inside can reach nothing outside the machine, and addresses do not
 * depend on the machine.
 *
 * @module
 */

/** Addresses of the simulated host in {@linkcode withHostNs}. */
export const HOST_NS = {
  addr4: "192.0.2.2",
  prefix4: 24,
  gw4: "192.0.2.1",
  addr6: "2001:db8::2",
  prefix6: 64,
  gw6: "2001:db8::1",
  ifname: "eth0",
} as const;

/** Output of a finished command. */
export interface RunResult {
  /** Exit code. */
  readonly code: number;
  /** Standard output as text. */
  readonly stdout: string;
  /** Standard error as text. */
  readonly stderr: string;
}

const dec = new TextDecoder();

/** Runs a command to completion and returns its output (never throws on exit status). */
export async function run(
  cmd: string,
  args: string[],
  opts: Deno.CommandOptions = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, { stdout: "piped", stderr: "piped", ...opts, args })
    .output();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Runs a command and throws with its stderr if it fails. */
export async function runOk(
  cmd: string,
  args: string[],
  opts: Deno.CommandOptions = {},
): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  }
  return r.stdout;
}

/** The argument vector running `cmd args` inside namespace `ns` (for Deno.Command). */
export function nsArgs(ns: string, cmd: string, args: string[] = []): [string, string[]] {
  return ["ip", ["netns", "exec", ns, cmd, ...args]];
}

/** Runs `cmd` in namespace `ns`; throws if it fails. */
export function nsRunOk(ns: string, cmd: string, args: string[] = []): Promise<string> {
  const [c, a] = nsArgs(ns, cmd, args);
  return runOk(c, a);
}

/** Runs `cmd` in namespace `ns`. */
export function nsRun(ns: string, cmd: string, args: string[] = []): Promise<RunResult> {
  const [c, a] = nsArgs(ns, cmd, args);
  return run(c, a);
}

function uniqueName(prefix: string): string {
  return `${prefix}-${Deno.pid}-${Math.floor(Math.random() * 1e9).toString(36)}`;
}

/** Runs `body` with a new, empty network namespace (loopback up), removed afterwards. */
export async function withNetns<T>(
  body: (ns: string) => Promise<T>,
  prefix = "tapir-t",
): Promise<T> {
  const ns = uniqueName(prefix);
  await runOk("ip", ["netns", "add", ns]);
  try {
    await nsRunOk(ns, "ip", ["link", "set", "lo", "up"]);
    return await body(ns);
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
}

/**
 * Runs `body` inside a simulated host namespace: `eth0` with
 * {@linkcode HOST_NS} addresses and default routes, its peer a dead end in
 * the same namespace. IPv6 duplicate address detection is off so addresses
 * are usable at once.
 */
export function withHostNs<T>(body: (ns: string) => Promise<T>): Promise<T> {
  return withNetns(async (ns) => {
    const sh = [
      "set -e",
      "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0",
      `ip link add ${HOST_NS.ifname} type veth peer name deadend`,
      `ip link set deadend up`,
      `ip link set ${HOST_NS.ifname} up`,
      `ip addr add ${HOST_NS.addr4}/${HOST_NS.prefix4} dev ${HOST_NS.ifname}`,
      `ip -6 addr add ${HOST_NS.addr6}/${HOST_NS.prefix6} dev ${HOST_NS.ifname} nodad`,
      `ip route add default via ${HOST_NS.gw4}`,
      `ip -6 route add default via ${HOST_NS.gw6}`,
    ].join("\n");
    await nsRunOk(ns, "sh", ["-c", sh]);
    return body(ns);
  }, "tapir-host");
}
