import assert from "node:assert/strict";
import fc from "fast-check";
import { type Allowlist, parseAllowlist } from "../src/allowlist.ts";
import {
  decideHttp,
  decideName,
  decideTls,
  type Decision,
  denialMessage,
  denialResponse,
} from "../src/decision.ts";
import { type HttpHeadResult, parseHttpHead } from "../src/http_head.ts";

function allowlist(text: string): Allowlist {
  const r = parseAllowlist(text);
  if (!r.ok) throw new Error(r.reason);
  return r.allowlist;
}

const LIST = allowlist("example.com, *.wild.test, bücher.de");
const EMPTY = allowlist("");

type Head = Exclude<HttpHeadResult, { kind: "incomplete" }>;

function head(host: string): Head {
  return { kind: "head", method: "GET", target: "/", version: "HTTP/1.1", host, headLength: 40 };
}

function hello(serverName: string | null) {
  return { kind: "hello" as const, serverName, alpn: [], ech: false, bytesUsed: 100 };
}

/** Splits a response into status line, headers (lower-case names) and body bytes. */
function parseResponse(bytes: Uint8Array) {
  const text = new TextDecoder("latin1").decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  assert.ok(end > 0, "head ends with CRLFCRLF");
  const [statusLine, ...headerLines] = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of headerLines) {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+): (.*)$/.exec(line);
    assert.ok(m !== null, `header line ${JSON.stringify(line)}`);
    assert.ok(!headers.has(m[1].toLowerCase()), `duplicate ${m[1]}`);
    headers.set(m[1].toLowerCase(), m[2]);
  }
  const headBytes = new TextEncoder().encode(text.slice(0, end + 4)).length;
  return { statusLine, headers, body: bytes.subarray(headBytes) };
}

Deno.test("decideHttp: an invalid head is denied with its own reason and status", () => {
  const cases: Head[] = [
    { kind: "invalid", reason: "no_host", status: 400 },
    { kind: "invalid", reason: "malformed", status: 400 },
    { kind: "invalid", reason: "too_large", status: 431 },
    { kind: "invalid", reason: "multiple_host", status: 400 },
  ];
  for (const h of cases) {
    if (h.kind !== "invalid") continue;
    assert.deepEqual(decideHttp(h, LIST), { allowed: false, reason: h.reason, status: h.status });
  }
});

Deno.test("decideHttp: allowed names come back canonical", () => {
  for (
    const [host, name] of [
      ["example.com", "example.com"],
      ["EXAMPLE.com.", "example.com"],
      ["a.wild.test", "a.wild.test"],
      ["A-1.Wild.Test", "a-1.wild.test"],
      ["xn--bcher-kva.de", "xn--bcher-kva.de"],
    ]
  ) {
    assert.deepEqual(decideHttp(head(host), LIST), { allowed: true, name }, host);
  }
});

Deno.test("decideHttp: valid names off the list are not_allowed (403) with the canonical name", () => {
  for (
    const [host, name] of [
      ["wild.test", "wild.test"], // the apex is not covered by its wildcard
      ["a.b.wild.test", "a.b.wild.test"], // two labels below is not covered
      ["Other.Example.com", "other.example.com"],
      ["example.com.evil.test", "example.com.evil.test"],
      ["notexample.com", "notexample.com"],
    ]
  ) {
    assert.deepEqual(
      decideHttp(head(host), LIST),
      { allowed: false, reason: "not_allowed", status: 403, name },
      host,
    );
  }
  assert.deepEqual(decideHttp(head("example.com"), EMPTY), {
    allowed: false,
    reason: "not_allowed",
    status: 403,
    name: "example.com",
  });
});

Deno.test("decideHttp: names that are not DNS names are invalid_host, keeping the raw text", () => {
  for (const host of ["1.2.3.4", "ex_ample.com", "example..com", "-a.example.com", "", "a b"]) {
    const d = decideHttp(head(host), LIST);
    assert.deepEqual(d, { allowed: false, reason: "invalid_host", status: 403, raw: host }, host);
  }
});

Deno.test("decideHttp: a non-ASCII Host is refused even when its IDN is allowed", () => {
  // Defence in depth: names read off the wire are never converted from Unicode (an HTTP Host
  // is ASCII on the wire; parseHttpHead already refuses such bytes).
  const d = decideHttp(head("bücher.de"), LIST);
  assert.equal(d.allowed, false);
});

