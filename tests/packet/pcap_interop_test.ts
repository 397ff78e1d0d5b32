/**
 * Interoperability of the wire-format builders with independent decoders.
 *
 * Every kind of frame tapir builds is made here with our own builders (and
 * every checksum filled by `lib/packet/checksum.ts`), written to a capture
 * with {@linkcode PcapWriter}, and read back by tcpdump and tshark. They must
 * read every frame, see the protocol we meant, report nothing malformed and
 * find every checksum good; and tshark must decode the fields we set (options
 * included) to the values we set. Our own parsers must also accept every
 * frame, so builder and parser agree with each other as well as with tshark.
 *
 * @module
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { formatIp4, formatIp6, parseIp6 } from "../../lib/addr.ts";
import { arpEmit, ArpOp, arpReprNew } from "../../lib/packet/arp.ts";
import { checksumFill, checksumPseudo4, checksumPseudo6 } from "../../lib/packet/checksum.ts";
import {
  BootpOp,
  DHCP_CLIENT_PORT,
  DHCP_FLAG_BROADCAST,
  DHCP_SERVER_PORT,
  dhcpEmit,
  dhcpEmitLen,
  DhcpMessageType,
  DhcpOption,
  dhcpReprNew,
} from "../../lib/packet/dhcp.ts";
import {
  DHCP6_ALL_SERVERS,
  DHCP6_CLIENT_PORT,
  DHCP6_HWTYPE_ETHERNET,
  DHCP6_SERVER_PORT,
  dhcp6DuidLlEmit,
  dhcp6Emit,
  dhcp6EmitLen,
  dhcp6IaAddrNew,
  dhcp6IaNaNew,
  Dhcp6MessageType,
  Dhcp6Option,
  dhcp6ReprNew,
} from "../../lib/packet/dhcpv6.ts";
import {
  ETH_BROADCAST,
  ETH_HEADER_LEN,
  ETH_MIN_FRAME_LEN,
  ethEmit,
  EtherType,
} from "../../lib/packet/eth.ts";
import { icmpEmit, icmpReprNew, icmpRestEcho, IcmpType } from "../../lib/packet/icmp.ts";
import {
  icmp6Emit,
  icmp6ReprNew,
  Icmp6Type,
  NDP_NA_OVERRIDE,
  NDP_NA_ROUTER,
  NDP_NA_SOLICITED,
  NDP_PREFIX_AUTONOMOUS,
  NDP_PREFIX_ON_LINK,
  NDP_RA_OTHER,
  ndpEmit,
  NdpOpt,
  ndpOptLinkAddrEmit,
  ndpOptMtuEmit,
  ndpOptPrefixInfoEmit,
  ndpOptRdnssEmit,
  ndpPrefixInfoNew,
  ndpReprNew,
} from "../../lib/packet/icmp6.ts";
import { IP4_HEADER_LEN, ip4Emit, ip4ReprNew } from "../../lib/packet/ip4.ts";
import {
  IP6_HEADER_LEN,
  ip6Emit,
  ip6MulticastMac,
  ip6ReprNew,
  ip6SolicitedNode,
} from "../../lib/packet/ip6.ts";
import { tcpEmit, TcpFlag, tcpHeaderLen, TcpOptKind, tcpReprNew } from "../../lib/packet/tcp.ts";
import { udpEmit, udpReprNew } from "../../lib/packet/udp.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { PcapWriter } from "../../lib/pcap.ts";
import { GATEWAY_IP4, GATEWAY_MAC, GUEST_IP4, GUEST_MAC, parseFrame } from "./golden.ts";

// ---------------------------------------------------------------------------
// Addresses (documentation ranges; the frames never leave the capture file).

function ip6(text: string): Uint8Array {
  const a = parseIp6(text);
  if (a === null) throw new Error(`bad IPv6 address ${text}`);
  return a;
}

const GUEST_IP6 = ip6("2001:db8::2");
const GATEWAY_IP6 = ip6("2001:db8::1");
const GUEST_LL = ip6("fe80::5054:ff:fe12:3456");
const GATEWAY_LL = ip6("fe80::1");
const ALL_NODES = ip6("ff02::1");
const ALL_ROUTERS = ip6("ff02::2");
const PREFIX = ip6("2001:db8::");
const DNS6 = ip6("2001:db8::53");
const ZERO_MAC = new Uint8Array(6);

function ip4Bytes(a: number): Uint8Array {
  return new Uint8Array([a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff]);
}
const ip4Text = (a: number) => formatIp4(ip4Bytes(a));
const macText = (m: Uint8Array) => [...m].map((b) => b.toString(16).padStart(2, "0")).join(":");
const hex16 = (v: number) => `0x${v.toString(16).padStart(4, "0")}`;
const hex32 = (v: number) => `0x${v.toString(16).padStart(8, "0")}`;

function multicastMac(group: Uint8Array): Uint8Array {
  const mac = new Uint8Array(6);
  ip6MulticastMac(mac, 0, group, 0);
  return mac;
}

// ---------------------------------------------------------------------------
// Frame assembly with our builders. A scratch buffer is zeroed per frame, the
// upper layer is written first (it is told its pseudo-header sum once it knows
// its length), then the IP and Ethernet headers; frames are padded to 60.

const scratch = new Uint8Array(2048);

/** Writes an upper-layer message at `off` and returns its length. */
type L4Writer = (buf: Uint8Array, off: number, pseudo: (len: number) => number) => number;

