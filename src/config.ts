/**
 * Settings: one table that drives the CLI flags, the environment, the env file and `--help`.
 * Precedence is flags > environment > env file > defaults. Loading is pure: the caller
 * passes the arguments, the environment and a file reader, and gets a value or one message.
 * @module
 */

import { parseArgs } from "node:util";
import { parse as parseDotenv } from "dotenv";
import { type Allowlist, parseAllowlist } from "./allowlist.ts";
import { parseDuration } from "./duration.ts";
import { parseIp } from "./ip_address.ts";
import type { DstPolicy } from "./destination_pin.ts";
import { parseSourcePolicy, type SourcePolicy } from "./source_policy.ts";
import { type ListenAddress, parseListenAddress } from "./admin_server.ts";

/** Log levels accepted in `LOG_LEVEL` (and `RUST_LOG`, for users of the Rust original). */
export type LogLevel = "trace" | "debug" | "info" | "warning" | "error";

/** The proxy's validated configuration. */
export interface Config {
  readonly allowlist: Allowlist;
  /** Per-source-CIDR allowlists; the longest matching prefix wins over `allowlist`. */
  readonly sourcePolicy: SourcePolicy;
  /** `enforce` denies; `audit` forwards everything and marks what would have been denied. */
  readonly mode: "enforce" | "audit";
  /** How the original destination is checked against the name's DNS answers. */
  readonly dstPolicy: DstPolicy;
  /** Whether a ClientHello offering Encrypted Client Hello may pass (its outer SNI decides). */
  readonly echPolicy: "allow" | "deny";
  /** The admin listener for /metrics, /healthz, /readyz; null when off. */
  readonly adminListen: ListenAddress | null;
  /** Who handles connections: Deno's sockets, or the relay thread on libc's epoll. */
  readonly relay: "deno" | "kernel";
  readonly httpPort: number;
  readonly httpsPort: number;
  readonly listenAddresses: readonly string[];
  readonly logLevel: LogLevel;
  readonly logFormat: "text" | "json";
  readonly firstBytesTimeoutMs: number;
  readonly connectTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly drainTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerSource: number;
  /** The env file that was read, if any (reloads read it again). */
  readonly envFile: string | null;
}

/** The env file read when neither `--env-file` nor `ENV_FILE` names one and it exists. */
export const DEFAULT_ENV_FILE = "/etc/proxy-please.env";

type Raw = Record<string, string>;
type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

interface Setting {
  /** Environment and env-file key. */
  readonly key: string;
  readonly defaultValue: string;
  readonly help: string;
}

/** Every setting the proxy reads, in `--help` order. */
export const SETTINGS: readonly Setting[] = [
  {
    key: "ALLOWED_HOSTS",
    defaultValue: "",
    help: "Comma-separated allowlist: example.com (exact), *.example.com (one label below, not " +
      "the apex). Empty denies everything.",
  },
  {
    key: "SOURCE_POLICY",
    defaultValue: "",
    help: "Per-source allowlists: 'CIDR=host,host; CIDR=host'. The longest matching prefix " +
      "wins; other clients get ALLOWED_HOSTS.",
  },
  {
    key: "MODE",
    defaultValue: "enforce",
    help: "enforce, or audit: forward everything and log would_deny=true where enforce denies.",
  },
  {
    key: "DST_POLICY",
    defaultValue: "pin",
    help: "pin: connect only to an address the allowed name resolves to (the dialled one if it " +
      "is among them); strict: deny when the dialled address is not among them; off: trust it.",
  },
  {
    key: "ECH_POLICY",
    defaultValue: "allow",
    help: "allow or deny ClientHellos offering Encrypted Client Hello (the outer SNI decides).",
  },
  {
    key: "ADMIN_LISTEN",
    defaultValue: "127.0.0.1:9090",
    help: "Address of /metrics, /healthz and /readyz; empty turns it off.",
  },
  {
    key: "RELAY",
    defaultValue: "kernel",
    help: "kernel: TLS connections are accepted, read and relayed by a thread of their own " +
      "on libc's epoll (decisions stay on the main thread); deno: Deno's sockets. HTTP " +
      "always uses Deno's. Read at start-up only.",
  },
  { key: "HTTP_PORT", defaultValue: "8080", help: "Port of the HTTP listener (Host checked)." },
  { key: "HTTPS_PORT", defaultValue: "8443", help: "Port of the TLS listener (SNI checked)." },
  {
    key: "LISTEN_ADDRESS",
    defaultValue: "::",
    help: "Comma-separated listen addresses; :: is dual stack (IPv4 and IPv6).",
  },
  {
    key: "LOG_LEVEL",
    defaultValue: "info",
    help: "trace, debug, info, warning or error. RUST_LOG is read when LOG_LEVEL is unset.",
  },
  { key: "LOG_FORMAT", defaultValue: "text", help: "text (one line per event) or json." },
  {
    key: "FIRST_BYTES_TIMEOUT",
    defaultValue: "10s",
    help: "Total time a client has to send its request head or ClientHello.",
  },
  { key: "CONNECT_TIMEOUT", defaultValue: "10s", help: "Time allowed to connect upstream." },
  {
    key: "IDLE_TIMEOUT",
    defaultValue: "5m",
    help: "A relayed connection with no bytes either way for this long is closed.",
  },
  {
    key: "DRAIN_TIMEOUT",
    defaultValue: "30s",
    help: "On SIGTERM, how long connections in flight may finish before they are closed.",
  },
  {
    key: "MAX_CONNECTIONS",
    defaultValue: "10000",
    help: "Connections held at once; more are refused at once, never queued.",
  },
  {
    key: "MAX_CONNECTIONS_PER_SOURCE",
    defaultValue: "0",
    help: "Connections held at once per client address; 0 means no per-source limit.",
  },
];

