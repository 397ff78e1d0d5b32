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
 * is a leftover of an earlier run, removed and bound afresh. A file that is
 * not a socket is never removed.
 *
 * A file mode, if asked for, is set between `bind` and `listen`: until
 * `listen`, a connect is refused, so no client can get in under the mode the
 * umask gave the file.
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
  const len = sys.sockaddrUn(sa, path);
  if (len < 0) return `${opt}: ${path} is too long for a UNIX socket`;
  const fd = sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  if (fd < 0) return `${opt}: socket: ${sys.errnoName(-fd)}`;
  let rc = sys.bind(fd, sa, len);
  if (rc === -sys.Errno.EADDRINUSE) {
    let isSocket = true;
    try {
      isSocket = Deno.lstatSync(path).isSocket === true;
    } catch { /* raced away: bind again */ }
    if (!isSocket) {
      sys.close(fd);
      return `${opt}: ${path} exists and is not a socket`;
    }
    const live = probeLive(sa, len);
    if (typeof live === "number") {
      sys.close(fd);
      return `${opt}: cannot listen on ${path}: ${sys.errnoName(-live)}`;
    }
    if (live) {
      sys.close(fd);
      return `${opt}: ${path} is in use by another process`;
    }
    try {
      Deno.removeSync(path);
    } catch { /* raced away */ }
    rc = sys.bind(fd, sa, len);
  }
  if (rc < 0) {
    sys.close(fd);
    return `${opt}: cannot listen on ${path}: ${sys.errnoName(-rc)}`;
  }
  // Bound: the file is ours from here on, removed again on any failure.
  const id = fileId(path);
  if (id === null) {
    sys.close(fd);
    return `${opt}: cannot listen on ${path}: the socket file vanished`;
  }
  let failure: string | null = null;
  if (opts.mode !== undefined) {
    try {
      Deno.chmodSync(path, opts.mode);
    } catch (e) {
      failure = `${opt}: cannot set the mode of ${path}: ${e instanceof Error ? e.message : e}`;
    }
  }
  if (failure === null) {
    rc = sys.listen(fd, opts.backlog);
    if (rc < 0) failure = `${opt}: cannot listen on ${path}: ${sys.errnoName(-rc)}`;
  }
  if (failure !== null) {
    sys.close(fd);
    removeUnixSocket({ fd: -1, path, dev: id.dev, ino: id.ino });
    return failure;
  }
  return { fd, path, dev: id.dev, ino: id.ino };
}

/**
 * Removes the socket file of `listener` if it is still the one
 * {@linkcode listenUnix} bound (same device and inode); a missing or
 * replaced file is left alone. Does not close the socket.
 */
export function removeUnixSocket(listener: UnixListener): void {
  const id = fileId(listener.path);
  if (id === null || id.dev !== listener.dev || id.ino !== listener.ino) return;
  try {
    Deno.removeSync(listener.path);
  } catch { /* raced away */ }
}
