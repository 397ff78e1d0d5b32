/**
 * tapir in place of slirp4netns or pasta, for tests that start a container
 * engine: a wrapper script named like the program it replaces.
 *
 * The script runs `deno run -A main.ts` under the wrapper's own name
 * (`exec -a "$0"`), so tapir sees `slirp4netns` or `pasta` as its program
 * name, as it would when installed as a symlink to a compiled binary.
 *
 * @module
 */

import { MAIN } from "./tapir.ts";

/** The programs tapir can stand in for. */
export type EngineHelper = "slirp4netns" | "pasta";

/**
 * Writes an executable `DIR/NAME` that runs tapir as NAME and returns its
 * path. `denoDir` is the Deno cache the wrapper uses (an unprivileged user
 * needs one it can write); default: the caller's.
 */
export async function engineWrapper(
  name: EngineHelper,
  dir: string,
  denoDir?: string,
): Promise<string> {
  const path = `${dir}/${name}`;
  const env = denoDir === undefined ? "" : `export DENO_DIR='${denoDir}'\n`;
  await Deno.writeTextFile(
    path,
    `#!/bin/bash\n${env}exec -a "$0" '${Deno.execPath()}' run -A --no-config '${MAIN}' "$@"\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}
