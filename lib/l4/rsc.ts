/**
 * Receive segment coalescing (RSC): in-order TCP segments of one connection
 * that arrive in one receive batch become one segment for TCP — one socket
 * write, one acknowledgement processed, one ACK toward the guest.
 *
 * # Theory of operation
 *
 * **Why.** A guest that sends MSS-sized frames (the QEMU stream socket, a
 * guest with TSO off, `--no-offload`) would cost tapir a `sendmsg` and a
 * pass through the TCP state machine per 1.5 KB. The kernel's GRO merges
 * such segments before its stack sees them; this is tapir's GRO, following
 * the rules of QEMU's virtio-net RSC (seed 004), with our own limits.
 *
 * **Where.** Between the frame dispatcher and TCP: the dispatcher has
 * already checked every header, length and checksum, so fragments, bad IP
 * versions and lengths that disagree with the frame are dropped and counted
 * there (`TapInput`), and only TCP reaches this module. A *chain* is an open
 * merge for one connection: the head segment (its views, over the receive
 * slot it arrived in) and the payload pieces of the segments merged behind
 * it, still in their slots — nothing is copied. The slots live until the
 * next receive, so **a chain never outlives its batch**: `Tapir` calls
 * {@linkcode Rsc.drain} after each batch, which finalizes every open chain
 * (the batch is the drain bound; no timer is needed).
 *
 * **Per segment** (`#decide`), for the connection's chain if it has one:
 * - *bypass* — handed to TCP at once, no chain touched: SYN (it opens a
 *   connection), IPv4 options, IPv6 extension headers (segments whose
 *   headers are not the plain ones are not worth the risk), and segments
 *   when every chain slot is busy;
 * - *finalize* — the connection's chain goes to TCP first, then the segment
 *   on its own: FIN, RST and URG (end of data, abort, urgent: never
 *   delayed behind or merged into data), a change of TCP options other than
 *   timestamps, a segment out of order (not the next sequence number) or
 *   out of window (more than 64 KiB away: a retransmission), an
 *   acknowledgement that goes backwards, merged payload that would pass
 *   65535 bytes or {@linkcode TCP_MERGE_MAX_PIECES} pieces, and a duplicate
 *   ACK (same ACK, same window, no data: the guest's fast retransmit
 *   depends on each one arriving, so one is never swallowed);
 * - *coalesce* — the segment joins the chain: in-order data (its payload
 *   becomes a piece; the chain takes its ACK and window), a pure ACK that
 *   moves the acknowledgement forward, or a window update (same ACK, new
 *   window); these are the flowchart's "A" and "B" cases, which may merge.
 *
 * A segment that finalized a chain, or that arrived with none, starts a new
 * chain — except a flagged segment or a duplicate ACK, which goes to TCP
 * alone, so that each is seen as it was sent. A chain of one segment goes to TCP as that
 * segment; a longer one with the merged ACK, window, flags and pieces
 * ({@linkcode TcpMerged}). Every outcome has a counter.
 *
 * @module
 */

import { Ip4Packet } from "../packet/ip4.ts";
import { Ip6Packet } from "../packet/ip6.ts";
import { TcpFlag, TcpPacket } from "../packet/tcp.ts";
import type { FrameTail } from "../tap/tail.ts";
import { seqAdd, seqDiff, seqGt, seqLt } from "./seq.ts";
import { TCP_MERGE_MAX_PIECES, type TcpMerged } from "./tcp.ts";

/** Most payload bytes one merged segment carries. */
export const RSC_MAX_PAYLOAD = 65535;
/** Connections with an open chain at once; a segment of another one bypasses. */
export const RSC_MAX_CHAINS = 16;
/** Flags that end a chain and go to TCP on a segment of their own. */
const ALONE_FLAGS = TcpFlag.Fin | TcpFlag.Rst | TcpFlag.Urg;
/** TCP option kind of timestamps, whose values may change within a chain. */
const TCP_OPT_TIMESTAMPS = 8;

