import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { parseIp6 } from "../../lib/addr.ts";
import { checksumPseudo6 } from "../../lib/packet/checksum.ts";
import { ethEmit, EtherType } from "../../lib/packet/eth.ts";
import {
  ICMP6_HEADER_LEN,
  icmp6Emit,
  Icmp6Packet,
  icmp6Parse,
  icmp6ReprNew,
  Icmp6Type,
  NDP_MAX_PREFIXES,
  NDP_NA_OVERRIDE,
  NDP_NA_SOLICITED,
  NDP_PREFIX_AUTONOMOUS,
  NDP_PREFIX_ON_LINK,
  NDP_RA_OTHER,
  ndpEmit,
  NdpOpt,
  NdpOptions,
  ndpOptionsParse,
  ndpOptLinkAddrEmit,
  ndpOptMtuEmit,
  ndpOptPrefixInfoEmit,
  ndpOptRdnssEmit,
  ndpParse,
  ndpPrefixInfoNew,
  ndpPrefixInfoRead,
  ndpReprNew,
} from "../../lib/packet/icmp6.ts";
import { ip6Emit, Ip6Packet, ip6ReprNew } from "../../lib/packet/ip6.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";
import {
  GATEWAY_MAC,
  GUEST_MAC,
  hex,
  ICMP6_ECHO,
  NDP_NS,
  NDP_RA,
  prng,
  randomBytes,
} from "./golden.ts";

const ICMP_OFF = 54;
const SRC_OFF = 22;
const DST_OFF = 38;

function addr(s: string): Uint8Array {
  const a = parseIp6(s);
  if (a === null) throw new Error(`bad address ${s}`);
  return a;
}

