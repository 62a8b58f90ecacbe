/**
 * Hostname validation and canonicalisation: the single place where a DNS name
 * coming from TLS SNI, an HTTP Host header or an allowlist entry is checked and
 * put in the one form that policy compares.
 *
 * @module
 */

import { domainToASCII, domainToUnicode } from "node:url";

/** Result of {@linkcode normalizeHostname}: the canonical name, or why the input is not one. */
export type HostnameResult = { ok: true; name: string } | { ok: false; reason: string };

/** Options for {@linkcode normalizeHostname}. */
export interface NormalizeOptions {
  /**
   * Accept Unicode labels (U-labels) and convert them to A-labels. Defaults to
   * `true` (allowlist entries may be typed in Unicode). Pass `false` for names
   * read off the wire: SNI must already be ASCII (RFC 6066 §3) and an HTTP
   * Host is an ASCII reg-name (RFC 3986 §3.2.2).
   */
  allowUnicode?: boolean;
}

/** Longest DNS name in presentation form, without the trailing dot (RFC 1035 §2.3.4). */
export const MAX_HOSTNAME_LENGTH = 253;
/** Longest DNS label (RFC 1035 §2.3.4). */
export const MAX_LABEL_LENGTH = 63;

/**
 * Inputs longer than this are refused before any work, so a hostile input
 * cannot make IDNA conversion expensive. Generous because U-labels can be
 * several times longer in UTF-16 than their A-label encodings are not.
 */
const MAX_INPUT_LENGTH = 1024;

const QUOTE_LIMIT = 80;

/**
 * Quote untrusted text for an error message or a log line: truncated to about
 * 80 characters and JSON-quoted, with every character outside printable ASCII
 * escaped so that control or bidi characters cannot forge log output.
 */
export function quoteForLog(input: string): string {
  const cut = input.length > QUOTE_LIMIT ? input.slice(0, QUOTE_LIMIT) : input;
  const quoted = JSON.stringify(cut).replace(
    /[^\x20-\x7e]/g,
    (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"),
  );
  return input.length > QUOTE_LIMIT ? quoted + "..." : quoted;
}

function fail(input: string, why: string): HostnameResult {
  return { ok: false, reason: `invalid hostname ${quoteForLog(input)}: ${why}` };
}

function isAsciiAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a);
}

function isHexDigit(c: number): boolean {
  return (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46);
}

/**
 * Whether a label would be read as a number by the WHATWG URL host parser
 * ("ends in a number" checker): all decimal digits, or `0x` followed by hex
 * digits. A name whose last label is numeric is an IPv4 literal in some
 * resolver or another (`0x7f.1`, `2130706433`, `1.2.3.4`), never a DNS name.
 */
function isNumericLabel(label: string): boolean {
  if (label.length === 0) return false;
  let i = 0;
  let hex = false;
  if (label.length >= 2 && label[0] === "0" && (label[1] === "x" || label[1] === "X")) {
    hex = true;
    i = 2;
  }
  for (; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (hex ? !isHexDigit(c) : !(c >= 0x30 && c <= 0x39)) return false;
  }
  return true;
}

/**
 * Whether `input` is, or could be taken for, an IP address literal: anything
 * with a `:` or `[` (IPv6), or a dotted name whose last label is numeric in
 * decimal or `0x` hex (IPv4 in any of its historical spellings). One trailing
 * dot is ignored. Policy is about names, so such inputs are never names.
 */
export function isIpLiteral(input: string): boolean {
  if (input.includes(":") || input.includes("[")) return true;
  const s = input.endsWith(".") ? input.slice(0, -1) : input;
  const last = s.slice(s.lastIndexOf(".") + 1);
  return isNumericLabel(last);
}

/** Describe an ASCII character that can never be part of a hostname, for the reason text. */
function describeBadAscii(c: number): string {
  const ch = String.fromCharCode(c);
  if (c < 0x20 || c === 0x7f) return "contains a control character";
  if (c === 0x20) return "contains whitespace";
  if (ch === "*") {
    return "contains '*' (wildcards are only allowed as a whole leftmost allowlist label)";
  }
  if (ch === ":") return "contains ':' (no scheme, port or IPv6 literal allowed)";
  if (ch === "/") return "contains '/' (no scheme or path allowed)";
  if (ch === "@") return "contains '@' (no userinfo allowed)";
  if (ch === "%") return "contains '%' (no percent-escapes allowed)";
  return `contains ${JSON.stringify(ch)}`;
}

