/**
 * DHCPv4 messages: the BOOTP header (RFC 951, RFC 2131 §2) with the options
 * of RFC 2132 after the magic cookie.
 *
 * ## Theory of operation
 *
 * A message is the fixed 236-byte BOOTP header, the 4-byte magic cookie
 * 99.130.83.99 and an options area running to the end of the UDP payload.
 * `wrap` checks only the structure every accessor relies on: 240 bytes
 * present, the cookie (a message without it is plain BOOTP, which tapir does
 * not serve: {@linkcode WireError.Unsupported}) and a hardware address length
 * of at most the 16 bytes of `chaddr` ({@linkcode WireError.BadLength}).
 *
 * Options are code/length/value triples, except PAD (0) and END (255), which
 * are one byte. The walk is bounded by the message: an option whose length
 * byte or value runs past the end is {@linkcode WireError.BadOption}, and a
 * message that ends before its END option is {@linkcode WireError.Truncated}
 * — that is what a cut-off message looks like, so refusing it keeps a
 * truncated message from being read as a shorter valid one. Bytes after END
 * are padding and ignored. {@linkcode DhcpMessage.checkOptions} runs the full
 * walk; the lookups ({@linkcode DhcpMessage.optionOffset} and the typed
 * getters) walk without allocating and return -1 for "absent", which includes
 * "behind a malformed option". {@linkcode dhcpParse} checks first and then
 * reads everything tapir knows into a {@linkcode DhcpRepr}.
 *
 * Not handled: option overload (52) into `sname`/`file` — those fields are
 * neither searched for options nor written with anything but zeros. A value
 * longer than 255 bytes is carried as several options with the same code
 * (RFC 3396); the writers split that way, and {@linkcode dhcpParse} joins
 * the parts of every variable-length option it reads. The view's lookups
 * return the first instance.
 *
 * Addresses are u32 numbers as in `ip4.ts`. Getters of optional values return
 * -1 for "absent" (no address or 32-bit value is negative).
 *
 * Follows the module pattern described in `wire.ts`.
 *
 * @module
 */

import { dnsNameListDecode, dnsNameListEmit, dnsNameListWireLen } from "./dnsname.ts";
import {
  bytesCopy,
  bytesZero,
  emitSpace,
  EMPTY_BYTES,
  get16,
  get32,
  set16,
  set32,
  WireError,
} from "./wire.ts";

// RFC 2131 §2, Figure 1 (numbers in parentheses are bytes):
//  0                   1                   2                   3
//  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
// +---------------+---------------+---------------+---------------+
// |     op (1)    |   htype (1)   |   hlen (1)    |   hops (1)    |    0
// +---------------+---------------+---------------+---------------+
// |                            xid (4)                            |    4
// +-------------------------------+-------------------------------+
// |           secs (2)            |           flags (2)           |    8
// +-------------------------------+-------------------------------+
// |                          ciaddr  (4)                          |   12
// +---------------------------------------------------------------+
// |                          yiaddr  (4)                          |   16
// +---------------------------------------------------------------+
// |                          siaddr  (4)                          |   20
// +---------------------------------------------------------------+
// |                          giaddr  (4)                          |   24
// +---------------------------------------------------------------+
// |                          chaddr  (16)                         |   28
// +---------------------------------------------------------------+
// |                          sname   (64)                         |   44
// +---------------------------------------------------------------+
// |                          file    (128)                        |  108
// +---------------------------------------------------------------+
// |                          options (variable)                   |  236
// +---------------------------------------------------------------+
// The options start with the 4-byte magic cookie (RFC 2131 §3).
const F = {
  op: 0,
  htype: 1,
  hlen: 2,
  hops: 3,
  xid: 4,
  secs: 8,
  flags: 10,
  ciaddr: 12,
  yiaddr: 16,
  siaddr: 20,
  giaddr: 24,
  chaddr: 28,
  sname: 44,
  file: 108,
  cookie: 236,
  options: 240,
} as const;

/** Length of the fixed BOOTP header, up to the options field. */
export const DHCP_HEADER_LEN: number = F.cookie;
/** Offset of the first option, after the magic cookie. */
export const DHCP_OPTIONS_OFFSET: number = F.options;
/** Size of the `chaddr` field. */
export const DHCP_CHADDR_LEN: number = F.sname - F.chaddr;
/** Size of the `sname` field. */
export const DHCP_SNAME_LEN: number = F.file - F.sname;
/** Size of the `file` field. */
export const DHCP_FILE_LEN: number = F.cookie - F.file;
/** Shortest BOOTP message (RFC 951 §3, RFC 1542 §2.1); replies are padded to it. */
export const DHCP_MIN_LEN = 300;
/** The magic cookie 99.130.83.99 (RFC 2131 §3). */
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** UDP port of DHCP servers. */
export const DHCP_SERVER_PORT = 67;
/** UDP port of DHCP clients. */
export const DHCP_CLIENT_PORT = 68;
/** The BROADCAST bit of `flags` (RFC 2131 §2, Figure 2). */
export const DHCP_FLAG_BROADCAST = 0x8000;
/** `htype` of Ethernet (IANA ARP hardware types). */
export const DHCP_HTYPE_ETHERNET = 1;
/** Longest value of one option; longer values are split (RFC 3396). */
export const DHCP_OPTION_MAX_LEN = 255;

