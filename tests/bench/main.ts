/**
 * `deno task bench`: the same client workloads through direct kernel forwarding,
 * proxy-please, HAProxy and Squid, in turn, in one lab, in one run; one table of figures and
 * ratios, printed and written to BENCHMARKS.md.
 *
 *     deno task bench            full run (1 GiB bulk, 10 s rate/latency, 9,000 idle; < 15 min)
 *     deno task bench --quick    development run (256 MiB, 3 s, 1,000 idle; about 5 min), not written
 *     deno task bench --only proxy-please,haproxy   a subset (direct is always included)
 *
 * Needs root and network namespaces (prefix `ppbench-`). Not a test: nothing here asserts a
 * timing; a failed workload shows as "failed" in the table with the reason.
 * @module
 */

import { run } from "../lab/command.ts";
import type { Lab } from "../lab/lab.ts";
import {
  proxyPleaseEnv,
  type RunningSystem,
  startHaproxy,
  startSystem,
  type SystemName,
  SYSTEMS,
} from "./peers.ts";
import { type BenchFiles, downBenchLab, upBenchLab } from "./bench_lab.ts";
import { emptyResults, renderNotes, renderTable, type Results } from "./report.ts";
import {
  bulk,
  connectionRate,
  type CpuUse,
  type Figure,
  GIB,
  idleMemory,
  latency,
  latencyWithHops,
  type Proto,
  warmLoad,
} from "./workloads.ts";
import { median } from "./measure.ts";

/** Sizes and durations of one run. */
export interface Plan {
  quick: boolean;
  bulkBytes: number;
  rateSeconds: number;
  latencyRate: number;
  latencySeconds: number;
  /**
   * Rounds alternating proxy-please and HAProxy at the end of the run (connection rate, then
   * idle memory), and the length of each rate round.
   */
  rounds: number;
  roundSeconds: number;
  idleConnections: number;
  systems: SystemName[];
  write: boolean;
}

/** Parses the command line; an error value names the bad argument. */
export function parseArgs(argv: readonly string[]): Plan | { error: string } {
  let quick = false, write: boolean | undefined;
  let systems: SystemName[] = [...SYSTEMS];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--quick") quick = true;
    else if (a === "--write") write = true;
    else if (a === "--no-write") write = false;
    else if (a === "--only" || a.startsWith("--only=")) {
      const list = a === "--only" ? argv[++i] ?? "" : a.slice("--only=".length);
      const names = list.split(",").filter((s) => s !== "");
      const bad = names.find((n) => !(SYSTEMS as readonly string[]).includes(n));
      if (bad !== undefined || names.length === 0) {
        return {
          error: `--only takes a list of ${SYSTEMS.join(", ")}; got ${JSON.stringify(list)}`,
        };
      }
      systems = SYSTEMS.filter((s) => s === "direct" || names.includes(s));
    } else return { error: `unknown argument ${JSON.stringify(a)}` };
  }
  return {
    quick,
    bulkBytes: (quick ? 256 : 1024) * 1024 * 1024,
    rateSeconds: quick ? 3 : 10,
    latencyRate: 100,
    latencySeconds: quick ? 3 : 10,
    rounds: 3,
    roundSeconds: quick ? 2 : 4,
    // The open-files hard limit here is 20,000 (no CAP_SYS_RESOURCE to raise it): a proxy
    // holding N idle connections needs 2N descriptors plus its own.
    idleConnections: quick ? 1_000 : 9_000,
    systems,
    // Quick runs are for development: their figures do not go into BENCHMARKS.md.
    write: write ?? (!quick && systems.length === SYSTEMS.length),
  };
}

function say(line: string): void {
  console.error(`bench: ${line}`);
}

/** A few requests first, so every system starts measured work warm (code compiled, DNS cached). */
async function warmUp(lab: Lab): Promise<void> {
  for (const proto of ["http", "https"]) {
    for (let i = 0; i < 5; i++) {
      await lab.client(
        [
          "curl",
          "-sS",
          "-o",
          "/dev/null",
          "--cacert",
          lab.pki.caCert,
          "--max-time",
          "10",
          `${proto}://allowed.test/`,
        ],
        { check: false },
      );
    }
  }
}

