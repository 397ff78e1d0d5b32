/**
 * The JSON-lines control server against real UNIX-socket clients: a real
 * `Loop` runs while async clients (`Deno.connect`) talk to it.
 */
import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import {
  API_CPU_SHARE,
  type ApiHandler,
  ApiServer,
  MAX_REQUEST_BYTES,
} from "../../lib/api/server.ts";
import { Loop } from "../../lib/loop.ts";
import { withApiServer } from "../helpers/api.ts";
import * as sys from "../../lib/sys/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A client reading newline-terminated replies. */
class LineClient {
  readonly conn: Deno.UnixConn;
  #buf = new Uint8Array(0);
  #start = 0;
  #chunk = new Uint8Array(65536);

  private constructor(conn: Deno.UnixConn) {
    this.conn = conn;
  }

  static async connect(path: string): Promise<LineClient> {
    return new LineClient(await Deno.connect({ transport: "unix", path }));
  }

  async send(text: string | Uint8Array): Promise<void> {
    const bytes = typeof text === "string" ? enc.encode(text) : text;
    let off = 0;
    while (off < bytes.length) off += await this.conn.write(bytes.subarray(off));
  }

  /** The next line (without its newline), or null at end of stream. */
  async line(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.indexOf(0x0a, this.#start);
      if (nl >= 0) {
        const line = dec.decode(this.#buf.subarray(this.#start, nl));
        this.#start = nl + 1;
        return line;
      }
      const n = await this.conn.read(this.#chunk);
      if (n === null) {
        if (this.#buf.length > this.#start) {
          throw new Error(`unterminated reply: ${dec.decode(this.#buf.subarray(this.#start))}`);
        }
        return null;
      }
      const rest = this.#buf.subarray(this.#start);
      const grown = new Uint8Array(rest.length + n);
      grown.set(rest);
      grown.set(this.#chunk.subarray(0, n), rest.length);
      this.#buf = grown;
      this.#start = 0;
    }
  }

  /** The next reply, parsed; fails at end of stream. */
  async reply(): Promise<Record<string, unknown>> {
    const line = await this.line();
    if (line === null) throw new Error("end of stream instead of a reply");
    return JSON.parse(line);
  }

  close(): void {
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** Echoes the request back as `{ return: request }`. */
const echo: ApiHandler = (request) => ({ return: request });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds, failing after `ms`. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

Deno.test("one request, one reply", () =>
  withApiServer(echo, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    await c.send('{"execute":"stats"}\n');
    deepEqual(await c.reply(), { return: { execute: "stats" } });
    c.close();
    await until(() => server.stats.clients === 0, "the client to be gone");
    equal(server.stats.accepted, 1);
    equal(server.stats.requests, 1);
    equal(server.stats.replies, 1);
    equal(server.stats.errors, 0);
  }));

Deno.test("several requests in one write; one request split over many writes; CR and blank lines", () =>
  withApiServer(echo, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    await c.send('{"n":1}\n\n{"n":2}\r\n   \r\n{"n":3}\n');
    for (let n = 1; n <= 3; n++) deepEqual(await c.reply(), { return: { n } });
    const req = JSON.stringify({ split: "a fairly long request, sent a few bytes at a time" });
    for (let i = 0; i < req.length; i += 3) {
      await c.send(req.slice(i, i + 3));
      await sleep(1);
    }
    await c.send("\n");
    deepEqual(await c.reply(), { return: JSON.parse(req) });
    equal(server.stats.requests, 4, "blank lines are not requests");
    c.close();
  }));

Deno.test("an async handler keeps replies in request order", () => {
  const handler: ApiHandler = async (req) => {
    const n = req.n as number;
    await sleep((10 - n) * 3); // earlier requests take longer
    if (n === 4) throw new Error("four fails");
    return { return: n };
  };
  return withApiServer(handler, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    let batch = "";
    for (let n = 0; n < 10; n++) batch += JSON.stringify({ n }) + "\n";
    await c.send(batch);
    for (let n = 0; n < 10; n++) {
      const r = await c.reply();
      if (n === 4) deepEqual(r, { error: { desc: "four fails" } });
      else deepEqual(r, { return: n });
    }
    equal(server.stats.handlerErrors, 1);
    c.close();
  });
});

Deno.test("20 clients at once, 50 requests each, every reply parses and is theirs", () => {
  const seen = new Set<number>();
  const handler: ApiHandler = (req, client) => {
    seen.add(client.id);
    return req.i as number % 7 === 0
      ? Promise.resolve({ return: { ...req, client: client.id } })
      : { return: { ...req, client: client.id } };
  };
  return withApiServer(handler, async ({ server }) => {
    const run = async (k: number) => {
      const c = await LineClient.connect(server.path);
      let clientId = -1;
      // Half pipelined in one write, half one at a time.
      let batch = "";
      for (let i = 0; i < 25; i++) batch += JSON.stringify({ k, i }) + "\n";
      await c.send(batch);
      for (let i = 0; i < 25; i++) {
        const r = (await c.reply()).return as Record<string, number>;
        deepEqual([r.k, r.i], [k, i]);
        if (clientId < 0) clientId = r.client;
        equal(r.client, clientId);
      }
      for (let i = 25; i < 50; i++) {
        await c.send(JSON.stringify({ k, i }) + "\n");
        const r = (await c.reply()).return as Record<string, number>;
        deepEqual([r.k, r.i, r.client], [k, i, clientId]);
      }
      c.close();
    };
    await Promise.all(Array.from({ length: 20 }, (_, k) => run(k)));
    equal(seen.size, 20, "every client has its own id");
    equal(server.stats.requests, 1000);
    equal(server.stats.replies, 1000);
    await until(() => server.stats.clients === 0, "all clients to be gone");
    equal(server.stats.accepted, 20);
  });
});

Deno.test("thousands of requests in one burst are all answered, in order, then EOF", () =>
  withApiServer(echo, async ({ server, loop }) => {
    const c = await LineClient.connect(server.path);
    const n = 5000;
    let batch = "";
    for (let i = 0; i < n; i++) batch += `{"i":${i}}\n`;
    const sending = c.send(batch).then(() => c.conn.closeWrite());
    for (let i = 0; i < n; i++) deepEqual(await c.reply(), { return: { i } });
    await sending;
    equal(await c.line(), null);
    c.close();
    equal(server.stats.replies, n);
    ok(loop.stats.turns > n / 64, "served over many turns, a bounded number per turn");
  }));

Deno.test("bad input is answered with an error and the client stays connected", () =>
  withApiServer(echo, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    await c.send("{not json\n");
    const bad = (await c.reply()).error as { desc: string };
    match(bad.desc, /^malformed JSON: /);
    for (const v of ["[1,2]", "42", '"text"', "null"]) {
      await c.send(v + "\n");
      deepEqual(await c.reply(), { error: { desc: "request must be a JSON object" } }, v);
    }
    await c.send(new Uint8Array([0x7b, 0xff, 0x7d, 0x0a])); // "{\xff}": not UTF-8
    match(((await c.reply()).error as { desc: string }).desc, /^malformed JSON: /);

    // Over the limit in one write, then the next request on the same connection.
    const big = JSON.stringify({ pad: "x".repeat(MAX_REQUEST_BYTES) });
    await c.send(big + '\n{"after":1}\n');
    deepEqual(await c.reply(), { error: { desc: `request over ${MAX_REQUEST_BYTES} bytes` } });
    deepEqual(await c.reply(), { return: { after: 1 } });

    // Over the limit across many writes: one error, the rest up to the newline discarded.
    const chunk = "y".repeat(30000);
    await c.send('{"pad":"');
    for (let i = 0; i < 5; i++) {
      await c.send(chunk);
      await sleep(2);
    }
    await c.send('"}\n{"after":2}\n');
    deepEqual(await c.reply(), { error: { desc: `request over ${MAX_REQUEST_BYTES} bytes` } });
    deepEqual(await c.reply(), { return: { after: 2 } });

    // Exactly at the limit is fine.
    const pad = MAX_REQUEST_BYTES - JSON.stringify({ pad: "" }).length;
    const exact = JSON.stringify({ pad: "z".repeat(pad) });
    equal(exact.length, MAX_REQUEST_BYTES);
    await c.send(exact + "\n");
    equal(((await c.reply()).return as { pad: string }).pad.length, pad);

    equal(server.stats.malformed, 2);
    equal(server.stats.notObject, 4);
    equal(server.stats.oversize, 2);
    equal(server.stats.errors, 8);
    equal(server.stats.clients, 1, "still connected");
    c.close();
  }));

Deno.test("a handler that throws, rejects or returns nothing gets an error reply", () => {
  const handler: ApiHandler = (req) => {
    if (req.op === "throw") throw new Error("no such command");
    if (req.op === "reject") return Promise.reject(new Error("async failure"));
    if (req.op === "bigint") return { return: 1n };
    if (req.op === "nothing") return undefined;
    return { return: {} };
  };
  return withApiServer(handler, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    await c.send('{"op":"throw"}\n{"op":"reject"}\n{"op":"bigint"}\n{"op":"nothing"}\n{}\n');
    deepEqual(await c.reply(), { error: { desc: "no such command" } });
    deepEqual(await c.reply(), { error: { desc: "async failure" } });
    match(((await c.reply()).error as { desc: string }).desc, /cannot be serialised/);
    match(((await c.reply()).error as { desc: string }).desc, /cannot be serialised/);
    deepEqual(await c.reply(), { return: {} });
    equal(server.stats.handlerErrors, 2);
    equal(server.stats.badReplies, 2);
    c.close();
  });
});

