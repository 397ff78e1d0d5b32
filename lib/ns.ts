/**
 * Network namespaces: entering or creating the guest's namespace, its tap
 * device and interface set-up, and the command that runs inside.
 *
 * # Theory of operation
 *
 * Namespaces are per thread; file descriptors are per process. tapir's
 * main thread works in the host's namespace (host sockets must be opened
 * there). What must happen inside the guest's — create the tap device
 * (TUNSETIFF creates the interface in the calling thread's namespace),
 * configure it over netlink, spawn the command (a child inherits the
 * spawning thread's namespace), create sockets for it — is done one of two
 * ways, both behind {@linkcode NsAccess}:
 *
 * - **From the main thread** ({@linkcode NsHere}), when it can come back:
 *   it enters the namespace, does the set-up (or starts the command) and
 *   returns to the host's namespace in one synchronous step, so no other
 *   JavaScript runs, and no host socket is opened, in between. Nor is a
 *   thread made there (a thread starts in its creator's namespace): the
 *   command is spawned without one, and waited for after coming back
 *   (`sys.spawnProcess`, `sys.waitProcess`). Returning
 *   needs CAP_SYS_ADMIN over the host's namespace: root in its user
 *   namespace, which {@linkcode NsHere.open} probes. This is the quick way:
 *   a worker's start holds the main thread ~30 ms and its set-up is ready
 *   only ~60 ms after tapir's start, and the command waited for it. A worker
 *   still joins the namespace (through a descriptor of it) when the run may
 *   ask for sockets or port scans there (forwards, a control socket): those
 *   come after the sandbox has dropped the capability to move.
 * - **From a Worker** ({@linkcode NsWorker}) — its own OS thread — that
 *   moves into the namespace and stays there, when the main thread could
 *   not come back (rootless: the host's namespace belongs to a user
 *   namespace where tapir has no capability). It does all of the above and
 *   hands the tap fd to the main thread as a plain number, and reports the
 *   command's exit.
 *
 * A worker runs this program's own main module (`new Worker(mainUrl)`),
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
 * To serve a namespace that belongs to someone else's user namespace (a
 * PID's, as rootlesskit asks), it joins that one instead (`nsenter --user`,
 * keeping its ids), where it has the capabilities that namespace grants.
 *
 * A socket's network namespace is fixed when `socket()` is called, by the
 * calling thread's namespace; `bind`, `listen`, `connect` and `accept` then
 * act in the socket's namespace whichever thread calls them. So the worker
 * only *creates* sockets for the namespace, in batches
 * ({@linkcode NsWorker.sockets}), and the main thread does the rest with
 * the numbers. Likewise it reads the namespace's listening TCP ports for
 * `-t auto` ({@linkcode NsWorker.scanTcp}) and its bound UDP ports for
 * `-u auto` ({@linkcode NsWorker.scanUdp}): `/proc/thread-self/net/tcp`
 * and `udp` show the reading thread's namespace.
 *
 * Messages between the threads are small JSON-able objects
 * ({@linkcode NsRequest}, {@linkcode NsReply}). Each request carries an id
 * that its reply repeats, so several requests (a socket refill, a port scan)
 * can be outstanding at once; the command's exit is the one unsolicited
 * message.
 *
 * @module
 */

import {
  type PortScan,
  readTcpListening,
  readUdpBound,
  type TcpListenScan,
} from "./l4/tcp_scan.ts";
import { logDebug, logTrace } from "./log.ts";
import { Netlink } from "./netlink.ts";
import * as sys from "./sys/mod.ts";
import { tuntapOpen } from "./tap/tuntap_open.ts";

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
  /** MAC address for the tap (with configNet), or null for the kernel's random one. */
  readonly mac?: readonly number[] | null;
}

/** The tap a set-up made. */
export interface NsDevice {
  /** Its descriptor (process-wide: any thread may use it). */
  readonly tapFd: number;
  /** Its interface name. */
  readonly ifname: string;
  /** Its interface index in the namespace. */
  readonly ifindex: number;
  /** The tap was opened with a virtio-net header (checksum offload). */
  readonly vnetHdr: boolean;
}

