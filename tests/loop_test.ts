import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { Loop, SPIN_SHARE_MIN, spinShareNext, Timer } from "../lib/loop.ts";
import * as sys from "../lib/sys/mod.ts";

function pipe(flags = sys.O_NONBLOCK | sys.O_CLOEXEC): [number, number] {
  const fds = new Int32Array(2);
  sys.sysCheck(sys.pipe2(fds, flags), "pipe2");
  return [fds[0], fds[1]];
}

/**
 * A worker running `tests/fixtures/loop_peer.ts` with `message`; resolves
 * when it is done, rejects if it fails (rather than leave the loop waiting).
 */
function loopPeer(message: Record<string, unknown>): Promise<void> {
  const peer = new Worker(new URL("./fixtures/loop_peer.ts", import.meta.url), {
    type: "module",
  });
  return new Promise<void>((resolve, reject) => {
    peer.onmessage = () => {
      peer.terminate();
      resolve();
    };
    peer.onerror = (e) => {
      e.preventDefault();
      peer.terminate();
      reject(new Error(`loop peer failed: ${e.message}`));
    };
    peer.postMessage(message);
  });
}

/** Runs `body` with a fresh loop, closing it afterwards. */
async function withLoop(body: (loop: Loop) => Promise<void>): Promise<void> {
  const loop = new Loop();
  try {
    await body(loop);
  } finally {
    loop.close();
  }
}

Deno.test("timers fire in deadline order, ties in arming order", () =>
  withLoop(async (loop) => {
    const fired: string[] = [];
    const mark = (name: string) => () => fired.push(name);
    loop.after(30, mark("30ms"));
    loop.after(10, mark("10ms-a"));
    loop.after(20, mark("20ms"));
    loop.after(10, mark("10ms-b"));
    loop.after(0, mark("0ms"));
    loop.after(40, () => loop.stop("done"));
    equal(await loop.run(), "done");
    deepEqual(fired, ["0ms", "10ms-a", "10ms-b", "20ms", "30ms"]);
  }));

Deno.test("a re-armed timer moves to its new deadline; a disarmed one never fires", () =>
  withLoop(async (loop) => {
    const fired: string[] = [];
    const moved = new Timer(() => fired.push("moved"));
    const cancelled = new Timer(() => fired.push("cancelled"));
    loop.arm(moved, 5);
    loop.arm(cancelled, 10);
    loop.after(15, () => fired.push("fixed"));
    loop.arm(moved, 25); // later than "fixed" now
    loop.disarm(cancelled);
    equal(cancelled.armed, false);
    loop.after(40, () => loop.stop());
    await loop.run();
    deepEqual(fired, ["fixed", "moved"]);
    equal(loop.armedTimers, 0);
  }));

Deno.test("a timer re-arming itself at delay 0 runs once per turn, not in a spin", () =>
  withLoop(async (loop) => {
    let fires = 0;
    const t = new Timer(() => {
      fires++;
      if (fires < 50) loop.arm(t, 0);
      else loop.stop();
    });
    loop.arm(t, 0);
    await loop.run();
    equal(fires, 50);
    ok(loop.stats.turns >= 50, `one firing per turn (turns: ${loop.stats.turns})`);
  }));

Deno.test("readiness dispatches to the handler of the fd's type with the fd's index", () =>
  withLoop(async (loop) => {
    const seen: string[] = [];
    const [r1, w1] = pipe();
    const [r2, w2] = pipe();
    const buf = new Uint8Array(16);
    const typeA = loop.defineType("a", (index, events) => {
      seen.push(`a:${index}:${events & sys.EPOLLIN ? "in" : "?"}`);
      sys.read(r1, buf);
    });
    const typeB = loop.defineType("b", (index) => {
      seen.push(`b:${index}`);
      sys.read(r2, buf);
      loop.stop();
    });
    equal(loop.typeName(typeB), "b");
    equal(loop.add(r1, sys.EPOLLIN, typeA, 41), 0);
    equal(loop.add(r2, sys.EPOLLIN, typeB, 0xfffffffe), 0);
    equal(loop.add(r2, sys.EPOLLIN, typeB, 1), -sys.Errno.EEXIST);
    sys.write(w1, new Uint8Array([1]));
    loop.after(5, () => sys.write(w2, new Uint8Array([2])));
    await loop.run();
    deepEqual(seen, ["a:41:in", `b:${0xfffffffe}`]);
    for (const fd of [r1, w1, r2, w2]) sys.close(fd);
  }));

Deno.test("modify retags an fd and remove stops its events", () =>
  withLoop(async (loop) => {
    const seen: number[] = [];
    const [r, w] = pipe();
    const type = loop.defineType("p", (index) => seen.push(index));
    loop.add(r, sys.EPOLLIN, type, 1);
    equal(loop.modify(r, sys.EPOLLIN, type, 2), 0);
    sys.write(w, new Uint8Array([1])); // never read: stays readable, level-triggered
    let atRemove = -1;
    loop.after(5, () => {
      equal(loop.remove(r), 0);
      atRemove = seen.length;
      loop.after(10, () => loop.stop());
    });
    await loop.run();
    ok(atRemove > 0, "events arrived before remove");
    ok(seen.every((i) => i === 2), `all events carry the new tag: ${seen.slice(0, 5)}`);
    equal(seen.length, atRemove, "no event after remove");
    sys.close(r);
    sys.close(w);
  }));

