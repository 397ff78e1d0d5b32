import { deepStrictEqual, equal, ok } from "node:assert/strict";
import {
  formatIp,
  formatIp4,
  formatIp6,
  ifnameProblem,
  ip4MaskPrefix,
  ipEqual,
  ipKind,
  isIp4Broadcast,
  isIp4Loopback,
  isIp4Multicast,
  isIp4Unspecified,
  isIp6Loopback,
  isIp6Multicast,
  isIp6Unspecified,
  isIp6V4Mapped,
  parseIp,
  parseIp4,
  parseIp6,
} from "../lib/addr.ts";

/** 16 bytes from eight 16-bit groups, written out independently of the parser. */
function groups(...g: number[]): Uint8Array {
  const out = new Uint8Array(16);
  g.forEach((v, i) => {
    out[2 * i] = v >> 8;
    out[2 * i + 1] = v & 0xff;
  });
  return out;
}

Deno.test("parseIp4 reads dotted quads into network-order bytes", () => {
  deepStrictEqual(parseIp4("192.0.2.1"), new Uint8Array([192, 0, 2, 1]));
  deepStrictEqual(parseIp4("0.0.0.0"), new Uint8Array([0, 0, 0, 0]));
  deepStrictEqual(parseIp4("255.255.255.255"), new Uint8Array([255, 255, 255, 255]));
  deepStrictEqual(parseIp4("10.200.0.99"), new Uint8Array([10, 200, 0, 99]));
});

Deno.test("parseIp4 refuses everything but a strict dotted quad", () => {
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "1.2.3.256",
      "01.2.3.4",
      "1.2.3.04",
      "1.2.3.00",
      "1..3.4",
      "1.2.3.4.",
      ".1.2.3.4",
      " 1.2.3.4",
      "1.2.3.4 ",
      "1.2.3.-4",
      "1.2.3.+4",
      "0x1.2.3.4",
      "1.2.3.4/24",
      "1.2.3.1000",
      "16909060",
      "a.b.c.d",
      "::1",
    ]
  ) {
    equal(parseIp4(bad), null, `'${bad}' must be refused`);
  }
});

Deno.test("parseIp6 reads the full form", () => {
  deepStrictEqual(
    parseIp6("2001:0db8:0000:0000:0000:ff00:0042:8329"),
    groups(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329),
  );
  deepStrictEqual(parseIp6("1:2:3:4:5:6:7:8"), groups(1, 2, 3, 4, 5, 6, 7, 8));
  deepStrictEqual(
    parseIp6("FFFF:abcd:ABCD:0:0:0:0:1"),
    groups(0xffff, 0xabcd, 0xabcd, 0, 0, 0, 0, 1),
  );
});

Deno.test("parseIp6 expands '::' anywhere into one or more zero groups", () => {
  deepStrictEqual(parseIp6("::"), groups(0, 0, 0, 0, 0, 0, 0, 0));
  deepStrictEqual(parseIp6("::1"), groups(0, 0, 0, 0, 0, 0, 0, 1));
  deepStrictEqual(parseIp6("1::"), groups(1, 0, 0, 0, 0, 0, 0, 0));
  deepStrictEqual(
    parseIp6("2001:db8::ff00:42:8329"),
    groups(0x2001, 0xdb8, 0, 0, 0, 0xff00, 0x42, 0x8329),
  );
  deepStrictEqual(parseIp6("fe80::1:2"), groups(0xfe80, 0, 0, 0, 0, 0, 1, 2));
  // '::' standing for exactly one group.
  deepStrictEqual(parseIp6("1:2:3::5:6:7:8"), groups(1, 2, 3, 0, 5, 6, 7, 8));
  deepStrictEqual(parseIp6("::2:3:4:5:6:7:8"), groups(0, 2, 3, 4, 5, 6, 7, 8));
  deepStrictEqual(parseIp6("1:2:3:4:5:6:7::"), groups(1, 2, 3, 4, 5, 6, 7, 0));
});

Deno.test("parseIp6 reads an embedded IPv4 tail", () => {
  deepStrictEqual(parseIp6("::ffff:1.2.3.4"), groups(0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304));
  deepStrictEqual(parseIp6("::1.2.3.4"), groups(0, 0, 0, 0, 0, 0, 0x0102, 0x0304));
  deepStrictEqual(
    parseIp6("64:ff9b::192.0.2.33"),
    groups(0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221),
  );
  deepStrictEqual(parseIp6("1:2:3:4:5:6:10.0.0.1"), groups(1, 2, 3, 4, 5, 6, 0x0a00, 0x0001));
});

