/**
 * The command line: from `args` to one frozen {@linkcode Config}.
 *
 * The first argument is the mode, `ns` or `vm`; everything else is options
 * (named as in pasta, so a pasta user's habits carry over), then, for `ns`,
 * a command or a PID. Parsing happens in three steps:
 *
 * 1. Find where the options end. `tapir ns sh -c 'ip addr'` must hand
 *    `-c` to the shell, so options stop at the first positional argument or
 *    at `--`. The tokenizer (`lib/args.ts`) knows which options take a
 *    value, so `-t 80` is not mistaken for a command `80`.
 * 2. Refuse unknown options and missing or unwanted values, in one line
 *    naming the first such option.
 * 3. Walk the option tokens in order: check each value (addresses, ports,
 *    ranges), then the combinations (`-4` with `-6`, `-q` with `-d`, …).
 *
 * Every problem is a {@linkcode ConfError} whose message is one line naming
 * the option as the user wrote it (`-m` or `--mtu`); `main` prints it after
 * `tapir: `. Nothing here touches the system: checks that need it (can the
 * pcap file be created, does the namespace exist) belong to the code that
 * uses the value.
 *
 * @module
 */

import {
  formatIp,
  ifnameProblem,
  ip4MaskPrefix,
  type IpAddr,
  ipKind,
  parseIp,
  parseIp4,
} from "./addr.ts";
import { PORT_FWD_NONE, type PortFwd, portFwdAdd } from "./fwd.ts";
import { tokenizeArgs } from "./args.ts";
import { LogLevel } from "./log.ts";
import { FLOW_DEFAULT_CAPACITY, FLOW_MAX_CAPACITY } from "./flow/table.ts";

/** A user error on the command line; the message is one line naming the option. */
export class ConfError extends Error {
  /** Makes an error with a one-line `message`. */
  constructor(message: string) {
    super(message);
    this.name = "ConfError";
  }
}

/** Settings shared by both modes. */
export interface CommonConfig {
  /** `-t`: TCP ports forwarded from the host to the guest. */
  readonly tcp: PortFwd;
  /** `-u`: UDP ports forwarded from the host to the guest. */
  readonly udp: PortFwd;
  /** `-a`: the guest's IPv4 address (4 bytes, read-only), or null to copy the host's. */
  readonly addr4: Uint8Array | null;
  /** `-a`: the guest's IPv6 address (16 bytes, read-only), or null to copy the host's. */
  readonly addr6: Uint8Array | null;
  /** `-n`: IPv4 prefix length 0-32, or null to copy the host's. */
  readonly prefix4: number | null;
  /** `-g`: the guest's IPv4 default gateway, or null to copy the host's. */
  readonly gateway4: Uint8Array | null;
  /** `-g`: the guest's IPv6 default gateway, or null to copy the host's. */
  readonly gateway6: Uint8Array | null;
  /** `-m`: the guest's MTU, 68-65520. */
  readonly mtu: number;
  /** `-D`: DNS servers offered to the guest, in the order given. */
  readonly dns: readonly IpAddr[];
  /** `-S`: DNS search domains offered to the guest, in the order given. */
  readonly search: readonly string[];
  /** `--dhcp-bootfile`: the boot file (URL) offered by DHCP and DHCPv6, or "". */
  readonly bootfile: string;
  /** IPv4 is enabled (not `-6`). */
  readonly ipv4: boolean;
  /** IPv6 is enabled (not `-4`). */
  readonly ipv6: boolean;
  /** `-f`: stay in the foreground. */
  readonly foreground: boolean;
  /** Threshold from `-q`, `-d`, `--trace` (default info). */
  readonly logLevel: LogLevel;
  /** Answer DHCP (not `--no-dhcp`). */
  readonly dhcp: boolean;
  /** Answer NDP solicitations (not `--no-ndp`). */
  readonly ndp: boolean;
  /** Answer DHCPv6 (not `--no-dhcpv6`). */
  readonly dhcpv6: boolean;
  /** Send router advertisements (not `--no-ra`, not `--no-ndp`). */
  readonly ra: boolean;
  /** Map the gateway address to host loopback (not `--no-map-gw`). */
  readonly mapGw: boolean;
  /** `--map-host-loopback`: IPv4 address the guest uses for host loopback, or null. */
  readonly mapHostLoopback4: Uint8Array | null;
  /** `--map-host-loopback`: IPv6 address the guest uses for host loopback, or null. */
  readonly mapHostLoopback6: Uint8Array | null;
  /** `--loopback-only`: the host side may reach only loopback. */
  readonly loopbackOnly: boolean;
  /** `--no-host-loopback`: refuse what would reach the host's loopback (the mapped gateway too). */
  readonly noHostLoopback: boolean;
  /** `--map-guest-addr`: IPv4 address the guest uses for the host's own address, or null. */
  readonly mapGuestAddr4: Uint8Array | null;
  /** `--map-guest-addr`: IPv6 address the guest uses for the host's own address, or null. */
  readonly mapGuestAddr6: Uint8Array | null;
  /** `-o`: IPv4 address outbound sockets are bound to, or null. */
  readonly outbound4: Uint8Array | null;
  /** `-o`: IPv6 address outbound sockets are bound to, or null. */
  readonly outbound6: Uint8Array | null;
  /** `--outbound-if4`: bind outbound IPv4 sockets to this interface's address, or null. */
  readonly outboundIf4: string | null;
  /** `--outbound-if6`: bind outbound IPv6 sockets to this interface's address, or null. */
  readonly outboundIf6: string | null;
  /** `--dns-forward`: guest-side addresses whose DNS queries are relayed (one per family). */
  readonly dnsForward4: Uint8Array | null;
  /** See {@linkcode dnsForward4}. */
  readonly dnsForward6: Uint8Array | null;
  /** `--dns-host`: where relayed queries go, per family; null: the host's resolver. */
  readonly dnsHost4: Uint8Array | null;
  /** See {@linkcode dnsHost4}. */
  readonly dnsHost6: Uint8Array | null;
  /** `--max-flows`: most flows tracked at once (the flow table's capacity). */
  readonly maxFlows: number;
  /** `--udp-timeout`: idle timeout of UDP flows, in seconds. */
  readonly udpTimeout: number;
  /** `-p`: pcap file to write every frame to, or null. */
  readonly pcap: string | null;
  /** `--pcap-dir`: where the control socket may start captures once sandboxed, or null (default). */
  readonly pcapDir: string | null;
  /** `-l`: log file, or null for standard error. */
  readonly logFile: string | null;
  /** `-P`: file to write the process id to, or null. */
  readonly pidFile: string | null;
  /** `--api-socket`: where the control socket listens, or null for none. */
  readonly apiSocket: string | null;
  /** `--stats`: seconds between statistics lines in the log (0: none). */
  readonly statsInterval: number;
  /** Segmentation offloads both ways and RSC (not `--no-offload`). */
  readonly offload: boolean;
  /** Coalesce the guest's TCP segments (not `--no-rsc`, not `--no-offload`). */
  readonly rsc: boolean;
  /** Confine the process once set up (`lib/sandbox.ts`; not `--no-sandbox`). */
  readonly sandbox: boolean;
}

