/**
 * The vhost-user network device under a whole in-process tapir, driven by a
 * front-end written here: guest memory is a memfd that both sides map, the
 * rings are built by hand in it, kicks and interrupts are real eventfds, and
 * tapir's reactor runs as it does in `tapir vm --vhost-user`. Frames go in
 * through the transmit ring (their virtio-net header and bytes split over
 * buffers every way a guest may split them) and tapir's answers come back in
 * the receive ring.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { ArpOp } from "../../lib/packet/arp.ts";
import * as sys from "../../lib/sys/mod.ts";
import { Tapir } from "../../lib/tapir.ts";
import {
  VHOST_RX_RING,
  VHOST_TX_RING,
  VhostNetDevice,
  vhostServe,
} from "../../lib/vhost/device.ts";
import { VhostUserRequest as Req } from "../../lib/vhost/protocol.ts";
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT } from "../../lib/vhost/virtqueue.ts";
import { arpFrame, GUEST_MAC, NET, v4 } from "../services/harness.ts";
import {
  acceptAll,
  type Buf,
  eventfd,
  GPA,
  GUEST_MEM_SIZE,
  memfd,
  msg,
  request,
  RingDriver,
  UVA,
} from "./frontend.ts";

/** Header bytes in front of every frame (virtio 1.x). */
const HDR = 12;
const RING = 64;
/** Layout of the shared region: rings, then each ring's buffers. */
const RX_RING_OFF = 0x0;
const TX_RING_OFF = 0x4000;
const RX_BUF = [0x10000, 0x80000];
const TX_BUF = [0x80000, 0xf0000];
/** Where the indirect tables go. */
const INDIRECT_OFF = 0xf0000;

/** A front-end with guest memory, both rings and their eventfds, serving one in-process tapir. */
class Frontend {
  readonly mapping: sys.Mapping;
  readonly rx: RingDriver;
  readonly tx: RingDriver;
  readonly rxKick = eventfd();
  readonly rxCall = eventfd();
  readonly txKick = eventfd();
  readonly txCall = eventfd();
  readonly dev = new VhostNetDevice();
  readonly tapir = new Tapir(NET, this.dev);
  readonly running: Promise<string>;
  #nextTxDesc = 0;

