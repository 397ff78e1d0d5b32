/**
 * Namespace mode once the namespace's set-up is under way: the translator
 * with its forwards and control socket, the command, and the run until the
 * end (see `lib/modes/ns.ts` for the steps). `runNs` imports this module
 * only after it has asked for the set-up (done, or on a worker's thread),
 * so the command, or the worker, is not held up by this module's loading.
 *
 * @module
 */

import type { NsConfig } from "../conf.ts";
import { logDebug, logError, logWarn } from "../log.ts";
import type { GuestNet } from "../net.ts";
import type { NsAccess } from "../ns.ts";
import { pcapClose } from "../pcap.ts";
import { FlowType } from "../flow/table.ts";
import { TcpNsForward } from "../l4/tcp_ns.ts";
import { UdpNsForward } from "../l4/udp_ns.ts";
import { UdpSplice } from "../l4/udp_splice.ts";
import * as sys from "../sys/mod.ts";
import { TuntapBackend } from "../tap/tuntap.ts";
import { Tapir } from "../tapir.ts";
import { prepareServing, startControl } from "./common.ts";
import { commandOf } from "./ns.ts";
import { ForwardTable } from "../forwards.ts";
import { PORT_FWD_NONE } from "../fwd.ts";
import { slirp4netnsApiHandler } from "../api/slirp4netns.ts";
import type { EngineOptions } from "../engines/engine.ts";
import {
  daemonReady,
  isDaemon,
  signalReady,
  watchExitFd,
  watchTargetGone,
} from "../engines/lifecycle.ts";
import { applySandbox, sandboxFilesOf } from "../sandbox.ts";
/**
 * After the command exits, keep forwarding while TCP connections are still
 * finishing and bytes still move, until none has moved for this long. A
 * client that wrote its data and closed has exited, but the namespace's
 * kernel still holds data for the host (its socket outlives the process,
 * and tapir keeps the namespace alive); stopping at once would drop it.
 */
export const DRAIN_IDLE_MS = 2000;
/** The longest drain, however busy: what is still moving then belongs to a process the command left behind. */
export const DRAIN_MAX_MS = 30_000;

/** What `runNs` asked of the namespace before loading this module. */
export interface NsStarted {
  /** The namespace's set-up: the tap. */
  readonly setup: ReturnType<NsAccess["setup"]>;
  /** The command, started right after the set-up (its pid); null if it waits for the forwards. */
  readonly spawned: Promise<number> | null;
}

/**
 * Serves the namespace of `net` through `ns` (its set-up asked: `started`)
 * until the run ends; resolves to the exit status (see `lib/modes/ns.ts`).
 */
