/**
 * TCP translation between the guest's segments and host sockets.
 *
 * # Theory of operation
 *
 * **No TCP stack of our own.** Each connection is a flow (type TCP) joining
 * the guest's TCP endpoint, which talks to tapir's tap side, and an ordinary
 * host socket, which the kernel runs. tapir only keeps four sequence
 * cursors per connection and moves bytes between the two:
 *
 * - `seqToTap`: the next byte we send the guest;
 * - `seqAckFromTap`: everything before it the guest has acknowledged;
 * - `seqFromTap`: the next byte we expect from the guest;
 * - `seqAckToTap`: what we last acknowledged to the guest.
 *
 * **Host → guest: data stays in the kernel until the guest has it.** We read
 * the socket with `MSG_PEEK`, so bytes remain in its receive queue after we
 * have sent them to the guest. `SO_PEEK_OFF` (set to 0 when the connection is
 * established) makes each peek continue where the last one stopped, so no
 * byte is copied twice. When the guest acknowledges bytes, a `recv` with
 * `MSG_TRUNC` drops them from the queue without copying. To retransmit (on
 * timeout, or after three duplicate ACKs) we *rewind*: `seqToTap =
 * seqAckFromTap`, peek offset back to 0, peek again. Un-ACKed data is thus
 * always recoverable and costs no buffer of ours. One `recvmsg` fills the
 * payload areas of up to {@linkcode MAX_FRAMES_PER_READ} frames at once, so
 * data lands where the frame is sent from — its slot, or under vhost-user
 * the guest's own receive buffers (`TapSender.payloadIov`); headers are
 * then written in front. A frame carries one MSS, or, where the send path takes GSO frames
 * (the tap), as many whole MSS-sized segments as fit in a 64 KiB IP packet:
 * one frame with GSO type TCPV4/TCPV6 and size = the guest's MSS, checksum
 * left partial, which the guest's kernel takes as one large segment. The
 * window, the peek-and-consume on ACK and the rewinds work on bytes, so big
 * frames change nothing else. We never send more than the guest's window
 * allows (`wndFromTap`, scaled) beyond what it has acknowledged.
 *
 * Frames the backend did not deliver (the guest not reading: EAGAIN) come
 * back from the send path (`#undelivered`): we rewind to the first byte of
 * the first of them at once — `seqToTap` and the peek offset back to it —
 * and carry on when the backend is writable again (`#resume`), instead of
 * waiting for the guest's duplicate ACKs or our timeout.
 *
 * The socket is watched edge-triggered (`EPOLLET`): peeked bytes stay in the
 * queue, so a level-triggered `EPOLLIN` would fire forever. Reading is
 * driven by edges (new data), by guest ACKs and window updates (room to send
 * more) and by the retransmission timer.
 *
 * **Guest → host: what is inside our window is taken.** Payload in order
 * is written with one `sendmsg(MSG_DONTWAIT)` per segment — per merged
 * segment: the RSC coalescer (`rsc.ts`) hands over in-order segments of one
 * receive batch as one ({@linkcode TcpMerged}), whose payload pieces, still
 * in the receive slots or, under vhost-user, in the guest's own transmit
 * buffers (a frame's tail), go out as one iovec. A GSO frame from the guest (up
 * to 64 KiB, TSO granted on the tap) is one segment here. The window we
 * advertise is what the socket will still take: its free send-buffer memory
 * (`SO_MEMINFO`) divided by the memory it spends per byte queued (measured
 * on the socket itself: queued memory over `SIOCOUTQ` bytes, about 1.4 %
 * more than the payload with 64 KiB segments), so the guest's congestion
 * control, not ours, paces the transfer. Should the socket still refuse
 * part of a segment inside that window, the rest goes to a small *spill*
 * buffer of the connection ({@linkcode TCP_SPILL_MAX}, allocated only then)
 * and is acknowledged: written first when the socket drains (`EPOLLOUT`),
 * before any later byte, and the guest's FIN waits for it. Refusing it
 * instead would be costly: measured, a Linux guest whose later segments we
 * must then drop (they lie past a hole) cannot tell which were lost
 * without SACK; its recovery declares its own timeout spurious and stalls
 * for seconds of backed-off timeouts. What neither socket nor spill takes
 * is not acknowledged. A segment beyond a hole (a frame lost before tapir
 * read it) is answered with duplicate ACKs, so the guest's fast retransmit
 * fills the hole, and its bytes are kept meanwhile in a queue of the
 * connection's, allocated only then (`tcp_ooo.ts`): the bytes that fill the
 * hole go out with everything held behind them, and one ACK covers it all.
 * Overlaps are trimmed. One ACK per connection per loop turn, from the flow table's
 * deferred pass, however many segments arrived.
 *
 * **The window we offer** is the room in the host socket's send buffer,
 * and on a tap that takes the guest's TCP one segment per frame (no TSO:
 * `--no-offload`, or a tap without a vnet header) at most half the tap's
 * queue in segments (`Tap.guestWindowSegments`): the guest then never has
 * more frames in flight than the queue holds, so the tap never drops them.
 * Measured (1 GiB upload over IPv6 at MTU 1500 without offloads, 4 runs):
 * with the socket's room alone (2.7 MB, 1 900 segments against a queue of
 * 1 000) the tap dropped 1 000–1 900 frames per run, the guest retransmitted
 * 3 000–18 000 segments in 10–41 timeouts, and a run took 10–28 s; with the
 * bound, no drop, no retransmission, 5.9–6.2 s.
 *
 * **State is events and flags, not RFC states.** {@linkcode TcpEv} records
 * what has happened (SYN received, established, FIN sent/received/ACKed on
 * each side) and {@linkcode TcpFl} duties pending (an ACK due, a blocked
 * write). They change only through `#event` and `#flag`, which log at debug
 * level and recompute what epoll should report for the socket.
 *
 * **Opening.** Guest SYN → non-blocking `connect` (gateway address mapped to
 * host loopback); on success a SYN-ACK (MSS, window scale if the guest
 * offered it), on refusal a RST, on an unreachable host an ICMP error.
 * Host accept (port forwarding, {@linkcode Tcp.inbound}) → we send the guest a
 * SYN and do not read the socket until the guest answers with SYN-ACK.
 * Handshake segments are resent identically by the retransmission timer.
 *
 * **Closing.** Host EOF → after the last data, a FIN to the guest. Guest FIN
 * in order → `shutdown(SHUT_WR)` on the socket. When both directions are
 * finished (our FIN acknowledged), the socket is closed. A RST from either
 * side resets the other (`SO_LINGER` 0 makes `close` send one to the host).
 * The kernel keeps TIME_WAIT for us. A closed connection leaves epoll at once
 * and its flow is freed by the flow table's deferred pass.
 *
 * **Timers.** One {@linkcode Timer} per connection: retransmission with
 * exponential backoff from {@linkcode TCP_RTO_MS}, a RST after
 * {@linkcode TCP_MAX_RETRIES}. With nothing in flight and the guest's window
 * shut, the same timer persists: it probes the window with a segment just
 * below the guest's next expected byte, which the guest answers with its
 * current window — a window update is a pure ACK, never resent, and one
 * lost would otherwise stall the connection for good; probes nobody answers
 * end in a RST like retransmissions. The flow table's once-a-second pass
 * enforces the handshake and idle timeouts. Host sockets have `SO_KEEPALIVE`, so a
 * host peer that disappears silently ends in an error, which resets the
 * guest's side; the guest's own keepalives are answered like any old
 * segment, with an ACK.
 *
 * **Bounds.** Per connection tapir holds no data but the spill and the
 * out-of-order queue: host → guest bytes wait in the socket's receive
 * queue, guest → host bytes are taken by the socket, kept in the spill (at
 * most {@linkcode TCP_SPILL_MAX}, only while the socket is full), held past
 * a hole (bounded per connection and in all, see `tcp_ooo.ts`) or not
 * acknowledged. While the guest's window is full the
 * socket is not read (STALLED), so the kernel's own flow control pushes back
 * on the host peer.
 *
 * @module
 */

import { OutboundBind } from "./outbound.ts";
import { FlowSide, flowSidx, type FlowTable, FlowType, Pif, sidxFlow } from "../flow/table.ts";
import { SlotMemory } from "../flow/slots.ts";
import { natFromTap4, natFromTap6 } from "../fwd.ts";
import { log, logEnabled, LogLevel } from "../log.ts";
import { type Loop, SPIN_MS, Timer } from "../loop.ts";
import { type GuestNet, u32ToIp4 } from "../net.ts";
import { checksumPseudo4, checksumPseudo6 } from "../packet/checksum.ts";
import { IcmpType, IcmpUnreachCode } from "../packet/icmp.ts";
import { Icmp6Type } from "../packet/icmp6.ts";
import { IP4_HEADER_LEN, type Ip4Packet } from "../packet/ip4.ts";
import type { Ip6Packet } from "../packet/ip6.ts";
import {
  TCP_CHECKSUM_OFFSET,
  TCP_HEADER_LEN,
  tcpEmit,
  TcpFlag,
  tcpHeaderLen,
  TcpOptions,
  tcpOptionsParse,
  type TcpPacket,
  tcpReprNew,
} from "../packet/tcp.ts";
import { IpProto } from "../packet/wire.ts";
import { halfSipHash, sipKeyRandom } from "../flow/siphash.ts";
import * as sys from "../sys/mod.ts";
import { GsoType, PAYLOAD_IOV_MAX, TAP_HEADROOM, type TapSender } from "../tap/tap.ts";
import { type FrameTail, TAIL_MAX_PIECES } from "../tap/tail.ts";
import { type GuestHeaders, icmpErrorToGuest4, icmpErrorToGuest6, L4_OFF4, L4_OFF6 } from "./ip.ts";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "./seq.ts";
import { TcpOoo } from "./tcp_ooo.ts";

/** Window scale we offer the guest: windows up to 65535 << 8 = 16 MiB. */
export const TCP_WS_TO_TAP = 8;
/** Largest window we advertise to the guest. */
export const TCP_MAX_WINDOW = 65535 << TCP_WS_TO_TAP;
/** First retransmission timeout; doubles with each retry. */
export const TCP_RTO_MS = 200;
/**
 * How long an ACK of a small in-order segment may wait for data to carry
 * it: within the loop's longest spin, which the loop always spins for a
 * timer, so the ACK goes out before the loop sleeps.
 */
export const TCP_ACK_DELAY_MS = SPIN_MS / 2;
/** Retransmissions (or unanswered window probes) before the connection is reset. */
export const TCP_MAX_RETRIES = 7;
/** Longest interval between two probes of a zero window (the backoff's cap). */
export const TCP_PERSIST_MAX_MS = 60_000;
/** A handshake not finished after this long is reset. */
export const TCP_HANDSHAKE_TIMEOUT_MS = 10_000;
/** A connection with no traffic either way for this long is reset. */
export const TCP_IDLE_TIMEOUT_MS = 2 * 3600 * 1000;
/** Frames filled by one peek. */
export const MAX_FRAMES_PER_READ = 32;
/**
 * Iovecs of one peek (the kernel takes up to 1024): frames stop being added
 * when the next might not fit.
 */
const PEEK_IOV_MAX = 1024;
/** Bytes inside our window a full socket refused that a connection keeps (see the module comment). */
export const TCP_SPILL_MAX = 256 * 1024;
/**
 * Send-buffer memory per payload byte assumed until the socket has enough
 * queued to measure it (1 + 1/16: above what 1 KiB writes cost).
 */
const MEM_PER_BYTE_DEFAULT = 17 / 16;
/** Bytes queued on a socket from which its memory per byte is measured. */
const MEM_PER_BYTE_MIN_QUEUE = 64 * 1024;
/** MSS assumed when the guest sends none (RFC 9293 §3.7.1). */
const DEFAULT_MSS = 536;
/** Most payload pieces RSC merges behind one head segment (see `rsc.ts`). */
export const TCP_MERGE_MAX_PIECES = 64;

