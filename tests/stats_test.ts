/**
 * The counters registry: snapshots and diffs, the naming scheme, and that
 * every module's stats object is registered.
 *
 * @module
 */

import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { counterNameProblem, countersDiff, countersMoved, StatsRegistry } from "../lib/stats.ts";
import { statsSummary, Tapir } from "../lib/tapir.ts";
import { StreamBackend } from "../lib/tap/stream.ts";
import { VhostNetDevice, vhostServe } from "../lib/vhost/device.ts";
import { NET } from "./services/harness.ts";

Deno.test("registry: a snapshot flattens each group's numbers, nested reasons and labelled arrays", () => {
  const r = new StatsRegistry();
  const tcp = { bytesToHost: 10, bytesToGuest: 20, name: "not a counter" };
  const svc = { received: 1, drop: { malformed: 2, hopLimit: 3 } };
  const input = { framesToHost: 5, drop: new Uint32Array([0, 7, 8]) };
  r.add("tcp", tcp);
  r.add("ndp", svc);
  r.add("input", input, { drop: [undefined, "truncated", "badChecksum"] });
  deepEqual(r.snapshot(), {
    tcp: { bytesToHost: 10, bytesToGuest: 20 },
    ndp: { received: 1, dropMalformed: 2, dropHopLimit: 3 },
    input: { framesToHost: 5, dropTruncated: 7, dropBadChecksum: 8 },
  });
  deepEqual(r.groups(), ["tcp", "ndp", "input"]);
  ok(r.names().includes("input.dropBadChecksum"));
});

Deno.test("registry: snapshots are copies, and a diff is what moved in between", () => {
  const r = new StatsRegistry();
  const tcp = { bytesToHost: 10, resets: 1 };
  r.add("tcp", tcp);
  const before = r.snapshot();
  tcp.bytesToHost += 1500;
  const after = r.snapshot();
  equal(before.tcp.bytesToHost, 10, "the earlier snapshot did not move");
  deepEqual(countersDiff(before, after), { tcp: { bytesToHost: 1500, resets: 0 } });
  deepEqual(countersMoved(countersDiff(before, after)), { tcp: { bytesToHost: 1500 } });
  // A group that appeared in between counts from zero.
  r.add("udp", { datagramsToHost: 3 });
  deepEqual(countersDiff(after, r.snapshot()).udp, { datagramsToHost: 3 });
});

Deno.test("registry: a getter source may be absent, and is read anew each snapshot", () => {
  const r = new StatsRegistry();
  let ring: { chains: number } | null = null;
  r.add("vhost-rx-ring", () => ring);
  deepEqual(r.snapshot(), {});
  ring = { chains: 4 };
  deepEqual(r.snapshot(), { "vhost-rx-ring": { chains: 4 } });
  r.remove("vhost-rx-ring");
  deepEqual(r.groups(), []);
});

Deno.test("registry: a group registered twice, a bad group name, and a counter twice are refused", () => {
  const r = new StatsRegistry();
  r.add("tcp", { a: 1 });
  throws(() => r.add("tcp", { b: 1 }), /registered twice/);
  throws(() => r.add("TCP", { b: 1 }), /not a lower-case name/);
  r.add("svc", { dropX: 1, drop: { x: 2 } });
  throws(() => r.snapshot(), /svc\.dropX appears twice/);
  const s = new StatsRegistry();
  s.add("input", { drop: new Uint32Array(2) });
  throws(() => s.snapshot(), /has no labels/);
});

Deno.test("naming scheme: directions are ToHost/ToGuest, and drops are counted by cause", () => {
  for (
    const good of ["bytesToHost", "datagramsToGuest", "dropTooBig", "turns", "gsoFramesToHost"]
  ) {
    equal(counterNameProblem(good), null, good);
  }
  for (const bad of ["framesIn", "bytesOut", "bytesToTap", "toNs", "dropped", "Bytes", "a_b"]) {
    ok(counterNameProblem(bad) !== null, bad);
  }
});

/**
 * Every object with a `stats` property reachable through the public fields
 * of `root` (the modules a Tapir is built from, and theirs).
 */
