/**
 * `tapir ctl`: a client, for people, of a running tapir's control socket
 * (`--api-socket PATH`).
 *
 * The protocol is newline-delimited JSON over a UNIX stream socket: the client
 * writes one request object per line, such as `{"cmd":"stats"}`, and tapir
 * answers each with one line, `{"return": VALUE}` or `{"error": {"desc": "…"}}`.
 *
 * This module turns command words into a request ({@link ctlRequestFromArgs}),
 * sends it ({@link ctlCall}), and prints the reply as a table or a short
 * confirmation ({@link formatStats}, {@link formatFlows}, {@link formatForwards},
 * {@link formatConfirmation}), or as raw JSON with `--json`. {@link runCtl}
 * ties these together for `main.ts`.
 *
 * Every message for a user error is one line starting with `ctl: `, printed
 * as `tapir ctl: …`.
 *
 * @module
 */

import type { FlowReport, FlowSideReport } from "./api/control.ts";
import { FORWARD_PROTOS, type ForwardEntry, type ForwardProto } from "./forwards.ts";
import type { StatsReport, TrafficCount } from "./tapir.ts";

/** A user-facing failure of `tapir ctl`: bad words, no connection, or a bad reply; one line. */
export class CtlError extends Error {
  /** Makes an error with a one-line `message` (by convention starting with `ctl: `). */
  constructor(message: string) {
    super(message);
    this.name = "CtlError";
  }
}

/** A request for the control socket: `cmd` plus its arguments, sent as one JSON line. */
export type CtlRequest =
  | { readonly cmd: "stats" }
  | { readonly cmd: "flows" }
  | { readonly cmd: "forwards" }
  | {
    readonly cmd: "forward-add" | "forward-remove";
    readonly proto: ForwardProto;
    readonly spec: string;
  }
  | { readonly cmd: "pcap-start"; readonly path: string }
  | { readonly cmd: "pcap-stop" };

/** Forward kinds: `tcp`/`udp` host → guest (`-t`/`-u`), `tcp-ns`/`udp-ns` namespace → host (`-T`/`-U`). */
export type { ForwardProto };

const PROTOS: readonly ForwardProto[] = FORWARD_PROTOS;

/** One reply line: a successful `return` value, or an error with its description. */
export type CtlReply =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly desc: string };

/** Bytes and frames one way (the server's {@linkcode TrafficCount}). */
export type CtlTraffic = TrafficCount;

/** The `return` value of `{"cmd":"stats"}` (the server's {@linkcode StatsReport}). */
export type CtlStats = StatsReport;

/** One side of a flow (the server's {@linkcode FlowSideReport}). */
export type CtlFlowSide = FlowSideReport;

/** One flow in the `return` value of `{"cmd":"flows"}` (the server's {@linkcode FlowReport}). */
export type CtlFlow = FlowReport;

/** The `return` value of `{"cmd":"flows"}`. */
export interface CtlFlows {
  /** The live flows (at most the server's limit). */
  readonly flows: readonly CtlFlow[];
  /** How many flows there are in all. */
  readonly total?: number;
}

/** One port forward (the server's {@linkcode ForwardEntry}). */
export type CtlForward = ForwardEntry;

/** The `return` value of `{"cmd":"forwards"}`. */
export interface CtlForwards {
  /** The configured forwards. */
  readonly forwards: readonly CtlForward[];
}

/**
 * Maps command words (after the options) to a request:
 * `stats` (also no words at all), `flows`, `forward [ls|list]` (also `forwards`),
 * `forward add PROTO SPEC`, `forward rm|remove PROTO SPEC`, `pcap start FILE`
 * and `pcap stop`. A relative FILE is made absolute against `cwd` (default: the
 * current directory), since tapir's own directory may differ.
 *
 * @throws {CtlError} one line naming what is wrong with the words.
 */