async function runSystem(
  lab: Lab,
  files: BenchFiles,
  system: SystemName,
  plan: Plan,
  results: Results,
): Promise<void> {
  if (system !== "direct") {
    // Memory first, on a fresh process per protocol: garbage left by the other workloads
    // would otherwise be reused and hide the cost of a connection.
    for (const proto of ["http", "https"] as const) {
      const running = await startSystem(lab, system);
      try {
        await warmUp(lab);
        say(`${system} ${proto}: ${plan.idleConnections} idle connections`);
        const idle = await idleMemory(lab, proto, plan.idleConnections);
        results.idle[proto][system] = idle.average;
        results.idleMarginal[proto][system] = idle.marginal;
      } finally {
        await running.stop();
      }
    }
  }
  const running = await startSystem(lab, system);
  try {
    await warmUp(lab);
    for (const proto of ["http", "https"] as const) {
      say(`${system} ${proto}: bulk`);
      const one = await bulk(lab, files, proto, 1);
      const eight = await bulk(lab, files, proto, 8);
      results.bulk1[proto][system] = one.throughput;
      results.bulk8[proto][system] = eight.throughput;
      const gib = (one.bytes + eight.bytes) / GIB;
      const ok = one.throughput.value !== null && eight.throughput.value !== null;
      const cpu = (pick: (c: CpuUse) => number) =>
        ok
          ? { value: (pick(one.cpu) + pick(eight.cpu)) / gib }
          : { value: null, note: "bulk failed" };
      if (system !== "direct") results.cpuProxy[proto][system] = cpu((c) => c.routerSeconds);
      results.cpuMachine[proto][system] = cpu((c) => c.machineSeconds);
      say(`${system} ${proto}: connection rate`);
      const rate = await connectionRate(lab, proto, plan.rateSeconds);
      results.rate[proto][system] = rate.rate;
      if (system !== "direct") results.cpuConn[proto][system] = rate.cpuPerThousand;
      say(`${system} ${proto}: latency`);
      const lat = await latency(lab, proto, plan.latencyRate, plan.latencySeconds);
      results.p50[proto][system] = lat.p50;
      results.p99[proto][system] = lat.p99;
    }
  } finally {
    await running.stop();
  }
}

/** A system of the alternating rounds, and how to start it afresh. */
interface Contender {
  name: string;
  start: (lab: Lab) => Promise<RunningSystem>;
}

const PROXY_PLEASE: Contender = {
  name: "proxy-please",
  start: (lab) => startSystem(lab, "proxy-please"),
};
const HAPROXY: Contender = { name: "haproxy", start: (lab) => startSystem(lab, "haproxy") };
const HAPROXY_ONE_THREAD: Contender = {
  name: "haproxy (nbthread 1)",
  start: (lab) => startHaproxy(lab.t, 1),
};

/** Each contender's values of each figure, over the rounds that measured it. */
type RoundValues<K extends string> = Map<Contender, Record<K, number[]>>;

/**
 * Figures again, in rounds alternating the contenders, each on a fresh process: the load of
 * this shared machine drifts over minutes, and one measurement of each, minutes apart, moved
 * their ratio by 10 % and more between runs of the same code (the connection rate; idle memory
 * by up to 35 %; the TLS p99 by more than the difference between the proxies).
 */
async function alternating<K extends string>(
  lab: Lab,
  plan: Plan,
  what: string,
  contenders: readonly Contender[],
  measure: (proto: Proto) => Promise<Record<K, Figure>>,
): Promise<Record<Proto, RoundValues<K>>> {
  const out = {} as Record<Proto, RoundValues<K>>;
  for (const proto of ["http", "https"] as const) {
    const values: RoundValues<K> = new Map();
    for (let round = 1; round <= plan.rounds; round++) {
      for (const contender of contenders) {
        say(`${contender.name} ${proto}: ${what}, round ${round} of ${plan.rounds}`);
        const running = await contender.start(lab);
        try {
          const figures = await measure(proto);
          const mine = values.get(contender) ?? ({} as Record<K, number[]>);
          values.set(contender, mine);
          for (const key of Object.keys(figures) as K[]) {
            mine[key] ??= [];
            if (figures[key].value !== null) mine[key].push(figures[key].value);
          }
        } finally {
          await running.stop();
        }
      }
    }
    out[proto] = values;
  }
  return out;
}

/**
 * The median of a contender's rounds as its figure, every round in the note (`digits`
 * decimals); failed when any round failed.
 */
