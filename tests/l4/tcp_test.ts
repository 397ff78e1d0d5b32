/**
 * tapir's TCP translation seen from the guest, in-process: a whole
 * {@linkcode Tapir} runs over a recording backend, a fake guest written here
 * speaks TCP to the gateway (mapped to host loopback) in crafted Ethernet
 * frames, and a Deno server on 127.0.0.1 is the host peer.
 *
 * The guest's frames are dispatched straight away, between loop turns, as
 * if the tap's event came first in the next turn's batch: so a segment can
 * arrive while the host socket already has room that tapir has not yet been
 * told about (its EPOLLOUT still queued). A posted no-op then wakes the idle
 * loop, whose turn sends the ACK. tapir's replies are read back from the
 * recording backend once the loop has flushed them. The guest proceeds in
 * rounds: send, yield a few milliseconds, read the replies.
 *
 * The payload is a byte pattern indexed by stream offset, so the host peer
 * can tell a gap, a duplicate or a reordering from the bytes alone. The
 * guest's initial sequence number sits just below 2^32, so every transfer
 * here wraps the sequence space.
 */
import { equal, ok } from "node:assert/strict";
import { seqAdd, seqDiff, seqGt, seqLt } from "../../lib/l4/seq.ts";
import { checksumPseudo4 } from "../../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../../lib/packet/ip4.ts";
import {
  tcpEmit,
  TcpFlag,
  tcpHeaderLen,
  TcpOptions,
  TcpPacket,
  tcpReprNew,
} from "../../lib/packet/tcp.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { tcpOooAllocated } from "../../lib/l4/tcp_ooo.ts";
import { Tapir, type TapirOptions } from "../../lib/tapir.ts";
import type { FrameBatch } from "../../lib/tap/tap.ts";
import { GUEST_MAC, NET, netWith, RecordingBackend } from "../services/harness.ts";

const GUEST_IP = NET.ip4!.addr;
const GATEWAY = NET.ip4!.gateway;
/** What the guest offers in its SYN. */
const GUEST_MSS = 65480;
const GUEST_WSCALE = 7;
/** The guest's receive window as written in every segment (scaled: about 8 MiB). */
const GUEST_WINDOW = 65535;
/** Just below 2^32: the sequence numbers of every test wrap. */
const GUEST_ISN = 0xfff0_0000;

/** One round of the guest: send, then give the loop this long. */
const ROUND_MS = 5;
/** Rounds without the ACK moving after which the guest considers tapir full (or stuck). */
const STALL_ROUNDS = 10;
/** Segments a guest that ignores the window sends per round. */
const BURST_SEGMENTS = 8;
/** A test that needs more rounds than this has hung. */
const MAX_ROUNDS = 600;
/** A sequence distance no test reaches: "no limit but the window". */
const UNLIMITED = 0x4000_0000;

/** The pattern byte at stream offset `i`. */
function patternByte(i: number): number {
  return i % 251;
}

/** Writes the pattern for stream offsets `from..from+len` at `buf[off..]`. */
function patternFill(buf: Uint8Array, off: number, from: number, len: number): void {
  for (let i = 0; i < len; i++) buf[off + i] = patternByte(from + i);
}

/** Lets the loop (and the host peer) run for `ms`. */
function tick(ms = ROUND_MS): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `cond` every round until it holds; fails naming `what` after `timeoutMs`. */
async function waitFor(what: string, cond: () => boolean, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick();
  }
}

/**
 * A guest TCP client in frames: it connects to `serverPort` on the gateway,
 * sends pattern bytes and keeps what tapir told it (ACK, window, FIN).
 */
