/**
 * main.ts as the operator runs it: a `deno run` subprocess with settings from flags, the
 * environment and an env file; exit statuses, start-up lines, SIGTERM and SIGHUP.
 * Listens on 127.0.0.1 only, on ports picked free just before.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { flagName, SETTINGS } from "../src/config.ts";
import denoJson from "../deno.json" with { type: "json" };
import { freePort, freePorts, readToEnd, within, writeAll } from "./fixtures/core_net.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));

/** A clean environment: no env file, no admin listener, nothing inherited but PATH/HOME. */
function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {
    PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
    ENV_FILE: "",
    // Off, so parallel runs never fight over the admin port (ignored if unknown).
    ADMIN_LISTEN: "",
  };
  const denoDir = Deno.env.get("DENO_DIR");
  if (denoDir !== undefined) env.DENO_DIR = denoDir;
  return { ...env, ...extra };
}

function command(args: string[], env: Record<string, string>): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...args],
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

/** Runs main.ts to completion (killed if it runs past `ms`: a bad config must not start). */
async function runToEnd(args: string[], env = baseEnv(), ms = 60_000) {
  const child = command(args, env).spawn();
  try {
    const out = await within(child.output(), ms, `main.ts ${args.join(" ")}`);
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } catch (error) {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
    throw error;
  }
}

/** A running proxy whose stdout lines are collected as they come. */
class Proxy {
  readonly lines: string[] = [];
  readonly #child: Deno.ChildProcess;
  readonly #reading: Promise<void>;
  readonly #stderr: Promise<string>;
  #waiters: (() => void)[] = [];

  constructor(args: string[], env: Record<string, string>) {
    this.#child = command(args, env).spawn();
    this.#reading = this.#read();
    this.#stderr = new Response(this.#child.stderr).text();
  }

