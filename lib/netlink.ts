/**
 * rtnetlink (NETLINK_ROUTE): read and change interfaces, addresses and routes
 * without running `ip`.
 *
 * Theory of operation
 *
 * A netlink socket is a datagram pipe to the kernel. A request is one
 * message: a 16-byte `nlmsghdr`, a fixed family header (`ifinfomsg`,
 * `ifaddrmsg` or `rtmsg`), then type-length-value attributes (`rtattr`), each
 * padded to 4 bytes. The kernel answers with one or more datagrams, each
 * holding one or more messages back to back:
 *
 * - a change (RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE) is sent with
 *   NLM_F_ACK, and the answer is a single NLMSG_ERROR whose `error` field is
 *   0 for success or the negated errno;
 * - a single GET (one link by index or name) is answered by the object, then
 *   (because we ask for it) the same NLMSG_ERROR acknowledgement;
 * - a dump (NLM_F_DUMP) is answered by any number of objects spread over as
 *   many datagrams as needed, ended by NLMSG_DONE (or an NLMSG_ERROR).
 *
 * So every reply ends with NLMSG_ERROR or NLMSG_DONE, and
 * {@linkcode NlReplyScanner} reads datagrams until it sees one. Messages
 * carrying another sequence number are left-overs of an earlier request that
 * timed out, and are skipped.
 *
 * Network namespaces are per thread, and a netlink socket talks to the
 * namespace of the thread that created it: make a {@linkcode Netlink} on the
 * thread that is inside the namespace to configure.
 *
 * Calls block. That is acceptable because this runs at set-up time only and
 * the kernel answers at once; a receive timeout (SO_RCVTIMEO, 2 s by default)
 * turns a bug that would wait forever into -ETIMEDOUT.
 *
 * Failure convention (the project's, see `sys/errno.ts`): every method
 * returns its value, or a negative number that is the negated errno — the
 * kernel's own answer (-EEXIST, -ENODEV, -ENETUNREACH...), a socket error, or
 * -EPROTO when the kernel's bytes do not parse, -ETIMEDOUT when no answer
 * came, -EINVAL when an argument is unusable before anything is sent. Bytes
 * from the kernel are never trusted to be well formed: every read is bounds
 * checked and nothing here throws on them. Only the constructor throws (a
 * `SysError`), because without a socket there is nothing to return to.
 *
 * Byte order: netlink header and attribute integers are in host order (little
 * endian on both supported architectures); addresses are in network order,
 * as everywhere in tapir.
 *
 * @module
 */

import * as sys from "./sys/mod.ts";
import { logDebug, logWarn } from "./log.ts";

const { EINVAL, EMSGSIZE, ENODEV, EPROTO, ETIMEDOUT, EAGAIN, EINTR } = sys.Errno;

// ---------------------------------------------------------------------------
// Constants from linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
// linux/if_addr.h, linux/if.h, asm-generic/socket.h.

/** Option level of netlink socket options (`SOL_NETLINK`). */
const SOL_NETLINK = 270;
/** Acknowledgements carry only the request's header, not its payload. */
const NETLINK_CAP_ACK = 10;
/** Error acknowledgements carry the kernel's explanation as a text attribute. */
const NETLINK_EXT_ACK = 11;
/** `sizeof(struct timeval)` on LP64: two `long`s, seconds then microseconds. */
const TIMEVAL_SIZE = 16;

/** Address family "unspecified": every family (link requests use it). */
const AF_UNSPEC = 0;

/** `sizeof(struct sockaddr_nl)`: family u16, pad u16, port id u32, groups u32. */
const SOCKADDR_NL_SIZE = 12;
const SOCKADDR_NL_PID = 4;

/** Message types shared by every netlink family. */
export const NLMSG_NOOP = 1;
/** An error, or (error 0) an acknowledgement. */
export const NLMSG_ERROR = 2;
/** End of a dump. */
export const NLMSG_DONE = 3;
/** Data lost. */
export const NLMSG_OVERRUN = 4;

/** Flags: a request (set on everything sent to the kernel). */
export const NLM_F_REQUEST = 0x1;
/** Part of a multi-message answer. */
export const NLM_F_MULTI = 0x2;
/** Ask for an acknowledgement. */
export const NLM_F_ACK = 0x4;
/** A dump changed while it was being produced; its contents may be inconsistent. */
export const NLM_F_DUMP_INTR = 0x10;
/** GET: every object (`NLM_F_ROOT | NLM_F_MATCH`). */
export const NLM_F_DUMP = 0x300;
/** NEW: fail with EEXIST if the object exists. */
export const NLM_F_EXCL = 0x200;
/** NEW: create the object if it does not exist. */
export const NLM_F_CREATE = 0x400;
/** On NLMSG_ERROR: the echoed request was cut to its header. */
export const NLM_F_CAPPED = 0x100;
/** On NLMSG_ERROR: extended-ack attributes follow the echoed request. */
export const NLM_F_ACK_TLVS = 0x200;
/** Extended-ack attribute: the kernel's text message. */
const NLMSGERR_ATTR_MSG = 1;

/** rtnetlink message types. */
export const RTM_NEWLINK = 16;
/** Get one link, or dump all. */
export const RTM_GETLINK = 18;
/** Add an address; also the type of address objects in answers. */
export const RTM_NEWADDR = 20;
/** Dump addresses. */
export const RTM_GETADDR = 22;
/** Add a route; also the type of route objects in answers. */
export const RTM_NEWROUTE = 24;
/** Dump routes. */
export const RTM_GETROUTE = 26;

/** Link attributes (IFLA_*). */
export const IFLA_ADDRESS = 1;
/** Interface name, NUL-terminated. */
export const IFLA_IFNAME = 3;
/** MTU, u32. */
export const IFLA_MTU = 4;
/** Filter mask for link answers, u32 (RTEXT_FILTER_*). */
export const IFLA_EXT_MASK = 29;
/** RTEXT_FILTER_SKIP_STATS: leave the (large) counters out of link answers. */
const RTEXT_FILTER_SKIP_STATS = 1 << 3;

/** Interface flag: administratively up. */
export const IFF_UP = 0x1;
/** Interface flag: loopback. */
export const IFF_LOOPBACK = 0x8;
/** Interface flag: running (carrier and up). */
export const IFF_RUNNING = 0x40;
/** Interface flag: carrier present. */
export const IFF_LOWER_UP = 0x10000;

