import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { checksumAdd, checksumFinish } from "../../lib/packet/checksum.ts";
import { pcapClose, pcapOpen } from "../../lib/pcap.ts";
import * as sys from "../../lib/sys/mod.ts";
import {
  ETH_MIN_FRAME,
  FrameBatch,
  GsoType,
  TAP_HEADROOM,
  type TapBackend,
  TapSender,
  VnetFlag,
} from "../../lib/tap/tap.ts";
import { TuntapBackend, VNET_HDR_LEN } from "../../lib/tap/tuntap.ts";

/** What a backend saw of one frame's descriptor. */
interface SeenDesc {
  partial: [number, number] | null;
  gso: [number, number, number] | null;
}

/** A backend that takes at most `accept` frames per send and records what it got. */
class FakeBackend implements TapBackend {
  readonly name = "fake";
  readonly fd = -1;
  readonly got: Uint8Array[] = [];
  readonly desc: SeenDesc[] = [];
  accept = Infinity;
  sendBlocked = false;
  constructor(readonly checksumOffload = false, readonly gsoTcp = false) {}
  receive(): number {
    return 0;
  }
  send(batch: FrameBatch, count: number): number {
    const n = Math.min(count, this.accept);
    for (let k = 0; k < n; k++) {
      const i = batch.order[k];
      const len = Math.max(batch.lens[i], ETH_MIN_FRAME);
      this.got.push(batch.slots[i].slice(TAP_HEADROOM, TAP_HEADROOM + len));
      this.desc.push({
        partial: batch.vnetFlags[i] & VnetFlag.NEEDS_CSUM
          ? [batch.csumStart[i], batch.csumOffset[i]]
          : null,
        gso: batch.gsoType[i] ? [batch.gsoType[i], batch.gsoSize[i], batch.hdrLen[i]] : null,
      });
    }
    this.sendBlocked = n < count;
    return n;
  }
}

/** Queues a frame of `len` bytes of `fill`; returns its slot index. */
function queue(tap: TapSender, fill: number, len: number): number {
  const i = tap.take();
  const slot = tap.slot(i);
  slot.fill(0xee); // stale bytes from an earlier frame
  slot.fill(fill, TAP_HEADROOM, TAP_HEADROOM + len);
  tap.commit(i, len);
  return i;
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
  equal(tap.stats.framesToGuest, 2);
  equal(tap.stats.bytesToGuest, 142);
  equal(tap.stats.undelivered, 0);
  equal(tap.stats.flushes, 1);
  equal(tap.flush(), 0, "an empty flush sends nothing");
  equal(tap.stats.flushes, 1);
});

Deno.test("a producer commits the slots it filled: an abandoned one leaves the others in place, in commit order", () => {
  const backend = new FakeBackend();
  const tap = new TapSender(backend, 8, 256);
  const a = tap.take();
  const b = tap.take(); // abandoned: never committed
  const c = tap.take();
  tap.slot(c).fill(3, TAP_HEADROOM, TAP_HEADROOM + 64);
  tap.commit(c, 64);
  tap.slot(a).fill(1, TAP_HEADROOM, TAP_HEADROOM + 64);
  tap.commit(a, 64);
  ok(b !== a && b !== c);
  equal(tap.flush(), 2);
  deepEqual(backend.got.map((f) => f[0]), [3, 1], "commit order, not slot order");
});

Deno.test("released slots go back to the next producer", () => {
  const tap = new TapSender(new FakeBackend(), 4, 256);
  const first = tap.take();
  tap.take();
  tap.take();
  equal(tap.room(), 1);
  tap.release(first + 1);
  equal(tap.room(), 3, "the two taken after the first are free again");
  equal(tap.take(), first + 1);
});

