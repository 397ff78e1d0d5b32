/**
 * TCP segments (RFC 9293) and TCP options (RFC 9293 MSS, RFC 7323 window
 * scale and timestamps, RFC 2018 SACK).
 *
 * `wrap` checks only the structure: data offset ≥ 5 and within the segment.
 * The segment's length comes from the IP layer (IPv4 payload, IPv6 upper-layer
 * length); TCP has no length field of its own. Options are parsed on demand
 * into a caller-owned {@linkcode TcpOptions} ({@linkcode TcpPacket.parseOptions}),
 * checksums verified on demand with the IP addresses
 * ({@linkcode TcpPacket.checksumOk4}, {@linkcode TcpPacket.checksumOk6}).
 *
 * The builder lays options out the way Linux does, so every option starts on
 * its natural alignment and the total is a multiple of 4:
 * MSS, then SACK-permitted + timestamps (or NOP NOP timestamps, or NOP NOP
 * SACK-permitted), then NOP window scale, then NOP NOP SACK blocks: as many as
 * fit in 40 bytes.
 *
 * Sequence and acknowledgment numbers are read as their 32 bits taken as a
 * signed number, the form `seq.ts` gives every sequence number in tapir
 * (see there why); writers take either form. Comparing them modulo 2^32
 * is `seq.ts`'s job.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import {
  checksumFill,
  tcp4ChecksumFill,
  tcp4ChecksumOk,
  tcp6ChecksumFill,
  tcp6ChecksumOk,
} from "./checksum.ts";
import {
  emitSpace,
  EMPTY_BYTES,
  get16,
  get32,
  get32Signed,
  set16,
  set32,
  WireError,
} from "./wire.ts";

// RFC 9293 §3.1, TCP Header Format:
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |          Source Port          |       Destination Port        |   0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                        Sequence Number                        |   4
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                    Acknowledgment Number                      |   8
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  Data |       |C|E|U|A|P|R|S|F|                               |
// | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |  12
// |       |       |R|E|G|K|H|T|N|N|                               |
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |           Checksum            |         Urgent Pointer        |  16
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |                           [Options]                           |  20
const F = {
  srcPort: 0,
  dstPort: 2,
  seq: 4,
  ack: 8,
  dataOffset: 12,
  flags: 13,
  window: 14,
  checksum: 16,
  urgent: 18,
  options: 20,
} as const;

/** Length of a TCP header without options. */
export const TCP_HEADER_LEN: number = F.options;
/** Longest TCP header (data offset 15). */
export const TCP_MAX_HEADER_LEN = 60;
/** Most SACK blocks one option can carry. */
export const TCP_MAX_SACK_BLOCKS = 4;

/** TCP flag bits, as in the flags byte (offset 13). */
export const TcpFlag = {
  Fin: 0x01,
  Syn: 0x02,
  Rst: 0x04,
  Psh: 0x08,
  Ack: 0x10,
  Urg: 0x20,
  Ece: 0x40,
  Cwr: 0x80,
} as const;
/** One of the {@linkcode TcpFlag} bits. */
export type TcpFlag = (typeof TcpFlag)[keyof typeof TcpFlag];

/** TCP option kinds (IANA registry). */
export const TcpOptKind = {
  End: 0,
  Nop: 1,
  Mss: 2,
  WindowScale: 3,
  SackPermitted: 4,
  Sack: 5,
  Timestamp: 8,
} as const;
/** One of the {@linkcode TcpOptKind} values. */
export type TcpOptKind = (typeof TcpOptKind)[keyof typeof TcpOptKind];

// Sizes of the options tapir knows, kind and length bytes included.
const OPT_MSS_LEN = 4;
const OPT_WSCALE_LEN = 3;
const OPT_SACKP_LEN = 2;
const OPT_TS_LEN = 10;
const OPT_SACK_BLOCK_LEN = 8;
const MAX_OPTIONS_LEN = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN;

/**
 * The TCP options tapir understands, as parsed from or to be written into a
 * header. Reuse one instance: {@linkcode tcpOptionsParse} resets it first.
 */
export class TcpOptions {
  /** Maximum segment size, or 0 if absent. */
  mss = 0;
  /** Window scale shift as sent (RFC 7323 caps its use at 14), or -1 if absent. */
  wscale = -1;
  /** SACK-permitted seen / to send. */
  sackPermitted = false;
  /** Timestamps option seen / to send. */
  tsPresent = false;
  /** Timestamp value (TSval). */
  tsVal = 0;
  /** Timestamp echo reply (TSecr). */
  tsEcr = 0;
  /** SACK blocks in {@linkcode sackBlocks}. */
  sackCount = 0;
  /** SACK blocks as [left0, right0, left1, right1, ...] u32 sequence numbers. */
  readonly sackBlocks: Uint32Array = new Uint32Array(2 * TCP_MAX_SACK_BLOCKS);

