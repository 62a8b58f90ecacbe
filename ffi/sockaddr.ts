/**
 * Codec for Linux `sockaddr_in` / `sockaddr_in6` structures and canonical
 * text forms of IP addresses, so addresses reported by the kernel and by Deno
 * (which prints v4-mapped peers of a dual-stack listener as `::ffff:a.b.c.d`)
 * can be compared as plain strings.
 *
 * @module
 */

/** Linux `AF_INET`. */
export const AF_INET = 2;
/** Linux `AF_INET6`. */
export const AF_INET6 = 10;
/** `sizeof(struct sockaddr_in)`. */
export const SOCKADDR_IN_SIZE = 16;
/** `sizeof(struct sockaddr_in6)`. */
export const SOCKADDR_IN6_SIZE = 28;
/** A buffer size large enough for any inet socket address (`sizeof(struct sockaddr_storage)`). */
export const SOCKADDR_STORAGE_SIZE = 128;

/** An IP endpoint decoded from a kernel socket address. */
export interface SocketAddress {
  /** 4 for `AF_INET`, 6 for `AF_INET6` (including v4-mapped addresses). */
  family: 4 | 6;
  /** IPv4 dotted quad or RFC 5952 IPv6 text (v4-mapped as `::ffff:a.b.c.d`, as Deno prints it). */
  address: string;
  /** Port in host order. */
  port: number;
}

// sa_family is stored in host byte order; ports and addresses in network order.
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Decodes the first `len` bytes of `buf` as a `sockaddr_in` or `sockaddr_in6`.
 * Returns null for other families, a `len` shorter than the structure, or a
 * `len` larger than the buffer, so truncated kernel answers are never trusted.
 */
export function decodeSockaddr(buf: Uint8Array, len: number): SocketAddress | null {
  if (!Number.isInteger(len) || len < 2 || len > buf.length) return null;
  const view = new DataView(buf.buffer, buf.byteOffset, len);
  const family = view.getUint16(0, LITTLE_ENDIAN);
  if (family === AF_INET) {
    if (len < SOCKADDR_IN_SIZE) return null;
    return { family: 4, address: formatIPv4(buf.subarray(4, 8)), port: view.getUint16(2, false) };
  }
  if (family === AF_INET6) {
    // Older ABIs lack the trailing 4-byte sin6_scope_id; the address ends at byte 24.
    if (len < 24) return null;
    return { family: 6, address: formatIPv6(buf.subarray(8, 24)), port: view.getUint16(2, false) };
  }
  return null;
}

/** Encodes an IPv4 address and port as a `sockaddr_in`; throws TypeError naming bad input. */
export function encodeSockaddrIn(address: string, port: number): Uint8Array {
  const bytes = parseIPv4(address);
  if (bytes === null) throw new TypeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  checkPort(port);
  const buf = new Uint8Array(SOCKADDR_IN_SIZE);
  const view = new DataView(buf.buffer);
  view.setUint16(0, AF_INET, LITTLE_ENDIAN);
  view.setUint16(2, port, false);
  buf.set(bytes, 4);
  return buf;
}

/** Encodes an IPv6 address and port as a `sockaddr_in6`; throws TypeError naming bad input. */
export function encodeSockaddrIn6(address: string, port: number, scopeId = 0): Uint8Array {
  const bytes = parseIPv6(address);
  if (bytes === null) throw new TypeError(`not an IPv6 address: ${JSON.stringify(address)}`);
  checkPort(port);
  const buf = new Uint8Array(SOCKADDR_IN6_SIZE);
  const view = new DataView(buf.buffer);
  view.setUint16(0, AF_INET6, LITTLE_ENDIAN);
  view.setUint16(2, port, false);
  buf.set(bytes, 8);
  view.setUint32(24, scopeId, LITTLE_ENDIAN);
  return buf;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(`not a port number: ${port}`);
  }
}

/**
 * Canonical text for an address so kernel and Deno forms compare equal:
 * v4-mapped `::ffff:a.b.c.d` becomes `a.b.c.d`, IPv6 is rewritten in RFC 5952
 * form (lower case, no leading zeros, longest zero run as `::`), surrounding
 * brackets are dropped. Input that is not an IP address is returned lower-cased.
 */
export function canonicalAddress(hostname: string): string {
  let host = hostname;
  if (host.startsWith("[") && host.endsWith("]")) host = host.slice(1, -1);
  const zoneAt = host.indexOf("%");
  const zone = zoneAt >= 0 ? host.slice(zoneAt) : "";
  const bare = zoneAt >= 0 ? host.slice(0, zoneAt) : host;
  const v4 = zone === "" ? parseIPv4(bare) : null;
  if (v4 !== null) return formatIPv4(v4);
  const v6 = parseIPv6(bare);
  if (v6 !== null) {
    if (zone === "" && isV4Mapped(v6)) return formatIPv4(v6.subarray(12));
    return formatIPv6(v6) + zone;
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

/** True for `::ffff:0:0/96`, IPv4 addresses carried on an IPv6 socket. */
export function isV4Mapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16) return false;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

const IPV4_PART = /^(?:0|[1-9][0-9]{0,2})$/;

/** Parses a strict dotted quad (no leading zeros, each part <= 255); null otherwise. */
export function parseIPv4(text: string): Uint8Array | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!IPV4_PART.test(parts[i])) return null;
    const n = Number(parts[i]);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;

/** Parses IPv6 text (with optional `::` and trailing dotted quad) into 16 bytes; null otherwise. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length === 0 || text.length > 45) return null;
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const compressed = halves.length === 2;
  // A trailing dotted quad is only valid at the very end of the text.
  const head = parseGroups(halves[0], !compressed);
  const tail = compressed ? parseGroups(halves[1], true) : [];
  if (head === null || tail === null) return null;
  let full: number[];
  if (compressed) {
    if (head.length + tail.length > 7) return null;
    full = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    if (head.length !== 8) return null;
    full = head;
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = full[i] >> 8;
    out[2 * i + 1] = full[i] & 0xff;
  }
  return out;
}

function parseGroups(text: string, allowV4Last: boolean): number[] | null {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i];
    if (allowV4Last && i === parts.length - 1 && part.includes(".")) {
      const v4 = parseIPv4(part);
      if (v4 === null) return null;
      groups.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (HEX_GROUP.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return null;
    }
  }
  return groups;
}

/** Formats 4 bytes as a dotted quad. */
export function formatIPv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/**
 * Formats 16 bytes as RFC 5952 text, writing v4-mapped addresses as
 * `::ffff:a.b.c.d` the way Deno (Rust's `Ipv6Addr`) does.
 */
export function formatIPv6(bytes: Uint8Array): string {
  if (isV4Mapped(bytes)) return `::ffff:${formatIPv4(bytes.subarray(12))}`;
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[2 * i] << 8) | bytes[2 * i + 1]);
  // Longest run of two or more zero groups, the first one on ties (RFC 5952 4.2).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}
