/**
 * The RSC coalescer, one rule at a time: crafted segment sequences go in as
 * the dispatcher would hand them over, a recording sink stands where TCP
 * is, and each test checks what reached it — how many segments, which
 * payload bytes in which order, which ACK and window — and the counter
 * that moved. (What TCP then does with a merged segment, one socket write
 * and one ACK, is checked in tcp_test.ts.)
 */
import { deepEqual, equal } from "node:assert/strict";
import { Rsc, type RscSink, type RscStats } from "../../lib/l4/rsc.ts";
import type { TcpMerged } from "../../lib/l4/tcp.ts";
import {
  checksumPseudo4,
  checksumPseudo6,
  ip4HeaderChecksumFill,
} from "../../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType } from "../../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../../lib/packet/ip4.ts";
import { IP6_HEADER_LEN, ip6Emit, Ip6Packet, ip6ReprNew } from "../../lib/packet/ip6.ts";
import { tcpEmit, TcpFlag, tcpHeaderLen, TcpPacket, tcpReprNew } from "../../lib/packet/tcp.ts";
import { UDP_HEADER_LEN, udpEmit, udpReprNew } from "../../lib/packet/udp.ts";
import { IpProto, WireError } from "../../lib/packet/wire.ts";
import { TapInput } from "../../lib/tap/input.ts";
import { GUEST_MAC, NET, rig, v4, v6 } from "../services/harness.ts";

const SRC4 = v4("192.0.2.2");
const DST4 = v4("192.0.2.1");
const SRC6 = v6("2001:db8::2");
const DST6 = v6("2001:db8::1");
const ISN = 0xffff_f000 | 0; // near 2^32: chains wrap the sequence space (signed, as seq.ts keeps it)
const ACK = 5000;
const WINDOW = 1000;

/** One segment as TCP would receive it, merged or not. */
interface Delivered {
  seq: number;
  ack: number;
  window: number;
  flags: number;
  /** Payload of the head and of every piece merged behind it, in order. */
  payload: number[];
}

/** Stands where TCP is: records what the coalescer hands over. */
class RecordingSink implements RscSink {
  readonly got: Delivered[] = [];
  fromTap4(_ip: Ip4Packet, seg: TcpPacket, m: TcpMerged | null): void {
    this.#record(seg, m);
  }
  fromTap6(_ip: Ip6Packet, seg: TcpPacket, _upperOff: number, m: TcpMerged | null): void {
    this.#record(seg, m);
  }
  #record(seg: TcpPacket, m: TcpMerged | null): void {
    const payload = [...seg.buf.subarray(seg.payloadOffset, seg.payloadOffset + seg.payloadLen)];
    if (m !== null) {
      for (let i = 0; i < m.count; i++) {
        payload.push(...m.bufs[i].subarray(m.offs[i], m.offs[i] + m.lens[i]));
      }
    }
    this.got.push({
      seq: seg.seq,
      ack: m?.ack ?? seg.ack,
      window: m?.window ?? seg.window,
      flags: m?.flags ?? seg.flags,
      payload,
    });
  }
}

/** What a segment to craft looks like. */
interface SegSpec {
  /** Sequence offset from {@linkcode ISN}. */
  at: number;
  /** Payload bytes (their values: `(at + i) & 0xff`). */
  len?: number;
  flags?: number;
  ack?: number;
  window?: number;
  /** TCP options bytes (padded by the caller to a multiple of 4). */
  options?: number[];
  /** IPv4 options bytes (multiple of 4). */
  ipOptions?: number[];
  /** Port of the guest's side (a second connection). */
  port?: number;
}

