/**
 * Incremental HTTP/1.x request framing tracker for the client→server byte
 * stream, so that every request on a kept-alive or pipelined connection has
 * its Host checked, not just the first one.
 *
 * The tracker sees bytes as the relay reads them and splits the stream into
 * request heads (held until the caller decides), body bytes (Content-Length
 * or chunked, forwarded at once) and, after a request that switches protocols
 * (`Upgrade:` or `CONNECT`), opaque bytes. Framing it cannot interpret with
 * certainty is reported as invalid: request smuggling must not carry a second
 * Host past the check.
 *
 * ## How a relay uses it
 *
 * ```ts
 * const tracker = new RequestFramingTracker();
 * for (const ev of tracker.push(chunk)) {
 *   if (ev.type === "data") await upstream.write(ev.bytes);
 *   else if (ev.type === "head") {
 *     if (!allowed(ev.head)) { answer403(); close(); break; }
 *     await upstream.write(ev.bytes);
 *   } else if (ev.type === "invalid") { close(); break; }
 *   // "opaque": nothing to do; the following events are all "data".
 * }
 * ```
 *
 * Events come in stream order; the `bytes` of all `data` and `head` events of
 * a push, concatenated, are exactly the input up to the point of an `invalid`
 * event (or all of it). A head's bytes are never reported as `data`, so the
 * relay can forward everything up to a new head and hold that head until it
 * is decided. `data` and single-chunk `head` bytes are views into the pushed
 * chunk: write them out before reusing that buffer. A head that spans pushes
 * is copied into a buffer of at most `maxHeadBytes`; nothing else is buffered.
 *
 * ## Strictness (deny on doubt)
 *
 * Invalid: bare LF or bare CR anywhere in a head or chunk framing, obs-fold,
 * an empty line before the request line, control characters, a request line
 * that is not `token SP target SP HTTP/1.0|HTTP/1.1`, a header line without
 * `name:`, Content-Length together with Transfer-Encoding, more than one
 * Content-Length or Transfer-Encoding or Host field, a Content-Length that is
 * not 1-15 digits, any Transfer-Encoding other than exactly `chunked` (so also
 * `gzip, chunked`, which some servers frame differently) or any
 * Transfer-Encoding on HTTP/1.0, an absolute-form or authority-form target
 * whose host differs from the Host field, chunk sizes that are not 1-16 hex
 * digits or exceed 2^53-1, chunk extensions other than `;name` or
 * `;name=token` (no whitespace, no quoted strings), chunk lines over 4096
 * bytes, chunk data not followed by CRLF, malformed trailers, trailers named
 * Host/Content-Length/Transfer-Encoding/Upgrade/Connection, trailer sections
 * larger than `maxHeadBytes`, and heads larger than `maxHeadBytes` (431).
 *
 * ## Protocol switches
 *
 * The tracker only sees the client side and never parses response bodies, so
 * it cannot itself see whether a `101 Switching Protocols` (or a `2xx` to
 * `CONNECT`) happened. With `awaitSwitch` (what the proxy uses) it reports a
 * `switch` event after such a head, hands back what the client sends next as
 * `held`, and waits for the caller, who watches the start of the server's
 * answer, to call `switched(true)` (opaque from then on) or `switched(false)`
 * (framing resumes and the held bytes are pushed again). A switch request
 * with a body is refused. Without `awaitSwitch` the stream goes opaque right
 * after the head: simpler, but a client could follow a refused upgrade with
 * requests that are never checked.
 *
 * Every complete head is checked twice: by `parseHttpHead` (the same parser
 * that decides a connection's first request, so reasons and Host semantics
 * agree; its `host` is what {@link RequestHead.host} reports) and by this
 * module's own framing scan, which is stricter still about framing. A head
 * must pass both.
 *
 * @module
 */

