import assert from "node:assert/strict";
import fc from "fast-check";
import {
  isCanonicalHostname,
  isIpLiteral,
  MAX_HOSTNAME_LENGTH,
  normalizeByLabels,
  normalizeHostname,
  plainName,
  quoteForLog,
} from "../src/hostname.ts";

function ok(input: string, expected: string, options?: { allowUnicode?: boolean }) {
  const r = normalizeHostname(input, options);
  assert.deepEqual(r, { ok: true, name: expected }, `input ${JSON.stringify(input)}`);
}

function rejects(input: string, why?: RegExp, options?: { allowUnicode?: boolean }): string {
  const r = normalizeHostname(input, options);
  assert.equal(
    r.ok,
    false,
    `expected ${JSON.stringify(input)} to be rejected, got ${JSON.stringify(r)}`,
  );
  if (r.ok) throw new Error("unreachable");
  if (why) assert.match(r.reason, why);
  return r.reason;
}

Deno.test("normalizeHostname: lower-cases and strips exactly one trailing dot", () => {
  ok("Example.COM", "example.com");
  ok("example.com.", "example.com");
  ok("WWW.Example.Com.", "www.example.com");
  ok("localhost", "localhost");
  ok("a-b.c-d.example", "a-b.c-d.example");
  ok("0x1f.com", "0x1f.com"); // hex-looking label that is not the last one is just a name
  ok("123.example.com", "123.example.com");
  ok("r3---sn-abc.googlevideo.com", "r3---sn-abc.googlevideo.com");
  rejects("example.com..", /empty label/);
  rejects(".", /no labels/);
  rejects("", /empty/);
});

Deno.test("normalizeHostname: empty labels and leading dots are rejected", () => {
  rejects("a..b", /empty label/);
  rejects(".example.com", /empty label/);
  rejects("..", /empty label/);
});

Deno.test("normalizeHostname: strict LDH", () => {
  rejects("-a.com", /starts or ends with '-'/);
  rejects("a-.com", /starts or ends with '-'/);
  rejects("a.-b.com", /starts or ends with '-'/);
  rejects("a_b.com", /"_"/);
  rejects("a+b.com");
  rejects("a\\b.com");
  rejects("a'b.com");
  rejects('a"b.com');
  rejects("a~b.com");
  ok("a".repeat(63) + ".com", "a".repeat(63) + ".com");
  rejects("a".repeat(64) + ".com", /longer than 63/);
});

Deno.test("normalizeHostname: total length limit is 253 without the trailing dot", () => {
  const label = "a".repeat(63);
  const name253 = [label, label, label, "a".repeat(61)].join(".");
  assert.equal(name253.length, 253);
  ok(name253, name253);
  ok(name253 + ".", name253);
  const name255 = [label, label, label, "a".repeat(63)].join(".");
  rejects(name255, /longer than 253/);
  rejects("a.".repeat(5000) + "com", /too long/);
});

Deno.test("normalizeHostname: IP literals in every spelling are not names", () => {
  for (
    const s of [
      "1.2.3.4",
      "1.2.3.4.",
      "127.1",
      "2130706433",
      "0x7f.1",
      "0x7f000001",
      "0X7F.0.0.1",
      "a.0x1f",
      "foo.123",
      "example.0x",
    ]
  ) rejects(s, /IP address literal/);
  rejects("::1", /':'/);
  rejects("[::1]", /"\["/);
  rejects("2001:db8::1", /':'/);
  rejects("[2001:db8::1]:443", /"\["/);
});

Deno.test("normalizeHostname: ports, schemes, paths, userinfo, wildcards, escapes", () => {
  rejects("example.com:443", /':'/);
  rejects("http://example.com", /':'/);
  rejects("example.com/path", /'\/'/);
  rejects("user@example.com", /'@'/);
  rejects("*.example.com", /wildcard/);
  rejects("*", /wildcard/);
  rejects("%2e", /percent/);
  rejects("a%2eb.com", /percent/);
  rejects("exa%6dple.com", /percent/);
  rejects("example.com?x", /"\?"/);
  rejects("example.com#x", /"#"/);
});

