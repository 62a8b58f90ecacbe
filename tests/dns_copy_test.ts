import assert from "node:assert/strict";
import fc from "fast-check";
import { type DnsAnswer, DnsCache, type ResolveFn } from "../src/dns_cache.ts";
import { DnsCopy, type DnsSnapshot } from "../src/dns_copy.ts";
import { usableAddresses } from "../src/destination_pin.ts";

const T0 = 1_000_000;

function snapshot(name: string, freshUntil: number, addresses: [string, number][]): DnsSnapshot {
  return { name, freshUntil, addresses };
}

Deno.test("DNS copy: answers while fresh, each address until its own expiry, any spelling of the name", () => {
  const copy = new DnsCopy();
  assert.equal(copy.addresses("x.test", T0), null, "nothing learned");
  copy.learn(snapshot("x.test", T0 + 30_000, [["198.19.0.10", T0 + 30_000], [
    "198.19.0.11",
    T0 + 10_000,
  ]]));
  assert.deepEqual(copy.addresses("X.Test.", T0), ["198.19.0.10", "198.19.0.11"]);
  assert.deepEqual(copy.addresses("x.test", T0 + 10_000), ["198.19.0.10"]);
  assert.equal(copy.addresses("x.test", T0 + 30_000), null, "no longer fresh");
  assert.equal(copy.size, 0, "a stale name is dropped when asked for");
  assert.equal(copy.addresses("y.test", T0), null);
});

Deno.test("DNS copy: a new snapshot replaces the old; bad keys and a full copy are handled", () => {
  const copy = new DnsCopy(2);
  copy.learn(snapshot("a.test", T0 + 5_000, [["198.19.0.1", T0 + 5_000]]));
  copy.learn(snapshot("a.test", T0 + 9_000, [["198.19.0.2", T0 + 9_000]]));
  assert.deepEqual(copy.addresses("a.test", T0 + 6_000), ["198.19.0.2"]);
  // Only the cache's own keys are taken: lowercase, no trailing dot, a DNS name.
  for (const name of ["A.test", "a.test.", "", "a..test", "bad name.test"]) {
    copy.learn(snapshot(name, T0 + 9_000, [["198.19.0.9", T0 + 9_000]]));
  }
  assert.equal(copy.size, 1);
  copy.learn(snapshot("b.test", T0 + 9_000, [["198.19.0.3", T0 + 9_000]]));
  copy.learn(snapshot("c.test", T0 + 9_000, [["198.19.0.4", T0 + 9_000]]));
  assert.equal(copy.size, 2, "bounded");
  assert.equal(copy.addresses("a.test", T0), null, "the oldest learned went first");
  copy.clear();
  assert.equal(copy.addresses("c.test", T0), null);
});

Deno.test("DNS copy: the cache's snapshot is null unless the cache would answer without asking", async () => {
  let now = T0;
  const answers = new Map<string, DnsAnswer[]>([["x.test", [{ address: "198.19.0.10", ttl: 5 }]]]);
  const resolve: ResolveFn = (name, family) =>
    Promise.resolve(family === 4 ? answers.get(name) ?? [] : []);
  const cache = new DnsCache({ resolve, now: () => now });
  assert.equal(cache.snapshot("x.test"), null, "never resolved");
  await cache.lookup("x.test");
  assert.deepEqual(cache.snapshot("X.TEST"), {
    name: "x.test",
    freshUntil: T0 + 5_000,
    addresses: [["198.19.0.10", T0 + 5_000]],
  });
  now += 5_000;
  assert.equal(cache.snapshot("x.test"), null, "stale: the cache would ask again");
  await cache.lookup("nothing.test");
  assert.equal(cache.snapshot("nothing.test"), null, "a failure is never copied");
});

/**
 * The copy's whole promise: whenever it answers, the cache at that moment answers the same
 * without asking the resolver. Random answers, TTLs, failures and clock steps.
 */
Deno.test("DNS copy: never answers what the cache would not (property)", async () => {
  const op = fc.oneof(
    fc.record({
      kind: fc.constant("answer" as const),
      addresses: fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 4 }),
      ttl: fc.integer({ min: 0, max: 20 }),
    }),
    fc.record({ kind: fc.constant("step" as const), ms: fc.integer({ min: 0, max: 15_000 }) }),
    fc.constant({ kind: "lookup" as const }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(op, { maxLength: 40 }), async (ops) => {
      let now = T0;
      let current: DnsAnswer[] = [];
      let asked = 0;
      const resolve: ResolveFn = (_name, family) => {
        asked++;
        if (family === 6) return Promise.resolve([]);
        return current.length > 0
          ? Promise.resolve(current)
          : Promise.reject(Object.assign(new Error("no"), { code: "ENOTFOUND" }));
      };
      const cache = new DnsCache({ resolve, now: () => now, maxAddressesPerName: 3 });
      const copy = new DnsCopy();
      for (const o of ops) {
        if (o.kind === "answer") {
          current = o.addresses.map((n) => ({ address: `198.19.0.${n}`, ttl: o.ttl }));
        } else if (o.kind === "step") {
          now += o.ms;
        } else {
          await cache.lookup("x.test");
          const s = cache.snapshot("x.test");
          if (s !== null) copy.learn(s);
        }
        const copied = copy.addresses("x.test", now);
        if (copied === null) continue;
        const before = asked;
        const fromCache = await cache.lookup("x.test");
        assert.equal(asked, before, "the cache had to ask the resolver");
        assert.deepEqual(fromCache, { ok: true, addresses: copied });
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("DNS copy: usable answers are what pinning keeps of the answers, vetted once (property)", () => {
  const address = fc.oneof(
    fc.constantFrom("198.19.0.1", "198.19.0.2", "2001:db8::1"),
    fc.constantFrom("127.0.0.1", "::1", "0.0.0.0", "::ffff:198.19.0.1", "2001:DB8:0::1", "junk"),
    fc.ipV4(),
    fc.ipV6(),
  );
  fc.assert(
    fc.property(
      fc.array(fc.tuple(address, fc.integer({ min: 0, max: 20 })), { maxLength: 8 }),
      fc.integer({ min: 0, max: 25 }),
      // Asked several times, in any order (a clock may step back): each answer is the one
      // made afresh at that moment, whatever was answered before.
      fc.array(fc.integer({ min: 0, max: 25 }), { minLength: 1, maxLength: 6 }),
      fc.constantFrom("x.test", "X.Test."),
      (answers, freshFor, times, spelling) => {
        const copy = new DnsCopy();
        copy.learn(snapshot(
          "x.test",
          T0 + freshFor * 1_000,
          answers.map(([a, ttl]): [string, number] => [a, T0 + ttl * 1_000]),
        ));
        for (const at of times) {
          const now = T0 + at * 1_000;
          const all = copy.addresses("x.test", now);
          assert.deepEqual(copy.usable(spelling, now), all === null ? null : usableAddresses(all));
        }
      },
    ),
    { numRuns: 500 },
  );
});