export function ctlRequestFromArgs(words: readonly string[], cwd?: string): CtlRequest {
  switch (words[0]) {
    case undefined:
    case "stats":
      noMore(words, 1, "stats");
      return { cmd: "stats" };
    case "flows":
      noMore(words, 1, "flows");
      return { cmd: "flows" };
    case "forward":
    case "forwards":
      return forwardRequest(words);
    case "pcap":
      return pcapRequest(words, cwd);
    default:
      throw new CtlError(`ctl: unknown request '${words[0]}'; one of stats, flows, forward, pcap`);
  }
}

/** Refuses words beyond the first `used` ones. */
function noMore(words: readonly string[], used: number, what: string): void {
  if (words.length > used) {
    throw new CtlError(`ctl: ${what} takes no more arguments; unexpected '${words[used]}'`);
  }
}

/** `forward [ls|list]`, `forward add PROTO SPEC`, `forward rm|remove PROTO SPEC`. */
function forwardRequest(words: readonly string[]): CtlRequest {
  const sub = words[1];
  switch (sub) {
    case undefined:
    case "ls":
    case "list":
      noMore(words, 2, words.slice(0, 2).join(" "));
      return { cmd: "forwards" };
    case "add":
    case "rm":
    case "remove": {
      if (words.length < 4) throw new CtlError(`ctl: forward ${sub} needs PROTO and SPEC`);
      noMore(words, 4, `forward ${sub} PROTO SPEC`);
      const [proto, spec] = words.slice(2);
      if (!(PROTOS as readonly string[]).includes(proto)) {
        throw new CtlError(`ctl: PROTO must be tcp, udp, tcp-ns or udp-ns, not '${proto}'`);
      }
      if (spec === "") throw new CtlError(`ctl: forward ${sub}: SPEC is empty`);
      const cmd = sub === "add" ? "forward-add" : "forward-remove";
      return { cmd, proto: proto as ForwardProto, spec };
    }
    default:
      throw new CtlError(`ctl: unknown forward request '${sub}'; one of ls, add, rm`);
  }
}

/** `pcap start FILE` (FILE made absolute against `cwd`), `pcap stop`. */
function pcapRequest(words: readonly string[], cwd: string | undefined): CtlRequest {
  const sub = words[1];
  switch (sub) {
    case "start": {
      const file = words[2];
      if (file === undefined || file === "") throw new CtlError("ctl: pcap start needs FILE");
      noMore(words, 3, "pcap start FILE");
      return {
        cmd: "pcap-start",
        path: absolutePath(file, cwd ?? Deno.cwd()),
      };
    }
    case "stop":
      noMore(words, 2, "pcap stop");
      return { cmd: "pcap-stop" };
    case undefined:
      throw new CtlError("ctl: pcap needs 'start FILE' or 'stop'");
    default:
      throw new CtlError(`ctl: unknown pcap request '${sub}'; one of start, stop`);
  }
}

/**
 * `file` made absolute against directory `cwd`, with `.` and `..` resolved
 * (`..` at the root stays there). Not `node:path`: importing it loads
 * Deno's Node compatibility layer, ~15 ms, and a bundle pays that at every
 * start, whichever mode runs.
 */
