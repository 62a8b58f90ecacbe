/**
 * The listeners and their accept loops: connection limits, the per-connection handler, and a
 * graceful stop that drains connections in flight.
 * @module
 */

import {
  type Greeting,
  KernelRelay,
  type PlanePolicy,
  type PlaneSettings,
} from "../ffi/kernel_relay.ts";
import { Admission, type Refusal } from "./admission.ts";
import type { Libc } from "../ffi/libc.ts";
import { canonicalAddress, formatEndpoint } from "./ip_address.ts";
import type { Config } from "./config.ts";
import type { DnsCache } from "./dns_cache.ts";
import { type Collection, IdleCollector } from "./idle_collect.ts";
import type { CollectingThread, ProxyMetrics } from "./metrics.ts";
import {
  type ConnectionContext,
  handleConnection,
  handleGreeting,
  handleTally,
  type Proto,
} from "./connection.ts";
import { eventLineFormat, log, logEvent } from "./log.ts";
import { closeQuietly, errorName } from "./socket.ts";

/** Start-up failure of a listener; the message names the address and port. */
export class ListenError extends Error {
  override name = "ListenError";
}

/** The relay thread failed while serving: nothing accepts any more, so the proxy must stop. */
export class RelayThreadError extends Error {
  override name = "RelayThreadError";
}

/** How often a drain looks at the shared connection count. */
const DRAIN_POLL_MS = 100;
/** How long to pause an accept loop after an accept error (e.g. out of file descriptors). */
const ACCEPT_ERROR_PAUSE_MS = 100;
const LOCAL_ADDRESS_REFRESH_MS = 60_000;
/** How often the main thread samples its heap for an idle collection. */
const IDLE_COLLECT_MS = 500;

/** The running proxy: bound listeners, live connection counts and the current config. */
export class ProxyServer {
  #config: Config;
  readonly #libc: Libc;
  readonly #fdSymbol: symbol;
  readonly #listeners: { listener: Deno.TcpListener; proto: Proto }[] = [];
  readonly #active = new Set<Promise<void>>();
  readonly #admission = new Admission();
  readonly #upstreamEndpoints = new Set<string>();
  readonly #stop = new AbortController();
  #localAddresses = new Set<string>();
  #accepting = false;
  #limitLogged = 0;

  readonly #dns: DnsCache;
  readonly #metrics: ProxyMetrics;
  /** The relay thread, when `RELAY=kernel` and it could be started. */
  #kernel: KernelRelay | undefined;
  #closed = false;
  #contextCache: ConnectionContext | undefined;
  /** Some listener is served by Deno's accept loop (the thread could not take it). */
  #servedByDeno = false;
  #onStopAccepting: (() => void) | undefined;

  constructor(
    config: Config,
    deps: { libc: Libc; fdSymbol: symbol; dns: DnsCache; metrics: ProxyMetrics },
  ) {
    this.#config = config;
    this.#libc = deps.libc;
    this.#fdSymbol = deps.fdSymbol;
    this.#dns = deps.dns;
    this.#metrics = deps.metrics;
    this.#metrics.countActiveWith(() => this.#admission.active);
  }

  /** True while the listeners accept connections (not yet stopping). */
  get accepting(): boolean {
    return this.#accepting;
  }

  /** The configuration new connections get. */
  get config(): Config {
    return this.#config;
  }

  /** Applies a new configuration to connections accepted from now on. */
  set config(config: Config) {
    this.#config = config;
    this.#configureKernel();
  }

  /** Connections being handled now. */
  get activeConnections(): number {
    return this.#admission.active;
  }

  /** The bound listeners' addresses. */
  get addresses(): { proto: Proto; addr: Deno.NetAddr }[] {
    return this.#listeners.map(({ listener, proto }) => ({ proto, addr: listener.addr }));
  }

