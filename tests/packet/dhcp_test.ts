import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { checksumPseudo4 } from "../../lib/packet/checksum.ts";
import {
  BootpOp,
  DHCP_CHADDR_LEN,
  DHCP_CLIENT_PORT,
  DHCP_FLAG_BROADCAST,
  DHCP_HTYPE_ETHERNET,
  DHCP_MIN_LEN,
  DHCP_OPTIONS_OFFSET,
  DHCP_SERVER_PORT,
  dhcpEmit,
  dhcpEmitLen,
  DhcpMessage,
  DhcpMessageType,
  DhcpOption,
  dhcpOptionAddrs,
  dhcpOptionByteList,
  dhcpOptionBytes,
  dhcpOptionClasslessRoutes,
  dhcpOptionDomainSearch,
  dhcpOptionEnd,
  dhcpOptionString,
  dhcpOptionU16,
  dhcpOptionU32,
  dhcpOptionU8,
  dhcpParse,
  type DhcpRepr,
  dhcpReprNew,
  type DhcpRoute,
} from "../../lib/packet/dhcp.ts";
import { ETH_BROADCAST, ETH_HEADER_LEN, ethEmit, EtherType } from "../../lib/packet/eth.ts";
import { IP4_HEADER_LEN, ip4Emit, ip4ReprNew } from "../../lib/packet/ip4.ts";
import { UDP_HEADER_LEN, udpEmit } from "../../lib/packet/udp.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";
import { PcapWriter } from "../../lib/pcap.ts";
import { hex, prng } from "./golden.ts";

/** `n` zero bytes as hex, for the long zero fields. */
function zeros(n: number): string {
  return "00".repeat(n);
}

const CLIENT_MAC = hex("52 54 00 12 34 56");
const SERVER_MAC = hex("52 55 0a 00 02 02");

// A DHCPDISCOVER as busybox udhcpc sends it by default (RFC 2131 §2 layout,
// RFC 2132 options): message type, a client identifier of type 1 (Ethernet)
// and the MAC, a maximum message size of 576, a parameter request list,
// END, and zero padding to the 300-byte BOOTP minimum.
const DISCOVER = hex(
  "01 01 06 00", // op BOOTREQUEST, htype Ethernet, hlen 6, hops 0
  "39 03 f3 26", // xid
  "00 00 00 00", // secs 0, flags 0 (no broadcast)
  "00000000 00000000 00000000 00000000", // ciaddr, yiaddr, siaddr, giaddr
  "52 54 00 12 34 56",
  zeros(10), // chaddr: the MAC, zero-filled to 16
  zeros(64), // sname
  zeros(128), // file
  "63 82 53 63", // magic cookie
  "35 01 01", // 53 message type: DHCPDISCOVER
  "3d 07 01 52 54 00 12 34 56", // 61 client identifier: type 1 + MAC
  "39 02 02 40", // 57 maximum message size: 576
  "37 07 01 03 06 0c 0f 1c 2a", // 55 asks for mask, router, DNS, hostname, domain, broadcast, NTP
  "ff", // END
  zeros(34), // padding to 300 bytes
);

// The server's DHCPOFFER in reply, every option tapir's server sends.
const OFFER = hex(
  "02 01 06 00", // op BOOTREPLY, htype Ethernet, hlen 6, hops 0
  "39 03 f3 26", // xid echoed
  "00 00 00 00", // secs 0, flags 0
  "00000000", // ciaddr
  "0a 00 02 0f", // yiaddr 10.0.2.15
  "00000000 00000000", // siaddr, giaddr
  "52 54 00 12 34 56",
  zeros(10), // chaddr echoed
  zeros(64 + 128), // sname, file
  "63 82 53 63", // magic cookie
  "35 01 02", // 53 message type: DHCPOFFER
  "36 04 0a 00 02 02", // 54 server identifier 10.0.2.2
  "33 04 00 00 0e 10", // 51 lease time 3600 s
  "3a 04 00 00 07 08", // 58 T1 1800 s
  "3b 04 00 00 0c 4e", // 59 T2 3150 s
  "01 04 ff ff ff 00", // 1 subnet mask 255.255.255.0
  "03 04 0a 00 02 02", // 3 router 10.0.2.2
  "06 08 0a 00 02 03 01 01 01 01", // 6 DNS servers 10.0.2.3, 1.1.1.1
  "0f 0b 65 78 61 6d 70 6c 65 2e 63 6f 6d", // 15 domain name "example.com"
  "77 0d 07 65 78 61 6d 70 6c 65 03 63 6f 6d 00", // 119 search list: example.com
  "1a 02 05 dc", // 26 interface MTU 1500
  "79 0c 00 0a 00 02 02 10 c0 a8 0a 00 02 02", // 121 0/0 and 192.168/16 via 10.0.2.2
  "ff", // END (336 bytes: no padding needed)
);

