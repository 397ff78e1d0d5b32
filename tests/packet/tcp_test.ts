import { deepEqual, equal, ok } from "node:assert/strict";
import { parseIp6 } from "../../lib/addr.ts";
import { checksumPseudo4, checksumPseudo6 } from "../../lib/packet/checksum.ts";
import {
  TCP_HEADER_LEN,
  TCP_MAX_HEADER_LEN,
  TCP_MAX_SACK_BLOCKS,
  tcpEmit,
  TcpFlag,
  tcpHeaderLen,
  TcpOptions,
  tcpOptionsParse,
  TcpPacket,
  tcpParse,
  type TcpRepr,
  tcpReprNew,
} from "../../lib/packet/tcp.ts";
import { IpProto, isWireError, WireError } from "../../lib/packet/wire.ts";
import {
  GATEWAY_IP4,
  GUEST_IP4,
  hex,
  prng,
  randomBytes,
  TCP_DATA_6,
  TCP_SYN_4,
  TCP_SYN_4_TCP_OFF,
} from "./golden.ts";

const TCP6_OFF = 54;

function addr(s: string): Uint8Array {
  const a = parseIp6(s);
  if (a === null) throw new Error(`bad address ${s}`);
  return a;
}

function mustWrap(buf: Uint8Array, off: number, len = buf.length - off): TcpPacket {
  const p = TcpPacket.checked(buf, off, len);
  if (isWireError(p)) throw new Error(`wrap failed: ${p}`);
  return p;
}

function mustParse(p: TcpPacket): TcpRepr {
  const r = tcpParse(p);
  if (isWireError(r)) throw new Error(`parse failed: ${r}`);
  return r;
}

function options(set: Partial<TcpOptions>): TcpOptions {
  const o = new TcpOptions();
  Object.assign(o, set);
  return o;
}

// The options as a plain object, with only the SACK blocks in use.
function plain(o: TcpOptions) {
  return { ...o, sackBlocks: Array.from(o.sackBlocks.subarray(0, 2 * o.sackCount)) };
}

// Parses raw option bytes; returns the error or the options.
function parseOpts(bytes: Uint8Array): TcpOptions | WireError {
  const o = new TcpOptions();
  const err = tcpOptionsParse(bytes, 0, bytes.length, o);
  return err === 0 ? o : err;
}

Deno.test("tcp: deconstructs a SYN with MSS, SACK-permitted, timestamps and window scale", () => {
  const p = mustWrap(TCP_SYN_4, TCP_SYN_4_TCP_OFF);
  equal(p.srcPort, 40000);
  equal(p.dstPort, 80);
  equal(p.seq, 0x01020304);
  equal(p.ack, 0);
  equal(p.headerLen, 40);
  equal(p.flags, TcpFlag.Syn);
  equal(p.window, 64240);
  equal(p.checksum, 0x125d);
  equal(p.urgent, 0);
  equal(p.optionsLen, 20);
  equal(p.payloadLen, 0);
  ok(p.checksumOk4(GUEST_IP4, GATEWAY_IP4));
  ok(!p.checksumOk4(GUEST_IP4, GATEWAY_IP4 + 1));
  const r = mustParse(p);
  equal(r.options.mss, 1460);
  ok(r.options.sackPermitted);
  ok(r.options.tsPresent);
  equal(r.options.tsVal, 0x0a0b0c0d);
  equal(r.options.tsEcr, 0);
  equal(r.options.wscale, 7);
  equal(r.options.sackCount, 0);
});

Deno.test("tcp: constructs the golden SYN, options in Linux's order", () => {
  const buf = new Uint8Array(44).fill(0xcd);
  const r = tcpReprNew();
  Object.assign(r, {
    srcPort: 40000,
    dstPort: 80,
    seq: 0x01020304,
    flags: TcpFlag.Syn,
    window: 64240,
  });
  r.options = options({
    mss: 1460,
    sackPermitted: true,
    tsPresent: true,
    tsVal: 0x0a0b0c0d,
    wscale: 7,
  });
  equal(tcpHeaderLen(r), 40);
  const pseudo = checksumPseudo4(GUEST_IP4, GATEWAY_IP4, IpProto.Tcp, 40);
  equal(tcpEmit(buf, 2, r, pseudo), 40);
  deepEqual(buf.subarray(2, 42), TCP_SYN_4.subarray(TCP_SYN_4_TCP_OFF));
  equal(buf[42], 0xcd);
});

