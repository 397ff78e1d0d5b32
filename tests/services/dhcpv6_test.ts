import { deepEqual, equal, ok } from "node:assert/strict";
import { TAPIR_MAC } from "../../lib/net.ts";
import {
  DHCP6_ALL_SERVERS,
  DHCP6_CLIENT_PORT,
  DHCP6_HWTYPE_ETHERNET,
  DHCP6_SERVER_PORT,
  dhcp6DuidLltEmit,
  dhcp6DuidTime,
  dhcp6Emit,
  dhcp6EmitLen,
  dhcp6IaAddrNew,
  dhcp6IaNaNew,
  Dhcp6Message,
  Dhcp6MessageType,
  Dhcp6Option,
  dhcp6Parse,
  type Dhcp6Repr,
  dhcp6ReprNew,
  Dhcp6Status,
} from "../../lib/packet/dhcpv6.ts";
import { ETH_HEADER_LEN, EtherType } from "../../lib/packet/eth.ts";
import { IP6_HEADER_LEN, Ip6Packet } from "../../lib/packet/ip6.ts";
import { UdpPacket } from "../../lib/packet/udp.ts";
import { IpProto, isWireError, set16 } from "../../lib/packet/wire.ts";
import { Dhcp6Service } from "../../lib/services/dhcpv6.ts";
import { ServiceVerdict } from "../../lib/services/service.ts";
import { GUEST_LL, GUEST_MAC, NET, netWith, rig, udp6Frame, v6, views } from "./harness.ts";

const ADDR = NET.ip6!.addr;
const OUR_LL = NET.ip6!.ourLinkLocal;
const XID = 0x5a1e2b;
const IAID = 0x00123456;
/** tapir's DUID: DUID-LL (3), Ethernet (1), its MAC. */
const OUR_DUID = new Uint8Array([0, 3, 0, 1, ...TAPIR_MAC]);
const OTHER_DUID = new Uint8Array([0, 3, 0, 1, 0x52, 0x54, 0x00, 0xee, 0xee, 0xee]);

/** The client's DUID-LLT, as systemd-networkd or dhclient make one. */
const CLIENT_DUID = (() => {
  const d = new Uint8Array(14);
  dhcp6DuidLltEmit(d, 0, DHCP6_HWTYPE_ETHERNET, dhcp6DuidTime(1_700_000_000), GUEST_MAC);
  return d;
})();

/** A client message of `type` with CLIENTID, ELAPSED_TIME and ORO (DNS, domain list). */
function clientMessage(type: number, edit: (r: Dhcp6Repr) => void = () => {}): Uint8Array {
  const r = dhcp6ReprNew();
  r.msgType = type;
  r.transactionId = XID;
  r.clientId = CLIENT_DUID;
  r.elapsedTime = 0;
  r.oro = [Dhcp6Option.DnsServers, Dhcp6Option.DomainList];
  edit(r);
  const buf = new Uint8Array(dhcp6EmitLen(r));
  dhcp6Emit(buf, 0, r);
  return buf;
}

/** An IA_NA as a client sends it in a SOLICIT: IAID, T1 = T2 = 0, no addresses. */
const askIa = (r: Dhcp6Repr) => r.iaNa.push(dhcp6IaNaNew(IAID));
/** An IA_NA holding `addr`, as in a REQUEST, RENEW or CONFIRM. */
const holdIa = (addr: Uint8Array) => (r: Dhcp6Repr) => {
  const ia = dhcp6IaNaNew(IAID);
  ia.addrs.push(dhcp6IaAddrNew(addr, 0, 0));
  r.iaNa.push(ia);
};
const withServer = (duid: Uint8Array) => (r: Dhcp6Repr) => r.serverId = duid;
const both = (...edits: ((r: Dhcp6Repr) => void)[]) => (r: Dhcp6Repr) => edits.forEach((e) => e(r));

/** From the guest's link-local address port 546 to ff02::1:2 port 547, hop limit 1. */
function fromClient(payload: Uint8Array): Uint8Array {
  return udp6Frame(
    GUEST_MAC,
    GUEST_LL,
    DHCP6_ALL_SERVERS,
    DHCP6_CLIENT_PORT,
    DHCP6_SERVER_PORT,
    payload,
  );
}

