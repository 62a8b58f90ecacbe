/**
 * Holds many kept-alive connections open for the hardening tests, driven by one JSON command
 * per line on stdin; answers one JSON line per command on stdout.
 *
 * - `{"op":"open","count":N,"host":A,"port":P,"request":B64,"expect":TEXT,"concurrency":C}`:
 *   opens N connections (at most C at a time), sends the request on each and waits for TEXT in
 *   the answer; the ones that got it stay open (held), the others are closed and described.
 *   Answers `{"ok":n,"failed":n,"failures":[...],"ports":[...],"held":n,"ms":n}` (ports only
 *   for up to 100 connections).
 * - `{"op":"close","count":N}`: closes the N oldest held connections; answers their ports.
 * - `{"op":"exit"}`: closes everything and exits.
 * @module
 */

/** An open command. */
export interface OpenCommand {
  op: "open";
  count: number;
  host: string;
  port: number;
  /** The request, base64. */
  request: string;
  /** Text that must arrive for the connection to count as established through. */
  expect: string;
  concurrency?: number;
  /** Per-connection deadline (default 10 s). */
  timeoutMs?: number;
}

/** The answer to an open command. */
export interface OpenResult {
  ok: number;
  failed: number;
  /** The first few failures: how each connection ended. */
  failures: string[];
  /** Source ports of the connections held by this command (when count <= 100). */
  ports: number[];
  /** Connections held in total now. */
  held: number;
  ms: number;
}

const held: Deno.TcpConn[] = [];

async function openOne(cmd: OpenCommand, request: Uint8Array): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: cmd.host, port: cmd.port });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }, cmd.timeoutMs ?? 10_000);
  let text = "";
  try {
    await conn.write(request);
    const buf = new Uint8Array(4096);
    while (!text.includes(cmd.expect)) {
      const n = await conn.read(buf);
      if (n === null) throw new Error(`eof after ${text.length} bytes`);
      text += new TextDecoder("latin1").decode(buf.subarray(0, n));
    }
    return conn;
  } catch (error) {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
    if (timedOut) throw new Error(`deadline: no answer, connection still open`);
    const name = error instanceof Error ? error.name : "Error";
    const message = error instanceof Error ? error.message : String(error);
    throw new Error(
      `${name}: ${message}${text ? ` (got ${JSON.stringify(text.slice(0, 40))})` : ""}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

async function open(cmd: OpenCommand): Promise<OpenResult> {
  const started = Date.now();
  const request = Uint8Array.from(atob(cmd.request), (c) => c.charCodeAt(0));
  const result: OpenResult = { ok: 0, failed: 0, failures: [], ports: [], held: 0, ms: 0 };
  let next = 0;
  const worker = async () => {
    while (next < cmd.count) {
      next++;
      try {
        const conn = await openOne(cmd, request);
        held.push(conn);
        result.ok++;
        if (cmd.count <= 100) result.ports.push(conn.localAddr.port);
      } catch (error) {
        result.failed++;
        if (result.failures.length < 5) result.failures.push(String((error as Error).message));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(cmd.concurrency ?? 1, cmd.count) }, worker));
  result.held = held.length;
  result.ms = Date.now() - started;
  return result;
}

function close(count: number): { ports: number[]; held: number } {
  const ports: number[] = [];
  for (const conn of held.splice(0, count)) {
    ports.push(conn.localAddr.port);
    try {
      conn.close();
    } catch {
      // Already closed by the peer.
    }
  }
  return { ports, held: held.length };
}

if (import.meta.main) {
  const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
  let pending = "";
  for await (const chunk of lines) {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line === "") continue;
      const cmd = JSON.parse(line);
      if (cmd.op === "open") console.log(JSON.stringify(await open(cmd as OpenCommand)));
      else if (cmd.op === "close") console.log(JSON.stringify(close(cmd.count)));
      else if (cmd.op === "exit") {
        close(held.length);
        Deno.exit(0);
      }
    }
  }
  close(held.length);
  Deno.exit(0);
}
