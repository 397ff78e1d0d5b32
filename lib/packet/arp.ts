/**
 * ARP for IPv4 over Ethernet (RFC 826).
 *
 * Only the Ethernet/IPv4 combination (hardware type 1, protocol 0x0800,
 * address lengths 6 and 4) is accepted; anything else is
 * {@linkcode WireError.Unsupported}. With the lengths fixed, every field has a
 * fixed offset and the packet is exactly 28 bytes; the view clips `len` to
 * that so Ethernet padding is not part of it.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { ETH_ADDR_LEN } from "./eth.ts";
import {
  bytesCopy,
  emitSpace,
  EMPTY_BYTES,
  get16,
  get32,
  set16,
  set32,
  WireError,
} from "./wire.ts";

// RFC 826 packet, Ethernet/IPv4 sizes:
//  0       2       4    5    6       8              14       18             24       28
// +-------+-------+----+----+-------+--------------+--------+--------------+--------+
// | htype | ptype |hlen|plen| oper  | sender MAC   | sndr IP| target MAC   | tgt IP |
// +-------+-------+----+----+-------+--------------+--------+--------------+--------+
const F = {
  htype: 0,
  ptype: 2,
  hlen: 4,
  plen: 5,
  oper: 6,
  sha: 8,
  spa: 14,
  tha: 18,
  tpa: 24,
  end: 28,
} as const;

/** Length of an Ethernet/IPv4 ARP packet. */
export const ARP_LEN: number = F.end;
/** ARP hardware type for Ethernet. */
export const ARP_HTYPE_ETHERNET = 1;
/** ARP protocol type for IPv4 (the IPv4 EtherType). */
export const ARP_PTYPE_IPV4 = 0x0800;

/** ARP operation codes. */
export const ArpOp = { Request: 1, Reply: 2 } as const;
/** One of the {@linkcode ArpOp} values. */
export type ArpOp = (typeof ArpOp)[keyof typeof ArpOp];

/** Reusable view of an Ethernet/IPv4 ARP packet; see `wire.ts` for the contract. */
export class ArpPacket {
  /** Buffer holding the packet. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the packet: always {@linkcode ARP_LEN} after a successful wrap. */
  len = 0;

  /**
   * Points the view at the ARP packet at `buf[off..]` (`len` bytes available).
   * Refuses short packets and non-Ethernet/IPv4 ones. On error the view is
   * unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < ARP_LEN || off + len > buf.length) return WireError.Truncated;
    if (
      get16(buf, off + F.htype) !== ARP_HTYPE_ETHERNET ||
      get16(buf, off + F.ptype) !== ARP_PTYPE_IPV4 ||
      buf[off + F.hlen] !== ETH_ADDR_LEN || buf[off + F.plen] !== 4
    ) return WireError.Unsupported;
    this.buf = buf;
    this.off = off;
    this.len = ARP_LEN;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): ArpPacket | WireError {
    const p = new ArpPacket();
    const err = p.wrap(buf, off, len);
    return err === 0 ? p : err;
  }

  /** Operation ({@linkcode ArpOp}). */
  get op(): number {
    return get16(this.buf, this.off + F.oper);
  }
  set op(v: number) {
    set16(this.buf, this.off + F.oper, v);
  }
  /** Offset of the sender hardware address in {@linkcode buf}. */
  get shaOffset(): number {
    return this.off + F.sha;
  }
  /** Sender IPv4 address. */
  get spa(): number {
    return get32(this.buf, this.off + F.spa);
  }
  set spa(v: number) {
    set32(this.buf, this.off + F.spa, v);
  }
  /** Offset of the target hardware address in {@linkcode buf}. */
  get thaOffset(): number {
    return this.off + F.tha;
  }
  /** Target IPv4 address. */
  get tpa(): number {
    return get32(this.buf, this.off + F.tpa);
  }
  set tpa(v: number) {
    set32(this.buf, this.off + F.tpa, v);
  }
  /** Copies the sender hardware address into `out[outOff..]`. */
  copySha(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.sha, ETH_ADDR_LEN);
  }
  /** Copies the target hardware address into `out[outOff..]`. */
  copyTha(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.tha, ETH_ADDR_LEN);
  }
}

/** Fields of an Ethernet/IPv4 ARP packet. MACs are 6-byte arrays the repr owns. */
export interface ArpRepr {
  /** Operation ({@linkcode ArpOp}). */
  op: number;
  /** Sender MAC. */
  sha: Uint8Array;
  /** Sender IPv4 address. */
  spa: number;
  /** Target MAC (zero in a request). */
  tha: Uint8Array;
  /** Target IPv4 address. */
  tpa: number;
}

/** A zeroed {@linkcode ArpRepr} with its own MAC arrays. */
export function arpReprNew(): ArpRepr {
  return {
    op: 0,
    sha: new Uint8Array(ETH_ADDR_LEN),
    spa: 0,
    tha: new Uint8Array(ETH_ADDR_LEN),
    tpa: 0,
  };
}

/**
 * Reads a wrapped packet into `out`. Refuses operations other than request
 * and reply ({@linkcode WireError.Unsupported}).
 */
export function arpParse(pkt: ArpPacket, out: ArpRepr = arpReprNew()): ArpRepr | WireError {
  const op = pkt.op;
  if (op !== ArpOp.Request && op !== ArpOp.Reply) return WireError.Unsupported;
  out.op = op;
  pkt.copySha(out.sha);
  out.spa = pkt.spa;
  pkt.copyTha(out.tha);
  out.tpa = pkt.tpa;
  return out;
}

/** Writes the ARP packet `r` at `buf[off..]`; returns {@linkcode ARP_LEN}. */
export function arpEmit(buf: Uint8Array, off: number, r: ArpRepr): number {
  emitSpace(buf, off, ARP_LEN, "arpEmit");
  set16(buf, off + F.htype, ARP_HTYPE_ETHERNET);
  set16(buf, off + F.ptype, ARP_PTYPE_IPV4);
  buf[off + F.hlen] = ETH_ADDR_LEN;
  buf[off + F.plen] = 4;
  set16(buf, off + F.oper, r.op);
  bytesCopy(buf, off + F.sha, r.sha, 0, ETH_ADDR_LEN);
  set32(buf, off + F.spa, r.spa);
  bytesCopy(buf, off + F.tha, r.tha, 0, ETH_ADDR_LEN);
  set32(buf, off + F.tpa, r.tpa);
  return ARP_LEN;
}