/** What `tapir ns` attaches the tap device to. */
export type NsTarget =
  /** A new namespace running `command` (empty: the user's shell). */
  | { readonly kind: "spawn"; readonly command: readonly string[] }
  /** The network namespace of process `pid`. */
  | { readonly kind: "pid"; readonly pid: number }
  /** The namespace bound at `path` (`--netns`; a bare NAME is `/run/netns/NAME`). */
  | { readonly kind: "netns"; readonly path: string };

/** `tapir ns`: a tap device in a network namespace (pasta-like). */
export interface NsConfig extends CommonConfig {
  /** Discriminant. */
  readonly mode: "ns";
  /** `-T`: TCP ports forwarded from the namespace to the host. */
  readonly tcpNs: PortFwd;
  /** `-U`: UDP ports forwarded from the namespace to the host. */
  readonly udpNs: PortFwd;
  /** `--config-net`: set addresses, routes and MTU on the tap interface. */
  readonly configNet: boolean;
  /** `-I`: tap interface name in the namespace, or null for the default. */
  readonly ifname: string | null;
  /** Which namespace, and whether to run a command in it. */
  readonly target: NsTarget;
}

/** `tapir vm`: a guest behind a UNIX socket (passt-like). */
export interface VmConfig extends CommonConfig {
  /** Discriminant. */
  readonly mode: "vm";
  /** `-s`: socket path to listen on, or null for the default. */
  readonly socket: string | null;
  /** `--fd`: an already connected socket to use instead of listening, or null. */
  readonly fd: number | null;
  /** `--vhost-user`: speak vhost-user instead of length-prefixed frames. */
  readonly vhostUser: boolean;
  /** `-1`: exit when the first guest disconnects. */
  readonly oneOff: boolean;
}

/** `--help` / `-h`: print usage and exit. */
export interface HelpRequest {
  /** Discriminant. */
  readonly mode: "help";
}

/** `--version`: print the version and exit. */
export interface VersionRequest {
  /** Discriminant. */
  readonly mode: "version";
}

/** The result of parsing the command line; deep-frozen. */
export type Config = NsConfig | VmConfig | HelpRequest | VersionRequest;

type Scope = "both" | "ns" | "vm";

