/**
 * Incremental, allocation-light parser for the first TLS handshake message a
 * client sends (the ClientHello), used to read the SNI without decrypting.
 *
 * The caller accumulates bytes across TCP reads and calls
 * {@linkcode parseClientHello} again with the growing buffer until the result
 * is no longer `incomplete`. The parser reassembles the handshake message
 * across TLS records (RFC 8446 §5.1) and denies on doubt: anything not
 * strictly well formed is `invalid`, as early as the bytes seen prove it.
 *
 * @module
 */

/**
 * Most bytes read from the wire (record headers included) before giving up on
 * a ClientHello. Real hellos are under 2 KiB, even with post-quantum key
 * shares; this bound keeps a slow or hostile client from holding memory.
 */
export const MAX_CLIENT_HELLO_BYTES = 65536;

/**
 * Outcome of {@linkcode parseClientHello}.
 *
 * - `incomplete`: every byte so far is consistent with a ClientHello; read more.
 * - `hello`: a complete, well-formed ClientHello. `serverName` is the single
 *   host_name of the server_name extension (printable ASCII, not yet
 *   validated as a DNS name) or `null` when absent; `alpn` lists the offered
 *   protocol names (each byte mapped to one char, so nothing is lost); `ech`
 *   tells whether an encrypted_client_hello extension is present (then
 *   `serverName` is only the outer, public name); `bytesUsed` counts the
 *   bytes up to the end of the record that completed the hello.
 * - `invalid`: the bytes are not a ClientHello we accept; `reason` is a
 *   snake_case word such as `not_tls`, `unexpected_record`,
 *   `bad_record_version`, `bad_record_length`, `not_client_hello`,
 *   `too_large`, `trailing_handshake_data`, `truncated_client_hello`,
 *   `bad_client_hello_version`, `bad_session_id`, `bad_cipher_suites`,
 *   `bad_compression_methods`, `bad_extensions_length`,
 *   `bad_extension_length`, `duplicate_extension`, `bad_server_name_list`,
 *   `multiple_server_names`, `empty_server_name`, `invalid_server_name`,
 *   `bad_alpn` (or `parser_error`, which no input is known to reach).
 */
export type ClientHelloResult =
  | { kind: "incomplete" }
  | { kind: "hello"; serverName: string | null; alpn: string[]; ech: boolean; bytesUsed: number }
  | { kind: "invalid"; reason: string };

/**
 * Outcome of {@linkcode scanClientHello}: a {@linkcode ClientHelloResult}
 * whose `incomplete` also carries `needBytes`, always more than the bytes
 * given: the buffer length below which the result cannot become `hello` (it
 * can become `invalid` sooner). A caller may skip re-parsing until it holds
 * that many bytes, so a client trickling tiny records costs O(n log n) in
 * total instead of O(n²).
 */
export type ClientHelloScan =
  | Exclude<ClientHelloResult, { kind: "incomplete" }>
  | { kind: "incomplete"; needBytes: number };

const CONTENT_TYPE_HANDSHAKE = 22;
const HANDSHAKE_TYPE_CLIENT_HELLO = 1;
const RECORD_HEADER_BYTES = 5;
const HANDSHAKE_HEADER_BYTES = 4;
const MAX_RECORD_LENGTH = 16384;
const EXTENSION_SERVER_NAME = 0x0000;
const EXTENSION_ALPN = 0x0010;
const EXTENSION_ECH = 0xfe0d;
const NAME_TYPE_HOST_NAME = 0;

const INCOMPLETE: ClientHelloResult = Object.freeze({ kind: "incomplete" });

function incomplete(needBytes: number): ClientHelloScan {
  return { kind: "incomplete", needBytes };
}

function invalid(reason: string): { kind: "invalid"; reason: string } {
  return { kind: "invalid", reason };
}

/**
 * Parses the ClientHello at the start of `bytes` (the first bytes a client
 * sent on a TCP connection). Never throws, whatever the input; runs in time
 * linear in `bytes.length` and looks at no more than
 * {@linkcode MAX_CLIENT_HELLO_BYTES} of it.
 */
export function parseClientHello(bytes: Uint8Array): ClientHelloResult {
  const scan = scanClientHello(bytes);
  return scan.kind === "incomplete" ? INCOMPLETE : scan;
}

/**
 * {@linkcode parseClientHello} that also says, when the hello is
 * incomplete, how many bytes must be buffered before it can complete
 * (see {@linkcode ClientHelloScan}). Same rules, same cost.
 */
