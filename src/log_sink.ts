/**
 * The stdout sink: formatted lines are queued and written in batches by one async writer, so
 * the relay never waits on a slow reader of stdout (journald, a pipe), and no line is lost
 * to a burst. Only when the queue passes its byte bound are lines dropped, and then the drop
 * is counted and reported in the log itself.
 * @module
 */

import type { LogRecord, Sink } from "@logtape/logtape";

/** Where lines go; `Deno.stdout` in production, anything with `write` in tests. */
export interface LineWriter {
  write(bytes: Uint8Array): Promise<number>;
}

/** A sink that can be flushed and closed. */
export type QueuedSink = Sink & AsyncDisposable & {
  /** Resolves when every line queued so far has been written. */
  flush(): Promise<void>;
  /**
   * Queues already formatted text ending in a newline: one line, or `lines` of them (dropped,
   * when the queue is full, as that many); as bytes, written as they are.
   */
  enqueue(text: string | Uint8Array, lines?: number): void;
  /** Lines dropped because the queue was full. */
  readonly dropped: number;
};

/** Queue bound: far above any burst a healthy reader lags by, far below a memory problem. */
export const DEFAULT_MAX_QUEUED_BYTES = 16 * 1024 * 1024;

/** How long a line may wait for others to be written with it. */
const BATCH_DELAY_MS = 5;

/** Largest single write: batches lines without building huge strings. */
const BATCH_CHARS = 64 * 1024;

/** Creates the queued sink over `writer` with `format` turning a record into one line. */
export function queuedSink(
  writer: LineWriter,
  format: (record: LogRecord) => string,
  maxQueuedBytes = DEFAULT_MAX_QUEUED_BYTES,
): QueuedSink {
  const encoder = new TextEncoder();
  let queue: (string | Uint8Array)[] = [];
  let queued = 0;
  let dropped = 0;
  let reportedDrops = 0;
  let writing: Promise<void> | null = null;

  const drain = async () => {
    try {
      while (queue.length > 0 || dropped > reportedDrops) {
        if (queue.length === 0) {
          const lost = dropped - reportedDrops;
          reportedDrops = dropped;
          queue.push(
            `${new Date().toISOString().slice(0, 19)}Z WARN ${lost} log lines dropped: ` +
              "stdout was too slow\n",
          );
        }
        const lines = queue;
        queue = [];
        queued = 0;
        for (let i = 0; i < lines.length;) {
          const first = lines[i];
          let bytes: Uint8Array;
          if (typeof first !== "string") {
            // Lines already in bytes (the main thread's own, one each) go out together too;
            // a large chunk (the relay thread's batch) as it is.
            let length = first.length;
            let end = i + 1;
            for (let next = lines[end]; next instanceof Uint8Array; next = lines[++end]) {
              if (length + next.length > BATCH_CHARS) break;
              length += next.length;
            }
            bytes = end === i + 1 ? first : joined(lines as Uint8Array[], i, end, length);
            i = end;
          } else {
            let batch = first;
            for (let next = lines[++i]; typeof next === "string"; next = lines[++i]) {
              if (batch.length + next.length > BATCH_CHARS) break;
              batch += next;
            }
            bytes = encoder.encode(batch);
          }
          for (let off = 0; off < bytes.length;) off += await writer.write(bytes.subarray(off));
        }
      }
    } catch {
      // stdout is gone (closed pipe): nothing more can be logged; keep the proxy running.
      queue = [];
      queued = 0;
    } finally {
      writing = null;
    }
  };

  const enqueue = (text: string | Uint8Array, lines = 1) => {
    if (queued + text.length > maxQueuedBytes) {
      dropped += lines;
    } else {
      queue.push(text);
      queued += text.length;
    }
    // Lines wait a moment to go out together: each write is a runtime op and a trip through
    // Deno's blocking pool, measured as the main thread's largest cost per connection when
    // every line went out on its own.
    writing ??= new Promise((resolve) => setTimeout(resolve, BATCH_DELAY_MS)).then(drain);
  };
  const sink = ((record: LogRecord) => enqueue(format(record))) as QueuedSink;
  sink.enqueue = enqueue;

  sink.flush = async () => {
    while (writing !== null) await writing;
  };
  Object.defineProperty(sink, "dropped", { get: () => dropped });
  sink[Symbol.asyncDispose] = () => sink.flush();
  return sink;
}

/** `parts[start, end)` in one array of `length` bytes. */
function joined(parts: Uint8Array[], start: number, end: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = start, at = 0; i < end; at += parts[i].length, i++) out.set(parts[i], at);
  return out;
}
