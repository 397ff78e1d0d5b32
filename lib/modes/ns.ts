/**
 * `tapir ns`: give a network namespace connectivity through a tap device.
 *
 * 0. For an engine's contract (`lib/engines/`): daemonise first if asked
 *    (pasta without `-f`); the first process returns when the daemon serves.
 * 1. Without root, re-execute where the set-up is allowed (see
 *    `rootlessReexecArgs` in `lib/ns.ts`: the target's user namespace, or a
 *    new one) and pass the child's exit status through.
 * 2. Start the namespace worker, then load the rest (`ns_serve.ts`) while
 *    it loads: its start is the longest step of start-up.
 * 3. Read the host's addresses and routes; build the guest's network. The
 *    worker enters (`--netns`, PID) or creates the namespace, creates the
 *    tap and configures it (`--config-net`).
 * 4. Open the forwards and the control socket (tapir's requests, or
 *    slirp4netns's API), write the pid file, then say so: "1" on the ready
 *    descriptor, or the daemon's signal to the first process.
 * 5. Run the translator until the command exits (spawn mode; then TCP
 *    connections finish while bytes move: `DRAIN_IDLE_MS` in `ns_serve.ts`), the
 *    namespace goes away (attach mode: its process exits or its path is
 *    deleted), the exit descriptor fires, or a signal.
 *
 * The exit status is the command's (128 + signal number if a signal ended
 * it), 0 for an attached run that ended, 1 on a set-up error.
 *
 * @module
 */

import type { NsConfig } from "../conf.ts";
import { logDebug, logWarn } from "../log.ts";
import { NsWorker, REEXEC_ENV, rootlessReexecArgs } from "../ns.ts";
import * as sys from "../sys/mod.ts";
import { type EngineOptions, NO_ENGINE } from "../engines/engine.ts";
import { daemonize, isDaemon } from "../engines/lifecycle.ts";

/**
 * Runs namespace mode; `mainUrl` is the main module (the worker runs it
 * too), `args` the command line to run this again with (a re-execution, the
 * daemon), and `engine` what an engine's contract adds (`lib/engines/`).
 */
export async function runNs(
  conf: NsConfig,
  mainUrl: string,
  args: readonly string[],
  engine: EngineOptions = NO_ENGINE,
): Promise<number> {
  for (const w of engine.warnings) logWarn(w);
  if (engine.daemon && !isDaemon()) return await daemonize(args);
  const t = conf.target;
  const userns = engine.usernsPath ?? (t.kind === "pid" ? `/proc/${t.pid}/ns/user` : null);
  const reexec = rootlessReexecArgs(args, userns);
  if (reexec) {
    logDebug(`not root: re-executing as ${reexec.slice(0, 4).join(" ")} ...`);
    const child = new Deno.Command(reexec[0], {
      args: reexec.slice(1),
      env: { [REEXEC_ENV]: "1" },
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    // The copy serves the engine's descriptors; holding them here would keep
    // an exit pipe open or make a reader wait for this process too.
    for (const fd of [engine.readyFd, engine.exitFd]) if (fd !== null) sys.close(fd);
    return (await child.status).code;
  }

  // The worker goes first: \`new Worker\` holds this thread ~40 ms while the
  // isolate boots, but the worker's own modules then load on its thread
  // while this one loads the translator's.
  const worker = new NsWorker(mainUrl);
  const { serveNs } = await import("./ns_serve.ts");
  return await serveNs(conf, worker, engine);
}
