/**
 * One accepted connection from start to end: original destination, first bytes, decision,
 * upstream connect, replay of the bytes read, relay, closing line. Every failure costs this
 * connection only; nothing here throws to the accept loop.
 * @module
 */

import type { Libc } from "../ffi/libc.ts";
import { originalDestination } from "../ffi/original_dst.ts";
import { canonicalAddress, formatEndpoint } from "../ffi/sockaddr.ts";
import type { Config } from "./config.ts";
import { decideHttp, decideTls, type Decision, denialMessage, denialResponse } from "./decision.ts";
import { MAX_HEAD_BYTES, parseHttpHead } from "./http_head.ts";
import { type EventFields, log, logEvent } from "./log.ts";
import { readPreamble } from "./preamble.ts";
import { closeQuietly, errorName, relay } from "./relay.ts";
import { MAX_CLIENT_HELLO_BYTES, parseClientHello } from "./tls_client_hello.ts";

/** Which listener accepted the connection. */
export type Proto = "HTTP" | "HTTPS";

/** What a connection needs from the running proxy. */
export interface ConnectionContext {
  /** The configuration in force when the connection was accepted. */
  readonly config: Config;
  readonly libc: Libc;
  readonly fdSymbol: symbol;
  /** True when an address:port is one of the proxy's own listeners (never connect there). */
  readonly isOwnListener: (address: string, port: number) => boolean;
  /** Local endpoints of upstream connections in flight, to recognise a routing loop. */
  readonly upstreamEndpoints: Set<string>;
  /** Aborts relays still running when a graceful stop's drain period is over. */
  readonly stopSignal: AbortSignal;
}

/** How long a denied HTTP client may keep sending before the socket is closed under it. */
const DENY_LINGER_MS = 1000;

/** Handles one connection to the end. Never rejects. */
export async function handleConnection(
  conn: Deno.TcpConn,
  proto: Proto,
  ctx: ConnectionContext,
): Promise<void> {
  const started = Date.now();
  const remote = conn.remoteAddr;
  const peer = formatEndpoint(canonicalAddress(remote.hostname), remote.port);
  const fields: EventFields = { event: "DENIED", proto, peer, dst: "-" };
  try {
    // Ask the kernel before reading: the fd is certainly this connection's now.
    const origin = originalDestination(ctx.libc, conn, ctx.fdSymbol);
    let dstProblem: string | undefined;
    if (!origin.ok) dstProblem = "no_original_dst";
    else {
      const { address, port } = origin.destination;
      fields.dst = formatEndpoint(address, port);
      if (!origin.redirected) dstProblem = "not_redirected";
      else if (ctx.isOwnListener(address, port) || ctx.upstreamEndpoints.has(peer)) {
        dstProblem = "loop";
      }
    }

    const decision = await readAndDecide(conn, proto, ctx.config, fields);
    if (decision === null) return; // closed, timed out or refused while reading; logged
    if (!decision.verdict.allowed || dstProblem !== undefined || !origin.ok) {
      const denied: Extract<Decision, { allowed: false }> = decision.verdict.allowed
        ? {
          allowed: false,
          reason: dstProblem ?? "no_original_dst",
          status: 403,
          name: decision.verdict.name,
        }
        : decision.verdict;
      fields.reason = denied.reason;
      logEvent(fields);
      if (proto === "HTTP") {
        const message = dstProblem !== undefined && decision.verdict.allowed
          ? "the connection was not redirected to this proxy"
          : denialMessage(denied);
        await refuseHttp(conn, denialResponse(denied.status, message));
      }
      return;
    }

    fields.event = "ALLOWED";
    logEvent(fields);
    const upstream = await connectUpstream(origin.destination, ctx.config.connectTimeoutMs);
    if (!upstream.ok) {
      if (proto === "HTTP") {
        await refuseHttp(conn, denialResponse(502, "the upstream server could not be reached"));
      }
      logClosed(fields, started, 0, 0, upstream.error);
      return;
    }
    const upstreamEnd = endpointOf(upstream.conn.localAddr);
    ctx.upstreamEndpoints.add(upstreamEnd);
    try {
      let written = 0;
      while (written < decision.bytes.length) {
        written += await upstream.conn.write(decision.bytes.subarray(written));
      }
      const moved = await relay(conn, upstream.conn, {
        idleTimeoutMs: ctx.config.idleTimeoutMs,
        signal: ctx.stopSignal,
      });
      logClosed(fields, started, moved.up + written, moved.down, moved.error);
    } catch (error) {
      logClosed(fields, started, 0, 0, errorName(error));
    } finally {
      ctx.upstreamEndpoints.delete(upstreamEnd);
      closeQuietly(upstream.conn);
    }
  } catch (error) {
    // A bug, not a client: report it, but it still costs this connection only.
    log.error("connection handler failed: {error}", { error: errorName(error), peer });
  } finally {
    closeQuietly(conn);
  }
}