class FakeGuest {
  /** First sequence number of data (stream offset 0). */
  readonly dataStart = seqAdd(GUEST_ISN, 1);
  /** Sequence number after the last byte sent (the highest, not rewound by resends). */
  sndNxt = this.dataStart;
  /** Highest acknowledgement tapir sent. */
  acked = this.dataStart;
  /** Right edge of tapir's latest window (ACK + scaled window). */
  wndRight = this.dataStart;
  /** Times the right edge moved left. */
  windowShrinks = 0;
  /** tapir's side: next sequence number expected, window scale, MSS (from the SYN-ACK). */
  rcvNxt = 0;
  tapirIsn: number | null = null;
  tapirWscale = 0;
  tapirMss = 0;
  /** Sequence number of tapir's FIN, or null before it. */
  tapirFin: number | null = null;
  /** Payload bytes tapir sent (counted again when resent). */
  dataFromTapir = 0;
  /** Bytes from tapir taken in order (from its first data byte), and the first that broke the pattern. */
  inOrder = 0;
  inOrderMismatch = -1;
  /** ACK frames tapir sent without data. */
  pureAcks = 0;
  /** Of those, window probes: sequence number just below the next byte expected. */
  windowProbes = 0;
  /** The receive window the guest writes in its segments (scaled by its window scale). */
  window = GUEST_WINDOW;
  /** Segments from tapir with a bad checksum, and RSTs. */
  badChecksums = 0;
  resets = 0;

  readonly #eth = new EthFrame();
  readonly #ip = new Ip4Packet();
  readonly #seg = new TcpPacket();
  readonly #opts = new TcpOptions();
  #seen = 0;

  constructor(
    readonly tapir: Tapir,
    readonly backend: RecordingBackend,
    readonly port: number,
    readonly serverPort: number,
  ) {}

  /** Stream offset of sequence number `seq`. */
  offsetOf(seq: number): number {
    return seqDiff(seq, this.dataStart);
  }

  /** Payload bytes tapir has acknowledged. */
  get bytesAcked(): number {
    return this.offsetOf(this.acked);
  }

  /** SYN, SYN-ACK, ACK. */
  async connect(): Promise<void> {
    this.deliver([this.frame(GUEST_ISN, TcpFlag.Syn, 0)]);
    await waitFor("the SYN-ACK", () => this.readReplies() && this.tapirIsn !== null);
    this.deliver([this.frame(this.dataStart, TcpFlag.Ack, 0)]);
  }

  /**
   * Sends the pattern bytes of `[from, to)` in one batch of segments of at
   * most tapir's MSS (or `segSize`).
   */
  sendRange(from: number, to: number, segSize = this.tapirMss): void {
    const frames: Uint8Array[] = [];
    for (let seq = from; seqLt(seq, to);) {
      const len = Math.min(segSize, seqDiff(to, seq));
      frames.push(this.frame(seq, TcpFlag.Ack | TcpFlag.Psh, len));
      seq = seqAdd(seq, len);
    }
    this.deliver(frames);
    if (seqGt(to, this.sndNxt)) this.sndNxt = to;
  }

  /** Sends new bytes up to tapir's window, and not past `end`. */
  sendWithinWindow(end: number): void {
    const limit = seqLt(this.wndRight, end) ? this.wndRight : end;
    if (seqGt(limit, this.sndNxt)) this.sendRange(this.sndNxt, limit);
  }

  /** Our FIN, after everything sent. */
  sendFin(): number {
    const seq = this.sndNxt;
    this.deliver([this.frame(seq, TcpFlag.Fin | TcpFlag.Ack, 0)]);
    this.sndNxt = seqAdd(seq, 1);
    return seq;
  }

  /** A bare ACK of what tapir sent (its FIN included). */
  sendAck(): void {
    this.deliver([this.frame(this.sndNxt, TcpFlag.Ack, 0)]);
  }

  /** Hands frames to tapir's dispatcher now, as one backend read; wakes the loop for the ACK. */
  deliver(frames: Uint8Array[]): void {
    for (const f of frames) this.tapir.input.frame(f, 0, f.length);
    this.tapir.endBatch();
    this.tapir.loop.post(() => {});
  }

