import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type HttpHeadResult,
  HttpHeadScanner,
  MAX_HEAD_BYTES,
  parseHttpHead,
} from "../src/http_head.ts";

/** Encode a string byte-for-byte (each UTF-16 unit must be < 256): the parser reads latin1. */
function bytes(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new Error("test input must be latin1");
    b[i] = c;
  }
  return b;
}

function parse(s: string): HttpHeadResult {
  return parseHttpHead(bytes(s));
}

function head(s: string): Extract<HttpHeadResult, { kind: "head" }> {
  const r = parse(s);
  if (r.kind !== "head") {
    throw new Error(`expected a head for ${JSON.stringify(s)}: ${JSON.stringify(r)}`);
  }
  return r;
}

function invalid(s: string, reason: string, status: 400 | 431 = 400) {
  assert.deepEqual(parse(s), { kind: "invalid", reason, status }, JSON.stringify(s.slice(0, 200)));
}

const req = (host: string, extra = "") => `GET / HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

Deno.test("parseHttpHead: a plain request", () => {
  const s = "GET /index.html?q=1 HTTP/1.1\r\nHost: Example.com\r\nAccept: */*\r\n\r\nBODY";
  assert.deepEqual(parse(s), {
    kind: "head",
    method: "GET",
    target: "/index.html?q=1",
    version: "HTTP/1.1",
    host: "Example.com", // not normalised: that is the caller's job
    headLength: s.length - 4,
  });
});

Deno.test("parseHttpHead: HTTP/1.0 with Host, header names case-insensitive", () => {
  const r = head("POST /x HTTP/1.0\r\nhOsT: a.example\r\ncontent-LENGTH: 3\r\n\r\nabc");
  assert.equal(r.version, "HTTP/1.0");
  assert.equal(r.method, "POST");
  assert.equal(r.host, "a.example");
});

Deno.test("parseHttpHead: Host port stripped, IPv6 brackets removed, OWS trimmed", () => {
  assert.equal(head(req("example.com:8080")).host, "example.com");
  assert.equal(head(req("[2001:db8::1]:443")).host, "2001:db8::1");
  assert.equal(head(req("[2001:db8::1]")).host, "2001:db8::1");
  assert.equal(head(req("[::ffff:198.18.0.1]")).host, "::ffff:198.18.0.1");
  assert.equal(head("GET / HTTP/1.1\r\nHost:\t example.com \t\r\n\r\n").host, "example.com");
  assert.equal(head("GET / HTTP/1.1\r\nHost:example.com\r\n\r\n").host, "example.com");
  assert.equal(head(req("198.18.0.1:80")).host, "198.18.0.1");
  assert.equal(head(req("example.com:65535")).host, "example.com");
  assert.equal(head(req("example.com:080")).host, "example.com");
});

Deno.test("parseHttpHead: bad_host_port", () => {
  for (
    const h of [
      "a.com:",
      "a.com:0",
      "a.com:65536",
      "a.com:123456",
      "a.com:http",
      "a.com:-1",
      "a.com:8o",
      "a:b:c",
      "[::1]:",
      "[::1]:99999",
      "a.com: 80",
    ]
  ) {
    invalid(req(h), h === "a.com: 80" ? "malformed" : "bad_host_port");
  }
});

Deno.test("parseHttpHead: malformed Host values", () => {
  for (
    const h of [
      "[::1",
      "[::1]x",
      "[]",
      "[1]",
      "[::1%eth0]",
      "[v1.x]",
      "user@a.com",
      "a.com/x",
      "a b",
      "\xe9xample.com",
      ":80",
      "a.com\x7f",
      "a.com?",
      "a#b",
    ]
  ) invalid(req(h), "malformed");
});

Deno.test("parseHttpHead: no_host and multiple_host", () => {
  invalid("GET / HTTP/1.1\r\n\r\n", "no_host");
  invalid("GET / HTTP/1.0\r\n\r\n", "no_host");
  invalid("GET / HTTP/1.1\r\nHost:\r\n\r\n", "no_host");
  invalid("GET / HTTP/1.1\r\nHost:   \r\n\r\n", "no_host");
  invalid("GET / HTTP/1.1\r\nX-Host: a.com\r\nHosts: a.com\r\n\r\n", "no_host");
  invalid(req("a.com", "Host: a.com\r\n"), "multiple_host");
  invalid(req("a.com", "host: b.com\r\n"), "multiple_host");
  invalid("GET / HTTP/1.1\r\nHost:\r\nHost: a.com\r\n\r\n", "multiple_host");
});

Deno.test("parseHttpHead: multiple_host is decided before the head ends", () => {
  assert.equal(parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n").kind, "invalid");
});

Deno.test("parseHttpHead: absolute-form and CONNECT targets must agree with Host", () => {
  assert.equal(head("GET http://a.com/x HTTP/1.1\r\nHost: a.com\r\n\r\n").host, "a.com");
  assert.equal(head("GET http://a.com/x HTTP/1.1\r\nHost: A.COM.:80\r\n\r\n").host, "A.COM.");
  assert.equal(head("GET HTTP://a.com:80 HTTP/1.1\r\nHost: a.com\r\n\r\n").host, "a.com");
  assert.equal(head("GET https://a.com/ HTTP/1.1\r\nHost: a.com:443\r\n\r\n").host, "a.com");
  assert.equal(head("GET http://a.com:81/ HTTP/1.1\r\nHost: a.com:81\r\n\r\n").host, "a.com");
  assert.equal(head("GET http://a.com?x HTTP/1.1\r\nHost: a.com\r\n\r\n").host, "a.com");
  assert.equal(head("GET http://[::1]:8/ HTTP/1.1\r\nHost: [::1]:8\r\n\r\n").host, "::1");
  invalid("GET http://a.com/x HTTP/1.1\r\nHost: b.com\r\n\r\n", "host_mismatch");
  invalid("GET http://a.com/x HTTP/1.1\r\nHost: a.com.evil\r\n\r\n", "host_mismatch");
  invalid("GET http://a.com:81/x HTTP/1.1\r\nHost: a.com\r\n\r\n", "host_mismatch");
  invalid("GET http://a.com/x HTTP/1.1\r\nHost: a.com:443\r\n\r\n", "host_mismatch");
  invalid("GET https://a.com/x HTTP/1.1\r\nHost: a.com:80\r\n\r\n", "host_mismatch");
  invalid("GET http://a.com/x HTTP/1.1\r\nHost:\r\n\r\n", "host_mismatch");
  invalid("GET http://a.com/x HTTP/1.0\r\n\r\n", "no_host");
  assert.equal(head("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:443\r\n\r\n").host, "a.com");
  assert.equal(head("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com\r\n\r\n").host, "a.com");
  invalid("CONNECT a.com:443 HTTP/1.1\r\nHost: b.com:443\r\n\r\n", "host_mismatch");
  invalid("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:80\r\n\r\n", "host_mismatch");
  // The mismatch is decided when the Host line arrives, before the head ends.
  assert.equal(parse("GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n").kind, "invalid");
});

Deno.test("parseHttpHead: request-target forms", () => {
  assert.equal(head("OPTIONS * HTTP/1.1\r\nHost: a.com\r\n\r\n").target, "*");
  invalid("GET * HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET index.html HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET ftp://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET http:///x HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET http://u@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET http://a.com:x/ HTTP/1.1\r\nHost: a.com\r\n\r\n", "bad_host_port");
  invalid("GET /#frag HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("CONNECT a.com HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("CONNECT /x HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed");
  invalid("CONNECT a.com:0 HTTP/1.1\r\nHost: a.com\r\n\r\n", "bad_host_port");
});

Deno.test("parseHttpHead: bad request lines", () => {
  for (
    const line of [
      "GET / HTTP/1.2",
      "GET / HTTP/2.0",
      "GET / HTTP/1.1 ",
      "GET / http/1.1",
      "GET / HTTP/1",
      "GET /  HTTP/1.1",
      "GET  / HTTP/1.1",
      " GET / HTTP/1.1",
      "GET\t/ HTTP/1.1",
      "GET / HTTP/1.10",
      "GET /",
      "GET",
      "",
      "G(T / HTTP/1.1",
      "GET /\xff HTTP/1.1",
      "GET /\x7f HTTP/1.1",
      "GET /\x00 HTTP/1.1",
      "PRI * HTTP/1.1",
      "PRI / HTTP/2.0",
    ]
  ) invalid(`${line}\r\nHost: a.com\r\n\r\n`, "malformed");
});

Deno.test("parseHttpHead: header syntax", () => {
  invalid(req("a.com", "Bad Name: x\r\n"), "malformed");
  invalid(req("a.com", "X-A : x\r\n"), "malformed"); // whitespace before the colon
  invalid(req("a.com", "X-A\t: x\r\n"), "malformed");
  invalid(req("a.com", ": x\r\n"), "malformed");
  invalid(req("a.com", "NoColon\r\n"), "malformed");
  invalid(req("a.com", "X-A: x\r\n continued\r\n"), "malformed"); // obs-fold
  invalid(req("a.com", "X-A: x\r\n\tcontinued\r\n"), "malformed");
  invalid(req("a.com", "X-A: x\x00y\r\n"), "malformed");
  invalid(req("a.com", "X-A: x\x01y\r\n"), "malformed");
  invalid(req("a.com", "X-A: x\x7fy\r\n"), "malformed");
  invalid(req("a.com", "X-A: x\ry\r\n"), "malformed"); // bare CR
  invalid(req("a.com", "X-\xe9: x\r\n"), "malformed");
  // Values may hold SP, HTAB and obs-text.
  assert.equal(head(req("a.com", "X-A: \t a b\t\xe9\xff \r\n")).host, "a.com");
  assert.equal(head(req("a.com", "X-Empty:\r\n")).host, "a.com");
});

Deno.test("parseHttpHead: bare LF anywhere is malformed", () => {
  invalid("GET / HTTP/1.1\nHost: a.com\r\n\r\n", "malformed");
  invalid("GET / HTTP/1.1\r\nHost: a.com\n\r\n", "malformed");
  invalid("GET / HTTP/1.1\r\nHost: a.com\r\n\n", "malformed");
  invalid("GET / HTTP/1.1\r\nHost: a.com\r\nX: y\n\n", "malformed");
  invalid("\r\nGET / HTTP/1.1\r\nHost: a.com\r\n\r\n", "malformed"); // no leading empty lines
});

Deno.test("parseHttpHead: ambiguous framing", () => {
  invalid(req("a", "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"), "ambiguous_framing");
  invalid(req("a", "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n"), "ambiguous_framing");
  invalid(req("a", "Content-Length: 1\r\nContent-Length: 2\r\n"), "ambiguous_framing");
  invalid(req("a", "Content-Length: 1, 2\r\n"), "ambiguous_framing");
  invalid(req("a", "Transfer-Encoding: gzip\r\n"), "ambiguous_framing");
  invalid(req("a", "Transfer-Encoding: chunked, gzip\r\n"), "ambiguous_framing");
  invalid(
    req("a", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    "ambiguous_framing",
  );
  invalid(req("a", "Transfer-Encoding: chunked, chunked\r\n"), "ambiguous_framing");
  invalid("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "ambiguous_framing");
  invalid(req("a", "Content-Length: -1\r\n"), "malformed");
  invalid(req("a", "Content-Length: 1a\r\n"), "malformed");
  invalid(req("a", "Content-Length: +1\r\n"), "malformed");
  invalid(req("a", "Content-Length:\r\n"), "malformed");
  invalid(req("a", "Content-Length: 1,\r\n"), "malformed");
  invalid(req("a", "Content-Length: 9999999999999999\r\n"), "malformed");
  // Allowed: equal values, and a chunked final coding.
  assert.equal(head(req("a", "Content-Length: 5\r\nContent-Length: 5\r\n")).host, "a");
  assert.equal(head(req("a", "Content-Length: 5, 5\r\n")).host, "a");
  assert.equal(head(req("a", "Content-Length: 0\r\n")).host, "a");
  assert.equal(
    head(req("a", "Transfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n")).host,
    "a",
  );
  assert.equal(head(req("a", "transfer-encoding: gzip, chunked\r\n")).host, "a");
});

Deno.test("parseHttpHead: HTTP/2 prior knowledge preface", () => {
  const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  invalid(preface, "http2_prior_knowledge");
  invalid("PRI * HTTP/2.0\r\n", "http2_prior_knowledge");
  assert.deepEqual(parse("PRI * HTTP/2.0"), { kind: "incomplete" });
});

Deno.test("parseHttpHead: too_large only without CRLFCRLF within MAX_HEAD_BYTES", () => {
  const start = "GET / HTTP/1.1\r\nHost: a.com\r\nX-Pad: ";
  const pad = (n: number) => start + "p".repeat(n - start.length);
  // A head ending exactly at the limit is fine.
  const exact = pad(MAX_HEAD_BYTES - 4) + "\r\n\r\n";
  assert.equal(exact.length, MAX_HEAD_BYTES);
  assert.equal(head(exact).headLength, MAX_HEAD_BYTES);
  assert.equal(head(exact + "body").headLength, MAX_HEAD_BYTES);
  // One byte more is too large, whether or not the terminator follows.
  const over = pad(MAX_HEAD_BYTES - 3) + "\r\n\r\n";
  invalid(over, "too_large", 431);
  invalid(pad(MAX_HEAD_BYTES), "too_large", 431);
  assert.deepEqual(parse(pad(MAX_HEAD_BYTES - 1)), { kind: "incomplete" });
  assert.deepEqual(parse(pad(MAX_HEAD_BYTES - 4) + "\r\n\r"), { kind: "incomplete" });
  invalid(pad(MAX_HEAD_BYTES - 3) + "\r\n\r", "too_large", 431);
  invalid(pad(100_000), "too_large", 431);
  // An earlier violation wins over size.
  invalid("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + "x".repeat(MAX_HEAD_BYTES), "multiple_host");
});

Deno.test("parseHttpHead: garbage is rejected without waiting for 8 KiB", () => {
  // TLS ClientHello on the HTTP port, SSH banner with a bad method, binary noise.
  invalid("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "malformed");
  assert.equal(parse("\x16").kind, "invalid");
  assert.equal(parse("\x00").kind, "invalid");
  assert.equal(parse("GET / HTTP/2").kind, "invalid");
  assert.equal(parse("GET / HTTX").kind, "invalid");
  assert.equal(parse("GET /\x00").kind, "invalid");
  assert.equal(parse("GET / HTTP/1.1\r\nX-A: \x00").kind, "invalid");
  assert.equal(parse("GET / HTTP/1.1\r\n X").kind, "invalid");
  assert.equal(parse("GET / HTTP/1.1\r\nA B").kind, "invalid");
  assert.equal(
    parse("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n").kind,
    "invalid",
  );
});

Deno.test("parseHttpHead: incomplete while the head is still arriving", () => {
  for (
    const s of [
      "",
      "G",
      "GET",
      "GET ",
      "GET /",
      "GET / HTTP/1.",
      "GET / HTTP/1.1\r",
      "GET / HTTP/1.1\r\n",
      "GET / HTTP/1.1\r\nHost",
      "GET / HTTP/1.1\r\nHost: a.com\r\n\r",
    ]
  ) {
    assert.deepEqual(parse(s), { kind: "incomplete" }, JSON.stringify(s));
  }
});

Deno.test("parseHttpHead: accepts a subarray view (offset buffer)", () => {
  const whole = bytes("XXXX" + req("a.com"));
  const r = parseHttpHead(whole.subarray(4));
  assert.equal(r.kind, "head");
});

// --- properties ---------------------------------------------------------------

const KINDS = new Set(["incomplete", "head", "invalid"]);

function checkShape(r: HttpHeadResult) {
  assert.ok(KINDS.has(r.kind));
  if (r.kind === "invalid") assert.equal(r.status, r.reason === "too_large" ? 431 : 400);
  if (r.kind === "head") {
    assert.ok(r.headLength >= 4 && r.headLength <= MAX_HEAD_BYTES);
    assert.ok(r.host.length > 0);
  }
}

/** Every prefix of `b` must be `incomplete` or exactly the verdict on `b`. */
function checkPrefixes(b: Uint8Array, final: HttpHeadResult, all: boolean) {
  const step = all || b.length < 600 ? 1 : Math.ceil(b.length / 300);
  for (let n = 0; n < b.length; n += step) {
    const r = parseHttpHead(b.subarray(0, n));
    if (r.kind !== "incomplete") assert.deepEqual(r, final, `prefix ${n} of ${b.length}`);
  }
}

const tchar = fc.constantFrom(..."!#$%&'*+-.^_`|~0123456789abcxyzABCXYZ".split(""));
const token = fc.string({ unit: tchar, minLength: 1, maxLength: 12 });
const vchar = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
const fieldValueChar = fc.oneof(
  vchar,
  fc.constantFrom(" ", "\t"),
  fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)),
);
const fieldValue = fc.string({ unit: fieldValueChar, maxLength: 40 }).map((v) => v.trim());
const originTarget = fc.string({ unit: vchar, maxLength: 60 }).map((t) =>
  "/" + t.replaceAll("#", "")
);
const otherHeader = fc.tuple(token, fieldValue).filter(([n]) =>
  !["host", "content-length", "transfer-encoding"].includes(n.toLowerCase())
).map(([n, v]) => `${n}:${v ? " " + v : ""}\r\n`);
const ipv6 = fc.ipV6().filter((a) => /^[0-9a-fA-F:.]+$/.test(a) && a.split(":").length > 2);
const hostForm = fc.oneof(
  fc.domain().map((d) => ({ wire: d, host: d })),
  fc.ipV4().map((a) => ({ wire: a, host: a })),
  ipv6.map((a) => ({ wire: `[${a}]`, host: a })),
).chain(({ wire, host }) =>
  fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }).map((port) => ({
    wire: port === undefined ? wire : `${wire}:${port}`,
    host,
  }))
);