/** One command-line option: the single table behind parsing and `--help`. */
interface OptionSpec {
  readonly long: string;
  readonly short?: string;
  /** Placeholder for the value in `--help`; absent for flags. */
  readonly value?: string;
  /** May be given more than once (values add up). */
  readonly repeat?: boolean;
  readonly scope: Scope;
  readonly help: string;
}

const OPTIONS: readonly OptionSpec[] = [
  {
    long: "tcp-ports",
    short: "t",
    value: "SPEC",
    repeat: true,
    scope: "both",
    help: "forward TCP ports from the host to the guest",
  },
  {
    long: "udp-ports",
    short: "u",
    value: "SPEC",
    repeat: true,
    scope: "both",
    help: "forward UDP ports from the host to the guest",
  },
  {
    long: "address",
    short: "a",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "guest address (at most one IPv4 and one IPv6)",
  },
  {
    long: "netmask",
    short: "n",
    value: "MASK",
    scope: "both",
    help: "IPv4 prefix length (0-32) or dotted netmask",
  },
  {
    long: "gateway",
    short: "g",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "guest's default gateway (at most one per family)",
  },
  {
    long: "mtu",
    short: "m",
    value: "MTU",
    scope: "both",
    help: "guest MTU, 68-65520 (default 65520)",
  },
  {
    long: "dns",
    short: "D",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "DNS server offered to the guest",
  },
  {
    long: "search",
    short: "S",
    value: "DOMAIN",
    repeat: true,
    scope: "both",
    help: "DNS search domain offered to the guest",
  },
  {
    long: "dhcp-bootfile",
    value: "URL",
    scope: "both",
    help: "boot file offered by DHCP (option 67) and DHCPv6 (option 59), e.g. an iPXE script URL",
  },
  { long: "ipv4-only", short: "4", scope: "both", help: "IPv4 only" },
  { long: "ipv6-only", short: "6", scope: "both", help: "IPv6 only" },
  { long: "foreground", short: "f", scope: "both", help: "stay in the foreground" },
  { long: "debug", short: "d", scope: "both", help: "log debug messages" },
  { long: "trace", scope: "both", help: "log debug and per-packet trace messages" },
  { long: "quiet", short: "q", scope: "both", help: "log warnings and errors only" },
  {
    long: "pcap",
    short: "p",
    value: "FILE",
    scope: "both",
    help: "write every frame to FILE (pcap)",
  },
  {
    long: "pcap-dir",
    value: "DIR",
    scope: "both",
    help: "where pcap-start on the control socket may write once sandboxed " +
      "(default: --pcap's directory, else $TMPDIR or /tmp)",
  },
  {
    long: "log-file",
    short: "l",
    value: "PATH",
    scope: "both",
    help: "log to PATH instead of standard error",
  },
  { long: "pid", short: "P", value: "FILE", scope: "both", help: "write the process id to FILE" },
  {
    long: "api-socket",
    value: "PATH",
    scope: "both",
    help: "serve control requests (stats, flows, forwards, pcap) on UNIX socket PATH",
  },
  {
    long: "stats",
    value: "SECONDS",
    scope: "both",
    help: "log throughput, flows and drops every SECONDS, 1-86400",
  },
  {
    long: "dns-forward",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "relay DNS queries the guest sends to ADDR to the host's resolver",
  },
  {
    long: "dns-host",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "resolver for --dns-forward (default: the host's first nameserver)",
  },
  {
    long: "max-flows",
    value: "N",
    scope: "both",
    help: "track at most N connections and flows at once, 1-16777216 (default 131072); " +
      "memory follows the flows in use, not N",
  },
  {
    long: "udp-timeout",
    value: "SECONDS",
    scope: "both",
    help: "idle timeout of UDP flows, 1-86400 (default 180; DNS flows: 10)",
  },
  { long: "no-dhcp", scope: "both", help: "do not answer DHCP requests" },
  { long: "no-ndp", scope: "both", help: "do not answer NDP (neighbour and router solicitations)" },
  { long: "no-dhcpv6", scope: "both", help: "do not answer DHCPv6 requests" },
  { long: "no-ra", scope: "both", help: "send no router advertisements" },
  { long: "no-map-gw", scope: "both", help: "do not map the gateway address to host loopback" },
  {
    long: "no-offload",
    scope: "both",
    help: "plain frames both ways: no TSO/USO, no RSC (checksum offload stays)",
  },
  { long: "no-rsc", scope: "both", help: "do not coalesce the guest's TCP segments (RSC)" },
  {
    long: "no-sandbox",
    scope: "both",
    help: "stay unconfined after set-up (capabilities, no_new_privs, Landlock, seccomp kept as " +
      "they were; for debugging)",
  },
  {
    long: "map-host-loopback",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "address the guest uses for host loopback (one per family)",
  },
  {
    long: "loopback-only",
    scope: "both",
    help: "reach only the host's loopback; refuse other destinations",
  },
  {
    long: "no-host-loopback",
    scope: "both",
    help: "refuse destinations on the host's loopback (the mapped gateway included)",
  },
  {
    long: "map-guest-addr",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "address the guest uses for the host's own address (one per family)",
  },
  {
    long: "outbound",
    short: "o",
    value: "ADDR",
    repeat: true,
    scope: "both",
    help: "bind outbound sockets to ADDR (one per family)",
  },
  {
    long: "outbound-if4",
    value: "IFNAME",
    scope: "both",
    help: "bind outbound IPv4 sockets to IFNAME's address",
  },
  {
    long: "outbound-if6",
    value: "IFNAME",
    scope: "both",
    help: "bind outbound IPv6 sockets to IFNAME's address",
  },
  { long: "help", short: "h", scope: "both", help: "show this help and exit" },
  { long: "version", scope: "both", help: "show the version and exit" },
  {
    long: "tcp-ns",
    short: "T",
    value: "SPEC",
    repeat: true,
    scope: "ns",
    help: "forward TCP ports from the namespace to the host",
  },
  {
    long: "udp-ns",
    short: "U",
    value: "SPEC",
    repeat: true,
    scope: "ns",
    help: "forward UDP ports from the namespace to the host",
  },
  {
    long: "config-net",
    scope: "ns",
    help: "configure the tap interface (addresses, routes, MTU)",
  },
  {
    long: "netns",
    value: "PATH|NAME",
    scope: "ns",
    help: "attach to this namespace (NAME means /run/netns/NAME)",
  },
  {
    long: "ns-ifname",
    short: "I",
    value: "NAME",
    scope: "ns",
    help: "name of the tap interface in the namespace",
  },
  {
    long: "socket",
    short: "s",
    value: "PATH",
    scope: "vm",
    help: "UNIX socket to listen on for the guest",
  },
  { long: "fd", value: "N", scope: "vm", help: "use the connected socket N instead of listening" },
  { long: "vhost-user", scope: "vm", help: "speak vhost-user on the socket" },
  { long: "one-off", short: "1", scope: "vm", help: "exit when the first guest disconnects" },
];

