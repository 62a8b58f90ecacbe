/**
 * The allowlist policy: which hostnames may be reached. `example.com` allows
 * exactly that name; `*.example.com` allows names exactly one label below
 * `example.com` (not the apex, not two labels below). Everything else is denied.
 *
 * @module
 */

import { normalizeHostname, quoteForLog } from "./hostname.ts";

/** A parsed allowlist; build it with {@linkcode parseAllowlist}, query it with {@linkcode isAllowed}. */
export interface Allowlist {
  /** Canonical names allowed exactly. */
  readonly exact: ReadonlySet<string>;
  /** Canonical parents `p` of wildcard entries `*.p`: one label below `p` is allowed. */
  readonly wildcardParents: ReadonlySet<string>;
  /** Canonical text of every entry, deduplicated and sorted, for logs and config hashing. */
  readonly entries: readonly string[];
}

/** Result of {@linkcode parseAllowlist}. */
export type AllowlistResult = { ok: true; allowlist: Allowlist } | { ok: false; reason: string };

function bad(entry: string, why: string): AllowlistResult {
  return { ok: false, reason: `invalid allowlist entry ${quoteForLog(entry)}: ${why}` };
}

/**
 * Parse a comma-separated allowlist such as `example.com, *.example.org`.
 * Items are trimmed and case-insensitive; empty items are ignored, so `""` is
 * an empty allowlist that denies everything. Unicode names are stored as
 * A-labels. Any bad entry fails the whole list, naming the entry: a typo in a
 * security policy must stop the proxy, not silently narrow or widen it.
 */
export function parseAllowlist(text: string): AllowlistResult {
  const exact = new Set<string>();
  const wildcardParents = new Set<string>();
  for (const raw of text.split(",")) {
    const item = raw.trim();
    if (item === "") continue;
    if (item.startsWith("*.")) {
      const parent = normalizeHostname(item.slice(2));
      if (!parent.ok) {
        if (item.indexOf("*", 1) !== -1) {
          return bad(item, "only one wildcard is allowed, as the whole leftmost label");
        }
        return bad(item, parent.reason);
      }
      if (!parent.name.includes(".")) {
        return bad(item, "a wildcard directly over a single-label name is too broad");
      }
      wildcardParents.add(parent.name);
      continue;
    }
    if (item.includes("*")) {
      return bad(item, "a wildcard must be the whole leftmost label, as in *.example.com");
    }
    const name = normalizeHostname(item);
    if (!name.ok) return bad(item, name.reason);
    exact.add(name.name);
  }
  const entries = [...exact, ...[...wildcardParents].map((p) => "*." + p)].sort();
  return { ok: true, allowlist: { exact, wildcardParents, entries } };
}

/**
 * Whether `host` is allowed. `host` must already be canonical (the output of
 * `normalizeHostname`); anything else simply fails to match, which denies.
 * Two set lookups; matching is on whole labels only, so a rule for
 * `trusted.net` never passes `untrusted.net`.
 */
export function isAllowed(list: Allowlist, host: string): boolean {
  if (list.exact.has(host)) return true;
  const dot = host.indexOf(".");
  return dot > 0 && list.wildcardParents.has(host.slice(dot + 1));
}
