/**
 * Packet capture: records the frames tapir exchanges with the guest in the
 * classic pcap format, readable by tcpdump, tshark and Wireshark.
 *
 * Theory of operation:
 *
 * - **Format.** One 24-byte global header (magic `0xa1b23c4d`, which marks
 *   nanosecond timestamps; version 2.4; snaplen {@linkcode PCAP_SNAPLEN};
 *   link type Ethernet), then per frame a 16-byte record header (seconds,
 *   nanoseconds, captured length, original length) and the frame's bytes.
 *   Everything is little-endian, the byte order of every host tapir runs on;
 *   readers detect the order from the magic.
 * - **What is recorded.** Exactly the Ethernet frame: no backend length
 *   header, no vnet header, no padding. The caller says where the frame
 *   starts (`offset`) and, for single frames, how long it is (`l2len`); the
 *   size of the buffer holding it is never taken as the frame length, because
 *   buffers are often larger than their frame. A frame is one `Uint8Array` or
 *   an {@linkcode Iov}; the bytes are copied, so the caller may reuse its
 *   buffers as soon as the call returns.
 * - **Buffering.** Records are copied into one preallocated buffer (1 MiB by
 *   default) and written with synchronous writes when the next record does
 *   not fit and on {@linkcode PcapWriter.flush}. A record is never split
 *   across writes unless it is larger than the whole buffer, in which case it
 *   streams through the buffer in pieces; so the file ends on a record
 *   boundary after every write. The global header is written at once on
 *   open, so even an idle capture is a valid file. The owner of the event loop
 *   should flush when it goes idle and close on exit.
 * - **Errors.** Failing to open the file throws (the caller reports a bad
 *   `--pcap`). After that nothing throws: the first failed write logs one
 *   error line, closes the file and disables capture, and every later call
 *   is a cheap no-op. Forwarding never stops because of the capture.
 * - **Timestamps.** A batch of frames shares one timestamp, taken once by the
 *   caller with {@linkcode pcapNow} (or from anywhere else) as nanoseconds
 *   since the Unix epoch, as a `number` or a `bigint`.
 *
 * Two ways to use it: the {@linkcode PcapWriter} class, or the module-level
 * functions ({@linkcode pcapOpen}, {@linkcode pcapFrame},
 * {@linkcode pcapMultiple}, {@linkcode pcapFlush}, {@linkcode pcapClose})
 * around one process-wide writer, which are no-ops while no capture is open;
 * the send path calls those unconditionally.
 *
 * @module
 */

import { type Iov, iovSize, iovToBuf } from "./iov.ts";
import { logError } from "./log.ts";

/** Magic number of a pcap file with nanosecond timestamps. */
export const PCAP_MAGIC_NS = 0xa1b23c4d;
/** Major version of the pcap format written. */
export const PCAP_VERSION_MAJOR = 2;
/** Minor version of the pcap format written. */
export const PCAP_VERSION_MINOR = 4;
/**
 * Snapshot length declared in the header. Frames are at most 65535 + 14 bytes
 * (more with GSO buffers), so 256 KiB never truncates one of ours.
 */
export const PCAP_SNAPLEN = 262144;
/** Link-layer header type for Ethernet. */
export const LINKTYPE_ETHERNET = 1;
/** Size of the file's global header. */
export const PCAP_GLOBAL_HEADER_LEN = 24;
/** Size of each record's header. */
export const PCAP_RECORD_HEADER_LEN = 16;
/** Default size of the writer's buffer. */
export const PCAP_DEFAULT_BUFFER_SIZE = 1 << 20;
/** Smallest buffer accepted; smaller requests are raised to this. */
export const PCAP_MIN_BUFFER_SIZE = 64;

/** One frame to record: a flat array or a scatter-gather iov. */
export type PcapFrameData = Uint8Array | Iov;
/** Nanoseconds since the Unix epoch. */
export type PcapTimestamp = number | bigint;

/** Where the writer's bytes go: a `Deno.FsFile`, or any object with the same two methods. */
export interface PcapSink {
  /** Writes some prefix of `p`, returning how many bytes; throws on error. */
  writeSync(p: Uint8Array): number;
  /** Releases the sink. */
  close(): void;
}

/** Options for {@linkcode PcapWriter}. */
export interface PcapOptions {
  /** Size of the record buffer in bytes (default {@linkcode PCAP_DEFAULT_BUFFER_SIZE}). */
  readonly bufferSize?: number;
}

const NS_PER_SEC = 1_000_000_000;
const NS_PER_SEC_BIG = 1_000_000_000n;

/**
 * Current wall-clock time in nanoseconds since the Unix epoch, from the
 * monotonic clock plus the process's time origin (no system call). As a
 * `number` it resolves about 0.25 µs at present-day values, plenty for a
 * capture. Take it once per batch.
 */
export function pcapNow(): number {
  return (performance.timeOrigin + performance.now()) * 1e6;
}

