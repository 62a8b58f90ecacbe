import assert from "node:assert/strict";
import {
  type ForwardOptions,
  type Greeting,
  KernelRelay,
  type ListenerHandlers,
  type PlanePolicy,
  type PlaneProto,
  type PlaneSettings,
} from "../ffi/kernel_relay.ts";
import { fdSymbolOf, rawFdOf, socketAddressOf } from "../ffi/conn_fd.ts";
import { type Libc, openLibc } from "../ffi/libc.ts";
import { Admission, type Refusal } from "../src/admission.ts";
import { parseAllowlist } from "../src/allowlist.ts";
import {
  freePort,
  readExactly,
  readToEnd as readAll,
  within,
  writeAll,
} from "./fixtures/core_net.ts";
import { buildHello } from "./tls_records.ts";
import { deoptimizedIn, markerAt, optimizedIn, runTraced } from "./fixtures/v8_trace.ts";

const libcPath = openLibc().path;

const SETTINGS: PlaneSettings = {
  firstBytesTimeoutMs: 5_000,
  maxConnections: 100,
  maxConnectionsPerSource: 0,
  connectTimeoutMs: 5_000,
  idleTimeoutMs: 10_000,
};

/**
 * In enforce mode the thread may allow connections itself, with nothing pinned; none of these
 * loopback connections is redirected, so every one must still reach the greeting handler.
 */
function policy(hosts: string, audit = false): PlanePolicy {
  const parsed = parseAllowlist(hosts);
  if (!parsed.ok) throw new Error(parsed.reason);
  const { allowlist } = parsed;
  const quick = audit
    ? null
    : { allowlist, sourcePolicy: [], echDeny: false, dstPolicy: "off" as const, ownPorts: [] };
  return { allowlist, sourcePolicy: [], audit, quick };
}

const POLICY = policy("allowed.test");

const noop = () => {};
/** Handlers for a listener whose connections nobody looks at. */
const IGNORED: ListenerHandlers = {
  greeting: noop,
  refused: noop,
  acceptError: noop,
};

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function random(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

/** The ClientHello the thread parsed (fails the test when there is none). */
function helloOf(g: Greeting) {
  assert.ok(g.read.ok && "hello" in g.read, JSON.stringify(g.read));
  const hello = g.read.hello;
  assert.equal(hello.kind, "hello");
  return hello as Extract<typeof hello, { kind: "hello" }>;
}

/** Sets `TCP_CORK` on a Deno connection (through its raw fd): writes wait for a full segment. */
function cork(conn: Deno.Conn, on: boolean): void {
  const symbol = fdSymbolOf(conn);
  const fd = symbol === undefined ? undefined : rawFdOf(conn, symbol);
  assert.ok(fd !== undefined, "the connection's fd");
  const lib = Deno.dlopen(libcPath, {
    setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  });
  try {
    const IPPROTO_TCP = 6, TCP_CORK = 3;
    const value = new Uint8Array(new Int32Array([on ? 1 : 0]).buffer);
    assert.equal(lib.symbols.setsockopt(fd, IPPROTO_TCP, TCP_CORK, value, 4), 0, "TCP_CORK");
  } finally {
    lib.close();
  }
}

/**
 * Whether this process's TCP socket from local port `local` to peer port `peer` has
 * `TCP_NODELAY` set (the relay thread's sockets are this process's too); fails the test when
 * there is no such socket.
 */
function noDelayOf(local: number, peer: number): boolean {
  const libc = openLibc([libcPath]);
  try {
    return noDelayWith(libc, local, peer);
  } finally {
    libc.close();
  }
}

function noDelayWith(libc: Libc, local: number, peer: number): boolean {
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    const fd = Number(entry.name);
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    if (!target.startsWith("socket:")) continue;
    const mine = socketAddressOf(libc, fd, "getsockname");
    const theirs = socketAddressOf(libc, fd, "getpeername");
    if (!mine.ok || !theirs.ok || mine.address.port !== local || theirs.address.port !== peer) {
      continue;
    }
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    const IPPROTO_TCP = 6, TCP_NODELAY = 1;
    assert.equal(
      libc.getsockopt(
        fd,
        IPPROTO_TCP,
        TCP_NODELAY,
        new Uint8Array(value.buffer),
        length,
      ),
      0,
      "getsockopt TCP_NODELAY",
    );
    return value[0] !== 0;
  }
  throw new Error(`no socket from port ${local} to port ${peer}`);
}

