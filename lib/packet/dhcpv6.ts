/**
 * DHCPv6 messages between clients and servers (RFC 8415).
 *
 * ## Theory of operation
 *
 * A message is a 1-byte message type, a 3-byte transaction id and options to
 * the end of the UDP payload. Every option is a TLV: 2-byte code, 2-byte
 * length, value. Some options hold options of their own after a fixed part:
 * IA_NA (3) after IAID, T1 and T2; IA Address (5) after the address and two
 * lifetimes. Relay messages (RELAY-FORW, RELAY-REPL) have another header;
 * tapir is no relay, so `wrap` refuses them ({@linkcode WireError.Unsupported}).
 *
 * `wrap` checks only that the 4-byte header is there. Option areas are
 * walked by {@linkcode dhcp6OptionsCheck}, which requires the TLVs to tile the
 * area exactly: a header or value running past its end is
 * {@linkcode WireError.BadOption} (a cut-off message looks like that, so it is
 * never read as a shorter valid one). {@linkcode dhcp6OptionFind} looks an
 * option up in any area — the message's or one nested inside an option —
 * without allocating, and stops at anything malformed. {@linkcode dhcp6Parse}
 * checks every level it knows and reads a {@linkcode Dhcp6Repr}.
 *
 * DUIDs (client and server identifiers) are kept as opaque bytes when parsed;
 * for building a server identifier, {@linkcode dhcp6DuidLlEmit} and
 * {@linkcode dhcp6DuidLltEmit} write the two link-layer kinds. Domain lists
 * share their encoding with DHCPv4 option 119 (`dnsname.ts`), without
 * compression, which RFC 8415 §10 forbids. IPv6 addresses are 16-byte arrays.
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { dnsNameListDecode, dnsNameListEmit, dnsNameListWireLen } from "./dnsname.ts";
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

// RFC 8415 §8, client/server message format:
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |    msg-type   |               transaction-id                  |  0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// .                            options                            .  4
// .                           (variable)                          .
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
const F = { msgType: 0, xid: 1, options: 4 } as const;

// RFC 8415 §21.1, option format:
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// |          option-code          |           option-len          |  0
// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
// .                          option-data                          .  4
const O = { code: 0, len: 2, data: 4 } as const;

// RFC 8415 §21.4, IA_NA option data:      §21.6, IA Address option data:
// +-------------------------------+      +-------------------------------+
// |          IAID (4)             |  0   |      IPv6-address (16)        |  0
// |          T1 (4)               |  4   |  preferred-lifetime (4)       | 16
// |          T2 (4)               |  8   |  valid-lifetime (4)           | 20
// .      IA_NA-options            . 12   .      IAaddr-options           . 24
const IA = { iaid: 0, t1: 4, t2: 8, options: 12 } as const;
const IAA = { addr: 0, preferred: 16, valid: 20, options: 24 } as const;

/** Length of the message header (type and transaction id). */
export const DHCP6_HEADER_LEN: number = F.options;
/** Length of an option header (code and length). */
export const DHCP6_OPTION_HEADER_LEN: number = O.data;
/** Length of the fixed part of IA_NA option data (IAID, T1, T2). */
export const DHCP6_IA_NA_LEN: number = IA.options;
/** Length of the fixed part of IA Address option data (address, lifetimes). */
export const DHCP6_IAADDR_LEN: number = IAA.options;
/** Longest DUID: a 2-byte type and at most 128 bytes (RFC 8415 §11.1). */
export const DHCP6_DUID_MAX_LEN = 130;
/** UDP port of DHCPv6 clients. */
export const DHCP6_CLIENT_PORT = 546;
/** UDP port of DHCPv6 servers and relay agents. */
export const DHCP6_SERVER_PORT = 547;
/** All_DHCP_Relay_Agents_and_Servers, ff02::1:2 (RFC 8415 §7.1). Shared: never write into it. */
export const DHCP6_ALL_SERVERS: Uint8Array = new Uint8Array([
  0xff,
  0x02,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  0,
  1,
  0,
  2,
]);
/** Seconds from the Unix epoch to 2000-01-01T00:00:00Z, the DUID-LLT epoch. */
export const DHCP6_DUID_EPOCH = 946684800;
/** ARP hardware type of Ethernet, used in link-layer DUIDs. */
export const DHCP6_HWTYPE_ETHERNET = 1;
/** Lifetime and T1/T2 value meaning "infinity" (RFC 8415 §7.7). */
export const DHCP6_INFINITY = 0xffffffff;

