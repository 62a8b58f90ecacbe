/**
 * End to end: bulk data and many connections through the proxy -- a 64 MiB download with
 * checksum over HTTP and HTTPS, a client that half-closes after its request, and 500 clients
 * connected at the same time.
 *
 * The half-close cases talk to the lab's half-close server, not nginx: nginx aborts a response
 * once the client has shut its side ("client prematurely closed connection"), so it cannot
 * show that the proxy keeps delivering after the client's FIN. That server answers only after
 * reading the client's FIN, so an answer proves the FIN got through, and its body proves the
 * other direction kept flowing.
 */

import assert from "node:assert/strict";
import { clientScript, denoClient } from "../lab/clients.ts";
import type { HalfCloseRecord } from "../lab/clients/half_close_server.ts";
import { endpointPort } from "../lab/proxy.ts";
import { BIG_FILE_BYTES } from "../lab/servers.ts";
import { LAB_HOSTS } from "../lab/topology.ts";
import { type CaseContext, labTest } from "./lab_fixture.ts";
import { b64, rawClient } from "./raw.ts";

async function download(c: CaseContext, url: string, family: 4 | 6) {
  const out = await c.lab.client([
    "bash",
    "-c",
    `set -o pipefail; curl --silent --show-error --fail -${family} --max-time 120 --cacert "$1" "$2" | sha256sum`,
    "bash",
    c.lab.pki.caCert,
    url,
  ], { check: false, timeoutMs: 150_000 });
  assert.equal(out.code, 0, out.stderr);
  assert.equal(out.stdout.split(" ")[0], c.lab.files.bigSha256, "downloaded bytes differ");
  // Closing lines of an earlier case's many clients can still be arriving: find this one.
  const proto = url.startsWith("https:") ? "HTTPS" : "HTTP";
  const closed = await c.waitForEvent(
    (e) => e.event === "CLOSED" && e.proto === proto && Number(e.down) >= BIG_FILE_BYTES,
    10_000,
  );
  assert.ok(closed, `no ${proto} CLOSED line with down >= ${BIG_FILE_BYTES} for the download`);
}

