/**
 * The sandbox: what tapir gives up once it is set up.
 *
 * # Theory of operation
 *
 * tapir parses every byte an untrusted guest sends. Should a bug ever let a
 * guest run code in tapir, that code should find a process that can only
 * do what forwarding needs. Set-up needs much more — entering or creating
 * namespaces, opening the tap, starting the command, re-executing itself —
 * so the sandbox is applied once all of that is done, right before the
 * loop runs ({@linkcode applySandbox}, called by both modes and so by the
 * engines' contracts), unless `--no-sandbox` is given.
 *
 * 1. `PR_SET_NO_NEW_PRIVS`: no later `execve` could gain privileges (setuid
 *    binaries, file capabilities). The kernel requires it of an
 *    unprivileged process before it takes a seccomp filter.
 * 2. A seccomp filter on every thread of the process
 *    (`SECCOMP_FILTER_FLAG_TSYNC`: Deno runs V8's and tokio's threads
 *    besides tapir's own, and the namespace worker; threads made later
 *    inherit it, and `no_new_privs` with it). It is a denylist (see
 *    `sys/seccomp.ts` for why not an allowlist): the calls in
 *    {@linkcode SANDBOX_DENIED} fail with `EPERM`, a new process (`clone`
 *    without `CLONE_THREAD`, `fork`, `vfork`) too, and `clone3` with
 *    `ENOSYS` so that threads are made through `clone`.
 * 3. Capabilities: every thread keeps only {@linkcode SANDBOX_KEPT_CAPS}
 *    (of those it had), in its effective and permitted sets, and none
 *    inheritable (which clears the ambient set). Capabilities are per
 *    thread, so this goes through `sys/threads.ts`, which makes the
 *    `capset` on every thread. The bounding set is left: it only limits
 *    what an `execve` could gain, and there is none after this.
 *    Kept: `CAP_NET_BIND_SERVICE`, because the control socket (and the
 *    slirp4netns API) may add a forward on a port below 1024 at any time.
 *    Nothing else tapir does once set up needs a capability: its sockets
 *    toward the host are ordinary ones, ping sockets depend on
 *    `net.ipv4.ping_group_range` rather than a capability, the tap is open
 *    already, and the command it may signal is its own user's.
 * 4. Landlock (any ABI; the rights a kernel knows are the ones handled):
 *    every thread is restricted, through `sys/threads.ts` as well, to
 *    reading beneath `/proc/self` and `/proc/sys/net` (its own status and
 *    memory, the namespace's sockets for port scans, port ranges),
 *    creating and writing files beneath the capture directory (`pcap-start`
 *    on the control socket; {@linkcode captureDirOf}), and removing files
 *    in the directories of the files it removes on exit (control socket,
 *    pid file, VM socket). Files open before (the tap, the log, a `--pcap`
 *    capture) stay usable: Landlock checks at open. TCP is not restricted
 *    (the guest may connect anywhere) and neither is signalling (tapir ends
 *    its command).
 *
 * Applied as 1, then 3 and 4 in one round over the threads (with
 * `no_new_privs` again on each, which `landlock_restrict_self` wants of its
 * own thread), then 2 last.
 *
 * Measured with `strace -f -Y` over a namespace run (`--config-net`, a `-t`
 * forward, a capture, the control socket answering `stats`, a TCP and a
 * UDP exchange from the command): once the filter was in, tapir's threads
 * made 43 different calls, none of them denied and none refused; before
 * it, set-up had made `unshare`, and `clone3` and `execve` for the command.
 *
 * Cost: a filtered system call pays the kernel's seccomp entry work. One
 * million `fcntl(F_GETFD)` from Deno took 403–410 ns each before the filter
 * and 433–458 after it; an allow-all filter cost the same, so the length of
 * the list does not show (the kernel caches verdicts that depend on the
 * call number alone).
 *
 * `TAPIR_SANDBOX_PROBE_EXEC=PROGRAM` in the environment makes tapir try to
 * start PROGRAM right after confining itself and log what happened: how
 * the end-to-end tests show a forbidden action failing in a running tapir.
 *
 * @module
 */

