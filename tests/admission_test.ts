import assert from "node:assert/strict";
import fc from "fast-check";
import { Admission } from "../src/admission.ts";

Deno.test("Admission: refuses past the total, counts nothing it refused, and counts out", () => {
  const a = new Admission();
  assert.equal(a.admit("198.18.1.10", 2, 0), null);
  assert.equal(a.admit("198.18.1.11", 2, 0), null);
  assert.equal(a.admit("198.18.1.12", 2, 0), "too_many_connections");
  assert.equal(a.active, 2);
  a.release("198.18.1.10");
  assert.equal(a.active, 1);
  assert.equal(a.admit("198.18.1.12", 2, 0), null);
});

Deno.test("Admission: the per-source limit applies to one address, not to the others", () => {
  const a = new Admission();
  for (let i = 0; i < 3; i++) assert.equal(a.admit("2001:db8:1::10", 100, 3), null);
  assert.equal(a.admit("2001:db8:1::10", 100, 3), "per_source_limit");
  assert.equal(a.active, 3);
  // Any other source still gets in (unless it shares the bucket, which would refuse early).
  let admitted = 0;
  for (let i = 0; i < 20; i++) if (a.admit(`198.18.2.${i}`, 100, 3) === null) admitted++;
  assert.ok(admitted >= 19, `only ${admitted} of 20 other sources admitted`);
  a.release("2001:db8:1::10");
  assert.equal(a.admit("2001:db8:1::10", 100, 3), null);
});

Deno.test("Admission: a view made from the share counts in the same table", () => {
  const a = new Admission();
  const b = new Admission(a.share);
  assert.equal(a.admit("198.18.1.10", 10, 2), null);
  assert.equal(b.admit("198.18.1.10", 10, 2), null);
  assert.equal(b.admit("198.18.1.10", 10, 2), "per_source_limit");
  assert.equal(a.admit("198.18.1.10", 10, 2), "per_source_limit");
  b.release("198.18.1.10");
  assert.equal(a.active, 1);
  assert.equal(a.admit("198.18.1.10", 10, 2), null);
  // Let in since start, whichever thread counted and whether or not released since.
  assert.equal(a.admitted, 3);
  assert.equal(b.admitted, 3);
});

Deno.test("Admission: admitted counts what was let in, not what was refused, and never goes down", () => {
  const a = new Admission();
  assert.equal(a.admitted, 0);
  assert.equal(a.admit("198.18.1.10", 1, 0), null);
  assert.equal(a.admit("198.18.1.11", 1, 0), "too_many_connections");
  a.release("198.18.1.10");
  assert.equal(a.admit("198.18.1.10", 5, 1), null);
  assert.equal(a.admit("198.18.1.10", 5, 1), "per_source_limit");
  assert.equal(a.active, 1);
  assert.equal(a.admitted, 2);
});

Deno.test("Admission: a worker thread counts in the table it was handed", async () => {
  const a = new Admission();
  const source = `
    import { Admission } from ${
    JSON.stringify(new URL("../src/admission.ts", import.meta.url).href)
  };
    self.onmessage = (e) => {
      const b = new Admission(e.data);
      const results = [];
      for (let i = 0; i < 3; i++) results.push(b.admit("198.18.1.10", 100, 2));
      self.postMessage(results);
    };`;
  const url = URL.createObjectURL(new Blob([source], { type: "application/javascript" }));
  const worker = new Worker(url, { type: "module" });
  try {
    assert.equal(a.admit("198.18.1.10", 100, 2), null);
    const results = await new Promise((resolve, reject) => {
      worker.onmessage = (e) => resolve(e.data);
      worker.onerror = (e) => reject(new Error(e.message));
      worker.postMessage(a.share);
    });
    assert.deepEqual(results, [null, "per_source_limit", "per_source_limit"]);
    assert.equal(a.active, 2);
  } finally {
    worker.terminate();
    URL.revokeObjectURL(url);
  }
});

Deno.test("Admission: no sequence of admits and releases passes a limit or leaves a count", () => {
  const sources = ["198.18.1.10", "198.18.1.11", "2001:db8:1::10", "2001:db8:1::11"];
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 6 }),
    fc.integer({ min: 0, max: 4 }),
    fc.array(fc.record({ admit: fc.boolean(), source: fc.integer({ min: 0, max: 3 }) }), {
      maxLength: 60,
    }),
    (max, perSource, steps) => {
      const a = new Admission();
      const open = new Map<string, number>();
      let total = 0;
      for (const step of steps) {
        const source = sources[step.source];
        const mine = open.get(source) ?? 0;
        if (step.admit) {
          const refusal = a.admit(source, max, perSource);
          if (refusal === null) {
            open.set(source, mine + 1);
            total++;
          } else if (refusal === "too_many_connections") assert.equal(total, max);
          assert.ok(total <= max);
          if (perSource > 0) assert.ok((open.get(source) ?? 0) <= perSource);
        } else if (mine > 0) {
          a.release(source);
          open.set(source, mine - 1);
          total--;
        }
        assert.equal(a.active, total);
      }
      for (const [source, n] of open) for (let i = 0; i < n; i++) a.release(source);
      assert.equal(a.active, 0);
      // Everything released: the full budget is available again.
      for (let i = 0; i < max; i++) assert.equal(a.admit(`198.18.3.${i}`, max, 0), null);
    },
  ));
});
