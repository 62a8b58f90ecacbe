/**
 * Test helpers for TLS ClientHello bytes: extract the handshake message from
 * its records, re-fragment it into records of chosen sizes, build hellos by
 * hand, and list extensions. Written independently of
 * `src/tls_client_hello.ts` so tests do not check the parser against itself.
 *
 * @module
 */

/** One TLS record as seen on the wire. */
export type TlsRecord = { type: number; version: number; fragment: Uint8Array };

/** Splits `wire` into whole records; throws if it does not end on a boundary. */
export function splitRecords(wire: Uint8Array): TlsRecord[] {
  const records: TlsRecord[] = [];
  let pos = 0;
  while (pos < wire.length) {
    if (pos + 5 > wire.length) throw new Error(`truncated record header at ${pos}`);
    const length = (wire[pos + 3] << 8) | wire[pos + 4];
    if (pos + 5 + length > wire.length) throw new Error(`truncated record at ${pos}`);
    records.push({
      type: wire[pos],
      version: (wire[pos + 1] << 8) | wire[pos + 2],
      fragment: wire.subarray(pos + 5, pos + 5 + length),
    });
    pos += 5 + length;
  }
  return records;
}

/** Concatenates byte arrays. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** The handshake bytes (message header included) carried by handshake records. */
export function handshakeBytes(wire: Uint8Array): Uint8Array {
  return concat(...splitRecords(wire).map((r) => r.fragment));
}

/** Wraps one record: content type, legacy version, 16-bit length, fragment. */
export function record(type: number, fragment: Uint8Array, version = 0x0301): Uint8Array {
  const out = new Uint8Array(5 + fragment.length);
  out[0] = type;
  out[1] = version >> 8;
  out[2] = version & 0xff;
  out[3] = fragment.length >> 8;
  out[4] = fragment.length & 0xff;
  out.set(fragment, 5);
  return out;
}

/**
 * Re-fragments a handshake message into handshake records whose fragment
 * sizes cycle through `sizes` (the last record takes what is left).
 */
export function fragment(handshake: Uint8Array, sizes: number[], version = 0x0301): Uint8Array {
  const parts: Uint8Array[] = [];
  let offset = 0;
  let i = 0;
  while (offset < handshake.length) {
    const size = Math.max(1, Math.min(sizes[i % sizes.length], handshake.length - offset));
    parts.push(record(22, handshake.subarray(offset, offset + size), version));
    offset += size;
    i++;
  }
  return concat(...parts);
}

/** Re-fragments a handshake message at the given split offsets (sorted, deduplicated). */
export function fragmentAt(handshake: Uint8Array, splits: number[]): Uint8Array {
  const cuts = [...new Set(splits.filter((s) => s > 0 && s < handshake.length))].sort((a, b) =>
    a - b
  );
  const bounds = [0, ...cuts, handshake.length];
  const parts: Uint8Array[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    parts.push(record(22, handshake.subarray(bounds[i], bounds[i + 1])));
  }
  return concat(...parts);
}

/** 16-bit big-endian length prefix followed by `body`. */
export function u16Prefixed(body: Uint8Array): Uint8Array {
  return concat(new Uint8Array([body.length >> 8, body.length & 0xff]), body);
}

/** 8-bit length prefix followed by `body`. */
export function u8Prefixed(body: Uint8Array): Uint8Array {
  return concat(new Uint8Array([body.length]), body);
}

/** One extension: 16-bit type, 16-bit length, data. */
export function extension(type: number, data: Uint8Array): Uint8Array {
  return concat(new Uint8Array([type >> 8, type & 0xff]), u16Prefixed(data));
}

/** ASCII/latin1 bytes of `text`. */
export function ascii(text: string): Uint8Array {
  return Uint8Array.from(text, (c) => c.charCodeAt(0));
}

/** server_name extension data with the given (name_type, name) entries. */
export function serverNameData(entries: Array<[number, Uint8Array]>): Uint8Array {
  return u16Prefixed(
    concat(...entries.map(([type, name]) => concat(new Uint8Array([type]), u16Prefixed(name)))),
  );
}

