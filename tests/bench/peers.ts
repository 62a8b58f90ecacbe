/**
 * The systems a benchmark or decision check runs through, started one at a time in the lab's
 * router namespace behind the same nat REDIRECT rules (TCP 80 -> 8080, 443 -> 8443):
 * proxy-please, HAProxy and Squid, plus "direct" (the router forwarding in the kernel).
 *
 * The peers' configurations are the files next to this module (`haproxy.cfg`, `squid.conf`);
 * only run-time paths are filled in. Each peer runs as its own process with its pid and log
 * files in the lab's state directory, never as a system service.
 * @module
 */

import { processAlive, run, sleep, spawnDetached, terminate } from "../lab/command.ts";
import { type Lab } from "../lab/lab.ts";
import { endpointPort, type ProxyProcess, startProxy, stopProxy } from "../lab/proxy.ts";
import { LAB_ALLOWED_HOSTS, type Topology } from "../lab/topology.ts";

/** The names of the systems compared, in the order they run. */
export type SystemName = "direct" | "proxy-please" | "haproxy" | "squid";

/** Every system, in run order. */
export const SYSTEMS: readonly SystemName[] = ["direct", "proxy-please", "haproxy", "squid"];

/** The proxies only (systems that make allow/deny decisions). */
export const PROXIES: readonly Exclude<SystemName, "direct">[] = [
  "proxy-please",
  "haproxy",
  "squid",
];

/** A started system; `stop` undoes everything `start` did. */
export interface RunningSystem {
  name: SystemName;
  /** Stops it (and, for direct, puts the router's redirect rules back in force). */
  stop(): Promise<void>;
}

/** Path of a file shipped next to this module. */
export function benchFile(name: string): string {
  return new URL(`./${name}`, import.meta.url).pathname;
}

/** Fills the run-time placeholders of a peer configuration: `@STATE@` and `@DNS@`. */
export function renderConfig(template: string, vars: { state: string; dns: string }): string {
  return template.replaceAll("@STATE@", vars.state).replaceAll("@DNS@", vars.dns);
}

/** The proxy-please settings every benchmark and check uses. */
export function proxyPleaseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ALLOWED_HOSTS: LAB_ALLOWED_HOSTS,
    LOG_LEVEL: "info",
    // The scale workload holds thousands of idle client connections, each with its upstream;
    // the open-files limit (20,000 here) is the real bound.
    MAX_CONNECTIONS: "20000",
    ADMIN_LISTEN: "",
    ...benchEnvOverrides(),
    ...extra,
  };
}

/**
 * Extra proxy-please settings for a run, from `PROXY_PLEASE_BENCH_ENV` (`KEY=VALUE` words),
 * so variants (e.g. `RELAY=kernel`) are measured with the same harness.
 */