/**
 * What the modes ask of the namespace, whichever thread does it
 * ({@linkcode NsHere} or {@linkcode NsWorker}; see the module comment).
 */
export interface NsAccess {
  /** Enters or creates the namespace and sets up the tap; resolves with it, or rejects. */
  setup(s: NsSetup): Promise<NsDevice>;
  /**
   * Spawns `argv` inside the namespace; resolves with its pid once started.
   * It may be asked right after {@linkcode setup}, before that resolves:
   * nothing is started in a namespace that failed to set up.
   */
  spawn(argv: readonly string[]): Promise<number>;
  /**
   * Runs `onExit` with the spawned command's exit code (128 + the signal's
   * number if a signal ended it) when it exits — at once if it has exited
   * already (it may, before the caller is ready to hear it).
   */
  onCommandExit(onExit: (code: number) => void): void;
  /** The spawned command has exited. */
  readonly commandExited: boolean;
  /**
   * Creates `count` (at most {@linkcode NS_SOCKETS_MAX}) non-blocking,
   * close-on-exec TCP (`udp`: UDP) sockets of `family` in the namespace;
   * resolves with their fds — fewer if it ran out of descriptors — or
   * rejects if none could be made. The caller owns and closes them.
   */
  sockets(family: 4 | 6, count: number, udp?: boolean): Promise<number[]>;
  /** The namespace's listening TCP sockets, per family. */
  scanTcp(): Promise<TcpListenScan>;
  /**
   * The namespace's bound, unconnected UDP sockets, per family, leaving out
   * ports in the namespace's ephemeral range (see `readUdpBound`).
   */
  scanUdp(): Promise<PortScan>;
  /** Lets the namespace go (it goes when nothing else holds it); requests still waiting fail. */
  terminate(): void;
}

/** Most sockets one {@linkcode NsAccess.sockets} request creates. */
export const NS_SOCKETS_MAX = 4096;

/** Main thread → worker. `id` is repeated in the reply. */
export type NsRequest =
  | { readonly id: number; readonly op: "setup"; readonly setup: NsSetup }
  | { readonly id: number; readonly op: "spawn"; readonly argv: readonly string[] }
  /** Join the namespace the main thread set up, through its descriptor `fd`. */
  | { readonly id: number; readonly op: "join"; readonly fd: number }
  /** Create `count` non-blocking TCP sockets of `family` in the namespace. */
  | {
    readonly id: number;
    readonly op: "sockets";
    readonly family: 4 | 6;
    readonly count: number;
    /** Datagram sockets instead of stream ones. */
    readonly udp?: boolean;
  }
  /** Read the namespace's listening TCP sockets. */
  | { readonly id: number; readonly op: "scanTcp" }
  /** Read the namespace's bound, unconnected UDP sockets (ephemeral ports left out). */
  | { readonly id: number; readonly op: "scanUdp" };

/** Worker → main thread: the reply to request `id`, or the command's exit (no id). */
export type NsReply =
  | {
    readonly id: number;
    readonly op: "ready";
    readonly tapFd: number;
    readonly ifname: string;
    readonly ifindex: number;
    /** The tap was opened with a virtio-net header (checksum offload). */
    readonly vnetHdr: boolean;
  }
  | { readonly id: number; readonly op: "spawned"; readonly pid: number }
  | { readonly id: number; readonly op: "joined" }
  /** The sockets created: fewer than asked if the worker ran out of descriptors. */
  | { readonly id: number; readonly op: "sockets"; readonly fds: readonly number[] }
  | { readonly id: number; readonly op: "scanTcp"; readonly scan: TcpListenScan }
  | { readonly id: number; readonly op: "scanUdp"; readonly scan: PortScan }
  /** The command ended: its exit code, or 128 + the signal that ended it. */
  | { readonly op: "exit"; readonly code: number }
  /** Request `id` failed; id 0: the worker itself failed. */
  | { readonly id: number; readonly op: "error"; readonly message: string };

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
  if (s.mac) check(nl.linkSetMac(index, new Uint8Array(s.mac)), `netlink: set MAC of ${s.ifname}`);
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