/** Where merged (and bypassing) segments go: TCP. */
export interface RscSink {
  /**
   * A segment over IPv4, with what was merged behind it (or null), and the
   * tail its payload is in, if it has one (see `TapConsumers.tcp4`).
   */
  fromTap4(ip: Ip4Packet, seg: TcpPacket, merged: TcpMerged | null, tail: FrameTail | null): void;
  /** A segment over IPv6 (TCP at `upperOff`); see `fromTap4`. */
  fromTap6(
    ip: Ip6Packet,
    seg: TcpPacket,
    upperOff: number,
    merged: TcpMerged | null,
    tail: FrameTail | null,
  ): void;
}

/** Counters of the coalescer: one per outcome. */
export interface RscStats {
  /** Segments that reached the coalescer. */
  segments: number;
  /** Segments merged into a chain behind its head. */
  coalesced: number;
  /** Chains handed to TCP with more than one segment. */
  chains: number;
  /** Of the coalesced: in-order data, pure ACKs, window updates, data after a pure ACK. */
  data: number;
  pureAcks: number;
  windowUpdates: number;
  dataAfterAck: number;
  /** Bypassed: SYN, IPv4 options, IPv6 extension headers, no free chain. */
  bypassSyn: number;
  bypassIpOptions: number;
  bypassIp6Ext: number;
  bypassNoChain: number;
  /** Chains finalized by a FIN, a RST, an URG segment. */
  finalFin: number;
  finalRst: number;
  finalUrg: number;
  /** Chains finalized by a change of TCP options. */
  finalOptions: number;
  /** Chains finalized by a duplicate ACK (passed on alone). */
  finalDupAck: number;
  /** Chains finalized by an acknowledgement older than the chain's. */
  finalOldAck: number;
  /** Chains finalized by a segment out of order (not the next sequence number). */
  outOfOrder: number;
  /** Chains finalized by a segment more than 64 KiB from the chain's start. */
  outOfWindow: number;
  /** Chains finalized because the segment would make them too big. */
  overSize: number;
  /** Chains finalized at the end of their batch. */
  finalBatchEnd: number;
}

/** One open merge: a connection's head segment and the pieces merged behind it. */
class RscChain implements TcpMerged {
  /** In use in this batch. */
  open = false;
  v6 = false;
  /** The head's views, over its receive slot (not the dispatcher's, which move on). */
  readonly ip4 = new Ip4Packet();
  readonly ip6 = new Ip6Packet();
  readonly seg = new TcpPacket();
  upperOff = 0;
  /** The tail of the head's frame, if its payload is in one. */
  tail: FrameTail | null = null;
  /**
   * The connection: IPv4 addresses as signed 32-bit numbers
   * (`Ip4Packet.srcBits`), or offsets of IPv6 ones in the head's buffer.
   */
  src4 = 0;
  dst4 = 0;
  sport = 0;
  dport = 0;
  /** Sequence number of the head, and of the byte after the last merged. */
  seq = 0;
  nextSeq = 0;
  /** Segments in the chain (the head included) and payload bytes (the head's included). */
  segs = 0;
  payload = 0;
  // TcpMerged
  ack = 0;
  window = 0;
  flags = 0;
  count = 0;
  readonly bufs: Uint8Array[] = new Array(TCP_MERGE_MAX_PIECES);
  readonly offs = new Float64Array(TCP_MERGE_MAX_PIECES);
  readonly lens = new Uint32Array(TCP_MERGE_MAX_PIECES);
  total = 0;
}

/** What {@linkcode Rsc} decides for a segment with a chain open for its connection. */
const Verdict = { COALESCE: 0, FINALIZE: 1, FINALIZE_ALONE: 2 } as const;