/** BOOTP `op` values. */
export const BootpOp = { Request: 1, Reply: 2 } as const;
/** One of the {@linkcode BootpOp} values. */
export type BootpOp = (typeof BootpOp)[keyof typeof BootpOp];

/** Option codes tapir reads or writes (RFC 2132 unless noted). */
export const DhcpOption = {
  Pad: 0,
  SubnetMask: 1,
  Router: 3,
  DnsServers: 6,
  Hostname: 12,
  DomainName: 15,
  InterfaceMtu: 26,
  BroadcastAddr: 28,
  RequestedIp: 50,
  LeaseTime: 51,
  Overload: 52,
  MessageType: 53,
  ServerId: 54,
  ParamRequestList: 55,
  Message: 56,
  MaxMessageSize: 57,
  RenewalTime: 58,
  RebindingTime: 59,
  VendorClassId: 60,
  ClientId: 61,
  BootfileName: 67,
  RapidCommit: 80, // RFC 4039
  DomainSearch: 119, // RFC 3397
  ClasslessRoutes: 121, // RFC 3442
  End: 255,
} as const;
/** One of the {@linkcode DhcpOption} codes (other codes are kept as numbers). */
export type DhcpOption = (typeof DhcpOption)[keyof typeof DhcpOption];

/** DHCP message types, the value of option 53 (RFC 2132 §9.6). */
export const DhcpMessageType = {
  Discover: 1,
  Offer: 2,
  Request: 3,
  Decline: 4,
  Ack: 5,
  Nak: 6,
  Release: 7,
  Inform: 8,
} as const;
/** One of the {@linkcode DhcpMessageType} values. */
export type DhcpMessageType = (typeof DhcpMessageType)[keyof typeof DhcpMessageType];

/** Printable names of {@linkcode DhcpMessageType} values, for logs. */
export const DHCP_MESSAGE_TYPE_NAMES: Record<DhcpMessageType, string> = {
  1: "DHCPDISCOVER",
  2: "DHCPOFFER",
  3: "DHCPREQUEST",
  4: "DHCPDECLINE",
  5: "DHCPACK",
  6: "DHCPNAK",
  7: "DHCPRELEASE",
  8: "DHCPINFORM",
};

/**
 * Checks the option walk of `buf[start..end)`: 0, or why it fails
 * ({@linkcode WireError.BadOption} for an option running past the end,
 * {@linkcode WireError.Truncated} for a missing END).
 */
function optionsCheck(buf: Uint8Array, start: number, end: number): WireError | 0 {
  let p = start;
  while (p < end) {
    const code = buf[p];
    if (code === DhcpOption.End) return 0;
    if (code === DhcpOption.Pad) {
      p++;
      continue;
    }
    if (p + 2 > end || p + 2 + buf[p + 1] > end) return WireError.BadOption;
    p += 2 + buf[p + 1];
  }
  return WireError.Truncated;
}

/**
 * Offset of the value of the first option `code` at or after `start` in
 * `buf[start..end)`, or -1 if there is none before END, the end, or a
 * malformed option. Its length is `buf[result - 1]`.
 */
function optionFind(buf: Uint8Array, start: number, end: number, code: number): number {
  if (code === DhcpOption.Pad || code === DhcpOption.End) return -1;
  let p = start;
  while (p < end) {
    const c = buf[p];
    if (c === DhcpOption.End) return -1;
    if (c === DhcpOption.Pad) {
      p++;
      continue;
    }
    if (p + 2 > end || p + 2 + buf[p + 1] > end) return -1;
    if (c === code) return p + 2;
    p += 2 + buf[p + 1];
  }
  return -1;
}

/** Reusable view of a DHCPv4 message; see `wire.ts` for the contract. */
export class DhcpMessage {
  /** Buffer holding the message. */
  buf: Uint8Array = EMPTY_BYTES;
  /** Offset of the `op` byte in {@linkcode buf}. */
  off = 0;
  /** Bytes of the message (the UDP payload length). */
  len = 0;

  /**
   * Points the view at the DHCP message at `buf[off..]` with `len` bytes.
   * Refuses fewer than 240 bytes, a missing magic cookie and `hlen` over 16.
   * On error the view is unchanged.
   */
  wrap(buf: Uint8Array, off: number, len: number): WireError | 0 {
    if (off < 0 || len < F.options || off + len > buf.length) return WireError.Truncated;
    if (get32(buf, off + F.cookie) !== DHCP_MAGIC_COOKIE) return WireError.Unsupported;
    if (buf[off + F.hlen] > DHCP_CHADDR_LEN) return WireError.BadLength;
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
  ): DhcpMessage | WireError {
    const m = new DhcpMessage();
    const err = m.wrap(buf, off, len);
    return err === 0 ? m : err;
  }

