/**
 * The text of a log line, without I/O: values quoted and made safe for terminals, decision and
 * closing lines in text or JSON form. Pure, so the relay thread formats the lines of the
 * connections it decides the same way as the main thread.
 * @module
 */

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

const FIELD_ORDER = [
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

/** The fields of an event line, text form: `ALLOWED HTTP peer=… dst=… host=…`. */
export function eventText(props: Record<string, unknown>): string {
  let line = `${props.event} ${props.proto}`;
  for (const key of FIELD_ORDER) {
    if (props[key] !== undefined) line += ` ${key}=${formatValue(props[key])}`;
  }
  for (const key in props) {
    if (key !== "event" && key !== "proto" && !(FIELD_ORDER as readonly string[]).includes(key)) {
      if (props[key] !== undefined) line += ` ${key}=${formatValue(props[key])}`;
    }
  }
  return line;
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

export function textTime(timestamp: number): string {
  return secondText(timestamp) + "Z";
}

/** As `Date.prototype.toISOString`, with the date formatted once per second. */
function isoTime(timestamp: number): string {
  const millis = timestamp - Math.floor(timestamp / 1000) * 1000;
  return `${secondText(timestamp)}.${String(millis).padStart(3, "0")}Z`;
}

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

/** One decision or closing line at INFO, newline included, stamped `at` (ms since the epoch). */
export function formatEventLine(fields: EventFields, at: number, format: LineFormat): string {
  const props = fields as unknown as Record<string, unknown>;
  return format === "json"
    ? jsonObject(at, "INFO", undefined, props)
    : `${textTime(at)} INFO ${eventText(props)}\n`;
}

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
