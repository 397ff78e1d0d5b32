/**
 * The split virtqueue from the device side, over guest memory made of plain
 * buffers: a test plays the guest's driver (writes descriptors and the
 * available ring, reads the used ring) exactly as a virtio driver lays them
 * out, so every rule the device checks can be broken on purpose.
 */
import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { AddrSpace, GuestMemory } from "../../lib/vhost/memory.ts";
import {
  DescChain,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
} from "../../lib/vhost/virtqueue.ts";
import {
  AVAIL_OFF,
  type Buf,
  BUF_OFF,
  DESC_OFF,
  GPA,
  REGION_SIZE,
  RING_SIZE,
  RingDriver as Driver,
  USED_OFF,
  UVA,
} from "./frontend.ts";

/** `n` buffers of `len` bytes each, back to back from `BUF_OFF`. */
function bufs(n: number, len: number, write = false): Buf[] {
  return Array.from({ length: n }, (_, k) => ({ addr: GPA + BUF_OFF + k * 4096, len, write }));
}

Deno.test("an address range is found only wholly inside one region, in the space asked", () => {
  const mem = new GuestMemory();
  const bytes = new Uint8Array(4096);
  mem.add({ guestAddr: 0x1000, userAddr: 0x9000, bytes });
  equal(mem.find(0x1000, 4096), 0);
  equal(mem.region, bytes);
  equal(mem.find(0x1ff0, 16), 0xff0);
  equal(mem.find(0x1ff0, 17), -1, "past the end");
  equal(mem.find(0x0ff0, 32), -1, "before the start");
  equal(mem.find(0x9010, 4, AddrSpace.USER), 0x10);
  equal(mem.find(0x9010, 4), -1, "a user address is not a guest one");
  equal(mem.find(-1, 4), -1);
  throws(() => mem.add({ guestAddr: 0x1800, userAddr: 0x20000, bytes }), /overlap/);
  throws(() => mem.add({ guestAddr: 0x8000, userAddr: 0x9800, bytes }), /overlap/);
});

Deno.test("a ring is mapped only with a power-of-two size and all its parts in memory", () => {
  const d = new Driver();
  ok(!d.queue.map(6, UVA, UVA + AVAIL_OFF, UVA + USED_OFF), "size 6");
  ok(!d.queue.ready);
  ok(!d.queue.map(RING_SIZE, UVA, UVA + AVAIL_OFF, UVA + REGION_SIZE - 8), "used ring cut off");
  ok(!d.queue.map(RING_SIZE, GPA, GPA + AVAIL_OFF, GPA + USED_OFF), "guest, not user, addresses");
  ok(d.queue.map(RING_SIZE, UVA, UVA + AVAIL_OFF, UVA + USED_OFF));
});

Deno.test("a frame split over header and data buffers is listed in order, then given back once per batch", () => {
  const d = new Driver();
  const chain = new DescChain();
  const lens: number[][] = [];
  for (const n of [1, 2, 8]) {
    d.offer(d.chain(0, bufs(n, 100 + n))); // the table has 8 entries: one chain at a time
    equal(d.queue.available(), 1);
    ok(d.queue.pop(chain));
    equal(chain.head, 0);
    equal(chain.readable, chain.count);
    equal(chain.offs[chain.count - 1], BUF_OFF + (chain.count - 1) * 4096);
    lens.push([...chain.lens.subarray(0, chain.count)]);
    d.queue.push(chain.head, 0);
  }
  deepEqual(lens, [[101], [102, 102], Array(8).fill(108)]);
  equal(d.usedIdx, 0, "nothing visible before publish");
  ok(d.queue.publish(), "the guest did not ask to go without interrupts");
  equal(d.usedIdx, 3);
  equal(d.queue.publish(), false, "nothing new: no interrupt");
  equal(d.queue.stats.chains, 3);
});

Deno.test("a receive chain lists readable then writable buffers and reports the bytes written", () => {
  const d = new Driver();
  const chain = new DescChain();
  d.offer(
    d.chain(0, [
      ...bufs(1, 12),
      ...bufs(3, 1500, true).map((b) => ({ ...b, addr: b.addr + 0x8000 })),
    ]),
  );
  ok(d.queue.pop(chain));
  equal(chain.readable, 1);
  equal(chain.count, 4);
  equal(chain.readLen, 12);
  equal(chain.writeLen, 4500);
  d.queue.push(chain.head, 1514);
  d.queue.publish();
  deepEqual(d.used(0), [0, 1514]);
});

