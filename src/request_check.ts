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
import { type FramingEvent, RequestFramingTracker } from "./http_framing.ts";
import type { HttpHeadResult } from "./http_head.ts";
import { latin1 } from "./latin1.ts";
import { logEvent } from "./log.ts";
import type { EventFields } from "./log_line.ts";
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
  const text = latin1(start, 0, STATUS_PREFIX);
  return connect ? /^HTTP\/1\.[01] 2\d\d$/.test(text) : /^HTTP\/1\.[01] 101$/.test(text);
}

/** What the synchronous checker needs from the connection and the running proxy. */
export interface CheckerContext {
  /** The canonical name the connection was allowed for; null in audit mode for a denial. */
  readonly pinnedName: string | null;
  /** The policy in force now, so a reload applies to later requests on open connections. */
  readonly policy: () => { allowlist: Allowlist; audit: boolean };
  /** A later request was refused (the connection ends after the answers to earlier ones). */
  readonly refused: (reason: string, host?: string) => void;
  /** Audit mode: a later request that enforce mode would refuse goes through. */
  readonly audited: (reason: string, host: string | undefined) => void;
}

/** One step of a {@link RequestChecker}: bytes to send upstream now, then what comes next. */
export interface CheckStep {
  /** In order, to the upstream. */
  out: Uint8Array[];
  /**
   * `more`: go on reading the client. `hold`: stop reading the client until the server's
   * answer to a switch request is known (then {@link RequestChecker.resume}). `stop`: the
   * client direction ends; after the server's last byte, `finalResponse` goes to the client.
   */
  next: "more" | "hold" | "stop";
  finalResponse?: Uint8Array;
}

/**
 * The request checks of one connection as a synchronous state machine, for a relay that
 * cannot wait on a promise (the relay thread): it takes client chunks and returns what to
 * forward. Bytes it returns may be views of the chunk given: forward or copy them before the
 * chunk's buffer is reused.
 */
export class RequestChecker {
  readonly #ctx: CheckerContext;
  readonly #tracker: RequestFramingTracker;
  #requests = 0;
  #opaque = false;
  #awaiting: SwitchWait | null = null;
  /** Held client bytes (a copy) and the events after them, while a switch is undecided. */
  #held: { bytes: Uint8Array; rest: FramingEvent[] } | null = null;

  /**
   * `afterFirst`: the connection's first request went through an earlier checker (dropped while
   * idle, see {@link idle}), so every head is checked, the first one here included.
   * `firstHead`: the verdict the connection was decided on, so its head is not parsed again
   * (see `FramingOptions.firstHead`).
   */
  constructor(ctx: CheckerContext, afterFirst = false, firstHead?: HttpHeadResult) {
    this.#ctx = ctx;
    if (afterFirst) this.#requests = 1;
    this.#tracker = new RequestFramingTracker({ awaitSwitch: true, firstHead });
  }

  /**
   * True between requests with nothing held, awaited or switched: the checker then holds no
   * state but that the first request is past, and the relay may drop it and make a new one
   * (`afterFirst`) when the client sends more, so an idle connection keeps no parser.
   */
  get idle(): boolean {
    return !this.#opaque && this.#awaiting === null && this.#held === null && this.#tracker.idle;
  }

  /** Frames and checks the next client bytes. Must not be called while holding. */
  push(chunk: Uint8Array): CheckStep {
    if (this.#opaque) return { out: [chunk], next: "more" };
    return this.#run(this.#tracker.push(chunk), []);
  }

  /**
   * Feeds the start of the server's answers (null once that direction has ended). True when
   * this settled a switch that held client bytes: call {@link resume} then.
   */
  see(chunk: Uint8Array | null): boolean {
    const awaiting = this.#awaiting;
    if (awaiting === null || awaiting.upgraded !== null) return false;
    awaiting.see(chunk);
    return awaiting.upgraded !== null && this.#held !== null;
  }

  /** True while client bytes wait for the answer to a switch request. */
  get holding(): boolean {
    return this.#held !== null && this.#awaiting?.upgraded === null;
  }

  /** Goes on after a switch was settled while bytes were held. */
  resume(): CheckStep {
    const held = this.#held;
    if (held === null || this.holding) return { out: [], next: this.holding ? "hold" : "more" };
    this.#held = null;
    return this.#run(held.rest, [], held.bytes);
  }

  #run(events: FramingEvent[], out: Uint8Array[], heldBytes?: Uint8Array): CheckStep {
    let pending: Uint8Array | null = null;
    if (heldBytes !== undefined) {
      const upgraded = this.#awaiting!.upgraded!;
      this.#awaiting = null;
      this.#tracker.switched(upgraded);
      if (upgraded) {
        this.#opaque = true;
        out.push(heldBytes);
      } else pending = heldBytes;
    }
    for (;;) {
      for (let i = 0; i < events.length; i++) {
        const event = events[i];
        if (event.type === "data") out.push(event.bytes);
        else if (event.type === "head") {
          // The first request was decided before the upstream connection was opened.
          if (++this.#requests > 1) {
            const refusal = this.#check(event.head.host);
            if (refusal !== null) return { out, next: "stop", finalResponse: refusal };
          }
          // Watch for the answer before the request can reach the server.
          if (event.head.opaqueAfter) {
            this.#awaiting = new SwitchWait(event.head.method === "CONNECT");
          }
          out.push(event.bytes);
        } else if (event.type === "held") {
          // The client spoke before the server answered its switch request: its bytes wait
          // (and no more are read) until the answer shows whether the protocol changed.
          const awaiting = this.#awaiting!;
          if (awaiting.upgraded === null) {
            this.#held = { bytes: event.bytes.slice(), rest: events.slice(i + 1) };
            return { out, next: "hold" };
          }
          this.#awaiting = null;
          this.#tracker.switched(awaiting.upgraded);
          if (awaiting.upgraded) {
            this.#opaque = true;
            out.push(event.bytes);
          } else pending = event.bytes;
        } else if (event.type === "invalid") {
          this.#ctx.refused(event.reason);
          return {
            out,
            next: "stop",
            finalResponse: denialResponse(
              event.status === 431 ? 431 : 400,
              `request refused (${event.reason})`,
            ),
          };
        }
      }
      if (pending === null) return { out, next: "more" };
      events = this.#tracker.push(pending);
      pending = null;
    }
  }

