import assert from "node:assert/strict";
import fc from "fast-check";
import { latin1 } from "../src/latin1.ts";

/** The definition, one byte at a time. */
function reference(bytes: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]);
  return s;
}

Deno.test("latin1: every byte value becomes the code unit of the same value", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = latin1(all);
  assert.equal(text.length, 256);
  for (let i = 0; i < 256; i++) assert.equal(text.charCodeAt(i), i);
});

Deno.test("latin1: a range of a buffer, empty ranges, and text longer than one conversion", () => {
  const bytes = new TextEncoder().encode("GET /index.html HTTP/1.1");
  assert.equal(latin1(bytes, 4, 15), "/index.html");
  assert.equal(latin1(bytes, 3, 3), "");
  assert.equal(latin1(new Uint8Array(0)), "");
  const long = Uint8Array.from({ length: 20_000 }, (_, i) => (i * 7) & 0xff);
  assert.equal(latin1(long, 1, 19_999), reference(long, 1, 19_999));
});

Deno.test("latin1 (property): equals the byte-by-byte definition for any bytes and range", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 10_000 }),
      fc.nat(),
      fc.nat(),
      (bytes, a, b) => {
        const start = bytes.length === 0 ? 0 : a % (bytes.length + 1);
        const end = start + (b % (bytes.length - start + 1));
        assert.equal(latin1(bytes, start, end), reference(bytes, start, end));
      },
    ),
    { numRuns: 300 },
  );
});