function finish(total: number): Uint8Array {
  return scratch.slice(0, Math.max(total, ETH_MIN_FRAME_LEN));
}

interface Hosts4 {
  srcMac: Uint8Array;
  dstMac: Uint8Array;
  src: number;
  dst: number;
}

interface Hosts6 {
  srcMac: Uint8Array;
  dstMac: Uint8Array;
  src: Uint8Array;
  dst: Uint8Array;
  hopLimit?: number;
}

let ipIdent = 0x1000;

function frame4(h: Hosts4, proto: number, writeL4: L4Writer): Uint8Array {
  scratch.fill(0);
  const l4Off = ETH_HEADER_LEN + IP4_HEADER_LEN;
  const n = writeL4(scratch, l4Off, (len) => checksumPseudo4(h.src, h.dst, proto, len));
  const ip = ip4ReprNew();
  ip.src = h.src;
  ip.dst = h.dst;
  ip.proto = proto;
  ip.ident = ipIdent++;
  ip.dontFragment = proto === IpProto.Tcp;
  ip.payloadLen = n;
  ip4Emit(scratch, ETH_HEADER_LEN, ip);
  ethEmit(scratch, 0, h.dstMac, h.srcMac, EtherType.Ipv4);
  return finish(l4Off + n);
}

function frame6(h: Hosts6, nextHeader: number, writeL4: L4Writer): Uint8Array {
  scratch.fill(0);
  const l4Off = ETH_HEADER_LEN + IP6_HEADER_LEN;
  const n = writeL4(
    scratch,
    l4Off,
    (len) => checksumPseudo6(h.src, 0, h.dst, 0, nextHeader, len),
  );
  const ip = ip6ReprNew();
  ip.src.set(h.src);
  ip.dst.set(h.dst);
  ip.nextHeader = nextHeader;
  ip.hopLimit = h.hopLimit ?? 64;
  ip.payloadLen = n;
  ip6Emit(scratch, ETH_HEADER_LEN, ip);
  ethEmit(scratch, 0, h.dstMac, h.srcMac, EtherType.Ipv6);
  return finish(l4Off + n);
}

function arpFrame(op: number, sha: Uint8Array, spa: number, tha: Uint8Array, tpa: number) {
  scratch.fill(0);
  const r = arpReprNew();
  r.op = op;
  r.sha.set(sha);
  r.spa = spa;
  r.tha.set(tha);
  r.tpa = tpa;
  const n = arpEmit(scratch, ETH_HEADER_LEN, r);
  const dst = op === ArpOp.Request ? ETH_BROADCAST : tha;
  ethEmit(scratch, 0, dst, sha, EtherType.Arp);
  return finish(ETH_HEADER_LEN + n);
}

function payloadBytes(n: number, seed: number): Uint8Array {
  // Not text, so no heuristic dissector claims the payload.
  return new Uint8Array(n).map((_, i) => ((seed + i * 37) & 0xff) | 0x80);
}

const icmpEcho =
  (type: number, ident: number, seq: number, data: Uint8Array): L4Writer => (buf, off) => {
    buf.set(data, off + 8);
    const r = icmpReprNew();
    r.type = type;
    r.rest = icmpRestEcho(ident, seq);
    r.payloadLen = data.length;
    return icmpEmit(buf, off, r) + data.length;
  };

const icmp6Echo =
  (type: number, ident: number, seq: number, data: Uint8Array): L4Writer => (buf, off, pseudo) => {
    buf.set(data, off + 8);
    const r = icmp6ReprNew();
    r.type = type;
    r.rest = icmpRestEcho(ident, seq);
    r.payloadLen = data.length;
    const len = 8 + data.length;
    icmp6Emit(buf, off, r, pseudo(len));
    return len;
  };

/** NDP message: body by `ndpEmit`, options by `writeOptions`, checksum filled last. */
const ndp = (
  fill: (r: ReturnType<typeof ndpReprNew>) => void,
  writeOptions: (buf: Uint8Array, off: number) => number,
): L4Writer =>
(buf, off, pseudo) => {
  const r = ndpReprNew();
  fill(r);
  let len = ndpEmit(buf, off, r);
  len += writeOptions(buf, off + len);
  checksumFill(buf, off, len, off + 2, pseudo(len));
  return len;
};

interface TcpSpec {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  ts?: [number, number];
  payload?: Uint8Array;
}

const tcpSegment = (s: TcpSpec): L4Writer => (buf, off, pseudo) => {
  const r = tcpReprNew();
  r.srcPort = s.srcPort;
  r.dstPort = s.dstPort;
  r.seq = s.seq;
  r.ack = s.ack;
  r.flags = s.flags;
  r.window = s.window;
  if (s.mss !== undefined) r.options.mss = s.mss;
  if (s.wscale !== undefined) r.options.wscale = s.wscale;
  r.options.sackPermitted = s.sackPermitted ?? false;
  if (s.ts !== undefined) {
    r.options.tsPresent = true;
    [r.options.tsVal, r.options.tsEcr] = s.ts;
  }
  const payload = s.payload ?? new Uint8Array(0);
  r.payloadLen = payload.length;
  const hdr = tcpHeaderLen(r);
  buf.set(payload, off + hdr);
  const len = hdr + payload.length;
  equal(tcpEmit(buf, off, r, pseudo(len)), hdr);
  return len;
};

