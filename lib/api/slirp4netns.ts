/**
 * slirp4netns's API on tapir's control socket: `add_hostfwd`,
 * `list_hostfwd`, `remove_hostfwd`.
 *
 * podman's `port_handler=slirp4netns` and rootlesskit's slirp4netns port
 * driver publish ports through this API. A client connects, writes one JSON
 * object (with or without a newline), shuts down its write side and reads
 * the reply until the end of the stream; the server
 * (`lib/api/server.ts`) already serves that shape. This module gives each
 * request its meaning, with slirp4netns's replies:
 *
 * - `{"execute":"add_hostfwd","arguments":{"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80}}`
 *   → `{"return":{"id":1}}`. `proto` is tcp or udp, optionally ending in 4
 *   or 6 to pick one family; `host_addr` defaults to 0.0.0.0, which means
 *   both families when IPv6 is on (as do `::` and `::0`); `guest_addr`
 *   defaults to the guest's address, and must be it (tapir serves one guest).
 * - `{"execute":"list_hostfwd"}` → `{"entries":[{"id":1,"proto":"tcp",
 *   "host_addr":…,"host_addr6":…,"host_port":…,"guest_addr":…,"guest_addr6":…,
 *   "guest_port":…}]}` (each family's fields only when the entry has it).
 * - `{"execute":"remove_hostfwd","arguments":{"id":1}}` → `{"return":{}}`.
 * - A refusal is `{"error":{"desc":"bad request: add_hostfwd: bad arguments.…"}}`.
 *
 * Each entry is one tapir forward (a `-t`/`-u` spec in the
 * {@linkcode ForwardTable}: `H:G` for the wildcard of both families,
 * `ADDR/H:G` otherwise), added all or nothing and removed with it.
 *
 * @module
 */

import { formatIp4, formatIp6, ipEqual, parseIp } from "../addr.ts";
import { type ForwardProto, type ForwardTable } from "../forwards.ts";
import type { ApiHandler } from "./server.ts";

/** What the slirp4netns API needs to know of the run. */
export interface Slirp4netnsApiContext {
  /** The forwarding tables the entries live in. */
  readonly forwards: ForwardTable;
  /** The guest's IPv4 address (the default `guest_addr`). */
  readonly guest4: Uint8Array;
  /** The guest's IPv6 address, or null when IPv6 is off. */
  readonly guest6: Uint8Array | null;
}

interface HostFwd {
  readonly id: number;
  readonly udp: boolean;
  readonly host4: string | null;
  readonly host6: string | null;
  readonly hostPort: number;
  readonly guestPort: number;
  /** The tapir forward behind it. */
  readonly spec: { readonly proto: ForwardProto; readonly spec: string };
}

function bad(what: string): { error: { desc: string } } {
  return { error: { desc: `bad request: ${what}` } };
}

/** A port number from a JSON value, as slirp4netns reads it (a number, truncated); 0 if not one. */
function portOf(v: unknown): number {
  if (typeof v !== "number" || !Number.isFinite(v)) return 0;
  const n = Math.trunc(v);
  return n >= 1 && n <= 65535 ? n : 0;
}