/**
 * Payload pieces one write to a socket may take: the head's (a tail's
 * worth), those RSC merged, and out-of-order bytes held behind them.
 */
const P_MAX = TAIL_MAX_PIECES + TCP_MERGE_MAX_PIECES + 2;

/**
 * Guest segments RSC merged behind a head segment (see `rsc.ts`): what TCP
 * takes instead of the head's own ACK, window and flags, and the payloads
 * that follow the head's, in sequence order, in place in the receive slots.
 */
export interface TcpMerged {
  /** The acknowledgement of the last segment merged. */
  readonly ack: number;
  /** Its window (unscaled, as in the header). */
  readonly window: number;
  /** The head's flags with those of the others (PSH) added. */
  readonly flags: number;
  /** Payload pieces after the head's own: `bufs[i][offs[i]..+lens[i])` for i < `count`. */
  readonly count: number;
  readonly bufs: readonly Uint8Array[];
  readonly offs: Float64Array;
  readonly lens: Uint32Array;
  /** Bytes in those pieces. */
  readonly total: number;
}

/** What has happened on a connection; see the module comment. */
export const TcpEv = {
  /** Inbound: accepted on the host, SYN sent to the guest. */
  SOCK_ACCEPTED: 1 << 0,
  /** Outbound: SYN from the guest, host connect in progress. */
  TAP_SYN_RCVD: 1 << 1,
  /** Handshake complete on both sides. */
  ESTABLISHED: 1 << 2,
  /** Outbound: SYN-ACK sent to the guest. */
  TAP_SYN_ACK_SENT: 1 << 3,
  /** The host side sent its FIN (end of its data). */
  SOCK_FIN_RCVD: 1 << 4,
  /** We shut down writing on the host socket (after the guest's FIN). */
  SOCK_FIN_SENT: 1 << 5,
  /** The guest sent its FIN. */
  TAP_FIN_RCVD: 1 << 6,
  /** We sent the guest a FIN. */
  TAP_FIN_SENT: 1 << 7,
  /** The guest acknowledged our FIN. */
  TAP_FIN_ACKED: 1 << 8,
  /** Finished; the flow is freed by the deferred pass. */
  CLOSED: 1 << 9,
  /**
   * The socket reported the end of the host's data (EPOLLRDHUP) or a hang-up:
   * a peek that drains the queue must look once more, for the end itself.
   */
  SOCK_EOF_SEEN: 1 << 10,
} as const;

const EV_NAMES = Object.keys(TcpEv);

/** Duties pending on a connection. */
export const TcpFl = {
  /** The guest's window is full: wait for its ACK before reading more. */
  STALLED: 1 << 0,
  /** An ACK to the guest is due at the end of this turn. */
  ACK_TO_TAP_DUE: 1 << 1,
  /** The host socket refused data, or our window is closed: watch EPOLLOUT, then update it. */
  WRITE_BLOCKED: 1 << 2,
  /** Bytes from the guest are missing (a short write, a lost frame): ask for fast retransmit. */
  GAP: 1 << 3,
} as const;

const FL_NAMES = Object.keys(TcpFl);

/** Counters of the TCP layer. */
export interface TcpStats {
  /** Connections opened from the guest. */
  outbound: number;
  /** Connections opened from the host (port forwarding). */
  inbound: number;
  /** Guest connections refused: host refused, unreachable, `--loopback-only`. */
  refused: number;
  /** Connections refused because the flow table was full. */
  tableFull: number;
  /** Bytes written to host sockets. */
  bytesToHost: number;
  /** Guest segments the host socket took only part of (or none of). */
  shortWrites: number;
  /** Bytes the host socket refused that were kept in a spill buffer (acknowledged). */
  spilled: number;
  /** Segments (or their rest) refused by the socket with the spill full: not acknowledged. */
  spillFull: number;
  /** Writes to host sockets (one per guest segment, or per chain RSC merged). */
  sockWrites: number;
  /** Bytes sent to the guest (first transmissions and retransmissions). */
  bytesToGuest: number;
  /** Retransmissions to the guest (timeouts, duplicate ACKs). */
  retransmits: number;
  /** Rewinds to the first byte of a frame the backend did not deliver (sent again at once). */
  rewinds: number;
  /** Probes of a zero window from the guest (its window update may have been lost). */
  windowProbes: number;
  /** ACKs whose window took back room offered before, more than the spill could hold. */
  windowTakenBack: number;
  /** ACKs of a small segment that waited the delay out and went alone (see `#deferred`). */
  acksDelayed: number;
  /** ACKs of a small segment that a data frame toward the guest carried instead. */
  acksCarried: number;
  /** Segments from the guest past a hole (answered with duplicate ACKs). */
  outOfOrder: number;
  /** Of their bytes, those kept until the hole was filled... */
  oooKept: number;
  /** ...and those later written behind the bytes that filled it. */
  oooDelivered: number;
  /** Segments past a hole not kept (no room in the queue or the budget). */
  oooRefused: number;
  /** Segments from the guest that repeat bytes already taken (its retransmissions). */
  oldData: number;
  /** RSTs sent to the guest. */
  resetsToGuest: number;
  /** Segments for no connection. */
  noFlow: number;
  /** Connections closed. */
  closed: number;
}

/** `TcpColumns.f64` fields, per connection. */
const F_LAST_MS = 0;
const F_START_MS = 1;
const F_SEQ_GAP_ASKED = 2;
const F64_STRIDE = 3;
/** `seqGapAsked` before any ask: no sequence number in the signed form is 2^32. */
const SEQ_NONE = 2 ** 32;
/**
 * `TcpColumns.i32` fields, per connection (stride {@linkcode I32_STRIDE}):
 * sequence numbers and IPv4 addresses in their signed form (`seq.ts`,
 * `Ip4Packet.srcBits`), then small integers and flags.
 */
const I_SEQ_TO_TAP = 0;
const I_SEQ_ACK_FROM_TAP = 1;
const I_SEQ_FROM_TAP = 2;
const I_SEQ_ACK_TO_TAP = 3;
const I_SEQ_FIN_TO_TAP = 4;
const I_ISN = 5;
const I_SEQ_WND_EDGE = 6;
const I_SRC4 = 7;
const I_DST4 = 8;
const I_FD = 9;
const I_FLAGS = 10;
const I_EPOLL_MASK = 11;
const I_WND_FROM_TAP = 12;
const I_WS_FROM_TAP = 13;
const I_WS_TO_TAP = 14;
const I_WND_TO_TAP = 15;
const I_SND_ROOM = 16;
const I_SND_ROOM_MEASURED = 17;
const I_SPILL_LEN = 18;
const I_SPILL_START = 19;
const I_MSS = 20;
const I_RETRIES = 21;
const I_PROBES = 22;
const I_DUP_ACKS = 23;
const I_SPORT = 24;
const I_DPORT = 25;
const I_SENT_TURN = 26;
const I_SENT_IN_TURN = 27;
const I_BITS = 28; // B_* below
const I32_STRIDE = 29;
const B_V6 = 1;
const B_TAP_SIDE = 2;
const B_RESUME_PENDING = 4;
const B_ACK_MAY_WAIT = 8;
const B_ACK_WAITING = 16;
/** `TcpConn.epollMask` of a socket not in epoll: all bits, a mask never wanted. */
const EPOLL_UNREGISTERED = -1;

/** Bytes of addresses per connection: ours, then the guest's (IPv4 mapped). */
const ADDRS_STRIDE = 32;
/**
 * The numbers of every connection, in typed arrays indexed by flow:
 * sequence numbers and IPv4 addresses (as an object's field, a value from
 * 2^31 up, past V8's 32-bit small integers, was a 16-byte heap number; here
 * they are kept, and read, in the signed form of `seq.ts`), clocks
 * (doubles, boxed too), the addresses (a `Uint8Array` of its own costs
 * ~0.5 KiB of resident memory with its buffer), and every small integer
 * and flag. An object's field takes 8 bytes (no pointer compression in
 * Deno's V8) and lives on the garbage-collected heap, whose size is a
 * multiple of what is live; a column's takes 4 and lives here. Measured
 * with 100 000 connections, an object carrying the boxed numbers plus a
 * timer closure took 1.65 KiB of RSS each, and 0.47 with the
 * sequence-number, clock and address columns. Moving the 24 small integers
 * and flags too shrank the object from 33 fields to 9 (about 300 bytes to
 * 110); with that and the slot memory below, the peak resident set with
 * 19 500 connections open (`bench/flows_scale.ts`, 3 interleaved runs
 * each) fell from 35.4 to 24.0 MiB above idle. Like the flow table's own
 * arrays, the columns are mapped once for its capacity and resident only
 * where written (`slots.ts`), and give their pages back when the table
 * halves ({@linkcode FlowTable.onResize}).
 */
class TcpColumns {
  readonly f64: Float64Array;
  readonly addrs: Uint8Array;
  readonly i32: Int32Array;
  readonly #mem: SlotMemory;
  #size = 0;

  constructor(capacity: number) {
    const perSlot = [F64_STRIDE * 8, ADDRS_STRIDE, I32_STRIDE * 4];
    this.#mem = new SlotMemory(capacity, perSlot);
    this.f64 = this.#mem.view(Float64Array, 0);
    this.addrs = this.#mem.view(Uint8Array, 1);
    this.i32 = this.#mem.view(Int32Array, 2);
  }

  /** The flow table now has `size` slots: when it shrank, the pages above go back. */
  resized(size: number): void {
    if (size < this.#size) this.#mem.release(size);
    this.#size = size;
  }
}

/**
 * Per-connection state: the TCP flow's type-specific data. The object is
 * also the connection's retransmission timer (one object, no closure). Its
 * numbers live in {@linkcode TcpColumns}, reached by accessors of the same
 * names; the object keeps only what must be an object's (the timer, the
 * rarely allocated spill and out-of-order queue) and `events`.
 */
class TcpConn extends Timer {
  /**
   * What has happened ({@linkcode TcpEv}). A field of the object, unlike
   * the numbers in the columns: a connection on the delayed-ACK list may
   * have closed and its slot been taken by another, and `CLOSED` here is
   * what tells the list so without reading the columns.
   */
  events = 0;
  /** Guest bytes the socket refused, acknowledged, written before any later byte (or null). */
  spill: Uint8Array | null = null;
  /** Guest bytes that arrived past a hole, kept until it is filled (or null; see `tcp_ooo.ts`). */
  ooo: TcpOoo | null = null;
  /** The flow's index. */
  readonly index: number;
  /** Where the numbers below live. */
  readonly #cols: TcpColumns;

  constructor(
    index: number,
    fd: number,
    v6: boolean,
    tapSide: 0 | 1,
    cols: TcpColumns,
    rto: (t: Timer) => void,
  ) {
    super(rto);
    this.index = index;
    this.#cols = cols;
    const i = index * I32_STRIDE;
    cols.i32.fill(0, i, i + I32_STRIDE);
    cols.i32[i + I_FD] = fd;
    cols.i32[i + I_EPOLL_MASK] = EPOLL_UNREGISTERED;
    cols.i32[i + I_MSS] = DEFAULT_MSS;
    cols.i32[i + I_SENT_TURN] = -1;
    cols.i32[i + I_BITS] = (v6 ? B_V6 : 0) | (tapSide ? B_TAP_SIDE : 0);
    const f = index * F64_STRIDE;
    cols.f64[f + F_LAST_MS] = cols.f64[f + F_START_MS] = performance.now();
    cols.f64[f + F_SEQ_GAP_ASKED] = SEQ_NONE;
  }