const SOLICIT = () => fromClient(clientMessage(Dhcp6MessageType.Solicit, askIa));

function input(d: Dhcp6Service, ctx: ReturnType<typeof rig>["ctx"], frame: Uint8Array) {
  const v = views(frame);
  return d.input(ctx, v.eth, v.ip6, v.udp);
}

/** A reply parsed and checked at every layer, with its addressing checked against the spec. */
function parseReply(frame: Uint8Array) {
  deepEqual(frame.slice(0, 6), GUEST_MAC, "to the client's MAC");
  deepEqual(frame.slice(6, 12), TAPIR_MAC, "from tapir's MAC");
  equal((frame[12] << 8) | frame[13], EtherType.Ipv6);
  const ip = Ip6Packet.checked(frame, ETH_HEADER_LEN) as Ip6Packet;
  ok(!isWireError(ip), "IPv6 header");
  equal(ip.len, frame.length - ETH_HEADER_LEN, "payload length covers the frame");
  equal(ip.nextHeader, IpProto.Udp);
  ok(ip.srcEquals(OUR_LL), "from tapir's link-local address");
  ok(ip.dstEquals(GUEST_LL), "to the client's address");
  const udp = UdpPacket.checked(frame, ETH_HEADER_LEN + IP6_HEADER_LEN) as UdpPacket;
  ok(!isWireError(udp), "UDP header");
  equal(udp.srcPort, DHCP6_SERVER_PORT);
  equal(udp.dstPort, DHCP6_CLIENT_PORT);
  ok(udp.checksumOk6(frame, ip.srcOffset, ip.dstOffset), "UDP checksum");
  const msg = Dhcp6Message.checked(frame, udp.payloadOffset, udp.payloadLen) as Dhcp6Message;
  ok(!isWireError(msg), "DHCPv6 header");
  const d = dhcp6Parse(msg);
  if (isWireError(d)) throw new Error(`DHCPv6: ${d}`);
  equal(d.transactionId, XID);
  deepEqual(d.clientId, CLIENT_DUID, "CLIENTID echoed");
  deepEqual(d.serverId, OUR_DUID, "SERVERID is tapir's DUID-LL");
  return d;
}

/** Checks `d` assigns the guest's address in one IA_NA with the client's IAID. */
function checkAssigned(d: Dhcp6Repr): void {
  equal(d.iaNa.length, 1);
  const ia = d.iaNa[0];
  equal(ia.iaid, IAID);
  equal(ia.t1, 0);
  equal(ia.t2, 0);
  equal(ia.status, -1);
  equal(ia.addrs.length >= 1, true);
  deepEqual(ia.addrs[0].addr, ADDR);
  equal(ia.addrs[0].preferred, 0xffffffff);
  equal(ia.addrs[0].valid, 0xffffffff);
}

/** Checks `d` carries the DNS servers and the search list. */
function checkConfig(d: Dhcp6Repr): void {
  deepEqual(d.dnsServers, NET.ip6!.dns);
  deepEqual(d.domainList, ["example.com", "lab.example.org"]);
}

// ---------------------------------------------------------------------------

Deno.test("SOLICIT gets an ADVERTISE: the address, preference 255, DNS, search list", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  equal(input(dhcp6, r.ctx, SOLICIT()), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  const d = parseReply(sent[0]);
  equal(d.msgType, Dhcp6MessageType.Advertise);
  equal(d.preference, 255);
  equal(d.rapidCommit, false);
  equal(d.status, -1);
  checkAssigned(d);
  equal(d.iaNa[0].addrs.length, 1);
  checkConfig(d);
  deepEqual(dhcp6.stats, {
    received: 1,
    sent: 1,
    ignored: 0,
    drop: { malformed: 0, clientId: 0, serverId: 0 },
  });
});

Deno.test("SOLICIT with RAPID_COMMIT gets a REPLY with RAPID_COMMIT", () => {
  const r = rig();
  const solicit = clientMessage(Dhcp6MessageType.Solicit, both(askIa, (m) => m.rapidCommit = true));
  equal(input(new Dhcp6Service(), r.ctx, fromClient(solicit)), ServiceVerdict.Replied);
  const d = parseReply(r.sent()[0]);
  equal(d.msgType, Dhcp6MessageType.Reply);
  equal(d.rapidCommit, true);
  checkAssigned(d);
  checkConfig(d);
});

