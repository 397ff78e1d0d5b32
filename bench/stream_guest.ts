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

import { parseIp4 } from "../lib/addr.ts";
import { seqAdd, seqDiff, seqGt, seqLt } from "../lib/l4/seq.ts";
import { ip4ToU32 } from "../lib/net.ts";
import { TcpFlag } from "../lib/packet/tcp.ts";
import { GUEST_HEADERS, GUEST_ISN, GUEST_MSS, GuestTcp } from "./guest_tcp.ts";
import { cpuTicks } from "./proc.ts";

/** Segments per write. */
const BURST = 64;
/** QEMU's stream protocol: a 4-byte big-endian length in front of each frame. */
const PREFIX = 4;

const [socketPath, guestText, gatewayText, portText, bytesText, dirText, pidText] = Deno.args;
const upload = (dirText ?? "up") === "up";
const pid = Number(pidText ?? 0);
const guest = ip4ToU32(parseIp4(guestText ?? "")!);
const gateway = ip4ToU32(parseIp4(gatewayText ?? "")!);
const port = Number(portText);
const total = Number(bytesText);
if (!socketPath || !guest || !gateway || !(port > 0) || !(total > 0)) {
  console.error("usage: stream_guest.ts SOCKET GUEST_IP GATEWAY PORT BYTES [up|down] [PID]");
  Deno.exit(2);
}

const conn = await Deno.connect({ transport: "unix", path: socketPath });
const tcp = new GuestTcp(guest, gateway, port);
let wake: () => void = () => {};
/** When the transfer's first byte went or came, and tapir's CPU ticks then. */
let start = 0;
let cpuStart = 0;

function begin(): void {
  start = performance.now();
  cpuStart = pid ? cpuTicks([pid]) : 0;
}

/** Writes one segment into `out` at `off`, length prefix first; returns the bytes used. */
function frame(out: Uint8Array, off: number, seq: number, flags: number, len: number): number {
  const n = tcp.emit(out, off + PREFIX, seq, flags, len);
  new DataView(out.buffer, out.byteOffset).setUint32(off, n);
  return PREFIX + n;
}

/** Reads tapir's frames for as long as the connection lasts. */
async function readLoop(): Promise<void> {
  const buf = new Uint8Array(1 << 20);
  let have = 0;
  for (;;) {
    const n = await conn.read(buf.subarray(have));
    if (n === null) return;
    have += n;
    let off = 0;
    while (have - off >= PREFIX) {
      const len = new DataView(buf.buffer, off).getUint32(0);
      if (have - off < PREFIX + len) break;
      tcp.take(buf, off + PREFIX, len);
      off += PREFIX + len;
      if (tcp.received > 0 && start === 0) begin();
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
const out = new Uint8Array(BURST * (PREFIX + GUEST_HEADERS + GUEST_MSS) + 256);
await writeAll(out.subarray(0, frame(out, 0, GUEST_ISN, TcpFlag.Syn, 0)));
while (!tcp.synAcked) await changed();
let sndNxt = seqAdd(GUEST_ISN, 1);
tcp.ackDue = false;
await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Ack, 0)));

if (upload) {
  const end = seqAdd(sndNxt, total);
  begin();
  while (seqLt(tcp.acked, end)) {
    const limit = seqLt(tcp.wndRight, end) ? tcp.wndRight : end;
    let used = 0;
    for (let k = 0; k < BURST && seqLt(sndNxt, limit); k++) {
      const len = Math.min(GUEST_MSS, seqDiff(limit, sndNxt));
      used += frame(out, used, sndNxt, TcpFlag.Ack, len);
      sndNxt = seqAdd(sndNxt, len);
    }
    if (used > 0) await writeAll(out.subarray(0, used));
    else await changed(); // the window is full: wait for an ACK
  }
  await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Fin | TcpFlag.Ack, 0)));
  while (!seqGt(tcp.acked, end)) await changed();
} else {
  // One ACK for whatever each read brought, until the host's FIN.
  for (;;) {
    if (tcp.ackDue) {
      tcp.ackDue = false;
      await writeAll(out.subarray(0, frame(out, 0, sndNxt, TcpFlag.Ack, 0)));
    } else if (tcp.finSeen) break;
    else await changed();
  }
}
const ms = performance.now() - start;
const ticks = pid ? cpuTicks([pid]) - cpuStart : 0;
console.log(JSON.stringify({ bytes: upload ? total : tcp.received, ms, cpuTicks: ticks }));
conn.close();
await reading.catch(() => {});
