import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { checksumPseudo6 } from "../../lib/packet/checksum.ts";
import {
  DHCP6_ALL_SERVERS,
  DHCP6_CLIENT_PORT,
  DHCP6_HWTYPE_ETHERNET,
  DHCP6_SERVER_PORT,
  dhcp6DuidLlEmit,
  dhcp6DuidLltEmit,
  dhcp6DuidTime,
  dhcp6Emit,
  dhcp6EmitLen,
  type Dhcp6IaAddr,
  dhcp6IaAddrNew,
  type Dhcp6IaNa,
  dhcp6IaNaNew,
  Dhcp6Message,
  Dhcp6MessageType,
  Dhcp6Option,
  dhcp6OptionAddrs,
  dhcp6OptionBytes,
  dhcp6OptionDomainList,
  dhcp6OptionEmpty,
  dhcp6OptionFind,
  dhcp6OptionHeader,
  dhcp6OptionIaAddr,
  dhcp6OptionIaNa,
  dhcp6OptionLength,
  dhcp6OptionsCheck,
  dhcp6OptionStatus,
  dhcp6OptionU16,
  dhcp6OptionU16List,
  dhcp6OptionU8,
  dhcp6Parse,
  type Dhcp6Repr,
  dhcp6ReprNew,
  Dhcp6Status,
  DuidType,
} from "../../lib/packet/dhcpv6.ts";
import { ETH_HEADER_LEN, ethEmit, EtherType } from "../../lib/packet/eth.ts";
import { IP6_HEADER_LEN, ip6Emit, ip6ReprNew } from "../../lib/packet/ip6.ts";
import { UDP_HEADER_LEN, udpEmit } from "../../lib/packet/udp.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";
import { PcapWriter } from "../../lib/pcap.ts";
import { hex, prng } from "./golden.ts";

const CLIENT_MAC = hex("52 54 00 12 34 56");
const SERVER_MAC = hex("52 54 00 00 00 02");
/** The client's DUID-LLT: type 1, hardware type 1, time 0x2c4f6a80, MAC. */
const CLIENT_DUID = hex("00 01 00 01 2c 4f 6a 80 52 54 00 12 34 56");
/** The server's DUID-LL: type 3, hardware type 1, MAC. */
const SERVER_DUID = hex("00 03 00 01 52 54 00 00 00 02");
const LEASED = hex("fd00 0000 0000 0000 0000 0000 0000 000f");
const DNS = hex("fd00 0000 0000 0000 0000 0000 0000 0003");

// A SOLICIT as a client sends it to ff02::1:2 (RFC 8415 §8, §21), assembled
// from the option layouts.
const SOLICIT = hex(
  "01 10 08 74", // SOLICIT, transaction id 0x100874
  "00 01 00 0e",
  "00 01 00 01 2c 4f 6a 80 52 54 00 12 34 56", // CLIENTID: DUID-LLT
  "00 08 00 02 00 00", // ELAPSED_TIME 0
  "00 06 00 04 00 17 00 18", // ORO: DNS_SERVERS, DOMAIN_LIST
  "00 03 00 0c 00 12 34 56 00 00 00 00 00 00 00 00", // IA_NA: IAID 0x123456, T1 0, T2 0
);
/** Offsets where an option of {@linkcode SOLICIT} ends, and how many there are up to it. */
const SOLICIT_BOUNDARIES = new Map([[4, 0], [22, 1], [28, 2], [36, 3], [52, 4]]);

// The server's ADVERTISE in reply.
const ADVERTISE = hex(
  "02 10 08 74", // ADVERTISE, transaction id echoed
  "00 01 00 0e",
  "00 01 00 01 2c 4f 6a 80 52 54 00 12 34 56", // CLIENTID echoed
  "00 02 00 0a 00 03 00 01 52 54 00 00 00 02", // SERVERID: DUID-LL
  "00 03 00 28 00 12 34 56 00 00 0e 10 00 00 15 18", // IA_NA: IAID, T1 3600, T2 5400
  "00 05 00 18 fd00 0000 0000 0000 0000 0000 0000 000f", //   IAADDR fd00::f
  "00 00 1c 20 00 00 1c 20", //   preferred and valid 7200
  "00 17 00 10 fd00 0000 0000 0000 0000 0000 0000 0003", // DNS_SERVERS fd00::3
  "00 18 00 0d 07 65 78 61 6d 70 6c 65 03 63 6f 6d 00", // DOMAIN_LIST example.com
);

