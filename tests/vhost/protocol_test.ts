/**
 * vhost-user messages as a front-end such as QEMU writes them: the view
 * reads every payload shape tapir serves, refuses what is malformed before
 * reading it, and replies are laid out as the front-end expects.
 */
import { deepEqual, equal, match } from "node:assert/strict";
import { msg } from "./frontend.ts";
import {
  type MemRegionDesc,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_FLAG_REPLY,
  VHOST_USER_VRING_NOFD,
  vhostReplyState,
  vhostReplyU64,
  VhostUserMsg,
  VhostUserRequest as Req,
} from "../../lib/vhost/protocol.ts";

function view(buf: Uint8Array): VhostUserMsg {
  const m = new VhostUserMsg();
  equal(m.wrap(buf, 0, buf.length), null);
  return m;
}

Deno.test("each payload shape is read from where the front-end wrote it", () => {
  const features = view(msg(Req.SET_FEATURES, [(1n << 32n) | (1n << 30n) | 1n]));
  equal(features.u64Lo, (1 << 30) + 1);
  equal(features.u64Hi, 1);

  const num = view(msg(Req.SET_VRING_NUM, [1, 256], VHOST_USER_FLAG_NEED_REPLY));
  equal(num.vringIndex, 1);
  equal(num.vringNum, 256);
  equal(num.needReply, true);

  const addr = view(
    msg(Req.SET_VRING_ADDR, [0, 0, 0x7f0000001000n, 0x7f0000003000n, 0x7f0000002000n, 0n]),
  );
  deepEqual([addr.vringIndex, addr.descAddr, addr.usedAddr, addr.availAddr], [
    0,
    0x7f0000001000,
    0x7f0000003000,
    0x7f0000002000,
  ]);

  const kick = view(msg(Req.SET_VRING_KICK, [BigInt(1 | VHOST_USER_VRING_NOFD)]));
  equal(kick.vringIndex, 1);
  equal(kick.vringNoFd, true);

  const mem = view(
    msg(Req.SET_MEM_TABLE, [
      2,
      0,
      0n,
      0xa0000n,
      0x7f0000000000n,
      0n,
      0x100000n,
      0x1ff00000n,
      0x7f1000000000n,
      0x100000n,
    ]),
  );
  equal(mem.regionCount, 2);
  const r: MemRegionDesc = { guestAddr: 0, size: 0, userAddr: 0, mmapOffset: 0 };
  deepEqual(mem.region(1, r), {
    guestAddr: 0x100000,
    size: 0x1ff00000,
    userAddr: 0x7f1000000000,
    mmapOffset: 0x100000,
  });
});

Deno.test("malformed messages are refused before any payload is read", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    ["short header", msg(Req.GET_FEATURES).subarray(0, 8), /header/],
    [
      "version 2",
      (() => {
        const b = msg(Req.GET_FEATURES);
        b[4] = 2;
        return b;
      })(),
      /version 2/,
    ],
    ["a reply", msg(Req.GET_FEATURES, [], VHOST_USER_FLAG_REPLY), /reply/],
    ["unknown", msg(99), /unknown request 99/],
    ["payload too short for its request", msg(Req.SET_VRING_ADDR, [0, 0, 1n]), /needs 40/],
    ["payload past the bytes read", msg(Req.SET_FEATURES, [1n]).subarray(0, 16), /cut short/],
    ["no regions", msg(Req.SET_MEM_TABLE, [0, 0]), /0 regions/],
    ["nine regions", msg(Req.SET_MEM_TABLE, [9, 0, ...Array(36).fill(0n)]), /payload of|9 regions/],
    ["regions announced, not sent", msg(Req.SET_MEM_TABLE, [2, 0, 0n, 1n, 2n, 3n]), /2 regions/],
  ];
  for (const [why, buf, expect] of cases) {
    const err = new VhostUserMsg().wrap(buf, 0, buf.length);
    equal(typeof err, "string", why);
    match(err!, expect, why);
  }
});

Deno.test("replies carry the request, the REPLY flag and their payload", () => {
  const buf = new Uint8Array(64);
  const n = vhostReplyU64(buf, 4, Req.GET_FEATURES, 0x4000_0001, 0x1);
  equal(n, 20);
  const v = new DataView(buf.buffer, 4);
  deepEqual([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)], [
    Req.GET_FEATURES,
    1 | VHOST_USER_FLAG_REPLY,
    8,
  ]);
  equal(v.getBigUint64(12, true), (1n << 32n) | 0x4000_0001n);
  vhostReplyState(buf, 0, Req.GET_VRING_BASE, 1, 4321);
  const s = new DataView(buf.buffer);
  deepEqual([s.getUint32(0, true), s.getUint32(12, true), s.getUint32(16, true)], [
    Req.GET_VRING_BASE,
    1,
    4321,
  ]);
});
