/**
 * The vhost-user back-end's control side, fed the messages QEMU sends when
 * it starts a virtio-net device, with real memfds and eventfds: what it
 * answers, the state it builds, what it refuses, and that no descriptor a
 * front-end passes is left open by accident.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import * as sys from "../../lib/sys/mod.ts";
import { VHOST_OFFERED_FEATURES, VHOST_QUEUES, VhostUserBackend } from "../../lib/vhost/backend.ts";
import {
  VHOST_USER_F_PROTOCOL_FEATURES,
  VHOST_USER_FLAG_NEED_REPLY,
  VHOST_USER_PROTOCOL_F_REPLY_ACK,
  VhostUserRequest as Req,
} from "../../lib/vhost/protocol.ts";
import { acceptAll, eventfd, GUEST_MEM_SIZE, memfd, msg, request as send } from "./frontend.ts";

const GPA = 0x0n;
const UVA = 0x7f00_0000_0000n;

/** True if `fd` is an open descriptor. */
function isOpen(fd: number): boolean {
  return sys.fcntl(fd, sys.F_GETFD) >= 0;
}

/** Memory table of one region: the whole memfd, guest address GPA, front-end address UVA. */
function memTable(b: VhostUserBackend, fd: number): number {
  return send(b, msg(Req.SET_MEM_TABLE, [1, 0, GPA, BigInt(GUEST_MEM_SIZE), UVA, 0n]), [fd])[0];
}

/** Size, addresses and base for ring `i`, laid out at 64 KiB steps in the region. */
function ringSetup(b: VhostUserBackend, i: number): void {
  const base = UVA + BigInt(i * 0x10000);
  equal(send(b, msg(Req.SET_VRING_NUM, [i, 256]))[0], 0);
  equal(send(b, msg(Req.SET_VRING_BASE, [i, 0]))[0], 0);
  const addr = [i, 0, base, base + 0x2000n, base + 0x1000n, 0n];
  equal(send(b, msg(Req.SET_VRING_ADDR, addr))[0], 0, b.error);
}

Deno.test("features: what is offered is accepted, the rest refused, and REPLY_ACK acknowledges", () => {
  const b = new VhostUserBackend();
  const [n, r] = send(b, msg(Req.GET_FEATURES));
  equal(n, 20);
  equal(r.getUint32(12, true), VHOST_OFFERED_FEATURES[0]);
  equal(r.getUint32(16, true) & 1, 1, "VIRTIO_F_VERSION_1");
  ok(VHOST_OFFERED_FEATURES[0] & (1 << VHOST_USER_F_PROTOCOL_FEATURES));
  // Bit 22 (VIRTIO_NET_F_MQ, several queue pairs) is not offered.
  equal(send(b, msg(Req.SET_FEATURES, [1n << 22n]))[0], -1, "MQ is not offered");
  match(b.error, /not offered/);
  acceptAll(b);
  ok(b.vrings.every((v) => v.queue.eventIdx), "EVENT_IDX reaches the rings");
  equal(b.protocolFeatures, 1 << VHOST_USER_PROTOCOL_F_REPLY_ACK);
  const [acked, a] = send(b, msg(Req.SET_OWNER, [], VHOST_USER_FLAG_NEED_REPLY));
  equal(acked, 20, "SET_OWNER acknowledged when asked");
  deepEqual([a.getUint32(0, true), a.getBigUint64(12, true)], [Req.SET_OWNER, 0n]);
  equal(send(b, msg(Req.SET_OWNER))[0], 0, "not asked: no reply");
  equal(send(b, msg(Req.GET_QUEUE_NUM))[1].getUint32(12, true), VHOST_QUEUES);
});

