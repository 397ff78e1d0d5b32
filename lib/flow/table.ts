/**
 * The flow table: every TCP connection, UDP flow and ping flow tapir tracks.
 *
 * # Theory of operation
 *
 * **What a flow is.** A flow joins two *sides*: side 0 is whoever initiated
 * it, side 1 the target. Each side has an interface (*pif*: the guest's tap,
 * the host's sockets, or the namespace's loopback for spliced TCP) and four
 * endpoint values as seen on that interface: the far end's address and port
 * (`e`) and our own address and port there (`o`). IPv4 addresses are kept as
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so one code path serves both families.
 *
 * **Storage.** Fields live in typed arrays indexed by flow number — no
 * object per flow — about 185 bytes a slot. The table's *capacity* (default
 * 131072, `--max-flows`) bounds the flows tracked at once. The arrays are
 * mapped once for the whole capacity but hold memory only where written
 * (`slots.ts`), and allocation keeps live flows packed at the low end, so
 * what is resident follows the highest slot in use, never moves and is
 * never copied. The table's *size* is the part of it in play: it starts
 * with {@linkcode FLOW_INITIAL_SLOTS}, doubles when every slot is taken,
 * and halves again once the upper half has emptied (checked in the timer
 * pass, with slack so a count near a boundary does not make it resize
 * back and forth). A resize re-enters the hashed sides into a bucket array
 * of the new size, O(slots), paid once per doubling, and a halving gives
 * the upper half's pages back. So an idle tapir holds a small table, and a
 * full one is a few tens of MiB that go back once the flows have closed.
 * Everything a hash lookup compares for one side (its hash, pif and
 * protocol, ports, both addresses) sits in one 64-byte record, a single
 * cache line, because with 100 000 flows every lookup's memory accesses
 * are cache misses and their number sets the cost.
 * Protocol-specific data (a TCP connection's sequence numbers, a socket fd)
 * hangs off {@linkcode FlowTable.data}, reachable only once the flow is TYPED.
 *
 * **Entries never move.** A flow's index is its identity for its whole life:
 * it is in epoll tags and hash buckets, so moving an entry would mean
 * rewriting both. Allocation takes the *first* free slot, which keeps live
 * flows packed at the low end. Free and used slots are tracked in a bitmap
 * with two summaries (one bit per 32-slot word: "word full", "word not
 * empty"), so a run of 32 free or used slots is skipped with one word test
 * and a run of 1024 with one summary bit. Finding the first free slot starts
 * from a hint below which every word is full; freeing a slot lowers the hint.
 * Unlike a list of free clusters rebuilt by a full scan, the bitmap stays
 * exact after a free anywhere, so frees need not wait for a table scan.
 *
 * **Life cycle.** A flow's state only changes through {@linkcode FlowTable}'s
 * transition methods, each of which checks that the move is legal (throwing
 * on a bug) and logs `OLD -> NEW` at debug level with the flow's prefix:
 *
 * - FREE: unused slot.
 * - NEW: allocated ({@linkcode FlowTable.alloc}); nothing known yet.
 * - INI: the initiating side (0) is recorded ({@linkcode FlowTable.setIni}).
 * - TGT: the target side (1) is recorded ({@linkcode FlowTable.setTgt}).
 * - TYPED: the protocol type is chosen and its data attached
 *   ({@linkcode FlowTable.setType}); sides may now be put in the hash table.
 * - ACTIVE: fully set up ({@linkcode FlowTable.activate}); the protocol's
 *   handlers run for it.
 *
 * A flow that never became ACTIVE is freed at once with
 * {@linkcode FlowTable.cancel}. An ACTIVE flow is freed only by the deferred
 * pass, when its protocol's handler returns true: protocols mark, the table
 * reaps. Set-up must reach ACTIVE or be cancelled within one handler, so the
 * timer pass finding a flow in between is a bug and is reported as such.
 *
 * **Hash.** Each side of a flow can be entered in one hash table, keyed by
 * (pif, protocol, e-address, e-port, o-address, o-port) under a random
 * per-run key (HalfSipHash), so a guest cannot choose colliding tuples. A
 * bucket holds a flow+side index (`sidx = index * 2 + side`), so a lookup
 * yields the flow and the direction at once. Open addressing with linear
 * probing, at most 50-70% full; removal shifts later entries back (no
 * tombstones), which keeps probe sequences short under churn.
 *
 * **Deferred pass and timers.** The reactor calls
 * {@linkcode FlowTable.deferredPass} once per loop turn. It runs the
 * protocol's `deferred` handler for each flow that asked with
 * {@linkcode FlowTable.defer} during the turn, and once a second the `timer`
 * handler of every ACTIVE flow; either returning true frees the flow. This is
 * the only scan of the table: no protocol walks it on its own.
 *
 * @module
 */