  /** BOOTP operation ({@linkcode BootpOp}). */
  get op(): number {
    return this.buf[this.off + F.op];
  }
  set op(v: number) {
    this.buf[this.off + F.op] = v;
  }
  /** Hardware address type ({@linkcode DHCP_HTYPE_ETHERNET}). */
  get htype(): number {
    return this.buf[this.off + F.htype];
  }
  set htype(v: number) {
    this.buf[this.off + F.htype] = v;
  }
  /** Hardware address length (at most 16 after a successful wrap). */
  get hlen(): number {
    return this.buf[this.off + F.hlen];
  }
  /** Relay hops. */
  get hops(): number {
    return this.buf[this.off + F.hops];
  }
  set hops(v: number) {
    this.buf[this.off + F.hops] = v;
  }
  /** Transaction id. */
  get xid(): number {
    return get32(this.buf, this.off + F.xid);
  }
  set xid(v: number) {
    set32(this.buf, this.off + F.xid, v);
  }
  /** Seconds since the client began acquiring an address. */
  get secs(): number {
    return get16(this.buf, this.off + F.secs);
  }
  set secs(v: number) {
    set16(this.buf, this.off + F.secs, v);
  }
  /** The flags word ({@linkcode DHCP_FLAG_BROADCAST}). */
  get flags(): number {
    return get16(this.buf, this.off + F.flags);
  }
  set flags(v: number) {
    set16(this.buf, this.off + F.flags, v);
  }
  /** True if the client asks for broadcast replies. */
  get broadcast(): boolean {
    return (this.flags & DHCP_FLAG_BROADCAST) !== 0;
  }
  /** Client IP address, if the client has one (u32). */
  get ciaddr(): number {
    return get32(this.buf, this.off + F.ciaddr);
  }
  set ciaddr(v: number) {
    set32(this.buf, this.off + F.ciaddr, v);
  }
  /** "Your" (client) IP address, offered by the server (u32). */
  get yiaddr(): number {
    return get32(this.buf, this.off + F.yiaddr);
  }
  set yiaddr(v: number) {
    set32(this.buf, this.off + F.yiaddr, v);
  }
  /** Next server address (u32). */
  get siaddr(): number {
    return get32(this.buf, this.off + F.siaddr);
  }
  set siaddr(v: number) {
    set32(this.buf, this.off + F.siaddr, v);
  }
  /** Relay agent address (u32). */
  get giaddr(): number {
    return get32(this.buf, this.off + F.giaddr);
  }
  set giaddr(v: number) {
    set32(this.buf, this.off + F.giaddr, v);
  }
  /** Offset of the 16-byte `chaddr` field in {@linkcode buf}. */
  get chaddrOffset(): number {
    return this.off + F.chaddr;
  }
  /** Copies the 16-byte `chaddr` field into `out[outOff..]`. */
  copyChaddr(out: Uint8Array, outOff = 0): void {
    for (let i = 0; i < DHCP_CHADDR_LEN; i++) out[outOff + i] = this.buf[this.off + F.chaddr + i];
  }
  /** Offset of the 64-byte `sname` field in {@linkcode buf}. */
  get snameOffset(): number {
    return this.off + F.sname;
  }
  /** Offset of the 128-byte `file` field in {@linkcode buf}. */
  get fileOffset(): number {
    return this.off + F.file;
  }
  /** Offset of the first option (after the cookie) in {@linkcode buf}. */
  get optionsOffset(): number {
    return this.off + F.options;
  }
  /** Bytes from the first option to the end of the message. */
  get optionsLen(): number {
    return this.len - F.options;
  }

  /** Walks all options: 0 if they are well formed and END is present, else why not. */
  checkOptions(): WireError | 0 {
    return optionsCheck(this.buf, this.off + F.options, this.off + this.len);
  }
  /**
   * Offset in {@linkcode buf} of the value of the first option `code`, or -1
   * if absent (or only behind a malformed option). Allocates nothing; the
   * value's length is {@linkcode optionLength} of the result.
   */
  optionOffset(code: number): number {
    return optionFind(this.buf, this.off + F.options, this.off + this.len, code);
  }
  /** Length of the option value at `valueOffset` (a result of {@linkcode optionOffset}). */
  optionLength(valueOffset: number): number {
    return this.buf[valueOffset - 1];
  }
  /** Value of a 1-, 2- or 4-byte option `code`, or -1 if absent or of another length. */
  #fixed(code: number, size: 1 | 2 | 4): number {
    const v = fixedOption(this, code, size);
    return v < 0 ? -1 : v;
  }
  /** DHCP message type (option 53, {@linkcode DhcpMessageType}), or 0 if absent or malformed. */
  get messageType(): number {
    const t = this.#fixed(DhcpOption.MessageType, 1);
    return t < 0 ? 0 : t;
  }
  /** Requested IP address (option 50, u32), or -1. */
  get requestedIp(): number {
    return this.#fixed(DhcpOption.RequestedIp, 4);
  }
  /** Server identifier (option 54, u32), or -1. */
  get serverId(): number {
    return this.#fixed(DhcpOption.ServerId, 4);
  }
  /** Maximum DHCP message size the client accepts (option 57), or -1. */
  get maxMessageSize(): number {
    return this.#fixed(DhcpOption.MaxMessageSize, 2);
  }
  /** Lease time the client asks for (option 51, seconds), or -1. */
  get leaseTime(): number {
    return this.#fixed(DhcpOption.LeaseTime, 4);
  }
  /** True if the parameter request list (option 55) names `code`. */
  requestsOption(code: number): boolean {
    const v = this.optionOffset(DhcpOption.ParamRequestList);
    if (v < 0) return false;
    const end = v + this.buf[v - 1];
    for (let p = v; p < end; p++) if (this.buf[p] === code) return true;
    return false;
  }
  /** Offset of the client identifier (option 61) value, or -1; see {@linkcode optionLength}. */
  get clientIdOffset(): number {
    return this.optionOffset(DhcpOption.ClientId);
  }
  /** Offset of the host name (option 12) value, or -1; see {@linkcode optionLength}. */
  get hostnameOffset(): number {
    return this.optionOffset(DhcpOption.Hostname);
  }
}