Deno.test("a request ended by end of stream, without newline, is answered, then the server closes", () => {
  const handler: ApiHandler = async (req) => {
    await sleep(20);
    return { return: req };
  };
  return withApiServer(handler, async ({ server }) => {
    // slirp4netns style: one object, shut down writing, read until EOF.
    const c = await LineClient.connect(server.path);
    await c.send('{"execute":"list_hostfwd"}');
    await c.conn.closeWrite();
    deepEqual(await c.reply(), { return: { execute: "list_hostfwd" } });
    equal(await c.line(), null, "the server closes after the reply");
    c.close();

    // Several pending requests and then end of stream: all answered first.
    const d = await LineClient.connect(server.path);
    await d.send('{"a":1}\n{"a":2}\n{"a":3}');
    await d.conn.closeWrite();
    for (let a = 1; a <= 3; a++) deepEqual(await d.reply(), { return: { a } });
    equal(await d.line(), null);
    d.close();

    // End of stream with nothing pending: closed at once.
    const e = await LineClient.connect(server.path);
    await e.conn.closeWrite();
    equal(await e.line(), null);
    e.close();
    await until(() => server.stats.clients === 0, "all clients to be gone");
    equal(server.stats.dropSocketError, 0, "ordinary ends are not drops");
  });
});

