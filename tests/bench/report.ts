/**
 * The benchmark's results table and the BENCHMARKS.md section around it: pure functions from
 * measured figures to text, so the layout can be read and tested apart from the lab.
 * @module
 */

import type { SystemName } from "./peers.ts";
import type { Figure, Proto } from "./workloads.ts";

/** The rows of the table. */
export type Metric =
  | "bulk1"
  | "bulk8"
  | "rate"
  | "rateRounds"
  | "rateRoundsOneThread"
  | "cpuConn"
  | "cpuConnRounds"
  | "cpuConnRoundsOneThread"
  | "p50"
  | "p99"
  | "p50Rounds"
  | "p99Rounds"
  | "firstHopRounds"
  | "answerHopRounds"
  | "idle"
  | "idleMarginal"
  | "idleRounds"
  | "cpuProxy"
  | "cpuMachine";

/** How a metric is shown and compared. */
export interface MetricInfo {
  label: string;
  unit: string;
  better: "higher" | "lower";
  /** Latency rows show the figure added over direct for the proxies. */
  addedOverDirect?: boolean;
  /**
   * proxy-please is compared with the best peer by difference, not ratio: an added latency can
   * be zero or negative (noise), where a ratio would not read.
   */
  difference?: boolean;
  /** Rows with no meaning for direct (no proxy process). */
  noDirect?: boolean;
  /** The issue's target for proxy-please on this row. */
  target?: "haproxy" | "squid";
}

/** Display information of every metric, in table order. */
export const METRICS: Record<Metric, MetricInfo> = {
  bulk1: { label: "bulk, 1 download", unit: "MB/s", better: "higher", target: "haproxy" },
  bulk8: { label: "bulk, 8 parallel downloads", unit: "MB/s", better: "higher", target: "haproxy" },
  rate: {
    label: "connection rate (Connection: close)",
    unit: "conn/s",
    better: "higher",
    target: "haproxy",
  },
  rateRounds: {
    label: "connection rate, rounds alternating with HAProxy (median)",
    unit: "conn/s",
    better: "higher",
    noDirect: true,
    target: "haproxy",
  },
  // HAProxy tuned for this machine rather than configured as a user would: shown, not a target.
  rateRoundsOneThread: {
    label: "connection rate, same rounds, HAProxy with nbthread 1 (median)",
    unit: "conn/s",
    better: "higher",
    noDirect: true,
  },
  cpuConn: {
    label: "CPU per 1,000 connections, proxy process",
    unit: "s",
    better: "lower",
    noDirect: true,
    target: "squid",
  },
  cpuConnRounds: {
    label: "CPU per 1,000 connections, rounds alternating with HAProxy (median)",
    unit: "s",
    better: "lower",
    noDirect: true,
  },
  cpuConnRoundsOneThread: {
    label: "CPU per 1,000 connections, same rounds, HAProxy with nbthread 1 (median)",
    unit: "s",
    better: "lower",
    noDirect: true,
  },
  p50: {
    label: "latency p50 added over direct",
    unit: "ms",
    better: "lower",
    addedOverDirect: true,
    difference: true,
    target: "squid",
  },
  p99: {
    label: "latency p99 added over direct",
    unit: "ms",
    better: "lower",
    addedOverDirect: true,
    difference: true,
    target: "haproxy",
  },
  p50Rounds: {
    label: "latency p50, rounds alternating with HAProxy (median)",
    unit: "ms",
    better: "lower",
    noDirect: true,
    difference: true,
  },
  p99Rounds: {
    label: "latency p99, rounds alternating with HAProxy (median)",
    unit: "ms",
    better: "lower",
    noDirect: true,
    difference: true,
    target: "haproxy",
  },
  firstHopRounds: {
    label: "first hop in the router (request in, out upstream), p50, same rounds (median)",
    unit: "µs",
    better: "lower",
    noDirect: true,
    difference: true,
  },
  answerHopRounds: {
    label: "answer hop in the router (answer in, out to the client), p90, same rounds (median)",
    unit: "µs",
    better: "lower",
    noDirect: true,
    difference: true,
  },
  idle: {
    label: "memory per idle connection",
    unit: "KiB",
    better: "lower",
    noDirect: true,
    target: "haproxy",
  },
  idleMarginal: {
    label: "memory per idle connection, second half only",
    unit: "KiB",
    better: "lower",
    noDirect: true,
  },
  idleRounds: {
    label: "memory per idle connection, rounds alternating with HAProxy (median)",
    unit: "KiB",
    better: "lower",
    noDirect: true,
    target: "haproxy",
  },
  cpuProxy: {
    label: "CPU per GiB relayed, proxy process",
    unit: "s/GiB",
    better: "lower",
    noDirect: true,
    target: "squid",
  },
  cpuMachine: {
    label: "CPU per GiB relayed, whole machine",
    unit: "s/GiB",
    better: "lower",
    target: "squid",
  },
};

/** Every figure: metric -> protocol -> system. */
export type Results = Record<Metric, Record<Proto, Partial<Record<SystemName, Figure>>>>;

