/**
 * A guest without a VM over vhost-user, for the vhost-user benchmark: the
 * front-end's side of `tapir vm --vhost-user` — guest memory in a memfd
 * both processes map, two rings built here, kicks and interrupts on
 * eventfds — and a virtio-net driver as a Linux guest at MTU 1500 with
 * offloads runs it: one TCP connection to the gateway that either sends
 * BYTES in 64 KiB GSO frames (`up`, checksum left to the device) or
 * receives BYTES the host sends (`down`, tapir's GSO frames), acknowledging
 * each batch of frames. No retransmission: the benchmark needs a lossless
 * path, and a stall fails it.
 *
 * Usage: deno run -A bench/vhost_guest.ts SOCKET GUEST_IP GATEWAY PORT BYTES up|down [PID]
 * Prints one JSON line: {"bytes": N, "ms": from the first data byte to the
 * end (the ACK of our FIN, or the host's FIN), "cpuTicks": CPU clock ticks
 * process PID spent meanwhile (0 without PID)}.
 *
 * @module
 */

import { parseIp4 } from "../lib/addr.ts";
import { Loop } from "../lib/loop.ts";
import { seqAdd, seqDiff, seqGt, seqLt } from "../lib/l4/seq.ts";
import { ip4ToU32 } from "../lib/net.ts";
import { ETH_HEADER_LEN } from "../lib/packet/eth.ts";
import { IP4_HEADER_LEN } from "../lib/packet/ip4.ts";
import { TcpFlag } from "../lib/packet/tcp.ts";
import * as sys from "../lib/sys/mod.ts";
import { VhostUserRequest as Req } from "../lib/vhost/protocol.ts";
import { GUEST_HEADERS, GUEST_ISN, GUEST_MSS, GuestTcp } from "./guest_tcp.ts";
import { cpuTicks } from "./proc.ts";

/** Payload per GSO frame: whole segments, under 64 KiB with the headers. */
const GSO_PAYLOAD = 44 * GUEST_MSS;

const HDR = 12;
const RING = 256;
/** Each buffer holds a header and the largest frame. */
const BUF = 0x10100;
const MEM = 64 << 20;
const UVA = 0x7f00_0000_0000;
const RX_RING = 0x0;
const TX_RING = 0x4000;
const RX_BUFS = 0x10_0000;
const TX_BUFS = 0x140_0000;
/** Ring layout from its start: descriptors, available ring, used ring. */
const AVAIL = 0x1000;
const USED = 0x2000;

const [socketPath, guestText, gatewayText, portText, bytesText, dirText, pidText] = Deno.args;
const guest = ip4ToU32(parseIp4(guestText ?? "")!);
const gateway = ip4ToU32(parseIp4(gatewayText ?? "")!);
const port = Number(portText);
const total = Number(bytesText);
const upload = dirText === "up";
const pid = Number(pidText ?? 0);
if (
  !socketPath || !guest || !gateway || !(port > 0) || !(total > 0) ||
  (dirText !== "up" && dirText !== "down")
) {
  console.error("usage: vhost_guest.ts SOCKET GUEST_IP GATEWAY PORT BYTES up|down [PID]");
  Deno.exit(2);
}

// ---------------------------------------------------------------------------
// Memory, rings and the front-end's messages

const memfd = sys.sysCheck(
  sys.memfdCreate("guest", sys.MFD_CLOEXEC | sys.MFD_ALLOW_SEALING),
  "memfd_create",
);
{
  const zeros = new Uint8Array(1 << 20);
  for (let i = 0; i < MEM / zeros.length; i++) sys.write(memfd, zeros);
}
const mapping = sys.mmap(MEM, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, memfd, 0);
if (typeof mapping === "number") throw new Error(`mmap: ${sys.errnoName(-mapping)}`);
const mem = mapping.bytes;
const dv = new DataView(mem.buffer, mem.byteOffset, mem.byteLength);
const words = new Uint16Array(mem.buffer, mem.byteOffset, mem.byteLength / 2);

/** The driver's side of one ring. */
class Vq {
  availIdx = 0;
  lastUsed = 0;
  readonly kick = sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
  readonly call = sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
  #kicked = 0;
  constructor(readonly base: number) {}

