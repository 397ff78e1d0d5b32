import { deepEqual, equal, throws } from "node:assert/strict";
import {
  DNS_LABEL_MAX_LEN,
  DNS_NAME_MAX_LEN,
  dnsNameEmit,
  dnsNameListDecode,
  dnsNameListEmit,
  dnsNameListWireLen,
  dnsNameWireLen,
} from "../../lib/packet/dnsname.ts";
import { WireError } from "../../lib/packet/wire.ts";
import { prng } from "./golden.ts";

/** Bytes of an ASCII string. */
function ascii(s: string): number[] {
  return Array.from(s, (c) => c.charCodeAt(0));
}

/** `example.com` in wire form, assembled from RFC 1035 §3.1. */
const EXAMPLE_COM = new Uint8Array([7, ...ascii("example"), 3, ...ascii("com"), 0]);

Deno.test("a name is written as length-prefixed labels ending in the zero root label", () => {
  const buf = new Uint8Array(20).fill(0xee);
  equal(dnsNameWireLen("example.com"), EXAMPLE_COM.length);
  equal(dnsNameEmit(buf, 3, "example.com"), EXAMPLE_COM.length);
  deepEqual(buf.subarray(3, 3 + EXAMPLE_COM.length), EXAMPLE_COM);
  equal(buf[2], 0xee, "nothing written before the offset");
  equal(buf[3 + EXAMPLE_COM.length], 0xee, "nothing written past the name");
});

Deno.test("a trailing dot names the same domain; empty and '.' are the root", () => {
  const a = new Uint8Array(13);
  dnsNameEmit(a, 0, "example.com.");
  deepEqual(a, EXAMPLE_COM);
  for (const root of ["", "."]) {
    const b = new Uint8Array([0xee]);
    equal(dnsNameWireLen(root), 1);
    equal(dnsNameEmit(b, 0, root), 1);
    deepEqual(b, new Uint8Array([0]));
  }
});

Deno.test("names DNS cannot carry, or that need escapes, are refused", () => {
  for (
    const bad of [
      "a..b", // empty label
      ".a", // empty first label
      "a.b..", // empty label before the trailing dot
      "..",
      "has space.example",
      "tab\t.example",
      "back\\slash.example",
      "caf\u00e9.example", // not in ASCII form
      "x".repeat(DNS_LABEL_MAX_LEN + 1) + ".example",
    ]
  ) {
    equal(dnsNameWireLen(bad), -1, JSON.stringify(bad));
    throws(() => dnsNameEmit(new Uint8Array(300), 0, bad), RangeError);
  }
  equal(dnsNameListWireLen(["ok.example", "a..b"]), -1);
});

Deno.test("a 63-byte label and a 255-byte name fit; one byte more does not", () => {
  const label63 = "a".repeat(DNS_LABEL_MAX_LEN);
  equal(dnsNameWireLen(label63), 1 + DNS_LABEL_MAX_LEN + 1);
  // Three 63-byte labels and one of 61: 3 × 64 + 62 + 1 = 255 bytes.
  const longest = [label63, label63, label63, "b".repeat(61)].join(".");
  equal(dnsNameWireLen(longest), DNS_NAME_MAX_LEN);
  equal(dnsNameWireLen(longest + "b"), -1);
  const buf = new Uint8Array(DNS_NAME_MAX_LEN);
  equal(dnsNameEmit(buf, 0, longest), DNS_NAME_MAX_LEN);
  deepEqual(dnsNameListDecode(buf, 0, buf.length), [longest]);
});

Deno.test("emit throws when the name does not fit the buffer", () => {
  throws(() => dnsNameEmit(new Uint8Array(12), 0, "example.com"), RangeError);
  throws(() => dnsNameEmit(new Uint8Array(13), 1, "example.com"), RangeError);
  throws(() => dnsNameListEmit(new Uint8Array(14), 0, ["example.com", "a"]), RangeError);
});

Deno.test("a list is its names back to back, and decoding gives them back", () => {
  const names = ["example.com", "corp.example.org", "", "x"];
  const len = dnsNameListWireLen(names);
  equal(len, 13 + 18 + 1 + 3);
  const buf = new Uint8Array(len + 4);
  equal(dnsNameListEmit(buf, 2, names), len);
  deepEqual(buf.subarray(2, 15), EXAMPLE_COM);
  deepEqual(dnsNameListDecode(buf, 2, len), names);
  deepEqual(dnsNameListDecode(buf, 2, 0), [], "an empty list");
});

