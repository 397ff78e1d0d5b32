/**
 * The reactor: the one place tapir waits.
 *
 * # Theory of operation
 *
 * tapir is single-threaded for packet work. Every fd it watches sits in one
 * epoll set with a *tag*: a small type number (which subsystem owns it) and
 * an index (which object of that subsystem: a flow+side, a listener, a
 * backend). An event finds its handler in O(1): `handlers[type](index,
 * events)`. The tag is stored in `epoll_event.data` — index in the low 32
 * bits, type in the high 32 — so no lookup table of fds is needed.
 *
 * A loop turn is: collect ready events, dispatch them, fire due timers, run
 * the per-turn hooks (the flow table's deferred pass) and one-shot deferred
 * work. How events are collected depends on how busy we are:
 *
 * - **Busy** (the last turn found events or left work): a synchronous
 *   `epoll_wait(…, 0)`. It costs well under a microsecond and never blocks.
 *   A busy loop like this never returns to Deno's event loop, which would
 *   starve signals and child-process notifications, so at least every
 *   {@linkcode YIELD_INTERVAL_MS} one poll is made with the nonblocking
 *   variant instead: it awaits, and Deno's own work runs meanwhile.
 * - **Spinning**: right after the last event, synchronous polls go on for
 *   up to {@linkcode SPIN_MS}, because the next event of a request-response
 *   exchange usually comes within tens of microseconds and the idle wait's
 *   thread hop would add ~25 µs to it. Spinning is paid in CPU, and it pays
 *   only when idle periods are short, so the loop keeps a moving share of
 *   the idle periods that ended within {@linkcode SPIN_MS} (caught by a spin,
 *   or an idle wait that a spin would have spared) and spins only while that
 *   share is at least {@linkcode SPIN_SHARE_MIN}. Measured per second,
 *   spinning always: a 1-byte ping-pong had 18 177 idle periods caught and
 *   435 not; connect-and-close, 6 976 and 432; a 500 Mbit/s UDP stream,
 *   whose bursts come a millisecond apart, 29 and 1 251 — a third of
 *   tapir's CPU in that stream went to spins that caught nothing.
 *   A short idle period pays for its spin only when it ends a round trip:
 *   a request went out through one fd and the reply comes back on another.
 *   When a one-way stream's datagrams trickle in tens of microseconds apart,
 *   every idle period is short, yet each spin burns the whole gap to catch
 *   one more read of the same socket, where an idle wait would have let a
 *   few gather. So once {@linkcode STREAM_RUN} busy periods in a row had
 *   events from one fd only (the same fd each time), the loop takes it for
 *   such a stream: short idle periods count as long. Measured in the
 *   benchmark's UDP host→guest stream (iperf3 at 500 Mbit/s, 5 s): half
 *   the idle periods were short and the loop spun through 290 000–580 000
 *   turns for 62 000 events; without those spins, 56 000–61 000 turns and
 *   14–28 % less CPU per GB (measured with the rule's first form, which
 *   looked at the last event only; for a stream from one fd the two agree).
 *   A relayed ping-pong alternates fds and connect-and-close mixes them
 *   within a busy period, so neither is ever taken for a stream (0 of
 *   31 000–37 000 idle periods).
 * - **Gathering** a stream: the first turn after such a stream's idle
 *   period is followed by a pause of {@linkcode STREAM_GATHER_US} (a
 *   blocking `usleep` on this thread) before the next poll. The wake-up
 *   comes at the burst's first datagrams; without the pause the loop chased
 *   the rest a few datagrams per turn (six turns per wake-up, each an
 *   `epoll_wait`, a `recvmmsg` and a tap write). With it the rest arrive
 *   meanwhile and go in one turn, one `recvmmsg` and one USO frame.
 *   Measured, same benchmark, interleaved with the loop before the pause:
 *   guest→host 4.46 / 3.91 against 5.34 / 5.14 CPU s/GB, host→guest 3.62 /
 *   3.24 against 5.72 / 5.43, loss no higher; ping-pong and
 *   connect-and-close unchanged (they are never a stream). The pause holds
 *   up this thread, so only a stream gets it, once per idle period: a
 *   stream that never goes idle never pauses.
 *   A timer due within {@linkcode SPIN_MS} is always spun for: an idle
 *   wait's timeout is in whole milliseconds.
 * - **Idle**: otherwise one nonblocking `epoll_wait` with the time to the
 *   next timer as its timeout (~25 µs of overhead, paid only when there is
 *   nothing to do).
 *   While it is pending the JavaScript thread is free, so a child's exit
 *   status or a signal listener runs as usual. {@linkcode Loop.stop} and
 *   {@linkcode Loop.post} write to an eventfd in the same epoll set to cut
 *   such a wait short.
 * - **A stream's idle wait** is made on this thread instead: a blocking
 *   `epoll_wait` whose timeout ends at the next timer or at the next yield
 *   to Deno's event loop (every {@linkcode YIELD_INTERVAL_MS}), whichever
 *   comes first; when that is under a millisecond away, the idle wait
 *   above is made. Signals and child exits wait no longer than in a busy
 *   loop, at most {@linkcode YIELD_INTERVAL_MS}. A stream wakes the loop
 *   about a thousand times a second, and the thread hop cost ~15–25 µs of
 *   CPU each time; a wake-up on this thread costs a few. Measured in the
 *   benchmark's UDP cells (iperf3 at 500 Mbit/s, five interleaved pairs
 *   against the loop without it): guest→host 3.40 against 4.10 CPU s/GB
 *   (medians), host→guest 2.47 against 2.92; ping-pong and
 *   connect-and-close are never a stream and never wait so.
 *   Tried before gathering existed, in five variants, a blocking wait made
 *   host→guest worse: woken at a burst's first datagram, the loop wrote the
 *   guest five times as many, smaller, USO frames. The gathering pause now
 *   lets the rest of the burst arrive first. Pausing *before* the first
 *   turn of the burst instead of after it saved a little more CPU but
 *   doubled the loss (0.41 / 0.56 % against 0.25 / 0.18 %): the burst's
 *   head then waits in a socket buffer that its tail overflows.
 *
 * Timers are kept in a binary min-heap ordered by deadline, ties broken by
 * arming order. A {@linkcode Timer} is an object its owner keeps (e.g. one
 * per flow) and re-arms in place, so arming allocates nothing and cancelling
 * is an O(log n) removal, not a tombstone.
 *
 * Stopping: `stop()` (or SIGINT/SIGTERM once {@linkcode Loop.stopOnSignals}
 * was called) ends the loop after the current turn; then the stop hooks run,
 * newest first — pcap and log flushing live there. They also run when a
 * handler throws (a bug), before the error propagates, so nothing the user
 * asked to keep is lost.
 *
 * @module
 */

