/**
 * Processes for the benchmark harness: spawning with bounded output capture,
 * killing whole process trees, and reading the kernel's per-process counters.
 *
 * Every process the harness starts is registered with a {@linkcode Cleanup}
 * until it has exited, so an error or Ctrl-C anywhere still ends it. Each is
 * started under `setsid`, the leader of its own session and process group:
 * a Ctrl-C at the terminal then reaches only the harness, which ends things
 * in order, and a descendant whose parent died first (re-parented, so no
 * longer in the tree) is still in the group. Ending a process means ending
 * its tree and its group: TERM first, KILL for what is left.
 *
 * Output is captured from pipes, which a stray descendant can hold open
 * after the process itself has exited; capture waits a moment for the end
 * of the stream, then ends the group and stops reading rather than hang.
 *
 * The translator's cost comes from `/proc/PID/stat` (utime + stime, which
 * for a thread-group leader count every thread of the process) and
 * `/proc/PID/status` (`VmHWM`, the peak resident set).
 *
 * @module
 */

const decoder = new TextDecoder();

/** Ordered undo work: the last thing registered runs first. */
export class Cleanup {
  #tasks = new Map<number, () => Promise<void>>();
  #next = 0;
  #closed = false;
  #running: Promise<void> | null = null;

  /** True once {@linkcode Cleanup.runAll} has begun: nothing new should start. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Registers `task`; returns a function that unregisters it (without running it). */
  add(task: () => Promise<void>): () => void {
    const id = this.#next++;
    this.#tasks.set(id, task);
    return () => this.#tasks.delete(id);
  }

  /**
   * Runs every registered task, newest first, each once; errors are reported,
   * not thrown. A second call while the first runs waits for the same run.
   */
  runAll(): Promise<void> {
    this.#closed = true;
    this.#running ??= this.#run();
    return this.#running;
  }

  async #run(): Promise<void> {
    // Tasks registered while running (a stop that spawns nothing should not,
    // but be safe) are picked up by the loop.
    while (this.#tasks.size) {
      const id = [...this.#tasks.keys()].at(-1)!;
      const task = this.#tasks.get(id)!;
      this.#tasks.delete(id);
      try {
        await task();
      } catch (err) {
        console.error(`bench: cleanup: ${(err as Error).message}`);
      }
    }
  }
}

/** One process as `/proc/PID/stat` describes it. */
export interface ProcStat {
  /** Process id. */
  readonly pid: number;
  /** Parent process id. */
  readonly ppid: number;
  /** Command name (at most 15 characters). */
  readonly comm: string;
  /** User + system CPU time of all its threads, in clock ticks. */
  readonly ticks: number;
  /** Start time in clock ticks after boot: with the pid, names one process for good. */
  readonly started: number;
}

/** Reads `/proc/PID/stat`; null if the process is gone. */
export function procStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // comm sits in parentheses and may itself contain spaces or ')'.
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  const rest = text.slice(close + 2).split(" ");
  // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
  return {
    pid,
    ppid: Number(rest[1]),
    comm: text.slice(open + 1, close),
    ticks: Number(rest[11]) + Number(rest[12]),
    started: Number(rest[19]),
  };
}

/** Every process on the machine (as far as `/proc` shows). */
export function allProcs(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const st = procStat(Number(e.name));
    if (st) out.push(st);
  }
  return out;
}

/** `root` and all its descendants, parents before children. */
export function processTree(root: number, procs: ProcStat[] = allProcs()): ProcStat[] {
  const children = new Map<number, ProcStat[]>();
  let rootStat: ProcStat | undefined;
  for (const p of procs) {
    if (p.pid === root) rootStat = p;
    const list = children.get(p.ppid);
    if (list) list.push(p);
    else children.set(p.ppid, [p]);
  }
  if (!rootStat) return [];
  const out = [rootStat];
  for (let i = 0; i < out.length; i++) out.push(...(children.get(out[i].pid) ?? []));
  return out;
}

