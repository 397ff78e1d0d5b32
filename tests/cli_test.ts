/**
 * The command line as a user meets it: `deno run -A main.ts ...` in a child
 * process, checking exit status, standard output and standard error.
 *
 * @module
 */

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { VERSION } from "../lib/version.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const decoder = new TextDecoder();

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function tapir(...args: string[]): Promise<Run> {
  return await tapirAs(null, ...args);
}

/** Checks that `run` failed with exactly the one stderr line `line`. */
function assertOneErrorLine(run: Run, line: string): void {
  equal(run.code, 1);
  equal(run.stdout, "");
  deepStrictEqual(run.stderr.split("\n"), [line, ""], "exactly one line, newline-terminated");
}

Deno.test("--help lists both modes and the options of each", async () => {
  const run = await tapir("--help");
  equal(run.code, 0);
  equal(run.stderr, "");
  ok(run.stdout.includes("tapir ns [OPTIONS] [-- CMD [ARGS...]]"));
  ok(run.stdout.includes("tapir vm [OPTIONS]"));
  const options = [
    ["-t", "--tcp-ports"],
    ["-u", "--udp-ports"],
    ["-a", "--address"],
    ["-m", "--mtu"],
    ["-p", "--pcap"],
    ["-4", "--ipv4-only"],
    ["-T", "--tcp-ns"],
    ["-U", "--udp-ns"],
    ["", "--config-net"],
    ["", "--netns"],
    ["-I", "--ns-ifname"],
    ["-s", "--socket"],
    ["", "--fd"],
    ["", "--vhost-user"],
    ["-1", "--one-off"],
  ];
  for (const [short, long] of options) {
    const line = run.stdout.split("\n").find((l) => l.includes(` ${long}`));
    ok(line !== undefined, `${long} is listed`);
    if (short !== "") ok(line.includes(`${short},`), `${long} shows ${short}`);
    ok(line.trim().length > long.length + 10, `${long} has a description`);
  }
  equal((await tapir("-h")).stdout, run.stdout, "-h is --help");
});

Deno.test("--version prints the version from lib/version.ts", async () => {
  const run = await tapir("--version");
  equal(run.code, 0);
  equal(run.stdout, `tapir ${VERSION}\n`);
  equal(run.stderr, "");
});

Deno.test("a bad value is one line naming the option, exit 1", async () => {
  assertOneErrorLine(
    await tapir("ns", "--mtu", "70000"),
    "tapir: --mtu: 70000 is out of range 68-65520",
  );
  assertOneErrorLine(await tapir("vm", "-t", "0"), "tapir: -t: port 0 is out of range 1-65535");
});

Deno.test("an unknown option is one line naming it, exit 1", async () => {
  assertOneErrorLine(await tapir("--bogus"), "tapir: unknown option '--bogus'");
  assertOneErrorLine(await tapir("ns", "--bogus"), "tapir: unknown option '--bogus'");
});

Deno.test("no mode is one line, exit 1", async () => {
  assertOneErrorLine(
    await tapir(),
    "tapir: missing mode: use 'tapir ns' or 'tapir vm' (see 'tapir --help')",
  );
});

Deno.test("a VM socket that cannot be created is one line naming --socket, exit 1", async () => {
  const run = await tapir("vm", "--socket", "/nonexistent-dir/tapir.sock");
  equal(run.code, 1);
  const lines = run.stderr.trimEnd().split("\n");
  equal(lines.length, 1, run.stderr);
  match(lines[0], /error: --socket: cannot listen on \/nonexistent-dir\/tapir\.sock: ENOENT$/);
});

Deno.test("logging is set up from the config before the mode starts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-cli-" });
  try {
    const log = `${dir}/tapir.log`;
    const failed = await tapir("vm", "-l", log, "--socket", `${dir}/no/such/dir/s.sock`);
    equal(failed.code, 1);
    match(
      await Deno.readTextFile(log),
      /error: --socket: cannot listen on /,
      "the error is in the log file",
    );
    const missing = `${dir}/no/such/dir/tapir.log`;
    const run = await tapir("vm", "--log-file", missing);
    equal(run.code, 1);
    const lines = run.stderr.split("\n");
    equal(lines.length, 2, "one line");
    ok(lines[0].startsWith(`tapir: --log-file: cannot open ${missing}: `), lines[0]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * Runs `deno run -A main.ts ARGS`; with a `name`, under that program name
 * (`exec -a NAME`), as a symlink to tapir would.
 */
async function tapirAs(name: string | null, ...args: string[]): Promise<Run> {
  const argv = [Deno.execPath(), "run", "-A", "main.ts", ...args];
  const out = await new Deno.Command(name === null ? argv[0] : "bash", {
    args: name === null ? argv.slice(1) : ["-c", 'exec -a "$0" "$@"', name, ...argv],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

Deno.test("started as slirp4netns, --help prints slirp4netns's usage", async () => {
  const run = await tapirAs("/some/dir/slirp4netns", "--help");
  equal(run.code, 0, run.stderr);
  equal(run.stderr, "");
  ok(run.stdout.startsWith("Usage: slirp4netns "), run.stdout.split("\n")[0]);
  ok(run.stdout.includes("--netns-type"));
  ok(run.stdout.includes("--enable-ipv6"));
});

Deno.test("'tapir slirp4netns' follows slirp4netns's contract too", async () => {
  const help = await tapir("slirp4netns", "--help");
  equal(help.code, 0);
  ok(help.stdout.startsWith("Usage: slirp4netns"), help.stdout.split("\n")[0]);
  const version = await tapir("slirp4netns", "--version");
  equal(version.code, 0);
  equal(version.stderr, "");
  ok(version.stdout.startsWith("slirp4netns version "), version.stdout);
  equal(version.stdout.split("\n").length, 2, "one line");
});

Deno.test("as slirp4netns, an unknown option is one line naming it, exit 1", async () => {
  assertOneErrorLine(
    await tapir("slirp4netns", "--bogus", "1", "tap0"),
    "tapir: unknown option '--bogus'",
  );
  assertOneErrorLine(
    await tapirAs("slirp4netns", "--bogus", "1", "tap0"),
    "tapir: unknown option '--bogus'",
  );
});

Deno.test("as slirp4netns, -e naming a descriptor that was not passed is one line, exit 1", async () => {
  const run = await tapir("slirp4netns", "-e", "9", "1", "tap0");
  equal(run.code, 1);
  equal(run.stdout, "");
  const lines = run.stderr.split("\n");
  equal(lines.length, 2, run.stderr);
  ok(lines[0].startsWith("tapir: -e: descriptor 9 "), lines[0]);
});

Deno.test("started as pasta, --help is tapir's and an unknown option is one line", async () => {
  const help = await tapirAs("/usr/bin/pasta", "--help");
  equal(help.code, 0, help.stderr);
  equal(help.stderr, "");
  equal(help.stdout, (await tapir("--help")).stdout);
  assertOneErrorLine(await tapirAs("pasta", "--bogus"), "tapir: unknown option '--bogus'");
});
