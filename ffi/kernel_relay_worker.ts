/**
 * The relay thread itself (a Worker started by `kernel_relay.ts`). One epoll set, waited on with
 * a *blocking* `epoll_wait`, holds the listening sockets, every accepted connection and every
 * upstream socket; all socket calls go through libc.
 *
 * A connection's life here: accepted (`accept4`) and counted against the shared limits
 * (`admission.ts`); its original destination read (`SO_ORIGINAL_DST`); its first flight (request
 * head or ClientHello) read into a bounded buffer under the first-bytes deadline and parsed. A
 * plain allow (`first_verdict.ts`, with the main thread's DNS answers copied here) is forwarded
 * at once, and its lines are written here and go with its counts in the next batch's tally
 * (`event_tally.ts`); anything else goes to the main thread, which decides and answers
 * `forward`, `refuse` or `dismiss`.
 * Forwarded, the upstream is connected, the first flight replayed and both directions relayed
 * with non-blocking read/write and the half-close passed on; every later HTTP request goes
 * through the request checker first. A refusal is written, the socket half-closed, and what the
 * client still sends is dropped for a moment. The main thread never touches these sockets.
 *
 * Why a thread of its own: a blocking wait costs one wake-up per batch of ready sockets, the way
 * an event-loop proxy in C works, and a connection costs no JavaScript promise, timer or runtime
 * op. Commands arrive by `postMessage` in batches; since this thread is inside `epoll_wait` most
 * of the time, the sender also bumps a shared counter and writes an eventfd that is in the epoll
 * set, and the loop yields to this worker's event loop until it has received as many batches as
 * were counted. Reports go back in one batch per loop turn.
 * @module
 */

/// <reference lib="deno.worker" />

import {
  AF_INET,
  AF_INET6,
  decodeSockaddr,
  encodeSockaddrInto,
  SOCKADDR_IN6_SIZE,
  SOCKADDR_STORAGE_SIZE,
} from "./sockaddr.ts";
import { socketAddressOf } from "./conn_fd.ts";
import { openLibc } from "./libc.ts";
import { originalDestinationOfFd } from "./original_dst.ts";
import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";
import { Admission } from "../src/admission.ts";
import {
  DENY_LINGER_BYTES,
  DENY_LINGER_MS,
  HEAD_TOO_LARGE,
  UPSTREAM_UNREACHABLE,
} from "../src/decision.ts";
import { DnsCopy } from "../src/dns_copy.ts";
import { IdleCollector } from "../src/idle_collect.ts";
import type { Allowlist } from "../src/allowlist.ts";
import type { Endpoint } from "../src/destination_pin.ts";
import { type QuickInput, quickVerdict } from "../src/first_verdict.ts";
import { type HttpHeadResult, HttpHeadScanner, MAX_HEAD_BYTES } from "../src/http_head.ts";
import {
  auditedFields,
  type CheckerContext,
  type CheckStep,
  refusedFields,
  RequestChecker,
} from "../src/request_check.ts";
import { EventTally } from "../src/event_tally.ts";
import { closedFields, type EventFields } from "../src/log_line.ts";
import { selectAllowlist } from "../src/source_policy.ts";
import { MAX_CLIENT_HELLO_BYTES, scanClientHello } from "../src/tls_client_hello.ts";
import type {
  Greeting,
  PlanePolicy,
  PlaneProto,
  PlaneSettings,
  ReadFailure,
  RelayCommand,
  RelayReport,
  RequestEvent,
  WorkerInit,
} from "./kernel_relay.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // Blocks this worker's thread, and only it: that is the point of the worker.
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32" },
  ...ERRNO_SYMBOLS,
} as const;

const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const EPOLL_CLOEXEC = 0o2000000;
const EPOLL_CTL_ADD = 1;
const EPOLL_CTL_DEL = 2;
const EPOLL_CTL_MOD = 3;
const EPOLLIN = 0x001;
const EPOLLOUT = 0x004;
const EPOLLERR = 0x008;
const EPOLLHUP = 0x010;
const EPOLLRDHUP = 0x2000;
/**
 * What a relayed socket is read on: with the peer's half-close reported alongside (as HAProxy
 * asks for it), a short read that empties the socket is known to be its last, and the read
 * that would only return 0 is saved (one system call and an event per direction).
 */
const READABLE = EPOLLIN | EPOLLRDHUP;
const SHUT_WR = 1;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const EAGAIN = 11;
const EINTR = 4;
const EINPROGRESS = 115;
const ECONNABORTED = 103;

/** x86_64 packs `struct epoll_event` (12 bytes); other architectures align it to 16. */
const EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;
const MAX_EVENTS = 256;
/** How often deadlines (first bytes, connect, idle) are checked while anything is open. */
const SWEEP_MS = 250;
/** Shared by every connection: a read is written out (or parked) before the next read. */
const BUFFER_BYTES = 256 * 1024;
/** Reads per readiness event, so one busy connection cannot starve the others. */
const READS_PER_EVENT = 4;
/** Accepts per readiness event of a listener, for the same reason. */
const ACCEPTS_PER_EVENT = 64;
/** Most first flights fit; a larger one grows the buffer up to the parser's bound. */
const FIRST_BYTES = 4096;
const NO_BYTES = new Uint8Array(0);
/**
 * How long reports nothing waits on (the thread's own allows, ends, refusals) wait for company:
 * each batch costs the main thread a wake-up and a message event, measured as its largest cost
 * per TLS connection at 5 ms. Those reports carry their own times for the logs.
 */
const LATE_REPORT_MS = 25;
/**
 * Once late, they go when no connection is open, or once the thread has had no event for
 * QUIET_MS, or amid traffic once OVERDUE_REPORT_MS old. Sent at the end of whatever turn found
 * them late, they went out just as a new connection's answer came back, and held it: a send
 * costs 150 us at the median when cold, and at 100 connections per second 17 % of the answers
 * waited behind one (p90 530 us against 118). A quiet of 1 ms is a TLS client's pause between
 * two flights of its handshake in the lab: sent then, they held its next flight.
 */
const QUIET_MS = 5;
const OVERDUE_REPORT_MS = 50;
/**
 * How many distinct texts the kept fields share before the table starts over: enough for the
 * names and destinations in use, bounded whatever the traffic.
 */
const SHARED_TEXTS = 4096;
/** What {@link act} did with a direction. */
const IDLE = 0, ACTED = 1, ENDED = 2;
const ONE = new Uint8Array(new Int32Array([1]).buffer);
/** A greeting's `read` before its first flight is read (never sent as such). */
const UNREAD: Greeting["read"] = { ok: false, reason: "closed" };

