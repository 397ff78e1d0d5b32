/**
 * VM mode end to end: a real Linux guest under QEMU (TCG) gets its network
 * from the backend over QEMU's `-netdev stream` UNIX socket.
 *
 * Everything runs inside a throwaway host namespace whose only uplink is a
 * dead end (tests/helpers/netns.ts): the backend, QEMU, and the HTTP server on
 * the namespace's loopback that the guest reaches through the gateway address.
 * The guest (tests/vm/build.sh, tests/vm/guest/init) takes its parameters from
 * the kernel command line, runs its steps and reports each on the serial
 * console as `TAPIR-VM STEP name ok|fail|skip key=value...`; this test reads
 * those lines, plays the host's part of the inbound step when the guest says
 * it listens, and then checks every step against what the host side saw.
 *
 * The backend is tapir (`tapir vm --socket PATH --loopback-only ...`) unless
 * `TAPIR_VM_BACKEND=passt`, which runs Debian's passt as an unprivileged user
 * instead: the same socket protocol, used to validate the guest and this test.
 *
 * @module
 */

import { deepEqual, equal, match, ok } from "node:assert/strict";
import { createHash } from "node:crypto";
import { HOST_NS, nsArgs, run, runOk, withHostNs } from "../helpers/netns.ts";
import { MAIN, statsFromLog } from "../helpers/tapir.ts";
import { ctlCall } from "../../lib/ctl.ts";
import type { StatsReport } from "../../lib/tapir.ts";
import { buildGuest, guestAppend, qemuArgs } from "./qemu.ts";

/** Which program serves the guest's network. */
const BACKEND = Deno.env.get("TAPIR_VM_BACKEND") ?? "tapir";
/** Unprivileged user that runs passt (it refuses to run as root). */
const PASST_USER = "tapirtest";

const GUEST = { addr: "10.0.2.15", prefix: 24, gw: "10.0.2.2" } as const;
/** The options that give the guest its address, prefix and gateway. */
const GUEST_ADDRESSING = ["-a", GUEST.addr, "-n", `${GUEST.prefix}`, "-g", GUEST.gw];

/** `tapir vm` as the tests run it (loopback only, the guest's addressing) with `more` options. */
function tapirVm(more: string[]): [string, ...string[]] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    MAIN,
    "vm",
    "--loopback-only",
    ...GUEST_ADDRESSING,
    ...more,
  ];
}
const HTTP_PORT = 8080;
const INBOUND_PORT = 10022;
// Odd sizes, so a transfer cut at a round boundary shows.
const DOWNLOAD_BYTES = 10 * 1024 * 1024 + 12_345;
const UPLOAD_BYTES = 1024 * 1024 + 4_321;
/** Both ways over vhost-user. */
const VHOST_TRANSFER_BYTES = 64 * 1024 * 1024 + 9_876;
const INBOUND_BYTES = 1024 * 1024 + 777;
/**
 * The guest must have finished by then, or everything is killed. A run takes
 * about 15 s (boot is about 12 s under TCG); the inbound fetch may add its own
 * 60 s limit, so the test ends well within 5 minutes even when things hang.
 */
const DEADLINE_MS = 150_000;

/**
 * How long the backend may take to exit after QEMU did: on a loaded 2-core
 * machine its last log lines and the counters at exit take a while.
 */
const BACKEND_EXIT_MS = 10_000;

/** Ports of the relay's source and sink on host loopback. */
const RELAY_SRC_PORT = 10100;
const RELAY_DST_PORT = 10101;
/** What each relayed connection carries, in order, per address family. */
const RELAY_SIZES = [0, 1, 1024 * 1024, 1024 * 1024 * 1024];
/** Seconds one relayed connection may take inside the guest. */
const RELAY_WAIT_S = 600;
/** The relay run's deadline: boot, then 2 × 1 GiB each way through a TCG guest. */
const RELAY_DEADLINE_MS = 1_500_000;

/** What the relay's host side printed for one connection. */
interface RelayEnd {
  side: "sent" | "got";
  n: number;
  family: number;
  bytes: number;
  sha256: string;
  error?: string;
}

const HERE = new URL(".", import.meta.url).pathname;
const dec = new TextDecoder();

/** One `TAPIR-VM STEP` line: status and its key=value details. */
interface Step {
  status: string;
  detail: string;
  kv: Record<string, string>;
}

function parseStep(line: string): [string, Step] | null {
  const m = /^TAPIR-VM STEP (\S+) (ok|fail|skip) ?(.*)$/.exec(line);
  if (!m) return null;
  const kv: Record<string, string> = {};
  for (const word of m[3].split(" ")) {
    const eq = word.indexOf("=");
    if (eq > 0) kv[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return [m[1], { status: m[2], detail: m[3], kv }];
}

/** Yields the lines of a byte stream, without `\r` (the serial console sends CRLF). */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let nl;
    while ((nl = rest.indexOf("\n")) >= 0) {
      yield rest.slice(0, nl).replace(/\r/g, "");
      rest = rest.slice(nl + 1);
    }
  }
  if (rest !== "") yield rest.replace(/\r/g, "");
}

