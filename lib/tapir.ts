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
 * all frames queued for the guest go out in one flush. Frames still queued
 * when the guest's frames are read go out right after the read, before
 * those are handled: the guest's queue has room for its answers only then
 * (see `#readGuest`). A flush that left
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
import { guardInspectorSignal } from "./inspector_guard.ts";
import { MallocTrimmer, type RuntimeReport, RuntimeStats } from "./runtime_stats.ts";
import { logDebug, logEnabled, logInfo, LogLevel } from "./log.ts";
import { countersDiff, type CountersSnapshot, StatsRegistry } from "./stats.ts";
import { Loop } from "./loop.ts";
import type { GuestNet } from "./net.ts";
import { WireError } from "./packet/wire.ts";
import { pcapActive, pcapFlush, pcapNow, pcapStatus } from "./pcap.ts";
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
/**
 * Full batches of guest frames one loop turn reads before it lets the rest
 * of the turn run (host sockets, timers); the rest is read at the turn's
 * end. Without a bound a guest that sends faster than tapir forwards (a
 * UDP flood) kept tapir reading the guest for good, and no host socket was
 * served meanwhile. 16 batches of 64 are a whole tap queue
 * (`TAP_QUEUE_FRAMES`): fewer (4), and the ACKs of a download at MTU 1500
 * without offloads, which TCP answers within a turn, overran the queue
 * (measured, `Tcp` caps what it sends per turn to match).
 */
const GUEST_BATCHES_PER_TURN = 16;

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
  /** Log a one-line summary with rates every this many seconds (`--stats`; default 0: never). */
  readonly statsInterval?: number;
}

/** Bytes and frames one way through the guest's interface. */
export interface TrafficCount {
  /** Frame bytes (Ethernet header on; a GSO frame counts whole). */
  readonly bytes: number;
  /** Frames (a GSO frame counts once). */
  readonly frames: number;
}

/**
 * Everything tapir counts, as one JSON-ready object: the SIGUSR2 log line,
 * the exit summary at debug level and the control socket's `stats` reply.
 */
export interface StatsReport {
  /** Seconds since the translator was built. */
  readonly uptime: number;
  /** Frames through the guest's interface each way. */
  readonly traffic: { readonly toHost: TrafficCount; readonly toGuest: TrafficCount };
  /** Flows now, by type and state. */
  readonly flows: {
    readonly live: number;
    readonly byType: Record<string, number>;
    readonly byState: Record<string, number>;
  };
  /** Every registered counter, by group (see `lib/stats.ts`). */
  readonly counters: CountersSnapshot;
  /** Memory, allocation and garbage collection of the runtime (see `lib/runtime_stats.ts`). */
  readonly runtime: RuntimeReport;
}

/** What the log line of a statistics report starts with; the JSON object follows. */
export const STATS_LOG_PREFIX = "stats ";

/**
 * The last statistics report in a log: the line SIGUSR2 writes, and `-d`
 * at exit. Null if there is none.
 */
export function statsReportFromLog(log: string): StatsReport | null {
  const marker = `${STATS_LOG_PREFIX}{`;
  const at = log.lastIndexOf(marker);
  if (at < 0) return null;
  const end = log.indexOf("\n", at);
  return JSON.parse(log.slice(at + STATS_LOG_PREFIX.length, end < 0 ? undefined : end));
}

