/**
 * The policy decision for one connection: parser verdict + allowlist → allow or deny, with a
 * reason word for the log. Pure: no I/O, so every branch is unit-tested.
 * @module
 */

import { type Allowlist, isAllowed } from "./allowlist.ts";
import { normalizeHostname } from "./hostname.ts";
import type { HttpHeadResult } from "./http_head.ts";
import type { ClientHelloResult } from "./tls_client_hello.ts";

/** Allow with the canonical name, or deny with a reason (and the HTTP status to answer). */
export type Decision =
  | { allowed: true; name: string }
  | { allowed: false; reason: string; status: 400 | 403 | 431; name?: string; raw?: string };

/** Decides an HTTP request head. */
export function decideHttp(
  head: Exclude<HttpHeadResult, { kind: "incomplete" }>,
  allowlist: Allowlist,
): Decision {
  if (head.kind === "invalid") return { allowed: false, reason: head.reason, status: head.status };
  return decideName(head.host, allowlist, "invalid_host");
}

/** Decides a TLS ClientHello by its SNI. */
export function decideTls(
  hello: Exclude<ClientHelloResult, { kind: "incomplete" }>,
  allowlist: Allowlist,
): Decision {
  if (hello.kind === "invalid") return { allowed: false, reason: hello.reason, status: 400 };
  if (hello.serverName === null) return { allowed: false, reason: "no_sni", status: 400 };
  return decideName(hello.serverName, allowlist, "invalid_sni");
}

/** Normalises a client-supplied name and checks it against the allowlist. */
export function decideName(raw: string, allowlist: Allowlist, invalidReason: string): Decision {
  const name = normalizeHostname(raw, { allowUnicode: false });
  if (!name.ok) return { allowed: false, reason: invalidReason, status: 403, raw };
  return isAllowed(allowlist, name.name)
    ? { allowed: true, name: name.name }
    : { allowed: false, reason: "not_allowed", status: 403, name: name.name };
}

const STATUS_TEXT = {
  400: "Bad Request",
  403: "Forbidden",
  431: "Request Header Fields Too Large",
  502: "Bad Gateway",
};

/**
 * The complete HTTP response sent to a denied client. The body names the host only when it
 * is a valid name, so client bytes are never reflected.
 */
export function denialResponse(status: 400 | 403 | 431 | 502, message: string): Uint8Array {
  const body = `proxy-please: ${message}\n`;
  return new TextEncoder().encode(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\n` +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      `Content-Length: ${new TextEncoder().encode(body).length}\r\n` +
      "Cache-Control: no-store\r\n" +
      "Connection: close\r\n\r\n" + body,
  );
}

/** The answer to a request head too large to read whole. */
export const HEAD_TOO_LARGE: Uint8Array = denialResponse(431, "the request head is too large");

/** The answer when the allowed destination could not be connected to. */
export const UPSTREAM_UNREACHABLE: Uint8Array = denialResponse(
  502,
  "the upstream server could not be reached",
);

/**
 * After a refusal the socket is half-closed, and what the client still sends is read and
 * dropped for this long (or up to `DENY_LINGER_BYTES`), so that closing does not reset the
 * connection before the client has read the answer.
 */
export const DENY_LINGER_MS = 1000;
/** See {@link DENY_LINGER_MS}. */
export const DENY_LINGER_BYTES = 65536;

/** The one-line body for a denial. */
export function denialMessage(decision: Extract<Decision, { allowed: false }>): string {
  if (decision.reason === "not_allowed") return `${decision.name} is not on the allowlist`;
  if (decision.reason === "no_host") return "the request has no Host header";
  if (decision.reason === "invalid_host") return "the Host is not a valid DNS name";
  if (decision.reason === "too_large") return "the request head is too large";
  return `request refused (${decision.reason})`;
}
