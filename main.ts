/**
 * tapir's entry point: parse the command line, set up logging, start the mode,
 * and turn the outcome into an exit status (`lib/cli.ts`).
 *
 * Runs the same way from the source tree, from a URL and from a `deno bundle`
 * file, so it reads nothing relative to its own location and needs no
 * deno.json.
 *
 * This module is also the namespace worker's entry (see `lib/ns.ts`), so its
 * static imports are only what the worker needs: the worker's start — a V8
 * isolate and its module graph — is the longest step of a namespace's
 * start-up, and every module imported here would load twice. The command
 * line's modules (configuration, engines, the modes) come with a dynamic
 * import on the main thread only.
 *
 * @module
 */

import { isNsWorker, nsWorkerMain } from "./lib/ns.ts";

/**
 * Runs tapir with `args` (without the program name); resolves to the exit
 * status. Started under the name `slirp4netns` or `pasta` (or with that
 * word first), tapir follows that program's contract (`lib/engines/`).
 */
export async function main(args: string[]): Promise<number> {
  const cli = await import("./lib/cli.ts");
  return await cli.main(args, import.meta.url);
}

// The namespace worker runs this same module on its own thread (see lib/ns.ts).
if (isNsWorker()) nsWorkerMain();
else if (import.meta.main) Deno.exit(await main(Deno.args));
