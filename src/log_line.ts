/**
 * The text of a log line, without I/O: values quoted and made safe for terminals, decision and
 * closing lines in text or JSON form. Pure, so the relay thread formats the lines of the
 * connections it decides the same way as the main thread.
 * @module
 */

import { latin1 } from "./latin1.ts";

/** The fields of a decision or closing line, in the order the text format prints them. */
export interface EventFields {
  event: "ALLOWED" | "DENIED" | "CLOSED";
  proto: "HTTP" | "HTTPS";
  peer: string;
  dst: string;
  host?: string;
  sni?: string;
  alpn?: string;
  ech?: boolean;
  reason?: string;
  /** Audit mode: allowed only because the mode is audit. */
  would_deny?: boolean;
  /** Where the proxy connected, when destination pinning chose another address than `dst`. */
  connect?: string;
  /** `kernel` on the closing line of a connection relayed through libc (`RELAY=kernel`). */
  relay?: "kernel";
  up?: number;
  down?: number;
  duration_ms?: number;
  error?: string;
}

/** The fields after the event and protocol, in the order both forms of a line write them. */
export const FIELD_ORDER = [
  "peer",
  "dst",
  "host",
  "sni",
  "reason",
  "would_deny",
  "connect",
  "alpn",
  "ech",
  "relay",
  "up",
  "down",
  "duration_ms",
  "error",
] as const;

/** The word each logtape level is written as. */
export const LEVEL_WORD: Record<string, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/** Longest value a log line carries for one field: client-chosen names are capped. */
const MAX_VALUE_CHARS = 256;

/**
 * Quotes a value that would break `key=value` parsing. Inside quotes everything outside
 * printable ASCII is written as `\uXXXX`: C1 controls, DEL, line and paragraph separators
 * and bidi overrides from a client's bytes must not reach a terminal or a log viewer raw.
 */
