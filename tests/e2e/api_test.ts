/**
 * The control socket end to end (`tapir ns --api-socket PATH`): forwards
 * added and removed at run time carry (or stop carrying) real clients'
 * traffic, `flows` and `stats` account for the test's own bytes exactly,
 * captures start and stop on request, bad requests are answered and leave
 * tapir forwarding, and many clients polling `stats` leave a transfer alone.
 * Everything runs in a throwaway host namespace and tapir's own namespace.
 */
import { deepEqual, equal, match, notEqual, ok } from "node:assert/strict";
import { ctlCall, type CtlRequest } from "../../lib/ctl.ts";
import type { FlowReport } from "../../lib/api/control.ts";
import type { StatsReport } from "../../lib/tapir.ts";
import { HOST_NS, nsArgs, nsRun, run, type RunResult, withHostNs } from "../helpers/netns.ts";
import {
  type Background,
  background,
  explain,
  stopAll,
  tapirNsArgs,
  TapirRun,
  waitListening,
} from "../helpers/tapir.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const ADDR = HOST_NS.addr4;

/** The command tapir runs: the namespace's servers, then wait for DIR/stop. */
function servers(dir: string): string {
  const deno = Deno.execPath();
  return [
    `echo $$ > ${dir}/pid`,
    `busybox httpd -f -p 80 -h ${dir}/www & p1=$!`,
    `${deno} run -A ${FIXTURES}tcp_echo_server.ts 0.0.0.0 7000 & p2=$!`,
    `python3 ${FIXTURES}udp_echo.py 0.0.0.0 5353 >/dev/null & p3=$!`,
    `until ss -Hltn "sport = :80" | grep -q . && ss -Hltn "sport = :7000" | grep -q . && ` +
    `ss -Hlun "sport = :5353" | grep -q .; do sleep 0.05; done`,
    `touch ${dir}/ready`,
    `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
    `kill $p1 $p2 $p3 2>/dev/null`,
    `wait`,
  ].join("\n");
}

/** A directory with `www/index.html` saying hello. */
async function workDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "tapir-api-" });
  await Deno.mkdir(`${dir}/www`);
  await Deno.writeTextFile(`${dir}/www/index.html`, "hello\n");
  return dir;
}

/** The `return` value of a request that must succeed. */
async function call<T = unknown>(
  sock: string,
  req: CtlRequest | Record<string, unknown>,
): Promise<T> {
  const r = await ctlCall(sock, req);
  if (!r.ok) throw new Error(`${JSON.stringify(req)}: ${r.desc}`);
  return r.value as T;
}

/** The error description of a request that must fail. */
async function refused(sock: string, req: Record<string, unknown>): Promise<string> {
  const r = await ctlCall(sock, req);
  if (r.ok) throw new Error(`${JSON.stringify(req)} succeeded: ${JSON.stringify(r.value)}`);
  return r.desc;
}

function curl(host: string, url: string): Promise<RunResult> {
  return nsRun(host, "curl", ["-s", "-g", "-m", "3", url]);
}

/** `count` UDP datagrams of `size` bytes to ADDR:port from one socket; how many echoes came back. */
async function udpEcho(host: string, port: number, count: number, size: number): Promise<number> {
  const py = [
    "import socket",
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
    "s.settimeout(1)",
    "got = 0",
    `for i in range(${count}):`,
    `  s.sendto(b'u' * ${size}, ('${ADDR}', ${port}))`,
    "  try:",
    `    got += len(s.recv(65535)) == ${size}`,
    "  except OSError:",
    "    pass",
    "print(got)",
  ].join("\n");
  const r = await nsRun(host, "python3", ["-c", py]);
  equal(r.code, 0, explain(r));
  return Number(r.stdout.trim());
}

/** A TCP client in `host` that holds one connection to ADDR:port open (tcp_hold_client.py). */
class HeldClient {
  readonly #proc: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: ReadableStreamDefaultReader<string>;
  #buffered = "";

  constructor(host: string, port: number) {
    const [cmd, args] = nsArgs(host, "python3", [`${FIXTURES}tcp_hold_client.py`, ADDR, `${port}`]);
    this.#proc = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "null" })
      .spawn();
    this.#writer = this.#proc.stdin.getWriter();
    this.#lines = this.#proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  async #line(): Promise<string> {
    for (;;) {
      const nl = this.#buffered.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buffered.slice(0, nl);
        this.#buffered = this.#buffered.slice(nl + 1);
        return line;
      }
      const { value, done } = await this.#lines.read();
      if (done) throw new Error("the client exited");
      this.#buffered += value;
    }
  }

  /** The client's local port, once connected. */
  async port(): Promise<number> {
    const line = await this.#line();
    match(line, /^port \d+$/);
    return Number(line.split(" ")[1]);
  }

  /** Sends `n` bytes and waits for them to come back. */
  async echo(n: number): Promise<void> {
    await this.#writer.write(new TextEncoder().encode(`send ${n}\n`));
    equal(await this.#line(), `echoed ${n}`);
  }

  /** Closes the connection and reaps the client. */
  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    await this.#lines.cancel().catch(() => {});
    await this.#proc.status;
  }
}

/** A counter's movement between two `stats` replies. */
function moved(before: StatsReport, after: StatsReport, group: string, name: string): number {
  return (after.counters[group]?.[name] ?? 0) - (before.counters[group]?.[name] ?? 0);
}

Deno.test("control socket: -t and -u forwards added at run time carry traffic, removed ones close; flows and stats are exact", () =>
  withHostNs(async (host) => {
    const dir = await workDir();
    const sock = `${dir}/api.sock`;
    const procs: Background[] = [];
    let held: HeldClient | null = null;
    const tapir = new TapirRun(host, dir, ["--api-socket", sock], servers(dir));
    try {
      await tapir.ready();
      equal((await Deno.stat(sock)).mode! & 0o777, 0o600, "the socket is for its owner only");
      deepEqual(await call(sock, { cmd: "forwards" }), { forwards: [] });
      notEqual((await curl(host, `http://${ADDR}:9080/`)).code, 0, "nothing on 9080 yet");

      // Forwards added at run time: TCP by both paths (loopback: spliced;
      // the host's address: through the tap), UDP, and one the other way.
      deepEqual(await call(sock, { cmd: "forward-add", proto: "tcp", spec: "9080:80" }), {
        proto: "tcp",
        spec: "9080:80",
      });
      await call(sock, { cmd: "forward-add", proto: "tcp", spec: "9007:7000" });
      await call(sock, { cmd: "forward-add", proto: "udp", spec: "9053:5353" });
      equal((await curl(host, "http://127.0.0.1:9080/")).stdout, "hello\n");
      equal((await curl(host, `http://${ADDR}:9080/`)).stdout, "hello\n");
      equal((await curl(host, "http://[::1]:9080/")).stdout, "hello\n");
      deepEqual(await call(sock, { cmd: "forwards" }), {
        forwards: [
          { proto: "tcp", spec: "9080:80" },
          { proto: "tcp", spec: "9007:7000" },
          { proto: "udp", spec: "9053:5353" },
        ],
      });

      // -T at run time: the namespace reaches a server on host loopback.
      await Deno.mkdir(`${dir}/host-www`);
      await Deno.writeTextFile(`${dir}/host-www/index.html`, "from the host\n");
      procs.push(
        background(host, "busybox", ["httpd", "-f", "-p", "5000", "-h", `${dir}/host-www`]),
      );
      await waitListening(host, 5000);
      await call(sock, { cmd: "forward-add", proto: "tcp-ns", spec: "6000:5000" });
      const nsPid = (await Deno.readTextFile(`${dir}/pid`)).trim();
      const fromNs = await run("nsenter", [
        "-t",
        nsPid,
        "-n",
        "curl",
        "-s",
        "-m",
        "3",
        "http://127.0.0.1:6000/",
      ]);
      equal(fromNs.stdout, "from the host\n", explain(fromNs));

      // The test's own traffic, counted exactly: 1000 bytes each way on one
      // TCP connection, five 100-byte datagrams each way on one UDP flow.
      const before = await call<StatsReport>(sock, { cmd: "stats" });
      held = new HeldClient(host, 9007);
      const clientPort = await held.port();
      await held.echo(1000);
      equal(await udpEcho(host, 9053, 5, 100), 5, "every datagram echoed");
      const after = await call<StatsReport>(sock, { cmd: "stats" });
      equal(moved(before, after, "tcp", "inbound"), 1, "one connection through the tap");
      equal(moved(before, after, "tcp", "bytesToGuest"), 1000);
      equal(moved(before, after, "tcp", "bytesToHost"), 1000);
      equal(moved(before, after, "udp", "inbound"), 1, "one UDP flow");
      equal(moved(before, after, "udp", "datagramsToGuest"), 5);
      equal(moved(before, after, "udp", "datagramsToHost"), 5);
      ok(after.traffic.toGuest.frames > before.traffic.toGuest.frames);
      ok(after.uptime >= before.uptime);

      // `flows` lists that connection with both sides' addresses and its bytes.
      const { flows } = await call<{ flows: FlowReport[] }>(sock, { cmd: "flows" });
      const mine = flows.filter((f) => f.type === "TCP" && f.ini.peerPort === clientPort);
      equal(mine.length, 1, JSON.stringify(flows));
      const f = mine[0];
      deepEqual(
        {
          ini: f.ini,
          tgt: { pif: f.tgt?.pif, peerAddr: f.tgt?.peerAddr, peerPort: f.tgt?.peerPort },
        },
        {
          ini: {
            pif: "HOST",
            peerAddr: ADDR,
            peerPort: clientPort,
            localAddr: ADDR,
            localPort: 9007,
          },
          tgt: { pif: "TAP", peerAddr: ADDR, peerPort: 7000 },
        },
      );
      equal(f.state, "ACTIVE");
      equal(f.bytesIniToTgt, 1000);
      equal(f.bytesTgtToIni, 1000);
      ok(f.age >= 0 && f.age < 60, `age ${f.age}`);

      // Removing forwards closes their ports; the connection made lives on.
      await call(sock, { cmd: "forward-remove", proto: "tcp", spec: "9007:7000" });
      await call(sock, { cmd: "forward-remove", proto: "udp", spec: "9053:5353" });
      await call(sock, { cmd: "forward-remove", proto: "tcp", spec: "9080:80" });
      const gone = await nsRun(host, "python3", [
        "-c",
        `import socket\ntry:\n  socket.create_connection(('${ADDR}', 9007), timeout=2)\n  print('connected')\n` +
        `except ConnectionRefusedError:\n  print('refused')`,
      ]);
      equal(gone.stdout.trim(), "refused", "the removed forward's port is closed");
      notEqual((await curl(host, "http://127.0.0.1:9080/")).code, 0);
      equal(await udpEcho(host, 9053, 2, 100), 0, "no UDP forward any more");
      await held.echo(500);
      deepEqual(await call(sock, { cmd: "forwards" }), {
        forwards: [{ proto: "tcp-ns", spec: "6000:5000" }],
      });

      // A capture started and stopped on request holds what passed meanwhile.
      const pcap = `${dir}/run.pcap`;
      deepEqual(await call(sock, { cmd: "pcap-start", path: pcap }), { path: pcap });
      await held.echo(300);
      const stopped = await call<{ path: string; frames: number }>(sock, { cmd: "pcap-stop" });
      equal(stopped.path, pcap);
      ok(stopped.frames >= 2, `frames ${stopped.frames}`);
      const ts = await run("tshark", ["-r", pcap, "-T", "fields", "-e", "tcp.len"]);
      equal(ts.code, 0, explain(ts));
      const lens = ts.stdout.trim().split("\n").map(Number);
      equal(lens.length, stopped.frames, ts.stdout);
      equal(lens.reduce((a, b) => a + b, 0), 600, "300 bytes each way");
      ok(!/malformed/i.test(ts.stderr), ts.stderr);

      await held.close();
      held = null;
      const { result } = await tapir.stop();
      equal(result.code, 0, explain(result));
      ok(
        !(await Deno.stat(sock).then(() => true, () => false)),
        "the socket file is removed on exit",
      );
    } finally {
      await held?.close();
      await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
      await tapir.process.status;
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));