/** An IPv4 TCP segment's views, as the dispatcher would hand them over. */
function seg4(s: SegSpec): [Ip4Packet, TcpPacket] {
  const len = s.len ?? 0;
  const opts = s.options ?? [];
  const ipOpts = s.ipOptions ?? [];
  const tcpLen = 20 + opts.length + len;
  const ipHdr = IP4_HEADER_LEN + ipOpts.length;
  const f = new Uint8Array(ETH_HEADER_LEN + ipHdr + tcpLen);
  ethEmit(f, 0, NET.ourMac, GUEST_MAC, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = SRC4;
  ip.dst = DST4;
  ip.proto = IpProto.Tcp;
  ip.payloadLen = tcpLen;
  ip4Emit(f, ETH_HEADER_LEN, ip);
  if (ipOpts.length > 0) {
    // Move the TCP part up and widen the header: IHL covers the options.
    f[ETH_HEADER_LEN] = 0x40 | (ipHdr / 4);
    const total = ipHdr + tcpLen;
    f[ETH_HEADER_LEN + 2] = total >> 8;
    f[ETH_HEADER_LEN + 3] = total & 0xff;
    f.set(ipOpts, ETH_HEADER_LEN + IP4_HEADER_LEN);
  }
  const l4 = ETH_HEADER_LEN + ipHdr;
  writeTcp(f, l4, s, checksumPseudo4(SRC4, DST4, IpProto.Tcp, tcpLen));
  const ipv = new Ip4Packet();
  equal(ipv.wrap(f, ETH_HEADER_LEN, ipHdr + tcpLen), 0);
  const t = new TcpPacket();
  equal(t.wrap(f, l4, tcpLen), 0);
  return [ipv, t];
}

function writeTcp(f: Uint8Array, l4: number, s: SegSpec, pseudo: number): void {
  const r = tcpReprNew();
  r.srcPort = s.port ?? 40000;
  r.dstPort = 80;
  r.seq = (ISN + s.at) >>> 0;
  r.ack = s.ack ?? ACK;
  r.flags = s.flags ?? TcpFlag.Ack;
  r.window = s.window ?? WINDOW;
  r.payloadLen = s.len ?? 0;
  const opts = s.options ?? [];
  const hl = tcpHeaderLen(r);
  for (let i = 0; i < (s.len ?? 0); i++) f[l4 + hl + opts.length + i] = (s.at + i) & 0xff;
  if (opts.length > 0) {
    // Options go between the fixed header and the payload.
    f.copyWithin(l4 + 20 + opts.length, l4 + 20, l4 + 20 + (s.len ?? 0));
  }
  tcpEmit(f, l4, r, pseudo);
  if (opts.length > 0) {
    f[l4 + 12] = ((20 + opts.length) / 4) << 4;
    f.set(opts, l4 + 20);
    for (let i = 0; i < (s.len ?? 0); i++) f[l4 + 20 + opts.length + i] = (s.at + i) & 0xff;
  }
}

/** An IPv6 segment, optionally behind a hop-by-hop extension header. */
function seg6(s: SegSpec, hopByHop = false): [Ip6Packet, TcpPacket, number] {
  const len = s.len ?? 0;
  const ext = hopByHop ? 8 : 0;
  const tcpLen = 20 + len;
  const f = new Uint8Array(ETH_HEADER_LEN + IP6_HEADER_LEN + ext + tcpLen);
  ethEmit(f, 0, NET.ourMac, GUEST_MAC, EtherType.Ipv6);
  const ip = ip6ReprNew();
  ip.src.set(SRC6);
  ip.dst.set(DST6);
  ip.nextHeader = hopByHop ? 0 : IpProto.Tcp;
  ip.payloadLen = ext + tcpLen;
  ip6Emit(f, ETH_HEADER_LEN, ip);
  const l4 = ETH_HEADER_LEN + IP6_HEADER_LEN + ext;
  if (hopByHop) {
    f[l4 - 8] = IpProto.Tcp; // next header; length 0 (8 bytes); PadN follows
    f[l4 - 6] = 1;
    f[l4 - 5] = 4;
  }
  writeTcp(f, l4, s, checksumPseudo6(SRC6, 0, DST6, 0, IpProto.Tcp, tcpLen));
  const ipv = new Ip6Packet();
  equal(ipv.wrap(f, ETH_HEADER_LEN, IP6_HEADER_LEN + ext + tcpLen), 0);
  const t = new TcpPacket();
  equal(t.wrap(f, l4, tcpLen), 0);
  return [ipv, t, l4];
}

/** A coalescer over a recording sink. */
function setup(): { rsc: Rsc; sink: RecordingSink } {
  const sink = new RecordingSink();
  return { rsc: new Rsc(sink), sink };
}

/** Feeds IPv4 segments as one batch and drains it. */
function batch4(rsc: Rsc, specs: SegSpec[]): void {
  for (const s of specs) rsc.fromTap4(...seg4(s));
  rsc.drain();
}

/** The expected payload bytes of stream offsets `[from, to)`. */
function bytes(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => (from + i) & 0xff);
}

