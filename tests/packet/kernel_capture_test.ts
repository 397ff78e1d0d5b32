/**
 * Our parsers against real kernel traffic, with tshark as the referee.
 *
 * Two namespaces the test makes are joined by a veth pair (`veth-a` in the first,
 * `veth-b` in the second) with documentation addresses 192.0.2.1/2 and
 * 2001:db8::1/2. tcpdump captures on `veth-a` while the kernel does what it does
 * on a real link: ARP and NDP (the neighbour tables are flushed first), ping
 * in both families, a TCP connection carrying a few KiB each way in both
 * families, a UDP echo in both families, and whatever it sends on its own
 * (MLD reports behind a hop-by-hop header, router solicitations).
 *
 * Every captured frame must decode through our parsers without a
 * {@linkcode WireError}, and what we decode must equal what tshark decodes,
 * field by field. The capture must contain the exchanges we caused. A small
 * pcap reader here (both timestamp precisions, both byte orders) reads the
 * file; re-recording the frames with {@linkcode PcapWriter} and asking
 * tshark again checks the writer against the same referee.
 *
 * Checksums: with checksum offload (on by default on veth) the kernel leaves
 * TCP and UDP checksums partial — the field holds the folded pseudo-header
 * sum and the "hardware" was to finish it — and a capture on the veth sees
 * them that way. When `ethtool` is installed the test turns transmit offload
 * off on both ends and requires every checksum to verify; otherwise it
 * accepts, for TCP and UDP only, a checksum that verifies or is exactly that
 * partial value. IPv4 header, ICMP and ICMPv6 checksums are always computed
 * by the kernel in software and must always verify.
 *
 * @module
 */

