/**
 * The systemd units checked with systemd's own tools, as install.sh lays them out:
 * `systemd-analyze verify` must be silent and `systemd-analyze security` must rate the proxy
 * service at most 2.5. Runs without systemd as PID 1 (both commands work on files).
 * @module
 */

import assert from "node:assert/strict";
import { run, runOk } from "./fixtures/deploy_run.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const UNITS = ["proxy-please.service", "proxy-please-firewall.service"];

const hasAnalyze = (await run("sh", ["-c", "command -v systemd-analyze"])).code === 0;

/**
 * Installs into a temporary root, then copies the units with their absolute paths pointed
 * into that root (verify checks that every Exec*= binary exists and is executable).
 */
async function stagedUnits(dir: string): Promise<string[]> {
  const destdir = `${dir}/root`;
  const fake = `${dir}/proxy-please`;
  await Deno.writeTextFile(fake, "#!/bin/sh\n");
  await runOk("bash", [`${ROOT}/install.sh`, "--binary", fake], {
    env: { DESTDIR: destdir },
    timeoutMs: 60_000,
  });
  const out: string[] = [];
  for (const unit of UNITS) {
    const text = (await Deno.readTextFile(`${destdir}/etc/systemd/system/${unit}`))
      .replaceAll("/usr/local/", `${destdir}/usr/local/`)
      .replaceAll("/etc/proxy-please.env", `${destdir}/etc/proxy-please.env`);
    await Deno.mkdir(`${dir}/units`, { recursive: true });
    await Deno.writeTextFile(`${dir}/units/${unit}`, text);
    out.push(`${dir}/units/${unit}`);
  }
  return out;
}

async function withTemp(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "ppfw-systemd-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The "Overall exposure level" figure of `systemd-analyze security --offline=true`. */
async function exposure(unitFile: string): Promise<number> {
  const r = await run("systemd-analyze", ["security", "--offline=true", "--no-pager", unitFile], {
    timeoutMs: 60_000,
  });
  const m = r.stdout.match(/Overall exposure level for \S+: ([0-9.]+)/);
  assert.ok(m, `no exposure figure in: ${r.stdout}${r.stderr}`);
  return Number(m[1]);
}

Deno.test({
  name: "systemd-analyze verify is clean on the installed units",
  ignore: !hasAnalyze,
  fn: () =>
    withTemp(async (dir) => {
      const units = await stagedUnits(dir);
      const r = await run("systemd-analyze", ["verify", "--no-pager", ...units], {
        timeoutMs: 60_000,
      });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr.trim(), "", "no warnings");
      assert.equal(r.stdout.trim(), "");
    }),
});

Deno.test({
  name: "systemd-analyze verify catches a broken unit (the check can fail)",
  ignore: !hasAnalyze,
  fn: () =>
    withTemp(async (dir) => {
      const [unit] = await stagedUnits(dir);
      await Deno.writeTextFile(
        unit,
        (await Deno.readTextFile(unit)).replace("Type=notify", "Type=notiffy"),
      );
      const r = await run("systemd-analyze", ["verify", "--no-pager", unit], { timeoutMs: 60_000 });
      assert.match(r.stderr, /notiffy/);
    }),
});

Deno.test({
  name: "systemd-analyze security rates proxy-please.service at most 2.5",
  ignore: !hasAnalyze,
  fn: () =>
    withTemp(async (dir) => {
      const [proxy, firewall] = await stagedUnits(dir);
      const score = await exposure(proxy);
      console.log(`proxy-please.service exposure ${score}`);
      assert.ok(score <= 2.5, `exposure ${score} > 2.5`);
      // The firewall unit must hold CAP_NET_ADMIN; it is still sandboxed (recorded, bounded).
      const fw = await exposure(firewall);
      console.log(`proxy-please-firewall.service exposure ${fw}`);
      assert.ok(fw <= 3.5, `firewall unit exposure ${fw} > 3.5`);
    }),
});

Deno.test("the proxy unit runs unprivileged and keeps the settings the deployment relies on", async () => {
  const text = await Deno.readTextFile(`${ROOT}/systemd/proxy-please.service`);
  const keys = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const m = line.match(/^([A-Za-z]+)=(.*)$/);
    if (m) keys.set(m[1], [...(keys.get(m[1]) ?? []), m[2]]);
  }
  const one = (k: string) => keys.get(k)?.at(-1);
  assert.equal(one("DynamicUser"), "yes");
  assert.equal(one("User"), undefined, "no fixed (root) user");
  assert.equal(one("CapabilityBoundingSet"), "", "no capabilities");
  assert.equal(one("AmbientCapabilities"), "");
  assert.equal(one("NoNewPrivileges"), "yes");
  assert.equal(one("ProtectSystem"), "strict");
  assert.equal(one("PrivateTmp"), "yes");
  assert.equal(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
  assert.ok(keys.get("SystemCallFilter")?.[0].startsWith("@system-service"));
  assert.equal(one("ExecReload"), "/bin/kill -HUP $MAINPID");
  assert.equal(one("Restart"), "on-failure");
  assert.ok(Number(one("LimitNOFILE")) >= 65536);
  assert.ok(Number(one("TimeoutStopSec")) > 30, "longer than the 30 s drain");
  assert.equal(one("Environment"), "ENV_FILE=/etc/proxy-please.env");
  assert.ok(one("Requires")?.includes("proxy-please-firewall.service"));
  assert.ok(one("After")?.includes("proxy-please-firewall.service"));
  const fw = await Deno.readTextFile(`${ROOT}/systemd/proxy-please-firewall.service`);
  assert.match(fw, /^ExecStart=\/usr\/local\/lib\/proxy-please\/proxy-please-firewall apply/m);
  assert.match(fw, /^ExecStop=\/usr\/local\/lib\/proxy-please\/proxy-please-firewall remove/m);
  assert.match(fw, /^PartOf=proxy-please.service$/m);
});
