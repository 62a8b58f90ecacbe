/**
 * A relay outside the JavaScript socket API, for connections whose decision is made and whose
 * bytes need no more inspection (TLS after the ClientHello). The client's socket leaves Deno
 * (its fd is duplicated, then `Deno.Conn` is closed); the upstream socket is created and
 * connected through libc; one worker thread relays all of them (`kernel_relay_worker.ts`).
 *
 * Why: a relay through `Deno.Conn` keeps a pending `read()` (and its buffer and promise) on
 * both sockets of every idle connection, about 16 KiB of Deno's own per connection, and pays
 * one runtime op per read, write, shutdown and close. Here an idle connection costs its two
 * kernel sockets, an epoll entry and two small records, and the copying runs on a thread of
 * its own that blocks in `epoll_wait` like an event loop written in C.
 * @module
 */

import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";
import { rawFdOf } from "./conn_fd.ts";

/** What a finished relay moved, and why it ended (as `relay.ts` reports it). */
export interface KernelRelayResult {
  up: number;
  down: number;
  error?: string;
}

/** Options of {@link KernelRelay.relay}. */
export interface KernelRelayOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Ends the relay at once (graceful stop past its drain period). */
  signal?: AbortSignal;
  /** Called once the upstream is connected, with its local `address:port` ("" if unknown). */
  onConnected?: (local: string) => void;
}

/** First message to the worker. */
export interface WorkerInit {
  libcPath: string;
  eventFd: number;
  /** [0]: messages posted to the worker so far (it reads its inbox until it has them all). */
  posted: Int32Array;
}

/** What the main thread asks of the worker. */
export type RelayCommand =
  | {
    kind: "relay";
    id: number;
    /** The client's socket, duplicated: the worker owns and closes it. */
    clientFd: number;
    address: string;
    port: number;
    /** Sent upstream before anything else (the ClientHello). */
    first: Uint8Array;
    connectTimeoutMs: number;
    idleTimeoutMs: number;
  }
  | { kind: "abort"; id: number }
  | { kind: "stop" };

/** What the worker tells the main thread. */
export type RelayReport =
  | { kind: "connected"; id: number; local: string }
  | { kind: "done"; id: number; up: number; down: number; error?: string }
  | { kind: "failed"; error: string }
  | { kind: "stopped" };

