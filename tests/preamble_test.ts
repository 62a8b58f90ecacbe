import assert from "node:assert/strict";
import { type HttpHeadResult, MAX_HEAD_BYTES, parseHttpHead } from "../src/http_head.ts";
import { readPreamble } from "../src/preamble.ts";
import {
  closeIfOpen,
  readExactly,
  readToEnd,
  resetFrom,
  tcpPair,
  within,
  writeAll,
} from "./fixtures/core_net.ts";

const enc = (s: string) => new TextEncoder().encode(s);

type Incomplete = { kind: "incomplete" };

/** Never decides: the read ends only by EOF, deadline, size or error. */
const never = (_: Uint8Array): Incomplete | { kind: "done" } => ({ kind: "incomplete" });

/** Decides at the first newline. */
const line = (bytes: Uint8Array): Incomplete | { kind: "line"; at: number } => {
  const at = bytes.indexOf(0x0a);
  return at < 0 ? { kind: "incomplete" } : { kind: "line", at };
};

Deno.test("readPreamble: a head sent in pieces is decided once complete; bytes are verbatim", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    const pieces = ["GET /x HTTP/1.1\r\n", "Ho", "st: Example.com\r", "\nAccept: */*\r\n", "\r\n"];
    // Each piece is written only after the parser has seen everything before it, so every
    // piece is its own read and the parser is asked again after each.
    const seen: number[] = [];
    let parsed: () => void = () => {};
    const parse = (bytes: Uint8Array): HttpHeadResult => {
      seen.push(bytes.length);
      parsed();
      const r = parseHttpHead(bytes);
      // A plain `incomplete` (no hint how many bytes to wait for): ask after every read.
      return r.kind === "incomplete" ? { kind: "incomplete" } : r;
    };
    const writer = (async () => {
      for (const piece of pieces) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const wait = new Promise<void>((resolve) => {
          parsed = resolve;
          timer = setTimeout(resolve, 10_000); // hang guard only
        });
        await writeAll(client, enc(piece));
        await wait;
        clearTimeout(timer);
      }
    })();
    const result = await within(
      readPreamble(server, parse, MAX_HEAD_BYTES, 60_000),
      30_000,
      "read",
    );
    await writer;
    const sent = pieces.join("");
    assert.equal(result.ok, true);
    if (!result.ok) return;
    assert.equal(result.verdict.kind, "head");
    if (result.verdict.kind === "head") assert.equal(result.verdict.host, "Example.com");
    assert.deepEqual(result.bytes, enc(sent));
    let total = 0;
    assert.deepEqual(seen, pieces.map((p) => total += p.length));
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: bytes after the head in the same read are kept for the upstream", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    const sent = enc("POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello");
    await writeAll(client, sent);
    // Wait for the whole write to be readable: the peer's close marks the end.
    await client.closeWrite();
    const result = await readPreamble(server, parseHttpHead, MAX_HEAD_BYTES, 60_000);
    assert.equal(result.ok, true);
    if (!result.ok || result.verdict.kind !== "head") throw new Error("no head");
    // Whatever the read boundaries, the bytes returned start with the head and the
    // rest of the stream continues right after them.
    assert.deepEqual(result.bytes, sent.subarray(0, result.bytes.length));
    assert.ok(result.bytes.length >= result.verdict.headLength);
    const rest = await readToEnd(server);
    assert.deepEqual(rest, sent.subarray(result.bytes.length));
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: a long preamble grows the buffer and comes back byte for byte", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    const sent = new Uint8Array(50_000);
    crypto.getRandomValues(sent);
    for (let i = 0; i < sent.length; i++) if (sent[i] === 0x0a) sent[i] = 0x0b;
    sent[sent.length - 1] = 0x0a;
    const writer = writeAll(client, sent);
    const result = await within(readPreamble(server, line, 60_000, 60_000), 30_000, "read");
    await writer;
    assert.equal(result.ok, true);
    if (!result.ok) return;
    assert.deepEqual(result.verdict, { kind: "line", at: sent.length - 1 });
    assert.deepEqual(result.bytes, sent);
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: too_large after exactly maxBytes undecided bytes", async () => {
  for (const maxBytes of [1, 100, 4096, 4097, 20_000]) {
    const { a: client, b: server } = await tcpPair();
    try {
      const sent = new Uint8Array(maxBytes + 1000).map((_, i) => 0x41 + (i % 26));
      const writer = writeAll(client, sent);
      const result = await within(readPreamble(server, never, maxBytes, 60_000), 30_000, "read");
      assert.deepEqual(result.ok, false);
      if (result.ok) return;
      assert.equal(result.reason, "too_large", `maxBytes ${maxBytes}`);
      assert.deepEqual(result.bytes, sent.subarray(0, maxBytes));
      await writer;
    } finally {
      client.close();
      closeIfOpen(server);
    }
  }
});