import * as sys from "./sys/mod.ts";
import { logDebug } from "./log.ts";

/** How often a busy loop yields to Deno's event loop, in milliseconds. */
export const YIELD_INTERVAL_MS = 10;

/**
 * How long the loop keeps polling synchronously after the last event (ms)
 * before handing the wait to another thread, while it spins at all. A
 * request-response exchange through tapir is two wake-ups (the request,
 * then the reply); the reply usually comes within tens of microseconds, and
 * catching it here saves the idle wait's thread hop on the latency path.
 */
export const SPIN_MS = 0.1;

/** The least share of idle periods ending within {@linkcode SPIN_MS} for which the loop spins. */
export const SPIN_SHARE_MIN = 0.5;

/**
 * The share of short idle periods after one more idle period ended (`short`:
 * within {@linkcode SPIN_MS}), given the share before: a moving average over
 * the last dozen or so.
 */
export function spinShareNext(share: number, short: boolean): number {
  return share + ((short ? 1 : 0) - share) / 16;
}

/**
 * Busy periods in a row with events from one fd only (the same each time)
 * from which on the loop takes the traffic for a one-way stream: its short
 * idle periods do not count for spinning, and it is gathered.
 */
export const STREAM_RUN = 16;

/**
 * How long the loop pauses, in microseconds, after the first turn that ends
 * an idle period of a one-way stream (see the module comment).
 */
export const STREAM_GATHER_US = 100;

/** Most events collected by one epoll_wait. */
const MAX_EVENTS = 256;

/** Largest type number: types are stored in 32 bits but kept small by convention. */
const MAX_TYPES = 256;