const SPEC_BY_NAME: ReadonlyMap<string, OptionSpec> = new Map(OPTIONS.map((o) => [o.long, o]));

/** An option as written: `name` is the long name, `rawName` what the user typed. */
interface OptionToken {
  readonly name: string;
  readonly rawName: string;
  readonly value?: string;
  readonly inlineValue?: boolean;
}

/** The arguments after the mode, split into options and what follows them. */
interface Split {
  readonly options: readonly OptionToken[];
  /** Arguments after the options: a command or a PID (ns), nothing (vm). */
  readonly positionals: readonly string[];
  /** The options ended with `--`, so `positionals` is a command even if all digits. */
  readonly terminated: boolean;
}

/** The first option in `options` that is unknown or lacks or has a value it should not; null if none. */
function optionProblem(options: readonly OptionToken[]): string | null {
  for (const t of options) {
    const spec = SPEC_BY_NAME.get(t.name);
    if (spec === undefined) return `unknown option '${t.rawName}'`;
    if (spec.value === undefined) {
      if (t.value !== undefined) return `${t.rawName}: takes no value`;
      continue;
    }
    if (t.value === undefined) return `${t.rawName}: needs a value`;
    // `-t -d`: the user more likely forgot the value than meant '-d'.
    if (!t.inlineValue && t.value.startsWith("-") && t.value.length > 1) {
      return `${t.rawName}: needs a value, got '${t.value}' (write --${spec.long}=${t.value} if it is one)`;
    }
  }
  return null;
}

/** Steps 1 and 2 of the module comment: find the end of the options, check them. */
function splitArgs(args: readonly string[]): Split {
  const tokens = tokenizeArgs(args, OPTIONS);
  const stop = tokens.findIndex((t) => t.kind !== "option");
  const options: OptionToken[] = [];
  for (const t of stop < 0 ? tokens : tokens.slice(0, stop)) {
    if (t.kind === "option") options.push(t);
  }
  const problem = optionProblem(options);
  if (problem !== null) throw new ConfError(problem);
  const end = stop < 0 ? args.length : tokens[stop].index;
  const terminated = stop >= 0 && tokens[stop].kind === "option-terminator";
  return { options, positionals: args.slice(terminated ? end + 1 : end), terminated };
}

/** Freezes `value` and everything reachable from it; typed arrays cannot be frozen and are skipped. */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return value;
  for (const key of Reflect.ownKeys(value)) {
    deepFreeze((value as Record<PropertyKey, unknown>)[key]);
  }
  return Object.freeze(value);
}

