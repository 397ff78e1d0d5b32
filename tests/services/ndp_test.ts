import { deepEqual, equal, ok } from "node:assert/strict";
import { TAPIR_MAC } from "../../lib/net.ts";
import { dnsNameListDecode } from "../../lib/packet/dnsname.ts";
import { ETH_HEADER_LEN, EtherType } from "../../lib/packet/eth.ts";
import {
  Icmp6Packet,
  Icmp6Type,
  NDP_NA_OVERRIDE,
  NDP_NA_ROUTER,
  NDP_NA_SOLICITED,
  NDP_PREFIX_AUTONOMOUS,
  NDP_PREFIX_ON_LINK,
  NDP_RA_MANAGED,
  NDP_RA_OTHER,
  ndpEmit,
  NdpOpt,
  NdpOptions,
  ndpOptionsParse,
  ndpOptLinkAddrEmit,
  ndpParse,
  ndpPrefixInfoRead,
  ndpReprNew,
} from "../../lib/packet/icmp6.ts";
import { IP6_HEADER_LEN, Ip6Packet, ip6SolicitedNode } from "../../lib/packet/ip6.ts";
import { get32, IpProto, isWireError } from "../../lib/packet/wire.ts";
import {
  IP6_ALL_NODES,
  NDP_OPT_DNSSL,
  ndpOptDnsslEmit,
  NdpService,
} from "../../lib/services/ndp.ts";
import { ServiceVerdict } from "../../lib/services/service.ts";
import {
  GUEST_LL,
  GUEST_MAC,
  GUEST_SLAAC,
  icmp6Frame,
  NET,
  netWith,
  rig,
  v6,
  views,
} from "./harness.ts";

const UNSPECIFIED = new Uint8Array(16);
const ALL_ROUTERS = v6("ff02::2");
const OUR_LL = NET.ip6!.ourLinkLocal;

/** An NS body for `target`, with a source link-layer option for `sll` unless null. */
function nsBody(target: Uint8Array, sll: Uint8Array | null = GUEST_MAC): Uint8Array {
  const b = new Uint8Array(32);
  const r = ndpReprNew();
  r.type = Icmp6Type.NeighborSolicit;
  r.target.set(target);
  let n = ndpEmit(b, 0, r);
  if (sll) n += ndpOptLinkAddrEmit(b, n, NdpOpt.SrcLinkAddr, sll);
  return b.slice(0, n);
}

/** An RS body, with a source link-layer option for `sll` unless null. */
function rsBody(sll: Uint8Array | null = GUEST_MAC): Uint8Array {
  const b = new Uint8Array(16);
  const r = ndpReprNew();
  r.type = Icmp6Type.RouterSolicit;
  let n = ndpEmit(b, 0, r);
  if (sll) n += ndpOptLinkAddrEmit(b, n, NdpOpt.SrcLinkAddr, sll);
  return b.slice(0, n);
}

/** The solicited-node group of `target`. */
function solicitedNode(target: Uint8Array): Uint8Array {
  const a = new Uint8Array(16);
  ip6SolicitedNode(a, 0, target, 0);
  return a;
}

/** The kernel resolving `target`: multicast NS from `src` to the solicited-node group. */
function resolve(target: Uint8Array, src: Uint8Array = GUEST_LL): Uint8Array {
  return icmp6Frame(GUEST_MAC, src, solicitedNode(target), nsBody(target));
}

/** The kernel asking for routers: RS from its link-local address to ff02::2. */
function routerSolicit(src: Uint8Array = GUEST_LL): Uint8Array {
  const sll = src === UNSPECIFIED ? null : GUEST_MAC;
  return icmp6Frame(GUEST_MAC, src, ALL_ROUTERS, rsBody(sll));
}

function input(ndp: NdpService, ctx: ReturnType<typeof rig>["ctx"], frame: Uint8Array) {
  const v = views(frame);
  return ndp.input(ctx, v.eth, v.ip6, v.icmp6);
}