/**
 * Set once the namespace and its tap are up. Until then the thread may
 * still be in the host's namespace (or set-up failed half-way), so nothing
 * is started or created "in the namespace" before it.
 */
let nsReady = false;

function assertNsReady(what: string): void {
  if (!nsReady) throw new Error(`${what}: the namespace is not set up`);
}

/**
 * Moves the calling thread into the namespace of `s` and makes and
 * configures its tap there. On failure the thread may be left in a new,
 * empty namespace.
 */
function setUpNamespace(s: NsSetup): NsDevice {
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
    return { tapFd: dev.fd, ifname: dev.name, ifindex: index, vnetHdr: dev.vnetHdr };
  } catch (err) {
    sys.close(dev.fd);
    throw err;
  } finally {
    nl.close();
  }
}

/** Starts `argv` with tapir's standard streams, in the calling thread's namespace; its pid. */
function spawnCommand(argv: readonly string[]): number {
  const pid = sys.spawnProcess(argv);
  if (pid < 0) throw new sys.SysError(`run ${argv[0]}`, -pid);
  return pid;
}

/**
 * Tells `onExit` the exit code of command `pid` (or 128 + the signal that
 * ended it) when it ends. The wait holds a thread of Deno's pool, which may
 * be started for it: call this in the namespace that thread should have.
 */
function watchCommand(pid: number, onExit: (code: number) => void): void {
  sys.waitProcess(pid).then((end) => onExit(end?.code ?? 1));
}

function setup(id: number, s: NsSetup): NsReply {
  if (nsReady) throw new Error("the namespace is set up already");
  const dev = setUpNamespace(s);
  nsReady = true;
  return { id, op: "ready", ...dev };
}

function join(id: number, fd: number): NsReply {
  if (nsReady) throw new Error("the namespace is set up already");
  sys.sysCheck(sys.setns(fd, sys.CLONE_NEWNET), "setns (join the namespace)");
  nsReady = true;
  return { id, op: "joined" };
}

function spawn(id: number, argv: readonly string[], post: (r: NsReply) => void): void {
  assertNsReady(`run ${argv[0]}`);
  const pid = spawnCommand(argv);
  watchCommand(pid, (code) => post({ op: "exit", code }));
  post({ id, op: "spawned", pid });
}

/**
 * Creates up to `count` TCP (or UDP) sockets in this thread's namespace.
 * Stops early when one fails (out of descriptors): the ones made are still
 * useful.
 */
function sockets(id: number, family: 4 | 6, count: number, udp = false): NsReply {
  assertNsReady("sockets");
  const domain = family === 4 ? sys.AF_INET : sys.AF_INET6;
  const type = udp ? sys.SOCK_DGRAM : sys.SOCK_STREAM;
  const fds: number[] = [];
  const n = Math.min(Math.max(0, Math.floor(count)), NS_SOCKETS_MAX);
  for (let i = 0; i < n; i++) {
    const fd = sys.socket(domain, type | sys.SOCK_NONBLOCK | sys.SOCK_CLOEXEC);
    if (fd < 0) {
      if (fds.length > 0) break;
      throw new sys.SysError(`socket (IPv${family}) in the namespace`, -fd);
    }
    fds.push(fd);
  }
  return { id, op: "sockets", fds };
}

/** The worker's entry point: called by the main module when {@linkcode isNsWorker}. */
export function nsWorkerMain(): void {
  const scope = globalThis as unknown as {
    onmessage: ((e: MessageEvent<NsRequest>) => void) | null;
    postMessage(m: NsReply): void;
  };
  const post = (r: NsReply) => scope.postMessage(r);
  scope.onmessage = (e) => {
    const req = e.data;
    try {
      switch (req.op) {
        case "setup":
          post(setup(req.id, req.setup));
          break;
        case "join":
          post(join(req.id, req.fd));
          break;
        case "spawn":
          spawn(req.id, req.argv, post);
          break;
        case "sockets":
          post(sockets(req.id, req.family, req.count, req.udp));
          break;
        case "scanTcp":
          assertNsReady("scan");
          post({ id: req.id, op: "scanTcp", scan: readTcpListening() });
          break;
        case "scanUdp":
          assertNsReady("scan");
          post({ id: req.id, op: "scanUdp", scan: readUdpBound() });
          break;
      }
    } catch (err) {
      post({ id: req.id, op: "error", message: err instanceof Error ? err.message : String(err) });
    }
  };
}

