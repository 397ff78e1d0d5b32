/**
 * slirp4netns's command line (`lib/engines/slirp4netns.ts`): the argument
 * lists podman 4 and rootlesskit really pass, the defaults and arithmetic of
 * slirp4netns's network, and every refusal. The translated `tapir ns`
 * arguments are checked through `parseConfig`, as `main.ts` uses them.
 *
 * @module
 */

import { deepStrictEqual, equal, fail, match, ok } from "node:assert/strict";
import { ConfError, type NsConfig, parseConfig } from "../../lib/conf.ts";
import type { EngineOptions } from "../../lib/engines/engine.ts";
import {
  parseSlirp4netnsArgs,
  SLIRP4NETNS_COMPAT,
  slirp4netnsUsage,
  slirp4netnsVersion,
} from "../../lib/engines/slirp4netns.ts";
import * as sys from "../../lib/sys/mod.ts";

const bytes = (...b: number[]) => new Uint8Array(b);

/** fd00::N for N below 0x10000. */
function fd00(n: number): Uint8Array {
  const a = new Uint8Array(16);
  a[0] = 0xfd;
  a[14] = n >>> 8;
  a[15] = n & 0xff;
  return a;
}

interface Run {
  readonly nsArgs: readonly string[];
  readonly engine: EngineOptions;
  readonly conf: NsConfig;
}

/** Parses a slirp4netns command line that must be a run, and its `tapir ns` translation. */
function run(...args: string[]): Run {
  const request = parseSlirp4netnsArgs(args);
  if (request.kind !== "run") fail(`expected a run, got ${request.kind}`);
  equal(request.nsArgs[0], "ns", "the translation starts with the mode");
  const conf = parseConfig(request.nsArgs);
  if (conf.mode !== "ns") fail(`expected an ns config, got ${conf.mode}`);
  return { nsArgs: request.nsArgs, engine: request.engine, conf };
}

/** The ConfError message for a slirp4netns command line that must be refused. */
function refused(...args: string[]): string {
  try {
    parseSlirp4netnsArgs(args);
  } catch (err) {
    if (err instanceof ConfError) {
      ok(!err.message.includes("\n"), `one line: ${err.message}`);
      return err.message;
    }
    throw err;
  }
  fail(`accepted: ${JSON.stringify(args)}`);
}

/**
 * Runs `body` with both ends of a fresh pipe: open, and inherited the way a
 * caller passes them (no close-on-exec), or with `flags` as given.
 */
function withPipe(body: (readFd: number, writeFd: number) => void, flags = 0): void {
  const fds = new Int32Array(2);
  equal(sys.pipe2(fds, flags), 0, "pipe2");
  try {
    body(fds[0], fds[1]);
  } finally {
    sys.close(fds[0]);
    sys.close(fds[1]);
  }
}

Deno.test("podman 4.3's exact command line is understood", () => {
  withPipe((exitFd, readyFd) => {
    const { engine, conf } = run(
      "--mtu=65520",
      "--enable-sandbox",
      "--enable-seccomp",
      "--enable-ipv6",
      "-c",
      "-e",
      `${exitFd}`,
      "-r",
      `${readyFd}`,
      "--api-socket",
      "/tmp/x.net",
      "--netns-type=path",
      "/run/netns/netns-abc",
      "tap0",
    );
    equal(conf.mtu, 65520);
    equal(conf.ifname, "tap0");
    equal(conf.configNet, true);
    equal(conf.apiSocket, "/tmp/x.net");
    deepStrictEqual(conf.target, { kind: "netns", path: "/run/netns/netns-abc" });
    equal(conf.ipv4, true);
    equal(conf.ipv6, true);
    deepStrictEqual(conf.addr4, bytes(10, 0, 2, 100));
    equal(conf.prefix4, 24);
    deepStrictEqual(conf.gateway4, bytes(10, 0, 2, 2));
    deepStrictEqual(conf.addr6, fd00(0x100));
    deepStrictEqual(conf.gateway6, fd00(2));
    deepStrictEqual(conf.dnsForward4, bytes(10, 0, 2, 3));
    deepStrictEqual(conf.dnsForward6, fd00(3));
    deepStrictEqual(conf.dns.map((d) => [d.family, d.bytes]), [
      [4, bytes(10, 0, 2, 3)],
      [6, fd00(3)],
    ]);
    equal(conf.noHostLoopback, false);

    equal(engine.contract, "slirp4netns");
    equal(engine.exitFd, exitFd);
    equal(engine.readyFd, readyFd);
    equal(engine.usernsPath, null, "a path target has no process to take the user namespace of");
    equal(engine.mac, null);
    equal(engine.daemon, false);
    equal(engine.endWithTarget, false, "a bind-mounted namespace has no process to end with");
    deepStrictEqual(engine.slirpApi, { guest4: bytes(10, 0, 2, 100), guest6: fd00(0x100) });
    deepStrictEqual(
      engine.warnings,
      [],
      "--enable-sandbox and --enable-seccomp: tapir's own sandbox",
    );
  });
});

