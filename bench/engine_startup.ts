/**
 * Start-up as container engines see it: how long the network helper takes
 * from exec until the engine may go on.
 *
 * - slirp4netns contract (podman 4, rootlesskit): exec → "1" on the ready
 *   descriptor, with podman 4.3's argument list (`--mtu=65520
 *   --enable-sandbox --enable-seccomp --enable-ipv6 -c -r FD --api-socket
 *   PATH --netns-type=path PATH tap0`).
 * - pasta contract (podman 5): exec → the first process's exit (status 0)
 *   with podman 5's argument list (`--config-net --dns-forward 169.254.1.1
 *   -t none -u none -T none -U none --no-map-gw --quiet --netns PATH --pid
 *   FILE`; Debian's pasta predates `--map-guest-addr`, so neither gets it;
 *   run as root it would switch to nobody and could not join the namespace,
 *   so it gets `--runas 0`).
 *
 * Each launch gets a fresh namespace under /run/netns, made before the clock
 * starts. A bash script in the harness's host namespace takes both
 * timestamps (`EPOCHREALTIME`), so the figure is the helper's alone: the
 * ready descriptor is a FIFO the script reads, and the helper is stopped
 * after. The real programs and tapir (`deno run -A main.ts` under the
 * program's name, as a wrapper installs it) run as root, alike. A bare
 * `deno run` of an empty file is timed the same way, as the runtime's own
 * share.
 *
 * @module
 */

import { type HostEnv, inHost } from "./hostns.ts";
import { runBounded } from "./proc.ts";

/** What is launched. */
export type EngineStartupCase =
  | "slirp4netns"
  | "tapir-slirp4netns"
  | "pasta"
  | "tapir-pasta"
  | "deno-empty";

/** Every case, in report order. */
export const ENGINE_STARTUP_CASES: readonly EngineStartupCase[] = [
  "slirp4netns",
  "tapir-slirp4netns",
  "pasta",
  "tapir-pasta",
  "deno-empty",
];

/** Milliseconds per launch of each case, or the errors of launches that failed. */
export interface EngineStartupResults {
  /** Launches per case per repetition. */
  readonly launches: number;
  readonly ms: Record<EngineStartupCase, number[]>;
  readonly errors: string[];
}

/** An empty results record. */
export function engineStartupResults(launches: number): EngineStartupResults {
  const ms = Object.fromEntries(ENGINE_STARTUP_CASES.map((c) => [c, [] as number[]]));
  return { launches, ms: ms as Record<EngineStartupCase, number[]>, errors: [] };
}

/** Writes `DIR/NAME`, a wrapper that runs tapir as NAME (what a user installs). */
async function wrapper(dir: string, name: string, mainTs: string): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(
    path,
    `#!/bin/bash\nexec -a "$0" '${Deno.execPath()}' run -A --no-config '${mainTs}' "$@"\n`,
  );
  await Deno.chmod(path, 0o755);
  return path;
}

/** The bash script for one launch: prints `@ms N` (or `@fail WHY`). */
function script(c: EngineStartupCase, helper: string, dir: string, netns: string): string {
  const clock = "${EPOCHREALTIME/./}";
  const elapsed = `$(( (${clock} - t0) / 1000 ))`;
  const fresh = `ip netns add ${netns} || { echo "@fail ip netns add"; exit; }`;
  const cleanup = `ip netns del ${netns} 2>/dev/null`;
  switch (c) {
    case "slirp4netns":
    case "tapir-slirp4netns":
      return [
        fresh,
        `mkfifo ${dir}/ready`,
        `t0=${clock}`,
        `${helper} --mtu=65520 --enable-sandbox --enable-seccomp --enable-ipv6 -c -r 4 ` +
        `--api-socket ${dir}/api.sock --netns-type=path /run/netns/${netns} tap0 ` +
        `4>${dir}/ready >/dev/null 2>${dir}/err &`,
        `IFS= read -r -n 1 one <${dir}/ready`,
        `t=${elapsed}`,
        `if [ "$one" = 1 ]; then echo "@ms $t"; else echo "@fail $(tail -n 1 ${dir}/err)"; fi`,
        "kill $! 2>/dev/null; wait",
        `rm -f ${dir}/ready ${dir}/api.sock`,
        cleanup,
      ].join("\n");
    case "pasta":
    case "tapir-pasta":
      return [
        fresh,
        `t0=${clock}`,
        `${helper} --config-net --dns-forward 169.254.1.1 -t none -u none -T none -U none ` +
        `--no-map-gw --quiet --netns /run/netns/${netns} --pid ${dir}/pid ` +
        `${c === "pasta" ? "--runas 0 " : ""}>${dir}/err 2>&1`,
        "rc=$?",
        `t=${elapsed}`,
        `if [ $rc = 0 ]; then echo "@ms $t"; else echo "@fail exit $rc: $(tail -n 1 ${dir}/err)"; fi`,
        `[ -s ${dir}/pid ] && kill $(cat ${dir}/pid) 2>/dev/null`,
        `rm -f ${dir}/pid`,
        cleanup,
        // The daemon ends with its namespace; give it the moment it takes.
        "sleep 0.2",
      ].join("\n");
    case "deno-empty":
      return [
        `: > ${dir}/empty.ts`,
        `t0=${clock}`,
        `'${Deno.execPath()}' run --no-config ${dir}/empty.ts`,
        `echo "@ms ${elapsed}"`,
      ].join("\n");
  }
}

/** Launches every case `out.launches` times (cases interleaved) and records the times. */
export async function engineStartupRun(
  env: HostEnv,
  mainTs: string,
  out: EngineStartupResults,
  rep: number,
): Promise<void> {
  const dir = await Deno.makeTempDir({ dir: env.dir, prefix: "engines-" });
  try {
    const helpers: Record<EngineStartupCase, string> = {
      "slirp4netns": "/usr/bin/slirp4netns",
      "tapir-slirp4netns": await wrapper(dir, "slirp4netns", mainTs),
      "pasta": "/usr/bin/pasta",
      "tapir-pasta": await wrapper(dir, "pasta", mainTs),
      "deno-empty": "",
    };
    for (let i = 0; i < out.launches; i++) {
      for (const c of ENGINE_STARTUP_CASES) {
        const netns = `tapir-bench-eng-${Deno.pid}-${rep}-${i}`;
        const r = await runBounded(
          env.cleanup,
          inHost(env.ns, ["bash", "-c", script(c, helpers[c], dir, netns)]),
          30_000,
        );
        const m = /^@ms (\d+)$/m.exec(r.stdout);
        if (m) out.ms[c].push(Number(m[1]));
        else {
          const why = /^@fail (.*)$/m.exec(r.stdout)?.[1] ??
            (r.timedOut ? "no answer within 30 s" : r.stderr.trim().split("\n").pop());
          out.errors.push(`${c}: ${why}`);
          await runBounded(env.cleanup, ["ip", "netns", "del", netns], 5000);
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
