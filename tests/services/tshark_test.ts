/**
 * Cross-check with an independent decoder: every kind of reply the services
 * send is written to a pcap file, and Wireshark's tshark must decode each as
 * the protocol and message it is meant to be, with good checksums and
 * nothing malformed.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { TAPIR_MAC } from "../../lib/net.ts";
import { ArpOp } from "../../lib/packet/arp.ts";
import {
  BootpOp,
  dhcpEmit,
  dhcpEmitLen,
  DhcpMessageType,
  dhcpReprNew,
} from "../../lib/packet/dhcp.ts";
import {
  DHCP6_ALL_SERVERS,
  DHCP6_HWTYPE_ETHERNET,
  dhcp6DuidLltEmit,
  dhcp6Emit,
  dhcp6EmitLen,
  dhcp6IaNaNew,
  Dhcp6MessageType,
  Dhcp6Option,
  dhcp6ReprNew,
} from "../../lib/packet/dhcpv6.ts";
import { ETH_BROADCAST } from "../../lib/packet/eth.ts";
import {
  Icmp6Type,
  ndpEmit,
  NdpOpt,
  ndpOptLinkAddrEmit,
  ndpReprNew,
} from "../../lib/packet/icmp6.ts";
import { ip6SolicitedNode } from "../../lib/packet/ip6.ts";
import { PcapWriter } from "../../lib/pcap.ts";
import { ArpService } from "../../lib/services/arp.ts";
import { DhcpService } from "../../lib/services/dhcp.ts";
import { Dhcp6Service } from "../../lib/services/dhcpv6.ts";
import { NdpService } from "../../lib/services/ndp.ts";
import {
  arpFrame,
  GUEST_LL,
  GUEST_MAC,
  icmp6Frame,
  NET,
  rig,
  TSHARK,
  udp4Frame,
  udp6Frame,
  v6,
  views,
} from "./harness.ts";

const ADDR4 = NET.ip4!.addr;
const GW4 = NET.ip4!.gateway;
const OUR_LL = NET.ip6!.ourLinkLocal;

function dhcpRequest(type: number, requested = -1, serverId = -1): Uint8Array {
  const r = dhcpReprNew();
  r.op = BootpOp.Request;
  r.xid = 0x12345678;
  r.chaddr.set(GUEST_MAC);
  r.messageType = type;
  r.clientId = new Uint8Array([1, ...GUEST_MAC]);
  r.maxMessageSize = 576;
  r.paramRequestList = [1, 3, 6, 15, 26, 51, 54, 119];
  r.requestedIp = requested;
  r.serverId = serverId;
  const b = new Uint8Array(dhcpEmitLen(r));
  dhcpEmit(b, 0, r);
  return udp4Frame(ETH_BROADCAST, GUEST_MAC, 0, 0xffffffff, 68, 67, b);
}

function dhcp6Request(type: number, rapidCommit = false): Uint8Array {
  const duid = new Uint8Array(14);
  dhcp6DuidLltEmit(duid, 0, DHCP6_HWTYPE_ETHERNET, 0x2a000000, GUEST_MAC);
  const r = dhcp6ReprNew();
  r.msgType = type;
  r.transactionId = 0xabcdef;
  r.clientId = duid;
  r.elapsedTime = 0;
  r.oro = [Dhcp6Option.DnsServers, Dhcp6Option.DomainList];
  r.rapidCommit = rapidCommit;
  if (type !== Dhcp6MessageType.InformationRequest) r.iaNa.push(dhcp6IaNaNew(7));
  const b = new Uint8Array(dhcp6EmitLen(r));
  dhcp6Emit(b, 0, r);
  return udp6Frame(GUEST_MAC, GUEST_LL, DHCP6_ALL_SERVERS, 546, 547, b);
}

function ndpMessage(type: number, target: Uint8Array | null): Uint8Array {
  const b = new Uint8Array(32);
  const r = ndpReprNew();
  r.type = type;
  if (target) r.target.set(target);
  let n = ndpEmit(b, 0, r);
  n += ndpOptLinkAddrEmit(b, n, NdpOpt.SrcLinkAddr, GUEST_MAC);
  return b.slice(0, n);
}

/** Runs one exchange of each kind through the services; returns every reply sent. */
function replies(): Uint8Array[] {
  const r = rig();
  const arp = new ArpService();
  const ndp = new NdpService();
  const dhcp = new DhcpService();
  const dhcp6 = new Dhcp6Service();
  const ctx = r.ctx;

  arp.input(ctx, views(arpFrame(ArpOp.Request, GUEST_MAC, ADDR4, new Uint8Array(6), GW4)).eth);

  const sn = new Uint8Array(16);
  ip6SolicitedNode(sn, 0, OUR_LL, 0);
  for (
    const f of [
      icmp6Frame(GUEST_MAC, GUEST_LL, sn, ndpMessage(Icmp6Type.NeighborSolicit, OUR_LL)),
      icmp6Frame(GUEST_MAC, GUEST_LL, v6("ff02::2"), ndpMessage(Icmp6Type.RouterSolicit, null)),
    ]
  ) {
    const v = views(f);
    ndp.input(ctx, v.eth, v.ip6, v.icmp6);
  }
  ndp.advertise(ctx);

  for (
    const f of [
      dhcpRequest(DhcpMessageType.Discover),
      dhcpRequest(DhcpMessageType.Request, ADDR4, GW4),
      dhcpRequest(DhcpMessageType.Request, 0x0a00020f),
    ]
  ) {
    const v = views(f);
    dhcp.input(ctx, v.eth, v.ip4, v.udp);
  }

  for (
    const f of [
      dhcp6Request(Dhcp6MessageType.Solicit),
      dhcp6Request(Dhcp6MessageType.Solicit, true),
      dhcp6Request(Dhcp6MessageType.InformationRequest),
    ]
  ) {
    const v = views(f);
    dhcp6.input(ctx, v.eth, v.ip6, v.udp);
  }
  return r.sent();
}

