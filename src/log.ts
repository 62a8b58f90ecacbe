/**
 * Logging: one line per event to stdout, in the Rust original's text format or as JSON lines.
 * Decision lines carry only metadata (addresses, names, reasons, byte counts), never payload.
 * @module
 */

import { configure, dispose, getLogger, type Logger, type LogRecord } from "@logtape/logtape";
import { LEVELS, type LogLevel } from "./config.ts";
import { type LineWriter, queuedSink } from "./log_sink.ts";

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

const LEVEL_WORD: Record<string, string> = {
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

function renderMessage(record: LogRecord): string {
  // logtape alternates template text (even indexes) and values (odd indexes).
  return record.message.map((part, i) => i % 2 === 0 ? String(part) : formatValue(part)).join("");
}

/** The fields of an event line, text form: `ALLOWED HTTP peer=… dst=… host=…`. */
function eventText(props: Record<string, unknown>): string {
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

function textTime(timestamp: number): string {
  return secondText(timestamp) + "Z";
}

/** As `Date.prototype.toISOString`, with the date formatted once per second. */
function isoTime(timestamp: number): string {
  const millis = timestamp - Math.floor(timestamp / 1000) * 1000;
  return `${secondText(timestamp)}.${String(millis).padStart(3, "0")}Z`;
}

/** `2026-04-23T10:00:01Z INFO ALLOWED HTTP peer=… dst=… host=…` */
export function formatTextLine(record: LogRecord): string {
  const props = record.properties as Record<string, unknown>;
  let line = `${textTime(record.timestamp)} ${
    LEVEL_WORD[record.level] ?? record.level.toUpperCase()
  } `;
  if (typeof props.event === "string") line += eventText(props);
  else {
    line += renderMessage(record);
    // Properties the message already shows are not repeated.
    const template = typeof record.rawMessage === "string" ? record.rawMessage : "";
    for (const [key, value] of Object.entries(props)) {
      if (value !== undefined && !template.includes(`{${key}}`)) {
        line += ` ${key}=${formatValue(value)}`;
      }
    }
  }
  return line + "\n";
}

function jsonObject(
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

/** The same fields as one JSON object per line. */
export function formatJsonLine(record: LogRecord): string {
  const props = record.properties as Record<string, unknown>;
  const level = LEVEL_WORD[record.level] ?? record.level.toUpperCase();
  const message = typeof props.event === "string" ? undefined : renderMessage(record);
  return jsonObject(record.timestamp, level, message, props);
}

/** The project's logger; everything logs through it. */
export const log: Logger = getLogger(["proxy-please"]);

/**
 * Where decision lines go once `setupLogging` has run: formatted straight from the fields
 * into the stdout queue, skipping logtape's record building (two lines per connection are
 * the proxy's hottest logging path). Null: through logtape (tests, or INFO filtered out).
 */
let eventLine: ((fields: EventFields, at: number) => void) | null = null;

/**
 * Logs one decision or closing line at INFO. `at`: when it happened (ms since the epoch), for
 * a line written later than that (the relay thread reports in batches); logtape's own path,
 * before `setupLogging`, stamps the time it is called.
 */
export function logEvent(fields: EventFields, at: number = Date.now()): void {
  if (eventLine !== null) eventLine(fields, at);
  else log.info("{event} {proto}", fields as unknown as Record<string, unknown>);
}

/**
 * Sends the logger to stdout (or `writer`) in the chosen format, through a queue written by one
 * async writer: a slow reader of stdout never stalls the relay, and a burst loses no line.
 */
export async function setupLogging(
  level: LogLevel,
  format: "text" | "json",
  writer: LineWriter = Deno.stdout,
): Promise<void> {
  const sink = queuedSink(writer, format === "json" ? formatJsonLine : formatTextLine);
  await configure({
    reset: true,
    sinks: { stdout: sink },
    loggers: [
      { category: ["proxy-please"], lowestLevel: level, sinks: ["stdout"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stdout"] },
    ],
  });
  const props = (fields: EventFields) => fields as unknown as Record<string, unknown>;
  eventLine = LEVELS.indexOf(level) > LEVELS.indexOf("info")
    ? () => {}
    : format === "json"
    ? (fields, at) => sink.enqueue(jsonObject(at, "INFO", undefined, props(fields)))
    : (fields, at) => sink.enqueue(`${textTime(at)} INFO ${eventText(props(fields))}\n`);
}

/** Writes out queued lines and detaches the sinks. */
export async function closeLogging(): Promise<void> {
  eventLine = null;
  await dispose();
}
