/**
 * systemd readiness notification (`Type=notify`): one datagram per state
 * change to the AF_UNIX socket named by `NOTIFY_SOCKET`, sent with libc
 * `socket`/`sendto` through `Deno.dlopen` (Deno has no unix datagram API in
 * its stable surface). Mirrors `sd_notify(3)` without linking libsystemd.
 *
 * Notification is best effort: nothing here throws, and a failure is
 * reported as `false` plus {@linkcode Notifier.lastError}, because a proxy
 * that cannot reach systemd should still proxy (systemd will time it out).
 *
 * @module
 */

import { ERRNO_SYMBOLS, errnoName, errnoReader } from "./errno.ts";
import { DEFAULT_LIBC_PATHS } from "./libc.ts";

/** `READY=1`: start-up finished, listeners bound. */
export const READY = "READY=1";
/** `STOPPING=1`: shutdown has begun. */
export const STOPPING = "STOPPING=1";

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const MSG_NOSIGNAL = 0x4000;
const EINTR = 4;
const CLOCK_MONOTONIC = 1;

/** `sizeof(struct sockaddr_un)` on Linux: 2-byte family plus 108-byte `sun_path`. */
export const SOCKADDR_UN_SIZE = 110;
const SUN_PATH_MAX = 108;
/** Largest notification accepted; systemd's own messages are far smaller. */
export const MAX_MESSAGE_BYTES = 4096;

/** Result of {@linkcode encodeNotifyAddress}. */
export type NotifyAddressResult =
  | { ok: true; sockaddr: Uint8Array; length: number }
  | { ok: false; reason: string };

/**
 * Encodes `NOTIFY_SOCKET` as a `sockaddr_un`: an absolute path (NUL-terminated
 * in `sun_path`) or `@name`, an abstract socket (leading NUL byte, no
 * terminator, length counts exactly the name). Other forms, such as systemd's
 * `vsock:` addresses, are refused with a reason.
 */
export function encodeNotifyAddress(address: string): NotifyAddressResult {
  const bad = (why: string): NotifyAddressResult => ({
    ok: false,
    reason: `NOTIFY_SOCKET ${JSON.stringify(address)}: ${why}`,
  });
  if (address.includes("\0")) return bad("contains a NUL character");
  const sockaddr = new Uint8Array(SOCKADDR_UN_SIZE);
  // sa_family_t is host-endian.
  new Uint16Array(sockaddr.buffer, 0, 1)[0] = AF_UNIX;
  if (address.startsWith("/")) {
    const path = new TextEncoder().encode(address);
    if (path.length > SUN_PATH_MAX - 1) return bad(`path longer than ${SUN_PATH_MAX - 1} bytes`);
    sockaddr.set(path, 2);
    return { ok: true, sockaddr, length: 2 + path.length + 1 };
  }
  if (address.startsWith("@")) {
    const name = new TextEncoder().encode(address.slice(1));
    if (name.length === 0) return bad("abstract socket name is empty");
    if (name.length > SUN_PATH_MAX - 1) {
      return bad(`abstract name longer than ${SUN_PATH_MAX - 1} bytes`);
    }
    sockaddr.set(name, 3); // sun_path[0] stays 0: the abstract namespace
    return { ok: true, sockaddr, length: 2 + 1 + name.length };
  }
  return bad("expected an absolute path or an @abstract name");
}

/** Sends state changes to systemd; see {@linkcode createNotifier}. */
export interface Notifier {
  /** The `NOTIFY_SOCKET` value in use. */
  readonly address: string;
  /** Why the last send failed (or why the notifier cannot work at all); `null` after a success. */
  readonly lastError: string | null;
  /**
   * Sends `state` (`READY=1`, `STATUS=...`, newline-separated assignments) as
   * one datagram. True when the kernel accepted it; never throws or blocks.
   */
  notify(state: string): boolean;
  /**
   * Sends `RELOADING=1` with `MONOTONIC_USEC=` (CLOCK_MONOTONIC now), which
   * `Type=notify-reload` requires and `Type=notify` accepts. Send `READY=1`
   * once the new configuration is in effect.
   */
  reloading(): boolean;
  /** Releases the socket and the library; later sends return false. Idempotent. */
  close(): void;
}

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  ...ERRNO_SYMBOLS,
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

