/**
 * What a connection's first flight decides, with the log fields it names: the verdict on a
 * request head or ClientHello, and {@link quickVerdict}, the whole decision where it needs
 * nothing but the policy and a copy of the DNS answers (so the relay thread can allow a
 * connection without asking the main thread).
 *
 * Pure: no I/O. The main thread's path (`connection.ts`) uses the same functions, so both
 * decide and log alike.
 * @module
 */

import type { OriginalDstResult } from "../ffi/original_dst.ts";
import type { Allowlist } from "./allowlist.ts";
import { decideHttp, decideTls, type Decision } from "./decision.ts";
import { decideDestination, type DstPolicy, type Endpoint } from "./destination_pin.ts";
import type { HttpHeadResult } from "./http_head.ts";
import { formatEndpoint } from "./ip_address.ts";
import type { EventFields } from "./log_line.ts";
import { selectAllowlist, type SourcePolicy } from "./source_policy.ts";
import type { ClientHelloScan } from "./tls_client_hello.ts";

/** A parsed first flight: a request head (HTTP) or a ClientHello (TLS). */
export type FirstFlight =
  | { hello: Exclude<ClientHelloScan, { kind: "incomplete" }> }
  | { head: Exclude<HttpHeadResult, { kind: "incomplete" }> };

/** The verdict on a first flight, and whether it offered Encrypted Client Hello. */
export interface FirstVerdict {
  verdict: Decision;
  ech: boolean;
}

/** Decides a parsed request head, and puts its host in the log fields. */
export function decideHead(
  head: Exclude<HttpHeadResult, { kind: "incomplete" }>,
  allowlist: Allowlist,
  fields: EventFields,
): FirstVerdict {
  const verdict = decideHttp(head, allowlist);
  nameFields(fields, "host", verdict);
  return { verdict, ech: false };
}

/** Decides a parsed ClientHello, and puts its name, ALPN and ECH in the log fields. */
export function decideHello(
  hello: Exclude<ClientHelloScan, { kind: "incomplete" }>,
  allowlist: Allowlist,
  fields: EventFields,
): FirstVerdict {
  const verdict = decideTls(hello, allowlist);
  nameFields(fields, "sni", verdict);
  const ech = hello.kind === "hello" && hello.ech;
  if (hello.kind === "hello" && hello.alpn.length > 0) fields.alpn = hello.alpn.join(",");
  if (ech) fields.ech = true;
  return { verdict, ech };
}

/** Decides whichever first flight was read. */
export function decideFirst(
  read: FirstFlight,
  allowlist: Allowlist,
  fields: EventFields,
): FirstVerdict {
  return "head" in read
    ? decideHead(read.head, allowlist, fields)
    : decideHello(read.hello, allowlist, fields);
}

function nameFields(fields: EventFields, key: "host" | "sni", verdict: Decision): void {
  const name = verdict.allowed ? verdict.name : (verdict.name ?? verdict.raw);
  if (name !== undefined) fields[key] = name;
}

/**
 * What the relay thread needs to allow a connection by itself. Only enforce mode has one:
 * audit mode's would-deny lines, and every denial, stay with the main thread.
 */
export interface QuickPolicy {
  allowlist: Allowlist;
  sourcePolicy: SourcePolicy;
  /** `ECH_POLICY=deny`. */
  echDeny: boolean;
  dstPolicy: DstPolicy;
  /**
   * Ports of the proxy's own listeners: a connection dialled to one of them may be a loop, and
   * the main thread, which knows the machine's addresses, decides it.
   */
  ownPorts: number[];
}

/** One connection as the relay thread knows it once its first flight is parsed. */
export interface QuickInput {
  proto: "HTTP" | "HTTPS";
  /** The client's canonical address, and port. */
  source: string;
  port: number;
  origin: OriginalDstResult;
  /** The client is one of the thread's own upstream sockets. */
  loop: boolean;
  read: FirstFlight;
}

/** An allowed connection: where to connect, for which name, and its ALLOWED line. */
export interface QuickAllow {
  connectTo: Endpoint;
  name: string;
  fields: EventFields;
}

/**
 * The decision on a connection when it is a plain allow: redirected, not a loop, allowed by
 * the policy for its source, and (unless `DST_POLICY=off`) its name's usable addresses known
 * to `usable` (as `destination_pin.ts`'s `usableAddresses` keeps them: canonical, safe,
 * de-duplicated) so pinning can be decided. Null in every other case, which the main thread
 * then decides in full: null never allows anything.
 */
export function quickVerdict(
  input: QuickInput,
  policy: QuickPolicy,
  usable: (name: string) => string[] | null,
): QuickAllow | null {
  const { origin } = input;
  if (!origin.ok || !origin.redirected || input.loop) return null;
  const destination = origin.destination;
  if (policy.ownPorts.includes(destination.port)) return null;
  const fields: EventFields = {
    event: "ALLOWED",
    proto: input.proto,
    peer: formatEndpoint(input.source, input.port),
    dst: formatEndpoint(destination.address, destination.port),
  };
  const allowlist = selectAllowlist(policy.sourcePolicy, policy.allowlist, input.source);
  const { verdict, ech } = decideFirst(input.read, allowlist, fields);
  if (!verdict.allowed || (ech && policy.echDeny)) return null;
  if (policy.dstPolicy === "off") return { connectTo: destination, name: verdict.name, fields };
  const known = usable(verdict.name);
  if (known === null) return null;
  const pinned = decideDestination(policy.dstPolicy, destination, {
    ok: true,
    addresses: known,
    usable: true,
  });
  if (!pinned.ok) return null;
  if (pinned.mismatch) {
    fields.connect = formatEndpoint(pinned.connectTo.address, pinned.connectTo.port);
  }
  return { connectTo: pinned.connectTo, name: verdict.name, fields };
}
