/**
 * Runs the proxy from the working tree inside the router namespace and reads its decision log.
 *
 * The proxy runs detached (so `--keep` can leave it up) with `LOG_FORMAT=json`, its output
 * appended to a file; {@linkcode ProxyLog} parses that file's lines into events that tests
 * query and wait for, always with a deadline.
 * @module
 */

import { processAlive, run, sleep, spawnDetached, terminate } from "./command.ts";
import { repoRoot, type Topology } from "./topology.ts";
import denoJson from "../../deno.json" with { type: "json" };

/** The V8 flags of the `start` task (one source of truth for what ships). */
export const V8_FLAGS: string = /--v8-flags=\S+/.exec(denoJson.tasks.start)?.[0] ?? "--v8-flags=";

/** One decision or closing line of the proxy's JSON log (fields per the shared contract). */
export interface ProxyEvent {
  time?: string;
  level?: string;
  event?: string;
  proto?: string;
  peer?: string;
  dst?: string;
  host?: string;
  sni?: string;
  reason?: string;
  up?: number;
  down?: number;
  duration_ms?: number;
  /** Any other fields the proxy logs. */
  [key: string]: unknown;
}

/** A log line: the parsed event when the line is JSON, and the raw text either way. */
export interface LogLine {
  index: number;
  raw: string;
  event?: ProxyEvent;
}

/** Renders an event in the proxy's text format, for people reading the lab's table. */
export function formatEvent(e: ProxyEvent): string {
  const fields = ["peer", "dst", "host", "sni", "reason", "up", "down", "duration_ms"]
    .filter((k) => e[k] !== undefined)
    .map((k) => `${k}=${e[k]}`);
  return [e.level ?? "", e.event ?? "", e.proto ?? "", ...fields].filter((s) => s !== "").join(
    " ",
  );
}

/** The port of a `host:port` / `[v6]:port` endpoint, or undefined. */
export function endpointPort(endpoint: string | undefined): number | undefined {
  const m = endpoint === undefined ? null : /:(\d+)$/.exec(endpoint);
  return m ? Number(m[1]) : undefined;
}

/** Reads and parses the proxy's log file incrementally. */
export class ProxyLog {
  readonly path: string;
  #lines: LogLine[] = [];
  #offset = 0;
  #partial = "";

  constructor(path: string) {
    this.path = path;
  }

  /** Reads whatever the proxy appended since the last call. */
  async refresh(): Promise<void> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(this.path, { read: true });
    } catch {
      return;
    }
    try {
      await file.seek(this.#offset, Deno.SeekMode.Start);
      const chunks: Uint8Array[] = [];
      const buf = new Uint8Array(65536);
      while (true) {
        const n = await file.read(buf);
        if (n === null || n === 0) break;
        chunks.push(buf.slice(0, n));
        this.#offset += n;
      }
      const text = this.#partial + new TextDecoder().decode(concat(chunks));
      const parts = text.split("\n");
      this.#partial = parts.pop() ?? "";
      for (const raw of parts) {
        if (raw.trim() === "") continue;
        this.#lines.push({ index: this.#lines.length, raw, event: parseEvent(raw) });
      }
    } finally {
      file.close();
    }
  }

  /** All lines read so far. */
  lines(): readonly LogLine[] {
    return this.#lines;
  }

  /** A position to pass to {@linkcode since} / {@linkcode waitFor}: "after what is here now". */
  async mark(): Promise<number> {
    await this.refresh();
    return this.#lines.length;
  }

  /** Events at or after position `from`. */
  async since(from: number): Promise<ProxyEvent[]> {
    await this.refresh();
    return this.#lines.slice(from).flatMap((l) => (l.event ? [l.event] : []));
  }

  /** Raw lines at or after position `from`. */
  async rawSince(from: number): Promise<string[]> {
    await this.refresh();
    return this.#lines.slice(from).map((l) => l.raw);
  }

  /**
   * Waits until an event at or after `from` satisfies `predicate`; resolves to it, or to
   * undefined when `timeoutMs` passes first.
   */
  async waitFor(
    predicate: (e: ProxyEvent) => boolean,
    { from = 0, timeoutMs = 5_000 }: { from?: number; timeoutMs?: number } = {},
  ): Promise<ProxyEvent | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      await this.refresh();
      for (const line of this.#lines.slice(from)) {
        if (line.event && predicate(line.event)) return line.event;
      }
      if (Date.now() >= deadline) return undefined;
      await sleep(25);
    }
  }

  /** Waits until `count` events at or after `from` satisfy `predicate` (or the deadline). */
  async waitForCount(
    predicate: (e: ProxyEvent) => boolean,
    count: number,
    { from = 0, timeoutMs = 10_000 }: { from?: number; timeoutMs?: number } = {},
  ): Promise<ProxyEvent[]> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const found = (await this.since(from)).filter(predicate);
      if (found.length >= count || Date.now() >= deadline) return found;
      await sleep(50);
    }
  }
}