/** Reads the request head or ClientHello and decides; null when the read itself failed. */
async function readAndDecide(
  conn: Deno.TcpConn,
  proto: Proto,
  config: Config,
  fields: EventFields,
): Promise<{ verdict: Decision; bytes: Uint8Array } | null> {
  if (proto === "HTTP") {
    const read = await readPreamble(
      conn,
      parseHttpHead,
      MAX_HEAD_BYTES,
      config.firstBytesTimeoutMs,
    );
    if (!read.ok) return readFailed(conn, proto, fields, read.reason);
    const verdict = decideHttp(read.verdict, config.allowlist);
    nameFields(fields, "host", verdict);
    return { verdict, bytes: read.bytes };
  }
  const read = await readPreamble(
    conn,
    parseClientHello,
    MAX_CLIENT_HELLO_BYTES,
    config.firstBytesTimeoutMs,
  );
  if (!read.ok) return readFailed(conn, proto, fields, read.reason);
  const verdict = decideTls(read.verdict, config.allowlist);
  nameFields(fields, "sni", verdict);
  if (read.verdict.kind === "hello" && read.verdict.alpn.length > 0) {
    fields.alpn = read.verdict.alpn.join(",");
  }
  return { verdict, bytes: read.bytes };
}

function nameFields(fields: EventFields, key: "host" | "sni", verdict: Decision): void {
  const name = verdict.allowed ? verdict.name : (verdict.name ?? verdict.raw);
  if (name !== undefined) fields[key] = name;
}

async function readFailed(
  conn: Deno.TcpConn,
  proto: Proto,
  fields: EventFields,
  reason: string,
): Promise<null> {
  // A client that connects and closes without a byte is a probe, not a decision: log it
  // at debug only, so health checks do not flood the decision log.
  fields.reason = reason === "closed" ? "no_data" : reason;
  if (reason === "closed") log.debug("{event} {proto}", { ...fields });
  else logEvent(fields);
  if (proto === "HTTP" && reason === "too_large") {
    await refuseHttp(conn, denialResponse(431, "the request head is too large"));
  }
  return null;
}

/**
 * Sends a refusal, half-closes, and discards what the client still sends for a moment, so
 * that closing does not reset the connection before the client reads the response.
 */
async function refuseHttp(conn: Deno.TcpConn, response: Uint8Array): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), DENY_LINGER_MS);
  try {
    let written = 0;
    while (written < response.length) written += await conn.write(response.subarray(written));
    await conn.closeWrite();
    const sink = new Uint8Array(4096);
    for (let total = 0; total < 65536;) {
      const n = await conn.read(sink);
      if (n === null) break;
      total += n;
    }
  } catch {
    // The client went away or the linger ended: either way we are done.
  } finally {
    clearTimeout(timer);
  }
}

type Upstream = { ok: true; conn: Deno.TcpConn } | { ok: false; error: string };

async function connectUpstream(
  destination: { address: string; port: number },
  timeoutMs: number,
): Promise<Upstream> {
  try {
    const conn = await Deno.connect({
      hostname: destination.address,
      port: destination.port,
      signal: AbortSignal.timeout(timeoutMs),
    });
    return { ok: true, conn };
  } catch (error) {
    const name = errorName(error);
    return {
      ok: false,
      error: `connect_${name === "TimeoutError" || name === "AbortError" ? "timeout" : name}`,
    };
  }
}

function endpointOf(addr: Deno.NetAddr): string {
  return formatEndpoint(canonicalAddress(addr.hostname), addr.port);
}

function logClosed(
  fields: EventFields,
  started: number,
  up: number,
  down: number,
  error: string | undefined,
): void {
  logEvent({
    ...fields,
    event: "CLOSED",
    reason: undefined,
    up,
    down,
    duration_ms: Date.now() - started,
    error,
  });
}