  /** The host socket, or -1 once closed. */
  get fd(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_FD];
  }
  set fd(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_FD] = v;
  }
  /** Duties pending ({@linkcode TcpFl}). */
  get flags(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_FLAGS];
  }
  set flags(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_FLAGS] = v;
  }
  /**
   * Events mask currently registered with epoll, as a signed 32-bit value
   * (see `Tcp.#wantedMask`), or {@linkcode EPOLL_UNREGISTERED}.
   */
  get epollMask(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_EPOLL_MASK];
  }
  set epollMask(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_EPOLL_MASK] = v;
  }
  /** The guest's receive window in bytes (scaled). */
  get wndFromTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_WND_FROM_TAP];
  }
  set wndFromTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_WND_FROM_TAP] = v;
  }
  /** The guest's window scale shift (0 without scaling). */
  get wsFromTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_WS_FROM_TAP];
  }
  set wsFromTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_WS_FROM_TAP] = v;
  }
  /** Our window scale shift (0 without scaling). */
  get wsToTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_WS_TO_TAP];
  }
  set wsToTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_WS_TO_TAP] = v;
  }
  /** Window we last advertised, in bytes. */
  get wndToTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_WND_TO_TAP];
  }
  set wndToTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_WND_TO_TAP] = v;
  }
  /**
   * Payload bytes the socket takes for sure: its free send-buffer room when
   * last measured (`SO_MEMINFO`), less what we wrote since. The room only
   * grows while the host peer reads, so this is a floor (see `#windowToTap`).
   */
  get sndRoom(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SND_ROOM];
  }
  set sndRoom(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SND_ROOM] = v;
  }
  /** `sndRoom` as last measured. */
  get sndRoomMeasured(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SND_ROOM_MEASURED];
  }
  set sndRoomMeasured(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SND_ROOM_MEASURED] = v;
  }
  /** Bytes in `spill` from `spillStart`. */
  get spillLen(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SPILL_LEN];
  }
  set spillLen(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SPILL_LEN] = v;
  }
  get spillStart(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SPILL_START];
  }
  set spillStart(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SPILL_START] = v;
  }
  /** Largest payload per segment to the guest. */
  get mss(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_MSS];
  }
  set mss(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_MSS] = v;
  }
  /** Retransmissions, or window probes, the guest has not answered yet. */
  get retries(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_RETRIES];
  }
  set retries(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_RETRIES] = v;
  }
  /** Window probes sent since the guest's window closed: the probe interval's backoff. */
  get probes(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_PROBES];
  }
  set probes(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_PROBES] = v;
  }
  get dupAcks(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_DUP_ACKS];
  }
  set dupAcks(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_DUP_ACKS] = v;
  }
  /** Ports as the guest sees them: ours (source) and the guest's. */
  get sport(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SPORT];
  }
  set sport(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SPORT] = v;
  }
  get dport(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_DPORT];
  }
  set dport(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_DPORT] = v;
  }
  /** The loop turn `sentInTurn` counts for, as a signed 32-bit value. */
  get sentTurn(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SENT_TURN];
  }
  set sentTurn(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SENT_TURN] = v;
  }
  /** Frames sent to the guest in turn `sentTurn` (see `Tcp.#sockToTap`). */
  get sentInTurn(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SENT_IN_TURN];
  }
  set sentInTurn(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SENT_IN_TURN] = v;
  }
  /** Whether the connection is over IPv6. */
  get v6(): boolean {
    return (this.#cols.i32[this.index * I32_STRIDE + I_BITS] & B_V6) !== 0;
  }
  /** Side of the flow that faces the guest (0 outbound, 1 inbound). */
  get tapSide(): 0 | 1 {
    return (this.#cols.i32[this.index * I32_STRIDE + I_BITS] & B_TAP_SIDE) !== 0 ? 1 : 0;
  }
  /** Waiting in the resume list for the backend to take frames again. */
  get resumePending(): boolean {
    return (this.#cols.i32[this.index * I32_STRIDE + I_BITS] & B_RESUME_PENDING) !== 0;
  }
  set resumePending(v: boolean) {
    this.#bit(B_RESUME_PENDING, v);
  }
  /** The due ACK may wait for data to carry it (see `Tcp.#deferred`). */
  get ackMayWait(): boolean {
    return (this.#cols.i32[this.index * I32_STRIDE + I_BITS] & B_ACK_MAY_WAIT) !== 0;
  }
  set ackMayWait(v: boolean) {
    this.#bit(B_ACK_MAY_WAIT, v);
  }
  /** On the delayed-ACK list. */
  get ackWaiting(): boolean {
    return (this.#cols.i32[this.index * I32_STRIDE + I_BITS] & B_ACK_WAITING) !== 0;
  }
  set ackWaiting(v: boolean) {
    this.#bit(B_ACK_WAITING, v);
  }
  #bit(bit: number, on: boolean): void {
    const at = this.index * I32_STRIDE + I_BITS;
    const bits = this.#cols.i32;
    bits[at] = on ? bits[at] | bit : bits[at] & ~bit;
  }

  has(ev: number): boolean {
    return (this.events & ev) !== 0;
  }

  get seqToTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_TO_TAP];
  }
  set seqToTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_TO_TAP] = v;
  }
  get seqAckFromTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_ACK_FROM_TAP];
  }
  set seqAckFromTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_ACK_FROM_TAP] = v;
  }
  get seqFromTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_FROM_TAP];
  }
  set seqFromTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_FROM_TAP] = v;
  }
  get seqAckToTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_ACK_TO_TAP];
  }
  set seqAckToTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_ACK_TO_TAP] = v;
  }
  /** Sequence number of our FIN (valid with TAP_FIN_SENT). */
  get seqFinToTap(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_FIN_TO_TAP];
  }
  set seqFinToTap(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_FIN_TO_TAP] = v;
  }
  /** Our initial sequence number (handshake retransmissions). */
  get isn(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_ISN];
  }
  set isn(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_ISN] = v;
  }
  /** The right edge of the window offered to the guest so far (see `#windowField`). */
  get seqWndEdge(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SEQ_WND_EDGE];
  }
  set seqWndEdge(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SEQ_WND_EDGE] = v;
  }
  /**
   * IPv4 source (ours) and destination (the guest), as signed 32-bit
   * numbers: each frame to the guest passes them on, and an unsigned one from
   * 128.0.0.0 up was a heap number per frame (see `Ip4Packet.srcBits`).
   */
  get src4(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_SRC4];
  }
  set src4(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_SRC4] = v;
  }
  get dst4(): number {
    return this.#cols.i32[this.index * I32_STRIDE + I_DST4];
  }
  set dst4(v: number) {
    this.#cols.i32[this.index * I32_STRIDE + I_DST4] = v;
  }
  /** `seqFromTap` we last asked the guest to retransmit from, or `SEQ_NONE` (see `#ackToTap`). */
  get seqGapAsked(): number {
    return this.#cols.f64[this.index * F64_STRIDE + F_SEQ_GAP_ASKED];
  }
  set seqGapAsked(v: number) {
    this.#cols.f64[this.index * F64_STRIDE + F_SEQ_GAP_ASKED] = v;
  }
  /** Last traffic either way (performance.now() ms). */
  get lastMs(): number {
    return this.#cols.f64[this.index * F64_STRIDE + F_LAST_MS];
  }
  set lastMs(v: number) {
    this.#cols.f64[this.index * F64_STRIDE + F_LAST_MS] = v;
  }
  /** When the connection started (handshake timeout). */
  get startMs(): number {
    return this.#cols.f64[this.index * F64_STRIDE + F_START_MS];
  }
  /** Addresses as the guest sees them: ours (source of our frames) at `addrsOff`, then the guest's. */
  get addrs(): Uint8Array {
    return this.#cols.addrs;
  }
  get addrsOff(): number {
    return this.index * ADDRS_STRIDE;
  }
}

/** `struct linger` {l_onoff 1, l_linger 0}: close() then sends a RST. Only read. */
const LINGER_RESET = new Uint8Array([1, 0, 0, 0, 0, 0, 0, 0]);

const SO_MEMINFO_WMEM_QUEUED = 5;
const SO_MEMINFO_SNDBUF = 3;

/** Interval before the next probe of a zero window: RTO-based exponential backoff, capped. */
function persistMs(c: TcpConn): number {
  return Math.min(TCP_RTO_MS * 2 ** c.probes, TCP_PERSIST_MAX_MS);
}

