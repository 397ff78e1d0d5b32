/**
 * The front-end's side of vhost-user for tests: messages laid out as QEMU
 * writes them. (The in-process front-end that drives a whole data path
 * grows here.)
 */
import * as sys from "../../lib/sys/mod.ts";
import { GuestMemory } from "../../lib/vhost/memory.ts";
import { equal } from "node:assert/strict";
import type { VhostUserBackend } from "../../lib/vhost/backend.ts";
import {
  VHOST_USER_HDR_SIZE,
  VhostUserMsg,
  VhostUserRequest as Req,
} from "../../lib/vhost/protocol.ts";
import { SplitQueue, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../lib/vhost/virtqueue.ts";

/** Bytes of the guest memory {@linkcode memfd} makes. */
export const GUEST_MEM_SIZE = 1 << 20;

/**
 * A memfd of {@linkcode GUEST_MEM_SIZE} zero bytes: guest memory to pass
 * with SET_MEM_TABLE. It allows seals, as QEMU's memfd backend makes it;
 * `sealing` false: it is sealed for good, unsealed.
 */
export function memfd(sealing = true): number {
  const flags = sys.MFD_CLOEXEC | (sealing ? sys.MFD_ALLOW_SEALING : 0);
  const fd = sys.sysCheck(sys.memfdCreate("guest", flags), "memfd_create");
  if (sys.write(fd, new Uint8Array(GUEST_MEM_SIZE)) !== GUEST_MEM_SIZE) {
    throw new Error("memfd write");
  }
  return fd;
}

/** A non-blocking eventfd: a kick or call fd to pass. */
export function eventfd(): number {
  return sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
}

/**
 * A message: header (version 1, plus `flags`) and a payload of words, each
 * 32 bits (a number) or 64 bits (a bigint), little-endian.
 */
export function msg(request: number, payload: (number | bigint)[] = [], flags = 0): Uint8Array {
  const size = payload.reduce<number>((n, w) => n + (typeof w === "bigint" ? 8 : 4), 0);
  const buf = new Uint8Array(VHOST_USER_HDR_SIZE + size);
  const v = new DataView(buf.buffer);
  v.setUint32(0, request, true);
  v.setUint32(4, 1 | flags, true);
  v.setUint32(8, size, true);
  let at = VHOST_USER_HDR_SIZE;
  for (const w of payload) {
    if (typeof w === "bigint") {
      v.setBigUint64(at, w, true);
      at += 8;
    } else {
      v.setUint32(at, w, true);
      at += 4;
    }
  }
  return buf;
}

/** Sends one message to `b` with `passed` descriptors; returns [reply length, reply bytes]. */
export function request(
  b: VhostUserBackend,
  m: Uint8Array,
  passed: number[] = [],
): [number, DataView] {
  const view = new VhostUserMsg();
  equal(view.wrap(m, 0, m.length), null);
  const fds = new Int32Array(sys.MAX_PASSED_FDS).fill(-1);
  passed.forEach((fd, i) => fds[i] = fd);
  const reply = new Uint8Array(64);
  const n = b.handle(view, fds, reply);
  return [n, new DataView(reply.buffer)];
}

/** Features QEMU would accept: everything offered, but the bits in `refuse`. */
export function acceptAll(b: VhostUserBackend, refuse = 0n): void {
  const [n, r] = request(b, msg(Req.GET_FEATURES));
  equal(n, 20);
  const offered = r.getBigUint64(12, true);
  equal(request(b, msg(Req.SET_FEATURES, [offered & ~refuse]))[0], 0);
  const [, p] = request(b, msg(Req.GET_PROTOCOL_FEATURES));
  equal(request(b, msg(Req.SET_PROTOCOL_FEATURES, [p.getBigUint64(12, true)]))[0], 0);
}

/** Guest-physical base of the one region, and where the front-end has it mapped. */
export const GPA = 0x4000_0000;
export const UVA = 0x7f00_0000_0000;
export const REGION_SIZE = 1 << 20;
/** Default ring size. */
export const RING_SIZE = 8;
/** Where the ring parts and the buffers sit in the region. */
export const DESC_OFF = 0x0;
export const AVAIL_OFF = 0x1000;
export const USED_OFF = 0x2000;
export const BUF_OFF = 0x10000;

/** A buffer for a descriptor: guest address and length. */
export type Buf = { addr: number; len: number; write?: boolean };

/**
 * Where one ring lives in a region shared by several: its parts from
 * `ringOff` (descriptors, then available and used rings at the usual
 * steps), its buffers in `[bufOff, bufEnd)`.
 */
export interface RingPlace {
  bytes: Uint8Array;
  ringOff: number;
  bufOff: number;
  bufEnd: number;
}

/**
 * The guest's driver side of one ring, writing straight into the region:
 * its own region (with a device-side queue over it, for unit tests), or a
 * place in a shared one (a whole front-end's guest memory).
 */
export class RingDriver {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  readonly mem = new GuestMemory();
  readonly queue = new SplitQueue(this.mem);
  availIdx = 0;
  /** Region offsets of the ring's parts. */
  readonly descOff: number;
  readonly availOff: number;
  readonly usedOff: number;

  /** Bump allocator for buffers, from BUF_OFF. */
  #nextBuf: number;
  readonly #bufEnd: number;
  /** Next free descriptor for {@linkcode offerWritable} (cycles through the table). */
  #nextDesc = 0;

  constructor(eventIdx = false, readonly size: number = RING_SIZE, place?: RingPlace) {
    this.bytes = place?.bytes ?? new Uint8Array(REGION_SIZE);
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
    const ring = place?.ringOff ?? 0;
    this.descOff = ring + DESC_OFF;
    this.availOff = ring + AVAIL_OFF;
    this.usedOff = ring + USED_OFF;
    this.#nextBuf = place?.bufOff ?? BUF_OFF;
    this.#bufEnd = place?.bufEnd ?? REGION_SIZE;
    if (place !== undefined) return; // the device under test reads this ring
    this.mem.add({ guestAddr: GPA, userAddr: UVA, bytes: this.bytes });
    this.queue.eventIdx = eventIdx;
    if (!this.queue.map(size, UVA + DESC_OFF, UVA + AVAIL_OFF, UVA + USED_OFF)) {
      throw new Error("ring not mapped");
    }
  }

  /** Writes descriptor `i` of the table at region offset `tableOff`. */
  desc(
    i: number,
    addr: number,
    len: number,
    flags: number,
    next = 0,
    tableOff = this.descOff,
  ): void {
    const at = tableOff + 16 * i;
    this.view.setBigUint64(at, BigInt(addr), true);
    this.view.setUint32(at + 8, len, true);
    this.view.setUint16(at + 12, flags, true);
    this.view.setUint16(at + 14, next, true);
  }

  /** Chains `bufs` through descriptors `first..`, returns the head. */
  chain(first: number, bufs: Buf[]): number {
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      const flags = (last ? 0 : VIRTQ_DESC_F_NEXT) | (b.write ? VIRTQ_DESC_F_WRITE : 0);
      this.desc(first + k, b.addr, b.len, flags, first + k + 1);
    });
    return first;
  }

  /** Offers the chain at `head` in the available ring. */
  offer(head: number): void {
    this.view.setUint16(this.availOff + 4 + 2 * (this.availIdx % this.size), head, true);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.view.setUint16(this.availOff + 2, this.availIdx, true);
  }

  /** The used index and entry `k` of the used ring. */
  get usedIdx(): number {
    return this.view.getUint16(this.usedOff + 2, true);
  }
  used(k: number): [number, number] {
    const at = this.usedOff + 4 + 8 * (k % this.size);
    return [this.view.getUint32(at, true), this.view.getUint32(at + 4, true)];
  }

  /** A fresh buffer of `len` bytes in the region: its guest address. */
  alloc(len: number): number {
    const addr = GPA + this.#nextBuf;
    this.#nextBuf += (len + 63) & ~63;
    if (this.#nextBuf > this.#bufEnd) throw new Error("region full");
    return addr;
  }

  /** Offers one chain of fresh device-writable buffers of these lengths; returns its head. */
  offerWritable(lens: number[]): number {
    // Wraps to the table's start: tests offer again only what was used.
    const first = this.#nextDesc + lens.length > this.size ? 0 : this.#nextDesc;
    this.#nextDesc = (first + lens.length) % this.size;
    const head = this.chain(
      first,
      lens.map((len) => ({ addr: this.alloc(len), len, write: true })),
    );
    this.offer(head);
    return head;
  }

  /** The bytes a used chain got: its buffers' contents, `written` bytes in all. */
  readChain(head: number, written: number): Uint8Array {
    const out = new Uint8Array(written);
    let got = 0;
    for (let i = head; got < written;) {
      const at = this.descOff + 16 * i;
      const addr = Number(this.view.getBigUint64(at, true)) - GPA;
      const n = Math.min(this.view.getUint32(at + 8, true), written - got);
      out.set(this.bytes.subarray(addr, addr + n), got);
      got += n;
      i = this.view.getUint16(at + 14, true);
    }
    return out;
  }
}

