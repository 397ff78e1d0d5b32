/**
 * The forwarding tables as they stand now: what `-t`, `-u`, `-T` and `-U`
 * opened at start-up, and what the control socket added or removed since.
 *
 * # Theory of operation
 *
 * Each table (`tcp`, `udp`: host → guest; `tcp-ns`, `udp-ns`: namespace →
 * host) is a list of entries, one per forward: its spec as `forwards`
 * shows it, the parsed value, and the sockets opened for it. The sockets
 * belong to the module that serves them (TCP listeners, UDP listeners, the
 * namespace forwarders); this module only asks it to open a forward's
 * sockets and, when the forward is removed, to close exactly those. A
 * connection already accepted through a removed forward is a flow of its
 * own and lives on; a UDP flow shares its listener, so it ends with it.
 *
 * At start-up a spec of listed ports becomes one entry per rule, so each
 * rule can be removed on its own (`-t 8080:80,9000` gives `8080:80` and
 * `9000`); a keyword (`all`, `auto`) or a spec with exclusions stays one
 * entry. Ports that cannot be bound at start-up are skipped, as always.
 *
 * At run time a forward is all or nothing: every socket it needs is
 * opened, or none is and the request fails with the reason (the port is in
 * use, …). Only listed ports can be added — `all` and `auto` change how the
 * whole table works and stay start-up choices. A new forward may not
 * overlap one already there (the same rule as for repeated options). The
 * entry is in the table from the moment the request is accepted, so two
 * requests racing for the same port cannot both pass the overlap check
 * while their sockets are being made.
 *
 * @module
 */

import { type PortFwd, portFwdAdd, portFwdFormat, portFwdRules, portRuleFormat } from "./fwd.ts";

/** The four tables, by the name requests use. */
export type ForwardProto = "tcp" | "udp" | "tcp-ns" | "udp-ns";

/** Every table name, in the order `forwards` lists them. */
export const FORWARD_PROTOS: readonly ForwardProto[] = ["tcp", "udp", "tcp-ns", "udp-ns"];

/** The command-line option of each table. */
export const FORWARD_OPTION: Readonly<Record<ForwardProto, string>> = {
  tcp: "-t",
  udp: "-u",
  "tcp-ns": "-T",
  "udp-ns": "-U",
};

/** What opens and closes one table's sockets. */
export interface ForwardSockets {
  /** Opens sockets for the ports of `fwd`, skipping those that fail (start-up); the fds opened. */
  open(fwd: PortFwd): number[] | Promise<number[]>;
  /** Opens sockets for every port of `fwd`, all or nothing (run time): the fds, or why not. */
  openAll(fwd: PortFwd): number[] | string | Promise<number[] | string>;
  /** Closes sockets opened for a forward. */
  close(fds: readonly number[]): void;
  /** Runs once before the first forward of the table is opened at run time. */
  prepare?(): Promise<void>;
}

/** One forward as `forwards` lists it. */
export interface ForwardEntry {
  /** The table. */
  readonly proto: ForwardProto;
  /** The spec, as `-t` and friends take it. */
  readonly spec: string;
}

/** A request the table refuses; the message is for the client. */
export class ForwardError extends Error {}

interface Entry extends ForwardEntry {
  readonly fwd: PortFwd;
  fds: readonly number[];
  /** Still opening its sockets (a run-time add). */
  pending: boolean;
}

/** The forwarding tables; see the module comment. */
export class ForwardTable {
  readonly #sockets: Partial<Record<ForwardProto, ForwardSockets>>;
  readonly #entries: Entry[] = [];
  readonly #prepared = new Set<ForwardProto>();

  /** A table for each protocol in `sockets` (namespace mode has all four, VM mode `tcp` and `udp`). */
  constructor(sockets: Partial<Record<ForwardProto, ForwardSockets>>) {
    this.#sockets = sockets;
  }

  /** Opens what the command line asked for in table `proto` (see the module comment). */
  async start(proto: ForwardProto, fwd: PortFwd): Promise<void> {
    const s = this.#socketsOf(proto);
    if (fwd.mode === "none") return;
    if (fwd.mode === "ports" && fwd.excluded.length === 0) {
      for (const rule of fwd.rules) {
        const one = portFwdAdd(null, portRuleFormat(rule)) as PortFwd;
        const fds = await s.open(one);
        this.#entries.push({ proto, spec: portRuleFormat(rule), fwd: one, fds, pending: false });
      }
      return;
    }
    const fds = await s.open(fwd);
    this.#entries.push({ proto, spec: portFwdFormat(fwd), fwd, fds, pending: false });
  }

