import { deepStrictEqual, equal, ok, throws } from "node:assert/strict";
import { parseIp } from "../lib/addr.ts";
import {
  type AddrMapRules,
  LOOPBACK4,
  natFromTap4,
  natFromTap6,
  parsePortFwd,
  PORT_FWD_NONE,
  type PortFwd,
  portFwdAdd,
  portFwdRules,
  portFwdTarget,
} from "../lib/fwd.ts";

/** Parses specs that must be valid. */
function fwd(...specs: string[]): PortFwd {
  const result = parsePortFwd(specs);
  if (typeof result === "string") throw new Error(`${specs.join(" ")}: ${result}`);
  return result;
}

/** Parses specs that must be refused; returns the message. */
function refused(...specs: string[]): string {
  const result = parsePortFwd(specs);
  if (typeof result !== "string") throw new Error(`${specs.join(" ")} was accepted`);
  return result;
}

/** The rules to bind, as plain tuples: [addr text or null, ifname, first, last, target]. */
function bindList(f: PortFwd): [number[] | null, string | null, number, number, number][] {
  return portFwdRules(f).map((
    r,
  ) => [r.addr === null ? null : [...r.addr], r.ifname, r.first, r.last, r.target]);
}

Deno.test("no option at all, or 'none', forwards nothing", () => {
  equal(parsePortFwd([]), PORT_FWD_NONE);
  const none = fwd("none");
  equal(none.mode, "none");
  for (const port of [1, 22, 80, 65535]) equal(portFwdTarget(none, port), -1);
  deepStrictEqual(portFwdRules(none), []);
});

Deno.test("'all' forwards every port to itself", () => {
  const all = fwd("all");
  equal(all.mode, "all");
  for (const port of [1, 22, 8080, 65535]) equal(portFwdTarget(all, port), port);
  equal(portFwdTarget(all, 0), -1);
  equal(portFwdTarget(all, 65536), -1);
  deepStrictEqual(bindList(all), [[null, null, 1, 65535, 1]]);
});

Deno.test("'auto' is a mode flag: nothing is known until run time", () => {
  const auto = fwd("auto");
  equal(auto.mode, "auto");
  equal(portFwdTarget(auto, 80), -1);
  deepStrictEqual(portFwdRules(auto), []);
});

Deno.test("single ports and ranges forward to themselves", () => {
  const f = fwd("22,80,1000-1002");
  equal(f.mode, "ports");
  equal(portFwdTarget(f, 22), 22);
  equal(portFwdTarget(f, 80), 80);
  equal(portFwdTarget(f, 1000), 1000);
  equal(portFwdTarget(f, 1002), 1002);
  equal(portFwdTarget(f, 1003), -1);
  equal(portFwdTarget(f, 23), -1);
  deepStrictEqual(bindList(f), [
    [null, null, 22, 22, 22],
    [null, null, 80, 80, 80],
    [null, null, 1000, 1002, 1000],
  ]);
});

Deno.test("a target maps a port or shifts a range", () => {
  const f = fwd("8080:80,1000-1010:2000-2010");
  equal(portFwdTarget(f, 8080), 80);
  equal(portFwdTarget(f, 80), -1);
  equal(portFwdTarget(f, 1000), 2000);
  equal(portFwdTarget(f, 1005), 2005);
  equal(portFwdTarget(f, 1010), 2010);
  equal(portFwdTarget(f, 2000), -1);
});

Deno.test("bind addresses of both families and interfaces are kept as bytes and names", () => {
  const f = fwd("127.0.0.1/8080,::1/8080,%eth0/22,192.0.2.1%eth1/443:8443");
  deepStrictEqual(bindList(f), [
    [[127, 0, 0, 1], null, 8080, 8080, 8080],
    [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], null, 8080, 8080, 8080],
    [null, "eth0", 22, 22, 22],
    [[192, 0, 2, 1], "eth1", 443, 443, 8443],
  ]);
});

Deno.test("portFwdTarget with an address skips rules bound elsewhere", () => {
  const f = fwd("127.0.0.1/80:8080,192.0.2.1/80:9090");
  equal(portFwdTarget(f, 80, new Uint8Array([127, 0, 0, 1])), 8080);
  equal(portFwdTarget(f, 80, new Uint8Array([192, 0, 2, 1])), 9090);
  equal(portFwdTarget(f, 80, new Uint8Array([192, 0, 2, 2])), -1);
  const wildcard = fwd("80:8080");
  equal(portFwdTarget(wildcard, 80, new Uint8Array([192, 0, 2, 2])), 8080);
});

