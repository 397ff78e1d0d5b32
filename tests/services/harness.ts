/**
 * Shared ground of the service tests: the guest network they run against, a
 * fake tap backend that records what the services send, builders for request
 * frames as real clients send them, and the views the dispatcher would hand
 * the services.
 *
 * @module
 */

import { parseIp4, parseIp6 } from "../../lib/addr.ts";
import { type GuestNet, ip4ToU32, linkLocalFromMac, TAPIR_MAC } from "../../lib/net.ts";
import { arpEmit, arpReprNew } from "../../lib/packet/arp.ts";
import { checksumPseudo4, checksumPseudo6 } from "../../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { Icmp6Packet } from "../../lib/packet/icmp6.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../../lib/packet/ip4.ts";
import {
  IP6_HEADER_LEN,
  ip6Emit,
  ip6MulticastMac,
  Ip6Packet,
  ip6ReprNew,
  ip6UpperNew,
} from "../../lib/packet/ip6.ts";
import { UDP_HEADER_LEN, udpEmit, UdpPacket } from "../../lib/packet/udp.ts";
import { tcpEmit, TcpFlag, tcpHeaderLen, tcpReprNew } from "../../lib/packet/tcp.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { icmp6ChecksumFill } from "../../lib/packet/checksum.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend, TapSender } from "../../lib/tap/tap.ts";
import { GuestState } from "../../lib/services/guest.ts";
import type { ServiceContext } from "../../lib/services/service.ts";

/** An IPv4 address as a u32, from text. */
export function v4(s: string): number {
  const b = parseIp4(s);
  if (b === null) throw new Error(`bad IPv4 address ${s}`);
  return ip4ToU32(b);
}

/** An IPv6 address as 16 bytes, from text. */
export function v6(s: string): Uint8Array {
  const b = parseIp6(s);
  if (b === null) throw new Error(`bad IPv6 address ${s}`);
  return b;
}

/** The guest's MAC (QEMU's default range). */
export const GUEST_MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
/** The guest's link-local address, from its MAC. */
export const GUEST_LL = linkLocalFromMac(GUEST_MAC);
/** The guest's SLAAC address in 2001:db8::/64. */
export const GUEST_SLAAC: Uint8Array = (() => {
  const a = linkLocalFromMac(GUEST_MAC);
  a.set(v6("2001:db8::").subarray(0, 8), 0);
  return a;
})();

/** The network the tests present to the guest: the RFC 5737/3849 documentation ranges. */
export const NET: GuestNet = {
  ourMac: TAPIR_MAC,
  mtu: 65520,
  ip4: {
    addr: v4("192.0.2.2"),
    prefixLen: 24,
    gateway: v4("192.0.2.1"),
    dns: [v4("192.0.2.1"), v4("198.51.100.53")],
  },
  ip6: {
    addr: v6("2001:db8::2"),
    prefixLen: 64,
    gateway: linkLocalFromMac(TAPIR_MAC),
    ourLinkLocal: linkLocalFromMac(TAPIR_MAC),
    dns: [v6("2001:db8::1"), v6("2001:db8:53::53")],
  },
  search: ["example.com", "lab.example.org"],
  bootfile: "",
  mapLo4: [],
  mapLo6: [],
  loopbackOnly: false,
  dnsForward4: 0,
  dnsHost4: 0,
  dnsForward6: null,
  dnsHost6: null,
  udpTimeoutMs: 180_000,
  services: { dhcp: true, ndp: true, dhcpv6: true, ra: true },
};

/** `NET` with some fields replaced. */
export function netWith(over: Partial<GuestNet>): GuestNet {
  return { ...NET, ...over };
}

/** A tap backend that keeps a copy of every frame sent (Ethernet bytes, unpadded). */
export class RecordingBackend implements TapBackend {
  readonly name = "recording";
  readonly fd = -1;
  readonly checksumOffload: boolean = false;
  readonly gsoTcp: boolean = false;
  sendBlocked = false;
  readonly frames: Uint8Array[] = [];

  receive(_batch: FrameBatch): number {
    return 0;
  }

  send(batch: FrameBatch, count: number): number {
    for (let k = 0; k < count; k++) {
      const i = batch.order[k];
      this.frames.push(batch.slots[i].slice(TAP_HEADROOM, TAP_HEADROOM + batch.lens[i]));
    }
    return count;
  }
}

/** A service context over a recording backend, and a way to collect what was sent. */
export interface Rig {
  /** What the services get. */
  readonly ctx: ServiceContext;
  /** The backend behind `ctx.tap`. */
  readonly backend: RecordingBackend;
  /** Flushes the send path and returns the frames sent since the last call. */
  sent(): Uint8Array[];
}

