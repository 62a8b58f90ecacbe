/**
 * End to end, issue 6 (operations): reload on SIGHUP while a long download runs, a bad env
 * file rejected whole, graceful drain on SIGTERM (transfers finish, new connections refused,
 * `/readyz` 503, exit 0), and the admin endpoints' counters following real traffic.
 *
 * These cases need what the lab's own proxy handle does not offer yet: a proxy whose allowlist
 * comes from an env file only (the lab always sets ALLOWED_HOSTS in the environment, which
 * outranks the file), that can be signalled, and whose exit status can be read. So the lab
 * starts without a proxy and each case runs its own as a child process in the router namespace
 * ({@linkcode OwnProxy}); the lab still removes everything in its namespaces at the end.
 *
 * The lab prefix is `ppe2eo-` (not the suite's shared `ppe2e-`), so this file can run while
 * another e2e file has its lab up.
 */

import assert from "node:assert/strict";
import { clientScript, curl, denoClient } from "../lab/clients.ts";
import { processAlive, run, sleep } from "../lab/command.ts";
import { type Lab, upLab } from "../lab/lab.ts";
import { proxyEntryPoint, ProxyLog, V8_FLAGS } from "../lab/proxy.ts";
import { BIG_FILE_BYTES } from "../lab/servers.ts";
import { LAB_ALLOWED_HOSTS } from "../lab/topology.ts";
import type { Plan, Report } from "./clients/hardening_conversation.ts";
import { isDecision } from "./lab_fixture.ts";
import { b64 } from "./raw.ts";

const PREFIX = "ppe2eo-";
/** The admin listener's default address, inside the router namespace. */
const ADMIN = "http://127.0.0.1:9090";
/** The rate the downloads are held to, so that they are still running when we act. */
const SLOW = "8M";

// ---------------------------------------------------------------------------------------------
// Local helpers (candidates for the lab library)
// ---------------------------------------------------------------------------------------------

/** What a case gets: the lab (which runs no proxy of its own here). */
interface OpsContext {
  lab: Lab;
}

/**
 * Like `labTest`, but the lab starts without its proxy: each case runs its own
 * ({@linkcode OwnProxy}), so no handle to a stopped proxy (whose pid may be reused by then) is
 * ever signalled.
 */
function opsTest(
  name: string,
  cases: [string, (c: OpsContext) => Promise<void>][],
  prefix: string,
): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const lab = await upLab({ prefix, proxy: false, log: () => {} });
      try {
        // The router namespace has no way to the registry: cache the proxy's imports first.
        await run([Deno.execPath(), "cache", "--quiet", proxyEntryPoint()], { timeoutMs: 300_000 });
        for (const [caseName, fn] of cases) {
          await t.step(caseName, async () => {
            await lab.resetServerLogs();
            await fn({ lab });
          });
        }
      } finally {
        await lab.down();
      }
    },
  });
}

/**
 * A proxy run by this test as a child process in the router namespace, configured by an env
 * file (plus `env`), with its JSON log in a file of its own.
 */
class OwnProxy {
  readonly log: ProxyLog;
  readonly status: Promise<Deno.CommandStatus>;
  #child: Deno.ChildProcess;

