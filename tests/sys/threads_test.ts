import { deepEqual, equal, ok } from "node:assert/strict";
import { onEveryThread } from "../../lib/sys/threads.ts";

const GETPID = 39; // x86-64: succeeds everywhere, changes nothing
const NO_SUCH_CALL = 4000; // fails with ENOSYS on every thread

Deno.test({
  name: "calls run on every thread, and each thread's failures are counted",
  ignore: Deno.build.arch !== "x86_64",
  async fn() {
    // A worker makes sure there are threads besides this one and Deno's own.
    const w = new Worker("data:text/javascript,onmessage=()=>postMessage(1)", { type: "module" });
    try {
      w.postMessage(0);
      await new Promise((r) => w.onmessage = r);
      const threads = [...Deno.readDirSync("/proc/self/task")].length;
      const ok1 = onEveryThread([{ nr: GETPID, args: [] }]);
      ok(ok1 !== null && typeof ok1 === "object");
      equal(ok1.missed, 0);
      deepEqual(ok1.failures, [0]);
      ok(ok1.threads >= threads, `${ok1.threads} of ${threads} threads ran it`);
      const bad = onEveryThread([{ nr: GETPID, args: [] }, {
        nr: NO_SUCH_CALL,
        args: [new Uint8Array(16)],
      }]);
      ok(bad !== null && typeof bad === "object");
      deepEqual(bad.failures, [0, bad.threads], "the second call failed once per thread");
    } finally {
      w.terminate();
    }
  },
});
