/**
 * The only place tapir calls libc.
 *
 * One `Deno.dlopen` of the C library, typed wrappers over the calls tapir
 * needs, and one convention for failure (see `errno.ts`): a wrapper returns
 * the call's result, or the negated errno. Nothing here throws on a failed
 * call; set-up code passes results through `sysCheck`.
 *
 * Cost model: a synchronous FFI call is a fraction of a microsecond, so the
 * busy loop makes many small calls freely. Only {@linkcode epollWaitAsync} is
 * declared `nonblocking`: Deno runs it on another thread (~25 µs per call) so
 * the event loop — child processes, signals — keeps running while tapir is
 * idle. Nothing else may block.
 *
 * errno is thread-local. Synchronous calls run on the calling thread, so the
 * value read right after a failed call is that call's; each Worker loads this
 * module afresh and so reads its own thread's errno. The nonblocking call
 * runs elsewhere and cannot report errno: see {@linkcode epollWaitAsync}.
 *
 * Results are declared `i32`, not `isize`: 64-bit results arrive as BigInt,
 * an allocation per call. Every length tapir passes is far below 2 GiB, so a
 * 32-bit result is exact and -1 stays -1.
 *
 * @module
 */

import { Errno, sysCheck } from "./errno.ts";
import { IovecArray, MMSGHDR_SIZE, MmsgHdrArray } from "./structs.ts";
import {
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  SCM_RIGHTS,
  SOL_SOCKET,
  SOL_UDP,
  UDP_SEGMENT,
} from "./consts.ts";

import { SECCOMP_SET_MODE_FILTER, SYSCALL_NUMBERS } from "./seccomp.ts";
import { LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH } from "./landlock.ts";

export * from "./consts.ts";
export * from "./errno.ts";
export * from "./structs.ts";
export * from "./seccomp.ts";
export * from "./landlock.ts";

/**
 * Every libc function tapir calls, as `Deno.dlopen` declares it. Binding one
 * costs ~0.2 ms (V8 builds a fast-call trampoline for it), ~10 ms for the
 * whole list, and each thread pays for its own; the namespace worker calls
 * a handful, and the main thread uses many only once traffic flows. So
 * `C` binds each on its first call ({@linkcode bindSymbol}), which keeps
 * that work off start-up. The bound function then replaces the stub in
 * place: V8 still emits its fast call (measured: 4 ns per call to `abs`
 * either way).
 */
