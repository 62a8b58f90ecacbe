/**
 * The relay thread, seen from the main thread: accepting, reading the first flight (request head
 * or ClientHello) and relaying every connection on a thread of its own, through libc
 * (`kernel_relay_worker.ts`), while the main thread keeps the log output, the metrics, DNS and
 * every decision but the plainest.
 *
 * The listeners stay Deno's (bound, reported and closed as before), but nothing in Deno accepts
 * on them: each listener's socket is duplicated for the thread and taken out of Deno's reactor.
 * The thread accepts, counts each connection against the shared limits and reads its first
 * flight. A plain allow (redirected, allowed, its name's addresses in the thread's copy of the
 * DNS cache: `first_verdict.ts`) it forwards at once, writing its lines and counts itself;
 * everything else it sends here as a greeting, which {@link KernelRelay.forward},
 * {@link KernelRelay.refuse} (HTTP) or {@link KernelRelay.dismiss} (TLS) answers, and
 * {@link KernelRelay.learn} gives the thread the answers that let it allow the name's next
 * connections itself.
 *
 * Why: through `Deno.Conn`, a connection costs an accept, a read, a connect and a write per
 * direction as runtime ops with their promises, timers and buffers, and an idle relay holds a
 * pending read (about 16 KiB) on each socket. Here a connection the thread allowed is forwarded
 * with no round trip, and the main thread only sees its lines, already formatted, and its counts,
 * in the tally that comes with each batch of reports; nothing of it is kept here. An idle
 * connection costs its two kernel sockets, an epoll entry and a small record on the thread.
 * @module
 */

import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";
import { socketAddressOf } from "./conn_fd.ts";
import { type Libc, openLibc } from "./libc.ts";
import type { OriginalDstResult } from "./original_dst.ts";
import type { Admission, AdmissionShare, Refusal } from "../src/admission.ts";
import type { Allowlist } from "../src/allowlist.ts";
import type { DnsSnapshot } from "../src/dns_copy.ts";
import type { Collection } from "../src/idle_collect.ts";
import type { QuickPolicy } from "../src/first_verdict.ts";
import type { LineFormat } from "../src/log_line.ts";
import type { Tally } from "../src/event_tally.ts";
import type { HttpHeadResult } from "../src/http_head.ts";
import { canonicalAddress } from "../src/ip_address.ts";
import type { SourcePolicy } from "../src/source_policy.ts";
import type { ClientHelloScan } from "../src/tls_client_hello.ts";

/** What a finished relay moved, and why it ended (as `relay.ts` reports it). */
export interface KernelRelayResult {
  up: number;
  down: number;
  /** How long the upstream connect took, if it completed. */
  connectMs?: number;
  error?: string;
  /**
   * When the relay ended (ms since the epoch), as the thread saw it: its report may come up to
   * a batch later, and the CLOSED line's time and duration are the relay's own.
   */
  endedAt?: number;
}

/** Which protocol a listener speaks. */
export type PlaneProto = "HTTP" | "HTTPS";

/** A later request on an HTTP connection that the thread refused, or let through in audit mode. */
export interface RequestEvent {
  kind: "refused" | "audited";
  reason: string;
  host?: string;
}

/** Options of {@link KernelRelay.forward}. */
export interface ForwardOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /**
   * HTTP: every later request is checked on the thread (see `request_check.ts`); the name the
   * connection was allowed for (null in audit mode for a denial).
   */
  check?: { pinnedName: string | null };
  /** HTTP: a later request was refused or audited. */
  onEvent?: (event: RequestEvent) => void;
}

/** Why reading a first flight ended without a verdict (as `preamble.ts` words it). */
export type ReadFailure = "timeout" | "closed" | "too_large" | "read_error";

/**
 * A connection the thread accepted, with its first flight (request head or ClientHello) read,
 * or why it could not be.
 */
