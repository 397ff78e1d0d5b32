/**
 * UDP translation end to end: real clients in a namespace served by tapir,
 * servers on the loopback of a throwaway host namespace, every run with
 * `--loopback-only`.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HOST_NS, nsArgs, nsRun, run, withHostNs } from "../helpers/netns.ts";
import {
  type Background,
  background,
  countersFromLog,
  explain,
  statsFromLog,
  stopAll,
  tapirNs,
  tapirNsArgs,
} from "../helpers/tapir.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;

/** Starts a Python fixture in namespace `ns` and waits until it prints "listening". */
async function pyServer(ns: string, script: string, ...args: string[]): Promise<Deno.ChildProcess> {
  const [c, a] = nsArgs(ns, "python3", ["-u", `${FIXTURES}${script}`, ...args]);
  const p = new Deno.Command(c, { args: a, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = p.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  ok(new TextDecoder().decode(value).includes("listening"), `${script} did not start`);
  return p;
}

async function stopServers(servers: Deno.ChildProcess[]): Promise<void> {
  for (const s of servers) {
    s.kill("SIGKILL");
    await s.status;
    await s.stdout.cancel();
  }
}

Deno.test("a DNS query to the --dns-forward address is answered by a stub on host loopback", () =>
  withHostNs(async (host) => {
    const stubs = [
      await pyServer(host, "dns_stub.py", "127.0.0.1", "192.0.2.99", "2001:db8::99"),
      await pyServer(host, "dns_stub.py", "::1", "192.0.2.99", "2001:db8::99"),
    ];
    try {
      const r = await tapirNs(
        host,
        [
          "--config-net",
          "-q",
          "--dns-forward",
          "192.0.2.53",
          "--dns-forward",
          "2001:db8::53",
          "--dns-host",
          "127.0.0.1",
          "--dns-host",
          "::1",
        ],
        "busybox nslookup -type=a www.example.test 192.0.2.53 && busybox nslookup -type=aaaa www.example.test 2001:db8::53",
      );
      equal(r.code, 0, explain(r));
      match(r.stdout, /Address:\s+192\.0\.2\.99/);
      match(r.stdout, /Address:\s+2001:db8::99/);
    } finally {
      await stopServers(stubs);
    }
  }));

Deno.test("100 000 UDP round trips of mixed sizes up to the MTU come back intact (IPv4 and IPv6)", () =>
  withHostNs(async (host) => {
    const servers = [
      await pyServer(host, "udp_echo.py", "127.0.0.1", "9600"),
      await pyServer(host, "udp_echo.py", "::1", "9600"),
    ];
    try {
      const rr = (addr: string, count: number, max: number) =>
        `python3 ${FIXTURES}udp_rr.py ${addr} 9600 ${count} ${max}`;
      const r = await tapirNs(
        host,
        ["--config-net", "-q"],
        `${rr(HOST_NS.gw4, 70000, 65520 - 28)} && ${rr(HOST_NS.gw6, 30000, 65520 - 48)}`,
      );
      equal(r.code, 0, explain(r));
      const lines = [...r.stdout.matchAll(/^ok (\d+) lost=(\d+)$/gm)];
      equal(lines.length, 2, r.stdout);
      equal(Number(lines[0][1]) + Number(lines[1][1]), 100_000);
      console.log(`UDP round trips: lost and resent ${lines[0][2]} (IPv4), ${lines[1][2]} (IPv6)`);
    } finally {
      await stopServers(servers);
    }
  }));

Deno.test("a datagram to a closed host port is ECONNREFUSED in the guest; idle flows expire", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-udp-" });
    try {
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-d", "--log-file", log, "--udp-timeout", "1"],
        `python3 -c "
import socket
for fam, addr in ((socket.AF_INET, '${HOST_NS.gw4}'), (socket.AF_INET6, '${HOST_NS.gw6}')):
  s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2); s.connect((addr, 9699)); s.send(b'x')
  try:
    s.recv(10); print('reply?')
  except ConnectionRefusedError:
    print('refused')
" && sleep 3`,
      );
      equal(r.code, 0, explain(r));
      equal(r.stdout.match(/^refused$/gm)?.length, 2, r.stdout);
      const stats = countersFromLog(await Deno.readTextFile(log), "udp");
      const udp = JSON.stringify(stats);
      ok(stats.icmpErrors >= 2, udp);
      equal(stats.expired, 2, `both flows idled out after --udp-timeout 1: ${udp}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("-u forwards a datagram from host loopback to a server in the namespace, and its reply back", () =>
  withHostNs(async (host) => {
    const [c, a] = tapirNsArgs(
      host,
      ["--config-net", "-q", "-u", "9700"],
      // The IPv6 server binds the guest's configured address: bound to ::, its
      // replies could leave from the address SLAAC adds (RFC 6724 picks the
      // source), which is not the address the client's datagrams went to.
      // tapir's SIGTERM at the end reaches the shell only: it ends its servers
      // itself (a trap runs while `wait` waits, not while a `sleep` does).
      `python3 -u ${FIXTURES}udp_echo.py 0.0.0.0 9700 & a=$!; ` +
        `python3 -u ${FIXTURES}udp_echo.py ${HOST_NS.addr6} 9700 & b=$!; ` +
        `sleep 20 & c=$!; trap 'kill $a $b $c; exit 0' TERM; wait $c; kill $a $b`,
    );
    const tapir = new Deno.Command(c, { args: a, stdout: "null", stderr: "piped" }).spawn();
    const procs: Background[] = [tapir];
    try {
      const client = `
import socket, sys, time
for fam, addr in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
  s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(0.2)
  for i in range(50):
    s.sendto(b'ping-%d' % fam, (addr, 9700))
    try:
      data, peer = s.recvfrom(100); print(data.decode(), peer[1]); break
    except (socket.timeout, ConnectionRefusedError):
      time.sleep(0.1)
  else:
    sys.exit('no reply')`;
      const [pc, pa] = nsArgs(host, "python3", ["-c", client]);
      const r = await run(pc, pa);
      equal(r.code, 0, explain(r));
      match(r.stdout, /^ping-2 9700$/m);
      match(r.stdout, /^ping-10 9700$/m);
    } finally {
      await stopAll(procs);
    }
  }));

Deno.test("iperf3 -u -b 1G runs 10 s; the loss is reported", () =>
  withHostNs(async (host) => {
    const procs: Background[] = [
      background(host, "iperf3", ["-s", "-B", "127.0.0.1", "-p", "5202"]),
    ];
    try {
      await new Promise((r) => setTimeout(r, 300));
      const r = await tapirNs(
        host,
        ["--config-net", "-q"],
        `iperf3 -c ${HOST_NS.gw4} -p 5202 -u -b 1G -t 10 -J`,
      );
      equal(r.code, 0, explain(r));
      const sum = JSON.parse(r.stdout).end.sum;
      ok(sum.packets > 0, "datagrams went through");
      console.log(
        `iperf3 -u -b 1G: ${(sum.bits_per_second / 1e9).toFixed(2)} Gbit/s, loss ${
          sum.lost_percent.toFixed(2)
        }%`,
      );
    } finally {
      await stopAll(procs);
    }
  }));

Deno.test("-U forwards datagrams from the namespace's loopback to host loopback, replies back", () =>
  withHostNs(async (host) => {
    const servers = [
      await pyServer(host, "udp_echo.py", "127.0.0.1", "9800"),
      await pyServer(host, "udp_echo.py", "::1", "9800"),
    ];
    try {
      const r = await tapirNs(
        host,
        ["--config-net", "-q", "-U", "9800"],
        `python3 -c "
import socket
for fam, addr in ((socket.AF_INET, '127.0.0.1'), (socket.AF_INET6, '::1')):
  s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
  for size in (1, 1000, 60000):
    msg = bytes(range(256)) * (size // 256) + b'x' * (size % 256)
    s.sendto(msg, (addr, 9800))
    data, peer = s.recvfrom(65535)
    assert data == msg and peer[1] == 9800, (len(data), peer)
  print('ok', fam)
"`,
      );
      equal(r.code, 0, explain(r));
      match(r.stdout, /^ok 2$/m);
      match(r.stdout, /^ok 10$/m);
    } finally {
      await stopServers(servers);
    }
  }));

