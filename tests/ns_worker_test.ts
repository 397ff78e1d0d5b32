/**
 * The namespace worker (`lib/ns.ts`) takes the command together with the
 * set-up (`lib/modes/ns.ts` asks both at once, so the two threads' start-up
 * overlaps); these check that it never runs the command, or makes sockets,
 * outside a namespace it has set up.
 */
import { equal, match, rejects } from "node:assert/strict";
import { NsWorker } from "../lib/ns.ts";
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

Deno.test("ns worker: a command asked right after a set-up that fails does not run", () =>
  withWorker(async (w, dir) => {
    const marker = `${dir}/ran`;
    const setup = w.setup({
      target: { kind: "path", path: `${dir}/no-such-namespace` },
      ifname: "tap0",
      configNet: true,
      mtu: 1500,
      addresses: [],
      routes: [],
    });
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
