/**
 * Running tapir in end-to-end tests: `tapir ns` inside a host namespace made
 * by tests/helpers/netns.ts, always with `--loopback-only`, and background
 * servers in that host namespace.
 *
 * @module
 */

import { type StatsReport, statsReportFromLog } from "../../lib/tapir.ts";
import { nsArgs, run, type RunResult } from "./netns.ts";

/** The program under test. */
export const MAIN: string = new URL("../../main.ts", import.meta.url).pathname;

/** Argument vector of `tapir ns --loopback-only ARGS [-- sh -c SCRIPT]` run in `host`. */
export function tapirNsArgs(host: string, args: string[], script?: string): [string, string[]] {
  const tail = script === undefined ? [] : ["--", "sh", "-c", script];
  return nsArgs(host, Deno.execPath(), [
    "run",
    "-A",
    MAIN,
    "ns",
    "--loopback-only",
    ...args,
    ...tail,
  ]);
}

/** Argument vector of `tapir vm --loopback-only ARGS` run in `host`. */
export function tapirVmArgs(host: string, args: string[]): [string, string[]] {
  return nsArgs(host, Deno.execPath(), ["run", "-A", MAIN, "vm", "--loopback-only", ...args]);
}

/**
 * Starts `tapir vm -q -a 192.0.2.2 -g 192.0.2.1 --socket PATH ARGS` in
 * `host` (stderr piped, for the caller to read at the end) and waits until
 * its socket exists.
 */
