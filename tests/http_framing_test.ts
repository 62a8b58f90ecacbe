import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type FramingEvent,
  type FramingInvalidReason,
  parseRequestHead,
  RequestFramingTracker,
  type RequestHead,
  scanRequestStream,
} from "../src/http_framing.ts";
import { parseHttpHead, TCHAR } from "../src/http_head.ts";
import { latin1 } from "../src/latin1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("latin1");
const b = (s: string) => enc.encode(s);

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** What a relay would do with the events: heads seen, bytes forwarded, how it ended. */
interface Summary {
  heads: RequestHead[];
  forwarded: Uint8Array;
  invalid: { reason: string; status: number; offset: number } | null;
  opaque: boolean;
}

function summarize(events: FramingEvent[]): Summary {
  const heads: RequestHead[] = [];
  const parts: Uint8Array[] = [];
  let invalid: Summary["invalid"] = null;
  let opaque = false;
  for (const e of events) {
    assert.equal(invalid, null, "nothing may follow an invalid event");
    if (e.type === "data") parts.push(e.bytes);
    else if (e.type === "head") {
      heads.push(e.head);
      parts.push(e.bytes);
    } else if (e.type === "opaque") opaque = true;
    else if (e.type === "invalid") {
      invalid = { reason: e.reason, status: e.status, offset: e.offset };
    } else assert.fail(`a tracker without awaitSwitch reported a ${e.type} event`);
  }
  return { heads, forwarded: concat(parts), invalid, opaque };
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((x, y) => x - y);
  const chunks: Uint8Array[] = [];
  let prev = 0;
  for (const p of points) {
    chunks.push(bytes.slice(prev, p)); // copies: the tracker must not rely on chunk identity
    prev = p;
  }
  chunks.push(bytes.slice(prev));
  return chunks;
}

function scan(input: string | Uint8Array | Uint8Array[], opts = {}): Summary {
  return summarize(scanRequestStream(typeof input === "string" ? b(input) : input, opts));
}

// ---------------------------------------------------------------- unit tests

Deno.test("a single GET: one head event holding exactly the head bytes, nothing as data", () => {
  const head = "GET /x HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n";
  const events = scanRequestStream(b(head));
  assert.equal(events.length, 1);
  const e = events[0];
  assert.equal(e.type, "head");
  if (e.type !== "head") return;
  assert.equal(dec.decode(e.bytes), head);
  assert.deepEqual(e.head, {
    method: "GET",
    target: "/x",
    version: "HTTP/1.1",
    host: "Example.COM",
    offset: 0,
    length: head.length,
    body: "none",
    contentLength: 0,
    opaqueAfter: false,
  });
});

