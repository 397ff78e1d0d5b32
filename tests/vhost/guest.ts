/**
 * An in-process guest for the vhost-user device: a front-end with guest
 * memory (a memfd both sides map), both rings built by hand in it, real
 * eventfds for kicks and interrupts, and a whole tapir serving it in this
 * process, its reactor running as in `tapir vm --vhost-user`.
 */
import { equal, ok } from "node:assert/strict";
import type { GuestNet } from "../../lib/net.ts";
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
import { NET } from "../services/harness.ts";
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
export const HDR = 12;
/** Entries in each ring. */
export const RING = 64;
/** Layout of the shared region: rings, then each ring's buffers. */
const RX_RING_OFF = 0x0;
const TX_RING_OFF = 0x4000;
export const RX_BUF = [0x10000, 0x80000];
export const TX_BUF = [0x80000, 0xf0000];
/** Where the indirect tables go. */
const INDIRECT_OFF = 0xf0000;

/** A front-end with guest memory, both rings and their eventfds, serving one in-process tapir. */
export class Frontend {
  readonly mapping: sys.Mapping;
  readonly rx: RingDriver;
  readonly tx: RingDriver;
  readonly rxKick = eventfd();
  readonly rxCall = eventfd();
  readonly txKick = eventfd();
  readonly txCall = eventfd();
  readonly dev = new VhostNetDevice();
  readonly tapir: Tapir;
  readonly running: Promise<string>;
  #nextTxDesc = 0;

  /** Serves `net`; the guest accepts every feature offered but those in `refuse` (bits). */
  constructor(net: GuestNet = NET, refuse = 0n) {
    this.tapir = new Tapir(net, this.dev);
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
    acceptAll(b, refuse);
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
export function withHeader(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(HDR + frame.length);
  out.set(frame, HDR);
  return out;
}

/** Waits until `cond` holds, letting the loop run; fails naming `what` after `ms` (2 s). */
export async function until(what: string, cond: () => boolean, ms = 2000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
