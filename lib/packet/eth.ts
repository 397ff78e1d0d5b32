/**
 * Ethernet II frames (IEEE 802.3 clause 3, without preamble and FCS).
 *
 * The view accepts any EtherType except the 802.1Q and 802.1ad tag types,
 * which it refuses with {@linkcode WireError.VlanTagged}: tapir's links are
 * untagged, so a tagged frame is a guest misconfiguration worth counting, and
 * refusing it here keeps the payload offset fixed at 14.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { bytesCopy, bytesEqual, emitSpace, EMPTY_BYTES, get16, set16, WireError } from "./wire.ts";

// IEEE 802.3 MAC frame, after the SFD:
//  0                   6                  12       14
// +-------------------+-------------------+--------+-----------
// | destination (6)   | source (6)        | type   | payload...
// +-------------------+-------------------+--------+-----------
const F = { dst: 0, src: 6, ethertype: 12, payload: 14 } as const;

/** Length of the Ethernet header. */
export const ETH_HEADER_LEN: number = F.payload;
/** Length of a MAC address. */
export const ETH_ADDR_LEN = 6;
/** Shortest frame on the wire without FCS; shorter frames are padded to it. */
export const ETH_MIN_FRAME_LEN = 60;

/** EtherType values tapir knows (IEEE registry). Others are kept as numbers. */
export const EtherType = {
  Ipv4: 0x0800,
  Arp: 0x0806,
  Vlan: 0x8100,
  Ipv6: 0x86dd,
  QinQ: 0x88a8,
} as const;
/** One of the {@linkcode EtherType} values. */
export type EtherType = (typeof EtherType)[keyof typeof EtherType];

/** The broadcast address ff:ff:ff:ff:ff:ff. Shared: never write into it. */
export const ETH_BROADCAST: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

/** Reusable view of an Ethernet frame; see `wire.ts` for the contract. */
export class EthFrame {
  /** Buffer holding the frame. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the first header byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the frame, header included (padding included: Ethernet has no length). */
  len = 0;

  /**
   * Points the view at `len` bytes of `buf` from `off`. Refuses ranges
   * outside `buf`, frames shorter than the header, and VLAN-tagged frames.
   * On error the view is unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < ETH_HEADER_LEN || off + len > buf.length) return WireError.Truncated;
    const type = get16(buf, off + F.ethertype);
    if (type === EtherType.Vlan || type === EtherType.QinQ) return WireError.VlanTagged;
    this.buf = buf;
    this.off = off;
    this.len = len;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(buf: Uint8Array, off = 0, len: number = buf.length - off): EthFrame | WireError {
    const f = new EthFrame();
    const err = f.wrap(buf, off, len);
    return err === 0 ? f : err;
  }

  /** Offset of the destination MAC in {@linkcode buf}. */
  get dstOffset(): number {
    return this.off + F.dst;
  }
  /** Offset of the source MAC in {@linkcode buf}. */
  get srcOffset(): number {
    return this.off + F.src;
  }
  /** EtherType. */
  get ethertype(): number {
    return get16(this.buf, this.off + F.ethertype);
  }
  set ethertype(v: number) {
    set16(this.buf, this.off + F.ethertype, v);
  }
  /** True if the destination is a group (multicast or broadcast) address. */
  get dstIsMulticast(): boolean {
    return (this.buf[this.off + F.dst] & 1) !== 0;
  }
  /** True if the destination is ff:ff:ff:ff:ff:ff. */
  get dstIsBroadcast(): boolean {
    return bytesEqual(this.buf, this.off + F.dst, ETH_BROADCAST, 0, ETH_ADDR_LEN);
  }
  /** Copies the destination MAC into `out[outOff..]`. */
  copyDst(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.dst, ETH_ADDR_LEN);
  }
  /** Copies the source MAC into `out[outOff..]`. */
  copySrc(out: Uint8Array, outOff = 0): void {
    bytesCopy(out, outOff, this.buf, this.off + F.src, ETH_ADDR_LEN);
  }
  /** Overwrites the destination MAC from `mac[macOff..]`. */
  setDst(mac: Uint8Array, macOff = 0): void {
    bytesCopy(this.buf, this.off + F.dst, mac, macOff, ETH_ADDR_LEN);
  }
  /** Overwrites the source MAC from `mac[macOff..]`. */
  setSrc(mac: Uint8Array, macOff = 0): void {
    bytesCopy(this.buf, this.off + F.src, mac, macOff, ETH_ADDR_LEN);
  }
  /** Offset of the payload in {@linkcode buf}. */
  get payloadOffset(): number {
    return this.off + F.payload;
  }
  /** Bytes of payload (including any padding). */
  get payloadLen(): number {
    return this.len - F.payload;
  }
  /** The payload as a subarray (allocates a view object). */
  payload(): Uint8Array {
    return this.buf.subarray(this.off + F.payload, this.off + this.len);
  }
}

/**
 * Writes an Ethernet header at `buf[off..]` and returns its length (14).
 * `dst` and `src` are 6-byte MACs read from offset 0.
 */
export function ethEmit(
  buf: Uint8Array,
  off: number,
  dst: Uint8Array,
  src: Uint8Array,
  ethertype: number,
): number {
  emitSpace(buf, off, ETH_HEADER_LEN, "ethEmit");
  bytesCopy(buf, off + F.dst, dst, 0, ETH_ADDR_LEN);
  bytesCopy(buf, off + F.src, src, 0, ETH_ADDR_LEN);
  set16(buf, off + F.ethertype, ethertype);
  return ETH_HEADER_LEN;
}
