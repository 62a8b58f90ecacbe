/**
 * A strict, bounded parser for the head of an HTTP/1.x request (request line
 * and header fields, RFC 9110/9112), enough to decide policy on the Host and
 * to refuse anything a downstream server might read differently than we do.
 *
 * @module
 */

import { latin1 } from "./latin1.ts";

/** The most head bytes we wait for; a request whose head does not end within them gets 431. */
export const MAX_HEAD_BYTES = 8192;

/** Why a request head was refused (snake_case, used as the log `reason`). */
export type HttpHeadReason =
  | "no_host"
  | "multiple_host"
  | "host_mismatch"
  | "malformed"
  | "ambiguous_framing"
  | "http2_prior_knowledge"
  | "too_large"
  | "bad_host_port";

/**
 * Result of {@linkcode parseHttpHead}: wait for more bytes, a parsed head, or a
 * refusal with the status to answer. `host` is the Host header's host with the
 * port and IPv6 brackets removed and is NOT normalised: the caller runs
 * `normalizeHostname` (with `allowUnicode: false`) and the policy on it.
 * `headLength` is the byte length of the head including the final CRLFCRLF.
 */
export type HttpHeadResult =
  | { kind: "incomplete" }
  | {
    kind: "head";
    method: string;
    target: string;
    version: "HTTP/1.0" | "HTTP/1.1";
    host: string;
    headLength: number;
  }
  | { kind: "invalid"; reason: HttpHeadReason; status: 400 | 431 };

type Invalid = Extract<HttpHeadResult, { kind: "invalid" }>;

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HT = 0x09;
const COLON = 0x3a;

const INCOMPLETE: HttpHeadResult = Object.freeze({ kind: "incomplete" });

function invalid(reason: HttpHeadReason): Invalid {
  return { kind: "invalid", reason, status: reason === "too_large" ? 431 : 400 };
}

/** tchar (RFC 9110 §5.6.2) lookup table: 1 for token characters. Shared with the framing tracker. */
export const TCHAR: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
  for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  for (const ch of "!#$%&'*+-.^_`|~") t[ch.charCodeAt(0)] = 1;
  return t;
})();

/** Characters of a reg-name (RFC 3986 §3.2.2: unreserved / pct-encoded / sub-delims). */
const REG_NAME: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
  for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  for (const ch of "-._~%!$&'()*+,;=") t[ch.charCodeAt(0)] = 1;
  return t;
})();

const VERSIONS = ["HTTP/1.0", "HTTP/1.1", "HTTP/2.0"] as const;

/** Compare a header name to a lower-case ASCII name (letters and '-' only), case-insensitively. */
/**
 * Whether the header name `b[start, end)`, already checked to be tchar, is `lower` in any case.
 * Shared with the framing scan.
 */
export function nameIs(b: Uint8Array, start: number, end: number, lower: string): boolean {
  if (end - start !== lower.length) return false;
  // Names were checked to be tchar, so OR-ing 0x20 folds case and aliases nothing.
  for (let i = 0; i < lower.length; i++) {
    if ((b[start + i] | 0x20) !== lower.charCodeAt(i)) return false;
  }
  return true;
}

type Authority = { host: string; port: number | null };

/**
 * Split `host[:port]` or `[v6]:port`. The host is checked only for syntax
 * (reg-name characters, or an IPv6 literal's hex digits, colons and dots); the
 * port must be 1..65535 in at most five digits. An empty port is refused even
 * though RFC 3986 allows it: deny on doubt.
 */
function parseAuthority(s: string): Authority | Invalid {
  let host: string;
  let portText: string | null = null;
  if (s.startsWith("[")) {
    const close = s.indexOf("]");
    if (close < 0) return invalid("malformed");
    host = s.slice(1, close);
    let colons = 0;
    for (let i = 0; i < host.length; i++) {
      const c = host.charCodeAt(i);
      if (c === COLON) colons++;
      else if (
        !((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46) ||
          c === 0x2e)
      ) return invalid("malformed");
    }
    if (colons < 2) return invalid("malformed");
    const rest = s.slice(close + 1);
    if (rest !== "") {
      if (rest.charCodeAt(0) !== COLON) return invalid("malformed");
      portText = rest.slice(1);
    }
  } else {
    const colon = s.indexOf(":");
    host = colon < 0 ? s : s.slice(0, colon);
    if (colon >= 0) portText = s.slice(colon + 1);
    if (host === "") return invalid("malformed");
    for (let i = 0; i < host.length; i++) {
      if (!REG_NAME[host.charCodeAt(i)]) return invalid("malformed");
    }
  }
  let port: number | null = null;
  if (portText !== null) {
    if (portText.length === 0 || portText.length > 5) return invalid("bad_host_port");
    port = 0;
    for (let i = 0; i < portText.length; i++) {
      const c = portText.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return invalid("bad_host_port");
      port = port * 10 + (c - 0x30);
    }
    if (port < 1 || port > 65535) return invalid("bad_host_port");
  }
  return { host, port };
}

