import { deepEqual, equal, ok } from "node:assert/strict";
import type { PortFwd } from "../../lib/fwd.ts";
import {
  autoPorts,
  ephemeralPortRange,
  isLoopbackAddr,
  isWildcardOrLoopback,
  parseProcNetTcp,
  parseProcNetUdp,
  readTcpListening,
  readUdpBound,
  type TcpListenScan,
} from "../../lib/l4/tcp_scan.ts";
import * as sys from "../../lib/sys/mod.ts";

// Lines as the kernel prints them (trailing fields shortened). Addresses are
// host-order words in hex: 0100007F is 127.0.0.1 on a little-endian machine.
const TCP4 = [
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
  "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 101 1",
  "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 102 1",
  "   2: 0202000A:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 103 1",
  "   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 104 1",
  "   4: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 105 1",
  "   5: garbage",
  "",
].join("\n");

const TCP6 = [
  "  sl  local_address                         remote_address                        st tx_queue",
  "   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000",
  "   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000",
  "   2: B80D0120000000000000000002000000:0035 00000000000000000000000000000000:0000 0A 00000000",
  "   3: 0000000000000000FFFF00000100007F:0051 00000000000000000000000000000000:0000 0A 00000000",
  "   4: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F91 01 00000000",
].join("\n");

Deno.test("/proc/net/tcp: LISTEN sockets with their port and address, each once", () => {
  deepEqual(parseProcNetTcp(TCP4, false), [
    { port: 8080, addr: [127, 0, 0, 1] },
    { port: 22, addr: [0, 0, 0, 0] },
    { port: 443, addr: [10, 0, 2, 2] },
  ]);
});

Deno.test("/proc/net/tcp6: LISTEN sockets with 16-byte addresses in network order", () => {
  const lo6 = [...new Array(15).fill(0), 1];
  const any6 = new Array(16).fill(0);
  const doc = [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 2];
  const mapped = [...new Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1];
  deepEqual(parseProcNetTcp(TCP6, true), [
    { port: 8081, addr: lo6 },
    { port: 80, addr: any6 },
    { port: 53, addr: doc },
    { port: 81, addr: mapped },
  ]);
  deepEqual(parseProcNetTcp(TCP6, false), [], "IPv6 lines are not IPv4 lines");
});

Deno.test("the live table of this namespace shows a socket we listen on", () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const scan = readTcpListening();
    ok(
      scan.v4.some((e) => e.port === l.addr.port && e.addr.join(".") === "127.0.0.1"),
      `port ${l.addr.port} in ${JSON.stringify(scan.v4)}`,
    );
  } finally {
    l.close();
  }
  const after = readTcpListening();
  equal(after.v4.some((e) => e.port === l.addr.port), false, "gone once closed");
});

Deno.test("wildcard and loopback addresses are recognised in both families", () => {
  equal(isWildcardOrLoopback([0, 0, 0, 0]), true);
  equal(isWildcardOrLoopback([127, 1, 2, 3]), true);
  equal(isWildcardOrLoopback([192, 0, 2, 2]), false);
  equal(isWildcardOrLoopback(new Array(16).fill(0)), true);
  equal(isWildcardOrLoopback([...new Array(15).fill(0), 1]), true);
  equal(isWildcardOrLoopback([...new Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1]), true);
  equal(isWildcardOrLoopback([0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 2]), false);
});

const AUTO: PortFwd = { mode: "auto", rules: [], excluded: [] };

function scanOf(v4: [number, number[]][], v6: [number, number[]][]): TcpListenScan {
  return {
    v4: v4.map(([port, addr]) => ({ port, addr })),
    v6: v6.map(([port, addr]) => ({ port, addr })),
  };
}

Deno.test("auto forwards every port listened on in either family, once, sorted", () => {
  const any4 = [0, 0, 0, 0];
  const any6 = new Array(16).fill(0);
  const scan = scanOf([[8080, any4], [22, any4]], [[8080, any6], [9000, any6]]);
  deepEqual(autoPorts(scan, AUTO, { own: new Set() }), [22, 8080, 9000]);
});

Deno.test("auto leaves out tapir's own ports and excluded ranges", () => {
  const any4 = [0, 0, 0, 0];
  const scan = scanOf([[22, any4], [5000, any4], [8080, any4], [8081, any4], [8090, any4]], []);
  const fwd: PortFwd = { mode: "auto", rules: [], excluded: [{ first: 8080, last: 8081 }] };
  deepEqual(autoPorts(scan, fwd, { own: new Set([5000]) }), [22, 8090]);
});

Deno.test("auto for -T counts only sockets the host's loopback can reach", () => {
  const scan = scanOf(
    [[1000, [127, 0, 0, 1]], [1001, [192, 0, 2, 2]], [1002, [0, 0, 0, 0]]],
    [[1003, [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 2]]],
  );
  deepEqual(autoPorts(scan, AUTO, { own: new Set(), loopbackReachable: true }), [1000, 1002]);
  deepEqual(autoPorts(scan, AUTO, { own: new Set() }), [1000, 1001, 1002, 1003]);
});

