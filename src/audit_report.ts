/**
 * `proxy-please report`: reads the JSON decision log written in `MODE=audit`
 * and lists the hostnames that enforce mode would have denied, with counts,
 * as a ready `ALLOWED_HOSTS=` line. This is how a team builds its allowlist
 * before enforcing.
 *
 * Hostnames in the log were chosen by clients, so every one is validated as
 * a canonical DNS name before it can reach the suggested allowlist; anything
 * else is counted, never echoed.
 *
 * @module
 */

import { isAllowed, parseAllowlist } from "./allowlist.ts";
import { normalizeHostname } from "./hostname.ts";

/** Lines longer than this (bytes, without the line feed) are skipped, not buffered. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Distinct hostnames tracked; later new names are only counted in `droppedHosts`. */
export const MAX_DISTINCT_HOSTS = 100_000;
/** A parent needs this many distinct names one label below it before `*.parent` is suggested. */
export const GROUP_THRESHOLD = 3;

const MAX_DISTINCT_REASONS = 64;
const REASON_WORD = /^[a-z][a-z0-9_]{0,31}$/;

/** What a pass over the log found. */
export interface WouldDenySummary {
  /** Canonical hostname → number of would-deny decisions. */
  readonly hosts: Map<string, number>;
  /** Would-deny decisions without a usable hostname, by reason (`no_sni`, `invalid_host`, ...). */
  readonly withoutHost: Map<string, number>;
  /** Lines read. */
  lines: number;
  /** Non-empty lines that were not a JSON object (text-format lines, other log output). */
  notJson: number;
  /** Lines skipped for exceeding {@linkcode MAX_LINE_BYTES}. */
  overlong: number;
  /** Would-deny decisions for new hostnames after {@linkcode MAX_DISTINCT_HOSTS} was reached. */
  droppedHosts: number;
}

/** An empty summary to feed with {@linkcode addLine}. */
export function newSummary(): WouldDenySummary {
  return {
    hosts: new Map(),
    withoutHost: new Map(),
    lines: 0,
    notJson: 0,
    overlong: 0,
    droppedHosts: 0,
  };
}

function bump(map: Map<string, number>, key: string): void {
  map.set(key, (map.get(key) ?? 0) + 1);
}

function reasonKey(summary: WouldDenySummary, reason: unknown): string {
  const word = typeof reason === "string" && REASON_WORD.test(reason) ? reason : "unknown";
  return summary.withoutHost.has(word) || summary.withoutHost.size < MAX_DISTINCT_REASONS
    ? word
    : "other";
}

/**
 * Accounts one log line. Decision lines are JSON objects; a prefix before the
 * first `{` (a journald or syslog header) is ignored. A line counts when it
 * has `"would_deny": true` and is not a `CLOSED` line (which repeats the name
 * of a connection already counted).
 */
export function addLine(summary: WouldDenySummary, line: string): void {
  summary.lines++;
  const text = line.endsWith("\r") ? line.slice(0, -1) : line;
  if (text.trim() === "") return;
  const brace = text.indexOf("{");
  if (brace === -1) {
    summary.notJson++;
    return;
  }
  let record: unknown;
  try {
    record = JSON.parse(text.slice(brace));
  } catch {
    summary.notJson++;
    return;
  }
  if (typeof record !== "object" || record === null || Array.isArray(record)) {
    summary.notJson++;
    return;
  }
  const r = record as Record<string, unknown>;
  if (r.would_deny !== true || r.event === "CLOSED") return;
  const raw = typeof r.host === "string" ? r.host : typeof r.sni === "string" ? r.sni : undefined;
  if (raw === undefined || raw === "") {
    bump(summary.withoutHost, reasonKey(summary, r.reason));
    return;
  }
  const name = normalizeHostname(raw, { allowUnicode: false });
  if (!name.ok) {
    bump(summary.withoutHost, reasonKey(summary, "invalid_host"));
    return;
  }
  if (!summary.hosts.has(name.name) && summary.hosts.size >= MAX_DISTINCT_HOSTS) {
    summary.droppedHosts++;
    return;
  }
  bump(summary.hosts, name.name);
}

