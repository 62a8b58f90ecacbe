/**
 * Every request on an HTTP connection, not only the first: the client's byte stream is framed
 * by the request tracker and each request head is decided before its bytes go upstream. A
 * request for another name than the connection was opened for, or one the policy (as it is
 * now, after any reload) denies, is refused; ambiguous framing ends the connection.
 *
 * `Upgrade` and `CONNECT` requests switch to an opaque stream only when the server really
 * switched: the client's next bytes wait until the start of the server's answer shows
 * `101` (or `2xx` to CONNECT). Otherwise framing, and checking, go on.
 * @module
 */

import type { Allowlist } from "./allowlist.ts";
import { decideName, type Decision, denialMessage, denialResponse } from "./decision.ts";
import { RequestFramingTracker } from "./http_framing.ts";
import { type EventFields, logEvent } from "./log.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { UpstreamInspector } from "./relay.ts";

/** The two relay hooks that check an HTTP connection. */
export interface RequestCheck {
  /** Frames and checks client bytes; plugs into `relay`'s `inspectUp`. */
  inspect: UpstreamInspector;
  /** Watches the start of server answers for a protocol switch; `relay`'s `watchDown`. */
  watch: (chunk: Uint8Array | null) => void;
}

/** What a request check needs from the connection and the running proxy. */
export interface RequestCheckContext {
  /** The canonical name the connection was allowed for; null in audit mode for a denial. */
  readonly pinnedName: string | null;
  /** The policy in force now, so a reload applies to later requests on open connections. */
  readonly policy: () => { allowlist: Allowlist; audit: boolean };
  /** The connection's decision-line fields (peer, dst, ...). */
  readonly fields: EventFields;
  readonly metrics: ProxyMetrics;
}

const CONTINUE = { stop: false } as const;

/** Enough of a status line to read the code: `HTTP/1.1 101`. */
const STATUS_PREFIX = 12;

/** True when an answer's first bytes say the server switched protocols. */
export function isSwitchAnswer(start: Uint8Array, connect: boolean): boolean {
  if (start.length < STATUS_PREFIX) return false;
  const text = String.fromCharCode(...start.subarray(0, STATUS_PREFIX));
  return connect ? /^HTTP\/1\.[01] 2\d\d$/.test(text) : /^HTTP\/1\.[01] 101$/.test(text);
}

/** Builds the checker for one HTTP connection. */
export function requestCheck(ctx: RequestCheckContext): RequestCheck {
  const tracker = new RequestFramingTracker({ awaitSwitch: true });
  let requests = 0;
  let opaque = false;
  let awaiting: SwitchWait | null = null;

  const decide = (host: string): Decision => {
    const { allowlist } = ctx.policy();
    const decision = decideName(host, allowlist, "invalid_host");
    if (decision.allowed && ctx.pinnedName !== null && decision.name !== ctx.pinnedName) {
      return { allowed: false, reason: "host_switch", status: 403, name: decision.name };
    }
    return decision;
  };

  const refuse = (reason: string, host?: string) => {
    const line: EventFields = { ...ctx.fields, event: "DENIED", reason, connect: undefined };
    if (host !== undefined) line.host = host;
    logEvent(line);
    ctx.metrics.connection("HTTP", "denied", reason);
  };

  const inspect: UpstreamInspector = async (chunk, forward) => {
    if (opaque) {
      await forward(chunk);
      return CONTINUE;
    }
    let pending: Uint8Array | null = chunk;
    while (pending !== null) {
      const events = tracker.push(pending);
      pending = null;
      for (const event of events) {
        if (event.type === "data") await forward(event.bytes);
        else if (event.type === "head") {
          // The first request was decided before the upstream connection was opened.
          if (++requests > 1) {
            const decision = decide(event.head.host);
            if (!decision.allowed) {
              const host = decision.name ?? decision.raw;
              if (!ctx.policy().audit) {
                refuse(decision.reason, host);
                return {
                  stop: true,
                  finalResponse: denialResponse(decision.status, denialMessage(decision)),
                };
              }
              logEvent({
                ...ctx.fields,
                event: "ALLOWED",
                host,
                reason: decision.reason,
                would_deny: true,
                connect: undefined,
              });
              ctx.metrics.connection("HTTP", "allowed", decision.reason);
            }
          }
          // Watch for the answer before the request can reach the server.
          if (event.head.opaqueAfter) awaiting = new SwitchWait(event.head.method === "CONNECT");
          await forward(event.bytes);
        } else if (event.type === "held") {
          // The client spoke before the server answered its switch request: it waits (no
          // further reads meanwhile) until the answer shows whether the protocol changed.
          const upgraded = await awaiting!.answer;
          awaiting = null;
          tracker.switched(upgraded);
          if (upgraded) {
            opaque = true;
            await forward(event.bytes);
          } else pending = event.bytes;
        } else if (event.type === "invalid") {
          refuse(event.reason);
          return {
            stop: true,
            finalResponse: denialResponse(
              event.status === 431 ? 431 : 400,
              `request refused (${event.reason})`,
            ),
          };
        }
      }
    }
    return CONTINUE;
  };

  const watch = (chunk: Uint8Array | null) => {
    awaiting?.see(chunk);
  };

  return { inspect, watch };
}

/** Waits for the first bytes of the server's answer to a switch request. */
class SwitchWait {
  readonly #connect: boolean;
  readonly #start = new Uint8Array(STATUS_PREFIX);
  #length = 0;
  #resolve!: (upgraded: boolean) => void;
  #settled = false;
  readonly answer: Promise<boolean>;

  constructor(connect: boolean) {
    this.#connect = connect;
    this.answer = new Promise((resolve) => this.#resolve = resolve);
  }

  /** Feeds answer bytes; null when the server's direction ended. */
  see(chunk: Uint8Array | null): void {
    if (this.#settled) return;
    if (chunk === null) return this.#settle(false);
    const take = Math.min(chunk.length, STATUS_PREFIX - this.#length);
    this.#start.set(chunk.subarray(0, take), this.#length);
    this.#length += take;
    if (this.#length === STATUS_PREFIX) this.#settle(isSwitchAnswer(this.#start, this.#connect));
  }

  #settle(upgraded: boolean): void {
    this.#settled = true;
    this.#resolve(upgraded);
  }
}
