/**
 * Namespace mode end to end, with real clients, inside a throwaway "host"
 * namespace whose only uplink is a dead end (tests/helpers/netns.ts): tapir,
 * the host-side loopback it maps the gateway to, and the guest namespace it
 * creates all live there, so nothing can leave the machine. Every run uses
 * `--loopback-only` as well.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HOST_NS, nsArgs, run, withHostNs } from "../helpers/netns.ts";
import {
  background,
  countersFromLog,
  explain,
  MAIN,
  pathExists,
  stopAll,
  tapirNs,
  waitListening,
} from "../helpers/tapir.ts";

Deno.test("--config-net copies the host's address, routes and MTU; the command's exit status passes through", () =>
  withHostNs(async (host) => {
    const r = await tapirNs(
      host,
      ["--config-net", "-q"],
      "ip -br addr show; ip route show; ip -6 route show; ip link show eth0",
    );
    equal(r.code, 0, explain(r));
    // A tap's operational state reads UNKNOWN; SLAAC may add an address first.
    match(
      r.stdout,
      new RegExp(`^${HOST_NS.ifname}\\s+(UP|UNKNOWN)\\s+${HOST_NS.addr4}/${HOST_NS.prefix4} `, "m"),
    );
    match(r.stdout, new RegExp(` ${HOST_NS.addr6}/64 `));
    match(r.stdout, /^lo\s+UNKNOWN\s+127\.0\.0\.1\/8/m);
    match(r.stdout, new RegExp(`^default via ${HOST_NS.gw4} dev ${HOST_NS.ifname}`, "m"));
    match(r.stdout, new RegExp(`^default via ${HOST_NS.gw6} dev ${HOST_NS.ifname}`, "m"));
    match(r.stdout, /: eth0: <[^>]*\bUP\b[^>]*> mtu 65520 /);

    const seven = await tapirNs(host, ["-q"], "exit 7");
    equal(seven.code, 7, explain(seven));

    // tapir makes SIGUSR1 do nothing to itself (lib/inspector_guard.ts); the
    // command still starts with every signal at its default, none ignored.
    const sigs = await tapirNs(host, ["-q"], "grep SigIgn /proc/self/status");
    equal(sigs.code, 0, explain(sigs));
    const ignored = BigInt("0x" + /SigIgn:\s*([0-9a-f]+)/.exec(sigs.stdout)![1]);
    equal(ignored & (1n << 9n), 0n, `SIGUSR1 not ignored in the command: ${sigs.stdout}`);
  }));

Deno.test("ping and ping -6 to the gateway are answered through host loopback", () =>
  withHostNs(async (host) => {
    const r = await tapirNs(
      host,
      ["--config-net", "-q"],
      `ping -c 3 -i 0.2 -W 2 ${HOST_NS.gw4} && ping -6 -c 3 -i 0.2 -W 2 ${HOST_NS.gw6}`,
    );
    equal(r.code, 0, explain(r));
    match(r.stdout, /3 packets transmitted, 3 received/);
    match(r.stdout, new RegExp(`from ${HOST_NS.gw4}: icmp_seq=1`));
    match(r.stdout, new RegExp(`from ${HOST_NS.gw6}: icmp_seq=1`));
  }));

Deno.test("without --config-net: udhcpc gets a lease, SLAAC configures an address, dhclient -6 gets the address", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-e2e-" });
    try {
      const udhcpcScript = `${dir}/udhcpc.sh`;
      await Deno.writeTextFile(
        udhcpcScript,
        '#!/bin/sh\n[ "$1" = bound ] && echo "LEASE ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu domain=$domain search=$search"\nexit 0\n',
      );
      await Deno.chmod(udhcpcScript, 0o755);
      const script = [
        "set -e",
        "ip link set eth0 up",
        `busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s ${udhcpcScript}`,
        // SLAAC: the kernel adds a global address from the advertised prefix.
        "for i in $(seq 50); do ip -6 addr show dev eth0 scope global | grep -q 'inet6 2001:db8::' && break; sleep 0.1; done",
        "ip -6 addr show dev eth0 scope global",
        // The link-local address must be past DAD before dhclient can bind.
        "for i in $(seq 50); do ip -6 addr show dev eth0 scope link tentative | grep -q inet6 || break; sleep 0.1; done",
        `dhclient -6 -1 -v -sf /bin/true -lf ${dir}/lease6 -pf ${dir}/pid6 eth0`,
        `cat ${dir}/lease6`,
      ].join("\n");
      const r = await tapirNs(host, [
        "-q",
        "-D",
        "192.0.2.53",
        "-D",
        "2001:db8::53",
        "-S",
        "example.test",
      ], script);
      equal(r.code, 0, explain(r));
      match(
        r.stdout,
        new RegExp(
          `LEASE ip=${HOST_NS.addr4} mask=${HOST_NS.prefix4} router=${HOST_NS.gw4} dns=192\\.0\\.2\\.53 mtu=65520`,
        ),
      );
      match(r.stdout, /search=example\.test/);
      match(r.stdout, /inet6 2001:db8::[0-9a-f:]+\/64 scope global/);
      match(r.stdout, new RegExp(`iaaddr ${HOST_NS.addr6} \\{`));
      match(r.stdout, /option dhcp6\.name-servers 2001:db8::53/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("--pcap records ARP, NDP, DHCP, DHCPv6, ICMP and TCP with valid checksums, GSO frames whole", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-e2e-" });
    // A TCP echo peer on host loopback: the guest's segments come with
    // checksums its kernel left to offload, which the capture must complete.
    const echo = background(host, "socat", [
      "TCP-LISTEN:9600,bind=127.0.0.1,reuseaddr",
      "EXEC:cat",
    ]);
    try {
      await waitListening(host, 9600);
      const pcap = `${dir}/capture.pcap`;
      const script = [
        "ip link set eth0 up",
        "busybox udhcpc -i eth0 -n -q -f -t 5 -T 1 -s /bin/true",
        "for i in $(seq 50); do ip -6 addr show dev eth0 scope link tentative | grep -q inet6 || break; sleep 0.1; done",
        `dhclient -6 -1 -sf /bin/true -lf ${dir}/lease6 -pf ${dir}/pid6 eth0`,
        `ip addr add ${HOST_NS.addr4}/24 dev eth0; ip route add default via ${HOST_NS.gw4}`,
        `ping -c 1 -W 2 ${HOST_NS.gw4}`,
        `ping -6 -c 1 -W 2 ${HOST_NS.gw6}`,
        `head -c 200000 /dev/zero | socat -t 5 - TCP:${HOST_NS.gw4}:9600 | wc -c`,
      ].join("\n");
      const r = await tapirNs(host, ["-q", "--pcap", pcap], script);
      equal(r.code, 0, explain(r));
      match(r.stdout, /^200000$/m, "the echo came back whole");
      const dump = await run("tcpdump", ["-nn", "-r", pcap]);
      equal(dump.code, 0, dump.stderr);
      const shark = await run("tshark", [
        "-r",
        pcap,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "_ws.col.Info",
        "-e",
        "_ws.expert.message",
        "-e",
        "ip.checksum.status",
        "-e",
        "udp.checksum.status",
        "-e",
        "icmp.checksum.status",
        "-e",
        "icmpv6.checksum.status",
        "-e",
        "tcp.checksum.status",
      ]);
      equal(shark.code, 0, shark.stderr);
      const text = shark.stdout;
      const rows = text.trim().split("\n").map((l) => l.split("\t"));
      for (const proto of ["ARP", "DHCP", "DHCPv6", "ICMP", "ICMPv6", "TCP"]) {
        ok(rows.some((r) => r[0] === proto), `${proto} in capture:\n${text}`);
      }
      match(text, /Neighbor Advertisement/);
      match(text, /Router Advertisement/);
      // Checksum status: 1 = good; 0 = bad, 2 = not checked (must not appear for ours).
      for (const r of rows) {
        for (const status of r.slice(3)) {
          for (const v of status.split(",").filter((x) => x !== "")) {
            equal(v, "1", `checksum status in: ${r.join(" | ")}`);
          }
        }
      }
      ok(!/[Mm]alformed|[Bb]ad checksum|incorrect/.test(text), text);
      // The tap's MTU is 1500 here, so TCP goes in GSO frames both ways: each
      // is one record of its full length (as tcpdump shows a GRO'd packet),
      // with the real checksum checked above.
      const big = await run("tshark", [
        "-r",
        pcap,
        "-Y",
        "tcp && frame.len > 1514",
        "-T",
        "fields",
        "-e",
        "ip.src",
      ]);
      equal(big.code, 0, big.stderr);
      const sources = new Set(big.stdout.trim().split("\n"));
      ok(sources.has(HOST_NS.addr4), `a GSO frame from the guest: ${[...sources]}`);
      ok(sources.has(HOST_NS.gw4), `a GSO frame to the guest: ${[...sources]}`);
    } finally {
      await stopAll([echo]);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("--loopback-only: a ping elsewhere opens no socket and the guest gets 'prohibited'", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-e2e-" });
    try {
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-d", "--log-file", log],
        "ping -c 1 -W 2 192.0.2.77; ping -6 -c 1 -W 2 2001:db8::77; exit 0",
      );
      equal(r.code, 0, explain(r));
      match(
        r.stdout + r.stderr,
        /Packet filtered|Administratively prohibited|Destination unreachable/i,
      );
      const text = await Deno.readTextFile(log);
      const ping = countersFromLog(text, "ping");
      deepEqual([ping.requests, ping.replies, ping.refused], [0, 0, 2], JSON.stringify(ping));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("malformed frames from the guest are dropped and counted, and tapir keeps answering", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-e2e-" });
    try {
      const log = `${dir}/log`;
      const ours = "02:54:61:70:69:72".replaceAll(":", "");
      // Raw frames from inside the namespace: each is wrong in one way.
      const frames = [
        `${ours}0200000000010800`, // Ethernet header and nothing after it
        `${ours}0200000000010800` + "45000054", // IPv4 header cut short
        `${ours}0200000000010800` + "4500ffff0000400040010000c0000202c0000201" + "00".repeat(20), // total length lies
        `${ours}0200000000010800` + "6500001c0000400040010000c0000202c0000201" + "00".repeat(8), // version 6 in an IPv4 frame
        `${ours}02000000000181000001` + "0800" + "00".repeat(40), // 802.1Q tagged
      ];
      const py = [
        "import socket, sys",
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
        "s.bind(('eth0', 0))",
        ...frames.map((f) => `s.send(bytes.fromhex('${f}'))`),
      ].join("; ");
      // tapir's MTU is 1400; the interface is then raised to 1500 behind its
      // back, so a 1500-byte frame reaches tapir and must count as oversize.
      const big = `${ours}0200000000010800` + "45".padEnd(2 * 1486, "0");
      const r = await tapirNs(
        host,
        ["--config-net", "-m", "1400", "-d", "--log-file", log],
        `ip link set eth0 mtu 1500 && python3 -c "${py}; s.send(bytes.fromhex('${big}'))" && ping -c 1 -W 2 ${HOST_NS.gw4}`,
      );
      equal(r.code, 0, explain(r));
      match(r.stdout, /1 packets transmitted, 1 received/);
      const text = await Deno.readTextFile(log);
      const input = countersFromLog(text, "input");
      const what = JSON.stringify(input);
      ok(input.dropTruncated >= 2, what);
      equal(input.dropBadVersion, 1, what);
      equal(input.dropVlanTagged, 1, what);
      equal(input.dropOversize, 1, what);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

/**
 * The guest's command, counting tapir's threads (its parent's: tapir
 * spawned it) in the guest's network namespace and elsewhere.
 */
