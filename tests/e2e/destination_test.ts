/**
 * End to end: the destination check (DST_POLICY). A client that names an allowed host but
 * dials another address must not reach that address unless the policy is `off` -- which also
 * shows that the never-reached server does detect a hit.
 */

import assert from "node:assert/strict";
import { curl } from "../lab/clients.ts";
import { run } from "../lab/command.ts";
import { type CaseContext, labTest } from "./lab_fixture.ts";

/** curl to allowed.test, but dialling the never-reached server's address. */
function misdirected(c: CaseContext, scheme: "http" | "https", family: 4 | 6) {
  const addr = family === 4 ? c.lab.t.addr.never4 : `[${c.lab.t.addr.never6}]`;
  const port = scheme === "http" ? 80 : 443;
  return curl(c.lab, `${scheme}://allowed.test/`, {
    family,
    args: ["--resolve", `allowed.test:${port}:${addr}`],
  });
}

/**
 * One curl process making `count` connections over HTTP, then `count` over HTTPS, to
 * allowed.test dialled at the never-reached server's address, back to back (the lab's DNS
 * answers live one second, so all fall within one answer's life). Their status codes.
 */
async function misdirectedBurst(c: CaseContext, count: number): Promise<number[]> {
  const never = c.lab.t.addr.never4;
  const urls = [
    ...Array(count).fill("http://allowed.test/"),
    ...Array(count).fill("https://allowed.test/"),
  ];
  const out = await c.lab.client([
    "curl",
    "--silent",
    "--max-time",
    "20",
    "--cacert",
    c.lab.pki.caCert,
    "--resolve",
    `allowed.test:80:${never}`,
    "--resolve",
    `allowed.test:443:${never}`,
    // A new connection for every URL.
    "--header",
    "Connection: close",
    "--write-out",
    "%{http_code}\n",
    ...urls.flatMap((url) => ["--output", "/dev/null", url]),
  ], { check: false, timeoutMs: 30_000 });
  return out.stdout.trim().split("\n").map(Number);
}

/**
 * `proxy_please_thread_decisions_total` once it holds still: the thread reports its decisions
 * in batches (up to 25 ms apart), so an earlier case's may still be on their way.
 */
async function settledThreadDecisions(c: CaseContext): Promise<number> {
  let last = await threadDecisions(c);
  for (let i = 0; i < 20; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = await threadDecisions(c);
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** `proxy_please_thread_decisions_total` from the proxy's /metrics. */
async function threadDecisions(c: CaseContext): Promise<number> {
  const out = await run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics"], {
    ns: c.lab.t.ns.router,
  });
  const line = out.stdout.split("\n").find((l) =>
    l.startsWith("proxy_please_thread_decisions_total ")
  );
  assert.ok(line !== undefined, "no thread decisions counter");
  return Number(line.split(" ")[1]);
}

