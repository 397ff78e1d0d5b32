/**
 * UDP translation between the guest's datagrams and host sockets.
 *
 * # Theory of operation
 *
 * A UDP "flow" is a pair of endpoints that exchange datagrams; it lives in
 * the flow table (type UDP) until it has been idle for its timeout
 * (`--udp-timeout`, 180 s by default; 10 s for DNS, whose exchanges are one
 * question and one answer).
 *
 * **Guest → host.** The first datagram from a guest (address, port) to a
 * destination (address, port) creates a flow: side 0 is the guest (TAP),
 * side 1 the host target — the destination, or host loopback for the
 * gateway, or the resolver for DNS to the `--dns-forward` address (see
 * `natFromTap4`). The flow gets its own socket, `connect`ed to the target, so
 * the kernel delivers only the target's replies to it and reports ICMP
 * errors about it (`IP_RECVERR`). Datagrams are sent from the frame buffers
 * they arrived in. Consecutive datagrams of one flow in a batch of guest
 * frames, all of one size but the last, which may be shorter, go in one
 * `sendmsg` with `UDP_SEGMENT` at the batch's end ({@linkcode Udp.drain}):
 * the kernel takes them through its stack once and cuts them apart at the
 * last moment, as it does for a local application using UDP GSO. A bulk
 * sender's batch is mostly such a run, so this is one send per batch instead
 * of one per datagram. A socket whose route cannot take the segment size
 * (a path MTU below it) refuses such a send; that flow then sends one
 * datagram at a time.
 *
 * **Host → guest.** When a flow's socket is readable, one `recvmmsg` reads
 * up to {@linkcode MAX_DGRAMS_PER_READ} datagrams straight into the payload
 * areas of frame slots, and the headers are written in front: from the
 * address and port the guest sent to, to the guest. ICMP errors from the
 * socket's error queue (`MSG_ERRQUEUE`) become ICMP errors to the guest about
 * a datagram of the flow — a port unreachable makes the guest's
 * `connect`ed socket see ECONNREFUSED, as it would on a real network.
 *
 * **Host → guest, first (`-u` forwarding).** A datagram to a forwarded host
 * port arrives on a shared listening socket ({@linkcode Udp.listen}). The
 * flow's side 0 is the host client, side 1 the guest at the target port,
 * seen from the client's address (the gateway for a loopback client). The
 * guest's replies go back through the listening socket to the client's
 * address.
 *
 * `-u auto` opens and closes listeners one port at a time at run time
 * ({@linkcode Udp.listenAuto}, {@linkcode Udp.closePort}). A listener's slot
 * is its epoll tag; a closed one's slot is reused by the next, and a late
 * event for it finds the slot empty. The flows of a closed listener send
 * through its socket, so they end with it: each is marked closed (nothing
 * more goes out on it) and freed by the flow table's deferred pass.
 *
 * Datagrams from the guest that do not fit in a socket's send buffer are
 * dropped and counted: UDP promises no delivery, and the guest's protocol
 * deals with loss.
 *
 * @module
 */

import { OutboundBind } from "./outbound.ts";
import { ipEqual, isIp6Loopback } from "../addr.ts";
import { FlowSide, flowSidx, type FlowTable, FlowType, Pif, sidxFlow } from "../flow/table.ts";
import { DNS_PORT, natFromTap4, natFromTap6, type PortFwd } from "../fwd.ts";
import { logDebug, logWarn } from "../log.ts";
import type { Loop } from "../loop.ts";
import { type GuestNet, ip4ToU32, u32ToIp4 } from "../net.ts";
import { IcmpType, IcmpUnreachCode } from "../packet/icmp.ts";
import { Icmp6Type } from "../packet/icmp6.ts";
import { IP4_HEADER_LEN, ip4Emit, Ip4Packet, ip4ReprNew } from "../packet/ip4.ts";
import { IP6_HEADER_LEN, ip6Emit, Ip6Packet, ip6ReprNew } from "../packet/ip6.ts";
import {
  UDP_CHECKSUM_OFFSET,
  UDP_HEADER_LEN,
  udpEmit,
  type UdpPacket,
  udpReprNew,
} from "../packet/udp.ts";
import { IpProto } from "../packet/wire.ts";
import * as sys from "../sys/mod.ts";
import { GsoType, PAYLOAD_IOV_MAX, TAP_HEADROOM, type TapSender } from "../tap/tap.ts";
import { type FrameTail, TAIL_MAX_PIECES } from "../tap/tail.ts";
import { type GuestHeaders, icmpErrorToGuest4, icmpErrorToGuest6, L4_OFF4, L4_OFF6 } from "./ip.ts";
import {
  guestFamilies,
  openAllListenPorts,
  openListenPorts,
  openWatchedListener,
  PortSockets,
  udpRcvbufSet,
} from "./listen.ts";

/** Most datagrams in one `UDP_SEGMENT` send (the kernel's limit, 64 before Linux 6.8). */
const RUN_MAX_DATAGRAMS = 64;
/** Most payload bytes in one: what a UDP length field can describe over IPv4. */
const RUN_MAX_BYTES = 65507;

/** Datagrams read by one `recvmmsg`. */
export const MAX_DGRAMS_PER_READ = 32;
/** Idle timeout of DNS flows. */
export const UDP_DNS_TIMEOUT_MS = 10_000;

