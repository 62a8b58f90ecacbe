/**
 * Codec for Linux `sockaddr_in` / `sockaddr_in6` structures. Address text is
 * parsed and formatted by `src/ip_address.ts`; decoded addresses are in its
 * canonical form, so the kernel's addresses compare as plain strings with
 * Deno's once those are canonicalised (Deno prints v4-mapped peers of a
 * dual-stack listener as `::ffff:a.b.c.d`).
 *
 * @module
 */

import { canonicalAddressAt, writeIPv4, writeIPv6 } from "../src/ip_address.ts";

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
  /** Canonical text: dotted quad (a v4-mapped address too), or RFC 5952 IPv6. */
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
  // Byte reads rather than a DataView: this runs for every accepted connection.
  const family = LITTLE_ENDIAN ? buf[0] | (buf[1] << 8) : (buf[0] << 8) | buf[1];
  if (family === AF_INET) {
    if (len < SOCKADDR_IN_SIZE) return null;
    return { family: 4, address: canonicalAddressAt(buf, 4, 4), port: (buf[2] << 8) | buf[3] };
  }
  if (family === AF_INET6) {
    // Older ABIs lack the trailing 4-byte sin6_scope_id; the address ends at byte 24.
    if (len < 24) return null;
    return { family: 6, address: canonicalAddressAt(buf, 8, 6), port: (buf[2] << 8) | buf[3] };
  }
  return null;
}

/** Encodes an IPv4 address and port as a `sockaddr_in`; throws TypeError naming bad input. */
export function encodeSockaddrIn(address: string, port: number): Uint8Array {
  const buf = new Uint8Array(SOCKADDR_IN_SIZE);
  writeSockaddrIn(buf, address, port);
  return buf;
}

/** Encodes an IPv6 address and port as a `sockaddr_in6`; throws TypeError naming bad input. */
export function encodeSockaddrIn6(address: string, port: number, scopeId = 0): Uint8Array {
  const buf = new Uint8Array(SOCKADDR_IN6_SIZE);
  writeSockaddrIn6(buf, address, port, scopeId);
  return buf;
}

/**
 * Writes `address` (IPv6 if it has a colon) and `port` into the start of `buf` as a
 * `sockaddr_in6` or `sockaddr_in`, the rest of the structure zeroed, and returns its length:
 * for a buffer used for every connect (the kernel copies the address in). Throws TypeError
 * naming bad input.
 */
export function encodeSockaddrInto(buf: Uint8Array, address: string, port: number): number {
  if (address.includes(":")) {
    writeSockaddrIn6(buf, address, port, 0);
    return SOCKADDR_IN6_SIZE;
  }
  writeSockaddrIn(buf, address, port);
  return SOCKADDR_IN_SIZE;
}

function writeSockaddrIn(buf: Uint8Array, address: string, port: number): void {
  buf.fill(0, 0, SOCKADDR_IN_SIZE);
  if (!writeIPv4(address, buf, 4)) {
    throw new TypeError(`not an IPv4 address: ${JSON.stringify(address)}`);
  }
  checkPort(port);
  writeHead(buf, AF_INET, port);
}

function writeSockaddrIn6(buf: Uint8Array, address: string, port: number, scopeId: number): void {
  buf.fill(0, 0, SOCKADDR_IN6_SIZE);
  if (!writeIPv6(address, buf, 8)) {
    throw new TypeError(`not an IPv6 address: ${JSON.stringify(address)}`);
  }
  checkPort(port);
  writeHead(buf, AF_INET6, port);
  if (scopeId !== 0) new DataView(buf.buffer, buf.byteOffset).setUint32(24, scopeId, LITTLE_ENDIAN);
}

/** `sa_family` in host order, then the port in network order. */
function writeHead(buf: Uint8Array, family: number, port: number): void {
  buf[LITTLE_ENDIAN ? 0 : 1] = family;
  buf[2] = port >> 8;
  buf[3] = port & 0xff;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TypeError(`not a port number: ${port}`);
  }
}