/** The full summary over `lines`; see {@linkcode addLine}. */
export function tallyWouldDeny(lines: Iterable<string>): WouldDenySummary {
  const summary = newSummary();
  for (const line of lines) addLine(summary, line);
  return summary;
}

/**
 * Hostname → count of decisions that enforce mode would have denied, over
 * JSON decision lines. Malformed and unrelated lines are ignored.
 */
export function summarizeWouldDeny(lines: Iterable<string>): Map<string, number> {
  return tallyWouldDeny(lines).hosts;
}

// Second-level labels under which registries sell names (co.uk, com.au, ...).
// Without the Public Suffix List this is a heuristic; it only ever prevents a suggestion.
const SECOND_LEVEL_SUFFIX = new Set([
  "ac",
  "co",
  "com",
  "edu",
  "gov",
  "ltd",
  "ne",
  "net",
  "or",
  "org",
  "plc",
]);

/** Whether `*.parent` would be too broad to suggest: a TLD or a registry suffix like `co.uk`. */
export function isTooBroadParent(parent: string): boolean {
  const labels = parent.split(".");
  if (labels.length < 2) return true;
  return labels.length === 2 && labels[1].length === 2 && SECOND_LEVEL_SUFFIX.has(labels[0]);
}

/**
 * Parents with at least {@linkcode GROUP_THRESHOLD} distinct names exactly one
 * label below them, mapped to those names (sorted). Never a TLD or a
 * registry suffix (see {@linkcode isTooBroadParent}).
 */
export function suggestGroups(hosts: Iterable<string>): Map<string, string[]> {
  const byParent = new Map<string, string[]>();
  for (const host of new Set(hosts)) {
    const dot = host.indexOf(".");
    if (dot <= 0) continue;
    const parent = host.slice(dot + 1);
    if (isTooBroadParent(parent)) continue;
    const list = byParent.get(parent);
    if (list === undefined) byParent.set(parent, [host]);
    else list.push(host);
  }
  const groups = new Map<string, string[]>();
  for (const [parent, children] of [...byParent].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (children.length >= GROUP_THRESHOLD) groups.set(parent, children.sort());
  }
  return groups;
}

/** Options for {@linkcode formatReport}. */
export interface ReportOptions {
  /** The current `ALLOWED_HOSTS`, merged into the suggested lines when given. */
  current?: string;
}