Deno.test("broken chains are given back unread with length 0 and counted", () => {
  const cases: [string, (d: Driver) => number][] = [
    ["order", (d) => d.chain(0, [{ addr: GPA + BUF_OFF, len: 64, write: true }, ...bufs(1, 64)])],
    ["range", (d) => d.chain(0, [{ addr: GPA + REGION_SIZE - 10, len: 64 }])],
    ["range", (d) => d.chain(0, [{ addr: 0x10, len: 64 }])],
    ["index", (d) => {
      d.desc(0, GPA + BUF_OFF, 64, VIRTQ_DESC_F_NEXT, RING_SIZE);
      return 0;
    }],
    ["loop", (d) => {
      d.desc(0, GPA + BUF_OFF, 64, VIRTQ_DESC_F_NEXT, 1);
      d.desc(1, GPA + BUF_OFF, 64, VIRTQ_DESC_F_NEXT, 0);
      return 0;
    }],
    ["indirect", (d) => {
      d.desc(0, GPA + 0x3000, 24, VIRTQ_DESC_F_INDIRECT); // not a whole number of entries
      return 0;
    }],
    ["indirect", (d) => {
      d.desc(0, GPA + 0x3000, 16, VIRTQ_DESC_F_INDIRECT);
      d.desc(0, GPA + 0x3000, 16, VIRTQ_DESC_F_INDIRECT, 0, 0x3000); // nested
      return 0;
    }],
  ];
  for (const [why, build] of cases) {
    const d = new Driver();
    const chain = new DescChain();
    d.offer(build(d));
    equal(d.queue.pop(chain), false, why);
    equal(d.queue.lastError, why);
    equal(chain.head, -1);
    equal(d.queue.stats.badChains, 1);
    d.queue.publish();
    deepEqual(d.used(0), [0, 0], `${why}: given back, nothing written`);
    equal(d.queue.available(), 0);
  }
});

Deno.test("an indirect table's buffers are listed like a direct chain's", () => {
  const d = new Driver();
  const chain = new DescChain();
  const table = 0x3000;
  const b = bufs(5, 300);
  b.forEach((x, k) => d.desc(k, x.addr, x.len, k < 4 ? VIRTQ_DESC_F_NEXT : 0, k + 1, table));
  d.desc(2, GPA + table, 5 * 16, VIRTQ_DESC_F_INDIRECT);
  d.offer(2);
  ok(d.queue.pop(chain));
  equal(chain.head, 2);
  equal(chain.count, 5);
  equal(chain.readLen, 1500);
});

Deno.test("with EVENT_IDX the guest is interrupted only when the used index passes its used_event", () => {
  const d = new Driver(true);
  const chain = new DescChain();
  const usedEventAt = AVAIL_OFF + 4 + 2 * RING_SIZE;
  d.view.setUint16(usedEventAt, 2, true); // "interrupt me once entry 2 is used"
  for (let k = 0; k < 4; k++) d.offer(d.chain(k, bufs(1, 10)));
  const notified: boolean[] = [];
  while (d.queue.pop(chain)) {
    d.queue.push(chain.head, 0);
    notified.push(d.queue.publish());
  }
  deepEqual(notified, [false, false, true, false]);
  d.queue.wantKick();
  equal(d.view.getUint16(USED_OFF + 4 + 8 * RING_SIZE, true), 4, "avail_event: the next to read");
});

Deno.test("without EVENT_IDX the guest's NO_INTERRUPT flag is honoured", () => {
  const d = new Driver();
  const chain = new DescChain();
  d.view.setUint16(AVAIL_OFF, VIRTQ_AVAIL_F_NO_INTERRUPT, true);
  d.offer(d.chain(0, bufs(1, 10)));
  ok(d.queue.pop(chain));
  d.queue.push(chain.head, 0);
  equal(d.queue.publish(), false);
  equal(d.usedIdx, 1, "published all the same");
});

Deno.test("indices wrap at 2^16 and a remapped ring resumes at the used index in memory", () => {
  const d = new Driver();
  const chain = new DescChain();
  d.availIdx = 0xfffe;
  d.view.setUint16(USED_OFF + 2, 0xfffe, true);
  ok(d.queue.map(RING_SIZE, UVA + DESC_OFF, UVA + AVAIL_OFF, UVA + USED_OFF));
  d.queue.setBase(0xfffe);
  for (let k = 0; k < 3; k++) d.offer(d.chain(k, bufs(1, 10)));
  equal(d.queue.available(), 3);
  while (d.queue.pop(chain)) d.queue.push(chain.head, 7);
  d.queue.publish();
  equal(d.usedIdx, 1);
  equal(d.queue.lastAvail, 1);
  deepEqual(d.used(0xffff), [1, 7]);
});

Deno.test("an available index more than a ring ahead is taken as no chains, and counted", () => {
  const d = new Driver();
  const chain = new DescChain();
  d.view.setUint16(AVAIL_OFF + 2, RING_SIZE + 1, true);
  equal(d.queue.available(), 0);
  equal(d.queue.pop(chain), false);
  ok(d.queue.stats.badIndex >= 1);
});
