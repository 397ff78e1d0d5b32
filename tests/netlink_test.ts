// Tests for lib/netlink.ts.
//
// The first group checks message building and parsing on synthetic bytes.
// The second runs the real thing: each test makes a throwaway network
// namespace, runs tests/fixtures/netlink_ops.ts inside it (netlink talks to
// the namespace of the calling thread, so the code under test must run in a
// process inside it), and compares what the fixture reports and did with what
// `ip` sees in the same namespace. No traffic leaves those namespaces.
import { deepEqual, ok } from "node:assert/strict";
import {
  decodeAddr,
  decodeLink,
  decodeRoute,
  IFA_ADDRESS,
  IFA_F_NODAD,
  IFA_F_PERMANENT,
  IFA_F_TENTATIVE,
  IFA_FLAGS,
  IFA_LOCAL,
  IFF_LOOPBACK,
  IFF_UP,
  IFINFOMSG_SIZE,
  IFLA_IFNAME,
  IFLA_MTU,
  NL_REPLY_MORE,
  NlAttrReader,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NlMsgBuilder,
  NlMsgReader,
  NlReplyScanner,
  RT_TABLE_MAIN,
  RTA_GATEWAY,
  RTA_MULTIPATH,
  RTA_OIF,
  RTA_PRIORITY,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
  RTN_UNICAST,
  RTPROT_BOOT,
} from "../lib/netlink.ts";
import { AF_INET, AF_INET6, Errno } from "../lib/sys/mod.ts";
import { formatIp4, formatIp6, parseIp } from "../lib/addr.ts";

const { EPROTO, EMSGSIZE, EEXIST, ENETUNREACH, ENODEV, EINVAL } = Errno;

// ---------------------------------------------------------------------------
// Synthetic messages

/** Concatenates messages into one datagram, each padded to 4 bytes. */
function datagram(...msgs: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(msgs.reduce((n, m) => n + ((m.length + 3) & ~3), 0));
  let o = 0;
  for (const m of msgs) {
    out.set(m, o);
    o += (m.length + 3) & ~3;
  }
  return out;
}

function built(b: NlMsgBuilder): Uint8Array {
  const len = b.finish();
  ok(len > 0);
  return b.bytes.slice(0, len);
}

/** An RTM_NEWADDR message for `addr` (IFA_LOCAL), as the kernel sends them. */
function addrMsg(seq: number, addr: string, prefixLen: number, index: number): Uint8Array {
  const ip = parseIp(addr)!;
  const b = new NlMsgBuilder();
  b.begin(RTM_NEWADDR, NLM_F_MULTI, seq);
  b.ifaddrmsg(ip.family === 4 ? AF_INET : AF_INET6, prefixLen, 0x80, 0, index);
  b.attr(IFA_LOCAL, ip.bytes);
  return built(b);
}

/** An NLMSG_ERROR message with `error` (0: ack), capped, optionally with a text. */
function errorMsg(seq: number, error: number, text = ""): Uint8Array {
  const textBytes = new TextEncoder().encode(text);
  const attrLen = text === "" ? 0 : (4 + textBytes.length + 1 + 3) & ~3;
  const len = NLMSG_HDRLEN + 4 + NLMSG_HDRLEN + attrLen;
  const m = new Uint8Array(len);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, len, true);
  dv.setUint16(4, NLMSG_ERROR, true);
  dv.setUint16(6, NLM_F_CAPPED | (text === "" ? 0 : NLM_F_ACK_TLVS), true);
  dv.setUint32(8, seq, true);
  dv.setInt32(16, error, true);
  dv.setUint32(20, NLMSG_HDRLEN, true); // the echoed request header
  dv.setUint32(28, seq, true);
  if (text !== "") {
    dv.setUint16(36, 4 + textBytes.length + 1, true);
    dv.setUint16(38, 1, true); // NLMSGERR_ATTR_MSG
    m.set(textBytes, 40);
  }
  return m;
}

function doneMsg(seq: number, error = 0): Uint8Array {
  const m = new Uint8Array(NLMSG_HDRLEN + 4);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, m.length, true);
  dv.setUint16(4, NLMSG_DONE, true);
  dv.setUint16(6, NLM_F_MULTI, true);
  dv.setUint32(8, seq, true);
  dv.setInt32(16, error, true);
  return m;
}

