/**
 * System calls made on every thread of the process.
 *
 * # Theory of operation
 *
 * Some of what the kernel keeps is per thread, not per process:
 * capabilities (`capset(2)` changes the calling thread's only) and a
 * Landlock domain (`landlock_restrict_self(2)`). tapir's threads are not
 * all its own: Deno runs V8's and tokio's threads, which run no code of
 * ours. The C library meets the same problem for `setuid(2)` by signalling
 * every thread and making the call in the signal handler; libcap's "psx"
 * does it for capabilities. This module does it for a short list of system
 * calls ({@linkcode onEveryThread}).
 *
 * The handler is a few instructions of machine code ({@linkcode HANDLER_X86_64},
 * assembled from the listing beside it), in a page mapped executable and
 * never writable at the same time. It walks a table in another page — per
 * entry the system call number, five arguments and a failure count — makes
 * each call, counts failures, and at the end adds one to a "done" counter.
 * A raw `syscall` touches no `errno` and takes no lock, so it is safe in a
 * signal handler.
 *
 * The caller sends {@linkcode THREAD_SIGNAL} to each thread listed in
 * `/proc/self/task` (itself included: the handler runs as `tgkill` returns)
 * and waits until the done counter reaches the number signalled. Threads
 * that appeared meanwhile are signalled in another round; a thread made by
 * one that has run the handler inherits the result anyway. A thread that
 * does not answer within the time allowed (it would have the signal
 * blocked) is reported, not waited for. Afterwards the signal is ignored.
 *
 * Only x86-64 has a handler so far; elsewhere {@linkcode onEveryThread}
 * returns null.
 *
 * @module
 */

import * as sys from "./mod.ts";

/**
 * The handler's machine code (x86-64), from this listing (Intel syntax);
 * the 8 bytes at {@linkcode HANDLER_TABLE_AT} are the table's address.
 *
 * ```
 *   push rbx
 *   movabs rbx, TABLE
 * 1: mov rax, [rbx]          ; the entry's system call number
 *   test rax, rax
 *   js 3f                    ; negative: end of the table
 *   mov rdi, [rbx+8]         ; its five arguments
 *   mov rsi, [rbx+16]
 *   mov rdx, [rbx+24]
 *   mov r10, [rbx+32]
 *   mov r8, [rbx+40]
 *   syscall
 *   test rax, rax
 *   jns 2f
 *   lock inc dword ptr [rbx+48]   ; a failure
 * 2: add rbx, 56
 *   jmp 1b
 * 3: lock inc dword ptr [rbx+8]   ; done, in the end entry
 *   pop rbx
 *   ret
 * ```
 */
export const HANDLER_X86_64 = new Uint8Array([
  0x53,
  0x48,
  0xbb,
  0x88,
  0x77,
  0x66,
  0x55,
  0x44,
  0x33,
  0x22,
  0x11,
  0x48,
  0x8b,
  0x03,
  0x48,
  0x85,
  0xc0,
  0x78,
  0x25,
  0x48,
  0x8b,
  0x7b,
  0x08,
  0x48,
  0x8b,
  0x73,
  0x10,
  0x48,
  0x8b,
  0x53,
  0x18,
  0x4c,
  0x8b,
  0x53,
  0x20,
  0x4c,
  0x8b,
  0x43,
  0x28,
  0x0f,
  0x05,
  0x48,
  0x85,
  0xc0,
  0x79,
  0x04,
  0xf0,
  0xff,
  0x43,
  0x30,
  0x48,
  0x83,
  0xc3,
  0x38,
  0xeb,
  0xd3,
  0xf0,
  0xff,
  0x43,
  0x08,
  0x5b,
  0xc3,
]);
/** Where the table's address goes in {@linkcode HANDLER_X86_64}. */
export const HANDLER_TABLE_AT = 3;
/** Bytes per table entry: number, five arguments, failure count (and padding). */
const ENTRY_SIZE = 56;
/** Offset of an entry's failure count, and of the end entry's done count. */
const ENTRY_FAILURES = 48;
const END_DONE = 8;
/** A real-time signal no part of Deno or tapir uses. */
export const THREAD_SIGNAL = 62;
/** Longest wait for the threads of one round, in ms. */
const ROUND_TIMEOUT_MS = 1000;
const PAGE = 4096;

/**
 * One system call: its number and up to five arguments, each a number or
 * bytes (copied next to the table; the call gets their address).
 */