/**
 * Keys the env file may hold for the firewall setup script; the proxy ignores them quietly
 * (any other unknown key earns a warning, since it is most likely a typo).
 */
export const FIREWALL_KEYS: ReadonlySet<string> = new Set([
  "REDIRECT_HTTP_PORTS",
  "REDIRECT_TLS_PORTS",
  "LAN_INTERFACE",
  "PASS_THROUGH",
  "BLOCK_DIRECT_PROXY_ACCESS",
  "IPTABLES",
  "IP6TABLES",
]);

const ENV_ONLY_KEYS = new Set(["ENV_FILE", "RUST_LOG"]);

/** `ALLOWED_HOSTS` → `--allowed-hosts`. */
export function flagName(key: string): string {
  return key.toLowerCase().replaceAll("_", "-");
}

/** What the command line asked for, besides settings. */
export type Invocation =
  | { kind: "run"; config: Config; warnings: string[] }
  | { kind: "help"; text: string }
  | { kind: "version" };

/** Where settings come from; `readFile` returns null when the file does not exist. */
export interface Sources {
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly readFile: (path: string) => string | null;
}

/** Raised for any bad setting; the message names the bad value. Exit status 2. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Reads the command line, environment and env file into a Config, or throws ConfigError. */
export function loadConfig(sources: Sources): Invocation {
  const flags = parseFlags(sources.args);
  if (flags.help) return { kind: "help", text: helpText() };
  if (flags.version) return { kind: "version" };

  const warnings: string[] = [];
  const { path: envFile, explicit } = envFilePath(flags.values, sources.env);
  let fileValues: Raw = {};
  let fileRead: string | null = null;
  if (envFile !== null) {
    const text = sources.readFile(envFile);
    if (text === null && explicit) throw new ConfigError(`env file ${envFile} does not exist`);
    if (text !== null) {
      fileValues = parseEnvFile(text, envFile, warnings);
      fileRead = envFile;
    }
  }

  const raw: Raw = {};
  for (const { key, defaultValue } of SETTINGS) {
    raw[key] = flags.values[key] ?? sources.env[key] ?? fileValues[key] ?? defaultValue;
  }
  // RUST_LOG stands in for LOG_LEVEL only where LOG_LEVEL was given nowhere.
  const rustLog = sources.env.RUST_LOG ?? fileValues.RUST_LOG;
  const levelGiven = flags.values.LOG_LEVEL ?? sources.env.LOG_LEVEL ?? fileValues.LOG_LEVEL;
  if (levelGiven === undefined && rustLog !== undefined) {
    const level = levelFromRustLog(rustLog);
    if (level === null) {
      throw new ConfigError(`RUST_LOG ${JSON.stringify(rustLog)} names no level for proxy_please`);
    }
    raw.LOG_LEVEL = level;
  }

  return { kind: "run", config: buildConfig(raw, fileRead), warnings };
}

/** Parses an env file's text (KEY=VALUE, quotes and comments as dotenv reads them). */
export function parseEnvFile(text: string, path: string, warnings: string[]): Raw {
  const values = parseDotenv(text) as Raw;
  const known = new Set(SETTINGS.map((s) => s.key));
  for (const key of Object.keys(values)) {
    if (!known.has(key) && !FIREWALL_KEYS.has(key) && !ENV_ONLY_KEYS.has(key)) {
      warnings.push(`${path}: unknown setting ${key} ignored`);
    }
  }
  return values;
}