/** The command line of `pid` as arguments; empty if the process is gone. */
export function cmdline(pid: number): string[] {
  try {
    const raw = decoder.decode(Deno.readFileSync(`/proc/${pid}/cmdline`));
    return raw.split("\0").filter((a) => a !== "");
  } catch {
    return [];
  }
}

/** Sum of CPU ticks of `pids` (processes that are gone count zero). */
export function cpuTicks(pids: readonly number[]): number {
  let sum = 0;
  for (const pid of pids) sum += procStat(pid)?.ticks ?? 0;
  return sum;
}

/** Sum of the peak resident sets (`VmHWM`) of `pids`, in KiB; null if none could be read. */
export function peakRssKiB(pids: readonly number[]): number | null {
  let sum = 0;
  let seen = 0;
  for (const pid of pids) {
    try {
      const m = /^VmHWM:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
      if (m) {
        sum += Number(m[1]);
        seen++;
      }
    } catch { /* gone */ }
  }
  return seen ? sum : null;
}

let clockTicks = 0;

/** Clock ticks per second (`getconf CLK_TCK`), read once. */
export async function ticksPerSecond(): Promise<number> {
  if (clockTicks) return clockTicks;
  const out = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped" }).output();
  clockTicks = Number(decoder.decode(out.stdout).trim()) || 100;
  return clockTicks;
}

/** True while the process `p` describes (same pid, same start time) exists. */
function stillThere(p: ProcStat): boolean {
  return procStat(p.pid)?.started === p.started;
}

/** Sends `signal` to every process of `procs`. */
function signalAll(procs: readonly ProcStat[], signal: Deno.Signal): void {
  for (const p of procs) {
    try {
      Deno.kill(p.pid, signal);
    } catch { /* already gone */ }
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends `signal` to process group `group`, if any member is left. */
function signalGroup(group: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-group, signal);
  } catch { /* the group is empty */ }
}

/**
 * Ends `root`, its descendants and its process group (`root` leads one when
 * started by {@linkcode spawnTracked}): TERM, then KILL after `graceMs` for
 * what is left.
 */
export async function killTree(root: number, graceMs = 1500): Promise<void> {
  const tree = processTree(root);
  signalAll(tree, "SIGTERM");
  signalGroup(root, "SIGTERM");
  const deadline = performance.now() + graceMs;
  while (performance.now() < deadline && tree.some(stillThere)) await sleep(20);
  // Survivors may have started children meanwhile: kill each survivor's own
  // tree. The start time check keeps a reused pid from being taken for ours.
  const procs = allProcs();
  for (const p of tree.filter(stillThere)) signalAll(processTree(p.pid, procs), "SIGKILL");
  signalGroup(root, "SIGKILL");
}

/** Bounded text capture of one output stream, with an optional per-line hook. */
export class Capture {
  #text = "";
  #partial = "";
  #reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  readonly #limit: number;
  readonly #onLine?: (line: string, at: number) => void;
  /** Resolves when the stream has ended. */
  readonly done: Promise<void>;

  /** Starts draining `stream`; keeps the last `limit` characters. */
  constructor(
    stream: ReadableStream<Uint8Array>,
    onLine?: (line: string, at: number) => void,
    limit = 64 * 1024,
  ) {
    this.#limit = limit;
    this.#onLine = onLine;
    this.done = this.#drain(stream);
  }

  async #drain(stream: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    this.#reader = stream.getReader();
    try {
      for (;;) {
        const { done, value } = await this.#reader.read();
        if (done) break;
        this.#add(dec.decode(value, { stream: true }));
      }
    } catch { /* cancelled, or the process died mid-stream: what we have is what there is */ }
    if (this.#partial !== "") this.#onLine?.(this.#partial, performance.now());
  }

  /** Stops reading (the stream's writer may be a stray that never closes it). */
  cancel(): void {
    this.#reader?.cancel().catch(() => {});
  }

