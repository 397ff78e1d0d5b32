import { deepEqual, equal } from "node:assert/strict";
import { GuestState, macToString } from "../../lib/services/guest.ts";
import { GUEST_MAC } from "./harness.ts";

const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/** A frame-like buffer with `mac` as the source address at offset 6. */
function frameFrom(mac: number[] | Uint8Array): Uint8Array {
  const f = new Uint8Array(14);
  f.set(mac, 6);
  return f;
}

Deno.test("the guest's MAC is broadcast until a frame shows it", () => {
  const g = new GuestState();
  deepEqual([...g.mac], BROADCAST);
  equal(g.macKnown, false);
});

Deno.test("learnMac takes a unicast source, and says when it changed", () => {
  const g = new GuestState();
  equal(g.learnMac(frameFrom(GUEST_MAC), 6), true);
  deepEqual(g.mac, GUEST_MAC);
  equal(g.macKnown, true);
  equal(g.learnMac(frameFrom(GUEST_MAC), 6), false, "same MAC again is no change");
  const other = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
  equal(g.learnMac(frameFrom(other), 6), true);
  deepEqual([...g.mac], other);
});

Deno.test("learnMac keeps the same array, so holders of guest.mac see updates", () => {
  const g = new GuestState();
  const held = g.mac;
  g.learnMac(frameFrom(GUEST_MAC), 6);
  deepEqual(held, GUEST_MAC);
});

Deno.test("learnMac ignores multicast, broadcast and all-zero sources", () => {
  const g = new GuestState();
  for (
    const mac of [
      BROADCAST,
      [0x33, 0x33, 0x00, 0x00, 0x00, 0x01], // IPv6 all-nodes
      [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb], // IPv4 mDNS
      [0, 0, 0, 0, 0, 0],
    ]
  ) {
    equal(g.learnMac(frameFrom(mac), 6), false, macToString(new Uint8Array(mac)));
  }
  equal(g.macKnown, false);
  deepEqual([...g.mac], BROADCAST);

  g.learnMac(frameFrom(GUEST_MAC), 6);
  g.learnMac(frameFrom(BROADCAST), 6);
  deepEqual(g.mac, GUEST_MAC, "a group source does not overwrite a learned MAC");
});

Deno.test("forget goes back to broadcast", () => {
  const g = new GuestState();
  g.learnMac(frameFrom(GUEST_MAC), 6);
  g.forget();
  equal(g.macKnown, false);
  deepEqual([...g.mac], BROADCAST);
});

Deno.test("macToString writes colon-separated lowercase hex", () => {
  equal(macToString(GUEST_MAC), "52:54:00:12:34:56");
  equal(
    macToString(new Uint8Array([0, 0, 0xab, 0, 0, 0, 0x0a, 1, 2, 3, 4, 5]), 6),
    "0a:01:02:03:04:05",
  );
});
