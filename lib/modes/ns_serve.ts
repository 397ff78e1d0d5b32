/**
 * Namespace mode once the worker is starting: the host's facts, the
 * guest's addresses, the namespace's set-up, the translator with its
 * forwards and control socket, and the run until the end (see
 * `lib/modes/ns.ts` for the steps). `runNs` imports this module only after
 * it has started the namespace worker, so the two threads load their
 * modules at the same time.
 *
 * @module
 */

import type { NsConfig } from "../conf.ts";
import { logDebug, logError, logWarn } from "../log.ts";
import { hostFacts, u32ToIp4 } from "../net.ts";
import { type NsAddress, type NsRoute, type NsTargetSpec, type NsWorker } from "../ns.ts";
import { pcapClose } from "../pcap.ts";
import { FlowType } from "../flow/table.ts";
import { TcpNsForward } from "../l4/tcp_ns.ts";
import { UdpNsForward } from "../l4/udp_ns.ts";
import { UdpSplice } from "../l4/udp_splice.ts";
import * as sys from "../sys/mod.ts";
import { TuntapBackend } from "../tap/tuntap.ts";
import { Tapir } from "../tapir.ts";
import { prepareGuest, startControl } from "./common.ts";
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

/**
 * Serves the namespace through `worker` (just started, still loading) until
 * the run ends; resolves to the exit status (see `lib/modes/ns.ts`).
 */
export async function serveNs(
  conf: NsConfig,
  worker: NsWorker,
  engine: EngineOptions,
): Promise<number> {
  const t = conf.target;
  const host = hostFacts();
  const net = prepareGuest(conf, host);
  if (net === null) {
    worker.terminate();
    return 1;
  }
  const ifname = conf.ifname ?? host.ifname ?? "tap0";

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
  const target: NsTargetSpec = t.kind === "spawn"
    ? { kind: "new" }
    : t.kind === "pid"
    ? { kind: "pid", pid: t.pid }
    : { kind: "path", path: t.path };

  let tapir: Tapir | null = null;
  let nsFwd: TcpNsForward | null = null;
  let udpNs: UdpSplice | null = null;
  let udpAuto: UdpNsForward | null = null;
  let tapFd = -1;
  try {
    let dev;
    try {
      dev = await worker.setup({
        target,
        ifname,
        configNet: conf.configNet,
        mtu: conf.mtu,
        addresses,
        routes,
        mac: engine.mac ? [...engine.mac] : null,
      });
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
    const tcpNsForwarder = new TcpNsForward(tr.loop, tr.splice, tr.tcpListeners, worker, {
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
        open: (f) => udpSplice.listen(f, worker),
        openAll: (f) => udpSplice.listenAll(f, worker),
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
    udpAuto = new UdpNsForward(tapir.loop, tapir.udp, udpNs, worker, {
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
    let childPid = 0;
    let childRunning = false;
    if (t.kind === "spawn") {
      const argv = t.command.length > 0 ? t.command : [Deno.env.get("SHELL") || "/bin/sh"];
      try {
        childPid = await worker.spawn(argv, (code) => {
          childRunning = false;
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
          drain();
        });
        childRunning = true;
      } catch (err) {
        logError(`cannot run ${argv[0]}: ${(err as Error).message}`);
        return 1;
      }
    }
    const reason = await loop.run();
    logDebug(`stopped: ${reason}`);
    if (childRunning) {
      // tapir was told to stop while the command still runs: it would be left
      // without a network, so end it too.
      try {
        Deno.kill(childPid, "SIGTERM");
      } catch (err) {
        logWarn(`cannot stop the command (pid ${childPid}): ${(err as Error).message}`);
      }
    }
    return tapir.backendError ? 0 : status;
  } finally {
    pcapClose();
    worker.terminate();
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
