/**
 * `tapir ns`: give a network namespace connectivity through a tap device.
 *
 * 0. For an engine's contract (`lib/engines/`): daemonise first if asked
 *    (pasta without `-f`); the first process returns when the daemon serves.
 * 1. Without root, re-execute where the set-up is allowed (see
 *    `rootlessReexecArgs` in `lib/ns.ts`: the target's user namespace, or a
 *    new one) and pass the child's exit status through.
 * 2. Read the host's addresses and routes; build the guest's network.
 * 3. Set up the namespace: enter (`--netns`, PID) or create it, create the
 *    tap, configure it (`--config-net`) and — unless the command needs
 *    forwarded ports or the control socket, which only the translator
 *    opens — start the command. Where this thread can come back to the
 *    host's namespace (root), it does all that itself, at once
 *    (`NsHere`), and starts a worker that joins the namespace only if the
 *    run may ask for sockets or scans there (forwards, a control socket).
 *    Otherwise (rootless) the worker does the set-up: it is asked
 *    everything at once, and its boot (~30 ms of isolate) and set-up
 *    overlap the module loading here. Then this thread loads the rest
 *    (`ns_serve.ts`) and builds the translator. A command that starts
 *    before the translator runs loses nothing: its frames wait in the
 *    tap's queue.
 * 4. Open the forwards and the control socket (tapir's requests, or
 *    slirp4netns's API), start the command if it waited for them, write the
 *    pid file, then say so: "1" on the ready descriptor, or the daemon's
 *    signal to the first process.
 * 5. Confine the process (`lib/sandbox.ts`; the waiting parent of step 1
 *    too), then run the translator until the command exits (spawn mode; then TCP
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
import { logDebug, logError, logWarn } from "../log.ts";
import { type GuestNet, guestNetOf, type HostFacts, hostFacts, u32ToIp4 } from "../net.ts";
import {
  type NsAccess,
  type NsAddress,
  NsHere,
  type NsRoute,
  type NsSetup,
  NsWorker,
  REEXEC_ENV,
  rootlessReexecArgs,
} from "../ns.ts";
import * as sys from "../sys/mod.ts";
import { type EngineOptions, NO_ENGINE } from "../engines/engine.ts";
import { daemonize, isDaemon } from "../engines/lifecycle.ts";
import { applySandbox } from "../sandbox.ts";

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
    const pid = sys.spawnProcess(reexec, { [REEXEC_ENV]: "1" });
    if (pid < 0) {
      logError(`cannot run ${reexec[0]}: ${sys.errnoName(-pid)}`);
      return 1;
    }
    const end = sys.waitProcess(pid);
    // The copy serves the engine's descriptors; holding them here would keep
    // an exit pipe open or make a reader wait for this process too.
    for (const fd of [engine.readyFd, engine.exitFd]) if (fd !== null) sys.close(fd);
    // From here this process only waits for the copy, which confines itself.
    if (conf.sandbox) applySandbox();
    return (await end)?.code ?? 1;
  }

  const host = hostFacts();
  const net = guestNetOf(conf, host);
  if (typeof net === "string") {
    logError(net);
    return 1;
  }
  // Measured (`-d` log, `--config-net -- true` as root): with the set-up
  // and the command on a worker, the command started 69–77 ms after
  // tapir's start; `new Worker` alone holds this thread ~30 ms while the
  // isolate boots. Here first, where possible; the worker only if needed.
  const here = NsHere.open();
  const ns: NsAccess = here ?? new NsWorker(mainUrl);
  const setup = ns.setup(nsSetupOf(conf, net, host, engine));
  const command = earlyCommand(conf);
  const spawned = command === null ? null : ns.spawn(command);
  // Their failures are read where they are awaited (`serveNs`); until then
  // they must not count as unhandled.
  setup.catch(() => {});
  spawned?.catch(() => {});
  if (here !== null && mayForward(conf)) here.startWorker(mainUrl);
  const { serveNs } = await import("./ns_serve.ts");
  return await serveNs(conf, net, ns, { setup, spawned }, engine);
}

/** The command `conf` runs in a new namespace (its own, or the user's shell), or null. */
export function commandOf(conf: NsConfig): readonly string[] | null {
  const t = conf.target;
  if (t.kind !== "spawn") return null;
  return t.command.length > 0 ? t.command : [Deno.env.get("SHELL") || "/bin/sh"];
}

/**
 * The command to start as soon as the namespace is configured, or null
 * when it must wait for the translator: forwarded ports (`-t`, `-u`, `-T`,
 * `-U`) and the control socket are opened by the translator, and the
 * command, or a peer it tells that it is ready, may use them from its
 * first moment.
 */
function earlyCommand(conf: NsConfig): readonly string[] | null {
  return mayForward(conf) ? null : commandOf(conf);
}

/**
 * The run forwards ports (`-t`, `-u`, `-T`, `-U`), or may be asked to
 * (the control socket): it then needs sockets in the namespace, and for
 * `auto`, scans of it.
 */
function mayForward(conf: NsConfig): boolean {
  const forwards = [conf.tcp, conf.udp, conf.tcpNs, conf.udpNs];
  return forwards.some((f) => f.mode !== "none") || conf.apiSocket !== null;
}

/** What the worker sets up for `conf`: the namespace, the tap and its addresses and routes. */
function nsSetupOf(
  conf: NsConfig,
  net: GuestNet,
  host: HostFacts,
  engine: EngineOptions,
): NsSetup {
  const addresses: NsAddress[] = [];
  const routes: NsRoute[] = [];
  if (net.ip4) {
    addresses.push({ family: 4, addr: [...u32ToIp4(net.ip4.addr)], prefixLen: net.ip4.prefixLen });
    routes.push({ family: 4, gateway: [...u32ToIp4(net.ip4.gateway)] });
  }
  if (net.ip6) {
    addresses.push({ family: 6, addr: [...net.ip6.addr], prefixLen: host.prefix6 ?? 64 });
    routes.push({ family: 6, gateway: [...net.ip6.gateway] });
  }
  const t = conf.target;
  return {
    target: t.kind === "spawn"
      ? { kind: "new" }
      : t.kind === "pid"
      ? { kind: "pid", pid: t.pid }
      : { kind: "path", path: t.path },
    ifname: conf.ifname ?? host.ifname ?? "tap0",
    configNet: conf.configNet,
    mtu: conf.mtu,
    addresses,
    routes,
    mac: engine.mac ? [...engine.mac] : null,
  };
}
