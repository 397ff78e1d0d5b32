/**
 * C structures passed to system calls, laid out in preallocated byte arrays.
 *
 * The kernel reads pointers out of some structures (an iovec's base, a
 * msghdr's iovec array). JavaScript cannot take the address of a value, but
 * FFI can tell us where an `ArrayBuffer`'s storage lives; {@linkcode addrOf}
 * caches that once per buffer, so building an iovec for a view into a
 * preallocated pool costs two 32-bit stores and no allocation.
 *
 * Invariants callers keep:
 * - A structure holds raw addresses, not references: the buffers it points at
 *   must stay reachable from JavaScript while a call may use it. Pools that
 *   live as long as the program satisfy this trivially.
 * - Addresses are JavaScript numbers. User-space addresses on x86_64 and
 *   aarch64 fit in 48 bits, well inside the 53 bits a number holds exactly.
 * - Both supported architectures are little-endian and LP64, so `long`,
 *   `size_t` and pointers are 8 bytes; only epoll_event differs (see
 *   `ARCH` in consts.ts).
 *
 * @module
 */

import { AF_INET, AF_INET6, AF_UNIX, ARCH } from "./consts.ts";

const bufferBase = new WeakMap<ArrayBufferLike, number>();

/**
 * The address of the first byte of `view`, as a number.
 *
 * Reading `view.buffer` first matters: V8 keeps very small typed arrays inside
 * its moving heap, and asking for the buffer moves their bytes to stable
 * storage, so the address stays valid for the buffer's lifetime.
 */
export function addrOf(view: ArrayBufferView): number {
  const buffer = view.buffer;
  let base = bufferBase.get(buffer);
  if (base === undefined) {
    const p = Deno.UnsafePointer.of(new Uint8Array(buffer));
    base = p === null ? 0 : Number(Deno.UnsafePointer.value(p));
    bufferBase.set(buffer, base);
  }
  return base + view.byteOffset;
}

/** Stores a 64-bit little-endian value given as a number below 2^53. */
function put64(b: DataView, off: number, value: number): void {
  b.setUint32(off, value % 0x100000000, true);
  b.setUint32(off + 4, Math.floor(value / 0x100000000), true);
}

/** Reads a 64-bit little-endian value as a number (exact below 2^53). */
function get64(b: DataView, off: number): number {
  return b.getUint32(off, true) + b.getUint32(off + 4, true) * 0x100000000;
}

function dataViewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------
// Socket addresses

/** `sizeof(struct sockaddr_in)`. */
export const SOCKADDR_IN_SIZE = 16;
/** `sizeof(struct sockaddr_in6)`. */
export const SOCKADDR_IN6_SIZE = 28;
/** `sizeof(struct sockaddr_un)`. */
export const SOCKADDR_UN_SIZE = 110;
/** `sizeof(struct sockaddr_storage)`: room for any address. */
export const SOCKADDR_STORAGE_SIZE = 128;

/**
 * Writes a `sockaddr_in` for IPv4 address `addr[addrOff..+4]` and `port`
 * into `out` and returns its length. Every byte of the structure is written.
 */
export function sockaddrIn4(out: Uint8Array, addr: Uint8Array, port: number, addrOff = 0): number {
  out.fill(0, 0, SOCKADDR_IN_SIZE);
  out[0] = AF_INET & 0xff; // sa_family is host-endian (little)
  out[1] = AF_INET >> 8;
  out[2] = port >> 8; // port and address are network order
  out[3] = port & 0xff;
  out.set(addr.subarray(addrOff, addrOff + 4), 4);
  return SOCKADDR_IN_SIZE;
}

/** Writes a `sockaddr_in6` for `addr[addrOff..+16]`, `port`, `scopeId`; returns its length. */
export function sockaddrIn6(
  out: Uint8Array,
  addr: Uint8Array,
  port: number,
  scopeId = 0,
  addrOff = 0,
): number {
  out.fill(0, 0, SOCKADDR_IN6_SIZE);
  out[0] = AF_INET6 & 0xff;
  out[1] = AF_INET6 >> 8;
  out[2] = port >> 8;
  out[3] = port & 0xff;
  // bytes 4..7: flow information, zero
  out.set(addr.subarray(addrOff, addrOff + 16), 8);
  dataViewOf(out).setUint32(24, scopeId, true);
  return SOCKADDR_IN6_SIZE;
}

/**
 * Writes a `sockaddr_un` for filesystem `path` and returns the length to pass
 * to bind/connect. Returns -1 if the path does not fit (107 bytes at most).
 */
export function sockaddrUn(out: Uint8Array, path: string): number {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > SOCKADDR_UN_SIZE - 3) return -1;
  out.fill(0, 0, SOCKADDR_UN_SIZE);
  out[0] = AF_UNIX;
  out[1] = 0;
  out.set(bytes, 2);
  return 2 + bytes.length + 1;
}

