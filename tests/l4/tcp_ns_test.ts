/**
 * Namespace-side forwarding without a namespace: a fake socket source makes
 * the "namespace" sockets in this process's own namespace, so the `-T`
 * listeners, the socket pool and the `-t` loopback hook run for real on
 * loopback. (The real thing, across namespaces, is tests/e2e/fwd_test.ts.)
 */
import { equal, ok } from "node:assert/strict";
import { FlowTable } from "../../lib/flow/table.ts";
import { PORT_FWD_NONE, type PortFwd, portFwdAdd } from "../../lib/fwd.ts";
import type { AcceptedConn, LoopbackHook } from "../../lib/l4/tcp_listen.ts";
import { type HostListeners, type NsSocketSource, TcpNsForward } from "../../lib/l4/tcp_ns.ts";
import { TCP_SCAN_EMPTY, type TcpListenScan } from "../../lib/l4/tcp_scan.ts";
import { TcpSplice } from "../../lib/l4/tcp_splice.ts";
import { Loop } from "../../lib/loop.ts";
import * as sys from "../../lib/sys/mod.ts";

/** Sockets made here, after `delayMs`; or a failure when `fail`. */
class FakeSource implements NsSocketSource {
  requests = 0;
  constructor(readonly delayMs = 0, readonly fail = false) {}
  async sockets(family: 4 | 6, count: number): Promise<number[]> {
    this.requests++;
    await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw new Error("no sockets in this namespace");
    const fds: number[] = [];
    for (let i = 0; i < count; i++) {
      fds.push(sys.socket(
        family === 4 ? sys.AF_INET : sys.AF_INET6,
        sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC,
      ));
    }
    return fds;
  }
  scanTcp(): Promise<TcpListenScan> {
    return Promise.resolve(TCP_SCAN_EMPTY);
  }
}

/** Host listeners that only record the hook. */
class FakeListeners implements HostListeners {
  hook: LoopbackHook | null = null;
  setLoopbackHook(hook: LoopbackHook | null): void {
    this.hook = hook;
  }
  listenAuto(): number {
    return 0;
  }
  closePort(): void {}
  ports(): Set<number> {
    return new Set();
  }
}

function fwd(spec: string): PortFwd {
  const f = portFwdAdd(null, spec);
  if (typeof f === "string") throw new Error(f);
  return f;
}

async function freePort(): Promise<number> {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  await Promise.resolve();
  return port;
}

/** A loop with the splice path and a TcpNsForward, running while `body` runs. */
async function withForward(
  source: NsSocketSource,
  opts: { tcp?: PortFwd; tcpNs?: PortFwd },
  body: (f: TcpNsForward, splice: TcpSplice, listeners: FakeListeners) => Promise<void>,
): Promise<void> {
  const loop = new Loop();
  const flows = new FlowTable(64);
  loop.onTurn(() => flows.deferredPass(performance.now()));
  const splice = new TcpSplice(loop, flows);
  const listeners = new FakeListeners();
  const f = new TcpNsForward(loop, splice, listeners, source, {
    tcp: opts.tcp ?? PORT_FWD_NONE,
    tcpNs: opts.tcpNs ?? PORT_FWD_NONE,
    ipv4: true,
    ipv6: false,
  });
  await f.start();
  const running = loop.run();
  try {
    await body(f, splice, listeners);
    await new Promise((r) => setTimeout(r, 50)); // let the deferred pass free closed flows
    equal(flows.live, 0, "every flow was freed");
  } finally {
    loop.stop();
    await running;
    f.close();
    splice.close();
    loop.close();
  }
}

async function exchange(port: number, text: string): Promise<string> {
  const c = await Deno.connect({ hostname: "127.0.0.1", port });
  await c.write(new TextEncoder().encode(text));
  await c.closeWrite();
  const buf = new Uint8Array(1024);
  let out = "";
  for (;;) {
    const n = await c.read(buf);
    if (n === null) break;
    out += new TextDecoder().decode(buf.subarray(0, n));
  }
  c.close();
  return out;
}