function isInvalid(x: object): x is Invalid {
  return (x as { kind?: string }).kind === "invalid";
}

/** Host comparison key: lower case, one trailing dot dropped. */
function hostKey(h: string): string {
  const l = h.toLowerCase();
  return l.endsWith(".") ? l.slice(0, -1) : l;
}

/** What the request line said about where the request goes, to check Host against. */
type TargetAuthority = {
  host: string;
  /** Effective port: explicit, or the scheme's default for absolute-form. */
  port: number;
  /** Port a Host without one stands for; null for CONNECT, where Host's port may be omitted. */
  defaultPort: number | null;
};

/** What complete lines have told us so far. */
interface State {
  method: string;
  target: string;
  version: "HTTP/1.0" | "HTTP/1.1";
  authority: TargetAuthority | null;
  hostSeen: boolean;
  host: string;
  contentLength: number | null;
  teSeen: boolean;
  teCodings: string[];
}

/** Check the request-target's form (RFC 9112 §3.2) and remember its authority, if any. */
function checkTarget(st: State): Invalid | null {
  const { method, target } = st;
  if (target.includes("#")) return invalid("malformed");
  if (method === "CONNECT") {
    const a = parseAuthority(target);
    if (isInvalid(a)) return a;
    if (a.port === null) return invalid("malformed");
    st.authority = { host: a.host, port: a.port, defaultPort: null };
    return null;
  }
  if (target === "*") return method === "OPTIONS" ? null : invalid("malformed");
  if (target.charCodeAt(0) === 0x2f) return null; // origin-form
  // absolute-form: only http and https make sense here.
  const sep = target.indexOf("://");
  if (sep < 0) return invalid("malformed");
  const scheme = target.slice(0, sep).toLowerCase();
  let defaultPort: number;
  if (scheme === "http") defaultPort = 80;
  else if (scheme === "https") defaultPort = 443;
  else return invalid("malformed");
  let authEnd = target.length;
  for (let i = sep + 3; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c === 0x2f || c === 0x3f) {
      authEnd = i;
      break;
    }
  }
  const authority = target.slice(sep + 3, authEnd);
  // Userinfo is deprecated and a classic way to disguise the real host.
  if (authority.includes("@")) return invalid("malformed");
  const a = parseAuthority(authority);
  if (isInvalid(a)) return a;
  st.authority = { host: a.host, port: a.port ?? defaultPort, defaultPort };
  return null;
}

/** Parse a Content-Length value: a comma list of equal decimal numbers (RFC 9110 §8.6). */
function contentLength(value: string): number | Invalid {
  let result = -1;
  for (const part of value.split(",")) {
    const p = part.trim();
    if (p.length === 0 || p.length > 15) return invalid("malformed");
    let n = 0;
    for (let i = 0; i < p.length; i++) {
      const c = p.charCodeAt(i);
      if (c < 0x30 || c > 0x39) return invalid("malformed");
      n = n * 10 + (c - 0x30);
    }
    if (result >= 0 && n !== result) return invalid("ambiguous_framing");
    result = n;
  }
  return result;
}

/** Trim OWS (SP / HTAB) from both ends of [start, end). */
function trimOws(b: Uint8Array, start: number, end: number): [number, number] {
  while (start < end && (b[start] === SP || b[start] === HT)) start++;
  while (end > start && (b[end - 1] === SP || b[end - 1] === HT)) end--;
  return [start, end];
}

/**
 * Act on a complete, syntactically valid header field line: Host,
 * Content-Length and Transfer-Encoding matter, the rest is passed through.
 */