/** The relay thread serving one loopback listener, with what it reported. */
interface Plane {
  relay: KernelRelay;
  admission: Admission;
  listener: Deno.TcpListener;
  refusals: { source: string; reason: Refusal }[];
  /** The next greeting (in order of arrival). */
  greeting(): Promise<Greeting>;
}

async function withPlane(
  body: (plane: Plane) => Promise<void>,
  settings: Partial<PlaneSettings> = {},
  proto: PlaneProto = "HTTPS",
): Promise<void> {
  const admission = new Admission();
  const relay = await KernelRelay.open(
    libcPath,
    admission,
    { ...SETTINGS, ...settings },
    POLICY,
    {
      tally: (tally) => {
        if (tally.onThread > 0) {
          throw new Error(`not redirected, yet allowed on the thread: ${tally.lines}`);
        }
      },
      lineFormat: "text",
    },
  );
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const arrived: Greeting[] = [];
  let waiting: ((g: Greeting) => void) | undefined;
  const plane: Plane = {
    relay,
    admission,
    listener,
    refusals: [],
    greeting: () =>
      within(
        new Promise<Greeting>((resolve) => {
          const next = arrived.shift();
          if (next !== undefined) resolve(next);
          else waiting = resolve;
        }),
        10_000,
        "greeting",
      ),
  };
  const served = relay.serve(listener, proto, {
    greeting: (g) => {
      if (waiting === undefined) arrived.push(g);
      else {
        const resolve = waiting;
        waiting = undefined;
        resolve(g);
      }
    },
    refused: (source, reason) => plane.refusals.push({ source, reason }),
    acceptError: (error) => {
      throw new Error(`accept failed: ${error}`);
    },
  });
  assert.equal(typeof served, "number", `serve: ${served}`);
  try {
    await body(plane);
  } finally {
    relay.unlisten();
    listener.close();
    await relay.close();
  }
  assert.equal(admission.active, 0, "every connection counted out");
}

/** client ⇄ [accepted by the relay thread, forwarded to a loopback upstream] ⇄ server */
async function setUp(plane: Plane, first: Uint8Array, options: Partial<ForwardOptions> = {}) {
  const back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
  await writeAll(client, first);
  const greeting = await plane.greeting();
  const done = plane.relay.forward(greeting.id, "127.0.0.1", back.addr.port, {
    connectTimeoutMs: 5_000,
    idleTimeoutMs: 10_000,
    ...options,
  });
  const server = await back.accept();
  back.close();
  return { client, server, done, greeting };
}

Deno.test("relay thread, TLS: the ClientHello is parsed there, replayed upstream, and 16 MiB each way relayed", () =>
  withPlane(async (plane) => {
    const hello = buildHello();
    const { client, server, done, greeting } = await setUp(plane, hello);
    assert.equal(greeting.source, "127.0.0.1");
    assert.equal(greeting.port, (client.localAddr as Deno.NetAddr).port);
    assert.equal(greeting.loop, false);
    // Loopback is not redirected: no conntrack entry, or one that points at the listener.
    assert.ok(!greeting.origin.ok || !greeting.origin.redirected, JSON.stringify(greeting));
    assert.equal(helloOf(greeting).serverName, "www.allowed.test");
    assert.equal(plane.admission.active, 1);

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
    server.close();
    assert.equal(gotUp.length, hello.length + upData.length);
    assert.deepEqual(gotUp.subarray(0, hello.length), hello);
    assert.equal(await sha256(gotUp.subarray(hello.length)), await sha256(upData));
    assert.equal(await sha256(gotDown), await sha256(downData));
    assert.equal(result.up, hello.length + upData.length);
    assert.equal(result.down, downData.length);
    assert.equal(result.error, undefined);
    assert.ok(result.connectMs !== undefined && result.connectMs >= 0);
    assert.equal(plane.relay.size, 0);
  }));

