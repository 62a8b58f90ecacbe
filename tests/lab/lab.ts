/**
 * The lab: three network namespaces (client, router with the proxy and the production
 * firewall rules, internet with real servers), built and torn down as one unit.
 *
 * `deno task lab` and the end-to-end suite both use {@linkcode upLab} / {@linkcode downLab};
 * they differ only in the name prefix. Bringing a lab up always removes a leftover one with the
 * same prefix first, so re-running after an interrupted run works.
 * @module
 */

import { type CommandResult, run, type RunOptions } from "./command.ts";
import { applyFirewall, type FirewallChoice, type FirewallSource } from "./firewall.ts";
import { createNetwork, destroyNetwork, writeNetnsEtc } from "./network.ts";
import { makePki, type Pki } from "./pki.ts";
import { preflight } from "./preflight.ts";
import { type ProxyProcess, startProxy, stopProxy } from "./proxy.ts";
import { logLines, logLinesWhen, type ServerFiles, startServers } from "./servers.ts";
import type { HalfCloseRecord } from "./clients/half_close_server.ts";
import { hostsFile, LAB_ALLOWED_HOSTS, LAB_PREFIX, type Topology, topology } from "./topology.ts";

/** Options for {@linkcode upLab}. */
export interface LabOptions {
  /** Namespace/interface name prefix (default `pplab-`). */
  prefix?: string;
  /** Start the proxy (default true). */
  proxy?: boolean;
  /** Proxy settings (environment); ALLOWED_HOSTS defaults to the lab's allowlist. */
  proxyEnv?: Record<string, string>;
  /** Firewall rule set: the project's script when present ("auto", default) or the stand-in. */
  firewall?: FirewallChoice;
  /** Progress messages (default: stderr). */
  log?: (line: string) => void;
}

/** A running lab. */
export interface Lab {
  t: Topology;
  pki: Pki;
  files: ServerFiles;
  /** Which firewall rule set the router got. */
  firewall: FirewallSource;
  /** The running proxy, if any. */
  proxy: ProxyProcess | undefined;
  /** Stops the proxy (if running) and starts it again with `env` (merged over the defaults). */
  restartProxy(env?: Record<string, string>): Promise<ProxyProcess>;
  /** Runs a command in the client namespace (deadline and check as in `run`). */
  client(argv: readonly string[], options?: Omit<RunOptions, "ns">): Promise<CommandResult>;
  /** Requests the never-reached server has logged. */
  neverHits(): Promise<string[]>;
  /** Datagrams that reached UDP 443 in the internet namespace. */
  udpHits(): Promise<string[]>;
  /**
   * Requests the real virtual hosts have logged; with `atLeast`, once there are that many (or
   * after a few seconds): nginx logs a request just after answering it.
   */
  serverHits(atLeast?: number): Promise<string[]>;
  /** What the half-close server has logged (one record per event, oldest first). */
  halfCloseRecords(): Promise<HalfCloseRecord[]>;
  /** Empties the server logs, so a test case starts from zero hits. */
  resetServerLogs(): Promise<void>;
  /** Removes the whole lab. */
  down(): Promise<void>;
}

/** The proxy settings the lab uses unless told otherwise. */
export function defaultProxyEnv(): Record<string, string> {
  return { ALLOWED_HOSTS: LAB_ALLOWED_HOSTS, LOG_LEVEL: "info" };
}

/** Removes every trace of the lab with this prefix: processes, namespaces, /etc/netns, state. */
export async function downLab(prefix: string = LAB_PREFIX): Promise<void> {
  const t = topology(prefix);
  await destroyNetwork(t);
  await Deno.remove(t.stateDir, { recursive: true }).catch(() => {});
}

/** Builds a fresh lab (removing a leftover one first) and returns a handle to it. */
export async function upLab(options: LabOptions = {}): Promise<Lab> {
  const prefix = options.prefix ?? LAB_PREFIX;
  const log = options.log ?? ((line: string) => console.error(line));
  await preflight(prefix, log);
  const t = topology(prefix);
  await downLab(prefix);
  try {
    await Deno.mkdir(t.stateDir, { recursive: true });
    // nginx workers run unprivileged and must read the docroot under the state directory;
    // the CA key lives in a 0700 subdirectory.
    for (const dir of [`${t.stateDir}/..`, t.stateDir]) await Deno.chmod(dir, 0o755);
    log(`lab: building namespaces ${Object.values(t.ns).join(", ")}`);
    await createNetwork(t);
    await writeNetnsEtc(t.ns.client, "hosts", hostsFile(t));
    await writeNetnsEtc(t.ns.router, "resolv.conf", `nameserver ${t.addr.dns4}\n`);
    log("lab: making a throwaway CA and server certificate");
    const pki = await makePki(`${t.stateDir}/pki`);
    log("lab: starting nginx, dnsmasq and a UDP 443 listener in the internet namespace");
    const files = await startServers(t, pki);
    const firewall = await applyFirewall(t, { choice: options.firewall });
    log(
      `lab: router firewall from ${
        firewall === "script" ? "systemd/proxy-please-firewall" : "the lab's stand-in rules"
      }`,
    );
    let proxy: ProxyProcess | undefined;
    const baseEnv = { ...defaultProxyEnv(), ...options.proxyEnv };
    const lab: Lab = {
      t,
      pki,
      files,
      firewall,
      get proxy() {
        return proxy;
      },
      async restartProxy(env = {}) {
        await stopProxy(proxy);
        proxy = undefined;
        proxy = await startProxy(t, { ...baseEnv, ...env });
        return proxy;
      },
      client: (argv, opts = {}) => run(argv, { ...opts, ns: t.ns.client }),
      neverHits: () => logLines(files.neverLog),
      udpHits: () => logLines(files.udpLog),
      serverHits: (atLeast = 0) => logLinesWhen(files.serverLog, atLeast),
      halfCloseRecords: async () =>
        (await logLines(files.halfCloseLog)).map((line) => {
          try {
            return JSON.parse(line) as HalfCloseRecord;
          } catch {
            throw new Error(`half-close server log line is not JSON: ${JSON.stringify(line)}`);
          }
        }),
      async resetServerLogs() {
        // nginx keeps its log files open in append mode: truncating is enough.
        for (const f of [files.neverLog, files.udpLog, files.serverLog, files.halfCloseLog]) {
          await Deno.truncate(f, 0);
        }
      },
      async down() {
        await stopProxy(proxy);
        await downLab(prefix);
      },
    };
    if (options.proxy ?? true) {
      log("lab: starting the proxy from the working tree in the router namespace");
      await lab.restartProxy();
    }
    return lab;
  } catch (error) {
    await downLab(prefix).catch(() => {});
    throw error;
  }
}
