import { deepEqual, equal, ok } from "node:assert/strict";
import { TAPIR_MAC } from "../../lib/net.ts";
import {
  BootpOp,
  DHCP_CLIENT_PORT,
  DHCP_FLAG_BROADCAST,
  DHCP_SERVER_PORT,
  dhcpEmit,
  dhcpEmitLen,
  DhcpMessage,
  DhcpMessageType,
  DhcpOption,
  dhcpParse,
  type DhcpRepr,
  dhcpReprNew,
} from "../../lib/packet/dhcp.ts";
import { ETH_BROADCAST, ETH_HEADER_LEN, EtherType } from "../../lib/packet/eth.ts";
import { Ip4Packet, ip4Parse } from "../../lib/packet/ip4.ts";
import { UdpPacket } from "../../lib/packet/udp.ts";
import { IpProto, isWireError } from "../../lib/packet/wire.ts";
import { DhcpService } from "../../lib/services/dhcp.ts";
import { ServiceVerdict } from "../../lib/services/service.ts";
import { GUEST_MAC, NET, netWith, rig, udp4Frame, v4, views } from "./harness.ts";

const ADDR = NET.ip4!.addr;
const GATEWAY = NET.ip4!.gateway;
const BROADCAST = 0xffffffff;
const XID = 0x3903f326;
/** What busybox udhcpc 1.36 asks for by default. */
const UDHCPC_PRL = [1, 3, 6, 12, 15, 28, 42, 51, 54, 119];

/** A client message of `type` as udhcpc builds it: client id, max size 576, request list. */
function clientMessage(type: number, edit: (r: DhcpRepr) => void = () => {}): Uint8Array {
  const r = dhcpReprNew();
  r.op = BootpOp.Request;
  r.xid = XID;
  r.chaddr.set(GUEST_MAC);
  r.messageType = type;
  r.clientId = new Uint8Array([1, ...GUEST_MAC]);
  r.maxMessageSize = 576;
  r.paramRequestList = UDHCPC_PRL;
  r.hostname = "guest";
  edit(r);
  const buf = new Uint8Array(dhcpEmitLen(r));
  dhcpEmit(buf, 0, r);
  return buf;
}

/** Broadcast from 0.0.0.0:68 to 255.255.255.255:67, as an unconfigured client sends. */
function fromUnconfigured(payload: Uint8Array): Uint8Array {
  return udp4Frame(
    ETH_BROADCAST,
    GUEST_MAC,
    0,
    BROADCAST,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    payload,
  );
}

/** Unicast from the guest's address to the server (renewing). */
function fromConfigured(payload: Uint8Array): Uint8Array {
  return udp4Frame(
    TAPIR_MAC,
    GUEST_MAC,
    ADDR,
    GATEWAY,
    DHCP_CLIENT_PORT,
    DHCP_SERVER_PORT,
    payload,
  );
}

const DISCOVER = () => fromUnconfigured(clientMessage(DhcpMessageType.Discover));
const REQUEST = () =>
  fromUnconfigured(clientMessage(DhcpMessageType.Request, (r) => {
    r.requestedIp = ADDR;
    r.serverId = GATEWAY;
  }));

function input(dhcp: DhcpService, ctx: ReturnType<typeof rig>["ctx"], frame: Uint8Array) {
  const v = views(frame);
  return dhcp.input(ctx, v.eth, v.ip4, v.udp);
}