export function formatValue(value: unknown): string {
  let text = typeof value === "string" ? value : String(value);
  if (text.length > MAX_VALUE_CHARS) text = text.slice(0, MAX_VALUE_CHARS) + "...";
  return /^[\x21-\x7e]+$/.test(text) && !/["=\\]/.test(text)
    ? text
    : asciiOnly(JSON.stringify(text));
}

/** JSON text with every character outside printable ASCII written as `\uXXXX`. */
function asciiOnly(json: string): string {
  return json.replace(
    /[^\x20-\x7e]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** The second last formatted, and its text: a burst of lines formats its date once. */
let cachedSecond = Number.NaN;
let cachedSecondText = "";

/** `2026-04-23T10:00:01` for the second holding `timestamp` (UTC). */
function secondText(timestamp: number): string {
  const second = Math.floor(timestamp / 1000);
  if (second !== cachedSecond) {
    cachedSecondText = new Date(second * 1000).toISOString().slice(0, 19);
    cachedSecond = second;
  }
  return cachedSecondText;
}

/** `2026-04-23T10:00:01Z`: the time of a text line, to the second. */
export function textTime(timestamp: number): string {
  return secondText(timestamp) + "Z";
}

/** As `Date.prototype.toISOString`, with the date formatted once per second. */
function isoTime(timestamp: number): string {
  const millis = timestamp - Math.floor(timestamp / 1000) * 1000;
  return `${secondText(timestamp)}.${String(millis).padStart(3, "0")}Z`;
}

/** A JSON line of `props` after the time, level and message; escaped to printable ASCII. */
export function jsonObject(
  timestamp: number,
  level: string,
  message: string | undefined,
  props: Record<string, unknown>,
): string {
  // One JSON.stringify of the properties as they are (it leaves out undefined values, as the
  // line should), rather than a copy of them under the time and level.
  let line = `{"time":"${isoTime(timestamp)}","level":${JSON.stringify(level)}`;
  if (message !== undefined) line += `,"message":${JSON.stringify(message)}`;
  const body = JSON.stringify(capped(props));
  line += body === "{}" ? "}" : "," + body.slice(1);
  return asciiOnly(line) + "\n";
}

/** `props` with every string value longer than MAX_VALUE_CHARS cut (a copy only if needed). */
function capped(props: Record<string, unknown>): Record<string, unknown> {
  for (const key in props) {
    const value = props[key];
    if (typeof value === "string" && value.length > MAX_VALUE_CHARS) {
      const out: Record<string, unknown> = {};
      for (const k in props) {
        const v = props[k];
        out[k] = typeof v === "string" && v.length > MAX_VALUE_CHARS
          ? v.slice(0, MAX_VALUE_CHARS) + "..."
          : v;
      }
      return out;
    }
  }
  return props;
}

/** How decision and closing lines are written: `LOG_FORMAT`. */
export type LineFormat = "text" | "json";

/**
 * The CLOSED line of a connection whose decision line had `fields`: accepted at `started`,
 * ended at `ended` (ms since the epoch), with its byte counts and the error that ended it.
 */
export function closedFields(
  fields: EventFields,
  started: number,
  ended: number,
  up: number,
  down: number,
  error: string | undefined,
): EventFields {
  return {
    ...fields,
    event: "CLOSED",
    reason: undefined,
    would_deny: undefined,
    up,
    down,
    duration_ms: ended - started,
    error,
  };
}

/** Where the buffer of {@link EventLines} starts, and what it goes back to once taken. */
const INITIAL_BYTES = 16 * 1024;
/** Printable ASCII as bytes: the constant pieces of a line, copied with one `set` each. */
function asciiBytes(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/** `,"peer":` and ` peer=`: each field's key as JSON and as text, in field order. */
const JSON_KEYS = FIELD_ORDER.map((key) => asciiBytes(`,"${key}":`));
const JSON_EVENT_KEY = asciiBytes(',"event":');
const JSON_PROTO_KEY = asciiBytes(',"proto":');
const TEXT_KEYS = FIELD_ORDER.map((key) => asciiBytes(` ${key}=`));
const EVENTS = ["ALLOWED", "DENIED", "CLOSED"] as const;
const PROTOS = ["HTTP", "HTTPS"] as const;
/** What follows the time of an INFO line for each event and protocol, by {@link headIndex}. */
const JSON_HEADS = EVENTS.flatMap((event) =>
  PROTOS.map((proto) => asciiBytes(`Z","level":"INFO","event":"${event}","proto":"${proto}"`))
);
const TEXT_HEADS = EVENTS.flatMap((event) =>
  PROTOS.map((proto) => asciiBytes(`INFO ${event} ${proto}`))
);

/** Where an INFO line of `event` and `proto` finds its head; -1 for anything else. */
function headIndex(level: string, event: unknown, proto: unknown): number {
  if (level !== "INFO") return -1;
  const e = EVENTS.indexOf(event as typeof EVENTS[number]);
  const p = PROTOS.indexOf(proto as typeof PROTOS[number]);
  return e < 0 || p < 0 ? -1 : e * PROTOS.length + p;
}

/** Lowercase hexadecimal digits, as `JSON.stringify` writes escapes. */
const HEX = "0123456789abcdef";

/**
 * Decision and closing lines written straight into a growing byte buffer, in text or JSON form,
 * as one list of bytes for the stdout queue. No text is built on the way: a connection's two
 * lines, built as text and then encoded, took about 4 µs and their garbage on the relay thread;
 * written as bytes, about 1 µs (the constant pieces copied whole, the values byte by byte). Every
 * character outside printable ASCII is escaped, so the bytes are ASCII; the fields come in the
 * text format's order in both forms.
 */
export class EventLines {
  #format: LineFormat;
  #kept: number;
  #bytes: Uint8Array<ArrayBuffer> = new Uint8Array(INITIAL_BYTES);
  #length = 0;
  #second = Number.NaN;
  #secondPrefix: Uint8Array = new Uint8Array(0);

  /** Lines in `format`; a buffer grown past `keptBytes` starts over once taken. */
  constructor(format: LineFormat, keptBytes = 512 * 1024) {
    this.#format = format;
    this.#kept = keptBytes;
  }

  /** The form lines are written in. */
  get format(): LineFormat {
    return this.#format;
  }

  /** Bytes written since the last {@link take}. */
  get length(): number {
    return this.#length;
  }

  /** Appends one line for `fields`, stamped `at` (ms since the epoch), newline included. */
  write(fields: EventFields, at: number, level = "INFO"): void {
    const json = this.#format === "json";
    this.#chunk(this.#secondBytes(at));
    const head = headIndex(level, fields.event, fields.proto);
    if (json) {
      this.#millis(at - Math.floor(at / 1000) * 1000);
      if (head >= 0) this.#chunk(JSON_HEADS[head]);
      else {
        this.#ascii('Z","level":');
        this.#quoted(level);
        this.#field(JSON_EVENT_KEY, fields.event, true);
        this.#field(JSON_PROTO_KEY, fields.proto, true);
      }
    } else if (head >= 0) this.#chunk(TEXT_HEADS[head]);
    else {
      this.#ascii(level);
      this.#ascii(" ");
      this.#value(fields.event, false);
      this.#ascii(" ");
      this.#value(fields.proto, false);
    }
    // Named reads, in FIELD_ORDER: a keyed read with a different key each time is megamorphic.
    const keys = json ? JSON_KEYS : TEXT_KEYS;
    this.#field(keys[0], fields.peer, json);
    this.#field(keys[1], fields.dst, json);
    this.#field(keys[2], fields.host, json);
    this.#field(keys[3], fields.sni, json);
    this.#field(keys[4], fields.reason, json);
    this.#field(keys[5], fields.would_deny, json);
    this.#field(keys[6], fields.connect, json);
    this.#field(keys[7], fields.alpn, json);
    this.#field(keys[8], fields.ech, json);
    this.#field(keys[9], fields.relay, json);
    this.#field(keys[10], fields.up, json);
    this.#field(keys[11], fields.down, json);
    this.#field(keys[12], fields.duration_ms, json);
    this.#field(keys[13], fields.error, json);
    this.#ascii(json ? "}\n" : "\n");
  }

  /** What was written since the last take, as bytes of its own; the buffer starts over. */
  take(): Uint8Array<ArrayBuffer> {
    const out = this.#bytes.slice(0, this.#length);
    this.#reset();
    return out;
  }

  /** As {@link take}, as text. */
  takeText(): string {
    const out = latin1(this.#bytes, 0, this.#length);
    this.#reset();
    return out;
  }

  #reset(): void {
    this.#length = 0;
    if (this.#bytes.length > this.#kept) this.#bytes = new Uint8Array(INITIAL_BYTES);
  }

  /** Room for `n` more bytes. */
  #room(n: number): void {
    const need = this.#length + n;
    if (need <= this.#bytes.length) return;
    // Doubling: a batch of lines is bounded by its owner (time, and bytes before it is sent).
    const grown = new Uint8Array(Math.max(need, this.#bytes.length * 2));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }

  /** Text known to be printable ASCII (keys, the time, the level). */
  #ascii(text: string): void {
    this.#room(text.length);
    const bytes = this.#bytes;
    let at = this.#length;
    for (let i = 0; i < text.length; i++) bytes[at++] = text.charCodeAt(i);
    this.#length = at;
  }

  /** `key` and the value, unless the value is left out (undefined, or nothing in JSON). */
  #field(key: Uint8Array, value: unknown, json: boolean): void {
    if (value === undefined) return;
    if (
      json && typeof value !== "string" && typeof value !== "number" && typeof value !== "boolean"
    ) {
      const text = JSON.stringify(value);
      if (text === undefined) return;
      this.#chunk(key);
      this.#escaped(text);
      return;
    }
    this.#chunk(key);
    this.#value(value, json);
  }

  /** Constant bytes. */
  #chunk(bytes: Uint8Array): void {
    this.#room(bytes.length);
    this.#bytes.set(bytes, this.#length);
    this.#length += bytes.length;
  }

  /**
   * What a line starts with up to its second, as bytes made once per second:
   * `{"time":"2026-04-23T10:00:01` (JSON) or `2026-04-23T10:00:01Z ` (text).
   */
  #secondBytes(at: number): Uint8Array {
    const second = Math.floor(at / 1000);
    if (second !== this.#second) {
      this.#second = second;
      this.#secondPrefix = asciiBytes(
        this.#format === "json" ? `{"time":"${secondText(at)}` : `${secondText(at)}Z `,
      );
    }
    return this.#secondPrefix;
  }

  /** A value as {@link formatValue} writes it (text), or as `JSON.stringify` does, escaped. */
  #value(value: unknown, json: boolean): void {
    if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) {
      this.#digits(value);
    } else if (typeof value === "boolean") this.#ascii(value ? "true" : "false");
    else if (json && typeof value === "number") this.#ascii(JSON.stringify(value));
    else if (json) this.#quoted(cut(value as string));
    else this.#bare(cut(String(value)));
  }

  /** The text bare when it is printable ASCII without `"`, `=` or a backslash; quoted otherwise. */
  #bare(text: string): void {
    this.#room(text.length);
    const bytes = this.#bytes;
    const start = this.#length;
    let at = start;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c <= 0x20 || c >= 0x7f || c === 0x22 || c === 0x3d || c === 0x5c) {
        this.#quoted(text);
        return;
      }
      bytes[at++] = c;
    }
    if (at === start) this.#quoted(text);
    else this.#length = at;
  }

  /** The text as a JSON string: quoted, with `JSON.stringify`'s escapes, and `\uXXXX` beyond ASCII. */
  #quoted(text: string): void {
    this.#room(text.length * 6 + 2);
    const bytes = this.#bytes;
    let at = this.#length;
    bytes[at++] = 0x22;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c >= 0x20 && c <= 0x7e) {
        if (c === 0x22 || c === 0x5c) bytes[at++] = 0x5c;
        bytes[at++] = c;
      } else at = escape(bytes, at, c);
    }
    bytes[at++] = 0x22;
    this.#length = at;
  }

  /** JSON text with everything outside printable ASCII written as `\uXXXX`. */
  #escaped(json: string): void {
    this.#room(json.length * 6);
    const bytes = this.#bytes;
    let at = this.#length;
    for (let i = 0; i < json.length; i++) {
      const c = json.charCodeAt(i);
      if (c >= 0x20 && c <= 0x7e) bytes[at++] = c;
      else at = unicodeEscape(bytes, at, c);
    }
    this.#length = at;
  }

  /** A non-negative safe integer in decimal. */
  #digits(n: number): void {
    let width = 1;
    for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) width++;
    this.#room(width);
    const bytes = this.#bytes;
    for (let at = this.#length + width - 1, rest = n; at >= this.#length; at--) {
      bytes[at] = 0x30 + rest % 10;
      rest = Math.floor(rest / 10);
    }
    this.#length += width;
  }

  /** `.123`: the milliseconds of a JSON line's time, as `Date.prototype.toISOString` writes them. */
  #millis(millis: number): void {
    if (!Number.isInteger(millis)) {
      this.#ascii(`.${String(millis).padStart(3, "0")}`);
      return;
    }
    this.#room(4);
    const bytes = this.#bytes;
    const at = this.#length;
    bytes[at] = 0x2e;
    bytes[at + 1] = 0x30 + Math.floor(millis / 100);
    bytes[at + 2] = 0x30 + Math.floor(millis / 10) % 10;
    bytes[at + 3] = 0x30 + millis % 10;
    this.#length = at + 4;
  }
}

