/**
 * Destination pinning: decide where an allowed connection really goes, given
 * the address the client dialled and what the allowed hostname resolves to.
 *
 * Pure: no I/O. The caller resolves the name (see `dns_cache.ts`) and logs.
 *
 * @module
 */

/** `DST_POLICY` values: `pin` (default), `strict`, `off`. */
export type DstPolicy = "pin" | "strict" | "off";

/** A TCP endpoint. */
export interface Endpoint {
  /** IPv4 dotted quad or IPv6 text, any valid spelling. */
  address: string;
  /** TCP port. */
  port: number;
}

/** What the resolver said about the allowed hostname; `null` when no lookup was made. */
export type Resolution =
  | { ok: true; addresses: string[] }
  | { ok: false; reason: string }
  | null;

/** Why a connection is refused by pinning. */
export type PinDenyReason = "dst_mismatch" | "resolve_failed" | "no_usable_address";

/** The decision: where to connect, or why not. */
export type PinDecision =
  | {
    ok: true;
    /** Canonical address and the original port. */
    connectTo: Endpoint;
    /** True when the dialled address was not among the name's usable answers (log it). */
    mismatch: boolean;
  }
  | { ok: false; reason: PinDenyReason };

/**
 * Decides the upstream endpoint for an allowed connection.
 *
 * - `off`: the original destination, unchecked (`mismatch` is still computed
 *   when a resolution is supplied, for logging).
 * - `strict`: the original destination if it is among the usable answers,
 *   else `dst_mismatch`.
 * - `pin`: the original destination if it is among the usable answers, else
 *   the first usable answer of the same family (else of any family), same port.
 *
 * Answers that are unspecified, loopback, link-local, multicast or reserved
 * are never usable: a name resolving to 127.0.0.1 must not make the proxy
 * connect to itself. If a resolution exists but none of its answers is usable,
 * `pin` and `strict` deny with `no_usable_address`; a failed or missing
 * resolution denies with `resolve_failed`.
 */
export function decideDestination(
  mode: DstPolicy,
  original: Endpoint,
  resolved: Resolution,
): PinDecision {
  const originalCanonical = canonicalIp(original.address);
  const usable = resolved?.ok ? usableAddresses(resolved.addresses) : [];
  const matches = originalCanonical !== null && usable.includes(originalCanonical);

  if (mode === "off") {
    return {
      ok: true,
      connectTo: { address: originalCanonical ?? original.address, port: original.port },
      mismatch: resolved?.ok === true && !matches,
    };
  }
  if (resolved === null || !resolved.ok) return { ok: false, reason: "resolve_failed" };
  if (originalCanonical === null) return { ok: false, reason: "dst_mismatch" };
  if (matches) {
    return {
      ok: true,
      connectTo: { address: originalCanonical, port: original.port },
      mismatch: false,
    };
  }
  if (usable.length === 0) return { ok: false, reason: "no_usable_address" };
  if (mode === "strict") return { ok: false, reason: "dst_mismatch" };

  const family = ipFamily(originalCanonical);
  const sameFamily = usable.find((a) => ipFamily(a) === family);
  return {
    ok: true,
    connectTo: { address: sameFamily ?? usable[0], port: original.port },
    mismatch: true,
  };
}

/** Canonical, de-duplicated answers that are safe to connect to, in answer order. */
function usableAddresses(addresses: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of addresses) {
    const c = canonicalIp(a);
    if (c !== null && !isUnsafeAddress(c) && !out.includes(c)) out.push(c);
  }
  return out;
}

/** 4 for a canonical IPv4 address, 6 otherwise. */
function ipFamily(canonical: string): 4 | 6 {
  return canonical.includes(":") ? 6 : 4;
}

/**
 * Canonical text form of an IP address, or `null` if `input` is not one.
 *
 * IPv4: strict dotted quad (no leading zeros, which some libcs read as octal).
 * IPv6: RFC 5952 (lowercase, longest zero run compressed, no leading zeros);
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4 so that a dual-stack
 * socket's view of an IPv4 peer compares equal to an A record. Zone ids
 * (`%eth0`) are rejected: they never appear in DNS answers.
 */
export function canonicalIp(input: string): string | null {
  const v4 = parseIpv4(input);
  if (v4 !== null) return v4.join(".");
  const v6 = parseIpv6(input);
  if (v6 === null) return null;
  if (
    v6[0] === 0 && v6[1] === 0 && v6[2] === 0 && v6[3] === 0 && v6[4] === 0 && v6[5] === 0xffff
  ) {
    return [v6[6] >> 8, v6[6] & 0xff, v6[7] >> 8, v6[7] & 0xff].join(".");
  }
  return formatIpv6(v6);
}

/**
 * True for addresses the proxy must never connect to on a name's behalf:
 * unspecified, loopback, link-local, multicast, IPv4 "this network" and
 * reserved/broadcast ranges. Expects output of {@link canonicalIp}.
 */
export function isUnsafeAddress(canonical: string): boolean {
  const v4 = parseIpv4(canonical);
  if (v4 !== null) {
    const [a, b] = v4;
    return a === 0 || a === 127 || (a === 169 && b === 254) || a >= 224;
  }
  const v6 = parseIpv6(canonical);
  if (v6 === null) return true;
  const allZeroPrefix = v6.slice(0, 7).every((g) => g === 0);
  if (allZeroPrefix && (v6[7] === 0 || v6[7] === 1)) return true; // :: and ::1
  if ((v6[0] & 0xffc0) === 0xfe80) return true; // fe80::/10
  if ((v6[0] & 0xff00) === 0xff00) return true; // ff00::/8
  return false;
}

function parseIpv4(s: string): number[] | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out.push(n);
  }
  return out;
}

function parseIpv6(s: string): number[] | null {
  if (s.length < 2 || s.length > 45 || !/^[0-9A-Fa-f:.]+$/.test(s)) return null;
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (lastColon < 0) return null;
  if (s.includes(".", lastColon)) {
    // Rewrite a trailing dotted quad as two hex groups, then parse uniformly.
    const v4 = parseIpv4(s.slice(lastColon + 1));
    if (v4 === null) return null;
    const hi = ((v4[0] << 8) | v4[1]).toString(16);
    const lo = ((v4[2] << 8) | v4[3]).toString(16);
    text = `${s.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const head = parseHexGroups(halves[0]);
  const rest = halves.length === 2 ? parseHexGroups(halves[1]) : [];
  if (head === null || rest === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const zeros = 8 - head.length - rest.length;
  if (zeros < 1) return null;
  return [...head, ...new Array<number>(zeros).fill(0), ...rest];
}

function parseHexGroups(h: string): number[] | null {
  if (h === "") return [];
  const groups: number[] = [];
  for (const g of h.split(":")) {
    if (!/^[0-9A-Fa-f]{1,4}$/.test(g)) return null;
    groups.push(parseInt(g, 16));
  }
  return groups;
}

function formatIpv6(g: number[]): string {
  let bestStart = -1;
  let bestLen = 1; // RFC 5952: a single zero group is not compressed
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(":");
  return hex.slice(0, bestStart).join(":") + "::" + hex.slice(bestStart + bestLen).join(":");
}