/** An empty results record. */
export function emptyResults(): Results {
  const r = {} as Results;
  for (const m of Object.keys(METRICS) as Metric[]) r[m] = { http: {}, https: {} };
  return r;
}

const PROXY_COLUMNS: readonly SystemName[] = ["proxy-please", "haproxy", "squid"];
const TITLES: Record<SystemName, string> = {
  direct: "direct",
  "proxy-please": "proxy-please",
  haproxy: "HAProxy",
  squid: "Squid",
};

/** The figure shown for `system` on a row (added over direct for latency rows). */
export function shown(
  results: Results,
  metric: Metric,
  proto: Proto,
  system: SystemName,
): number | null {
  const v = results[metric][proto][system]?.value ?? null;
  if (v === null || !METRICS[metric].addedOverDirect || system === "direct") return v;
  const d = results[metric][proto].direct?.value ?? null;
  return d === null ? null : v - d;
}

function fmt(x: number): string {
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function ratio(a: number, b: number): string {
  if (b === 0) return "—";
  return `${(a / b).toFixed(2)}×`;
}

/** Is `a` at least as good as `b` on this metric? */
function atLeastAsGood(metric: Metric, a: number, b: number): boolean {
  return METRICS[metric].better === "higher" ? a >= b : a <= b;
}

/**
 * The results as one Markdown table: each workload and protocol a row; each system a cell
 * with its figure and, in brackets, its ratio to direct; then proxy-please's ratio to the best
 * peer and whether the issue's target is met.
 */
export function renderTable(results: Results): string {
  const head = [
    "workload",
    "proto",
    "unit",
    "direct",
    ...PROXY_COLUMNS.map((s) => TITLES[s]),
    "proxy-please ÷ best peer (latency: −)",
    "target",
  ];
  const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
  for (const metric of Object.keys(METRICS) as Metric[]) {
    const info = METRICS[metric];
    for (const proto of ["http", "https"] as const) {
      const direct = shown(results, metric, proto, "direct");
      const cells: string[] = [];
      const rawDirect = results[metric][proto].direct;
      if (info.noDirect) cells.push("n/a");
      else if (info.addedOverDirect) {
        cells.push(
          rawDirect?.value == null ? cellMissing(rawDirect) : `(${fmt(rawDirect.value)} abs.)`,
        );
      } else cells.push(direct === null ? cellMissing(rawDirect) : fmt(direct));
      for (const system of PROXY_COLUMNS) {
        const v = shown(results, metric, proto, system);
        if (v === null) {
          cells.push(cellMissing(results[metric][proto][system]));
          continue;
        }
        const vsDirect = !info.noDirect && !info.addedOverDirect && direct !== null
          ? ` (${ratio(v, direct)})`
          : "";
        cells.push(`${fmt(v)}${vsDirect}`);
      }
      const pp = shown(results, metric, proto, "proxy-please");
      const peers = (["haproxy", "squid"] as const)
        .map((s) => shown(results, metric, proto, s))
        .filter((v): v is number => v !== null);
      const best = peers.length === 0
        ? null
        : info.better === "higher"
        ? Math.max(...peers)
        : Math.min(...peers);
      if (pp === null || best === null) cells.push("—");
      else if (info.difference) {
        cells.push(`${pp - best >= 0 ? "+" : ""}${fmt(pp - best)} ${info.unit}`);
      } else cells.push(ratio(pp, best));
      cells.push(targetCell(results, metric, proto));
      lines.push(
        `| ${info.label} | ${proto === "http" ? "HTTP" : "TLS"} | ${info.unit} | ${
          cells.join(" | ")
        } |`,
      );
    }
  }
  return lines.join("\n");
}

function cellMissing(f: Figure | undefined): string {
  return f === undefined
    ? "—"
    : `failed${f.note ? ` (${f.note.replaceAll("|", "/").slice(0, 80)})` : ""}`;
}

/** "met"/"missed" for the issue's target on this row (vs HAProxy, and ahead of Squid). */
export function targetCell(results: Results, metric: Metric, proto: Proto): string {
  const pp = shown(results, metric, proto, "proxy-please");
  if (pp === null) return "—";
  const parts: string[] = [];
  const h = shown(results, metric, proto, "haproxy");
  const s = shown(results, metric, proto, "squid");
  if (METRICS[metric].target === "haproxy" && h !== null) {
    parts.push(`${atLeastAsGood(metric, pp, h) ? "met" : "missed"} vs HAProxy`);
  }
  if (s !== null) parts.push(`${atLeastAsGood(metric, pp, s) ? "met" : "missed"} vs Squid`);
  return parts.join(", ") || "—";
}

/** Notes attached to figures (errors tolerated, partial runs), one line each. */
export function renderNotes(results: Results): string[] {
  const out: string[] = [];
  for (const metric of Object.keys(METRICS) as Metric[]) {
    for (const proto of ["http", "https"] as const) {
      for (const [system, f] of Object.entries(results[metric][proto])) {
        if (f?.note) out.push(`- ${METRICS[metric].label}, ${proto}, ${system}: ${f.note}`);
      }
    }
  }
  return out;
}