/** Offset of END in {@linkcode DISCOVER}. */
const DISCOVER_END_AT = DHCP_OPTIONS_OFFSET + 25;

function discoverRepr(): DhcpRepr {
  const r = dhcpReprNew();
  r.op = BootpOp.Request;
  r.xid = 0x3903f326;
  r.chaddr.set(CLIENT_MAC);
  r.messageType = DhcpMessageType.Discover;
  r.clientId = hex("01 52 54 00 12 34 56");
  r.maxMessageSize = 576;
  r.paramRequestList = [1, 3, 6, 12, 15, 28, 42];
  return r;
}

function offerRepr(): DhcpRepr {
  const r = dhcpReprNew();
  r.xid = 0x3903f326;
  r.yiaddr = 0x0a00020f;
  r.chaddr.set(CLIENT_MAC);
  r.messageType = DhcpMessageType.Offer;
  r.serverId = 0x0a000202;
  r.leaseTime = 3600;
  r.renewalTime = 1800;
  r.rebindingTime = 3150;
  r.subnetMask = 0xffffff00;
  r.routers = [0x0a000202];
  r.dnsServers = [0x0a000203, 0x01010101];
  r.domainName = "example.com";
  r.domainSearch = ["example.com"];
  r.mtu = 1500;
  r.classlessRoutes = [
    { dest: 0, prefixLen: 0, gateway: 0x0a000202 },
    { dest: 0xc0a80000, prefixLen: 16, gateway: 0x0a000202 },
  ];
  return r;
}

function view(bytes: Uint8Array, off = 0, len = bytes.length - off): DhcpMessage {
  const m = DhcpMessage.checked(bytes, off, len);
  if (isWireError(m)) throw new Error(`wrap failed: ${m}`);
  return m;
}

function parsed(bytes: Uint8Array): DhcpRepr {
  const r = dhcpParse(view(bytes));
  if (isWireError(r)) throw new Error(`parse failed: ${r}`);
  return r;
}

/** Emits `r` into a buffer full of junk, so an unwritten byte would show. */
function emitted(r: DhcpRepr): Uint8Array {
  const buf = new Uint8Array(dhcpEmitLen(r) + 8).fill(0xa5);
  const n = dhcpEmit(buf, 4, r);
  equal(n, dhcpEmitLen(r));
  equal(buf[3], 0xa5, "nothing written before the offset");
  equal(buf[4 + n], 0xa5, "nothing written past the message");
  return buf.slice(4, 4 + n);
}

Deno.test("the golden DISCOVER is 300 bytes with END where expected", () => {
  equal(DISCOVER.length, DHCP_MIN_LEN);
  equal(DISCOVER[DISCOVER_END_AT], DhcpOption.End);
  equal(OFFER.length, 336);
});

