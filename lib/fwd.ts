/**
 * Port-forward specs: what `-t`, `-u`, `-T` and `-U` mean.
 *
 * A spec is one of the keywords `none`, `all`, `auto`, or a comma-separated
 * list of items:
 *
 *     [ADDR[%IF]/]PORTS[:TARGET]    forward PORTS (bound on ADDR and/or IF)
 *     ~PORTS                        never forward PORTS
 *
 * where PORTS and TARGET are `N` or `N-M`, TARGET the same size as PORTS
 * (`8080:80` forwards 8080 to 80, `1000-1010:2000-2010` shifts a whole range).
 * A spec made only of exclusions means every port except those.
 *
 * The option may be given several times; the items of all occurrences add up,
 * so {@linkcode portFwdAdd} folds one occurrence into the value built so far.
 * A keyword stands alone: it cannot share a spec, or an option, with items.
 *
 * Two rules clash (a port "forwarded twice") when their port ranges overlap
 * and their bind scopes can overlap: a rule without an address binds the
 * wildcard of both families, so it clashes with any address; two different
 * addresses (or two different interfaces) do not clash, since each gets its
 * own listening socket.
 *
 * The value is immutable and keeps the rules as written. Two questions are
 * asked of it later: "where does a connection to port P go?"
 * ({@linkcode portFwdTarget}, per new flow) and "which sockets do I open?"
 * ({@linkcode portFwdRules}, once at start-up, exclusions already carved out).
 * `auto` is only a flag here: the ports it forwards are found at run time by
 * scanning the other side's bound ports, which is not this module's job.
 * Likewise `all` here means 1-65535; leaving out ports that cannot be bound
 * (the ephemeral range, privileged ports) is up to the code that binds.
 *
 * @module
 */

import {
  formatIp4,
  formatIp6,
  ifnameProblem,
  ipEqual,
  isIp6Loopback,
  isIp6V4Mapped,
  parseIp,
} from "./addr.ts";

/** An inclusive range of port numbers, 1-65535. */
export interface PortRange {
  /** First port of the range. */
  readonly first: number;
  /** Last port of the range (≥ first). */
  readonly last: number;
}

/** One forwarding rule: ports `first..last` go to `target..target+(last-first)`. */
export interface PortRule extends PortRange {
  /**
   * Address to bind the listening sockets to: 4 or 16 bytes, network order;
   * null for the wildcard address of both families. Treat as read-only.
   */
  readonly addr: Uint8Array | null;
  /** Interface to bind to (`SO_BINDTODEVICE`), or null for any. */
  readonly ifname: string | null;
  /** The port that `first` is forwarded to; the rest of the range follows in order. */
  readonly target: number;
}

/** How ports are chosen: not at all, every port, by run-time scan, or listed rules. */
export type PortFwdMode = "none" | "all" | "auto" | "ports";

/** A parsed port-forward configuration for one protocol and direction. Immutable. */
export interface PortFwd {
  /**
   * `none`: nothing is forwarded. `all`: every port not excluded. `auto`:
   * ports found bound on the other side at run time. `ports`: the ports in
   * `rules` that are not excluded.
   */
  readonly mode: PortFwdMode;
  /** Rules as written, in order given; empty unless `mode` is `ports`. */
  readonly rules: readonly PortRule[];
  /** Ports never forwarded (`~PORTS`); only with `all` (exclusions alone) or `ports`. */
  readonly excluded: readonly PortRange[];
}

const PORT_MAX = 65535;
const KEYWORDS: ReadonlySet<string> = new Set(["none", "all", "auto"]);

function makeFwd(
  mode: PortFwdMode,
  rules: readonly PortRule[],
  excluded: readonly PortRange[],
): PortFwd {
  return Object.freeze({
    mode,
    rules: Object.freeze([...rules]),
    excluded: Object.freeze([...excluded]),
  });
}

/** Nothing forwarded: the default for every forwarding option. */
export const PORT_FWD_NONE: PortFwd = makeFwd("none", [], []);

/** True for a value that came from a lone keyword (exclusions alone also give `all`). */
function isKeyword(fwd: PortFwd): boolean {
  return fwd.mode !== "ports" && fwd.excluded.length === 0;
}

function formatRange(r: PortRange): string {
  return r.first === r.last ? `${r.first}` : `${r.first}-${r.last}`;
}

