/**
 * The benchmark's client workloads, run from the lab's client namespace against whichever
 * system is in the router: bulk downloads (curl), connection rate (wrk with
 * `Connection: close`), open-loop latency and idle connections (small Deno clients).
 * Every runner checks that the work was really done (status, sizes, error counts) and says so.
 * @module
 */

import { inNamespace, run, sleep } from "../lab/command.ts";
import type { Lab } from "../lab/lab.ts";
import { LAB_HOSTS } from "../lab/topology.ts";
import type { BenchFiles } from "./bench_lab.ts";
import { cpuSeconds, machineBusySeconds, median, quantile, rssKiB } from "./measure.ts";
import { routerPids } from "./peers.ts";
import { parseTcpdumpLine, routerHops } from "./router_hops.ts";

/** HTTP (port 80) or TLS pass-through (port 443). */
export type Proto = "http" | "https";

/** One measured figure; `value` is null when the workload could not be measured. */
export interface Figure {
  value: number | null;
  /** What went wrong or is worth knowing (errors seen, partial results). */
  note?: string;
}

const HOST = LAB_HOSTS.allowed;
const MIB = 1024 * 1024;

function url(proto: Proto, path: string): string {
  return `${proto}://${HOST}${path}`;
}

function curlArgs(lab: Lab): string[] {
  return ["curl", "--silent", "--show-error", "--cacert", lab.pki.caCert, "--max-time", "300"];
}

/** CPU used while `work` ran: by the router's processes and by the whole machine. */
export interface CpuUse {
  routerSeconds: number;
  machineSeconds: number;
}

async function withCpu<T>(lab: Lab, work: () => Promise<T>): Promise<[T, CpuUse]> {
  const pids = await routerPids(lab.t);
  const r0 = cpuSeconds(pids), m0 = machineBusySeconds();
  const result = await work();
  const r1 = cpuSeconds(pids), m1 = machineBusySeconds();
  return [result, { routerSeconds: r1 - r0, machineSeconds: m1 - m0 }];
}

/** What a bulk run moved, how fast, and the CPU it cost. */
export interface BulkResult {
  throughput: Figure;
  bytes: number;
  cpu: CpuUse;
}

/**
 * Downloads `count` files at once (the bulk file when 1, the 1/8 part otherwise) and reports
 * the aggregate rate in MB/s (10^6 bytes per second).
 */
export async function bulk(
  lab: Lab,
  files: BenchFiles,
  proto: Proto,
  count: 1 | 8,
): Promise<BulkResult> {
  const path = count === 1 ? files.bulkPath : files.partPath;
  const expect = count === 1 ? files.bulkBytes : files.partBytes;
  const started = performance.now();
  const [outs, cpu] = await withCpu(lab, () =>
    Promise.all(
      Array.from({ length: count }, () =>
        lab.client(
          [
            ...curlArgs(lab),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            url(proto, path),
          ],
          { check: false, timeoutMs: 320_000 },
        )),
    ));
  const seconds = (performance.now() - started) / 1000;
  let bytes = 0;
  const problems: string[] = [];
  for (const out of outs) {
    const [status, size] = out.stdout.trim().split(" ").map(Number);
    bytes += size || 0;
    if (out.code !== 0 || status !== 200 || size !== expect) {
      problems.push(`curl exit ${out.code} status ${status} ${size} bytes ${out.stderr.trim()}`);
    }
  }
  const throughput: Figure = problems.length > 0
    ? { value: null, note: problems[0] }
    : { value: bytes / seconds / 1e6 };
  return { throughput, bytes, cpu };
}

/** Parses wrk's summary: requests/s, completed requests, and the errors it counted. */
export function parseWrk(
  text: string,
): { rps: number; requests: number; non2xx: number; socketErrors: number } {
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const m = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const socketErrors = m ? m.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return { rps, requests, non2xx, socketErrors };
}

/**
 * New connection per small request for `seconds`: wrk with `Connection: close`, 32 connections
 * on one thread. Connections per second = requests per second.
 */
export async function connectionRate(
  lab: Lab,
  proto: Proto,
  seconds: number,
): Promise<{ rate: Figure; cpuPerThousand: Figure }> {
  // Steady state is what is compared: 2 s of the same load first, unmeasured, so that no system
  // is measured while it compiles its code or grows its pools.
  await warmLoad(lab, proto);
  const [rate, cpu] = await withCpu(lab, () => wrkRate(lab, proto, seconds));
  const cpuPerThousand: Figure = rate.value === null
    ? { value: null, note: "rate failed" }
    : { value: (cpu.routerSeconds * 1000) / (rate.value * seconds) };
  return { rate, cpuPerThousand };
}

