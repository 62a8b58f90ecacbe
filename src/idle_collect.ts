/**
 * Garbage collection once a thread has gone quiet. V8 collects its old generation only after it
 * has grown by several MiB, and gives pages back when its memory reducer runs in idle time; the
 * relay thread spends its idle time blocked in `epoll_wait`, where no V8 task runs, so after a
 * burst the garbage of thousands of connections stayed resident for as long as they were open
 * (BENCHMARKS.md, "Idle memory collected once quiet"). With V8's `gc` exposed
 * (`--v8-flags=--expose-gc`, in the `start` and `compile` tasks), each thread collects when its
 * old generation has grown since the last collection and the thread has gone quiet.
 * @module
 */

import { getHeapSpaceStatistics } from "node:v8";

/** When to collect. */
export interface IdleCollectOptions {
  /** Growth of the old generation since the last collection that makes one worth its pause. */
  growthBytes: number;
  /** Growth between two samples under which the thread counts as quiet. */
  quietBytes: number;
  /**
   * Connections let in between two samples (on any thread) up to which it counts as quiet: new
   * connections' records are still young, so a busy thread's old generation can look still.
   */
  quietConnections: number;
  /** Least time between two collections, whatever the heap does. */
  intervalMs: number;
}

/**
 * 256 KiB is a few hundred connections' records; a collection of a heap holding ten thousand idle
 * ones measured 15-30 ms, paid only once the thread is quiet, at most once a second.
 */
export const IDLE_COLLECT_DEFAULTS: IdleCollectOptions = {
  growthBytes: 256 * 1024,
  quietBytes: 64 * 1024,
  quietConnections: 2,
  intervalMs: 1_000,
};

/** What one collection did, for the logs and metrics. */
export interface Collection {
  /** Old generation in use before and after, in bytes. */
  before: number;
  after: number;
  /** How long the collection took. */
  ms: number;
}

/**
 * A thread's old generation as sampled: in use now, at the previous sample, after the last
 * collection.
 */
export interface HeapSample {
  used: number;
  previous: number;
  afterLast: number;
  /** Time since the last collection. */
  sinceLastMs: number;
  /** Connections let in since the previous sample. */
  connections: number;
}

/**
 * Whether to collect now: the old generation has grown by `growthBytes` since the last
 * collection, the thread is quiet (by `quietBytes` and `quietConnections`: a busy one is left to
 * V8), and the last collection is `intervalMs` old.
 */
export function shouldCollect(heap: HeapSample, options: IdleCollectOptions): boolean {
  return heap.used - heap.afterLast >= options.growthBytes &&
    heap.used - heap.previous < options.quietBytes &&
    heap.connections <= options.quietConnections && heap.sinceLastMs >= options.intervalMs;
}

/**
 * Bytes in use outside V8's young generation. Objects that live past a few young collections
 * (a connection's records, and the garbage promoted with them) end up there, and it is what
 * stays resident; the young generation is collected often anyway, and short-lived garbage (a
 * bulk transfer's) never reaches the old one.
 */
export function oldGenerationUsed(): number {
  let used = 0;
  for (const space of getHeapSpaceStatistics()) {
    if (!space.space_name.startsWith("new_")) used += space.space_used_size;
  }
  return used;
}

/**
 * V8's `gc`, when the process runs with `--expose-gc`, as a full collection that also gives
 * memory back: V8's "last resort" flavor compacts and releases free pages, where a plain `gc()`
 * kept them (a test heap: 37 -> 3 MiB committed, against 56 -> 33 MiB; 15 ms against 6 ms).
 */
export function exposedGc(): (() => void) | undefined {
  const gc = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== "function") return undefined;
  return () => gc({ type: "major", execution: "sync", flavor: "last-resort" });
}

/** One thread's collector, sampled by its owner on a steady beat (a sweep, a timer). */
export class IdleCollector {
  readonly #gc: (() => void) | undefined;
  readonly #heapUsed: () => number;
  readonly #options: IdleCollectOptions;
  #previous: number;
  #afterLast: number;
  #lastAt = -Infinity;
  #admitted: number | undefined;
  #settled = true;

  constructor(
    gc: (() => void) | undefined = exposedGc(),
    heapUsed: () => number = oldGenerationUsed,
    options: IdleCollectOptions = IDLE_COLLECT_DEFAULTS,
  ) {
    this.#gc = gc;
    this.#heapUsed = heapUsed;
    this.#options = options;
    // What the thread holds at start is not garbage to collect.
    this.#previous = this.#afterLast = gc === undefined ? 0 : heapUsed();
  }

  /** False when V8's `gc` is not exposed: then memory is left to V8 alone. */
  get enabled(): boolean {
    return this.#gc !== undefined;
  }

  /**
   * True when the last sample found nothing owed: a thread about to block with nothing open may
   * then block for good, else it should wake to sample again.
   */
  get settled(): boolean {
    return this.#settled;
  }

  /**
   * Samples the old generation at time `now` (ms), with `admitted` the connections let in since
   * start (`Admission.admitted`), and collects if {@link shouldCollect} says so.
   */
  sample(now: number, admitted: number): Collection | undefined {
    if (this.#gc === undefined) return undefined;
    const used = this.#heapUsed();
    const heap = {
      used,
      previous: this.#previous,
      afterLast: this.#afterLast,
      sinceLastMs: now - this.#lastAt,
      // Unknown before a first reading: counted as busy.
      connections: this.#admitted === undefined ? Infinity : (admitted - this.#admitted) >>> 0,
    };
    this.#previous = used;
    this.#admitted = admitted;
    if (!shouldCollect(heap, this.#options)) {
      this.#settled = used - this.#afterLast < this.#options.growthBytes;
      return undefined;
    }
    const started = performance.now();
    this.#gc();
    const ms = performance.now() - started;
    this.#previous = this.#afterLast = this.#heapUsed();
    this.#lastAt = now;
    this.#settled = true;
    return { before: used, after: this.#afterLast, ms };
  }
}