Deno.test("REQUEST, RENEW and REBIND get a REPLY with the address", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const msgs = [
    clientMessage(Dhcp6MessageType.Request, both(holdIa(ADDR), withServer(OUR_DUID))),
    clientMessage(Dhcp6MessageType.Renew, both(holdIa(ADDR), withServer(OUR_DUID))),
    clientMessage(Dhcp6MessageType.Rebind, holdIa(ADDR)),
  ];
  for (const m of msgs) equal(input(dhcp6, r.ctx, fromClient(m)), ServiceVerdict.Replied);
  for (const f of r.sent()) {
    const d = parseReply(f);
    equal(d.msgType, Dhcp6MessageType.Reply);
    checkAssigned(d);
    equal(d.iaNa[0].addrs.length, 1);
    checkConfig(d);
  }
  equal(dhcp6.stats.sent, 3);
});

Deno.test("RENEW of an old address: it comes back with lifetimes 0 after ours", () => {
  const r = rig();
  const old = v6("2001:db8:ffff::42");
  const renew = clientMessage(Dhcp6MessageType.Renew, both(holdIa(old), withServer(OUR_DUID)));
  input(new Dhcp6Service(), r.ctx, fromClient(renew));
  const d = parseReply(r.sent()[0]);
  checkAssigned(d);
  equal(d.iaNa[0].addrs.length, 2);
  deepEqual(d.iaNa[0].addrs[1].addr, old);
  equal(d.iaNa[0].addrs[1].preferred, 0);
  equal(d.iaNa[0].addrs[1].valid, 0);
});

Deno.test("a SOLICIT without IA_NA gets status NoAddrsAvail and no addresses", () => {
  const r = rig();
  input(new Dhcp6Service(), r.ctx, fromClient(clientMessage(Dhcp6MessageType.Solicit)));
  const d = parseReply(r.sent()[0]);
  equal(d.msgType, Dhcp6MessageType.Advertise);
  equal(d.status, Dhcp6Status.NoAddrsAvail);
  deepEqual(d.iaNa, []);
});

Deno.test("CONFIRM: Success when on-link, NotOnLink otherwise, no reply without addresses", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const onLink = clientMessage(Dhcp6MessageType.Confirm, holdIa(v6("2001:db8::1234")));
  const offLink = clientMessage(Dhcp6MessageType.Confirm, holdIa(v6("2001:db8:1::1234")));
  const empty = clientMessage(Dhcp6MessageType.Confirm, askIa);
  equal(input(dhcp6, r.ctx, fromClient(onLink)), ServiceVerdict.Replied);
  equal(input(dhcp6, r.ctx, fromClient(offLink)), ServiceVerdict.Replied);
  equal(input(dhcp6, r.ctx, fromClient(empty)), ServiceVerdict.Ignored);
  const [a, b] = r.sent().map(parseReply);
  equal(a.msgType, Dhcp6MessageType.Reply);
  equal(a.status, Dhcp6Status.Success);
  deepEqual(a.iaNa, []);
  equal(b.status, Dhcp6Status.NotOnLink);
  deepEqual(b.iaNa, []);
});

Deno.test("INFORMATION-REQUEST (with or without CLIENTID) gets the configuration, no IA", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  equal(
    input(dhcp6, r.ctx, fromClient(clientMessage(Dhcp6MessageType.InformationRequest))),
    ServiceVerdict.Replied,
  );
  const d = parseReply(r.sent()[0]);
  equal(d.msgType, Dhcp6MessageType.Reply);
  deepEqual(d.iaNa, []);
  equal(d.status, -1);
  checkConfig(d);

  const anonymous = clientMessage(Dhcp6MessageType.InformationRequest, (m) => m.clientId = null);
  equal(input(dhcp6, r.ctx, fromClient(anonymous)), ServiceVerdict.Replied);
  const frame = r.sent()[0];
  const udp = views(frame).udp;
  const a = dhcp6Parse(
    Dhcp6Message.checked(frame, udp.payloadOffset, udp.payloadLen) as Dhcp6Message,
  );
  if (isWireError(a)) throw new Error(`${a}`);
  equal(a.clientId, null, "no CLIENTID to echo");
  deepEqual(a.serverId, OUR_DUID);
  deepEqual(a.dnsServers, NET.ip6!.dns);
});