Deno.test("parseIp6 refuses malformed text and zone ids", () => {
  for (
    const bad of [
      "",
      ":",
      ":::",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7:8::",
      "::1:2:3:4:5:6:7:8",
      "1::2::3",
      ":1::2",
      "1::2:",
      ":1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7:8:",
      "12345::",
      "g::1",
      "fe80::1%eth0",
      "::1/128",
      "1.2.3.4",
      "1.2.3.4::",
      "::1.2.3.4:5",
      "::1.2.3",
      "::1.2.3.256",
      "::01.2.3.4",
      "1:2:3:4:5:6:7:1.2.3.4",
      "1:2:3:4:5:6:1.2.3.4:8",
      "[::1]",
      " ::1",
      "::-1",
      "::+1",
    ]
  ) {
    equal(parseIp6(bad), null, `'${bad}' must be refused`);
  }
});

Deno.test("parseIp tells the families apart", () => {
  const v4 = parseIp("198.51.100.7");
  deepStrictEqual(v4, { family: 4, bytes: new Uint8Array([198, 51, 100, 7]) });
  const v6 = parseIp("2001:db8::7");
  deepStrictEqual(v6, { family: 6, bytes: groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7) });
  equal(parseIp("example.com"), null);
  equal(parseIp("1.2.3.4:80"), null);
  equal(parseIp(""), null);
});

Deno.test("formatIp4 writes a dotted quad from any offset", () => {
  equal(formatIp4(new Uint8Array([192, 0, 2, 1])), "192.0.2.1");
  equal(formatIp4(new Uint8Array([9, 9, 10, 0, 0, 255, 9]), 2), "10.0.0.255");
});

Deno.test("formatIp6 follows RFC 5952", () => {
  const cases: [Uint8Array, string][] = [
    [groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), "2001:db8::1"],
    [groups(0, 0, 0, 0, 0, 0, 0, 0), "::"],
    [groups(0, 0, 0, 0, 0, 0, 0, 1), "::1"],
    [groups(1, 0, 0, 0, 0, 0, 0, 0), "1::"],
    // Leading zeros dropped, lowercase.
    [
      groups(0x2001, 0x0db8, 0x00aa, 0xbbcc, 0xdd, 0xe, 0xf, 0xABCD),
      "2001:db8:aa:bbcc:dd:e:f:abcd",
    ],
    // A single zero group is not shortened (section 4.2.2).
    [groups(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1), "2001:db8:0:1:1:1:1:1"],
    // The longest run is shortened (4.2.3)...
    [groups(0x2001, 0, 0, 1, 0, 0, 0, 1), "2001:0:0:1::1"],
    // ...and the first one when two runs are as long.
    [groups(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), "2001:db8::1:0:0:1"],
    [groups(1, 0, 0, 2, 3, 0, 0, 4), "1::2:3:0:0:4"],
    [groups(0, 0, 1, 2, 3, 4, 0, 0), "::1:2:3:4:0:0"],
    [groups(0xfe80, 0, 0, 0, 0x1234, 0x56ff, 0xfe78, 0x9abc), "fe80::1234:56ff:fe78:9abc"],
    // IPv4-mapped addresses keep their dotted tail (section 5).
    [groups(0, 0, 0, 0, 0, 0xffff, 0xc000, 0x0201), "::ffff:192.0.2.1"],
    // Other embeddings are plain hex.
    [groups(0x64, 0xff9b, 0, 0, 0, 0, 0xc000, 0x0221), "64:ff9b::c000:221"],
  ];
  for (const [bytes, text] of cases) equal(formatIp6(bytes), text);
});

Deno.test("formatIp6 reads at an offset", () => {
  const frame = new Uint8Array(24);
  frame.set(groups(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x42), 8);
  equal(formatIp6(frame, 8), "2001:db8::42");
});

