/**
 * Open-loop latency client for the benchmark: starts one request per `1/rate` seconds, each on
 * a new connection (TCP, or TLS with SNI from the host name), and measures from connect to the
 * last byte of the response. A slow system cannot slow the schedule down, so its queueing
 * shows in the tail.
 *
 * Usage: `latency_client.ts http|https HOST PORT RATE SECONDS [CA_FILE]`; prints one JSON line
 * `{ count, errors, p50, p90, p99, max }` (milliseconds).
 * @module
 */

import { quantile } from "../measure.ts";

const REQUEST_DEADLINE_MS = 10_000;

async function once(
  proto: string,
  host: string,
  port: number,
  caCerts: string[] | undefined,
): Promise<number> {
  const started = performance.now();
  const signal = AbortSignal.timeout(REQUEST_DEADLINE_MS);
  const tcp = await Deno.connect({ hostname: host, port, signal });
  // Without this the TLS handshake's small writes meet delayed ACKs: 40 ms per connection.
  tcp.setNoDelay(true);
  const conn: Deno.Conn = proto === "https"
    ? await Deno.startTls(tcp, { hostname: host, caCerts })
    : tcp;
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed already */ }
  }, REQUEST_DEADLINE_MS);
  try {
    const request = `GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`;
    await conn.write(new TextEncoder().encode(request));
    const buf = new Uint8Array(4096);
    let first: Uint8Array | undefined;
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      first ??= buf.slice(0, Math.min(n, 12));
    }
    const status = first ? new TextDecoder().decode(first) : "";
    if (!status.startsWith("HTTP/1.1 200")) {
      throw new Error(`bad response ${JSON.stringify(status)}`);
    }
    return performance.now() - started;
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the deadline or the peer */ }
  }
}

async function main(): Promise<void> {
  const [proto, host, portText, rateText, secondsText, caFile] = Deno.args;
  const port = Number(portText), rate = Number(rateText), seconds = Number(secondsText);
  if (!["http", "https"].includes(proto) || !(port > 0) || !(rate > 0) || !(seconds > 0)) {
    console.error("usage: latency_client.ts http|https HOST PORT RATE SECONDS [CA_FILE]");
    Deno.exit(2);
  }
  const caCerts = caFile ? [await Deno.readTextFile(caFile)] : undefined;
  const total = Math.round(rate * seconds);
  const times: number[] = [];
  const errors: string[] = [];
  const inFlight: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const due = t0 + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    inFlight.push(
      once(proto, host, port, caCerts).then(
        (ms) => void times.push(ms),
        (e) => void errors.push(e instanceof Error ? e.message : String(e)),
      ),
    );
  }
  await Promise.all(inFlight);
  times.sort((a, b) => a - b);
  const round = (x: number) => Math.round(x * 1000) / 1000;
  console.log(JSON.stringify({
    count: times.length,
    errors: errors.length,
    firstError: errors[0],
    p50: round(quantile(times, 0.5)),
    p90: round(quantile(times, 0.9)),
    p99: round(quantile(times, 0.99)),
    max: round(times[times.length - 1] ?? NaN),
  }));
}

if (import.meta.main) await main();