function envFilePath(
  flags: Raw,
  env: Readonly<Record<string, string | undefined>>,
): { path: string | null; explicit: boolean } {
  const given = flags.ENV_FILE ?? env.ENV_FILE;
  if (given === undefined) return { path: DEFAULT_ENV_FILE, explicit: false };
  if (given === "") return { path: null, explicit: false };
  return { path: given, explicit: true };
}

function parseFlags(args: readonly string[]): { values: Raw; help: boolean; version: boolean } {
  const options: Record<string, { type: "string" | "boolean"; short?: string }> = {
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
    "env-file": { type: "string" },
  };
  for (const { key } of SETTINGS) options[flagName(key)] = { type: "string" };
  // parseArgs reads `--https-port -1` as two options and explains it in three lines; name the
  // value in one line instead.
  for (let i = 0; i + 1 < args.length; i++) {
    const name = args[i].startsWith("--") ? args[i].slice(2) : "";
    if (options[name]?.type === "string" && args[i + 1].startsWith("-")) {
      throw new ConfigError(
        `--${name} value ${JSON.stringify(args[i + 1])} starts with a dash; ` +
          `write --${name}=${args[i + 1]} if you mean it`,
      );
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options, strict: true, allowPositionals: false });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ConfigError(message.split("\n")[0]);
  }
  const values: Raw = {};
  for (const [name, value] of Object.entries(parsed.values)) {
    if (typeof value === "string") values[name.toUpperCase().replaceAll("-", "_")] = value;
  }
  return {
    values,
    help: parsed.values.help === true,
    version: parsed.values.version === true,
  };
}

/** Log levels, least severe first. */
export const LEVELS: readonly LogLevel[] = ["trace", "debug", "info", "warning", "error"];

function parseLevel(text: string): Parsed<LogLevel> {
  const word = text.trim().toLowerCase();
  const level = word === "warn" ? "warning" : word;
  return (LEVELS as readonly string[]).includes(level)
    ? { ok: true, value: level as LogLevel }
    : { ok: false, reason: `LOG_LEVEL ${JSON.stringify(text)} is not one of ${LEVELS.join(", ")}` };
}

/** The level a `RUST_LOG` value sets for proxy_please, or null when it is not a valid value. */
export function levelFromRustLog(text: string): string | null {
  // env_logger rules: `target=level` concerns that target only and beats a bare `level`;
  // directives for other crates do not touch ours.
  let global: string | undefined;
  let ours: string | undefined;
  for (const item of text.split(",")) {
    const directive = item.trim();
    if (directive === "") continue;
    const eq = directive.lastIndexOf("=");
    if (eq === -1) {
      if (parseLevel(directive).ok) global = directive;
      else if (/^proxy_please(::|$)/.test(directive)) ours = "trace";
      else return null; // a bare word that is no level is far likelier a typo than a crate
      continue;
    }
    const target = directive.slice(0, eq).trim();
    const level = directive.slice(eq + 1).trim();
    if (!parseLevel(level).ok) return null;
    if (/^proxy_please(::|$)/.test(target)) ours = level;
  }
  return ours ?? global ?? (text.trim() === "" ? null : "info");
}

function parsePort(key: string, text: string): Parsed<number> {
  const n = /^\s*\d{1,5}\s*$/.test(text) ? Number(text) : NaN;
  return n >= 1 && n <= 65535
    ? { ok: true, value: n }
    : { ok: false, reason: `${key} ${JSON.stringify(text)} is not a port (1-65535)` };
}

function parseCount(key: string, text: string, min: number): Parsed<number> {
  const n = /^\s*\d{1,9}\s*$/.test(text) ? Number(text) : NaN;
  return n >= min
    ? { ok: true, value: n }
    : { ok: false, reason: `${key} ${JSON.stringify(text)} is not a whole number >= ${min}` };
}

function parseListen(text: string): Parsed<string[]> {
  const addresses = text.split(",").map((a) => a.trim()).filter((a) => a !== "");
  if (addresses.length === 0) return { ok: false, reason: "LISTEN_ADDRESS is empty" };
  const bad = addresses.find((a) => !parseIp(a).ok);
  return bad === undefined
    ? { ok: true, value: addresses }
    : { ok: false, reason: `LISTEN_ADDRESS ${JSON.stringify(bad)} is not an IP address` };
}