  /** Binds every listener, or none: a failure closes those already bound. */
  listen(): void {
    const { listenAddresses, httpPort, httpsPort } = this.#config;
    try {
      for (const hostname of listenAddresses) {
        for (const [proto, port] of [["HTTP", httpPort], ["HTTPS", httpsPort]] as const) {
          this.#listeners.push({ listener: bind(hostname, port), proto });
        }
      }
    } catch (error) {
      for (const { listener } of this.#listeners) listener.close();
      this.#listeners.length = 0;
      throw error;
    }
    this.#refreshLocalAddresses();
  }

  /** Runs the accept loops until `stopAccepting`; resolves when they have all ended. */
  async serve(): Promise<void> {
    this.#accepting = true;
    const stopped = new Promise<void>((resolve) => this.#onStopAccepting = resolve);
    // Before the first accept, so every connection takes the same path.
    if (this.#config.relay === "kernel") await this.#openKernel();
    if (!this.#accepting) return; // stopped while the thread started
    // Addresses come and go (DHCP, hot-plugged NICs); the loop check follows them.
    const refresh = setInterval(() => this.#refreshLocalAddresses(), LOCAL_ADDRESS_REFRESH_MS);
    const collector = new IdleCollector();
    if (!collector.enabled) {
      log.warn(
        "V8's gc is not exposed (--v8-flags=--expose-gc): garbage of past connections " +
          "stays resident until V8 collects it by itself",
      );
    }
    const collect = setInterval(() => {
      const collection = collector.sample(Date.now(), this.#admission.admitted);
      if (collection !== undefined) this.#collected("main", collection);
    }, IDLE_COLLECT_MS);
    try {
      const loops = this.#listeners.map(({ listener, proto }) => {
        if (this.#servedByKernel(listener, proto)) return stopped;
        this.#servedByDeno = true;
        return this.#acceptLoop(listener, proto);
      });
      // Before Deno accepts anything: from now on the thread asks about every connection.
      if (this.#servedByDeno) this.#configureKernel();
      const failed = this.#kernel?.failed ?? new Promise<never>(() => {});
      const outcome = await Promise.race([Promise.all(loops).then(() => null), failed]);
      if (outcome !== null && this.#accepting) {
        throw new RelayThreadError(`the relay thread failed (${outcome}); nothing accepts`);
      }
    } finally {
      clearInterval(refresh);
      clearInterval(collect);
    }
  }

  /** Closes the listeners: new connections are refused by the kernel from now on. */
  stopAccepting(): void {
    this.#accepting = false;
    this.#onStopAccepting?.();
    this.#kernel?.unlisten();
    for (const { listener } of this.#listeners) {
      try {
        listener.close();
      } catch {
        // Already closed.
      }
    }
  }

  /**
   * Waits up to `timeoutMs` for connections in flight to finish, then aborts the rest.
   * Resolves with the number that had to be aborted.
   */
  async drain(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    // Connections on the relay thread that are still reading their first bytes, lingering after
    // a refusal, or allowed by the thread itself are known here only by the shared count: it is
    // looked at again at least every DRAIN_POLL_MS.
    while (this.activeConnections > 0) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        ...this.#active,
        new Promise((resolve) => timer = setTimeout(resolve, Math.min(left, DRAIN_POLL_MS))),
      ]);
      clearTimeout(timer);
    }
    const left = this.activeConnections;
    this.#stop.abort();
    // The thread ends every connection it still holds (their relays report `aborted`).
    const kernel = this.#kernel;
    this.#closed = true;
    this.#kernel = undefined;
    await kernel?.close();
    await Promise.allSettled([...this.#active]);
    return left;
  }

  async #acceptLoop(listener: Deno.TcpListener, proto: Proto): Promise<void> {
    while (this.#accepting) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (!this.#accepting || error instanceof Deno.errors.BadResource) return;
        log.error("accept failed on {proto} listener: {error}", { proto, error: errorName(error) });
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_ERROR_PAUSE_MS));
        continue;
      }
      this.#admit(conn, proto);
    }
  }

  #admit(conn: Deno.TcpConn, proto: Proto): void {
    const config = this.#config;
    const source = canonicalAddress(conn.remoteAddr.hostname);
    const refusal = this.#admission.admit(
      source,
      config.maxConnections,
      config.maxConnectionsPerSource,
    );
    if (refusal !== null) {
      closeQuietly(conn);
      return this.#refused(proto, source, refusal);
    }
    const task = handleConnection(conn, proto, this.#context(config), source).finally(() => {
      this.#active.delete(task);
      this.#admission.release(source);
    });
    this.#active.add(task);
  }

  /** A connection the thread accepted and read: decided here, relayed there. */
  #greeted(kernel: KernelRelay, greeting: Greeting): void {
    // The thread counts it out of the limits when it closes the socket.
    const task = handleGreeting(greeting, kernel, this.#context(this.#config)).finally(() => {
      this.#active.delete(task);
    });
    this.#active.add(task);
  }

  /** The context of connections accepted under `config`: one object per configuration. */
  #context(config: Config): ConnectionContext {
    if (this.#contextCache?.config !== config) this.#contextCache = this.#newContext(config);
    return this.#contextCache;
  }

  #newContext(config: Config): ConnectionContext {
    return {
      config,
      currentConfig: () => this.#config,
      libc: this.#libc,
      fdSymbol: this.#fdSymbol,
      dns: this.#dns,
      metrics: this.#metrics,
      isOwnListener: (address, port) => this.#isOwnListener(address, port),
      upstreamEndpoints: this.#upstreamEndpoints,
      stopSignal: this.#stop.signal,
    };
  }

  /**
   * Counts and logs a connection refused at the door. It was never queued; the log line is
   * written at most once a second, so a flood does not turn into a flood of log lines.
   */
  #refused(proto: Proto, source: string, reason: Refusal): void {
    this.#metrics.connection(proto, "denied", reason);
    const now = Date.now();
    if (now - this.#limitLogged < 1000) return;
    this.#limitLogged = now;
    logEvent({ event: "DENIED", proto, peer: source, dst: "-", reason });
  }

  /** Counts and logs (at debug level) a thread's idle garbage collection. */
  #collected(thread: CollectingThread, { before, after, ms }: Collection): void {
    this.#metrics.idleCollection(thread);
    log.debug(
      "{thread} thread collected garbage once quiet: old generation {before} -> {after} KiB in {ms} ms",
      {
        thread,
        before: Math.round(before / 1024),
        after: Math.round(after / 1024),
        ms: Math.round(ms * 10) / 10,
      },
    );
  }

  /** Starts the relay thread; if it cannot start (logged), Deno serves every listener itself. */
  async #openKernel(): Promise<void> {
    try {
      const kernel = await KernelRelay.open(
        this.#libc.path,
        this.#admission,
        planeSettings(this.#config),
        this.#planePolicy(this.#config),
        {
          // Connections the thread decided by itself are logged and counted here, nothing more.
          tally: (tally, relay) => handleTally(tally, relay, this.#context(this.#config)),
          lineFormat: eventLineFormat(),
          collected: (collection) => this.#collected("relay", collection),
        },
      );
      if (this.#closed) await kernel.close(); // stopped meanwhile
      else this.#kernel = kernel;
    } catch (error) {
      log.error("RELAY=kernel unavailable, connections served by Deno: {error}", {
        error: errorName(error),
      });
    }
  }

  /** Hands a listener to the thread; false when there is no thread or it cannot take it. */
  #servedByKernel(listener: Deno.TcpListener, proto: Proto): boolean {
    const kernel = this.#kernel;
    if (kernel === undefined) return false;
    const served = kernel.serve(listener, proto, {
      greeting: (greeting) => this.#greeted(kernel, greeting),
      refused: (source, reason) => this.#refused(proto, source, reason),
      acceptError: (error) =>
        log.error("accept failed on {proto} listener: {error}", { proto, error }),
    });
    if (typeof served === "number") return true;
    log.error(
      "{proto} listener {address} not handed to the relay thread ({error}); Deno serves it",
      {
        proto,
        address: formatEndpoint(listener.addr.hostname, listener.addr.port),
        error: served,
      },
    );
    return false;
  }

  /** Gives the relay thread the current configuration's settings and policy. */
  #configureKernel(): void {
    this.#kernel?.configure(planeSettings(this.#config), this.#planePolicy(this.#config));
  }

  /**
   * The policy the relay thread checks later HTTP requests against, and allows plain
   * connections by itself with: only in enforce mode, and only while the thread serves every
   * listener (the loop check of Deno's own upstream connections is made here).
   */
  #planePolicy(config: Config): PlanePolicy {
    const audit = config.mode === "audit";
    const { allowlist, sourcePolicy } = config;
    const quick = audit || this.#servedByDeno ? null : {
      allowlist,
      sourcePolicy,
      echDeny: config.echPolicy === "deny",
      dstPolicy: config.dstPolicy,
      ownPorts: [...new Set(this.#listeners.map(({ listener }) => listener.addr.port))],
    };
    return { allowlist, sourcePolicy, audit, quick };
  }

  #isOwnListener(address: string, port: number): boolean {
    if (!this.#listeners.some(({ listener }) => listener.addr.port === port)) return false;
    const canonical = canonicalAddress(address);
    return isLoopbackOrUnspecified(canonical) || this.#localAddresses.has(canonical);
  }

  #refreshLocalAddresses(): void {
    const addresses = new Set<string>();
    try {
      for (const nic of Deno.networkInterfaces()) addresses.add(canonicalAddress(nic.address));
    } catch {
      // Without --allow-sys the loop check falls back to loopback and the unspecified address.
    }
    for (const { listener } of this.#listeners) {
      addresses.add(canonicalAddress(listener.addr.hostname));
    }
    this.#localAddresses = addresses;
  }
}

/** The settings the relay thread applies when it accepts. */
function planeSettings(config: Config): PlaneSettings {
  return {
    firstBytesTimeoutMs: config.firstBytesTimeoutMs,
    maxConnections: config.maxConnections,
    maxConnectionsPerSource: config.maxConnectionsPerSource,
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
  };
}

function isLoopbackOrUnspecified(address: string): boolean {
  return address.startsWith("127.") || address === "::1" || address === "::" ||
    address === "0.0.0.0";
}

function bind(hostname: string, port: number): Deno.TcpListener {
  try {
    return Deno.listen({ hostname, port, transport: "tcp" });
  } catch (error) {
    // A host with IPv6 disabled cannot bind the dual-stack default; serve IPv4 rather than fail.
    if (hostname === "::" && !(error instanceof Deno.errors.AddrInUse)) {
      log.warn("IPv6 unavailable ({error}); listening on 0.0.0.0:{port} only", {
        error: errorName(error),
        port,
      });
      return bind("0.0.0.0", port);
    }
    throw new ListenError(
      `cannot listen on ${formatEndpoint(hostname, port)}: ${
        error instanceof Error ? error.message : error
      }`,
    );
  }
}