/** Address attributes (IFA_*): the (peer or local) address. */
export const IFA_ADDRESS = 1;
/** The local address. */
export const IFA_LOCAL = 2;
/** All address flags, u32 (the header's `ifa_flags` has only the low 8). */
export const IFA_FLAGS = 8;
/** Address flag: a secondary IPv4 address. */
export const IFA_F_SECONDARY = 0x01;
/** Address flag: skip duplicate address detection (IPv6): usable at once. */
export const IFA_F_NODAD = 0x02;
/** Address flag: duplicate address detection failed. */
export const IFA_F_DADFAILED = 0x08;
/** Address flag: deprecated. */
export const IFA_F_DEPRECATED = 0x20;
/** Address flag: duplicate address detection still running; not usable yet. */
export const IFA_F_TENTATIVE = 0x40;
/** Address flag: configured, not learnt (no lifetime). */
export const IFA_F_PERMANENT = 0x80;

/** Route attributes (RTA_*): destination. */
export const RTA_DST = 1;
/** Output interface index, u32. */
export const RTA_OIF = 4;
/** Gateway. */
export const RTA_GATEWAY = 5;
/** Metric, u32. */
export const RTA_PRIORITY = 6;
/** Several next hops (`rtnexthop` records, each with its own attributes). */
export const RTA_MULTIPATH = 9;
/** Table id, u32 (the header's `rtm_table` holds only 8 bits). */
export const RTA_TABLE = 15;

/** Route table: the main table, where `ip route` works by default. */
export const RT_TABLE_MAIN = 254;
/** Route table: the local table (addresses of this host). */
export const RT_TABLE_LOCAL = 255;
/** Route protocol: configured by an administrator (what `ip route add` uses). */
export const RTPROT_BOOT = 3;
/** Route scope: anywhere. */
export const RT_SCOPE_UNIVERSE = 0;
/** Route scope: on the attached link. */
export const RT_SCOPE_LINK = 253;
/** Route scope: this host. */
export const RT_SCOPE_HOST = 254;
/** Route type: an ordinary route. */
export const RTN_UNICAST = 1;

// Attribute type bits that are flags, not part of the type (NLA_TYPE_MASK).
const NLA_TYPE_MASK = 0x3fff;

// ---------------------------------------------------------------------------
// Layouts. All offsets are from the start of the structure.

/**
 * struct nlmsghdr (16 bytes):
 *
 * | off | size | field       |                                              |
 * | --- | ---- | ----------- | -------------------------------------------- |
 * | 0   | 4    | nlmsg_len   | header + payload, without trailing padding   |
 * | 4   | 2    | nlmsg_type  | NLMSG_* or RTM_*                             |
 * | 6   | 2    | nlmsg_flags | NLM_F_*                                      |
 * | 8   | 4    | nlmsg_seq   | echoed by the kernel in its answer           |
 * | 12  | 4    | nlmsg_pid   | port id (0 from us: "the kernel assigns")    |
 */
export const NLMSG_HDRLEN = 16;
const NLH_LEN = 0;
const NLH_TYPE = 4;
const NLH_FLAGS = 6;
const NLH_SEQ = 8;
const NLH_PID = 12;

/**
 * struct nlmsgerr, the payload of NLMSG_ERROR:
 *
 * | off | size | field |                                                     |
 * | --- | ---- | ----- | --------------------------------------------------- |
 * | 0   | 4    | error | 0 (acknowledgement) or negated errno, signed        |
 * | 4   | 16   | msg   | the request's nlmsghdr; its payload follows unless  |
 * |     |      |       | NLM_F_CAPPED; then extended-ack attributes if       |
 * |     |      |       | NLM_F_ACK_TLVS                                      |
 */
const NLMSGERR_ERROR = 0;
const NLMSGERR_MSG = 4;

/**
 * struct ifinfomsg (16 bytes), header of RTM_*LINK:
 *
 * | off | size | field      |                                          |
 * | --- | ---- | ---------- | ---------------------------------------- |
 * | 0   | 1    | ifi_family | AF_UNSPEC                                |
 * | 1   | 1    | (padding)  |                                          |
 * | 2   | 2    | ifi_type   | ARPHRD_*                                 |
 * | 4   | 4    | ifi_index  | interface index, signed                  |
 * | 8   | 4    | ifi_flags  | IFF_*                                    |
 * | 12  | 4    | ifi_change | which IFF_* bits a request changes       |
 */
export const IFINFOMSG_SIZE = 16;
const IFI_FAMILY = 0;
const IFI_INDEX = 4;
const IFI_FLAGS = 8;
const IFI_CHANGE = 12;

/**
 * struct ifaddrmsg (8 bytes), header of RTM_*ADDR:
 *
 * | off | size | field         |                                        |
 * | --- | ---- | ------------- | -------------------------------------- |
 * | 0   | 1    | ifa_family    | AF_INET, AF_INET6                      |
 * | 1   | 1    | ifa_prefixlen |                                        |
 * | 2   | 1    | ifa_flags     | IFA_F_*, low 8 bits (see IFA_FLAGS)    |
 * | 3   | 1    | ifa_scope     | RT_SCOPE_*                             |
 * | 4   | 4    | ifa_index     | interface index                        |
 */
export const IFADDRMSG_SIZE = 8;
const IFA_FAMILY = 0;
const IFA_PREFIXLEN = 1;
const IFA_FLAGS8 = 2;
const IFA_SCOPE = 3;
const IFA_INDEX = 4;

/**
 * struct rtmsg (12 bytes), header of RTM_*ROUTE:
 *
 * | off | size | field        |                                         |
 * | --- | ---- | ------------ | --------------------------------------- |
 * | 0   | 1    | rtm_family   | AF_INET, AF_INET6                       |
 * | 1   | 1    | rtm_dst_len  | destination prefix length               |
 * | 2   | 1    | rtm_src_len  | source prefix length (policy routing)   |
 * | 3   | 1    | rtm_tos      |                                         |
 * | 4   | 1    | rtm_table    | RT_TABLE_* (see RTA_TABLE beyond 255)   |
 * | 5   | 1    | rtm_protocol | RTPROT_*: who installed it              |
 * | 6   | 1    | rtm_scope    | RT_SCOPE_*                              |
 * | 7   | 1    | rtm_type     | RTN_*                                   |
 * | 8   | 4    | rtm_flags    | RTM_F_*                                 |
 */
export const RTMSG_SIZE = 12;
const RTM_FAMILY = 0;
const RTM_DST_LEN = 1;
const RTM_TABLE = 4;
const RTM_PROTOCOL = 5;
const RTM_SCOPE = 6;
const RTM_TYPE = 7;

