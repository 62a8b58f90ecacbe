/**
 * End to end: bulk data and many connections through the proxy -- a 64 MiB download with
 * checksum over HTTP and HTTPS, a client that half-closes after its request, and 500 clients
 * connected at the same time.
 */

import assert from "node:assert/strict";
import { clientScript, denoClient } from "../lab/clients.ts";
import { BIG_FILE_BYTES } from "../lab/servers.ts";
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
  const closed = await c.waitForEvent((e) => e.event === "CLOSED", 10_000);
  assert.ok(closed, "the proxy logged no CLOSED line for the download");
  assert.ok(Number(closed.down) >= BIG_FILE_BYTES, `CLOSED down=${closed.down}`);
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
    "half-close: the client shuts its side after the request and still gets all 64 MiB",
    async (c) => {
      const r = await rawClient(c.lab, {
        host: c.lab.t.addr.server4,
        port: 80,
        parts: [
          b64("GET /files/big.bin HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"),
        ],
        closeWrite: true,
        keepBytes: 4096,
        readDeadlineMs: 120_000,
      });
      assert.equal(r.end, "eof", r.error);
      assert.equal(r.statusLine, "HTTP/1.1 200 OK");
      assert.equal(r.bodyBytes, BIG_FILE_BYTES);
      assert.equal(r.bodySha256, c.lab.files.bigSha256);
      const e = await c.decisionFor(r.localPort);
      assert.equal(e?.event, "ALLOWED");
    },
  ],
  [
    "half-close on HTTPS-port traffic: request then FIN, answer still arrives",
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