/** DHCPv6 message types (RFC 8415 §7.3). */
export const Dhcp6MessageType = {
  Solicit: 1,
  Advertise: 2,
  Request: 3,
  Confirm: 4,
  Renew: 5,
  Rebind: 6,
  Reply: 7,
  Release: 8,
  Decline: 9,
  Reconfigure: 10,
  InformationRequest: 11,
  RelayForw: 12,
  RelayRepl: 13,
} as const;
/** One of the {@linkcode Dhcp6MessageType} values. */
export type Dhcp6MessageType = (typeof Dhcp6MessageType)[keyof typeof Dhcp6MessageType];

/** Printable names of {@linkcode Dhcp6MessageType} values, for logs. */
export const DHCP6_MESSAGE_TYPE_NAMES: Record<Dhcp6MessageType, string> = {
  1: "SOLICIT",
  2: "ADVERTISE",
  3: "REQUEST",
  4: "CONFIRM",
  5: "RENEW",
  6: "REBIND",
  7: "REPLY",
  8: "RELEASE",
  9: "DECLINE",
  10: "RECONFIGURE",
  11: "INFORMATION-REQUEST",
  12: "RELAY-FORW",
  13: "RELAY-REPL",
};

/** Option codes (RFC 8415 §21 unless noted). Other codes are kept as numbers. */
export const Dhcp6Option = {
  ClientId: 1,
  ServerId: 2,
  IaNa: 3,
  IaTa: 4,
  IaAddr: 5,
  Oro: 6,
  Preference: 7,
  ElapsedTime: 8,
  RelayMsg: 9,
  Auth: 11,
  Unicast: 12,
  StatusCode: 13,
  RapidCommit: 14,
  UserClass: 15,
  VendorClass: 16,
  VendorOpts: 17,
  InterfaceId: 18,
  ReconfMsg: 19,
  ReconfAccept: 20,
  DnsServers: 23, // RFC 3646
  DomainList: 24, // RFC 3646
  IaPd: 25,
  IaPrefix: 26,
  InfoRefreshTime: 32,
  ClientFqdn: 39, // RFC 4704
  BootfileUrl: 59, // RFC 5970
  SolMaxRt: 82,
  InfMaxRt: 83,
} as const;
/** One of the {@linkcode Dhcp6Option} codes. */
export type Dhcp6Option = (typeof Dhcp6Option)[keyof typeof Dhcp6Option];

/** Status codes of the STATUS_CODE option (RFC 8415 §21.13). */
export const Dhcp6Status = {
  Success: 0,
  UnspecFail: 1,
  NoAddrsAvail: 2,
  NoBinding: 3,
  NotOnLink: 4,
  UseMulticast: 5,
  NoPrefixAvail: 6,
} as const;
/** One of the {@linkcode Dhcp6Status} values. */
export type Dhcp6Status = (typeof Dhcp6Status)[keyof typeof Dhcp6Status];

/** DUID types (RFC 8415 §11). */
export const DuidType = { Llt: 1, En: 2, Ll: 3, Uuid: 4 } as const;
/** One of the {@linkcode DuidType} values. */
export type DuidType = (typeof DuidType)[keyof typeof DuidType];

/**
 * Checks that the options in `buf[start..end)` tile it exactly: 0, or
 * {@linkcode WireError.BadOption} for a header or value running past `end`.
 * One level only: options nested in an option are the caller's to check.
 */
export function dhcp6OptionsCheck(buf: Uint8Array, start: number, end: number): WireError | 0 {
  let p = start;
  while (p < end) {
    if (p + O.data > end) return WireError.BadOption;
    p += O.data + get16(buf, p + O.len);
  }
  return p === end ? 0 : WireError.BadOption;
}

/**
 * Offset of the value of the first option `code` in `buf[start..end)`, or -1
 * if there is none before the end or a malformed option. The value's length
 * is {@linkcode dhcp6OptionLength}; to find the next instance, search again
 * from the end of this value. Allocates nothing.
 */
export function dhcp6OptionFind(buf: Uint8Array, start: number, end: number, code: number): number {
  let p = start;
  while (p + O.data <= end) {
    const len = get16(buf, p + O.len);
    if (p + O.data + len > end) return -1;
    if (get16(buf, p + O.code) === code) return p + O.data;
    p += O.data + len;
  }
  return -1;
}

/** Length of the option value at `valueOffset` (a result of {@linkcode dhcp6OptionFind}). */
export function dhcp6OptionLength(buf: Uint8Array, valueOffset: number): number {
  return get16(buf, valueOffset - O.data + O.len);
}

