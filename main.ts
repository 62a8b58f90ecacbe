/**
 * proxy-please: a transparent egress allowlist proxy. Start-up, signals and reload; the
 * connection work lives in `src/`, the libc bindings in `ffi/`.
 * @module
 */

import { probeFdSupport } from "./ffi/conn_fd.ts";
import { type Libc, openLibc } from "./ffi/libc.ts";
import { type Config, ConfigError, loadConfig, type Sources } from "./src/config.ts";
import { closeLogging, log, setupLogging } from "./src/log.ts";
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
  return changed;
}

/** Re-reads settings; a bad file is rejected whole and the running policy stays. */
function reload(server: ProxyServer, args: readonly string[]): void {
  let invocation;
  try {
    invocation = loadConfig(sources(args));
  } catch (error) {
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
    ...invocation.config,
    httpPort: old.httpPort,
    httpsPort: old.httpsPort,
    listenAddresses: old.listenAddresses,
    logLevel: old.logLevel,
    logFormat: old.logFormat,
  };
  log.info("configuration reloaded: {hosts} allowlist entries", {
    hosts: invocation.config.allowlist.entries.length,
  });
  if (pending.length > 0) {
    log.warn("changes that need a restart: {settings}", { settings: pending.join(", ") });
  }
}

/** Runs the proxy until SIGTERM or SIGINT; resolves with the exit status. */
export async function main(args: readonly string[]): Promise<number> {
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

async function run(config: Config, warnings: string[], args: readonly string[]): Promise<number> {
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

  const server = new ProxyServer(config, libc, fd.symbol);
  try {
    server.listen();
  } catch (error) {
    log.error("cannot start: {error}", { error: (error as Error).message });
    return 1;
  }
  for (const { proto, addr } of server.addresses) {
    const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
    log.info("listening for {proto} on {address}", { proto, address: `${host}:${addr.port}` });
  }
  log.info("proxy-please {version} ready: {hosts} allowlist entries", {
    version: VERSION,
    hosts: config.allowlist.entries.length,
  });

  let stopping: Promise<number> | undefined;
  const stop = (signal: string) => {
    if (stopping !== undefined) return;
    log.info("{signal}: no new connections; draining {active} for up to {seconds}s", {
      signal,
      active: server.activeConnections,
      seconds: server.config.drainTimeoutMs / 1000,
    });
    server.stopAccepting();
    stopping = server.drain(server.config.drainTimeoutMs);
  };
  const onTerm = () => stop("SIGTERM");
  const onInt = () => stop("SIGINT");
  const onHup = () => reload(server, args);
  Deno.addSignalListener("SIGTERM", onTerm);
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGHUP", onHup);
  try {
    await server.serve();
    const aborted = await (stopping ?? server.drain(0));
    log.info("stopped; {aborted} connections closed at the end of the drain period", { aborted });
    return 0;
  } finally {
    Deno.removeSignalListener("SIGTERM", onTerm);
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGHUP", onHup);
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