/** What a reply frame says, checked at every layer on the way. */
function parseReply(frame: Uint8Array) {
  const dstMac = frame.slice(0, 6);
  const srcMac = frame.slice(6, 12);
  equal((frame[12] << 8) | frame[13], EtherType.Ipv6, "EtherType");
  const ip = Ip6Packet.checked(frame, ETH_HEADER_LEN) as Ip6Packet;
  ok(!isWireError(ip), "IPv6 header");
  equal(ip.len, frame.length - ETH_HEADER_LEN, "payload length covers the frame");
  equal(ip.nextHeader, IpProto.Icmp6);
  const icmp = Icmp6Packet.checked(frame, ETH_HEADER_LEN + IP6_HEADER_LEN) as Icmp6Packet;
  ok(!isWireError(icmp), "ICMPv6 header");
  ok(icmp.checksumOk(frame, ip.srcOffset, ip.dstOffset), "ICMPv6 checksum");
  const ndp = ndpParse(icmp);
  if (isWireError(ndp)) throw new Error(`NDP body: ${ndp}`);
  const opts = new NdpOptions();
  equal(ndpOptionsParse(icmp, opts), 0, "options");
  return {
    dstMac,
    srcMac,
    src: frame.slice(ip.srcOffset, ip.srcOffset + 16),
    dst: frame.slice(ip.dstOffset, ip.dstOffset + 16),
    hopLimit: ip.hopLimit,
    ipLen: ip.len,
    ndp,
    opts,
    icmp,
    frame,
  };
}

/** The MAC at `off` of `buf`. */
function macAt(buf: Uint8Array, off: number): Uint8Array {
  return buf.slice(off, off + 6);
}