/** A server on 127.0.0.1 answering each connection with `PREFIX` + what it read. */
function echoServer(prefix: string): { port: number; close(): void } {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  (async () => {
    for await (const conn of l) {
      (async () => {
        const buf = new Uint8Array(1024);
        let got = "";
        for (;;) {
          const n = await conn.read(buf);
          if (n === null) break;
          got += new TextDecoder().decode(buf.subarray(0, n));
        }
        await conn.write(new TextEncoder().encode(prefix + got));
        conn.close();
      })();
    }
  })().catch(() => {});
  return { port: l.addr.port, close: () => l.close() };
}

/** Accepts one connection to a raw listener and describes it as TcpListeners would. */
async function acceptedConn(
  target: number,
): Promise<{ conn: AcceptedConn; client: Promise<string> }> {
  const lfd = sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const lo = new Uint8Array([127, 0, 0, 1]);
  sys.sysCheck(sys.bind(lfd, sa, sys.sockaddrIn4(sa, lo, 0)), "bind");
  sys.sysCheck(sys.listen(lfd, 4), "listen");
  const len = new Uint32Array([sa.length]);
  sys.getsockname(lfd, sa, len);
  const port = (sa[2] << 8) | sa[3];
  const client = exchange(port, "ping");
  let fd = -1;
  for (let i = 0; i < 200 && fd < 0; i++) {
    len[0] = sa.length;
    fd = sys.accept4(lfd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, sa, len);
    if (fd < 0) await new Promise((r) => setTimeout(r, 5));
  }
  sys.close(lfd);
  ok(fd >= 0, "accepted");
  const conn: AcceptedConn = {
    fd,
    v6: false,
    clientAddr: lo,
    clientPort: (sa[2] << 8) | sa[3],
    localAddr: lo,
    port,
    target,
  };
  return { conn, client };
}

Deno.test("-T: a listener in the namespace joins its clients to the host's loopback at the target port", async () => {
  const server = echoServer("host says: ");
  const nsPort = await freePort();
  try {
    await withForward(
      new FakeSource(),
      { tcpNs: fwd(`${nsPort}:${server.port}`) },
      async (f, splice) => {
        equal(f.stats.nsListening, 1);
        equal(f.nsPorts().has(nsPort), true);
        equal(await exchange(nsPort, "hello"), "host says: hello");
        equal(f.stats.nsAccepted, 1);
        equal(splice.stats.connections, 1);
      },
    );
  } finally {
    server.close();
  }
});

Deno.test("-t hook: with the pool empty, a loopback connection waits for the refill, then is spliced", async () => {
  const server = echoServer("ns says: ");
  const source = new FakeSource(100);
  try {
    await withForward(source, {}, async (f, splice) => {
      const { conn, client } = await acceptedConn(server.port);
      equal(f.hook(conn), true, "taken");
      equal(f.stats.waited, 1, "no socket yet: it waits");
      equal(await client, "ns says: ping");
      equal(f.stats.loopbackSpliced, 1);
      equal(splice.stats.closed, 1);
      ok(f.pool.available(4) > 0, "the pool was refilled");
      equal(source.requests, 1, "one request filled the pool");
    });
  } finally {
    server.close();
  }
});

Deno.test("-t hook: when the namespace cannot make sockets, waiting clients are reset and later ones take the tap path", async () => {
  await withForward(new FakeSource(20, true), {}, async (f) => {
    const first = await acceptedConn(9);
    equal(f.hook(first.conn), true, "waits for the refill");
    const reset = await first.client.then(
      () => false,
      (e) => e instanceof Deno.errors.ConnectionReset,
    );
    ok(reset, "the waiting client was reset");
    const second = await acceptedConn(9);
    equal(f.hook(second.conn), false, "declined: the tap path takes it");
    equal(f.stats.declined, 1);
    sys.close(second.conn.fd);
    await second.client.catch(() => {});
  });
});

Deno.test("start() with -t hooks the host listeners and fills the pool before the loop runs", async () => {
  const source = new FakeSource();
  await withForward(source, { tcp: fwd("8080") }, (f, _splice, listeners) => {
    ok(listeners.hook !== null, "the loopback hook is set");
    equal(f.pool.available(4), 8);
    equal(f.pool.available(6), 0, "IPv6 is off");
    return Promise.resolve();
  });
});