Deno.test("RELEASE and DECLINE get a REPLY with status Success", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  for (const type of [Dhcp6MessageType.Release, Dhcp6MessageType.Decline]) {
    const m = clientMessage(type, both(holdIa(ADDR), withServer(OUR_DUID)));
    equal(input(dhcp6, r.ctx, fromClient(m)), ServiceVerdict.Replied);
  }
  for (const f of r.sent()) {
    const d = parseReply(f);
    equal(d.msgType, Dhcp6MessageType.Reply);
    equal(d.status, Dhcp6Status.Success);
    deepEqual(d.iaNa, []);
    deepEqual(d.dnsServers, []);
  }
});

Deno.test("server identifier rules: required and ours, forbidden, or ours if present", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const cases: [string, Uint8Array][] = [
    [
      "REQUEST for another server",
      clientMessage(Dhcp6MessageType.Request, both(holdIa(ADDR), withServer(OTHER_DUID))),
    ],
    ["REQUEST without SERVERID", clientMessage(Dhcp6MessageType.Request, holdIa(ADDR))],
    [
      "RENEW for another server",
      clientMessage(Dhcp6MessageType.Renew, both(holdIa(ADDR), withServer(OTHER_DUID))),
    ],
    ["RELEASE without SERVERID", clientMessage(Dhcp6MessageType.Release, holdIa(ADDR))],
    [
      "SOLICIT with SERVERID",
      clientMessage(Dhcp6MessageType.Solicit, both(askIa, withServer(OUR_DUID))),
    ],
    [
      "REBIND with SERVERID",
      clientMessage(Dhcp6MessageType.Rebind, both(holdIa(ADDR), withServer(OUR_DUID))),
    ],
    [
      "INFORMATION-REQUEST for another server",
      clientMessage(Dhcp6MessageType.InformationRequest, withServer(OTHER_DUID)),
    ],
  ];
  for (const [what, m] of cases) {
    equal(input(dhcp6, r.ctx, fromClient(m)), ServiceVerdict.Dropped, what);
  }
  equal(r.sent().length, 0);
  deepEqual(dhcp6.stats.drop, { malformed: 0, clientId: 0, serverId: cases.length });

  const ours = clientMessage(Dhcp6MessageType.InformationRequest, withServer(OUR_DUID));
  equal(input(dhcp6, r.ctx, fromClient(ours)), ServiceVerdict.Replied);
});

Deno.test("no CLIENTID, malformed options, bad source: dropped by reason", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const noClient = clientMessage(Dhcp6MessageType.Solicit, both(askIa, (m) => m.clientId = null));
  const cut = clientMessage(Dhcp6MessageType.Solicit, askIa);
  const iaShort = clientMessage(Dhcp6MessageType.Solicit, askIa);
  // The IA_NA is the last option: claim it is 8 bytes (less than IAID + T1 + T2).
  const iaAt = iaShort.length - 16;
  equal((iaShort[iaAt] << 8) | iaShort[iaAt + 1], Dhcp6Option.IaNa);
  set16(iaShort, iaAt + 2, 8);
  const fromUnspecified = udp6Frame(
    GUEST_MAC,
    new Uint8Array(16),
    DHCP6_ALL_SERVERS,
    DHCP6_CLIENT_PORT,
    DHCP6_SERVER_PORT,
    clientMessage(Dhcp6MessageType.Solicit, askIa),
  );
  equal(input(dhcp6, r.ctx, fromClient(noClient)), ServiceVerdict.Dropped);
  equal(input(dhcp6, r.ctx, fromClient(cut.slice(0, cut.length - 3))), ServiceVerdict.Dropped);
  equal(input(dhcp6, r.ctx, fromClient(iaShort.slice(0, iaAt + 12))), ServiceVerdict.Dropped);
  equal(input(dhcp6, r.ctx, fromClient(new Uint8Array([1, 0, 0]))), ServiceVerdict.Dropped);
  equal(input(dhcp6, r.ctx, fromUnspecified), ServiceVerdict.Dropped);
  equal(r.sent().length, 0);
  deepEqual(dhcp6.stats.drop, { malformed: 4, clientId: 1, serverId: 0 });
});

