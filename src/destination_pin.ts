/**
 * Destination pinning: decide where an allowed connection really goes, given
 * the address the client dialled and what the allowed hostname resolves to.
 *
 * Pure: no I/O. The caller resolves the name (see `dns_cache.ts`) and logs.
 *
 * @module
 */

import { canonicalIp, isUnsafeAddress } from "./ip_address.ts";

// Re-exported: dns_cache canonicalises answers with the same rules as pinning.

/** `DST_POLICY` values: `pin` (default), `strict`, `off`. */
export type DstPolicy = "pin" | "strict" | "off";

/** A TCP endpoint. */
export interface Endpoint {
  /** IPv4 dotted quad or IPv6 text, any valid spelling. */
  address: string;
  /** TCP port. */
  port: number;
}

/**
 * What the resolver said about the allowed hostname; `null` when no lookup was made.
 * `usable`: the addresses are already what {@link usableAddresses} keeps of the answers (the
 * relay thread's DNS copy vets them once when it learns them), so they are not vetted again.
 */
export type Resolution =
  | { ok: true; addresses: string[]; usable?: boolean }
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
  const usable = !resolved?.ok
    ? []
    : resolved.usable
    ? resolved.addresses
    : usableAddresses(resolved.addresses);
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
export function usableAddresses(addresses: readonly string[]): string[] {
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