/** One classless static route (RFC 3442): destination prefix and router, u32 addresses. */
export interface DhcpRoute {
  /** Destination network (bits past `prefixLen` are zero). */
  dest: number;
  /** Prefix length, 0..32. */
  prefixLen: number;
  /** Router to reach it through. */
  gateway: number;
}

/**
 * Fields of a DHCPv4 message and the options tapir knows. Absent options are
 * -1 (numbers), `""` (strings), empty arrays or null.
 */
export interface DhcpRepr {
  /** BOOTP operation ({@linkcode BootpOp}). */
  op: number;
  /** Hardware address type. */
  htype: number;
  /** Hardware address length. */
  hlen: number;
  /** Relay hops. */
  hops: number;
  /** Transaction id. */
  xid: number;
  /** Seconds since the client started. */
  secs: number;
  /** The flags word ({@linkcode DHCP_FLAG_BROADCAST}; other bits must be zero). */
  flags: number;
  /** Client IP address. */
  ciaddr: number;
  /** "Your" IP address. */
  yiaddr: number;
  /** Next server address. */
  siaddr: number;
  /** Relay agent address. */
  giaddr: number;
  /** The 16-byte client hardware address field, owned by the repr. */
  chaddr: Uint8Array;
  /** Option 53 ({@linkcode DhcpMessageType}); 0 when absent. */
  messageType: number;
  /** Option 54. */
  serverId: number;
  /** Option 50. */
  requestedIp: number;
  /** Option 51, seconds (0xffffffff is infinite). */
  leaseTime: number;
  /** Option 58 (T1), seconds. */
  renewalTime: number;
  /** Option 59 (T2), seconds. */
  rebindingTime: number;
  /** Option 1. */
  subnetMask: number;
  /** Option 3. */
  routers: number[];
  /** Option 6. */
  dnsServers: number[];
  /** Option 15. */
  domainName: string;
  /** Option 119. */
  domainSearch: string[];
  /** Option 26. */
  mtu: number;
  /** Option 121. */
  classlessRoutes: DhcpRoute[];
  /** Option 57. */
  maxMessageSize: number;
  /** Option 55. */
  paramRequestList: number[];
  /** Option 61, the raw value (type byte first). */
  clientId: Uint8Array | null;
  /** Option 12. */
  hostname: string;
  /** Option 67: the boot file (a URL for HTTP boot); "" when absent. */
  bootfile: string;
}

/** A {@linkcode DhcpRepr} for an Ethernet BOOTREPLY with every option absent. */
export function dhcpReprNew(): DhcpRepr {
  return {
    op: BootpOp.Reply,
    htype: DHCP_HTYPE_ETHERNET,
    hlen: 6,
    hops: 0,
    xid: 0,
    secs: 0,
    flags: 0,
    ciaddr: 0,
    yiaddr: 0,
    siaddr: 0,
    giaddr: 0,
    chaddr: new Uint8Array(DHCP_CHADDR_LEN),
    messageType: 0,
    serverId: -1,
    requestedIp: -1,
    leaseTime: -1,
    renewalTime: -1,
    rebindingTime: -1,
    subnetMask: -1,
    routers: [],
    dnsServers: [],
    domainName: "",
    domainSearch: [],
    mtu: -1,
    classlessRoutes: [],
    maxMessageSize: -1,
    paramRequestList: [],
    clientId: null,
    hostname: "",
    bootfile: "",
  };
}

/** All instances of option `code` joined (RFC 3396), or null if absent. Allocates. */
function optionJoined(msg: DhcpMessage, code: number): Uint8Array | null {
  const buf = msg.buf;
  const end = msg.off + msg.len;
  let total = 0;
  let v = optionFind(buf, msg.optionsOffset, end, code);
  if (v < 0) return null;
  for (; v >= 0; v = optionFind(buf, v + buf[v - 1], end, code)) total += buf[v - 1];
  const out = new Uint8Array(total);
  let p = 0;
  for (v = optionFind(buf, msg.optionsOffset, end, code); v >= 0;) {
    const n = buf[v - 1];
    out.set(buf.subarray(v, v + n), p);
    p += n;
    v = optionFind(buf, v + n, end, code);
  }
  return out;
}