const validRequest = fc.record({
  method: token,
  target: originTarget,
  version: fc.constantFrom("HTTP/1.0", "HTTP/1.1"),
  host: hostForm,
  hostName: fc.constantFrom("Host", "host", "HOST"),
  before: fc.array(otherHeader, { maxLength: 4 }),
  after: fc.array(otherHeader, { maxLength: 4 }),
  length: fc.option(fc.nat({ max: 1_000_000 }), { nil: undefined }),
  body: fc.string({ maxLength: 20 }).map((s) => s.replace(/[\u0100-\uffff]/g, "")),
}).map((r) => {
  const cl = r.length === undefined ? "" : `Content-Length: ${r.length}\r\n`;
  const headText = `${r.method} ${r.target} ${r.version}\r\n${r.before.join("")}` +
    `${r.hostName}: ${r.host.wire}\r\n${cl}${r.after.join("")}\r\n`;
  return { ...r, headText, wire: headText + r.body };
});

Deno.test("property: generated valid requests parse, and every prefix is incomplete", () => {
  fc.assert(
    fc.property(validRequest, (r) => {
      const b = bytes(r.wire);
      const result = parseHttpHead(b);
      assert.deepEqual(result, {
        kind: "head",
        method: r.method,
        target: r.target,
        version: r.version,
        host: r.host.host,
        headLength: r.headText.length,
      });
      for (let n = 0; n < r.headText.length; n++) {
        assert.deepEqual(parseHttpHead(b.subarray(0, n)), { kind: "incomplete" }, `prefix ${n}`);
      }
    }),
    { numRuns: 1000 },
  );
});