export function scanClientHello(bytes: Uint8Array): ClientHelloScan {
  try {
    return parseRecords(bytes);
  } catch {
    // Unreachable by construction (every read is bounds-checked); kept so a
    // future bug denies the connection instead of crashing the proxy.
    return invalid("parser_error");
  }
}

function parseRecords(bytes: Uint8Array): ClientHelloScan {
  const limit = Math.min(bytes.length, MAX_CLIENT_HELLO_BYTES);
  if (limit === 0) return incomplete(1);

  // The handshake message is usually in one record: read it in place then,
  // and copy into `joined` only when it spans several records.
  let firstFragment = -1;
  let joined: Uint8Array | null = null;
  let hsLength = 0;
  let messageEnd = -1; // Length of the whole handshake message, once known.
  let bytesUsed = -1;
  let need = limit + 1; // Fewest total bytes that could complete the hello.
  let pos = 0;

  while (pos < limit) {
    if (bytes[pos] !== CONTENT_TYPE_HANDSHAKE) {
      return invalid(pos === 0 ? "not_tls" : "unexpected_record");
    }
    if (pos + 1 < limit && bytes[pos + 1] !== 3) return invalid("bad_record_version");
    if (pos + 2 < limit && bytes[pos + 2] > 4) return invalid("bad_record_version");
    // A high length byte above 0x40 already proves a length over 2^14.
    if (pos + 3 < limit && bytes[pos + 3] > MAX_RECORD_LENGTH >> 8) {
      return invalid("bad_record_length");
    }
    if (pos + RECORD_HEADER_BYTES > limit) break;
    const recordLength = (bytes[pos + 3] << 8) | bytes[pos + 4];
    // RFC 8446 §5.1: zero-length handshake fragments are not allowed.
    if (recordLength === 0 || recordLength > MAX_RECORD_LENGTH) {
      return invalid("bad_record_length");
    }
    const fragmentStart = pos + RECORD_HEADER_BYTES;
    const recordEnd = fragmentStart + recordLength;
    const fragmentEnd = Math.min(limit, recordEnd);
    const hsBefore = hsLength;

    if (firstFragment < 0) {
      firstFragment = fragmentStart;
    } else {
      if (joined === null) {
        joined = new Uint8Array(limit);
        joined.set(bytes.subarray(firstFragment, firstFragment + hsLength));
      }
      // Tiny fragments are copied by hand: a subarray per record would
      // dominate the cost of a hello split into thousands of 1-byte records.
      if (fragmentEnd - fragmentStart < 64) {
        for (let i = fragmentStart, j = hsLength; i < fragmentEnd; i++, j++) joined[j] = bytes[i];
      } else {
        joined.set(bytes.subarray(fragmentStart, fragmentEnd), hsLength);
      }
    }
    hsLength += fragmentEnd - fragmentStart;

    if (
      hsBefore === 0 && hsLength > 0 &&
      hsByte(bytes, joined, firstFragment, 0) !== HANDSHAKE_TYPE_CLIENT_HELLO
    ) {
      return invalid("not_client_hello");
    }
    if (messageEnd < 0 && hsLength >= HANDSHAKE_HEADER_BYTES) {
      messageEnd = HANDSHAKE_HEADER_BYTES +
        ((hsByte(bytes, joined, firstFragment, 1) << 16) |
          (hsByte(bytes, joined, firstFragment, 2) << 8) |
          hsByte(bytes, joined, firstFragment, 3));
    }
    if (messageEnd >= 0) {
      // The ClientHello must be alone in the records carrying it: nothing
      // else may be sent before the server answers.
      if (hsBefore + recordLength > messageEnd) return invalid("trailing_handshake_data");
      // Even if the rest came in full-size records, it would not fit: deny
      // now rather than after reading up to the limit.
      const remaining = messageEnd - (hsBefore + recordLength);
      need = recordEnd + minimumWireBytes(remaining);
      if (need > MAX_CLIENT_HELLO_BYTES) return invalid("too_large");
    }
    if (fragmentEnd < recordEnd) break;
    pos = recordEnd;
    if (hsLength === messageEnd) {
      bytesUsed = pos;
      break;
    }
  }

  if (hsLength >= 1 && messageEnd >= 0) {
    const hs = joined === null
      ? bytes.subarray(firstFragment, firstFragment + hsLength)
      : joined.subarray(0, hsLength);
    const body = parseBody(hs, messageEnd, bytesUsed);
    if (body.kind === "invalid") return body;
    if (body.kind === "hello" && bytesUsed >= 0) return body;
  }
  // The `need` check above already denies a buffer at the limit that is still
  // incomplete; both guards below are kept in case that reasoning breaks.
  if (bytes.length >= MAX_CLIENT_HELLO_BYTES) return invalid("too_large");
  return incomplete(Math.max(need, bytes.length + 1));
}

