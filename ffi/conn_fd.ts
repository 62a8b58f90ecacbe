/**
 * Access to the raw file descriptor behind an accepted `Deno.TcpConn`.
 *
 * Deno has no public fd API (maintainers declined one); accepted TCP
 * connections carry the fd under an internal own symbol property described as
 * `Deno.internal.fd`. Because this is internal, {@link probeFdSupport} must
 * confirm at start-up, against a real connection, that the symbol exists and
 * that the number it holds really is that socket.
 *
 * @module
 */

import type { Libc } from "./libc.ts";
import { canonicalAddress } from "../src/ip_address.ts";
import { decodeSockaddr, SOCKADDR_STORAGE_SIZE } from "./sockaddr.ts";
import type { SocketAddress } from "./sockaddr.ts";
import { errnoName } from "./errno.ts";

/** Description of Deno's internal symbol holding a connection's raw fd. */
export const FD_SYMBOL_DESCRIPTION = "Deno.internal.fd";

/**
 * Finds the internal fd symbol on a connection, or undefined when absent
 * (connections from `Deno.connect`, TLS connections, other Deno versions).
 */
export function fdSymbolOf(conn: Deno.Conn): symbol | undefined {
  return Object.getOwnPropertySymbols(conn).find((s) => s.description === FD_SYMBOL_DESCRIPTION);
}

/**
 * Reads the raw fd of a connection through `symbol`; undefined unless it is a
 * non-negative integer, so a changed internal representation is never passed
 * on to libc.
 */
export function rawFdOf(conn: Deno.Conn, symbol: symbol): number | undefined {
  const value: unknown = Reflect.get(conn, symbol);
  return typeof value === "number" && Number.isInteger(value) && value >= 0 ? value : undefined;
}

/** Reused by every call (the answer is decoded before returning): no allocation per call. */
const SCRATCH = new Uint8Array(SOCKADDR_STORAGE_SIZE);
const SCRATCH_LENGTH = new Uint32Array(1);

/** Outcome of reading one of a socket's addresses through libc. */
export type SockaddrResult =
  | { ok: true; address: SocketAddress }
  | { ok: false; reason: string };

/**
 * Calls getsockname or getpeername on `fd` and decodes the answer. Failure
 * reasons read `getpeername_failed:ENOTCONN` or `getsockname_bad_sockaddr`.
 */
export function socketAddressOf(
  libc: Libc,
  fd: number,
  which: "getsockname" | "getpeername",
): SockaddrResult {
  const buf = SCRATCH;
  const len = SCRATCH_LENGTH;
  len[0] = buf.length;
  if (libc[which](fd, buf, len) !== 0) {
    return { ok: false, reason: `${which}_failed:${errnoName(libc.errno())}` };
  }
  const address = decodeSockaddr(buf, len[0]);
  return address === null ? { ok: false, reason: `${which}_bad_sockaddr` } : { ok: true, address };
}

/**
 * True when the kernel's view of the socket (`local`, `peer`) matches what
 * Deno reports for `conn`, comparing canonical address text and ports. This is
 * what makes an fd number safe to trust: a stale or reused fd belongs to a
 * different 4-tuple.
 */
export function fdMatchesConn(conn: Deno.Conn, local: SocketAddress, peer: SocketAddress): boolean {
  const l = conn.localAddr;
  const r = conn.remoteAddr;
  if (l.transport !== "tcp" || r.transport !== "tcp") return false;
  return canonicalAddress(l.hostname) === canonicalAddress(local.address) &&
    l.port === local.port &&
    canonicalAddress(r.hostname) === canonicalAddress(peer.address) &&
    r.port === peer.port;
}

/** Result of {@link probeFdSupport}. */
export type FdSupport = { ok: true; symbol: symbol } | { ok: false; reason: string };

/** Default time {@link probeFdSupport} may take before giving up. */
export const PROBE_DEADLINE_MS = 5000;

/**
 * Start-up self-test: opens a loopback listener, connects to it, accepts, and
 * checks that the accepted connection exposes the internal fd symbol and that
 * getsockname/getpeername on that fd agree with Deno's addresses. Everything
 * opened is closed again; the whole probe is bounded by `deadlineMs`. The
 * failure reason is a full sentence naming the Deno version and what was
 * missing, meant to be logged loudly before refusing to start.
 */
export async function probeFdSupport(
  libc: Libc,
  deadlineMs: number = PROBE_DEADLINE_MS,
): Promise<FdSupport> {
  const prefix = `raw fd access unavailable on Deno ${Deno.version.deno}`;
  const resources: { close(): void }[] = [];
  let finished = false;
  // Anything that opens after the deadline is closed at once instead of leaking.
  const track = <T extends { close(): void }>(resource: T): T => {
    if (finished) closeQuietly(resource);
    else resources.push(resource);
    return resource;
  };
  const work = (async (): Promise<FdSupport> => {
    const listener = track(Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" }));
    const connecting = Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }).then(
      track,
    );
    const accepting = listener.accept().then(track);
    const [, server] = await Promise.all([connecting, accepting]);
    return checkAccepted(libc, server, prefix);
  })().catch((err): FdSupport => {
    const detail = err instanceof Error ? err.message : String(err);
    return { ok: false, reason: `${prefix}: loopback probe connection failed: ${detail}` };
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<FdSupport>((resolve) => {
    timer = setTimeout(
      () => resolve({ ok: false, reason: `${prefix}: probe timed out after ${deadlineMs}ms` }),
      deadlineMs,
    );
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
    finished = true;
    // Closing the listener makes a still-pending accept reject; Promise.all handles that.
    for (const r of resources.reverse()) closeQuietly(r);
  }
}

function closeQuietly(resource: { close(): void }): void {
  try {
    resource.close();
  } catch {
    // already closed
  }
}

function checkAccepted(libc: Libc, server: Deno.TcpConn, prefix: string): FdSupport {
  const symbol = fdSymbolOf(server);
  if (symbol === undefined) {
    return {
      ok: false,
      reason:
        `${prefix}: accepted Deno.TcpConn has no own symbol property "${FD_SYMBOL_DESCRIPTION}" ` +
        `(needed to read SO_ORIGINAL_DST); use a Deno version that has it`,
    };
  }
  const fd = rawFdOf(server, symbol);
  if (fd === undefined) {
    const got = typeof Reflect.get(server, symbol);
    return {
      ok: false,
      reason: `${prefix}: "${FD_SYMBOL_DESCRIPTION}" holds a ${got}, not a file descriptor number`,
    };
  }
  const local = socketAddressOf(libc, fd, "getsockname");
  const peer = socketAddressOf(libc, fd, "getpeername");
  if (!local.ok || !peer.ok) {
    const why = !local.ok ? local.reason : (peer as { reason: string }).reason;
    return { ok: false, reason: `${prefix}: fd ${fd} from "${FD_SYMBOL_DESCRIPTION}": ${why}` };
  }
  if (!fdMatchesConn(server, local.address, peer.address)) {
    return {
      ok: false,
      reason: `${prefix}: fd ${fd} from "${FD_SYMBOL_DESCRIPTION}" is not the accepted ` +
        `connection (kernel says ${local.address.address}:${local.address.port} <- ` +
        `${peer.address.address}:${peer.address.port})`,
    };
  }
  return { ok: true, symbol };
}
