/**
 * TCP through the vhost-user device with one copy per payload byte: an
 * in-process guest (`guest.ts`) holds a connection to a Deno server on host
 * loopback through the gateway mapping. Downloads are peeked by tapir
 * straight into the guest's receive buffers; uploads go to the socket
 * straight from the guest's transmit buffers. The device's counters say
 * how many bytes were copied in tapir; the bytes that arrive say whether
 * the right ones were.
 */
import { equal, ok } from "node:assert/strict";
import { tcp4ChecksumOk } from "../../lib/packet/checksum.ts";
import {
  PCAP_GLOBAL_HEADER_LEN,
  PCAP_RECORD_HEADER_LEN,
  pcapClose,
  pcapOpen,
} from "../../lib/pcap.ts";
import { TcpFlag } from "../../lib/packet/tcp.ts";
import { VnetFlag } from "../../lib/tap/tap.ts";
import { VirtioNetFeature as F } from "../../lib/vhost/backend.ts";
import { VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from "../../lib/vhost/virtqueue.ts";
import { GUEST_HEADERS, GUEST_ISN, GUEST_MSS, GuestTcp } from "../../bench/guest_tcp.ts";
import { NET, netWith } from "../services/harness.ts";
import { GPA } from "./frontend.ts";
import { Frontend, HDR, RING, until } from "./guest.ts";

const GATEWAY = NET.ip4!.gateway;
const GUEST_IP = NET.ip4!.addr;
/** Bytes each way: enough for many full rings. */
const BYTES = 2 << 20;
/** Transmit frames in flight, each over up to 8 descriptors of its own. */
const TX_SLOTS = RING / 8;
/** Payload of one transmit frame: a GSO frame of several segments. */
const TX_PAYLOAD = 11 * GUEST_MSS;

/** The byte at stream offset `o`: not periodic at any buffer size used here. */
function patternAt(o: number): number {
  return (o ^ (o >>> 8) ^ (o >>> 16)) & 0xff;
}

function bit(b: number): bigint {
  return 1n << BigInt(b);
}

/**
 * The guest's end of one connection: receive buffers of `rxBufLen` bytes
 * (one per descriptor, offered again once read), transmit frames in slots
 * of 8 descriptors, their payload cut into `txCut`-byte buffers.
 */
class Guest {
  readonly tcp: GuestTcp;
  /** Payload taken in order, checked against the pattern as it comes. */
  received = 0;
  /** Frames to us without a complete checksum where one was due. */
  badChecksums = 0;
  /** Payload per frame we send: a GSO frame's worth with offloads, else one MSS. */
  readonly segMax: number;
  #seqOut = (GUEST_ISN + 1) >>> 0;
  #rxSeen = 0;
  #txSeen = 0;
  readonly #txFree: number[] = [];
  readonly #txArea: number[] = [];
  readonly #scratch = new Uint8Array(HDR + GUEST_HEADERS + TX_PAYLOAD);

  constructor(
    readonly f: Frontend,
    port: number,
    rxBufLen: number,
    readonly txCut: number,
    readonly offload: boolean,
  ) {
    this.tcp = new GuestTcp(GUEST_IP, GATEWAY, port);
    this.segMax = offload ? TX_PAYLOAD : GUEST_MSS;
    for (let i = 0; i < RING; i++) {
      f.rx.desc(i, f.rx.alloc(rxBufLen), rxBufLen, VIRTQ_DESC_F_WRITE);
      f.rx.offer(i);
    }
    f.kick(f.rxKick);
    for (let s = 0; s < TX_SLOTS; s++) {
      this.#txFree.push(s);
      this.#txArea.push(f.tx.alloc(this.#scratch.length + 8 * 64));
    }
  }

  /** Takes in what tapir wrote to the receive ring; gives the buffers back. */
  poll(): void {
    const rx = this.f.rx;
    let offered = false;
    while (this.#rxSeen !== rx.usedIdx) {
      const [head, written] = rx.used(this.#rxSeen);
      const first = rx.readChain(head, written);
      const count = first[10] | (first[11] << 8);
      const parts = [first];
      rx.offer(head);
      for (let k = 1; k < count; k++) {
        const [h, w] = rx.used(this.#rxSeen + k);
        parts.push(rx.readChain(h, w));
        rx.offer(h);
      }
      this.#rxSeen = (this.#rxSeen + count) & 0xffff;
      offered = true;
      const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (bytes.set(p, at), at + p.length), 0);
      this.#frame(bytes[0], bytes.subarray(HDR));
    }
    if (offered) this.f.kick(this.f.rxKick);
    const tx = this.f.tx;
    while (this.#txSeen !== tx.usedIdx) {
      this.#txFree.push(tx.used(this.#txSeen)[0] / 8);
      this.#txSeen = (this.#txSeen + 1) & 0xffff;
    }
  }

  #frame(vnetFlags: number, frame: Uint8Array): void {
    const ihl = (frame[14] & 15) * 4;
    const ipLen = (frame[16] << 8) | frame[17];
    const l4 = 14 + ihl;
    if (frame[23] !== 6) return;
    if (
      !(vnetFlags & VnetFlag.NEEDS_CSUM) &&
      !tcp4ChecksumOk(frame, l4, ipLen - ihl, GATEWAY, GUEST_IP)
    ) {
      this.badChecksums++;
    }
    const seq = new DataView(frame.buffer, frame.byteOffset).getInt32(l4 + 4); // the signed form GuestTcp keeps (seq.ts)
    const payload = l4 + (frame[l4 + 12] >> 4) * 4;
    const len = 14 + ipLen - payload;
    if (len > 0 && seq === this.tcp.rcvNxt) {
      for (let k = 0; k < len; k++) {
        if (frame[payload + k] !== patternAt(this.received + k)) {
          throw new Error(`byte ${this.received + k} of the download is wrong`);
        }
      }
      this.received += len;
    }
    this.tcp.take(frame, 0, frame.length);
  }

  /** True if a transmit slot is free. */
  get canSend(): boolean {
    return this.#txFree.length > 0;
  }

  /**
   * Sends a segment: header, headers and payload (the pattern from stream
   * offset `seq - ISN - 1`) cut over the slot's buffers — the first holds
   * the headers and 7 payload bytes, the rest `txCut` bytes each.
   */
  send(seq: number, flags: number, len: number): void {
    const s = this.#txFree.shift()!;
    const out = this.#scratch;
    out.fill(0, 0, HDR);
    const from = (seq - GUEST_ISN - 1) >>> 0;
    for (let k = 0; k < len; k++) out[HDR + GUEST_HEADERS + k] = patternAt(from + k);
    const frameLen = this.tcp.emit(out, HDR, seq, flags, len, this.offload);
    if (this.offload) {
      out[0] = VnetFlag.NEEDS_CSUM;
      out[1] = len > GUEST_MSS ? 1 : 0; // GSO TCPV4
      const v = new DataView(out.buffer);
      v.setUint16(2, GUEST_HEADERS, true);
      v.setUint16(4, GUEST_MSS, true);
      v.setUint16(6, 34, true);
      v.setUint16(8, 16, true);
    }
    const total = HDR + frameLen;
    const cuts = [0, Math.min(total, HDR + GUEST_HEADERS + 7)];
    while (cuts[cuts.length - 1] < total) {
      cuts.push(Math.min(total, cuts[cuts.length - 1] + this.txCut));
    }
    const tx = this.f.tx;
    let addr = this.#txArea[s];
    const bufs = [];
    for (let k = 0; k + 1 < cuts.length; k++) {
      const n = cuts[k + 1] - cuts[k];
      tx.bytes.set(out.subarray(cuts[k], cuts[k + 1]), addr - GPA);
      bufs.push({ addr, len: n });
      addr += (n + 63) & ~63;
    }
    ok(bufs.length <= 8, "a slot has 8 descriptors");
    bufs.forEach((b, k) => {
      const last = k === bufs.length - 1;
      tx.desc(s * 8 + k, b.addr, b.len, last ? 0 : VIRTQ_DESC_F_NEXT, s * 8 + k + 1);
    });
    tx.offer(s * 8);
    this.f.kick(this.f.txKick);
  }

  /** Runs the loop until `cond`, answering what tapir sends with ACKs. */
  async until(what: string, cond: () => boolean): Promise<void> {
    await until(what, () => {
      this.poll();
      if (this.tcp.ackDue && this.canSend) {
        this.tcp.ackDue = false;
        this.send(this.#seqOut, TcpFlag.Ack, 0);
      }
      return cond();
    }, 20_000);
  }

  /** Opens the connection. */
  async connect(): Promise<void> {
    this.send(GUEST_ISN, TcpFlag.Syn, 0);
    await this.until("the SYN-ACK", () => this.tcp.synAcked);
    this.tcp.ackDue = true;
  }

  /** Sends `bytes` of the pattern as fast as tapir's window and the slots allow, then FIN. */
  async upload(bytes: number): Promise<void> {
    let sent = 0;
    await this.until("the upload to be sent", () => {
      while (sent < bytes && this.canSend) {
        const len = Math.min(this.segMax, bytes - sent);
        const room = (this.tcp.wndRight - this.#seqOut) | 0;
        if (room < len) break;
        this.send(this.#seqOut, TcpFlag.Ack | TcpFlag.Psh, len);
        this.#seqOut = (this.#seqOut + len) >>> 0;
        sent += len;
      }
      return sent === bytes;
    });
    await this.until("a slot for the FIN", () => this.canSend);
    this.send(this.#seqOut, TcpFlag.Ack | TcpFlag.Fin, 0);
    this.#seqOut = (this.#seqOut + 1) >>> 0;
  }
}

/** A server on host loopback that sends `bytes` of the pattern, or reads and checks them. */
async function serve(
  listener: Deno.Listener,
  send: number,
): Promise<number> {
  const conn = await listener.accept();
  try {
    if (send > 0) {
      const data = new Uint8Array(send);
      for (let o = 0; o < send; o++) data[o] = patternAt(o);
      for (let at = 0; at < send;) at += await conn.write(data.subarray(at));
      return send;
    }
    const buf = new Uint8Array(1 << 16);
    let got = 0;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return got;
      for (let k = 0; k < n; k++) {
        if (buf[k] !== patternAt(got + k)) {
          throw new Error(`byte ${got + k} of the upload is wrong`);
        }
      }
      got += n;
    }
  } finally {
    conn.close();
  }
}

const MAPPED = netWith({ mapLo4: [GATEWAY], loopbackOnly: true });

for (
  const { name, refuse, rxBuf } of [
    { name: "GSO frames, checksums left partial", refuse: 0n, rxBuf: 4000 },
    {
      name: "MSS frames, checksums computed over odd-sized buffers",
      refuse: bit(F.GUEST_CSUM) | bit(F.GUEST_TSO4) | bit(F.GUEST_TSO6),
      rxBuf: 1999,
    },
  ]
) {
  Deno.test(`TCP download into the guest's own receive buffers (${name}): the bytes arrive intact, copied once`, async () => {
    const f = new Frontend(MAPPED, refuse);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const server = serve(listener, BYTES);
      const g = new Guest(f, (listener.addr as Deno.NetAddr).port, rxBuf, 4096, true);
      await g.connect();
      await g.until("the whole download and tapir's FIN", () => g.tcp.finSeen);
      equal(await server, BYTES);
      equal(g.received, BYTES, "every byte, in order");
      equal(g.badChecksums, 0, "every checksum tapir filled in verifies");
      const st = f.dev.rx.stats;
      ok(st.reserved > 0, "frames were built in reserved buffers");
      ok(st.bytesInPlace >= BYTES, `payload written in place: ${st.bytesInPlace}`);
      ok(st.bytesCopied < BYTES / 10, `only headers copied by tapir: ${st.bytesCopied}`);
      equal(f.dev.stats.heldReleased, 0);
    } finally {
      listener.close();
      await f.close();
    }
  });
}

for (
  const { name, refuse, offload } of [
    { name: "GSO frames, checksums left partial", refuse: 0n, offload: true },
    {
      name: "MSS frames with checksums, made whole to be verified",
      refuse: bit(F.CSUM) | bit(F.HOST_TSO4) | bit(F.HOST_TSO6),
      offload: false,
    },
  ]
) {
  Deno.test(`TCP upload from the guest's own transmit buffers (${name}): the bytes arrive intact`, async () => {
    const f = new Frontend(MAPPED, refuse);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const server = serve(listener, 0);
      const g = new Guest(f, (listener.addr as Deno.NetAddr).port, 4096, 3001, offload);
      await g.connect();
      await g.upload(BYTES);
      equal(await server, BYTES, "every byte, in order, at the server");
      await g.until("tapir's FIN after the server closed", () => g.tcp.finSeen);
      const gathered = f.dev.stats.bytesGathered;
      if (offload) {
        ok(gathered < BYTES / 10, `only headers copied by tapir: ${gathered}`);
        equal(f.tapir.input.stats.gathered, 0, "no frame made whole");
        ok(f.tapir.rsc!.stats.data > 0, "frames merged by RSC from their guest buffers");
      } else {
        ok(f.tapir.input.stats.gathered > 0, "frames made whole to verify their checksums");
      }
    } finally {
      listener.close();
      await f.close();
    }
  });
}

/** The TCP records of a capture: direction, sequence number, payload, and whether the checksum verifies. */
function tcpRecords(
  file: Uint8Array,
): { toGuest: boolean; seq: number; payload: Uint8Array; ok: boolean }[] {
  const out = [];
  const v = new DataView(file.buffer, file.byteOffset, file.byteLength);
  for (let at = PCAP_GLOBAL_HEADER_LEN; at + PCAP_RECORD_HEADER_LEN <= file.length;) {
    const incl = v.getUint32(at + 8, true);
    const frame = file.subarray(at + PCAP_RECORD_HEADER_LEN, at + PCAP_RECORD_HEADER_LEN + incl);
    at += PCAP_RECORD_HEADER_LEN + incl;
    if (frame[12] !== 0x08 || frame[13] !== 0 || frame[23] !== 6) continue;
    const ihl = (frame[14] & 15) * 4;
    const ipLen = (frame[16] << 8) | frame[17];
    const l4 = 14 + ihl;
    const toGuest = v.getUint32(frame.byteOffset - file.byteOffset + 30) === GUEST_IP;
    const [src, dst] = toGuest ? [GATEWAY, GUEST_IP] : [GUEST_IP, GATEWAY];
    out.push({
      toGuest,
      seq: new DataView(frame.buffer, frame.byteOffset).getUint32(l4 + 4),
      payload: frame.subarray(l4 + (frame[l4 + 12] >> 4) * 4, 14 + ipLen),
      ok: tcp4ChecksumOk(frame, l4, ipLen - ihl, src, dst),
    });
  }
  return out;
}

Deno.test("a capture records frames built in the guest's buffers and frames read from them whole, with real checksums", async () => {
  const path = await Deno.makeTempFile({ suffix: ".pcap" });
  const bytes = 256 << 10;
  /** One connection of a fresh guest: a download, or an upload. */
  const leg = async (download: boolean) => {
    const f = new Frontend(MAPPED);
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const server = serve(listener, download ? bytes : 0);
    server.catch(() => {}); // awaited below; rejected only if the test failed first
    try {
      const g = new Guest(f, (listener.addr as Deno.NetAddr).port, 4000, 3001, true);
      await g.connect();
      if (download) await g.until("the download", () => g.tcp.finSeen);
      else await g.upload(bytes);
      equal(await server, bytes);
      if (download) ok(f.dev.rx.stats.bytesInPlace >= bytes, "built in the guest's buffers");
      else ok(f.dev.stats.bytesGathered < bytes / 10, "read from the guest's buffers");
    } finally {
      listener.close();
      await f.close();
    }
  };
  try {
    pcapOpen(path);
    await leg(true);
    await leg(false);
    pcapClose();
    const records = tcpRecords(await Deno.readFile(path));
    ok(records.every((r) => r.ok), "every TCP checksum in the capture verifies");
    for (const toGuest of [true, false]) {
      const data = records.filter((r) => r.toGuest === toGuest && r.payload.length > 0);
      const first = data[0].seq;
      let total = 0;
      for (const r of data) {
        const from = (r.seq - first) >>> 0;
        for (let k = 0; k < r.payload.length; k++) {
          if (r.payload[k] !== patternAt(from + k)) {
            throw new Error(
              `captured byte ${from + k} ${toGuest ? "to" : "from"} the guest is wrong`,
            );
          }
        }
        total += r.payload.length;
      }
      ok(total >= bytes, `the whole stream ${toGuest ? "to" : "from"} the guest is captured`);
    }
  } finally {
    pcapClose();
    await Deno.remove(path);
  }
});
