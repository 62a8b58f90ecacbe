/**
 * One accepted connection from start to end: original destination, first bytes, decision,
 * destination pinning, upstream connect, replay of the bytes read, relay (with every later
 * HTTP request checked), closing line. Every failure costs this connection only; nothing
 * here throws to the accept loop.
 * @module
 */

import type { Greeting, KernelRelay, KernelRelayResult } from "../ffi/kernel_relay.ts";
import type { Libc } from "../ffi/libc.ts";
import { originalDestination, type OriginalDstResult } from "../ffi/original_dst.ts";
import type { SocketAddress } from "../ffi/sockaddr.ts";
import { canonicalAddress, formatEndpoint } from "./ip_address.ts";
import type { Allowlist } from "./allowlist.ts";
import type { Config } from "./config.ts";
import {
  type Decision,
  denialMessage,
  denialResponse,
  DENY_LINGER_BYTES,
  DENY_LINGER_MS,
  HEAD_TOO_LARGE,
  UPSTREAM_UNREACHABLE,
} from "./decision.ts";
import { decideDestination } from "./destination_pin.ts";
import { decideFirst, decideHead, decideHello, type FirstVerdict } from "./first_verdict.ts";
import type { DnsCache } from "./dns_cache.ts";
import { HttpHeadScanner, MAX_HEAD_BYTES } from "./http_head.ts";
import { requestCheck, requestEvents } from "./request_check.ts";
import { log, logEvent, logLines } from "./log.ts";
import type { Tally } from "./event_tally.ts";
import { closedFields, type EventFields } from "./log_line.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { readPreamble } from "./preamble.ts";
import { relay, type UpstreamInspector } from "./relay.ts";
import { closeQuietly, errorName, writeAll } from "./socket.ts";
import { selectAllowlist } from "./source_policy.ts";
import { MAX_CLIENT_HELLO_BYTES, scanClientHello } from "./tls_client_hello.ts";

/** Which listener accepted the connection. */
export type Proto = "HTTP" | "HTTPS";

/** What a connection needs from the running proxy. */
export interface ConnectionContext {
  /** The configuration in force when the connection was accepted. */
  readonly config: Config;
  /** The configuration in force now (a reload applies to later HTTP requests too). */
  readonly currentConfig: () => Config;
  readonly libc: Libc;
  readonly fdSymbol: symbol;
  readonly dns: DnsCache;
  readonly metrics: ProxyMetrics;
  /** True when an address:port is one of the proxy's own listeners (never connect there). */
  readonly isOwnListener: (address: string, port: number) => boolean;
  /**
   * Local endpoints of Deno's upstream connections in flight, to recognise a routing loop (the
   * relay thread checks its own upstream sockets and says so in the greeting).
   */
  readonly upstreamEndpoints: Set<string>;
  /** Aborts relays still running when a graceful stop's drain period is over. */
  readonly stopSignal: AbortSignal;
}

type Denial = Extract<Decision, { allowed: false }>;

const EMPTY = new Uint8Array(0);

/**
 * Handles one connection to the end. `source` is the client's canonical address, when the
 * caller has it already. Never rejects.
 */
