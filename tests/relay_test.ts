import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { relay, type RelayResult } from "../src/relay.ts";
import {
  closeIfOpen,
  hasIpv6Loopback,
  readExactly,
  readToEnd,
  resetFrom,
  tcpPair,
  within,
  writeAll,
} from "./fixtures/core_net.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * client ⇄ (proxyClient | relay | proxyUpstream) ⇄ upstream, on real loopback sockets.
 * `proxyClient`/`proxyUpstream` are the ends the relay owns.
 */
async function chain(hostname = "127.0.0.1") {
  const front = await tcpPair(hostname);
  const back = await tcpPair(hostname);
  return {
    client: front.a,
    proxyClient: front.b,
    proxyUpstream: back.a,
    upstream: back.b,
    closeAll() {
      for (const c of [front.a, front.b, back.a, back.b]) closeIfOpen(c);
    },
  };
}

/** Sends `total` random bytes and returns their sha256 (hex). */
async function sendRandom(conn: Deno.Conn, total: number): Promise<string> {
  const hash = createHash("sha256");
  const chunk = new Uint8Array(256 * 1024);
  for (let sent = 0; sent < total;) {
    const n = Math.min(chunk.length, total - sent);
    for (let i = 0; i < n; i += 65536) {
      crypto.getRandomValues(chunk.subarray(i, Math.min(i + 65536, n)));
    }
    hash.update(chunk.subarray(0, n));
    await writeAll(conn, chunk.subarray(0, n));
    sent += n;
  }
  return hash.digest("hex");
}

/** Reads to EOF and returns [bytes, sha256 hex]. */
async function receiveHash(conn: Deno.Conn): Promise<[number, string]> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(256 * 1024);
  let total = 0;
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    hash.update(buffer.subarray(0, n));
    total += n;
  }
  return [total, hash.digest("hex")];
}

function assertClosedByRelay(...conns: Deno.Conn[]) {
  for (const c of conns) assert.equal(closeIfOpen(c), false, "the relay closed its socket");
}

Deno.test("relay: 64 MiB each way at once arrive intact, counted exactly", async () => {
  const SIZE = 64 * 1024 * 1024;
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    const [upSent, downSent, upGot, downGot, result] = await within(
      Promise.all([
        sendRandom(c.client, SIZE).then(async (h) => {
          await c.client.closeWrite();
          return h;
        }),
        sendRandom(c.upstream, SIZE).then(async (h) => {
          await c.upstream.closeWrite();
          return h;
        }),
        receiveHash(c.upstream),
        receiveHash(c.client),
        relayed,
      ]),
      300_000,
      "64 MiB relay",
    );
    assert.deepEqual(upGot, [SIZE, upSent], "client → upstream");
    assert.deepEqual(downGot, [SIZE, downSent], "upstream → client");
    assert.deepEqual(result, { up: SIZE, down: SIZE });
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: client half-close reaches upstream while the other direction still flows", async () => {
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    await writeAll(c.client, enc("request"));
    await c.client.closeWrite();
    // Upstream sees the request and then EOF...
    assert.equal(dec(await within(readToEnd(c.upstream), 30_000, "upstream EOF")), "request");
    // ...and can still answer, in several pieces, for as long as it likes.
    for (const piece of ["resp", "onse ", "after EOF"]) {
      await writeAll(c.upstream, enc(piece));
      assert.equal(dec(await readExactly(c.client, piece.length)), piece);
    }
    let settled = false;
    relayed.finally(() => settled = true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(settled, false, "the relay waits for the upstream's EOF too");
    await c.upstream.closeWrite();
    assert.equal(await within(c.client.read(new Uint8Array(1)), 30_000, "client EOF"), null);
    const result = await within(relayed, 30_000, "relay end");
    assert.deepEqual(result, { up: 7, down: 18 });
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: upstream half-close first works the same way round", async () => {
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    await writeAll(c.upstream, enc("banner"));
    await c.upstream.closeWrite();
    assert.equal(dec(await within(readToEnd(c.client), 30_000, "client EOF")), "banner");
    await writeAll(c.client, enc("late words"));
    assert.equal(dec(await readExactly(c.upstream, 10)), "late words");
    await c.client.closeWrite();
    assert.equal(await within(c.upstream.read(new Uint8Array(1)), 30_000, "up EOF"), null);
    assert.deepEqual(await within(relayed, 30_000, "relay end"), { up: 10, down: 6 });
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: over IPv6 loopback too", { ignore: !hasIpv6Loopback() }, async () => {
  const c = await chain("::1");
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    await writeAll(c.client, enc("v6"));
    await c.client.closeWrite();
    assert.equal(dec(await within(readToEnd(c.upstream), 30_000, "EOF")), "v6");
    await c.upstream.closeWrite();
    assert.deepEqual(await within(relayed, 30_000, "relay end"), { up: 2, down: 0 });
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: an idle connection is closed on both sides with idle_timeout", async () => {
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 200 });
    await writeAll(c.client, enc("hi"));
    assert.equal(dec(await readExactly(c.upstream, 2)), "hi");
    const result: RelayResult = await within(relayed, 30_000, "idle relay");
    assert.deepEqual(result, { up: 2, down: 0, error: "idle_timeout" });
    assert.equal(await within(c.client.read(new Uint8Array(1)), 30_000, "client EOF"), null);
    assert.equal(await within(c.upstream.read(new Uint8Array(1)), 30_000, "up EOF"), null);
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: the idle deadline counts activity in either direction", async () => {
  const c = await chain();
  try {
    // Keep bytes flowing upstream → client only, a piece every 50 ms for 40 pieces (2 s), with
    // an idle deadline of 1 s: the relay must live through the whole exchange. (A deadline
    // that ignored the down direction, or counted from the start, would end it half way.)
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 1000 });
    let ended = false;
    relayed.finally(() => ended = true);
    for (let i = 0; i < 40; i++) {
      await writeAll(c.upstream, enc("."));
      await readExactly(c.client, 1);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(ended, false, "still relaying while bytes flow");
    const result = await within(relayed, 30_000, "idle after the traffic");
    assert.deepEqual(result, { up: 0, down: 40, error: "idle_timeout" });
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: abort ends the relay at once and closes both sides", async () => {
  const c = await chain();
  try {
    const stop = new AbortController();
    const relayed = relay(c.proxyClient, c.proxyUpstream, {
      idleTimeoutMs: 600_000,
      signal: stop.signal,
    });
    await writeAll(c.client, enc("abc"));
    assert.equal(dec(await readExactly(c.upstream, 3)), "abc");
    stop.abort();
    const result = await within(relayed, 30_000, "aborted relay");
    assert.deepEqual(result, { up: 3, down: 0, error: "aborted" });
    assert.equal(await within(c.client.read(new Uint8Array(1)), 30_000, "client EOF"), null);
    assert.equal(await within(c.upstream.read(new Uint8Array(1)), 30_000, "up EOF"), null);
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: a signal aborted before the start relays nothing", async () => {
  const c = await chain();
  try {
    await writeAll(c.client, enc("never forwarded"));
    const result = await within(
      relay(c.proxyClient, c.proxyUpstream, {
        idleTimeoutMs: 600_000,
        signal: AbortSignal.abort(),
      }),
      30_000,
      "relay",
    );
    assert.deepEqual(result, { up: 0, down: 0, error: "aborted" });
    assert.equal(await within(c.upstream.read(new Uint8Array(1)), 30_000, "up EOF"), null);
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: a client reset mid-transfer ends the relay with an error, both closed", async () => {
  const c = await chain();
  let pumping = true;
  // Upstream streams without end; the client reads a little, then resets.
  const flood = (async () => {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (pumping) await writeAll(c.upstream, chunk);
    } catch {
      // The relay closed the upstream side: the flood ends here.
    }
  })();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    await readExactly(c.client, 1024 * 1024);
    await resetFrom(c.client, c.proxyClient);
    const result = await within(relayed, 30_000, "relay after reset");
    assert.equal(typeof result.error, "string", `an error: ${JSON.stringify(result)}`);
    assert.notEqual(result.error, "idle_timeout");
    assert.notEqual(result.error, "aborted");
    assert.ok(result.down >= 1024 * 1024, `down ${result.down}`);
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
    // The upstream learns of it: its flood fails or it reads EOF.
    await within(flood, 30_000, "upstream flood ends");
  } finally {
    pumping = false;
    c.closeAll();
    await flood;
  }
});

