/**
 * The slirp4netns contract: `tapir slirp4netns [OPTIONS] PID|PATH [TAPNAME]`,
 * or tapir started under the name `slirp4netns`.
 *
 * podman 4 and rootlesskit (rootless Docker, nerdctl) run their network
 * helper with slirp4netns 1.2's command line. This module reads that command
 * line and says the same thing in `tapir ns` options, plus the few
 * behaviours tapir has no option for ({@linkcode EngineOptions}):
 *
 * - the network: CIDR 10.0.2.0/24 (`--cidr`), the host at network + 2 (host
 *   loopback, unless `--disable-host-loopback`), DNS at network + 3 relayed
 *   to the host's resolver (unless `--disable-dns`), the guest at network +
 *   100; with `-6`, fd00::/64 with the host at ::2, DNS at ::3, the guest at
 *   ::100. MTU 1500 unless `--mtu`.
 * - `-c` configures the tap (addresses, routes, MTU, `--macaddress`);
 *   without it the caller does (rootlesskit).
 * - the namespace: a PID (`--netns-type=pid`, the default) or a path; the
 *   user namespace to join is `--userns-path`, else the PID's.
 * - `-r FD` gets "1" once the tap serves; `-e FD` ends the run when it polls
 *   readable or hung up. A descriptor that is not open is a start-up error.
 * - `--api-socket` speaks slirp4netns's API (`lib/api/slirp4netns.ts`).
 *
 * Engines read `--help` to find out which options exist, so it lists every
 * option under slirp4netns's own names. Every problem is a
 * {@linkcode ConfError} naming the option as written, as `lib/conf.ts` does.
 *
 * @module
 */

import { formatIp4, formatIp6, ifnameProblem, parseIp, parseIp4 } from "../addr.ts";
import { type ArgToken, tokenizeArgs } from "../args.ts";
import { ConfError, parseInteger } from "../conf.ts";
import * as sys from "../sys/mod.ts";
import { VERSION } from "../version.ts";
import type { EngineOptions } from "./engine.ts";

/** The slirp4netns release whose command line this follows. */
export const SLIRP4NETNS_COMPAT = "1.2.0";

/** What the command line asks for. */
export type Slirp4netnsRequest =
  | { readonly kind: "help" }
  | { readonly kind: "version" }
  | {
    readonly kind: "run";
    /** The same run as `tapir ns` arguments (for `parseConfig`, mode first). */
    readonly nsArgs: readonly string[];
    /** The rest of the contract. */
    readonly engine: EngineOptions;
  };

interface Slirp4netnsOption {
  readonly long: string;
  readonly short?: string;
  readonly value?: string;
  readonly help: string;
}

// The option list of slirp4netns 1.2, in its order; the help texts are ours.
const OPTIONS: readonly Slirp4netnsOption[] = [
  { long: "configure", short: "c", help: "bring up and configure the tap interface" },
  { long: "exit-fd", short: "e", value: "FD", help: "exit when FD polls readable or is closed" },
  { long: "ready-fd", short: "r", value: "FD", help: `write "1" to FD once the network is up` },
  { long: "mtu", short: "m", value: "MTU", help: "MTU (default 1500, 68-65520)" },
  { long: "enable-ipv6", short: "6", help: "enable IPv6 (fd00::/64)" },
  { long: "api-socket", short: "a", value: "PATH", help: "serve the API on UNIX socket PATH" },
  { long: "cidr", value: "CIDR", help: "IPv4 network (default 10.0.2.0/24, prefix 1-25)" },
  {
    long: "disable-host-loopback",
    help: "refuse connections to the host's loopback (through 10.0.2.2 or otherwise)",
  },
  { long: "netns-type", value: "TYPE", help: "what PID|PATH names: pid (default) or path" },
  { long: "userns-path", value: "PATH", help: "user namespace to join first" },
  { long: "enable-sandbox", help: "confine the process once set up" },
  { long: "enable-seccomp", help: "limit the system calls of the process" },
  {
    long: "outbound-addr",
    value: "ADDR|IF",
    help: "bind outbound sockets to ADDR (IPv4 or IPv6), or to IF's IPv4 address",
  },
  {
    long: "outbound-addr6",
    value: "ADDR|IF",
    help: "bind outbound IPv6 sockets to ADDR, or to IF's IPv6 address",
  },
  { long: "disable-dns", help: "no DNS relay at network + 3 (10.0.2.3)" },
  { long: "macaddress", value: "MAC", help: "MAC address of the tap interface (with -c)" },
  { long: "target-type", value: "TYPE", help: "netns (the only type tapir serves)" },
  { long: "help", short: "h", help: "show this help and exit" },
  { long: "version", short: "v", help: "show the version and exit" },
];

const BY_LONG = new Map(OPTIONS.map((o) => [o.long, o]));