Deno.test("decideHttp: on a real parsed head", () => {
  const parsed = parseHttpHead(
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: A.Wild.Test:8080\r\n\r\n"),
  );
  if (parsed.kind !== "head") throw new Error(`expected a head, got ${parsed.kind}`);
  assert.deepEqual(decideHttp(parsed, LIST), { allowed: true, name: "a.wild.test" });
  const noHost = parseHttpHead(new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
  if (noHost.kind === "incomplete") throw new Error("incomplete");
  assert.deepEqual(decideHttp(noHost, LIST), { allowed: false, reason: "no_host", status: 400 });
});

Deno.test("decideTls: invalid hello, no SNI, allowed, not allowed, invalid SNI", () => {
  assert.deepEqual(decideTls({ kind: "invalid", reason: "not_tls" }, LIST), {
    allowed: false,
    reason: "not_tls",
    status: 400,
  });
  assert.deepEqual(decideTls(hello(null), LIST), { allowed: false, reason: "no_sni", status: 400 });
  assert.deepEqual(decideTls(hello("Example.COM"), LIST), { allowed: true, name: "example.com" });
  assert.deepEqual(decideTls(hello("x.wild.test"), LIST), { allowed: true, name: "x.wild.test" });
  assert.deepEqual(decideTls(hello("blocked.com"), LIST), {
    allowed: false,
    reason: "not_allowed",
    status: 403,
    name: "blocked.com",
  });
  assert.deepEqual(decideTls(hello("10.0.0.1"), LIST), {
    allowed: false,
    reason: "invalid_sni",
    status: 403,
    raw: "10.0.0.1",
  });
  assert.deepEqual(decideTls(hello("*.wild.test"), LIST), {
    allowed: false,
    reason: "invalid_sni",
    status: 403,
    raw: "*.wild.test",
  });
  // An empty allowlist denies every hello.
  assert.equal(decideTls(hello("example.com"), EMPTY).allowed, false);
});

Deno.test("decideName: the caller's reason word is used for an invalid name", () => {
  assert.deepEqual(decideName("a..b", LIST, "whatever"), {
    allowed: false,
    reason: "whatever",
    status: 403,
    raw: "a..b",
  });
  assert.deepEqual(decideName("example.com", LIST, "whatever"), {
    allowed: true,
    name: "example.com",
  });
});

Deno.test("decideName: allows exactly what the allowlist matches, for any input", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.domain(),
        fc.string({ unit: "binary", maxLength: 80 }),
        fc.constantFrom("example.com", "a.wild.test", "wild.test", "x.y.wild.test"),
      ),
      (raw) => {
        const d = decideName(raw, LIST, "invalid_host");
        if (d.allowed) {
          const name = d.name;
          const parent = name.slice(name.indexOf(".") + 1);
          assert.ok(
            name === "example.com" || name === "xn--bcher-kva.de" ||
              (parent === "wild.test" && name.indexOf(".") > 0),
            `${JSON.stringify(raw)} allowed as ${name}`,
          );
        } else {
          assert.ok(d.reason === "invalid_host" || d.reason === "not_allowed");
          assert.equal(d.status, 403);
        }
        assert.equal(decideName(raw, EMPTY, "invalid_host").allowed, false);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("denialMessage: one fixed sentence per reason; only a canonical name is shown", () => {
  const d = (reason: string, extra: Partial<Extract<Decision, { allowed: false }>> = {}) =>
    denialMessage({ allowed: false, reason, status: 403, ...extra });
  assert.equal(d("not_allowed", { name: "blocked.com" }), "blocked.com is not on the allowlist");
  assert.equal(d("no_host"), "the request has no Host header");
  assert.equal(d("invalid_host", { raw: "<script>" }), "the Host is not a valid DNS name");
  assert.equal(d("too_large"), "the request head is too large");
  assert.equal(d("malformed"), "request refused (malformed)");
  assert.equal(d("invalid_sni", { raw: "<x>" }), "request refused (invalid_sni)");
});

Deno.test("denialResponse: a valid HTTP/1.1 response with the right Content-Length", () => {
  const statuses: [400 | 403 | 431 | 502, string][] = [
    [400, "Bad Request"],
    [403, "Forbidden"],
    [431, "Request Header Fields Too Large"],
    [502, "Bad Gateway"],
  ];
  for (const [status, text] of statuses) {
    for (const message of ["blocked.com is not on the allowlist", "bücher ✓ 𝄞", ""]) {
      const bytes = denialResponse(status, message);
      const r = parseResponse(bytes);
      assert.equal(r.statusLine, `HTTP/1.1 ${status} ${text}`);
      assert.equal(r.headers.get("content-length"), String(r.body.length));
      assert.equal(new TextDecoder().decode(r.body), `proxy-please: ${message}\n`);
      assert.equal(r.headers.get("connection"), "close");
      assert.equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
      assert.equal(r.headers.get("cache-control"), "no-store");
    }
  }
});

Deno.test("denied responses never reflect an invalid name, whatever the client sends", () => {
  fc.assert(
    fc.property(fc.string({ unit: "binary", minLength: 1, maxLength: 200 }), (raw) => {
      const d = decideHttp(head(raw), LIST);
      if (d.allowed) return;
      const bytes = denialResponse(d.status, denialMessage(d));
      const r = parseResponse(bytes);
      const body = new TextDecoder().decode(r.body);
      assert.equal(r.headers.get("content-length"), String(r.body.length));
      if (d.reason === "invalid_host") {
        assert.equal(body, "proxy-please: the Host is not a valid DNS name\n");
      } else {
        // Only a canonical name (lower-case LDH, A-labels) reaches the body.
        assert.equal(d.reason, "not_allowed");
        assert.match(d.name ?? "", /^[a-z0-9.-]+$/);
        assert.equal(body, `proxy-please: ${d.name} is not on the allowlist\n`);
      }
      assert.match(new TextDecoder().decode(bytes), /^[\x20-\x7e\r\n]*$/);
    }),
    { numRuns: 2000 },
  );
});
