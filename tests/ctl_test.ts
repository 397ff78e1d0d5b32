/**
 * `tapir ctl`: request words to requests, the formatters on sample replies,
 * and the client end to end against a fake control socket that answers
 * canned lines.
 *
 * @module
 */

import { deepStrictEqual, equal, fail, match, ok, throws } from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  absolutePath,
  ctlCall,
  CtlError,
  type CtlFlows,
  type CtlOutput,
  ctlRequestFromArgs,
  type CtlStats,
  formatConfirmation,
  formatFlows,
  formatForwards,
  formatStats,
  runCtl,
} from "../lib/ctl.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));

/** The CtlError message for `words`, which must be refused. */
function refused(...words: string[]): string {
  try {
    ctlRequestFromArgs(words, "/home/me");
  } catch (err) {
    if (err instanceof CtlError) return err.message;
    throw err;
  }
  fail(`accepted: ${JSON.stringify(words)}`);
}

Deno.test("ctl: request words map to requests", () => {
  const req = (...words: string[]) => ctlRequestFromArgs(words, "/home/me");
  deepStrictEqual(req(), { cmd: "stats" });
  deepStrictEqual(req("stats"), { cmd: "stats" });
  deepStrictEqual(req("flows"), { cmd: "flows" });
  for (const words of [["forward"], ["forwards"], ["forward", "ls"], ["forward", "list"]]) {
    deepStrictEqual(req(...words), { cmd: "forwards" }, words.join(" "));
  }
  deepStrictEqual(req("forward", "add", "tcp", "8080:80"), {
    cmd: "forward-add",
    proto: "tcp",
    spec: "8080:80",
  });
  deepStrictEqual(req("forwards", "add", "udp-ns", "5353"), {
    cmd: "forward-add",
    proto: "udp-ns",
    spec: "5353",
  });
  for (const rm of ["rm", "remove"]) {
    deepStrictEqual(req("forward", rm, "tcp-ns", "127.0.0.1/2222:22"), {
      cmd: "forward-remove",
      proto: "tcp-ns",
      spec: "127.0.0.1/2222:22",
    });
  }
  deepStrictEqual(req("forward", "add", "udp", "~53"), {
    cmd: "forward-add",
    proto: "udp",
    spec: "~53",
  });
  deepStrictEqual(req("pcap", "start", "x.pcap"), { cmd: "pcap-start", path: "/home/me/x.pcap" });
  deepStrictEqual(req("pcap", "start", "../tmp/x.pcap"), {
    cmd: "pcap-start",
    path: "/home/tmp/x.pcap",
  });
  deepStrictEqual(req("pcap", "start", "/tmp/x.pcap"), { cmd: "pcap-start", path: "/tmp/x.pcap" });
  deepStrictEqual(req("pcap", "stop"), { cmd: "pcap-stop" });
});

Deno.test("ctl: pcap start resolves FILE against the current directory by default", () => {
  deepStrictEqual(ctlRequestFromArgs(["pcap", "start", "x.pcap"]), {
    cmd: "pcap-start",
    path: `${Deno.cwd()}/x.pcap`,
  });
});

Deno.test("ctl: a relative path is made absolute with . and .. resolved", () => {
  equal(absolutePath("x.pcap", "/home/me"), "/home/me/x.pcap");
  equal(absolutePath("./a/../b/./x.pcap", "/home/me/"), "/home/me/b/x.pcap");
  equal(absolutePath("../../../x", "/home/me"), "/x");
  equal(absolutePath("/tmp//x/..", "/home/me"), "/tmp");
  equal(absolutePath("x", "/"), "/x");
});

