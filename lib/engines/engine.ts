/**
 * What a container engine's contract adds to a `tapir ns` run.
 *
 * Engines start their network helper with a fixed command line: podman 4
 * and rootlesskit call `slirp4netns`, podman 5 calls `pasta`. tapir answers
 * to both names (`lib/engines/slirp4netns.ts`, `lib/engines/pasta.ts`).
 * Each contract is translated into `tapir ns` options where tapir has the
 * same notion, and into an {@linkcode EngineOptions} for the rest: how
 * readiness is signalled, what ends the run, which API the control socket
 * speaks.
 *
 * @module
 */

/** The helper programs tapir stands in for. */
export type EngineContract = "slirp4netns" | "pasta";

/** The behaviour of an engine's contract beyond the `tapir ns` options. */
export interface EngineOptions {
  /** Which program tapir is standing in for; null for a plain `tapir ns`. */
  readonly contract: EngineContract | null;
  /** `-r`: write "1" to this descriptor, then close it, once the tap serves. */
  readonly readyFd: number | null;
  /** `-e`: stop when this descriptor polls readable or hung up. */
  readonly exitFd: number | null;
  /** User namespace to join before entering the network namespace, or null. */
  readonly usernsPath: string | null;
  /** `--macaddress`: the tap's MAC address (6 bytes), or null for the kernel's. */
  readonly mac: Uint8Array | null;
  /**
   * Daemonise (pasta without `-f` when attaching): the first process returns
   * once the namespace is served, and a detached one keeps serving it.
   */
  readonly daemon: boolean;
  /** Stop when the namespace goes away: its path is deleted, or its process exits. */
  readonly endWithTarget: boolean;
  /** The control socket speaks slirp4netns's API: forwards default to these guest addresses. */
  readonly slirpApi: { readonly guest4: Uint8Array; readonly guest6: Uint8Array | null } | null;
  /** Warnings to log once logging is set up (options accepted but not applied). */
  readonly warnings: readonly string[];
}

/** Options of a plain `tapir ns` run: no engine. */
export const NO_ENGINE: EngineOptions = Object.freeze({
  contract: null,
  readyFd: null,
  exitFd: null,
  usernsPath: null,
  mac: null,
  daemon: false,
  endWithTarget: false,
  slirpApi: null,
  warnings: [],
});

/**
 * The program name tapir was started under: the base name of `argv[0]` as
 * the kernel recorded it. A symlink named `slirp4netns` to a compiled
 * tapir, or a wrapper that runs `exec -a slirp4netns deno run …`, shows
 * that name here; `deno run main.ts` shows `deno`.
 */
export function programName(): string {
  let argv0 = "";
  try {
    argv0 = Deno.readTextFileSync("/proc/self/cmdline").split("\0")[0];
  } catch {
    return "";
  }
  return argv0.slice(argv0.lastIndexOf("/") + 1);
}

/** The contract a program name asks for, or null (`tapir`, `deno`, anything else). */
export function contractOfName(name: string): EngineContract | null {
  return name === "slirp4netns" || name === "pasta" ? name : null;
}