Deno.test("format(parse(x)) is the canonical form", () => {
  const cases: [string, string][] = [
    ["2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["0:0:0:0:0:0:0:0", "::"],
    ["::ffff:0102:0304", "::ffff:1.2.3.4"],
    ["1:0:0:0:0:0:0:0", "1::"],
  ];
  for (const [input, canonical] of cases) equal(formatIp6(parseIp6(input)!), canonical);
  for (const text of ["192.0.2.1", "2001:db8::1", "::ffff:10.1.2.3", "fe80::1"]) {
    equal(formatIp(parseIp(text)!), text);
  }
});

Deno.test("predicates classify IPv4 addresses", () => {
  const b = (s: string) => parseIp4(s)!;
  ok(isIp4Unspecified(b("0.0.0.0")));
  ok(!isIp4Unspecified(b("0.0.0.1")));
  ok(isIp4Loopback(b("127.0.0.1")));
  ok(isIp4Loopback(b("127.255.0.9")));
  ok(!isIp4Loopback(b("128.0.0.1")));
  ok(isIp4Multicast(b("224.0.0.1")));
  ok(isIp4Multicast(b("239.255.255.255")));
  ok(!isIp4Multicast(b("240.0.0.1")));
  ok(!isIp4Multicast(b("223.255.255.255")));
  ok(isIp4Broadcast(b("255.255.255.255")));
  ok(!isIp4Broadcast(b("255.255.255.254")));
  const frame = new Uint8Array([0, 0, 127, 0, 0, 1]);
  ok(isIp4Loopback(frame, 2));
  ok(!isIp4Loopback(frame, 0));
});

Deno.test("predicates classify IPv6 addresses", () => {
  const b = (s: string) => parseIp6(s)!;
  ok(isIp6Unspecified(b("::")));
  ok(!isIp6Unspecified(b("::1")));
  ok(isIp6Loopback(b("::1")));
  ok(!isIp6Loopback(b("::2")));
  ok(!isIp6Loopback(b("1::1")));
  ok(isIp6Multicast(b("ff02::1")));
  ok(!isIp6Multicast(b("fe80::1")));
  ok(isIp6V4Mapped(b("::ffff:1.2.3.4")));
  ok(!isIp6V4Mapped(b("::fffe:1.2.3.4")));
  ok(!isIp6V4Mapped(b("1::ffff:1.2.3.4")));
});

Deno.test("ipKind names what is not unicast", () => {
  const kind = (s: string) => ipKind(parseIp(s)!);
  equal(kind("0.0.0.0"), "unspecified");
  equal(kind("127.0.0.1"), "loopback");
  equal(kind("224.0.0.251"), "multicast");
  equal(kind("255.255.255.255"), "broadcast");
  equal(kind("192.0.2.1"), "unicast");
  equal(kind("::"), "unspecified");
  equal(kind("::1"), "loopback");
  equal(kind("ff02::fb"), "multicast");
  equal(kind("2001:db8::1"), "unicast");
  equal(kind("fe80::1"), "unicast");
});

Deno.test("ipEqual compares length and bytes", () => {
  ok(ipEqual(parseIp4("1.2.3.4")!, new Uint8Array([1, 2, 3, 4])));
  ok(!ipEqual(parseIp4("1.2.3.4")!, parseIp4("1.2.3.5")!));
  ok(!ipEqual(parseIp4("0.0.0.0")!, parseIp6("::")!));
});

Deno.test("ip4MaskPrefix accepts contiguous masks only", () => {
  const prefix = (s: string) => ip4MaskPrefix(parseIp4(s)!);
  equal(prefix("0.0.0.0"), 0);
  equal(prefix("128.0.0.0"), 1);
  equal(prefix("255.0.0.0"), 8);
  equal(prefix("255.255.255.0"), 24);
  equal(prefix("255.255.255.252"), 30);
  equal(prefix("255.255.255.254"), 31);
  equal(prefix("255.255.255.255"), 32);
  equal(prefix("255.0.255.0"), -1);
  equal(prefix("0.255.255.255"), -1);
  equal(prefix("255.255.255.253"), -1);
  equal(prefix("127.0.0.0"), -1);
});

Deno.test("ifnameProblem follows the kernel's rules for interface names", () => {
  for (const good of ["eth0", "tap0", "a", "x".repeat(15), "wlp0s20f3", "br-lan", "é".repeat(7)]) {
    equal(ifnameProblem(good), null, good);
  }
  const bad = ["", "x".repeat(16), ".", "..", "a/b", "a b", "a\tb", "eth0:1", "é".repeat(8)];
  for (const name of bad) ok(ifnameProblem(name) !== null, `'${name}' must be refused`);
  ok(ifnameProblem("a/b")!.includes("a/b"), "the message names the offending name");
});
