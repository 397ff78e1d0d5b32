/**
 * The sandbox in a running `tapir ns` (lib/sandbox.ts): every thread of the
 * process has no_new_privs and the seccomp filter once it serves, starting
 * a program is refused, a capture outside the declared directory is
 * refused by Landlock, and forwarding goes on; `--no-sandbox` leaves all
 * of that off. VM mode's counterpart is in vm_mode_test.ts.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { HOST_NS, withHostNs } from "../helpers/netns.ts";
import {
  background,
  explain,
  SANDBOX_CAP_EFF,
  stopAll,
  tapirNs,
  TapirRun,
  threadSandboxLines,
  waitListening,
} from "../helpers/tapir.ts";
import { SANDBOX_PROBE_ENV } from "../../lib/sandbox.ts";
import { ctlCall } from "../../lib/ctl.ts";

/**
 * The command's script: a TCP echo through the gateway (the loop runs, so
 * the sandbox is in: it is applied right before the loop starts), the
 * state of every thread of tapir (the command's parent), another echo.
 */
const SCRIPT = [
  `echo first | socat -t 5 - TCP:${HOST_NS.gw4}:9610`,
  `for t in /proc/$PPID/task/*; do echo "task $(grep -E '^(CapEff|NoNewPrivs|Seccomp):' $t/status | tr -s ' \\t\\n' ' ')"; done`,
  `echo second | socat -t 5 - TCP:${HOST_NS.gw4}:9610`,
].join("\n");

/** Runs tapir ns with `args` and the script against an echo server; returns its result. */
function withEcho(args: string[]) {
  return withHostNs(async (host) => {
    const echo = background(host, "socat", [
      "TCP-LISTEN:9610,bind=127.0.0.1,reuseaddr,fork",
      "EXEC:cat",
    ]);
    try {
      await waitListening(host, 9610);
      return await tapirNs(host, ["--config-net", ...args], SCRIPT, {
        [SANDBOX_PROBE_ENV]: "/bin/true",
      });
    } finally {
      await stopAll([echo]);
    }
  });
}

Deno.test("tapir ns confines every thread once it serves: capabilities, no_new_privs, seccomp; exec is refused; forwarding goes on", async () => {
  const r = await withEcho([]);
  equal(r.code, 0, explain(r));
  match(r.stdout, /^first\n/, explain(r));
  match(r.stdout, /\nsecond\n$/, "the echo after the threads were read");
  const threads = threadSandboxLines(r.stdout);
  ok(threads.length >= 4, `tapir's threads: ${JSON.stringify(threads)}`);
  for (const t of threads) {
    deepEqual(
      t,
      { noNewPrivs: 1, seccomp: 2, capEff: SANDBOX_CAP_EFF },
      `every thread: no_new_privs, the filter, CAP_NET_BIND_SERVICE only: ${
        JSON.stringify(threads)
      }`,
    );
  }
  match(r.stderr, /sandbox probe: exec \/bin\/true: refused: PermissionDenied/, explain(r));
});

Deno.test("tapir ns --no-sandbox stays unconfined", async () => {
  const r = await withEcho(["--no-sandbox"]);
  equal(r.code, 0, explain(r));
  match(r.stdout, /\nsecond\n$/, explain(r));
  const threads = threadSandboxLines(r.stdout);
  ok(threads.length >= 4, `tapir's threads: ${JSON.stringify(threads)}`);
  for (const t of threads) {
    equal(t.noNewPrivs, 0, JSON.stringify(threads));
    equal(t.seccomp, 0, JSON.stringify(threads));
    ok(
      BigInt(`0x${t.capEff}`) > BigInt(`0x${SANDBOX_CAP_EFF}`),
      `root's capabilities: ${t.capEff}`,
    );
  }
  ok(!r.stderr.includes("sandbox probe"), "no probe without a sandbox");
});

Deno.test("a capture may start in --pcap-dir and nowhere else; forwarding goes on", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-sandbox-" });
    await Deno.mkdir(`${dir}/caps`);
    const sock = `${dir}/api.sock`;
    const echo = background(host, "socat", [
      "TCP-LISTEN:9611,bind=127.0.0.1,reuseaddr,fork",
      "EXEC:cat",
    ]);
    const script = [
      `touch ${dir}/ready`,
      `while [ ! -e ${dir}/go ]; do sleep 0.05; done`,
      `echo after | socat -t 5 - TCP:${HOST_NS.gw4}:9611`,
    ].join("\n");
    const tapir = new TapirRun(
      host,
      dir,
      ["--api-socket", sock, "--pcap-dir", `${dir}/caps`],
      script,
    );
    try {
      await waitListening(host, 9611);
      await tapir.ready();
      const inside = await ctlCall(sock, { cmd: "pcap-start", path: `${dir}/caps/in.pcap` });
      ok(inside.ok, JSON.stringify(inside));
      ok((await ctlCall(sock, { cmd: "pcap-stop" })).ok);
      const outside = await ctlCall(sock, { cmd: "pcap-start", path: `${dir}/out.pcap` });
      ok(!outside.ok, "a capture outside --pcap-dir is refused");
      match(outside.desc, /cannot open .*out\.pcap: .*Permission denied/);
      ok(!(await Deno.stat(`${dir}/out.pcap`).then(() => true, () => false)), "no file made");
      await Deno.writeTextFile(`${dir}/go`, "");
      const { result, log } = await tapir.stop();
      equal(result.code, 0, explain(result) + log);
      match(result.stdout, /^after$/m, "the echo after the refusal");
      match(log, /Landlock ABI \d+/, "Landlock was in force");
      const header = (await Deno.readFile(`${dir}/caps/in.pcap`)).subarray(0, 4);
      equal(new DataView(header.buffer, header.byteOffset).getUint32(0, true), 0xa1b23c4d);
      ok(
        !(await Deno.stat(sock).then(() => true, () => false)),
        "the socket file is removed on exit",
      );
    } finally {
      await Deno.writeTextFile(`${dir}/go`, "").catch(() => {});
      await tapir.process.status;
      await stopAll([echo]);
      await Deno.remove(dir, { recursive: true });
    }
  }));
