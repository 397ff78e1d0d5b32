import { deepEqual, equal, ok } from "node:assert/strict";
import { parseIp6 } from "../../lib/addr.ts";
import {
  checksumAdd,
  checksumFinish,
  checksumPseudo4,
  checksumPseudo6,
} from "../../lib/packet/checksum.ts";
import { Ip4Packet } from "../../lib/packet/ip4.ts";
import { UDP_HEADER_LEN, udpEmit, UdpPacket, udpParse, udpReprNew } from "../../lib/packet/udp.ts";
import { get16, IpProto, isWireError, set16, WireError } from "../../lib/packet/wire.ts";
import { GATEWAY_IP4, GUEST_IP4, prng, randomBytes, UDP_4, UDP_6 } from "./golden.ts";

const UDP4_OFF = 34;
const UDP6_OFF = 54;

function addr(s: string): Uint8Array {
  const a = parseIp6(s);
  if (a === null) throw new Error(`bad address ${s}`);
  return a;
}

function mustWrap(buf: Uint8Array, off: number, len = buf.length - off): UdpPacket {
  const p = UdpPacket.checked(buf, off, len);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

Deno.test("udp: deconstructs a datagram over IPv6", () => {
  const p = mustWrap(UDP_6, UDP6_OFF);
  equal(p.srcPort, 5353);
  equal(p.dstPort, 53);
  equal(p.length, 13);
  equal(p.checksum, 0x4b6f);
  ok(p.checksumOk6(UDP_6, 22, 38));
  equal(p.payloadOffset, UDP6_OFF + 8);
  deepEqual(p.payload(), new TextEncoder().encode("hello"));
  deepEqual(udpParse(p), { srcPort: 5353, dstPort: 53, payloadLen: 5 });
});

Deno.test("udp: deconstructs a padded datagram over IPv4", () => {
  const ip = Ip4Packet.checked(UDP_4, 14);
  if (isWireError(ip)) throw new Error("ip wrap failed");
  const p = mustWrap(UDP_4, ip.payloadOffset, ip.payloadLen);
  equal(p.len, 12);
  equal(p.payloadLen, 4);
  ok(p.checksumOk4(ip.src, ip.dst));
  ok(!p.checksumOk4(ip.dst, ip.dst));
});

Deno.test("udp: constructs both golden datagrams around their payloads", () => {
  const six = new Uint8Array(13);
  six.set(new TextEncoder().encode("hello"), 8);
  const r = udpReprNew();
  Object.assign(r, { srcPort: 5353, dstPort: 53, payloadLen: 5 });
  const pseudo6 = checksumPseudo6(addr("2001:db8::2"), 0, addr("2001:db8::1"), 0, IpProto.Udp, 13);
  equal(udpEmit(six, 0, r, pseudo6), UDP_HEADER_LEN);
  deepEqual(six, UDP_6.subarray(UDP6_OFF));

  const four = new Uint8Array(14).fill(0x42);
  four.set([0x12, 0x34, 0x01, 0x00], 8);
  Object.assign(r, { srcPort: 33333, dstPort: 53, payloadLen: 4 });
  udpEmit(four, 0, r, checksumPseudo4(GUEST_IP4, GATEWAY_IP4, IpProto.Udp, 12));
  deepEqual(four.subarray(0, 12), UDP_4.subarray(UDP4_OFF, UDP4_OFF + 12));
  equal(four[12], 0x42);
});

Deno.test("udp: a computed checksum of 0 is sent as 0xffff", () => {
  const buf = new Uint8Array(12);
  const r = udpReprNew();
  Object.assign(r, { srcPort: 1234, dstPort: 53, payloadLen: 4 });
  const pseudo = checksumPseudo4(GUEST_IP4, GATEWAY_IP4, IpProto.Udp, 12);
  // Choose the payload so the checksum comes out 0: make the sum all ones.
  udpEmit(buf, 0, r);
  set16(buf, 8, checksumFinish(checksumAdd(pseudo, buf, 0, 12)));
  equal(checksumFinish(checksumAdd(pseudo, buf, 0, 12)), 0);
  udpEmit(buf, 0, r, pseudo);
  equal(get16(buf, 6), 0xffff);
  ok(mustWrap(buf, 0).checksumOk4(GUEST_IP4, GATEWAY_IP4));
});

Deno.test("udp: without a pseudo-header sum the checksum is 0: none over IPv4, invalid over IPv6", () => {
  const buf = randomBytes(prng(1), 20);
  const r = udpReprNew();
  Object.assign(r, { srcPort: 1, dstPort: 2, payloadLen: 12 });
  udpEmit(buf, 0, r);
  const p = mustWrap(buf, 0);
  equal(p.checksum, 0);
  ok(p.checksumOk4(GUEST_IP4, GATEWAY_IP4));
  ok(!p.checksumOk6(UDP_6, 22, 38));
});

Deno.test("udp: length field errors are told apart, and a short length clips", () => {
  const small = UDP_6.slice(UDP6_OFF);
  set16(small, 4, 7);
  equal(UdpPacket.checked(small), WireError.BadLength);
  set16(small, 4, 14); // one more than there is
  equal(UdpPacket.checked(small), WireError.Truncated);
  set16(small, 4, 10);
  const p = mustWrap(small, 0);
  equal(p.len, 10);
  equal(p.payloadLen, 2);
  for (let len = 0; len < 13; len++) {
    equal(UdpPacket.checked(UDP_6, UDP6_OFF, len), WireError.Truncated, `len ${len}`);
  }
});

Deno.test("udp: parse refuses destination port 0", () => {
  const buf = UDP_6.slice(UDP6_OFF);
  const p = mustWrap(buf, 0);
  p.dstPort = 0;
  equal(udpParse(p), WireError.Malformed);
});

Deno.test("udp: setters and checksum refill for both families", () => {
  const buf = UDP_6.slice();
  const p = mustWrap(buf, UDP6_OFF);
  p.srcPort = 40000;
  p.dstPort = 4242;
  ok(!p.checksumOk6(buf, 22, 38));
  p.fillChecksum6(buf, 22, 38);
  ok(p.checksumOk6(buf, 22, 38));
  p.fillChecksum4(1, 2);
  ok(p.checksumOk4(1, 2));
  p.length = 8;
  equal(p.len, 13); // the view keeps its length until wrapped again
  equal(get16(buf, UDP6_OFF + 4), 8);
});

Deno.test("udp: build → parse round trip over IPv4 and IPv6", () => {
  const rand = prng(768);
  const p = new UdpPacket();
  const back = udpReprNew();
  const addrs = randomBytes(rand, 32);
  for (let i = 0; i < 500; i++) {
    const r = {
      srcPort: (rand() * 65536) | 0,
      dstPort: 1 + ((rand() * 65535) | 0),
      payloadLen: (rand() * 100) | 0,
    };
    const len = 8 + r.payloadLen;
    const buf = randomBytes(rand, len + 5); // extra IP-level bytes after the datagram
    const v6 = i % 2 === 1;
    const pseudo = v6
      ? checksumPseudo6(addrs, 0, addrs, 16, IpProto.Udp, len)
      : checksumPseudo4(GUEST_IP4, GATEWAY_IP4, IpProto.Udp, len);
    udpEmit(buf, 0, r, pseudo);
    equal(p.wrap(buf, 0, buf.length), 0);
    equal(p.len, len);
    ok(v6 ? p.checksumOk6(addrs, 0, 16) : p.checksumOk4(GUEST_IP4, GATEWAY_IP4));
    deepEqual(udpParse(p, back), r);
  }
});
