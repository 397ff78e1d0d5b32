import { equal, ok, throws } from "node:assert/strict";
import { SLOT_ALIGN, SlotMemory } from "../../lib/flow/slots.ts";
import { addrOf } from "../../lib/sys/structs.ts";

const MiB = 1048576;
/** This process's resident set now, in bytes, as the kernel counts it. */
function rss(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))![1]) * 1024;
}

Deno.test("slot arrays start zeroed, aligned, and do not overlap", () => {
  const mem = new SlotMemory(1000, [1, 64, 8]);
  const a = mem.view(Uint8Array, 0);
  const b = mem.view(Uint32Array, 1);
  const c = mem.view(Float64Array, 2);
  equal(a.length, 1000);
  equal(b.length, 1000 * 16);
  equal(c.length, 1000);
  for (const v of [a, b, c]) {
    // The mapping starts on a page; each array a whole number of blocks into it.
    equal(addrOf(new Uint8Array(v.buffer, v.byteOffset)) % 4096, 0, "each starts a page");
    equal(v.byteOffset % SLOT_ALIGN, 0, "and a block");
    ok(v.every((x) => x === 0), "zeroed");
  }
  a.fill(0xff);
  b.fill(0xffffffff);
  c.fill(-1);
  ok(a.every((x) => x === 0xff) && b.every((x) => x === 0xffffffff) && c.every((x) => x === -1));
});

Deno.test("slot memory is resident only where written, and a release gives it back", () => {
  const slots = 1 << 20;
  const mem = new SlotMemory(slots, [64]);
  const side = mem.view(Uint32Array, 0); // 64 MiB reserved
  const before = rss();
  // Use the low half (32 MiB): only that becomes resident.
  for (let i = 0; i < slots / 2; i++) side[i * 16] = i + 1;
  const used = rss() - before;
  ok(used > 30 * MiB && used < 40 * MiB, `the written half is resident: ${used / MiB} MiB`);
  // Flows above a quarter are gone: their pages go back at once.
  mem.release(slots / 4);
  const after = rss() - before;
  ok(after < used - 14 * MiB, `a quarter given back: ${after / MiB} MiB resident`);
  equal(side[(slots / 4 - 1) * 16], slots / 4, "slots below the release are kept");
  equal(side[(slots / 4) * 16], 0, "released slots read as zeros");
  equal(side[(slots / 2 - 1) * 16], 0);
  side[(slots / 2) * 16] = 5; // and can be used again
  equal(side[(slots / 2) * 16], 5);
});

Deno.test("a capacity beyond the address space is refused with the size named", () => {
  throws(
    () => new SlotMemory(2 ** 40, [1 << 20]),
    /cannot reserve \d+ bytes for \d+ flows: ENOMEM/,
  );
});

Deno.test("slot memory nobody holds any more is unmapped once collected", async () => {
  // In a child with gc() exposed: 20 tables' worth of 16 MiB each, written and dropped.
  const script = `
    import { SlotMemory } from ${
    JSON.stringify(new URL("../../lib/flow/slots.ts", import.meta.url).href)
  };
    const rss = () => Number(/VmRSS:\\s+(\\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))[1]) * 1024;
    for (let i = 0; i < 20; i++) new SlotMemory(1 << 20, [16]).view(Uint8Array, 0).fill(1);
    const held = rss();
    for (let i = 0; i < 5; i++) { gc(); await new Promise((r) => setTimeout(r, 20)); }
    console.log(JSON.stringify({ held, after: rss() }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    env: { DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1" },
    stderr: "inherit",
  }).output();
  equal(out.code, 0);
  const { held, after } = JSON.parse(new TextDecoder().decode(out.stdout));
  ok(held - after > 250 * MiB, `320 MiB written, ${(held - after) / MiB} MiB given back`);
});