/** Indexes into `Loop.#times`. */
const LAST_YIELD = 0;
const LAST_ACTIVITY = 1;
const SHORT_SHARE = 2;

/** Type 0 is the loop's own wake-up eventfd. */
const TYPE_WAKE = 0;

/** Handles readiness of an fd registered under one type: `index` from its tag, epoll `events`. */
export type ReadyHandler = (index: number, events: number) => void;

/**
 * A timer its owner keeps and re-arms. Create one per purpose (per flow, per
 * service) and pass it to {@linkcode Loop.arm}; it is never reallocated.
 */
export class Timer {
  /** What to run when the timer fires (once per arming), given the timer. */
  readonly fire: (timer: Timer) => void;
  /** Absolute deadline on the `performance.now()` clock, in ms. */
  deadline = 0;
  /** Arming order, to break deadline ties first-armed-first. */
  seq = 0;
  /** Position in the loop's heap, or -1 when not armed. */
  heapIndex = -1;

  /**
   * Creates a disarmed timer that will call `fire`. Passing the timer lets
   * many timers share one function (a subclass carrying its own data), with
   * no closure per timer.
   */
  constructor(fire: (timer: Timer) => void) {
    this.fire = fire;
  }

  /** True while armed. */
  get armed(): boolean {
    return this.heapIndex >= 0;
  }
}

/** Counters of the reactor's work, for `--debug` summaries and tests. */
export interface LoopStats {
  /** Loop turns taken. */
  turns: number;
  /** Ready events dispatched. */
  events: number;
  /** Timers fired. */
  timers: number;
  /** Waits handed to another thread (idle waits and busy-loop yields). */
  asyncWaits: number;
  /** Idle periods ended by an event, and of those, how many within {@linkcode SPIN_MS}. */
  idleEnds: number;
  idleEndsShort: number;
  /**
   * Of the short ones, how many were a one-way stream's (see
   * {@linkcode STREAM_RUN}). A spin does not pay for these.
   */
  idleEndsStream: number;
  /** Pauses of {@linkcode STREAM_GATHER_US} to let a stream's burst gather. */
  gathers: number;
  /** A stream's idle waits made on this thread (blocking, bounded by the next yield). */
  streamWaits: number;
}

/** The reactor. One per thread that moves packets; see the module comment. */
export class Loop {
  /** Counters, updated as the loop runs. */
  readonly stats: LoopStats = {
    turns: 0,
    events: 0,
    timers: 0,
    asyncWaits: 0,
    idleEnds: 0,
    idleEndsShort: 0,
    idleEndsStream: 0,
    gathers: 0,
    streamWaits: 0,
  };

  readonly #epfd: number;
  readonly #wakeFd: number;
  readonly #ready = new sys.EpollEvents(MAX_EVENTS);
  readonly #ctl = new sys.EpollEvents(1);
  readonly #handlers: ReadyHandler[] = [];
  readonly #typeNames: string[] = [];
  readonly #heap: Timer[] = [];
  #timerSeq = 0;
  readonly #turnHooks: (() => void)[] = [];
  readonly #times = new Float64Array(3);
  #deferred: (() => void)[] = [];
  #deferredSpare: (() => void)[] = [];
  readonly #stopHooks: (() => void)[] = [];
  readonly #signalCleanups: (() => void)[] = [];
  readonly #wakeBuf = new Uint8Array(8);
  /** Tag (type, index) of the last event dispatched; -1 before the first. */
  #lastType = -1;
  #lastIndex = -1;
  /** Busy periods in a row with events from one fd only, the same each time. */
  #sameFdRun = 0;
  /** The turn under way ended a stream's idle period: pause after it. */
  #gather = false;
  /** Events from more than one fd since the last idle period ended. */
  #mixed = false;
  #running = false;
  #stopRequested = false;
  #closed = false;
  /** Why the loop stopped, as given to {@linkcode stop}. */
  stopReason = "";

