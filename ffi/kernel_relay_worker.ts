/**
 * The kernel relay's own thread (a Worker started by `kernel_relay.ts`): one epoll set for
 * every decided TLS connection, waited on with a *blocking* `epoll_wait`, non-blocking
 * `read`/`write`/`shutdown` through libc into one shared buffer.
 *
 * Why a thread of its own: a blocking wait here costs one wake-up per batch of ready sockets,
 * the way an event-loop proxy in C works. Waiting from the main thread instead needs a
 * non-blocking FFI call per wait (measured: a runtime-thread hop per batch, 1.3 s of CPU per
 * 1,000 TLS connections against 0.7 s for Deno's own relay).
 *
 * Commands arrive by `postMessage`; since this thread is inside `epoll_wait` most of the time,
 * the sender also bumps a shared counter and writes an eventfd that is in the epoll set, and
 * the loop yields to this worker's event loop until it has received as many messages as were
 * counted. Everything this thread owns (the client's duplicated fd, the upstream fd) it
 * closes; the main thread never touches those fds again.
 * @module
 */

/// <reference lib="deno.worker" />

import { AF_INET, AF_INET6, encodeSockaddrIn, encodeSockaddrIn6 } from "./sockaddr.ts";
import { socketAddressOf } from "./conn_fd.ts";
import { openLibc } from "./libc.ts";
import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";
import { formatEndpoint } from "../src/ip_address.ts";
import type { RelayCommand, RelayReport, WorkerInit } from "./kernel_relay.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
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
/** How often deadlines (connect, idle) are checked while anything is open. */
const SWEEP_MS = 250;
/** Shared by every connection: a read is written out (or parked) before the next read. */
const BUFFER_BYTES = 256 * 1024;
/** Reads per readiness event, so one busy connection cannot starve the others. */
const READS_PER_EVENT = 4;

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
  id: number;
  client: number;
  upstream: number;
  /** Until the upstream connect completes: its deadline. */
  connectDeadline: number;
  connected: boolean;
  up: Direction;
  down: Direction;
  lastActivity: number;
  idleTimeoutMs: number;
  /** Current epoll interest of the client (index 0) and upstream (index 1) sockets. */
  interest: [number, number];
}

const buffer = new Uint8Array(BUFFER_BYTES);
const events = new Uint8Array(EVENT_SIZE * MAX_EVENTS);
const eventView = new DataView(events.buffer);
const ctlEvent = new Uint8Array(EVENT_SIZE);
const ctlView = new DataView(ctlEvent.buffer);
const counter = new Uint8Array(8);
/** fd → its connection. */
const owners = new Map<number, Relayed>();
const byId = new Map<number, Relayed>();
const inbox: RelayCommand[] = [];
let received = 0;
/** Resolves the loop's wait for a message that was counted but has not arrived yet. */
let arrived: (() => void) | undefined;
const settings = await new Promise<WorkerInit>((resolve) => {
  self.onmessage = (e: MessageEvent<WorkerInit>) => {
    self.onmessage = (m: MessageEvent<RelayCommand>) => {
      received++;
      inbox.push(m.data);
      arrived?.();
    };
    resolve(e.data);
  };
});
const lib = Deno.dlopen(settings.libcPath, SYMBOLS);
/** The project's libc wrapper, for the calls it already has (socket addresses, options). */
const libc = openLibc([settings.libcPath]);
const s = lib.symbols;
const readErrno = errnoReader(s);

const epfd = s.epoll_create1(EPOLL_CLOEXEC);
if (epfd < 0 || !ctl(EPOLL_CTL_ADD, settings.eventFd, EPOLLIN)) {
  report({ kind: "failed", error: `epoll_${errnoName(readErrno())}` });
  self.close();
} else {
  await loop();
}

function report(message: RelayReport): void {
  self.postMessage(message);
}