/** Labels of the input's drop counters, indexed by `WireError`: `dropTruncated`, … */
const WIRE_DROP_LABELS: (string | undefined)[] = (() => {
  const labels: (string | undefined)[] = [];
  for (const [name, code] of Object.entries(WireError)) labels[code] = name;
  return labels;
})();

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
  /** Every module's counters; modes add their parts (backend, namespace forwarders). */
  readonly stats: StatsRegistry = new StatsRegistry();
  /** When this translator was built (`performance.now()` ms). */
  readonly startedMs: number = performance.now();
  readonly #statsInterval: number;
  /** Set when the backend reports the guest gone. */
  backendError = 0;
  #tapType = -1;
  readonly #runtime = new RuntimeStats();
  readonly #trimmer = new MallocTrimmer(sys.mallocTrim);
  /** Loop turn of the last read from the backend, and how many frames it got. */
  #readTurn = -2;
  #readCount = 0;
  /** A read of the guest's frames is deferred to the end of this turn. */
  #readDeferred = false;
  readonly #readGuestDeferred = () => {
    this.#readDeferred = false;
    if (this.#watchedFd >= 0) this.#readGuest(); // not if the guest left meanwhile
    else this.#flushTap(); // what the turn's end left for the read
  };
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
    this.#statsInterval = opts.statsInterval ?? 0;
    const r = this.stats;
    r.add("loop", this.loop.stats);
    r.add("input", this.input.stats, { drop: WIRE_DROP_LABELS });
    r.add("tap", this.tap.stats);
    r.add("flow", () => ({ live: this.flows.live, allocFailures: this.flows.allocFailures }));
    r.add("malloc", this.#trimmer.stats);
    r.add("ping", this.ping.stats);
    r.add("tcp", this.tcp.stats);
    if (rsc !== null) r.add("rsc", rsc.stats);
    r.add("tcp-listen", this.tcpListeners.stats);
    r.add("tcp-splice", this.splice.stats);
    r.add("pipes", this.splice.pipes.stats);
    r.add("udp", this.udp.stats);
    r.add("arp", this.arp.stats);
    r.add("ndp", this.ndp.stats);
    r.add("dhcp", this.dhcp.stats);
    r.add("dhcpv6", this.dhcpv6.stats);
    r.add("pcap", () => pcapStatus());
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
      this.flows.deferredPass();
      // A read of the guest deferred to this turn's end sends these right
      // after it drains the guest's queue (see #readGuest).
      if (!this.#readDeferred) this.#flushTap();
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
      // Only when it is logged: the report loads `node:v8` (~12 ms), which
      // would hold up the exit for nothing.
      if (logEnabled(LogLevel.debug)) {
        logDebug(STATS_LOG_PREFIX + JSON.stringify(this.statsReport()));
      }
    });
    loop.stopOnSignals();
    if (this.#statsInterval > 0) this.#statsEvery(this.#statsInterval * 1000);
    // Not SIGUSR1: that one would open Deno's inspector (see `inspector_guard.ts`).
    const usr2 = () => logInfo(STATS_LOG_PREFIX + JSON.stringify(this.statsReport()));
    Deno.addSignalListener("SIGUSR2", usr2);
    loop.onStop(() => Deno.removeSignalListener("SIGUSR2", usr2));
    guardInspectorSignal(loop);
    const everySecond = () => {
      this.#runtime.drain();
      this.#trimmer.tick(performance.now(), this.flows.live);
      loop.after(1000, everySecond);
    };
    loop.after(1000, everySecond);
  }

  /**
   * Reads and dispatches batches of guest frames while batches come back
   * full: a stream backend may hold frames it has already read, which epoll
   * cannot report. After {@linkcode GUEST_BATCHES_PER_TURN} full batches the
   * rest waits for the end of the turn, after every other event of it.
   */
  #readGuest(): void {
    const rx = this.#rx;
    // Sparse traffic (the last read got one frame, and not in the turn just
    // before): read one frame, not until EAGAIN. A request-response exchange
    // sends one frame at a time, and the read that only finds the device
    // empty was one syscall in seven of its round trip. A tap is watched
    // level-triggered: frames left behind are reported next turn, and that
    // read, in consecutive turns, takes a whole batch.
    const turn = this.loop.stats.turns;
    const sparse = this.#readCount <= 1 && turn !== this.#readTurn + 1;
    this.#readTurn = turn;
    for (let batches = 1;; batches++) {
      const n = this.#backend.receive(rx, sparse ? 1 : rx.capacity);
      this.#readCount = n;
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
      // The guest's queue has just been drained: what waits to go to the
      // guest goes now, before these frames are handled. The guest's kernel
      // answers a frame (a TCP ACK) while tapir's write is still in
      // progress, and when a guest sends faster than tapir reads (a UDP
      // flood) its queue is full again within a millisecond or two: an
      // answer made at the turn's end found it full every time, the
      // guest's ACKs were all lost, and a download during the flood stalled
      // until its connection was reset (measured, 16 MiB: cut short in all
      // 6 runs, after 11 to 87 s; flushing here, whole in 0.7 to 6.2 s in 8).
      if (this.tap.pending > 0) this.#flushTap();
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
      if (batches === GUEST_BATCHES_PER_TURN) {
        if (!this.#readDeferred) {
          this.#readDeferred = true;
          this.loop.defer(this.#readGuestDeferred);
        }
        return;
      }
    }
  }

  /** Sends the frames waiting for the guest; if it took fewer, waits until it can take more. */
  #flushTap(): void {
    this.tap.flush();
    if (this.tap.blocked) this.#waitWritable();
  }

  /**
   * End of a batch of guest frames: what the coalescer merged goes to TCP,
   * and the datagrams UDP gathered to their sockets, now, before the slots
   * are read into again. Whoever hands frames to {@linkcode input} calls
   * this after each batch.
   */
  endBatch(): void {
    this.rsc?.drain();
    this.udp.drain();
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

  /** Everything counted, as one object; see {@linkcode StatsReport}. */
  statsReport(): StatsReport {
    const f = this.flows.stats();
    const input = this.input.stats, send = this.tap.stats;
    return {
      uptime: Math.round(performance.now() - this.startedMs) / 1000,
      traffic: {
        toHost: { bytes: input.bytesToHost, frames: input.framesToHost },
        toGuest: { bytes: send.bytesToGuest, frames: send.framesToGuest },
      },
      flows: { live: f.live, byType: nonZero(f.byType), byState: nonZero(f.byState) },
      counters: this.stats.snapshot(),
      runtime: this.#runtime.report(),
    };
  }

  /**
   * `--stats`: every `ms`, one info line with the rates of the last period
   * (bits and frames per second each way), the flows by type, and the drop
   * counters that moved.
   */
  #statsEvery(ms: number): void {
    let before = this.stats.snapshot();
    let beforeMs = performance.now();
    const tick = () => {
      const now = performance.now();
      const after = this.stats.snapshot();
      logInfo(
        statsSummary(countersDiff(before, after), (now - beforeMs) / 1000, this.flows.stats()),
      );
      before = after;
      beforeMs = now;
      this.loop.after(ms, tick);
    };
    this.loop.after(ms, tick);
  }
}