function headerField(
  b: Uint8Array,
  start: number,
  nameEnd: number,
  end: number,
  st: State,
): Invalid | null {
  const [vs, ve] = trimOws(b, nameEnd + 1, end);
  if (nameIs(b, start, nameEnd, "host")) {
    if (st.hostSeen) return invalid("multiple_host");
    st.hostSeen = true;
    for (let k = vs; k < ve; k++) {
      if (b[k] <= SP || b[k] >= 0x7f) return invalid("malformed");
    }
    if (vs === ve) return null; // empty Host: decided at the end (no_host)
    const a = parseAuthority(latin1(b, vs, ve));
    if (isInvalid(a)) return a;
    st.host = a.host;
    const t = st.authority;
    if (t !== null) {
      if (hostKey(t.host) !== hostKey(a.host)) return invalid("host_mismatch");
      const port = a.port ?? t.defaultPort;
      if (port !== null && port !== t.port) return invalid("host_mismatch");
    }
    return null;
  }
  if (nameIs(b, start, nameEnd, "content-length")) {
    if (st.teSeen) return invalid("ambiguous_framing");
    const n = contentLength(latin1(b, vs, ve));
    if (typeof n !== "number") return n;
    if (st.contentLength !== null && st.contentLength !== n) return invalid("ambiguous_framing");
    st.contentLength = n;
    return null;
  }
  if (nameIs(b, start, nameEnd, "transfer-encoding")) {
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0, or alongside Content-Length,
    // is framing a server may read differently than we do.
    if (st.contentLength !== null || st.version === "HTTP/1.0") {
      return invalid("ambiguous_framing");
    }
    st.teSeen = true;
    for (const part of latin1(b, vs, ve).split(",")) {
      const p = part.trim().toLowerCase();
      if (p !== "") st.teCodings.push(p);
    }
    return null;
  }
  return null;
}

/** Checks that need the whole head. */
function finish(st: State, headLength: number): HttpHeadResult {
  if (st.teSeen) {
    // chunked must be the final coding and appear once (RFC 9112 §6.1).
    const codings = st.teCodings;
    const chunked = codings.filter((c) => c === "chunked").length;
    if (chunked !== 1 || codings[codings.length - 1] !== "chunked") {
      return invalid("ambiguous_framing");
    }
  }
  if (!st.hostSeen || st.host === "") {
    // An empty Host with an absolute-form target still disagrees with it.
    return invalid(st.hostSeen && st.authority !== null ? "host_mismatch" : "no_host");
  }
  return {
    kind: "head",
    method: st.method,
    target: st.target,
    version: st.version,
    host: st.host,
    headLength,
  };
}

// Where the scanner is inside the current line.
const METHOD = 0;
const TARGET = 1;
const VERSION = 2;
const LINE_START = 3;
const NAME = 4;
const VALUE = 5;

/** Bit per entry of VERSIONS: which versions the version bytes so far are a prefix of. */
const ALL_VERSIONS = 0b111;
const H2 = 0b100;

/**
 * A resumable {@linkcode parseHttpHead}: give it the same growing buffer after
 * every read and it only looks at bytes it has not seen, so a client that
 * sends its head one byte per packet costs O(n), not O(n²). Results are
 * exactly those of `parseHttpHead` on the same buffer. Every call must pass a
 * buffer that starts with the bytes of the previous call (a shorter one
 * restarts the scan). Once the result is final (`head` or `invalid`) it sticks.
 */