Deno.test("rootlesskit 1.1's command line is understood: PID target, its user namespace", () => {
  withPipe((_, readyFd) => {
    const { engine, conf } = run(
      "--mtu",
      "65520",
      "-r",
      `${readyFd}`,
      "--api-socket",
      "/run/user/1000/rk/.bp.sock",
      "4242",
      "tap0",
    );
    equal(conf.mtu, 65520);
    equal(conf.ifname, "tap0");
    equal(conf.configNet, false, "rootlesskit configures the tap itself");
    equal(conf.apiSocket, "/run/user/1000/rk/.bp.sock");
    deepStrictEqual(conf.target, { kind: "pid", pid: 4242 });
    equal(conf.ipv6, false);
    equal(engine.readyFd, readyFd);
    equal(engine.exitFd, null);
    equal(engine.usernsPath, "/proc/4242/ns/user");
    equal(engine.endWithTarget, true);
    deepStrictEqual(engine.warnings, []);
  });
});

Deno.test("the defaults are slirp4netns's: 10.0.2.0/24, guest .100, host .2, DNS .3, MTU 1500, tap0", () => {
  const { nsArgs, engine, conf } = run("1234");
  deepStrictEqual(nsArgs, [
    "ns",
    "-I",
    "tap0",
    "-m",
    "1500",
    "-a",
    "10.0.2.100",
    "-n",
    "24",
    "-g",
    "10.0.2.2",
    "-4",
    "--dns-forward",
    "10.0.2.3",
    "-D",
    "10.0.2.3",
    "1234",
  ]);
  equal(conf.mtu, 1500);
  equal(conf.ifname, "tap0");
  deepStrictEqual(conf.addr4, bytes(10, 0, 2, 100));
  equal(conf.prefix4, 24);
  deepStrictEqual(conf.gateway4, bytes(10, 0, 2, 2));
  equal(conf.ipv4, true);
  equal(conf.ipv6, false, "-4 without --enable-ipv6");
  equal(conf.addr6, null);
  deepStrictEqual(conf.dnsForward4, bytes(10, 0, 2, 3));
  equal(conf.dnsForward6, null);
  deepStrictEqual(conf.dns.map((d) => [d.family, d.bytes]), [[4, bytes(10, 0, 2, 3)]]);
  equal(conf.mapGw, true, "the host's loopback is reachable through 10.0.2.2");
  equal(conf.noHostLoopback, false);
  equal(conf.configNet, false);
  equal(conf.apiSocket, null);
  equal(conf.outbound4, null);
  equal(conf.outboundIf4, null);
  deepStrictEqual(conf.target, { kind: "pid", pid: 1234 });
  deepStrictEqual(engine, {
    contract: "slirp4netns",
    readyFd: null,
    exitFd: null,
    usernsPath: "/proc/1234/ns/user",
    mac: null,
    daemon: false,
    endWithTarget: true,
    slirpApi: { guest4: bytes(10, 0, 2, 100), guest6: null },
    warnings: [],
  });
  equal(run("1234", "eth7").conf.ifname, "eth7", "TAPNAME is the second positional");
});