/** A reply frame parsed and checked at every layer. */
function parseReply(frame: Uint8Array) {
  equal((frame[12] << 8) | frame[13], EtherType.Ipv4, "EtherType");
  const ip = Ip4Packet.checked(frame, ETH_HEADER_LEN) as Ip4Packet;
  ok(!isWireError(ip), "IPv4 header");
  equal(ip.len, frame.length - ETH_HEADER_LEN, "total length covers the frame");
  const ipr = ip4Parse(ip);
  if (isWireError(ipr)) throw new Error(`IPv4: ${ipr}`); // header checksum checked here
  equal(ipr.proto, IpProto.Udp);
  const udp = UdpPacket.checked(frame, ip.payloadOffset, ip.payloadLen) as UdpPacket;
  ok(!isWireError(udp), "UDP header");
  ok(udp.checksum !== 0, "UDP checksum present");
  ok(udp.checksumOk4(ipr.src, ipr.dst), "UDP checksum");
  const msg = DhcpMessage.checked(frame, udp.payloadOffset, udp.payloadLen) as DhcpMessage;
  ok(!isWireError(msg), "DHCP message");
  const dhcp = dhcpParse(msg);
  if (isWireError(dhcp)) throw new Error(`DHCP: ${dhcp}`);
  return {
    dstMac: frame.slice(0, 6),
    srcMac: frame.slice(6, 12),
    ip: ipr,
    srcPort: udp.srcPort,
    dstPort: udp.dstPort,
    dhcp,
  };
}

/** Checks the addressing of a reply: from the gateway and tapir's MAC, 67 → 68. */
function checkFrom(reply: ReturnType<typeof parseReply>): void {
  deepEqual(reply.srcMac, TAPIR_MAC);
  equal(reply.ip.src, GATEWAY);
  equal(reply.srcPort, DHCP_SERVER_PORT);
  equal(reply.dstPort, DHCP_CLIENT_PORT);
  equal(reply.dhcp.op, BootpOp.Reply);
  equal(reply.dhcp.xid, XID);
  deepEqual(reply.dhcp.chaddr.slice(0, 6), GUEST_MAC);
  equal(reply.dhcp.giaddr, 0);
}

/** Checks the configuration options of an OFFER or ACK for `NET`. */
function checkConfig(d: DhcpRepr, lease: boolean): void {
  equal(d.serverId, GATEWAY);
  equal(d.leaseTime, lease ? 0xffffffff : -1);
  equal(d.subnetMask, v4("255.255.255.0"));
  deepEqual(d.routers, [GATEWAY]);
  deepEqual(d.dnsServers, NET.ip4!.dns);
  deepEqual(d.domainSearch, ["example.com", "lab.example.org"]);
  equal(d.mtu, 65520);
  deepEqual(d.clientId, new Uint8Array([1, ...GUEST_MAC]), "client identifier echoed");
}

/** Checks a reply went to the limited broadcast address and the broadcast MAC. */
function checkBroadcast(reply: ReturnType<typeof parseReply>): void {
  deepEqual(reply.dstMac, ETH_BROADCAST);
  equal(reply.ip.dst, BROADCAST);
}

// ---------------------------------------------------------------------------

