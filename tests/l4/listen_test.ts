import { deepEqual, equal } from "node:assert/strict";
import { PortSockets } from "../../lib/l4/listen.ts";

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