/** Option `code` as a list of u32 addresses (nonempty, length a multiple of 4). */
function addrList(msg: DhcpMessage, code: number, out: number[]): WireError | 0 {
  out.length = 0;
  const v = optionJoined(msg, code);
  if (v === null) return 0;
  if (v.length === 0 || v.length % 4 !== 0) return WireError.BadOption;
  for (let p = 0; p < v.length; p += 4) out.push(get32(v, p));
  return 0;
}

/** What {@linkcode fixedOption} returns for an option of the wrong size. */
const WRONG_SIZE = -2;

/** Option `code` of exactly `size` bytes as a number, -1 if absent, or {@linkcode WRONG_SIZE}. */
function fixedOption(msg: DhcpMessage, code: number, size: 1 | 2 | 4): number {
  const v = msg.optionOffset(code);
  if (v < 0) return -1;
  if (msg.buf[v - 1] !== size) return WRONG_SIZE;
  if (size === 1) return msg.buf[v];
  return size === 2 ? get16(msg.buf, v) : get32(msg.buf, v);
}

/**
 * Option `code`, all parts joined, as text: one char per byte, trailing NULs
 * (some clients send one) dropped.
 */
function textOption(msg: DhcpMessage, code: number): string {
  const v = optionJoined(msg, code);
  if (v === null) return "";
  let end = v.length;
  while (end > 0 && v[end - 1] === 0) end--;
  let s = "";
  for (let p = 0; p < end; p++) s += String.fromCharCode(v[p]);
  return s;
}

/** Decodes RFC 3442 routes from a joined option 121 value. */
function routesDecode(v: Uint8Array, out: DhcpRoute[]): WireError | 0 {
  out.length = 0;
  let p = 0;
  while (p < v.length) {
    const prefixLen = v[p];
    if (prefixLen > 32) return WireError.BadOption;
    const n = (prefixLen + 7) >>> 3;
    if (p + 1 + n + 4 > v.length) return WireError.BadOption;
    let dest = 0;
    for (let i = 0; i < 4; i++) dest = (dest << 8) | (i < n ? v[p + 1 + i] : 0);
    out.push({ dest: dest >>> 0, prefixLen, gateway: get32(v, p + 1 + n) });
    p += 1 + n + 4;
  }
  return 0;
}

/**
 * Reads a wrapped message into `out`, checking its meaning: a well-formed
 * option walk ending in END, a message type (without one it is BOOTP:
 * {@linkcode WireError.Unsupported}), and the right size for every option it
 * knows ({@linkcode WireError.BadOption}). On error `out` may be partly
 * filled. Allocates: for slow paths and tests.
 */
export function dhcpParse(msg: DhcpMessage, out: DhcpRepr = dhcpReprNew()): DhcpRepr | WireError {
  const err = msg.checkOptions();
  if (err !== 0) return err;
  const messageType = fixedOption(msg, DhcpOption.MessageType, 1);
  const serverId = fixedOption(msg, DhcpOption.ServerId, 4);
  const requestedIp = fixedOption(msg, DhcpOption.RequestedIp, 4);
  const leaseTime = fixedOption(msg, DhcpOption.LeaseTime, 4);
  const renewalTime = fixedOption(msg, DhcpOption.RenewalTime, 4);
  const rebindingTime = fixedOption(msg, DhcpOption.RebindingTime, 4);
  const subnetMask = fixedOption(msg, DhcpOption.SubnetMask, 4);
  const mtu = fixedOption(msg, DhcpOption.InterfaceMtu, 2);
  const maxMessageSize = fixedOption(msg, DhcpOption.MaxMessageSize, 2);
  if (
    messageType === WRONG_SIZE || serverId === WRONG_SIZE || requestedIp === WRONG_SIZE ||
    leaseTime === WRONG_SIZE || renewalTime === WRONG_SIZE || rebindingTime === WRONG_SIZE ||
    subnetMask === WRONG_SIZE || mtu === WRONG_SIZE || maxMessageSize === WRONG_SIZE
  ) {
    return WireError.BadOption;
  }
  if (messageType < 0) return WireError.Unsupported;
  const clientId = optionJoined(msg, DhcpOption.ClientId);
  // RFC 2132 §9.14: a type byte and at least one byte of identifier.
  if (clientId !== null && clientId.length < 2) return WireError.BadOption;

  out.op = msg.op;
  out.htype = msg.htype;
  out.hlen = msg.hlen;
  out.hops = msg.hops;
  out.xid = msg.xid;
  out.secs = msg.secs;
  out.flags = msg.flags;
  out.ciaddr = msg.ciaddr;
  out.yiaddr = msg.yiaddr;
  out.siaddr = msg.siaddr;
  out.giaddr = msg.giaddr;
  msg.copyChaddr(out.chaddr);
  out.messageType = messageType;
  out.serverId = serverId;
  out.requestedIp = requestedIp;
  out.leaseTime = leaseTime;
  out.renewalTime = renewalTime;
  out.rebindingTime = rebindingTime;
  out.subnetMask = subnetMask;
  out.mtu = mtu;
  out.maxMessageSize = maxMessageSize;
  out.clientId = clientId;
  out.hostname = textOption(msg, DhcpOption.Hostname);
  out.domainName = textOption(msg, DhcpOption.DomainName);
  out.bootfile = textOption(msg, DhcpOption.BootfileName);

  const listErr = addrList(msg, DhcpOption.Router, out.routers) ||
    addrList(msg, DhcpOption.DnsServers, out.dnsServers);
  if (listErr !== 0) return listErr;

  const prl = optionJoined(msg, DhcpOption.ParamRequestList);
  out.paramRequestList = prl === null ? [] : Array.from(prl);

  const search = optionJoined(msg, DhcpOption.DomainSearch);
  if (search === null) {
    out.domainSearch = [];
  } else {
    const names = dnsNameListDecode(search, 0, search.length, true);
    if (typeof names === "number") return names;
    out.domainSearch = names;
  }

  const routes = optionJoined(msg, DhcpOption.ClasslessRoutes);
  if (routes === null) {
    out.classlessRoutes.length = 0;
  } else {
    const routesErr = routesDecode(routes, out.classlessRoutes);
    if (routesErr !== 0) return routesErr;
  }
  return out;
}

