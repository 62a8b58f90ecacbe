import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };

/** The runtime flags of a task: permissions and V8 flags, in order. */
function runtimeFlags(task: string): string[] {
  return task.split(/\s+/).filter((w) => /^--(allow-|v8-flags)/.test(w));
}

Deno.test("tasks: start, compile and compile:target run with the same permissions and V8 flags", () => {
  const { start, compile } = denoJson.tasks;
  const target = denoJson.tasks["compile:target"];
  const flags = runtimeFlags(start);
  assert.ok(flags.some((f) => f.startsWith("--allow-ffi=")), "FFI is scoped, not --allow-all");
  assert.ok(!flags.includes("--allow-all") && !flags.includes("-A"));
  // The idle collections (src/idle_collect.ts) need V8's gc.
  assert.ok(flags.some((f) => /^--v8-flags=(.*,)?--expose-gc(,|$)/.test(f)), flags.join(" "));
  assert.deepEqual(runtimeFlags(compile), flags);
  assert.deepEqual(runtimeFlags(target), flags);
});
