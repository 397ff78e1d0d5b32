/**
 * How an engine's helper starts and ends: readiness, exit triggers, and
 * daemonising.
 *
 * # Theory of operation
 *
 * **Ready.** slirp4netns's caller passes a descriptor (`-r FD`) and waits
 * for "1" on it; {@linkcode signalReady} writes it and closes the
 * descriptor once the tap serves and the API socket listens.
 *
 * **Ends.** A helper must not outlive what it serves. Three triggers, each
 * a descriptor in the reactor (no polling):
 * - `-e FD` (slirp4netns): the descriptor polls readable or hung up — the
 *   caller wrote to it or closed its end ({@linkcode watchExitFd});
 * - the process whose namespace is served exits: a pidfd polls readable
 *   ({@linkcode watchTargetGone});
 * - the namespace's bind-mount path is deleted (`ip netns del`, podman
 *   removing its netns file): inotify on the directory reports the
 *   deletion, and the path is then checked to be gone. tapir's own thread
 *   inside the namespace keeps it alive, so "the namespace disappears" can
 *   only be seen through its path or its process.
 *
 * **Daemonising** (pasta's behaviour without `-f`). Deno cannot fork, so
 * the first process starts a second copy of tapir, detached in its own
 * session ({@linkcode daemonize}), with stdout and stderr on pipes of its
 * own: the caller's descriptors never reach the daemon, so an engine that
 * reads the helper's output until end of stream gets it when the first
 * process exits. The daemon's set-up errors are relayed to the first
 * process's stderr; once it serves, it writes `ready` on its stdout and puts
 * /dev/null on its standard descriptors ({@linkcode daemonReady}); the first
 * process then exits 0. If the daemon exits before it is ready, the first
 * process exits with its status.
 *
 * @module
 */

import { logDebug, logWarn } from "../log.ts";
import type { Loop } from "../loop.ts";
import * as sys from "../sys/mod.ts";
import { selfCommand } from "../ns.ts";

/** Environment variable marking the daemon copy of a daemonising tapir. */
export const DAEMON_ENV = "TAPIR_DAEMON";

/** The line the daemon writes on its stdout once it serves. */
const READY_LINE = "ready\n";

const encoder = new TextEncoder();

/** Writes "1" to the ready descriptor and closes it (slirp4netns's `-r`). */
export function signalReady(fd: number): void {
  const rc = sys.write(fd, encoder.encode("1"), 1);
  if (rc < 0) logWarn(`ready fd ${fd}: write failed: ${sys.errnoName(-rc)}`);
  sys.close(fd);
}

/**
 * Stops `loop` when `fd` polls readable or hung up (slirp4netns's `-e`).
 * Returns 0, or -errno if the descriptor cannot be watched.
 */
export function watchExitFd(loop: Loop, fd: number): number {
  const type = loop.defineType("exit-fd", () => {
    loop.remove(fd);
    loop.stop(`exit fd ${fd} became readable or was closed`);
  });
  return loop.add(fd, sys.EPOLLIN, type, 0);
}

/** What is served: a process's namespace, or one bound at a path. */
export type WatchedTarget =
  | { readonly kind: "pid"; readonly pid: number }
  | { readonly kind: "netns"; readonly path: string };

/**
 * Stops `loop` when the served namespace goes away: the process exits, or
 * the path is deleted (a `/proc/PID/ns/net` path means that process). The
 * descriptors are closed when the loop stops. Returns false after a warning
 * if the target cannot be watched (then the run ends only by a signal).
 */
export function watchTargetGone(loop: Loop, target: WatchedTarget): boolean {
  const procPath = target.kind === "netns" ? /^\/proc\/([0-9]+)\/ns\/net$/.exec(target.path) : null;
  const pid = target.kind === "pid" ? target.pid : procPath ? Number(procPath[1]) : 0;
  if (pid > 0) {
    const fd = sys.pidfdOpen(pid);
    if (fd === -sys.Errno.ESRCH) {
      // Gone between the set-up and now: end as if it had gone later.
      loop.stop(`process ${pid} exited`);
      return true;
    }
    if (fd < 0) {
      logWarn(`cannot watch process ${pid}: ${sys.errnoName(-fd)}`);
      return false;
    }
    const type = loop.defineType("target-pid", () => {
      loop.remove(fd);
      loop.stop(`process ${pid} exited`);
    });
    loop.onStop(() => sys.close(fd));
    return loop.add(fd, sys.EPOLLIN, type, 0) === 0;
  }
  const path = (target as { path: string }).path;
  const dir = path.slice(0, Math.max(1, path.lastIndexOf("/")));
  const fd = sys.inotifyInit1(sys.IN_NONBLOCK | sys.IN_CLOEXEC);
  if (fd < 0) {
    logWarn(`cannot watch ${path}: inotify: ${sys.errnoName(-fd)}`);
    return false;
  }
  const wd = sys.inotifyAddWatch(
    fd,
    dir,
    sys.IN_DELETE | sys.IN_MOVED_FROM | sys.IN_DELETE_SELF | sys.IN_UNMOUNT,
  );
  if (wd < 0) {
    sys.close(fd);
    logWarn(`cannot watch ${dir}: ${sys.errnoName(-wd)}`);
    return false;
  }
  const events = new Uint8Array(4096);
  const type = loop.defineType("target-path", () => {
    while (sys.read(fd, events, events.length) > 0) { /* drain; the check below decides */ }
    let gone = false;
    try {
      Deno.lstatSync(path);
    } catch {
      gone = true;
    }
    if (gone) {
      loop.remove(fd);
      loop.stop(`namespace ${path} was deleted`);
    } else logDebug(`${dir} changed; ${path} is still there`);
  });
  loop.onStop(() => sys.close(fd));
  return loop.add(fd, sys.EPOLLIN, type, 0) === 0;
}

/**
 * The first process of a daemonising run: starts the daemon (this program
 * with `args`, marked by {@linkcode DAEMON_ENV}), relays its set-up
 * messages to stderr, and resolves to 0 once it is ready, or to its exit
 * status if it ends first.
 */
export async function daemonize(args: readonly string[]): Promise<number> {
  const self = selfCommand();
  const child = new Deno.Command(self[0], {
    args: [...self.slice(1), ...args],
    env: { [DAEMON_ENV]: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    detached: true,
  }).spawn();
  const relay = child.stderr.pipeTo(Deno.stderr.writable, { preventClose: true }).catch(() => {});
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    seen += decoder.decode(value, { stream: true });
    if (seen.includes(READY_LINE)) {
      reader.releaseLock();
      child.unref();
      return 0;
    }
  }
  const status = await child.status;
  await relay;
  return status.code === 0 ? 1 : status.code;
}

/** True in the daemon copy started by {@linkcode daemonize}. */
export function isDaemon(): boolean {
  return Deno.env.get(DAEMON_ENV) === "1";
}

/**
 * The daemon serves: tell the first process (on stdout), then let go of the
 * standard descriptors (/dev/null on each), so nothing of the caller's is
 * held. Later messages go to the log file (`-l`) or nowhere.
 */
export function daemonReady(): void {
  const devNull = sys.open("/dev/null", sys.O_RDWR | sys.O_CLOEXEC);
  if (devNull < 0) {
    logWarn(`cannot open /dev/null: ${sys.errnoName(-devNull)}`);
    return;
  }
  sys.dup2(devNull, 2);
  const line = encoder.encode(READY_LINE);
  sys.write(1, line, line.length);
  sys.dup2(devNull, 1);
  sys.dup2(devNull, 0);
  sys.close(devNull);
}