Deno.test("normalizeHostname: whitespace and control characters", () => {
  rejects("ex ample.com", /whitespace/);
  rejects(" example.com", /whitespace/);
  rejects("example.com ", /whitespace/);
  rejects("example.com\t", /control/);
  rejects("example.com\n", /control/);
  rejects("example.com\r\nX-Injected: 1", /control/);
  rejects("exa\0mple.com", /control/);
  rejects("example.com\x7f", /control/);
  rejects("example.com\x85", /invisible\/control/);
  rejects("a\u200bb.com", /invisible/); // zero-width space, which IDNA would silently drop
  rejects("a\u00a0b.com", /whitespace/);
  rejects("a\u3000b.com", /whitespace/);
  rejects("a\u202eb.com", /invisible/); // right-to-left override
  rejects("\ufeffexample.com", /invisible/);
});

Deno.test("normalizeHostname: internationalised names become A-labels", () => {
  ok("bücher.de", "xn--bcher-kva.de");
  ok("BÜCHER.de", "xn--bcher-kva.de");
  ok("bücher.de.", "xn--bcher-kva.de");
  ok("xn--bcher-kva.de", "xn--bcher-kva.de");
  ok("XN--BCHER-KVA.DE", "xn--bcher-kva.de");
  ok("xn--bcher-kva.münchen.de", "xn--bcher-kva.xn--mnchen-3ya.de");
  ok("straße.de", "xn--strae-oqa.de"); // non-transitional, as WHATWG URL does
  ok("例え.jp", "xn--r8jz45g.jp");
  // NFD input is the same name as NFC input.
  ok("bu\u0308cher.de", "xn--bcher-kva.de");
});

Deno.test("normalizeHostname: lossy IDNA mappings and bad A-labels are refused", () => {
  rejects("\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com", /canonical form/); // full-width
  rejects("\ufb00.com", /canonical form/); // ligature ff
  rejects("a\u3002b", /not a valid internationalised name/); // ideographic full stop
  rejects("a\u00adb.com", /canonical form/); // soft hyphen
  rejects("xn--abc-.com", /not a valid A-label/);
  rejects("xn--zz.com", /not a valid A-label/);
  rejects("xn--.com", /not a valid A-label/);
  rejects("xn--a.com", /not a valid A-label/);
});

Deno.test("normalizeHostname: allowUnicode false refuses U-labels but takes A-labels", () => {
  rejects("bücher.de", /non-ASCII/, { allowUnicode: false });
  ok("xn--bcher-kva.de", "xn--bcher-kva.de", { allowUnicode: false });
  ok("Example.com.", "example.com", { allowUnicode: false });
});

Deno.test("normalizeHostname: reason JSON-quotes, escapes and truncates the input", () => {
  const reason = rejects("bad host\u202e" + "x".repeat(200));
  assert.match(reason, /^invalid hostname "bad host\\u202ex{71}"\.\.\.: /);
  assert.ok(reason.length < 200);
  assert.match(rejects("a\nb"), /"a\\nb"/);
});

Deno.test("quoteForLog: printable ASCII only", () => {
  assert.equal(quoteForLog("abc"), '"abc"');
  assert.equal(quoteForLog('a"\\'), '"a\\"\\\\"');
  assert.equal(quoteForLog("é\u0000"), '"\\u00e9\\u0000"');
  assert.equal(quoteForLog("y".repeat(81)), JSON.stringify("y".repeat(80)) + "...");
});

Deno.test("isIpLiteral", () => {
  for (const s of ["1.2.3.4", "::1", "[::1]", "10", "0x0a", "a.b.0x0a", "1.2.3.4."]) {
    assert.equal(isIpLiteral(s), true, s);
  }
  for (const s of ["example.com", "0x0g", "1.2.3.com", "1x", "a"]) {
    assert.equal(isIpLiteral(s), false, s);
  }
});

