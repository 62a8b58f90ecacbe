/**
 * A bounded, TTL-honouring cache of A and AAAA answers for allowed hostnames,
 * used to pin connections to the addresses their name really has.
 *
 * CDNs rotate addresses, so an entry keeps every address seen for a name
 * until that address's own TTL runs out: a client that resolved a moment
 * earlier and got another answer is not denied. Names are bounded (LRU),
 * addresses per name are bounded, concurrent lookups of one name share one
 * query, every lookup has a deadline, and failures are cached briefly.
 *
 * The default resolver is `node:dns/promises` `Resolver`, which reads the
 * system resolver configuration (`/etc/resolv.conf`).
 *
 * @module
 */

import { Resolver } from "node:dns/promises";
import {
  DNS_MAX_ADDRESSES,
  DNS_MAX_NAMES,
  dnsKey as cacheKey,
  type DnsSnapshot,
} from "./dns_copy.ts";
import { canonicalIp } from "./ip_address.ts";

/** One answer record: an address and its TTL in seconds. */
export interface DnsAnswer {
  /** IPv4 or IPv6 address text. */
  address: string;
  /** Time to live in seconds. */
  ttl: number;
}

/**
 * Resolves `name` for one address family. Rejects with an error whose `code`
 * is a c-ares style code (`ENOTFOUND`, `ENODATA`, `ETIMEOUT`, ...) on failure.
 * Should stop work when `signal` aborts (the deadline has passed).
 */
export type ResolveFn = (name: string, family: 4 | 6, signal: AbortSignal) => Promise<DnsAnswer[]>;

/** Why a name could not be resolved. */
export type DnsFailureReason =
  | "nxdomain"
  | "no_data"
  | "timeout"
  | "servfail"
  | "refused"
  | "invalid_name"
  | "error";

/** Result of {@link DnsCache.lookup}; `addresses` are canonical (see `canonicalIp`). */
export type DnsLookupResult =
  | { ok: true; addresses: string[] }
  | { ok: false; reason: DnsFailureReason };

/** Options for {@link DnsCache}; times are in seconds unless named `...Ms`. */
export interface DnsCacheOptions {
  /** Resolver for one family; default: the system resolver via `node:dns/promises`. */
  resolve?: ResolveFn;
  /** Most names kept (least recently used evicted first); default 4096. */
  maxNames?: number;
  /** Most addresses kept per name (soonest-expiring evicted first); default 64. */
  maxAddressesPerName?: number;
  /** TTLs below this are raised to it; default 1. */
  minTtl?: number;
  /** TTLs above this are lowered to it; default 3600. */
  maxTtl?: number;
  /** How long a failure is remembered; default 5. */
  negativeTtl?: number;
  /** Clock in milliseconds; default `Date.now`. */
  now?: () => number;
  /** Deadline for one lookup (A and AAAA together); default 5000. */
  timeoutMs?: number;
}

interface Entry {
  /** Canonical address → expiry time (ms). */
  addresses: Map<string, number>;
  /** Until when the name need not be asked again (ms). */
  freshUntil: number;
  /** When it was last made fresh (ms): with `freshUntil`, how long freshness lasts. */
  freshSince: number;
  /** A remembered failure, when no address is left. */
  failure: { reason: DnsFailureReason; until: number } | null;
}

type FamilyResult = { ok: true; answers: DnsAnswer[] } | { ok: false; reason: DnsFailureReason };

/** Maps a resolver error to a failure reason. */
function failureReason(e: unknown): DnsFailureReason {
  const code = typeof e === "object" && e !== null && "code" in e ? String(e.code) : "";
  switch (code) {
    case "ENOTFOUND":
      return "nxdomain";
    case "ENODATA":
      return "no_data";
    case "ETIMEOUT":
    case "ECANCELLED":
      return "timeout";
    case "ESERVFAIL":
      return "servfail";
    case "EREFUSED":
      return "refused";
    default:
      return "error";
  }
}

/**
 * The default {@link ResolveFn}: a fresh `Resolver` per query (so cancelling
 * one on its deadline cancels nothing else), servers from `/etc/resolv.conf`;
 * Deno's resolver answers names from `/etc/hosts` too (the DNS cache test
 * checks it, since pinning must agree with the system's view of a name).
 */
export function systemResolve(timeoutMs = 5000): ResolveFn {
  return async (name, family, signal) => {
    // c-ares retries with its own per-try timeout; keep two tries inside our deadline.
    const resolver = new Resolver({ timeout: Math.max(100, Math.floor(timeoutMs / 2)), tries: 2 });
    const onAbort = () => resolver.cancel();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      return family === 4
        ? await resolver.resolve4(name, { ttl: true })
        : await resolver.resolve6(name, { ttl: true });
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  };
}