Deno.test("exclusions alone mean every other port", () => {
  const f = fwd("~25,~137-139");
  equal(f.mode, "all");
  equal(portFwdTarget(f, 25), -1);
  equal(portFwdTarget(f, 138), -1);
  equal(portFwdTarget(f, 24), 24);
  equal(portFwdTarget(f, 140), 140);
  deepStrictEqual(bindList(f), [
    [null, null, 1, 24, 1],
    [null, null, 26, 136, 26],
    [null, null, 140, 65535, 140],
  ]);
});

Deno.test("exclusions cut holes in ranges, keeping the mapping in step", () => {
  const f = fwd("1000-1010:2000-2010,~1003-1004,~1010");
  equal(portFwdTarget(f, 1002), 2002);
  equal(portFwdTarget(f, 1003), -1);
  equal(portFwdTarget(f, 1004), -1);
  equal(portFwdTarget(f, 1005), 2005);
  equal(portFwdTarget(f, 1010), -1);
  deepStrictEqual(bindList(f), [
    [null, null, 1000, 1002, 2000],
    [null, null, 1005, 1009, 2005],
  ]);
  // The rules as written stay whole.
  deepStrictEqual(f.rules.map((r) => [r.first, r.last]), [[1000, 1010]]);
});

Deno.test("repeated options add up, exclusions apply to all of them", () => {
  const f = fwd("80", "443,1000-2000", "~1500");
  equal(f.mode, "ports");
  equal(portFwdTarget(f, 80), 80);
  equal(portFwdTarget(f, 443), 443);
  equal(portFwdTarget(f, 1499), 1499);
  equal(portFwdTarget(f, 1500), -1);
  const excludedFirst = fwd("~1500", "1000-2000");
  equal(excludedFirst.mode, "ports");
  equal(portFwdTarget(excludedFirst, 1500), -1);
  equal(portFwdTarget(excludedFirst, 999), -1);
});

Deno.test("portFwdAdd folds one occurrence at a time", () => {
  const first = portFwdAdd(null, "80");
  ok(typeof first !== "string");
  const second = portFwdAdd(first, "81");
  ok(typeof second !== "string");
  equal(portFwdTarget(second, 80), 80);
  equal(portFwdTarget(second, 81), 81);
  equal(portFwdTarget(first, 81), -1, "the earlier value is unchanged");
});

Deno.test("the same port on different addresses or interfaces is not a clash", () => {
  fwd("127.0.0.1/80,::1/80");
  fwd("192.0.2.1/80,192.0.2.2/80");
  fwd("%eth0/80,%eth1/80");
  fwd("127.0.0.1/80", "::1/80");
});

Deno.test("values are frozen", () => {
  const f = fwd("127.0.0.1/80,~90");
  ok(Object.isFrozen(f));
  ok(Object.isFrozen(f.rules));
  ok(Object.isFrozen(f.rules[0]));
  ok(Object.isFrozen(f.excluded));
  ok(Object.isFrozen(portFwdRules(f)));
  throws(() => (f.rules as unknown as unknown[]).push(f.rules[0]));
});

Deno.test("port numbers out of range are refused", () => {
  equal(refused("0"), "port 0 is out of range 1-65535");
  equal(refused("65536"), "port 65536 is out of range 1-65535");
  equal(refused("80:70000"), "port 70000 is out of range 1-65535");
  equal(refused("0-10"), "port 0 is out of range 1-65535");
  equal(refused("~0"), "port 0 is out of range 1-65535");
  equal(refused("1-99999999999999999999"), "port 99999999999999999999 is out of range 1-65535");
});

Deno.test("malformed items are refused with a message naming them", () => {
  equal(refused("2000-1000"), "port range 2000-1000 is reversed");
  equal(refused("80:90-91"), "target 90-91 is not the same size as 80");
  equal(refused("1000-1010:2000-2005"), "target 2000-2005 is not the same size as 1000-1010");
  equal(refused("1000-1010:2000"), "target 2000 is not the same size as 1000-1010");
  equal(refused(""), "empty item");
  equal(refused("80,,90"), "empty item in '80,,90'");
  equal(refused("80,"), "empty item in '80,'");
  equal(refused("80:"), "missing port number");
  equal(refused("http"), "'http' is not a port or port range");
  equal(refused("-80"), "'-80' is not a port or port range");
  equal(refused("80-"), "'80-' is not a port or port range");
  equal(refused("80:90:100"), "'90:100' is not a port or port range");
  equal(refused("1.2.3/80"), "bad address '1.2.3' in '1.2.3/80'");
  equal(refused("fe80::1%/80"), "interface name is empty in 'fe80::1%/80'");
  equal(
    refused("::1%eth0:1/80"),
    "interface name 'eth0:1' contains '/', ':' or whitespace in '::1%eth0:1/80'",
  );
  equal(refused("/80"), "missing address before '/' in '/80'");
  equal(
    refused("~127.0.0.1/80"),
    "exclusion '~127.0.0.1/80' takes only ports, no address or target",
  );
  equal(refused("~80:90"), "exclusion '~80:90' takes only ports, no address or target");
  equal(refused("127.0.0.1/80/90"), "'80/90' is not a port or port range");
});