export class HttpHeadScanner {
  #st: State = {
    method: "",
    target: "",
    version: "HTTP/1.1",
    authority: null,
    hostSeen: false,
    host: "",
    contentLength: null,
    teSeen: false,
    teCodings: [],
  };
  #final: HttpHeadResult | null = null;
  /** Next byte to look at. */
  #pos = 0;
  #lineStart = 0;
  #phase = METHOD;
  /** End of the method (request line) or of the field name (header line). */
  #mark1 = 0;
  /** End of the request-target. */
  #mark2 = 0;
  #versions = ALL_VERSIONS;

  /** Scan `bytes` (everything received so far) and return the verdict so far. */
  scan(bytes: Uint8Array): HttpHeadResult {
    if (this.#final !== null) return this.#final;
    if (bytes.length < this.#pos) {
      const fresh = new HttpHeadScanner();
      return fresh.scan(bytes);
    }
    const r = this.#run(bytes);
    if (r.kind !== "incomplete") this.#final = r;
    return r;
  }

  #run(b: Uint8Array): HttpHeadResult {
    const limit = Math.min(b.length, MAX_HEAD_BYTES);
    const st = this.#st;
    let i = this.#pos;
    let phase = this.#phase;
    while (i < limit) {
      const c = b[i];
      if (c === CR) {
        if (i + 1 >= limit) break; // wait for the byte after CR
        if (b[i + 1] !== LF) return invalid("malformed"); // bare CR
        const start = this.#lineStart;
        let r: Invalid | null;
        if (phase <= VERSION) {
          r = this.#endRequestLine(b, i, phase);
          phase = LINE_START;
        } else if (phase === LINE_START) {
          return finish(st, i + 2); // the empty line: end of head
        } else if (phase === VALUE) {
          r = headerField(b, start, this.#mark1, i, st);
          phase = LINE_START;
        } else {
          r = invalid("malformed"); // a header line without a colon
        }
        if (r !== null) return r;
        i += 2;
        this.#lineStart = i;
        continue;
      }
      if (c === LF) return invalid("malformed"); // bare LF
      switch (phase) {
        case METHOD:
          if (TCHAR[c]) break;
          if (c !== SP || i === this.#lineStart) return invalid("malformed");
          this.#mark1 = i;
          phase = TARGET;
          break;
        case TARGET:
          if (c > SP && c < 0x7f) break;
          if (c !== SP || i === this.#mark1 + 1) return invalid("malformed");
          this.#mark2 = i;
          phase = VERSION;
          break;
        case VERSION: {
          const k = i - this.#mark2 - 1;
          if (k >= 8) return invalid("malformed");
          let m = 0;
          for (let v = 0; v < VERSIONS.length; v++) {
            if ((this.#versions >> v) & 1 && VERSIONS[v].charCodeAt(k) === c) m |= 1 << v;
          }
          if (m === 0) return invalid("malformed");
          // Only the h2 connection preface says HTTP/2 in a request line.
          if (m === H2 && this.#versions !== H2) {
            const method = latin1(b, this.#lineStart, this.#mark1);
            const target = latin1(b, this.#mark1 + 1, this.#mark2);
            if (method !== "PRI" || target !== "*") return invalid("malformed");
          }
          this.#versions = m;
          break;
        }
        case LINE_START:
          // A line starting with whitespace is obs-fold (RFC 9112 §5.2): refuse it.
          if (c === SP || c === HT) return invalid("malformed");
          phase = NAME;
        /* falls through */
        case NAME:
          if (TCHAR[c]) break;
          if (c !== COLON || i === this.#lineStart) return invalid("malformed");
          this.#mark1 = i;
          phase = VALUE;
          break;
        default: // VALUE: field-vchar, SP, HTAB (obs-text allowed)
          if (!(c === HT || (c >= SP && c !== 0x7f))) return invalid("malformed");
      }
      i++;
    }
    this.#pos = i;
    this.#phase = phase;
    return b.length >= MAX_HEAD_BYTES ? invalid("too_large") : INCOMPLETE;
  }

  /** The request line [lineStart, end) is complete and its bytes are valid so far. */
  #endRequestLine(b: Uint8Array, end: number, phase: number): Invalid | null {
    const st = this.#st;
    if (phase !== VERSION || end - this.#mark2 - 1 !== 8) return invalid("malformed");
    if (this.#versions === H2) return invalid("http2_prior_knowledge");
    st.method = latin1(b, this.#lineStart, this.#mark1);
    st.target = latin1(b, this.#mark1 + 1, this.#mark2);
    st.version = this.#versions === 1 ? "HTTP/1.0" : "HTTP/1.1";
    return checkTarget(st);
  }
}

/**
 * Parse the head of an HTTP/1.x request from the bytes received so far. Call
 * again with the grown buffer after each read (or keep an
 * {@linkcode HttpHeadScanner} to avoid rescanning). Returns `incomplete` only
 * while no CRLFCRLF has arrived within fewer than {@linkcode MAX_HEAD_BYTES}
 * bytes, and `invalid` as soon as the bytes so far prove the request bad; a
 * prefix never gets a different verdict than the full head. Never throws.
 * Bytes after the head (body, pipelined requests) are not looked at.
 */
export function parseHttpHead(bytes: Uint8Array): HttpHeadResult {
  return new HttpHeadScanner().scan(bytes);
}
