/**
 * errno values and the error type for failed system calls.
 *
 * How failures surface, for the whole project: every wrapper in
 * `lib/sys/mod.ts` returns the call's result when it succeeds and the
 * **negated errno** when it fails (the kernel's own convention), so a hot
 * path compares `rc === -EAGAIN` without allocating or throwing. Code that
 * cannot continue after a failure (set-up, tests) passes the result through
 * {@linkcode sysCheck}, which throws a {@linkcode SysError} carrying the errno
 * number and its name.
 *
 * The numbers are Linux's generic ones, identical on x86_64 and aarch64.
 *
 * @module
 */

/** errno numbers by name (Linux, generic: x86_64 and aarch64 agree). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  EPROTO: 71,
  EOVERFLOW: 75,
  ENOTSOCK: 88,
  EDESTADDRREQ: 89,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENETRESET: 102,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ESHUTDOWN: 108,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTDOWN: 112,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ECANCELED: 125,
} as const;

/** Name of one errno value. */
export type ErrnoName = keyof typeof Errno;

const NAMES = new Map<number, ErrnoName>(
  (Object.entries(Errno) as [ErrnoName, number][]).map(([name, n]) => [n, name]),
);

/** The symbolic name of `errno` (`EAGAIN`), or `E<number>` for one not in the table. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `E${errno}`;
}

/** A system call failed: thrown only by {@linkcode sysCheck}, never on the hot path. */
export class SysError extends Error {
  /** The positive errno value. */
  readonly errno: number;
  /** Its symbolic name, e.g. `ECONNREFUSED`. */
  readonly code: string;
  /** The call (and context) that failed, e.g. `connect`. */
  readonly syscall: string;

  /** Builds the error for a failed `syscall` with positive `errno`. */
  constructor(syscall: string, errno: number) {
    const code = errnoName(errno);
    super(`${syscall}: ${code}`);
    this.name = "SysError";
    this.errno = errno;
    this.code = code;
    this.syscall = syscall;
  }
}

/**
 * Returns `rc` unchanged if it is not negative; otherwise throws a
 * {@linkcode SysError} for errno `-rc`. For set-up code that cannot go on
 * after a failure.
 */
export function sysCheck(rc: number, syscall: string): number {
  if (rc < 0) throw new SysError(syscall, -rc);
  return rc;
}