function mustWrap(buf: Uint8Array, off = ICMP_OFF, len = buf.length - off): Icmp6Packet {
  const p = Icmp6Packet.checked(buf, off, len);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

function mustParse<T>(r: T | WireError): T {
  if (isWireError(r)) throw new Error(`parse failed: ${r}`);
  return r;
}

// Writes Ethernet + IPv6 headers in front of an ICMPv6 message of `len` bytes
// at 54 and fills its checksum: the last step of building NDP messages.
function finishFrame(
  buf: Uint8Array,
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  src: string,
  dst: string,
  len: number,
) {
  ethEmit(buf, 0, dstMac, srcMac, EtherType.Ipv6);
  const ip = ip6ReprNew();
  ip.src = addr(src);
  ip.dst = addr(dst);
  ip.nextHeader = IpProto.Icmp6;
  ip.hopLimit = 255;
  ip.payloadLen = len;
  ip6Emit(buf, 14, ip);
  mustWrap(buf, ICMP_OFF, len).fillChecksum(buf, SRC_OFF, DST_OFF);
  return 14 + 40 + len;
}

Deno.test("icmp6: deconstructs an echo request", () => {
  const p = mustWrap(ICMP6_ECHO);
  equal(p.type, Icmp6Type.EchoRequest);
  equal(p.code, 0);
  equal(p.checksum, 0x8075);
  ok(p.checksumOk(ICMP6_ECHO, SRC_OFF, DST_OFF));
  ok(!p.checksumOk(ICMP6_ECHO, DST_OFF, DST_OFF));
  equal(p.ident, 0x1234);
  equal(p.seq, 1);
  deepEqual(p.payload(), new TextEncoder().encode("abcdefgh"));
  deepEqual(icmp6Parse(p), { type: 128, code: 0, rest: 0x12340001, payloadLen: 8 });
});

Deno.test("icmp6: constructs the golden echo request with a pseudo-header sum", () => {
  const buf = new Uint8Array(18).fill(0x99);
  buf.set(new TextEncoder().encode("abcdefgh"), 8);
  const r = icmp6ReprNew();
  r.type = Icmp6Type.EchoRequest;
  r.rest = (0x1234 << 16) | 1;
  r.payloadLen = 8;
  const pseudo = checksumPseudo6(addr("2001:db8::2"), 0, addr("2001:db8::1"), 0, IpProto.Icmp6, 16);
  equal(icmp6Emit(buf, 0, r, pseudo), ICMP6_HEADER_LEN);
  deepEqual(buf.subarray(0, 16), ICMP6_ECHO.subarray(ICMP_OFF));
  equal(buf[16], 0x99);
  icmp6Emit(buf, 0, r); // no pseudo-header sum: checksum left zero
  equal(mustWrap(buf, 0, 16).checksum, 0);
});

Deno.test("icmp6: deconstructs a router advertisement and its options", () => {
  const p = mustWrap(NDP_RA);
  ok(p.checksumOk(NDP_RA, SRC_OFF, DST_OFF));
  const ra = mustParse(ndpParse(p));
  equal(ra.type, Icmp6Type.RouterAdvert);
  equal(ra.curHopLimit, 64);
  equal(ra.flags, NDP_RA_OTHER);
  equal(ra.routerLifetime, 1800);
  equal(ra.reachableTime, 0);
  equal(ra.retransTimer, 0);
  equal(p.optionsOffset, ICMP_OFF + 16);
  equal(p.optionsLen, 72);

  const opts = new NdpOptions();
  equal(ndpOptionsParse(p, opts), 0);
  const sll = opts.srcLinkAddrOffset;
  deepEqual(NDP_RA.subarray(sll, sll + 6), GATEWAY_MAC);
  equal(opts.tgtLinkAddrOffset, -1);
  equal(opts.mtu, 1500);
  equal(opts.prefixCount, 1);
  deepEqual(ndpPrefixInfoRead(NDP_RA, opts.prefixOffsets[0]), {
    prefixLen: 64,
    flags: NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS,
    validLifetime: 3600,
    preferredLifetime: 1800,
    prefix: addr("2001:db8::"),
  });
  equal(opts.rdnssCount, 1);
  equal(opts.rdnssLifetime, 600);
  deepEqual(NDP_RA.subarray(opts.rdnssOffset, opts.rdnssOffset + 16), addr("2001:db8::1"));
});

Deno.test("icmp6: constructs the golden router advertisement frame", () => {
  const buf = new Uint8Array(160).fill(0xab);
  const ra = ndpReprNew();
  ra.type = Icmp6Type.RouterAdvert;
  ra.curHopLimit = 64;
  ra.flags = NDP_RA_OTHER;
  ra.routerLifetime = 1800;
  let n = ndpEmit(buf, ICMP_OFF, ra);
  equal(n, 16);
  n += ndpOptLinkAddrEmit(buf, ICMP_OFF + n, NdpOpt.SrcLinkAddr, GATEWAY_MAC);
  n += ndpOptMtuEmit(buf, ICMP_OFF + n, 1500);
  const pi = ndpPrefixInfoNew();
  pi.prefixLen = 64;
  pi.flags = NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS;
  pi.validLifetime = 3600;
  pi.preferredLifetime = 1800;
  pi.prefix = addr("2001:db8::");
  n += ndpOptPrefixInfoEmit(buf, ICMP_OFF + n, pi);
  n += ndpOptRdnssEmit(buf, ICMP_OFF + n, 600, [addr("2001:db8::1")]);
  equal(n, 88);
  const mac = hex("33 33 00 00 00 01");
  const total = finishFrame(buf, mac, GATEWAY_MAC, "fe80::1", "ff02::1", n);
  deepEqual(buf.subarray(0, total), NDP_RA);
  equal(buf[total], 0xab);
});

Deno.test("icmp6: deconstructs a neighbor solicitation", () => {
  const p = mustWrap(NDP_NS);
  ok(p.checksumOk(NDP_NS, SRC_OFF, DST_OFF));
  const ns = mustParse(ndpParse(p));
  equal(ns.type, Icmp6Type.NeighborSolicit);
  deepEqual(ns.target, addr("fe80::1"));
  equal(ns.flags, 0);
  const opts = new NdpOptions();
  equal(ndpOptionsParse(p, opts), 0);
  deepEqual(NDP_NS.subarray(opts.srcLinkAddrOffset, opts.srcLinkAddrOffset + 6), GUEST_MAC);
  equal(opts.mtu, -1);
  equal(opts.prefixCount, 0);
  equal(opts.rdnssOffset, -1);
});

Deno.test("icmp6: constructs the golden neighbor solicitation frame", () => {
  const buf = new Uint8Array(NDP_NS.length).fill(0x11);
  const ns = ndpReprNew();
  ns.type = Icmp6Type.NeighborSolicit;
  ns.target = addr("fe80::1");
  let n = ndpEmit(buf, ICMP_OFF, ns);
  n += ndpOptLinkAddrEmit(buf, ICMP_OFF + n, NdpOpt.SrcLinkAddr, GUEST_MAC);
  const total = finishFrame(
    buf,
    hex("33 33 ff 00 00 01"),
    GUEST_MAC,
    "fe80::5054:ff:fe12:3456",
    "ff02::1:ff00:1",
    n,
  );
  deepEqual(buf.subarray(0, total), NDP_NS);
});

Deno.test("icmp6: NA and RS build → parse round trips", () => {
  const buf = new Uint8Array(100);
  const na = ndpReprNew();
  na.type = Icmp6Type.NeighborAdvert;
  na.flags = NDP_NA_SOLICITED | NDP_NA_OVERRIDE;
  na.target = addr("fe80::1");
  let n = ndpEmit(buf, ICMP_OFF, na);
  equal(n, 24);
  n += ndpOptLinkAddrEmit(buf, ICMP_OFF + n, NdpOpt.TgtLinkAddr, GATEWAY_MAC);
  finishFrame(buf, GUEST_MAC, GATEWAY_MAC, "fe80::1", "fe80::5054:ff:fe12:3456", n);
  const p = mustWrap(buf, ICMP_OFF, n);
  ok(p.checksumOk(buf, SRC_OFF, DST_OFF));
  deepEqual(ndpParse(p), na);
  const opts = new NdpOptions();
  equal(ndpOptionsParse(p, opts), 0);
  deepEqual(buf.subarray(opts.tgtLinkAddrOffset, opts.tgtLinkAddrOffset + 6), GATEWAY_MAC);

  const rs = ndpReprNew();
  rs.type = Icmp6Type.RouterSolicit;
  buf.fill(0xff);
  n = ndpEmit(buf, ICMP_OFF, rs);
  equal(n, 8);
  finishFrame(buf, hex("33 33 00 00 00 02"), GUEST_MAC, "fe80::5054:ff:fe12:3456", "ff02::2", n);
  deepEqual(ndpParse(mustWrap(buf, ICMP_OFF, n)), rs);
  equal(ndpOptionsParse(mustWrap(buf, ICMP_OFF, n), opts), 0);
  equal(opts.srcLinkAddrOffset, -1);
});

Deno.test("icmp6: ndpParse refuses non-NDP types, non-zero codes and multicast targets", () => {
  equal(ndpParse(mustWrap(ICMP6_ECHO)), WireError.Unsupported);
  const code = NDP_NS.slice();
  code[ICMP_OFF + 1] = 1;
  equal(ndpParse(mustWrap(code)), WireError.Malformed);
  const mcast = NDP_NS.slice();
  mcast[ICMP_OFF + 8] = 0xff;
  equal(ndpParse(mustWrap(mcast)), WireError.Malformed);
  equal(ndpOptionsParse(mustWrap(ICMP6_ECHO), new NdpOptions()), WireError.Unsupported);
});

Deno.test("icmp6: malformed NDP options are refused", () => {
  const opts = new NdpOptions();
  const RA_OPTS = ICMP_OFF + 16; // SLLA @70, MTU @78, PI @86, RDNSS @118
  const cases: [string, number, number][] = [
    ["zero length", RA_OPTS + 1, 0],
    ["past the end", 118 + 1, 4],
    ["prefix info of 3 units", 86 + 1, 3],
    ["MTU of 2 units", 78 + 1, 2],
  ];
  for (const [what, at, value] of cases) {
    const buf = NDP_RA.slice();
    buf[at] = value;
    equal(ndpOptionsParse(mustWrap(buf), opts), WireError.BadOption, what);
  }
  // RDNSS must be an odd number of units, at least 3: shorten the packet to fit.
  for (const units of [1, 2]) {
    const buf = NDP_RA.slice(0, 118 + units * 8);
    buf[119] = units;
    equal(ndpOptionsParse(mustWrap(buf), opts), WireError.BadOption, `RDNSS ${units}`);
  }
  // A single byte after the last option cannot hold a type and a length.
  const tail = new Uint8Array(NDP_RA.length + 1);
  tail.set(NDP_RA);
  tail[NDP_RA.length] = 1;
  equal(ndpOptionsParse(mustWrap(tail), opts), WireError.BadOption);
});

Deno.test("icmp6: unknown options are skipped and extra prefixes are counted", () => {
  const buf = new Uint8Array(ICMP_OFF + 16 + 8 + 32 * (NDP_MAX_PREFIXES + 2));
  const ra = ndpReprNew();
  ra.type = Icmp6Type.RouterAdvert;
  let n = ndpEmit(buf, ICMP_OFF, ra);
  buf.set(hex("1f 01 00 00 00 00 00 00"), ICMP_OFF + n); // DNSSL, unknown here
  n += 8;
  for (let i = 0; i < NDP_MAX_PREFIXES + 2; i++) {
    const pi = ndpPrefixInfoNew();
    pi.prefixLen = 48 + i;
    n += ndpOptPrefixInfoEmit(buf, ICMP_OFF + n, pi);
  }
  const opts = new NdpOptions();
  equal(ndpOptionsParse(mustWrap(buf, ICMP_OFF, n), opts), 0);
  equal(opts.prefixCount, NDP_MAX_PREFIXES);
  equal(opts.prefixesDropped, 2);
  equal(ndpPrefixInfoRead(buf, opts.prefixOffsets[3]).prefixLen, 51);
});

Deno.test("icmp6: RDNSS with several servers", () => {
  const buf = new Uint8Array(80);
  const servers = [addr("2001:db8::53"), addr("2001:db8::5353"), addr("fd00::1")];
  equal(ndpOptRdnssEmit(buf, 24, 300, servers), 56);
  buf[0] = Icmp6Type.NeighborSolicit; // options of an NS start at 24
  const opts = new NdpOptions();
  equal(ndpOptionsParse(mustWrap(buf, 0, 80), opts), 0);
  equal(opts.rdnssCount, 3);
  equal(opts.rdnssLifetime, 300);
  deepEqual(buf.subarray(opts.rdnssOffset + 32, opts.rdnssOffset + 48), servers[2]);
  throws(() => ndpOptRdnssEmit(buf, 0, 300, []), RangeError);
});

Deno.test("icmp6: messages shorter than their type's fixed part are refused", () => {
  for (let len = 0; len < 8; len++) {
    equal(Icmp6Packet.checked(ICMP6_ECHO, ICMP_OFF, len), WireError.Truncated);
  }
  for (let len = 8; len < 24; len++) {
    equal(Icmp6Packet.checked(NDP_NS, ICMP_OFF, len), WireError.Truncated, `NS ${len}`);
  }
  for (let len = 8; len < 16; len++) {
    equal(Icmp6Packet.checked(NDP_RA, ICMP_OFF, len), WireError.Truncated, `RA ${len}`);
  }
  ok(!isWireError(Icmp6Packet.checked(NDP_NS, ICMP_OFF, 24)));
});

Deno.test("icmp6: every truncation of an ICMPv6 frame fails somewhere in the chain", () => {
  const ip = new Ip6Packet();
  for (const frame of [NDP_RA, NDP_NS, ICMP6_ECHO]) {
    for (let len = 14; len < frame.length; len++) {
      const ipErr = ip.wrap(frame, 14, len - 14);
      ok(ipErr !== 0, `len ${len}`); // the payload length no longer fits
    }
  }
});

Deno.test("icmp6: echo and error build → parse round trip", () => {
  const rand = prng(4443);
  const back = icmp6ReprNew();
  const p = new Icmp6Packet();
  const addrs = randomBytes(rand, 32);
  for (let i = 0; i < 500; i++) {
    const r = {
      type: [1, 2, 3, 4, 128, 129][i % 6],
      code: (rand() * 256) | 0,
      rest: (rand() * 2 ** 32) >>> 0,
      payloadLen: (rand() * 64) | 0,
    };
    const len = 8 + r.payloadLen;
    const buf = randomBytes(rand, len);
    icmp6Emit(buf, 0, r, checksumPseudo6(addrs, 0, addrs, 16, IpProto.Icmp6, len));
    equal(p.wrap(buf, 0, len), 0);
    ok(p.checksumOk(addrs, 0, 16));
    deepEqual(icmp6Parse(p, back), r);
  }
});
