import { deepStrictEqual } from "node:assert/strict";
import { parseArgs } from "node:util";
import { type ArgSpec, type ArgToken, tokenizeArgs } from "../lib/args.ts";

const SPECS: readonly ArgSpec[] = [
  { long: "mtu", short: "m", value: "V" },
  { long: "tcp-ports", short: "t", value: "V" },
  { long: "ipv4-only", short: "4" },
  { long: "ipv6-only", short: "6" },
  { long: "debug", short: "d" },
  { long: "config-net" },
  { long: "netns", value: "V" },
];

/** The tokens `node:util`'s lenient parseArgs makes, without its undefined fields. */
function nodeTokens(args: string[]): ArgToken[] {
  const options = Object.fromEntries(SPECS.map((s) => {
    const type = s.value !== undefined ? "string" as const : "boolean" as const;
    return [s.long, s.short === undefined ? { type } : { type, short: s.short }];
  }));
  const { tokens } = parseArgs({
    args,
    options,
    strict: false,
    tokens: true,
    allowPositionals: true,
  });
  return tokens.map((t) =>
    Object.fromEntries(Object.entries(t).filter(([, v]) => v !== undefined)) as ArgToken
  );
}

Deno.test("the tokenizer reads the forms tapir's options are written in", () => {
  deepStrictEqual(tokenizeArgs(["-m1500", "--netns=/run/x", "-46", "--", "-d"], SPECS), [
    { kind: "option", index: 0, name: "mtu", rawName: "-m", value: "1500", inlineValue: true },
    {
      kind: "option",
      index: 1,
      name: "netns",
      rawName: "--netns",
      value: "/run/x",
      inlineValue: true,
    },
    { kind: "option", index: 2, name: "ipv4-only", rawName: "-4" },
    { kind: "option", index: 2, name: "ipv6-only", rawName: "-6" },
    { kind: "option-terminator", index: 3 },
    { kind: "positional", index: 4, value: "-d" },
  ]);
});

Deno.test("the tokenizer agrees with node:util parseArgs on 20 000 random command lines", () => {
  const words = [
    "-m",
    "-t",
    "-4",
    "-6",
    "-d",
    "-x",
    "-46",
    "-4m1500",
    "-d4t80",
    "-m1500",
    "-t-1",
    "--mtu",
    "--mtu=9000",
    "--tcp-ports",
    "--config-net",
    "--config-net=yes",
    "--netns",
    "--unknown",
    "--unknown=1",
    "--=x",
    "--",
    "-",
    "80",
    "sh",
    "-c",
    "ip addr",
    "",
  ];
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let n = 0; n < 20_000; n++) {
    const args = Array.from(
      { length: Math.floor(rand() * 7) },
      () => words[Math.floor(rand() * words.length)],
    );
    deepStrictEqual(tokenizeArgs(args, SPECS), nodeTokens(args), JSON.stringify(args));
  }
});
