import { deepEqual, equal, ok, throws } from "node:assert/strict";
import * as sys from "../../lib/sys/mod.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function pair(type: number): [number, number] {
  const fds = new Int32Array(2);
  sys.sysCheck(
    sys.socketpair(sys.AF_UNIX, type | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, 0, fds),
    "socketpair",
  );
  return [fds[0], fds[1]];
}

function pipe(): [number, number] {
  const fds = new Int32Array(2);
  sys.sysCheck(sys.pipe2(fds, sys.O_NONBLOCK | sys.O_CLOEXEC), "pipe2");
  return [fds[0], fds[1]];
}

function closeAll(...fds: number[]): void {
  for (const fd of fds) equal(sys.close(fd), 0);
}

Deno.test("writev gathers three buffers and readv scatters them across a socketpair", () => {
  const [a, b] = pair(sys.SOCK_STREAM);
  const parts = ["eth|", "ip header|", "payload"].map((s) => enc.encode(s));
  const out = new sys.IovecArray(3);
  parts.forEach((p, i) => out.set(i, p));
  const total = parts.reduce((n, p) => n + p.length, 0);
  equal(sys.writev(a, out, 3), total);

  // Receive into one pool at odd offsets, through two entries.
  const pool = new Uint8Array(64);
  const inp = new sys.IovecArray(2);
  inp.set(0, pool, 3, 5);
  inp.set(1, pool, 20, 40);
  equal(sys.readv(b, inp, 2), total);
  equal(
    dec.decode(pool.subarray(3, 8)) + dec.decode(pool.subarray(20, 20 + total - 5)),
    "eth|ip header|payload",
  );
  closeAll(a, b);
});

Deno.test("writev starting at a later iovec entry sends only those entries", () => {
  const [a, b] = pair(sys.SOCK_STREAM);
  const iov = new sys.IovecArray(3);
  ["skip", "keep", "this"].forEach((s, i) => iov.set(i, enc.encode(s)));
  equal(sys.writev(a, iov, 2, 1), 8);
  const buf = new Uint8Array(16);
  equal(sys.read(b, buf), 8);
  equal(dec.decode(buf.subarray(0, 8)), "keepthis");
  closeAll(a, b);
});

Deno.test("a pipe carries bytes with write and read, and splice moves them into a socket", () => {
  const [r, w] = pipe();
  const [a, b] = pair(sys.SOCK_STREAM);
  equal(sys.write(w, enc.encode("spliced bytes")), 13);
  equal(sys.splice(r, a, 4096, sys.SPLICE_F_MOVE | sys.SPLICE_F_NONBLOCK), 13);
  const buf = new Uint8Array(32);
  equal(sys.read(b, buf), 13);
  equal(dec.decode(buf.subarray(0, 13)), "spliced bytes");
  closeAll(r, w, a, b);
});

Deno.test("an empty non-blocking fd reports -EAGAIN, and sysCheck turns it into a SysError", () => {
  const [r, w] = pipe();
  const buf = new Uint8Array(8);
  const rc = sys.read(r, buf);
  equal(rc, -sys.Errno.EAGAIN);
  throws(() => sys.sysCheck(rc, "read"), (e: unknown) => {
    ok(e instanceof sys.SysError);
    equal(e.errno, sys.Errno.EAGAIN);
    equal(e.code, "EAGAIN");
    equal(e.message, "read: EAGAIN");
    return true;
  });
  closeAll(r, w);
});

Deno.test("sendmmsg sends a batch of datagrams and recvmmsg receives them with their lengths", () => {
  const [a, b] = pair(sys.SOCK_DGRAM);
  const n = 5;
  const out = new sys.MmsgHdrArray(n);
  const outIov = new sys.IovecArray(n);
  for (let i = 0; i < n; i++) {
    outIov.set(i, enc.encode("m".repeat(i + 1) + i));
    out.setIov(i, outIov, 1, i);
  }
  equal(sys.sendmmsg(a, out, n, 0), n);
  for (let i = 0; i < n; i++) equal(out.msgLen(i), i + 2);

  const pool = new Uint8Array(8 * 64);
  const inp = new sys.MmsgHdrArray(8);
  const inIov = new sys.IovecArray(8);
  for (let i = 0; i < 8; i++) {
    inIov.set(i, pool, i * 64, 64);
    inp.setIov(i, inIov, 1, i);
  }
  equal(sys.recvmmsg(b, inp, 8, 0), n);
  for (let i = 0; i < n; i++) {
    equal(dec.decode(pool.subarray(i * 64, i * 64 + inp.msgLen(i))), "m".repeat(i + 1) + i);
  }
  equal(sys.recvmmsg(b, inp, 8, 0), -sys.Errno.EAGAIN);
  closeAll(a, b);
});