Deno.test("the socket is mode 0600 and removed on close; close is idempotent", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-api-" });
  const loop = new Loop();
  try {
    const path = `${dir}/api.sock`;
    const server = ApiServer.open(loop, path, echo);
    const st = Deno.lstatSync(path);
    ok(st.isSocket);
    equal(st.mode! & 0o777, 0o600);
    server.close();
    throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
    server.close();

    // A file put in its place after open is not ours: close leaves it.
    const other = ApiServer.open(loop, path, echo);
    Deno.removeSync(path);
    Deno.writeTextFileSync(path, "not ours");
    other.close();
    equal(Deno.readTextFileSync(path), "not ours");
  } finally {
    loop.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a live socket at the path is refused; a stale one is replaced; a file is kept", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-api-" });
  const loop = new Loop();
  try {
    const path = `${dir}/api.sock`;
    const first = ApiServer.open(loop, path, echo);
    throws(
      () => ApiServer.open(loop, path, echo),
      (e: Error) => e.message === `--api-socket: ${path} is in use by another process`,
    );
    ok(Deno.lstatSync(path).isSocket, "the live socket is left alone");
    first.close();

    // A stale socket: bound, never listened on, closed.
    const sa = new Uint8Array(sys.SOCKADDR_UN_SIZE);
    const len = sys.sockaddrUn(sa, path);
    const fd = sys.sysCheck(sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_CLOEXEC), "socket");
    sys.sysCheck(sys.bind(fd, sa, len), "bind");
    sys.close(fd);
    ok(Deno.lstatSync(path).isSocket);
    const second = ApiServer.open(loop, path, echo);
    equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
    second.close();

    Deno.writeTextFileSync(path, "keep me");
    throws(
      () => ApiServer.open(loop, path, echo),
      (e: Error) => e.message === `--api-socket: ${path} exists and is not a socket`,
    );
    equal(Deno.readTextFileSync(path), "keep me");

    const long = `${dir}/${"n".repeat(120)}`;
    throws(
      () => ApiServer.open(loop, long, echo),
      (e: Error) => e.message === `--api-socket: ${long} is too long for a UNIX socket`,
    );
    throws(
      () => ApiServer.open(loop, `${dir}/no/such/dir/api.sock`, echo),
      (e: Error) => /^--api-socket: cannot listen on .*: ENOENT$/.test(e.message),
    );
  } finally {
    loop.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the socket appears at its path already listening, with its mode, staging name gone", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-api-" });
  const loop = new Loop();
  try {
    // A staging name an earlier tapir with this pid left behind.
    const leftover = `${dir}/.tapir-${Deno.pid}.sock`;
    Deno.writeTextFileSync(leftover, "");
    const path = `${dir}/api.sock`;
    const server = ApiServer.open(loop, path, echo);
    deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["api.sock"]);
    equal(Deno.lstatSync(path).mode! & 0o777, 0o600);
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    server.close();

    // A directory so deep that only the path fits a socket address: bound
    // there. 96 characters leave the path 105 (at most 107 fit), and the
    // staging name at least 110 whatever the pid's digits (pids wrap at
    // 32768 here: a 3-digit pid left it at 107 with the old depth of 91).
    const deep = `${dir}/${"d".repeat(95 - dir.length)}`;
    Deno.mkdirSync(deep);
    const deepPath = `${deep}/api.sock`;
    ok(deepPath.length <= 107 && `${deep}/.tapir-${Deno.pid}.sock`.length > 107, deepPath);
    const deepServer = ApiServer.open(loop, deepPath, echo);
    deepEqual([...Deno.readDirSync(deep)].map((e) => e.name), ["api.sock"]);
    equal(Deno.lstatSync(deepPath).mode! & 0o777, 0o600);
    deepServer.close();
  } finally {
    loop.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a client that never reads is disconnected; others are still served", () => {
  const bulk = "b".repeat(256 * 1024);
  const handler: ApiHandler = (req) => req.bulk ? { return: bulk } : { return: req };
  return withApiServer(handler, async ({ server }) => {
    const hog = await LineClient.connect(server.path);
    let batch = "";
    for (let i = 0; i < 40; i++) batch += '{"bulk":true}\n';
    await hog.send(batch); // ~10 MiB of replies it never reads
    const polite = await LineClient.connect(server.path);
    await until(() => server.stats.dropSlowClient === 1, "the hog to be dropped");
    for (let i = 0; i < 5; i++) {
      await polite.send(JSON.stringify({ i }) + "\n");
      deepEqual(await polite.reply(), { return: { i } });
    }
    equal(server.stats.clients, 1);
    equal(server.stats.dropSlowClient, 1);
    polite.close();
    hog.close();
  });
});