/** Normalises an offset or length: negative and NaN become 0, fractions round down. */
function toCount(n: number): number {
  return n > 0 ? Math.floor(n) : 0;
}

/** Writes frames to one capture file. See the module documentation. */
export class PcapWriter {
  /** Name of the capture, used in the error message. */
  readonly name: string;
  #sink: PcapSink | null;
  readonly #buf: Uint8Array;
  readonly #view: DataView;
  #used = 0;
  #frames = 0;
  #sec = 0;
  #nsec = 0;

  /**
   * Creates (or truncates) the file at `path` and writes the global header.
   *
   * @throws the `Deno.errors` error if the file cannot be opened
   */
  static open(path: string, opts: PcapOptions = {}): PcapWriter {
    const file = Deno.openSync(path, { write: true, create: true, truncate: true });
    return new PcapWriter(file, path, opts);
  }

  /**
   * Starts a capture on an already open sink and writes the global header to
   * it. A failure to write is handled like any later one (logged, disabled).
   */
  constructor(sink: PcapSink, name: string, opts: PcapOptions = {}) {
    this.name = name;
    this.#sink = sink;
    const size = Math.max(
      PCAP_MIN_BUFFER_SIZE,
      toCount(opts.bufferSize ?? PCAP_DEFAULT_BUFFER_SIZE),
    );
    this.#buf = new Uint8Array(size);
    this.#view = new DataView(this.#buf.buffer);
    const v = this.#view;
    v.setUint32(0, PCAP_MAGIC_NS, true);
    v.setUint16(4, PCAP_VERSION_MAJOR, true);
    v.setUint16(6, PCAP_VERSION_MINOR, true);
    v.setInt32(8, 0, true); // thiszone: timestamps are UTC
    v.setUint32(12, 0, true); // sigfigs: unused by every reader
    v.setUint32(16, PCAP_SNAPLEN, true);
    v.setUint32(20, LINKTYPE_ETHERNET, true);
    this.#used = PCAP_GLOBAL_HEADER_LEN;
    this.flush();
  }

  /** False once closed or after a write error disabled the capture. */
  get active(): boolean {
    return this.#sink !== null;
  }

  /** Number of frames recorded (buffered or written) so far. */
  get framesRecorded(): number {
    return this.#frames;
  }