// ---------------------------------------------------------------------------
// Main-thread side

/** Distributes `Omit` over a union, so each request keeps its own fields. */
type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;

/** The command's exit, kept for a listener that may come later (see {@linkcode NsAccess.onCommandExit}). */
class CommandExit {
  #onExit: ((code: number) => void) | null = null;
  #code: number | null = null;

  /** Records the exit and tells the listener, if there is one yet. */
  exited(code: number): void {
    this.#code = code;
    this.#onExit?.(code);
  }

  /** Sets the listener; runs it at once if the command has exited already. */
  listen(onExit: (code: number) => void): void {
    this.#onExit = onExit;
    if (this.#code !== null) onExit(this.#code);
  }

  /** The command has exited. */
  get done(): boolean {
    return this.#code !== null;
  }
}

/** The main thread's handle on the namespace worker. */
export class NsWorker implements NsAccess {
  readonly #worker: Worker;
  readonly #pending = new Map<number, (r: NsReply) => void>();
  #nextId = 1;
  #terminated = false;
  readonly #exit = new CommandExit();
  #onError: ((message: string) => void) | null = null;

  /** Starts the worker from the program's main module `mainUrl`. */
  constructor(mainUrl: string) {
    this.#worker = new Worker(mainUrl, { type: "module", name: WORKER_NAME });
    this.#worker.onmessage = (e: MessageEvent<NsReply>) => this.#receive(e.data);
    this.#worker.onerror = (e) => {
      e.preventDefault();
      this.#receive({ id: 0, op: "error", message: e.message });
    };
  }

  #receive(r: NsReply): void {
    // Socket refills and scans come every second or so: trace, not debug.
    if (r.op === "sockets" || r.op === "scanTcp" || r.op === "scanUdp") {
      logTrace(`ns worker: ${r.op}`);
    } else logDebug(`ns worker: ${r.op}`);
    if (r.op === "exit") {
      this.#exit.exited(r.code);
      return;
    }
    const pending = this.#pending.get(r.id);
    if (pending) {
      this.#pending.delete(r.id);
      pending(r);
    } else if (r.op === "error") {
      // The worker itself failed: every request waiting for it fails too.
      for (const [id, resolve] of this.#pending) resolve({ id, op: "error", message: r.message });
      this.#pending.clear();
      this.#onError?.(r.message);
    }
  }

  #request(req: WithoutId<NsRequest>): Promise<NsReply> {
    if (this.#terminated) return Promise.reject(new Error("namespace worker terminated"));
    const id = this.#nextId++;
    return new Promise((resolve) => {
      this.#pending.set(id, resolve);
      this.#worker.postMessage({ ...req, id } as NsRequest);
    });
  }

  /** See {@linkcode NsAccess.setup}. */
  async setup(s: NsSetup): Promise<NsDevice> {
    const r = await this.#request({ op: "setup", setup: s });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "ready") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r;
  }

  /**
   * Joins the namespace `fd` refers to (set up by {@linkcode NsHere}), in
   * place of {@linkcode setup}; requests asked after this one wait for it.
   */
  async join(fd: number): Promise<void> {
    const r = await this.#request({ op: "join", fd });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "joined") throw new Error(`namespace worker: unexpected ${r.op}`);
  }

  /**
   * See {@linkcode NsAccess.spawn}: the worker takes requests in order and
   * starts nothing in a namespace that failed to set up.
   */
  async spawn(argv: readonly string[]): Promise<number> {
    const r = await this.#request({ op: "spawn", argv });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "spawned") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r.pid;
  }

  /** See {@linkcode NsAccess.onCommandExit}. */
  onCommandExit(onExit: (code: number) => void): void {
    this.#exit.listen(onExit);
  }

  /** The spawned command has exited. */
  get commandExited(): boolean {
    return this.#exit.done;
  }