Deno.test("memory and rings: mapped from the front-end's table, run once kicked and enabled, stopped by GET_VRING_BASE", () => {
  const b = new VhostUserBackend();
  acceptAll(b);
  const fd = memfd();
  equal(memTable(b, fd), 0, b.error);
  ok(!isOpen(fd), "the region fd is closed once mapped");
  equal(b.memory.regions.length, 1);
  equal(b.memory.find(0x10000, 4096), 0x10000);
  for (let i = 0; i < VHOST_QUEUES; i++) ringSetup(b, i);
  ok(b.vrings.every((v) => v.queue.ready));
  const kick = eventfd();
  const call = eventfd();
  equal(send(b, msg(Req.SET_VRING_KICK, [0n]), [kick])[0], 0);
  equal(send(b, msg(Req.SET_VRING_CALL, [0n]), [call])[0], 0);
  equal(b.vrings[0].kickFd, kick);
  ok(!b.vrings[0].running, "with protocol features a ring waits for SET_VRING_ENABLE");
  equal(send(b, msg(Req.SET_VRING_ENABLE, [0, 1]))[0], 0);
  ok(b.vrings[0].running);
  const [n, r] = send(b, msg(Req.GET_VRING_BASE, [0, 0]));
  equal(n, 20);
  deepEqual([r.getUint32(12, true), r.getUint32(16, true)], [0, 0]);
  ok(!b.vrings[0].running, "stopped");
  ok(!isOpen(kick), "its kick fd closed");
  b.reset();
  ok(!isOpen(call), "reset closes the call fd");
  equal(b.memory.regions.length, 0);
});

Deno.test("refused: bad ring sizes and indices, rings outside memory, fds that do not match the table", () => {
  const b = new VhostUserBackend();
  acceptAll(b);
  equal(send(b, msg(Req.SET_VRING_NUM, [0, 100]))[0], -1);
  match(b.error, /size 100/);
  equal(send(b, msg(Req.SET_VRING_NUM, [VHOST_QUEUES, 256]))[0], -1);
  match(b.error, /ring 2/);
  const fd = memfd();
  equal(memTable(b, fd), 0);
  equal(send(b, msg(Req.SET_VRING_NUM, [0, 256]))[0], 0);
  const outside = UVA + BigInt(GUEST_MEM_SIZE) - 16n;
  equal(send(b, msg(Req.SET_VRING_ADDR, [0, 0, outside, outside, outside, 0n]))[0], -1);
  match(b.error, /outside guest memory/);
  const lone = memfd();
  const two = [2, 0, 0n, 4096n, UVA, 0n, 0x100000n, 4096n, UVA + 0x100000n, 0n];
  equal(send(b, msg(Req.SET_MEM_TABLE, two), [lone])[0], -1);
  match(b.error, /2 regions came with 1 fds/);
  ok(!isOpen(lone), "the fd of a refused table is closed");
  equal(send(b, msg(Req.SET_VRING_KICK, [0n | 0x100n]))[0], -1, "no fd: polling is not offered");
  // A region longer than its file: its pages past the end would fault when read.
  const short = memfd();
  const long = [1, 0, 0n, BigInt(GUEST_MEM_SIZE), UVA, 4096n];
  equal(send(b, msg(Req.SET_MEM_TABLE, long), [short])[0], -1);
  match(
    b.error,
    new RegExp(`${GUEST_MEM_SIZE + 4096} bytes asked of a file of ${GUEST_MEM_SIZE} bytes`),
  );
  ok(!isOpen(short), "its fd is closed");
  b.reset();
});

Deno.test("guest memory is sealed against shrinking, so the front-end cannot fault tapir by cutting it; a file that cannot be sealed is taken still", () => {
  const b = new VhostUserBackend();
  const fd = memfd();
  const copy = sys.sysCheck(sys.fcntl(fd, sys.F_DUPFD_CLOEXEC, 0), "dup");
  equal(sys.fcntl(copy, sys.F_GET_SEALS) & sys.F_SEAL_SHRINK, 0, "not sealed before");
  equal(memTable(b, fd), 0, b.error);
  equal(sys.fcntl(copy, sys.F_GET_SEALS) & sys.F_SEAL_SHRINK, sys.F_SEAL_SHRINK);
  sys.close(copy);
  b.reset();
  // Sealed for good without the seal: mapped (QEMU's file backends cannot be sealed either).
  const unsealable = memfd(false);
  equal(memTable(b, unsealable), 0, b.error);
  b.reset();
});

Deno.test("descriptors a request does not take are closed at once", () => {
  const b = new VhostUserBackend();
  const stray = [eventfd(), eventfd()];
  equal(send(b, msg(Req.SET_OWNER), stray)[0], 0);
  ok(stray.every((fd) => !isOpen(fd)), "SET_OWNER takes none");
  acceptAll(b);
  equal(memTable(b, memfd()), 0);
  const kick = eventfd();
  const extra = eventfd();
  equal(send(b, msg(Req.SET_VRING_KICK, [1n]), [kick, extra])[0], 0);
  ok(isOpen(kick), "the kick fd is kept");
  ok(!isOpen(extra), "a second fd is not");
  b.reset();
  ok(!isOpen(kick));
});
