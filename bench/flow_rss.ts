// RSS of a full flow table of the default capacity, every flow ACTIVE with
// both sides hashed: `deno run -A bench/flow_rss.ts`.
import { FlowSide, flowSidx, FlowTable, FlowType, Pif } from "../lib/flow/table.ts";

const mib = (b: number) => (b / 1048576).toFixed(1);
const before = Deno.memoryUsage().rss;
const table = new FlowTable();
const side = new FlowSide();
for (let n = 0; n < table.capacity; n++) {
  const i = table.alloc();
  side.set4(Pif.TAP, 0x0a000000 + n, 1 + (n % 60000), 0x0a000001, 80);
  table.setIni(i, side);
  side.set4(Pif.HOST, 0x7f000001, 80, 0x7f000001, 1 + (n % 60000));
  table.setTgt(i, side);
  table.setType(i, FlowType.TCP, null);
  table.hashInsert(flowSidx(i, 0));
  table.hashInsert(flowSidx(i, 1));
  table.activate(i);
}
if (table.alloc() !== -1) throw new Error("table not full");
const after = Deno.memoryUsage().rss;
console.log(
  `full table: ${table.capacity} flows, RSS ${mib(after)} MiB (process), +${
    mib(after - before)
  } MiB for the table`,
);