const udpDatagram =
  (srcPort: number, dstPort: number, payload: L4Writer): L4Writer => (buf, off, pseudo) => {
    const n = payload(buf, off + 8, () => 0);
    const r = udpReprNew();
    r.srcPort = srcPort;
    r.dstPort = dstPort;
    r.payloadLen = n;
    udpEmit(buf, off, r, pseudo(8 + n));
    return 8 + n;
  };

const bytes = (data: Uint8Array): L4Writer => (buf, off) => {
  buf.set(data, off);
  return data.length;
};

// ---------------------------------------------------------------------------
// The frames, each with what tshark must make of it.

interface Expected {
  /** What the frame is, for messages. */
  name: string;
  frame: Uint8Array;
  /** tshark's protocol column. */
  column: string;
  /** The protocol chain tshark's `frame.protocols` must start with. */
  layers: string;
  /** tshark fields and the text they must show (all occurrences, comma-separated). */
  fields: Record<string, string>;
}

/**
 * The option kinds in the order `tcp.ts` documents its layout (Linux's): MSS,
 * SACK-permitted + timestamps (or NOP NOP before either alone), NOP window scale.
 */
function tcpOptionKinds(s: TcpSpec): number[] {
  const kinds: number[] = [];
  if (s.mss !== undefined) kinds.push(TcpOptKind.Mss);
  if (s.ts !== undefined) {
    kinds.push(
      ...(s.sackPermitted ? [TcpOptKind.SackPermitted] : [TcpOptKind.Nop, TcpOptKind.Nop]),
    );
    kinds.push(TcpOptKind.Timestamp);
  } else if (s.sackPermitted) {
    kinds.push(TcpOptKind.Nop, TcpOptKind.Nop, TcpOptKind.SackPermitted);
  }
  if (s.wscale !== undefined) kinds.push(TcpOptKind.Nop, TcpOptKind.WindowScale);
  return kinds;
}

function tcpExpect(s: TcpSpec): Record<string, string> {
  const f: Record<string, string> = {
    "tcp.srcport": String(s.srcPort),
    "tcp.dstport": String(s.dstPort),
    "tcp.seq_raw": String(s.seq),
    "tcp.ack_raw": String(s.ack),
    "tcp.flags": hex16(s.flags),
    "tcp.window_size_value": String(s.window),
    "tcp.len": String(s.payload?.length ?? 0),
    "tcp.options.mss_val": s.mss === undefined ? "" : String(s.mss),
    "tcp.options.wscale.shift": s.wscale === undefined ? "" : String(s.wscale),
    "tcp.option_kind": tcpOptionKinds(s).join(","),
    "tcp.options.timestamp.tsval": s.ts === undefined ? "" : String(s.ts[0]),
    "tcp.options.timestamp.tsecr": s.ts === undefined ? "" : String(s.ts[1]),
  };
  return f;
}

/**
 * A whole TCP connection: handshake with every option tapir sends, a data
 * segment and its ACK, then FIN from each side. Sequence numbers are kept
 * consistent so tshark's analysis has nothing to say.
 */
function tcpConversation(
  family: 4 | 6,
  clientPort: number,
  serverPort: number,
  isn: [number, number],
): Expected[] {
  const [c, s] = isn;
  const data = payloadBytes(300, clientPort);
  const t = 100_000 + clientPort;
  const specs: [string, boolean, TcpSpec][] = [
    ["SYN", true, {
      srcPort: clientPort,
      dstPort: serverPort,
      seq: c,
      ack: 0,
      flags: TcpFlag.Syn,
      window: 64240,
      mss: family === 4 ? 1460 : 1440,
      wscale: 7,
      sackPermitted: true,
      ts: [t, 0],
    }],
    ["SYN-ACK", false, {
      srcPort: serverPort,
      dstPort: clientPort,
      seq: s,
      ack: (c + 1) >>> 0,
      flags: TcpFlag.Syn | TcpFlag.Ack,
      window: 65160,
      mss: family === 4 ? 1460 : 1440,
      wscale: 9,
      sackPermitted: true,
      ts: [t + 500, t],
    }],
    ["ACK", true, {
      srcPort: clientPort,
      dstPort: serverPort,
      seq: (c + 1) >>> 0,
      ack: (s + 1) >>> 0,
      flags: TcpFlag.Ack,
      window: 502,
      ts: [t + 1, t + 500],
    }],
    ["data+ACK", true, {
      srcPort: clientPort,
      dstPort: serverPort,
      seq: (c + 1) >>> 0,
      ack: (s + 1) >>> 0,
      flags: TcpFlag.Psh | TcpFlag.Ack,
      window: 502,
      ts: [t + 2, t + 500],
      payload: data,
    }],
    ["ACK of data", false, {
      srcPort: serverPort,
      dstPort: clientPort,
      seq: (s + 1) >>> 0,
      ack: (c + 1 + data.length) >>> 0,
      flags: TcpFlag.Ack,
      window: 508,
      ts: [t + 502, t + 2],
    }],
    ["FIN", true, {
      srcPort: clientPort,
      dstPort: serverPort,
      seq: (c + 1 + data.length) >>> 0,
      ack: (s + 1) >>> 0,
      flags: TcpFlag.Fin | TcpFlag.Ack,
      window: 502,
      ts: [t + 3, t + 502],
    }],
    ["FIN back", false, {
      srcPort: serverPort,
      dstPort: clientPort,
      seq: (s + 1) >>> 0,
      ack: (c + 2 + data.length) >>> 0,
      flags: TcpFlag.Fin | TcpFlag.Ack,
      window: 508,
      ts: [t + 503, t + 3],
    }],
    ["last ACK", true, {
      srcPort: clientPort,
      dstPort: serverPort,
      seq: (c + 2 + data.length) >>> 0,
      ack: (s + 2) >>> 0,
      flags: TcpFlag.Ack,
      window: 502,
      ts: [t + 4, t + 503],
    }],
  ];
  return specs.map(([what, fromClient, spec]) => {
    const frame = family === 4
      ? frame4(
        fromClient
          ? { srcMac: GUEST_MAC, dstMac: GATEWAY_MAC, src: GUEST_IP4, dst: GATEWAY_IP4 }
          : { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_IP4, dst: GUEST_IP4 },
        IpProto.Tcp,
        tcpSegment(spec),
      )
      : frame6(
        fromClient
          ? { srcMac: GUEST_MAC, dstMac: GATEWAY_MAC, src: GUEST_IP6, dst: GATEWAY_IP6 }
          : { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_IP6, dst: GUEST_IP6 },
        IpProto.Tcp,
        tcpSegment(spec),
      );
    return {
      name: `TCP/IPv${family} ${what}`,
      frame,
      column: "TCP",
      layers: family === 4 ? "eth:ethertype:ip:tcp" : "eth:ethertype:ipv6:tcp",
      fields: tcpExpect(spec),
    };
  });
}