function byCountThenName(a: [string, number], b: [string, number]): number {
  return b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * Renders the report: a table of hostnames sorted by count, decisions
 * without a usable name by reason, a ready `ALLOWED_HOSTS=` line with exact
 * names, and, when {@linkcode suggestGroups} finds any, a second line with
 * `*.parent` wildcards, explained.
 */
export function formatReport(summary: WouldDenySummary, options: ReportOptions = {}): string {
  const out: string[] = [];
  const decisions =
    [...summary.hosts.values(), ...summary.withoutHost.values()].reduce((a, b) => a + b, 0) +
    summary.droppedHosts;
  out.push(
    `proxy-please report: ${plural(summary.lines, "log line")} read, ` +
      `${plural(decisions, "would-deny decision")}, ${plural(summary.hosts.size, "hostname")}.`,
  );
  const skipped: string[] = [];
  if (summary.notJson > 0) skipped.push(`${plural(summary.notJson, "line")} not JSON`);
  if (summary.overlong > 0) skipped.push(`${plural(summary.overlong, "line")} over 64 KiB skipped`);
  if (summary.droppedHosts > 0) {
    skipped.push(
      `${summary.droppedHosts} decisions beyond ${MAX_DISTINCT_HOSTS} distinct hostnames not listed`,
    );
  }
  if (skipped.length > 0) out.push(`(${skipped.join("; ")}.)`);

  if (decisions === 0) {
    out.push(
      "",
      "No would-deny decisions found. The report reads the JSON decision log of a proxy",
      "running with MODE=audit and LOG_FORMAT=json.",
    );
    return out.join("\n") + "\n";
  }

  const rows = [...summary.hosts].sort(byCountThenName);
  if (rows.length > 0) {
    const width = Math.max(5, String(rows[0][1]).length);
    out.push("", `  ${"COUNT".padStart(width)}  HOSTNAME`);
    for (const [host, count] of rows) out.push(`  ${String(count).padStart(width)}  ${host}`);
  }
  if (summary.withoutHost.size > 0) {
    const reasons = [...summary.withoutHost].sort(byCountThenName);
    const width = Math.max(5, String(reasons[0][1]).length);
    out.push(
      "",
      "  Would-deny decisions without a usable hostname (cannot be allowlisted by name):",
    );
    out.push(`  ${"COUNT".padStart(width)}  REASON`);
    for (const [reason, count] of reasons) {
      out.push(`  ${String(count).padStart(width)}  ${reason}`);
    }
  }
  if (rows.length === 0) return out.join("\n") + "\n";

  let base: string[] = [];
  let covered = (_host: string) => false;
  if (options.current !== undefined && options.current.trim() !== "") {
    const current = parseAllowlist(options.current);
    if (current.ok) {
      base = [...current.allowlist.entries];
      covered = (host) => isAllowed(current.allowlist, host);
    } else {
      out.push("", `Note: the current ALLOWED_HOSTS was not merged: ${current.reason}`);
    }
  }
  const newHosts = rows.map(([host]) => host).filter((h) => !covered(h));
  const line = (entries: string[]) => `ALLOWED_HOSTS=${[...new Set(entries)].sort().join(",")}`;
  out.push(
    "",
    base.length > 0
      ? "Allowlist: the current ALLOWED_HOSTS plus every hostname above, exactly:"
      : "Allowlist with every hostname above, exactly:",
    line([...base, ...newHosts]),
  );

  const groups = suggestGroups(newHosts);
  if (groups.size > 0) {
    out.push(
      "",
      `Grouping suggestion: at least ${GROUP_THRESHOLD} distinct names exactly one label below these`,
      "parents were seen. *.parent allows ANY single label below the parent (not the parent",
      "itself, not deeper names), which is more than was observed: review before use.",
    );
    const grouped = new Set<string>();
    for (const [parent, children] of groups) {
      out.push(`  *.${parent}  (${children.join(", ")})`);
      for (const c of children) grouped.add(c);
    }
    out.push(
      "Allowlist with these wildcards:",
      line([
        ...base,
        ...newHosts.filter((h) => !grouped.has(h)),
        ...[...groups.keys()].map((p) => `*.${p}`),
      ]),
    );
  }
  return out.join("\n") + "\n";
}

/**
 * Reads `readable` line by line with bounded memory (a line over
 * {@linkcode MAX_LINE_BYTES} is skipped while it streams past, never held)
 * and returns the formatted report. The CLI wires `proxy-please report
 * [FILE|-]` to this.
 */
export async function runReport(
  readable: ReadableStream<Uint8Array>,
  options: ReportOptions = {},
): Promise<string> {
  const summary = newSummary();
  const decoder = new TextDecoder();
  let parts: Uint8Array[] = [];
  let size = 0;
  let skipping = false;
  const endLine = () => {
    if (skipping) {
      summary.lines++;
      summary.overlong++;
    } else {
      const bytes = new Uint8Array(size);
      let o = 0;
      for (const p of parts) {
        bytes.set(p, o);
        o += p.length;
      }
      addLine(summary, decoder.decode(bytes));
    }
    parts = [];
    size = 0;
    skipping = false;
  };
  const reader = readable.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      let start = 0;
      while (start <= value.length) {
        const nl = value.indexOf(0x0a, start);
        const end = nl === -1 ? value.length : nl;
        if (!skipping && end > start) {
          if (size + (end - start) > MAX_LINE_BYTES) {
            skipping = true;
            parts = [];
            size = 0;
          } else {
            // Copy: the stream may reuse its chunk buffer once we read again.
            parts.push(value.slice(start, end));
            size += end - start;
          }
        }
        if (nl === -1) break;
        endLine();
        start = nl + 1;
      }
    }
    if (skipping || size > 0) endLine();
  } finally {
    reader.releaseLock();
  }
  return formatReport(summary, options);
}