/** A listening socket handed over by the main thread (a duplicate this thread closes). */
interface Listening {
  kind: "listen";
  listenId: number;
  fd: number;
  proto: PlaneProto;
  /** Out of the epoll set after an accept error (descriptors exhausted) until the next sweep. */
  paused: boolean;
  /**
   * `TCP_NODELAY` is set on the listening socket, so a socket accepted from it has it already
   * (Linux copies it when the handshake completes): one system call less per connection.
   */
  noDelay: boolean;
  /**
   * The accept queue has been emptied since: connections that completed before the option was
   * set (queued while the listener was handed over) have been given it one by one.
   */
  drained: boolean;
}

/** An accepted connection until its first flight (ClientHello or request head) is decided. */
interface Greeted {
  kind: "greet";
  id: number;
  fd: number;
  source: string;
  proto: PlaneProto;
  /** HTTP: the incremental head parser, and its verdict once the head is complete. */
  scanner: HttpHeadScanner | null;
  head: HttpHeadResult | null;
  buffer: Uint8Array;
  length: number;
  needBytes: number;
  deadline: number;
  /** The hello went to the main thread; the socket is out of the epoll set until it answers. */
  waiting: boolean;
  /** In the epoll set (reading). */
  registered: boolean;
  /**
   * What the main thread gets with the hello, until it has been sent; its `read` is
   * {@link UNREAD} until the first flight is read.
   */
  known: Greeting | null;
}

/** One direction of a relay: bytes read from `src` are written to `dst`. */
interface Direction {
  src: number;
  dst: number;
  /** Bytes read but not yet accepted by `dst`; reading `src` pauses while set. */
  pending: Uint8Array | null;
  /** No more is read from `src` (EOF, or the request checks stopped it). */
  done: boolean;
  /** `dst` was half-closed (once `done` and nothing is pending). */
  shut: boolean;
  bytes: number;
}

/** The checks a relayed connection's requests go through (HTTP), as `forward` asks. */
type RelayCheck = Extract<RelayCommand, { kind: "forward" }>["check"];

/** A decided connection: its upstream being connected, then relayed. */
interface Relayed {
  kind: "relay";
  id: number;
  client: number;
  upstream: number;
  source: string;
  /** Until the upstream connect completes: its deadline. */
  connectDeadline: number;
  connectStarted: number;
  connected: boolean;
  /** Milliseconds the upstream connect took (-1 until connected). */
  connectMs: number;
  /** The upstream socket's local port once connected (0 if unknown), for the loop check. */
  localPort: number;
  /** Its local address (shared with other connections: see {@link rememberUpstreamEnd}). */
  localAddress: string;
  up: Direction;
  down: Direction;
  lastActivity: number;
  idleTimeoutMs: number;
  /**
   * Current epoll interest of the client and upstream sockets (two fields, not an array: an
   * idle connection's record is most of what it costs).
   */
  clientInterest: number;
  upstreamInterest: number;
  proto: PlaneProto;
  /** HTTP: every request on the connection goes through the checks, for this pinned name. */
  checks: boolean;
  pinnedName: string | null;
  /** HTTP: the checker, while a request is under way (null between requests: see `checkClient`). */
  checker: RequestChecker | null;
  /** HTTP: after the server's last byte, this goes to the client (a refusal). */
  finalResponse: Uint8Array | null;
  /** HTTP: the request checks ended the client's direction. */
  stopped: boolean;
  /**
   * The decision line's fields of a connection this thread allowed by itself, whose later lines
   * are written here too; null when the main thread decided it (and writes them).
   */
  fields: EventFields | null;
  /** When it was accepted (ms since the epoch), for its CLOSED line's duration. */
  accepted: number;
}

/**
 * A refused HTTP connection: the answer is written, the socket half-closed, and what the
 * client still sends is read and dropped for a moment, so that closing does not reset the
 * connection before the client has read the answer.
 */
interface Lingering {
  kind: "linger";
  fd: number;
  source: string;
  pending: Uint8Array | null;
  shut: boolean;
  discarded: number;
  deadline: number;
  interest: number;
}

/**
 * What one relay's request checks ask of it: one object per connection, no closures. (A class
 * is not hoisted: declared before the loop starts.)
 */
class RelayCheckContext implements CheckerContext {
  readonly #r: Relayed;
  readonly pinnedName: string | null;

  constructor(r: Relayed, pinnedName: string | null) {
    this.#r = r;
    this.pinnedName = pinnedName;
  }

  policy(): { allowlist: Allowlist; audit: boolean } {
    return {
      allowlist: selectAllowlist(policy.sourcePolicy, policy.allowlist, this.#r.source),
      audit: policy.audit,
    };
  }

  refused(reason: string, host?: string): void {
    this.#send({ kind: "refused", reason, host });
  }

  audited(reason: string, host: string | undefined): void {
    this.#send({ kind: "audited", reason, host });
  }

  #send(event: RequestEvent): void {
    const r = this.#r;
    if (r.fields === null) return report({ kind: "event", id: r.id, event });
    const { reason, host } = event;
    const now = Date.now();
    const line = event.kind === "refused"
      ? refusedFields(r.fields, reason, host)
      : auditedFields(r.fields, reason, host);
    tally.decision(line, now, reason);
    tallied(now);
  }
}

const buffer = new Uint8Array(BUFFER_BYTES);
const events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
const eventView = new DataView(events.buffer);
const ctlEvent = new Uint8Array(EVENT_SIZE);
const ctlView = new DataView(ctlEvent.buffer);
const counter = new Uint8Array(8);
const peerAddress = new Uint8Array(SOCKADDR_STORAGE_SIZE);
/** Where each upstream connect's address is written (connect copies it in). */
const connectAddress = new Uint8Array(SOCKADDR_IN6_SIZE);
const peerLength = new Uint32Array(1);
const peerLengthBytes = new Uint8Array(peerLength.buffer);
const optionValue = new Int32Array(1);
const optionBytes = new Uint8Array(optionValue.buffer);
const optionLength = new Uint32Array(1);
/**
 * fd → what it belongs to. An array, not a map: descriptors are small and dense (the kernel
 * hands out the lowest free one), and a map entry per socket was a tenth of what an idle
 * connection cost this thread.
 */
const owners: (Listening | Greeted | Relayed | Lingering | undefined)[] = [];
const listeners = new Map<number, Listening>();
/**
 * Local endpoints of this thread's upstream sockets, as port → address (or addresses, rarely
 * more than one): a connection accepted from one of them is the proxy's own upstream redirected
 * back to it (a routing loop). Keyed by port so that the check on every accept builds no text.
 */
const upstreamEnds = new Map<number, string | string[]>();
/** The last upstream local address seen: connections share one copy of that text. */
let lastLocalAddress = "";
const greeted = new Map<number, Greeted>();
/** Relays in progress (each is its client fd's owner: see {@link eachRelay}). */
let relayCount = 0;
const lingering = new Set<Lingering>();
/** The main thread's DNS answers for names it allowed: what the thread may pin to by itself. */
const dnsCopy = new DnsCopy();
/** Collects this thread's garbage once it is quiet (V8's own idle work never runs here). */
const collector = new IdleCollector();

