/**
 * rootlesskit in end-to-end tests: an unprivileged user with subordinate
 * ids, a resolv.conf for the test's host namespace, and a tracing wrapper
 * around the network helper rootlesskit starts (slirp4netns, or tapir as
 * slirp4netns), which records each argument vector rootlesskit passes and,
 * optionally, the requests on the helper's API socket.
 *
 * Everything here is written for root: the test sets things up, then runs
 * rootlesskit as the user with `setpriv` inside a host namespace made by
 * tests/helpers/netns.ts.
 *
 * @module
 */

import { nsArgs, run, runOk } from "./netns.ts";

/** The unprivileged user of the rootless tests (the same as tests/e2e/ns_test.ts's). */
export const ROOTLESS_USER = "tapirtest";

/** First subordinate id handed out when the files hold none yet. */
const SUBID_BASE = 100000;

/** How many subordinate ids the user gets. */
const SUBID_COUNT = 65536;

/**
 * Creates `user` (no home directory, shell /bin/sh) unless it exists, and
 * gives it {@linkcode SUBID_COUNT} subordinate uids and gids in /etc/subuid
 * and /etc/subgid unless it has an entry there. Idempotent; new ranges start
 * after every range already listed.
 */
export async function ensureRootlessUser(user: string = ROOTLESS_USER): Promise<void> {
  if ((await run("id", ["-u", user])).code !== 0) {
    await runOk("useradd", ["-M", "-s", "/bin/sh", user]);
  }
  for (const file of ["/etc/subuid", "/etc/subgid"]) {
    await ensureSubIds(file, user);
  }
}

/** Appends `user:START:COUNT` to `file` (an /etc/subuid-style list) unless `user` has a line. */
async function ensureSubIds(file: string, user: string): Promise<void> {
  const text = await Deno.readTextFile(file).catch((e) => {
    if (e instanceof Deno.errors.NotFound) return "";
    throw e;
  });
  let next = SUBID_BASE;
  for (const line of text.split("\n")) {
    const [name, start, count] = line.trim().split(":");
    if (name === user) return;
    const end = Number(start) + Number(count);
    if (Number.isSafeInteger(end) && end > next) next = end;
  }
  const sep = text === "" || text.endsWith("\n") ? "" : "\n";
  await Deno.writeTextFile(file, `${text}${sep}${user}:${next}:${SUBID_COUNT}\n`);
}

/**
 * Runs `body` with /dev/net/tun opened to everyone (mode 0666), as the
 * user's helper needs it, and puts the old mode back afterwards.
 */
export async function withTunForAll<T>(body: () => Promise<T>): Promise<T> {
  const tun = await Deno.stat("/dev/net/tun");
  await Deno.chmod("/dev/net/tun", 0o666);
  try {
    return await body();
  } finally {
    await Deno.chmod("/dev/net/tun", tun.mode! & 0o777);
  }
}

/**
 * Runs `body` while /etc/netns/NS/resolv.conf names `nameserver`: `ip netns
 * exec NS` mounts it over /etc/resolv.conf, so a helper started there sends
 * DNS to it. The file, and the directories this made, are removed afterwards.
 */
export async function withNetnsResolvConf<T>(
  ns: string,
  nameserver: string,
  body: () => Promise<T>,
): Promise<T> {
  const made: string[] = [];
  for (const d of ["/etc/netns", `/etc/netns/${ns}`]) {
    try {
      await Deno.mkdir(d);
      made.unshift(d);
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
    }
  }
  const file = `/etc/netns/${ns}/resolv.conf`;
  try {
    await Deno.writeTextFile(file, `nameserver ${nameserver}\n`);
    return await body();
  } finally {
    await Deno.remove(file).catch(() => {});
    for (const d of made) await Deno.remove(d).catch(() => {}); // not if someone else's is there
  }
}

/**
 * The argument vector running `cmd args` in namespace `ns` as `user` (real
 * and effective ids, no supplementary groups), for Deno.Command.
 */