/** A value cut to MAX_VALUE_CHARS, marked with `...`. */
function cut(text: string): string {
  return text.length > MAX_VALUE_CHARS ? text.slice(0, MAX_VALUE_CHARS) + "..." : text;
}

/** A character outside printable ASCII inside a JSON string, as `JSON.stringify` then `asciiOnly`. */
function escape(bytes: Uint8Array, at: number, c: number): number {
  const short = c === 0x08
    ? 0x62
    : c === 0x09
    ? 0x74
    : c === 0x0a
    ? 0x6e
    : c === 0x0c
    ? 0x66
    : c === 0x0d
    ? 0x72
    : 0;
  if (short === 0) return unicodeEscape(bytes, at, c);
  bytes[at] = 0x5c;
  bytes[at + 1] = short;
  return at + 2;
}

/** A backslash, `u` and four lowercase hexadecimal digits of the UTF-16 code unit `c`. */
function unicodeEscape(bytes: Uint8Array, at: number, c: number): number {
  bytes[at] = 0x5c;
  bytes[at + 1] = 0x75;
  bytes[at + 2] = HEX.charCodeAt(c >> 12);
  bytes[at + 3] = HEX.charCodeAt((c >> 8) & 15);
  bytes[at + 4] = HEX.charCodeAt((c >> 4) & 15);
  bytes[at + 5] = HEX.charCodeAt(c & 15);
  return at + 6;
}

/** One line for `fields` as text, through {@link EventLines} (the logtape path, tests). */
export function eventLine(
  fields: EventFields,
  at: number,
  format: LineFormat,
  level = "INFO",
): string {
  const lines = format === "json" ? jsonLines : textLines;
  lines.write(fields, at, level);
  return lines.takeText();
}

const jsonLines = new EventLines("json");
const textLines = new EventLines("text");
