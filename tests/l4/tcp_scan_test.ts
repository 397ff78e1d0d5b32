import { deepEqual, equal, ok } from "node:assert/strict";
import type { PortFwd } from "../../lib/fwd.ts";
import {
  autoPorts,
  isWildcardOrLoopback,
  parseProcNetTcp,
  readTcpListening,
  type TcpListenScan,
} from "../../lib/l4/tcp_scan.ts";

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