/** Mutations that keep inputs close to HTTP, where the interesting bugs are. */
const SPECIALS = [0x0d, 0x0a, 0x20, 0x09, 0x3a, 0x00, 0x7f, 0xff, 0x2c, 0x5b, 0x5d, 0x2f];
const mutation = fc.oneof(
  fc.record({
    kind: fc.constant("set" as const),
    at: fc.nat(),
    byte: fc.oneof(fc.constantFrom(...SPECIALS), fc.integer({ min: 0, max: 255 })),
  }),
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat(), byte: fc.constant(0) }),
  fc.record({
    kind: fc.constant("insert" as const),
    at: fc.nat(),
    byte: fc.oneof(fc.constantFrom(...SPECIALS), fc.integer({ min: 0, max: 255 })),
  }),
);
const headerSnippets = fc.constantFrom(
  "Host: b.com\r\n",
  "Content-Length: 3\r\n",
  "Content-Length: 4\r\n",
  "Transfer-Encoding: chunked\r\n",
  " folded\r\n",
  "X: y\n",
);

function mutate(b: Uint8Array, ms: { kind: string; at: number; byte: number }[]): Uint8Array {
  const a = [...b];
  for (const m of ms) {
    const at = a.length === 0 ? 0 : m.at % (a.length + 1);
    if (m.kind === "set" && at < a.length) a[at] = m.byte;
    else if (m.kind === "delete") a.splice(at, 1);
    else a.splice(at, 0, m.byte);
  }
  return new Uint8Array(a);
}

