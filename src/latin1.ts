/**
 * Bytes as latin1 text: one byte, one UTF-16 code unit, so every byte value survives and no
 * replacement character appears (`TextDecoder("latin1")` is windows-1252, which maps 0x80–0x9f
 * elsewhere). The parsers read protocol text this way and judge the bytes themselves.
 * @module
 */

/** Below the engine's argument limit, so a long head is converted in a few calls. */
const CHUNK = 4096;

/** `bytes[start, end)` as latin1 text. */
export function latin1(bytes: Uint8Array, start = 0, end: number = bytes.length): string {
  // `apply` with the typed array itself: spreading it (`...view`) goes through the iterator
  // protocol, about five times slower for the short strings of a request head.
  if (end - start <= CHUNK) {
    return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
  }
  let s = "";
  for (let i = start; i < end; i += CHUNK) {
    const part = bytes.subarray(i, Math.min(end, i + CHUNK));
    s += String.fromCharCode.apply(null, part as unknown as number[]);
  }
  return s;
}
