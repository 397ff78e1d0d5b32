/**
 * Real podman (4.3, as root, runc) in end-to-end tests, with its
 * `slirp4netns` network helper chosen by the test: the real slirp4netns or
 * tapir standing in for it (tests/helpers/engines.ts).
 *
 * Everything podman does stays in the test's own places:
 *
 * - it runs in a host namespace made by tests/helpers/netns.ts, entered with
 *   `nsenter --net` (not `ip netns exec`, which remounts /sys and so hides the
 *   cgroup mounts runc needs);
 * - in a private mount namespace (`unshare -m`) where /run, /var/lib,
 *   /var/tmp and /dev/shm are bind mounts of directories in the sandbox and
 *   /etc/resolv.conf is the test's file, so podman's fixed paths (libpod's
 *   lock in /dev/shm, /run/containers, /var/lib/containers/cache, runc's
 *   /run/runc, the container's /run/netns file) never reach the machine's, and
 *   the network helper resolves through the test's stub resolver;
 * - with its own containers.conf (`CONTAINERS_CONF`), storage.conf and
 *   registries.conf, `--root`, `--runroot`, `--tmpdir`, `XDG_RUNTIME_DIR`,
 *   vfs storage, and a cgroup parent of its own that is removed afterwards.
 *
 * The network helper is reached through a wrapper that logs each argument
 * vector podman passes to it and then `exec`s the helper.
 *
 * The container's own /etc/resolv.conf, as podman writes it from a loopback
 * resolver, is `nameserver 10.0.2.3` followed by Google's public servers
 * (podman's fallback); tests name 10.0.2.3 explicitly (`nslookup NAME
 * 10.0.2.3`), and the dead-end host namespace keeps the rest unreachable.
 *
 * @module
 */

import { engineWrapper } from "./engines.ts";
import type { RunResult } from "./netns.ts";

/** The reference slirp4netns (Debian's package). */
export const REAL_SLIRP4NETNS = "/usr/bin/slirp4netns";

/** Name of the image {@linkcode Podman.importBusybox} makes. */
export const BUSYBOX_IMAGE = "localhost/tapir-busybox:test";

const dec = new TextDecoder();

/** A finished command, with how long it took. */
export interface TimedResult extends RunResult {
  /** Wall-clock time in milliseconds. */
  readonly ms: number;
}

function describe(cmd: string, args: string[]): string {
  return [cmd, ...args].join(" ");
}

/** A command finished (or killed) after {@linkcode start}. */
export interface Finished extends TimedResult {
  /** Whether it was killed for running out of time. */
  readonly timedOut: boolean;
}

/** A command running in the background, see {@linkcode start}. */
export interface Started {
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** Resolves when it has exited, with its output. */
  readonly done: Promise<Finished>;
}

/**
 * Starts `cmd args` with stdout and stderr piped, and kills it (SIGKILL)
 * if it still runs after `ms` milliseconds.
 */
export function start(
  cmd: string,
  args: string[],
  ms: number,
  opts: Deno.CommandOptions = {},
): Started {
  const begin = Date.now();
  const child = new Deno.Command(cmd, {
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...opts,
    args,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, ms);
  const done = child.output().then((out) => ({
    code: out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
    ms: Date.now() - begin,
    timedOut,
  })).finally(() => clearTimeout(timer));
  return { child, done };
}

/**
 * Runs `cmd args` to completion, but kills it (SIGKILL) after `ms`
 * milliseconds and then throws with the output so far, so that a hang fails
 * the test instead of blocking it. Never throws on exit status.
 */
export async function runFor(
  cmd: string,
  args: string[],
  ms: number,
  opts: Deno.CommandOptions = {},
): Promise<TimedResult> {
  const r = await start(cmd, args, ms, opts).done;
  if (r.timedOut) {
    throw new Error(
      `timed out after ${ms} ms: ${
        describe(cmd, args)
      }\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`,
    );
  }
  return r;
}

/** Like {@linkcode runFor}, but also throws if the command fails; returns its stdout. */
export async function runForOk(
  cmd: string,
  args: string[],
  ms: number,
  opts: Deno.CommandOptions = {},
): Promise<string> {
  const r = await runFor(cmd, args, ms, opts);
  if (r.code !== 0) {
    throw new Error(`${describe(cmd, args)} failed (${r.code}):\n${r.stdout}${r.stderr}`);
  }
  return r.stdout;
}

/** `n` random bytes. */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(buf.subarray(off, Math.min(n, off + 65536)));
  }
  return buf;
}