import { equal, ok } from "node:assert/strict";
import { formatIp4, formatIp6 } from "../../lib/addr.ts";
import { ArpPacket, arpParse } from "../../lib/packet/arp.ts";
import { checksumFold, checksumPseudo4, checksumPseudo6 } from "../../lib/packet/checksum.ts";
import { EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { IcmpPacket, icmpParse, IcmpType } from "../../lib/packet/icmp.ts";
import {
  Icmp6Packet,
  icmp6Parse,
  Icmp6Type,
  NdpOptions,
  ndpOptionsParse,
  ndpParse,
} from "../../lib/packet/icmp6.ts";
import { Ip4Packet, ip4Parse } from "../../lib/packet/ip4.ts";
import { Ip6Packet, ip6Parse, ip6UpperNew } from "../../lib/packet/ip6.ts";
import { TcpFlag, TcpPacket, tcpParse } from "../../lib/packet/tcp.ts";
import { UdpPacket, udpParse } from "../../lib/packet/udp.ts";
import { IpProto, isWireError, WIRE_ERROR_NAMES, WireError } from "../../lib/packet/wire.ts";
import { PcapWriter } from "../../lib/pcap.ts";
import { nsArgs, nsRun, nsRunOk, withNetns } from "../helpers/netns.ts";

// ---------------------------------------------------------------------------
// A classic pcap reader: global header, then records, in either byte order,
// with microsecond (0xa1b2c3d4) or nanosecond (0xa1b23c4d) timestamps.

const MAGIC_US = 0xa1b2c3d4;
const MAGIC_NS = 0xa1b23c4d;
const LINKTYPE_ETHERNET = 1;

interface PcapRecord {
  /** Seconds of the timestamp. */
  sec: number;
  /** Fraction of the timestamp in nanoseconds, whatever the file's precision. */
  nsec: number;
  /** Captured bytes. */
  data: Uint8Array;
  /** Length of the frame on the wire. */
  origLen: number;
}

interface PcapFile {
  nanosecond: boolean;
  littleEndian: boolean;
  linktype: number;
  snaplen: number;
  records: PcapRecord[];
}

function readPcap(bytes: Uint8Array): PcapFile {
  if (bytes.length < 24) throw new Error(`pcap: ${bytes.length} bytes, no global header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let littleEndian = true;
  let magic = view.getUint32(0, true);
  if (magic !== MAGIC_US && magic !== MAGIC_NS) {
    littleEndian = false;
    magic = view.getUint32(0, false);
  }
  if (magic !== MAGIC_US && magic !== MAGIC_NS) {
    throw new Error(`pcap: unknown magic 0x${view.getUint32(0, false).toString(16)}`);
  }
  const nanosecond = magic === MAGIC_NS;
  const u32 = (off: number) => view.getUint32(off, littleEndian);
  const major = view.getUint16(4, littleEndian);
  if (major !== 2) throw new Error(`pcap: version ${major}`);
  const file: PcapFile = {
    nanosecond,
    littleEndian,
    snaplen: u32(16),
    linktype: u32(20) & 0x0fffffff, // the top bits may carry the FCS length
    records: [],
  };
  let pos = 24;
  while (pos < bytes.length) {
    if (pos + 16 > bytes.length) throw new Error(`pcap: record header cut at ${pos}`);
    const inclLen = u32(pos + 8);
    if (pos + 16 + inclLen > bytes.length) throw new Error(`pcap: record data cut at ${pos}`);
    if (inclLen > file.snaplen) throw new Error(`pcap: record of ${inclLen} > snaplen`);
    const frac = u32(pos + 4);
    file.records.push({
      sec: u32(pos),
      nsec: nanosecond ? frac : frac * 1000,
      origLen: u32(pos + 12),
      data: bytes.slice(pos + 16, pos + 16 + inclLen),
    });
    pos += 16 + inclLen;
  }
  return file;
}

// ---------------------------------------------------------------------------
// Decoding a frame with our parsers into the same columns as tshark's.

/** tshark fields compared, in this order. */
const FIELDS = [
  "frame.number",
  "eth.src",
  "eth.dst",
  "ip.src",
  "ip.dst",
  "ipv6.src",
  "ipv6.dst",
  "tcp.srcport",
  "tcp.dstport",
  "tcp.seq_raw",
  "tcp.ack_raw",
  "tcp.flags",
  "tcp.len",
  "udp.srcport",
  "udp.dstport",
  "udp.length",
  "ip.len",
  "ipv6.plen",
  "icmp.type",
  "icmpv6.type",
  "arp.opcode",
] as const;
type Field = (typeof FIELDS)[number];
type Row = Record<Field, string>;

/** What the frame was, for the "capture contains" checks. */
type Kind =
  | "arp request"
  | "arp reply"
  | "icmp echo request"
  | "icmp echo reply"
  | "icmpv6 echo request"
  | "icmpv6 echo reply"
  | "ndp ns"
  | "ndp na"
  | "tcp syn"
  | "tcp syn-ack"
  | "tcp data"
  | "tcp fin"
  | "udp data"
  | "mld report behind hop-by-hop";

interface Decoded {
  row: Row;
  kinds: Kind[];
  /** TCP/UDP checksum left partial by offload. */
  partialChecksum: boolean;
}

/** ICMPv6 type of an MLDv2 report (RFC 3810 §5.2); `icmp6.ts` has no name for it. */
const MLD2_REPORT = 143;

/** Why a frame failed to decode: the layer and the error. */
class DecodeFailure extends Error {}

function must(err: WireError | 0, layer: string): void {
  if (err !== 0) throw new DecodeFailure(`${layer}: ${WIRE_ERROR_NAMES[err]}`);
}

function mustParse<T>(r: T | WireError, layer: string): T {
  if (isWireError(r)) throw new DecodeFailure(`${layer}: ${WIRE_ERROR_NAMES[r]}`);
  return r;
}

const macText = (b: Uint8Array, off: number) =>
  [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, "0")).join(":");
const hexDump = (b: Uint8Array) => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");

const eth = new EthFrame();
const arp = new ArpPacket();
const ip4 = new Ip4Packet();
const ip6 = new Ip6Packet();
const tcp = new TcpPacket();
const udp = new UdpPacket();
const icmp = new IcmpPacket();
const icmp6 = new Icmp6Packet();
const upper = ip6UpperNew();
const ndpOpts = new NdpOptions();

/**
 * Decodes `frame` (number `n`, 1-based) with our parsers. Throws a
 * {@linkcode DecodeFailure} naming the layer on any {@linkcode WireError},
 * and on a TCP/UDP checksum that is neither right nor (if `allowPartial`)
 * the partial value offload leaves.
 */
function decode(frame: Uint8Array, n: number, allowPartial: boolean): Decoded {
  const row = Object.fromEntries(FIELDS.map((f) => [f, ""])) as Row;
  const kinds: Kind[] = [];
  let partialChecksum = false;
  row["frame.number"] = String(n);
  must(eth.wrap(frame, 0, frame.length), "eth");
  row["eth.src"] = macText(frame, eth.srcOffset);
  row["eth.dst"] = macText(frame, eth.dstOffset);

  // Verifies a TCP/UDP checksum, or accepts the offload's partial one.
  const transportChecksum = (ok: boolean, field: number, pseudo: number, layer: string) => {
    if (ok) return;
    if (allowPartial && field === checksumFold(pseudo)) {
      partialChecksum = true;
      return;
    }
    throw new DecodeFailure(`${layer}: bad checksum 0x${field.toString(16)}`);
  };

  const l4 = (proto: number, off: number, len: number, family: 4 | 6) => {
    const pseudo = (p: number, l: number) =>
      family === 4
        ? checksumPseudo4(ip4.src, ip4.dst, p, l)
        : checksumPseudo6(frame, ip6.srcOffset, frame, ip6.dstOffset, p, l);
    switch (proto) {
      case IpProto.Tcp: {
        must(tcp.wrap(frame, off, len), "tcp");
        const r = mustParse(tcpParse(tcp), "tcp");
        const good = family === 4
          ? tcp.checksumOk4(ip4.src, ip4.dst)
          : tcp.checksumOk6(frame, ip6.srcOffset, ip6.dstOffset);
        transportChecksum(good, tcp.checksum, pseudo(IpProto.Tcp, tcp.len), "tcp");
        row["tcp.srcport"] = String(r.srcPort);
        row["tcp.dstport"] = String(r.dstPort);
        row["tcp.seq_raw"] = String(r.seq >>> 0); // tshark prints them unsigned
        row["tcp.ack_raw"] = String(r.ack >>> 0);
        row["tcp.flags"] = `0x${r.flags.toString(16).padStart(4, "0")}`;
        row["tcp.len"] = String(r.payloadLen);
        const syn = (r.flags & TcpFlag.Syn) !== 0;
        const ack = (r.flags & TcpFlag.Ack) !== 0;
        if (syn) kinds.push(ack ? "tcp syn-ack" : "tcp syn");
        if ((r.flags & TcpFlag.Fin) !== 0) kinds.push("tcp fin");
        if (r.payloadLen > 0) kinds.push("tcp data");
        return;
      }
      case IpProto.Udp: {
        must(udp.wrap(frame, off, len), "udp");
        const r = mustParse(udpParse(udp), "udp");
        const good = family === 4
          ? udp.checksumOk4(ip4.src, ip4.dst)
          : udp.checksumOk6(frame, ip6.srcOffset, ip6.dstOffset);
        transportChecksum(good, udp.checksum, pseudo(IpProto.Udp, udp.len), "udp");
        row["udp.srcport"] = String(r.srcPort);
        row["udp.dstport"] = String(r.dstPort);
        row["udp.length"] = String(udp.length);
        if (r.payloadLen > 0) kinds.push("udp data");
        return;
      }
      case IpProto.Icmp: {
        if (family !== 4) throw new DecodeFailure("ICMPv4 inside IPv6");
        must(icmp.wrap(frame, off, len), "icmp");
        const r = mustParse(icmpParse(icmp), "icmp");
        row["icmp.type"] = String(r.type);
        if (r.type === IcmpType.EchoRequest) kinds.push("icmp echo request");
        if (r.type === IcmpType.EchoReply) kinds.push("icmp echo reply");
        return;
      }
      case IpProto.Icmp6: {
        if (family !== 6) throw new DecodeFailure("ICMPv6 inside IPv4");
        must(icmp6.wrap(frame, off, len), "icmpv6");
        if (!icmp6.checksumOk(frame, ip6.srcOffset, ip6.dstOffset)) {
          throw new DecodeFailure(`icmpv6: bad checksum 0x${icmp6.checksum.toString(16)}`);
        }
        const r = mustParse(icmp6Parse(icmp6), "icmpv6");
        row["icmpv6.type"] = String(r.type);
        switch (r.type) {
          case Icmp6Type.EchoRequest:
            kinds.push("icmpv6 echo request");
            break;
          case Icmp6Type.EchoReply:
            kinds.push("icmpv6 echo reply");
            break;
          case Icmp6Type.RouterSolicit:
          case Icmp6Type.RouterAdvert:
          case Icmp6Type.NeighborSolicit:
          case Icmp6Type.NeighborAdvert: {
            // RFC 4861 §6.1.1/§7.1.1: NDP must come with hop limit 255.
            if (ip6.hopLimit !== 255) throw new DecodeFailure(`ndp: hop limit ${ip6.hopLimit}`);
            const ndp = mustParse(ndpParse(icmp6), "ndp");
            must(ndpOptionsParse(icmp6, ndpOpts), "ndp options");
            if (ndp.type === Icmp6Type.NeighborSolicit) kinds.push("ndp ns");
            if (ndp.type === Icmp6Type.NeighborAdvert) kinds.push("ndp na");
            break;
          }
          case MLD2_REPORT:
            // RFC 3810 §5: reports carry a router alert in a hop-by-hop header.
            if (ip6.nextHeader === IpProto.HopByHop) kinds.push("mld report behind hop-by-hop");
            break;
        }
        return;
      }
    }
  };

  switch (eth.ethertype) {
    case EtherType.Arp: {
      must(arp.wrap(frame, eth.payloadOffset, eth.payloadLen), "arp");
      const r = mustParse(arpParse(arp), "arp");
      row["arp.opcode"] = String(r.op);
      kinds.push(r.op === 1 ? "arp request" : "arp reply");
      break;
    }
    case EtherType.Ipv4: {
      must(ip4.wrap(frame, eth.payloadOffset, eth.payloadLen), "ipv4");
      mustParse(ip4Parse(ip4), "ipv4");
      row["ip.src"] = formatIp4(frame, ip4.srcOffset);
      row["ip.dst"] = formatIp4(frame, ip4.dstOffset);
      row["ip.len"] = String(ip4.totalLen);
      l4(ip4.proto, ip4.payloadOffset, ip4.payloadLen, 4);
      break;
    }
    case EtherType.Ipv6: {
      must(ip6.wrap(frame, eth.payloadOffset, eth.payloadLen), "ipv6");
      mustParse(ip6Parse(ip6), "ipv6");
      row["ipv6.src"] = formatIp6(frame, ip6.srcOffset);
      row["ipv6.dst"] = formatIp6(frame, ip6.dstOffset);
      row["ipv6.plen"] = String(ip6.payloadLen);
      must(ip6.findUpper(upper), "ipv6 extension headers");
      l4(upper.proto, upper.offset, upper.len, 6);
      break;
    }
    default:
      throw new DecodeFailure(`unexpected EtherType 0x${eth.ethertype.toString(16)}`);
  }
  return { row, kinds, partialChecksum };
}

// ---------------------------------------------------------------------------
// Processes: every child is remembered so it can be ended even on failure.

const decoder = new TextDecoder();

class Children {
  readonly #procs: Deno.ChildProcess[] = [];

  /** Starts `cmd args` inside namespace `ns`, stdin piped when `stdin` is true. */
  spawn(ns: string, cmd: string, args: string[], stdin = false): Deno.ChildProcess {
    const [c, a] = nsArgs(ns, cmd, args);
    const p = new Deno.Command(c, {
      args: a,
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#procs.push(p);
    return p;
  }

  /** Kills whatever is still running and reaps it. */
  async endAll(): Promise<void> {
    for (const p of this.#procs) {
      try {
        p.kill("SIGKILL");
      } catch {
        // already exited
      }
      await p.status;
    }
  }
}

/** Collects a child's whole stdout or stderr as text. */
async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stream) text += decoder.decode(chunk, { stream: true });
  return text;
}

/** Collects a child's whole stdout as bytes. */
async function readBytes(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Reads `stream` until the text so far matches `re`; returns that text and the rest's promise. */
async function waitFor(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
  what: string,
): Promise<{ head: string; rest: Promise<string> }> {
  const reader = stream.getReader();
  let head = "";
  const deadline = setTimeout(() => reader.cancel(`timed out waiting for ${what}`), 10_000);
  try {
    while (!re.test(head)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${what}: ended before ${re}: ${head}`);
      head += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(deadline);
  }
  const rest = (async () => {
    let text = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return text;
      text += decoder.decode(value, { stream: true });
    }
  })();
  return { head, rest };
}