import { formatIp4, formatIp6 } from "../addr.ts";
import { log, logEnabled, LogLevel } from "../log.ts";
import { halfSipHash, type SipKey, sipKeyRandom } from "./siphash.ts";
import { SlotMemory } from "./slots.ts";

/** Life-cycle states; see the module comment for what each allows. */
export const FlowState = { FREE: 0, NEW: 1, INI: 2, TGT: 3, TYPED: 4, ACTIVE: 5 } as const;
/** One of the {@linkcode FlowState} values. */
export type FlowState = (typeof FlowState)[keyof typeof FlowState];
/** State names for logs, indexed by state. */
export const FLOW_STATE_NAMES: Record<FlowState, string> = {
  0: "FREE",
  1: "NEW",
  2: "INI",
  3: "TGT",
  4: "TYPED",
  5: "ACTIVE",
};
const STATE_COUNT = 6;

/** The interface a side of a flow is on. */
export const Pif = { NONE: 0, TAP: 1, HOST: 2, SPLICE: 3 } as const;
/** One of the {@linkcode Pif} values. */
export type Pif = (typeof Pif)[keyof typeof Pif];
/** Interface names for logs. */
export const PIF_NAMES: Record<Pif, string> = { 0: "NONE", 1: "TAP", 2: "HOST", 3: "SPLICE" };

/** Kinds of flow. The type fixes the IP protocol ({@linkcode FLOW_TYPE_PROTO}). */
export const FlowType = {
  NONE: 0,
  TCP: 1,
  TCP_SPLICE: 2,
  PING4: 3,
  PING6: 4,
  UDP: 5,
  UDP_SPLICE: 6,
} as const;
/** One of the {@linkcode FlowType} values. */
export type FlowType = (typeof FlowType)[keyof typeof FlowType];
/** Type names for logs and counters. */
export const FLOW_TYPE_NAMES: Record<FlowType, string> = {
  0: "NONE",
  1: "TCP",
  2: "TCP_SPLICE",
  3: "PING4",
  4: "PING6",
  5: "UDP",
  6: "UDP_SPLICE",
};
/** IP protocol number of each flow type (0 for NONE), indexed by type. */
export const FLOW_TYPE_PROTO: Readonly<Uint8Array> = new Uint8Array([0, 6, 6, 1, 58, 17, 17]);
const TYPE_COUNT = 7;

/** Default capacity: flows tracked at once. */
export const FLOW_DEFAULT_CAPACITY = 131072;
/** Largest capacity a table accepts. */
export const FLOW_MAX_CAPACITY = 1 << 24;
/** Slots a table starts with (or its capacity, if smaller); see the module comment. */
export const FLOW_INITIAL_SLOTS = 1024;
/** Interval of the per-flow timer handlers. */
export const FLOW_TIMER_INTERVAL_MS = 1000;

/** Legal transitions as bit masks of target states, indexed by the current state. */
const LEGAL: readonly number[] = [
  1 << FlowState.NEW, // FREE → NEW (alloc)
  (1 << FlowState.INI) | (1 << FlowState.FREE), // NEW → INI, or cancel
  (1 << FlowState.TGT) | (1 << FlowState.FREE), // INI → TGT, or cancel
  (1 << FlowState.TYPED) | (1 << FlowState.FREE), // TGT → TYPED, or cancel
  (1 << FlowState.ACTIVE) | (1 << FlowState.FREE), // TYPED → ACTIVE, or cancel
  1 << FlowState.FREE, // ACTIVE → FREE (deferred pass only)
];

/** The side index (0 initiating, 1 target) packed with a flow index: `index * 2 + side`. */
export function flowSidx(index: number, side: 0 | 1): number {
  return index * 2 + side;
}
/** The flow index of a sidx. */
export function sidxFlow(sidx: number): number {
  return sidx >>> 1;
}
/** The side of a sidx. */
export function sidxSide(sidx: number): 0 | 1 {
  return (sidx & 1) as 0 | 1;
}

/**
 * One side's endpoints: a reusable scratch object. Callers fill it from a
 * packet (no allocation) to record a side or to look one up.
 */
export class FlowSide {
  /** The interface. */
  pif: Pif = Pif.NONE;
  /** Far end's address, as four big-endian words of the IPv6 (or mapped IPv4) address. */
  readonly eaddr: Uint32Array = new Uint32Array(4);
  /** Far end's port (or ICMP echo id). */
  eport = 0;
  /** Our address on this interface, same form as {@linkcode eaddr}. */
  readonly oaddr: Uint32Array = new Uint32Array(4);
  /** Our port on this interface. */
  oport = 0;

