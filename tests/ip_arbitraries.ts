/**
 * Shared generators and BigInt references for the IP address, CIDR and
 * sockaddr tests, written independently of the byte-wise code under test.
 *
 * @module
 */

import fc from "fast-check";
import { type IpAddress, parseIp } from "../src/ip_address.ts";

const bytes16 = fc.uint8Array({ minLength: 16, maxLength: 16 });
// Addresses with long zero runs exercise the `::` rules far more often than uniform bytes.
const groups8 = fc.array(
  fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff })),
  {
    minLength: 8,
    maxLength: 8,
  },
);

/** 16 IPv6 address bytes, uniform or with long zero runs. */
export const v6Bytes: fc.Arbitrary<Uint8Array> = fc.oneof(
  bytes16,
  groups8.map((gs) => {
    const out = new Uint8Array(16);
    gs.forEach((g, i) => {
      out[2 * i] = g >> 8;
      out[2 * i + 1] = g & 0xff;
    });
    return out;
  }),
);

/** Any 32-bit value (an IPv4 address). */
export const big32: fc.Arbitrary<bigint> = fc.bigInt({ min: 0n, max: (1n << 32n) - 1n });
/** Any 128-bit value (an IPv6 address). */
export const big128: fc.Arbitrary<bigint> = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n });

/** WHATWG URL serialisation compresses IPv6 the RFC 5952 way (but prints v4-mapped in hex). */
export function urlCanonical(bytes: Uint8Array): string {
  const full = Array.from(
    { length: 8 },
    (_, i) => ((bytes[2 * i] << 8) | bytes[2 * i + 1]).toString(16),
  )
    .join(":");
  return new URL(`http://[${full}]/`).hostname.slice(1, -1);
}

/** Parses an address (zone allowed) or throws with the parser's reason. */
export function ip(text: string): IpAddress {
  const r = parseIp(text, true);
  if (!r.ok) throw new Error(r.reason);
  return r.value;
}

/** Address bytes as one big-endian integer. */
export function toBig(bytes: Uint8Array): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

/** Dotted-quad text of a 32-bit value. */
export function v4Text(v: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 0xffn)).join(".");
}

/** Uncompressed IPv6 text, optionally zero-padded and upper-cased. */
export function v6FullText(v: bigint, pad: boolean, upper: boolean): string {
  const groups: string[] = [];
  for (let s = 112n; s >= 0n; s -= 16n) {
    const g = ((v >> s) & 0xffffn).toString(16);
    groups.push(pad ? g.padStart(4, "0") : g);
  }
  const t = groups.join(":");
  return upper ? t.toUpperCase() : t;
}

/** `::ffff:0:0` as a 128-bit value. */
export const MAPPED_BASE = 0xffffn << 32n;

/** True for a 128-bit value inside `::ffff:0:0/96`. */
export const isMappedBig = (v: bigint): boolean => (v >> 32n) === 0xffffn;
