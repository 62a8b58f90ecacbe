import assert from "node:assert/strict";
import {
  type Config,
  ConfigError,
  DEFAULT_ENV_FILE,
  FIREWALL_KEYS,
  flagName,
  helpText,
  type Invocation,
  loadConfig,
  SETTINGS,
  type Sources,
} from "../src/config.ts";

type Env = Record<string, string | undefined>;

/** Sources with an in-memory file system; records which paths were read. */
function sources(args: string[], env: Env = {}, files: Record<string, string> = {}) {
  const reads: string[] = [];
  const src: Sources = {
    args,
    env,
    readFile: (path) => {
      reads.push(path);
      return Object.hasOwn(files, path) ? files[path] : null;
    },
  };
  return { src, reads };
}

function run(args: string[], env: Env = {}, files: Record<string, string> = {}) {
  const invocation: Invocation = loadConfig(sources(args, env, files).src);
  assert.equal(invocation.kind, "run");
  if (invocation.kind !== "run") throw new Error("unreachable");
  return invocation;
}

function config(args: string[], env: Env = {}, files: Record<string, string> = {}): Config {
  return run(args, env, files).config;
}

/** Asserts that loading fails with one ConfigError whose message contains every `needle`. */
function refuses(
  args: string[],
  env: Env,
  files: Record<string, string>,
  ...needles: string[]
): string {
  let caught: unknown;
  try {
    loadConfig(sources(args, env, files).src);
  } catch (error) {
    caught = error;
  }
  assert.ok(
    caught instanceof ConfigError,
    `expected a ConfigError for ${JSON.stringify({ args, env, files })}, got ${caught}`,
  );
  const message = (caught as ConfigError).message;
  assert.ok(!message.includes("\n"), `one line: ${JSON.stringify(message)}`);
  for (const needle of needles) {
    assert.ok(message.includes(needle), `message should name ${needle}: ${message}`);
  }
  return message;
}

const NO_FILE: Env = { ENV_FILE: "" };
const FILE = "/test/proxy.env";

Deno.test("loadConfig: defaults when nothing is given", () => {
  const c = config([], NO_FILE);
  assert.deepEqual(c.allowlist.entries, []);
  assert.equal(c.httpPort, 8080);
  assert.equal(c.httpsPort, 8443);
  assert.deepEqual(c.listenAddresses, ["::"]);
  assert.equal(c.logLevel, "info");
  assert.equal(c.logFormat, "text");
  assert.equal(c.firstBytesTimeoutMs, 10_000);
  assert.equal(c.connectTimeoutMs, 10_000);
  assert.equal(c.idleTimeoutMs, 300_000);
  assert.equal(c.drainTimeoutMs, 30_000);
  assert.equal(c.maxConnections, 10_000);
  assert.equal(c.maxConnectionsPerSource, 0);
  assert.equal(c.envFile, null);
});

/** [key, value for flag, env, file, and how to read the setting off a Config]. */
const PRECEDENCE: [string, [string, string, string], (c: Config) => unknown, unknown[]][] = [
  ["HTTP_PORT", ["81", "82", "83"], (c) => c.httpPort, [81, 82, 83, 8080]],
  [
    "ALLOWED_HOSTS",
    ["flag.test", "env.test", "file.test"],
    (c) => c.allowlist.entries.join(","),
    ["flag.test", "env.test", "file.test", ""],
  ],
  ["LOG_FORMAT", ["json", "text", "json"], (c) => c.logFormat, ["json", "text", "json", "text"]],
  ["LOG_LEVEL", ["debug", "error", "trace"], (c) => c.logLevel, [
    "debug",
    "error",
    "trace",
    "info",
  ]],
  ["IDLE_TIMEOUT", ["1s", "2m", "3"], (c) => c.idleTimeoutMs, [1000, 120_000, 3000, 300_000]],
  [
    "LISTEN_ADDRESS",
    ["127.0.0.1", "::1", "0.0.0.0,::"],
    (c) => c.listenAddresses.join(","),
    ["127.0.0.1", "::1", "0.0.0.0,::", "::"],
  ],
  ["MAX_CONNECTIONS", ["1", "2", "3"], (c) => c.maxConnections, [1, 2, 3, 10_000]],
  ["DRAIN_TIMEOUT", ["1ms", "2s", "3m"], (c) => c.drainTimeoutMs, [1, 2000, 180_000, 30_000]],
];

