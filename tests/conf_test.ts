import { deepStrictEqual, equal, fail, ok, throws } from "node:assert/strict";
import { ConfError, type Config, type NsConfig, parseConfig, type VmConfig } from "../lib/conf.ts";
import { portFwdTarget } from "../lib/fwd.ts";
import { LogLevel } from "../lib/log.ts";
import { FLOW_DEFAULT_CAPACITY } from "../lib/flow/table.ts";

function ns(...args: string[]): NsConfig {
  const conf = parseConfig(["ns", ...args]);
  if (conf.mode !== "ns") fail(`expected an ns config, got ${conf.mode}`);
  return conf;
}

function vm(...args: string[]): VmConfig {
  const conf = parseConfig(["vm", ...args]);
  if (conf.mode !== "vm") fail(`expected a vm config, got ${conf.mode}`);
  return conf;
}

/** The ConfError message for `args`, which must be refused. */
function refused(...args: string[]): string {
  try {
    parseConfig(args);
  } catch (err) {
    if (err instanceof ConfError) return err.message;
    throw err;
  }
  fail(`accepted: ${JSON.stringify(args)}`);
}

const bytes = (...b: number[]) => new Uint8Array(b);

/** Every object reachable from `value` is frozen (typed arrays cannot be, and are skipped). */
function assertDeepFrozen(value: unknown, path = "config"): void {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return;
  ok(Object.isFrozen(value), `${path} is frozen`);
  for (const [key, child] of Object.entries(value)) assertDeepFrozen(child, `${path}.${key}`);
}

Deno.test("ns with no options gets the defaults", () => {
  const conf = ns();
  equal(conf.mtu, 65520);
  equal(conf.tcp.mode, "none");
  equal(conf.udp.mode, "none");
  equal(conf.tcpNs.mode, "none");
  equal(conf.udpNs.mode, "none");
  equal(conf.addr4, null);
  equal(conf.addr6, null);
  equal(conf.prefix4, null);
  equal(conf.gateway4, null);
  equal(conf.gateway6, null);
  deepStrictEqual(conf.dns, []);
  deepStrictEqual(conf.search, []);
  equal(conf.ipv4, true);
  equal(conf.ipv6, true);
  equal(conf.foreground, false);
  equal(conf.logLevel, LogLevel.info);
  equal(conf.pcap, null);
  equal(conf.logFile, null);
  equal(conf.pidFile, null);
  equal(conf.configNet, false);
  equal(conf.ifname, null);
  equal(conf.maxFlows, FLOW_DEFAULT_CAPACITY);
  deepStrictEqual(conf.target, { kind: "spawn", command: [] });
});

Deno.test("vm with no options gets the defaults", () => {
  const conf = vm();
  equal(conf.mtu, 65520);
  equal(conf.socket, null);
  equal(conf.fd, null);
  equal(conf.vhostUser, false);
  equal(conf.oneOff, false);
  equal(conf.logLevel, LogLevel.info);
});

Deno.test("--help, -h and --version are answered with or without a mode", () => {
  const mode = (args: string[]) => parseConfig(args).mode;
  equal(mode(["--help"]), "help");
  equal(mode(["-h"]), "help");
  equal(mode(["ns", "--help"]), "help");
  equal(mode(["vm", "-s", "/tmp/x", "-h"]), "help");
  equal(mode(["--version"]), "version");
  equal(mode(["vm", "--version"]), "version");
  equal(mode(["-d", "--help"]), "help");
});

Deno.test("the config is frozen all the way down", () => {
  const confs: Config[] = [
    ns("-t", "127.0.0.1/80:8080,~90", "-D", "192.0.2.53", "-S", "example.org", "--", "sh"),
    vm("-a", "192.0.2.2", "-u", "53"),
    parseConfig(["--help"]),
  ];
  for (const conf of confs) assertDeepFrozen(conf);
  const conf = confs[0] as NsConfig;
  throws(() => (conf.dns as unknown as unknown[]).push(conf.dns[0]));
  throws(() => {
    (conf as { mtu: number }).mtu = 1;
  });
});