Deno.test("udhcpc's DISCOVER gets a broadcast OFFER of the address, with the configuration", () => {
  const r = rig();
  const dhcp = new DhcpService();
  equal(input(dhcp, r.ctx, DISCOVER()), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  const offer = parseReply(sent[0]);
  checkFrom(offer);
  checkBroadcast(offer);
  equal(offer.dhcp.messageType, DhcpMessageType.Offer);
  equal(offer.dhcp.yiaddr, ADDR);
  equal(offer.dhcp.ciaddr, 0);
  checkConfig(offer.dhcp, true);
  ok(sent[0].length - ETH_HEADER_LEN <= 576, "fits what the client accepts");
  deepEqual(dhcp.stats, { received: 1, sent: 1, ignored: 0, drop: { malformed: 0 } });
});

Deno.test("udhcpc's REQUEST for the offered address is ACKed, broadcast", () => {
  const r = rig();
  const dhcp = new DhcpService();
  equal(input(dhcp, r.ctx, REQUEST()), ServiceVerdict.Replied);
  const ack = parseReply(r.sent()[0]);
  checkFrom(ack);
  checkBroadcast(ack);
  equal(ack.dhcp.messageType, DhcpMessageType.Ack);
  equal(ack.dhcp.yiaddr, ADDR);
  checkConfig(ack.dhcp, true);
});

Deno.test("INIT-REBOOT (requested address, no server id) is ACKed", () => {
  const r = rig();
  const req = clientMessage(DhcpMessageType.Request, (m) => m.requestedIp = ADDR);
  equal(input(new DhcpService(), r.ctx, fromUnconfigured(req)), ServiceVerdict.Replied);
  equal(parseReply(r.sent()[0]).dhcp.messageType, DhcpMessageType.Ack);
});

Deno.test("a REQUEST for another address gets a NAK, broadcast, without configuration", () => {
  const r = rig();
  const req = clientMessage(DhcpMessageType.Request, (m) => {
    m.requestedIp = v4("10.0.2.15"); // a lease from another network
  });
  equal(input(new DhcpService(), r.ctx, fromUnconfigured(req)), ServiceVerdict.Replied);
  const nak = parseReply(r.sent()[0]);
  checkFrom(nak);
  checkBroadcast(nak);
  equal(nak.dhcp.messageType, DhcpMessageType.Nak);
  equal(nak.dhcp.yiaddr, 0);
  equal(nak.dhcp.ciaddr, 0);
  equal(nak.dhcp.serverId, GATEWAY);
  equal(nak.dhcp.leaseTime, -1);
  equal(nak.dhcp.subnetMask, -1);
  deepEqual(nak.dhcp.routers, []);
  deepEqual(nak.dhcp.dnsServers, []);
  equal(nak.dhcp.mtu, -1);
});

Deno.test("a REQUEST naming another server is the client declining: no reply", () => {
  const r = rig();
  const dhcp = new DhcpService();
  const req = clientMessage(DhcpMessageType.Request, (m) => {
    m.requestedIp = ADDR;
    m.serverId = v4("192.0.2.254");
  });
  equal(input(dhcp, r.ctx, fromUnconfigured(req)), ServiceVerdict.Ignored);
  equal(r.sent().length, 0);
  equal(dhcp.stats.ignored, 1);
});

Deno.test("renewing (ciaddr, unicast): ACK unicast to ciaddr and the client's MAC", () => {
  const r = rig();
  const req = clientMessage(DhcpMessageType.Request, (m) => m.ciaddr = ADDR);
  equal(input(new DhcpService(), r.ctx, fromConfigured(req)), ServiceVerdict.Replied);
  const ack = parseReply(r.sent()[0]);
  checkFrom(ack);
  deepEqual(ack.dstMac, GUEST_MAC);
  equal(ack.ip.dst, ADDR);
  equal(ack.dhcp.messageType, DhcpMessageType.Ack);
  equal(ack.dhcp.ciaddr, ADDR);
  equal(ack.dhcp.yiaddr, ADDR);
  checkConfig(ack.dhcp, true);
});

Deno.test("renewing another address: NAK, broadcast", () => {
  const r = rig();
  const other = v4("192.0.2.99");
  const req = clientMessage(DhcpMessageType.Request, (m) => m.ciaddr = other);
  const frame = udp4Frame(TAPIR_MAC, GUEST_MAC, other, GATEWAY, 68, 67, req);
  equal(input(new DhcpService(), r.ctx, frame), ServiceVerdict.Replied);
  const nak = parseReply(r.sent()[0]);
  equal(nak.dhcp.messageType, DhcpMessageType.Nak);
  checkBroadcast(nak);
});

Deno.test("the BROADCAST flag is honoured even when the client has an address", () => {
  const r = rig();
  const req = clientMessage(DhcpMessageType.Request, (m) => {
    m.ciaddr = ADDR;
    m.flags = DHCP_FLAG_BROADCAST;
  });
  input(new DhcpService(), r.ctx, fromConfigured(req));
  const ack = parseReply(r.sent()[0]);
  checkBroadcast(ack);
  equal(ack.dhcp.flags, DHCP_FLAG_BROADCAST, "flags echoed");
});

Deno.test("INFORM: ACK with configuration, no address, no lease time, unicast", () => {
  const r = rig();
  const inform = clientMessage(DhcpMessageType.Inform, (m) => m.ciaddr = ADDR);
  equal(input(new DhcpService(), r.ctx, fromConfigured(inform)), ServiceVerdict.Replied);
  const ack = parseReply(r.sent()[0]);
  checkFrom(ack);
  deepEqual(ack.dstMac, GUEST_MAC);
  equal(ack.ip.dst, ADDR);
  equal(ack.dhcp.messageType, DhcpMessageType.Ack);
  equal(ack.dhcp.yiaddr, 0);
  equal(ack.dhcp.ciaddr, ADDR);
  checkConfig(ack.dhcp, false);
});

Deno.test("RELEASE, DECLINE, BOOTREPLY, BOOTP and relayed messages get no reply", () => {
  const r = rig();
  const dhcp = new DhcpService();
  const bootp = clientMessage(DhcpMessageType.Discover);
  bootp.fill(0, 240); // no options at all: no message type
  bootp[240] = DhcpOption.End;
  const noCookie = clientMessage(DhcpMessageType.Discover);
  noCookie[236] = 0;
  const cases: [string, Uint8Array][] = [
    ["RELEASE", fromConfigured(clientMessage(DhcpMessageType.Release, (m) => m.ciaddr = ADDR))],
    [
      "DECLINE",
      fromUnconfigured(clientMessage(DhcpMessageType.Decline, (m) => {
        m.requestedIp = ADDR;
        m.serverId = GATEWAY;
      })),
    ],
    [
      "BOOTREPLY",
      fromUnconfigured(clientMessage(DhcpMessageType.Offer, (m) => m.op = BootpOp.Reply)),
    ],
    ["an OFFER sent as a request", fromUnconfigured(clientMessage(DhcpMessageType.Offer))],
    ["BOOTP without a message type", fromUnconfigured(bootp)],
    ["BOOTP without the magic cookie", fromUnconfigured(noCookie)],
    [
      "relayed",
      fromUnconfigured(
        clientMessage(DhcpMessageType.Discover, (m) => m.giaddr = v4("198.51.100.1")),
      ),
    ],
    ["token ring", fromUnconfigured(clientMessage(DhcpMessageType.Discover, (m) => m.htype = 6))],
  ];
  for (const [what, f] of cases) equal(input(dhcp, r.ctx, f), ServiceVerdict.Ignored, what);
  equal(r.sent().length, 0);
  deepEqual(dhcp.stats, {
    received: cases.length,
    sent: 0,
    ignored: cases.length,
    drop: { malformed: 0 },
  });
});

Deno.test("malformed messages are dropped and counted", () => {
  const r = rig();
  const dhcp = new DhcpService();
  const discover = clientMessage(DhcpMessageType.Discover);
  const noEnd = discover.slice(0, 243); // cut inside the options: no END
  const badType = clientMessage(DhcpMessageType.Discover);
  equal(badType[240], DhcpOption.MessageType);
  badType[241] = 2; // message type of 2 bytes
  const cases: [string, Uint8Array][] = [
    ["shorter than the fixed header", discover.slice(0, 200)],
    ["options cut off before END", noEnd],
    ["message type of the wrong size", badType],
  ];
  for (const [what, payload] of cases) {
    equal(input(dhcp, r.ctx, fromUnconfigured(payload)), ServiceVerdict.Dropped, what);
  }
  equal(r.sent().length, 0);
  equal(dhcp.stats.drop.malformed, cases.length);
});

Deno.test("other ports, DHCP off, IPv4 off: datagrams pass, nothing is counted", () => {
  const dns = udp4Frame(TAPIR_MAC, GUEST_MAC, ADDR, GATEWAY, 40000, 53, new Uint8Array(12));
  const toClientPort = fromUnconfigured(clientMessage(DhcpMessageType.Discover));
  toClientPort[ETH_HEADER_LEN + 20 + 3] = 68; // destination port 68
  const r = rig();
  const dhcp = new DhcpService();
  equal(input(dhcp, r.ctx, dns), ServiceVerdict.Pass);
  equal(
    dhcp.input(r.ctx, views(toClientPort).eth, views(toClientPort).ip4, views(toClientPort).udp),
    ServiceVerdict.Pass,
  );
  const off = new DhcpService({ enabled: false });
  equal(input(off, r.ctx, DISCOVER()), ServiceVerdict.Pass);
  const no4 = rig(netWith({ ip4: null }));
  equal(input(dhcp, no4.ctx, DISCOVER()), ServiceVerdict.Pass);
  equal(r.sent().length + no4.sent().length, 0);
  equal(dhcp.stats.received + off.stats.received, 0);
});

Deno.test("the MTU option is capped at 65535 and left out below 68", () => {
  for (
    const [mtu, expected] of [[1500, 1500], [65535, 65535], [70000, 65535], [68, 68], [67, -1]]
  ) {
    const r = rig(netWith({ mtu }));
    input(new DhcpService(), r.ctx, DISCOVER());
    equal(parseReply(r.sent()[0]).dhcp.mtu, expected, `MTU ${mtu}`);
  }
});

Deno.test("no DNS servers and no search list: neither option", () => {
  const r = rig(netWith({ search: [], ip4: { ...NET.ip4!, dns: [] } }));
  input(new DhcpService(), r.ctx, DISCOVER());
  const d = parseReply(r.sent()[0]).dhcp;
  deepEqual(d.dnsServers, []);
  deepEqual(d.domainSearch, []);
  equal(d.subnetMask, v4("255.255.255.0"));
});

Deno.test("a search list too big for 576 bytes is left out, unless the client takes more", () => {
  const search: string[] = [];
  for (let i = 0; i < 20; i++) search.push(`search-domain-${i}.example.com`);
  const r = rig(netWith({ search }));
  const dhcp = new DhcpService();
  input(dhcp, r.ctx, DISCOVER());
  const small = r.sent()[0];
  ok(small.length - ETH_HEADER_LEN <= 576);
  deepEqual(parseReply(small).dhcp.domainSearch, []);
  deepEqual(parseReply(small).dhcp.dnsServers, NET.ip4!.dns, "the rest is still there");

  const big = clientMessage(DhcpMessageType.Discover, (m) => m.maxMessageSize = 1500);
  input(dhcp, r.ctx, fromUnconfigured(big));
  deepEqual(parseReply(r.sent()[0]).dhcp.domainSearch, search);
});

Deno.test("a /32 and a /8 get the right subnet masks", () => {
  for (
    const [prefixLen, mask] of [[32, "255.255.255.255"], [8, "255.0.0.0"], [0, "0.0.0.0"]] as const
  ) {
    const r = rig(netWith({ ip4: { ...NET.ip4!, prefixLen } }));
    input(new DhcpService(), r.ctx, DISCOVER());
    equal(parseReply(r.sent()[0]).dhcp.subnetMask, v4(mask), `/${prefixLen}`);
  }
});

Deno.test("--dhcp-bootfile: OFFER and ACK name the boot file (option 67), a NAK does not", () => {
  const url = "http://192.0.2.1:8080/boot.ipxe";
  const r = rig(netWith({ bootfile: url }));
  const dhcp = new DhcpService();
  input(dhcp, r.ctx, DISCOVER());
  equal(parseReply(r.sent()[0]).dhcp.bootfile, url, "OFFER");
  input(dhcp, r.ctx, REQUEST());
  equal(parseReply(r.sent()[0]).dhcp.bootfile, url, "ACK");
  input(
    dhcp,
    r.ctx,
    fromUnconfigured(clientMessage(DhcpMessageType.Request, (m) => {
      m.requestedIp = v4("192.0.2.99");
    })),
  );
  const nak = parseReply(r.sent()[0]).dhcp;
  equal(nak.messageType, DhcpMessageType.Nak);
  equal(nak.bootfile, "");
  const none = rig();
  input(new DhcpService(), none.ctx, DISCOVER());
  equal(parseReply(none.sent()[0]).dhcp.bootfile, "", "without the option, none");
});