/** TCP translation for both families; see the module comment. */
export class Tcp {
  /** Counters. */
  readonly stats: TcpStats = {
    outbound: 0,
    inbound: 0,
    refused: 0,
    tableFull: 0,
    bytesToHost: 0,
    shortWrites: 0,
    spilled: 0,
    spillFull: 0,
    sockWrites: 0,
    bytesToGuest: 0,
    retransmits: 0,
    rewinds: 0,
    windowProbes: 0,
    windowTakenBack: 0,
    acksDelayed: 0,
    acksCarried: 0,
    outOfOrder: 0,
    oooKept: 0,
    oooDelivered: 0,
    oooRefused: 0,
    oldData: 0,
    resetsToGuest: 0,
    noFlow: 0,
    closed: 0,
  };
  readonly #loop: Loop;
  readonly #flows: FlowTable;
  readonly #net: GuestNet;
  readonly #hdrs: GuestHeaders;
  readonly #tap: TapSender;
  readonly #fdType: number;
  /** Source binding of outbound sockets (`-o`). */
  readonly #outbound: OutboundBind;
  readonly #key = new FlowSide();
  readonly #tgt = new FlowSide();
  readonly #opts = new TcpOptions();
  readonly #repr = tcpReprNew();
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #target4 = new Uint8Array(4);
  readonly #target6 = new Uint8Array(16);
  /** Payload areas of one peek: a slot each, or a frame's guest buffers (see `payloadIov`). */
  readonly #iov = new sys.IovecArray(PEEK_IOV_MAX);
  readonly #hdr = new sys.MmsgHdrArray(1);
  readonly #lens = new Uint32Array(MAX_FRAMES_PER_READ);
  readonly #discard = new Uint8Array(1);
  readonly #meminfo = new Uint8Array(9 * 4);
  readonly #meminfoWords = new Uint32Array(this.#meminfo.buffer);
  readonly #meminfoLen = new Uint32Array(1);
  readonly #outq = new Int32Array(1);
  readonly #outqBytes = new Uint8Array(this.#outq.buffer);
  readonly #isnKey = sipKeyRandom();
  readonly #isnWords = new Uint32Array(10);
  readonly #mss4: number;
  readonly #mss6: number;
  /** Our id with the send path, for undelivered-frame reports. */
  readonly #producer: number;
  /** Slots taken for one peek. */
  readonly #frames = new Uint16Array(MAX_FRAMES_PER_READ);
  /** Connections waiting for the backend to take frames again (see `#resume`). */
  readonly #resumeList: number[] = [];
  /** `#resume` is deferred to the end of this turn (`#resumeSoon`). */
  #resumeDeferred = false;
  readonly #resumeDeferredFn = () => {
    this.#resumeDeferred = false;
    this.#resume();
  };
  /** Connections whose ACK waits, `[0..#ackWaitCount)`; see `#deferred`. */
  readonly #ackWaitList: (TcpConn | null)[] = [];
  #ackWaitCount = 0;
  readonly #ackDelayTimer = new Timer(() => this.#ackDelayed());
  readonly #cols: TcpColumns;
  /** Every connection's timer calls this, with the connection. */
  readonly #rtoFire = (t: Timer) => this.#rto((t as TcpConn).index);
  /**
   * How long the ACK of a small segment may wait for a data frame to carry
   * it ({@linkcode TCP_ACK_DELAY_MS}; tests stretch it to tell the two
   * outcomes apart without racing the clock).
   */
  ackDelayMs = TCP_ACK_DELAY_MS;
  /**
   * Payload pieces of the segment being written: the head's, those RSC
   * merged, then held out-of-order bytes that now follow them.
   */
  readonly #pBufs: Uint8Array[] = new Array(P_MAX);
  readonly #pOffs = new Float64Array(P_MAX);
  readonly #pLens = new Uint32Array(P_MAX);
  #pFirst = 0;
  #pCount = 0;
  readonly #wIov = new sys.IovecArray(P_MAX);
  readonly #wHdr = new sys.MmsgHdrArray(1);

  /** Registers with the reactor and the flow table. */
  constructor(loop: Loop, flows: FlowTable, net: GuestNet, hdrs: GuestHeaders, tap: TapSender) {
    this.#loop = loop;
    this.#flows = flows;
    this.#net = net;
    this.#hdrs = hdrs;
    this.#tap = tap;
    this.#outbound = new OutboundBind(net.outbound4, net.outbound6);
    this.#fdType = loop.defineType("tcp", (index, events) => this.#sockReady(index, events));
    this.#cols = new TcpColumns(flows.capacity);
    flows.onResize((size) => this.#cols.resized(size));
    flows.setHandlers(FlowType.TCP, {
      deferred: (index) => this.#deferred(index),
      timer: (index, now) => this.#flowTimer(index, now),
      guestGone: (index) => {
        const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
        this.#close(index, c, true, false); // a RST to the host; the guest is not there
        return false; // freed by the deferred pass, as every closed connection
      },
    });
    const maxPayload = Math.min(net.mtu, tap.maxFrame - 14);
    this.#mss4 = Math.min(maxPayload - 40, 65535);
    this.#mss6 = Math.min(maxPayload - 60, 65535);
    this.#producer = tap.onUndelivered((index, seq) => this.#undelivered(index, seq));
    tap.onResume(() => this.#resume());
  }

  // -------------------------------------------------------------------------
  // State changes: the only two places events and flags change.

  #event(index: number, c: TcpConn, ev: number): void {
    if (c.has(ev)) return;
    c.events |= ev;
    if (logEnabled(LogLevel.debug)) {
      this.#flows.log(index, LogLevel.debug, `event ${EV_NAMES[31 - Math.clz32(ev)]}`);
    }
    this.#updateEpoll(index, c);
  }

  #flag(index: number, c: TcpConn, fl: number, on: boolean): void {
    if (((c.flags & fl) !== 0) === on) return;
    c.flags = on ? c.flags | fl : c.flags & ~fl;
    if (logEnabled(LogLevel.trace)) {
      this.#flows.log(index, LogLevel.trace, `${on ? "" : "!"}${FL_NAMES[31 - Math.clz32(fl)]}`);
    }
    if (fl !== TcpFl.ACK_TO_TAP_DUE) this.#updateEpoll(index, c);
  }

  /**
   * What epoll should report for the socket, from events and flags.
   *
   * Connecting out, the connect's end (EPOLLOUT). Otherwise edge-triggered
   * throughout, in the mask of an established connection from the start:
   * once the host's FIN is in, EPOLLRDHUP stays true, and level-triggered it
   * would wake every turn; and every change is a syscall (measured: five
   * `epoll_ctl` per short connection, now two). Data that comes before the
   * guest has finished the handshake is only peeked once it has (the
   * handshake calls `#sockToTap`), so its edge may pass unused; the host's
   * end is recorded (SOCK_EOF_SEEN).
   */
  #wantedMask(c: TcpConn): number {
    if (c.has(TcpEv.CLOSED)) return 0;
    if (c.has(TcpEv.TAP_SYN_RCVD) && !c.has(TcpEv.TAP_SYN_ACK_SENT)) return sys.EPOLLOUT;
    // A signed 32-bit value (EPOLLET is bit 31), like `epollMask`: as an
    // unsigned one, above V8's small integers, every return was a heap
    // number, and so was the field of every connection.
    let mask = sys.EPOLLIN | sys.EPOLLRDHUP | sys.EPOLLET;
    if (c.flags & TcpFl.WRITE_BLOCKED) mask |= sys.EPOLLOUT;
    return mask;
  }

  #updateEpoll(index: number, c: TcpConn): void {
    const mask = this.#wantedMask(c);
    if (mask === c.epollMask || c.fd < 0) return;
    const rc = c.epollMask === EPOLL_UNREGISTERED
      ? this.#loop.add(c.fd, mask, this.#fdType, index)
      : this.#loop.modify(c.fd, mask, this.#fdType, index);
    if (rc < 0) this.#flows.log(index, LogLevel.error, `epoll_ctl: ${sys.errnoName(-rc)}`);
    c.epollMask = mask;
  }

  // -------------------------------------------------------------------------
  // Frames to the guest

  /**
   * Writes Ethernet, IP and TCP headers in front of a payload of `len` bytes
   * that is already in place in slot `frame` (or none), fills the checksum
   * (or leaves it to offload) and commits the frame: a GSO frame if the
   * payload is more than one MSS. `syn` adds the handshake options. A frame
   * with payload or FIN is marked as the connection's, so the send path
   * reports it back if the backend does not deliver it.
   */
  #emit(frame: number, c: TcpConn, flags: number, seq: number, len: number, syn = false): void {
    const tap = this.#tap;
    const slot = tap.slot(frame);
    const r = this.#repr;
    const o = r.options;
    o.reset();
    if (syn) {
      o.mss = c.mss;
      if (c.wsToTap > 0 || c.has(TcpEv.SOCK_ACCEPTED)) o.wscale = TCP_WS_TO_TAP;
    }
    r.srcPort = c.sport;
    r.dstPort = c.dport;
    r.seq = seq;
    r.ack = flags & TcpFlag.Ack ? c.seqFromTap : 0;
    r.flags = flags;
    if (flags & TcpFlag.Syn) r.window = Math.min(c.wndToTap, 65535);
    else r.window = flags & TcpFlag.Ack ? this.#windowField(c) : 0;
    r.urgent = 0;
    r.payloadLen = len;
    const hdrLen = syn ? tcpHeaderLen(r) : TCP_HEADER_LEN;
    const l4 = c.v6 ? L4_OFF6 : L4_OFF4;
    const segLen = hdrLen + len;
    const pseudo = this.#hdrs.emitFor(slot, c, IpProto.Tcp, segLen);
    tcpEmit(slot, l4, r);
    const frameLen = l4 - TAP_HEADROOM + segLen;
    if (len > c.mss) {
      const type = c.v6 ? GsoType.TCPV6 : GsoType.TCPV4;
      tap.commitGso(frame, frameLen, l4, TCP_CHECKSUM_OFFSET, pseudo, type, c.mss, frameLen - len);
    } else {
      tap.commitChecksummed(frame, frameLen, l4, TCP_CHECKSUM_OFFSET, pseudo);
    }
    if (len > 0 || flags & TcpFlag.Fin) tap.setOwner(frame, this.#producer, c.index, seq);
    if (flags & TcpFlag.Ack) {
      c.seqAckToTap = c.seqFromTap;
      // This frame acknowledges everything with the current window: a due
      // ACK that was allowed to wait has nothing left to say — unless the
      // window is under a segment, when the ACK's pass must also watch for
      // room (`#ackToTap`).
      if (c.ackMayWait && c.wndToTap >= c.mss) {
        c.ackMayWait = false;
        this.stats.acksCarried++;
        this.#flag(c.index, c, TcpFl.ACK_TO_TAP_DUE, false);
      }
    }
  }

  /**
   * The window field of an ACK to the guest: `wndToTap`, scaled, but never
   * less than what an earlier ACK offered. The room behind `wndToTap` is a
   * measurement, rounded down to segments and to the scale's unit, so it
   * can fall by more than the bytes that arrived; advertising it as it is
   * would take back room the guest may already be using (a receiver should
   * not shrink its window, RFC 9293 §3.8.6). Bytes sent into room that was
   * promised but is no longer measured go to the spill, which usually holds
   * far more than that difference (a segment plus a scale unit). Only when
   * a new measurement finds much less room than the last (the kernel's
   * memory per byte grew) is the promise more than the spill can take: then
   * the edge moves back to what can be taken, and it is counted.
   */
  #windowField(c: TcpConn): number {
    const ws = c.wsToTap;
    let field = c.wndToTap >>> ws;
    let promised = (c.seqWndEdge - c.seqFromTap) | 0; // < 0 once the guest sent past it
    if (field * 2 ** ws < promised) {
      const takeable = c.wndToTap + TCP_SPILL_MAX - c.spillLen;
      if (promised > takeable) {
        this.stats.windowTakenBack++;
        promised = takeable;
      }
      field = Math.ceil(promised / 2 ** ws);
    }
    if (field > 65535) field = 65535;
    const edge = seqAdd(c.seqFromTap, field * 2 ** ws);
    if (seqGt(edge, c.seqWndEdge)) c.seqWndEdge = edge;
    return field;
  }

  /** Sends a segment without payload: ACK, FIN, SYN, SYN-ACK or RST. */
  #control(c: TcpConn, flags: number, seq = c.seqToTap): void {
    if (flags & TcpFlag.Ack) c.wndToTap = this.#windowToTap(c);
    this.#emit(this.#tap.take(), c, flags, seq, 0, (flags & TcpFlag.Syn) !== 0);
  }

  /**
   * Sends the due ACK. If the window it advertises is under one segment, the
   * guest will wait for an update: watch the socket for room (EPOLLOUT) so
   * the update comes as soon as the socket drains.
   */
  #ackToTap(index: number, c: TcpConn): void {
    c.ackMayWait = false; // it goes now: `#emit` must not count it as carried
    this.#flag(index, c, TcpFl.ACK_TO_TAP_DUE, false);
    this.#control(c, TcpFlag.Ack);
    if (c.flags & TcpFl.GAP) {
      // The guest's later segments were dropped behind missing bytes. One
      // ACK per turn would leave it waiting for its retransmission timeout;
      // three duplicates trigger fast retransmit (RFC 5681 §3.2). Same window
      // on each, else they count as window updates, not duplicates. Once per
      // hole: until seqFromTap moves, more would only repeat the request.
      this.#flag(index, c, TcpFl.GAP, false);
      if (c.seqGapAsked !== c.seqFromTap) {
        c.seqGapAsked = c.seqFromTap;
        for (let i = 0; i < 3; i++) this.#emit(this.#tap.take(), c, TcpFlag.Ack, c.seqToTap, 0);
      }
    }
    if (
      c.spillLen > 0 ||
      (c.wndToTap < c.mss && c.has(TcpEv.ESTABLISHED) && !c.has(TcpEv.TAP_FIN_RCVD))
    ) {
      this.#flag(index, c, TcpFl.WRITE_BLOCKED, true);
    }
  }

  /**
   * The window to advertise: the bytes the socket will still take (its free
   * send-buffer memory over its memory per byte, less what waits in the
   * spill), whole segments only, capped at what our scale can express.
   * While the socket still has data queued, less than two segments of room
   * advertises 0 (receiver-side silly-window avoidance, RFC 1122 §4.2.3.3):
   * measured, a Linux guest offered a one-segment window waits its minimum
   * RTO (200 ms) before using it, while a closed window is reopened by our
   * update as soon as the socket drains (EPOLLOUT).
   */
  #windowToTap(c: TcpConn): number {
    if (c.fd < 0 || c.has(TcpEv.TAP_FIN_RCVD)) return c.wndToTap;
    // No more in flight than the backend can queue (a tap without TSO drops
    // past its queue, and each drop costs a guest without SACK a timeout;
    // see `TapBackend.guestQueueFrames`).
    const max = Math.min(
      c.wsToTap > 0 ? TCP_MAX_WINDOW : 65535,
      this.#tap.guestWindowSegments * c.mss,
    );
    // The room measured before, less what we wrote since, is still there
    // (the peer's reads only add to it): while it is at least half of what
    // was measured, advertise it without asking the socket again. Measured,
    // a ping-pong asked twice per round trip, one syscall in six. Advertising
    // measured room less bytes taken keeps the window's right edge in place.
    const room = c.sndRoom;
    if (c.spillLen === 0 && room >= 4 * c.mss && 2 * room >= c.sndRoomMeasured) {
      return Math.min(room - (room % c.mss), max);
    }
    this.#meminfoLen[0] = this.#meminfo.length;
    const rc = sys.getsockopt(
      c.fd,
      sys.SOL_SOCKET,
      sys.SO_MEMINFO,
      this.#meminfo,
      this.#meminfoLen,
    );
    if (rc < 0) return c.wndToTap;
    const m = this.#meminfoWords;
    const queued = m[SO_MEMINFO_WMEM_QUEUED];
    let memPerByte = MEM_PER_BYTE_DEFAULT;
    if (queued >= MEM_PER_BYTE_MIN_QUEUE && sys.ioctl(c.fd, sys.SIOCOUTQ, this.#outqBytes) === 0) {
      const outq = this.#outq[0];
      if (outq >= MEM_PER_BYTE_MIN_QUEUE) memPerByte = Math.max(1, queued / outq);
    }
    c.sndRoom = c.sndRoomMeasured = Math.floor(
      Math.max(0, m[SO_MEMINFO_SNDBUF] - queued) / memPerByte,
    );
    let free = c.sndRoom - c.spillLen;
    if (free < 2 * c.mss && (queued > 0 || c.spillLen > 0)) free = 0;
    else if (free > c.mss) free -= free % c.mss;
    return Math.max(0, Math.min(free, max));
  }

  /** Answers a segment that belongs to no connection with a RST (RFC 9293 §3.10.7.1). */
  #rstNoFlow4(ip: Ip4Packet, seg: TcpPacket): void {
    this.#rstReply(seg, (slot, segLen) => {
      this.#hdrs.emit4(slot, TAP_HEADROOM, ip.dst, ip.src, IpProto.Tcp, segLen);
      return checksumPseudo4(ip.dst, ip.src, IpProto.Tcp, segLen);
    }, L4_OFF4);
  }

  #rstNoFlow6(ip: Ip6Packet, seg: TcpPacket): void {
    this.#rstReply(seg, (slot, segLen) => {
      this.#hdrs.emit6(
        slot,
        TAP_HEADROOM,
        ip.buf,
        ip.dstOffset,
        ip.buf,
        ip.srcOffset,
        IpProto.Tcp,
        segLen,
      );
      return checksumPseudo6(ip.buf, ip.dstOffset, ip.buf, ip.srcOffset, IpProto.Tcp, segLen);
    }, L4_OFF6);
  }

  #rstReply(
    seg: TcpPacket,
    headers: (slot: Uint8Array, segLen: number) => number,
    l4: number,
  ): void {
    const f = seg.flags;
    if (f & TcpFlag.Rst) return; // never answer a RST
    const r = this.#repr;
    r.options.reset();
    r.srcPort = seg.dstPort;
    r.dstPort = seg.srcPort;
    if (f & TcpFlag.Ack) {
      r.seq = seg.ack;
      r.ack = 0;
      r.flags = TcpFlag.Rst;
    } else {
      r.seq = 0;
      r.ack = seqAdd(
        seg.seq,
        seg.payloadLen + (f & TcpFlag.Syn ? 1 : 0) + (f & TcpFlag.Fin ? 1 : 0),
      );
      r.flags = TcpFlag.Rst | TcpFlag.Ack;
    }
    r.window = 0;
    r.urgent = 0;
    r.payloadLen = 0;
    const frame = this.#tap.take();
    const slot = this.#tap.slot(frame);
    const pseudo = headers(slot, TCP_HEADER_LEN);
    tcpEmit(slot, l4, r, pseudo);
    this.#tap.commit(frame, l4 - TAP_HEADROOM + TCP_HEADER_LEN);
    this.stats.resetsToGuest++;
  }

  // -------------------------------------------------------------------------
  // Segments from the guest

  /**
   * A TCP segment from the guest over IPv4 (checksum verified by the
   * dispatcher), with the segments RSC merged behind it, if any. A segment
   * for no connection is answered (RST), so a merged one never is: RSC
   * merges only segments of a connection, and a SYN never.
   */
  fromTap4(
    ip: Ip4Packet,
    seg: TcpPacket,
    merged: TcpMerged | null = null,
    tail: FrameTail | null = null,
  ): void {
    const key = this.#key.set4(Pif.TAP, ip.srcBits, seg.srcPort, ip.dstBits, seg.dstPort);
    const sidx = this.#flows.lookup(IpProto.Tcp, key);
    if (sidx >= 0) return this.#segment(sidxFlow(sidx), seg, merged, tail);
    if ((seg.flags & (TcpFlag.Syn | TcpFlag.Ack | TcpFlag.Rst)) !== TcpFlag.Syn) {
      this.stats.noFlow++;
      return this.#rstNoFlow4(ip, seg);
    }
    const target = natFromTap4(this.#net, ip.dst, seg.dstPort);
    if (target < 0) {
      this.stats.refused++;
      return this.#rstNoFlow4(ip, seg);
    }
    this.#tgt.set4(Pif.HOST, target, seg.dstPort, 0, 0);
    const addrLen = sys.sockaddrIn4(this.#sa, u32ToIp4(target, this.#target4), seg.dstPort);
    const index = this.#openOutbound(false, key, seg, addrLen);
    if (index === -1) this.#rstNoFlow4(ip, seg);
    else if (index === -2) {
      tail?.gather(ip.buf); // the error quotes the segment
      icmpErrorToGuest4(
        this.#tap,
        this.#hdrs,
        ip.dst,
        ip,
        IcmpType.DestUnreachable,
        IcmpUnreachCode.Host,
      );
    }
  }

  /** A TCP segment from the guest over IPv6; see {@linkcode fromTap4}. */
  fromTap6(
    ip: Ip6Packet,
    seg: TcpPacket,
    upperOff: number,
    merged: TcpMerged | null = null,
    tail: FrameTail | null = null,
  ): void {
    const key = this.#key.set6(
      Pif.TAP,
      ip.buf,
      ip.srcOffset,
      seg.srcPort,
      ip.buf,
      ip.dstOffset,
      seg.dstPort,
    );
    const sidx = this.#flows.lookup(IpProto.Tcp, key);
    if (sidx >= 0) return this.#segment(sidxFlow(sidx), seg, merged, tail);
    if ((seg.flags & (TcpFlag.Syn | TcpFlag.Ack | TcpFlag.Rst)) !== TcpFlag.Syn) {
      this.stats.noFlow++;
      return this.#rstNoFlow6(ip, seg);
    }
    if (!natFromTap6(this.#net, ip.buf, ip.dstOffset, this.#target6, seg.dstPort)) {
      this.stats.refused++;
      return this.#rstNoFlow6(ip, seg);
    }
    const tgt = this.#tgt.set6(Pif.HOST, this.#target6, 0, seg.dstPort, this.#target6, 0, 0);
    tgt.oaddr.fill(0);
    const addrLen = sys.sockaddrIn6(this.#sa, this.#target6, seg.dstPort);
    const index = this.#openOutbound(true, key, seg, addrLen);
    if (index === -1) this.#rstNoFlow6(ip, seg);
    else if (index === -2) {
      tail?.gather(ip.buf); // the error quotes the segment
      icmpErrorToGuest6(
        this.#tap,
        this.#hdrs,
        ip.buf,
        ip.dstOffset,
        ip,
        IpProto.Tcp,
        upperOff,
        Icmp6Type.DestUnreachable,
        3, // address unreachable
      );
    }
  }

  /**
   * A SYN from the guest for a new connection: socket, connect, flow. Returns
   * the flow index, -1 to answer with a RST, -2 with an ICMP unreachable.
   */
  #openOutbound(v6: boolean, ini: FlowSide, seg: TcpPacket, addrLen: number): number {
    if (tcpOptionsParse(seg.buf, seg.optionsOffset, seg.optionsLen, this.#opts) !== 0) return -1;
    const flows = this.#flows;
    const index = flows.alloc();
    if (index < 0) {
      this.stats.tableFull++;
      return -1;
    }
    flows.setIni(index, ini);
    flows.setTgt(index, this.#tgt);
    const fd = sys.socket(
      v6 ? sys.AF_INET6 : sys.AF_INET,
      sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
    );
    if (fd < 0 || this.#outbound.apply(fd, v6) < 0) {
      if (fd >= 0) sys.close(fd);
      flows.cancel(index);
      this.stats.refused++;
      return -1;
    }
    this.#hostSocketOptions(fd);
    const c = this.#newConn(index, fd, v6, 0);
    const o = this.#opts;
    c.seqFromTap = c.seqWndEdge = seqAdd(seg.seq, 1);
    c.seqAckToTap = c.seqFromTap;
    c.wsFromTap = o.wscale >= 0 ? Math.min(o.wscale, 14) : 0;
    c.wsToTap = o.wscale >= 0 ? TCP_WS_TO_TAP : 0;
    c.wndFromTap = seg.window; // never scaled in a SYN (RFC 7323 §2.2)
    c.mss = Math.min(o.mss || DEFAULT_MSS, v6 ? this.#mss6 : this.#mss4);
    c.isn = this.#makeIsn(c);
    c.seqToTap = c.seqAckFromTap = seqAdd(c.isn, 1);
    // Without GSO toward the guest, host segments of the guest's MSS map one to
    // one onto its frames. With GSO tapir cuts the stream itself, and a small
    // MSS on a loopback socket only costs: measured at guest MTU 1500, the
    // peer's 1460-byte segments filled our receive queue with per-skb
    // overhead, the kernel pruned it, and the host sender retransmitted
    // (20 000 retransmissions in 3 s, 11-12 Gbit/s; without it ~200, 16-17).
    if (o.mss && !this.#tap.gsoTcp) sys.setsockoptInt(fd, sys.IPPROTO_TCP, sys.TCP_MAXSEG, o.mss);
    flows.setType(index, FlowType.TCP, c);
    flows.hashInsert(flowSidx(index, 0));
    flows.activate(index);
    this.stats.outbound++;
    this.#event(index, c, TcpEv.TAP_SYN_RCVD);
    const rc = sys.connect(fd, this.#sa, addrLen);
    if (rc === 0) {
      this.#connected(index, c);
    } else if (rc === -sys.Errno.EINPROGRESS) {
      this.#loop.arm(c, TCP_HANDSHAKE_TIMEOUT_MS);
    } else {
      this.stats.refused++;
      this.#close(index, c, false);
      return rc === -sys.Errno.ENETUNREACH || rc === -sys.Errno.EHOSTUNREACH ? -2 : -1;
    }
    return index;
  }

  /**
   * No Nagle delay (the guest's own stack already decided when to send), and
   * keepalives, so a host peer that vanishes without a FIN or RST is found
   * by the kernel and the guest gets a reset instead of a connection open
   * forever.
   */
  #hostSocketOptions(fd: number): void {
    sys.setsockoptInt(fd, sys.IPPROTO_TCP, sys.TCP_NODELAY, 1);
    sys.setsockoptInt(fd, sys.SOL_SOCKET, sys.SO_KEEPALIVE, 1);
  }

  #newConn(index: number, fd: number, v6: boolean, tapSide: 0 | 1): TcpConn {
    const c = new TcpConn(index, fd, v6, tapSide, this.#cols, this.#rtoFire);
    const flows = this.#flows;
    const tap = flowSidx(index, tapSide);
    flows.oaddrCopy(tap, c.addrs, c.addrsOff);
    flows.eaddrCopy(tap, c.addrs, c.addrsOff + 16);
    c.src4 = flows.oaddrWord(tap, 3);
    c.dst4 = flows.eaddrWord(tap, 3);
    c.sport = flows.oport(tap);
    c.dport = flows.eport(tap);
    return c;
  }

  /** RFC 6528: a keyed hash of the connection's addresses plus a 4 µs clock. */
  #makeIsn(c: TcpConn): number {
    const w = this.#isnWords;
    const a = c.addrs;
    for (let i = 0, o = c.addrsOff; i < 8; i++, o += 4) {
      w[i] = (a[o] << 24) | (a[o + 1] << 16) | (a[o + 2] << 8) | a[o + 3];
    }
    w[8] = (c.sport << 16) | c.dport;
    w[9] = 0;
    return (halfSipHash(this.#isnKey, w, 0, 10) + Math.floor(performance.now() * 250)) | 0;
  }

  /** Outbound connect finished: answer the guest's SYN. */
  #connected(index: number, c: TcpConn): void {
    this.#event(index, c, TcpEv.TAP_SYN_ACK_SENT);
    this.#control(c, TcpFlag.Syn | TcpFlag.Ack, c.isn);
    this.#loop.arm(c, TCP_RTO_MS);
  }

  /**
   * A segment for connection `index`, with the segments RSC merged behind it
   * (their payloads follow the head's; the ACK, window and flags are the
   * merged ones); the head's payload is in `tail` if it has one.
   */
  #segment(index: number, seg: TcpPacket, m: TcpMerged | null, tail: FrameTail | null): void {
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED)) return;
    const f = m === null ? seg.flags : m.flags;
    c.lastMs = performance.now();
    this.#piecesOf(seg, m, tail);

    if (f & TcpFlag.Rst) {
      // Accept a RST whose sequence number is in the window (RFC 5961 would
      // challenge an inexact one; the guest is not an attacker of itself).
      if (seqGe(seg.seq, c.seqFromTap) || c.has(TcpEv.SOCK_ACCEPTED)) this.#close(index, c, true);
      return;
    }
    if (!c.has(TcpEv.ESTABLISHED)) return this.#handshake(index, c, seg, f, m);
    if (f & TcpFlag.Syn) {
      // A retransmitted SYN-ACK from the guest: our ACK was lost.
      this.#ackDue(index, c);
      return;
    }
    if (!(f & TcpFlag.Ack)) return;
    const len = this.#piecesLen();
    this.#ackFromTap(
      index,
      c,
      m === null ? seg.ack : m.ack,
      m === null ? seg.window : m.window,
      len,
    );
    if (c.has(TcpEv.CLOSED)) return;
    if (len > 0 || f & TcpFlag.Fin) this.#dataFromTap(index, c, seg.seq, len, f);
    else if (seg.seq !== c.seqFromTap) {
      // An empty segment out of sequence — a zero-window probe, a keepalive:
      // RFC 9293 §3.10.7.4 asks for an ACK, which carries our current window.
      this.#ackDue(index, c);
    }
  }

  #handshake(index: number, c: TcpConn, seg: TcpPacket, f: number, m: TcpMerged | null): void {
    if (c.has(TcpEv.SOCK_ACCEPTED)) {
      // We sent the SYN; expect SYN-ACK acknowledging it.
      if ((f & (TcpFlag.Syn | TcpFlag.Ack)) !== (TcpFlag.Syn | TcpFlag.Ack)) return;
      if (seg.ack !== seqAdd(c.isn, 1)) return;
      if (tcpOptionsParse(seg.buf, seg.optionsOffset, seg.optionsLen, this.#opts) !== 0) return;
      const o = this.#opts;
      c.seqFromTap = c.seqWndEdge = seqAdd(seg.seq, 1);
      c.wsFromTap = o.wscale >= 0 ? Math.min(o.wscale, 14) : 0;
      c.wsToTap = o.wscale >= 0 ? TCP_WS_TO_TAP : 0;
      c.wndFromTap = seg.window;
      c.mss = Math.min(o.mss || DEFAULT_MSS, c.mss);
      c.seqAckFromTap = c.seqToTap = seqAdd(c.isn, 1);
      this.#establish(index, c);
      this.#control(c, TcpFlag.Ack);
      this.#sockToTap(index, c);
      return;
    }
    if (f & TcpFlag.Syn) {
      // The guest resends its SYN: resend our SYN-ACK if it went out.
      if (c.has(TcpEv.TAP_SYN_ACK_SENT)) this.#control(c, TcpFlag.Syn | TcpFlag.Ack, c.isn);
      return;
    }
    if (!c.has(TcpEv.TAP_SYN_ACK_SENT) || !(f & TcpFlag.Ack)) return;
    if (seg.ack !== seqAdd(c.isn, 1)) return;
    c.wndFromTap = (m === null ? seg.window : m.window) << c.wsFromTap;
    this.#establish(index, c);
    const len = this.#piecesLen();
    if (len > 0 || f & TcpFlag.Fin) this.#dataFromTap(index, c, seg.seq, len, f);
    this.#sockToTap(index, c);
  }

  #establish(index: number, c: TcpConn): void {
    c.retries = 0;
    this.#loop.disarm(c);
    // Peeks continue where the last stopped; see the module comment.
    sys.setsockoptInt(c.fd, sys.SOL_SOCKET, sys.SO_PEEK_OFF, 0);
    this.#event(index, c, TcpEv.ESTABLISHED);
  }

  /** Processes the guest's acknowledgement and window. */
  #ackFromTap(index: number, c: TcpConn, ack: number, window: number, payloadLen: number): void {
    const wnd = window << c.wsFromTap;
    const inFlight = seqDiff(c.seqToTap, c.seqAckFromTap);
    if (seqGt(ack, c.seqAckFromTap) && seqLe(ack, c.seqToTap)) {
      let acked = seqDiff(ack, c.seqAckFromTap);
      if (c.has(TcpEv.TAP_FIN_SENT) && ack === seqAdd(c.seqFinToTap, 1)) {
        acked--; // the FIN is not data
        this.#event(index, c, TcpEv.TAP_FIN_ACKED);
      }
      if (acked > 0) {
        const rc = sys.recv(c.fd, this.#discard, acked, sys.MSG_TRUNC | sys.MSG_DONTWAIT);
        if (rc !== acked) {
          this.#flows.log(index, LogLevel.debug, `consuming ${acked} acked bytes: ${rc}`);
        }
      }
      c.seqAckFromTap = ack;
      c.retries = 0;
      c.dupAcks = 0;
      if (c.seqAckFromTap === c.seqToTap) this.#loop.disarm(c);
      else this.#loop.arm(c, TCP_RTO_MS);
      if (c.has(TcpEv.TAP_FIN_ACKED) && c.has(TcpEv.SOCK_FIN_SENT)) {
        return this.#close(index, c, false);
      }
    } else if (
      ack === c.seqAckFromTap && payloadLen === 0 && wnd === c.wndFromTap && inFlight > 0
    ) {
      if (++c.dupAcks === 3) {
        this.#rewind(index, c);
      }
    } else if (inFlight === 0) {
      c.retries = 0; // an answer to a window probe, or any ACK with nothing outstanding
    }
    c.wndFromTap = wnd;
    // More window (opened, or bytes acknowledged) matters only if bytes wait
    // for it: `#sockToTap` stops short of the socket's end only when the
    // window is full (STALLED) or the backend is (it resumes us). Otherwise
    // the queue was drained, and new data brings a new edge; peeking here
    // would find nothing (measured: one syscall in seven of a ping-pong).
    if (c.flags & TcpFl.STALLED) this.#sockToTap(index, c);
  }

  /**
   * The payload pieces of segment `seg` and those RSC merged behind it, in
   * `#pBufs/#pOffs/#pLens[#pFirst..#pCount)`: what one write to the socket
   * takes, in place in the receive slots or the guest's own buffers.
   */
  #piecesOf(seg: TcpPacket, m: TcpMerged | null, tail: FrameTail | null): void {
    let n = 0;
    if (tail !== null) {
      // Fits: a tail has at most TAIL_MAX_PIECES pieces, and the arrays room for them.
      n = tail.pieces(
        seg.payloadOffset,
        seg.payloadLen,
        this.#pBufs,
        this.#pOffs,
        this.#pLens,
        0,
        P_MAX,
      );
    } else if (seg.payloadLen > 0) {
      this.#pBufs[0] = seg.buf;
      this.#pOffs[0] = seg.payloadOffset;
      this.#pLens[0] = seg.payloadLen;
      n = 1;
    }
    if (m !== null) {
      for (let i = 0; i < m.count; i++, n++) {
        this.#pBufs[n] = m.bufs[i];
        this.#pOffs[n] = m.offs[i];
        this.#pLens[n] = m.lens[i];
      }
    }
    this.#pFirst = 0;
    this.#pCount = n;
  }

  /** Bytes in the pieces. */
  #piecesLen(): number {
    let len = 0;
    for (let i = this.#pFirst; i < this.#pCount; i++) len += this.#pLens[i];
    return len;
  }

  /** Drops the first `n` bytes of the pieces. */
  #piecesSkip(n: number): void {
    while (n > 0 && this.#pFirst < this.#pCount) {
      const i = this.#pFirst;
      const take = Math.min(n, this.#pLens[i]);
      this.#pOffs[i] += take;
      this.#pLens[i] -= take;
      n -= take;
      if (this.#pLens[i] === 0) this.#pFirst++;
    }
  }

  /** Writes the pieces to `fd` in one `sendmsg`: bytes taken, or -errno. */
  #piecesWrite(fd: number): number {
    const iov = this.#wIov;
    let k = 0;
    for (let i = this.#pFirst; i < this.#pCount; i++) {
      if (this.#pLens[i] > 0) iov.set(k++, this.#pBufs[i], this.#pOffs[i], this.#pLens[i]);
    }
    const hdr = this.#wHdr;
    hdr.setName(0, null);
    hdr.setIov(0, iov, k);
    hdr.setControl(0, null);
    this.stats.sockWrites++;
    return sys.sendmsg(fd, hdr, sys.MSG_DONTWAIT | sys.MSG_NOSIGNAL);
  }

  /**
   * Payload (`len` bytes in the pieces, from sequence number `seq`) and
   * FIN (in `flags`) from the guest: write in order to the socket.
   */
  #dataFromTap(index: number, c: TcpConn, seq: number, len: number, flags: number): void {
    let fin = (flags & TcpFlag.Fin) !== 0;
    const urgentBefore = (c.flags & TcpFl.ACK_TO_TAP_DUE) !== 0 && !c.ackMayWait;
    this.#ackDue(index, c);
    if (c.has(TcpEv.TAP_FIN_RCVD)) return; // nothing counts after the guest's FIN
    if (seqLt(seq, c.seqFromTap)) {
      this.stats.oldData++;
      const skip = seqDiff(c.seqFromTap, seq);
      if (skip > len || (skip === len && !fin)) return; // all old: the ACK re-syncs it
      this.#piecesSkip(skip);
      len -= skip;
      seq = c.seqFromTap;
    } else if (seq !== c.seqFromTap) {
      this.stats.outOfOrder++;
      this.#oooKeep(c, seq, len);
      this.#flag(index, c, TcpFl.GAP, true);
      return; // a hole: the duplicate ACKs ask for the missing bytes
    }
    const ooo = c.ooo;
    let held = 0;
    if (ooo !== null) {
      // Held bytes that continue this segment go out behind it (not past a FIN).
      const end = seqAdd(seq, len);
      held = fin ? 0 : ooo.heldFrom(end);
      if (held > 0) {
        const k = this.#pCount++;
        this.#pBufs[k] = ooo.buf;
        this.#pOffs[k] = ooo.offsetOf(end);
        this.#pLens[k] = held;
        len += held;
      }
    }
    if (len > 0) {
      let accepted = 0;
      if (c.spillLen === 0) {
        const n = this.#piecesWrite(c.fd);
        if (n < 0 && n !== -sys.Errno.EAGAIN) return this.#close(index, c, true);
        accepted = n > 0 ? n : 0;
        c.sndRoom -= accepted;
        this.stats.bytesToHost += accepted;
        this.#flows.bytesFrom[index * 2 + c.tapSide] += accepted;
        if (accepted < len) this.stats.shortWrites++;
      }
      if (accepted < len) {
        this.#piecesSkip(accepted);
        for (let i = this.#pFirst; i < this.#pCount && accepted < len; i++) {
          const kept = this.#spillKeep(c, this.#pBufs[i], this.#pOffs[i], this.#pLens[i]);
          accepted += kept;
          if (kept < this.#pLens[i]) break;
        }
        this.#flag(index, c, TcpFl.WRITE_BLOCKED, true);
      }
      c.seqFromTap = seqAdd(c.seqFromTap, accepted);
      // Held bytes come last: those taken are what was accepted past the segment's own.
      this.stats.oooDelivered += Math.max(0, accepted - (len - held));
      if (ooo !== null) {
        ooo.advance(c.seqFromTap);
        if (ooo.empty) this.#oooRelease(c);
      }
      if (accepted < len) {
        this.stats.spillFull++;
        this.#flag(index, c, TcpFl.GAP, true);
        fin = false; // the FIN comes after bytes we did not take
      }
    }
    if (fin) {
      c.seqFromTap = seqAdd(c.seqFromTap, 1);
      this.#event(index, c, TcpEv.TAP_FIN_RCVD);
      if (c.spillLen === 0) this.#finToSock(index, c);
    } else if (!urgentBefore && len > 0 && len < c.mss && c.spillLen === 0 && c.ooo === null) {
      // A small segment taken whole, in order: its ACK may wait a little for
      // the host's answer to carry it (see `#deferred`).
      c.ackMayWait = true;
    }
  }

  /**
   * An ACK to the guest is due, sent by the flow table's deferred pass at
   * the end of this turn, not later (`#dataFromTap` alone lets one wait;
   * see `#deferred`).
   */
  #ackDue(index: number, c: TcpConn): void {
    c.ackMayWait = false;
    this.#flag(index, c, TcpFl.ACK_TO_TAP_DUE, true);
    this.#flows.defer(index);
  }

  /** Keeps the pieces (`len` bytes from `seq`, past a hole) if there is room; see `tcp_ooo.ts`. */
  #oooKeep(c: TcpConn, seq: number, len: number): void {
    if (len === 0) return;
    if (c.ooo === null) {
      c.ooo = TcpOoo.create(c.seqFromTap);
      if (c.ooo === null) {
        this.stats.oooRefused++;
        return;
      }
    }
    if (c.ooo.store(seq, len, this.#pBufs, this.#pOffs, this.#pLens, this.#pFirst, this.#pCount)) {
      this.stats.oooKept += len;
    } else {
      this.stats.oooRefused++;
    }
  }

  /** Gives the connection's out-of-order queue back. */
  #oooRelease(c: TcpConn): void {
    c.ooo?.release();
    c.ooo = null;
  }

  /** The guest's FIN, all its bytes written: shut the socket's sending side. */
  #finToSock(index: number, c: TcpConn): void {
    sys.shutdown(c.fd, sys.SHUT_WR);
    this.#event(index, c, TcpEv.SOCK_FIN_SENT);
    if (c.has(TcpEv.TAP_FIN_ACKED)) this.#close(index, c, false);
  }

  /** Keeps up to `len` refused bytes in the spill; returns how many fit. */
  #spillKeep(c: TcpConn, buf: Uint8Array, off: number, len: number): number {
    if (c.spill === null) {
      c.spill = new Uint8Array(TCP_SPILL_MAX); // rare: only a full socket inside our window
      c.spillStart = c.spillLen = 0;
    }
    const end = c.spillStart + c.spillLen;
    if (end + len > TCP_SPILL_MAX && c.spillStart > 0) {
      c.spill.copyWithin(0, c.spillStart, end);
      c.spillStart = 0;
    }
    const n = Math.min(len, TCP_SPILL_MAX - c.spillStart - c.spillLen);
    c.spill.set(buf.subarray(off, off + n), c.spillStart + c.spillLen);
    c.spillLen += n;
    this.stats.spilled += n;
    return n;
  }

  /**
   * Writes the spill to the drained socket. Returns false if the socket
   * failed (the connection is reset). Once empty, the spill is released and
   * a FIN that waited for it goes out.
   */
  #spillFlush(index: number, c: TcpConn): boolean {
    const spill = c.spill;
    if (spill === null || c.spillLen === 0) return true;
    const n = sys.sendAt(
      c.fd,
      spill,
      c.spillStart,
      c.spillLen,
      sys.MSG_DONTWAIT | sys.MSG_NOSIGNAL,
    );
    if (n < 0 && n !== -sys.Errno.EAGAIN) {
      this.#close(index, c, true);
      return false;
    }
    if (n > 0) {
      c.sndRoom -= n;
      c.spillStart += n;
      c.spillLen -= n;
      this.stats.bytesToHost += n;
      this.#flows.bytesFrom[index * 2 + c.tapSide] += n;
    }
    if (c.spillLen > 0) return true;
    c.spill = null;
    c.spillStart = 0;
    if (c.has(TcpEv.TAP_FIN_RCVD) && !c.has(TcpEv.SOCK_FIN_SENT)) this.#finToSock(index, c);
    return true;
  }

  // -------------------------------------------------------------------------
  // Host socket → guest

  #sockReady(index: number, events: number): void {
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED)) return;
    if (events & sys.EPOLLERR) {
      const err = this.#soError(c);
      if (!c.has(TcpEv.ESTABLISHED) && !c.has(TcpEv.SOCK_ACCEPTED)) {
        return this.#refused(index, c, err);
      }
      return this.#close(index, c, true);
    }
    if (!c.has(TcpEv.ESTABLISHED)) {
      if (c.has(TcpEv.TAP_SYN_RCVD) && !c.has(TcpEv.TAP_SYN_ACK_SENT) && events & sys.EPOLLOUT) {
        // A failed connect reports EPOLLERR (handled above); only a hang-up
        // without it needs the socket's own word.
        if (events & sys.EPOLLHUP) {
          const err = this.#soError(c);
          if (err !== 0) return this.#refused(index, c, err);
        }
        this.#connected(index, c);
      } else if (events & sys.EPOLLHUP) {
        this.#close(index, c, true);
      } else if (events & sys.EPOLLRDHUP) {
        this.#event(index, c, TcpEv.SOCK_EOF_SEEN); // peeked once the guest is done
      }
      return;
    }
    if (events & sys.EPOLLOUT && c.flags & TcpFl.WRITE_BLOCKED) {
      // The socket drained: write the spill, then tell the guest about the
      // room with a window update. Spill left: the socket is full again, and
      // its next drain is a new edge.
      if (!this.#spillFlush(index, c) || c.has(TcpEv.CLOSED) || c.spillLen > 0) return;
      this.#flag(index, c, TcpFl.WRITE_BLOCKED, false);
      this.#ackDue(index, c);
    }
    if (events & (sys.EPOLLRDHUP | sys.EPOLLHUP)) this.#event(index, c, TcpEv.SOCK_EOF_SEEN);
    if (events & (sys.EPOLLIN | sys.EPOLLRDHUP | sys.EPOLLHUP)) this.#sockToTap(index, c);
  }

  #soError(c: TcpConn): number {
    try {
      return sys.getsockoptInt(c.fd, sys.SOL_SOCKET, sys.SO_ERROR);
    } catch {
      return sys.Errno.EIO;
    }
  }

  /** The host refused or could not reach the target: tell the guest. */
  #refused(index: number, c: TcpConn, err: number): void {
    this.stats.refused++;
    if (logEnabled(LogLevel.debug)) {
      this.#flows.log(index, LogLevel.debug, `connect: ${sys.errnoName(err)}`);
    }
    // Both RST and ICMP say "no"; a RST is what a closed port would send.
    this.#close(index, c, true);
  }

  /**
   * Peeks new socket data into frames for the guest, as far as its window
   * and the batch allow; sends our FIN after the host's.
   */
  #sockToTap(index: number, c: TcpConn): void {
    if (!c.has(TcpEv.ESTABLISHED) || c.has(TcpEv.CLOSED) || c.has(TcpEv.TAP_FIN_SENT)) return;
    const tap = this.#tap;
    const l4 = (c.v6 ? L4_OFF6 : L4_OFF4) + TCP_HEADER_LEN;
    const maxSeg = this.#segmentMax(c);
    const frames = this.#frames;
    // Frames a connection may send in one loop turn where the backend's
    // queue toward tapir is bounded: the guest answers them with up to as
    // many ACKs, which must fit that queue until tapir reads it (see
    // `Tap.guestWindowSegments`). Per turn, not per call: each ACK that
    // opens the window calls again. Measured (64 MiB downloads at MTU 1500
    // without offloads, frames the tap dropped): no bound, 3 runs of 12
    // dropped 77–1 172; a bound per call, 6 of 32; per turn, 1 of 28 (28).
    const budget = tap.guestWindowSegments;
    const turn = this.#loop.stats.turns | 0; // as the column keeps it
    if (c.sentTurn !== turn) {
      c.sentTurn = turn;
      c.sentInTurn = 0;
    }
    for (;;) {
      const inFlight = seqDiff(c.seqToTap, c.seqAckFromTap);
      const wnd = c.wndFromTap - inFlight;
      if (wnd <= 0) {
        this.#flag(index, c, TcpFl.STALLED, true);
        // Nothing in flight, so no retransmission timer runs: if the guest's
        // window update is lost (a pure ACK is never resent), only our probe
        // brings it again (RFC 9293 §3.8.6.1, the persist timer).
        if (inFlight === 0 && !c.armed) this.#loop.arm(c, persistMs(c));
        return;
      }
      if (c.flags & TcpFl.STALLED) {
        c.probes = 0;
        // The persist timer's work is done; sending arms the retransmission timer.
        if (inFlight === 0) this.#loop.disarm(c);
      }
      this.#flag(index, c, TcpFl.STALLED, false);
      const room = Math.min(tap.room(), MAX_FRAMES_PER_READ);
      if (tap.blocked) {
        // The guest is not reading: carry on when it is (see `#resume`).
        this.#resumeLater(c);
        return;
      }
      let want = 0;
      let k = 0;
      let iovs = 0;
      for (; k < room && want < wnd && iovs + PAYLOAD_IOV_MAX <= PEEK_IOV_MAX; k++) {
        const n = Math.min(maxSeg, wnd - want);
        frames[k] = tap.take();
        const next = tap.payloadIov(frames[k], l4 - TAP_HEADROOM, n, this.#iov, iovs);
        if (tap.guestFull && k > 0) {
          // The guest has no room for more: read no data it could not take.
          tap.release(frames[k]);
          break;
        }
        iovs = next;
        this.#lens[k] = n;
        want += n;
      }
      this.#hdr.setName(0, null);
      this.#hdr.setIov(0, this.#iov, iovs);
      this.#hdr.setControl(0, null);
      const got = sys.recvmsg(c.fd, this.#hdr, sys.MSG_PEEK | sys.MSG_DONTWAIT);
      if (got <= 0) tap.release(frames[0]);
      if (got === -sys.Errno.EAGAIN) return;
      if (got < 0) return this.#close(index, c, true);
      if (got === 0) {
        // End of the host's data, and everything before it is sent: FIN.
        this.#event(index, c, TcpEv.SOCK_FIN_RCVD);
        c.seqFinToTap = c.seqToTap;
        this.#control(c, TcpFlag.Fin | TcpFlag.Ack);
        c.seqToTap = seqAdd(c.seqToTap, 1);
        this.#event(index, c, TcpEv.TAP_FIN_SENT);
        if (!c.armed) this.#loop.arm(c, TCP_RTO_MS);
        return;
      }
      c.wndToTap = this.#windowToTap(c);
      let left = got;
      for (let i = 0; left > 0; i++) {
        const n = Math.min(left, this.#lens[i]);
        left -= n;
        const flags = TcpFlag.Ack | (left === 0 ? TcpFlag.Psh : 0);
        this.#emit(frames[i], c, flags, c.seqToTap, n);
        c.seqToTap = seqAdd(c.seqToTap, n);
      }
      // Slots the peek did not reach go back to the send path.
      let used = 0;
      for (let sum = 0; sum < got; used++) sum += this.#lens[used];
      if (used < k) tap.release(frames[used]);
      this.stats.bytesToGuest += got;
      this.#flows.bytesFrom[index * 2 + 1 - c.tapSide] += got;
      c.lastMs = performance.now();
      if (!c.armed) this.#loop.arm(c, TCP_RTO_MS << c.retries);
      // Short of what we asked: the queue is drained. If the host's end was
      // reported, peek once more to find it (FIN): edge-triggered epoll will
      // not report it again. Otherwise more data brings a new edge, and a
      // peek now would only return EAGAIN.
      if (got < want && !c.has(TcpEv.SOCK_EOF_SEEN)) return;
      // This turn's share is sent: the rest at the turn's end (`#resumeSoon`).
      c.sentInTurn += used;
      if (c.sentInTurn >= budget) return this.#resumeSoon(c);
    }
  }

  /**
   * The most payload one frame to the guest carries: one MSS, or, where the
   * send path takes GSO frames, as many whole MSS-sized segments as fit in
   * one IP packet of 64 KiB (and a slot).
   */
  #segmentMax(c: TcpConn): number {
    if (!this.#tap.gsoTcp) return c.mss;
    const headers = (c.v6 ? L4_OFF6 : L4_OFF4) - TAP_HEADROOM + TCP_HEADER_LEN;
    const ipMax = c.v6 ? 65535 - TCP_HEADER_LEN : 65535 - IP4_HEADER_LEN - TCP_HEADER_LEN;
    const fit = Math.min(ipMax, this.#tap.maxFrame - headers);
    return Math.max(c.mss, fit - (fit % c.mss));
  }

  /**
   * The backend did not deliver our frame starting at `seq` of connection
   * `index`: rewind to it at once (the first undelivered byte; the frames
   * after it were not delivered either), so the bytes go again as soon as
   * the backend takes frames, not after the guest's timeout. Frames of a
   * connection closed (and freed) since are ignored, as are reports about
   * bytes already rewound or acknowledged.
   */
  #undelivered(index: number, seq: number): void {
    if (this.#flows.type(index) !== FlowType.TCP) return;
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED) || !c.has(TcpEv.ESTABLISHED)) return;
    if (!seqLt(seq, c.seqToTap) || seqLt(seq, c.seqAckFromTap)) return;
    this.stats.rewinds++;
    if (c.has(TcpEv.TAP_FIN_SENT) && seqGe(c.seqFinToTap, seq)) {
      c.events &= ~TcpEv.TAP_FIN_SENT; // sent again when the peek reaches the end
    }
    c.seqToTap = seq;
    sys.setsockoptInt(c.fd, sys.SOL_SOCKET, sys.SO_PEEK_OFF, seqDiff(seq, c.seqAckFromTap));
    // Trace, not debug: with a slow guest this is routine flow control, many
    // times a second; the `rewinds` counter carries the total.
    if (logEnabled(LogLevel.trace)) {
      this.#flows.log(index, LogLevel.trace, `undelivered: rewind to ${seq >>> 0}`);
    }
    this.#resumeLater(c);
  }

  /** Puts `c` on the list of connections to carry on when the backend takes frames again. */
  #resumeLater(c: TcpConn): void {
    if (c.resumePending) return;
    c.resumePending = true;
    this.#resumeList.push(c.index);
  }

  /** Sends more of `c` at the end of this loop turn, after the turn's other events. */
  #resumeSoon(c: TcpConn): void {
    this.#resumeLater(c);
    if (this.#resumeDeferred) return;
    this.#resumeDeferred = true;
    this.#loop.defer(this.#resumeDeferredFn);
  }

  /** The backend takes frames again: connections that stopped for it send what they have. */
  #resume(): void {
    const list = this.#resumeList;
    const n = list.length;
    for (let i = 0; i < n; i++) {
      const index = list[i];
      if (this.#flows.type(index) !== FlowType.TCP) continue;
      const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
      if (!c.resumePending) continue;
      c.resumePending = false;
      this.#sockToTap(index, c);
    }
    list.splice(0, n); // those added meanwhile stay for the next time
  }

  /** Retransmit from the oldest unacknowledged byte. */
  #rewind(index: number, c: TcpConn): void {
    if (seqDiff(c.seqToTap, c.seqAckFromTap) === 0) return;
    this.stats.retransmits++;
    if (c.has(TcpEv.TAP_FIN_SENT) && !c.has(TcpEv.TAP_FIN_ACKED)) {
      c.events &= ~TcpEv.TAP_FIN_SENT; // resent when the peek reaches the end again
    }
    c.seqToTap = c.seqAckFromTap;
    sys.setsockoptInt(c.fd, sys.SOL_SOCKET, sys.SO_PEEK_OFF, 0);
    this.#sockToTap(index, c);
  }

  /** The retransmission timer. */
  #rto(index: number): void {
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED)) return;
    if (++c.retries > TCP_MAX_RETRIES) return this.#close(index, c, true);
    if (!c.has(TcpEv.ESTABLISHED)) {
      if (c.has(TcpEv.SOCK_ACCEPTED)) this.#control(c, TcpFlag.Syn, c.isn);
      else if (c.has(TcpEv.TAP_SYN_ACK_SENT)) this.#control(c, TcpFlag.Syn | TcpFlag.Ack, c.isn);
      else return this.#refused(index, c, sys.Errno.ETIMEDOUT); // connect timed out
      this.#loop.arm(c, TCP_RTO_MS << c.retries);
      return;
    }
    if (seqDiff(c.seqToTap, c.seqAckFromTap) > 0) {
      this.#rewind(index, c);
      this.#loop.arm(c, TCP_RTO_MS << c.retries);
    } else if (c.flags & TcpFl.STALLED) {
      // The persist timer: probe the zero window with a segment just below
      // what the guest expects, which it must answer with an ACK carrying
      // its current window (as Linux's tcp_xmit_probe_skb does). An answer
      // resets `retries`; the interval backs off while the window stays shut.
      this.stats.windowProbes++;
      this.#control(c, TcpFlag.Ack, seqAdd(c.seqToTap, -1));
      c.probes++;
      this.#loop.arm(c, persistMs(c));
    }
  }

  // -------------------------------------------------------------------------
  // Deferred work, timeouts, closing

  /**
   * End of turn: send a due ACK; free a closed connection.
   *
   * An ACK for a small segment taken in order (`ackMayWait`: a request, a
   * keystroke) waits up to {@linkcode TCP_ACK_DELAY_MS}, within the loop's
   * spin: the host's answer usually comes sooner, and the data frame that
   * carries it carries the ACK too (`#emit` clears the duty). Measured on a
   * ping-pong, that is one frame in three toward the guest, and a syscall.
   * Anything else — bulk data, FIN, a hole, a probe, a window update — is
   * acknowledged now.
   */
  #deferred(index: number): boolean {
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED)) return true;
    if (c.flags & TcpFl.ACK_TO_TAP_DUE) {
      if (c.ackMayWait && !(c.flags & TcpFl.GAP)) this.#ackLater(c);
      else this.#ackToTap(index, c);
    }
    return false;
  }

  /** Puts `c`'s due ACK on the delayed list, flushed by `#ackDelayTimer`. */
  #ackLater(c: TcpConn): void {
    if (c.ackWaiting) return;
    c.ackWaiting = true;
    this.#ackWaitList[this.#ackWaitCount++] = c;
    if (!this.#ackDelayTimer.armed) this.#loop.arm(this.#ackDelayTimer, this.ackDelayMs);
  }

  /** The delay is over: every ACK still due on the list goes now. */
  #ackDelayed(): void {
    const list = this.#ackWaitList;
    const n = this.#ackWaitCount;
    for (let i = 0; i < n; i++) {
      const c = list[i]!;
      // A closed connection's slot may be another's now: only `events` is its own.
      if (c.has(TcpEv.CLOSED)) continue;
      c.ackWaiting = false;
      if (c.flags & TcpFl.ACK_TO_TAP_DUE) {
        this.stats.acksDelayed++;
        this.#ackToTap(c.index, c);
      }
    }
    // Keep the array's storage (its length never drops); drop the references.
    for (let i = 0; i < n; i++) list[i] = null;
    this.#ackWaitCount = 0;
  }

  /** Once a second: handshake and idle timeouts. */
  #flowTimer(index: number, now: number): boolean {
    const c = this.#flows.data<TcpConn>(index, FlowType.TCP);
    if (c.has(TcpEv.CLOSED)) return true;
    if (!c.has(TcpEv.ESTABLISHED) && now - c.startMs > TCP_HANDSHAKE_TIMEOUT_MS) {
      this.#close(index, c, true);
    } else if (now - c.lastMs > TCP_IDLE_TIMEOUT_MS) {
      this.#close(index, c, true);
    }
    return c.has(TcpEv.CLOSED);
  }

  /**
   * Ends a connection: with `reset`, RST to the guest (if it knows of the
   * connection and `toGuest`) and to the host (SO_LINGER 0). The flow is
   * freed by the deferred pass.
   */
  #close(index: number, c: TcpConn, reset: boolean, toGuest = true): void {
    if (c.has(TcpEv.CLOSED)) return;
    if (reset) {
      const guestKnows = toGuest && (c.has(TcpEv.SOCK_ACCEPTED) || c.has(TcpEv.TAP_SYN_RCVD));
      if (guestKnows && !c.has(TcpEv.TAP_FIN_ACKED)) {
        const flags = c.has(TcpEv.ESTABLISHED) || c.has(TcpEv.SOCK_ACCEPTED)
          ? TcpFlag.Rst
          : TcpFlag.Rst | TcpFlag.Ack;
        this.#control(
          c,
          flags,
          c.has(TcpEv.SOCK_ACCEPTED) && !c.has(TcpEv.ESTABLISHED) ? seqAdd(c.isn, 1) : c.seqToTap,
        );
        this.stats.resetsToGuest++;
      }
      if (c.fd >= 0) {
        sys.setsockopt(c.fd, sys.SOL_SOCKET, sys.SO_LINGER, LINGER_RESET);
      }
    }
    // An orderly close can come with the ACK of the guest's FIN still due
    // (the host closed first): the deferred pass skips closed flows, so now.
    if (!reset && c.flags & TcpFl.ACK_TO_TAP_DUE) this.#ackToTap(index, c);
    this.#loop.disarm(c);
    this.#oooRelease(c);
    if (c.fd >= 0) {
      // No EPOLL_CTL_DEL: closing the only descriptor of the socket takes it
      // out of the epoll set (a syscall per connection saved).
      sys.close(c.fd);
      c.fd = -1;
    }
    c.events |= TcpEv.CLOSED;
    if (logEnabled(LogLevel.debug)) {
      this.#flows.log(index, LogLevel.debug, reset ? "reset" : "closed");
    }
    this.stats.closed++;
    this.#flows.defer(index);
  }

  // -------------------------------------------------------------------------
  // Inbound connections (port forwarding)

  /**
   * A connection accepted on the host for the guest: `fd` (non-blocking) from
   * a client, `ini` the host side (client → listener), `tgt` the guest side
   * (guest address and target port; `o` the address and port the guest sees
   * the connection from). Sends the guest a SYN. Returns false (and closes
   * `fd`) if no flow can be allocated.
   */
  inbound(fd: number, v6: boolean, ini: FlowSide, tgt: FlowSide): boolean {
    const flows = this.#flows;
    const index = flows.alloc();
    if (index < 0) {
      this.stats.tableFull++;
      sys.setsockopt(fd, sys.SOL_SOCKET, sys.SO_LINGER, LINGER_RESET);
      sys.close(fd);
      return false;
    }
    flows.setIni(index, ini);
    flows.setTgt(index, tgt);
    this.#hostSocketOptions(fd);
    const c = this.#newConn(index, fd, v6, 1);
    c.mss = v6 ? this.#mss6 : this.#mss4;
    c.wsToTap = TCP_WS_TO_TAP;
    c.isn = this.#makeIsn(c);
    c.seqToTap = c.seqAckFromTap = c.isn;
    flows.setType(index, FlowType.TCP, c);
    flows.hashInsert(flowSidx(index, 1));
    flows.activate(index);
    this.stats.inbound++;
    this.#event(index, c, TcpEv.SOCK_ACCEPTED);
    c.wndToTap = this.#windowToTap(c);
    this.#control(c, TcpFlag.Syn, c.isn);
    this.#loop.arm(c, TCP_RTO_MS);
    if (logEnabled(LogLevel.debug)) {
      log(LogLevel.debug, `flow ${index} TCP: inbound ${flows.formatSide(flowSidx(index, 0))}`);
    }
    return true;
  }
}
