import assert from "node:assert/strict";
import fc from "fast-check";
import { EventTally, TALLY_FLUSH_BYTES } from "../src/event_tally.ts";
import { closedFields, type EventFields, eventLine } from "../src/log_line.ts";
import { auditedFields, refusedFields } from "../src/request_check.ts";

const T = Date.parse("2026-04-23T10:00:01Z");
const decoder = new TextDecoder();

function allowedHttp(peer = "198.18.0.5:40000", host = "a.test"): EventFields {
  return { event: "ALLOWED", proto: "HTTP", peer, dst: "198.19.0.10:80", host };
}

Deno.test("EventTally: an allow, a refused later request and the end, as one batch", () => {
  const tally = new EventTally("text");
  assert.equal(tally.empty, true);
  assert.equal(tally.take(), null);
  const fields = allowedHttp();
  tally.allowed(fields, T, "a.test");
  const denied = refusedFields(fields, "host_not_allowed", "b.test");
  tally.decision(denied, T + 5, "host_not_allowed");
  const closed = closedFields({ ...fields, relay: "kernel" }, T - 2, T + 9, 120, 4000, undefined);
  tally.closed(closed, T + 9, 120, 4000, 3);
  assert.equal(tally.empty, false);
  const t = tally.take();
  assert.ok(t !== null);
  const lines = decoder.decode(t.lines);
  assert.equal(
    lines,
    eventLine(fields, T, "text") + eventLine(denied, T + 5, "text") +
      eventLine(closed, T + 9, "text"),
  );
  assert.equal(t.lineCount, 3);
  assert.deepEqual(lines.split("\n").slice(0, 3).map((l) => l.split(" ")[2]), [
    "ALLOWED",
    "DENIED",
    "CLOSED",
  ]);
  assert.match(lines, /DENIED HTTP peer=198\.18\.0\.5:40000 dst=198\.19\.0\.10:80 host=b\.test/);
  assert.match(lines, / relay=kernel up=120 down=4000 duration_ms=11\n$/);
  assert.deepEqual(t.connections, [
    ["HTTP", "allowed", "none", 1],
    ["HTTP", "denied", "host_not_allowed", 1],
  ]);
  assert.equal(t.onThread, 1);
  assert.deepEqual(t.connectMs, [3]);
  assert.equal(t.up, 120);
  assert.equal(t.down, 4000);
  assert.deepEqual(t.names, ["a.test"]);
  // Taken: it starts over.
  assert.equal(tally.empty, true);
  assert.equal(tally.take(), null);
});

Deno.test("EventTally: counts add up by protocol, decision and reason; names come once", () => {
  const tally = new EventTally("json");
  for (let i = 0; i < 3; i++) tally.allowed(allowedHttp(`198.18.0.5:${40000 + i}`), T, "a.test");
  const tls: EventFields = {
    event: "ALLOWED",
    proto: "HTTPS",
    peer: "198.18.0.6:1",
    dst: "198.19.0.10:443",
    sni: "b.test",
  };
  tally.allowed(tls, T, "b.test");
  tally.decision(auditedFields(allowedHttp(), "host_not_allowed", "c.test"), T, "host_not_allowed");
  const t = tally.take();
  assert.ok(t !== null);
  // In no particular order: the main thread adds them up.
  assert.deepEqual(t.connections.toSorted(), [
    ["HTTP", "allowed", "host_not_allowed", 1],
    ["HTTP", "allowed", "none", 3],
    ["HTTPS", "allowed", "none", 1],
  ]);
  assert.equal(t.onThread, 4);
  assert.deepEqual(t.names, ["a.test", "b.test"]);
  const lines = decoder.decode(t.lines).trimEnd().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, t.lineCount);
  assert.equal(lines[4].would_deny, true);
  assert.equal(lines[4].host, "c.test");
  assert.equal(lines[3].sni, "b.test");
});