  async #read(): Promise<void> {
    let rest = "";
    for await (const text of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      rest += text;
      const parts = rest.split("\n");
      rest = parts.pop() ?? "";
      this.lines.push(...parts);
      for (const wake of this.#waiters.splice(0)) wake();
    }
    if (rest !== "") this.lines.push(rest);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  /** Waits for a line after index `from` matching `pattern`; returns its index. */
  async waitFor(pattern: RegExp, from = 0, ms = 30_000): Promise<number> {
    const deadline = Date.now() + ms;
    while (true) {
      const i = this.lines.findIndex((line, j) => j >= from && pattern.test(line));
      if (i >= 0) return i;
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`no line matching ${pattern} in ${ms} ms; got:\n${this.lines.join("\n")}`);
      }
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        timer = setTimeout(resolve, Math.min(left, 200));
      });
      clearTimeout(timer);
    }
  }

  signal(name: Deno.Signal): void {
    this.#child.kill(name);
  }

  /** Whether the process is still running: it answers signal 0 (no signal sent). */
  async alive(): Promise<boolean> {
    const probe = await new Deno.Command("kill", { args: ["-0", String(this.#child.pid)] })
      .output();
    return probe.success;
  }

  /** Waits for the exit status; SIGKILLs it after `ms` and fails, so no test leaves it behind. */
  async exit(ms = 30_000): Promise<{ code: number; stderr: string }> {
    try {
      const status = await within(this.#child.status, ms, "proxy exit");
      await this.#reading;
      return { code: status.code, stderr: await this.#stderr };
    } catch (error) {
      await this.kill();
      throw error;
    }
  }

  /** Kills it if still running and releases the pipes. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
    await this.#child.status;
    await this.#reading.catch(() => {});
    await this.#stderr.catch(() => "");
  }
}

/** Starts a proxy on two free loopback ports and waits until it is ready. */
async function startProxy(extraArgs: string[] = [], env = baseEnv()) {
  const [httpPort, httpsPort] = freePorts();
  const proxy = new Proxy([
    "--listen-address",
    "127.0.0.1",
    "--http-port",
    String(httpPort),
    "--https-port",
    String(httpsPort),
    ...extraArgs,
  ], env);
  try {
    await proxy.waitFor(/proxy-please \S+ ready/);
  } catch (error) {
    await proxy.kill();
    throw error;
  }
  return { proxy, httpPort, httpsPort };
}

/** Sends one HTTP request head straight to the proxy's HTTP port and reads the answer. */
async function ask(port: number, host: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, new TextEncoder().encode(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    return new TextDecoder().decode(await within(readToEnd(conn, 65536), 30_000, "answer"));
  } finally {
    conn.close();
  }
}

/** Runs `body` with a fresh temp dir, removed afterwards. */
async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "core_main_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("main: each bad configuration exits 2 with one line on stderr naming the value", async () => {
  const cases: [string[], Record<string, string>, string][] = [
    [["--allowed-hosts", "*.*.example.com"], {}, "*.*.example.com"],
    [["--allowed-hosts", "ex ample.com"], {}, "ex ample.com"],
    [["--allowed-hosts", "http://example.com"], {}, "http://example.com"],
    [["--allowed-hosts", "example..com"], {}, "example..com"],
    [[], { ALLOWED_HOSTS: "ok.test,example..com" }, "example..com"],
    [["--http-port", "0"], {}, '"0"'],
    [["--http-port", "70000"], {}, "70000"],
    [["--https-port", "abc"], {}, "abc"],
    [[], { HTTP_PORT: "abc" }, "abc"],
    [["--bogus"], {}, "--bogus"],
    [["--http-port", "9000", "--https-port", "9000"], {}, "9000"],
    [["--idle-timeout", "10x"], {}, "10x"],
    [["--first-bytes-timeout", "0"], {}, "FIRST_BYTES_TIMEOUT"],
    [[], { CONNECT_TIMEOUT: "25h" }, "25h"],
    [["--log-format", "xml"], {}, "xml"],
    [["--log-level", "loud"], {}, "loud"],
    [[], { LOG_FORMAT: "yaml" }, "yaml"],
    [[], { ENV_FILE: "/nonexistent/proxy-please.env" }, "/nonexistent/proxy-please.env"],
  ];
  // A few at a time: each is a whole Deno start.
  for (let i = 0; i < cases.length; i += 4) {
    await Promise.all(
      cases.slice(i, i + 4).map(async ([args, env, needle]) => {
        const what = `${args.join(" ")} ${JSON.stringify(env)}`;
        const r = await runToEnd(args, baseEnv(env));
        assert.equal(r.code, 2, `${what}: exit status (stderr: ${r.stderr})`);
        assert.equal(r.stdout, "", `${what}: nothing on stdout`);
        const lines = r.stderr.split("\n").filter((l) => l !== "");
        assert.equal(lines.length, 1, `${what}: one line on stderr: ${JSON.stringify(r.stderr)}`);
        assert.ok(lines[0].startsWith("proxy-please: "), lines[0]);
        assert.ok(lines[0].includes(needle), `${what}: names ${needle}: ${lines[0]}`);
      }),
    );
  }
});

Deno.test("main: a bad value in the env file exits 2 naming it", async () => {
  await withTempDir(async (dir) => {
    const file = `${dir}/proxy.env`;
    await Deno.writeTextFile(file, "ALLOWED_HOSTS=good.test,*.*.bad.test\n");
    const r = await runToEnd([], baseEnv({ ENV_FILE: file }));
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), /^proxy-please: .*\*\.\*\.bad\.test/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  });
});

Deno.test("main: a flag value with a leading dash exits 2 with ONE line", async () => {
  // Regression: node's parseArgs explains `--flag -x` in three lines without naming the value.
  const r = await runToEnd(["--https-port", "-1"]);
  assert.equal(r.code, 2);
  const lines = r.stderr.split("\n").filter((l) => l !== "");
  assert.equal(lines.length, 1, JSON.stringify(r.stderr));
  assert.ok(lines[0].includes("-1"), lines[0]);
});

Deno.test("main: --help exits 0 listing every setting; --version prints the version", async () => {
  const help = await runToEnd(["--help"]);
  assert.equal(help.code, 0);
  assert.equal(help.stderr, "");
  for (const { key } of SETTINGS) {
    assert.ok(help.stdout.includes(`--${flagName(key)}`), `--help lists --${flagName(key)}`);
    assert.ok(help.stdout.includes(key), `--help lists ${key}`);
  }
  const version = await runToEnd(["--version"]);
  assert.equal(version.code, 0);
  assert.equal(
    version.stdout.split("\n")[0].split(" ").slice(0, 2).join(" "),
    `proxy-please ${denoJson.version}`,
  );
});

Deno.test("main: starts, listens, and stops on SIGTERM with status 0 and a stopped line", async () => {
  const { proxy, httpPort, httpsPort } = await startProxy();
  try {
    await proxy.waitFor(new RegExp(` INFO listening for HTTP on 127\\.0\\.0\\.1:${httpPort}$`));
    await proxy.waitFor(new RegExp(` INFO listening for HTTPS on 127\\.0\\.0\\.1:${httpsPort}$`));
    // Both ports take connections.
    for (const port of [httpPort, httpsPort]) {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
    }
    // Every line is a text log line.
    for (const line of proxy.lines) {
      assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (TRACE|DEBUG|INFO|WARN|ERROR) \S/);
    }
    proxy.signal("SIGTERM");
    const { code, stderr } = await proxy.exit();
    assert.equal(code, 0, stderr);
    await proxy.waitFor(/ INFO stopped/);
    // The ports are free again.
    for (const port of [httpPort, httpsPort]) {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
    }
  } finally {
    await proxy.kill();
  }
});

Deno.test("main: LOG_FORMAT=json writes only JSON lines", async () => {
  const { proxy, httpPort } = await startProxy([], baseEnv({ LOG_FORMAT: "json" }));
  try {
    const answer = await ask(httpPort, "nope.test");
    assert.match(answer, /^HTTP\/1\.1 403 /);
    await proxy.waitFor(/"event":"DENIED"/);
    proxy.signal("SIGTERM");
    assert.equal((await proxy.exit()).code, 0);
    assert.ok(proxy.lines.length >= 3);
    const records = proxy.lines.map((line) => JSON.parse(line));
    const denied = records.find((r) => r.event === "DENIED");
    assert.ok(denied !== undefined, proxy.lines.join("\n"));
    assert.equal(denied.host, "nope.test");
    assert.equal(denied.proto, "HTTP");
    assert.equal(denied.level, "INFO");
    assert.ok(
      records.some((r) => typeof r.message === "string" && r.message.startsWith("stopped")),
    );
  } finally {
    await proxy.kill();
  }
});

Deno.test("main: a port already in use is a start-up failure (exit 1) naming the port", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const other = freePort();
    const r = await runToEnd([
      "--listen-address",
      "127.0.0.1",
      "--http-port",
      String(other),
      "--https-port",
      String(busy.addr.port),
    ]);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.ok((r.stdout + r.stderr).includes(`127.0.0.1:${busy.addr.port}`), r.stdout + r.stderr);
    // It let go of the port it had bound.
    Deno.listen({ hostname: "127.0.0.1", port: other }).close();
  } finally {
    busy.close();
  }
});