/** A request for the half-close server, unique per case so its records can be told apart. */
function halfCloseRequest(tag: string): string {
  return `GET /big.bin?case=${tag} HTTP/1.1\r\nHost: ${LAB_HOSTS.halfClose}\r\n` +
    "Connection: close\r\n\r\n";
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** Waits (bounded) for a half-close server record matching `predicate`. */
async function waitForRecord(
  c: CaseContext,
  predicate: (r: HalfCloseRecord) => boolean,
  timeoutMs = 30_000,
): Promise<HalfCloseRecord | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const found = (await c.lab.halfCloseRecords()).find(predicate);
    if (found || Date.now() >= deadline) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function recordsText(c: CaseContext): Promise<string> {
  return JSON.stringify(await c.lab.halfCloseRecords());
}

async function halfClose(c: CaseContext, family: 4 | 6) {
  const { addr } = c.lab.t;
  const request = halfCloseRequest(`v${family}`);
  const sha = await sha256Hex(request);
  const server = family === 4 ? addr.halfClose4 : addr.halfClose6;
  const r = await rawClient(c.lab, {
    host: server,
    port: 80,
    parts: [b64(request)],
    closeWrite: true,
    keepBytes: 4096,
    readDeadlineMs: 120_000,
  });
  // The client's side: every byte after its own FIN.
  assert.equal(r.end, "eof", r.error);
  assert.equal(r.statusLine, "HTTP/1.1 200 OK");
  assert.equal(r.bodyBytes, BIG_FILE_BYTES);
  assert.equal(r.bodySha256, c.lab.files.bigSha256);
  // The server's side: it read exactly the request, then the FIN, and only then answered.
  const eof = await waitForRecord(c, (x) => x.event === "eof" && x.requestSha256 === sha);
  assert.ok(eof, `the server logged no FIN for this request: ${await recordsText(c)}`);
  assert.equal(eof.requestBytes, request.length);
  assert.equal(eof.local, family === 4 ? `${server}:80` : `[${server}]:80`);
  // It was the proxy, not a forwarded packet, that connected.
  const routerWan = family === 4 ? addr.routerWan4 : `[${addr.routerWan6}]`;
  assert.ok(eof.peer.startsWith(`${routerWan}:`), `server saw peer ${eof.peer}`);
  const done = await waitForRecord(c, (x) => x.event !== "eof" && x.requestSha256 === sha);
  assert.equal(done?.event, "done", `server records: ${await recordsText(c)}`);
  assert.ok(done.sentBytes! > BIG_FILE_BYTES, `sent ${done.sentBytes}`);
  // The proxy's side: allowed by name, and it counted both directions.
  const decision = await c.decisionFor(r.localPort);
  assert.equal(decision?.event, "ALLOWED");
  assert.equal(decision.host, LAB_HOSTS.halfClose);
  const closed = await c.waitForEvent(
    (e) => e.event === "CLOSED" && endpointPort(e.peer) === r.localPort,
    10_000,
  );
  assert.ok(closed, "the proxy logged no CLOSED line for the half-closed connection");
  assert.equal(Number(closed.up), request.length, `CLOSED up=${closed.up}`);
  assert.equal(Number(closed.down), done.sentBytes, `CLOSED down=${closed.down}`);
}

async function parallel(c: CaseContext, tls: boolean) {
  const count = 500;
  const args = [String(count), c.lab.t.addr.server4, tls ? "443" : "80", "allowed.test"];
  if (tls) args.push(c.lab.pki.caCert);
  const r = await denoClient(c.lab, clientScript("e2e/clients/parallel_client.ts"), args, {
    timeoutMs: 180_000,
  });
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { ok: number; count: number; failures: string[] };
  assert.equal(summary.ok, count, `failures: ${summary.failures.join("; ")}`);
  const allowed = await c.lab.proxy!.log.waitForCount(
    (e) => e.event === "ALLOWED" && e.proto === (tls ? "HTTPS" : "HTTP"),
    count,
    { from: 0, timeoutMs: 10_000 },
  );
  const all = await c.lab.proxy!.log.since(0);
  const counts: Record<string, number> = {};
  for (const e of all) counts[`${e.event}/${e.proto}`] = (counts[`${e.event}/${e.proto}`] ?? 0) + 1;
  assert.ok(
    allowed.length >= count,
    `only ${allowed.length} ALLOWED lines; all lines: ${JSON.stringify(counts)}`,
  );
  assert.equal((await c.events()).filter((e) => e.event === "DENIED").length, 0);
}

labTest("e2e: bulk data, half-close and many clients", [
  [
    "64 MiB over HTTP (IPv4), checksum matches",
    (c) => download(c, "http://allowed.test/files/big.bin", 4),
  ],
  [
    "64 MiB over HTTPS (IPv6), checksum matches",
    (c) => download(c, "https://allowed.test/files/big.bin", 6),
  ],
  [
    "half-close (IPv4): the server sees the client's FIN, the client still gets all 64 MiB",
    (c) => halfClose(c, 4),
  ],
  [
    "half-close (IPv6): the server sees the client's FIN, the client still gets all 64 MiB",
    (c) => halfClose(c, 6),
  ],
  [
    "half-close control: without the client's FIN the half-close server does not answer",
    async (c) => {
      const request = halfCloseRequest("control");
      const r = await rawClient(c.lab, {
        host: c.lab.t.addr.halfClose4,
        port: 80,
        parts: [b64(request)],
        readDeadlineMs: 2_000,
      });
      assert.ok(r.connected, r.error);
      assert.equal(r.received, 0, "the half-close server answered before any FIN");
      assert.equal(r.end, "deadline");
      // Closing the client sends its FIN after all; the proxy passes it on, so the server
      // reads to the end and answers into a closed connection.
      const sha = await sha256Hex(request);
      const eof = await waitForRecord(c, (x) => x.event === "eof" && x.requestSha256 === sha);
      assert.ok(eof, `no eof record for the control request: ${await recordsText(c)}`);
      assert.equal(eof.requestBytes, request.length);
    },
  ],
  [
    "half-close with a small answer from nginx: request then FIN, the answer still arrives",
    async (c) => {
      const r = await rawClient(c.lab, {
        host: c.lab.t.addr.server4,
        port: 80,
        parts: [b64("GET / HTTP/1.0\r\nHost: allowed.test\r\n\r\n")],
        closeWrite: true,
      });
      assert.equal(r.end, "eof", r.error);
      assert.equal(r.statusLine, "HTTP/1.1 200 OK");
      assert.equal((await c.decisionFor(r.localPort))?.event, "ALLOWED");
    },
  ],
  ["500 parallel HTTP clients all get 200", (c) => parallel(c, false)],
  ["500 parallel HTTPS clients all get 200", (c) => parallel(c, true)],
]);

labTest(
  "e2e: RELAY=deno keeps every connection on Deno's sockets",
  [
    [
      "64 MiB over HTTPS (IPv4), checksum matches",
      (c) => download(c, "https://allowed.test/files/big.bin", 4),
    ],
    [
      "64 MiB over HTTP (IPv6), checksum matches",
      (c) => download(c, "http://allowed.test/files/big.bin", 6),
    ],
    ["500 parallel HTTPS clients all get 200", (c) => parallel(c, true)],
    ["500 parallel HTTP clients all get 200", (c) => parallel(c, false)],
    [
      "the closing lines say Deno's relay carried each connection",
      async (c) => {
        const closed = (await c.lab.proxy!.log.since(0)).filter((e) => e.event === "CLOSED");
        const https = closed.filter((e) => e.proto === "HTTPS");
        const http = closed.filter((e) => e.proto === "HTTP");
        assert.ok(https.length >= 501 && http.length >= 501, `${https.length} / ${http.length}`);
        assert.ok(closed.every((e) => e.relay === undefined), JSON.stringify(closed[0]));
      },
    ],
  ],
  { proxyEnv: { RELAY: "deno" } },
);

labTest(
  "e2e: RELAY=kernel (the default) accepts, reads and relays on the relay thread",
  [
    [
      "the closing lines say the relay thread carried each connection, HTTP and HTTPS",
      async (c) => {
        await download(c, "https://allowed.test/files/big.bin", 4);
        await download(c, "http://allowed.test/files/big.bin", 6);
        const closed = (await c.lab.proxy!.log.since(0)).filter((e) => e.event === "CLOSED");
        const protos = new Set(closed.map((e) => e.proto));
        assert.deepEqual([...protos].sort(), ["HTTP", "HTTPS"]);
        assert.ok(closed.every((e) => e.relay === "kernel"), JSON.stringify(closed));
      },
    ],
  ],
  { proxyEnv: { RELAY: "kernel" } },
);
