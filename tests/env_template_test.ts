import assert from "node:assert/strict";
import { FIREWALL_KEYS, loadConfig, SETTINGS } from "../src/config.ts";

const TEMPLATE = new URL("../systemd/proxy-please.env", import.meta.url);

Deno.test("env template: documents every proxy setting and firewall key with its default", () => {
  const text = Deno.readTextFileSync(TEMPLATE);
  for (const { key, defaultValue } of SETTINGS) {
    const line = text.split("\n").find((l) => new RegExp(`^#?${key}=`).test(l));
    assert.ok(line !== undefined, `${key} is missing from the env template`);
    assert.equal(line.replace(/^#?[A-Z_]+=/, ""), defaultValue, `${key}'s default in the template`);
  }
  for (const key of FIREWALL_KEYS) {
    assert.match(text, new RegExp(`^#?${key}=`, "m"), `${key} is missing from the env template`);
  }
});

Deno.test("env template: with every line uncommented it loads without error or warning", () => {
  const text = Deno.readTextFileSync(TEMPLATE).split("\n")
    .map((l) => l.replace(/^#([A-Z_]+=)/, "$1")).join("\n");
  const result = loadConfig({
    args: [],
    env: { ENV_FILE: "/template.env" },
    readFile: (path) => path === "/template.env" ? text : null,
  });
  assert.equal(result.kind, "run");
  if (result.kind === "run") assert.deepEqual(result.warnings, []);
});