const HELP: HelpRequest = Object.freeze({ mode: "help" });
const VERSION_REQUEST: VersionRequest = Object.freeze({ mode: "version" });

/** Default idle timeout of UDP flows, seconds. */
const UDP_TIMEOUT_DEFAULT = 180;
const MTU_MIN = 68;
const MTU_MAX = 65520;
/** PID_MAX_LIMIT on 64-bit Linux. */
const PID_MAX = 4194304;
const FD_MAX = 0x7fffffff;

/**
 * Parses the command line (without the program name) into a frozen
 * {@linkcode Config}. Throws {@linkcode ConfError} on any user error.
 */
export function parseConfig(args: readonly string[]): Config {
  const mode = args[0];
  if (mode !== "ns" && mode !== "vm") return parseWithoutMode(args);
  const split = splitArgs(args.slice(1));
  const request = helpOrVersion(split.options);
  if (request !== null) return request;
  return deepFreeze(buildConfig(mode, split));
}

function helpOrVersion(options: readonly OptionToken[]): Config | null {
  if (options.some((t) => t.name === "help")) return HELP;
  if (options.some((t) => t.name === "version")) return VERSION_REQUEST;
  return null;
}

/** No mode first: only `--help` and `--version` make sense; anything else says what is missing. */
function parseWithoutMode(args: readonly string[]): Config {
  if (args.length === 0) {
    throw new ConfError("missing mode: use 'tapir ns' or 'tapir vm' (see 'tapir --help')");
  }
  if (!args[0].startsWith("-")) {
    throw new ConfError(`unknown mode '${args[0]}': use 'tapir ns' or 'tapir vm'`);
  }
  const request = helpOrVersion(splitArgs(args).options);
  if (request !== null) return request;
  throw new ConfError(`missing mode: 'ns' or 'vm' must come first, before '${args[0]}'`);
}

