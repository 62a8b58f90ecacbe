import assert from "node:assert/strict";
import {
  AdminListenError,
  type HealthState,
  parseListenAddress,
  startAdminServer,
} from "../src/admin_server.ts";
import { CONTENT_TYPE, ProxyMetrics } from "../src/metrics.ts";

function url(addr: Deno.NetAddr, path: string): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `http://${host}:${addr.port}${path}`;
}

/** Sends raw bytes and reads until the peer closes or `deadlineMs` passes (then fails). */
async function rawExchange(
  addr: Deno.NetAddr,
  request: string,
  deadlineMs = 10_000,
): Promise<string> {
  const conn = await Deno.connect({ hostname: addr.hostname, port: addr.port });
  const timer = setTimeout(() => conn.close(), deadlineMs);
  try {
    await conn.write(new TextEncoder().encode(request));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      const text = new TextDecoder().decode(concat(chunks));
      // One complete response is enough: the head plus a body of the advertised length.
      const m = /\r\ncontent-length: (\d+)\r\n/i.exec(text);
      const headEnd = text.indexOf("\r\n\r\n");
      if (m !== null && headEnd !== -1 && text.length >= headEnd + 4 + Number(m[1])) return text;
    }
    return new TextDecoder().decode(concat(chunks));
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // already closed by the deadline or the peer
    }
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

Deno.test("parseListenAddress: accepts IPv4 and bracketed IPv6 literals", () => {
  assert.deepEqual(parseListenAddress("127.0.0.1:9090"), {
    ok: true,
    value: { hostname: "127.0.0.1", port: 9090 },
  });
  assert.deepEqual(parseListenAddress("[::1]:9090"), {
    ok: true,
    value: { hostname: "::1", port: 9090 },
  });
  assert.deepEqual(parseListenAddress("[2001:DB8::0001]:0"), {
    ok: true,
    value: { hostname: "2001:db8::1", port: 0 },
  });
  assert.deepEqual(parseListenAddress("0.0.0.0:65535"), {
    ok: true,
    value: { hostname: "0.0.0.0", port: 65535 },
  });
  assert.deepEqual(parseListenAddress("[::]:9090"), {
    ok: true,
    value: { hostname: "::", port: 9090 },
  });
});

Deno.test("parseListenAddress: errors name the input and say why", () => {
  const cases: [string, RegExp][] = [
    ["", /expected host:port/],
    ["9090", /expected host:port/],
    [":9090", /must be an IP address/],
    ["localhost:9090", /must be an IP address/],
    ["127.0.0.1", /expected host:port/],
    ["127.0.0.1:", /port "" must be/],
    ["127.0.0.1:65536", /port "65536"/],
    ["127.0.0.1:09090", /port "09090"/],
    ["127.0.0.1:-1", /port "-1"/],
    ["127.0.0.1:90 ", /port "90 "/],
    ["::1:9090", /in brackets/],
    ["[::1]9090", /expected \[IPv6\]:port/],
    ["[::1", /expected \[IPv6\]:port/],
    ["[127.0.0.1]:9090", /only for IPv6/],
    ["[fe80::1%eth0]:9090", /zone index/],
    ["256.0.0.1:9090", /must be an IP address/],
  ];
  for (const [text, re] of cases) {
    const r = parseListenAddress(text);
    assert.equal(r.ok, false, text);
    if (!r.ok) {
      assert.ok(r.reason.includes(JSON.stringify(text)), r.reason);
      assert.match(r.reason, re);
    }
  }
});