export interface ThreadCall {
  readonly nr: number;
  readonly args: readonly (number | Uint8Array)[];
}

/** What {@linkcode onEveryThread} did. */
export interface EveryThreadReport {
  /** Threads that ran the calls. */
  readonly threads: number;
  /** Per call (in order): on how many threads it failed. */
  readonly failures: readonly number[];
  /** Threads signalled that did not answer in time. */
  readonly missed: number;
}

/**
 * Makes `calls` on every thread of this process (see the module comment).
 * Returns null on an architecture without a handler, or -errno if the
 * handler could not be set up.
 */
export function onEveryThread(calls: readonly ThreadCall[]): EveryThreadReport | null | number {
  if (Deno.build.arch !== "x86_64") return null;
  let dataAt = (calls.length + 1) * ENTRY_SIZE;
  let dataBytes = 0;
  for (const c of calls) {
    for (const a of c.args) if (typeof a !== "number") dataBytes += a.length + 8;
  }
  if (dataAt + dataBytes > PAGE) throw new Error(`onEveryThread: the calls do not fit a page`);
  const anonPage = () =>
    sys.mmap(PAGE, sys.PROT_READ | sys.PROT_WRITE, sys.MAP_PRIVATE | sys.MAP_ANONYMOUS, -1);
  const table = anonPage();
  if (typeof table === "number") return table;
  const code = anonPage();
  if (typeof code === "number") {
    sys.munmap(table);
    return code;
  }
  const t = new DataView(table.bytes.buffer, table.bytes.byteOffset, PAGE);
  calls.forEach((c, i) => {
    t.setBigInt64(i * ENTRY_SIZE, BigInt(c.nr), true);
    for (let a = 0; a < 5; a++) {
      const arg = c.args[a] ?? 0;
      let value = arg as number;
      if (typeof arg !== "number") {
        dataAt = (dataAt + 7) & ~7;
        table.bytes.set(arg, dataAt);
        value = table.addr + dataAt;
        dataAt += arg.length;
      }
      t.setBigUint64(i * ENTRY_SIZE + 8 + 8 * a, BigInt(value), true);
    }
  });
  const end = calls.length * ENTRY_SIZE;
  t.setBigInt64(end, -1n, true);
  code.bytes.set(HANDLER_X86_64);
  new DataView(code.bytes.buffer, code.bytes.byteOffset, PAGE)
    .setBigUint64(HANDLER_TABLE_AT, BigInt(table.addr), true);
  const rc = sys.mprotect(code, sys.PROT_READ | sys.PROT_EXEC);
  if (rc < 0 || !sys.signalHandlerAt(THREAD_SIGNAL, code.addr)) {
    sys.munmap(code);
    sys.munmap(table);
    return rc < 0 ? rc : -sys.Errno.EINVAL;
  }
  const signalled = new Set<number>();
  let missed = 0;
  for (;;) {
    // Read before signalling: the handler runs on this thread as tgkill returns.
    const before = t.getUint32(end + END_DONE, true);
    let sent = 0;
    for (const entry of Deno.readDirSync("/proc/self/task")) {
      const tid = Number(entry.name);
      if (signalled.has(tid)) continue;
      signalled.add(tid);
      if (sys.tgkill(Deno.pid, tid, THREAD_SIGNAL) === 0) sent++; // else: it just ended
    }
    if (sent === 0) break;
    const want = before + sent;
    const deadline = performance.now() + ROUND_TIMEOUT_MS;
    while (t.getUint32(end + END_DONE, true) < want && performance.now() < deadline) {
      // Other threads run the handler meanwhile; this one only reads the count.
    }
    if (t.getUint32(end + END_DONE, true) < want) {
      // A thread that ended after it was signalled never answers: not missed.
      const alive = new Set([...Deno.readDirSync("/proc/self/task")].map((e) => Number(e.name)));
      const gone = [...signalled].filter((tid) => !alive.has(tid)).length;
      missed = Math.max(0, want - t.getUint32(end + END_DONE, true) - gone);
      break;
    }
  }
  sys.signalHandlerAt(THREAD_SIGNAL, 0);
  const failures = calls.map((_, i) => t.getUint32(i * ENTRY_SIZE + ENTRY_FAILURES, true));
  const threads = t.getUint32(end + END_DONE, true);
  // The code page stays: a signal already on its way would run it. The table too, which it reads.
  return { threads, failures, missed };
}