/** The counters that are not zero. */
function moved(stats: RscStats): Partial<RscStats> {
  return Object.fromEntries(Object.entries(stats).filter(([, v]) => v !== 0));
}

Deno.test("in-order segments of one connection merge: one segment, payload in order, last ACK and window", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, len: 1000 },
    { at: 1000, len: 1000, ack: ACK + 10 },
    { at: 2000, len: 1000, ack: ACK + 20, window: 900, flags: TcpFlag.Ack | TcpFlag.Psh },
  ]);
  equal(sink.got.length, 1);
  const d = sink.got[0];
  equal(d.seq, ISN);
  deepEqual(d.payload, bytes(0, 3000));
  equal(d.ack, ACK + 20);
  equal(d.window, 900);
  equal(d.flags, TcpFlag.Ack | TcpFlag.Psh, "PSH carried over");
  deepEqual(moved(rsc.stats), {
    segments: 3,
    coalesced: 2,
    data: 2,
    chains: 1,
    finalBatchEnd: 1,
  });
});

Deno.test("a chain never outlives its batch: nothing reaches TCP before the drain", () => {
  const { rsc, sink } = setup();
  rsc.fromTap4(...seg4({ at: 0, len: 100 }));
  rsc.fromTap4(...seg4({ at: 100, len: 100 }));
  equal(sink.got.length, 0, "held while the batch lasts");
  rsc.drain();
  equal(sink.got.length, 1);
  rsc.drain();
  equal(sink.got.length, 1, "a drained chain is gone");
  rsc.fromTap4(...seg4({ at: 200, len: 100 }));
  rsc.drain();
  equal(sink.got.length, 2, "the next batch starts a new chain");
  equal(rsc.stats.finalBatchEnd, 2);
});

Deno.test("a segment out of order finalizes the chain and starts the next one", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [{ at: 0, len: 100 }, { at: 100, len: 100 }, { at: 300, len: 100 }, {
    at: 400,
    len: 100,
  }]);
  deepEqual(sink.got.map((d) => [d.seq - ISN >>> 0, d.payload.length]), [[0, 200], [300, 200]]);
  equal(rsc.stats.outOfOrder, 1);
  equal(rsc.stats.coalesced, 2);
});

Deno.test("a segment out of window (a retransmission from before the chain) finalizes it", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [{ at: 100_000, len: 100 }, { at: 100, len: 100 }]);
  equal(sink.got.length, 2);
  equal(rsc.stats.outOfWindow, 1);
  equal(rsc.stats.outOfOrder, 0, "counted as out of window, not out of order");
});

Deno.test("SYN bypasses: handed over at once, no chain", () => {
  const { rsc, sink } = setup();
  rsc.fromTap4(...seg4({ at: 0, flags: TcpFlag.Syn, ack: 0 }));
  equal(sink.got.length, 1, "before the drain");
  rsc.drain();
  equal(sink.got.length, 1);
  deepEqual(moved(rsc.stats), { segments: 1, bypassSyn: 1 });
});

