/**
 * The splice path with real sockets on this process's loopback: a listener
 * driven by the reactor joins each accepted client to a new connection to a
 * Deno server, as namespace mode does across namespaces.
 */
import { deepEqual, equal, ok, rejects } from "node:assert/strict";
import { FlowSide, FlowTable, FlowType, Pif } from "../../lib/flow/table.ts";
import { PipePool, SPLICE_PIPE_SIZE, TcpSplice } from "../../lib/l4/tcp_splice.ts";
import { Loop } from "../../lib/loop.ts";
import * as sys from "../../lib/sys/mod.ts";

const LO = new Uint8Array([127, 0, 0, 1]);
const LO_U32 = 0x7f000001;

/** A loop, a flow table and the splice path, with a front listener joining to `targetPort`. */
class Rig {
  readonly loop = new Loop();
  readonly flows = new FlowTable(64);
  readonly splice = new TcpSplice(this.loop, this.flows, new PipePool(SPLICE_PIPE_SIZE, 4));
  readonly frontPort: number;
  readonly #front: number;

  constructor(targetPort: number) {
    this.loop.onTurn(() => this.flows.deferredPass(performance.now()));
    const fd = sys.sysCheck(
      sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC),
      "socket",
    );
    const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
    sys.sysCheck(sys.bind(fd, sa, sys.sockaddrIn4(sa, LO, 0)), "bind");
    sys.sysCheck(sys.listen(fd, 16), "listen");
    const len = new Uint32Array([sa.length]);
    sys.sysCheck(sys.getsockname(fd, sa, len), "getsockname");
    this.frontPort = (sa[2] << 8) | sa[3];
    this.#front = fd;
    const ini = new FlowSide();
    const tgt = new FlowSide();
    const type = this.loop.defineType("front", () => {
      for (;;) {
        len[0] = sa.length;
        const client = sys.accept4(fd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, sa, len);
        if (client < 0) return;
        const peer = sys.socket(
          sys.AF_INET,
          sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
        );
        ini.set4(Pif.HOST, LO_U32, (sa[2] << 8) | sa[3], LO_U32, this.frontPort);
        tgt.set4(Pif.SPLICE, LO_U32, targetPort, 0, 0);
        this.splice.open(client, peer, ini, tgt);
      }
    });
    sys.sysCheck(this.loop.add(fd, sys.EPOLLIN, type, 0), "epoll_ctl");
  }

  /** Runs the loop while `body` runs; stops it afterwards (after a few turns to reap flows). */
  async during<T>(body: () => Promise<T>): Promise<T> {
    const running = this.loop.run();
    try {
      const result = await body();
      // Let the deferred pass free what closed in the last turn.
      await new Promise((r) => setTimeout(r, 50));
      return result;
    } finally {
      this.loop.stop("test done");
      await running;
      this.loop.remove(this.#front);
      sys.close(this.#front);
      this.splice.close();
      this.loop.close();
    }
  }
}

async function readAll(conn: Deno.Conn): Promise<Uint8Array<ArrayBuffer>> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(256 * 1024);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    parts.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(b.subarray(off, off + 65536));
  return b;
}

async function sha(b: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

Deno.test("splice: bytes cross both ways intact, a half-close passes through, the flow is freed", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const rig = new Rig(server.addr.port);
  const up = randomBytes(8 << 20);
  const down = randomBytes(5 << 20);
  try {
    await rig.during(async () => {
      const served = (async () => {
        const conn = await server.accept();
        // Read slowly at first, so the client's bytes back up behind the splice.
        await new Promise((r) => setTimeout(r, 200));
        const got = await readAll(conn); // ends at the client's half-close
        await writeAll(conn, down);
        conn.close();
        return got;
      })();
      const client = await Deno.connect({ hostname: "127.0.0.1", port: rig.frontPort });
      await writeAll(client, up);
      await client.closeWrite();
      const received = await readAll(client);
      client.close();
      const got = await served;
      equal(await sha(got), await sha(up), "client → server");
      equal(await sha(received), await sha(down), "server → client after the half-close");
    });
    const s = rig.splice.stats;
    equal(s.connections, 1);
    equal(s.closed, 1, "closed cleanly");
    equal(s.resets, 0);
    equal(rig.flows.live, 0, "the flow was freed");
    equal(rig.flows.countType(FlowType.TCP_SPLICE), 0);
  } finally {
    server.close();
  }
});

Deno.test("splice: a refused target resets the client and frees the flow", async () => {
  // A port nothing listens on: bind one, note it, close it.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadPort = probe.addr.port;
  probe.close();
  const rig = new Rig(deadPort);
  await rig.during(async () => {
    // The reset may come before Deno's connect has finished with the socket, or after.
    await rejects(async () => {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: rig.frontPort });
      try {
        if (await client.read(new Uint8Array(16)) === null) throw new Error("EOF, not a reset");
      } finally {
        client.close();
      }
    }, (err: Error) => err instanceof Deno.errors.ConnectionReset);
  });
  equal(rig.splice.stats.refused, 1);
  equal(rig.flows.live, 0);
});

Deno.test("splice: many connections at once each carry their own bytes", async () => {
  const server = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const rig = new Rig(server.addr.port);
  const count = 20;
  try {
    await rig.during(async () => {
      const echo = (async () => {
        const tasks: Promise<void>[] = [];
        for (let i = 0; i < count; i++) {
          const conn = await server.accept();
          tasks.push((async () => {
            const got = await readAll(conn);
            await writeAll(conn, got);
            conn.close();
          })());
        }
        await Promise.all(tasks);
      })();
      const results = await Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const data = randomBytes(10_000 + i * 7919);
          const c = await Deno.connect({ hostname: "127.0.0.1", port: rig.frontPort });
          await writeAll(c, data);
          await c.closeWrite();
          const back = await readAll(c);
          c.close();
          return (await sha(back)) === (await sha(data));
        }),
      );
      await echo;
      deepEqual(results, new Array(count).fill(true));
    });
    equal(rig.splice.stats.closed, count);
    equal(rig.flows.live, 0);
    ok(rig.splice.pipes.stats.reused > 0, "pipes were reused from the pool");
  } finally {
    server.close();
  }
});

Deno.test("pipe pool: pipes are raised to 1 MiB when allowed, reused, and bounded", () => {
  const pool = new PipePool(SPLICE_PIPE_SIZE, 2);
  const a = pool.take()!;
  const b = pool.take()!;
  const c = pool.take()!;
  ok(a.size >= 65536);
  if (Deno.uid() === 0) equal(a.size, SPLICE_PIPE_SIZE, "root may raise pipes to 1 MiB");
  equal(pool.stats.created, 3);
  pool.give(a);
  pool.give(b);
  pool.give(c); // beyond the bound: closed
  equal(pool.available, 2);
  equal(pool.stats.closed, 1);
  const again = pool.take()!;
  ok(again === a || again === b, "a pooled pipe comes back");
  equal(pool.stats.reused, 1);
  pool.discard(again);
  pool.close();
  equal(pool.available, 0);
  equal(pool.stats.closed, 3);
});