Deno.test("relay thread: a connection from the thread's own upstream socket is reported as a loop", () =>
  withPlane(async (plane) => {
    const hello = buildHello();
    const client = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    await writeAll(client, hello);
    const first = await plane.greeting();
    assert.equal(first.loop, false);
    // Forwarded to the listener itself: the upstream socket comes back as a new connection.
    const done = plane.relay.forward(first.id, "127.0.0.1", plane.listener.addr.port, {
      connectTimeoutMs: 5_000,
      idleTimeoutMs: 10_000,
    });
    const again = await plane.greeting();
    assert.equal(again.loop, true, "the thread's own upstream socket came back");
    assert.equal(helloOf(again).serverName, "www.allowed.test");
    plane.relay.dismiss(again.id);
    // The dismissal closed the upstream's far end; the client gets that end, then leaves.
    assert.equal((await readAll(client)).length, 0);
    client.close();
    assert.equal((await done).up, hello.length);
  }));

Deno.test("relay thread, TLS: a hello in small pieces is put together before it is parsed", () =>
  withPlane(async (plane) => {
    const hello = buildHello();
    const client = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    client.setNoDelay(true);
    for (let i = 0; i < hello.length; i += 7) {
      await writeAll(client, hello.subarray(i, i + 7));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const greeting = await plane.greeting();
    assert.equal(helloOf(greeting).serverName, "www.allowed.test");
    plane.relay.dismiss(greeting.id);
    assert.equal((await readAll(client)).length, 0, "dismissed: closed without a byte");
    client.close();
  }));

Deno.test("relay thread: the sockets it accepts and the ones it opens upstream do not wait for Nagle", () =>
  withPlane(async (plane) => {
    // The first may have been queued before the thread had the listener; the second was not.
    for (const _ of ["queued maybe", "accepted later"]) {
      const { client, server, done } = await setUp(plane, buildHello());
      const clientPort = (client.localAddr as Deno.NetAddr).port;
      const upstreamPort = (server.remoteAddr as Deno.NetAddr).port;
      const serverPort = (server.localAddr as Deno.NetAddr).port;
      assert.equal(noDelayOf(plane.listener.addr.port, clientPort), true, "accepted socket");
      assert.equal(noDelayOf(upstreamPort, serverPort), true, "upstream socket");
      client.close();
      server.close();
      await done;
    }
  }));

Deno.test("relay thread, TLS: after the client's FIN the answer still flows (half-close)", () =>
  withPlane(async (plane) => {
    const { client, server, done } = await setUp(plane, new TextEncoder().encode("request"));
    await client.closeWrite();
    const request = await readAll(server); // EOF arrives only after the FIN is passed on
    assert.equal(new TextDecoder().decode(request), "request");
    const answer = random(1 << 20);
    await writeAll(server, answer);
    await server.closeWrite();
    assert.equal(await sha256(await readAll(client)), await sha256(answer));
    assert.equal((await done).error, undefined);
    client.close();
    server.close();
  }));

Deno.test("relay thread, TLS: an answer sent with the server's FIN arrives whole, and the client's bytes still flow after it", () =>
  withPlane(async (plane) => {
    const request = new TextEncoder().encode("request");
    const { client, server, done } = await setUp(plane, request);
    assert.equal(new TextDecoder().decode(await readExactly(server, request.length)), "request");
    // Corked, the answer leaves with the FIN in one segment: the thread sees the bytes and the
    // half-close in one event, and its short read is the last one.
    const answer = random(3000);
    cork(server, true);
    await writeAll(server, answer);
    await server.closeWrite();
    assert.equal(await sha256(await readAll(client)), await sha256(answer));
    const more = random(1 << 20);
    await writeAll(client, more);
    await client.closeWrite();
    assert.equal(await sha256(await readAll(server)), await sha256(more));
    const result = await done;
    assert.equal(result.error, undefined);
    assert.equal(result.up, request.length + more.length);
    assert.equal(result.down, answer.length);
    client.close();
    server.close();
  }));

Deno.test("relay thread, TLS: idle deadline, close and a peer reset each end a relay with a reason", async () => {
  await withPlane(async (plane) => {
    const { client, server, done } = await setUp(plane, new Uint8Array([0x50]), {
      idleTimeoutMs: 300,
    });
    assert.equal((await done).error, "idle_timeout");
    assert.equal((await readAll(server)).length, 1, "the upstream socket was closed");
    assert.equal((await readAll(client)).length, 0, "the client socket was closed");
    client.close();
    server.close();

    const reset = await setUp(plane, new Uint8Array([0x50]));
    await readExactly(reset.server, 1);
    await writeAll(reset.client, random(16 << 10));
    await new Promise((resolve) => setTimeout(resolve, 200)); // relayed, never read
    reset.server.close(); // unread data: the kernel resets the connection
    await new Promise((resolve) => setTimeout(resolve, 100));
    await writeAll(reset.client, random(16 << 10)).catch(() => {}); // meets the reset upstream
    const result = await reset.done;
    assert.ok(result.error !== undefined, JSON.stringify(result));
    reset.client.close();
  });
  await withPlane(async (plane) => {
    const { client, server, done } = await setUp(plane, new Uint8Array([0x50]));
    await plane.relay.close();
    assert.equal((await done).error, "aborted");
    client.close();
    server.close();
  });
});

Deno.test("relay thread, TLS: a refused connect is an error word, and the client is closed", () =>
  withPlane(async (plane) => {
    const port = freePort();
    for (const address of ["127.0.0.1", "::1"]) {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
      await writeAll(client, new Uint8Array([1]));
      const greeting = await plane.greeting();
      const before = Date.now();
      const { endedAt, ...result } = await plane.relay.forward(greeting.id, address, port, {
        connectTimeoutMs: 2_000,
        idleTimeoutMs: 2_000,
      });
      assert.deepEqual(result, { up: 1, down: 0, error: "connect_ECONNREFUSED" });
      // The thread's own time of the end, not when its report arrived.
      assert.ok(endedAt !== undefined && endedAt >= before && endedAt <= Date.now());
      assert.equal((await readAll(client)).length, 0);
      client.close();
    }
  }));

Deno.test("relay thread, TLS: silence, an early close and an unknown answer each end a greeting", () =>
  withPlane(async (plane) => {
    const silent = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    const started = Date.now();
    let greeting = await plane.greeting();
    assert.deepEqual(greeting.read, { ok: false, reason: "timeout" });
    assert.ok(Date.now() - started >= 250, "not before the first-bytes deadline");
    assert.equal((await readAll(silent)).length, 0, "closed by the thread");
    silent.close();

    const quitter = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    quitter.close();
    greeting = await plane.greeting();
    assert.deepEqual(greeting.read, { ok: false, reason: "closed" });

    // A forward for a connection that is gone is answered, not left pending.
    const result = await within(
      plane.relay.forward(greeting.id, "127.0.0.1", 9, {
        connectTimeoutMs: 1_000,
        idleTimeoutMs: 1_000,
      }),
      5_000,
      "forward of an ended greeting",
    );
    assert.equal(result.error, "closed");
  }, { firstBytesTimeoutMs: 300 }));

Deno.test("relay thread, TLS: the shared limits refuse at the door, counted across threads", () =>
  withPlane(async (plane) => {
    // One connection is held by "the main thread": the plane has room for one more.
    assert.equal(plane.admission.admit("198.18.1.10", 2, 0), null);
    const first = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    await writeAll(first, new Uint8Array([0x50]));
    const greeting = await plane.greeting();
    const second = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
    assert.equal((await within(readAll(second), 5_000, "refused connection")).length, 0);
    second.close();
    // Refusals feed only logs and metrics: they reach the main thread with a later batch.
    await within(
      (async () => {
        while (plane.refusals.length === 0) await new Promise((r) => setTimeout(r, 5));
      })(),
      5_000,
      "the refusal report",
    );
    assert.deepEqual(plane.refusals, [{ source: "127.0.0.1", reason: "too_many_connections" }]);
    plane.relay.dismiss(greeting.id);
    await readAll(first);
    first.close();
    plane.admission.release("198.18.1.10");
  }, { maxConnections: 2 }));

Deno.test("relay thread, TLS: after close, forwards end as aborted and listeners are not taken", async () => {
  const relay = await KernelRelay.open(libcPath, new Admission(), SETTINGS, POLICY);
  await relay.close();
  const result = await relay.forward(1, "127.0.0.1", 9, {
    connectTimeoutMs: 1_000,
    idleTimeoutMs: 1_000,
  });
  assert.equal(result.error, "aborted");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.equal(relay.serve(listener, "HTTPS", IGNORED), "relay_stopped");
  } finally {
    listener.close();
  }
});

