/**
 * The frame fuzzer: hostile guest frames through the real translator.
 *
 * `deno run -A tests/fuzz/frames.ts FRAMES SEED` drives a real `Tapir`
 * (dispatcher, services, RSC, TCP, UDP, ping, flow table) behind a
 * recording backend with FRAMES frames, then prints one JSON line (the
 * {@linkcode FuzzSummary}) and exits 0, or names the seed, the frame number
 * and the broken invariant and exits 1. It opens sockets on the host side:
 * run it in a network namespace of its own (tests/fuzz/fuzz_test.ts does),
 * whose loopback is all it reaches — the guest network maps the gateway
 * to host loopback and refuses everything else (`loopbackOnly`).
 *
 * What the guest sends, by share of frames:
 * - mutated copies of the golden frames of every protocol (ARP, NDP, MLD,
 *   IPv4/IPv6 TCP, UDP, ICMP) and of DHCP and DHCPv6 requests;
 * - random bytes;
 * - segments against live TCP connections (opened with a real handshake
 *   to a server on loopback): random flags, sequence and acknowledgement
 *   numbers near and far from the expected ones, random windows, payload;
 * - any of those with a random offload descriptor (partial checksum, GSO
 *   type and size that need not match the frame).
 *
 * Invariants, checked throughout and at the end:
 * - nothing throws out of the loop (`loop.run()` would reject);
 * - every frame gets exactly one outcome at the dispatcher
 *   (`framesUnaccounted` is 0 after every batch);
 * - no flow leaks: once the guest stops and resets its connections, the
 *   flow table empties within the timeouts (shortened here);
 * - memory stays bounded: JavaScript heap in use after each tenth of the
 *   frames, and resident size at the end.
 *
 * @module
 */

