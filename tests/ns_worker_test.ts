/**
 * The namespace's set-up (`lib/ns.ts`), from the main thread (`NsHere`) or
 * from a worker (`NsWorker`), takes the command together with the set-up
 * (`lib/modes/ns.ts` asks both at once); these check that neither ever runs
 * the command, or makes sockets, outside a namespace it has set up, and that
 * the main thread always comes back to its own namespace.
 */
import { equal, match, notEqual, ok, rejects } from "node:assert/strict";
import { NsHere, type NsSetup, NsWorker } from "../lib/ns.ts";
import * as sys from "../lib/sys/mod.ts";
import { pathExists } from "./helpers/tapir.ts";

const MAIN_URL = new URL("../main.ts", import.meta.url).href;

/** Runs `body` with a fresh worker and a temporary directory; ends both. */
async function withWorker(body: (w: NsWorker, dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tapir-nsworker-" });
  const w = new NsWorker(MAIN_URL);
  try {
    await body(w, dir);
  } finally {
    w.terminate();
    await Deno.remove(dir, { recursive: true });
  }
}

/** A set-up of a tap `tap0` in `target`, without addresses. */
function setupIn(target: NsSetup["target"]): NsSetup {
  return { target, ifname: "tap0", configNet: true, mtu: 1500, addresses: [], routes: [] };
}

Deno.test("ns worker: a command asked right after a set-up that fails does not run", () =>
  withWorker(async (w, dir) => {
    const marker = `${dir}/ran`;
    const setup = w.setup(setupIn({ kind: "path", path: `${dir}/no-such-namespace` }));
    const spawned = w.spawn(["touch", marker]);
    await rejects(setup, /no-such-namespace/);
    await rejects(spawned, (err: Error) => {
      match(err.message, /run touch: the namespace is not set up/);
      return true;
    });
    equal(w.commandExited, false);
    equal(await pathExists(marker), false, "the command ran although the set-up failed");
  }));

Deno.test("ns worker: sockets and port scans are refused before the set-up", () =>
  withWorker(async (w) => {
    await rejects(w.sockets(4, 2), /sockets: the namespace is not set up/);
    await rejects(w.scanTcp(), /scan: the namespace is not set up/);
    await rejects(w.scanUdp(), /scan: the namespace is not set up/);
  }));

/** The calling thread's network namespace. */
const ownNs = () => Deno.readLinkSync("/proc/thread-self/ns/net");

Deno.test("ns here: a set-up that fails leaves this thread in its own namespace, and nothing runs", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-nshere-" });
  const here = NsHere.open();
  ok(here !== null, "root may leave its namespace and come back");
  const before = ownNs();
  try {
    await rejects(here.setup(setupIn({ kind: "path", path: `${dir}/none` })), /none/);
    equal(ownNs(), before);
    await rejects(here.spawn(["touch", `${dir}/ran`]), /run touch: the namespace is not set up/);
    equal(await pathExists(`${dir}/ran`), false, "the command ran although the set-up failed");
  } finally {
    here.terminate();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ns here: the command runs in the new namespace, this thread stays in its own; no worker, no sockets", async () => {
  const here = NsHere.open()!;
  const before = ownNs();
  try {
    const dev = await here.setup(setupIn({ kind: "new" }));
    try {
      equal(ownNs(), before);
      equal(dev.ifname, "tap0");
      const out = await Deno.makeTempFile();
      await here.spawn(["sh", "-c", `readlink /proc/self/ns/net > ${out}; exit 3`]);
      equal(ownNs(), before);
      // No thread was made inside (a thread starts in its creator's namespace).
      for (const t of Deno.readDirSync("/proc/self/task")) {
        equal(Deno.readLinkSync(`/proc/self/task/${t.name}/ns/net`), before, `thread ${t.name}`);
      }
      const code = await new Promise((resolve) => here.onCommandExit(resolve));
      equal(code, 3);
      equal(here.commandExited, true);
      const commandNs = (await Deno.readTextFile(out)).trim();
      await Deno.remove(out);
      match(commandNs, /^net:\[\d+\]$/);
      notEqual(commandNs, before);
      await rejects(here.sockets(4, 1), /sockets: no worker in the namespace/);
      await rejects(here.scanTcp(), /scan: no worker in the namespace/);
    } finally {
      sys.close(dev.tapFd);
    }
  } finally {
    here.terminate();
  }
});
