/**
 * Port forwarding end to end in namespace mode: `-t` (host → namespace) by
 * the splice path for loopback clients and the tap path for others, `-T`
 * (namespace → host loopback), and `auto` for both. Real clients and
 * servers, all inside a throwaway host namespace and tapir's own namespace.
 */
import { deepEqual, equal, notEqual, ok } from "node:assert/strict";
import { HOST_NS, nsRun, run, type RunResult, withHostNs } from "../helpers/netns.ts";
import {
  type Background,
  background,
  countersFromLog,
  explain,
  nsScript,
  statsFromLog,
  stopAll,
  tapirNs,
  TapirRun,
  waitListening,
} from "../helpers/tapir.ts";

/** Writes `DIR/wwwN/index.html` saying `port N` for each N; returns the directory of each. */
async function sites(dir: string, ports: number[]): Promise<Map<number, string>> {
  const out = new Map<number, string>();
  for (const port of ports) {
    const www = `${dir}/www${port}`;
    await Deno.mkdir(www);
    await Deno.writeTextFile(`${www}/index.html`, `port ${port}\n`);
    out.set(port, www);
  }
  return out;
}

const counters = countersFromLog;

/** No flow was left at exit, and every spliced connection closed cleanly. */
function assertAllClosed(log: string): void {
  const flows = statsFromLog(log).flows;
  equal(flows.live, 0, `flows left at exit: ${JSON.stringify(flows)}`);
  const splice = counters(log, "tcp-splice");
  equal(splice.closed, splice.connections, `tcp-splice: ${JSON.stringify(splice)}`);
}

async function curl(host: string, url: string): Promise<RunResult> {
  return await nsRun(host, "curl", ["-s", "-g", "-m", "5", url]);
}

