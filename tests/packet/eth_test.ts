import { deepEqual, equal, ok } from "node:assert/strict";
import {
  ETH_BROADCAST,
  ETH_HEADER_LEN,
  ethEmit,
  EtherType,
  EthFrame,
} from "../../lib/packet/eth.ts";
import { isWireError, WireError } from "../../lib/packet/wire.ts";
import {
  ARP_REQUEST,
  GATEWAY_MAC,
  GUEST_MAC,
  hex,
  prng,
  randomBytes,
  TCP_SYN_4,
} from "./golden.ts";

function mustWrap(buf: Uint8Array): EthFrame {
  const f = EthFrame.checked(buf);
  if (isWireError(f)) throw new Error(`wrap failed: ${f}`);
  return f;
}

Deno.test("eth: deconstructs a broadcast ARP frame", () => {
  const f = mustWrap(ARP_REQUEST);
  deepEqual(f.buf.subarray(f.dstOffset, f.dstOffset + 6), ETH_BROADCAST);
  deepEqual(f.buf.subarray(f.srcOffset, f.srcOffset + 6), GUEST_MAC);
  equal(f.ethertype, EtherType.Arp);
  ok(f.dstIsBroadcast);
  ok(f.dstIsMulticast);
  equal(f.payloadOffset, 14);
  equal(f.payloadLen, 46); // Ethernet has no length: padding is payload here
  equal(f.payload().length, 46);
});

Deno.test("eth: deconstructs a unicast IPv4 frame", () => {
  const f = mustWrap(TCP_SYN_4);
  const dst = new Uint8Array(6);
  f.copyDst(dst);
  deepEqual(dst, GATEWAY_MAC);
  equal(f.ethertype, EtherType.Ipv4);
  ok(!f.dstIsMulticast);
  ok(!f.dstIsBroadcast);
});

Deno.test("eth: constructs the golden header over stale bytes", () => {
  const buf = new Uint8Array(20).fill(0xaa);
  equal(ethEmit(buf, 2, ETH_BROADCAST, GUEST_MAC, EtherType.Arp), ETH_HEADER_LEN);
  deepEqual(buf.subarray(2, 16), ARP_REQUEST.subarray(0, 14));
  equal(buf[1], 0xaa);
  equal(buf[16], 0xaa);
});

Deno.test("eth: 802.1Q and 802.1ad tagged frames are refused as VLAN tagged", () => {
  const tagged = hex("ffffffffffff 525400123456 8100 0064 0806", "00".repeat(46));
  equal(EthFrame.checked(tagged), WireError.VlanTagged);
  const qinq = hex("ffffffffffff 525400123456 88a8 0064 8100 0065 0800", "00".repeat(42));
  equal(EthFrame.checked(qinq), WireError.VlanTagged);
});

Deno.test("eth: every truncation below the header is refused", () => {
  for (let len = 0; len < ETH_HEADER_LEN; len++) {
    equal(EthFrame.checked(TCP_SYN_4.subarray(0, len)), WireError.Truncated, `len ${len}`);
  }
  const f = new EthFrame();
  equal(f.wrap(TCP_SYN_4, 70, 14), WireError.Truncated); // range past the buffer
  equal(f.wrap(TCP_SYN_4, -1, 14), WireError.Truncated);
});

Deno.test("eth: a failed wrap leaves the view on its previous frame", () => {
  const f = mustWrap(TCP_SYN_4);
  equal(f.wrap(ARP_REQUEST, 0, 10), WireError.Truncated);
  equal(f.buf, TCP_SYN_4);
  equal(f.ethertype, EtherType.Ipv4);
});

Deno.test("eth: setters write the fields in place", () => {
  const buf = ARP_REQUEST.slice();
  const f = mustWrap(buf);
  f.setDst(GATEWAY_MAC);
  f.setSrc(hex("00 00 52 54 00 00 00 01"), 2);
  f.ethertype = EtherType.Ipv6;
  deepEqual(buf.subarray(0, 14), hex("52550a000202 525400000001 86dd"));
});

Deno.test("eth: build → wrap → read round trip on random headers", () => {
  const rand = prng(14);
  const f = new EthFrame();
  for (let i = 0; i < 200; i++) {
    const dst = randomBytes(rand, 6);
    const src = randomBytes(rand, 6);
    let type = (rand() * 65536) | 0;
    if (type === EtherType.Vlan || type === EtherType.QinQ) type = EtherType.Ipv4;
    const buf = randomBytes(rand, 60);
    ethEmit(buf, 0, dst, src, type);
    equal(f.wrap(buf, 0, buf.length), 0);
    const gotDst = new Uint8Array(6);
    const gotSrc = new Uint8Array(6);
    f.copyDst(gotDst);
    f.copySrc(gotSrc);
    deepEqual(gotDst, dst);
    deepEqual(gotSrc, src);
    equal(f.ethertype, type);
    equal(f.dstIsMulticast, (dst[0] & 1) === 1);
  }
});