Deno.test("--cidr: guest at network + 100, host + 2, DNS + 3, host bits masked off", () => {
  const { conf, engine } = run("--cidr=10.8.1.7/16", "1");
  deepStrictEqual(conf.addr4, bytes(10, 8, 0, 100));
  equal(conf.prefix4, 16);
  deepStrictEqual(conf.gateway4, bytes(10, 8, 0, 2));
  deepStrictEqual(conf.dnsForward4, bytes(10, 8, 0, 3));
  deepStrictEqual(conf.dns.map((d) => d.bytes), [bytes(10, 8, 0, 3)]);
  deepStrictEqual(engine.slirpApi?.guest4, bytes(10, 8, 0, 100));

  const small = run("--cidr", "192.168.5.200/25", "1").conf;
  deepStrictEqual(small.addr4, bytes(192, 168, 5, 228));
  equal(small.prefix4, 25);
  deepStrictEqual(small.gateway4, bytes(192, 168, 5, 130));
  deepStrictEqual(small.dnsForward4, bytes(192, 168, 5, 131));

  const wide = run("--cidr=172.31.255.255/8", "1").conf;
  deepStrictEqual(wide.addr4, bytes(172, 0, 0, 100));
  equal(wide.prefix4, 8);
  deepStrictEqual(wide.gateway4, bytes(172, 0, 0, 2));
});

Deno.test("--cidr that is not an IPv4 CIDR with prefix 1-25 is refused", () => {
  equal(refused("--cidr=10.0.2.0/26", "1"), "--cidr: prefix /26 is out of range 1-25");
  equal(refused("--cidr=10.0.2.0/0", "1"), "--cidr: prefix /0 is out of range 1-25");
  for (const bad of ["10.0.2.0", "10.0.2/24", "300.0.0.0/8", "fd00::/64", "10.0.2.0/x"]) {
    equal(
      refused(`--cidr=${bad}`, "1"),
      `--cidr: '${bad}' is not an IPv4 CIDR such as 10.0.2.0/24`,
    );
  }
});

Deno.test("--disable-dns drops the relay and the offered resolver in both families", () => {
  const v4 = run("--disable-dns", "1").conf;
  equal(v4.dnsForward4, null);
  deepStrictEqual(v4.dns, []);
  const both = run("--disable-dns", "--enable-ipv6", "1").conf;
  equal(both.dnsForward4, null);
  equal(both.dnsForward6, null);
  deepStrictEqual(both.dns, []);
});

Deno.test("--disable-host-loopback becomes --no-host-loopback", () => {
  const { nsArgs, conf } = run("--disable-host-loopback", "1");
  ok(nsArgs.includes("--no-host-loopback"));
  equal(conf.noHostLoopback, true);
});

Deno.test("-6 and --enable-ipv6: fd00::100 with host fd00::2 and DNS fd00::3", () => {
  for (const flag of ["-6", "--enable-ipv6"]) {
    const { conf, engine } = run(flag, "1");
    equal(conf.ipv6, true, flag);
    deepStrictEqual(conf.addr6, fd00(0x100));
    deepStrictEqual(conf.gateway6, fd00(2));
    deepStrictEqual(conf.dnsForward6, fd00(3));
    deepStrictEqual(engine.slirpApi?.guest6, fd00(0x100));
  }
});

Deno.test("--mtu and -m take 68-65520", () => {
  equal(run("-m", "68", "1").conf.mtu, 68);
  equal(run("--mtu", "9000", "1").conf.mtu, 9000);
  equal(run("-m1400", "1").conf.mtu, 1400);
  equal(refused("--mtu=67", "1"), "--mtu: 67 is out of range 68-65520");
  equal(refused("-m", "65521", "1"), "-m: 65521 is out of range 68-65520");
  equal(refused("--mtu=big", "1"), "--mtu: 'big' is not a whole number");
});