Deno.test("builder: header, family header and attributes are laid out and padded", () => {
  const b = new NlMsgBuilder(128);
  b.begin(RTM_NEWLINK, NLM_F_REQUEST, 0xdeadbeef);
  b.ifinfomsg(0, 7, IFF_UP, IFF_UP);
  b.attrString(IFLA_IFNAME, "ab"); // 4 + 3 bytes, padded to 8
  b.attrU32(IFLA_MTU, 1400);
  const len = b.finish();
  deepEqual(len, NLMSG_HDRLEN + IFINFOMSG_SIZE + 8 + 8);
  const dv = new DataView(b.bytes.buffer);
  deepEqual(dv.getUint32(0, true), len);
  deepEqual(dv.getUint16(4, true), RTM_NEWLINK);
  deepEqual(dv.getUint16(6, true), NLM_F_REQUEST);
  deepEqual(dv.getUint32(8, true), 0xdeadbeef);
  deepEqual(dv.getInt32(16 + 4, true), 7);
  deepEqual(dv.getUint32(16 + 8, true), IFF_UP);
  deepEqual(dv.getUint32(16 + 12, true), IFF_UP);
  const name = 16 + IFINFOMSG_SIZE;
  deepEqual(dv.getUint16(name, true), 7, "rta_len excludes the padding");
  deepEqual(dv.getUint16(name + 2, true), IFLA_IFNAME);
  deepEqual([...b.bytes.subarray(name + 4, name + 8)], [0x61, 0x62, 0, 0]);
  deepEqual(dv.getUint16(name + 8, true), 8);
  deepEqual(dv.getUint32(name + 12, true), 1400);

  // The same bytes read back through the cursors.
  const m = new NlMsgReader();
  m.reset(b.bytes, len);
  deepEqual(m.next(), 1);
  deepEqual([m.type, m.seq, m.start, m.end], [RTM_NEWLINK, 0xdeadbeef, 16, len]);
  const link = decodeLink(b.bytes, m.start, m.end);
  ok(typeof link === "object");
  deepEqual([link.index, link.name, link.mtu, link.flags], [7, "ab", 1400, IFF_UP]);
  deepEqual(m.next(), 0);
});

Deno.test("builder: a message that does not fit is -EMSGSIZE, and the next one is clean", () => {
  const b = new NlMsgBuilder(40);
  b.begin(RTM_NEWADDR, NLM_F_REQUEST, 1);
  b.ifaddrmsg(AF_INET6, 64, 0, 0, 2);
  b.attr(IFA_LOCAL, new Uint8Array(16)); // 16 + 8 + 20 = 44 > 40
  deepEqual(b.finish(), -EMSGSIZE);
  b.begin(RTM_NEWADDR, NLM_F_REQUEST, 2);
  b.ifaddrmsg(AF_INET, 24, 0, 0, 2);
  b.attr(IFA_LOCAL, new Uint8Array([10, 0, 0, 1]));
  deepEqual(b.finish(), 32);
});

Deno.test("reader: malformed message framing is -EPROTO, never an exception", () => {
  const good = addrMsg(1, "10.0.0.1", 24, 2);
  const m = new NlMsgReader();
  const cases: [string, Uint8Array][] = [];
  const short = good.slice();
  new DataView(short.buffer).setUint32(0, 8, true);
  cases.push(["nlmsg_len below the header size", short]);
  const long = good.slice();
  new DataView(long.buffer).setUint32(0, good.length + 4, true);
  cases.push(["nlmsg_len past the datagram", long]);
  cases.push(["trailing bytes shorter than a header", datagram(good, new Uint8Array(8))]);
  for (const [what, bytes] of cases) {
    m.reset(bytes, bytes.length);
    let rc = m.next();
    while (rc === 1) rc = m.next();
    deepEqual(rc, -EPROTO, what);
    deepEqual(m.next(), 0, `${what}: the walk stops`);
  }
  // A length larger than the buffer itself is clamped, not trusted.
  m.reset(good, good.length + 100);
  deepEqual(m.next(), 1);
  deepEqual(m.next(), 0);
});