/** Polls `ss` in `ns` until something listens on `proto` port `port` (up to 5 s). */
async function waitListening(ns: string, proto: "t" | "u", port: number): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const out = await nsRunOk(ns, "ss", [`-Hln${proto}`, `sport = :${port}`]);
    if (out.trim() !== "") return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nothing listens on ${proto === "t" ? "TCP" : "UDP"} port ${port} in ${ns}`);
}

/**
 * Polls until `ifname` in `ns` is operationally up (up to 5 s). IPv6 ignores
 * a link until then, so an early neighbour solicitation would go unanswered
 * and cost a one-second retry.
 */
async function waitLinkUp(ns: string, ifname: string): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const out = await nsRunOk(ns, "ip", ["-o", "link", "show", "dev", ifname]);
    if (/ state UP /.test(out)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${ifname} in ${ns} did not come up`);
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function firstExisting(paths: string[]): string | null {
  return paths.find(exists) ?? null;
}

// ---------------------------------------------------------------------------
// The traffic.

/** The veth ends: captured one in the first namespace, its peer in the second. */
const IF_A = "veth-a";
const IF_B = "veth-b";

/** A link-scope group joined in the second namespace, and the port its socket binds. */
const MLD_GROUP = "ff02::114";
const MLD_PORT = 5005;

