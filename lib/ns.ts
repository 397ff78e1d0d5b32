/**
 * Network namespaces: entering or creating the guest's namespace, its tap
 * device and interface set-up, and the command that runs inside.
 *
 * # Theory of operation
 *
 * Namespaces are per thread; file descriptors are per process. tapir keeps
 * its main thread in the host's namespace (host sockets must be opened
 * there) and starts one Worker — its own OS thread — that moves into the
 * guest's namespace and stays there. The worker does everything that must
 * happen inside: create the tap device (TUNSETIFF creates the interface in
 * the calling thread's namespace), configure it over netlink, and spawn the
 * command (a child inherits the spawning thread's namespace). It hands the
 * tap fd to the main thread as a plain number, and reports the command's exit.
 *
 * The worker runs this program's own main module (`new Worker(mainUrl)`),
 * which checks {@linkcode isNsWorker} first thing. A worker in a separate
 * file would be missing from a `deno bundle` file and need its own URL; the
 * main module works the same from source, a URL and a bundle.
 *
 * Rootless: creating a network namespace needs CAP_SYS_ADMIN, which an
 * unprivileged user has only inside a user namespace of its own, and
 * joining a user namespace requires a single-threaded process — Deno never
 * is. So without root, tapir re-executes itself once under `unshare --user
 * --map-root-user` ({@linkcode rootlessReexecArgs}) and proceeds as root of
 * that user namespace; the network namespace it then creates belongs to it.
 *
 * Messages between the threads are small JSON-able objects
 * ({@linkcode NsRequest}, {@linkcode NsReply}).
 *
 * @module
 */

import { logDebug } from "./log.ts";
import { Netlink } from "./netlink.ts";
import * as sys from "./sys/mod.ts";
import { tuntapOpen } from "./tap/tuntap.ts";

/** Worker name: how the main module recognises that it runs as the namespace worker. */
const WORKER_NAME = "tapir-ns";

/** Environment variable marking the re-executed rootless process. */
export const REEXEC_ENV = "TAPIR_USERNS";

/** Which namespace the guest lives in. */
export type NsTargetSpec =
  | { readonly kind: "new" }
  | { readonly kind: "path"; readonly path: string }
  | { readonly kind: "pid"; readonly pid: number };

/** One address to put on the tap (`--config-net`). */
export interface NsAddress {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** The address bytes (4 or 16). */
  readonly addr: number[];
  /** Prefix length. */
  readonly prefixLen: number;
}

/** A route to add (`--config-net`): the default route via a gateway. */
export interface NsRoute {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** Gateway address bytes. */
  readonly gateway: number[];
}

/** What the worker sets up. */
export interface NsSetup {
  /** Namespace to enter or create. */
  readonly target: NsTargetSpec;
  /** Tap interface name. */
  readonly ifname: string;
  /** Configure addresses, routes, MTU and bring the tap up. */
  readonly configNet: boolean;
  /** MTU for the tap (with configNet). */
  readonly mtu: number;
  /** Addresses for the tap (with configNet). */
  readonly addresses: readonly NsAddress[];
  /** Routes for the tap (with configNet). */
  readonly routes: readonly NsRoute[];
}

/** Main thread → worker. */
export type NsRequest =
  | { readonly op: "setup"; readonly setup: NsSetup }
  | { readonly op: "spawn"; readonly argv: readonly string[] };

/** Worker → main thread. */
export type NsReply =
  | {
    readonly op: "ready";
    readonly tapFd: number;
    readonly ifname: string;
    readonly ifindex: number;
  }
  | { readonly op: "spawned"; readonly pid: number }
  | { readonly op: "exit"; readonly code: number; readonly signal: string | null }
  | { readonly op: "error"; readonly message: string };

/** True when this module runs as the namespace worker (check at the top of the main module). */
export function isNsWorker(): boolean {
  const g = globalThis as { WorkerGlobalScope?: unknown; name?: string };
  return typeof g.WorkerGlobalScope !== "undefined" && g.name === WORKER_NAME;
}

// ---------------------------------------------------------------------------
// Worker side

function enterNamespace(target: NsTargetSpec): void {
  if (target.kind === "new") {
    sys.sysCheck(sys.unshare(sys.CLONE_NEWNET), "unshare(CLONE_NEWNET)");
    return;
  }
  const path = target.kind === "pid" ? `/proc/${target.pid}/ns/net` : target.path;
  const fd = sys.open(path, sys.O_RDONLY | sys.O_CLOEXEC);
  if (fd < 0) throw new sys.SysError(`open ${path}`, -fd);
  try {
    sys.sysCheck(sys.setns(fd, sys.CLONE_NEWNET), `setns ${path}`);
  } finally {
    sys.close(fd);
  }
}

