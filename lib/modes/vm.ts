/**
 * `tapir vm`: give a virtual machine connectivity over QEMU's stream socket
 * or over vhost-user.
 *
 * tapir listens on a UNIX stream socket (`--socket PATH`, default
 * {@linkcode defaultSocketPath}) or takes an already connected one (`--fd
 * N`). QEMU connects with `-netdev stream,id=n0,server=off,addr.type=unix,
 * addr.path=PATH -device virtio-net-pci,netdev=n0`, or with
 * `--vhost-user`, with `-chardev socket,id=c0,path=PATH -netdev
 * vhost-user,id=n0,chardev=c0` and guest memory QEMU can share (a
 * `memory-backend-memfd` with `share=on`). One guest at a time: a second
 * connection while one is served is closed at once. When the guest
 * disconnects, tapir waits for the next one, unless `--one-off` (or `--fd`,
 * where there is no listener) — then it exits.
 *
 * Everything else — services, TCP, UDP, ICMP, `-t`/`-u` forwarding, pcap —
 * is the same runtime as namespace mode (`lib/tapir.ts`) behind the stream
 * backend (`lib/tap/stream.ts`) or the vhost-user device
 * (`lib/vhost/device.ts`). There is no namespace, so no splice path and no
 * `-T`/`-U`. tapir never daemonizes; `-f` is accepted for pasta/passt
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
import type { TapBackend } from "../tap/tap.ts";
import { Tapir } from "../tapir.ts";
import { listenUnix } from "../unix_socket.ts";
import { VhostUserConn, type VhostUserConnStats } from "../vhost/conn.ts";
import { VHOST_RX_RING, VHOST_TX_RING, VhostNetDevice, vhostServe } from "../vhost/device.ts";
import { prepareGuest, startControl } from "./common.ts";
import { ForwardTable } from "../forwards.ts";
import { applySandbox, sandboxFilesOf } from "../sandbox.ts";

/** Where `tapir vm` listens without `--socket`. */
export function defaultSocketPath(): string {
  return `/tmp/tapir-${Deno.uid() ?? 0}.socket`;
}

/**
 * The guest's side of the run, by protocol: what the reactor watches for
 * one front-end, from its connection to its leaving.
 */
interface GuestLink {
  /** The backend tapir sends and receives through. */
  readonly backend: TapBackend;
  /** How QEMU connects, for the listening line. */
  qemuHint(path: string): string;
  /** Wires the link into a started `t`; `gone` is called when the guest leaves. */
  start(t: Tapir, gone: (why: string) => void): void;
  /** True while a front-end is served. */
  readonly attached: boolean;
  /** The served front-end's socket (-1 with none). */
  readonly socketFd: number;
  /** Serves the front-end connected on `fd` (non-blocking). */
  attach(fd: number): void;
  /** Lets the front-end go and closes its connection. */
  detach(): void;
}

/** QEMU's `-netdev stream`: frames over the socket itself (`lib/tap/stream.ts`). */
class StreamLink implements GuestLink {
  readonly backend = new StreamBackend();
  #t: Tapir | null = null;

  qemuHint(path: string): string {
    return `qemu -netdev stream,id=n0,server=off,addr.type=unix,addr.path=${path}`;
  }

  start(t: Tapir): void {
    this.#t = t;
    t.stats.add("stream", this.backend.stats); // a socket from --fd: t.start() watches it
  }

  get attached(): boolean {
    return this.backend.fd >= 0;
  }

  get socketFd(): number {
    return this.backend.fd;
  }

  attach(fd: number): void {
    this.backend.attach(fd);
    this.#t?.watchBackend();
  }

  detach(): void {
    this.#t?.unwatchBackend();
    this.backend.detach();
  }
}

/**
 * vhost-user: the socket carries control messages (`lib/vhost/conn.ts`),
 * frames go through rings in guest memory (`lib/vhost/device.ts`), whose
 * kick fds the reactor watches once the rings run.
 */
class VhostLink implements GuestLink {
  readonly backend = new VhostNetDevice();
  #conn: VhostUserConn | null = null;
  #t: Tapir | null = null;
  #type = -1;
  /** Counters of the control connections, one front-end after another. */
  readonly #connStats: VhostUserConnStats = { messages: 0, replies: 0 };

  qemuHint(path: string): string {
    return `qemu -object memory-backend-memfd,id=mem,size=SIZE,share=on -numa node,memdev=mem ` +
      `-chardev socket,id=c0,path=${path} -netdev vhost-user,id=n0,chardev=c0`;
  }

  start(t: Tapir, gone: (why: string) => void): void {
    this.#t = t;
    const dev = this.backend;
    vhostServe(dev, t);
    t.stats.add("vhost-user", dev.stats);
    t.stats.add("vhost-conn", this.#connStats);
    t.stats.add("vhost-rx", dev.rx.stats);
    t.stats.add("vhost-rx-ring", () => dev.control.vrings[VHOST_RX_RING].queue.stats);
    t.stats.add("vhost-tx-ring", () => dev.control.vrings[VHOST_TX_RING].queue.stats);
    this.#type = t.loop.defineType("vhost-user", () => {
      const conn = this.#conn;
      if (conn !== null && !conn.readable()) gone(`vhost-user: ${conn.error}`);
    });
    if (this.#conn !== null) this.#watch();
  }