Deno.test("every shared option is read, long and short", () => {
  for (
    const [t, u, a, n, g, m, D, S, p, l, P] of [
      ["-t", "-u", "-a", "-n", "-g", "-m", "-D", "-S", "-p", "-l", "-P"],
      [
        "--tcp-ports",
        "--udp-ports",
        "--address",
        "--netmask",
        "--gateway",
        "--mtu",
        "--dns",
        "--search",
        "--pcap",
        "--log-file",
        "--pid",
      ],
    ]
  ) {
    const conf = vm(
      ...[t, "22", u, "5353:53"],
      ...[a, "192.0.2.2", a, "2001:db8::2", n, "24"],
      ...[g, "192.0.2.1", g, "fe80::1", m, "1500"],
      ...[D, "192.0.2.53", D, "2001:db8::53", S, "example.org", S, "lab.example."],
      ...[p, "/tmp/t.pcap", l, "/tmp/t.log", P, "/tmp/t.pid"],
    );
    equal(portFwdTarget(conf.tcp, 22), 22);
    equal(portFwdTarget(conf.udp, 5353), 53);
    deepStrictEqual(conf.addr4, bytes(192, 0, 2, 2));
    deepStrictEqual(conf.addr6, bytes(0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2));
    equal(conf.prefix4, 24);
    deepStrictEqual(conf.gateway4, bytes(192, 0, 2, 1));
    deepStrictEqual(conf.gateway6, bytes(0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1));
    equal(conf.mtu, 1500);
    deepStrictEqual(conf.dns.map((d) => [d.family, [...d.bytes]]), [
      [4, [192, 0, 2, 53]],
      [6, [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53]],
    ]);
    deepStrictEqual(conf.search, ["example.org", "lab.example."]);
    equal(conf.bootfile, "");
    equal(conf.pcap, "/tmp/t.pcap");
    equal(conf.logFile, "/tmp/t.log");
    equal(conf.pidFile, "/tmp/t.pid");
  }
});

Deno.test("--max-flows bounds the flow table, in both modes", () => {
  equal(ns("--max-flows", "100").maxFlows, 100);
  equal(vm("--max-flows=16777216").maxFlows, 16777216);
});

Deno.test("--dhcp-bootfile is kept as given, in both modes", () => {
  equal(
    vm("--dhcp-bootfile", "http://10.0.2.2:8080/boot.ipxe").bootfile,
    "http://10.0.2.2:8080/boot.ipxe",
  );
  equal(ns("--dhcp-bootfile=tftp://h/pxelinux.0").bootfile, "tftp://h/pxelinux.0");
});

Deno.test("flags: families, foreground, and the log level", () => {
  equal(ns("-4").ipv6, false);
  equal(ns("--ipv4-only").ipv4, true);
  equal(ns("-6").ipv4, false);
  equal(ns("--ipv6-only").ipv6, true);
  equal(ns("-f").foreground, true);
  equal(ns("--foreground").foreground, true);
  equal(ns("-q").logLevel, LogLevel.warn);
  equal(ns("--quiet").logLevel, LogLevel.warn);
  equal(ns("-d").logLevel, LogLevel.debug);
  equal(ns("--debug").logLevel, LogLevel.debug);
  equal(ns("--trace").logLevel, LogLevel.trace);
  equal(ns("-d", "--trace").logLevel, LogLevel.trace);
  equal(ns("-fd4").logLevel, LogLevel.debug, "short flags group");
});

Deno.test("values may be attached: --mtu=1500, -m1500, -t80", () => {
  equal(ns("--mtu=1500").mtu, 1500);
  equal(ns("-m1500").mtu, 1500);
  equal(portFwdTarget(ns("-t80").tcp, 80), 80);
  equal(portFwdTarget(ns("--tcp-ports=8080:80").tcp, 8080), 80);
});

Deno.test("the netmask is a prefix length or a contiguous dotted mask", () => {
  equal(ns("-n", "0").prefix4, 0);
  equal(ns("-n", "32").prefix4, 32);
  equal(ns("-n", "255.255.255.0").prefix4, 24);
  equal(ns("-n", "255.255.240.0").prefix4, 20);
  equal(ns("--netmask", "0.0.0.0").prefix4, 0);
});

Deno.test("port options repeat and combine", () => {
  const conf = ns("-t", "22", "--tcp-ports", "80,~81", "-t", "1000-1001:2000-2001");
  equal(portFwdTarget(conf.tcp, 22), 22);
  equal(portFwdTarget(conf.tcp, 80), 80);
  equal(portFwdTarget(conf.tcp, 1001), 2001);
  equal(portFwdTarget(conf.tcp, 23), -1);
  equal(ns("-t", "all").tcp.mode, "all");
  equal(ns("-u", "auto").udp.mode, "auto");
});

