/**
 * The frame fuzzer (frames.ts) in a network namespace of its own: a short
 * run, and the million-frame run. Each names its seed; a failure prints the
 * seed and frame numbers, and `TAPIR_FUZZ_SEED` picks another seed to
 * explore with.
 */
import { equal, ok } from "node:assert/strict";
import { nsArgs, nsRunOk, run, withNetns } from "../helpers/netns.ts";
import type { FuzzSummary } from "./frames.ts";

const RUNNER = new URL("./frames.ts", import.meta.url).pathname;
const SEED = Number(Deno.env.get("TAPIR_FUZZ_SEED") ?? 0x5eed);

/** Runs `frames` frames with `seed` in a fresh namespace; returns the summary. */
function fuzz(frames: number, seed: number): Promise<FuzzSummary> {
  return withNetns(async (ns) => {
    // Echo requests go to loopback through ping sockets.
    await nsRunOk(ns, "sysctl", ["-qw", "net.ipv4.ping_group_range=0 2147483647"]);
    const [cmd, args] = nsArgs(ns, Deno.execPath(), ["run", "-A", RUNNER, `${frames}`, `${seed}`]);
    const r = await run(cmd, args);
    equal(r.code, 0, `fuzzer (frames ${frames}, seed ${seed}):\n${r.stderr}`);
    const summary = JSON.parse(r.stdout.trim().split("\n").pop()!) as FuzzSummary;
    console.log(JSON.stringify(summary));
    return summary;
  });
}

/** What every run must show besides the runner's own invariants: each kind of input got through. */
function reachedEveryLayer(s: FuzzSummary): void {
  const i = s.input;
  ok(i.framesToHost >= s.frames, `frames looked at ${i.framesToHost}`); // and the final resets
  for (const k of ["toServices", "toPing", "toTcp", "toUdp", "dropUnhandled", "dropBadGso"]) {
    ok(i[k] > s.frames / 100, `${k}: ${i[k]} of ${s.frames}`);
  }
  ok(
    s.established > 0 && s.established >= s.connections / 2,
    `${s.established} of ${s.connections}`,
  );
  equal(s.flowsAfterWait, 0);
}

Deno.test(`fuzz: 20 000 hostile frames through the real translator (seed ${SEED})`, async () => {
  reachedEveryLayer(await fuzz(20_000, SEED));
});

Deno.test(`fuzz: 1 000 000 hostile frames through the real translator (seed ${SEED + 1})`, async () => {
  reachedEveryLayer(await fuzz(1_000_000, SEED + 1));
});
