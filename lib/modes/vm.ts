/**
 * `tapir vm`: give a virtual machine connectivity over QEMU's stream socket.
 *
 * tapir listens on a UNIX stream socket (`--socket PATH`, default
 * {@linkcode defaultSocketPath}) or takes an already connected one (`--fd
 * N`). QEMU connects with `-netdev stream,id=n0,server=off,addr.type=unix,
 * addr.path=PATH -device virtio-net-pci,netdev=n0`. One guest at a time: a
 * second connection while one is served is closed at once. When the guest
 * disconnects, tapir waits for the next one, unless `--one-off` (or `--fd`,
 * where there is no listener) — then it exits.
 *
 * Everything else — services, TCP, UDP, ICMP, `-t`/`-u` forwarding, pcap —
 * is the same runtime as namespace mode (`lib/tapir.ts`) behind the stream
 * backend (`lib/tap/stream.ts`). There is no namespace, so no splice path
 * and no `-T`/`-U`. tapir never daemonizes; `-f` is accepted for pasta/passt
 * compatibility.
 *
 * @module
 */

import type { VmConfig } from "../conf.ts";
import { logDebug, logError, logInfo } from "../log.ts";
import { hostFacts } from "../net.ts";
import { pcapClose } from "../pcap.ts";
import * as sys from "../sys/mod.ts";
import { StreamBackend } from "../tap/stream.ts";
import { Tapir } from "../tapir.ts";
import { prepareGuest } from "./common.ts";

/** Where `tapir vm` listens without `--socket`. */
export function defaultSocketPath(): string {
  return `/tmp/tapir-${Deno.uid() ?? 0}.socket`;
}

/**
 * Binds and listens on UNIX socket `path`. A stale socket file left by an
 * earlier run is replaced; one that something still accepts on is not.
 * Returns the fd, or a message for the user.
 */
function listenUnix(path: string): number | string {
  const sa = new Uint8Array(sys.SOCKADDR_UN_SIZE);
  const len = sys.sockaddrUn(sa, path);
  if (len < 0) return `--socket: ${path} is too long for a UNIX socket`;
  const fd = sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  if (fd < 0) return `--socket: socket: ${sys.errnoName(-fd)}`;
  let rc = sys.bind(fd, sa, len);
  if (rc === -sys.Errno.EADDRINUSE) {
    const probe = sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_CLOEXEC);
    const live = sys.connect(probe, sa, len) === 0;
    sys.close(probe);
    if (live) {
      sys.close(fd);
      return `--socket: ${path} is in use by another process`;
    }
    try {
      Deno.removeSync(path);
    } catch { /* raced away */ }
    rc = sys.bind(fd, sa, len);
  }
  if (rc === 0) rc = sys.listen(fd, 1);
  if (rc < 0) {
    sys.close(fd);
    return `--socket: cannot listen on ${path}: ${sys.errnoName(-rc)}`;
  }
  return fd;
}

/** Runs VM mode until the (last) guest leaves or a signal stops it. */
export async function runVm(conf: VmConfig): Promise<number> {
  if (conf.vhostUser) {
    // Not built yet: say so rather than speak another protocol to QEMU.
    logError("--vhost-user: vhost-user is not available yet; QEMU's stream socket is");
    return 1;
  }
  const net = prepareGuest(conf, hostFacts());
  if (net === null) return 1;
  const path = conf.socket ?? defaultSocketPath();
  let listenFd = -1;
  if (conf.fd === null) {
    const fd = listenUnix(path);
    if (typeof fd === "string") {
      logError(fd);
      pcapClose();
      return 1;
    }
    listenFd = fd;
  }

  const backend = new StreamBackend();
  const oneGuest = conf.oneOff || listenFd < 0;
  let tapir: Tapir | null = null;
  const guestGone = (errno: number) => {
    const t = tapir!;
    logInfo(`guest disconnected (${sys.errnoName(errno)})`);
    t.loop.remove(backend.fd);
    backend.detach();
    t.guest.forget();
    if (oneGuest) t.loop.stop("guest disconnected");
  };
  tapir = new Tapir(net, backend, {
    onBackendError: guestGone,
    offload: conf.offload,
    rsc: conf.rsc,
  });
  const t = tapir;
  t.addCounters("stream", () => backend.stats);
  try {
    if (conf.fd !== null) {
      sys.fcntl(conf.fd, sys.F_SETFL, sys.fcntl(conf.fd, sys.F_GETFL) | sys.O_NONBLOCK);
      backend.attach(conf.fd);
    }
    t.start();
    t.tcpListeners.bind(conf.tcp);
    t.udp.listen(conf.udp);
    if (listenFd >= 0) {
      const type = t.loop.defineType("vm-listen", () => {
        for (;;) {
          const fd = sys.accept4(listenFd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
          if (fd < 0) return;
          if (backend.fd >= 0) {
            logInfo("a second guest connected while one is served: closed");
            sys.close(fd);
            continue;
          }
          backend.attach(fd);
          t.watchBackend();
          logInfo("guest connected");
        }
      });
      sys.sysCheck(t.loop.add(listenFd, sys.EPOLLIN, type, 0), "epoll_ctl vm-listen");
      logInfo(
        `listening on ${path}: qemu -netdev stream,id=n0,server=off,addr.type=unix,addr.path=${path}`,
      );
    }
    if (conf.pidFile) Deno.writeTextFileSync(conf.pidFile, `${Deno.pid}\n`);
    const reason = await t.loop.run();
    logDebug(`stopped: ${reason}`);
    return 0;
  } finally {
    pcapClose();
    backend.detach();
    t.tcpListeners.close();
    t.udp.close();
    t.loop.close();
    if (listenFd >= 0) {
      sys.close(listenFd);
      try {
        Deno.removeSync(path);
      } catch { /* already gone */ }
    }
    if (conf.pidFile) {
      try {
        Deno.removeSync(conf.pidFile);
      } catch { /* already gone */ }
    }
  }
}