Deno.test("server and relay messages from the guest are ignored", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const relay = new Uint8Array(34);
  relay[0] = Dhcp6MessageType.RelayForw;
  for (
    const m of [
      clientMessage(Dhcp6MessageType.Advertise, withServer(OTHER_DUID)),
      clientMessage(Dhcp6MessageType.Reply, withServer(OTHER_DUID)),
      clientMessage(Dhcp6MessageType.Reconfigure, withServer(OTHER_DUID)),
      relay,
    ]
  ) equal(input(dhcp6, r.ctx, fromClient(m)), ServiceVerdict.Ignored);
  equal(r.sent().length, 0);
  equal(dhcp6.stats.ignored, 4);
});

Deno.test("other ports, DHCPv6 off, IPv6 off: datagrams pass, nothing is counted", () => {
  const r = rig();
  const dhcp6 = new Dhcp6Service();
  const mdns = udp6Frame(GUEST_MAC, GUEST_LL, v6("ff02::fb"), 5353, 5353, new Uint8Array(12));
  equal(input(dhcp6, r.ctx, mdns), ServiceVerdict.Pass);
  const off = new Dhcp6Service({ enabled: false });
  equal(input(off, r.ctx, SOLICIT()), ServiceVerdict.Pass);
  const no6 = rig(netWith({ ip6: null }));
  equal(input(dhcp6, no6.ctx, SOLICIT()), ServiceVerdict.Pass);
  equal(r.sent().length + no6.sent().length, 0);
  equal(dhcp6.stats.received + off.stats.received, 0);
});

Deno.test("no DNS servers, no search list: neither option", () => {
  const r = rig(netWith({ search: [], ip6: { ...NET.ip6!, dns: [] } }));
  input(new Dhcp6Service(), r.ctx, SOLICIT());
  const d = parseReply(r.sent()[0]);
  deepEqual(d.dnsServers, []);
  deepEqual(d.domainList, []);
  checkAssigned(d);
});

Deno.test("lists too long for one packet give way: search list first, then servers", () => {
  const dns: Uint8Array[] = [];
  for (let i = 0; i < 100; i++) dns.push(v6(`2001:db8:53::${(i + 1).toString(16)}`));
  const search: string[] = [];
  for (let i = 0; i < 10; i++) search.push(`search-domain-${i}.example.com`);
  const r = rig(netWith({ mtu: 1280, search, ip6: { ...NET.ip6!, dns } }));
  input(new Dhcp6Service(), r.ctx, SOLICIT());
  const frame = r.sent()[0];
  ok(frame.length - ETH_HEADER_LEN <= 1280, `${frame.length - ETH_HEADER_LEN} bytes of IPv6`);
  const d = parseReply(frame);
  checkAssigned(d);
  deepEqual(d.domainList, []);
  ok(d.dnsServers.length > 0 && d.dnsServers.length < dns.length);
  deepEqual(d.dnsServers, dns.slice(0, d.dnsServers.length));
});

Deno.test("--dhcp-bootfile: OPT_BOOTFILE_URL goes to a client whose ORO asks for it, and only then", () => {
  const url = "http://[2001:db8::1]:8080/boot.ipxe";
  const r = rig(netWith({ bootfile: url }));
  const dhcp6 = new Dhcp6Service();
  const asking = (r: Dhcp6Repr) => r.oro.push(Dhcp6Option.BootfileUrl);
  input(dhcp6, r.ctx, fromClient(clientMessage(Dhcp6MessageType.Solicit, both(askIa, asking))));
  equal(parseReply(r.sent()[0]).bootfileUrl, url);
  input(dhcp6, r.ctx, SOLICIT());
  equal(parseReply(r.sent()[0]).bootfileUrl, "", "not asked for");
});