/** Every option of the NDP message `icmp` as [type, offset, length in bytes]. */
function optionList(icmp: Icmp6Packet): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let p = icmp.optionsOffset; p < icmp.off + icmp.len; p += icmp.buf[p + 1] * 8) {
    out.push([icmp.buf[p], p, icmp.buf[p + 1] * 8]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Neighbor solicitation → advertisement.

Deno.test("NS for the gateway: NA from the target, flags R S O, our MAC as target address", () => {
  const r = rig();
  const ndp = new NdpService();
  equal(input(ndp, r.ctx, resolve(OUR_LL)), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  const na = parseReply(sent[0]);
  deepEqual(na.dstMac, GUEST_MAC);
  deepEqual(na.srcMac, TAPIR_MAC);
  deepEqual(na.src, OUR_LL);
  deepEqual(na.dst, GUEST_LL);
  equal(na.hopLimit, 255);
  equal(na.ndp.type, Icmp6Type.NeighborAdvert);
  equal(na.ndp.flags, NDP_NA_ROUTER | NDP_NA_SOLICITED | NDP_NA_OVERRIDE);
  deepEqual(na.ndp.target, OUR_LL);
  ok(na.opts.tgtLinkAddrOffset >= 0, "target link-layer address option");
  deepEqual(macAt(sent[0], na.opts.tgtLinkAddrOffset), TAPIR_MAC);
  equal(na.opts.srcLinkAddrOffset, -1);
  deepEqual(ndp.stats, {
    received: 1,
    sent: 1,
    ignored: 0,
    drop: { hopLimit: 0, checksum: 0, malformed: 0 },
  });
});

Deno.test("NS for any other address is answered: on the prefix, off it, link-local", () => {
  const r = rig();
  const ndp = new NdpService();
  const targets = ["2001:db8::99", "2001:db8:1::1", "fe80::1", "2001:db8::1"].map(v6);
  for (const t of targets) {
    equal(input(ndp, r.ctx, resolve(t, GUEST_SLAAC)), ServiceVerdict.Replied);
  }
  const sent = r.sent().map(parseReply);
  deepEqual(sent.map((na) => na.ndp.target), targets);
  deepEqual(sent.map((na) => na.src), targets, "each NA comes from its target");
  for (const na of sent) deepEqual(na.dst, GUEST_SLAAC);
});

Deno.test("the NA goes to the source link-layer address, else to the frame's source MAC", () => {
  const r = rig();
  const ndp = new NdpService();
  const other = new Uint8Array([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
  const withSll = icmp6Frame(GUEST_MAC, GUEST_LL, solicitedNode(OUR_LL), nsBody(OUR_LL, other));
  // Neighbour unreachability detection: unicast NS, no source link-layer option.
  const nud = icmp6Frame(GUEST_MAC, GUEST_LL, OUR_LL, nsBody(OUR_LL, null), { dstMac: TAPIR_MAC });
  input(ndp, r.ctx, withSll);
  input(ndp, r.ctx, nud);
  const [a, b] = r.sent().map(parseReply);
  deepEqual(a.dstMac, other);
  deepEqual(b.dstMac, GUEST_MAC);
  deepEqual(b.dst, GUEST_LL);
});

Deno.test("NS left unanswered: DAD, the guest's own address, the solicitor's own address", () => {
  const r = rig();
  const ndp = new NdpService();
  const dad = icmp6Frame(
    GUEST_MAC,
    UNSPECIFIED,
    solicitedNode(GUEST_SLAAC),
    nsBody(GUEST_SLAAC, null),
  );
  const cases: [string, Uint8Array][] = [
    ["duplicate address detection", dad],
    [
      "DAD for an address tapir would otherwise claim",
      icmp6Frame(
        GUEST_MAC,
        UNSPECIFIED,
        solicitedNode(OUR_LL),
        nsBody(OUR_LL, null),
      ),
    ],
    ["the guest's configured address", resolve(NET.ip6!.addr)],
    ["the solicitor's own address", resolve(GUEST_SLAAC, GUEST_SLAAC)],
  ];
  for (const [what, f] of cases) equal(input(ndp, r.ctx, f), ServiceVerdict.Ignored, what);
  equal(r.sent().length, 0);
  equal(ndp.stats.ignored, cases.length);
  equal(ndp.stats.sent, 0);
});

Deno.test("invalid NDP is dropped by reason: hop limit, checksum, malformed", () => {
  const r = rig();
  const ndp = new NdpService();
  const badCode = resolve(OUR_LL);
  badCode[ETH_HEADER_LEN + IP6_HEADER_LEN + 1] = 1; // code 1 (checksum refilled below)
  const zeroOption = nsBody(OUR_LL);
  zeroOption[25] = 0; // source link-layer option of length 0
  const multicastTarget = nsBody(OUR_LL);
  multicastTarget.set(v6("ff02::1"), 8);
  const cases: [string, Uint8Array, string][] = [
    [
      "forwarded (hop limit 64)",
      icmp6Frame(GUEST_MAC, GUEST_LL, solicitedNode(OUR_LL), nsBody(OUR_LL), {
        hopLimit: 64,
      }),
      "hopLimit",
    ],
    [
      "RS with hop limit 1",
      icmp6Frame(GUEST_MAC, GUEST_LL, ALL_ROUTERS, rsBody(), {
        hopLimit: 1,
      }),
      "hopLimit",
    ],
    [
      "bad checksum",
      icmp6Frame(GUEST_MAC, GUEST_LL, solicitedNode(OUR_LL), nsBody(OUR_LL), {
        badChecksum: true,
      }),
      "checksum",
    ],
    ["code 1", refill(badCode), "malformed"],
    [
      "option of length 0",
      icmp6Frame(GUEST_MAC, GUEST_LL, solicitedNode(OUR_LL), zeroOption),
      "malformed",
    ],
    [
      "multicast target",
      icmp6Frame(GUEST_MAC, GUEST_LL, solicitedNode(OUR_LL), multicastTarget),
      "malformed",
    ],
    [
      "DAD with a source link-layer option",
      icmp6Frame(
        GUEST_MAC,
        UNSPECIFIED,
        solicitedNode(OUR_LL),
        nsBody(OUR_LL),
      ),
      "malformed",
    ],
    [
      "RS from :: with a source link-layer option",
      icmp6Frame(
        GUEST_MAC,
        UNSPECIFIED,
        ALL_ROUTERS,
        rsBody(),
      ),
      "malformed",
    ],
  ];
  for (const [what, f] of cases) equal(input(ndp, r.ctx, f), ServiceVerdict.Dropped, what);
  equal(r.sent().length, 0);
  deepEqual(ndp.stats.drop, { hopLimit: 2, checksum: 1, malformed: 5 });
  equal(ndp.stats.received, cases.length);
});

/** Refills the ICMPv6 checksum of an IPv6 frame after its message was edited. */
function refill(frame: Uint8Array): Uint8Array {
  const v = views(frame);
  v.icmp6.fillChecksum(frame, v.ip6.srcOffset, v.ip6.dstOffset);
  return frame;
}

Deno.test("advertisements and other ICMPv6 from the guest: NDP ignored, the rest passes", () => {
  const r = rig();
  const ndp = new NdpService();
  const naBody = new Uint8Array(24);
  const na = ndpReprNew();
  na.type = Icmp6Type.NeighborAdvert;
  na.target.set(GUEST_SLAAC);
  ndpEmit(naBody, 0, na);
  const raBody = new Uint8Array(16);
  const ra = ndpReprNew();
  ra.type = Icmp6Type.RouterAdvert;
  ndpEmit(raBody, 0, ra);
  equal(
    input(ndp, r.ctx, icmp6Frame(GUEST_MAC, GUEST_SLAAC, IP6_ALL_NODES, naBody)),
    ServiceVerdict.Ignored,
  );
  equal(
    input(ndp, r.ctx, icmp6Frame(GUEST_MAC, GUEST_LL, IP6_ALL_NODES, raBody)),
    ServiceVerdict.Ignored,
  );
  const echo = new Uint8Array([128, 0, 0, 0, 0x12, 0x34, 0, 1, 0xaa, 0xbb]);
  equal(
    input(
      ndp,
      r.ctx,
      icmp6Frame(GUEST_MAC, GUEST_SLAAC, v6("2001:db8::1"), echo, { hopLimit: 64 }),
    ),
    ServiceVerdict.Pass,
  );
  equal(r.sent().length, 0);
  equal(ndp.stats.received, 2);
  equal(ndp.stats.ignored, 2);
});

// ---------------------------------------------------------------------------
// Router solicitation → advertisement.

/** Checks everything an RA from tapir must say for `NET`; returns the parsed reply. */
function checkRa(frame: Uint8Array, managed = true) {
  const ra = parseReply(frame);
  deepEqual(ra.srcMac, TAPIR_MAC);
  deepEqual(ra.src, OUR_LL);
  equal(ra.hopLimit, 255);
  equal(ra.ndp.type, Icmp6Type.RouterAdvert);
  equal(ra.ndp.curHopLimit, 64);
  equal(ra.ndp.flags, managed ? NDP_RA_MANAGED | NDP_RA_OTHER : 0);
  equal(ra.ndp.routerLifetime, 9000);
  equal(ra.ndp.reachableTime, 0);
  equal(ra.ndp.retransTimer, 0);
  ok(ra.opts.srcLinkAddrOffset >= 0, "source link-layer option");
  deepEqual(macAt(frame, ra.opts.srcLinkAddrOffset), TAPIR_MAC);
  equal(ra.opts.prefixCount, 1);
  const pi = ndpPrefixInfoRead(frame, ra.opts.prefixOffsets[0]);
  deepEqual(pi.prefix, v6("2001:db8::"));
  equal(pi.prefixLen, 64);
  equal(pi.flags, NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS);
  equal(pi.validLifetime, 0xffffffff);
  equal(pi.preferredLifetime, 0xffffffff);
  return ra;
}

/** The DNS servers of the RA's RDNSS option. */
function rdnss(ra: ReturnType<typeof parseReply>): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < ra.opts.rdnssCount; i++) {
    const at = ra.opts.rdnssOffset + 16 * i;
    out.push(ra.frame.slice(at, at + 16));
  }
  return out;
}

/** The DNSSL option of an RA: lifetime and names, or null if absent. */
function dnssl(ra: ReturnType<typeof parseReply>): { lifetime: number; names: string[] } | null {
  const opt = optionList(ra.icmp).find(([type]) => type === NDP_OPT_DNSSL);
  if (!opt) return null;
  const [, at, len] = opt;
  equal(len % 8, 0);
  // Names back to back, then zero padding (a zero where a name would start).
  const buf = ra.frame;
  let p = at + 8;
  while (p < at + len && buf[p] !== 0) {
    while (buf[p] !== 0) p += buf[p] + 1;
    p++;
  }
  for (let q = p; q < at + len; q++) equal(buf[q], 0, "padding is zero");
  const names = dnsNameListDecode(buf, at + 8, p - (at + 8));
  if (isWireError(names)) throw new Error(`DNSSL names: ${names}`);
  return { lifetime: get32(buf, at + 4), names };
}

Deno.test("RS from a link-local address: unicast RA with prefix, MTU, RDNSS and DNSSL", () => {
  const r = rig();
  const ndp = new NdpService();
  equal(input(ndp, r.ctx, routerSolicit()), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  const ra = checkRa(sent[0]);
  deepEqual(ra.dstMac, GUEST_MAC);
  deepEqual(ra.dst, GUEST_LL);
  equal(ra.opts.mtu, 65520);
  equal(ra.opts.rdnssLifetime, 0xffffffff);
  deepEqual(rdnss(ra), NET.ip6!.dns);
  deepEqual(dnssl(ra), { lifetime: 0xffffffff, names: ["example.com", "lab.example.org"] });
  deepEqual(
    optionList(ra.icmp).map(([type]) => type),
    [NdpOpt.SrcLinkAddr, NdpOpt.Mtu, NdpOpt.PrefixInfo, NdpOpt.Rdnss, NDP_OPT_DNSSL],
  );
});

Deno.test("RS from the unspecified address: RA to all-nodes at 33:33:00:00:00:01", () => {
  const r = rig();
  const ndp = new NdpService();
  equal(input(ndp, r.ctx, routerSolicit(UNSPECIFIED)), ServiceVerdict.Replied);
  const ra = checkRa(r.sent()[0]);
  deepEqual(ra.dst, IP6_ALL_NODES);
  deepEqual([...ra.dstMac], [0x33, 0x33, 0, 0, 0, 1]);
});

Deno.test("advertise() sends an unsolicited RA to all-nodes", () => {
  const r = rig();
  const ndp = new NdpService();
  equal(ndp.advertise(r.ctx), true);
  equal(ndp.advertise(r.ctx), true);
  const sent = r.sent();
  equal(sent.length, 2);
  for (const f of sent) {
    const ra = checkRa(f);
    deepEqual(ra.dst, IP6_ALL_NODES);
    deepEqual([...ra.dstMac], [0x33, 0x33, 0, 0, 0, 1]);
  }
  equal(ndp.stats.sent, 2);
  equal(ndp.stats.received, 0);
});

Deno.test("without DHCPv6 the RA has neither M nor O", () => {
  const r = rig();
  new NdpService({ dhcpv6: false }).advertise(r.ctx);
  checkRa(r.sent()[0], false);
});

Deno.test("no DNS servers, no search list: no RDNSS, no DNSSL", () => {
  const r = rig(netWith({ search: [], ip6: { ...NET.ip6!, dns: [] } }));
  new NdpService().advertise(r.ctx);
  const ra = checkRa(r.sent()[0]);
  deepEqual(optionList(ra.icmp).map(([type]) => type), [
    NdpOpt.SrcLinkAddr,
    NdpOpt.Mtu,
    NdpOpt.PrefixInfo,
  ]);
});

Deno.test("an MTU below IPv6's minimum is not advertised", () => {
  const r = rig(netWith({ mtu: 576 }));
  new NdpService().advertise(r.ctx);
  const ra = checkRa(r.sent()[0]);
  equal(ra.opts.mtu, -1);
});

Deno.test("a long RDNSS list is cut to fit one 1280-byte packet, whole entries only", () => {
  const dns: Uint8Array[] = [];
  for (let i = 0; i < 100; i++) dns.push(v6(`2001:db8:53::${(i + 1).toString(16)}`));
  const r = rig(netWith({ mtu: 1280, ip6: { ...NET.ip6!, dns } }));
  new NdpService().advertise(r.ctx);
  const ra = checkRa(r.sent()[0]);
  ok(ra.ipLen <= 1280, `RA of ${ra.ipLen} bytes`);
  const servers = rdnss(ra);
  // 1240 bytes of ICMPv6: 64 fixed, 8 RDNSS header, 73 addresses of 16.
  equal(servers.length, 73);
  deepEqual(servers, dns.slice(0, 73));
  equal(dnssl(ra), null, "no room left for the search list");
});

/** `n` search domains of 26 bytes each in wire form (13 + 8 + 4 + 1). */
function manyDomains(n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) out.push(`domain-${String(i).padStart(5, "0")}.example.com`);
  return out;
}

Deno.test("a long search list is cut to the packet, whole names only", () => {
  const search = manyDomains(60);
  const r = rig(netWith({ mtu: 1280, search }));
  new NdpService().advertise(r.ctx);
  const ra = checkRa(r.sent()[0]);
  ok(ra.ipLen <= 1280, `RA of ${ra.ipLen} bytes`);
  deepEqual(rdnss(ra), NET.ip6!.dns);
  const names = dnssl(ra)!.names;
  // 1240 - 64 fixed - 40 RDNSS = 1136 bytes: 8 header + 43 names of 26 = 1126, padded 1128.
  equal(names.length, 43);
  deepEqual(names, search.slice(0, 43));
});

Deno.test("on a large MTU the search list is cut by DNSSL's 8-bit length instead", () => {
  const search = manyDomains(200);
  const r = rig(netWith({ search }));
  new NdpService().advertise(r.ctx);
  const ra = checkRa(r.sent()[0]);
  const opt = optionList(ra.icmp).find(([type]) => type === NDP_OPT_DNSSL)!;
  ok(opt[2] <= 255 * 8, `DNSSL of ${opt[2]} bytes`);
  // 8 header + 78 names of 26 = 2036, padded 2040; a 79th would need 2064.
  deepEqual(dnssl(ra)!.names, search.slice(0, 78));
});

Deno.test("ndpOptDnsslEmit pads to 8 bytes, skips invalid names and respects its limit", () => {
  const buf = new Uint8Array(64).fill(0xee);
  const n = ndpOptDnsslEmit(buf, 0, 600, ["a.example", "bad..name", "b.example"], 40);
  // 8 header + "a.example" (11) + "b.example" (11) = 30 → 32; both fit in 40.
  equal(n, 32);
  equal(buf[0], NDP_OPT_DNSSL);
  equal(buf[1], 4);
  equal(get32(buf, 4), 600);
  deepEqual(dnsNameListDecode(buf, 8, 22), ["a.example", "b.example"]);
  deepEqual([...buf.slice(30, 32)], [0, 0], "padding is zero");
  equal(buf[32], 0xee, "nothing written past the option");
  equal(ndpOptDnsslEmit(buf, 0, 600, ["a.example"], 16), 0, "no name fits in 16 bytes");
  equal(ndpOptDnsslEmit(buf, 0, 600, ["a.example", "b.example"], 24), 24, "one name of two");
});

// ---------------------------------------------------------------------------
// Switches.

Deno.test("RAs off: RS ignored, advertise() sends nothing, NS still answered", () => {
  const r = rig();
  const ndp = new NdpService({ routerAdvertisements: false });
  equal(input(ndp, r.ctx, routerSolicit()), ServiceVerdict.Ignored);
  equal(ndp.advertise(r.ctx), false);
  equal(input(ndp, r.ctx, resolve(OUR_LL)), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  equal(parseReply(sent[0]).ndp.type, Icmp6Type.NeighborAdvert);
});

Deno.test("NDP off or IPv6 off: everything passes, nothing is sent or counted", () => {
  for (
    const [what, net, opts] of [
      ["NDP off", NET, { enabled: false }],
      ["IPv6 off", netWith({ ip6: null }), {}],
    ] as const
  ) {
    const r = rig(net);
    const ndp = new NdpService(opts);
    equal(input(ndp, r.ctx, resolve(OUR_LL)), ServiceVerdict.Pass, what);
    equal(input(ndp, r.ctx, routerSolicit()), ServiceVerdict.Pass, what);
    equal(ndp.advertise(r.ctx), false, what);
    equal(r.sent().length, 0, what);
    deepEqual(ndp.stats, {
      received: 0,
      sent: 0,
      ignored: 0,
      drop: { hopLimit: 0, checksum: 0, malformed: 0 },
    });
  }
});
