/**
 * A running tapir: the reactor, the flow table, the send path, the frame
 * dispatcher, the services and the translation layers, wired together for
 * one guest behind one backend. Both modes build one of these; they differ
 * only in how the backend is obtained and when the run ends.
 *
 * Per loop turn: backend readable → read a batch of frames → dispatch each
 * (services answer, translation layers forward; TCP segments through the
 * RSC coalescer, which hands its merged segments to TCP at the end of the
 * batch) → at the end of the turn the flow table's deferred pass runs, then
 * all frames queued for the guest go out in one flush. A flush that left
 * frames undelivered because the guest was not reading makes the reactor
 * watch the backend for EPOLLOUT, and the producers resume then.
 *
 * @module
 */

import { FlowTable } from "./flow/table.ts";
import { GuestHeaders } from "./l4/ip.ts";
import { Ping } from "./l4/icmp.ts";
import { Rsc } from "./l4/rsc.ts";
import { Tcp } from "./l4/tcp.ts";
import { TcpListeners } from "./l4/tcp_listen.ts";
import { TcpSplice } from "./l4/tcp_splice.ts";
import { Udp } from "./l4/udp.ts";
import { logDebug, logInfo } from "./log.ts";
import { Loop } from "./loop.ts";
import type { GuestNet } from "./net.ts";
import { WIRE_ERROR_NAMES, type WireError } from "./packet/wire.ts";
import { pcapActive, pcapFlush, pcapNow } from "./pcap.ts";
import { ArpService } from "./services/arp.ts";
import { DhcpService } from "./services/dhcp.ts";
import { Dhcp6Service } from "./services/dhcpv6.ts";
import { GuestState } from "./services/guest.ts";
import { NdpService } from "./services/ndp.ts";
import type { ServiceContext } from "./services/service.ts";
import * as sys from "./sys/mod.ts";
import { TapInput } from "./tap/input.ts";
import { FrameBatch, TAP_HEADROOM, TAP_SLOT_SIZE, type TapBackend, TapSender } from "./tap/tap.ts";

/** Unsolicited router advertisements: every this many milliseconds. */
export const RA_INTERVAL_MS = 60_000;
/** Reactor index of the backend's frame fd, and of its wake fd (see `TapBackend.wakeFd`). */
const TAP_INDEX_FRAMES = 0;
const TAP_INDEX_WAKE = 1;
/** The pcap buffer is written out at least this often. */
const PCAP_FLUSH_MS = 1000;

/** Options of a {@linkcode Tapir}. */
export interface TapirOptions {
  /** Flow table capacity (default: the table's default). */
  readonly flowCapacity?: number;
  /** Frames read from the guest per batch. */
  readonly rxBatch?: number;
  /** What to do when the backend reports the guest gone (default: stop the loop). */
  readonly onBackendError?: (errno: number) => void;
  /** Segmentation offload toward the guest where the backend takes it (default true; `--no-offload`). */
  readonly offload?: boolean;
  /** Coalesce the guest's TCP segments (default true; `--no-rsc`, and off with `--no-offload`). */
  readonly rsc?: boolean;
}

/** One guest's translator; see the module comment. */
export class Tapir {
  /** The reactor. */
  readonly loop: Loop = new Loop();
  /** Every flow. */
  readonly flows: FlowTable;
  /** What tapir learned about the guest. */
  readonly guest: GuestState = new GuestState();
  /** The one send path. */
  readonly tap: TapSender;
  /** The dispatcher of guest frames. */
  readonly input: TapInput;
  /** ICMP echo translation. */
  readonly ping: Ping;
  /** TCP translation. */
  readonly tcp: Tcp;
  /** `-t` listeners. */
  readonly tcpListeners: TcpListeners;
  /** Spliced TCP (namespace mode: loopback to loopback, never through the tap). */
  readonly splice: TcpSplice;
  /** UDP translation and `-u` listeners. */
  readonly udp: Udp;
  /** The coalescer in front of TCP, or null (`--no-rsc`, `--no-offload`). */
  readonly rsc: Rsc | null;
  /** Services. */
  readonly arp: ArpService;
  /** NDP service. */
  readonly ndp: NdpService;
  /** DHCP server. */
  readonly dhcp: DhcpService;
  /** DHCPv6 server. */
  readonly dhcpv6: Dhcp6Service;
  /** The guest's network. */
  readonly net: GuestNet;
  readonly #backend: TapBackend;
  readonly #rx: FrameBatch;
  readonly #ctx: ServiceContext;
  readonly #counterSources: [string, () => object][] = [];
  /** Set when the backend reports the guest gone. */
  backendError = 0;
  #tapType = -1;
  /** The backend is watched for EPOLLOUT (or a wake-up is posted) after undelivered frames. */
  #waitingWritable = false;
  /** The backend's fds the reactor watches now (frames in; room again), or -1. */
  #watchedFd = -1;
  #watchedWakeFd = -1;
  readonly #onBackendError: (errno: number) => void;