Deno.test("deconstruct: a DISCOVER's header fields and options read through the view", () => {
  const m = view(DISCOVER);
  equal(m.op, BootpOp.Request);
  equal(m.htype, DHCP_HTYPE_ETHERNET);
  equal(m.hlen, 6);
  equal(m.hops, 0);
  equal(m.xid, 0x3903f326);
  equal(m.secs, 0);
  equal(m.broadcast, false);
  equal(m.ciaddr, 0);
  const chaddr = new Uint8Array(DHCP_CHADDR_LEN);
  m.copyChaddr(chaddr);
  deepEqual(chaddr.subarray(0, 6), CLIENT_MAC);
  equal(m.optionsOffset, DHCP_OPTIONS_OFFSET);
  equal(m.checkOptions(), 0);
  equal(m.messageType, DhcpMessageType.Discover);
  equal(m.maxMessageSize, 576);
  equal(m.requestedIp, -1);
  equal(m.serverId, -1);
  equal(m.leaseTime, -1);
  ok(m.requestsOption(DhcpOption.DnsServers));
  ok(m.requestsOption(DhcpOption.Router));
  ok(!m.requestsOption(DhcpOption.DomainSearch));
  const cid = m.clientIdOffset;
  equal(cid, DHCP_OPTIONS_OFFSET + 5);
  equal(m.optionLength(cid), 7);
  deepEqual(DISCOVER.subarray(cid, cid + 7), hex("01 52 54 00 12 34 56"));
  equal(m.hostnameOffset, -1);
  equal(m.optionOffset(DhcpOption.End), -1, "END is no option with a value");
  equal(m.optionOffset(DhcpOption.Pad), -1);
});

Deno.test("deconstruct: parsing the DISCOVER gives the repr it was built from", () => {
  deepEqual(parsed(DISCOVER), discoverRepr());
});

Deno.test("construct: emitting that repr writes the DISCOVER byte for byte, padding included", () => {
  deepEqual(emitted(discoverRepr()), DISCOVER);
});

Deno.test("deconstruct and construct: the OFFER with every server option", () => {
  const m = view(OFFER);
  equal(m.op, BootpOp.Reply);
  equal(m.yiaddr, 0x0a00020f);
  equal(m.messageType, DhcpMessageType.Offer);
  equal(m.serverId, 0x0a000202);
  equal(m.leaseTime, 3600);
  deepEqual(parsed(OFFER), offerRepr());
  deepEqual(emitted(offerRepr()), OFFER);
});

Deno.test("a view works at an offset inside a bigger buffer, and setters write the fields", () => {
  const buf = new Uint8Array(DISCOVER.length + 50);
  buf.set(DISCOVER, 42);
  const m = view(buf, 42, DISCOVER.length);
  equal(m.messageType, DhcpMessageType.Discover);
  m.op = BootpOp.Reply;
  m.yiaddr = 0x0a00020f;
  m.flags = DHCP_FLAG_BROADCAST;
  m.xid = 0xdeadbeef;
  equal(buf[42], BootpOp.Reply);
  deepEqual(buf.subarray(42 + 16, 42 + 20), hex("0a 00 02 0f"));
  equal(m.broadcast, true);
  equal(m.xid, 0xdeadbeef);
});

Deno.test("wrap refuses short messages, a missing cookie and hlen over 16, and keeps its view", () => {
  const m = view(DISCOVER);
  for (let len = 0; len < DHCP_OPTIONS_OFFSET; len++) {
    equal(m.wrap(DISCOVER, 0, len), WireError.Truncated, `len ${len}`);
  }
  equal(m.wrap(DISCOVER, 1, DISCOVER.length), WireError.Truncated, "range past the buffer");
  equal(m.wrap(DISCOVER, -1, 250), WireError.Truncated);
  const bootp = DISCOVER.slice();
  bootp[DHCP_OPTIONS_OFFSET - 1] ^= 1;
  equal(m.wrap(bootp, 0, bootp.length), WireError.Unsupported, "plain BOOTP");
  const longHw = DISCOVER.slice();
  longHw[2] = 17;
  equal(m.wrap(longHw, 0, longHw.length), WireError.BadLength);
  longHw[2] = 16;
  equal(m.wrap(longHw, 0, longHw.length), 0, "16 bytes still fit chaddr");
  equal(m.buf, longHw);
  equal(m.wrap(bootp, 0, bootp.length), WireError.Unsupported);
  equal(m.buf, longHw, "a failed wrap leaves the view alone");
});

