/**
 * A running tapir: the reactor, the flow table, the send path, the frame
 * dispatcher, the services and the translation layers, wired together for
 * one guest behind one backend. Both modes build one of these; they differ
 * only in how the backend is obtained and when the run ends.
 *
 * Per loop turn: backend readable → read a batch of frames → dispatch each
 * (services answer, translation layers forward) → at the end of the turn the
 * flow table's deferred pass runs, then all frames queued for the guest go
 * out in one flush.
 *
 * @module
 */

import { FlowTable } from "./flow/table.ts";
import { GuestHeaders } from "./l4/ip.ts";
import { Ping } from "./l4/icmp.ts";
import { Tcp } from "./l4/tcp.ts";
import { TcpListeners } from "./l4/tcp_listen.ts";
import { TcpSplice } from "./l4/tcp_splice.ts";
import { Udp } from "./l4/udp.ts";
import { logDebug, logInfo } from "./log.ts";
import { Loop } from "./loop.ts";
import type { GuestNet } from "./net.ts";
import { WIRE_ERROR_NAMES, type WireError } from "./packet/wire.ts";
import { checksumComplete } from "./packet/checksum.ts";
import { pcapActive, pcapFlush, pcapFrame, pcapNow } from "./pcap.ts";
import { ArpService } from "./services/arp.ts";
import { DhcpService } from "./services/dhcp.ts";
import { Dhcp6Service } from "./services/dhcpv6.ts";
import { GuestState } from "./services/guest.ts";
import { NdpService } from "./services/ndp.ts";
import type { ServiceContext } from "./services/service.ts";
import * as sys from "./sys/mod.ts";
import { TapInput } from "./tap/input.ts";
import { FrameBatch, TAP_HEADROOM, type TapBackend, TapSender } from "./tap/tap.ts";

/** Unsolicited router advertisements: every this many milliseconds. */
export const RA_INTERVAL_MS = 60_000;
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
  readonly #onBackendError: (errno: number) => void;

  /** Builds everything for `net` behind `backend`; call {@linkcode start}, then `loop.run()`. */
  constructor(net: GuestNet, backend: TapBackend, opts: TapirOptions = {}) {
    this.net = net;
    this.#backend = backend;
    this.flows = new FlowTable(opts.flowCapacity);
    this.tap = new TapSender(backend);
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
      tcp4: (ip, seg) => this.tcp.fromTap4(ip, seg),
      tcp6: (ip, seg, upperOff) => this.tcp.fromTap6(ip, seg, upperOff),
      udp4: (ip, d) => this.udp.fromTap4(ip, d),
      udp6: (ip, d, upperOff) => this.udp.fromTap6(ip, d, upperOff),
    });
  }

  /** Registers the backend, the per-turn work, timers and signal handling. */
  start(): void {
    const loop = this.loop;
    this.#tapType = loop.defineType("tap", () => this.#readGuest());
    if (this.#backend.fd >= 0) this.watchBackend();
    loop.onTurn(() => {
      this.flows.deferredPass(performance.now());
      this.tap.flush();
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
        const ts = pcapNow();
        for (let i = 0; i < n; i++) {
          // A capture shows the checksum the guest's kernel left to offload.
          if (rx.csumOffset[i]) {
            checksumComplete(
              rx.slots[i],
              TAP_HEADROOM,
              rx.lens[i],
              rx.csumStart[i],
              rx.csumOffset[i],
            );
          }
          pcapFrame(rx.slots[i], rx.lens[i], ts, TAP_HEADROOM);
        }
      }
      for (let i = 0; i < n; i++) {
        this.input.frame(rx.slots[i], TAP_HEADROOM, rx.lens[i], rx.csumOffset[i] !== 0);
      }
      if (n < rx.capacity) return;
    }
  }

  /**
   * Watches the backend's fd for guest frames (the tap in namespace mode;
   * each new guest connection in VM mode). Call after {@linkcode start}.
   */
  watchBackend(): void {
    sys.sysCheck(this.loop.add(this.#backend.fd, sys.EPOLLIN, this.#tapType, 0), "epoll_ctl tap");
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
        dropped: drops.join(", ") || "none",
      }),
      line("send", this.tap.stats),
      line("flows", this.flows.stats()),
      line("ping", this.ping.stats),
      line("tcp", this.tcp.stats),
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
