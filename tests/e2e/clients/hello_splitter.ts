/**
 * A one-connection TCP relay that re-cuts the client's first TLS record (the ClientHello)
 * before passing it on, then relays everything else untouched in both directions.
 *
 * Usage: `hello_splitter.ts MODE TARGET_HOST TARGET_PORT` with MODE `segments` (the record
 * goes out in several TCP segments: 1 byte, the rest of the header, then small pieces) or
 * `records` (the handshake message is re-wrapped into several TLS records, the first holding
 * only 4 bytes). Prints the local port it listens on (127.0.0.1), then serves one connection.
 * A real client (curl) pointed at it must still get a working TLS session through the proxy.
 * @module
 */

import { concat, fragment } from "../../tls_records.ts";

const MAX_RECORD = 5 + 16384;

async function readExactly(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let at = 0;
  while (at < n) {
    const got = await conn.read(out.subarray(at));
    if (got === null) throw new Error(`client closed after ${at} of ${n} bytes`);
    at += got;
  }
  return out;
}

/** The pieces to send for `mode`, from one whole ClientHello record. */
export function recut(mode: string, rec: Uint8Array): Uint8Array[] {
  if (mode === "segments") {
    const pieces = [rec.subarray(0, 1), rec.subarray(1, 5)];
    for (let at = 5; at < rec.length; at += 100) pieces.push(rec.subarray(at, at + 100));
    return pieces;
  }
  if (mode === "records") {
    const handshake = rec.subarray(5);
    const version = (rec[1] << 8) | rec[2];
    return [fragment(handshake, [4, 64, 100_000], version)];
  }
  throw new Error(`unknown mode ${JSON.stringify(mode)}; want segments or records`);
}

async function pipe(from: Deno.Conn, to: Deno.TcpConn): Promise<void> {
  const buf = new Uint8Array(65536);
  try {
    while (true) {
      const n = await from.read(buf);
      if (n === null) break;
      let at = 0;
      while (at < n) at += await to.write(buf.subarray(at, n));
    }
    await to.closeWrite().catch(() => {});
  } catch {
    // A reset on either side ends the relay; the client reports what it saw.
  }
}

if (import.meta.main) {
  const [mode, host, portText] = Deno.args;
  const deadline = setTimeout(() => Deno.exit(3), 60_000);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(listener.addr.port);
  const client = await listener.accept();
  listener.close();
  const header = await readExactly(client, 5);
  const length = (header[3] << 8) | header[4];
  if (header[0] !== 22 || 5 + length > MAX_RECORD) {
    console.error("first record is not a handshake record");
    Deno.exit(1);
  }
  const rec = concat(header, await readExactly(client, length));
  const upstream = await Deno.connect({ hostname: host, port: Number(portText) });
  upstream.setNoDelay(true);
  for (const [i, piece] of recut(mode, rec).entries()) {
    // A pause lets each piece leave as its own segment even with Nagle off.
    if (i > 0) await new Promise((r) => setTimeout(r, 30));
    await upstream.write(piece);
  }
  await Promise.all([pipe(client, upstream), pipe(upstream, client as Deno.TcpConn)]);
  clearTimeout(deadline);
  Deno.exit(0);
}