  /** See {@linkcode NsAccess.sockets}. */
  async sockets(family: 4 | 6, count: number, udp = false): Promise<number[]> {
    const r = await this.#request({ op: "sockets", family, count, udp });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "sockets") throw new Error(`namespace worker: unexpected ${r.op}`);
    return [...r.fds];
  }

  /** See {@linkcode NsAccess.scanTcp}. */
  async scanTcp(): Promise<TcpListenScan> {
    const r = await this.#request({ op: "scanTcp" });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "scanTcp") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r.scan;
  }

  /** See {@linkcode NsAccess.scanUdp}. */
  async scanUdp(): Promise<PortScan> {
    const r = await this.#request({ op: "scanUdp" });
    if (r.op === "error") throw new Error(r.message);
    if (r.op !== "scanUdp") throw new Error(`namespace worker: unexpected ${r.op}`);
    return r.scan;
  }

  /**
   * Ends the worker thread (the namespace goes when nothing else holds it).
   * Requests still waiting fail.
   */
  terminate(): void {
    this.#terminated = true;
    this.#worker.terminate();
    for (const [id, resolve] of this.#pending) {
      resolve({ id, op: "error", message: "namespace worker terminated" });
    }
    this.#pending.clear();
  }
}

/** The calling thread's network namespace. */
const OWN_NETNS = "/proc/thread-self/ns/net";

/** A descriptor of the calling thread's network namespace (close-on-exec), or -errno. */
function openOwnNetns(): number {
  return sys.open(OWN_NETNS, sys.O_RDONLY | sys.O_CLOEXEC);
}

/**
 * The namespace reached from the calling thread, which enters it and comes
 * back to the host's namespace within each synchronous call (see the module
 * comment). Sockets and port scans go to a worker that joins the namespace
 * through a descriptor of it ({@linkcode startWorker}); without one they
 * fail.
 */
export class NsHere implements NsAccess {
  /** The calling thread's own (the host's) namespace, to come back to; -1 once terminated. */
  #hostFd: number;
  /** The guest's namespace once set up, else -1. */
  #nsFd = -1;
  #worker: NsWorker | null = null;
  readonly #exit = new CommandExit();
  #spawned = false;

  private constructor(hostFd: number) {
    this.#hostFd = hostFd;
  }

  /**
   * An {@linkcode NsHere} if the calling thread may leave its namespace and
   * come back — it re-enters its own as a probe — else null (use
   * {@linkcode NsWorker}).
   */
  static open(): NsHere | null {
    const fd = openOwnNetns();
    if (fd < 0) return null;
    const rc = sys.setns(fd, sys.CLONE_NEWNET);
    if (rc < 0) {
      logDebug(`setns into the host's namespace: ${sys.errnoName(-rc)}: set-up in a worker`);
      sys.close(fd);
      return null;
    }
    return new NsHere(fd);
  }

  /** Runs `body` in the guest's namespace (`nsFd`, or where `body` goes), then comes back. */
  #inside<T>(nsFd: number, body: () => T): T {
    let outcome: { ok: true; value: T } | { ok: false; error: unknown };
    try {
      if (nsFd >= 0) sys.sysCheck(sys.setns(nsFd, sys.CLONE_NEWNET), "setns (the namespace)");
      outcome = { ok: true, value: body() };
    } catch (error) {
      outcome = { ok: false, error };
    }
    const rc = sys.setns(this.#hostFd, sys.CLONE_NEWNET);
    // The probe in `open` makes this unreachable; carrying on would open
    // host sockets in the guest's namespace.
    if (rc < 0) throw new Error(`cannot return to the host's namespace: ${sys.errnoName(-rc)}`);
    if (!outcome.ok) throw outcome.error;
    return outcome.value;
  }