Deno.test("loadConfig: flag beats environment beats env file beats default", () => {
  for (
    const [key, [flagValue, envValue, fileValue], read, [fromFlag, fromEnv, fromFile, dflt]]
      of PRECEDENCE
  ) {
    const flag = [`--${flagName(key)}`, flagValue];
    const env: Env = { ENV_FILE: FILE, [key]: envValue };
    const files = { [FILE]: `${key}=${fileValue}\n` };
    assert.equal(read(config(flag, env, files)), fromFlag, `${key}: flag`);
    assert.equal(read(config([], env, files)), fromEnv, `${key}: env`);
    assert.equal(read(config([], { ENV_FILE: FILE }, files)), fromFile, `${key}: file`);
    assert.equal(read(config([], { ENV_FILE: FILE }, { [FILE]: "" })), dflt, `${key}: default`);
    // `--flag=value` is the same flag.
    assert.equal(read(config([`--${flagName(key)}=${flagValue}`], env, files)), fromFlag);
  }
});

Deno.test("loadConfig: settings from different sources combine", () => {
  const c = config(
    ["--http-port", "9000"],
    { ENV_FILE: FILE, HTTPS_PORT: "9443" },
    { [FILE]: "ALLOWED_HOSTS=a.test, *.b.test\nLOG_FORMAT=json\n" },
  );
  assert.equal(c.httpPort, 9000);
  assert.equal(c.httpsPort, 9443);
  assert.deepEqual(c.allowlist.entries, ["*.b.test", "a.test"]);
  assert.equal(c.logFormat, "json");
  assert.equal(c.envFile, FILE);
});

Deno.test("loadConfig: each bad value from the issue is refused, naming the value", () => {
  const bad: [string, string, string[]][] = [
    ["ALLOWED_HOSTS", "*.*.example.com", ["*.*.example.com"]],
    ["ALLOWED_HOSTS", "ex ample.com", ["ex ample.com"]],
    ["ALLOWED_HOSTS", "http://example.com", ["http://example.com"]],
    ["ALLOWED_HOSTS", "example..com", ["example..com"]],
    ["ALLOWED_HOSTS", "ok.test,example..com", ["example..com"]],
    ["HTTP_PORT", "0", ["HTTP_PORT", '"0"']],
    ["HTTP_PORT", "70000", ["HTTP_PORT", "70000"]],
    ["HTTP_PORT", "abc", ["HTTP_PORT", "abc"]],
    ["HTTPS_PORT", "-1", ["HTTPS_PORT", "-1"]],
    ["HTTPS_PORT", "443.0", ["HTTPS_PORT", "443.0"]],
    ["HTTP_PORT", "", ["HTTP_PORT"]],
    ["FIRST_BYTES_TIMEOUT", "10x", ["FIRST_BYTES_TIMEOUT", "10x"]],
    ["CONNECT_TIMEOUT", "0s", ["CONNECT_TIMEOUT", "0s"]],
    ["IDLE_TIMEOUT", "-5m", ["IDLE_TIMEOUT", "-5m"]],
    ["IDLE_TIMEOUT", "25h", ["IDLE_TIMEOUT", "25h"]],
    ["DRAIN_TIMEOUT", "soon", ["DRAIN_TIMEOUT", "soon"]],
    ["LOG_FORMAT", "xml", ["LOG_FORMAT", "xml"]],
    ["LOG_LEVEL", "verbose", ["LOG_LEVEL", "verbose"]],
    ["LISTEN_ADDRESS", "localhost", ["LISTEN_ADDRESS", "localhost"]],
    ["LISTEN_ADDRESS", "::,1.2.3", ["LISTEN_ADDRESS", "1.2.3"]],
    ["LISTEN_ADDRESS", "fe80::1%eth0", ["LISTEN_ADDRESS", "fe80::1%eth0"]],
    ["LISTEN_ADDRESS", " , ", ["LISTEN_ADDRESS"]],
    ["MAX_CONNECTIONS", "0", ["MAX_CONNECTIONS", '"0"']],
    ["MAX_CONNECTIONS", "lots", ["MAX_CONNECTIONS", "lots"]],
    ["MAX_CONNECTIONS_PER_SOURCE", "-1", ["MAX_CONNECTIONS_PER_SOURCE", "-1"]],
  ];
  for (const [key, value, needles] of bad) {
    // The same value is refused whichever source it comes from.
    refuses([`--${flagName(key)}=${value}`], NO_FILE, {}, ...needles);
    refuses([], { ...NO_FILE, [key]: value }, {}, ...needles);
    refuses([], { ENV_FILE: FILE }, { [FILE]: `${key}=${JSON.stringify(value)}\n` }, ...needles);
  }
});

