/**
 * Running tapir in end-to-end tests: `tapir ns` inside a host namespace made
 * by tests/helpers/netns.ts, always with `--loopback-only`, and background
 * servers in that host namespace.
 *
 * @module
 */

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

/** Kills and reaps background processes. */
export async function stopAll(procs: Background[]): Promise<void> {
  for (const p of procs) {
    try {
      p.kill("SIGKILL");
    } catch { /* already gone */ }
  }
  await Promise.all(procs.map((p) => p.status));
}

/** Waits until something listens on TCP `port` in namespace `ns` (up to 5 s). */
export async function waitListening(ns: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const [c, a] = nsArgs(ns, "ss", ["-Hltn", `sport = :${port}`]);
    if ((await run(c, a)).stdout.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on port ${port} in ${ns}`);
}
