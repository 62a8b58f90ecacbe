/**
 * A small HTTP/1.1 origin for the hardening tests, run in the lab's internet namespace: it
 * frames each request itself (Content-Length or chunked), answers with a JSON digest of the
 * exact bytes it received, logs one line per request, and keeps connections open (so it can
 * hold thousands of idle kept-alive connections, which the lab's nginx is not sized for).
 *
 * A request with `Upgrade: echo` is answered `101` and the connection then echoes raw bytes.
 *
 * Usage: `hardening_echo_server.ts LOG_FILE ADDR:PORT...`; prints `listening` once every
 * address is bound. The reply body is {@linkcode Echo}.
 * @module
 */

/** What the server saw of one request; the reply body and the log line. */
export interface Echo {
  method: string;
  target: string;
  host: string;
  /** sha256 of the request's bytes exactly as received: head and raw (still framed) body. */
  rawSha256: string;
  rawLength: number;
  /** sha256 and length of the body after chunked decoding. */
  bodySha256: string;
  bodyLength: number;
}

const MAX_HEAD = 64 * 1024;
const MAX_BODY = 16 * 1024 * 1024;

/** A buffered reader over a connection that remembers every byte it hands out. */
class Reader {
  #buf = new Uint8Array(0);
  #taken: Uint8Array[] = [];
  constructor(readonly conn: Deno.Conn) {}

  async #fill(): Promise<boolean> {
    const chunk = new Uint8Array(16384);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const next = new Uint8Array(this.#buf.length + n);
    next.set(this.#buf);
    next.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = next;
    return true;
  }

  #take(n: number): Uint8Array {
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.slice(n);
    this.#taken.push(out);
    return out;
  }

  /** Bytes read but not yet handed out (after a protocol switch they belong to the tunnel). */
  rest(): Uint8Array {
    const out = this.#buf;
    this.#buf = new Uint8Array(0);
    return out;
  }

  /** Bytes up to and including `delimiter`, or null at EOF before it. */
  async until(delimiter: string, limit: number): Promise<Uint8Array | null> {
    const d = new TextEncoder().encode(delimiter);
    while (true) {
      const at = indexOf(this.#buf, d);
      if (at >= 0) return this.#take(at + d.length);
      if (this.#buf.length > limit) throw new Error(`no ${JSON.stringify(delimiter)} in ${limit}`);
      if (!(await this.#fill())) return null;
    }
  }

  /** Exactly `n` bytes, or null at EOF. */
  async exactly(n: number): Promise<Uint8Array | null> {
    while (this.#buf.length < n) if (!(await this.#fill())) return null;
    return this.#take(n);
  }

  /** Every byte handed out since the last call. */
  drainTaken(): Uint8Array<ArrayBuffer> {
    const out = concat(this.#taken);
    this.#taken = [];
    return out;
  }
}

function indexOf(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Reads one request; null when the client closed between requests. */
async function readRequest(
  r: Reader,
): Promise<{ echo: Echo; close: boolean; upgrade: boolean } | null> {
  const headBytes = await r.until("\r\n\r\n", MAX_HEAD);
  if (headBytes === null) return null;
  const lines = new TextDecoder("latin1").decode(headBytes).split("\r\n");
  const [method = "", target = ""] = lines[0].split(" ");
  const fields = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon > 0) {
      fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
  }
  const body: Uint8Array[] = [];
  if (fields.get("transfer-encoding")?.toLowerCase() === "chunked") {
    while (true) {
      const sizeLine = await r.until("\r\n", 4096);
      if (sizeLine === null) throw new Error("EOF in chunk size");
      const size = Number.parseInt(new TextDecoder().decode(sizeLine).split(";")[0], 16);
      if (!(size >= 0) || size > MAX_BODY) throw new Error("bad chunk size");
      if (size === 0) {
        // Trailers end with an empty line.
        while (true) {
          const trailer = await r.until("\r\n", 4096);
          if (trailer === null) throw new Error("EOF in trailers");
          if (trailer.length === 2) break;
        }
        break;
      }
      const data = await r.exactly(size);
      if (data === null || (await r.exactly(2)) === null) throw new Error("EOF in chunk");
      body.push(data);
    }
  } else {
    const length = Number(fields.get("content-length") ?? "0");
    if (!(length >= 0) || length > MAX_BODY) throw new Error("bad content-length");
    const data = await r.exactly(length);
    if (data === null) throw new Error("EOF in body");
    body.push(data);
  }
  const raw = r.drainTaken();
  const decoded = concat(body);
  return {
    echo: {
      method,
      target,
      host: fields.get("host") ?? "",
      rawSha256: await sha256(raw),
      rawLength: raw.length,
      bodySha256: await sha256(decoded),
      bodyLength: decoded.length,
    },
    close: fields.get("connection")?.toLowerCase() === "close",
    upgrade: fields.get("upgrade")?.toLowerCase() === "echo",
  };
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function serve(conn: Deno.Conn, log: Deno.FsFile): Promise<void> {
  const r = new Reader(conn);
  try {
    while (true) {
      const request = await readRequest(r);
      if (request === null) break;
      const json = JSON.stringify(request.echo);
      log.writeSync(new TextEncoder().encode(json + "\n"));
      if (request.upgrade) {
        // `Upgrade: echo`: switch protocols, then send back every byte until the client's FIN.
        await writeAll(
          conn,
          new TextEncoder().encode(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n",
          ),
        );
        await writeAll(conn, r.rest());
        const chunk = new Uint8Array(16384);
        for (let n = await conn.read(chunk); n !== null; n = await conn.read(chunk)) {
          await writeAll(conn, chunk.subarray(0, n));
        }
        break;
      }
      const body = new TextEncoder().encode(json);
      const head =
        `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
        (request.close ? "Connection: close\r\n" : "") + "\r\n";
      const reply = concat([new TextEncoder().encode(head), body]);
      for (let at = 0; at < reply.length;) at += await conn.write(reply.subarray(at));
      if (request.close) break;
    }
  } catch {
    // A client that breaks framing or resets is simply dropped.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

if (import.meta.main) {
  const [logFile, ...endpoints] = Deno.args;
  const log = Deno.openSync(logFile, { append: true, create: true });
  const listeners = endpoints.map((e) => {
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(e);
    if (!m) throw new Error(`bad endpoint ${e}`);
    return Deno.listen({ hostname: m[1], port: Number(m[2]) });
  });
  console.log("listening");
  await Promise.all(listeners.map(async (listener) => {
    for await (const conn of listener) serve(conn, log);
  }));
}