Deno.test("loadConfig: a flag value with a leading dash is refused in one line naming it", () => {
  // Regression: node's parseArgs explains `--flag -x` in three lines without naming the value.
  refuses(["--https-port", "-1"], NO_FILE, {}, "-1");
  refuses(["--idle-timeout", "-5m"], NO_FILE, {}, "-5m");
});

Deno.test("loadConfig: a bad value is refused even when a lower source has a good one", () => {
  refuses([], { ENV_FILE: FILE, HTTP_PORT: "abc" }, { [FILE]: "HTTP_PORT=81\n" }, "abc");
  // ...and a good value above a bad one in a lower source wins (the lower one is never read).
  assert.equal(
    config([], { ENV_FILE: FILE, HTTP_PORT: "81" }, { [FILE]: "HTTP_PORT=x\n" })
      .httpPort,
    81,
  );
});

Deno.test("loadConfig: HTTP and HTTPS on the same port is refused, naming the port", () => {
  refuses(["--http-port", "9000", "--https-port", "9000"], NO_FILE, {}, "9000", "HTTP_PORT");
  refuses(["--http-port", "8443"], NO_FILE, {}, "8443");
  refuses([], { ...NO_FILE, HTTPS_PORT: "8080" }, {}, "8080");
  // " 8080" and "8080" are the same port.
  refuses(["--https-port", " 8080"], NO_FILE, {}, "8080");
});

Deno.test("loadConfig: unknown flags, positionals and missing flag values are refused", () => {
  refuses(["--bogus"], NO_FILE, {}, "--bogus");
  refuses(["--allowed-host", "a.test"], NO_FILE, {}, "--allowed-host");
  refuses(["-x"], NO_FILE, {}, "-x");
  refuses(["extra"], NO_FILE, {}, "extra");
  refuses(["--http-port"], NO_FILE, {}, "--http-port");
  // Boolean flags take no value.
  refuses(["--help=yes"], NO_FILE, {}, "--help");
});

Deno.test("loadConfig: --help and --version win over everything else", () => {
  for (const args of [["--help"], ["-h"], ["--http-port", "0", "--help"]]) {
    const r = loadConfig(sources(args, NO_FILE).src);
    assert.equal(r.kind, "help", args.join(" "));
  }
  for (const args of [["--version"], ["-V"]]) {
    assert.deepEqual(loadConfig(sources(args, NO_FILE).src), { kind: "version" });
  }
});

Deno.test("helpText: lists every setting with its flag, key and default", () => {
  const text = helpText();
  for (const { key, defaultValue } of SETTINGS) {
    const line = text.split("\n").find((l) => l.includes(`--${flagName(key)} `));
    assert.ok(line !== undefined, `--help lists --${flagName(key)}`);
    assert.ok(line.includes(key), `--help names ${key}`);
    if (defaultValue !== "") assert.ok(line.includes(defaultValue), `default of ${key}`);
  }
  assert.ok(text.includes("--env-file"));
  assert.ok(text.includes(DEFAULT_ENV_FILE));
  const help = loadConfig(sources(["--help"], NO_FILE).src);
  assert.deepEqual(help, { kind: "help", text });
});

Deno.test("loadConfig: every setting in SETTINGS has a flag that accepts its default", () => {
  for (const { key, defaultValue } of SETTINGS) {
    const fromFlag = config([`--${flagName(key)}`, defaultValue], NO_FILE);
    const fromEnv = config([], { ...NO_FILE, [key]: defaultValue });
    assert.deepEqual(fromFlag, config([], NO_FILE), `--${flagName(key)} ${defaultValue}`);
    assert.deepEqual(fromEnv, config([], NO_FILE), `${key}=${defaultValue}`);
  }
});

