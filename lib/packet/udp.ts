/**
 * UDP datagrams (RFC 768).
 *
 * `wrap` is given the bytes the IP layer says belong to UDP and checks the
 * UDP length field against them: at least 8, at most what is there. `len` is
 * clipped to the length field, so trailing bytes the IP layer carried are not
 * payload. Checksums are verified and filled with the IP addresses; a zero
 * checksum means "none" over IPv4 and is invalid over IPv6 (RFC 8200 §8.1),
 * and a computed zero is sent as 0xffff (RFC 768).
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import {
  checksumAdd,
  checksumFinish,
  udp4ChecksumFill,
  udp4ChecksumOk,
  udp6ChecksumFill,
  udp6ChecksumOk,
} from "./checksum.ts";
import { emitSpace, EMPTY_BYTES, get16, set16, WireError } from "./wire.ts";

// RFC 768, User Datagram Header Format:
//  0      7 8     15 16    23 24    31
// +--------+--------+--------+--------+
// |     Source      |   Destination   |  0
// |      Port       |      Port       |
// +--------+--------+--------+--------+
// |                 |                 |  4
// |     Length      |    Checksum     |
// +--------+--------+--------+--------+
// |          data octets ...             8
const F = { srcPort: 0, dstPort: 2, length: 4, checksum: 6, payload: 8 } as const;

/** Length of the UDP header. */
export const UDP_HEADER_LEN: number = F.payload;

/** Reusable view of a UDP datagram; see `wire.ts` for the contract. */
export class UdpPacket {
  /** Buffer holding the datagram. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the datagram: the length field, after a successful wrap. */
  len = 0;

  /**
   * Points the view at the UDP datagram at `buf[off..]` with `len` bytes
   * available, and clips `len` to the length field. On error the view is
   * unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < UDP_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    const length = get16(buf, off + F.length);
    if (length < UDP_HEADER_LEN) return WireError.BadLength;
    if (length > len) return WireError.Truncated;
    this.buf = buf;
    this.off = off;
    this.len = length;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): UdpPacket | WireError {
    const p = new UdpPacket();
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
  /** Length field. Setting it does not change {@linkcode len}. */
  get length(): number {
    return get16(this.buf, this.off + F.length);
  }
  set length(v: number) {
    set16(this.buf, this.off + F.length, v);
  }
  /** Checksum field (0: none, IPv4 only). */
  get checksum(): number {
    return get16(this.buf, this.off + F.checksum);
  }
  set checksum(v: number) {
    set16(this.buf, this.off + F.checksum, v);
  }
  /** Offset of the payload in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + F.payload;
  }
  /** Bytes of payload. */
  get payloadLen(): number {
    return this.len - F.payload;
  }
  /** The payload as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.off + F.payload, this.off + this.len);
  }
  /** True if the checksum verifies over IPv4, or is 0 (none). */
  checksumOk4(src: number, dst: number): boolean {
    return udp4ChecksumOk(this.buf, this.off, this.len, src, dst);
  }
  /** True if the checksum verifies over IPv6 (0 is invalid there). */
  checksumOk6(addrs: Uint8Array, srcOff: number, dstOff: number): boolean {
    return udp6ChecksumOk(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
  /** Recomputes and stores the checksum for IPv4. */
  fillChecksum4(src: number, dst: number): void {
    udp4ChecksumFill(this.buf, this.off, this.len, src, dst);
  }
  /** Recomputes and stores the checksum for IPv6. */
  fillChecksum6(addrs: Uint8Array, srcOff: number, dstOff: number): void {
    udp6ChecksumFill(this.buf, this.off, this.len, addrs, srcOff, dstOff);
  }
}

/** Fields of a UDP header. */
export interface UdpRepr {
  /** Source port. */
  srcPort: number;
  /** Destination port. */
  dstPort: number;
  /** Bytes of payload after the header (in place in the buffer). */
  payloadLen: number;
}

/** A zeroed {@linkcode UdpRepr}. */
export function udpReprNew(): UdpRepr {
  return { srcPort: 0, dstPort: 0, payloadLen: 0 };
}

/**
 * Reads a wrapped datagram into `out`. Refuses destination port 0
 * ({@linkcode WireError.Malformed}). The checksum needs the IP addresses:
 * verify it first with {@linkcode UdpPacket.checksumOk4} or
 * {@linkcode UdpPacket.checksumOk6}.
 */
export function udpParse(pkt: UdpPacket, out: UdpRepr = udpReprNew()): UdpRepr | WireError {
  if (pkt.dstPort === 0) return WireError.Malformed;
  out.srcPort = pkt.srcPort;
  out.dstPort = pkt.dstPort;
  out.payloadLen = pkt.payloadLen;
  return out;
}

/** Offset of the checksum in a UDP header (where offload fills it in). */
export const UDP_CHECKSUM_OFFSET = 6;

/**
 * Writes the UDP header of `r` at `buf[off..]` and returns 8. With
 * `pseudoSum` (`checksumPseudo4`/`checksumPseudo6` for length 8 +
 * `r.payloadLen`) the checksum is filled over the header and the payload that
 * must already follow it, a computed 0 sent as 0xffff; without, it is left 0
 * (over IPv4 that means "no checksum").
 */
export function udpEmit(buf: Uint8Array, off: number, r: UdpRepr, pseudoSum?: number): number {
  const len = UDP_HEADER_LEN + r.payloadLen;
  emitSpace(buf, off, len, "udpEmit");
  set16(buf, off + F.srcPort, r.srcPort);
  set16(buf, off + F.dstPort, r.dstPort);
  set16(buf, off + F.length, len);
  set16(buf, off + F.checksum, 0);
  if (pseudoSum !== undefined) {
    const c = checksumFinish(checksumAdd(pseudoSum, buf, off, len));
    set16(buf, off + F.checksum, c === 0 ? 0xffff : c);
  }
  return UDP_HEADER_LEN;
}