Deno.test("attributes: bad lengths are -EPROTO; decoders turn them into error values", () => {
  const a = new NlAttrReader();
  const bytes = new Uint8Array([8, 0, 1, 0, 1, 2, 3, 4, 2, 0, 2, 0]); // ok, then rta_len 2
  a.reset(bytes, 0, bytes.length);
  deepEqual(a.next(), 1);
  deepEqual([a.type, a.u32()], [1, 0x04030201]);
  deepEqual(a.next(), -EPROTO);
  const past = new Uint8Array([12, 0, 1, 0, 1, 2, 3, 4]);
  a.reset(past, 0, past.length);
  deepEqual(a.next(), -EPROTO);

  const msg = addrMsg(1, "10.0.0.1", 24, 2);
  deepEqual(decodeAddr(msg, 16, 16 + 4), -EPROTO, "payload shorter than ifaddrmsg");
  deepEqual(decodeAddr(msg, 16, msg.length + 8), -EPROTO, "payload past the buffer");
  const wrongLength = new NlMsgBuilder();
  wrongLength.begin(RTM_NEWADDR, 0, 1);
  wrongLength.ifaddrmsg(AF_INET, 24, 0, 0, 2);
  wrongLength.attr(IFA_ADDRESS, new Uint8Array(16)); // IPv6-sized address in IPv4
  const w = built(wrongLength);
  deepEqual(decodeAddr(w, 16, w.length), -EPROTO);
  deepEqual(decodeLink(new Uint8Array(20), 0, 20), -EPROTO, "index 0 is not a link");
  deepEqual(decodeRoute(new Uint8Array(8), 0, 8), -EPROTO);
});

Deno.test("decodeAddr prefers IFA_LOCAL and the 32-bit IFA_FLAGS", () => {
  const b = new NlMsgBuilder();
  b.begin(RTM_NEWADDR, 0, 1);
  b.ifaddrmsg(AF_INET, 32, 0x80, 0, 5);
  b.attr(IFA_ADDRESS, new Uint8Array([10, 0, 0, 9])); // the peer, on a point-to-point link
  b.attr(IFA_LOCAL, new Uint8Array([10, 0, 0, 1]));
  b.attrU32(IFA_FLAGS, 0x380);
  const m = built(b);
  const a = decodeAddr(m, 16, m.length);
  ok(a !== null && typeof a === "object");
  deepEqual([formatIp4(a.addr), a.prefixLen, a.index, a.flags], ["10.0.0.1", 32, 5, 0x380]);
});

Deno.test("decodeRoute reads a multipath route's first next hop, and rejects a bad one", () => {
  const nexthops = new Uint8Array(8 + 8 + 8);
  const dv = new DataView(nexthops.buffer);
  dv.setUint16(0, 16, true); // rtnh_len: fixed part + RTA_GATEWAY (4 + 4)
  dv.setInt32(4, 3, true); // rtnh_ifindex
  dv.setUint16(8, 8, true);
  dv.setUint16(10, RTA_GATEWAY, true);
  nexthops.set([192, 0, 2, 1], 12);
  dv.setUint16(16, 8, true); // second hop, no attributes
  dv.setInt32(20, 4, true);
  const b = new NlMsgBuilder();
  b.begin(RTM_NEWROUTE, 0, 1);
  b.rtmsg(AF_INET, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST);
  b.attrU32(RTA_PRIORITY, 7);
  b.attr(RTA_MULTIPATH, nexthops);
  const m = built(b);
  const r = decodeRoute(m, 16, m.length);
  ok(r !== null && typeof r === "object");
  deepEqual(
    [formatIp4(r.dst), r.prefixLen, formatIp4(r.gateway!), r.index, r.metric, r.table],
    ["0.0.0.0", 0, "192.0.2.1", 3, 7, RT_TABLE_MAIN],
  );
  dv.setUint16(0, 40, true); // first hop claims more than RTA_MULTIPATH holds
  b.begin(RTM_NEWROUTE, 0, 1);
  b.rtmsg(AF_INET, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST);
  b.attr(RTA_MULTIPATH, nexthops);
  const bad = built(b);
  deepEqual(decodeRoute(bad, 16, bad.length), -EPROTO);
  b.begin(RTM_NEWROUTE, 0, 1);
  b.rtmsg(AF_INET, 0, RT_TABLE_MAIN, RTPROT_BOOT, 0, RTN_UNICAST);
  b.attrU32(RTA_OIF, 2);
  b.attr(RTA_GATEWAY, new Uint8Array(16)); // IPv6-sized gateway on an IPv4 route
  const mixed = built(b);
  deepEqual(decodeRoute(mixed, 16, mixed.length), -EPROTO);
});