export function roundsFigure(values: readonly number[], rounds: number, digits: number): Figure {
  const failed = rounds - values.length;
  if (failed > 0) return { value: null, note: `${failed} of ${rounds} rounds failed` };
  return {
    value: median(values),
    note: `rounds ${values.map((v) => v.toFixed(digits)).join(", ")}`,
  };
}

/** The rounds at the end of a run: connection rate and its CPU, latency, idle memory. */
async function runRounds(lab: Lab, plan: Plan, results: Results): Promise<void> {
  const figure = <K extends string>(v: RoundValues<K>, c: Contender, key: K, digits: number) =>
    roundsFigure(v.get(c)?.[key] ?? [], plan.rounds, digits);
  /** proxy-please's figure and `peer`'s, from the same rounds of `v`. */
  const row = <K extends string>(v: RoundValues<K>, key: K, digits: number, peer = HAPROXY) => ({
    "proxy-please": figure(v, PROXY_PLEASE, key, digits),
    haproxy: figure(v, peer, key, digits),
  });
  /** Beside HAProxy on one thread: proxy-please's rounds are noted on the row above. */
  const besideOneThread = <K extends string>(v: RoundValues<K>, key: K, digits: number) => {
    const both = row(v, key, digits, HAPROXY_ONE_THREAD);
    return { ...both, "proxy-please": { value: both["proxy-please"].value } };
  };
  const rates = await alternating(
    lab,
    plan,
    "connection rate",
    [PROXY_PLEASE, HAPROXY, HAPROXY_ONE_THREAD],
    (proto) =>
      connectionRate(lab, proto, plan.roundSeconds).then((r) => ({
        rate: r.rate,
        cpu: r.cpuPerThousand,
      })),
  );
  // Steady state, as in the rate rounds: no system is timed while it compiles its code.
  const latencies = await alternating(
    lab,
    plan,
    "latency",
    [PROXY_PLEASE, HAPROXY],
    (proto) =>
      warmUp(lab).then(() => warmLoad(lab, proto)).then(() =>
        latencyWithHops(lab, proto, plan.latencyRate, plan.latencySeconds)
      ),
  );
  // As in the run above: a few requests first, then the idle connections.
  const idles = await alternating(
    lab,
    plan,
    "idle memory",
    [PROXY_PLEASE, HAPROXY],
    (proto) =>
      warmUp(lab).then(() => idleMemory(lab, proto, plan.idleConnections)).then((r) => ({
        average: r.average,
      })),
  );
  for (const proto of ["http", "https"] as const) {
    const r = rates[proto], l = latencies[proto], i = idles[proto];
    results.rateRounds[proto] = row(r, "rate", 0);
    results.rateRoundsOneThread[proto] = besideOneThread(r, "rate", 0);
    results.cpuConnRounds[proto] = row(r, "cpu", 3);
    results.cpuConnRoundsOneThread[proto] = besideOneThread(r, "cpu", 3);
    results.p50Rounds[proto] = row(l, "p50", 2);
    results.p99Rounds[proto] = row(l, "p99", 2);
    results.firstHopRounds[proto] = row(l, "firstHop", 0);
    results.answerHopRounds[proto] = row(l, "answerHop", 0);
    results.idleRounds[proto] = row(i, "average", 2);
  }
}

async function firstLine(argv: string[]): Promise<string> {
  const out = await run(argv, { check: false });
  return (out.stdout + out.stderr).trim().split("\n")[0] ?? "";
}

/** The commit measured, marked when the working tree differs from it. */
async function treeVersion(): Promise<string> {
  const root = new URL("../../", import.meta.url).pathname;
  const head = await run(["git", "-C", root, "rev-parse", "--short", "HEAD"], { check: false });
  const dirty = await run([
    "git",
    "-C",
    root,
    "status",
    "--porcelain",
    "--",
    "main.ts",
    "src",
    "ffi",
  ], {
    check: false,
  });
  const entry = Deno.env.get("PROXY_PLEASE_LAB_PROXY");
  return `${entry ? `${entry} (PROXY_PLEASE_LAB_PROXY), ` : ""}commit ${head.stdout.trim() || "?"}${
    dirty.stdout.trim() ? " with uncommitted changes in main.ts/src/ffi" : ""
  }`;
}

