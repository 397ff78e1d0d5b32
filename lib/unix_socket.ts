/**
 * Listening UNIX stream sockets at a path: `tapir vm --socket` and the
 * control socket (`--api-socket`).
 *
 * # Theory of operation
 *
 * {@linkcode listenUnix} binds a non-blocking socket at the path. If the
 * path is taken, the file there is probed with a non-blocking connect: one
 * that something accepts on (or whose backlog is full) belongs to a live
 * process and is left alone; a socket nobody listens on any more (refused)
 * is a leftover of an earlier run, replaced. A file that is not a socket is
 * never replaced.
 *
 * The socket is bound under a staging name in the same directory, given
 * its mode (if one is asked for), made to listen, and only then renamed to
 * the path. A client that waits for the path to appear — libvirt and
 * scripts starting QEMU do, and so do our tests — finds a socket that
 * accepts, never one refused because `listen` has not run yet (a test
 * starting tapir vm in a loop lost that race when the path was bound
 * directly), and never one with the umask's mode. The rename also replaces
 * a stale socket in one step. A directory too deep for the staging name to
 * fit in a socket address binds at the path itself, mode before `listen`.
 *
 * The device and inode of the file bound are kept, so that
 * {@linkcode removeUnixSocket} removes the file only while it is still ours,
 * not one another process has put there since.
 *
 * Errors come back as one line for the user, starting with the option that
 * named the path (`--socket: …`).
 *
 * @module
 */

import * as sys from "./sys/mod.ts";

/** How {@linkcode listenUnix} names and sets up the socket. */
export interface ListenUnixOptions {
  /** The option that gave the path, starting each message (`--socket`). */
  readonly option: string;
  /** listen(2) backlog. */
  readonly backlog: number;
  /** File mode to give the socket before it accepts connections (e.g. 0o600); none: the umask's. */
  readonly mode?: number;
}

/** A listening UNIX socket made by {@linkcode listenUnix}. */
export interface UnixListener {
  /** The listening socket (non-blocking, close-on-exec). */
  readonly fd: number;
  /** The path it is bound to. */
  readonly path: string;
  /** Device of the socket file, to recognise it later. */
  readonly dev: number;
  /** Inode of the socket file, to recognise it later. */
  readonly ino: number;
}

/**
 * True if something accepts connections on the UNIX socket at `sa`, false
 * if not (refused, gone); -errno if no probe socket could be made. Does not
 * block: the probe is non-blocking.
 */
function probeLive(sa: Uint8Array, len: number): boolean | number {
  const probe = sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  if (probe < 0) return probe;
  const rc = sys.connect(probe, sa, len);
  sys.close(probe);
  // EAGAIN: the listener's backlog is full — it is alive.
  return rc === 0 || rc === -sys.Errno.EAGAIN;
}

/** The file's identity, or null if it cannot be read. */
function fileId(path: string): { dev: number; ino: number } | null {
  try {
    const st = Deno.lstatSync(path);
    return { dev: st.dev, ino: st.ino ?? 0 };
  } catch {
    return null;
  }
}

/**
 * Binds and listens on UNIX socket `path` (see the module comment). A stale
 * socket file left by an earlier run is replaced; one that something still
 * accepts on is not. Returns the listener, or a one-line message for the
 * user starting with `opts.option`.
 */
export function listenUnix(path: string, opts: ListenUnixOptions): UnixListener | string {
  const opt = opts.option;
  const sa = new Uint8Array(sys.SOCKADDR_UN_SIZE);
  if (sys.sockaddrUn(sa, path) < 0) return `${opt}: ${path} is too long for a UNIX socket`;
  const taken = pathTaken(path, opt, sa);
  if (taken !== null) return taken;
  // The staging name, in the same directory (rename(2) stays in one file
  // system); a directory so deep that it does not fit binds at `path`.
  let staging = `${path.slice(0, path.lastIndexOf("/") + 1)}.tapir-${Deno.pid}.sock`;
  let len = sys.sockaddrUn(sa, staging);
  if (len < 0) {
    staging = path;
    len = sys.sockaddrUn(sa, path);
  }
  // At the staging name: a leftover of an earlier tapir that had this pid;
  // at the path: the stale socket `pathTaken` found.
  unlinkQuiet(staging);
  const fd = sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  if (fd < 0) return `${opt}: socket: ${sys.errnoName(-fd)}`;
  let rc = sys.bind(fd, sa, len);
  if (rc < 0) {
    sys.close(fd);
    return `${opt}: cannot listen on ${path}: ${sys.errnoName(-rc)}`;
  }
  let failure: string | null = null;
  if (opts.mode !== undefined) {
    try {
      Deno.chmodSync(staging, opts.mode);
    } catch (e) {
      failure = `${opt}: cannot set the mode of ${path}: ${e instanceof Error ? e.message : e}`;
    }
  }
  if (failure === null) {
    rc = sys.listen(fd, opts.backlog);
    if (rc < 0) failure = `${opt}: cannot listen on ${path}: ${sys.errnoName(-rc)}`;
  }
  if (failure === null && staging !== path) {
    try {
      Deno.renameSync(staging, path);
    } catch (e) {
      failure = `${opt}: cannot listen on ${path}: ${e instanceof Error ? e.message : e}`;
    }
  }
  // Bound: the file is ours from here on, removed again on any failure.
  const id = fileId(failure === null ? path : staging);
  if (failure === null && id === null) {
    failure = `${opt}: cannot listen on ${path}: the socket file vanished`;
  }
  if (failure !== null) {
    sys.close(fd);
    if (id !== null) removeUnixSocket({ fd: -1, path: staging, dev: id.dev, ino: id.ino });
    return failure;
  }
  return { fd, path, dev: id!.dev, ino: id!.ino };
}

/**
 * Null if a socket may be made at `path` (nothing there, or a stale socket
 * that the rename will replace); otherwise why not, for the user. `sa` is
 * scratch space for the probe.
 */
function pathTaken(path: string, opt: string, sa: Uint8Array): string | null {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(path);
  } catch {
    return null; // nothing there
  }
  if (st.isSocket !== true) return `${opt}: ${path} exists and is not a socket`;
  const live = probeLive(sa, sys.sockaddrUn(sa, path));
  if (typeof live === "number") return `${opt}: cannot listen on ${path}: ${sys.errnoName(-live)}`;
  if (live) return `${opt}: ${path} is in use by another process`;
  return null;
}

/** Removes `path`; a file already gone is no error. */
function unlinkQuiet(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* raced away */ }
}

/**
 * Removes the socket file of `listener` if it is still the one
 * {@linkcode listenUnix} bound (same device and inode); a missing or
 * replaced file is left alone. Does not close the socket.
 */
export function removeUnixSocket(listener: UnixListener): void {
  const id = fileId(listener.path);
  if (id === null || id.dev !== listener.dev || id.ino !== listener.ino) return;
  unlinkQuiet(listener.path);
}