export function asUserArgs(
  ns: string,
  user: string,
  cmd: string,
  args: string[] = [],
): [string, string[]] {
  return nsArgs(ns, "setpriv", [
    "--reuid",
    user,
    "--regid",
    user,
    "--clear-groups",
    cmd,
    ...args,
  ]);
}

/** What {@linkcode tracingHelper}'s wrapper recorded. */
export interface HelperTrace {
  /** Each call's arguments (without the program name), in call order. */
  readonly calls: string[][];
  /** Process id of the last call that was not `--help` (the running helper), or null. */
  readonly pid: number | null;
  /** socat's `-v` transcript of the API socket's traffic ("" unless traced). */
  readonly api: string;
  /** Process id of the socat relaying the API socket, or null. */
  readonly socatPid: number | null;
}

/**
 * Writes an executable `DIR/slirp4netns` that records its arguments and
 * execs `target` (the real slirp4netns, or the wrapper of
 * tests/helpers/engines.ts) with them, and returns its path. Each call
 * appends its argument count and arguments to DIR/helper.argv, each ended
 * by a NUL byte; a call other than `--help` writes its process id —
 * the helper's, after the exec — to DIR/helper.pid.
 *
 * With `traceApi`, `--api-socket PATH` becomes `PATH.traced` for the
 * helper and `socat -v` relays PATH to it, logging the traffic to
 * DIR/helper.api (its pid in DIR/socat.pid; kill it when done). socat
 * keeps none of the helper's descriptors: rootlesskit waits for the
 * helper's output pipes to close.
 *
 * DIR must be writable by whoever runs the wrapper.
 */
export async function tracingHelper(
  dir: string,
  target: string,
  traceApi = false,
): Promise<string> {
  const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const lines = [
    "#!/bin/bash",
    `dir=${q(dir)}`,
    `printf '%s\\0' $# "$@" >>"$dir/helper.argv"`,
    `[ "$1" = --help ] || echo $$ >"$dir/helper.pid"`,
    `args=("$@")`,
  ];
  if (traceApi) {
    lines.push(
      `for ((i = 0; i + 1 < \${#args[@]}; i++)); do`,
      `  [ "\${args[i]}" = --api-socket ] || continue`,
      `  sock=\${args[i + 1]}`,
      `  args[i + 1]=$sock.traced`,
      `  socat -v "UNIX-LISTEN:$sock,fork" "UNIX-CONNECT:$sock.traced" </dev/null >/dev/null 2>>"$dir/helper.api" 3>&- &`,
      `  echo $! >"$dir/socat.pid"`,
      `  for ((j = 0; j < 200; j++)); do [ -S "$sock" ] && break; sleep 0.01; done`,
      `done`,
    );
  }
  lines.push(`exec ${q(target)} "\${args[@]}"`, "");
  const path = `${dir}/slirp4netns`;
  await Deno.writeTextFile(path, lines.join("\n"));
  await Deno.chmod(path, 0o755);
  return path;
}

/** Reads what {@linkcode tracingHelper}'s wrapper in `dir` recorded so far. */
export async function readHelperTrace(dir: string): Promise<HelperTrace> {
  const read = (f: string) => Deno.readTextFile(`${dir}/${f}`).catch(() => "");
  const pidOf = (text: string) => /^\d+$/.test(text.trim()) ? Number(text.trim()) : null;
  const words = (await read("helper.argv")).split("\0");
  const calls: string[][] = [];
  for (let i = 0; i + 1 < words.length;) {
    const n = Number(words[i]);
    calls.push(words.slice(i + 1, i + 1 + n));
    i += 1 + n;
  }
  return {
    calls,
    pid: pidOf(await read("helper.pid")),
    api: await read("helper.api"),
    socatPid: pidOf(await read("socat.pid")),
  };
}

/** Whether process `pid` still runs (a zombie counts as gone). */
export async function processAlive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
