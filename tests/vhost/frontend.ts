/**
 * The front-end's side of vhost-user for tests: messages laid out as QEMU
 * writes them. (The in-process front-end that drives a whole data path
 * grows here.)
 */
import { VHOST_USER_HDR_SIZE } from "../../lib/vhost/protocol.ts";

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
