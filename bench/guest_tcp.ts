/**
 * The TCP end of the benchmark's guest programs (stream_guest.ts,
 * vhost_guest.ts): one IPv4 connection from the guest to the gateway, its
 * segments written as Ethernet frames into a buffer the program gives, and
 * tapir's frames taken in to track what tapir acknowledged, its window, and
 * the payload it sent in order. No retransmission and no reordering: the
 * benchmark needs a lossless path, and a stall fails it.
 *
 * @module
 */

import { seqAdd, seqLt } from "../lib/l4/seq.ts";
import { TAPIR_MAC } from "../lib/net.ts";
import { checksumFold, checksumPseudo4, tcp4ChecksumFill } from "../lib/packet/checksum.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType, EthFrame } from "../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../lib/packet/ip4.ts";
import {
  tcpEmit,
  TcpFlag,
  tcpHeaderLen,
  TcpOptions,
  TcpPacket,
  tcpReprNew,
} from "../lib/packet/tcp.ts";
import { IpProto, set16 } from "../lib/packet/wire.ts";

/** Payload per segment: MTU 1500 less IPv4 and TCP headers. */
export const GUEST_MSS = 1460;
/** Bytes of Ethernet, IPv4 and TCP headers without options. */
export const GUEST_HEADERS = ETH_HEADER_LEN + IP4_HEADER_LEN + 20;
const GUEST_MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
const GUEST_PORT = 40000;
/** Our initial sequence number. */
export const GUEST_ISN = 0x1000_0000;
/** Our receive window: 65535 << 7, about 8 MiB. */
const WINDOW = 65535;
const WSCALE = 7;

/** One connection's state on the guest's side; see the module comment. */
export class GuestTcp {
  /** Next byte expected from tapir. */
  rcvNxt = 0;
  /** Highest acknowledgement from tapir, and the right edge of its window. */
  acked: number = GUEST_ISN;
  wndRight: number = GUEST_ISN;
  /** tapir's SYN-ACK arrived. */
  synAcked = false;
  /** Payload taken in order, and tapir's FIN seen after it. */
  received = 0;
  finSeen = false;
  /** Set when something from tapir wants an ACK (its SYN-ACK, data, its FIN). */
  ackDue = false;

  readonly #repr = tcpReprNew();
  readonly #ip = ip4ReprNew();
  readonly #eth = new EthFrame();
  readonly #ipv = new Ip4Packet();
  readonly #seg = new TcpPacket();
  readonly #opts = new TcpOptions();
  #wscale = 0;

  constructor(readonly guest: number, readonly gateway: number, readonly port: number) {}

  /**
   * Writes a segment at `out[off..]` as an Ethernet frame and returns its
   * length. Its payload bytes are left as they are (the callers send
   * zeros). `partial`: the TCP checksum is left to the device (a guest
   * with checksum offload: the field holds the pseudo-header's sum), else it
   * is filled in.
   */
  emit(
    out: Uint8Array,
    off: number,
    seq: number,
    flags: number,
    len: number,
    partial = false,
  ): number {
    const r = this.#repr;
    r.srcPort = GUEST_PORT;
    r.dstPort = this.port;
    r.seq = seq;
    r.ack = flags & TcpFlag.Ack ? this.rcvNxt : 0;
    r.flags = flags;
    r.window = WINDOW;
    r.payloadLen = len;
    r.options.reset();
    if (flags & TcpFlag.Syn) {
      r.options.mss = GUEST_MSS;
      r.options.wscale = WSCALE;
    }
    const segLen = tcpHeaderLen(r) + len;
    let p = off + ethEmit(out, off, TAPIR_MAC, GUEST_MAC, EtherType.Ipv4);
    const ip = this.#ip;
    ip.src = this.guest;
    ip.dst = this.gateway;
    ip.proto = IpProto.Tcp;
    ip.dontFragment = true;
    ip.payloadLen = segLen;
    p += ip4Emit(out, p, ip);
    tcpEmit(out, p, r);
    if (partial) {
      // As a guest's kernel leaves it: the pseudo-header's sum, for the device to complete.
      set16(
        out,
        p + 16,
        checksumFold(checksumPseudo4(this.guest, this.gateway, IpProto.Tcp, segLen)),
      );
    } else {
      tcp4ChecksumFill(out, p, segLen, this.guest, this.gateway);
    }
    return ETH_HEADER_LEN + IP4_HEADER_LEN + segLen;
  }

  /**
   * Takes in a frame from tapir at `buf[off..off+len)`; returns true if it
   * belonged to this connection. Throws on a RST.
   */
  take(buf: Uint8Array, off: number, len: number): boolean {
    const eth = this.#eth;
    const ipv = this.#ipv;
    const seg = this.#seg;
    if (eth.wrap(buf, off, len) !== 0 || eth.ethertype !== EtherType.Ipv4) return false;
    if (ipv.wrap(buf, eth.payloadOffset, eth.payloadLen) !== 0) return false;
    if (ipv.proto !== IpProto.Tcp || seg.wrap(buf, ipv.payloadOffset, ipv.payloadLen) !== 0) {
      return false;
    }
    if (seg.dstPort !== GUEST_PORT) return false;
    if (seg.flags & TcpFlag.Rst) throw new Error("tapir reset the connection");
    const syn = (seg.flags & TcpFlag.Syn) !== 0;
    if (syn) {
      seg.parseOptions(this.#opts);
      this.#wscale = Math.max(0, this.#opts.wscale);
      this.rcvNxt = seqAdd(seg.seq, 1);
      this.synAcked = true;
      this.ackDue = true;
    }
    if (seg.flags & TcpFlag.Ack && !seqLt(seg.ack, this.acked)) {
      this.acked = seg.ack;
      // The window of a SYN is never scaled.
      this.wndRight = seqAdd(seg.ack, seg.window * 2 ** (syn ? 0 : this.#wscale));
    }
    if (!syn && seg.seq === this.rcvNxt) {
      this.rcvNxt = seqAdd(this.rcvNxt, seg.payloadLen);
      this.received += seg.payloadLen;
      if (seg.payloadLen > 0) this.ackDue = true;
      if (seg.flags & TcpFlag.Fin) {
        this.rcvNxt = seqAdd(this.rcvNxt, 1);
        this.finSeen = true;
        this.ackDue = true;
      }
    }
    return true;
  }
}