async function loop(): Promise<void> {
  let lastSweep = Date.now();
  for (;;) {
    // Every counted message must be in the inbox before the queue is read.
    // (Not a timer: nested zero timers are clamped to 4 ms, which showed as added latency.)
    while (received < Atomics.load(settings.posted, 0)) {
      await new Promise<void>((resolve) => arrived = resolve);
      arrived = undefined;
    }
    for (let c = inbox.shift(); c !== undefined; c = inbox.shift()) {
      if (c.kind === "stop") {
        for (const r of [...byId.values()]) finish(r, "aborted");
        s.close(epfd);
        report({ kind: "stopped" });
        self.close();
        return;
      }
      if (c.kind === "abort") {
        const r = byId.get(c.id);
        if (r !== undefined) finish(r, "aborted");
      } else start(c);
    }
    const n = s.epoll_wait(epfd, events, MAX_EVENTS, byId.size > 0 ? SWEEP_MS : -1);
    if (n < 0 && readErrno() !== EINTR) {
      // A bug or a resource limit: end every relay, loudly, and keep serving commands.
      const error = `epoll_${errnoName(readErrno())}`;
      for (const r of [...byId.values()]) finish(r, error);
    }
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const mask = eventView.getUint32(i * EVENT_SIZE, true);
      const fd = eventView.getUint32(i * EVENT_SIZE + DATA_OFFSET, true);
      if (fd === settings.eventFd) {
        s.read(fd, counter, 8n);
        continue;
      }
      const r = owners.get(fd);
      if (r === undefined) continue; // finished earlier in this batch
      if (!r.connected) connected(r, now);
      else ready(r, fd, mask, now);
    }
    if (now - lastSweep >= SWEEP_MS) {
      lastSweep = now;
      for (const r of [...byId.values()]) {
        if (!r.connected) {
          if (now >= r.connectDeadline) finish(r, "connect_timeout");
        } else if (now - r.lastActivity >= r.idleTimeoutMs) finish(r, "idle_timeout");
      }
    }
  }
}

/** Opens the upstream socket and starts connecting; the client waits until it is connected. */
function start(c: Extract<RelayCommand, { kind: "relay" }>): void {
  const now = Date.now();
  const fail = (error: string) => {
    s.close(c.clientFd);
    report({ kind: "done", id: c.id, up: 0, down: 0, error });
  };
  const v6 = c.address.includes(":");
  const sockaddr = v6 ? encodeSockaddrIn6(c.address, c.port) : encodeSockaddrIn(c.address, c.port);
  const fd = s.socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(`connect_${errnoName(readErrno())}`);
  s.setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, new Uint8Array(new Int32Array([1]).buffer), 4);
  const r: Relayed = {
    id: c.id,
    client: c.clientFd,
    upstream: fd,
    connectDeadline: now + c.connectTimeoutMs,
    connected: false,
    up: {
      src: c.clientFd,
      dst: fd,
      pending: c.first.length > 0 ? c.first : null,
      done: false,
      bytes: c.first.length,
    },
    down: { src: fd, dst: c.clientFd, pending: null, done: false, bytes: 0 },
    lastActivity: now,
    idleTimeoutMs: c.idleTimeoutMs,
    interest: [0, 0],
  };
  byId.set(c.id, r);
  owners.set(fd, r);
  owners.set(c.clientFd, r);
  if (s.connect(fd, sockaddr, sockaddr.length) === 0) return connected(r, now);
  const errno = readErrno();
  if (errno !== EINPROGRESS) return finish(r, `connect_${errnoName(errno)}`);
  if (!want(r, 1, EPOLLOUT)) finish(r, `connect_${errnoName(readErrno())}`);
}

function connected(r: Relayed, now: number): void {
  const error = socketError(r.upstream);
  if (error !== "OK") return finish(r, `connect_${error}`);
  r.connected = true;
  r.lastActivity = now;
  report({ kind: "connected", id: r.id, local: localEndpoint(r.upstream) });
  update(r);
}

/** The socket's local endpoint as `address:port`, for the proxy's loop check; "" if unknown. */
function localEndpoint(fd: number): string {
  const local = socketAddressOf(libc, fd, "getsockname");
  return local.ok ? formatEndpoint(local.address.address, local.address.port) : "";
}