Deno.test("ns-only options", () => {
  const conf = ns("-T", "53", "-U", "53", "--config-net", "-I", "tap0");
  equal(portFwdTarget(conf.tcpNs, 53), 53);
  equal(portFwdTarget(conf.udpNs, 53), 53);
  equal(conf.configNet, true);
  equal(conf.ifname, "tap0");
  equal(ns("--ns-ifname", "x".repeat(15)).ifname, "x".repeat(15));
  equal(portFwdTarget(ns("--tcp-ns", "5000").tcpNs, 5000), 5000);
  equal(portFwdTarget(ns("--udp-ns", "5001").udpNs, 5001), 5001);
});

Deno.test("vm-only options", () => {
  const conf = vm("-s", "/tmp/tapir.sock", "--vhost-user", "-1");
  equal(conf.socket, "/tmp/tapir.sock");
  equal(conf.vhostUser, true);
  equal(conf.oneOff, true);
  equal(vm("--socket", "/run/x").socket, "/run/x");
  equal(vm("--one-off").oneOff, true);
  equal(vm("--fd", "0").fd, 0);
  equal(vm("--fd", "3").fd, 3);
  equal(vm("--").socket, null, "a lone '--' is no command");
});

Deno.test("ns: options stop at the command, which keeps its own options", () => {
  deepStrictEqual(ns("sh", "-c", "ip -4 addr").target, {
    kind: "spawn",
    command: ["sh", "-c", "ip -4 addr"],
  });
  const conf = ns("-d", "--", "ping", "-4", "-c", "1", "192.0.2.1");
  equal(conf.logLevel, LogLevel.debug);
  equal(conf.ipv6, true, "-4 after '--' belongs to the command");
  deepStrictEqual(conf.target, { kind: "spawn", command: ["ping", "-4", "-c", "1", "192.0.2.1"] });
  deepStrictEqual(ns("-t", "80", "nc", "-l", "80").target, {
    kind: "spawn",
    command: ["nc", "-l", "80"],
  });
  deepStrictEqual(ns("--", "1234").target, { kind: "spawn", command: ["1234"] });
  deepStrictEqual(ns("--").target, { kind: "spawn", command: [] });
});

Deno.test("ns: one all-digit argument is a PID to attach to", () => {
  deepStrictEqual(ns("1234").target, { kind: "pid", pid: 1234 });
  deepStrictEqual(ns("-d", "1").target, { kind: "pid", pid: 1 });
});

Deno.test("ns: --netns takes a path, or a name under /run/netns", () => {
  deepStrictEqual(ns("--netns", "/proc/77/ns/net").target, {
    kind: "netns",
    path: "/proc/77/ns/net",
  });
  deepStrictEqual(ns("--netns", "blue").target, { kind: "netns", path: "/run/netns/blue" });
  deepStrictEqual(ns("--netns=./here").target, { kind: "netns", path: "./here" });
});

