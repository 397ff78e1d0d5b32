/**
 * Keeps SIGUSR1 from opening Deno's inspector.
 *
 * # Theory of operation
 *
 * Since Deno 2.9.2 (denoland/deno#35738), a Deno process that receives
 * SIGUSR1 starts its inspector on 127.0.0.1:9229, and the inspector runs any
 * code a client sends it. For tapir that is a hole: every local process can
 * reach host loopback, and so can the guest, through the gateway's mapping
 * to it. A JavaScript listener for the signal does not stop the inspector;
 * only the signal's disposition does.
 *
 * Deno installs its handler 500 ms after the runtime starts (a grace period,
 * so short programs pay nothing for it). We give SIGUSR1 a handler that does
 * nothing at once — before Deno's, the default action would kill tapir —
 * and again as soon as we see that the runtime has replaced it: `signal(2)`
 * returns the disposition it replaces, so each check is one call that also
 * re-arms the guard. A handler, not "ignore": the commands tapir starts
 * would inherit an ignored signal, while a caught one reverts to its
 * default in them. Checks run every {@linkcode GUARD_FAST_MS} around the time the
 * handler is due (measured: 490–550 ms after start, the clock of
 * `performance.now()`), every {@linkcode GUARD_SLOW_MS} otherwise, and stop
 * once the runtime's handler was replaced, or after
 * {@linkcode GUARD_GIVE_UP_MS}. What is left is a window of at most one
 * fast interval, once, half a second into the run.
 *
 * tapir's statistics report is on SIGUSR2 and the control socket instead.
 *
 * @module
 */

import { logDebug } from "./log.ts";
import type { Loop } from "./loop.ts";
import * as sys from "./sys/mod.ts";

/** SIGUSR1 on Linux. */
const SIGUSR1 = 10;
/** Check interval while the runtime's handler is due. */
export const GUARD_FAST_MS = 2;
/** Check interval otherwise. */
export const GUARD_SLOW_MS = 100;
/** When (ms on the `performance.now()` clock) the fast checks start and end. */
const DUE_FROM_MS = 400;
const DUE_UNTIL_MS = 1500;
/** Checks stop after this, handler seen or not. */
export const GUARD_GIVE_UP_MS = 10_000;

/**
 * Discards SIGUSR1 now, and arms the checks on `loop` that discard it again
 * once the runtime has installed its inspector handler.
 */
export function guardInspectorSignal(loop: Loop): void {
  sys.signalDiscard(SIGUSR1);
  const check = () => {
    const now = performance.now();
    if (sys.signalDiscard(SIGUSR1)) {
      logDebug(`SIGUSR1: the runtime's inspector handler replaced at ${Math.round(now)} ms`);
      return;
    }
    if (now > GUARD_GIVE_UP_MS) return;
    let delay = GUARD_SLOW_MS;
    if (now < DUE_FROM_MS) delay = Math.min(delay, DUE_FROM_MS - now);
    else if (now < DUE_UNTIL_MS) delay = GUARD_FAST_MS;
    loop.after(delay, check);
  };
  loop.after(0, check);
}