  /** An Ethernet/IPv4/TCP frame from the guest, pattern payload and checksums filled. */
  frame(seq: number, flags: number, payloadLen: number): Uint8Array {
    const r = tcpReprNew();
    r.srcPort = this.port;
    r.dstPort = this.serverPort;
    r.seq = seq;
    r.ack = flags & TcpFlag.Ack ? this.rcvNxt : 0;
    r.flags = flags;
    r.window = flags & TcpFlag.Syn ? GUEST_WINDOW : this.window;
    r.payloadLen = payloadLen;
    if (flags & TcpFlag.Syn) {
      r.options.mss = GUEST_MSS;
      r.options.wscale = GUEST_WSCALE;
    }
    const segLen = tcpHeaderLen(r) + payloadLen;
    const f = new Uint8Array(ETH_HEADER_LEN + IP4_HEADER_LEN + segLen);
    let p = ethEmit(f, 0, NET.ourMac, GUEST_MAC, EtherType.Ipv4);
    const ip = ip4ReprNew();
    ip.src = GUEST_IP;
    ip.dst = GATEWAY;
    ip.proto = IpProto.Tcp;
    ip.dontFragment = true;
    ip.payloadLen = segLen;
    p += ip4Emit(f, p, ip);
    patternFill(f, p + tcpHeaderLen(r), this.offsetOf(seq), payloadLen);
    tcpEmit(f, p, r, checksumPseudo4(GUEST_IP, GATEWAY, IpProto.Tcp, segLen));
    return f;
  }

