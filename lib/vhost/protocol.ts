/**
 * vhost-user messages (QEMU's `docs/interop/vhost-user.rst`): a checked view
 * over one message as it came off the socket, and a builder for replies.
 *
 * # Theory of operation
 *
 * Every message is a 12-byte header — request, flags (protocol version in
 * bits 0–1, REPLY in bit 2, NEED_REPLY in bit 3), payload size — and the
 * payload, all little-endian. The payload's shape follows from the request:
 * one u64 (features, a vring index for KICK/CALL/ERR with the "no fd" bit,
 * a queue count), a vring state (index, number), a vring address (index,
 * flags, then descriptor, used, available and log addresses, all in the
 * front-end's address space) or a memory table (count, padding, then per
 * region guest address, size, front-end address and offset in its fd).
 *
 * {@linkcode VhostUserMsg.wrap} checks the header and that the payload is
 * long enough for its request's shape before any accessor reads it: the
 * front-end is trusted no more than the guest. A message that fails the
 * check, or a request tapir does not know, ends the connection (one log
 * line) — a back-end that guessed at a message it did not understand would
 * corrupt the guest's rings.
 *
 * @module
 */

import { readU64 } from "./memory.ts";

/** Bytes of the header. */
export const VHOST_USER_HDR_SIZE = 12;
/** Largest payload accepted: a memory table with 8 regions is 8 + 8 × 32 bytes. */
export const VHOST_USER_MAX_PAYLOAD = 8 + 8 * 32;
/** The protocol version this back-end speaks (flags bits 0–1). */
export const VHOST_USER_VERSION = 1;
/** Flags: this message is a reply. */
export const VHOST_USER_FLAG_REPLY = 1 << 2;
/** Flags: the sender wants a reply (REPLY_ACK) even to a request that has none. */
export const VHOST_USER_FLAG_NEED_REPLY = 1 << 3;
/** Feature bit: the back-end speaks protocol features (GET/SET_PROTOCOL_FEATURES). */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
/** Protocol feature bit: REPLY_ACK. */
export const VHOST_USER_PROTOCOL_F_REPLY_ACK = 3;
/** In a KICK/CALL/ERR payload: the vring index bits, and "no fd comes with this". */
export const VHOST_USER_VRING_IDX_MASK = 0xff;
export const VHOST_USER_VRING_NOFD = 1 << 8;

/** Requests from the front-end that tapir serves. */
export const VhostUserRequest = {
  GET_FEATURES: 1,
  SET_FEATURES: 2,
  SET_OWNER: 3,
  RESET_OWNER: 4,
  SET_MEM_TABLE: 5,
  SET_VRING_NUM: 8,
  SET_VRING_ADDR: 9,
  SET_VRING_BASE: 10,
  GET_VRING_BASE: 11,
  SET_VRING_KICK: 12,
  SET_VRING_CALL: 13,
  SET_VRING_ERR: 14,
  GET_PROTOCOL_FEATURES: 15,
  SET_PROTOCOL_FEATURES: 16,
  GET_QUEUE_NUM: 17,
  SET_VRING_ENABLE: 18,
} as const;

/** Payload shapes, by the bytes they need. */
const Shape = { NONE: 0, U64: 8, STATE: 8, ADDR: 40, MEM: 8 } as const;

/** The payload each request needs (at least), or undefined for a request tapir does not know. */
const PAYLOAD: Record<number, number> = {
  [VhostUserRequest.GET_FEATURES]: Shape.NONE,
  [VhostUserRequest.SET_FEATURES]: Shape.U64,
  [VhostUserRequest.SET_OWNER]: Shape.NONE,
  [VhostUserRequest.RESET_OWNER]: Shape.NONE,
  [VhostUserRequest.SET_MEM_TABLE]: Shape.MEM,
  [VhostUserRequest.SET_VRING_NUM]: Shape.STATE,
  [VhostUserRequest.SET_VRING_ADDR]: Shape.ADDR,
  [VhostUserRequest.SET_VRING_BASE]: Shape.STATE,
  [VhostUserRequest.GET_VRING_BASE]: Shape.STATE,
  [VhostUserRequest.SET_VRING_KICK]: Shape.U64,
  [VhostUserRequest.SET_VRING_CALL]: Shape.U64,
  [VhostUserRequest.SET_VRING_ERR]: Shape.U64,
  [VhostUserRequest.GET_PROTOCOL_FEATURES]: Shape.NONE,
  [VhostUserRequest.SET_PROTOCOL_FEATURES]: Shape.U64,
  [VhostUserRequest.GET_QUEUE_NUM]: Shape.NONE,
  [VhostUserRequest.SET_VRING_ENABLE]: Shape.STATE,
};

/** Bytes per memory-table region. */
const REGION_SIZE = 32;

/** One region of a `SET_MEM_TABLE` payload. */
export interface MemRegionDesc {
  guestAddr: number;
  size: number;
  userAddr: number;
  mmapOffset: number;
}

/** A checked view over one message; see the module comment. */
export class VhostUserMsg {
  #v: DataView = new DataView(new ArrayBuffer(0));
  #off = 0;

