/**
 * rootlesskit end to end: an unprivileged user runs rootlesskit with
 * `--net=slirp4netns --port-driver=slirp4netns`, its network helper being
 * tapir as slirp4netns (tests/helpers/engines.ts) or, with
 * TAPIR_ENGINE_REFERENCE=1, the real slirp4netns — the reference the
 * same checks must pass against.
 *
 * Everything runs in a throwaway host namespace whose only uplink is a dead
 * end (tests/helpers/netns.ts); the HTTP server and DNS stub the child
 * reaches through 10.0.2.2 and 10.0.2.3 listen on that namespace's loopback.
 * rootlesskit's child sees the host's file system and uses busybox.
 *
 * With TAPIR_RLK_TRACE=1 the helper's API socket is relayed through
 * `socat -v`, and the helper's argument vectors and API traffic are printed.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { nsArgs, run, runOk, type RunResult, withHostNs } from "../helpers/netns.ts";
import { explain, MAIN, stopAll, waitListening } from "../helpers/tapir.ts";
import { engineWrapper } from "../helpers/engines.ts";
import {
  asUserArgs,
  ensureRootlessUser,
  type HelperTrace,
  processAlive,
  readHelperTrace,
  ROOTLESS_USER,
  tracingHelper,
  withNetnsResolvConf,
  withTunForAll,
} from "../helpers/rootlesskit.ts";

const REFERENCE = Deno.env.get("TAPIR_ENGINE_REFERENCE") === "1";
const TRACE = Deno.env.get("TAPIR_RLK_TRACE") === "1";
const ENGINE = REFERENCE ? "the real slirp4netns" : "tapir as slirp4netns";

const DNS_STUB = new URL("../fixtures/dns_stub.py", import.meta.url).pathname;
/** Host-side HTTP server on the host namespace's loopback (10.0.2.2 from the child). */
const HTTP_PORT = 8000;
/** The child's server port (C) and where rootlesskit publishes it (127.0.0.1:H). */
const CHILD_PORT = 8080;
const PUBLISHED_PORT = 18080;
const NAME = "rootlesskit.tapir.test";
const NAME_A = "198.51.100.7";
const NAME_AAAA = "2001:db8::7";
/** rootlesskit and its helper must be gone this soon after the child is told to exit. */
const EXIT_WITHIN_MS = 2000;
/** Hard limit on one rootlesskit run; a hang fails instead of blocking. */
const RUN_LIMIT_MS = 60_000;
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
  return b;
}