Deno.test("loadConfig: the core settings are applied from their flags", () => {
  const values: [string, string, (c: Config) => unknown, unknown][] = [
    ["ALLOWED_HOSTS", "x.test", (c) => c.allowlist.entries, ["x.test"]],
    ["HTTP_PORT", "1", (c) => c.httpPort, 1],
    ["HTTPS_PORT", "2", (c) => c.httpsPort, 2],
    ["LISTEN_ADDRESS", "127.0.0.2, ::1", (c) => c.listenAddresses, ["127.0.0.2", "::1"]],
    ["LOG_LEVEL", "error", (c) => c.logLevel, "error"],
    ["LOG_FORMAT", "JSON", (c) => c.logFormat, "json"],
    ["FIRST_BYTES_TIMEOUT", "1s", (c) => c.firstBytesTimeoutMs, 1000],
    ["CONNECT_TIMEOUT", "2s", (c) => c.connectTimeoutMs, 2000],
    ["IDLE_TIMEOUT", "3s", (c) => c.idleTimeoutMs, 3000],
    ["DRAIN_TIMEOUT", "4s", (c) => c.drainTimeoutMs, 4000],
    ["MAX_CONNECTIONS", "5", (c) => c.maxConnections, 5],
    ["MAX_CONNECTIONS_PER_SOURCE", "6", (c) => c.maxConnectionsPerSource, 6],
  ];
  const keys = new Set(SETTINGS.map((s) => s.key));
  const args = values.flatMap(([key, value]) => [`--${flagName(key)}`, value]);
  const c = config(args, NO_FILE);
  for (const [key, , read, expected] of values) {
    assert.ok(keys.has(key), `${key} is in SETTINGS`);
    assert.deepEqual(read(c), expected, key);
  }
});

Deno.test("loadConfig: RUST_LOG is used only when LOG_LEVEL is given nowhere", () => {
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "info" }).logLevel, "info");
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "debug" }).logLevel, "debug");
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "proxy_please=debug" }).logLevel, "debug");
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "warn" }).logLevel, "warning");
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "ERROR" }).logLevel, "error");
  // From the env file too.
  assert.equal(config([], { ENV_FILE: FILE }, { [FILE]: "RUST_LOG=trace\n" }).logLevel, "trace");
  // LOG_LEVEL anywhere wins over RUST_LOG anywhere.
  assert.equal(
    config(["--log-level", "error"], { ...NO_FILE, RUST_LOG: "debug" }).logLevel,
    "error",
  );
  assert.equal(config([], { ...NO_FILE, LOG_LEVEL: "error", RUST_LOG: "debug" }).logLevel, "error");
  assert.equal(
    config([], { ENV_FILE: FILE, RUST_LOG: "debug" }, { [FILE]: "LOG_LEVEL=error\n" }).logLevel,
    "error",
  );
  assert.equal(
    config([], { ENV_FILE: FILE, LOG_LEVEL: "warning" }, { [FILE]: "RUST_LOG=debug\n" }).logLevel,
    "warning",
  );
  // An unusable RUST_LOG is refused, naming the value.
  refuses([], { ...NO_FILE, RUST_LOG: "loud" }, {}, "loud");
});

Deno.test("loadConfig: RUST_LOG directives for other crates do not set our level", () => {
  // Regression: env_logger semantics; a directive for another crate must not set our level,
  // and `proxy_please=LEVEL` beats a bare level.
  assert.equal(
    config([], { ...NO_FILE, RUST_LOG: "hyper=trace,proxy_please=debug" }).logLevel,
    "debug",
  );
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "info,proxy_please=debug" }).logLevel, "debug");
  assert.equal(config([], { ...NO_FILE, RUST_LOG: "hyper=trace" }).logLevel, "info");
});

Deno.test("loadConfig: a bad RUST_LOG is reported as RUST_LOG, the variable the user set", () => {
  // Regression: the message once blamed LOG_LEVEL, which the user never set.
  refuses([], { ...NO_FILE, RUST_LOG: "loud" }, {}, "RUST_LOG");
});