Deno.test("a port forwarded twice is refused, within a spec and across repeats", () => {
  equal(refused("80,80"), "port 80 is forwarded twice");
  equal(refused("1000-2000,1500"), "port 1500 is forwarded twice");
  equal(refused("1000-2000", "1990-3000"), "port 1990 is forwarded twice");
  equal(refused("127.0.0.1/80,80"), "port 80 is forwarded twice");
  equal(refused("%eth0/80,80"), "port 80 is forwarded twice");
  equal(refused("127.0.0.1/80,127.0.0.1/80"), "port 80 is forwarded twice");
  equal(refused("127.0.0.1%eth0/80,127.0.0.1/80"), "port 80 is forwarded twice");
  // Different sources mapped to one target are fine.
  fwd("8080:80,8081:80");
});

Deno.test("keywords stand alone", () => {
  equal(refused("all,80"), "'all' cannot be combined with other items");
  equal(refused("80,none"), "'none' cannot be combined with other items");
  equal(
    refused("22,auto"),
    "'auto' cannot be combined with forwarded ports, only with ~exclusions",
  );
  equal(refused("all", "80"), "'all' cannot be combined with other port specs");
  equal(refused("80", "all"), "'all' cannot be combined with other port specs");
  equal(refused("~25", "all"), "'all' cannot be combined with other port specs");
  equal(refused("none", "none"), "'none' cannot be combined with other port specs");
  equal(
    refused("auto", "80"),
    "'auto' cannot be combined with forwarded ports, only with ~exclusions",
  );
});

Deno.test("'auto' takes exclusions, in one spec or repeated, in either order", () => {
  for (const specs of [["auto,~22"], ["~22,auto"], ["auto", "~22"], ["~22", "auto"]]) {
    const f = fwd(...specs);
    equal(f.mode, "auto", specs.join(" "));
    deepStrictEqual(f.excluded, [{ first: 22, last: 22 }], specs.join(" "));
  }
});

// ---------------------------------------------------------------------------
// Address mapping: --no-host-loopback, --map-guest-addr.

