/**
 * A guest without a VM, for the RSC and backend benchmarks: it connects to
 * `tapir vm`'s stream socket and, speaking Ethernet frames in QEMU's stream
 * protocol (4-byte big-endian length, then the frame), opens one TCP
 * connection to the gateway and either sends BYTES of payload in MSS-sized
 * segments (`up`, the default: 1460 bytes, what a guest at MTU 1500 without
 * TSO sends), as fast as tapir's window lets it — up to {@linkcode BURST}
 * segments per write, then whatever ACKs have come back — or receives what
 * the host sends until its FIN (`down`), acknowledging after each read. No
 * retransmission: the benchmark needs a lossless path, and a stall fails it.
 *
 * Usage: deno run -A bench/stream_guest.ts SOCKET GUEST_IP GATEWAY PORT BYTES [up|down] [PID]
 * Prints one JSON line: {"bytes": N, "ms": elapsed from the first data byte
 * to the ACK of our FIN (or the host's FIN), "cpuTicks": CPU clock ticks
 * process PID spent meanwhile (0 without PID)}.
 *
 * @module
 */

import { ip4ToU32, TAPIR_MAC } from "../lib/net.ts";
import { parseIp4 } from "../lib/addr.ts";
import { tcp4ChecksumFill } from "../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType, EthFrame } from "../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../lib/packet/ip4.ts";
import {
  tcpEmit,
  TcpFlag,
  tcpHeaderLen,
  TcpOptions,
  TcpPacket,
  tcpReprNew,
} from "../lib/packet/tcp.ts";
import { IpProto } from "../lib/packet/wire.ts";
import { seqAdd, seqDiff, seqGt, seqLt } from "../lib/l4/seq.ts";
import { cpuTicks } from "./proc.ts";

/** Payload per segment: MTU 1500 less IPv4 and TCP headers. */
const MSS = 1460;
/** Segments per write. */
const BURST = 64;
/** Our receive window (we receive nothing but ACKs). */
const WINDOW = 65535;
const GUEST_MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GUEST_PORT = 40000;
const ISN = 0x1000_0000;

const [socketPath, guestText, gatewayText, portText, bytesText, dirText, pidText] = Deno.args;
const upload = (dirText ?? "up") === "up";
const pid = Number(pidText ?? 0);
const guest = ip4ToU32(parseIp4(guestText ?? "")!);
const gateway = ip4ToU32(parseIp4(gatewayText ?? "")!);
const port = Number(portText);
const total = Number(bytesText);
if (!socketPath || !guest || !gateway || !(port > 0) || !(total > 0)) {
  console.error("usage: stream_guest.ts SOCKET GUEST_IP GATEWAY PORT BYTES");
  Deno.exit(2);
}

const conn = await Deno.connect({ transport: "unix", path: socketPath });
const repr = tcpReprNew();
const ip = ip4ReprNew();

/** tapir's side, from its segments. */
let rcvNxt = 0;
let acked = ISN;
let wndRight = ISN;
let wscale = 0;
let synAcked = false;
let wake: () => void = () => {};
/** Download: payload taken in order, the host's FIN seen, and when the first byte came. */
let received = 0;
let finSeen = false;
let start = 0;
let cpuStart = 0;

function begin(): void {
  start = performance.now();
  cpuStart = pid ? cpuTicks([pid]) : 0;
}

/** Writes one frame into `out` at `off` (length prefix included); returns the bytes used. */
function frame(out: Uint8Array, off: number, seq: number, flags: number, len: number): number {
  repr.srcPort = GUEST_PORT;
  repr.dstPort = port;
  repr.seq = seq;
  repr.ack = flags & TcpFlag.Ack ? rcvNxt : 0;
  repr.flags = flags;
  repr.window = WINDOW;
  repr.payloadLen = len;
  repr.options.reset();
  if (flags & TcpFlag.Syn) {
    repr.options.mss = MSS;
    repr.options.wscale = 7;
  }
  const segLen = tcpHeaderLen(repr) + len;
  const f = off + 4;
  let p = f + ethEmit(out, f, TAPIR_MAC, GUEST_MAC, EtherType.Ipv4);
  ip.src = guest;
  ip.dst = gateway;
  ip.proto = IpProto.Tcp;
  ip.dontFragment = true;
  ip.payloadLen = segLen;
  p += ip4Emit(out, p, ip);
  out.fill(0, p + tcpHeaderLen(repr), p + segLen); // payload: zeros
  tcpEmit(out, p, repr);
  out[p + 16] = out[p + 17] = 0;
  tcp4ChecksumFill(out, p, segLen, guest, gateway);
  const frameLen = ETH_HEADER_LEN + IP4_HEADER_LEN + segLen;
  new DataView(out.buffer, out.byteOffset).setUint32(off, frameLen);
  return 4 + frameLen;
}