/** Parses `N` or `N-M`. */
function parseRange(text: string): PortRange | string {
  if (text === "") return "missing port number";
  const m = /^([0-9]+)(?:-([0-9]+))?$/.exec(text);
  if (m === null) return `'${text}' is not a port or port range`;
  const first = Number(m[1]);
  const last = m[2] === undefined ? first : Number(m[2]);
  for (const port of m[2] === undefined ? [m[1]] : [m[1], m[2]]) {
    const n = Number(port);
    if (n < 1 || n > PORT_MAX) return `port ${port} is out of range 1-${PORT_MAX}`;
  }
  if (last < first) return `port range ${first}-${last} is reversed`;
  return { first, last };
}

type Item = { readonly rule: PortRule } | { readonly exclude: PortRange };

/** Parses one comma-separated item. */
function parseItem(item: string): Item | string {
  if (item === "") return "empty item";
  if (item.startsWith("~")) {
    if (/[/:%]/.test(item)) return `exclusion '${item}' takes only ports, no address or target`;
    const range = parseRange(item.slice(1));
    return typeof range === "string" ? range : { exclude: range };
  }

  let addr: Uint8Array | null = null;
  let ifname: string | null = null;
  let ports = item;
  const slash = item.indexOf("/");
  if (slash >= 0) {
    const where = item.slice(0, slash);
    ports = item.slice(slash + 1);
    const percent = where.indexOf("%");
    const addrText = percent < 0 ? where : where.slice(0, percent);
    if (percent >= 0) {
      ifname = where.slice(percent + 1);
      const problem = ifnameProblem(ifname);
      if (problem !== null) return `${problem} in '${item}'`;
    }
    if (addrText !== "") {
      const ip = parseIp(addrText);
      if (ip === null) return `bad address '${addrText}' in '${item}'`;
      addr = ip.bytes;
    } else if (percent < 0) {
      return `missing address before '/' in '${item}'`;
    }
  }

  const colon = ports.indexOf(":");
  const source = parseRange(colon < 0 ? ports : ports.slice(0, colon));
  if (typeof source === "string") return source;
  let target = source.first;
  if (colon >= 0) {
    const dest = parseRange(ports.slice(colon + 1));
    if (typeof dest === "string") return dest;
    if (dest.last - dest.first !== source.last - source.first) {
      return `target ${formatRange(dest)} is not the same size as ${formatRange(source)}`;
    }
    target = dest.first;
  }
  return { rule: Object.freeze({ addr, ifname, first: source.first, last: source.last, target }) };
}

/** The first port two rules would both bind, or -1 if they cannot clash. */
function clashPort(a: PortRule, b: PortRule): number {
  if (a.last < b.first || b.last < a.first) return -1;
  if (a.addr !== null && b.addr !== null && !ipEqual(a.addr, b.addr)) return -1;
  if (a.ifname !== null && b.ifname !== null && a.ifname !== b.ifname) return -1;
  return Math.max(a.first, b.first);
}

/**
 * Folds one occurrence of a forwarding option into the value built so far
 * (`null` before the first one). Returns the new value, or an error message
 * that the caller prefixes with the option name.
 */
export function portFwdAdd(prev: PortFwd | null, spec: string): PortFwd | string {
  if (spec === "none" || spec === "all") {
    if (prev !== null) return `'${spec}' cannot be combined with other port specs`;
    return makeFwd(spec, [], []);
  }
  if (prev !== null && isKeyword(prev) && prev.mode !== "auto") {
    return `'${prev.mode}' cannot be combined with other port specs`;
  }
  // `auto` takes exclusions (`auto,~22`, or `-t auto -t ~22` in either
  // order), never explicit ports: those would be forwarded whatever the scan
  // finds, which is a different spec.
  let auto = prev?.mode === "auto";
  const rules: PortRule[] = prev === null ? [] : [...prev.rules];
  const excluded: PortRange[] = prev === null ? [] : [...prev.excluded];
  for (const text of spec.split(",")) {
    if (text === "auto") {
      auto = true;
      continue;
    }
    if (KEYWORDS.has(text)) return `'${text}' cannot be combined with other items`;
    const item = parseItem(text);
    if (typeof item === "string") return spec.includes(",") ? `${item} in '${spec}'` : item;
    if ("exclude" in item) {
      excluded.push(item.exclude);
      continue;
    }
    for (const other of rules) {
      const port = clashPort(item.rule, other);
      if (port >= 0) return `port ${port} is forwarded twice`;
    }
    rules.push(item.rule);
  }
  if (auto) {
    if (rules.length > 0) {
      return "'auto' cannot be combined with forwarded ports, only with ~exclusions";
    }
    return makeFwd("auto", [], excluded);
  }
  return makeFwd(rules.length > 0 ? "ports" : "all", rules, excluded);
}

