import { deepEqual, equal, ok } from "node:assert/strict";
import { parseIp6 } from "../../lib/addr.ts";
import {
  IP6_HEADER_LEN,
  IP6_MAX_EXT_HEADERS,
  ip6Emit,
  ip6IsLinkLocal,
  ip6MulticastMac,
  Ip6Packet,
  ip6Parse,
  ip6ReprNew,
  ip6SolicitedNode,
  ip6UpperNew,
} from "../../lib/packet/ip6.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";
import {
  hex,
  ICMP6_ECHO,
  MLD_REPORT,
  MLD_REPORT_ICMP_OFF,
  NDP_NS,
  NDP_RA,
  parseFrame,
  prng,
  randomBytes,
  TCP_DATA_6,
  UDP_6,
} from "./golden.ts";

function addr(s: string): Uint8Array {
  const a = parseIp6(s);
  if (a === null) throw new Error(`bad address ${s}`);
  return a;
}

function mustWrap(buf: Uint8Array, off = 14, len = buf.length - off): Ip6Packet {
  const p = Ip6Packet.checked(buf, off, len);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

// An IPv6 packet whose payload is the given extension headers, each written as
// [type, total length in bytes], followed by 8 bytes of `upper`.
function withExtHeaders(headers: [number, number][], upper: number, fragWord = 0): Uint8Array {
  const extLen = headers.reduce((n, [, len]) => n + len, 0);
  const buf = new Uint8Array(IP6_HEADER_LEN + extLen + 8);
  const r = ip6ReprNew();
  r.src = addr("2001:db8::2");
  r.dst = addr("2001:db8::1");
  r.nextHeader = headers.length > 0 ? headers[0][0] : upper;
  r.payloadLen = extLen + 8;
  ip6Emit(buf, 0, r);
  let pos = IP6_HEADER_LEN;
  headers.forEach(([type, len], i) => {
    buf[pos] = i + 1 < headers.length ? headers[i + 1][0] : upper;
    if (type === IpProto.Fragment) {
      buf[pos + 2] = fragWord >>> 8;
      buf[pos + 3] = fragWord;
    } else {
      buf[pos + 1] = len / 8 - 1;
    }
    pos += len;
  });
  return buf;
}

Deno.test("ip6: deconstructs the header of a TCP segment", () => {
  const p = mustWrap(TCP_DATA_6);
  equal(p.version, 6);
  equal(p.trafficClass, 0);
  equal(p.flowLabel, 0);
  equal(p.payloadLen, 39);
  equal(p.len, 79);
  equal(p.nextHeader, IpProto.Tcp);
  equal(p.hopLimit, 64);
  ok(p.srcEquals(addr("2001:db8::2")));
  ok(p.dstEquals(addr("2001:db8::1")));
  ok(!p.srcEquals(addr("2001:db8::1")));
  equal(p.srcOffset, 22);
  equal(p.dstOffset, 38);
  equal(p.payloadOffset, 54);
  equal(p.payload().length, 39);
});

Deno.test("ip6: traffic class and flow label share the first word without clobbering", () => {
  const buf = hex("6b8abcde 0000 3b 40", "00".repeat(32));
  const p = mustWrap(buf, 0);
  equal(p.trafficClass, 0xb8);
  equal(p.flowLabel, 0xabcde);
  p.trafficClass = 0x01;
  equal(p.flowLabel, 0xabcde);
  p.flowLabel = 0x12345;
  equal(p.trafficClass, 0x01);
  equal(p.version, 6);
  deepEqual(buf.subarray(0, 4), hex("60112345"));
});

Deno.test("ip6: constructs the golden header over stale bytes", () => {
  const buf = new Uint8Array(44).fill(0x77);
  const r = ip6ReprNew();
  r.src = addr("2001:db8::2");
  r.dst = addr("2001:db8::1");
  r.nextHeader = IpProto.Tcp;
  r.hopLimit = 64;
  r.payloadLen = 39;
  equal(ip6Emit(buf, 2, r), IP6_HEADER_LEN);
  deepEqual(buf.subarray(2, 42), TCP_DATA_6.subarray(14, 54));
  equal(buf[42], 0x77);
});

Deno.test("ip6: wrong version, a lying payload length and short buffers are refused", () => {
  const v4 = TCP_DATA_6.slice();
  v4[14] = 0x40;
  equal(Ip6Packet.checked(v4, 14), WireError.BadVersion);
  const lying = TCP_DATA_6.slice();
  lying[19] = 40; // payload length 40, 39 bytes there
  equal(Ip6Packet.checked(lying, 14), WireError.Truncated);
  for (let len = 0; len < IP6_HEADER_LEN; len++) {
    equal(Ip6Packet.checked(TCP_DATA_6.subarray(14, 14 + len)), WireError.Truncated);
  }
});

Deno.test("ip6: bytes after the payload length are not part of the packet", () => {
  const padded = new Uint8Array(TCP_DATA_6.length + 20);
  padded.set(TCP_DATA_6);
  const p = mustWrap(padded);
  equal(p.len, 79);
  const upper = ip6UpperNew();
  equal(p.findUpper(upper), 0);
  equal(upper.len, 39);
});

Deno.test("ip6: findUpper without extension headers", () => {
  const upper = ip6UpperNew();
  equal(mustWrap(TCP_DATA_6).findUpper(upper), 0);
  deepEqual(upper, { proto: IpProto.Tcp, offset: 54, len: 39 });
  equal(mustWrap(UDP_6).findUpper(upper), 0);
  deepEqual(upper, { proto: IpProto.Udp, offset: 54, len: 13 });
});

Deno.test("ip6: findUpper walks a hop-by-hop header to an MLD report", () => {
  const upper = ip6UpperNew();
  equal(mustWrap(MLD_REPORT).findUpper(upper), 0);
  deepEqual(upper, { proto: IpProto.Icmp6, offset: MLD_REPORT_ICMP_OFF, len: 28 });
});

Deno.test("ip6: findUpper walks every extension header kind and an atomic fragment", () => {
  const upper = ip6UpperNew();
  const chain: [number, number][] = [
    [IpProto.HopByHop, 8],
    [IpProto.DstOpts, 16],
    [IpProto.Routing, 24],
    [IpProto.Fragment, 8],
    [IpProto.DstOpts, 8],
  ];
  const buf = withExtHeaders(chain, IpProto.Udp, 0x0000);
  equal(mustWrap(buf, 0).findUpper(upper), 0);
  deepEqual(upper, { proto: IpProto.Udp, offset: 40 + 64, len: 8 });
});

Deno.test("ip6: real fragments are reported as fragmented", () => {
  const upper = ip6UpperNew();
  const first = withExtHeaders([[IpProto.Fragment, 8]], IpProto.Udp, 0x0001); // M set
  equal(mustWrap(first, 0).findUpper(upper), WireError.Fragmented);
  const later = withExtHeaders([[IpProto.Fragment, 8]], IpProto.Udp, 0x00b8); // offset 23
  equal(mustWrap(later, 0).findUpper(upper), WireError.Fragmented);
  const reserved = withExtHeaders([[IpProto.Fragment, 8]], IpProto.Udp, 0x0006); // res bits only
  equal(mustWrap(reserved, 0).findUpper(upper), 0);
});

Deno.test("ip6: hop-by-hop anywhere but first is malformed", () => {
  const buf = withExtHeaders([[IpProto.DstOpts, 8], [IpProto.HopByHop, 8]], IpProto.Tcp);
  equal(mustWrap(buf, 0).findUpper(ip6UpperNew()), WireError.Malformed);
});

Deno.test("ip6: the extension header walk is bounded", () => {
  const upper = ip6UpperNew();
  const most: [number, number][] = Array(IP6_MAX_EXT_HEADERS).fill([IpProto.DstOpts, 8]);
  equal(mustWrap(withExtHeaders(most, IpProto.Tcp), 0).findUpper(upper), 0);
  equal(upper.proto, IpProto.Tcp);
  const tooMany: [number, number][] = Array(IP6_MAX_EXT_HEADERS + 1).fill([IpProto.DstOpts, 8]);
  equal(mustWrap(withExtHeaders(tooMany, IpProto.Tcp), 0).findUpper(upper), WireError.Malformed);
});

Deno.test("ip6: an extension header running past the packet is truncated", () => {
  const upper = ip6UpperNew();
  const buf = withExtHeaders([[IpProto.Routing, 8]], IpProto.Tcp);
  buf[41] = 1; // routing header claims 16 bytes; 8 + 8 bytes of upper layer remain
  equal(mustWrap(buf, 0).findUpper(upper), 0);
  equal(upper.len, 0);
  buf[41] = 2; // 24 bytes: past the end
  equal(mustWrap(buf, 0).findUpper(upper), WireError.Truncated);
  // Payload of 1 byte announcing hop-by-hop: not even the length byte is there.
  const tiny = hex("60000000 0001 00 40", "00".repeat(32), "3a");
  equal(mustWrap(tiny, 0).findUpper(upper), WireError.Truncated);
  const frag = hex("60000000 0004 2c 40", "00".repeat(32), "11000000");
  equal(mustWrap(frag, 0).findUpper(upper), WireError.Truncated);
});

Deno.test("ip6: no-next-header, ESP and AH end the walk as the upper layer", () => {
  const upper = ip6UpperNew();
  for (const proto of [IpProto.NoNext, IpProto.Esp, IpProto.Ah]) {
    equal(mustWrap(withExtHeaders([], proto), 0).findUpper(upper), 0);
    deepEqual(upper, { proto, offset: 40, len: 8 });
  }
});

Deno.test("ip6: parse refuses a multicast source address", () => {
  const buf = UDP_6.slice();
  buf[22] = 0xff;
  equal(ip6Parse(mustWrap(buf)), WireError.Malformed);
});

Deno.test("ip6: solicited-node group and multicast MAC of the golden NS", () => {
  const out = new Uint8Array(18).fill(0xcc);
  ip6SolicitedNode(out, 1, addr("fe80::1"), 0);
  deepEqual(out.subarray(1, 17), NDP_NS.subarray(38, 54)); // ff02::1:ff00:1
  equal(out[0], 0xcc);
  equal(out[17], 0xcc);
  const mac = new Uint8Array(6);
  ip6MulticastMac(mac, 0, NDP_NS, 38);
  deepEqual(mac, NDP_NS.subarray(0, 6));
});

Deno.test("ip6: link-local test covers fe80::/10 only", () => {
  ok(ip6IsLinkLocal(addr("fe80::1"), 0));
  ok(ip6IsLinkLocal(addr("febf::1"), 0));
  ok(!ip6IsLinkLocal(addr("fec0::1"), 0));
  ok(!ip6IsLinkLocal(addr("2001:db8::1"), 0));
});

Deno.test("ip6: every truncation of IPv6 frames is refused", () => {
  for (const frame of [TCP_DATA_6, UDP_6, ICMP6_ECHO, NDP_RA, NDP_NS, MLD_REPORT]) {
    equal(parseFrame(frame), 0);
    for (let len = 0; len < frame.length; len++) {
      ok(parseFrame(frame.subarray(0, len)) !== 0, `len ${len} of ${frame.length}`);
    }
  }
});

Deno.test("ip6: build → parse round trip", () => {
  const rand = prng(8200);
  const p = new Ip6Packet();
  const back = ip6ReprNew();
  for (let i = 0; i < 500; i++) {
    const r = {
      src: randomBytes(rand, 16),
      dst: randomBytes(rand, 16),
      nextHeader: (rand() * 256) | 0,
      hopLimit: (rand() * 256) | 0,
      trafficClass: (rand() * 256) | 0,
      flowLabel: (rand() * 0x100000) | 0,
      payloadLen: (rand() * 100) | 0,
    };
    r.src[0] &= 0xfe; // not multicast
    const buf = randomBytes(rand, 40 + r.payloadLen + 7);
    ip6Emit(buf, 0, r);
    equal(p.wrap(buf, 0, buf.length), 0);
    deepEqual(ip6Parse(p, back), r);
  }
});