  #add(text: string): void {
    const at = performance.now();
    this.#text = (this.#text + text).slice(-this.#limit);
    if (!this.#onLine) return;
    const parts = (this.#partial + text).split("\n");
    this.#partial = parts.pop() ?? "";
    for (const line of parts) this.#onLine(line, at);
  }

  /** Everything captured so far (the tail, if it was long). */
  get text(): string {
    return this.#text;
  }
}

/** Options for {@linkcode spawnTracked}. */
export interface SpawnOptions {
  /** Environment; the harness's own if absent. */
  env?: Record<string, string>;
  /** Replace the whole environment with `env`. */
  clearEnv?: boolean;
  /** Called for every line of standard output, with the time it arrived. */
  onStdoutLine?: (line: string, at: number) => void;
  /** Called for every line of standard error. */
  onStderrLine?: (line: string, at: number) => void;
}

/** A running process the harness started. */
export interface Tracked {
  /** Its pid. */
  readonly pid: number;
  /** Resolves when it has exited. */
  readonly status: Promise<Deno.CommandStatus>;
  /** Standard output captured so far. */
  readonly stdout: Capture;
  /** Standard error captured so far. */
  readonly stderr: Capture;
  /** Ends the process and its descendants and waits for it; safe to call twice. */
  stop(): Promise<void>;
  /** Resolves when it has exited and its output has been read. */
  readonly ended: Promise<void>;
}

/**
 * Starts `argv` under `setsid`, registered with `cleanup` until it has
 * exited and its output has ended. Throws once `cleanup` has begun.
 */
export function spawnTracked(
  cleanup: Cleanup,
  argv: readonly string[],
  opts: SpawnOptions = {},
): Tracked {
  if (cleanup.closed) throw new Error("interrupted");
  // setsid execs in place (its caller is no group leader), so the pid is argv's.
  const child = new Deno.Command("setsid", {
    args: [...argv],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
    clearEnv: opts.clearEnv,
  }).spawn();
  const stdout = new Capture(child.stdout, opts.onStdoutLine);
  const stderr = new Capture(child.stderr, opts.onStderrLine);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });
  // After exit: the output ends at once unless a stray in the group still
  // holds the pipes; end the group then, and stop reading.
  const ended = status.then(async () => {
    const outputs = Promise.all([stdout.done, stderr.done]);
    const drained = await Promise.race([outputs.then(() => true), sleep(1000).then(() => false)]);
    if (drained) return;
    signalGroup(child.pid, "SIGKILL");
    await Promise.race([outputs, sleep(200)]);
    stdout.cancel();
    stderr.cancel();
  });
  const stop = async () => {
    if (!exited) await killTree(child.pid);
    await ended;
    unregister();
  };
  const unregister = cleanup.add(stop);
  ended.then(() => unregister());
  return { pid: child.pid, status, stdout, stderr, stop, ended };
}

/** Output of {@linkcode runBounded}. */
export interface Finished {
  /** Exit code (meaningless when `timedOut`). */
  readonly code: number;
  /** Standard output. */
  readonly stdout: string;
  /** Standard error. */
  readonly stderr: string;
  /** True when the process was killed for running past its time limit. */
  readonly timedOut: boolean;
}

/** Runs `argv` to completion, killing it (and its tree) after `timeoutMs`. */
export async function runBounded(
  cleanup: Cleanup,
  argv: readonly string[],
  timeoutMs: number,
  opts: SpawnOptions = {},
): Promise<Finished> {
  const t = spawnTracked(cleanup, argv, opts);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    t.stop();
  }, timeoutMs);
  const status = await t.status;
  clearTimeout(timer);
  await t.ended;
  return { code: status.code, stdout: t.stdout.text, stderr: t.stderr.text, timedOut };
}

/** Runs `argv` and throws with its standard error if it fails or takes longer than `timeoutMs`. */
export async function runOk(
  cleanup: Cleanup,
  argv: readonly string[],
  timeoutMs = 30_000,
): Promise<string> {
  const r = await runBounded(cleanup, argv, timeoutMs);
  if (r.timedOut) throw new Error(`${argv.join(" ")}: no result within ${timeoutMs / 1000} s`);
  if (r.code !== 0) throw new Error(`${argv.join(" ")} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}
