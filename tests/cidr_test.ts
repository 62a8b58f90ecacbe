import assert from "node:assert/strict";
import fc from "fast-check";
import { contains, formatCidr, parseCidr } from "../src/cidr.ts";
import { big128, big32, ip, isMappedBig, toBig, v4Text, v6FullText } from "./ip_arbitraries.ts";

function cidr(text: string) {
  const r = parseCidr(text);
  if (!r.ok) throw new Error(r.reason);
  return r.value;
}

// --- BigInt reference implementation (independent of the byte-wise code under test) ---

function refContains(net: bigint, prefix: number, addr: bigint, width: number): boolean {
  const shift = BigInt(width - prefix);
  return (net >> shift) === (addr >> shift);
}

function refMask(v: bigint, prefix: number, width: number): bigint {
  const hostBits = BigInt(width - prefix);
  return (v >> hostBits) << hostBits;
}

// --- unit tests ---

Deno.test("parseCidr: accepts networks and bare hosts", () => {
  assert.equal(formatCidr(cidr("10.1.0.0/16")), "10.1.0.0/16");
  assert.equal(formatCidr(cidr("0.0.0.0/0")), "0.0.0.0/0");
  assert.equal(formatCidr(cidr("198.18.1.10")), "198.18.1.10/32");
  assert.equal(formatCidr(cidr("2001:DB8::/32")), "2001:db8::/32");
  assert.equal(formatCidr(cidr("::/0")), "::/0");
  assert.equal(formatCidr(cidr("2001:db8::1")), "2001:db8::1/128");
  assert.equal(formatCidr(cidr(" 10.0.0.0/8 ")), "10.0.0.0/8");
});

Deno.test("parseCidr: host bits set is an error with a suggestion", () => {
  const r = parseCidr("10.1.2.3/16");
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.match(r.reason, /"10\.1\.2\.3\/16"/);
    assert.match(r.reason, /host bits/);
    assert.match(r.reason, /did you mean 10\.1\.0\.0\/16\?/);
  }
  const r6 = parseCidr("2001:db8::1/32");
  assert.equal(r6.ok, false);
  if (!r6.ok) assert.match(r6.reason, /did you mean 2001:db8::\/32\?/);
});

Deno.test("parseCidr: rejects bad prefixes and addresses", () => {
  for (
    const bad of [
      "10.0.0.0/33",
      "10.0.0.0/08",
      "10.0.0.0/",
      "10.0.0.0/-1",
      "10.0.0.0/+8",
      "10.0.0.0/8/8",
      "10.0.0.0/ 8",
      "::/129",
      "::/1000",
      "10.0.0/8",
      "fe80::%eth0/64",
      "",
      "/8",
    ]
  ) {
    const r = parseCidr(bad);
    assert.equal(r.ok, false, bad);
    if (!r.ok) assert.ok(r.reason.includes(`"${bad}"`), r.reason);
  }
});

Deno.test("parseCidr: IPv4-mapped networks become IPv4, others stay IPv6", () => {
  assert.equal(formatCidr(cidr("::ffff:10.0.0.0/104")), "10.0.0.0/8");
  assert.equal(formatCidr(cidr("::ffff:0:0/96")), "0.0.0.0/0");
  // A wider IPv6 network that happens to cover the mapped range stays IPv6 (families never mix).
  assert.equal(cidr("::/80").family, 6);
  assert.equal(contains(cidr("::/80"), ip("::ffff:10.2.3.4")), false);
  const wide = parseCidr("::ffff:0:0/95");
  assert.equal(wide.ok, false);
  if (!wide.ok) assert.match(wide.reason, /did you mean ::fffe:0:0\/95\?/);
  assert.equal(contains(cidr("::ffff:10.0.0.0/104"), ip("10.2.3.4")), true);
});