Deno.test("relay thread, TLS: once unlistened and closed in Deno, the port refuses connections", async () => {
  const relay = await KernelRelay.open(libcPath, new Admission(), SETTINGS, POLICY);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  try {
    const id = relay.serve(listener, "HTTPS", IGNORED);
    assert.equal(typeof id, "number");
    relay.unlisten();
    listener.close();
    // The thread's duplicate is closed once the command has arrived.
    await within(
      (async () => {
        for (;;) {
          try {
            (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          } catch (error) {
            if (error instanceof Deno.errors.ConnectionRefused) return;
            // Accepted into the closing listener's queue, then reset: try again.
            if (!(error instanceof Deno.errors.ConnectionReset)) throw error;
          }
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })(),
      5_000,
      "refusal after unlisten",
    );
  } finally {
    await relay.close();
  }
});

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
const ascii = (s: string) => new TextEncoder().encode(s);

/** Reads from `conn` until `marker` has been seen (or EOF); everything read. */
async function readUntil(conn: Deno.Conn, marker: string): Promise<string> {
  let got = "";
  const buf = new Uint8Array(65536);
  while (!got.includes(marker)) {
    const n = await conn.read(buf);
    if (n === null) break;
    got += text(buf.subarray(0, n));
  }
  return got;
}

Deno.test("relay thread, HTTP: a later request for another host on a kept-alive connection is refused there", () =>
  withPlane(
    async (plane) => {
      const events: unknown[] = [];
      const back = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const client = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
      await writeAll(client, ascii("GET /one HTTP/1.1\r\nHost: allowed.test\r\n\r\n"));
      const greeting = await plane.greeting();
      assert.equal(greeting.proto, "HTTP");
      assert.ok(greeting.read.ok && "head" in greeting.read, JSON.stringify(greeting.read));
      assert.equal(greeting.read.head.kind === "head" && greeting.read.head.host, "allowed.test");
      const done = plane.relay.forward(greeting.id, "127.0.0.1", back.addr.port, {
        connectTimeoutMs: 5_000,
        idleTimeoutMs: 10_000,
        check: { pinnedName: "allowed.test" },
        onEvent: (event) => events.push(event),
      });
      const server = await back.accept();
      back.close();
      assert.match(await readUntil(server, "\r\n\r\n"), /^GET \/one HTTP\/1.1\r\n/);
      await writeAll(server, ascii("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
      assert.match(await readUntil(client, "ok"), /^HTTP\/1.1 200 OK/);

      await writeAll(client, ascii("GET /two HTTP/1.1\r\nHost: blocked.test\r\n\r\n"));
      // The upstream gets a half-close and nothing of the refused request.
      assert.equal((await readAll(server)).length, 0);
      server.close();
      const answer = text(await readAll(client));
      assert.match(answer, /^HTTP\/1.1 403 /);
      client.close();
      const result = await done;
      assert.equal(result.error, undefined);
      assert.deepEqual(events, [{ kind: "refused", reason: "not_allowed", host: "blocked.test" }]);
    },
    {},
    "HTTP",
  ));

Deno.test("relay thread, HTTP: a refusal is answered, a head too large is the parser's verdict, an unreachable upstream gets 502", () =>
  withPlane(
    async (plane) => {
      const denied = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
      await writeAll(denied, ascii("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n"));
      let greeting = await plane.greeting();
      plane.relay.refuse(greeting.id, ascii("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"));
      assert.match(text(await readAll(denied)), /^HTTP\/1.1 403 Forbidden\r\n/);
      denied.close();

      const large = await Deno.connect({ hostname: "127.0.0.1", port: plane.listener.addr.port });
      const head = `GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Filler: ${"a".repeat(16384)}\r\n\r\n`;
      await writeAll(large, ascii(head)).catch(() => {}); // the answer may come before the end
      greeting = await plane.greeting();
      // The parser's own verdict, at its bound: the main thread answers it like any denial.
      assert.ok(greeting.read.ok && "head" in greeting.read, JSON.stringify(greeting.read));
      assert.deepEqual(greeting.read.head, { kind: "invalid", reason: "too_large", status: 431 });
      plane.relay.refuse(greeting.id, ascii("HTTP/1.1 431 Too Large\r\nContent-Length: 0\r\n\r\n"));
      assert.match(text(await readAll(large)), /^HTTP\/1.1 431 /);
      large.close();

      const stranded = await Deno.connect({
        hostname: "127.0.0.1",
        port: plane.listener.addr.port,
      });
      await writeAll(stranded, ascii("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"));
      greeting = await plane.greeting();
      const result = await plane.relay.forward(greeting.id, "127.0.0.1", freePort(), {
        connectTimeoutMs: 2_000,
        idleTimeoutMs: 2_000,
        check: { pinnedName: "allowed.test" },
      });
      assert.equal(result.error, "connect_ECONNREFUSED");
      assert.match(text(await readAll(stranded)), /^HTTP\/1.1 502 /);
      stranded.close();
    },
    {},
    "HTTP",
  ));

Deno.test("relay thread: its optimized code, and the main thread's, outlive the idle collections once nothing is open", async () => {
  // V8's optimized code refers weakly to the hidden classes it was made for, and many of a
  // connection's live only while an object has them: without the exemplars (the thread's, and the
  // main thread's last batch of reports), a collection run when nothing is open threw away the
  // optimized code of the whole path.
  const text = await runTraced(
    new URL("./fixtures/relay_collection_fixture.ts", import.meta.url),
    ["--allow-all"],
  );
  const quiet = markerAt(text, "QUIET");
  const collected = markerAt(text, "COLLECTED");
  const mainCollected = markerAt(text, "MAIN COLLECTED");
  assert.ok(quiet > 0 && collected > quiet && mainCollected > collected, "the markers printed");
  // Only then does the check below say anything: the path was optimized before.
  const optimized = optimizedIn(text.slice(0, quiet));
  for (
    const name of ["readFirst", "relay", "checkClient", "finish", "KernelRelay.#worker.onmessage"]
  ) {
    assert.ok(optimized.has(name), `${name} optimized`);
  }
  assert.deepEqual(deoptimizedIn(text.slice(quiet, mainCollected)), []);
});