/** Byte `i` of the handshake message, wherever it currently lives. */
function hsByte(bytes: Uint8Array, joined: Uint8Array | null, first: number, i: number): number {
  return joined === null ? bytes[first + i] : joined[i];
}

/** Fewest wire bytes that can carry `length` more handshake bytes. */
function minimumWireBytes(length: number): number {
  return length + RECORD_HEADER_BYTES * Math.ceil(length / MAX_RECORD_LENGTH);
}

type BodyResult =
  | { kind: "incomplete" }
  | Extract<ClientHelloResult, { kind: "hello" }>
  | { kind: "invalid"; reason: string };

/**
 * Bounds-checked reader over a possibly partial handshake message: `end` is
 * where the message ends (known from its header), `available` how many of its
 * bytes arrived. A read past `end` proves the message malformed; a read past
 * `available` only means more bytes are needed.
 */
class Reader {
  bytes: Uint8Array = EMPTY;
  offset = 0;
  end = 0;
  available = 0;
  /** Starts over on `bytes`, from `offset`, for a message ending at `end`. */
  reset(bytes: Uint8Array, offset: number, end: number): void {
    this.bytes = bytes;
    this.offset = offset;
    this.end = end;
    this.available = Math.min(bytes.length, end);
  }
  /** "ok" when `n` bytes can be read now, "short" or "bad" otherwise. */
  need(n: number): "ok" | "short" | "bad" {
    if (this.offset + n > this.end) return "bad";
    if (this.offset + n > this.available) return "short";
    return "ok";
  }
  u8(): number {
    return this.bytes[this.offset++];
  }
  u16(): number {
    const value = (this.bytes[this.offset] << 8) | this.bytes[this.offset + 1];
    this.offset += 2;
    return value;
  }
}

const EMPTY = new Uint8Array(0);

/**
 * The one reader of every parse (parsing is synchronous). A reader made per
 * hello had a hidden class that died with the last of them, and V8 dropped
 * the parser's optimized code with it at the next full collection
 * (BENCHMARKS.md, "Optimized code kept across the idle collection").
 */
const reader = new Reader();

/**
 * Parses the handshake message `hs` (ending at `messageEnd`, -1 while its
 * header is incomplete); a hello carries `bytesUsed` as given.
 */
function parseBody(hs: Uint8Array, messageEnd: number, bytesUsed: number): BodyResult {
  // Until the header is complete the end is unknown; the prefix is only
  // checked for the handshake type, already done by the caller.
  if (messageEnd < 0) return { kind: "incomplete" };
  reader.reset(hs, HANDSHAKE_HEADER_BYTES, messageEnd);
  try {
    return readBody(reader, hs, messageEnd, bytesUsed);
  } finally {
    // A joined hello can be 64 KiB: not held until the next one.
    reader.reset(EMPTY, 0, 0);
  }
}