/** [args, exact message]: every refusal is one line naming what is wrong. */
const ERRORS: [string[], string][] = [
  // Mode.
  [[], "missing mode: use 'tapir ns' or 'tapir vm' (see 'tapir --help')"],
  [["run"], "unknown mode 'run': use 'tapir ns' or 'tapir vm'"],
  [["-d", "ns"], "missing mode: 'ns' or 'vm' must come first, before '-d'"],
  // What parseArgs refuses.
  [["--bogus"], "unknown option '--bogus'"],
  [["ns", "--bogus"], "unknown option '--bogus'"],
  [["vm", "-x"], "unknown option '-x'"],
  [["ns", "-dx"], "unknown option '-x'"],
  [["ns", "--mtu"], "--mtu: needs a value"],
  [["ns", "-m"], "-m: needs a value"],
  [["ns", "-t", "-d"], "-t: needs a value, got '-d' (write --tcp-ports=-d if it is one)"],
  [["ns", "--debug=yes"], "--debug: takes no value"],
  // Options of the other mode.
  [["vm", "--config-net"], "--config-net is only valid for 'tapir ns'"],
  [["vm", "-T", "80"], "-T is only valid for 'tapir ns'"],
  [["vm", "--udp-ns", "53"], "--udp-ns is only valid for 'tapir ns'"],
  [["vm", "--netns", "x"], "--netns is only valid for 'tapir ns'"],
  [["vm", "-I", "tap0"], "-I is only valid for 'tapir ns'"],
  [["ns", "-s", "/tmp/s"], "-s is only valid for 'tapir vm'"],
  [["ns", "--fd", "3"], "--fd is only valid for 'tapir vm'"],
  [["ns", "--vhost-user"], "--vhost-user is only valid for 'tapir vm'"],
  [["ns", "-1"], "-1 is only valid for 'tapir vm'"],
  // Given twice.
  [["ns", "-m", "1500", "--mtu", "1400"], "--mtu: given more than once"],
  [["ns", "-n", "24", "-n", "25"], "-n: given more than once"],
  [["vm", "-s", "a", "-s", "b"], "-s: given more than once"],
  // MTU.
  [["ns", "--mtu", "70000"], "--mtu: 70000 is out of range 68-65520"],
  [["ns", "-m", "67"], "-m: 67 is out of range 68-65520"],
  [["ns", "-m", "65521"], "-m: 65521 is out of range 68-65520"],
  [["ns", "-m", "1500.0"], "-m: '1500.0' is not a whole number"],
  [["ns", "-m", "big"], "-m: 'big' is not a whole number"],
  [["ns", "--mtu="], "--mtu: '' is not a whole number"],
  // Port forwarding.
  [["ns", "-t", "0"], "-t: port 0 is out of range 1-65535"],
  [["ns", "-u", "65536"], "-u: port 65536 is out of range 1-65535"],
  [["ns", "-T", "2000-1000"], "-T: port range 2000-1000 is reversed"],
  [["ns", "-U", "1000-1010:2000-2005"], "-U: target 2000-2005 is not the same size as 1000-1010"],
  [["ns", "-t", "80", "--tcp-ports", "80"], "--tcp-ports: port 80 is forwarded twice"],
  [["vm", "-t", "80,,81"], "-t: empty item in '80,,81'"],
  [["vm", "-t", ""], "-t: empty item"],
  [["vm", "-u", "1.2.3/53"], "-u: bad address '1.2.3' in '1.2.3/53'"],
  [["vm", "-t", "all", "-t", "22"], "-t: 'all' cannot be combined with other port specs"],
  [["vm", "-t", "none,22"], "-t: 'none' cannot be combined with other items"],
  [["ns", "-4", "-t", "::1/80"], "-t: '::1/80' is IPv6, but -4 is given"],
  [["ns", "-6", "-t", "127.0.0.1/80"], "-t: '127.0.0.1/80' is IPv4, but -6 is given"],
  // Addresses.
  [["ns", "-a", "192.0.2"], "-a: '192.0.2' is not an IPv4 or IPv6 address"],
  [["ns", "-a", "192.0.2.1/24"], "-a: '192.0.2.1/24' is not an IPv4 or IPv6 address"],
  [["ns", "-a", "0.0.0.0"], "-a: 0.0.0.0 is unspecified, not a unicast address"],
  [["ns", "-a", "::"], "-a: :: is unspecified, not a unicast address"],
  [["ns", "-a", "127.0.0.2"], "-a: 127.0.0.2 is loopback, not a unicast address"],
  [["ns", "--address", "::1"], "--address: ::1 is loopback, not a unicast address"],
  [["ns", "-a", "224.0.0.1"], "-a: 224.0.0.1 is multicast, not a unicast address"],
  [["ns", "-a", "ff02::1"], "-a: ff02::1 is multicast, not a unicast address"],
  [["ns", "-a", "255.255.255.255"], "-a: 255.255.255.255 is broadcast, not a unicast address"],
  [["ns", "-a", "192.0.2.2", "-a", "192.0.2.3"], "-a: second IPv4 address, 192.0.2.2 is given"],
  [
    ["ns", "-a", "2001:db8::2", "-a", "2001:db8::3"],
    "-a: second IPv6 address, 2001:db8::2 is given",
  ],
  [["ns", "-4", "-a", "2001:db8::2"], "-a: 2001:db8::2 is IPv6, but -4 is given"],
  [["ns", "--ipv6-only", "-a", "192.0.2.2"], "-a: 192.0.2.2 is IPv4, but --ipv6-only is given"],
  // Gateways.
  [["ns", "-g", "router"], "-g: 'router' is not an IPv4 or IPv6 address"],
  [["ns", "-g", "127.0.0.1"], "-g: 127.0.0.1 is loopback, not a unicast address"],
  [["ns", "-g", "192.0.2.1", "-g", "192.0.2.254"], "-g: second IPv4 gateway, 192.0.2.1 is given"],
  [
    ["ns", "-g", "fe80::1", "--gateway", "fe80::2"],
    "--gateway: second IPv6 gateway, fe80::1 is given",
  ],
  [["ns", "-6", "-g", "192.0.2.1"], "-g: 192.0.2.1 is IPv4, but -6 is given"],
  // Netmask.
  [["ns", "-n", "33"], "-n: 33 is out of range 0-32"],
  [["ns", "-n", "255.0.255.0"], "-n: 255.0.255.0 is not a contiguous netmask"],
  [["ns", "-n", "/24"], "-n: '/24' is neither a prefix length nor a netmask"],
  [["ns", "-6", "-n", "24"], "-n: a netmask is IPv4, but -6 is given"],
  // DNS.
  [["ns", "-D", "0.0.0.0"], "-D: 0.0.0.0 is unspecified, not a unicast address"],
  [["ns", "--dns", "::1"], "--dns: ::1 is loopback, not a unicast address"],
  [["ns", "-D", "resolver"], "-D: 'resolver' is not an IPv4 or IPv6 address"],
  [["ns", "-S", "bad..domain"], "-S: 'bad..domain' is not a valid domain name"],
  [["ns", "-S", ""], "-S: '' is not a valid domain name"],
  [["ns", "--search=-lead.example"], "--search: '-lead.example' is not a valid domain name"],
  [["ns", "-S", "a b"], "-S: 'a b' is not a valid domain name"],
  [
    ["vm", "--dhcp-bootfile", "http://x/a b"],
    "--dhcp-bootfile: 'http://x/a b' must be 1 to 255 printable ASCII characters",
  ],
  [
    ["vm", "--dhcp-bootfile", "h".repeat(256)],
    `--dhcp-bootfile: '${"h".repeat(256)}' must be 1 to 255 printable ASCII characters`,
  ],
  [
    ["ns", "-S", `${"x".repeat(64)}.example`],
    `-S: '${"x".repeat(64)}.example' is not a valid domain name`,
  ],
  // Exclusive flags.
  [["ns", "-4", "-6"], "-6 cannot be combined with -4"],
  [["ns", "--ipv6-only", "--ipv4-only"], "--ipv6-only cannot be combined with --ipv4-only"],
  [["ns", "-q", "-d"], "-q cannot be combined with -d"],
  [["ns", "--trace", "--quiet"], "--quiet cannot be combined with --trace"],
  // Paths.
  [["ns", "-p", ""], "-p: path is empty"],
  [["ns", "--log-file="], "--log-file: path is empty"],
  [["ns", "-P", ""], "-P: path is empty"],
  [["vm", "-s", ""], "-s: path is empty"],
  // Interface name.
  [["ns", "-I", ""], "-I: interface name is empty"],
  [["ns", "-I", "x".repeat(16)], `-I: interface name '${"x".repeat(16)}' is longer than 15 bytes`],
  [
    ["ns", "--ns-ifname", "a/b"],
    "--ns-ifname: interface name 'a/b' contains '/', ':' or whitespace",
  ],
  [["ns", "-I", "a b"], "-I: interface name 'a b' contains '/', ':' or whitespace"],
  [["ns", "-I", "."], "-I: '.' is not a valid interface name"],
  [["ns", "-I", ".."], "-I: '..' is not a valid interface name"],
  // What ns attaches to.
  [["ns", "1234", "sh"], "PID 1234 cannot be combined with a command or options ('sh')"],
  [["ns", "1234", "--", "sh"], "PID 1234 cannot be combined with a command or options ('--')"],
  [["ns", "--netns", "blue", "1234"], "PID 1234 cannot be combined with --netns"],
  [["ns", "0"], "PID 0 is out of range 1-4194304"],
  [["ns", "4194305"], "PID 4194305 is out of range 1-4194304"],
  [["ns", "--netns", "blue", "--", "sh"], "--netns cannot be combined with a command ('sh')"],
  [["ns", "--netns", ""], "--netns: '' is not a namespace name or path"],
  [["ns", "--netns", ".."], "--netns: '..' is not a namespace name or path"],
  // vm.
  [["vm", "sh"], "unexpected argument 'sh': 'tapir vm' takes no command"],
  [["vm", "--", "sh"], "unexpected argument 'sh': 'tapir vm' takes no command"],
  [["vm", "-s", "/tmp/s", "--fd", "3"], "--fd cannot be combined with -s"],
  [["vm", "--fd", "x"], "--fd: 'x' is not a whole number"],
  [["ns", "--max-flows", "0"], "--max-flows: 0 is out of range 1-16777216"],
  [["vm", "--max-flows=lots"], "--max-flows: 'lots' is not a whole number"],
  [["vm", "--fd=-1"], "--fd: '-1' is not a whole number"],
  [["vm", "--fd", "2147483648"], "--fd: 2147483648 is out of range 0-2147483647"],
  // The host's own address, outbound binding.
  [
    ["ns", "--map-guest-addr", "192.0.2.77", "--map-guest-addr", "192.0.2.78"],
    "--map-guest-addr: second IPv4 address, 192.0.2.77 is given",
  ],
  [
    ["vm", "--map-guest-addr", "2001:db8::77", "--map-guest-addr", "2001:db8::78"],
    "--map-guest-addr: second IPv6 address, 2001:db8::77 is given",
  ],
  [["ns", "--map-guest-addr", "host"], "--map-guest-addr: 'host' is not an IPv4 or IPv6 address"],
  [
    ["ns", "--map-guest-addr", "224.0.0.1"],
    "--map-guest-addr: 224.0.0.1 is multicast, not a unicast address",
  ],
  [
    ["ns", "-4", "--map-guest-addr", "2001:db8::77"],
    "--map-guest-addr: 2001:db8::77 is IPv6, but -4 is given",
  ],
  [["ns", "--no-host-loopback=yes"], "--no-host-loopback: takes no value"],
  [
    ["ns", "-o", "192.0.2.5", "--outbound", "192.0.2.6"],
    "--outbound: second IPv4 address, 192.0.2.5 is given",
  ],
  [
    ["vm", "-o", "2001:db8::5", "-o", "2001:db8::6"],
    "-o: second IPv6 address, 2001:db8::5 is given",
  ],
  [["ns", "-o", "eth0"], "-o: 'eth0' is not an IPv4 or IPv6 address"],
  [["ns", "-o", "0.0.0.0"], "-o: 0.0.0.0 is unspecified, not a unicast address"],
  [["ns", "-6", "-o", "192.0.2.5"], "-o: 192.0.2.5 is IPv4, but -6 is given"],
  [
    ["ns", "--outbound-if4", "a/b"],
    "--outbound-if4: interface name 'a/b' contains '/', ':' or whitespace",
  ],
  [["vm", "--outbound-if6", ""], "--outbound-if6: interface name is empty"],
  [
    ["ns", "--outbound-if6", "x".repeat(16)],
    `--outbound-if6: interface name '${"x".repeat(16)}' is longer than 15 bytes`,
  ],
  [
    ["ns", "--outbound-if4", "eth0", "--outbound-if4", "eth1"],
    "--outbound-if4: given more than once",
  ],
  [
    ["ns", "-o", "192.0.2.5", "--outbound-if4", "eth0"],
    "--outbound-if4 cannot be combined with an IPv4 -o",
  ],
  [
    ["vm", "--outbound-if6", "eth0", "--outbound", "2001:db8::5"],
    "--outbound-if6 cannot be combined with an IPv6 --outbound",
  ],
];