Deno.test("scanner: a dump over two datagrams skips stale messages and ends at DONE", () => {
  const s = new NlReplyScanner();
  const seen: string[] = [];
  const visit = (type: number, buf: Uint8Array, start: number, end: number) => {
    const a = decodeAddr(buf, start, end);
    if (typeof a === "number") return a;
    seen.push(`${type}:${a!.family === 4 ? formatIp4(a!.addr) : formatIp6(a!.addr)}`);
    return 0;
  };
  s.begin(7);
  const first = datagram(
    addrMsg(6, "10.9.9.9", 8, 1), // an earlier request's left-over
    addrMsg(7, "10.0.0.1", 24, 2),
    addrMsg(7, "fd00::1", 64, 2),
  );
  deepEqual(s.feed(first, first.length, visit), NL_REPLY_MORE);
  const second = datagram(addrMsg(7, "10.0.0.2", 24, 3), doneMsg(7));
  deepEqual(s.feed(second, second.length, visit), 0);
  deepEqual(seen, [
    `${RTM_NEWADDR}:10.0.0.1`,
    `${RTM_NEWADDR}:fd00::1`,
    `${RTM_NEWADDR}:10.0.0.2`,
  ]);
  deepEqual(s.interrupted, false);
});

Deno.test("scanner: error acks become -errno with the kernel's text; acks 0", () => {
  const s = new NlReplyScanner();
  s.begin(3);
  const ack = errorMsg(3, 0);
  deepEqual(s.feed(ack, ack.length, null), 0);
  s.begin(4);
  const nack = datagram(errorMsg(3, 0), errorMsg(4, -EEXIST, "already there"));
  deepEqual(s.feed(nack, nack.length, null), -EEXIST, "the stale ack 3 is not ours");
  deepEqual(s.message, "already there");
  s.begin(5);
  const failedDump = doneMsg(5, -EINVAL);
  deepEqual(s.feed(failedDump, failedDump.length, null), -EINVAL);
  s.begin(6);
  const truncatedError = errorMsg(6, -EEXIST).slice(0, NLMSG_HDRLEN + 2);
  new DataView(truncatedError.buffer).setUint32(0, truncatedError.length, true);
  deepEqual(s.feed(truncatedError, truncatedError.length, null), -EPROTO);
});

Deno.test("scanner: a visitor's error wins but the answer is still read to its end", () => {
  const s = new NlReplyScanner();
  s.begin(9);
  let calls = 0;
  const failing = () => (++calls === 1 ? -EPROTO : 0);
  const part1 = datagram(addrMsg(9, "10.0.0.1", 24, 2), addrMsg(9, "10.0.0.2", 24, 2));
  deepEqual(s.feed(part1, part1.length, failing), NL_REPLY_MORE, "keeps reading");
  const interrupted = addrMsg(9, "10.0.0.3", 24, 2);
  new DataView(interrupted.buffer).setUint16(6, NLM_F_MULTI | NLM_F_DUMP_INTR, true);
  const part2 = datagram(interrupted, doneMsg(9));
  deepEqual(s.feed(part2, part2.length, failing), -EPROTO);
  deepEqual(calls, 1, "no visits after the failure");
  deepEqual(s.interrupted, true);
});

// ---------------------------------------------------------------------------
// In a namespace

const FIXTURE = new URL("./fixtures/netlink_ops.ts", import.meta.url).pathname;