/**
 * Load that is not measured (2 s of the connection-rate workload), so that what follows finds
 * the system in steady state: code compiled, pools grown.
 */
export async function warmLoad(lab: Lab, proto: Proto): Promise<void> {
  await wrkRate(lab, proto, RATE_WARM_UP_SECONDS);
}

const RATE_WARM_UP_SECONDS = 2;

async function wrkRate(lab: Lab, proto: Proto, seconds: number): Promise<Figure> {
  const out = await lab.client(
    ["wrk", "-t1", "-c32", `-d${seconds}s`, "-H", "Connection: close", url(proto, "/")],
    { check: false, timeoutMs: (seconds + 30) * 1000 },
  );
  const w = parseWrk(out.stdout);
  if (out.code !== 0 || !(w.rps > 0)) {
    return {
      value: null,
      note: `wrk exit ${out.code}: ${(out.stderr || out.stdout).trim().slice(0, 200)}`,
    };
  }
  const bad = w.non2xx + w.socketErrors;
  // wrk counts a connection the server closes after the last run as a read error now and then;
  // more than 1% means the system is refusing work, and the figure is not comparable.
  if (bad > w.requests * 0.01) {
    return {
      value: null,
      note: `${w.non2xx} non-2xx, ${w.socketErrors} socket errors of ${w.requests}`,
    };
  }
  return { value: w.rps, note: bad > 0 ? `${bad} errors of ${w.requests}` : undefined };
}

/** Latency percentiles in milliseconds. */
export interface LatencyResult {
  p50: Figure;
  p99: Figure;
}

function clientScript(name: string): string {
  return new URL(`./clients/${name}`, import.meta.url).pathname;
}

/** Fixed request rate, a new connection per request, for `seconds`: p50 and p99 of the time to the full response. */
export async function latency(
  lab: Lab,
  proto: Proto,
  rate: number,
  seconds: number,
): Promise<LatencyResult> {
  const port = proto === "http" ? "80" : "443";
  const out = await run(
    [
      Deno.execPath(),
      "run",
      "--allow-all",
      "--quiet",
      clientScript("latency_client.ts"),
      proto,
      HOST,
      port,
      String(rate),
      String(seconds),
      lab.pki.caCert,
    ],
    { ns: lab.t.ns.client, check: false, timeoutMs: (seconds + 60) * 1000 },
  );
  try {
    const r = JSON.parse(out.stdout.trim().split("\n").pop() ?? "");
    if (r.errors > r.count * 0.01 || r.count === 0) {
      const note = `${r.errors} errors of ${r.count + r.errors}: ${r.firstError}`;
      return { p50: { value: null, note }, p99: { value: null, note } };
    }
    const note = r.errors > 0 ? `${r.errors} errors` : undefined;
    return { p50: { value: r.p50, note }, p99: { value: r.p99, note } };
  } catch {
    const note = `latency client failed: ${(out.stderr || out.stdout).trim().slice(0, 200)}`;
    return { p50: { value: null, note }, p99: { value: null, note } };
  }
}

/**
 * {@link latency}, with the system's two hops measured on the wire meanwhile (`router_hops.ts`),
 * in microseconds: the first hop's median over the run's connections, and the answer hop's 90th
 * percentile (a relay held up now and then, by the system's own work, shows there first).
 */
export async function latencyWithHops(
  lab: Lab,
  proto: Proto,
  rate: number,
  seconds: number,
): Promise<LatencyResult & { firstHop: Figure; answerHop: Figure }> {
  const port = proto === "http" ? 80 : 443;
  const argv = inNamespace(lab.t.ns.router, [
    "tcpdump",
    "-i",
    "any",
    "-tt",
    "-n",
    "-l",
    "-B",
    "65536",
    `tcp port ${port}`,
  ]);
  const dump = new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "piped" });
  let capture: Deno.ChildProcess;
  try {
    capture = dump.spawn();
  } catch (e) {
    const lat = await latency(lab, proto, rate, seconds);
    const failed = { value: null, note: `tcpdump: ${e}` };
    return { ...lat, firstHop: failed, answerHop: failed };
  }
  const text = new Response(capture.stdout).text();
  const errors = capture.stderr.pipeThrough(new TextDecoderStream()).getReader();
  // tcpdump says so on stderr once it captures; it gets 5 s.
  let said = "";
  const deadline = Date.now() + 5_000;
  while (!said.includes("listening on") && Date.now() < deadline) {
    const next = await Promise.race([errors.read(), sleep(deadline - Date.now())]);
    if (next === undefined || next.done) break;
    said += next.value;
  }
  const lat = await latency(lab, proto, rate, seconds);
  // The last segments are still on their way when the client has its answers.
  await sleep(300);
  try {
    capture.kill("SIGINT");
  } catch {
    // It has ended already (not installed, say): its status and words tell.
  }
  const [status, lines] = await Promise.all([capture.status, text]);
  errors.cancel().catch(() => {});
  const segments = lines.split("\n").map(parseTcpdumpLine).filter((l) => l !== null);
  const hops = routerHops(segments, lab.t.addr.routerWan4, port);
  const answers = hops.answer.sort((a, b) => a - b);
  const unseen = (what: string): Figure => ({
    value: null,
    note: `no ${what} seen (tcpdump exit ${status.code}: ${said.trim()})`,
  });
  return {
    ...lat,
    firstHop: hops.first.length === 0 ? unseen("first hop") : { value: median(hops.first) },
    answerHop: answers.length === 0 ? unseen("answer hop") : { value: quantile(answers, 0.9) },
  };
}