Deno.test("ctl: bad request words give one line naming what is wrong", () => {
  const cases: [string[], string][] = [
    [["foo"], "ctl: unknown request 'foo'; one of stats, flows, forward, pcap"],
    [["stats", "now"], "ctl: stats takes no more arguments; unexpected 'now'"],
    [["flows", "-"], "ctl: flows takes no more arguments; unexpected '-'"],
    [["forward", "ls", "x"], "ctl: forward ls takes no more arguments; unexpected 'x'"],
    [["forward", "add"], "ctl: forward add needs PROTO and SPEC"],
    [["forward", "add", "tcp"], "ctl: forward add needs PROTO and SPEC"],
    [["forward", "rm", "tcp"], "ctl: forward rm needs PROTO and SPEC"],
    [["forward", "remove"], "ctl: forward remove needs PROTO and SPEC"],
    [["forward", "add", "sctp", "80"], "ctl: PROTO must be tcp, udp, tcp-ns or udp-ns, not 'sctp'"],
    [["forward", "add", "TCP", "80"], "ctl: PROTO must be tcp, udp, tcp-ns or udp-ns, not 'TCP'"],
    [["forward", "add", "tcp", ""], "ctl: forward add: SPEC is empty"],
    [
      ["forward", "add", "tcp", "80", "81"],
      "ctl: forward add PROTO SPEC takes no more arguments; unexpected '81'",
    ],
    [["forward", "del", "tcp", "80"], "ctl: unknown forward request 'del'; one of ls, add, rm"],
    [["pcap"], "ctl: pcap needs 'start FILE' or 'stop'"],
    [["pcap", "start"], "ctl: pcap start needs FILE"],
    [["pcap", "start", ""], "ctl: pcap start needs FILE"],
    [["pcap", "start", "a", "b"], "ctl: pcap start FILE takes no more arguments; unexpected 'b'"],
    [["pcap", "stop", "now"], "ctl: pcap stop takes no more arguments; unexpected 'now'"],
    [["pcap", "pause"], "ctl: unknown pcap request 'pause'; one of start, stop"],
  ];
  for (const [words, message] of cases) {
    equal(refused(...words), message, JSON.stringify(words));
    ok(!message.includes("\n"));
  }
});

const STATS: CtlStats = {
  uptime: 3723.4,
  traffic: { toHost: { bytes: 123456, frames: 789 }, toGuest: { bytes: 42, frames: 1 } },
  flows: { live: 3, byType: { TCP: 2, UDP: 1 }, byState: { ACTIVE: 3 } },
  counters: {
    tcp: { bytesToHost: 123, bytesToGuest: 456789 },
    udp: { flows: 0 },
    loop: { iterations: 1000000 },
  },
  runtime: {
    rssBytes: 75 * 1048576,
    heapUsedBytes: 9.25 * 1048576,
    heapTotalBytes: 12 * 1048576,
    heapAllocatedBytes: 1536 * 1048576,
    gc: { count: 14, pauseMs: 3.96, maxPauseMs: 0.412, sinceS: 1.5 },
  },
};

const STATS_TEXT = `uptime  1h 02m 03s

traffic    bytes  frames
to host   123456     789
to guest      42       1

flows     3 live
by type   TCP 2, UDP 1
by state  ACTIVE 3

memory     RSS 75.0 MiB, heap 9.3 MiB in use
allocated  1536.0 MiB since start
gc         14 pauses, 4.0 ms in all, longest 0.41 ms (since 1.5s)

tcp.bytesToHost       123
tcp.bytesToGuest   456789

udp.flows               0

loop.iterations   1000000
`;

Deno.test("ctl: formatStats aligns traffic and counters, numbers right-aligned", () => {
  equal(formatStats(STATS), STATS_TEXT);
});

Deno.test("ctl: formatStats shows short uptimes in seconds and copes with sparse replies", () => {
  const text = formatStats({
    uptime: 12.54,
    traffic: { toHost: { bytes: 0, frames: 0 }, toGuest: { bytes: 0, frames: 0 } },
    flows: { live: 0, byType: {}, byState: {} },
    counters: { empty: {}, odd: { list: [1, 2] as unknown as number } },
  } as unknown as CtlStats);
  equal(
    text,
    `uptime  12.5s

traffic   bytes  frames
to host       0       0
to guest      0       0

flows     0 live
by type   -
by state  -

odd.list  [1,2]
`,
  );
  // Whatever tapir leaves out shows as '-' rather than breaking the table.
  match(formatStats({} as CtlStats), /^uptime {2}-\n\ntraffic {3}bytes {2}frames\nto host {7}- /);
});

