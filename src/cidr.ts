/**
 * IPv4/IPv6 address and CIDR parsing, strict enough for a security policy.
 *
 * Canonical families: an IPv4-mapped IPv6 address (`::ffff:198.18.1.10`, as a
 * dual-stack listener reports IPv4 peers) is treated as the IPv4 address, and
 * an IPv6 CIDR inside `::ffff:0:0/96` as the equivalent IPv4 CIDR, so
 * `198.18.0.0/15` matches a peer however the kernel spells it. Otherwise the
 * families never mix: `::/0` does not match IPv4 peers (write `0.0.0.0/0`).
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

/** A network: an address whose bits after `prefix` are all zero. */
export interface Cidr {
  /** 4 or 6 (canonical family, see the module doc). */
  readonly family: 4 | 6;
  /** Network address bytes; host bits are zero. */
  readonly bytes: Uint8Array;
  /** Prefix length: 0..32 for IPv4, 0..128 for IPv6. */
  readonly prefix: number;
}

/** Result of a parse: the value, or a reason naming the bad input. */
export type ParseResult<T> = { ok: true; value: T } | { ok: false; reason: string };

const MAPPED_PREFIX = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);

/** Parses dotted-quad IPv4; rejects leading zeros, which some parsers read as octal. */
function parseIpv4Bytes(text: string): Uint8Array | string {
  const parts = text.split(".");
  if (parts.length !== 4) return "an IPv4 address has exactly four dot-separated numbers";
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i];
    if (!/^[0-9]{1,3}$/.test(part)) return `"${part}" is not a number from 0 to 255`;
    if (part.length > 1 && part[0] === "0") {
      return `"${part}" has a leading zero (ambiguous: octal in some parsers)`;
    }
    const n = Number(part);
    if (n > 255) return `"${part}" is greater than 255`;
    bytes[i] = n;
  }
  return bytes;
}

function parseHexGroups(text: string, out: number[]): string | null {
  if (text === "") return null;
  for (const group of text.split(":")) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return `"${group}" is not a 1-4 digit hex group`;
    out.push(parseInt(group, 16));
  }
  return null;
}

/** Parses RFC 4291 text form (with `::` and an optional trailing dotted quad). */
function parseIpv6Bytes(text: string): Uint8Array | string {
  let body = text;
  let tail: Uint8Array | null = null;
  const lastColon = body.lastIndexOf(":");
  if (body.includes(".")) {
    const v4 = parseIpv4Bytes(body.slice(lastColon + 1));
    if (typeof v4 === "string") return `embedded IPv4 part: ${v4}`;
    tail = v4;
    // Keep a "::" intact when the dotted quad follows it directly ("::1.2.3.4").
    body = body.slice(0, lastColon + 1);
    if (!body.endsWith("::") && body.endsWith(":")) body = body.slice(0, -1);
  }
  const tailGroups = tail === null ? 0 : 2;
  const halves = body.split("::");
  if (halves.length > 2) return `"::" may appear only once`;
  const head: number[] = [];
  const rest: number[] = [];
  const headErr = parseHexGroups(halves[0], head);
  if (headErr !== null) return headErr;
  if (halves.length === 2) {
    const restErr = parseHexGroups(halves[1], rest);
    if (restErr !== null) return restErr;
    if (head.length + rest.length + tailGroups > 7) return `"::" must stand for at least one group`;
  } else if (head.length + tailGroups !== 8) {
    return "an IPv6 address has eight groups (or uses ::)";
  }
  const bytes = new Uint8Array(16);
  head.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  const restStart = 8 - tailGroups - rest.length;
  rest.forEach((g, i) => {
    bytes[2 * (restStart + i)] = g >> 8;
    bytes[2 * (restStart + i) + 1] = g & 0xff;
  });
  if (tail !== null) bytes.set(tail, 12);
  return bytes;
}

function isMapped(bytes: Uint8Array): boolean {
  if (bytes.length !== 16) return false;
  for (let i = 0; i < 12; i++) if (bytes[i] !== MAPPED_PREFIX[i]) return false;
  return true;
}

/**
 * Parses an IP address literal. IPv4-mapped IPv6 becomes IPv4. A zone suffix
 * (`fe80::1%eth0`, as reported for link-local peers) is accepted and ignored
 * only when `allowZone` is set; policy text never needs one.
 */
export function parseIp(text: string, allowZone = false): ParseResult<IpAddress> {
  let body = text;
  const pct = body.indexOf("%");
  if (pct !== -1) {
    if (!allowZone) {
      return { ok: false, reason: `"${text}": a zone index (%...) is not allowed here` };
    }
    body = body.slice(0, pct);
  }
  if (body.includes(":")) {
    const bytes = parseIpv6Bytes(body);
    if (typeof bytes === "string") {
      return { ok: false, reason: `"${text}" is not an IP address: ${bytes}` };
    }
    if (isMapped(bytes)) return { ok: true, value: { family: 4, bytes: bytes.slice(12) } };
    return { ok: true, value: { family: 6, bytes } };
  }
  const bytes = parseIpv4Bytes(body);
  if (typeof bytes === "string") {
    return { ok: false, reason: `"${text}" is not an IP address: ${bytes}` };
  }
  return { ok: true, value: { family: 4, bytes } };
}

/** Formats an address canonically: dotted quad, or RFC 5952 compressed IPv6. */
export function formatIp(addr: IpAddress): string {
  const b = addr.bytes;
  if (addr.family === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i] << 8) | b[i + 1]);
  // RFC 5952: compress the longest run (first on ties) of two or more zero groups.
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
  if (bestStart === -1) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

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
