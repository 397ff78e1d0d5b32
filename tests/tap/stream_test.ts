import { deepEqual, equal, ok } from "node:assert/strict";
import * as sys from "../../lib/sys/mod.ts";
import { StreamBackend } from "../../lib/tap/stream.ts";
import { FrameBatch, TAP_HEADROOM } from "../../lib/tap/tap.ts";

function pair(): [number, number] {
  const fds = new Int32Array(2);
  sys.sysCheck(
    sys.socketpair(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_CLOEXEC, 0, fds),
    "socketpair",
  );
  return [fds[0], fds[1]];
}

function nonblocking(fd: number): void {
  sys.fcntl(fd, sys.F_SETFL, sys.fcntl(fd, sys.F_GETFL) | sys.O_NONBLOCK);
}

/** Frames of assorted sizes with recognisable contents. */
function frames(sizes: number[]): Uint8Array[] {
  return sizes.map((n, k) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + k * 7) & 0xff));
}

/** The frames as QEMU sends them: each preceded by its 4-byte big-endian length. */
function stream(fs: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(fs.reduce((n, f) => n + 4 + f.length, 0));
  let o = 0;
  for (const f of fs) {
    new DataView(out.buffer).setUint32(o, f.length);
    out.set(f, o + 4);
    o += 4 + f.length;
  }
  return out;
}

function writeAll(fd: number, buf: Uint8Array): void {
  let o = 0;
  while (o < buf.length) o += sys.sysCheck(sys.write(fd, buf.subarray(o)), "write");
}

Deno.test("receive: a stream split at every byte boundary of headers and frames yields the exact frames", () => {
  const fs = frames([60, 14, 200, 1514]);
  const bytes = stream(fs);
  const batch = new FrameBatch(8, 2048);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const [guest, ours] = pair();
    nonblocking(ours);
    const be = new StreamBackend();
    be.attach(ours);
    const got: Uint8Array[] = [];
    const take = () => {
      const n = be.receive(batch);
      ok(n >= 0, `cut ${cut}: receive ${n}`);
      for (let i = 0; i < n; i++) {
        got.push(batch.slots[i].slice(TAP_HEADROOM, TAP_HEADROOM + batch.lens[i]));
      }
    };
    writeAll(guest, bytes.subarray(0, cut));
    take();
    writeAll(guest, bytes.subarray(cut));
    take();
    deepEqual(got, fs, `cut at byte ${cut}`);
    be.detach();
    sys.close(guest);
  }
});

Deno.test("receive: an impossible length is refused as out of step (EPROTO), EOF as ECONNRESET", () => {
  const batch = new FrameBatch(4, 2048);
  for (const len of [0, 13, 70000]) {
    const [guest, ours] = pair();
    nonblocking(ours);
    const be = new StreamBackend();
    be.attach(ours);
    const bad = new Uint8Array(8);
    new DataView(bad.buffer).setUint32(0, len);
    writeAll(guest, bad);
    equal(be.receive(batch), -sys.Errno.EPROTO, `length ${len}`);
    be.detach();
    sys.close(guest);
  }
  const [guest, ours] = pair();
  nonblocking(ours);
  const be = new StreamBackend();
  be.attach(ours);
  sys.close(guest);
  equal(be.receive(batch), -sys.Errno.ECONNRESET);
  be.detach();
});

Deno.test("send: sends cut short mid-frame are completed; every frame arrives whole and in order", async () => {
  const [guest, ours] = pair();
  nonblocking(ours);
  sys.setsockoptInt(ours, sys.SOL_SOCKET, sys.SO_SNDBUF, 4096);
  const be = new StreamBackend();
  be.attach(ours);
  const fs = frames(Array.from({ length: 200 }, (_, k) => 60 + ((k * 397) % 1400)));
  const batch = new FrameBatch(16, 2048);
  // Send everything in batches; frames a full socket refused are "dropped"
  // by the backend, so offer them again: what arrives must be exactly the
  // frames the backend reported sent, in order.
  const sent: Uint8Array[] = [];
  const reader = new Worker(new URL("../fixtures/stream_reader.ts", import.meta.url), {
    type: "module",
  });
  let next = 0;
  const expectBytes = stream(fs).length;
  // Wait until the reader is actually reading: a frame cut short is
  // completed with a blocking send, which needs the other end to drain.
  let arrived!: Promise<Uint8Array>;
  await new Promise<void>((started) => {
    arrived = new Promise<Uint8Array>((resolve) => {
      reader.onmessage = (e) => e.data === "reading" ? started() : resolve(e.data);
    });
    reader.postMessage({ fd: guest, total: expectBytes });
  });
  while (next < fs.length) {
    const count = Math.min(batch.capacity, fs.length - next);
    for (let i = 0; i < count; i++) {
      batch.slots[i].set(fs[next + i], TAP_HEADROOM);
      batch.setPlain(i, fs[next + i].length);
      batch.order[i] = i;
    }
    const n = be.send(batch, count);
    ok(be.fd >= 0, "the stream stayed in step");
    for (let i = 0; i < n; i++) sent.push(fs[next + i]);
    next += n;
    if (n === 0) await new Promise((r) => setTimeout(r, 1));
  }
  const got = await arrived;
  reader.terminate();
  deepEqual(got, stream(sent));
  equal(sent.length, fs.length);
  ok(be.stats.completed > 0, `a cut frame was completed at least once (${be.stats.completed})`);
  be.detach();
  sys.close(guest);
});