function solicitRepr(): Dhcp6Repr {
  const r = dhcp6ReprNew();
  r.msgType = Dhcp6MessageType.Solicit;
  r.transactionId = 0x100874;
  r.clientId = CLIENT_DUID.slice();
  r.elapsedTime = 0;
  r.oro = [Dhcp6Option.DnsServers, Dhcp6Option.DomainList];
  r.iaNa = [dhcp6IaNaNew(0x123456, 0, 0)];
  return r;
}

function advertiseRepr(): Dhcp6Repr {
  const r = dhcp6ReprNew();
  r.msgType = Dhcp6MessageType.Advertise;
  r.transactionId = 0x100874;
  r.clientId = CLIENT_DUID.slice();
  const duid = new Uint8Array(10);
  dhcp6DuidLlEmit(duid, 0, DHCP6_HWTYPE_ETHERNET, SERVER_MAC);
  r.serverId = duid;
  const ia = dhcp6IaNaNew(0x123456, 3600, 5400);
  ia.addrs.push(dhcp6IaAddrNew(LEASED, 7200, 7200));
  r.iaNa = [ia];
  r.dnsServers = [DNS.slice()];
  r.domainList = ["example.com"];
  return r;
}

function view(bytes: Uint8Array, off = 0, len = bytes.length - off): Dhcp6Message {
  const m = Dhcp6Message.checked(bytes, off, len);
  if (isWireError(m)) throw new Error(`wrap failed: ${m}`);
  return m;
}

function parsed(bytes: Uint8Array): Dhcp6Repr {
  const r = dhcp6Parse(view(bytes));
  if (isWireError(r)) throw new Error(`parse failed: ${r}`);
  return r;
}

/** Emits `r` into a buffer full of junk, so an unwritten byte would show. */
function emitted(r: Dhcp6Repr): Uint8Array {
  const buf = new Uint8Array(dhcp6EmitLen(r) + 8).fill(0xa5);
  const n = dhcp6Emit(buf, 4, r);
  equal(n, dhcp6EmitLen(r));
  equal(buf[3], 0xa5, "nothing written before the offset");
  equal(buf[4 + n], 0xa5, "nothing written past the message");
  return buf.slice(4, 4 + n);
}

Deno.test("deconstruct: a SOLICIT's header and options read through the view", () => {
  const m = view(SOLICIT);
  equal(m.msgType, Dhcp6MessageType.Solicit);
  equal(m.transactionId, 0x100874);
  equal(m.optionsOffset, 4);
  equal(m.optionsLen, SOLICIT.length - 4);
  equal(m.checkOptions(), 0);
  const c = m.clientIdOffset;
  equal(c, 8);
  equal(m.optionLength(c), 14);
  deepEqual(SOLICIT.subarray(c, c + 14), CLIENT_DUID);
  equal(m.serverIdOffset, -1);
  equal(m.elapsedTime, 0);
  equal(m.rapidCommit, false);
  ok(m.requestsOption(Dhcp6Option.DnsServers));
  ok(m.requestsOption(Dhcp6Option.DomainList));
  ok(!m.requestsOption(Dhcp6Option.SolMaxRt));
  const ia = m.optionOffset(Dhcp6Option.IaNa);
  equal(m.optionLength(ia), 12);
  equal(dhcp6OptionFind(SOLICIT, ia + 12, ia + 12, Dhcp6Option.IaAddr), -1, "no address in it");
});

Deno.test("deconstruct and construct: the SOLICIT", () => {
  deepEqual(parsed(SOLICIT), solicitRepr());
  deepEqual(emitted(solicitRepr()), SOLICIT);
});

Deno.test("deconstruct: the ADVERTISE's nested IA_NA and IA Address", () => {
  const m = view(ADVERTISE);
  equal(m.msgType, Dhcp6MessageType.Advertise);
  const s = m.serverIdOffset;
  deepEqual(ADVERTISE.subarray(s, s + m.optionLength(s)), SERVER_DUID);
  const ia = m.optionOffset(Dhcp6Option.IaNa);
  const iaEnd = ia + m.optionLength(ia);
  equal(dhcp6OptionsCheck(ADVERTISE, ia + 12, iaEnd), 0);
  const a = dhcp6OptionFind(ADVERTISE, ia + 12, iaEnd, Dhcp6Option.IaAddr);
  equal(dhcp6OptionLength(ADVERTISE, a), 24);
  deepEqual(ADVERTISE.subarray(a, a + 16), LEASED);
  deepEqual(parsed(ADVERTISE), advertiseRepr());
});

