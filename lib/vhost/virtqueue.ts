/**
 * A split virtqueue (virtio 1.x, §2.7) seen from the device side: take the
 * descriptor chains the guest made available, give them back as used.
 *
 * # Theory of operation
 *
 * The three parts of a ring live in guest memory: the descriptor table
 * (16 bytes per entry: address, length, flags, next), the available ring
 * (the guest's producer index and the heads of the chains it offers) and
 * the used ring (our producer index and, per chain given back, its head
 * and the bytes we wrote). Their addresses arrive with `SET_VRING_ADDR` in
 * the front-end's address space; each part is looked up once, whole, in
 * {@linkcode GuestMemory}, and read through a `DataView` from then on.
 *
 * **Popping a chain** ({@linkcode SplitQueue.pop}) walks it from its head,
 * following NEXT and at most one level of INDIRECT tables, and lists its
 * buffers in a {@linkcode DescChain}: for each, the mapped region, the
 * offset and the length, readable ones first (the device-readable part,
 * a frame from the guest) then writable ones (room for a frame to the
 * guest). Every buffer is bounds-checked against the regions before it is
 * listed. A chain that breaks a rule — an index past the table, a loop
 * (more links than the table has entries), a nested or misaligned indirect
 * table, a readable buffer after a writable one, a buffer outside guest
 * memory — is **not read**: it goes straight back to the guest as used with
 * length 0 (so the guest does not leak the buffer) and is counted.
 *
 * **Giving chains back** is batched: {@linkcode SplitQueue.push} writes a
 * used entry, {@linkcode SplitQueue.publish} stores the used index once for
 * all of them and says whether the guest wants an interrupt — with
 * `VIRTIO_RING_F_EVENT_IDX`, only if the new index passed the `used_event`
 * the guest wrote (the spec's `vring_need_event`); without it, unless the
 * guest set `VIRTQ_AVAIL_F_NO_INTERRUPT`.
 *
 * **Ordering.** The guest writes a chain's descriptors, then the ring entry,
 * then the available index; we read in the opposite order, and x86 keeps
 * loads in order. We write used entries before the used index; stores stay
 * in order too. What x86 does reorder is a store followed by a load, and
 * two places depend on that order: publishing the used index then reading
 * the guest's `used_event` (else we may miss an interrupt the guest asked
 * for), and writing `avail_event` then reading the available index again
 * (else a chain offered just then waits for a kick that never comes). Both
 * stores are `Atomics.store`s, which V8 emits as a locked exchange — a full
 * fence, the `mb()` the kernel's virtio code puts in the same places. Rings
 * must be aligned as the spec says (used ring to 4 bytes) for that view.
 *
 * @module
 */

import { AddrSpace, type GuestMemory, readU64 } from "./memory.ts";

/** Descriptor flag: the chain continues at `next`. */
export const VIRTQ_DESC_F_NEXT = 1;
/** Descriptor flag: the device writes this buffer. */
export const VIRTQ_DESC_F_WRITE = 2;
/** Descriptor flag: the buffer is a table of descriptors. */
export const VIRTQ_DESC_F_INDIRECT = 4;
/** Available ring flag: the guest wants no interrupt (without EVENT_IDX). */
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
/** Used ring flag: we want no kick (without EVENT_IDX). */
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Largest ring the spec allows. */
export const VIRTQ_MAX_SIZE = 32768;
/** Most buffers one chain may list. */
export const DESC_CHAIN_MAX = 64;

const DESC_SIZE = 16;

/** The buffers of one chain, readable ones first; see the module comment. */
export class DescChain {
  /** Head index, for giving the chain back. */
  head = -1;
  /** Buffers listed. */
  count = 0;
  /** Of those, the readable ones (they come first). */
  readable = 0;
  /** Bytes in readable buffers, and in writable ones. */
  readLen = 0;
  writeLen = 0;
  /** Per buffer: the region it is in, its offset there, its length. */
  readonly bufs: Uint8Array[] = new Array(DESC_CHAIN_MAX).fill(new Uint8Array(0));
  readonly offs: Float64Array = new Float64Array(DESC_CHAIN_MAX);
  readonly lens: Uint32Array = new Uint32Array(DESC_CHAIN_MAX);

  /** Empties the list. */
  reset(): void {
    this.head = -1;
    this.count = 0;
    this.readable = 0;
    this.readLen = 0;
    this.writeLen = 0;
  }
}