/** Memory per idle connection: over all of them, and for the second half alone. */
export interface IdleMemory {
  /** (RSS with all open - RSS before) / connections open. */
  average: Figure;
  /**
   * (RSS with all open - RSS with the first half open) / second half: the cost of one more
   * connection once the process has grown to hold many (heaps and pools sized, code compiled).
   */
  marginal: Figure;
}

/**
 * Opens `count` idle connections through the system, in two halves, and reports its resident
 * memory per connection in KiB, on average and for the second half.
 */
export async function idleMemory(lab: Lab, proto: Proto, count: number): Promise<IdleMemory> {
  const failed = (note: string): IdleMemory => ({
    average: { value: null, note },
    marginal: { value: null, note },
  });
  const pids = await routerPids(lab.t);
  if (pids.length === 0) return failed("no process in the router");
  const before = rssKiB(pids);
  const first = await holdIdle(lab, proto, Math.floor(count / 2));
  try {
    if (typeof first === "string") return failed(first);
    const middle = rssKiB(await routerPids(lab.t));
    const second = await holdIdle(lab, proto, count - first.asked);
    try {
      if (typeof second === "string") return failed(second);
      const after = rssKiB(await routerPids(lab.t));
      const lost = first.failed + second.failed;
      // The idle client's first error, so that a failure can be told from another.
      const why = first.error || second.error;
      const because = why ? ` (first: ${why})` : "";
      if (lost > count * 0.01) return failed(`${lost} of ${count} connections failed${because}`);
      const note = lost > 0 ? `${lost} failed${because}` : undefined;
      return {
        average: { value: (after - before) / (first.open + second.open), note },
        marginal: { value: (after - middle) / second.open, note },
      };
    } finally {
      if (typeof second !== "string") await second.release();
    }
  } finally {
    if (typeof first !== "string") await first.release();
  }
}

/** Idle connections held open by a client process until `release`. */
export interface HeldIdle {
  asked: number;
  open: number;
  failed: number;
  /** The first failure's message ("" when none failed). */
  error: string;
  release(): Promise<void>;
}

/**
 * Starts the idle client for `count` connections and waits until they are open and the
 * system has settled; an error word when the client did not get ready.
 */
export async function holdIdle(
  lab: Lab,
  proto: Proto,
  count: number,
): Promise<HeldIdle | string> {
  const port = proto === "http" ? "80" : "443";
  const argv = inNamespace(lab.t.ns.client, [
    Deno.execPath(),
    "run",
    "--allow-all",
    "--quiet",
    clientScript("idle_client.ts"),
    proto,
    HOST,
    port,
    String(count),
    "64",
    lab.pki.caCert,
  ]);
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const deadline = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* exited */ }
  }, 180_000);
  const release = async () => {
    await child.stdin.close().catch(() => {});
    const done = await Promise.race([
      child.status.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 15_000)),
    ]);
    if (!done) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
    }
    clearTimeout(deadline);
    await child.stdout.cancel().catch(() => {});
  };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  reader.releaseLock();
  const m = /^ready (\d+) (\d+)(.*)$/m.exec(text);
  if (!m) {
    await release();
    return `idle client did not get ready: ${text.slice(0, 200)}`;
  }
  // Let the system settle (buffers released, timers armed) before its memory is read.
  await new Promise((r) => setTimeout(r, 2_000));
  const error = firstError(m[3].trim());
  return { asked: count, open: Number(m[1]), failed: Number(m[2]), error, release };
}

/** The idle client's first error, printed as a JSON string after its counts. */
function firstError(text: string): string {
  try {
    return text === "" ? "" : String(JSON.parse(text));
  } catch {
    return text;
  }
}

/** Bytes per GiB, for CPU seconds per GiB. */
export const GIB = 1024 * MIB;