Deno.test("construct: the ADVERTISE from a repr with a DUID-LL server id", () => {
  deepEqual(emitted(advertiseRepr()), ADVERTISE);
});

Deno.test("DUID builders write DUID-LL and DUID-LLT", () => {
  const buf = new Uint8Array(16).fill(0xee);
  equal(dhcp6DuidLlEmit(buf, 1, DHCP6_HWTYPE_ETHERNET, SERVER_MAC), 10);
  deepEqual(buf.subarray(1, 11), SERVER_DUID);
  equal(buf[11], 0xee);
  equal(buf[1] * 256 + buf[2], DuidType.Ll);
  const epoch = Date.UTC(2000, 0, 1) / 1000;
  equal(dhcp6DuidTime(epoch), 0);
  equal(dhcp6DuidTime(epoch + 0x2c4f6a80 + 0.9), 0x2c4f6a80);
  equal(dhcp6DuidTime(epoch + 2 ** 32 + 5), 5, "wraps modulo 2^32");
  equal(dhcp6DuidLltEmit(buf, 0, DHCP6_HWTYPE_ETHERNET, 0x2c4f6a80, CLIENT_MAC), 14);
  deepEqual(buf.subarray(0, 14), CLIENT_DUID);
  throws(() => dhcp6DuidLltEmit(new Uint8Array(13), 0, 1, 0, CLIENT_MAC), RangeError);
});

Deno.test("several IA_NA are found one after another, each with its status", () => {
  const r = advertiseRepr();
  r.msgType = Dhcp6MessageType.Reply;
  const second = dhcp6IaNaNew(7, 0, 0);
  second.status = Dhcp6Status.NoAddrsAvail;
  second.statusMessage = "no addresses — désolé";
  const withStatus = dhcp6IaAddrNew(DNS, 0, 0);
  withStatus.status = Dhcp6Status.NotOnLink;
  withStatus.statusMessage = "not on link";
  r.iaNa.push(second);
  r.iaNa[0].addrs.push(withStatus);
  r.status = Dhcp6Status.Success;
  r.statusMessage = "ok";
  r.rapidCommit = true;
  r.preference = 255;
  const bytes = emitted(r);
  const m = view(bytes);
  const first = m.optionOffset(Dhcp6Option.IaNa);
  const next = dhcp6OptionFind(bytes, first + m.optionLength(first), m.optionsEnd, 3);
  ok(next > first);
  equal(bytes[next + 3], 7, "the second IAID");
  equal(dhcp6OptionFind(bytes, next + m.optionLength(next), m.optionsEnd, 3), -1);
  equal(m.rapidCommit, true);
  deepEqual(parsed(bytes), r);
});

Deno.test("wrap refuses fewer than 4 bytes and relay messages, and keeps its view", () => {
  const m = view(SOLICIT);
  for (let len = 0; len < 4; len++) equal(m.wrap(SOLICIT, 0, len), WireError.Truncated);
  equal(m.wrap(SOLICIT, 1, SOLICIT.length), WireError.Truncated, "range past the buffer");
  for (const type of [Dhcp6MessageType.RelayForw, Dhcp6MessageType.RelayRepl]) {
    const relay = SOLICIT.slice();
    relay[0] = type;
    equal(m.wrap(relay, 0, relay.length), WireError.Unsupported);
  }
  equal(m.buf, SOLICIT, "a failed wrap leaves the view alone");
  equal(view(hex("0b 00 00 01")).optionsLen, 0, "a bare INFORMATION-REQUEST header");
});

Deno.test("a view at an offset reads and writes its own header only", () => {
  const buf = new Uint8Array(SOLICIT.length + 20).fill(0x77);
  buf.set(SOLICIT, 10);
  const m = view(buf, 10, SOLICIT.length);
  equal(m.transactionId, 0x100874);
  m.msgType = Dhcp6MessageType.Reply;
  m.transactionId = 0xabcdef;
  deepEqual(buf.subarray(9, 14), hex("77 07 ab cd ef"));
  equal(m.transactionId, 0xabcdef);
  equal(m.elapsedTime, 0);
});

/** A SOLICIT header followed by `options`. */
function withOptions(options: string): Uint8Array {
  return hex("01 00 00 01", options);
}

