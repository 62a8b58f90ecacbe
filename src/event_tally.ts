/**
 * What the relay thread tells the main thread about the connections it decides by itself,
 * gathered between two reports: their log lines, already formatted, and their counts. One
 * report per batch instead of a record per connection spares the main thread a structured
 * clone, a formatted line and a kept record for each; it keeps nothing of them.
 *
 * The lines are kept as bytes from the start: a text held until the report goes outlives the
 * young generation's collections, and V8 grew the thread's young generation for it (about 0.3 KiB
 * more resident per idle connection after a burst).
 *
 * Pure: no I/O.
 * @module
 */

import type { DecisionLabel, Proto } from "./metrics.ts";
import { type EventFields, EventLines, type LineFormat } from "./log_line.ts";

/** One batch's worth, as it crosses to the main thread. */
export interface Tally {
  /** The lines as UTF-8 (ASCII in fact), newlines included, in the order of their events. */
  lines: Uint8Array<ArrayBuffer>;
  lineCount: number;
  /** Decided connections and later requests: `[proto, decision, reason, count]`. */
  connections: [Proto, DecisionLabel, string, number][];
  /** Connections allowed by the thread itself. */
  onThread: number;
  /** Upstream connect times of the connections that ended, in milliseconds. */
  connectMs: number[];
  up: number;
  down: number;
  /** The names connections were allowed for, each once (their DNS answers are kept fresh). */
  names: string[];
}

/** Bytes of lines after which a tally asks to be sent without waiting (see {@link full}). */
export const TALLY_FLUSH_BYTES = 256 * 1024;
/**
 * Largest buffer kept between batches: a sweep that ends thousands of idle connections at once
 * grows it far beyond that, and it would stay resident.
 */
const KEPT_BYTES = 2 * TALLY_FLUSH_BYTES;

/** Gathers a {@link Tally}; lines are written in `format`, or not at all when it is null. */
export class EventTally {
  #lines: EventLines | null;
  #lineCount = 0;
  /**
   * Counts by reason, one map per protocol and decision (HTTP and HTTPS, allowed and denied):
   * keyed by the reason alone, a constant text, no key is built per connection.
   */
  #connections = [0, 1, 2, 3].map(() => new Map<string, [Proto, DecisionLabel, string, number]>());
  #counted = 0;
  #onThread = 0;
  #connectMs: number[] = [];
  #up = 0;
  #down = 0;
  #names = new Set<string>();

  constructor(format: LineFormat | null) {
    this.#lines = format === null ? null : new EventLines(format, KEPT_BYTES);
  }

  /** Enough lines gathered to send them now rather than wait for the batch's time. */
  get full(): boolean {
    return this.#lines !== null && this.#lines.length >= TALLY_FLUSH_BYTES;
  }

  /** Nothing gathered since the last {@link take}. */
  get empty(): boolean {
    return this.#lineCount === 0 && this.#counted === 0 && this.#connectMs.length === 0 &&
      this.#up === 0 && this.#down === 0;
  }

  /** A decision line (`ALLOWED` or `DENIED`) at `at`, counted under `reason` (`none`: allowed). */
  decision(fields: EventFields, at: number, reason = "none"): void {
    this.#line(fields, at);
    const decision: DecisionLabel = fields.event === "DENIED" ? "denied" : "allowed";
    const counts =
      this.#connections[(fields.proto === "HTTP" ? 0 : 2) + (decision === "allowed" ? 0 : 1)];
    const known = counts.get(reason);
    if (known !== undefined) known[3]++;
    else counts.set(reason, [fields.proto, decision, reason, 1]);
    this.#counted++;
  }

  /** A connection the thread allowed by itself, for `name`: its ALLOWED line and counts. */
  allowed(fields: EventFields, at: number, name: string): void {
    this.decision(fields, at);
    this.#onThread++;
    this.#names.add(name);
  }

  /** A connection's end: its CLOSED line (`fields` already say so) and its byte counts. */
  closed(fields: EventFields, at: number, up: number, down: number, connectMs?: number): void {
    this.#line(fields, at);
    this.#up += up;
    this.#down += down;
    if (connectMs !== undefined) this.#connectMs.push(connectMs);
  }

  /** Everything gathered, which starts over; null when there is nothing. */
  take(): Tally | null {
    if (this.empty) return null;
    const tally: Tally = {
      lines: this.#lines?.take() ?? new Uint8Array(0),
      lineCount: this.#lineCount,
      connections: this.#connections.flatMap((counts) => [...counts.values()]),
      onThread: this.#onThread,
      connectMs: this.#connectMs,
      up: this.#up,
      down: this.#down,
      names: [...this.#names],
    };
    this.#lineCount = 0;
    for (const counts of this.#connections) counts.clear();
    this.#counted = 0;
    this.#onThread = 0;
    this.#connectMs = [];
    this.#up = 0;
    this.#down = 0;
    this.#names.clear();
    return tally;
  }

  #line(fields: EventFields, at: number): void {
    if (this.#lines === null) return;
    this.#lines.write(fields, at);
    this.#lineCount++;
  }
}
