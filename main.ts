/**
 * proxy-please: a transparent egress allowlist proxy. Start-up, signals and reload; the
 * connection work lives in `src/`, the libc bindings in `ffi/`.
 * @module
 */

import { probeFdSupport } from "./ffi/conn_fd.ts";
import { type Libc, openLibc } from "./ffi/libc.ts";
import { createNotifier, type Notifier, READY, STOPPING } from "./ffi/sd_notify.ts";
import { type AdminServer, startAdminServer } from "./src/admin_server.ts";
import { runReport } from "./src/audit_report.ts";
import { type Config, ConfigError, loadConfig, type Sources } from "./src/config.ts";
import { DnsCache } from "./src/dns_cache.ts";
import { formatEndpoint } from "./src/ip_address.ts";
import { closeLogging, log, setupLogging } from "./src/log.ts";
import { KNOWN_REASONS, ProxyMetrics } from "./src/metrics.ts";
import { ProxyServer } from "./src/proxy_server.ts";
import denoJson from "./deno.json" with { type: "json" };

/** The version printed by `--version` and at start-up. */
export const VERSION: string = denoJson.version;

/** An env file larger than this is refused: it is configuration, not data. */
const MAX_ENV_FILE_BYTES = 1024 * 1024;

function readEnvFile(path: string): string | null {
  try {
    const info = Deno.statSync(path);
    if (info.size > MAX_ENV_FILE_BYTES) {
      throw new ConfigError(`env file ${path} is larger than ${MAX_ENV_FILE_BYTES} bytes`);
    }
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`cannot read env file ${path}: ${(error as Error).message}`);
  }
}

function sources(args: readonly string[]): Sources {
  return { args, env: Deno.env.toObject(), readFile: readEnvFile };
}

/** Settings that only take effect at start-up; a reload reports them instead of applying. */
function restartOnlyChanges(old: Config, next: Config): string[] {
  const changed: string[] = [];
  if (old.httpPort !== next.httpPort) changed.push("HTTP_PORT");
  if (old.httpsPort !== next.httpsPort) changed.push("HTTPS_PORT");
  if (old.listenAddresses.join(",") !== next.listenAddresses.join(",")) {
    changed.push("LISTEN_ADDRESS");
  }
  if (old.logLevel !== next.logLevel) changed.push("LOG_LEVEL");
  if (old.logFormat !== next.logFormat) changed.push("LOG_FORMAT");
  if (old.relay !== next.relay) changed.push("RELAY");
  return changed;
}

/** Reason words counted by name in the metrics; anything else counts as `other`. */
const METRIC_REASONS = [
  ...KNOWN_REASONS,
  "no_data",
  "read_error",
  "no_original_dst",
  "invalid_sni",
  "not_tls",
  "multiple_host",
  "host_mismatch",
  "host_switch",
  "ambiguous_framing",
  "http2_prior_knowledge",
  "bad_host_port",
  "resolve_failed",
  "no_usable_address",
  "multiple_server_names",
  "empty_server_name",
  "duplicate_extension",
  "unexpected_record",
];

/** A short fingerprint of the policy in force, exported as a metric so fleets can compare. */
async function policyHash(config: Config): Promise<string> {
  const text = JSON.stringify([
    config.allowlist.entries,
    config.sourcePolicy.map((rule) => rule.text),
    config.mode,
    config.dstPolicy,
    config.echPolicy,
  ]);
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest).slice(0, 8), (b) => b.toString(16).padStart(2, "0"))
    .join("");
}

/** File descriptors kept free for listeners, the admin server, DNS and libraries. */
const RESERVED_FDS = 64;

/**
 * Lowers MAX_CONNECTIONS to what the open-file limit can hold (two descriptors per relayed
 * connection), so the limit refuses connections cleanly instead of accept() failing.
 */
function fitToFileLimit(config: Config, limit: number | null): Config {
  if (limit === null) return config;
  const fits = Math.max(1, Math.floor((limit - RESERVED_FDS) / 2));
  if (config.maxConnections <= fits) return config;
  log.warn("MAX_CONNECTIONS {wanted} lowered to {fits}: the open-file limit is {limit}", {
    wanted: config.maxConnections,
    fits,
    limit,
  });
  return { ...config, maxConnections: fits };
}

/** Re-reads settings; a bad file is rejected whole and the running policy stays. */
async function reload(
  server: ProxyServer,
  args: readonly string[],
  metrics: ProxyMetrics,
  notifier: Notifier | null,
  fit: (config: Config) => Config,
): Promise<void> {
  notifier?.reloading();
  try {
    await applyReload(server, args, metrics, fit);
  } finally {
    notifier?.notify(READY);
  }
}

async function applyReload(
  server: ProxyServer,
  args: readonly string[],
  metrics: ProxyMetrics,
  fit: (config: Config) => Config,
): Promise<void> {
  let invocation;
  try {
    invocation = loadConfig(sources(args));
  } catch (error) {
    metrics.reload(false);
    log.error("reload rejected, configuration unchanged: {error}", {
      error: (error as Error).message,
    });
    return;
  }
  if (invocation.kind !== "run") return;
  for (const warning of invocation.warnings) log.warn(warning);
  const old = server.config;
  const pending = restartOnlyChanges(old, invocation.config);
  server.config = {
    ...fit(invocation.config),
    httpPort: old.httpPort,
    httpsPort: old.httpsPort,
    listenAddresses: old.listenAddresses,
    logLevel: old.logLevel,
    logFormat: old.logFormat,
    relay: old.relay,
  };
  metrics.reload(true);
  const hash = await policyHash(invocation.config);
  metrics.setConfigHash(hash);
  log.info("configuration reloaded: {hosts} allowlist entries, policy {hash}", {
    hosts: invocation.config.allowlist.entries.length,
    hash,
  });
  if (pending.length > 0) {
    log.warn("changes that need a restart: {settings}", { settings: pending.join(", ") });
  }
}