/** Collects a stream as text (bounded, for failure messages). */
async function collect(stream: ReadableStream<Uint8Array>, limit = 64 * 1024): Promise<string> {
  let text = "";
  for await (const chunk of stream) {
    if (text.length < limit) text += dec.decode(chunk);
  }
  return text.slice(0, limit);
}

/** Writes `bytes` random bytes to `path`; resolves to their sha256. */
async function writeRandomFile(path: string, bytes: number): Promise<string> {
  const hash = createHash("sha256");
  const file = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(65536);
    for (let left = bytes; left > 0;) {
      const part = chunk.subarray(0, Math.min(left, chunk.length));
      crypto.getRandomValues(part);
      hash.update(part);
      for (let off = 0; off < part.length;) off += await file.write(part.subarray(off));
      left -= part.length;
    }
  } finally {
    file.close();
  }
  return hash.digest("hex");
}

async function ensurePasstUser(): Promise<void> {
  if ((await run("id", ["-u", PASST_USER])).code === 0) return;
  await runOk("useradd", ["-M", "-s", "/bin/sh", PASST_USER]);
}

/** The backend's argument vector, run inside `host`, serving the guest on `socket`. */
async function backendArgs(
  host: string,
  dir: string,
  socket: string,
  mtu: number,
  vhost: boolean,
): Promise<[string, string[]]> {
  const common = [
    "-m",
    `${mtu}`,
    "-t",
    `${INBOUND_PORT}`,
    "-f",
    // With vhost-user a second guest connects after the first: no -1.
    ...(vhost ? [] : ["-1"]),
  ];
  if (BACKEND === "tapir") {
    const [deno, ...args] = tapirVm([
      "--socket",
      socket,
      "-d", // the counters at exit show what the data path did
      ...(vhost ? ["--vhost-user"] : []),
      ...common,
    ]);
    return nsArgs(host, deno, args);
  }
  if (BACKEND !== "passt") throw new Error(`TAPIR_VM_BACKEND must be tapir or passt`);
  if (vhost) throw new Error("the vhost-user test runs against tapir only");
  await ensurePasstUser();
  await runOk("chown", [PASST_USER, dir]);
  // Debian 12's passt sends the guest's echo requests to the gateway address
  // itself rather than to host loopback, so the host namespace (which the
  // test made) holds that address and answers them.
  await runOk(...nsArgs(host, "ip", ["addr", "add", `${GUEST.gw}/32`, "dev", "lo"]));
  return nsArgs(host, "setpriv", [
    "--reuid",
    PASST_USER,
    "--regid",
    PASST_USER,
    "--clear-groups",
    "passt",
    "--socket",
    socket,
    ...GUEST_ADDRESSING,
    ...common,
  ]);
}