  /**
   * Sets everything; IPv4 addresses as 32-bit numbers, unsigned or signed
   * (`Ip4Packet.srcBits`): the words keep the bits. Returns this.
   */
  set4(pif: Pif, eaddr: number, eport: number, oaddr: number, oport: number): this {
    this.pif = pif;
    addrWords4(this.eaddr, eaddr);
    this.eport = eport;
    addrWords4(this.oaddr, oaddr);
    this.oport = oport;
    return this;
  }

  /** Sets everything; IPv6 addresses as 16 bytes at offsets of buffers. Returns this. */
  set6(
    pif: Pif,
    ebuf: Uint8Array,
    eoff: number,
    eport: number,
    obuf: Uint8Array,
    ooff: number,
    oport: number,
  ): this {
    this.pif = pif;
    addrWords6(this.eaddr, ebuf, eoff);
    this.eport = eport;
    addrWords6(this.oaddr, obuf, ooff);
    this.oport = oport;
    return this;
  }
}

/** Writes IPv4 `addr` (u32) as the words of `::ffff:addr`. */
export function addrWords4(words: Uint32Array, addr: number): void {
  words[0] = 0;
  words[1] = 0;
  words[2] = 0xffff;
  words[3] = addr;
}

/** Writes the 16 bytes at `buf[off..]` as four big-endian words. */
export function addrWords6(words: Uint32Array, buf: Uint8Array, off: number): void {
  for (let i = 0; i < 4; i++) {
    const o = off + i * 4;
    words[i] = (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
  }
}

/** True if the words hold an IPv4-mapped address. */
export function addrWordsIs4(words: ArrayLike<number>, at = 0): boolean {
  return words[at] === 0 && words[at + 1] === 0 && words[at + 2] === 0xffff;
}

/** Writes four address words from `words[at..]` as 16 bytes at `out[off..]`. */
export function wordsToBytes(
  words: ArrayLike<number>,
  at: number,
  out: Uint8Array,
  off: number,
): void {
  for (let i = 0; i < 16; i++) out[off + i] = words[at + (i >> 2)] >>> (24 - 8 * (i & 3));
}

/** Formats address words as text (for logs). */
export function addrWordsFormat(words: ArrayLike<number>, at = 0): string {
  const b = new Uint8Array(16);
  wordsToBytes(words, at, b, 0);
  return addrWordsIs4(words, at) ? formatIp4(b, 12) : formatIp6(b, 0);
}

/** What a protocol provides for its flows; handlers return true to free the flow. */
export interface FlowTypeHandlers {
  /** Runs at the end of a turn for flows that called {@linkcode FlowTable.defer}. */
  deferred?(index: number): boolean;
  /** Runs once a second for every ACTIVE flow of the type. */
  timer?(index: number, nowMs: number): boolean;
  /**
   * The guest went away (a VM's socket closed): end the flow's host side
   * now. Types whose flows do not involve the guest (splices) have none.
   */
  guestGone?(index: number): boolean;
}

/** Counters of the table, for logs and tests. */
export interface FlowStats {
  /** Flows in each state (FREE excluded), by name. */
  readonly byState: Record<string, number>;
  /** Flows of each type (typed flows only), by name. */
  readonly byType: Record<string, number>;
  /** Allocations refused because the table was full. */
  readonly allocFailures: number;
  /** Flows not FREE. */
  readonly live: number;
}

/** Options of a {@linkcode FlowTable}. */
export interface FlowTableOptions {
  /** The hash key (tests pin it; default: random per table). */
  readonly hashKey?: SipKey;
}

const HASH_EMPTY = -1;

// One side's record: 16 words, 64 bytes. Words META..OADDR+3 are also the
// hash input, in this order.
const SIDE_WORDS = 16;
const S_HASH = 0; // hash of the side, valid while hashed
const S_META = 1; // pif | protocol << 8
const S_PORTS = 2; // eport << 16 | oport
const S_EADDR = 3; // 4 words
const S_OADDR = 7; // 4 words
const S_KEY_WORDS = 10; // META through the last OADDR word

function ctz32(x: number): number {
  return 31 - Math.clz32(x & -x);
}

/** The flow table; see the module comment. */
export class FlowTable {
  /** Most flows tracked at once. */
  readonly capacity: number;
  /** Allocations refused because the table was full. */
  allocFailures = 0;
  /**
   * Payload bytes each side of each flow sent that tapir passed on, at the
   * side's sidx: `bytesFrom[flowSidx(i, 0)]` went from the initiator to the
   * target. The protocols add to it where they count their own byte
   * counters; it is zeroed when the slot is allocated.
   */
  readonly bytesFrom: Float64Array;
  readonly #bornMs: Float64Array;

  /** Where the per-slot arrays live (see `slots.ts`): made once, for the capacity. */
  readonly #mem: SlotMemory;
  readonly #state: Uint8Array;
  readonly #type: Uint8Array;
  readonly #side: Uint32Array; // SIDE_WORDS per side
  readonly #hashed: Uint8Array; // bit per side
  readonly #pendingFlag: Uint8Array;
  readonly #pending: Int32Array;
  readonly #data: unknown[] = [];
  /** Slots in play (≤ capacity): the bitmap and buckets follow it; see the module comment. */
  #size = 0;

  // Slot bitmap: bit set = slot not FREE; summaries by 32-slot word.
  #used: Uint32Array;
  #fullWords: Uint32Array;
  #nonEmptyWords: Uint32Array;
  #freeHint = 0; // every summary word below it is all-full

  #buckets: Int32Array;
  #mask: number;
  readonly #key: SipKey;
  readonly #keyWords = new Uint32Array(S_KEY_WORDS); // lookup scratch

  readonly #handlers: FlowTypeHandlers[] = [];
  #pendingCount = 0;
  #nextTimerMs = 0;

  readonly #byState = new Uint32Array(STATE_COUNT);
  readonly #byType = new Uint32Array(TYPE_COUNT);
  readonly #resizeListeners: ((size: number) => void)[] = [];

  /** Creates an empty table for `capacity` flows. */
  constructor(capacity: number = FLOW_DEFAULT_CAPACITY, opts: FlowTableOptions = {}) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > FLOW_MAX_CAPACITY) {
      throw new RangeError(`flow table capacity ${capacity} out of range 1-${FLOW_MAX_CAPACITY}`);
    }
    this.capacity = capacity;
    this.#key = opts.hashKey ?? sipKeyRandom();
    this.#byState[FlowState.FREE] = capacity;
    // state, type, side records, hashed, bytesFrom, bornMs, pendingFlag, pending.
    const mem = new SlotMemory(capacity, [1, 1, 2 * SIDE_WORDS * 4, 1, 16, 8, 1, 4]);
    this.#mem = mem;
    this.#state = mem.view(Uint8Array, 0);
    this.#type = mem.view(Uint8Array, 1);
    this.#side = mem.view(Uint32Array, 2);
    this.#hashed = mem.view(Uint8Array, 3);
    this.bytesFrom = mem.view(Float64Array, 4);
    this.#bornMs = mem.view(Float64Array, 5);
    this.#pendingFlag = mem.view(Uint8Array, 6);
    this.#pending = mem.view(Int32Array, 7);
    this.#used = this.#fullWords = this.#nonEmptyWords = new Uint32Array(0);
    this.#buckets = new Int32Array(0);
    this.#mask = 0;
    this.#resize(Math.min(capacity, FLOW_INITIAL_SLOTS));
  }

  /** Slots the table holds now: grows with the flows in use, up to {@linkcode capacity}. */
  get size(): number {
    return this.#size;
  }

  /**
   * Calls `fn` with the slot count now and after every resize, so arrays a
   * protocol keeps per flow index grow and shrink with the table: every
   * flow's index is below {@linkcode size}.
   */
  onResize(fn: (size: number) => void): void {
    this.#resizeListeners.push(fn);
    fn(this.#size);
  }

  /**
   * Makes the table hold `size` slots, keeping every flow: all slots from
   * `size` up must be FREE when shrinking, and their pages of the slot
   * arrays go back to the kernel. The hash is rebuilt for the new bucket
   * count from the hashes the side records keep.
   */
  #resize(size: number): void {
    const keep = Math.min(this.#size, size);
    if (size < this.#size) this.#mem.release(size);
    this.#data.length = keep;
    for (let i = keep; i < size; i++) this.#data.push(undefined);
    this.#size = size;

    // The bitmap and its summaries, recomputed from the kept words.
    const words = Math.ceil(size / 32);
    const used = new Uint32Array(words);
    used.set(this.#used.subarray(0, Math.min(words, this.#used.length)));
    this.#used = used;
    this.#fullWords = new Uint32Array(Math.ceil(words / 32));
    this.#nonEmptyWords = new Uint32Array(Math.ceil(words / 32));
    for (let w = 0; w < words; w++) {
      const bit = 1 << (w & 31);
      if (used[w] !== 0) this.#nonEmptyWords[w >>> 5] |= bit;
      if (used[w] === 0xffffffff) this.#fullWords[w >>> 5] |= bit;
    }
    this.#freeHint = 0;

    // Buckets: a power of two, at least 1/0.7 of the sides the slots can hash.
    let buckets = 16;
    while (buckets * 0.7 < size * 2) buckets *= 2;
    this.#buckets = new Int32Array(buckets).fill(HASH_EMPTY);
    this.#mask = buckets - 1;
    this.forEachUsed((index) => {
      const hashed = this.#hashed[index];
      for (let side = 0; side < 2; side++) {
        if ((hashed & (1 << side)) === 0) continue;
        const sidx = flowSidx(index, side as 0 | 1);
        let b = this.#side[sidx * SIDE_WORDS + S_HASH] & this.#mask;
        while (this.#buckets[b] !== HASH_EMPTY) b = (b + 1) & this.#mask;
        this.#buckets[b] = sidx;
      }
    });
    for (const fn of this.#resizeListeners) fn(size);
  }

  /**
   * Halves the table (not below {@linkcode FLOW_INITIAL_SLOTS}) when its
   * upper half is empty and half of the smaller table would still be free:
   * the slack that stops a count near the boundary from resizing back and
   * forth. Runs in the timer pass.
   */
  #maybeShrink(): void {
    const target = Math.max(FLOW_INITIAL_SLOTS, this.#size >>> 1);
    if (target >= this.#size || this.#pendingCount !== 0) return;
    if (this.live > target >>> 1) return;
    for (let w = target >>> 5; w < this.#used.length; w++) if (this.#used[w] !== 0) return;
    this.#resize(target);
  }

  /** Registers the handlers of a flow type (once per type, at start-up). */
  setHandlers(type: FlowType, handlers: FlowTypeHandlers): void {
    this.#handlers[type] = handlers;
  }

  // -------------------------------------------------------------------------
  // State

  /** The state of flow `index`. */
  state(index: number): FlowState {
    return this.#state[index] as FlowState;
  }

  /** The type of flow `index` (NONE before TYPED). */
  type(index: number): FlowType {
    return this.#type[index] as FlowType;
  }

  /** The one place a state changes: checks legality, counts, logs. */
  #setState(index: number, to: FlowState): void {
    const from = this.#state[index] as FlowState;
    if ((LEGAL[from] & (1 << to)) === 0) {
      throw new Error(
        `flow ${index}: illegal transition ${FLOW_STATE_NAMES[from]} -> ${FLOW_STATE_NAMES[to]}`,
      );
    }
    this.#state[index] = to;
    this.#byState[from]--;
    this.#byState[to]++;
    if (logEnabled(LogLevel.debug)) {
      this.log(index, LogLevel.debug, `${FLOW_STATE_NAMES[from]} -> ${FLOW_STATE_NAMES[to]}`);
    }
  }

  #expect(index: number, state: FlowState, what: string): void {
    if (this.#state[index] !== state) {
      throw new Error(
        `flow ${index}: ${what} needs state ${FLOW_STATE_NAMES[state]}, not ${
          FLOW_STATE_NAMES[this.#state[index] as FlowState]
        }`,
      );
    }
  }

  /**
   * Allocates the first free slot (FREE → NEW). Returns its index, or -1 if
   * the table is full: the caller refuses the flow (e.g. RST) and the
   * {@linkcode allocFailures} counter records it.
   */
  alloc(): number {
    let index = this.#firstFree();
    if (index < 0 && this.#size < this.capacity) {
      this.#resize(Math.min(this.capacity, this.#size * 2));
      index = this.#firstFree();
    }
    if (index < 0) {
      this.allocFailures++;
      return -1;
    }
    this.#markUsed(index);
    this.#setState(index, FlowState.NEW);
    this.bytesFrom[index * 2] = this.bytesFrom[index * 2 + 1] = 0;
    this.#bornMs[index] = performance.now();
    return index;
  }

  /** When flow `index` was allocated, on the `performance.now()` clock (ms). */
  bornMs(index: number): number {
    return this.#bornMs[index];
  }

  /** Records the initiating side (NEW → INI). */
  setIni(index: number, side: FlowSide): void {
    this.#expect(index, FlowState.NEW, "setIni");
    this.#writeSide(flowSidx(index, 0), side);
    this.#setState(index, FlowState.INI);
  }

  /** Records the target side (INI → TGT). */
  setTgt(index: number, side: FlowSide): void {
    this.#expect(index, FlowState.INI, "setTgt");
    this.#writeSide(flowSidx(index, 1), side);
    this.#setState(index, FlowState.TGT);
  }

  /** Chooses the type and attaches its data (TGT → TYPED). */
  setType(index: number, type: FlowType, data: unknown): void {
    this.#expect(index, FlowState.TGT, "setType");
    if (type === FlowType.NONE) throw new Error(`flow ${index}: setType NONE`);
    this.#type[index] = type;
    const proto = FLOW_TYPE_PROTO[type] << 8;
    this.#side[flowSidx(index, 0) * SIDE_WORDS + S_META] |= proto;
    this.#side[flowSidx(index, 1) * SIDE_WORDS + S_META] |= proto;
    this.#byType[type]++;
    this.#data[index] = data;
    this.#setState(index, FlowState.TYPED);
  }

  /** Marks the flow fully set up (TYPED → ACTIVE). */
  activate(index: number): void {
    this.#expect(index, FlowState.TYPED, "activate");
    this.#setState(index, FlowState.ACTIVE);
  }

  /** Frees a flow that never became ACTIVE (NEW/INI/TGT/TYPED → FREE). */
  cancel(index: number): void {
    const s = this.#state[index];
    if (s === FlowState.FREE || s === FlowState.ACTIVE) {
      throw new Error(`flow ${index}: cancel in state ${FLOW_STATE_NAMES[s as FlowState]}`);
    }
    this.#free(index);
  }

  /**
   * The protocol data of a TYPED or ACTIVE flow of `type`. Throws before
   * TYPED or for another type: type data is not reachable earlier.
   */
  data<T>(index: number, type: FlowType): T {
    const s = this.#state[index];
    if (s < FlowState.TYPED || this.#type[index] !== type) {
      throw new Error(
        `flow ${index}: ${FLOW_TYPE_NAMES[type]} data requested in state ${
          FLOW_STATE_NAMES[s as FlowState]
        } of type ${FLOW_TYPE_NAMES[this.#type[index] as FlowType]}`,
      );
    }
    return this.#data[index] as T;
  }

  #free(index: number): void {
    const hashed = this.#hashed[index];
    if (hashed & 1) this.hashRemove(flowSidx(index, 0));
    if (hashed & 2) this.hashRemove(flowSidx(index, 1));
    const type = this.#type[index];
    if (type !== FlowType.NONE) this.#byType[type]--;
    this.#setState(index, FlowState.FREE);
    this.#type[index] = FlowType.NONE;
    this.#data[index] = undefined;
    this.#pendingFlag[index] = 0;
    this.#markFree(index);
  }

  // -------------------------------------------------------------------------
  // Slot bitmap

  #firstFree(): number {
    const full = this.#fullWords;
    const words = this.#used.length;
    for (let s = this.#freeHint; s < full.length; s++) {
      const notFull = ~full[s];
      if (notFull === 0) continue;
      const w = s * 32 + ctz32(notFull);
      if (w >= words) break;
      this.#freeHint = s;
      const index = w * 32 + ctz32(~this.#used[w]);
      // The lowest free bit past the capacity means every real slot is used.
      return index < this.#size ? index : -1;
    }
    this.#freeHint = full.length;
    return -1;
  }

  #markUsed(index: number): void {
    const w = index >>> 5;
    const v = (this.#used[w] | (1 << (index & 31))) >>> 0;
    this.#used[w] = v;
    const s = w >>> 5, bit = 1 << (w & 31);
    this.#nonEmptyWords[s] |= bit;
    if (v === 0xffffffff) this.#fullWords[s] |= bit;
  }

  #markFree(index: number): void {
    const w = index >>> 5;
    const v = this.#used[w] & ~(1 << (index & 31));
    this.#used[w] = v;
    const s = w >>> 5, bit = 1 << (w & 31);
    this.#fullWords[s] &= ~bit;
    if (v === 0) this.#nonEmptyWords[s] &= ~bit;
    if (s < this.#freeHint) this.#freeHint = s;
  }

  /** Calls `visit` for every slot that is not FREE, in index order, skipping free runs. */
  forEachUsed(visit: (index: number) => void): void {
    const summary = this.#nonEmptyWords;
    for (let s = 0; s < summary.length; s++) {
      let sw = summary[s];
      while (sw !== 0) {
        const w = s * 32 + ctz32(sw);
        sw &= sw - 1;
        let bits = this.#used[w];
        while (bits !== 0) {
          const b = ctz32(bits);
          bits &= bits - 1;
          visit(w * 32 + b);
        }
      }
    }
  }

  // -------------------------------------------------------------------------
  // Sides

  #writeSide(sidx: number, side: FlowSide): void {
    const r = this.#side;
    const o = sidx * SIDE_WORDS;
    r.fill(0, o, o + SIDE_WORDS);
    r[o + S_META] = side.pif; // protocol added by setType
    r[o + S_PORTS] = ((side.eport << 16) | side.oport) >>> 0;
    r.set(side.eaddr, o + S_EADDR);
    r.set(side.oaddr, o + S_OADDR);
  }

  /** Copies side `sidx` into `out` and returns it. */
  readSide(sidx: number, out: FlowSide): FlowSide {
    const r = this.#side;
    const o = sidx * SIDE_WORDS;
    out.pif = (r[o + S_META] & 0xff) as Pif;
    for (let i = 0; i < 4; i++) {
      out.eaddr[i] = r[o + S_EADDR + i];
      out.oaddr[i] = r[o + S_OADDR + i];
    }
    out.eport = r[o + S_PORTS] >>> 16;
    out.oport = r[o + S_PORTS] & 0xffff;
    return out;
  }

  /** The interface of side `sidx`. */
  pif(sidx: number): Pif {
    return (this.#side[sidx * SIDE_WORDS + S_META] & 0xff) as Pif;
  }
  /** The far end's port on side `sidx`. */
  eport(sidx: number): number {
    return this.#side[sidx * SIDE_WORDS + S_PORTS] >>> 16;
  }
  /** Our port on side `sidx`. */
  oport(sidx: number): number {
    return this.#side[sidx * SIDE_WORDS + S_PORTS] & 0xffff;
  }
  /** Word `i` (0-3) of the far end's address on side `sidx`. */
  eaddrWord(sidx: number, i: number): number {
    return this.#side[sidx * SIDE_WORDS + S_EADDR + i];
  }
  /** Word `i` (0-3) of our address on side `sidx`. */
  oaddrWord(sidx: number, i: number): number {
    return this.#side[sidx * SIDE_WORDS + S_OADDR + i];
  }

  /** Copies the far end's address on side `sidx` as 16 bytes to `out[off..]` (IPv4 mapped). */
  eaddrCopy(sidx: number, out: Uint8Array, off = 0): void {
    wordsToBytes(this.#side, sidx * SIDE_WORDS + S_EADDR, out, off);
  }
  /** Copies our address on side `sidx` as 16 bytes to `out[off..]` (IPv4 mapped). */
  oaddrCopy(sidx: number, out: Uint8Array, off = 0): void {
    wordsToBytes(this.#side, sidx * SIDE_WORDS + S_OADDR, out, off);
  }

  /** Side `sidx` as text: `TAP [e]:p -> [o]:p` (for logs). */
  formatSide(sidx: number): string {
    const o = sidx * SIDE_WORDS;
    const e = addrWordsFormat(this.#side, o + S_EADDR);
    const us = addrWordsFormat(this.#side, o + S_OADDR);
    return `${PIF_NAMES[this.pif(sidx)]} [${e}]:${this.eport(sidx)} -> [${us}]:${this.oport(sidx)}`;
  }

  // -------------------------------------------------------------------------
  // Hash

  #hashSide(sidx: number): number {
    return halfSipHash(this.#key, this.#side, sidx * SIDE_WORDS + S_META, S_KEY_WORDS);
  }

  /** Finds the flow side whose endpoints and protocol equal `key`; its sidx, or -1. */
  lookup(proto: number, key: FlowSide): number {
    const k = this.#keyWords;
    k[0] = key.pif | (proto << 8);
    k[1] = (key.eport << 16) | key.oport;
    k.set(key.eaddr, 2);
    k.set(key.oaddr, 6);
    const hash = halfSipHash(this.#key, k, 0, S_KEY_WORDS);
    const buckets = this.#buckets;
    const r = this.#side;
    for (let b = hash & this.#mask;; b = (b + 1) & this.#mask) {
      const sidx = buckets[b];
      if (sidx === HASH_EMPTY) return -1;
      const o = sidx * SIDE_WORDS;
      if (r[o + S_HASH] !== hash) continue;
      let i = 0;
      while (i < S_KEY_WORDS && r[o + S_META + i] === k[i]) i++;
      if (i === S_KEY_WORDS) return sidx;
    }
  }

  /** Enters side `sidx` of a TYPED or ACTIVE flow in the hash. Throws if already there. */
  hashInsert(sidx: number): void {
    const index = sidx >>> 1;
    const bit = 1 << (sidx & 1);
    if (this.#state[index] < FlowState.TYPED) {
      throw new Error(`flow ${index}: hash insert before TYPED`);
    }
    if (this.#hashed[index] & bit) throw new Error(`flow ${index}: side ${sidx & 1} hashed twice`);
    const hash = this.#hashSide(sidx);
    this.#side[sidx * SIDE_WORDS + S_HASH] = hash;
    const buckets = this.#buckets;
    let b = hash & this.#mask;
    while (buckets[b] !== HASH_EMPTY) b = (b + 1) & this.#mask;
    buckets[b] = sidx;
    this.#hashed[index] |= bit;
  }

  /** Removes side `sidx` from the hash (no-op if it is not there). */
  hashRemove(sidx: number): void {
    const index = sidx >>> 1;
    const bit = 1 << (sidx & 1);
    if ((this.#hashed[index] & bit) === 0) return;
    this.#hashed[index] &= ~bit;
    const buckets = this.#buckets;
    const mask = this.#mask;
    const r = this.#side;
    let i = r[sidx * SIDE_WORDS + S_HASH] & mask;
    while (buckets[i] !== sidx) i = (i + 1) & mask;
    // Backward-shift deletion: move later members of the probe run into the
    // hole unless their home bucket lies cyclically in (hole, their slot].
    for (;;) {
      buckets[i] = HASH_EMPTY;
      let j = i;
      for (;;) {
        j = (j + 1) & mask;
        const other = buckets[j];
        if (other === HASH_EMPTY) return;
        const home = r[other * SIDE_WORDS + S_HASH] & mask;
        const stays = i <= j ? i < home && home <= j : i < home || home <= j;
        if (!stays) {
          buckets[i] = other;
          i = j;
          break;
        }
      }
    }
  }

  // -------------------------------------------------------------------------
  // Deferred pass

  /** Asks for the type's deferred handler to run for flow `index` at the end of this turn. */
  defer(index: number): void {
    if (this.#pendingFlag[index]) return;
    this.#pendingFlag[index] = 1;
    this.#pending[this.#pendingCount++] = index;
  }

  /**
   * The per-turn pass: deferred handlers of flows that asked, then (once per
   * {@linkcode FLOW_TIMER_INTERVAL_MS}) timer handlers of all ACTIVE flows.
   * Frees each flow whose handler returns true. `nowMs` defaults to the
   * clock in whole milliseconds, read here: a fractional number passed in
   * from the loop, or kept in a parameter, is boxed on the heap — an
   * allocation per loop turn (measured: a third of all a ping-pong
   * allocated); a whole one is a small integer, never boxed.
   */
  deferredPass(nowMs: number = Math.floor(performance.now())): void {
    const n = this.#pendingCount;
    if (n > 0) {
      const pending = this.#pending;
      for (let i = 0; i < n; i++) {
        const index = pending[i];
        if (!this.#pendingFlag[index]) continue; // freed meanwhile
        this.#pendingFlag[index] = 0;
        if (this.#state[index] !== FlowState.ACTIVE) continue;
        const h = this.#handlers[this.#type[index]];
        if (h?.deferred && h.deferred(index)) this.#free(index);
      }
      // Flows deferred by these handlers run next turn.
      pending.copyWithin(0, n, this.#pendingCount);
      this.#pendingCount -= n;
    }
    if (nowMs >= this.#nextTimerMs) this.#timerPass(nowMs);
  }

  /**
   * Ends every ACTIVE flow whose type has a `guestGone` handler: the guest
   * behind the tap is gone, and host peers should not wait for timeouts
   * (two hours for an idle TCP connection) to learn it. Each handler
   * returns true to free at once.
   */
  guestGone(): void {
    this.forEachUsed((index) => {
      if (this.#state[index] !== FlowState.ACTIVE) return;
      const h = this.#handlers[this.#type[index]];
      if (h?.guestGone && h.guestGone(index)) this.#free(index);
    });
  }

  /**
   * Timer handlers of all ACTIVE flows. Apart from `deferredPass`, which runs
   * every turn: a closure capturing `nowMs` there would allocate its context
   * on every call, whether the pass runs or not.
   */
  #timerPass(nowMs: number): void {
    this.#nextTimerMs = nowMs + FLOW_TIMER_INTERVAL_MS;
    this.forEachUsed((index) => this.#timerVisit(index, nowMs));
    this.#maybeShrink();
  }

  #timerVisit(index: number, nowMs: number): void {
    const s = this.#state[index];
    if (s !== FlowState.ACTIVE) {
      throw new Error(`flow ${index}: left in state ${FLOW_STATE_NAMES[s as FlowState]}`);
    }
    const h = this.#handlers[this.#type[index]];
    if (h?.timer && h.timer(index, nowMs)) this.#free(index);
  }

  // -------------------------------------------------------------------------
  // Logging and counters

  /** Logs `msg` for flow `index` with its prefix (`flow 12 TCP: ...`). */
  log(index: number, level: LogLevel, msg: string): void {
    if (!logEnabled(level)) return;
    log(level, `flow ${index} ${FLOW_TYPE_NAMES[this.#type[index] as FlowType]}: ${msg}`);
  }

  /** Flows not FREE. */
  get live(): number {
    return this.capacity - this.#byState[FlowState.FREE];
  }

  /** Number of flows in `state`. */
  countState(state: FlowState): number {
    return this.#byState[state];
  }

  /** Number of typed flows of `type`. */
  countType(type: FlowType): number {
    return this.#byType[type];
  }

  /** All counters, by name. */
  stats(): FlowStats {
    const byState: Record<string, number> = {};
    for (let s = 1; s < STATE_COUNT; s++) {
      byState[FLOW_STATE_NAMES[s as FlowState]] = this.#byState[s];
    }
    const byType: Record<string, number> = {};
    for (let t = 1; t < TYPE_COUNT; t++) byType[FLOW_TYPE_NAMES[t as FlowType]] = this.#byType[t];
    return { byState, byType, allocFailures: this.allocFailures, live: this.live };
  }
}
