import assert from "node:assert/strict";
import fc from "fast-check";
import {
  canonicalAddress,
  canonicalAddressAt,
  canonicalIp,
  formatEndpoint,
  formatIp,
  formatIPv4,
  formatIPv6,
  isUnsafeAddress,
  isV4Mapped,
  parseIp,
  parseIPv4,
  parseIPv6,
} from "../src/ip_address.ts";
import {
  big128,
  big32,
  ip,
  isMappedBig,
  MAPPED_BASE,
  toBig,
  urlCanonical,
  v4Text,
  v6Bytes,
  v6FullText,
} from "./ip_arbitraries.ts";

// --- text forms, canonicalisation, endpoints (from ffi_sockaddr_test.ts) ---

Deno.test("formatIPv6 matches the WHATWG URL serialiser for non-mapped addresses", () => {
  fc.assert(
    fc.property(v6Bytes.filter((b) => !isV4Mapped(b)), (b) => {
      assert.equal(formatIPv6(b), urlCanonical(b));
      assert.equal(canonicalAddress(formatIPv6(b)), urlCanonical(b));
    }),
    { numRuns: 2000 },
  );
});

Deno.test("canonicalAddressAt: the canonical text of the bytes at an offset, mapped ones as IPv4", () => {
  fc.assert(
    fc.property(
      v6Bytes,
      fc.uint8Array({ minLength: 4, maxLength: 4 }),
      fc.nat({ max: 8 }),
      (b6, b4, offset) => {
        const buf = new Uint8Array(offset + 16).fill(0xee);
        buf.set(b6, offset);
        assert.equal(canonicalAddressAt(buf, offset, 6), canonicalAddress(formatIPv6(b6)));
        buf.set(b4, offset);
        assert.equal(canonicalAddressAt(buf, offset, 4), b4.join("."));
      },
    ),
    { numRuns: 2000 },
  );
  const mapped = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 7]);
  assert.equal(canonicalAddressAt(mapped, 0, 6), "198.18.0.7");
});

Deno.test("canonicalAddressAt: dotted quads stay right past the remembered texts' bound", () => {
  // Texts are remembered (up to 4,096, then it starts over): more distinct addresses than that,
  // each asked for twice, far apart, must still read back as their own bytes.
  const buf = new Uint8Array(4);
  const seen: [number, string][] = [];
  for (let i = 0; i < 10_000; i++) {
    const value = (i * 2654435761) >>> 0;
    buf[0] = value >>> 24;
    buf[1] = (value >>> 16) & 255;
    buf[2] = (value >>> 8) & 255;
    buf[3] = value & 255;
    const text = canonicalAddressAt(buf, 0, 4);
    assert.equal(text, buf.join("."));
    seen.push([value, text]);
  }
  for (const [value, text] of seen.reverse()) {
    new DataView(buf.buffer).setUint32(0, value);
    assert.equal(canonicalAddressAt(buf, 0, 4), text);
  }
});

Deno.test("canonicalAddress accepts non-canonical spellings of the same address", () => {
  fc.assert(
    fc.property(
      v6Bytes.filter((b) => !isV4Mapped(b)),
      fc.boolean(),
      fc.boolean(),
      (b, upper, pad) => {
        let text = Array.from({ length: 8 }, (_, i) => {
          const h = ((b[2 * i] << 8) | b[2 * i + 1]).toString(16);
          return pad ? h.padStart(4, "0") : h;
        }).join(":");
        if (upper) text = text.toUpperCase();
        assert.deepEqual(parseIPv6(text), b);
        assert.equal(canonicalAddress(text), urlCanonical(b));
        assert.equal(canonicalAddress(`[${text}]`), urlCanonical(b));
      },
    ),
  );
});

