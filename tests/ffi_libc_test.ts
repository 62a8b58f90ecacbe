import assert from "node:assert/strict";
import { DEFAULT_LIBC_PATHS, LibcUnavailableError, openLibc } from "../ffi/libc.ts";
import { errnoName } from "../ffi/errno.ts";
import { SOCKADDR_STORAGE_SIZE } from "../ffi/sockaddr.ts";

const FIXTURE = new URL("./fixtures/ffi_probe_fixture.ts", import.meta.url).pathname;

async function runFixture(
  ffiFlag: string,
): Promise<{ code: number; json: Record<string, unknown> }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ffiFlag, "--allow-net=127.0.0.1", FIXTURE],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout).trim();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.ok(stdout.length > 0, `fixture printed nothing; stderr: ${stderr}`);
  return { code: out.code, json: JSON.parse(stdout.split("\n").at(-1)!) };
}

Deno.test("openLibc loads libc from one of the default full paths", () => {
  const libc = openLibc();
  try {
    assert.ok(DEFAULT_LIBC_PATHS.includes(libc.path), libc.path);
    assert.ok(libc.path.startsWith("/"));
  } finally {
    libc.close();
  }
});

Deno.test("openLibc names every path tried when none loads", () => {
  const paths = ["/nonexistent/libc.so.6", "/etc/hostname"];
  let err: unknown;
  try {
    openLibc(paths);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof LibcUnavailableError, String(err));
  for (const p of paths) assert.ok(err.message.includes(p), err.message);
  assert.deepEqual(err.attempts.map((a) => a.path), paths);
  assert.throws(() => openLibc([]), /no candidate paths given/);
});

Deno.test("libc calls report errno by name", () => {
  const libc = openLibc();
  try {
    const buf = new Uint8Array(SOCKADDR_STORAGE_SIZE);
    const len = new Uint32Array([buf.length]);
    assert.equal(libc.getsockname(-1, buf, len), -1);
    assert.equal(errnoName(libc.errno()), "EBADF");
    // fd 0 is stdin of the test runner: a file or pipe, never a socket.
    assert.equal(libc.getpeername(0, buf, len), -1);
    assert.equal(errnoName(libc.errno()), "ENOTSOCK");
    assert.equal(libc.getsockopt(-1, 0, 80, buf, len), -1);
    assert.equal(errnoName(libc.errno()), "EBADF");
    assert.equal(errnoName(4242), "errno 4242");
  } finally {
    libc.close();
  }
});

Deno.test("scoped --allow-ffi with library directories is enough (full paths are probed)", async () => {
  const { code, json } = await runFixture("--allow-ffi=/lib,/lib64,/usr/lib,/usr/lib64");
  assert.equal(code, 0, JSON.stringify(json));
  assert.equal(json.ok, true, JSON.stringify(json));
  assert.equal(json.symbol, "Deno.internal.fd");
});

Deno.test("without ffi permission for any libc path the error lists every attempt", async () => {
  const { code, json } = await runFixture("--allow-ffi=/nonexistent");
  assert.equal(code, 3, JSON.stringify(json));
  assert.equal(json.error, "LibcUnavailableError");
  for (const p of DEFAULT_LIBC_PATHS) {
    assert.ok(String(json.message).includes(p), String(json.message));
  }
});