/** The `--help` text: usage and every option, under slirp4netns's names. */
export function slirp4netnsUsage(): string {
  const lines = OPTIONS.map((o) => {
    const head = `${o.short ? `-${o.short}, ` : "    "}--${o.long}${o.value ? `=${o.value}` : ""}`;
    return `${head.padEnd(30)} ${o.help}`;
  });
  return `Usage: slirp4netns [OPTION]... PID|PATH [TAPNAME]
User-mode networking for network namespaces: tapir ${VERSION} with the
command line of slirp4netns ${SLIRP4NETNS_COMPAT}.

${lines.join("\n")}
`;
}

/** The `--version` text. */
export function slirp4netnsVersion(): string {
  return `slirp4netns version ${SLIRP4NETNS_COMPAT} (tapir ${VERSION})\n`;
}

/** Reads slirp4netns's command line (without the program name). */
export function parseSlirp4netnsArgs(args: readonly string[]): Slirp4netnsRequest {
  const tokens = tokenize(args);
  const values = new Map<string, { raw: string; value: string }>();
  const positionals: string[] = [];
  for (const t of tokens) {
    if (t.kind === "positional") {
      positionals.push(t.value);
      continue;
    }
    if (t.kind !== "option") continue;
    if (t.name === "help") return { kind: "help" };
    if (t.name === "version") return { kind: "version" };
    values.set(t.name, { raw: t.rawName, value: t.value ?? "" });
  }
  const has = (name: string) => values.has(name);
  const get = (name: string) => values.get(name);

  if (positionals.length === 0) throw new ConfError("missing PID|PATH (see --help)");
  if (positionals.length > 2) {
    throw new ConfError(`unexpected argument '${positionals[2]}': only PID|PATH [TAPNAME]`);
  }
  const targetText = positionals[0];
  const tapname = positionals[1] ?? "tap0";
  const ifProblem = ifnameProblem(tapname);
  if (ifProblem !== null) throw new ConfError(`TAPNAME '${tapname}': ${ifProblem}`);

  const targetType = get("target-type");
  if (targetType && targetType.value !== "netns") {
    throw new ConfError(`${targetType.raw}: '${targetType.value}' is not served; only netns`);
  }
  const netnsType = get("netns-type");
  const byPath = netnsType?.value === "path";
  if (netnsType && !byPath && netnsType.value !== "pid") {
    throw new ConfError(`${netnsType.raw}: '${netnsType.value}' is neither pid nor path`);
  }
  let pid = 0;
  if (!byPath) {
    if (!/^[0-9]+$/.test(targetText) || Number(targetText) < 1) {
      throw new ConfError(`PID '${targetText}' is not a process id (use --netns-type=path)`);
    }
    pid = Number(targetText);
  } else if (targetText === "") throw new ConfError("PATH is empty");

  const mtu = intOption(get("mtu"), 1500, 68, 65520);
  const [network, prefix] = parseCidr(get("cidr"));
  const ipv6 = has("enable-ipv6");
  const configure = has("configure");
  const host4 = formatIp4(u32Bytes(network + 2));
  const dns4 = formatIp4(u32Bytes(network + 3));
  const guest4 = u32Bytes(network + 100);
  const guest6 = ipv6 ? parseIp("fd00::100")!.bytes : null;

  const nsArgs: string[] = ["ns", "-I", tapname, "-m", `${mtu}`];
  nsArgs.push("-a", formatIp4(guest4), "-n", `${prefix}`, "-g", host4);
  if (ipv6) nsArgs.push("-a", formatIp6(guest6!), "-g", "fd00::2");
  else nsArgs.push("-4");
  if (!has("disable-dns")) {
    nsArgs.push("--dns-forward", dns4, "-D", dns4);
    if (ipv6) nsArgs.push("--dns-forward", "fd00::3", "-D", "fd00::3");
  }
  if (has("disable-host-loopback")) nsArgs.push("--no-host-loopback");
  if (configure) nsArgs.push("--config-net");
  const api = get("api-socket");
  if (api) {
    if (api.value === "") throw new ConfError(`${api.raw}: path is empty`);
    nsArgs.push("--api-socket", api.value);
  }
  nsArgs.push(
    ...outboundArgs(get("outbound-addr"), 4, ipv6),
    ...outboundArgs(get("outbound-addr6"), 6, ipv6),
  );

  let mac: Uint8Array | null = null;
  const macOpt = get("macaddress");
  if (macOpt) {
    if (!configure) throw new ConfError(`${macOpt.raw} needs -c (--configure)`);
    mac = parseMac(macOpt.raw, macOpt.value);
  }
  const warnings: string[] = [];
  // --enable-sandbox and --enable-seccomp ask for what tapir's own sandbox
  // (`lib/sandbox.ts`) does in every run: they are accepted as they are.
  const userns = get("userns-path");
  if (userns && userns.value === "") throw new ConfError(`${userns.raw}: path is empty`);
  // slirp4netns opens a relative path as given; `--netns NAME` would mean /run/netns/NAME.
  if (byPath) nsArgs.push("--netns", targetText.includes("/") ? targetText : `./${targetText}`);
  else nsArgs.push(`${pid}`);

  return {
    kind: "run",
    nsArgs,
    engine: {
      contract: "slirp4netns",
      readyFd: fdOption(get("ready-fd")),
      exitFd: fdOption(get("exit-fd")),
      usernsPath: userns ? userns.value : pid > 0 ? `/proc/${pid}/ns/user` : null,
      mac,
      daemon: false,
      endWithTarget: pid > 0,
      slirpApi: { guest4, guest6 },
      warnings,
    },
  };
}