import {
  type HttpHeadReason,
  type HttpHeadResult,
  MAX_HEAD_BYTES,
  nameIs,
  parseHttpHead,
  TCHAR,
} from "./http_head.ts";
import { latin1 } from "./latin1.ts";

/** Default bound for a request head, in bytes (also the most `parseHttpHead` accepts). */
export const DEFAULT_MAX_HEAD_BYTES = MAX_HEAD_BYTES;
/** Longest accepted chunk-size line (size, extensions and CRLF). */
export const MAX_CHUNK_LINE_BYTES = 4096;

/** A complete request head, as seen at a request boundary. */
export interface RequestHead {
  /** Request method, e.g. `GET`. */
  method: string;
  /** Request target exactly as sent. */
  target: string;
  /** Protocol version. */
  version: "HTTP/1.0" | "HTTP/1.1";
  /**
   * The Host as `parseHttpHead` reports it: port and IPv6 brackets removed,
   * NOT normalized (run `normalizeHostname` and the policy on it). A head
   * without a usable Host is reported as `invalid` with reason `no_host`.
   */
  host: string;
  /** Stream offset of the head's first byte. */
  offset: number;
  /** Length of the head in bytes, final CRLFCRLF included. */
  length: number;
  /** How the request body is framed. */
  body: "none" | "length" | "chunked";
  /** Body length when `body` is `"length"`, else 0. */
  contentLength: number;
  /** True for `Upgrade` requests and `CONNECT`: everything after the head is opaque. */
  opaqueAfter: boolean;
}

/** Why a stream was found invalid; see the module doc for the rules. */
export type FramingInvalidReason =
  | "bare_lf"
  | "bare_cr"
  | "obs_fold"
  | "empty_line_before_request"
  | "head_too_large"
  | "bad_request_line"
  | "unsupported_version"
  | "bad_header"
  | "multiple_content_length"
  | "bad_content_length"
  | "multiple_transfer_encoding"
  | "unsupported_transfer_encoding"
  | "content_length_and_transfer_encoding"
  | "multiple_host"
  | "host_mismatch"
  | "bad_chunk_size"
  | "chunk_size_overflow"
  | "bad_chunk_extension"
  | "chunk_line_too_long"
  | "bad_chunk_terminator"
  | "bad_trailer"
  | "forbidden_trailer"
  | "trailer_too_large"
  | "switch_with_body";

/** Reasons of `invalid` events: this module's framing reasons or `parseHttpHead`'s. */
export type TrackerInvalidReason = FramingInvalidReason | HttpHeadReason;

/** One step of the tracker's output; see the module doc. */
export type FramingEvent =
  | {
    /** Bytes that may be forwarded now (body, chunk framing, opaque data). */
    type: "data";
    bytes: Uint8Array;
  }
  | {
    /** A complete request head: decide, then forward `bytes` or close. */
    type: "head";
    head: RequestHead;
    bytes: Uint8Array;
  }
  | {
    /** From here on the stream is not HTTP; all further events are `data`. */
    type: "opaque";
  }
  | {
    /**
     * With `awaitSwitch`: an `Upgrade`/`CONNECT` head was reported; call `switched()` once
     * the server's answer is known. Bytes pushed meanwhile come back as `held`.
     */
    type: "switch";
  }
  | {
    /** Bytes after a `switch`, not yet framed: keep them until `switched()`, then re-push. */
    type: "held";
    bytes: Uint8Array;
  }
  | {
    /** Terminal: close the connection; `status` is the answer if one is still possible. */
    type: "invalid";
    reason: TrackerInvalidReason;
    status: 400 | 431;
    /** Stream offset of the offending byte (or of the head start for head-level errors). */
    offset: number;
  };