/** A message: the DISCOVER header with `options` (bytes after the cookie). */
function withOptions(options: string): Uint8Array {
  return new Uint8Array([...DISCOVER.subarray(0, DHCP_OPTIONS_OFFSET), ...hex(options)]);
}

Deno.test("the option walk skips PAD, stops at END and refuses options past the end", () => {
  const padded = withOptions("00 00 35 01 03 00 32 04 0a 00 02 0f ff 36 04 01 02 03 04");
  const m = view(padded);
  equal(m.checkOptions(), 0);
  equal(m.messageType, DhcpMessageType.Request);
  equal(m.requestedIp, 0x0a00020f);
  equal(m.serverId, -1, "options after END are not options");

  const noEnd = withOptions("35 01 01 32 04 0a 00 02 0f");
  equal(view(noEnd).checkOptions(), WireError.Truncated);
  equal(dhcpParse(view(noEnd)), WireError.Truncated);

  const overrun = withOptions("35 01 01 32 05 0a 00 02 0f");
  equal(view(overrun).checkOptions(), WireError.BadOption);
  equal(view(overrun).messageType, DhcpMessageType.Discover, "options before it still found");
  equal(view(overrun).requestedIp, -1, "the overrunning option is not");
  equal(dhcpParse(view(overrun)), WireError.BadOption);

  const codeOnly = withOptions("35 01 01 32");
  equal(view(codeOnly).checkOptions(), WireError.BadOption, "a code with no length byte");
  equal(view(withOptions("")).checkOptions(), WireError.Truncated, "no options, no END");
});

Deno.test("parse checks option sizes and requires a message type", () => {
  const cases: [string, string, WireError][] = [
    ["no message type", "32 04 0a 00 02 0f ff", WireError.Unsupported],
    ["message type of 2 bytes", "35 02 01 00 ff", WireError.BadOption],
    ["server id of 3 bytes", "35 01 03 36 03 0a 00 02 ff", WireError.BadOption],
    ["MTU of 4 bytes", "35 01 02 1a 04 00 00 05 dc ff", WireError.BadOption],
    ["client id of 1 byte", "35 01 01 3d 01 01 ff", WireError.BadOption],
    ["router list of 6 bytes", "35 01 02 03 06 0a 00 02 02 0a 00 ff", WireError.BadOption],
    ["empty DNS list", "35 01 02 06 00 ff", WireError.BadOption],
    ["route with prefix 33", "35 01 02 79 09 21 0a 00 02 02 0a 00 02 02 ff", WireError.BadOption],
    ["route cut short", "35 01 02 79 06 18 0a 00 02 0a 00 ff", WireError.BadOption],
    ["search name without its end", "35 01 02 77 04 03 63 6f 6d ff", WireError.BadOption],
  ];
  for (const [what, options, err] of cases) {
    equal(dhcpParse(view(withOptions(options))), err, what);
  }
});

Deno.test("text options drop trailing NULs; the search list may use compression", () => {
  const msg = withOptions(
    "35 01 03 0c 05 68 6f 73 74 00" + // hostname "host\0"
      "77 0f 01 61 07 65 78 61 6d 70 6c 65 00 01 62 c0 02 ff", // a.example, b.example
  );
  const r = parsed(msg);
  equal(r.hostname, "host");
  deepEqual(r.domainSearch, ["a.example", "b.example"]);
});

Deno.test("values over 255 bytes are split into several options (RFC 3396) and joined again", () => {
  const r = offerRepr();
  r.dnsServers = Array.from({ length: 70 }, (_, i) => (0x0a000000 + i) >>> 0);
  r.domainSearch = Array.from({ length: 30 }, (_, i) => `host${i}.corp.example`);
  r.hostname = "h".repeat(300);
  r.clientId = new Uint8Array(256).fill(1);
  const bytes = emitted(r);
  const m = view(bytes);
  // The first part of option 6 is full, the second holds the other 25 bytes.
  const first = m.optionOffset(DhcpOption.DnsServers);
  equal(m.optionLength(first), 255);
  equal(bytes[first + 255], DhcpOption.DnsServers);
  equal(bytes[first + 256], 280 - 255);
  deepEqual(parsed(bytes), r);

  const buf = new Uint8Array(600);
  equal(dhcpOptionAddrs(buf, 0, DhcpOption.DnsServers, r.dnsServers), 280 + 4);
  equal(dhcpOptionBytes(buf, 0, 224, new Uint8Array(510)), 510 + 4, "exactly two full parts");
  equal(dhcpOptionBytes(buf, 0, 224, new Uint8Array(511)), 511 + 6);
  equal(dhcpOptionBytes(buf, 0, 224, new Uint8Array(0)), 2, "an empty value is one option");
});