  /** Builds everything for `net` behind `backend`; call {@linkcode start}, then `loop.run()`. */
  constructor(net: GuestNet, backend: TapBackend, opts: TapirOptions = {}) {
    this.net = net;
    this.#backend = backend;
    this.flows = new FlowTable(opts.flowCapacity);
    const offload = opts.offload ?? true;
    this.tap = new TapSender(backend, 128, TAP_SLOT_SIZE, offload);
    this.#rx = new FrameBatch(opts.rxBatch ?? 64);
    this.#onBackendError = opts.onBackendError ??
      ((errno) => this.loop.stop(`${backend.name}: ${sys.errnoName(errno)}`));
    this.#ctx = { net, guest: this.guest, tap: this.tap };
    const hdrs = new GuestHeaders({ ourMac: net.ourMac, guestMac: this.guest.mac });
    this.ping = new Ping(this.loop, this.flows, net, hdrs, this.tap);
    this.tcp = new Tcp(this.loop, this.flows, net, hdrs, this.tap);
    this.tcpListeners = new TcpListeners(this.loop, net, this.tcp);
    this.splice = new TcpSplice(this.loop, this.flows);
    this.udp = new Udp(this.loop, this.flows, net, hdrs, this.tap);
    const rsc = offload && (opts.rsc ?? true) ? new Rsc(this.tcp) : null;
    this.rsc = rsc;
    const s = net.services;
    this.arp = new ArpService();
    this.ndp = new NdpService({ enabled: s.ndp, routerAdvertisements: s.ra, dhcpv6: s.dhcpv6 });
    this.dhcp = new DhcpService({ enabled: s.dhcp });
    this.dhcpv6 = new Dhcp6Service({ enabled: s.dhcpv6 });
    this.input = new TapInput(this.#ctx, {
      arp: (ctx, eth) => this.arp.input(ctx, eth),
      ndp: (ctx, eth, ip, icmp) => this.ndp.input(ctx, eth, ip, icmp),
      dhcp: (ctx, eth, ip, udp) => this.dhcp.input(ctx, eth, ip, udp),
      dhcpv6: (ctx, eth, ip, udp) => this.dhcpv6.input(ctx, eth, ip, udp),
      ping4: (ip, icmp) => this.ping.request4(ip, icmp),
      ping6: (ip, icmp) => this.ping.request6(ip, icmp),
      tcp4: rsc !== null
        ? (ip, seg, tail) => rsc.fromTap4(ip, seg, tail)
        : (ip, seg, tail) => this.tcp.fromTap4(ip, seg, null, tail),
      tcp6: rsc !== null
        ? (ip, seg, upperOff, tail) => rsc.fromTap6(ip, seg, upperOff, tail)
        : (ip, seg, upperOff, tail) => this.tcp.fromTap6(ip, seg, upperOff, null, tail),
      udp4: (ip, d, gsoSize, tail) => this.udp.fromTap4(ip, d, gsoSize, tail),
      udp6: (ip, d, upperOff, gsoSize, tail) => this.udp.fromTap6(ip, d, upperOff, gsoSize, tail),
    });
  }

  /** Registers the backend, the per-turn work, timers and signal handling. */
  start(): void {
    const loop = this.loop;
    this.#tapType = loop.defineType("tap", (index, events) => {
      if (index === TAP_INDEX_WAKE) {
        this.#backend.drainWake?.();
        this.#writable();
        return;
      }
      if (events & sys.EPOLLOUT) this.#writable();
      if (events & (sys.EPOLLIN | sys.EPOLLERR | sys.EPOLLHUP)) this.#readGuest();
    });
    this.watchBackend();
    loop.onTurn(() => {
      this.flows.deferredPass(performance.now());
      this.tap.flush();
      if (this.tap.blocked) this.#waitWritable();
    });
    const ra = () => {
      this.ndp.advertise(this.#ctx);
      loop.after(RA_INTERVAL_MS, ra);
    };
    loop.after(0, ra);
    const flushPcap = () => {
      pcapFlush();
      loop.after(PCAP_FLUSH_MS, flushPcap);
    };
    loop.after(PCAP_FLUSH_MS, flushPcap);
    loop.onStop(() => {
      this.tap.flush();
      logDebug(this.counters());
    });
    loop.stopOnSignals();
    const usr1 = () => logInfo(this.counters());
    Deno.addSignalListener("SIGUSR1", usr1);
    loop.onStop(() => Deno.removeSignalListener("SIGUSR1", usr1));
  }

  /**
   * Reads and dispatches batches of guest frames while batches come back
   * full: a stream backend may hold frames it has already read, which epoll
   * cannot report.
   */
  #readGuest(): void {
    const rx = this.#rx;
    for (;;) {
      const n = this.#backend.receive(rx);
      if (n < 0) {
        this.backendError = -n;
        this.#onBackendError(-n);
        return;
      }
      if (pcapActive()) {
        // A capture shows the checksum the guest's kernel left to offload.
        const ts = pcapNow();
        for (let i = 0; i < n; i++) rx.record(i, ts);
      }
      for (let i = 0; i < n; i++) {
        this.input.frame(
          rx.slots[i],
          TAP_HEADROOM,
          rx.lens[i],
          rx.vnetFlags[i],
          rx.gsoType[i],
          rx.gsoSize[i],
          rx.tails[i],
        );
      }
      this.endBatch();
      this.#backend.receiveDone?.();
      if (n < rx.capacity) return;
    }
  }

  /**
   * End of a batch of guest frames: what the coalescer merged goes to TCP
   * now, before the slots are read into again. Whoever hands frames to
   * {@linkcode input} calls this after each batch.
   */
  endBatch(): void {
    this.rsc?.drain();
  }

  /**
   * A flush left frames undelivered because the guest was not reading:
   * wait until the backend takes frames again (EPOLLOUT on its fd; a backend
   * without one gets the next turn), then let the producers resume.
   */
  #waitWritable(): void {
    if (this.#waitingWritable) return;
    this.#waitingWritable = true;
    if (this.#watchedWakeFd >= 0) return; // watched all along
    const fd = this.#backend.fd;
    if (fd < 0) {
      this.loop.post(() => this.#writable());
      return;
    }
    this.loop.modify(fd, sys.EPOLLIN | sys.EPOLLOUT, this.#tapType, 0);
  }

  #writable(): void {
    if (!this.#waitingWritable) return;
    this.#waitingWritable = false;
    const fd = this.#backend.fd;
    if (fd >= 0 && this.#watchedWakeFd < 0) this.loop.modify(fd, sys.EPOLLIN, this.#tapType, 0);
    this.tap.resume();
  }

  /**
   * Watches the backend's fds: its `fd` for guest frames, and its `wakeFd`
   * if it has one (the tap in namespace mode; each new guest connection, or
   * each change of vhost-user rings, in VM mode). Whatever was watched
   * before is let go first. Call after {@linkcode start}.
   */
  watchBackend(): void {
    this.unwatchBackend();
    const fd = this.#backend.fd;
    const wake = this.#backend.wakeFd ?? -1;
    if (fd >= 0) {
      sys.sysCheck(
        this.loop.add(fd, sys.EPOLLIN, this.#tapType, TAP_INDEX_FRAMES),
        "epoll_ctl tap",
      );
      this.#watchedFd = fd;
    }
    if (wake >= 0) {
      sys.sysCheck(
        this.loop.add(wake, sys.EPOLLIN, this.#tapType, TAP_INDEX_WAKE),
        "epoll_ctl tap",
      );
      this.#watchedWakeFd = wake;
    }
    // Producers that were waiting for room try again with whatever is there now.
    if (this.#waitingWritable) this.loop.post(() => this.#writable());
  }

  /** Stops watching the backend's fds (before they are closed or replaced). */
  unwatchBackend(): void {
    if (this.#watchedFd >= 0) this.loop.remove(this.#watchedFd);
    if (this.#watchedWakeFd >= 0) this.loop.remove(this.#watchedWakeFd);
    this.#watchedFd = this.#watchedWakeFd = -1;
  }

  /** Adds a line `name: {...}` to {@linkcode counters} (for parts a mode adds). */
  addCounters(name: string, read: () => object): void {
    this.#counterSources.push([name, read]);
  }

  /** All counters as one line per module, for logs (`SIGUSR1` at info, exit at debug). */
  counters(): string {
    const drops: string[] = [];
    const d = this.input.stats.dropped;
    for (let i = 1; i < d.length; i++) {
      if (d[i]) drops.push(`${WIRE_ERROR_NAMES[i as WireError]} ${d[i]}`);
    }
    const line = (name: string, o: object) => `${name}: ${JSON.stringify(o)}`;
    return [
      "counters:",
      line("input", {
        frames: this.input.stats.frames,
        oversize: this.input.stats.oversize,
        unhandled: this.input.stats.unhandled,
        gsoFramesIn: this.input.stats.gsoFramesIn,
        gsoSegmentsIn: this.input.stats.gsoSegmentsIn,
        badGso: this.input.stats.badGso,
        gathered: this.input.stats.gathered,
        dropped: drops.join(", ") || "none",
      }),
      line("send", this.tap.stats),
      line("flows", this.flows.stats()),
      line("ping", this.ping.stats),
      line("tcp", this.tcp.stats),
      ...(this.rsc !== null ? [line("rsc", this.rsc.stats)] : []),
      line("tcp-listen", this.tcpListeners.stats),
      line("tcp-splice", { ...this.splice.stats, pipes: this.splice.pipes.stats }),
      ...this.#counterSources.map(([name, read]) => line(name, read())),
      line("udp", this.udp.stats),
      line("arp", this.arp.stats),
      line("ndp", this.ndp.stats),
      line("dhcp", this.dhcp.stats),
      line("dhcpv6", this.dhcpv6.stats),
    ].join("\n  ");
  }
}
