/**
 * A relay outside the JavaScript socket API, for connections whose decision is made and whose
 * bytes need no more inspection (TLS after the ClientHello): one epoll set for every such
 * connection, non-blocking `read`/`write` through libc into one shared buffer, the upstream
 * socket created and connected through libc too.
 *
 * Why: a relay through `Deno.Conn` keeps a pending `read()` (and its buffer and promise) on
 * both sockets of every idle connection, about 16 KiB of Deno's own per connection, and pays
 * one runtime op per read, write and shutdown. Here an idle connection costs its two kernel
 * sockets, an epoll entry and a small record; a busy one copies through a single 256 KiB
 * buffer shared by all.
 *
 * The client socket stays owned by Deno (it is closed through `Deno.Conn.close()` by the
 * caller); only the upstream socket is closed here.
 * @module
 */

import { AF_INET, AF_INET6, encodeSockaddrIn, encodeSockaddrIn6 } from "./sockaddr.ts";
import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  epoll_create1: { parameters: ["i32"], result: "i32" },
  epoll_ctl: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // The only call that blocks: it runs on a runtime thread and resolves a promise.
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
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
const SHUT_WR = 1;
const SOL_SOCKET = 1;
const SO_ERROR = 4;
const IPPROTO_TCP = 6;
const TCP_NODELAY = 1;
const EAGAIN = 11;
const EINTR = 4;
const EINPROGRESS = 115;

/** x86_64 packs `struct epoll_event` (12 bytes); other architectures align it to 16. */
const EVENT_SIZE = Deno.build.arch === "x86_64" ? 12 : 16;
const DATA_OFFSET = Deno.build.arch === "x86_64" ? 4 : 8;
const MAX_EVENTS = 256;
/** How long one wait may block: idle sweeps and aborts are noticed within this. */
const WAIT_MS = 500;
/** Shared by every connection: a read is written out (or parked) before the next read. */
const BUFFER_BYTES = 256 * 1024;
/** Reads per readiness event, so one busy connection cannot starve the others. */
const READS_PER_EVENT = 4;

/** What a finished relay moved, and why it ended (as `relay.ts` reports it). */
export interface KernelRelayResult {
  up: number;
  down: number;
  error?: string;
}

/** Options of {@link KernelRelay.relay}. */
export interface KernelRelayOptions {
  idleTimeoutMs: number;
  signal?: AbortSignal;
}

/** One direction of a connection: bytes read from `src` are written to `dst`. */
interface Direction {
  src: number;
  dst: number;
  /** Bytes read but not yet accepted by `dst`; reading `src` pauses while set. */
  pending: Uint8Array | null;
  /** `src` reached EOF and `dst` was half-closed. */
  done: boolean;
  bytes: number;
}

interface Relayed {
  client: number;
  upstream: number;
  up: Direction;
  down: Direction;
  lastActivity: number;
  idleTimeoutMs: number;
  interest: Map<number, number>;
  finish: (error?: string) => void;
}

interface Connecting {
  fd: number;
  settle: (error?: string) => void;
}

/** The epoll-driven relay; one per process. */
export class KernelRelay {
  readonly #lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  readonly #epfd: number;
  readonly #buffer = new Uint8Array(BUFFER_BYTES);
  readonly #events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
  readonly #eventView = new DataView(this.#events.buffer);
  readonly #ctlEvent = new Uint8Array(EVENT_SIZE);
  readonly #ctlView = new DataView(this.#ctlEvent.buffer);
  /** Registered fds: the connection (or pending connect) each belongs to. */
  readonly #owners = new Map<number, Relayed | Connecting>();
  readonly #relays = new Set<Relayed>();
  readonly #readErrno: () => number;
  #looping = false;