export interface Greeting {
  /** Names the connection in {@link KernelRelay.forward} and {@link KernelRelay.dismiss}. */
  id: number;
  listenId: number;
  /** The client's canonical address, and port. */
  source: string;
  port: number;
  /** The destination the client dialled, as conntrack remembers it. */
  origin: OriginalDstResult;
  /** The client is one of the thread's own upstream sockets: the proxy's traffic came back. */
  loop: boolean;
  /** When the connection was accepted (milliseconds since the epoch). */
  accepted: number;
  proto: PlaneProto;
  /**
   * The parsed ClientHello (TLS) or request head (HTTP). On failure the thread has ended the
   * connection already (an HTTP head too large got its 431) and it needs no answer.
   */
  read:
    | { ok: true; hello: Exclude<ClientHelloScan, { kind: "incomplete" }> }
    | { ok: true; head: Exclude<HttpHeadResult, { kind: "incomplete" }> }
    | { ok: false; reason: ReadFailure };
}

/**
 * The policy later HTTP requests are checked against (the one in force, after reloads), and
 * what the thread needs to allow a new connection by itself (null: every one is asked here).
 */
export interface PlanePolicy {
  allowlist: Allowlist;
  sourcePolicy: SourcePolicy;
  audit: boolean;
  quick: QuickPolicy | null;
}

/** What the thread applies to connections it accepts. */
export interface PlaneSettings {
  firstBytesTimeoutMs: number;
  maxConnections: number;
  maxConnectionsPerSource: number;
  /** For the connections the thread allows by itself. */
  connectTimeoutMs: number;
  idleTimeoutMs: number;
}

/** Where the thread's news about one listener goes. */
export interface ListenerHandlers {
  /**
   * Every accepted connection, once its first flight is read or reading it failed, unless the
   * thread allowed it by itself.
   */
  greeting(greeting: Greeting): void;
  /** A connection refused at the door by the limits (closed at once). */
  refused(source: string, reason: Refusal): void;
  /** accept() failed (e.g. out of descriptors); the listener pauses for a moment. */
  acceptError(error: string): void;
}

/** First message to the worker. */
export interface WorkerInit {
  libcPath: string;
  eventFd: number;
  /** [0]: batches posted to the worker so far (it reads its inbox until it has them all). */
  posted: Int32Array;
  admission: AdmissionShare;
  settings: PlaneSettings;
  policy: PlanePolicy;
  /** The form of the lines the thread writes for the connections it decides; null: none. */
  lineFormat: LineFormat | null;
}

/** What the main thread hears from the thread besides each listener's connections. */
export interface RelayHooks {
  /**
   * The lines and counts of the connections the thread decided by itself, in batches, from
   * `relay` (which the names' DNS answers go back to): the main thread keeps nothing of those
   * connections.
   */
  tally?: (tally: Tally, relay: KernelRelay) => void;
  /** The form of the tally's lines (`LOG_FORMAT`); none are written when null or absent. */
  lineFormat?: LineFormat | null;
  /** The thread's idle garbage collections. */
  collected?: (collection: Collection) => void;
}

/** What the main thread asks of the worker (posted in batches). */
export type RelayCommand =
  | { kind: "listen"; listenId: number; fd: number; proto: PlaneProto }
  | { kind: "unlisten"; listenId?: number }
  | { kind: "settings"; settings: PlaneSettings }
  | { kind: "policy"; policy: PlanePolicy }
  | { kind: "learn"; snapshot: DnsSnapshot }
  | {
    kind: "forward";
    id: number;
    address: string;
    port: number;
    connectTimeoutMs: number;
    idleTimeoutMs: number;
    check?: { pinnedName: string | null };
  }
  | { kind: "dismiss"; id: number }
  | { kind: "refuse"; id: number; response: Uint8Array }
  | { kind: "stop" };

