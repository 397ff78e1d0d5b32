/**
 * tapir's own requests on the control socket (`--api-socket PATH`).
 *
 * Every request is a JSON object with a `cmd`; every reply is
 * `{"return": VALUE}` or `{"error": {"desc": "…"}}` (the shapes slirp4netns's
 * API uses, so one client library reads both):
 *
 * | request                                              | `return`                      |
 * | ---------------------------------------------------- | ----------------------------- |
 * | `{"cmd":"stats"}`                                    | the statistics report         |
 * | `{"cmd":"flows"}`                                    | `{flows: [...], total}`       |
 * | `{"cmd":"forwards"}`                                 | `{forwards: [{proto, spec}]}` |
 * | `{"cmd":"forward-add","proto":"tcp","spec":"80"}`    | `{proto, spec}`               |
 * | `{"cmd":"forward-remove","proto":"tcp","spec":"80"}` | `{proto, spec}`               |
 * | `{"cmd":"pcap-start","path":"/tmp/x.pcap"}`          | `{path}`                      |
 * | `{"cmd":"pcap-stop"}`                                | `{path, frames}`              |
 *
 * The statistics report is the same object SIGUSR2 logs (see
 * `Tapir.statsReport`). Clients asking for it in the same loop turn share
 * one serialised copy: fifty clients polling in a tight loop then cost one
 * snapshot per turn, not fifty, and the data path keeps its CPU.
 *
 * @module
 */

import {
  addrWordsFormat,
  FLOW_STATE_NAMES,
  FLOW_TYPE_NAMES,
  FlowSide,
  flowSidx,
  FlowState,
  type FlowTable,
  type FlowType,
  type Pif,
  PIF_NAMES,
} from "../flow/table.ts";
import { FORWARD_PROTOS, ForwardError, type ForwardProto, type ForwardTable } from "../forwards.ts";
import { logInfo } from "../log.ts";
import { pcapClose, pcapOpen, pcapStatus } from "../pcap.ts";
import type { Tapir } from "../tapir.ts";
import { type ApiHandler, ApiRawReply } from "./server.ts";

/** Most flows one `flows` reply lists (`total` says how many there are). */
export const FLOWS_REPLY_MAX = 4096;

/** One side of a flow, as `flows` lists it. */
export interface FlowSideReport {
  /** Where the side is: `TAP` (the guest), `HOST` (host sockets), `SPLICE` (namespace loopback). */
  readonly pif: string;
  /** The far end's address and port on that side. */
  readonly peerAddr: string;
  readonly peerPort: number;
  /** tapir's own address and port on that side. */
  readonly localAddr: string;
  readonly localPort: number;
}

/** One flow, as `flows` lists it. */
export interface FlowReport {
  /** The flow's index in the table. */
  readonly index: number;
  /** `TCP`, `UDP`, `PING4`, … */
  readonly type: string;
  /** Life-cycle state (`ACTIVE` for a flow in use). */
  readonly state: string;
  /** Seconds since the flow was made. */
  readonly age: number;
  /** The side that opened the flow. */
  readonly ini: FlowSideReport;
  /** The side it was opened to (null until it is known). */
  readonly tgt: FlowSideReport | null;
  /** Payload bytes passed on from the initiator to the target, and back. */
  readonly bytesIniToTgt: number;
  readonly bytesTgtToIni: number;
}

/** The live flows of `flows` (up to `max`), oldest index first. */
export function flowsReport(
  flows: FlowTable,
  max = FLOWS_REPLY_MAX,
): { flows: FlowReport[]; total: number } {
  const out: FlowReport[] = [];
  const side = new FlowSide();
  const now = performance.now();
  let total = 0;
  const sideReport = (sidx: number): FlowSideReport => {
    flows.readSide(sidx, side);
    return {
      pif: PIF_NAMES[side.pif as Pif],
      peerAddr: addrWordsFormat(side.eaddr),
      peerPort: side.eport,
      localAddr: addrWordsFormat(side.oaddr),
      localPort: side.oport,
    };
  };
  flows.forEachUsed((index) => {
    total++;
    if (out.length >= max) return;
    out.push({
      index,
      type: FLOW_TYPE_NAMES[flows.type(index) as FlowType] ?? "NONE",
      state: FLOW_STATE_NAMES[flows.state(index) as FlowState],
      age: Math.round(now - flows.bornMs(index)) / 1000,
      ini: sideReport(flowSidx(index, 0)),
      tgt: flows.state(index) >= FlowState.TGT ? sideReport(flowSidx(index, 1)) : null,
      bytesIniToTgt: flows.bytesFrom[flowSidx(index, 0)],
      bytesTgtToIni: flows.bytesFrom[flowSidx(index, 1)],
    });
  });
  return { flows: out, total };
}

