import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { queuedSink } from "../src/log_sink.ts";

function record(n: number): LogRecord {
  return {
    category: ["proxy-please"],
    level: "info",
    message: [`line ${n}`],
    rawMessage: `line ${n}`,
    timestamp: 0,
    properties: {},
  };
}

const format = (r: LogRecord) => `${r.message[0]}\n`;

/** A writer that takes at most `chunk` bytes per call and yields to the event loop each time. */
function slowWriter(chunk: number) {
  const parts: Uint8Array[] = [];
  return {
    parts,
    text: () => new TextDecoder().decode(new Uint8Array(parts.flatMap((p) => [...p]))),
    async write(bytes: Uint8Array): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, 0));
      const n = Math.min(chunk, bytes.length);
      parts.push(bytes.slice(0, n));
      return n;
    },
  };
}

Deno.test("queuedSink: a burst far larger than a batch loses no line and keeps the order", async () => {
  const writer = slowWriter(1000);
  const sink = queuedSink(writer, format);
  for (let i = 0; i < 20_000; i++) sink(record(i));
  await sink.flush();
  const lines = writer.text().trimEnd().split("\n");
  assert.equal(lines.length, 20_000);
  assert.deepEqual(lines.slice(0, 2), ["line 0", "line 1"]);
  assert.equal(lines.at(-1), "line 19999");
  assert.equal(sink.dropped, 0);
});

Deno.test("queuedSink: past its byte bound it drops, counts, and says so in the log", async () => {
  const writer = slowWriter(1 << 20);
  const sink = queuedSink(writer, format, 100);
  for (let i = 0; i < 50; i++) sink(record(i)); // "line N\n" is 7-8 chars: ~13 fit
  await sink.flush();
  assert.ok(sink.dropped > 0);
  const text = writer.text();
  assert.match(text, new RegExp(`WARN ${sink.dropped} log lines dropped`));
  // Every line that was kept arrived whole.
  for (const line of text.trimEnd().split("\n")) assert.match(line, /^line \d+$|WARN/);
});

Deno.test("queuedSink: a writer that fails does not throw into the logger", async () => {
  const sink = queuedSink({ write: () => Promise.reject(new Error("EPIPE")) }, format);
  sink(record(1));
  await sink.flush();
  sink(record(2)); // still accepted, silently discarded
  await sink.flush();
});

Deno.test("queuedSink: a text of several lines is dropped as that many lines", async () => {
  const writer = slowWriter(1 << 20);
  const sink = queuedSink(writer, format, 100);
  sink.enqueue("a\nb\n", 2);
  sink.enqueue(`${"x".repeat(60)}\n${"y".repeat(60)}\n`, 2); // over the bound: both lost
  sink.enqueue("c\n");
  await sink.flush();
  assert.equal(sink.dropped, 2);
  const text = writer.text();
  assert.ok(text.startsWith("a\nb\nc\n"), text);
  assert.match(text, /WARN 2 log lines dropped/);
});

Deno.test("queuedSink: bytes and texts go out in the order they were queued", async () => {
  const writer = slowWriter(7);
  const sink = queuedSink(writer, format);
  const encoder = new TextEncoder();
  sink.enqueue("one\n");
  sink.enqueue(encoder.encode("two\nthree\n"), 2);
  sink.enqueue("four\n");
  sink.enqueue("five\n");
  sink.enqueue(encoder.encode("six\n"));
  await sink.flush();
  assert.equal(writer.text(), "one\ntwo\nthree\nfour\nfive\nsix\n");
  assert.equal(sink.dropped, 0);
});

Deno.test("queuedSink: lines queued as bytes one by one are written together, in order", async () => {
  const writes: number[] = [];
  const parts: Uint8Array[] = [];
  const writer = {
    write(bytes: Uint8Array): Promise<number> {
      writes.push(bytes.length);
      parts.push(bytes.slice());
      return Promise.resolve(bytes.length);
    },
  };
  const sink = queuedSink(writer, format);
  const encoder = new TextEncoder();
  let expected = "";
  for (let i = 0; i < 3000; i++) {
    const line = `line ${i} ${"x".repeat(i % 50)}\n`;
    expected += line;
    // Mostly bytes, with a text now and then and one chunk larger than a batch.
    if (i === 1500) sink.enqueue(encoder.encode(line.repeat(4000)), 4000);
    if (i === 1500) expected += line.repeat(4000);
    if (i % 700 === 0) sink.enqueue(line);
    else sink.enqueue(encoder.encode(line));
  }
  await sink.flush();
  const text = new TextDecoder().decode(new Uint8Array(parts.flatMap((p) => [...p])));
  assert.equal(text, expected);
  // About 140 KB of small lines and 0.2 MB in one chunk: a handful of writes, not thousands.
  assert.ok(writes.length < 20, `${writes.length} writes`);
  assert.ok(writes.every((n, i) => n <= 64 * 1024 || parts[i].length > 200_000));
});
