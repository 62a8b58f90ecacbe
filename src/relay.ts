/**
 * The byte relay between a client and its upstream: one read/write loop per direction,
 * half-close carried across with `closeWrite()`, an idle deadline over both directions.
 *
 * Not `readable.pipeTo(writable)`: that closes both sockets fully at EOF (no half-close)
 * and allocates a fresh chunk per read.
 * @module
 */

import { closeQuietly, errorName, isClosed, writeAll } from "./socket.ts";

/** What a finished relay moved, and why it ended. */
export interface RelayResult {
  /** Bytes from client to upstream. */
  up: number;
  /** Bytes from upstream to client. */
  down: number;
  /** Why it ended early, if it did: `idle_timeout`, `aborted` or a socket error name. */
  error?: string;
}

/**
 * Looks at each client-to-upstream chunk and forwards what may pass (HTTP requests after the
 * first are checked this way). `stop` ends the client-to-upstream direction: the upstream
 * gets a half-close, its answers to earlier requests still reach the client, and then
 * `finalResponse` (if any) is written to the client before it is closed.
 */
export type UpstreamInspector = (
  chunk: Uint8Array,
  forward: (bytes: Uint8Array) => Promise<void>,
) => Promise<{ stop: false } | { stop: true; finalResponse?: Uint8Array }>;

/** Options of `relay`. */
export interface RelayOptions {
  /** Close both sides after this long with no byte either way. */
  idleTimeoutMs: number;
  /** Ends the relay at once (graceful stop past its drain period). */
  signal?: AbortSignal;
  /** Inspects and forwards client bytes instead of a plain copy. */
  inspectUp?: UpstreamInspector;
  /**
   * Sees each upstream-to-client chunk before it is written (never changes it), then `null`
   * once that direction has ended, however it ended.
   */
  watchDown?: (chunk: Uint8Array | null) => void;
  /**
   * The client direction ended before the relay began (a request in the first flight was
   * refused): half-close the upstream at once, and after its last byte send this response.
   */
  refused?: Uint8Array;
}

/**
 * Each direction starts with a small buffer, since a pending read holds its buffer and most
 * connections are idle most of the time; a read that fills the buffer moves the direction
 * up the ladder (2 KiB → 16 KiB → 128 KiB), so bulk transfers reach the large size at once.
 */
const FIRST_BUFFER = 2 * 1024;
const LARGEST_BUFFER = 128 * 1024;
const GROWTH = 8;

/**
 * Relays until both directions have reached EOF, either side fails, the idle deadline
 * passes or the signal aborts; then closes both connections. Never rejects.
 */
export async function relay(
  client: Deno.Conn,
  upstream: Deno.Conn,
  options: RelayOptions,
): Promise<RelayResult> {
  const result: RelayResult = { up: 0, down: 0 };
  let lastActivity = Date.now();
  let closed = false;

  const closeBoth = (why?: string) => {
    if (closed) return;
    closed = true;
    if (why !== undefined && result.error === undefined) result.error = why;
    closeQuietly(client);
    closeQuietly(upstream);
  };

  // Written to the client after the upstream's last byte, when an inspector stopped the relay.
  let finalToClient: Uint8Array | undefined = options.refused;
  let ended = 0;

  const pump = async (
    from: Deno.Conn,
    to: Deno.Conn,
    count: (n: number) => void,
    inspect?: UpstreamInspector,
    watch?: (chunk: Uint8Array | null) => void,
  ) => {
    let buffer = new Uint8Array(FIRST_BUFFER);
    const forward = (bytes: Uint8Array) => writeAll(to, bytes);
    try {
      while (to !== upstream || options.refused === undefined) {
        const n = await from.read(buffer);
        if (n === null) break;
        lastActivity = Date.now();
        count(n);
        if (watch !== undefined) watch(buffer.subarray(0, n));
        if (inspect === undefined) await writeAll(to, buffer.subarray(0, n));
        else {
          const verdict = await inspect(buffer.subarray(0, n), forward);
          if (verdict.stop) {
            finalToClient = verdict.finalResponse;
            break;
          }
        }
        if (n === buffer.length && buffer.length < LARGEST_BUFFER) {
          buffer = new Uint8Array(buffer.length * GROWTH);
        }
      }
      if (to === client && finalToClient !== undefined) await writeAll(client, finalToClient);
      // EOF: pass the half-close on and let the other direction finish on its own. When this
      // is the second direction to end, closing both sends the FIN: no separate shutdown.
      if (++ended === 2) closeBoth();
      else if (!isClosed(to)) await to.closeWrite();
    } catch (error) {
      closeBoth(closed ? undefined : errorName(error));
    } finally {
      watch?.(null);
    }
  };

  let timer: ReturnType<typeof setTimeout> | undefined;
  const armIdle = (delay: number) => {
    timer = setTimeout(() => {
      const idleFor = Date.now() - lastActivity;
      if (idleFor >= options.idleTimeoutMs) closeBoth("idle_timeout");
      else armIdle(options.idleTimeoutMs - idleFor);
    }, delay);
  };
  armIdle(options.idleTimeoutMs);
  const onAbort = () => closeBoth("aborted");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();

  try {
    await Promise.all([
      pump(client, upstream, (n) => result.up += n, options.inspectUp),
      pump(upstream, client, (n) => result.down += n, undefined, options.watchDown),
    ]);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
    closeBoth();
  }
  return result;
}