for (
  const [name, flag, counter] of [
    ["FIN", TcpFlag.Fin, "finalFin"],
    ["RST", TcpFlag.Rst, "finalRst"],
    ["URG", TcpFlag.Urg, "finalUrg"],
  ] as const
) {
  Deno.test(`${name} finalizes: the chain is written first, then the ${name} segment alone`, () => {
    const { rsc, sink } = setup();
    batch4(rsc, [
      { at: 0, len: 100 },
      { at: 100, len: 100 },
      { at: 200, len: 50, flags: TcpFlag.Ack | flag },
      { at: 250, len: 10 },
    ]);
    deepEqual(
      sink.got.map((d) => [d.seq - ISN >>> 0, d.payload.length, (d.flags & flag) !== 0]),
      [[0, 200, false], [200, 50, true], [250, 10, false]],
    );
    equal(rsc.stats[counter], 1);
    equal(rsc.stats.chains, 1);
  });
}

Deno.test("IPv4 options bypass", () => {
  const { rsc, sink } = setup();
  rsc.fromTap4(...seg4({ at: 0, len: 100 }));
  rsc.fromTap4(...seg4({ at: 100, len: 100, ipOptions: [1, 1, 1, 0] }));
  equal(sink.got.length, 1, "the optioned segment went at once");
  rsc.drain();
  equal(sink.got.length, 2);
  equal(rsc.stats.bypassIpOptions, 1);
});

Deno.test("IPv6 extension headers bypass; plain IPv6 segments merge", () => {
  const { rsc, sink } = setup();
  const [ip, seg, up] = seg6({ at: 0, len: 100 }, true);
  rsc.fromTap6(ip, seg, up);
  equal(sink.got.length, 1);
  equal(rsc.stats.bypassIp6Ext, 1);
  for (const at of [0, 100, 200]) rsc.fromTap6(...seg6({ at, len: 100 }));
  rsc.drain();
  equal(sink.got.length, 2);
  deepEqual(sink.got[1].payload, bytes(0, 300));
  equal(rsc.stats.coalesced, 2);
});

Deno.test("a change of TCP options finalizes; a change of timestamp values does not", () => {
  const ts = (v: number) => [1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 1];
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, len: 100, options: ts(1) },
    { at: 100, len: 100, options: ts(2) },
    { at: 200, len: 100, options: [1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2] }, // SACK instead
  ]);
  deepEqual(sink.got.map((d) => d.payload.length), [200, 100]);
  equal(rsc.stats.finalOptions, 1);
  equal(rsc.stats.coalesced, 1, "the timestamp change merged");
});

Deno.test("pure ACKs that move the acknowledgement merge, and so do window updates", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, ack: ACK },
    { at: 0, ack: ACK + 1000 },
    { at: 0, ack: ACK + 2000 },
    { at: 0, ack: ACK + 2000, window: 2000 },
  ]);
  equal(sink.got.length, 1);
  equal(sink.got[0].ack, ACK + 2000);
  equal(sink.got[0].window, 2000);
  equal(rsc.stats.pureAcks, 2);
  equal(rsc.stats.windowUpdates, 1);
});

Deno.test("a duplicate ACK is never swallowed: the chain goes first, then each duplicate alone", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, ack: ACK },
    { at: 0, ack: ACK },
    { at: 0, ack: ACK },
    { at: 0, ack: ACK },
  ]);
  equal(sink.got.length, 4, "the guest's fast retransmit needs all three duplicates");
  // The first is a chain's head, the second finalizes it and goes alone, the
  // third heads a new chain, which the fourth finalizes.
  equal(rsc.stats.finalDupAck, 2);
  equal(rsc.stats.coalesced, 0);
});

Deno.test("data after a pure ACK merges; an older ACK finalizes", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, ack: ACK + 5 },
    { at: 0, len: 100, ack: ACK + 5 },
    { at: 100, len: 100, ack: ACK },
  ]);
  deepEqual(sink.got.map((d) => [d.payload.length, d.ack]), [[100, ACK + 5], [100, ACK]]);
  equal(rsc.stats.dataAfterAck, 1);
  equal(rsc.stats.finalOldAck, 1);
});

Deno.test("merged payload stays within 65535 bytes", () => {
  const { rsc, sink } = setup();
  const specs = Array.from({ length: 50 }, (_, i) => ({ at: i * 1460, len: 1460 }));
  batch4(rsc, specs);
  equal(sink.got.length, 2);
  equal(sink.got[0].payload.length, 44 * 1460, "44 × 1460 = 64240; one more would pass 65535");
  equal(sink.got[1].payload.length, 6 * 1460);
  equal(rsc.stats.overSize, 1);
  deepEqual(sink.got.flatMap((d) => d.payload), bytes(0, 50 * 1460));
});