const ADDR = {
  a4: "192.0.2.1",
  b4: "192.0.2.2",
  a6: "2001:db8::1",
  b6: "2001:db8::2",
} as const;

/** A TCP connection from namespace `client` to `server`, `data` sent and echoed back. */
async function tcpExchange(
  kids: Children,
  client: string,
  server: string,
  family: 4 | 6,
  port: number,
  data: Uint8Array,
): Promise<void> {
  const [listen, connect] = family === 4
    ? [`TCP4-LISTEN:${port},bind=${ADDR.b4},reuseaddr`, `TCP4:${ADDR.b4}:${port}`]
    : [`TCP6-LISTEN:${port},bind=[${ADDR.b6}],reuseaddr`, `TCP6:[${ADDR.b6}]:${port}`];
  // The server echoes (so data flows both ways) and closes after the client's FIN.
  const srv = kids.spawn(server, "socat", [listen, "PIPE"]);
  const srvErr = readAll(srv.stderr);
  void readAll(srv.stdout);
  await waitListening(server, "t", port);
  const cli = kids.spawn(client, "socat", ["-t", "2", "STDIO", connect], true);
  const out = readBytes(cli.stdout);
  const err = readAll(cli.stderr);
  const w = cli.stdin.getWriter();
  await w.write(data);
  await w.close();
  const [status, got] = await Promise.all([cli.status, out]);
  equal(status.code, 0, `TCP/IPv${family} client: ${await err}`);
  equal(hexDump(got), hexDump(data), `TCP/IPv${family}: echoed bytes`);
  equal((await srv.status).code, 0, `TCP/IPv${family} server: ${await srvErr}`);
}

