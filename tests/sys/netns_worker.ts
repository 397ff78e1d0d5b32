/// <reference lib="deno.worker" />
// Test fixture: runs on its own thread, unshares a network namespace, reports
// the namespace links, then goes back with setns through a saved fd.
import * as sys from "../../lib/sys/mod.ts";

const before = Deno.readLinkSync("/proc/thread-self/ns/net");
const saved = sys.sysCheck(
  sys.open("/proc/thread-self/ns/net", sys.O_RDONLY | sys.O_CLOEXEC),
  "open",
);
sys.sysCheck(sys.unshare(sys.CLONE_NEWNET), "unshare");
const inside = Deno.readLinkSync("/proc/thread-self/ns/net");
const setns = sys.setns(saved, sys.CLONE_NEWNET);
const back = Deno.readLinkSync("/proc/thread-self/ns/net");
sys.close(saved);
self.postMessage({ before, inside, back, setns });