/**
 * struct rtattr (4 bytes), before each attribute's value:
 *
 * | off | size | field    |                                              |
 * | --- | ---- | -------- | -------------------------------------------- |
 * | 0   | 2    | rta_len  | header + value, without trailing padding     |
 * | 2   | 2    | rta_type | type; top two bits are flags (NLA_F_*)       |
 *
 * The next attribute starts at the 4-byte aligned end.
 */
export const RTA_HDRLEN = 4;

/**
 * struct rtnexthop (8 bytes), one next hop inside RTA_MULTIPATH, followed by
 * its own attributes (RTA_GATEWAY):
 *
 * | off | size | field        |                                         |
 * | --- | ---- | ------------ | --------------------------------------- |
 * | 0   | 2    | rtnh_len     | this record, attributes included        |
 * | 2   | 1    | rtnh_flags   |                                         |
 * | 3   | 1    | rtnh_hops    | weight - 1                              |
 * | 4   | 4    | rtnh_ifindex | output interface                        |
 */
const RTNH_SIZE = 8;
const RTNH_LEN = 0;
const RTNH_IFINDEX = 4;

/** Rounds `n` up to the 4-byte netlink alignment (NLMSG_ALIGN, RTA_ALIGN). */
export function nlAlign(n: number): number {
  return (n + 3) & ~3;
}

function dataViewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function familyBytes(family: 4 | 6): number {
  return family === 4 ? 4 : 16;
}

function afOf(family: 4 | 6): number {
  return family === 4 ? sys.AF_INET : sys.AF_INET6;
}

/** 4 or 6 for AF_INET / AF_INET6, 0 for any other address family. */
function familyOfAf(af: number): 0 | 4 | 6 {
  return af === sys.AF_INET ? 4 : af === sys.AF_INET6 ? 6 : 0;
}

// ---------------------------------------------------------------------------
// Building requests

/**
 * Writes one request message into a preallocated buffer: {@linkcode begin},
 * one family header, attributes, {@linkcode finish}. Every byte of the
 * message, padding included, is written, so nothing from an earlier request
 * leaks into the next. Running out of room is remembered and reported by
 * `finish` as -EMSGSIZE, so the individual writers need no checks.
 */
export class NlMsgBuilder {
  /** The buffer; the message is its first {@linkcode length} bytes after `finish`. */
  readonly bytes: Uint8Array;
  readonly #dv: DataView;
  #len = 0;
  #overflow = false;

  /** Allocates room for a message of up to `capacity` bytes. */
  constructor(capacity = 512) {
    this.bytes = new Uint8Array(capacity);
    this.#dv = dataViewOf(this.bytes);
  }

  /** Bytes written so far (the message length once finished). */
  get length(): number {
    return this.#len;
  }

  /** Starts a message: nlmsghdr with `type`, `flags` (NLM_F_*), `seq`; port id 0. */
  begin(type: number, flags: number, seq: number): void {
    this.#len = 0;
    this.#overflow = false;
    const o = this.#reserve(NLMSG_HDRLEN);
    if (o < 0) return;
    this.#dv.setUint16(o + NLH_TYPE, type, true);
    this.#dv.setUint16(o + NLH_FLAGS, flags, true);
    this.#dv.setUint32(o + NLH_SEQ, seq >>> 0, true);
    this.#dv.setUint32(o + NLH_PID, 0, true);
  }

  /** Appends a struct ifinfomsg. */
  ifinfomsg(family: number, index: number, flags: number, change: number): void {
    const o = this.#reserve(IFINFOMSG_SIZE);
    if (o < 0) return;
    this.bytes[o + IFI_FAMILY] = family;
    this.#dv.setInt32(o + IFI_INDEX, index, true);
    this.#dv.setUint32(o + IFI_FLAGS, flags >>> 0, true);
    this.#dv.setUint32(o + IFI_CHANGE, change >>> 0, true);
  }

  /** Appends a struct ifaddrmsg; `flags` are the low 8 bits of IFA_F_*. */
  ifaddrmsg(family: number, prefixLen: number, flags: number, scope: number, index: number): void {
    const o = this.#reserve(IFADDRMSG_SIZE);
    if (o < 0) return;
    this.bytes[o + IFA_FAMILY] = family;
    this.bytes[o + IFA_PREFIXLEN] = prefixLen;
    this.bytes[o + IFA_FLAGS8] = flags & 0xff;
    this.bytes[o + IFA_SCOPE] = scope;
    this.#dv.setUint32(o + IFA_INDEX, index >>> 0, true);
  }

  /** Appends a struct rtmsg (source length, TOS and flags zero). */
  rtmsg(
    family: number,
    dstLen: number,
    table: number,
    protocol: number,
    scope: number,
    type: number,
  ): void {
    const o = this.#reserve(RTMSG_SIZE);
    if (o < 0) return;
    this.bytes[o + RTM_FAMILY] = family;
    this.bytes[o + RTM_DST_LEN] = dstLen;
    this.bytes[o + RTM_TABLE] = table;
    this.bytes[o + RTM_PROTOCOL] = protocol;
    this.bytes[o + RTM_SCOPE] = scope;
    this.bytes[o + RTM_TYPE] = type;
  }

  /** Appends an attribute whose value is `value`'s bytes. */
  attr(type: number, value: Uint8Array): void {
    const o = this.#attrHeader(type, value.length);
    if (o >= 0) this.bytes.set(value, o);
  }

  /** Appends a u32 attribute (host order). */
  attrU32(type: number, value: number): void {
    const o = this.#attrHeader(type, 4);
    if (o >= 0) this.#dv.setUint32(o, value >>> 0, true);
  }

  /** Appends a NUL-terminated string attribute. */
  attrString(type: number, value: string): void {
    const text = new TextEncoder().encode(value);
    const o = this.#attrHeader(type, text.length + 1);
    if (o < 0) return;
    this.bytes.set(text, o);
    this.bytes[o + text.length] = 0;
  }

  /** Writes nlmsg_len; returns the message length, or -EMSGSIZE if it did not fit. */
  finish(): number {
    if (this.#overflow || this.#len < NLMSG_HDRLEN) return -EMSGSIZE;
    this.#dv.setUint32(NLH_LEN, this.#len, true);
    return this.#len;
  }

  /** Writes an rtattr header for a `valueLen`-byte value; returns the value's offset or -1. */
  #attrHeader(type: number, valueLen: number): number {
    const len = RTA_HDRLEN + valueLen;
    if (len > 0xffff) {
      this.#overflow = true;
      return -1;
    }
    const o = this.#reserve(len);
    if (o < 0) return -1;
    this.#dv.setUint16(o, len, true);
    this.#dv.setUint16(o + 2, type, true);
    return o + RTA_HDRLEN;
  }

