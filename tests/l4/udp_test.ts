/**
 * tapir's UDP path from the guest, in-process: a whole {@linkcode Tapir}
 * runs over a recording backend, crafted guest frames go to the gateway
 * (mapped to host loopback), and a Deno datagram socket on 127.0.0.1 is the
 * host peer. A batch of frames is handed over as one backend read, so what
 * tapir sends together is fixed by the batch, not by timing.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { checksumPseudo4 } from "../../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType } from "../../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, ip4ReprNew } from "../../lib/packet/ip4.ts";
import { UDP_HEADER_LEN, udpEmit, UdpPacket, udpReprNew } from "../../lib/packet/udp.ts";
import { Ip4Packet } from "../../lib/packet/ip4.ts";
import { EthFrame } from "../../lib/packet/eth.ts";
import { type FrameBatch, GsoType } from "../../lib/tap/tap.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { Tapir } from "../../lib/tapir.ts";
import { GUEST_MAC, NET, netWith, RecordingBackend } from "../services/harness.ts";

const GUEST_IP = NET.ip4!.addr;
const GATEWAY = NET.ip4!.gateway;

/** A guest datagram to the gateway's `dstPort`: `len` bytes, each `fill`. */
function datagram(srcPort: number, dstPort: number, len: number, fill: number): Uint8Array {
  const f = new Uint8Array(ETH_HEADER_LEN + IP4_HEADER_LEN + UDP_HEADER_LEN + len);
  let p = ethEmit(f, 0, NET.ourMac, GUEST_MAC, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = GUEST_IP;
  ip.dst = GATEWAY;
  ip.proto = IpProto.Udp;
  ip.payloadLen = UDP_HEADER_LEN + len;
  p += ip4Emit(f, p, ip);
  f.fill(fill, p + UDP_HEADER_LEN);
  const u = udpReprNew();
  u.srcPort = srcPort;
  u.dstPort = dstPort;
  u.payloadLen = len;
  udpEmit(f, p, u, checksumPseudo4(GUEST_IP, GATEWAY, IpProto.Udp, UDP_HEADER_LEN + len));
  return f;
}

/** A datagram's fill byte ("-" for none, "mixed" if not all one). */
function label(buf: Uint8Array): string {
  if (buf.length === 0) return "-";
  return buf.every((b) => b === buf[0]) ? String(buf[0]) : "mixed";
}

/** A host socket on 127.0.0.1 that notes `size:fill` of each datagram, in arrival order. */
async function hostSocket(): Promise<{ sock: Socket; got: string[]; port: number }> {
  const sock = createSocket("udp4");
  const got: string[] = [];
  sock.on("message", (buf: Uint8Array) => {
    got.push(`${buf.length}:${label(buf)}`);
  });
  await new Promise<void>((resolve) => sock.bind(0, "127.0.0.1", resolve));
  return { sock, got, port: sock.address().port };
}

/**
 * Hands the guest datagrams `sizes` (from guest port `ports[i % n]`) to
 * tapir as one batch and returns what the host socket received, and
 * tapir's UDP counters.
 */
async function sendBatch(
  sizes: number[],
  ports = [40000],
): Promise<{ got: string[]; want: string[]; toHost: number; coalesced: number }> {
  const tapir = new Tapir(
    netWith({ mapLo4: [GATEWAY], loopbackOnly: true }),
    new RecordingBackend(),
  );
  const { sock, got, port } = await hostSocket();
  tapir.start();
  const running = tapir.loop.run();
  try {
    const want = sizes.map((len, i) => `${len}:${len === 0 ? "-" : i & 0xff}`);
    for (let i = 0; i < sizes.length; i++) {
      const f = datagram(ports[i % ports.length], port, sizes[i], i & 0xff);
      tapir.input.frame(f, 0, f.length);
    }
    tapir.endBatch();
    const deadline = performance.now() + 3000;
    while (got.length < sizes.length && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const s = tapir.udp.stats;
    return { got, want, toHost: s.datagramsToHost, coalesced: s.datagramsCoalesced };
  } finally {
    tapir.loop.stop();
    await running;
    tapir.loop.close();
    sock.close();
  }
}

Deno.test("a flow's datagrams of one size in one batch go in one send and arrive as sent", async () => {
  const r = await sendBatch(Array(40).fill(1000));
  deepEqual(r.got, r.want);
  equal(r.toHost, 40);
  equal(r.coalesced, 39, "one send for the batch");
});

Deno.test("a shorter datagram ends a run; the next starts a new one", async () => {
  const r = await sendBatch([1000, 1000, 500, 1000, 1000, 1000, 1200, 1]);
  deepEqual(r.got, r.want);
  // [1000 1000 500] [1000 1000 1000] [1200 1]: a longer one cannot join.
  equal(r.coalesced, 2 + 2 + 1);
});

Deno.test("a run stops at 64 datagrams and at what one UDP length can carry", async () => {
  const byCount = await sendBatch(Array(100).fill(100));
  deepEqual(byCount.got, byCount.want);
  equal(byCount.coalesced, 63 + 35, "runs of 64 and 36");
  const byBytes = await sendBatch(Array(50).fill(1400));
  deepEqual(byBytes.got, byBytes.want);
  equal(byBytes.coalesced, 45 + 3, "46 × 1400 = 64 400 bytes fit, 47 do not");
});

Deno.test("interleaved flows are each sent in order, and zero-length datagrams too", async () => {
  const r = await sendBatch([300, 200, 300, 200, 0, 200, 300, 200], [40001, 40002]);
  deepEqual(r.got.toSorted(), r.want.toSorted(), "every datagram arrived whole");
  for (const port of [0, 1]) {
    const mine = r.want.filter((_, i) => i % 2 === port);
    deepEqual(r.got.filter((g) => mine.includes(g)), mine, "in order within a flow");
  }
  equal(r.toHost, 8);
  equal(r.coalesced, 0, "no two in a row from one flow");
});

/** A recording backend that takes UDP GSO frames, and notes each frame's GSO size. */
class UsoBackend extends RecordingBackend {
  override readonly checksumOffload = true;
  readonly gsoUdp = true;
  readonly gsoSizes: number[] = [];

  override send(batch: FrameBatch, count: number): number {
    for (let k = 0; k < count; k++) {
      const i = batch.order[k];
      this.gsoSizes.push(batch.gsoType[i] === GsoType.UDP_L4 ? batch.gsoSize[i] : 0);
    }
    return super.send(batch, count);
  }
}

Deno.test("datagrams waiting in a flow's socket go to the guest as one UDP GSO frame", async () => {
  const backend = new UsoBackend();
  const tapir = new Tapir(netWith({ mapLo4: [GATEWAY], loopbackOnly: true }), backend);
  const { sock, got, port } = await hostSocket();
  tapir.start();
  let running: Promise<unknown> | null = null;
  try {
    // The guest's datagram opens the flow (sent at once: the loop is not running).
    const f = datagram(40100, port, 10, 7);
    tapir.input.frame(f, 0, f.length);
    tapir.endBatch();
    const deadline = performance.now() + 3000;
    while (got.length < 1 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    equal(got.length, 1, "the guest's datagram arrived");
    // The host answers with 20 datagrams of 1000 bytes and one of 500, all
    // queued in tapir's socket before its loop runs.
    const peer = { port: 0 };
    sock.removeAllListeners("message");
    const replied = new Promise<void>((resolve) => {
      sock.once("message", (_b: Uint8Array, rinfo: { port: number }) => {
        peer.port = rinfo.port;
        resolve();
      });
    });
    const again = datagram(40100, port, 10, 8);
    tapir.input.frame(again, 0, again.length);
    tapir.endBatch();
    await replied;
    const sizes = [...Array(20).fill(1000), 500];
    for (const [i, n] of sizes.entries()) {
      await new Promise<void>((resolve) =>
        sock.send(new Uint8Array(n).fill(i), peer.port, "127.0.0.1", () => resolve())
      );
    }
    running = tapir.loop.run();
    while (tapir.udp.stats.datagramsToGuest < 21 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    equal(tapir.udp.stats.datagramsToGuest, 21);
    equal(tapir.udp.stats.datagramsMerged, 20, "one frame for all");
    // tapir's own frames at start (router advertisements) aside: one UDP frame.
    const udpFrames = backend.frames.flatMap((f, i) =>
      f[12] === 0x08 && f[13] === 0x00 && f[ETH_HEADER_LEN + 9] === IpProto.Udp ? [i] : []
    );
    equal(udpFrames.length, 1, "one frame for the 21 datagrams");
    equal(backend.gsoSizes[udpFrames[0]], 1000, "a UDP GSO frame of 1000-byte segments");
    const eth = new EthFrame();
    const ip = new Ip4Packet();
    const udp = new UdpPacket();
    const frame = backend.frames[udpFrames[0]];
    equal(eth.wrap(frame, 0, frame.length), 0);
    equal(ip.wrap(frame, eth.payloadOffset, eth.payloadLen), 0);
    equal(udp.wrap(frame, ip.payloadOffset, ip.payloadLen), 0);
    equal(udp.srcPort, port);
    equal(udp.dstPort, 40100);
    equal(udp.payloadLen, 20 * 1000 + 500);
    let at = udp.payloadOffset;
    for (const [i, n] of sizes.entries()) {
      ok(frame.subarray(at, at + n).every((b) => b === i), `datagram ${i} in place`);
      at += n;
    }
  } finally {
    tapir.loop.stop();
    if (running !== null) await running;
    tapir.loop.close();
    sock.close();
  }
});