/** GNU-style tokens (options may follow positionals), each option checked against the table. */
function tokenize(args: readonly string[]): ArgToken[] {
  const lenient = tokenizeArgs(args, OPTIONS);
  const out: ArgToken[] = [];
  for (const t of lenient) {
    if (t.kind !== "option") {
      out.push(t);
      continue;
    }
    // The tokenizer names a known short option by its long name.
    const spec = BY_LONG.get(t.name);
    if (spec === undefined) throw new ConfError(`unknown option '${t.rawName}'`);
    if (spec.value === undefined && t.value !== undefined) {
      throw new ConfError(`${t.rawName}: takes no value`);
    }
    if (spec.value !== undefined && t.value === undefined) {
      throw new ConfError(`${t.rawName}: needs a value`);
    }
    out.push({ ...t, name: spec.long });
  }
  return out;
}

function intOption(
  o: { raw: string; value: string } | undefined,
  dflt: number,
  min: number,
  max: number,
): number {
  return o === undefined ? dflt : parseInteger(o.raw, o.value, min, max);
}

/**
 * `-e`/`-r`: a descriptor the caller passed. The runtime opens descriptors
 * of its own before tapir runs, all close-on-exec; one inherited on purpose
 * is open and has no close-on-exec flag, so that is what is checked.
 */
function fdOption(o: { raw: string; value: string } | undefined): number | null {
  if (o === undefined) return null;
  const fd = intOption(o, 0, 3, 0x7fffffff);
  const flags = sys.fcntl(fd, sys.F_GETFD);
  if (flags < 0 || (flags & sys.FD_CLOEXEC) !== 0) {
    throw new ConfError(`${o.raw}: descriptor ${fd} is not open (not passed by the caller)`);
  }
  return fd;
}

/** `--cidr A.B.C.D/N` (prefix 1-25: the guest sits at network + 100): network (u32) and prefix. */
function parseCidr(o: { raw: string; value: string } | undefined): [number, number] {
  if (o === undefined) return [0x0a000200, 24];
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(o.value);
  const addr = m ? parseIp4(m[1]) : null;
  if (m === null || addr === null) {
    throw new ConfError(`${o.raw}: '${o.value}' is not an IPv4 CIDR such as 10.0.2.0/24`);
  }
  const prefix = Number(m[2]);
  if (prefix < 1 || prefix > 25) {
    throw new ConfError(`${o.raw}: prefix /${prefix} is out of range 1-25`);
  }
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  const u = ((addr[0] << 24) | (addr[1] << 16) | (addr[2] << 8) | addr[3]) >>> 0;
  return [(u & mask) >>> 0, prefix];
}

function u32Bytes(u: number): Uint8Array {
  return new Uint8Array([(u >>> 24) & 255, (u >>> 16) & 255, (u >>> 8) & 255, u & 255]);
}

/** `--outbound-addr` (family 4: an IPv4 or IPv6 address, or an interface for IPv4) and `--outbound-addr6`. */
function outboundArgs(
  o: { raw: string; value: string } | undefined,
  family: 4 | 6,
  ipv6: boolean,
): string[] {
  if (o === undefined) return [];
  const ip = parseIp(o.value);
  if (ip !== null) {
    if (family === 6 && ip.family === 4) {
      throw new ConfError(`${o.raw}: ${o.value} is not an IPv6 address`);
    }
    if (ip.family === 6 && !ipv6) {
      throw new ConfError(`${o.raw}: ${o.value} is IPv6, which needs --enable-ipv6`);
    }
    return ["--outbound", o.value];
  }
  const problem = ifnameProblem(o.value);
  if (problem !== null) {
    throw new ConfError(`${o.raw}: '${o.value}' is neither an address nor an interface name`);
  }
  if (family === 6 && !ipv6) throw new ConfError(`${o.raw}: IPv6 needs --enable-ipv6`);
  return [family === 4 ? "--outbound-if4" : "--outbound-if6", o.value];
}

function parseMac(raw: string, text: string): Uint8Array {
  const m = /^([0-9a-fA-F]{2})(?::([0-9a-fA-F]{2})){5}$/.test(text);
  if (!m) throw new ConfError(`${raw}: '${text}' is not a MAC address such as 02:00:00:00:00:01`);
  const mac = new Uint8Array(text.split(":").map((h) => parseInt(h, 16)));
  if (mac[0] & 1) throw new ConfError(`${raw}: ${text} is a multicast address`);
  return mac;
}