Deno.test("every refusal is one exact line", () => {
  for (const [args, message] of ERRORS) {
    const got = refused(...args);
    equal(got, message, JSON.stringify(args));
    ok(!got.includes("\n"), `one line for ${JSON.stringify(args)}`);
  }
});

Deno.test("refusals caused by an option name it as the user wrote it", () => {
  /** How each option argument can be named: `--mtu=1` → `--mtu`, `-dx` → `-d`, `-x`. */
  const spellings = (arg: string) =>
    arg.startsWith("--") ? [arg.split("=")[0]] : [...arg.slice(1)].map((c) => `-${c}`);
  for (const [args, message] of ERRORS) {
    // Mode and positional problems name the argument instead; checked above.
    if (message.startsWith("missing mode") || message.startsWith("PID")) continue;
    const options = args.filter((a) => a.startsWith("-") && a !== "--").flatMap(spellings);
    if (options.length === 0) continue;
    ok(options.some((o) => message.includes(o)), `${JSON.stringify(args)} → ${message}`);
  }
});

Deno.test("ConfError is an Error with its own name", () => {
  const err = new ConfError("x");
  ok(err instanceof Error);
  equal(err.name, "ConfError");
  equal(err.message, "x");
});

Deno.test("service switches, gateway mapping and loopback-only have pasta's defaults", () => {
  const c = ns();
  deepStrictEqual(
    [c.dhcp, c.ndp, c.dhcpv6, c.ra, c.mapGw, c.loopbackOnly],
    [true, true, true, true, true, false],
  );
  equal(c.mapHostLoopback4, null);
  const off = ns("--no-dhcp", "--no-dhcpv6", "--no-ra", "--no-map-gw", "--loopback-only");
  deepStrictEqual(
    [off.dhcp, off.ndp, off.dhcpv6, off.ra, off.mapGw, off.loopbackOnly],
    [false, true, false, false, false, true],
  );
  equal(ns("--no-ndp").ra, false, "no NDP means no router advertisements either");
});