Deno.test("readPreamble: a decision on exactly maxBytes bytes is a decision, not too_large", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    await writeAll(client, enc("abcdefghi\n"));
    const result = await readPreamble(server, line, 10, 60_000);
    assert.deepEqual(result.ok && result.verdict, { kind: "line", at: 9 });
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: EOF before a decision is closed, with the bytes sent", async () => {
  for (const text of ["", "G", "GET / HTTP/1.1\r\nHost: a"]) {
    const { a: client, b: server } = await tcpPair();
    try {
      await writeAll(client, enc(text));
      await client.closeWrite();
      const result = await within(
        readPreamble(server, parseHttpHead, MAX_HEAD_BYTES, 60_000),
        30_000,
        "read",
      );
      assert.deepEqual(result, { ok: false, reason: "closed", bytes: enc(text) });
      // On failures other than timeout the caller closes: the connection is still open.
      assert.equal(closeIfOpen(server), true);
    } finally {
      client.close();
      closeIfOpen(server);
    }
  }
});

Deno.test("readPreamble: a connection reset ends the read without a verdict", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    await writeAll(client, enc("GET / HT"));
    await resetFrom(client, server);
    const result = await within(
      readPreamble(server, parseHttpHead, MAX_HEAD_BYTES, 60_000),
      30_000,
      "read",
    );
    assert.equal(result.ok, false);
    if (result.ok) return;
    // Deno 2 reports ECONNRESET on a read as EOF (null), so "closed" is what a reset gives
    // here; "read_error" is what any other read failure gives.
    assert.ok(["closed", "read_error"].includes(result.reason), result.reason);
    assert.deepEqual(result.bytes, enc("GET / HT"));
  } finally {
    closeIfOpen(client);
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: a silent client times out and its connection is closed", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    const result = await within(
      readPreamble(server, parseHttpHead, MAX_HEAD_BYTES, 100),
      30_000,
      "read",
    );
    assert.deepEqual(result, { ok: false, reason: "timeout", bytes: new Uint8Array(0) });
    assert.equal(closeIfOpen(server), false, "readPreamble closed the connection");
    // The client sees the close.
    assert.equal(await within(client.read(new Uint8Array(1)), 30_000, "client read"), null);
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: the deadline is for the whole preamble, not per read (trickling client)", async () => {
  const { a: client, b: server } = await tcpPair();
  let trickling = true;
  let sent = 0;
  // One byte every 50 ms, for up to 1200 bytes (a minute): the deadline below is 500 ms, so
  // a per-read deadline would never fire while the client trickles.
  const head = enc("GET / HTTP/1.1\r\nX-Slow: " + "a".repeat(2000));
  const trickle = (async () => {
    try {
      for (; sent < 1200; sent++) {
        await client.write(head.subarray(sent, sent + 1));
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    } catch {
      // The proxy side closed at its deadline: the write fails, as it should.
    } finally {
      trickling = false;
    }
  })();
  try {
    const result = await within(
      readPreamble(server, parseHttpHead, MAX_HEAD_BYTES, 500),
      60_000,
      "read",
    );
    const stillTrickling = trickling;
    assert.equal(result.ok, false);
    if (result.ok) return;
    assert.equal(result.reason, "timeout");
    assert.ok(stillTrickling, "timed out while the client was still sending");
    assert.ok(result.bytes.length < 1200, `${result.bytes.length} bytes read`);
    assert.deepEqual(result.bytes, head.subarray(0, result.bytes.length));
    assert.equal(closeIfOpen(server), false, "closed at the deadline");
  } finally {
    client.close(); // ends the trickle: its next write fails
    await trickle;
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: a timeout that fires after the decision does nothing", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    await writeAll(client, enc("hi\n"));
    const result = await readPreamble(server, line, 100, 50);
    assert.equal(result.ok, true);
    // Past the deadline, the connection is still usable.
    await new Promise((resolve) => setTimeout(resolve, 150));
    await writeAll(server, enc("ok"));
    const got = await within(readExactly(client, 2), 30_000, "client read");
    assert.equal(new TextDecoder().decode(got), "ok");
    assert.equal(closeIfOpen(server), true, "still open");
  } finally {
    client.close();
    closeIfOpen(server);
  }
});

Deno.test("readPreamble: a parser's needBytes hint defers the next parse, not the verdict", async () => {
  const { a: client, b: server } = await tcpPair();
  try {
    const seen: number[] = [];
    // Wants 10 bytes before it can say anything, then decides at the first newline.
    const parse = (bytes: Uint8Array) => {
      seen.push(bytes.length);
      if (bytes.length < 10) return { kind: "incomplete" as const, needBytes: 10 };
      return line(bytes);
    };
    const writer = (async () => {
      for (const piece of ["ab", "cdef", "ghij", "kl\n"]) {
        await writeAll(client, enc(piece));
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const result = await within(readPreamble(server, parse, 100, 60_000), 30_000, "read");
    await writer;
    assert.deepEqual(result.ok && result.verdict, { kind: "line", at: 12 });
    assert.deepEqual(result.bytes, enc("abcdefghijkl\n"));
    // Asked at the first read, then not again before 10 bytes were in.
    assert.ok(seen.length >= 1 && seen[0] < 10);
    assert.ok(seen.slice(1).every((n) => n >= 10), `parse asked at ${seen}`);
  } finally {
    client.close();
    closeIfOpen(server);
  }
});