/** Cache of A/AAAA answers; see the module doc. */
export class DnsCache {
  readonly #resolve: ResolveFn;
  readonly #maxNames: number;
  readonly #maxAddresses: number;
  readonly #minTtlMs: number;
  readonly #maxTtlMs: number;
  readonly #negativeTtlMs: number;
  readonly #now: () => number;
  readonly #timeoutMs: number;
  /** Insertion order is recency order: the first key is the least recently used. */
  readonly #entries = new Map<string, Entry>();
  readonly #inFlight = new Map<string, Promise<DnsLookupResult>>();

  /** Creates an empty cache. */
  constructor(opts: DnsCacheOptions = {}) {
    this.#timeoutMs = positive("timeoutMs", opts.timeoutMs ?? 5000);
    this.#resolve = opts.resolve ?? systemResolve(this.#timeoutMs);
    this.#maxNames = positive("maxNames", opts.maxNames ?? DNS_MAX_NAMES);
    this.#maxAddresses = positive(
      "maxAddressesPerName",
      opts.maxAddressesPerName ?? DNS_MAX_ADDRESSES,
    );
    this.#minTtlMs = nonNegative("minTtl", opts.minTtl ?? 1) * 1000;
    this.#maxTtlMs = positive("maxTtl", opts.maxTtl ?? 3600) * 1000;
    this.#negativeTtlMs = nonNegative("negativeTtl", opts.negativeTtl ?? 5) * 1000;
    this.#now = opts.now ?? Date.now;
    if (this.#minTtlMs > this.#maxTtlMs) throw new RangeError("minTtl must not exceed maxTtl");
  }

  /** Number of names currently cached. */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Every address known for `name` whose TTL has not run out, freshest
   * answers first. Resolves (A and AAAA in parallel) only when the name's
   * answers are stale; never rejects. `ok` if either family has an address.
   */
  lookup(name: string): Promise<DnsLookupResult> {
    const literal = canonicalIp(
      name.startsWith("[") && name.endsWith("]") ? name.slice(1, -1) : name,
    );
    if (literal !== null) return Promise.resolve({ ok: true, addresses: [literal] });
    const key = cacheKey(name);
    if (key === null) return Promise.resolve({ ok: false, reason: "invalid_name" });

    const now = this.#now();
    const entry = this.#touch(key, now);
    if (entry !== null) {
      if (now < entry.freshUntil && entry.addresses.size > 0) {
        return Promise.resolve({ ok: true, addresses: [...entry.addresses.keys()] });
      }
      if (entry.failure !== null && now < entry.failure.until && entry.addresses.size === 0) {
        return Promise.resolve({ ok: false, reason: entry.failure.reason });
      }
    }
    return this.#ask(key);
  }

  /**
   * Asks the resolver about `name` ahead of time, in the background, when its answers are in
   * the last quarter of their freshness: a name in steady use is then never waited for. Null
   * when there is nothing to do (not cached, not due yet, already asking, or stale: then
   * {@link lookup} asks). Answers are kept as {@link lookup} keeps them; never rejects.
   */
  refreshAhead(name: string): Promise<DnsLookupResult> | null {
    const key = cacheKey(name);
    if (key === null || this.#inFlight.has(key)) return null;
    const entry = this.#entries.get(key);
    const now = this.#now();
    if (entry === undefined || entry.addresses.size === 0 || now >= entry.freshUntil) return null;
    if (now < entry.freshUntil - (entry.freshUntil - entry.freshSince) / 4) return null;
    return this.#ask(key);
  }

  /** Resolves `key`, sharing a query already in flight. */
  #ask(key: string): Promise<DnsLookupResult> {
    const pending = this.#inFlight.get(key);
    if (pending !== undefined) return pending;
    const p = this.#query(key).finally(() => this.#inFlight.delete(key));
    this.#inFlight.set(key, p);
    return p;
  }

  /** Addresses known for `name` within their TTL, without asking the resolver. */
  knownAddresses(name: string): string[] {
    const key = cacheKey(name);
    if (key === null) return [];
    const entry = this.#touch(key, this.#now());
    return entry === null ? [] : [...entry.addresses.keys()];
  }

  /**
   * The name's answers with their expiry times, for a copy on another thread (`dns_copy.ts`);
   * null unless {@link lookup} would answer the name now without asking the resolver.
   */
  snapshot(name: string): DnsSnapshot | null {
    const key = cacheKey(name);
    if (key === null) return null;
    const now = this.#now();
    const entry = this.#touch(key, now);
    if (entry === null || now >= entry.freshUntil || entry.addresses.size === 0) return null;
    return { name: key, freshUntil: entry.freshUntil, addresses: [...entry.addresses] };
  }