import { logDebug, logWarn } from "./log.ts";
import * as sys from "./sys/mod.ts";
import { onEveryThread, type ThreadCall } from "./sys/threads.ts";

/** Capabilities tapir keeps after set-up (if it had them); see the module comment. */
export const SANDBOX_KEPT_CAPS: readonly number[] = [10]; // CAP_NET_BIND_SERVICE
/** `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets in two 32-bit halves. */
const CAP_VERSION_3 = 0x20080522;

/**
 * The calls the filter denies, by why tapir never needs them after set-up.
 * Names an architecture does not have are skipped there.
 */
export const SANDBOX_DENIED: Readonly<Record<string, readonly sys.SyscallName[]>> = {
  /** Running programs: the command was started during set-up. */
  "new programs": ["execve", "execveat", "fork", "vfork"],
  /** Reading or steering other processes. */
  "other processes": ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"],
  /** Namespaces were entered during set-up. */
  "namespaces": ["setns", "unshare"],
  /** The file system's shape. */
  "mounts": [
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "open_tree",
    "move_mount",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
  ],
  /** The kernel itself. */
  "kernel": [
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "lookup_dcookie",
    "uselib",
    "nfsservctl",
    "personality",
    "iopl",
    "ioperm",
    "syslog",
    "fanotify_init",
  ],
  /** Keys of the kernel's keyring. */
  "keys": ["keyctl", "add_key", "request_key"],
  /** Machine-wide settings. */
  "system": [
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "sethostname",
    "setdomainname",
  ],
  /** Identities: tapir never changes its own. */
  "identity": [
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "setgroups",
    "setfsuid",
    "setfsgid",
  ],
};

/** See the module comment: a program to try to start once confined (tests only). */
export const SANDBOX_PROBE_ENV = "TAPIR_SANDBOX_PROBE_EXEC";

/** What {@linkcode applySandbox} put in place. */
export interface SandboxReport {
  /** `no_new_privs` is set. */
  readonly noNewPrivs: boolean;
  /** The seccomp filter is on every thread. */
  readonly seccomp: boolean;
  /** The permitted capabilities every thread was left with (a mask), or null if not dropped. */
  readonly capabilities: bigint | null;
  /** The Landlock ABI every thread is restricted with, or null. */
  readonly landlock: number | null;
}

/** The seccomp filter for the architecture tapir runs on, or null if it has no table. */
export function sandboxFilter(arch: string = Deno.build.arch): Uint8Array | null {
  if (arch !== "x86_64" && arch !== "aarch64") return null;
  const numbers: number[] = [];
  for (const names of Object.values(SANDBOX_DENIED)) {
    for (const name of names) {
      const nr = sys.syscallNumber(arch, name);
      if (nr !== null) numbers.push(nr);
    }
  }
  return sys.buildDenyFilter(sys.seccompArch(arch), numbers);
}

/** Files a run declared at start, which the Landlock rules let it use (see the module comment). */
export interface SandboxFiles {
  /** Where captures may be started (`--pcap-dir`, or its default), or null for nowhere. */
  readonly captureDir: string | null;
  /** Files tapir removes when it exits (control socket, pid file, VM socket). */
  readonly removable: readonly string[];
}

/** The files of a run with none declared. */
export const NO_SANDBOX_FILES: SandboxFiles = { captureDir: null, removable: [] };

/**
 * The capture directory of a run: `--pcap-dir`, else the directory of
 * `--pcap`, else `$TMPDIR` or /tmp.
 */
export function captureDirOf(conf: { pcap: string | null; pcapDir: string | null }): string {
  if (conf.pcapDir !== null) return conf.pcapDir;
  if (conf.pcap !== null) return parentDir(conf.pcap);
  return Deno.env.get("TMPDIR") || "/tmp";
}