Deno.test("deferred work runs once at the end of its turn; turn hooks run every turn", () =>
  withLoop(async (loop) => {
    const log: string[] = [];
    let turns = 0;
    loop.onTurn(() => turns++);
    const [r, w] = pipe();
    const type = loop.defineType("p", () => {
      sys.read(r, new Uint8Array(8));
      log.push("event");
      loop.defer(() => {
        log.push("deferred");
        loop.defer(() => log.push("deferred by deferred"));
      });
    });
    loop.add(r, sys.EPOLLIN, type, 0);
    sys.write(w, new Uint8Array([1]));
    loop.after(20, () => loop.stop());
    await loop.run();
    deepEqual(log, ["event", "deferred", "deferred by deferred"]);
    equal(turns, loop.stats.turns);
    sys.close(r);
    sys.close(w);
  }));

Deno.test("an idle loop lets a child process's exit status resolve", () =>
  withLoop(async (loop) => {
    const child = new Deno.Command("sleep", { args: ["0.2"] }).spawn();
    child.status.then((s) => loop.stop(`child exited ${s.code}`));
    const t0 = performance.now();
    equal(await loop.run(), "child exited 0");
    ok(performance.now() - t0 < 5000);
    ok(loop.stats.asyncWaits >= 1, "it waited on another thread");
  }));

Deno.test("a busy loop still yields to Deno's event loop", () =>
  withLoop(async (loop) => {
    // An fd that is always readable keeps every turn busy.
    const [r, w] = pipe();
    sys.write(w, new Uint8Array([1]));
    let events = 0;
    loop.add(r, sys.EPOLLIN, loop.defineType("busy", () => events++), 0);
    const id = setTimeout(() => loop.stop("macrotask ran"), 30);
    equal(await loop.run(), "macrotask ran");
    clearTimeout(id);
    ok(events > 100, `the loop was busy (${events} events)`);
    sys.close(r);
    sys.close(w);
  }));

Deno.test("stop hooks run newest first, also when a handler throws", () =>
  withLoop(async (loop) => {
    const order: string[] = [];
    loop.onStop(() => order.push("first registered"));
    loop.onStop(() => order.push("second registered"));
    loop.after(1, () => {
      throw new Error("bug in a handler");
    });
    await rejects(loop.run(), /bug in a handler/);
    deepEqual(order, ["second registered", "first registered"]);
  }));