/** `proxy-please report [FILE|-]`: the would-deny summary of an audit-mode JSON log. */
async function report(args: readonly string[]): Promise<number> {
  const path = args[0] ?? "-";
  try {
    const file = path === "-" ? null : await Deno.open(path);
    const text = await runReport(file?.readable ?? Deno.stdin.readable, {
      current: Deno.env.get("ALLOWED_HOSTS"),
    });
    console.log(text);
    return 0;
  } catch (error) {
    console.error(`proxy-please report: ${(error as Error).message}`);
    return 2;
  }
}

/** Runs the proxy until SIGTERM or SIGINT; resolves with the exit status. */
export async function main(args: readonly string[]): Promise<number> {
  if (args[0] === "report") return await report(args.slice(1));
  let invocation;
  try {
    invocation = loadConfig(sources(args));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`proxy-please: ${error.message}`);
    return 2;
  }
  if (invocation.kind === "help") {
    console.log(invocation.text);
    return 0;
  }
  if (invocation.kind === "version") {
    console.log(`proxy-please ${VERSION} (deno ${Deno.version.deno})`);
    return 0;
  }
  const { config, warnings } = invocation;
  await setupLogging(config.logLevel, config.logFormat);
  try {
    return await run(config, warnings, args);
  } finally {
    await closeLogging();
  }
}

/**
 * The last line of defence: a bug that lets an error or a rejection escape must cost the
 * connection it happened on, never the process (every other connection would go with it).
 */
function keepRunningOnStrayErrors(): void {
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log.error("unhandled rejection (a bug): {error}", { error: String(event.reason) });
  });
  globalThis.addEventListener("error", (event) => {
    event.preventDefault();
    log.error("uncaught error (a bug): {error}", { error: String(event.error) });
  });
}

async function run(
  config: Config,
  warnings: string[],
  args: readonly string[],
): Promise<number> {
  keepRunningOnStrayErrors();
  for (const warning of warnings) log.warn(warning);
  let libc: Libc;
  try {
    libc = openLibc();
  } catch (error) {
    log.error("cannot start: {error}", { error: (error as Error).message });
    return 1;
  }
  const fd = await probeFdSupport(libc);
  if (!fd.ok) {
    log.error("cannot start: {error}", { error: fd.reason });
    return 1;
  }

  const fit = (next: Config) => fitToFileLimit(next, libc.openFileLimit());
  config = fit(config);
  const metrics = new ProxyMetrics({ version: VERSION, reasons: METRIC_REASONS });
  metrics.setConfigHash(await policyHash(config));
  const dns = new DnsCache();
  const server = new ProxyServer(config, { libc, fdSymbol: fd.symbol, dns, metrics });
  let admin: AdminServer | null = null;
  try {
    server.listen();
    if (config.adminListen !== null) {
      const { hostname, port } = config.adminListen;
      admin = await startAdminServer({
        listen: hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`,
        metrics: () => metrics.render(),
        health: () => ({
          live: true,
          ready: server.accepting,
          detail: server.accepting ? "ok" : "draining",
        }),
      });
      log.info("admin endpoints on {address}", {
        address: formatEndpoint(admin.addr.hostname, admin.addr.port),
      });
    }
  } catch (error) {
    server.stopAccepting();
    log.error("cannot start: {error}", { error: (error as Error).message });
    return 1;
  }
  for (const { proto, addr } of server.addresses) {
    log.info("listening for {proto} on {address}", {
      proto,
      address: formatEndpoint(addr.hostname, addr.port),
    });
  }
  log.info("proxy-please {version} ready: {hosts} allowlist entries, mode {mode}, dst {dst}", {
    version: VERSION,
    hosts: config.allowlist.entries.length,
    mode: config.mode,
    dst: config.dstPolicy,
  });
  const notifier = createNotifier();
  if (notifier !== null && !notifier.notify(READY)) {
    log.warn("cannot notify systemd: {error}", { error: notifier.lastError });
  }

  let stopping: Promise<number> | undefined;
  const stop = (signal: string) => {
    if (stopping !== undefined) return;
    log.info("{signal}: no new connections; draining {active} for up to {seconds}s", {
      signal,
      active: server.activeConnections,
      seconds: server.config.drainTimeoutMs / 1000,
    });
    notifier?.notify(STOPPING);
    server.stopAccepting();
    stopping = server.drain(server.config.drainTimeoutMs);
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  let reloading = Promise.resolve();
  // Reloads run one after another: a burst of SIGHUPs never interleaves two file reads.
  const onHup = () =>
    reloading = reloading
      .then(() => reload(server, args, metrics, notifier, fit))
      .catch((error) => log.error("reload failed: {error}", { error: String(error) }));
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGHUP", onHup);
  try {
    try {
      await server.serve();
    } catch (error) {
      // The relay thread is gone with the listeners it served: exit, and let the service
      // manager start a fresh process (the unit restarts on failure).
      log.error("{error}; exiting", { error: (error as Error).message });
      server.stopAccepting();
      await server.drain(0);
      return 1;
    }
    const aborted = await (stopping ?? server.drain(0));
    log.info("stopped; {aborted} connections closed at the end of the drain period", { aborted });
    return 0;
  } finally {
    Deno.removeSignalListener("SIGTERM", onTerm);
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGHUP", onHup);
    await admin?.shutdown();
    notifier?.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
