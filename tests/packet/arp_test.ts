import { deepEqual, equal } from "node:assert/strict";
import { ARP_LEN, arpEmit, ArpOp, ArpPacket, arpParse, arpReprNew } from "../../lib/packet/arp.ts";
import { isWireError, WireError } from "../../lib/packet/wire.ts";
import {
  ARP_REQUEST,
  ARP_REQUEST_UNPADDED_LEN,
  GATEWAY_IP4,
  GUEST_IP4,
  GUEST_MAC,
  parseFrame,
  prng,
  randomBytes,
} from "./golden.ts";

function mustWrap(buf: Uint8Array, off = 0): ArpPacket {
  const p = ArpPacket.checked(buf, off);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

Deno.test("arp: deconstructs a request and leaves the padding out", () => {
  const p = mustWrap(ARP_REQUEST, 14);
  equal(p.len, ARP_LEN); // 46 bytes were available
  equal(p.op, ArpOp.Request);
  deepEqual(ARP_REQUEST.subarray(p.shaOffset, p.shaOffset + 6), GUEST_MAC);
  equal(p.spa, GUEST_IP4);
  deepEqual(ARP_REQUEST.subarray(p.thaOffset, p.thaOffset + 6), new Uint8Array(6));
  equal(p.tpa, GATEWAY_IP4);
  const r = arpParse(p);
  if (isWireError(r)) throw new Error("parse failed");
  deepEqual(r, { op: 1, sha: GUEST_MAC, spa: GUEST_IP4, tha: new Uint8Array(6), tpa: GATEWAY_IP4 });
});

Deno.test("arp: constructs the golden request over stale bytes", () => {
  const buf = new Uint8Array(40).fill(0xee);
  const r = arpReprNew();
  r.op = ArpOp.Request;
  r.sha.set(GUEST_MAC);
  r.spa = GUEST_IP4;
  r.tpa = GATEWAY_IP4;
  equal(arpEmit(buf, 0, r), ARP_LEN);
  deepEqual(buf.subarray(0, ARP_LEN), ARP_REQUEST.subarray(14, 14 + ARP_LEN));
  equal(buf[ARP_LEN], 0xee);
});

Deno.test("arp: other hardware or protocol types are unsupported", () => {
  // [frame byte, value]: htype 6 (IEEE 802), ptype 0x8600, hlen 8, plen 16
  const cases: [number, number][] = [[15, 6], [16, 0x86], [18, 8], [19, 16]];
  for (const [at, value] of cases) {
    const buf = ARP_REQUEST.slice();
    buf[at] = value;
    equal(ArpPacket.checked(buf, 14), WireError.Unsupported, `byte ${at}`);
  }
});

Deno.test("arp: operations other than request and reply are refused by parse", () => {
  const buf = ARP_REQUEST.slice();
  buf[21] = 3; // RARP request
  equal(arpParse(mustWrap(buf, 14)), WireError.Unsupported);
});

Deno.test("arp: every truncation is refused, alone and inside a frame", () => {
  for (let len = 0; len < ARP_LEN; len++) {
    equal(ArpPacket.checked(ARP_REQUEST.subarray(14, 14 + len)), WireError.Truncated);
  }
  for (let len = 0; len < ARP_REQUEST_UNPADDED_LEN; len++) {
    equal(parseFrame(ARP_REQUEST.subarray(0, len)), WireError.Truncated, `frame len ${len}`);
  }
  equal(parseFrame(ARP_REQUEST.subarray(0, ARP_REQUEST_UNPADDED_LEN)), 0);
});

Deno.test("arp: build → parse round trip", () => {
  const rand = prng(826);
  const p = new ArpPacket();
  const back = arpReprNew();
  for (let i = 0; i < 200; i++) {
    const r = {
      op: i % 2 ? ArpOp.Reply : ArpOp.Request,
      sha: randomBytes(rand, 6),
      spa: (rand() * 2 ** 32) >>> 0,
      tha: randomBytes(rand, 6),
      tpa: (rand() * 2 ** 32) >>> 0,
    };
    const buf = randomBytes(rand, 64);
    arpEmit(buf, 8, r);
    equal(p.wrap(buf, 8, 56), 0);
    deepEqual(arpParse(p, back), r);
  }
});

Deno.test("arp: setters turn a request into a reply in place", () => {
  const buf = ARP_REQUEST.slice();
  const p = mustWrap(buf, 14);
  p.op = ArpOp.Reply;
  p.spa = GATEWAY_IP4;
  p.tpa = GUEST_IP4;
  const r = arpParse(p);
  if (isWireError(r)) throw new Error("parse failed");
  equal(r.op, ArpOp.Reply);
  equal(r.spa, GATEWAY_IP4);
  equal(r.tpa, GUEST_IP4);
  deepEqual(r.sha, GUEST_MAC); // untouched: the caller sets it with the MAC it answers for
});
