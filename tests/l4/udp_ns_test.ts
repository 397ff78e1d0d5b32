/**
 * `-u auto` and `-U auto` without a namespace: both sides are simulated. A
 * side's scan shows the servers a test puts there *and* the sockets tapir
 * opened there, as the kernel's table would, so a forwarder that did not
 * leave its own ports out would forward them back. (The real thing, across
 * namespaces, is in tests/e2e/udp_test.ts.)
 */
import { deepEqual, equal } from "node:assert/strict";
import { PORT_FWD_NONE, type PortFwd, portFwdAdd } from "../../lib/fwd.ts";
import type { PortScan } from "../../lib/l4/tcp_scan.ts";
import {
  type UdpHostListeners,
  UdpNsForward,
  type UdpNsSockets,
  type UdpNsSource,
} from "../../lib/l4/udp_ns.ts";
import { Loop } from "../../lib/loop.ts";
import * as sys from "../../lib/sys/mod.ts";

const ANY4 = [0, 0, 0, 0];
const LO4 = [127, 0, 0, 1];
const GUEST4 = [192, 0, 2, 2];

/** One simulated side: servers bound there, and what tapir bound there. */
class Side {
  /** Servers: port → bound address. */
  readonly servers = new Map<number, number[]>();
  /** tapir's sockets: port → bound address. */
  readonly ours = new Map<number, number[]>();
  /** Ports whose socket cannot be bound (taken by something the scan does not show). */
  readonly blocked = new Set<number>();
  /** Every open, every close, in order: "+PORT", "-PORT". */
  readonly events: string[] = [];

  scan(): PortScan {
    const v4 = [...this.servers, ...this.ours].map(([port, addr]) => ({ port, addr }));
    return { v4, v6: [] };
  }

  open(port: number, addr: number[]): boolean {
    this.events.push(`+${port}`);
    if (this.blocked.has(port)) return false;
    this.ours.set(port, addr);
    return true;
  }

  close(port: number): void {
    this.events.push(`-${port}`);
    this.ours.delete(port);
  }

  ports(): Set<number> {
    return new Set(this.ours.keys());
  }
}

/** The host side as {@linkcode Udp}'s listeners: wildcard sockets. */
class FakeHostListeners implements UdpHostListeners {
  constructor(readonly side: Side) {}
  listenAuto(port: number): number {
    return this.side.open(port, ANY4) ? 1 : 0;
  }
  closePort(port: number): void {
    this.side.close(port);
  }
  ports(): Set<number> {
    return this.side.ports();
  }
}

/** The namespace side as {@linkcode UdpSplice}'s sockets: bound to loopback. */
class FakeNsSockets implements UdpNsSockets {
  readonly families: number[] = [];
  constructor(readonly side: Side) {}
  bindAuto(fd: number, family: 4 | 6, port: number): boolean {
    sys.close(fd);
    this.families.push(family);
    return this.side.open(port, LO4);
  }
  closePort(port: number): void {
    this.side.close(port);
  }
  ports(): Set<number> {
    return this.side.ports();
  }
}

/** The worker: real UDP sockets of this process (closed by the fake binder), the namespace's scan. */
class FakeSource implements UdpNsSource {
  constructor(readonly ns: Side) {}
  async sockets(family: 4 | 6, count: number): Promise<number[]> {
    await new Promise((r) => setTimeout(r, 5));
    const domain = family === 4 ? sys.AF_INET : sys.AF_INET6;
    return Array.from({ length: count }, () => sys.socket(domain, sys.SOCK_DGRAM));
  }
  scanUdp(): Promise<PortScan> {
    return Promise.resolve(this.ns.scan());
  }
}

function fwd(spec: string): PortFwd {
  const f = portFwdAdd(null, spec);
  if (typeof f === "string") throw new Error(f);
  return f;
}