Deno.test("UDP on loopback: sendmmsg to an address, recvmmsg reports each sender (IPv4 and IPv6)", () => {
  for (const [family, loop] of [[4, [127, 0, 0, 1]], [6, [...new Array(15).fill(0), 1]]] as const) {
    const af = family === 4 ? sys.AF_INET : sys.AF_INET6;
    const mk = (addr: Uint8Array, port: number, out: Uint8Array) =>
      family === 4 ? sys.sockaddrIn4(out, addr, port) : sys.sockaddrIn6(out, addr, port);
    const addr = new Uint8Array(loop);
    const rx = sys.sysCheck(
      sys.socket(af, sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC),
      "socket",
    );
    const tx = sys.sysCheck(
      sys.socket(af, sys.SOCK_DGRAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC),
      "socket",
    );
    const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
    sys.sysCheck(sys.bind(rx, sa, mk(addr, 0, sa)), "bind");
    const len = new Uint32Array([sa.length]);
    sys.sysCheck(sys.getsockname(rx, sa, len), "getsockname");
    const bound = sys.sockaddrDecode(sa, len[0]);
    ok(bound && bound.family === family && bound.port > 0);
    deepEqual(bound.addr, addr);

    const out = new sys.MmsgHdrArray(2);
    const iov = new sys.IovecArray(2);
    iov.set(0, enc.encode("first"));
    iov.set(1, enc.encode("second!"));
    for (let i = 0; i < 2; i++) {
      out.setName(i, sa, len[0]);
      out.setIov(i, iov, 1, i);
    }
    equal(sys.sendmmsg(tx, out, 2, 0), 2);

    const names = new Uint8Array(2 * sys.SOCKADDR_STORAGE_SIZE);
    const buf = new Uint8Array(128);
    const inp = new sys.MmsgHdrArray(2);
    const inIov = new sys.IovecArray(2);
    for (let i = 0; i < 2; i++) {
      inIov.set(i, buf, i * 64, 64);
      inp.setIov(i, inIov, 1, i);
      inp.setName(i, names.subarray(i * 128, i * 128 + 128));
    }
    equal(sys.recvmmsg(rx, inp, 2, 0), 2);
    equal(dec.decode(buf.subarray(0, inp.msgLen(0))), "first");
    equal(dec.decode(buf.subarray(64, 64 + inp.msgLen(1))), "second!");
    const from = sys.sockaddrDecode(names, inp.nameLen(0));
    const txLen = new Uint32Array([sa.length]);
    const txName = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
    sys.sysCheck(sys.getsockname(tx, txName, txLen), "getsockname");
    const txBound = sys.sockaddrDecode(txName, txLen[0]);
    ok(from && from.family === family && txBound && txBound.family === family);
    equal(from.port, txBound.port, "the sender's port");
    deepEqual(from.addr, addr, "the sender's (loopback) address");
    closeAll(rx, tx);
  }
});