/** Sends `text` on one connection and reads `replies` reply lines. */
async function rawExchange(sock: string, text: string, replies: number): Promise<string[]> {
  const conn = await Deno.connect({ transport: "unix", path: sock });
  try {
    const bytes = new TextEncoder().encode(text);
    for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
    const lines: string[] = [];
    let buf = "";
    const dec = new TextDecoder();
    const chunk = new Uint8Array(65536);
    while (lines.length < replies) {
      const n = await conn.read(chunk);
      if (n === null) break;
      buf += dec.decode(chunk.subarray(0, n), { stream: true });
      for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
    return lines;
  } finally {
    conn.close();
  }
}

Deno.test("control socket: bad requests get an error naming what was wrong, and tapir keeps forwarding", () =>
  withHostNs(async (host) => {
    const dir = await workDir();
    const sock = `${dir}/api.sock`;
    const procs: Background[] = [];
    const tapir = new TapirRun(host, dir, ["--api-socket", sock, "-t", "9080:80"], servers(dir));
    try {
      await tapir.ready();
      // Framing errors on one connection, which stays usable after each.
      const lines = await rawExchange(
        sock,
        [
          "this is not json",
          "[1, 2]",
          '{"cmd":"reboot"}',
          "x".repeat(70_000),
          '{"cmd":"forwards"}',
        ].join("\n") + "\n",
        5,
      );
      const replies = lines.map((l) => JSON.parse(l));
      match(replies[0].error.desc, /malformed JSON/);
      match(replies[1].error.desc, /JSON object/);
      match(replies[2].error.desc, /unknown request "reboot"/);
      match(replies[3].error.desc, /over 65536 bytes/);
      deepEqual(replies[4], { return: { forwards: [{ proto: "tcp", spec: "9080:80" }] } });

      // Bad forward requests.
      procs.push(background(host, "busybox", ["httpd", "-f", "-p", "5000", "-h", `${dir}/www`]));
      await waitListening(host, 5000);
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ cmd: "forward-add", proto: "tcp", spec: "80:99999" }, /-t 80:99999: .*out of range/],
        [{ cmd: "forward-add", proto: "tcp", spec: "http" }, /-t http: 'http' is not a port/],
        [{ cmd: "forward-add", proto: "sctp", spec: "80" }, /unknown proto 'sctp'/],
        [{ cmd: "forward-add", proto: "tcp" }, /needs "spec"/],
        [{ cmd: "forward-add", proto: "tcp", spec: "all" }, /only listed ports/],
        [{ cmd: "forward-add", proto: "tcp", spec: "9080" }, /port 9080 is already forwarded/],
        [
          { cmd: "forward-add", proto: "tcp", spec: "5000" },
          /-t 5000: cannot listen on IPv4 port 5000: EADDRINUSE/,
        ],
        [{ cmd: "forward-remove", proto: "udp", spec: "9080" }, /no udp forward '9080'/],
        [{ cmd: "pcap-stop" }, /no capture is running/],
        [{ cmd: "pcap-start", path: `${dir}/no/such/dir/x.pcap` }, /cannot open/],
      ];
      for (const [req, want] of cases) match(await refused(sock, req), want, JSON.stringify(req));
      // The port in use was refused whole: nothing half-open stays behind.
      deepEqual(await call(sock, { cmd: "forwards" }), {
        forwards: [{ proto: "tcp", spec: "9080:80" }],
      });

      // A second tapir cannot take a live socket; a stale one is replaced.
      const [cmd, args] = tapirNsArgs(host, ["--api-socket", sock], "true");
      const second = await run(cmd, args);
      equal(second.code, 1, explain(second));
      match(second.stderr, /--api-socket: .* in use/);
      equal(second.stderr.trim().split("\n").length, 1, explain(second));

      // Still forwarding, and still answering.
      equal((await curl(host, `http://${ADDR}:9080/`)).stdout, "hello\n");
      equal((await curl(host, "http://127.0.0.1:9080/")).stdout, "hello\n");
      ok((await call<StatsReport>(sock, { cmd: "stats" })).counters.api.errors >= cases.length + 4);
      const { result } = await tapir.stop();
      equal(result.code, 0, explain(result));

      const stale = `${dir}/stale.sock`;
      const py = `import socket; socket.socket(socket.AF_UNIX).bind('${stale}')`;
      equal((await run("python3", ["-c", py])).code, 0);
      const [cmd2, args2] = tapirNsArgs(host, ["--api-socket", stale], "true");
      const third = await run(cmd2, args2);
      equal(third.code, 0, explain(third));
    } finally {
      await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
      await tapir.process.status;
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));