/**
 * A UDP client: `client.py ADDR PORT SECONDS` sends "ping" until an answer
 * comes (printing it) or SECONDS pass (exit status 1). Its socket sends
 * without binding first, so its port is an ephemeral one: `auto` must not
 * take it for a server.
 */
const UDP_CLIENT = `
import socket, sys, time
addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.1)
end = time.monotonic() + seconds
while time.monotonic() < end:
  s.sendto(b"ping %d" % port, (addr, port))
  try:
    print(s.recvfrom(100)[0].decode()); sys.exit(0)
  except (socket.timeout, ConnectionRefusedError):
    time.sleep(0.05)
sys.exit("no reply from %s port %d" % (addr, port))
`;

async function waitFor(what: string, cond: () => Promise<boolean>, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out: ${what}`);
}

const exists = (path: string) => Deno.stat(path).then(() => true, () => false);

const counters = countersFromLog;

Deno.test("-u auto and -U auto follow UDP servers started after tapir, and never forward their own sockets", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-udp-" });
    const servers: Deno.ChildProcess[] = [];
    let tapir: Background | null = null;
    try {
      const client = `${dir}/client.py`;
      await Deno.writeTextFile(client, UDP_CLIENT);
      const echo = (addr: string, port: number) =>
        `python3 -u ${FIXTURES}udp_echo.py ${addr} ${port} > /dev/null`;
      // The namespace starts its servers once tapir runs. 9900: the wildcard
      // (IPv6: the guest's address, as in the -u test above). 9901: the
      // guest's IPv4 address only, which leaves the namespace's loopback
      // free: only the "own ports" rule keeps -U auto from binding
      // 127.0.0.1:9901 for tapir's own -u auto listener on the host. 9902:
      // loopback, which -u (through the tap) cannot reach: never forwarded.
      // Then it asks the host's 5150 (started after "ready") through -U
      // auto, and once the host's server is gone, waits for that to close.
      const script = [
        `${echo("0.0.0.0", 9900)} & a=$!`,
        `${echo(HOST_NS.addr6, 9900)} & b=$!`,
        `${echo(HOST_NS.addr4, 9901)} & c=$!`,
        `${echo("127.0.0.1", 9902)} & d=$!`,
        `until [ "$(ss -Hlun '( sport = :9900 or sport = :9901 or sport = :9902 )' | wc -l)" -ge 4 ]; do sleep 0.05; done`,
        `touch ${dir}/ready`,
        `python3 ${client} 127.0.0.1 5150 5 > ${dir}/from-host 2>&1`,
        `touch ${dir}/asked`,
        `while [ ! -e ${dir}/kill ]; do sleep 0.05; done`,
        `kill $a $b $c $d`,
        `until [ -z "$(ss -Hlun 'sport = :5150')" ]; do sleep 0.05; done`,
        `touch ${dir}/ns-closed`,
        `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
      ].join("\n");
      const [c, a] = tapirNsArgs(
        host,
        ["--config-net", "-d", "--log-file", `${dir}/log`, "-u", "auto", "-U", "auto"],
        script,
      );
      tapir = new Deno.Command(c, { args: a, stdout: "piped", stderr: "piped" }).spawn();
      await waitFor("the namespace's servers", () => exists(`${dir}/ready`), 10_000);
      servers.push(await pyServer(host, "udp_echo.py", "127.0.0.1", "5150"));

      // -u auto: from the host's loopback to servers bound after tapir started.
      const ask = (addr: string, port: number) =>
        nsRun(host, "python3", [client, addr, `${port}`, "3"]);
      const targets: [string, number][] = [["127.0.0.1", 9900], ["::1", 9900], ["127.0.0.1", 9901]];
      for (const [addr, port] of targets) {
        const r = await ask(addr, port);
        equal(r.code, 0, `-u auto, ${addr} port ${port}: ${explain(r)}`);
        equal(r.stdout.trim(), `ping ${port}`);
      }

      // The servers go away on both sides (once the namespace has had its
      // answer from the host's): so do the sockets forwarding them.
      await waitFor("the namespace's client", () => exists(`${dir}/asked`), 6000);
      await Deno.writeTextFile(`${dir}/kill`, "");
      await stopServers(servers.splice(0));
      const hostBound = async (port: number) =>
        (await nsRun(host, "ss", ["-Hlun", `sport = :${port}`])).stdout.trim() !== "";
      await waitFor(
        "-u auto closing 9900 and 9901 on the host",
        async () => !(await hostBound(9900)) && !(await hostBound(9901)),
        3000,
      );
      await waitFor(
        "-U auto closing 5150 in the namespace",
        () => exists(`${dir}/ns-closed`),
        3000,
      );

      await Deno.writeTextFile(`${dir}/stop`, "");
      const out = await tapir.output();
      tapir = null;
      const result = {
        code: out.code,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
      };
      equal(result.code, 0, explain(result));
      equal(await Deno.readTextFile(`${dir}/from-host`), "ping 5150\n", "-U auto");
      const log = await Deno.readTextFile(`${dir}/log`);
      // Each side forwarded exactly the other's servers: not tapir's own
      // sockets seen by the other side's scan, not clients' ephemeral ports.
      const forwarded = [...log.matchAll(/-(u|U) auto: forwarding (?:host|namespace) port (\d+)/g)]
        .map((m) => `-${m[1]} ${m[2]}`);
      deepEqual([...new Set(forwarded)].sort(), ["-U 5150", "-u 9900", "-u 9901"]);
      // The flows of closed sockets ended with them.
      const byType = statsFromLog(log).flows.byType;
      deepEqual(
        [byType.UDP ?? 0, byType.UDP_SPLICE ?? 0],
        [0, 0],
        `flows left: ${JSON.stringify(byType)}`,
      );
      equal(counters(log, "udp").inbound, 3, "one -u flow per client");
      equal(counters(log, "udp-splice").flows, 1, "one -U flow");
    } finally {
      await stopServers(servers);
      if (tapir !== null) await stopAll([tapir]);
      await Deno.remove(dir, { recursive: true });
    }
  }));

