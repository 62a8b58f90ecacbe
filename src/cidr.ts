/**
 * CIDR parsing and membership, strict enough for a security policy (address
 * literals are parsed by `ip_address.ts`).
 *
 * Canonical families: an IPv4-mapped IPv6 address (`::ffff:198.18.1.10`, as a
 * dual-stack listener reports IPv4 peers) is treated as the IPv4 address, and
 * an IPv6 CIDR inside `::ffff:0:0/96` as the equivalent IPv4 CIDR, so
 * `198.18.0.0/15` matches a peer however the kernel spells it. Otherwise the
 * families never mix: `::/0` does not match IPv4 peers (write `0.0.0.0/0`).
 *
 * @module
 */

import { formatIp, type IpAddress, parseIp, type ParseResult } from "./ip_address.ts";

/** A network: an address whose bits after `prefix` are all zero. */
export interface Cidr {
  /** 4 or 6 (canonical family, see the module doc). */
  readonly family: 4 | 6;
  /** Network address bytes; host bits are zero. */
  readonly bytes: Uint8Array;
  /** Prefix length: 0..32 for IPv4, 0..128 for IPv6. */
  readonly prefix: number;
}

// Bytes 0..11 of every IPv4-mapped IPv6 address (::ffff:0:0/96).
const MAPPED_PREFIX = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    out[i] = bytes[i] & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

/**
 * Parses `address/prefix` strictly: the prefix is a plain decimal in range and
 * the host bits must be zero (`10.1.2.3/16` is refused with a suggestion of
 * `10.1.0.0/16`, because a typo there silently widens or narrows a rule).
 * A bare address means a single host (/32 or /128).
 */
export function parseCidr(text: string): ParseResult<Cidr> {
  const trimmed = text.trim();
  const slash = trimmed.indexOf("/");
  const addrText = slash === -1 ? trimmed : trimmed.slice(0, slash);
  const addr = parseIp(addrText);
  if (!addr.ok) return { ok: false, reason: `invalid CIDR "${text}": ${addr.reason}` };
  const writtenV6 = addrText.includes(":");
  const maxPrefix = writtenV6 ? 128 : 32;
  let written = maxPrefix;
  if (slash !== -1) {
    const p = trimmed.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > maxPrefix) {
      return { ok: false, reason: `invalid CIDR "${text}": prefix "${p}" must be 0..${maxPrefix}` };
    }
    written = Number(p);
  }
  let family = addr.value.family;
  let bytes = addr.value.bytes;
  let prefix = written;
  if (writtenV6 && family === 4) {
    // An IPv4-mapped network: keep it IPv6-shaped unless it lies wholly inside ::ffff:0:0/96.
    if (written >= 96) prefix = written - 96;
    else {
      family = 6;
      bytes = new Uint8Array(16);
      bytes.set(MAPPED_PREFIX);
      bytes.set(addr.value.bytes, 12);
    }
  }
  const masked = maskBytes(bytes, prefix);
  if (!masked.every((v, i) => v === bytes[i])) {
    const net = formatIp({ family, bytes: masked });
    return {
      ok: false,
      reason: `invalid CIDR "${text}": host bits are set after /${written}; ` +
        `did you mean ${net}/${prefix}?`,
    };
  }
  return { ok: true, value: { family, bytes: masked, prefix } };
}

/** Formats a CIDR canonically (`10.1.0.0/16`, `2001:db8::/32`). */
export function formatCidr(cidr: Cidr): string {
  return `${formatIp(cidr)}/${cidr.prefix}`;
}

/** True when `address` lies inside `cidr` (same canonical family, equal first `prefix` bits). */
export function contains(cidr: Cidr, address: IpAddress): boolean {
  if (cidr.family !== address.family) return false;
  const full = cidr.prefix >> 3;
  const a = address.bytes;
  const n = cidr.bytes;
  for (let i = 0; i < full; i++) if (a[i] !== n[i]) return false;
  const rem = cidr.prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return (a[full] & mask) === n[full];
}