Deno.test("tcp: deconstructs an IPv6 data segment near sequence wrap-around", () => {
  const p = mustWrap(TCP_DATA_6, TCP6_OFF);
  equal(p.seq, 0xfffffff0 | 0, "in the signed form of seq.ts");
  equal(p.ack, 0x10203040);
  equal(p.flags, TcpFlag.Ack | TcpFlag.Psh);
  equal(p.headerLen, 32);
  equal(p.payloadOffset, TCP6_OFF + 32);
  deepEqual(p.payload(), new TextEncoder().encode("GET /\r\n"));
  ok(p.checksumOk6(TCP_DATA_6, 22, 38));
  const r = mustParse(p);
  deepEqual(plain(r.options), plain(options({ tsPresent: true, tsVal: 0x102, tsEcr: 0x01020304 })));
});

Deno.test("tcp: constructs the golden IPv6 data segment around its payload", () => {
  const payload = new TextEncoder().encode("GET /\r\n");
  const buf = new Uint8Array(39);
  buf.set(payload, 32);
  const r = tcpReprNew();
  Object.assign(r, {
    srcPort: 40001,
    dstPort: 8080,
    seq: 0xfffffff0,
    ack: 0x10203040,
    flags: TcpFlag.Ack | TcpFlag.Psh,
    window: 502,
    payloadLen: payload.length,
  });
  r.options = options({ tsPresent: true, tsVal: 0x102, tsEcr: 0x01020304 });
  const pseudo = checksumPseudo6(addr("2001:db8::2"), 0, addr("2001:db8::1"), 0, IpProto.Tcp, 39);
  equal(tcpEmit(buf, 0, r, pseudo), 32);
  deepEqual(buf, TCP_DATA_6.subarray(TCP6_OFF));
  tcpEmit(buf, 0, r); // without a pseudo-header sum the checksum stays zero
  equal(mustWrap(buf, 0).checksum, 0);
});

Deno.test("tcp: option parsing reads SACK blocks and stops at End of Option List", () => {
  const o = parseOpts(hex("01 01 05 12 00000001 00000010 fffffff0 00000005 00 02 04"));
  if (isWireError(o)) throw new Error(`parse failed: ${o}`);
  equal(o.sackCount, 2);
  deepEqual(Array.from(o.sackBlocks.subarray(0, 4)), [1, 0x10, 0xfffffff0, 5]);
  equal(o.mss, 0); // after EOL: not read
});

Deno.test("tcp: unknown option kinds with a sane length are skipped", () => {
  const o = parseOpts(hex("1e 04 1234 02 04 0218 fe 02"));
  if (isWireError(o)) throw new Error(`parse failed: ${o}`);
  equal(o.mss, 0x218);
});

Deno.test("tcp: malformed options are refused", () => {
  const bad: [string, string][] = [
    ["length 0", "1e 00 0000"],
    ["length 1", "1e 01 0000"],
    ["length past the end", "1e 08 0000"],
    ["kind without a length byte", "01 01 01 02"],
    ["MSS of 3 bytes", "02 03 05 01"],
    ["window scale of 4 bytes", "03 04 0700"],
    ["SACK-permitted of 3 bytes", "04 03 00 01"],
    ["timestamps of 8 bytes", "08 08 000000010000"],
    ["SACK not 2 + 8n", "05 0b 000000010000000203"],
    ["SACK with no blocks", "05 02 0101"],
    ["SACK with 5 blocks", "05 2a" + "00000001".repeat(10)],
  ];
  for (const [what, bytes] of bad) equal(parseOpts(hex(bytes)), WireError.BadOption, what);
});