Deno.test("option writers write one option and return its length", () => {
  const buf = new Uint8Array(64);
  equal(dhcpOptionU8(buf, 1, DhcpOption.MessageType, DhcpMessageType.Ack), 3);
  deepEqual(buf.subarray(1, 4), hex("35 01 05"));
  equal(dhcpOptionU16(buf, 0, DhcpOption.InterfaceMtu, 65520), 4);
  deepEqual(buf.subarray(0, 4), hex("1a 02 ff f0"));
  equal(dhcpOptionU32(buf, 0, DhcpOption.LeaseTime, 0xffffffff), 6);
  deepEqual(buf.subarray(0, 6), hex("33 04 ff ff ff ff"));
  equal(dhcpOptionAddrs(buf, 0, DhcpOption.Router, [0xc0000201]), 6);
  deepEqual(buf.subarray(0, 6), hex("03 04 c0 00 02 01"));
  equal(dhcpOptionString(buf, 0, DhcpOption.DomainName, "lan"), 5);
  deepEqual(buf.subarray(0, 5), hex("0f 03 6c 61 6e"));
  equal(dhcpOptionDomainSearch(buf, 0, ["lan"]), 7);
  deepEqual(buf.subarray(0, 7), hex("77 05 03 6c 61 6e 00"));
  equal(dhcpOptionByteList(buf, 0, DhcpOption.ParamRequestList, [1, 121]), 4);
  deepEqual(buf.subarray(0, 4), hex("37 02 01 79"));
  const routes: DhcpRoute[] = [
    { dest: 0x0a000000, prefixLen: 8, gateway: 0xc0000201 },
    { dest: 0xc0a80101, prefixLen: 32, gateway: 0xc0000201 },
    { dest: 0xac10ffff, prefixLen: 12, gateway: 0xc0000201 }, // host bits are masked
  ];
  equal(dhcpOptionClasslessRoutes(buf, 0, routes), 2 + 6 + 9 + 7);
  deepEqual(
    buf.subarray(0, 24),
    hex("79 16", "08 0a c0 00 02 01", "20 c0 a8 01 01 c0 00 02 01", "0c ac 10 c0 00 02 01"),
  );
  equal(dhcpOptionEnd(buf, 9), 1);
  equal(buf[9], 0xff);
});

Deno.test("writers and emit throw on too small buffers and unencodable values", () => {
  throws(() => dhcpOptionU32(new Uint8Array(5), 0, 1, 0), RangeError);
  throws(() => dhcpOptionEnd(new Uint8Array(1), 1), RangeError);
  throws(() => dhcpOptionString(new Uint8Array(20), 0, 15, "caf\u0101"), RangeError);
  throws(() => dhcpOptionDomainSearch(new Uint8Array(20), 0, ["a..b"]), RangeError);
  const bad: DhcpRoute = { dest: 0, prefixLen: 33, gateway: 0 };
  throws(() => dhcpOptionClasslessRoutes(new Uint8Array(20), 0, [bad]), RangeError);
  throws(() => dhcpEmit(new Uint8Array(DHCP_MIN_LEN - 1), 0, discoverRepr()), RangeError);
  throws(() => dhcpEmit(new Uint8Array(400), 101, discoverRepr()), RangeError);
});

/** A random name of 1..3 labels. */
function randomName(rand: () => number): string {
  const labels: string[] = [];
  const n = 1 + Math.floor(rand() * 3);
  for (let i = 0; i < n; i++) {
    let l = "";
    const len = 1 + Math.floor(rand() * 10);
    for (let j = 0; j < len; j++) l += String.fromCharCode(0x61 + Math.floor(rand() * 26));
    labels.push(l);
  }
  return labels.join(".");
}