import { Tapir } from "../../lib/tapir.ts";
import { framesUnaccounted } from "../../lib/tap/input.ts";
import { GsoType, VnetFlag } from "../../lib/tap/tap.ts";
import { EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { Ip4Packet } from "../../lib/packet/ip4.ts";
import { Ip6Packet } from "../../lib/packet/ip6.ts";
import { TcpFlag, TcpPacket } from "../../lib/packet/tcp.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { GOLDEN_FRAMES, mutateFrame, prng } from "../packet/golden.ts";
import {
  GUEST_MAC,
  NET,
  netWith,
  RecordingBackend,
  tcpFrame,
  udp4Frame,
  udp6Frame,
  v6,
} from "../services/harness.ts";

/** What a run reports. */
export interface FuzzSummary {
  readonly frames: number;
  readonly seed: number;
  /** The dispatcher's outcome counters at the end. */
  readonly input: Record<string, number>;
  /** Connections opened with a handshake, and those that were established. */
  readonly connections: number;
  readonly established: number;
  /** Frames tapir sent to the guest. */
  readonly framesToGuest: number;
  /** Flows live at the end of the traffic, and after the wait. */
  readonly flowsAtEnd: number;
  readonly flowsAfterWait: number;
  /** Resident size at the end, MiB; JavaScript heap in use after each tenth of the frames, MiB. */
  readonly rssMiB: number;
  readonly heapTrace: readonly number[];
  readonly seconds: number;
}

const GATEWAY4 = NET.ip4!.gateway;
const GUEST4 = NET.ip4!.addr;
const GATEWAY6 = v6("2001:db8::1");
const GUEST6 = NET.ip6!.addr;
/** The loopback server live connections go to. */
const LIVE_PORT = 7100;
/** Live connections kept open at once, and segments each gets before its reset. */
const LIVE_MAX = 8;
const LIVE_SEGMENTS = 400;
/** Frames per receive batch. */
const BATCH = 64;
/** The guest stops; then the table must empty within this (the handshake timeout is 10 s). */
const DRAIN_MS = 15_000;
/** Bounds on the resident size at the end and on the heap in use, MiB. */
const RSS_MAX_MIB = 400;
const HEAP_MAX_MIB = 96;

const FUZZ_NET = netWith({
  mapLo4: [GATEWAY4],
  mapLo6: [GATEWAY6],
  loopbackOnly: true,
  udpTimeoutMs: 200,
  pingIdleMs: 200,
});

/** A connection the fuzzer opened to the loopback server. */
interface Live {
  readonly v6: boolean;
  readonly port: number;
  /** Our next sequence number, and what tapir last acknowledged. */
  sndNxt: number;
  tapirAck: number;
  /** tapir's next sequence number (after its SYN-ACK), or -1 before it. */
  rcvNxt: number;
  segments: number;
  /** Frames generated when it was opened. */
  readonly openedAt: number;
}

/** DHCP DISCOVER and DHCPv6 SOLICIT payloads, shapes only: the mutations do the rest. */
function dhcpDiscover(): Uint8Array {
  const p = new Uint8Array(244);
  p.set([1, 1, 6, 0, 0x12, 0x34, 0x56, 0x78]);
  p.set(GUEST_MAC, 28);
  p.set([99, 130, 83, 99, 53, 1, 1, 255], 236);
  return p;
}
function dhcp6Solicit(): Uint8Array {
  return new Uint8Array([
    1,
    0xab,
    0xcd,
    0xef,
    0,
    1,
    0,
    10,
    0,
    3,
    0,
    1,
    ...GUEST_MAC,
    0,
    8,
    0,
    2,
    0,
    0,
  ]);
}

/** Runs the fuzzer; throws naming the seed and frame on a broken invariant. */
export async function runFuzz(frames: number, seed: number): Promise<FuzzSummary> {
  const started = performance.now();
  const rand = prng(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const backend = new RecordingBackend();
  const tapir = new Tapir(FUZZ_NET, backend);
  const server = Deno.listen({ hostname: "127.0.0.1", port: LIVE_PORT });
  const server6 = Deno.listen({ hostname: "::1", port: LIVE_PORT });
  let closing = false;
  const serve = async (l: Deno.Listener) => {
    while (!closing) {
      let conn: Deno.Conn;
      try {
        conn = await l.accept();
      } catch {
        continue; // reset before it was accepted, or the listener closed
      }
      (async () => {
        const buf = new Uint8Array(65536);
        try {
          for (;;) {
            const n = await conn.read(buf);
            if (n === null) break;
            if (buf[0] & 1) await conn.write(buf.subarray(0, Math.min(n, 3000)));
          }
        } catch { /* reset by the fuzzer: fine */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  };
  const serving = [serve(server), serve(server6)];
  const corpus = [
    ...Object.values(GOLDEN_FRAMES),
    udp4Frame(NET.ourMac, GUEST_MAC, 0, 0xffffffff, 68, 67, dhcpDiscover()),
    udp6Frame(GUEST_MAC, NET.ip6!.ourLinkLocal, v6("ff02::1:2"), 546, 547, dhcp6Solicit()),
  ];
  const live: Live[] = [];
  /** Every connection tapir has not reset yet, by guest port (live ones and those we reset). */
  const known = new Map<number, Live>();
  let nextPort = 20000;
  let generated = 0;
  const heapTrace: number[] = [];
  let connections = 0;
  let established = 0;
  let seen = 0;
  let sent = 0;
  let failure: Error | null = null;
  const eth = new EthFrame(), ip4 = new Ip4Packet(), ip6 = new Ip6Packet(), seg = new TcpPacket();

  /** A TCP segment from the guest on `c`, checksums right, `len` random payload bytes. */
  const tcpFrameOf = (
    c: Live,
    seqNo: number,
    ack: number,
    flags: number,
    window: number,
    len: number,
  ) => {
    const payload = new Uint8Array(len);
    for (let i = 0; i < len; i++) payload[i] = int(256);
    return tcpFrame({
      src: c.v6 ? GUEST6 : GUEST4,
      dst: c.v6 ? GATEWAY6 : GATEWAY4,
      srcPort: c.port,
      dstPort: LIVE_PORT,
      seq: seqNo,
      ack,
      flags,
      window,
      payload,
      wscale: int(15),
    });
  };

  /** Reads what tapir sent since the last call: handshakes, acknowledgements, resets. */
  const readReplies = () => {
    const out = backend.frames;
    for (; seen < out.length; seen++) {
      const f = out[seen];
      if (eth.wrap(f, 0, f.length) !== 0) continue;
      let l4 = -1, l4len = 0;
      if (
        eth.ethertype === EtherType.Ipv4 && ip4.wrap(f, eth.payloadOffset, eth.payloadLen) === 0
      ) {
        if (ip4.proto === IpProto.Tcp) [l4, l4len] = [ip4.payloadOffset, ip4.payloadLen];
      } else if (
        eth.ethertype === EtherType.Ipv6 && ip6.wrap(f, eth.payloadOffset, eth.payloadLen) === 0
      ) {
        if (ip6.nextHeader === IpProto.Tcp) [l4, l4len] = [ip6.payloadOffset, ip6.payloadLen];
      }
      if (l4 < 0 || seg.wrap(f, l4, l4len) !== 0 || seg.srcPort !== LIVE_PORT) continue;
      const c = known.get(seg.dstPort);
      if (c === undefined) continue;
      if (seg.flags & TcpFlag.Rst) {
        known.delete(c.port);
        const at = live.indexOf(c);
        if (at >= 0) live.splice(at, 1);
        continue;
      }
      if ((seg.flags & TcpFlag.Syn) && c.rcvNxt < 0) {
        c.rcvNxt = (seg.seq + 1) >>> 0;
        established++;
      } else if (c.rcvNxt >= 0) {
        const end = (seg.seq + seg.payloadLen + (seg.flags & TcpFlag.Fin ? 1 : 0)) >>> 0;
        if (((end - c.rcvNxt) | 0) > 0) c.rcvNxt = end;
      }
      if (seg.flags & TcpFlag.Ack) c.tapirAck = seg.ack;
    }
    if (seen > 4096) { // keep memory flat: forget what was read
      out.splice(0, seen);
      sent += seen;
      seen = 0;
    }
  };

  /** The next frame: [bytes, vnet flags, GSO type, GSO size]. */
  const nextFrame = (): [Uint8Array, number, number, number] => {
    generated++;
    const pick = rand();
    let f: Uint8Array;
    if (pick < 0.45) {
      f = mutateFrame(rand, corpus[int(corpus.length)]);
    } else if (pick < 0.5) {
      f = new Uint8Array(int(300));
      for (let i = 0; i < f.length; i++) f[i] = int(256);
    } else if (pick < 0.55) {
      f = corpus[int(corpus.length)];
    } else {
      f = liveSegment();
    }
    if (rand() < 0.1) {
      const types = [
        GsoType.NONE,
        GsoType.TCPV4,
        GsoType.TCPV6,
        GsoType.UDP_L4,
        GsoType.UDP,
        GsoType.ECN | GsoType.TCPV4,
        int(256),
      ];
      const flags = rand() < 0.7 ? VnetFlag.NEEDS_CSUM : int(256);
      const size = rand() < 0.5 ? int(1500) : int(65536);
      return [f, flags, types[int(types.length)], size];
    }
    return [f, 0, 0, 0];
  };

  /** A segment for a live connection, or a SYN opening one. */
  const liveSegment = (): Uint8Array => {
    // A SYN that was dropped (a random offload descriptor, say) is given up.
    for (let i = live.length - 1; i >= 0; i--) {
      if (live[i].rcvNxt < 0 && generated - live[i].openedAt > 4 * BATCH) live.splice(i, 1);
    }
    const ready = live.filter((c) => c.rcvNxt >= 0);
    if (live.length < LIVE_MAX && (ready.length === 0 || rand() < 0.02)) {
      const c: Live = {
        v6: rand() < 0.5,
        port: nextPort,
        sndNxt: int(0x1_0000_0000),
        tapirAck: 0,
        rcvNxt: -1,
        segments: 0,
        openedAt: generated,
      };
      nextPort = nextPort >= 60000 ? 20000 : nextPort + 1;
      live.push(c);
      known.set(c.port, c);
      connections++;
      const syn = tcpFrameOf(c, c.sndNxt, 0, TcpFlag.Syn, 65535, 0);
      c.sndNxt = (c.sndNxt + 1) >>> 0;
      c.tapirAck = c.sndNxt;
      return syn;
    }
    if (ready.length === 0) return corpus[int(corpus.length)];
    const c = ready[int(ready.length)];
    if (++c.segments > LIVE_SEGMENTS) {
      live.splice(live.indexOf(c), 1);
      return tcpFrameOf(c, c.tapirAck, c.rcvNxt, TcpFlag.Rst | TcpFlag.Ack, 0, 0);
    }
    const kind = rand();
    let seqNo = c.sndNxt, ack = c.rcvNxt, flags = TcpFlag.Ack | TcpFlag.Psh, len = int(1461);
    if (kind < 0.2) {
      // Random flags; SYN and RST (which end the connection) now and then only.
      flags = int(256);
      if (rand() > 0.05) flags &= ~(TcpFlag.Syn | TcpFlag.Rst);
    }
    if (kind > 0.7) seqNo = (seqNo + int(140_000) - 70_000) >>> 0;
    if (kind > 0.85) ack = (ack + int(140_000) - 70_000) >>> 0;
    if (kind > 0.95) [seqNo, ack] = [int(0x1_0000_0000), int(0x1_0000_0000)];
    if (rand() < 0.3) len = 0;
    const window = rand() < 0.1 ? int(16) : int(65536);
    if (seqNo === c.sndNxt && !(flags & (TcpFlag.Syn | TcpFlag.Rst))) {
      c.sndNxt = (c.sndNxt + len + (flags & TcpFlag.Fin ? 1 : 0)) >>> 0;
    }
    return tcpFrameOf(c, seqNo, ack, flags, window, len);
  };

  tapir.start();
  const running = tapir.loop.run();
  let done = 0;
  const finished = new Promise<void>((resolve) => {
    const inject = () => {
      try {
        readReplies();
        const n = Math.min(BATCH, frames - done);
        for (let k = 0; k < n; k++) {
          const [f, flags, gsoType, gsoSize] = nextFrame();
          tapir.input.frame(f, 0, f.length, flags, gsoType, gsoSize);
        }
        tapir.endBatch();
        done += n;
        if (done >= (heapTrace.length + 1) * frames / 10) {
          heapTrace.push(Math.round(Deno.memoryUsage().heapUsed / 2 ** 20));
        }
        const lost = framesUnaccounted(tapir.input.stats);
        if (lost !== 0) throw new Error(`${lost} frame(s) without an outcome at the dispatcher`);
      } catch (err) {
        failure = new Error(
          `seed ${seed}, frames ${done}..${done + BATCH}: ${(err as Error).stack}`,
        );
        return resolve();
      }
      if (done < frames) tapir.loop.after(0, inject);
      else resolve();
    };
    tapir.loop.after(0, inject);
  });
  await Promise.race([finished, running]);
  if (failure) throw failure;
  // The guest resets what it still has open, then goes quiet. A reset whose
  // sequence number is not the one tapir expects draws a challenge ACK
  // (RFC 5961), which tells the right one: so a few rounds.
  const flowsAtEnd = tapir.flows.live;
  live.length = 0;
  for (let round = 0; round < 3; round++) {
    readReplies();
    for (const c of known.values()) {
      const f = tcpFrameOf(
        c,
        c.tapirAck,
        c.rcvNxt < 0 ? 0 : c.rcvNxt,
        TcpFlag.Rst | TcpFlag.Ack,
        0,
        0,
      );
      tapir.input.frame(f, 0, f.length);
    }
    tapir.endBatch();
    await new Promise((r) => setTimeout(r, 100));
  }
  const deadline = performance.now() + DRAIN_MS;
  while (tapir.flows.live > 0 && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const flowsAfterWait = tapir.flows.live;
  const left = JSON.stringify(tapir.flows.stats());
  tapir.loop.stop("fuzz done");
  await running;
  closing = true;
  server.close();
  server6.close();
  await Promise.allSettled(serving);
  const rssMiB = Deno.memoryUsage().rss / 2 ** 20;
  const s = tapir.input.stats;
  const input: Record<string, number> = {};
  for (const [k, v] of Object.entries(s)) if (typeof v === "number") input[k] = v;
  s.drop.forEach((v, i) => v > 0 && (input[`drop[${i}]`] = v));
  if (flowsAfterWait !== 0) {
    throw new Error(
      `seed ${seed}: ${flowsAfterWait} flow(s) left ${DRAIN_MS} ms after the guest stopped: ${left}`,
    );
  }
  // The resident size follows V8's heap reservation, which grows under the
  // fuzzer's own garbage (heap in use stayed 12-28 MiB while the reservation
  // went from 29 to 71 MiB over a million frames); what tapir keeps shows
  // in the heap in use and the flow count.
  if (rssMiB > RSS_MAX_MIB) throw new Error(`seed ${seed}: resident size ${rssMiB.toFixed(0)} MiB`);
  const heapMax = Math.max(...heapTrace);
  if (heapMax > HEAP_MAX_MIB) {
    throw new Error(`seed ${seed}: ${heapMax} MiB of JavaScript heap in use (${heapTrace})`);
  }
  return {
    frames,
    seed,
    input,
    connections,
    established,
    framesToGuest: sent + backend.frames.length,
    flowsAtEnd,
    flowsAfterWait,
    rssMiB: Math.round(rssMiB),
    heapTrace,
    seconds: Math.round((performance.now() - started) / 100) / 10,
  };
}

if (import.meta.main) {
  const [frames, seed] = Deno.args.map(Number);
  try {
    console.log(JSON.stringify(await runFuzz(frames, seed)));
    Deno.exit(0);
  } catch (err) {
    console.error((err as Error).message);
    Deno.exit(1);
  }
}
