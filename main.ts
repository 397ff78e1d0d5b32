/**
 * tapir's entry point: parse the command line, set up logging, start the mode,
 * and turn the outcome into an exit status.
 *
 * Runs the same way from the source tree, from a URL and from a `deno bundle`
 * file, so it reads nothing relative to its own location and needs no
 * deno.json.
 *
 * @module
 */

import { ConfError, parseConfig, usageText } from "./lib/conf.ts";
import { runCtl } from "./lib/ctl.ts";
import { logClose, logSetup } from "./lib/log.ts";
import { runNs } from "./lib/modes/ns.ts";
import { runVm } from "./lib/modes/vm.ts";
import { isNsWorker, nsWorkerMain } from "./lib/ns.ts";
import { VERSION } from "./lib/version.ts";

const encoder = new TextEncoder();

async function write(stream: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += await stream.write(bytes.subarray(off));
}

/** Prints `tapir: <message>` as one line on standard error. */
function fail(message: string): Promise<void> {
  return write(Deno.stderr, `tapir: ${message}\n`);
}

/** Runs tapir with `args` (without the program name); resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  // `tapir ctl` is a client of a running tapir, with options of its own.
  if (args[0] === "ctl") return await runCtl(args.slice(1));
  let conf;
  try {
    conf = parseConfig(args);
  } catch (err) {
    if (!(err instanceof ConfError)) throw err;
    await fail(err.message);
    return 1;
  }

  switch (conf.mode) {
    case "help":
      await write(Deno.stdout, usageText());
      return 0;
    case "version":
      await write(Deno.stdout, `tapir ${VERSION}\n`);
      return 0;
  }

  try {
    logSetup({ level: conf.logLevel, file: conf.logFile ?? undefined });
  } catch (err) {
    await fail(`--log-file: cannot open ${conf.logFile}: ${(err as Error).message}`);
    return 1;
  }
  try {
    if (conf.mode === "ns") return await runNs(conf, import.meta.url, args);
    return await runVm(conf);
  } finally {
    logClose();
  }
}

// The namespace worker runs this same module on its own thread (see lib/ns.ts).
if (isNsWorker()) nsWorkerMain();
else if (import.meta.main) Deno.exit(await main(Deno.args));
