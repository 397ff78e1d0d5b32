/**
 * Both ends of the many-flows scenario (`bench/flows_scale.ts`), on raw
 * non-blocking sockets through `lib/sys`, so that a hundred thousand
 * connections cost each end a descriptor and nothing more.
 *
 * - `server --ports P,Q,...`: listens on 127.0.0.1 on each port, accepts
 *   every connection and holds it; when the peer closes, closes its side.
 *   Prints `listening`, then runs until killed.
 * - `client --addr A --ports P,Q,... --count N --hold FILE`: opens N
 *   connections to A, spread over the ports, at most `--window` connecting
 *   at once; prints one JSON line `{"ok":true,"open":N,"failed":F,"seconds":S}`
 *   (or `{"ok":false,"error":...}`), then holds them until FILE exists,
 *   closes them all and prints `{"closed":N}`.
 *
 * Both need a descriptor limit above the count (the harness runs them under
 * `prlimit`).
 *
 * @module
 */

import { parseArgs } from "node:util";
import * as sys from "../lib/sys/mod.ts";

const EPOLL_BATCH = 1024;

function ports(text: string): number[] {
  const list = text.split(",").map(Number);
  if (list.length === 0 || list.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new Error(`--ports: not a list of ports: ${text}`);
  }
  return list;
}

function ip4(text: string): Uint8Array {
  const b = text.split(".").map(Number);
  if (b.length !== 4 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new Error(`--addr: not an IPv4 address: ${text}`);
  }
  return new Uint8Array(b);
}

/** Resolves once `path` exists. */
async function appears(path: string): Promise<void> {
  while (!(await Deno.stat(path).then(() => true, () => false))) {
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function server(list: number[]): Promise<void> {
  const ep = sys.epollCreate1(sys.EPOLL_CLOEXEC);
  const ev = new sys.EpollEvents(EPOLL_BATCH);
  const one = new sys.EpollEvents(1);
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const listeners = new Set<number>();
  for (const port of list) {
    const fd = sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
    sys.sysCheck(fd, "socket");
    sys.setsockoptInt(fd, sys.SOL_SOCKET, sys.SO_REUSEADDR, 1);
    const len = sys.sockaddrIn4(sa, new Uint8Array([127, 0, 0, 1]), port);
    sys.sysCheck(sys.bind(fd, sa, len), `bind 127.0.0.1:${port}`);
    sys.sysCheck(sys.listen(fd, 4096), "listen");
    one.set(0, sys.EPOLLIN, fd);
    sys.sysCheck(sys.epollCtl(ep, sys.EPOLL_CTL_ADD, fd, one), "epoll_ctl");
    listeners.add(fd);
  }
  console.log("listening");
  const buf = new Uint8Array(256);
  for (;;) {
    const n = await sys.epollWaitAsync(ep, ev, 100);
    for (let i = 0; i < n; i++) {
      const fd = ev.dataLo(i);
      if (listeners.has(fd)) {
        for (;;) {
          const c = sys.accept4(fd, sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
          if (c < 0) break;
          one.set(0, sys.EPOLLIN | sys.EPOLLRDHUP, c);
          sys.epollCtl(ep, sys.EPOLL_CTL_ADD, c, one);
        }
      } else {
        // The peer closed (or sent something, which the scenario never does).
        const r = sys.read(fd, buf);
        if (r === 0 || (r < 0 && r !== -sys.Errno.EAGAIN)) sys.close(fd);
      }
    }
  }
}

async function client(
  addr: Uint8Array,
  list: number[],
  count: number,
  window: number,
  hold: string,
) {
  const ep = sys.epollCreate1(sys.EPOLL_CLOEXEC);
  const ev = new sys.EpollEvents(EPOLL_BATCH);
  const one = new sys.EpollEvents(1);
  const sa = new Uint8Array(sys.SOCKADDR_STORAGE_SIZE);
  const fds: number[] = [];
  let started = 0, open = 0, failed = 0, pending = 0;
  const t0 = performance.now();
  const settle = (n: number) => {
    for (let i = 0; i < n; i++) {
      const fd = ev.dataLo(i);
      pending--;
      const err = ev.events(i) & (sys.EPOLLERR | sys.EPOLLHUP)
        ? sys.getsockoptInt(fd, sys.SOL_SOCKET, sys.SO_ERROR) || sys.Errno.EIO
        : 0;
      sys.epollCtl(ep, sys.EPOLL_CTL_DEL, fd, null);
      if (err === 0) {
        open++;
        fds.push(fd);
      } else {
        failed++;
        sys.close(fd);
      }
    }
  };
  while (started < count || pending > 0) {
    while (started < count && pending < window) {
      const fd = sys.socket(sys.AF_INET, sys.SOCK_STREAM | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
      if (fd < 0) {
        console.log(JSON.stringify({ ok: false, error: `socket: ${sys.errnoName(-fd)}`, open }));
        return;
      }
      started++;
      const len = sys.sockaddrIn4(sa, addr, list[started % list.length]);
      const rc = sys.connect(fd, sa, len);
      if (rc === 0) {
        open++;
        fds.push(fd);
      } else if (rc === -sys.Errno.EINPROGRESS) {
        one.set(0, sys.EPOLLOUT, fd);
        sys.epollCtl(ep, sys.EPOLL_CTL_ADD, fd, one);
        pending++;
      } else {
        failed++;
        sys.close(fd);
      }
    }
    if (pending > 0) settle(await sys.epollWaitAsync(ep, ev, 1000));
  }
  const seconds = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ ok: failed === 0, open, failed, seconds }));
  await appears(hold);
  for (const fd of fds) sys.close(fd);
  console.log(JSON.stringify({ closed: fds.length }));
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      addr: { type: "string", default: "127.0.0.1" },
      ports: { type: "string" },
      count: { type: "string", default: "1000" },
      window: { type: "string", default: "256" },
      hold: { type: "string" },
    },
  });
  try {
    const list = ports(values.ports ?? "");
    if (positionals[0] === "server") await server(list);
    else if (positionals[0] === "client") {
      if (values.hold === undefined) throw new Error("client: --hold FILE is required");
      await client(
        ip4(values.addr),
        list,
        Number(values.count),
        Number(values.window),
        values.hold,
      );
    } else throw new Error("usage: flows_peer.ts server|client --ports P,Q [...]");
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: (err as Error).message }));
    Deno.exit(1);
  }
  Deno.exit(0);
}