/** The coalescer; see the module comment. */
export class Rsc {
  /** Counters. */
  readonly stats: RscStats = {
    segments: 0,
    coalesced: 0,
    chains: 0,
    data: 0,
    pureAcks: 0,
    windowUpdates: 0,
    dataAfterAck: 0,
    bypassSyn: 0,
    bypassIpOptions: 0,
    bypassIp6Ext: 0,
    bypassNoChain: 0,
    finalFin: 0,
    finalRst: 0,
    finalUrg: 0,
    finalOptions: 0,
    finalDupAck: 0,
    finalOldAck: 0,
    outOfOrder: 0,
    outOfWindow: 0,
    overSize: 0,
    finalBatchEnd: 0,
  };
  readonly #sink: RscSink;
  readonly #chains: RscChain[] = [];
  /**
   * Open chains, `#open[0..#openCount)`, in the order they were started
   * (finalized in that order by `drain`). A count, not the array's length:
   * V8 frees an array's storage when its length drops to 0, and the next
   * push allocated it again — per batch, a fifth of what a ping-pong allocated.
   */
  readonly #open: RscChain[] = [];
  #openCount = 0;

  /** Hands merged segments to `sink`. */
  constructor(sink: RscSink) {
    this.#sink = sink;
    for (let i = 0; i < RSC_MAX_CHAINS; i++) this.#chains.push(new RscChain());
    for (let i = 0; i < RSC_MAX_CHAINS; i++) this.#open.push(this.#chains[i]);
  }

