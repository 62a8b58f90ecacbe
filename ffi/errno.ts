/**
 * Names for the Linux errno values that socket calls made through FFI can
 * report, so failures read `ENOTCONN` rather than a bare number.
 *
 * @module
 */

/** Linux errno numbers (x86_64 and aarch64 share these) mapped to their names. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = Object.freeze({
  1: "EPERM",
  2: "ENOENT",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  22: "EINVAL",
  88: "ENOTSOCK",
  92: "ENOPROTOOPT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  24: "EMFILE",
  23: "ENFILE",
  32: "EPIPE",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  105: "ENOBUFS",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  115: "EINPROGRESS",
});

/**
 * Returns the symbolic name of an errno value, or `errno <n>` for values not
 * in {@link ERRNO_NAMES}, so messages stay informative for rare errors.
 */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/**
 * The two libc symbols that read errno: spread into a `Deno.dlopen` symbol table. errno is
 * copied out with `memcpy` because `Deno.UnsafePointerView` needs an unscoped `--allow-ffi`,
 * while calling a symbol of a library opened under `--allow-ffi=<dirs>` does not.
 */
export const ERRNO_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  memcpy: { parameters: ["buffer", "pointer", "usize"], result: "pointer" },
} as const;

/** The loaded form of {@link ERRNO_SYMBOLS}. */
export interface ErrnoSymbols {
  __errno_location(): Deno.PointerValue;
  memcpy(dst: Uint8Array, src: Deno.PointerValue, bytes: bigint): Deno.PointerValue;
}

/**
 * A reader of the calling thread's errno over a library's {@link ERRNO_SYMBOLS}. errno is
 * thread-local, so its address is asked on every read rather than cached.
 */
export function errnoReader(symbols: ErrnoSymbols): () => number {
  const value = new Int32Array(1);
  const bytes = new Uint8Array(value.buffer);
  return () => {
    const ptr = symbols.__errno_location();
    if (ptr === null) return 0;
    symbols.memcpy(bytes, ptr, 4n);
    return value[0];
  };
}