/** The machine and the versions of everything measured, one Markdown list. */
export async function describeMachine(): Promise<string> {
  const cpu = (await run(["lscpu"], { check: false })).stdout;
  const model = /^Model name:\s+(.*)$/m.exec(cpu)?.[1] ?? "unknown";
  const mem = /^MemTotal:\s+(\d+) kB$/m.exec(await Deno.readTextFile("/proc/meminfo"));
  const lines = [
    `- CPU: ${(await firstLine(["nproc"]))} cores (${model}), shared by clients, proxy and servers`,
    `- memory: ${
      mem ? Math.round(Number(mem[1]) / 1024 / 1024) : "?"
    } GiB; kernel ${await firstLine(["uname", "-r"])}`,
    `- deno ${Deno.version.deno} (V8 ${Deno.version.v8})`,
    `- ${await firstLine(["haproxy", "-v"])}`,
    `- ${await firstLine(["squid", "-v"])}`,
    `- ${await firstLine(["nginx", "-v"])} (1 worker)`,
    `- ${(await firstLine(["curl", "--version"])).split(" ").slice(0, 2).join(" ")}, ${
      (await firstLine(["wrk", "-v"])).split(" ").slice(0, 2).join(" ")
    }`,
    `- proxy-please: ${await treeVersion()}`,
    `- proxy-please settings: ${
      Object.entries(proxyPleaseEnv()).map(([k, v]) => `${k}=${v}`).join(" ")
    } (DST_POLICY default: pin)`,
  ];
  return lines.join("\n");
}

const START = "<!-- bench:results:start -->";
const END = "<!-- bench:results:end -->";

/** Replaces the results section of BENCHMARKS.md (between the markers), keeping the rest. */
export function replaceResults(document: string, section: string): string {
  const block = `${START}\n${section}\n${END}`;
  const a = document.indexOf(START), b = document.indexOf(END);
  if (a < 0 || b < a) return `${document.trimEnd()}\n\n${block}\n`;
  return document.slice(0, a) + block + document.slice(b + END.length);
}

async function main(): Promise<number> {
  const plan = parseArgs(Deno.args);
  if ("error" in plan) {
    console.error(`bench: ${plan.error}`);
    return 2;
  }
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    say("interrupted, removing the lab");
    downBenchLab().finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  const started = Date.now();
  const results = emptyResults();
  try {
    const { lab, files } = await upBenchLab(plan.bulkBytes, { log: (l) => console.error(l) });
    for (const system of plan.systems) {
      say(`--- ${system} (${Math.round((Date.now() - started) / 1000)} s into the run)`);
      await runSystem(lab, files, system, plan, results);
    }
    if (plan.systems.includes("proxy-please") && plan.systems.includes("haproxy")) {
      await runRounds(lab, plan, results);
    }
  } finally {
    if (!interrupted) await downBenchLab().catch((e) => say(`cleanup failed: ${e}`));
  }
  const minutes = ((Date.now() - started) / 60_000).toFixed(1);
  const command = `deno task bench${plan.quick ? " --quick" : ""}`;
  const notes = renderNotes(results);
  const section = [
    `Results of \`${command}\` (${new Date().toISOString().slice(0, 10)}, ${minutes} min; ` +
    `bulk file ${plan.bulkBytes / 2 ** 20} MiB, 8 parallel downloads of 1/8 of it each; ` +
    `${plan.rateSeconds} s of wrk; ${plan.latencyRate} requests/s for ${plan.latencySeconds} s; ` +
    `${plan.idleConnections} idle connections):`,
    "",
    await describeMachine(),
    "",
    renderTable(results),
    ...(notes.length > 0 ? ["", "Notes from the run:", "", ...notes] : []),
  ].join("\n");
  console.log(section);
  if (plan.write) {
    const path = new URL("../../BENCHMARKS.md", import.meta.url).pathname;
    const doc = await Deno.readTextFile(path).catch(() => "# Benchmarks\n");
    await Deno.writeTextFile(path, replaceResults(doc, section));
    // The repository's formatter owns markdown layout (tables included): keep the file as
    // `deno fmt --check` wants it, so a fresh run never fails CI's format check.
    await new Deno.Command(Deno.execPath(), { args: ["fmt", "--quiet", path] }).output();
    say(`results written to ${path}`);
  }
  return 0;
}

if (import.meta.main) {
  if (Deno.uid() !== 0) {
    console.error("bench: needs root (network namespaces, iptables)");
    Deno.exit(1);
  }
  Deno.exit(await main());
}