/** The expected decode of each reply, in order: protocol stack and message. */
const EXPECTED = [
  { protocols: "eth:ethertype:arp", message: "arp reply" },
  { protocols: "eth:ethertype:ipv6:icmpv6", message: "icmpv6 136" },
  { protocols: "eth:ethertype:ipv6:icmpv6", message: "icmpv6 134" },
  { protocols: "eth:ethertype:ipv6:icmpv6", message: "icmpv6 134" },
  { protocols: "eth:ethertype:ip:udp:dhcp", message: "dhcp 2" },
  { protocols: "eth:ethertype:ip:udp:dhcp", message: "dhcp 5" },
  { protocols: "eth:ethertype:ip:udp:dhcp", message: "dhcp 6" },
  { protocols: "eth:ethertype:ipv6:udp:dhcpv6", message: "dhcpv6 2" },
  { protocols: "eth:ethertype:ipv6:udp:dhcpv6", message: "dhcpv6 7" },
  { protocols: "eth:ethertype:ipv6:udp:dhcpv6", message: "dhcpv6 7" },
];

const CHECKSUM_OPTS = [
  "-o",
  "ip.check_checksum:TRUE",
  "-o",
  "udp.check_checksum:TRUE",
  "-o",
  "tcp.check_checksum:TRUE",
];

function tshark(args: string[]): string {
  const out = new Deno.Command(TSHARK!, { args, stdout: "piped", stderr: "piped" }).outputSync();
  const err = new TextDecoder().decode(out.stderr);
  const complaints = err.split("\n").filter((l) =>
    l.trim() !== "" && !/^Running as user "root"/.test(l)
  );
  equal(out.code, 0, err);
  deepEqual(complaints, [], "tshark complained");
  return new TextDecoder().decode(out.stdout);
}

Deno.test({
  name: "tshark decodes every reply as its protocol and message, checksums good, none malformed",
  ignore: TSHARK === null,
  fn() {
    const frames = replies();
    equal(frames.length, EXPECTED.length);
    for (const f of frames) deepEqual(f.slice(6, 12), TAPIR_MAC);
    const path = Deno.makeTempFileSync({ suffix: ".pcap" });
    try {
      const w = PcapWriter.open(path);
      for (const f of frames) w.frame(f, f.length);
      w.close();

      const fields = tshark([
        "-r",
        path,
        ...CHECKSUM_OPTS,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "frame.protocols",
        "-e",
        "arp.opcode",
        "-e",
        "icmpv6.type",
        "-e",
        "dhcp.option.dhcp",
        "-e",
        "dhcpv6.msgtype",
        "-e",
        "ip.checksum.status",
        "-e",
        "udp.checksum.status",
        "-e",
        "icmpv6.checksum.status",
        "-e",
        "_ws.malformed",
      ]);
      const rows = fields.trimEnd().split("\n").map((l) => l.split("|"));
      equal(rows.length, EXPECTED.length);
      rows.forEach((row, i) => {
        const [protocols, arpOp, icmp6Type, dhcpType, dhcp6Type, ipSum, udpSum, icmp6Sum, bad] =
          row;
        const what = `frame ${i + 1}`;
        equal(protocols, EXPECTED[i].protocols, what);
        const message = arpOp
          ? `arp ${arpOp === "2" ? "reply" : arpOp}`
          : icmp6Type
          ? `icmpv6 ${icmp6Type}`
          : dhcpType
          ? `dhcp ${dhcpType}`
          : `dhcpv6 ${dhcp6Type}`;
        equal(message, EXPECTED[i].message, what);
        // Checksum status 1 is "Good" (2 would be "Bad"); empty where the layer is absent.
        if (protocols.includes(":ip:")) equal(ipSum, "1", `${what} IPv4 header checksum`);
        if (protocols.includes(":udp:")) equal(udpSum, "1", `${what} UDP checksum`);
        if (protocols.includes(":icmpv6")) equal(icmp6Sum, "1", `${what} ICMPv6 checksum`);
        equal(bad, "", `${what} malformed`);
      });

      const detail = tshark(["-r", path, ...CHECKSUM_OPTS, "-V"]);
      ok(
        !/Malformed|\[Checksum Status: Bad\]|Bad checksum/i.test(detail),
        "a bad or malformed frame",
      );
      ok(!detail.includes("Expert Info"), "tshark has a complaint");
      for (
        const line of [
          "Address Resolution Protocol (reply)",
          "Type: Neighbor Advertisement (136)",
          "Type: Router Advertisement (134)",
          "Recursive DNS Server",
          "DNS Search List",
          "DHCP: Offer (2)",
          "DHCP: ACK (5)",
          "DHCP: NAK (6)",
          "Message type: Advertise (2)",
          "Message type: Reply (7)",
          "Rapid Commit",
        ]
      ) ok(detail.includes(line), `tshark output lacks "${line}"`);
    } finally {
      Deno.removeSync(path);
    }
  },
});