async function run(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

/** Runs `ip -n NS ARGS`; throws with ip's message if it fails. */
function ip(ns: string, ...args: string[]): Promise<string> {
  return run("ip", ["-n", ns, ...args]);
}

/** `ip -n NS -j ARGS`, parsed. */
async function ipJson<T>(ns: string, ...args: string[]): Promise<T> {
  return JSON.parse(await ip(ns, "-j", ...args)) as T;
}

/** A fresh namespace for `fn`, deleted afterwards whatever happens. */
async function withNetns(fn: (ns: string) => Promise<void>): Promise<void> {
  const ns = `tapir-nl-${crypto.randomUUID().slice(0, 8)}`;
  await run("ip", ["netns", "add", ns]);
  try {
    await fn(ns);
  } finally {
    await run("ip", ["netns", "del", ns]);
  }
}

interface OpResult<T = unknown> {
  value: T;
  lastError: string;
  datagrams: number;
}

/** Runs the fixture's operations inside `ns`; one result per operation. */
async function netlinkOps(
  ns: string,
  ops: Record<string, unknown>[],
  recvBufferBytes?: number,
): Promise<OpResult[]> {
  const out = await run("ip", [
    "netns",
    "exec",
    ns,
    Deno.execPath(),
    "run",
    "-A",
    FIXTURE,
    JSON.stringify({ ops, recvBufferBytes }),
  ]);
  return (JSON.parse(out) as { results: OpResult[] }).results;
}

// The fixture's output shapes (addresses as text).
interface LinkOut {
  index: number;
  name: string;
  mtu: number;
  flags: number;
  mac: string;
}
interface AddrOut {
  index: number;
  family: 4 | 6;
  addr: string;
  prefixLen: number;
  scope: number;
  flags: number;
}
interface RouteOut {
  family: 4 | 6;
  dst: string;
  prefixLen: number;
  gateway: string | null;
  index: number;
  table: number;
  metric: number;
}

// `ip -j` shapes, the fields compared.
interface IpLink {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  address: string;
}
interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  tentative?: boolean;
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
  metric?: number;
}

function randomMac(): string {
  const b = crypto.getRandomValues(new Uint8Array(6));
  b[0] = (b[0] & 0xfe) | 0x02; // unicast, locally administered
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join(":");
}

/** A random 10.x.y.0/24 subnet's first three octets, so tests do not share addresses. */
function randomNet4(): string {
  const b = crypto.getRandomValues(new Uint8Array(2));
  return `10.${b[0]}.${b[1]}`;
}