  /** Takes in every frame tapir sent since the last call. Returns true (for use in conditions). */
  readReplies(): boolean {
    const frames = this.backend.frames;
    for (; this.#seen < frames.length; this.#seen++) this.#reply(frames[this.#seen]);
    return true;
  }

  #reply(f: Uint8Array): void {
    const eth = this.#eth;
    const ip = this.#ip;
    const seg = this.#seg;
    if (eth.wrap(f, 0, f.length) !== 0 || eth.ethertype !== EtherType.Ipv4) return;
    if (ip.wrap(f, eth.payloadOffset, eth.payloadLen) !== 0 || ip.proto !== IpProto.Tcp) return;
    if (seg.wrap(f, ip.payloadOffset, ip.payloadLen) !== 0) return;
    if (seg.dstPort !== this.port || seg.srcPort !== this.serverPort) return;
    if (!seg.checksumOk4(ip.src, ip.dst)) {
      this.badChecksums++;
      return;
    }
    const flags = seg.flags;
    if (flags & TcpFlag.Rst) {
      this.resets++;
      return;
    }
    if (flags & TcpFlag.Syn) {
      seg.parseOptions(this.#opts);
      this.tapirIsn = seg.seq;
      this.rcvNxt = seqAdd(seg.seq, 1);
      this.tapirWscale = Math.max(0, this.#opts.wscale);
      this.tapirMss = Math.min(this.#opts.mss, GUEST_MSS);
      this.acked = seg.ack;
      this.wndRight = seqAdd(seg.ack, seg.window); // never scaled in a SYN
      return;
    }
    this.dataFromTapir += seg.payloadLen;
    if (seg.payloadLen === 0 && !(flags & TcpFlag.Fin)) {
      this.pureAcks++;
      if (seg.seq === seqAdd(this.rcvNxt, -1)) this.windowProbes++;
    }
    if (seg.payloadLen > 0 && seg.seq === this.rcvNxt) {
      // In order: take it (anything else is dropped, as a receiver without SACK does).
      for (let i = 0; i < seg.payloadLen && this.inOrderMismatch < 0; i++) {
        if (f[seg.payloadOffset + i] !== patternByte(this.inOrder + i)) {
          this.inOrderMismatch = this.inOrder + i;
        }
      }
      this.inOrder += seg.payloadLen;
      this.rcvNxt = seqAdd(this.rcvNxt, seg.payloadLen);
    }
    if (flags & TcpFlag.Fin) {
      this.tapirFin = seqAdd(seg.seq, seg.payloadLen);
      this.rcvNxt = seqAdd(this.tapirFin!, 1);
    }
    if (!(flags & TcpFlag.Ack) || seqLt(seg.ack, this.acked)) return;
    this.acked = seg.ack;
    const right = seqAdd(seg.ack, seg.window * 2 ** this.tapirWscale);
    if (seqLt(right, this.wndRight)) this.windowShrinks++;
    this.wndRight = right;
  }

  /** Fails if tapir reset the connection or sent a broken segment. */
  assertHealthy(): void {
    equal(this.resets, 0, "tapir reset the connection");
    equal(this.badChecksums, 0, "segments from tapir with a bad checksum");
    // The send-buffer room is cached between measurements (`#windowToTap`):
    // what it advertises must never take back bytes already offered.
    equal(this.windowShrinks, 0, "the window's right edge moved left");
  }
}

/** What the host peer read: bytes, and the first stream offset whose byte broke the pattern. */
interface Received {
  bytes: number;
  firstMismatch: number;
}

/** A Deno server on loopback: one accepted connection, read only when asked to. */
class HostPeer {
  readonly listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #accepted = this.listener.accept();
  #conn: Deno.TcpConn | null = null;
  #reading: Promise<Received> | null = null;

  constructor() {
    this.#accepted.catch(() => {}); // rejected only when a failed test closes the listener
  }

  get port(): number {
    return this.listener.addr.port;
  }

  /** The accepted connection (after the guest connected). */
  async accept(): Promise<void> {
    this.#conn = await this.#accepted;
  }

  /** Starts reading to EOF, checking the pattern; see {@linkcode received}. */
  startReading(): void {
    const conn = this.#conn;
    if (conn === null) throw new Error("no connection accepted");
    this.#reading = (async () => {
      const buf = new Uint8Array(256 * 1024);
      const got: Received = { bytes: 0, firstMismatch: -1 };
      for (;;) {
        const n = await conn.read(buf);
        if (n === null) return got;
        for (let i = 0; i < n && got.firstMismatch < 0; i++) {
          if (buf[i] !== patternByte(got.bytes + i)) got.firstMismatch = got.bytes + i;
        }
        got.bytes += n;
      }
    })();
    this.#reading.catch(() => {}); // a failed test closes the connection under the read
  }

  /** What was read up to EOF (fails after `timeoutMs`). */
  async received(timeoutMs = 5000): Promise<Received> {
    if (this.#reading === null) throw new Error("not reading");
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("host peer: no EOF")), timeoutMs);
    });
    try {
      return await Promise.race([this.#reading, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Writes the pattern for stream offsets `[0, n)` to the guest. */
  async write(n: number): Promise<void> {
    if (this.#conn === null) throw new Error("no connection accepted");
    const buf = new Uint8Array(n);
    patternFill(buf, 0, 0, n);
    for (let off = 0; off < n;) off += await this.#conn.write(buf.subarray(off));
  }

  /** Shuts down our sending side only (tapir then sends the guest a FIN). */
  closeWrite(): Promise<void> {
    if (this.#conn === null) throw new Error("no connection accepted");
    return this.#conn.closeWrite();
  }

  /** Closes our side of the connection (tapir then sends the guest a FIN). */
  closeConn(): void {
    this.#conn?.close();
    this.#conn = null;
  }

  close(): void {
    try {
      this.closeConn();
    } catch {
      // already closed
    }
    this.listener.close();
  }
}

let nextGuestPort = 41000;

/**
 * A running tapir (gateway mapped to loopback, loopback only), a host peer
 * and a guest connected to it, for `body`; everything is stopped and closed
 * afterwards, whatever `body` did.
 */
async function withConnection(
  body: (guest: FakeGuest, peer: HostPeer, tapir: Tapir) => Promise<void>,
  backend: RecordingBackend = new RecordingBackend(),
  opts: TapirOptions = {},
): Promise<void> {
  const net = netWith({ mapLo4: [GATEWAY], loopbackOnly: true });
  const tapir = new Tapir(net, backend, opts);
  const peer = new HostPeer();
  tapir.start();
  const running = tapir.loop.run();
  try {
    const guest = new FakeGuest(tapir, backend, nextGuestPort++, peer.port);
    await guest.connect();
    await peer.accept();
    await body(guest, peer, tapir);
  } finally {
    tapir.loop.stop();
    await running;
    tapir.loop.close();
    peer.close();
  }
}

/**
 * A guest that ignores tapir's window: bursts of full segments from tapir's
 * last ACK (so whatever was not acknowledged is sent again). Until the ACK
 * reaches `end`, or without `end` until the ACK has not moved for
 * {@linkcode STALL_ROUNDS} rounds (tapir is full).
 */
async function pushIgnoringWindow(guest: FakeGuest, end?: number): Promise<void> {
  let last = guest.acked;
  for (let round = 0, still = 0; still < STALL_ROUNDS; round++) {
    ok(round < MAX_ROUNDS, `stuck at ACK ${guest.bytesAcked}`);
    if (end !== undefined && !seqLt(guest.acked, end)) return;
    guest.sendRange(guest.acked, seqAdd(guest.acked, BURST_SEGMENTS * guest.tapirMss));
    await tick();
    guest.readReplies();
    guest.assertHealthy();
    if (guest.acked !== last) [last, still] = [guest.acked, 0];
    else if (end === undefined) still++;
  }
}

/**
 * A guest that respects tapir's window sends until `end` is acknowledged.
 * It never retransmits: {@linkcode STALL_ROUNDS} rounds without progress
 * fail, saying whether tapir sat on bytes inside its window or never
 * reopened a closed one.
 */
async function sendWithinWindowUntil(guest: FakeGuest, end: number): Promise<void> {
  let last = guest.acked;
  for (let round = 0, still = 0; guest.acked !== end; round++) {
    ok(round < MAX_ROUNDS, `stuck at ACK ${guest.bytesAcked}`);
    guest.sendWithinWindow(end);
    await tick();
    guest.readReplies();
    guest.assertHealthy();
    if (guest.acked !== last) [last, still] = [guest.acked, 0];
    else if (++still >= STALL_ROUNDS) {
      ok(
        guest.acked === guest.sndNxt,
        `bytes inside the window left unacknowledged at stream offset ${guest.bytesAcked}`,
      );
      ok(guest.wndRight !== guest.acked, `the window never reopened (at ${guest.bytesAcked})`);
    }
  }
}

/**
 * A well-behaved guest, host peer not reading: sends whatever the window
 * allows until it has sent up to the window's edge and tapir's ACK has not
 * moved for {@linkcode STALL_ROUNDS} rounds.
 */
async function fillWindow(guest: FakeGuest): Promise<void> {
  const end = seqAdd(guest.dataStart, UNLIMITED);
  let last = guest.acked;
  for (
    let round = 0, still = 0;
    still < STALL_ROUNDS || seqLt(guest.sndNxt, guest.wndRight);
    round++
  ) {
    ok(round < MAX_ROUNDS, "the window never closed");
    guest.sendWithinWindow(end);
    await tick();
    guest.readReplies();
    guest.assertHealthy();
    if (guest.acked !== last) [last, still] = [guest.acked, 0];
    else still++;
  }
}

/** Guest FIN, acknowledged by tapir. */
async function finFromGuest(guest: FakeGuest): Promise<number> {
  const fin = guest.sendFin();
  await waitFor("tapir's ACK of the guest's FIN", () => {
    guest.readReplies();
    return guest.acked === seqAdd(fin, 1);
  });
  guest.assertHealthy();
  return fin;
}

/** The host peer closes; tapir's FIN reaches the guest, which acknowledges it; tapir closes. */
async function closeFromHost(guest: FakeGuest, peer: HostPeer, tapir: Tapir): Promise<void> {
  peer.closeConn();
  await waitFor("tapir's FIN", () => guest.readReplies() && guest.tapirFin !== null);
  equal(guest.tapirFin, seqAdd(guest.tapirIsn!, 1), "tapir's FIN follows no data");
  guest.sendAck();
  await waitFor("the connection to close", () => tapir.tcp.stats.closed === 1);
  guest.readReplies();
  guest.assertHealthy();
  equal(tapir.tcp.stats.resetsToGuest, 0);
}

/** Asserts the host peer read the pattern exactly up to the guest's FIN. */
function assertReceivedUpTo(got: Received, guest: FakeGuest, fin: number): void {
  equal(got.firstMismatch, -1, `pattern broken at stream offset ${got.firstMismatch}`);
  equal(got.bytes, guest.offsetOf(fin), "bytes the host read vs bytes tapir acknowledged");
}

Deno.test("bytes tapir acknowledges reach the host in order, even past a full socket", async () => {
  await withConnection(async (guest, peer, tapir) => {
    await pushIgnoringWindow(guest);
    const stats = tapir.tcp.stats;
    ok(stats.spilled > 0, "the spill was never used");
    ok(stats.spillFull > 0, "the guest never found tapir full");
    ok(guest.bytesAcked > 0);

    // The host drains while the guest keeps pushing: segments now arrive
    // while the socket has room again and the spill still holds bytes.
    peer.startReading();
    await pushIgnoringWindow(guest, seqAdd(guest.acked, 4 * 1024 * 1024));
    // Bytes sent past the ACK were dropped: the FIN goes right after it.
    guest.sndNxt = guest.acked;
    const fin = await finFromGuest(guest);
    assertReceivedUpTo(await peer.received(), guest, fin);
    equal(guest.dataFromTapir, 0);
    await closeFromHost(guest, peer, tapir);
  });
});

Deno.test("the window tapir advertises is taken whole", async () => {
  await withConnection(async (guest, peer, tapir) => {
    await fillWindow(guest);
    const stats = tapir.tcp.stats;
    equal(guest.wndRight, guest.acked, "the window closed");
    equal(guest.acked, guest.sndNxt, "bytes sent inside the window but not acknowledged");
    equal(stats.spillFull, 0, "segments inside the window refused");
    equal(guest.windowShrinks, 0, "the window's right edge moved left");
    ok(guest.bytesAcked > 0);

    peer.startReading();
    await sendWithinWindowUntil(guest, seqAdd(guest.sndNxt, 16 * guest.tapirMss));
    const fin = await finFromGuest(guest);
    assertReceivedUpTo(await peer.received(), guest, fin);
    await closeFromHost(guest, peer, tapir);
  });
});

Deno.test("a guest FIN behind spilled bytes reaches the host after them", async () => {
  await withConnection(async (guest, peer, tapir) => {
    await pushIgnoringWindow(guest);
    ok(tapir.tcp.stats.spillFull > 0, "the spill never filled");
    // The host peer has not read a byte, so the socket is still full and the
    // spill still holds what it took.
    guest.sndNxt = guest.acked;
    const fin = await finFromGuest(guest);
    peer.startReading();
    assertReceivedUpTo(await peer.received(), guest, fin);
    await closeFromHost(guest, peer, tapir);
  });
});

Deno.test("a half-closed connection leaves the loop idle", async () => {
  await withConnection(async (guest, peer, tapir) => {
    await peer.closeWrite();
    await waitFor("tapir's FIN", () => guest.readReplies() && guest.tapirFin !== null);
    guest.sendAck(); // the guest has tapir's FIN and keeps its own side open, quietly
    await tick(20);
    const before = tapir.loop.stats.events;
    await tick(100);
    const events = tapir.loop.stats.events - before;
    ok(events < 50, `${events} loop events in 100 ms on a quiet half-closed connection`);
    peer.startReading();
    await sendWithinWindowUntil(guest, seqAdd(guest.sndNxt, 100_000));
    const fin = await finFromGuest(guest);
    assertReceivedUpTo(await peer.received(), guest, fin);
  });
});

Deno.test("the guest's FIN after the host's is acknowledged", async () => {
  await withConnection(async (guest, peer, tapir) => {
    peer.closeConn();
    await waitFor("tapir's FIN", () => guest.readReplies() && guest.tapirFin !== null);
    guest.sendAck();
    await finFromGuest(guest);
    await waitFor("the connection to close", () => tapir.tcp.stats.closed === 1);
    equal(tapir.tcp.stats.resetsToGuest, 0);
  });
});

Deno.test("segments of one receive batch reach the socket in one write and draw one ACK (RSC)", async () => {
  for (const rsc of [true, false]) {
    await withConnection(
      async (guest, peer, tapir) => {
        peer.startReading();
        guest.readReplies();
        const writes = tapir.tcp.stats.sockWrites;
        const acks = guest.pureAcks;
        const end = seqAdd(guest.sndNxt, 20 * 1000);
        guest.sendRange(guest.sndNxt, end, 1000); // twenty MSS-sized segments, one batch
        await waitFor("the ACK of the batch", () => guest.readReplies() && guest.acked === end);
        await tick(20);
        guest.readReplies();
        const fin = await finFromGuest(guest);
        assertReceivedUpTo(await peer.received(), guest, fin);
        if (rsc) {
          equal(tapir.tcp.stats.sockWrites - writes, 1, "one write for the batch");
          equal(guest.pureAcks - acks, 1 + 1, "one ACK for the batch (and one for the FIN)");
          equal(tapir.rsc!.stats.coalesced, 19);
          equal(tapir.rsc!.stats.chains, 1);
        } else {
          equal(tapir.tcp.stats.sockWrites - writes, 20, "--no-rsc: a write per segment");
          equal(tapir.rsc, null);
        }
      },
      new RecordingBackend(),
      { rsc },
    );
  }
});

Deno.test("the ACK of a small segment waits for the host's answer, which carries it", async () => {
  await withConnection(async (guest, peer, tapir) => {
    // Long enough that a slow turn cannot run the delay out first.
    tapir.tcp.ackDelayMs = 2000;
    guest.readReplies();
    const acks = guest.pureAcks;
    const end = seqAdd(guest.sndNxt, 10);
    guest.sendRange(guest.sndNxt, end); // a request: ten bytes
    await tick(20);
    guest.readReplies();
    equal(guest.acked, seqAdd(end, -10), "the ACK waits");
    await peer.write(5); // the answer
    await waitFor("the answer", () => guest.readReplies() && guest.inOrder === 5);
    equal(guest.acked, end, "the answer acknowledges the request");
    equal(guest.pureAcks - acks, 0, "no ACK of its own");
    equal(tapir.tcp.stats.acksCarried, 1);
    equal(tapir.tcp.stats.acksDelayed, 0);
    guest.assertHealthy();
  });
});

Deno.test("the ACK of a small segment the host does not answer goes alone, after the delay", async () => {
  await withConnection(async (guest, _peer, tapir) => {
    const delay = 200;
    tapir.tcp.ackDelayMs = delay;
    guest.readReplies();
    const acks = guest.pureAcks;
    const end = seqAdd(guest.sndNxt, 10);
    const sent = performance.now();
    guest.sendRange(guest.sndNxt, end);
    await waitFor("the ACK", () => guest.readReplies() && guest.acked === end);
    const waited = performance.now() - sent;
    // A timer never fires early; the clock's granularity is under a millisecond.
    ok(waited >= delay - 1, `acknowledged after ${waited.toFixed(1)} ms, before the delay`);
    equal(guest.pureAcks - acks, 1, "one ACK");
    equal(tapir.tcp.stats.acksDelayed, 1);
    equal(tapir.tcp.stats.acksCarried, 0);
    // A full segment is acknowledged at once (in the same turn).
    const full = seqAdd(end, guest.tapirMss);
    const fullSent = performance.now();
    guest.sendRange(end, full);
    await waitFor("the ACK of a full segment", () => guest.readReplies() && guest.acked === full);
    const fullWaited = performance.now() - fullSent;
    ok(fullWaited < delay, `a full segment's ACK waited ${fullWaited.toFixed(1)} ms`);
    equal(tapir.tcp.stats.acksDelayed, 1, "no more delayed ACKs");
    guest.assertHealthy();
  });
});

/** A recording backend that refuses frames once, from the `refuseAt`-th of a send on. */
class RefusingBackend extends RecordingBackend {
  refuseAt = -1;

  override send(batch: FrameBatch, count: number): number {
    const at = this.refuseAt;
    if (at < 0 || at >= count) {
      this.sendBlocked = false;
      return super.send(batch, count);
    }
    this.refuseAt = -1;
    this.sendBlocked = true; // as EAGAIN: the guest is not reading
    return super.send(batch, at);
  }
}

Deno.test("frames the backend did not deliver are sent again by tapir at once, from the first undelivered byte", async () => {
  const backend = new RefusingBackend();
  await withConnection(async (guest, peer, tapir) => {
    const total = 4 * 1024 * 1024;
    backend.refuseAt = 2; // the third frame of the next flush, and all after it
    const writing = peer.write(total);
    const start = performance.now();
    for (let round = 0; guest.inOrder < total; round++) {
      ok(round < MAX_ROUNDS, `stuck at ${guest.inOrder} of ${total} bytes`);
      await tick(2);
      guest.readReplies();
      guest.sendAck(); // acknowledges what arrived in order, never more
    }
    const elapsed = performance.now() - start;
    await writing;
    equal(guest.inOrderMismatch, -1, `pattern broken at ${guest.inOrderMismatch}`);
    equal(backend.refuseAt, -1, "the backend did refuse");
    ok(tapir.tcp.stats.rewinds >= 1, "tapir rewound to the undelivered bytes");
    equal(tapir.tcp.stats.retransmits, 0, "no timeout or duplicate ACK was needed");
    ok(tapir.tap.stats.undelivered > 0);
    console.log(`4 MiB in ${elapsed.toFixed(0)} ms, ${tapir.tcp.stats.rewinds} rewind(s)`);
    guest.assertHealthy();
  }, backend);
});

Deno.test("a zero window whose update was lost is probed, and the transfer resumes", async () => {
  await withConnection(async (guest, peer, tapir) => {
    const total = 256 * 1024;
    guest.window = 0;
    guest.sendAck(); // the guest's window is shut
    await tick(20);
    const writing = peer.write(total);
    await tick(50);
    guest.readReplies();
    equal(guest.inOrder, 0, "nothing is sent into a zero window");
    // The guest's window opens again, but its update never reaches tapir.
    // While it stays shut, probes are answered with window 0: no reset.
    await waitFor("a first window probe", () => guest.readReplies() && guest.windowProbes >= 1);
    guest.sendAck();
    await waitFor("a second window probe", () => guest.readReplies() && guest.windowProbes >= 2);
    equal(guest.inOrder, 0);
    guest.window = GUEST_WINDOW;
    guest.sendAck(); // the answer to that probe carries the open window
    for (let round = 0; guest.inOrder < total; round++) {
      ok(round < MAX_ROUNDS, `stuck at ${guest.inOrder} of ${total} bytes`);
      await tick(2);
      guest.readReplies();
      guest.sendAck();
    }
    await writing;
    equal(guest.inOrderMismatch, -1, `pattern broken at ${guest.inOrderMismatch}`);
    ok(tapir.tcp.stats.windowProbes >= 2, `${tapir.tcp.stats.windowProbes} probes counted`);
    guest.assertHealthy();
  });
});

Deno.test("bytes past a hole are kept: the segment that fills it is acknowledged with all of them", async () => {
  for (const rsc of [true, false]) {
    await withConnection(
      async (guest, peer, tapir) => {
        peer.startReading();
        const seg = 1000;
        const base = guest.sndNxt;
        const at = (k: number) => seqAdd(base, k * seg);
        // Segments 0..9 of 1000 bytes; the guest's frames 0, 3 and 4 are lost
        // on the way; later 3 is resent, and 4 with part of 5 (an overlap).
        guest.sendRange(at(1), at(3), seg);
        guest.sendRange(at(5), at(10), seg);
        await tick(20);
        guest.readReplies();
        equal(guest.acked, base, "nothing past the first hole is acknowledged");
        const st = tapir.tcp.stats;
        equal(st.oooKept, 7 * seg, "segments 1, 2 and 5..9 kept");
        guest.sendRange(at(3), at(4), seg);
        guest.sendRange(at(4), seqAdd(at(5), 500), 1500);
        await tick(20);
        guest.readReplies();
        equal(guest.acked, base, "still waiting for segment 0");
        guest.sendRange(at(0), at(1), seg); // the retransmission that fills the first hole
        await waitFor("the ACK past everything held", () => {
          guest.readReplies();
          return guest.acked === at(10);
        });
        equal(st.oooDelivered, 9 * seg, "segments 1..9 went out behind segment 0");
        equal(tcpOooAllocated(), 0, "the queue is released once empty");
        const fin = await finFromGuest(guest);
        assertReceivedUpTo(await peer.received(), guest, fin);
        await closeFromHost(guest, peer, tapir);
      },
      new RecordingBackend(),
      { rsc },
    );
  }
});