  /** Claims `n` bytes plus alignment padding, zeroed; returns their offset or -1. */
  #reserve(n: number): number {
    const o = this.#len;
    const end = nlAlign(o + n);
    if (this.#overflow || end > this.bytes.length) {
      this.#overflow = true;
      return -1;
    }
    this.bytes.fill(0, o, end);
    this.#len = end;
    return o;
  }
}

// ---------------------------------------------------------------------------
// Reading answers

/**
 * A cursor over the messages of one received datagram. {@linkcode next}
 * steps to the next message and exposes its header fields and the bounds of
 * its payload within the buffer. Framing is checked: a length that is too
 * short or runs past the datagram is -EPROTO, and the walk stops there
 * (the rest of the datagram cannot be located).
 */
export class NlMsgReader {
  /** nlmsg_type of the current message. */
  type = 0;
  /** nlmsg_flags of the current message. */
  flags = 0;
  /** nlmsg_seq of the current message. */
  seq = 0;
  /** nlmsg_pid of the current message. */
  pid = 0;
  /** Offset of the current message's payload (just past its header). */
  start = 0;
  /** Offset just past the current message's payload. */
  end = 0;
  #buf: Uint8Array = new Uint8Array(0);
  #dv: DataView = dataViewOf(this.#buf);
  #off = 0;
  #len = 0;

  /** Points the cursor at the first `len` bytes of `buf`. */
  reset(buf: Uint8Array, len: number): void {
    if (buf !== this.#buf) {
      this.#buf = buf;
      this.#dv = dataViewOf(buf);
    }
    this.#off = 0;
    this.#len = Math.max(0, Math.min(len, buf.length));
  }

  /** 1: a message is current; 0: no more messages; -EPROTO: malformed framing. */
  next(): number {
    const rest = this.#len - this.#off;
    if (rest === 0) return 0;
    if (rest < NLMSG_HDRLEN) return this.#stop();
    const o = this.#off;
    const msgLen = this.#dv.getUint32(o + NLH_LEN, true);
    if (msgLen < NLMSG_HDRLEN || msgLen > rest) return this.#stop();
    this.type = this.#dv.getUint16(o + NLH_TYPE, true);
    this.flags = this.#dv.getUint16(o + NLH_FLAGS, true);
    this.seq = this.#dv.getUint32(o + NLH_SEQ, true);
    this.pid = this.#dv.getUint32(o + NLH_PID, true);
    this.start = o + NLMSG_HDRLEN;
    this.end = o + msgLen;
    this.#off = Math.min(this.#len, o + nlAlign(msgLen));
    return 1;
  }

  #stop(): number {
    this.#off = this.#len;
    return -EPROTO;
  }
}

/**
 * A cursor over the attributes in `buf[start..end)`. {@linkcode next} steps
 * to the next attribute; {@linkcode type} (flag bits removed) and the value's
 * bounds {@linkcode start}..{@linkcode end} describe it. An attribute whose
 * length is below the header size or runs past `end` is -EPROTO.
 */
export class NlAttrReader {
  /** Type of the current attribute, without the NLA_F_NESTED / byte-order flag bits. */
  type = 0;
  /** Offset of the current attribute's value. */
  start = 0;
  /** Offset just past the current attribute's value. */
  end = 0;
  #buf: Uint8Array = new Uint8Array(0);
  #dv: DataView = dataViewOf(this.#buf);
  #off = 0;
  #limit = 0;

  /** Points the cursor at the attributes in `buf[start..end)`. */
  reset(buf: Uint8Array, start: number, end: number): void {
    if (buf !== this.#buf) {
      this.#buf = buf;
      this.#dv = dataViewOf(buf);
    }
    this.#limit = Math.max(0, Math.min(end, buf.length));
    this.#off = Math.min(Math.max(0, start), this.#limit);
  }

  /** 1: an attribute is current; 0: no more; -EPROTO: malformed. */
  next(): number {
    const rest = this.#limit - this.#off;
    if (rest === 0) return 0;
    const o = this.#off;
    if (rest < RTA_HDRLEN) return this.#stop();
    const len = this.#dv.getUint16(o, true);
    if (len < RTA_HDRLEN || len > rest) return this.#stop();
    this.type = this.#dv.getUint16(o + 2, true) & NLA_TYPE_MASK;
    this.start = o + RTA_HDRLEN;
    this.end = o + len;
    this.#off = Math.min(this.#limit, o + nlAlign(len));
    return 1;
  }

  /** The current value as a u32 (host order), or -1 if it is shorter than 4 bytes. */
  u32(): number {
    return this.end - this.start >= 4 ? this.#dv.getUint32(this.start, true) : -1;
  }

  /** A copy of the current value's bytes. */
  bytes(): Uint8Array {
    return this.#buf.slice(this.start, this.end);
  }

  /** The current value as text, up to its first NUL. */
  string(): string {
    let e = this.start;
    while (e < this.end && this.#buf[e] !== 0) e++;
    return new TextDecoder().decode(this.#buf.subarray(this.start, e));
  }

  #stop(): number {
    this.#off = this.#limit;
    return -EPROTO;
  }
}

/**
 * Called for each object message of an answer (everything but NLMSG_*
 * control messages): its type and its payload `buf[start..end)`. Returns 0,
 * or -errno to fail the request (the rest of the answer is still read, so
 * the socket stays in step, but no longer visited).
 */
export type NlVisitor = (type: number, buf: Uint8Array, start: number, end: number) => number;

/** {@linkcode NlReplyScanner.feed}'s result while the answer goes on in a further datagram. */
export const NL_REPLY_MORE = 1;

/**
 * Follows the answer to one request across datagrams: {@linkcode begin}
 * with the request's sequence number, then {@linkcode feed} each datagram
 * until it returns something other than {@linkcode NL_REPLY_MORE}.
 */
export class NlReplyScanner {
  /** True if a message of the answer carried NLM_F_DUMP_INTR: retry the dump. */
  interrupted = false;
  /** The kernel's explanation attached to an error answer (extended ack), or "". */
  message = "";
  #seq = 0;
  #error = 0;
  readonly #msgs = new NlMsgReader();
  readonly #attrs = new NlAttrReader();

  /** Starts following the answer to the request numbered `seq`. */
  begin(seq: number): void {
    this.#seq = seq >>> 0;
    this.#error = 0;
    this.interrupted = false;
    this.message = "";
  }

