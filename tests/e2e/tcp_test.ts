/**
 * TCP translation end to end: real clients in a namespace served by tapir,
 * real servers on the loopback of a throwaway host namespace (reached
 * through the gateway address), every run with `--loopback-only`.
 */
import { equal, match, ok } from "node:assert/strict";
import { HOST_NS, nsArgs, run, withHostNs } from "../helpers/netns.ts";
import { statsReportFromLog } from "../../lib/tapir.ts";
import {
  type Background,
  background,
  countersFromLog,
  explain,
  pyServer,
  statsFromLog,
  stopAll,
  tapirNs,
  waitListening,
} from "../helpers/tapir.ts";

const SIZES: [string, string][] = [["0", "0"], ["1", "1"], ["1m", "1M"], ["1g", "1G"]];

/** Makes the payload files and returns their sha256 sums by name. */
async function payloads(dir: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const [name, size] of SIZES) {
    const file = `${dir}/p${name}`;
    const r = await run("sh", [
      "-c",
      `head -c ${size} /dev/urandom > ${file} && sha256sum < ${file}`,
    ]);
    equal(r.code, 0, r.stderr);
    sums.set(name, r.stdout.split(" ")[0]);
  }
  return sums;
}

/**
 * The guest MTU and offload settings the transfers run under: jumbo frames
 * and MTU 1500, each with segmentation offload (TSO both ways, RSC) and with
 * the plain path.
 */
const TRANSFER_CONFIGS: [string, string[]][] = [
  ["MTU 65520", []],
  ["MTU 65520, --no-offload", ["--no-offload"]],
  ["MTU 1500", ["-m", "1500"]],
  ["MTU 1500, --no-offload", ["-m", "1500", "--no-offload"]],
];

for (const [config, args] of TRANSFER_CONFIGS) {
  Deno.test(
    `transfers of 0 B, 1 B, 1 MiB and 1 GiB arrive intact both ways, IPv4 and IPv6 (${config})`,
    () => transfers(args),
  );
}