  /** A TCP segment over IPv4 from the dispatcher (headers and checksum checked). */
  fromTap4(ip: Ip4Packet, seg: TcpPacket, tail: FrameTail | null = null): void {
    this.stats.segments++;
    if (seg.flags & TcpFlag.Syn) {
      this.stats.bypassSyn++;
      return this.#sink.fromTap4(ip, seg, null, tail);
    }
    if (ip.hasOptions) {
      this.stats.bypassIpOptions++;
      return this.#sink.fromTap4(ip, seg, null, tail);
    }
    let chain: RscChain | null = null;
    const open = this.#open;
    for (let i = 0; i < this.#openCount; i++) {
      const c = open[i];
      if (
        !c.v6 && c.src4 === ip.srcBits && c.dst4 === ip.dstBits && c.sport === seg.srcPort &&
        c.dport === seg.dstPort
      ) {
        chain = c;
        break;
      }
    }
    if (chain !== null && this.#merge(chain, seg, tail)) return;
    if (seg.flags & ALONE_FLAGS) return this.#sink.fromTap4(ip, seg, null, tail); // no chain to finalize
    const fresh = this.#start(seg, tail);
    if (fresh === null) return this.#sink.fromTap4(ip, seg, null, tail);
    fresh.v6 = false;
    fresh.ip4.wrap(ip.buf, ip.off, ip.len);
    fresh.seg.wrap(seg.buf, seg.off, seg.len);
    fresh.src4 = ip.srcBits;
    fresh.dst4 = ip.dstBits;
  }

  /** A TCP segment over IPv6 (TCP at `upperOff`) from the dispatcher. */
  fromTap6(ip: Ip6Packet, seg: TcpPacket, upperOff: number, tail: FrameTail | null = null): void {
    this.stats.segments++;
    if (seg.flags & TcpFlag.Syn) {
      this.stats.bypassSyn++;
      return this.#sink.fromTap6(ip, seg, upperOff, null, tail);
    }
    if (upperOff !== ip.payloadOffset) {
      this.stats.bypassIp6Ext++;
      return this.#sink.fromTap6(ip, seg, upperOff, null, tail);
    }
    let chain: RscChain | null = null;
    const open = this.#open;
    for (let i = 0; i < this.#openCount; i++) {
      const c = open[i];
      if (
        c.v6 && c.sport === seg.srcPort && c.dport === seg.dstPort &&
        bytesEqual(c.ip6.buf, c.ip6.srcOffset, ip.buf, ip.srcOffset, 16) &&
        bytesEqual(c.ip6.buf, c.ip6.dstOffset, ip.buf, ip.dstOffset, 16)
      ) {
        chain = c;
        break;
      }
    }
    if (chain !== null && this.#merge(chain, seg, tail)) return;
    if (seg.flags & ALONE_FLAGS) return this.#sink.fromTap6(ip, seg, upperOff, null, tail);
    const fresh = this.#start(seg, tail);
    if (fresh === null) return this.#sink.fromTap6(ip, seg, upperOff, null, tail);
    fresh.v6 = true;
    fresh.ip6.wrap(ip.buf, ip.off, ip.len);
    fresh.seg.wrap(seg.buf, seg.off, seg.len);
    fresh.upperOff = upperOff;
  }

  /** End of a receive batch: every open chain goes to TCP. */
  drain(): void {
    const open = this.#open;
    for (let i = 0; i < this.#openCount; i++) {
      this.stats.finalBatchEnd++;
      this.#deliver(open[i]);
    }
    this.#openCount = 0;
  }

  /**
   * Tries to merge `seg` into `chain`. True if it joined the chain (or was
   * handed to TCP alone after it); false if the chain was finalized and
   * `seg` should start a new one.
   */
  #merge(chain: RscChain, seg: TcpPacket, tail: FrameTail | null): boolean {
    const v = this.#decide(chain, seg, tail);
    if (v === Verdict.COALESCE) return true;
    this.#finalize(chain);
    if (v === Verdict.FINALIZE) return false;
    // Flagged segments and duplicate ACKs go on their own, never as a head.
    if (chain.v6) this.#sink.fromTap6(chain.ip6, seg, chain.upperOff, null, tail);
    else this.#sink.fromTap4(chain.ip4, seg, null, tail);
    return true;
  }

  /** The rules of the module comment, for a segment of `chain`'s connection. */
  #decide(chain: RscChain, seg: TcpPacket, tail: FrameTail | null): number {
    const st = this.stats;
    const flags = seg.flags;
    if (flags & ALONE_FLAGS) {
      if (flags & TcpFlag.Rst) st.finalRst++;
      else if (flags & TcpFlag.Fin) st.finalFin++;
      else st.finalUrg++;
      return Verdict.FINALIZE_ALONE;
    }
    const head = chain.seg;
    if (!optionsEqualButTimestamps(head, seg)) {
      st.finalOptions++;
      return Verdict.FINALIZE;
    }
    const fromHead = seqDiff(seg.seq, chain.seq);
    if (fromHead > RSC_MAX_PAYLOAD) {
      st.outOfWindow++;
      return Verdict.FINALIZE;
    }
    const len = seg.payloadLen;
    const ack = seg.ack;
    if (seg.seq !== chain.nextSeq) {
      st.outOfOrder++;
      return Verdict.FINALIZE;
    }
    if (seqLt(ack, chain.ack)) {
      st.finalOldAck++;
      return Verdict.FINALIZE;
    }
    if (len === 0) {
      if (seqGt(ack, chain.ack)) st.pureAcks++;
      else if (seg.window !== chain.window) st.windowUpdates++;
      else {
        st.finalDupAck++;
        return Verdict.FINALIZE_ALONE;
      }
    } else {
      const k = chain.payload + len > RSC_MAX_PAYLOAD ? -1 : addPieces(chain, seg, len, tail);
      if (k < 0) {
        st.overSize++;
        return Verdict.FINALIZE;
      }
      if (chain.payload === 0) st.dataAfterAck++;
      else st.data++;
      chain.count = k;
      chain.total += len;
      chain.payload += len;
      chain.nextSeq = seqAdd(chain.nextSeq, len);
    }
    chain.ack = ack;
    chain.window = seg.window;
    chain.flags |= flags & TcpFlag.Psh;
    chain.segs++;
    st.coalesced++;
    return Verdict.COALESCE;
  }