function durationOf(key: string, text: string): Parsed<number> {
  const result = parseDuration(text);
  return result.ok
    ? { ok: true, value: result.ms }
    : { ok: false, reason: `${key} ${result.reason}` };
}

function oneOf<T extends string>(key: string, text: string, words: readonly T[]): Parsed<T> {
  const word = text.trim().toLowerCase();
  return (words as readonly string[]).includes(word)
    ? { ok: true, value: word as T }
    : { ok: false, reason: `${key} ${JSON.stringify(text)} is not one of ${words.join(", ")}` };
}

function parseAdmin(text: string): Parsed<ListenAddress | null> {
  if (text.trim() === "") return { ok: true, value: null };
  const result = parseListenAddress(text.trim());
  return result.ok ? result : { ok: false, reason: `ADMIN_LISTEN: ${result.reason}` };
}

function must<T>(result: Parsed<T>): T {
  if (!result.ok) throw new ConfigError(result.reason);
  return result.value;
}

function buildConfig(raw: Raw, envFile: string | null): Config {
  const list = parseAllowlist(raw.ALLOWED_HOSTS);
  if (!list.ok) throw new ConfigError(`ALLOWED_HOSTS: ${list.reason}`);
  const httpPort = must(parsePort("HTTP_PORT", raw.HTTP_PORT));
  const httpsPort = must(parsePort("HTTPS_PORT", raw.HTTPS_PORT));
  if (httpPort === httpsPort) {
    throw new ConfigError(`HTTP_PORT and HTTPS_PORT are both ${httpPort}`);
  }
  const sources = parseSourcePolicy(raw.SOURCE_POLICY);
  if (!sources.ok) throw new ConfigError(sources.reason);
  return {
    allowlist: list.allowlist,
    sourcePolicy: sources.rules,
    mode: must(oneOf("MODE", raw.MODE, ["enforce", "audit"] as const)),
    dstPolicy: must(oneOf("DST_POLICY", raw.DST_POLICY, ["pin", "strict", "off"] as const)),
    echPolicy: must(oneOf("ECH_POLICY", raw.ECH_POLICY, ["allow", "deny"] as const)),
    adminListen: must(parseAdmin(raw.ADMIN_LISTEN)),
    relay: must(oneOf("RELAY", raw.RELAY, ["deno", "kernel"] as const)),
    httpPort,
    httpsPort,
    listenAddresses: must(parseListen(raw.LISTEN_ADDRESS)),
    logLevel: must(parseLevel(raw.LOG_LEVEL)),
    logFormat: must(oneOf("LOG_FORMAT", raw.LOG_FORMAT, ["text", "json"] as const)),
    firstBytesTimeoutMs: must(durationOf("FIRST_BYTES_TIMEOUT", raw.FIRST_BYTES_TIMEOUT)),
    connectTimeoutMs: must(durationOf("CONNECT_TIMEOUT", raw.CONNECT_TIMEOUT)),
    idleTimeoutMs: must(durationOf("IDLE_TIMEOUT", raw.IDLE_TIMEOUT)),
    drainTimeoutMs: must(durationOf("DRAIN_TIMEOUT", raw.DRAIN_TIMEOUT)),
    maxConnections: must(parseCount("MAX_CONNECTIONS", raw.MAX_CONNECTIONS, 1)),
    maxConnectionsPerSource: must(
      parseCount("MAX_CONNECTIONS_PER_SOURCE", raw.MAX_CONNECTIONS_PER_SOURCE, 0),
    ),
    envFile,
  };
}

/** The `--help` text, generated from SETTINGS so it cannot drift from what is read. */
export function helpText(): string {
  const lines = [
    "proxy-please: transparent egress allowlist proxy (HTTP Host and TLS SNI)",
    "",
    "Usage: proxy-please [--setting value ...]",
    "       proxy-please --help | --version",
    "",
    "Each setting is read from, in order of precedence: its flag, the environment variable,",
    `the env file (--env-file or ENV_FILE; default ${DEFAULT_ENV_FILE} when it exists), the default.`,
    "",
  ];
  for (const { key, defaultValue, help } of SETTINGS) {
    lines.push(
      `  --${flagName(key)}  ${key}  (default: ${defaultValue === "" ? "empty" : defaultValue})`,
    );
    lines.push(`      ${help}`);
  }
  lines.push(`  --env-file  ENV_FILE  (default: ${DEFAULT_ENV_FILE} if present; empty: none)`);
  lines.push("      KEY=VALUE file with the settings above.");
  lines.push("");
  lines.push("Exit status: 0 after a clean stop, 1 on a start-up failure, 2 on bad configuration.");
  return lines.join("\n");
}