/** A fresh rig for `net`. */
export function rig(net: GuestNet = NET): Rig {
  const backend = new RecordingBackend();
  const tap = new TapSender(backend, 8);
  const ctx: ServiceContext = { net, guest: new GuestState(), tap };
  let seen = 0;
  return {
    ctx,
    backend,
    sent() {
      tap.flush();
      const out = backend.frames.slice(seen);
      seen = backend.frames.length;
      return out;
    },
  };
}

// ---------------------------------------------------------------------------
// Request frames, built with the packet builders.

/** An ARP frame: `op`, sender MAC/IP, target MAC/IP, at Ethernet destination `dstMac`. */
export function arpFrame(
  op: number,
  sha: Uint8Array,
  spa: number,
  tha: Uint8Array,
  tpa: number,
  dstMac: Uint8Array = new Uint8Array(6).fill(0xff),
): Uint8Array {
  const f = new Uint8Array(ETH_HEADER_LEN + 28);
  ethEmit(f, 0, dstMac, sha, EtherType.Arp);
  const r = arpReprNew();
  r.op = op;
  r.sha.set(sha);
  r.spa = spa;
  r.tha.set(tha);
  r.tpa = tpa;
  arpEmit(f, ETH_HEADER_LEN, r);
  return f;
}

/** An Ethernet/IPv4/UDP frame carrying `payload`, checksums filled. */
export function udp4Frame(
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  src: number,
  dst: number,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): Uint8Array {
  const udpLen = UDP_HEADER_LEN + payload.length;
  const f = new Uint8Array(ETH_HEADER_LEN + IP4_HEADER_LEN + udpLen);
  let p = ethEmit(f, 0, dstMac, srcMac, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = src;
  ip.dst = dst;
  ip.proto = IpProto.Udp;
  ip.ttl = 64;
  ip.tos = 0x10; // udhcpc asks for low delay
  ip.payloadLen = udpLen;
  p += ip4Emit(f, p, ip);
  f.set(payload, p + UDP_HEADER_LEN);
  udpEmit(
    f,
    p,
    { srcPort, dstPort, payloadLen: payload.length },
    checksumPseudo4(src, dst, IpProto.Udp, udpLen),
  );
  return f;
}

/** What {@linkcode tcpFrame} puts in a segment. */
export interface TcpSegmentSpec {
  /** Addresses: IPv4 as numbers, IPv6 as 16 bytes. */
  readonly src: number | Uint8Array;
  readonly dst: number | Uint8Array;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly seq: number;
  readonly ack: number;
  readonly flags: number;
  readonly window: number;
  readonly payload?: Uint8Array;
  /** Window scale a SYN offers (MSS 1460 goes with it). */
  readonly wscale?: number;
}

/** An Ethernet/IPv4 or IPv6/TCP frame from the guest to tapir, checksums filled. */
export function tcpFrame(t: TcpSegmentSpec): Uint8Array {
  const r = tcpReprNew();
  r.srcPort = t.srcPort;
  r.dstPort = t.dstPort;
  r.seq = t.seq >>> 0;
  r.ack = t.ack >>> 0;
  r.flags = t.flags;
  r.window = t.window;
  const payload = t.payload ?? new Uint8Array(0);
  r.payloadLen = payload.length;
  if (t.flags & TcpFlag.Syn) {
    r.options.mss = 1460;
    r.options.wscale = t.wscale ?? 7;
  }
  const segLen = tcpHeaderLen(r) + payload.length;
  const v6 = typeof t.src !== "number";
  const f = new Uint8Array(ETH_HEADER_LEN + (v6 ? IP6_HEADER_LEN : IP4_HEADER_LEN) + segLen);
  let p = ethEmit(f, 0, NET.ourMac, GUEST_MAC, v6 ? EtherType.Ipv6 : EtherType.Ipv4);
  let pseudo: number;
  if (typeof t.src !== "number" && typeof t.dst !== "number") {
    const ip = ip6ReprNew();
    ip.src.set(t.src);
    ip.dst.set(t.dst);
    ip.nextHeader = IpProto.Tcp;
    ip.hopLimit = 64;
    ip.payloadLen = segLen;
    p += ip6Emit(f, p, ip);
    pseudo = checksumPseudo6(t.src, 0, t.dst, 0, IpProto.Tcp, segLen);
  } else {
    const ip = ip4ReprNew();
    ip.src = t.src as number;
    ip.dst = t.dst as number;
    ip.proto = IpProto.Tcp;
    ip.ttl = 64;
    ip.payloadLen = segLen;
    p += ip4Emit(f, p, ip);
    pseudo = checksumPseudo4(ip.src, ip.dst, IpProto.Tcp, segLen);
  }
  f.set(payload, p + tcpHeaderLen(r));
  tcpEmit(f, p, r, pseudo);
  return f;
}

/**
 * An Ethernet/IPv6 frame whose upper layer `proto` is `upper` (written at
 * its place, then `finish` fills its checksum), at the multicast MAC of `dst`
 * when `dstMac` is omitted.
 */
function ip6Frame(
  srcMac: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  hopLimit: number,
  proto: number,
  upperLen: number,
  write: (f: Uint8Array, off: number) => void,
  dstMac?: Uint8Array,
): Uint8Array {
  const f = new Uint8Array(ETH_HEADER_LEN + IP6_HEADER_LEN + upperLen);
  const mac = new Uint8Array(6);
  if (dstMac) mac.set(dstMac);
  else ip6MulticastMac(mac, 0, dst, 0);
  ethEmit(f, 0, mac, srcMac, EtherType.Ipv6);
  const ip = ip6ReprNew();
  ip.src.set(src);
  ip.dst.set(dst);
  ip.nextHeader = proto;
  ip.hopLimit = hopLimit;
  ip.payloadLen = upperLen;
  ip6Emit(f, ETH_HEADER_LEN, ip);
  write(f, ETH_HEADER_LEN + IP6_HEADER_LEN);
  return f;
}

/** An Ethernet/IPv6/UDP frame carrying `payload`, checksum filled. */
export function udp6Frame(
  srcMac: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
  hopLimit = 1,
  dstMac?: Uint8Array,
): Uint8Array {
  const udpLen = UDP_HEADER_LEN + payload.length;
  return ip6Frame(srcMac, src, dst, hopLimit, IpProto.Udp, udpLen, (f, off) => {
    f.set(payload, off + UDP_HEADER_LEN);
    udpEmit(
      f,
      off,
      { srcPort, dstPort, payloadLen: payload.length },
      checksumPseudo6(src, 0, dst, 0, IpProto.Udp, udpLen),
    );
  }, dstMac);
}

/**
 * An Ethernet/IPv6/ICMPv6 frame carrying the message `icmp` (checksum field
 * ignored and filled here unless `badChecksum`).
 */
export function icmp6Frame(
  srcMac: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  icmp: Uint8Array,
  opts: { hopLimit?: number; badChecksum?: boolean; dstMac?: Uint8Array } = {},
): Uint8Array {
  const f = ip6Frame(
    srcMac,
    src,
    dst,
    opts.hopLimit ?? 255,
    IpProto.Icmp6,
    icmp.length,
    (f, off) => {
      f.set(icmp, off);
      const ipOff = ETH_HEADER_LEN;
      icmp6ChecksumFill(f, off, icmp.length, f, ipOff + 8, ipOff + 24);
      if (opts.badChecksum) f[off + 2] ^= 0x55;
    },
    opts.dstMac,
  );
  return f;
}

// ---------------------------------------------------------------------------
// What the dispatcher hands the services.

/** The views of a frame as the dispatcher would pass them; throws if any layer is invalid. */
export interface Views {
  eth: EthFrame;
  ip4: Ip4Packet;
  ip6: Ip6Packet;
  udp: UdpPacket;
  icmp6: Icmp6Packet;
}

/** Wraps `frame` layer by layer, as far as its protocols go. */
export function views(frame: Uint8Array): Views {
  const v: Views = {
    eth: new EthFrame(),
    ip4: new Ip4Packet(),
    ip6: new Ip6Packet(),
    udp: new UdpPacket(),
    icmp6: new Icmp6Packet(),
  };
  must(v.eth.wrap(frame, 0, frame.length), "eth");
  if (v.eth.ethertype === EtherType.Ipv4) {
    must(v.ip4.wrap(frame, v.eth.payloadOffset, v.eth.payloadLen), "ip4");
    if (v.ip4.proto === IpProto.Udp) {
      must(v.udp.wrap(frame, v.ip4.payloadOffset, v.ip4.payloadLen), "udp");
    }
  } else if (v.eth.ethertype === EtherType.Ipv6) {
    must(v.ip6.wrap(frame, v.eth.payloadOffset, v.eth.payloadLen), "ip6");
    const up = ip6UpperNew();
    must(v.ip6.findUpper(up), "ip6 upper");
    if (up.proto === IpProto.Udp) must(v.udp.wrap(frame, up.offset, up.len), "udp");
    if (up.proto === IpProto.Icmp6) must(v.icmp6.wrap(frame, up.offset, up.len), "icmp6");
  }
  return v;
}

function must(err: number, what: string): void {
  if (err !== 0) throw new Error(`${what}: wire error ${err}`);
}

// ---------------------------------------------------------------------------
// tshark.

/** Path of tshark, or null if it is not installed. */
export const TSHARK: string | null = (() => {
  for (const p of ["/usr/bin/tshark", "/usr/sbin/tshark"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not there
    }
  }
  return null;
})();
