/**
 * A flood of half-open clients: opens COUNT connections (CONCURRENCY at a time) to
 * HOST:PORT, sends each the same incomplete first flight (base64), and holds every one until
 * the peer closes it or HOLD_MS pass. Prints one JSON line: how many connected, how many the
 * peer closed, how many were still open at the end, and when the last close came.
 *
 * Usage: `flood_client.ts HOST PORT COUNT CONCURRENCY FIRST_FLIGHT_B64 HOLD_MS`
 * @module
 */

/** What the flood saw. */
export interface FloodReport {
  connected: number;
  failedToConnect: number;
  closedByPeer: number;
  stillOpen: number;
  /** Milliseconds from the first connect to the last close by the peer. */
  lastCloseMs: number;
}

if (import.meta.main) {
  const [host, port, count, concurrency, flight, holdMs] = Deno.args;
  const bytes = Uint8Array.from(atob(flight), (c) => c.charCodeAt(0));
  const started = Date.now();
  const deadline = started + Number(holdMs);
  const report: FloodReport = {
    connected: 0,
    failedToConnect: 0,
    closedByPeer: 0,
    stillOpen: 0,
    lastCloseMs: 0,
  };
  const open = new Set<Deno.TcpConn>();
  const holds: Promise<void>[] = [];

  const hold = async (conn: Deno.TcpConn) => {
    const sink = new Uint8Array(1024);
    try {
      while ((await conn.read(sink)) !== null) { /* a denial answer, if any */ }
    } catch {
      // A reset is a close by the peer as well.
    }
    if (open.delete(conn)) {
      report.closedByPeer++;
      report.lastCloseMs = Date.now() - started;
    }
  };

  let next = 0;
  const worker = async () => {
    while (next < Number(count)) {
      next++;
      try {
        const conn = await Deno.connect({ hostname: host, port: Number(port) });
        await conn.write(bytes);
        report.connected++;
        open.add(conn);
        holds.push(hold(conn));
      } catch {
        report.failedToConnect++;
      }
    }
  };
  await Promise.all(Array.from({ length: Number(concurrency) }, worker));
  const ended = Promise.all(holds);
  // Whatever is still open at the deadline was held too long: count it, then close it.
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    ended,
    new Promise((resolve) => timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))),
  ]);
  clearTimeout(timer);
  report.stillOpen = open.size;
  for (const conn of [...open]) {
    open.delete(conn);
    conn.close();
  }
  await ended;
  console.log(JSON.stringify(report));
}
