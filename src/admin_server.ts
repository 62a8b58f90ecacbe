/**
 * The admin listener (`ADMIN_LISTEN`): `/metrics` for Prometheus, `/healthz`
 * and `/readyz` for load-balancer probes. It is a separate `Deno.serve` HTTP
 * server on its own address, sharing nothing with the proxy listeners' policy;
 * it defaults to loopback, and the firewall only redirects ports 80 and 443,
 * so redirected client traffic cannot reach it.
 *
 * @module
 */

import { formatIp, parseIp } from "./ip_address.ts";
import { CONTENT_TYPE } from "./metrics.ts";

/** A validated `host:port` listen address. */
export interface ListenAddress {
  /** IP literal without brackets, canonical (`127.0.0.1`, `::1`). */
  readonly hostname: string;
  /** 0..65535; 0 asks the kernel for a free port. */
  readonly port: number;
}

/** Result of {@linkcode parseListenAddress}. */
export type ListenAddressResult = { ok: true; value: ListenAddress } | {
  ok: false;
  reason: string;
};

/**
 * Parses `127.0.0.1:9090` or `[::1]:9090`. The host must be an IP literal:
 * resolving a name here would make the bind address depend on DNS at start.
 * Empty text is an error here; the configuration maps an empty
 * `ADMIN_LISTEN` to "admin listener off" before calling this.
 */
export function parseListenAddress(text: string): ListenAddressResult {
  const bad = (why: string): ListenAddressResult => ({
    ok: false,
    reason: `invalid listen address ${JSON.stringify(text)}: ${why}`,
  });
  let hostText: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1 || text[close + 1] !== ":") return bad("expected [IPv6]:port");
    hostText = text.slice(1, close);
    if (!hostText.includes(":")) return bad("brackets are only for IPv6 addresses");
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon === -1) return bad("expected host:port, e.g. 127.0.0.1:9090");
    hostText = text.slice(0, colon);
    if (hostText.includes(":")) return bad("write an IPv6 address in brackets, e.g. [::1]:9090");
    portText = text.slice(colon + 1);
  }
  if (!/^(0|[1-9][0-9]{0,4})$/.test(portText) || Number(portText) > 65535) {
    return bad(`port ${JSON.stringify(portText)} must be a number from 0 to 65535`);
  }
  const ip = parseIp(hostText);
  if (!ip.ok) return bad(`the host must be an IP address (${ip.reason})`);
  return { ok: true, value: { hostname: formatIp(ip.value), port: Number(portText) } };
}

/** What the probes report; computed by the caller on each request. */
export interface HealthState {
  /** The process runs and its listeners accept. `/healthz` is 200 when true. */
  live: boolean;
  /** Configuration loaded, listeners bound, not draining. `/readyz` is 200 when true. */
  ready: boolean;
  /** Short reason shown in the body (for example `draining`); never secrets. */
  detail?: string;
}

/** Options for {@linkcode startAdminServer}. */
export interface AdminServerOptions {
  /** Listen address, see {@linkcode parseListenAddress}. */
  listen: string;
  /** Renders the `/metrics` body. */
  metrics: () => string;
  /** Reports liveness and readiness. */
  health: () => HealthState;
  /** Aborting it shuts the server down, like {@linkcode AdminServer.shutdown}. */
  signal?: AbortSignal;
}

/** A running admin server. */
export interface AdminServer {
  /** The bound address (useful with port 0). */
  readonly addr: Deno.NetAddr;
  /** Stops accepting, lets in-flight requests finish, and resolves once closed. Idempotent. */
  shutdown(): Promise<void>;
}

/** Thrown by {@linkcode startAdminServer} when the address is invalid or cannot be bound. */
export class AdminListenError extends Error {
  /** Builds the error; `cause` is the underlying bind error, if any. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AdminListenError";
  }
}

const TEXT = "text/plain; charset=utf-8";
const ROUTES = new Set(["/metrics", "/healthz", "/readyz"]);

function reply(
  req: Request,
  status: number,
  body: string,
  contentType = TEXT,
  extra: HeadersInit = {},
): Response {
  const headers = new Headers(extra);
  headers.set("content-type", contentType);
  headers.set("cache-control", "no-store");
  return new Response(req.method === "HEAD" ? null : body, { status, headers });
}

/** Single-line, printable, bounded: a detail string must not be able to shape the response. */
function safeDetail(detail: string | undefined): string {
  if (detail === undefined || detail === "") return "";
  return ": " + detail.replace(/[^\x20-\x7e]/g, "?").slice(0, 200);
}

/**
 * Routes one request. Only the method and path are looked at; the body is
 * never read, so a client cannot make the admin server buffer anything.
 */
export function handleAdminRequest(
  req: Request,
  opts: Pick<AdminServerOptions, "metrics" | "health">,
): Response {
  const path = new URL(req.url).pathname;
  if (!ROUTES.has(path)) return reply(req, 404, "not found\n");
  if (req.method !== "GET" && req.method !== "HEAD") {
    return reply(req, 405, "method not allowed\n", TEXT, { allow: "GET, HEAD" });
  }
  if (path === "/metrics") {
    let body: string;
    try {
      body = opts.metrics();
    } catch {
      return reply(req, 500, "metrics unavailable\n");
    }
    return reply(req, 200, body, CONTENT_TYPE);
  }
  let state: HealthState;
  try {
    state = opts.health();
  } catch {
    return reply(req, 503, "health check failed\n");
  }
  if (path === "/healthz") {
    return state.live
      ? reply(req, 200, "ok\n")
      : reply(req, 503, `not live${safeDetail(state.detail)}\n`);
  }
  return state.ready
    ? reply(req, 200, "ready\n")
    : reply(req, 503, `not ready${safeDetail(state.detail)}\n`);
}

/**
 * Starts the admin HTTP server. Rejects with {@linkcode AdminListenError}
 * naming the address when it is invalid or cannot be bound (in use, not a
 * local address, no permission).
 */
export function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const parsed = parseListenAddress(opts.listen);
  if (!parsed.ok) return Promise.reject(new AdminListenError(`ADMIN_LISTEN: ${parsed.reason}`));
  const { hostname, port } = parsed.value;
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({
      hostname,
      port,
      // Deno.serve would otherwise print "Listening on ..." to stdout, which is the decision log.
      onListen: () => {},
      onError: () =>
        new Response("internal error\n", { status: 500, headers: { "content-type": TEXT } }),
      handler: (req) => handleAdminRequest(req, opts),
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    return Promise.reject(
      new AdminListenError(`ADMIN_LISTEN ${opts.listen}: cannot listen: ${why}`, { cause: err }),
    );
  }
  let stopping: Promise<void> | null = null;
  const shutdown = (): Promise<void> => {
    stopping ??= server.shutdown().then(() => server.finished);
    return stopping;
  };
  if (opts.signal !== undefined) {
    const stop = () => void shutdown().catch(() => {}); // callers of shutdown() still see any error
    if (opts.signal.aborted) stop();
    else opts.signal.addEventListener("abort", stop, { once: true });
  }
  return Promise.resolve({ addr: server.addr, shutdown });
}
