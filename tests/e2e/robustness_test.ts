/**
 * End to end: bad input must never crash, hang or leak -- garbage, garbage followed by a good
 * request, the wrong protocol on a port, and clients that never send (or stop half-way) -- and
 * the proxy must keep serving good requests afterwards.
 */

import assert from "node:assert/strict";
import { curl, denoClient } from "../lab/clients.ts";
import { type CaseContext, labTest } from "./lab_fixture.ts";
import { b64, capture, rawClient } from "./raw.ts";
import type { FloodReport } from "./clients/flood_client.ts";

const FLOOD_CLIENT = new URL("./clients/flood_client.ts", import.meta.url).pathname;
/** Half-open clients in the flood case, half on each port. */
const FLOOD = 2000;

/** The resident memory of a process, in KiB. */
async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
}

/** Deterministic pseudo-random bytes (xorshift), so a failure can be replayed. */
function garbage(length: number, seed = 0x9e3779b9): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

async function expectStillServing(c: CaseContext) {
  for (const url of ["http://allowed.test/", "https://allowed.test/"]) {
    const r = await curl(c.lab, url, { family: 4 });
    assert.equal(r.status, 200, `${url} after bad input: ${r.error}`);
  }
}

async function expectDeniedAndClosed(
  c: CaseContext,
  port: 80 | 443,
  parts: Uint8Array[],
  /** Acceptable denial reasons; `null` accepts any (the contract's list is open-ended). */
  reasons: string[] | null,
) {
  const r = await rawClient(c.lab, {
    host: c.lab.t.addr.server4,
    port,
    parts: parts.map((p) => b64(p)),
    readDeadlineMs: 15_000,
  });
  assert.ok(r.connected, r.error);
  assert.notEqual(r.end, "deadline", "the proxy left a bad connection open");
  assert.ok(!r.statusLine?.includes(" 200 "), `bad input got ${r.statusLine}`);
  assert.equal(r.serverHello, false);
  const e = await c.decisionFor(r.localPort, 15_000);
  assert.equal(e?.event, "DENIED", JSON.stringify(await c.events()));
  assert.ok(e?.reason, "a denial without a reason");
  if (reasons) {
    assert.ok(reasons.includes(e.reason), `reason ${e.reason}, want one of ${reasons}`);
  }
  assert.deepEqual(await c.lab.serverHits(), [], "bad input reached the server");
  assert.deepEqual(await c.lab.neverHits(), []);
}

// Any reason will do for malformed input: what matters is deny, close, and nothing upstream.
const HTTP_BAD = null;
const TLS_BAD = null;
const good = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n");

labTest(
  "e2e: bad input and silent clients",
  [
    [
      "garbage on the HTTP port is denied, then a good request works",
      async (c) => {
        await expectDeniedAndClosed(c, 80, [garbage(300)], HTTP_BAD);
        await expectStillServing(c);
      },
    ],
    [
      "garbage on the TLS port is denied, then a good request works",
      async (c) => {
        await expectDeniedAndClosed(c, 443, [garbage(300, 7)], TLS_BAD);
        await expectStillServing(c);
      },
    ],
    [
      "garbage followed by a good request on the same connection is denied",
      async (c) => {
        const junk = new TextEncoder().encode("\x00\x01\xffNOT HTTP AT ALL\r\n\r\n");
        await expectDeniedAndClosed(c, 80, [junk, good], HTTP_BAD);
        await expectStillServing(c);
      },
    ],
    [
      "a TLS record header with a lying length followed by a good hello is denied",
      async (c) => {
        const liar = new Uint8Array([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00]);
        await expectDeniedAndClosed(c, 443, [liar, await capture("curl.bin")], TLS_BAD);
        await expectStillServing(c);
      },
    ],
    [
      "a ClientHello sent to the HTTP port is denied",
      async (c) => expectDeniedAndClosed(c, 80, [await capture("curl.bin")], HTTP_BAD),
    ],
    [
      "an HTTP request sent to the TLS port is denied",
      (c) => expectDeniedAndClosed(c, 443, [good], TLS_BAD),
    ],
    [
      "a client that never sends anything is closed and logged (HTTP port)",
      async (c) => {
        await expectDeniedAndClosed(c, 80, [], ["timeout"]);
        await expectStillServing(c);
      },
    ],
    [
      "a client that never sends anything is closed and logged (TLS port)",
      (c) => expectDeniedAndClosed(c, 443, [], ["timeout"]),
    ],
    [
      "a client that stops half-way through its ClientHello is closed and logged",
      async (c) => {
        const hello = await capture("curl.bin");
        await expectDeniedAndClosed(c, 443, [hello.subarray(0, 100)], ["timeout"]);
      },
    ],
    [
      "a client that stops half-way through its request head is closed and logged",
      async (c) => {
        const half = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: allowed.te");
        await expectDeniedAndClosed(c, 80, [half], ["timeout"]);
      },
    ],
    [
      "a flood of half-open clients holds nothing past the first-bytes deadline",
      async (c) => {
        const proxy = c.lab.proxy!;
        const before = await rssKiB(proxy.pid);
        const hello = await capture("curl.bin");
        const flood = (port: number, flight: Uint8Array) =>
          denoClient(c.lab, FLOOD_CLIENT, [
            c.lab.t.addr.server4,
            String(port),
            String(FLOOD / 2),
            "100",
            b64(flight),
            "15000",
          ], { timeoutMs: 60_000 });
        const floods = Promise.all([
          flood(80, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Junk: ")),
          flood(443, hello.subarray(0, 100)),
        ]);
        // Good clients are served while the flood is held.
        await new Promise((resolve) => setTimeout(resolve, 500));
        await expectStillServing(c);
        const during = await rssKiB(proxy.pid);
        for (const out of await floods) {
          assert.equal(out.code, 0, out.stderr);
          const report = JSON.parse(out.stdout) as FloodReport;
          assert.equal(report.connected, FLOOD / 2, out.stdout);
          assert.equal(report.stillOpen, 0, `held past the deadline: ${out.stdout}`);
          assert.equal(report.closedByPeer, FLOOD / 2, out.stdout);
        }
        const timeouts = await c.eventsWhen(
          (e) => e.event === "DENIED" && e.reason === "timeout",
          FLOOD,
        );
        assert.equal(timeouts.length, FLOOD, "one decision line per flooding connection");
        await expectStillServing(c);
        console.log(
          `  proxy RSS: ${before} KiB before, ${during} KiB with ${FLOOD} half-open clients, ` +
            `${await rssKiB(proxy.pid)} KiB after`,
        );
      },
    ],
  ],
  // Short enough for the suite, long enough that a real client is never cut off here.
  { proxyEnv: { FIRST_BYTES_TIMEOUT: "1s" } },
);