Deno.test("a late async reply, after the server closed, is dropped", () => {
  let release = () => {};
  const gate = new Promise<void>((r) => release = r);
  const handler: ApiHandler = async () => {
    await gate;
    return { return: "late" };
  };
  return withApiServer(handler, async ({ server }) => {
    const c = await LineClient.connect(server.path);
    await c.send("{}\n");
    await until(() => server.stats.requests === 1, "the request");
    server.close();
    equal(await c.line(), null, "closed by the server");
    release();
    await until(() => server.stats.lateReplies === 1, "the late reply");
    equal(server.stats.clients, 0);
    c.close();
  });
});

Deno.test("clients that use more than the control socket's share of time wait, and are all answered", () => {
  // Each request takes 1 ms: 40 of them are 40 ms of work, far over the
  // burst, so the server pauses its clients to let the loop do other work.
  const slow: ApiHandler = (request) => {
    const end = performance.now() + 1;
    while (performance.now() < end) { /* busy */ }
    return { return: request };
  };
  return withApiServer(slow, async ({ server, loop }) => {
    let ticks = 0;
    const tick = () => {
      ticks++;
      loop.after(1, tick);
    };
    loop.after(1, tick);
    const clients = await Promise.all([0, 1, 2, 3].map(() => LineClient.connect(server.path)));
    const started = performance.now();
    await Promise.all(clients.map(async (c, i) => {
      for (let k = 0; k < 10; k++) {
        await c.send(`{"n":${i * 10 + k}}\n`);
        deepEqual(await c.reply(), { return: { n: i * 10 + k } });
      }
      c.close();
    }));
    const elapsed = performance.now() - started;
    ok(server.stats.throttled > 0, "the clients were paused");
    // 40 ms of work at a 2 % share takes seconds of wall-clock time,
    // during which the loop kept turning for its other work.
    ok(elapsed > 40 / API_CPU_SHARE / 2, `elapsed ${elapsed.toFixed(0)} ms`);
    ok(ticks > elapsed / 10, `the loop's timer ran ${ticks} times in ${elapsed.toFixed(0)} ms`);
  });
});