/** Per-flow data of UDP flows. */
interface UdpFlow {
  /** The flow's index in the table. */
  readonly index: number;
  /** The flow's connected socket, or the shared listening socket (inbound). */
  readonly fd: number;
  readonly v6: boolean;
  /** Inbound (`-u`): `fd` is a listener shared with other flows; send to `peer`. */
  readonly inbound: boolean;
  /** Inbound: the listener `fd` belongs to (its flows end when it closes). */
  readonly listener: UdpListener | null;
  /** Inbound: the listener closed; the flow is freed at the end of the turn. */
  closed: boolean;
  /** Inbound: the client's socket address and its length. */
  readonly peer: Uint8Array | null;
  readonly peerLen: number;
  /** Side of the flow facing the guest. */
  readonly tapSide: 0 | 1;
  /** Addresses as the guest sees them: ours (source of our frames), then the guest's. */
  readonly addrs: Uint8Array;
  /** Where they start in `addrs` (0: the flow has its own). */
  readonly addrsOff: number;
  readonly src4: number;
  readonly dst4: number;
  /** Ports as the guest sees them: ours (source), the guest's. */
  readonly sport: number;
  readonly dport: number;
  readonly timeoutMs: number;
  lastMs: number;
  /** The socket took a `UDP_SEGMENT` send, or has not refused one yet. */
  segmentOk: boolean;
}

/** One forwarded port's listening socket (`-u`). */
interface UdpListener {
  readonly fd: number;
  readonly v6: boolean;
  readonly port: number;
  readonly target: number;
  /** Indices of the inbound flows using this socket. */
  readonly flows: Set<number>;
}

/** Counters of the UDP layer. */
export interface UdpStats {
  /** Flows opened from the guest. */
  outbound: number;
  /** Flows opened from the host (`-u`). */
  inbound: number;
  /** Datagrams sent to host sockets. */
  datagramsToHost: number;
  /** Of those, sent in one `UDP_SEGMENT` send with the datagram before them. */
  datagramsCoalesced: number;
  /** Flows whose route refused a `UDP_SEGMENT` send (they send one datagram at a time). */
  segmentRefused: number;
  /** Datagrams sent to the guest. */
  datagramsToGuest: number;
  /** Of those, sent in one UDP GSO frame with the datagram before them. */
  datagramsMerged: number;
  /** Guest datagrams for a flow already closed. */
  dropClosed: number;
  /** Guest datagrams the host socket refused (send failed). */
  dropSendFailed: number;
  /** Guest datagrams that found the flow table full (answered with "administratively prohibited"). */
  dropTableFull: number;
  /** Guest datagrams for which no socket could be opened. */
  dropNoSocket: number;
  /** Guest datagrams whose socket could not connect to the destination. */
  dropConnectFailed: number;
  /** Host datagrams too big for the guest's MTU (or truncated). */
  dropTooBig: number;
  /** Host datagrams on a listener with no flow to take them (table full). */
  dropNoFlow: number;
  /** Destinations refused (`--loopback-only`, no resolver). */
  refused: number;
  /** ICMP errors relayed to the guest. */
  icmpErrors: number;
  /** Flows that idled out. */
  expired: number;
  /** Listening sockets open (`-u`). */
  listening: number;
}

/** Offsets in `struct cmsghdr` (64-bit) and `struct sock_extended_err`. */
const CMSG_DATA = 16;
const EE_ERRNO = 0, EE_ORIGIN = 4, EE_TYPE = 5, EE_CODE = 6, EE_INFO = 8;
const SO_EE_ORIGIN_ICMP = 2, SO_EE_ORIGIN_ICMP6 = 3;

/** UDP translation; see the module comment. */
export class Udp {
  /** Counters. */
  readonly stats: UdpStats = {
    outbound: 0,
    inbound: 0,
    datagramsToHost: 0,
    datagramsCoalesced: 0,
    segmentRefused: 0,
    datagramsToGuest: 0,
    datagramsMerged: 0,
    dropClosed: 0,
    dropSendFailed: 0,
    dropTableFull: 0,
    dropNoSocket: 0,
    dropConnectFailed: 0,
    dropTooBig: 0,
    dropNoFlow: 0,
    refused: 0,
    icmpErrors: 0,
    expired: 0,
    listening: 0,
  };
  readonly #loop: Loop;
  readonly #flows: FlowTable;
  readonly #net: GuestNet;
  readonly #hdrs: GuestHeaders;
  readonly #tap: TapSender;
  readonly #fdType: number;
  /** Source binding of outbound sockets (`-o`). */
  readonly #outbound: OutboundBind;
  readonly #listenType: number;
  /** Indexed by epoll tag; null: a closed listener's slot, reused by the next. */
  readonly #listeners = new PortSockets<UdpListener>();
  readonly #key = new FlowSide();
  readonly #tgt = new FlowSide();
  readonly #sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  readonly #target4 = new Uint8Array(4);
  readonly #target6 = new Uint8Array(16);
  readonly #mmsg = new sys.MmsgHdrArray(MAX_DGRAMS_PER_READ);
  readonly #iov = new sys.IovecArray(MAX_DGRAMS_PER_READ * PAYLOAD_IOV_MAX);
  /** Pieces of a datagram from the guest whose payload is in guest memory. */
  readonly #pBufs: Uint8Array[] = new Array(TAIL_MAX_PIECES);
  readonly #pOffs = new Float64Array(TAIL_MAX_PIECES);
  readonly #pLens = new Uint32Array(TAIL_MAX_PIECES);
  readonly #pIov = new sys.IovecArray(TAIL_MAX_PIECES);
  /**
   * The run of datagrams waiting for the batch's end (see `drain`): flow
   * (-1: none), segment size (the first datagram's), bytes, count, and
   * whether a shorter datagram ended it. Their payloads stay in the frame
   * slots until then.
   */
  #runIndex = -1;
  #runSeg = 0;
  #runBytes = 0;
  #runCount = 0;
  #runEnded = false;
  readonly #runIov = new sys.IovecArray(RUN_MAX_DATAGRAMS);
  readonly #runBufs: Uint8Array[] = new Array(RUN_MAX_DATAGRAMS);
  readonly #runOffs = new Uint32Array(RUN_MAX_DATAGRAMS);
  readonly #runLens = new Uint32Array(RUN_MAX_DATAGRAMS);
  readonly #names = new Uint8Array(MAX_DGRAMS_PER_READ * sys.SOCKADDR_STORAGE_SIZE);
  readonly #frames = new Uint16Array(MAX_DGRAMS_PER_READ);
  readonly #control = new Uint8Array(256);
  readonly #errBuf = new Uint8Array(64);
  readonly #udpRepr = udpReprNew();
  // Scratch for ICMP errors: a synthesized copy of the guest's datagram headers.
  readonly #orig = new Uint8Array(IP6_HEADER_LEN + UDP_HEADER_LEN);
  readonly #orig4 = new Ip4Packet();
  readonly #orig6 = new Ip6Packet();
  readonly #ip4Repr = ip4ReprNew();
  readonly #ip6Repr = ip6ReprNew();