Deno.test("canonicalAddress examples", () => {
  assert.equal(canonicalAddress("2001:DB8:0:0:0:0:0:1"), "2001:db8::1");
  assert.equal(canonicalAddress("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(canonicalAddress("2001:db8::ff:0:0:0:1"), "2001:db8:0:ff::1");
  assert.equal(canonicalAddress("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
  assert.equal(canonicalAddress("::"), "::");
  assert.equal(canonicalAddress("::1"), "::1");
  assert.equal(canonicalAddress("fe80::1%ETH0"), "fe80::1%ETH0");
  assert.equal(canonicalAddress("Example.COM"), "example.com");
  assert.equal(canonicalAddress("010.1.1.1"), "010.1.1.1");
});

Deno.test("parsers reject malformed text", () => {
  for (
    const bad of [
      "",
      ":",
      ":::",
      "1::2::3",
      ":1::",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7::8",
      "12345::",
      "g::",
      "::1.2.3",
      "::1.2.3.256",
      "1.2.3.4::",
      "::1.2.3.4:5",
      "1:2:3:4:5:6:7:1.2.3.4",
      " ::1",
    ]
  ) {
    assert.equal(parseIPv6(bad), null, JSON.stringify(bad));
  }
  for (
    const bad of [
      "",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "01.1.1.1",
      "1.1.1.-1",
      "a.b.c.d",
      "1..1.1",
    ]
  ) {
    assert.equal(parseIPv4(bad), null, JSON.stringify(bad));
  }
  assert.deepEqual(
    parseIPv6("1:2:3:4:5:6:1.2.3.4"),
    new Uint8Array([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 1, 2, 3, 4]),
  );
  assert.deepEqual(
    parseIPv6("1:2:3:4:5:6:7::"),
    new Uint8Array([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 0]),
  );
});

Deno.test("formatEndpoint", () => {
  assert.equal(formatEndpoint("198.18.0.1", 80), "198.18.0.1:80");
  assert.equal(formatEndpoint("2001:0db8::0001", 443), "[2001:db8::1]:443");
  assert.equal(formatEndpoint("::ffff:198.18.1.10", 54321), "198.18.1.10:54321");
});

// --- parseIp / formatIp (from cidr_test.ts) ---

Deno.test("parseIp: IPv4 dotted quad", () => {
  assert.deepEqual(ip("198.18.1.10"), { family: 4, bytes: new Uint8Array([198, 18, 1, 10]) });
  assert.deepEqual(ip("0.0.0.0").bytes, new Uint8Array(4));
  assert.deepEqual(ip("255.255.255.255").bytes, new Uint8Array([255, 255, 255, 255]));
});

Deno.test("parseIp: rejects malformed IPv4 with a reason naming the input", () => {
  for (
    const bad of [
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3.-4",
      "1..2.3",
      "",
      " 1.2.3.4",
      "a.b.c.d",
      "1.2.3.4 ",
    ]
  ) {
    const r = parseIp(bad);
    assert.equal(r.ok, false, bad);
    if (!r.ok) assert.ok(r.reason.includes(`"${bad}"`), r.reason);
  }
});

Deno.test("parseIp: IPv6 forms", () => {
  assert.equal(formatIp(ip("2001:db8::10")), "2001:db8::10");
  assert.equal(formatIp(ip("2001:0DB8:0000:0000:0000:0000:0000:0010")), "2001:db8::10");
  assert.equal(formatIp(ip("::")), "::");
  assert.equal(formatIp(ip("::1")), "::1");
  assert.equal(formatIp(ip("1::")), "1::");
  assert.equal(formatIp(ip("1:2:3:4:5:6:7::")), "1:2:3:4:5:6:7:0");
  assert.equal(formatIp(ip("64:ff9b::198.18.0.1")), "64:ff9b::c612:1");
  assert.equal(formatIp(ip("::1.2.3.4")), "::102:304");
  assert.equal(formatIp(ip("1:0:0:1:0:0:0:1")), "1:0:0:1::1"); // longest run wins
  assert.equal(formatIp(ip("1:0:0:1:1:0:0:1")), "1::1:1:0:0:1"); // first of equal runs
  assert.equal(formatIp(ip("1:0:1:1:1:1:1:1")), "1:0:1:1:1:1:1:1"); // a single zero is not compressed
});

Deno.test("parseIp: rejects malformed IPv6", () => {
  for (
    const bad of [
      ":::",
      "1::2::3",
      "12345::",
      "g::1",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7",
      "1:2:3:4:5:6:7:8::",
      ":1::",
      "1::2:",
      "::1.2.3",
      "::1.2.3.4:5",
      "1:2:3:4:5:6:7:1.2.3.4",
      "[::1]",
      "fe80::1%eth0",
    ]
  ) {
    assert.equal(parseIp(bad).ok, false, bad);
  }
});

Deno.test("parseIp: zone index only when allowed", () => {
  assert.equal(parseIp("fe80::1%eth0").ok, false);
  assert.equal(formatIp(ip("fe80::1%eth0")), "fe80::1");
});

Deno.test("parseIp: IPv4-mapped IPv6 is IPv4", () => {
  assert.deepEqual(ip("::ffff:198.18.1.10"), ip("198.18.1.10"));
  assert.deepEqual(ip("::FFFF:c612:10a"), ip("198.18.1.10"));
  // IPv4-compatible (deprecated) and NAT64 forms are not mapped: they stay IPv6.
  assert.equal(ip("::198.18.1.10").family, 6);
  assert.equal(ip("64:ff9b::198.18.1.10").family, 6);
});

Deno.test("property: IPv6 formatting matches the WHATWG URL serializer and round-trips", () => {
  // Sparse values exercise zero-run compression; dense ones the plain path.
  const sparse = fc.array(fc.constantFrom(0, 0, 0, 1, 0xffff, 0xdb8), {
    minLength: 8,
    maxLength: 8,
  })
    .map((gs) => gs.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n));
  fc.assert(
    fc.property(fc.oneof(sparse, big128), (v) => {
      fc.pre(!isMappedBig(v)); // mapped addresses are IPv4 by design
      const full = v6FullText(v, true, false);
      const parsed = ip(full);
      const formatted = formatIp(parsed);
      const whatwg = new URL(`http://[${full}]/`).hostname.slice(1, -1);
      assert.equal(formatted, whatwg);
      assert.equal(toBig(ip(formatted).bytes), v);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("property: mapped IPv4 clients equal their IPv4 form", () => {
  fc.assert(
    fc.property(big32, (v) => {
      const viaMapped = ip(v6FullText(MAPPED_BASE | v, false, false));
      assert.deepEqual(viaMapped, ip(v4Text(v)));
    }),
  );
});

// --- canonicalIp / isUnsafeAddress (from destination_pin_test.ts) ---

Deno.test("canonicalIp: spellings and rejections", () => {
  const cases: [string, string | null][] = [
    ["198.19.0.1", "198.19.0.1"],
    ["::ffff:198.19.0.1", "198.19.0.1"],
    ["::FFFF:C613:1", "198.19.0.1"],
    ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["::", "::"],
    ["1::", "1::"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
    ["64:ff9b::198.19.0.1", "64:ff9b::c613:1"],
    ["198.019.0.1", null],
    ["198.19.0.256", null],
    ["198.19.0", null],
    ["1::2::3", null],
    ["1:2:3:4:5:6:7:8:9", null],
    ["::1:2:3:4:5:6:7:8", null],
    ["fe80::1%eth0", null],
    ["[::1]", null],
    ["", null],
    ["example.com", null],
  ];
  for (const [input, want] of cases) assert.equal(canonicalIp(input), want, input);
});

Deno.test("canonicalIp agrees with the URL parser on random IPv6 addresses", () => {
  fc.assert(
    fc.property(fc.ipV6(), (a) => {
      const c = canonicalIp(a);
      assert.notEqual(c, null, a);
      const viaUrl = new URL(`http://[${a}]/`).hostname.slice(1, -1);
      // WHATWG serializes IPv4-mapped addresses in hex; map ours back for comparison.
      if (c!.includes(":")) assert.equal(c, viaUrl, a);
      else assert.equal(canonicalIp(viaUrl), c, a);
      assert.equal(canonicalIp(c!), c, "idempotent");
    }),
  );
  fc.assert(
    fc.property(fc.ipV4(), (a) => {
      assert.equal(canonicalIp(a), a);
      assert.equal(canonicalIp(`::ffff:${a}`), a);
    }),
  );
});

Deno.test("isUnsafeAddress", () => {
  for (
    const a of [
      "0.1.2.3",
      "127.0.0.2",
      "169.254.0.1",
      "224.0.0.1",
      "240.0.0.1",
      "255.255.255.255",
      "::",
      "::1",
      "fe80::1",
      "febf::1",
      "ff00::1",
    ]
  ) {
    assert.equal(isUnsafeAddress(a), true, a);
  }
  for (const a of ["198.19.0.1", "10.0.0.1", "2001:db8::1", "fec0::1", "::2"]) {
    assert.equal(isUnsafeAddress(a), false, a);
  }
});

// Text near valid addresses: random edits of real ones, plus arbitrary short strings.
const nearAddress = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.ipV4().map((a) => `::ffff:${a}`),
  fc.tuple(
    fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("::", "1::", "fe80::1%eth0", "[::1]")),
    fc.nat(60),
    fc.nat(4),
    fc.constantFrom("", ":", "::", ".", "0", "00", "f", "g", "%", "[", "]", "1.2.3.4"),
  ).map(([s, at, cut, ins]) => {
    const i = at % (s.length + 1);
    return s.slice(0, i) + ins + s.slice(Math.min(s.length, i + cut));
  }),
  fc.string({ unit: fc.constantFrom(..."0123456789abcdefABCDEF:.%[]x "), maxLength: 24 }),
);

Deno.test("property: the strict, lenient and byte views of an address agree", () => {
  fc.assert(
    fc.property(nearAddress, (text) => {
      const parsed = parseIp(text);
      const canonical = canonicalIp(text);
      assert.equal(canonical, parsed.ok ? formatIp(parsed.value) : null, text);
      const v4 = parseIPv4(text);
      const v6 = parseIPv6(text);
      assert.ok(v4 === null || v6 === null, "never both families");
      assert.equal(parsed.ok, v4 !== null || v6 !== null, text);
      if (v4 !== null) assert.equal(formatIPv4(v4), canonical);
      if (v6 !== null) {
        assert.equal(isV4Mapped(v6) ? formatIPv4(v6.subarray(12)) : formatIPv6(v6), canonical);
      }
      // Without brackets or zone, the lenient form is the strict one, or the text lower-cased.
      if (!text.includes("%") && !text.startsWith("[")) {
        assert.equal(canonicalAddress(text), canonical ?? text.toLowerCase(), text);
      }
    }),
    { numRuns: 5000 },
  );
});

Deno.test("property: results do not depend on earlier calls (shared scratch buffer)", () => {
  fc.assert(
    fc.property(fc.array(v6Bytes, { minLength: 2, maxLength: 6 }), (list) => {
      const texts = list.map((b) =>
        Array.from({ length: 8 }, (_, i) => ((b[2 * i] << 8) | b[2 * i + 1]).toString(16)).join(":")
      );
      const alone = texts.map((t) => canonicalAddress(t));
      // Interleave every other entry point between the calls.
      texts.forEach((t, i) => {
        canonicalIp(texts[(i + 1) % texts.length]);
        isUnsafeAddress(texts[(i + 2) % texts.length]);
        assert.equal(canonicalAddress(t), alone[i]);
        assert.equal(canonicalIp(t), alone[i]);
        assert.equal(
          formatEndpoint(t, 1),
          alone[i].includes(":") ? `[${alone[i]}]:1` : `${alone[i]}:1`,
        );
      });
      // A compressed address right after a full one must not inherit its groups.
      assert.equal(canonicalAddress("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
      assert.equal(canonicalAddress("1::8"), "1::8");
      assert.equal(canonicalAddress("1:2:3:4:5:6:7:8"), "1:2:3:4:5:6:7:8");
      assert.equal(canonicalAddress("::1.2.3.4"), "::102:304");
    }),
  );
});

Deno.test("parseIp reasons name the failing part", () => {
  const reasons: [string, string][] = [
    ["1.2.3", "an IPv4 address has exactly four dot-separated numbers"],
    ["1.2.x.4", `"x" is not a number from 0 to 255`],
    ["1.2..4", `"" is not a number from 0 to 255`],
    ["1.2.3.1000", `"1000" is not a number from 0 to 255`],
    ["1.02.3.4", `"02" has a leading zero (ambiguous: octal in some parsers)`],
    ["1.2.300.4", `"300" is greater than 255`],
    ["::1.2.3", "embedded IPv4 part: an IPv4 address has exactly four dot-separated numbers"],
    ["::1.2.3.999", `embedded IPv4 part: "999" is greater than 255`],
    ["1::2::3", `"::" may appear only once`],
    ["1:g::", `"g" is not a 1-4 digit hex group`],
    ["1::12345", `"12345" is not a 1-4 digit hex group`],
    [":::", `"" is not a 1-4 digit hex group`],
    ["1:2:3:4:5:6:7::8", `"::" must stand for at least one group`],
    ["1:2:3:4:5:6::1.2.3.4", `"::" must stand for at least one group`],
    ["1:2:3:4:5:6:7", "an IPv6 address has eight groups (or uses ::)"],
  ];
  for (const [text, why] of reasons) {
    const r = parseIp(text);
    assert.deepEqual(r, { ok: false, reason: `"${text}" is not an IP address: ${why}` });
  }
  assert.deepEqual(parseIp("fe80::1%eth0"), {
    ok: false,
    reason: `"fe80::1%eth0": a zone index (%...) is not allowed here`,
  });
});

Deno.test("long and hostile text is rejected without throwing", () => {
  for (
    const text of [
      "1:".repeat(50_000) + "1",
      "::" + "1:".repeat(50_000) + "1",
      "1.".repeat(50_000) + "1",
      "::ffff:" + "9".repeat(50_000) + ".1.1.1",
      ":".repeat(100_000),
    ]
  ) {
    assert.equal(parseIPv6(text), null);
    assert.equal(parseIPv4(text), null);
    assert.equal(canonicalIp(text), null);
    assert.equal(parseIp(text, true).ok, false);
    assert.equal(isUnsafeAddress(text), true);
    assert.equal(canonicalAddress(text), text.toLowerCase());
  }
});

Deno.test("formatIp writes family-6 bytes in hex; formatIPv6 writes v4-mapped dotted as Deno does", () => {
  const mapped = parseIPv6("::ffff:198.18.0.1")!;
  assert.equal(formatIp({ family: 6, bytes: mapped }), "::ffff:c612:1");
  assert.equal(formatIPv6(mapped), "::ffff:198.18.0.1");
  assert.equal(formatIp({ family: 4, bytes: mapped.subarray(12) }), "198.18.0.1");
  assert.equal(canonicalAddress("[::ffff:198.18.0.1%eth0]"), "::ffff:198.18.0.1%eth0");
  assert.equal(canonicalAddress("[198.18.0.1]"), "198.18.0.1");
  assert.equal(formatEndpoint("[FE80::1%eth0]", 80), "[fe80::1%eth0]:80");
  assert.equal(isUnsafeAddress("not-an-address"), true);
});

Deno.test("isUnsafeAddress: a v4-mapped spelling is judged by its IPv4 address", () => {
  for (
    const a of ["::ffff:127.0.0.1", "::ffff:0.0.0.0", "::ffff:169.254.1.1", "::ffff:224.0.0.1"]
  ) {
    assert.equal(isUnsafeAddress(a), true, a);
  }
  assert.equal(isUnsafeAddress("::ffff:198.19.0.1"), false);
});
