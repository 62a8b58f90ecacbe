/**
 * End to end: the destination check (DST_POLICY). A client that names an allowed host but
 * dials another address must not reach that address unless the policy is `off` -- which also
 * shows that the never-reached server does detect a hit.
 */

import assert from "node:assert/strict";
import { curl } from "../lab/clients.ts";
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