export async function startTapirVm(
  host: string,
  path: string,
  args: string[] = [],
  env: Record<string, string> = {},
): Promise<Deno.ChildProcess> {
  const [cmd, argv] = tapirVmArgs(host, [
    "-q",
    "-a",
    "192.0.2.2",
    "-g",
    "192.0.2.1",
    "--socket",
    path,
    ...args,
  ]);
  const tapir = new Deno.Command(cmd, { args: argv, env, stdout: "null", stderr: "piped" }).spawn();
  for (let i = 0; i < 100 && !(await pathExists(path)); i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  return tapir;
}

/**
 * Stops a tapir started by {@linkcode startTapirVm} with SIGTERM and checks
 * that it exits 0; the assertion message carries the whole status (a signal
 * leaves stderr empty) and stderr. Resolves with stderr, for the caller's
 * own checks.
 */
export async function stopTapirVm(tapir: Deno.ChildProcess): Promise<string> {
  tapir.kill("SIGTERM");
  const status = await tapir.status;
  const stderr = new TextDecoder().decode(await new Response(tapir.stderr).arrayBuffer());
  if (status.code !== 0) {
    throw new Error(`tapir vm did not exit 0 on SIGTERM: ${JSON.stringify(status)}\n${stderr}`);
  }
  return stderr;
}

/**
 * The Python line that makes `l` a TCP socket listening on 127.0.0.1:`port`
 * (address reuse on, so a port a test just used is free at once), for the
 * one-off host servers tests write in Python. The script imports `socket`.
 */
export function pyListen(port: number): string {
  return "l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); " +
    `l.bind(('127.0.0.1', ${port})); l.listen()`;
}

/**
 * Starts a one-off Python TCP server in `host`: `lines` run once `l`
 * listens on 127.0.0.1:`port` ({@linkcode pyListen}; `socket` is imported,
 * other modules the lines import themselves). Stdout and stderr are piped:
 * the caller reads them with `output()`. Resolves once the port listens.
 */
export async function pyServer(
  host: string,
  port: number,
  lines: string[],
): Promise<Deno.ChildProcess> {
  const [c, a] = nsArgs(host, "python3", [
    "-c",
    ["import socket", pyListen(port), ...lines].join("\n"),
  ]);
  const server = new Deno.Command(c, { args: a, stdout: "piped", stderr: "piped" }).spawn();
  await waitListening(host, port);
  return server;
}

/** Runs `tapir ns ARGS -- sh -c SCRIPT` in host namespace `host` to completion. */
export function tapirNs(
  host: string,
  args: string[],
  script: string,
  env: Record<string, string> = {},
): Promise<RunResult> {
  const [cmd, argv] = tapirNsArgs(host, args, script);
  return run(cmd, argv, { env });
}

/** Output of a run, for assertion messages. */
export function explain(r: RunResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/** A process started in the background; stopped with {@linkcode stopAll}. */
export type Background = Deno.ChildProcess;

/** Starts `cmd args` in namespace `ns` in the background (output discarded). */
export function background(ns: string, cmd: string, args: string[]): Background {
  const [c, a] = nsArgs(ns, cmd, args);
  return new Deno.Command(c, { args: a, stdin: "null", stdout: "null", stderr: "null" }).spawn();
}

/** Stops background processes (SIGTERM, then SIGKILL after a grace period) and reaps them. */
export async function stopAll(procs: Background[]): Promise<void> {
  const send = (signal: Deno.Signal) => {
    for (const p of procs) {
      try {
        p.kill(signal);
      } catch { /* already gone */ }
    }
  };
  // SIGTERM first: a tapir ends its command then, which SIGKILL would leave
  // running without a network (with the servers a test started in it).
  send("SIGTERM");
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((r) => timer = setTimeout(r, STOP_GRACE_MS));
  await Promise.race([Promise.all(procs.map((p) => p.status)), late]);
  clearTimeout(timer);
  send("SIGKILL");
  await Promise.all(procs.map((p) => p.status));
}

/** How long {@linkcode stopAll} waits after SIGTERM before it sends SIGKILL. */
const STOP_GRACE_MS = 3000;

/** Waits until something listens on TCP `port` in namespace `ns` (up to 5 s). */
export async function waitListening(ns: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const [c, a] = nsArgs(ns, "ss", ["-Hltn", `sport = :${port}`]);
    if ((await run(c, a)).stdout.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on port ${port} in ${ns}`);
}

/** The last statistics report in a tapir log (see `statsReportFromLog`); throws if there is none. */
export function statsFromLog(log: string): StatsReport {
  const report = statsReportFromLog(log);
  if (report === null) throw new Error("no 'stats {...}' line in the log");
  return report;
}

/** One counter group of the last statistics report in a tapir log (see {@linkcode statsFromLog}). */
export function countersFromLog(log: string, group: string): Record<string, number> {
  const counters = statsFromLog(log).counters[group];
  if (counters === undefined) throw new Error(`no '${group}' counters in the log`);
  return counters;
}

/**
 * The command tapir runs in its namespace: start `servers` in the
 * background, wait until `ports` listen, touch DIR/ready, wait for
 * DIR/stop, stop the servers.
 */
export function nsScript(dir: string, servers: string[], ports: number[], extra = ""): string {
  return [
    `pids=""`,
    ...servers.map((s) => `${s} & pids="$pids $!"`),
    ...ports.map((p) => `until ss -Hltn "sport = :${p}" | grep -q .; do sleep 0.05; done`),
    `touch ${dir}/ready`,
    extra,
    `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
    `kill $pids 2>/dev/null`,
    `wait`,
  ].join("\n");
}

/** Whether `path` exists now. */
export function pathExists(path: string): Promise<boolean> {
  return Deno.stat(path).then(() => true, () => false);
}

/** Waits until `path` exists. */
export async function waitFile(path: string, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (await pathExists(path)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} did not appear`);
}

/**
 * tapir (`--config-net -d --log-file DIR/log ARGS`) running `script` in
 * the background of host namespace `host` (see {@linkcode nsScript}).
 */
export class TapirRun {
  readonly #proc: Deno.ChildProcess;
  readonly #dir: string;

  constructor(host: string, dir: string, args: string[], script: string) {
    this.#dir = dir;
    const [cmd, argv] = tapirNsArgs(host, [
      "--config-net",
      "-d",
      "--log-file",
      `${dir}/log`,
      ...args,
    ], script);
    this.#proc = new Deno.Command(cmd, { args: argv, stdout: "piped", stderr: "piped" }).spawn();
  }

  /** tapir's process. */
  get process(): Deno.ChildProcess {
    return this.#proc;
  }

  /** Waits for the namespace's servers (DIR/ready). */
  ready(): Promise<void> {
    return waitFile(`${this.#dir}/ready`);
  }

  /** Lets the script finish; resolves with tapir's output and log. */
  async stop(): Promise<{ result: RunResult; log: string }> {
    await Deno.writeTextFile(`${this.#dir}/stop`, "");
    const out = await this.#proc.output();
    const dec = new TextDecoder();
    const result = {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
    };
    const log = await Deno.readTextFile(`${this.#dir}/log`).catch(() => "");
    return { result, log };
  }
}

/** One thread's sandbox state, from `/proc/PID/task/TID/status`. */
export interface ThreadSandbox {
  readonly noNewPrivs: number;
  readonly seccomp: number;
  /** Effective capabilities, as the 16 hex digits of `CapEff`. */
  readonly capEff: string;
}

/** Parses `CapEff: X NoNewPrivs: N Seccomp: N` from the `status` of one thread. */
export function threadSandboxOf(status: string): ThreadSandbox {
  const field = (name: string) => {
    const m = new RegExp(`${name}:\\s*([0-9a-f]+)`).exec(status);
    if (m === null) throw new Error(`no ${name} in ${status}`);
    return m[1];
  };
  return {
    noNewPrivs: Number(field("NoNewPrivs")),
    seccomp: Number(field("Seccomp")),
    capEff: field("CapEff"),
  };
}

/** `CapEff` of a tapir that ran as root, once confined: `CAP_NET_BIND_SERVICE` only. */
export const SANDBOX_CAP_EFF = "0000000000000400";

/** The lines `task CapEff: X NoNewPrivs: N Seccomp: N` a test script printed, one per thread. */
export function threadSandboxLines(stdout: string): ThreadSandbox[] {
  return stdout.split("\n").filter((l) => l.startsWith("task ")).map(threadSandboxOf);
}

/** The sandbox state of every thread of process `pid`. */
export async function threadSandbox(pid: number): Promise<ThreadSandbox[]> {
  const out: ThreadSandbox[] = [];
  for await (const t of Deno.readDir(`/proc/${pid}/task`)) {
    try {
      out.push(threadSandboxOf(await Deno.readTextFile(`/proc/${pid}/task/${t.name}/status`)));
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err; // a thread that just ended
    }
  }
  return out;
}
