import { deepEqual, equal, ok } from "node:assert/strict";
import { listenSocket, PortSockets, UDP_RCVBUF } from "../../lib/l4/listen.ts";
import * as sys from "../../lib/sys/mod.ts";

Deno.test("PortSockets: slots stay put, freed slots are reused, a port closes as a whole", () => {
  const s = new PortSockets<{ fd: number; port: number }>();
  equal(s.nextSlot(), 0);
  equal(s.add({ fd: 10, port: 80 }), 0);
  equal(s.add({ fd: 11, port: 80 }), 1); // IPv4 and IPv6 of one port
  equal(s.add({ fd: 12, port: 53 }), 2);
  deepEqual([...s.ports()].sort(), [53, 80]);
  deepEqual(s.takePort(80).map((e) => e.fd), [10, 11]);
  equal(s.get(0), null, "a late event for a closed slot finds nothing");
  equal(s.get(2)?.fd, 12, "other slots did not move");
  const reused = s.nextSlot();
  equal(reused === 0 || reused === 1, true, "a freed slot is next");
  equal(s.add({ fd: 13, port: 443 }), reused);
  deepEqual(s.takeAll().map((e) => e.fd).sort(), [12, 13]);
  deepEqual([...s.ports()], []);
  equal(s.nextSlot(), 0);
});

Deno.test("UDP sockets toward the host ask for a 4 MiB receive buffer; TCP listeners keep the default", () => {
  const rmemMax = Number(Deno.readTextFileSync("/proc/sys/net/core/rmem_max"));
  const loopback = new Uint8Array([127, 0, 0, 1]);
  const udp = listenSocket(sys.SOCK_DGRAM, 4, loopback, null, 0);
  const tcp = listenSocket(sys.SOCK_STREAM, 4, loopback, null, 0);
  try {
    ok(udp >= 0 && tcp >= 0);
    // The kernel doubles what it grants, for its own bookkeeping.
    equal(
      sys.getsockoptInt(udp, sys.SOL_SOCKET, sys.SO_RCVBUF),
      2 * Math.min(UDP_RCVBUF, rmemMax),
    );
    ok(sys.getsockoptInt(tcp, sys.SOL_SOCKET, sys.SO_RCVBUF) < 2 * UDP_RCVBUF);
  } finally {
    sys.close(udp);
    sys.close(tcp);
  }
});