  /** Opens a chain headed by `seg` (the caller wraps the views), or null if none is free. */
  #start(seg: TcpPacket, tail: FrameTail | null): RscChain | null {
    let chain: RscChain | null = null;
    for (let i = 0; i < this.#chains.length; i++) {
      if (!this.#chains[i].open) {
        chain = this.#chains[i];
        break;
      }
    }
    if (chain === null) {
      this.stats.bypassNoChain++;
      return null;
    }
    chain.open = true;
    chain.tail = tail;
    chain.sport = seg.srcPort;
    chain.dport = seg.dstPort;
    chain.seq = seg.seq;
    chain.nextSeq = seqAdd(seg.seq, seg.payloadLen);
    chain.segs = 1;
    chain.payload = seg.payloadLen;
    chain.ack = seg.ack;
    chain.window = seg.window;
    chain.flags = seg.flags;
    chain.count = 0;
    chain.total = 0;
    this.#open[this.#openCount++] = chain; // at most RSC_MAX_CHAINS are open
    return chain;
  }

  /** Hands `chain` to TCP and takes it off the open list. */
  #finalize(chain: RscChain): void {
    const open = this.#open;
    const n = this.#openCount;
    let at = 0;
    while (at < n && open[at] !== chain) at++;
    if (at < n) {
      for (let i = at + 1; i < n; i++) open[i - 1] = open[i];
      open[n - 1] = chain; // the slot stays filled (see `#open`)
      this.#openCount--;
    }
    this.#deliver(chain);
  }

  #deliver(chain: RscChain): void {
    chain.open = false;
    const merged = chain.segs > 1 ? chain : null;
    if (merged !== null) this.stats.chains++;
    if (chain.v6) this.#sink.fromTap6(chain.ip6, chain.seg, chain.upperOff, merged, chain.tail);
    else this.#sink.fromTap4(chain.ip4, chain.seg, merged, chain.tail);
    chain.tail = null;
  }
}

/**
 * Lists the `len` payload bytes of `seg` after `chain`'s pieces — one piece
 * in its slot, or those of its frame's tail — and returns the new count, or
 * -1 (the chain unchanged) if they do not fit.
 */
function addPieces(chain: RscChain, seg: TcpPacket, len: number, tail: FrameTail | null): number {
  const k = chain.count;
  if (tail !== null) {
    return tail.pieces(
      seg.payloadOffset,
      len,
      chain.bufs,
      chain.offs,
      chain.lens,
      k,
      TCP_MERGE_MAX_PIECES,
    );
  }
  if (k === TCP_MERGE_MAX_PIECES) return -1;
  chain.bufs[k] = seg.buf;
  chain.offs[k] = seg.payloadOffset;
  chain.lens[k] = len;
  return k + 1;
}

function bytesEqual(a: Uint8Array, ao: number, b: Uint8Array, bo: number, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[ao + i] !== b[bo + i]) return false;
  return true;
}

/**
 * True if `a` and `b` carry the same TCP options, timestamp values aside
 * (they move with every segment). A malformed list compares byte for byte.
 */
function optionsEqualButTimestamps(a: TcpPacket, b: TcpPacket): boolean {
  const n = a.optionsLen;
  if (n !== b.optionsLen) return false;
  const ab = a.buf, bb = b.buf;
  const ao = a.optionsOffset, bo = b.optionsOffset;
  let i = 0;
  while (i < n) {
    const kind = ab[ao + i];
    if (kind !== bb[bo + i]) return false;
    if (kind === 0) return bytesEqual(ab, ao + i, bb, bo + i, n - i);
    if (kind === 1) {
      i++;
      continue;
    }
    if (i + 1 >= n) return bytesEqual(ab, ao + i, bb, bo + i, n - i);
    const len = ab[ao + i + 1];
    if (len !== bb[bo + i + 1] || len < 2 || i + len > n) {
      return bytesEqual(ab, ao + i, bb, bo + i, n - i);
    }
    if (kind !== TCP_OPT_TIMESTAMPS && !bytesEqual(ab, ao + i, bb, bo + i, len)) return false;
    i += len;
  }
  return true;
}