/** An IPv4 address as the u32 the rules use. */
function u32(text: string): number {
  const ip = parseIp(text);
  if (ip === null || ip.family !== 4) throw new Error(`not IPv4: ${text}`);
  const [a, b, c, d] = ip.bytes;
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

/** An IPv6 address as 16 bytes. */
function v6(text: string): Uint8Array {
  const ip = parseIp(text);
  if (ip === null || ip.family !== 6) throw new Error(`not IPv6: ${text}`);
  return ip.bytes;
}

/**
 * slirp4netns's network: the gateway (10.0.2.2, fd00::2) means host
 * loopback, DNS at .3/::3 goes to a resolver on the host's loopback.
 */
function rules(over: Partial<AddrMapRules> = {}): AddrMapRules {
  return {
    mapLo4: [u32("10.0.2.2")],
    mapLo6: [v6("fd00::2")],
    loopbackOnly: false,
    dnsForward4: u32("10.0.2.3"),
    dnsHost4: u32("127.0.0.53"),
    dnsForward6: v6("fd00::3"),
    dnsHost6: v6("::1"),
    ...over,
  };
}

/** natFromTap6 for an address given as text: the address it goes to, or null if refused. */
function nat6(r: AddrMapRules, dst: string, dport = 0): string | null {
  const buf = new Uint8Array(40);
  buf.set(v6(dst), 24); // where an IPv6 header keeps its destination
  const out = new Uint8Array(16);
  if (!natFromTap6(r, buf, 24, out, dport)) return null;
  return [...out].join(",");
}

const v6Text = (text: string) => [...v6(text)].join(",");

Deno.test("without --no-host-loopback the gateway and 127.0.0.0/8 reach host loopback", () => {
  const r = rules();
  equal(natFromTap4(r, u32("10.0.2.2"), 80), LOOPBACK4);
  equal(natFromTap4(r, u32("127.0.0.1"), 80), u32("127.0.0.1"));
  equal(nat6(r, "fd00::2", 80), v6Text("::1"));
  equal(nat6(r, "::1", 80), v6Text("::1"));
});

Deno.test("--no-host-loopback refuses the mapped gateway and 127.0.0.0/8", () => {
  const r = rules({ noHostLoopback: true });
  equal(natFromTap4(r, u32("10.0.2.2"), 80), -1);
  equal(natFromTap4(r, u32("10.0.2.2")), -1, "ICMP too");
  equal(natFromTap4(r, u32("127.0.0.1"), 22), -1);
  equal(natFromTap4(r, u32("127.255.255.254"), 22), -1);
  equal(natFromTap4(r, u32("10.0.2.3"), 80), u32("10.0.2.3"), "only port 53 is relayed");
  equal(natFromTap4(r, u32("192.0.2.1"), 80), u32("192.0.2.1"), "elsewhere is reachable");
  equal(natFromTap4(r, u32("128.0.0.1"), 80), u32("128.0.0.1"));
});

Deno.test("--no-host-loopback refuses ::1 and the mapped IPv6 gateway", () => {
  const r = rules({ noHostLoopback: true });
  equal(nat6(r, "::1", 22), null);
  equal(nat6(r, "fd00::2", 80), null);
  equal(nat6(r, "2001:db8::1", 80), v6Text("2001:db8::1"));
  equal(nat6(r, "::2", 80), v6Text("::2"), "only ::1 is loopback");
  // A dual-stack socket would carry ::ffff:127.0.0.1 to IPv4 loopback.
  equal(nat6(r, "::ffff:127.0.0.1", 22), null);
  equal(nat6(r, "::ffff:127.1.2.3", 22), null);
  equal(nat6(r, "::ffff:192.0.2.1", 80), v6Text("::ffff:192.0.2.1"));
});

Deno.test("--no-host-loopback still relays DNS to a resolver on host loopback", () => {
  const r = rules({ noHostLoopback: true });
  equal(natFromTap4(r, u32("10.0.2.3"), 53), u32("127.0.0.53"));
  equal(nat6(r, "fd00::3", 53), v6Text("::1"));
  const dnsOnGateway = rules({ noHostLoopback: true, dnsForward4: u32("10.0.2.2") });
  equal(natFromTap4(dnsOnGateway, u32("10.0.2.2"), 53), u32("127.0.0.53"));
  equal(natFromTap4(dnsOnGateway, u32("10.0.2.2"), 80), -1);
});

Deno.test("--map-guest-addr maps to the host's own address in each family", () => {
  const r = rules({
    mapGuest4: u32("10.0.2.254"),
    hostAddr4: u32("192.0.2.10"),
    mapGuest6: v6("fd00::fe"),
    hostAddr6: v6("2001:db8::10"),
  });
  equal(natFromTap4(r, u32("10.0.2.254"), 80), u32("192.0.2.10"));
  equal(natFromTap4(r, u32("10.0.2.253"), 80), u32("10.0.2.253"));
  equal(nat6(r, "fd00::fe", 80), v6Text("2001:db8::10"));
  equal(nat6(r, "fd00::fd", 80), v6Text("fd00::fd"));
  const noLoopback = { ...r, noHostLoopback: true };
  equal(natFromTap4(noLoopback, u32("10.0.2.254"), 80), u32("192.0.2.10"), "not loopback");
  equal(nat6(noLoopback, "fd00::fe", 80), v6Text("2001:db8::10"));
});

Deno.test("--map-guest-addr is refused while the host's own address is unknown", () => {
  const r = rules({
    mapGuest4: u32("10.0.2.254"),
    hostAddr4: 0,
    mapGuest6: v6("fd00::fe"),
    hostAddr6: null,
  });
  equal(natFromTap4(r, u32("10.0.2.254"), 80), -1);
  equal(nat6(r, "fd00::fe", 80), null);
  equal(natFromTap4(r, u32("192.0.2.1"), 80), u32("192.0.2.1"), "other addresses are unaffected");
});

Deno.test("--loopback-only still applies after --map-guest-addr and --no-host-loopback", () => {
  const r = rules({
    loopbackOnly: true,
    mapGuest4: u32("10.0.2.254"),
    hostAddr4: u32("192.0.2.10"),
    mapGuest6: v6("fd00::fe"),
    hostAddr6: v6("2001:db8::10"),
  });
  equal(natFromTap4(r, u32("10.0.2.254"), 80), -1, "the host's own address is not loopback");
  equal(nat6(r, "fd00::fe", 80), null);
  equal(natFromTap4(r, u32("10.0.2.2"), 80), LOOPBACK4, "the mapped gateway is");
  const both = { ...r, noHostLoopback: true };
  equal(natFromTap4(both, u32("10.0.2.2"), 80), -1);
  equal(natFromTap4(both, u32("192.0.2.1"), 80), -1);
  equal(nat6(both, "fd00::2", 80), null);
  equal(natFromTap4(both, u32("10.0.2.3"), 53), u32("127.0.0.53"), "only the relayed resolver");
  equal(nat6(both, "fd00::3", 53), v6Text("::1"));
});