  /**
   * Records one frame: `l2len` bytes starting at byte `offset` of `frame`.
   * If the buffer holds fewer bytes than `l2len` (a caller bug), the record
   * keeps what there is and says the frame was `l2len` long, as a truncated
   * capture would.
   *
   * @param ts timestamp in ns since the epoch (default: now)
   */
  frame(
    frame: PcapFrameData,
    l2len: number,
    ts: PcapTimestamp = pcapNow(),
    offset = 0,
  ): void {
    if (this.#sink === null) return;
    this.#setTime(ts);
    const start = toCount(offset);
    const size = frame instanceof Uint8Array ? frame.length : iovSize(frame);
    const origLen = toCount(l2len);
    const inclLen = Math.min(origLen, Math.max(0, size - start), PCAP_SNAPLEN);
    this.#record(frame, start, inclLen, origLen);
  }

  /**
   * Records a batch of frames with one timestamp. Each of the first `count`
   * entries of `frames` is exactly one frame preceded by `offset` bytes to
   * skip (a backend's length header, a vnet header); the frame is the rest.
   * Callers whose buffers are larger than their frames use
   * {@linkcode PcapWriter.frame} with an explicit length instead.
   */
  multiple(
    frames: readonly PcapFrameData[],
    offset: number,
    ts: PcapTimestamp = pcapNow(),
    count: number = frames.length,
  ): void {
    if (this.#sink === null) return;
    this.#setTime(ts);
    const start = toCount(offset);
    const n = Math.min(toCount(count), frames.length);
    for (let i = 0; i < n && this.#sink !== null; i++) {
      const frame = frames[i];
      const size = frame instanceof Uint8Array ? frame.length : iovSize(frame);
      const len = Math.max(0, size - start);
      this.#record(frame, start, Math.min(len, PCAP_SNAPLEN), len);
    }
  }

  /** Writes out everything buffered. On failure, logs once and disables capture. */
  flush(): void {
    const sink = this.#sink;
    if (sink === null) return;
    let done = 0;
    try {
      while (done < this.#used) {
        const n = sink.writeSync(this.#buf.subarray(done, this.#used));
        if (!(n > 0)) throw new Error("write made no progress");
        done += n;
      }
    } catch (err) {
      this.#fail(err);
      return;
    }
    this.#used = 0;
  }

  /** Flushes and closes the file. Later calls do nothing. */
  close(): void {
    this.flush();
    const sink = this.#sink;
    if (sink === null) return;
    this.#sink = null;
    try {
      sink.close();
    } catch (err) {
      logError(`pcap: closing ${this.name} failed: ${errorText(err)}`);
    }
  }

  /** Disables capture after a write error: one log line, file closed, buffer dropped. */
  #fail(err: unknown): void {
    const sink = this.#sink;
    this.#sink = null;
    this.#used = 0;
    logError(`pcap: writing ${this.name} failed (${errorText(err)}), capture disabled`);
    try {
      sink?.close();
    } catch {
      // Already reported the failure that matters; a second one adds nothing.
    }
  }

  /** Converts a timestamp to the record's seconds and nanoseconds, once per call. */
  #setTime(ts: PcapTimestamp): void {
    if (typeof ts === "bigint") {
      const t = ts > 0n ? ts : 0n;
      this.#sec = Number(t / NS_PER_SEC_BIG) >>> 0;
      this.#nsec = Number(t % NS_PER_SEC_BIG);
      return;
    }
    const t = ts > 0 ? ts : 0;
    let sec = Math.floor(t / NS_PER_SEC);
    let nsec = Math.round(t - sec * NS_PER_SEC);
    // Large doubles round: keep nsec within one second after the split.
    if (nsec < 0) {
      sec -= 1;
      nsec += NS_PER_SEC;
    } else if (nsec >= NS_PER_SEC) {
      sec += 1;
      nsec -= NS_PER_SEC;
    }
    this.#sec = sec >>> 0;
    this.#nsec = nsec;
  }

  /**
   * Appends one record: header, then `inclLen` bytes of `frame` from byte
   * `start` (already clamped to what the frame holds).
   */
  #record(frame: PcapFrameData, start: number, inclLen: number, origLen: number): void {
    const buf = this.#buf;
    const recordLen = PCAP_RECORD_HEADER_LEN + inclLen;
    // Keep records whole in each write when they fit the buffer at all.
    if (buf.length - this.#used < Math.min(recordLen, buf.length)) {
      this.flush();
      if (this.#sink === null) return;
    }
    const v = this.#view;
    const h = this.#used;
    v.setUint32(h, this.#sec, true);
    v.setUint32(h + 4, this.#nsec, true);
    v.setUint32(h + 8, inclLen, true);
    v.setUint32(h + 12, origLen >>> 0, true);
    this.#used = h + PCAP_RECORD_HEADER_LEN;
    this.#frames++;

    // A record bigger than the buffer streams through it in pieces.
    let done = 0;
    while (done < inclLen) {
      if (this.#used === buf.length) {
        this.flush();
        if (this.#sink === null) return;
      }
      const n = Math.min(inclLen - done, buf.length - this.#used);
      if (frame instanceof Uint8Array) {
        buf.set(frame.subarray(start + done, start + done + n), this.#used);
      } else {
        iovToBuf(frame, start + done, buf, this.#used, n);
      }
      this.#used += n;
      done += n;
    }
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The process-wide capture behind the module-level functions, if one is open, and its path. */
let current: PcapWriter | null = null;
let currentPath = "";

/**
 * Opens the process-wide capture at `path` (closing any previous one).
 *
 * @throws if the file cannot be opened; the caller reports a bad `--pcap`
 */
export function pcapOpen(path: string, opts: PcapOptions = {}): void {
  pcapClose();
  current = PcapWriter.open(path, opts);
  currentPath = path;
}

/** The open process-wide capture's path and frames recorded so far, or null. */
export function pcapStatus(): { readonly path: string; readonly frames: number } | null {
  return current === null ? null : { path: currentPath, frames: current.framesRecorded };
}

/** True while the process-wide capture is open and has not been disabled by an error. */
export function pcapActive(): boolean {
  return current !== null && current.active;
}

/**
 * Records one frame in the process-wide capture: `l2len` bytes from byte
 * `offset` of `frame`. No-op without a capture. See {@linkcode PcapWriter.frame}.
 *
 * @param ts timestamp in ns since the epoch (default: now, read only if capturing)
 */
export function pcapFrame(
  frame: PcapFrameData,
  l2len: number,
  ts?: PcapTimestamp,
  offset = 0,
): void {
  if (current === null || !current.active) return;
  current.frame(frame, l2len, ts ?? pcapNow(), offset);
}

/**
 * Records the first `count` frames of a batch in the process-wide capture,
 * skipping `offset` bytes at the start of each, all with one timestamp. No-op
 * without a capture. See {@linkcode PcapWriter.multiple}.
 */
export function pcapMultiple(
  frames: readonly PcapFrameData[],
  offset: number,
  ts?: PcapTimestamp,
  count: number = frames.length,
): void {
  if (current === null || !current.active) return;
  current.multiple(frames, offset, ts ?? pcapNow(), count);
}

/** Writes out the process-wide capture's buffer (call when the loop goes idle). */
export function pcapFlush(): void {
  current?.flush();
}

/** Flushes and closes the process-wide capture, if any. */
export function pcapClose(): void {
  if (current === null) return;
  current.close();
  current = null;
}