const SYMBOLS = {
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  dup3: { parameters: ["i32", "i32", "i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  ...ERRNO_SYMBOLS,
} as const;

const F_DUPFD_CLOEXEC = 1030;
const O_RDWR = 0o2;
const O_CLOEXEC = 0o2000000;
const EPOLL_CTL_DEL = 2;
/** Deno's reactor is created at start-up: its epoll fd is among the first descriptors. */
const REACTOR_FD_SCAN = 256;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const ONE = new Uint8Array(new BigUint64Array([1n]).buffer);

const NO_EVENT = new Uint8Array(16);
const PROBE = new Uint8Array([0x50]);
const PROBE_TIMEOUT_MS = 2_000;

function cString(text: string): Uint8Array {
  return new TextEncoder().encode(`${text}\0`);
}

interface Pending {
  resolve: (result: KernelRelayResult) => void;
  onConnected?: (local: string) => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** The worker-thread relay; one per process. */
export class KernelRelay {
  readonly #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #readErrno: () => number;
  readonly #worker: Worker;
  readonly #eventFd: number;
  readonly #posted = new Int32Array(new SharedArrayBuffer(4));
  readonly #pending = new Map<number, Pending>();
  /** Open on /dev/null: put in place of a detached socket's fd for Deno to close. */
  readonly #placeholder: number;
  /** epoll fds of Deno's reactor (found once by {@link KernelRelay.open}'s probe). */
  #reactors: number[] = [];
  #nextId = 1;
  #failure: string | undefined;
  #stopped: Promise<void> | undefined;
  #onStopped: (() => void) | undefined;

  /**
   * Starts the relay thread over the libc at `path` (the one `openLibc` found) and proves on a
   * loopback connection that a socket can be taken from Deno and relayed; rejects with the
   * reason otherwise (then use Deno's relay).
   */
  static async open(path: string, fdSymbol: symbol): Promise<KernelRelay> {
    const relay = new KernelRelay(path);
    try {
      await relay.#probe(fdSymbol);
    } catch (error) {
      await relay.close();
      throw error;
    }
    return relay;
  }

  private constructor(path: string) {
    this.#lib = Deno.dlopen(path, SYMBOLS);
    const s = this.#lib.symbols;
    this.#readErrno = errnoReader(s);
    this.#eventFd = s.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    this.#placeholder = s.open(cString("/dev/null"), O_RDWR | O_CLOEXEC);
    if (this.#eventFd < 0 || this.#placeholder < 0) {
      const error = errnoName(this.#readErrno());
      for (const fd of [this.#eventFd, this.#placeholder]) if (fd >= 0) s.close(fd);
      this.#lib.close();
      throw new Error(`kernel relay set-up failed: ${error}`);
    }
    this.#worker = new Worker(new URL("./kernel_relay_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#worker.onmessage = (e: MessageEvent<RelayReport>) => this.#received(e.data);
    this.#worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(`worker_${e.message}`);
    };
    const init: WorkerInit = { libcPath: path, eventFd: this.#eventFd, posted: this.#posted };
    this.#worker.postMessage(init);
  }

  /** Connections being connected or relayed now. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Takes over `clientFd` (Deno's fd of an accepted connection): duplicates it for the relay
   * thread and calls `release`, which must close the `Deno.Conn` now. Then connects to
   * `address:port`, sends `first` and relays both ways until both directions have ended,
   * either side fails, the idle deadline passes or `signal` aborts. Never rejects: failures
   * are error words (`connect_ECONNREFUSED`, `connect_timeout`, `idle_timeout`, `aborted`).
   */
  relay(
    clientFd: number,
    release: () => void,
    address: string,
    port: number,
    first: Uint8Array,
    options: KernelRelayOptions,
  ): Promise<KernelRelayResult> {
    if (this.#failure !== undefined || this.#stopped !== undefined) {
      release();
      return Promise.resolve({ up: 0, down: 0, error: this.#failure ?? "aborted" });
    }
    const dup = this.#detach(clientFd, release);
    if (typeof dup === "string") return Promise.resolve({ up: 0, down: 0, error: dup });
    if (options.signal?.aborted) {
      this.#lib.symbols.close(dup);
      return Promise.resolve({ up: 0, down: 0, error: "aborted" });
    }
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const pending: Pending = { resolve, onConnected: options.onConnected };
      if (options.signal !== undefined) {
        pending.signal = options.signal;
        pending.onAbort = () => this.#post({ kind: "abort", id });
        options.signal.addEventListener("abort", pending.onAbort, { once: true });
      }
      this.#pending.set(id, pending);
      this.#post({
        kind: "relay",
        id,
        clientFd: dup,
        address,
        port,
        // A copy of its own, moved to the worker: `first` may be a view of a larger buffer.
        first: first.slice(),
        connectTimeoutMs: options.connectTimeoutMs,
        idleTimeoutMs: options.idleTimeoutMs,
      });
    });
  }

  /**
   * Takes a socket from Deno: a duplicate fd for the relay thread, the socket out of Deno's
   * reactor, and /dev/null in place of Deno's fd. Then `release` closes the `Deno.Conn`
   * without touching the socket: its close() would send a FIN (it shuts the socket down for
   * writing), and its reactor would be woken by every event on a socket it no longer reads.
   * Returns the new fd, or an error word.
   */
  #detach(fd: number, release: () => void): number | string {
    const s = this.#lib.symbols;
    const dup = s.fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) {
      const error = `dup_${errnoName(this.#readErrno())}`;
      release();
      return error;
    }
    let error: string | undefined;
    if (!this.#unwatch(fd)) error = "reactor_unknown";
    else if (s.dup3(this.#placeholder, fd, O_CLOEXEC) < 0) {
      error = `dup3_${errnoName(this.#readErrno())}`;
    }
    release();
    if (error === undefined) return dup;
    s.close(dup);
    return error;
  }

  /** Removes `fd` from Deno's reactor; false when no known reactor had it. */
  #unwatch(fd: number): boolean {
    if (this.#reactors.length === 0) this.#reactors = this.#eventpollFds();
    let removed = false;
    for (const epfd of this.#reactors) {
      // Succeeds only in an epoll set that has this very socket under this number.
      if (this.#lib.symbols.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NO_EVENT) === 0) removed = true;
    }
    return removed;
  }

  /** The process's epoll descriptors among the first few hundred fds (this thread's own too). */
  #eventpollFds(): number[] {
    const target = new Uint8Array(64);
    const decoder = new TextDecoder();
    const found: number[] = [];
    for (let fd = 0; fd < REACTOR_FD_SCAN; fd++) {
      const n = Number(
        this.#lib.symbols.readlink(cString(`/proc/self/fd/${fd}`), target, BigInt(target.length)),
      );
      if (n > 0 && decoder.decode(target.subarray(0, n)) === "anon_inode:[eventpoll]") {
        found.push(fd);
      }
    }
    return found;
  }

  /** A loopback connection taken from Deno and written to through its duplicate. */
  async #probe(fdSymbol: symbol): Promise<void> {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const cleanup: (() => void)[] = [() => listener.close()];
    try {
      const client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
      cleanup.push(() => client.close());
      const accepted = await listener.accept();
      const fd = rawFdOf(accepted, fdSymbol);
      if (fd === undefined) {
        accepted.close();
        throw new Error("kernel relay: accepted connection has no fd");
      }
      const dup = this.#detach(fd, () => accepted.close());
      if (typeof dup === "string") {
        throw new Error(`kernel relay: cannot take a socket from Deno: ${dup}`);
      }
      const wrote = Number(this.#lib.symbols.write(dup, PROBE, BigInt(PROBE.length)));
      this.#lib.symbols.close(dup);
      const got = new Uint8Array(PROBE.length + 1);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = wrote !== PROBE.length ? null : await Promise.race([
        client.read(got).catch(() => null),
        new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), PROBE_TIMEOUT_MS)),
      ]);
      clearTimeout(timer);
      if (n !== PROBE.length || got[0] !== PROBE[0]) {
        throw new Error(
          "kernel relay: a socket taken from Deno did not carry bytes (probe failed)",
        );
      }
    } finally {
      for (const close of cleanup.reverse()) {
        try {
          close();
        } catch {
          // Already closed.
        }
      }
    }
  }

  /** Ends every relay (reported as `aborted`) and the thread; waits at most `timeoutMs`. */
  close(timeoutMs = 2_000): Promise<void> {
    if (this.#stopped === undefined) {
      this.#stopped = new Promise<void>((resolve) => {
        const timer = setTimeout(() => this.#onStopped?.(), timeoutMs);
        this.#onStopped = () => {
          clearTimeout(timer);
          this.#onStopped = undefined;
          this.#worker.terminate();
          this.#lib.symbols.close(this.#eventFd);
          this.#lib.symbols.close(this.#placeholder);
          this.#lib.close();
          // Whatever the worker did not report (it was stuck or gone) ends here.
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

  #post(command: RelayCommand): void {
    const transfer = command.kind === "relay" ? [command.first.buffer as ArrayBuffer] : [];
    this.#worker.postMessage(command, transfer);
    Atomics.add(this.#posted, 0, 1);
    this.#lib.symbols.write(this.#eventFd, ONE, 8n);
  }

  #received(report: RelayReport): void {
    switch (report.kind) {
      case "connected":
        this.#pending.get(report.id)?.onConnected?.(report.local);
        return;
      case "done": {
        const { id: _, kind: __, ...result } = report;
        return this.#settle(report.id, result);
      }
      case "failed":
        return this.#fail(report.error);
      case "stopped":
        return this.#onStopped?.();
    }
  }

  #settle(id: number, result: KernelRelayResult): void {
    const pending = this.#pending.get(id);
    if (pending === undefined) return;
    this.#pending.delete(id);
    if (pending.onAbort !== undefined) {
      pending.signal?.removeEventListener("abort", pending.onAbort);
    }
    pending.resolve(result);
  }

  /** The thread is gone: every relay in flight ends, and new ones are refused with `error`. */
  #fail(error: string): void {
    this.#failure ??= error;
    void this.close();
  }
}
