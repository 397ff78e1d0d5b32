/**
 * Micro benchmark of the Internet checksum (`lib/packet/checksum.ts`).
 *
 * Run with `deno bench -A bench/checksum_bench.ts`. Throughput is the byte
 * count over the time per iteration: 64 KiB / t for the large case (a GSO or
 * 65520-MTU frame), 1500 B / t for a standard frame. The "odd offset" cases sum
 * from a buffer position that is not 4-byte aligned, as a header inside a frame
 * buffer usually is.
 *
 * @module
 */

import { checksumAdd, checksumFold } from "../lib/packet/checksum.ts";

const big = new Uint8Array(65536 + 8);
for (let i = 0; i < big.length; i++) big[i] = (i * 7919 + 13) & 0xff;

// Results go to a sink so the work cannot be optimised away.
let sink = 0;

Deno.bench("checksum 64 KiB", { group: "64k", baseline: true }, () => {
  sink ^= checksumFold(checksumAdd(0, big, 0, 65536));
});

Deno.bench("checksum 64 KiB, odd offset", { group: "64k" }, () => {
  sink ^= checksumFold(checksumAdd(0, big, 3, 65536));
});

Deno.bench("checksum 1500 B", { group: "1500", baseline: true }, () => {
  sink ^= checksumFold(checksumAdd(0, big, 0, 1500));
});

Deno.bench("checksum 1500 B, odd offset", { group: "1500" }, () => {
  sink ^= checksumFold(checksumAdd(0, big, 1, 1500));
});

Deno.bench("checksum 20 B (IPv4 header)", { group: "small" }, () => {
  sink ^= checksumFold(checksumAdd(0, big, 14, 20));
});