  constructor() {
    const fd = memfd();
    const m = sys.mmap(GUEST_MEM_SIZE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
    if (typeof m === "number") throw new Error(`mmap: ${sys.errnoName(-m)}`);
    this.mapping = m;
    const place = (ringOff: number, [bufOff, bufEnd]: number[]) => ({
      bytes: m.bytes,
      ringOff,
      bufOff,
      bufEnd,
    });
    this.rx = new RingDriver(true, RING, place(RX_RING_OFF, RX_BUF));
    this.tx = new RingDriver(true, RING, place(TX_RING_OFF, TX_BUF));
    vhostServe(this.dev, this.tapir);
    this.tapir.start();
    this.running = this.tapir.loop.run();

    const b = this.dev.control;
    acceptAll(b);
    equal(request(b, msg(Req.SET_OWNER))[0], 0);
    // The back-end owns (and closes) what it is passed; the memfd stays ours mapped.
    const table = [1, 0, BigInt(GPA), BigInt(GUEST_MEM_SIZE), BigInt(UVA), 0n];
    equal(request(b, msg(Req.SET_MEM_TABLE, table), [fd])[0], 0, b.error);
    for (
      const [i, r, kick, call] of [
        [VHOST_RX_RING, this.rx, this.rxKick, this.rxCall],
        [VHOST_TX_RING, this.tx, this.txKick, this.txCall],
      ] as const
    ) {
      equal(request(b, msg(Req.SET_VRING_NUM, [i, RING]))[0], 0);
      equal(request(b, msg(Req.SET_VRING_BASE, [i, 0]))[0], 0);
      const at = (off: number) => BigInt(UVA + off);
      const addr = [i, 0, at(r.descOff), at(r.usedOff), at(r.availOff), 0n];
      equal(request(b, msg(Req.SET_VRING_ADDR, addr))[0], 0, b.error);
      equal(request(b, msg(Req.SET_VRING_KICK, [BigInt(i)]), [kick])[0], 0);
      equal(request(b, msg(Req.SET_VRING_CALL, [BigInt(i)]), [call])[0], 0);
      equal(request(b, msg(Req.SET_VRING_ENABLE, [i, 1]))[0], 0);
    }
    ok(b.vrings.every((v) => v.running), "both rings run");
  }

  /** Writes 1 to a kick eventfd: the guest made chains available. */
  kick(fd: number): void {
    equal(sys.write(fd, new Uint8Array(new BigUint64Array([1n]).buffer)), 8);
  }

  /** Reads a call eventfd: interrupts since the last read (0 if none). */
  calls(fd: number): number {
    const buf = new BigUint64Array(1);
    const n = sys.read(fd, new Uint8Array(buf.buffer));
    return n === 8 ? Number(buf[0]) : 0;
  }

  /**
   * Puts `bytes` (header and frame) into fresh transmit buffers cut at
   * `cuts`, chained directly or through an indirect table, and offers the
   * chain; returns its head.
   */
  send(bytes: Uint8Array, cuts: number[], indirect = false): number {
    const bounds = [0, ...cuts, bytes.length];
    const bufs: Buf[] = [];
    for (let k = 0; k + 1 < bounds.length; k++) {
      const len = bounds[k + 1] - bounds[k];
      const addr = this.tx.alloc(len);
      this.tx.bytes.set(bytes.subarray(bounds[k], bounds[k + 1]), addr - GPA);
      bufs.push({ addr, len });
    }
    const used = indirect ? 1 : bufs.length;
    // Chains are taken one at a time here, so the table's start is free again.
    const head = this.#nextTxDesc + used > RING ? 0 : this.#nextTxDesc;
    this.#nextTxDesc = head + used;
    if (indirect) {
      const table = INDIRECT_OFF + 0x400 * head;
      bufs.forEach((b, k) => {
        const last = k === bufs.length - 1;
        this.tx.desc(k, b.addr, b.len, last ? 0 : VIRTQ_DESC_F_NEXT, k + 1, table);
      });
      this.tx.desc(head, GPA + table, 16 * bufs.length, VIRTQ_DESC_F_INDIRECT);
    } else {
      this.tx.chain(head, bufs);
    }
    this.tx.offer(head);
    return head;
  }

  async close(): Promise<void> {
    this.tapir.loop.stop();
    await this.running;
    this.dev.control.reset(); // closes the kick and call fds it was passed
    this.tapir.loop.close();
    sys.munmap(this.mapping);
  }
}

/** A vnet header (no offload) followed by `frame`. */
function withHeader(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(HDR + frame.length);
  out.set(frame, HDR);
  return out;
}

/** Waits until `cond` holds, letting the loop run; fails naming `what` after 2 s. */
async function until(what: string, cond: () => boolean): Promise<void> {
  const deadline = performance.now() + 2000;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

const GATEWAY = NET.ip4!.gateway;
const GUEST_IP = v4("192.0.2.2");
const ARP_REQUEST = arpFrame(ArpOp.Request, GUEST_MAC, GUEST_IP, new Uint8Array(6), GATEWAY);

/** Every way to cut header + ARP request: header alone, the frame over 1..8 buffers. */
function cutsToTry(): number[][] {
  const total = HDR + ARP_REQUEST.length;
  const out: number[][] = [[], [HDR]];
  for (let at = 1; at < total; at++) out.push([at]);
  for (let n = 2; n <= 8; n++) {
    const cuts = [HDR];
    for (let k = 1; k < n; k++) cuts.push(HDR + Math.floor(k * ARP_REQUEST.length / n));
    out.push(cuts);
  }
  return out;
}

Deno.test("ARP requests split every way over transmit buffers, direct and indirect, are answered in the receive ring, padded to 60", async () => {
  const f = new Frontend();
  try {
    const shapes = cutsToTry();
    let answered = 0;
    for (const [k, cuts] of shapes.entries()) {
      const indirect = k % 2 === 1;
      // A receive chain cut small too: header and the 60-byte frame over three buffers.
      f.rx.offerWritable([5, 20, 100]);
      f.kick(f.rxKick);
      const head = f.send(withHeader(ARP_REQUEST), cuts, indirect);
      const txUsed = f.tx.usedIdx;
      f.kick(f.txKick);
      await until(
        `the reply to shape ${cuts} (${indirect ? "indirect" : "direct"})`,
        () => f.rx.usedIdx === answered + 1,
      );
      answered++;
      const [rxHead, written] = f.rx.used(answered - 1);
      equal(written, HDR + 60, "header and a frame padded to 60 bytes");
      const got = f.rx.readChain(rxHead, written);
      equal(got[10] | (got[11] << 8), 1, "num_buffers");
      const frame = got.subarray(HDR);
      equal((frame[20] << 8) | frame[21], ArpOp.Reply, "an ARP reply");
      deepEqual([...frame.subarray(32, 38)], [...GUEST_MAC], "to the guest's MAC");
      ok(frame.subarray(42).every((b) => b === 0), "zero padding");
      equal(f.tx.usedIdx, (txUsed + 1) & 0xffff, "the transmit chain is given back");
      deepEqual(f.tx.used(txUsed), [head, 0], "with nothing written");
    }
    equal(answered, shapes.length);
    ok(f.calls(f.rxCall) > 0, "the guest was interrupted for its receive ring");
    ok(f.calls(f.txCall) > 0, "and for its transmit ring");
    equal(f.dev.stats.framesIn, shapes.length);
    equal(f.dev.stats.badFrames, 0);
  } finally {
    await f.close();
  }
});

Deno.test("a transmit descriptor outside guest memory is not read, is counted, and the next frame is served", async () => {
  const f = new Frontend();
  try {
    f.rx.offerWritable([2048]);
    f.kick(f.rxKick);
    // A chain whose second buffer points past the end of guest memory.
    const good = f.tx.alloc(HDR);
    f.tx.chain(RING - 2, [{ addr: good, len: HDR }, { addr: GPA + GUEST_MEM_SIZE - 8, len: 64 }]);
    f.tx.offer(RING - 2);
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the reply to the good frame", () => f.rx.usedIdx === 1);
    const tx = f.dev.control.vrings[VHOST_TX_RING].queue.stats;
    equal(tx.badChains, 1, "the bad chain counted");
    equal(f.tx.usedIdx, 2, "both chains given back");
    deepEqual(f.tx.used(0), [RING - 2, 0], "the bad one unread");
    equal(f.dev.stats.framesIn, 1, "only the good frame reached tapir");
  } finally {
    await f.close();
  }
});

Deno.test("with the receive ring empty a reply is not delivered; once the guest adds buffers and kicks, the next one is", async () => {
  const f = new Frontend();
  try {
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the request to be taken", () => f.tx.usedIdx === 1);
    await until(
      "the reply counted undelivered",
      () => f.tapir.arp.stats.sent === 1 && f.tapir.tap.stats.undelivered > 0,
    );
    equal(f.rx.usedIdx, 0, "no receive buffer: nothing written");
    ok(f.dev.rx.stats.noRoom > 0);
    f.rx.offerWritable([1024]);
    f.kick(f.rxKick);
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the reply after the kick", () => f.rx.usedIdx === 1);
  } finally {
    await f.close();
  }
});
