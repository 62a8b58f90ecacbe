/**
 * IP address literals: strict parsing of IPv4 and IPv6 text into bytes, and
 * the canonical text forms (dotted quad, RFC 5952) used wherever the proxy
 * compares, logs or pins addresses. One implementation, so the kernel's,
 * Deno's, the resolver's and the operator's spellings of an address agree.
 *
 * Strict on purpose: a dotted quad has exactly four decimal parts without
 * leading zeros (which some libcs read as octal); IPv6 follows RFC 4291 text
 * form with at most one `::` and an optional trailing dotted quad.
 *
 * Pure, no I/O. The per-connection functions ({@link canonicalAddress},
 * {@link formatEndpoint}, {@link canonicalIp}, {@link isUnsafeAddress}) scan
 * char codes into a reused scratch buffer, so a valid address costs no
 * allocation beyond the result string (none at all for canonical IPv4).
 *
 * @module
 */

/** An IP address in network byte order: 4 bytes for IPv4, 16 for IPv6. */
export interface IpAddress {
  /** 4 or 6. */
  readonly family: 4 | 6;
  /** Address bytes, most significant first. */
  readonly bytes: Uint8Array;
}

/** Result of a parse: the value, or a reason naming the bad input. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

const DOT = 0x2e;
const COLON = 0x3a;
const ZERO = 0x30;

/** Decimal text of every byte value, so formatting a dotted quad converts no numbers. */
const DEC: readonly string[] = Array.from({ length: 256 }, (_, i) => String(i));
/** Hex text of every byte value without, and with, a leading zero. */
const HEX: readonly string[] = Array.from({ length: 256 }, (_, i) => i.toString(16));
const HEX2: readonly string[] = HEX.map((h) => h.padStart(2, "0"));

// Reused by the functions that only need the bytes transiently. Safe because
// they are synchronous and none calls another while the scratch is live.
const SCRATCH = new Uint8Array(16);