Deno.test("netns: linkIndex finds lo, an unknown name is -ENODEV; links match ip", async () => {
  await withNetns(async (ns) => {
    await ip(ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
    await ip(ns, "tuntap", "add", "mode", "tap", "name", "tap0");
    const [lo, unknown, tooLong, loInfo, list] = await netlinkOps(ns, [
      { op: "linkIndex", name: "lo" },
      { op: "linkIndex", name: "nosuch0" },
      { op: "linkIndex", name: "a-name-of-16-byt" },
      { op: "linkGet", dev: "lo" },
      { op: "linkList" },
    ]);
    const ipLinks = await ipJson<IpLink[]>(ns, "link", "show");
    const ipLo = ipLinks.find((l) => l.ifname === "lo")!;
    deepEqual(lo.value, ipLo.ifindex);
    deepEqual(unknown.value, -ENODEV);
    deepEqual(tooLong.value, -EINVAL);
    const info = loInfo.value as LinkOut;
    deepEqual([info.name, info.mtu, info.mac], ["lo", ipLo.mtu, ipLo.address]);
    ok(info.flags & IFF_LOOPBACK);

    const links = list.value as LinkOut[];
    const summary = (index: number, name: string, mtu: number, mac: string, up: boolean) =>
      `${index} ${name} ${mtu} ${mac} ${up ? "up" : "down"}`;
    deepEqual(
      links.map((l) => summary(l.index, l.name, l.mtu, l.mac, (l.flags & IFF_UP) !== 0)).sort(),
      ipLinks.map((l) => summary(l.ifindex, l.ifname, l.mtu, l.address, l.flags.includes("UP")))
        .sort(),
    );
    deepEqual(links.length, 4, "lo, veth0, veth1, tap0");
  });
});

Deno.test("netns: linkSetUp, linkSetMtu and linkSetMac change a tap as ip sees it", async () => {
  await withNetns(async (ns) => {
    await ip(ns, "tuntap", "add", "mode", "tap", "name", "tap0");
    const mac = randomMac();
    const mtu = 1280 + crypto.getRandomValues(new Uint8Array(1))[0];
    const [setMac, setMtu, setUp, got, tooSmall] = await netlinkOps(ns, [
      { op: "linkSetMac", dev: "tap0", mac },
      { op: "linkSetMtu", dev: "tap0", mtu },
      { op: "linkSetUp", dev: "tap0", up: true },
      { op: "linkGet", dev: "tap0" },
      { op: "linkSetMtu", dev: "tap0", mtu: 20 }, // below Ethernet's minimum of 68
    ]);
    deepEqual([setMac.value, setMtu.value, setUp.value], [0, 0, 0]);
    const [upLink] = await ipJson<IpLink[]>(ns, "link", "show", "dev", "tap0");
    deepEqual([upLink.address, upLink.mtu, upLink.flags.includes("UP")], [mac, mtu, true]);
    const info = got.value as LinkOut;
    deepEqual([info.mac, info.mtu, (info.flags & IFF_UP) !== 0], [mac, mtu, true]);
    deepEqual(tooSmall.value, -EINVAL);
    deepEqual((await ipJson<IpLink[]>(ns, "link", "show", "dev", "tap0"))[0].mtu, mtu);

    const [setDown] = await netlinkOps(ns, [{ op: "linkSetUp", dev: "tap0", up: false }]);
    deepEqual(setDown.value, 0);
    const [downLink] = await ipJson<IpLink[]>(ns, "link", "show", "dev", "tap0");
    deepEqual(downLink.flags.includes("UP"), false);
  });
});

Deno.test("netns: addrAdd IPv4 and IPv6 (nodad), addrList reads them; twice: -EEXIST", async () => {
  await withNetns(async (ns) => {
    await ip(ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
    await ip(ns, "link", "set", "veth0", "up");
    const v4 = `${randomNet4()}.2`;
    const v6 = `fd00:${crypto.getRandomValues(new Uint16Array(1))[0].toString(16)}::2`;
    const results = await netlinkOps(ns, [
      { op: "addrAdd", dev: "veth0", family: 4, addr: v4, prefixLen: 24 },
      { op: "addrAdd", dev: "veth0", family: 6, addr: v6, prefixLen: 64, noDad: true },
      { op: "addrAdd", dev: "veth0", family: 4, addr: v4, prefixLen: 24 },
      { op: "addrList" },
      { op: "addrList", family: 6 },
      { op: "linkIndex", name: "veth0" },
    ]);
    const [add4, add6, again, all, only6, index] = results;
    deepEqual([add4.value, add6.value, again.value], [0, 0, -EEXIST]);

    const [ipVeth] = await ipJson<{ addr_info: IpAddrInfo[] }[]>(ns, "addr", "show", "veth0");
    const ipGlobal = ipVeth.addr_info.filter((a) => !a.local.startsWith("fe80:"));
    deepEqual(
      ipGlobal.map((a) => `${a.local}/${a.prefixlen}`).sort(),
      [`${v4}/24`, `${v6}/64`].sort(),
    );
    deepEqual(ipGlobal.some((a) => a.tentative), false, "nodad: usable at once");

    const mine = (all.value as AddrOut[]).filter((a) => a.index === index.value);
    const by = (addr: string) => mine.find((a) => a.addr === addr)!;
    deepEqual([by(v4).family, by(v4).prefixLen, by(v4).scope], [4, 24, 0]);
    deepEqual([by(v6).family, by(v6).prefixLen], [6, 64]);
    ok(by(v6).flags & IFA_F_NODAD, "flags come from IFA_FLAGS");
    ok(by(v6).flags & IFA_F_PERMANENT);
    deepEqual(by(v6).flags & IFA_F_TENTATIVE, 0);
    ok((only6.value as AddrOut[]).every((a) => a.family === 6));
    ok((only6.value as AddrOut[]).some((a) => a.addr === v6));
  });
});

Deno.test("netns: default routes via an on-link gateway; routeList and defaultRoute", async () => {
  await withNetns(async (ns) => {
    await ip(ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
    const net = randomNet4();
    const [noDefault] = await netlinkOps(ns, [{ op: "defaultRoute", family: 4 }]);
    deepEqual(noDefault.value, null);
    const results = await netlinkOps(ns, [
      { op: "linkSetUp", dev: "veth0", up: true },
      { op: "addrAdd", dev: "veth0", family: 4, addr: `${net}.2`, prefixLen: 24 },
      { op: "addrAdd", dev: "veth0", family: 6, addr: "fd00::2", prefixLen: 64, noDad: true },
      { op: "routeAdd", dev: "veth0", family: 4, prefixLen: 0, gateway: `${net}.1` },
      { op: "routeAdd", dev: "veth0", family: 6, prefixLen: 0, gateway: "fe80::1" },
      {
        op: "routeAdd",
        dev: "veth0",
        family: 4,
        dst: "10.250.0.0",
        prefixLen: 16,
        gateway: `${net}.3`,
        metric: 50,
      },
      { op: "routeAdd", dev: "veth0", family: 4, prefixLen: 0, gateway: `${net}.1` },
      {
        op: "routeAdd",
        dev: "veth0",
        family: 4,
        dst: "10.251.0.0",
        prefixLen: 16,
        gateway: "192.0.2.1", // no connected prefix covers it
      },
      { op: "routeList", family: 4 },
      { op: "routeList", family: 6 },
      { op: "defaultRoute", family: 4 },
      { op: "defaultRoute", family: 6 },
      { op: "linkIndex", name: "veth0" },
    ]);
    const [up, a4, a6, def4, def6, other, again, unreachable] = results;
    deepEqual(
      [up, a4, a6, def4, def6, other].map((r) => r.value),
      [0, 0, 0, 0, 0, 0],
      JSON.stringify(results.slice(0, 6)),
    );
    deepEqual(again.value, -EEXIST);
    deepEqual(unreachable.value, -ENETUNREACH);
    ok(unreachable.lastError !== "", "this kernel explains the failure (extended ack)");
    const [list4, list6, got4, got6, index] = results.slice(8).map((r) => r.value);

    // routeList agrees with `ip route show` (the main table) route by route.
    const names = new Map([[index as number, "veth0"]]);
    const asIp = (r: RouteOut) => {
      const full = r.family === 4 ? 32 : 128;
      const dst = r.prefixLen === 0
        ? "default"
        : r.prefixLen === full
        ? r.dst
        : `${r.dst}/${r.prefixLen}`;
      return `${dst} via ${r.gateway ?? "-"} dev ${names.get(r.index)} metric ${r.metric}`;
    };
    const fromIp = (r: IpRoute) =>
      `${r.dst} via ${r.gateway ?? "-"} dev ${r.dev} metric ${r.metric ?? 0}`;
    const ip4 = await ipJson<IpRoute[]>(ns, "route", "show");
    const ip6 = await ipJson<IpRoute[]>(ns, "-6", "route", "show");
    deepEqual((list4 as RouteOut[]).map(asIp).sort(), ip4.map(fromIp).sort());
    deepEqual((list6 as RouteOut[]).map(asIp).sort(), ip6.map(fromIp).sort());
    ok((list4 as RouteOut[]).every((r) => r.table === RT_TABLE_MAIN));
    ok(ip4.some((r) => r.dst === "10.250.0.0/16" && r.metric === 50));

    const d4 = got4 as RouteOut;
    const d6 = got6 as RouteOut;
    deepEqual([d4.gateway, d4.index, d4.prefixLen], [`${net}.1`, index, 0]);
    deepEqual([d6.gateway, d6.index, d6.prefixLen], ["fe80::1", index, 0]);
  });
});

Deno.test("netns: a dump of 400 addresses over many datagrams is read completely", async () => {
  await withNetns(async (ns) => {
    await ip(ns, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1");
    const lines: string[] = [];
    for (let i = 0; i < 200; i++) {
      lines.push(`addr add 10.77.${i >> 8}.${i & 255}/32 dev veth0`);
      lines.push(`addr add fd77::${(i + 1).toString(16)}/128 dev veth0 nodad`);
    }
    await run("ip", ["-n", ns, "-batch", "-"], lines.join("\n") + "\n");
    const ipAll = await ipJson<{ addr_info: IpAddrInfo[] }[]>(ns, "addr", "show");
    const expected = ipAll.flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`))
      .sort();
    ok(expected.length >= 400);

    // A receive buffer far smaller than the kernel's datagrams must grow to fit them.
    for (const recvBufferBytes of [undefined, 256]) {
      const [dump] = await netlinkOps(ns, [{ op: "addrList" }], recvBufferBytes);
      const got = (dump.value as AddrOut[]).map((a) => `${a.addr}/${a.prefixLen}`).sort();
      deepEqual(got, expected, `recvBufferBytes ${recvBufferBytes}`);
      ok(dump.datagrams > 1, `${dump.datagrams} datagram(s)`);
    }
  });
});
