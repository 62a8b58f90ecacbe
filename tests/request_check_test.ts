import assert from "node:assert/strict";
import { parseAllowlist } from "../src/allowlist.ts";
import type { EventFields } from "../src/log_line.ts";
import { ProxyMetrics } from "../src/metrics.ts";
import { isSwitchAnswer, requestCheck, RequestChecker } from "../src/request_check.ts";
import { RequestFramingTracker } from "../src/http_framing.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function allowlist(text: string) {
  const parsed = parseAllowlist(text);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.allowlist;
}

function harness(policyText = "a.test,b.test", pinnedName = "a.test") {
  let policy = { allowlist: allowlist(policyText), audit: false };
  const fields: EventFields = { event: "ALLOWED", proto: "HTTP", peer: "p", dst: "d" };
  const check = requestCheck({
    pinnedName,
    policy: () => policy,
    fields,
    metrics: new ProxyMetrics(),
  });
  const sent: string[] = [];
  const forward = (bytes: Uint8Array) => {
    sent.push(dec(bytes));
    return Promise.resolve();
  };
  return {
    check,
    sent: () => sent.join(""),
    push: (text: string) => check.inspect(enc(text), forward),
    setPolicy: (text: string) => policy = { allowlist: allowlist(text), audit: false },
  };
}

const get = (host: string, extra = "") => `GET / HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
const upgrade = get("a.test", "Upgrade: websocket\r\nConnection: Upgrade\r\n");

Deno.test("isSwitchAnswer: 101 for Upgrade, 2xx for CONNECT, nothing else", () => {
  assert.equal(isSwitchAnswer(enc("HTTP/1.1 101 Switching"), false), true);
  assert.equal(isSwitchAnswer(enc("HTTP/1.1 200 OK\r\n"), false), false);
  assert.equal(isSwitchAnswer(enc("HTTP/1.1 200 OK\r\n"), true), true);
  assert.equal(isSwitchAnswer(enc("HTTP/1.1 101 Sw"), true), false);
  assert.equal(isSwitchAnswer(enc("HTTP/1.1 10"), false), false); // too short to tell
  assert.equal(isSwitchAnswer(enc("xTTP/1.1 101 "), false), false);
});

Deno.test("requestCheck: a second request for another name is refused before it is sent", async () => {
  const h = harness();
  assert.deepEqual(await h.push(get("a.test")), { stop: false });
  const verdict = await h.push(get("b.test"));
  assert.equal(verdict.stop, true);
  assert.ok(verdict.stop && dec(verdict.finalResponse!).startsWith("HTTP/1.1 403"));
  assert.equal(h.sent(), get("a.test"));
});

Deno.test("requestCheck: a reload that removes the name refuses the next request", async () => {
  const h = harness();
  await h.push(get("a.test"));
  await h.push(get("a.test"));
  h.setPolicy("b.test");
  const verdict = await h.push(get("a.test"));
  assert.equal(verdict.stop, true);
  assert.equal(h.sent(), get("a.test").repeat(2));
});

Deno.test("requestCheck: a refused Upgrade keeps later requests checked", async () => {
  const h = harness();
  await h.push(upgrade);
  // The server answers 200, not 101: the next request must be framed and checked.
  h.check.watch(enc("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
  const verdict = await h.push(get("evil.test"));
  assert.equal(verdict.stop, true);
  assert.equal(h.sent(), upgrade);
});

Deno.test("requestCheck: bytes after an Upgrade wait for the answer, then flow opaque on 101", async () => {
  const h = harness();
  await h.push(upgrade);
  let done = false;
  const pending = h.push("\x81\x05hello GET / HTTP/1.1\r\nHost: evil\r\n\r\n").then((v) => {
    done = true;
    return v;
  });
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(done, false, "held until the server answers");
  assert.equal(h.sent(), upgrade);
  h.check.watch(enc("HTTP/1.1 1"));
  h.check.watch(enc("01 Switching Protocols\r\n\r\n"));
  assert.deepEqual(await pending, { stop: false });
  assert.ok(h.sent().endsWith("\x81\x05hello GET / HTTP/1.1\r\nHost: evil\r\n\r\n"));
  assert.deepEqual(await h.push("anything \x00 at all"), { stop: false });
});

Deno.test("requestCheck: held bytes are checked as requests when the upgrade is refused", async () => {
  const h = harness();
  await h.push(upgrade);
  const pending = h.push(get("evil.test"));
  h.check.watch(enc("HTTP/1.1 400 Bad Request\r\n\r\n"));
  const verdict = await pending;
  assert.equal(verdict.stop, true);
  assert.equal(h.sent(), upgrade);
});

Deno.test("requestCheck: the server closing before answering ends the wait as not switched", async () => {
  const h = harness();
  await h.push(upgrade);
  const pending = h.push(get("evil.test"));
  h.check.watch(null);
  assert.equal((await pending).stop, true);
});

Deno.test("tracker with awaitSwitch: a switch request with a body is refused", () => {
  const t = new RequestFramingTracker({ awaitSwitch: true });
  const events = t.push(enc(get("a.test", "Upgrade: x\r\nContent-Length: 3\r\n") + "abc"));
  assert.deepEqual(events.map((e) => e.type), ["invalid"]);
  assert.ok(events[0].type === "invalid" && events[0].reason === "switch_with_body");
});

/** A synchronous checker over policy "a.test,b.test" pinned to a.test, with its refusals. */
function checker(afterFirst = false) {
  const refused: string[] = [];
  const c = new RequestChecker({
    pinnedName: "a.test",
    policy: () => ({ allowlist: allowlist("a.test,b.test"), audit: false }),
    refused: (reason) => refused.push(reason),
    audited: () => {},
  }, afterFirst);
  return { c, refused };
}

Deno.test("RequestChecker: idle only between requests with nothing held, awaited or switched", () => {
  const { c } = checker();
  assert.equal(c.push(enc(get("a.test"))).next, "more");
  assert.equal(c.idle, true, "after a whole request");
  c.push(enc("POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\n\r\nab"));
  assert.equal(c.idle, false, "inside a body");
  c.push(enc("cd"));
  assert.equal(c.idle, true, "body done");
  c.push(enc("GET / HTTP/1.1\r\nHost: a"));
  assert.equal(c.idle, false, "inside a head");
  c.push(enc(".test\r\n\r\n"));
  assert.equal(c.idle, true);
  c.push(enc(upgrade));
  assert.equal(c.idle, false, "waiting for the answer to an Upgrade");
  c.see(enc("HTTP/1.1 101 Switching Protocols\r\n\r\n"));
  assert.equal(c.idle, false, "opaque after the switch");
});

Deno.test("RequestChecker: made again after the first request (afterFirst), it checks every head", () => {
  // The relay drops an idle checker; the one it makes for the next bytes must not take the next
  // head for the connection's first, decided one.
  const again = checker(true);
  const step = again.c.push(enc(get("b.test")));
  assert.equal(step.next, "stop");
  assert.ok(dec(step.finalResponse!).startsWith("HTTP/1.1 403"));
  assert.deepEqual(again.refused, ["host_switch"]);
  const pinned = checker(true);
  assert.equal(pinned.c.push(enc(get("a.test"))).next, "more");
  assert.deepEqual(pinned.refused, []);
  // A fresh checker lets the first head through unchecked: it was decided before.
  const fresh = checker();
  assert.equal(fresh.c.push(enc(get("b.test"))).next, "more");
});