  /** Looks an entry up, marks it recently used and drops its expired addresses. */
  #touch(key: string, now: number): Entry | null {
    const entry = this.#entries.get(key);
    if (entry === undefined) return null;
    this.#entries.delete(key);
    this.#entries.set(key, entry);
    for (const [addr, expires] of entry.addresses) {
      if (expires <= now) entry.addresses.delete(addr);
    }
    return entry;
  }

  async #query(key: string): Promise<DnsLookupResult> {
    const [v4, v6] = await this.#resolveBoth(key);
    const now = this.#now();
    const entry = this.#touch(key, now) ?? this.#insert(key);

    const fresh: string[] = [];
    let minTtlMs = Infinity;
    for (const r of [v4, v6]) {
      if (!r.ok) continue;
      for (const answer of r.answers) {
        const addr = canonicalIp(answer.address);
        if (addr === null) continue;
        const ttl = Number.isFinite(answer.ttl) ? answer.ttl * 1000 : 0;
        const ttlMs = Math.min(this.#maxTtlMs, Math.max(this.#minTtlMs, ttl));
        minTtlMs = Math.min(minTtlMs, ttlMs);
        const expires = now + ttlMs;
        entry.addresses.set(addr, Math.max(entry.addresses.get(addr) ?? 0, expires));
        if (!fresh.includes(addr)) fresh.push(addr);
      }
    }

    if (fresh.length > 0) {
      entry.freshUntil = now + minTtlMs;
      entry.freshSince = now;
      entry.failure = null;
      this.#bound(entry);
      // Freshest answers first, in the resolver's order, then older ones still in TTL.
      const ordered = fresh.filter((a) => entry.addresses.has(a));
      for (const a of entry.addresses.keys()) if (!ordered.includes(a)) ordered.push(a);
      const reordered = new Map<string, number>();
      for (const a of ordered) reordered.set(a, entry.addresses.get(a)!);
      entry.addresses = reordered;
      return { ok: true, addresses: ordered };
    }

    const reason = combinedFailure(v4, v6);
    entry.failure = { reason, until: now + this.#negativeTtlMs };
    if (entry.addresses.size > 0) {
      // The resolver failed but earlier answers are still within their TTL:
      // use them, and do not ask again for a short while.
      entry.freshUntil = now + this.#negativeTtlMs;
      entry.freshSince = now;
      return { ok: true, addresses: [...entry.addresses.keys()] };
    }
    entry.freshUntil = 0;
    return { ok: false, reason };
  }

  /** Resolves A and AAAA in parallel under one deadline; never rejects. */
  async #resolveBoth(key: string): Promise<[FamilyResult, FamilyResult]> {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<FamilyResult>((resolve) => {
      timer = setTimeout(() => {
        controller.abort();
        resolve({ ok: false, reason: "timeout" });
      }, this.#timeoutMs);
    });
    const one = async (family: 4 | 6): Promise<FamilyResult> => {
      try {
        const answers = await this.#resolve(key, family, controller.signal);
        if (!Array.isArray(answers)) return { ok: false, reason: "error" };
        return answers.length > 0 ? { ok: true, answers } : { ok: false, reason: "no_data" };
      } catch (e) {
        return { ok: false, reason: controller.signal.aborted ? "timeout" : failureReason(e) };
      }
    };
    try {
      return await Promise.all([
        Promise.race([one(4), deadline]),
        Promise.race([one(6), deadline]),
      ]);
    } finally {
      clearTimeout(timer);
      controller.abort(); // let a resolver still working on the other family stop
    }
  }

  #insert(key: string): Entry {
    const entry: Entry = { addresses: new Map(), freshUntil: 0, freshSince: 0, failure: null };
    this.#entries.set(key, entry);
    while (this.#entries.size > this.#maxNames) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
    return entry;
  }

  /** Keeps at most `maxAddressesPerName`, dropping the soonest to expire. */
  #bound(entry: Entry): void {
    if (entry.addresses.size <= this.#maxAddresses) return;
    const byExpiry = [...entry.addresses].sort((a, b) => a[1] - b[1]);
    for (let k = 0; k < byExpiry.length - this.#maxAddresses; k++) {
      entry.addresses.delete(byExpiry[k][0]);
    }
  }
}

/** One reason for two failed families: a timeout anywhere wins, NXDOMAIN needs both. */
function combinedFailure(v4: FamilyResult, v6: FamilyResult): DnsFailureReason {
  const reasons = [v4, v6].map((r) => (r.ok ? "no_data" : r.reason));
  if (reasons.includes("timeout")) return "timeout";
  const other = reasons.find((r) => r !== "no_data" && r !== "nxdomain");
  if (other !== undefined) return other;
  if (reasons.includes("nxdomain")) return "nxdomain";
  return "no_data";
}

function positive(what: string, v: number): number {
  if (!(Number.isFinite(v) && v > 0)) {
    throw new RangeError(`${what} must be a positive number, got ${v}`);
  }
  return v;
}

function nonNegative(what: string, v: number): number {
  if (!(Number.isFinite(v) && v >= 0)) {
    throw new RangeError(`${what} must be a non-negative number, got ${v}`);
  }
  return v;
}