  /**
   * Views the message at `buf[off..off+len)`. Returns null, or what is
   * wrong with it: a short header, another protocol version, a reply where
   * a request belongs, a payload over {@linkcode VHOST_USER_MAX_PAYLOAD} or
   * past `len`, an unknown request, a payload too short for its request, a
   * memory table with more regions than fit.
   */
  wrap(buf: Uint8Array, off: number, len: number): string | null {
    if (off < 0 || off + len > buf.length) return "message outside its buffer";
    if (len < VHOST_USER_HDR_SIZE) return `message of ${len} bytes, header is 12`;
    this.#v = new DataView(buf.buffer, buf.byteOffset, buf.length);
    this.#off = off;
    const flags = this.flags;
    if ((flags & 3) !== VHOST_USER_VERSION) return `protocol version ${flags & 3}`;
    if (flags & VHOST_USER_FLAG_REPLY) return "a reply where a request belongs";
    const size = this.size;
    if (size > VHOST_USER_MAX_PAYLOAD) return `payload of ${size} bytes`;
    if (VHOST_USER_HDR_SIZE + size > len) return "payload cut short";
    const need = PAYLOAD[this.request];
    if (need === undefined) return `unknown request ${this.request}`;
    if (size < need) return `request ${this.request}: payload of ${size} bytes, needs ${need}`;
    if (this.request === VhostUserRequest.SET_MEM_TABLE) {
      const n = this.#u32(0);
      if (n === 0 || n > 8 || size < 8 + n * REGION_SIZE) return `memory table of ${n} regions`;
    }
    return null;
  }

  /** The request code. */
  get request(): number {
    return this.#v.getUint32(this.#off, true);
  }
  /** Flags: version, REPLY, NEED_REPLY. */
  get flags(): number {
    return this.#v.getUint32(this.#off + 4, true);
  }
  /** Payload bytes. */
  get size(): number {
    return this.#v.getUint32(this.#off + 8, true);
  }
  /** True if the front-end asked for an acknowledgement (REPLY_ACK). */
  get needReply(): boolean {
    return (this.flags & VHOST_USER_FLAG_NEED_REPLY) !== 0;
  }

  #u32(at: number): number {
    return this.#v.getUint32(this.#off + VHOST_USER_HDR_SIZE + at, true);
  }
  #u64(at: number): number {
    return readU64(this.#v, this.#off + VHOST_USER_HDR_SIZE + at);
  }

  /** A u64 payload as a number (-1 past 2^53; feature words: {@linkcode u64Lo}, {@linkcode u64Hi}). */
  get u64(): number {
    return this.#u64(0);
  }
  /** A u64 payload's low 32 bits (feature bits 0–31). */
  get u64Lo(): number {
    return this.#u32(0);
  }
  /** A u64 payload's high 32 bits (feature bits 32–63, beyond a number's exact bit tests). */
  get u64Hi(): number {
    return this.#u32(4);
  }
  /** Vring state / address / file payloads: the vring index. */
  get vringIndex(): number {
    return this.request === VhostUserRequest.SET_VRING_KICK ||
        this.request === VhostUserRequest.SET_VRING_CALL ||
        this.request === VhostUserRequest.SET_VRING_ERR
      ? this.#u32(0) & VHOST_USER_VRING_IDX_MASK
      : this.#u32(0);
  }
  /** KICK/CALL/ERR: true if no fd comes with the message (the ring is to be polled). */
  get vringNoFd(): boolean {
    return (this.#u32(0) & VHOST_USER_VRING_NOFD) !== 0;
  }
  /** Vring state payloads: the number (ring size, base, enable flag). */
  get vringNum(): number {
    return this.#u32(4);
  }
  /** SET_VRING_ADDR: the ring's parts in the front-end's address space. */
  get descAddr(): number {
    return this.#u64(8);
  }
  get usedAddr(): number {
    return this.#u64(16);
  }
  get availAddr(): number {
    return this.#u64(24);
  }
  /** SET_MEM_TABLE: regions in the table. */
  get regionCount(): number {
    return this.#u32(0);
  }
  /** SET_MEM_TABLE: region `i` (< {@linkcode regionCount}) into `out`. */
  region(i: number, out: MemRegionDesc): MemRegionDesc {
    const at = 8 + i * REGION_SIZE;
    out.guestAddr = this.#u64(at);
    out.size = this.#u64(at + 8);
    out.userAddr = this.#u64(at + 16);
    out.mmapOffset = this.#u64(at + 24);
    return out;
  }
}

/**
 * Writes the reply to `request` with a u64 payload into `buf` at `off`
 * (GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, and REPLY_ACK's
 * status, 0 for success), given as its low and high 32-bit words. Returns
 * the bytes written.
 */
export function vhostReplyU64(
  buf: Uint8Array,
  off: number,
  request: number,
  lo: number,
  hi = 0,
): number {
  const v = new DataView(buf.buffer, buf.byteOffset + off, VHOST_USER_HDR_SIZE + 8);
  v.setUint32(0, request, true);
  v.setUint32(4, VHOST_USER_VERSION | VHOST_USER_FLAG_REPLY, true);
  v.setUint32(8, 8, true);
  v.setUint32(12, lo >>> 0, true);
  v.setUint32(16, hi >>> 0, true);
  return VHOST_USER_HDR_SIZE + 8;
}

/** Writes the reply to GET_VRING_BASE: the ring's index and where the back-end stopped. */
export function vhostReplyState(
  buf: Uint8Array,
  off: number,
  request: number,
  index: number,
  num: number,
): number {
  // Same layout as a u64 payload: two u32 words.
  return vhostReplyU64(buf, off, request, index, num);
}
