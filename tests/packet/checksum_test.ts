import { equal, ok } from "node:assert/strict";
import {
  checksumAdd,
  checksumAddIov,
  checksumComplete,
  checksumFill,
  checksumFinish,
  checksumFold,
  checksumOk,
  checksumPseudo4,
  checksumPseudo6,
  checksumSwap,
  checksumUpdate16,
  checksumUpdate32,
  icmp4ChecksumFill,
  icmp4ChecksumOk,
  icmp6ChecksumFill,
  icmp6ChecksumOk,
  ip4HeaderChecksumFill,
  ip4HeaderChecksumOk,
  tcp4ChecksumFill,
  tcp4ChecksumOk,
  tcp6ChecksumFill,
  tcp6ChecksumOk,
  udp4ChecksumFill,
  udp4ChecksumOk,
  udp6ChecksumFill,
  udp6ChecksumOk,
} from "../../lib/packet/checksum.ts";
import { get16, get32, set16, set32 } from "../../lib/packet/wire.ts";
import { hex, prng, randomBytes } from "./golden.ts";

// The reference: RFC 1071 taken literally, one 16-bit word at a time, with
// end-around carry after every addition. Slow and obviously right.
function naiveSum(bytes: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    if (s > 0xffff) s = (s & 0xffff) + 1;
  }
  return s;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// A buffer whose data starts `shift` bytes into its ArrayBuffer, so word
// alignment differs from the offsets the test picks.
function shifted(data: Uint8Array, shift: number): Uint8Array {
  const backing = new Uint8Array(data.length + shift + 5);
  backing.set(data, shift);
  return backing.subarray(shift, shift + data.length);
}

Deno.test("checksum: the RFC 1071 §3 example sums to 0xddf2", () => {
  const data = hex("00 01 f2 03 f4 f5 f6 f7");
  equal(checksumFold(checksumAdd(0, data, 0, data.length)), 0xddf2);
  equal(checksumFinish(checksumAdd(0, data, 0, data.length)), ~0xddf2 & 0xffff);
});

Deno.test("checksum: checksumAdd equals the reference for many lengths, offsets and alignments", () => {
  const rand = prng(1071);
  const lengths = [...Array(200).keys(), 255, 256, 511, 1499, 1500, 1501, 9000, 65535, 65536];
  for (const len of lengths) {
    for (let shift = 0; shift < 4; shift++) {
      const off = (rand() * 8) | 0;
      const buf = shifted(randomBytes(rand, off + len + 3), shift);
      const want = naiveSum(buf.subarray(off, off + len));
      equal(checksumFold(checksumAdd(0, buf, off, len)), want, `len ${len} off ${off}`);
    }
  }
});

Deno.test("checksum: all-ones data and zero data fold to 0xffff and 0", () => {
  for (const len of [2, 64, 1500, 65536]) {
    const ones = new Uint8Array(len).fill(0xff);
    equal(checksumFold(checksumAdd(0, ones, 0, len)), 0xffff);
    equal(checksumFold(checksumAdd(0, new Uint8Array(len), 0, len)), 0);
  }
});

Deno.test("checksum: sums stay exact past 4 MiB, where the word loop folds", () => {
  const len = (8 << 20) + 3;
  const ones = new Uint8Array(len).fill(0xff);
  ones[12345] = 0x12;
  equal(checksumFold(checksumAdd(0, ones, 0, len)), naiveSum(ones));
});

Deno.test("checksum: a run at an odd position is added with checksumSwap", () => {
  const rand = prng(2);
  for (let iter = 0; iter < 2000; iter++) {
    const len = 1 + ((rand() * 300) | 0);
    const off = (rand() * 4) | 0;
    const buf = randomBytes(rand, off + len);
    const k = (rand() * (len + 1)) | 0;
    const head = checksumAdd(0, buf, off, k);
    const tail = checksumAdd(0, buf, off + k, len - k);
    const sum = head + (k & 1 ? checksumSwap(tail) : tail);
    equal(checksumFold(sum), naiveSum(buf.subarray(off, off + len)), `split ${k}/${len}`);
  }
});

Deno.test("checksum: running sums chain across calls", () => {
  const rand = prng(3);
  const parts = [8, 20, 1460, 2, 100].map((n) => randomBytes(rand, n));
  let sum = 0;
  for (const p of parts) sum = checksumAdd(sum, p, 0, p.length);
  equal(checksumFold(sum), naiveSum(concat(parts)));
});

Deno.test("checksum: checksumAddIov handles odd-length entries crossing word boundaries", () => {
  const rand = prng(4);
  for (let iter = 0; iter < 2000; iter++) {
    const n = 1 + ((rand() * 7) | 0);
    const iov: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      // Lengths 0-3 often, larger ones sometimes, so every parity mix happens.
      const len = rand() < 0.6 ? (rand() * 4) | 0 : (rand() * 200) | 0;
      iov.push(shifted(randomBytes(rand, len), (rand() * 4) | 0));
    }
    equal(checksumFold(checksumAddIov(0, iov)), naiveSum(concat(iov)));
    const count = (rand() * (n + 1)) | 0;
    equal(checksumFold(checksumAddIov(0, iov, count)), naiveSum(concat(iov.slice(0, count))));
  }
});