  /** Creates the epoll set and the wake-up eventfd. Throws SysError if either fails. */
  constructor() {
    this.#epfd = sys.sysCheck(sys.epollCreate1(sys.EPOLL_CLOEXEC), "epoll_create1");
    this.#wakeFd = sys.sysCheck(sys.eventfd(0, sys.EFD_NONBLOCK | sys.EFD_CLOEXEC), "eventfd");
    this.#handlers[TYPE_WAKE] = () => {
      while (sys.read(this.#wakeFd, this.#wakeBuf) > 0) { /* drain */ }
    };
    this.#typeNames[TYPE_WAKE] = "wake";
    sys.sysCheck(this.add(this.#wakeFd, sys.EPOLLIN, TYPE_WAKE, 0), "epoll_ctl wake");
  }

  /**
   * Declares a kind of fd and the handler for its events; returns the type
   * number to use in {@linkcode add}. Called at set-up, once per subsystem.
   */
  defineType(name: string, handler: ReadyHandler): number {
    const type = this.#handlers.length;
    if (type >= MAX_TYPES) throw new Error(`too many fd types (defining ${name})`);
    this.#handlers.push(handler);
    this.#typeNames.push(name);
    return type;
  }

  /** The name a type was defined with (for logs). */
  typeName(type: number): string {
    return this.#typeNames[type] ?? `type ${type}`;
  }

  /** Watches `fd` for `events`, tagged (`type`, `index`). Returns 0 or -errno. */
  add(fd: number, events: number, type: number, index: number): number {
    return this.#control(sys.EPOLL_CTL_ADD, fd, events, type, index);
  }

  /** Changes the events or tag of a watched fd. Returns 0 or -errno. */
  modify(fd: number, events: number, type: number, index: number): number {
    return this.#control(sys.EPOLL_CTL_MOD, fd, events, type, index);
  }

  /** Stops watching `fd` (do this before closing it). Returns 0 or -errno. */
  remove(fd: number): number {
    return sys.epollCtl(this.#epfd, sys.EPOLL_CTL_DEL, fd, null);
  }

  #control(op: number, fd: number, events: number, type: number, index: number): number {
    if (this.#handlers[type] === undefined) throw new Error(`undefined fd type ${type}`);
    this.#ctl.set(0, events, index, type);
    return sys.epollCtl(this.#epfd, op, fd, this.#ctl);
  }

  // -------------------------------------------------------------------------
  // Timers

  /** Arms (or re-arms) `timer` to fire `delayMs` from now. Allocation-free. */
  arm(timer: Timer, delayMs: number): void {
    timer.deadline = performance.now() + delayMs;
    timer.seq = this.#timerSeq++;
    if (timer.heapIndex >= 0) {
      this.#siftUp(timer.heapIndex);
      this.#siftDown(timer.heapIndex);
    } else {
      timer.heapIndex = this.#heap.length;
      this.#heap.push(timer);
      this.#siftUp(timer.heapIndex);
    }
  }

  /** Disarms `timer` if armed. */
  disarm(timer: Timer): void {
    const i = timer.heapIndex;
    if (i < 0) return;
    const last = this.#heap.pop()!;
    timer.heapIndex = -1;
    if (last !== timer) {
      this.#heap[i] = last;
      last.heapIndex = i;
      this.#siftUp(i);
      this.#siftDown(i);
    }
  }

  /** Convenience: a new timer running `fn` once after `delayMs`. */
  after(delayMs: number, fn: () => void): Timer {
    const t = new Timer(fn);
    this.arm(t, delayMs);
    return t;
  }

  /** Number of armed timers. */
  get armedTimers(): number {
    return this.#heap.length;
  }

  #before(a: Timer, b: Timer): boolean {
    return a.deadline < b.deadline || (a.deadline === b.deadline && a.seq < b.seq);
  }

  #swap(i: number, j: number): void {
    const h = this.#heap;
    const t = h[i];
    h[i] = h[j];
    h[j] = t;
    h[i].heapIndex = i;
    h[j].heapIndex = j;
  }

  #siftUp(i: number): void {
    const h = this.#heap;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(h[i], h[parent])) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #siftDown(i: number): void {
    const h = this.#heap;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < h.length && this.#before(h[l], h[min])) min = l;
      if (r < h.length && this.#before(h[r], h[min])) min = r;
      if (min === i) return;
      this.#swap(i, min);
      i = min;
    }
  }

  #runTimers(): void {
    const h = this.#heap;
    // The clock is read here, not passed in: a fractional argument is boxed
    // on the heap, an allocation per turn.
    const now = performance.now();
    // Timers armed by a firing timer wait for the next turn, even at delay 0,
    // so a periodic timer cannot spin here.
    const armedBefore = this.#timerSeq;
    while (h.length > 0 && h[0].deadline <= now && h[0].seq < armedBefore) {
      const t = h[0];
      this.disarm(t);
      this.stats.timers++;
      t.fire(t);
    }
  }

  // -------------------------------------------------------------------------
  // Per-turn and deferred work, stop hooks

  /** Runs `hook` at the end of every loop turn (e.g. the flow table's deferred pass). */
  onTurn(hook: () => void): void {
    this.#turnHooks.push(hook);
  }

  /** Runs `fn` once, at the end of the current turn (or the next, if called from there). */
  defer(fn: () => void): void {
    this.#deferred.push(fn);
  }

  /**
   * Runs `fn` in the loop's next turn, from anywhere — typically a promise
   * callback (a Worker's reply) that runs between turns, while the loop may
   * be waiting idle: the wake-up eventfd cuts that wait short.
   */
  post(fn: () => void): void {
    this.#deferred.push(fn);
    this.#wake();
  }

  #wake(): void {
    const one = this.#wakeBuf;
    one.fill(0);
    one[0] = 1;
    sys.write(this.#wakeFd, one, 8);
  }

  /** Runs `hook` when the loop stops, for flushing what the user asked to keep. Newest first. */
  onStop(hook: () => void): void {
    this.#stopHooks.push(hook);
  }

  /** Asks the loop to stop after the current turn; wakes it if it is idle. */
  stop(reason = "stopped"): void {
    if (this.#stopRequested) return;
    this.#stopRequested = true;
    this.stopReason = reason;
    this.#wake();
  }

  /** Stops the loop on SIGINT and SIGTERM (listeners are removed when it ends). */
  stopOnSignals(signals: Deno.Signal[] = ["SIGINT", "SIGTERM"]): void {
    for (const sig of signals) {
      const listener = () => this.stop(sig);
      Deno.addSignalListener(sig, listener);
      this.#signalCleanups.push(() => Deno.removeSignalListener(sig, listener));
    }
  }

  // -------------------------------------------------------------------------
  // Running

  /**
   * Runs turns until {@linkcode stop}; then runs the stop hooks. Resolves with
   * the stop reason. If a handler throws, stop hooks still run and the error
   * propagates.
   */
  async run(): Promise<string> {
    if (this.#running) throw new Error("loop already running");
    if (this.#closed) throw new Error("loop closed");
    this.#running = true;
    // The last yield and the last activity, in a typed array: a fractional
    // number kept in a local across `await` lives boxed on the heap, so
    // each update would allocate — once per turn (measured).
    const times = this.#times;
    times[LAST_YIELD] = times[LAST_ACTIVITY] = performance.now();
    times[SHORT_SHARE] = 1;
    let busy = true;
    try {
      while (!this.#stopRequested) {
        let n: number;
        // Inline rather than helpers taking `now`: a fractional argument can
        // be boxed on the heap (see #runTimers), and this runs every poll.
        const now = performance.now();
        const heap = this.#heap;
        if (
          (busy ||
            (now - times[LAST_ACTIVITY] < SPIN_MS && this.spins) ||
            (heap.length > 0 && heap[0].deadline - now < SPIN_MS)) &&
          now - times[LAST_YIELD] < YIELD_INTERVAL_MS
        ) {
          n = sys.epollWait(this.#epfd, this.#ready, 0);
          if (!busy && n > 0) this.#idleEnded(n);
        } else if (
          !busy && this.#sameFdRun >= STREAM_RUN && now - times[LAST_YIELD] < YIELD_INTERVAL_MS - 1
        ) {
          this.stats.streamWaits++;
          n = sys.epollWait(this.#epfd, this.#ready, this.#streamTimeout(now));
          if (n > 0) this.#idleEnded(n);
        } else {
          this.stats.asyncWaits++;
          n = await sys.epollWaitAsync(this.#epfd, this.#ready, busy ? 0 : this.#idleTimeout(now));
          times[LAST_YIELD] = performance.now();
          if (!busy && n > 0) this.#idleEnded(n);
        }
        this.stats.turns++;
        if (n > 0) this.#dispatch(n);
        this.#runTimers();
        const hooks = this.#turnHooks;
        for (let i = 0; i < hooks.length; i++) hooks[i]();
        const hadDeferred = this.#runDeferred();
        busy = n > 0 || hadDeferred || this.#deferred.length > 0;
        if (busy) {
          if (this.#gather) {
            this.#gather = false;
            this.stats.gathers++;
            sys.usleep(STREAM_GATHER_US);
          }
          times[LAST_ACTIVITY] = performance.now();
        }
      }
      return this.stopReason;
    } finally {
      this.#running = false;
      for (const cleanup of this.#signalCleanups.splice(0)) cleanup();
      logDebug(
        `loop: stopping (${this.stopReason || "error"}), ${this.#stopHooks.length} stop hooks`,
      );
      for (let i = this.#stopHooks.length - 1; i >= 0; i--) this.#stopHooks[i]();
    }
  }

  /**
   * Counts an idle period that the `n` events just collected ended, and
   * updates the share of those a spin pays for: the short ones, but not a
   * one-way stream's.
   */
  #idleEnded(n: number): void {
    const t = this.#times;
    const short = performance.now() - t[LAST_ACTIVITY] <= SPIN_MS;
    // The wake-up eventfd is never a stream: its events are work posted
    // from Deno's event loop, which a blocking wait would hold up.
    const oneFd = !this.#mixed && !this.#fromAnotherFd(n) && this.#lastType !== TYPE_WAKE;
    this.#mixed = false;
    this.#sameFdRun = oneFd ? this.#sameFdRun + 1 : 0;
    const stream = this.#sameFdRun >= STREAM_RUN;
    this.#gather = stream;
    this.stats.idleEnds++;
    if (short) this.stats.idleEndsShort++;
    if (short && stream) this.stats.idleEndsStream++;
    t[SHORT_SHARE] = spinShareNext(t[SHORT_SHARE], short && !stream);
  }

  /** Whether one of the `n` events collected comes from another fd than the last event dispatched. */
  #fromAnotherFd(n: number): boolean {
    const ready = this.#ready;
    for (let i = 0; i < n; i++) {
      if (ready.dataHi(i) !== this.#lastType || ready.dataLo(i) !== this.#lastIndex) return true;
    }
    return false;
  }

  /** Whether the loop spins after its next event; see the module comment. */
  get spins(): boolean {
    return this.#times[SHORT_SHARE] >= SPIN_SHARE_MIN;
  }

  /**
   * How long a stream's idle wait may block this thread: until the next
   * timer or the next yield to Deno's event loop, whichever is first (ms).
   */
  #streamTimeout(now: number): number {
    const untilYield = Math.floor(YIELD_INTERVAL_MS - (now - this.#times[LAST_YIELD]));
    const untilTimer = this.#idleTimeout(now);
    return untilTimer < 0 ? untilYield : Math.min(untilTimer, untilYield);
  }

  /** Milliseconds until the next timer (rounded up), or -1 for none. */
  #idleTimeout(now: number): number {
    if (this.#heap.length === 0) return -1;
    return Math.max(0, Math.ceil(this.#heap[0].deadline - now));
  }

  #dispatch(n: number): void {
    const ready = this.#ready;
    this.stats.events += n;
    for (let i = 0; i < n; i++) {
      const type = ready.dataHi(i);
      const index = ready.dataLo(i);
      if (type !== this.#lastType || index !== this.#lastIndex) {
        this.#mixed = true;
        this.#lastType = type;
        this.#lastIndex = index;
      }
      this.#handlers[type](index, ready.events(i));
    }
  }

  #runDeferred(): boolean {
    if (this.#deferred.length === 0) return false;
    // Swap lists so work deferred by deferred work runs next turn, not in an
    // unbounded loop here.
    const work = this.#deferred;
    this.#deferred = this.#deferredSpare;
    for (const fn of work) fn();
    work.length = 0;
    this.#deferredSpare = work;
    return true;
  }

  /** Closes the epoll set and the eventfd. The loop cannot run afterwards. */
  close(): void {
    if (this.#closed) return;
    if (this.#running) throw new Error("close() while the loop runs");
    this.#closed = true;
    sys.close(this.#wakeFd);
    sys.close(this.#epfd);
  }
}