  /** The forwards of every table now. */
  list(): ForwardEntry[] {
    const out: ForwardEntry[] = [];
    for (const proto of FORWARD_PROTOS) {
      for (const e of this.#entries) {
        if (e.proto === proto && !e.pending) out.push({ proto, spec: e.spec });
      }
    }
    return out;
  }

  /**
   * Adds a forward at run time: parses `spec`, checks it overlaps no
   * forward of the table, opens its sockets. Resolves to the entry, or
   * rejects with a {@linkcode ForwardError} saying why not.
   */
  async add(proto: ForwardProto, spec: string): Promise<ForwardEntry> {
    const s = this.#socketsOf(proto);
    const fwd = this.#parse(proto, spec);
    if (fwd.mode !== "ports" || fwd.excluded.length > 0) {
      throw new ForwardError(
        `${FORWARD_OPTION[proto]} ${spec}: only listed ports can be added at run time ` +
          "(not none, all, auto or ~exclusions)",
      );
    }
    let all: PortFwd | null = null;
    for (const e of this.#entries) {
      if (e.proto !== proto || e.fwd.mode !== "ports") continue;
      for (const rule of portFwdRules(e.fwd)) {
        all = portFwdAdd(all, portRuleFormat(rule)) as PortFwd;
      }
    }
    for (const rule of fwd.rules) {
      const clash = portFwdAdd(all, portRuleFormat(rule));
      if (typeof clash === "string") {
        throw new ForwardError(
          `${FORWARD_OPTION[proto]} ${spec}: ${
            clash.replace("is forwarded twice", "is already forwarded")
          }`,
        );
      }
    }
    const entry: Entry = { proto, spec: portFwdFormat(fwd), fwd, fds: [], pending: true };
    this.#entries.push(entry);
    try {
      if (s.prepare && !this.#prepared.has(proto)) {
        this.#prepared.add(proto);
        await s.prepare();
      }
      const fds = await s.openAll(fwd);
      if (typeof fds === "string") {
        throw new ForwardError(`${FORWARD_OPTION[proto]} ${spec}: ${fds}`);
      }
      entry.fds = fds;
      entry.pending = false;
      return { proto, spec: entry.spec };
    } catch (err) {
      this.#entries.splice(this.#entries.indexOf(entry), 1);
      throw err instanceof ForwardError ? err : new ForwardError((err as Error).message);
    }
  }

  /**
   * Removes a forward at run time: closes its sockets; connections made
   * through it live on. `spec` names it as `forwards` lists it (or in any
   * form that parses to the same). Throws {@linkcode ForwardError} if the
   * table has no such forward.
   */
  remove(proto: ForwardProto, spec: string): ForwardEntry {
    const s = this.#socketsOf(proto);
    const want = portFwdFormat(this.#parse(proto, spec));
    const i = this.#entries.findIndex((e) => e.proto === proto && e.spec === want);
    if (i < 0) throw new ForwardError(`no ${proto} forward '${spec}' (see forwards)`);
    const e = this.#entries[i];
    if (e.pending) throw new ForwardError(`${proto} forward '${spec}' is still being added`);
    if (e.fwd.mode === "auto") {
      throw new ForwardError(`${FORWARD_OPTION[proto]} auto cannot be removed at run time`);
    }
    this.#entries.splice(i, 1);
    s.close(e.fds);
    return { proto, spec: e.spec };
  }

  #socketsOf(proto: ForwardProto): ForwardSockets {
    const s = this.#sockets[proto];
    if (s === undefined) {
      throw new ForwardError(
        FORWARD_PROTOS.includes(proto)
          ? `${proto} forwards need namespace mode`
          : `unknown proto '${proto}': one of ${FORWARD_PROTOS.join(", ")}`,
      );
    }
    return s;
  }

  #parse(proto: ForwardProto, spec: string): PortFwd {
    const fwd = portFwdAdd(null, spec);
    if (typeof fwd === "string") {
      throw new ForwardError(`${FORWARD_OPTION[proto]} ${spec}: ${fwd}`);
    }
    return fwd;
  }
}