function reachableStats(root: object): Map<object, string> {
  const found = new Map<object, string>();
  const seen = new Set<object>();
  const walk = (o: object, path: string, depth: number) => {
    if (seen.has(o) || depth > 4 || ArrayBuffer.isView(o) || o instanceof Map) return;
    seen.add(o);
    const stats = (o as { stats?: unknown }).stats;
    if (typeof stats === "object" && stats !== null && !(stats instanceof StatsRegistry)) {
      found.set(stats, `${path}.stats`);
    }
    for (const [k, v] of Object.entries(o)) {
      if (typeof v === "object" && v !== null && k !== "stats") walk(v, `${path}.${k}`, depth + 1);
    }
  };
  walk(root, "tapir", 0);
  return found;
}

function assertAllRegistered(t: Tapir, extra: object[] = []): void {
  const registered = t.stats.sources();
  const reachable = reachableStats(t);
  ok(reachable.size >= 14, `the walk finds the modules' stats (${reachable.size})`);
  for (const [stats, path] of reachable) {
    ok(registered.has(stats), `${path} is not in the counters registry`);
  }
  for (const o of extra) ok(registered.has(o), "a part's stats are not in the counters registry");
  const names = t.stats.names();
  equal(new Set(names).size, names.length, "no counter is listed twice");
  for (const n of names) {
    const problem = counterNameProblem(n.slice(n.indexOf(".") + 1));
    equal(problem, null, `${n}: ${problem}`);
  }
}

Deno.test("every counter of a translator is registered, once, under a name that follows the scheme", () => {
  const t = new Tapir(NET, new StreamBackend());
  try {
    assertAllRegistered(t);
    // And the walk does catch one left out.
    const t2 = new Tapir(NET, new StreamBackend());
    t2.stats.remove("udp");
    throws(() => assertAllRegistered(t2), /tapir\.udp\.stats is not in the counters registry/);
    t2.loop.close();
    for (
      const g of ["loop", "input", "tap", "flow", "tcp", "rsc", "udp", "ping", "tcp-splice", "dhcp"]
    ) {
      ok(t.stats.groups().includes(g), `group ${g}`);
    }
  } finally {
    t.loop.close();
  }
});

Deno.test("vhost-user's parts are registered too when it serves a translator", () => {
  const dev = new VhostNetDevice();
  const t = new Tapir(NET, dev);
  try {
    vhostServe(dev, t);
    t.stats.add("vhost-user", dev.stats);
    t.stats.add("vhost-rx", dev.rx.stats);
    assertAllRegistered(t, [dev.stats, dev.rx.stats]);
  } finally {
    t.loop.close();
  }
});

Deno.test("the stats report is plain JSON with traffic both ways, flows and every group", () => {
  const t = new Tapir(NET, new StreamBackend());
  try {
    const report = JSON.parse(JSON.stringify(t.statsReport()));
    deepEqual(Object.keys(report).sort(), ["counters", "flows", "runtime", "traffic", "uptime"]);
    // The runtime's memory at once; V8's own figures once `node:v8` has loaded.
    for (const k of ["rssBytes", "heapUsedBytes", "heapTotalBytes"]) {
      ok(report.runtime[k] > 0, k);
    }
    ok(report.runtime.heapAllocatedBytes === null || report.runtime.heapAllocatedBytes > 0);
    equal(typeof report.uptime, "number");
    deepEqual(report.traffic, {
      toHost: { bytes: 0, frames: 0 },
      toGuest: { bytes: 0, frames: 0 },
    });
    equal(report.flows.live, 0);
    // Every group but the capture's, which is there only while one runs.
    deepEqual(Object.keys(report.counters), t.stats.groups().filter((g) => g !== "pcap"));
    for (const counters of Object.values(report.counters) as Record<string, unknown>[]) {
      for (const v of Object.values(counters)) equal(typeof v, "number");
    }
  } finally {
    t.loop.close();
  }
});

Deno.test("--stats line: rates each way over the period, flows by type, drops that moved", () => {
  const line = statsSummary(
    {
      input: { bytesToHost: 250_000_000, framesToHost: 20_000, dropBadChecksum: 2 },
      tap: { bytesToGuest: 1000, framesToGuest: 10 },
      udp: { dropTooBig: 0 },
    },
    2,
    { live: 3, byType: { TCP: 2, UDP: 1, PING4: 0 } },
  );
  equal(
    line,
    "stats: to host 1.00 Gbit/s 10.00 kframes/s, to guest 4.00 kbit/s 5 frames/s; " +
      "flows 3 (TCP 2, UDP 1); drops input.dropBadChecksum 2",
  );
});
