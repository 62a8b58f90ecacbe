import assert from "node:assert/strict";
import fc from "fast-check";
import { type Allowlist, isAllowed, parseAllowlist } from "../src/allowlist.ts";
import { parseSourcePolicy, selectAllowlist, type SourcePolicy } from "../src/source_policy.ts";

function allowlist(text: string): Allowlist {
  const r = parseAllowlist(text);
  if (!r.ok) throw new Error(r.reason);
  return r.allowlist;
}

function policy(text: string): SourcePolicy {
  const r = parseSourcePolicy(text);
  if (!r.ok) throw new Error(r.reason);
  return r.rules;
}

const DEFAULT = allowlist("default.test");

Deno.test("parseSourcePolicy: empty text is no rules", () => {
  assert.deepEqual(policy(""), []);
  assert.deepEqual(policy("  ;\n ; "), []);
});

Deno.test("parseSourcePolicy: entries, whitespace, newlines, canonical text", () => {
  const rules = policy(
    " 10.1.0.0/16 = api.example.com, *.Example.org ;\n10.1.2.0/24=github.com\n2001:DB8::/32=v6.test",
  );
  assert.deepEqual(rules.map((r) => r.text), [
    "2001:db8::/32=v6.test",
    "10.1.2.0/24=github.com",
    "10.1.0.0/16=*.example.org,api.example.com",
  ]);
});

Deno.test("parseSourcePolicy: errors name the bad entry", () => {
  const cases: [string, RegExp][] = [
    ["10.1.0.0/16", /"10\.1\.0\.0\/16": expected CIDR=allowlist/],
    ["10.1.2.3/16=a.test", /"10\.1\.2\.3\/16=a\.test".*did you mean 10\.1\.0\.0\/16/],
    ["10.1.0.0/16=a.test; nonsense/8=b.test", /"nonsense\/8=b\.test".*not an IP address/],
    ["10.1.0.0/16=*.com", /"10\.1\.0\.0\/16=\*\.com".*invalid allowlist entry/],
    ["10.1.0.0/16=bad host", /"10\.1\.0\.0\/16=bad host"/],
    [
      "10.1.0.0/16=a.test; ::ffff:10.1.0.0/112=b.test",
      /"::ffff:10\.1\.0\.0\/112=b\.test".*10\.1\.0\.0\/16 is already given by entry "10\.1\.0\.0\/16=a\.test"/,
    ],
  ];
  for (const [text, re] of cases) {
    const r = parseSourcePolicy(text);
    assert.equal(r.ok, false, text);
    if (!r.ok) assert.match(r.reason, re);
  }
});

Deno.test("parseSourcePolicy: refuses an absurd number of rules", () => {
  const text = Array.from({ length: 1025 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24=a.test`).join(
    ";",
  );
  const r = parseSourcePolicy(text);
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.reason, /more than 1024/);
});

Deno.test("selectAllowlist: most specific network wins, else the default", () => {
  const rules = policy(
    "10.1.0.0/16=wide.test; 10.1.2.0/24=narrow.test; 10.1.2.128/25=; 0.0.0.0/0=any4.test; 2001:db8::/32=v6.test",
  );
  const pick = (client: string) => selectAllowlist(rules, DEFAULT, client);
  assert.ok(isAllowed(pick("10.1.9.9"), "wide.test"));
  assert.ok(!isAllowed(pick("10.1.9.9"), "narrow.test"));
  assert.ok(isAllowed(pick("10.1.2.5"), "narrow.test"));
  assert.ok(!isAllowed(pick("10.1.2.5"), "wide.test")); // a rule replaces, it does not add
  assert.equal(pick("10.1.2.200").entries.length, 0); // empty allowlist: deny all for that network
  assert.ok(isAllowed(pick("198.18.0.1"), "any4.test"));
  assert.ok(isAllowed(pick("::ffff:10.1.2.5"), "narrow.test")); // dual-stack spelling of an IPv4 peer
  assert.ok(isAllowed(pick("2001:db8::10"), "v6.test"));
  assert.equal(pick("2001:db9::10"), DEFAULT);
  assert.equal(pick("fe80::1%eth0"), DEFAULT);
});

Deno.test("selectAllowlist: rule order in the text does not matter", () => {
  const a = policy("10.1.2.0/24=narrow.test; 10.1.0.0/16=wide.test");
  const b = policy("10.1.0.0/16=wide.test; 10.1.2.0/24=narrow.test");
  for (const rules of [a, b]) {
    assert.ok(isAllowed(selectAllowlist(rules, DEFAULT, "10.1.2.3"), "narrow.test"));
  }
});

Deno.test("selectAllowlist: no rules means the default, even for odd input", () => {
  assert.equal(selectAllowlist([], DEFAULT, "198.18.0.1"), DEFAULT);
  assert.equal(selectAllowlist([], DEFAULT, "not an address"), DEFAULT);
});

Deno.test("selectAllowlist: an unparsable client address is denied when rules exist", () => {
  const rules = policy("10.0.0.0/8=a.test");
  const denied = selectAllowlist(rules, DEFAULT, "not an address");
  assert.ok(!isAllowed(denied, "default.test"));
  assert.ok(!isAllowed(denied, "a.test"));
});

Deno.test("property: selectAllowlist picks the longest matching prefix", () => {
  // Nested IPv4 networks around one client; the reference answer is the longest containing prefix.
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.uniqueArray(fc.integer({ min: 0, max: 32 }), { maxLength: 8 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (netBase, prefixes, client) => {
        const ipText = (v: number) => [24, 16, 8, 0].map((s) => (v >>> s) & 255).join(".");
        const mask = (p: number) => (p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0);
        const text = prefixes
          .map((p) => `${ipText((netBase & mask(p)) >>> 0)}/${p}=p${p}.test`)
          .join(";");
        const rules = policy(text);
        const matching = prefixes.filter((p) =>
          ((client & mask(p)) >>> 0) === ((netBase & mask(p)) >>> 0)
        );
        const chosen = selectAllowlist(rules, DEFAULT, ipText(client));
        if (matching.length === 0) assert.equal(chosen, DEFAULT);
        else assert.deepEqual(chosen.entries, [`p${Math.max(...matching)}.test`]);
      },
    ),
    { numRuns: 1000 },
  );
});