/** What is kept of a protocol's connections: see {@link exemplars}. */
interface ConnectionExemplar {
  /** The last `forward` command of the protocol (an HTTP one carries a check, a TLS one not). */
  forward: Extract<RelayCommand, { kind: "forward" }> | null;
  scanner: HttpHeadScanner | null;
  relay: Relayed | null;
  checker: RequestChecker | null;
  closed: EventFields | null;
}

function connectionExemplar(): ConnectionExemplar {
  return { forward: null, scanner: null, relay: null, checker: null, closed: null };
}

/**
 * Objects kept only for their hidden classes, each until the next of its kind, in memory only
 * (never written anywhere). Of each protocol: the last connection this thread relayed and closed
 * cleanly (its record and its CLOSED line's fields) and the last head scanner and request checker
 * done with; of the messages between the threads, the last batch of commands as it came, and the
 * last command and report of each kind. V8's optimized code refers weakly to the hidden classes
 * it was made for, and many of a connection's live only while an object has them (fields added
 * after an object is made, spread copies, a number that outgrew its first representation,
 * structured clones). The idle collection runs when nothing is open: it freed them, and V8
 * dropped the optimized code of the whole connection path, made again only hundreds of
 * connections later (BENCHMARKS.md, "Optimized code kept across the idle collection").
 */
const exemplars = {
  HTTP: connectionExemplar(),
  HTTPS: connectionExemplar(),
  message: null as MessageEvent<RelayCommand[]> | null,
  commands: new Map<RelayCommand["kind"], RelayCommand>(),
  reports: new Map<RelayReport["kind"], RelayReport>(),
};

/** A connection this thread allowed by itself: its ALLOWED line, when it was decided, its name. */
interface ThreadAllow {
  fields: EventFields;
  at: number;
  name: string;
  /** When it was accepted (ms since the epoch), for its CLOSED line's duration. */
  accepted: number;
}

/**
 * Connections the thread allowed by itself in this batch of events, relayed once the batch is
 * done: a stale event later in the batch, for an fd number closed and reused within it, must not
 * reach a new relay (it would act on the old socket's error bits).
 */
const allowed: { g: Greeted; connectTo: Endpoint; check: RelayCheck; allow: ThreadAllow }[] = [];
const inbox: RelayCommand[] = [];
const outbox: RelayReport[] = [];
/**
 * One copy of each recurring text (destination, name) in the fields kept for the connections
 * this thread allowed: an idle connection's record is most of what it costs.
 */
const texts = new Map<string, string>();
let received = 0;
/** The outbox holds a report the main thread waits on. */
let urgent = false;
/** When the oldest report that can wait was made (0: none). */
let lateSince = 0;
/** Listeners out of the epoll set after an accept error, until the next sweep. */
let paused = 0;
let nextId = 1;
/** Resolves the loop's wait for a batch that was counted but has not arrived yet. */
let arrived: (() => void) | undefined;
const init = await new Promise<WorkerInit>((resolve) => {
  self.onmessage = (e: MessageEvent<WorkerInit>) => {
    self.onmessage = (m: MessageEvent<RelayCommand[]>) => {
      exemplars.message = m;
      received++;
      inbox.push(...m.data);
      arrived?.();
    };
    resolve(e.data);
  };
});
/** The lines and counts of the connections this thread allows by itself, for the next batch. */
const tally = new EventTally(init.lineFormat);
let settings: PlaneSettings = init.settings;
let policy: PlanePolicy = init.policy;
const admission = new Admission(init.admission);
const lib = Deno.dlopen(init.libcPath, SYMBOLS);
/** The project's libc wrapper, for the calls it already has (socket addresses, options). */
const libc = openLibc([init.libcPath]);
const s = lib.symbols;
const readErrno = errnoReader(s);

const epfd = s.epoll_create1(EPOLL_CLOEXEC);
if (epfd < 0 || !ctl(EPOLL_CTL_ADD, init.eventFd, EPOLLIN)) {
  report({ kind: "failed", error: `epoll_${errnoName(readErrno())}` });
  flushReports();
  self.close();
} else {
  report({ kind: "ready" });
  flushReports(true);
  await loop();
}

function report(message: RelayReport): void {
  exemplars.reports.set(message.kind, message);
  outbox.push(message);
  if (message.kind === "greeting" || message.kind === "failed" || message.kind === "stopped") {
    urgent = true;
  } else if (lateSince === 0) lateSince = Date.now();
}

/**
 * Something went into the tally: it goes with the next batch, at the latest once it is late, or
 * at once when its lines have grown large.
 */
function tallied(now: number): void {
  if (lateSince === 0) lateSince = now;
  if (tally.full) urgent = true;
}

/**
 * Sends what was reported, now if anything waits on it (a greeting to decide) or `force` says
 * so, else once the oldest report is overdue: the thread's own allows, the ends of connections
 * and refusals only feed logs and metrics, and sending them together spares the main thread a
 * wake-up each (see {@link QUIET_MS}).
 */
function flushReports(force = false): void {
  const age = reportAge();
  if (age < 0) return;
  if (!force && !urgent && age < OVERDUE_REPORT_MS) return;
  const gathered = tally.take();
  if (gathered === null) self.postMessage(outbox.splice(0));
  else {
    outbox.unshift({ kind: "tally", tally: gathered });
    // The lines' buffer is the tally's own copy: moved, not copied again.
    self.postMessage(outbox.splice(0), [gathered.lines.buffer]);
  }
  urgent = false;
  lateSince = 0;
}

/** How long the oldest report not yet sent has waited, in ms; -1 when none waits. */
function reportAge(): number {
  return outbox.length > 0 || !tally.empty ? Date.now() - lateSince : -1;
}

