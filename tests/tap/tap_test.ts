import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { checksumAdd, checksumFinish } from "../../lib/packet/checksum.ts";
import { pcapClose, pcapOpen } from "../../lib/pcap.ts";
import {
  ETH_MIN_FRAME,
  type FrameBatch,
  TAP_HEADROOM,
  type TapBackend,
  TapSender,
} from "../../lib/tap/tap.ts";

/** A backend that takes at most `accept` frames per send and records what it got. */
class FakeBackend implements TapBackend {
  readonly name = "fake";
  readonly fd = -1;
  readonly got: Uint8Array[] = [];
  /** Where each frame's checksum was left partial: [csumStart, csumOffset], or null. */
  readonly partial: ([number, number] | null)[] = [];
  accept = Infinity;
  constructor(readonly checksumOffload = false) {}
  receive(): number {
    return 0;
  }
  send(batch: FrameBatch, count: number): number {
    const n = Math.min(count, this.accept);
    for (let i = 0; i < n; i++) {
      const len = Math.max(batch.lens[i], ETH_MIN_FRAME);
      this.got.push(batch.slots[i].slice(TAP_HEADROOM, TAP_HEADROOM + len));
      this.partial.push(batch.csumOffset[i] ? [batch.csumStart[i], batch.csumOffset[i]] : null);
    }
    return n;
  }
}

function queue(tap: TapSender, fill: number, len: number): void {
  const slot = tap.next();
  slot.fill(0xee); // stale bytes from an earlier frame
  slot.fill(fill, TAP_HEADROOM, TAP_HEADROOM + len);
  tap.commit(len);
}

Deno.test("frames queue until flush, then go out in one batch, short ones zero-padded to 60 bytes", () => {
  const backend = new FakeBackend();
  const tap = new TapSender(backend, 8, 256);
  queue(tap, 1, 42);
  queue(tap, 2, 100);
  equal(tap.pending, 2);
  equal(backend.got.length, 0, "nothing sent before the flush");
  equal(tap.flush(), 2);
  equal(backend.got[0].length, 60);
  deepEqual(
    [...backend.got[0].subarray(40, 44)],
    [1, 1, 0, 0],
    "padding is zeros, not stale bytes",
  );
  equal(backend.got[1].length, 100);
  deepEqual(tap.stats, { framesOut: 2, bytesOut: 142, dropped: 0, flushes: 1 });
  equal(tap.flush(), 0, "an empty flush sends nothing");
  equal(tap.stats.flushes, 1);
});

Deno.test("frames the backend refuses are dropped and counted; the return value says how many went", () => {
  const backend = new FakeBackend();
  backend.accept = 2;
  const tap = new TapSender(backend, 8, 256);
  for (let i = 0; i < 5; i++) queue(tap, i, 64);
  equal(tap.flush(), 2);
  equal(tap.stats.dropped, 3);
  equal(tap.pending, 0, "the dropped frames are not retried");
});

Deno.test("a full batch flushes on the next slot request", () => {
  const backend = new FakeBackend();
  const tap = new TapSender(backend, 4, 256);
  for (let i = 0; i < 5; i++) queue(tap, i, 64);
  equal(backend.got.length, 4);
  equal(tap.pending, 1);
  throws(() => {
    tap.next();
    tap.commit(1000);
  }, RangeError);
});

Deno.test("pcap records exactly the frames that went out, unpadded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/out.pcap`;
    pcapOpen(file);
    const backend = new FakeBackend();
    backend.accept = 1;
    const tap = new TapSender(backend, 8, 256);
    queue(tap, 7, 42);
    queue(tap, 8, 80);
    tap.flush();
    pcapClose();
    const bytes = await Deno.readFile(file);
    const dv = new DataView(bytes.buffer);
    equal(bytes.length, 24 + 16 + 42, "one record: the frame sent, not the one dropped");
    equal(dv.getUint32(24 + 8, true), 42, "captured length is the frame's own, without padding");
    ok(bytes.subarray(40).every((b) => b === 7));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checksums are left partial only for a backend that offloads them, and never while capturing", async () => {
  const plain = new FakeBackend(false);
  const full = new TapSender(plain, 8, 256);
  equal(full.checksumsNeeded(), true);
  // Without offload the checksum is filled: the L4 bytes then verify.
  const s0 = full.next();
  s0.fill(0x5a, TAP_HEADROOM, TAP_HEADROOM + 80);
  s0[TAP_HEADROOM + 34 + 16] = s0[TAP_HEADROOM + 34 + 17] = 0;
  full.commitChecksummed(80, TAP_HEADROOM + 34, 16, 0x1_2345);
  full.flush();
  equal(checksumFinish(checksumAdd(0x1_2345, plain.got[0], 34, 80 - 34)), 0);
  deepEqual(plain.partial, [null]);

  const backend = new FakeBackend(true);
  const tap = new TapSender(backend, 8, 256);
  equal(tap.checksumsNeeded(), false);

  // A partial frame carries the folded pseudo-header sum at its place, and
  // where it is; an ordinary frame after it in the same batch carries none.
  const slot = tap.next();
  slot.fill(0, TAP_HEADROOM, TAP_HEADROOM + 80);
  tap.commitChecksummed(80, TAP_HEADROOM + 34, 16, 0x1_2345);
  queue(tap, 7, 60);
  tap.flush();
  deepEqual(backend.partial, [[34, 16], null]);
  equal((backend.got[0][34 + 16] << 8) | backend.got[0][34 + 17], 0x2346);

  const dir = await Deno.makeTempDir();
  try {
    pcapOpen(`${dir}/c.pcap`);
    equal(tap.checksumsNeeded(), true, "a capture must show real checksums");
    pcapClose();
    equal(tap.checksumsNeeded(), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