function configure(nl: Netlink, index: number, s: NsSetup): void {
  const check = (rc: number, what: string) => {
    if (rc < 0) throw new sys.SysError(what, -rc);
  };
  check(nl.linkSetMtu(index, s.mtu), `netlink: set MTU ${s.mtu} on ${s.ifname}`);
  check(nl.linkSetUp(index, true), `netlink: set ${s.ifname} up`);
  for (const a of s.addresses) {
    const rc = nl.addrAdd(index, a.family, new Uint8Array(a.addr), a.prefixLen, { noDad: true });
    if (rc !== -sys.Errno.EEXIST) check(rc, `netlink: add address to ${s.ifname}`);
  }
  for (const r of s.routes) {
    const rc = nl.routeAdd(r.family, { prefixLen: 0, gateway: new Uint8Array(r.gateway), index });
    if (rc !== -sys.Errno.EEXIST) check(rc, `netlink: add IPv${r.family} default route`);
  }
}

function setup(s: NsSetup): NsReply {
  enterNamespace(s.target);
  const dev = tuntapOpen(s.ifname);
  if (typeof dev === "number") throw new sys.SysError(`tap ${s.ifname}`, -dev);
  const nl = new Netlink();
  try {
    const lo = nl.linkIndex("lo");
    if (lo > 0) nl.linkSetUp(lo, true);
    const index = nl.linkIndex(dev.name);
    if (index < 0) throw new sys.SysError(`netlink: find ${dev.name}`, -index);
    if (s.configNet) configure(nl, index, s);
    return { op: "ready", tapFd: dev.fd, ifname: dev.name, ifindex: index };
  } finally {
    nl.close();
  }
}

function spawn(argv: readonly string[], post: (r: NsReply) => void): void {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  post({ op: "spawned", pid: child.pid });
  child.status.then((s) => post({ op: "exit", code: s.code, signal: s.signal }));
}

/** The worker's entry point: called by the main module when {@linkcode isNsWorker}. */
export function nsWorkerMain(): void {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent<NsRequest>) => void) | null;
    postMessage(m: NsReply): void;
  };
  const post = (r: NsReply) => scope.postMessage(r);
  scope.onmessage = (e) => {
    try {
      if (e.data.op === "setup") post(setup(e.data.setup));
      else spawn(e.data.argv, post);
    } catch (err) {
      post({ op: "error", message: err instanceof Error ? err.message : String(err) });
    }
  };
}

// ---------------------------------------------------------------------------
// Main-thread side

/** The main thread's handle on the namespace worker. */
export class NsWorker {
  readonly #worker: Worker;
  #pending: ((r: NsReply) => void) | null = null;
  #onExit: ((code: number, signal: string | null) => void) | null = null;
  #onError: ((message: string) => void) | null = null;

  /** Starts the worker from the program's main module `mainUrl`. */
  constructor(mainUrl: string) {
    this.#worker = new Worker(mainUrl, { type: "module", name: WORKER_NAME });
    this.#worker.onmessage = (e: MessageEvent<NsReply>) => this.#receive(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#receive({ op: "error", message: e.message });
    };
  }

  #receive(r: NsReply): void {
    logDebug(`ns worker: ${r.op}`);
    if (r.op === "exit") {
      this.#onExit?.(r.code, r.signal);
      return;
    }
    const pending = this.#pending;
    this.#pending = null;
    if (pending) pending(r);
    else if (r.op === "error") this.#onError?.(r.message);
  }

  #request(req: NsRequest): Promise<NsReply> {
    if (this.#pending) throw new Error("namespace worker busy");
    return new Promise((resolve) => {
      this.#pending = resolve;
      this.#worker.postMessage(req);
    });
  }

  /** Enters/creates the namespace and sets up the tap; resolves with its fd, or throws. */
  async setup(s: NsSetup): Promise<{ tapFd: number; ifname: string; ifindex: number }> {
    const r = await this.#request({ op: "setup", setup: s });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "ready") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r;
  }

  /**
   * Spawns `argv` inside the namespace; resolves with its pid once started.
   * `onExit` runs when it exits.
   */
  async spawn(
    argv: readonly string[],
    onExit: (code: number, signal: string | null) => void,
  ): Promise<number> {
    this.#onExit = onExit;
    const r = await this.#request({ op: "spawn", argv });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "spawned") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r.pid;
  }

  /** Ends the worker thread (the namespace goes when nothing else holds it). */
  terminate(): void {
    this.#worker.terminate();
  }
}

/**
 * The command line to re-execute this program inside a new user namespace
 * where it is root, or null when that is not needed (already root, or
 * already re-executed). Run from source, a bundle or a URL, the program is
 * `deno run -A MAIN`; compiled, it is the binary itself.
 */
export function rootlessReexecArgs(args: readonly string[]): string[] | null {
  if (Deno.uid() === 0 || Deno.env.get(REEXEC_ENV)) return null;
  const exe = Deno.execPath();
  const isDeno = /(^|\/)deno$/.test(exe);
  const self = isDeno ? [exe, "run", "-A", Deno.mainModule] : [exe];
  return ["unshare", "--user", "--map-root-user", "--", ...self, ...args];
}