function buildFrames(): Expected[] {
  const out: Expected[] = [];

  // ARP
  out.push({
    name: "ARP request",
    frame: arpFrame(ArpOp.Request, GUEST_MAC, GUEST_IP4, ZERO_MAC, GATEWAY_IP4),
    column: "ARP",
    layers: "eth:ethertype:arp",
    fields: {
      "arp.opcode": String(ArpOp.Request),
      "arp.src.hw_mac": macText(GUEST_MAC),
      "arp.src.proto_ipv4": ip4Text(GUEST_IP4),
      "arp.dst.proto_ipv4": ip4Text(GATEWAY_IP4),
    },
  });
  out.push({
    name: "ARP reply",
    frame: arpFrame(ArpOp.Reply, GATEWAY_MAC, GATEWAY_IP4, GUEST_MAC, GUEST_IP4),
    column: "ARP",
    layers: "eth:ethertype:arp",
    fields: {
      "arp.opcode": String(ArpOp.Reply),
      "arp.src.hw_mac": macText(GATEWAY_MAC),
      "arp.dst.hw_mac": macText(GUEST_MAC),
      "arp.src.proto_ipv4": ip4Text(GATEWAY_IP4),
      "arp.dst.proto_ipv4": ip4Text(GUEST_IP4),
    },
  });

  // ICMP echo, both directions.
  const echoData = payloadBytes(56, 7);
  const to4 = { srcMac: GUEST_MAC, dstMac: GATEWAY_MAC, src: GUEST_IP4, dst: GATEWAY_IP4 };
  const from4 = { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_IP4, dst: GUEST_IP4 };
  for (
    const [what, type, hosts] of [["request", IcmpType.EchoRequest, to4], [
      "reply",
      IcmpType.EchoReply,
      from4,
    ]] as const
  ) {
    out.push({
      name: `ICMP echo ${what}`,
      frame: frame4(hosts, IpProto.Icmp, icmpEcho(type, 0x4242, 1, echoData)),
      column: "ICMP",
      layers: "eth:ethertype:ip:icmp",
      fields: {
        "ip.src": ip4Text(hosts.src),
        "ip.dst": ip4Text(hosts.dst),
        "icmp.type": String(type),
        "icmp.ident": String(0x4242),
        "icmp.seq": "1",
      },
    });
  }

  // ICMPv6 echo, both directions.
  const to6 = { srcMac: GUEST_MAC, dstMac: GATEWAY_MAC, src: GUEST_IP6, dst: GATEWAY_IP6 };
  const from6 = { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_IP6, dst: GUEST_IP6 };
  for (
    const [what, type, hosts] of [["request", Icmp6Type.EchoRequest, to6], [
      "reply",
      Icmp6Type.EchoReply,
      from6,
    ]] as const
  ) {
    out.push({
      name: `ICMPv6 echo ${what}`,
      frame: frame6(hosts, IpProto.Icmp6, icmp6Echo(type, 0x4343, 2, echoData)),
      column: "ICMPv6",
      layers: "eth:ethertype:ipv6:icmpv6",
      fields: {
        "ipv6.src": formatIp6(hosts.src),
        "ipv6.dst": formatIp6(hosts.dst),
        "icmpv6.type": String(type),
        "icmpv6.echo.identifier": hex(0x4343, 4),
        "icmpv6.echo.sequence_number": "2",
      },
    });
  }

  // NDP: RS, RA with every option we write, NS, NA.
  out.push({
    name: "NDP router solicitation",
    frame: frame6(
      {
        srcMac: GUEST_MAC,
        dstMac: multicastMac(ALL_ROUTERS),
        src: GUEST_LL,
        dst: ALL_ROUTERS,
        hopLimit: 255,
      },
      IpProto.Icmp6,
      ndp(
        (r) => r.type = Icmp6Type.RouterSolicit,
        (buf, off) => ndpOptLinkAddrEmit(buf, off, NdpOpt.SrcLinkAddr, GUEST_MAC),
      ),
    ),
    column: "ICMPv6",
    layers: "eth:ethertype:ipv6:icmpv6",
    fields: {
      "icmpv6.type": String(Icmp6Type.RouterSolicit),
      "icmpv6.opt.type": String(NdpOpt.SrcLinkAddr),
      "icmpv6.opt.linkaddr": macText(GUEST_MAC),
    },
  });

  const prefix = ndpPrefixInfoNew();
  prefix.prefixLen = 64;
  prefix.flags = NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS;
  prefix.validLifetime = 3600;
  prefix.preferredLifetime = 1800;
  prefix.prefix.set(PREFIX);
  out.push({
    name: "NDP router advertisement",
    frame: frame6(
      {
        srcMac: GATEWAY_MAC,
        dstMac: multicastMac(ALL_NODES),
        src: GATEWAY_LL,
        dst: ALL_NODES,
        hopLimit: 255,
      },
      IpProto.Icmp6,
      ndp(
        (r) => {
          r.type = Icmp6Type.RouterAdvert;
          r.curHopLimit = 64;
          r.flags = NDP_RA_OTHER;
          r.routerLifetime = 1800;
          r.reachableTime = 30000;
          r.retransTimer = 1000;
        },
        (buf, off) => {
          let p = off;
          p += ndpOptLinkAddrEmit(buf, p, NdpOpt.SrcLinkAddr, GATEWAY_MAC);
          p += ndpOptMtuEmit(buf, p, 65520);
          p += ndpOptPrefixInfoEmit(buf, p, prefix);
          p += ndpOptRdnssEmit(buf, p, 600, [GATEWAY_IP6, DNS6]);
          return p - off;
        },
      ),
    ),
    column: "ICMPv6",
    layers: "eth:ethertype:ipv6:icmpv6",
    fields: {
      "icmpv6.type": String(Icmp6Type.RouterAdvert),
      "icmpv6.nd.ra.cur_hop_limit": "64",
      "icmpv6.nd.ra.flag": hex(NDP_RA_OTHER, 2),
      "icmpv6.nd.ra.router_lifetime": "1800",
      "icmpv6.nd.ra.reachable_time": "30000",
      "icmpv6.nd.ra.retrans_timer": "1000",
      "icmpv6.opt.type": [NdpOpt.SrcLinkAddr, NdpOpt.Mtu, NdpOpt.PrefixInfo, NdpOpt.Rdnss].join(
        ",",
      ),
      "icmpv6.opt.linkaddr": macText(GATEWAY_MAC),
      "icmpv6.opt.mtu": "65520",
      "icmpv6.opt.prefix.length": "64",
      "icmpv6.opt.prefix.flag": hex(NDP_PREFIX_ON_LINK | NDP_PREFIX_AUTONOMOUS, 2),
      "icmpv6.opt.prefix.valid_lifetime": "3600",
      "icmpv6.opt.prefix.preferred_lifetime": "1800",
      "icmpv6.opt.prefix": formatIp6(PREFIX),
      "icmpv6.opt.rdnss.lifetime": "600",
      "icmpv6.opt.rdnss": `${formatIp6(GATEWAY_IP6)},${formatIp6(DNS6)}`,
    },
  });

  const solicited = new Uint8Array(16);
  ip6SolicitedNode(solicited, 0, GATEWAY_LL, 0);
  out.push({
    name: "NDP neighbor solicitation",
    frame: frame6(
      {
        srcMac: GUEST_MAC,
        dstMac: multicastMac(solicited),
        src: GUEST_LL,
        dst: solicited,
        hopLimit: 255,
      },
      IpProto.Icmp6,
      ndp(
        (r) => {
          r.type = Icmp6Type.NeighborSolicit;
          r.target.set(GATEWAY_LL);
        },
        (buf, off) => ndpOptLinkAddrEmit(buf, off, NdpOpt.SrcLinkAddr, GUEST_MAC),
      ),
    ),
    column: "ICMPv6",
    layers: "eth:ethertype:ipv6:icmpv6",
    fields: {
      "ipv6.dst": formatIp6(solicited),
      "icmpv6.type": String(Icmp6Type.NeighborSolicit),
      "icmpv6.nd.ns.target_address": formatIp6(GATEWAY_LL),
      "icmpv6.opt.type": String(NdpOpt.SrcLinkAddr),
      "icmpv6.opt.linkaddr": macText(GUEST_MAC),
    },
  });
  const naFlags = NDP_NA_ROUTER | NDP_NA_SOLICITED | NDP_NA_OVERRIDE;
  out.push({
    name: "NDP neighbor advertisement",
    frame: frame6(
      { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_LL, dst: GUEST_LL, hopLimit: 255 },
      IpProto.Icmp6,
      ndp(
        (r) => {
          r.type = Icmp6Type.NeighborAdvert;
          r.flags = naFlags;
          r.target.set(GATEWAY_LL);
        },
        (buf, off) => ndpOptLinkAddrEmit(buf, off, NdpOpt.TgtLinkAddr, GATEWAY_MAC),
      ),
    ),
    column: "ICMPv6",
    layers: "eth:ethertype:ipv6:icmpv6",
    fields: {
      "icmpv6.type": String(Icmp6Type.NeighborAdvert),
      "icmpv6.nd.na.flag": hex32((naFlags << 24) >>> 0),
      "icmpv6.nd.na.target_address": formatIp6(GATEWAY_LL),
      "icmpv6.opt.type": String(NdpOpt.TgtLinkAddr),
      "icmpv6.opt.linkaddr": macText(GATEWAY_MAC),
    },
  });

  // TCP, both families.
  out.push(...tcpConversation(4, 40000, 47001, [0x01020304, 0xfffffff0]));
  out.push(...tcpConversation(6, 40001, 47002, [0xfffffffe, 0x7a6b5c4d]));

  // UDP, both families.
  const udpData = payloadBytes(21, 3);
  for (const family of [4, 6] as const) {
    const writer = udpDatagram(40002, 47003, bytes(udpData));
    out.push({
      name: `UDP/IPv${family}`,
      frame: family === 4 ? frame4(to4, IpProto.Udp, writer) : frame6(to6, IpProto.Udp, writer),
      column: "UDP",
      layers: family === 4 ? "eth:ethertype:ip:udp" : "eth:ethertype:ipv6:udp",
      fields: {
        "udp.srcport": "40002",
        "udp.dstport": "47003",
        "udp.length": String(8 + udpData.length),
      },
    });
  }

  // DHCP DISCOVER and OFFER.
  const discover = dhcpReprNew();
  discover.op = BootpOp.Request;
  discover.xid = 0x3903f326;
  discover.flags = DHCP_FLAG_BROADCAST;
  discover.chaddr.set(GUEST_MAC);
  discover.messageType = DhcpMessageType.Discover;
  discover.clientId = new Uint8Array([1, ...GUEST_MAC]);
  discover.maxMessageSize = 1500;
  discover.paramRequestList = [
    DhcpOption.SubnetMask,
    DhcpOption.Router,
    DhcpOption.DnsServers,
    DhcpOption.DomainName,
    DhcpOption.InterfaceMtu,
  ];
  discover.hostname = "guest";
  discover.requestedIp = GUEST_IP4;
  const offer = dhcpReprNew();
  offer.xid = discover.xid;
  offer.flags = DHCP_FLAG_BROADCAST;
  offer.yiaddr = GUEST_IP4;
  offer.chaddr.set(GUEST_MAC);
  offer.messageType = DhcpMessageType.Offer;
  offer.serverId = GATEWAY_IP4;
  offer.leaseTime = 3600;
  offer.renewalTime = 1800;
  offer.rebindingTime = 3150;
  offer.subnetMask = 0xffffff00;
  offer.routers = [GATEWAY_IP4];
  offer.dnsServers = [GATEWAY_IP4, 0xc0000235];
  offer.domainName = "example.org";
  offer.domainSearch = ["example.org", "test.example.org"];
  offer.mtu = 1500;
  offer.classlessRoutes = [{ dest: 0xc6336400, prefixLen: 24, gateway: GATEWAY_IP4 }];
  const dhcpMessage = (r: ReturnType<typeof dhcpReprNew>): L4Writer => (buf, off) => {
    equal(dhcpEmit(buf, off, r), dhcpEmitLen(r));
    return dhcpEmitLen(r);
  };
  out.push({
    name: "DHCP DISCOVER",
    frame: frame4(
      { srcMac: GUEST_MAC, dstMac: ETH_BROADCAST, src: 0, dst: 0xffffffff },
      IpProto.Udp,
      udpDatagram(DHCP_CLIENT_PORT, DHCP_SERVER_PORT, dhcpMessage(discover)),
    ),
    column: "DHCP",
    layers: "eth:ethertype:ip:udp:dhcp",
    fields: {
      "dhcp.id": hex32(discover.xid),
      // chaddr, then the MAC inside the client identifier (type 1, Ethernet).
      "dhcp.hw.mac_addr": `${macText(GUEST_MAC)},${macText(GUEST_MAC)}`,
      "dhcp.option.dhcp": String(DhcpMessageType.Discover),
      "dhcp.option.dhcp_max_message_size": "1500",
      "dhcp.option.hostname": "guest",
      "dhcp.option.requested_ip_address": ip4Text(GUEST_IP4),
    },
  });
  out.push({
    name: "DHCP OFFER",
    frame: frame4(
      { srcMac: GATEWAY_MAC, dstMac: ETH_BROADCAST, src: GATEWAY_IP4, dst: 0xffffffff },
      IpProto.Udp,
      udpDatagram(DHCP_SERVER_PORT, DHCP_CLIENT_PORT, dhcpMessage(offer)),
    ),
    column: "DHCP",
    layers: "eth:ethertype:ip:udp:dhcp",
    fields: {
      "dhcp.id": hex32(offer.xid),
      "dhcp.ip.your": ip4Text(GUEST_IP4),
      "dhcp.option.dhcp": String(DhcpMessageType.Offer),
      "dhcp.option.dhcp_server_id": ip4Text(GATEWAY_IP4),
      "dhcp.option.ip_address_lease_time": "3600",
      "dhcp.option.subnet_mask": ip4Text(offer.subnetMask),
      "dhcp.option.router": ip4Text(GATEWAY_IP4),
      "dhcp.option.domain_name_server": offer.dnsServers.map(ip4Text).join(","),
      "dhcp.option.domain_name": offer.domainName,
      "dhcp.option.interface_mtu": "1500",
    },
  });

  // DHCPv6 SOLICIT and ADVERTISE.
  const clientDuid = new Uint8Array(10);
  dhcp6DuidLlEmit(clientDuid, 0, DHCP6_HWTYPE_ETHERNET, GUEST_MAC);
  const serverDuid = new Uint8Array(10);
  dhcp6DuidLlEmit(serverDuid, 0, DHCP6_HWTYPE_ETHERNET, GATEWAY_MAC);
  const solicit = dhcp6ReprNew();
  solicit.msgType = Dhcp6MessageType.Solicit;
  solicit.transactionId = 0xa1b2c3;
  solicit.clientId = clientDuid;
  solicit.elapsedTime = 0;
  solicit.oro = [Dhcp6Option.DnsServers, Dhcp6Option.DomainList];
  solicit.iaNa = [dhcp6IaNaNew(0x0c0ffee, 0, 0)];
  const advertise = dhcp6ReprNew();
  advertise.msgType = Dhcp6MessageType.Advertise;
  advertise.transactionId = solicit.transactionId;
  advertise.clientId = clientDuid;
  advertise.serverId = serverDuid;
  advertise.preference = 255;
  const ia = dhcp6IaNaNew(0x0c0ffee, 1800, 2880);
  ia.addrs.push(dhcp6IaAddrNew(GUEST_IP6, 3600, 7200));
  advertise.iaNa = [ia];
  advertise.dnsServers = [GATEWAY_IP6, DNS6];
  advertise.domainList = ["example.org"];
  const dhcp6Message = (r: ReturnType<typeof dhcp6ReprNew>): L4Writer => (buf, off) => {
    equal(dhcp6Emit(buf, off, r), dhcp6EmitLen(r));
    return dhcp6EmitLen(r);
  };
  out.push({
    name: "DHCPv6 SOLICIT",
    frame: frame6(
      {
        srcMac: GUEST_MAC,
        dstMac: multicastMac(DHCP6_ALL_SERVERS),
        src: GUEST_LL,
        dst: DHCP6_ALL_SERVERS,
      },
      IpProto.Udp,
      udpDatagram(DHCP6_CLIENT_PORT, DHCP6_SERVER_PORT, dhcp6Message(solicit)),
    ),
    column: "DHCPv6",
    layers: "eth:ethertype:ipv6:udp:dhcpv6",
    fields: {
      "dhcpv6.msgtype": String(Dhcp6MessageType.Solicit),
      "dhcpv6.xid": `0x${solicit.transactionId.toString(16).padStart(6, "0")}`,
      "dhcpv6.duidll.link_layer_addr": macText(GUEST_MAC),
      "dhcpv6.requested_option_code": solicit.oro.join(","),
      "dhcpv6.elapsed_time": "0",
    },
  });
  out.push({
    name: "DHCPv6 ADVERTISE",
    frame: frame6(
      { srcMac: GATEWAY_MAC, dstMac: GUEST_MAC, src: GATEWAY_LL, dst: GUEST_LL },
      IpProto.Udp,
      udpDatagram(DHCP6_SERVER_PORT, DHCP6_CLIENT_PORT, dhcp6Message(advertise)),
    ),
    column: "DHCPv6",
    layers: "eth:ethertype:ipv6:udp:dhcpv6",
    fields: {
      "dhcpv6.msgtype": String(Dhcp6MessageType.Advertise),
      "dhcpv6.xid": `0x${advertise.transactionId.toString(16).padStart(6, "0")}`,
      "dhcpv6.duidll.link_layer_addr": `${macText(GUEST_MAC)},${macText(GATEWAY_MAC)}`,
      "dhcpv6.iaid.t1": "1800",
      "dhcpv6.iaid.t2": "2880",
      "dhcpv6.iaaddr.ip": formatIp6(GUEST_IP6),
      "dhcpv6.iaaddr.pref_lifetime": "3600",
      "dhcpv6.iaaddr.valid_lifetime": "7200",
      "dhcpv6.dns_server": `${formatIp6(GATEWAY_IP6)},${formatIp6(DNS6)}`,
    },
  });
  return out;
}