export function absolutePath(file: string, cwd: string): string {
  const parts: string[] = [];
  for (const part of `${file.startsWith("/") ? "" : cwd}/${file}`.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Replies larger than this are refused, so a broken peer cannot exhaust memory. */
const MAX_REPLY = 64 << 20;

/** One line from an error of the system or of `JSON.parse`. */
function oneLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return text.replace(/\s*\n\s*/g, " ").trim();
}

/**
 * Sends `request` to the control socket at `path` and returns its reply:
 * connects, writes one JSON line, reads until one full reply line, closes.
 * Gives up after `timeoutMs` milliseconds (default 5000) in all.
 *
 * @throws {CtlError} one line naming the socket when it cannot be reached, does
 * not answer in time, or answers something that is not a reply.
 */
export async function ctlCall(
  path: string,
  request: CtlRequest | Readonly<Record<string, unknown>>,
  timeoutMs = 5000,
): Promise<CtlReply> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  let conn: Deno.UnixConn | null = null;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new CtlError(`ctl: no reply from ${path} within ${timeoutMs / 1000}s`));
      try {
        conn?.close(); // interrupts a pending read or write
      } catch { /* already closed */ }
    }, timeoutMs);
  });
  deadline.catch(() => {}); // the race below reports it
  try {
    const connecting = Deno.connect({ transport: "unix", path });
    connecting.then((c) => timedOut && c.close(), () => {}); // late connection after a timeout
    try {
      conn = await Promise.race([connecting, deadline]);
    } catch (err) {
      if (err instanceof CtlError) throw err;
      throw new CtlError(`ctl: cannot connect to ${path}: ${oneLine(err)}`);
    }
    return await Promise.race([exchange(conn, path, request), deadline]);
  } catch (err) {
    if (timedOut) throw new CtlError(`ctl: no reply from ${path} within ${timeoutMs / 1000}s`);
    if (err instanceof CtlError) throw err;
    throw new CtlError(`ctl: ${path}: ${oneLine(err)}`);
  } finally {
    clearTimeout(timer);
    if (!timedOut) {
      try {
        conn?.close();
      } catch { /* already closed */ }
    }
  }
}

/** Writes the request line on `conn` and reads and parses one reply line. */
async function exchange(
  conn: Deno.UnixConn,
  path: string,
  request: Readonly<Record<string, unknown>>,
): Promise<CtlReply> {
  const out = encoder.encode(JSON.stringify(request) + "\n");
  for (let off = 0; off < out.length;) off += await conn.write(out.subarray(off));

  const chunks: Uint8Array[] = [];
  let size = 0;
  const buf = new Uint8Array(65536);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    const nl = buf.subarray(0, n).indexOf(0x0a);
    chunks.push(buf.slice(0, nl < 0 ? n : nl));
    size += nl < 0 ? n : nl;
    if (nl >= 0) break;
    if (size > MAX_REPLY) throw new CtlError(`ctl: ${path}: reply longer than ${MAX_REPLY} bytes`);
  }
  const line = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    line.set(c, at);
    at += c.length;
  }
  const text = decoder.decode(line).trim();
  if (text === "") throw new CtlError(`ctl: ${path} closed the connection without a reply`);
  return parseReply(text, path);
}

/** Checks the shape of one reply line. */
function parseReply(text: string, path: string): CtlReply {
  let reply: unknown;
  try {
    reply = JSON.parse(text);
  } catch (err) {
    throw new CtlError(`ctl: ${path} sent a reply that is not JSON: ${oneLine(err)}`);
  }
  if (typeof reply === "object" && reply !== null && !Array.isArray(reply)) {
    if ("return" in reply) return { ok: true, value: reply.return };
    if ("error" in reply) {
      const error = reply.error;
      const desc = typeof error === "object" && error !== null && "desc" in error &&
          typeof error.desc === "string"
        ? error.desc
        : JSON.stringify(error);
      return { ok: false, desc: oneLine(desc) };
    }
  }
  throw new CtlError(`ctl: ${path} sent a reply with neither 'return' nor 'error'`);
}

// ---------------------------------------------------------------------------
// Formatting

/** Lines of a table: columns two spaces apart, `right[i]` right-aligns column i. */
function table(rows: readonly (readonly string[])[], right: readonly boolean[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) =>
    row.map((cell, i) => right[i] ? cell.padStart(widths[i]) : cell.padEnd(widths[i]))
      .join("  ")
      .trimEnd()
  );
}

/** A number as text; anything else as JSON, so a surprise in a reply still shows. */
function num(value: unknown): string {
  if (typeof value === "number") return String(value);
  return value === undefined ? "-" : JSON.stringify(value);
}

