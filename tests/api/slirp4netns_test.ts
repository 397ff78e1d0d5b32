/**
 * slirp4netns's API (`lib/api/slirp4netns.ts`) on a real `ForwardTable`
 * whose sockets are fakes that record what was opened and closed, then
 * through a real `ApiServer` and `Loop` with the two client behaviours
 * engines have (rootlesskit's: no newline, shut down, read to the end;
 * podman's: a line, one read).
 *
 * @module
 */

import { deepStrictEqual, equal, ok } from "node:assert/strict";
import type { ApiHandler } from "../../lib/api/server.ts";
import { slirp4netnsApiHandler } from "../../lib/api/slirp4netns.ts";
import { type ForwardSockets, ForwardTable } from "../../lib/forwards.ts";
import { type PortFwd, portFwdFormat, portFwdRules } from "../../lib/fwd.ts";
import { withApiServer } from "../helpers/api.ts";

const GUEST4 = new Uint8Array([10, 0, 2, 100]);
const GUEST6 = new Uint8Array([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);

/** Sockets that are only numbers: records what is open and what was closed. */
class FakeSockets {
  /** Open fds and the spec each was opened for. */
  readonly opened = new Map<number, string>();
  /** Every fd closed, in order. */
  readonly closed: number[] = [];
  /** Opening fails for a forward of this host port. */
  failPort: number | null = null;
  /** What the table is given. */
  readonly sockets: ForwardSockets;
  #next: number;

  constructor(firstFd: number) {
    this.#next = firstFd;
    this.sockets = {
      open: (fwd) => this.#openAll(fwd) as number[],
      openAll: (fwd) => this.#openAll(fwd),
      close: (fds) => this.#close(fds),
    };
  }

  #openAll(fwd: PortFwd): number[] | string {
    const fail = this.failPort;
    if (fail !== null && portFwdRules(fwd).some((r) => r.first <= fail && fail <= r.last)) {
      return `cannot bind port ${fail}: EADDRINUSE`;
    }
    return portFwdRules(fwd).map(() => {
      const fd = this.#next++;
      this.opened.set(fd, portFwdFormat(fwd));
      return fd;
    });
  }

  #close(fds: readonly number[]): void {
    for (const fd of fds) {
      ok(this.opened.delete(fd), `fd ${fd} closed once, and only if open`);
      this.closed.push(fd);
    }
  }
}

interface Api {
  readonly call: (request: Record<string, unknown>) => Promise<string>;
  readonly handler: ApiHandler;
  readonly table: ForwardTable;
  readonly tcp: FakeSockets;
  readonly udp: FakeSockets;
}

/** A handler over a fresh table; `call` answers one request as the JSON text the server writes. */
function api(ipv6: boolean): Api {
  const tcp = new FakeSockets(100);
  const udp = new FakeSockets(200);
  const table = new ForwardTable({
    tcp: tcp.sockets,
    udp: udp.sockets,
  });
  const handler = slirp4netnsApiHandler({
    forwards: table,
    guest4: GUEST4,
    guest6: ipv6 ? GUEST6 : null,
  });
  const call = async (request: Record<string, unknown>) =>
    JSON.stringify(await handler(request, { id: 1 }));
  return { call, handler, table, tcp, udp };
}

/** An add_hostfwd request. */
function add(args: Record<string, unknown>): Record<string, unknown> {
  return { execute: "add_hostfwd", arguments: args };
}

/** The exact error reply for a bad argument of add_hostfwd. */
const badArg = (name: string) =>
  `{"error":{"desc":"bad request: add_hostfwd: bad arguments.${name}"}}`;

const TCP_8080 = { proto: "tcp", host_port: 8080, guest_port: 80 };

Deno.test("add_hostfwd replies with ids counting from 1", async () => {
  const { call } = api(false);
  equal(await call(add(TCP_8080)), '{"return":{"id":1}}');
  equal(await call(add({ ...TCP_8080, host_port: 8081 })), '{"return":{"id":2}}');
  equal(await call(add({ proto: "udp", host_port: 8080, guest_port: 80 })), '{"return":{"id":3}}');
});

Deno.test("the wildcard host address with IPv6 on is one forward of both families", async () => {
  for (const hostAddr of [undefined, "", "0.0.0.0", "::", "::0"]) {
    const { call, table, tcp } = api(true);
    equal(await call(add({ ...TCP_8080, host_addr: hostAddr })), '{"return":{"id":1}}');
    deepStrictEqual(table.list(), [{ proto: "tcp", spec: "8080:80" }], `host_addr ${hostAddr}`);
    equal(tcp.opened.size, 1);
  }
});