Deno.test("checksum: results stay right when many buffers take turns (view cache)", () => {
  const rand = prng(5);
  const bufs = Array.from({ length: 7 }, (_, i) => randomBytes(rand, 1500 + i));
  for (let round = 0; round < 5; round++) {
    for (const b of bufs) equal(checksumFold(checksumAdd(0, b, 0, b.length)), naiveSum(b));
  }
});

Deno.test("checksum: a growable ArrayBuffer is summed over its new bytes after growing", () => {
  const ab = new ArrayBuffer(256, { maxByteLength: 4096 });
  const bytes = new Uint8Array(ab); // length-tracking
  bytes.fill(0x11);
  equal(checksumFold(checksumAdd(0, bytes, 0, 256)), naiveSum(bytes));
  ab.resize(4096);
  bytes.fill(0x22, 256);
  equal(checksumFold(checksumAdd(0, bytes, 0, 4096)), naiveSum(bytes));
});

Deno.test("checksum: fold agrees with arithmetic modulo 0xffff for large running sums", () => {
  const rand = prng(6);
  for (let i = 0; i < 1000; i++) {
    const x = Math.floor(rand() * 2 ** 52) + 1;
    const want = Number((BigInt(x) - 1n) % 0xffffn) + 1;
    equal(checksumFold(x), want);
  }
  equal(checksumFold(0), 0);
  equal(checksumFold(0xffff), 0xffff);
  equal(checksumFold(0x10000), 1);
});

Deno.test("checksum: IPv4 pseudo-header sum equals the sum of its bytes", () => {
  const rand = prng(7);
  for (let i = 0; i < 500; i++) {
    const src = (rand() * 2 ** 32) >>> 0;
    const dst = (rand() * 2 ** 32) >>> 0;
    const proto = (rand() * 256) | 0;
    const len = (rand() * 65536) | 0;
    const bytes = new Uint8Array(12);
    set32(bytes, 0, src);
    set32(bytes, 4, dst);
    bytes[9] = proto;
    set16(bytes, 10, len);
    equal(checksumFold(checksumPseudo4(src, dst, proto, len)), naiveSum(bytes));
  }
});

Deno.test("checksum: IPv6 pseudo-header sum equals the sum of its bytes", () => {
  const rand = prng(8);
  for (let i = 0; i < 500; i++) {
    const addrs = randomBytes(rand, 40);
    const len = (rand() * 2 ** 32) >>> 0;
    const nh = (rand() * 256) | 0;
    const bytes = new Uint8Array(40);
    bytes.set(addrs.subarray(3, 19), 0);
    bytes.set(addrs.subarray(21, 37), 16);
    set32(bytes, 32, len);
    bytes[39] = nh;
    const sum = checksumPseudo6(addrs, 3, addrs, 21, nh, len);
    equal(checksumFold(sum), naiveSum(bytes));
  }
});

Deno.test("checksum: RFC 1624 update of a 16-bit field equals full recomputation", () => {
  const rand = prng(1624);
  let compared = 0;
  for (let i = 0; i < 20000; i++) {
    const len = 2 * (2 + ((rand() * 30) | 0));
    const data = randomBytes(rand, len);
    if (i % 7 === 0) data.fill(rand() < 0.5 ? 0 : 0xff, 2); // edge sums: all ones, all zero
    const field = 2 * (1 + ((rand() * (len / 2 - 1)) | 0)); // not the checksum word at 0
    const check = checksumFill(data, 0, len, 0, 0);
    const oldValue = get16(data, field);
    const newValue = [0, 0xffff, (rand() * 65536) | 0][i % 3];
    set16(data, field, newValue);
    const updated = checksumUpdate16(check, oldValue, newValue);
    // All-zero data is the one case where the two zeros of ones'-complement
    // differ (full pass: 0xffff, update: 0); real headers never are all zero.
    if (data.subarray(2).every((b) => b === 0)) continue;
    compared++;
    equal(updated, checksumFill(data, 0, len, 0, 0), `case ${i}`);
  }
  ok(compared > 19000);
});

Deno.test("checksum: RFC 1624 update of a 32-bit field equals full recomputation", () => {
  const rand = prng(1625);
  for (let i = 0; i < 20000; i++) {
    const data = randomBytes(rand, 40);
    const field = 4 * (1 + ((rand() * 9) | 0));
    const check = checksumFill(data, 0, 40, 0, 0);
    const oldValue = get32(data, field);
    const newValue = [0, 0xffffffff, (rand() * 2 ** 32) >>> 0][i % 3];
    set32(data, field, newValue);
    equal(checksumUpdate32(check, oldValue, newValue), checksumFill(data, 0, 40, 0, 0));
  }
});