/** Seconds for people: `12.5s`, `5m 03s`, `2h 05m 03s`, `3d 02h 05m`. */
function duration(seconds: unknown): string {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return num(seconds);
  const tenths = Math.round(seconds * 10);
  if (tenths < 600) return `${(tenths / 10).toFixed(1)}s`;
  const s = Math.floor(seconds);
  const two = (n: number) => String(n).padStart(2, "0");
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${two(h)}h ${two(m)}m`;
  if (h > 0) return `${h}h ${two(m)}m ${two(s % 60)}s`;
  return `${m}m ${two(s % 60)}s`;
}

/** The entries of a JSON object, or none for anything else. */
function entries(value: unknown): [string, unknown][] {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? Object.entries(value)
    : [];
}

/**
 * `stats` for people: uptime; bytes and frames per direction; live flows and
 * their counts by type and state; then every counter as `group.counter  value`,
 * names left-aligned and values right-aligned in one column, a blank line
 * between groups. Counter groups and names are printed as they come.
 */
export function formatStats(ret: CtlStats): string {
  const lines = [`uptime  ${duration(ret.uptime)}`, ""];
  const traffic = ret.traffic ?? {};
  lines.push(
    ...table([
      ["traffic", "bytes", "frames"],
      ["to host", num(traffic.toHost?.bytes), num(traffic.toHost?.frames)],
      ["to guest", num(traffic.toGuest?.bytes), num(traffic.toGuest?.frames)],
    ], [false, true, true]),
    "",
  );
  const counts = (value: unknown) => {
    const list = entries(value).map(([name, n]) => `${name} ${num(n)}`);
    return list.length === 0 ? "-" : list.join(", ");
  };
  lines.push(
    ...table([
      ["flows", `${num(ret.flows?.live)} live`],
      ["by type", counts(ret.flows?.byType)],
      ["by state", counts(ret.flows?.byState)],
    ], [false, false]),
  );
  const rt = ret.runtime;
  if (rt) {
    const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;
    const rows = [["memory", `RSS ${mib(rt.rssBytes)}, heap ${mib(rt.heapUsedBytes)} in use`]];
    if (rt.heapAllocatedBytes !== null) {
      rows.push(["allocated", `${mib(rt.heapAllocatedBytes)} since start`]);
    }
    if (rt.gc) {
      rows.push([
        "gc",
        `${num(rt.gc.count)} pauses, ${rt.gc.pauseMs.toFixed(1)} ms in all, longest ${
          rt.gc.maxPauseMs.toFixed(2)
        } ms (since ${duration(rt.gc.sinceS)})`,
      ]);
    }
    lines.push("", ...table(rows, [false, false]));
  }

  const groups = entries(ret.counters).map(([group, counters]) =>
    typeof counters === "object" && counters !== null && !Array.isArray(counters)
      ? entries(counters).map(([name, value]) => [`${group}.${name}`, num(value)])
      : [[group, num(counters)]]
  ).filter((rows) => rows.length > 0);
  const aligned = table(groups.flat(), [false, true]);
  let at = 0;
  for (const rows of groups) {
    lines.push("", ...aligned.slice(at, at + rows.length));
    at += rows.length;
  }
  return lines.join("\n") + "\n";
}

/** An endpoint as `addr:port`, with an IPv6 address in brackets: `[::1]:80`. */
function endpoint(addr: unknown, port: unknown): string {
  const host = typeof addr === "string" ? (addr.includes(":") ? `[${addr}]` : addr) : "?";
  return port === undefined || port === null ? host : `${host}:${num(port)}`;
}

/**
 * One column of flow sides: `pif  from → to`, padded so that the arrows line up.
 * The initiator reads peer → tapir, the target tapir → peer: both arrows point
 * the way the flow was opened.
 */
function sideColumn(sides: readonly (CtlFlowSide | null | undefined)[], toPeer: boolean): string[] {
  const parts = sides.map((side) => {
    if (side === null || side === undefined) return null;
    const peer = endpoint(side.peerAddr, side.peerPort);
    const local = endpoint(side.localAddr, side.localPort);
    return [String(side.pif ?? "?"), toPeer ? local : peer, toPeer ? peer : local];
  });
  const width = (i: number) => Math.max(0, ...parts.map((p) => p?.[i].length ?? 0));
  const pifWidth = width(0);
  const fromWidth = width(1);
  return parts.map((p) =>
    p === null ? "-" : `${p[0].padEnd(pifWidth)} ${p[1].padEnd(fromWidth)} → ${p[2]}`
  );
}

/**
 * `flows` for people: a table with TYPE, STATE, AGE, INITIATOR (`pif peer → tapir`),
 * TARGET (`pif tapir → peer`), BYTES→ (initiator to target) and BYTES← (back);
 * IPv6 addresses in brackets. `no flows` when there are none.
 */
export function formatFlows(ret: CtlFlows): string {
  const flows = Array.isArray(ret.flows) ? ret.flows : [];
  if (flows.length === 0) return "no flows\n";
  const ini = sideColumn(flows.map((f) => f.ini), false);
  const tgt = sideColumn(flows.map((f) => f.tgt), true);
  const rows = [["TYPE", "STATE", "AGE", "INITIATOR", "TARGET", "BYTES→", "BYTES←"]];
  flows.forEach((f, i) =>
    rows.push([
      String(f.type ?? "?"),
      String(f.state ?? "?"),
      duration(f.age),
      ini[i],
      tgt[i],
      num(f.bytesIniToTgt),
      num(f.bytesTgtToIni),
    ])
  );
  return table(rows, [false, false, true, false, false, true, true]).join("\n") + "\n";
}

/** `forward ls` for people: a PROTO SPEC table, or `no forwards`. */
export function formatForwards(ret: CtlForwards): string {
  const forwards = Array.isArray(ret.forwards) ? ret.forwards : [];
  if (forwards.length === 0) return "no forwards\n";
  const rows = [["PROTO", "SPEC"], ...forwards.map((f) => [String(f.proto), String(f.spec)])];
  return table(rows, [false, false]).join("\n") + "\n";
}

/**
 * The one-line confirmation for a change: `added tcp 8080:80`, `removed tcp 8080:80`,
 * `capturing to PATH`, `capture PATH closed: N frames`. Values missing from the
 * reply are taken from the request.
 */
export function formatConfirmation(request: CtlRequest, ret: unknown): string {
  const field = (name: string): unknown =>
    entries(ret).find(([key]) => key === name)?.[1] ?? (request as Record<string, unknown>)[name];
  switch (request.cmd) {
    case "forward-add":
      return `added ${field("proto")} ${field("spec")}\n`;
    case "forward-remove":
      return `removed ${field("proto")} ${field("spec")}\n`;
    case "pcap-start":
      return `capturing to ${field("path")}\n`;
    case "pcap-stop": {
      const frames = field("frames");
      return `capture ${field("path") ?? "?"} closed: ${num(frames)} frame${
        frames === 1 ? "" : "s"
      }\n`;
    }
    default:
      return JSON.stringify(ret) + "\n";
  }
}

/** The reply value of `request` for people. */
function formatReply(request: CtlRequest, ret: unknown): string {
  switch (request.cmd) {
    case "stats":
      return formatStats((ret ?? {}) as CtlStats);
    case "flows":
      return formatFlows((ret ?? {}) as CtlFlows);
    case "forwards":
      return formatForwards((ret ?? {}) as CtlForwards);
    default:
      return formatConfirmation(request, ret);
  }
}

/** `tapir ctl --help`. */
export function ctlUsageText(): string {
  return `Usage: tapir ctl --socket PATH [--json] [REQUEST]

Asks a running tapir, through its control socket (its --api-socket PATH),
for its state, or changes its port forwards and packet capture.

Requests:
  stats                     uptime, traffic, flows and counters (the default)
  flows                     the live flows
  forward [ls]              the port forwards
  forward add PROTO SPEC    add a port forward, e.g. 'forward add tcp 8080:80'
  forward rm PROTO SPEC     remove a port forward (also: forward remove)
  pcap start FILE           write every frame to FILE (pcap)
  pcap stop                 stop writing frames

PROTO is tcp or udp (host to guest, as -t/-u) or tcp-ns or udp-ns (namespace
to host, as -T/-U); SPEC is written as for those options.

Options:
  -s, --socket PATH         tapir's control socket (required)
      --json                print the reply as JSON instead of a table
  -h, --help                show this help and exit
`;
}

/** Where `runCtl` prints: standard output and standard error by default. */
export interface CtlOutput {
  /** Writes `text` to standard output. */
  out(text: string): Promise<void>;
  /** Writes `text` to standard error. */
  err(text: string): Promise<void>;
}

async function writeAll(stream: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += await stream.write(bytes.subarray(off));
}

const STD_OUTPUT: CtlOutput = {
  out: (text) => writeAll(Deno.stdout, text),
  err: (text) => writeAll(Deno.stderr, text),
};

interface CtlOptions {
  socket: string | null;
  json: boolean;
  help: boolean;
  words: string[];
}

/** Splits the options from the request words; options may come anywhere, `--` ends them. */
function parseCtlArgs(args: readonly string[]): CtlOptions {
  const opts: CtlOptions = { socket: null, json: false, help: false, words: [] };
  const setSocket = (name: string, value: string | undefined) => {
    if (value === undefined || value === "") throw new CtlError(`ctl: ${name} needs a PATH`);
    if (opts.socket !== null) throw new CtlError(`ctl: ${name}: given more than once`);
    opts.socket = value;
  };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    if (arg === "--") {
      opts.words.push(...args.slice(i + 1));
      break;
    }
    if (arg === "--socket" || arg === "-s") setSocket(arg, args[++i]);
    else if (arg.startsWith("--socket=")) setSocket("--socket", arg.slice("--socket=".length));
    else if (arg.startsWith("-s") && arg.length > 2 && !arg.startsWith("--")) {
      setSocket("-s", arg.slice(2));
    } else if (arg === "--json") opts.json = true;
    else if (arg === "--help" || arg === "-h") opts.help = true;
    else if (arg.startsWith("-") && arg !== "-") {
      throw new CtlError(`ctl: unknown option '${arg}' (see 'tapir ctl --help')`);
    } else opts.words.push(arg);
  }
  return opts;
}

/**
 * `tapir ctl ARGS`: parses the options (`-s`/`--socket PATH`, `--json`,
 * `-h`/`--help`) and the request words, sends the request, and prints the
 * reply to `output` (a table, a confirmation line, or with `--json` the raw
 * `return` value). Resolves to 0 on success; on bad arguments, a failed
 * connection or an error reply prints one `tapir ctl: …` line to standard
 * error and resolves to 1.
 */
export async function runCtl(
  args: readonly string[],
  output: CtlOutput = STD_OUTPUT,
  timeoutMs?: number,
): Promise<number> {
  let request: CtlRequest;
  let opts: CtlOptions;
  try {
    opts = parseCtlArgs(args);
    if (opts.help) {
      await output.out(ctlUsageText());
      return 0;
    }
    request = ctlRequestFromArgs(opts.words);
    if (opts.socket === null) {
      throw new CtlError("ctl: --socket PATH is required (tapir's --api-socket)");
    }
  } catch (err) {
    if (!(err instanceof CtlError)) throw err;
    await output.err(`tapir ${err.message}\n`);
    return 1;
  }

  let reply: CtlReply;
  try {
    reply = await ctlCall(opts.socket, request, timeoutMs);
  } catch (err) {
    if (!(err instanceof CtlError)) throw err;
    await output.err(`tapir ${err.message}\n`);
    return 1;
  }
  if (!reply.ok) {
    await output.err(`tapir ctl: ${reply.desc}\n`);
    return 1;
  }
  await output.out(
    opts.json
      ? JSON.stringify(reply.value ?? null, null, 2) + "\n"
      : formatReply(request, reply.value),
  );
  return 0;
}