Deno.test("EventTally: with no line format it writes no line and still counts", () => {
  const tally = new EventTally(null);
  tally.allowed(allowedHttp(), T, "a.test");
  tally.closed(closedFields(allowedHttp(), T, T, 1, 2, "idle_timeout"), T, 1, 2);
  const t = tally.take();
  assert.ok(t !== null);
  assert.equal(decoder.decode(t.lines), "");
  assert.equal(t.lineCount, 0);
  assert.deepEqual(t.connections, [["HTTP", "allowed", "none", 1]]);
  assert.equal(t.up + t.down, 3);
  assert.deepEqual(t.connectMs, []);
});

Deno.test("property: a tally is the sum of its events, whatever their order", () => {
  const event = fc.record({
    kind: fc.constantFrom("allowed", "refused", "closed"),
    host: fc.constantFrom("a.test", "b.test", "x\n=y"),
    up: fc.nat(1 << 20),
    down: fc.nat(1 << 20),
    connectMs: fc.option(fc.nat(5000), { nil: undefined }),
  });
  fc.assert(fc.property(fc.array(event, { maxLength: 40 }), (events) => {
    const tally = new EventTally("text");
    let expectedLines = "";
    let decisions = 0, up = 0, down = 0, onThread = 0;
    const connectMs: number[] = [];
    const names = new Set<string>();
    for (const e of events) {
      const fields = allowedHttp(undefined, e.host);
      if (e.kind === "allowed") {
        tally.allowed(fields, T, e.host);
        expectedLines += eventLine(fields, T, "text");
        decisions++;
        onThread++;
        names.add(e.host);
      } else if (e.kind === "refused") {
        const line = refusedFields(fields, "host_not_allowed", e.host);
        tally.decision(line, T, "host_not_allowed");
        expectedLines += eventLine(line, T, "text");
        decisions++;
      } else {
        const line = closedFields(fields, T, T, e.up, e.down, undefined);
        tally.closed(line, T, e.up, e.down, e.connectMs);
        expectedLines += eventLine(line, T, "text");
        up += e.up;
        down += e.down;
        if (e.connectMs !== undefined) connectMs.push(e.connectMs);
      }
    }
    const t = tally.take();
    assert.equal(t === null, events.length === 0, "every event is a line");
    if (t === null) return;
    const lines = decoder.decode(t.lines);
    assert.equal(lines, expectedLines);
    assert.equal(t.lineCount, events.length);
    assert.equal(lines.split("\n").length - 1, events.length, "one line per event");
    assert.equal(t.connections.reduce((n, c) => n + c[3], 0), decisions);
    assert.equal(t.onThread, onThread);
    assert.equal(t.up, up);
    assert.equal(t.down, down);
    assert.deepEqual(t.connectMs, connectMs);
    assert.deepEqual(new Set(t.names), names);
    assert.equal(t.names.length, names.size);
  }));
});

Deno.test("EventTally: lines past its buffer grow it, byte for byte; a large batch asks to go early", () => {
  const tally = new EventTally("json");
  let expected = "";
  let n = 0;
  let fullAt = -1;
  // Well past the flush size, as a sweep that ends thousands of connections at once does.
  while (expected.length < 3 * TALLY_FLUSH_BYTES) {
    const fields = allowedHttp(`198.18.${n >> 8 & 255}.${n & 255}:${1024 + n}`, `h${n}.a.test`);
    tally.allowed(fields, T + n, `h${n}.a.test`);
    expected += eventLine(fields, T + n, "json");
    n++;
    if (fullAt < 0 && tally.full) fullAt = expected.length;
  }
  assert.ok(fullAt >= TALLY_FLUSH_BYTES && fullAt < TALLY_FLUSH_BYTES + 1024, String(fullAt));
  const t = tally.take();
  assert.ok(t !== null);
  assert.equal(decoder.decode(t.lines), expected);
  assert.equal(t.lineCount, n);
  assert.equal(tally.full, false, "taken: empty again");
  // The next batch starts from nothing, and what was taken is the tally's own copy.
  tally.allowed(allowedHttp(), T, "a.test");
  assert.equal(decoder.decode(t.lines), expected);
  assert.equal(decoder.decode(tally.take()!.lines), eventLine(allowedHttp(), T, "json"));
});
