import { equal, ok, throws } from "node:assert/strict";
import {
  bytesCopy,
  bytesEqual,
  emitSpace,
  get16,
  get32,
  isWireError,
  set16,
  set32,
  WIRE_ERROR_COUNT,
  WIRE_ERROR_NAMES,
  WireError,
} from "../../lib/packet/wire.ts";
import { hex } from "./golden.ts";

Deno.test("wire: every error has a distinct name and fits the counter array", () => {
  const values = Object.values(WireError);
  equal(new Set(values).size, values.length);
  for (const v of values) {
    ok(v > 0 && v < WIRE_ERROR_COUNT, `value ${v}`);
    ok(WIRE_ERROR_NAMES[v].length > 0);
  }
  equal(Object.keys(WIRE_ERROR_NAMES).length, values.length);
  equal(new Set(Object.values(WIRE_ERROR_NAMES)).size, values.length);
});

Deno.test("wire: isWireError tells error numbers from objects", () => {
  ok(isWireError(WireError.Truncated));
  ok(!isWireError({}));
  ok(!isWireError(new Uint8Array(1)));
});

Deno.test("wire: big-endian reads", () => {
  const b = hex("12 34 56 78 9a bc de f0");
  equal(get16(b, 0), 0x1234);
  equal(get16(b, 1), 0x3456);
  equal(get32(b, 0), 0x12345678);
  equal(get32(b, 4), 0x9abcdef0); // unsigned even with the top bit set
});

Deno.test("wire: big-endian writes keep only the low bits", () => {
  const b = new Uint8Array(8);
  set16(b, 1, 0x1abcd);
  equal(get16(b, 1), 0xabcd);
  equal(b[0], 0);
  equal(b[3], 0);
  set32(b, 4, 0xfedcba98);
  equal(get32(b, 4), 0xfedcba98);
  set32(b, 4, -1);
  equal(get32(b, 4), 0xffffffff);
});

Deno.test("wire: bytesCopy and bytesEqual work on ranges at offsets", () => {
  const a = hex("00 11 22 33 44 55");
  const b = new Uint8Array(8);
  bytesCopy(b, 3, a, 1, 4);
  equal(Array.from(b).join(","), "0,0,0,17,34,51,68,0");
  ok(bytesEqual(a, 1, b, 3, 4));
  ok(!bytesEqual(a, 0, b, 3, 4));
});

Deno.test("wire: emitSpace refuses a buffer too small for a builder", () => {
  emitSpace(new Uint8Array(20), 0, 20, "test");
  throws(() => emitSpace(new Uint8Array(20), 1, 20, "test"), RangeError);
  throws(() => emitSpace(new Uint8Array(20), -1, 2, "test"), RangeError);
});
