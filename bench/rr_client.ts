/**
 * The client side of the request/response benchmarks; the harness runs it
 * inside the guest namespace (`nsenter -n`), the same program for every
 * contender, against `bench/rr_server.ts` on the host side.
 *
 * Modes (`--mode`):
 *
 * - `rr`: one TCP connection, `--count` round trips of one byte out and one
 *   byte back (after a short warm-up that is not counted); reports the 50th
 *   and 99th percentile round trip in microseconds.
 * - `crr`: for `--seconds`, connect, send one byte, read the byte back, read
 *   the server's close, close; reports connections per second.
 * - `probe-tcp`: one `crr`-style exchange; says whether TCP gets through.
 * - `probe-udp`: a datagram to the UDP echo every 100 ms until one comes
 *   back; says whether UDP gets through.
 *
 * Prints exactly one JSON line: `{"ok":true,...}` with the numbers, or
 * `{"ok":false,"error":"..."}` saying what failed (without port numbers,
 * which change from run to run, so the same failure reads the same). `--timeout` bounds the
 * whole run, so a contender that drops packets makes a failure, never a hang.
 *
 * @module
 */

import { createSocket } from "node:dgram";
import { parseArgs } from "node:util";
import { crrPort } from "./rr_server.ts";

/** What one run of the client reports. */
export type ClientResult =
  | { ok: true; p50Us: number; p99Us: number; meanUs: number; count: number }
  | { ok: true; connsPerSec: number; count: number; seconds: number }
  | { ok: true; ms: number }
  | { ok: false; error: string };

const WARMUP = 200;

function emit(result: ClientResult): never {
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(result) + "\n"));
  Deno.exit(result.ok ? 0 : 1);
}

/** Fails the run with `error` unless `p` settles within `ms`. */
function within<T>(p: Promise<T>, ms: number, error: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(error)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

async function readByte(conn: Deno.TcpConn, buf: Uint8Array): Promise<void> {
  const n = await conn.read(buf);
  if (n === null) throw new Error("server closed the connection early");
}

/** p-th percentile (0..1) of sorted `values`, nearest rank. */
function percentile(sorted: Float64Array, p: number): number {
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[rank];
}

async function connect(hostname: string, port: number, timeoutMs: number): Promise<Deno.TcpConn> {
  const conn = await within(
    Deno.connect({ hostname, port }),
    timeoutMs,
    `TCP connect to ${hostname} timed out after ${timeoutMs / 1000} s`,
  );
  conn.setNoDelay(true);
  return conn;
}

async function rr(hostname: string, port: number, count: number, timeoutMs: number) {
  const conn = await connect(hostname, port, timeoutMs);
  const out = new Uint8Array([0x78]);
  const inBuf = new Uint8Array(16);
  const rtt = new Float64Array(count);
  for (let i = 0; i < WARMUP; i++) {
    await conn.write(out);
    await readByte(conn, inBuf);
  }
  for (let i = 0; i < count; i++) {
    const t0 = performance.now();
    await conn.write(out);
    await readByte(conn, inBuf);
    rtt[i] = (performance.now() - t0) * 1000;
  }
  conn.close();
  let sum = 0;
  for (const v of rtt) sum += v;
  rtt.sort();
  return {
    ok: true as const,
    p50Us: percentile(rtt, 0.5),
    p99Us: percentile(rtt, 0.99),
    meanUs: sum / count,
    count,
  };
}

/** One connection: connect, one byte each way, wait for the server's close, close. */
async function exchangeOnce(hostname: string, port: number, timeoutMs: number): Promise<void> {
  const conn = await connect(hostname, port, timeoutMs);
  try {
    const buf = new Uint8Array(16);
    await conn.write(new Uint8Array([0x78]));
    await readByte(conn, buf);
    // The server closes after its reply; reading its FIN first keeps
    // TIME_WAIT on the server's side (see rr_server.ts).
    while ((await conn.read(buf)) !== null) { /* drain until close */ }
  } finally {
    conn.close();
  }
}

async function crr(hostname: string, port: number, seconds: number, timeoutMs: number) {
  const start = performance.now();
  const end = start + seconds * 1000;
  let count = 0;
  let now = start;
  while (now < end) {
    await exchangeOnce(hostname, port, timeoutMs);
    count++;
    now = performance.now();
  }
  const elapsed = (now - start) / 1000;
  return { ok: true as const, connsPerSec: count / elapsed, count, seconds: elapsed };
}

async function probeUdp(hostname: string, port: number): Promise<{ ok: true; ms: number }> {
  const sock = createSocket(hostname.includes(":") ? "udp6" : "udp4");
  const start = performance.now();
  try {
    return await new Promise((resolve, reject) => {
      const send = () => sock.send(new Uint8Array([0x78]), port, hostname);
      const timer = setInterval(send, 100);
      sock.on("error", (err) => {
        clearInterval(timer);
        reject(err);
      });
      sock.on("message", () => {
        clearInterval(timer);
        resolve({ ok: true, ms: performance.now() - start });
      });
      send();
    });
  } finally {
    sock.close();
  }
}

function intOption(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`rr_client: --${name}: ${text} is not a positive number`);
    Deno.exit(2);
  }
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mode: { type: "string" },
      addr: { type: "string" },
      port: { type: "string" },
      count: { type: "string" },
      seconds: { type: "string" },
      timeout: { type: "string" },
    },
  });
  const hostname = values.addr ?? "127.0.0.1";
  const port = intOption("port", values.port, 0);
  const timeoutMs = intOption("timeout", values.timeout, 3) * 1000;
  const count = Math.round(intOption("count", values.count, 20000));
  const seconds = intOption("seconds", values.seconds, 5);
  // The whole run, not only each connect, is bounded: a contender that lets
  // the connection open but then drops data must not hang the harness.
  const budgetMs = timeoutMs + (values.mode === "crr" ? seconds * 1000 : 0) +
    (values.mode === "rr" ? count * 5 : 0) + 5000;
  const udp = values.mode === "probe-udp";
  const limitMs = udp ? timeoutMs : budgetMs;
  const watchdog = setTimeout(() =>
    emit({
      ok: false,
      error: udp
        ? `no UDP echo from ${hostname} within ${limitMs / 1000} s`
        : `${values.mode} to ${hostname} did not finish within ${limitMs / 1000} s`,
    }), limitMs);
  try {
    switch (values.mode) {
      case "rr":
        emit(await rr(hostname, port, count, timeoutMs));
        break;
      case "crr":
        emit(await crr(hostname, crrPort(port), seconds, timeoutMs));
        break;
      case "probe-tcp": {
        const t0 = performance.now();
        await exchangeOnce(hostname, crrPort(port), timeoutMs);
        emit({ ok: true, ms: performance.now() - t0 });
        break;
      }
      case "probe-udp":
        emit(await probeUdp(hostname, port));
        break;
      default:
        console.error(`rr_client: --mode: ${values.mode} is not rr, crr, probe-tcp or probe-udp`);
        Deno.exit(2);
    }
  } catch (err) {
    emit({ ok: false, error: (err as Error).message });
  } finally {
    clearTimeout(watchdog);
  }
}

if (import.meta.main) await main();