/** What the worker tells the main thread (sent in batches). */
export type RelayReport =
  | { kind: "greeting"; greeting: Greeting }
  | { kind: "tally"; tally: Tally }
  | { kind: "refused"; listenId: number; source: string; reason: Refusal }
  | { kind: "accept_error"; listenId: number; error: string }
  | {
    kind: "done";
    id: number;
    up: number;
    down: number;
    connectMs?: number;
    error?: string;
    endedAt?: number;
  }
  | { kind: "event"; id: number; event: RequestEvent }
  | ({ kind: "collected" } & Collection)
  | { kind: "ready" }
  | { kind: "failed"; error: string }
  | { kind: "stopped" };

const SYMBOLS = {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  ...ERRNO_SYMBOLS,
} as const;

const F_DUPFD_CLOEXEC = 1030;
const EPOLL_CTL_DEL = 2;
const SOL_SOCKET = 1;
const SO_ACCEPTCONN = 30;
/** Listeners and Deno's reactor are made at start-up: their fds are among the first. */
const FD_SCAN = 1024;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

const NO_EVENT = new Uint8Array(16);
const PROBE = new Uint8Array([0x50]);
/**
 * For the thread to start: a cold start compiles its modules, and CI machines under load took
 * seconds; the probe's own deadline starts after it.
 */
const START_TIMEOUT_MS = 30_000;
const PROBE_TIMEOUT_MS = 5_000;

