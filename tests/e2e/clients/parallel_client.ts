/**
 * Many clients at once: opens COUNT connections, and only when all are open sends one
 * request on each (so they are all in the proxy at the same time), then reads every answer.
 *
 * Usage: `parallel_client.ts COUNT ADDR PORT HOST [CA_FILE]` -- with CA_FILE the requests go
 * over TLS (SNI and certificate name HOST). Prints a JSON summary: how many got `200` with
 * the body `hello from HOST`, and the first few failures.
 * @module
 */

async function readAll(conn: Deno.Conn, limit: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(16384);
  while (total < limit) {
    const n = await conn.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    total += n;
  }
  return new TextDecoder().decode(
    chunks.reduce((a, c) => {
      const out = new Uint8Array(a.length + c.length);
      out.set(a);
      out.set(c, a.length);
      return out;
    }, new Uint8Array()),
  );
}

if (import.meta.main) {
  const [countText, addr, portText, host, caFile] = Deno.args;
  const count = Number(countText);
  const port = Number(portText);
  const caCerts = caFile ? [await Deno.readTextFile(caFile)] : undefined;
  setTimeout(() => {
    console.log(JSON.stringify({ ok: 0, count, failures: ["deadline"] }));
    Deno.exit(1);
  }, 120_000);
  // Phase 1: every connection open (and, for TLS, handshaken) before any request is sent.
  const opened = await Promise.allSettled(
    Array.from({ length: count }, async () => {
      const tcp = await Deno.connect({ hostname: addr, port });
      if (!caCerts) return tcp as Deno.Conn;
      const tls = await Deno.startTls(tcp, { hostname: host, caCerts });
      await tls.handshake();
      return tls as Deno.Conn;
    }),
  );
  const request = new TextEncoder().encode(
    `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
  );
  const results = await Promise.allSettled(opened.map(async (o) => {
    if (o.status === "rejected") throw o.reason;
    const conn = o.value;
    try {
      await conn.write(request);
      return await readAll(conn, 65536);
    } finally {
      try {
        conn.close();
      } catch {
        // Already closed by the peer.
      }
    }
  }));
  const failures: string[] = [];
  let ok = 0;
  for (const r of results) {
    if (
      r.status === "fulfilled" && r.value.startsWith("HTTP/1.1 200 ") &&
      r.value.endsWith(`\r\n\r\nhello from ${host}\n`)
    ) {
      ok++;
    } else if (failures.length < 5) {
      failures.push(r.status === "rejected" ? String(r.reason) : r.value.split("\r\n")[0]);
    }
  }
  console.log(JSON.stringify({ ok, count, failures }));
  Deno.exit(0);
}