const FLOWS: CtlFlows = {
  flows: [
    {
      index: 3,
      type: "TCP",
      state: "ACTIVE",
      age: 1.52,
      ini: {
        pif: "HOST",
        peerAddr: "127.0.0.1",
        peerPort: 40000,
        localAddr: "127.0.0.1",
        localPort: 8080,
      },
      tgt: {
        pif: "TAP",
        peerAddr: "10.0.2.15",
        peerPort: 80,
        localAddr: "10.0.2.2",
        localPort: 40000,
      },
      bytesIniToTgt: 100,
      bytesTgtToIni: 2000,
    },
    {
      index: 4,
      type: "UDP",
      state: "ACTIVE",
      age: 75,
      ini: { pif: "TAP", peerAddr: "fd00::2", peerPort: 5353, localAddr: "fd00::1", localPort: 53 },
      tgt: { pif: "HOST", peerAddr: "::1", peerPort: 53, localAddr: "::1", localPort: 41000 },
      bytesIniToTgt: 40,
      bytesTgtToIni: 123456,
    },
    {
      index: 5,
      type: "PING",
      state: "NEW",
      age: 0,
      ini: { pif: "TAP", peerAddr: "10.0.2.15", peerPort: 7, localAddr: "1.1.1.1", localPort: 7 },
      tgt: null,
      bytesIniToTgt: 0,
      bytesTgtToIni: 0,
    },
  ],
};

const FLOWS_TEXT = [
  "TYPE  STATE      AGE  INITIATOR                              TARGET                              BYTES→  BYTES←",
  "TCP   ACTIVE    1.5s  HOST 127.0.0.1:40000 → 127.0.0.1:8080  TAP  10.0.2.2:40000 → 10.0.2.15:80     100    2000",
  "UDP   ACTIVE  1m 15s  TAP  [fd00::2]:5353  → [fd00::1]:53    HOST [::1]:41000    → [::1]:53          40  123456",
  "PING  NEW       0.0s  TAP  10.0.2.15:7     → 1.1.1.1:7       -                                        0       0",
  "",
].join("\n");

Deno.test("ctl: formatFlows lines up the columns and brackets IPv6 addresses", () => {
  equal(formatFlows(FLOWS), FLOWS_TEXT);
});

Deno.test("ctl: formatFlows and formatForwards say so when there is nothing", () => {
  equal(formatFlows({ flows: [] }), "no flows\n");
  equal(formatForwards({ forwards: [] }), "no forwards\n");
});

Deno.test("ctl: formatForwards is a PROTO SPEC table", () => {
  equal(
    formatForwards({
      forwards: [{ proto: "tcp", spec: "8080:80" }, { proto: "udp-ns", spec: "5353" }],
    }),
    "PROTO   SPEC\ntcp     8080:80\nudp-ns  5353\n",
  );
});

Deno.test("ctl: changes are confirmed in one line", () => {
  const add = { cmd: "forward-add", proto: "tcp", spec: "8080:80" } as const;
  equal(formatConfirmation(add, { proto: "tcp", spec: "8080:80" }), "added tcp 8080:80\n");
  equal(
    formatConfirmation({ ...add, cmd: "forward-remove" }, { proto: "tcp", spec: "8080:80" }),
    "removed tcp 8080:80\n",
  );
  equal(
    formatConfirmation({ cmd: "pcap-start", path: "/tmp/x.pcap" }, { path: "/tmp/x.pcap" }),
    "capturing to /tmp/x.pcap\n",
  );
  equal(
    formatConfirmation({ cmd: "pcap-stop" }, { path: "/tmp/x.pcap", frames: 123 }),
    "capture /tmp/x.pcap closed: 123 frames\n",
  );
  equal(
    formatConfirmation({ cmd: "pcap-stop" }, { path: "/tmp/x.pcap", frames: 1 }),
    "capture /tmp/x.pcap closed: 1 frame\n",
  );
  // A bare `null` return still confirms, from the request.
  equal(formatConfirmation(add, null), "added tcp 8080:80\n");
});

// ---------------------------------------------------------------------------
// End to end, against a fake control socket

/** What the fake server answers to each `cmd`: one raw line, `null` to hang up, `"hang"` to stay silent. */
type Script = Record<string, string | null>;