Deno.test("--outbound-addr takes an IPv4 address, an IPv6 address or an interface name", () => {
  deepStrictEqual(run("--outbound-addr=192.0.2.7", "1").conf.outbound4, bytes(192, 0, 2, 7));
  const v6 = run("-6", "--outbound-addr=2001:db8::7", "1").conf;
  deepStrictEqual(
    v6.outbound6,
    bytes(0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7),
  );
  equal(v6.outbound4, null);
  const byName = run("--outbound-addr", "eth0", "1").conf;
  equal(byName.outboundIf4, "eth0");
  equal(byName.outboundIf6, null);
  equal(
    refused("--outbound-addr=not an address", "1"),
    "--outbound-addr: 'not an address' is neither an address nor an interface name",
  );
});

Deno.test("--outbound-addr6 takes an IPv6 address or an interface name, not IPv4", () => {
  deepStrictEqual(
    run("-6", "--outbound-addr6=2001:db8::8", "1").conf.outbound6,
    bytes(0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8),
  );
  const byName = run("-6", "--outbound-addr6", "eth1", "1").conf;
  equal(byName.outboundIf6, "eth1");
  equal(byName.outboundIf4, null);
  const both = run("-6", "--outbound-addr=192.0.2.7", "--outbound-addr6=2001:db8::8", "1").conf;
  deepStrictEqual(both.outbound4, bytes(192, 0, 2, 7));
  equal(both.outbound6?.[15], 8);
  equal(
    refused("--outbound-addr6=192.0.2.7", "1"),
    "--outbound-addr6: 192.0.2.7 is not an IPv6 address",
  );
  equal(
    refused("--outbound-addr6=a/b", "1"),
    "--outbound-addr6: 'a/b' is neither an address nor an interface name",
  );
});

Deno.test("--outbound-addr and --outbound-addr6 mix an address and an interface, one per family", () => {
  const a = run("-6", "--outbound-addr=192.0.2.7", "--outbound-addr6=eth0", "1").conf;
  deepStrictEqual(a.outbound4, bytes(192, 0, 2, 7));
  equal(a.outboundIf6, "eth0");
  const b = run("-6", "--outbound-addr=eth0", "--outbound-addr6=2001:db8::8", "1").conf;
  equal(b.outboundIf4, "eth0");
  equal(b.outbound6?.[15], 8);
});

Deno.test("an IPv6 outbound source without --enable-ipv6 is refused, naming the option given", () => {
  equal(
    refused("--outbound-addr=2001:db8::1", "1"),
    "--outbound-addr: 2001:db8::1 is IPv6, which needs --enable-ipv6",
  );
  equal(
    refused("--outbound-addr6=2001:db8::1", "1"),
    "--outbound-addr6: 2001:db8::1 is IPv6, which needs --enable-ipv6",
  );
  equal(refused("--outbound-addr6=eth0", "1"), "--outbound-addr6: IPv6 needs --enable-ipv6");
});

Deno.test("a relative --netns-type=path PATH stays relative to the working directory", () => {
  const t = run("--netns-type=path", "netns-abc").conf.target;
  deepStrictEqual(t, { kind: "netns", path: "./netns-abc" });
  deepStrictEqual(run("--netns-type=path", "/run/netns/x").conf.target, {
    kind: "netns",
    path: "/run/netns/x",
  });
});