Deno.test("parse refuses malformed options at every level", () => {
  const cases: [string, string][] = [
    ["option past the end", "00 08 00 03 00 00"],
    ["three stray bytes after the last option", "00 08 00 02 00 00 00 0e 00"],
    ["IA_NA shorter than IAID, T1, T2", "00 03 00 0b 00 00 00 01 00 00 00 00 00 00 00"],
    [
      "IA_NA whose nested option overruns it",
      "00 03 00 10 00 00 00 01 00 00 00 00 00 00 00 00 00 05 00 18",
    ],
    [
      "IA Address shorter than address and lifetimes",
      "00 03 00 1b 00 00 00 01 00 00 00 00 00 00 00 00 00 05 00 0b" + "00".repeat(11),
    ],
    ["status code without its code", "00 0d 00 01 00"],
    ["elapsed time of 3 bytes", "00 08 00 03 00 00 00"],
    ["ORO of odd length", "00 06 00 03 00 17 00"],
    ["preference of 2 bytes", "00 07 00 02 00 ff"],
    ["rapid commit with a value", "00 0e 00 01 00"],
    ["DNS server list of 15 bytes", "00 17 00 0f" + "00".repeat(15)],
    ["client DUID of 1 byte", "00 01 00 01 00"],
    ["server DUID of 131 bytes", "00 02 00 83" + "00".repeat(131)],
    ["domain list with a compression pointer", "00 18 00 06 01 61 00 01 62 c0 00"],
    ["domain list cut inside a name", "00 18 00 03 03 63 6f"],
  ];
  for (const [what, options] of cases) {
    equal(dhcp6Parse(view(withOptions(options))), WireError.BadOption, what);
  }
});

Deno.test("lookups stop at a malformed option; a 130-byte DUID is still accepted", () => {
  const bytes = withOptions("00 08 00 02 00 2a 00 0e 00 05 00");
  const m = view(bytes);
  equal(m.elapsedTime, 42, "before the bad option");
  equal(m.rapidCommit, false, "the bad option itself is not found");
  equal(m.checkOptions(), WireError.BadOption);
  equal(dhcp6OptionsCheck(bytes, 4, 10), 0, "up to the bad option it tiles");
  const longDuid = withOptions("00 01 00 82 00 02" + "ab".repeat(128));
  equal(parsed(longDuid).clientId?.length, 130);
});

Deno.test("option writers write one option and return its length", () => {
  const buf = new Uint8Array(80);
  equal(dhcp6OptionHeader(buf, 0, Dhcp6Option.IaNa, 40), 4);
  deepEqual(buf.subarray(0, 4), hex("00 03 00 28"));
  equal(dhcp6OptionEmpty(buf, 0, Dhcp6Option.RapidCommit), 4);
  deepEqual(buf.subarray(0, 4), hex("00 0e 00 00"));
  equal(dhcp6OptionU8(buf, 0, Dhcp6Option.Preference, 255), 5);
  deepEqual(buf.subarray(0, 5), hex("00 07 00 01 ff"));
  equal(dhcp6OptionU16(buf, 1, Dhcp6Option.ElapsedTime, 0xffff), 6);
  deepEqual(buf.subarray(1, 7), hex("00 08 00 02 ff ff"));
  equal(dhcp6OptionU16List(buf, 0, Dhcp6Option.Oro, [23, 24, 82]), 10);
  deepEqual(buf.subarray(0, 10), hex("00 06 00 06 00 17 00 18 00 52"));
  equal(dhcp6OptionBytes(buf, 0, Dhcp6Option.ServerId, SERVER_DUID), 14);
  deepEqual(buf.subarray(0, 14), hex("00 02 00 0a", "00 03 00 01 52 54 00 00 00 02"));
  equal(dhcp6OptionAddrs(buf, 0, Dhcp6Option.DnsServers, [DNS, LEASED]), 36);
  deepEqual(buf.subarray(4, 20), DNS);
  deepEqual(buf.subarray(20, 36), LEASED);
  equal(dhcp6OptionDomainList(buf, 0, ["lan"]), 9);
  deepEqual(buf.subarray(0, 9), hex("00 18 00 05 03 6c 61 6e 00"));
  equal(dhcp6OptionStatus(buf, 0, Dhcp6Status.NoBinding, "é"), 8);
  deepEqual(buf.subarray(0, 8), hex("00 0d 00 04 00 03 c3 a9"));
  const a: Dhcp6IaAddr = dhcp6IaAddrNew(LEASED, 1, 2);
  equal(dhcp6OptionIaAddr(buf, 0, a), 28);
  deepEqual(buf.subarray(20, 28), hex("00 00 00 01 00 00 00 02"));
  const ia: Dhcp6IaNa = dhcp6IaNaNew(9, 10, 20);
  ia.addrs.push(a);
  equal(dhcp6OptionIaNa(buf, 0, ia), 16 + 28);
  deepEqual(
    buf.subarray(0, 20),
    hex("00 03 00 28 00 00 00 09 00 00 00 0a 00 00 00 14 00 05 00 18"),
  );
});