/** Reusable view of a DHCPv6 client/server message; see `wire.ts` for the contract. */
export class Dhcp6Message {
  /** Buffer holding the message. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the message type byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the message (the UDP payload length). */
  len = 0;

  /**
   * Points the view at the DHCPv6 message at `buf[off..]` with `len` bytes.
   * Refuses fewer than 4 bytes and relay messages. On error the view is
   * unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < F.options || off + len > buf.length) return WireError.Truncated;
    const type = buf[off + F.msgType];
    if (type === Dhcp6MessageType.RelayForw || type === Dhcp6MessageType.RelayRepl) {
      return WireError.Unsupported;
    }
    this.buf = buf;
    this.off = off;
    this.len = len;
    return 0;
  }

  /** A new view over `buf[off..off+len)`, or why it cannot be one. */
  static checked(
    buf: Uint8Array,
    off = 0,
    len: number = buf.length - off,
  ): Dhcp6Message | WireError {
    const m = new Dhcp6Message();
    const err = m.wrap(buf, off, len);
    return err === 0 ? m : err;
  }

  /** Message type ({@linkcode Dhcp6MessageType}). */
  get msgType(): number {
    return this.buf[this.off + F.msgType];
  }
  set msgType(v: number) {
    this.buf[this.off + F.msgType] = v;
  }
  /** Transaction id (24 bits). */
  get transactionId(): number {
    return get32(this.buf, this.off) & 0xffffff;
  }
  set transactionId(v: number) {
    const p = this.off + F.xid;
    this.buf[p] = v >>> 16;
    set16(this.buf, p + 1, v);
  }
  /** Offset of the first option in {@linkcode buf}. */
  get optionsOffset(): number {
    return this.off + F.options;
  }
  /** Offset just past the last byte of the message in {@linkcode buf}. */
  get optionsEnd(): number {
    return this.off + this.len;
  }
  /** Bytes of options. */
  get optionsLen(): number {
    return this.len - F.options;
  }

  /** Checks the message's own option level (see {@linkcode dhcp6OptionsCheck}). */
  checkOptions(): WireError | 0 {
    return dhcp6OptionsCheck(this.buf, this.off + F.options, this.off + this.len);
  }
  /**
   * Offset in {@linkcode buf} of the value of the first top-level option
   * `code`, or -1. The value's length is {@linkcode optionLength} of the result.
   */
  optionOffset(code: number): number {
    return dhcp6OptionFind(this.buf, this.off + F.options, this.off + this.len, code);
  }
  /** Length of the option value at `valueOffset`. */
  optionLength(valueOffset: number): number {
    return get16(this.buf, valueOffset - O.data + O.len);
  }
  /** Offset of the client identifier (DUID) value, or -1. */
  get clientIdOffset(): number {
    return this.optionOffset(Dhcp6Option.ClientId);
  }
  /** Offset of the server identifier (DUID) value, or -1. */
  get serverIdOffset(): number {
    return this.optionOffset(Dhcp6Option.ServerId);
  }
  /** Elapsed time (hundredths of a second), or -1 if absent or not 2 bytes. */
  get elapsedTime(): number {
    const v = this.optionOffset(Dhcp6Option.ElapsedTime);
    return v < 0 || this.optionLength(v) !== 2 ? -1 : get16(this.buf, v);
  }
  /** True if the client asked for the two-message exchange (RAPID_COMMIT). */
  get rapidCommit(): boolean {
    return this.optionOffset(Dhcp6Option.RapidCommit) >= 0;
  }
  /** True if the option request option (ORO) names `code`. */
  requestsOption(code: number): boolean {
    const v = this.optionOffset(Dhcp6Option.Oro);
    if (v < 0) return false;
    const end = v + (this.optionLength(v) & ~1);
    for (let p = v; p < end; p += 2) if (get16(this.buf, p) === code) return true;
    return false;
  }
}

/** An address of an IA_NA (the IA Address option). */
export interface Dhcp6IaAddr {
  /** The address, 16 bytes, owned by this object. */
  addr: Uint8Array;
  /** Preferred lifetime, seconds. */
  preferred: number;
  /** Valid lifetime, seconds. */
  valid: number;
  /** Nested STATUS_CODE ({@linkcode Dhcp6Status}), or -1 if absent. */
  status: number;
  /** The status message (UTF-8 text), meaningful when `status` is set. */
  statusMessage: string;
}

/** An identity association for non-temporary addresses (IA_NA). */
export interface Dhcp6IaNa {
  /** The client's identifier for this IA. */
  iaid: number;
  /** T1: when the client should renew, seconds. */
  t1: number;
  /** T2: when the client should rebind, seconds. */
  t2: number;
  /** Its addresses. */
  addrs: Dhcp6IaAddr[];
  /** Nested STATUS_CODE ({@linkcode Dhcp6Status}), or -1 if absent. */
  status: number;
  /** The status message, meaningful when `status` is set. */
  statusMessage: string;
}