Deno.test("--macaddress sets the tap's MAC with -c; a bad or multicast MAC is refused", () => {
  deepStrictEqual(
    run("-c", "--macaddress=02:00:0a:Bb:cC:ff", "1").engine.mac,
    bytes(2, 0, 0x0a, 0xbb, 0xcc, 0xff),
  );
  deepStrictEqual(
    run("--configure", "--macaddress", "52:54:00:12:34:56", "1").engine.mac,
    bytes(0x52, 0x54, 0, 0x12, 0x34, 0x56),
  );
  equal(
    refused("--macaddress=02:00:00:00:00:01", "1"),
    "--macaddress needs -c (--configure)",
  );
  for (
    const bad of [
      "02:00:00:00:00",
      "02:00:00:00:00:01:02",
      "02-00-00-00-00-01",
      "zz:00:00:00:00:01",
    ]
  ) {
    equal(
      refused("-c", `--macaddress=${bad}`, "1"),
      `--macaddress: '${bad}' is not a MAC address such as 02:00:00:00:00:01`,
    );
  }
  equal(
    refused("-c", "--macaddress=01:00:5e:00:00:01", "1"),
    "--macaddress: 01:00:5e:00:00:01 is a multicast address",
  );
  equal(
    refused("-c", "--macaddress=ff:ff:ff:ff:ff:ff", "1"),
    "--macaddress: ff:ff:ff:ff:ff:ff is a multicast address",
  );
});

Deno.test("--netns-type is pid or path; a PID must be a process id", () => {
  deepStrictEqual(run("--netns-type=pid", "77").conf.target, { kind: "pid", pid: 77 });
  deepStrictEqual(run("--netns-type", "path", "/proc/77/ns/net").conf.target, {
    kind: "netns",
    path: "/proc/77/ns/net",
  });
  equal(refused("--netns-type=cgroup", "1"), "--netns-type: 'cgroup' is neither pid nor path");
  equal(
    refused("/run/netns/x"),
    "PID '/run/netns/x' is not a process id (use --netns-type=path)",
  );
  equal(refused("abc", "tap0"), "PID 'abc' is not a process id (use --netns-type=path)");
  equal(refused("0"), "PID '0' is not a process id (use --netns-type=path)");
  equal(refused("-c"), "missing PID|PATH (see --help)");
  equal(refused("--netns-type=path", ""), "PATH is empty");
});

Deno.test("--userns-path names the user namespace to join, whatever the target", () => {
  const byPath = run("--userns-path=/proc/9/ns/user", "--netns-type=path", "/proc/9/ns/net");
  equal(byPath.engine.usernsPath, "/proc/9/ns/user");
  equal(run("--userns-path", "/tmp/userns", "9").engine.usernsPath, "/tmp/userns");
  equal(refused("--userns-path=", "9"), "--userns-path: path is empty");
});

Deno.test("--target-type=netns is served; bess is refused", () => {
  equal(run("--target-type=netns", "1").engine.contract, "slirp4netns");
  equal(refused("--target-type=bess", "1"), "--target-type: 'bess' is not served; only netns");
});

Deno.test("options may follow the positionals (GNU permutation)", () => {
  const { conf } = run("4242", "tap1", "-c", "--mtu", "1400", "--disable-host-loopback");
  deepStrictEqual(conf.target, { kind: "pid", pid: 4242 });
  equal(conf.ifname, "tap1");
  equal(conf.configNet, true);
  equal(conf.mtu, 1400);
  equal(conf.noHostLoopback, true);
  equal(run("4242", "--mtu=1300", "tap2").conf.ifname, "tap2", "and may sit between them");
});

Deno.test("positionals: at most PID|PATH and TAPNAME, which must be an interface name", () => {
  equal(refused("1", "tap0", "extra"), "unexpected argument 'extra': only PID|PATH [TAPNAME]");
  equal(refused("1", ""), "TAPNAME '': interface name is empty");
  equal(
    refused("1", "x".repeat(16)),
    `TAPNAME '${"x".repeat(16)}': interface name '${"x".repeat(16)}' is longer than 15 bytes`,
  );
});

Deno.test("an unknown option is a ConfError naming it as written", () => {
  equal(refused("--bogus", "1", "tap0"), "unknown option '--bogus'");
  equal(refused("--bogus=1", "1"), "unknown option '--bogus'");
  equal(refused("-x", "1"), "unknown option '-x'");
  equal(refused("-cx", "1"), "unknown option '-x'");
  equal(refused("1", "tap0", "--port-driver=builtin"), "unknown option '--port-driver'");
});

