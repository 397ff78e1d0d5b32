/**
 * tapir must run the ways a user gets it: as one `deno bundle` file, and
 * straight from a URL. Both break if main.ts reads files next to itself,
 * needs deno.json, or imports something a bundle or a fresh cache cannot
 * resolve.
 *
 * @module
 */

import { equal, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { VERSION } from "../lib/version.ts";

const ROOT_URL = new URL("..", import.meta.url);
const ROOT = fileURLToPath(ROOT_URL);
const decoder = new TextDecoder();

async function deno(args: string[], opts: { cwd: string; env?: Record<string, string> }) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: opts.cwd,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function assertHelp(run: { code: number; stdout: string; stderr: string }): void {
  equal(run.code, 0, run.stderr);
  ok(run.stdout.includes("tapir ns [OPTIONS]"), "lists ns mode");
  ok(run.stdout.includes("tapir vm [OPTIONS]"), "lists vm mode");
}

Deno.test("the bundle runs on its own", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-bundle-" });
  try {
    const bundle = `${dir}/tapir.js`;
    const built = await deno(["bundle", "--platform=deno", "-o", bundle, "main.ts"], { cwd: ROOT });
    equal(built.code, 0, built.stderr);
    // Run from the temp dir, away from the source tree and its deno.json.
    assertHelp(await deno(["run", "-A", bundle, "--help"], { cwd: dir }));
    const version = await deno(["run", "-A", bundle, "--version"], { cwd: dir });
    equal(version.stdout, `tapir ${VERSION}\n`);
    const bad = await deno(["run", "-A", bundle, "ns", "--mtu", "70000"], { cwd: dir });
    equal(bad.code, 1);
    equal(bad.stderr, "tapir: --mtu: 70000 is out of range 68-65520\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const CONTENT_TYPES: Record<string, string> = {
  // Not video/mp2t, which is what many servers say for .ts and which Deno
  // would then parse as JavaScript.
  ts: "application/typescript",
  js: "application/javascript",
  json: "application/json",
};

/** Serves files of the repository tree, read-only, nothing outside it. */
async function serveTree(req: Request): Promise<Response> {
  const path = decodeURIComponent(new URL(req.url).pathname);
  if (req.method !== "GET" || path.split("/").includes("..")) {
    return new Response("refused\n", { status: 403 });
  }
  try {
    const body = await Deno.readFile(new URL(`.${path}`, ROOT_URL));
    const ext = path.slice(path.lastIndexOf(".") + 1);
    const type = CONTENT_TYPES[ext] ?? "text/plain";
    return new Response(body, { headers: { "content-type": type } });
  } catch {
    return new Response("not found\n", { status: 404 });
  }
}

Deno.test("main.ts runs from a URL with an empty cache", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-url-" });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, serveTree);
  try {
    const url = `http://127.0.0.1:${server.addr.port}/main.ts`;
    const env = { DENO_DIR: `${dir}/cache`, DENO_NO_UPDATE_CHECK: "1" };
    assertHelp(await deno(["run", "-A", "--reload", url, "--help"], { cwd: dir, env }));
    const bad = await deno(["run", "-A", url, "--bogus"], { cwd: dir, env });
    equal(bad.code, 1);
    equal(bad.stderr, "tapir: unknown option '--bogus'\n");
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