async function loop(): Promise<void> {
  let lastSweep = Date.now();
  for (;;) {
    // Every counted batch must be in the inbox before the queue is read.
    // (Not a timer: nested zero timers are clamped to 4 ms, which showed as added latency.)
    while (received < Atomics.load(init.posted, 0)) {
      await new Promise<void>((resolve) => arrived = resolve);
      arrived = undefined;
    }
    for (let c = inbox.shift(); c !== undefined; c = inbox.shift()) {
      if (c.kind === "stop") return stop();
      command(c);
    }
    const connections = greeted.size + relayCount + lingering.size;
    // Late reports go between connections rather than amid one.
    flushReports(connections === 0 && reportAge() >= LATE_REPORT_MS);
    const age = reportAge();
    // With nothing open, the thread blocks for good only once its garbage is collected.
    const wait = age >= LATE_REPORT_MS
      ? QUIET_MS
      : age >= 0
      ? LATE_REPORT_MS - age
      : connections + paused > 0 || !collector.settled
      ? SWEEP_MS
      : -1;
    const n = s.epoll_wait(epfd, events, MAX_EVENTS, wait);
    if (n === 0 && age >= LATE_REPORT_MS) flushReports(true);
    if (n < 0 && readErrno() !== EINTR) {
      // A bug or a resource limit: end every connection, loudly, and keep serving commands.
      const error = `epoll_${errnoName(readErrno())}`;
      for (const g of [...greeted.values()]) endGreeting(g);
      eachRelay((r) => finish(r, error));
      for (const l of [...lingering]) endLinger(l);
    }
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const mask = eventView.getUint32(i * EVENT_SIZE, true);
      const fd = eventView.getUint32(i * EVENT_SIZE + DATA_OFFSET, true);
      if (fd === init.eventFd) {
        s.read(fd, counter, 8n);
        continue;
      }
      // An fd closed earlier in this batch may have been reused by an accept in it: its stale
      // event then reaches a new greeting, which only tries a read (EAGAIN at worst), and never
      // one already read whole and waiting for its decision (a read there could see the
      // client's half-close and end a connection that is about to be relayed). Nothing that
      // acts on an event's error bits can be new within a batch: relays and upstream sockets
      // start between batches (from commands, or in `relayAllowed` below).
      const owner = owners[fd];
      if (owner === undefined) continue; // ended earlier in this batch
      if (owner.kind === "listen") acceptFrom(owner, now);
      else if (owner.kind === "greet") {
        if (!owner.waiting) readFirst(owner);
      } else if (owner.kind === "linger") linger(owner);
      else if (!owner.connected) connected(owner, now);
      else ready(owner, fd, mask, now);
    }
    relayAllowed();
    if (now - lastSweep >= SWEEP_MS) {
      lastSweep = now;
      sweep(now);
      const collected = collector.sample(now, admission.admitted);
      if (collected !== undefined) report({ kind: "collected", ...collected });
    }
  }
}

function command(c: Exclude<RelayCommand, { kind: "stop" }>): void {
  exemplars.commands.set(c.kind, c);
  switch (c.kind) {
    case "listen": {
      const l: Listening = {
        kind: "listen",
        listenId: c.listenId,
        fd: c.fd,
        proto: c.proto,
        paused: false,
        noDelay: setNoDelay(c.fd),
        drained: false,
      };
      listeners.set(c.listenId, l);
      own(c.fd, l);
      if (!ctl(EPOLL_CTL_ADD, c.fd, EPOLLIN)) {
        report({ kind: "accept_error", listenId: c.listenId, error: errnoName(readErrno()) });
      }
      return;
    }
    case "unlisten":
      for (const l of [...listeners.values()]) {
        if (c.listenId === undefined || l.listenId === c.listenId) unlisten(l);
      }
      return;
    case "settings":
      settings = c.settings;
      return;
    case "policy":
      policy = c.policy;
      return;
    case "learn":
      dnsCopy.learn(c.snapshot);
      return;
    case "forward":
      return forward(c);
    case "dismiss": {
      const g = greeted.get(c.id);
      if (g !== undefined) endGreeting(g);
      return;
    }
    case "refuse": {
      const g = greeted.get(c.id);
      if (g !== undefined) refuseGreeting(g, c.response);
      return;
    }
  }
}

/** Ends everything: listeners closed, connections closed (relays reported `aborted`). */
function stop(): void {
  for (const l of [...listeners.values()]) unlisten(l);
  for (const g of [...greeted.values()]) endGreeting(g);
  eachRelay((r) => finish(r, "aborted"));
  for (const l of [...lingering]) endLinger(l);
  s.close(epfd);
  report({ kind: "stopped" });
  flushReports();
  self.close();
}

/** Makes `owner` the owner of `fd`, growing the table without holes. */
function own(fd: number, owner: Listening | Greeted | Relayed | Lingering): void {
  while (owners.length <= fd) owners.push(undefined);
  owners[fd] = owner;
}

/**
 * Calls `fn` for each relay in progress, walking the fd table in place (a sweep runs four times a
 * second, and a copy of ten thousand relays each time was most of an idle thread's garbage).
 * `fn` may end the relay: that only empties its own fds' entries (or hands its client fd to a
 * lingering refusal), and nothing starts a relay meanwhile.
 */
function eachRelay(fn: (r: Relayed) => void): void {
  for (let fd = 0; fd < owners.length; fd++) {
    const owner = owners[fd];
    if (owner?.kind === "relay" && owner.client === fd) fn(owner);
  }
}

function sweep(now: number): void {
  for (const l of listeners.values()) {
    if (l.paused && ctl(EPOLL_CTL_ADD, l.fd, EPOLLIN)) {
      l.paused = false;
      paused--;
    }
  }
  for (const g of [...greeted.values()]) {
    if (!g.waiting && now >= g.deadline) failGreeting(g, "timeout");
  }
  eachRelay((r) => {
    if (!r.connected) {
      if (now >= r.connectDeadline) finish(r, "connect_timeout");
    } else if (now - r.lastActivity >= r.idleTimeoutMs) finish(r, "idle_timeout");
  });
  for (const l of [...lingering]) if (now >= l.deadline) endLinger(l);
}

function unlisten(l: Listening): void {
  if (l.paused) paused--;
  listeners.delete(l.listenId);
  owners[l.fd] = undefined;
  s.close(l.fd);
}

/** Accepts what is queued (up to a bound), counts each in or refuses it, and greets it. */
function acceptFrom(l: Listening, now: number): void {
  for (let i = 0; i < ACCEPTS_PER_EVENT; i++) {
    peerLength[0] = peerAddress.length;
    const fd = s.accept4(l.fd, peerAddress, peerLengthBytes, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const errno = readErrno();
      if (errno === EAGAIN) {
        l.drained = true;
        return;
      }
      if (errno === EINTR || errno === ECONNABORTED) continue;
      // Out of descriptors or memory: the queue stays full and level-triggered epoll would
      // spin, so the listener sits out until the next sweep.
      if (ctl(EPOLL_CTL_DEL, l.fd, 0)) {
        l.paused = true;
        paused++;
      }
      report({ kind: "accept_error", listenId: l.listenId, error: errnoName(errno) });
      return;
    }
    const peer = decodeSockaddr(peerAddress, peerLength[0]);
    if (peer === null) {
      s.close(fd);
      continue;
    }
    const source = peer.address; // canonical
    const refusal = admission.admit(
      source,
      settings.maxConnections,
      settings.maxConnectionsPerSource,
    );
    if (refusal !== null) {
      s.close(fd);
      report({ kind: "refused", listenId: l.listenId, source, reason: refusal });
      continue;
    }
    const ends = upstreamEnds.get(peer.port);
    const loop = ends === source || (Array.isArray(ends) && ends.includes(source));
    greet(l, fd, source, peer.port, loop, now);
  }
}