const mutatedRequest = fc.tuple(
  validRequest,
  fc.array(mutation, { maxLength: 4 }),
  fc.array(fc.tuple(fc.nat(), headerSnippets), { maxLength: 2 }),
).map(([r, ms, inserts]) => {
  let text = r.wire;
  for (const [at, snippet] of inserts) {
    // Insert whole lines at line starts, to reach the semantic checks.
    const lines = text.split("\r\n");
    const i = 1 + (at % Math.max(1, lines.length - 1));
    lines.splice(i, 0, snippet.replace(/\r\n$/, ""));
    text = lines.join("\r\n");
  }
  return mutate(bytes(text), ms);
});

const anyInput = fc.oneof(
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }) },
  {
    weight: 1,
    arbitrary: fc.string({ unit: fc.constantFrom("G", "E", "T", " ", "/", "\r", "\n", ":", "H") })
      .map(bytes),
  },
  { weight: 4, arbitrary: mutatedRequest },
);

Deno.test("property: never throws, always one of three kinds, prefixes agree", () => {
  const seen = new Map<string, number>();
  fc.assert(
    fc.property(anyInput, (b) => {
      const r = parseHttpHead(b);
      checkShape(r);
      const key = r.kind === "invalid" ? r.reason : r.kind;
      seen.set(key, (seen.get(key) ?? 0) + 1);
      checkPrefixes(b, r, false);
    }),
    { numRuns: 4000 },
  );
  // The generators must reach the interesting verdicts, or the property is weak.
  for (
    const k of ["head", "incomplete", "malformed", "multiple_host", "ambiguous_framing", "no_host"]
  ) assert.ok((seen.get(k) ?? 0) > 0, `never produced ${k}: ${JSON.stringify([...seen])}`);
});

