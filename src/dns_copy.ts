/**
 * A read-only copy of some of the DNS cache's answers, for the relay thread: with it the thread
 * can pin an allowed connection to its name's addresses without asking the main thread.
 *
 * The main thread resolves; the copy only ever holds what the cache returned, with the cache's
 * own expiry times, and answers only while the cache itself would answer without asking the
 * resolver again. Past that, or for a name it does not hold, it has no answer and the caller
 * asks the main thread. Pure: no I/O, the clock is the caller's.
 * @module
 */

import { usableAddresses } from "./destination_pin.ts";

/** One name's answers as the cache holds them, for {@link DnsCopy.learn}. */
export interface DnsSnapshot {
  /** The cache key (see {@link dnsKey}). */
  name: string;
  /** Until when (ms since the epoch) the cache answers the name without the resolver. */
  freshUntil: number;
  /** Canonical address and its own expiry (ms), in the order the cache returns them. */
  addresses: [string, number][];
}

/** Lowercase, one trailing dot dropped; `null` if it cannot be a DNS name. */
export function dnsKey(name: string): string | null {
  let k = name.toLowerCase();
  if (k.endsWith(".")) k = k.slice(0, -1);
  if (k.length === 0 || k.length > 253 || !/^[a-z0-9_.-]+$/.test(k)) return null;
  if (k.startsWith(".") || k.includes("..")) return null;
  return k;
}

/** Most names held: the cache's default, and a copy's (the oldest learned is dropped first). */
export const DNS_MAX_NAMES = 4096;
/** Most addresses kept per name: the cache's default, and a copy's. */
export const DNS_MAX_ADDRESSES = 64;

/** A name's snapshot, with each answer's usable form (see {@link DnsCopy.usable}). */
interface Entry extends DnsSnapshot {
  /** Per answer: its canonical text if it is safe to connect to, else null. */
  vetted: (string | null)[];
  /** {@link DnsCopy.usable}'s last answer, which holds from `usableFrom` until `usableUntil`. */
  usable: string[] | null;
  usableFrom: number;
  /** The earliest expiry among the answers live when it was made. */
  usableUntil: number;
}

/** See the module doc. */
export class DnsCopy {
  readonly #entries = new Map<string, Entry>();
  readonly #maxNames: number;

  /** An empty copy holding at most `maxNames` names. */
  constructor(maxNames = DNS_MAX_NAMES) {
    this.#maxNames = maxNames;
  }

  /** Names held (expired ones included until they are asked for or pushed out). */
  get size(): number {
    return this.#entries.size;
  }

  /** Takes a name's answers as the cache holds them now, replacing what was held for it. */
  learn(snapshot: DnsSnapshot): void {
    const key = dnsKey(snapshot.name);
    if (key === null || key !== snapshot.name) return;
    this.#entries.delete(key);
    const addresses = snapshot.addresses.slice(0, DNS_MAX_ADDRESSES);
    const vetted = addresses.map(([address]) => usableAddresses([address])[0] ?? null);
    this.#entries.set(key, {
      name: key,
      freshUntil: snapshot.freshUntil,
      addresses,
      vetted,
      usable: null,
      usableFrom: 0,
      usableUntil: 0,
    });
    while (this.#entries.size > this.#maxNames) {
      this.#entries.delete(this.#entries.keys().next().value as string);
    }
  }

  /**
   * The addresses the cache would return for `name` at `now` without asking the resolver, or
   * null when it would ask (the name is not held, or no longer fresh).
   */
  addresses(name: string, now: number): string[] | null {
    const entry = this.#fresh(name, now);
    if (entry === null) return null;
    const live: string[] = [];
    for (const [address, expires] of entry.addresses) if (expires > now) live.push(address);
    return live.length > 0 ? live : null;
  }

  /**
   * What `destination_pin.ts`'s `usableAddresses` keeps of {@link addresses} (canonical, safe,
   * de-duplicated, in order; possibly none), or null when that is null. Each answer was vetted
   * once when it was learned: a connection costs no address parsing. The same array is given
   * again while no answer among it has expired: callers must not change it.
   */
  usable(name: string, now: number): string[] | null {
    const entry = this.#fresh(name, now);
    if (entry === null) return null;
    if (entry.usable !== null && now >= entry.usableFrom && now < entry.usableUntil) {
      return entry.usable;
    }
    let until = Infinity;
    const out: string[] = [];
    for (let i = 0; i < entry.addresses.length; i++) {
      const expires = entry.addresses[i][1];
      if (expires <= now) continue;
      until = Math.min(until, expires);
      const address = entry.vetted[i];
      if (address !== null && !out.includes(address)) out.push(address);
    }
    if (until === Infinity) return null;
    entry.usable = out;
    entry.usableFrom = now;
    entry.usableUntil = until;
    return out;
  }

  /** The entry for `name` while fresh at `now` (a stale one is dropped). */
  #fresh(name: string, now: number): Entry | null {
    // Names are held under their key: a name that is its own key (nearly all: the callers
    // normalise names) is found without making it again.
    let entry = this.#entries.get(name);
    if (entry === undefined) {
      const key = dnsKey(name);
      if (key === null || key === name) return null;
      entry = this.#entries.get(key);
      if (entry === undefined) return null;
    }
    if (now >= entry.freshUntil) {
      this.#entries.delete(entry.name);
      return null;
    }
    return entry;
  }

  /** Forgets every name. */
  clear(): void {
    this.#entries.clear();
  }
}