function hexDigit(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

function hasChar(text: string, code: number, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (text.charCodeAt(i) === code) return true;
  return false;
}

/**
 * Scans `text[start, end)` as a dotted quad into `out[off, off + 4)`.
 * Returns null on success or the reason it is not one (built only on failure).
 */
function scanIPv4(
  text: string,
  start: number,
  end: number,
  out: Uint8Array,
  off: number,
): string | null {
  // A wrong part count is reported before any bad part.
  let dots = 0;
  for (let i = start; i < end; i++) if (text.charCodeAt(i) === DOT) dots++;
  if (dots !== 3) return "an IPv4 address has exactly four dot-separated numbers";
  let partStart = start;
  let n = 0;
  for (let i = start; i <= end; i++) {
    if (i < end && text.charCodeAt(i) !== DOT) continue;
    const len = i - partStart;
    let value = len >= 1 && len <= 3 ? 0 : -1;
    for (let j = partStart; value >= 0 && j < i; j++) {
      const d = text.charCodeAt(j) - ZERO;
      value = d >= 0 && d <= 9 ? value * 10 + d : -1;
    }
    if (value < 0) return `"${text.slice(partStart, i)}" is not a number from 0 to 255`;
    if (len > 1 && text.charCodeAt(partStart) === ZERO) {
      return `"${text.slice(partStart, i)}" has a leading zero (ambiguous: octal in some parsers)`;
    }
    if (value > 255) return `"${text.slice(partStart, i)}" is greater than 255`;
    out[off + n++] = value;
    partStart = i + 1;
  }
  return null;
}

/**
 * Scans colon-separated hex groups in `text[start, end)` (empty text is no
 * groups) into 16-bit slots of `out` from `slot`, writing only slots below
 * `limit` so overlong input cannot overrun. Returns the group count or a reason.
 */
function scanGroups(
  text: string,
  start: number,
  end: number,
  out: Uint8Array,
  slot: number,
  limit: number,
): number | string {
  if (start === end) return 0;
  let count = 0;
  let groupStart = start;
  for (let i = start; i <= end; i++) {
    if (i < end && text.charCodeAt(i) !== COLON) continue;
    const len = i - groupStart;
    let value = len >= 1 && len <= 4 ? 0 : -1;
    for (let j = groupStart; value >= 0 && j < i; j++) {
      const h = hexDigit(text.charCodeAt(j));
      value = h >= 0 ? (value << 4) | h : -1;
    }
    if (value < 0) return `"${text.slice(groupStart, i)}" is not a 1-4 digit hex group`;
    const k = slot + count++;
    if (k < limit) {
      out[2 * k] = value >> 8;
      out[2 * k + 1] = value & 0xff;
    }
    groupStart = i + 1;
  }
  return count;
}

/**
 * Scans `text[start, end)` as RFC 4291 IPv6 text into `out[0, 16)`.
 * Returns null on success or the reason it is not one (built only on failure).
 */
function scanIPv6(text: string, start: number, end: number, out: Uint8Array): string | null {
  let bodyEnd = end;
  let tail = 0; // 16-bit groups taken by a trailing dotted quad
  if (hasChar(text, DOT, start, end)) {
    const lastColon = text.lastIndexOf(":", end - 1);
    const v4Start = lastColon >= start ? lastColon + 1 : start;
    const v4 = scanIPv4(text, v4Start, end, out, 12);
    if (v4 !== null) return `embedded IPv4 part: ${v4}`;
    tail = 2;
    // Drop the colon before the quad, but keep a "::" that precedes it ("::1.2.3.4").
    if (lastColon < start) bodyEnd = start;
    else if (lastColon > start && text.charCodeAt(lastColon - 1) === COLON) bodyEnd = lastColon + 1;
    else bodyEnd = lastColon;
  }
  const limit = 8 - tail;
  let gap = -1; // index of the first "::"
  for (let i = start; i + 1 < bodyEnd; i++) {
    if (text.charCodeAt(i) === COLON && text.charCodeAt(i + 1) === COLON) {
      gap = i;
      break;
    }
  }
  if (gap < 0) {
    const head = scanGroups(text, start, bodyEnd, out, 0, limit);
    if (typeof head === "string") return head;
    if (head !== limit) return "an IPv6 address has eight groups (or uses ::)";
    return null;
  }
  for (let i = gap + 2; i + 1 < bodyEnd; i++) {
    if (text.charCodeAt(i) === COLON && text.charCodeAt(i + 1) === COLON) {
      return `"::" may appear only once`;
    }
  }
  const head = scanGroups(text, start, gap, out, 0, limit);
  if (typeof head === "string") return head;
  const rest = scanGroups(text, gap + 2, bodyEnd, out, head, limit);
  if (typeof rest === "string") return rest;
  if (head + rest >= limit) return `"::" must stand for at least one group`;
  // The rest groups were written right after the head: move them to the end, zero the gap.
  const restAt = limit - rest;
  out.copyWithin(2 * restAt, 2 * head, 2 * (head + rest));
  out.fill(0, 2 * head, 2 * restAt);
  return null;
}

function isMappedAt(bytes: Uint8Array, off: number): boolean {
  for (let i = 0; i < 10; i++) if (bytes[off + i] !== 0) return false;
  return bytes[off + 10] === 0xff && bytes[off + 11] === 0xff;
}

function formatV4At(b: Uint8Array, off: number): string {
  const first = b[off];
  const rest = (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3];
  let byRest = V4_TEXTS[first];
  const known = byRest?.get(rest);
  if (known !== undefined) return known;
  const text = DEC[first] + "." + DEC[b[off + 1]] + "." + DEC[b[off + 2]] + "." + DEC[b[off + 3]];
  if (v4Texts >= V4_TEXTS_MAX) {
    V4_TEXTS.fill(undefined);
    v4Texts = 0;
    byRest = undefined;
  }
  if (byRest === undefined) byRest = V4_TEXTS[first] = new Map();
  byRest.set(rest, text);
  v4Texts++;
  return text;
}

/**
 * Dotted quads already written, by first byte and then the other three (small-integer keys):
 * the kernel hands the proxy the same few addresses again and again (its clients, its own
 * address, the upstreams), and each text made anew is seven concatenations' garbage. Bounded:
 * past V4_TEXTS_MAX texts it starts over.
 */
const V4_TEXTS: (Map<number, string> | undefined)[] = new Array(256).fill(undefined);
const V4_TEXTS_MAX = 4096;
let v4Texts = 0;

/** RFC 5952 text of the 16 bytes at `off`; v4-mapped as `::ffff:a.b.c.d` when `dottedMapped`. */
function formatV6At(b: Uint8Array, off: number, dottedMapped: boolean): string {
  if (dottedMapped && isMappedAt(b, off)) return "::ffff:" + formatV4At(b, off + 12);
  // Longest run of two or more zero groups, the first one on ties (RFC 5952 4.2).
  let bestStart = -1;
  let bestLen = 1;
  let runStart = -1;
  for (let i = 0; i < 8; i++) {
    if (b[off + 2 * i] !== 0 || b[off + 2 * i + 1] !== 0) {
      runStart = -1;
      continue;
    }
    if (runStart < 0) runStart = i;
    if (i - runStart + 1 > bestLen) {
      bestStart = runStart;
      bestLen = i - runStart + 1;
    }
  }
  const afterRun = bestStart + bestLen;
  let s = "";
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      s += "::";
      i = afterRun - 1;
      continue;
    }
    if (i > 0 && i !== afterRun) s += ":";
    const hi = b[off + 2 * i];
    const lo = b[off + 2 * i + 1];
    s += hi === 0 ? HEX[lo] : HEX[hi] + HEX2[lo];
  }
  return s;
}