Deno.test("--map-host-loopback takes one unicast address per family", () => {
  const c = vm("--map-host-loopback", "192.0.2.9", "--map-host-loopback", "2001:db8::9");
  deepStrictEqual(c.mapHostLoopback4, bytes(192, 0, 2, 9));
  equal(c.mapHostLoopback6?.length, 16);
  ok(
    refused("ns", "--map-host-loopback", "192.0.2.9", "--map-host-loopback", "192.0.2.8")
      .startsWith("--map-host-loopback: second IPv4 address"),
  );
  ok(refused("ns", "--map-host-loopback", "224.0.0.1").startsWith("--map-host-loopback:"));
  ok(refused("ns", "-4", "--map-host-loopback", "::5").startsWith("--map-host-loopback:"));
});

Deno.test("the host's-own-address and outbound options are off by default", () => {
  for (const c of [ns(), vm()]) {
    equal(c.noHostLoopback, false);
    equal(c.mapGuestAddr4, null);
    equal(c.mapGuestAddr6, null);
    equal(c.outbound4, null);
    equal(c.outbound6, null);
    equal(c.outboundIf4, null);
    equal(c.outboundIf6, null);
  }
});

Deno.test("--no-host-loopback is a flag of both modes, apart from --loopback-only", () => {
  const c = ns("--no-host-loopback");
  equal(c.noHostLoopback, true);
  equal(c.loopbackOnly, false);
  equal(c.mapGw, true, "the gateway stays mapped; what it maps to is refused");
  equal(vm("--no-host-loopback").noHostLoopback, true);
});