interface Fake {
  readonly path: string;
  readonly requests: unknown[];
}

/** Runs `body` with a fake control socket in a temporary directory that follows `script`. */
async function withFake(script: Script, body: (fake: Fake) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tapir-ctl-" });
  const path = `${dir}/api.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const requests: unknown[] = [];
  const serveOne = async (conn: Deno.Conn) => {
    try {
      const buf = new Uint8Array(4096);
      let text = "";
      while (!text.includes("\n")) {
        const n = await conn.read(buf);
        if (n === null) return;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      const request = JSON.parse(text.slice(0, text.indexOf("\n")));
      requests.push(request);
      const reply = script[request.cmd];
      if (reply === "hang") {
        await conn.read(buf); // until the client gives up
        return;
      }
      if (reply === null || reply === undefined) return;
      // In two writes, so the client must put the line together.
      const bytes = new TextEncoder().encode(reply + "\n");
      const half = bytes.length >> 1;
      await conn.write(bytes.subarray(0, half));
      await new Promise((r) => setTimeout(r, 5));
      await conn.write(bytes.subarray(half));
    } catch {
      // the client went away
    } finally {
      conn.close();
    }
  };
  const serving = (async () => {
    const served: Promise<void>[] = [];
    try {
      for await (const conn of listener) {
        served.push(serveOne(conn));
      }
    } catch {
      // closed
    }
    await Promise.all(served);
  })();
  try {
    await body({ path, requests });
  } finally {
    listener.close();
    await serving;
    await Deno.remove(dir, { recursive: true });
  }
}

/** An output that keeps what is written. */
function capture(): CtlOutput & { stdout: string; stderr: string } {
  const o = {
    stdout: "",
    stderr: "",
    out(text: string) {
      o.stdout += text;
      return Promise.resolve();
    },
    err(text: string) {
      o.stderr += text;
      return Promise.resolve();
    },
  };
  return o;
}

const SCRIPT: Script = {
  stats: JSON.stringify({ return: STATS }),
  flows: JSON.stringify({ return: FLOWS }),
  forwards: JSON.stringify({ return: { forwards: [{ proto: "tcp", spec: "8080:80" }] } }),
  "forward-add": JSON.stringify({ return: { proto: "tcp", spec: "8080:80" } }),
  "forward-remove": JSON.stringify({ error: { desc: "no such forward: tcp 9999" } }),
  "pcap-start": JSON.stringify({ return: { path: "/somewhere/x.pcap" } }),
  "pcap-stop": JSON.stringify({ return: { path: "/somewhere/x.pcap", frames: 7 } }),
};

Deno.test("ctl: stats, flows, forwards and changes against a fake socket", async () => {
  await withFake(SCRIPT, async ({ path, requests }) => {
    let o = capture();
    equal(await runCtl(["--socket", path, "stats"], o), 0);
    equal(o.stdout, STATS_TEXT);
    equal(o.stderr, "");

    o = capture();
    equal(await runCtl(["flows", "-s", path], o), 0);
    equal(o.stdout, FLOWS_TEXT);

    o = capture();
    equal(await runCtl([`--socket=${path}`, "forward"], o), 0);
    equal(o.stdout, "PROTO  SPEC\ntcp    8080:80\n");

    o = capture();
    equal(await runCtl(["-s", path, "forward", "add", "tcp", "8080:80"], o), 0);
    equal(o.stdout, "added tcp 8080:80\n");

    o = capture();
    equal(await runCtl(["-s", path, "pcap", "start", "x.pcap"], o), 0);
    equal(o.stdout, "capturing to /somewhere/x.pcap\n");

    o = capture();
    equal(await runCtl(["-s", path, "pcap", "stop"], o), 0);
    equal(o.stdout, "capture /somewhere/x.pcap closed: 7 frames\n");

    o = capture();
    equal(await runCtl(["-s", path], o), 0, "stats is the default");
    equal(o.stdout, STATS_TEXT);

    deepStrictEqual(requests, [
      { cmd: "stats" },
      { cmd: "flows" },
      { cmd: "forwards" },
      { cmd: "forward-add", proto: "tcp", spec: "8080:80" },
      { cmd: "pcap-start", path: `${Deno.cwd()}/x.pcap` },
      { cmd: "pcap-stop" },
      { cmd: "stats" },
    ]);
  });
});

Deno.test("ctl: --json prints the raw return value", async () => {
  await withFake(SCRIPT, async ({ path }) => {
    const o = capture();
    equal(await runCtl(["--json", "--socket", path, "stats"], o), 0);
    deepStrictEqual(JSON.parse(o.stdout), STATS);
    ok(o.stdout.endsWith("}\n"));
    equal(o.stderr, "");
  });
});

Deno.test("ctl: an error reply exits 1 with its description on stderr", async () => {
  await withFake(SCRIPT, async ({ path }) => {
    const o = capture();
    equal(await runCtl(["-s", path, "forward", "rm", "tcp", "9999"], o), 1);
    equal(o.stdout, "");
    equal(o.stderr, "tapir ctl: no such forward: tcp 9999\n");
  });
});

Deno.test("ctl: a missing socket exits 1 with one line naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-ctl-" });
  try {
    const o = capture();
    equal(await runCtl(["--socket", `${dir}/none.sock`, "stats"], o), 1);
    equal(o.stdout, "");
    match(o.stderr, new RegExp(`^tapir ctl: cannot connect to ${dir}/none\\.sock: [^\\n]+\\n$`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ctl: bad replies and silence give one line naming the socket", async () => {
  await withFake(
    { stats: "not json", flows: "[1]", forwards: null, "pcap-stop": "hang" },
    async ({ path }) => {
      await ctlCall(path, { cmd: "stats" }).then(
        () => fail("accepted"),
        (err) => match(String(err.message), /^ctl: .* sent a reply that is not JSON: [^\n]+$/),
      );
      await ctlCall(path, { cmd: "flows" }).then(
        () => fail("accepted"),
        (err) => equal(err.message, `ctl: ${path} sent a reply with neither 'return' nor 'error'`),
      );
      await ctlCall(path, { cmd: "forwards" }).then(
        () => fail("accepted"),
        (err) => equal(err.message, `ctl: ${path} closed the connection without a reply`),
      );
      const o = capture();
      equal(await runCtl(["-s", path, "pcap", "stop"], o, 200), 1);
      equal(o.stderr, `tapir ctl: no reply from ${path} within 0.2s\n`);
    },
  );
});

Deno.test("ctl: bad options exit 1 with one line naming the option", async () => {
  const cases: [string[], string][] = [
    [["stats"], "tapir ctl: --socket PATH is required (tapir's --api-socket)\n"],
    [["--socket"], "tapir ctl: --socket needs a PATH\n"],
    [["-s", "a", "-s", "b"], "tapir ctl: -s: given more than once\n"],
    [["-s", "a", "--tcp", "80"], "tapir ctl: unknown option '--tcp' (see 'tapir ctl --help')\n"],
    [
      ["-s", "a", "nope"],
      "tapir ctl: unknown request 'nope'; one of stats, flows, forward, pcap\n",
    ],
  ];
  for (const [args, stderr] of cases) {
    const o = capture();
    equal(await runCtl(args, o), 1, JSON.stringify(args));
    equal(o.stderr, stderr);
    equal(o.stdout, "");
  }
  throws(() => ctlRequestFromArgs(["x"]), CtlError);
});

Deno.test("ctl: --help prints the usage and needs no socket", async () => {
  const o = capture();
  equal(await runCtl(["--help"], o), 0);
  match(o.stdout, /^Usage: tapir ctl --socket PATH/);
  for (const request of ["stats", "flows", "forward add PROTO SPEC", "pcap start FILE"]) {
    ok(o.stdout.includes(request), request);
  }
  equal(o.stderr, "");
});

Deno.test("ctl: 'tapir ctl' from the command line fails in one line on a missing socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-ctl-" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "main.ts", "ctl", "--socket", `${dir}/missing.sock`],
      cwd: ROOT,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    equal(out.code, 1);
    equal(out.stdout.length, 0);
    match(stderr, new RegExp(`^tapir ctl: cannot connect to ${dir}/missing\\.sock: [^\\n]+\\n$`));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