function hex(v: number, digits: number): string {
  return `0x${v.toString(16).padStart(digits, "0")}`;
}

// ---------------------------------------------------------------------------
// Running the decoders.

/** Wireshark's expert severity "warning" (chat is 0x200000, note 0x400000, error 0x800000). */
const EXPERT_WARNING = 0x600000;

const ROOT_WARNING = /^Running as user "root" and group "root"\. This could be dangerous\.$/;

interface Output {
  stdout: string;
  stderr: string;
}

async function runTool(cmd: string, args: string[]): Promise<Output> {
  const res = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const stdout = new TextDecoder().decode(res.stdout);
  const stderr = new TextDecoder().decode(res.stderr);
  equal(res.code, 0, `${cmd} ${args.join(" ")} failed (${res.code}):\n${stderr}`);
  return { stdout, stderr };
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

async function tshark(path: string, args: string[]): Promise<string> {
  const { stdout, stderr } = await runTool("/usr/bin/tshark", [
    "-r",
    path,
    "-o",
    "ip.check_checksum:TRUE",
    "-o",
    "tcp.check_checksum:TRUE",
    "-o",
    "udp.check_checksum:TRUE",
    ...args,
  ]);
  const warnings = lines(stderr).filter((l) => !ROOT_WARNING.test(l));
  ok(warnings.length === 0, `tshark warned:\n${warnings.join("\n")}`);
  return stdout;
}

/** `tshark -T fields` rows for `fields`, one array of values per frame. */
async function tsharkFields(path: string, fields: string[], occurrence = "a"): Promise<string[][]> {
  const out = await tshark(path, [
    "-T",
    "fields",
    "-E",
    "separator=/t",
    "-E",
    "aggregator=,",
    "-E",
    `occurrence=${occurrence}`,
    ...fields.flatMap((f) => ["-e", f]),
  ]);
  return out.split("\n").filter((l) => l !== "").map((l) => l.split("\t"));
}

async function withCapture<T>(frames: Expected[], body: (path: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "tapir-interop-" });
  try {
    const path = `${dir}/frames.pcap`;
    const w = PcapWriter.open(path);
    const t0 = 1_700_000_000_000_000_000n;
    frames.forEach((e, i) => w.frame(e.frame, e.frame.length, t0 + BigInt(i) * 1_000_000n));
    equal(w.framesRecorded, frames.length);
    w.close();
    return await body(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

// ---------------------------------------------------------------------------

const FRAMES = buildFrames();

Deno.test("our own parsers accept every frame our builders made", () => {
  for (const e of FRAMES) equal(parseFrame(e.frame), 0, e.name);
});

Deno.test("tcpdump reads every built frame without a warning or a bad checksum", async () => {
  await withCapture(FRAMES, async (path) => {
    const plain = await runTool("/usr/bin/tcpdump", ["-nn", "-r", path]);
    const warnings = lines(plain.stderr).filter((l) => !l.startsWith("reading from file "));
    ok(warnings.length === 0, `tcpdump warned:\n${warnings.join("\n")}`);
    const pkts = lines(plain.stdout);
    equal(pkts.length, FRAMES.length);
    pkts.forEach((l, i) =>
      ok(!/\[\||truncated|bad|malformed|invalid/i.test(l), `${FRAMES[i].name}: ${l}`)
    );

    // -vv makes tcpdump verify checksums: it flags a bad IPv4 header or ICMP
    // one ("bad cksum", "wrong icmp cksum") and vouches for each good TCP,
    // UDP and ICMPv6 one.
    const verbose = await runTool("/usr/bin/tcpdump", ["-nn", "-vv", "-r", path]);
    const complaints = lines(verbose.stdout).filter((l) =>
      /incorrect|bad cksum|wrong|bad udp cksum|\[\||truncated|malformed/i.test(l)
    );
    ok(complaints.length === 0, `tcpdump -vv found fault:\n${complaints.join("\n")}`);
    const vouched = FRAMES.filter((e) => /:(tcp|udp|icmpv6)$|:(tcp|udp|icmpv6):/.test(e.layers));
    const sumOk = verbose.stdout.match(/cksum 0x[0-9a-f]+ \(correct\)|udp sum ok|icmp6 sum ok/g);
    equal(sumOk?.length, vouched.length, "checksums tcpdump reports correct");
  });
});

Deno.test("tshark sees the intended protocol of every frame, nothing malformed, checksums good", async () => {
  await withCapture(FRAMES, async (path) => {
    const rows = await tsharkFields(path, [
      "frame.number",
      "_ws.col.Protocol",
      "frame.protocols",
      "_ws.malformed",
      "_ws.expert.message",
      "_ws.expert.severity",
      "ip.checksum.status",
      "tcp.checksum.status",
      "udp.checksum.status",
      "icmp.checksum.status",
      "icmpv6.checksum.status",
    ]);
    equal(rows.length, FRAMES.length);
    rows.forEach((row, i) => {
      const e = FRAMES[i];
      const [num, column, protocols, malformed, expert, severity, ...statuses] = row;
      equal(num, String(i + 1), e.name);
      equal(column, e.column, `${e.name}: protocol column`);
      ok(
        protocols === e.layers || protocols.startsWith(`${e.layers}:`),
        `${e.name}: tshark decoded ${protocols}, expected ${e.layers}`,
      );
      equal(malformed, "", `${e.name}: malformed`);
      // Chat and notes only (SYN, FIN...): a warning would mean tshark's TCP
      // analysis or a dissector found something off.
      for (const sev of severity === "" ? [] : severity.split(",")) {
        ok(Number(sev) < EXPERT_WARNING, `${e.name}: expert ${sev}: ${expert}`);
      }
      ok(
        !/checksum|malformed|bad|invalid|incorrect/i.test(expert),
        `${e.name}: expert says ${expert}`,
      );
      // Which layers carry a checksum tshark verifies: IPv4 header, TCP, UDP, ICMP, ICMPv6.
      const layers = e.layers.split(":");
      const carried = [
        layers.includes("ip"),
        layers.includes("tcp"),
        layers.includes("udp"),
        layers.includes("icmp"),
        layers.includes("icmpv6"),
      ];
      // 1 is "Good" (0 bad, 2 unverified); layers absent from the frame show nothing.
      const want = carried.map((c) => (c ? "1" : ""));
      deepEqual(statuses, want, `${e.name}: checksum statuses [${statuses}], want [${want}]`);
    });

    const detail = await tshark(path, ["-V"]);
    ok(!/Malformed|\[Checksum Status: Bad\]|checksum status: Bad|Expert Info \(Error/.test(detail));
  });
});

Deno.test("tshark decodes the fields and options we set to the values we set", async () => {
  await withCapture(FRAMES, async (path) => {
    const names = [...new Set(FRAMES.flatMap((e) => Object.keys(e.fields)))];
    const rows = await tsharkFields(path, names);
    equal(rows.length, FRAMES.length);
    // Every disagreement at once, "frame: field: tshark ≠ ours", so one run shows them all.
    const disagreements: string[] = [];
    rows.forEach((row, i) => {
      const e = FRAMES[i];
      for (const [name, want] of Object.entries(e.fields)) {
        const got = row[names.indexOf(name)];
        if (got !== want) {
          disagreements.push(`${e.name}: ${name}: tshark "${got}", we set "${want}"`);
        }
      }
    });
    ok(disagreements.length === 0, disagreements.join("\n"));
  });
});