/**
 * Fields of a DHCPv6 message and the options tapir knows. Absent options are
 * -1, null, false or empty arrays.
 */
export interface Dhcp6Repr {
  /** Message type ({@linkcode Dhcp6MessageType}). */
  msgType: number;
  /** Transaction id (24 bits). */
  transactionId: number;
  /** CLIENTID: the client's DUID. */
  clientId: Uint8Array | null;
  /** SERVERID: the server's DUID. */
  serverId: Uint8Array | null;
  /** ELAPSED_TIME, hundredths of a second. */
  elapsedTime: number;
  /** ORO: the option codes the client asks for. */
  oro: number[];
  /** PREFERENCE (0..255). */
  preference: number;
  /** RAPID_COMMIT present. */
  rapidCommit: boolean;
  /** IA_NA options, in message order. */
  iaNa: Dhcp6IaNa[];
  /** Top-level STATUS_CODE ({@linkcode Dhcp6Status}). */
  status: number;
  /** Top-level status message. */
  statusMessage: string;
  /** DNS_SERVERS: 16-byte addresses. */
  dnsServers: Uint8Array[];
  /** DOMAIN_LIST: domain names. */
  domainList: string[];
  /** OPT_BOOTFILE_URL (RFC 5970): the URL of a boot file; "" when absent. */
  bootfileUrl: string;
}

/** A {@linkcode Dhcp6Repr} with type 0 and every option absent. */
export function dhcp6ReprNew(): Dhcp6Repr {
  return {
    msgType: 0,
    transactionId: 0,
    clientId: null,
    serverId: null,
    elapsedTime: -1,
    oro: [],
    preference: -1,
    rapidCommit: false,
    iaNa: [],
    status: -1,
    statusMessage: "",
    dnsServers: [],
    domainList: [],
    bootfileUrl: "",
  };
}

/** A new IA_NA with no addresses and no status. */
export function dhcp6IaNaNew(iaid = 0, t1 = 0, t2 = 0): Dhcp6IaNa {
  return { iaid, t1, t2, addrs: [], status: -1, statusMessage: "" };
}

