/**
 * ICMP for IPv4 (RFC 792).
 *
 * Every ICMPv4 message starts with the same 8 bytes: type, code, checksum and
 * a 4-byte "rest of header" whose meaning depends on the type (echo: ident
 * and sequence; fragmentation needed: next-hop MTU, RFC 1191; parameter
 * problem: pointer). The view exposes the raw word and the per-type
 * readings; the repr carries the raw word, built with
 * {@linkcode icmpRestEcho}, {@linkcode icmpRestMtu} or
 * {@linkcode icmpRestPointer}.
 *
 * ICMPv4 has no length field and no pseudo-header: the message is the whole
 * IPv4 payload, so `wrap` is given that length and the checksum covers it.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { icmp4ChecksumFill, icmp4ChecksumOk } from "./checksum.ts";
import { emitSpace, EMPTY_BYTES, get16, get32, set16, set32, WireError } from "./wire.ts";

// RFC 792, common layout of all messages:
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |     Type      |     Code      |          Checksum             |  0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  rest of header: echo ident + seq / unused + MTU / pointer    |  4
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |  data: echo payload, or the invoking IP header + 8 bytes      |  8
const F = { type: 0, code: 1, checksum: 2, rest: 4, ident: 4, seq: 6, mtu: 6, data: 8 } as const;

/** Length of the ICMPv4 header (type, code, checksum, rest of header). */
export const ICMP_HEADER_LEN: number = F.data;

/** ICMPv4 message types tapir deals with. */
export const IcmpType = {
  EchoReply: 0,
  DestUnreachable: 3,
  Redirect: 5,
  EchoRequest: 8,
  TimeExceeded: 11,
  ParamProblem: 12,
} as const;
/** One of the {@linkcode IcmpType} values. */
export type IcmpType = (typeof IcmpType)[keyof typeof IcmpType];

/** Codes of {@linkcode IcmpType.DestUnreachable} (RFC 792, RFC 1122, RFC 1812). */
export const IcmpUnreachCode = {
  Net: 0,
  Host: 1,
  Protocol: 2,
  Port: 3,
  FragNeeded: 4,
  AdminProhibited: 13,
} as const;
/** One of the {@linkcode IcmpUnreachCode} values. */
export type IcmpUnreachCode = (typeof IcmpUnreachCode)[keyof typeof IcmpUnreachCode];

/** Rest-of-header word for an echo request or reply. */
export function icmpRestEcho(ident: number, seq: number): number {
  return (((ident & 0xffff) << 16) | (seq & 0xffff)) >>> 0;
}

/** Rest-of-header word for "fragmentation needed" with a next-hop MTU (RFC 1191). */
export function icmpRestMtu(mtu: number): number {
  return mtu & 0xffff;
}

/** Rest-of-header word for "parameter problem" pointing at byte `pointer`. */
export function icmpRestPointer(pointer: number): number {
  return ((pointer & 0xff) << 24) >>> 0;
}

/** Reusable view of an ICMPv4 message; see `wire.ts` for the contract. */
export class IcmpPacket {
  /** Buffer holding the message. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the message (the IPv4 payload length). */
  len = 0;

  /**
   * Points the view at the `len`-byte ICMPv4 message at `buf[off..]`. Refuses
   * messages shorter than the 8-byte header. On error the view is unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < ICMP_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): IcmpPacket | WireError {
    const p = new IcmpPacket();
    const err = p.wrap(buf, off, len);
    return err === 0 ? p : err;
  }

  /** Message type ({@linkcode IcmpType}). */
  get type(): number {
    return this.buf[this.off + F.type];
  }
  set type(v: number) {
    this.buf[this.off + F.type] = v;
  }
  /** Message code. */
  get code(): number {
    return this.buf[this.off + F.code];
  }
  set code(v: number) {
    this.buf[this.off + F.code] = v;
  }
  /** Checksum field. */
  get checksum(): number {
    return get16(this.buf, this.off + F.checksum);
  }
  set checksum(v: number) {
    set16(this.buf, this.off + F.checksum, v);
  }
  /** The raw rest-of-header word. */
  get rest(): number {
    return get32(this.buf, this.off + F.rest);
  }
  set rest(v: number) {
    set32(this.buf, this.off + F.rest, v);
  }
  /** Echo identifier (echo request/reply). */
  get ident(): number {
    return get16(this.buf, this.off + F.ident);
  }
  set ident(v: number) {
    set16(this.buf, this.off + F.ident, v);
  }
  /** Echo sequence number (echo request/reply). */
  get seq(): number {
    return get16(this.buf, this.off + F.seq);
  }
  set seq(v: number) {
    set16(this.buf, this.off + F.seq, v);
  }
  /** Next-hop MTU (destination unreachable, fragmentation needed). */
  get mtu(): number {
    return get16(this.buf, this.off + F.mtu);
  }
  /** Pointer to the offending byte (parameter problem). */
  get pointer(): number {
    return this.buf[this.off + F.rest];
  }
  /** True if the checksum over the whole message verifies. */
  checksumOk(): boolean {
    return icmp4ChecksumOk(this.buf, this.off, this.len);
  }
  /** Recomputes and stores the checksum over the whole message. */
  fillChecksum(): void {
    icmp4ChecksumFill(this.buf, this.off, this.len);
  }
  /** Offset of the data after the 8-byte header in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + F.data;
  }
  /** Bytes of data after the 8-byte header. */
  get payloadLen(): number {
    return this.len - F.data;
  }
  /** The data as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.off + F.data, this.off + this.len);
  }
}

/** Fields of an ICMPv4 message header. */
export interface IcmpRepr {
  /** Message type ({@linkcode IcmpType}). */
  type: number;
  /** Message code. */
  code: number;
  /** Rest-of-header word (see {@linkcode icmpRestEcho} and friends). */
  rest: number;
  /** Bytes of data after the 8-byte header (in place in the buffer). */
  payloadLen: number;
}

/** A zeroed {@linkcode IcmpRepr}. */
export function icmpReprNew(): IcmpRepr {
  return { type: 0, code: 0, rest: 0, payloadLen: 0 };
}

/**
 * Reads a wrapped message into `out`, verifying its checksum
 * ({@linkcode WireError.BadChecksum}).
 */
export function icmpParse(pkt: IcmpPacket, out: IcmpRepr = icmpReprNew()): IcmpRepr | WireError {
  if (!pkt.checksumOk()) return WireError.BadChecksum;
  out.type = pkt.type;
  out.code = pkt.code;
  out.rest = pkt.rest;
  out.payloadLen = pkt.payloadLen;
  return out;
}

/**
 * Writes the 8-byte ICMPv4 header for `r` at `buf[off..]` and fills the
 * checksum over it and the `r.payloadLen` bytes of data that must already
 * follow it. Returns 8.
 */
export function icmpEmit(buf: Uint8Array, off: number, r: IcmpRepr): number {
  emitSpace(buf, off, ICMP_HEADER_LEN + r.payloadLen, "icmpEmit");
  buf[off + F.type] = r.type;
  buf[off + F.code] = r.code;
  set32(buf, off + F.rest, r.rest);
  icmp4ChecksumFill(buf, off, ICMP_HEADER_LEN + r.payloadLen);
  return ICMP_HEADER_LEN;
}
