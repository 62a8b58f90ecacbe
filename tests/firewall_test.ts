/**
 * The iptables setup script (systemd/proxy-please-firewall) applied for real inside network
 * namespaces: client -> router (script applied, listeners standing in for the proxy) -> server.
 * Checks what crosses, what is redirected, what is refused, idempotence, and that remove
 * restores the previous ruleset and sysctls exactly. Needs root, ip, iptables and python3.
 * @module
 */

import assert from "node:assert/strict";
import { randomSuffix, run, runOk } from "./fixtures/deploy_run.ts";

const SCRIPT = new URL("../systemd/proxy-please-firewall", import.meta.url).pathname;
const PROBE = new URL("./fixtures/deploy_netprobe.py", import.meta.url).pathname;

const CLIENT4 = "198.18.10.2";
const ROUTER4_LAN = "198.18.10.1";
const ROUTER4_WAN = "198.19.10.1";
const SERVER4 = "198.19.10.2";
const CLIENT6 = "2001:db8:10::2";
const ROUTER6_LAN = "2001:db8:10::1";
const ROUTER6_WAN = "2001:db8:20::1";
const SERVER6 = "2001:db8:20::2";

/** Deadline for probes expected to fail; success answers come back at once. */
const PROBE_SECONDS = 2;

interface Lab {
  client: string;
  router: string;
  server: string;
  /** The router's client-side interface (LAN_INTERFACE). */
  lanIf: string;
  wanIf: string;
  dir: string;
  serverLog: string;
  children: Deno.ChildProcess[];
}

function nsOk(name: string, cmd: string, args: string[], timeoutMs = 15_000) {
  return runOk("ip", ["netns", "exec", name, cmd, ...args], { timeoutMs });
}