Deno.test("TCP on loopback: non-blocking connect, accept4, options, half-close", () => {
  const lst = sys.sysCheck(
    sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC),
    "socket",
  );
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  sys.sysCheck(sys.setsockoptInt(lst, sys.SOL_SOCKET, sys.SO_REUSEADDR, 1), "setsockopt");
  sys.sysCheck(sys.bind(lst, sa, sys.sockaddrIn4(sa, new Uint8Array([127, 0, 0, 1]), 0)), "bind");
  sys.sysCheck(sys.listen(lst, 16), "listen");
  equal(sys.accept4(lst, sys.SOCK_NONBLOCK), -sys.Errno.EAGAIN);
  const len = new Uint32Array([sa.length]);
  sys.sysCheck(sys.getsockname(lst, sa, len), "getsockname");

  const cli = sys.sysCheck(
    sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC),
    "socket",
  );
  const rc = sys.connect(cli, sa, len[0]);
  ok(rc === 0 || rc === -sys.Errno.EINPROGRESS, `connect: ${rc}`);
  sys.sysCheck(sys.setsockoptInt(cli, sys.IPPROTO_TCP, sys.TCP_NODELAY, 1), "setsockopt");
  equal(sys.getsockoptInt(cli, sys.IPPROTO_TCP, sys.TCP_NODELAY), 1);

  const peer = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const peerLen = new Uint32Array([peer.length]);
  let srv = -sys.Errno.EAGAIN;
  for (let i = 0; i < 1000 && srv === -sys.Errno.EAGAIN; i++) {
    srv = sys.accept4(lst, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC, peer, peerLen);
  }
  ok(srv >= 0, `accept4: ${srv}`);
  equal(sys.getsockoptInt(cli, sys.SOL_SOCKET, sys.SO_ERROR), 0);
  const cliName = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const cliLen = new Uint32Array([cliName.length]);
  sys.sysCheck(sys.getsockname(cli, cliName, cliLen), "getsockname");
  deepEqual(sys.sockaddrDecode(peer, peerLen[0]), sys.sockaddrDecode(cliName, cliLen[0]));
  const srvPeer = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const srvPeerLen = new Uint32Array([srvPeer.length]);
  sys.sysCheck(sys.getpeername(srv, srvPeer, srvPeerLen), "getpeername");
  deepEqual(sys.sockaddrDecode(srvPeer, srvPeerLen[0]), sys.sockaddrDecode(cliName, cliLen[0]));

  equal(sys.send(cli, enc.encode("hello"), 5, sys.MSG_NOSIGNAL), 5);
  equal(sys.shutdown(cli, sys.SHUT_WR), 0);
  const buf = new Uint8Array(16);
  // MSG_PEEK leaves the bytes queued; a second read consumes them; then EOF.
  let n = -sys.Errno.EAGAIN;
  for (let i = 0; i < 1000 && n === -sys.Errno.EAGAIN; i++) {
    n = sys.recv(srv, buf, 16, sys.MSG_PEEK);
  }
  equal(n, 5);
  equal(sys.recv(srv, buf, 16, 0), 5);
  equal(dec.decode(buf.subarray(0, 5)), "hello");
  equal(sys.recv(srv, buf, 16, 0), 0);
  closeAll(lst, cli, srv);
});

Deno.test("epoll: a readable fd is reported with its 64-bit tag, synchronously and asynchronously", async () => {
  const ep = sys.sysCheck(sys.epollCreate1(sys.EPOLL_CLOEXEC), "epoll_create1");
  const [r, w] = pipe();
  const ev = new sys.EpollEvents(4);
  ev.set(0, sys.EPOLLIN, 0xdeadbeef, 7);
  equal(sys.epollCtl(ep, sys.EPOLL_CTL_ADD, r, ev), 0);
  equal(sys.epollCtl(ep, sys.EPOLL_CTL_ADD, r, ev), -sys.Errno.EEXIST);
  equal(sys.epollWait(ep, ev, 0), 0);

  const pending = sys.epollWaitAsync(ep, ev, 5000);
  equal(sys.write(w, enc.encode("x")), 1);
  equal(await pending, 1);
  equal(ev.events(0) & sys.EPOLLIN, sys.EPOLLIN);
  equal(ev.dataLo(0), 0xdeadbeef);
  equal(ev.dataHi(0), 7);

  equal(sys.epollWait(ep, ev, 0), 1); // level-triggered: still readable
  equal(sys.epollCtl(ep, sys.EPOLL_CTL_DEL, r, null), 0);
  equal(sys.epollWait(ep, ev, 0), 0);
  closeAll(ep, r, w);
});

Deno.test("epoll_event has the layout of this architecture", () => {
  const ev = new sys.EpollEvents(2);
  equal(ev.bytes.length, 2 * (Deno.build.arch === "x86_64" ? 12 : 16));
  ev.set(1, sys.EPOLLET | sys.EPOLLOUT, 1, 2);
  equal(ev.events(1), (sys.EPOLLET | sys.EPOLLOUT) >>> 0);
  equal(ev.dataLo(1), 1);
  equal(ev.dataHi(1), 2);
});

Deno.test("timerfd expires after its delay and eventfd counts writes", async () => {
  const ep = sys.sysCheck(sys.epollCreate1(sys.EPOLL_CLOEXEC), "epoll_create1");
  const tfd = sys.sysCheck(
    sys.timerfdCreate(sys.CLOCK_MONOTONIC, sys.TFD_NONBLOCK | sys.TFD_CLOEXEC),
    "timerfd",
  );
  const ev = new sys.EpollEvents(2);
  ev.set(0, sys.EPOLLIN, 1);
  sys.sysCheck(sys.epollCtl(ep, sys.EPOLL_CTL_ADD, tfd, ev), "epoll_ctl");
  const t0 = performance.now();
  sys.sysCheck(sys.timerfdSettime(tfd, 20e6), "timerfd_settime");
  equal(await sys.epollWaitAsync(ep, ev, 2000), 1);
  ok(performance.now() - t0 >= 19, "fired no earlier than armed");
  const count = new BigUint64Array(1);
  equal(sys.read(tfd, new Uint8Array(count.buffer)), 8);
  equal(count[0], 1n);

  const efd = sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
  const one = new BigUint64Array([1n]);
  equal(sys.write(efd, new Uint8Array(one.buffer)), 8);
  equal(sys.write(efd, new Uint8Array(one.buffer)), 8);
  equal(sys.read(efd, new Uint8Array(count.buffer)), 8);
  equal(count[0], 2n);
  equal(sys.read(efd, new Uint8Array(count.buffer)), -sys.Errno.EAGAIN);
  closeAll(ep, tfd, efd);
});

