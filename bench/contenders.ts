/**
 * The ways of connecting a fresh guest namespace to servers in the host
 * namespace, each as "the argument vector that runs this guest command",
 * at the default guest MTU ({@linkcode DEFAULT_MTU}) or another one.
 *
 * - tapir: `deno run -A main.ts ns --config-net -- CMD`, as root (how the
 *   project's own tests run it); the guest dials the gateway, which tapir
 *   maps to host loopback. Another MTU adds `-m MTU`.
 * - tapir-nooffload: the same with `--no-offload`: no checksum or
 *   segmentation offload on the tap, so every frame is built and
 *   checksummed by tapir at the guest's MTU.
 * - pasta: `pasta --config-net -- CMD` as {@linkcode BENCH_USER} (pasta
 *   refuses root). Port forwarding is off in both directions (`-t/-u/-T/-U
 *   none`), matching tapir's defaults, so both move only the traffic under
 *   test; pasta's default gateway mapping carries it to host loopback.
 *   Another MTU adds `-m MTU`.
 * - slirp4netns: a launcher script creates the guest with `unshare --user
 *   --map-root-user --net`, starts `slirp4netns --configure --mtu=MTU` on
 *   it and releases the command once slirp4netns says it is ready; host
 *   loopback is 10.0.2.2 (slirp4netns allows it by default).
 * - veth: a launcher script creates the guest with `unshare --net` and a veth
 *   pair (both ends at the MTU, 65520 by default like the translators' taps)
 *   into it: no translator at all, the kernel-only ceiling.
 *
 * The launchers hold the command back until the network is configured, the
 * way pasta and tapir do with `--config-net`, so "the command runs" means the
 * same thing for every contender. Both pass a one-byte go-ahead through a
 * FIFO; anything but "1" (the configurer died) stops the command.
 *
 * @module
 */

import { BENCH_USER, denoInHost, type HostEnv, inHost, VETH_GUEST, VETH_SERVER } from "./hostns.ts";
import { type ContenderName, DEFAULT_MTU } from "./metrics.ts";

/** How the harness starts and measures one contender. */
export interface Contender {
  /** Its name. */
  readonly name: ContenderName;
  /** Address the servers bind in the host namespace. */
  readonly serverAddr: string;
  /** Address the guest dials to reach them. */
  readonly target: string;
  /**
   * `comm` prefixes of the translator's processes (Debian's pasta shows up as
   * `passt.avx2` on CPUs with AVX2); empty: kernel only.
   */
  readonly translatorComms: readonly string[];
  /** Why it cannot run on this machine, or null. */
  unavailable(): string | null;
  /**
   * Argument vector (run from the root namespace) that runs `guest`
   * connected by this contender, with guest MTU `mtu` (default
   * {@linkcode DEFAULT_MTU}). `control` false leaves tapir's control socket
   * out: the start-up runs do, as none of the others has one, and tapir
   * holds the command back until a control socket it was given listens.
   */
  command(guest: readonly string[], mtu?: number, control?: boolean): string[];
  /** Environment for {@linkcode Contender.command}; undefined keeps the harness's. */
  readonly env?: Record<string, string>;
  /** tapir's control socket (`--api-socket`), for its runtime statistics; absent for the others. */
  readonly apiSocket?: string;
}

const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Launcher for slirp4netns; runs as the unprivileged user. */
const SLIRP_LAUNCHER = `#!/bin/bash
# usage: slirp.sh SYNC MTU CMD [ARGS...]
set -u
sync=$1; mtu=$2; shift 2
mkfifo "$sync" || exit 98
unshare --user --map-root-user --net -- sh -c \\
  ': > "$0.up"; read -r go < "$0"; [ "$go" = 1 ] || exit 97; exec "$@"' "$sync" "$@" &
guest=$!
trap 'kill "$guest" "\${slirp:-}" 2>/dev/null' EXIT
trap 'exit 143' TERM INT
# The namespaces exist once the guest shell runs (it marks SYNC.up).
until [ -e "$sync.up" ]; do
  kill -0 "$guest" 2>/dev/null || { wait "$guest"; exit $?; }
  sleep 0.001
done
slirp4netns --configure --mtu="$mtu" --ready-fd=3 "$guest" tap0 3>"$sync" >&2 &
slirp=$!
wait "$guest"
`;