  /**
   * Reads one datagram `buf[0..len)`, passing object messages to `visit`.
   * Returns {@linkcode NL_REPLY_MORE} if the answer is not complete, else
   * the request's result: 0, or -errno (the kernel's error, the visitor's,
   * or -EPROTO for a malformed message).
   */
  feed(buf: Uint8Array, len: number, visit: NlVisitor | null): number {
    const m = this.#msgs;
    m.reset(buf, len);
    const dv = dataViewOf(buf);
    for (;;) {
      const rc = m.next();
      if (rc === 0) return NL_REPLY_MORE;
      if (rc < 0) return rc;
      if (m.seq !== this.#seq) continue; // left over from an earlier request
      if (m.flags & NLM_F_DUMP_INTR) this.interrupted = true;
      switch (m.type) {
        case NLMSG_NOOP:
          continue;
        case NLMSG_OVERRUN:
          return -EPROTO;
        case NLMSG_ERROR: {
          if (m.end - m.start < 4) return -EPROTO;
          const err = dv.getInt32(m.start + NLMSGERR_ERROR, true);
          if (err < 0) this.#readExtAck(buf, dv, m.start, m.end, m.flags);
          return this.#error || (err < 0 ? err : 0);
        }
        case NLMSG_DONE: {
          // Since Linux 4.x the payload is an int: negative if the dump failed.
          const err = m.end - m.start >= 4 ? dv.getInt32(m.start, true) : 0;
          if (err < 0) this.#readExtAck(buf, dv, m.start, m.end, m.flags, true);
          return this.#error || (err < 0 ? err : 0);
        }
        default:
          if (this.#error === 0 && visit !== null) {
            const v = visit(m.type, buf, m.start, m.end);
            if (v < 0) this.#error = v;
          }
      }
    }
  }

  /** Picks the text message out of an error's extended-ack attributes, if any. */
  #readExtAck(
    buf: Uint8Array,
    dv: DataView,
    start: number,
    end: number,
    flags: number,
    done = false,
  ): void {
    if (!(flags & NLM_F_ACK_TLVS)) return;
    let attrs: number;
    if (done) {
      attrs = start + 4; // NLMSG_DONE: the int, then the attributes
    } else {
      if (end - start < NLMSGERR_MSG + NLMSG_HDRLEN) return;
      const echoed = flags & NLM_F_CAPPED
        ? NLMSG_HDRLEN
        : dv.getUint32(start + NLMSGERR_MSG + NLH_LEN, true);
      attrs = start + NLMSGERR_MSG + nlAlign(echoed);
    }
    if (attrs > end) return;
    const a = this.#attrs;
    a.reset(buf, attrs, end);
    while (a.next() === 1) {
      if (a.type === NLMSGERR_ATTR_MSG) {
        this.message = a.string();
        return;
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Decoded objects

/** One network interface, as RTM_NEWLINK describes it. */
export interface LinkInfo {
  /** Interface index (> 0). */
  readonly index: number;
  /** Interface name. */
  readonly name: string;
  /** MTU in bytes (0 if the kernel did not say). */
  readonly mtu: number;
  /** IFF_* flags (IFF_UP, IFF_LOWER_UP...). */
  readonly flags: number;
  /** Hardware address; empty for links without one (tun, some tunnels). */
  readonly mac: Uint8Array;
}

/** One interface address, as RTM_NEWADDR describes it. */
export interface AddrInfo {
  /** Index of the interface holding it. */
  readonly index: number;
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The local address, network order (4 or 16 bytes). */
  readonly addr: Uint8Array;
  /** Prefix length. */
  readonly prefixLen: number;
  /** RT_SCOPE_* (0 universe, 253 link, 254 host). */
  readonly scope: number;
  /** IFA_F_* flags, all 32 bits when the kernel sends IFA_FLAGS. */
  readonly flags: number;
}

/** One route, as RTM_NEWROUTE describes it. */
export interface RouteInfo {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** Destination, network order; all zeros for a default route. */
  readonly dst: Uint8Array;
  /** Destination prefix length; 0 for a default route. */
  readonly prefixLen: number;
  /** Next-hop gateway, or null for a route straight onto the link. */
  readonly gateway: Uint8Array | null;
  /** Output interface index; 0 if none (blackhole, unreachable...). */
  readonly index: number;
  /** Route table id (RT_TABLE_MAIN is 254). */
  readonly table: number;
  /** Metric (RTA_PRIORITY); 0 if absent. */
  readonly metric: number;
  /** RTN_* route type (RTN_UNICAST is 1). */
  readonly type: number;
  /** RTPROT_* protocol: who installed the route. */
  readonly protocol: number;
  /** RT_SCOPE_*. */
  readonly scope: number;
}

const decodeAttrs = new NlAttrReader();

/** Decodes an RTM_NEWLINK payload `buf[start..end)`, or -EPROTO if malformed. */
export function decodeLink(buf: Uint8Array, start: number, end: number): LinkInfo | number {
  if (start < 0 || end > buf.length || end - start < IFINFOMSG_SIZE) return -EPROTO;
  const dv = dataViewOf(buf);
  const index = dv.getInt32(start + IFI_INDEX, true);
  const flags = dv.getUint32(start + IFI_FLAGS, true);
  let name = "";
  let mtu = 0;
  let mac: Uint8Array = new Uint8Array(0);
  const a = decodeAttrs;
  a.reset(buf, start + IFINFOMSG_SIZE, end);
  for (let rc = a.next(); rc !== 0; rc = a.next()) {
    if (rc < 0) return rc;
    if (a.type === IFLA_IFNAME) name = a.string();
    else if (a.type === IFLA_MTU) mtu = Math.max(0, a.u32());
    else if (a.type === IFLA_ADDRESS) mac = a.bytes();
  }
  if (index <= 0) return -EPROTO;
  return { index, name, mtu, flags, mac };
}

/**
 * Decodes an RTM_NEWADDR payload: the address, null for a family other than
 * IPv4/IPv6, or -EPROTO if malformed. The address is IFA_LOCAL when present
 * (on a point-to-point link IFA_ADDRESS is the peer), else IFA_ADDRESS.
 */
export function decodeAddr(buf: Uint8Array, start: number, end: number): AddrInfo | null | number {
  if (start < 0 || end > buf.length || end - start < IFADDRMSG_SIZE) return -EPROTO;
  const family = familyOfAf(buf[start + IFA_FAMILY]);
  if (family === 0) return null;
  const dv = dataViewOf(buf);
  let flags = buf[start + IFA_FLAGS8];
  let local: Uint8Array | null = null;
  let address: Uint8Array | null = null;
  const a = decodeAttrs;
  a.reset(buf, start + IFADDRMSG_SIZE, end);
  for (let rc = a.next(); rc !== 0; rc = a.next()) {
    if (rc < 0) return rc;
    if (a.type === IFA_LOCAL) local = a.bytes();
    else if (a.type === IFA_ADDRESS) address = a.bytes();
    else if (a.type === IFA_FLAGS && a.u32() >= 0) flags = a.u32();
  }
  const addr = local ?? address;
  if (addr === null || addr.length !== familyBytes(family)) return -EPROTO;
  return {
    index: dv.getUint32(start + IFA_INDEX, true),
    family,
    addr,
    prefixLen: buf[start + IFA_PREFIXLEN],
    scope: buf[start + IFA_SCOPE],
    flags,
  };
}

/**
 * Decodes an RTM_NEWROUTE payload: the route, null for a family other than
 * IPv4/IPv6, or -EPROTO if malformed. For a multipath route the first next
 * hop's interface and gateway are reported.
 */
export function decodeRoute(
  buf: Uint8Array,
  start: number,
  end: number,
): RouteInfo | null | number {
  if (start < 0 || end > buf.length || end - start < RTMSG_SIZE) return -EPROTO;
  const family = familyOfAf(buf[start + RTM_FAMILY]);
  if (family === 0) return null;
  const size = familyBytes(family);
  const dv = dataViewOf(buf);
  let dst: Uint8Array | null = null;
  let gateway: Uint8Array | null = null;
  let index = 0;
  let metric = 0;
  let table = buf[start + RTM_TABLE];
  let multipath = -1; // offset of RTA_MULTIPATH's value, and its end
  let multipathEnd = -1;
  const a = decodeAttrs;
  a.reset(buf, start + RTMSG_SIZE, end);
  for (let rc = a.next(); rc !== 0; rc = a.next()) {
    if (rc < 0) return rc;
    switch (a.type) {
      case RTA_DST:
        dst = a.bytes();
        break;
      case RTA_GATEWAY:
        gateway = a.bytes();
        break;
      case RTA_OIF:
        index = Math.max(0, a.u32());
        break;
      case RTA_PRIORITY:
        metric = Math.max(0, a.u32());
        break;
      case RTA_TABLE:
        if (a.u32() >= 0) table = a.u32();
        break;
      case RTA_MULTIPATH:
        multipath = a.start;
        multipathEnd = a.end;
        break;
    }
  }
  if (multipath >= 0 && index === 0 && gateway === null) {
    // The first rtnexthop: fixed part, then its own attributes.
    if (multipathEnd - multipath < RTNH_SIZE) return -EPROTO;
    const nhLen = dv.getUint16(multipath + RTNH_LEN, true);
    if (nhLen < RTNH_SIZE || nhLen > multipathEnd - multipath) return -EPROTO;
    index = Math.max(0, dv.getInt32(multipath + RTNH_IFINDEX, true));
    a.reset(buf, multipath + RTNH_SIZE, multipath + nhLen);
    for (let rc = a.next(); rc !== 0; rc = a.next()) {
      if (rc < 0) return rc;
      if (a.type === RTA_GATEWAY) gateway = a.bytes();
    }
  }
  if (dst !== null && dst.length !== size) return -EPROTO;
  if (gateway !== null && gateway.length !== size) return -EPROTO;
  const prefixLen = buf[start + RTM_DST_LEN];
  if (prefixLen > size * 8) return -EPROTO;
  return {
    family,
    dst: dst ?? new Uint8Array(size),
    prefixLen,
    gateway,
    index,
    table,
    metric,
    type: buf[start + RTM_TYPE],
    protocol: buf[start + RTM_PROTOCOL],
    scope: buf[start + RTM_SCOPE],
  };
}

// ---------------------------------------------------------------------------
// The socket

/** Options for {@linkcode Netlink}. */
export interface NetlinkOptions {
  /** Initial receive buffer, at least 64 bytes; grows to fit a larger datagram. Default 32 KiB. */
  readonly recvBufferBytes?: number;
  /** Longest wait for an answer, in milliseconds. Default 2000. */
  readonly timeoutMs?: number;
}

/** A route to add with {@linkcode Netlink.routeAdd} (main table, unicast). */
export interface RouteSpec {
  /** Destination, network order; omit (with prefixLen 0) for the default route. */
  readonly dst?: Uint8Array;
  /** Destination prefix length; 0 for the default route. */
  readonly prefixLen: number;
  /** Next hop; omit for a route straight onto the link. */
  readonly gateway?: Uint8Array;
  /** Output interface index. */
  readonly index: number;
  /** Metric; omitted means the kernel's default (0 for IPv4, 1024 for IPv6). */
  readonly metric?: number;
}

/** What a single-link query asks for: an index or a name. */
type LinkKey = { readonly index: number } | { readonly name: string };

function validIndex(index: number): boolean {
  return Number.isInteger(index) && index > 0 && index <= 0x7fffffff;
}

function validFamily(family: number): family is 4 | 6 {
  return family === 4 || family === 6;
}

/**
 * An rtnetlink socket in the network namespace of the thread that created
 * it. Every method blocks until the kernel has answered and returns a plain
 * value or -errno (see the module comment); {@linkcode lastError} holds the
 * kernel's text explanation of the most recent failure, when it gave one.
 */
export class Netlink {
  /** The socket's netlink port id (assigned by the kernel at bind). */
  readonly portId: number;
  /** The kernel's text explanation of the last failed request (extended ack), or "". */
  lastError = "";
  #fd: number;
  #seq: number;
  #rx: Uint8Array;
  #datagrams = 0;
  readonly #timeoutMs: number;
  readonly #tx = new NlMsgBuilder(512);
  readonly #scanner = new NlReplyScanner();
  readonly #kernel = new Uint8Array(SOCKADDR_NL_SIZE);
  readonly #peer = new Uint8Array(SOCKADDR_NL_SIZE);
  readonly #peerLen = new Uint32Array(1);

  /**
   * Opens and binds a NETLINK_ROUTE socket with a receive timeout. Throws
   * `SysError` if the socket cannot be made.
   */
  constructor(opts: NetlinkOptions = {}) {
    this.#timeoutMs = opts.timeoutMs ?? 2000;
    this.#rx = new Uint8Array(Math.max(64, opts.recvBufferBytes ?? 32768));
    this.#kernel[0] = sys.AF_NETLINK; // port id 0 is the kernel; groups 0
    const fd = sys.sysCheck(
      sys.socket(sys.AF_NETLINK, sys.SOCK_RAW | sys.SOCK_CLOEXEC, sys.NETLINK_ROUTE),
      "socket(AF_NETLINK)",
    );
    this.#fd = fd;
    try {
      const local = new Uint8Array(SOCKADDR_NL_SIZE);
      local[0] = sys.AF_NETLINK; // port id 0: the kernel picks one
      sys.sysCheck(sys.bind(fd, local, SOCKADDR_NL_SIZE), "bind(AF_NETLINK)");
      const len = new Uint32Array([SOCKADDR_NL_SIZE]);
      sys.sysCheck(sys.getsockname(fd, local, len), "getsockname(AF_NETLINK)");
      this.portId = dataViewOf(local).getUint32(SOCKADDR_NL_PID, true);
      const tv = new Uint8Array(TIMEVAL_SIZE);
      const tvView = dataViewOf(tv);
      tvView.setUint32(0, Math.floor(this.#timeoutMs / 1000), true);
      tvView.setUint32(8, (this.#timeoutMs % 1000) * 1000, true);
      sys.sysCheck(
        sys.setsockopt(fd, sys.SOL_SOCKET, sys.SO_RCVTIMEO, tv),
        "setsockopt(SO_RCVTIMEO)",
      );
      // Both are optional comforts (smaller acks, error text); old kernels lack them.
      sys.setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      sys.setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
    } catch (e) {
      sys.close(fd);
      throw e;
    }
    // Like iproute2: start numbering from the clock, so left-overs of another
    // socket that had the same port id are unlikely to match.
    this.#seq = Math.floor(Date.now() / 1000) >>> 0;
  }

  /** Datagrams received so far (diagnostics: shows a dump spanned several). */
  get datagramsReceived(): number {
    return this.#datagrams;
  }

  /** Closes the socket; later calls return -EBADF. */
  close(): void {
    if (this.#fd >= 0) sys.close(this.#fd);
    this.#fd = -1;
  }

  // -------------------------------------------------------------------------
  // Links

  /** The index of the interface called `name`, or -ENODEV if there is none. */
  linkIndex(name: string): number {
    const link = this.#linkQuery({ name });
    return typeof link === "number" ? link : link.index;
  }

  /** The interface with index `index`, or -errno (-ENODEV if there is none). */
  linkGet(index: number): LinkInfo | number {
    if (!validIndex(index)) return -EINVAL;
    return this.#linkQuery({ index });
  }

  /** Every interface in the namespace, or -errno. */
  linkList(): LinkInfo[] | number {
    return this.#dump(RTM_GETLINK, () => {
      this.#tx.ifinfomsg(AF_UNSPEC, 0, 0, 0);
      this.#tx.attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    }, decodeLink);
  }

  /** Sets the interface administratively up or down: 0 or -errno. */
  linkSetUp(index: number, up: boolean): number {
    if (!validIndex(index)) return -EINVAL;
    this.#begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    this.#tx.ifinfomsg(AF_UNSPEC, index, up ? IFF_UP : 0, IFF_UP);
    return this.#transact(null);
  }

  /** Sets the interface's MTU: 0 or -errno (-EINVAL if the device refuses the value). */
  linkSetMtu(index: number, mtu: number): number {
    if (!validIndex(index) || !Number.isInteger(mtu) || mtu <= 0 || mtu > 0xffffffff) {
      return -EINVAL;
    }
    this.#begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    this.#tx.ifinfomsg(AF_UNSPEC, index, 0, 0);
    this.#tx.attrU32(IFLA_MTU, mtu);
    return this.#transact(null);
  }

  /** Sets the interface's hardware address: 0 or -errno. */
  linkSetMac(index: number, mac: Uint8Array): number {
    // MAX_ADDR_LEN is 32; the device checks the exact length it needs.
    if (!validIndex(index) || mac.length === 0 || mac.length > 32) return -EINVAL;
    this.#begin(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK);
    this.#tx.ifinfomsg(AF_UNSPEC, index, 0, 0);
    this.#tx.attr(IFLA_ADDRESS, mac);
    return this.#transact(null);
  }

  // -------------------------------------------------------------------------
  // Addresses

  /**
   * Adds `addr/prefixLen` to interface `index`: 0 or -errno (-EEXIST if it
   * is already there). `noDad` (IPv6) skips duplicate address detection so
   * the address is usable at once instead of tentative for a second or two.
   */
  addrAdd(
    index: number,
    family: 4 | 6,
    addr: Uint8Array,
    prefixLen: number,
    opts: { readonly noDad?: boolean } = {},
  ): number {
    if (!validIndex(index) || !validFamily(family)) return -EINVAL;
    if (addr.length !== familyBytes(family)) return -EINVAL;
    if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > addr.length * 8) {
      return -EINVAL;
    }
    const flags = opts.noDad && family === 6 ? IFA_F_NODAD : 0;
    this.#begin(RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    this.#tx.ifaddrmsg(afOf(family), prefixLen, flags, RT_SCOPE_UNIVERSE, index);
    this.#tx.attr(IFA_LOCAL, addr);
    this.#tx.attr(IFA_ADDRESS, addr);
    if (flags !== 0) this.#tx.attrU32(IFA_FLAGS, flags);
    return this.#transact(null);
  }

  /** Every address of `family` (both if omitted) on every interface, or -errno. */
  addrList(family?: 4 | 6): AddrInfo[] | number {
    if (family !== undefined && !validFamily(family)) return -EINVAL;
    const af = family === undefined ? AF_UNSPEC : afOf(family);
    const all = this.#dump(RTM_GETADDR, () => this.#tx.ifaddrmsg(af, 0, 0, 0, 0), decodeAddr);
    if (typeof all === "number" || family === undefined) return all;
    return all.filter((a) => a.family === family);
  }

  // -------------------------------------------------------------------------
  // Routes

  /**
   * Adds a unicast route to the main table: 0 or -errno (-EEXIST if it is
   * already there, -ENETUNREACH for an IPv4 gateway no connected prefix
   * covers). Without `dst` and with prefixLen 0 it is the default route.
   */
  routeAdd(family: 4 | 6, route: RouteSpec): number {
    if (!validFamily(family) || !validIndex(route.index)) return -EINVAL;
    const size = familyBytes(family);
    const { dst, prefixLen, gateway, metric } = route;
    if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > size * 8) return -EINVAL;
    if (dst !== undefined && dst.length !== size) return -EINVAL;
    if (dst === undefined && prefixLen !== 0) return -EINVAL;
    if (gateway !== undefined && gateway.length !== size) return -EINVAL;
    if (metric !== undefined && (!Number.isInteger(metric) || metric < 0 || metric > 0xffffffff)) {
      return -EINVAL;
    }
    // An IPv4 route without a gateway reaches hosts on the link itself
    // (`ip route add ... dev X` picks link scope the same way).
    const scope = family === 4 && gateway === undefined ? RT_SCOPE_LINK : RT_SCOPE_UNIVERSE;
    this.#begin(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    this.#tx.rtmsg(afOf(family), prefixLen, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST);
    if (dst !== undefined) this.#tx.attr(RTA_DST, dst);
    if (gateway !== undefined) this.#tx.attr(RTA_GATEWAY, gateway);
    this.#tx.attrU32(RTA_OIF, route.index);
    if (metric !== undefined) this.#tx.attrU32(RTA_PRIORITY, metric);
    return this.#transact(null);
  }

  /**
   * The routes of `family` in table `opts.table` (default: main; 0: every
   * table), in the kernel's order, or -errno.
   */
  routeList(family: 4 | 6, opts: { readonly table?: number } = {}): RouteInfo[] | number {
    if (!validFamily(family)) return -EINVAL;
    const table = opts.table ?? RT_TABLE_MAIN;
    const all = this.#dump(
      RTM_GETROUTE,
      () => this.#tx.rtmsg(afOf(family), 0, 0, 0, 0, 0),
      decodeRoute,
    );
    if (typeof all === "number") return all;
    return all.filter((r) => r.family === family && (table === 0 || r.table === table));
  }

  /**
   * The main table's default route for `family` — unicast, through an
   * interface — with the lowest metric (the one the kernel uses; the first
   * listed on a tie), null if there is none, or -errno.
   */
  defaultRoute(family: 4 | 6): RouteInfo | null | number {
    const routes = this.routeList(family);
    if (typeof routes === "number") return routes;
    let best: RouteInfo | null = null;
    for (const r of routes) {
      if (r.prefixLen !== 0 || r.type !== RTN_UNICAST || r.index === 0) continue;
      if (best === null || r.metric < best.metric) best = r;
    }
    return best;
  }

  // -------------------------------------------------------------------------
  // Plumbing

  #linkQuery(key: LinkKey): LinkInfo | number {
    let name = "";
    let index = 0;
    if ("name" in key) {
      name = key.name;
      const n = new TextEncoder().encode(name).length;
      if (n === 0 || n >= sys.IFNAMSIZ) return -EINVAL;
    } else {
      index = key.index;
    }
    this.#begin(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK);
    this.#tx.ifinfomsg(AF_UNSPEC, index, 0, 0);
    if (name !== "") this.#tx.attrString(IFLA_IFNAME, name);
    this.#tx.attrU32(IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
    let found: LinkInfo | null = null;
    const rc = this.#transact((type, buf, start, end) => {
      if (type !== RTM_NEWLINK) return 0;
      const link = decodeLink(buf, start, end);
      if (typeof link === "number") return link;
      found ??= link;
      return 0;
    });
    if (rc < 0) return rc;
    return found ?? -ENODEV;
  }

  /**
   * Runs a dump: `header` writes the request's family header after the
   * nlmsghdr; each answer object of the matching type goes through `decode`.
   * A dump the kernel marks inconsistent (the objects changed meanwhile) is
   * repeated, up to three times in all.
   */
  #dump<T>(
    requestType: number,
    header: () => void,
    decode: (buf: Uint8Array, start: number, end: number) => T | null | number,
  ): T[] | number {
    const answerType = requestType - 2; // RTM_GETx answers with RTM_NEWx
    for (let attempt = 1;; attempt++) {
      const out: T[] = [];
      this.#begin(requestType, NLM_F_REQUEST | NLM_F_DUMP);
      header();
      const rc = this.#transact((type, buf, start, end) => {
        if (type !== answerType) return 0;
        const v = decode(buf, start, end);
        if (typeof v === "number") return v;
        if (v !== null) out.push(v);
        return 0;
      });
      if (rc < 0) return rc;
      if (!this.#scanner.interrupted) return out;
      if (attempt === 3) {
        logWarn(`netlink: dump of type ${requestType} kept changing; using the last one`);
        return out;
      }
    }
  }

  #begin(type: number, flags: number): void {
    this.#seq = (this.#seq + 1) >>> 0;
    this.#tx.begin(type, flags, this.#seq);
  }