labTest("e2e: DST_POLICY=pin connects to the allowed name's own address", [
  [
    "HTTP dialled at the wrong address is served by the name's server",
    async (c) => {
      const r = await misdirected(c, "http", 4);
      assert.equal(r.status, 200, r.error);
      assert.equal(r.body, "hello from allowed.test\n");
      assert.equal((await c.decisionFor(r.localPort))?.event, "ALLOWED");
      assert.deepEqual(await c.lab.neverHits(), []);
      assert.equal((await c.lab.serverHits(1)).length, 1);
    },
  ],
  [
    "HTTPS over IPv6 dialled at the wrong address is served by the name's server",
    async (c) => {
      const r = await misdirected(c, "https", 6);
      assert.equal(r.status, 200, r.error);
      assert.equal(r.body, "hello from allowed.test\n");
      assert.deepEqual(await c.lab.neverHits(), []);
    },
  ],
  [
    "a burst dialled at the wrong address: the relay thread pins the name's next connections too",
    async (c) => {
      const before = await settledThreadDecisions(c);
      assert.deepEqual(await misdirectedBurst(c, 3), [200, 200, 200, 200, 200, 200]);
      const { never4, server4 } = c.lab.t.addr;
      // (The previous case's lines may be logged after this one started.)
      const allowed = await c.eventsWhen(
        (e) => e.event === "ALLOWED" && String(e.dst).startsWith(`${never4}:`),
        6,
      );
      // The same line whoever decided: the dialled address, and the one connected instead.
      for (const e of allowed) {
        const port = e.proto === "HTTP" ? 80 : 443;
        assert.equal(e.dst, `${never4}:${port}`, JSON.stringify(e));
        assert.equal(e.connect, `${server4}:${port}`, JSON.stringify(e));
        assert.equal(e.host ?? e.sni, "allowed.test", JSON.stringify(e));
      }
      assert.equal(allowed.length, 6);
      assert.deepEqual(await c.lab.neverHits(), []);
      assert.equal((await c.lab.serverHits(6)).length, 6);
      // The first is resolved and decided by the main thread; the thread takes over from there.
      const onThread = (await settledThreadDecisions(c)) - before;
      assert.ok(onThread >= 1 && onThread <= 6, `${onThread} of 6 decided on the relay thread`);
      // Every one ends with one CLOSED line, with the ALLOWED line's fields and the bytes moved.
      // (Matched by the client's address and port: an earlier case's own CLOSED line may be
      // logged after this case started.)
      const peers = new Set(allowed.map((e) => e.peer));
      assert.equal(peers.size, 6);
      const closed = await c.eventsWhen((e) => e.event === "CLOSED" && peers.has(e.peer), 6);
      assert.deepEqual(new Set(closed.map((e) => e.peer)), peers);
      assert.equal(closed.length, 6);
      for (const e of closed) {
        const port = e.proto === "HTTP" ? 80 : 443;
        assert.equal(e.connect, `${server4}:${port}`, JSON.stringify(e));
        assert.equal(e.host ?? e.sni, "allowed.test", JSON.stringify(e));
        assert.ok(Number(e.up) > 0 && Number(e.down) > 0, JSON.stringify(e));
      }
    },
  ],
], { proxyEnv: { DST_POLICY: "pin" } });

labTest("e2e: DST_POLICY=strict denies a mismatched destination", [
  [
    "HTTP dialled at the wrong address is denied",
    async (c) => {
      const r = await misdirected(c, "http", 4);
      assert.notEqual(r.status, 200);
      const e = await c.decisionFor(r.localPort);
      assert.equal(e?.event, "DENIED");
      assert.equal(e?.reason, "dst_mismatch");
      assert.deepEqual(await c.lab.neverHits(), []);
      assert.deepEqual(await c.lab.serverHits(), []);
    },
  ],
  [
    "HTTPS dialled at the wrong address is denied",
    async (c) => {
      const r = await misdirected(c, "https", 4);
      assert.equal(r.status, 0);
      assert.equal((await c.decisionFor(r.localPort))?.reason, "dst_mismatch");
      assert.deepEqual(await c.lab.neverHits(), []);
    },
  ],
  [
    "a burst dialled at the wrong address: every connection denied, none by the relay thread",
    async (c) => {
      // An allowed connection first, so the name's answers are known to the thread.
      assert.equal((await curl(c.lab, "http://allowed.test/")).status, 200);
      const before = await settledThreadDecisions(c);
      assert.deepEqual(await misdirectedBurst(c, 2), [403, 403, 0, 0]);
      const denied = await c.eventsWhen((e) => e.reason === "dst_mismatch", 4);
      assert.equal(denied.length, 4, JSON.stringify(denied));
      assert.equal(await settledThreadDecisions(c), before);
      assert.deepEqual(await c.lab.neverHits(), []);
    },
  ],
], { proxyEnv: { DST_POLICY: "strict" } });

labTest("e2e: DST_POLICY=off trusts the dialled address (the never-reached server sees it)", [
  [
    "HTTP dialled at the wrong address reaches it",
    async (c) => {
      const r = await misdirected(c, "http", 4);
      assert.equal(r.status, 200, r.error);
      assert.match(r.body, /never-reached/);
      assert.equal((await c.lab.neverHits()).length, 1);
    },
  ],
], { proxyEnv: { DST_POLICY: "off" } });