Deno.test("memfd + shared mmap: bytes written to the fd appear in the mapping", () => {
  const fd = sys.sysCheck(sys.memfdCreate("tapir-test", sys.MFD_CLOEXEC), "memfd_create");
  const page = new Uint8Array(4096);
  page.set(enc.encode("guest memory"), 100);
  equal(sys.write(fd, page), 4096);
  const m = sys.mmap(4096, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, fd, 0);
  ok(typeof m !== "number", `mmap: ${m}`);
  equal(dec.decode(m.bytes.subarray(100, 112)), "guest memory");
  // An iovec can point into the mapping by raw address.
  const [a, b] = pair(sys.SOCK_STREAM);
  const iov = new sys.IovecArray(1);
  iov.setRawAt(0, new Float64Array([m.addr]), 0, 100, 12);
  equal(sys.writev(a, iov, 1), 12);
  const buf = new Uint8Array(12);
  equal(sys.read(b, buf), 12);
  equal(dec.decode(buf), "guest memory");
  equal(sys.munmap(m), 0);
  equal(sys.mmap(4096, sys.PROT_READ, sys.MAP_SHARED, -1, 0), -sys.Errno.EBADF);
  closeAll(fd, a, b);
});

Deno.test("file descriptors pass over a UNIX socket with SCM_RIGHTS, and map the same memory", () => {
  const [a, b] = pair(sys.SOCK_STREAM);
  const mfd = sys.sysCheck(sys.memfdCreate("tapir-region", sys.MFD_CLOEXEC), "memfd_create");
  equal(sys.write(mfd, new Uint8Array(4096)), 4096);
  const efd = sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
  const msg = enc.encode("SET_MEM_TABLE");
  equal(sys.sendWithFds(a, msg, 0, msg.length, 0, [mfd, efd]), msg.length);
  const buf = new Uint8Array(64);
  const fds = new Int32Array(sys.MAX_PASSED_FDS);
  equal(sys.recvWithFds(b, buf, 0, buf.length, 0, fds), msg.length);
  equal(dec.decode(buf.subarray(0, msg.length)), "SET_MEM_TABLE");
  ok(fds[0] >= 0 && fds[1] >= 0, `fds ${fds}`);
  equal(fds[2], -1, "the rest are -1");
  ok(fds[0] !== mfd, "a new descriptor for the same file");
  const [gotMem, gotEvent] = fds;
  // The received memfd maps the same pages as the sender's.
  const mine = sys.mmap(4096, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, mfd, 0);
  const theirs = sys.mmap(4096, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_SHARED, gotMem, 0);
  ok(typeof mine !== "number" && typeof theirs !== "number");
  mine.bytes.set(enc.encode("ring"), 2000);
  equal(dec.decode(theirs.bytes.subarray(2000, 2004)), "ring");
  equal(sys.munmap(mine), 0);
  equal(sys.munmap(theirs), 0);
  // A message without descriptors leaves them all -1.
  equal(sys.sendWithFds(a, msg, 0, 4, 0, []), 4);
  equal(sys.recvWithFds(b, buf, 0, buf.length, 0, fds), 4);
  deepEqual([...fds], new Array(sys.MAX_PASSED_FDS).fill(-1));
  // More descriptors than one message may carry is refused on both sides.
  equal(
    sys.sendWithFds(a, msg, 0, 4, 0, new Array(sys.MAX_PASSED_FDS + 1).fill(mfd)),
    -sys.Errno.EINVAL,
  );
  closeAll(a, b, mfd, efd, gotMem, gotEvent);
});