  /** Decides a later request's Host: null to forward it, or the refusal to answer. */
  #check(host: string): Uint8Array | null {
    const { allowlist, audit } = this.#ctx.policy();
    let decision: Decision = decideName(host, allowlist, "invalid_host");
    if (
      decision.allowed && this.#ctx.pinnedName !== null && decision.name !== this.#ctx.pinnedName
    ) {
      decision = { allowed: false, reason: "host_switch", status: 403, name: decision.name };
    }
    if (decision.allowed) return null;
    const name = decision.name ?? decision.raw;
    if (!audit) {
      this.#ctx.refused(decision.reason, name);
      return denialResponse(decision.status, denialMessage(decision));
    }
    this.#ctx.audited(decision.reason, name);
    return null;
  }
}

/** The log lines and counts of a later request's refusal or audit pass. */
export function requestEvents(
  fields: EventFields,
  metrics: ProxyMetrics,
): Pick<CheckerContext, "refused" | "audited"> {
  return {
    refused: (reason, host) => {
      logEvent(refusedFields(fields, reason, host));
      metrics.connection("HTTP", "denied", reason);
    },
    audited: (reason, host) => {
      logEvent(auditedFields(fields, reason, host));
      metrics.connection("HTTP", "allowed", reason);
    },
  };
}

/** The DENIED line of a later request on a connection whose decision line had `fields`. */
export function refusedFields(
  fields: EventFields,
  reason: string,
  host: string | undefined,
): EventFields {
  const line: EventFields = { ...fields, event: "DENIED", reason, connect: undefined };
  if (host !== undefined) line.host = host;
  return line;
}

/** The ALLOWED line (`would_deny`) of a later request audit mode let through. */
export function auditedFields(
  fields: EventFields,
  reason: string,
  host: string | undefined,
): EventFields {
  return { ...fields, event: "ALLOWED", host, reason, would_deny: true, connect: undefined };
}

/** Builds the checker for one HTTP connection relayed through `Deno.Conn`s. */
export function requestCheck(ctx: RequestCheckContext): RequestCheck {
  const checker = new RequestChecker({
    pinnedName: ctx.pinnedName,
    policy: ctx.policy,
    ...requestEvents(ctx.fields, ctx.metrics),
  });
  let answered: (() => void) | null = null;

  const inspect: UpstreamInspector = async (chunk, forward) => {
    let step = checker.push(chunk);
    for (;;) {
      for (const bytes of step.out) await forward(bytes);
      if (step.next === "more") return CONTINUE;
      if (step.next === "stop") return { stop: true, finalResponse: step.finalResponse };
      if (checker.holding) await new Promise<void>((resolve) => answered = resolve);
      step = checker.resume();
    }
  };

  const watch = (chunk: Uint8Array | null) => {
    if (checker.see(chunk)) {
      answered?.();
      answered = null;
    }
  };

  return { inspect, watch };
}

/** Reads the start of the server's answer to a switch request. */
class SwitchWait {
  readonly #connect: boolean;
  readonly #start = new Uint8Array(STATUS_PREFIX);
  #length = 0;
  /** Null until the answer's start (or the end of the server's direction) is seen. */
  upgraded: boolean | null = null;

  constructor(connect: boolean) {
    this.#connect = connect;
  }

  /** Feeds answer bytes; null when the server's direction ended. */
  see(chunk: Uint8Array | null): void {
    if (this.upgraded !== null) return;
    if (chunk === null) {
      this.upgraded = false;
      return;
    }
    const take = Math.min(chunk.length, STATUS_PREFIX - this.#length);
    this.#start.set(chunk.subarray(0, take), this.#length);
    this.#length += take;
    if (this.#length === STATUS_PREFIX) this.upgraded = isSwitchAnswer(this.#start, this.#connect);
  }
}
