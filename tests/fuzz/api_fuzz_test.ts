/**
 * Fuzzing the control socket: a running `tapir vm` (in a throwaway host
 * namespace, so the forwards a request may add bind nothing outside it)
 * gets mutated requests, random bytes, wrong types, oversize lines and
 * lines split across writes. Every line that is not blank must get exactly
 * one reply, each reply must be a JSON object holding `return` or `error`,
 * and tapir must still answer and forward afterwards. Seeded; the seed is
 * in the test's name and in every failure.
 */
import { equal, ok } from "node:assert/strict";
import { withHostNs } from "../helpers/netns.ts";
import { pathExists, startTapirVm } from "../helpers/tapir.ts";
import { MAX_REQUEST_BYTES } from "../../lib/api/server.ts";
import { ctlCall } from "../../lib/ctl.ts";
import { prng } from "../packet/golden.ts";

const SEED = Number(Deno.env.get("TAPIR_FUZZ_SEED") ?? 0xa91);
const REQUESTS = 8_000; // the control socket serves at a bounded share of the loop: ~20 s
const CONNECTIONS = 4;

/** Request lines as clients write them, with `dir` for captures. */
function templates(dir: string): string[] {
  return [
    { cmd: "stats" },
    { cmd: "flows" },
    { cmd: "forwards" },
    { cmd: "forward-add", proto: "tcp", spec: "9100:80" },
    { cmd: "forward-add", proto: "udp", spec: "127.0.0.1/9101:53" },
    { cmd: "forward-remove", proto: "tcp", spec: "9100:80" },
    { cmd: "forward-remove", proto: "udp", spec: "127.0.0.1/9101:53" },
    { cmd: "pcap-start", path: `${dir}/caps/fuzz.pcap` },
    { cmd: "pcap-stop" },
  ].map((r) => JSON.stringify(r));
}

/** Values of every JSON type, some of them hostile. */
const ODD_VALUES = [
  null,
  true,
  0,
  -1,
  1e308,
  "",
  "x".repeat(1000),
  "\u0000\n",
  [],
  [[[[[]]]]],
  {},
  { cmd: { cmd: "stats" } },
  "../../../../etc/passwd",
];

/** One mutated request line (may hold newlines of its own). */
function mutate(rand: () => number, base: string): string {
  const int = (n: number) => Math.floor(rand() * n);
  const kind = rand();
  if (kind < 0.2) {
    // A field of another type.
    const obj = JSON.parse(base) as Record<string, unknown>;
    const keys = [...Object.keys(obj), "cmd", "spec", "path", "proto", "extra"];
    obj[keys[int(keys.length)]] = ODD_VALUES[int(ODD_VALUES.length)];
    return JSON.stringify(obj);
  }
  if (kind < 0.3) {
    const bytes = Array.from({ length: int(200) }, () => String.fromCharCode(int(256)));
    return bytes.join("");
  }
  if (kind < 0.35) return "[".repeat(int(5000)) + "]".repeat(int(5000)); // deep nesting
  if (kind < 0.38) return `{"cmd":"stats","pad":"${"y".repeat(MAX_REQUEST_BYTES + int(1000))}"}`;
  if (kind < 0.45) return base.slice(0, int(base.length)); // truncated
  let s = base;
  for (let e = 1 + int(4); e > 0; e--) {
    const at = int(s.length + 1);
    const c = rand() < 0.1 ? "\n" : String.fromCharCode(int(128));
    s = rand() < 0.5 ? s.slice(0, at) + c + s.slice(at) : s.slice(0, at) + c + s.slice(at + 1);
  }
  return s;
}

/** Lines the server must answer in `text`: not blank once a trailing CR is taken off. */
function answerable(text: string): number {
  const lines = text.split("\n");
  lines.pop(); // after the last newline: nothing, or a last unterminated request
  return lines.filter((l) => l.replace(/\r$/, "") !== "").length;
}

Deno.test(`fuzz: ${REQUESTS} hostile control-socket requests each get one reply (seed ${SEED})`, () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-apifuzz-" });
    await Deno.mkdir(`${dir}/caps`);
    const sock = `${dir}/api.sock`;
    const tapir = await startTapirVm(host, `${dir}/vm.sock`, [
      "--api-socket",
      sock,
      "--pcap-dir",
      `${dir}/caps`,
    ]);
    try {
      for (let i = 0; i < 100 && !(await pathExists(sock)); i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      const rand = prng(SEED);
      const base = templates(dir);
      const perConn = REQUESTS / CONNECTIONS;
      const results = await Promise.all(
        Array.from({ length: CONNECTIONS }, async (_, k) => {
          const lines: string[] = [];
          for (let i = 0; i < perConn; i++) {
            const t = base[Math.floor(rand() * base.length)];
            lines.push((rand() < 0.7 ? mutate(rand, t) : t) + (rand() < 0.05 ? "\r\n" : "\n"));
          }
          const text = lines.join("");
          const conn = await Deno.connect({ transport: "unix", path: sock });
          // Write in pieces of random size while the replies are read.
          const bytes = new TextEncoder().encode(text);
          const writing = (async () => {
            for (let off = 0; off < bytes.length;) {
              const n = Math.min(bytes.length - off, 1 + Math.floor(rand() * 8000));
              off += await conn.write(bytes.subarray(off, off + n));
            }
            await conn.closeWrite();
          })();
          const replies = await new Response(conn.readable).text();
          await writing;
          return { k, want: answerable(text), replies: replies.split("\n").filter((l) => l) };
        }),
      );
      for (const { k, want, replies } of results) {
        equal(replies.length, want, `seed ${SEED}, connection ${k}: one reply per line`);
        for (const line of replies) {
          const reply = JSON.parse(line);
          ok(
            typeof reply === "object" && reply !== null && ("return" in reply || "error" in reply),
            `seed ${SEED}, connection ${k}: ${line.slice(0, 200)}`,
          );
        }
      }
      const after = await ctlCall(sock, { cmd: "stats" });
      ok(after.ok, "tapir still answers");
    } finally {
      tapir.kill("SIGTERM");
      const status = await tapir.status;
      const stderr = new TextDecoder().decode(await new Response(tapir.stderr).arrayBuffer());
      equal(status.code, 0, `seed ${SEED}: tapir's status: ${stderr}`);
      await Deno.remove(dir, { recursive: true });
    }
  }));