export async function serveNs(
  conf: NsConfig,
  net: GuestNet,
  ns: NsAccess,
  started: NsStarted,
  engine: EngineOptions,
): Promise<number> {
  const t = conf.target;
  const argv = commandOf(conf);
  let command = started.spawned;
  let tapir: Tapir | null = null;
  let nsFwd: TcpNsForward | null = null;
  let udpNs: UdpSplice | null = null;
  let udpAuto: UdpNsForward | null = null;
  let tapFd = -1;
  try {
    if (!prepareServing(conf)) return 1;
    let dev;
    try {
      dev = await started.setup;
    } catch (err) {
      logError(`namespace set-up failed: ${(err as Error).message}`);
      return 1;
    }
    tapFd = dev.tapFd;
    logDebug(`tap ${dev.ifname} ready in the namespace`);
    const backend = new TuntapBackend(dev.tapFd, dev.ifname, dev.vnetHdr, conf.offload);
    tapir = new Tapir(net, backend, {
      offload: conf.offload,
      rsc: conf.rsc,
      statsInterval: conf.statsInterval,
      flowCapacity: conf.maxFlows,
    });
    const tr = tapir;
    tr.stats.add("tuntap", backend.stats);
    tr.start();
    // Spliced -t (loopback clients), -T and auto: before the command starts,
    // so its -T ports are there from the first moment. The forward table
    // opens the listed ports; the forwarders keep `auto` to themselves.
    const tcpNsForwarder = new TcpNsForward(tr.loop, tr.splice, tr.tcpListeners, ns, {
      tcp: conf.tcp,
      tcpNs: conf.tcpNs.mode === "auto" ? conf.tcpNs : PORT_FWD_NONE,
      ipv4: net.ip4 !== null,
      ipv6: net.ip6 !== null,
    });
    nsFwd = tcpNsForwarder;
    tr.stats.add("tcp-ns", nsFwd.stats);
    tr.stats.add("ns-pool", nsFwd.pool.stats);
    const udpSplice = new UdpSplice(tr.loop, tr.flows, net);
    udpNs = udpSplice;
    tr.stats.add("udp-splice", udpNs.stats);
    const forwards = new ForwardTable({
      tcp: {
        open: (f) => tr.tcpListeners.bind(f),
        openAll: (f) => tr.tcpListeners.bindAll(f),
        close: (fds) => tr.tcpListeners.closeFds(fds),
        prepare: () => tcpNsForwarder.spliceLoopback(),
      },
      udp: {
        open: (f) => tr.udp.listen(f),
        openAll: (f) => tr.udp.listenAll(f),
        close: (fds) => tr.udp.closeFds(fds),
      },
      "tcp-ns": {
        open: (f) => tcpNsForwarder.listen(f),
        openAll: (f) => tcpNsForwarder.listenAll(f),
        close: (fds) => tcpNsForwarder.closeFds(fds),
      },
      "udp-ns": {
        open: (f) => udpSplice.listen(f, ns),
        openAll: (f) => udpSplice.listenAll(f, ns),
        close: (fds) => udpSplice.closeFds(fds),
      },
    });
    await forwards.start("tcp", conf.tcp);
    await forwards.start("udp", conf.udp);
    await nsFwd.start();
    await forwards.start("tcp-ns", conf.tcpNs);
    await forwards.start("udp-ns", conf.udpNs);
    const api = engine.slirpApi
      ? slirp4netnsApiHandler({
        forwards,
        guest4: engine.slirpApi.guest4,
        guest6: engine.slirpApi.guest6,
      })
      : null;
    if (!startControl(conf, tr, forwards, api)) return 1;
    udpAuto = new UdpNsForward(tapir.loop, tapir.udp, udpNs, ns, {
      udp: conf.udp,
      udpNs: conf.udpNs,
      ipv4: net.ip4 !== null,
      ipv6: net.ip6 !== null,
    });
    tapir.stats.add("udp-ns", udpAuto.stats);
    udpAuto.start();
    const loop = tapir.loop;
    if (conf.pidFile) Deno.writeTextFileSync(conf.pidFile, `${Deno.pid}\n`);
    if (engine.exitFd !== null) {
      const rc = watchExitFd(loop, engine.exitFd);
      if (rc < 0) {
        logError(`exit fd ${engine.exitFd}: cannot watch it: ${sys.errnoName(-rc)}`);
        return 1;
      }
    }
    if (engine.endWithTarget && t.kind !== "spawn") watchTargetGone(loop, t);
    if (engine.readyFd !== null) signalReady(engine.readyFd);
    if (isDaemon()) daemonReady();

    let status = 0;
    if (argv !== null) {
      command ??= ns.spawn(argv);
      try {
        await command;
      } catch (err) {
        logError(`cannot run ${argv[0]}: ${(err as Error).message}`);
        return 1;
      }
      ns.onCommandExit((code) => {
        status = code;
        const reason = `command exited with status ${code}`;
        const tr = tapir!;
        const start = performance.now();
        const moved = () =>
          tr.tcp.stats.bytesToHost + tr.tcp.stats.bytesToGuest +
          tr.splice.stats.bytesToHost + tr.splice.stats.bytesToGuest;
        let lastMoved = moved();
        let lastMoveAt = start;
        const drain = () => {
          const open = tr.flows.countType(FlowType.TCP) +
            tr.flows.countType(FlowType.TCP_SPLICE);
          const now = performance.now();
          const m = moved();
          if (m !== lastMoved) [lastMoved, lastMoveAt] = [m, now];
          if (open === 0) return loop.stop(reason);
          if (now - lastMoveAt > DRAIN_IDLE_MS || now - start > DRAIN_MAX_MS) {
            logWarn(`stopping with ${open} TCP connection(s) of the namespace still open`);
            return loop.stop(reason);
          }
          loop.after(10, drain);
        };
        // From the loop's next turn, after it has read the tap: a command
        // that exited before the loop ran may have left frames there.
        loop.post(drain);
      });
    }
    if (conf.sandbox) applySandbox(sandboxFilesOf(conf));
    const reason = await loop.run();
    logDebug(`stopped: ${reason}`);
    return tapir.backendError ? 0 : status;
  } finally {
    // Set-up failed after the command started, or tapir was told to stop
    // while it runs: it would be left without a network, so end it too.
    if (command !== null && !ns.commandExited) {
      const pid = await command.catch(() => 0);
      if (pid > 0 && !ns.commandExited) {
        try {
          Deno.kill(pid, "SIGTERM");
        } catch (err) {
          logWarn(`cannot stop the command (pid ${pid}): ${(err as Error).message}`);
        }
      }
    }
    pcapClose();
    ns.terminate();
    nsFwd?.close();
    udpAuto?.close();
    udpNs?.close();
    tapir?.tcpListeners.close();
    tapir?.splice.close();
    tapir?.udp.close();
    tapir?.loop.close();
    if (tapFd >= 0) sys.close(tapFd);
    if (conf.pidFile) {
      try {
        Deno.removeSync(conf.pidFile);
      } catch { /* already gone */ }
    }
  }
}