Deno.test("writers and emit throw on too small buffers and unencodable values", () => {
  throws(() => dhcp6OptionU16(new Uint8Array(5), 0, 8, 0), RangeError);
  throws(() => dhcp6OptionHeader(new Uint8Array(4), 0, 1, 0x10000), RangeError);
  throws(() => dhcp6OptionDomainList(new Uint8Array(40), 0, ["a..b"]), RangeError);
  throws(() => dhcp6Emit(new Uint8Array(ADVERTISE.length - 1), 0, advertiseRepr()), RangeError);
  const bad = advertiseRepr();
  bad.domainList = ["-ok-", "bad name"];
  throws(() => dhcp6EmitLen(bad), RangeError);
});

/** A random domain name of 1..3 lowercase labels. */
function randomName(rand: () => number): string {
  const labels: string[] = [];
  for (let i = 0, n = 1 + Math.floor(rand() * 3); i < n; i++) {
    let l = "";
    for (let j = 0, len = 1 + Math.floor(rand() * 10); j < len; j++) {
      l += String.fromCharCode(0x61 + Math.floor(rand() * 26));
    }
    labels.push(l);
  }
  return labels.join(".");
}

/** A random repr using every field, each optional one present half the time. */
function randomRepr(rand: () => number): Dhcp6Repr {
  const u32 = () => Math.floor(rand() * 0x100000000) >>> 0;
  const some = () => rand() < 0.5;
  const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
  const count = (max: number) => Math.floor(rand() * (max + 1));
  const status = (o: { status: number; statusMessage: string }) => {
    if (!some()) return;
    o.status = Math.floor(rand() * 7);
    o.statusMessage = some() ? "" : randomName(rand) + (some() ? " ✓" : "");
  };
  const r = dhcp6ReprNew();
  r.msgType = 1 + Math.floor(rand() * 11);
  r.transactionId = Math.floor(rand() * 0x1000000);
  if (some()) r.clientId = bytes(2 + count(20));
  if (some()) r.serverId = bytes(2 + count(20));
  if (some()) r.elapsedTime = Math.floor(rand() * 65536);
  if (some()) r.oro = Array.from({ length: 1 + count(5) }, () => Math.floor(rand() * 65536));
  if (some()) r.preference = Math.floor(rand() * 256);
  r.rapidCommit = some();
  for (let i = count(2); i > 0; i--) {
    const ia = dhcp6IaNaNew(u32(), u32(), u32());
    for (let j = count(2); j > 0; j--) {
      const a = dhcp6IaAddrNew(bytes(16), u32(), u32());
      status(a);
      ia.addrs.push(a);
    }
    status(ia);
    r.iaNa.push(ia);
  }
  status(r);
  if (some()) r.dnsServers = Array.from({ length: 1 + count(3) }, () => bytes(16));
  if (some()) r.domainList = Array.from({ length: 1 + count(3) }, () => randomName(rand));
  return r;
}

Deno.test("round trip: random reprs come back unchanged from emit then parse", () => {
  const rand = prng(0x6d6);
  for (let i = 0; i < 500; i++) {
    const r = randomRepr(rand);
    deepEqual(parsed(emitted(r)), r, `repr ${i}`);
  }
});

// DHCPv6 has no length field and no END option: the UDP length is the
// message's. A cut exactly between two options therefore is a valid shorter
// message; every other cut must be refused.
Deno.test("every truncation is refused unless it falls between two options", () => {
  const adBoundaries = new Set([4, 22, 36, 80, 100, 117]);
  for (let len = 0; len < SOLICIT.length; len++) {
    const m = Dhcp6Message.checked(SOLICIT.slice(0, len));
    const r = isWireError(m) ? m : dhcp6Parse(m);
    const whole = SOLICIT_BOUNDARIES.get(len);
    if (whole === undefined) {
      ok(isWireError(r), `SOLICIT cut to ${len} was read as a message`);
    } else {
      const expect = solicitRepr();
      const fields: (keyof Dhcp6Repr)[] = ["clientId", "elapsedTime", "oro", "iaNa"];
      for (const f of fields.slice(whole)) Object.assign(expect, { [f]: dhcp6ReprNew()[f] });
      deepEqual(r, expect, `SOLICIT cut to ${len}`);
    }
  }
  for (let len = 0; len < ADVERTISE.length; len++) {
    const m = Dhcp6Message.checked(ADVERTISE.slice(0, len));
    const r = isWireError(m) ? m : dhcp6Parse(m);
    equal(isWireError(r), !adBoundaries.has(len), `ADVERTISE cut to ${len}`);
  }
});