/** What the control requests act on. */
export interface ControlContext {
  /** The translator. */
  readonly tapir: Tapir;
  /** The forwarding tables. */
  readonly forwards: ForwardTable;
}

class RequestError extends Error {}

function stringField(req: Record<string, unknown>, name: string): string {
  const v = req[name];
  if (typeof v !== "string" || v === "") {
    throw new RequestError(`'${req.cmd}' needs "${name}" (a non-empty string)`);
  }
  return v;
}

function protoField(req: Record<string, unknown>): ForwardProto {
  const proto = stringField(req, "proto");
  if (!(FORWARD_PROTOS as readonly string[]).includes(proto)) {
    throw new RequestError(`unknown proto '${proto}': one of ${FORWARD_PROTOS.join(", ")}`);
  }
  return proto as ForwardProto;
}

const REQUESTS = ["stats", "flows", "forwards", "forward-add", "forward-remove", "pcap-start"];

/** The handler of tapir's control requests (see the module comment) for {@linkcode ApiServer}. */
export function controlHandler(ctx: ControlContext): ApiHandler {
  const { tapir, forwards } = ctx;
  let statsTurn = -1;
  let statsReply: ApiRawReply | null = null;
  const stats = () => {
    const turn = tapir.loop.stats.turns;
    if (statsReply === null || turn !== statsTurn) {
      statsReply = new ApiRawReply({ return: tapir.statsReport() });
      statsTurn = turn;
    }
    return statsReply;
  };
  const answer = (req: Record<string, unknown>): unknown => {
    switch (req.cmd) {
      case "stats":
        return stats();
      case "flows":
        return { return: flowsReport(tapir.flows) };
      case "forwards":
        return { return: { forwards: forwards.list() } };
      case "forward-add":
        return forwards.add(protoField(req), stringField(req, "spec")).then((added) => {
          logInfo(`api: forwarding ${added.proto} ${added.spec}`);
          return { return: added };
        });
      case "forward-remove": {
        const removed = forwards.remove(protoField(req), stringField(req, "spec"));
        logInfo(`api: no longer forwarding ${removed.proto} ${removed.spec}`);
        return { return: removed };
      }
      case "pcap-start": {
        const path = stringField(req, "path");
        const now = pcapStatus();
        if (now !== null) throw new RequestError(`a capture is already running to ${now.path}`);
        try {
          pcapOpen(path);
        } catch (err) {
          throw new RequestError(`cannot open ${path}: ${(err as Error).message}`);
        }
        logInfo(`api: capturing to ${path}`);
        return { return: { path } };
      }
      case "pcap-stop": {
        const now = pcapStatus();
        if (now === null) throw new RequestError("no capture is running");
        pcapClose();
        logInfo(`api: capture ${now.path} closed, ${now.frames} frames`);
        return { return: now };
      }
      case undefined:
        throw new RequestError(`missing "cmd": one of ${REQUESTS.join(", ")}, pcap-stop`);
      default:
        throw new RequestError(
          `unknown request ${JSON.stringify(req.cmd)}: one of ${REQUESTS.join(", ")}, pcap-stop`,
        );
    }
  };
  const refusal = (err: unknown) => {
    if (err instanceof RequestError || err instanceof ForwardError) {
      return { error: { desc: err.message } };
    }
    throw err;
  };
  // Synchronous requests are answered synchronously: only a forward being
  // added waits (for sockets made in the namespace).
  return (req) => {
    try {
      const reply = answer(req);
      return reply instanceof Promise ? reply.catch(refusal) : reply;
    } catch (err) {
      return refusal(err);
    }
  };
}