/** A new IA Address holding a copy of the 16 bytes at `addr[addrOff..]`. */
export function dhcp6IaAddrNew(
  addr: Uint8Array,
  preferred: number,
  valid: number,
  addrOff = 0,
): Dhcp6IaAddr {
  return {
    addr: addr.slice(addrOff, addrOff + 16),
    preferred,
    valid,
    status: -1,
    statusMessage: "",
  };
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/** A STATUS_CODE value at `v` (length `len`): code and message, or an error. */
function statusDecode(
  buf: Uint8Array,
  v: number,
  len: number,
): { status: number; message: string } | WireError {
  if (len < 2) return WireError.BadOption;
  return { status: get16(buf, v), message: utf8Decoder.decode(buf.subarray(v + 2, v + len)) };
}

/** Reads the nested STATUS_CODE of `buf[start..end)` into `out`, if present. */
function nestedStatus(
  buf: Uint8Array,
  start: number,
  end: number,
  out: { status: number; statusMessage: string },
): WireError | 0 {
  out.status = -1;
  out.statusMessage = "";
  const s = dhcp6OptionFind(buf, start, end, Dhcp6Option.StatusCode);
  if (s < 0) return 0;
  const st = statusDecode(buf, s, dhcp6OptionLength(buf, s));
  if (typeof st === "number") return st;
  out.status = st.status;
  out.statusMessage = st.message;
  return 0;
}

/** Parses the IA_NA value at `buf[v..v+len)`, nested options included. */
function iaNaDecode(buf: Uint8Array, v: number, len: number): Dhcp6IaNa | WireError {
  if (len < IA.options) return WireError.BadOption;
  const start = v + IA.options;
  const end = v + len;
  if (dhcp6OptionsCheck(buf, start, end) !== 0) return WireError.BadOption;
  const ia = dhcp6IaNaNew(get32(buf, v + IA.iaid), get32(buf, v + IA.t1), get32(buf, v + IA.t2));
  const err = nestedStatus(buf, start, end, ia);
  if (err !== 0) return err;
  for (let a = dhcp6OptionFind(buf, start, end, Dhcp6Option.IaAddr); a >= 0;) {
    const alen = dhcp6OptionLength(buf, a);
    if (alen < IAA.options) return WireError.BadOption;
    const aStart = a + IAA.options;
    const aEnd = a + alen;
    if (dhcp6OptionsCheck(buf, aStart, aEnd) !== 0) return WireError.BadOption;
    const addr = dhcp6IaAddrNew(
      buf,
      get32(buf, a + IAA.preferred),
      get32(buf, a + IAA.valid),
      a + IAA.addr,
    );
    const aErr = nestedStatus(buf, aStart, aEnd, addr);
    if (aErr !== 0) return aErr;
    ia.addrs.push(addr);
    a = dhcp6OptionFind(buf, aEnd, end, Dhcp6Option.IaAddr);
  }
  return ia;
}

/** A DUID value at `v`: a copy, or an error if shorter than its type or longer than allowed. */
function duidDecode(buf: Uint8Array, v: number): Uint8Array | WireError {
  const len = dhcp6OptionLength(buf, v);
  if (len < 2 || len > DHCP6_DUID_MAX_LEN) return WireError.BadOption;
  return buf.slice(v, v + len);
}

/**
 * Reads a wrapped message into `out`, checking its meaning: option areas
 * that tile exactly at every level it knows (the message, IA_NA, IA Address)
 * and the right size for every option it reads ({@linkcode WireError.BadOption}).
 * Unknown options are skipped; of repeated single options the first counts.
 * On error `out` may be partly filled. Allocates: for slow paths and tests.
 */
export function dhcp6Parse(
  msg: Dhcp6Message,
  out: Dhcp6Repr = dhcp6ReprNew(),
): Dhcp6Repr | WireError {
  const err = msg.checkOptions();
  if (err !== 0) return err;
  const buf = msg.buf;
  const start = msg.optionsOffset;
  const end = msg.optionsEnd;
  out.msgType = msg.msgType;
  out.transactionId = msg.transactionId;

  const c = msg.clientIdOffset;
  const clientId = c < 0 ? null : duidDecode(buf, c);
  if (typeof clientId === "number") return clientId;
  out.clientId = clientId;
  const s = msg.serverIdOffset;
  const serverId = s < 0 ? null : duidDecode(buf, s);
  if (typeof serverId === "number") return serverId;
  out.serverId = serverId;

  const e = msg.optionOffset(Dhcp6Option.ElapsedTime);
  if (e >= 0 && msg.optionLength(e) !== 2) return WireError.BadOption;
  out.elapsedTime = e < 0 ? -1 : get16(buf, e);

  const pref = msg.optionOffset(Dhcp6Option.Preference);
  if (pref >= 0 && msg.optionLength(pref) !== 1) return WireError.BadOption;
  out.preference = pref < 0 ? -1 : buf[pref];

  const rc = msg.optionOffset(Dhcp6Option.RapidCommit);
  if (rc >= 0 && msg.optionLength(rc) !== 0) return WireError.BadOption;
  out.rapidCommit = rc >= 0;

  out.oro = [];
  const oro = msg.optionOffset(Dhcp6Option.Oro);
  if (oro >= 0) {
    const len = msg.optionLength(oro);
    if (len % 2 !== 0) return WireError.BadOption;
    for (let p = oro; p < oro + len; p += 2) out.oro.push(get16(buf, p));
  }

  const stErr = nestedStatus(buf, start, end, out);
  if (stErr !== 0) return stErr;

  out.iaNa = [];
  for (let v = msg.optionOffset(Dhcp6Option.IaNa); v >= 0;) {
    const len = msg.optionLength(v);
    const ia = iaNaDecode(buf, v, len);
    if (typeof ia === "number") return ia;
    out.iaNa.push(ia);
    v = dhcp6OptionFind(buf, v + len, end, Dhcp6Option.IaNa);
  }

  out.dnsServers = [];
  const dns = msg.optionOffset(Dhcp6Option.DnsServers);
  if (dns >= 0) {
    const len = msg.optionLength(dns);
    if (len % 16 !== 0) return WireError.BadOption;
    for (let p = dns; p < dns + len; p += 16) out.dnsServers.push(buf.slice(p, p + 16));
  }

  out.domainList = [];
  const dom = msg.optionOffset(Dhcp6Option.DomainList);
  if (dom >= 0) {
    const names = dnsNameListDecode(buf, dom, msg.optionLength(dom), false);
    if (typeof names === "number") return names;
    out.domainList = names;
  }

  out.bootfileUrl = "";
  const url = msg.optionOffset(Dhcp6Option.BootfileUrl);
  if (url >= 0) {
    const len = msg.optionLength(url);
    for (let p = url; p < url + len; p++) out.bootfileUrl += String.fromCharCode(buf[p]);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Option writers. Each writes one option at `buf[off..]` and returns the
// bytes written; each throws RangeError if they do not fit or a value cannot
// be encoded (values are at most 65535 bytes).

/** Writes an option header for a value of `len` bytes that the caller writes next; returns 4. */
export function dhcp6OptionHeader(buf: Uint8Array, off: number, code: number, len: number): number {
  if (!(len >= 0 && len <= 0xffff)) throw new RangeError(`dhcp6OptionHeader: length ${len}`);
  emitSpace(buf, off, O.data, "dhcp6OptionHeader");
  set16(buf, off + O.code, code);
  set16(buf, off + O.len, len);
  return O.data;
}

/** Writes option `code` with no value (e.g. RAPID_COMMIT); returns 4. */
export function dhcp6OptionEmpty(buf: Uint8Array, off: number, code: number): number {
  return dhcp6OptionHeader(buf, off, code, 0);
}

/** Writes option `code` with a 1-byte value (e.g. PREFERENCE); returns 5. */
export function dhcp6OptionU8(buf: Uint8Array, off: number, code: number, v: number): number {
  emitSpace(buf, off, O.data + 1, "dhcp6OptionU8");
  dhcp6OptionHeader(buf, off, code, 1);
  buf[off + O.data] = v;
  return O.data + 1;
}

/** Writes option `code` with a 2-byte value (e.g. ELAPSED_TIME); returns 6. */
export function dhcp6OptionU16(buf: Uint8Array, off: number, code: number, v: number): number {
  emitSpace(buf, off, O.data + 2, "dhcp6OptionU16");
  dhcp6OptionHeader(buf, off, code, 2);
  set16(buf, off + O.data, v);
  return O.data + 2;
}

/** Writes option `code` holding a list of 2-byte values (e.g. ORO). */
export function dhcp6OptionU16List(
  buf: Uint8Array,
  off: number,
  code: number,
  values: readonly number[],
): number {
  const len = 2 * values.length;
  emitSpace(buf, off, O.data + len, "dhcp6OptionU16List");
  dhcp6OptionHeader(buf, off, code, len);
  for (let i = 0; i < values.length; i++) set16(buf, off + O.data + 2 * i, values[i]);
  return O.data + len;
}

/** Writes option `code` holding `bytes[0..len)` (e.g. CLIENTID, SERVERID with a DUID). */
export function dhcp6OptionBytes(
  buf: Uint8Array,
  off: number,
  code: number,
  bytes: Uint8Array,
  len: number = bytes.length,
): number {
  emitSpace(buf, off, O.data + len, "dhcp6OptionBytes");
  dhcp6OptionHeader(buf, off, code, len);
  bytesCopy(buf, off + O.data, bytes, 0, len);
  return O.data + len;
}

/** Writes option `code` holding the 16-byte addresses `addrs` (e.g. DNS_SERVERS). */
export function dhcp6OptionAddrs(
  buf: Uint8Array,
  off: number,
  code: number,
  addrs: readonly Uint8Array[],
): number {
  const len = 16 * addrs.length;
  emitSpace(buf, off, O.data + len, "dhcp6OptionAddrs");
  dhcp6OptionHeader(buf, off, code, len);
  for (let i = 0; i < addrs.length; i++) bytesCopy(buf, off + O.data + 16 * i, addrs[i], 0, 16);
  return O.data + len;
}

/**
 * Writes option `code` holding the ASCII string `s` (a URL), without a terminator.
 *
 * @throws RangeError if `s` has a character above 0x7f or it does not fit
 */
export function dhcp6OptionAscii(buf: Uint8Array, off: number, code: number, s: string): number {
  emitSpace(buf, off, O.data + s.length, "dhcp6OptionAscii");
  dhcp6OptionHeader(buf, off, code, s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) throw new RangeError(`dhcp6OptionAscii: not ASCII: ${JSON.stringify(s)}`);
    buf[off + O.data + i] = c;
  }
  return O.data + s.length;
}

/**
 * Writes DOMAIN_LIST (24) for `names`, in DNS wire form without compression.
 *
 * @throws RangeError if a name is not valid (see `dnsname.ts`) or it does not fit
 */
export function dhcp6OptionDomainList(
  buf: Uint8Array,
  off: number,
  names: readonly string[],
): number {
  const len = dnsNameListWireLen(names);
  if (len < 0) throw new RangeError(`dhcp6OptionDomainList: invalid name in ${names.join(" ")}`);
  emitSpace(buf, off, O.data + len, "dhcp6OptionDomainList");
  dhcp6OptionHeader(buf, off, Dhcp6Option.DomainList, len);
  dnsNameListEmit(buf, off + O.data, names);
  return O.data + len;
}

/** Bytes of the UTF-8 form of `s` (lone surrogates count as U+FFFD, as the encoder writes them). */
function utf8Len(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      n += 1;
    } else if (c < 0x800) {
      n += 2;
    } else if (
      (c & 0xfc00) === 0xd800 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      n += 4;
      i++;
    } else {
      n += 3;
    }
  }
  return n;
}