Deno.test("pipelined requests with Content-Length and chunked bodies: a head at every boundary", () => {
  const r1 = "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n";
  // Bodies that look like requests must stay bodies.
  const body = "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n";
  const r2 = `POST /p HTTP/1.1\r\nHost: b.test\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
  const r3 = "PUT /c HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: Chunked\r\n\r\n" +
    `${body.length.toString(16)};name=value;flag\r\n${body}\r\n` +
    "3\r\nabc\r\n0\r\nX-Checksum: 1\r\n\r\n";
  const r4 = "GET /last HTTP/1.0\r\nHost: d.test\r\n\r\n";
  const stream = r1 + r2 + r3 + r4;
  const s = scan(stream);
  assert.equal(s.invalid, null);
  assert.deepEqual(s.heads.map((h) => [h.host, h.offset, h.body]), [
    ["a.test", 0, "none"],
    ["b.test", r1.length, "length"],
    ["c.test", r1.length + r2.length, "chunked"],
    ["d.test", r1.length + r2.length + r3.length, "none"],
  ]);
  assert.equal(dec.decode(s.forwarded), stream);
});

Deno.test("data events are views of the pushed chunk, not copies", () => {
  const chunk = b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody");
  const events = new RequestFramingTracker().push(chunk);
  assert.deepEqual(events.map((e) => e.type), ["head", "data"]);
  for (const e of events) {
    if (e.type === "data" || e.type === "head") assert.equal(e.bytes.buffer, chunk.buffer);
  }
});

Deno.test("a head split across pushes is held, then reported whole, at its stream offset", () => {
  const t = new RequestFramingTracker();
  const first = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nxy";
  assert.equal(summarize(t.push(b(first))).heads.length, 1);
  assert.equal(t.idle, true);
  const head = "GET /two HTTP/1.1\r\nHost: b\r\n\r\n";
  for (let k = 0; k < head.length - 1; k++) {
    assert.deepEqual(t.push(b(head[k])), [], "nothing is forwarded before the head is complete");
    assert.equal(t.idle, false);
  }
  const events = t.push(b(head.slice(-1)));
  assert.equal(events.length, 1);
  const e = events[0];
  assert.ok(e.type === "head");
  assert.equal(dec.decode(e.bytes), head);
  assert.equal(e.head.offset, first.length);
  assert.equal(e.head.host, "b");
  assert.equal(t.offset, first.length + head.length);
});

Deno.test("a huge Content-Length is counted, never buffered", () => {
  const t = new RequestFramingTracker();
  const events = t.push(b("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999\r\n\r\n"));
  assert.equal(events.length, 1);
  const block = new Uint8Array(65536).fill(0x47); // 'G'
  for (let k = 0; k < 16; k++) {
    const evs = t.push(block);
    assert.equal(evs.length, 1);
    assert.equal(evs[0].type, "data");
  }
  assert.equal(t.idle, false);
});

Deno.test("Upgrade and CONNECT: the head is reported, then everything is opaque data", () => {
  for (
    const head of [
      "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
      "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    ]
  ) {
    const t = new RequestFramingTracker();
    const after = "GET / HTTP/1.1\r\nHost: evil\r\n\r\n\n\r\x00";
    const events = t.push(b(head + after));
    assert.deepEqual(events.map((e) => e.type), ["head", "opaque", "data"]);
    assert.ok(events[0].type === "head" && events[0].head.opaqueAfter);
    assert.equal(t.opaque, true);
    assert.deepEqual(t.push(b(after)).map((e) => e.type), ["data"]);
  }
});

Deno.test("ambiguous or malformed framing is invalid, and nothing of the bad head is forwarded", () => {
  const h = "POST / HTTP/1.1\r\nHost: a\r\n";
  const te = h + "Transfer-Encoding: chunked\r\n\r\n";
  const cases: [string, string, number?][] = [
    ["GET / HTTP/1.1\nHost: a\r\n\r\n", "bare_lf"],
    ["GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", "bare_cr"],
    ["GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", "malformed"], // obs-fold
    ["\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed"], // empty line first
    ["GET / HTTP/1.1\r\n\r\n", "no_host"],
    ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "multiple_host"],
    ["GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", "host_mismatch"],
    ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "http2_prior_knowledge"],
    ["GET / HTTP/1.2\r\nHost: a\r\n\r\n", "malformed"],
    [h + "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "ambiguous_framing"],
    [h + "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", "ambiguous_framing"],
    [h + "Transfer-Encoding: gzip, chunked\r\n\r\n", "unsupported_transfer_encoding"],
    [h + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "ambiguous_framing"],
    [h + "Transfer-Encoding: identity\r\n\r\n", "ambiguous_framing"],
    ["POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "ambiguous_framing"],
    [h + "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", "multiple_content_length"],
    [h + "Content-Length: 5, 5\r\n\r\nhello", "bad_content_length"],
    [h + "Content-Length: +5\r\n\r\nhello", "malformed"],
    [h + "Content-Length: 1234567890123456\r\n\r\n", "malformed"],
    [te + "g\r\n", "bad_chunk_size"],
    [te + "5 \r\nhello\r\n", "bad_chunk_size"],
    [te + "\r\n", "bad_chunk_size"],
    [te + "5\nhello\r\n", "bad_chunk_size"], // bare LF after the size
    [te + "5; a=b\r\nhello\r\n", "bad_chunk_extension"],
    [te + '5;a="b"\r\nhello\r\n', "bad_chunk_extension"],
    [te + "5;=b\r\nhello\r\n", "bad_chunk_extension"],
    [te + "00000000000000005\r\n", "chunk_size_overflow"],
    [te + "20000000000000\r\n", "chunk_size_overflow"],
    [te + `1;${"a".repeat(5000)}\r\n`, "chunk_line_too_long"],
    [te + "5\r\nhelloX\r\n", "bad_chunk_terminator"],
    [te + "5\r\nhello\n0\r\n\r\n", "bad_chunk_terminator"],
    [te + "5\r\nhelloX\n0\r\n\r\n", "bad_chunk_terminator"],
    [te + "5\r\nhello\rX0\r\n\r\n", "bad_chunk_terminator"],
    [te + "0\r\nX: 1\n\r\n", "bare_lf"],
    [te + "0\r\n\n", "bare_lf"],
    [te + "0\r\n\rX", "bare_cr"],
    [te + "0\r\nX: 1\rX", "bare_cr"],
    [te + "0\r\n X: 1\r\n\r\n", "obs_fold"],
    [te + "0\r\nHost: evil\r\n\r\n", "forbidden_trailer"],
    [te + "0\r\ncontent-LENGTH: 5\r\n\r\n", "forbidden_trailer"],
    [te + "0\r\nX : 1\r\n\r\n", "bad_trailer"],
    [te + "0\r\nX: \x01\r\n\r\n", "bad_trailer"],
    [te + `0\r\nX: ${"a".repeat(9000)}\r\n\r\n`, "trailer_too_large"],
    [`GET / HTTP/1.1\r\nHost: a\r\nX: ${"a".repeat(9000)}\r\n\r\n`, "head_too_large", 431],
  ];
  for (const [input, reason, status = 400] of cases) {
    const s = scan(input);
    assert.equal(s.invalid?.reason, reason, JSON.stringify(input));
    assert.equal(s.invalid?.status, status, JSON.stringify(input));
    // Whatever was forwarded is a prefix of the input ending before the offending byte.
    assert.ok(s.forwarded.length <= s.invalid!.offset, JSON.stringify(input));
    assert.deepEqual(s.forwarded, b(input).subarray(0, s.forwarded.length));
  }
});

Deno.test("after invalid, every push repeats the same invalid event and forwards nothing", () => {
  const t = new RequestFramingTracker();
  const first = t.push(b("GET / HTTP/1.1\nHost: a\r\n\r\n"));
  assert.equal(first.length, 1);
  assert.deepEqual(t.push(b("GET / HTTP/1.1\r\nHost: a\r\n\r\n")), first);
});

Deno.test("maxHeadBytes bounds heads and is validated", () => {
  const s = scan(
    "GET / HTTP/1.1\r\nHost: a\r\nX: 0123456789012345678901234567890123456789\r\n\r\n",
    {
      maxHeadBytes: 64,
    },
  );
  assert.equal(s.invalid?.reason, "head_too_large");
  assert.equal(s.invalid?.status, 431);
  assert.equal(s.invalid?.offset, 0);
  assert.throws(() => new RequestFramingTracker({ maxHeadBytes: 8 }), RangeError);
  assert.throws(() => new RequestFramingTracker({ maxHeadBytes: 100000 }), RangeError);
});

// ----------------------------------------------------------- property tests

const hostArb = fc.oneof(
  fc.domain(),
  fc.constantFrom("a.test", "B.Example.COM", "x.y.z.test", "198.19.0.10", "[2001:db8::1]"),
);
const bodyText = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  // Bodies full of things that look like framing must never be read as framing.
  fc.array(
    fc.constantFrom(
      "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n",
      "\r\n",
      "\n",
      "0\r\n\r\n",
      "Transfer-Encoding: chunked\r\n",
      "Host: evil\r\n",
      "x",
    ),
    { maxLength: 5 },
  ).map((parts) => b(parts.join(""))),
);
const requestArb = fc.record({
  method: fc.constantFrom("GET", "POST", "PUT", "DELETE", "OPTIONS"),
  host: hostArb,
  port: fc.option(fc.integer({ min: 1, max: 65535 })),
  path: fc.webPath().map((p) => (p.startsWith("/") ? p : "/" + p)),
  version: fc.constantFrom("HTTP/1.1", "HTTP/1.0"),
  body: fc.oneof(
    fc.constant({ kind: "none" as const }),
    fc.record({ kind: fc.constant("length" as const), data: bodyText }),
    fc.record({
      kind: fc.constant("chunked" as const),
      chunks: fc.array(bodyText.filter((c) => c.length > 0), { maxLength: 4 }),
      ext: fc.boolean(),
      trailers: fc.boolean(),
    }),
  ),
});
type Req = typeof requestArb extends fc.Arbitrary<infer T> ? T : never;

function render(r: Req): Uint8Array {
  const version = r.body.kind === "chunked" ? "HTTP/1.1" : r.version;
  const host = r.port === null ? r.host : `${r.host}:${r.port}`;
  let head = `${r.method} ${r.path} ${version}\r\nHost: ${host}\r\nUser-Agent: t\r\n`;
  const parts: Uint8Array[] = [];
  if (r.body.kind === "length") {
    head += `Content-Length: ${r.body.data.length}\r\n\r\n`;
    parts.push(b(head), r.body.data);
  } else if (r.body.kind === "chunked") {
    head += "Transfer-Encoding: chunked\r\n\r\n";
    parts.push(b(head));
    for (const c of r.body.chunks) {
      parts.push(b(`${c.length.toString(16)}${r.body.ext ? ";e=1" : ""}\r\n`), c, b("\r\n"));
    }
    parts.push(b(r.body.trailers ? "0\r\nX-Sum: abc\r\n\r\n" : "0\r\n\r\n"));
  } else {
    parts.push(b(head + "\r\n"));
  }
  return concat(parts);
}

const trafficArb = fc.record({
  requests: fc.array(requestArb, { minLength: 1, maxLength: 6 }),
  upgradeTail: fc.option(fc.uint8Array({ maxLength: 64 })),
});

function renderTraffic(t: { requests: Req[]; upgradeTail: Uint8Array | null }) {
  const parts = t.requests.map(render);
  const offsets: number[] = [];
  let o = 0;
  for (const p of parts) {
    offsets.push(o);
    o += p.length;
  }
  if (t.upgradeTail !== null) {
    offsets.push(o);
    parts.push(b("GET /ws HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\n\r\n"), t.upgradeTail);
  }
  return { bytes: concat(parts), offsets };
}

const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

Deno.test("property: valid pipelined traffic gives a head at exactly every request boundary", () => {
  fc.assert(
    fc.property(trafficArb, (t) => {
      const { bytes, offsets } = renderTraffic(t);
      const s = scan(bytes);
      assert.equal(s.invalid, null);
      assert.deepEqual(s.heads.map((h) => h.offset), offsets);
      const hosts = t.requests.map((r) => r.host.replace(/^\[|\]$/g, ""));
      if (t.upgradeTail !== null) hosts.push("ws.test");
      assert.deepEqual(s.heads.map((h) => h.host), hosts);
      assert.deepEqual(s.forwarded, bytes);
      assert.equal(s.opaque, t.upgradeTail !== null);
    }),
    { numRuns: 300 },
  );
});

Deno.test("property: random splits give the same decisions as the unsplit stream", () => {
  fc.assert(
    fc.property(trafficArb, cutsArb, (t, cuts) => {
      const { bytes } = renderTraffic(t);
      assert.deepEqual(scan(splitAt(bytes, cuts)), scan(bytes));
    }),
    { numRuns: 300 },
  );
});

const mutationArb = fc.array(
  fc.record({
    op: fc.constantFrom("flip", "insert", "delete"),
    at: fc.nat(),
    byte: fc.constantFrom(0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x3b, 0x30, 0x35, 0x61, 0x00, 0xff),
  }),
  { minLength: 1, maxLength: 4 },
);

function mutate(bytes: Uint8Array, ms: { op: string; at: number; byte: number }[]): Uint8Array {
  let arr = [...bytes];
  for (const m of ms) {
    const at = m.at % (arr.length + 1);
    if (m.op === "insert") arr.splice(at, 0, m.byte);
    else if (arr.length > 0 && m.op === "delete") arr.splice(at % arr.length, 1);
    else if (arr.length > 0) arr[at % arr.length] = m.byte;
  }
  arr = arr.slice(0, 100000);
  return Uint8Array.from(arr);
}

Deno.test("property: mutated traffic never throws, is split-invariant, and heads sit on real boundaries", () => {
  fc.assert(
    fc.property(trafficArb, mutationArb, cutsArb, (t, ms, cuts) => {
      const bytes = mutate(renderTraffic(t).bytes, ms);
      const whole = scan(bytes);
      assert.deepEqual(scan(splitAt(bytes, cuts)), whole);
      assert.deepEqual(whole.forwarded, bytes.subarray(0, whole.forwarded.length));
      for (const h of whole.heads) {
        const headBytes = bytes.subarray(h.offset, h.offset + h.length);
        // The head is a head the first-request parser accepts, with the same host...
        const p = parseHttpHead(headBytes);
        assert.ok(p.kind === "head" && p.host === h.host && p.headLength === h.length);
        // ...and the bytes before it are complete messages: a fresh tracker fed
        // only that prefix ends idle, at a request boundary, without complaint.
        const prefix = new RequestFramingTracker();
        const evs = prefix.push(bytes.subarray(0, h.offset));
        assert.ok(evs.every((e) => e.type !== "invalid"));
        assert.equal(prefix.idle, true);
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("property: given the first head's verdict, the tracker decides as if it parsed it", () => {
  fc.assert(
    fc.property(trafficArb, mutationArb, cutsArb, (t, ms, cuts) => {
      const bytes = mutate(renderTraffic(t).bytes, ms);
      const firstHead = parseHttpHead(bytes);
      const chunks = splitAt(bytes, cuts);
      const given = new RequestFramingTracker({ firstHead });
      const events: FramingEvent[] = [];
      for (const c of chunks) {
        const evs = given.push(c);
        events.push(...evs);
        if (evs.some((e) => e.type === "invalid")) break;
      }
      assert.deepEqual(summarize(events), scan(bytes));
    }),
    { numRuns: 500 },
  );
});

Deno.test("a first head's verdict for another length is not taken: the parsers disagree, deny", () => {
  const bytes = b("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n");
  const longer = parseHttpHead(b("GET / HTTP/1.1\r\nHost: a.test\r\nX: y\r\n\r\n"));
  assert.equal(longer.kind, "head");
  const events = new RequestFramingTracker({ firstHead: longer }).push(bytes);
  assert.deepEqual(events.map((e) => e.type === "invalid" ? e.reason : e.type), ["malformed"]);
  // Only the first head is taken from the caller: the next one is parsed.
  const two = b("GET / HTTP/1.1\r\nHost: a.test\r\n\r\nGET / HTTP/1.1\r\nHost: b.test\r\n\r\n");
  const heads = new RequestFramingTracker({ firstHead: parseHttpHead(two) }).push(two)
    .flatMap((e) => e.type === "head" ? [e.head.host] : []);
  assert.deepEqual(heads, ["a.test", "b.test"]);
});

// The framing scan as it was written first (on strings: the head split into lines, a regular
// expression for the request line), kept here as the reference the byte scan must agree with.
const SP = 0x20, HTAB = 0x09, CR = 0x0d, LF = 0x0a;

function isOws(c: number): boolean {
  return c === SP || c === HTAB;
}

function targetAuthority(method: string, target: string): string | null {
  if (method === "CONNECT") return target;
  if (target.charCodeAt(0) === 0x2f) return null;
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  if (m === null) return null;
  const authority = m[1];
  if (authority.includes("@")) return "";
  return authority;
}

function hostPart(hostPort: string): string {
  const h = hostPort.toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? h : h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(":");
  const name = colon < 0 ? h : h.slice(0, colon);
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

function referenceParseRequestHead(
  bytes: Uint8Array,
  offset = 0,
): RequestHead | { reason: FramingInvalidReason } {
  for (let k = 0; k < bytes.length; k++) {
    const b = bytes[k];
    if ((b < SP && b !== HTAB && b !== CR && b !== LF) || b === 0x7f) {
      return { reason: "bad_header" };
    }
    if (b === LF && (k === 0 || bytes[k - 1] !== CR)) return { reason: "bare_lf" };
    if (b === CR && bytes[k + 1] !== LF) return { reason: "bare_cr" };
  }
  if (bytes.length < 4 || bytes[bytes.length - 4] !== CR || bytes[bytes.length - 1] !== LF) {
    return { reason: "bad_request_line" };
  }
  const lines = latin1(bytes, 0, bytes.length - 4).split("\r\n");
  const requestLine = lines[0];
  if (requestLine === "") return { reason: "empty_line_before_request" };
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) (HTTP\/[0-9]\.[0-9])$/.exec(
    requestLine,
  );
  if (m === null) return { reason: "bad_request_line" };
  const [, method, target, versionText] = m;
  if (versionText !== "HTTP/1.0" && versionText !== "HTTP/1.1") {
    return { reason: "unsupported_version" };
  }
  const version: "HTTP/1.0" | "HTTP/1.1" = versionText;

  let host: string | null = null;
  let contentLength: number | null = null;
  let chunked = false;
  let sawTe = false;
  let upgrade = false;
  for (let k = 1; k < lines.length; k++) {
    const line = lines[k];
    const c0 = line.charCodeAt(0);
    if (c0 === SP || c0 === HTAB) return { reason: "obs_fold" };
    const colon = line.indexOf(":");
    if (colon <= 0) return { reason: "bad_header" };
    const name = line.slice(0, colon);
    for (let j = 0; j < name.length; j++) {
      if (!TCHAR[name.charCodeAt(j)]) return { reason: "bad_header" };
    }
    // Optional whitespace is SP and HTAB only (String.trim would also take latin1's NBSP).
    let from = colon + 1, to = line.length;
    while (from < to && isOws(line.charCodeAt(from))) from++;
    while (to > from && isOws(line.charCodeAt(to - 1))) to--;
    const value = line.slice(from, to);
    switch (name.toLowerCase()) {
      case "host":
        if (host !== null) return { reason: "multiple_host" };
        host = value;
        break;
      case "content-length":
        if (contentLength !== null) return { reason: "multiple_content_length" };
        if (!/^[0-9]{1,15}$/.test(value)) return { reason: "bad_content_length" };
        contentLength = Number(value);
        break;
      case "transfer-encoding":
        if (sawTe) return { reason: "multiple_transfer_encoding" };
        sawTe = true;
        if (value.toLowerCase() !== "chunked") return { reason: "unsupported_transfer_encoding" };
        chunked = true;
        break;
      case "upgrade":
        upgrade = true;
        break;
    }
  }
  if (sawTe && contentLength !== null) return { reason: "content_length_and_transfer_encoding" };
  if (sawTe && version === "HTTP/1.0") return { reason: "unsupported_transfer_encoding" };

  const isConnect = method === "CONNECT";
  const targetHost = targetAuthority(method, target);
  if (targetHost === "") return { reason: "bad_request_line" };
  if (targetHost !== null) {
    if (host === null) host = targetHost;
    else if (hostPart(host) !== hostPart(targetHost)) return { reason: "host_mismatch" };
  }

  return {
    method,
    target,
    version,
    host: host ?? "",
    offset,
    length: bytes.length,
    body: chunked ? "chunked" : contentLength !== null ? "length" : "none",
    contentLength: contentLength ?? 0,
    opaqueAfter: upgrade || isConnect,
  };
}

const headLineArb = fc.oneof(
  fc.constantFrom(
    "Host: a.test",
    "host:a.test:8080 ",
    "HOST:\t[2001:db8::1]:80",
    "Content-Length: 5",
    "content-length:  0012",
    "Content-Length: 1234567890123456",
    "Content-Length: -1",
    "Transfer-Encoding: chunked",
    "transfer-encoding: Chunked, gzip",
    "TRANSFER-ENCODING: CHUNKED",
    "Upgrade: websocket",
    "Connection: upgrade",
    "X-Long-Header-Name-Beyond-Seventeen: v",
    "Hos: a.test",
    "Hosts: a.test",
    " Host: folded",
    "\tx",
    "Host : a.test",
    ": no name",
    "no colon",
    "Bad\u00e9Name: v",
    "X: caf\u00e9",
    "",
  ),
  fc.tuple(
    fc.stringMatching(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{0,20}$/),
    fc.constantFrom(":", ": ", ":\t", " : ", ""),
    fc.string({
      unit: fc.integer({ min: 0, max: 255 }).map((c) => String.fromCharCode(c)),
      maxLength: 20,
    }),
  ).map(([n, sep, v]) => n + sep + v),
);

const requestLineArb = fc.oneof(
  fc.constantFrom(
    "GET / HTTP/1.1",
    "GET / HTTP/1.0",
    "POST /upload HTTP/1.1",
    "CONNECT a.test:443 HTTP/1.1",
    "GET http://a.test/x HTTP/1.1",
    "GET http://u@a.test/ HTTP/1.1",
    "GET / HTTP/2.0",
    "GET / HTTP/1.2",
    "GET /  HTTP/1.1",
    "GET  / HTTP/1.1",
    "GET / HTTP/1.1 ",
    "GET / http/1.1",
    "GET / HTTP/1.",
    "G\u00c9T / HTTP/1.1",
    "GET /\u00e9 HTTP/1.1",
    "",
  ),
  fc.tuple(
    fc.string({ maxLength: 8 }),
    fc.constantFrom(" ", "  ", "\t", ""),
    fc.string({ maxLength: 12 }),
    fc.constantFrom(" HTTP/1.1", " HTTP/1.0", " HTTP/9.9", "HTTP/1.1", " HTTP/1.1 ", ""),
  ).map(([m, s, t, v]) => m + s + t + v),
);

const headArb = fc.tuple(
  requestLineArb,
  fc.array(headLineArb, { maxLength: 8 }),
  fc.constantFrom("\r\n", "\r\n", "\r\n", "\n", "\r"),
  fc.constantFrom("\r\n\r\n", "\r\n\r\n", "\r\n\r\n\r\n", "\r\n", ""),
).map(([line, headers, eol, end]) => {
  const text = [line, ...headers].join(eol) + end;
  return Uint8Array.from(text, (c) => c.charCodeAt(0) & 0xff);
});

Deno.test("property: the byte scan of a head gives what the string scan gave, for any head", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        headArb,
        fc.tuple(headArb, fc.nat(), fc.integer({ min: 0, max: 255 })).map(([h, at, byte]) => {
          const m = h.slice();
          if (m.length > 0) m[at % m.length] = byte;
          return m;
        }),
        fc.uint8Array({ maxLength: 64 }),
        // Real traffic, mutated, up to its first blank line: heads as the tracker cuts them.
        fc.tuple(trafficArb, mutationArb).map(([t, ms]) => {
          const bytes = mutate(renderTraffic(t).bytes, ms);
          const end = latin1(bytes).indexOf("\r\n\r\n");
          return end < 0 ? bytes : bytes.subarray(0, end + 4);
        }),
      ),
      fc.nat({ max: 1000 }),
      (bytes, offset) => {
        assert.deepEqual(parseRequestHead(bytes, offset), referenceParseRequestHead(bytes, offset));
      },
    ),
    { numRuns: 20_000 },
  );
});