/** A random repr using every field, each optional one present half the time. */
function randomRepr(rand: () => number): DhcpRepr {
  const u32 = () => Math.floor(rand() * 0x100000000) >>> 0;
  const some = () => rand() < 0.5;
  const list = <T>(max: number, f: () => T): T[] =>
    Array.from({ length: 1 + Math.floor(rand() * max) }, f);
  const r = dhcpReprNew();
  r.op = some() ? BootpOp.Request : BootpOp.Reply;
  r.hops = Math.floor(rand() * 256);
  r.xid = u32();
  r.secs = Math.floor(rand() * 65536);
  r.flags = some() ? DHCP_FLAG_BROADCAST : 0;
  r.ciaddr = u32();
  r.yiaddr = u32();
  r.siaddr = u32();
  r.giaddr = u32();
  for (let i = 0; i < DHCP_CHADDR_LEN; i++) r.chaddr[i] = Math.floor(rand() * 256);
  r.messageType = 1 + Math.floor(rand() * 8);
  if (some()) r.serverId = u32();
  if (some()) r.requestedIp = u32();
  if (some()) r.leaseTime = u32();
  if (some()) r.renewalTime = u32();
  if (some()) r.rebindingTime = u32();
  if (some()) r.subnetMask = u32();
  if (some()) r.routers = list(3, u32);
  if (some()) r.dnsServers = list(4, u32);
  if (some()) r.domainName = randomName(rand);
  if (some()) r.domainSearch = list(3, () => randomName(rand));
  if (some()) r.mtu = 68 + Math.floor(rand() * 65000);
  if (some()) {
    r.classlessRoutes = list(3, () => {
      const prefixLen = Math.floor(rand() * 33);
      const mask = prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
      return { dest: (u32() & mask) >>> 0, prefixLen, gateway: u32() };
    });
  }
  if (some()) r.maxMessageSize = 576 + Math.floor(rand() * 1000);
  if (some()) r.paramRequestList = list(10, () => 1 + Math.floor(rand() * 254));
  if (some()) r.clientId = Uint8Array.from(list(20, () => Math.floor(rand() * 256)).concat([1]));
  if (some()) r.hostname = randomName(rand);
  return r;
}

Deno.test("round trip: random reprs come back unchanged from emit then parse", () => {
  const rand = prng(0xd4c9);
  for (let i = 0; i < 500; i++) {
    const r = randomRepr(rand);
    deepEqual(parsed(emitted(r)), r, `repr ${i}`);
  }
});

Deno.test("every truncation is refused, except cuts in the padding after END", () => {
  const whole = { discover: parsed(DISCOVER), offer: parsed(OFFER) };
  for (const [name, bytes] of [["discover", DISCOVER], ["offer", OFFER]] as const) {
    const endAt = name === "discover" ? DISCOVER_END_AT : OFFER.length - 1;
    for (let len = 0; len < bytes.length; len++) {
      const cut = bytes.slice(0, len);
      const m = DhcpMessage.checked(cut);
      const r = isWireError(m) ? m : dhcpParse(m);
      if (len > endAt) deepEqual(r, whole[name], `${name} cut to ${len}`);
      else ok(isWireError(r), `${name} cut to ${len} was read as a message`);
    }
  }
});