/** Bytes {@linkcode dhcp6OptionStatus} writes for `message`. */
function statusLen(message: string): number {
  return O.data + 2 + utf8Len(message);
}

/** Writes STATUS_CODE (13): the code and `message` as UTF-8. */
export function dhcp6OptionStatus(
  buf: Uint8Array,
  off: number,
  status: number,
  message: string,
): number {
  const total = statusLen(message);
  emitSpace(buf, off, total, "dhcp6OptionStatus");
  dhcp6OptionHeader(buf, off, Dhcp6Option.StatusCode, total - O.data);
  set16(buf, off + O.data, status);
  if (message.length > 0) {
    utf8Encoder.encodeInto(message, buf.subarray(off + O.data + 2, off + total));
  }
  return total;
}

/** Bytes {@linkcode dhcp6OptionIaAddr} writes for `a`. */
function iaAddrLen(a: Dhcp6IaAddr): number {
  return O.data + IAA.options + (a.status >= 0 ? statusLen(a.statusMessage) : 0);
}

/** Writes an IA Address option (5) for `a`, with its STATUS_CODE if set. */
export function dhcp6OptionIaAddr(buf: Uint8Array, off: number, a: Dhcp6IaAddr): number {
  const total = iaAddrLen(a);
  emitSpace(buf, off, total, "dhcp6OptionIaAddr");
  dhcp6OptionHeader(buf, off, Dhcp6Option.IaAddr, total - O.data);
  const v = off + O.data;
  bytesCopy(buf, v + IAA.addr, a.addr, 0, 16);
  set32(buf, v + IAA.preferred, a.preferred);
  set32(buf, v + IAA.valid, a.valid);
  if (a.status >= 0) dhcp6OptionStatus(buf, v + IAA.options, a.status, a.statusMessage);
  return total;
}