Deno.test("the wildcard host address with IPv6 off is 0.0.0.0 only", async () => {
  for (const hostAddr of [undefined, "0.0.0.0", "::"]) {
    const { call, table } = api(false);
    equal(await call(add({ ...TCP_8080, host_addr: hostAddr })), '{"return":{"id":1}}');
    deepStrictEqual(table.list(), [{ proto: "tcp", spec: "0.0.0.0/8080:80" }], `${hostAddr}`);
  }
});

Deno.test("a host address of one family is a forward bound to it", async () => {
  for (const ipv6 of [false, true]) {
    const { call, table } = api(ipv6);
    equal(await call(add({ ...TCP_8080, host_addr: "127.0.0.1" })), '{"return":{"id":1}}');
    deepStrictEqual(table.list(), [{ proto: "tcp", spec: "127.0.0.1/8080:80" }]);
  }
  const { call, table } = api(true);
  equal(await call(add({ ...TCP_8080, host_addr: "::1" })), '{"return":{"id":1}}');
  deepStrictEqual(table.list(), [{ proto: "tcp", spec: "::1/8080:80" }]);
});

Deno.test("an IPv6 host address with IPv6 off, or no address at all, is refused", async () => {
  const { call, table, tcp } = api(false);
  equal(await call(add({ ...TCP_8080, host_addr: "::1" })), badArg("host_addr"));
  equal(await call(add({ ...TCP_8080, host_addr: "localhost" })), badArg("host_addr"));
  equal(await call(add({ ...TCP_8080, host_addr: "10.0.2" })), badArg("host_addr"));
  deepStrictEqual(table.list(), []);
  equal(tcp.opened.size, 0);
});

Deno.test("proto: tcp4 and tcp6 pick a family, udp goes to the UDP table, others are refused", async () => {
  const { call, table, udp } = api(true);
  equal(await call(add({ ...TCP_8080, proto: "tcp4" })), '{"return":{"id":1}}');
  equal(await call(add({ ...TCP_8080, proto: "tcp6" })), '{"return":{"id":2}}');
  equal(await call(add({ ...TCP_8080, proto: "udp" })), '{"return":{"id":3}}');
  equal(await call(add({ ...TCP_8080, proto: "udp4", host_port: 5353 })), '{"return":{"id":4}}');
  deepStrictEqual(table.list(), [
    { proto: "tcp", spec: "0.0.0.0/8080:80" },
    { proto: "tcp", spec: "::/8080:80" },
    { proto: "udp", spec: "8080:80" },
    { proto: "udp", spec: "0.0.0.0/5353:80" },
  ]);
  equal(udp.opened.size, 2);
  for (const proto of ["sctp", "TCP", "tcp46", "", 6, null]) {
    equal(await call(add({ ...TCP_8080, proto })), badArg("proto"), `proto ${proto}`);
  }
  equal(await call(add({ host_port: 8080, guest_port: 80 })), badArg("proto"), "no proto");
  equal(await call(add({ ...TCP_8080, proto: "tcp4", host_addr: "::1" })), badArg("host_addr"));
  equal(
    await call(add({ ...TCP_8080, proto: "tcp6", host_addr: "127.0.0.1" })),
    badArg("host_addr"),
  );
});

Deno.test("proto tcp6 or udp6 with IPv6 off is refused", async () => {
  const { call, table } = api(false);
  equal(await call(add({ ...TCP_8080, proto: "tcp6" })), badArg("proto"));
  equal(await call(add({ ...TCP_8080, proto: "udp6" })), badArg("proto"));
  deepStrictEqual(table.list(), []);
});

Deno.test("a missing or out-of-range port is refused with slirp4netns's exact error", async () => {
  const { call, table } = api(false);
  for (const hostPort of [undefined, 0, -1, 65536, "8080", null, 0.5]) {
    equal(
      await call(add({ proto: "tcp", host_port: hostPort, guest_port: 80 })),
      '{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}',
      `host_port ${hostPort}`,
    );
  }
  for (const guestPort of [undefined, 0, 70000, "80"]) {
    equal(
      await call(add({ proto: "tcp", host_port: 8080, guest_port: guestPort })),
      '{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}',
      `guest_port ${guestPort}`,
    );
  }
  deepStrictEqual(table.list(), []);
  // A fraction is truncated, as slirp4netns reads numbers.
  equal(
    await call(add({ proto: "tcp", host_port: 8080.9, guest_port: 80.2 })),
    '{"return":{"id":1}}',
  );
  deepStrictEqual(table.list(), [{ proto: "tcp", spec: "0.0.0.0/8080:80" }]);
});