/** One UDP datagram from `client` to an echo server in `server`, and its echo. */
async function udpExchange(
  kids: Children,
  client: string,
  server: string,
  family: 4 | 6,
  port: number,
): Promise<void> {
  const [listen, connect] = family === 4
    ? [`UDP4-LISTEN:${port},bind=${ADDR.b4}`, `UDP4:${ADDR.b4}:${port}`]
    : [`UDP6-LISTEN:${port},bind=[${ADDR.b6}]`, `UDP6:[${ADDR.b6}]:${port}`];
  const srv = kids.spawn(server, "socat", [listen, "PIPE"]);
  void readAll(srv.stdout);
  void readAll(srv.stderr);
  await waitListening(server, "u", port);
  const cli = kids.spawn(client, "socat", ["-t", "1", "STDIO", connect], true);
  const out = readAll(cli.stdout);
  const err = readAll(cli.stderr);
  const message = `udp echo over IPv${family}\n`;
  const w = cli.stdin.getWriter();
  await w.write(new TextEncoder().encode(message));
  await w.close();
  const [status, got] = await Promise.all([cli.status, out]);
  equal(status.code, 0, `UDP/IPv${family} client: ${await err}`);
  equal(got, message, `UDP/IPv${family}: echo`);
  // The server has no end of stream to see; it is ended once the echo is back.
  srv.kill("SIGTERM");
  await srv.status;
}

