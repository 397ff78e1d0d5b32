import { deepEqual, equal, match, ok } from "node:assert/strict";
import { iovFromBytes } from "../lib/iov.ts";
import { logClose, LogLevel, logSetup } from "../lib/log.ts";
import {
  LINKTYPE_ETHERNET,
  PCAP_MAGIC_NS,
  PCAP_MIN_BUFFER_SIZE,
  PCAP_SNAPLEN,
  pcapActive,
  pcapClose,
  pcapFlush,
  pcapFrame,
  pcapMultiple,
  pcapNow,
  pcapOpen,
  type PcapSink,
  PcapWriter,
} from "../lib/pcap.ts";

// ---------------------------------------------------------------------------
// Hand-built frames. The checksum code lives here on purpose: the test must
// not depend on the real checksum module.

/** RFC 1071 Internet checksum of the concatenated parts. */
function internetChecksum(...parts: Uint8Array[]): number {
  let sum = 0;
  let odd = -1; // a byte left over from the previous part, or -1
  for (const p of parts) {
    for (const b of p) {
      if (odd < 0) {
        odd = b;
      } else {
        sum += (odd << 8) | b;
        odd = -1;
      }
    }
  }
  if (odd >= 0) sum += odd << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

const GUEST_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const GATEWAY_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const GUEST_IP = [192, 0, 2, 2];
const GATEWAY_IP = [192, 0, 2, 1];

/** An ARP request "who has 192.0.2.1, tell 192.0.2.2" (42 bytes, unpadded). */
function arpRequest(): Uint8Array {
  return new Uint8Array([
    ...[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    ...GUEST_MAC,
    0x08,
    0x06,
    ...[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01],
    ...GUEST_MAC,
    ...GUEST_IP,
    ...[0, 0, 0, 0, 0, 0],
    ...GATEWAY_IP,
  ]);
}

/** An IPv4 UDP datagram 192.0.2.2:40000 → 192.0.2.1:43210 with correct checksums. */
function udpDatagram(payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + 20 + 8 + payload.length);
  const v = new DataView(frame.buffer);
  frame.set(GATEWAY_MAC, 0);
  frame.set(GUEST_MAC, 6);
  v.setUint16(12, 0x0800);
  const ip = frame.subarray(14, 34);
  ip[0] = 0x45;
  v.setUint16(16, 20 + 8 + payload.length);
  v.setUint16(18, 0x1234); // identification
  v.setUint16(20, 0x4000); // don't fragment
  ip[8] = 64;
  ip[9] = 17;
  ip.set(GUEST_IP, 12);
  ip.set(GATEWAY_IP, 16);
  v.setUint16(24, internetChecksum(ip));
  const udp = frame.subarray(34);
  v.setUint16(34, 40000);
  v.setUint16(36, 43210);
  v.setUint16(38, 8 + payload.length);
  udp.set(payload, 8);
  const pseudo = new Uint8Array([...GUEST_IP, ...GATEWAY_IP, 0, 17, 0, 0]);
  new DataView(pseudo.buffer).setUint16(10, udp.length);
  v.setUint16(40, internetChecksum(pseudo, udp) || 0xffff);
  return frame;
}

/** Prepends the stream backend's 4-byte big-endian length and splits into parts. */
function streamIov(frame: Uint8Array): Uint8Array[] {
  const withHeader = new Uint8Array(4 + frame.length);
  new DataView(withHeader.buffer).setUint32(0, frame.length);
  withHeader.set(frame, 4);
  // length header | Ethernet | rest split unevenly | empty entry
  return [...iovFromBytes(withHeader, [4, 14, 11]), new Uint8Array(0)];
}

// ---------------------------------------------------------------------------
// A small pcap reader, independent of the writer.

interface PcapRecord {
  sec: number;
  nsec: number;
  inclLen: number;
  origLen: number;
  data: Uint8Array;
}

interface PcapFile {
  magic: number;
  major: number;
  minor: number;
  snaplen: number;
  linktype: number;
  records: PcapRecord[];
}

function parsePcap(bytes: Uint8Array): PcapFile {
  ok(bytes.length >= 24, "file shorter than the global header");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const file: PcapFile = {
    magic: v.getUint32(0, true),
    major: v.getUint16(4, true),
    minor: v.getUint16(6, true),
    snaplen: v.getUint32(16, true),
    linktype: v.getUint32(20, true),
    records: [],
  };
  let pos = 24;
  while (pos < bytes.length) {
    ok(pos + 16 <= bytes.length, `record header cut short at ${pos}`);
    const inclLen = v.getUint32(pos + 8, true);
    ok(pos + 16 + inclLen <= bytes.length, `record data cut short at ${pos}`);
    file.records.push({
      sec: v.getUint32(pos, true),
      nsec: v.getUint32(pos + 4, true),
      inclLen,
      origLen: v.getUint32(pos + 12, true),
      data: bytes.slice(pos + 16, pos + 16 + inclLen),
    });
    pos += 16 + inclLen;
  }
  return file;
}

// ---------------------------------------------------------------------------
// External readers.

/** Waits (up to 5 minutes) for a tool a background apt-get may still be installing. */
async function tool(name: string): Promise<string> {
  const path = `/usr/bin/${name}`;
  for (let i = 0; i < 300; i++) {
    try {
      Deno.statSync(path);
      return path;
    } catch {
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
  throw new Error(`${path} is missing: apt-get install -y tcpdump tshark`);
}

async function run(cmd: string, args: string[]): Promise<{ out: string; err: string }> {
  const res = await new Deno.Command(await tool(cmd), { args, stdout: "piped", stderr: "piped" })
    .output();
  const out = new TextDecoder().decode(res.stdout);
  const err = new TextDecoder().decode(res.stderr);
  equal(res.code, 0, `${cmd} ${args.join(" ")} failed:\n${err}`);
  return { out, err };
}

function lines(text: string): string[] {
  return text.split("\n").filter((l) => l.trim() !== "");
}

/** tcpdump's stderr holds its banner line and nothing else (no warnings, no truncation). */
function assertTcpdumpQuiet(err: string): void {
  const rest = lines(err).filter((l) => !l.startsWith("reading from file"));
  deepEqual(rest, [], "tcpdump complained");
}

/** tshark's stderr may only hold its warning about running as root. */
function assertTsharkQuiet(err: string): void {
  const rest = lines(err).filter((l) => !/^Running as user "root"/.test(l));
  deepEqual(rest, [], "tshark complained");
}

// ---------------------------------------------------------------------------

const ARP = arpRequest();
const UDP = udpDatagram(new TextEncoder().encode("hello from tapir"));
const TS1 = 1_700_000_000_123_456_789n;
const TS2 = 1_700_000_001_000_000_500;

/**
 * Writes the sample capture: the two frames flat, then as stream-backend iovs
 * with a 4-byte offset, then the UDP frame inside an oversized iov with
 * trailing junk that must not be recorded.
 */
function writeSample(path: string): Uint8Array[] {
  const w = PcapWriter.open(path);
  w.frame(ARP, ARP.length, TS1);
  w.frame(UDP, UDP.length, TS1);
  w.multiple([streamIov(ARP), streamIov(UDP)], 4, TS2);
  const oversized = [...streamIov(UDP), new Uint8Array([0xde, 0xad, 0xbe, 0xef])];
  w.frame(oversized, UDP.length, TS2, 4);
  equal(w.framesRecorded, 5);
  w.close();
  ok(!w.active);
  return [ARP, UDP, ARP, UDP, UDP];
}

Deno.test("recorded frames read back byte-exactly, flat or as iovs with an offset", () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    const expected = writeSample(path);
    const file = parsePcap(Deno.readFileSync(path));
    equal(file.magic, PCAP_MAGIC_NS);
    deepEqual([file.major, file.minor], [2, 4]);
    equal(file.snaplen, PCAP_SNAPLEN);
    ok(file.snaplen >= 65535 + 14);
    equal(file.linktype, LINKTYPE_ETHERNET);
    equal(file.records.length, expected.length);
    file.records.forEach((r, i) => {
      deepEqual(r.data, expected[i], `record ${i} data`);
      equal(r.inclLen, expected[i].length, `record ${i} captured length`);
      equal(r.origLen, expected[i].length, `record ${i} original length`);
    });
    const times = file.records.map((r) => [r.sec, r.nsec]);
    const t1 = [Number(TS1 / 1_000_000_000n), Number(TS1 % 1_000_000_000n)];
    const t2 = [Math.floor(TS2 / 1e9), TS2 - Math.floor(TS2 / 1e9) * 1e9];
    deepEqual(times, [t1, t1, t2, t2, t2]);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("tcpdump reads the capture: five packets, checksums ok, no warnings", async () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    writeSample(path);
    const plain = await run("tcpdump", ["-r", path, "-nn"]);
    assertTcpdumpQuiet(plain.err);
    const pkts = lines(plain.out);
    equal(pkts.length, 5);
    equal(
      pkts.filter((l) => /ARP, Request who-has 192\.0\.2\.1 tell 192\.0\.2\.2/.test(l)).length,
      2,
    );
    equal(pkts.filter((l) => /192\.0\.2\.2\.40000 > 192\.0\.2\.1\.43210/.test(l)).length, 3);

    const verbose = await run("tcpdump", ["-r", path, "-nn", "-vv"]);
    assertTcpdumpQuiet(verbose.err);
    equal((verbose.out.match(/udp sum ok/g) ?? []).length, 3);
    ok(!/bad|truncated|\[\|/i.test(verbose.out), verbose.out);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("tshark reads the capture: five packets, checksums good, nothing malformed", async () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    writeSample(path);
    const plain = await run("tshark", ["-r", path]);
    assertTsharkQuiet(plain.err);
    equal(lines(plain.out).length, 5);

    const detail = await run("tshark", [
      "-r",
      path,
      "-V",
      "-o",
      "ip.check_checksum:TRUE",
      "-o",
      "udp.check_checksum:TRUE",
    ]);
    assertTsharkQuiet(detail.err);
    // Three UDP frames, each with a good IPv4 and a good UDP checksum.
    equal((detail.out.match(/\[Header checksum status: Good\]/g) ?? []).length, 3);
    equal((detail.out.match(/\[Checksum Status: Good\]/g) ?? []).length, 3);
    ok(!/Malformed|Bad|Packet size limited|Expert Info \(Error/.test(detail.out), detail.out);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("frames bigger than the buffer are recorded whole, between small ones", async () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    const big = udpDatagram(new Uint8Array(65535 - 28).map((_, i) => i * 7));
    equal(big.length, 65535 + 14);
    const medium = udpDatagram(new Uint8Array(1000).map((_, i) => i));
    const w = PcapWriter.open(path, { bufferSize: PCAP_MIN_BUFFER_SIZE });
    w.frame(ARP, ARP.length, TS1);
    w.frame(big, big.length, TS1);
    w.frame(ARP, ARP.length, TS1);
    w.multiple([streamIov(medium), streamIov(big)], 4, TS2);
    w.close();
    const expected = [ARP, big, ARP, medium, big];
    const file = parsePcap(Deno.readFileSync(path));
    deepEqual(file.records.map((r) => r.data), expected);
    deepEqual(file.records.map((r) => r.origLen), expected.map((f) => f.length));

    const { out, err } = await run("tcpdump", ["-r", path, "-nn", "-vv"]);
    assertTcpdumpQuiet(err);
    equal((out.match(/udp sum ok/g) ?? []).length, 3);
  } finally {
    Deno.removeSync(path);
  }
});

Deno.test("a buffer shorter than l2len records what exists; over-snaplen frames are cut to it", () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    const huge = new Uint8Array(PCAP_SNAPLEN + 100).fill(0x5a);
    const w = PcapWriter.open(path);
    w.frame(ARP, ARP.length + 20, TS1);
    w.frame(huge, huge.length, TS1);
    w.frame(ARP, ARP.length, TS1, ARP.length + 5);
    w.close();
    const [short, cut, empty] = parsePcap(Deno.readFileSync(path)).records;
    deepEqual([short.inclLen, short.origLen], [ARP.length, ARP.length + 20]);
    deepEqual(short.data, ARP);
    deepEqual([cut.inclLen, cut.origLen], [PCAP_SNAPLEN, huge.length]);
    deepEqual(cut.data, huge.subarray(0, PCAP_SNAPLEN));
    deepEqual([empty.inclLen, empty.origLen], [0, ARP.length], "offset beyond the frame");
  } finally {
    Deno.removeSync(path);
  }
});

/** Runs `body` with the logger writing to a temp file; returns the lines logged. */
function withLogFile(body: () => void): string[] {
  const logPath = Deno.makeTempFileSync({ suffix: ".log" });
  try {
    logSetup({ level: LogLevel.info, file: logPath, stderr: false });
    body();
    logClose();
    return lines(Deno.readTextFileSync(logPath));
  } finally {
    logSetup({ level: LogLevel.info });
    Deno.removeSync(logPath);
  }
}

Deno.test("a write error on /dev/full disables capture with one logged error, no exception", () => {
  let w: PcapWriter | null = null;
  const logged = withLogFile(() => {
    w = PcapWriter.open("/dev/full");
    for (let i = 0; i < 3; i++) {
      w.frame(UDP, UDP.length, TS1);
      w.multiple([streamIov(ARP)], 4, TS2);
      w.flush();
    }
    w.close();
    w.close();
  });
  ok(w !== null && !(w as PcapWriter).active);
  equal(logged.length, 1, logged.join("\n"));
  match(logged[0], /error: pcap: writing \/dev\/full failed \(.*\), capture disabled/);
});

/** A sink that accepts `budget` bytes, at most `chunk` per call, then fails. */
class FlakySink implements PcapSink {
  readonly written: number[] = [];
  closed = 0;
  constructor(private budget: number, private readonly chunk = Infinity) {}
  writeSync(p: Uint8Array): number {
    if (this.budget <= 0) throw new Error("injected failure");
    const n = Math.min(p.length, this.chunk, this.budget);
    this.written.push(...p.subarray(0, n));
    this.budget -= n;
    return n;
  }
  close(): void {
    this.closed++;
  }
}

Deno.test("a write error mid-capture logs once, closes the sink and stops recording", () => {
  const sink = new FlakySink(24 + 16 + UDP.length);
  let w: PcapWriter | null = null;
  const logged = withLogFile(() => {
    w = new PcapWriter(sink, "flaky.pcap", { bufferSize: 256 });
    w.frame(UDP, UDP.length, TS1);
    w.flush();
    ok(w.active, "the first record fitted the budget");
    w.frame(UDP, UDP.length, TS1);
    w.flush();
    w.frame(UDP, UDP.length, TS1);
    w.close();
  });
  ok(w !== null && !(w as PcapWriter).active);
  equal(sink.closed, 1);
  equal(logged.length, 1, logged.join("\n"));
  match(logged[0], /pcap: writing flaky\.pcap failed \(injected failure\), capture disabled/);
  const file = parsePcap(new Uint8Array(sink.written));
  deepEqual(file.records.map((r) => r.data), [UDP]);
});

Deno.test("short writes are resumed until the whole buffer is out", () => {
  const sink = new FlakySink(Infinity, 7);
  const w = new PcapWriter(sink, "short.pcap", { bufferSize: 100 });
  w.frame(UDP, UDP.length, TS1);
  w.multiple([streamIov(ARP), streamIov(UDP)], 4, TS2);
  w.close();
  const file = parsePcap(new Uint8Array(sink.written));
  deepEqual(file.records.map((r) => r.data), [UDP, ARP, UDP]);
});

Deno.test("module-level functions are no-ops until opened, then record into one capture", () => {
  pcapClose();
  ok(!pcapActive());
  pcapFrame(UDP, UDP.length);
  pcapMultiple([ARP], 0);
  pcapFlush();

  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    pcapOpen(path);
    ok(pcapActive());
    pcapFrame(streamIov(UDP), UDP.length, TS1, 4);
    // A preallocated batch array with only the first two slots in use.
    pcapMultiple([streamIov(ARP), streamIov(UDP), streamIov(ARP)], 4, TS2, 2);
    pcapFlush();
    deepEqual(parsePcap(Deno.readFileSync(path)).records.map((r) => r.data), [UDP, ARP, UDP]);
    pcapFrame(ARP, ARP.length);
    pcapClose();
    ok(!pcapActive());
    const records = parsePcap(Deno.readFileSync(path)).records;
    deepEqual(records.map((r) => r.data), [UDP, ARP, UDP, ARP]);
    const nowSec = Date.now() / 1000;
    ok(Math.abs(records[3].sec - nowSec) < 60, "default timestamp is the current time");
  } finally {
    pcapClose();
    Deno.removeSync(path);
  }
});

Deno.test("pcapNow is wall-clock nanoseconds and does not go backwards", () => {
  const before = Date.now() * 1e6;
  const a = pcapNow();
  const b = pcapNow();
  const after = Date.now() * 1e6;
  ok(b >= a);
  ok(a >= before - 5e6 && b <= after + 5e6, `${a} not within [${before}, ${after}]`);
});

Deno.test("number timestamps split into seconds and in-range nanoseconds", () => {
  const path = Deno.makeTempFileSync({ suffix: ".pcap" });
  try {
    const w = PcapWriter.open(path);
    const stamps = [0, -5, 999_999_999, 1_000_000_000, 1_799_999_999_999_999_900, pcapNow()];
    for (const ts of stamps) w.frame(ARP, ARP.length, ts);
    w.close();
    const records = parsePcap(Deno.readFileSync(path)).records;
    records.forEach((r, i) => {
      ok(r.nsec < 1e9, `record ${i}: nsec ${r.nsec}`);
      const ts = Math.max(0, stamps[i]);
      ok(Math.abs(r.sec * 1e9 + r.nsec - ts) <= 512, `record ${i}: ${r.sec}.${r.nsec} vs ${ts}`);
    });
    deepEqual(records.slice(0, 4).map((r) => [r.sec, r.nsec]), [
      [0, 0],
      [0, 0],
      [0, 999_999_999],
      [1, 0],
    ]);
  } finally {
    Deno.removeSync(path);
  }
});
