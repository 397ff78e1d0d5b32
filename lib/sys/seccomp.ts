/**
 * Seccomp filters in classic BPF, built here in TypeScript.
 *
 * # Theory of operation
 *
 * A seccomp filter is a classic-BPF program the kernel runs at every system
 * call of a thread, over `struct seccomp_data` (`nr` at offset 0, `arch` at
 * 4, the instruction pointer at 8, the six arguments from 16, each 64 bits,
 * little-endian here). Its return value is the verdict.
 *
 * tapir's filter is a *denylist* ({@linkcode buildDenyFilter}): everything
 * is allowed except system calls a network translator never needs once it
 * is set up (`lib/sandbox.ts` says which and why). Deno's runtime makes
 * calls tapir does not control (V8's memory management, tokio's threads),
 * and an allowlist that missed one of them would kill the process on some
 * rare path; the calls denied here are ones no part of the runtime makes
 * after start-up, checked with `strace -f` (see `lib/sandbox.ts`).
 *
 * Shape of the program:
 *
 * 1. `arch` must be the one the table was written for: a 32-bit or x32
 *    entry point would number calls differently and slip past the list, so
 *    any other architecture kills the process. On x86-64 the x32 numbers
 *    (bit 30 set) are refused the same way as the denied calls.
 * 2. `clone` is allowed only with `CLONE_THREAD` in its flags (a new thread
 *    of this process, which the runtime makes at any time); without it, it
 *    would be a new process.
 * 3. `clone3` passes its flags in memory, which a filter cannot read, so it
 *    fails with `ENOSYS`: the C library then falls back to `clone`, which
 *    rule 2 checks.
 * 4. Each denied number fails with `EPERM`; the rest is allowed.
 *
 * Jumps in classic BPF go forward only, by at most 255 instructions, so the
 * verdicts sit after the list and the list is limited accordingly.
 *
 * @module
 */

/** `SECCOMP_RET_*` actions (the high 16 bits of a verdict). */
export const SeccompRet = {
  KILL_PROCESS: 0x80000000,
  ERRNO: 0x00050000,
  ALLOW: 0x7fff0000,
} as const;

/** `SECCOMP_FILTER_FLAG_TSYNC`: install the filter on every thread of the process. */
export const SECCOMP_FILTER_FLAG_TSYNC = 1;
/** `SECCOMP_SET_MODE_FILTER`, the `seccomp(2)` operation. */
export const SECCOMP_SET_MODE_FILTER = 1;

/** Offsets in `struct seccomp_data`. */
export const SECCOMP_DATA_NR = 0;
export const SECCOMP_DATA_ARCH = 4;
/** The low 32 bits of the first argument (little-endian). */
export const SECCOMP_DATA_ARG0_LO = 16;

/** Classic BPF opcodes the filter uses. */
export const Bpf = {
  /** `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k. */
  LD_W_ABS: 0x20,
  /** `BPF_JMP | BPF_JEQ | BPF_K`: A == k ? jt : jf. */
  JEQ_K: 0x15,
  /** `BPF_JMP | BPF_JGE | BPF_K`: A >= k ? jt : jf. */
  JGE_K: 0x35,
  /** `BPF_JMP | BPF_JSET | BPF_K`: A & k ? jt : jf. */
  JSET_K: 0x45,
  /** `BPF_RET | BPF_K`: return k. */
  RET_K: 0x06,
} as const;

/** Bytes of one `struct sock_filter`: u16 code, u8 jt, u8 jf, u32 k. */
export const BPF_INSN_SIZE = 8;
/** The kernel's limit on a filter's length (`BPF_MAXINSNS`). */
const BPF_MAX_INSNS = 4096;
/** `CLONE_THREAD`. */
export const CLONE_THREAD = 0x00010000;
/** x32 system calls on x86-64 have this bit set in their number. */
const X32_SYSCALL_BIT = 0x40000000;
/** errno values the filter returns. */
const EPERM = 1;
const ENOSYS = 38;

