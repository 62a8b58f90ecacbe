/**
 * Minimal libc bindings (getsockopt, getsockname, getpeername, errno) loaded
 * with `Deno.dlopen`.
 *
 * Under a scoped `--allow-ffi=<dirs>` permission Deno only accepts full paths
 * (a bare `libc.so.6` resolves against the cwd and fails the check), so we
 * probe a list of well-known absolute locations.
 *
 * @module
 */

import { ERRNO_SYMBOLS, errnoReader } from "./errno.ts";

/** Absolute libc paths probed by {@link openLibc}, Debian multiarch first. */
export const DEFAULT_LIBC_PATHS: readonly string[] = Object.freeze([
  "/lib/x86_64-linux-gnu/libc.so.6",
  "/lib/aarch64-linux-gnu/libc.so.6",
  "/usr/lib/x86_64-linux-gnu/libc.so.6",
  "/usr/lib/aarch64-linux-gnu/libc.so.6",
  "/lib64/libc.so.6",
  "/usr/lib64/libc.so.6",
  "/lib/libc.so.6",
]);

/**
 * The libc socket calls the proxy needs. All calls are synchronous and return
 * the raw C result (`0` on success, `-1` on failure); read {@link Libc.errno}
 * right after a failure. `socklen_t` in/out lengths are passed as a one-element
 * `Uint32Array` so the kernel can write the actual length back.
 */
export interface Libc {
  /** `getsockopt(fd, level, optname, optval, optlen)`. */
  getsockopt(
    fd: number,
    level: number,
    optname: number,
    optval: Uint8Array,
    optlen: Uint32Array,
  ): number;
  /** `getsockname(fd, addr, addrlen)`: the socket's local address. */
  getsockname(fd: number, addr: Uint8Array, addrlen: Uint32Array): number;
  /** `getpeername(fd, addr, addrlen)`: the connected peer's address. */
  getpeername(fd: number, addr: Uint8Array, addrlen: Uint32Array): number;
  /** The calling thread's current `errno`; meaningful only right after a failed call. */
  errno(): number;
  /** The soft limit on open files (`getrlimit(RLIMIT_NOFILE)`), or null if it cannot be read. */
  openFileLimit(): number | null;
  /** Unloads the library; the object must not be used afterwards. */
  close(): void;
  /** The path the library was loaded from. */
  readonly path: string;
}

/** Thrown by {@link openLibc} when no candidate path could be loaded. */
export class LibcUnavailableError extends Error {
  /** Every path tried, with the reason each failed. */
  readonly attempts: readonly { path: string; error: string }[];

  /** Builds the message from the list of failed attempts. */
  constructor(attempts: readonly { path: string; error: string }[]) {
    const detail = attempts.length === 0
      ? "no candidate paths given"
      : attempts.map((a) => `${a.path}: ${a.error}`).join("; ");
    super(`libc could not be loaded via Deno.dlopen (tried ${detail})`);
    this.name = "LibcUnavailableError";
    this.attempts = attempts;
  }
}

const RLIMIT_NOFILE = 7;

const SYMBOLS = {
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  ...ERRNO_SYMBOLS,
} as const;

/**
 * Loads libc from the first path in `paths` that `Deno.dlopen` accepts.
 * Throws {@link LibcUnavailableError} naming every path tried (missing file,
 * denied permission, wrong architecture, ...).
 */
export function openLibc(paths: readonly string[] = DEFAULT_LIBC_PATHS): Libc {
  const attempts: { path: string; error: string }[] = [];
  for (const path of paths) {
    let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
    try {
      lib = Deno.dlopen(path, SYMBOLS);
    } catch (err) {
      attempts.push({ path, error: err instanceof Error ? err.message : String(err) });
      continue;
    }
    return wrap(lib, path);
  }
  throw new LibcUnavailableError(attempts);
}

function wrap(lib: Deno.DynamicLibrary<typeof SYMBOLS>, path: string): Libc {
  const s = lib.symbols;
  return {
    path,
    getsockopt: (fd, level, optname, optval, optlen) =>
      s.getsockopt(fd, level, optname, optval, optlen),
    getsockname: (fd, addr, addrlen) => s.getsockname(fd, addr, addrlen),
    getpeername: (fd, addr, addrlen) => s.getpeername(fd, addr, addrlen),
    openFileLimit: () => {
      const limits = new BigUint64Array(2); // struct rlimit { rlim_cur, rlim_max }
      if (s.getrlimit(RLIMIT_NOFILE, new Uint8Array(limits.buffer)) !== 0) return null;
      return limits[0] > BigInt(Number.MAX_SAFE_INTEGER)
        ? Number.MAX_SAFE_INTEGER
        : Number(limits[0]);
    },
    errno: errnoReader(s),
    close: () => lib.close(),
  };
}
