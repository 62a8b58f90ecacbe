/**
 * Durations in settings: `500ms`, `10s`, `5m`, `1h`, or a bare number of seconds.
 * @module
 */

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The longest duration a setting may hold: one day, so a typo cannot disable a deadline. */
export const MAX_DURATION_MS = 86_400_000;

/** Parses a duration into milliseconds; the error names the bad input. */
export function parseDuration(
  text: string,
): { ok: true; ms: number } | { ok: false; reason: string } {
  const match = /^\s*(\d{1,9}(?:\.\d{1,3})?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (match === null) {
    return { ok: false, reason: `${JSON.stringify(text)} is not a duration (e.g. 500ms, 10s, 5m)` };
  }
  const ms = Math.round(Number(match[1]) * UNIT_MS[match[2] ?? "s"]);
  if (ms <= 0 || ms > MAX_DURATION_MS) {
    return { ok: false, reason: `${JSON.stringify(text)} is out of range (1ms to 24h)` };
  }
  return { ok: true, ms };
}