Deno.test("relay: an upstream reset mid-transfer ends the relay with an error, both closed", async () => {
  const c = await chain();
  let pumping = true;
  const flood = (async () => {
    const chunk = new Uint8Array(64 * 1024);
    try {
      while (pumping) await writeAll(c.client, chunk);
    } catch {
      // The relay closed the client side.
    }
  })();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    await readExactly(c.upstream, 1024 * 1024);
    await resetFrom(c.upstream, c.proxyUpstream);
    const result = await within(relayed, 30_000, "relay after reset");
    assert.equal(typeof result.error, "string", `an error: ${JSON.stringify(result)}`);
    assert.ok(result.up >= 1024 * 1024);
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
    await within(flood, 30_000, "client flood ends");
  } finally {
    pumping = false;
    c.closeAll();
    await flood;
  }
});

Deno.test("relay: a peer closing while the other side still sends ends with both closed", async () => {
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    // The client goes away completely (no reset: nothing unread), the upstream keeps talking.
    c.client.close();
    const chunk = new Uint8Array(64 * 1024);
    const talk = (async () => {
      try {
        for (let i = 0; i < 1000; i++) await writeAll(c.upstream, chunk);
      } catch {
        // Closed by the relay.
      }
    })();
    const result = await within(relayed, 30_000, "relay");
    await within(talk, 30_000, "upstream writes end");
    assert.equal(typeof result.error, "string", JSON.stringify(result));
    assertClosedByRelay(c.proxyClient, c.proxyUpstream);
  } finally {
    c.closeAll();
  }
});

Deno.test("relay: never rejects when its sockets are closed under it", async () => {
  const c = await chain();
  try {
    const relayed = relay(c.proxyClient, c.proxyUpstream, { idleTimeoutMs: 600_000 });
    c.proxyClient.close();
    c.proxyUpstream.close();
    const result = await within(relayed, 30_000, "relay");
    assert.equal(result.up, 0);
    assert.equal(result.down, 0);
  } finally {
    c.closeAll();
  }
});