  /** Sends the built request and reads its whole answer: 0 or -errno. */
  #transact(visit: NlVisitor | null): number {
    const len = this.#tx.finish();
    if (len < 0) return len;
    this.lastError = "";
    let rc: number;
    do {
      rc = sys.sendto(this.#fd, this.#tx.bytes, len, 0, this.#kernel, SOCKADDR_NL_SIZE);
    } while (rc === -EINTR);
    if (rc < 0) return rc;
    if (rc !== len) return -EMSGSIZE;
    const scanner = this.#scanner;
    scanner.begin(this.#seq);
    const deadline = performance.now() + this.#timeoutMs;
    for (;;) {
      const n = this.#recv();
      if (n < 0) return n;
      const r = scanner.feed(this.#rx, n, visit);
      if (r !== NL_REPLY_MORE) {
        if (r < 0 && scanner.message !== "") {
          this.lastError = scanner.message;
          logDebug(`netlink: ${sys.errnoName(-r)}: ${scanner.message}`);
        }
        return r;
      }
      if (performance.now() > deadline) return -ETIMEDOUT;
    }
  }

  /**
   * Receives one datagram from the kernel into the receive buffer, growing it
   * first if the datagram is larger: its length, or -errno (-ETIMEDOUT).
   * Datagrams from anything but the kernel (port id 0) are dropped.
   */
  #recv(): number {
    for (;;) {
      // MSG_TRUNC makes netlink report the datagram's full size; MSG_PEEK leaves it queued.
      let size = this.#recvFrom(sys.MSG_PEEK | sys.MSG_TRUNC);
      if (size < 0) return size;
      if (size > this.#rx.length) this.#rx = new Uint8Array(nlAlign(size) + 4096);
      size = this.#recvFrom(0);
      if (size < 0) return size;
      this.#datagrams++;
      if (this.#peerLen[0] < SOCKADDR_NL_SIZE || this.#peer[0] !== sys.AF_NETLINK) continue;
      if (dataViewOf(this.#peer).getUint32(SOCKADDR_NL_PID, true) !== 0) continue;
      return size;
    }
  }

  #recvFrom(flags: number): number {
    for (;;) {
      this.#peerLen[0] = SOCKADDR_NL_SIZE;
      const rc = sys.recvfrom(
        this.#fd,
        this.#rx,
        this.#rx.length,
        flags,
        this.#peer,
        this.#peerLen,
      );
      if (rc === -EINTR) continue;
      return rc === -EAGAIN ? -ETIMEDOUT : rc;
    }
  }
}
