/**
 * The command line: which program's contract tapir follows (its own,
 * slirp4netns's or pasta's), the configuration, logging, and the mode to
 * run. `main.ts` loads this module only on the main thread; the namespace
 * worker, which runs `main.ts` too, never does (see `main.ts`).
 *
 * @module
 */

import { ConfError, type NsConfig, parseConfig, usageText } from "./conf.ts";
import {
  contractOfName,
  type EngineContract,
  type EngineOptions,
  NO_ENGINE,
  programName,
} from "./engines/engine.ts";
import {
  parseSlirp4netnsArgs,
  slirp4netnsUsage,
  slirp4netnsVersion,
} from "./engines/slirp4netns.ts";
import { logClose, logSetup } from "./log.ts";
import { VERSION } from "./version.ts";

const encoder = new TextEncoder();

async function write(stream: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += await stream.write(bytes.subarray(off));
}

/** Prints `tapir: <message>` as one line on standard error. */
function fail(message: string): Promise<void> {
  return write(Deno.stderr, `tapir: ${message}\n`);
}

/**
 * Runs tapir with `args` (without the program name); resolves to the exit
 * status. Started under the name `slirp4netns` or `pasta` (or with that
 * word first), tapir follows that program's contract (`lib/engines/`).
 */
export async function main(args: string[], mainUrl: string): Promise<number> {
  // `tapir ctl` is a client of a running tapir, with options of its own.
  if (args[0] === "ctl") return await (await import("./ctl.ts")).runCtl(args.slice(1));
  const byName = contractOfName(programName());
  const contract: EngineContract | null = byName ?? contractOfName(args[0] ?? "");
  const rest = byName === null && contract !== null ? args.slice(1) : args;
  let conf;
  let engine: EngineOptions = NO_ENGINE;
  try {
    if (contract === "slirp4netns") {
      const request = parseSlirp4netnsArgs(rest);
      if (request.kind === "help") {
        await write(Deno.stdout, slirp4netnsUsage());
        return 0;
      }
      if (request.kind === "version") {
        await write(Deno.stdout, slirp4netnsVersion());
        return 0;
      }
      conf = parseConfig(request.nsArgs);
      engine = request.engine;
    } else if (contract === "pasta") {
      conf = parseConfig(["ns", ...rest]);
      if (conf.mode === "ns") engine = pastaEngine(conf);
    } else {
      conf = parseConfig(args);
      // An attached tapir ends with what it serves, as pasta does.
      if (conf.mode === "ns" && conf.target.kind !== "spawn") {
        engine = { ...NO_ENGINE, endWithTarget: true };
      }
    }
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
    if (conf.mode === "ns") {
      // A re-execution runs the same contract, whatever name it starts under.
      const again = contract === null ? args : [contract, ...rest];
      const { runNs } = await import("./modes/ns.ts");
      return await runNs(conf, mainUrl, again, engine);
    }
    const { runVm } = await import("./modes/vm.ts");
    return await runVm(conf);
  } finally {
    logClose();
  }
}

/**
 * pasta's contract on top of `tapir ns`: attached to an existing namespace,
 * tapir ends with it, and without `-f` it daemonises as pasta does.
 */
function pastaEngine(conf: NsConfig): EngineOptions {
  const attached = conf.target.kind !== "spawn";
  return {
    ...NO_ENGINE,
    contract: "pasta",
    daemon: attached && !conf.foreground,
    endWithTarget: attached,
  };
}