/** Starts reading a new connection's first flight; its original destination is read first. */
function greet(
  l: Listening,
  fd: number,
  source: string,
  port: number,
  loop: boolean,
  now: number,
): void {
  // Small writes (a TLS Finished, then the first request) must not wait for Nagle and a
  // delayed ACK: measured 40 ms at p99 for new TLS connections without this.
  if (!l.noDelay || !l.drained) setNoDelay(fd);
  const local = socketAddressOf(libc, fd, "getsockname");
  const origin = local.ok ? originalDestinationOfFd(libc, fd, local.address) : local;
  const id = nextId++;
  const g: Greeted = {
    kind: "greet",
    id,
    fd,
    source,
    proto: l.proto,
    scanner: l.proto === "HTTP" ? new HttpHeadScanner() : null,
    head: null,
    buffer: NO_BYTES,
    length: 0,
    needBytes: 1,
    deadline: now + settings.firstBytesTimeoutMs,
    waiting: false,
    registered: false,
    known: {
      id,
      listenId: l.listenId,
      proto: l.proto,
      source,
      port,
      origin,
      loop,
      accepted: now,
      read: UNREAD,
    },
  };
  greeted.set(g.id, g);
  own(fd, g);
  // The first bytes are often queued by the time the connection is accepted: no wait then.
  readFirst(g);
  if (!greeted.has(g.id) || g.waiting) return;
  if (ctl(EPOLL_CTL_ADD, fd, EPOLLIN)) g.registered = true;
  else failGreeting(g, "read_error");
}

/**
 * Reads more of the first flight; sends the greeting once the parser has a verdict. The first
 * read goes into the shared buffer and only what arrived is kept, so a connection whose first
 * flight comes whole (nearly all) costs one small copy and no buffer of its own.
 */
function readFirst(g: Greeted): void {
  const max = firstFlightMax(g);
  if (g.length > 0 && g.length === g.buffer.length) {
    const grown = new Uint8Array(Math.min(g.buffer.length * 4, max));
    grown.set(g.buffer);
    g.buffer = grown;
  }
  const fresh = g.length === 0;
  const n = fresh
    ? Number(s.read(g.fd, buffer, BigInt(max)))
    : Number(s.read(g.fd, g.buffer.subarray(g.length), BigInt(g.buffer.length - g.length)));
  if (n === 0) return failGreeting(g, "closed");
  if (n < 0) {
    const errno = readErrno();
    if (errno !== EAGAIN && errno !== EINTR) failGreeting(g, "read_error");
    return;
  }
  g.length += n;
  const bytes = fresh ? buffer.subarray(0, n) : g.buffer.subarray(0, g.length);
  if (g.length < g.needBytes) {
    if (fresh) keep(g, bytes, false);
    return;
  }
  let read: Greeting["read"] | undefined;
  if (g.scanner !== null) {
    const head = g.scanner.scan(bytes);
    if (head.kind !== "incomplete") {
      read = { ok: true, head };
      g.head = head;
    } else g.needBytes = g.length + 1;
  } else {
    const hello = scanClientHello(bytes);
    if (hello.kind !== "incomplete") read = { ok: true, hello };
    else g.needBytes = hello.needBytes;
  }
  if (fresh) keep(g, bytes, read !== undefined);
  if (read === undefined) {
    if (g.length >= max) failGreeting(g, "too_large");
    return;
  }
  // Decided by the main thread from here; the socket waits outside the epoll set.
  if (g.registered) ctl(EPOLL_CTL_DEL, g.fd, 0);
  g.waiting = true;
  sendGreeting(g, read);
}

/** The parser's bound on the first flight: a request head, or a ClientHello. */
function firstFlightMax(g: Greeted): number {
  return g.proto === "HTTP" ? MAX_HEAD_BYTES : MAX_CLIENT_HELLO_BYTES;
}

/** Copies a first read out of the shared buffer: exactly, or with room to read on. */
function keep(g: Greeted, bytes: Uint8Array, complete: boolean): void {
  g.buffer = complete
    ? bytes.slice()
    : new Uint8Array(Math.min(firstFlightMax(g), Math.max(FIRST_BYTES, bytes.length * 2)));
  if (!complete) g.buffer.set(bytes);
}

/**
 * How reading the first flight ended (once per connection): a plain allow is the thread's to
 * make (`first_verdict.ts`), logged and counted in the tally, and relayed after this batch of
 * events; the rest goes to the main thread to decide.
 */
function sendGreeting(g: Greeted, read: Greeting["read"]): void {
  const known = g.known;
  if (known === null) return;
  g.known = null;
  known.read = read;
  const quick = read.ok && policy.quick !== null
    ? quickVerdict(known as QuickInput, policy.quick, usableNow) // `read`, just set, is ok
    : null;
  if (quick === null) return report({ kind: "greeting", greeting: known });
  const check = g.proto === "HTTP" ? { pinnedName: quick.name } : undefined;
  const allow = {
    fields: quick.fields,
    at: Date.now(),
    name: quick.name,
    accepted: known.accepted,
  };
  allowed.push({ g, connectTo: quick.connectTo, check, allow });
}

/**
 * The ALLOWED line of a connection this thread allowed, timed when it was decided; its fields
 * (the relay's too) are kept from here on, so they share their texts.
 */
function allowedOnThread(allow: ThreadAllow): void {
  tally.allowed(keepFields(allow.fields), allow.at, allow.name);
  tallied(allow.at);
}

/** The usable addresses the DNS copy holds for `name` now (see `DnsCopy.usable`). */
function usableNow(name: string): string[] | null {
  return dnsCopy.usable(name, Date.now());
}

/** `fields` with their recurring texts swapped for one shared copy (see {@link texts}). */
function keepFields(fields: EventFields): EventFields {
  fields.dst = share(fields.dst);
  if (fields.host !== undefined) fields.host = share(fields.host);
  if (fields.sni !== undefined) fields.sni = share(fields.sni);
  if (fields.alpn !== undefined) fields.alpn = share(fields.alpn);
  if (fields.connect !== undefined) fields.connect = share(fields.connect);
  return fields;
}

function share(text: string): string {
  const known = texts.get(text);
  if (known !== undefined) return known;
  if (texts.size >= SHARED_TEXTS) texts.clear();
  texts.set(text, text);
  return text;
}

/**
 * Reading the first flight failed: the main thread is told why, and the connection ends here
 * (an HTTP head too large is answered 431 first, as a server would).
 */
function failGreeting(g: Greeted, reason: ReadFailure): void {
  sendGreeting(g, { ok: false, reason });
  if (g.proto === "HTTP" && reason === "too_large") refuseGreeting(g, HEAD_TOO_LARGE);
  else endGreeting(g);
}

/** Closes a connection that never reached a relay, and counts it out. */
function endGreeting(g: Greeted): void {
  if (!greeted.delete(g.id)) return;
  owners[g.fd] = undefined;
  s.close(g.fd);
  admission.release(g.source);
}

