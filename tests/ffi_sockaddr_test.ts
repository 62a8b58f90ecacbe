import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  encodeSockaddrIn,
  encodeSockaddrIn6,
  encodeSockaddrInto,
} from "../ffi/sockaddr.ts";
import { canonicalAddress, formatIPv6, isV4Mapped, parseIPv6 } from "../src/ip_address.ts";
import { v6Bytes } from "./ip_arbitraries.ts";

const port = fc.integer({ min: 0, max: 65535 });

Deno.test("sockaddr_in round trip", () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 4, maxLength: 4 }), port, (b, p) => {
      const text = `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
      const raw = encodeSockaddrIn(text, p);
      assert.equal(raw.length, 16);
      assert.deepEqual(decodeSockaddr(raw, raw.length), { family: 4, address: text, port: p });
    }),
  );
});

Deno.test("sockaddr_in layout: family in host order, port and address in network order", () => {
  const raw = encodeSockaddrIn("198.18.0.99", 0x1f90);
  assert.deepEqual([...raw.subarray(0, 8)], [AF_INET, 0, 0x1f, 0x90, 198, 18, 0, 99]);
  const raw6 = encodeSockaddrIn6("2001:db8::1", 443, 7);
  assert.deepEqual([...raw6.subarray(0, 4)], [AF_INET6, 0, 0x01, 0xbb]);
  assert.deepEqual([...raw6.subarray(8, 12)], [0x20, 0x01, 0x0d, 0xb8]);
  assert.equal(raw6[23], 1);
  assert.equal(raw6[24], 7);
});

Deno.test("sockaddr_in6 round trip with RFC 5952 text", () => {
  fc.assert(
    fc.property(v6Bytes, port, (b, p) => {
      const text = formatIPv6(b);
      const raw = encodeSockaddrIn6(text, p);
      assert.equal(raw.length, 28);
      assert.deepEqual(decodeSockaddr(raw, raw.length), {
        family: 6,
        address: canonicalAddress(text),
        port: p,
      });
      assert.deepEqual(parseIPv6(text), b);
    }),
  );
});

Deno.test("v4-mapped addresses canonicalise to IPv4 in every spelling", () => {
  for (
    const text of [
      "::ffff:127.0.0.1",
      "::FFFF:127.0.0.1",
      "::ffff:7f00:1",
      "0:0:0:0:0:ffff:7f00:0001",
      "[::ffff:127.0.0.1]",
      "127.0.0.1",
    ]
  ) {
    assert.equal(canonicalAddress(text), "127.0.0.1", text);
  }
  const mapped = parseIPv6("::ffff:198.18.0.99")!;
  assert.ok(isV4Mapped(mapped));
  // Deno prints v4-mapped peers this way; decodeSockaddr gives the canonical dotted quad, and
  // the family of the socket address.
  assert.equal(formatIPv6(mapped), "::ffff:198.18.0.99");
  const raw = encodeSockaddrIn6("::ffff:198.18.0.99", 80);
  assert.deepEqual(decodeSockaddr(raw, raw.length), {
    family: 6,
    address: "198.18.0.99",
    port: 80,
  });
  // Not mapped (IPv4-compatible, deprecated): stays IPv6.
  assert.equal(canonicalAddress("::198.18.0.99"), "::c612:63");
});

Deno.test("encoders name bad input", () => {
  assert.throws(() => encodeSockaddrIn("2001:db8::1", 80), /not an IPv4 address: "2001:db8::1"/);
  assert.throws(() => encodeSockaddrIn6("198.18.0.1", 80), /not an IPv6 address: "198.18.0.1"/);
  assert.throws(() => encodeSockaddrIn("198.18.0.1", 65536), /not a port number: 65536/);
  assert.throws(() => encodeSockaddrIn6("::1", -1), /not a port number: -1/);
});

Deno.test("encodeSockaddrInto: the encoders' bytes, over whatever the buffer held before", () => {
  const buf = new Uint8Array(28);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ minLength: 4, maxLength: 4 }).map((b) => b.join(".")),
        v6Bytes.map(formatIPv6),
      ),
      port,
      fc.uint8Array({ minLength: 28, maxLength: 28 }),
      (address, p, before) => {
        buf.set(before);
        const length = encodeSockaddrInto(buf, address, p);
        const expected = address.includes(":")
          ? encodeSockaddrIn6(address, p)
          : encodeSockaddrIn(address, p);
        assert.equal(length, expected.length);
        assert.deepEqual(buf.subarray(0, length), expected);
        assert.deepEqual(buf.subarray(length), before.subarray(length), "nothing past it");
      },
    ),
    { numRuns: 1000 },
  );
  assert.throws(() => encodeSockaddrInto(buf, "198.18.0.256", 80), /not an IPv4 address/);
  assert.throws(() => encodeSockaddrInto(buf, "2001:db8::g", 80), /not an IPv6 address/);
  assert.throws(() => encodeSockaddrInto(buf, "198.18.0.1", 70000), /not a port number: 70000/);
});

Deno.test("decodeSockaddr refuses truncated, oversized and foreign structures", () => {
  const v4 = encodeSockaddrIn("198.18.0.1", 80);
  const v6 = encodeSockaddrIn6("2001:db8::1", 80);
  assert.equal(decodeSockaddr(v4, 15), null);
  assert.equal(decodeSockaddr(v4, 17), null);
  assert.equal(decodeSockaddr(v6, 23), null);
  assert.notEqual(decodeSockaddr(v6, 24), null);
  assert.equal(decodeSockaddr(v6, 1), null);
  assert.equal(decodeSockaddr(v6, Number.NaN), null);
  const unix = new Uint8Array(110);
  unix[0] = 1; // AF_UNIX
  assert.equal(decodeSockaddr(unix, unix.length), null);
  // A sockaddr inside a larger buffer at an offset decodes from its own start.
  const big = new Uint8Array(64);
  big.set(v4, 8);
  assert.deepEqual(decodeSockaddr(big.subarray(8), 16), {
    family: 4,
    address: "198.18.0.1",
    port: 80,
  });
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 128 }), fc.integer({ min: -1, max: 200 }), (b, n) => {
      decodeSockaddr(b, n); // must never throw
    }),
  );
});
