/**
 * The host's side of the VM test (tests/vm/vm_test.ts), run inside the test's
 * host namespace with `ip netns exec`, since the test process itself stays in
 * the root namespace.
 *
 * `serve PORT FILE` listens on 127.0.0.1:PORT (no name lookups: the namespace
 * has no resolver) and answers
 * - `GET /download`: the bytes of FILE;
 * - `POST /upload`: reads the body, answers `bytes=N sha256=HEX`, and prints
 *   the same as a JSON line `{"upload":{"bytes":N,"sha256":"HEX"}}` on
 *   standard output, so the test checks the upload on the host side.
 * It prints `{"listening":PORT}` once it accepts connections.
 *
 * `boot PORT GATEWAY` serves two iPXE scripts on 127.0.0.1:PORT: `/boot.ipxe`
 * chains to `http://GATEWAY:PORT/second.ipxe` (the address the guest reaches
 * this server by), which echoes a line and exits. Every request prints
 * `{"get":PATH}`.
 *
 * `fetch PORT TOKEN BYTES` connects to 127.0.0.1:PORT (the guest's forwarded
 * port), sends `TOKEN\n`, and reads; once BYTES have arrived it sends
 * `sha256=HEX\n` of them (the guest waits for that before it closes, so it
 * does not power off with data still queued), reads on until the guest
 * closes, and prints `{"bytes":N,"sha256":"HEX"}` of all it received.
 *
 * `relay SRC DST SIZE...` listens on 127.0.0.1 and ::1, ports SRC and DST.
 * The k-th connection to SRC gets SIZE[k] random bytes, then a half-close;
 * every connection to DST is read to its end. Each prints a JSON line
 * `{"relay":{"side":"sent"|"got","n":k,"family":4|6,"bytes":N,"sha256":"HEX"}}`
 * (k counts that side's connections), so the test pairs what went down to the
 * guest with what came back up; a connection that fails prints `error` (the
 * reason) instead of `bytes` and `sha256`. It prints `{"listening":SRC}` once both ports
 * accept connections on both families.
 *
 * @module
 */

import { createHash } from "node:crypto";

function printJson(value: unknown): void {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(value) + "\n"));
}

async function hashStream(
  stream: ReadableStream<Uint8Array>,
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    bytes += chunk.length;
  }
  return { bytes, sha256: hash.digest("hex") };
}

async function serve(port: number, file: string): Promise<void> {
  const size = (await Deno.stat(file)).size;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => printJson({ listening: port }) },
    async (req) => {
      const path = new URL(req.url).pathname;
      if (req.method === "GET" && path === "/download") {
        const f = await Deno.open(file);
        return new Response(f.readable, {
          headers: { "content-length": `${size}`, "content-type": "application/octet-stream" },
        });
      }
      if (req.method === "POST" && path === "/upload" && req.body) {
        const got = await hashStream(req.body);
        printJson({ upload: got });
        return new Response(`bytes=${got.bytes} sha256=${got.sha256}\n`);
      }
      return new Response("not found\n", { status: 404 });
    },
  );
  await server.finished;
}

async function bootScripts(port: number, gateway: string): Promise<void> {
  const scripts: Record<string, string> = {
    "/boot.ipxe":
      `#!ipxe\necho TAPIR-IPXE first script\nchain http://${gateway}:${port}/second.ipxe\n`,
    "/second.ipxe": "#!ipxe\necho TAPIR-IPXE second script\nexit\n",
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => printJson({ listening: port }) },
    (req) => {
      const path = new URL(req.url).pathname;
      printJson({ get: path });
      const body = scripts[path];
      return body === undefined
        ? new Response("not found\n", { status: 404 })
        : new Response(body, { headers: { "content-type": "text/plain" } });
    },
  );
  await server.finished;
}

async function fetchFromGuest(port: number, token: string, expected: number): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  // Whatever the guest does, give up after a minute rather than hang the test.
  const timer = setTimeout(() => conn.close(), 60_000);
  const enc = new TextEncoder();
  const hash = createHash("sha256");
  let bytes = 0;
  const buf = new Uint8Array(65536);
  try {
    await writeAll(conn, enc.encode(`${token}\n`));
    // The expected bytes, then the acknowledgement, then whatever else arrives.
    let acked = false;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      hash.update(buf.subarray(0, n));
      bytes += n;
      if (!acked && bytes >= expected) {
        acked = true;
        await writeAll(conn, enc.encode(`sha256=${hash.copy().digest("hex")}\n`));
      }
    }
  } catch (err) {
    if (!(err instanceof Deno.errors.BadResource)) throw err;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  printJson({ bytes, sha256: hash.digest("hex") });
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
}

/** Serves the relay's source and sink until killed. */
async function relay(src: number, dst: number, sizes: number[]): Promise<void> {
  const listen = (port: number) =>
    ["127.0.0.1", "::1"].map((hostname) => Deno.listen({ hostname, port }));
  const sources = listen(src);
  const sinks = listen(dst);
  let sent = 0;
  let got = 0;
  const family = (conn: Deno.Conn) => (conn.localAddr as Deno.NetAddr).hostname === "::1" ? 6 : 4;
  const serveSource = async (conn: Deno.Conn) => {
    const n = sent++;
    const hash = createHash("sha256");
    const chunk = new Uint8Array(65536);
    let left = sizes[n] ?? 0;
    const bytes = left;
    try {
      while (left > 0) {
        const part = chunk.subarray(0, Math.min(left, chunk.length));
        crypto.getRandomValues(part);
        hash.update(part);
        await writeAll(conn, part);
        left -= part.length;
      }
      await conn.closeWrite();
      // Wait for the guest's half-close, so nothing is cut short by our close.
      while (await conn.read(chunk) !== null);
    } catch (err) {
      printJson({ relay: { side: "sent", n, family: family(conn), error: `${err}` } });
      return;
    } finally {
      conn.close();
    }
    printJson({
      relay: { side: "sent", n, family: family(conn), bytes, sha256: hash.digest("hex") },
    });
  };
  const serveSink = async (conn: Deno.Conn) => {
    const n = got++;
    try {
      printJson({
        relay: { side: "got", n, family: family(conn), ...await hashStream(conn.readable) },
      });
    } catch (err) {
      printJson({ relay: { side: "got", n, family: family(conn), error: `${err}` } });
    }
  };
  const acceptAll = async (listener: Deno.Listener, handle: (c: Deno.Conn) => Promise<void>) => {
    for await (const conn of listener) {
      handle(conn).catch((err) => console.error(`relay: ${err}`));
    }
  };
  printJson({ listening: src });
  await Promise.all([
    ...sources.map((l) => acceptAll(l, serveSource)),
    ...sinks.map((l) => acceptAll(l, serveSink)),
  ]);
}

function portArg(text: string | undefined): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`bad port ${text}`);
  }
  return port;
}

if (import.meta.main) {
  const [cmd, port, arg] = Deno.args;
  if (cmd === "serve" && arg) await serve(portArg(port), arg);
  else if (cmd === "boot" && arg) await bootScripts(portArg(port), arg);
  else if (cmd === "fetch" && arg && Deno.args[3]) {
    await fetchFromGuest(portArg(port), arg, Number(Deno.args[3]));
  } else if (cmd === "relay" && arg) {
    await relay(portArg(port), portArg(arg), Deno.args.slice(3).map(Number));
  } else {
    console.error(
      "usage: host_peer.ts serve PORT FILE | boot PORT GATEWAY | fetch PORT TOKEN BYTES | " +
        "relay SRC DST SIZE...",
    );
    Deno.exit(2);
  }
}