async function waitForFile(path: string, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    try {
      await Deno.stat(path);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${what} did not become ready`);
}

function startListener(lab: Lab, nsName: string, marker: string, log: string, specs: string[]) {
  const ready = `${lab.dir}/${marker}.ready`;
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", nsName, "python3", PROBE, "serve", marker, log, ready, ...specs],
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  lab.children.push(child);
  return waitForFile(ready, `${marker} listener`);
}

async function createLab(): Promise<Lab> {
  const id = randomSuffix();
  const lab: Lab = {
    client: `ppfw-c-${id}`,
    router: `ppfw-r-${id}`,
    server: `ppfw-s-${id}`,
    lanIf: `ppfw-rc-${id}`,
    wanIf: `ppfw-rs-${id}`,
    dir: await Deno.makeTempDir({ prefix: "ppfw-" }),
    serverLog: "",
    children: [],
  };
  lab.serverLog = `${lab.dir}/server.log`;
  try {
    for (const n of [lab.client, lab.router, lab.server]) {
      await runOk("ip", ["netns", "add", n]);
      await nsOk(n, "ip", ["link", "set", "lo", "up"]);
    }
    const clientIf = `ppfw-cr-${id}`;
    const serverIf = `ppfw-sr-${id}`;
    await runOk("ip", [
      "link",
      "add",
      clientIf,
      "netns",
      lab.client,
      "type",
      "veth",
      "peer",
      "name",
      lab.lanIf,
      "netns",
      lab.router,
    ]);
    await runOk("ip", [
      "link",
      "add",
      serverIf,
      "netns",
      lab.server,
      "type",
      "veth",
      "peer",
      "name",
      lab.wanIf,
      "netns",
      lab.router,
    ]);
    const addr = async (n: string, dev: string, a: string) => {
      const v6 = a.includes(":");
      await nsOk(n, "ip", [
        v6 ? "-6" : "-4",
        "addr",
        "add",
        a,
        "dev",
        dev,
        ...(v6 ? ["nodad"] : []),
      ]);
    };
    await addr(lab.client, clientIf, `${CLIENT4}/24`);
    await addr(lab.client, clientIf, `${CLIENT6}/64`);
    await addr(lab.router, lab.lanIf, `${ROUTER4_LAN}/24`);
    await addr(lab.router, lab.lanIf, `${ROUTER6_LAN}/64`);
    await addr(lab.router, lab.wanIf, `${ROUTER4_WAN}/24`);
    await addr(lab.router, lab.wanIf, `${ROUTER6_WAN}/64`);
    await addr(lab.server, serverIf, `${SERVER4}/24`);
    await addr(lab.server, serverIf, `${SERVER6}/64`);
    for (
      const [n, dev] of [[lab.client, clientIf], [lab.router, lab.lanIf], [
        lab.router,
        lab.wanIf,
      ], [lab.server, serverIf]]
    ) {
      await nsOk(n, "ip", ["link", "set", dev, "up"]);
    }
    await nsOk(lab.client, "ip", ["-4", "route", "add", "default", "via", ROUTER4_LAN]);
    await nsOk(lab.client, "ip", ["-6", "route", "add", "default", "via", ROUTER6_LAN]);
    await nsOk(lab.server, "ip", ["-4", "route", "add", "default", "via", ROUTER4_WAN]);
    await nsOk(lab.server, "ip", ["-6", "route", "add", "default", "via", ROUTER6_WAN]);

    // The router's listeners stand in for the proxy (8080/8443) and for the router's own
    // services (22 = SSH, 9090 = admin port).
    await startListener(lab, lab.router, "router", `${lab.dir}/router.log`, [
      "tcp:8080",
      "tcp:8443",
      "tcp:22",
      "tcp:9090",
    ]);
    await startListener(lab, lab.server, "server", lab.serverLog, [
      "tcp:80",
      "tcp:443",
      "tcp:22",
      "tcp:5353",
      "udp:443",
      "udp:53",
    ]);
    return lab;
  } catch (e) {
    await destroyLab(lab);
    throw e;
  }
}

async function destroyLab(lab: Lab): Promise<void> {
  for (const child of lab.children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  }
  for (const n of [lab.client, lab.router, lab.server]) {
    await run("ip", ["netns", "del", n]);
  }
  await Deno.remove(lab.dir, { recursive: true });
}

async function probe(lab: Lab, proto: "tcp" | "udp", host: string, port: number) {
  const out = await nsOk(
    lab.client,
    "python3",
    [PROBE, "probe", proto, host, String(port), String(PROBE_SECONDS)],
  );
  return out.trim();
}

async function serverSaw(lab: Lab, proto: string, port: number): Promise<boolean> {
  const log = await Deno.readTextFile(lab.serverLog);
  return log.split("\n").some((l) => l.startsWith(`${proto} ${port} `));
}

interface FirewallRun {
  env: Record<string, string>;
  envFile: string;
  stateFile: string;
}

async function firewall(lab: Lab, fw: FirewallRun, command: string) {
  return await run(
    "ip",
    [
      "netns",
      "exec",
      lab.router,
      SCRIPT,
      command,
      "--env-file",
      fw.envFile,
      "--state-file",
      fw.stateFile,
    ],
    { env: fw.env, clearEnv: true, timeoutMs: 60_000 },
  );
}

async function firewallOk(lab: Lab, fw: FirewallRun, command: string) {
  const r = await firewall(lab, fw, command);
  assert.equal(r.code, 0, `firewall ${command} failed: ${r.stderr}`);
  return r;
}

/** iptables-save output without the comment lines (timestamps) and packet counters. */
async function saved(lab: Lab, save: string): Promise<string> {
  const out = await nsOk(lab.router, save, []);
  return out.split("\n").filter((l) => !l.startsWith("#")).map((l) =>
    l.replace(/ \[\d+:\d+\]$/, "")
  ).join("\n");
}

async function sysctls(lab: Lab): Promise<string> {
  const out = await nsOk(lab.router, "sh", [
    "-c",
    "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv6/conf/*/forwarding",
  ]);
  return out;
}

async function snapshot(lab: Lab, backend: Backend) {
  return {
    v4: await saved(lab, `${backend.v4}-save`),
    v6: await saved(lab, `${backend.v6}-save`),
    sysctl: await sysctls(lab),
  };
}

interface Backend {
  name: string;
  v4: string;
  v6: string;
}

const NFT: Backend = { name: "nft", v4: "iptables-nft", v6: "ip6tables-nft" };
const LEGACY: Backend = { name: "legacy", v4: "iptables-legacy", v6: "ip6tables-legacy" };

async function available(backend: Backend): Promise<boolean> {
  for (const cmd of [backend.v4, backend.v6, `${backend.v4}-save`, `${backend.v6}-save`]) {
    const r = await run("sh", ["-c", `command -v ${cmd}`]);
    if (r.code !== 0) return false;
  }
  return true;
}

/** Someone else's rules, present before apply, that must survive apply and remove untouched. */
async function addForeignRules(lab: Lab, backend: Backend): Promise<void> {
  for (const ipt of [backend.v4, backend.v6]) {
    const r = (args: string[]) => nsOk(lab.router, ipt, ["-w", "10", ...args]);
    await r(["-N", "SOMEONE-ELSE"]);
    await r(["-A", "SOMEONE-ELSE", "-p", "tcp", "--dport", "2222", "-j", "ACCEPT"]);
    await r(["-A", "INPUT", "-j", "SOMEONE-ELSE"]);
    await r(["-A", "FORWARD", "-p", "tcp", "--dport", "7", "-j", "ACCEPT"]);
    await r(["-t", "nat", "-A", "POSTROUTING", "-o", lab.wanIf, "-j", "MASQUERADE"]);
    await r(["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "2121", "-j", "RETURN"]);
  }
  // A router VM usually forwards already; make one interface differ to check exact restore.
  await nsOk(lab.router, "sysctl", ["-qw", "net.ipv4.ip_forward=1"]);
  await nsOk(lab.router, "sysctl", ["-qw", `net.ipv4.conf.${lab.wanIf}.forwarding=0`]);
  await nsOk(lab.router, "sysctl", ["-qw", "net.ipv6.conf.all.forwarding=1"]);
}

async function writeEnv(lab: Lab, name: string, text: string): Promise<string> {
  const path = `${lab.dir}/${name}.env`;
  await Deno.writeTextFile(path, text);
  return path;
}

async function readSysctl(lab: Lab, key: string): Promise<string> {
  return (await nsOk(lab.router, "sysctl", ["-n", key])).trim();
}

async function assertDefaultDeny(lab: Lab) {
  for (const [server, router] of [[SERVER4, ROUTER4_LAN], [SERVER6, ROUTER6_LAN]]) {
    assert.equal(await probe(lab, "tcp", server, 80), "ok router 8080", `${server}:80 redirected`);
    assert.equal(
      await probe(lab, "tcp", server, 443),
      "ok router 8443",
      `${server}:443 redirected`,
    );
    assert.notEqual((await probe(lab, "tcp", server, 22)).slice(0, 2), "ok", `${server}:22`);
    assert.equal(await probe(lab, "udp", server, 443), "refused", `${server} UDP 443 (QUIC)`);
    // Addressed to the router itself: its own services answer, nothing is redirected.
    assert.equal(await probe(lab, "tcp", router, 22), "ok router 22", `${router}:22 (SSH)`);
    assert.equal(await probe(lab, "tcp", router, 9090), "ok router 9090", `${router}:9090`);
    // A redirected port addressed to the router itself stays unredirected (nothing listens).
    assert.equal(await probe(lab, "tcp", router, 443), "refused", `${router}:443 not redirected`);
    // Dialling the proxy port directly is refused by BLOCK_DIRECT_PROXY_ACCESS=yes.
    assert.equal(await probe(lab, "tcp", router, 8080), "refused", `${router}:8080 direct`);
  }
  assert.equal(await serverSaw(lab, "tcp", 22), false, "the server never saw TCP 22");
  assert.equal(await serverSaw(lab, "tcp", 80), false, "the server never saw TCP 80");
  assert.equal(await serverSaw(lab, "udp", 443), false, "the server never saw UDP 443");
}

async function firewallScenario(backend: Backend) {
  const lab = await createLab();
  try {
    await addForeignRules(lab, backend);
    const before = await snapshot(lab, backend);
    const fw: FirewallRun = {
      env: { IPTABLES: backend.v4, IP6TABLES: backend.v6 },
      envFile: await writeEnv(
        lab,
        "deny",
        `# default deny, no pass-through\nLAN_INTERFACE="${lab.lanIf}"\nHTTP_PORT=8080\nHTTPS_PORT='8443'\n`,
      ),
      stateFile: `${lab.dir}/firewall.state`,
    };

    await firewallOk(lab, fw, "apply");
    const once = await snapshot(lab, backend);
    await firewallOk(lab, fw, "apply");
    const twice = await snapshot(lab, backend);
    assert.equal(twice.v4, once.v4, "apply twice == apply once (IPv4)");
    assert.equal(twice.v6, once.v6, "apply twice == apply once (IPv6)");
    assert.equal(twice.sysctl, once.sysctl);
    for (const line of before.v4.split("\n").filter((l) => l.startsWith("-A"))) {
      assert.ok(once.v4.includes(line), `foreign IPv4 rule kept: ${line}`);
    }
    for (const line of before.v6.split("\n").filter((l) => l.startsWith("-A"))) {
      assert.ok(once.v6.includes(line), `foreign IPv6 rule kept: ${line}`);
    }
    assert.equal(await readSysctl(lab, "net.ipv4.ip_forward"), "0", "forwarding off");
    assert.equal(await readSysctl(lab, "net.ipv6.conf.all.forwarding"), "0");
    const status = await firewall(lab, fw, "status");
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /REDIRECT --to-ports 8080/);

    await assertDefaultDeny(lab);
    assert.notEqual((await probe(lab, "tcp", SERVER4, 5353)).slice(0, 2), "ok");
    assert.notEqual((await probe(lab, "udp", SERVER6, 53)).slice(0, 2), "ok");

    // Re-apply with pass-through entries: forwarding on, FORWARD policy DROP, exactly those pass.
    fw.envFile = await writeEnv(
      lab,
      "pass",
      [
        `LAN_INTERFACE=${lab.lanIf} # client side`,
        "export PASS_THROUGH=tcp:5353:198.19.10.0/24,udp:53:198.19.10.2 tcp:5353:2001:db8:20::/64",
        "PASS_THROUGH_UNUSED_KEY=ignored",
        "",
      ].join("\n"),
    );
    // Keys from the environment override the file.
    fw.env.PASS_THROUGH =
      "tcp:5353:198.19.10.0/24,udp:53:198.19.10.2 tcp:5353:2001:db8:20::/64 udp:53:2001:db8:20::2/128";
    await firewallOk(lab, fw, "apply");
    assert.equal(await readSysctl(lab, "net.ipv4.ip_forward"), "1", "forwarding on");
    assert.equal(await readSysctl(lab, "net.ipv6.conf.all.forwarding"), "1");
    assert.match(await nsOk(lab.router, backend.v4, ["-S", "FORWARD"]), /^-P FORWARD DROP$/m);
    assert.match(await nsOk(lab.router, backend.v6, ["-S", "FORWARD"]), /^-P FORWARD DROP$/m);
    for (const server of [SERVER4, SERVER6]) {
      assert.equal(await probe(lab, "tcp", server, 5353), "ok server 5353", `${server} tcp:5353`);
      assert.equal(await probe(lab, "udp", server, 53), "ok server 53", `${server} udp:53`);
    }
    await assertDefaultDeny(lab);

    await firewallOk(lab, fw, "remove");
    const after = await snapshot(lab, backend);
    assert.equal(after.v4, before.v4, "iptables-save identical after remove");
    assert.equal(after.v6, before.v6, "ip6tables-save identical after remove");
    assert.equal(after.sysctl, before.sysctl, "forwarding sysctls restored");
    await assert.rejects(Deno.stat(fw.stateFile), "state file removed");
    // remove is idempotent: again, nothing changes.
    await firewallOk(lab, fw, "remove");
    const again = await snapshot(lab, backend);
    assert.deepEqual(again, before);
    const notApplied = await firewall(lab, fw, "status");
    assert.equal(notApplied.code, 3);
  } finally {
    await destroyLab(lab);
  }
}

