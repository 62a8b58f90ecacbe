/**
 * A TCP server for the lab's internet namespace that honours half-close: it reads what the
 * client sends until the client's FIN (EOF), and only then answers with an HTTP response whose
 * body is a given file, and closes.
 *
 * nginx aborts a response once the client has shut its sending side, so it cannot show that a
 * relay keeps delivering after the client's FIN; this server can, and because it answers only
 * after EOF, any answer at all proves the FIN got through.
 *
 * Usage: `half_close_server.ts LOGFILE BODYFILE ADDR:PORT...` (IPv6 as `[addr]:port`). Each
 * connection appends JSON lines to LOGFILE: `{"event":"eof",...}` when the client's FIN arrives
 * (with the byte count and sha256 of what came before it), then `{"event":"done",...}` with
 * the bytes sent; or `{"event":"abandoned","reason":...}` when the request grew past
 * {@linkcode MAX_REQUEST_BYTES}, the client stayed silent past the deadline, or sending failed.
 * @module
 */

/** The most a client may send before its FIN; past this the connection is dropped. */
export const MAX_REQUEST_BYTES = 1 << 20;
/** How long a client may take to send its FIN. */
export const READ_DEADLINE_MS = 30_000;
/** How long sending the answer may take. */
export const SEND_DEADLINE_MS = 120_000;

/** One line of the server's log. */
export interface HalfCloseRecord {
  time: string;
  event: "eof" | "done" | "abandoned";
  /** The client's endpoint as the server saw it. */
  peer: string;
  /** The server address the client reached. */
  local: string;
  /** Bytes received before the FIN (or before giving up). */
  requestBytes: number;
  /** sha256 (hex) of the bytes received before the FIN; on `eof` and `done`. */
  requestSha256?: string;
  /** Bytes of the answer written (header and body); on `done` and `abandoned`. */
  sentBytes?: number;
  /** Why the connection was abandoned. */
  reason?: "too_large" | "timeout" | "read_error" | "send_error";
}

/** Splits `host:port` or `[v6]:port`. */
function parseEndpoint(text: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (!m) throw new Error(`bad endpoint ${JSON.stringify(text)}; want ADDR:PORT or [ADDR]:PORT`);
  return { hostname: m[1], port: Number(m[2]) };
}

function endpoint(a: Deno.NetAddr): string {
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

function hex(bytes: ArrayBuffer): string {
  return [...new Uint8Array(bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Runs `fn` with a timer that closes `conn` when `ms` passes; says whether it fired. */
async function withDeadline<T>(
  conn: Deno.Conn,
  ms: number,
  fn: () => Promise<T>,
): Promise<{ value?: T; error?: unknown; expired: boolean }> {
  let expired = false;
  const timer = setTimeout(() => {
    expired = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, ms);
  try {
    return { value: await fn(), expired };
  } catch (error) {
    return { error, expired };
  } finally {
    clearTimeout(timer);
  }
}

/** Reads until EOF, counting into `got`; returns the bytes, or "too_large" past the bound. */
async function readToEof(
  conn: Deno.Conn,
  got: { bytes: number },
): Promise<Uint8Array<ArrayBuffer> | "too_large"> {
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) break;
    got.bytes += n;
    if (got.bytes > MAX_REQUEST_BYTES) return "too_large";
    chunks.push(buf.slice(0, n));
  }
  const all = new Uint8Array(got.bytes);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return all;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

/** Sends the HTTP head and the file's bytes; counts what was written into `sent`. */
async function sendAnswer(
  conn: Deno.Conn,
  bodyFile: string,
  sent: { bytes: number },
): Promise<void> {
  using file = await Deno.open(bodyFile, { read: true });
  const size = (await file.stat()).size;
  const head = new TextEncoder().encode(
    `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${size}\r\n` +
      `Connection: close\r\n\r\n`,
  );
  await writeAll(conn, head);
  sent.bytes += head.length;
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await file.read(buf);
    if (n === null) break;
    await writeAll(conn, buf.subarray(0, n));
    sent.bytes += n;
  }
}

async function handle(conn: Deno.Conn, logFile: string, bodyFile: string): Promise<void> {
  const base = {
    peer: endpoint(conn.remoteAddr as Deno.NetAddr),
    local: endpoint(conn.localAddr as Deno.NetAddr),
  };
  const log = (r: Omit<HalfCloseRecord, "time" | "peer" | "local">) =>
    Deno.writeTextFile(
      logFile,
      JSON.stringify({ time: new Date().toISOString(), ...base, ...r }) + "\n",
      { append: true },
    );
  try {
    const got = { bytes: 0 };
    const read = await withDeadline(conn, READ_DEADLINE_MS, () => readToEof(conn, got));
    if (read.expired || read.error !== undefined || read.value === "too_large") {
      const reason = read.expired
        ? "timeout"
        : read.value === "too_large"
        ? "too_large"
        : "read_error";
      await log({ event: "abandoned", requestBytes: got.bytes, reason });
      return;
    }
    const request = read.value as Uint8Array<ArrayBuffer>;
    const requestBytes = request.length;
    const requestSha256 = hex(await crypto.subtle.digest("SHA-256", request));
    // Logged before the first byte of the answer leaves: the answer follows the FIN.
    await log({ event: "eof", requestBytes, requestSha256 });
    const sent = { bytes: 0 };
    const send = await withDeadline(conn, SEND_DEADLINE_MS, () => sendAnswer(conn, bodyFile, sent));
    if (send.expired || send.error !== undefined) {
      await log({
        event: "abandoned",
        requestBytes,
        requestSha256,
        sentBytes: sent.bytes,
        reason: send.expired ? "timeout" : "send_error",
      });
      return;
    }
    await log({ event: "done", requestBytes, requestSha256, sentBytes: sent.bytes });
  } finally {
    try {
      conn.close();
    } catch {
      // Closed by a deadline.
    }
  }
}

async function serve(logFile: string, bodyFile: string, at: string): Promise<void> {
  const listener = Deno.listen({ ...parseEndpoint(at), transport: "tcp" });
  for await (const conn of listener) {
    handle(conn, logFile, bodyFile).catch((error) => {
      console.error(`half_close_server: ${at}: ${error}`);
    });
  }
}

if (import.meta.main) {
  const [logFile, bodyFile, ...endpoints] = Deno.args;
  if (!logFile || !bodyFile || endpoints.length === 0) {
    console.error("usage: half_close_server.ts LOGFILE BODYFILE ADDR:PORT...");
    Deno.exit(2);
  }
  await Promise.all(endpoints.map((e) => serve(logFile, bodyFile, e)));
}
