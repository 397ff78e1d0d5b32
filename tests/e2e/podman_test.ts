/**
 * Real podman 4.3 (root, runc, vfs) with `--network slirp4netns`, its
 * network helper being tapir run as `slirp4netns` (tests/helpers/engines.ts),
 * or the real slirp4netns when TAPIR_ENGINE_REFERENCE=1 (to check the test
 * itself). Everything runs in a throwaway host namespace whose only uplink
 * is a dead end (tests/helpers/netns.ts); podman's state lives in a
 * temporary sandbox (tests/helpers/podman.ts). The container image is a
 * busybox-static root file system built and imported at run time.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { withHostNs } from "../helpers/netns.ts";
import { type Background, background, explain, stopAll, waitListening } from "../helpers/tapir.ts";
import {
  BUSYBOX_IMAGE,
  randomBytes,
  runFor,
  sha256Hex,
  slirp4netnsHelper,
  type TimedResult,
  waitFileWhile,
  waitUdpBound,
  withPodman,
} from "../helpers/podman.ts";

const REFERENCE = Deno.env.get("TAPIR_ENGINE_REFERENCE") === "1";
const DNS_STUB = new URL("../fixtures/dns_stub.py", import.meta.url).pathname;

/** The test's HTTP server, on the host namespace's loopback. */
const HTTP_PORT = 18080;
/** The port published with `-p PUBLISHED:80`. */
const PUBLISHED = 18081;
const NAME = "podman-e2e.example";
const ANSWER4 = "198.51.100.7";
const ANSWER6 = "2001:db8::7";

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

Deno.test(
  `podman --network slirp4netns (${
    REFERENCE ? "reference slirp4netns" : "tapir"
  }): address, host loopback, DNS, published port; the helper ends with the container`,
  () =>
    withHostNs(async (host) => {
      const dir = await Deno.makeTempDir({ prefix: "tapir-e2e-" });
      const servers: Background[] = [];
      try {
        const blob = randomBytes(2 << 20);
        const hash = await sha256Hex(blob);
        await Deno.mkdir(`${dir}/www`);
        await Deno.mkdir(`${dir}/share`);
        await Deno.writeFile(`${dir}/www/blob`, blob);
        servers.push(
          background(host, "python3", [
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            `${dir}/www`,
            String(HTTP_PORT),
          ]),
          background(host, "python3", [DNS_STUB, "127.0.0.1", ANSWER4, ANSWER6]),
        );
        await waitListening(host, HTTP_PORT);
        await waitUdpBound(host, 53);

        await withPodman(host, {
          helper: (d) => slirp4netnsHelper(d, REFERENCE),
          resolvConf: "nameserver 127.0.0.1\n",
        }, async (podman) => {
          await podman.importBusybox();
          const script = [
            "set -e",
            "ip -4 -o addr show",
            "mkdir /tmp/www",
            // busybox 1.35 wget segfaults with -T: timeout(1) bounds it instead.
            `timeout 20 wget -q -O /tmp/www/blob http://10.0.2.2:${HTTP_PORT}/blob`,
            "sha256sum /tmp/www/blob",
            `timeout 20 nslookup ${NAME} 10.0.2.3`,
            "httpd -p 80 -h /tmp/www",
            "touch /share/ready",
            // Serve until the host has fetched (at most 30 s).
            "i=0; until [ -e /share/done ]; do sleep 0.1; i=$((i+1)); [ $i -lt 300 ] || exit 9; done",
            "echo finished",
          ].join("\n");
          const ctr = podman.start([
            "run",
            "--rm",
            "--network",
            "slirp4netns:port_handler=slirp4netns,allow_host_loopback=true",
            "-p",
            `${PUBLISHED}:80`,
            "-v",
            `${dir}/share:/share`,
            BUSYBOX_IMAGE,
            "sh",
            "-c",
            script,
          ], 45_000);

          let helpers: number[] = [];
          let fetched: TimedResult | Error;
          try {
            await waitFileWhile(`${dir}/share/ready`, ctr.done, 35_000);
            helpers = await podman.helperPids();
            // The host side reaches the container's server through the published port.
            fetched = await runFor("ip", [
              "netns",
              "exec",
              host,
              "curl",
              "-sS",
              "--fail",
              "-m",
              "10",
              "-o",
              `${dir}/fetched`,
              `http://127.0.0.1:${PUBLISHED}/blob`,
            ], 15_000).catch((e) => e);
          } catch (e) {
            try {
              ctr.child.kill("SIGKILL");
            } catch { /* gone */ }
            const r = await ctr.done;
            throw new Error(`${e}\npodman run: ${explain(r)}`, { cause: e });
          } finally {
            await Deno.writeTextFile(`${dir}/share/done`, "");
          }
          const r = await ctr.done;
          const exitedAt = Date.now();
          ok(!r.timedOut, `podman run timed out\n${explain(r)}`);
          equal(r.code, 0, explain(r));
          match(r.stdout, /^\d+: tap0\s+inet 10\.0\.2\.100\/24 /m, explain(r));
          match(r.stdout, new RegExp(`^${hash}  /tmp/www/blob$`, "m"), "the download's sha256");
          match(
            r.stdout,
            new RegExp(`Name:\\s+${NAME.replaceAll(".", "\\.")}\\s+Address:\\s+${ANSWER4}\\s`),
            explain(r),
          );
          match(r.stdout, /^finished$/m);

          ok(!(fetched instanceof Error), `curl: ${fetched}`);
          equal(fetched.code, 0, `curl through 127.0.0.1:${PUBLISHED}: ${explain(fetched)}`);
          equal(
            await sha256Hex(await Deno.readFile(`${dir}/fetched`)),
            hash,
            "the upload's sha256",
          );

          // The network helper was running and ends with the container.
          ok(helpers.length > 0, "no network helper process found while the container ran");
          let left = await podman.helperPids();
          while (left.length > 0 && Date.now() - exitedAt < 3_000) {
            await sleep(50);
            left = await podman.helperPids();
          }
          deepEqual(left, [], "the network helper outlived the container by 3 s");

          // podman 4.3 probes the helper's features, then starts it.
          const calls = await podman.helperCalls();
          equal(calls.length, 2, JSON.stringify(calls));
          deepEqual(calls[0], ["--help"]);
          const real = calls[1];
          const sock = real[real.indexOf("--api-socket") + 1] ?? "";
          match(sock, new RegExp(`^${podman.tmpDir}/[0-9a-f]{64}\\.net$`));
          const netns = real[real.length - 2] ?? "";
          match(netns, /^\/run\/netns\/netns-[0-9a-f-]{36}$/);
          deepEqual(real.map((a) => a === sock ? "SOCKET" : a === netns ? "NETNS" : a), [
            "--mtu=65520",
            "--enable-sandbox",
            "--enable-seccomp",
            "--enable-ipv6",
            "-c",
            "-e",
            "3",
            "-r",
            "4",
            "--api-socket",
            "SOCKET",
            "--netns-type=path",
            "NETNS",
            "tap0",
          ]);
        });
      } finally {
        await stopAll(servers);
        await Deno.remove(dir, { recursive: true });
      }
    }),
);