/** A connected pair: [front-end's end, back-end's end], both non-blocking. */
export function socketPair(): [number, number] {
  const fds = new Int32Array(2);
  sys.sysCheck(
    sys.socketpair(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, 0, fds),
    "socketpair",
  );
  return [fds[0], fds[1]];
}

/** Sends `m` on `fd` with `fds` attached, whole. */
export function sendMsg(fd: number, m: Uint8Array, fds: number[] = []): void {
  equal(sys.sendWithFds(fd, m, 0, m.length, 0, fds), m.length);
}

/**
 * QEMU's start of a virtio-net device as messages, each with the descriptors
 * that go with it (new ones: the caller closes its copies once sent).
 */
export function qemuStartMessages(): [Uint8Array, number[]][] {
  const sent: [Uint8Array, number[]][] = [
    [msg(Req.GET_FEATURES), []],
    [msg(Req.SET_FEATURES, [(1n << 32n) | (1n << 30n) | (1n << 29n)]), []],
    [msg(Req.GET_PROTOCOL_FEATURES), []],
    [msg(Req.SET_PROTOCOL_FEATURES, [1n << 3n]), []],
    [msg(Req.SET_OWNER), []],
    [msg(Req.SET_MEM_TABLE, [1, 0, 0n, BigInt(GUEST_MEM_SIZE), BigInt(UVA), 0n]), [memfd()]],
  ];
  for (let i = 0; i < 2; i++) {
    const base = BigInt(UVA) + BigInt(i * 0x10000);
    sent.push(
      [msg(Req.SET_VRING_NUM, [i, 256]), []],
      [msg(Req.SET_VRING_BASE, [i, 0]), []],
      [msg(Req.SET_VRING_ADDR, [i, 0, base, base + 0x2000n, base + 0x1000n, 0n]), []],
      [msg(Req.SET_VRING_KICK, [BigInt(i)]), [eventfd()]],
      [msg(Req.SET_VRING_CALL, [BigInt(i)]), [eventfd()]],
      [msg(Req.SET_VRING_ENABLE, [i, 1]), []],
    );
  }
  return sent;
}

/** Sends {@linkcode qemuStartMessages} on `fe` as one burst; returns how many. */
export function qemuStart(fe: number): number {
  const sent = qemuStartMessages();
  for (const [m, fds] of sent) {
    sendMsg(fe, m, fds);
    for (const fd of fds) sys.close(fd); // the back-end has its own copies now
  }
  return sent.length;
}