Deno.test("-t: a single port, a range and a mapped port reach namespace servers from host loopback and other host addresses", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-fwd-" });
    try {
      const nsPorts = [8080, 8090, 8091, 8092, 80];
      const www = await sites(dir, nsPorts);
      const servers = nsPorts.map((p) => `busybox httpd -f -p ${p} -h ${www.get(p)}`);
      const tapir = new TapirRun(
        host,
        dir,
        ["-t", "8080", "-t", "8090-8092", "-t", "9080:80", "-t", "8093"],
        nsScript(dir, servers, nsPorts),
      );
      await tapir.ready();
      const got: Record<string, string> = {};
      const urls: [string, string][] = [
        ["single", "http://127.0.0.1:8080/"],
        ["single v6", "http://[::1]:8080/"],
        ["range 8090", "http://127.0.0.1:8090/"],
        ["range 8091", "http://127.0.0.1:8091/"],
        ["range 8092", "http://[::1]:8092/"],
        ["mapped", "http://127.0.0.1:9080/"],
        ["tap path v4", "http://192.0.2.2:8080/"],
        ["tap path v6", "http://[2001:db8::2]:8080/"],
      ];
      for (const [name, url] of urls) got[name] = (await curl(host, url)).stdout.trim();
      // Forwarded, but nothing listens in the namespace: the host client is reset.
      const refused = await curl(host, "http://127.0.0.1:8093/");
      const { result, log } = await tapir.stop();
      equal(result.code, 0, explain(result));
      deepEqual(got, {
        "single": "port 8080",
        "single v6": "port 8080",
        "range 8090": "port 8090",
        "range 8091": "port 8091",
        "range 8092": "port 8092",
        "mapped": "port 80",
        "tap path v4": "port 8080",
        "tap path v6": "port 8080",
      });
      notEqual(refused.code, 0, "a refused namespace connect fails the host client");
      const listen = counters(log, "tcp-listen");
      equal(listen.hooked, 7, `six loopback requests and the refused one were spliced: ${log}`);
      const tcp = counters(log, "tcp");
      equal(tcp.inbound, 2, "the two non-loopback requests took the tap path");
      const splice = counters(log, "tcp-splice");
      equal(splice.refused, 1);
      equal(statsFromLog(log).flows.live, 0);
      equal(splice.closed, 6);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("-T: the namespace's loopback reaches a server on host loopback", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-fwd-" });
    const procs: Background[] = [];
    try {
      const www = await sites(dir, [5000]);
      procs.push(background(host, "busybox", ["httpd", "-f", "-p", "5000", "-h", www.get(5000)!]));
      await waitListening(host, 5000);
      const log = `${dir}/log`;
      const r = await tapirNs(
        host,
        ["--config-net", "-d", "--log-file", log, "-T", "5000", "-T", "5001:5000"],
        [
          "curl -s -m 5 http://127.0.0.1:5000/",
          "curl -s -m 5 -g http://[::1]:5000/",
          "curl -s -m 5 http://127.0.0.1:5001/",
        ].join("; "),
      );
      equal(r.code, 0, explain(r));
      equal(r.stdout, "port 5000\n".repeat(3), explain(r));
      const text = await Deno.readTextFile(log);
      assertAllClosed(text);
      equal(counters(text, "tcp-ns").nsAccepted, 3);
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("-t auto and -T auto follow servers started after tapir, and never forward their own ports", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-fwd-" });
    const procs: Background[] = [];
    try {
      const www = await sites(dir, [8070, 8071, 5050]);
      // Bind addresses are chosen so that only the "own ports" rule stops a
      // loop: the namespace's 8071 leaves its loopback free (so -T auto
      // could bind 8071 there), the host's 5050 is IPv4 loopback only (so
      // -t auto could bind [::]:5050 on the host).
      // The namespace starts its servers once tapir runs (after "ready"),
      // stops 8070 on DIR/kill, and fetches from the host's 5050 via -T auto.
      const script = nsScript(
        dir,
        [],
        [],
        [
          `busybox httpd -f -p 8070 -h ${www.get(8070)} & late=$!`,
          `busybox httpd -f -p ${HOST_NS.addr4}:8071 -h ${www.get(8071)} & pids="$pids $!"`,
          `for i in $(seq 60); do curl -s -m 1 http://127.0.0.1:5050/ > ${dir}/from-host && break; sleep 0.1; done`,
          `while [ ! -e ${dir}/kill ]; do sleep 0.05; done`,
          `kill $late`,
        ].join("\n"),
      );
      const tapir = new TapirRun(host, dir, ["-t", "auto", "-T", "auto"], script);
      await tapir.ready();
      procs.push(
        background(host, "busybox", ["httpd", "-f", "-p", "127.0.0.1:5050", "-h", www.get(5050)!]),
      );

      const fetchSoon = async (url: string) => {
        let reply: RunResult | null = null;
        for (const end = Date.now() + 3000; Date.now() < end;) {
          reply = await curl(host, url);
          if (reply.code === 0) break;
          await new Promise((r) => setTimeout(r, 100));
        }
        return reply?.stdout;
      };
      equal(await fetchSoon("http://127.0.0.1:8070/"), "port 8070\n", "-t auto, splice path");
      equal(await fetchSoon(`http://${HOST_NS.addr4}:8071/`), "port 8071\n", "-t auto, tap path");

      // The namespace's server goes away: so does the host listener.
      await Deno.writeTextFile(`${dir}/kill`, "");
      let gone = false;
      for (const end = Date.now() + 3000; Date.now() < end && !gone;) {
        gone = (await nsRun(host, "ss", ["-Hltn", "sport = :8070"])).stdout.trim() === "";
        if (!gone) await new Promise((r) => setTimeout(r, 100));
      }
      ok(gone, "-t auto closed the host listener after the namespace's server stopped");

      const { result, log } = await tapir.stop();
      equal(result.code, 0, explain(result));
      equal(await Deno.readTextFile(`${dir}/from-host`), "port 5050\n", "-T auto");
      assertAllClosed(log);
      // Each side forwarded exactly the other's servers: its own listeners,
      // seen by the other side's scan, were not forwarded back.
      const forwarded = [...log.matchAll(/-(t|T) auto: forwarding (?:host|namespace) port (\d+)/g)]
        .map((m) => `-${m[1]} ${m[2]}`);
      deepEqual([...new Set(forwarded)].sort(), ["-T 5050", "-t 8070", "-t 8071"]);
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("splice: 64 MiB both ways arrive intact, and a half-close passes through both ways", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-fwd-" });
    const procs: Background[] = [];
    try {
      const made = await run("sh", [
        "-c",
        `head -c 64M /dev/urandom > ${dir}/up && head -c 64M /dev/urandom > ${dir}/down && ` +
        `sha256sum < ${dir}/up && sha256sum < ${dir}/down`,
      ]);
      equal(made.code, 0, made.stderr);
      const [upSum, downSum] = made.stdout.trim().split("\n").map((l) => l.split(" ")[0]);

      // Host side server for -T: hashes what it receives until EOF, then answers with the hash.
      procs.push(background(host, "socat", [
        "TCP4-LISTEN:7100,bind=127.0.0.1,reuseaddr,fork",
        "SYSTEM:sha256sum",
      ]));
      await waitListening(host, 7100);

      // Namespace servers for -t: the same hashing server, and a source of the download.
      const servers = [
        `socat TCP4-LISTEN:7000,reuseaddr,fork SYSTEM:sha256sum`,
        `socat -U TCP4-LISTEN:7001,reuseaddr,fork SYSTEM:'cat ${dir}/down'`,
      ];
      // Inside: upload to the host through -T; the reply comes after our half-close.
      const inside = `socat -t 20 - TCP4:127.0.0.1:7100 < ${dir}/up > ${dir}/inside-up`;
      const tapir = new TapirRun(
        host,
        dir,
        ["-t", "7000-7001", "-T", "7100"],
        nsScript(dir, servers, [7000, 7001], inside),
      );
      await tapir.ready();
      // Host → namespace: the client shuts down writing at the end of the
      // file and still reads the server's answer, the hash of all it got.
      const up = await nsRun(host, "sh", [
        "-c",
        `socat -t 20 - TCP4:127.0.0.1:7000 < ${dir}/up`,
      ]);
      // Namespace → host.
      const down = await nsRun(host, "sh", [
        "-c",
        `socat -u TCP4:127.0.0.1:7001 - | sha256sum`,
      ]);
      const { result, log } = await tapir.stop();
      equal(result.code, 0, explain(result));
      equal(up.stdout.split(" ")[0], upSum, `host → namespace, then half-close: ${up.stderr}`);
      equal(down.stdout.split(" ")[0], downSum, "namespace → host");
      const insideUp = await Deno.readTextFile(`${dir}/inside-up`);
      equal(insideUp.split(" ")[0], upSum, "namespace → host loopback (-T), then half-close");
      assertAllClosed(log);
      const splice = counters(log, "tcp-splice");
      ok((splice.bytesToGuest as number) >= 64 << 20, JSON.stringify(splice));
      ok((splice.bytesToHost as number) >= 2 * (64 << 20), JSON.stringify(splice));
      equal(splice.resets, 0);
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));
