import { deepEqual, equal, ok } from "node:assert/strict";
import { ip4HeaderChecksumFill } from "../../lib/packet/checksum.ts";
import {
  IP4_DF,
  IP4_HEADER_LEN,
  IP4_MF,
  ip4Emit,
  Ip4Packet,
  ip4Parse,
  ip4ReprNew,
} from "../../lib/packet/ip4.ts";
import { IpProto, isWireError, set16, WireError } from "../../lib/packet/wire.ts";
import {
  GATEWAY_IP4,
  GUEST_IP4,
  hex,
  ICMP_ECHO_4,
  parseFrame,
  prng,
  randomBytes,
  TCP_SYN_4,
  UDP_4,
} from "./golden.ts";

function mustWrap(buf: Uint8Array, off = 14): Ip4Packet {
  const p = Ip4Packet.checked(buf, off);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

// The IPv4 header of the golden TCP SYN, with a byte changed and the header
// checksum made right again (so only the change under test is wrong).
function synWith(at: number, value: number): Uint8Array {
  const buf = TCP_SYN_4.slice();
  buf[14 + at] = value;
  ip4HeaderChecksumFill(buf, 14, 20);
  return buf;
}

Deno.test("ip4: deconstructs the header of a TCP SYN", () => {
  const p = mustWrap(TCP_SYN_4);
  equal(p.version, 4);
  equal(p.headerLen, 20);
  equal(p.tos, 0);
  equal(p.totalLen, 60);
  equal(p.len, 60);
  equal(p.ident, 0x1c46);
  ok(p.dontFragment);
  ok(!p.moreFragments);
  equal(p.fragOffset, 0);
  ok(!p.isFragment);
  equal(p.ttl, 64);
  equal(p.proto, IpProto.Tcp);
  equal(p.checksum, 0x9a72);
  ok(p.headerChecksumOk());
  equal(p.src, GUEST_IP4);
  equal(p.dst, GATEWAY_IP4);
  equal(p.srcOffset, 26);
  equal(p.dstOffset, 30);
  ok(!p.hasOptions);
  equal(p.payloadOffset, 34);
  equal(p.payloadLen, 40);
});

Deno.test("ip4: length is clipped to the total length, dropping Ethernet padding", () => {
  const p = mustWrap(UDP_4);
  equal(UDP_4.length - 14, 46);
  equal(p.len, 32);
  equal(p.payloadLen, 12);
  equal(p.payload().length, 12);
});

Deno.test("ip4: constructs the golden header over stale bytes", () => {
  const buf = new Uint8Array(24).fill(0x5a);
  const r = ip4ReprNew();
  Object.assign(r, {
    src: GUEST_IP4,
    dst: GATEWAY_IP4,
    proto: IpProto.Tcp,
    ttl: 64,
    ident: 0x1c46,
    dontFragment: true,
    payloadLen: 40,
  });
  equal(ip4Emit(buf, 2, r), IP4_HEADER_LEN);
  deepEqual(buf.subarray(2, 22), TCP_SYN_4.subarray(14, 34));
  equal(buf[22], 0x5a);
});

Deno.test("ip4: structural errors are told apart", () => {
  equal(Ip4Packet.checked(synWith(0, 0x65), 14), WireError.BadVersion);
  equal(Ip4Packet.checked(synWith(0, 0x44), 14), WireError.BadHeaderLen);
  // A 60-byte header in 40 available bytes; a 24-byte header with total length 20.
  equal(Ip4Packet.checked(synWith(0, 0x4f).subarray(14, 54)), WireError.Truncated);
  const total20 = synWith(0, 0x46);
  set16(total20, 16, 20);
  equal(Ip4Packet.checked(total20, 14), WireError.BadLength);
  const shortTotal = synWith(3, 19); // total length 19 < header 20
  equal(Ip4Packet.checked(shortTotal, 14), WireError.BadLength);
  const lying = synWith(3, 61); // one byte more than the frame has
  equal(Ip4Packet.checked(lying, 14), WireError.Truncated);
  const huge = TCP_SYN_4.slice();
  set16(huge, 16, 0xffff);
  equal(Ip4Packet.checked(huge, 14), WireError.Truncated);
});

Deno.test("ip4: parse refuses bad header checksums and fragments, not DF", () => {
  const bad = TCP_SYN_4.slice();
  bad[14 + 8] = 63; // TTL changed, checksum not
  const p = mustWrap(bad);
  ok(!p.headerChecksumOk());
  equal(ip4Parse(p), WireError.BadChecksum);

  const mf = synWith(6, (IP4_MF | IP4_DF) >>> 8);
  ok(mustWrap(mf).isFragment);
  equal(ip4Parse(mustWrap(mf)), WireError.Fragmented);

  const later = synWith(7, 0x01); // offset 8 bytes, DF set, MF clear: the last fragment
  equal(mustWrap(later).fragOffset, 8);
  equal(ip4Parse(mustWrap(later)), WireError.Fragmented);

  ok(!mustWrap(TCP_SYN_4).isFragment);
  ok(!isWireError(ip4Parse(mustWrap(TCP_SYN_4))));
});

Deno.test("ip4: options are found and skipped", () => {
  // IGMPv2 report with a router alert option (RFC 2113): IHL 6.
  const buf = hex(
    "46 00 00 20 0000 4000 01 02 0000 c0000202 e0000016",
    "94 04 00 00", // router alert
    "16 00 fa 04 e0 00 00 16", // IGMPv2 membership report
  );
  ip4HeaderChecksumFill(buf, 0, 24);
  const p = mustWrap(buf, 0);
  ok(p.hasOptions);
  equal(p.optionsOffset, 20);
  equal(p.optionsLen, 4);
  equal(p.payloadOffset, 24);
  equal(p.payloadLen, 8);
  ok(p.headerChecksumOk());
  const r = ip4Parse(p);
  if (isWireError(r)) throw new Error("parse failed");
  equal(r.payloadLen, 8);
  equal(r.proto, IpProto.Icmp + 1); // IGMP
});

Deno.test("ip4: every truncation of IPv4 frames is refused", () => {
  for (const frame of [TCP_SYN_4, ICMP_ECHO_4, UDP_4.subarray(0, 14 + 32)]) {
    equal(parseFrame(frame), 0);
    for (let len = 0; len < frame.length; len++) {
      ok(parseFrame(frame.subarray(0, len)) !== 0, `len ${len} of ${frame.length}`);
    }
  }
  for (let len = 0; len < 20; len++) {
    equal(Ip4Packet.checked(TCP_SYN_4.subarray(14, 14 + len)), WireError.Truncated);
  }
});

Deno.test("ip4: setters change fields and fillHeaderChecksum makes the header valid again", () => {
  const buf = TCP_SYN_4.slice();
  const p = mustWrap(buf);
  p.ttl = 1;
  p.src = 0x0a000001;
  p.dst = 0xfffffffe;
  p.ident = 7;
  p.tos = 0xb8;
  p.flagsFrag = 0;
  ok(!p.headerChecksumOk());
  p.fillHeaderChecksum();
  ok(p.headerChecksumOk());
  const r = ip4Parse(p);
  if (isWireError(r)) throw new Error("parse failed");
  deepEqual(
    [r.ttl, r.src, r.dst, r.ident, r.tos, r.dontFragment],
    [1, 0x0a000001, 0xfffffffe, 7, 0xb8, false],
  );
});

Deno.test("ip4: build → parse round trip", () => {
  const rand = prng(791);
  const p = new Ip4Packet();
  const back = ip4ReprNew();
  for (let i = 0; i < 500; i++) {
    const r = {
      src: (rand() * 2 ** 32) >>> 0,
      dst: (rand() * 2 ** 32) >>> 0,
      proto: (rand() * 256) | 0,
      ttl: (rand() * 256) | 0,
      tos: (rand() * 256) | 0,
      ident: (rand() * 65536) | 0,
      dontFragment: rand() < 0.5,
      payloadLen: (rand() * 100) | 0,
    };
    const buf = randomBytes(rand, 20 + r.payloadLen + 10); // trailing bytes: padding
    ip4Emit(buf, 0, r);
    equal(p.wrap(buf, 0, buf.length), 0);
    equal(p.len, 20 + r.payloadLen);
    deepEqual(ip4Parse(p, back), r);
  }
});

Deno.test("srcBits and dstBits are the addresses' bits as signed 32-bit integers", () => {
  const buf = new Uint8Array(20);
  const r = ip4ReprNew();
  r.src = 0xc0000202; // 192.0.2.2: unsigned, above 2^31
  r.dst = 0x0a000201; // 10.0.2.1: below
  r.proto = 17;
  r.payloadLen = 0;
  ip4Emit(buf, 0, r);
  const ip = mustWrap(buf, 0);
  equal(ip.src, 0xc0000202);
  equal(ip.srcBits, 0xc0000202 | 0);
  ok(ip.srcBits < 0, "a signed integer");
  equal(ip.srcBits >>> 0, ip.src, "the same bits");
  equal(ip.dstBits, ip.dst, "below 2^31 both forms are one number");
});