/** One rule in the syntax it is parsed from: `[ADDR[%IF]/]PORTS[:TARGET]`. */
export function portRuleFormat(rule: PortRule): string {
  let where = "";
  if (rule.addr !== null) {
    where = rule.addr.length === 4 ? formatIp4(rule.addr) : formatIp6(rule.addr);
  }
  if (rule.ifname !== null) where += `%${rule.ifname}`;
  const ports = formatRange(rule);
  const target = rule.target === rule.first
    ? ""
    : `:${formatRange({ first: rule.target, last: rule.target + rule.last - rule.first })}`;
  return `${where === "" ? "" : `${where}/`}${ports}${target}`;
}

/** `fwd` as one spec that parses back to the same value: a keyword, or its items. */
export function portFwdFormat(fwd: PortFwd): string {
  const items = [
    ...(fwd.mode === "auto" ? ["auto"] : []),
    ...fwd.rules.map(portRuleFormat),
    ...fwd.excluded.map((r) => `~${formatRange(r)}`),
  ];
  return items.length > 0 ? items.join(",") : fwd.mode;
}

/** Parses all occurrences of one option at once; see {@linkcode portFwdAdd}. */
export function parsePortFwd(specs: readonly string[]): PortFwd | string {
  let fwd: PortFwd | null = null;
  for (const spec of specs) {
    const next = portFwdAdd(fwd, spec);
    if (typeof next === "string") return next;
    fwd = next;
  }
  return fwd ?? PORT_FWD_NONE;
}

function inRanges(ranges: readonly PortRange[], port: number): boolean {
  for (const r of ranges) if (port >= r.first && port <= r.last) return true;
  return false;
}

/**
 * Where a connection to `port` is forwarded: the target port, or -1 if the
 * port is not forwarded. With `addr` (the local address the connection came
 * in on), rules bound to a different address do not match. `auto` answers -1:
 * its ports are known only at run time.
 */
export function portFwdTarget(fwd: PortFwd, port: number, addr?: Uint8Array): number {
  if (!Number.isInteger(port) || port < 1 || port > PORT_MAX) return -1;
  if (inRanges(fwd.excluded, port)) return -1;
  if (fwd.mode === "all") return port;
  if (fwd.mode !== "ports") return -1;
  for (const rule of fwd.rules) {
    if (port < rule.first || port > rule.last) continue;
    if (addr !== undefined && rule.addr !== null && !ipEqual(rule.addr, addr)) continue;
    return rule.target + (port - rule.first);
  }
  return -1;
}

/** Splits `rule` around the excluded ranges, keeping each piece's target in step. */
function carve(rule: PortRule, excluded: readonly PortRange[], out: PortRule[]): void {
  const sorted = [...excluded].sort((a, b) => a.first - b.first);
  let next = rule.first;
  const emit = (first: number, last: number) => {
    const target = rule.target + (first - rule.first);
    out.push(Object.freeze({ ...rule, first, last, target }));
  };
  for (const ex of sorted) {
    if (ex.last < next || ex.first > rule.last) continue;
    if (ex.first > next) emit(next, ex.first - 1);
    next = ex.last + 1;
  }
  if (next <= rule.last) emit(next, rule.last);
}

/**
 * The rules to open listening sockets for: in `ports` mode the rules with
 * exclusions carved out, in `all` mode one wildcard rule for 1-65535 minus
 * exclusions, and nothing for `none` and `auto`.
 */
export function portFwdRules(fwd: PortFwd): readonly PortRule[] {
  const out: PortRule[] = [];
  if (fwd.mode === "all") {
    const everything = { addr: null, ifname: null, first: 1, last: PORT_MAX, target: 1 };
    carve(everything, fwd.excluded, out);
  } else if (fwd.mode === "ports") {
    for (const rule of fwd.rules) carve(rule, fwd.excluded, out);
  }
  return Object.freeze(out);
}

// ---------------------------------------------------------------------------
// Address mapping: what a guest's destination means on the host side.

/** IPv4 loopback, 127.0.0.1, as a u32. */
export const LOOPBACK4 = 0x7f000001;
/** IPv6 loopback, ::1. */
export const LOOPBACK6: Readonly<Uint8Array> = (() => {
  const a = new Uint8Array(16);
  a[15] = 1;
  return a;
})();

