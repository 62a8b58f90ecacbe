import assert from "node:assert/strict";
import { fdSymbolOf, rawFdOf } from "../ffi/conn_fd.ts";
import { KernelRelay, type KernelRelayOptions } from "../ffi/kernel_relay.ts";
import { openLibc } from "../ffi/libc.ts";
import { freePort, readToEnd as readAll, tcpPair, writeAll } from "./fixtures/core_net.ts";

const libcPath = openLibc().path;
const fdSymbol = await (async () => {
  const { a, b } = await tcpPair();
  const symbol = fdSymbolOf(b)!;
  a.close();
  b.close();
  return symbol;
})();

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** client ⇄ [accepted: taken from Deno] relay thread [its own upstream socket] ⇄ server */
async function setUp(
  relay: KernelRelay,
  first: Uint8Array,
  options: Partial<KernelRelayOptions> = {},
) {
  const back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { a: client, b: accepted } = await tcpPair();
  const fd = rawFdOf(accepted, fdSymbol)!;
  let local = "";
  const done = relay.relay(fd, () => accepted.close(), "127.0.0.1", back.addr.port, first, {
    connectTimeoutMs: 5_000,
    idleTimeoutMs: 10_000,
    onConnected: (l) => local = l,
    ...options,
  });
  const server = await back.accept();
  back.close();
  return { client, server, done, local: () => local };
}

async function withRelay(body: (relay: KernelRelay) => Promise<void>): Promise<void> {
  const relay = await KernelRelay.open(libcPath, fdSymbol);
  try {
    await body(relay);
  } finally {
    await relay.close();
  }
}

Deno.test("kernel relay: 16 MiB each way at once, byte for byte, counted, half-close passed on", () =>
  withRelay(async (relay) => {
    const first = new TextEncoder().encode("first flight ");
    const { client, server, done, local } = await setUp(relay, first);
    const upData = random(16 << 20);
    const downData = random(16 << 20);
    const [gotUp, gotDown] = await Promise.all([
      readAll(server),
      readAll(client),
      writeAll(client, upData).then(() => client.closeWrite()),
      writeAll(server, downData).then(() => server.closeWrite()),
    ]);
    const result = await done;
    client.close();
    assert.equal(local(), `127.0.0.1:${(server.remoteAddr as Deno.NetAddr).port}`);
    server.close();
    assert.equal(gotUp.length, first.length + upData.length);
    assert.deepEqual(gotUp.subarray(0, first.length), first);
    assert.equal(await sha256(gotUp.subarray(first.length)), await sha256(upData));
    assert.equal(await sha256(gotDown), await sha256(downData));
    assert.deepEqual(result, { up: first.length + upData.length, down: downData.length });
    assert.equal(relay.size, 0);
  }));

Deno.test("kernel relay: after the client's FIN the answer still flows (half-close)", () =>
  withRelay(async (relay) => {
    const { client, server, done } = await setUp(relay, new Uint8Array(0));
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
    client.close();
    server.close();
  }));

Deno.test("kernel relay: idle deadline, abort and a peer reset each end it with a reason", () =>
  withRelay(async (relay) => {
    {
      const { client, server, done } = await setUp(relay, new Uint8Array(0), {
        idleTimeoutMs: 300,
      });
      assert.equal((await done).error, "idle_timeout");
      assert.equal((await readAll(server)).length, 0, "the upstream socket was closed");
      assert.equal((await readAll(client)).length, 0, "the client socket was closed");
      client.close();
      server.close();
    }
    {
      const stop = new AbortController();
      const { client, server, done } = await setUp(relay, new Uint8Array(0), {
        signal: stop.signal,
      });
      stop.abort();
      assert.equal((await done).error, "aborted");
      client.close();
      server.close();
    }
    {
      const { client, server, done } = await setUp(relay, new Uint8Array(0));
      await writeAll(client, random(16 << 10));
      await new Promise((resolve) => setTimeout(resolve, 200)); // relayed, never read
      server.close(); // unread data: the kernel resets the connection
      await new Promise((resolve) => setTimeout(resolve, 100));
      await writeAll(client, random(16 << 10)).catch(() => {}); // meets the reset upstream
      const result = await done;
      assert.ok(result.error !== undefined, JSON.stringify(result));
      client.close();
    }
    assert.equal(relay.size, 0);
  }));

Deno.test("kernel relay: a refused connect is an error word, and the client is closed", () =>
  withRelay(async (relay) => {
    const port = freePort();
    for (const address of ["127.0.0.1", "::1"]) {
      const { a: client, b: accepted } = await tcpPair();
      const result = await relay.relay(
        rawFdOf(accepted, fdSymbol)!,
        () => accepted.close(),
        address,
        port,
        new Uint8Array([1]),
        { connectTimeoutMs: 2_000, idleTimeoutMs: 2_000 },
      );
      assert.deepEqual(result, { up: 1, down: 0, error: "connect_ECONNREFUSED" });
      assert.equal((await readAll(client)).length, 0);
      client.close();
    }
  }));

Deno.test("kernel relay: after close, relays are refused and the socket is still released", async () => {
  const relay = await KernelRelay.open(libcPath, fdSymbol);
  await relay.close();
  const { a: client, b: accepted } = await tcpPair();
  let released = false;
  const result = await relay.relay(
    rawFdOf(accepted, fdSymbol)!,
    () => {
      released = true;
      accepted.close();
    },
    "127.0.0.1",
    9,
    new Uint8Array(0),
    { connectTimeoutMs: 1_000, idleTimeoutMs: 1_000 },
  );
  assert.equal(result.error, "aborted");
  assert.ok(released);
  client.close();
});
