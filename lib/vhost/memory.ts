/**
 * The guest's memory as a vhost-user back-end sees it: the regions the
 * front-end handed over with `SET_MEM_TABLE`, each mapped into tapir, and
 * the one place that turns a guest address into bytes.
 *
 * # Theory of operation
 *
 * A region is known by three addresses: where it sits in the guest's
 * physical memory (descriptors carry these), where it sits in the
 * front-end's own address space (ring addresses in `SET_VRING_ADDR` carry
 * these), and its bytes in tapir (a view over the `mmap` of the region's
 * fd). {@linkcode GuestMemory.find} looks an address up and answers with
 * the region and the offset in it, or -1.
 *
 * **Nothing is read before it is checked.** An address range is accepted
 * only if it lies whole inside one region: a guest (or a front-end) that
 * points a descriptor past the end of its memory, or across two regions,
 * gets the descriptor dropped, never a read outside the mapping. Ranges
 * that span two adjacent regions are rare enough (Linux never builds them
 * for network buffers) that refusing them costs nothing and keeps every
 * buffer one contiguous view.
 *
 * @module
 */

/** Most regions a front-end may hand over (QEMU's `VHOST_MEMORY_BASELINE_NREGIONS`). */
export const VHOST_MAX_REGIONS = 8;

/** One region of guest memory, mapped. */
export interface GuestRegion {
  /** Guest-physical address of the first byte. */
  readonly guestAddr: number;
  /** The front-end's virtual address of the first byte. */
  readonly userAddr: number;
  /** The region's bytes in tapir. */
  readonly bytes: Uint8Array;
}

/** Which address space an address is in. */
export const AddrSpace = {
  /** Guest-physical: descriptor addresses. */
  GUEST: 0,
  /** The front-end's virtual addresses: ring addresses from `SET_VRING_ADDR`. */
  USER: 1,
} as const;

/** The mapped regions; see the module comment. */
export class GuestMemory {
  readonly #regions: GuestRegion[] = [];
  readonly #views: DataView[] = [];
  /** Set by a successful {@linkcode find}: the region found. */
  region: Uint8Array = new Uint8Array(0);
  /** Set with {@linkcode region}: a view over all of it, made once per region. */
  regionView: DataView = new DataView(new ArrayBuffer(0));

  /** The regions, in the order they were added. */
  get regions(): readonly GuestRegion[] {
    return this.#regions;
  }

  /**
   * Adds a region; throws if there are already {@linkcode VHOST_MAX_REGIONS}
   * or it overlaps one already there, in either address space.
   */
  add(region: GuestRegion): void {
    if (this.#regions.length >= VHOST_MAX_REGIONS) {
      throw new RangeError(`more than ${VHOST_MAX_REGIONS} memory regions`);
    }
    const size = region.bytes.length;
    for (const r of this.#regions) {
      const len = r.bytes.length;
      if (
        overlaps(region.guestAddr, size, r.guestAddr, len) ||
        overlaps(region.userAddr, size, r.userAddr, len)
      ) {
        throw new RangeError("memory regions overlap");
      }
    }
    this.#regions.push(region);
    const b = region.bytes;
    this.#views.push(new DataView(b.buffer, b.byteOffset, b.length));
  }

  /** Forgets every region (a new `SET_MEM_TABLE`, or the front-end left). */
  clear(): void {
    this.#regions.length = 0;
    this.#views.length = 0;
    this.region = new Uint8Array(0);
    this.regionView = new DataView(new ArrayBuffer(0));
  }

  /**
   * Finds `len` bytes at `addr` in address space `space`: returns their
   * offset in {@linkcode region} (set as a side effect, so the hot path
   * allocates nothing), or -1 if they are not wholly inside one region.
   */
  find(addr: number, len: number, space: number = AddrSpace.GUEST): number {
    if (!(addr >= 0 && len >= 0 && Number.isSafeInteger(addr + len))) return -1;
    const regions = this.#regions;
    for (let i = 0; i < regions.length; i++) {
      const r = regions[i];
      const off = addr - (space === AddrSpace.GUEST ? r.guestAddr : r.userAddr);
      if (off >= 0 && off + len <= r.bytes.length) {
        this.region = r.bytes;
        this.regionView = this.#views[i];
        return off;
      }
    }
    return -1;
  }
}

function overlaps(a: number, aLen: number, b: number, bLen: number): boolean {
  return a < b + bLen && b < a + aLen;
}

/**
 * A little-endian u64 at `v[at..]` as a number. Past 2^53 it is -1: no
 * address tapir maps is that high, so such an address fails every lookup.
 */
export function readU64(v: DataView, at: number): number {
  const hi = v.getUint32(at + 4, true);
  if (hi >= 0x200000) return -1;
  return hi * 0x1_0000_0000 + v.getUint32(at, true);
}