Deno.test("20 000 random mutations never throw, and lookups stay inside the message", () => {
  const rand = prng(0x0dd5);
  const goldens = [SOLICIT, ADVERTISE];
  const buf = new Uint8Array(200);
  const m = new Dhcp6Message();
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const golden = goldens[i & 1];
    buf.set(golden);
    const flips = 1 + Math.floor(rand() * 3);
    for (let k = 0; k < flips; k++) {
      const at = Math.floor(rand() * golden.length);
      // Length bytes are where walks go wrong: small changes there, mostly.
      buf[at] = rand() < 0.5 ? buf[at] + Math.floor(rand() * 5) - 2 : Math.floor(rand() * 256);
    }
    const len = rand() < 0.2 ? Math.floor(rand() * golden.length) : golden.length;
    if (m.wrap(buf, 0, len) !== 0) continue;
    for (const code of [Dhcp6Option.ClientId, Dhcp6Option.IaNa, Dhcp6Option.DomainList]) {
      const v = m.optionOffset(code);
      if (v >= 0) ok(v + m.optionLength(v) <= len, "an option value past the message");
    }
    m.elapsedTime;
    m.rapidCommit;
    m.requestsOption(Dhcp6Option.DnsServers);
    if (!isWireError(dhcp6Parse(m))) accepted++;
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

/** An Ethernet/IPv6/UDP frame carrying `payload`, checksum filled. */
function udp6Frame(
  dstMac: Uint8Array,
  srcMac: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  srcPort: number,
  dstPort: number,
  payload: Uint8Array,
): Uint8Array {
  const udpLen = UDP_HEADER_LEN + payload.length;
  const frame = new Uint8Array(ETH_HEADER_LEN + IP6_HEADER_LEN + udpLen);
  let p = ethEmit(frame, 0, dstMac, srcMac, EtherType.Ipv6);
  const ip = ip6ReprNew();
  ip.src.set(src);
  ip.dst.set(dst);
  ip.nextHeader = IpProto.Udp;
  ip.hopLimit = 1;
  ip.payloadLen = udpLen;
  p += ip6Emit(frame, p, ip);
  frame.set(payload, p + UDP_HEADER_LEN);
  const pseudo = checksumPseudo6(src, 0, dst, 0, IpProto.Udp, udpLen);
  udpEmit(frame, p, { srcPort, dstPort, payloadLen: payload.length }, pseudo);
  return frame;
}

Deno.test({
  name: "tshark decodes the SOLICIT and the emitted ADVERTISE as well-formed DHCPv6",
  ignore: TSHARK === null,
  fn() {
    const clientLl = hex("fe80 0000 0000 0000 5054 00ff fe12 3456");
    const serverLl = hex("fe80 0000 0000 0000 0000 0000 0000 0002");
    const path = Deno.makeTempFileSync({ suffix: ".pcap" });
    try {
      const pcap = PcapWriter.open(path);
      const frames = [
        udp6Frame(
          hex("33 33 00 01 00 02"),
          CLIENT_MAC,
          clientLl,
          DHCP6_ALL_SERVERS,
          DHCP6_CLIENT_PORT,
          DHCP6_SERVER_PORT,
          SOLICIT,
        ),
        udp6Frame(
          CLIENT_MAC,
          SERVER_MAC,
          serverLl,
          clientLl,
          DHCP6_SERVER_PORT,
          DHCP6_CLIENT_PORT,
          emitted(advertiseRepr()),
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
          "Message type: Solicit (1)",
          "Message type: Advertise (2)",
          "Transaction ID: 0x100874",
          "DUID Type: link-layer address plus time (1)",
          "DUID Type: link-layer address (3)",
          "Link-layer address: 52:54:00:00:00:02",
          "Requested Option code: Domain Search List (24)",
          "IAID: 00123456",
          "IPv6 address: fd00::f",
          "Valid lifetime: 7200",
          "DNS server address: fd00::3",
          "List entry: example.com.",
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