Deno.test("--map-guest-addr takes one unicast address per family, in both modes", () => {
  const c = ns("--map-guest-addr", "192.0.2.77", "--map-guest-addr", "2001:db8::77");
  deepStrictEqual(c.mapGuestAddr4, bytes(192, 0, 2, 77));
  deepStrictEqual(
    c.mapGuestAddr6,
    bytes(0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x77),
  );
  const v4 = vm("--map-guest-addr=10.0.2.254");
  deepStrictEqual(v4.mapGuestAddr4, bytes(10, 0, 2, 254));
  equal(v4.mapGuestAddr6, null);
  equal(vm("--map-guest-addr", "fd00::fe").mapGuestAddr4, null);
});

Deno.test("-o and --outbound take one unicast address per family, in both modes", () => {
  const c = ns("-o", "192.0.2.5", "--outbound", "2001:db8::5");
  deepStrictEqual(c.outbound4, bytes(192, 0, 2, 5));
  deepStrictEqual(c.outbound6, bytes(0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5));
  deepStrictEqual(vm("--outbound=198.51.100.9").outbound4, bytes(198, 51, 100, 9));
  equal(vm("-o", "198.51.100.9").outbound6, null);
});

Deno.test("--outbound-if4 and --outbound-if6 keep interface names, in both modes", () => {
  const c = ns("--outbound-if4", "eth0", "--outbound-if6", "wlan0");
  equal(c.outboundIf4, "eth0");
  equal(c.outboundIf6, "wlan0");
  equal(c.outbound4, null);
  equal(vm("--outbound-if6=br-lan").outboundIf6, "br-lan");
  equal(vm("--outbound-if4", "x".repeat(15)).outboundIf4, "x".repeat(15));
});