  /** See {@linkcode NsAccess.setup}; done by the time this returns. */
  setup(s: NsSetup): Promise<NsDevice> {
    try {
      if (this.#nsFd >= 0) throw new Error("the namespace is set up already");
      return Promise.resolve(this.#inside(-1, () => {
        const dev = setUpNamespace(s);
        const fd = openOwnNetns();
        if (fd < 0) {
          sys.close(dev.tapFd);
          throw new sys.SysError(`open ${OWN_NETNS}`, -fd);
        }
        this.#nsFd = fd;
        return dev;
      }));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Starts a worker that joins the namespace, for {@linkcode sockets} and
   * the scans. Call after a successful {@linkcode setup}.
   */
  startWorker(mainUrl: string): void {
    if (this.#nsFd < 0 || this.#worker !== null) return;
    this.#worker = new NsWorker(mainUrl);
    // A failed join fails every request after it ("not set up").
    this.#worker.join(this.#nsFd).catch(() => {});
  }

  /** See {@linkcode NsAccess.spawn}; started by the time this returns. */
  spawn(argv: readonly string[]): Promise<number> {
    try {
      if (this.#nsFd < 0) throw new Error(`run ${argv[0]}: the namespace is not set up`);
      if (this.#spawned) throw new Error(`run ${argv[0]}: a command runs already`);
      const pid = this.#inside(this.#nsFd, () => spawnCommand(argv));
      this.#spawned = true;
      watchCommand(pid, (code) => this.#exit.exited(code));
      return Promise.resolve(pid);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** See {@linkcode NsAccess.onCommandExit}. */
  onCommandExit(onExit: (code: number) => void): void {
    this.#exit.listen(onExit);
  }

  /** The spawned command has exited. */
  get commandExited(): boolean {
    return this.#exit.done;
  }

  #needWorker(what: string): NsWorker {
    if (this.#worker === null) throw new Error(`${what}: no worker in the namespace`);
    return this.#worker;
  }

  /** See {@linkcode NsAccess.sockets}: asked of the worker. */
  async sockets(family: 4 | 6, count: number, udp = false): Promise<number[]> {
    return await this.#needWorker("sockets").sockets(family, count, udp);
  }

  /** See {@linkcode NsAccess.scanTcp}: asked of the worker. */
  async scanTcp(): Promise<TcpListenScan> {
    return await this.#needWorker("scan").scanTcp();
  }

  /** See {@linkcode NsAccess.scanUdp}: asked of the worker. */
  async scanUdp(): Promise<PortScan> {
    return await this.#needWorker("scan").scanUdp();
  }

  /** Ends the worker and closes both namespace descriptors. */
  terminate(): void {
    this.#worker?.terminate();
    this.#worker = null;
    for (const fd of [this.#nsFd, this.#hostFd]) if (fd >= 0) sys.close(fd);
    this.#nsFd = this.#hostFd = -1;
  }
}

/**
 * The command that runs this program again: `deno run -A MAIN` from
 * source, a bundle or a URL; the binary itself when compiled.
 */
export function selfCommand(): string[] {
  const exe = Deno.execPath();
  return /(^|\/)deno$/.test(exe) ? [exe, "run", "-A", Deno.mainModule] : [exe];
}

/** The inode of a namespace file, or -1 if it cannot be read. */
function nsInode(path: string): number {
  try {
    return Deno.statSync(path).ino ?? -1;
  } catch {
    return -1;
  }
}

/**
 * The command line to re-execute this program where it has the privileges
 * the namespace set-up needs, or null when that is not needed (root, or
 * already re-executed). `userns` is the user namespace owning the target
 * network namespace, when known (a PID's, slirp4netns's `--userns-path`):
 * an unprivileged tapir joins it (`nsenter`, keeping its ids) unless it is
 * already there. Otherwise it makes one of its own under `unshare --user
 * --map-root-user`, where it is root.
 */
export function rootlessReexecArgs(
  args: readonly string[],
  userns: string | null = null,
): string[] | null {
  if (Deno.uid() === 0 || Deno.env.get(REEXEC_ENV)) return null;
  if (userns !== null) {
    if (nsInode(userns) === nsInode("/proc/self/ns/user")) return null;
    return [
      "nsenter",
      `--user=${userns}`,
      "--preserve-credentials",
      "--",
      ...selfCommand(),
      ...args,
    ];
  }
  return ["unshare", "--user", "--map-root-user", "--", ...selfCommand(), ...args];
}