function nonZero(o: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
}

function rate(n: number, unit: string): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G${unit}`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M${unit}`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)} k${unit}`;
  return `${n.toFixed(0)} ${unit}`;
}

/**
 * The `--stats` line for counters that moved by `diff` over `seconds`:
 * `stats: to host 1.20 Gbit/s 98.1 kframes/s, to guest …; flows 3 (TCP 2,
 * UDP 1); drops input.dropBadChecksum 2`.
 */
export function statsSummary(
  diff: CountersSnapshot,
  seconds: number,
  flows: { readonly live: number; readonly byType: Record<string, number> },
): string {
  const per = (n: number) => (seconds > 0 ? n / seconds : 0);
  const way = (bytes: number, frames: number) =>
    `${rate(per(bytes) * 8, "bit/s")} ${rate(per(frames), "frames/s")}`;
  const input = diff.input ?? {}, tap = diff.tap ?? {};
  const types = Object.entries(nonZero(flows.byType)).map(([t, n]) => `${t} ${n}`).join(", ");
  const drops: string[] = [];
  for (const [group, counters] of Object.entries(diff)) {
    for (const [name, v] of Object.entries(counters)) {
      if (v > 0 && name.startsWith("drop")) drops.push(`${group}.${name} ${v}`);
    }
  }
  return `stats: to host ${way(input.bytesToHost ?? 0, input.framesToHost ?? 0)}, ` +
    `to guest ${way(tap.bytesToGuest ?? 0, tap.framesToGuest ?? 0)}; ` +
    `flows ${flows.live}${types ? ` (${types})` : ""}; ` +
    `drops ${drops.length > 0 ? drops.join(", ") : "none"}`;
}
