/**
 * Small socket helpers shared by the connection handling: closing once, writing fully, and
 * naming errors for log lines.
 * @module
 */

// Connections already closed: closing one twice would build and throw a BadResource error,
// a measurable cost when it happens on every connection.
const closed = new WeakSet<Deno.Conn>();

/** Closes a connection once; later calls, and an already-closed socket, are no-ops. */
export function closeQuietly(conn: Deno.Conn): void {
  if (closed.has(conn)) return;
  closed.add(conn);
  try {
    conn.close();
  } catch {
    // Already closed by the runtime: nothing left to release.
  }
}

/** True once `closeQuietly` has closed the connection. */
export function isClosed(conn: Deno.Conn): boolean {
  return closed.has(conn);
}

/** Writes every byte, however many partial writes it takes. */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/** A short, stable name for a socket error, for the closing log line. */
export function errorName(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return typeof code === "string" ? code : error.name;
  }
  return "unknown";
}