// UDP tables as the kernel prints them: bound sockets are st 07, connected
// ones st 01 with the peer in rem_address. Line 4 is made up: st 07 with a
// remote address, which a server socket never has.
const UDP4 = [
  "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops",
  " 9584: 0100007F:88A3 0100007F:14E9 01 00000000:00000000 00:00000000 00000000     0        0 2719744 2 00000000ebb0065a 0",
  "12726: 0100007F:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2719742 2 00000000454d37c2 0",
  "16373: 00000000:2328 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2719743 2 00000000dea76f99 0",
  "16374: 0202000A:2329 0100007F:0035 07 00000000:00000000 00:00000000 00000000     0        0 2719745 2 00000000dea76f9a 0",
  "16375: 00000000:2328 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2719746 2 00000000dea76f9b 0",
  "16376: 0202000A:232A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2719747 2 00000000dea76f9c 0",
].join("\n");

const UDP6 = [
  "  sl  local_address                         remote_address                        st tx_queue",
  "    6: 00000000000000000000000001000000:E339 00000000000000000000000001000000:2329 01 00000000",
  "16374: 00000000000000000000000001000000:2329 00000000000000000000000000000000:0000 07 00000000",
  "16375: 00000000000000000000000000000000:232A 00000000000000000000000000000000:0000 07 00000000",
  "16376: B80D0120000000000000000002000000:232B 00000000000000000000000000000000:0000 07 00000000",
  "16377: 0000000000000000FFFF00000100007F:232C 00000000000000000000000000000000:0000 07 00000000",
].join("\n");

Deno.test("/proc/net/udp: bound, unconnected sockets count, each once; connected ones do not", () => {
  deepEqual(parseProcNetUdp(UDP4, false), [
    { port: 5353, addr: [127, 0, 0, 1] },
    { port: 9000, addr: [0, 0, 0, 0] },
  ]);
  deepEqual(
    parseProcNetTcp(UDP4, false),
    [{ port: 9002, addr: [10, 0, 2, 2] }],
    "each protocol has its own serving state",
  );
});

Deno.test("/proc/net/udp6: host-order words become network-order bytes", () => {
  const lo6 = [...new Array(15).fill(0), 1];
  const any6 = new Array(16).fill(0);
  const doc = [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 2];
  const mapped = [...new Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1];
  deepEqual(parseProcNetUdp(UDP6, true), [
    { port: 9001, addr: lo6 },
    { port: 9002, addr: any6 },
    { port: 9003, addr: doc },
    { port: 9004, addr: mapped },
  ]);
});

/** A UDP socket of this namespace bound to 127.0.0.1:`port` (0: the kernel picks); fd and port. */
function udpSocket(port: number, connectTo = 0): [number, number] {
  const fd = sys.socket(sys.AF_INET, sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const lo = new Uint8Array([127, 0, 0, 1]);
  if (sys.bind(fd, sa, sys.sockaddrIn4(sa, lo, port)) < 0) {
    sys.close(fd);
    return [-1, 0];
  }
  if (connectTo > 0) {
    sys.sysCheck(sys.connect(fd, sa, sys.sockaddrIn4(sa, lo, connectTo)), "connect");
  }
  const len = new Uint32Array([sa.length]);
  sys.getsockname(fd, sa, len);
  return [fd, (sa[2] << 8) | sa[3]];
}

/** A UDP socket bound to a free port below the ephemeral range. */
function udpServerSocket(): [number, number] {
  const below = (ephemeralPortRange()?.first ?? 32768) - 1;
  for (let tries = 0; tries < 100; tries++) {
    const [fd, port] = udpSocket(10000 + Math.floor(Math.random() * (below - 10000)));
    if (fd >= 0) return [fd, port];
  }
  throw new Error("no free UDP port");
}

Deno.test("the live UDP table shows a bound server socket, not a connected or an ephemeral one", () => {
  const [server, port] = udpServerSocket();
  const [client, clientPort] = udpSocket(0, port);
  const [lone, lonePort] = udpSocket(0);
  try {
    const range = ephemeralPortRange();
    ok(range !== null && lonePort >= range.first && lonePort <= range.last, "kernel-picked port");
    const has = (scan: { v4: readonly { port: number }[] }, p: number) =>
      scan.v4.some((e) => e.port === p);
    const scan = readUdpBound();
    ok(has(scan, port), `server port ${port} in ${JSON.stringify(scan.v4)}`);
    equal(has(readUdpBound(null), clientPort), false, "a connected socket is a client");
    equal(has(scan, lonePort), false, "an ephemeral port is left out");
    ok(has(readUdpBound(null), lonePort), "...but only because of its range");
  } finally {
    for (const fd of [server, client, lone]) sys.close(fd);
  }
  equal(readUdpBound().v4.some((e) => e.port === port), false, "gone once closed");
});

Deno.test("loopback addresses are told from the wildcard and others", () => {
  equal(isLoopbackAddr([127, 0, 0, 1]), true);
  equal(isLoopbackAddr([0, 0, 0, 0]), false);
  equal(isLoopbackAddr([...new Array(15).fill(0), 1]), true);
  equal(isLoopbackAddr(new Array(16).fill(0)), false);
  equal(isLoopbackAddr([...new Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1]), true);
  equal(isLoopbackAddr([...new Array(10).fill(0), 0xff, 0xff, 192, 0, 2, 2]), false);
});

Deno.test("auto for -u leaves out sockets bound to a loopback address", () => {
  const scan = scanOf(
    [[2000, [127, 0, 0, 1]], [2001, [192, 0, 2, 2]], [2002, [0, 0, 0, 0]]],
    [[2003, [...new Array(15).fill(0), 1]], [2004, new Array(16).fill(0)]],
  );
  deepEqual(autoPorts(scan, AUTO, { own: new Set(), notLoopback: true }), [2001, 2002, 2004]);
});
