/**
 * UDP through the vhost-user device with one copy per payload byte: an
 * in-process guest (`guest.ts`) sends datagrams — one spread over several
 * transmit buffers, and a UDP GSO frame — to a socket on host loopback
 * through the gateway mapping, and gets the replies in its receive ring.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import dgram from "node:dgram";
import { checksumFold, checksumPseudo4 } from "../../lib/packet/checksum.ts";
import { ethEmit, EtherType } from "../../lib/packet/eth.ts";
import { ip4Emit, ip4ReprNew } from "../../lib/packet/ip4.ts";
import { IpProto, set16 } from "../../lib/packet/wire.ts";
import { GsoType, VnetFlag } from "../../lib/tap/tap.ts";
import { GUEST_MAC, NET, netWith } from "../services/harness.ts";
import { Frontend, HDR, until } from "./guest.ts";

const GATEWAY = NET.ip4!.gateway;
const GUEST_IP = NET.ip4!.addr;
const GUEST_PORT = 40001;
/** Bytes of Ethernet, IPv4 and UDP headers. */
const HEADERS = 14 + 20 + 8;

function patternAt(o: number): number {
  return (o * 7 + (o >>> 8)) & 0xff;
}

/**
 * A vnet header and a UDP datagram of `len` pattern bytes to `port` on the
 * gateway, its checksum left partial; a GSO frame of `gsoSize` datagrams if
 * `gsoSize` > 0.
 */
function udpFrame(port: number, len: number, gsoSize = 0): Uint8Array {
  const out = new Uint8Array(HDR + HEADERS + len);
  const v = new DataView(out.buffer);
  out[0] = VnetFlag.NEEDS_CSUM;
  out[1] = gsoSize > 0 ? GsoType.UDP_L4 : GsoType.NONE;
  v.setUint16(2, HEADERS, true);
  v.setUint16(4, gsoSize, true);
  v.setUint16(6, 34, true);
  v.setUint16(8, 6, true);
  let p = HDR + ethEmit(out, HDR, NET.ourMac, GUEST_MAC, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = GUEST_IP;
  ip.dst = GATEWAY;
  ip.proto = IpProto.Udp;
  ip.payloadLen = 8 + len;
  p += ip4Emit(out, p, ip);
  v.setUint16(p, GUEST_PORT);
  v.setUint16(p + 2, port);
  v.setUint16(p + 4, 8 + len);
  set16(out, p + 6, checksumFold(checksumPseudo4(GUEST_IP, GATEWAY, IpProto.Udp, 8 + len)));
  for (let k = 0; k < len; k++) out[p + 8 + k] = patternAt(k);
  return out;
}

/** A UDP socket on host loopback that keeps what it receives, and who sent it. */
class Server {
  readonly socket = dgram.createSocket("udp4");
  readonly got: { data: Uint8Array; port: number }[] = [];

  async bind(): Promise<number> {
    this.socket.on("message", (data, from) => this.got.push({ data, port: from.port }));
    await new Promise<void>((r) => this.socket.bind(0, "127.0.0.1", r));
    return this.socket.address().port;
  }

  send(data: Uint8Array, port: number): Promise<void> {
    return new Promise((r, e) =>
      this.socket.send(data, port, "127.0.0.1", (err) => err ? e(err) : r())
    );
  }
}

Deno.test("UDP from the guest's transmit buffers goes to the socket from guest memory, GSO frames as the datagrams meant; replies are written in place", async () => {
  const f = new Frontend(netWith({ mapLo4: [GATEWAY], loopbackOnly: true, mtu: 1500 }));
  const server = new Server();
  try {
    const port = await server.bind();
    for (let k = 0; k < 8; k++) f.rx.offerWritable([2000]);
    f.kick(f.rxKick);

    // One datagram over three buffers (cut inside the headers and the payload), then a GSO frame.
    f.send(udpFrame(port, 1400), [HDR + 20, HDR + HEADERS + 700]);
    f.send(udpFrame(port, 5000, 1000), [HDR + HEADERS, HDR + HEADERS + 2500]);
    f.kick(f.txKick);
    await until("six datagrams at the server", () => server.got.length === 6);
    const datagrams = server.got.map((g) => g.data);
    deepEqual(datagrams.map((d) => d.length), [1400, 1000, 1000, 1000, 1000, 1000]);
    for (const [k, d] of datagrams.entries()) {
      const base = k === 0 ? 0 : (k - 1) * 1000;
      ok(d.every((b, i) => b === patternAt(base + i)), `datagram ${k} intact`);
    }
    equal(f.tapir.input.stats.gathered, 0, "no frame made whole in a slot");
    ok(f.dev.stats.bytesGathered < 1400, `only headers copied: ${f.dev.stats.bytesGathered}`);

    // A reply to tapir's socket for the flow comes back into the receive ring.
    const reply = new Uint8Array(1400).map((_, i) => patternAt(i + 3));
    await server.send(reply, server.got[0].port);
    await until("the reply in the receive ring", () => f.rx.usedIdx > 0);
    const [head, written] = f.rx.used(0);
    const frame = f.rx.readChain(head, written).subarray(HDR);
    equal(frame.length, HEADERS + reply.length);
    deepEqual(frame.subarray(HEADERS), reply, "the reply's payload");
    ok(f.dev.rx.stats.bytesInPlace >= reply.length, "received straight into the guest's buffer");
  } finally {
    server.socket.close();
    await f.close();
  }
});
