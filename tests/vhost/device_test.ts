/**
 * The vhost-user network device under a whole in-process tapir, driven by a
 * front-end written here: guest memory is a memfd that both sides map, the
 * rings are built by hand in it, kicks and interrupts are real eventfds, and
 * tapir's reactor runs as it does in `tapir vm --vhost-user`. Frames go in
 * through the transmit ring (their virtio-net header and bytes split over
 * buffers every way a guest may split them) and tapir's answers come back in
 * the receive ring.
 */
import { deepEqual, equal, ok } from "node:assert/strict";
import { ArpOp } from "../../lib/packet/arp.ts";
import { VHOST_TX_RING } from "../../lib/vhost/device.ts";
import { arpFrame, GUEST_MAC, NET, v4 } from "../services/harness.ts";
import { GPA, GUEST_MEM_SIZE } from "./frontend.ts";
import { Frontend, HDR, RING, until, withHeader } from "./guest.ts";

const GATEWAY = NET.ip4!.gateway;
const GUEST_IP = v4("192.0.2.2");
const ARP_REQUEST = arpFrame(ArpOp.Request, GUEST_MAC, GUEST_IP, new Uint8Array(6), GATEWAY);

/** Every way to cut header + ARP request: header alone, the frame over 1..8 buffers. */
function cutsToTry(): number[][] {
  const total = HDR + ARP_REQUEST.length;
  const out: number[][] = [[], [HDR]];
  for (let at = 1; at < total; at++) out.push([at]);
  for (let n = 2; n <= 8; n++) {
    const cuts = [HDR];
    for (let k = 1; k < n; k++) cuts.push(HDR + Math.floor(k * ARP_REQUEST.length / n));
    out.push(cuts);
  }
  return out;
}

Deno.test("ARP requests split every way over transmit buffers, direct and indirect, are answered in the receive ring, padded to 60", async () => {
  const f = new Frontend();
  try {
    const shapes = cutsToTry();
    let answered = 0;
    for (const [k, cuts] of shapes.entries()) {
      const indirect = k % 2 === 1;
      // A receive chain cut small too: header and the 60-byte frame over three buffers.
      f.rx.offerWritable([5, 20, 100]);
      f.kick(f.rxKick);
      const head = f.send(withHeader(ARP_REQUEST), cuts, indirect);
      const txUsed = f.tx.usedIdx;
      f.kick(f.txKick);
      await until(
        `the reply to shape ${cuts} (${indirect ? "indirect" : "direct"})`,
        () => f.rx.usedIdx === answered + 1,
      );
      answered++;
      const [rxHead, written] = f.rx.used(answered - 1);
      equal(written, HDR + 60, "header and a frame padded to 60 bytes");
      const got = f.rx.readChain(rxHead, written);
      equal(got[10] | (got[11] << 8), 1, "num_buffers");
      const frame = got.subarray(HDR);
      equal((frame[20] << 8) | frame[21], ArpOp.Reply, "an ARP reply");
      deepEqual([...frame.subarray(32, 38)], [...GUEST_MAC], "to the guest's MAC");
      ok(frame.subarray(42).every((b) => b === 0), "zero padding");
      equal(f.tx.usedIdx, (txUsed + 1) & 0xffff, "the transmit chain is given back");
      deepEqual(f.tx.used(txUsed), [head, 0], "with nothing written");
    }
    equal(answered, shapes.length);
    ok(f.calls(f.rxCall) > 0, "the guest was interrupted for its receive ring");
    ok(f.calls(f.txCall) > 0, "and for its transmit ring");
    equal(f.dev.stats.framesToHost, shapes.length);
    equal(f.dev.stats.badFrames, 0);
  } finally {
    await f.close();
  }
});

Deno.test("a transmit descriptor outside guest memory is not read, is counted, and the next frame is served", async () => {
  const f = new Frontend();
  try {
    f.rx.offerWritable([2048]);
    f.kick(f.rxKick);
    // A chain whose second buffer points past the end of guest memory.
    const good = f.tx.alloc(HDR);
    f.tx.chain(RING - 2, [{ addr: good, len: HDR }, { addr: GPA + GUEST_MEM_SIZE - 8, len: 64 }]);
    f.tx.offer(RING - 2);
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the reply to the good frame", () => f.rx.usedIdx === 1);
    const tx = f.dev.control.vrings[VHOST_TX_RING].queue.stats;
    equal(tx.badChains, 1, "the bad chain counted");
    equal(f.tx.usedIdx, 2, "both chains given back");
    deepEqual(f.tx.used(0), [RING - 2, 0], "the bad one unread");
    equal(f.dev.stats.framesToHost, 1, "only the good frame reached tapir");
  } finally {
    await f.close();
  }
});

Deno.test("with the receive ring empty a reply is not delivered; once the guest adds buffers and kicks, the next one is", async () => {
  const f = new Frontend();
  try {
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the request to be taken", () => f.tx.usedIdx === 1);
    await until(
      "the reply counted undelivered",
      () => f.tapir.arp.stats.sent === 1 && f.tapir.tap.stats.undelivered > 0,
    );
    equal(f.rx.usedIdx, 0, "no receive buffer: nothing written");
    ok(f.dev.rx.stats.noRoom > 0);
    f.rx.offerWritable([1024]);
    f.kick(f.rxKick);
    f.send(withHeader(ARP_REQUEST), [HDR]);
    f.kick(f.txKick);
    await until("the reply after the kick", () => f.rx.usedIdx === 1);
  } finally {
    await f.close();
  }
});