/** What a filter is written for: the audit architecture and its system call numbers. */
export interface SeccompArch {
  /** `AUDIT_ARCH_*` of the architecture. */
  readonly auditArch: number;
  /** Whether numbers with bit 30 set (x86-64's x32 ABI) must be refused. */
  readonly x32: boolean;
  /** Numbers of `clone` and `clone3`. */
  readonly clone: number;
  readonly clone3: number;
}

/**
 * Builds the denylist filter of the module comment: `denied` (system call
 * numbers, without `clone`/`clone3`, which have their own rules) fail with
 * `EPERM`. Returns the `struct sock_filter` array as bytes.
 */
export function buildDenyFilter(arch: SeccompArch, denied: readonly number[]): Uint8Array {
  const list = [...new Set(denied)].filter((nr) => nr !== arch.clone && nr !== arch.clone3);
  // Verdict block after the list: allow, clone's check (2), allow, EPERM, ENOSYS.
  const insns: [number, number, number, number][] = [];
  const emit = (code: number, jt: number, jf: number, k: number) => insns.push([code, jt, jf, k]);
  emit(Bpf.LD_W_ABS, 0, 0, SECCOMP_DATA_ARCH);
  emit(Bpf.JEQ_K, 1, 0, arch.auditArch);
  emit(Bpf.RET_K, 0, 0, SeccompRet.KILL_PROCESS);
  emit(Bpf.LD_W_ABS, 0, 0, SECCOMP_DATA_NR);
  // Indices of the verdict block, known once the list's length is.
  const head = insns.length; // first rule after the load of nr
  const rules = (arch.x32 ? 1 : 0) + 2 + list.length;
  const allow = head + rules;
  const cloneCheck = allow + 1;
  const eperm = cloneCheck + 3;
  const enosys = eperm + 1;
  if (enosys - head > 255) throw new Error(`seccomp: ${list.length} denied calls are too many`);
  const to = (target: number) => target - insns.length - 1;
  if (arch.x32) emit(Bpf.JGE_K, to(eperm), 0, X32_SYSCALL_BIT);
  emit(Bpf.JEQ_K, to(cloneCheck), 0, arch.clone);
  emit(Bpf.JEQ_K, to(enosys), 0, arch.clone3);
  for (const nr of list) emit(Bpf.JEQ_K, to(eperm), 0, nr);
  emit(Bpf.RET_K, 0, 0, SeccompRet.ALLOW); // allow
  emit(Bpf.LD_W_ABS, 0, 0, SECCOMP_DATA_ARG0_LO); // cloneCheck
  emit(Bpf.JSET_K, 0, 1, CLONE_THREAD);
  emit(Bpf.RET_K, 0, 0, SeccompRet.ALLOW);
  emit(Bpf.RET_K, 0, 0, SeccompRet.ERRNO | EPERM); // eperm
  emit(Bpf.RET_K, 0, 0, SeccompRet.ERRNO | ENOSYS); // enosys
  if (insns.length > BPF_MAX_INSNS) throw new Error("seccomp: filter too long");
  const bytes = new Uint8Array(insns.length * BPF_INSN_SIZE);
  const view = new DataView(bytes.buffer);
  insns.forEach(([code, jt, jf, k], i) => {
    const at = i * BPF_INSN_SIZE;
    view.setUint16(at, code, true);
    view.setUint8(at + 2, jt);
    view.setUint8(at + 3, jf);
    view.setUint32(at + 4, k >>> 0, true);
  });
  return bytes;
}

/**
 * Numbers from 424 on are the same on every architecture (the kernel
 * allocates new calls in one table since Linux 5.1).
 */
const UNIFIED_NUMBERS = {
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  open_tree: 428,
  move_mount: 429,
  fsopen: 430,
  fsconfig: 431,
  fsmount: 432,
  fspick: 433,
  clone3: 435,
  pidfd_getfd: 438,
  mount_setattr: 442,
  quotactl_fd: 443,
  landlock_create_ruleset: 444,
  landlock_add_rule: 445,
  landlock_restrict_self: 446,
} as const;

/**
 * System call numbers the sandbox names, per architecture (from the
 * kernel's `asm/unistd_64.h` and `asm-generic/unistd.h`). aarch64 has no
 * `fork`, `vfork`, `create_module`, `iopl`, `ioperm` or `uselib`: names
 * missing from its table do not exist there.
 */