Deno.test("frames the backend refuses are counted and reported to their producer, in order", () => {
  const backend = new FakeBackend();
  backend.accept = 2;
  const tap = new TapSender(backend, 8, 256);
  const reports: [number, number][] = [];
  const me = tap.onUndelivered((flow, seq) => reports.push([flow, seq]));
  for (let i = 0; i < 5; i++) {
    const slot = queue(tap, i, 64);
    if (i !== 3) tap.setOwner(slot, me, 7, 1000 + i);
  }
  equal(tap.flush(), 2);
  equal(tap.stats.undelivered, 3);
  deepEqual(reports, [[7, 1002], [7, 1004]], "frames 2 and 4 were marked; 3 was not");
  equal(tap.blocked, true, "the backend would block: the reactor waits for it");
  let resumed = 0;
  tap.onResume(() => resumed++);
  tap.resume();
  equal(tap.blocked, false);
  equal(resumed, 1);
  equal(tap.pending, 0, "the send path does not retry: the producers do");
});

Deno.test("frames refused for another reason than a full backend are lost, not reported", () => {
  const backend = new FakeBackend();
  backend.accept = 1;
  const tap = new TapSender(backend, 8, 256);
  const reports: [number, number][] = [];
  const me = tap.onUndelivered((flow, seq) => reports.push([flow, seq]));
  for (let i = 0; i < 3; i++) tap.setOwner(queue(tap, i, 64), me, 7, 1000 + i);
  const send = backend.send.bind(backend);
  backend.send = (batch, count) => {
    const n = send(batch, count);
    backend.sendBlocked = false; // as EIO or EINVAL: waiting for EPOLLOUT would not help
    return n;
  };
  equal(tap.flush(), 1);
  equal(tap.stats.undelivered, 2);
  deepEqual(reports, [], "no rewind: it would resend every turn while the error lasts");
  equal(tap.blocked, false);
});

Deno.test("a full batch flushes on the next slot request", () => {
  const backend = new FakeBackend();
  const tap = new TapSender(backend, 4, 256);
  for (let i = 0; i < 5; i++) queue(tap, i, 64);
  equal(backend.got.length, 4);
  equal(tap.pending, 1);
  throws(() => tap.commit(tap.take(), 1000), RangeError);
});

Deno.test("pcap records exactly the frames that went out, unpadded, with partial checksums completed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/out.pcap`;
    pcapOpen(file);
    const backend = new FakeBackend(true);
    backend.accept = 2;
    const tap = new TapSender(backend, 8, 256);
    queue(tap, 7, 42);
    // A frame with its checksum left partial: the capture shows it filled.
    const i = tap.take();
    const slot = tap.slot(i);
    slot.fill(0x5a, TAP_HEADROOM, TAP_HEADROOM + 80);
    slot[TAP_HEADROOM + 34 + 16] = slot[TAP_HEADROOM + 34 + 17] = 0;
    tap.commitChecksummed(i, 80, TAP_HEADROOM + 34, 16, 0x1_2345);
    queue(tap, 8, 80);
    tap.flush();
    pcapClose();
    deepEqual(backend.desc[1].partial, [34, 16], "the backend got it partial");
    const bytes = await Deno.readFile(file);
    const dv = new DataView(bytes.buffer);
    equal(
      bytes.length,
      24 + 16 + 42 + 16 + 80,
      "two records: the frames sent, not the one refused",
    );
    equal(dv.getUint32(24 + 8, true), 42, "captured length is the frame's own, without padding");
    ok(bytes.subarray(40, 82).every((b) => b === 7));
    const rec = bytes.subarray(24 + 16 + 42 + 16);
    equal(checksumFinish(checksumAdd(0x1_2345, rec, 34, 80 - 34)), 0, "a real checksum");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checksums are left partial only for a backend that offloads them", () => {
  const plain = new FakeBackend(false);
  const full = new TapSender(plain, 8, 256);
  equal(full.checksumOffload, false);
  // Without offload the checksum is filled: the L4 bytes then verify.
  const i0 = full.take();
  const s0 = full.slot(i0);
  s0.fill(0x5a, TAP_HEADROOM, TAP_HEADROOM + 80);
  s0[TAP_HEADROOM + 34 + 16] = s0[TAP_HEADROOM + 34 + 17] = 0;
  full.commitChecksummed(i0, 80, TAP_HEADROOM + 34, 16, 0x1_2345);
  full.flush();
  equal(checksumFinish(checksumAdd(0x1_2345, plain.got[0], 34, 80 - 34)), 0);
  deepEqual(plain.desc[0].partial, null);

  const backend = new FakeBackend(true);
  const tap = new TapSender(backend, 8, 256);
  equal(tap.checksumOffload, true);
  // A partial frame carries the folded pseudo-header sum at its place, and
  // where it is; an ordinary frame after it in the same batch carries none.
  const i = tap.take();
  tap.slot(i).fill(0, TAP_HEADROOM, TAP_HEADROOM + 80);
  tap.commitChecksummed(i, 80, TAP_HEADROOM + 34, 16, 0x1_2345);
  queue(tap, 7, 60);
  tap.flush();
  deepEqual(backend.desc.map((d) => d.partial), [[34, 16], null]);
  equal((backend.got[0][34 + 16] << 8) | backend.got[0][34 + 17], 0x2346);
});