/** Launcher for the plain veth pair; runs as root in the host namespace. */
const VETH_LAUNCHER = `#!/bin/bash
# usage: veth.sh SYNC HOSTIF MTU CMD [ARGS...]
set -u
sync=$1; hostif=$2; mtu=$3; shift 3
mkfifo "$sync" || exit 98
unshare --net -- sh -c \\
  ': > "$0.up"; read -r go < "$0"; [ "$go" = 1 ] || exit 97; exec "$@"' "$sync" "$@" &
guest=$!
trap 'ip link del "$hostif" 2>/dev/null; kill "$guest" 2>/dev/null' EXIT
trap 'exit 143' TERM INT
until [ -e "$sync.up" ]; do
  kill -0 "$guest" 2>/dev/null || { wait "$guest"; exit $?; }
  sleep 0.001
done
go=0
ip link add "$hostif" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$guest" &&
  ip link set "$hostif" up &&
  ip route add ${VETH_GUEST}/32 dev "$hostif" &&
  nsenter -t "$guest" -n sh -c 'ip link set lo up && ip link set eth0 up &&
    ip addr add ${VETH_GUEST}/24 dev eth0 && ip route add default via ${VETH_SERVER}' &&
  go=1
echo "$go" > "$sync"
wait "$guest"
`;

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function findTool(name: string): string | null {
  for (const dir of PATH.split(":")) if (exists(`${dir}/${name}`)) return `${dir}/${name}`;
  return null;
}

function missing(...tools: string[]): string | null {
  const gone = tools.filter((t) => findTool(t) === null);
  return gone.length ? `${gone.join(", ")} not installed` : null;
}

/** Writes the launcher scripts into the sandbox; call once before {@linkcode contenders}. */
export async function writeLaunchers(env: HostEnv): Promise<void> {
  await Deno.writeTextFile(`${env.dir}/slirp.sh`, SLIRP_LAUNCHER, { mode: 0o755 });
  await Deno.writeTextFile(`${env.dir}/veth.sh`, VETH_LAUNCHER, { mode: 0o755 });
}

let launchCount = 0;

/** `-m MTU` for a translator that takes it, nothing at its default. */
function mtuOption(mtu: number): string[] {
  return mtu === DEFAULT_MTU ? [] : ["-m", String(mtu)];
}

/** The contenders, wired to `env`. `mainTs` is tapir's entry point. */
export function contenders(env: HostEnv, mainTs: string): Contender[] {
  const asUser = [
    "setpriv",
    "--reuid",
    String(env.uid),
    "--regid",
    String(env.gid),
    "--clear-groups",
  ];
  const userEnv = { PATH, HOME: env.userDir, LANG: "C" };
  const tapir = (name: ContenderName, options: readonly string[]): Contender => ({
    name,
    serverAddr: "127.0.0.1",
    target: "192.0.2.1",
    translatorComms: ["deno"],
    apiSocket: `${env.dir}/api-${name}.sock`,
    unavailable: () => exists(mainTs) ? null : `${mainTs} not found`,
    command: (guest, mtu = DEFAULT_MTU, control = true) =>
      denoInHost(env.ns, mainTs, [
        "ns",
        "--config-net",
        "-q",
        ...(control ? ["--api-socket", `${env.dir}/api-${name}.sock`] : []),
        ...mtuOption(mtu),
        ...options,
        "--",
        ...guest,
      ]),
  });
  return [
    tapir("tapir", []),
    tapir("tapir-nooffload", ["--no-offload"]),
    {
      name: "pasta",
      serverAddr: "127.0.0.1",
      target: "192.0.2.1",
      translatorComms: ["pasta", "passt"],
      unavailable: () => missing("pasta", "setpriv"),
      env: userEnv,
      command: (guest, mtu = DEFAULT_MTU) =>
        inHost(env.ns, [
          ...asUser,
          "pasta",
          "-f",
          "-q",
          "--config-net",
          ...mtuOption(mtu),
          ...["-t", "none", "-u", "none", "-T", "none", "-U", "none"],
          "--",
          ...guest,
        ]),
    },
    {
      name: "slirp4netns",
      serverAddr: "127.0.0.1",
      target: "10.0.2.2",
      translatorComms: ["slirp4netns"],
      unavailable: () => missing("slirp4netns", "unshare", "setpriv", "bash"),
      env: userEnv,
      command: (guest, mtu = DEFAULT_MTU) =>
        inHost(env.ns, [
          ...asUser,
          "bash",
          `${env.dir}/slirp.sh`,
          `${env.userDir}/sync-${++launchCount}`,
          String(mtu),
          ...guest,
        ]),
    },
    {
      name: "veth",
      serverAddr: VETH_SERVER,
      target: VETH_SERVER,
      translatorComms: [],
      unavailable: () => missing("unshare", "nsenter", "bash"),
      command: (guest, mtu = DEFAULT_MTU) => {
        const n = ++launchCount;
        return inHost(env.ns, [
          "bash",
          `${env.dir}/veth.sh`,
          `${env.dir}/sync-${n}`,
          `vb${n}`,
          String(mtu),
          ...guest,
        ]);
      },
    },
  ];
}

/** The user the rootless contenders run as (for the report). */
export const ROOTLESS_USER = BENCH_USER;