Deno.test("tcp: every option combination builds aligned and parses back the same", () => {
  const combos = 2 * 2 * 2 * 2 * (TCP_MAX_SACK_BLOCKS + 1);
  const seg = new TcpPacket();
  const back = tcpReprNew();
  for (let c = 0; c < combos; c++) {
    const r = tcpReprNew();
    Object.assign(r, { srcPort: 1, dstPort: 2, flags: TcpFlag.Ack });
    r.options = options({
      mss: c & 1 ? 1460 : 0,
      tsPresent: (c & 2) !== 0,
      tsVal: 0x11111111,
      tsEcr: 0x22222222,
      sackPermitted: (c & 4) !== 0,
      wscale: c & 8 ? 14 : -1,
      sackCount: c >>> 4,
    });
    for (let b = 0; b < 8; b++) r.options.sackBlocks[b] = 0x1000 * (b + 1);
    const buf = new Uint8Array(64).fill(0xee);
    const hdrLen = tcpEmit(buf, 0, r);
    equal(hdrLen % 4, 0);
    ok(hdrLen <= TCP_MAX_HEADER_LEN);
    equal(seg.wrap(buf, 0, hdrLen), 0);
    const got = tcpParse(seg, back);
    if (isWireError(got)) throw new Error(`combo ${c}: ${got}`);
    const o = got.options;
    equal(o.mss, r.options.mss);
    equal(o.tsPresent, r.options.tsPresent);
    equal(o.sackPermitted, r.options.sackPermitted);
    equal(o.wscale, r.options.wscale);
    if (o.tsPresent) deepEqual([o.tsVal, o.tsEcr], [0x11111111, 0x22222222]);
    // As many SACK blocks as fit, first ones first (RFC 2018: most recent first).
    // MSS 4, timestamps 12 (with SACK-permitted in its padding) or SACK-permitted 4,
    // window scale 4; SACK needs 4 + 8 per block of what remains of 40.
    const base = (c & 1 ? 4 : 0) + (c & 2 ? 12 : c & 4 ? 4 : 0) + (c & 8 ? 4 : 0);
    const room = Math.floor((40 - base - 4) / 8);
    equal(o.sackCount, Math.min(r.options.sackCount, room, TCP_MAX_SACK_BLOCKS));
    equal(hdrLen, 20 + base + (o.sackCount ? 4 + 8 * o.sackCount : 0));
    for (let b = 0; b < 2 * o.sackCount; b++) equal(o.sackBlocks[b], 0x1000 * (b + 1));
  }
});

Deno.test("tcp: SACK blocks are clipped to what fits beside timestamps", () => {
  const r = tcpReprNew();
  r.options = options({ tsPresent: true, sackCount: 4 });
  equal(tcpHeaderLen(r), 20 + 12 + 4 + 3 * 8); // three blocks: 40 bytes of options
  r.options = options({ sackCount: 4 });
  equal(tcpHeaderLen(r), 20 + 4 + 4 * 8);
  r.options = options({ mss: 1460, tsPresent: true, wscale: 7, sackCount: 4 });
  equal(tcpHeaderLen(r), 20 + 20 + 4 + 2 * 8);
});

Deno.test("tcp: header length errors are told apart", () => {
  const doff4 = TCP_SYN_4.slice(TCP_SYN_4_TCP_OFF);
  doff4[12] = 0x40;
  equal(TcpPacket.checked(doff4), WireError.BadHeaderLen);
  const doff15 = TCP_SYN_4.slice(TCP_SYN_4_TCP_OFF);
  doff15[12] = 0xf0; // 60 bytes of header in a 40-byte segment
  equal(TcpPacket.checked(doff15), WireError.Truncated);
  for (let len = 0; len < 40; len++) {
    equal(TcpPacket.checked(TCP_SYN_4, TCP_SYN_4_TCP_OFF, len), WireError.Truncated, `len ${len}`);
  }
});

Deno.test("tcp: parse refuses port 0, SYN with FIN or RST, and bad options", () => {
  const cases: [string, (seg: TcpPacket) => void, WireError][] = [
    ["src port 0", (seg) => seg.srcPort = 0, WireError.Malformed],
    ["dst port 0", (seg) => seg.dstPort = 0, WireError.Malformed],
    ["SYN|FIN", (seg) => seg.flags = TcpFlag.Syn | TcpFlag.Fin, WireError.Malformed],
    ["SYN|RST", (seg) => seg.flags = TcpFlag.Syn | TcpFlag.Rst, WireError.Malformed],
    ["MSS length 5", (seg) => seg.buf[seg.optionsOffset + 1] = 5, WireError.BadOption],
  ];
  for (const [what, change, want] of cases) {
    const seg = mustWrap(TCP_SYN_4.slice(TCP_SYN_4_TCP_OFF), 0);
    change(seg);
    equal(tcpParse(seg), want, what);
  }
  const ok1 = TCP_SYN_4.slice(TCP_SYN_4_TCP_OFF);
  ok1[13] = TcpFlag.Syn | TcpFlag.Ack | TcpFlag.Ece | TcpFlag.Cwr;
  ok(!isWireError(tcpParse(mustWrap(ok1, 0))));
});