/** Step 3: check every value, then the combinations; builds the (not yet frozen) config. */
function buildConfig(mode: "ns" | "vm", split: Split): NsConfig | VmConfig {
  // The first spelling of each option given, for messages about combinations.
  const given = new Map<string, string>();
  for (const t of split.options) {
    const spec = SPEC_BY_NAME.get(t.name)!;
    if (spec.scope !== "both" && spec.scope !== mode) {
      throw new ConfError(`${t.rawName} is only valid for 'tapir ${spec.scope}'`);
    }
    if (given.has(t.name) && spec.value !== undefined && !spec.repeat) {
      throw new ConfError(`${t.rawName}: given more than once`);
    }
    if (!given.has(t.name)) given.set(t.name, t.rawName);
  }
  const exclusive = (a: string, b: string) => {
    if (given.has(a) && given.has(b)) {
      throw new ConfError(`${given.get(a)} cannot be combined with ${given.get(b)}`);
    }
  };
  exclusive("ipv6-only", "ipv4-only");
  exclusive("quiet", "debug");
  exclusive("quiet", "trace");
  exclusive("fd", "socket");

  const ipv4 = !given.has("ipv6-only");
  const ipv6 = !given.has("ipv4-only");
  /** Refuses an address of a family that `-4`/`-6` turned off. */
  const checkFamily = (raw: string, family: 4 | 6, what: string) => {
    const off = family === 4 ? given.get("ipv6-only") : given.get("ipv4-only");
    if (off !== undefined) {
      throw new ConfError(`${raw}: ${what} is IPv${family}, but ${off} is given`);
    }
  };
  const unicast = (raw: string, text: string): IpAddr => {
    const ip = parseIp(text);
    if (ip === null) throw new ConfError(`${raw}: '${text}' is not an IPv4 or IPv6 address`);
    const kind = ipKind(ip);
    if (kind !== "unicast") {
      throw new ConfError(`${raw}: ${text} is ${kind}, not a unicast address`);
    }
    checkFamily(raw, ip.family, text);
    return ip;
  };
  const fwd = (raw: string, prev: PortFwd | null, spec: string): PortFwd => {
    const next = portFwdAdd(prev, spec);
    if (typeof next === "string") throw new ConfError(`${raw}: ${next}`);
    for (const rule of next.rules) {
      if (rule.addr !== null) checkFamily(raw, rule.addr.length === 4 ? 4 : 6, `'${spec}'`);
    }
    return next;
  };

  let tcp: PortFwd | null = null;
  let udp: PortFwd | null = null;
  let tcpNs: PortFwd | null = null;
  let udpNs: PortFwd | null = null;
  let addr4: IpAddr | null = null;
  let addr6: IpAddr | null = null;
  let gateway4: IpAddr | null = null;
  let gateway6: IpAddr | null = null;
  let mapLo4: IpAddr | null = null;
  let mapLo6: IpAddr | null = null;
  let mapGuest4: IpAddr | null = null;
  let mapGuest6: IpAddr | null = null;
  let outbound4: IpAddr | null = null;
  let outbound6: IpAddr | null = null;
  let outboundIf4: string | null = null;
  let outboundIf6: string | null = null;
  let dnsFwd4: IpAddr | null = null;
  let dnsFwd6: IpAddr | null = null;
  let dnsHost4: IpAddr | null = null;
  let dnsHost6: IpAddr | null = null;
  let udpTimeout = UDP_TIMEOUT_DEFAULT;
  let maxFlows = FLOW_DEFAULT_CAPACITY;
  let prefix4: number | null = null;
  let mtu = MTU_MAX;
  const dns: IpAddr[] = [];
  const search: string[] = [];
  let bootfile = "";
  let pcap: string | null = null;
  let pcapDir: string | null = null;
  let logFile: string | null = null;
  let pidFile: string | null = null;
  let apiSocket: string | null = null;
  let statsInterval = 0;
  let netns: string | null = null;
  let ifname: string | null = null;
  let socket: string | null = null;
  let fd: number | null = null;

  for (const t of split.options) {
    const raw = t.rawName;
    // Strict parsing guarantees a value for every option that takes one.
    const value = t.value ?? "";
    switch (t.name) {
      case "tcp-ports":
        tcp = fwd(raw, tcp, value);
        break;
      case "udp-ports":
        udp = fwd(raw, udp, value);
        break;
      case "tcp-ns":
        tcpNs = fwd(raw, tcpNs, value);
        break;
      case "udp-ns":
        udpNs = fwd(raw, udpNs, value);
        break;
      case "address":
        [addr4, addr6] = onePerFamily(raw, unicast(raw, value), addr4, addr6);
        break;
      case "gateway":
        [gateway4, gateway6] = onePerFamily(
          raw,
          unicast(raw, value),
          gateway4,
          gateway6,
          "gateway",
        );
        break;
      case "map-host-loopback": {
        [mapLo4, mapLo6] = onePerFamily(raw, unicast(raw, value), mapLo4, mapLo6);
        break;
      }
      case "map-guest-addr":
        [mapGuest4, mapGuest6] = onePerFamily(raw, unicast(raw, value), mapGuest4, mapGuest6);
        break;
      case "outbound":
        [outbound4, outbound6] = onePerFamily(raw, unicast(raw, value), outbound4, outbound6);
        break;
      case "outbound-if4":
      case "outbound-if6": {
        const problem = ifnameProblem(value);
        if (problem !== null) throw new ConfError(`${raw}: ${problem}`);
        if (t.name === "outbound-if4") outboundIf4 = value;
        else outboundIf6 = value;
        break;
      }
      case "dns-forward": {
        [dnsFwd4, dnsFwd6] = onePerFamily(raw, unicast(raw, value), dnsFwd4, dnsFwd6);
        break;
      }
      case "dns-host": {
        const ip = parseIp(value);
        if (ip === null) throw new ConfError(`${raw}: '${value}' is not an IPv4 or IPv6 address`);
        checkFamily(raw, ip.family, value);
        [dnsHost4, dnsHost6] = onePerFamily(raw, ip, dnsHost4, dnsHost6);
        break;
      }
      case "max-flows":
        maxFlows = parseInteger(raw, value, 1, FLOW_MAX_CAPACITY);
        break;
      case "udp-timeout":
        udpTimeout = parseInteger(raw, value, 1, 86400);
        break;
      case "netmask":
        checkFamily(raw, 4, "a netmask");
        prefix4 = parseNetmask(raw, value);
        break;
      case "mtu":
        mtu = parseInteger(raw, value, MTU_MIN, MTU_MAX);
        break;
      case "dns":
        dns.push(unicast(raw, value));
        break;
      case "search":
        search.push(checkDomain(raw, value));
        break;
      case "dhcp-bootfile":
        bootfile = checkBootfile(raw, value);
        break;
      case "pcap":
        pcap = checkPath(raw, value);
        break;
      case "pcap-dir":
        pcapDir = checkPath(raw, value);
        break;
      case "log-file":
        logFile = checkPath(raw, value);
        break;
      case "pid":
        pidFile = checkPath(raw, value);
        break;
      case "api-socket":
        apiSocket = checkPath(raw, value);
        break;
      case "stats":
        statsInterval = parseInteger(raw, value, 1, 86400);
        break;
      case "netns":
        netns = netnsPath(raw, value);
        break;
      case "ns-ifname": {
        const problem = ifnameProblem(value);
        if (problem !== null) throw new ConfError(`${raw}: ${problem}`);
        ifname = value;
        break;
      }
      case "socket":
        socket = checkPath(raw, value);
        break;
      case "fd":
        fd = parseInteger(raw, value, 0, FD_MAX);
        break;
    }
  }

  // -o and --outbound-if4/6 each give a family's source; one per family.
  if (outboundIf4 !== null && outbound4 !== null) {
    throw new ConfError(
      `${given.get("outbound-if4")} cannot be combined with an IPv4 ${given.get("outbound")}`,
    );
  }
  if (outboundIf6 !== null && outbound6 !== null) {
    throw new ConfError(
      `${given.get("outbound-if6")} cannot be combined with an IPv6 ${given.get("outbound")}`,
    );
  }

  const common: CommonConfig = {
    tcp: tcp ?? PORT_FWD_NONE,
    udp: udp ?? PORT_FWD_NONE,
    addr4: addr4?.bytes ?? null,
    addr6: addr6?.bytes ?? null,
    prefix4,
    gateway4: gateway4?.bytes ?? null,
    gateway6: gateway6?.bytes ?? null,
    mtu,
    dns,
    search,
    bootfile,
    ipv4,
    ipv6,
    dhcp: !given.has("no-dhcp"),
    ndp: !given.has("no-ndp"),
    dhcpv6: !given.has("no-dhcpv6"),
    ra: !given.has("no-ra") && !given.has("no-ndp"),
    mapGw: !given.has("no-map-gw"),
    mapHostLoopback4: mapLo4?.bytes ?? null,
    mapHostLoopback6: mapLo6?.bytes ?? null,
    loopbackOnly: given.has("loopback-only"),
    noHostLoopback: given.has("no-host-loopback"),
    mapGuestAddr4: mapGuest4?.bytes ?? null,
    mapGuestAddr6: mapGuest6?.bytes ?? null,
    outbound4: outbound4?.bytes ?? null,
    outbound6: outbound6?.bytes ?? null,
    outboundIf4,
    outboundIf6,
    dnsForward4: dnsFwd4?.bytes ?? null,
    dnsForward6: dnsFwd6?.bytes ?? null,
    dnsHost4: dnsHost4?.bytes ?? null,
    dnsHost6: dnsHost6?.bytes ?? null,
    udpTimeout,
    maxFlows,
    foreground: given.has("foreground"),
    logLevel: given.has("trace")
      ? LogLevel.trace
      : given.has("debug")
      ? LogLevel.debug
      : given.has("quiet")
      ? LogLevel.warn
      : LogLevel.info,
    pcap,
    pcapDir,
    logFile,
    pidFile,
    apiSocket,
    statsInterval,
    offload: !given.has("no-offload"),
    rsc: !given.has("no-rsc") && !given.has("no-offload"),
    sandbox: !given.has("no-sandbox"),
  };

  if (mode === "vm") {
    if (split.positionals.length > 0) {
      throw new ConfError(
        `unexpected argument '${split.positionals[0]}': 'tapir vm' takes no command`,
      );
    }
    return {
      ...common,
      mode,
      socket,
      fd,
      vhostUser: given.has("vhost-user"),
      oneOff: given.has("one-off"),
    };
  }
  return {
    ...common,
    mode,
    tcpNs: tcpNs ?? PORT_FWD_NONE,
    udpNs: udpNs ?? PORT_FWD_NONE,
    configNet: given.has("config-net"),
    ifname,
    target: nsTarget(split, netns, given.get("netns")),
  };
}

