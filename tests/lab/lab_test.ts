/**
 * Unit tests for the lab's pure parts: names, arguments, log parsing, matching, rendering.
 * (The lab itself is exercised end to end by tests/e2e/ and `deno task lab`.)
 */

import assert from "node:assert/strict";
import { parseArgs } from "./main.ts";
import { endpointPort, formatEvent, ProxyLog } from "./proxy.ts";
import { decisionMatches, describeDecision } from "./scenario.ts";
import { dnsmasqArgs } from "./servers.ts";
import { renderTable } from "./table.ts";
import { E2E_PREFIX, hostsFile, LAB_HOSTS, LAB_PREFIX, topology } from "./topology.ts";

Deno.test("topology: every interface name fits the kernel's 15 characters", () => {
  for (const prefix of [LAB_PREFIX, E2E_PREFIX, "abcdefghij-"]) {
    const t = topology(prefix, "/tmp/x");
    for (const name of Object.values(t.links)) assert.ok(name.length <= 15, name);
    for (const name of Object.values(t.ns)) assert.ok(name.startsWith(prefix), name);
  }
  assert.throws(() => topology("much-too-long-prefix-"), /prefix/);
  assert.throws(() => topology("bad/prefix"), /prefix/);
});

Deno.test("topology: only 198.18.0.0/15 and 2001:db8::/32 addresses", () => {
  const t = topology(LAB_PREFIX, "/tmp/x");
  for (const a of Object.values(t.addr)) {
    assert.match(a, /^(198\.1[89]\.\d+\.\d+|2001:db8:[0-9a-f:]*)$/, a);
  }
  for (const line of hostsFile(t).split("\n").filter((l) => l && !l.includes("localhost"))) {
    assert.match(line, /^(198\.1[89]\.|2001:db8:)/, line);
  }
  for (const arg of dnsmasqArgs(t).filter((a) => a.startsWith("--address="))) {
    assert.match(arg, /\/(198\.1[89]\.|2001:db8:)[^/]*$/, arg);
  }
});

Deno.test("topology: the half-close server has its own name and addresses, in DNS and hosts", () => {
  const t = topology(LAB_PREFIX, "/tmp/x");
  const { halfClose4, halfClose6 } = t.addr;
  const others = Object.entries(t.addr).filter(([k]) => !k.startsWith("halfClose"));
  for (const [k, a] of others) assert.ok(a !== halfClose4 && a !== halfClose6, k);
  const hosts = hostsFile(t);
  assert.match(hosts, new RegExp(`^${halfClose4} ${LAB_HOSTS.halfClose}$`, "m"));
  assert.match(hosts, new RegExp(`^${halfClose6} ${LAB_HOSTS.halfClose}$`, "m"));
  assert.ok(
    dnsmasqArgs(t).includes(`--host-record=${LAB_HOSTS.halfClose},${halfClose4},${halfClose6}`),
  );
  // Allowed through the lab's wildcard, exactly one label below it.
  assert.match(LAB_HOSTS.halfClose, /^[a-z0-9-]+\.wild\.test$/);
});

Deno.test("parseArgs: modes, prefix, and unknown arguments named", () => {
  assert.deepEqual(parseArgs([]), { mode: "run", prefix: LAB_PREFIX });
  assert.deepEqual(parseArgs(["--keep"]), { mode: "keep", prefix: LAB_PREFIX });
  assert.deepEqual(parseArgs(["--down", "--prefix", "ppx-"]), { mode: "down", prefix: "ppx-" });
  assert.deepEqual(parseArgs(["--prefix=ppy-"]), { mode: "run", prefix: "ppy-" });
  assert.deepEqual(parseArgs(["--bogus"]), { error: 'unknown argument "--bogus"' });
});

Deno.test("ProxyLog: reads appended lines incrementally, holding back a partial line", async () => {
  const path = await Deno.makeTempFile();
  try {
    const log = new ProxyLog(path);
    await Deno.writeTextFile(
      path,
      '{"event":"ALLOWED","proto":"HTTP","peer":"198.18.1.10:5"}\n{"ev',
    );
    assert.equal((await log.since(0)).length, 1);
    await Deno.writeTextFile(path, 'ent":"DENIED","reason":"x"}\nnot json\n', { append: true });
    const events = await log.since(0);
    assert.deepEqual(events.map((e) => e.event), ["ALLOWED", "DENIED"]);
    assert.deepEqual((await log.rawSince(0)).at(-1), "not json");
    const found = await log.waitFor((e) => e.reason === "x", { timeoutMs: 0 });
    assert.equal(found?.event, "DENIED");
    assert.equal(await log.waitFor((e) => e.reason === "never", { timeoutMs: 50 }), undefined);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("endpointPort and formatEvent", () => {
  assert.equal(endpointPort("198.18.1.10:443"), 443);
  assert.equal(endpointPort("[2001:db8::1]:80"), 80);
  assert.equal(endpointPort("nonsense"), undefined);
  assert.equal(
    formatEvent({ level: "INFO", event: "DENIED", proto: "HTTPS", peer: "a:1", reason: "no_sni" }),
    "INFO DENIED HTTPS peer=a:1 reason=no_sni",
  );
});

Deno.test("decisionMatches: event, proto, name field per proto, reason", () => {
  const want = { event: "DENIED", proto: "HTTPS", name: "b.test", reason: "not_allowed" } as const;
  assert.ok(
    decisionMatches(
      { event: "DENIED", proto: "HTTPS", sni: "b.test", reason: "not_allowed" },
      want,
    ),
  );
  assert.ok(
    !decisionMatches(
      { event: "DENIED", proto: "HTTPS", host: "b.test", reason: "not_allowed" },
      want,
    ),
  );
  assert.ok(!decisionMatches({ event: "ALLOWED", proto: "HTTPS", sni: "b.test" }, want));
  assert.ok(
    !decisionMatches({ event: "DENIED", proto: "HTTPS", sni: "b.test", reason: "x" }, want),
  );
  assert.equal(describeDecision(want), "DENIED HTTPS sni=b.test reason=not_allowed");
  assert.equal(describeDecision("none"), "no proxy decision");
});

Deno.test("renderTable: marks failures and counts them", () => {
  const text = renderTable([
    { request: "r1", expected: "e1", observed: "o1", proxyLog: ["line"], ok: true },
    { request: "r2", expected: "e2", observed: "o2", proxyLog: [], ok: false },
  ]);
  assert.match(text, /^ok +r1 +e1 +o1$/m);
  assert.match(text, /^FAIL +r2 +e2 +o2$/m);
  assert.match(text, /proxy: line/);
  assert.match(text, /1 of 2 observations do not match/);
});