Deno.test("tcp: setters and checksum refill for both families", () => {
  const buf = TCP_DATA_6.slice();
  const p = mustWrap(buf, TCP6_OFF);
  p.seq = 0x80000000;
  p.ack = 0xffffffff;
  p.window = 65535;
  p.flags = TcpFlag.Fin | TcpFlag.Ack;
  p.srcPort = 1;
  p.dstPort = 65535;
  p.urgent = 3;
  ok(!p.checksumOk6(buf, 22, 38));
  p.fillChecksum6(buf, 22, 38);
  ok(p.checksumOk6(buf, 22, 38));
  p.fillChecksum4(GUEST_IP4, GATEWAY_IP4);
  ok(p.checksumOk4(GUEST_IP4, GATEWAY_IP4));
  const r = mustParse(p);
  deepEqual(
    [r.seq, r.ack, r.window, r.flags, r.srcPort, r.dstPort, r.urgent],
    [0x80000000 | 0, -1, 65535, TcpFlag.Fin | TcpFlag.Ack, 1, 65535, 3], // written unsigned, read signed
  );
});

Deno.test("tcp: build → parse round trip over IPv4 and IPv6", () => {
  const rand = prng(9293);
  const seg = new TcpPacket();
  const back = tcpReprNew();
  const addrs = randomBytes(rand, 32);
  for (let i = 0; i < 500; i++) {
    const r = tcpReprNew();
    Object.assign(r, {
      srcPort: 1 + ((rand() * 65535) | 0),
      dstPort: 1 + ((rand() * 65535) | 0),
      seq: (rand() * 2 ** 32) | 0,
      ack: (rand() * 2 ** 32) | 0,
      flags: ((rand() * 256) | 0) & ~TcpFlag.Syn,
      window: (rand() * 65536) | 0,
      urgent: (rand() * 65536) | 0,
      payloadLen: (rand() * 100) | 0,
    });
    r.options = options({
      mss: rand() < 0.5 ? 536 + ((rand() * 9000) | 0) : 0,
      wscale: rand() < 0.5 ? (rand() * 15) | 0 : -1,
      sackPermitted: rand() < 0.5,
      tsPresent: rand() < 0.5,
      sackCount: rand() < 0.3 ? 1 : 0,
    });
    if (r.options.tsPresent) {
      r.options.tsVal = (rand() * 2 ** 32) >>> 0;
      r.options.tsEcr = (rand() * 2 ** 32) >>> 0;
    }
    r.options.sackBlocks[0] = 7;
    r.options.sackBlocks[1] = 9;
    const len = tcpHeaderLen(r) + r.payloadLen;
    const buf = randomBytes(rand, len);
    const v6 = i % 2 === 1;
    const pseudo = v6
      ? checksumPseudo6(addrs, 0, addrs, 16, IpProto.Tcp, len)
      : checksumPseudo4(GUEST_IP4, GATEWAY_IP4, IpProto.Tcp, len);
    tcpEmit(buf, 0, r, pseudo);
    equal(seg.wrap(buf, 0, len), 0);
    ok(v6 ? seg.checksumOk6(addrs, 0, 16) : seg.checksumOk4(GUEST_IP4, GATEWAY_IP4));
    const got = tcpParse(seg, back);
    if (isWireError(got)) throw new Error(`case ${i}: ${got}`);
    deepEqual({ ...got, options: plain(got.options) }, { ...r, options: plain(r.options) });
    equal(seg.payloadLen, r.payloadLen);
  }
});

Deno.test("tcp: a bare header is 20 bytes", () => {
  equal(tcpHeaderLen(tcpReprNew()), TCP_HEADER_LEN);
});