/** The mapping rules, as `GuestNet` carries them. */
export interface AddrMapRules {
  /** Guest-side IPv4 addresses that mean host loopback. */
  readonly mapLo4: readonly number[];
  /** Guest-side IPv6 addresses that mean host loopback. */
  readonly mapLo6: readonly Uint8Array[];
  /** Host side may reach only loopback. */
  readonly loopbackOnly: boolean;
  /** Refuse destinations on host loopback, mapped ones included (the relayed resolver is not refused). */
  readonly noHostLoopback?: boolean;
  /** `--map-guest-addr` (u32, 0: none): the guest's name for {@linkcode hostAddr4}. */
  readonly mapGuest4?: number;
  /** The host's own IPv4 address (u32, 0: unknown), where {@linkcode mapGuest4} goes. */
  readonly hostAddr4?: number;
  /** `--map-guest-addr` IPv6, or null. */
  readonly mapGuest6?: Uint8Array | null;
  /** The host's own IPv6 address, where {@linkcode mapGuest6} goes, or null. */
  readonly hostAddr6?: Uint8Array | null;
  /** `--dns-forward` (u32, 0: none): port 53 of it goes to {@linkcode dnsHost4}. */
  readonly dnsForward4: number;
  /** Resolver for relayed IPv4 queries (u32, 0: none). */
  readonly dnsHost4: number;
  /** `--dns-forward` IPv6, or null. */
  readonly dnsForward6: Uint8Array | null;
  /** Resolver for relayed IPv6 queries, or null. */
  readonly dnsHost6: Uint8Array | null;
}

/** The DNS port, whose traffic to the `--dns-forward` address is relayed. */
export const DNS_PORT = 53;

/**
 * Where a guest's IPv4 packet to `dst` (port `dport`) goes on the host:
 * the resolver for DNS to the `--dns-forward` address; 127.0.0.1 if `dst` is
 * mapped to host loopback (the gateway, unless `--no-map-gw`); the host's
 * own address for the `--map-guest-addr` address; else `dst`. Returns -1 if
 * refused: no resolver to relay to, `--loopback-only` and the result is not
 * loopback, or `--no-host-loopback` and it is (the relayed resolver aside).
 */
export function natFromTap4(rules: AddrMapRules, dst: number, dport = 0): number {
  let target = dst;
  if (dst === rules.dnsForward4 && dport === DNS_PORT) {
    if (rules.dnsHost4 === 0) return -1;
    target = rules.dnsHost4;
  } else {
    if (rules.noHostLoopback && dst >>> 24 === 127) return -1;
    for (const a of rules.mapLo4) if (a === dst) return rules.noHostLoopback ? -1 : LOOPBACK4;
    if (rules.mapGuest4 && dst === rules.mapGuest4) {
      if (!rules.hostAddr4) return -1;
      target = rules.hostAddr4;
    }
  }
  if (rules.loopbackOnly && target >>> 24 !== 127) return -1;
  return target;
}

/**
 * Where a guest's IPv6 packet to `buf[off..off+16]` (port `dport`) goes on
 * the host, as {@linkcode natFromTap4}: writes the address into `out` and
 * returns true, or returns false if the destination is refused.
 */
export function natFromTap6(
  rules: AddrMapRules,
  buf: Uint8Array,
  off: number,
  out: Uint8Array,
  dport = 0,
): boolean {
  const fwd = rules.dnsForward6;
  if (fwd !== null && dport === DNS_PORT && sameAddr6(fwd, buf, off)) {
    if (rules.dnsHost6 === null) return false;
    out.set(rules.dnsHost6);
  } else {
    // ::ffff:127.x.x.x reaches IPv4 loopback through a dual-stack socket.
    if (rules.noHostLoopback && (isIp6Loopback(buf, off) || isV4MappedLoopback(buf, off))) {
      return false;
    }
    for (const a of rules.mapLo6) {
      if (sameAddr6(a, buf, off)) {
        out.set(LOOPBACK6);
        return !rules.noHostLoopback;
      }
    }
    const mapGuest = rules.mapGuest6;
    if (mapGuest && sameAddr6(mapGuest, buf, off)) {
      if (!rules.hostAddr6) return false;
      out.set(rules.hostAddr6);
    } else {
      for (let i = 0; i < 16; i++) out[i] = buf[off + i];
    }
  }
  return !(rules.loopbackOnly && !isIp6Loopback(out, 0));
}

function isV4MappedLoopback(buf: Uint8Array, off: number): boolean {
  return isIp6V4Mapped(buf, off) && buf[off + 12] === 127;
}

function sameAddr6(a: Uint8Array, buf: Uint8Array, off: number): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== buf[off + i]) return false;
  return true;
}