Deno.test("guest_addr: empty (as podman sends it) or the guest's own; any other is refused", async () => {
  const { call, table } = api(true);
  equal(await call(add({ ...TCP_8080, guest_addr: "" })), '{"return":{"id":1}}');
  equal(
    await call(add({ ...TCP_8080, host_port: 8081, guest_addr: "10.0.2.100" })),
    '{"return":{"id":2}}',
  );
  equal(
    await call(add({ ...TCP_8080, host_port: 8082, guest_addr: "fd00::100" })),
    '{"return":{"id":3}}',
  );
  equal(table.list().length, 3);
  for (const guestAddr of ["10.0.2.101", "fd00::101", "127.0.0.1", "guest"]) {
    equal(
      await call(add({ ...TCP_8080, host_port: 9000, guest_addr: guestAddr })),
      badArg("guest_addr"),
      guestAddr,
    );
  }
  const v4only = api(false);
  equal(await v4only.call(add({ ...TCP_8080, guest_addr: "fd00::100" })), badArg("guest_addr"));
});

Deno.test("an add overlapping a forward already there is refused and leaves nothing open", async () => {
  const { call, table, tcp } = api(true);
  equal(await call(add(TCP_8080)), '{"return":{"id":1}}');
  const reply = JSON.parse(await call(add({ ...TCP_8080, guest_port: 81 })));
  ok(typeof reply.error?.desc === "string", JSON.stringify(reply));
  ok(reply.error.desc.startsWith("bad request: add_hostfwd: "), reply.error.desc);
  ok(reply.error.desc.includes("8080"), reply.error.desc);
  const bound = JSON.parse(await call(add({ ...TCP_8080, host_addr: "127.0.0.1" })));
  ok(bound.error !== undefined, "a bound address overlaps the wildcard");
  deepStrictEqual(table.list(), [{ proto: "tcp", spec: "8080:80" }]);
  deepStrictEqual([...tcp.opened.values()], ["8080:80"]);
  deepStrictEqual(tcp.closed, []);
  equal(JSON.parse(await call({ execute: "list_hostfwd" })).entries.length, 1);
});

Deno.test("an add whose sockets cannot all be opened is refused whole and uses no id", async () => {
  const { call, table, tcp } = api(false);
  tcp.failPort = 9090;
  const reply = JSON.parse(await call(add({ ...TCP_8080, host_port: 9090 })));
  equal(
    reply.error?.desc,
    "bad request: add_hostfwd: -t 0.0.0.0/9090:80: cannot bind port 9090: EADDRINUSE",
  );
  deepStrictEqual(table.list(), []);
  equal(tcp.opened.size, 0);
  equal(await call({ execute: "list_hostfwd" }), '{"entries":[]}');
  equal(await call(add(TCP_8080)), '{"return":{"id":1}}', "the refused add used no id");
  tcp.failPort = null;
  equal(
    await call(add({ ...TCP_8080, host_port: 9090 })),
    '{"return":{"id":2}}',
    "the port is free again",
  );
});

Deno.test("list_hostfwd lists entries in slirp4netns's field order, IPv6 fields only where present", async () => {
  const { call } = api(true);
  equal(await call({ execute: "list_hostfwd" }), '{"entries":[]}');
  await call(add({ proto: "tcp", host_port: 8080, guest_port: 80 }));
  await call(add({ proto: "udp4", host_addr: "127.0.0.1", host_port: 5353, guest_port: 53 }));
  await call(add({ proto: "tcp6", host_addr: "::1", host_port: 2222, guest_port: 22 }));
  equal(
    await call({ execute: "list_hostfwd" }),
    '{"entries":[' +
      '{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_addr6":"::","host_port":8080,' +
      '"guest_addr":"10.0.2.100","guest_addr6":"fd00::100","guest_port":80},' +
      '{"id":2,"proto":"udp","host_addr":"127.0.0.1","host_port":5353,' +
      '"guest_addr":"10.0.2.100","guest_port":53},' +
      '{"id":3,"proto":"tcp","host_addr6":"::1","host_port":2222,' +
      '"guest_addr6":"fd00::100","guest_port":22}' +
      "]}",
  );
  const v4only = api(false);
  await v4only.call(add(TCP_8080));
  equal(
    await v4only.call({ execute: "list_hostfwd", arguments: {} }),
    '{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,' +
      '"guest_addr":"10.0.2.100","guest_port":80}]}',
  );
});