/** SHA-256 of `data` as lowercase hex, as `sha256sum` prints it. */
export async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Waits until something is bound to UDP `port` in namespace `ns` (up to `ms`). */
export async function waitUdpBound(ns: string, port: number, ms = 5_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    const r = await runFor("ip", ["netns", "exec", ns, "ss", "-Hlun", `sport = :${port}`], 5_000);
    if (r.stdout.trim() !== "") return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`nothing is bound to UDP port ${port} in ${ns}`);
}

/**
 * Waits until `path` exists; fails early if `exited` (a child's status)
 * resolves first, and after `ms` milliseconds.
 */
export async function waitFileWhile(
  path: string,
  exited: Promise<unknown>,
  ms: number,
): Promise<void> {
  let gone = false;
  exited.then(() => gone = true, () => gone = true);
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (await Deno.stat(path).then(() => true, () => false)) return;
    if (gone) throw new Error(`the process exited before ${path} appeared`);
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`${path} did not appear within ${ms} ms`);
}

/**
 * The network helper for podman's slirp4netns network: the real
 * {@linkcode REAL_SLIRP4NETNS} if `reference`, else tapir run as
 * `slirp4netns` by a wrapper written in `dir` (see `engineWrapper`).
 */
export function slirp4netnsHelper(dir: string, reference: boolean): Promise<string> {
  return reference ? Promise.resolve(REAL_SLIRP4NETNS) : engineWrapper("slirp4netns", dir);
}

/**
 * Process ids whose command line has an argument for which `test` holds
 * (given the argument and the whole argument vector). A zombie's command
 * line reads empty: it has ended, and is not counted.
 */
export async function pidsWhere(
  test: (arg: string, i: number, argv: string[]) => boolean,
): Promise<number[]> {
  const pids: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    let cmdline: string;
    try {
      cmdline = await Deno.readTextFile(`/proc/${e.name}/cmdline`);
    } catch {
      continue; // exited meanwhile
    }
    if (cmdline.split("\0").some(test)) pids.push(Number(e.name));
  }
  return pids;
}

/** Options of {@linkcode withPodman}. */
export interface PodmanOptions {
  /** Returns the network helper's path; may write files in `dir` (a fresh directory). */
  helper: (dir: string) => Promise<string>;
  /** Contents of /etc/resolv.conf as podman and its network helper see it. */
  resolvConf: string;
}

/** One invocation of the network helper: its arguments (without argv[0]). */
export type HelperCall = string[];

/** Sets up a podman sandbox in host namespace `host`; see {@linkcode withPodman}. */
export class Podman {
  /** The sandbox directory (removed by {@linkcode Podman.cleanup}). */
  readonly dir: string;
  /** The host namespace podman runs in. */
  readonly host: string;
  /** podman's `--tmpdir`, where it puts the helper's API socket. */
  readonly tmpDir: string;
  /** The cgroup parent of this sandbox's containers and their conmon (see {@linkcode Podman.podmanArgs}). */
  readonly cgroupParent: string;
  readonly #script: string;
  readonly #argvLog: string;

  private constructor(dir: string, host: string) {
    this.dir = dir;
    this.host = host;
    this.tmpDir = `${dir}/tmp`;
    this.cgroupParent = `/${dir.split("/").pop()}`;
    this.#script = `${dir}/podman-in-ns`;
    this.#argvLog = `${dir}/helper-argv.log`;
  }

  /**
   * Makes the sandbox: directories, configuration files, the argv-logging
   * wrapper around `opts.helper`, and the `DIR/podman-in-ns` script that
   * runs podman with all of it in namespace `host` (handy by hand, too).
   */
  static async create(host: string, opts: PodmanOptions): Promise<Podman> {
    const dir = await Deno.makeTempDir({ prefix: "tapir-podman-" });
    const p = new Podman(dir, host);
    try {
      await p.#setup(opts);
    } catch (e) {
      await p.cleanup();
      throw e;
    }
    return p;
  }