function cString(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

interface Pending {
  resolve: (result: KernelRelayResult) => void;
  onEvent?: (event: RequestEvent) => void;
}

/** The relay thread; one per process. */
export class KernelRelay {
  readonly #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #libc: Libc;
  readonly #readErrno: () => number;
  readonly #worker: Worker;
  readonly #eventFd: number;
  readonly #posted = new Int32Array(new SharedArrayBuffer(4));
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new Map<number, ListenerHandlers>();
  #outbox: RelayCommand[] = [];
  /**
   * The thread's last batch of reports as it came, kept until the next for its hidden classes
   * (structured clones and the event): the main thread's idle collection freed them with nothing
   * open, and V8 dropped the optimized code that reads them (the thread keeps its own exemplars,
   * see `kernel_relay_worker.ts`).
   */
  #lastBatch: MessageEvent<RelayReport[]> | null = null;
  #nextListenId = 1;
  /** epoll fds of Deno's reactor, found once (they live as long as the process). */
  #reactors: number[] | undefined;
  #failure: string | undefined;
  #stopped: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;
  readonly #hooks: RelayHooks;
  /** The eventfd is closed: nothing may be posted any more. */
  #gone = false;
  #onFailed!: (error: string) => void;
  #onReady!: () => void;
  /** Resolves once the thread runs its loop (its modules loaded, its epoll set made). */
  readonly #ready: Promise<void> = new Promise((resolve) => this.#onReady = resolve);
  /**
   * Resolves with the reason if the thread fails after it started (a bug, or out of memory):
   * then nothing accepts on the listeners it took, and the proxy must stop.
   */
  readonly failed: Promise<string> = new Promise((resolve) => this.#onFailed = resolve);

  /**
   * Starts the thread over the libc at `path` (the one `openLibc` found), counting in
   * `admission`, and proves on loopback that it can take a Deno listener, accept, read and
   * relay; rejects with the reason otherwise (then Deno serves every listener itself).
   */
  static async open(
    path: string,
    admission: Admission,
    settings: PlaneSettings,
    policy: PlanePolicy,
    hooks: RelayHooks = {},
  ): Promise<KernelRelay> {
    const relay = new KernelRelay(path, admission, settings, policy, hooks);
    try {
      await relay.#started();
      await relay.#probe();
    } catch (error) {
      await relay.close();
      throw error;
    }
    return relay;
  }

  private constructor(
    path: string,
    admission: Admission,
    settings: PlaneSettings,
    policy: PlanePolicy,
    hooks: RelayHooks,
  ) {
    this.#hooks = hooks;
    this.#lib = Deno.dlopen(path, SYMBOLS);
    const s = this.#lib.symbols;
    this.#libc = openLibc([path]);
    this.#readErrno = errnoReader(s);
    this.#eventFd = s.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.#eventFd < 0) {
      const error = errnoName(this.#readErrno());
      this.#libc.close();
      this.#lib.close();
      throw new Error(`kernel relay set-up failed: ${error}`);
    }
    this.#worker = new Worker(new URL("./kernel_relay_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#worker.onmessage = (e: MessageEvent<RelayReport[]>) => {
      this.#lastBatch = e;
      for (const report of e.data) this.#received(report);
    };
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(`worker_${e.message}`);
    };
    const init: WorkerInit = {
      libcPath: path,
      eventFd: this.#eventFd,
      posted: this.#posted,
      admission: admission.share,
      settings,
      policy,
      lineFormat: hooks.lineFormat ?? null,
    };
    this.#worker.postMessage(init);
  }

  /** Neither failed nor closing: commands still reach the thread. */
  get #running(): boolean {
    return this.#failure === undefined && this.#stopped === undefined;
  }

  /** Connections forwarded from here and not yet ended (not those the thread allowed itself). */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Hands accepting on `listener` to the thread; its connections are reported to `handlers`
   * from now on, and Deno must never accept on it. Returns an id for {@link unlisten}, or an
   * error word when the listener's socket could not be found or duplicated.
   */
  serve(
    listener: Deno.TcpListener,
    proto: PlaneProto,
    handlers: ListenerHandlers,
  ): number | string {
    if (!this.#running) return "relay_stopped";
    const fd = this.#listenerFd(listener.addr);
    if (fd === undefined) return "listener_not_found";
    const dup = this.#lib.symbols.fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return `dup_${errnoName(this.#readErrno())}`;
    // Deno's reactor would be woken by every connection arriving on a socket it never
    // accepts on; best effort, since staying registered costs wake-ups only.
    this.#unwatch(fd);
    const listenId = this.#nextListenId++;
    this.#listeners.set(listenId, handlers);
    this.#post({ kind: "listen", listenId, fd: dup, proto });
    return listenId;
  }

  /**
   * Stops accepting on one listener (or all). Connections already accepted go on: their
   * greetings still reach the listener's handlers.
   */
  unlisten(listenId?: number): void {
    this.#post({ kind: "unlisten", listenId });
  }

  /**
   * New limits and first-bytes deadline for connections accepted from now on, and the policy
   * for every later HTTP request, on open connections too.
   */
  configure(settings: PlaneSettings, policy: PlanePolicy): void {
    this.#post({ kind: "settings", settings });
    this.#post({ kind: "policy", policy });
  }

  /**
   * Connects a greeted connection to `address:port`, sends its first flight and relays both
   * ways until both directions have ended, either side fails, the idle deadline passes or the
   * relay closes. Never rejects: failures are error words (`connect_ECONNREFUSED`,
   * `connect_timeout`, `idle_timeout`, `aborted`).
   */
  forward(
    id: number,
    address: string,
    port: number,
    options: ForwardOptions,
  ): Promise<KernelRelayResult> {
    if (!this.#running) {
      return Promise.resolve({ up: 0, down: 0, error: this.#failure ?? "aborted" });
    }
    return new Promise((resolve) => {
      this.#pending.set(id, { resolve, onEvent: options.onEvent });
      this.#post({
        kind: "forward",
        id,
        address,
        port,
        connectTimeoutMs: options.connectTimeoutMs,
        idleTimeoutMs: options.idleTimeoutMs,
        check: options.check,
      });
    });
  }

  /** Gives the thread a name's DNS answers, so it can pin that name's connections itself. */
  learn(snapshot: DnsSnapshot): void {
    if (this.#running) this.#post({ kind: "learn", snapshot });
  }

  /**
   * Answers a greeted HTTP connection with `response` (a denial), then closes it the way a
   * server does: half-close, and a moment to read what the client still sends.
   */
  refuse(id: number, response: Uint8Array): void {
    if (this.#running) this.#post({ kind: "refuse", id, response });
  }

  /** Closes a greeted connection without a word (a denial, or a stop). */
  dismiss(id: number): void {
    if (this.#running) this.#post({ kind: "dismiss", id });
  }

  /**
   * The fd of a Deno listener: the listening socket among the first fds whose local address
   * is `addr` (no two listening sockets share one).
   */
  #listenerFd(addr: Deno.NetAddr): number | undefined {
    const want = canonicalAddress(addr.hostname);
    const flag = new Int32Array(1);
    const flagLength = new Uint32Array(1);
    for (let fd = 0; fd < FD_SCAN; fd++) {
      const local = socketAddressOf(this.#libc, fd, "getsockname");
      if (!local.ok || local.address.port !== addr.port) continue;
      if (canonicalAddress(local.address.address) !== want) continue;
      flagLength[0] = 4;
      const listening = this.#libc.getsockopt(
            fd,
            SOL_SOCKET,
            SO_ACCEPTCONN,
            new Uint8Array(flag.buffer),
            flagLength,
          ) === 0 && flag[0] === 1;
      if (listening) return fd;
    }
    return undefined;
  }

  /** Removes `fd` from Deno's reactor (every epoll set of the process that has it). */
  #unwatch(fd: number): void {
    this.#reactors ??= this.#eventpollFds();
    for (const epfd of this.#reactors) {
      // Succeeds only in an epoll set that has this very socket under this number.
      this.#lib.symbols.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NO_EVENT);
    }
  }

  /** The process's epoll descriptors among the first fds. */
  #eventpollFds(): number[] {
    const target = new Uint8Array(64);
    const decoder = new TextDecoder();
    const found: number[] = [];
    for (let fd = 0; fd < FD_SCAN; fd++) {
      const n = Number(
        this.#lib.symbols.readlink(cString(`/proc/self/fd/${fd}`), target, BigInt(target.length)),
      );
      if (n > 0 && decoder.decode(target.subarray(0, n)) === "anon_inode:[eventpoll]") {
        found.push(fd);
      }
    }
    return found;
  }

  /** Waits for the thread's loop to run; rejects if it fails first or takes too long. */
  async #started(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    // Settles with a value either way: a failure after the race is heard through `failed` alone.
    const failure = await Promise.race([
      this.#ready.then(() => undefined),
      this.failed,
      new Promise<string>((resolve) => {
        timer = setTimeout(
          () => resolve(`not started in ${START_TIMEOUT_MS} ms`),
          START_TIMEOUT_MS,
        );
      }),
    ]);
    clearTimeout(timer);
    if (failure !== undefined) {
      throw new Error(`kernel relay: the thread did not start: ${failure}`);
    }
  }

  /**
   * A loopback listener served by the thread: a client connects and sends a byte, the greeting
   * arrives, and the forwarded connection carries the byte to a loopback upstream.
   */
  async #probe(): Promise<void> {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const upstream = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const cleanup: (() => void)[] = [() => listener.close(), () => upstream.close()];
    let timer: ReturnType<typeof setTimeout> | undefined;
    /** Names the step a timeout stopped, for whoever reads the start-up error. */
    let step = "connect";
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new Error(
              `kernel relay: the probe connection was not relayed in ${PROBE_TIMEOUT_MS} ms (at: ${step})`,
            ),
          ),
        PROBE_TIMEOUT_MS,
      );
    });
    try {
      let greeted: (g: Greeting) => void = () => {};
      const greeting = new Promise<Greeting>((resolve) => greeted = resolve);
      const listenId = this.serve(listener, "HTTPS", {
        greeting: (g) => greeted(g),
        refused: () => {},
        acceptError: () => {},
      });
      if (typeof listenId === "string") {
        throw new Error(`kernel relay: cannot take a listener from Deno: ${listenId}`);
      }
      cleanup.unshift(() => this.unlisten(listenId));
      const client = await Promise.race([
        Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
        timeout,
      ]);
      cleanup.push(() => client.close());
      await client.write(PROBE);
      step = "greeting";
      const g = await Promise.race([greeting, timeout]);
      const done = this.forward(g.id, "127.0.0.1", upstream.addr.port, {
        connectTimeoutMs: PROBE_TIMEOUT_MS,
        idleTimeoutMs: PROBE_TIMEOUT_MS,
      });
      step = "upstream accept";
      const server = await Promise.race([upstream.accept(), timeout]);
      cleanup.push(() => server.close());
      const got = new Uint8Array(PROBE.length + 1);
      step = "upstream read";
      const n = await Promise.race([server.read(got), timeout]);
      if (n !== PROBE.length || got[0] !== PROBE[0]) {
        throw new Error("kernel relay: the probe connection did not carry its bytes");
      }
      client.close();
      server.close();
      step = "end report";
      await Promise.race([done, timeout]);
    } finally {
      clearTimeout(timer);
      for (const close of cleanup.reverse()) {
        try {
          close();
        } catch {
          // Already closed.
        }
      }
    }
  }

  /** Ends every connection (relays reported as `aborted`) and the thread; waits at most `timeoutMs`. */
  close(timeoutMs = 2_000): Promise<void> {
    if (this.#stopped === undefined) {
      this.#stopped = new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#onStopped?.(), timeoutMs);
        this.#onStopped = () => {
          clearTimeout(timer);
          this.#onStopped = undefined;
          this.#gone = true;
          this.#worker.terminate();
          this.#lib.symbols.close(this.#eventFd);
          this.#libc.close();
          this.#lib.close();
          // Whatever the worker did not report (it was stuck or gone) ends here; of the
          // connections it decided by itself, only it could tell.
          for (const id of [...this.#pending.keys()]) {
            this.#settle(id, { up: 0, down: 0, error: "aborted" });
          }
          resolve();
        };
      });
      if (this.#failure !== undefined) this.#onStopped?.();
      else this.#post({ kind: "stop" });
    }
    return this.#stopped;
  }

  /**
   * Queues a command; the queue goes to the thread in one message once the current task's
   * synchronous work (and its microtasks) is done, so a batch of decisions costs one wake-up.
   */
  #post(command: RelayCommand): void {
    this.#outbox.push(command);
    if (this.#outbox.length === 1) queueMicrotask(() => this.#flush());
  }

  #flush(): void {
    const batch = this.#outbox;
    this.#outbox = [];
    if (this.#gone || batch.length === 0) return;
    this.#worker.postMessage(batch);
    Atomics.add(this.#posted, 0, 1);
    this.#lib.symbols.write(this.#eventFd, ONE, 8n);
  }

  #received(report: RelayReport): void {
    switch (report.kind) {
      case "greeting": {
        const handlers = this.#listeners.get(report.greeting.listenId);
        if (handlers !== undefined) return handlers.greeting(report.greeting);
        if (report.greeting.read.ok) this.dismiss(report.greeting.id); // nobody to decide it
        return;
      }
      case "tally":
        return this.#hooks.tally?.(report.tally, this);
      case "refused":
        return this.#listeners.get(report.listenId)?.refused(report.source, report.reason);
      case "accept_error":
        return this.#listeners.get(report.listenId)?.acceptError(report.error);
      case "event":
        return this.#pending.get(report.id)?.onEvent?.(report.event);
      case "done": {
        const { id, kind: _, ...result } = report;
        return this.#settle(id, result);
      }
      case "collected": {
        const { kind: _, ...collection } = report;
        return this.#hooks.collected?.(collection);
      }
      case "ready":
        return this.#onReady();
      case "failed":
        return this.#fail(report.error);
      case "stopped":
        return this.#onStopped?.();
    }
  }

  /** A relayed connection ended: its promise settles. */
  #settle(id: number, result: KernelRelayResult): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    pending.resolve(result);
  }

  /** The thread is gone: every relay in flight ends, and new ones are refused with `error`. */
  #fail(error: string): void {
    if (this.#failure === undefined) this.#onFailed(error);
    this.#failure ??= error;
    void this.close();
  }
}