/** Strict LDH check of one ASCII label already in lower case. Returns why it fails, or "". */
function ldhLabelProblem(label: string): string {
  if (label.length === 0) return "has an empty label";
  if (label.length > MAX_LABEL_LENGTH) return `has a label longer than ${MAX_LABEL_LENGTH}`;
  for (let i = 0; i < label.length; i++) {
    const c = label.charCodeAt(i);
    if (!((c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d)) {
      return `label ${JSON.stringify(label)} has a character outside [a-z0-9-]`;
    }
  }
  if (label.charCodeAt(0) === 0x2d || label.charCodeAt(label.length - 1) === 0x2d) {
    return `label ${JSON.stringify(label)} starts or ends with '-'`;
  }
  return "";
}

/**
 * Whether `name` is a hostname in canonical form: lower-case LDH labels of 1..63
 * characters without leading or trailing hyphen, at most 253 characters, no
 * trailing dot, last label not numeric. The output of
 * {@linkcode normalizeHostname} always passes; exported for tests and asserts.
 */
export function isCanonicalHostname(name: string): boolean {
  if (name.length === 0 || name.length > MAX_HOSTNAME_LENGTH) return false;
  const labels = name.split(".");
  for (const label of labels) if (ldhLabelProblem(label) !== "") return false;
  return !isNumericLabel(labels[labels.length - 1]);
}

/**
 * Convert one label to its A-label form, or return why it cannot be. ASCII
 * labels are lower-cased (and, if they claim to be A-labels, must decode and
 * re-encode to themselves). Unicode labels must already be in the form that
 * IDNA mapping would produce apart from case (NFC, no characters that mapping
 * deletes or rewrites such as zero-width joiners, ligatures or full-width
 * letters): a lossy mapping is exactly where two parties can disagree about
 * which name was meant, so it is refused rather than guessed.
 */
function toALabel(label: string, allowUnicode: boolean): { ok: true; label: string } | {
  ok: false;
  why: string;
} {
  let ascii = true;
  for (let i = 0; i < label.length; i++) {
    if (label.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    const lower = label.toLowerCase();
    if (lower.startsWith("xn--")) {
      const unicode = domainToUnicode(lower);
      if (domainToASCII(lower) !== lower || domainToASCII(unicode) !== lower) {
        return { ok: false, why: `label ${JSON.stringify(lower)} is not a valid A-label` };
      }
    }
    return { ok: true, label: lower };
  }
  if (!allowUnicode) return { ok: false, why: "contains non-ASCII characters" };
  const wanted = label.normalize("NFC").toLowerCase();
  const converted = domainToASCII(label);
  if (converted === "" || converted.includes(".")) {
    return { ok: false, why: "has a label that is not a valid internationalised name" };
  }
  if (domainToUnicode(converted) !== wanted) {
    return {
      ok: false,
      why: "has a Unicode label that IDNA mapping would change (not in canonical form)",
    };
  }
  return { ok: true, label: converted };
}

/**
 * Validate a DNS hostname and return its canonical form: lower case, without
 * the trailing dot, internationalised labels as A-labels (punycode). Rejects
 * anything that is not a plain LDH name: IP literals in any spelling, ports,
 * schemes, paths, userinfo, wildcards, percent-escapes, whitespace, control
 * characters, empty labels, over-long names. The reason quotes the input.
 */
export function normalizeHostname(input: string, options: NormalizeOptions = {}): HostnameResult {
  const plain = plainName(input);
  return plain !== null ? { ok: true, name: plain } : normalizeByLabels(input, options);
}

/**
 * The canonical form of a plain ASCII name, from one pass over its characters: only letters,
 * digits, dots and hyphens, every label 1–63 long with no hyphen at either end, at most 253
 * characters without the trailing dot, a last label that is not a number, no `xn--` anywhere.
 * Null for anything else, which {@link normalizeByLabels} decides (and words the reason for).
 * A Host or SNI is nearly always such a name; the full check splits and joins it.
 */
export function plainName(input: string): string | null {
  const end = input.charCodeAt(input.length - 1) === 0x2e ? input.length - 1 : input.length;
  if (end <= 0 || end > MAX_HOSTNAME_LENGTH) return null;
  let labelStart = 0;
  let upper = false;
  let numeric = true;
  for (let i = 0; i <= end; i++) {
    const c = i < end ? input.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      const length = i - labelStart;
      if (length === 0 || length > MAX_LABEL_LENGTH) return null;
      if (input.charCodeAt(i - 1) === 0x2d) return null;
      // A last label that is a number (or may be one: `0x…`) is the full check's to judge.
      if (i === end && (numeric || isHexPrefixed(input, labelStart))) return null;
      labelStart = i + 1;
      numeric = true;
      continue;
    }
    if (c >= 0x30 && c <= 0x39) continue;
    numeric = false;
    if (c >= 0x61 && c <= 0x7a) continue;
    if (c >= 0x41 && c <= 0x5a) {
      upper = true;
      continue;
    }
    if (c !== 0x2d || i === labelStart) return null;
    // `xn--` (any case) anywhere: IDNA rules apply, the full check decides.
    if (
      i >= labelStart + 3 && input.charCodeAt(i - 1) === 0x2d &&
      (input.charCodeAt(i - 2) | 0x20) === 0x6e && (input.charCodeAt(i - 3) | 0x20) === 0x78
    ) return null;
  }
  const name = end === input.length ? input : input.slice(0, end);
  return upper ? name.toLowerCase() : name;
}

function isHexPrefixed(input: string, at: number): boolean {
  return input.charCodeAt(at) === 0x30 && (input.charCodeAt(at + 1) | 0x20) === 0x78;
}

/**
 * The full check of {@link normalizeHostname}, label by label, for what {@link plainName}
 * leaves to it (exported so a test can hold the two to the same answers).
 */
export function normalizeByLabels(input: string, options: NormalizeOptions = {}): HostnameResult {
  const allowUnicode = options.allowUnicode ?? true;
  if (input.length === 0) return fail(input, "is empty");
  if (input.length > MAX_INPUT_LENGTH) return fail(input, "is too long");
  // Validate before any conversion: the WHATWG/IDNA machinery would happily
  // decode `%2e`, read `0x7f.1` as an address or drop ignorable characters.
  let hasNonAscii = false;
  for (let i = 0; i < input.length; i++) {
    const c = input.charCodeAt(i);
    if (c > 0x7f) {
      hasNonAscii = true;
      // C1 controls and the Unicode white space / format characters most often
      // used to smuggle text; IDNA mapping below catches the rest.
      if (c <= 0x9f || /[\s\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]/.test(input[i])) {
        return fail(input, "contains whitespace or an invisible/control character");
      }
      continue;
    }
    if (!(isAsciiAlnum(c) || c === 0x2e || c === 0x2d)) {
      return fail(input, describeBadAscii(c));
    }
  }
  if (hasNonAscii && !allowUnicode) return fail(input, "contains non-ASCII characters");
  const body = input.endsWith(".") ? input.slice(0, -1) : input;
  if (body.length === 0) return fail(input, "has no labels");
  const labels = body.split(".");
  for (const label of labels) if (label.length === 0) return fail(input, "has an empty label");
  if (isNumericLabel(labels[labels.length - 1])) {
    return fail(input, "is an IP address literal, not a name");
  }
  const out: string[] = [];
  for (const label of labels) {
    const r = toALabel(label, allowUnicode);
    if (!r.ok) return fail(input, r.why);
    const problem = ldhLabelProblem(r.label);
    if (problem !== "") return fail(input, problem);
    out.push(r.label);
  }
  const name = out.join(".");
  if (name.length > MAX_HOSTNAME_LENGTH) {
    return fail(input, `is longer than ${MAX_HOSTNAME_LENGTH} characters`);
  }
  if (isNumericLabel(out[out.length - 1])) {
    return fail(input, "is an IP address literal, not a name");
  }
  // Whole-name check for names with IDN labels: some IDNA rules (Bidi) are
  // about the name as a whole, not one label at a time.
  if (hasNonAscii || name.includes("xn--")) {
    if (domainToASCII(name) !== name) {
      return fail(input, "is not a valid internationalised name");
    }
  }
  return { ok: true, name };
}