Deno.test("property: large inputs around the limit never throw and prefixes agree", () => {
  fc.assert(
    fc.property(
      validRequest,
      fc.integer({ min: MAX_HEAD_BYTES - 200, max: MAX_HEAD_BYTES + 200 }),
      fc.array(mutation, { maxLength: 3 }),
      (r, size, ms) => {
        const padName = "X-Pad: ";
        const filler = Math.max(0, size - r.headText.length - padName.length - 2);
        const text = r.headText.slice(0, -2) + padName + "p".repeat(filler) + "\r\n\r\n";
        const b = mutate(bytes(text), ms);
        const res = parseHttpHead(b);
        checkShape(res);
        checkPrefixes(b, res, false);
        if (ms.length === 0) {
          assert.equal(res.kind, b.length <= MAX_HEAD_BYTES ? "head" : "invalid");
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("HttpHeadScanner: resumes across reads, result sticks, shorter buffer restarts", () => {
  const wire = bytes(req("a.com") + "body");
  const sc = new HttpHeadScanner();
  assert.deepEqual(sc.scan(wire.subarray(0, 5)), { kind: "incomplete" });
  assert.deepEqual(sc.scan(wire.subarray(0, 20)), { kind: "incomplete" });
  const r = sc.scan(wire);
  assert.equal(r.kind, "head");
  assert.deepEqual(sc.scan(bytes("garbage that comes after")), r);
  const again = new HttpHeadScanner();
  assert.deepEqual(again.scan(wire.subarray(0, 20)), { kind: "incomplete" });
  // A buffer that is not an extension (shorter) is scanned from scratch.
  assert.deepEqual(again.scan(bytes("\x16\x03")), {
    kind: "invalid",
    reason: "malformed",
    status: 400,
  });
});

Deno.test("HttpHeadScanner: one byte per read, never rescans what it has checked", () => {
  // Not a timing test. One buffer grows a byte at a time; after each scan we
  // overwrite with NULs every byte the scanner must never look at again: the
  // lines already complete, and the middle of the long value being received.
  // A parser that rescanned would meet the NULs and answer `malformed`.
  const text = "GET / HTTP/1.1\r\nHost: a.com\r\nX-Pad: " + "p".repeat(4000) + "\r\n\r\n";
  const buf = bytes(text);
  const pad = text.indexOf("X-Pad");
  const sc = new HttpHeadScanner();
  let lineStart = 0;
  for (let n = 1; n < buf.length; n++) {
    assert.deepEqual(sc.scan(buf.subarray(0, n)), { kind: "incomplete" }, `at ${n}`);
    if (n >= 2 && text[n - 2] === "\r" && text[n - 1] === "\n") lineStart = n;
    buf.fill(0, 0, lineStart);
    if (n - 1 > pad + 8) buf.fill(0, pad + 8, n - 1);
  }
  assert.equal(buf[0], 0); // the poison really is there
  assert.deepEqual(sc.scan(buf), {
    kind: "head",
    method: "GET",
    target: "/",
    version: "HTTP/1.1",
    host: "a.com",
    headLength: text.length,
  });
  assert.equal(parseHttpHead(buf).kind, "invalid"); // a fresh scan does see the poison
});

const chunking = fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 200 });

Deno.test("property: a scanner fed growing buffers agrees with parseHttpHead at every step", () => {
  fc.assert(
    fc.property(anyInput, chunking, (b, sizes) => {
      const sc = new HttpHeadScanner();
      let n = 0;
      let k = 0;
      while (n < b.length) {
        n = Math.min(b.length, n + sizes[k++ % sizes.length]);
        const step = sc.scan(b.subarray(0, n));
        const fresh = parseHttpHead(b.subarray(0, n));
        assert.deepEqual(step, fresh, `after ${n} of ${b.length}`);
      }
    }),
    { numRuns: 2000 },
  );
});