/** Pings `dst` twice (iputils if installed, else busybox); throws unless both replies came. */
async function ping(ns: string, family: 4 | 6, dst: string): Promise<void> {
  const iputils = firstExisting(["/usr/bin/ping", "/bin/ping"]);
  const [cmd, pre] = iputils !== null ? [iputils, []] : ["busybox", ["ping"]];
  // -A: the next request goes as soon as the reply is in, so this takes milliseconds.
  const r = await nsRun(ns, cmd, [...pre, `-${family}`, "-c", "2", "-A", "-W", "3", dst]);
  equal(r.code, 0, `ping -${family} ${dst}: ${r.stdout}${r.stderr}`);
  ok(/2 (packets )?received/.test(r.stdout), r.stdout);
}

// ---------------------------------------------------------------------------

Deno.test("kernel traffic captured on a veth decodes with our parsers exactly as tshark decodes it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tapir-capture-" });
  const kids = new Children();
  try {
    await withNetns((nsA) =>
      withNetns(async (nsB) => {
        try {
          await capture(kids, nsA, nsB, dir);
        } finally {
          // Namespaces cannot go while their processes live.
          await kids.endAll();
        }
      }, "tapir-capb"), "tapir-capa");
  } finally {
    await kids.endAll();
    await Deno.remove(dir, { recursive: true });
  }
});