/**
 * The files of a run from its options (`--pcap`, `--pcap-dir`, the control
 * socket, the pid file) and `more` files it removes on exit.
 */
export function sandboxFilesOf(
  conf: {
    pcap: string | null;
    pcapDir: string | null;
    apiSocket: string | null;
    pidFile: string | null;
  },
  ...more: (string | null)[]
): SandboxFiles {
  const removable = [conf.apiSocket, conf.pidFile, ...more].filter((f) => f !== null);
  return { captureDir: captureDirOf(conf), removable };
}

/**
 * Applies the sandbox of the module comment to the whole process, with
 * Landlock rules for `files`. A step the kernel refuses is logged as a
 * warning and the run goes on without it: forwarding does not depend on
 * it. Returns what is in place.
 */
export function applySandbox(files: SandboxFiles = NO_SANDBOX_FILES): SandboxReport {
  const nnp = sys.prctl(sys.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (nnp < 0) {
    logWarn(`sandbox: PR_SET_NO_NEW_PRIVS: ${sys.errnoName(-nnp)}; running without a sandbox`);
    return { noNewPrivs: false, seccomp: false, capabilities: null, landlock: null };
  }
  const ruleset = landlockRuleset(files);
  const { capabilities, landlock } = perThread(ruleset);
  if (ruleset !== null) sys.close(ruleset.fd);
  const filter = sandboxFilter();
  let seccomp = false;
  if (filter === null) {
    logWarn(`sandbox: no system call table for ${Deno.build.arch}; no seccomp filter`);
  } else {
    const rc = sys.seccompSetFilter(filter, sys.SECCOMP_FILTER_FLAG_TSYNC);
    if (rc === 0) {
      seccomp = true;
    } else {
      const why = rc < 0 ? sys.errnoName(-rc) : `thread ${rc} could not take it`;
      logWarn(`sandbox: seccomp filter: ${why}; running without it`);
    }
  }
  logDebug(
    `sandbox: no_new_privs, capabilities ${capabilities?.toString(16) ?? "kept"}, ` +
      `Landlock ${landlock === null ? "off" : `ABI ${landlock}`}, ` +
      `seccomp ${seccomp ? `filter of ${filter!.length / sys.BPF_INSN_SIZE} instructions` : "off"}`,
  );
  if (seccomp) probeExec();
  return { noNewPrivs: true, seccomp, capabilities, landlock };
}

/** A Landlock ruleset ready to restrict threads to, and the ABI it was made for. */
interface Ruleset {
  readonly fd: number;
  readonly abi: number;
}

/**
 * Step 4 of the module comment: the ruleset for `files`, or null (logged)
 * if the kernel has no Landlock or refused it.
 */
function landlockRuleset(files: SandboxFiles): Ruleset | null {
  const abi = sys.landlockAbi();
  if (abi < 0) {
    logWarn(`sandbox: no Landlock (${sys.errnoName(-abi)}); the file system stays open`);
    return null;
  }
  const all = sys.landlockFsRights(abi);
  const fd = sys.landlockCreateRuleset(all);
  if (fd < 0) {
    logWarn(`sandbox: Landlock ruleset: ${sys.errnoName(-fd)}; the file system stays open`);
    return null;
  }
  const F = sys.LandlockFs;
  const grants: [string, bigint][] = [
    ["/proc/self", F.READ_FILE | F.READ_DIR],
    ["/proc/sys/net", F.READ_FILE | F.READ_DIR],
  ];
  if (files.captureDir !== null) {
    grants.push([files.captureDir, F.MAKE_REG | F.WRITE_FILE | F.TRUNCATE]);
  }
  for (const file of files.removable) grants.push([parentDir(file), F.REMOVE_FILE]);
  for (const [path, rights] of grants) {
    const dir = sys.open(path, sys.O_PATH | sys.O_CLOEXEC);
    if (dir < 0) {
      logDebug(`sandbox: Landlock: ${path}: ${sys.errnoName(-dir)}; no rule for it`);
      continue;
    }
    const rc = sys.landlockAddPathBeneath(fd, dir, rights & all);
    sys.close(dir);
    if (rc < 0) logWarn(`sandbox: Landlock rule for ${path}: ${sys.errnoName(-rc)}`);
  }
  return { fd, abi };
}

/**
 * Steps 3 and 4 on every thread through `sys/threads.ts`: `no_new_privs`
 * (which `landlock_restrict_self` wants of its thread), the Landlock domain,
 * the capabilities. Returns the capabilities every thread was left with and
 * the Landlock ABI in force, each null (logged) if not on every thread.
 */
function perThread(ruleset: Ruleset | null): {
  capabilities: bigint | null;
  landlock: number | null;
} {
  const none = { capabilities: null, landlock: null };
  const status = Deno.readTextFileSync("/proc/self/status");
  const m = /^CapPrm:\s*([0-9a-f]+)$/m.exec(status);
  let keep = 0n;
  for (const cap of SANDBOX_KEPT_CAPS) keep |= 1n << BigInt(cap);
  keep &= m === null ? 0n : BigInt(`0x${m[1]}`);
  const header = new Uint8Array(8); // struct __user_cap_header_struct: version, pid 0 (this thread)
  new DataView(header.buffer).setUint32(0, CAP_VERSION_3, true);
  const data = new Uint8Array(24); // two struct __user_cap_data_struct: effective, permitted, inheritable
  const d = new DataView(data.buffer);
  for (let half = 0; half < 2; half++) {
    const bits = Number((keep >> BigInt(32 * half)) & 0xffffffffn);
    d.setUint32(12 * half, bits, true);
    d.setUint32(12 * half + 4, bits, true);
  }
  const arch = Deno.build.arch as "x86_64" | "aarch64";
  const calls: ThreadCall[] = [
    { nr: sys.syscallNumber(arch, "prctl") ?? -1, args: [sys.PR_SET_NO_NEW_PRIVS, 1] },
    { nr: sys.syscallNumber(arch, "capset") ?? -1, args: [header, data] },
  ];
  if (ruleset !== null) {
    calls.push({ nr: sys.SYSCALL_NUMBERS[arch].landlock_restrict_self, args: [ruleset.fd, 0] });
  }
  const r = onEveryThread(calls);
  if (r === null || typeof r === "number") {
    const why = r === null ? `no per-thread system calls on ${arch}` : sys.errnoName(-r);
    logWarn(`sandbox: ${why}; capabilities kept, the file system stays open`);
    return none;
  }
  if (r.missed > 0) {
    logWarn(`sandbox: ${r.missed} thread(s) did not answer; capabilities and Landlock not sure`);
    return none;
  }
  if (r.failures[1] > 0) logWarn(`sandbox: capset failed on ${r.failures[1]} thread(s)`);
  if (r.failures[2] > 0) logWarn(`sandbox: Landlock failed on ${r.failures[2]} thread(s)`);
  return {
    capabilities: m !== null && r.failures[0] + r.failures[1] === 0 ? keep : null,
    landlock: ruleset !== null && r.failures[0] + r.failures[2] === 0 ? ruleset.abi : null,
  };
}

/** The directory `path` is in. */
function parentDir(path: string): string {
  const at = path.lastIndexOf("/");
  return at < 0 ? "." : at === 0 ? "/" : path.slice(0, at);
}

/** The test hook of the module comment. */
function probeExec(): void {
  const program = Deno.env.get(SANDBOX_PROBE_ENV);
  if (!program) return;
  let outcome: string;
  try {
    const child = new Deno.Command(program, { stdin: "null", stdout: "null", stderr: "null" })
      .spawn();
    outcome = `started (pid ${child.pid})`;
  } catch (err) {
    outcome = `refused: ${(err as Error).name}`;
  }
  logWarn(`sandbox probe: exec ${program}: ${outcome}`);
}