export const SYSCALL_NUMBERS = {
  x86_64: {
    ...UNIFIED_NUMBERS,
    execve: 59,
    execveat: 322,
    fork: 57,
    vfork: 58,
    clone: 56,
    ptrace: 101,
    process_vm_readv: 310,
    process_vm_writev: 311,
    kcmp: 312,
    setns: 308,
    unshare: 272,
    mount: 165,
    umount2: 166,
    pivot_root: 155,
    chroot: 161,
    init_module: 175,
    finit_module: 313,
    delete_module: 176,
    create_module: 174,
    kexec_load: 246,
    kexec_file_load: 320,
    reboot: 169,
    bpf: 321,
    perf_event_open: 298,
    userfaultfd: 323,
    keyctl: 250,
    add_key: 248,
    request_key: 249,
    swapon: 167,
    swapoff: 168,
    acct: 163,
    settimeofday: 164,
    clock_settime: 227,
    clock_adjtime: 305,
    adjtimex: 159,
    syslog: 103,
    quotactl: 179,
    lookup_dcookie: 212,
    iopl: 172,
    ioperm: 173,
    personality: 135,
    uselib: 134,
    vhangup: 153,
    nfsservctl: 180,
    sethostname: 170,
    setdomainname: 171,
    open_by_handle_at: 304,
    name_to_handle_at: 303,
    fanotify_init: 300,
    setuid: 105,
    setgid: 106,
    setreuid: 113,
    setregid: 114,
    setresuid: 117,
    setresgid: 119,
    setgroups: 116,
    setfsuid: 122,
    setfsgid: 123,
    seccomp: 317,
    capset: 126,
    prctl: 157,
  },
  aarch64: {
    ...UNIFIED_NUMBERS,
    execve: 221,
    execveat: 281,
    clone: 220,
    ptrace: 117,
    process_vm_readv: 270,
    process_vm_writev: 271,
    kcmp: 272,
    setns: 268,
    unshare: 97,
    mount: 40,
    umount2: 39,
    pivot_root: 41,
    chroot: 51,
    init_module: 105,
    finit_module: 273,
    delete_module: 106,
    kexec_load: 104,
    kexec_file_load: 294,
    reboot: 142,
    bpf: 280,
    perf_event_open: 241,
    userfaultfd: 282,
    keyctl: 219,
    add_key: 217,
    request_key: 218,
    swapon: 224,
    swapoff: 225,
    acct: 89,
    settimeofday: 170,
    clock_settime: 112,
    clock_adjtime: 266,
    adjtimex: 171,
    syslog: 116,
    quotactl: 60,
    lookup_dcookie: 18,
    personality: 92,
    vhangup: 58,
    nfsservctl: 42,
    sethostname: 161,
    setdomainname: 162,
    open_by_handle_at: 265,
    name_to_handle_at: 264,
    fanotify_init: 262,
    setuid: 146,
    setgid: 144,
    setreuid: 145,
    setregid: 143,
    setresuid: 147,
    setresgid: 149,
    setgroups: 159,
    setfsuid: 151,
    setfsgid: 152,
    seccomp: 277,
    capset: 91,
    prctl: 167,
  },
} as const;

/** A system call the tables name. */
export type SyscallName = keyof typeof SYSCALL_NUMBERS.x86_64;

/** `AUDIT_ARCH_*` values: the ELF machine, 64-bit, little-endian. */
const AUDIT_ARCH = { x86_64: 0xc000003e, aarch64: 0xc00000b7 } as const;

/** The filter's view of architecture `arch`. */
export function seccompArch(arch: "x86_64" | "aarch64"): SeccompArch {
  const nr = SYSCALL_NUMBERS[arch];
  return {
    auditArch: AUDIT_ARCH[arch],
    x32: arch === "x86_64",
    clone: nr.clone,
    clone3: nr.clone3,
  };
}

/** The number of `name` on `arch`, or null if that architecture has no such call. */
export function syscallNumber(arch: "x86_64" | "aarch64", name: SyscallName): number | null {
  return (SYSCALL_NUMBERS[arch] as Partial<Record<SyscallName, number>>)[name] ?? null;
}