/** Answers a greeted connection with a refusal and lets it linger. */
function refuseGreeting(g: Greeted, response: Uint8Array): void {
  if (!greeted.delete(g.id)) return;
  if (g.registered && !g.waiting) ctl(EPOLL_CTL_DEL, g.fd, 0);
  startLinger(g.fd, g.source, response);
}

/** Takes over `fd` (out of the epoll set) to answer `response` and linger. */
function startLinger(fd: number, source: string, response: Uint8Array): void {
  const l: Lingering = {
    kind: "linger",
    fd,
    source,
    pending: response,
    shut: false,
    discarded: 0,
    deadline: Date.now() + DENY_LINGER_MS,
    interest: 0,
  };
  lingering.add(l);
  own(fd, l);
  linger(l);
}

/** Writes what is left of the answer, then half-closes and drops what the client sends. */
function linger(l: Lingering): void {
  if (l.pending !== null) {
    const n = write(l.fd, l.pending);
    if (n < 0) return endLinger(l);
    l.pending = n === l.pending.length ? null : l.pending.subarray(n);
  }
  if (l.pending === null) {
    if (!l.shut) {
      s.shutdown(l.fd, SHUT_WR);
      l.shut = true;
    }
    for (;;) {
      const n = Number(s.read(l.fd, buffer, BigInt(BUFFER_BYTES)));
      if (n < 0) {
        const errno = readErrno();
        if (errno === EAGAIN || errno === EINTR) break;
      }
      if (n <= 0) return endLinger(l);
      l.discarded += n;
      if (l.discarded >= DENY_LINGER_BYTES) return endLinger(l);
    }
  }
  const mask = l.pending !== null ? EPOLLOUT : EPOLLIN;
  if (mask !== l.interest) {
    if (!ctl(l.interest === 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, l.fd, mask)) return endLinger(l);
    l.interest = mask;
  }
}

function endLinger(l: Lingering): void {
  if (!lingering.delete(l)) return;
  owners[l.fd] = undefined;
  s.close(l.fd);
  admission.release(l.source);
}

/** The main thread allowed a greeted connection: connect upstream and relay. */
function forward(c: Extract<RelayCommand, { kind: "forward" }>): void {
  const g = greeted.get(c.id);
  if (g === undefined) {
    report({ kind: "done", id: c.id, up: 0, down: 0, error: "closed" });
    return;
  }
  exemplars[g.proto].forward = c;
  relay(g, c, c, c.check, null);
}

/** Relays the connections this thread allowed in the batch of events just handled. */
function relayAllowed(): void {
  for (const { g, connectTo, check, allow } of allowed.splice(0)) {
    if (greeted.has(g.id)) relay(g, connectTo, settings, check, allow);
    else {
      // Not expected (a decided greeting is read no more), but its end must still be told.
      allowedOnThread(allow);
      closedOnThread(allow.fields, allow.accepted, Date.now(), 0, 0, "closed");
    }
  }
}

/**
 * Connects a greeted connection to `to` and relays it; its first flight goes first, through
 * `check` (HTTP) like every later request. `allow`: this thread allowed it (null: the main
 * thread did, and writes its lines).
 */
function relay(
  g: Greeted,
  to: Endpoint,
  deadlines: { connectTimeoutMs: number; idleTimeoutMs: number },
  check: RelayCheck,
  allow: ThreadAllow | null,
): void {
  greeted.delete(g.id);
  if (g.scanner !== null) exemplars[g.proto].scanner = g.scanner;
  const now = Date.now();
  const first = g.length === g.buffer.length ? g.buffer : g.buffer.subarray(0, g.length);
  const r: Relayed = {
    kind: "relay",
    id: g.id,
    client: g.fd,
    upstream: -1,
    source: g.source,
    connectDeadline: now + deadlines.connectTimeoutMs,
    connectStarted: now,
    connected: false,
    connectMs: -1,
    localPort: 0,
    localAddress: "",
    up: { src: g.fd, dst: -1, pending: null, done: false, shut: false, bytes: first.length },
    down: { src: -1, dst: g.fd, pending: null, done: false, shut: false, bytes: 0 },
    lastActivity: now,
    idleTimeoutMs: deadlines.idleTimeoutMs,
    clientInterest: 0,
    upstreamInterest: 0,
    proto: g.proto,
    checks: check !== undefined,
    pinnedName: check?.pinnedName ?? null,
    checker: null,
    finalResponse: null,
    stopped: false,
    fields: allow?.fields ?? null,
    accepted: allow?.accepted ?? 0,
  };
  relayCount++;
  own(g.fd, r);
  // The SYN goes first: the decision's line and the first flight's checks are done while it
  // travels (on a quiet machine, their code cold, they held a new HTTP connection's SYN back
  // by 40-80 us). Nothing is written upstream before they have run, whatever they say.
  const length = encodeSockaddrInto(connectAddress, to.address, to.port);
  const family = length === SOCKADDR_IN6_SIZE ? AF_INET6 : AF_INET;
  const fd = s.socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  let errno = 0;
  let started = false;
  if (fd < 0) errno = readErrno();
  else {
    setNoDelay(fd);
    r.upstream = fd;
    r.up.dst = fd;
    r.down.src = fd;
    own(fd, r);
    started = s.connect(fd, connectAddress, length) === 0;
    if (!started) errno = readErrno();
  }
  if (allow !== null) allowedOnThread(allow);
  // The first flight goes through the checks too: its body is framed, and requests
  // pipelined behind it are checked like any later one.
  if (first.length > 0) {
    if (!r.checks) r.up.pending = first; // the connection's own copy
    else {
      const step = checkClient(r, first, false, g.head ?? undefined);
      queue(r.up, step.out, true);
      afterStep(r, step);
    }
  }
  if (started) return connected(r, now, true);
  if (fd < 0 || errno !== EINPROGRESS) return finish(r, `connect_${errnoName(errno)}`);
  // Over a short path the handshake often completes inside connect(): then the first flight
  // goes at once (a write before that would block, EAGAIN), with no wait for epoll to say so.
  const flight = r.up.pending;
  if (flight !== null) {
    const n = Number(s.write(fd, flight, BigInt(flight.length)));
    if (n > 0) {
      r.up.pending = n === flight.length ? null : flight.subarray(n);
      return connected(r, now, true);
    }
    const failed = n < 0 ? readErrno() : EAGAIN;
    if (failed !== EAGAIN && failed !== EINTR) return finish(r, `connect_${errnoName(failed)}`);
  }
  if (!want(r, true, EPOLLOUT)) finish(r, `connect_${errnoName(readErrno())}`);
}

/** The upstream is connected (`sure`: a write already went through, no need to ask). */
function connected(r: Relayed, now: number, sure = false): void {
  const error = sure ? "OK" : socketError(r.upstream);
  if (error !== "OK") return finish(r, `connect_${error}`);
  r.connected = true;
  r.lastActivity = now;
  rememberUpstreamEnd(r);
  r.connectMs = now - r.connectStarted;
  // The first flight goes out at once: a fresh socket has room, no need to wait for epoll.
  if (r.up.pending !== null && !flush(r, r.up)) return;
  settleDirection(r, r.up);
  update(r);
}