// ---------------------------------------------------------------------------
// Option writers. Each writes one option (or, for values over 255 bytes, the
// run of same-code options RFC 3396 prescribes) at `buf[off..]` and returns
// the bytes written; each throws RangeError if they do not fit.

/** Bytes a value of `len` bytes takes as options: the value plus 2 per 255-byte part. */
function splitLen(len: number): number {
  return len + 2 * Math.max(1, Math.ceil(len / DHCP_OPTION_MAX_LEN));
}

/**
 * Turns a `len`-byte value already written at `off + splitLen(len) - len`
 * into options `code` of at most 255 bytes each, in place; returns the bytes
 * they take. Part `i` moves down by `2 * (parts - i)` bytes to make room for
 * the headers before it; it never lands past its own source, so moving the
 * parts in order never clobbers one not yet moved.
 */
function splitInPlace(buf: Uint8Array, off: number, code: number, len: number): number {
  const parts = Math.max(1, Math.ceil(len / DHCP_OPTION_MAX_LEN));
  const src = off + 2 * parts;
  for (let i = 0; i < parts; i++) {
    const from = src + i * DHCP_OPTION_MAX_LEN;
    const n = Math.min(DHCP_OPTION_MAX_LEN, len - i * DHCP_OPTION_MAX_LEN);
    const at = off + i * (DHCP_OPTION_MAX_LEN + 2);
    buf.copyWithin(at + 2, from, from + n);
    buf[at] = code;
    buf[at + 1] = n;
  }
  return len + 2 * parts;
}

/** Writes option `code` with a 1-byte value; returns 3. */
export function dhcpOptionU8(buf: Uint8Array, off: number, code: number, v: number): number {
  emitSpace(buf, off, 3, "dhcpOptionU8");
  buf[off] = code;
  buf[off + 1] = 1;
  buf[off + 2] = v;
  return 3;
}

/** Writes option `code` with a big-endian 2-byte value (e.g. interface MTU); returns 4. */
export function dhcpOptionU16(buf: Uint8Array, off: number, code: number, v: number): number {
  emitSpace(buf, off, 4, "dhcpOptionU16");
  buf[off] = code;
  buf[off + 1] = 2;
  set16(buf, off + 2, v);
  return 4;
}

/**
 * Writes option `code` with a big-endian 4-byte value — an address (server
 * id, subnet mask) or a time (lease, T1, T2); returns 6.
 */
export function dhcpOptionU32(buf: Uint8Array, off: number, code: number, v: number): number {
  emitSpace(buf, off, 6, "dhcpOptionU32");
  buf[off] = code;
  buf[off + 1] = 4;
  set32(buf, off + 2, v);
  return 6;
}

/** Writes option `code` holding the u32 addresses `addrs` (router, DNS servers). */
export function dhcpOptionAddrs(
  buf: Uint8Array,
  off: number,
  code: number,
  addrs: readonly number[],
): number {
  const len = 4 * addrs.length;
  emitSpace(buf, off, splitLen(len), "dhcpOptionAddrs");
  let p = off + splitLen(len) - len;
  for (const a of addrs) {
    set32(buf, p, a);
    p += 4;
  }
  return splitInPlace(buf, off, code, len);
}

/** Writes option `code` holding `bytes[0..len)` (e.g. a client identifier). */
export function dhcpOptionBytes(
  buf: Uint8Array,
  off: number,
  code: number,
  bytes: Uint8Array,
  len: number = bytes.length,
): number {
  emitSpace(buf, off, splitLen(len), "dhcpOptionBytes");
  bytesCopy(buf, off + splitLen(len) - len, bytes, 0, len);
  return splitInPlace(buf, off, code, len);
}