/** Bytes {@linkcode dhcp6OptionIaNa} writes for `ia`. */
function iaNaLen(ia: Dhcp6IaNa): number {
  let n = O.data + IA.options;
  for (const a of ia.addrs) n += iaAddrLen(a);
  if (ia.status >= 0) n += statusLen(ia.statusMessage);
  return n;
}

/**
 * Writes an IA_NA option (3) for `ia`: IAID, T1, T2, its addresses, then its
 * STATUS_CODE if set.
 */
export function dhcp6OptionIaNa(buf: Uint8Array, off: number, ia: Dhcp6IaNa): number {
  const total = iaNaLen(ia);
  emitSpace(buf, off, total, "dhcp6OptionIaNa");
  dhcp6OptionHeader(buf, off, Dhcp6Option.IaNa, total - O.data);
  const v = off + O.data;
  set32(buf, v + IA.iaid, ia.iaid);
  set32(buf, v + IA.t1, ia.t1);
  set32(buf, v + IA.t2, ia.t2);
  let p = v + IA.options;
  for (const a of ia.addrs) p += dhcp6OptionIaAddr(buf, p, a);
  if (ia.status >= 0) dhcp6OptionStatus(buf, p, ia.status, ia.statusMessage);
  return total;
}

/**
 * Writes a DUID-LL (type 3, RFC 8415 §11.4): type, hardware type and the
 * link-layer address `hwAddr`. Returns the bytes written (10 for Ethernet).
 */
export function dhcp6DuidLlEmit(
  buf: Uint8Array,
  off: number,
  hwType: number,
  hwAddr: Uint8Array,
): number {
  const total = 4 + hwAddr.length;
  emitSpace(buf, off, total, "dhcp6DuidLlEmit");
  set16(buf, off, DuidType.Ll);
  set16(buf, off + 2, hwType);
  bytesCopy(buf, off + 4, hwAddr, 0, hwAddr.length);
  return total;
}

/**
 * Writes a DUID-LLT (type 1, RFC 8415 §11.2): type, hardware type, `time`
 * (seconds since 2000-01-01 UTC, see {@linkcode dhcp6DuidTime}) and the
 * link-layer address `hwAddr`. Returns the bytes written (14 for Ethernet).
 */