Deno.test("a GSO frame carries its descriptor to the backend and is counted with its segments", () => {
  const backend = new FakeBackend(true, true);
  const tap = new TapSender(backend, 8, 8192);
  equal(tap.gsoTcp, true);
  const i = tap.take();
  tap.commitGso(i, 54 + 4000, TAP_HEADROOM + 34, 16, 0x1234, GsoType.TCPV4, 1460, 54);
  tap.flush();
  deepEqual(backend.desc[0], { partial: [34, 16], gso: [GsoType.TCPV4, 1460, 54] });
  equal(tap.stats.gsoFramesToGuest, 1);
  equal(tap.stats.gsoSegmentsToGuest, 3, "4000 bytes of payload in segments of 1460");

  const off = new TapSender(new FakeBackend(true, true), 8, 8192, false);
  equal(off.gsoTcp, false, "--no-offload: no GSO frames");
  const noGso = new TapSender(new FakeBackend(true, false), 8, 8192);
  equal(noGso.gsoTcp, false, "a backend that cannot take them never gets one");
  throws(() => noGso.commitGso(noGso.take(), 4054, 50, 16, 0, GsoType.TCPV4, 1460, 54));
});

Deno.test("the tap backend writes each frame's vnet header from its descriptor, and reads one into it", () => {
  const fds = new Int32Array(2);
  sys.sysCheck(
    sys.socketpair(sys.AF_UNIX, sys.SOCK_SEQPACKET | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, 0, fds),
    "socketpair",
  );
  try {
    // A socket stands in for the tap fd: one message per frame, like a tap.
    const backend = new TuntapBackend(fds[0], "test0", true);
    equal(backend.granted, 0, "TUNSETOFFLOAD fails on a socket: nothing granted");
    const tap = new TapSender(backend, 4, 8192);
    const i = tap.take();
    tap.commitGso(i, 54 + 3000, TAP_HEADROOM + 34, 16, 0x1234, GsoType.TCPV4, 1448, 54);
    queue(tap, 9, 70);
    equal(tap.flush(), 2);
    const buf = new Uint8Array(8192);
    const n = sys.read(fds[1], buf);
    equal(n, VNET_HDR_LEN + 3054);
    const dv = new DataView(buf.buffer);
    deepEqual(
      [buf[0], buf[1], dv.getUint16(2, true), dv.getUint16(4, true), dv.getUint16(6, true)],
      [VnetFlag.NEEDS_CSUM, GsoType.TCPV4, 54, 1448, 34],
    );
    equal(dv.getUint16(8, true), 16);
    const n2 = sys.read(fds[1], buf);
    equal(n2, VNET_HDR_LEN + 70);
    ok(buf.subarray(0, VNET_HDR_LEN).every((b) => b === 0), "a plain frame: a zero header");

    // The other way: a header the guest's kernel wrote lands in the descriptor.
    const msg = new Uint8Array(VNET_HDR_LEN + 2000);
    const mv = new DataView(msg.buffer);
    msg[0] = VnetFlag.NEEDS_CSUM;
    msg[1] = GsoType.TCPV6;
    mv.setUint16(2, 74, true);
    mv.setUint16(4, 1440, true);
    mv.setUint16(6, 54, true);
    mv.setUint16(8, 16, true);
    sys.sysCheck(sys.write(fds[1], msg), "write");
    const rx = new FrameBatch(4, 8192);
    equal(backend.receive(rx), 1);
    equal(rx.lens[0], 2000);
    deepEqual(
      [rx.vnetFlags[0], rx.gsoType[0], rx.hdrLen[0], rx.gsoSize[0], rx.csumStart[0]],
      [VnetFlag.NEEDS_CSUM, GsoType.TCPV6, 74, 1440, 54],
    );
    equal(rx.csumOffset[0], 16);
  } finally {
    sys.close(fds[0]);
    sys.close(fds[1]);
  }
});

