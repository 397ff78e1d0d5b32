/**
 * VM mode without a real VM: a fake guest speaks QEMU's stream protocol to
 * `tapir vm` (4-byte big-endian length, then an Ethernet frame) and asks ARP
 * questions, which tapir answers itself — no traffic beyond tapir. Covers
 * what the QEMU test (tests/vm/) does not: serving the next guest after one
 * leaves, refusing a second guest while one is served, and a clean exit on
 * SIGTERM that removes the socket file.
 */
import { deepEqual, equal, match, ok } from "node:assert/strict";
import { arpEmit, ArpOp, ArpPacket, arpReprNew } from "../../lib/packet/arp.ts";
import { ETH_BROADCAST, ethEmit, EtherType, EthFrame } from "../../lib/packet/eth.ts";
import { TAPIR_MAC } from "../../lib/net.ts";
import { withHostNs } from "../helpers/netns.ts";
import {
  pyListen,
  SANDBOX_CAP_EFF,
  startTapirVm,
  stopTapirVm,
  threadSandbox,
  waitListening,
} from "../helpers/tapir.ts";
import { Ip4Packet } from "../../lib/packet/ip4.ts";
import { TcpFlag, TcpPacket } from "../../lib/packet/tcp.ts";
import { IpProto } from "../../lib/packet/wire.ts";
import { tcpFrame } from "../services/harness.ts";
import { nsArgs } from "../helpers/netns.ts";
import { SANDBOX_PROBE_ENV } from "../../lib/sandbox.ts";

const GUEST_MAC = new Uint8Array([0x02, 0, 0, 0, 0, 0x42]);
const GUEST = 0xc0000202; // 192.0.2.2
const GATEWAY = 0xc0000201; // 192.0.2.1

/** An ARP request from the guest for `target`, with its length prefix. */
function arpRequest(target: number): Uint8Array {
  const frame = new Uint8Array(4 + 42);
  const r = arpReprNew();
  r.op = ArpOp.Request;
  r.sha.set(GUEST_MAC);
  r.spa = GUEST;
  r.tpa = target;
  const l3 = 4 + ethEmit(frame, 4, ETH_BROADCAST, GUEST_MAC, EtherType.Arp);
  arpEmit(frame, l3, r);
  new DataView(frame.buffer).setUint32(0, 42);
  return frame;
}

/** Reads one length-prefixed frame from `conn` (null at end of stream). */
async function readFrame(conn: Deno.Conn): Promise<Uint8Array | null> {
  const read = async (n: number) => {
    const out = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const k = await conn.read(out.subarray(got));
      if (k === null) return null;
      got += k;
    }
    return out;
  };
  const len = await read(4);
  return len === null ? null : read(new DataView(len.buffer).getUint32(0));
}

/** Asks for the gateway's MAC on `conn`; returns the answer's sender MAC and address. */
async function askGateway(conn: Deno.Conn): Promise<{ mac: number[]; ip: number }> {
  await conn.write(arpRequest(GATEWAY));
  for (;;) {
    const f = await readFrame(conn);
    if (f === null) throw new Error("stream ended before an ARP reply");
    const eth = EthFrame.checked(f);
    if (typeof eth === "number" || eth.ethertype !== EtherType.Arp) continue; // an RA, say
    const arp = ArpPacket.checked(f, eth.payloadOffset, eth.payloadLen);
    if (typeof arp === "number" || arp.op !== ArpOp.Reply) continue;
    return { mac: [...f.subarray(eth.srcOffset, eth.srcOffset + 6)], ip: arp.spa };
  }
}

Deno.test("tapir vm serves one guest after another, refuses a second at once, exits cleanly", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-vm-" });
    const path = `${dir}/tapir.sock`;
    const tapir = await startTapirVm(host, path);
    try {
      const first = await Deno.connect({ transport: "unix", path });
      const answer = await askGateway(first);
      deepEqual(answer.mac, [...TAPIR_MAC]);
      equal(answer.ip, GATEWAY);

      // A second guest while the first is served: closed at once.
      const second = await Deno.connect({ transport: "unix", path });
      equal(await readFrame(second), null, "the second connection is closed");
      second.close();

      // The first leaves; the next one is served.
      first.close();
      const third = await Deno.connect({ transport: "unix", path });
      equal((await askGateway(third)).ip, GATEWAY, "the next guest is answered");
      third.close();
    } finally {
      await stopTapirVm(tapir);
      ok(!(await Deno.stat(path).then(() => true, () => false)), "the socket file is removed");
      await Deno.remove(dir, { recursive: true });
    }
  }));