  desc(i: number, addr: number, len: number, flags: number): void {
    const at = this.base + 16 * i;
    dv.setBigUint64(at, BigInt(addr), true);
    dv.setUint32(at + 8, len, true);
    dv.setUint16(at + 12, flags, true);
    dv.setUint16(at + 14, 0, true);
  }
  setLen(i: number, len: number): void {
    dv.setUint32(this.base + 16 * i + 8, len, true);
  }
  /** Puts chain `head` in the available ring (published by `publish`). */
  offer(head: number): void {
    dv.setUint16(this.base + AVAIL + 4 + 2 * (this.availIdx % RING), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
  }
  /** Publishes the available index (fenced) and kicks if the device asked (event index). */
  publish(): void {
    if (this.availIdx === this.#kicked) return;
    Atomics.store(words, (this.base + AVAIL + 2) / 2, this.availIdx);
    const event = dv.getUint16(this.base + USED + 4 + 8 * RING, true);
    const old = this.#kicked;
    this.#kicked = this.availIdx;
    if (((this.availIdx - event - 1) & 0xffff) < ((this.availIdx - old) & 0xffff)) {
      sys.write(this.kick, ONE, 8);
    }
  }
  get usedIdx(): number {
    return dv.getUint16(this.base + USED + 2, true);
  }
  usedHead(k: number): number {
    return dv.getUint32(this.base + USED + 4 + 8 * (k % RING), true);
  }
  usedLen(k: number): number {
    return dv.getUint32(this.base + USED + 4 + 8 * (k % RING) + 4, true);
  }
  /** Asks for an interrupt at the next used entry (fenced: the caller looks again after). */
  wantCall(): void {
    Atomics.store(words, (this.base + AVAIL + 4 + 2 * RING) / 2, this.lastUsed);
  }
}
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);
const rx = new Vq(RX_RING);
const tx = new Vq(TX_RING);

const sock = sys.sysCheck(sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_CLOEXEC), "socket");
{
  const sa = new Uint8Array(sys.SOCKADDR_UN_SIZE);
  sys.sysCheck(sys.connect(sock, sa, sys.sockaddrUn(sa, socketPath)), `connect ${socketPath}`);
}

/** Sends a request with a payload of 32-bit (number) and 64-bit (bigint) words. */
function request(code: number, payload: (number | bigint)[] = [], fds: number[] = []): void {
  const size = payload.reduce<number>((n, w) => n + (typeof w === "bigint" ? 8 : 4), 0);
  const m = new Uint8Array(12 + size);
  const v = new DataView(m.buffer);
  v.setUint32(0, code, true);
  v.setUint32(4, 1, true);
  v.setUint32(8, size, true);
  let at = 12;
  for (const w of payload) {
    if (typeof w === "bigint") v.setBigUint64(at, w, true), at += 8;
    else v.setUint32(at, w, true), at += 4;
  }
  if (sys.sendWithFds(sock, m, 0, m.length, 0, fds) !== m.length) throw new Error("send");
}

/** A GET request's u64 answer. */
function get(code: number): bigint {
  request(code);
  const r = new Uint8Array(20);
  for (let got = 0; got < r.length;) {
    const n = sys.recvAt(sock, r, got, r.length - got, 0);
    if (n <= 0) throw new Error("the back-end closed the connection");
    got += n;
  }
  return new DataView(r.buffer).getBigUint64(12, true);
}

request(Req.SET_FEATURES, [get(Req.GET_FEATURES)]);
request(Req.SET_PROTOCOL_FEATURES, [get(Req.GET_PROTOCOL_FEATURES)]);
request(Req.SET_OWNER);
request(Req.SET_MEM_TABLE, [1, 0, 0n, BigInt(MEM), BigInt(UVA), 0n], [memfd]);
for (const [i, q] of [[0, rx], [1, tx]] as const) {
  request(Req.SET_VRING_NUM, [i, RING]);
  request(Req.SET_VRING_BASE, [i, 0]);
  const at = (off: number) => BigInt(UVA + q.base + off);
  request(Req.SET_VRING_ADDR, [i, 0, at(0), at(USED), at(AVAIL), 0n]);
  request(Req.SET_VRING_KICK, [BigInt(i)], [q.kick]);
  request(Req.SET_VRING_CALL, [BigInt(i)], [q.call]);
  request(Req.SET_VRING_ENABLE, [i, 1]);
}

// Every receive buffer offered once, one chain each; transmit buffers wait in a free list.
for (let i = 0; i < RING; i++) {
  rx.desc(i, RX_BUFS + i * BUF, BUF, 2 /* WRITE */);
  rx.offer(i);
  tx.desc(i, TX_BUFS + i * BUF, 0, 0);
}
rx.publish();
const txFree: number[] = Array.from({ length: RING }, (_, i) => RING - 1 - i);

// ---------------------------------------------------------------------------
// TCP, as the guest's kernel

const tcp = new GuestTcp(guest, gateway, port);
let sndNxt = seqAdd(GUEST_ISN, 1);
let start = 0;
let cpuStart = 0;
let finSent: number | null = null;