Deno.test("admin server over real HTTP: metrics, probes, methods, unknown paths", async () => {
  const metrics = new ProxyMetrics({ version: "test" });
  metrics.connection("https", "denied", "not_allowed");
  let health: HealthState = { live: true, ready: false, detail: "starting" };
  const server = await startAdminServer({
    listen: "127.0.0.1:0",
    metrics: () => metrics.render(),
    health: () => health,
  });
  try {
    assert.equal(server.addr.hostname, "127.0.0.1");
    assert.notEqual(server.addr.port, 0);

    let res = await fetch(url(server.addr, "/metrics"));
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), CONTENT_TYPE);
    assert.equal(res.headers.get("cache-control"), "no-store");
    const body = await res.text();
    assert.match(
      body,
      /^proxy_please_connections_total\{proto="https",decision="denied",reason="not_allowed"\} 1$/m,
    );

    // Rendered per scrape, not cached.
    metrics.connection("https", "denied", "not_allowed");
    res = await fetch(url(server.addr, "/metrics?x=1"));
    assert.match(await res.text(), /reason="not_allowed"\} 2$/m);

    res = await fetch(url(server.addr, "/healthz"));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok\n");

    res = await fetch(url(server.addr, "/readyz"));
    assert.equal(res.status, 503);
    assert.equal(await res.text(), "not ready: starting\n");

    health = { live: true, ready: true };
    res = await fetch(url(server.addr, "/readyz"));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ready\n");

    health = { live: true, ready: false, detail: "draining\r\nX-Injected: 1" };
    res = await fetch(url(server.addr, "/readyz"));
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("x-injected"), null);
    assert.equal(await res.text(), "not ready: draining??X-Injected: 1\n");

    health = { live: false, ready: false };
    res = await fetch(url(server.addr, "/healthz"));
    assert.equal(res.status, 503);
    assert.equal(await res.text(), "not live\n");

    res = await fetch(url(server.addr, "/metrics"), { method: "HEAD" });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), CONTENT_TYPE);
    assert.equal(await res.text(), "");

    res = await fetch(url(server.addr, "/metrics"), { method: "POST", body: "x" });
    assert.equal(res.status, 405);
    assert.equal(res.headers.get("allow"), "GET, HEAD");
    await res.body?.cancel();

    for (const path of ["/", "/metrics/", "/METRICS", "/healthz/x", "/../metrics-x"]) {
      res = await fetch(url(server.addr, path));
      assert.equal(res.status, 404, path);
      await res.body?.cancel();
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("admin server: callbacks that throw give 500/503, not a crash", async () => {
  const server = await startAdminServer({
    listen: "127.0.0.1:0",
    metrics: () => {
      throw new Error("boom");
    },
    health: () => {
      throw new Error("boom");
    },
  });
  try {
    for (
      const [path, status] of [["/metrics", 500], ["/healthz", 503], ["/readyz", 503]] as const
    ) {
      const res = await fetch(url(server.addr, path));
      assert.equal(res.status, status, path);
      assert.doesNotMatch(await res.text(), /boom/);
    }
  } finally {
    await server.shutdown();
  }
});

Deno.test("admin server answers a huge declared body without reading it", async () => {
  const server = await startAdminServer({
    listen: "127.0.0.1:0",
    metrics: () => "",
    health: () => ({ live: true, ready: true }),
  });
  try {
    // 10 GB announced, nothing sent: a server that read bodies would wait here until the deadline.
    const response = await rawExchange(
      server.addr,
      "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n\r\n",
    );
    assert.match(response, /^HTTP\/1\.1 405 /);
    const get = await rawExchange(
      server.addr,
      "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(get, /^HTTP\/1\.1 200 /);
    assert.match(get, /\r\n\r\nready\n$/);
  } finally {
    await server.shutdown();
  }
});

Deno.test("admin server: shutdown closes the port; it is idempotent; abort signal stops it", async () => {
  const opts = { metrics: () => "", health: () => ({ live: true, ready: true }) };
  const server = await startAdminServer({ listen: "127.0.0.1:0", ...opts });
  const { port } = server.addr;
  await server.shutdown();
  await server.shutdown();
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port }),
    Deno.errors.ConnectionRefused,
  );

  const ac = new AbortController();
  const second = await startAdminServer({ listen: "127.0.0.1:0", signal: ac.signal, ...opts });
  const res = await fetch(url(second.addr, "/healthz"));
  assert.equal(res.status, 200);
  await res.body?.cancel();
  ac.abort();
  await second.shutdown(); // resolves once the abort-triggered shutdown has finished
  await assert.rejects(
    Deno.connect({ hostname: "127.0.0.1", port: second.addr.port }),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test("admin server: bind errors and bad addresses reject with AdminListenError", async () => {
  const opts = { metrics: () => "", health: () => ({ live: true, ready: true }) };
  const first = await startAdminServer({ listen: "127.0.0.1:0", ...opts });
  try {
    const listen = `127.0.0.1:${first.addr.port}`;
    await assert.rejects(startAdminServer({ listen, ...opts }), (err: unknown) => {
      assert.ok(err instanceof AdminListenError);
      assert.ok(err.message.includes(listen), err.message);
      return true;
    });
  } finally {
    await first.shutdown();
  }
  await assert.rejects(startAdminServer({ listen: "localhost:9090", ...opts }), AdminListenError);
  // 198.18.0.1 is not assigned in the root namespace: binding it fails (EADDRNOTAVAIL).
  await assert.rejects(startAdminServer({ listen: "198.18.0.1:0", ...opts }), AdminListenError);
});

Deno.test("admin server on IPv6 loopback", async () => {
  const server = await startAdminServer({
    listen: "[::1]:0",
    metrics: () => "m 1\n",
    health: () => ({ live: true, ready: true }),
  });
  try {
    assert.equal(server.addr.hostname, "::1");
    const res = await fetch(url(server.addr, "/metrics"));
    assert.equal(await res.text(), "m 1\n");
  } finally {
    await server.shutdown();
  }
});