const COUNT_THREADS_BY_NS = [
  "me=$(readlink /proc/self/ns/net)",
  'for t in /proc/$PPID/task/*; do [ "$(readlink $t/ns/net)" = "$me" ] && echo guest || echo host; done | sort | uniq -c',
].join("\n");

Deno.test("rootless: an unprivileged user runs tapir ns --config-net, set up by a worker in the namespace, and pings the gateway", () =>
  withHostNs(async (host) => {
    const user = "tapirtest";
    if ((await run("id", ["-u", user])).code !== 0) {
      const add = await run("useradd", ["-M", "-s", "/bin/sh", user]);
      equal(add.code, 0, add.stderr);
    }
    const tun = await Deno.stat("/dev/net/tun");
    await Deno.chmod("/dev/net/tun", 0o666);
    const denoDir = await Deno.makeTempDir({ prefix: "tapir-rootless-" });
    try {
      await run("chown", [user, denoDir]);
      // Ping sockets: the host namespace must allow the user's group.
      const [sysctl, sysctlArgs] = nsArgs(host, "sysctl", [
        "-qw",
        "net.ipv4.ping_group_range=0 2147483647",
      ]);
      equal((await run(sysctl, sysctlArgs)).code, 0);
      const [cmd, argv] = nsArgs(host, "setpriv", [
        "--reuid",
        user,
        "--regid",
        user,
        "--clear-groups",
        Deno.execPath(),
        "run",
        "-A",
        MAIN,
        "ns",
        "--loopback-only",
        "--config-net",
        "-q",
        "--",
        "sh",
        "-c",
        `id -u; ping -c 1 -W 2 ${HOST_NS.gw4}\n${COUNT_THREADS_BY_NS}`,
      ]);
      const r = await run(cmd, argv, { env: { DENO_DIR: denoDir, HOME: denoDir } });
      equal(r.code, 0, explain(r));
      match(r.stdout, /^0$/m, "root inside its own user namespace");
      match(r.stdout, /1 packets transmitted, 1 received/);
      // The main thread cannot come back from a namespace of its own user
      // namespace to the host's (no capability there): a worker stays inside
      // (with the thread that waits for the command, which it started).
      match(r.stdout, /^\s*\d+ guest$/m);
    } finally {
      await Deno.chmod("/dev/net/tun", tun.mode! & 0o777);
      await Deno.remove(denoDir, { recursive: true });
    }
  }));