export function benchEnvOverrides(
  text = Deno.env.get("PROXY_PLEASE_BENCH_ENV") ?? "",
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    const eq = word.indexOf("=");
    if (eq <= 0) {
      throw new Error(`PROXY_PLEASE_BENCH_ENV: ${JSON.stringify(word)} is not KEY=VALUE`);
    }
    out[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return out;
}

/** Waits (bounded) until TCP ports `ports` listen in namespace `ns`, or the process dies. */
async function waitListening(
  ns: string,
  ports: number[],
  pid: number | undefined,
  what: string,
  logFile: string,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (true) {
    const out = await run(["ss", "-Hltn"], { ns });
    const open = new Set(out.stdout.split("\n").map((l) => endpointPort(l.split(/\s+/)[3])));
    if (ports.every((p) => open.has(p))) return;
    if ((pid !== undefined && !processAlive(pid)) || Date.now() > deadline) {
      const tail = (await Deno.readTextFile(logFile).catch(() => "")).split("\n").slice(-15);
      throw new Error(
        `${what} did not start listening on ${ports.join(", ")}:\n${tail.join("\n")}`,
      );
    }
    await sleep(50);
  }
}

/** Directory of a system's own files inside the lab's state directory. */
function systemDir(t: Topology, name: SystemName): string {
  return `${t.stateDir}/${name}`;
}

/**
 * `haproxy.cfg` with `nbthread` set in its global section: HAProxy runs one thread per core
 * by default, and on this 2-core machine, shared with the clients and servers, one thread did
 * more per second with less CPU per connection.
 */
export function withThreads(config: string, threads: number): string {
  const at = /^global[ \t]*$/m.exec(config);
  if (at === null) throw new Error("haproxy.cfg has no global section to set nbthread in");
  const end = at.index + at[0].length;
  return `${config.slice(0, end)}\n    nbthread ${threads}${config.slice(end)}`;
}

/**
 * Starts HAProxy from `haproxy.cfg` in the router namespace; `threads` sets `nbthread`, which
 * the file leaves to HAProxy (one per core), as a user would.
 */
export async function startHaproxy(t: Topology, threads?: number): Promise<RunningSystem> {
  const dir = systemDir(t, "haproxy");
  await Deno.mkdir(dir, { recursive: true });
  const cfg = `${dir}/haproxy.cfg`;
  const text = renderConfig(await Deno.readTextFile(benchFile("haproxy.cfg")), {
    state: dir,
    dns: t.addr.dns4,
  });
  await Deno.writeTextFile(cfg, threads === undefined ? text : withThreads(text, threads));
  await run(["haproxy", "-c", "-q", "-f", cfg]);
  const logFile = `${dir}/haproxy.out`;
  // -db: stay in the foreground (no daemon, no master): one process we own by pid.
  const pid = await spawnDetached(["haproxy", "-db", "-f", cfg], {
    ns: t.ns.router,
    logFile,
    pidFile: `${dir}/haproxy.run.pid`,
  });
  await waitListening(t.ns.router, [t.ports.http, t.ports.https], pid, "HAProxy", logFile);
  return { name: "haproxy", stop: () => terminate(pid, 5_000) };
}

/** Starts Squid from `squid.conf` in the router namespace, with a throwaway bump certificate. */
export async function startSquid(t: Topology): Promise<RunningSystem> {
  const dir = systemDir(t, "squid");
  await Deno.mkdir(dir, { recursive: true });
  // Squid drops privileges to `proxy` and must still write its logs there.
  await run(["chown", "proxy:proxy", dir]);
  const pem = `${dir}/squid-ca.pem`;
  // ssl-bump needs a CA even when every connection is spliced (never decrypted).
  await run([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:P-256",
    "-nodes",
    "-keyout",
    pem,
    "-out",
    `${dir}/squid-ca.crt`,
    "-days",
    "2",
    "-subj",
    "/CN=squid benchmark bump CA (throwaway, never used)",
  ]);
  await Deno.writeTextFile(pem, await Deno.readTextFile(`${dir}/squid-ca.crt`), { append: true });
  await run(["chown", "proxy:proxy", pem]);
  const cfg = `${dir}/squid.conf`;
  const text = renderConfig(await Deno.readTextFile(benchFile("squid.conf")), {
    state: dir,
    dns: t.addr.dns4,
  });
  await Deno.writeTextFile(cfg, text);
  await run(["squid", "-k", "parse", "-f", cfg], { ns: t.ns.router });
  const logFile = `${dir}/squid.out`;
  // -N: no daemon (one process we own by pid); -d1: start-up problems to our log file.
  const pid = await spawnDetached(
    ["squid", "-N", "-d1", "-f", cfg],
    { ns: t.ns.router, logFile, pidFile: `${dir}/squid.run.pid` },
  );
  await waitListening(t.ns.router, [t.ports.http, t.ports.https], pid, "Squid", logFile);
  return { name: "squid", stop: () => terminate(pid, 10_000) };
}

/** Starts proxy-please from the working tree with the lab's allowlist. */
export async function startProxyPlease(
  t: Topology,
  extraEnv: Record<string, string> = {},
): Promise<RunningSystem & { proxy: ProxyProcess }> {
  const proxy = await startProxy(t, proxyPleaseEnv(extraEnv), {
    logFile: `${t.stateDir}/proxy.log`,
  });
  return { name: "proxy-please", proxy, stop: () => stopProxy(proxy) };
}

/**
 * Lets the router forward TCP in the kernel with no proxy: a nat rule ahead of the redirect
 * (so it never applies) and an accepting FORWARD rule, with forwarding switched on.
 * `stop` removes exactly those rules and restores the forwarding switches.
 */
export async function startDirect(t: Topology): Promise<RunningSystem> {
  const ns = t.ns.router;
  const rules = [
    ["-t", "nat", "PREROUTING", "-p", "tcp", "-j", "ACCEPT"],
    ["-t", "filter", "FORWARD", "-j", "ACCEPT"],
  ];
  const sysctls = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"];
  const before: string[] = [];
  for (const key of sysctls) {
    before.push((await run(["sysctl", "-n", key], { ns })).stdout.trim());
    await run(["sysctl", "-q", "-w", `${key}=1`], { ns });
  }
  for (const tool of ["iptables", "ip6tables"]) {
    for (const [tflag, table, chain, ...rest] of rules) {
      await run([tool, "-w", tflag, table, "-I", chain, "1", ...rest], { ns });
    }
  }
  return {
    name: "direct",
    async stop() {
      for (const tool of ["iptables", "ip6tables"]) {
        for (const [tflag, table, chain, ...rest] of rules) {
          await run([tool, "-w", tflag, table, "-D", chain, ...rest], { ns, check: false });
        }
      }
      for (const [i, key] of sysctls.entries()) {
        await run(["sysctl", "-q", "-w", `${key}=${before[i]}`], { ns, check: false });
      }
    },
  };
}

/** Starts one system in the lab. */
export function startSystem(lab: Lab, name: SystemName): Promise<RunningSystem> {
  switch (name) {
    case "direct":
      return startDirect(lab.t);
    case "proxy-please":
      return startProxyPlease(lab.t);
    case "haproxy":
      return startHaproxy(lab.t);
    case "squid":
      return startSquid(lab.t);
  }
}

/** Pids of every process in the router namespace (the system under test and its helpers). */
export async function routerPids(t: Topology): Promise<number[]> {
  const out = await run(["ip", "netns", "pids", t.ns.router], { check: false });
  return out.stdout.split("\n").map((s) => Number.parseInt(s, 10)).filter((n) => n > 0);
}