Deno.test("connections are merged apart, and each keeps its order", () => {
  const { rsc, sink } = setup();
  batch4(rsc, [
    { at: 0, len: 10, port: 1 },
    { at: 0, len: 10, port: 2 },
    { at: 10, len: 10, port: 1 },
    { at: 10, len: 10, port: 2 },
  ]);
  equal(sink.got.length, 2);
  deepEqual(sink.got.map((d) => d.payload), [bytes(0, 20), bytes(0, 20)]);
  equal(rsc.stats.chains, 2);
});

Deno.test("what the dispatcher refuses never reaches the coalescer: non-TCP, bad version, lengths, fragments", () => {
  const { ctx } = rig();
  const { rsc, sink } = setup();
  const input = new TapInput(ctx, {
    arp: () => 0,
    ndp: () => 0,
    dhcp: () => 0,
    dhcpv6: () => 0,
    ping4: () => {},
    ping6: () => {},
    tcp4: (ip, seg) => rsc.fromTap4(ip, seg),
    tcp6: (ip, seg, up) => rsc.fromTap6(ip, seg, up),
    udp4: () => {},
    udp6: () => {},
  });
  const frameOf = (s: SegSpec) => {
    const [ip] = seg4(s);
    return ip.buf;
  };
  input.frame(...withLen(frameOf({ at: 0, len: 100 })));
  // A UDP datagram between two segments of the chain.
  const udp = new Uint8Array(ETH_HEADER_LEN + IP4_HEADER_LEN + UDP_HEADER_LEN + 4);
  ethEmit(udp, 0, NET.ourMac, GUEST_MAC, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = SRC4;
  ip.dst = DST4;
  ip.proto = IpProto.Udp;
  ip.payloadLen = UDP_HEADER_LEN + 4;
  ip4Emit(udp, ETH_HEADER_LEN, ip);
  const u = udpReprNew();
  u.srcPort = 1;
  u.dstPort = 9;
  u.payloadLen = 4;
  udpEmit(udp, ETH_HEADER_LEN + IP4_HEADER_LEN, u, checksumPseudo4(SRC4, DST4, IpProto.Udp, 12));
  input.frame(...withLen(udp));
  // A bad IP version, a length that lies, a fragment.
  const badVersion = frameOf({ at: 100, len: 100 });
  badVersion[ETH_HEADER_LEN] = 0x55;
  input.frame(...withLen(badVersion));
  const lying = frameOf({ at: 100, len: 100 });
  lying[ETH_HEADER_LEN + 2] = 0x10; // total length 4096 > frame
  input.frame(...withLen(lying));
  const fragment = frameOf({ at: 100, len: 100 });
  fragment[ETH_HEADER_LEN + 6] = 0x20; // more fragments
  fragment[ETH_HEADER_LEN + 10] = fragment[ETH_HEADER_LEN + 11] = 0;
  ip4HeaderChecksumFill(fragment, ETH_HEADER_LEN, IP4_HEADER_LEN);
  input.frame(...withLen(fragment));
  input.frame(...withLen(frameOf({ at: 100, len: 100 })));
  rsc.drain();
  equal(rsc.stats.segments, 2, "only the two good TCP segments");
  deepEqual(sink.got.map((d) => d.payload.length), [200], "and they merged across the rest");
  const dropped = input.stats.drop;
  deepEqual(
    [dropped[WireError.BadVersion], dropped[WireError.Truncated], dropped[WireError.Fragmented]],
    [1, 1, 1],
    "each refused frame is counted by the dispatcher, by reason",
  );
  equal(dropped.reduce((a, b) => a + b, 0), 3, "and nothing else was dropped: the UDP one passed");
});

function withLen(f: Uint8Array): [Uint8Array, number, number] {
  return [f, 0, f.length];
}