/**
 * Frames and checks client bytes of an HTTP connection. Between requests the checker is
 * dropped, and made again here when the client sends more (`afterFirst`: the first request
 * was checked already), so that an idle kept-alive connection holds no parser state.
 */
function checkClient(
  r: Relayed,
  chunk: Uint8Array,
  afterFirst = true,
  firstHead?: HttpHeadResult,
): CheckStep {
  const checker = r.checker ?? checkerFor(r, r.pinnedName, afterFirst, firstHead);
  r.checker = checker;
  const step = checker.push(chunk);
  if (step.next === "more" && checker.idle) {
    r.checker = null;
    exemplars[r.proto].checker = checker;
  }
  return step;
}

/**
 * The checks of one HTTP connection (`firstHead`: the verdict its first head was decided on);
 * their log lines are written here for a connection this thread allowed, else by the main thread.
 */
function checkerFor(
  r: Relayed,
  pinnedName: string | null,
  afterFirst: boolean,
  firstHead: HttpHeadResult | undefined,
): RequestChecker {
  return new RequestChecker(new RelayCheckContext(r, pinnedName), afterFirst, firstHead);
}

/**
 * Parks copies of `pieces` behind what `d` has pending (they may be views of a reused buffer).
 * `owned`: they are views of a buffer nothing else writes to, so one alone is parked as it is.
 */
function queue(d: Direction, pieces: Uint8Array[], owned = false): void {
  if (owned && d.pending === null && pieces.length === 1) {
    d.pending = pieces[0];
    return;
  }
  let total = d.pending?.length ?? 0;
  for (const piece of pieces) total += piece.length;
  if (total === 0) return;
  const joined = new Uint8Array(total);
  let at = 0;
  if (d.pending !== null) {
    joined.set(d.pending);
    at = d.pending.length;
  }
  for (const piece of pieces) {
    joined.set(piece, at);
    at += piece.length;
  }
  d.pending = joined;
}

/** Writes `pieces` in order to `d`'s destination, parking what does not fit; false if ended. */
function send(r: Relayed, d: Direction, pieces: Uint8Array[]): boolean {
  for (let i = 0; i < pieces.length; i++) {
    if (d.pending !== null) {
      queue(d, pieces.slice(i));
      return true;
    }
    const piece = pieces[i];
    const written = write(d.dst, piece);
    if (written < 0) {
      finish(r, errnoName(readErrno()));
      return false;
    }
    if (written < piece.length) d.pending = piece.slice(written);
  }
  return true;
}

/** What the request checks said beyond the bytes: a stop ends the client's direction. */
function afterStep(r: Relayed, step: CheckStep): void {
  if (step.next !== "stop") return;
  r.finalResponse = step.finalResponse ?? null;
  r.stopped = true;
  r.up.done = true;
  settleDirection(r, r.up);
}

/** Bytes held for a switch request may go on now that the server's answer is known. */
function resumeChecks(r: Relayed): boolean {
  const step = r.checker!.resume();
  if (!send(r, r.up, step.out)) return false;
  afterStep(r, step);
  return true;
}

/** Half-closes a direction's destination once it is done and everything is written. */
function settleDirection(r: Relayed, d: Direction): void {
  if (!d.done || d.shut || d.pending !== null || d.dst < 0) return;
  if (d === r.up && !r.connected) return; // after the connect
  d.shut = true;
  // When the other way is over too, the relay closes both sockets at once and the close sends
  // the FIN; a refusal may leave client bytes unread (the close would reset), so it shuts first.
  const other = d === r.up ? r.down : r.up;
  if (other.done && other.pending === null && !r.stopped) return;
  s.shutdown(d.dst, SHUT_WR);
}

/** Notes the relay's upstream local endpoint for the loop check (none if it is unknown). */
function rememberUpstreamEnd(r: Relayed): void {
  const local = socketAddressOf(libc, r.upstream, "getsockname");
  if (!local.ok) return;
  const { address, port } = local.address;
  // Nearly every upstream leaves from the same address or two: one copy of it, not one each.
  if (address !== lastLocalAddress) lastLocalAddress = address;
  r.localAddress = lastLocalAddress;
  r.localPort = port;
  const ends = upstreamEnds.get(port);
  if (ends === undefined) upstreamEnds.set(port, lastLocalAddress);
  else if (typeof ends === "string") upstreamEnds.set(port, [ends, lastLocalAddress]);
  else ends.push(lastLocalAddress);
}

function forgetUpstreamEnd(r: Relayed): void {
  const ends = upstreamEnds.get(r.localPort);
  if (ends === undefined) return;
  if (typeof ends === "string") {
    if (ends === r.localAddress) upstreamEnds.delete(r.localPort);
    return;
  }
  const at = ends.indexOf(r.localAddress);
  if (at >= 0) ends.splice(at, 1);
  if (ends.length === 1) upstreamEnds.set(r.localPort, ends[0]);
}

/** The socket's pending error (`SO_ERROR`) as an errno name; `OK` when there is none. */
function socketError(fd: number): string {
  optionLength[0] = 4;
  if (libc.getsockopt(fd, SOL_SOCKET, SO_ERROR, optionBytes, optionLength) !== 0) {
    return errnoName(libc.errno());
  }
  return optionValue[0] === 0 ? "OK" : errnoName(optionValue[0]);
}

/**
 * Ends a relay: both fds closed (which also takes them out of the epoll set), reported. An
 * HTTP client whose upstream could not be reached is answered 502 first.
 */
function finish(r: Relayed, error?: string): void {
  // Ended already (a relay is its client fd's owner until it ends).
  if (owners[r.client] !== r) return;
  relayCount--;
  owners[r.client] = undefined;
  if (r.upstream >= 0) {
    owners[r.upstream] = undefined;
    s.close(r.upstream);
  }
  if (r.localPort !== 0) forgetUpstreamEnd(r);
  if (r.proto === "HTTP" && !r.connected && error?.startsWith("connect_")) {
    if (r.clientInterest !== 0) ctl(EPOLL_CTL_DEL, r.client, 0);
    startLinger(r.client, r.source, UPSTREAM_UNREACHABLE);
  } else {
    s.close(r.client);
    admission.release(r.source);
  }
  const now = Date.now();
  const up = r.up.bytes, down = r.down.bytes;
  const connectMs = r.connectMs >= 0 ? r.connectMs : undefined;
  if (error === undefined) exemplars[r.proto].relay = r;
  if (r.fields !== null) {
    return closedOnThread(r.fields, r.accepted, now, up, down, error, connectMs);
  }
  const done: Extract<RelayReport, { kind: "done" }> = {
    kind: "done",
    id: r.id,
    up,
    down,
    endedAt: now,
  };
  if (connectMs !== undefined) done.connectMs = connectMs;
  if (error !== undefined) done.error = error;
  report(done);
}

