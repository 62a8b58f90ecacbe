import assert from "node:assert/strict";
import { fdSymbolOf, rawFdOf } from "../ffi/conn_fd.ts";
import { KernelRelay } from "../ffi/kernel_relay.ts";
import { openLibc } from "../ffi/libc.ts";

const libcPath = openLibc().path;

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array) {
  for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
}

async function readAll(conn: Deno.Conn, limit = 1 << 30): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(65536);
  let total = 0;
  try {
    for (let n = await conn.read(buf); n !== null && total < limit; n = await conn.read(buf)) {
      parts.push(buf.slice(0, n));
      total += n;
    }
  } catch {
    // A reset ends the stream too.
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) out.set(p, (at += p.length) - p.length);
  return out;
}

/** client ⇄ [accepted: Deno fd] relay [upstream: kernel fd] ⇄ server */
async function setUp(relay: KernelRelay) {
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
  const accepted = await front.accept();
  const fd = rawFdOf(accepted, fdSymbolOf(accepted)!)!;
  const upstream = await relay.connect("127.0.0.1", back.addr.port, 5000);
  assert.ok(upstream.ok);
  const server = await back.accept();
  front.close();
  back.close();
  return { client, accepted, fd, upstreamFd: upstream.fd, server };
}

Deno.test("kernel relay: 16 MiB each way at once, byte for byte, counted, half-close passed on", async () => {
  const relay = new KernelRelay(libcPath);
  const { client, accepted, fd, upstreamFd, server } = await setUp(relay);
  const first = new TextEncoder().encode("first flight ");
  const upData = random(16 << 20);
  const downData = random(16 << 20);
  const done = relay.relay(fd, upstreamFd, first, { idleTimeoutMs: 10_000 });
  const [gotUp, gotDown] = await Promise.all([
    readAll(server),
    readAll(client),
    writeAll(client, upData).then(() => client.closeWrite()),
    writeAll(server, downData).then(() => server.closeWrite()),
  ]);
  const result = await done;
  accepted.close();
  client.close();
  server.close();
  assert.equal(gotUp.length, first.length + upData.length);
  assert.deepEqual(gotUp.subarray(0, first.length), first);
  assert.equal(await sha256(gotUp.subarray(first.length)), await sha256(upData));
  assert.equal(await sha256(gotDown), await sha256(downData));
  assert.deepEqual(result, { up: first.length + upData.length, down: downData.length });
  assert.equal(relay.size, 0);
});

Deno.test("kernel relay: after the client's FIN the answer still flows (half-close)", async () => {
  const relay = new KernelRelay(libcPath);
  const { client, accepted, fd, upstreamFd, server } = await setUp(relay);
  const done = relay.relay(fd, upstreamFd, new Uint8Array(0), { idleTimeoutMs: 10_000 });
  await writeAll(client, new TextEncoder().encode("request"));
  await client.closeWrite();
  const request = await readAll(server); // EOF arrives only after the FIN is passed on
  assert.equal(new TextDecoder().decode(request), "request");
  const answer = random(1 << 20);
  await writeAll(server, answer);
  await server.closeWrite();
  assert.equal(await sha256(await readAll(client)), await sha256(answer));
  const result = await done;
  assert.equal(result.error, undefined);
  accepted.close();
  client.close();
  server.close();
});

Deno.test("kernel relay: idle deadline, abort and a peer reset each end it with a reason", async () => {
  const relay = new KernelRelay(libcPath);
  {
    const { client, accepted, fd, upstreamFd, server } = await setUp(relay);
    const result = await relay.relay(fd, upstreamFd, new Uint8Array(0), { idleTimeoutMs: 300 });
    assert.equal(result.error, "idle_timeout");
    assert.equal((await readAll(server)).length, 0, "the upstream socket was closed");
    accepted.close();
    client.close();
    server.close();
  }
  {
    const { client, accepted, fd, upstreamFd, server } = await setUp(relay);
    const stop = new AbortController();
    const done = relay.relay(fd, upstreamFd, new Uint8Array(0), {
      idleTimeoutMs: 10_000,
      signal: stop.signal,
    });
    stop.abort();
    assert.equal((await done).error, "aborted");
    accepted.close();
    client.close();
    server.close();
  }
  {
    const { client, accepted, fd, upstreamFd, server } = await setUp(relay);
    const done = relay.relay(fd, upstreamFd, new Uint8Array(0), { idleTimeoutMs: 10_000 });
    await writeAll(client, random(1 << 20));
    server.close(); // unread data: the kernel resets the connection
    const result = await done;
    assert.ok(result.error !== undefined, JSON.stringify(result));
    accepted.close();
    client.close();
  }
  assert.equal(relay.size, 0);
});

Deno.test("kernel relay: connect refused is an error word, not an exception", async () => {
  const relay = new KernelRelay(libcPath);
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  const result = await relay.connect("127.0.0.1", port, 2000);
  assert.deepEqual(result, { ok: false, error: "connect_ECONNREFUSED" });
  const v6 = await relay.connect("::1", port, 2000);
  assert.equal(v6.ok, false);
});