/** Counters of one queue. */
export interface VirtqueueStats {
  /** Chains taken. */
  chains: number;
  /** Chains that broke a rule, given back unread. */
  badChains: number;
  /** Interrupts asked for by {@linkcode SplitQueue.publish}. */
  notifies: number;
  /** Times the available index claimed more chains than the ring holds. */
  badIndex: number;
}

/** Why {@linkcode SplitQueue.pop} refused a chain (for the log). */
export type ChainError =
  | "index"
  | "loop"
  | "indirect"
  | "order"
  | "range"
  | "too long";

/** A split virtqueue over guest memory; see the module comment. */
export class SplitQueue {
  /** Counters. */
  readonly stats: VirtqueueStats = { chains: 0, badChains: 0, notifies: 0, badIndex: 0 };
  /** Entries in the ring (0 until set). */
  size = 0;
  /** Next available-ring position to read (`SET_VRING_BASE`, `GET_VRING_BASE`). */
  lastAvail = 0;
  /** Next used-ring position to write. */
  usedIdx = 0;
  /** VIRTIO_RING_F_EVENT_IDX was negotiated. */
  eventIdx = false;
  /** Why the last chain was refused. */
  lastError: ChainError | null = null;

  readonly #mem: GuestMemory;
  #desc: DataView | null = null;
  #avail: DataView | null = null;
  #used: DataView | null = null;
  /** The used ring as 16-bit words, for the fenced stores (see the module comment). */
  #usedWords: Uint16Array | null = null;
  /** Used index last published, for the event-index test. */
  #publishedUsed = 0;

  constructor(mem: GuestMemory) {
    this.#mem = mem;
  }

  /** True once the ring has a size and all three parts are mapped. */
  get ready(): boolean {
    return this.#desc !== null;
  }

  /**
   * Sets the ring's size and maps its parts from front-end addresses
   * (`SET_VRING_NUM`, then `SET_VRING_ADDR`). Returns false, leaving the
   * ring unmapped, for a size that is not a power of two up to
   * {@linkcode VIRTQ_MAX_SIZE} or a part not wholly inside guest memory.
   */
  map(size: number, desc: number, avail: number, used: number): boolean {
    this.unmap();
    if (!(size > 0 && size <= VIRTQ_MAX_SIZE && (size & (size - 1)) === 0)) return false;
    // Alignment as virtio 1.2 §2.7 requires (descriptors 16, available 2, used 4).
    if (desc % 16 !== 0 || avail % 2 !== 0 || used % 4 !== 0) return false;
    const d = this.#view(desc, size * DESC_SIZE);
    const a = this.#view(avail, 6 + 2 * size);
    const u = this.#view(used, 6 + 8 * size);
    if (d === null || a === null || u === null || u.byteOffset % 2 !== 0) return false;
    this.size = size;
    this.#desc = d;
    this.#avail = a;
    this.#used = u;
    this.#usedWords = new Uint16Array(u.buffer, u.byteOffset, (6 + 8 * size) / 2);
    // Carry on from where the used ring is (a reconnecting back-end finds
    // the previous one's work there); the available side starts at the base.
    this.usedIdx = this.#publishedUsed = u.getUint16(2, true);
    return true;
  }

  /** Forgets the ring's mapping (its memory is about to go). */
  unmap(): void {
    this.#desc = this.#avail = this.#used = null;
    this.#usedWords = null;
    this.size = 0;
  }