  /** Sets every option to absent. */
  reset(): void {
    this.mss = 0;
    this.wscale = -1;
    this.sackPermitted = false;
    this.tsPresent = false;
    this.tsVal = 0;
    this.tsEcr = 0;
    this.sackCount = 0;
  }
}

/**
 * Parses the `len` bytes of TCP options at `buf[off..]` into `out` (reset
 * first). Stops at End of Option List; NOPs are skipped, and so are unknown
 * kinds with a sane length. Returns {@linkcode WireError.BadOption} for a
 * length byte missing, below 2 or running past the options, or a known kind of
 * the wrong size (MSS 4, window scale 3, SACK-permitted 2, timestamps 10, SACK
 * 2 + 8n with 1 ≤ n ≤ 4).
 */
export function tcpOptionsParse(
  buf: Uint8Array,
  off: number,
  len: number,
  out: TcpOptions,
): WireError | 0 {
  out.reset();
  const end = off + len;
  let i = off;
  while (i < end) {
    const kind = buf[i];
    if (kind === TcpOptKind.End) break;
    if (kind === TcpOptKind.Nop) {
      i++;
      continue;
    }
    if (i + 2 > end) return WireError.BadOption;
    const optLen = buf[i + 1];
    if (optLen < 2 || i + optLen > end) return WireError.BadOption;
    switch (kind) {
      case TcpOptKind.Mss:
        if (optLen !== OPT_MSS_LEN) return WireError.BadOption;
        out.mss = get16(buf, i + 2);
        break;
      case TcpOptKind.WindowScale:
        if (optLen !== OPT_WSCALE_LEN) return WireError.BadOption;
        out.wscale = buf[i + 2];
        break;
      case TcpOptKind.SackPermitted:
        if (optLen !== OPT_SACKP_LEN) return WireError.BadOption;
        out.sackPermitted = true;
        break;
      case TcpOptKind.Timestamp:
        if (optLen !== OPT_TS_LEN) return WireError.BadOption;
        out.tsPresent = true;
        out.tsVal = get32(buf, i + 2);
        out.tsEcr = get32(buf, i + 6);
        break;
      case TcpOptKind.Sack: {
        const n = (optLen - 2) / OPT_SACK_BLOCK_LEN;
        if (!Number.isInteger(n) || n < 1 || n > TCP_MAX_SACK_BLOCKS) return WireError.BadOption;
        for (let b = 0; b < n; b++) {
          out.sackBlocks[2 * b] = get32(buf, i + 2 + OPT_SACK_BLOCK_LEN * b);
          out.sackBlocks[2 * b + 1] = get32(buf, i + 6 + OPT_SACK_BLOCK_LEN * b);
        }
        out.sackCount = n;
        break;
      }
    }
    i += optLen;
  }
  return 0;
}

/** Reusable view of a TCP segment; see `wire.ts` for the contract. */
export class TcpPacket {
  /** Buffer holding the segment. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the segment, header included. */
  len = 0;

