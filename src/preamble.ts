/**
 * Reads a connection's first bytes (an HTTP request head or a TLS ClientHello) until a
 * parser decides, under one total deadline and a byte bound: a client that trickles a byte
 * at a time gets no more time than one that sends nothing.
 * @module
 */

import { closeQuietly } from "./socket.ts";

const INITIAL_BYTES = 4096;

/** How the read ended. `bytes` is everything read, to be replayed upstream verbatim. */
export type PreambleResult<T> =
  | { ok: true; verdict: Exclude<T, { kind: "incomplete" }>; bytes: Uint8Array }
  | { ok: false; reason: "timeout" | "closed" | "too_large" | "read_error"; bytes: Uint8Array };

/**
 * Reads into a buffer of at most `maxBytes` and asks `parse` after every read. The parser's
 * `incomplete` may say how many bytes it needs (`needBytes`) before asking again is
 * worthwhile, so a client trickling a byte per read does not make us re-parse the whole
 * buffer after each one. On timeout the
 * connection is closed (the only way to interrupt a pending read); the caller closes it on
 * every other failure. Never rejects.
 */
export async function readPreamble<T extends { kind: string }>(
  conn: Deno.Conn,
  parse: (bytes: Uint8Array) => T,
  maxBytes: number,
  deadlineMs: number,
): Promise<PreambleResult<T>> {
  // Most first flights are under 2 KiB; grow only for the few that are not, so thousands of
  // silent clients hold little memory.
  let buffer = new Uint8Array(Math.min(INITIAL_BYTES, maxBytes));
  let length = 0;
  let needBytes = 1;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    closeQuietly(conn);
  }, deadlineMs);
  try {
    while (length < maxBytes) {
      if (length === buffer.length) {
        const grown = new Uint8Array(Math.min(buffer.length * 4, maxBytes));
        grown.set(buffer);
        buffer = grown;
      }
      let n: number | null;
      try {
        n = await conn.read(buffer.subarray(length));
      } catch {
        return {
          ok: false,
          reason: timedOut ? "timeout" : "read_error",
          bytes: buffer.subarray(0, length),
        };
      }
      if (n === null) return { ok: false, reason: "closed", bytes: buffer.subarray(0, length) };
      length += n;
      if (length < needBytes) continue;
      const verdict = parse(buffer.subarray(0, length));
      if (verdict.kind !== "incomplete") {
        return {
          ok: true,
          verdict: verdict as Exclude<T, { kind: "incomplete" }>,
          bytes: buffer.subarray(0, length),
        };
      }
      needBytes = (verdict as { needBytes?: number }).needBytes ?? length + 1;
    }
    return { ok: false, reason: "too_large", bytes: buffer.subarray(0, length) };
  } finally {
    clearTimeout(timer);
  }
}