  /** Registers with the reactor and the flow table. */
  constructor(loop: Loop, flows: FlowTable, net: GuestNet, hdrs: GuestHeaders, tap: TapSender) {
    this.#loop = loop;
    this.#flows = flows;
    this.#net = net;
    this.#hdrs = hdrs;
    this.#tap = tap;
    this.#outbound = new OutboundBind(net.outbound4, net.outbound6);
    this.#fdType = loop.defineType("udp", (index, events) => this.#sockReady(index, events));
    this.#listenType = loop.defineType("udp-listen", (index) => this.#listenerReady(index));
    flows.setHandlers(FlowType.UDP, {
      timer: (index, now) => this.#timer(index, now),
      guestGone: (index) => this.#end(index),
      deferred: (index) => this.#flows.data<UdpFlow>(index, FlowType.UDP).closed,
    });
  }

  // -------------------------------------------------------------------------
  // Guest → host

  /**
   * A datagram from the guest over IPv4 (checksum verified). With a `tail`,
   * its payload is in the tail's pieces (guest memory), and goes to the
   * socket from there.
   */
  fromTap4(ip: Ip4Packet, d: UdpPacket, gsoSize = 0, tail: FrameTail | null = null): void {
    const key = this.#key.set4(Pif.TAP, ip.srcBits, d.srcPort, ip.dstBits, d.dstPort);
    let sidx = this.#flows.lookup(IpProto.Udp, key);
    if (sidx < 0) {
      tail?.gather(ip.buf); // an ICMP error would quote the datagram
      tail = null;
      const target = natFromTap4(this.#net, ip.dst, d.dstPort);
      if (target < 0) {
        this.stats.refused++;
        const code = IcmpUnreachCode.AdminProhibited;
        icmpErrorToGuest4(this.#tap, this.#hdrs, ip.dst, ip, IcmpType.DestUnreachable, code);
        return;
      }
      const len = sys.sockaddrIn4(this.#sa, u32ToIp4(target, this.#target4), d.dstPort);
      const index = this.#open(false, key, this.#tgt.set4(Pif.HOST, target, d.dstPort, 0, 0), len);
      if (index < 0) {
        if (index < -1) {
          const code = index === -2 ? IcmpUnreachCode.Net : IcmpUnreachCode.AdminProhibited;
          icmpErrorToGuest4(this.#tap, this.#hdrs, ip.dst, ip, IcmpType.DestUnreachable, code);
        }
        return;
      }
      sidx = flowSidx(index, 0);
    }
    this.#toHost(sidxFlow(sidx), d, gsoSize, tail);
  }

  /** A datagram from the guest over IPv6 (checksum verified); see {@linkcode fromTap4}. */
  fromTap6(
    ip: Ip6Packet,
    d: UdpPacket,
    upperOff: number,
    gsoSize = 0,
    tail: FrameTail | null = null,
  ): void {
    const key = this.#key.set6(
      Pif.TAP,
      ip.buf,
      ip.srcOffset,
      d.srcPort,
      ip.buf,
      ip.dstOffset,
      d.dstPort,
    );
    let sidx = this.#flows.lookup(IpProto.Udp, key);
    if (sidx < 0) {
      tail?.gather(ip.buf); // an ICMP error would quote the datagram
      tail = null;
      const t6 = this.#target6;
      const unreach = (code: number) =>
        icmpErrorToGuest6(
          this.#tap,
          this.#hdrs,
          ip.buf,
          ip.dstOffset,
          ip,
          IpProto.Udp,
          upperOff,
          Icmp6Type.DestUnreachable,
          code,
        );
      if (!natFromTap6(this.#net, ip.buf, ip.dstOffset, t6, d.dstPort)) {
        this.stats.refused++;
        return unreach(1); // administratively prohibited
      }
      const tgt = this.#tgt.set6(Pif.HOST, t6, 0, d.dstPort, t6, 0, 0);
      tgt.oaddr.fill(0);
      const index = this.#open(true, key, tgt, sys.sockaddrIn6(this.#sa, t6, d.dstPort));
      if (index < 0) {
        if (index < -1) unreach(index === -2 ? 0 : 1); // no route, or prohibited (table full)
        return;
      }
      sidx = flowSidx(index, 0);
    }
    this.#toHost(sidxFlow(sidx), d, gsoSize, tail);
  }

  /**
   * Sends datagram `d` of flow `index` to the host. With `gsoSize` (a UDP
   * GSO frame from the guest, payload meant as datagrams of that size), one
   * `sendmsg` with `UDP_SEGMENT` lets the kernel cut it as the guest's
   * would have. A payload in `tail` is sent from its pieces.
   */
  #toHost(index: number, d: UdpPacket, gsoSize: number, tail: FrameTail | null): void {
    const f = this.#flows.data<UdpFlow>(index, FlowType.UDP);
    if (f.closed) {
      this.stats.dropClosed++;
      return;
    }
    f.lastMs = performance.now();
    const len = d.payloadLen;
    if (tail === null && gsoSize === 0 && len > 0 && f.segmentOk) {
      if (
        index === this.#runIndex && !this.#runEnded && len <= this.#runSeg &&
        this.#runCount < RUN_MAX_DATAGRAMS && this.#runBytes + len <= RUN_MAX_BYTES
      ) {
        this.#runAdd(d.buf, d.payloadOffset, len);
        if (len < this.#runSeg) this.#runEnded = true; // only the last may be shorter
        return;
      }
      this.drain();
      this.#runIndex = index;
      this.#runSeg = len;
      this.#runEnded = false;
      this.#runAdd(d.buf, d.payloadOffset, len);
      return;
    }
    this.drain(); // in order behind what waits
    const peer = f.inbound ? f.peer : null;
    const seg = gsoSize > 0 && len > gsoSize ? gsoSize : 0;
    if (tail !== null) {
      const rc = this.#sendPieces(f.fd, d, tail, seg, peer, f.peerLen);
      this.#sent(index, f, rc, gsoSize > 0 ? Math.max(1, Math.ceil(len / gsoSize)) : 1, len);
      return;
    }
    const buf = d.buf;
    const off = d.payloadOffset;
    if (seg > 0 && f.segmentOk) {
      const rc = sys.sendSegmented(f.fd, buf, off, len, seg, sys.MSG_DONTWAIT, peer, f.peerLen);
      if (!this.#segmentRefused(f, rc)) {
        this.#sent(index, f, rc, Math.ceil(len / seg), len);
        return;
      }
    }
    // One datagram, or the guest's GSO frame cut here: `seg` at a time.
    const step = seg > 0 ? seg : Math.max(len, 1);
    for (let at = 0; at < len || at === 0; at += step) {
      const n = Math.min(step, len - at);
      const rc = sys.sendAt(f.fd, buf, off + at, n, sys.MSG_DONTWAIT, peer, f.peerLen);
      this.#sent(index, f, rc, 1, n);
    }
  }

  /**
   * True if `rc`, from a `UDP_SEGMENT` send on `f`, says the route cannot
   * take segments of that size (a path MTU below them): `f` then sends one
   * datagram at a time.
   */
  #segmentRefused(f: UdpFlow, rc: number): boolean {
    // EMSGSIZE or EINVAL: segment plus headers over the path MTU (a plain
    // datagram that size would be fragmented); EIO: no segmentation there.
    if (rc !== -sys.Errno.EMSGSIZE && rc !== -sys.Errno.EINVAL && rc !== -sys.Errno.EIO) {
      return false;
    }
    f.segmentOk = false;
    this.stats.segmentRefused++;
    return true;
  }

  #runAdd(buf: Uint8Array, off: number, len: number): void {
    const k = this.#runCount++;
    this.#runBufs[k] = buf;
    this.#runOffs[k] = off;
    this.#runLens[k] = len;
    this.#runIov.set(k, buf, off, len);
    this.#runBytes += len;
  }

  /**
   * Sends the datagrams gathered from the guest (see the module comment).
   * Called at the end of each batch of guest frames, before their slots are
   * read into again, and before any other send to the host.
   */
  drain(): void {
    const index = this.#runIndex;
    if (index < 0) return;
    const n = this.#runCount;
    const bytes = this.#runBytes;
    this.#runIndex = -1;
    this.#runCount = this.#runBytes = 0;
    const f = this.#flows.data<UdpFlow>(index, FlowType.UDP);
    const peer = f.inbound ? f.peer : null;
    if (n > 1) {
      const control = sys.udpSegmentControl(this.#runSeg);
      const rc = sys.sendIov(f.fd, this.#runIov, n, sys.MSG_DONTWAIT, peer, f.peerLen, control);
      if (!this.#segmentRefused(f, rc)) {
        if (rc >= 0) this.stats.datagramsCoalesced += n - 1;
        this.#sent(index, f, rc, n, bytes);
        return;
      }
    }
    for (let k = 0; k < n; k++) {
      const len = this.#runLens[k];
      const rc = sys.sendAt(
        f.fd,
        this.#runBufs[k],
        this.#runOffs[k],
        len,
        sys.MSG_DONTWAIT,
        peer,
        f.peerLen,
      );
      this.#sent(index, f, rc, 1, len);
    }
  }

  /** Counts the outcome `rc` of a send of `datagrams` datagrams, `bytes` in all. */
  #sent(index: number, f: UdpFlow, rc: number, datagrams: number, bytes: number): void {
    if (rc >= 0) {
      this.stats.datagramsToHost += datagrams;
      this.#flows.bytesFrom[index * 2 + f.tapSide] += bytes;
      return;
    }
    this.stats.dropSendFailed += datagrams;
    // An error from an earlier ICMP message may surface here instead of on
    // the error queue; the queue is read when epoll reports it.
    if (rc === -sys.Errno.ECONNREFUSED) this.#unreachable(index, f, 3, 0);
  }

  /** Sends the payload of `d` from `tail`'s pieces in one `sendmsg`: bytes sent, or -errno. */
  #sendPieces(
    fd: number,
    d: UdpPacket,
    tail: FrameTail,
    seg: number,
    peer: Uint8Array | null,
    peerLen: number,
  ): number {
    const n = tail.pieces(
      d.payloadOffset,
      d.payloadLen,
      this.#pBufs,
      this.#pOffs,
      this.#pLens,
      0,
      TAIL_MAX_PIECES,
    );
    const iov = this.#pIov;
    for (let k = 0; k < n; k++) iov.set(k, this.#pBufs[k], this.#pOffs[k], this.#pLens[k]);
    const control = seg > 0 ? sys.udpSegmentControl(seg) : null;
    return sys.sendIov(fd, iov, n, sys.MSG_DONTWAIT, peer, peerLen, control);
  }

  /**
   * Opens the flow's connected socket; returns the index, -1 (dropped), -2
   * (no route: unreachable) or -3 (the flow table is full: prohibited, so
   * that the guest's socket sees an error at once instead of waiting).
   */
  #open(v6: boolean, ini: FlowSide, tgt: FlowSide, saLen: number): number {
    const flows = this.#flows;
    const index = flows.alloc();
    if (index < 0) {
      this.stats.dropTableFull++;
      return -3;
    }
    flows.setIni(index, ini);
    flows.setTgt(index, tgt);
    const fd = sys.socket(
      v6 ? sys.AF_INET6 : sys.AF_INET,
      sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
    );
    if (fd < 0) {
      flows.cancel(index);
      this.stats.dropNoSocket++;
      return -1;
    }
    sys.setsockoptInt(
      fd,
      v6 ? sys.IPPROTO_IPV6 : sys.IPPROTO_IP,
      v6 ? sys.IPV6_RECVERR : sys.IP_RECVERR,
      1,
    );
    udpRcvbufSet(fd);
    const bound = this.#outbound.apply(fd, v6);
    const rc = bound < 0 ? bound : sys.connect(fd, this.#sa, saLen);
    if (rc < 0) {
      sys.close(fd);
      flows.cancel(index);
      this.stats.dropConnectFailed++;
      return rc === -sys.Errno.ENETUNREACH || rc === -sys.Errno.EHOSTUNREACH ? -2 : -1;
    }
    flows.setType(index, FlowType.UDP, this.#flowData(index, fd, v6, null, null, 0));
    flows.hashInsert(flowSidx(index, 0));
    sys.sysCheck(this.#loop.add(fd, sys.EPOLLIN, this.#fdType, index), "epoll_ctl udp");
    flows.activate(index);
    this.stats.outbound++;
    return index;
  }

  #flowData(
    index: number,
    fd: number,
    v6: boolean,
    listener: UdpListener | null,
    peer: Uint8Array | null,
    peerLen: number,
  ): UdpFlow {
    const tapSide = listener === null ? 0 : 1;
    const flows = this.#flows;
    const tap = flowSidx(index, tapSide);
    const addrs = new Uint8Array(32);
    flows.oaddrCopy(tap, addrs, 0);
    flows.eaddrCopy(tap, addrs, 16);
    const sport = flows.oport(tap);
    const guestPort = flows.eport(tap);
    const dnsish = (tapSide === 0 ? sport : guestPort) === DNS_PORT;
    return {
      fd,
      v6,
      inbound: tapSide === 1,
      listener,
      closed: false,
      peer,
      peerLen,
      index,
      tapSide,
      addrs,
      addrsOff: 0,
      src4: flows.oaddrWord(tap, 3),
      dst4: flows.eaddrWord(tap, 3),
      sport,
      dport: guestPort,
      timeoutMs: dnsish
        ? Math.min(UDP_DNS_TIMEOUT_MS, this.#net.udpTimeoutMs)
        : this.#net.udpTimeoutMs,
      lastMs: performance.now(),
      segmentOk: true,
    };
  }

  // -------------------------------------------------------------------------
  // Host → guest

  #sockReady(index: number, events: number): void {
    const f = this.#flows.data<UdpFlow>(index, FlowType.UDP);
    if (events & sys.EPOLLERR) this.#errorQueue(index, f);
    if (events & sys.EPOLLIN) this.#fromSocket(f, f.fd, false);
  }

  /**
   * Reads a batch of datagrams from `fd` into frame slots and sends each to
   * the guest as flow `f` (or, for a listener, as the flow found or made for
   * each sender). Returns when the socket is empty.
   */
  #fromSocket(f: UdpFlow | null, fd: number, listener: boolean, l?: UdpListener): void {
    const tap = this.#tap;
    const mm = this.#mmsg;
    const v6 = f !== null ? f.v6 : l!.v6;
    const payloadOff = (v6 ? L4_OFF6 : L4_OFF4) + UDP_HEADER_LEN;
    // The largest payload the guest's MTU carries; read one byte more, so a
    // bigger datagram shows as such and is dropped rather than cut.
    const mtuPayload = this.#net.mtu - (v6 ? IP6_HEADER_LEN : IP4_HEADER_LEN) - UDP_HEADER_LEN;
    const readLen = Math.min(mtuPayload + 1, tap.maxFrame + TAP_HEADROOM - payloadOff);
    const frames = this.#frames;
    for (;;) {
      let room = Math.min(tap.room(), MAX_DGRAMS_PER_READ);
      let iovs = 0;
      let full = false;
      for (let k = 0; k < room; k++) {
        frames[k] = tap.take();
        // The payload area: in the slot, or in the guest's own buffers (vhost-user).
        const first = iovs;
        iovs = tap.payloadIov(frames[k], payloadOff - TAP_HEADROOM, readLen, this.#iov, iovs);
        if (tap.guestFull && k > 0) {
          // No room in the guest for more: leave the rest in the socket.
          tap.release(frames[k]);
          room = k;
          full = true;
          break;
        }
        mm.setIov(k, this.#iov, iovs - first, first);
        if (listener) mm.setName(k, this.#names.subarray(k * 128, k * 128 + 128));
        else mm.setName(k, null);
        mm.setControl(k, null);
      }
      const n = sys.recvmmsg(fd, mm, room, sys.MSG_DONTWAIT);
      if (n <= 0) return;
      const merge = !listener && tap.gsoUdp;
      for (let k = 0; k < n;) {
        const len = mm.msgLen(k);
        const fits = len <= mtuPayload && (mm.flags(k) & sys.MSG_TRUNC) === 0;
        const flow = !fits ? null : listener ? this.#inboundFlow(l!, k) : f;
        if (flow === null) {
          if (!fits) this.stats.dropTooBig++;
          else this.stats.dropNoFlow++;
          k++;
          continue; // its slot is abandoned; the others are committed where they are
        }
        const end = merge && len > 0 ? this.#runToGuest(k, n, len, payloadOff) : k + 1;
        if (end === k + 1) this.#emit(frames[k], flow, len);
        else this.#emitMerged(frames, k, end, flow, len);
        k = end;
      }
      if (n < room || full) return;
    }
  }

  /**
   * The end of the run of datagrams `k..end` of the last `recvmmsg` that
   * one UDP GSO frame can carry: all `seg` bytes long but the last, which
   * may be shorter, within the frame and the UDP length's limits.
   */
  #runToGuest(k: number, n: number, seg: number, payloadOff: number): number {
    const mm = this.#mmsg;
    const maxBytes = Math.min(RUN_MAX_BYTES, this.#tap.maxFrame + TAP_HEADROOM - payloadOff);
    let bytes = seg;
    let end = k + 1;
    while (end < n && end - k < RUN_MAX_DATAGRAMS) {
      const len = mm.msgLen(end);
      if (len === 0 || len > seg || mm.flags(end) & sys.MSG_TRUNC || bytes + len > maxBytes) break;
      bytes += len;
      end++;
      if (len < seg) break; // only the last may be shorter
    }
    return end;
  }

  /**
   * Sends the datagrams in `frames[k..end)` (`seg` bytes each, the last
   * maybe fewer) as one UDP GSO frame: their payloads are moved behind the
   * first's, in its slot, and the guest's kernel cuts the frame back into
   * the datagrams (as it does for a local sender using `UDP_SEGMENT`). One
   * frame written to the tap instead of a frame per datagram.
   */
  #emitMerged(frames: Uint16Array, k: number, end: number, f: UdpFlow, seg: number): void {
    const tap = this.#tap;
    const mm = this.#mmsg;
    const first = frames[k];
    const l4 = f.v6 ? L4_OFF6 : L4_OFF4;
    const payloadAt = l4 - TAP_HEADROOM + UDP_HEADER_LEN;
    let len = seg;
    for (let j = k + 1; j < end; j++) {
      const n = mm.msgLen(j);
      tap.copyBetween(frames[j], payloadAt, first, payloadAt + len, n);
      len += n; // frames[j] is never committed: abandoned
    }
    const slot = tap.slot(first);
    const r = this.#udpRepr;
    r.srcPort = f.sport;
    r.dstPort = f.dport;
    r.payloadLen = len;
    const dgramLen = UDP_HEADER_LEN + len;
    const pseudo = this.#hdrs.emitFor(slot, f, IpProto.Udp, dgramLen);
    udpEmit(slot, l4, r);
    const frameLen = l4 - TAP_HEADROOM + dgramLen;
    const hdrLen = frameLen - len;
    tap.commitGso(first, frameLen, l4, UDP_CHECKSUM_OFFSET, pseudo, GsoType.UDP_L4, seg, hdrLen);
    const count = end - k;
    this.stats.datagramsToGuest += count;
    this.stats.datagramsMerged += count - 1;
    this.#flows.bytesFrom[f.index * 2 + 1 - f.tapSide] += len;
    f.lastMs = performance.now();
  }

  /** Writes the headers in front of the `len`-byte payload in place in slot `frame`, queues it. */
  #emit(frame: number, f: UdpFlow, len: number): void {
    const slot = this.#tap.slot(frame);
    const l4 = f.v6 ? L4_OFF6 : L4_OFF4;
    const r = this.#udpRepr;
    r.srcPort = f.sport;
    r.dstPort = f.dport;
    r.payloadLen = len;
    const dgramLen = UDP_HEADER_LEN + len;
    const pseudo = this.#hdrs.emitFor(slot, f, IpProto.Udp, dgramLen);
    udpEmit(slot, l4, r);
    this.#tap.commitChecksummed(
      frame,
      l4 - TAP_HEADROOM + dgramLen,
      l4,
      UDP_CHECKSUM_OFFSET,
      pseudo,
    );
    this.stats.datagramsToGuest++;
    this.#flows.bytesFrom[f.index * 2 + 1 - f.tapSide] += len;
    f.lastMs = performance.now();
  }

  /** Reads the socket's error queue and relays ICMP errors to the guest. */
  #errorQueue(index: number, f: UdpFlow): void {
    const mm = this.#mmsg;
    for (;;) {
      this.#iov.set(0, this.#errBuf);
      mm.setIov(0, this.#iov, 1, 0);
      mm.setName(0, null);
      mm.setControl(0, this.#control);
      const rc = sys.recvmsg(f.fd, mm, sys.MSG_ERRQUEUE | sys.MSG_DONTWAIT);
      if (rc < 0) return;
      const c = this.#control;
      const clen = mm.controlLen(0);
      if (clen < CMSG_DATA + 16) continue;
      const dv = new DataView(c.buffer, c.byteOffset, clen);
      const origin = c[CMSG_DATA + EE_ORIGIN];
      if (origin !== SO_EE_ORIGIN_ICMP && origin !== SO_EE_ORIGIN_ICMP6) continue;
      const type = c[CMSG_DATA + EE_TYPE];
      const code = c[CMSG_DATA + EE_CODE];
      const info = dv.getUint32(CMSG_DATA + EE_INFO, true);
      if (dv.getUint32(CMSG_DATA + EE_ERRNO, true) === 0) continue;
      this.#unreachable(index, f, type, code, info, origin === SO_EE_ORIGIN_ICMP6);
    }
  }

  /**
   * Sends the guest an ICMP error of `type`/`code` about a datagram of flow
   * `f`: a copy of the datagram's IP and UDP headers is made up from the
   * flow, which is all the guest needs to match it to its socket.
   */
  #unreachable(
    _index: number,
    f: UdpFlow,
    type: number,
    code: number,
    info = 0,
    icmp6 = f.v6,
  ): void {
    if (icmp6 !== f.v6) return;
    const o = this.#orig;
    const udpAt = f.v6 ? IP6_HEADER_LEN : IP4_HEADER_LEN;
    if (f.v6) {
      const r = this.#ip6Repr;
      r.src.set(f.addrs.subarray(16, 32)); // the guest sent it...
      r.dst.set(f.addrs.subarray(0, 16)); // ...to us
      r.nextHeader = IpProto.Udp;
      r.payloadLen = UDP_HEADER_LEN;
      ip6Emit(o, 0, r);
    } else {
      const r = this.#ip4Repr;
      r.src = f.dst4;
      r.dst = f.src4;
      r.proto = IpProto.Udp;
      r.payloadLen = UDP_HEADER_LEN;
      ip4Emit(o, 0, r);
    }
    const u = this.#udpRepr;
    u.srcPort = f.dport;
    u.dstPort = f.sport;
    u.payloadLen = 0;
    udpEmit(o, udpAt, u);
    this.stats.icmpErrors++;
    if (f.v6) {
      this.#orig6.wrap(o, 0, IP6_HEADER_LEN + UDP_HEADER_LEN);
      icmpErrorToGuest6(
        this.#tap,
        this.#hdrs,
        f.addrs,
        0,
        this.#orig6,
        IpProto.Udp,
        udpAt,
        type,
        code,
        info,
      );
    } else {
      this.#orig4.wrap(o, 0, IP4_HEADER_LEN + UDP_HEADER_LEN);
      icmpErrorToGuest4(this.#tap, this.#hdrs, f.src4, this.#orig4, type, code, info);
    }
  }

  // -------------------------------------------------------------------------
  // -u: datagrams to forwarded host ports

  /**
   * Opens listening sockets for every port `fwd` forwards (`-u`); a port
   * that cannot be bound is skipped with a message. Returns the fds opened,
   * for {@linkcode closeFds}.
   */
  listen(fwd: PortFwd): number[] {
    return openListenPorts(
      fwd,
      this.#net,
      (family, addr, ifname, port, target) =>
        this.#openListener(family, addr, ifname, port, target),
      (rc, family, port, explicit) => this.#failed(rc, family, port, explicit),
    );
  }

  /**
   * Opens listening sockets for every port `fwd` forwards, all or nothing
   * (a forward added at run time). Returns the fds opened, or why not.
   */
  listenAll(fwd: PortFwd): number[] | string {
    return openAllListenPorts(
      fwd,
      this.#net,
      (family, addr, ifname, port, target) =>
        this.#openListener(family, addr, ifname, port, target),
      (fds) => this.closeFds(fds),
    );
  }

  #failed(rc: number, family: 4 | 6, port: number, explicit: boolean): void {
    const msg = `-u: cannot bind IPv${family} port ${port}: ${sys.errnoName(-rc)}`;
    if (explicit) logWarn(msg);
    else logDebug(msg);
  }

  /** Opens and watches one listening socket; returns its fd or -errno. */
  #openListener(
    family: 4 | 6,
    addr: Uint8Array | null,
    ifname: string | null,
    port: number,
    target: number,
  ): number {
    const fd = openWatchedListener(
      this.#loop,
      this.#listenType,
      this.#listeners,
      sys.SOCK_DGRAM,
      family,
      addr,
      ifname,
      port,
      (fd) => ({ fd, v6: family === 6, port, target, flows: new Set<number>() }),
    );
    if (fd >= 0) this.stats.listening++;
    return fd;
  }

  /**
   * Binds host `port` of both families (wildcard address, each if the guest
   * has it), forwarding to the same guest port, as `-u auto` does for a port
   * found in the namespace. Failures are debug lines. Returns the number of
   * sockets opened.
   */
  listenAuto(port: number): number {
    let opened = 0;
    for (const family of guestFamilies(this.#net)) {
      const fd = this.#openListener(family, null, null, port, port);
      if (fd >= 0) opened++;
      else this.#failed(fd, family, port, false);
    }
    return opened;
  }

  /** Closes every listening socket on host `port`; their flows end (see the module comment). */
  closePort(port: number): void {
    this.#closeListeners(this.#listeners.takePort(port));
  }

  /** Closes the listening sockets `fds` (from {@linkcode listen} or {@linkcode listenAll}); their flows end. */
  closeFds(fds: readonly number[]): void {
    this.#closeListeners(this.#listeners.takeFds(fds));
  }

  #closeListeners(listeners: UdpListener[]): void {
    for (const l of listeners) {
      this.#loop.remove(l.fd);
      sys.close(l.fd);
      this.stats.listening--;
      for (const index of l.flows) {
        this.#flows.data<UdpFlow>(index, FlowType.UDP).closed = true;
        this.#flows.defer(index);
      }
      l.flows.clear();
    }
  }

  /** The host ports with an open listening socket. */
  ports(): Set<number> {
    return this.#listeners.ports();
  }

  #listenerReady(index: number): void {
    const l = this.#listeners.get(index);
    if (l === null) return; // closed earlier in this turn
    this.#fromSocket(null, l.fd, true, l);
  }

  /** The flow for datagram `k` of the last batch on listener `l`, found or created; null to drop. */
  #inboundFlow(l: UdpListener, k: number): UdpFlow | null {
    const name = this.#names.subarray(k * 128, k * 128 + 128);
    const client = sys.sockaddrDecode(name, this.#mmsg.nameLen(k));
    const net = this.#net;
    if (client === null || client.family === "unix") return null;
    const key = this.#key;
    const tgt = this.#tgt;
    if (l.v6) {
      const n6 = net.ip6;
      if (n6 === null) return null;
      key.set6(Pif.HOST, client.addr, 0, client.port, client.addr, 0, l.port);
      key.oaddr.fill(0);
      // A client on host loopback, or using the guest's own address (copied
      // from the host), must appear from elsewhere: the guest's kernel drops
      // a datagram "from itself" (as the TCP listeners do).
      const local = isIp6Loopback(client.addr) || ipEqual(client.addr, n6.addr);
      const from = local ? (net.mapLo6[0] ?? n6.gateway) : client.addr;
      tgt.set6(Pif.TAP, n6.addr, 0, l.target, from, 0, client.port);
    } else {
      const n4 = net.ip4;
      if (n4 === null) return null;
      const src = ip4ToU32(client.addr);
      key.set4(Pif.HOST, src, client.port, 0, l.port);
      const local = src >>> 24 === 127 || src === n4.addr;
      const from = local ? (net.mapLo4[0] ?? n4.gateway) : src;
      tgt.set4(Pif.TAP, n4.addr, l.target, from, client.port);
    }
    const flows = this.#flows;
    const sidx = flows.lookup(IpProto.Udp, key);
    if (sidx >= 0) {
      const f = flows.data<UdpFlow>(sidxFlow(sidx), FlowType.UDP);
      return f.closed ? null : f; // a closed listener's flow, freed at the end of this turn
    }
    const index = flows.alloc();
    if (index < 0) return null; // the caller counts the datagram as dropped
    flows.setIni(index, key);
    flows.setTgt(index, tgt);
    const peer = name.slice(0, this.#mmsg.nameLen(k));
    flows.setType(index, FlowType.UDP, this.#flowData(index, l.fd, l.v6, l, peer, peer.length));
    flows.hashInsert(flowSidx(index, 0));
    flows.hashInsert(flowSidx(index, 1));
    flows.activate(index);
    l.flows.add(index);
    this.stats.inbound++;
    return flows.data<UdpFlow>(index, FlowType.UDP);
  }

  // -------------------------------------------------------------------------
  // Timeouts

  #timer(index: number, now: number): boolean {
    const f = this.#flows.data<UdpFlow>(index, FlowType.UDP);
    return now - f.lastMs >= f.timeoutMs && this.#end(index);
  }

  /** Closes the flow's socket (or takes it off its listener); true: free it. */
  #end(index: number): boolean {
    const f = this.#flows.data<UdpFlow>(index, FlowType.UDP);
    if (f.listener !== null) f.listener.flows.delete(index);
    else {
      this.#loop.remove(f.fd);
      sys.close(f.fd);
    }
    this.stats.expired++;
    return true;
  }

  /** Closes the listening sockets. */
  close(): void {
    for (const l of this.#listeners.takeAll()) {
      this.#loop.remove(l.fd);
      sys.close(l.fd);
    }
    this.stats.listening = 0;
  }
}