  #view(addr: number, len: number): DataView | null {
    const mem = this.#mem;
    const off = mem.find(addr, len, AddrSpace.USER);
    if (off < 0) return null;
    const r = mem.region;
    return new DataView(r.buffer, r.byteOffset + off, len);
  }

  /**
   * Chains the guest has made available and we have not taken. More than
   * the ring holds is a broken available index: counted, and taken as none
   * (reading on would take stale entries as chains).
   */
  available(): number {
    const a = this.#avail;
    if (a === null) return 0;
    const n = (a.getUint16(2, true) - this.lastAvail) & 0xffff;
    if (n > this.size) {
      this.stats.badIndex++;
      return 0;
    }
    return n;
  }

  /**
   * Takes the next available chain into `chain`. Returns true with the
   * chain listed, or false if none is available or the one taken was
   * refused (then {@linkcode lastError} says why, it was given back as used
   * with length 0, and `chain.head` is -1). Call {@linkcode publish} after
   * a batch either way.
   */
  pop(chain: DescChain): boolean {
    chain.reset();
    this.lastError = null;
    const a = this.#avail;
    if (a === null || this.available() === 0) return false;
    const head = a.getUint16(4 + 2 * (this.lastAvail & (this.size - 1)), true);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    this.stats.chains++;
    const err = this.#walk(head, chain);
    if (err !== null) {
      this.lastError = err;
      this.stats.badChains++;
      chain.reset();
      this.push(head, 0);
      return false;
    }
    chain.head = head;
    return true;
  }

  /** Lists the buffers of the chain at `head`, or says which rule it broke. */
  #walk(head: number, chain: DescChain): ChainError | null {
    if (head >= this.size) return "index";
    // The table is read through its region's view from `base`: following an
    // indirect table moves both, and allocates nothing.
    let table = this.#desc!;
    let base = 0;
    let tableSize = this.size;
    let i = head;
    let indirect = false;
    for (let links = 0;; links++) {
      if (links >= tableSize) return "loop";
      const at = base + i * DESC_SIZE;
      const addr = readU64(table, at);
      const len = table.getUint32(at + 8, true);
      const flags = table.getUint16(at + 12, true);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        // One level only, as the whole chain (virtio 1.2 §2.7.5.3.1).
        if (indirect || flags & VIRTQ_DESC_F_NEXT) return "indirect";
        if (len === 0 || len % DESC_SIZE !== 0) return "indirect";
        const off = this.#mem.find(addr, len);
        if (off < 0) return "range";
        table = this.#mem.regionView;
        base = off;
        tableSize = len / DESC_SIZE;
        indirect = true;
        i = 0;
        links = -1;
        continue;
      }
      const writable = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (!writable && chain.count > chain.readable) return "order";
      if (chain.count === DESC_CHAIN_MAX) return "too long";
      const off = this.#mem.find(addr, len);
      if (off < 0) return "range";
      const n = chain.count++;
      chain.bufs[n] = this.#mem.region;
      chain.offs[n] = off;
      chain.lens[n] = len;
      if (writable) {
        chain.writeLen += len;
      } else {
        chain.readable++;
        chain.readLen += len;
      }
      if (!(flags & VIRTQ_DESC_F_NEXT)) return null;
      i = table.getUint16(at + 14, true);
      if (i >= tableSize) return "index";
    }
  }

  /** Gives the chain at `head` back to the guest with `written` bytes in it. */
  push(head: number, written: number): void {
    const u = this.#used!;
    const at = 4 + 8 * (this.usedIdx & (this.size - 1));
    u.setUint32(at, head, true);
    u.setUint32(at + 4, written, true);
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
  }

  /**
   * Makes the chains pushed since the last call visible to the guest (one
   * store of the used index) and returns true if the guest asked for an
   * interrupt for them; see the module comment.
   */
  publish(): boolean {
    const u = this.#used;
    const a = this.#avail;
    if (u === null || a === null) return false;
    const old = this.#publishedUsed;
    const now = this.usedIdx;
    if (old === now) return false;
    Atomics.store(this.#usedWords!, 1, now); // fenced: `used_event` is read next
    this.#publishedUsed = now;
    let notify: boolean;
    if (this.eventIdx) {
      const usedEvent = a.getUint16(4 + 2 * this.size, true);
      // vring_need_event: did the index step over usedEvent?
      notify = ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    } else {
      notify = (a.getUint16(0, true) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    if (notify) this.stats.notifies++;
    return notify;
  }

  /**
   * Asks the guest for a kick when it makes more chains available: with
   * EVENT_IDX by writing `avail_event` (the next index we will read),
   * otherwise by clearing NO_NOTIFY. Call before waiting on the kick fd,
   * then check {@linkcode available} once more: a chain made available
   * just before may have come without a kick.
   */
  wantKick(): void {
    const w = this.#usedWords;
    if (w === null) return;
    // Fenced: the caller reads the available index next.
    if (this.eventIdx) Atomics.store(w, (4 + 8 * this.size) / 2, this.lastAvail);
    else Atomics.store(w, 0, 0);
  }

  /** Restarts reading the available ring at `base` (`SET_VRING_BASE`). */
  setBase(base: number): void {
    this.lastAvail = base & 0xffff;
  }
}
