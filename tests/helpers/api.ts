/**
 * A control-socket server for tests: `ApiServer` on a socket in a temporary
 * directory, with its loop running while the test body does.
 *
 * @module
 */

import { type ApiHandler, ApiServer, type ApiServerOptions } from "../../lib/api/server.ts";
import { Loop } from "../../lib/loop.ts";

/** What the body of {@linkcode withApiServer} gets. */
export interface ApiServerCtx {
  /** The running loop. */
  loop: Loop;
  /** The server. */
  server: ApiServer;
  /** The socket's path. */
  path: string;
  /** The temporary directory holding it. */
  dir: string;
}

/** Opens a server on a temporary path, runs the loop while `body` runs, then cleans up. */
export async function withApiServer(
  handler: ApiHandler,
  body: (ctx: ApiServerCtx) => Promise<void>,
  opts: ApiServerOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tapir-api-" });
  const path = `${dir}/api.sock`;
  const loop = new Loop();
  let server: ApiServer | null = null;
  let running: Promise<string> | null = null;
  try {
    server = ApiServer.open(loop, path, handler, opts);
    running = loop.run();
    await body({ loop, server, path, dir });
  } finally {
    loop.stop("test done");
    if (running !== null) await running;
    server?.close();
    loop.close();
    await Deno.remove(dir, { recursive: true });
  }
}
