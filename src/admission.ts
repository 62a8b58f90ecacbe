/**
 * Connection limits shared between threads: the total of open connections and a count per
 * client address, in one `SharedArrayBuffer` that the main thread and the relay thread both
 * update with atomics, so `MAX_CONNECTIONS` and `MAX_CONNECTIONS_PER_SOURCE` hold across
 * every connection whichever thread accepted it.
 *
 * Per-source counts live in a fixed table of buckets chosen by a keyed hash of the address:
 * the memory is bounded whatever the number of sources, and no lock is needed. Two sources
 * that share a bucket share its budget, so a collision can only refuse early, never admit
 * more than the limit; the key is random per process, so a client cannot choose its bucket.
 * @module
 */

/** Buckets of the per-source table (a power of two). */
const BUCKETS = 1 << 16;
/** Where the buckets start in the shared counts (after the totals). */
const FIRST_BUCKET = 2;

/** Why a connection was refused at the door. */
export type Refusal = "too_many_connections" | "per_source_limit";

/** What a thread needs to share an {@link Admission} (structured-clonable). */
export interface AdmissionShare {
  buffer: SharedArrayBuffer;
  key: number;
}

/** The shared connection counts; {@link Admission.share} hands them to another thread. */
export class Admission {
  /**
   * [0]: connections open; [1]: connections let in since start (wrapping at 2^32); [2 + bucket]:
   * connections open from the sources of a bucket.
   */
  readonly #counts: Int32Array;
  readonly #key: number;

  /** A new table, or the view of one shared by another thread. */
  constructor(share?: AdmissionShare) {
    this.#counts = new Int32Array(
      share?.buffer ?? new SharedArrayBuffer(4 * (FIRST_BUCKET + BUCKETS)),
    );
    this.#key = share?.key ?? crypto.getRandomValues(new Uint32Array(1))[0];
  }

  /** What another thread passes to the constructor to count in the same table. */
  get share(): AdmissionShare {
    return { buffer: this.#counts.buffer as SharedArrayBuffer, key: this.#key };
  }

  /** Connections open now, on every thread. */
  get active(): number {
    return Atomics.load(this.#counts, 0);
  }

  /**
   * Connections let in since start, on every thread, modulo 2^32: how busy the process is (the
   * difference of two readings, with `>>> 0`, is exact while fewer than 2^32 came between).
   */
  get admitted(): number {
    return Atomics.load(this.#counts, 1) >>> 0;
  }

  /**
   * Counts a connection from `source` in, or refuses it: `max` open connections in all, and
   * (when `maxPerSource` > 0) that many from one source. A refused connection is not counted.
   */
  admit(source: string, max: number, maxPerSource: number): Refusal | null {
    const counts = this.#counts;
    if (Atomics.add(counts, 0, 1) >= max) {
      Atomics.sub(counts, 0, 1);
      return "too_many_connections";
    }
    const bucket = FIRST_BUCKET + this.#bucket(source);
    if (Atomics.add(counts, bucket, 1) >= maxPerSource && maxPerSource > 0) {
      Atomics.sub(counts, bucket, 1);
      Atomics.sub(counts, 0, 1);
      return "per_source_limit";
    }
    Atomics.add(counts, 1, 1);
    return null;
  }

  /** Counts out a connection that {@link admit} let in. */
  release(source: string): void {
    Atomics.sub(this.#counts, FIRST_BUCKET + this.#bucket(source), 1);
    Atomics.sub(this.#counts, 0, 1);
  }

  /** FNV-1a over the address text, seeded with the key. */
  #bucket(source: string): number {
    let h = (0x811c9dc5 ^ this.#key) >>> 0;
    for (let i = 0; i < source.length; i++) {
      h = Math.imul(h ^ source.charCodeAt(i), 0x01000193);
    }
    h ^= h >>> 15;
    return (h >>> 0) & (BUCKETS - 1);
  }
}
