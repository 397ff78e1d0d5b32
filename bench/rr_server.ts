/**
 * The server side of the request/response benchmarks, run by the harness in
 * the simulated host namespace, bound to the address the contender's guest
 * reaches (host loopback for the translators, the veth address for veth).
 *
 * Three services on one port number, so a contender needs one address only:
 *
 * - TCP `PORT`: echo. Whatever arrives goes straight back; the client sends
 *   one byte and waits for it (the `rr` ping-pong), many times on one
 *   connection.
 * - TCP `PORT + 1`: one exchange per connection. Read at least one byte,
 *   send it back, then close. The server closes first on purpose: the
 *   TIME_WAIT state then stays with the server's port, and neither the
 *   client nor a translator runs out of ephemeral ports during `crr`.
 * - UDP `PORT`: echo, for the harness's "does UDP get through" probe.
 *
 * Prints one line `listening` on standard output once all three are bound,
 * then serves until killed.
 *
 * Usage: `deno run -A bench/rr_server.ts --addr ADDR --port PORT`
 *
 * @module
 */

import { createSocket } from "node:dgram";
import { parseArgs } from "node:util";

/** The port of the one-exchange-per-connection service, given the echo port. */
export function crrPort(port: number): number {
  return port + 1;
}

/** Echoes every byte back on `conn` until the peer closes. */
async function echo(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(4096);
  try {
    conn.setNoDelay(true);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await conn.write(buf.subarray(off, n));
    }
  } catch {
    // A reset peer ends the exchange; nothing to report.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

/** Reads at least one byte, sends it back, closes. */
async function once(conn: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(64);
  try {
    conn.setNoDelay(true);
    const n = await conn.read(buf);
    if (n !== null) await conn.write(buf.subarray(0, n));
  } catch {
    // As above: the client's failure is the client's to report.
  } finally {
    try {
      conn.close();
    } catch { /* already closed */ }
  }
}

async function serve(listener: Deno.TcpListener, handle: (c: Deno.TcpConn) => Promise<void>) {
  for await (const conn of listener) handle(conn);
}

function parsePort(text: string | undefined): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65534) {
    console.error(`rr_server: --port: ${text} is not a port number 1-65534`);
    Deno.exit(1);
  }
  return port;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { addr: { type: "string" }, port: { type: "string" } },
  });
  const hostname = values.addr ?? "127.0.0.1";
  const port = parsePort(values.port);
  const rr = Deno.listen({ hostname, port, transport: "tcp" });
  const crr = Deno.listen({ hostname, port: crrPort(port), transport: "tcp" });
  const udp = createSocket(hostname.includes(":") ? "udp6" : "udp4");
  udp.on("message", (msg, rinfo) => udp.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((resolve, reject) => {
    udp.once("error", reject);
    udp.bind(port, hostname, () => resolve());
  });
  await Deno.stdout.write(new TextEncoder().encode("listening\n"));
  await Promise.all([serve(rr, echo), serve(crr, once)]);
}

if (import.meta.main) await main();