/** iperf3 from the host to the namespace's server through `-t 5201`, for `seconds`: bits/s received. */
async function iperf(host: string, seconds: number): Promise<number> {
  const r = await nsRun(host, "iperf3", ["-c", ADDR, "-p", "5201", "-t", `${seconds}`, "-J"]);
  equal(r.code, 0, explain(r));
  return JSON.parse(r.stdout).end.sum_received.bits_per_second;
}

Deno.test("control socket: 50 clients polling stats during an iperf3 transfer all get parseable replies", () =>
  withHostNs(async (host) => {
    const dir = await workDir();
    const sock = `${dir}/api.sock`;
    const script = [
      "iperf3 -s -p 5201 >/dev/null 2>&1 & p=$!",
      `until ss -Hltn "sport = :5201" | grep -q .; do sleep 0.05; done`,
      `touch ${dir}/ready`,
      `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
      "kill $p; wait",
    ].join("\n");
    const tapir = new TapirRun(host, dir, ["--api-socket", sock, "-t", "5201"], script);
    try {
      await tapir.ready();
      const quiet = await iperf(host, 3);
      let stop = false;
      let parsed = 0;
      const clients = Array.from({ length: 50 }, async () => {
        const conn = await Deno.connect({ transport: "unix", path: sock });
        const request = new TextEncoder().encode('{"cmd":"stats"}\n');
        const chunk = new Uint8Array(1 << 16);
        const dec = new TextDecoder();
        let buf = "";
        try {
          while (!stop) {
            await conn.write(request);
            let nl = -1;
            while ((nl = buf.indexOf("\n")) < 0) {
              const n = await conn.read(chunk);
              if (n === null) throw new Error("the server closed the connection");
              buf += dec.decode(chunk.subarray(0, n), { stream: true });
            }
            const reply = JSON.parse(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
            ok(reply.return.counters.tcp, "a stats reply");
            parsed++;
          }
        } finally {
          conn.close();
        }
      });
      const busy = await iperf(host, 3);
      stop = true;
      await Promise.all(clients);
      console.log(
        `iperf3 through tapir: ${(quiet / 1e9).toFixed(2)} Gbit/s alone, ` +
          `${(busy / 1e9).toFixed(2)} Gbit/s with 50 clients polling stats ` +
          `(${(busy / quiet * 100).toFixed(0)} %; ${parsed} replies)`,
      );
      ok(parsed >= 50, `${parsed} replies`);
      ok(busy > 0 && quiet > 0);
      const { result } = await tapir.stop();
      equal(result.code, 0, explain(result));
    } finally {
      await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
      await tapir.process.status;
      await Deno.remove(dir, { recursive: true });
    }
  }));

/** Whether a TCP socket listens on `port` in the network namespace of process `pid`. */
async function tcpListening(pid: number, port: number): Promise<boolean> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  for (const table of ["tcp", "tcp6"]) {
    const text = await Deno.readTextFile(`/proc/${pid}/net/${table}`);
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length > 3 && f[1].endsWith(`:${hexPort}`) && f[3] === "0A") return true;
    }
  }
  return false;
}

Deno.test("SIGUSR2 logs the statistics report as one JSON object; --stats logs a summary line every N seconds; SIGUSR1 opens no inspector", () =>
  withHostNs(async (host) => {
    const dir = await workDir();
    const tapir = new TapirRun(host, dir, ["--stats", "1", "-t", "9080:80"], servers(dir));
    try {
      await tapir.ready();
      equal((await curl(host, `http://${ADDR}:9080/`)).stdout, "hello\n");
      Deno.kill(tapir.process.pid, "SIGUSR2");
      const log = `${dir}/log`;
      let report: StatsReport | null = null;
      for (let i = 0; i < 100 && report === null; i++) {
        await new Promise((r) => setTimeout(r, 50));
        const text = await Deno.readTextFile(log);
        const line = text.split("\n").find((l) => / info: stats \{/.test(l));
        if (line !== undefined) report = JSON.parse(line.slice(line.indexOf("{")));
      }
      ok(report !== null, "a stats line at info level");
      equal(report.counters.tcp.inbound, 1, "the curl through the tap");
      ok(report.counters.tcp.bytesToGuest > 0 && report.counters.tcp.bytesToHost > 0);
      ok(report.traffic.toHost.frames > 0 && report.traffic.toGuest.bytes > 0);
      ok(typeof report.flows.live === "number" && report.uptime > 0);
      await new Promise((r) => setTimeout(r, 1200));
      // SIGUSR1 would open Deno's inspector on 127.0.0.1:9229, which runs what
      // it is sent: tapir has set it to be ignored since the runtime's handler came.
      ok(/SIGUSR1: the runtime's inspector handler replaced/.test(await Deno.readTextFile(log)));
      Deno.kill(tapir.process.pid, "SIGUSR1");
      await new Promise((r) => setTimeout(r, 500));
      equal(await tcpListening(tapir.process.pid, 9229), false, "no inspector on 9229");
      equal((await curl(host, `http://${ADDR}:9080/`)).stdout, "hello\n", "tapir lives on");
      const { result, log: text } = await tapir.stop();
      equal(result.code, 0, explain(result));
      match(
        text,
        /info: stats: to host [0-9.]+ [kMG]?bit\/s [0-9.]+ [k]?frames\/s, to guest .*; flows \d+/,
      );
    } finally {
      await Deno.writeTextFile(`${dir}/stop`, "").catch(() => {});
      await tapir.process.status;
      await Deno.remove(dir, { recursive: true });
    }
  }));