async function sha256(b: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", b as Uint8Array<ArrayBuffer>));
  return Array.from(d, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** Starts `cmd args` in `ns` and waits for `marker` on its standard output (up to 5 s). */
async function startUntil(
  ns: string,
  cmd: string,
  args: string[],
  marker: string,
): Promise<Deno.ChildProcess> {
  const [c, a] = nsArgs(ns, cmd, args);
  const p = new Deno.Command(c, { args: a, stdin: "null", stdout: "piped", stderr: "null" })
    .spawn();
  const reader = p.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  const timer = setTimeout(() => p.kill("SIGKILL"), 5000);
  try {
    while (!seen.includes(marker)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${cmd} ${args.join(" ")} ended before printing "${marker}"`);
      seen += value;
    }
  } finally {
    clearTimeout(timer);
  }
  // Keep draining so the server never blocks on a full pipe.
  (async () => {
    while (!(await reader.read().catch(() => ({ done: true }))).done) { /* discard */ }
  })();
  return p;
}

/** Resolves with `p`'s status, or with null after `ms`. */
async function statusWithin(p: Deno.ChildProcess, ms: number): Promise<Deno.CommandStatus | null> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<null>((r) => timer = setTimeout(() => r(null), ms));
  try {
    return await Promise.race([p.status, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The command rootlesskit runs: the checks, then a server on CHILD_PORT until DIR/stop. */
function childScript(dir: string): string {
  return [
    `echo "== id"; id -u`,
    `echo "== addr"; ip -4 -o addr show dev tap0`,
    `echo "== resolv.conf"; cat /etc/resolv.conf`,
    `echo "== http"; timeout 20 busybox wget -q -O - http://10.0.2.2:${HTTP_PORT}/blob | sha256sum`,
    `echo "== dns"; timeout 10 busybox nslookup ${NAME} 10.0.2.3`,
    `echo "== serve"`,
    `busybox httpd -f -p ${CHILD_PORT} -h ${dir}/child-www & pid=$!`,
    `until ss -Hltn "sport = :${CHILD_PORT}" | grep -q .; do sleep 0.05; done`,
    `cat ${dir}/state/child_pid >${dir}/ready.tmp; echo >>${dir}/ready.tmp; echo $$ >>${dir}/ready.tmp`,
    `mv ${dir}/ready.tmp ${dir}/ready`,
    `while [ ! -e ${dir}/stop ]; do sleep 0.05; done`,
    `kill $pid; wait`,
    `echo "== done"`,
  ].join("\n");
}

/** The child's output split at its "== NAME" lines. */
function sections(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  let cur = "";
  for (const line of stdout.split("\n")) {
    const m = /^== (.+)$/.exec(line);
    if (m) out[cur = m[1]] = "";
    else if (cur !== "") out[cur] += `${line}\n`;
  }
  return out;
}

function describe(r: RunResult, trace: HelperTrace): string {
  const calls = trace.calls.map((c) => `  ${JSON.stringify(c)}`).join("\n");
  return `${explain(r)}\n--- helper calls\n${calls}\n--- api\n${trace.api}`;
}

Deno.test(`rootlesskit --net=slirp4netns --port-driver=slirp4netns as an unprivileged user, with ${ENGINE}: tap address, HTTP via 10.0.2.2, DNS via 10.0.2.3, published port, clean exit`, () =>
  withHostNs((host) =>
    withNetnsResolvConf(host, "127.0.0.1", () =>
      withTunForAll(async () => {
        await ensureRootlessUser();
        const user = ROOTLESS_USER;
        const dir = await Deno.makeTempDir({ prefix: "tapir-rlk-" });
        const servers: Deno.ChildProcess[] = [];
        let trace: HelperTrace = { calls: [], pid: null, api: "", socatPid: null };
        try {
          // The user's directory: helper wrappers, Deno cache, the child's
          // files; the host's HTTP files too (served by root).
          for (const d of ["bin", "engine", "deno", "www", "child-www"]) {
            await Deno.mkdir(`${dir}/${d}`);
          }
          const blob = randomBytes((1 + Math.floor(Math.random() * 3)) * 1024 * 1024 + 12345);
          await Deno.writeFile(`${dir}/www/blob`, blob);
          const page = randomBytes(256 * 1024 + 77);
          await Deno.writeFile(`${dir}/child-www/page`, page);
          const target = REFERENCE
            ? "/usr/bin/slirp4netns"
            : await engineWrapper("slirp4netns", `${dir}/engine`, `${dir}/deno`);
          const helper = await tracingHelper(`${dir}/bin`, target, TRACE);
          await run("chown", ["-R", `${user}:${user}`, dir]);
          await Deno.chmod(dir, 0o755);

          if (!REFERENCE) {
            const [c, a] = asUserArgs(host, user, "test", [
              "-r",
              MAIN,
              "-a",
              "-x",
              Deno.execPath(),
            ]);
            equal(
              (await run(c, a)).code,
              0,
              `${user} must be able to read ${MAIN} and run ${Deno.execPath()}`,
            );
          }

          // The interpreter itself (not a shim that forks), so killing it stops the server.
          const python = (await runOk("python3", ["-c", "import sys; print(sys.executable)"]))
            .trim();
          servers.push(
            await startUntil(
              host,
              python,
              [DNS_STUB, "127.0.0.1", NAME_A, NAME_AAAA],
              "listening",
            ),
          );
          const [hc, ha] = nsArgs(host, python, [
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            `${dir}/www`,
            `${HTTP_PORT}`,
          ]);
          servers.push(
            new Deno.Command(hc, { args: ha, stdin: "null", stdout: "null", stderr: "null" })
              .spawn(),
          );
          await waitListening(host, HTTP_PORT);

          const [cmd, argv] = asUserArgs(host, user, "rootlesskit", [
            "--state-dir",
            `${dir}/state`,
            "--net=slirp4netns",
            `--slirp4netns-binary=${helper}`,
            "--port-driver=slirp4netns",
            "-p",
            `127.0.0.1:${PUBLISHED_PORT}:${CHILD_PORT}/tcp`,
            "sh",
            "-c",
            childScript(dir),
          ]);
          const proc = new Deno.Command(cmd, {
            args: argv,
            clearEnv: true,
            env: { PATH, HOME: dir, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          const output = proc.output().then((o): RunResult => ({
            code: o.code,
            stdout: new TextDecoder().decode(o.stdout),
            stderr: new TextDecoder().decode(o.stderr),
          }));
          const limit = setTimeout(() => proc.kill("SIGKILL"), RUN_LIMIT_MS);
          try {
            // The child is ready, or rootlesskit ended early (then fail with its output).
            let ready = "";
            while (ready === "") {
              ready = await Deno.readTextFile(`${dir}/ready`).catch(() => "");
              if (ready === "" && (await statusWithin(proc, 50)) !== null) {
                trace = await readHelperTrace(`${dir}/bin`);
                throw new Error(`rootlesskit ended early\n${describe(await output, trace)}`);
              }
            }
            const childPids = ready.trim().split("\n").map(Number);

            // Host side: the published port reaches the child's server.
            const got = `${dir}/got`;
            const [cc, ca] = nsArgs(host, "curl", [
              "-sS",
              "--max-time",
              "10",
              "-o",
              got,
              `http://127.0.0.1:${PUBLISHED_PORT}/page`,
            ]);
            const curl = await run(cc, ca);
            trace = await readHelperTrace(`${dir}/bin`);
            const helperPid = trace.pid;

            // The child exits; rootlesskit and the helper follow promptly.
            const t0 = Date.now();
            await Deno.writeTextFile(`${dir}/stop`, "");
            const status = await statusWithin(proc, 10_000);
            if (status === null) proc.kill("SIGKILL");
            const r = await output;
            const why = describe(r, trace);
            ok(
              status !== null,
              `rootlesskit still runs 10 s after its child was told to exit\n${why}`,
            );
            let left = [helperPid, ...childPids].filter((p): p is number => p !== null);
            while (left.length > 0 && Date.now() - t0 < EXIT_WITHIN_MS + 1000) {
              left = (await Promise.all(left.map(async (p) => (await processAlive(p)) ? p : 0)))
                .filter((p) => p !== 0);
              if (left.length > 0) await new Promise((res) => setTimeout(res, 20));
            }
            const elapsed = Date.now() - t0;
            if (TRACE) {
              console.log(`helper calls:\n${trace.calls.map((c) => JSON.stringify(c)).join("\n")}`);
              console.log(`api traffic:\n${trace.api}`);
              console.log(`rootlesskit and helper gone ${elapsed} ms after the stop`);
            }

            equal(r.code, 0, why);
            equal(curl.code, 0, `curl via 127.0.0.1:${PUBLISHED_PORT}: ${curl.stderr}\n${why}`);
            deepEqual(
              await sha256(await Deno.readFile(got)),
              await sha256(page),
              `the child's file through 127.0.0.1:${PUBLISHED_PORT}\n${why}`,
            );

            // The helper was called as rootlesskit 1.1 calls slirp4netns.
            const last = trace.calls.at(-1) ?? [];
            ok(trace.calls.length >= 2, why);
            deepEqual(trace.calls[0], ["--help"], why);
            ok(last.includes("--api-socket") && last.at(-1) === "tap0", why);
            ok(helperPid !== null, `the helper wrote no pid\n${why}`);

            const s = sections(r.stdout);
            match(s["id"] ?? "", /^0$/m, `root inside its user namespace\n${why}`);
            match(s["addr"] ?? "", /\binet 10\.0\.2\.100\/24\b/, `tap0 has 10.0.2.100\n${why}`);
            match(s["resolv.conf"] ?? "", /^nameserver 10\.0\.2\.3$/m, why);
            equal(
              (s["http"] ?? "").trim(),
              `${await sha256(blob)}  -`,
              `the host's file via 10.0.2.2 (${blob.length} bytes)\n${why}`,
            );
            match(
              s["dns"] ?? "",
              new RegExp(`^Address: ${NAME_A.replaceAll(".", "\\.")}$`, "m"),
              why,
            );
            match(s["dns"] ?? "", new RegExp(`^Address: ${NAME_AAAA}$`, "m"), why);
            ok("done" in s, `the child ran to its end\n${why}`);

            deepEqual(
              left,
              [],
              `still running ${elapsed} ms after the child was told to exit\n${why}`,
            );
            ok(elapsed <= EXIT_WITHIN_MS, `gone after ${elapsed} ms\n${why}`);
          } finally {
            clearTimeout(limit);
            try {
              proc.kill("SIGKILL");
            } catch { /* already gone */ }
            await proc.status;
          }
        } finally {
          trace = await readHelperTrace(`${dir}/bin`);
          for (const pid of [trace.pid, trace.socatPid].filter((p) => p !== null)) {
            const cmdline = await Deno.readTextFile(`/proc/${pid}/cmdline`).catch(() => "");
            if (/slirp4netns|socat/.test(cmdline) && await processAlive(pid)) {
              try {
                Deno.kill(pid, "SIGKILL");
              } catch { /* gone meanwhile */ }
            }
          }
          await stopAll(servers);
          await Deno.remove(dir, { recursive: true });
        }
      }))
  ));
