import assert from "node:assert/strict";
import fc from "fast-check";
import { type Allowlist, isAllowed, parseAllowlist } from "../src/allowlist.ts";
import { normalizeHostname } from "../src/hostname.ts";

function parse(text: string): Allowlist {
  const r = parseAllowlist(text);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(text)} to parse: ${r.reason}`);
  return r.allowlist;
}

function rejects(text: string, entry: string, why?: RegExp) {
  const r = parseAllowlist(text);
  assert.equal(r.ok, false, `expected ${JSON.stringify(text)} to be rejected`);
  if (r.ok) throw new Error("unreachable");
  assert.ok(
    r.reason.startsWith(`invalid allowlist entry ${JSON.stringify(entry)}: `),
    `reason should name ${JSON.stringify(entry)}: ${r.reason}`,
  );
  if (why) assert.match(r.reason, why);
}

/** What the proxy does with a name off the wire: normalise, then ask the policy. */
function allows(list: Allowlist, wireName: string): boolean {
  const n = normalizeHostname(wireName);
  return n.ok && isAllowed(list, n.name);
}

Deno.test("parseAllowlist: empty text and empty items give a list that denies everything", () => {
  for (const text of ["", " ", ",", " , ,, "]) {
    const list = parse(text);
    assert.equal(list.exact.size, 0);
    assert.equal(list.wildcardParents.size, 0);
    assert.deepEqual(list.entries, []);
    assert.equal(allows(list, "example.com"), false);
  }
});

Deno.test("parseAllowlist: items are trimmed, case-insensitive, deduplicated, canonical", () => {
  const list = parse(" Example.COM ,*.Wild.Test.,example.com, bücher.de,,\t*.wild.test ");
  assert.deepEqual([...list.exact].sort(), ["example.com", "xn--bcher-kva.de"]);
  assert.deepEqual([...list.wildcardParents], ["wild.test"]);
  assert.deepEqual(list.entries, ["*.wild.test", "example.com", "xn--bcher-kva.de"]);
});

Deno.test("parseAllowlist: entries are independent of order (stable config hash)", () => {
  assert.deepEqual(parse("b.com,*.a.com,a.com").entries, parse("a.com, *.A.com, B.com").entries);
});

Deno.test("parseAllowlist: bad entries are rejected by name", () => {
  rejects("ok.com, *.*.example.com", "*.*.example.com", /one wildcard/);
  rejects("ex ample.com", "ex ample.com", /whitespace/);
  rejects("http://example.com", "http://example.com");
  rejects("example..com", "example..com", /empty label/);
  rejects("a*.example.com", "a*.example.com", /whole leftmost label/);
  rejects("*example.com", "*example.com", /whole leftmost label/);
  rejects("example.*.com", "example.*.com", /whole leftmost label/);
  rejects("*", "*", /whole leftmost label/);
  rejects("*.", "*.", /empty/);
  rejects("example.com:443", "example.com:443", /':'/);
  rejects("example.com/path", "example.com/path", /'\/'/);
  rejects("1.2.3.4", "1.2.3.4", /IP address/);
  rejects("*.1.2.3", "*.1.2.3", /IP address/);
  rejects("[::1]", "[::1]");
  rejects("2001:db8::1", "2001:db8::1");
  rejects("*.com", "*.com", /too broad/);
  rejects("*.COM.", "*.COM.", /too broad/);
  rejects("*.localhost", "*.localhost", /too broad/);
  rejects("%2e.com", "%2e.com", /percent/);
  rejects("-bad.com", "-bad.com");
  rejects("good.com;evil.com", "good.com;evil.com");
});

Deno.test("isAllowed: exact entry matches only that name", () => {
  const list = parse("example.com");
  assert.equal(allows(list, "example.com"), true);
  assert.equal(allows(list, "EXAMPLE.COM"), true);
  assert.equal(allows(list, "example.com."), true);
  assert.equal(allows(list, "www.example.com"), false);
  assert.equal(allows(list, "example.co"), false);
  assert.equal(allows(list, "example.com.evil"), false);
  assert.equal(allows(list, "xexample.com"), false);
});

Deno.test("isAllowed: wildcard matches exactly one label below, never the apex or two below", () => {
  const list = parse("*.example.com");
  assert.equal(allows(list, "a.example.com"), true);
  assert.equal(allows(list, "WWW.Example.COM."), true);
  assert.equal(allows(list, "example.com"), false);
  assert.equal(allows(list, "a.b.example.com"), false);
  assert.equal(allows(list, "aexample.com"), false);
  assert.equal(allows(list, "a.example.com.evil.net"), false);
  assert.equal(isAllowed(list, ".example.com"), false);
  assert.equal(isAllowed(list, ""), false);
});

Deno.test("isAllowed: wildcard plus apex when both are listed", () => {
  const list = parse("example.com,*.example.com");
  assert.equal(allows(list, "example.com"), true);
  assert.equal(allows(list, "x.example.com"), true);
  assert.equal(allows(list, "x.y.example.com"), false);
});

Deno.test("isAllowed: trailing dots on either side", () => {
  for (const rule of ["example.com.", "example.com"]) {
    const list = parse(`${rule}, *.${rule}`);
    for (const host of ["example.com", "example.com.", "a.example.com", "a.example.com."]) {
      assert.equal(allows(list, host), true, `${rule} vs ${host}`);
    }
    assert.equal(allows(list, "example.com.."), false);
  }
});

Deno.test("isAllowed: matches only on label boundaries", () => {
  const list = parse("trusted.net, *.good.org");
  assert.equal(allows(list, "trusted.net"), true);
  assert.equal(allows(list, "untrusted.net"), false);
  assert.equal(allows(list, "x.trusted.net"), false);
  assert.equal(allows(list, "a.good.org"), true);
  assert.equal(allows(list, "a.notgood.org"), false);
  assert.equal(allows(list, "notgood.org"), false);
});

Deno.test("isAllowed: IDN entries and hosts match across U-label and A-label forms", () => {
  for (const rule of ["bücher.de", "xn--bcher-kva.de", "BÜCHER.DE"]) {
    const list = parse(rule);
    assert.equal(allows(list, "bücher.de"), true, rule);
    assert.equal(allows(list, "xn--bcher-kva.de"), true, rule);
    assert.equal(allows(list, "XN--BCHER-KVA.DE."), true, rule);
    assert.equal(allows(list, "bucher.de"), false, rule);
  }
  const wild = parse("*.münchen.de");
  assert.equal(allows(wild, "bücher.xn--mnchen-3ya.de"), true);
  assert.equal(allows(wild, "www.münchen.de"), true);
  assert.equal(allows(wild, "xn--mnchen-3ya.de"), false);
});

Deno.test("isAllowed: hosts that are not canonical never match (deny on doubt)", () => {
  const list = parse("example.com, *.example.com");
  assert.equal(isAllowed(list, "EXAMPLE.COM"), false);
  assert.equal(isAllowed(list, "example.com."), false);
  assert.equal(isAllowed(list, "a.example.com."), false);
});

// --- property: isAllowed agrees with a naive reference ---------------------

/** Naive reference: compare label arrays, no sets, no string slicing tricks. */
function referenceAllowed(rules: string[], host: string): boolean {
  const h = host.split(".");
  for (const rule of rules) {
    const r = rule.split(".");
    if (r[0] === "*") {
      if (h.length !== r.length) continue;
      if (r.slice(1).every((label, i) => label === h[i + 1])) return true;
    } else if (r.length === h.length && r.every((label, i) => label === h[i])) {
      return true;
    }
  }
  return false;
}

// A tiny alphabet so random rules and hosts often collide, including near misses.
const label = fc.constantFrom("a", "b", "ab", "ba", "x-y", "trusted", "untrusted", "com", "net");
const name = fc.array(label, { minLength: 1, maxLength: 4 }).map((ls) => ls.join("."));
const rule = fc.oneof(
  name,
  fc.array(label, { minLength: 2, maxLength: 3 }).map((ls) => "*." + ls.join(".")),
);

/** A host derived from a rule, often just inside or just outside it. */
function nearRule(rules: string[]): fc.Arbitrary<string> {
  if (rules.length === 0) return name;
  return fc.tuple(fc.constantFrom(...rules), label, fc.constantFrom("same", "more", "less")).map(
    ([r, l, how]) => {
      const labels = r.replace("*", l).split(".");
      if (how === "more") labels.unshift(l);
      if (how === "less" && labels.length > 1) labels.shift();
      return labels.join(".");
    },
  );
}

Deno.test("property: isAllowed agrees with a reference implementation", () => {
  let matched = 0;
  let runs = 0;
  fc.assert(
    fc.property(
      fc.array(rule, { maxLength: 5 }).chain((rules) =>
        fc.tuple(fc.constant(rules), fc.oneof(name, nearRule(rules)))
      ),
      fc.boolean(),
      fc.boolean(),
      ([rules, host], upper, dot) => {
        const text = rules.map((r) => (upper ? r.toUpperCase() : r) + (dot ? "." : "")).join(
          " , ",
        );
        const list = parse(text);
        const wire = (upper ? host : host.toUpperCase()) + (dot ? "" : ".");
        const expected = referenceAllowed(rules, host);
        runs++;
        if (expected) matched++;
        assert.equal(allows(list, wire), expected, `${text} vs ${wire}`);
      },
    ),
    { numRuns: 5000 },
  );
  // The generators must exercise both outcomes, or the property proves nothing.
  assert.ok(matched > runs / 10 && matched < runs * 0.9, `${matched} of ${runs} allowed`);
});