export async function handleConnection(
  conn: Deno.TcpConn,
  proto: Proto,
  ctx: ConnectionContext,
  source: string = canonicalAddress(conn.remoteAddr.hostname),
): Promise<void> {
  const started = Date.now();
  // Small writes (a TLS Finished, then the first request) must not wait for Nagle and a
  // delayed ACK: measured 40 ms at p99 for new TLS connections without this.
  conn.setNoDelay(true);
  const remote = conn.remoteAddr;
  const peer = formatEndpoint(source, remote.port);
  const fields: EventFields = { event: "DENIED", proto, peer, dst: "-" };
  const { config } = ctx;
  // When a graceful stop's drain period ends, a connection still reading its first bytes,
  // resolving or connecting is cut too (the relay watches the same signal).
  let connecting: AbortController | undefined;
  const onStop = () => {
    closeQuietly(conn);
    connecting?.abort();
  };
  ctx.stopSignal.addEventListener("abort", onStop, { once: true });
  try {
    // Ask the kernel before reading: the fd is certainly this connection's now.
    const target = destinationOf(originalDestination(ctx.libc, conn, ctx.fdSymbol), ctx, fields);
    const allowlist = selectAllowlist(config.sourcePolicy, config.allowlist, source);
    const first = await readAndDecide(conn, proto, config, allowlist, fields);
    if (first === null) {
      ctx.metrics.connection(proto, "denied", fields.reason);
      return; // closed, timed out or too large while reading; logged
    }
    const outcome = await settle(proto, ctx, fields, target, first);
    if (outcome === null) return;
    if (!outcome.forward) {
      if (proto === "HTTP") {
        await refuseHttp(conn, denialResponse(outcome.denial.status, outcome.message));
      }
      return;
    }
    const { connectTo, verdict } = outcome;

    const connectStarted = performance.now();
    connecting = new AbortController();
    const upstream = await connectUpstream(connectTo, config.connectTimeoutMs, connecting);
    connecting = undefined;
    if (!upstream.ok) {
      if (proto === "HTTP") {
        await refuseHttp(conn, UPSTREAM_UNREACHABLE);
      }
      logClosed(fields, started, 0, 0, upstream.error);
      return;
    }
    ctx.metrics.connectSeconds((performance.now() - connectStarted) / 1000);
    const { hostname, port } = upstream.conn.localAddr;
    const upstreamEnd = formatEndpoint(hostname, port);
    ctx.upstreamEndpoints.add(upstreamEnd);
    try {
      const check = proto === "HTTP"
        ? requestCheck({
          pinnedName: verdict.allowed ? verdict.name : null,
          policy: () => {
            const now = ctx.currentConfig();
            return {
              allowlist: selectAllowlist(now.sourcePolicy, now.allowlist, source),
              audit: now.mode === "audit",
            };
          },
          fields,
          metrics: ctx.metrics,
        })
        : undefined;
      const { up, refused } = await replayFirst(first, upstream.conn, check?.inspect);
      const moved = await relay(conn, upstream.conn, {
        idleTimeoutMs: config.idleTimeoutMs,
        signal: ctx.stopSignal,
        inspectUp: check?.inspect,
        watchDown: check?.watch,
        refused,
      });
      ctx.metrics.bytes(moved.up + up, moved.down);
      logClosed(fields, started, moved.up + up, moved.down, moved.error);
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
    ctx.stopSignal.removeEventListener("abort", onStop);
    closeQuietly(conn);
  }
}

/**
 * A connection accepted and read by the relay thread: decided here like any other, then
 * forwarded (connected and relayed there, every later HTTP request checked there), refused
 * (HTTP: the thread answers) or dismissed (TLS: closed without a word). Every greeting with a
 * first flight gets exactly one answer. Never rejects.
 */
export async function handleGreeting(
  greeting: Greeting,
  plane: KernelRelay,
  ctx: ConnectionContext,
): Promise<void> {
  const { id, source, read, proto } = greeting;
  const peer = formatEndpoint(source, greeting.port);
  const fields: EventFields = { event: "DENIED", proto, peer, dst: "-" };
  let answered = !read.ok; // a failed read was ended by the thread already
  try {
    const target = destinationOf(greeting.origin, ctx, fields, greeting.loop);
    if (!read.ok) {
      logReadFailure(fields, read.reason);
      ctx.metrics.connection(proto, "denied", fields.reason);
      return;
    }
    const { config } = ctx;
    const allowlist = selectAllowlist(config.sourcePolicy, config.allowlist, source);
    const first = decideFirst(read, allowlist, fields);
    const outcome = await settle(proto, ctx, fields, target, first);
    if (outcome === null) return;
    if (!outcome.forward) {
      if (proto === "HTTP") {
        plane.refuse(id, denialResponse(outcome.denial.status, outcome.message));
        answered = true;
      }
      return;
    }
    const { connectTo, verdict } = outcome;
    answered = true;
    const events = requestEvents(fields, ctx.metrics);
    const moved = plane.forward(id, connectTo.address, connectTo.port, {
      connectTimeoutMs: config.connectTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      check: proto === "HTTP" ? { pinnedName: verdict.allowed ? verdict.name : null } : undefined,
      onEvent: (event) => events[event.kind](event.reason, event.host),
    });
    // The thread may allow this name's next connections itself, with the answers pinned here.
    if (verdict.allowed && config.mode === "enforce") {
      shareAnswers(verdict.name, ctx, plane, true);
    }
    closedOnThread(fields, greeting.accepted, await moved, ctx);
  } catch (error) {
    log.error("connection handler failed: {error}", { error: errorName(error), peer });
  } finally {
    if (!answered) plane.dismiss(id);
  }
}

/**
 * What the relay thread tells of the connections it decided by itself, a batch at a time: their
 * lines, already formatted, their counts, and the names whose DNS answers it uses.
 */
export function handleTally(tally: Tally, plane: KernelRelay, ctx: ConnectionContext): void {
  if (tally.lineCount > 0) logLines(tally.lines, tally.lineCount);
  const { metrics } = ctx;
  for (const [proto, decision, reason, count] of tally.connections) {
    metrics.connection(proto, decision, reason, count);
  }
  metrics.decidedOnThread(tally.onThread);
  for (const ms of tally.connectMs) metrics.connectSeconds(ms / 1000);
  metrics.bytes(tally.up, tally.down);
  for (const name of tally.names) shareAnswers(name, ctx, plane, false);
}

/**
 * Keeps the relay thread's copy of `name`'s DNS answers current (under `DST_POLICY=off` there is
 * none): the answers the cache holds now (`learnNow`), and, while the name is in use, new ones
 * asked for ahead of expiry, so that its connections never wait for the resolver.
 */
function shareAnswers(
  name: string,
  ctx: ConnectionContext,
  plane: KernelRelay,
  learnNow: boolean,
): void {
  if (ctx.config.dstPolicy === "off") return;
  const learn = () => {
    const snapshot = ctx.dns.snapshot(name);
    if (snapshot !== null) plane.learn(snapshot);
  };
  if (learnNow) learn();
  ctx.dns.refreshAhead(name)?.then(learn).catch((error) =>
    log.error("DNS answers not shared with the relay thread: {error}", {
      error: errorName(error),
    })
  );
}

/** Counts and logs the end of a connection the relay thread carried. */
function closedOnThread(
  fields: EventFields,
  accepted: number,
  moved: KernelRelayResult,
  ctx: ConnectionContext,
): void {
  if (moved.connectMs !== undefined) ctx.metrics.connectSeconds(moved.connectMs / 1000);
  ctx.metrics.bytes(moved.up, moved.down);
  fields.relay = "kernel";
  logClosed(fields, accepted, moved.up, moved.down, moved.error, moved.endedAt);
}

/** Where a connection was headed, or why it cannot be forwarded anywhere. */
interface Target {
  destination?: SocketAddress;
  problem?: string;
}

/**
 * Reads the original destination into the log fields, and finds what forbids forwarding to
 * it: no original destination, not redirected (the proxy port dialled directly), or a loop.
 */
function destinationOf(
  origin: OriginalDstResult,
  ctx: ConnectionContext,
  fields: EventFields,
  fromOwnUpstream = false,
): Target {
  if (!origin.ok) return { problem: "no_original_dst" };
  const destination = origin.destination;
  fields.dst = formatEndpoint(destination.address, destination.port);
  if (!origin.redirected) return { destination, problem: "not_redirected" };
  if (
    ctx.isOwnListener(destination.address, destination.port) ||
    ctx.upstreamEndpoints.has(fields.peer) || fromOwnUpstream
  ) return { destination, problem: "loop" };
  return { destination };
}

/** What becomes of a decided connection; a denial is logged and counted already. */
type Outcome =
  | { forward: true; connectTo: { address: string; port: number }; verdict: Decision }
  | { forward: false; denial: Denial; message: string };

/**
 * Everything between the first bytes and the upstream connect: the destination's problems,
 * the ECH policy, audit mode and destination pinning (which may resolve the name). Logs the
 * ALLOWED or DENIED line and counts it. Null when the proxy stopped meanwhile.
 */
async function settle(
  proto: Proto,
  ctx: ConnectionContext,
  fields: EventFields,
  target: Target,
  first: FirstVerdict,
): Promise<Outcome | null> {
  const { config } = ctx;
  const audit = config.mode === "audit";
  let verdict = first.verdict;
  const { destination } = target;
  // Where the client is not redirected to a real destination, nothing can be forwarded,
  // whatever the mode.
  if (target.problem !== undefined || destination === undefined) {
    return denied(proto, fields, ctx, {
      allowed: false,
      reason: target.problem ?? "no_original_dst",
      status: 403,
    }, "the connection was not redirected to this proxy");
  }
  if (verdict.allowed && proto === "HTTPS" && first.ech && config.echPolicy === "deny") {
    verdict = { allowed: false, reason: "ech", status: 403, name: verdict.name };
  }
  if (!verdict.allowed && !audit) return denied(proto, fields, ctx, verdict);

  let connectTo: { address: string; port: number } = destination;
  if (verdict.allowed && config.dstPolicy !== "off") {
    const resolved = await untilAborted(ctx.dns.lookup(verdict.name), ctx.stopSignal);
    if (resolved === null) return null;
    const pinned = decideDestination(config.dstPolicy, destination, resolved);
    if (!pinned.ok) {
      const denial: Denial = {
        allowed: false,
        reason: pinned.reason,
        status: 403,
        name: verdict.name,
      };
      if (!audit) return denied(proto, fields, ctx, denial);
      verdict = denial;
    } else {
      connectTo = pinned.connectTo;
      if (pinned.mismatch) fields.connect = formatEndpoint(connectTo.address, connectTo.port);
    }
  }

  fields.event = "ALLOWED";
  if (!verdict.allowed) {
    // Audit mode: forwarded as if allowed, marked with what enforce mode would have done.
    fields.would_deny = true;
    fields.reason = verdict.reason;
  }
  logEvent(fields);
  ctx.metrics.connection(proto, "allowed", verdict.allowed ? "none" : verdict.reason);
  return { forward: true, connectTo, verdict };
}

/** Logs and counts a denial; the caller carries it out (a 4xx for HTTP, a close for TLS). */
function denied(
  proto: Proto,
  fields: EventFields,
  ctx: ConnectionContext,
  denial: Denial,
  message = denialMessage(denial),
): Outcome {
  fields.event = "DENIED";
  fields.reason = denial.reason;
  logEvent(fields);
  ctx.metrics.connection(proto, "denied", denial.reason);
  return { forward: false, denial, message };
}

/**
 * Sends the bytes read before the decision upstream. The first request goes through the same
 * inspector as the later ones, so its body is framed and pipelined requests behind it are
 * checked too. Afterwards the preamble buffer is released: an idle relay must not hold it.
 */
async function replayFirst(
  first: { bytes: Uint8Array },
  upstream: Deno.Conn,
  inspector: UpstreamInspector | undefined,
): Promise<{ up: number; refused?: Uint8Array }> {
  const bytes = first.bytes;
  first.bytes = EMPTY;
  if (inspector === undefined) {
    await writeAll(upstream, bytes);
    return { up: bytes.length };
  }
  const verdict = await inspector(bytes, (chunk) => writeAll(upstream, chunk));
  if (!verdict.stop) return { up: bytes.length };
  return { up: bytes.length, refused: verdict.finalResponse ?? denialResponse(400, "refused") };
}

/** Reads the request head or ClientHello and decides; null when the read itself failed. */
async function readAndDecide(
  conn: Deno.TcpConn,
  proto: Proto,
  config: Config,
  allowlist: Allowlist,
  fields: EventFields,
): Promise<FirstVerdict & { bytes: Uint8Array } | null> {
  if (proto === "HTTP") {
    const scanner = new HttpHeadScanner();
    const read = await readPreamble(
      conn,
      (bytes) => scanner.scan(bytes),
      MAX_HEAD_BYTES,
      config.firstBytesTimeoutMs,
    );
    if (!read.ok) return readFailed(conn, proto, fields, read.reason);
    return { ...decideHead(read.verdict, allowlist, fields), bytes: read.bytes };
  }
  const read = await readPreamble(
    conn,
    scanClientHello,
    MAX_CLIENT_HELLO_BYTES,
    config.firstBytesTimeoutMs,
  );
  if (!read.ok) return readFailed(conn, proto, fields, read.reason);
  return { ...decideHello(read.verdict, allowlist, fields), bytes: read.bytes };
}

async function readFailed(
  conn: Deno.TcpConn,
  proto: Proto,
  fields: EventFields,
  reason: string,
): Promise<null> {
  logReadFailure(fields, reason);
  if (proto === "HTTP" && reason === "too_large") {
    await refuseHttp(conn, HEAD_TOO_LARGE);
  }
  return null;
}

/** Logs why the first bytes could not be read, and sets the reason word in `fields`. */
function logReadFailure(fields: EventFields, reason: string): void {
  // A client that connects and closes without a byte is a probe, not a decision: log it
  // at debug only, so health checks do not flood the decision log.
  fields.reason = reason === "closed" ? "no_data" : reason;
  if (reason === "closed") log.debug("{event} {proto}", { ...fields });
  else logEvent(fields);
}

/**
 * Sends a refusal, half-closes, and discards what the client still sends for a moment, so
 * that closing does not reset the connection before the client reads the response.
 */
async function refuseHttp(conn: Deno.TcpConn, response: Uint8Array): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), DENY_LINGER_MS);
  try {
    await writeAll(conn, response);
    await conn.closeWrite();
    const sink = new Uint8Array(4096);
    for (let total = 0; total < DENY_LINGER_BYTES;) {
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

/**
 * Connects under a deadline. One plain timer aborts `controller`, which a graceful stop may
 * abort too: `AbortSignal.any` would register a dependent signal on the long-lived stop
 * signal for every connection.
 */
async function connectUpstream(
  destination: { address: string; port: number },
  timeoutMs: number,
  controller: AbortController,
): Promise<Upstream> {
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  try {
    const conn = await Deno.connect({
      hostname: destination.address,
      port: destination.port,
      signal: controller.signal,
    });
    conn.setNoDelay(true);
    return { ok: true, conn };
  } catch (error) {
    const name = errorName(error);
    return { ok: false, error: `connect_${controller.signal.aborted ? "timeout" : name}` };
  } finally {
    clearTimeout(timer);
  }
}

/** The promise's value, or null as soon as the signal aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T | null> {
  if (signal.aborted) return Promise.resolve(null);
  return new Promise((resolve) => {
    const onAbort = () => resolve(null);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, () => resolve(null)).finally(() =>
      signal.removeEventListener("abort", onAbort)
    );
  });
}

function logClosed(
  fields: EventFields,
  started: number,
  up: number,
  down: number,
  error: string | undefined,
  ended: number = Date.now(),
): void {
  logEvent(closedFields(fields, started, ended, up, down, error), ended);
}
