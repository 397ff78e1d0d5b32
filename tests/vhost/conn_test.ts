/**
 * A vhost-user connection over a real UNIX socket pair: the test is the
 * front-end, sending messages (with memfds and eventfds attached) the way
 * QEMU does, and reading the replies.
 */
import { equal, match, ok } from "node:assert/strict";
import * as sys from "../../lib/sys/mod.ts";
import { VhostUserConn } from "../../lib/vhost/conn.ts";
import { VhostUserRequest as Req } from "../../lib/vhost/protocol.ts";
import { msg, qemuStart, sendMsg, socketPair } from "./frontend.ts";

/** Reads the replies waiting on `fd`: their request codes and first payload words. */
function replies(fd: number): [number, number][] {
  const buf = new Uint8Array(4096);
  const n = sys.recvAt(fd, buf, 0, buf.length, sys.MSG_DONTWAIT);
  const out: [number, number][] = [];
  const v = new DataView(buf.buffer);
  for (let at = 0; at + 12 <= n; at += 12 + v.getUint32(at + 8, true)) {
    out.push([v.getUint32(at, true), v.getUint32(at + 12, true)]);
  }
  return out;
}

Deno.test("a front-end's start-up burst is handled whole: replies written, rings running", () => {
  const [fe, be] = socketPair();
  const conn = new VhostUserConn(be);
  const n = qemuStart(fe);
  ok(conn.readable(), conn.error);
  equal(conn.stats.messages, n);
  const got = replies(fe);
  equal(got.length, 2);
  equal(got[0][0], Req.GET_FEATURES);
  equal(got[1][0], Req.GET_PROTOCOL_FEATURES);
  ok(conn.backend.vrings.every((v) => v.running), "both rings kicked and enabled");
  conn.close();
  equal(conn.backend.memory.regions.length, 0, "closing unmaps the guest's memory");
  sys.close(fe);
});

Deno.test("a message that arrives in parts is handled once it is whole", () => {
  const [fe, be] = socketPair();
  const conn = new VhostUserConn(be);
  const m = msg(Req.SET_VRING_NUM, [0, 256]);
  equal(sys.sendAt(fe, m, 0, 7, 0), 7);
  ok(conn.readable());
  equal(conn.stats.messages, 0);
  equal(sys.sendAt(fe, m, 7, 8, 0), 8);
  ok(conn.readable());
  equal(conn.stats.messages, 0, "payload still short");
  equal(sys.sendAt(fe, m, 15, m.length - 15, 0), m.length - 15);
  ok(conn.readable());
  equal(conn.stats.messages, 1);
  equal(conn.backend.vrings[0].num, 256);
  conn.close();
  sys.close(fe);
});

Deno.test("a malformed message ends the connection, and the next front-end starts afresh", () => {
  const [fe, be] = socketPair();
  const conn = new VhostUserConn(be);
  qemuStart(fe);
  sendMsg(fe, msg(99));
  equal(conn.readable(), false);
  match(conn.error, /unknown request 99/);
  conn.close();
  sys.close(fe);
  const [fe2, be2] = socketPair();
  const next = new VhostUserConn(be2);
  qemuStart(fe2);
  ok(next.readable(), next.error);
  ok(next.backend.vrings.every((v) => v.running));
  equal(replies(fe2).length, 2); // read, so the close below is an orderly end of stream
  sys.close(fe2);
  equal(next.readable(), false);
  match(next.error, /closed/);
  next.close();
});