function readBody(r: Reader, hs: Uint8Array, messageEnd: number, bytesUsed: number): BodyResult {
  const more = { kind: "incomplete" } as const;
  const field = (n: number): "ok" | BodyResult => {
    const status = r.need(n);
    if (status === "ok") return "ok";
    return status === "short" ? more : invalid("truncated_client_hello") as BodyResult;
  };

  let status = field(2);
  if (status !== "ok") return status;
  const version = r.u16();
  // RFC 8446 §4.1.2: legacy_version is 0x0303 for TLS 1.2 and 1.3 clients.
  if (version < 0x0300 || version > 0x0303) return invalid("bad_client_hello_version");

  status = field(32);
  if (status !== "ok") return status;
  r.offset += 32;

  status = field(1);
  if (status !== "ok") return status;
  const sessionIdLength = r.u8();
  if (sessionIdLength > 32) return invalid("bad_session_id");
  status = field(sessionIdLength);
  if (status !== "ok") return status;
  r.offset += sessionIdLength;

  status = field(2);
  if (status !== "ok") return status;
  const cipherSuitesLength = r.u16();
  if (cipherSuitesLength < 2 || cipherSuitesLength % 2 !== 0) return invalid("bad_cipher_suites");
  if (r.need(cipherSuitesLength) === "bad") return invalid("bad_cipher_suites");
  status = field(cipherSuitesLength);
  if (status !== "ok") return status;
  r.offset += cipherSuitesLength;

  status = field(1);
  if (status !== "ok") return status;
  const compressionLength = r.u8();
  if (compressionLength < 1 || r.need(compressionLength) === "bad") {
    return invalid("bad_compression_methods");
  }
  status = field(compressionLength);
  if (status !== "ok") return status;
  r.offset += compressionLength;

  // Extensions are optional before TLS 1.3 (RFC 5246 §7.4.1.2).
  if (r.offset === messageEnd) {
    return { kind: "hello", serverName: null, alpn: [], ech: false, bytesUsed };
  }
  status = field(2);
  if (status !== "ok") return status;
  const extensionsLength = r.u16();
  if (r.offset + extensionsLength !== messageEnd) return invalid("bad_extensions_length");

  const seen = new Set<number>();
  let serverName: string | null = null;
  let alpn: string[] = [];
  let ech = false;
  while (r.offset < messageEnd) {
    const header = r.need(4);
    if (header === "bad") return invalid("bad_extension_length");
    if (header === "short") return more;
    const type = r.u16();
    const length = r.u16();
    if (seen.has(type)) return invalid("duplicate_extension");
    seen.add(type);
    const data = r.need(length);
    if (data === "bad") return invalid("bad_extension_length");
    if (data === "short") return more;
    const start = r.offset;
    r.offset += length;
    const extension = hs.subarray(start, start + length);
    if (type === EXTENSION_SERVER_NAME) {
      const name = parseServerName(extension);
      if (typeof name === "object" && name !== null) return name;
      serverName = name;
    } else if (type === EXTENSION_ALPN) {
      const protocols = parseAlpn(extension);
      if (protocols === null) return invalid("bad_alpn");
      alpn = protocols;
    } else if (type === EXTENSION_ECH) {
      ech = true;
    }
  }
  return { kind: "hello", serverName, alpn, ech, bytesUsed };
}

/**
 * Parses the server_name extension body (RFC 6066 §3). Returns the host name,
 * `null` when the only entry is not a host_name, or an `invalid` result.
 */
function parseServerName(data: Uint8Array): string | null | BodyResult {
  if (data.length < 2) return invalid("bad_server_name_list");
  const listLength = (data[0] << 8) | data[1];
  if (listLength !== data.length - 2 || listLength === 0) return invalid("bad_server_name_list");
  let offset = 2;
  let entries = 0;
  let name: string | null = null;
  while (offset < data.length) {
    if (offset + 3 > data.length) return invalid("bad_server_name_list");
    const nameType = data[offset];
    const nameLength = (data[offset + 1] << 8) | data[offset + 2];
    offset += 3;
    if (offset + nameLength > data.length) return invalid("bad_server_name_list");
    entries++;
    // Several names would let a client show the policy one name and the
    // server another: refuse outright.
    if (entries > 1) return invalid("multiple_server_names");
    if (nameType === NAME_TYPE_HOST_NAME) {
      if (nameLength === 0) return invalid("empty_server_name");
      name = printableAscii(data, offset, offset + nameLength);
      if (name === null) return invalid("invalid_server_name");
    }
    offset += nameLength;
  }
  return name;
}

/** Decodes bytes that must all be printable ASCII (0x21..0x7e); else `null`. */
function printableAscii(data: Uint8Array, start: number, end: number): string | null {
  let text = "";
  for (let i = start; i < end; i++) {
    const byte = data[i];
    if (byte < 0x21 || byte > 0x7e) return null;
    text += String.fromCharCode(byte);
  }
  return text;
}

/** Parses the ALPN extension body (RFC 7301 §3.1); `null` when malformed. */
function parseAlpn(data: Uint8Array): string[] | null {
  if (data.length < 2) return null;
  const listLength = (data[0] << 8) | data[1];
  if (listLength !== data.length - 2 || listLength === 0) return null;
  const protocols: string[] = [];
  let offset = 2;
  while (offset < data.length) {
    const length = data[offset];
    offset += 1;
    if (length === 0 || offset + length > data.length) return null;
    let protocol = "";
    for (let i = offset; i < offset + length; i++) protocol += String.fromCharCode(data[i]);
    protocols.push(protocol);
    offset += length;
  }
  return protocols;
}