  private constructor(child: Deno.ChildProcess, logFile: string, readonly envFile: string) {
    this.#child = child;
    this.log = new ProxyLog(logFile);
    this.status = child.status;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Stops the lab's proxy and starts ours; resolves once its three ports listen. */
  static async start(
    lab: Lab,
    envFileText: string,
    env: Record<string, string> = {},
  ): Promise<OwnProxy> {
    const envFile = `${lab.t.stateDir}/ops.env`;
    const logFile = `${lab.t.stateDir}/ops-proxy.log`;
    await Deno.writeTextFile(envFile, envFileText);
    await Deno.writeTextFile(logFile, "");
    const inherit: Record<string, string> = {};
    for (const key of ["PATH", "HOME", "DENO_DIR"]) {
      const value = Deno.env.get(key);
      if (value !== undefined) inherit[key] = value;
    }
    const entry = proxyEntryPoint();
    const child = new Deno.Command("sh", {
      // `exec` all the way down: the child's pid and exit status are the proxy's own.
      args: [
        "-c",
        'log="$1"; shift; exec "$@" >>"$log" 2>&1 </dev/null',
        "sh",
        logFile,
        "ip",
        "netns",
        "exec",
        lab.t.ns.router,
        Deno.execPath(),
        "run",
        "--allow-all",
        "--cached-only",
        V8_FLAGS,
        entry,
      ],
      clearEnv: true,
      env: {
        ...inherit,
        DENO_NO_UPDATE_CHECK: "1",
        HTTP_PORT: String(lab.t.ports.http),
        HTTPS_PORT: String(lab.t.ports.https),
        LOG_FORMAT: "json",
        LOG_LEVEL: "info",
        ENV_FILE: envFile,
        ...env,
      },
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const proxy = new OwnProxy(child, logFile, envFile);
    const deadline = Date.now() + 60_000;
    while (true) {
      const out = await run(["ss", "-Hltn"], { ns: lab.t.ns.router });
      const ports = new Set(out.stdout.split("\n").map((l) => /:(\d+)\s/.exec(l)?.[1]));
      if ([lab.t.ports.http, lab.t.ports.https, 9090].every((p) => ports.has(String(p)))) break;
      if (!processAlive(child.pid) || Date.now() > deadline) {
        await proxy.kill();
        throw new Error(`our proxy did not start listening; its output:\n${await proxy.tail()}`);
      }
      await sleep(50);
    }
    return proxy;
  }

  /** True once this test has sent SIGTERM (to tell our stops from anybody else's). */
  sentSigterm = false;

  signal(signal: Deno.Signal): void {
    if (signal === "SIGTERM") this.sentSigterm = true;
    this.#child.kill(signal);
  }

  /** Rewrites the env file and sends SIGHUP. */
  async reload(text: string): Promise<void> {
    await Deno.writeTextFile(this.envFile, text);
    this.signal("SIGHUP");
  }

  /** The exit status, or null if the process is still running after `timeoutMs`. */
  async exit(timeoutMs: number): Promise<Deno.CommandStatus | null> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((r) => timer = setTimeout(() => r(null), timeoutMs));
    try {
      return await Promise.race([this.status, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGTERM, then SIGKILL if it is still there after a grace period; waits for the exit. */
  async kill(): Promise<void> {
    if (!processAlive(this.pid)) return void await this.status;
    try {
      this.signal("SIGTERM");
    } catch {
      // Already gone.
    }
    if ((await this.exit(10_000)) === null) {
      try {
        this.signal("SIGKILL");
      } catch {
        // Already gone.
      }
      await this.status;
    }
  }

  /** Waits for a log message (not a decision line) matching `pattern` after `from`. */
  async waitForMessage(pattern: RegExp, from: number, timeoutMs = 10_000) {
    return await this.log.waitFor(
      (e) => typeof e.message === "string" && pattern.test(e.message),
      { from, timeoutMs },
    );
  }

  /** Its last lines, for failure messages. */
  async tail(): Promise<string> {
    await this.log.refresh();
    return this.log.lines().slice(-12).map((l) => `  ${l.raw}`).join("\n");
  }
}

/** Runs `fn` with our own proxy, adds its log to a failure, and always stops it. */
async function withOwnProxy(
  c: OpsContext,
  envFileText: string,
  env: Record<string, string>,
  fn: (p: OwnProxy) => Promise<void>,
): Promise<void> {
  const p = await OwnProxy.start(c.lab, envFileText, env);
  try {
    await fn(p);
  } catch (error) {
    let detail = `\n[our proxy pid ${p.pid}] its last lines:\n${await p.tail()}`;
    if (!p.sentSigterm && detail.includes("SIGTERM: no new connections")) {
      detail += "\nNOTE: the proxy got a SIGTERM this test did not send (another process on " +
        "the machine signalling a stale pid?)";
    }
    if (error instanceof Error) error.message += detail;
    throw error;
  } finally {
    await p.kill();
  }
}

/** GET on the admin listener from inside the router namespace. */
async function admin(lab: Lab, path: string): Promise<{ status: number; body: string }> {
  const out = await run(
    [
      "curl",
      "--silent",
      "--show-error",
      "--max-time",
      "5",
      "--write-out",
      "\n%{http_code}",
      ADMIN + path,
    ],
    { ns: lab.t.ns.router, check: false, timeoutMs: 15_000 },
  );
  const at = out.stdout.lastIndexOf("\n");
  const status = Number(out.stdout.slice(at + 1)) || 0;
  // Without an answer, the body says why (curl's exit status and message).
  const body = status > 0 ? out.stdout.slice(0, at) : `curl exit ${out.code}: ${out.stderr.trim()}`;
  return { status, body };
}

/** `/metrics` as a map from series (`name{labels}`) to value. */
async function metrics(lab: Lab): Promise<Map<string, number>> {
  const r = await admin(lab, "/metrics");
  assert.equal(r.status, 200, `/metrics: ${r.body}`);
  const out = new Map<string, number>();
  for (const line of r.body.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** Polls `/metrics` until `series` has `value` (bounded); returns the last scrape. */
async function metricsWhen(
  lab: Lab,
  series: string,
  value: number,
  timeoutMs = 5_000,
): Promise<Map<string, number>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const m = await metrics(lab);
    if (m.get(series) === value || Date.now() > deadline) return m;
    await sleep(50);
  }
}

function connections(proto: "http" | "https", decision: "allowed" | "denied", reason: string) {
  return `proxy_please_connections_total{proto="${proto}",decision="${decision}",reason="${reason}"}`;
}

const RELOADS_OK = 'proxy_please_config_reloads_total{result="ok"}';
const RELOADS_ERROR = 'proxy_please_config_reloads_total{result="error"}';

/** The series of `/metrics` whose name starts with `prefix` (e.g. the config hash). */
function seriesOf(m: Map<string, number>, prefix: string): string[] {
  return [...m.keys()].filter((k) => k.startsWith(prefix));
}

/** A download of the lab's 64 MiB file into `file`, held to `rate`; resolves when curl ends. */
function download(lab: Lab, url: string, file: string, rate = SLOW) {
  return lab.client([
    "curl",
    "--silent",
    "--show-error",
    "--fail",
    "-4",
    "--max-time",
    "120",
    "--limit-rate",
    rate,
    "--cacert",
    lab.pki.caCert,
    "--output",
    file,
    url,
  ], { check: false, timeoutMs: 150_000 });
}

async function sizeOf(file: string): Promise<number> {
  return await Deno.stat(file).then((s) => s.size, () => 0);
}

/** Waits (bounded) until a download has written at least `bytes`: it is really under way. */
async function waitForBytes(file: string, bytes: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await sizeOf(file)) < bytes) {
    if (Date.now() > deadline) throw new Error(`${file}: fewer than ${bytes} bytes arrived`);
    await sleep(50);
  }
}

async function sha256File(file: string): Promise<string> {
  return (await run(["sha256sum", file])).stdout.split(" ")[0];
}

/** The status codes of every HTTP response in `text`, in order. */
function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
}

function req(host: string, extra = ""): string {
  return `GET / HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
}

/** Runs `fn` with a fresh temporary directory for downloads, removed afterwards. */
async function withDownloadDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ppe2eo-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

const LAB_FILE = `ALLOWED_HOSTS=${LAB_ALLOWED_HOSTS}\n`;
const BIG_HTTP = "http://allowed.test/files/big.bin";
const BIG_HTTPS = "https://allowed.test/files/big.bin";

/** The CLOSED lines of the two downloads (64 MiB each, to allowed.test) after `from`. */
async function downloadsClosed(p: OwnProxy, from: number) {
  return await p.log.waitForCount(
    (e) =>
      e.event === "CLOSED" && (e.host ?? e.sni) === "allowed.test" &&
      Number(e.down) >= BIG_FILE_BYTES,
    2,
    { from, timeoutMs: 15_000 },
  );
}

/** Position in the log of the first line matching `predicate` (-1 if none). */
function lineIndex(p: OwnProxy, predicate: (raw: string) => boolean): number {
  return p.log.lines().find((l) => predicate(l.raw))?.index ?? -1;
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

opsTest("e2e (issue 6): reload, drain and the admin endpoints", [
  [
    "/healthz and /readyz answer 200; /metrics counters follow allowed and denied clients",
    (c) =>
      withOwnProxy(c, LAB_FILE, {}, async (p) => {
        assert.equal((await admin(c.lab, "/healthz")).status, 200);
        assert.equal((await admin(c.lab, "/readyz")).status, 200);
        const before = await metrics(c.lab);
        const from = await p.log.mark();
        const { server4 } = c.lab.t.addr;
        const cases = [
          ["http://allowed.test/", 200],
          ["https://allowed.test/", 200],
          ["http://blocked.test/", 403],
          ["https://blocked.test/", 0],
        ] as const;
        for (const [url, status] of cases) {
          // blocked.test is sent to the real server's address: were it forwarded, it would show.
          const r = await curl(c.lab, url, {
            family: 4,
            args: ["--resolve", `blocked.test:${url.startsWith("https") ? 443 : 80}:${server4}`],
          });
          assert.equal(r.status, status, `${url}: ${r.error}`);
        }
        const decisions = await p.log.waitForCount(isDecision, 4, { from });
        assert.equal(decisions.length, 4, JSON.stringify(decisions));
        await p.log.waitForCount((e) => e.event === "CLOSED", 2, { from });
        // Connections end a moment after their last log line; wait until none is left.
        const after = await metricsWhen(c.lab, "proxy_please_active_connections", 0);
        const delta = (series: string) => (after.get(series) ?? 0) - (before.get(series) ?? 0);
        assert.equal(delta(connections("http", "allowed", "none")), 1);
        assert.equal(delta(connections("https", "allowed", "none")), 1);
        assert.equal(delta(connections("http", "denied", "not_allowed")), 1);
        assert.equal(delta(connections("https", "denied", "not_allowed")), 1);
        assert.ok(delta('proxy_please_bytes_total{direction="downstream"}') > 0, "no bytes down");
        assert.ok(delta('proxy_please_bytes_total{direction="upstream"}') > 0, "no bytes up");
        assert.equal(after.get("proxy_please_active_connections"), 0);
        assert.equal(after.get(RELOADS_OK), 0);
        assert.equal(after.get(RELOADS_ERROR), 0);
        assert.equal(seriesOf(after, "proxy_please_config_hash{").length, 1);
        assert.equal(seriesOf(after, "proxy_please_build_info{").length, 1);
        assert.equal(
          (await c.lab.serverHits()).filter((l) => l.includes("host=blocked.test")).length,
          0,
        );
      }),
  ],
  [
    "a reload that removes a host: downloads already running finish, new connections denied",
    (c) =>
      withOwnProxy(c, LAB_FILE, {}, (p) =>
        withDownloadDir(async (dir) => {
          const from = await p.log.mark();
          const http = download(c.lab, BIG_HTTP, `${dir}/http.bin`);
          const https = download(c.lab, BIG_HTTPS, `${dir}/https.bin`);
          try {
            await waitForBytes(`${dir}/http.bin`, 1 << 20);
            await waitForBytes(`${dir}/https.bin`, 1 << 20);
            const mark = await p.log.mark();
            await p.reload("ALLOWED_HOSTS=*.wild.test\n");
            const reloaded = await p.waitForMessage(/^configuration reloaded/, mark);
            assert.ok(reloaded, "no 'configuration reloaded' line");
            const atReload = [await sizeOf(`${dir}/http.bin`), await sizeOf(`${dir}/https.bin`)];
            for (const size of atReload) {
              assert.ok(
                size < BIG_FILE_BYTES,
                "a download finished before the reload: slow it down",
              );
            }
            for (const url of ["http://allowed.test/", "https://allowed.test/"]) {
              const r = await curl(c.lab, url, { family: 4 });
              assert.notEqual(r.status, 200, `${url} still allowed after the reload`);
              const e = await p.log.waitFor(
                (e) => isDecision(e) && e.peer?.endsWith(`:${r.localPort}`) === true,
                { from: mark },
              );
              assert.equal(e?.event, "DENIED", JSON.stringify(e));
              assert.equal(e.reason, "not_allowed");
            }
            const wild = await curl(c.lab, "http://www.wild.test/", { family: 4 });
            assert.equal(wild.status, 200, `a host still on the list: ${wild.error}`);
          } finally {
            const results = await Promise.all([http, https]);
            for (const [i, r] of results.entries()) {
              assert.equal(r.code, 0, `download ${i}: curl exit ${r.code} ${r.stderr}`);
            }
          }
          assert.equal(await sha256File(`${dir}/http.bin`), c.lab.files.bigSha256);
          assert.equal(await sha256File(`${dir}/https.bin`), c.lab.files.bigSha256);
          const closed = await downloadsClosed(p, from);
          assert.equal(closed.length, 2, "no CLOSED lines for the two downloads");
          // The downloads ended after the reload had taken effect.
          const reloadAt = lineIndex(p, (raw) => raw.includes("configuration reloaded"));
          const closedAt = p.log.lines().filter((l) =>
            l.event?.event === "CLOSED" && Number(l.event.down) >= BIG_FILE_BYTES
          ).map((l) => l.index);
          assert.ok(
            closedAt.every((i) => i > reloadAt),
            `reload at ${reloadAt}, closed ${closedAt}`,
          );
          const m = await metrics(c.lab);
          assert.equal(m.get(RELOADS_OK), 1);
          assert.equal(m.get(RELOADS_ERROR), 0);
        })),
  ],
  [
    "a reload that removes a host: the next request on a connection kept alive is refused",
    (c) =>
      withOwnProxy(c, LAB_FILE, {}, (p) =>
        withDownloadDir(async (dir) => {
          const go = `${dir}/go`;
          const plan: Plan = {
            host: c.lab.t.addr.server4,
            port: 80,
            steps: [
              { send: b64(req("allowed.test")), waitFor: "hello from allowed.test\n" },
              { send: b64(req("allowed.test", "Connection: close\r\n")), waitForFile: go },
            ],
            readDeadlineMs: 30_000,
          };
          const client = denoClient(
            c.lab,
            clientScript("e2e/clients/hardening_conversation.ts"),
            [],
            { stdin: JSON.stringify(plan), timeoutMs: 60_000 },
          );
          try {
            const first = await p.log.waitFor((e) => e.event === "ALLOWED", { timeoutMs: 20_000 });
            assert.ok(first, "the first request was not decided");
            await c.lab.serverHits(1);
            const mark = await p.log.mark();
            await p.reload("ALLOWED_HOSTS=*.wild.test\n");
            assert.ok(await p.waitForMessage(/^configuration reloaded/, mark), "not reloaded");
          } finally {
            await Deno.writeTextFile(go, "");
          }
          const out = await client;
          assert.equal(out.code, 0, out.stderr);
          const r = JSON.parse(out.stdout) as Report;
          const hits = await c.lab.serverHits();
          const detail = `client got ${JSON.stringify(r.text)}\nserver hits:\n${hits.join("\n")}`;
          assert.deepEqual(statuses(r.text), [200, 403], detail);
          assert.equal(hits.length, 1, detail);
          const denied = await p.log.waitFor((e) =>
            e.event === "DENIED" && e.peer?.endsWith(`:${r.localPort}`) === true
          );
          assert.equal(denied?.reason, "not_allowed", detail);
        })),
  ],
  [
    "a reload with a bad file is rejected whole and counted; a good one then applies",
    (c) =>
      withOwnProxy(c, LAB_FILE, {}, async (p) => {
        const expect = async (url: string, allowed: boolean) => {
          const r = await curl(c.lab, url, { family: 4 });
          if (allowed) assert.equal(r.status, 200, `${url}: ${r.error}`);
          else assert.equal(r.status, 403, `${url}: ${r.status} ${r.error}`);
        };
        const hashBefore = seriesOf(await metrics(c.lab), "proxy_please_config_hash{");
        let mark = await p.log.mark();
        // Valid hosts, one bad value: applying any part would drop allowed.test.
        await p.reload("ALLOWED_HOSTS=www.wild.test\nDST_POLICY=sideways\n");
        const rejected = await p.waitForMessage(/^reload rejected/, mark);
        assert.ok(rejected, "no 'reload rejected' line");
        assert.equal(rejected.level, "ERROR");
        await expect("http://allowed.test/", true);
        await expect("http://www.wild.test/", true);
        let m = await metrics(c.lab);
        assert.equal(m.get(RELOADS_ERROR), 1);
        assert.equal(m.get(RELOADS_OK), 0);
        assert.deepEqual(seriesOf(m, "proxy_please_config_hash{"), hashBefore);
        // An unreadable file is rejected too.
        mark = await p.log.mark();
        await p.reload("ALLOWED_HOSTS=allowed.test,bad host!\n");
        assert.ok(await p.waitForMessage(/^reload rejected/, mark), "bad host name accepted");
        await expect("http://www.wild.test/", true);
        assert.equal((await metrics(c.lab)).get(RELOADS_ERROR), 2);

        mark = await p.log.mark();
        await p.reload("ALLOWED_HOSTS=allowed.test\n");
        assert.ok(await p.waitForMessage(/^configuration reloaded/, mark), "good file not applied");
        await expect("http://allowed.test/", true);
        await expect("http://www.wild.test/", false);
        m = await metrics(c.lab);
        assert.equal(m.get(RELOADS_OK), 1);
        assert.equal(m.get(RELOADS_ERROR), 2);
        assert.notDeepEqual(seriesOf(m, "proxy_please_config_hash{"), hashBefore);
      }),
  ],
  [
    "a reload that changes the listen address says it needs a restart; a SIGHUP burst applies",
    (c) =>
      withOwnProxy(c, LAB_FILE, {}, async (p) => {
        let mark = await p.log.mark();
        // (The ports are set in the environment, which outranks the file: change the address.)
        await p.reload(`${LAB_FILE}LISTEN_ADDRESS=0.0.0.0\n`);
        assert.ok(await p.waitForMessage(/^configuration reloaded/, mark), "not reloaded");
        const warning = await p.waitForMessage(
          /^changes that need a restart: LISTEN_ADDRESS/,
          mark,
        );
        assert.equal(warning?.level, "WARN", "no warning about LISTEN_ADDRESS");
        const r = await curl(c.lab, "http://allowed.test/", { family: 4 });
        assert.equal(r.status, 200, `still serving on the old port: ${r.error}`);
        // Several SIGHUPs at once: each is applied, one after another, none lost or failed.
        // A burst of SIGHUPs (the kernel may merge pending ones): the last file is applied,
        // and nothing fails.
        mark = await p.log.mark();
        await Deno.writeTextFile(p.envFile, "ALLOWED_HOSTS=www.wild.test\n");
        for (let i = 0; i < 3; i++) p.signal("SIGHUP");
        const done = await p.waitForMessage(/^configuration reloaded: 1 allowlist entries/, mark);
        assert.ok(done, "the burst led to no reload");
        const m = await metricsWhen(c.lab, RELOADS_ERROR, 0);
        assert.ok((m.get(RELOADS_OK) ?? 0) >= 2, `reloads ok: ${m.get(RELOADS_OK)}`);
        assert.equal(m.get(RELOADS_ERROR), 0);
        assert.ok(processAlive(p.pid), "the proxy died in the SIGHUP burst");
        const denied = await curl(c.lab, "http://allowed.test/", { family: 4 });
        assert.equal(denied.status, 403, "the burst's file was not applied");
      }),
  ],
  [
    "SIGTERM: transfers in flight finish, new connections are refused, /readyz 503, exit 0",
    (c) =>
      withOwnProxy(c, LAB_FILE, { DRAIN_TIMEOUT: "60s" }, (p) =>
        withDownloadDir(async (dir) => {
          const from = await p.log.mark();
          const http = download(c.lab, BIG_HTTP, `${dir}/http.bin`);
          const https = download(c.lab, BIG_HTTPS, `${dir}/https.bin`);
          let exit: Deno.CommandStatus | null = null;
          try {
            await waitForBytes(`${dir}/http.bin`, 1 << 20);
            await waitForBytes(`${dir}/https.bin`, 1 << 20);
            const mark = await p.log.mark();
            p.signal("SIGTERM");
            const draining = await p.waitForMessage(/^SIGTERM: no new connections/, mark);
            assert.ok(draining, "no drain line after SIGTERM");
            const ready = await admin(c.lab, "/readyz");
            const atSignal = [await sizeOf(`${dir}/http.bin`), await sizeOf(`${dir}/https.bin`)];
            for (const size of atSignal) {
              assert.ok(size < BIG_FILE_BYTES, "a download finished before SIGTERM: slow it down");
            }
            assert.equal(
              ready.status,
              503,
              `/readyz while draining: ${ready.status} ${ready.body}`,
            );
            assert.equal((await admin(c.lab, "/healthz")).status, 200, "/healthz while draining");
            for (const url of ["http://allowed.test/", "https://allowed.test/"]) {
              const r = await curl(c.lab, url, { family: 4 });
              assert.equal(r.status, 0, `${url} answered while draining`);
              // 7: connection refused; 56: reset; 35: reset during the TLS handshake.
              assert.ok([7, 35, 56].includes(r.exit), `${url}: curl exit ${r.exit} ${r.error}`);
            }
            exit = await p.exit(90_000);
          } finally {
            const results = await Promise.all([http, https]);
            for (const [i, r] of results.entries()) {
              assert.equal(r.code, 0, `download ${i}: curl exit ${r.code} ${r.stderr}`);
            }
          }
          assert.equal(exit?.code, 0, `exit status ${JSON.stringify(exit)}`);
          assert.equal(await sha256File(`${dir}/http.bin`), c.lab.files.bigSha256);
          assert.equal(await sha256File(`${dir}/https.bin`), c.lab.files.bigSha256);
          assert.equal((await downloadsClosed(p, from)).length, 2);
          const stopped = await p.waitForMessage(/^stopped;/, from);
          assert.match(String(stopped?.message), /^stopped; 0 connections closed/);
          // Only the two downloads reached the server.
          const hits = await c.lab.serverHits(2);
          assert.equal(hits.length, 2, hits.join("\n"));
        })),
  ],
  [
    "SIGTERM: a transfer that outlasts DRAIN_TIMEOUT is cut, and the proxy still exits 0",
    (c) =>
      withOwnProxy(c, LAB_FILE, { DRAIN_TIMEOUT: "1s" }, (p) =>
        withDownloadDir(async (dir) => {
          const from = await p.log.mark();
          // 64 MiB at 4 MiB/s: 16 s, far beyond the one-second drain. (After the cut, curl still
          // reads what the kernel had buffered -- tens of MiB -- at that rate before it sees the end.)
          const slow = download(c.lab, BIG_HTTP, `${dir}/slow.bin`, "4M");
          let exit: Deno.CommandStatus | null = null;
          try {
            await waitForBytes(`${dir}/slow.bin`, 256 << 10);
            p.signal("SIGTERM");
            exit = await p.exit(30_000);
          } finally {
            const r = await slow;
            assert.notEqual(r.code, 0, "the download completed although it was cut");
          }
          assert.equal(exit?.code, 0, `exit status ${JSON.stringify(exit)}`);
          assert.ok((await sizeOf(`${dir}/slow.bin`)) < BIG_FILE_BYTES);
          const stopped = await p.waitForMessage(/^stopped;/, from);
          assert.match(String(stopped?.message), /^stopped; 1 connections closed/);
          const closed = await p.log.waitFor((e) => e.event === "CLOSED", { from });
          assert.equal(closed?.error, "aborted", JSON.stringify(closed));
          assert.ok(Number(closed.down) < BIG_FILE_BYTES, JSON.stringify(closed));
        })),
  ],
], PREFIX);
