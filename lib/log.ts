/**
 * The one logger.
 *
 * Every module logs through the functions here; nothing else writes to
 * standard error or to the log file. A line looks like
 *
 *     12.0345 debug: flow 7 TCP: TGT -> TYPED
 *
 * where the number is seconds since tapir started. Lines are written
 * synchronously: a log is something the user asked to keep, so nothing may sit
 * in a buffer when the process dies. That makes logging too slow for the per
 * packet path at debug and trace level, so hot code guards its calls with
 * {@linkcode logEnabled} (an integer compare) before building the message.
 *
 * Destinations follow pasta: standard error by default; with `--log-file`
 * the file instead, except that errors also still go to standard error so a
 * user running tapir in a terminal sees why it stopped.
 *
 * @module
 */

/** Log levels, most severe first; a level prints if it is ≤ the threshold. */
export const LogLevel = { error: 0, warn: 1, info: 2, debug: 3, trace: 4 } as const;
/** One of the numeric {@linkcode LogLevel} values. */
export type LogLevel = (typeof LogLevel)[keyof typeof LogLevel];

const LEVEL_NAMES: Record<LogLevel, string> = {
  0: "error",
  1: "warn",
  2: "info",
  3: "debug",
  4: "trace",
};

/** Where and how much to log; see {@linkcode logSetup}. */
export interface LogOptions {
  /** Highest level printed. */
  readonly level: LogLevel;
  /** Append lines to this file instead of standard error. */
  readonly file?: string;
  /** Write to standard error (default true; tests turn it off). */
  readonly stderr?: boolean;
}

const encoder = new TextEncoder();
let threshold: LogLevel = LogLevel.info;
let useStderr = true;
let file: Deno.FsFile | null = null;

/**
 * Sets the level and destination. Opens (creating or truncating) the log file
 * if one is named; throws if it cannot be opened, which the caller reports as
 * a bad `--log-file`.
 */
export function logSetup(opts: LogOptions): void {
  logClose();
  threshold = opts.level;
  useStderr = opts.stderr ?? true;
  if (opts.file !== undefined) {
    file = Deno.openSync(opts.file, { write: true, create: true, truncate: true });
  }
}

/** Closes the log file, if any. Lines already logged are on disk. */
export function logClose(): void {
  if (file) {
    file.close();
    file = null;
  }
}

/** True if a message at `level` would be printed: guard hot-path logging with this. */
export function logEnabled(level: LogLevel): boolean {
  return level <= threshold;
}

/** Formats one line: seconds since start, level name, message. */
export function logFormat(level: LogLevel, msg: string, nowMs: number = performance.now()): string {
  return `${(nowMs / 1000).toFixed(4)} ${LEVEL_NAMES[level]}: ${msg}\n`;
}

/** Logs `msg` at `level`; the single entry point behind the helpers below. */
export function log(level: LogLevel, msg: string): void {
  if (level > threshold) return;
  const bytes = encoder.encode(logFormat(level, msg));
  if (file) writeAll(file, bytes);
  if (useStderr && (!file || level === LogLevel.error)) writeAll(Deno.stderr, bytes);
}

function writeAll(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let off = 0;
  try {
    while (off < bytes.length) off += w.writeSync(bytes.subarray(off));
  } catch {
    // A log destination that fails (closed stderr, full disk) must not stop
    // forwarding; the line is lost, and there is nowhere better to say so.
  }
}

/** Logs at error level. */
export function logError(msg: string): void {
  log(LogLevel.error, msg);
}
/** Logs at warn level. */
export function logWarn(msg: string): void {
  log(LogLevel.warn, msg);
}
/** Logs at info level. */
export function logInfo(msg: string): void {
  log(LogLevel.info, msg);
}
/** Logs at debug level. */
export function logDebug(msg: string): void {
  log(LogLevel.debug, msg);
}
/** Logs at trace level. */
export function logTrace(msg: string): void {
  log(LogLevel.trace, msg);
}