async function waitForSocket(path: string, backend: Deno.ChildProcess): Promise<void> {
  let exited = false;
  backend.status.then(() => exited = true);
  for (let i = 0; i < 300; i++) {
    try {
      if ((await Deno.stat(path)).isSocket) return;
    } catch { /* not yet */ }
    if (exited) throw new Error("the backend exited before it listened");
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the backend did not create ${path} within 30 s`);
}

function kill(p: Deno.ChildProcess | null): void {
  try {
    p?.kill("SIGKILL");
  } catch { /* already gone */ }
}

/**
 * At MTU 65520 the guest's segments are as big as frames get; at 1500 (a
 * VM's usual MTU) they are MSS-sized, the stream socket carries no offload
 * metadata, and tapir's RSC coalescer merges them.
 */
for (const mtu of [65520, 1500]) {
  Deno.test(
    `a QEMU guest on ${BACKEND} at MTU ${mtu}: DHCP, ping, 10 MiB download, 1 MiB upload, inbound -t`,
    (t) => vmTest(t, { mtu, relay: false, vhost: false }),
  );
}

/**
 * vhost-user: the guest's virtqueues in memory QEMU shares with tapir, at
 * MTU 1500 so that TCP needs segmentation offload both ways. The
 * guest has legacy interrupts (`vectors=0`): Debian's QEMU 7.2 under TCG
 * crashes in `msix_set_vector_notifiers` when a Linux guest starts a
 * vhost-user device with MSI-X. After the first guest powers off, a second
 * QEMU connects to the same tapir and gets its lease and pings.
 */
Deno.test(
  `a QEMU guest on tapir over vhost-user at MTU 1500: DHCP, ping, 64 MiB download and upload, inbound -t; a second guest reconnects`,
  { ignore: BACKEND !== "tapir" },
  (t) => vmTest(t, { mtu: 1500, relay: false, vhost: true }),
);

/**
 * The transfer set of the namespace tests (tests/e2e/tcp_test.ts), through a
 * VM at MTU 1500: the guest pipes each download from host loopback straight
 * into an upload to it, over IPv4 and IPv6, so every byte crosses tapir down
 * and back up and the host compares the two ends.
 */
Deno.test(
  `a QEMU guest on ${BACKEND} at MTU 1500 relays 0 B, 1 B, 1 MiB and 1 GiB down and back up, IPv4 and IPv6`,
  (t) => vmTest(t, { mtu: 1500, relay: true, vhost: false }),
);

/** What one VM test runs. */
interface VmTestOptions {
  /** The guest's MTU. */
  mtu: number;
  /** The relay step instead of the others. */
  relay: boolean;
  /** vhost-user instead of the stream socket; a second guest reconnects. */
  vhost: boolean;
}

/** "N MiB", for step names. */
function mib(bytes: number): string {
  return `${Math.floor(bytes / (1024 * 1024))} MiB`;
}

async function vmTest(t: Deno.TestContext, opts: VmTestOptions): Promise<void> {
  const { mtu, relay, vhost } = opts;
  const downloadBytes = vhost ? VHOST_TRANSFER_BYTES : DOWNLOAD_BYTES;
  const uploadBytes = vhost ? VHOST_TRANSFER_BYTES : UPLOAD_BYTES;
  const guest = await buildGuest();
  const deadlineMs = relay ? RELAY_DEADLINE_MS : DEADLINE_MS;
  await withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-vm-" });
    await Deno.chmod(dir, 0o755);
    const socket = `${dir}/guest.sock`;
    const downloadSha = await writeRandomFile(`${dir}/download`, downloadBytes);
    const token = Array.from(
      crypto.getRandomValues(new Uint8Array(8)),
      (b) => b.toString(16).padStart(2, "0"),
    ).join("");
    // Ping sockets for the backend's echo translation.
    await runOk(...nsArgs(host, "sysctl", ["-qw", "net.ipv4.ping_group_range=0 2147483647"]));

    let server: Deno.ChildProcess | null = null;
    let relayPeer: Deno.ChildProcess | null = null;
    const relayEnds: RelayEnd[] = [];
    let backend: Deno.ChildProcess | null = null;
    let qemu: Deno.ChildProcess | null = null;
    const pending: Promise<unknown>[] = [];
    const serial: string[] = [];
    const steps = new Map<string, Step>();
    const uploads: { bytes: number; sha256: string }[] = [];
    let inboundFetch: Promise<{ bytes: number; sha256: string } | string> | null = null;
    let backendLog = Promise.resolve("");
    let qemuLog = Promise.resolve("");
    const deadline = setTimeout(() => {
      serial.push(`(test: deadline of ${deadlineMs} ms passed, killing everything)`);
      kill(qemu);
      kill(backend);
      kill(server);
      kill(relayPeer);
    }, deadlineMs);
    try {
      // The host's HTTP server on the namespace's loopback.
      const [sc, sa] = hostPeerArgs(host, ["serve", `${HTTP_PORT}`, `${dir}/download`]);
      server = new Deno.Command(sc, { args: sa, stdin: "null", stdout: "piped", stderr: "inherit" })
        .spawn();
      let listening: (line: string) => void = () => {};
      const serverReady = new Promise<string>((resolve) => listening = resolve);
      pending.push((async () => {
        for await (const line of lines(server.stdout)) {
          const msg = JSON.parse(line);
          if (msg.upload) uploads.push(msg.upload);
          else listening(line);
        }
        listening("(the host server exited)");
      })());
      equal(await serverReady, JSON.stringify({ listening: HTTP_PORT }), "the host server listens");
      if (relay) {
        const [rc, ra] = hostPeerArgs(
          host,
          ["relay", `${RELAY_SRC_PORT}`, `${RELAY_DST_PORT}`, ...RELAY_SIZES, ...RELAY_SIZES].map(
            String,
          ),
        );
        relayPeer = new Deno.Command(rc, {
          args: ra,
          stdin: "null",
          stdout: "piped",
          stderr: "inherit",
        }).spawn();
        let relayListening: (line: string) => void = () => {};
        const relayReady = new Promise<string>((resolve) => relayListening = resolve);
        const out = relayPeer.stdout;
        pending.push((async () => {
          for await (const line of lines(out)) {
            const msg = JSON.parse(line);
            if (msg.relay) relayEnds.push(msg.relay);
            else relayListening(line);
          }
          relayListening("(the relay exited)");
        })());
        equal(
          await relayReady,
          JSON.stringify({ listening: RELAY_SRC_PORT }),
          "the host's relay listens",
        );
      }

      const [bc, ba] = await backendArgs(host, dir, socket, mtu, vhost);
      backend = new Deno.Command(bc, { args: ba, stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn();
      const backendOut = collect(backend.stdout);
      // passt also tries syslog, which this machine lacks, once per message.
      backendLog = Promise.all([backendOut, collect(backend.stderr)]).then(([o, e]) =>
        (o + e).replace(/^Failed to send \d+ bytes to syslog\n/gm, "")
      );
      try {
        await waitForSocket(socket, backend);
      } catch (err) {
        kill(backend);
        throw new Error(`${(err as Error).message}\n--- ${BACKEND}\n${await backendLog}`);
      }

      const params = {
        steps: relay ? "dhcp,relay" : "dhcp,ping,download,upload,inbound",
        addr: GUEST.addr,
        prefix: GUEST.prefix,
        gw: GUEST.gw,
        mtu,
        http_port: HTTP_PORT,
        dl_path: "/download",
        dl_size: downloadBytes,
        dl_sha256: downloadSha,
        up_path: "/upload",
        up_size: uploadBytes,
        in_port: INBOUND_PORT,
        in_size: INBOUND_BYTES,
        relay_src: RELAY_SRC_PORT,
        relay_dst: RELAY_DST_PORT,
        relay_count: relay ? RELAY_SIZES.length : 0,
        relay_families: "4,6",
        gw6: HOST_NS.gw6,
        relay_wait: RELAY_WAIT_S,
        wait: 60,
        deadline: Math.max(10, Math.floor(deadlineMs / 1000) - 20),
      };
      const [qc, qa] = nsArgs(
        host,
        "qemu-system-x86_64",
        qemuArgs(guest, guestAppend(params), socket, vhost),
      );
      qemu = new Deno.Command(qc, { args: qa, stdin: "null", stdout: "piped", stderr: "piped" })
        .spawn();
      qemuLog = collect(qemu.stderr);
      for await (const line of lines(qemu.stdout)) {
        serial.push(line);
        const step = parseStep(line);
        if (step) steps.set(step[0], step[1]);
        if (step?.[0] === "inbound-listen" && step[1].status === "ok") {
          // The guest listens: connect through the backend's -t forward.
          const [fc, fa] = hostPeerArgs(host, [
            "fetch",
            `${INBOUND_PORT}`,
            token,
            step[1].kv.bytes,
          ]);
          inboundFetch = run(fc, fa).then((r) =>
            r.code === 0 ? JSON.parse(r.stdout) : `fetch failed (${r.code}): ${r.stderr}`
          );
        }
      }
      // The guest powers off after DONE, and QEMU exits; or the deadline killed it.
      const qemuStatus = await qemu.status;
      const inbound = inboundFetch ? await inboundFetch : "the guest never listened";
      // vhost-user: the same tapir serves the next guest, then is told to stop.
      const second: string[] = [];
      if (vhost) {
        const append2 = guestAppend({ ...params, steps: "dhcp,ping" });
        const [qc2, qa2] = nsArgs(
          host,
          "qemu-system-x86_64",
          qemuArgs(guest, append2, socket, true),
        );
        qemu = new Deno.Command(qc2, {
          args: qa2,
          stdin: "null",
          stdout: "piped",
          stderr: "inherit",
        })
          .spawn();
        for await (const line of lines(qemu.stdout)) second.push(line);
        second.push(`(QEMU exit status ${(await qemu.status).code})`);
        backend.kill("SIGTERM");
      }
      let grace: ReturnType<typeof setTimeout> | undefined;
      const backendStatus = await Promise.race([
        backend.status,
        new Promise<null>((r) => grace = setTimeout(() => r(null), BACKEND_EXIT_MS)),
      ]);
      clearTimeout(grace);
      kill(backend);
      kill(server);
      kill(relayPeer);
      await Promise.all(pending);
      const context = `\n--- serial\n${serial.join("\n")}\n--- qemu stderr\n${await qemuLog}` +
        `\n--- ${BACKEND}\n${await backendLog}`;

      const okStep = (name: string): Step => {
        const step = steps.get(name);
        equal(step?.status, "ok", `step ${name}${context}`);
        return step!;
      };

      await t.step("the guest boots, loads virtio-net and finishes its steps", () => {
        ok(serial.some((l) => l.startsWith("TAPIR-VM BEGIN")), `no BEGIN line${context}`);
        match(
          serial.join("\n"),
          /^TAPIR-VM DONE passed=\d+ failed=0 skipped=0$/m,
          `no "TAPIR-VM DONE ... failed=0 skipped=0" line${context}`,
        );
        equal(qemuStatus.code, 0, `QEMU exit status ${qemuStatus.code}${context}`);
        okStep("modules");
        okStep("link");
      });
      await t.step("DHCP gives the configured address, prefix, gateway and MTU", () => {
        const dhcp = okStep("dhcp");
        equal(dhcp.kv.addr, GUEST.addr);
        equal(dhcp.kv.prefix, `${GUEST.prefix}`);
        equal(dhcp.kv.gw, GUEST.gw);
        equal(dhcp.kv.mtu, `${mtu}`);
      });
      if (relay) {
        await t.step("every relayed byte came back: same size and sha256 at both ends", () => {
          okStep("relay");
          const sent = relayEnds.filter((e) => e.side === "sent");
          const got = relayEnds.filter((e) => e.side === "got");
          equal(sent.length, 2 * RELAY_SIZES.length, `sent ${JSON.stringify(sent)}${context}`);
          equal(got.length, sent.length, `got ${JSON.stringify(got)}${context}`);
          sent.sort((a, b) => a.n - b.n);
          got.sort((a, b) => a.n - b.n);
          for (let i = 0; i < sent.length; i++) {
            const family = i < RELAY_SIZES.length ? 4 : 6;
            equal(sent[i].family, family, `connection ${i} down`);
            equal(got[i].family, family, `connection ${i} up`);
            equal(got[i].error, undefined, `connection ${i} up: ${got[i].error}`);
            equal(sent[i].bytes, RELAY_SIZES[i % RELAY_SIZES.length]);
            equal(got[i].bytes, sent[i].bytes, `connection ${i} (IPv${family})`);
            equal(got[i].sha256, sent[i].sha256, `connection ${i} (IPv${family})`);
          }
        });
      }
      if (!relay) {
        await t.step("the gateway answers ping", () => {
          const ping = okStep("ping");
          equal(ping.kv.sent, "3");
          equal(ping.kv.received, "3");
        });
        await t.step(`a ${mib(downloadBytes)} download from host loopback arrives intact`, () => {
          const dl = okStep("download");
          equal(dl.kv.bytes, `${downloadBytes}`);
          equal(dl.kv.sha256, downloadSha);
        });
        await t.step(`a ${mib(uploadBytes)} upload arrives intact on the host`, () => {
          const up = okStep("upload");
          equal(uploads.length, 1, `host saw uploads ${JSON.stringify(uploads)}${context}`);
          equal(uploads[0].bytes, uploadBytes);
          equal(uploads[0].sha256, up.kv.sha256);
        });
      }
      if (BACKEND === "tapir" && mtu === 1500 && !vhost) {
        await t.step("the guest's MSS-sized segments were coalesced (RSC)", async () => {
          const log = await backendLog;
          const { rsc: stats, tcp } = statsFromLog(log).counters;
          ok(stats, `no rsc counters in the log${context}`);
          const seen = `${JSON.stringify(stats)}, ${tcp.sockWrites} socket writes${context}`;
          ok(stats.coalesced > 100, `coalesced ${seen}`);
          // A real guest's segments merge: timestamps that move are not a
          // change of options, and nothing is out of order on this path.
          equal(stats.finalOptions, 0, `options ${seen}`);
          equal(stats.outOfOrder + stats.outOfWindow + stats.finalOldAck, 0, `order ${seen}`);
          equal(stats.bypassNoChain, 0, `chains ${seen}`);
          // Each chain TCP gets is at most one socket write.
          ok(tcp.sockWrites <= stats.segments - stats.coalesced, `writes ${seen}`);
          // How many segments share a batch depends on when QEMU writes
          // them and when tapir reads, i.e. on the scheduler: in the relay,
          // whose guest alternates between receiving and sending, one build
          // measured 1.79, 2.11 and 6.34 segments per write. A bulk upload
          // comes in long runs, so there it must reach 4.
          if (!relay) {
            ok(tcp.sockWrites < stats.segments / 4, `segments per write ${seen}`);
          }
        });
      }
      if (!relay) {
        await t.step("the host connects in through -t: both directions arrive intact", () => {
          const listen = okStep("inbound-listen");
          equal(typeof inbound, "object", `${inbound}${context}`);
          const got = inbound as { bytes: number; sha256: string };
          equal(
            got.bytes,
            INBOUND_BYTES,
            `host got ${got.bytes} of ${INBOUND_BYTES} bytes${context}`,
          );
          equal(got.sha256, listen.kv.sha256);
          equal(okStep("inbound").kv.token, token, "the guest read the host's token");
        });
      }
      if (vhost) {
        await t.step("TCP crossed vhost-user in 64 KiB GSO frames both ways", async () => {
          const log = await backendLog;
          const { input, tap } = statsFromLog(log).counters;
          ok(input && tap, `no counters in the log${context}`);
          const { gsoFramesToHost, gsoSegmentsToHost } = input;
          const { gsoFramesToGuest, gsoSegmentsToGuest } = tap;
          const text = `${JSON.stringify(input)} ${JSON.stringify(tap)}`;
          ok(gsoFramesToHost > 100 && gsoSegmentsToHost > 4 * gsoFramesToHost, `in: ${text}`);
          ok(gsoFramesToGuest > 100 && gsoSegmentsToGuest > 4 * gsoFramesToGuest, `out: ${text}`);
        });
        await t.step("a second QEMU connects to the same tapir: lease and ping", () => {
          match(
            second.join("\n"),
            /^TAPIR-VM DONE passed=4 failed=0 skipped=0$/m,
            `second guest:\n${second.join("\n")}${context}`,
          );
        });
      }
      const exitStep = vhost
        ? "the backend exits 0 on SIGTERM"
        : "the backend exits when the guest disconnects (-1)";
      await t.step(exitStep, () => {
        equal(
          backendStatus?.code,
          0,
          `${BACKEND} exit: ${JSON.stringify(backendStatus)}${context}`,
        );
      });
    } finally {
      clearTimeout(deadline);
      kill(qemu);
      kill(backend);
      kill(server);
      kill(relayPeer);
      await Promise.allSettled([
        qemu?.status,
        backend?.status,
        server?.status,
        relayPeer?.status,
        qemuLog,
        backendLog,
        inboundFetch,
        ...pending,
      ]);
      await Deno.remove(dir, { recursive: true });
    }
  });
}

/** Port of the iPXE scripts' server on host loopback. */
const BOOT_PORT = 8081;
/** iPXE ROM of Debian's ipxe-qemu for the modern virtio-net device (PCI id 1af4:1041). */
const IPXE_ROM = "/usr/lib/ipxe/qemu/pxe-virtio.rom";
/** A terminal control sequence (ESC [ ... letter). */
const ANSI_ESCAPE = new RegExp(String.fromCharCode(27) + "\\[[0-9;?]*[A-Za-z]", "g");
/** iPXE must have fetched both scripts by then. */
const IPXE_DEADLINE_MS = 120_000;

/**
 * Network boot: no kernel and no disk, QEMU's own virtio-net option ROM
 * (iPXE) on vhost-user takes its lease from tapir and fetches the script
 * `--dhcp-bootfile` names from a server on host loopback (through the
 * gateway address), and that script chains a second one. The ROM is given
 * by path (this QEMU does not find Debian's ROMs by name), and the device
 * drops its legacy interface (`disable-legacy=on`), as the ROM is built
 * for the modern device's PCI id.
 */
Deno.test(
  "iPXE in QEMU's option ROM on vhost-user gets a lease from tapir and fetches the --dhcp-bootfile script, which chains a second",
  { ignore: BACKEND !== "tapir" },
  async () => {
    await withHostNs(async (host) => {
      const dir = await Deno.makeTempDir({ prefix: "tapir-ipxe-" });
      const socket = `${dir}/guest.sock`;
      const procs: Deno.ChildProcess[] = [];
      const gets: string[] = [];
      const serial: string[] = [];
      let sawBoth: () => void = () => {};
      const both = new Promise<void>((r) => sawBoth = r);
      const deadline = setTimeout(() => sawBoth(), IPXE_DEADLINE_MS);
      let backendLog = Promise.resolve("");
      try {
        const [sc, sa] = hostPeerArgs(host, ["boot", `${BOOT_PORT}`, GUEST.gw]);
        const server = new Deno.Command(sc, { args: sa, stdin: "null", stdout: "piped" }).spawn();
        procs.push(server);
        let listening: () => void = () => {};
        const ready = new Promise<void>((r) => listening = r);
        const served = (async () => {
          for await (const line of lines(server.stdout)) {
            const m = JSON.parse(line);
            if (m.listening) listening();
            if (m.get) gets.push(m.get);
            if (gets.includes("/second.ipxe")) sawBoth();
          }
        })();
        await ready;

        const bootUrl = `http://${GUEST.gw}:${BOOT_PORT}/boot.ipxe`;
        const [bd, ...bArgs] = tapirVm([
          "--vhost-user",
          "--socket",
          socket,
          "-d",
          "--dhcp-bootfile",
          bootUrl,
          "-1",
        ]);
        const started = tapirCollected(host, [bd, ...bArgs]);
        const backend = started.proc;
        procs.push(backend);
        backendLog = started.output;
        await waitForSocket(socket, backend);

        const [qc, qa] = nsArgs(host, "qemu-system-x86_64", [
          "-machine",
          "pc,graphics=off",
          "-accel",
          "tcg",
          "-m",
          "256",
          "-object",
          "memory-backend-memfd,id=mem,size=256M,share=on",
          "-numa",
          "node,memdev=mem",
          "-nodefaults",
          "-display",
          "none",
          "-serial",
          "stdio",
          "-chardev",
          `socket,id=c0,path=${socket}`,
          "-netdev",
          "vhost-user,id=n0,chardev=c0",
          "-device",
          `virtio-net-pci,netdev=n0,vectors=0,disable-legacy=on,romfile=${IPXE_ROM},bootindex=1`,
        ]);
        const qemu = new Deno.Command(qc, {
          args: qa,
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        procs.push(qemu);
        const console = (async () => {
          for await (const line of lines(qemu.stdout)) {
            // iPXE redraws with escape sequences; keep the text.
            serial.push(line.replace(ANSI_ESCAPE, ""));
          }
        })();
        await both;
        kill(qemu);
        await qemu.status;
        await console;
        const backendStatus = await backend.status;
        kill(server);
        await served;
        const context = `\n--- serial\n${serial.join("\n")}\n--- tapir\n${await backendLog}`;
        deepEqual(gets, ["/boot.ipxe", "/second.ipxe"], `requests seen${context}`);
        match(await backendLog, /DHCPACK 10\.0\.2\.15/, `no lease${context}`);
        equal(backendStatus.code, 0, `tapir exit${context}`);
      } finally {
        clearTimeout(deadline);
        for (const p of procs) kill(p);
        await Promise.allSettled([...procs.map((p) => p.status), backendLog]);
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
);

/**
 * `--fd N` with vhost-user: QEMU listens on the socket (`server=on`), and
 * tapir gets the connection already made on fd 3 — socat connects and
 * execs tapir in its own place with the socket there (`nofork`), as a
 * management tool passing a connected socket would. One guest: tapir exits
 * when it leaves.
 */
Deno.test(
  "tapir vm --vhost-user --fd N serves a QEMU that listens, on a socket it inherits, and exits when the guest leaves",
  { ignore: BACKEND !== "tapir" },
  async () => {
    const guest = await buildGuest();
    await withHostNs(async (host) => {
      const dir = await Deno.makeTempDir({ prefix: "tapir-vhost-fd-" });
      const socket = `${dir}/qemu.sock`;
      const append = guestAppend({
        steps: "dhcp,ping",
        addr: GUEST.addr,
        prefix: GUEST.prefix,
        gw: GUEST.gw,
        mtu: 65520,
        wait: 30,
        deadline: 100,
      });
      const [qc, qa] = nsArgs(
        host,
        "qemu-system-x86_64",
        qemuArgs(guest, append, socket, true, true),
      );
      const qemu = new Deno.Command(qc, {
        args: qa,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
      const serial = collect(qemu.stdout);
      const qemuErr = collect(qemu.stderr);
      let tapir: Deno.ChildProcess | null = null;
      const deadline = setTimeout(() => {
        kill(qemu);
        kill(tapir);
      }, DEADLINE_MS);
      try {
        await waitForSocket(socket, qemu);
        const tapirArgv = tapirVm(["--vhost-user", "--fd", "3"]).join(" ");
        const [sc, sa] = nsArgs(host, "socat", [
          `UNIX-CONNECT:${socket}`,
          `EXEC:${tapirArgv},nofork,fdin=3,fdout=3`,
        ]);
        tapir = new Deno.Command(sc, { args: sa, stdin: "null", stdout: "piped", stderr: "piped" })
          .spawn();
        const tapirLog = Promise.all([collect(tapir.stdout), collect(tapir.stderr)]);
        const qemuStatus = await qemu.status;
        const tapirStatus = await tapir.status;
        const context = `\n--- serial\n${await serial}\n--- qemu\n${await qemuErr}\n--- tapir\n${
          (await tapirLog).join("")
        }`;
        equal(qemuStatus.code, 0, context);
        match(await serial, /^TAPIR-VM DONE passed=4 failed=0 skipped=0\r?$/m, context);
        equal(tapirStatus.code, 0, `tapir exits 0 when the guest leaves${context}`);
      } finally {
        clearTimeout(deadline);
        kill(qemu);
        kill(tapir);
        await Promise.allSettled([qemu.status, tapir?.status, serial, qemuErr]);
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
);

/** The command line of `host_peer.ts` with `args`, run in namespace `host`. */
function hostPeerArgs(host: string, args: string[]): [string, string[]] {
  return nsArgs(host, Deno.execPath(), ["run", "-A", `${HERE}host_peer.ts`, ...args]);
}

/** Starts `argv` in namespace `host`: the process, and its output once it has ended. */
function tapirCollected(
  host: string,
  [cmd, ...args]: string[],
): { proc: Deno.ChildProcess; output: Promise<string> } {
  const [c, a] = nsArgs(host, cmd, args);
  const proc = new Deno.Command(c, { args: a, stdin: "null", stdout: "piped", stderr: "piped" })
    .spawn();
  const output = Promise.all([collect(proc.stdout), collect(proc.stderr)]).then(([o, e]) => o + e);
  return { proc, output };
}

/** Bytes tapir must have sent the guest before the test kills its QEMU: the transfer is under way. */
const KILL_AFTER_BYTES = 4 * 1024 * 1024;

/**
 * A front-end that dies without a word: QEMU is SIGKILLed while its guest
 * relays a long transfer over vhost-user, with tapir's rings busy both ways.
 * tapir sees the socket close, lets go of the rings and the guest's memory,
 * and resets the guest's connections, so the host's ends hear of it at once
 * rather than after the idle timeout; then a second QEMU connects to the
 * same tapir and gets its lease and pings, and tapir exits 0 on SIGTERM.
 */
Deno.test(
  "a QEMU guest SIGKILLed mid-transfer on vhost-user: the host's connections are reset at once, the next guest is served, exit 0",
  { ignore: BACKEND !== "tapir" },
  async () => {
    const guest = await buildGuest();
    await withHostNs(async (host) => {
      const dir = await Deno.makeTempDir({ prefix: "tapir-vm-kill-" });
      await Deno.chmod(dir, 0o755);
      const socket = `${dir}/guest.sock`;
      const api = `${dir}/api.sock`;
      const procs: Deno.ChildProcess[] = [];
      const ends: RelayEnd[] = [];
      let relayListening: (line: string) => void = () => {};
      const relayReady = new Promise<string>((r) => relayListening = r);
      const deadline = setTimeout(() => procs.forEach(kill), DEADLINE_MS);
      let backendLog = Promise.resolve("");
      const pending: Promise<unknown>[] = [];
      try {
        // One connection of 1 GiB: far more than a TCG guest relays before the kill.
        const [rc, ra] = hostPeerArgs(host, [
          "relay",
          `${RELAY_SRC_PORT}`,
          `${RELAY_DST_PORT}`,
          `${1024 * 1024 * 1024}`,
        ]);
        const relayPeer = new Deno.Command(rc, { args: ra, stdin: "null", stdout: "piped" })
          .spawn();
        procs.push(relayPeer);
        pending.push((async () => {
          for await (const line of lines(relayPeer.stdout)) {
            const msg = JSON.parse(line);
            if (msg.relay) ends.push(msg.relay);
            else relayListening(line);
          }
        })());
        equal(await relayReady, JSON.stringify({ listening: RELAY_SRC_PORT }), "the relay listens");

        const [bd, ...bArgs] = tapirVm([
          "--vhost-user",
          "--socket",
          socket,
          "--api-socket",
          api,
          "-m",
          "1500",
          "-d",
        ]);
        const started = tapirCollected(host, [bd, ...bArgs]);
        const backend = started.proc;
        procs.push(backend);
        backendLog = started.output;
        await waitForSocket(socket, backend);

        const params = {
          addr: GUEST.addr,
          prefix: GUEST.prefix,
          gw: GUEST.gw,
          mtu: 1500,
          relay_src: RELAY_SRC_PORT,
          relay_dst: RELAY_DST_PORT,
          relay_count: 1,
          relay_families: "4",
          relay_wait: RELAY_WAIT_S,
          wait: 60,
          deadline: Math.floor(DEADLINE_MS / 1000) - 20,
        };
        const startQemu = (steps: string) => {
          const [qc, qa] = nsArgs(
            host,
            "qemu-system-x86_64",
            qemuArgs(guest, guestAppend({ ...params, steps }), socket, true),
          );
          const qemu = new Deno.Command(qc, {
            args: qa,
            stdin: "null",
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          procs.push(qemu);
          const serial: string[] = [];
          const done = (async () => {
            for await (const line of lines(qemu.stdout)) serial.push(line);
          })();
          return { qemu, serial, done, stderr: collect(qemu.stderr) };
        };

        const first = startQemu("dhcp,relay");
        // What is known so far, for a failure message (tapir's log only once it has exited).
        const context = async () =>
          `\n--- first guest\n${first.serial.join("\n")}\n--- relay ${
            JSON.stringify(ends)
          }\n--- tapir\n${await Promise.race([backendLog, Promise.resolve("(running)")])}`;
        const check = async (cond: boolean, what: string) => {
          if (!cond) ok(false, `${what}${await context()}`);
        };
        // Until tapir has sent the guest KILL_AFTER_BYTES of the download.
        let sent = 0;
        for (let i = 0; sent < KILL_AFTER_BYTES; i++) {
          if (i > 1200) throw new Error(`the transfer did not start: ${sent} bytes`);
          await new Promise((r) => setTimeout(r, 100));
          const reply = await ctlCall(api, { cmd: "stats" }).catch(() => null);
          if (reply?.ok) sent = (reply.value as StatsReport).counters.tcp.bytesToGuest;
        }
        const killedAt = performance.now();
        first.qemu.kill("SIGKILL");
        await first.qemu.status;
        await first.done;
        // Both host ends of the relayed connection hear of it.
        while (ends.length < 2 && performance.now() - killedAt < 10_000) {
          await new Promise((r) => setTimeout(r, 50));
        }
        const ms = performance.now() - killedAt;
        const down = ends.find((e) => e.side === "sent");
        const up = ends.find((e) => e.side === "got");
        await check(
          /reset|broken pipe/i.test(down?.error ?? ""),
          "the download's host end is reset",
        );
        await check(/reset/i.test(up?.error ?? ""), "the upload's host end is reset");
        ok(ms < 5000, `the host's ends heard of it ${ms.toFixed(0)} ms after the kill`);

        const second = startQemu("dhcp,ping");
        const secondStatus = await second.qemu.status;
        await second.done;
        await check(
          /^TAPIR-VM DONE passed=4 failed=0 skipped=0$/m.test(second.serial.join("\n")),
          `the second guest\n${second.serial.join("\n")}\n${await second.stderr}`,
        );
        equal(secondStatus.code, 0, "the second QEMU powers off");

        backend.kill("SIGTERM");
        const status = await backend.status;
        const log = await backendLog;
        await check(status.code === 0, `tapir exits 0 on SIGTERM: ${JSON.stringify(status)}`);
        match(log, /guest disconnected/, "tapir says the guest went");
        const { tcp } = statsFromLog(log).counters;
        ok(tcp.bytesToGuest >= KILL_AFTER_BYTES, `the counters at exit: ${JSON.stringify(tcp)}`);
      } finally {
        clearTimeout(deadline);
        procs.forEach(kill);
        await Promise.allSettled([...procs.map((p) => p.status), backendLog, ...pending]);
        await Deno.remove(dir, { recursive: true });
      }
    });
  },
);
