/**
 * End to end: the allowlist decides, through real iptables REDIRECT, a real proxy process and
 * real servers, for HTTP and HTTPS, IPv4 and IPv6, wildcard edges, missing Host and SNI.
 * A denied request must never reach any server, and the proxy must log each decision.
 */

import assert from "node:assert/strict";
import { curl, sClient } from "../lab/clients.ts";
import { type CaseContext, isDecision, labTest } from "./lab_fixture.ts";
import { b64, rawClient } from "./raw.ts";

async function expectAllowed(c: CaseContext, url: string, family: 4 | 6, name: string) {
  const r = await curl(c.lab, url, { family });
  assert.equal(r.status, 200, `${url}: ${r.error}`);
  assert.equal(r.body, `hello from ${name}\n`);
  const e = await c.decisionFor(r.localPort);
  assert.ok(e, `no proxy decision for ${url}`);
  assert.equal(e.event, "ALLOWED");
  const proto = url.startsWith("https:") ? "HTTPS" : "HTTP";
  assert.equal(e.proto, proto);
  assert.equal(proto === "HTTPS" ? e.sni : e.host, name);
  const server = family === 4 ? c.lab.t.addr.server4 : `[${c.lab.t.addr.server6}]`;
  assert.equal(e.dst, `${server}:${proto === "HTTPS" ? 443 : 80}`);
  const client = family === 4 ? c.lab.t.addr.client4 : `[${c.lab.t.addr.client6}]`;
  assert.equal(e.peer, `${client}:${r.localPort}`);
  assert.equal((await c.lab.serverHits(1)).length, 1, "the server saw exactly one request");
  assert.deepEqual(await c.lab.neverHits(), []);
}

async function expectDenied(
  c: CaseContext,
  url: string,
  family: 4 | 6,
  name: string,
  reason: string,
) {
  const r = await curl(c.lab, url, { family });
  assert.notEqual(r.status, 200, `${url} got through: ${r.body}`);
  assert.ok(!r.body.includes("hello from") && !r.body.includes("never-reached"));
  if (url.startsWith("https:")) assert.equal(r.status, 0, "no TLS session for a denied name");
  const e = await c.decisionFor(r.localPort);
  assert.ok(e, `no proxy decision for ${url}`);
  assert.equal(e.event, "DENIED");
  assert.equal(e.reason, reason);
  assert.equal(url.startsWith("https:") ? e.sni : e.host, name);
  assert.deepEqual(await c.lab.serverHits(), [], "a denied request reached the server");
  assert.deepEqual(
    await c.lab.neverHits(),
    [],
    "a denied request reached the never-reached server",
  );
}

