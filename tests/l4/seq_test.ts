import { equal } from "node:assert/strict";
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from "../../lib/l4/seq.ts";

Deno.test("sequence numbers compare across the 2^32 wrap", () => {
  const near = 0xfffffff0;
  const past = seqAdd(near, 0x20); // wrapped to 0x10
  equal(past, 0x10);
  equal(seqLt(near, past), true);
  equal(seqGt(past, near), true);
  equal(seqDiff(past, near), 0x20);
  equal(seqLe(near, near), true);
  equal(seqGe(near, near), true);
  equal(seqLt(near, near), false);
  equal(seqGt(0x7fffffff, 0), true, "just under 2^31 ahead is after");
  equal(seqLt(0x80000001, 0), true, "just over 2^31 ahead counts as before");
});