Deno.test("values where none belong, and none where one does, are refused", () => {
  equal(refused("--disable-dns=yes", "1"), "--disable-dns: takes no value");
  equal(refused("1", "-m"), "-m: needs a value");
  equal(refused("1", "--api-socket"), "--api-socket: needs a value");
  equal(refused("--api-socket=", "1"), "--api-socket: path is empty");
});

Deno.test("-e and -r take a descriptor the caller passed open, without close-on-exec", () => {
  withPipe((r, w) => {
    const { engine } = run(`-e${r}`, "--ready-fd", `${w}`, "1");
    equal(engine.exitFd, r);
    equal(engine.readyFd, w);
    equal(run("--exit-fd", `${r}`, "-r", `${w}`, "1").engine.exitFd, r);
  });
});

Deno.test("-e or -r naming a descriptor that is not open is a ConfError naming the option", () => {
  const closed = 1_000_000; // far above any descriptor this process holds
  equal(
    refused("-e", `${closed}`, "1"),
    `-e: descriptor ${closed} is not open (not passed by the caller)`,
  );
  equal(
    refused("--ready-fd", `${closed}`, "1"),
    `--ready-fd: descriptor ${closed} is not open (not passed by the caller)`,
  );
  // A close-on-exec descriptor is the runtime's own, not one passed on purpose.
  withPipe((r, w) => {
    match(refused("-e", `${r}`, "1"), new RegExp(`^-e: descriptor ${r} is not open`));
    match(refused("-r", `${w}`, "1"), new RegExp(`^-r: descriptor ${w} is not open`));
  }, sys.O_CLOEXEC);
  equal(refused("-r", "2", "1"), "-r: 2 is out of range 3-2147483647", "stdio is not a ready fd");
  equal(refused("-e", "x", "1"), "-e: 'x' is not a whole number");
});

Deno.test("--help and --version are answered wherever they stand", () => {
  deepStrictEqual(parseSlirp4netnsArgs(["--help"]), { kind: "help" });
  deepStrictEqual(parseSlirp4netnsArgs(["-h"]), { kind: "help" });
  deepStrictEqual(parseSlirp4netnsArgs(["-c", "1", "--help"]), { kind: "help" });
  deepStrictEqual(parseSlirp4netnsArgs(["--version"]), { kind: "version" });
  deepStrictEqual(parseSlirp4netnsArgs(["1", "-v"]), { kind: "version" });
});

Deno.test("--version names the slirp4netns release whose command line tapir follows", () => {
  const text = slirp4netnsVersion();
  ok(text.startsWith(`slirp4netns version ${SLIRP4NETNS_COMPAT}`), text);
  ok(text.endsWith("\n"));
  equal(text.split("\n").length, 2, "one line");
});

Deno.test("--help lists every option podman and rootlesskit look for", () => {
  const text = slirp4netnsUsage();
  ok(text.startsWith("Usage: slirp4netns"), text.split("\n")[0]);
  const wanted = [
    "--netns-type",
    "--userns-path",
    "--enable-sandbox",
    "--enable-seccomp",
    "--disable-host-loopback",
    "--cidr",
    "--enable-ipv6",
    "--mtu",
    "--outbound-addr",
    "--outbound-addr6",
    "--disable-dns",
    "--macaddress",
    "--api-socket",
    "--exit-fd",
    "--ready-fd",
    "--configure",
  ];
  const lines = text.split("\n");
  for (const long of wanted) {
    // As a whole word: --outbound-addr must be listed on its own, not only inside --outbound-addr6.
    const line = lines.find((l) => new RegExp(`${long}(?![-\\w])`).test(l));
    ok(line !== undefined, `${long} is listed`);
    ok(line.trim().length > long.length + 10, `${long} has a description`);
  }
  for (const [short, long] of [["-c", "--configure"], ["-e", "--exit-fd"], ["-r", "--ready-fd"]]) {
    ok(lines.some((l) => l.includes(`${short}, ${long}`)), `${long} shows ${short}`);
  }
});