Deno.test("ioctl FIONREAD, fcntl flags and pipe size, prctl thread name", () => {
  const [a, b] = pair(sys.SOCK_STREAM);
  equal(sys.write(a, enc.encode("12345")), 5);
  const avail = new Int32Array(1);
  equal(sys.ioctl(b, sys.FIONREAD, new Uint8Array(avail.buffer)), 0);
  equal(avail[0], 5);
  ok(sys.fcntl(b, sys.F_GETFL) & sys.O_NONBLOCK);
  equal(sys.ioctl(b, sys.TUNSETIFF, new Uint8Array(40)), -sys.Errno.ENOTTY);

  const [r, w] = pipe();
  ok(sys.fcntl(w, sys.F_SETPIPE_SZ, 1 << 16) >= 1 << 16);
  equal(sys.fcntl(w, sys.F_GETPIPE_SZ), sys.fcntl(w, sys.F_SETPIPE_SZ, 1 << 16));

  const name = new Uint8Array(16);
  name.set(enc.encode("tapir-t"));
  equal(sys.prctlBuf(sys.PR_SET_NAME, name), 0);
  const got = new Uint8Array(16);
  equal(sys.prctlBuf(sys.PR_GET_NAME, got), 0);
  equal(dec.decode(got.subarray(0, got.indexOf(0))), "tapir-t");
  equal(sys.prctl(sys.PR_SET_NAME + 1000), -sys.Errno.EINVAL);
  closeAll(a, b, r, w);
});

Deno.test("open reports ENOENT for a missing path and writes to /dev/null", () => {
  equal(sys.open("/nonexistent/tapir", sys.O_RDONLY), -sys.Errno.ENOENT);
  const fd = sys.sysCheck(sys.open("/dev/null", sys.O_WRONLY | sys.O_CLOEXEC), "open");
  equal(sys.write(fd, enc.encode("discard")), 7);
  closeAll(fd);
  equal(sys.close(fd), -sys.Errno.EBADF);
});

Deno.test("UNIX socket addresses: bind to a path, read it back, refuse one too long", () => {
  const dir = Deno.makeTempDirSync();
  const path = `${dir}/s`;
  const sa = new Uint8Array(sys.SOCKADDR_UN_SIZE);
  const fd = sys.sysCheck(sys.socket(sys.AF_UNIX, sys.SOCK_STREAM | sys.SOCK_CLOEXEC), "socket");
  sys.sysCheck(sys.bind(fd, sa, sys.sockaddrUn(sa, path)), "bind");
  const out = new Uint8Array(sys.SOCKADDR_UN_SIZE);
  const len = new Uint32Array([out.length]);
  sys.sysCheck(sys.getsockname(fd, out, len), "getsockname");
  deepEqual(sys.sockaddrDecode(out, len[0]), { family: "unix", path });
  equal(sys.sockaddrUn(sa, "x".repeat(108)), -1);
  closeAll(fd);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("errno names: known values by name, unknown ones by number", () => {
  equal(sys.errnoName(sys.Errno.ECONNREFUSED), "ECONNREFUSED");
  equal(sys.errnoName(4095), "E4095");
});

Deno.test("unshare in a worker thread moves only that thread into a new network namespace", async () => {
  const worker = new Worker(new URL("./netns_worker.ts", import.meta.url), { type: "module" });
  const reply = await new Promise<{ before: string; inside: string; back: string; setns: number }>(
    (resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(e);
    },
  );
  worker.terminate();
  const mine = Deno.readLinkSync("/proc/thread-self/ns/net");
  equal(reply.before, mine);
  ok(reply.inside !== mine, "the worker thread is in a new namespace");
  equal(reply.setns, 0);
  equal(reply.back, mine, "setns returns the worker to the original namespace");
  equal(Deno.readLinkSync("/proc/thread-self/ns/net"), mine, "the main thread never moved");
});

Deno.test("spawnProcess passes arguments and environment, every signal at its default; waitProcess reports exit codes and signals", async () => {
  const out = await Deno.makeTempFile();
  try {
    const long = "v".repeat(100); // past V8's on-heap typed arrays, like the short ones
    const script = `echo "$@" > ${out}; echo "$SHORT $LONG" >> ${out}; ` +
      `grep SigIgn /proc/self/status >> ${out}; exit 7`;
    const pid = sys.spawnProcess(["sh", "-c", script, "sh", "a", "bb"], { SHORT: "s", LONG: long });
    ok(pid > 0, `spawn: ${pid}`);
    deepEqual(await sys.waitProcess(pid), { code: 7, signal: null });
    const [args, env, ignored] = (await Deno.readTextFile(out)).trim().split("\n");
    equal(args, "a bb");
    equal(env, `s ${long}`);
    equal(ignored, "SigIgn:\t0000000000000000");
  } finally {
    await Deno.remove(out);
  }
  const killed = sys.spawnProcess(["sh", "-c", "kill -TERM $$"]);
  deepEqual(await sys.waitProcess(killed), { code: 143, signal: 15 });
  equal(sys.spawnProcess(["/no/such/program"]), -sys.Errno.ENOENT);
  equal(await sys.waitProcess(1), null, "not a child");
});
