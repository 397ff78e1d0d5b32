import { deepEqual, equal } from "node:assert/strict";
import { TAPIR_MAC } from "../../lib/net.ts";
import { ArpOp, ArpPacket, arpParse } from "../../lib/packet/arp.ts";
import { ETH_HEADER_LEN, EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { isWireError } from "../../lib/packet/wire.ts";
import { ArpService } from "../../lib/services/arp.ts";
import { ServiceVerdict } from "../../lib/services/service.ts";
import { arpFrame, GUEST_MAC, NET, netWith, rig, v4, views } from "./harness.ts";

const ZERO_MAC = new Uint8Array(6);
const GUEST_IP = NET.ip4!.addr;
const GATEWAY = NET.ip4!.gateway;

/** The guest asking "who has `target`?" as Linux does: broadcast, zero target MAC. */
function whoHas(target: number, sender = GUEST_IP): Uint8Array {
  return arpFrame(ArpOp.Request, GUEST_MAC, sender, ZERO_MAC, target);
}

/** Parses a reply frame: Ethernet header fields and the ARP repr. */
function parseReply(frame: Uint8Array) {
  const eth = EthFrame.checked(frame);
  if (isWireError(eth)) throw new Error(`bad Ethernet frame: ${eth}`);
  const pkt = ArpPacket.checked(frame, eth.payloadOffset, eth.payloadLen);
  if (isWireError(pkt)) throw new Error(`bad ARP packet: ${pkt}`);
  const arp = arpParse(pkt);
  if (isWireError(arp)) throw new Error(`bad ARP: ${arp}`);
  return { dst: frame.slice(0, 6), src: frame.slice(6, 12), type: eth.ethertype, arp };
}

Deno.test("a request for the gateway gets tapir's MAC, sent to the requester", () => {
  const r = rig();
  const arp = new ArpService();
  equal(arp.input(r.ctx, views(whoHas(GATEWAY)).eth), ServiceVerdict.Replied);
  const sent = r.sent();
  equal(sent.length, 1);
  equal(sent[0].length, ETH_HEADER_LEN + 28);
  const reply = parseReply(sent[0]);
  deepEqual(reply.dst, GUEST_MAC);
  deepEqual(reply.src, TAPIR_MAC);
  equal(reply.type, EtherType.Arp);
  equal(reply.arp.op, ArpOp.Reply);
  deepEqual(reply.arp.sha, TAPIR_MAC);
  equal(reply.arp.spa, GATEWAY);
  deepEqual(reply.arp.tha, GUEST_MAC);
  equal(reply.arp.tpa, GUEST_IP);
  deepEqual(arp.stats, { received: 1, sent: 1, ignored: 0, drop: { truncated: 0 } });
});

Deno.test("every other target is answered too: on-link, off-link, anywhere", () => {
  const r = rig();
  const arp = new ArpService();
  const targets = ["192.0.2.77", "192.0.2.255", "10.9.8.7", "203.0.113.1"].map(v4);
  for (const t of targets) equal(arp.input(r.ctx, views(whoHas(t)).eth), ServiceVerdict.Replied);
  const sent = r.sent();
  deepEqual(sent.map((f) => parseReply(f).arp.spa), targets);
  for (const f of sent) deepEqual(parseReply(f).arp.sha, TAPIR_MAC);
});

Deno.test("the reply goes to the requester's hardware address", () => {
  const r = rig();
  const other = new Uint8Array([0x52, 0x54, 0x00, 0x99, 0x88, 0x77]);
  const req = arpFrame(ArpOp.Request, other, v4("192.0.2.9"), ZERO_MAC, GATEWAY);
  equal(new ArpService().input(r.ctx, views(req).eth), ServiceVerdict.Replied);
  const reply = parseReply(r.sent()[0]);
  deepEqual(reply.dst, other);
  deepEqual(reply.arp.tha, other);
  equal(reply.arp.tpa, v4("192.0.2.9"));
});

Deno.test("unanswered by design: own address, gratuitous, probes, replies, other protocols", () => {
  const r = rig();
  const arp = new ArpService();
  const nonIpv4 = whoHas(GATEWAY);
  nonIpv4[ETH_HEADER_LEN + 1] = 6; // hardware type IEEE 802 instead of Ethernet
  const cases: [string, Uint8Array][] = [
    ["request for the guest's own address", whoHas(GUEST_IP)],
    ["gratuitous ARP", whoHas(GUEST_IP, GUEST_IP)],
    ["gratuitous ARP for another address", whoHas(v4("192.0.2.50"), v4("192.0.2.50"))],
    ["ARP probe (RFC 5227)", whoHas(v4("192.0.2.50"), 0)],
    ["ARP reply", arpFrame(ArpOp.Reply, GUEST_MAC, GUEST_IP, TAPIR_MAC, GATEWAY, TAPIR_MAC)],
    ["unknown operation", arpFrame(9, GUEST_MAC, GUEST_IP, ZERO_MAC, GATEWAY)],
    ["non-Ethernet hardware", nonIpv4],
  ];
  for (const [what, frame] of cases) {
    equal(arp.input(r.ctx, views(frame).eth), ServiceVerdict.Ignored, what);
  }
  equal(r.sent().length, 0);
  deepEqual(arp.stats, {
    received: cases.length,
    sent: 0,
    ignored: cases.length,
    drop: { truncated: 0 },
  });
});

Deno.test("a truncated ARP packet is dropped and counted", () => {
  const r = rig();
  const arp = new ArpService();
  const short = whoHas(GATEWAY).slice(0, ETH_HEADER_LEN + 20);
  equal(arp.input(r.ctx, views(short).eth), ServiceVerdict.Dropped);
  equal(r.sent().length, 0);
  equal(arp.stats.drop.truncated, 1);
  equal(arp.stats.received, 1);
});

Deno.test("switched off, with IPv4 off, or for other EtherTypes: frames pass uncounted", () => {
  const off = rig();
  const disabled = new ArpService({ enabled: false });
  equal(disabled.input(off.ctx, views(whoHas(GATEWAY)).eth), ServiceVerdict.Pass);
  equal(off.sent().length, 0);
  deepEqual(disabled.stats, { received: 0, sent: 0, ignored: 0, drop: { truncated: 0 } });

  const no4 = rig(netWith({ ip4: null }));
  const arp = new ArpService();
  equal(arp.input(no4.ctx, views(whoHas(GATEWAY)).eth), ServiceVerdict.Pass);
  equal(no4.sent().length, 0);

  const notArp = whoHas(GATEWAY);
  notArp[12] = 0x08;
  notArp[13] = 0x00;
  const eth = EthFrame.checked(notArp) as EthFrame;
  equal(arp.input(rig().ctx, eth), ServiceVerdict.Pass);
  equal(arp.stats.received, 0);
});

Deno.test("more requests than the send batch holds are all answered, in order", () => {
  const r = rig(); // batch of 8 slots: the send path flushes early
  const arp = new ArpService();
  const targets: number[] = [];
  for (let i = 0; i < 20; i++) targets.push(v4(`198.51.100.${i + 1}`));
  for (const t of targets) arp.input(r.ctx, views(whoHas(t)).eth);
  deepEqual(r.sent().map((f) => parseReply(f).arp.spa), targets);
  equal(arp.stats.sent, 20);
});