async function capture(kids: Children, nsA: string, nsB: string, dir: string): Promise<void> {
  const ethtool = firstExisting(["/usr/sbin/ethtool", "/sbin/ethtool", "/usr/bin/ethtool"]);
  const noDad = "sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0";
  // DAD off before the veth exists, so its link-local addresses are usable at once.
  await nsRunOk(nsB, "sh", ["-c", noDad]);
  await nsRunOk(nsA, "sh", [
    "-c",
    [
      "set -e",
      noDad,
      `ip link add name ${IF_A} type veth peer name ${IF_B} netns ${nsB}`,
      `ip addr add ${ADDR.a4}/24 dev ${IF_A}`,
      `ip -6 addr add ${ADDR.a6}/64 dev ${IF_A} nodad`,
      ethtool !== null ? `${ethtool} -K ${IF_A} tx off >/dev/null` : "true",
      `ip link set dev ${IF_A} up`,
    ].join("\n"),
  ]);
  await nsRunOk(nsB, "sh", [
    "-c",
    [
      "set -e",
      `ip addr add ${ADDR.b4}/24 dev ${IF_B}`,
      `ip -6 addr add ${ADDR.b6}/64 dev ${IF_B} nodad`,
      ethtool !== null ? `${ethtool} -K ${IF_B} tx off >/dev/null` : "true",
      `ip link set dev ${IF_B} up`,
    ].join("\n"),
  ]);

  await waitLinkUp(nsA, IF_A);
  await waitLinkUp(nsB, IF_B);

  const pcapPath = `${dir}/veth.pcap`;
  // -U: every packet written as it comes; --immediate-mode: handed over at once,
  // so nothing is left in the ring when SIGINT arrives; -Z root: keep the
  // privileges that let it write into our root-only temporary directory.
  const dump = kids.spawn(nsA, "tcpdump", [
    "-i",
    IF_A,
    "-n",
    "-U",
    "--immediate-mode",
    "-Z",
    "root",
    "-w",
    pcapPath,
  ]);
  void readAll(dump.stdout);
  const started = await waitFor(dump.stderr, new RegExp(`listening on ${IF_A}`), "tcpdump");

  // Joining a group makes the kernel send an MLDv2 report at once (hop-by-hop
  // header first); the group is joined when the socket exists, before it is bound.
  const group = kids.spawn(nsB, "socat", [
    "-u",
    `UDP6-RECV:${MLD_PORT},ipv6-join-group=[${MLD_GROUP}]:${IF_B}`,
    "STDOUT",
  ]);
  void readAll(group.stdout);
  void readAll(group.stderr);
  await waitListening(nsB, "u", MLD_PORT);

  // Neighbour tables empty, so ARP and NDP must happen.
  await nsRunOk(nsA, "ip", ["neigh", "flush", "dev", IF_A]);
  await nsRunOk(nsB, "ip", ["neigh", "flush", "dev", IF_B]);
  await Promise.all([ping(nsA, 4, ADDR.b4), ping(nsA, 6, ADDR.b6)]);
  const bulk = new Uint8Array(6000).map((_, i) => (i * 131) & 0xff);
  await tcpExchange(kids, nsA, nsB, 4, 5001, bulk);
  await tcpExchange(kids, nsA, nsB, 6, 5002, bulk);
  await Promise.all([udpExchange(kids, nsA, nsB, 4, 5003), udpExchange(kids, nsA, nsB, 6, 5004)]);

  dump.kill("SIGINT");
  const dumpStatus = await dump.status;
  const dumpLog = started.head + (await started.rest);
  equal(dumpStatus.code, 0, `tcpdump: ${dumpLog}`);

  const file = readPcap(await Deno.readFile(pcapPath));
  equal(file.linktype, LINKTYPE_ETHERNET);
  const captured = /(\d+) packets? captured/.exec(dumpLog);
  ok(captured !== null, dumpLog);
  equal(file.records.length, Number(captured[1]), "records in the file vs tcpdump's count");
  ok(/^0 packets dropped by kernel$/m.test(dumpLog), dumpLog);

  // Our view of every frame.
  const ours: Decoded[] = [];
  const failures: string[] = [];
  file.records.forEach((rec, i) => {
    equal(rec.data.length, rec.origLen, `frame ${i + 1} cut by the snaplen`);
    try {
      ours.push(decode(rec.data, i + 1, ethtool === null));
    } catch (e) {
      if (!(e instanceof DecodeFailure)) throw e;
      failures.push(`frame ${i + 1}: ${e.message}: ${hexDump(rec.data)}`);
    }
  });
  ok(failures.length === 0, `our parsers refused kernel frames:\n${failures.join("\n")}`);
  if (ethtool !== null) {
    equal(ours.filter((d) => d.partialChecksum).length, 0, "offload was off: all checksums full");
  }

  // tshark's view, field by field.
  const theirs = await tsharkRows(pcapPath);
  equal(theirs.length, ours.length, "frames tshark read");
  const disagreements: string[] = [];
  ours.forEach((d, i) => {
    FIELDS.forEach((f, j) => {
      if (theirs[i][j] !== d.row[f]) {
        disagreements.push(`frame ${i + 1} ${f}: tshark "${theirs[i][j]}", ours "${d.row[f]}"`);
      }
    });
  });
  ok(disagreements.length === 0, `tshark disagrees:\n${disagreements.join("\n")}`);

  // The capture holds the exchanges we caused.
  const count = (k: Kind) => ours.filter((d) => d.kinds.includes(k)).length;
  const wanted: [Kind, number][] = [
    ["arp request", 1],
    ["arp reply", 1],
    ["icmp echo request", 2],
    ["icmp echo reply", 2],
    ["icmpv6 echo request", 2],
    ["icmpv6 echo reply", 2],
    ["ndp ns", 1],
    ["ndp na", 1],
    ["tcp syn", 2],
    ["tcp syn-ack", 2],
    ["tcp data", 4],
    ["tcp fin", 4],
    ["udp data", 4],
    ["mld report behind hop-by-hop", 1],
  ];
  for (const [kind, atLeast] of wanted) {
    ok(count(kind) >= atLeast, `${kind}: ${count(kind)} in the capture, want ${atLeast}+`);
  }
  // Both directions of both TCP connections carried the whole payload.
  const tcpBytes = (port: number, dir: "tcp.srcport" | "tcp.dstport") =>
    ours.filter((d) => d.row[dir] === String(port))
      .reduce((n, d) => n + Number(d.row["tcp.len"]), 0);
  for (const port of [5001, 5002]) {
    equal(tcpBytes(port, "tcp.dstport"), bulk.length, `TCP port ${port}: bytes to the server`);
    equal(tcpBytes(port, "tcp.srcport"), bulk.length, `TCP port ${port}: bytes echoed back`);
  }

  // Re-recorded by our writer (nanosecond pcap), the frames read back the same
  // through our reader and tshark alike.
  const again = `${dir}/rewritten.pcap`;
  const w = PcapWriter.open(again);
  for (const rec of file.records) {
    w.frame(rec.data, rec.data.length, BigInt(rec.sec) * 1_000_000_000n + BigInt(rec.nsec));
  }
  w.close();
  const reread = readPcap(await Deno.readFile(again));
  ok(reread.nanosecond && !file.nanosecond, "one file of each timestamp precision");
  equal(reread.records.length, file.records.length);
  reread.records.forEach((r, i) => {
    const o = file.records[i];
    ok(
      r.sec === o.sec && r.nsec === o.nsec && r.origLen === o.origLen &&
        hexDump(r.data) === hexDump(o.data),
      `rewritten frame ${i + 1} differs`,
    );
  });
  const theirsAgain = await tsharkRows(again);
  ok(
    JSON.stringify(theirsAgain) === JSON.stringify(theirs),
    "tshark reads the re-recorded capture differently",
  );
}

const ROOT_WARNING = /^Running as user "root" and group "root"\. This could be dangerous\.$/;

/** tshark's values of {@linkcode FIELDS}, first occurrence (the outer header) of each. */
async function tsharkRows(path: string): Promise<string[][]> {
  const out = await new Deno.Command("/usr/bin/tshark", {
    args: [
      "-r",
      path,
      "-T",
      "fields",
      "-E",
      "separator=/t",
      "-E",
      "occurrence=f",
      ...FIELDS.flatMap((f) => ["-e", f]),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = decoder.decode(out.stderr);
  equal(out.code, 0, `tshark: ${stderr}`);
  const warnings = stderr.split("\n").filter((l) => l.trim() !== "" && !ROOT_WARNING.test(l));
  ok(warnings.length === 0, `tshark warned:\n${warnings.join("\n")}`);
  return decoder.decode(out.stdout).split("\n").filter((l) => l !== "").map((l) => l.split("\t"));
}
