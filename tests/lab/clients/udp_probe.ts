/**
 * Sends one UDP datagram and reports whether anything came back before a deadline.
 *
 * Usage: `udp_probe.ts ADDR PORT [WAIT_MS]`; prints `reply` or `no-reply` (exit 0 either
 * way; exit 2 on bad usage). Used for the "UDP 443 is not let through" observation.
 * @module
 */

if (import.meta.main) {
  const [hostname, portText, waitText = "1500"] = Deno.args;
  const port = Number(portText);
  if (!hostname || !Number.isInteger(port)) {
    console.error("usage: udp_probe.ts ADDR PORT [WAIT_MS]");
    Deno.exit(2);
  }
  const v6 = hostname.includes(":");
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: v6 ? "::" : "0.0.0.0",
    port: 0,
  });
  const payload = new TextEncoder().encode("proxy-please lab udp probe");
  let answer = "no-reply";
  try {
    await socket.send(payload, { transport: "udp", hostname, port });
    const reply = socket.receive().then(() => "reply", () => "no-reply (error)");
    const timeout = new Promise<string>((r) => setTimeout(() => r("no-reply"), Number(waitText)));
    answer = await Promise.race([reply, timeout]);
  } catch (error) {
    // An ICMP unreachable surfaces as an error on send/receive: it still means "no reply".
    answer = `no-reply (${error instanceof Error ? error.name : "error"})`;
  }
  console.log(answer);
  socket.close();
  Deno.exit(0);
}