/** What follows the options in `tapir ns`: a PID, a command, or nothing. */
function nsTarget(split: Split, netns: string | null, netnsRaw: string | undefined): NsTarget {
  const rest = split.positionals;
  if (!split.terminated && rest.length > 0 && /^[0-9]+$/.test(rest[0])) {
    if (rest.length > 1) {
      throw new ConfError(
        `PID ${rest[0]} cannot be combined with a command or options ('${rest[1]}')`,
      );
    }
    if (netnsRaw !== undefined) {
      throw new ConfError(`PID ${rest[0]} cannot be combined with ${netnsRaw}`);
    }
    const pid = Number(rest[0]);
    if (pid < 1 || pid > PID_MAX) {
      throw new ConfError(`PID ${rest[0]} is out of range 1-${PID_MAX}`);
    }
    return { kind: "pid", pid };
  }
  if (netns !== null) {
    if (rest.length > 0) {
      throw new ConfError(`${netnsRaw} cannot be combined with a command ('${rest[0]}')`);
    }
    return { kind: "netns", path: netns };
  }
  return { kind: "spawn", command: [...rest] };
}

/** Sets the address of `ip`'s family, refusing a second one of the same family. */
function onePerFamily(
  raw: string,
  ip: IpAddr,
  v4: IpAddr | null,
  v6: IpAddr | null,
  what = "address",
): [IpAddr | null, IpAddr | null] {
  const prev = ip.family === 4 ? v4 : v6;
  if (prev !== null) {
    throw new ConfError(`${raw}: second IPv${ip.family} ${what}, ${formatIp(prev)} is given`);
  }
  return ip.family === 4 ? [ip, v6] : [v4, ip];
}