/**
 * A guest sends `count` × `seg` bytes in one `UDP_SEGMENT` send to a server
 * on host loopback, whose MTU is `loMtu` (or left alone); returns the
 * datagram sizes the server got and tapir's counters (input and UDP).
 */
function gsoSendFromGuest(
  seg: number,
  count: number,
  loMtu?: number,
): Promise<{ sizes: string; input: Record<string, number>; udp: Record<string, number> }> {
  return withHostNs(async (host) => {
    if (loMtu !== undefined) {
      const r = await run("ip", ["-n", host, "link", "set", "lo", "mtu", String(loMtu)]);
      equal(r.code, 0, r.stderr);
    }
    // The host side: count the datagrams and their sizes for a moment.
    const [c, a] = nsArgs(host, "python3", [
      "-u",
      "-c",
      [
        "import socket, sys",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        "s.bind(('127.0.0.1', 9700)); print('listening', flush=True)",
        "s.settimeout(5); sizes = []",
        `try:\n  while len(sizes) < ${count}: sizes.append(len(s.recv(65535)))\nexcept socket.timeout:\n  pass`,
        "print(' '.join(map(str, sizes)))",
      ].join("\n"),
    ]);
    const server = new Deno.Command(c, { args: a, stdout: "piped" }).spawn();
    const dir = await Deno.makeTempDir({ prefix: "tapir-uso-" });
    try {
      const reader = server.stdout.getReader();
      const first = new TextDecoder().decode((await reader.read()).value);
      ok(first.includes("listening"), first);
      // One send, meant as datagrams of `seg` bytes (UDP_SEGMENT = 103).
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-m", "1500", "-d", "--log-file", log],
        `python3 -c "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 103, ${seg})
s.sendto(bytes(${seg * count}), ('${HOST_NS.gw4}', 9700))"`,
      );
      equal(r.code, 0, explain(r));
      let out = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        out += new TextDecoder().decode(value);
      }
      const text = await Deno.readTextFile(log);
      return {
        sizes: out.trim(),
        input: countersFromLog(text, "input"),
        udp: countersFromLog(text, "udp"),
      };
    } finally {
      try {
        server.kill("SIGKILL");
      } catch { /* it exited on its own */ }
      await server.status;
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a UDP GSO send from the guest reaches the host as the datagrams it stands for", async () => {
  const r = await gsoSendFromGuest(1000, 10);
  equal(r.sizes, Array(10).fill("1000").join(" "), "ten datagrams of 1000 bytes");
  equal(r.input.gsoFramesToHost, 1, "one UDP GSO frame from the guest");
  equal(r.input.gsoSegmentsToHost, 10);
  equal(r.udp.segmentRefused, 0);
});

Deno.test("a UDP GSO send whose segments exceed the host route's MTU is cut by tapir, not lost", async () => {
  // Host loopback at MTU 1280: the kernel refuses UDP_SEGMENT with 1400-byte
  // segments, so tapir sends them one by one, and the kernel fragments each.
  const r = await gsoSendFromGuest(1400, 10, 1280);
  equal(r.sizes, Array(10).fill("1400").join(" "), "ten datagrams of 1400 bytes");
  equal(r.input.gsoFramesToHost, 1);
  equal(r.udp.segmentRefused, 1, "the flow fell back once");
  equal(r.udp.datagramsToHost, 10);
  equal(r.udp.dropSendFailed, 0);
});