Deno.test("tapir vm confines every thread once it serves; exec is refused; ARP is still answered", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-vm-" });
    const path = `${dir}/tapir.sock`;
    const tapir = await startTapirVm(host, path, [], { [SANDBOX_PROBE_ENV]: "/bin/true" });
    try {
      const guest = await Deno.connect({ transport: "unix", path });
      equal((await askGateway(guest)).ip, GATEWAY, "answered: the loop runs, the sandbox is in");
      // `ip netns exec` became tapir: its pid is tapir's.
      const threads = await threadSandbox(tapir.pid);
      ok(threads.length >= 4, `tapir's threads: ${JSON.stringify(threads)}`);
      for (const t of threads) {
        deepEqual(
          t,
          { noNewPrivs: 1, seccomp: 2, capEff: SANDBOX_CAP_EFF },
          `every thread: ${JSON.stringify(threads)}`,
        );
      }
      equal((await askGateway(guest)).ip, GATEWAY, "still answered");
      guest.close();
    } finally {
      const stderr = await stopTapirVm(tapir);
      match(stderr, /sandbox probe: exec \/bin\/true: refused: PermissionDenied/);
      await Deno.remove(dir, { recursive: true });
    }
  }));

/** `frame` with the stream's 4-byte length in front. */
function prefixed(frame: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + frame.length);
  new DataView(out.buffer).setUint32(0, frame.length);
  out.set(frame, 4);
  return out;
}

Deno.test("a guest that disconnects mid-connection: its host peer gets a reset at once; the next guest is served", () =>
  withHostNs(async (host) => {
    const dir = await Deno.makeTempDir({ prefix: "tapir-vm-" });
    const path = `${dir}/tapir.sock`;
    const [sc, sa] = nsArgs(host, "python3", [
      "-c",
      [
        "import socket, time",
        pyListen(9900),
        "print('listening', flush=True)",
        "s, _ = l.accept(); s.settimeout(60); print('accepted', flush=True)",
        "try:\n  print('eof' if s.recv(10) == b'' else 'data', flush=True)",
        "except ConnectionResetError:\n  print('reset', flush=True)",
      ].join("\n"),
    ]);
    const server = new Deno.Command(sc, { args: sa, stdout: "piped", stderr: "piped" }).spawn();
    const tapir = await startTapirVm(host, path);
    const lines = server.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let out = "";
    const waitLine = async (want: string) => {
      while (!out.includes(want)) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`server ended before '${want}': ${out}`);
        out += value;
      }
    };
    try {
      await waitListening(host, 9900);
      const guest = await Deno.connect({ transport: "unix", path });
      const seg = { src: GUEST, dst: GATEWAY, srcPort: 40000, dstPort: 9900, window: 65535 };
      await guest.write(prefixed(tcpFrame({ ...seg, seq: 1000, ack: 0, flags: TcpFlag.Syn })));
      // tapir connects to the server, then answers the SYN.
      const ip = new Ip4Packet(), tcp = new TcpPacket();
      for (;;) {
        const f = await readFrame(guest);
        if (f === null) throw new Error("stream ended before the SYN-ACK");
        const eth = EthFrame.checked(f);
        if (typeof eth === "number" || eth.ethertype !== EtherType.Ipv4) continue;
        if (ip.wrap(f, eth.payloadOffset, eth.payloadLen) !== 0 || ip.proto !== IpProto.Tcp) {
          continue;
        }
        if (tcp.wrap(f, ip.payloadOffset, ip.payloadLen) !== 0 || tcp.dstPort !== 40000) continue;
        ok(tcp.flags & TcpFlag.Syn && tcp.flags & TcpFlag.Ack, "a SYN-ACK");
        await guest.write(
          prefixed(tcpFrame({ ...seg, seq: 1001, ack: tcp.seq + 1, flags: TcpFlag.Ack })),
        );
        break;
      }
      await waitLine("accepted");
      // The guest goes away with the connection open: the server hears of it now,
      // not after the idle timeout (hours).
      const gone = performance.now();
      guest.close();
      await waitLine("reset");
      const ms = performance.now() - gone;
      ok(ms < 5000, `the reset came ${ms.toFixed(0)} ms after the guest left`);
      const next = await Deno.connect({ transport: "unix", path });
      equal((await askGateway(next)).ip, GATEWAY, "the next guest is answered");
      next.close();
    } finally {
      try {
        server.kill();
      } catch { /* done */ }
      await server.status;
      lines.releaseLock();
      await server.stdout.cancel().catch(() => {});
      await server.stderr.cancel().catch(() => {});
      await stopTapirVm(tapir);
      await Deno.remove(dir, { recursive: true });
    }
  }));