  /**
   * Points the view at the `len`-byte TCP segment at `buf[off..]`. Refuses a
   * data offset below 5 or past the segment. On error the view is unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < TCP_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    const hdrLen = (buf[off + F.dataOffset] >>> 4) * 4;
    if (hdrLen < TCP_HEADER_LEN) return WireError.BadHeaderLen;
    if (hdrLen > len) return WireError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): TcpPacket | WireError {
    const p = new TcpPacket();
    const err = p.wrap(buf, off, len);
    return err === 0 ? p : err;
  }

  /** Source port. */
  get srcPort(): number {
    return get16(this.buf, this.off + F.srcPort);
  }
  set srcPort(v: number) {
    set16(this.buf, this.off + F.srcPort, v);
  }
  /** Destination port. */
  get dstPort(): number {
    return get16(this.buf, this.off + F.dstPort);
  }
  set dstPort(v: number) {
    set16(this.buf, this.off + F.dstPort, v);
  }
  /** Sequence number (signed 32-bit form, see `seq.ts`). */
  get seq(): number {
    return get32Signed(this.buf, this.off + F.seq);
  }
  set seq(v: number) {
    set32(this.buf, this.off + F.seq, v);
  }
  /** Acknowledgment number (signed 32-bit form, see `seq.ts`). */
  get ack(): number {
    return get32Signed(this.buf, this.off + F.ack);
  }
  set ack(v: number) {
    set32(this.buf, this.off + F.ack, v);
  }
  /** Header length in bytes (data offset × 4). */
  get headerLen(): number {
    return (this.buf[this.off + F.dataOffset] >>> 4) * 4;
  }
  /** Flags byte ({@linkcode TcpFlag} bits). */
  get flags(): number {
    return this.buf[this.off + F.flags];
  }
  set flags(v: number) {
    this.buf[this.off + F.flags] = v;
  }
  /** Window (unscaled, as on the wire). */
  get window(): number {
    return get16(this.buf, this.off + F.window);
  }
  set window(v: number) {
    set16(this.buf, this.off + F.window, v);
  }
  /** Checksum field. */
  get checksum(): number {
    return get16(this.buf, this.off + F.checksum);
  }
  set checksum(v: number) {
    set16(this.buf, this.off + F.checksum, v);
  }
  /** Urgent pointer. */
  get urgent(): number {
    return get16(this.buf, this.off + F.urgent);
  }
  set urgent(v: number) {
    set16(this.buf, this.off + F.urgent, v);
  }
  /** Offset of the options in {@linkcode buf}. */
  get optionsOffset(): number {
    return this.off + F.options;
  }
  /** Bytes of options (header length − 20). */
  get optionsLen(): number {
    return this.headerLen - TCP_HEADER_LEN;
  }
  /** Parses this segment's options into `out`; see {@linkcode tcpOptionsParse}. */
  parseOptions(out: TcpOptions): WireError | 0 {
    return tcpOptionsParse(this.buf, this.off + F.options, this.optionsLen, out);
  }
  /** Offset of the payload in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + this.headerLen;
  }
  /** Bytes of payload. */
  get payloadLen(): number {
    return this.len - this.headerLen;
  }
  /** The payload as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.payloadOffset, this.off + this.len);
  }
  /** True if the checksum verifies over IPv4 with u32 addresses `src`, `dst`. */
  checksumOk4(src: number, dst: number): boolean {
    return tcp4ChecksumOk(this.buf, this.off, this.len, src, dst);
  }
  /** True if the checksum verifies over IPv6 with the addresses at `addrs[srcOff..]`, `addrs[dstOff..]`. */
  checksumOk6(addrs: Uint8Array, srcOff: number, dstOff: number): boolean {
    return tcp6ChecksumOk(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
  /** Recomputes and stores the checksum for IPv4. */
  fillChecksum4(src: number, dst: number): void {
    tcp4ChecksumFill(this.buf, this.off, this.len, src, dst);
  }
  /** Recomputes and stores the checksum for IPv6. */
  fillChecksum6(addrs: Uint8Array, srcOff: number, dstOff: number): void {
    tcp6ChecksumFill(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
}

/** Fields of a TCP segment header, options included. */
export interface TcpRepr {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Sequence number: signed 32-bit form when parsed (see `seq.ts`), either form to write. */
  seq: number;
  /** Acknowledgment number, in the same form. */
  ack: number;
  /** Flags byte ({@linkcode TcpFlag} bits). */
  flags: number;
  /** Window as on the wire (already scaled down). */
  window: number;
  /** Urgent pointer. */
  urgent: number;
  /** Options to write / as parsed. */
  options: TcpOptions;
  /** Bytes of payload after the header (in place in the buffer). */
  payloadLen: number;
}

/** A zeroed {@linkcode TcpRepr} with no options. */
export function tcpReprNew(): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    urgent: 0,
    options: new TcpOptions(),
    payloadLen: 0,
  };
}

/**
 * Reads a wrapped segment into `out`, options included. Refuses port 0 and a
 * SYN together with FIN or RST ({@linkcode WireError.Malformed}) and bad
 * options ({@linkcode WireError.BadOption}). The checksum needs the IP
 * addresses: verify it first with {@linkcode TcpPacket.checksumOk4} or
 * {@linkcode TcpPacket.checksumOk6}.
 */
export function tcpParse(pkt: TcpPacket, out: TcpRepr = tcpReprNew()): TcpRepr | WireError {
  const flags = pkt.flags;
  if (pkt.srcPort === 0 || pkt.dstPort === 0) return WireError.Malformed;
  if ((flags & TcpFlag.Syn) !== 0 && (flags & (TcpFlag.Fin | TcpFlag.Rst)) !== 0) {
    return WireError.Malformed;
  }
  const err = pkt.parseOptions(out.options);
  if (err !== 0) return err;
  out.srcPort = pkt.srcPort;
  out.dstPort = pkt.dstPort;
  out.seq = pkt.seq;
  out.ack = pkt.ack;
  out.flags = flags;
  out.window = pkt.window;
  out.urgent = pkt.urgent;
  out.payloadLen = pkt.payloadLen;
  return out;
}

// SACK blocks that fit, as computed by the last `optionsLen` call; a module
// variable instead of a returned object keeps `tcpEmit` allocation-free.
let fittingSackBlocks = 0;

// Bytes of options the builder writes for `o`; sets `fittingSackBlocks`.
function optionsLen(o: TcpOptions): number {
  let len = 0;
  if (o.mss > 0) len += OPT_MSS_LEN;
  if (o.tsPresent) len += 2 + OPT_TS_LEN; // SACK-permitted or NOP NOP, then timestamps
  else if (o.sackPermitted) len += 2 + OPT_SACKP_LEN; // NOP NOP SACK-permitted
  if (o.wscale >= 0) len += 1 + OPT_WSCALE_LEN; // NOP window scale
  fittingSackBlocks = 0;
  if (o.sackCount > 0) {
    fittingSackBlocks = Math.max(
      0,
      Math.min(
        o.sackCount,
        TCP_MAX_SACK_BLOCKS,
        Math.floor((MAX_OPTIONS_LEN - len - 4) / OPT_SACK_BLOCK_LEN),
      ),
    );
    // NOP NOP kind length, then the blocks
    if (fittingSackBlocks > 0) len += 4 + OPT_SACK_BLOCK_LEN * fittingSackBlocks;
  }
  return len;
}

/** Offset of the checksum in a TCP header (where offload fills it in). */
export const TCP_CHECKSUM_OFFSET = 16;

/** Header length {@linkcode tcpEmit} writes for `r` (20 + options, a multiple of 4). */
export function tcpHeaderLen(r: TcpRepr): number {
  return TCP_HEADER_LEN + optionsLen(r.options);
}

/**
 * Writes the TCP header of `r`, options included, at `buf[off..]` and returns
 * its length ({@linkcode tcpHeaderLen}). With `pseudoSum` (`checksumPseudo4`
 * or `checksumPseudo6` for the segment length, header + `r.payloadLen`) the
 * checksum is filled over the header and the payload that must already follow
 * it; without, it is left 0.
 */
export function tcpEmit(buf: Uint8Array, off: number, r: TcpRepr, pseudoSum?: number): number {
  const o = r.options;
  const hdrLen = TCP_HEADER_LEN + optionsLen(o);
  const sackBlocks = fittingSackBlocks;
  emitSpace(buf, off, hdrLen + r.payloadLen, "tcpEmit");
  set16(buf, off + F.srcPort, r.srcPort);
  set16(buf, off + F.dstPort, r.dstPort);
  set32(buf, off + F.seq, r.seq);
  set32(buf, off + F.ack, r.ack);
  buf[off + F.dataOffset] = (hdrLen / 4) << 4;
  buf[off + F.flags] = r.flags;
  set16(buf, off + F.window, r.window);
  set16(buf, off + F.checksum, 0);
  set16(buf, off + F.urgent, r.urgent);
  let p = off + F.options;
  if (o.mss > 0) {
    buf[p] = TcpOptKind.Mss;
    buf[p + 1] = OPT_MSS_LEN;
    set16(buf, p + 2, o.mss);
    p += OPT_MSS_LEN;
  }
  if (o.tsPresent) {
    if (o.sackPermitted) {
      buf[p] = TcpOptKind.SackPermitted;
      buf[p + 1] = OPT_SACKP_LEN;
    } else {
      buf[p] = TcpOptKind.Nop;
      buf[p + 1] = TcpOptKind.Nop;
    }
    buf[p + 2] = TcpOptKind.Timestamp;
    buf[p + 3] = OPT_TS_LEN;
    set32(buf, p + 4, o.tsVal);
    set32(buf, p + 8, o.tsEcr);
    p += 2 + OPT_TS_LEN;
  } else if (o.sackPermitted) {
    buf[p] = TcpOptKind.Nop;
    buf[p + 1] = TcpOptKind.Nop;
    buf[p + 2] = TcpOptKind.SackPermitted;
    buf[p + 3] = OPT_SACKP_LEN;
    p += 2 + OPT_SACKP_LEN;
  }
  if (o.wscale >= 0) {
    buf[p] = TcpOptKind.Nop;
    buf[p + 1] = TcpOptKind.WindowScale;
    buf[p + 2] = OPT_WSCALE_LEN;
    buf[p + 3] = o.wscale;
    p += 1 + OPT_WSCALE_LEN;
  }
  if (sackBlocks > 0) {
    buf[p] = TcpOptKind.Nop;
    buf[p + 1] = TcpOptKind.Nop;
    buf[p + 2] = TcpOptKind.Sack;
    buf[p + 3] = 2 + OPT_SACK_BLOCK_LEN * sackBlocks;
    p += 4;
    for (let b = 0; b < sackBlocks; b++) {
      set32(buf, p, o.sackBlocks[2 * b]);
      set32(buf, p + 4, o.sackBlocks[2 * b + 1]);
      p += OPT_SACK_BLOCK_LEN;
    }
  }
  if (pseudoSum !== undefined) {
    checksumFill(buf, off, hdrLen + r.payloadLen, off + F.checksum, pseudoSum);
  }
  return hdrLen;
}