/** ALPN extension data listing `protocols`. */
export function alpnData(protocols: string[]): Uint8Array {
  return u16Prefixed(concat(...protocols.map((p) => u8Prefixed(ascii(p)))));
}

/** Fields of a hand-built ClientHello; every one has a sane default. */
export type HelloParts = {
  handshakeType?: number;
  version?: number;
  sessionId?: Uint8Array;
  cipherSuites?: Uint8Array;
  compression?: Uint8Array;
  /** Raw extensions (each built with {@linkcode extension}); `null` omits the block. */
  extensions?: Uint8Array[] | null;
  /** Overrides the extensions block length field. */
  extensionsLength?: number;
  /** Overrides the handshake length field. */
  handshakeLength?: number;
};

/** Builds a ClientHello handshake message (header included) from parts. */
export function buildHandshake(parts: HelloParts = {}): Uint8Array {
  const version = parts.version ?? 0x0303;
  const random = new Uint8Array(32).map((_, i) => i);
  const extensions = parts.extensions === undefined
    ? [extension(0, serverNameData([[0, ascii("www.allowed.test")]]))]
    : parts.extensions;
  let extensionsBlock: Uint8Array = new Uint8Array(0);
  if (extensions !== null) {
    const joined = concat(...extensions);
    const length = parts.extensionsLength ?? joined.length;
    extensionsBlock = concat(new Uint8Array([length >> 8, length & 0xff]), joined);
  }
  const body = concat(
    new Uint8Array([version >> 8, version & 0xff]),
    random,
    u8Prefixed(parts.sessionId ?? new Uint8Array(32).fill(7)),
    u16Prefixed(parts.cipherSuites ?? new Uint8Array([0x13, 0x01, 0x13, 0x02])),
    u8Prefixed(parts.compression ?? new Uint8Array([0])),
    extensionsBlock,
  );
  const length = parts.handshakeLength ?? body.length;
  return concat(
    new Uint8Array([parts.handshakeType ?? 1, length >> 16, (length >> 8) & 0xff, length & 0xff]),
    body,
  );
}

/** Builds a ClientHello in a single handshake record. */
export function buildHello(parts: HelloParts = {}): Uint8Array {
  return record(22, buildHandshake(parts));
}

/**
 * Lists the extensions of a well-formed ClientHello handshake message, in
 * order; throws on malformed input (only used on known-good captures).
 */
export function listExtensions(handshake: Uint8Array): Array<{ type: number; data: Uint8Array }> {
  let offset = 4 + 2 + 32;
  offset += 1 + handshake[offset];
  offset += 2 + ((handshake[offset] << 8) | handshake[offset + 1]);
  offset += 1 + handshake[offset];
  const end = offset + 2 + ((handshake[offset] << 8) | handshake[offset + 1]);
  if (end !== handshake.length) throw new Error("extensions block does not fill the hello");
  offset += 2;
  const out: Array<{ type: number; data: Uint8Array }> = [];
  while (offset < end) {
    const type = (handshake[offset] << 8) | handshake[offset + 1];
    const length = (handshake[offset + 2] << 8) | handshake[offset + 3];
    out.push({ type, data: handshake.subarray(offset + 4, offset + 4 + length) });
    offset += 4 + length;
  }
  if (offset !== end) throw new Error("extension overruns the block");
  return out;
}

/** Named groups of the key_share extension (51) entries, in order. */
export function keyShareGroups(handshake: Uint8Array): number[] {
  const share = listExtensions(handshake).find((e) => e.type === 51);
  if (share === undefined) return [];
  const data = share.data;
  const groups: number[] = [];
  let offset = 2;
  while (offset + 4 <= data.length) {
    groups.push((data[offset] << 8) | data[offset + 1]);
    offset += 4 + ((data[offset + 2] << 8) | data[offset + 3]);
  }
  return groups;
}

/** Hex of a 16-bit value as `0x11ec`. */
export function hex16(value: number): string {
  return `0x${value.toString(16).padStart(4, "0")}`;
}
