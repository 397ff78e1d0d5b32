/**
 * Golden frames for the wire-layer tests, written field by field from the RFC
 * layouts. Their checksums were cross-checked with an independent decoder
 * (Wireshark's), which reported every one correct and decoded every field as
 * the comments say.
 *
 * Also: the shared test helpers (hex parsing, a seeded PRNG) and
 * {@linkcode parseFrame}, which runs a frame through every parser the way the
 * receive path will, for the truncation and fuzz tests.
 *
 * @module
 */

import { ArpPacket, arpParse } from "../../lib/packet/arp.ts";
import { EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { IcmpPacket, icmpParse } from "../../lib/packet/icmp.ts";
import {
  Icmp6Packet,
  icmp6Parse,
  NdpOptions,
  ndpOptionsParse,
  ndpParse,
  ndpPrefixInfoRead,
} from "../../lib/packet/icmp6.ts";
import { Ip4Packet, ip4Parse } from "../../lib/packet/ip4.ts";
import { Ip6Packet, ip6Parse, ip6UpperNew } from "../../lib/packet/ip6.ts";
import { TcpPacket, tcpParse } from "../../lib/packet/tcp.ts";
import { UdpPacket, udpParse } from "../../lib/packet/udp.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";

/** Bytes from hex strings; spaces are ignored. */
export function hex(...parts: string[]): Uint8Array {
  const s = parts.join("").replace(/\s+/g, "");
  if (s.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(s)) throw new Error(`bad hex: ${s}`);
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Random bytes from `rand`. */
export function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** MAC of the guest in the golden frames. */
export const GUEST_MAC = hex("52 54 00 12 34 56");
/** MAC tapir answers with in the golden frames. */
export const GATEWAY_MAC = hex("52 55 0a 00 02 02");
/** 192.0.2.2, the guest's IPv4 address. */
export const GUEST_IP4 = 0xc0000202;
/** 192.0.2.1, the gateway's IPv4 address. */
export const GATEWAY_IP4 = 0xc0000201;

/** ARP request "who has 192.0.2.1? tell 192.0.2.2", padded to 60 bytes as on the wire. */
export const ARP_REQUEST = hex(
  // Ethernet
  "ff ff ff ff ff ff", //   dst: broadcast
  "52 54 00 12 34 56", //   src: guest
  "08 06", //               type: ARP
  // ARP (RFC 826)
  "00 01", //               htype: Ethernet
  "08 00", //               ptype: IPv4
  "06 04", //               hlen 6, plen 4
  "00 01", //               op: request
  "52 54 00 12 34 56", //   sha: guest
  "c0 00 02 02", //         spa: 192.0.2.2
  "00 00 00 00 00 00", //   tha: unknown
  "c0 00 02 01", //         tpa: 192.0.2.1
  "00".repeat(18), //       Ethernet padding to 60
);

/** Length of {@linkcode ARP_REQUEST} without padding. */
export const ARP_REQUEST_UNPADDED_LEN = 42;

/**
 * TCP SYN over IPv4 as Linux sends it: 192.0.2.2:40000 → 192.0.2.1:80, MSS
 * 1460, SACK permitted, timestamps, window scale 7.
 */
export const TCP_SYN_4 = hex(
  // Ethernet
  "52 55 0a 00 02 02", //   dst: gateway
  "52 54 00 12 34 56", //   src: guest
  "08 00", //               type: IPv4
  // IPv4 (RFC 791)
  "45", //                  version 4, IHL 5
  "00", //                  DSCP/ECN
  "00 3c", //               total length 60
  "1c 46", //               identification
  "40 00", //               DF, offset 0
  "40", //                  TTL 64
  "06", //                  protocol TCP
  "9a 72", //               header checksum
  "c0 00 02 02", //         src 192.0.2.2
  "c0 00 02 01", //         dst 192.0.2.1
  // TCP (RFC 9293)
  "9c 40", //               src port 40000
  "00 50", //               dst port 80
  "01 02 03 04", //         seq
  "00 00 00 00", //         ack
  "a0", //                  data offset 10 (40 bytes)
  "02", //                  flags SYN
  "fa f0", //               window 64240
  "12 5d", //               checksum
  "00 00", //               urgent pointer
  "02 04 05 b4", //         MSS 1460
  "04 02", //               SACK permitted
  "08 0a 0a 0b 0c 0d 00 00 00 00", // timestamps TSval 0x0a0b0c0d TSecr 0
  "01", //                  NOP
  "03 03 07", //            window scale 7
);

/** Offset of the TCP header in {@linkcode TCP_SYN_4}. */
export const TCP_SYN_4_TCP_OFF = 34;

/**
 * TCP data segment over IPv6: [2001:db8::2]:40001 → [2001:db8::1]:8080,
 * ACK|PSH, NOP NOP timestamps, payload "GET /\r\n".
 */
export const TCP_DATA_6 = hex(
  // Ethernet
  "52 55 0a 00 02 02",
  "52 54 00 12 34 56",
  "86 dd", //               type: IPv6
  // IPv6 (RFC 8200)
  "60 00 00 00", //         version 6, class 0, flow 0
  "00 27", //               payload length 39
  "06", //                  next header TCP
  "40", //                  hop limit 64
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02", // src 2001:db8::2
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01", // dst 2001:db8::1
  // TCP
  "9c 41", //               src port 40001
  "1f 90", //               dst port 8080
  "ff ff ff f0", //         seq (about to wrap)
  "10 20 30 40", //         ack
  "80", //                  data offset 8 (32 bytes)
  "18", //                  flags ACK|PSH
  "01 f6", //               window 502
  "43 a6", //               checksum
  "00 00", //               urgent pointer
  "01 01", //               NOP NOP
  "08 0a 00 00 01 02 01 02 03 04", // timestamps TSval 0x102 TSecr 0x01020304
  "47 45 54 20 2f 0d 0a", // "GET /\r\n"
);

/** UDP over IPv6: [2001:db8::2]:5353 → [2001:db8::1]:53, payload "hello". */
export const UDP_6 = hex(
  "52 55 0a 00 02 02",
  "52 54 00 12 34 56",
  "86 dd",
  // IPv6
  "60 00 00 00",
  "00 0d", //               payload length 13
  "11", //                  next header UDP
  "40",
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02",
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01",
  // UDP (RFC 768)
  "14 e9", //               src port 5353
  "00 35", //               dst port 53
  "00 0d", //               length 13
  "4b 6f", //               checksum
  "68 65 6c 6c 6f", //      "hello"
);

/** UDP over IPv4: 192.0.2.2:33333 → 192.0.2.1:53, 4-byte payload, padded to 60. */
export const UDP_4 = hex(
  "52 55 0a 00 02 02",
  "52 54 00 12 34 56",
  "08 00",
  // IPv4
  "45 00",
  "00 20", //               total length 32
  "00 01", //               identification
  "40 00", //               DF
  "40 11", //               TTL 64, protocol UDP
  "b6 c8", //               header checksum
  "c0 00 02 02",
  "c0 00 02 01",
  // UDP
  "82 35", //               src port 33333
  "00 35", //               dst port 53
  "00 0c", //               length 12
  "e6 33", //               checksum
  "12 34 01 00", //         payload
  "00".repeat(14), //       Ethernet padding to 60
);

/** ICMPv4 echo request 192.0.2.2 → 192.0.2.1, ident 0x1234, seq 1, data "abcdefgh". */
export const ICMP_ECHO_4 = hex(
  "52 55 0a 00 02 02",
  "52 54 00 12 34 56",
  "08 00",
  // IPv4
  "45 00",
  "00 24", //               total length 36
  "be ef", //               identification
  "40 00",
  "40 01", //               TTL 64, protocol ICMP
  "f7 e5", //               header checksum
  "c0 00 02 02",
  "c0 00 02 01",
  // ICMP (RFC 792)
  "08", //                  type echo request
  "00", //                  code
  "54 35", //               checksum
  "12 34", //               identifier
  "00 01", //               sequence
  "61 62 63 64 65 66 67 68", // "abcdefgh"
);

/** ICMPv6 echo request 2001:db8::2 → 2001:db8::1, ident 0x1234, seq 1, data "abcdefgh". */
export const ICMP6_ECHO = hex(
  "52 55 0a 00 02 02",
  "52 54 00 12 34 56",
  "86 dd",
  // IPv6
  "60 00 00 00",
  "00 10", //               payload length 16
  "3a", //                  next header ICMPv6
  "40",
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 02",
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01",
  // ICMPv6 (RFC 4443)
  "80", //                  type echo request
  "00", //                  code
  "80 75", //               checksum
  "12 34", //               identifier
  "00 01", //               sequence
  "61 62 63 64 65 66 67 68",
);

/**
 * Router advertisement fe80::1 → ff02::1 (RFC 4861 §4.2): hop limit 64,
 * "other configuration" flag, router lifetime 1800 s, with source link-layer
 * address, MTU 1500, prefix 2001:db8::/64 (on-link, autonomous, valid 3600 s,
 * preferred 1800 s) and RDNSS 2001:db8::1 for 600 s.
 */
export const NDP_RA = hex(
  // Ethernet
  "33 33 00 00 00 01", //   dst: all-nodes multicast MAC
  "52 55 0a 00 02 02", //   src: gateway
  "86 dd",
  // IPv6
  "60 00 00 00",
  "00 58", //               payload length 88
  "3a", //                  ICMPv6
  "ff", //                  hop limit 255
  "fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 01", // src fe80::1
  "ff 02 00 00 00 00 00 00 00 00 00 00 00 00 00 01", // dst ff02::1
  // ICMPv6 router advertisement
  "86", //                  type 134
  "00", //                  code
  "fa be", //               checksum
  "40", //                  cur hop limit 64
  "40", //                  flags: O
  "07 08", //               router lifetime 1800
  "00 00 00 00", //         reachable time
  "00 00 00 00", //         retrans timer
  // option: source link-layer address
  "01 01 52 55 0a 00 02 02",
  // option: MTU
  "05 01 00 00 00 00 05 dc",
  // option: prefix information
  "03 04", //               type 3, length 4 (32 bytes)
  "40", //                  prefix length 64
  "c0", //                  flags L A
  "00 00 0e 10", //         valid lifetime 3600
  "00 00 07 08", //         preferred lifetime 1800
  "00 00 00 00", //         reserved
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00", // prefix 2001:db8::
  // option: RDNSS (RFC 8106)
  "19 03", //               type 25, length 3 (24 bytes)
  "00 00", //               reserved
  "00 00 02 58", //         lifetime 600
  "20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 01", // 2001:db8::1
);

/**
 * Neighbor solicitation from the guest's link-local address to the
 * solicited-node group of fe80::1, asking for fe80::1, with its source
 * link-layer address (RFC 4861 §4.3).
 */
export const NDP_NS = hex(
  "33 33 ff 00 00 01", //   dst: solicited-node multicast MAC
  "52 54 00 12 34 56",
  "86 dd",
  // IPv6
  "60 00 00 00",
  "00 20", //               payload length 32
  "3a",
  "ff", //                  hop limit 255
  "fe 80 00 00 00 00 00 00 50 54 00 ff fe 12 34 56", // src fe80::5054:ff:fe12:3456
  "ff 02 00 00 00 00 00 00 00 00 00 01 ff 00 00 01", // dst ff02::1:ff00:1
  // ICMPv6 neighbor solicitation
  "87", //                  type 135
  "00",
  "72 22", //               checksum
  "00 00 00 00", //         reserved
  "fe 80 00 00 00 00 00 00 00 00 00 00 00 00 00 01", // target fe80::1
  "01 01 52 54 00 12 34 56", // source link-layer address
);

/**
 * MLDv2 report from :: to ff02::16 (RFC 3810) behind a hop-by-hop header
 * carrying a router alert (RFC 2711): the extension-header walk test.
 */
export const MLD_REPORT = hex(
  "33 33 00 00 00 16",
  "52 54 00 12 34 56",
  "86 dd",
  // IPv6
  "60 00 00 00",
  "00 24", //               payload length 36
  "00", //                  next header: hop-by-hop options
  "01", //                  hop limit 1
  "00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", // src ::
  "ff 02 00 00 00 00 00 00 00 00 00 00 00 00 00 16", // dst ff02::16
  // hop-by-hop options
  "3a", //                  next header ICMPv6
  "00", //                  length 0 (8 bytes)
  "05 02 00 00", //         router alert: MLD
  "01 00", //               PadN
  // ICMPv6 MLDv2 report
  "8f 00 3b 22", //         type 143, code, checksum
  "00 00 00 01", //         reserved, 1 record
  "04 00 00 00", //         CHANGE_TO_EXCLUDE, no aux data, 0 sources
  "ff 02 00 00 00 00 00 00 00 00 00 01 ff 12 34 56", // ff02::1:ff12:3456
);

/** Offset of the MLD message in {@linkcode MLD_REPORT}. */
export const MLD_REPORT_ICMP_OFF = 14 + 40 + 8;

/** Every golden frame, by name, for the tests that loop over all of them. */
export const GOLDEN_FRAMES: Readonly<Record<string, Uint8Array>> = {
  ARP_REQUEST,
  TCP_SYN_4,
  TCP_DATA_6,
  UDP_6,
  UDP_4,
  ICMP_ECHO_4,
  ICMP6_ECHO,
  NDP_RA,
  NDP_NS,
  MLD_REPORT,
};

// Views and scratch objects reused by parseFrame, as the receive path will.
const eth = new EthFrame();
const arp = new ArpPacket();
const ip4 = new Ip4Packet();
const ip6 = new Ip6Packet();
const tcp = new TcpPacket();
const udp = new UdpPacket();
const icmp = new IcmpPacket();
const icmp6 = new Icmp6Packet();
const upper = ip6UpperNew();
const ndpOpts = new NdpOptions();

/**
 * Runs the frame at `frame[off..off+len)` through every parser and check the
 * receive path will have:
 * wrap each layer, its meaning checks and checksums, option walks, and
 * every accessor. Returns 0 if the frame is good throughout, else the first
 * error. Also asserts the view contract: every wrapped range stays inside
 * the range of the layer below, and accessors return finite numbers.
 */
export function parseFrame(
  frame: Uint8Array,
  off = 0,
  len: number = frame.length - off,
): WireError | 0 {
  let err = eth.wrap(frame, off, len);
  if (err !== 0) return err;
  inside(eth.payloadOffset, eth.payloadLen, off, len);
  switch (eth.ethertype) {
    case EtherType.Arp: {
      err = arp.wrap(frame, eth.payloadOffset, eth.payloadLen);
      if (err !== 0) return err;
      inside(arp.off, arp.len, eth.payloadOffset, eth.payloadLen);
      const r = arpParse(arp);
      return isWireError(r) ? r : 0;
    }
    case EtherType.Ipv4: {
      err = ip4.wrap(frame, eth.payloadOffset, eth.payloadLen);
      if (err !== 0) return err;
      inside(ip4.off, ip4.len, eth.payloadOffset, eth.payloadLen);
      inside(ip4.payloadOffset, ip4.payloadLen, ip4.off, ip4.len);
      inside(ip4.optionsOffset, ip4.optionsLen, ip4.off, ip4.headerLen);
      // The upper layer is parsed even when the IP header is refused, so the
      // fuzz test reaches it with lying lengths too; the first error wins.
      const r = ip4Parse(ip4);
      const l4 = parseL4(frame, ip4.proto, ip4.payloadOffset, ip4.payloadLen, 4);
      return isWireError(r) ? r : l4;
    }
    case EtherType.Ipv6: {
      err = ip6.wrap(frame, eth.payloadOffset, eth.payloadLen);
      if (err !== 0) return err;
      inside(ip6.off, ip6.len, eth.payloadOffset, eth.payloadLen);
      const r = ip6Parse(ip6);
      err = ip6.findUpper(upper);
      if (err !== 0) return isWireError(r) ? r : err;
      inside(upper.offset, upper.len, ip6.payloadOffset, ip6.payloadLen);
      const l4 = parseL4(frame, upper.proto, upper.offset, upper.len, 6);
      return isWireError(r) ? r : l4;
    }
    default:
      return 0;
  }
}

function parseL4(frame: Uint8Array, proto: number, off: number, len: number, family: 4 | 6) {
  let err: WireError | 0;
  switch (proto) {
    case IpProto.Tcp: {
      err = tcp.wrap(frame, off, len);
      if (err !== 0) return err;
      inside(tcp.payloadOffset, tcp.payloadLen, off, len);
      inside(tcp.optionsOffset, tcp.optionsLen, off, tcp.headerLen);
      finite(tcp.srcPort + tcp.dstPort + tcp.seq + tcp.ack + tcp.flags + tcp.window + tcp.urgent);
      const ok = family === 4
        ? tcp.checksumOk4(ip4.src, ip4.dst)
        : tcp.checksumOk6(frame, ip6.srcOffset, ip6.dstOffset);
      const r = tcpParse(tcp);
      if (isWireError(r)) return r;
      return ok ? 0 : WireError.BadChecksum;
    }
    case IpProto.Udp: {
      err = udp.wrap(frame, off, len);
      if (err !== 0) return err;
      inside(udp.off, udp.len, off, len);
      inside(udp.payloadOffset, udp.payloadLen, udp.off, udp.len);
      const ok = family === 4
        ? udp.checksumOk4(ip4.src, ip4.dst)
        : udp.checksumOk6(frame, ip6.srcOffset, ip6.dstOffset);
      const r = udpParse(udp);
      if (isWireError(r)) return r;
      return ok ? 0 : WireError.BadChecksum;
    }
    case IpProto.Icmp: {
      err = icmp.wrap(frame, off, len);
      if (err !== 0) return err;
      inside(icmp.payloadOffset, icmp.payloadLen, off, len);
      finite(icmp.type + icmp.code + icmp.rest + icmp.ident + icmp.seq + icmp.mtu + icmp.pointer);
      const r = icmpParse(icmp);
      return isWireError(r) ? r : 0;
    }
    case IpProto.Icmp6: {
      err = icmp6.wrap(frame, off, len);
      if (err !== 0) return err;
      inside(icmp6.payloadOffset, icmp6.payloadLen, off, len);
      inside(icmp6.optionsOffset, icmp6.optionsLen, off, len);
      const ok = icmp6.checksumOk(frame, ip6.srcOffset, ip6.dstOffset);
      const r = icmp6Parse(icmp6);
      if (isWireError(r)) return r;
      const n = ndpParse(icmp6);
      if (!isWireError(n)) {
        err = ndpOptionsParse(icmp6, ndpOpts);
        if (err !== 0) return err;
        for (const o of [ndpOpts.srcLinkAddrOffset, ndpOpts.tgtLinkAddrOffset]) {
          if (o >= 0) inside(o, 6, off, len);
        }
        for (let i = 0; i < ndpOpts.prefixCount; i++) {
          inside(ndpOpts.prefixOffsets[i], 32, off, len);
          ndpPrefixInfoRead(frame, ndpOpts.prefixOffsets[i]);
        }
        if (ndpOpts.rdnssOffset >= 0) {
          inside(ndpOpts.rdnssOffset, 16 * ndpOpts.rdnssCount, off, len);
        }
      }
      return ok ? 0 : WireError.BadChecksum;
    }
    default:
      return 0;
  }
}

function inside(off: number, len: number, outerOff: number, outerLen: number): void {
  if (!(len >= 0 && off >= outerOff && off + len <= outerOff + outerLen)) {
    throw new Error(`range [${off}, +${len}) escapes [${outerOff}, +${outerLen})`);
  }
}

function finite(x: number): void {
  if (!Number.isFinite(x)) throw new Error(`accessor read outside the buffer (${x})`);
}

// Byte values that make length and offset fields lie in interesting ways.
const NASTY = [
  0,
  1,
  2,
  3,
  4,
  5,
  7,
  8,
  0x0f,
  0x10,
  0x3f,
  0x40,
  0x45,
  0x46,
  0x4f,
  0x60,
  0x7f,
  0x80,
  0xf0,
  0xfe,
  0xff,
];

/**
 * A damaged copy of `frame`: 1 to 4 edits — a random byte, a nasty value in
 * the headers, off by one, truncated, or grown with random bytes.
 */
export function mutateFrame(rand: () => number, frame: Uint8Array): Uint8Array {
  let out = frame.slice();
  const edits = 1 + ((rand() * 4) | 0);
  for (let e = 0; e < edits; e++) {
    const kind = rand();
    if (out.length === 0) break;
    const at = (rand() * out.length) | 0;
    if (kind < 0.35) {
      out[at] = (rand() * 256) | 0; // random byte
    } else if (kind < 0.7) {
      // Headers and their length fields live in the first ~100 bytes.
      const h = (rand() * Math.min(out.length, 100)) | 0;
      out[h] = NASTY[(rand() * NASTY.length) | 0];
    } else if (kind < 0.8) {
      out[at] = (out[at] + (rand() < 0.5 ? 1 : 255)) & 0xff; // off by one
    } else if (kind < 0.9) {
      out = out.slice(0, (rand() * out.length) | 0); // truncate
    } else {
      const grown = new Uint8Array(out.length + 1 + ((rand() * 40) | 0));
      grown.set(out);
      for (let i = out.length; i < grown.length; i++) grown[i] = (rand() * 256) | 0;
      out = grown; // extra bytes past the end
    }
  }
  return out;
}