/** Writes option `code` holding the bytes listed in `codes` (a parameter request list). */
export function dhcpOptionByteList(
  buf: Uint8Array,
  off: number,
  code: number,
  codes: readonly number[],
): number {
  const len = codes.length;
  emitSpace(buf, off, splitLen(len), "dhcpOptionByteList");
  const start = off + splitLen(len) - len;
  for (let i = 0; i < len; i++) buf[start + i] = codes[i];
  return splitInPlace(buf, off, code, len);
}

/**
 * Writes option `code` holding the text `s`, one byte per character, no
 * terminator (host name, domain name).
 *
 * @throws RangeError for characters above U+00FF, or if it does not fit
 */
export function dhcpOptionString(buf: Uint8Array, off: number, code: number, s: string): number {
  const len = s.length;
  emitSpace(buf, off, splitLen(len), "dhcpOptionString");
  const start = off + splitLen(len) - len;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`dhcpOptionString: not a byte string: ${JSON.stringify(s)}`);
    buf[start + i] = c;
  }
  return splitInPlace(buf, off, code, len);
}

/**
 * Writes the domain search list (option 119, RFC 3397) for `names`, in DNS
 * wire form without compression.
 *
 * @throws RangeError if a name is not valid (see `dnsname.ts`) or it does not fit
 */
export function dhcpOptionDomainSearch(
  buf: Uint8Array,
  off: number,
  names: readonly string[],
): number {
  const len = dnsNameListWireLen(names);
  if (len < 0) throw new RangeError(`dhcpOptionDomainSearch: invalid name in ${names.join(" ")}`);
  emitSpace(buf, off, splitLen(len), "dhcpOptionDomainSearch");
  dnsNameListEmit(buf, off + splitLen(len) - len, names);
  return splitInPlace(buf, off, DhcpOption.DomainSearch, len);
}

/** Bytes of the RFC 3442 encoding of `routes` (without option headers). */
function routesLen(routes: readonly DhcpRoute[]): number {
  let len = 0;
  for (const r of routes) {
    if (!(r.prefixLen >= 0 && r.prefixLen <= 32)) {
      throw new RangeError(`dhcpOptionClasslessRoutes: prefix length ${r.prefixLen}`);
    }
    len += 1 + ((r.prefixLen + 7) >>> 3) + 4;
  }
  return len;
}

/**
 * Writes the classless static routes option (121, RFC 3442): per route the
 * prefix length, the significant bytes of the destination, the router.
 *
 * @throws RangeError for a prefix length outside 0..32, or if it does not fit
 */
export function dhcpOptionClasslessRoutes(
  buf: Uint8Array,
  off: number,
  routes: readonly DhcpRoute[],
): number {
  const len = routesLen(routes);
  emitSpace(buf, off, splitLen(len), "dhcpOptionClasslessRoutes");
  let p = off + splitLen(len) - len;
  for (const r of routes) {
    const n = (r.prefixLen + 7) >>> 3;
    const mask = r.prefixLen === 0 ? 0 : (0xffffffff << (32 - r.prefixLen)) >>> 0;
    const dest = (r.dest & mask) >>> 0;
    buf[p++] = r.prefixLen;
    for (let i = 0; i < n; i++) buf[p++] = dest >>> (24 - 8 * i);
    set32(buf, p, r.gateway);
    p += 4;
  }
  return splitInPlace(buf, off, DhcpOption.ClasslessRoutes, len);
}

/** Writes the END option; returns 1. */
export function dhcpOptionEnd(buf: Uint8Array, off: number): number {
  emitSpace(buf, off, 1, "dhcpOptionEnd");
  buf[off] = DhcpOption.End;
  return 1;
}

/** Bytes of the options {@linkcode dhcpEmit} writes for `r`, END included. */
function optionsLen(r: DhcpRepr): number {
  let n = 1; // END
  if (r.messageType > 0) n += 3;
  if (r.serverId >= 0) n += 6;
  if (r.requestedIp >= 0) n += 6;
  if (r.leaseTime >= 0) n += 6;
  if (r.renewalTime >= 0) n += 6;
  if (r.rebindingTime >= 0) n += 6;
  if (r.subnetMask >= 0) n += 6;
  if (r.routers.length > 0) n += splitLen(4 * r.routers.length);
  if (r.dnsServers.length > 0) n += splitLen(4 * r.dnsServers.length);
  if (r.domainName.length > 0) n += splitLen(r.domainName.length);
  if (r.domainSearch.length > 0) {
    const len = dnsNameListWireLen(r.domainSearch);
    if (len < 0) throw new RangeError(`dhcpEmit: invalid name in ${r.domainSearch.join(" ")}`);
    n += splitLen(len);
  }
  if (r.mtu >= 0) n += 4;
  if (r.classlessRoutes.length > 0) n += splitLen(routesLen(r.classlessRoutes));
  if (r.maxMessageSize >= 0) n += 4;
  if (r.paramRequestList.length > 0) n += splitLen(r.paramRequestList.length);
  if (r.clientId !== null) n += splitLen(r.clientId.length);
  if (r.hostname.length > 0) n += splitLen(r.hostname.length);
  if (r.bootfile.length > 0) n += splitLen(r.bootfile.length);
  return n;
}