/** A decoded socket address: IPv4/IPv6 with port, or a UNIX path. */
export type SockAddr =
  | { readonly family: 4; readonly addr: Uint8Array; readonly port: number }
  | {
    readonly family: 6;
    readonly addr: Uint8Array;
    readonly port: number;
    readonly scopeId: number;
  }
  | { readonly family: "unix"; readonly path: string };

/**
 * Decodes the first `len` bytes of `buf` as a socket address (as filled in by
 * accept, getsockname, recvfrom). Returns null for an unknown family or a
 * length too short for its family. Allocates: for set-up and slow paths.
 */
export function sockaddrDecode(buf: Uint8Array, len: number): SockAddr | null {
  if (len < 2) return null;
  const family = buf[0] | (buf[1] << 8);
  const port = (buf[2] << 8) | buf[3];
  if (family === AF_INET && len >= SOCKADDR_IN_SIZE) {
    return { family: 4, addr: buf.slice(4, 8), port };
  }
  if (family === AF_INET6 && len >= SOCKADDR_IN6_SIZE) {
    return {
      family: 6,
      addr: buf.slice(8, 24),
      port,
      scopeId: dataViewOf(buf).getUint32(24, true),
    };
  }
  if (family === AF_UNIX) {
    let end = 2;
    while (end < len && buf[end] !== 0) end++;
    return { family: "unix", path: new TextDecoder().decode(buf.subarray(2, end)) };
  }
  return null;
}

// ---------------------------------------------------------------------------
// iovec

/** `sizeof(struct iovec)`. */
export const IOVEC_SIZE = 16;

/**
 * A preallocated array of `struct iovec`. Entries are set one by one and the
 * array's {@linkcode addr} goes into a msghdr or straight to readv/writev.
 */
export class IovecArray {
  /** The raw structures, `capacity * 16` bytes. */
  readonly bytes: Uint8Array;
  /** How many entries there is room for. */
  readonly capacity: number;
  /**
   * The address of entry 0, for a msghdr's `msg_iov`. A field, not a getter:
   * an address is not a small integer, so each number a function returns
   * for it is boxed on the heap (measured: several per round trip).
   */
  readonly addr: number;
  readonly #dv: DataView;
  readonly #from: Uint8Array[] = [];