  /** Opens the relay over the libc at `path` (the one `openLibc` found). */
  constructor(path: string) {
    this.#lib = Deno.dlopen(path, SYMBOLS);
    this.#readErrno = errnoReader(this.#lib.symbols);
    this.#epfd = this.#lib.symbols.epoll_create1(EPOLL_CLOEXEC);
    if (this.#epfd < 0) throw new Error(`epoll_create1 failed: ${this.#errnoName()}`);
  }

  /** Connections being relayed now. */
  get size(): number {
    return this.#relays.size;
  }

  /**
   * Opens a non-blocking TCP connection to `address:port`; resolves with its fd, or an error
   * word (`connect_timeout`, `connect_ECONNREFUSED`, ...). Never rejects.
   */
  connect(
    address: string,
    port: number,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<{ ok: true; fd: number } | { ok: false; error: string }> {
    const v6 = address.includes(":");
    const sockaddr = v6 ? encodeSockaddrIn6(address, port) : encodeSockaddrIn(address, port);
    const s = this.#lib.symbols;
    const fd = s.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Promise.resolve({ ok: false, error: `connect_${this.#errnoName()}` });
    s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Uint8Array(new Int32Array([1]).buffer), 4);
    if (s.connect(fd, sockaddr, sockaddr.length) === 0) return Promise.resolve({ ok: true, fd });
    const errno = this.#readErrno();
    if (errno !== EINPROGRESS) {
      s.close(fd);
      return Promise.resolve({ ok: false, error: `connect_${errnoName(errno)}` });
    }
    return new Promise((resolve) => {
      let settled = false;
      const settle = (error?: string) => {
        if (settled) return;
        settled = true;
        this.#unregister(fd);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (error === undefined) resolve({ ok: true, fd });
        else {
          s.close(fd);
          resolve({ ok: false, error });
        }
      };
      const onAbort = () => settle("connect_timeout");
      const timer = setTimeout(() => settle("connect_timeout"), timeoutMs);
      signal?.addEventListener("abort", onAbort, { once: true });
      if (!this.#register(fd, EPOLLOUT, { fd, settle })) settle(`connect_${this.#errnoName()}`);
    });
  }

  /**
   * Relays between `clientFd` (Deno's socket; not closed here) and `upstreamFd` (ours; closed
   * here), sending `first` upstream before anything else. Resolves when both directions have
   * ended, either side fails, the idle deadline passes or `signal` aborts. Never rejects.
   */
  relay(
    clientFd: number,
    upstreamFd: number,
    first: Uint8Array,
    options: KernelRelayOptions,
  ): Promise<KernelRelayResult> {
    return new Promise((resolve) => {
      const up: Direction = {
        src: clientFd,
        dst: upstreamFd,
        pending: first.length > 0 ? first.slice() : null,
        done: false,
        bytes: first.length,
      };
      const down: Direction = {
        src: upstreamFd,
        dst: clientFd,
        pending: null,
        done: false,
        bytes: 0,
      };
      const onAbort = () => r.finish("aborted");
      const r: Relayed = {
        client: clientFd,
        upstream: upstreamFd,
        up,
        down,
        lastActivity: Date.now(),
        idleTimeoutMs: options.idleTimeoutMs,
        interest: new Map(),
        finish: (error) => {
          if (!this.#relays.delete(r)) return;
          this.#unregister(clientFd);
          this.#unregister(upstreamFd);
          this.#lib.symbols.close(upstreamFd);
          options.signal?.removeEventListener("abort", onAbort);
          resolve({ up: up.bytes, down: down.bytes, ...(error === undefined ? {} : { error }) });
        },
      };
      this.#relays.add(r);
      const client = this.#register(clientFd, 0, r);
      const upstream = this.#register(upstreamFd, 0, r);
      if (!client || !upstream) return r.finish(`epoll_${this.#errnoName()}`);
      options.signal?.addEventListener("abort", onAbort, { once: true });
      if (options.signal?.aborted) return r.finish("aborted");
      this.#updateInterest(r);
    });
  }

  /** Stops the loop's thread once nothing is registered; the relay stays usable. */
  close(): void {
    for (const r of [...this.#relays]) r.finish("aborted");
  }

  /**
   * Records `owner` for `fd`. A socket with no interest is kept out of the epoll set: hang-up
   * and error are reported whatever the interest, and a parked direction would spin on them.
   */
  #register(fd: number, events: number, owner: Relayed | Connecting): boolean {
    if (events !== 0 && !this.#ctl(EPOLL_CTL_ADD, fd, events)) return false;
    this.#owners.set(fd, owner);
    if ("interest" in owner) owner.interest.set(fd, events);
    this.#loop();
    return true;
  }

  #unregister(fd: number): void {
    const owner = this.#owners.get(fd);
    if (owner === undefined) return;
    this.#owners.delete(fd);
    if (!("interest" in owner) || owner.interest.get(fd) !== 0) this.#ctl(EPOLL_CTL_DEL, fd, 0);
  }

  #ctl(op: number, fd: number, events: number): boolean {
    this.#setEvent(fd, events);
    return this.#lib.symbols.epoll_ctl(this.#epfd, op, fd, this.#ctlEvent) === 0;
  }

  #setEvent(fd: number, events: number): void {
    this.#ctlView.setUint32(0, events, true);
    this.#ctlView.setUint32(DATA_OFFSET, fd, true);
    this.#ctlView.setUint32(DATA_OFFSET + 4, 0, true);
  }

  /** Level-triggered interest from state: read a source unless parked; write while pending. */
  #updateInterest(r: Relayed): void {
    const want = new Map<number, number>([[r.client, 0], [r.upstream, 0]]);
    for (const d of [r.up, r.down]) {
      if (d.pending !== null) want.set(d.dst, want.get(d.dst)! | EPOLLOUT);
      else if (!d.done) want.set(d.src, want.get(d.src)! | EPOLLIN);
    }
    for (const [fd, events] of want) {
      const had = r.interest.get(fd) ?? 0;
      if (had === events) continue;
      const op = events === 0 ? EPOLL_CTL_DEL : had === 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
      if (!this.#ctl(op, fd, events)) return r.finish(`epoll_${this.#errnoName()}`);
      r.interest.set(fd, events);
    }
  }

  async #loop(): Promise<void> {
    if (this.#looping) return;
    this.#looping = true;
    try {
      let lastSweep = Date.now();
      while (this.#owners.size > 0) {
        const n = await this.#lib.symbols.epoll_wait(this.#epfd, this.#events, MAX_EVENTS, WAIT_MS);
        const now = Date.now();
        for (let i = 0; i < n; i++) {
          const events = this.#eventView.getUint32(i * EVENT_SIZE, true);
          const fd = this.#eventView.getUint32(i * EVENT_SIZE + DATA_OFFSET, true);
          const owner = this.#owners.get(fd);
          if (owner === undefined) continue; // finished earlier in this batch
          if ("settle" in owner) this.#connected(owner);
          else this.#ready(owner, fd, events, now);
        }
        if (now - lastSweep >= WAIT_MS) {
          lastSweep = now;
          for (const r of [...this.#relays]) {
            if (now - r.lastActivity >= r.idleTimeoutMs) r.finish("idle_timeout");
          }
        }
      }
    } catch (error) {
      // epoll_wait itself failing is a bug or a resource limit: end every relay, loudly.
      for (const r of [...this.#relays]) r.finish(`epoll_${String(error)}`);
    } finally {
      this.#looping = false;
    }
  }

  #connected(c: Connecting): void {
    const error = this.#socketError(c.fd);
    c.settle(error === "OK" ? undefined : `connect_${error}`);
  }

  /** The socket's pending error (`SO_ERROR`) as an errno name; `OK` when there is none. */
  #socketError(fd: number): string {
    const value = new Int32Array(1);
    const length = new Uint32Array([4]);
    const rc = this.#lib.symbols.getsockopt(
      fd,
      SOL_SOCKET,
      SO_ERROR,
      new Uint8Array(value.buffer),
      new Uint8Array(length.buffer),
    );
    if (rc !== 0) return this.#errnoName();
    return value[0] === 0 ? "OK" : errnoName(value[0]);
  }

  #ready(r: Relayed, fd: number, events: number, now: number): void {
    r.lastActivity = now;
    const failed = (events & (EPOLLERR | EPOLLHUP)) !== 0;
    let acted = false;
    for (const d of [r.up, r.down]) {
      if (d.dst === fd && d.pending !== null && ((events & EPOLLOUT) !== 0 || failed)) {
        acted = true;
        if (!this.#flush(r, d)) return;
      }
      if (d.src === fd && d.pending === null && !d.done && ((events & EPOLLIN) !== 0 || failed)) {
        acted = true;
        if (!this.#pump(r, d)) return;
      }
    }
    // An error nothing above could act on still ends the relay (it would be reported again).
    if ((events & EPOLLERR) !== 0 && !acted) return r.finish(this.#socketError(fd));
    if (r.up.done && r.down.done && r.up.pending === null && r.down.pending === null) {
      return r.finish();
    }
    this.#updateInterest(r);
  }

  /** Writes what is parked; false when the relay ended. */
  #flush(r: Relayed, d: Direction): boolean {
    const bytes = d.pending!;
    const n = this.#write(d.dst, bytes);
    if (n < 0) {
      r.finish(this.#errnoName());
      return false;
    }
    d.pending = n === bytes.length ? null : bytes.subarray(n);
    return true;
  }

  /** Reads and forwards until the source would block, parks, or ends; false when ended. */
  #pump(r: Relayed, d: Direction): boolean {
    const s = this.#lib.symbols;
    const buffer = this.#buffer;
    for (let reads = 0; reads < READS_PER_EVENT; reads++) {
      const n = Number(s.read(d.src, buffer, BigInt(buffer.length)));
      if (n === 0) {
        // EOF: pass the half-close on; the other direction finishes on its own.
        d.done = true;
        s.shutdown(d.dst, SHUT_WR);
        return true;
      }
      if (n < 0) {
        const errno = this.#readErrno();
        if (errno === EAGAIN || errno === EINTR) return true;
        r.finish(errnoName(errno));
        return false;
      }
      d.bytes += n;
      const written = this.#write(d.dst, buffer.subarray(0, n));
      if (written < 0) {
        r.finish(this.#errnoName());
        return false;
      }
      if (written < n) {
        // The destination is full: park the rest and stop reading until it drains.
        d.pending = buffer.slice(written, n);
        return true;
      }
    }
    return true;
  }

  /** Non-blocking write: bytes accepted (0 when it would block), or -1 on error. */
  #write(fd: number, bytes: Uint8Array): number {
    const n = Number(this.#lib.symbols.write(fd, bytes, BigInt(bytes.length)));
    if (n >= 0) return n;
    const errno = this.#readErrno();
    return errno === EAGAIN || errno === EINTR ? 0 : -1;
  }

  #errnoName(): string {
    return errnoName(this.#readErrno());
  }
}
