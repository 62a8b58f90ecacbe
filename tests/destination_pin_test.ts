import assert from "node:assert/strict";
import fc from "fast-check";
import { decideDestination, usableAddresses } from "../src/destination_pin.ts";
import { canonicalIp, isUnsafeAddress } from "../src/ip_address.ts";

const dst = (address: string, port = 443) => ({ address, port });
const ok = (...addresses: string[]) => ({ ok: true as const, addresses });

Deno.test("pin: original among the answers connects there", () => {
  assert.deepEqual(decideDestination("pin", dst("198.19.0.10"), ok("198.19.0.11", "198.19.0.10")), {
    ok: true,
    connectTo: dst("198.19.0.10"),
    mismatch: false,
  });
});

Deno.test("pin: mismatch connects to the name's own address, same family and port", () => {
  const r = ok("2001:db8::20", "198.19.0.20", "198.19.0.21");
  assert.deepEqual(decideDestination("pin", dst("198.19.0.99", 8443), r), {
    ok: true,
    connectTo: dst("198.19.0.20", 8443),
    mismatch: true,
  });
  assert.deepEqual(decideDestination("pin", dst("2001:db8::99"), r), {
    ok: true,
    connectTo: dst("2001:db8::20"),
    mismatch: true,
  });
  // No answer of the original's family: any usable one.
  assert.deepEqual(decideDestination("pin", dst("2001:db8::99"), ok("198.19.0.20")), {
    ok: true,
    connectTo: dst("198.19.0.20"),
    mismatch: true,
  });
});

Deno.test("strict: mismatch denies, match connects", () => {
  assert.deepEqual(decideDestination("strict", dst("198.19.0.99"), ok("198.19.0.20")), {
    ok: false,
    reason: "dst_mismatch",
  });
  assert.deepEqual(decideDestination("strict", dst("198.19.0.20"), ok("198.19.0.20")), {
    ok: true,
    connectTo: dst("198.19.0.20"),
    mismatch: false,
  });
});

Deno.test("resolution failure or absence denies in pin and strict, not in off", () => {
  for (const mode of ["pin", "strict"] as const) {
    for (const r of [null, { ok: false as const, reason: "nxdomain" }]) {
      assert.deepEqual(decideDestination(mode, dst("198.19.0.10"), r), {
        ok: false,
        reason: "resolve_failed",
      });
    }
  }
  assert.deepEqual(decideDestination("off", dst("198.19.0.10"), null), {
    ok: true,
    connectTo: dst("198.19.0.10"),
    mismatch: false,
  });
});

Deno.test("off: connects to the original but still reports a mismatch for the log", () => {
  assert.deepEqual(decideDestination("off", dst("198.19.0.99"), ok("198.19.0.20")), {
    ok: true,
    connectTo: dst("198.19.0.99"),
    mismatch: true,
  });
});

Deno.test("unsafe answers are never used: a name resolving to loopback cannot loop the proxy", () => {
  const unsafe = ok(
    "127.0.0.1",
    "0.0.0.0",
    "::1",
    "::",
    "169.254.1.1",
    "fe80::1",
    "224.0.0.1",
    "ff02::1",
  );
  assert.deepEqual(decideDestination("pin", dst("198.19.0.10"), unsafe), {
    ok: false,
    reason: "no_usable_address",
  });
  // Even if the client dialled that very address.
  assert.deepEqual(decideDestination("pin", dst("127.0.0.1"), ok("127.0.0.1")), {
    ok: false,
    reason: "no_usable_address",
  });
  assert.deepEqual(decideDestination("strict", dst("127.0.0.1"), ok("127.0.0.1")), {
    ok: false,
    reason: "no_usable_address",
  });
  // Unsafe answers are skipped, usable ones still chosen.
  assert.deepEqual(decideDestination("pin", dst("198.19.0.10"), ok("127.0.0.1", "198.19.0.30")), {
    ok: true,
    connectTo: dst("198.19.0.30"),
    mismatch: true,
  });
});

Deno.test("addresses compare in canonical form", () => {
  assert.deepEqual(decideDestination("strict", dst("::ffff:198.19.0.10"), ok("198.19.0.10")), {
    ok: true,
    connectTo: dst("198.19.0.10"),
    mismatch: false,
  });
  assert.deepEqual(
    decideDestination("strict", dst("2001:DB8:0:0:0:0:0:10"), ok("2001:db8::10")),
    { ok: true, connectTo: dst("2001:db8::10"), mismatch: false },
  );
  assert.deepEqual(decideDestination("strict", dst("not-an-ip"), ok("198.19.0.10")), {
    ok: false,
    reason: "dst_mismatch",
  });
});

Deno.test("decideDestination never throws and pin always connects to a usable answer or the original", () => {
  const addr = fc.oneof(fc.ipV4(), fc.ipV6(), fc.constantFrom("127.0.0.1", "::1", "junk", ""));
  fc.assert(
    fc.property(
      fc.constantFrom("pin" as const, "strict" as const, "off" as const),
      addr,
      fc.integer({ min: 1, max: 65535 }),
      fc.option(fc.array(addr, { maxLength: 6 })),
      (mode, original, port, answers) => {
        const r = answers === null ? null : ok(...answers);
        const d = decideDestination(mode, { address: original, port }, r);
        if (!d.ok) return;
        assert.equal(d.connectTo.port, port);
        if (mode === "off") return;
        const usable = (answers ?? []).map(canonicalIp).filter((a) =>
          a !== null && !isUnsafeAddress(a)
        );
        assert.ok(usable.includes(d.connectTo.address));
        assert.equal(d.mismatch, canonicalIp(original) !== d.connectTo.address);
        if (mode === "strict") assert.equal(d.mismatch, false);
      },
    ),
  );
});

Deno.test("answers already vetted (usable: true, as the relay thread's DNS copy hands them) decide exactly as raw answers", () => {
  const addr = fc.oneof(
    fc.ipV4(),
    fc.ipV6(),
    fc.constantFrom("127.0.0.1", "::1", "::ffff:198.19.0.10", "2001:DB8::0:10", "junk", ""),
  );
  fc.assert(
    fc.property(
      fc.constantFrom("pin" as const, "strict" as const, "off" as const),
      addr,
      fc.integer({ min: 1, max: 65535 }),
      fc.array(addr, { maxLength: 6 }),
      (mode, original, port, answers) => {
        const raw = decideDestination(mode, { address: original, port }, ok(...answers));
        const vetted = decideDestination(mode, { address: original, port }, {
          ok: true,
          addresses: usableAddresses(answers),
          usable: true,
        });
        assert.deepEqual(vetted, raw);
      },
    ),
    { numRuns: 500 },
  );
});
