/**
 * The pasta contract as podman 5 uses it: tapir started under the name
 * `pasta` with podman's argument list, attached to a namespace podman made.
 *
 * Everything runs in a host namespace from `withHostNs` (a dead-end
 * uplink); the served namespace is a `/run/netns` one the test makes and
 * deletes. Servers run on the host namespace's addresses, and DNS goes to a
 * stub on its loopback.
 *
 * @module
 */

import { equal, match, ok } from "node:assert/strict";
import { engineWrapper } from "../helpers/engines.ts";
import { HOST_NS, nsArgs, run, runOk, withHostNs } from "../helpers/netns.ts";
import { processAlive, withNetnsResolvConf } from "../helpers/rootlesskit.ts";
import { explain, waitListening } from "../helpers/tapir.ts";

const DNS_STUB = new URL("../fixtures/dns_stub.py", import.meta.url).pathname;
const HOST_HTTP_PORT = 8097;
const PUBLISHED_PORT = 18082;
const NAME_A = "192.0.2.77";

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Starts `cmd args` in `ns`, waiting for `line` on its stdout when given. */
async function serve(ns: string, cmd: string, args: string[], line?: string) {
  const [c, a] = nsArgs(ns, cmd, args);
  const child = new Deno.Command(c, {
    args: a,
    stdin: "null",
    stdout: line === undefined ? "null" : "piped",
    stderr: "null",
  }).spawn();
  if (line !== undefined) {
    const reader = child.stdout.getReader();
    let seen = "";
    while (!seen.includes(line)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${cmd} ended before '${line}'`);
      seen += new TextDecoder().decode(value);
    }
    // Keep reading: a closed pipe would end the server with EPIPE if it
    // writes again — even the newline after the line seen (it did: the DNS
    // stub died so, now and then, and the namespace's lookups were refused).
    (async () => {
      try {
        while (!(await reader.read()).done) { /* drain */ }
      } catch { /* the server ended */ }
    })();
  }
  return child;
}

Deno.test("pasta contract (podman 5): returns 0 once the namespace is served, forwards, ends when the namespace path is deleted", () =>
  withHostNs((host) =>
    withNetnsResolvConf(host, "127.0.0.1", async () => {
      const dir = await Deno.makeTempDir({ prefix: "tapir-pasta-" });
      const target = `tapir-pasta-${Deno.pid}`;
      const servers: Deno.ChildProcess[] = [];
      let daemonPid = 0;
      try {
        await Deno.mkdir(`${dir}/www`);
        await Deno.mkdir(`${dir}/inside`);
        const payload = crypto.getRandomValues(new Uint8Array(65536));
        const big = new Uint8Array(1 << 20);
        for (let off = 0; off < big.length; off += payload.length) big.set(payload, off);
        big[12345] ^= 0x5a;
        await Deno.writeFile(`${dir}/www/file`, big);
        await Deno.writeFile(`${dir}/inside/file`, big.subarray(0, 300_000));
        const python = (await runOk("python3", ["-c", "import sys; print(sys.executable)"])).trim();
        servers.push(
          await serve(host, python, [DNS_STUB, "127.0.0.1", NAME_A, "2001:db8::77"], "listening"),
        );
        servers.push(
          await serve(host, python, [
            "-m",
            "http.server",
            "--bind",
            HOST_NS.addr4,
            "--directory",
            `${dir}/www`,
            `${HOST_HTTP_PORT}`,
          ]),
        );
        await waitListening(host, HOST_HTTP_PORT);

        // podman 5 makes the namespace under /run/netns, then calls pasta.
        await runOk("ip", ["netns", "add", target]);
        const pasta = await engineWrapper("pasta", dir);
        const argv = [
          "--config-net",
          "--dns-forward",
          "169.254.1.1",
          "-t",
          `${PUBLISHED_PORT}-${PUBLISHED_PORT}:80-80`,
          "-u",
          "none",
          "-T",
          "none",
          "-U",
          "none",
          "--no-map-gw",
          "--quiet",
          "--netns",
          `/run/netns/${target}`,
          "--map-guest-addr",
          "169.254.1.2",
          "--pid",
          `${dir}/pasta.pid`,
        ];
        // stdout and stderr on one pipe, read to the end, as podman does.
        const quoted = [pasta, ...argv].map((w) => `'${w}'`).join(" ");
        const [c, a] = nsArgs(host, "sh", ["-c", `exec ${quoted} 2>&1`]);
        const started = performance.now();
        const first = await run(c, a, { stdin: "null", signal: AbortSignal.timeout(30_000) });
        const elapsed = performance.now() - started;
        console.log(
          `pasta contract: first process returned ${first.code} after ${elapsed.toFixed(0)} ms`,
        );
        equal(first.code, 0, explain(first));
        equal(first.stdout, "", "nothing printed with --quiet");
        daemonPid = Number((await Deno.readTextFile(`${dir}/pasta.pid`)).trim());
        ok(daemonPid > 0 && await processAlive(daemonPid), `daemon ${daemonPid} runs`);

        // The namespace is configured (the host's address copied) and reaches the host.
        const inTarget = (cmd: string, args: string[]) =>
          run("ip", ["netns", "exec", target, cmd, ...args], {
            signal: AbortSignal.timeout(20_000),
          });
        match(
          (await inTarget("ip", ["-4", "-br", "addr"])).stdout,
          new RegExp(`${HOST_NS.addr4}/24`),
        );
        const got = await inTarget("curl", [
          "-sf",
          "--max-time",
          "10",
          "-o",
          `${dir}/got`,
          `http://169.254.1.2:${HOST_HTTP_PORT}/file`,
        ]);
        equal(got.code, 0, explain(got));
        equal(await sha256(`${dir}/got`), await sha256(`${dir}/www/file`));
        const dns = await inTarget("busybox", ["nslookup", "tapir.test", "169.254.1.1"]);
        match(dns.stdout, new RegExp(`Address:\\s+${NAME_A.replaceAll(".", "\\.")}`), explain(dns));

        // -t: a host client reaches the namespace's server through the published port.
        const [sc, sa] = ["ip", [
          "netns",
          "exec",
          target,
          python,
          "-m",
          "http.server",
          "--bind",
          "0.0.0.0",
          "--directory",
          `${dir}/inside`,
          "80",
        ]];
        servers.push(
          new Deno.Command(sc, { args: sa, stdin: "null", stdout: "null", stderr: "null" }).spawn(),
        );
        for (let i = 0; i < 100; i++) {
          const ss = await inTarget("ss", ["-Hltn", "sport = :80"]);
          if (ss.stdout.trim() !== "") break;
          await new Promise((r) => setTimeout(r, 50));
        }
        const [fc, fa] = nsArgs(host, "curl", [
          "-sf",
          "--max-time",
          "10",
          "-o",
          `${dir}/fwd`,
          `http://127.0.0.1:${PUBLISHED_PORT}/file`,
        ]);
        const fwd = await run(fc, fa);
        equal(fwd.code, 0, explain(fwd));
        equal(await sha256(`${dir}/fwd`), await sha256(`${dir}/inside/file`));

        // Deleting the namespace path ends the daemon within a second.
        const deleted = performance.now();
        await runOk("ip", ["netns", "del", target]);
        while (await processAlive(daemonPid) && performance.now() - deleted < 1000) {
          await new Promise((r) => setTimeout(r, 10));
        }
        const gone = performance.now() - deleted;
        console.log(`pasta contract: daemon gone ${gone.toFixed(0)} ms after the path was deleted`);
        ok(
          !(await processAlive(daemonPid)),
          `daemon still runs ${gone.toFixed(0)} ms after deletion`,
        );
      } finally {
        if (daemonPid > 0 && await processAlive(daemonPid)) Deno.kill(daemonPid, "SIGKILL");
        for (const s of servers) {
          try {
            s.kill("SIGKILL");
          } catch { /* gone */ }
          await s.status;
        }
        await run("ip", ["netns", "del", target]);
        await Deno.remove(dir, { recursive: true });
      }
    })
  ));