  get attached(): boolean {
    return this.#conn !== null;
  }

  get socketFd(): number {
    return this.#conn?.fd ?? -1;
  }

  attach(fd: number): void {
    this.#conn = new VhostUserConn(fd, this.backend.control, this.#connStats);
    if (this.#t !== null) this.#watch();
  }

  #watch(): void {
    sys.sysCheck(
      this.#t!.loop.add(this.#conn!.fd, sys.EPOLLIN, this.#type, 0),
      "epoll_ctl vhost-user",
    );
  }

  detach(): void {
    const conn = this.#conn;
    if (conn === null) return;
    this.#conn = null;
    this.#t?.loop.remove(conn.fd);
    conn.close(); // resets the back-end: the rings stop, memory is unmapped
  }
}

const peekByte = new Uint8Array(1);

/**
 * True if the peer of stream socket `fd` has closed and nothing it sent is
 * left unread. A peek: the bytes (and any descriptors passed with them)
 * stay queued.
 */
function peerClosed(fd: number): boolean {
  return fd >= 0 && sys.recv(fd, peekByte, 1, sys.MSG_PEEK | sys.MSG_DONTWAIT) === 0;
}

/** Runs VM mode until the (last) guest leaves or a signal stops it. */
export async function runVm(conf: VmConfig): Promise<number> {
  const net = prepareGuest(conf, hostFacts());
  if (net === null) return 1;
  const path = conf.socket ?? defaultSocketPath();
  let listenFd = -1;
  if (conf.fd === null) {
    const listener = listenUnix(path, { option: "--socket", backlog: 1 });
    if (typeof listener === "string") {
      logError(listener);
      pcapClose();
      return 1;
    }
    listenFd = listener.fd;
  }

  const link: GuestLink = conf.vhostUser ? new VhostLink() : new StreamLink();
  const oneGuest = conf.oneOff || listenFd < 0;
  const t = new Tapir(net, link.backend, {
    onBackendError: (errno) => guestGone(sys.errnoName(errno)),
    offload: conf.offload,
    rsc: conf.rsc,
    statsInterval: conf.statsInterval,
    flowCapacity: conf.maxFlows,
  });
  function guestGone(why: string): void {
    logInfo(`guest disconnected (${why})`);
    link.detach();
    t.guest.forget();
    // Its connections end now: host peers get a RST, not minutes of silence.
    t.flows.guestGone();
    if (oneGuest) t.loop.stop("guest disconnected");
  }
  try {
    if (conf.fd !== null) {
      sys.fcntl(conf.fd, sys.F_SETFL, sys.fcntl(conf.fd, sys.F_GETFL) | sys.O_NONBLOCK);
      link.attach(conf.fd);
    }
    t.start();
    link.start(t, guestGone);
    const forwards = new ForwardTable({
      tcp: {
        open: (f) => t.tcpListeners.bind(f),
        openAll: (f) => t.tcpListeners.bindAll(f),
        close: (fds) => t.tcpListeners.closeFds(fds),
      },
      udp: {
        open: (f) => t.udp.listen(f),
        openAll: (f) => t.udp.listenAll(f),
        close: (fds) => t.udp.closeFds(fds),
      },
    });
    await forwards.start("tcp", conf.tcp);
    await forwards.start("udp", conf.udp);
    if (!startControl(conf, t, forwards)) return 1;
    if (listenFd >= 0) {
      const type = t.loop.defineType("vm-listen", () => {
        for (;;) {
          const fd = sys.accept4(listenFd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
          if (fd < 0) return;
          // The served guest may have closed just before this one connected,
          // its end of stream not handled yet (a QEMU restarting at once):
          // then it is gone, and this one is served.
          if (link.attached && peerClosed(link.socketFd)) guestGone("end of stream");
          if (link.attached) {
            logInfo("a second guest connected while one is served: closed");
            sys.close(fd);
            continue;
          }
          link.attach(fd);
          logInfo("guest connected");
        }
      });
      sys.sysCheck(t.loop.add(listenFd, sys.EPOLLIN, type, 0), "epoll_ctl vm-listen");
      logInfo(`listening on ${path}: ${link.qemuHint(path)}`);
    }
    if (conf.pidFile) Deno.writeTextFileSync(conf.pidFile, `${Deno.pid}\n`);
    if (conf.sandbox) applySandbox(sandboxFilesOf(conf, listenFd >= 0 ? path : null));
    const reason = await t.loop.run();
    logDebug(`stopped: ${reason}`);
    return 0;
  } finally {
    pcapClose();
    link.detach();
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