Deno.test("loadConfig: ENV_FILE= (empty) disables the env file, even the default one", () => {
  const files = { [DEFAULT_ENV_FILE]: "HTTP_PORT=81\n" };
  for (const how of [{ args: [], env: { ENV_FILE: "" } }, { args: ["--env-file="], env: {} }]) {
    const { src, reads } = sources(how.args, how.env, files);
    const r = loadConfig(src);
    assert.equal(r.kind, "run");
    if (r.kind === "run") {
      assert.equal(r.config.httpPort, 8080);
      assert.equal(r.config.envFile, null);
    }
    assert.deepEqual(reads, [], "no file is read");
  }
});

Deno.test("loadConfig: the default env file is read when it exists", () => {
  const { src, reads } = sources([], {}, {
    [DEFAULT_ENV_FILE]: '# comment\nALLOWED_HOSTS="a.test,*.b.test"\nHTTP_PORT=81 # port\n',
  });
  const r = loadConfig(src);
  assert.deepEqual(reads, [DEFAULT_ENV_FILE]);
  assert.equal(r.kind, "run");
  if (r.kind !== "run") return;
  assert.deepEqual(r.config.allowlist.entries, ["*.b.test", "a.test"]);
  assert.equal(r.config.httpPort, 81);
  assert.equal(r.config.envFile, DEFAULT_ENV_FILE);
  assert.deepEqual(r.warnings, []);
});

Deno.test("loadConfig: a missing default env file is no error", () => {
  const { src, reads } = sources([], {}, {});
  const r = loadConfig(src);
  assert.deepEqual(reads, [DEFAULT_ENV_FILE]);
  assert.equal(r.kind, "run");
});

Deno.test("loadConfig: Config.envFile is null when the default env file does not exist", () => {
  // Regression: envFile once named the default file even when it did not exist.
  assert.equal(config([], {}, {}).envFile, null);
});

Deno.test("loadConfig: an explicit env file that does not exist is an error naming it", () => {
  refuses([], { ENV_FILE: "/nope/proxy.env" }, {}, "/nope/proxy.env");
  refuses(["--env-file", "/nope/flag.env"], {}, {}, "/nope/flag.env");
  // The flag beats the variable, for the file too.
  const c = config(["--env-file", FILE], { ENV_FILE: "/nope/proxy.env" }, {
    [FILE]: "HTTP_PORT=81",
  });
  assert.equal(c.httpPort, 81);
  assert.equal(c.envFile, FILE);
});

Deno.test("loadConfig: unknown keys in the env file warn; firewall keys and ENV_FILE do not", () => {
  const firewall = [...FIREWALL_KEYS].map((k) => `${k}=x`).join("\n");
  const r = run([], { ENV_FILE: FILE }, {
    [FILE]: `${firewall}\nALLOWED_HOST=typo.test\nHTTP_PORT=81\nRUST_LOG=debug\nENV_FILE=/x\n` +
      `LOG_LEVEL=info\nFOO_BAR=1\n`,
  });
  assert.equal(r.config.httpPort, 81);
  assert.equal(r.warnings.length, 2, r.warnings.join(" | "));
  assert.ok(r.warnings[0].includes("ALLOWED_HOST") && r.warnings[0].includes(FILE), r.warnings[0]);
  assert.ok(r.warnings[1].includes("FOO_BAR"), r.warnings[1]);
  for (const key of FIREWALL_KEYS) {
    assert.ok(!r.warnings.some((w) => w.includes(key + " ")), `${key} earns no warning`);
  }
  // The typo did not set anything.
  assert.deepEqual(r.config.allowlist.entries, []);
});

Deno.test("loadConfig: firewall keys are documented and ignored (not applied as settings)", () => {
  assert.ok(FIREWALL_KEYS.has("REDIRECT_HTTP_PORTS"));
  const a = config([], { ENV_FILE: FILE }, { [FILE]: "" });
  const b = config([], { ENV_FILE: FILE }, { [FILE]: "REDIRECT_HTTP_PORTS=80,8000\n" });
  assert.deepEqual(a, b);
});

Deno.test("loadConfig: environment variables outside SETTINGS are ignored", () => {
  const c = config([], { ...NO_FILE, HOME: "/root", PATH: "/bin", ALLOWED_HOST: "typo.test" });
  assert.deepEqual(c.allowlist.entries, []);
});