// RFC 3397 §3 shows a list of eng.apple.com and marketing.apple.com whose
// second name ends in a pointer to "apple" at offset 4 of the list.
const COMPRESSED = new Uint8Array([
  3,
  ...ascii("eng"),
  5,
  ...ascii("apple"),
  3,
  ...ascii("com"),
  0,
  9,
  ...ascii("marketing"),
  0xc0,
  4,
]);

Deno.test("compression pointers are followed when allowed (DHCPv4) and refused otherwise", () => {
  deepEqual(dnsNameListDecode(COMPRESSED, 0, COMPRESSED.length, true), [
    "eng.apple.com",
    "marketing.apple.com",
  ]);
  equal(dnsNameListDecode(COMPRESSED, 0, COMPRESSED.length, false), WireError.BadOption);
  // Pointers count from the start of the list, not of the buffer.
  const shifted = new Uint8Array(COMPRESSED.length + 5);
  shifted.set(COMPRESSED, 5);
  deepEqual(dnsNameListDecode(shifted, 5, COMPRESSED.length, true), [
    "eng.apple.com",
    "marketing.apple.com",
  ]);
});

Deno.test("pointer loops, and pointers that do not point strictly backwards, are refused", () => {
  const cases = [
    [0xc0, 0x00], // points at itself
    [0xc0, 0x02, 0], // points forwards
    [1, 0x61, 0xc0, 0x00], // a → pointer back to a: an endless name
    [0xc0, 0x40], // points past the end
    [0xc0], // pointer cut in half
  ];
  for (const c of cases) {
    const b = new Uint8Array(c);
    equal(dnsNameListDecode(b, 0, b.length, true), WireError.BadOption, JSON.stringify(c));
  }
});

Deno.test("malformed lists are refused", () => {
  const cases: [string, number[]][] = [
    ["label past the end", [5, 0x61, 0x62]],
    ["no root label", [1, 0x61]],
    ["reserved label type 0x40", [0x41, 0x61, 0]],
    ["reserved label type 0x80", [0x81, 0x61, 0]],
    ["a dot inside a label", [3, 0x61, 0x2e, 0x62, 0]],
    ["a space inside a label", [3, 0x61, 0x20, 0x62, 0]],
    ["a zero byte inside a label", [2, 0x61, 0, 0]],
  ];
  for (const [what, bytes] of cases) {
    const b = new Uint8Array(bytes);
    equal(dnsNameListDecode(b, 0, b.length, true), WireError.BadOption, what);
  }
  // Five 63-byte labels: 321 bytes, over the 255-byte limit.
  const tooLong: number[] = [];
  for (let i = 0; i < 5; i++) tooLong.push(63, ...ascii("a".repeat(63)));
  tooLong.push(0);
  equal(dnsNameListDecode(new Uint8Array(tooLong), 0, tooLong.length), WireError.BadOption);
  equal(dnsNameListDecode(new Uint8Array(4), 2, 3), WireError.Truncated, "range past the buffer");
});

Deno.test("every cut inside a name is refused, cuts between names give the names before", () => {
  const names = ["example.com", "b.example", ""];
  const buf = new Uint8Array(dnsNameListWireLen(names));
  dnsNameListEmit(buf, 0, names);
  const boundaries = new Map([[0, 0], [13, 1], [24, 2], [25, 3]]);
  for (let cut = 0; cut <= buf.length; cut++) {
    const r = dnsNameListDecode(buf, 0, cut);
    const whole = boundaries.get(cut);
    if (whole === undefined) equal(r, WireError.BadOption, `cut at ${cut}`);
    else deepEqual(r, names.slice(0, whole), `cut at ${cut}`);
  }
});

Deno.test("random bytes never throw; what decodes without compression re-encodes identically", () => {
  const rand = prng(0x5eed);
  const buf = new Uint8Array(64);
  const out = new Uint8Array(64);
  let decoded = 0;
  for (let i = 0; i < 20_000; i++) {
    const len = Math.floor(rand() * buf.length);
    // Mostly small length bytes and letters, so some inputs are valid lists.
    for (let j = 0; j < len; j++) {
      const r = rand();
      buf[j] = r < 0.3
        ? Math.floor(rand() * 6)
        : r < 0.9
        ? 0x61 + Math.floor(rand() * 3)
        : Math.floor(rand() * 256);
    }
    const plain = dnsNameListDecode(buf, 0, len, false);
    dnsNameListDecode(buf, 0, len, true);
    if (typeof plain !== "number") {
      decoded++;
      equal(dnsNameListEmit(out, 0, plain), len);
      deepEqual(out.subarray(0, len), buf.subarray(0, len));
    }
  }
  equal(decoded > 100, true, `only ${decoded} random inputs were valid lists`);
});