/** Options for {@link RequestFramingTracker}. */
export interface FramingOptions {
  /** Largest request head (and trailer section) accepted; default 8192. */
  maxHeadBytes?: number;
  /**
   * After an `Upgrade` or `CONNECT` head, wait for the caller to say whether the server
   * switched protocols (`switched()`), instead of going opaque at once. Default false.
   */
  awaitSwitch?: boolean;
  /**
   * What `parseHttpHead` said of the stream's first bytes, when the caller has it already
   * (the connection was decided on it): the first head is then not parsed by it again. Only a
   * complete head is taken, and it must be exactly as long as the head the tracker finds.
   */
  firstHead?: HttpHeadResult;
}

type InvalidEvent = Extract<FramingEvent, { type: "invalid" }>;

// Parser states. Numbers rather than strings keep the per-byte loop cheap.
const S_HEAD = 0;
const S_BODY_LENGTH = 1;
const S_CHUNK_SIZE_START = 2;
const S_CHUNK_SIZE = 3;
const S_EXT_NAME_START = 4;
const S_EXT_NAME = 5;
const S_EXT_VALUE_START = 6;
const S_EXT_VALUE = 7;
const S_CHUNK_SIZE_LF = 8;
const S_CHUNK_DATA = 9;
const S_CHUNK_DATA_CR = 10;
const S_CHUNK_DATA_LF = 11;
const S_TRAILER_LINE_START = 12;
const S_TRAILER_NAME = 13;
const S_TRAILER_VALUE = 14;
const S_TRAILER_LINE_LF = 15;
const S_TRAILER_END_LF = 16;
const S_OPAQUE = 17;
const S_INVALID = 18;
const S_SWITCH = 19;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;

/** Hex digit values, or 255. */
const HEX = new Uint8Array(256).fill(255);
for (let i = 0; i < 16; i++) {
  HEX["0123456789abcdef".charCodeAt(i)] = i;
  HEX["0123456789ABCDEF".charCodeAt(i)] = i;
}

/** Trailer names that must never appear: they would matter if a server merged trailers into the head. */
const FORBIDDEN_TRAILERS = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "upgrade",
  "connection",
]);

const MAX_SAFE_DIV_16 = Math.floor(Number.MAX_SAFE_INTEGER / 16);

/**
 * Incremental request-framing state machine for one client→server stream.
 * Feed every byte the client sends, in order, to {@link push}.
 */
export class RequestFramingTracker {
  readonly #maxHeadBytes: number;
  readonly #awaitSwitch: boolean;
  /** The caller's verdict on the first head, until that head is reached. */
  #firstHead: HttpHeadResult | null;
  #state = S_HEAD;
  /** Stream offset of the first byte of the next push. */
  #streamOffset = 0;
  /** Head bytes seen so far (spanning pushes when `#headBuf` holds the earlier ones). */
  #headLen = 0;
  /** Bytes of the current head held in `#headBuf` from earlier pushes. */
  #headBuffered = 0;
  #headBuf: Uint8Array | null = null;
  /** End-of-line state while scanning a head: 0 in a line, 1 after CR, 2 after CRLF, 3 after CRLF CR. */
  #eol = 2;
  #remaining = 0;
  #chunkDigits = 0;
  #lineBytes = 0;
  #trailerBytes = 0;
  #trailerName = "";
  #invalid: InvalidEvent | null = null;

  /** Creates a tracker positioned at the start of a request. */
  constructor(opts: FramingOptions = {}) {
    const max = opts.maxHeadBytes ?? DEFAULT_MAX_HEAD_BYTES;
    if (!Number.isInteger(max) || max < 16 || max > MAX_HEAD_BYTES) {
      throw new RangeError(`maxHeadBytes must be an integer in 16..${MAX_HEAD_BYTES}, got ${max}`);
    }
    this.#maxHeadBytes = max;
    this.#awaitSwitch = opts.awaitSwitch ?? false;
    this.#firstHead = opts.firstHead?.kind === "head" ? opts.firstHead : null;
  }

