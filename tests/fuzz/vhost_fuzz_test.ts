/**
 * Fuzzing the vhost-user control path: front-ends that start a device the
 * way QEMU does, with messages damaged on the way — bytes flipped, request
 * codes and sizes that lie, messages cut short, descriptors missing or in
 * excess. Each connection must end with a reason or keep going, nothing may
 * throw, no descriptor or mapping may be left behind once it is closed, and
 * a front-end that starts cleanly afterwards must get running rings.
 * Seeded; the seed and connection number are in every failure.
 */
import { equal, ok } from "node:assert/strict";
import * as sys from "../../lib/sys/mod.ts";
import { VhostUserConn } from "../../lib/vhost/conn.ts";
import { VHOST_USER_HDR_SIZE } from "../../lib/vhost/protocol.ts";
import { prng } from "../packet/golden.ts";
import { eventfd, memfd, qemuStart, qemuStartMessages, socketPair } from "../vhost/frontend.ts";

const SEED = Number(Deno.env.get("TAPIR_FUZZ_SEED") ?? 0x7105);
const CONNECTIONS = 3000;

/** Entries in this process's descriptor table and memory map. */
function resources(): { fds: number; maps: number; kinds: string[] } {
  const kinds = [...Deno.readDirSync("/proc/self/fd")].map((e) => {
    try {
      return e.name + "=" + Deno.readLinkSync(`/proc/self/fd/${e.name}`);
    } catch {
      return "?";
    }
  });
  return {
    kinds,
    fds: [...Deno.readDirSync("/proc/self/fd")].length,
    // Guest memory: the memfds of SET_MEM_TABLE (V8's own mappings come and go).
    maps: Deno.readTextFileSync("/proc/self/maps").split("\n").filter((l) => l.includes("memfd:"))
      .length,
  };
}

/** One damaged copy of a message, and the descriptors to send with it. */
function damage(rand: () => number, m: Uint8Array, fds: number[]): [Uint8Array, number[]] {
  const int = (n: number) => Math.floor(rand() * n);
  let out = m.slice();
  const v = () => new DataView(out.buffer);
  const kind = rand();
  if (kind < 0.2) {
    out[int(out.length)] = int(256); // a byte anywhere
  } else if (kind < 0.35) {
    out[VHOST_USER_HDR_SIZE + int(Math.max(1, out.length - VHOST_USER_HDR_SIZE))] = int(256);
  } else if (kind < 0.45) {
    v().setUint32(0, int(64), true); // another request, known or not
  } else if (kind < 0.55) {
    v().setUint32(8, rand() < 0.5 ? int(512) : 0xffffffff - int(16), true); // a size that lies
  } else if (kind < 0.65) {
    out = out.slice(0, int(out.length)); // cut short
  } else if (kind < 0.75) {
    v().setUint32(4, int(16), true); // flags: other versions, REPLY, NEED_REPLY
  } else if (kind < 0.85) {
    for (const fd of fds) sys.close(fd);
    return [out, []]; // its descriptors missing
  } else {
    return [out, [...fds, rand() < 0.5 ? eventfd() : memfd()]]; // one too many
  }
  return [out, fds];
}

Deno.test(`fuzz: ${CONNECTIONS} vhost-user front-ends with damaged start-ups (seed ${SEED})`, () => {
  const rand = prng(SEED);
  // Warm up once so that lazily opened libraries and bound symbols are not counted as leaks.
  const [wf, wb] = socketPair();
  const warm = new VhostUserConn(wb);
  qemuStart(wf);
  warm.readable();
  warm.close();
  sys.close(wf);
  const before = resources();
  let ended = 0;
  for (let c = 0; c < CONNECTIONS; c++) {
    const [fe, be] = socketPair();
    const conn = new VhostUserConn(be);
    try {
      for (const [m0, fds0] of qemuStartMessages()) {
        const [m, fds] = rand() < 0.15 ? damage(rand, m0, fds0) : [m0, fds0];
        if (m.length > 0) sys.sendWithFds(fe, m, 0, m.length, 0, fds); // may fail once ended
        for (const fd of fds) sys.close(fd);
      }
      let open = true;
      for (let k = 0; k < 4 && open; k++) open = conn.readable();
      if (!open) {
        ended++;
        ok(conn.error !== "", `seed ${SEED}, connection ${c}: ended without a reason`);
      }
    } catch (err) {
      throw new Error(`seed ${SEED}, connection ${c}: ${(err as Error).stack}`);
    } finally {
      conn.close();
      sys.close(fe);
    }
  }
  const after = resources();
  if (after.fds !== before.fds) {
    const kinds = [...Deno.readDirSync("/proc/self/fd")].map((e) => {
      try {
        return Deno.readLinkSync(`/proc/self/fd/${e.name}`).replace(/[0-9]+/g, "N");
      } catch {
        return "?";
      }
    });
    const count: Record<string, number> = {};
    for (const k of kinds) count[k] = (count[k] ?? 0) + 1;
    console.error(
      "DBG",
      before.fds,
      after.fds,
      JSON.stringify(after.kinds.filter((k) => !before.kinds.includes(k))),
      JSON.stringify(before.kinds.filter((k) => !after.kinds.includes(k))),
    );
  }
  equal(after.fds, before.fds, `seed ${SEED}: descriptors left open`);
  equal(after.maps, before.maps, `seed ${SEED}: guest memory left mapped`);
  ok(ended > CONNECTIONS / 10, `damage ended ${ended} of ${CONNECTIONS} connections`);
  // A clean start-up still works.
  const [fe, be] = socketPair();
  const clean = new VhostUserConn(be);
  qemuStart(fe);
  ok(clean.readable(), clean.error);
  ok(clean.backend.vrings.every((r) => r.running), "rings run");
  clean.close();
  sys.close(fe);
});