Deno.test("remove_hostfwd closes exactly the entry's sockets; an unknown id is refused", async () => {
  const { call, table, tcp, udp } = api(true);
  await call(add(TCP_8080));
  await call(add({ ...TCP_8080, host_port: 8081 }));
  await call(add({ ...TCP_8080, proto: "udp" }));
  const fdOf8081 = [...tcp.opened].find(([, spec]) => spec === "8081:80")![0];
  equal(await call({ execute: "remove_hostfwd", arguments: { id: 2 } }), '{"return":{}}');
  deepStrictEqual(tcp.closed, [fdOf8081]);
  deepStrictEqual([...tcp.opened.values()], ["8080:80"]);
  deepStrictEqual(udp.closed, []);
  deepStrictEqual(table.list(), [
    { proto: "tcp", spec: "8080:80" },
    { proto: "udp", spec: "8080:80" },
  ]);
  deepStrictEqual(
    JSON.parse(await call({ execute: "list_hostfwd" })).entries.map((e: { id: number }) => e.id),
    [1, 3],
  );
  const badId = '{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}';
  equal(await call({ execute: "remove_hostfwd", arguments: { id: 2 } }), badId, "already removed");
  equal(await call({ execute: "remove_hostfwd", arguments: { id: 99 } }), badId);
  equal(await call({ execute: "remove_hostfwd", arguments: { id: "1" } }), badId);
  equal(await call({ execute: "remove_hostfwd" }), badId);
  equal(tcp.closed.length, 1, "refusals close nothing");
  equal(await call({ execute: "remove_hostfwd", arguments: { id: 3 } }), '{"return":{}}');
  equal(udp.opened.size, 0);
  equal(
    await call(add({ ...TCP_8080, host_port: 8081 })),
    '{"return":{"id":4}}',
    "ids are not reused",
  );
});

Deno.test("an unknown or missing execute is refused", async () => {
  const { call } = api(false);
  equal(
    await call({ execute: "delete_hostfwd" }),
    '{"error":{"desc":"bad request: unknown execute"}}',
  );
  equal(await call({ execute: "stats" }), '{"error":{"desc":"bad request: unknown execute"}}');
  equal(await call({}), '{"error":{"desc":"bad request: no execute found"}}');
  equal(await call({ execute: 1 }), '{"error":{"desc":"bad request: no execute found"}}');
  equal(
    await call({ execute: "add_hostfwd", arguments: [TCP_8080] }),
    badArg("proto"),
    "arguments that are not an object are no arguments",
  );
});

// ---------------------------------------------------------------------------
// Through the real server.

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads `conn` to the end of the stream. */
async function readAll(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(4096);
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
  }
  let text = "";
  for (const c of chunks) text += dec.decode(c, { stream: true });
  return text + dec.decode();
}

/** rootlesskit's client: the request without a newline, shut down, read to the end. */
async function askLikeRootlesskit(path: string, request: unknown): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(enc.encode(JSON.stringify(request)));
    await conn.closeWrite();
    return await readAll(conn);
  } finally {
    conn.close();
  }
}

/** podman's client: one line, one read. */
async function askLikePodman(path: string, request: unknown): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(enc.encode(JSON.stringify(request) + "\n"));
    let text = "";
    const buf = new Uint8Array(4096);
    while (!text.endsWith("\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += dec.decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    conn.close();
  }
}

Deno.test("rootlesskit's client: no newline, write side shut, exactly one reply line then EOF", async () => {
  const { handler, tcp } = api(false);
  await withApiServer(handler, async ({ path }) => {
    equal(await askLikeRootlesskit(path, add(TCP_8080)), '{"return":{"id":1}}\n');
    equal(
      await askLikeRootlesskit(path, { execute: "list_hostfwd" }),
      '{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,' +
        '"guest_addr":"10.0.2.100","guest_port":80}]}\n',
    );
    equal(
      await askLikeRootlesskit(path, { execute: "remove_hostfwd", arguments: { id: 1 } }),
      '{"return":{}}\n',
    );
    equal(await askLikeRootlesskit(path, { execute: "list_hostfwd" }), '{"entries":[]}\n');
    equal(tcp.opened.size, 0);
    equal(tcp.closed.length, 1);
  });
});

Deno.test("podman's client: a request line and one reply line", async () => {
  const { handler, table } = api(true);
  await withApiServer(handler, async ({ path }) => {
    const request = add({
      proto: "tcp",
      host_addr: "",
      host_port: 8080,
      guest_addr: "",
      guest_port: 80,
    });
    equal(await askLikePodman(path, request), '{"return":{"id":1}}\n');
    const again = JSON.parse(await askLikePodman(path, request));
    ok(again.error.desc.startsWith("bad request: add_hostfwd: "), again.error.desc);
    deepStrictEqual(table.list(), [{ proto: "tcp", spec: "8080:80" }]);
  });
});
