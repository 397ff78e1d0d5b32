/**
 * TCP translation end to end: real clients in a namespace served by tapir,
 * real servers on the loopback of a throwaway host namespace (reached
 * through the gateway address), every run with `--loopback-only`.
 */
import { equal, match } from "node:assert/strict";
import { HOST_NS, run, withHostNs } from "../helpers/netns.ts";
import {
  type Background,
  background,
  explain,
  stopAll,
  tapirNs,
  waitListening,
} from "../helpers/tapir.ts";

const SIZES: [string, string][] = [["0", "0"], ["1", "1"], ["1m", "1M"], ["1g", "1G"]];

/** Makes the payload files and returns their sha256 sums by name. */
async function payloads(dir: string): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (const [name, size] of SIZES) {
    const file = `${dir}/p${name}`;
    const r = await run("sh", [
      "-c",
      `head -c ${size} /dev/urandom > ${file} && sha256sum < ${file}`,
    ]);
    equal(r.code, 0, r.stderr);
    sums.set(name, r.stdout.split(" ")[0]);
  }
  return sums;
}

Deno.test("transfers of 0 B, 1 B, 1 MiB and 1 GiB arrive intact both ways, IPv4 and IPv6", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-tcp-" });
    const procs: Background[] = [];
    try {
      const sums = await payloads(dir);
      // Host side, on the host namespace's loopback: one source server per
      // payload (it sends the file), one sink (it hashes what it receives).
      let port = 9100;
      const sourcePort = new Map<string, number>();
      for (const fam of ["4", "6"]) {
        const bind = fam === "4" ? "127.0.0.1" : "[::1]";
        const tcp = fam === "4" ? "TCP4" : "TCP6";
        for (const [name] of SIZES) {
          sourcePort.set(`${fam}${name}`, port);
          procs.push(background(host, "socat", [
            "-U", // from the second address to the first: the file to the client
            `${tcp}-LISTEN:${port},bind=${bind},reuseaddr,fork`,
            `SYSTEM:cat ${dir}/p${name}`,
          ]));
          port++;
        }
        procs.push(background(host, "socat", [
          "-u",
          `${tcp}-LISTEN:${port},bind=${bind},reuseaddr,fork`,
          `SYSTEM:sha256sum >> ${dir}/sink${fam}`,
        ]));
        sourcePort.set(`sink${fam}`, port++);
      }
      for (const p of sourcePort.values()) await waitListening(host, p);

      // Guest side: fetch each payload and hash it; send each payload to the sink.
      const lines: string[] = ["set -e"];
      for (const fam of ["4", "6"]) {
        const gw = fam === "4" ? HOST_NS.gw4 : `[${HOST_NS.gw6}]`;
        const tcp = fam === "4" ? "TCP4" : "TCP6";
        for (const [name] of SIZES) {
          lines.push(
            `printf 'down${fam} ${name} '; socat -u ${tcp}:${gw}:${
              sourcePort.get(fam + name)
            } - | sha256sum`,
          );
          lines.push(`socat -u ${dir}/p${name} ${tcp}:${gw}:${sourcePort.get("sink" + fam)}`);
        }
      }
      const r = await tapirNs(host, ["--config-net", "-q"], lines.join("\n"));
      equal(r.code, 0, explain(r));
      for (const fam of ["4", "6"]) {
        for (const [name] of SIZES) {
          match(
            r.stdout,
            new RegExp(`^down${fam} ${name} ${sums.get(name)}  -$`, "m"),
            `down${fam} ${name}`,
          );
        }
        // The sink hashes arrive in the order sent; give the last one a moment.
        let sink = "";
        for (let i = 0; i < 50; i++) {
          sink = await Deno.readTextFile(`${dir}/sink${fam}`).catch(() => "");
          if (sink.trim().split("\n").length === SIZES.length) break;
          await new Promise((res) => setTimeout(res, 100));
        }
        const got = sink.trim().split("\n").map((l) => l.split(" ")[0]);
        equal(got.join(" "), SIZES.map(([n]) => sums.get(n)).join(" "), `up${fam}`);
      }
    } finally {
      await stopAll(procs);
      await Deno.remove(dir, { recursive: true });
    }
  }));