/** The CLOSED line and counts of a connection this thread allowed by itself, into the tally. */
function closedOnThread(
  fields: EventFields,
  accepted: number,
  now: number,
  up: number,
  down: number,
  error: string | undefined,
  connectMs?: number,
): void {
  fields.relay = "kernel";
  const closed = closedFields(fields, accepted, now, up, down, error);
  if (error === undefined) exemplars[fields.proto].closed = closed;
  tally.closed(closed, now, up, down, connectMs);
  tallied(now);
}

/** Sets `TCP_NODELAY` on `fd`; false when it could not be set. */
function setNoDelay(fd: number): boolean {
  return s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, ONE, 4) === 0;
}

function ctl(op: number, fd: number, mask: number): boolean {
  ctlView.setUint32(0, mask, true);
  ctlView.setUint32(DATA_OFFSET, fd, true);
  ctlView.setUint32(DATA_OFFSET + 4, 0, true);
  return s.epoll_ctl(epfd, op, fd, ctlEvent) === 0;
}

/**
 * Sets one socket's interest. A socket with none is kept out of the epoll set: hang-up and
 * error are reported whatever the interest, and a parked direction would spin on them.
 */
function want(r: Relayed, upstream: boolean, mask: number): boolean {
  const had = upstream ? r.upstreamInterest : r.clientInterest;
  if (had === mask) return true;
  const op = mask === 0 ? EPOLL_CTL_DEL : had === 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (!ctl(op, upstream ? r.upstream : r.client, mask)) return false;
  if (upstream) r.upstreamInterest = mask;
  else r.clientInterest = mask;
  return true;
}

/**
 * Level-triggered interest from state: read a source unless parked, done or held by the
 * request checks; write while pending.
 */
function update(r: Relayed): void {
  let client = 0, upstream = 0;
  if (r.up.pending !== null) upstream |= EPOLLOUT;
  else if (!r.up.done && !r.checker?.holding) client |= READABLE;
  if (r.down.pending !== null) client |= EPOLLOUT;
  else if (!r.down.done) upstream |= READABLE;
  if (!want(r, false, client) || !want(r, true, upstream)) {
    finish(r, `epoll_${errnoName(readErrno())}`);
  }
}

function ready(r: Relayed, fd: number, mask: number, now: number): void {
  r.lastActivity = now;
  const up = act(r, r.up, fd, mask);
  if (up === ENDED) return;
  const down = act(r, r.down, fd, mask);
  if (down === ENDED) return;
  // An error nothing above could act on still ends the relay (it would be reported again).
  if ((mask & EPOLLERR) !== 0 && up === IDLE && down === IDLE) {
    return finish(r, socketError(fd));
  }
  if (r.up.done && r.down.done && r.up.pending === null && r.down.pending === null) {
    return finish(r);
  }
  update(r);
}

/** Flushes and reads one direction as the event on `fd` allows. */
function act(r: Relayed, d: Direction, fd: number, mask: number): number {
  const failed = (mask & (EPOLLERR | EPOLLHUP)) !== 0;
  let outcome = IDLE;
  if (d.dst === fd && d.pending !== null && ((mask & EPOLLOUT) !== 0 || failed)) {
    if (!flush(r, d)) return ENDED;
    outcome = ACTED;
  }
  if (
    d.src === fd && d.pending === null && !d.done && ((mask & EPOLLIN) !== 0 || failed) &&
    !(d === r.up && r.checker?.holding)
  ) {
    if (!pump(r, d, (mask & EPOLLRDHUP) !== 0)) return ENDED;
    outcome = ACTED;
  }
  return outcome;
}

/** Writes what is parked; false when the relay ended. */
function flush(r: Relayed, d: Direction): boolean {
  const bytes = d.pending!;
  const n = write(d.dst, bytes);
  if (n < 0) {
    finish(r, errnoName(readErrno()));
    return false;
  }
  d.pending = n === bytes.length ? null : bytes.subarray(n);
  settleDirection(r, d);
  return true;
}

/**
 * Reads and forwards until the source would block, parks, or ends; false when ended.
 * `halfClosed`: the event said the source's peer has shut down its side, so a read that
 * empties the socket is followed by EOF (TCP delivers the FIN after every byte before it).
 */
function pump(r: Relayed, d: Direction, halfClosed: boolean): boolean {
  for (let reads = 0; reads < READS_PER_EVENT; reads++) {
    const n = Number(s.read(d.src, buffer, BigInt(BUFFER_BYTES)));
    if (n === 0) return sourceEnded(r, d);
    if (n < 0) {
      const errno = readErrno();
      if (errno === EAGAIN || errno === EINTR) return true;
      finish(r, errnoName(errno));
      return false;
    }
    d.bytes += n;
    if (r.checks && d === r.up) {
      const step = checkClient(r, buffer.subarray(0, n));
      if (!send(r, d, step.out)) return false;
      afterStep(r, step);
      if (d.pending !== null || d.done || r.checker?.holding) return true;
      if (n < BUFFER_BYTES) return halfClosed ? sourceEnded(r, d) : true;
      continue;
    }
    // The start of an answer may settle a switch the client's bytes wait for (a checker is
    // there only while a request is under way).
    if (r.checker?.see(buffer.subarray(0, n)) && !resumeChecks(r)) return false;
    const written = write(d.dst, buffer, n);
    if (written < 0) {
      finish(r, errnoName(readErrno()));
      return false;
    }
    if (written < n) {
      // The destination is full: park the rest and stop reading until it drains.
      d.pending = buffer.slice(written, n);
      return true;
    }
    // A short read emptied the socket: asking again would only return EAGAIN (or 0).
    if (n < BUFFER_BYTES) return halfClosed ? sourceEnded(r, d) : true;
  }
  return true;
}

/**
 * The source's EOF: the half-close is passed on (after a refusal's answer, if the checks
 * stopped the client); the other direction finishes on its own. False when the relay ended.
 */
function sourceEnded(r: Relayed, d: Direction): boolean {
  if (d === r.down) {
    if (r.checker?.see(null) && !resumeChecks(r)) return false;
    if (r.finalResponse !== null) queue(d, [r.finalResponse]);
    r.finalResponse = null;
  }
  d.done = true;
  settleDirection(r, d);
  return true;
}

/**
 * Non-blocking write of `bytes[0, length)`: bytes accepted (0 when it would block), or -1 with
 * errno set.
 */
function write(fd: number, bytes: Uint8Array, length = bytes.length): number {
  const n = Number(s.write(fd, bytes, BigInt(length)));
  if (n >= 0) return n;
  const errno = readErrno();
  return errno === EAGAIN || errno === EINTR ? 0 : -1;
}
