/**
 * The translator's own loop duties: how reading the guest shares a turn
 * with everything else.
 */
import { equal, ok } from "node:assert/strict";
import { Tapir } from "../lib/tapir.ts";
import { type FrameBatch, TAP_HEADROOM, type TapBackend } from "../lib/tap/tap.ts";
import * as sys from "../lib/sys/mod.ts";
import { NET } from "./services/harness.ts";

/**
 * A guest that never stops sending: its fd (an eventfd) is always
 * readable, and every read fills the batch with frames of an EtherType
 * nobody serves (dropped and counted). Counts the reads.
 */
class FloodingBackend implements TapBackend {
  readonly name = "flooding";
  readonly fd = sys.sysCheck(sys.eventfd(1, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
  readonly checksumOffload = false;
  readonly gsoTcp = false;
  sendBlocked = false;
  reads = 0;
  frames = 0;
  /** Reads since the last turn ended (reset by the test's turn hook). */
  readsThisTurn = 0;

  receive(batch: FrameBatch, limit = batch.capacity): number {
    this.reads++;
    // Unbounded, the first full read would go on for ever: fail instead.
    if (++this.readsThisTurn > 100) throw new Error("the guest was read 100 times in one turn");
    const n = Math.min(limit, batch.capacity);
    for (let i = 0; i < n; i++) {
      const f = batch.slots[i];
      f.fill(0xff, TAP_HEADROOM, TAP_HEADROOM + 12);
      f[TAP_HEADROOM + 12] = 0x88; // local experimental EtherType 0x88b5
      f[TAP_HEADROOM + 13] = 0xb5;
      batch.setPlain(i, 60);
    }
    batch.count = n;
    this.frames += n;
    return n;
  }

  send(_batch: FrameBatch, count: number): number {
    return count;
  }
}

Deno.test("a guest that never stops sending does not hold the loop: timers run, reads come in rounds", async () => {
  const backend = new FloodingBackend();
  const t = new Tapir(NET, backend);
  try {
    t.start();
    const readsPerTurn: number[] = [];
    let before = 0;
    t.loop.onTurn(() => {
      readsPerTurn.push(backend.reads - before);
      before = backend.reads;
      backend.readsThisTurn = 0;
    });
    // Without a bound on the guest's share this timer would never fire.
    t.loop.after(20, () => t.loop.stop("timer"));
    equal(await t.loop.run(), "timer");
    ok(readsPerTurn.length >= 3, `turns: ${readsPerTurn}`);
    // A turn: 16 full batches when the fd is reported, 16 more deferred to
    // the turn's end (the hook counting them runs in between, so counts shift).
    for (const reads of readsPerTurn) ok(reads <= 32, `reads per turn: ${readsPerTurn}`);
    ok(backend.reads > 0, "the guest was read");
    equal(t.input.stats.framesToHost, backend.frames, "every frame read went to the dispatcher");
  } finally {
    t.loop.close();
    sys.close(backend.fd);
  }
});
