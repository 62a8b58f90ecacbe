/**
 * Recovers the pre-NAT destination of a connection that iptables REDIRECTed
 * to the proxy, via getsockopt(SO_ORIGINAL_DST) on the accepted socket.
 *
 * @module
 */

import type { Libc } from "./libc.ts";
import { errnoName } from "./errno.ts";
import { fdMatchesConn, rawFdOf, socketAddressOf } from "./conn_fd.ts";
import { decodeSockaddr, SOCKADDR_STORAGE_SIZE, type SocketAddress } from "./sockaddr.ts";

/** `SOL_IP`: option level for IPv4 (and v4-mapped connections on IPv6 sockets). */
export const SOL_IP = 0;
/** `SOL_IPV6`. */
export const SOL_IPV6 = 41;
/** `SO_ORIGINAL_DST` from linux/netfilter_ipv4.h; answers a `sockaddr_in`. */
export const SO_ORIGINAL_DST = 80;
/** `IP6T_SO_ORIGINAL_DST` from linux/netfilter_ipv6/ip6_tables.h; answers a `sockaddr_in6`. */
export const IP6T_SO_ORIGINAL_DST = 80;

/** Reused by every call (the answer is decoded before returning): no allocation per call. */
const SCRATCH = new Uint8Array(SOCKADDR_STORAGE_SIZE);
const SCRATCH_LENGTH = new Uint32Array(1);

/**
 * Outcome of {@link originalDestination}. `redirected` is false when the
 * original destination is the socket's own local address, i.e. the client
 * dialled the proxy port directly (callers deny that as `not_redirected`).
 * Failure reasons: `no_fd`, `fd_mismatch`, `<call>_failed:<ERRNO>` (e.g.
 * `getsockopt_failed:ENOENT` when conntrack has no entry), `<call>_bad_sockaddr`.
 */
export type OriginalDstResult =
  | { ok: true; destination: SocketAddress; redirected: boolean }
  | { ok: false; reason: string };

/**
 * Reads the original destination of an accepted TCP connection. Before
 * trusting the fd it checks that the kernel's peer and local addresses of the
 * fd equal `conn.remoteAddr` / `conn.localAddr`, so a closed or reused fd can
 * never yield another connection's destination. Picks the IPv4 option for
 * IPv4 and v4-mapped sockets, the IPv6 one otherwise. Never throws.
 */
export function originalDestination(
  libc: Libc,
  conn: Deno.TcpConn,
  fdSymbol: symbol,
): OriginalDstResult {
  try {
    return lookup(libc, conn, fdSymbol);
  } catch (err) {
    // Defensive: a closed conn's address getters or an FFI surprise must deny, not crash.
    const detail = err instanceof Error ? err.name : typeof err;
    return { ok: false, reason: `error:${detail}` };
  }
}

function lookup(libc: Libc, conn: Deno.TcpConn, fdSymbol: symbol): OriginalDstResult {
  const fd = rawFdOf(conn, fdSymbol);
  if (fd === undefined) return { ok: false, reason: "no_fd" };
  const peer = socketAddressOf(libc, fd, "getpeername");
  if (!peer.ok) return peer;
  const local = socketAddressOf(libc, fd, "getsockname");
  if (!local.ok) return local;
  if (!fdMatchesConn(conn, local.address, peer.address)) {
    return { ok: false, reason: "fd_mismatch" };
  }

  return originalDestinationOfFd(libc, fd, local.address);
}

/**
 * The original destination of the accepted socket `fd` whose local address is `local`, for a
 * caller that accepted the socket itself and so knows the fd is that connection's. Never
 * throws.
 */
export function originalDestinationOfFd(
  libc: Libc,
  fd: number,
  local: SocketAddress,
): OriginalDstResult {
  // Decoded addresses are canonical: a v4-mapped local is a dotted quad, and its conntrack
  // entry is IPv4.
  const v4 = !local.address.includes(":");
  const buf = SCRATCH;
  const len = SCRATCH_LENGTH;
  len[0] = buf.length;
  const level = v4 ? SOL_IP : SOL_IPV6;
  const option = v4 ? SO_ORIGINAL_DST : IP6T_SO_ORIGINAL_DST;
  if (libc.getsockopt(fd, level, option, buf, len) !== 0) {
    return { ok: false, reason: `getsockopt_failed:${errnoName(libc.errno())}` };
  }
  const destination = decodeSockaddr(buf, len[0]);
  if (destination === null || destination.family !== (v4 ? 4 : 6)) {
    return { ok: false, reason: "getsockopt_bad_sockaddr" };
  }
  const redirected = !(destination.address === local.address && destination.port === local.port);
  return { ok: true, destination, redirected };
}