/** Runs a loop with a {@linkcode UdpNsForward} between two simulated sides while `body` runs. */
async function withForward(
  opts: { udp?: PortFwd; udpNs?: PortFwd; ipv6?: boolean },
  body: (host: Side, ns: Side, f: UdpNsForward, nsSockets: FakeNsSockets) => Promise<void>,
): Promise<void> {
  const host = new Side();
  const ns = new Side();
  const loop = new Loop();
  const nsSockets = new FakeNsSockets(ns);
  const f = new UdpNsForward(
    loop,
    new FakeHostListeners(host),
    nsSockets,
    new FakeSource(ns),
    {
      udp: opts.udp ?? PORT_FWD_NONE,
      udpNs: opts.udpNs ?? PORT_FWD_NONE,
      ipv4: true,
      ipv6: opts.ipv6 ?? false,
    },
    () => host.scan(),
  );
  f.start();
  const running = loop.run();
  try {
    await body(host, ns, f, nsSockets);
  } finally {
    f.close();
    loop.stop();
    await running;
    loop.close();
  }
}

/** Waits until `cond` holds (scans run once a second), or fails after `ms`. */
async function until(what: string, cond: () => boolean, ms = 3500): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting: ${what}`);
}

const sorted = (ports: Iterable<number>) => [...ports].sort((a, b) => a - b);

Deno.test("-u auto opens host listeners for the namespace's servers reachable through the tap, and closes them when they go", async () => {
  await withForward({ udp: fwd("auto,~9003") }, async (host, ns, f) => {
    ns.servers.set(9000, ANY4);
    ns.servers.set(9001, LO4); // -u delivers to the guest's address: never reached
    ns.servers.set(9002, GUEST4);
    ns.servers.set(9003, ANY4); // excluded
    await until("two ports forwarded", () => host.ours.size === 2);
    deepEqual(sorted(host.ours.keys()), [9000, 9002]);
    equal(f.stats.autoUdp, 2);

    ns.servers.delete(9000);
    await until("9000 closed", () => !host.ours.has(9000));
    deepEqual(sorted(host.ours.keys()), [9002]);
    equal(f.stats.autoUdp, 1);
  });
});

Deno.test("-U auto binds namespace sockets (each family) for host servers on loopback or the wildcard, and closes them when they go", async () => {
  await withForward({ udpNs: fwd("auto"), ipv6: true }, async (host, ns, f, nsSockets) => {
    host.servers.set(5000, LO4);
    host.servers.set(5001, GUEST4); // -U sends to the host's loopback: never reached
    host.servers.set(5002, ANY4);
    await until("two ports forwarded", () => f.stats.autoUdpNs === 2);
    deepEqual(sorted(ns.ours.keys()), [5000, 5002]);
    deepEqual(sorted(nsSockets.families), [4, 4, 6, 6], "one socket per family and port");

    host.servers.delete(5000);
    await until("5000 closed", () => !ns.ours.has(5000));
    deepEqual(sorted(ns.ours.keys()), [5002]);
    equal(f.stats.autoUdpNs, 1);
  });
});

Deno.test("-u auto and -U auto together forward each side's servers once and never each other's sockets", async () => {
  await withForward({ udp: fwd("auto"), udpNs: fwd("auto") }, async (host, ns, f) => {
    ns.servers.set(9100, ANY4);
    host.servers.set(5100, LO4);
    host.servers.set(5101, ANY4);
    await until("all three forwarded", () => f.stats.autoUdp === 1 && f.stats.autoUdpNs === 2);
    // A few more scans: each side now shows tapir's sockets for the other's servers.
    const scans = f.stats.scans;
    await until("three more scans", () => f.stats.scans >= scans + 3);
    deepEqual(host.events, ["+9100"], "the host side only ever got the namespace's server");
    deepEqual(ns.events, ["+5100", "+5101"], "the namespace only ever got the host's servers");
  });
});

Deno.test("a port that cannot be bound is not retried until it is gone from the scan", async () => {
  await withForward({ udp: fwd("auto") }, async (host, ns, f) => {
    host.blocked.add(9200);
    ns.servers.set(9200, ANY4);
    await until("tried once", () => host.events.length === 1);
    const scans = f.stats.scans;
    await until("two more scans", () => f.stats.scans >= scans + 2);
    deepEqual(host.events, ["+9200"], "not retried while still bound in the namespace");

    ns.servers.delete(9200);
    host.blocked.delete(9200);
    const gone = f.stats.scans;
    await until("a scan without it", () => f.stats.scans > gone);
    ns.servers.set(9200, ANY4);
    await until("forwarded once it came back", () => host.ours.has(9200));
    deepEqual(host.events, ["+9200", "+9200"]);
  });
});
