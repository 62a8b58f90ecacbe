/**
 * End to end: real ClientHellos the way networks deliver them -- split across TCP segments,
 * split across TLS records, and post-quantum sized (Chromium's X25519MLKEM768 hello, ~2 KB) --
 * must be read, decided on and relayed intact, so the server answers with a ServerHello and,
 * for a real client, a working TLS session results.
 */

import assert from "node:assert/strict";
import { fragment, handshakeBytes } from "../tls_records.ts";
import { type CaseContext, isDecision, labTest } from "./lab_fixture.ts";
import { b64, capture, curlThroughSplitter, rawClient } from "./raw.ts";

/** Sends `parts` to the server's TLS port through the router; returns the raw client's report. */
function sendHello(c: CaseContext, parts: Uint8Array[], family: 4 | 6 = 4) {
  const host = family === 4 ? c.lab.t.addr.server4 : c.lab.t.addr.server6;
  return rawClient(c.lab, {
    host,
    port: 443,
    parts: parts.map((p) => b64(p)),
    // A ServerHello record header and its handshake type are enough.
    stopAfterBytes: 6,
    readDeadlineMs: 5_000,
  });
}

/** Cuts `bytes` at the given offsets (in any order). */
function cut(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const points = [0, ...[...offsets].sort((a, b) => a - b), bytes.length];
  return points.slice(1).map((end, i) => bytes.subarray(points[i], end));
}

async function expectServerHello(
  c: CaseContext,
  parts: Uint8Array[],
  sni: string,
  family: 4 | 6 = 4,
) {
  const r = await sendHello(c, parts, family);
  assert.ok(r.connected, r.error);
  const log = JSON.stringify(await c.events());
  assert.ok(
    r.serverHello,
    `no ServerHello came back (received ${r.received} bytes: ${r.head}, ${r.end}); proxy: ${log}`,
  );
  const e = await c.decisionFor(r.localPort);
  assert.equal(e?.event, "ALLOWED", JSON.stringify(await c.events()));
  assert.equal(e?.sni, sni);
  assert.deepEqual(await c.lab.neverHits(), []);
}

labTest(
  "e2e: ClientHello delivery shapes",
  [
    [
      "post-quantum sized hello (Chromium, X25519MLKEM768) in one piece",
      async (c) => {
        const hello = await capture("chromium.bin");
        assert.ok(hello.length > 1800, `capture is ${hello.length} bytes`);
        await expectServerHello(c, [hello], "www.allowed.test");
      },
    ],
    [
      "post-quantum sized hello over IPv6",
      async (c) => expectServerHello(c, [await capture("chromium.bin")], "www.allowed.test", 6),
    ],
    [
      "hello split across TCP segments: 1 byte, rest of header, then pieces",
      async (c) => {
        const hello = await capture("curl.bin");
        await expectServerHello(c, cut(hello, [1, 5, 60, 200, 400]), "curl.allowed.test");
      },
    ],
    [
      "post-quantum hello split across TCP segments, SNI straddling a cut",
      async (c) => {
        const hello = await capture("chromium.bin");
        const text = new TextDecoder("latin1").decode(hello);
        const at = text.indexOf("www.allowed.test");
        assert.ok(at > 0);
        await expectServerHello(c, cut(hello, [3, at + 5, 1500]), "www.allowed.test");
      },
    ],
    [
      "hello split across TLS records (4-byte first record)",
      async (c) => {
        const wire = fragment(handshakeBytes(await capture("curl.bin")), [4, 64, 100_000]);
        await expectServerHello(c, [wire], "curl.allowed.test");
      },
    ],
    [
      "post-quantum hello split across records and segments",
      async (c) => {
        const wire = fragment(handshakeBytes(await capture("chromium.bin")), [700, 700, 700]);
        await expectServerHello(c, cut(wire, [2, 705, 1300]), "www.allowed.test");
      },
    ],
    [
      "curl gets a working TLS session when its hello is re-cut into segments",
      async (c) => {
        const r = await curlThroughSplitter(
          c.lab,
          "segments",
          { host: c.lab.t.addr.server4, port: 443 },
          "https://allowed.test/",
        );
        assert.equal(r.curlCode, 0, r.stderr);
        assert.equal(r.stdout, "hello from allowed.test\n");
        const e = await c.waitForEvent(isDecision);
        assert.equal(e?.event, "ALLOWED");
        assert.equal(e?.sni, "allowed.test");
      },
    ],
    [
      "curl gets a working TLS session when its hello is re-cut into records",
      async (c) => {
        const r = await curlThroughSplitter(
          c.lab,
          "records",
          { host: c.lab.t.addr.server6, port: 443 },
          "https://www.wild.test/",
        );
        assert.equal(r.curlCode, 0, r.stderr);
        assert.equal(r.stdout, "hello from www.wild.test\n");
        const e = await c.waitForEvent(isDecision);
        assert.equal(e?.event, "ALLOWED");
        assert.equal(e?.sni, "www.wild.test");
      },
    ],
    [
      "a split hello for a denied name is still denied",
      async (c) => {
        const r = await curlThroughSplitter(
          c.lab,
          "records",
          { host: c.lab.t.addr.never4, port: 443 },
          "https://blocked.test/",
        );
        assert.notEqual(r.curlCode, 0);
        const e = await c.waitForEvent(isDecision);
        assert.equal(e?.event, "DENIED");
        assert.equal(e?.sni, "blocked.test");
        assert.deepEqual(await c.lab.neverHits(), []);
      },
    ],
    [
      "a real hello without SNI gets no ServerHello",
      async (c) => {
        const r = await sendHello(c, [await capture("openssl_no_sni.bin")]);
        assert.equal(r.serverHello, false);
        assert.notEqual(r.end, "deadline", "the proxy should close a denied connection");
        const e = await c.decisionFor(r.localPort);
        assert.equal(e?.event, "DENIED");
        assert.equal(e?.reason, "no_sni");
      },
    ],
  ],
  // The captures were made for names under allowed.test.
  { proxyEnv: { ALLOWED_HOSTS: "allowed.test,*.wild.test,*.allowed.test" } },
);