/** The socket's pending error (`SO_ERROR`) as an errno name; `OK` when there is none. */
function socketError(fd: number): string {
  const value = new Int32Array(1);
  const length = new Uint32Array([4]);
  if (libc.getsockopt(fd, SOL_SOCKET, SO_ERROR, new Uint8Array(value.buffer), length) !== 0) {
    return errnoName(libc.errno());
  }
  return value[0] === 0 ? "OK" : errnoName(value[0]);
}

/** Ends a relay: both fds closed (which also takes them out of the epoll set), reported. */
function finish(r: Relayed, error?: string): void {
  if (!byId.delete(r.id)) return;
  owners.delete(r.client);
  owners.delete(r.upstream);
  s.close(r.client);
  s.close(r.upstream);
  const message: RelayReport = { kind: "done", id: r.id, up: r.up.bytes, down: r.down.bytes };
  if (error !== undefined) message.error = error;
  report(message);
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
function want(r: Relayed, which: 0 | 1, mask: number): boolean {
  const had = r.interest[which];
  if (had === mask) return true;
  const fd = which === 0 ? r.client : r.upstream;
  const op = mask === 0 ? EPOLL_CTL_DEL : had === 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (!ctl(op, fd, mask)) return false;
  r.interest[which] = mask;
  return true;
}

/** Level-triggered interest from state: read a source unless parked; write while pending. */
function update(r: Relayed): void {
  let client = 0, upstream = 0;
  if (r.up.pending !== null) upstream |= EPOLLOUT;
  else if (!r.up.done) client |= EPOLLIN;
  if (r.down.pending !== null) client |= EPOLLOUT;
  else if (!r.down.done) upstream |= EPOLLIN;
  if (!want(r, 0, client) || !want(r, 1, upstream)) finish(r, `epoll_${errnoName(readErrno())}`);
}

function ready(r: Relayed, fd: number, mask: number, now: number): void {
  r.lastActivity = now;
  const failed = (mask & (EPOLLERR | EPOLLHUP)) !== 0;
  let acted = false;
  for (const d of [r.up, r.down]) {
    if (d.dst === fd && d.pending !== null && ((mask & EPOLLOUT) !== 0 || failed)) {
      acted = true;
      if (!flush(r, d)) return;
    }
    if (d.src === fd && d.pending === null && !d.done && ((mask & EPOLLIN) !== 0 || failed)) {
      acted = true;
      if (!pump(r, d)) return;
    }
  }
  // An error nothing above could act on still ends the relay (it would be reported again).
  if ((mask & EPOLLERR) !== 0 && !acted) return finish(r, socketError(fd));
  if (r.up.done && r.down.done && r.up.pending === null && r.down.pending === null) {
    return finish(r);
  }
  update(r);
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
  return true;
}

/** Reads and forwards until the source would block, parks, or ends; false when ended. */
function pump(r: Relayed, d: Direction): boolean {
  for (let reads = 0; reads < READS_PER_EVENT; reads++) {
    const n = Number(s.read(d.src, buffer, BigInt(BUFFER_BYTES)));
    if (n === 0) {
      // EOF: pass the half-close on; the other direction finishes on its own.
      d.done = true;
      s.shutdown(d.dst, SHUT_WR);
      return true;
    }
    if (n < 0) {
      const errno = readErrno();
      if (errno === EAGAIN || errno === EINTR) return true;
      finish(r, errnoName(errno));
      return false;
    }
    d.bytes += n;
    const written = write(d.dst, buffer.subarray(0, n));
    if (written < 0) {
      finish(r, errnoName(readErrno()));
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

/** Non-blocking write: bytes accepted (0 when it would block), or -1 with errno set. */
function write(fd: number, bytes: Uint8Array): number {
  const n = Number(s.write(fd, bytes, BigInt(bytes.length)));
  if (n >= 0) return n;
  const errno = readErrno();
  return errno === EAGAIN || errno === EINTR ? 0 : -1;
}