  async #setup(opts: PodmanOptions): Promise<void> {
    const d = this.dir;
    for (
      const sub of [
        "root",
        "runroot",
        "tmp",
        "xdg",
        "networks",
        "helper",
        "bin",
        "mnt/run",
        "mnt/varlib",
        "mnt/vartmp",
        "mnt/shm",
      ]
    ) {
      await Deno.mkdir(`${d}/${sub}`, { recursive: true });
    }
    const helper = await opts.helper(`${d}/helper`);
    // The helper's name stays `slirp4netns`; it only logs and execs.
    const wrapper = `${d}/bin/slirp4netns`;
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/bash\n{ printf '%s\\0' "$@"; printf '\\n'; } >> '${this.#argvLog}'\nexec '${helper}' "$@"\n`,
    );
    await Deno.chmod(wrapper, 0o755);
    await Deno.writeTextFile(`${d}/resolv.conf`, opts.resolvConf);
    await Deno.writeTextFile(
      `${d}/containers.conf`,
      [
        "[containers]",
        "default_ulimits = []",
        "[network]",
        'network_backend = "netavark"',
        `network_config_dir = "${d}/networks"`,
        "[engine]",
        'cgroup_manager = "cgroupfs"',
        'events_logger = "file"',
        `network_cmd_path = "${wrapper}"`,
        `tmp_dir = "${this.tmpDir}"`,
        "",
      ].join("\n"),
    );
    await Deno.writeTextFile(
      `${d}/storage.conf`,
      `[storage]\ndriver = "vfs"\ngraphroot = "${d}/root"\nrunroot = "${d}/runroot"\n`,
    );
    await Deno.writeTextFile(`${d}/registries.conf`, "unqualified-search-registries = []\n");
    // Re-executes itself in the host's network namespace and a private
    // mount namespace, hides the machine's podman paths there, then runs
    // podman. nsenter first: /run/netns/HOST is hidden afterwards.
    await Deno.writeTextFile(
      this.#script,
      `#!/bin/bash
set -e
if [ "$1" != --inside ]; then
  exec nsenter --net='/run/netns/${this.host}' -- unshare --mount --propagation private -- "$0" --inside "$@"
fi
shift
resolv=$(readlink -f /etc/resolv.conf)
mount --bind '${d}/mnt/run' /run
mount --bind '${d}/mnt/varlib' /var/lib
mount --bind '${d}/mnt/vartmp' /var/tmp
mount --bind '${d}/mnt/shm' /dev/shm
case "$resolv" in
  /run/*) mkdir -p "$(dirname "$resolv")"; cp '${d}/resolv.conf' "$resolv";;
  *) mount --bind '${d}/resolv.conf' "$resolv";;
esac
export CONTAINERS_CONF='${d}/containers.conf'
export CONTAINERS_STORAGE_CONF='${d}/storage.conf'
export CONTAINERS_REGISTRIES_CONF='${d}/registries.conf'
export XDG_RUNTIME_DIR='${d}/xdg' TMPDIR='${this.tmpDir}'
exec podman --root '${d}/root' --runroot '${d}/runroot' --tmpdir '${this.tmpDir}' \\
  --storage-driver vfs --runtime runc "$@"
`,
    );
    await Deno.chmod(this.#script, 0o755);
  }

  /**
   * The arguments of `podman ARGS` as this sandbox runs them: `run` and
   * `create` get `--pull=never` (nothing is ever fetched) and this
   * sandbox's `--cgroup-parent` (so the cgroups podman makes are this
   * sandbox's, removed by {@linkcode Podman.cleanup}).
   */
  podmanArgs(args: string[]): string[] {
    if (args[0] !== "run" && args[0] !== "create") return args;
    return [args[0], "--pull=never", `--cgroup-parent=${this.cgroupParent}`, ...args.slice(1)];
  }