  /**
   * With `awaitSwitch`: the server's answer to the `Upgrade`/`CONNECT` request. `true`
   * (101, or 2xx to CONNECT) makes the stream opaque; `false` resumes request framing, and
   * the caller pushes the `held` bytes again.
   */
  switched(upgraded: boolean): void {
    if (this.#state !== S_SWITCH) return;
    this.#state = upgraded ? S_OPAQUE : S_HEAD;
  }

  /** True while waiting for the server's answer to an `Upgrade`/`CONNECT` request. */
  get awaitingSwitch(): boolean {
    return this.#state === S_SWITCH;
  }

  /** True at a request boundary with nothing held: a good moment to close an idle connection. */
  get idle(): boolean {
    return this.#state === S_HEAD && this.#headLen === 0;
  }

  /** True once the stream has become opaque (after an Upgrade or CONNECT head). */
  get opaque(): boolean {
    return this.#state === S_OPAQUE;
  }

  /** Total bytes pushed so far. */
  get offset(): number {
    return this.#streamOffset;
  }

  /**
   * Consumes the next bytes of the client→server stream and returns what the
   * relay may do with them, in order. After an `invalid` event every further
   * push returns that same event again and consumes nothing.
   */
  push(chunk: Uint8Array): FramingEvent[] {
    if (this.#invalid !== null) return [this.#invalid];
    const events: FramingEvent[] = [];
    const n = chunk.length;
    let i = 0;
    let dataStart = 0;
    const flush = (end: number) => {
      if (end > dataStart) events.push({ type: "data", bytes: chunk.subarray(dataStart, end) });
      dataStart = end;
    };
    // Head-level errors never flush: the head's bytes must not leak out as data.
    const fail = (
      reason: FramingInvalidReason,
      at: number,
      status: 400 | 431 = 400,
      inHead = false,
    ) => {
      if (!inHead) flush(at);
      this.#invalid = { type: "invalid", reason, status, offset: this.#streamOffset + at };
      this.#state = S_INVALID;
      events.push(this.#invalid);
      this.#headBuf = null;
      return events;
    };

    while (i < n) {
      const state = this.#state;
      if (state === S_OPAQUE) {
        i = n;
      } else if (state === S_SWITCH) {
        // Not ours to frame yet: the caller holds these until the server has answered.
        flush(i);
        events.push({ type: "held", bytes: chunk.subarray(i, n) });
        dataStart = i = n;
      } else if (state === S_BODY_LENGTH || state === S_CHUNK_DATA) {
        const take = Math.min(this.#remaining, n - i);
        i += take;
        this.#remaining -= take;
        if (this.#remaining === 0) this.#state = state === S_BODY_LENGTH ? S_HEAD : S_CHUNK_DATA_CR;
      } else if (state === S_HEAD) {
        if (this.#headLen === 0) flush(i);
        const start = i;
        // Scan for the CRLFCRLF that ends the head, rejecting bare CR/LF on the way.
        let done = false;
        while (i < n) {
          const b = chunk[i];
          this.#headLen++;
          if (this.#headLen > this.#maxHeadBytes) {
            return fail("head_too_large", i + 1 - this.#headLen, 431, true);
          }
          i++;
          if (b === CR) {
            if (this.#eol === 1 || this.#eol === 3) return fail("bare_cr", i - 1, 400, true);
            this.#eol = this.#eol === 2 ? 3 : 1;
          } else if (b === LF) {
            if (this.#eol === 3) {
              done = true;
              break;
            }
            if (this.#eol !== 1) return fail("bare_lf", i - 1, 400, true);
            this.#eol = 2;
          } else {
            if (this.#eol === 1 || this.#eol === 3) return fail("bare_cr", i - 2, 400, true);
            this.#eol = 0;
          }
        }
        if (!done) {
          this.#bufferHead(chunk.subarray(start, n));
          dataStart = n;
          break;
        }
        let bytes: Uint8Array;
        if (this.#headBuffered === 0) {
          bytes = chunk.subarray(start, i);
        } else {
          this.#bufferHead(chunk.subarray(start, i));
          bytes = this.#headBuf!.slice(0, this.#headLen);
          // Heads rarely span reads; a kept-alive connection should not hold 8 KiB for it.
          this.#headBuf = null;
        }
        const headOffset = this.#streamOffset + i - this.#headLen;
        this.#headLen = 0;
        this.#headBuffered = 0;
        this.#eol = 2;
        dataStart = i;
        const verdict = this.#firstHead ?? parseHttpHead(bytes);
        this.#firstHead = null;
        const parsed = parseRequestHead(bytes, headOffset);
        let failure: { reason: TrackerInvalidReason; status: 400 | 431 } | null = null;
        if (verdict.kind === "invalid") failure = verdict;
        else if (verdict.kind === "incomplete" || verdict.headLength !== bytes.length) {
          failure = { reason: "malformed", status: 400 }; // the parsers disagree: deny
        } else if ("reason" in parsed) failure = { reason: parsed.reason, status: 400 };
        else parsed.host = verdict.host;
        if (failure !== null || "reason" in parsed) {
          this.#invalid = {
            type: "invalid",
            reason: failure?.reason ?? "malformed",
            status: failure?.status ?? 400,
            offset: headOffset,
          };
          this.#state = S_INVALID;
          this.#headBuf = null;
          events.push(this.#invalid);
          return events;
        }
        events.push({ type: "head", head: parsed, bytes });
        if (parsed.opaqueAfter && this.#awaitSwitch) {
          if (parsed.body === "chunked" || parsed.contentLength > 0) {
            // A body would have to be framed before the switch: refuse the ambiguity.
            events.pop();
            return fail("switch_with_body", headOffset - this.#streamOffset, 400, true);
          }
          events.push({ type: "switch" });
          this.#state = S_SWITCH;
        } else if (parsed.opaqueAfter) {
          events.push({ type: "opaque" });
          this.#state = S_OPAQUE;
        } else if (parsed.body === "length" && parsed.contentLength > 0) {
          this.#remaining = parsed.contentLength;
          this.#state = S_BODY_LENGTH;
        } else if (parsed.body === "chunked") {
          this.#state = S_CHUNK_SIZE_START;
          this.#chunkDigits = 0;
          this.#lineBytes = 0;
          this.#remaining = 0;
        }
      } else {
        // Chunk framing and trailers: one byte at a time, nothing buffered.
        const reason = this.#chunkByte(chunk[i]);
        if (reason !== null) return fail(reason, i);
        i++;
      }
    }
    flush(n);
    this.#streamOffset += n;
    return events;
  }

  #bufferHead(part: Uint8Array): void {
    if (part.length === 0) return;
    this.#headBuf ??= new Uint8Array(this.#maxHeadBytes);
    this.#headBuf.set(part, this.#headBuffered);
    this.#headBuffered += part.length;
  }

  /** Advances the chunked-body state machine by one byte; returns a reason on error. */
  #chunkByte(b: number): FramingInvalidReason | null {
    switch (this.#state) {
      case S_CHUNK_SIZE_START:
      case S_CHUNK_SIZE:
      case S_EXT_NAME_START:
      case S_EXT_NAME:
      case S_EXT_VALUE_START:
      case S_EXT_VALUE:
      case S_CHUNK_SIZE_LF:
        if (++this.#lineBytes > MAX_CHUNK_LINE_BYTES) return "chunk_line_too_long";
    }
    switch (this.#state) {
      case S_CHUNK_SIZE_START:
      case S_CHUNK_SIZE: {
        const v = HEX[b];
        if (v !== 255) {
          if (++this.#chunkDigits > 16 || this.#remaining > MAX_SAFE_DIV_16) {
            return "chunk_size_overflow";
          }
          this.#remaining = this.#remaining * 16 + v;
          this.#state = S_CHUNK_SIZE;
          return null;
        }
        if (this.#state === S_CHUNK_SIZE_START) return "bad_chunk_size";
        if (b === CR) this.#state = S_CHUNK_SIZE_LF;
        else if (b === 0x3b /* ; */) this.#state = S_EXT_NAME_START;
        else return "bad_chunk_size";
        return null;
      }
      case S_EXT_NAME_START:
      case S_EXT_VALUE_START:
        if (!TCHAR[b]) return "bad_chunk_extension";
        this.#state = this.#state === S_EXT_NAME_START ? S_EXT_NAME : S_EXT_VALUE;
        return null;
      case S_EXT_NAME:
      case S_EXT_VALUE:
        if (TCHAR[b]) return null;
        if (b === CR) this.#state = S_CHUNK_SIZE_LF;
        else if (b === 0x3b) this.#state = S_EXT_NAME_START;
        else if (b === 0x3d /* = */ && this.#state === S_EXT_NAME) this.#state = S_EXT_VALUE_START;
        else return "bad_chunk_extension";
        return null;
      case S_CHUNK_SIZE_LF:
        if (b !== LF) return "bad_chunk_size";
        this.#chunkDigits = 0;
        this.#lineBytes = 0;
        if (this.#remaining === 0) {
          this.#state = S_TRAILER_LINE_START;
          this.#trailerBytes = 0;
        } else {
          this.#state = S_CHUNK_DATA;
        }
        return null;
      case S_CHUNK_DATA_CR:
        if (b !== CR) return "bad_chunk_terminator";
        this.#state = S_CHUNK_DATA_LF;
        return null;
      case S_CHUNK_DATA_LF:
        if (b !== LF) return "bad_chunk_terminator";
        this.#state = S_CHUNK_SIZE_START;
        return null;
    }
    // Trailer section.
    if (++this.#trailerBytes > this.#maxHeadBytes) return "trailer_too_large";
    switch (this.#state) {
      case S_TRAILER_LINE_START:
        if (b === CR) this.#state = S_TRAILER_END_LF;
        else if (b === SP || b === HTAB) return "obs_fold";
        else if (TCHAR[b]) {
          this.#trailerName = String.fromCharCode(b | 0x20);
          this.#state = S_TRAILER_NAME;
        } else return b === LF ? "bare_lf" : "bad_trailer";
        return null;
      case S_TRAILER_NAME:
        if (TCHAR[b]) {
          // Only names short enough to be a forbidden one need remembering.
          if (this.#trailerName.length < 32) this.#trailerName += String.fromCharCode(b | 0x20);
          else this.#trailerName = "~";
          return null;
        }
        if (b !== 0x3a /* : */) return b === LF ? "bare_lf" : "bad_trailer";
        if (FORBIDDEN_TRAILERS.has(this.#trailerName)) return "forbidden_trailer";
        this.#state = S_TRAILER_VALUE;
        return null;
      case S_TRAILER_VALUE:
        if (b === CR) this.#state = S_TRAILER_LINE_LF;
        else if (b === LF) return "bare_lf";
        else if ((b < SP && b !== HTAB) || b === 0x7f) return "bad_trailer";
        return null;
      case S_TRAILER_LINE_LF:
        if (b !== LF) return "bare_cr";
        this.#state = S_TRAILER_LINE_START;
        return null;
      case S_TRAILER_END_LF:
        if (b !== LF) return "bare_cr";
        this.#state = S_HEAD;
        return null;
    }
    return "bad_chunk_size"; // unreachable: every state is handled above
  }
}

/**
 * The tracker's own framing scan of one complete request head (ending in
 * CRLFCRLF): a {@link RequestHead} (its `host` is the raw Host value, or the
 * target's authority, or "") or the reason it is invalid. The tracker also
 * runs `parseHttpHead` on every head; this scan adds framing facts (body
 * kind, Content-Length, Upgrade) and stricter framing rules.
 */
export function parseRequestHead(
  bytes: Uint8Array,
  offset = 0,
): RequestHead | { reason: FramingInvalidReason } {
  for (let k = 0; k < bytes.length; k++) {
    const b = bytes[k];
    if ((b < SP && b !== HTAB && b !== CR && b !== LF) || b === 0x7f) {
      return { reason: "bad_header" };
    }
    if (b === LF && (k === 0 || bytes[k - 1] !== CR)) return { reason: "bare_lf" };
    if (b === CR && bytes[k + 1] !== LF) return { reason: "bare_cr" };
  }
  if (bytes.length < 4 || bytes[bytes.length - 4] !== CR || bytes[bytes.length - 1] !== LF) {
    return { reason: "bad_request_line" };
  }
  // Lines are scanned in the bytes (every CR is followed by LF, checked above); only the
  // request line and the values of the few headers that matter become strings.
  const end = bytes.length - 4;
  const requestEnd = lineEnd(bytes, 0, end);
  if (requestEnd === 0) return { reason: "empty_line_before_request" };
  const line = requestLine(bytes, requestEnd);
  if (typeof line === "string") return { reason: line };
  const { method, target, version } = line;

  let host: string | null = null;
  let contentLength: number | null = null;
  let chunked = false;
  let sawTe = false;
  let upgrade = false;
  // The header lines, each up to its CR; none when the request line runs to `end`.
  let next = requestEnd + 2;
  while (next <= end) {
    const start = next;
    const stop = lineEnd(bytes, start, end);
    next = stop + 2;
    const c0 = bytes[start];
    if (start < stop && (c0 === SP || c0 === HTAB)) return { reason: "obs_fold" };
    let colon = start;
    while (colon < stop && bytes[colon] !== 0x3a /* : */) colon++;
    if (colon === stop || colon === start) return { reason: "bad_header" };
    for (let j = start; j < colon; j++) if (!TCHAR[bytes[j]]) return { reason: "bad_header" };
    const field = fieldIndex(bytes, start, colon);
    if (field < 0) continue;
    // Optional whitespace is SP and HTAB only (String.trim would also take latin1's NBSP).
    let from = colon + 1, to = stop;
    while (from < to && isOws(bytes[from])) from++;
    while (to > from && isOws(bytes[to - 1])) to--;
    const value = latin1(bytes, from, to);
    switch (FIELD_NAMES[field]) {
      case "host":
        if (host !== null) return { reason: "multiple_host" };
        host = value;
        break;
      case "content-length":
        if (contentLength !== null) return { reason: "multiple_content_length" };
        if (!/^[0-9]{1,15}$/.test(value)) return { reason: "bad_content_length" };
        contentLength = Number(value);
        break;
      case "transfer-encoding":
        if (sawTe) return { reason: "multiple_transfer_encoding" };
        sawTe = true;
        if (value.toLowerCase() !== "chunked") return { reason: "unsupported_transfer_encoding" };
        chunked = true;
        break;
      case "upgrade":
        upgrade = true;
        break;
    }
  }
  if (sawTe && contentLength !== null) return { reason: "content_length_and_transfer_encoding" };
  if (sawTe && version === "HTTP/1.0") return { reason: "unsupported_transfer_encoding" };

  const isConnect = method === "CONNECT";
  const targetHost = targetAuthority(method, target);
  if (targetHost === "") return { reason: "bad_request_line" };
  if (targetHost !== null) {
    if (host === null) host = targetHost;
    else if (hostPart(host) !== hostPart(targetHost)) return { reason: "host_mismatch" };
  }

  return {
    method,
    target,
    version,
    host: host ?? "",
    offset,
    length: bytes.length,
    body: chunked ? "chunked" : contentLength !== null ? "length" : "none",
    contentLength: contentLength ?? 0,
    opaqueAfter: upgrade || isConnect,
  };
}

/** The authority of an absolute-form or authority-form target, `null` for other forms, "" if malformed. */
function targetAuthority(method: string, target: string): string | null {
  if (method === "CONNECT") return target;
  if (target.charCodeAt(0) === 0x2f) return null; // origin-form, nearly every request
  const m = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)/.exec(target);
  if (m === null) return null;
  const authority = m[1];
  if (authority.includes("@")) return ""; // userinfo: refuse rather than guess which part is the host
  return authority;
}

/** Where the line starting at `from` ends: its CR, or `end` (the head's final CRLFCRLF). */
function lineEnd(bytes: Uint8Array, from: number, end: number): number {
  const cr = bytes.indexOf(CR, from);
  return cr < 0 || cr > end ? end : cr;
}

/**
 * The request line `bytes[0, end)`: `method SP target SP HTTP/d.d`, the method a token, the
 * target visible ASCII; the reason it is refused otherwise.
 */
function requestLine(
  bytes: Uint8Array,
  end: number,
):
  | { method: string; target: string; version: "HTTP/1.0" | "HTTP/1.1" }
  | "bad_request_line"
  | "unsupported_version" {
  let sp = 0;
  while (sp < end && TCHAR[bytes[sp]]) sp++;
  if (sp === 0 || sp === end || bytes[sp] !== SP) return "bad_request_line";
  let sp2 = sp + 1;
  while (sp2 < end && bytes[sp2] >= 0x21 && bytes[sp2] <= 0x7e) sp2++;
  if (sp2 === sp + 1 || sp2 === end || bytes[sp2] !== SP || end - sp2 !== 9) {
    return "bad_request_line";
  }
  const v = sp2 + 1;
  for (let k = 0; k < 5; k++) if (bytes[v + k] !== HTTP_SLASH[k]) return "bad_request_line";
  const major = bytes[v + 5], dot = bytes[v + 6], minor = bytes[v + 7];
  if (!isDigit(major) || dot !== 0x2e || !isDigit(minor)) return "bad_request_line";
  if (major !== 0x31 || (minor !== 0x30 && minor !== 0x31)) return "unsupported_version";
  return {
    method: latin1(bytes, 0, sp),
    target: latin1(bytes, sp + 1, sp2),
    version: minor === 0x30 ? "HTTP/1.0" : "HTTP/1.1",
  };
}

const HTTP_SLASH = [0x48, 0x54, 0x54, 0x50, 0x2f];

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

/** The header fields whose values the framing scan reads; every other one is only checked. */
const FIELD_NAMES = ["host", "content-length", "transfer-encoding", "upgrade"] as const;

/** Which of FIELD_NAMES the tchar name `bytes[start, end)` is, in any case; -1 for none. */
function fieldIndex(bytes: Uint8Array, start: number, end: number): number {
  for (let f = 0; f < FIELD_NAMES.length; f++) {
    if (nameIs(bytes, start, end, FIELD_NAMES[f])) return f;
  }
  return -1;
}

function isOws(c: number): boolean {
  return c === SP || c === HTAB;
}

/** Lowercased host without port, for comparing Host with a target's authority. */
function hostPart(hostPort: string): string {
  const h = hostPort.toLowerCase();
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    return end < 0 ? h : h.slice(0, end + 1);
  }
  const colon = h.lastIndexOf(":");
  const name = colon < 0 ? h : h.slice(0, colon);
  return name.endsWith(".") ? name.slice(0, -1) : name;
}

/**
 * Runs a whole stream (given as one buffer or as the chunks it arrived in)
 * through a fresh tracker and returns all events. For tests and tools.
 */
export function scanRequestStream(
  input: Uint8Array | readonly Uint8Array[],
  opts: FramingOptions = {},
): FramingEvent[] {
  const tracker = new RequestFramingTracker(opts);
  const chunks = input instanceof Uint8Array ? [input] : input;
  const events: FramingEvent[] = [];
  for (const c of chunks) {
    const evs = tracker.push(c);
    events.push(...evs);
    if (evs.some((e) => e.type === "invalid")) break;
  }
  return events;
}