/** Waits (up to 10 s) until `ifname` in the namespace of `pid` has the host's address. */
async function tapUp(pid: number, ifname: string): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    const r = await run("nsenter", ["-t", `${pid}`, "-n", "ip", "-br", "addr", "show", ifname]);
    if (r.stdout.includes(HOST_NS.addr4)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

Deno.test("attach: tapir ns PID and --netns PATH serve an existing namespace until stopped", () =>
  withHostNs(async (host) => {
    // A process in a namespace of its own, made inside the host namespace.
    const [sc, sa] = nsArgs(host, "unshare", ["-n", "sleep", "60"]);
    const sleeper = new Deno.Command(sc, { args: sa, stdout: "null", stderr: "null" }).spawn();
    try {
      for (const how of ["pid", "path"] as const) {
        const target = how === "pid"
          ? [`${sleeper.pid}`]
          : ["--netns", `/proc/${sleeper.pid}/ns/net`];
        const ifname = `tap${how}`;
        const [tc, ta] = nsArgs(host, Deno.execPath(), [
          "run",
          "-A",
          MAIN,
          "ns",
          "--loopback-only",
          "--config-net",
          "-q",
          "-I",
          ifname,
          ...target,
        ]);
        const tapir = new Deno.Command(tc, { args: ta, stdout: "piped", stderr: "piped" }).spawn();
        try {
          const inside = (cmd: string, ...args: string[]) =>
            run("nsenter", ["-t", `${sleeper.pid}`, "-n", cmd, ...args]);
          ok(await tapUp(sleeper.pid, ifname), `${how}: the tap came up in the existing namespace`);
          const ping = await inside("ping", "-c", "1", "-W", "2", HOST_NS.gw4);
          equal(ping.code, 0, `${how}: ${ping.stdout}${ping.stderr}`);
        } finally {
          tapir.kill("SIGTERM");
        }
        const out = await tapir.output();
        equal(
          out.code,
          0,
          `${how}: tapir exits 0 on SIGTERM: ${new TextDecoder().decode(out.stderr)}`,
        );
        const gone = await run("nsenter", [
          "-t",
          `${sleeper.pid}`,
          "-n",
          "ip",
          "link",
          "show",
          ifname,
        ]);
        ok(gone.code !== 0, `${how}: the tap is gone with tapir`);
      }
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
  }));

Deno.test("attach: tapir ns PID ends by itself, status 0, when that process exits", () =>
  withHostNs(async (host) => {
    const [sc, sa] = nsArgs(host, "unshare", ["-n", "sleep", "60"]);
    const sleeper = new Deno.Command(sc, { args: sa, stdout: "null", stderr: "null" }).spawn();
    const [tc, ta] = nsArgs(host, Deno.execPath(), [
      "run",
      "-A",
      MAIN,
      "ns",
      "--loopback-only",
      "--config-net",
      "-d",
      // Not eth0: until the sleeper has entered its own namespace, nsenter
      // would find the host namespace's eth0 with the same address.
      "-I",
      "tapend",
      `${sleeper.pid}`,
    ]);
    const tapir = new Deno.Command(tc, { args: ta, stdout: "piped", stderr: "piped" }).spawn();
    try {
      ok(await tapUp(sleeper.pid, "tapend"), "the tap came up in the process's namespace");
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
    const timer = setTimeout(() => tapir.kill("SIGKILL"), 10_000);
    const out = await tapir.output();
    clearTimeout(timer);
    const log = new TextDecoder().decode(out.stderr);
    equal(out.code, 0, log);
    match(log, /stopped: process \d+ exited/);
  }));

Deno.test("a command started with the set-up is ended when the rest of the set-up fails", () =>
  withHostNs(async (host) => {
    // Without forwards or a control socket the command starts as soon as
    // the namespace is configured (lib/modes/ns.ts), before the capture is
    // opened; that then fails (no such directory), and tapir must not leave
    // the command running without a network.
    const dir = await Deno.makeTempDir({ prefix: "tapir-early-" });
    try {
      const marker = `${dir}/still-ran`;
      const t0 = performance.now();
      const r = await tapirNs(
        host,
        ["--config-net", "-q", "--pcap", `${dir}/missing/cap.pcap`],
        // sleep's output away from tapir's pipes, which would hold the run open.
        `sleep 3 >/dev/null 2>&1; touch ${marker}`,
      );
      equal(r.code, 1, explain(r));
      match(r.stderr, /--pcap/);
      ok(performance.now() - t0 < 3000, "tapir did not wait for the command");
      await new Promise((res) => setTimeout(res, 3500));
      equal(await pathExists(marker), false, "the command kept running after tapir failed");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("with a control socket, the command starts once the socket is there", () =>
  withHostNs(async (host) => {
    // The command, or a peer it tells that it is ready, may use the control
    // socket (or a forwarded port) from its first moment.
    const dir = await Deno.makeTempDir({ prefix: "tapir-late-" });
    try {
      const sock = `${dir}/api.sock`;
      const r = await tapirNs(
        host,
        ["--config-net", "-q", "--api-socket", sock],
        `test -S ${sock}`,
      );
      equal(r.code, 0, `the command ran before the control socket existed\n${explain(r)}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("as root the set-up runs on the main thread, which stays in the host's namespace; with forwards one worker joins the guest's", () =>
  withHostNs(async (host) => {
    const plain = await tapirNs(host, ["--config-net", "-q"], COUNT_THREADS_BY_NS);
    equal(plain.code, 0, explain(plain));
    match(plain.stdout, /^\s*\d+ host$/m);
    ok(
      !/guest/.test(plain.stdout),
      `a thread of tapir is in the guest's namespace:\n${plain.stdout}`,
    );

    // -T needs sockets in the namespace, made by a worker that joined it.
    const fwd = await tapirNs(host, ["--config-net", "-q", "-T", "5999"], COUNT_THREADS_BY_NS);
    equal(fwd.code, 0, explain(fwd));
    match(fwd.stdout, /^\s*1 guest$/m);
    match(fwd.stdout, /^\s*\d+ host$/m);
  }));