function transfers(tapirArgs: string[]): Promise<void> {
  return withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-tcp-" });
    const procs: Background[] = [];
    try {
      const sums = await payloads(dir);
      // Host side, on the host namespace's loopback: per payload one source
      // server (it sends the file) and one sink (it hashes what it receives,
      // into a file of its own: two uploads never race for one file).
      let port = 9100;
      const sourcePort = new Map<string, number>();
      for (const fam of ["4", "6"]) {
        const bind = fam === "4" ? "127.0.0.1" : "[::1]";
        const tcp = fam === "4" ? "TCP4" : "TCP6";
        for (const [name] of SIZES) {
          sourcePort.set(`${fam}${name}`, port);
          procs.push(background(host, "socat", [
            "-U", // from the second address to the first: the file to the client
            `${tcp}-LISTEN:${port},bind=${bind},reuseaddr,fork`,
            `SYSTEM:cat ${dir}/p${name}`,
          ]));
          port++;
          sourcePort.set(`sink${fam}${name}`, port);
          procs.push(background(host, "socat", [
            "-u",
            `${tcp}-LISTEN:${port},bind=${bind},reuseaddr,fork`,
            `SYSTEM:sha256sum > ${dir}/sink${fam}${name}`,
          ]));
          port++;
        }
      }
      for (const p of sourcePort.values()) await waitListening(host, p);

      // Guest side: fetch each payload and hash it; send each payload to the sink.
      const lines: string[] = ["set -e"];
      for (const fam of ["4", "6"]) {
        const gw = fam === "4" ? HOST_NS.gw4 : `[${HOST_NS.gw6}]`;
        const tcp = fam === "4" ? "TCP4" : "TCP6";
        for (const [name] of SIZES) {
          lines.push(
            `printf 'down${fam} ${name} '; socat -u ${tcp}:${gw}:${
              sourcePort.get(fam + name)
            } - | sha256sum`,
          );
          lines.push(
            `socat -u ${dir}/p${name} ${tcp}:${gw}:${sourcePort.get(`sink${fam}${name}`)}`,
          );
        }
      }
      const r = await tapirNs(host, ["--config-net", "-q", ...tapirArgs], lines.join("\n"));
      equal(r.code, 0, explain(r));
      for (const fam of ["4", "6"]) {
        for (const [name] of SIZES) {
          match(
            r.stdout,
            new RegExp(`^down${fam} ${name} ${sums.get(name)}  -$`, "m"),
            `down${fam} ${name}`,
          );
        }
        // A sink writes its hash once its connection ends, which may be a
        // moment after the guest's command has exited.
        for (const [name] of SIZES) {
          let sink = "";
          for (let i = 0; i < 50 && !sink.endsWith("\n"); i++) {
            sink = await Deno.readTextFile(`${dir}/sink${fam}${name}`).catch(() => "");
            if (!sink.endsWith("\n")) await new Promise((res) => setTimeout(res, 100));
          }
          equal(sink.split(" ")[0], sums.get(name), `up${fam} ${name}`);
        }
      }
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

const counterLine = countersFromLog;

Deno.test("at MTU 1500 a bulk transfer moves in GSO frames both ways; --no-offload sends none and the tap drops none", () =>
  withHostNs(async (host) => {
    const procs: Background[] = [];
    const dir = await Deno.makeTempDir({ prefix: "tapir-gso-" });
    try {
      procs.push(background(host, "socat", [
        "-u",
        "TCP4-LISTEN:9600,bind=127.0.0.1,reuseaddr,fork",
        "OPEN:/dev/null",
      ]));
      procs.push(background(host, "socat", [
        "-U",
        "TCP4-LISTEN:9601,bind=127.0.0.1,reuseaddr,fork",
        "SYSTEM:head -c 67108864 /dev/zero",
      ]));
      procs.push(background(host, "socat", [
        "-u",
        "TCP6-LISTEN:9602,bind=[::1],reuseaddr,fork",
        "OPEN:/dev/null",
      ]));
      await waitListening(host, 9600);
      await waitListening(host, 9601);
      await waitListening(host, 9602);
      const script = [
        "set -e",
        // Large writes, as a bulk sender makes them (socat's default is 8 KiB,
        // which the guest's kernel sends as soon as it has it).
        `head -c 67108864 /dev/zero | socat -u -b 262144 - TCP4:${HOST_NS.gw4}:9600`,
        // In socat's 8 KiB writes, over IPv6: without the window bound checked
        // below, the upload that most often overran the tap's queue (measured).
        `head -c 67108864 /dev/zero | socat -u - TCP6:[${HOST_NS.gw6}]:9602`,
        // What the tap dropped of the guest's frames (statistics of every
        // link), before the download: its ACKs can still overrun the queue
        // while tapir sends a whole window in one turn (1 run in 4, measured).
        "echo links $(ip -j -s link show)",
        `socat -u TCP4:${HOST_NS.gw4}:9601 - | wc -c`,
      ].join("\n");
      for (const offload of [true, false]) {
        const log = `${dir}/log-${offload}`;
        const args = ["--config-net", "-m", "1500", "-d", "--log-file", log];
        const r = await tapirNs(host, offload ? args : [...args, "--no-offload"], script);
        equal(r.code, 0, explain(r));
        match(r.stdout, /^67108864$/m, "the download arrived whole");
        const text = await Deno.readTextFile(log);
        const input = counterLine(text, "input");
        const send = counterLine(text, "tap");
        const what = `input ${JSON.stringify(input)}, send ${JSON.stringify(send)}`;
        if (offload) {
          ok(input.gsoFramesToHost > 0, `no GSO frames from the guest: ${what}`);
          ok(send.gsoFramesToGuest > 0, `no GSO frames to the guest: ${what}`);
          const perIn = input.gsoSegmentsToHost / input.gsoFramesToHost;
          const perOut = send.gsoSegmentsToGuest / send.gsoFramesToGuest;
          ok(perIn > 10, `${perIn.toFixed(1)} segments per GSO frame from the guest`);
          ok(perOut > 10, `${perOut.toFixed(1)} segments per GSO frame to the guest`);
          console.log(
            `GSO at MTU 1500: in ${input.gsoFramesToHost} frames, ${
              perIn.toFixed(1)
            } segments each;` +
              ` out ${send.gsoFramesToGuest} frames, ${perOut.toFixed(1)} segments each`,
          );
        } else {
          // One frame per segment, and the window tapir offers keeps the
          // uploads within the tap's queue (`TapBackend.guestQueueFrames`):
          // none dropped.
          const links = JSON.parse(r.stdout.match(/^links (.*)$/m)![1]) as {
            ifname: string;
            stats64: { tx: { dropped: number } };
          }[];
          for (const l of links) {
            equal(l.stats64.tx.dropped, 0, `${l.ifname} dropped ${l.stats64.tx.dropped} frames`);
          }
          equal(input.gsoFramesToHost, 0, what);
          equal(input.gsoSegmentsToHost, 0, what);
          equal(send.gsoFramesToGuest, 0, what);
          equal(send.gsoSegmentsToGuest, 0, what);
        }
      }
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const deno = Deno.execPath();

/** `deno run -A tests/fixtures/NAME ARGS`, as one shell word list. */
function fixture(name: string, ...args: (string | number)[]): string {
  return [deno, "run", "-A", `${FIXTURES}${name}`, ...args].join(" ");
}

/**
 * Runs `body` in a host namespace with the echo server on its loopback at
 * `port`; `log` is a file for tapir's `--log-file`, removed afterwards.
 */
function withEchoServer(
  port: number,
  body: (host: string, log: string) => Promise<void>,
): Promise<void> {
  return withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-tcp-" });
    const procs: Background[] = [];
    try {
      procs.push(
        background(host, deno, [
          "run",
          "-A",
          `${FIXTURES}tcp_echo_server.ts`,
          "127.0.0.1",
          `${port}`,
        ]),
      );
      await waitListening(host, port);
      await body(host, `${dir}/log`);
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

Deno.test("1000 concurrent connections each move 64 KiB both ways; no TCP flow is left", () =>
  withEchoServer(9300, async (host, log) => {
    const r = await tapirNs(
      host,
      ["--config-net", "-d", "--log-file", log],
      fixture("tcp_many_client.ts", HOST_NS.gw4, 9300, 1000, 65536),
    );
    equal(r.code, 0, explain(r));
    match(r.stdout, /^ok 1000$/m);
    const text = await Deno.readTextFile(log);
    equal(countersFromLog(text, "tcp").outbound, 1000, "a flow per connection");
    equal(statsFromLog(text).flows.byType.TCP ?? 0, 0, "no TCP flow left at exit");
  }));

Deno.test("--max-flows 3: a fourth connection is refused while three are open, and served once they close", () =>
  withEchoServer(9310, async (host, log) => {
    const peer = `TCP4:${HOST_NS.gw4}:9310`;
    const r = await tapirNs(
      host,
      ["--config-net", "-d", "--log-file", log, "--max-flows", "3"],
      [
        // Three connections held open by an idle stdin, each echoing once.
        `for i in 1 2 3; do (echo held$i; sleep 3) | socat - ${peer} & done`,
        "sleep 1",
        `if echo fourth | socat - ${peer}; then echo fourth-served; else echo fourth-refused; fi`,
        "wait",
        `echo fifth | socat - ${peer}`,
      ].join("\n"),
    );
    equal(r.code, 0, explain(r));
    for (const want of ["held1", "held2", "held3", "fourth-refused", "fifth"]) {
      match(r.stdout, new RegExp(`^${want}$`, "m"), want);
    }
    const text = await Deno.readTextFile(log);
    equal(countersFromLog(text, "tcp").tableFull, 1, "the refusal was the full table's");
  }));

Deno.test("half-close works both ways: each side keeps sending after the other's FIN", () =>
  withHostNs(async (host) => {
    for (const first of ["client", "server"]) {
      for (const [fam, bind, gw] of [["4", "127.0.0.1", HOST_NS.gw4], ["6", "::1", HOST_NS.gw6]]) {
        const [c, a] = nsArgs(host, deno, [
          "run",
          "-A",
          `${FIXTURES}tcp_halfclose.ts`,
          "server",
          bind,
          "9400",
          first,
          "300000",
        ]);
        const server = new Deno.Command(c, { args: a, stdout: "piped", stderr: "piped" }).spawn();
        try {
          await waitListening(host, 9400);
          const r = await tapirNs(
            host,
            ["--config-net", "-q"],
            fixture("tcp_halfclose.ts", "client", gw, 9400, first, 300000),
          );
          equal(r.code, 0, `${first} first, IPv${fam}: ${explain(r)}`);
          match(r.stdout, /^ok client$/m);
        } finally {
          const out = await server.output();
          const text = new TextDecoder();
          match(
            text.decode(out.stdout),
            /^ok server$/m,
            `server, ${first} first, IPv${fam}: ${text.decode(out.stderr)}`,
          );
        }
      }
    }
  }));

Deno.test("a reset from either side reaches the other; a refused connect is a RST within 100 ms", () =>
  withHostNs(async (host) => {
    const linger0 = "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))";
    // The guest resets: the host server's read fails with ECONNRESET.
    const server1 = await pyServer(host, 9500, [
      "s, _ = l.accept()",
      "try:\n  s.recv(10); print('no reset')\nexcept ConnectionResetError:\n  print('reset seen')",
    ]);
    const g1 = await tapirNs(
      host,
      ["--config-net", "-q"],
      `python3 -c "import socket, struct, time
s = socket.create_connection(('${HOST_NS.gw4}', 9500)); time.sleep(0.2)
${linger0}; s.close(); time.sleep(0.2)"`,
    );
    equal(g1.code, 0, explain(g1));
    match(
      new TextDecoder().decode((await server1.output()).stdout),
      /reset seen/,
      "host saw the guest's reset",
    );

    // The host resets: the guest's read fails with ECONNRESET.
    const server2 = await pyServer(host, 9501, [
      "import struct, time",
      `s, _ = l.accept(); time.sleep(0.2); ${linger0}; s.close()`,
    ]);
    const g2 = await tapirNs(
      host,
      ["--config-net", "-q"],
      `python3 -c "import socket
s = socket.create_connection(('${HOST_NS.gw4}', 9501))
try:
  s.recv(10); print('no reset')
except ConnectionResetError:
  print('reset seen')"`,
    );
    await server2.output();
    equal(g2.code, 0, explain(g2));
    match(g2.stdout, /reset seen/, "guest saw the host's reset");

    // Nothing listens on 9502: the guest's connect is refused, fast.
    const g3 = await tapirNs(
      host,
      ["--config-net", "-q"],
      `python3 -c "import socket, time
for addr in ('${HOST_NS.gw4}', '${HOST_NS.gw6}'):
  t = time.monotonic()
  try:
    socket.create_connection((addr, 9502)); print('connected?')
  except ConnectionRefusedError:
    print('refused in %.1f ms' % ((time.monotonic() - t) * 1000))"`,
    );
    equal(g3.code, 0, explain(g3));
    const times = [...g3.stdout.matchAll(/refused in ([0-9.]+) ms/g)].map((m) => Number(m[1]));
    equal(times.length, 2, g3.stdout);
    for (const t of times) ok(t < 100, `refused after ${t} ms`);
  }));

Deno.test("iperf3 runs 10 s each way without a stalled interval", () =>
  withHostNs(async (host) => {
    const procs: Background[] = [];
    try {
      procs.push(background(host, "iperf3", ["-s", "-B", "127.0.0.1", "-p", "5201"]));
      await waitListening(host, 5201);
      // After each run, tapir's counters (SIGUSR2 to its parent: tapir logs
      // them on stderr) and the guest's TCP recovery counters: what a stall
      // leaves to explain it.
      const counters = "kill -USR2 $PPID && nstat -asz TcpRetransSegs TcpExtTCPTimeouts " +
        "TcpExtTCPLossProbes TcpExtTCPSpuriousRTOs TcpExtTCPFastRetrans TcpExtTCPWinProbe >&2";
      const r = await tapirNs(
        host,
        ["--config-net"],
        `iperf3 -c ${HOST_NS.gw4} -p 5201 -t 10 -J > /tmp/iperf-up.$$ && ${counters} && ` +
          `iperf3 -c ${HOST_NS.gw4} -p 5201 -t 10 -R -J > /tmp/iperf-down.$$ && ${counters} && ` +
          `cat /tmp/iperf-up.$$ && echo '%%' && cat /tmp/iperf-down.$$; rm -f /tmp/iperf-*.$$`,
      );
      equal(r.code, 0, explain(r));
      const [up, down] = r.stdout.split("%%").map((t) => JSON.parse(t));
      for (const [name, run] of [["guest→host", up], ["host→guest", down]]) {
        const intervals = run.intervals.map((i: { sum: { bits_per_second: number } }) =>
          i.sum.bits_per_second
        );
        ok(intervals.length >= 10, `${name}: ${intervals.length} intervals`);
        ok(
          intervals.every((bps: number) => bps > 0),
          `${name}: a stalled interval in ${intervals}\n${stallEvidence(r.stderr)}`,
        );
        const gbps = run.end.sum_received.bits_per_second / 1e9;
        console.log(`iperf3 ${name}: ${gbps.toFixed(2)} Gbit/s`);
      }
    } finally {
      await stopAll(procs);
    }
  }));

/**
 * From the stall test's stderr: the guest's counters (nstat lines) and
 * tapir's TCP and tap counters that tell a lost frame, a lost window update
 * and a full socket apart, after each run.
 */
function stallEvidence(stderr: string): string {
  const keys = [
    "retransmits",
    "windowProbes",
    "outOfOrder",
    "oldData",
    "spillFull",
    "shortWrites",
    "bytesToHost",
  ];
  return stderr.split("\n").map((line) => {
    if (/^Tcp/.test(line)) return line;
    const report = statsReportFromLog(line);
    if (report === null) return null;
    const { tcp, tap } = report.counters;
    return keys.map((k) => `${k}=${tcp[k]}`).join(" ") + ` tap=${JSON.stringify(tap)}`;
  }).filter((l) => l !== null).join("\n");
}