labTest("e2e: allowlist decisions through the real router", [
  ["HTTP allowed, IPv4", (c) => expectAllowed(c, "http://allowed.test/", 4, "allowed.test")],
  ["HTTP allowed, IPv6", (c) => expectAllowed(c, "http://allowed.test/", 6, "allowed.test")],
  ["HTTPS allowed, IPv4", (c) => expectAllowed(c, "https://allowed.test/", 4, "allowed.test")],
  ["HTTPS allowed, IPv6", (c) => expectAllowed(c, "https://allowed.test/", 6, "allowed.test")],
  [
    "HTTP denied, IPv4 (403, nothing reaches the server)",
    async (c) => {
      await expectDenied(c, "http://blocked.test/", 4, "blocked.test", "not_allowed");
      const r = await curl(c.lab, "http://blocked.test/", { family: 4 });
      assert.equal(r.status, 403);
    },
  ],
  [
    "HTTP denied, IPv6",
    (c) => expectDenied(c, "http://blocked.test/", 6, "blocked.test", "not_allowed"),
  ],
  [
    "HTTPS denied, IPv4",
    (c) => expectDenied(c, "https://blocked.test/", 4, "blocked.test", "not_allowed"),
  ],
  [
    "HTTPS denied, IPv6",
    (c) => expectDenied(c, "https://blocked.test/", 6, "blocked.test", "not_allowed"),
  ],
  [
    "wildcard: one label below is allowed (HTTPS)",
    (c) => expectAllowed(c, "https://www.wild.test/", 4, "www.wild.test"),
  ],
  [
    "wildcard: one label below is allowed (HTTP, IPv6)",
    (c) => expectAllowed(c, "http://www.wild.test/", 6, "www.wild.test"),
  ],
  [
    "wildcard: two labels below are denied",
    (c) => expectDenied(c, "https://a.b.wild.test/", 4, "a.b.wild.test", "not_allowed"),
  ],
  [
    "wildcard: the apex is denied (HTTP)",
    (c) => expectDenied(c, "http://wild.test/", 4, "wild.test", "not_allowed"),
  ],
  [
    "wildcard: the apex is denied (HTTPS)",
    (c) => expectDenied(c, "https://wild.test/", 4, "wild.test", "not_allowed"),
  ],
  [
    "names compare case-insensitively",
    async (c) => {
      const r = await curl(c.lab, "http://allowed.test/", {
        family: 4,
        args: ["-H", "Host: ALLOWED.Test"],
      });
      assert.equal(r.status, 200, r.error);
      const e = await c.decisionFor(r.localPort);
      assert.equal(e?.event, "ALLOWED");
    },
  ],
  [
    "a look-alike suffix is denied (notallowed.test via Host)",
    async (c) => {
      const r = await curl(c.lab, "http://allowed.test/", {
        family: 4,
        args: ["-H", "Host: notallowed.test"],
      });
      assert.notEqual(r.status, 200);
      const e = await c.decisionFor(r.localPort);
      assert.equal(e?.event, "DENIED");
      assert.deepEqual(await c.lab.serverHits(), []);
    },
  ],
  [
    "missing Host is denied (HTTP/1.0 without Host)",
    async (c) => {
      const r = await rawClient(c.lab, {
        host: c.lab.t.addr.server4,
        port: 80,
        parts: [b64("GET / HTTP/1.0\r\nUser-Agent: e2e\r\n\r\n")],
      });
      assert.ok(r.connected);
      assert.ok(!r.statusLine?.includes(" 200 "), `got ${r.statusLine}`);
      const e = await c.decisionFor(r.localPort);
      assert.equal(e?.event, "DENIED");
      assert.equal(e?.reason, "no_host");
      assert.deepEqual(await c.lab.serverHits(), []);
    },
  ],
  [
    "SNI absent is denied (openssl s_client -noservername)",
    async (c) => {
      const r = await sClient(c.lab, `${c.lab.t.addr.server4}:443`, null);
      assert.equal(r.handshake, false, r.detail);
      const e = await c.waitForEvent(isDecision);
      assert.equal(e?.event, "DENIED");
      assert.equal(e?.proto, "HTTPS");
      assert.equal(e?.reason, "no_sni");
      assert.equal(e?.sni, undefined);
    },
  ],
  [
    "openssl s_client to an allowed name completes a verified TLS 1.3 handshake",
    async (c) => {
      const r = await sClient(c.lab, "allowed.test:443", "allowed.test");
      assert.ok(r.handshake, r.detail);
      assert.equal(r.protocol, "TLSv1.3");
      const e = await c.waitForEvent(isDecision);
      assert.equal(e?.event, "ALLOWED");
      assert.equal(e?.sni, "allowed.test");
    },
  ],
  [
    "a port that is not redirected gets nowhere (and the proxy sees nothing)",
    async (c) => {
      const port = c.lab.t.unredirectedPort;
      for (const family of [4, 6] as const) {
        const r = await curl(c.lab, `http://allowed.test:${port}/`, { family, maxTime: 3 });
        assert.equal(r.status, 0, `port ${port} answered over IPv${family}: ${r.body}`);
      }
      assert.deepEqual((await c.events()).filter(isDecision), []);
      assert.deepEqual(await c.lab.neverHits(), []);
    },
  ],
  [
    "UDP 443 (QUIC) gets no reply and never reaches the server",
    async (c) => {
      const { clientScript, denoClient } = await import("../lab/clients.ts");
      for (const addr of [c.lab.t.addr.server4, c.lab.t.addr.server6]) {
        const r = await denoClient(c.lab, clientScript("lab/clients/udp_probe.ts"), [
          addr,
          "443",
          "1500",
        ]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stdout, /^no-reply/);
      }
      assert.deepEqual(await c.lab.udpHits(), []);
    },
  ],
]);