/** True for `::ffff:0:0/96`, IPv4 addresses carried on an IPv6 socket. */
export function isV4Mapped(bytes: Uint8Array): boolean {
  return bytes.length === 16 && isMappedAt(bytes, 0);
}

/** Parses a strict dotted quad (no leading zeros, each part <= 255) into 4 bytes; null otherwise. */
export function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return writeIPv4(text, out, 0) ? out : null;
}

/** Parses IPv6 text (with optional `::` and trailing dotted quad) into 16 bytes; null otherwise. */
export function parseIPv6(text: string): Uint8Array | null {
  const out = new Uint8Array(16);
  return writeIPv6(text, out, 0) ? out : null;
}

/** As {@link parseIPv4}, into `out[off, off + 4)` (a caller's buffer, used again): false if not one. */
export function writeIPv4(text: string, out: Uint8Array, off: number): boolean {
  return scanIPv4(text, 0, text.length, out, off) === null;
}

/** As {@link parseIPv6}, into `out[off, off + 16)`: false if it is not one. */
export function writeIPv6(text: string, out: Uint8Array, off: number): boolean {
  if (scanIPv6(text, 0, text.length, SCRATCH) !== null) return false;
  out.set(SCRATCH, off);
  return true;
}

/** Formats 4 bytes as a dotted quad. */
export function formatIPv4(bytes: Uint8Array): string {
  return formatV4At(bytes, 0);
}

/**
 * Formats 16 bytes as RFC 5952 text, writing v4-mapped addresses as
 * `::ffff:a.b.c.d` the way Deno (Rust's `Ipv6Addr`) does.
 */
export function formatIPv6(bytes: Uint8Array): string {
  return formatV6At(bytes, 0, bytes.length === 16);
}

/**
 * Parses an IP address literal. IPv4-mapped IPv6 becomes IPv4. A zone suffix
 * (`fe80::1%eth0`, as reported for link-local peers) is accepted and ignored
 * only when `allowZone` is set; policy text never needs one.
 */
export function parseIp(text: string, allowZone = false): ParseResult<IpAddress> {
  let end = text.length;
  const pct = text.indexOf("%");
  if (pct !== -1) {
    if (!allowZone) {
      return { ok: false, reason: `"${text}": a zone index (%...) is not allowed here` };
    }
    end = pct;
  }
  if (hasChar(text, COLON, 0, end)) {
    const bytes = new Uint8Array(16);
    const err = scanIPv6(text, 0, end, bytes);
    if (err !== null) return { ok: false, reason: `"${text}" is not an IP address: ${err}` };
    if (isMappedAt(bytes, 0)) return { ok: true, value: { family: 4, bytes: bytes.slice(12) } };
    return { ok: true, value: { family: 6, bytes } };
  }
  const bytes = new Uint8Array(4);
  const err = scanIPv4(text, 0, end, bytes, 0);
  if (err !== null) return { ok: false, reason: `"${text}" is not an IP address: ${err}` };
  return { ok: true, value: { family: 4, bytes } };
}

/**
 * Formats an address canonically: dotted quad, or RFC 5952 compressed IPv6
 * (all hex: the family, not the bytes, decides whether it is IPv4).
 */
export function formatIp(addr: IpAddress): string {
  return addr.family === 4 ? formatV4At(addr.bytes, 0) : formatV6At(addr.bytes, 0, false);
}

/**
 * The canonical text ({@link canonicalAddress}) of the address at `offset` in `bytes`: 4 bytes
 * for family 4, 16 for family 6 (a v4-mapped one as its dotted quad). For kernel socket
 * addresses, which then need no text form of their own before being compared.
 */