/** Reads tapir's frames for as long as the connection lasts, taking in its ACKs. */
async function readLoop(): Promise<void> {
  const buf = new Uint8Array(1 << 20);
  let have = 0;
  const eth = new EthFrame();
  const ipv = new Ip4Packet();
  const seg = new TcpPacket();
  const opts = new TcpOptions();
  for (;;) {
    const n = await conn.read(buf.subarray(have));
    if (n === null) return;
    have += n;
    let off = 0;
    while (have - off >= 4) {
      const len = new DataView(buf.buffer, off).getUint32(0);
      if (have - off < 4 + len) break;
      const at = off + 4;
      off += 4 + len;
      if (eth.wrap(buf, at, len) !== 0 || eth.ethertype !== EtherType.Ipv4) continue;
      if (ipv.wrap(buf, eth.payloadOffset, eth.payloadLen) !== 0) continue;
      if (ipv.proto !== IpProto.Tcp || seg.wrap(buf, ipv.payloadOffset, ipv.payloadLen) !== 0) {
        continue;
      }
      if (seg.dstPort !== GUEST_PORT) continue;
      if (seg.flags & TcpFlag.Rst) throw new Error("tapir reset the connection");
      if (seg.flags & TcpFlag.Syn) {
        seg.parseOptions(opts);
        wscale = Math.max(0, opts.wscale);
        rcvNxt = seqAdd(seg.seq, 1);
        synAcked = true;
        acked = seg.ack;
        wndRight = seqAdd(seg.ack, seg.window);
      } else if (seg.flags & TcpFlag.Ack && !seqLt(seg.ack, acked)) {
        acked = seg.ack;
        wndRight = seqAdd(seg.ack, seg.window * 2 ** wscale);
      }
      if (!(seg.flags & TcpFlag.Syn) && seg.seq === rcvNxt) {
        if (seg.payloadLen > 0 && received === 0) begin();
        rcvNxt = seqAdd(rcvNxt, seg.payloadLen);
        received += seg.payloadLen;
        if (seg.flags & TcpFlag.Fin) {
          rcvNxt = seqAdd(rcvNxt, 1);
          finSeen = true;
        }
      }
      wake();
    }
    buf.copyWithin(0, off, have);
    have -= off;
  }
}

/** Waits for the reader to take in something new. */
function changed(): Promise<void> {
  return new Promise((resolve) => wake = resolve);
}

async function writeAll(b: Uint8Array): Promise<void> {
  for (let o = 0; o < b.length;) o += await conn.write(b.subarray(o));
}

const reading = readLoop();
const out = new Uint8Array(BURST * (4 + 14 + 20 + 20 + MSS) + 256);
await writeAll(out.subarray(0, frame(out, 0, ISN, TcpFlag.Syn, 0)));
while (!synAcked) await changed();
let sndNxt = seqAdd(ISN, 1);
await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Ack, 0)));

if (upload) {
  const end = seqAdd(sndNxt, total);
  begin();
  while (seqLt(acked, end)) {
    const limit = seqLt(wndRight, end) ? wndRight : end;
    let used = 0;
    for (let k = 0; k < BURST && seqLt(sndNxt, limit); k++) {
      const len = Math.min(MSS, seqDiff(limit, sndNxt));
      used += frame(out, used, sndNxt, TcpFlag.Ack, len);
      sndNxt = seqAdd(sndNxt, len);
    }
    if (used > 0) await writeAll(out.subarray(0, used));
    else await changed(); // the window is full: wait for an ACK
  }
  await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Fin | TcpFlag.Ack, 0)));
  while (!seqGt(acked, end)) await changed();
} else {
  // One ACK for whatever each read brought, until the host's FIN.
  let ackedTo = rcvNxt;
  for (;;) {
    if (rcvNxt !== ackedTo) {
      ackedTo = rcvNxt;
      await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Ack, 0)));
    } else if (finSeen) break;
    else await changed();
  }
}
const ms = performance.now() - start;
const ticks = pid ? cpuTicks([pid]) - cpuStart : 0;
console.log(JSON.stringify({ bytes: upload ? total : received, ms, cpuTicks: ticks }));
conn.close();
await reading.catch(() => {});
