/**
 * Reads a connection's first bytes (an HTTP request head or a TLS ClientHello) until a
 * parser decides, under one total deadline and a byte bound: a client that trickles a byte
 * at a time gets no more time than one that sends nothing.
 * @module
 */

const INITIAL_BYTES = 4096;

/** A parser's verdict on the bytes so far; `incomplete` asks for more. */
export type Verdict<T> = { kind: "incomplete" } | T;

/** How the read ended. `bytes` is everything read, to be replayed upstream verbatim. */
export type PreambleResult<T> =
  | { ok: true; verdict: T; bytes: Uint8Array }
  | { ok: false; reason: "timeout" | "closed" | "too_large" | "read_error"; bytes: Uint8Array };

/**
 * Reads into a buffer of at most `maxBytes` and asks `parse` after every read. On timeout the
 * connection is closed (the only way to interrupt a pending read); the caller closes it on
 * every other failure. Never rejects.
 */
export async function readPreamble<T extends { kind: string }>(
  conn: Deno.Conn,
  parse: (bytes: Uint8Array) => Verdict<T>,
  maxBytes: number,
  deadlineMs: number,
): Promise<PreambleResult<T>> {
  // Most first flights are under 2 KiB; grow only for the few that are not, so thousands of
  // silent clients hold little memory.
  let buffer = new Uint8Array(Math.min(INITIAL_BYTES, maxBytes));
  let length = 0;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
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
      const verdict = parse(buffer.subarray(0, length));
      if (verdict.kind !== "incomplete") {
        return { ok: true, verdict: verdict as T, bytes: buffer.subarray(0, length) };
      }
    }
    return { ok: false, reason: "too_large", bytes: buffer.subarray(0, length) };
  } finally {
    clearTimeout(timer);
  }
}