Deno.test("firewall (iptables-nft): redirect, default deny, pass-through, exact restore", async () => {
  await firewallScenario(NFT);
});

Deno.test({
  name: "firewall (iptables-legacy): redirect, default deny, pass-through, exact restore",
  ignore: !(await available(LEGACY)),
  fn: () => firewallScenario(LEGACY),
});

Deno.test("firewall: from an empty nft ruleset, remove leaves an empty ruleset", async () => {
  const lab = await createLab();
  try {
    const fw: FirewallRun = {
      env: {},
      envFile: await writeEnv(lab, "empty", ""),
      stateFile: `${lab.dir}/firewall.state`,
    };
    const before = await snapshot(lab, NFT);
    assert.equal(before.v4, "", "a fresh namespace has no tables");
    await firewallOk(lab, fw, "apply");
    // No LAN_INTERFACE: every interface but lo is the LAN.
    assert.equal(await probe(lab, "tcp", SERVER4, 80), "ok router 8080");
    assert.equal(await probe(lab, "tcp", SERVER6, 443), "ok router 8443");
    await firewallOk(lab, fw, "remove");
    assert.deepEqual(await snapshot(lab, NFT), before);
    assert.equal((await nsOk(lab.router, "nft", ["list", "ruleset"])).trim(), "");
  } finally {
    await destroyLab(lab);
  }
});