const LIBC = {
  __errno_location: { parameters: [], result: "pointer" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  readv: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  writev: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  recvfrom: {
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"],
    result: "i32",
  },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "i32" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  recvmmsg: { parameters: ["i32", "buffer", "u32", "i32", "buffer"], result: "i32" },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  // ioctl, fcntl, open and prctl are variadic in C. On x86_64 and aarch64
  // Linux the variadic arguments used here travel exactly like fixed ones.
  ioctl: { parameters: ["i32", "usize", "buffer"], result: "i32" },
  ioctl_int: { name: "ioctl", parameters: ["i32", "usize", "usize"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "usize"], result: "i32" },
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  splice: {
    parameters: ["i32", "pointer", "i32", "pointer", "usize", "u32"],
    result: "i32",
  },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  epoll_wait_nb: {
    name: "epoll_wait",
    parameters: ["i32", "buffer", "i32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  usleep: { parameters: ["u32"], result: "i32" },
  timerfd_create: { parameters: ["i32", "i32"], result: "i32" },
  timerfd_settime: { parameters: ["i32", "i32", "buffer", "buffer"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  setns: { parameters: ["i32", "i32"], result: "i32" },
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  pidfd_open: { parameters: ["i32", "u32"], result: "i32" },
  posix_spawnp: {
    parameters: ["buffer", "buffer", "pointer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  waitid_nb: {
    name: "waitid",
    parameters: ["i32", "i32", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  madvise: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  mprotect: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  tgkill: { parameters: ["i32", "i32", "i32"], result: "i32" },
  prctl: { parameters: ["i32", "usize", "usize", "usize", "usize"], result: "i32" },
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  prctl_buf: {
    name: "prctl",
    parameters: ["i32", "buffer", "usize", "usize", "usize"],
    result: "i32",
  },
  syscall_seccomp: { name: "syscall", parameters: ["i64", "u32", "u32", "buffer"], result: "i32" },
  syscall_landlock_create: {
    name: "syscall",
    parameters: ["i64", "buffer", "usize", "u32"],
    result: "i32",
  },
  syscall_landlock_add: {
    name: "syscall",
    parameters: ["i64", "i32", "i32", "buffer", "u32"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/**
 * Deno's types declare 64-bit parameters (`usize`, `i64`) as `bigint`, but the
 * runtime accepts plain numbers, exact below 2^53, which every length, offset
 * and address here is. Passing numbers avoids a BigInt allocation per call;
 * this type says so once instead of at every call site.
 */
type NumberArgs<F> = F extends (...args: infer A) => infer R
  ? (...args: { [K in keyof A]: A[K] extends bigint ? number : A[K] }) => R
  : never;
type Symbols<S> = { [K in keyof S]: NumberArgs<S[K]> };

type LibcName = keyof typeof LIBC;
type LibcSymbols = Symbols<Deno.StaticForeignLibraryInterface<typeof LIBC>>;

/** The libc functions: each a stub that binds the real one on first call (see `LIBC`). */
const C = {} as LibcSymbols;
for (const name of Object.keys(LIBC) as LibcName[]) {
  // deno-lint-ignore no-explicit-any -- one stub shape stands in for every signature
  (C as any)[name] = (...args: unknown[]) => (bindSymbol(name) as any)(...args);
}

/** Binds libc's `name` for this thread and puts it in `C` in place of its stub. */
function bindSymbol<N extends LibcName>(name: N): LibcSymbols[N] {
  const lib = Deno.dlopen("libc.so.6", { [name]: LIBC[name] } as Pick<typeof LIBC, N>);
  const fn = lib.symbols[name] as unknown as LibcSymbols[N];
  C[name] = fn;
  return fn;
}
const errnoView = new Deno.UnsafePointerView(C.__errno_location()!);

/** The calling thread's errno, as left by the last failed call. */
export function errno(): number {
  return errnoView.getInt32();
}

/** Turns a C result into the project's convention: the result, or -errno. */
function ret(rc: number): number {
  return rc < 0 ? -errno() : rc;
}

const encoder = new TextEncoder();
function cString(s: string): Uint8Array {
  const b = new Uint8Array(encoder.encode(s).length + 1);
  encoder.encodeInto(s, b);
  return b;
}

// ---------------------------------------------------------------------------
// Sockets

/** socket(2): a new socket fd, or -errno. */
export function socket(domain: number, type: number, protocol = 0): number {
  return ret(C.socket(domain, type, protocol));
}

/** socketpair(2): fills `out[0]`, `out[1]`; returns 0 or -errno. */
export function socketpair(
  domain: number,
  type: number,
  protocol: number,
  out: Int32Array,
): number {
  return ret(C.socketpair(domain, type, protocol, out));
}

/** bind(2) to the first `len` bytes of `addr` (a sockaddr). */
export function bind(fd: number, addr: Uint8Array, len: number): number {
  return ret(C.bind(fd, addr, len));
}

/** listen(2). */
export function listen(fd: number, backlog: number): number {
  return ret(C.listen(fd, backlog));
}

/**
 * accept4(2): the new fd, or -errno (-EAGAIN when none is pending on a
 * non-blocking listener). If `addr` is given, the peer's address is written
 * there and its length into `addrLen[0]` (set it to the buffer size first).
 */
export function accept4(
  fd: number,
  flags: number,
  addr: Uint8Array | null = null,
  addrLen: Uint32Array | null = null,
): number {
  return ret(C.accept4(fd, addr, addrLen, flags));
}

/** connect(2); on a non-blocking socket, -EINPROGRESS means "wait for EPOLLOUT". */
export function connect(fd: number, addr: Uint8Array, len: number): number {
  return ret(C.connect(fd, addr, len));
}

/** shutdown(2). */
export function shutdown(fd: number, how: number): number {
  return ret(C.shutdown(fd, how));
}

/** close(2). */
export function close(fd: number): number {
  return ret(C.close(fd));
}

/** getsockname(2): address into `addr`, its length into `addrLen[0]` (preset to the size). */
export function getsockname(fd: number, addr: Uint8Array, addrLen: Uint32Array): number {
  return ret(C.getsockname(fd, addr, addrLen));
}

/** getpeername(2), like {@linkcode getsockname}. */
export function getpeername(fd: number, addr: Uint8Array, addrLen: Uint32Array): number {
  return ret(C.getpeername(fd, addr, addrLen));
}

/** setsockopt(2) with the raw option bytes. */
export function setsockopt(fd: number, level: number, opt: number, value: Uint8Array): number {
  return ret(C.setsockopt(fd, level, opt, value, value.byteLength));
}

const intOpt = new Int32Array(1);
const intOptBytes = new Uint8Array(intOpt.buffer);
const intOptLen = new Uint32Array(1);

/** setsockopt(2) for an `int` option. */
export function setsockoptInt(fd: number, level: number, opt: number, value: number): number {
  intOpt[0] = value;
  return ret(C.setsockopt(fd, level, opt, intOptBytes, 4));
}

/** getsockopt(2) into `value`; the length used goes into `len[0]` (preset it). */
export function getsockopt(
  fd: number,
  level: number,
  opt: number,
  value: Uint8Array,
  len: Uint32Array,
): number {
  return ret(C.getsockopt(fd, level, opt, value, len));
}

/**
 * getsockopt(2) for an `int` option. Throws `SysError` on failure:
 * the value may legitimately be negative, so it cannot share the -errno
 * channel; use raw {@linkcode getsockopt} where failure is expected.
 */
export function getsockoptInt(fd: number, level: number, opt: number): number {
  intOptLen[0] = 4;
  sysCheck(ret(C.getsockopt(fd, level, opt, intOptBytes, intOptLen)), "getsockopt");
  return intOpt[0];
}

// ---------------------------------------------------------------------------
// Data transfer

/** read(2) into `buf[0..len)`: bytes read, 0 at end of file, or -errno. */
export function read(fd: number, buf: Uint8Array, len: number = buf.byteLength): number {
  return ret(C.read(fd, buf, len));
}

/** write(2) from `buf[0..len)`: bytes written or -errno. */
export function write(fd: number, buf: Uint8Array, len: number = buf.byteLength): number {
  return ret(C.write(fd, buf, len));
}

/**
 * readv(2) into `count` entries of `iov` from entry `first`. The entries go
 * as a view (`IovecArray.from`), not as an address: a computed address is a
 * number too large to stay unboxed, an allocation per call (measured: one
 * per guest frame).
 */
export function readv(fd: number, iov: IovecArray, count: number, first = 0): number {
  return ret(C.readv(fd, iov.from(first), count));
}

/** writev(2) from `count` entries of `iov` from entry `first`; see {@linkcode readv}. */
export function writev(fd: number, iov: IovecArray, count: number, first = 0): number {
  return ret(C.writev(fd, iov.from(first), count));
}

/** recv(2): recvfrom without an address. */
export function recv(fd: number, buf: Uint8Array, len: number, flags: number): number {
  return ret(C.recvfrom(fd, buf, len, flags, null, null));
}

/** recvfrom(2): the sender's address goes to `addr`, its length to `addrLen[0]` (preset). */
export function recvfrom(
  fd: number,
  buf: Uint8Array,
  len: number,
  flags: number,
  addr: Uint8Array,
  addrLen: Uint32Array,
): number {
  return ret(C.recvfrom(fd, buf, len, flags, addr, addrLen));
}

/** send(2). */
export function send(fd: number, buf: Uint8Array, len: number, flags: number): number {
  return ret(C.sendto(fd, buf, len, flags, null, 0));
}

/** sendto(2) to the first `addrLen` bytes of `addr`. */
export function sendto(
  fd: number,
  buf: Uint8Array,
  len: number,
  flags: number,
  addr: Uint8Array,
  addrLen: number,
): number {
  return ret(C.sendto(fd, buf, len, flags, addr, addrLen));
}

/** recvmsg(2) with header `i` of `hdrs` (its first 56 bytes are a msghdr). */
export function recvmsg(
  fd: number,
  hdrs: { readonly bytes: Uint8Array },
  flags: number,
  i = 0,
): number {
  return ret(C.recvmsg(fd, i === 0 ? hdrs.bytes : hdrs.bytes.subarray(i * MMSGHDR_SIZE), flags));
}

/** sendmsg(2) with header `i` of `hdrs`. */
export function sendmsg(
  fd: number,
  hdrs: { readonly bytes: Uint8Array },
  flags: number,
  i = 0,
): number {
  return ret(C.sendmsg(fd, i === 0 ? hdrs.bytes : hdrs.bytes.subarray(i * MMSGHDR_SIZE), flags));
}

/** recvmmsg(2): up to `count` messages into `hdrs`; the number received, or -errno. */
export function recvmmsg(
  fd: number,
  hdrs: { readonly bytes: Uint8Array },
  count: number,
  flags: number,
): number {
  return ret(C.recvmmsg(fd, hdrs.bytes, count, flags, null));
}

/** sendmmsg(2): up to `count` messages from `hdrs`; the number sent, or -errno. */
export function sendmmsg(
  fd: number,
  hdrs: { readonly bytes: Uint8Array },
  count: number,
  flags: number,
): number {
  return ret(C.sendmmsg(fd, hdrs.bytes, count, flags));
}

const atIov = new IovecArray(1);
const atHdr = new MmsgHdrArray(1);

/**
 * recvmsg(2) into `buf[off..off+len)` without creating a view of it (the
 * iovec is built from the buffer's cached address): bytes received, 0 at
 * end of stream, or -errno.
 */
export function recvAt(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  flags: number,
): number {
  atIov.set(0, buf, off, len);
  atHdr.setName(0, null);
  atHdr.setIov(0, atIov, 1);
  atHdr.setControl(0, null);
  return ret(C.recvmsg(fd, atHdr.bytes, flags));
}

/**
 * sendmsg(2) of `buf[off..off+len)` to the first `addrLen` bytes of `addr`
 * (null: the connected peer), without creating a view: bytes sent or -errno.
 */
export function sendAt(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  flags: number,
  addr: Uint8Array | null = null,
  addrLen = 0,
): number {
  return sendAtWith(fd, buf, off, len, flags, addr, addrLen, null);
}

/** {@linkcode sendAt} with ancillary data `control` (or none). */
function sendAtWith(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  flags: number,
  addr: Uint8Array | null,
  addrLen: number,
  control: Uint8Array | null,
): number {
  atIov.set(0, buf, off, len);
  return sendIov(fd, atIov, 1, flags, addr, addrLen, control);
}

/**
 * sendmsg(2) of the bytes iovecs `iov[0..count)` point at, to the first
 * `addrLen` bytes of `addr` (null: the connected peer), with ancillary data
 * `control` (or none; {@linkcode udpSegmentControl} for UDP GSO): bytes sent
 * or -errno.
 */
export function sendIov(
  fd: number,
  iov: IovecArray,
  count: number,
  flags: number,
  addr: Uint8Array | null = null,
  addrLen = 0,
  control: Uint8Array | null = null,
): number {
  atHdr.setName(0, addr, addrLen);
  atHdr.setIov(0, iov, count);
  atHdr.setControl(0, control);
  return ret(C.sendmsg(fd, atHdr.bytes, flags));
}

/** Most descriptors one message may carry with {@linkcode recvWithFds}. */
export const MAX_PASSED_FDS = 8;
/** `cmsghdr` (16 bytes) and room for {@linkcode MAX_PASSED_FDS} ints: `CMSG_SPACE(32)`. */
const fdControl = new Uint8Array(16 + 4 * MAX_PASSED_FDS);
const fdControlView = new DataView(fdControl.buffer);

/**
 * recvmsg(2) into `buf[off..off+len)`, taking the file descriptors the
 * peer passed with `SCM_RIGHTS` (close-on-exec) into `fds`, whose other
 * entries are set to -1. Bytes received, 0 at end of stream, or -errno;
 * -EMSGSIZE if the peer passed more than {@linkcode MAX_PASSED_FDS} (the
 * kernel dropped the rest, and the ones that came are closed here).
 */
export function recvWithFds(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  flags: number,
  fds: Int32Array,
): number {
  fds.fill(-1);
  atIov.set(0, buf, off, len);
  atHdr.setName(0, null);
  atHdr.setIov(0, atIov, 1);
  atHdr.setControl(0, fdControl);
  const n = ret(C.recvmsg(fd, atHdr.bytes, flags | MSG_CMSG_CLOEXEC));
  if (n < 0) return n;
  const controlLen = atHdr.controlLen(0);
  let k = 0;
  // Walk the cmsghdrs: 8-byte length, level, type, then data; each padded to 8.
  for (let at = 0; at + 16 <= controlLen;) {
    const cmsgLen = fdControlView.getUint32(at, true);
    if (cmsgLen < 16) break;
    const level = fdControlView.getInt32(at + 8, true);
    const type = fdControlView.getInt32(at + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let p = at + 16; p + 4 <= at + cmsgLen; p += 4) {
        const got = fdControlView.getInt32(p, true);
        if (k < fds.length) fds[k++] = got;
        else C.close(got);
      }
    }
    at += (cmsgLen + 7) & ~7;
  }
  if (atHdr.flags(0) & MSG_CTRUNC) {
    for (let i = 0; i < k; i++) C.close(fds[i]);
    fds.fill(-1);
    return -Errno.EMSGSIZE;
  }
  return n;
}

/**
 * sendmsg(2) of `buf[off..off+len)` passing `fds` (at most
 * {@linkcode MAX_PASSED_FDS}) with `SCM_RIGHTS`: bytes sent or -errno.
 */
export function sendWithFds(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  flags: number,
  fds: readonly number[],
): number {
  if (fds.length > MAX_PASSED_FDS) return -Errno.EINVAL;
  if (fds.length === 0) return sendAtWith(fd, buf, off, len, flags, null, 0, null);
  const cmsgLen = 16 + 4 * fds.length;
  fdControl.fill(0);
  fdControlView.setUint32(0, cmsgLen, true);
  fdControlView.setInt32(8, SOL_SOCKET, true);
  fdControlView.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((f, i) => fdControlView.setInt32(16 + 4 * i, f, true));
  return sendAtWith(fd, buf, off, len, flags, null, 0, fdControl.subarray(0, (cmsgLen + 7) & ~7));
}

/** One `cmsghdr` (64-bit layout) carrying a u16 `UDP_SEGMENT`, padded to `CMSG_SPACE(2)`. */
const udpSegControl = new Uint8Array(24);
{
  const dv = new DataView(udpSegControl.buffer);
  dv.setUint32(0, 16 + 2, true); // cmsg_len = CMSG_LEN(2), high half zero
  dv.setInt32(8, SOL_UDP, true);
  dv.setInt32(12, UDP_SEGMENT, true);
}

/** The ancillary data that makes one `sendmsg` UDP datagrams of `segSize` bytes (`UDP_SEGMENT`). */
export function udpSegmentControl(segSize: number): Uint8Array {
  udpSegControl[16] = segSize;
  udpSegControl[17] = segSize >> 8;
  return udpSegControl;
}

/**
 * sendmsg(2) of `buf[off..off+len)` on a UDP socket as datagrams of
 * `segSize` bytes each (the last may be shorter): one call, the kernel
 * segments (`UDP_SEGMENT`, generic segmentation offload for UDP). To the
 * first `addrLen` bytes of `addr`, or the connected peer. Bytes sent or -errno.
 */
export function sendSegmented(
  fd: number,
  buf: Uint8Array,
  off: number,
  len: number,
  segSize: number,
  flags: number,
  addr: Uint8Array | null = null,
  addrLen = 0,
): number {
  return sendAtWith(fd, buf, off, len, flags, addr, addrLen, udpSegmentControl(segSize));
}

/** pipe2(2): fills `out[0]` (read end) and `out[1]` (write end). */
export function pipe2(out: Int32Array, flags: number): number {
  return ret(C.pipe2(out, flags));
}

/** splice(2) between two fds at their current positions: bytes moved, 0 at EOF, or -errno. */
export function splice(fdIn: number, fdOut: number, len: number, flags: number): number {
  return ret(C.splice(fdIn, null, fdOut, null, len, flags));
}

// ---------------------------------------------------------------------------
// Control

/** ioctl(2) with a pointer argument. */
export function ioctl(fd: number, request: number, arg: Uint8Array): number {
  return ret(C.ioctl(fd, request, arg));
}

/** ioctl(2) with an integer argument. */
export function ioctlInt(fd: number, request: number, arg: number): number {
  return ret(C.ioctl_int(fd, request, arg));
}

/** fcntl(2) with an integer argument. */
export function fcntl(fd: number, cmd: number, arg = 0): number {
  return ret(C.fcntl(fd, cmd, arg));
}

/** open(2). */
export function open(path: string, flags: number, mode = 0): number {
  return ret(C.open(cString(path), flags, mode));
}

/** unshare(2). */
export function unshare(flags: number): number {
  return ret(C.unshare(flags));
}

/** setns(2): join the namespace `fd` refers to (`nstype` 0 = any). */
export function setns(fd: number, nstype: number): number {
  return ret(C.setns(fd, nstype));
}

/** dup2(2): make `newfd` refer to what `oldfd` does (closing `newfd`'s old file). */
export function dup2(oldfd: number, newfd: number): number {
  return ret(C.dup2(oldfd, newfd));
}

// ---------------------------------------------------------------------------
// Processes

/** glibc's `posix_spawnattr_t` is 336 bytes on 64-bit Linux; room to spare. */
const SPAWNATTR_SIZE = 512;
/** `sigset_t`: 1024 bits. */
const SIGSET_SIZE = 128;
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const P_PID = 1;
const WEXITED = 4;
const CLD_EXITED = 1;

/** NUL-terminated strings and the NULL-terminated array of their addresses (`char *[]`). */
function cStringArray(strings: readonly string[]): { array: BigUint64Array; keep: Uint8Array[] } {
  const keep = strings.map(cString);
  const array = new BigUint64Array(keep.length + 1);
  keep.forEach((b, i) => array[i] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b))));
  return { array, keep };
}

/**
 * posix_spawnp(3): starts `argv` (found on `PATH`) in the calling thread's
 * namespaces, with this process's standard streams and environment plus
 * `env`, every signal at its default action and none blocked (tapir ignores
 * some; a child inherits that). Returns the child's pid, or -errno — also
 * when the program could not be executed (glibc reports it). Used instead
 * of `Deno.Command`, whose first use loads Deno's process and streams
 * modules: measured 4 ms of a namespace's start-up.
 */
export function spawnProcess(argv: readonly string[], env: Record<string, string> = {}): number {
  const attr = new Uint8Array(SPAWNATTR_SIZE);
  let rc = C.posix_spawnattr_init(attr);
  if (rc !== 0) return -rc;
  // Signals 1–64, glibc's own two (32, 33) too: left out, glibc would have
  // the child ignore them.
  const all = new Uint8Array(SIGSET_SIZE).fill(0xff, 0, 8);
  const none = new Uint8Array(SIGSET_SIZE);
  C.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  C.posix_spawnattr_setsigdefault(attr, all);
  C.posix_spawnattr_setsigmask(attr, none);
  const args = cStringArray(argv);
  const vars = cStringArray(
    Object.entries({ ...Deno.env.toObject(), ...env }).map(([k, v]) => `${k}=${v}`),
  );
  const pid = new Int32Array(1);
  const file = cString(argv[0]);
  // The arrays hold the strings' addresses only: keep the strings reachable
  // until the call is done.
  spawnStrings.push(args.keep, vars.keep);
  rc = C.posix_spawnp(pid, file, null, attr, args.array, vars.array);
  spawnStrings.length = 0;
  // posix_spawnattr_destroy is a no-op in glibc; the buffers are ours.
  return rc === 0 ? pid[0] : -rc;
}

/** The strings of the `posix_spawnp` call in progress (see {@linkcode spawnProcess}). */
const spawnStrings: Uint8Array[][] = [];

/** How a child ended: its exit code, or the signal that ended it. */
export interface ProcessEnd {
  /** The exit code, or 128 + the signal's number (as a shell reports it). */
  readonly code: number;
  /** The signal's number if one ended it, else null. */
  readonly signal: number | null;
}

/**
 * Waits for child `pid` to end (waitid(2) on a thread of Deno's pool, which
 * it holds until then) and reaps it. Resolves to null if it cannot be
 * waited for (not a child of this process).
 */
export async function waitProcess(pid: number): Promise<ProcessEnd | null> {
  const info = new Uint8Array(128); // siginfo_t
  const view = new DataView(info.buffer);
  // A failed call leaves no errno this thread can read; an interrupted one
  // is worth another try, anything else would fail again.
  for (let tries = 0; tries < 3; tries++) {
    if (await C.waitid_nb(P_PID, pid, info, WEXITED) < 0) continue;
    const status = view.getInt32(24, true); // si_status
    return view.getInt32(8, true) === CLD_EXITED // si_code
      ? { code: status, signal: null }
      : { code: 128 + status, signal: status };
  }
  return null;
}

/**
 * pidfd_open(2): a descriptor for process `pid` that polls readable when the
 * process exits. Unlike the number, it cannot come to mean another process.
 */
export function pidfdOpen(pid: number): number {
  return ret(C.pidfd_open(pid, 0));
}

/** inotify_init1(2). */
export function inotifyInit1(flags: number): number {
  return ret(C.inotify_init1(flags));
}

/** inotify_add_watch(2): the watch descriptor, or -errno. */
export function inotifyAddWatch(fd: number, path: string, mask: number): number {
  return ret(C.inotify_add_watch(fd, cString(path), mask));
}

/** prctl(2) with integer arguments. */
export function prctl(option: number, arg2 = 0, arg3 = 0, arg4 = 0, arg5 = 0): number {
  return ret(C.prctl(option, arg2, arg3, arg4, arg5));
}

/**
 * A handler that does nothing: libc's `getpid`, which takes no argument
 * (the signal number passed is ignored), touches no memory and is
 * async-signal-safe. Not `SIG_IGN`: an ignored signal stays ignored across
 * `execve`, so every command tapir starts would inherit it; a caught one
 * reverts to its default there.
 */
let discardHandler: Deno.PointerValue = null;

/**
 * Makes signal `signo` do nothing from now on, process-wide (signal(2) with
 * a handler that returns at once; see `discardHandler`). Returns true if
 * it had another disposition until now — someone else's handler, the
 * default, or "ignore" — and false if it was discarded already (or the
 * call failed).
 */
export function signalDiscard(signo: number): boolean {
  if (discardHandler === null) {
    discardHandler = C.dlsym(null, cString("getpid")); // RTLD_DEFAULT is a null handle
    if (discardHandler === null) return false;
  }
  const prev = C.signal(signo, discardHandler);
  if (prev === null) return true; // SIG_DFL
  const value = BigInt(Deno.UnsafePointer.value(prev));
  if (value === 0xffffffffffffffffn) return false; // SIG_ERR
  return value !== BigInt(Deno.UnsafePointer.value(discardHandler));
}

/** prctl(2) whose second argument is a buffer (PR_SET_NAME, PR_GET_NAME). */
export function prctlBuf(option: number, buf: Uint8Array): number {
  return ret(C.prctl_buf(option, buf, 0, 0, 0));
}

/** Landlock's system call numbers: the same on every architecture. */
const LANDLOCK_NR_CREATE = SYSCALL_NUMBERS.x86_64.landlock_create_ruleset;
const LANDLOCK_NR_ADD_RULE = SYSCALL_NUMBERS.x86_64.landlock_add_rule;

/**
 * The Landlock ABI version of the running kernel (≥ 1), or -errno: ENOSYS
 * (too old) or EOPNOTSUPP (built in but not enabled).
 */
export function landlockAbi(): number {
  return ret(
    C.syscall_landlock_create(LANDLOCK_NR_CREATE, null, 0, LANDLOCK_CREATE_RULESET_VERSION),
  );
}

/** landlock_create_ruleset(2) handling the file system rights `handledFs`: a descriptor, or -errno. */
export function landlockCreateRuleset(handledFs: bigint): number {
  const attr = new Uint8Array(8); // struct landlock_ruleset_attr, its first field only
  new DataView(attr.buffer).setBigUint64(0, handledFs, true);
  return ret(C.syscall_landlock_create(LANDLOCK_NR_CREATE, attr, attr.length, 0));
}

/** landlock_add_rule(2): grants `allowed` beneath the directory open as `dirFd` (O_PATH). */
export function landlockAddPathBeneath(rulesetFd: number, dirFd: number, allowed: bigint): number {
  const attr = new Uint8Array(12); // struct landlock_path_beneath_attr, packed: u64, s32
  const v = new DataView(attr.buffer);
  v.setBigUint64(0, allowed, true);
  v.setInt32(8, dirFd, true);
  return ret(
    C.syscall_landlock_add(LANDLOCK_NR_ADD_RULE, rulesetFd, LANDLOCK_RULE_PATH_BENEATH, attr, 0),
  );
}

/** seccomp(2)'s number here (the table has both supported architectures). */
const SECCOMP_NR = SYSCALL_NUMBERS[Deno.build.arch as "x86_64" | "aarch64"]?.seccomp ?? -1;

/**
 * seccomp(2) `SECCOMP_SET_MODE_FILTER` with `flags`: installs `program`
 * (`struct sock_filter` entries, see `seccomp.ts`). Returns 0, -errno, or
 * with `SECCOMP_FILTER_FLAG_TSYNC` the id of a thread that could not take
 * the filter. The C library has no wrapper, so it goes through `syscall`;
 * its integer arguments pass in registers as for any other call.
 */
export function seccompSetFilter(program: Uint8Array, flags: number): number {
  const fprog = new Uint8Array(16); // struct sock_fprog: u16 len, pad, pointer
  const view = new DataView(fprog.buffer);
  view.setUint16(0, program.length / 8, true);
  view.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(program))), true);
  return ret(C.syscall_seccomp(SECCOMP_NR, SECCOMP_SET_MODE_FILTER, flags, fprog));
}

// ---------------------------------------------------------------------------
// Events and timers

/** epoll_create1(2). */
export function epollCreate1(flags: number): number {
  return ret(C.epoll_create1(flags));
}

/** epoll_ctl(2); `ev` is entry 0 of an {@linkcode EpollEvents} (or null for DEL). */
export function epollCtl(
  epfd: number,
  op: number,
  fd: number,
  ev: { readonly bytes: Uint8Array } | null,
): number {
  return ret(C.epoll_ctl(epfd, op, fd, ev ? ev.bytes : null));
}

/** epoll_wait(2), synchronous: use with timeout 0 only, so the thread never blocks. */
export function epollWait(
  epfd: number,
  events: { readonly bytes: Uint8Array; readonly capacity: number },
  timeoutMs: number,
): number {
  return ret(C.epoll_wait(epfd, events.bytes, events.capacity, timeoutMs));
}

/**
 * epoll_wait(2) on another thread, for idle waits: the number of events, or
 * -EINTR on any failure. The call runs on a thread of Deno's, whose errno we
 * cannot read; with a valid epoll fd and buffer, an interrupted wait is the
 * only failure possible, and the caller simply waits again. `events` must
 * not be touched until the promise settles.
 */
export async function epollWaitAsync(
  epfd: number,
  events: { readonly bytes: Uint8Array; readonly capacity: number },
  timeoutMs: number,
): Promise<number> {
  const rc = await C.epoll_wait_nb(epfd, events.bytes, events.capacity, timeoutMs);
  return rc < 0 ? -Errno.EINTR : rc;
}

/**
 * usleep(3): blocks the calling thread for at least `us` microseconds. For
 * the reactor's short, bounded pauses only (see `lib/loop.ts`).
 */
export function usleep(us: number): void {
  C.usleep(us);
}

/** eventfd(2). */
export function eventfd(initval: number, flags: number): number {
  return ret(C.eventfd(initval, flags));
}

/** timerfd_create(2). */
export function timerfdCreate(clock: number, flags: number): number {
  return ret(C.timerfd_create(clock, flags));
}

const itimerspec = new BigInt64Array(4);
/**
 * timerfd_settime(2), relative: first expiry after `initialNs`, then every
 * `intervalNs` (0: once). `initialNs` 0 disarms the timer.
 */
export function timerfdSettime(fd: number, initialNs: number, intervalNs = 0): number {
  itimerspec[0] = BigInt(Math.floor(intervalNs / 1e9));
  itimerspec[1] = BigInt(intervalNs % 1e9);
  itimerspec[2] = BigInt(Math.floor(initialNs / 1e9));
  itimerspec[3] = BigInt(initialNs % 1e9);
  return ret(C.timerfd_settime(fd, 0, new Uint8Array(itimerspec.buffer), null));
}

// ---------------------------------------------------------------------------
// Memory

/** A region mapped with {@linkcode mmap}: its address and a view over its bytes. */
export interface Mapping {
  /** Start address, for iovecs pointing into the region. */
  readonly addr: number;
  /** The region's bytes. */
  readonly bytes: Uint8Array;
}

/** memfd_create(2). */
export function memfdCreate(name: string, flags: number): number {
  return ret(C.memfd_create(cString(name), flags));
}

/** mmap(2) of `len` bytes at a kernel-chosen address: the mapping, or -errno. */
export function mmap(
  len: number,
  prot: number,
  flags: number,
  fd: number,
  offset = 0,
): Mapping | number {
  const p = C.mmap(null, len, prot, flags, fd, offset);
  const addr = p === null ? 0 : Deno.UnsafePointer.value(p);
  if (addr === 0 || addr === 0xffffffffffffffffn) return -errno();
  const bytes = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p!, len));
  return { addr: Number(addr), bytes };
}

/**
 * The size of the file open as `fd` (lseek(2) to its end, which also moves
 * the offset there: for descriptors only mapped, never read), or -errno.
 */
export function fileSize(fd: number): number {
  const end = Number(C.lseek(fd, 0, 2 /* SEEK_END */));
  return end < 0 ? -errno() : end;
}

/** mprotect(2) over the whole of `m`. */
export function mprotect(m: Mapping, prot: number): number {
  return ret(C.mprotect(Deno.UnsafePointer.create(BigInt(m.addr)), m.bytes.byteLength, prot));
}

/** tgkill(2): signal `signo` to thread `tid` of process `tgid`. */
export function tgkill(tgid: number, tid: number, signo: number): number {
  return ret(C.tgkill(tgid, tid, signo));
}

/**
 * Makes the machine code at `addr` the handler of signal `signo` (signal(2):
 * the handler stays, interrupted calls restart), or ignores the signal when
 * `addr` is 0. Returns false if the call failed.
 */
export function signalHandlerAt(signo: number, addr: number): boolean {
  const handler = Deno.UnsafePointer.create(BigInt(addr === 0 ? 1 : addr)); // 1: SIG_IGN
  const prev = C.signal(signo, handler);
  return prev === null || BigInt(Deno.UnsafePointer.value(prev)) !== 0xffffffffffffffffn;
}

/**
 * munmap(2). The mapping's `bytes` must not be touched afterwards: the
 * memory is gone, and an access would crash the process.
 */
export function munmap(m: Mapping): number {
  return munmapAt(m.addr, m.bytes.byteLength);
}

/** munmap(2) of `len` bytes at `addr`: for a mapping whose views may already be gone. */
export function munmapAt(addr: number, len: number): number {
  return ret(C.munmap(Deno.UnsafePointer.create(BigInt(addr)), len));
}

/**
 * madvise(2) over `len` bytes of `m` from `offset` (both multiples of the
 * page size): 0 or -errno.
 */
export function madvise(m: Mapping, offset: number, len: number, advice: number): number {
  return ret(C.madvise(Deno.UnsafePointer.create(BigInt(m.addr + offset)), len, advice));
}

/**
 * glibc's malloc_trim(3) with no padding: every malloc arena's free pages go
 * back to the kernel, not only those at an arena's top. 1 if any memory was
 * released, 0 if none.
 */
export function mallocTrim(): number {
  return C.malloc_trim(0);
}