/** A whole number in `min..max` given to option `raw`; a {@linkcode ConfError} naming it otherwise. */
export function parseInteger(raw: string, text: string, min: number, max: number): number {
  if (!/^[0-9]+$/.test(text)) throw new ConfError(`${raw}: '${text}' is not a whole number`);
  const n = Number(text);
  if (n < min || n > max) throw new ConfError(`${raw}: ${text} is out of range ${min}-${max}`);
  return n;
}

/** A prefix length (`24`) or a contiguous dotted mask (`255.255.255.0`). */
function parseNetmask(raw: string, text: string): number {
  if (/^[0-9]+$/.test(text)) return parseInteger(raw, text, 0, 32);
  const mask = parseIp4(text);
  if (mask === null) {
    throw new ConfError(`${raw}: '${text}' is neither a prefix length nor a netmask`);
  }
  const prefix = ip4MaskPrefix(mask);
  if (prefix < 0) throw new ConfError(`${raw}: ${text} is not a contiguous netmask`);
  return prefix;
}

/** A DNS search domain: dot-separated labels of letters, digits, '-' and '_'. */
function checkDomain(raw: string, text: string): string {
  const name = text.endsWith(".") ? text.slice(0, -1) : text;
  const label = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
  if (name.length === 0 || name.length > 253 || !name.split(".").every((l) => label.test(l))) {
    throw new ConfError(`${raw}: '${text}' is not a valid domain name`);
  }
  return text;
}

/**
 * `--dhcp-bootfile`: printable ASCII that fits one DHCP option (255 bytes);
 * clients take it as a file name or, like iPXE, a URL.
 */
function checkBootfile(raw: string, text: string): string {
  if (!/^[\x21-\x7e]{1,255}$/.test(text)) {
    throw new ConfError(`${raw}: '${text}' must be 1 to 255 printable ASCII characters`);
  }
  return text;
}

function checkPath(raw: string, text: string): string {
  if (text === "") throw new ConfError(`${raw}: path is empty`);
  return text;
}

/** `--netns`: a path if it has a '/', else a name under /run/netns (as `ip netns` does). */
function netnsPath(raw: string, text: string): string {
  if (text.includes("/")) return text;
  if (text === "" || text === "." || text === "..") {
    throw new ConfError(`${raw}: '${text}' is not a namespace name or path`);
  }
  return `/run/netns/${text}`;
}

/** The `--help` text: both modes, every option, the port spec syntax. */
export function usageText(): string {
  const optionLine = (o: OptionSpec) => {
    const short = o.short === undefined ? "    " : `-${o.short}, `;
    return `  ${short}--${o.long}${o.value === undefined ? "" : ` ${o.value}`}`;
  };
  const width = Math.max(...OPTIONS.map((o) => optionLine(o).length)) + 2;
  const section = (scope: Scope) =>
    OPTIONS.filter((o) => o.scope === scope)
      .map((o) => optionLine(o).padEnd(width) + o.help)
      .join("\n");
  return `tapir: user-mode networking for containers and virtual machines

Usage:
  tapir ns [OPTIONS] [-- CMD [ARGS...]]   run CMD (default: your shell) in a new network namespace
  tapir ns [OPTIONS] PID                  attach to the network namespace of process PID
  tapir ns [OPTIONS] --netns PATH|NAME    attach to an existing network namespace
  tapir vm [OPTIONS]                      serve a virtual machine over a UNIX socket (QEMU)
  tapir ctl -s PATH [REQUEST]             query or change a running tapir (see 'tapir ctl --help')
  tapir slirp4netns [OPTIONS] PID|PATH [TAPNAME]
                                          slirp4netns's command line (see 'tapir slirp4netns --help')
  tapir pasta [OPTIONS] ...               as 'tapir ns', daemonising and ending as pasta does
  tapir --help | --version

Started under the name slirp4netns or pasta (a symlink, or a wrapper using
'exec -a'), tapir follows that program's contract without the first word.

Options for both modes:
${section("both")}

Options for 'tapir ns':
${section("ns")}

Options for 'tapir vm':
${section("vm")}

SPEC is none (the default), all, auto, or a comma-separated list of
  [ADDR[%IF]/]PORTS[:TARGET]   forward PORTS, optionally bound to ADDR and/or interface IF
  ~PORTS                       never forward PORTS (exclusions alone: all other ports)
where PORTS and TARGET are N or N-M of the same size, e.g. -t 8080:80, -t 127.0.0.1/2222:22.
`;
}