Deno.test("firewall: bad settings fail with a message naming the value, changing nothing", async () => {
  const lab = await createLab();
  try {
    const cases: [string, string][] = [
      ["HTTP_PORT=99999", '"99999"'],
      ["HTTPS_PORT=84a3", '"84a3"'],
      ["REDIRECT_HTTP_PORTS=80,0", '"0"'],
      ["REDIRECT_TLS_PORTS=443 80\nREDIRECT_HTTP_PORTS=80", "port 80"],
      ["LAN_INTERFACE=eth0;reboot", '"eth0;reboot"'],
      ["LAN_INTERFACE=averyveryverylongname", '"averyveryverylongname"'],
      ["PASS_THROUGH=udp:53:300.1.1.1/32", '"300.1.1.1/32"'],
      ["PASS_THROUGH=udp:53:198.18.0.0/33", '"198.18.0.0/33"'],
      ["PASS_THROUGH=udp:53:2001:db8::1::2/128", '"2001:db8::1::2/128"'],
      ["PASS_THROUGH=icmp:53:198.18.0.1", '"icmp"'],
      ["PASS_THROUGH=tcp:70000:198.18.0.1", '"70000"'],
      ["PASS_THROUGH=198.18.0.1", '"198.18.0.1"'],
      [`PASS_THROUGH=$(touch ${lab.dir}/pwned)`, "$(touch"],
      ["BLOCK_DIRECT_PROXY_ACCESS=maybe", '"maybe"'],
      ["IPTABLES=iptables;reboot", '"iptables;reboot"'],
      ["this is not an assignment", "not a KEY=VALUE line"],
      ['HTTP_PORT="8080', "unterminated quote"],
    ];
    const before = await snapshot(lab, NFT);
    for (const [line, needle] of cases) {
      const fw: FirewallRun = {
        env: {},
        envFile: await writeEnv(lab, "bad", line + "\n"),
        stateFile: `${lab.dir}/firewall.state`,
      };
      const r = await firewall(lab, fw, "apply");
      assert.equal(r.code, 2, `${line}: exit 2 (stderr: ${r.stderr})`);
      assert.ok(r.stderr.includes(needle), `${line}: message names ${needle}: ${r.stderr}`);
    }
    await assert.rejects(Deno.stat(`${lab.dir}/pwned`), "the env file is never executed");
    assert.deepEqual(await snapshot(lab, NFT), before, "nothing changed");

    const missing = await firewall(lab, {
      env: { IPTABLES: "iptables-none", IP6TABLES: "ip6tables-none" },
      envFile: await writeEnv(lab, "ok", ""),
      stateFile: `${lab.dir}/firewall.state`,
    }, "apply");
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /iptables-none not found: install iptables/);
  } finally {
    await destroyLab(lab);
  }
});
