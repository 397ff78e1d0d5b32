/**
 * Memory for arrays indexed by flow slot: reserved for a table's whole
 * capacity once, resident only where written, given back on request.
 *
 * # Theory of operation
 *
 * The flow table and the per-flow columns of the protocols keep their
 * fields in typed arrays indexed by flow. Grown by copying (a new array
 * twice the size, the old one left to the garbage collector), they cost
 * three times the live size at the moment of a doubling, and the old copy
 * stays resident until V8 collects its `ArrayBuffer`, which with a busy
 * heap can be many seconds later. Measured with the 19 500-flow benchmark
 * scenario, the doubling from 16 384 slots left 4.4 MiB of old arrays
 * behind; at 100 000 flows, the doubling from 65 536 would hold 18 MiB of old
 * arrays beside 36 MiB of new ones, most of the new ones unused.
 *
 * Instead, each owner maps its arrays once, for the capacity, as one
 * anonymous private mapping with `MAP_NORESERVE`: that reserves address
 * space only. The kernel gives a page memory the first time it is written,
 * and flows take the lowest free slot, so what is resident is the pages
 * below the highest slot ever used: memory follows use at page granularity,
 * with no copy and no slack. Views are made once and never replaced.
 * {@linkcode SlotMemory.release} gives the pages above a slot back at once
 * (`madvise(MADV_DONTNEED)`) when the flows there are gone; they read as
 * zeros afterwards, and a free slot's fields are all zero or rewritten
 * when it is allocated.
 *
 * Each array starts at a multiple of {@linkcode SLOT_ALIGN} bytes, the
 * largest page size Linux builds use (aarch64 with 64 KiB pages): releases
 * are whole pages on every kernel, and a 64-byte record is one cache line.
 * The mapping is unmapped when its `ArrayBuffer` is collected, which cannot
 * happen while any view over it exists.
 *
 * @module
 */

import * as sys from "../sys/mod.ts";

/** Alignment of each array in the mapping, and the granularity of a release. */
export const SLOT_ALIGN = 65536;

/**
 * Unmaps a mapping once its buffer is collected. The held value is the
 * address and length only: one that referred to the buffer (a
 * {@linkcode sys.Mapping} does) would keep it alive, and the mapping, for good.
 */
const unmapWhenCollected = new FinalizationRegistry<readonly [number, number]>(
  ([addr, len]) => sys.munmapAt(addr, len),
);

const alignUp = (n: number) => Math.ceil(n / SLOT_ALIGN) * SLOT_ALIGN;

/** Typed-array constructors a {@linkcode SlotMemory} hands out views of. */
type SlotArrayCtor<T> = {
  new (buf: ArrayBuffer, off: number, len: number): T;
  BYTES_PER_ELEMENT: number;
};

/**
 * Arrays of `capacity` slots each, with the bytes per slot given for each
 * array, in one lazily committed mapping; see the module comment.
 */
export class SlotMemory {
  /** Slots every array holds. */
  readonly capacity: number;
  readonly #mapping: sys.Mapping;
  /** The mapping's bytes (`getArrayBuffer` makes a plain, never shared, buffer). */
  readonly #buffer: ArrayBuffer;
  readonly #offsets: number[] = [];
  readonly #bytesPerSlot: readonly number[];

  /**
   * Maps the arrays: throws, naming the size, if the address space cannot
   * be had (a `--max-flows` too large for the machine).
   */
  constructor(capacity: number, bytesPerSlot: readonly number[]) {
    this.capacity = capacity;
    this.#bytesPerSlot = bytesPerSlot;
    let total = 0;
    for (const b of bytesPerSlot) {
      this.#offsets.push(total);
      total += alignUp(capacity * b);
    }
    const m = sys.mmap(
      Math.max(total, SLOT_ALIGN),
      sys.PROT_READ | sys.PROT_WRITE,
      sys.MAP_PRIVATE | sys.MAP_ANONYMOUS | sys.MAP_NORESERVE,
      -1,
    );
    if (typeof m === "number") {
      throw new Error(`cannot reserve ${total} bytes for ${capacity} flows: ${sys.errnoName(-m)}`);
    }
    this.#mapping = m;
    this.#buffer = m.bytes.buffer as ArrayBuffer;
    unmapWhenCollected.register(m.bytes.buffer, [m.addr, m.bytes.byteLength]);
  }

  /** The view of array `part` (its index in the constructor's list), of `capacity` slots. */
  view<T>(ctor: SlotArrayCtor<T>, part: number): T {
    const bytes = this.capacity * this.#bytesPerSlot[part];
    if (bytes % ctor.BYTES_PER_ELEMENT !== 0) {
      throw new Error(`slot array ${part}: bad element size`);
    }
    return new ctor(
      this.#buffer,
      this.#offsets[part],
      bytes / ctor.BYTES_PER_ELEMENT,
    );
  }

  /**
   * Gives back every whole {@linkcode SLOT_ALIGN} block of every array that
   * holds only slots from `slot` up, which then read as zeros. Only for
   * slots that are free.
   */
  release(slot: number): void {
    for (let part = 0; part < this.#offsets.length; part++) {
      const per = this.#bytesPerSlot[part];
      const from = alignUp(slot * per);
      const end = alignUp(this.capacity * per);
      if (from >= end) continue;
      const rc = sys.madvise(
        this.#mapping,
        this.#offsets[part] + from,
        end - from,
        sys.MADV_DONTNEED,
      );
      // Only a bug can make it fail (an unaligned range): say so, as a resize would.
      if (rc < 0) throw new Error(`slot memory release: madvise: ${sys.errnoName(-rc)}`);
    }
  }
}