  /** Argument vector of `podman ARGS` in the sandbox, for Deno.Command (see {@linkcode Podman.podmanArgs}). */
  command(args: string[]): [string, string[]] {
    return [this.#script, this.podmanArgs(args)];
  }

  /** Runs `podman ARGS` to completion, killed after `ms` (see {@linkcode runFor}, {@linkcode Podman.podmanArgs}). */
  run(args: string[], ms = 30_000): Promise<TimedResult> {
    return runFor(...this.command(args), ms);
  }

  /** Starts `podman ARGS` in the background, killed after `ms` (see {@linkcode start}, {@linkcode Podman.podmanArgs}). */
  start(args: string[], ms: number): Started {
    return start(...this.command(args), ms);
  }

  /**
   * Builds a busybox-static root file system (Debian's /bin/busybox with
   * its applets as symlinks, made by `busybox --install -s` in a chroot),
   * packs it as a tarball in the sandbox and `podman import`s it as
   * {@linkcode BUSYBOX_IMAGE}. Nothing is fetched.
   */
  async importBusybox(): Promise<void> {
    const rootfs = `${this.dir}/rootfs`;
    for (const sub of ["bin", "etc", "tmp", "proc", "sys", "dev", "root"]) {
      await Deno.mkdir(`${rootfs}/${sub}`, { recursive: true });
    }
    await Deno.chmod(`${rootfs}/tmp`, 0o1777);
    await Deno.copyFile("/bin/busybox", `${rootfs}/bin/busybox`);
    await Deno.chmod(`${rootfs}/bin/busybox`, 0o755);
    await runForOk("chroot", [rootfs, "/bin/busybox", "--install", "-s", "/bin"], 10_000);
    await Deno.writeTextFile(`${rootfs}/etc/passwd`, "root:x:0:0:root:/root:/bin/sh\n");
    await Deno.writeTextFile(`${rootfs}/etc/group`, "root:x:0:\n");
    const tarball = `${this.dir}/rootfs.tar`;
    await runForOk("tar", ["-C", rootfs, "--numeric-owner", "-cf", tarball, "."], 10_000);
    const r = await this.run(["import", "--quiet", tarball, BUSYBOX_IMAGE], 30_000);
    if (r.code !== 0) throw new Error(`podman import failed (${r.code}):\n${r.stdout}${r.stderr}`);
  }

  /** The argument vectors podman passed to the network helper so far, in order. */
  async helperCalls(): Promise<HelperCall[]> {
    const log = await Deno.readTextFile(this.#argvLog).catch(() => "");
    return log.split("\n").filter((l) => l !== "").map((l) => l.replace(/\0$/, "").split("\0"));
  }

  /**
   * Live processes of the network helper started for this sandbox: those
   * whose arguments include an API socket in {@linkcode Podman.tmpDir}
   * (podman's slirp4netns command line always has one).
   */
  helperPids(): Promise<number[]> {
    const prefix = `${this.tmpDir}/`;
    return pidsWhere((a, i, argv) => a.startsWith(prefix) && argv[i - 1] === "--api-socket");
  }

  /**
   * Removes everything: containers (`podman rm -af`), then any process
   * still mentioning the sandbox (conmon, the helper, podman), container
   * processes, this sandbox's cgroups, and the directory.
   */
  async cleanup(): Promise<void> {
    if (await Deno.stat(this.#script).then(() => true, () => false)) {
      await runFor(this.#script, ["rm", "--all", "--force", "--time", "0"], 20_000).catch(() => {});
    }
    for (const pid of await this.#containerPids()) kill(pid);
    for (const pid of await pidsWhere((a) => a.includes(this.dir))) kill(pid);
    await new Promise((res) => setTimeout(res, 100));
    await removeCgroups(this.cgroupParent);
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }

  async #containerPids(): Promise<number[]> {
    const pids: number[] = [];
    const base = `${this.dir}/runroot/vfs-containers`;
    try {
      for await (const e of Deno.readDir(base)) {
        const pid = await Deno.readTextFile(`${base}/${e.name}/userdata/pidfile`).catch(() => "");
        if (/^\d+$/.test(pid.trim())) pids.push(Number(pid.trim()));
      }
    } catch { /* no containers */ }
    return pids;
  }
}

function kill(pid: number): void {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch { /* gone */ }
}

/** Removes cgroup `path` (and the cgroups below it) from every cgroup hierarchy mounted. */
async function removeCgroups(path: string): Promise<void> {
  const info = await Deno.readTextFile("/proc/self/mountinfo");
  const mounts = info.split("\n").map((l) => l.split(" ")).filter((f) => {
    const sep = f.indexOf("-");
    return sep > 0 && (f[sep + 1] === "cgroup" || f[sep + 1] === "cgroup2");
  }).map((f) => f[4]);
  for (const m of mounts) await rmdirTree(`${m}${path}`);
}

async function rmdirTree(dir: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await rmdirTree(`${dir}/${e.name}`);
    }
    await Deno.remove(dir);
  } catch { /* absent, or still in use */ }
}

/**
 * Runs `body` with a podman sandbox in host namespace `host` (see
 * {@linkcode Podman}), cleaned up afterwards whatever happens.
 */
export async function withPodman<T>(
  host: string,
  opts: PodmanOptions,
  body: (podman: Podman) => Promise<T>,
): Promise<T> {
  const podman = await Podman.create(host, opts);
  try {
    return await body(podman);
  } finally {
    await podman.cleanup();
  }
}
