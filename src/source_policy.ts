/**
 * Per-source allowlists: clients in a given network get their own allowlist
 * instead of `ALLOWED_HOSTS`. Written in one setting, for example
 *
 * ```
 * SOURCE_POLICY="10.1.0.0/16=api.example.com,*.example.org; 10.1.2.0/24=github.com"
 * ```
 *
 * Entries are separated by `;` (or newlines), each `CIDR=allowlist` with the
 * allowlist in the `ALLOWED_HOSTS` syntax. The most specific (longest prefix)
 * network containing the client wins; a client in no listed network gets the
 * default `ALLOWED_HOSTS`. A rule replaces the default rather than adding to
 * it, so a rule can narrow as well as widen; `10.9.0.0/16=` denies everything
 * to that network.
 *
 * @module
 */

import { type Allowlist, parseAllowlist } from "./allowlist.ts";
import { type Cidr, contains, formatCidr, parseCidr } from "./cidr.ts";
import { type IpAddress, parseIp } from "./ip_address.ts";

/** One source rule: clients inside `cidr` use `allowlist`. */
export interface SourceRule {
  /** The network, canonical (IPv4-mapped IPv6 networks are stored as IPv4). */
  readonly cidr: Cidr;
  /** The allowlist for clients inside `cidr`. */
  readonly allowlist: Allowlist;
  /** Canonical `CIDR=entries` text, for logs and configuration hashing. */
  readonly text: string;
}

/** Parsed rules, most specific first; build with {@linkcode parseSourcePolicy}. */
export type SourcePolicy = readonly SourceRule[];

/** Result of {@linkcode parseSourcePolicy}. */
export type SourcePolicyResult = { ok: true; rules: SourcePolicy } | { ok: false; reason: string };

/** Upper bound on rules, so the per-connection linear scan stays trivially cheap. */
export const MAX_SOURCE_RULES = 1024;

/** An allowlist that allows nothing (the default `denyAll`). */
export const EMPTY_ALLOWLIST: Allowlist = Object.freeze({
  exact: new Set<string>(),
  wildcardParents: new Set<string>(),
  entries: Object.freeze([]) as readonly string[],
});

/**
 * Parses `SOURCE_POLICY` text. Empty text means no rules. Any bad entry,
 * including a network listed twice (in any spelling), fails the whole policy
 * with a reason naming the entry: a typo in a security policy must stop the
 * proxy rather than silently fall back to the default allowlist.
 */
export function parseSourcePolicy(text: string): SourcePolicyResult {
  const rules: SourceRule[] = [];
  const seen = new Map<string, string>();
  for (const raw of text.split(/[;\n]/)) {
    const entry = raw.trim();
    if (entry === "") continue;
    const where = `SOURCE_POLICY entry ${JSON.stringify(entry)}`;
    const eq = entry.indexOf("=");
    if (eq === -1) {
      return {
        ok: false,
        reason: `${where}: expected CIDR=allowlist, e.g. 10.1.0.0/16=example.com`,
      };
    }
    const cidr = parseCidr(entry.slice(0, eq));
    if (!cidr.ok) return { ok: false, reason: `${where}: ${cidr.reason}` };
    const list = parseAllowlist(entry.slice(eq + 1));
    if (!list.ok) return { ok: false, reason: `${where}: ${list.reason}` };
    const net = formatCidr(cidr.value);
    const earlier = seen.get(net);
    if (earlier !== undefined) {
      return {
        ok: false,
        reason: `${where}: network ${net} is already given by entry ${JSON.stringify(earlier)}`,
      };
    }
    seen.set(net, entry);
    if (rules.length >= MAX_SOURCE_RULES) {
      return { ok: false, reason: `SOURCE_POLICY has more than ${MAX_SOURCE_RULES} entries` };
    }
    rules.push({
      cidr: cidr.value,
      allowlist: list.allowlist,
      text: `${net}=${list.allowlist.entries.join(",")}`,
    });
  }
  // Longest prefix first, so the first match is the most specific. Networks are
  // distinct, and two distinct networks of equal length are disjoint, so order
  // among equal prefixes cannot change which rule matches.
  rules.sort((a, b) => b.cidr.prefix - a.cidr.prefix);
  return { ok: true, rules };
}

/**
 * The allowlist for a client: the rule with the longest prefix containing
 * `client`, else `fallback`. `client` is an address as a listener reports it
 * (`198.18.1.10`, `::ffff:198.18.1.10`, `2001:db8::10`, `fe80::1%eth0`) or an
 * already parsed {@linkcode IpAddress}. An address that cannot be parsed gets
 * `denyAll` when rules exist (doubt denies) and `fallback` otherwise.
 */
export function selectAllowlist(
  rules: SourcePolicy,
  fallback: Allowlist,
  client: string | IpAddress,
  denyAll: Allowlist = EMPTY_ALLOWLIST,
): Allowlist {
  if (rules.length === 0) return fallback;
  let addr: IpAddress;
  if (typeof client === "string") {
    const parsed = parseIp(client, true);
    if (!parsed.ok) return denyAll;
    addr = parsed.value;
  } else {
    addr = client;
  }
  for (const rule of rules) if (contains(rule.cidr, addr)) return rule.allowlist;
  return fallback;
}