Deno.test("SIGTERM stops the loop and runs the flush hooks before the process exits", async () => {
  const dir = await Deno.makeTempDir();
  const out = `${dir}/flushed`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./fixtures/loop_signal.ts", import.meta.url).pathname, out],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  equal(new TextDecoder().decode(first.value), "ready\n");
  child.kill("SIGTERM");
  const status = await child.status;
  reader.releaseLock();
  await child.stdout.cancel();
  equal(status.code, 0);
  equal(await Deno.readTextFile(out), "flushed after SIGTERM\n");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("post() from a promise callback wakes an idle loop and runs in its next turn", () =>
  withLoop(async (loop) => {
    const order: string[] = [];
    loop.onTurn(() => order.push("turn"));
    // Nothing else would wake the loop for an hour.
    const hour = loop.after(3_600_000, () => order.push("timer"));
    setTimeout(() =>
      loop.post(() => {
        order.push("posted");
        loop.stop();
      }), 20);
    const t0 = performance.now();
    await loop.run();
    ok(performance.now() - t0 < 1000, "woken at once");
    const at = order.indexOf("posted");
    ok(at > 0, `posted work ran: ${order}`);
    equal(order[at - 1], "turn", "inside a turn: right after that turn's hooks");
    ok(!order.includes("timer"));
    loop.disarm(hour);
  }));

Deno.test("the share of short idle periods moves a sixteenth of the way per period", () => {
  equal(spinShareNext(1, true), 1);
  equal(spinShareNext(1, false), 15 / 16);
  equal(spinShareNext(0, true), 1 / 16);
  let share = 1;
  let n = 0;
  while (share >= SPIN_SHARE_MIN) share = spinShareNext(share, false), n++;
  equal(n, 11, "eleven long idle periods in a row stop the spinning");
  while (share < SPIN_SHARE_MIN) share = spinShareNext(share, true), n++;
  equal(n, 12, "and at that edge one short one brings it back");
});

Deno.test("events a few milliseconds apart stop the spinning; the idle waits are counted", () =>
  withLoop(async (loop) => {
    const [r, w] = pipe();
    const buf = new Uint8Array(16);
    let events = 0;
    let turnsAt20 = 0;
    loop.add(
      r,
      sys.EPOLLIN,
      loop.defineType("paced", () => {
        sys.read(r, buf);
        if (++events === 20) turnsAt20 = loop.stats.turns;
        if (events === 30) loop.stop("done");
      }),
      0,
    );
    ok(!loop.spins, "not running yet");
    // A writer on Deno's own timers, 3 ms apart: each event ends an idle wait.
    const id = setInterval(() => sys.write(w, buf, 1), 3);
    await loop.run();
    clearInterval(id);
    ok(!loop.spins, "the loop no longer spins");
    ok(loop.stats.idleEnds >= 25, `idle periods ended by events: ${loop.stats.idleEnds}`);
    equal(loop.stats.idleEndsShort, 0, "none of them within a spin");
    // Once spinning stopped, an event costs about two turns (the event's,
    // one poll after it), not a hundred microseconds of polls.
    const turns = loop.stats.turns - turnsAt20;
    ok(turns < 10 * 4, `turns for the last 10 events: ${turns}`);
    sys.close(r);
    sys.close(w);
  }));

Deno.test("a one-way stream from one fd, events tens of microseconds apart, stops the spinning and is gathered", () =>
  withLoop(async (loop) => {
    const [r, w] = pipe();
    const buf = new Uint8Array(4096);
    loop.add(r, sys.EPOLLIN, loop.defineType("stream", () => void sys.read(r, buf)), 0);
    // Every idle period here is short: a spin would catch the next event,
    // but at the cost of the whole gap, each time.
    const done = loopPeer({ mode: "stream", fd: w, count: 3000, gapUs: 30 });
    done.then(() => loop.post(() => loop.stop("done")));
    equal(await loop.run(), "done");
    ok(loop.stats.idleEndsStream > 0, `stream idle ends: ${loop.stats.idleEndsStream}`);
    ok(!loop.spins, "the loop no longer spins");
    ok(loop.stats.gathers > 0, `pauses to let the stream gather: ${loop.stats.gathers}`);
    // Between bursts the loop waits on its own thread, handing the wait to
    // another only to yield to Deno's event loop.
    const { streamWaits, asyncWaits } = loop.stats;
    ok(streamWaits > asyncWaits, `stream waits ${streamWaits}, async waits ${asyncWaits}`);
    sys.close(r);
    sys.close(w);
  }));

Deno.test("work posted from Deno's event loop, one post at a time, is never taken for a stream", () =>
  withLoop(async (loop) => {
    // Each post arrives through the wake-up eventfd, always the same fd; a
    // blocking wait would hold up the timer that makes the next post.
    let posts = 0;
    const next = () =>
      loop.post(() => {
        if (++posts === 40) loop.stop("done");
        else setTimeout(next, 0);
      });
    setTimeout(next, 0);
    equal(await loop.run(), "done");
    ok(loop.stats.idleEnds >= 30, `idle periods ended by a post: ${loop.stats.idleEnds}`);
    equal(loop.stats.idleEndsStream, 0, "none of them a stream's");
    equal(loop.stats.streamWaits, 0, "and the loop never blocked its thread waiting");
  }));

Deno.test("a relayed ping-pong (request on one fd, reply on another) is never taken for a stream", () =>
  withLoop(async (loop) => {
    const blocking = sys.O_CLOEXEC;
    const [requestR, requestW] = pipe();
    const [forwardedR, forwardedW] = pipe(blocking);
    const [replyR, replyW] = pipe();
    const [returnedR, returnedW] = pipe(blocking);
    const one = new Uint8Array(1);
    const count = 2000;
    let replies = 0;
    loop.add(
      requestR,
      sys.EPOLLIN,
      loop.defineType("guest", () => {
        if (sys.read(requestR, one, 1) === 1) sys.write(forwardedW, one, 1);
      }),
      0,
    );
    loop.add(
      replyR,
      sys.EPOLLIN,
      loop.defineType("host", () => {
        if (sys.read(replyR, one, 1) !== 1) return;
        sys.write(returnedW, one, 1);
        if (++replies === count) loop.stop("done");
      }),
      0,
    );
    const done = loopPeer({
      mode: "pingpong",
      request: requestW,
      forwarded: forwardedR,
      reply: replyW,
      returned: returnedR,
      count,
    });
    equal(await loop.run(), "done");
    await done;
    // Many round trips find the loop idle; others find it still busy with the last.
    ok(loop.stats.idleEnds >= 50, `idle ends: ${loop.stats.idleEnds}`);
    equal(loop.stats.idleEndsStream, 0, "every event came from the other fd than the last");
    equal(loop.stats.gathers, 0, "and the loop never paused");
    equal(loop.stats.streamWaits, 0, "nor blocked its thread waiting");
    for (
      const fd of [requestR, requestW, forwardedR, forwardedW, replyR, replyW, returnedR, returnedW]
    ) {
      sys.close(fd);
    }
  }));