Deno.test("main: SIGHUP with a bad env file keeps running unchanged; a good one applies", async () => {
  // Straight to the port (no REDIRECT) the proxy never forwards and reports the destination
  // problem before the policy, so the policy in force is read off the reload lines.
  await withTempDir(async (dir) => {
    const file = `${dir}/proxy.env`;
    await Deno.writeTextFile(file, "ALLOWED_HOSTS=old.test\n");
    const { proxy, httpPort } = await startProxy([], baseEnv({ ENV_FILE: file }));
    try {
      await proxy.waitFor(/ ready: 1 allowlist entries/);

      // A bad allowlist: rejected whole, naming the entry; the process keeps serving.
      await Deno.writeTextFile(file, "ALLOWED_HOSTS=new.test,*.*.bad.test\n");
      let from = proxy.lines.length;
      proxy.signal("SIGHUP");
      const rejected = await proxy.waitFor(/ ERROR reload rejected/, from);
      assert.ok(proxy.lines[rejected].includes("*.*.bad.test"), proxy.lines[rejected]);
      assert.equal(await proxy.alive(), true);
      assert.match(await ask(httpPort, "old.test"), /^HTTP\/1\.1 403 /);
      assert.ok(
        !proxy.lines.slice(from).some((l) => l.includes("configuration reloaded")),
        "nothing was applied",
      );

      // A missing file is rejected the same way.
      await Deno.rename(file, `${file}.away`);
      from = proxy.lines.length;
      proxy.signal("SIGHUP");
      const missing = await proxy.waitFor(/ ERROR reload rejected/, from);
      assert.ok(proxy.lines[missing].includes(file), proxy.lines[missing]);
      await Deno.rename(`${file}.away`, file);

      // A good file is applied.
      await Deno.writeTextFile(file, "ALLOWED_HOSTS=new.test, *.wild.test, third.test\n");
      from = proxy.lines.length;
      proxy.signal("SIGHUP");
      const reloaded = await proxy.waitFor(/ INFO configuration reloaded/, from);
      assert.match(proxy.lines[reloaded], /reloaded: 3 allowlist entries/);
      assert.match(await ask(httpPort, "new.test"), /^HTTP\/1\.1 403 /);

      // A log format change cannot apply without a restart, and says so; the text format stays.
      // (The ports are flags here, and flags beat the file.)
      await Deno.writeTextFile(file, `ALLOWED_HOSTS=new.test\nLOG_FORMAT=json\nHTTP_PORT=1\n`);
      from = proxy.lines.length;
      proxy.signal("SIGHUP");
      await proxy.waitFor(/ INFO configuration reloaded: 1 allowlist entries/, from);
      const warn = await proxy.waitFor(/ WARN changes that need a restart/, from);
      assert.ok(proxy.lines[warn].includes("LOG_FORMAT"), proxy.lines[warn]);
      assert.ok(!proxy.lines[warn].includes("HTTP_PORT"), proxy.lines[warn]);
      assert.match(await ask(httpPort, "new.test"), /^HTTP\/1\.1 403 /);

      proxy.signal("SIGTERM");
      const { code } = await proxy.exit();
      assert.equal(code, 0);
      await proxy.waitFor(/ INFO stopped/);
    } finally {
      await proxy.kill();
    }
  });
});

Deno.test("main: SIGTERM stops within the drain period even with a silent client connected", async () => {
  // Regression: the drain period once bounded only relays; a connection still reading its
  // first bytes kept the process alive until FIRST_BYTES_TIMEOUT.
  const { proxy, httpPort } = await startProxy([
    "--drain-timeout",
    "200ms",
    "--first-bytes-timeout",
    "24h",
  ]);
  const silent = await Deno.connect({ hostname: "127.0.0.1", port: httpPort });
  try {
    // The listener accepts in arrival order: once a later connection has its answer, the
    // silent one has been accepted and sits in its first-bytes read.
    assert.match(await ask(httpPort, "later.test"), /^HTTP\/1\.1 403 /);
    proxy.signal("SIGTERM");
    const drain = await proxy.waitFor(/SIGTERM: no new connections; draining \d+ /);
    assert.doesNotMatch(proxy.lines[drain], /draining 0 /, "the silent client is in flight");
    const { code } = await proxy.exit(15_000);
    assert.equal(code, 0);
    await proxy.waitFor(/ INFO stopped/);
  } finally {
    silent.close();
    await proxy.kill();
  }
});