function parseEvent(raw: string): ProxyEvent | undefined {
  if (!raw.startsWith("{")) return undefined;
  try {
    const value: unknown = JSON.parse(raw);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? value as ProxyEvent
      : undefined;
  } catch {
    return undefined;
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** A running proxy. */
export interface ProxyProcess {
  pid: number;
  log: ProxyLog;
  /** The environment it was started with. */
  env: Record<string, string>;
}

/**
 * Path of the proxy's entry point: the working tree's `main.ts`, or the file named by
 * `PROXY_PLEASE_LAB_PROXY` (e.g. a clean export of a commit, to tell lab bugs from work in
 * progress).
 */
export function proxyEntryPoint(): string {
  return Deno.env.get("PROXY_PLEASE_LAB_PROXY") || `${repoRoot()}/main.ts`;
}

/** True when the proxy's entry point exists in the working tree. */
export async function proxyAvailable(): Promise<boolean> {
  return await Deno.stat(proxyEntryPoint()).then((s) => s.isFile, () => false);
}

/**
 * Starts `deno run --allow-all main.ts` in the router namespace with `env` (plus the lab's
 * ports and JSON logging), and waits until both ports listen. Dependencies are cached first in
 * the root namespace because the router has no way to the registry.
 */
export async function startProxy(
  t: Topology,
  env: Record<string, string>,
  { logFile = `${t.stateDir}/proxy.log`, readyTimeoutMs = 60_000 } = {},
): Promise<ProxyProcess> {
  const entry = proxyEntryPoint();
  if (!(await proxyAvailable())) throw new Error(`the proxy is not in the working tree: ${entry}`);
  await run([Deno.execPath(), "cache", "--quiet", entry], {
    cwd: entry.replace(/\/[^/]*$/, ""),
    timeoutMs: 300_000,
  });
  const fullEnv: Record<string, string> = {
    HTTP_PORT: String(t.ports.http),
    HTTPS_PORT: String(t.ports.https),
    LOG_FORMAT: "json",
    // No host env file may leak into the lab.
    ENV_FILE: "/dev/null",
    ...env,
  };
  await Deno.writeTextFile(logFile, "");
  const pidFile = `${t.stateDir}/proxy.pid`;
  await Deno.remove(pidFile).catch(() => {});
  const pid = await spawnDetached(
    // The same V8 flags as the start and compile tasks, so the lab measures what ships.
    [Deno.execPath(), "run", "--allow-all", "--cached-only", V8_FLAGS, entry],
    { ns: t.ns.router, logFile, pidFile, env: { DENO_NO_UPDATE_CHECK: "1", ...fullEnv } },
  );
  const log = new ProxyLog(logFile);
  const deadline = Date.now() + readyTimeoutMs;
  while (true) {
    const out = await run(["ss", "-Hltn"], { ns: t.ns.router });
    const ports = new Set(out.stdout.split("\n").map((l) => endpointPort(l.split(/\s+/)[3])));
    if (ports.has(t.ports.http) && ports.has(t.ports.https)) break;
    if (!processAlive(pid) || Date.now() > deadline) {
      await log.refresh();
      const tail = log.lines().slice(-15).map((l) => l.raw).join("\n");
      await terminate(pid, 1_000);
      throw new Error(
        `the proxy did not start listening on ${t.ports.http} and ${t.ports.https} ` +
          `(${processAlive(pid) ? "deadline passed" : "it exited"}); its output:\n${tail}`,
      );
    }
    await sleep(50);
  }
  return { pid, log, env: fullEnv };
}

/** Stops the proxy with SIGTERM (SIGKILL after a grace period). */
export async function stopProxy(proxy: ProxyProcess | undefined): Promise<void> {
  if (proxy) await terminate(proxy.pid, 5_000);
}