// A reference LDH check written independently of the implementation.
const LDH =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;
function referenceCanonical(name: string): boolean {
  if (!LDH.test(name)) return false;
  const last = name.slice(name.lastIndexOf(".") + 1);
  return !/^([0-9]+|0x[0-9a-f]*)$/.test(last);
}

const labelChars = fc.constantFrom(
  ..."abcxyzABCXYZ0189-._*:/@% \t\u00fc\u00dc\u00df\u4f8b\u200b\uff21\u3002".split(""),
);
const hostnameish = fc.oneof(
  fc.string({ unit: labelChars, maxLength: 40 }),
  fc.domain(),
  fc.webUrl(),
  fc.ipV4(),
  fc.ipV6(),
  fc.string({ maxLength: 30 }),
  fc.string({ unit: "binary", maxLength: 30 }),
);

Deno.test("property: output is canonical LDH and normalisation is idempotent", () => {
  fc.assert(
    fc.property(hostnameish, (s) => {
      const r = normalizeHostname(s);
      if (!r.ok) {
        assert.ok(r.reason.startsWith("invalid hostname "));
        return;
      }
      assert.ok(referenceCanonical(r.name), `not LDH: ${JSON.stringify(r.name)} from ${s}`);
      assert.ok(isCanonicalHostname(r.name));
      assert.ok(r.name.length <= MAX_HOSTNAME_LENGTH);
      assert.deepEqual(normalizeHostname(r.name), r);
      assert.deepEqual(normalizeHostname(r.name + "."), r);
      assert.deepEqual(normalizeHostname(r.name.toUpperCase()), r);
      assert.deepEqual(normalizeHostname(r.name, { allowUnicode: false }), r);
    }),
    { numRuns: 5000 },
  );
});

Deno.test("property: every generated domain is accepted unless its last label is numeric", () => {
  fc.assert(
    fc.property(fc.domain(), (d) => {
      const r = normalizeHostname(d);
      assert.equal(r.ok, referenceCanonical(d.toLowerCase()), d);
      if (r.ok) assert.equal(r.name, d.toLowerCase());
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: isCanonicalHostname agrees with the reference", () => {
  fc.assert(
    fc.property(fc.oneof(fc.domain(), fc.string({ unit: labelChars, maxLength: 20 })), (s) => {
      assert.equal(isCanonicalHostname(s), referenceCanonical(s), s);
    }),
    { numRuns: 3000 },
  );
});

Deno.test("property: the plain-name fast path gives the full check's answer, or leaves it to it", () => {
  // Near-miss names: the characters and shapes where the two could part (case, dots at the
  // ends and in a row, hyphens at label edges, xn-- in any case, numeric and 0x last labels,
  // labels and names at and past their length limits).
  const piece = fc.oneof(
    fc.constantFrom("a", "Z", "0", "9", "-", ".", "x", "X", "n", "N", "xn--", "XN--", "0x", "0X"),
    fc.constantFrom("_", " ", "*", ":", "%", "é", "\u0000", "ß", "1", "f", "g"),
    fc.constantFrom("a".repeat(62), "b".repeat(63), "c".repeat(64), "d".repeat(120)),
  );
  const name = fc.array(piece, { maxLength: 24 }).map((parts) => parts.join(""));
  fc.assert(
    fc.property(fc.oneof(name, fc.domain(), fc.string()), (input) => {
      const full = normalizeByLabels(input);
      assert.deepEqual(normalizeHostname(input), full);
      assert.deepEqual(
        normalizeHostname(input, { allowUnicode: false }),
        normalizeByLabels(input, { allowUnicode: false }),
      );
      const plain = plainName(input);
      if (plain !== null) assert.deepEqual(full, { ok: true, name: plain });
    }),
    { numRuns: 20_000 },
  );
  // It takes the common shapes itself.
  assert.equal(plainName("Allowed.Example."), "allowed.example");
  assert.equal(plainName("a-b.c0.test"), "a-b.c0.test");
  assert.equal(plainName("xn--bcher-kva.test"), null);
  assert.equal(plainName("host.0xff"), null);
});