Deno.test("checksum: fill then verify, and a flipped bit fails verification", () => {
  const rand = prng(9);
  for (let i = 0; i < 500; i++) {
    const len = 4 + ((rand() * 200) | 0);
    const data = randomBytes(rand, len);
    const initial = (rand() * 2 ** 20) | 0;
    checksumFill(data, 0, len, 2, initial);
    ok(checksumOk(data, 0, len, initial));
    data[(rand() * len) | 0] ^= 1 << ((rand() * 8) | 0);
    ok(!checksumOk(data, 0, len, initial));
  }
});

Deno.test("checksum: per-protocol fill helpers produce checksums their verifiers accept", () => {
  const rand = prng(10);
  const src = 0xc0000202;
  const dst = 0xc0000201;
  const addrs = randomBytes(rand, 32);
  const seg = randomBytes(rand, 61);

  ip4HeaderChecksumFill(seg, 0, 20);
  ok(ip4HeaderChecksumOk(seg, 0, 20));
  equal(naiveSum(seg.subarray(0, 20)), 0xffff);

  icmp4ChecksumFill(seg, 0, 61);
  ok(icmp4ChecksumOk(seg, 0, 61));

  tcp4ChecksumFill(seg, 0, 61, src, dst);
  ok(tcp4ChecksumOk(seg, 0, 61, src, dst));
  ok(!tcp4ChecksumOk(seg, 0, 61, src, dst + 1));

  tcp6ChecksumFill(seg, 0, 61, addrs, 0, 16);
  ok(tcp6ChecksumOk(seg, 0, 61, addrs, 0, 16));
  ok(!tcp6ChecksumOk(seg, 0, 61, addrs, 1, 16));

  udp4ChecksumFill(seg, 0, 61, src, dst);
  ok(udp4ChecksumOk(seg, 0, 61, src, dst));

  udp6ChecksumFill(seg, 0, 61, addrs, 0, 16);
  ok(udp6ChecksumOk(seg, 0, 61, addrs, 0, 16));

  icmp6ChecksumFill(seg, 0, 61, addrs, 0, 16);
  ok(icmp6ChecksumOk(seg, 0, 61, addrs, 0, 16));
  ok(!tcp6ChecksumOk(seg, 0, 61, addrs, 0, 16)); // another protocol's pseudo-header
});

Deno.test("checksum: UDP sends a computed 0 as 0xffff, over both families", () => {
  const src = 0xc0000202;
  const dst = 0xc0000201;
  const addrs = hex("20010db8000000000000000000000002", "20010db8000000000000000000000001");
  const udp = hex("1234 0035 000c 0000 0000 0000");
  for (const family of [4, 6]) {
    // Pick payload word 8 so that the data sums to 0xffff: the checksum is 0.
    set16(udp, 8, 0);
    set16(udp, 6, 0);
    const pseudo = family === 4
      ? checksumPseudo4(src, dst, 17, 12)
      : checksumPseudo6(addrs, 0, addrs, 16, 17, 12);
    set16(udp, 8, ~checksumFold(checksumAdd(pseudo, udp, 0, 12)) & 0xffff);
    equal(checksumFinish(checksumAdd(pseudo, udp, 0, 12)), 0);
    const stored = family === 4
      ? udp4ChecksumFill(udp, 0, 12, src, dst)
      : udp6ChecksumFill(udp, 0, 12, addrs, 0, 16);
    equal(stored, 0xffff);
    equal(get16(udp, 6), 0xffff);
    ok(
      family === 4
        ? udp4ChecksumOk(udp, 0, 12, src, dst)
        : udp6ChecksumOk(udp, 0, 12, addrs, 0, 16),
    );
  }
});

Deno.test("checksum: a zero UDP checksum means none over IPv4 and is invalid over IPv6", () => {
  const addrs = new Uint8Array(32).fill(1);
  const udp = hex("1234 0035 000c 0000 dead beef");
  ok(udp4ChecksumOk(udp, 0, 12, 1, 2));
  ok(!udp6ChecksumOk(udp, 0, 12, addrs, 0, 16));
});

Deno.test("checksum: completing a partial checksum (offload) gives what a full fill gives", () => {
  const rand = prng(11);
  const src = 0xc0000202;
  const dst = 0xc0000201;
  for (let i = 0; i < 200; i++) {
    const pre = 14 + ((rand() * 40) | 0); // Ethernet + IP headers, any length
    const segLen = 20 + ((rand() * 1500) | 0);
    const frame = randomBytes(rand, pre + segLen);
    const full = frame.slice();
    tcp4ChecksumFill(full, pre, segLen, src, dst);
    // Offload's convention: the field holds the folded pseudo-header sum.
    set16(frame, pre + 16, checksumFold(checksumPseudo4(src, dst, 6, segLen)));
    checksumComplete(frame, 0, pre + segLen, pre, 16);
    equal(get16(frame, pre + 16), get16(full, pre + 16));
    ok(tcp4ChecksumOk(frame, pre, segLen, src, dst));
  }
});