/** A backend that lends memory of its own for payloads, as vhost-user lends the guest's. */
class LendingBackend extends FakeBackend {
  readonly lent = new Uint8Array(1 << 16);
  /** Per slot: reserved and not given back or sent. */
  readonly held = new Set<number>();
  unreserved = 0;
  reserve(batch: FrameBatch, i: number, headLen: number, max: number): boolean {
    const tail = batch.tails[i];
    tail.reset(TAP_HEADROOM + headLen, TAP_HEADROOM + headLen);
    // Two pieces, cut at an odd place, 1000 bytes apart per slot.
    const half = Math.floor(max / 2) | 1;
    tail.add(this.lent, i * 1000, half);
    tail.add(this.lent, 40_000 + i * 1000, max - half);
    this.held.add(i);
    return true;
  }
  unreserve(i: number): void {
    this.unreserved++;
    this.held.delete(i);
  }
  override send(batch: FrameBatch, count: number): number {
    for (let k = 0; k < count; k++) this.held.delete(batch.order[k]);
    return super.send(batch, count);
  }
}

Deno.test("payload areas lent by the backend: filled in place, checksummed through the tail, reservations given back when abandoned", () => {
  const backend = new LendingBackend();
  const tap = new TapSender(backend, 8, 512);
  const iov = new sys.IovecArray(8);
  // Frame 0: 20 bytes of headers in the slot, 300 of payload in lent memory.
  const a = tap.take();
  equal(tap.payloadIov(a, 20, 300, iov, 0), 2, "two iovecs: the tail's pieces");
  const payload = Uint8Array.from({ length: 300 }, (_, k) => (k * 13) & 0xff);
  backend.lent.set(payload.subarray(0, 151), a * 1000);
  backend.lent.set(payload.subarray(151, 250), 40_000 + a * 1000);
  const slot = tap.slot(a);
  slot.fill(7, TAP_HEADROOM, TAP_HEADROOM + 20);
  // Frame 1: taken and reserved, then abandoned; frame 2: released.
  const b = tap.take();
  tap.payloadIov(b, 20, 100, iov, 0);
  const c = tap.take();
  tap.payloadIov(c, 20, 100, iov, 0);
  tap.release(c);
  equal(backend.unreserved, 1, "the released slot's reservation goes back at once");
  // Only 250 payload bytes came: the frame is shorter than its room.
  tap.commitChecksummed(a, 270, TAP_HEADROOM + 14, 2, 0);
  const frame = new Uint8Array(270);
  frame.fill(7, 0, 20);
  frame.set(payload.subarray(0, 250), 20);
  frame[16] = frame[17] = 0;
  const want = checksumFinish(checksumAdd(0, frame, 14, 256));
  equal(
    (slot[TAP_HEADROOM + 16] << 8) | slot[TAP_HEADROOM + 17],
    want,
    "checksum over slot and tail",
  );
  equal(tap.flush(), 1);
  equal(backend.unreserved, 2, "the abandoned slot's reservation goes back at the flush");
  equal(backend.held.size, 0, "nothing left reserved");
});