/**
 * Bytes {@linkcode dhcpEmit} writes for `r`: header, cookie, options, END,
 * padded to {@linkcode DHCP_MIN_LEN}.
 */
export function dhcpEmitLen(r: DhcpRepr): number {
  return Math.max(DHCP_MIN_LEN, F.options + optionsLen(r));
}

/**
 * Writes the whole message `r` at `buf[off..]` and returns its length
 * ({@linkcode dhcpEmitLen}). Every byte is written: the header, `chaddr`
 * (from `r.chaddr`, zero-filled past its length), zeroed `sname` and `file`,
 * the cookie, the options present in `r`, END and zero padding up to 300
 * bytes. Options go in this order: 53, 61, 57, 55, 12, 50, 54, 51, 58, 59,
 * 1, 3, 6, 15, 119, 26, 121, 67 (message type first, as clients expect; then
 * the client's options, then the server's).
 *
 * @throws RangeError if `buf` is too small or a value cannot be encoded
 */
export function dhcpEmit(buf: Uint8Array, off: number, r: DhcpRepr): number {
  const total = dhcpEmitLen(r);
  emitSpace(buf, off, total, "dhcpEmit");
  buf[off + F.op] = r.op;
  buf[off + F.htype] = r.htype;
  buf[off + F.hlen] = r.hlen;
  buf[off + F.hops] = r.hops;
  set32(buf, off + F.xid, r.xid);
  set16(buf, off + F.secs, r.secs);
  set16(buf, off + F.flags, r.flags);
  set32(buf, off + F.ciaddr, r.ciaddr);
  set32(buf, off + F.yiaddr, r.yiaddr);
  set32(buf, off + F.siaddr, r.siaddr);
  set32(buf, off + F.giaddr, r.giaddr);
  for (let i = 0; i < DHCP_CHADDR_LEN; i++) {
    buf[off + F.chaddr + i] = i < r.chaddr.length ? r.chaddr[i] : 0;
  }
  bytesZero(buf, off + F.sname, DHCP_SNAME_LEN + DHCP_FILE_LEN);
  set32(buf, off + F.cookie, DHCP_MAGIC_COOKIE);

  let p = off + F.options;
  if (r.messageType > 0) p += dhcpOptionU8(buf, p, DhcpOption.MessageType, r.messageType);
  if (r.clientId !== null) p += dhcpOptionBytes(buf, p, DhcpOption.ClientId, r.clientId);
  if (r.maxMessageSize >= 0) {
    p += dhcpOptionU16(buf, p, DhcpOption.MaxMessageSize, r.maxMessageSize);
  }
  if (r.paramRequestList.length > 0) {
    p += dhcpOptionByteList(buf, p, DhcpOption.ParamRequestList, r.paramRequestList);
  }
  if (r.hostname.length > 0) p += dhcpOptionString(buf, p, DhcpOption.Hostname, r.hostname);
  if (r.requestedIp >= 0) p += dhcpOptionU32(buf, p, DhcpOption.RequestedIp, r.requestedIp);
  if (r.serverId >= 0) p += dhcpOptionU32(buf, p, DhcpOption.ServerId, r.serverId);
  if (r.leaseTime >= 0) p += dhcpOptionU32(buf, p, DhcpOption.LeaseTime, r.leaseTime);
  if (r.renewalTime >= 0) p += dhcpOptionU32(buf, p, DhcpOption.RenewalTime, r.renewalTime);
  if (r.rebindingTime >= 0) p += dhcpOptionU32(buf, p, DhcpOption.RebindingTime, r.rebindingTime);
  if (r.subnetMask >= 0) p += dhcpOptionU32(buf, p, DhcpOption.SubnetMask, r.subnetMask);
  if (r.routers.length > 0) p += dhcpOptionAddrs(buf, p, DhcpOption.Router, r.routers);
  if (r.dnsServers.length > 0) p += dhcpOptionAddrs(buf, p, DhcpOption.DnsServers, r.dnsServers);
  if (r.domainName.length > 0) p += dhcpOptionString(buf, p, DhcpOption.DomainName, r.domainName);
  if (r.domainSearch.length > 0) p += dhcpOptionDomainSearch(buf, p, r.domainSearch);
  if (r.mtu >= 0) p += dhcpOptionU16(buf, p, DhcpOption.InterfaceMtu, r.mtu);
  if (r.classlessRoutes.length > 0) p += dhcpOptionClasslessRoutes(buf, p, r.classlessRoutes);
  if (r.bootfile.length > 0) p += dhcpOptionString(buf, p, DhcpOption.BootfileName, r.bootfile);
  p += dhcpOptionEnd(buf, p);
  bytesZero(buf, p, off + total - p);
  return total;
}