/** Builds a segment behind its vnet header in a free transmit buffer and offers it. */
function segment(seq: number, flags: number, len: number): void {
  const head = txFree.pop()!;
  const base = TX_BUFS + head * BUF;
  const frameLen = tcp.emit(mem, base + HDR, seq, flags, len, len > 0);
  mem.fill(0, base, base + HDR);
  if (len > 0) {
    // Checksum left to the device, as a guest with offloads does.
    mem[base] = 1; // NEEDS_CSUM
    dv.setUint16(base + 6, ETH_HEADER_LEN + IP4_HEADER_LEN, true);
    dv.setUint16(base + 8, 16, true);
    if (len > GUEST_MSS) {
      mem[base + 1] = 1; // TCPV4
      dv.setUint16(base + 2, GUEST_HEADERS, true);
      dv.setUint16(base + 4, GUEST_MSS, true);
    }
  }
  tx.setLen(head, HDR + frameLen);
  tx.offer(head);
}

function begin(): void {
  start = performance.now();
  cpuStart = pid ? cpuTicks([pid]) : 0;
}

const loop = new Loop();
let done = false;

/** Everything the rings hold now, then what we may send; then waits for the next interrupt. */
function work(): void {
  for (;;) {
    while (tx.lastUsed !== tx.usedIdx) {
      txFree.push(tx.usedHead(tx.lastUsed));
      tx.lastUsed = (tx.lastUsed + 1) & 0xffff;
    }
    while (rx.lastUsed !== rx.usedIdx) {
      const head = rx.usedHead(rx.lastUsed);
      const len = rx.usedLen(rx.lastUsed);
      tcp.take(mem, RX_BUFS + head * BUF + HDR, len - HDR);
      if (tcp.received > 0 && start === 0) begin();
      rx.offer(head);
      rx.lastUsed = (rx.lastUsed + 1) & 0xffff;
    }
    rx.publish();
    send();
    tx.publish();
    if (finished()) return;
    rx.wantCall();
    tx.wantCall();
    if (rx.lastUsed === rx.usedIdx && tx.lastUsed === tx.usedIdx) return;
  }
}

function send(): void {
  if (!tcp.synAcked) return;
  if (upload) {
    const end = seqAdd(GUEST_ISN + 1, total);
    if (start === 0 && tcp.ackDue) {
      segment(sndNxt, TcpFlag.Ack, 0); // the handshake's last ACK
      tcp.ackDue = false;
      begin();
    }
    while (txFree.length > 0 && seqLt(sndNxt, end) && seqLt(sndNxt, tcp.wndRight)) {
      const room = Math.min(seqDiff(end, sndNxt), seqDiff(tcp.wndRight, sndNxt), GSO_PAYLOAD);
      if (room < GUEST_MSS && seqLt(seqAdd(sndNxt, room), end)) break; // wait for a whole segment
      segment(sndNxt, TcpFlag.Ack | TcpFlag.Psh, room);
      sndNxt = seqAdd(sndNxt, room);
    }
    if (sndNxt === end && finSent === null && txFree.length > 0) {
      finSent = sndNxt;
      segment(sndNxt, TcpFlag.Fin | TcpFlag.Ack, 0);
      sndNxt = seqAdd(sndNxt, 1);
    }
  } else if (tcp.ackDue && txFree.length > 0) {
    segment(sndNxt, TcpFlag.Ack, 0);
    tcp.ackDue = false;
  }
}

function finished(): boolean {
  if (done) return true;
  const over = upload ? finSent !== null && seqGt(tcp.acked, finSent) : tcp.finSeen && !tcp.ackDue;
  if (!over) return false;
  done = true;
  const ms = performance.now() - start;
  const cpuTicksUsed = pid ? cpuTicks([pid]) - cpuStart : 0;
  console.log(
    JSON.stringify({ bytes: upload ? total : tcp.received, ms, cpuTicks: cpuTicksUsed }),
  );
  loop.stop("done");
  return true;
}

const type = loop.defineType("call", (index) => {
  sys.read(index === 0 ? rx.call : tx.call, new Uint8Array(8), 8);
  work();
});
sys.sysCheck(loop.add(rx.call, sys.EPOLLIN, type, 0), "epoll_ctl");
sys.sysCheck(loop.add(tx.call, sys.EPOLLIN, type, 1), "epoll_ctl");
loop.post(() => {
  segment(GUEST_ISN, TcpFlag.Syn, 0);
  tx.publish();
  work();
});
const timeout = setTimeout(() => {
  console.error(`stalled: acked ${seqDiff(tcp.acked, GUEST_ISN)}, received ${tcp.received}`);
  Deno.exit(1);
}, 120_000);
await loop.run();
clearTimeout(timeout);
sys.close(sock);
