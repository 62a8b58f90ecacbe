/**
 * Logging: one line per event to stdout, in the Rust original's text format or as JSON lines.
 * Decision lines carry only metadata (addresses, names, reasons, byte counts), never payload.
 * @module
 */

import { configure, dispose, getLogger, type Logger, type LogRecord } from "@logtape/logtape";
import { LEVELS, type LogLevel } from "./config.ts";
import { type LineWriter, type QueuedSink, queuedSink } from "./log_sink.ts";
import {
  type EventFields,
  eventLine,
  EventLines,
  formatValue,
  jsonObject,
  LEVEL_WORD,
  type LineFormat,
  textTime,
} from "./log_line.ts";

function renderMessage(record: LogRecord): string {
  // logtape alternates template text (even indexes) and values (odd indexes).
  return record.message.map((part, i) => i % 2 === 0 ? String(part) : formatValue(part)).join("");
}

/** `2026-04-23T10:00:01Z INFO ALLOWED HTTP peer=… dst=… host=…` */
export function formatTextLine(record: LogRecord): string {
  const props = record.properties as Record<string, unknown>;
  const level = LEVEL_WORD[record.level] ?? record.level.toUpperCase();
  if (typeof props.event === "string") {
    return eventLine(props as unknown as EventFields, record.timestamp, "text", level);
  }
  let line = `${textTime(record.timestamp)} ${level} ${renderMessage(record)}`;
  // Properties the message already shows are not repeated.
  const template = typeof record.rawMessage === "string" ? record.rawMessage : "";
  for (const [key, value] of Object.entries(props)) {
    if (value !== undefined && !template.includes(`{${key}}`)) {
      line += ` ${key}=${formatValue(value)}`;
    }
  }
  return line + "\n";
}

/** The same fields as one JSON object per line. */
export function formatJsonLine(record: LogRecord): string {
  const props = record.properties as Record<string, unknown>;
  const level = LEVEL_WORD[record.level] ?? record.level.toUpperCase();
  if (typeof props.event === "string") {
    return eventLine(props as unknown as EventFields, record.timestamp, "json", level);
  }
  return jsonObject(record.timestamp, level, renderMessage(record), props);
}

/** The project's logger; everything logs through it. */
export const log: Logger = getLogger(["proxy-please"]);

/**
 * Where decision lines go once `setupLogging` has run: formatted straight from the fields
 * into the stdout queue, skipping logtape's record building (two lines per connection are
 * the proxy's hottest logging path), in `format` (null: INFO is filtered out). Null before
 * that: through logtape (tests).
 */
let events: { sink: QueuedSink; lines: EventLines | null } | null = null;

/**
 * Logs one decision or closing line at INFO. `at`: when it happened (ms since the epoch);
 * logtape's own path, before `setupLogging`, stamps the time it is called.
 */
export function logEvent(fields: EventFields, at: number = Date.now()): void {
  if (events === null) log.info("{event} {proto}", fields as unknown as Record<string, unknown>);
  else if (events.lines !== null) {
    events.lines.write(fields, at);
    events.sink.enqueue(events.lines.take());
  }
}

/**
 * The form decision lines are written in once `setupLogging` has run, for whoever formats
 * them elsewhere (the relay thread); null when none are written, or logging is not set up.
 */
export function eventLineFormat(): LineFormat | null {
  return events?.lines?.format ?? null;
}

/** Writes `count` decision lines formatted elsewhere (the relay thread), given as one text. */
export function logLines(text: string | Uint8Array, count: number): void {
  events?.sink.enqueue(text, count);
}

/**
 * Sends the logger to stdout (or `writer`) in the chosen format, through a queue written by one
 * async writer: a slow reader of stdout never stalls the relay, and a burst loses no line.
 */
export async function setupLogging(
  level: LogLevel,
  format: LineFormat,
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
  const quiet = LEVELS.indexOf(level) > LEVELS.indexOf("info");
  events = { sink, lines: quiet ? null : new EventLines(format) };
}

/** Writes out queued lines and detaches the sinks. */
export async function closeLogging(): Promise<void> {
  events = null;
  await dispose();
}