export function canonicalAddressAt(bytes: Uint8Array, offset: number, family: 4 | 6): string {
  if (family === 4) return formatV4At(bytes, offset);
  return isMappedAt(bytes, offset)
    ? formatV4At(bytes, offset + 12)
    : formatV6At(bytes, offset, false);
}

/**
 * Canonical text for an address so kernel and Deno forms compare equal:
 * v4-mapped `::ffff:a.b.c.d` becomes `a.b.c.d`, IPv6 is rewritten in RFC 5952
 * form (lower case, no leading zeros, longest zero run as `::`), surrounding
 * brackets are dropped, a zone suffix (`%eth0`) is kept as written. Input that
 * is not an IP address is returned lower-cased.
 */
export function canonicalAddress(hostname: string): string {
  let start = 0;
  let end = hostname.length;
  if (hostname.startsWith("[") && hostname.endsWith("]")) {
    start = 1;
    end--;
  }
  const zoneAt = hostname.indexOf("%", start);
  const bareEnd = zoneAt >= 0 ? zoneAt : end;
  if (hasChar(hostname, COLON, start, bareEnd)) {
    if (scanIPv6(hostname, start, bareEnd, SCRATCH) === null) {
      if (zoneAt >= 0) return formatV6At(SCRATCH, 0, true) + hostname.slice(zoneAt, end);
      if (isMappedAt(SCRATCH, 0)) return formatV4At(SCRATCH, 12);
      return formatV6At(SCRATCH, 0, true);
    }
  } else if (zoneAt < 0 && scanIPv4(hostname, start, end, SCRATCH, 0) === null) {
    // A strict dotted quad has exactly one spelling: the input is already canonical.
    return start === 0 ? hostname : hostname.slice(start, end);
  }
  return hostname.toLowerCase();
}

/**
 * Formats an endpoint for logs and comparisons: `198.18.0.1:80`,
 * `[2001:db8::1]:443`. The address is canonicalised first, so a v4-mapped
 * peer of a dual-stack listener is written as plain IPv4.
 */
export function formatEndpoint(address: string, port: number): string {
  const host = canonicalAddress(address);
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Canonical text form of an IP address, or `null` if `input` is not one.
 *
 * IPv4: strict dotted quad (no leading zeros, which some libcs read as octal).
 * IPv6: RFC 5952 (lowercase, longest zero run compressed, no leading zeros);
 * IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4 so that a dual-stack
 * socket's view of an IPv4 peer compares equal to an A record. Zone ids
 * (`%eth0`) and brackets are rejected: they never appear in DNS answers.
 */
export function canonicalIp(input: string): string | null {
  if (hasChar(input, COLON, 0, input.length)) {
    if (scanIPv6(input, 0, input.length, SCRATCH) !== null) return null;
    return isMappedAt(SCRATCH, 0) ? formatV4At(SCRATCH, 12) : formatV6At(SCRATCH, 0, false);
  }
  return scanIPv4(input, 0, input.length, SCRATCH, 0) === null ? input : null;
}

/**
 * True for addresses the proxy must never connect to on a name's behalf:
 * unspecified, loopback, link-local, multicast, IPv4 "this network" and
 * reserved/broadcast ranges; also for text that is not an address (deny on
 * doubt). A v4-mapped spelling is judged by its IPv4 address.
 */
export function isUnsafeAddress(canonical: string): boolean {
  const b = SCRATCH;
  if (!hasChar(canonical, COLON, 0, canonical.length)) {
    if (scanIPv4(canonical, 0, canonical.length, b, 0) !== null) return true;
    const a = b[0];
    return a === 0 || a === 127 || (a === 169 && b[1] === 254) || a >= 224;
  }
  if (scanIPv6(canonical, 0, canonical.length, b) !== null) return true;
  if (isMappedAt(b, 0)) {
    const a = b[12];
    return a === 0 || a === 127 || (a === 169 && b[13] === 254) || a >= 224;
  }
  let zeroPrefix = true; // first 15 bytes zero: :: and ::1 when the last byte is 0 or 1
  for (let i = 0; i < 15; i++) if (b[i] !== 0) zeroPrefix = false;
  if (zeroPrefix && b[15] <= 1) return true;
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return true; // fe80::/10
  if (b[0] === 0xff) return true; // ff00::/8
  return false;
}