Deno.test("contains: basic IPv4/IPv6 membership and family separation", () => {
  assert.equal(contains(cidr("10.1.0.0/16"), ip("10.1.255.255")), true);
  assert.equal(contains(cidr("10.1.0.0/16"), ip("10.2.0.0")), false);
  assert.equal(contains(cidr("10.1.2.0/23"), ip("10.1.3.9")), true);
  assert.equal(contains(cidr("10.1.2.0/23"), ip("10.1.4.0")), false);
  assert.equal(contains(cidr("0.0.0.0/0"), ip("198.18.0.1")), true);
  assert.equal(contains(cidr("0.0.0.0/0"), ip("::1")), false);
  assert.equal(contains(cidr("::/0"), ip("198.18.0.1")), false);
  assert.equal(contains(cidr("::/0"), ip("::ffff:198.18.0.1")), false);
  assert.equal(contains(cidr("198.18.0.0/15"), ip("::ffff:198.19.255.1")), true);
  assert.equal(contains(cidr("2001:db8::/32"), ip("2001:db8:ffff::1")), true);
  assert.equal(contains(cidr("2001:db8::/33"), ip("2001:db8:8000::1")), false);
  assert.equal(contains(cidr("198.18.1.10"), ip("198.18.1.10")), true);
  assert.equal(contains(cidr("198.18.1.10"), ip("198.18.1.11")), false);
});

// --- properties against the BigInt reference ---

Deno.test("property: IPv4 contains agrees with the BigInt reference", () => {
  fc.assert(
    fc.property(big32, fc.integer({ min: 0, max: 32 }), big32, fc.nat({ max: 32 }), fc.boolean(), (
      base,
      prefix,
      noise,
      sharedBits,
      mapped,
    ) => {
      const net = refMask(base, prefix, 32);
      // Make the client share a random number of leading bits with the network so both outcomes occur.
      const keep = refMask(net, sharedBits, 32);
      const addr = keep | (noise & ((1n << BigInt(32 - sharedBits)) - 1n));
      const c = cidr(`${v4Text(net)}/${prefix}`);
      assert.equal(toBig(c.bytes), net);
      const a = ip(mapped ? `::ffff:${v4Text(addr)}` : v4Text(addr));
      assert.equal(contains(c, a), refContains(net, prefix, addr, 32));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: IPv6 contains agrees with the BigInt reference", () => {
  fc.assert(
    fc.property(
      big128,
      fc.integer({ min: 0, max: 128 }),
      big128,
      fc.nat({ max: 128 }),
      fc.boolean(),
      fc.boolean(),
      (
        base,
        prefix,
        noise,
        sharedBits,
        pad,
        upper,
      ) => {
        const net = refMask(base, prefix, 128);
        const keep = refMask(net, sharedBits, 128);
        const addr = keep | (noise & ((1n << BigInt(128 - sharedBits)) - 1n));
        const written = `${v6FullText(net, pad, upper)}/${prefix}`;
        const r = parseCidr(written);
        const netIsMappedRange = prefix >= 96 && isMappedBig(net);
        assert.ok(r.ok, written);
        const a = ip(v6FullText(addr, !pad, upper));
        let expected = refContains(net, prefix, addr, 128);
        if (!netIsMappedRange && isMappedBig(addr)) expected = false; // a mapped client is IPv4, outside any IPv6 network
        assert.equal(contains(r.value, a), expected);
      },
    ),
    { numRuns: 2000 },
  );
});

Deno.test("property: host bits set is always rejected, never silently masked", () => {
  fc.assert(
    fc.property(fc.boolean(), big128, fc.integer({ min: 0, max: 127 }), (v6, raw, p) => {
      const width = v6 ? 128 : 32;
      const prefix = p % width;
      const value = raw & ((1n << BigInt(width)) - 1n);
      const text = v6 ? v6FullText(value, false, false) : v4Text(value);
      const r = parseCidr(`${text}/${prefix}`);
      const hostBitsSet = refMask(value, prefix, width) !== value;
      assert.equal(r.ok, !hostBitsSet);
      if (!r.ok) assert.match(r.reason, /did you mean/);
    }),
    { numRuns: 2000 },
  );
});
