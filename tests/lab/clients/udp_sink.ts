/**
 * A UDP listener for the lab's internet namespace: records every datagram that reaches it
 * (one line per datagram in the log file given first) and echoes it back.
 *
 * Usage: `udp_sink.ts LOGFILE ADDR:PORT...` (IPv6 as `[addr]:port`). The lab asserts that the
 * file stays empty: UDP 443 (QUIC) must never get through the router.
 * @module
 */

/** Splits `host:port` or `[v6]:port`. */
function parseEndpoint(text: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text);
  if (!m) throw new Error(`bad endpoint ${JSON.stringify(text)}; want ADDR:PORT or [ADDR]:PORT`);
  return { hostname: m[1], port: Number(m[2]) };
}

async function serve(logFile: string, endpoint: string): Promise<void> {
  const { hostname, port } = parseEndpoint(endpoint);
  const socket = Deno.listenDatagram({ transport: "udp", hostname, port });
  for await (const [data, remote] of socket) {
    const from = remote as Deno.NetAddr;
    await Deno.writeTextFile(
      logFile,
      `${
        new Date().toISOString()
      } ${endpoint} from=${from.hostname}:${from.port} bytes=${data.length}\n`,
      { append: true },
    );
    await socket.send(data, remote).catch(() => {});
  }
}

if (import.meta.main) {
  const [logFile, ...endpoints] = Deno.args;
  if (!logFile || endpoints.length === 0) {
    console.error("usage: udp_sink.ts LOGFILE ADDR:PORT...");
    Deno.exit(2);
  }
  await Promise.all(endpoints.map((e) => serve(logFile, e)));
}
