/**
 * Floods, limits and faults, end to end: a guest that fills the flow table
 * with connections or datagrams is refused, counted, and what it had keeps
 * working; a host socket that stops reading for seconds loses nothing; a
 * guest that dies mid-transfer ends tapir with its status and the host's
 * connection with it; SIGTERM during a transfer and a capture leaves a
 * complete capture and the counters.
 */
import { equal, match, ok } from "node:assert/strict";
import { HOST_NS, run, withHostNs } from "../helpers/netns.ts";
import {
  background,
  countersFromLog,
  explain,
  pyServer,
  statsFromLog,
  stopAll,
  tapirNs,
  tapirNsArgs,
  waitListening,
} from "../helpers/tapir.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const deno = Deno.execPath();

/** Python the guest runs: `echo(s, n)` sends n random bytes and says whether the echo matched. */
const PY_ECHO = `
import socket, hashlib, os, json, select, errno, time
def echo(s, size):
    data = os.urandom(size)
    s.sendall(data)
    got = bytearray()
    while len(got) < size:
        b = s.recv(65536)
        if not b: break
        got += b
    return hashlib.sha256(data).digest() == hashlib.sha256(got).digest()
`;

/** Runs `body` with a TCP echo server on host loopback port `port`, and a log path. */
function withEcho(port: number, body: (host: string, log: string) => Promise<void>) {
  return withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-limits-" });
    const echo = background(host, deno, [
      "run",
      "-A",
      `${FIXTURES}tcp_echo_server.ts`,
      "127.0.0.1",
      `${port}`,
    ]);
    try {
      await waitListening(host, port);
      await body(host, `${dir}/log`);
    } finally {
      await stopAll([echo]);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("a guest that opens connections until the flow table is full gets RSTs, counted; its open connection keeps working", () =>
  withEcho(9800, async (host, log) => {
    const script = `python3 -c '${PY_ECHO}
a = socket.create_connection(("${HOST_NS.gw4}", 9800))
before = echo(a, 32768)
socks = []
for i in range(500):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("${HOST_NS.gw4}", 9800))
    except BlockingIOError:
        pass
    socks.append(s)
done, refused = 0, 0
for s in socks:
    select.select([], [s], [], 10)
    e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    done += e == 0
    refused += e == errno.ECONNREFUSED
after = echo(a, 32768)
print(json.dumps(dict(before=before, after=after, done=done, refused=refused)))
'`;
    const r = await tapirNs(
      host,
      ["--config-net", "-d", "--log-file", log, "--max-flows", "64"],
      script,
    );
    equal(r.code, 0, explain(r));
    const got = JSON.parse(r.stdout.trim().split("\n").pop()!);
    equal(got.before, true, "the echo before the flood");
    equal(got.after, true, "the echo after it, on the same connection");
    equal(got.done, 63, "the table's 64 flows, less the connection already open");
    equal(got.refused, 437);
    equal(countersFromLog(await Deno.readTextFile(log), "tcp").tableFull, 437);
  }));

Deno.test("a guest that sends from more ports than the flow table holds gets 'prohibited' for the rest, counted", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-limits-" });
    const echo = background(host, "python3", [`${FIXTURES}udp_echo.py`, "127.0.0.1", "9801"]);
    try {
      await new Promise((r) => setTimeout(r, 300)); // the echo server binds
      const script = `python3 -c '${PY_ECHO}
replies, errors = 0, {}
socks = []
for i in range(100):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("${HOST_NS.gw4}", 9801))
    s.send(b"x%d" % i)
    socks.append(s)
for s in socks:
    s.settimeout(3)
    try:
        s.recv(100)
        replies += 1
    except OSError as e:
        errors[errno.errorcode[e.errno]] = errors.get(errno.errorcode[e.errno], 0) + 1
print(json.dumps(dict(replies=replies, errors=errors)))
'`;
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-d", "--log-file", log, "--max-flows", "16"],
        script,
      );
      equal(r.code, 0, explain(r));
      const got = JSON.parse(r.stdout.trim().split("\n").pop()!);
      equal(got.replies, 16, JSON.stringify(got));
      equal(
        JSON.stringify(got.errors),
        JSON.stringify({ EHOSTUNREACH: 84 }),
        "prohibited, at once",
      );
      equal(countersFromLog(await Deno.readTextFile(log), "udp").dropTableFull, 84);
    } finally {
      await stopAll([echo]);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("a host server that stops reading for 3 s loses nothing of a 64 MiB upload", () =>
  withHostNs(async (host) => {
    const server = await pyServer(host, 9802, [
      "import hashlib, time",
      "s, _ = l.accept(); time.sleep(3); h = hashlib.sha256(); n = 0",
      "while True:\n  b = s.recv(1 << 20)\n  if not b: break\n  h.update(b); n += len(b)",
      "print(n, h.hexdigest())",
    ]);
    const r = await tapirNs(
      host,
      ["--config-net", "-q"],
      `head -c 64M /dev/urandom > /tmp/up.$$; sha256sum < /tmp/up.$$; ` +
        `socat -u FILE:/tmp/up.$$ TCP:${HOST_NS.gw4}:9802; rm -f /tmp/up.$$`,
    );
    equal(r.code, 0, explain(r));
    const out = new TextDecoder().decode((await server.output()).stdout).trim().split(" ");
    equal(out[0], `${64 << 20}`, "every byte arrived");
    equal(out[1], r.stdout.split(" ")[0], "and the same bytes");
  }));

Deno.test("a guest that dies mid-transfer: tapir ends with its status, the host's connection ends too", () =>
  withHostNs(async (host) => {
    const server = await pyServer(host, 9803, [
      "import time",
      "s, _ = l.accept(); s.settimeout(20); n = 0; t = time.monotonic()",
      "try:",
      "  while True:",
      "    s.sendall(b'x' * 65536); n += 65536",
      "except OSError as e:",
      "  print('ended', type(e).__name__, n > 0, round(time.monotonic() - t, 1))",
    ]);
    // The guest reads for half a second, then is killed.
    const r = await tapirNs(
      host,
      ["--config-net", "-q"],
      `socat -u TCP:${HOST_NS.gw4}:9803 - > /dev/null & sleep 0.5; kill -9 $!; kill -9 $$`,
    );
    equal(r.code, 128 + 9, `the command's status: ${explain(r)}`);
    const out = new TextDecoder().decode((await server.output()).stdout);
    match(out, /^ended (ConnectionResetError|BrokenPipeError) True/m, out);
  }));

Deno.test("SIGTERM during a transfer and a capture: exit 0, the command is ended, the capture is whole, the counters are logged", () =>
  withEcho(9804, async (host, log) => {
    const pcap = log.replace(/log$/, "run.pcap");
    // exec: the command is the transfer itself, which tapir ends.
    const script = `exec python3 -c '${PY_ECHO}
a = socket.create_connection(("${HOST_NS.gw4}", 9804))
print("transferring", flush=True)
while True:
    echo(a, 16384)
'`;
    const [cmd, args] = tapirNsArgs(
      host,
      ["--config-net", "-d", "--log-file", log, "--pcap", pcap],
      script,
    );
    const tapir = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).spawn();
    const reader = tapir.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!seen.includes("transferring")) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    await new Promise((r) => setTimeout(r, 500));
    tapir.kill("SIGTERM");
    const status = await tapir.status;
    reader.releaseLock();
    await tapir.stdout.cancel().catch(() => {});
    const stderr = new TextDecoder().decode(await new Response(tapir.stderr).arrayBuffer());
    equal(status.code, 0, `tapir's status after SIGTERM: ${stderr}`);
    const text = await Deno.readTextFile(log);
    ok(statsFromLog(text).counters.tcp.bytesToHost > 16384, "the counters, with the transfer");
    const shark = await run("tshark", ["-r", pcap, "-T", "fields", "-e", "frame.number"]);
    equal(shark.code, 0, explain(shark));
    ok(
      !/cut short|appears to be damaged/i.test(shark.stderr),
      `the capture is whole: ${shark.stderr}`,
    );
    ok(shark.stdout.trim().split("\n").length > 10, "and holds the transfer");
  }));

Deno.test("an unpaced UDP flood from the guest does not starve its TCP: a 16 MiB download arrives whole meanwhile", () =>
  withHostNs(async (host) => {
    const server = await pyServer(host, 9805, [
      "import hashlib, os",
      "data = os.urandom(16 << 20); print(hashlib.sha256(data).hexdigest(), flush=True)",
      "s, _ = l.accept(); s.sendall(data); s.close()",
    ]);
    const sink = background(host, "python3", [
      "-c",
      "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" +
      "s.bind(('127.0.0.1', 9806))\nwhile True: s.recv(65535)",
    ]);
    const dir = await Deno.makeTempDir({ prefix: "tapir-limits-" });
    try {
      const flood = [
        "import socket, signal, sys",
        "n = 0",
        "def stop(*_):\n  print('sent', n, flush=True); sys.exit(0)",
        "signal.signal(signal.SIGTERM, stop)",
        "socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]",
        `for s in socks:\n  s.connect(("${HOST_NS.gw4}", 9806)); s.setblocking(False)`,
        "buf = b'u' * 1400",
        // As fast as Python sends, on a core of its own: ~300 000 datagrams a
        // second, about three times what tapir forwards, so the tap's queue
        // stays full and drops. The download's ACKs get through only because
        // tapir writes to the guest right after it drains that queue
        // (`Tapir`'s guest read); without that it was reset after a minute.
        "while True:\n  for s in socks:\n    try:\n      s.send(buf); n += 1\n    except OSError:\n      pass",
      ].join("\n");
      await Deno.writeTextFile(`${dir}/flood.py`, flood);
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-d", "--log-file", log],
        [
          `python3 ${dir}/flood.py & f=$!`,
          "sleep 0.5",
          `socat -u TCP:${HOST_NS.gw4}:9805 - | sha256sum`,
          "kill $f; wait $f",
          // What the taps dropped of the guest's frames: the flood overran the queue.
          // (/sys shows the host's links; `ip` asks this namespace's kernel.)
          "ip -s link | awk '/TX:/ { getline; s += $4 } END { print \"dropped\", s }'",
        ].join("\n"),
      );
      equal(r.code, 0, explain(r));
      const sum = new TextDecoder().decode((await server.output()).stdout).trim();
      match(r.stdout, new RegExp(`^${sum}  -$`, "m"), "the download, whole");
      const sent = Number(/^sent (\d+)$/m.exec(r.stdout)?.[1]);
      ok(sent > 2_000, `the flood ran: ${sent} datagrams`);
      const dropped = Number(/^dropped (\d+)$/m.exec(r.stdout)?.[1]);
      ok(dropped > 0, `the tap's queue overflowed: ${dropped} frames dropped`);
      const udp = countersFromLog(await Deno.readTextFile(log), "udp");
      ok(udp.datagramsToHost > 2_000, `tapir carried the flood: ${JSON.stringify(udp)}`);
    } finally {
      await stopAll([sink]);
      await Deno.remove(dir, { recursive: true });
    }
  }));
