/**
 * A raw TCP client for the end-to-end suite: sends exactly the bytes it is given, in the
 * pieces it is given (each piece its own TCP segment), then reads what comes back.
 *
 * Reads a JSON plan on stdin and prints a JSON report on stdout; see {@linkcode Plan} and
 * {@linkcode Report}. Used for split and oversized ClientHellos, garbage, a silent client and
 * half-close, which curl and openssl cannot produce.
 * @module
 */

/** What to do. */
export interface Plan {
  host: string;
  port: number;
  /** Pieces to send, base64; each goes out in its own write with Nagle off. */
  parts: string[];
  /** Pause between pieces so each leaves as its own segment (default 50 ms). */
  pauseMs?: number;
  /** Shut down the sending side after the last piece (half-close). */
  closeWrite?: boolean;
  /** Stop reading after this many bytes (default 1 MiB); the rest is only counted. */
  keepBytes?: number;
  /** Stop reading once this many bytes have arrived (default: read to the end). */
  stopAfterBytes?: number;
  /** Give up reading after this long (default 10 s). */
  readDeadlineMs?: number;
}

/** What happened. */
export interface Report {
  connected: boolean;
  /** Our source port, to find the proxy's log line for this connection. */
  localPort?: number;
  /** Total bytes received. */
  received: number;
  /** How reading ended: peer closed, reset, our deadline passed, or `stopAfterBytes` reached. */
  end: "eof" | "reset" | "deadline" | "error" | "enough";
  /** First bytes received, hex (at most 16). */
  head: string;
  /** True when the first bytes are a TLS handshake record carrying a ServerHello. */
  serverHello: boolean;
  /** The first line and body digest when the reply is HTTP. */
  statusLine?: string;
  bodySha256?: string;
  bodyBytes?: number;
  error?: string;
}

function b64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function main(): Promise<Report> {
  const plan = JSON.parse(await new Response(Deno.stdin.readable).text()) as Plan;
  const report: Report = {
    connected: false,
    received: 0,
    end: "error",
    head: "",
    serverHello: false,
  };
  let conn: Deno.TcpConn;
  try {
    conn = await Deno.connect({ hostname: plan.host, port: plan.port });
  } catch (error) {
    report.error = String(error);
    return report;
  }
  report.connected = true;
  report.localPort = conn.localAddr.port;
  conn.setNoDelay(true);
  const deadline = setTimeout(() => {
    report.end = "deadline";
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, plan.readDeadlineMs ?? 10_000);
  const keep = plan.keepBytes ?? 1 << 20;
  const kept: Uint8Array[] = [];
  let keptBytes = 0;
  // The body digest covers everything after the HTTP head, however large.
  let headerDone = false;
  let head: Uint8Array = new Uint8Array();
  let headText = "";
  let digest: DigestStream | undefined;
  try {
    for (const [i, part] of plan.parts.entries()) {
      if (i > 0) await new Promise((r) => setTimeout(r, plan.pauseMs ?? 50));
      await conn.write(b64(part));
    }
    if (plan.closeWrite) await conn.closeWrite();
    const buf = new Uint8Array(65536);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) {
        if (report.end !== "deadline") report.end = "eof";
        break;
      }
      const chunk = buf.slice(0, n);
      report.received += n;
      const stop = plan.stopAfterBytes !== undefined && report.received >= plan.stopAfterBytes;
      if (keptBytes < keep) {
        kept.push(chunk.slice(0, keep - keptBytes));
        keptBytes += Math.min(n, keep - keptBytes);
      }
      if (!headerDone) {
        // Split on bytes: a text decoder would alter body bytes (Deno's "latin1" is
        // windows-1252, which maps 0x80-0x9f elsewhere).
        head = concat(head, chunk);
        const at = indexOfHeadEnd(head);
        if (at >= 0) {
          headerDone = true;
          headText = new TextDecoder("latin1").decode(head.subarray(0, at));
          if (headText.startsWith("HTTP/")) {
            digest = new DigestStream();
            digest.update(head.subarray(at + 4));
          }
        } else if (head.length > 65536) {
          headerDone = true;
          headText = new TextDecoder("latin1").decode(head.subarray(0, 65536));
        }
      } else {
        digest?.update(chunk);
      }
      if (stop) {
        report.end = "enough";
        break;
      }
    }
  } catch (error) {
    if (report.end !== "deadline") {
      report.end = error instanceof Deno.errors.ConnectionReset ? "reset" : "error";
      report.error = String(error);
    }
  } finally {
    clearTimeout(deadline);
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
  const first = kept[0] ?? new Uint8Array();
  report.head = hex(first.slice(0, 16));
  report.serverHello = first.length >= 6 && first[0] === 0x16 && first[1] === 0x03 &&
    first[5] === 0x02;
  if (!headerDone) headText = new TextDecoder("latin1").decode(head);
  if (headText.startsWith("HTTP/")) report.statusLine = headText.split("\r\n")[0];
  if (digest) {
    report.bodySha256 = await digest.hex();
    report.bodyBytes = digest.bytes;
  }
  return report;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** Index of the CRLF CRLF that ends an HTTP head, or -1. */
function indexOfHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

/** SHA-256 over a stream of chunks, using the system's sha256sum to avoid holding 64 MiB. */
class DigestStream {
  bytes = 0;
  #child = new Deno.Command("sha256sum", { stdin: "piped", stdout: "piped" }).spawn();
  #writer = this.#child.stdin.getWriter();
  #pending: Promise<void> = Promise.resolve();
  update(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    const copy = chunk.slice();
    this.#pending = this.#pending.then(() => this.#writer.write(copy));
  }
  async hex(): Promise<string> {
    await this.#pending;
    await this.#writer.close();
    const out = await this.#child.output();
    return new TextDecoder().decode(out.stdout).split(" ")[0];
  }
}

if (import.meta.main) {
  console.log(JSON.stringify(await main()));
  Deno.exit(0);
}
