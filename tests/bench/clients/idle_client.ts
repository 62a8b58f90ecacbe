/**
 * Opens many connections through the system under test and leaves them idle, for the scale
 * workload: each HTTP connection carries one keep-alive request (so the proxy has decided and
 * connected upstream), each TLS connection one full handshake.
 *
 * Usage: `idle_client.ts http|https HOST PORT COUNT CONCURRENCY [CA_FILE]`. Prints
 * `ready OPEN FAILED` once every attempt has finished, then holds the connections until its
 * standard input closes (or SIGTERM).
 * @module
 */

const DEADLINE_MS = 15_000;

async function openOne(
  proto: string,
  host: string,
  port: number,
  caCerts: string[] | undefined,
  held: Deno.Conn[],
): Promise<void> {
  const signal = AbortSignal.timeout(DEADLINE_MS);
  const tcp = await Deno.connect({ hostname: host, port, signal });
  // Without this the TLS handshake's small writes meet delayed ACKs: 40 ms per connection.
  tcp.setNoDelay(true);
  held.push(tcp);
  if (proto === "https") {
    held.pop();
    const tls = await Deno.startTls(tcp, { hostname: host, caCerts });
    held.push(tls);
    await withDeadline(tls.handshake(), tls);
    return;
  }
  const request = `GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`;
  await tcp.write(new TextEncoder().encode(request));
  const buf = new Uint8Array(4096);
  let text = "";
  // The body is one short line after the head: done once it has arrived.
  while (!/\r\n\r\n[^\n]*\n/.test(text)) {
    const n = await withDeadline(tcp.read(buf), tcp);
    if (n === null) throw new Error("closed before the response");
    text += new TextDecoder().decode(buf.subarray(0, n));
  }
  if (!text.startsWith("HTTP/1.1 200")) throw new Error(`bad response ${text.slice(0, 12)}`);
}

async function withDeadline<T>(p: Promise<T>, conn: Deno.Conn): Promise<T> {
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed already */ }
  }, DEADLINE_MS);
  try {
    return await p;
  } finally {
    clearTimeout(timer);
  }
}

async function main(): Promise<void> {
  const [proto, host, portText, countText, concText, caFile] = Deno.args;
  const port = Number(portText), count = Number(countText), conc = Number(concText);
  if (!["http", "https"].includes(proto) || !(port > 0) || !(count > 0) || !(conc > 0)) {
    console.error("usage: idle_client.ts http|https HOST PORT COUNT CONCURRENCY [CA_FILE]");
    Deno.exit(2);
  }
  const caCerts = caFile ? [await Deno.readTextFile(caFile)] : undefined;
  const held: Deno.Conn[] = [];
  let next = 0, failed = 0;
  let firstError = "";
  const worker = async () => {
    while (next < count) {
      next++;
      await openOne(proto, host, port, caCerts, held).catch((e) => {
        failed++;
        firstError ||= e instanceof Error ? e.message : String(e);
      });
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  console.log(
    `ready ${count - failed} ${failed}${firstError ? ` ${JSON.stringify(firstError)}` : ""}`,
  );
  // Hold until told to stop: stdin closing (the harness ends us) or a signal.
  const stop = new Promise<void>((resolve) => {
    Deno.addSignalListener("SIGTERM", () => resolve());
    (async () => {
      const sink = new Uint8Array(64);
      while ((await Deno.stdin.read(sink)) !== null) { /* wait */ }
      resolve();
    })().catch(() => resolve());
  });
  await stop;
  for (const conn of held) {
    try {
      conn.close();
    } catch { /* closed already */ }
  }
  Deno.exit(0);
}

if (import.meta.main) await main();