Deno.test("20 000 random mutations never throw, and lookups stay inside the message", () => {
  const rand = prng(0xf022);
  const goldens = [DISCOVER, OFFER];
  const buf = new Uint8Array(400);
  const m = new DhcpMessage();
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const golden = goldens[i & 1];
    buf.set(golden);
    // Mostly hit the options, where the walk lives; sometimes the header.
    const flips = 1 + Math.floor(rand() * 4);
    for (let k = 0; k < flips; k++) {
      const at = rand() < 0.85
        ? DHCP_OPTIONS_OFFSET + Math.floor(rand() * (golden.length - DHCP_OPTIONS_OFFSET))
        : Math.floor(rand() * DHCP_OPTIONS_OFFSET);
      buf[at] = rand() < 0.5 ? Math.floor(rand() * 256) : buf[at] ^ (1 << Math.floor(rand() * 8));
    }
    const len = rand() < 0.2 ? Math.floor(rand() * golden.length) : golden.length;
    if (m.wrap(buf, 0, len) !== 0) continue;
    for (const code of [DhcpOption.ClientId, DhcpOption.Hostname, DhcpOption.ParamRequestList]) {
      const v = m.optionOffset(code);
      if (v >= 0) ok(v + m.optionLength(v) <= len, "an option value past the message");
    }
    m.messageType;
    m.requestedIp;
    m.serverId;
    m.maxMessageSize;
    m.requestsOption(DhcpOption.DnsServers);
    if (!isWireError(dhcpParse(m))) accepted++;
  }
  ok(accepted > 1000, `only ${accepted} mutated messages parsed`);
});

// ---------------------------------------------------------------------------
// Cross-check with Wireshark's decoder.

function findTshark(): string | null {
  for (const p of ["/usr/sbin/tshark", "/usr/bin/tshark"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not there
    }
  }
  return null;
}
const TSHARK = findTshark();

/** An Ethernet/IPv4/UDP frame carrying `payload`, checksums filled. */
function udp4Frame(
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  src: number,
  dst: number,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): Uint8Array {
  const udpLen = UDP_HEADER_LEN + payload.length;
  const frame = new Uint8Array(ETH_HEADER_LEN + IP4_HEADER_LEN + udpLen);
  let p = ethEmit(frame, 0, dstMac, srcMac, EtherType.Ipv4);
  const ip = ip4ReprNew();
  ip.src = src;
  ip.dst = dst;
  ip.proto = IpProto.Udp;
  ip.payloadLen = udpLen;
  p += ip4Emit(frame, p, ip);
  frame.set(payload, p + UDP_HEADER_LEN);
  udpEmit(
    frame,
    p,
    { srcPort, dstPort, payloadLen: payload.length },
    checksumPseudo4(src, dst, IpProto.Udp, udpLen),
  );
  return frame;
}

Deno.test({
  name: "tshark decodes the DISCOVER and the emitted OFFER as well-formed DHCP",
  ignore: TSHARK === null,
  fn() {
    const path = Deno.makeTempFileSync({ suffix: ".pcap" });
    try {
      const pcap = PcapWriter.open(path);
      const frames = [
        udp4Frame(
          ETH_BROADCAST,
          CLIENT_MAC,
          0,
          0xffffffff,
          DHCP_CLIENT_PORT,
          DHCP_SERVER_PORT,
          DISCOVER,
        ),
        udp4Frame(
          CLIENT_MAC,
          SERVER_MAC,
          0x0a000202,
          0x0a00020f,
          DHCP_SERVER_PORT,
          DHCP_CLIENT_PORT,
          emitted(offerRepr()),
        ),
      ];
      for (const f of frames) pcap.frame(f, f.length);
      pcap.close();
      const out = new Deno.Command(TSHARK!, { args: ["-r", path, "-V"], stderr: "null" })
        .outputSync();
      equal(out.code, 0);
      const text = new TextDecoder().decode(out.stdout);
      for (
        const line of [
          "Dynamic Host Configuration Protocol (Discover)",
          "DHCP: Discover (1)",
          "Maximum DHCP Message Size: 576",
          "Dynamic Host Configuration Protocol (Offer)",
          "DHCP: Offer (2)",
          "Your (client) IP address: 10.0.2.15",
          "DHCP Server Identifier: 10.0.2.2",
          "Domain Name Server: 1.1.1.1",
          "FQDN: example.com",
          "192.168.0.0/16-10.0.2.2",
          "Interface MTU: 1500",
        ]
      ) {
        ok(text.includes(line), `tshark output lacks "${line}"`);
      }
      ok(!/malformed/i.test(text), "tshark found a malformed packet");
      ok(!text.includes("Expert Info"), "tshark has a complaint");
    } finally {
      Deno.removeSync(path);
    }
  },
});