function openLib(paths: readonly string[]): Lib | string {
  const errors: string[] = [];
  for (const path of paths) {
    try {
      return Deno.dlopen(path, SYMBOLS);
    } catch (err) {
      errors.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  return `libc could not be loaded (${errors.join("; ") || "no paths"})`;
}

function readEnv(): string | undefined {
  try {
    return Deno.env.get("NOTIFY_SOCKET");
  } catch {
    return undefined; // no --allow-env: behave as if not started by systemd
  }
}

/**
 * Returns a {@linkcode Notifier} for `address` (default, also when passed
 * `undefined`: `$NOTIFY_SOCKET`),
 * or `null` when it is unset or empty, i.e. not started by systemd with
 * `Type=notify`. An unusable address or a libc that cannot be loaded still
 * yields a notifier, whose sends fail and whose `lastError` says why, so the
 * caller can log it once at start-up.
 */
export function createNotifier(
  address: string | undefined = readEnv(),
  libcPaths: readonly string[] = DEFAULT_LIBC_PATHS,
): Notifier | null {
  if (address === undefined || address === "") return null;
  const encoded = encodeNotifyAddress(address);
  if (!encoded.ok) return brokenNotifier(address, encoded.reason);
  const lib = openLib(libcPaths);
  if (typeof lib === "string") return brokenNotifier(address, lib);
  return new LibcNotifier(address, encoded.sockaddr, encoded.length, lib);
}

function brokenNotifier(address: string, reason: string): Notifier {
  return {
    address,
    lastError: reason,
    notify: () => false,
    reloading: () => false,
    close: () => {},
  };
}

class LibcNotifier implements Notifier {
  lastError: string | null = null;
  #lib: Lib | null;
  #fd = -1;

  constructor(
    readonly address: string,
    readonly sockaddr: Uint8Array,
    readonly sockaddrLength: number,
    lib: Lib,
  ) {
    this.#lib = lib;
    this.#errnoValue = errnoReader(lib.symbols);
  }

  /** The calling thread's errno; call it right after the failed libc call. */
  readonly #errnoValue: () => number;

  #errno(): string {
    return errnoName(this.#errnoValue());
  }

  notify(state: string): boolean {
    const lib = this.#lib;
    if (lib === null) {
      this.lastError = "notifier is closed";
      return false;
    }
    try {
      const message = new TextEncoder().encode(state);
      if (message.length === 0 || message.length > MAX_MESSAGE_BYTES) {
        this.lastError = `message must be 1..${MAX_MESSAGE_BYTES} bytes, got ${message.length}`;
        return false;
      }
      if (this.#fd < 0) {
        // Non-blocking: a stalled systemd must never stall the proxy.
        const fd = lib.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
          this.lastError = `socket(AF_UNIX, SOCK_DGRAM): ${this.#errno()}`;
          return false;
        }
        this.#fd = fd;
      }
      for (let attempt = 0; attempt < 3; attempt++) {
        const sent = Number(
          lib.symbols.sendto(
            this.#fd,
            message,
            BigInt(message.length),
            MSG_NOSIGNAL,
            this.sockaddr,
            this.sockaddrLength,
          ),
        );
        if (sent === message.length) {
          this.lastError = null;
          return true;
        }
        if (sent >= 0) {
          this.lastError =
            `sendto ${this.address}: short write (${sent} of ${message.length} bytes)`;
          return false;
        }
        const errno = this.#errnoValue();
        if (errno === EINTR) continue;
        this.lastError = `sendto ${this.address}: ${errnoName(errno)}`;
        return false;
      }
      this.lastError = `sendto ${this.address}: interrupted repeatedly`;
      return false;
    } catch (err) {
      this.lastError = `sd_notify: ${err instanceof Error ? err.message : String(err)}`;
      return false;
    }
  }

  reloading(): boolean {
    const lib = this.#lib;
    if (lib === null) {
      this.lastError = "notifier is closed";
      return false;
    }
    // struct timespec { time_t tv_sec; long tv_nsec; } on 64-bit Linux.
    const ts = new BigInt64Array(2);
    if (lib.symbols.clock_gettime(CLOCK_MONOTONIC, new Uint8Array(ts.buffer)) !== 0) {
      this.lastError = `clock_gettime: ${this.#errno()}`;
      return false;
    }
    const usec = ts[0] * 1_000_000n + ts[1] / 1000n;
    return this.notify(`RELOADING=1\nMONOTONIC_USEC=${usec}`);
  }

  close(): void {
    const lib = this.#lib;
    if (lib === null) return;
    this.#lib = null;
    try {
      if (this.#fd >= 0) lib.symbols.close(this.#fd);
      this.#fd = -1;
      lib.close();
    } catch {
      // Closing is best effort; nothing useful to do with a failure here.
    }
  }
}
