import assert from "node:assert/strict";
import fc from "fast-check";
import { MAX_DURATION_MS, parseDuration } from "../src/duration.ts";

function ms(text: string): number {
  const r = parseDuration(text);
  if (!r.ok) throw new Error(`expected ${JSON.stringify(text)} to parse: ${r.reason}`);
  return r.ms;
}

Deno.test("parseDuration: units, bare seconds, fractions and surrounding blanks", () => {
  const cases: [string, number][] = [
    ["500ms", 500],
    ["1ms", 1],
    ["10s", 10_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["24h", MAX_DURATION_MS],
    ["10", 10_000],
    ["86400", MAX_DURATION_MS],
    ["1.5s", 1_500],
    ["0.5", 500],
    ["0.001s", 1],
    ["2.25m", 135_000],
    [" 10s ", 10_000],
    ["10 s", 10_000],
    ["1440m", MAX_DURATION_MS],
  ];
  for (const [text, expected] of cases) assert.equal(ms(text), expected, JSON.stringify(text));
});

Deno.test("parseDuration: bad durations are refused with a reason quoting the input", () => {
  const bad = [
    "",
    " ",
    "s",
    "abc",
    "10x",
    "10sec",
    "-1s",
    "+1s",
    "1e3",
    "1.2345s",
    "1.",
    ".5s",
    "NaN",
    "Infinity",
    "0x10",
    "10s5",
    "1s 1s",
    "1234567890", // more than nine digits
  ];
  for (const text of bad) {
    const r = parseDuration(text);
    assert.equal(r.ok, false, `${JSON.stringify(text)} should be refused`);
    if (!r.ok) {
      assert.ok(
        r.reason.includes(JSON.stringify(text)),
        `reason names ${JSON.stringify(text)}: ${r.reason}`,
      );
    }
  }
});

Deno.test("parseDuration: zero, sub-millisecond and over a day are out of range", () => {
  for (const text of ["0", "0s", "0ms", "0.0h", "0.4ms", "25h", "86401", "1441m", "86400001ms"]) {
    const r = parseDuration(text);
    assert.equal(r.ok, false, `${JSON.stringify(text)} should be refused`);
    if (!r.ok) assert.match(r.reason, /out of range/, JSON.stringify(text));
    if (!r.ok) assert.ok(r.reason.includes(JSON.stringify(text)));
  }
});

Deno.test("parseDuration: every whole number of ms in range round-trips in every unit", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: MAX_DURATION_MS }), (n) => {
      assert.equal(ms(`${n}ms`), n);
      if (n % 1000 === 0) assert.equal(ms(`${n / 1000}s`), n);
      if (n % 1000 === 0) assert.equal(ms(`${n / 1000}`), n);
      if (n % 60_000 === 0) assert.equal(ms(`${n / 60_000}m`), n);
    }),
  );
});

Deno.test("parseDuration: never throws, and an accepted value is a whole ms within 1ms..24h", () => {
  fc.assert(
    fc.property(
      fc.oneof(
        fc.string(),
        fc.stringMatching(/^\s?\d{0,10}(\.\d{0,4})?\s?(ms|s|m|h|d|)\s?$/),
      ),
      (text) => {
        const r = parseDuration(text);
        if (r.ok) {
          assert.ok(Number.isInteger(r.ms), `${JSON.stringify(text)} -> ${r.ms}`);
          assert.ok(r.ms >= 1 && r.ms <= MAX_DURATION_MS, `${JSON.stringify(text)} -> ${r.ms}`);
        } else {
          assert.ok(r.reason.includes(JSON.stringify(text)));
        }
      },
    ),
    { numRuns: 2000 },
  );
});