  /** Allocates room for `capacity` entries. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.bytes = new Uint8Array(capacity * IOVEC_SIZE);
    this.#dv = dataViewOf(this.bytes);
    this.addr = addrOf(this.bytes);
  }

  /**
   * Points entry `i` at `view[off..off+len)`; `len` defaults to the rest of
   * the view. A range outside the view is a bug of the caller: RangeError,
   * never an iovec the kernel would follow past the view.
   */
  set(i: number, view: Uint8Array, off = 0, len = view.byteLength - off): void {
    if (off < 0 || len < 0 || off + len > view.byteLength) {
      throw new RangeError(`iovec [${off}, +${len}) outside a view of ${view.byteLength} bytes`);
    }
    put64(this.#dv, i * IOVEC_SIZE, addrOf(view) + off);
    put64(this.#dv, i * IOVEC_SIZE + 8, len);
  }

  /**
   * Points entry `i` at the raw address `addrs[k] + off` (a frame slot's, or
   * mapped memory's, address plus an offset). The sum is made here: an address passed as an argument would be
   * boxed on the heap, one allocation per frame.
   */
  setRawAt(i: number, addrs: Float64Array, k: number, off: number, len: number): void {
    put64(this.#dv, i * IOVEC_SIZE, addrs[k] + off);
    put64(this.#dv, i * IOVEC_SIZE + 8, len);
  }

  /** The entries from `first` on, as bytes (made once per `first`, then kept). */
  from(first: number): Uint8Array {
    let view = this.#from[first];
    if (view === undefined) {
      view = this.bytes.subarray(first * IOVEC_SIZE);
      this.#from[first] = view;
    }
    return view;
  }

  /** The length recorded in entry `i`. */
  len(i: number): number {
    return get64(this.#dv, i * IOVEC_SIZE + 8);
  }
}

// ---------------------------------------------------------------------------
// msghdr and mmsghdr

/** `sizeof(struct msghdr)`. */
export const MSGHDR_SIZE = 56;
/** `sizeof(struct mmsghdr)`: a msghdr, the received length, padding. */
export const MMSGHDR_SIZE = 64;

// Field offsets in struct msghdr.
const MSG_NAME = 0;
const MSG_NAMELEN = 8;
const MSG_IOV = 16;
const MSG_IOVLEN = 24;
const MSG_CONTROL = 32;
const MSG_CONTROLLEN = 40;
const MSG_FLAGS = 48;
const MMSG_LEN = 56;

/**
 * A preallocated array of `struct mmsghdr` (a single one serves as a
 * `struct msghdr` for sendmsg/recvmsg: the msghdr is its first 56 bytes).
 */
export class MmsgHdrArray {
  /** The raw structures, `capacity * 64` bytes. */
  readonly bytes: Uint8Array;
  /** How many entries there is room for. */
  readonly capacity: number;
  readonly #dv: DataView;

  /** Allocates `capacity` zeroed headers. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.bytes = new Uint8Array(capacity * MMSGHDR_SIZE);
    this.#dv = dataViewOf(this.bytes);
  }

  /** Sets header `i`'s address buffer (`msg_name`); pass null for none. */
  setName(i: number, name: Uint8Array | null, len: number = name?.byteLength ?? 0): void {
    const o = i * MMSGHDR_SIZE;
    put64(this.#dv, o + MSG_NAME, name ? addrOf(name) : 0);
    this.#dv.setUint32(o + MSG_NAMELEN, name ? len : 0, true);
  }

  /** Sets header `i`'s scatter-gather list: `count` entries of `iov` from entry `first`. */
  setIov(i: number, iov: IovecArray, count: number, first = 0): void {
    const o = i * MMSGHDR_SIZE;
    put64(this.#dv, o + MSG_IOV, iov.addr + first * IOVEC_SIZE);
    put64(this.#dv, o + MSG_IOVLEN, count);
  }

  /** Sets header `i`'s ancillary-data buffer; pass null for none. */
  setControl(i: number, control: Uint8Array | null, len: number = control?.byteLength ?? 0): void {
    const o = i * MMSGHDR_SIZE;
    put64(this.#dv, o + MSG_CONTROL, control ? addrOf(control) : 0);
    put64(this.#dv, o + MSG_CONTROLLEN, control ? len : 0);
  }

  /** `msg_namelen` of header `i`: after a receive, the length of the sender's address. */
  nameLen(i: number): number {
    return this.#dv.getUint32(i * MMSGHDR_SIZE + MSG_NAMELEN, true);
  }

  /** Resets `msg_namelen` of header `i` before a receive (the kernel overwrites it). */
  setNameLen(i: number, len: number): void {
    this.#dv.setUint32(i * MMSGHDR_SIZE + MSG_NAMELEN, len, true);
  }

  /** `msg_controllen` of header `i` (after a receive: bytes of ancillary data). */
  controlLen(i: number): number {
    return get64(this.#dv, i * MMSGHDR_SIZE + MSG_CONTROLLEN);
  }

  /** `msg_flags` of header `i` (after a receive: MSG_TRUNC and friends). */
  flags(i: number): number {
    return this.#dv.getInt32(i * MMSGHDR_SIZE + MSG_FLAGS, true);
  }

  /** `msg_len` of entry `i`: bytes sent or received by sendmmsg/recvmmsg. */
  msgLen(i: number): number {
    return this.#dv.getUint32(i * MMSGHDR_SIZE + MMSG_LEN, true);
  }
}

// ---------------------------------------------------------------------------
// epoll_event

/**
 * A preallocated array of `struct epoll_event`. The 64-bit `data` field is
 * used as two 32-bit halves, which is how the reactor stores its tags.
 */
export class EpollEvents {
  /** The raw structures. */
  readonly bytes: Uint8Array;
  /** How many events there is room for. */
  readonly capacity: number;
  readonly #dv: DataView;
  readonly #size = ARCH.EPOLL_EVENT_SIZE;
  readonly #data = ARCH.EPOLL_DATA_OFFSET;

  /** Allocates room for `capacity` events. */
  constructor(capacity: number) {
    this.capacity = capacity;
    this.bytes = new Uint8Array(capacity * ARCH.EPOLL_EVENT_SIZE);
    this.#dv = dataViewOf(this.bytes);
  }

  /** Fills entry `i` (use entry 0 as the argument of epoll_ctl). */
  set(i: number, events: number, dataLo: number, dataHi = 0): void {
    const o = i * this.#size;
    this.#dv.setUint32(o, events >>> 0, true);
    this.#dv.setUint32(o + this.#data, dataLo >>> 0, true);
    this.#dv.setUint32(o + this.#data + 4, dataHi >>> 0, true);
  }

  /** The event mask of entry `i`. */
  events(i: number): number {
    return this.#dv.getUint32(i * this.#size, true);
  }

  /** The low 32 bits of entry `i`'s data. */
  dataLo(i: number): number {
    return this.#dv.getUint32(i * this.#size + this.#data, true);
  }

  /** The high 32 bits of entry `i`'s data. */
  dataHi(i: number): number {
    return this.#dv.getUint32(i * this.#size + this.#data + 4, true);
  }
}
