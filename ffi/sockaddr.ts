/**
 * Codec for Linux `sockaddr_in` / `sockaddr_in6` structures. Address text is
 * parsed and formatted by `src/ip_address.ts`, so addresses reported by the
 * kernel and by Deno (which prints v4-mapped peers of a dual-stack listener as
 * `::ffff:a.b.c.d`) can be compared as plain strings.
 *
 * @module
 */

import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "../src/ip_address.ts";

// Re-exported for the modules that compare kernel and Deno addresses
// (connection, proxy_server, conn_fd, original_dst); new code imports them
// from src/ip_address.ts.

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
