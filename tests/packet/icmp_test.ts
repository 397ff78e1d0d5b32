import { deepEqual, equal, ok } from "node:assert/strict";
import {
  ICMP_HEADER_LEN,
  icmpEmit,
  IcmpPacket,
  icmpParse,
  icmpReprNew,
  icmpRestEcho,
  icmpRestMtu,
  icmpRestPointer,
  IcmpType,
  IcmpUnreachCode,
} from "../../lib/packet/icmp.ts";
import { isWireError, WireError } from "../../lib/packet/wire.ts";
import { ICMP_ECHO_4, prng, randomBytes } from "./golden.ts";

const ICMP_OFF = 34;

function mustWrap(buf: Uint8Array, off = ICMP_OFF, len = buf.length - off): IcmpPacket {
  const p = IcmpPacket.checked(buf, off, len);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

Deno.test("icmp: deconstructs an echo request", () => {
  const p = mustWrap(ICMP_ECHO_4);
  equal(p.type, IcmpType.EchoRequest);
  equal(p.code, 0);
  equal(p.checksum, 0x5435);
  ok(p.checksumOk());
  equal(p.ident, 0x1234);
  equal(p.seq, 1);
  equal(p.rest, 0x12340001);
  equal(p.payloadOffset, ICMP_OFF + 8);
  equal(p.payloadLen, 8);
  deepEqual(p.payload(), new TextEncoder().encode("abcdefgh"));
  const r = icmpParse(p);
  deepEqual(r, { type: 8, code: 0, rest: 0x12340001, payloadLen: 8 });
});

Deno.test("icmp: constructs the golden echo request around its data", () => {
  const buf = new Uint8Array(20).fill(0x33);
  buf.set(new TextEncoder().encode("abcdefgh"), 8);
  const r = icmpReprNew();
  r.type = IcmpType.EchoRequest;
  r.rest = icmpRestEcho(0x1234, 1);
  r.payloadLen = 8;
  equal(icmpEmit(buf, 0, r), ICMP_HEADER_LEN);
  deepEqual(buf.subarray(0, 16), ICMP_ECHO_4.subarray(ICMP_OFF));
  equal(buf[16], 0x33);
});

Deno.test("icmp: rest-of-header words for errors read back through the view", () => {
  const buf = new Uint8Array(36);
  const r = icmpReprNew();
  r.type = IcmpType.DestUnreachable;
  r.code = IcmpUnreachCode.FragNeeded;
  r.rest = icmpRestMtu(1400);
  r.payloadLen = 28;
  icmpEmit(buf, 0, r);
  const p = mustWrap(buf, 0);
  equal(p.mtu, 1400);
  equal(p.ident, 0); // the unused half
  ok(p.checksumOk());

  r.type = IcmpType.ParamProblem;
  r.code = 0;
  r.rest = icmpRestPointer(9);
  icmpEmit(buf, 0, r);
  equal(mustWrap(buf, 0).pointer, 9);
  equal(mustWrap(buf, 0).rest, 0x09000000);
});

Deno.test("icmp: parse refuses a bad checksum", () => {
  const buf = ICMP_ECHO_4.slice();
  buf[buf.length - 1] ^= 0x20;
  equal(icmpParse(mustWrap(buf)), WireError.BadChecksum);
});

Deno.test("icmp: messages shorter than 8 bytes are refused", () => {
  for (let len = 0; len < ICMP_HEADER_LEN; len++) {
    equal(IcmpPacket.checked(ICMP_ECHO_4, ICMP_OFF, len), WireError.Truncated);
  }
  equal(IcmpPacket.checked(ICMP_ECHO_4, ICMP_OFF, 17), WireError.Truncated); // past the buffer
});

Deno.test("icmp: an echo request becomes a valid reply in place", () => {
  const buf = ICMP_ECHO_4.slice();
  const p = mustWrap(buf);
  p.type = IcmpType.EchoReply;
  ok(!p.checksumOk());
  p.fillChecksum();
  ok(p.checksumOk());
  equal(p.ident, 0x1234);
});

Deno.test("icmp: build → parse round trip", () => {
  const rand = prng(792);
  const p = new IcmpPacket();
  const back = icmpReprNew();
  for (let i = 0; i < 500; i++) {
    const r = {
      type: (rand() * 256) | 0,
      code: (rand() * 256) | 0,
      rest: (rand() * 2 ** 32) >>> 0,
      payloadLen: (rand() * 64) | 0,
    };
    const buf = randomBytes(rand, 8 + r.payloadLen);
    icmpEmit(buf, 0, r);
    equal(p.wrap(buf, 0, buf.length), 0);
    deepEqual(icmpParse(p, back), r);
  }
});