/** Handles slirp4netns API requests; see the module comment. */
export function slirp4netnsApiHandler(ctx: Slirp4netnsApiContext): ApiHandler {
  const entries: HostFwd[] = [];
  let nextId = 1;

  const add = async (args: Record<string, unknown>): Promise<unknown> => {
    const protoText = typeof args.proto === "string" ? args.proto : "";
    const m = /^(tcp|udp)([46]?)$/.exec(protoText);
    if (m === null) return bad("add_hostfwd: bad arguments.proto");
    const udp = m[1] === "udp";
    if (m[2] === "6" && ctx.guest6 === null) return bad("add_hostfwd: bad arguments.proto");
    let hostText = typeof args.host_addr === "string" ? args.host_addr : "";
    if (hostText === "") hostText = "0.0.0.0";
    let v4 = false;
    let v6 = false;
    let host4: string | null = null;
    let host6: string | null = null;
    if (hostText === "0.0.0.0" || hostText === "::" || hostText === "::0") {
      v4 = true;
      v6 = ctx.guest6 !== null;
      host4 = "0.0.0.0";
      host6 = "::";
    } else {
      const ip = parseIp(hostText);
      if (ip === null) return bad("add_hostfwd: bad arguments.host_addr");
      if (ip.family === 6 && ctx.guest6 === null) {
        return bad("add_hostfwd: bad arguments.host_addr");
      }
      if (ip.family === 4) [v4, host4] = [true, hostText];
      else [v6, host6] = [true, hostText];
    }
    if (m[2] === "4") [v4, v6] = [true, false];
    if (m[2] === "6") [v4, v6] = [false, true];
    if (v4 && host4 === null) return bad("add_hostfwd: bad arguments.host_addr");
    if (v6 && host6 === null) return bad("add_hostfwd: bad arguments.host_addr");
    const hostPort = portOf(args.host_port);
    if (hostPort === 0) return bad("add_hostfwd: bad arguments.host_port");
    const guestPort = portOf(args.guest_port);
    if (guestPort === 0) return bad("add_hostfwd: bad arguments.guest_port");
    const guestText = typeof args.guest_addr === "string" ? args.guest_addr : "";
    if (guestText !== "") {
      const g = parseIp(guestText);
      const ours = g?.family === 4 ? ctx.guest4 : ctx.guest6;
      if (g === null || ours === null || !ipEqual(g.bytes, ours)) {
        return bad("add_hostfwd: bad arguments.guest_addr");
      }
    }

    const proto: ForwardProto = udp ? "udp" : "tcp";
    const ports = `${hostPort}:${guestPort}`;
    // Both families only come from the wildcard, which one tapir spec covers.
    const spec = v4 && v6 ? ports : `${v4 ? host4 : host6}/${ports}`;
    let added: { proto: ForwardProto; spec: string };
    try {
      added = await ctx.forwards.add(proto, spec);
    } catch (err) {
      return bad(`add_hostfwd: ${(err as Error).message}`);
    }
    const id = nextId++;
    entries.push({
      id,
      udp,
      host4: v4 ? host4 : null,
      host6: v6 ? host6 : null,
      hostPort,
      guestPort,
      spec: added,
    });
    return { return: { id } };
  };

  const list = (): unknown => ({
    entries: entries.map((e) => {
      const out: Record<string, unknown> = { id: e.id, proto: e.udp ? "udp" : "tcp" };
      if (e.host4 !== null) out.host_addr = e.host4;
      if (e.host6 !== null) out.host_addr6 = e.host6;
      out.host_port = e.hostPort;
      if (e.host4 !== null) out.guest_addr = formatIp4(ctx.guest4);
      if (e.host6 !== null && ctx.guest6 !== null) out.guest_addr6 = formatIp6(ctx.guest6);
      out.guest_port = e.guestPort;
      return out;
    }),
  });

  const remove = (args: Record<string, unknown>): unknown => {
    const i = entries.findIndex((e) => e.id === args.id);
    if (i < 0) return bad("remove_hostfwd: bad arguments.id");
    const [e] = entries.splice(i, 1);
    ctx.forwards.remove(e.spec.proto, e.spec.spec);
    return { return: {} };
  };

  return (request) => {
    const execute = request.execute;
    if (typeof execute !== "string") return bad("no execute found");
    const raw = request.arguments;
    const args = typeof raw === "object" && raw !== null && !Array.isArray(raw)
      ? raw as Record<string, unknown>
      : {};
    switch (execute) {
      case "add_hostfwd":
        return add(args);
      case "list_hostfwd":
        return list();
      case "remove_hostfwd":
        return remove(args);
      default:
        return bad("unknown execute");
    }
  };
}