export function dhcp6DuidLltEmit(
  buf: Uint8Array,
  off: number,
  hwType: number,
  time: number,
  hwAddr: Uint8Array,
): number {
  const total = 8 + hwAddr.length;
  emitSpace(buf, off, total, "dhcp6DuidLltEmit");
  set16(buf, off, DuidType.Llt);
  set16(buf, off + 2, hwType);
  set32(buf, off + 4, time);
  bytesCopy(buf, off + 8, hwAddr, 0, hwAddr.length);
  return total;
}

/** The DUID-LLT time for a Unix time in seconds (modulo 2^32, as RFC 8415 §11.2 says). */
export function dhcp6DuidTime(unixSeconds: number): number {
  return (Math.floor(unixSeconds) - DHCP6_DUID_EPOCH) >>> 0;
}

/**
 * Bytes {@linkcode dhcp6Emit} writes for `r`.
 *
 * @throws RangeError if a domain name in `r` is not valid
 */
export function dhcp6EmitLen(r: Dhcp6Repr): number {
  let n = F.options;
  if (r.clientId !== null) n += O.data + r.clientId.length;
  if (r.serverId !== null) n += O.data + r.serverId.length;
  if (r.elapsedTime >= 0) n += O.data + 2;
  if (r.oro.length > 0) n += O.data + 2 * r.oro.length;
  if (r.preference >= 0) n += O.data + 1;
  if (r.rapidCommit) n += O.data;
  for (const ia of r.iaNa) n += iaNaLen(ia);
  if (r.status >= 0) n += statusLen(r.statusMessage);
  if (r.dnsServers.length > 0) n += O.data + 16 * r.dnsServers.length;
  if (r.domainList.length > 0) {
    const len = dnsNameListWireLen(r.domainList);
    if (len < 0) throw new RangeError(`dhcp6EmitLen: invalid name in ${r.domainList.join(" ")}`);
    n += O.data + len;
  }
  if (r.bootfileUrl.length > 0) n += O.data + r.bootfileUrl.length;
  return n;
}

/**
 * Writes the whole message `r` at `buf[off..]` and returns its length
 * ({@linkcode dhcp6EmitLen}): the header, then the options present in `r`
 * in this order: CLIENTID, SERVERID, ELAPSED_TIME, ORO, PREFERENCE,
 * RAPID_COMMIT, each IA_NA, STATUS_CODE, DNS_SERVERS, DOMAIN_LIST,
 * OPT_BOOTFILE_URL. For a
 * server's ADVERTISE or REPLY, set the type, echo the client's transaction
 * id, CLIENTID and IAIDs, and add SERVERID and the answers.
 *
 * @throws RangeError if `buf` is too small or a value cannot be encoded
 */
export function dhcp6Emit(buf: Uint8Array, off: number, r: Dhcp6Repr): number {
  const total = dhcp6EmitLen(r);
  emitSpace(buf, off, total, "dhcp6Emit");
  buf[off + F.msgType] = r.msgType;
  buf[off + F.xid] = r.transactionId >>> 16;
  set16(buf, off + F.xid + 1, r.transactionId);
  let p = off + F.options;
  if (r.clientId !== null) p += dhcp6OptionBytes(buf, p, Dhcp6Option.ClientId, r.clientId);
  if (r.serverId !== null) p += dhcp6OptionBytes(buf, p, Dhcp6Option.ServerId, r.serverId);
  if (r.elapsedTime >= 0) p += dhcp6OptionU16(buf, p, Dhcp6Option.ElapsedTime, r.elapsedTime);
  if (r.oro.length > 0) p += dhcp6OptionU16List(buf, p, Dhcp6Option.Oro, r.oro);
  if (r.preference >= 0) p += dhcp6OptionU8(buf, p, Dhcp6Option.Preference, r.preference);
  if (r.rapidCommit) p += dhcp6OptionEmpty(buf, p, Dhcp6Option.RapidCommit);
  for (const ia of r.iaNa) p += dhcp6OptionIaNa(buf, p, ia);
  if (r.status >= 0) p += dhcp6OptionStatus(buf, p, r.status, r.statusMessage);
  if (r.dnsServers.length > 0) p += dhcp6OptionAddrs(buf, p, Dhcp6Option.DnsServers, r.dnsServers);
  if (r.domainList.length > 0) p += dhcp6OptionDomainList(buf, p, r.domainList);
  if (r.bootfileUrl.length > 0) {
    p += dhcp6OptionAscii(buf, p, Dhcp6Option.BootfileUrl, r.bootfileUrl);
  }
  return p - off;
}
