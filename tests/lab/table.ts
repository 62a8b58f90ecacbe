/**
 * Renders the lab's results as a plain-text table a person can read in a terminal.
 * @module
 */

import type { StepResult } from "./scenario.ts";

/** The table: one block per step (request, expected, observed, verdict) with log lines below. */
export function renderTable(rows: readonly StepResult[], { color = false } = {}): string {
  const paint = (ok: boolean, text: string) =>
    color ? `\x1b[${ok ? "32" : "31;1"}m${text}\x1b[0m` : text;
  const head = ["", "request", "expected", "observed"];
  const cells = rows.map((r) => [r.ok ? "ok" : "FAIL", r.request, r.expected, r.observed]);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((s, i) => s.padEnd(widths[i])).join("  ").trimEnd();
  const out = [line(head), widths.map((w) => "-".repeat(w)).join("  ")];
  rows.forEach((r, i) => {
    const text = line(cells[i]);
    out.push(paint(r.ok, text.slice(0, widths[0])) + text.slice(widths[0]));
    for (const log of r.proxyLog) out.push(`${" ".repeat(widths[0] + 2)}  proxy: ${log}`);
  });
  const failed = rows.filter((r) => !r.ok).length;
  out.push("");
  out.push(
    paint(
      failed === 0,
      failed === 0
        ? `all ${rows.length} observations match`
        : `${failed} of ${rows.length} observations do not match`,
    ),
  );
  return out.join("\n");
}
