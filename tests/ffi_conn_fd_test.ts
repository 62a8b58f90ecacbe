import assert from "node:assert/strict";
import { openLibc } from "../ffi/libc.ts";
import {
  fdMatchesConn,
  fdSymbolOf,
  probeFdSupport,
  rawFdOf,
  socketAddressOf,
} from "../ffi/conn_fd.ts";
import { originalDestination } from "../ffi/original_dst.ts";

/** Opens a loopback listener and one accepted connection; returns everything for cleanup. */
async function loopbackPair(hostname: string, connectTo: string) {
  const listener = Deno.listen({ hostname, port: 0 });
  try {
    const [client, server] = await Promise.all([
      Deno.connect({ hostname: connectTo, port: listener.addr.port }),
      listener.accept(),
    ]);
    return { listener, client, server };
  } catch (err) {
    listener.close();
    throw err;
  }
}

function closeAll(...rs: { close(): void }[]) {
  for (const r of rs) {
    try {
      r.close();
    } catch {
      // already closed
    }
  }
}

Deno.test("probeFdSupport succeeds on this Deno", async () => {
  const libc = openLibc();
  try {
    const probe = await probeFdSupport(libc);
    assert.ok(probe.ok, probe.ok ? "" : probe.reason);
    assert.equal(probe.symbol.description, "Deno.internal.fd");
  } finally {
    libc.close();
  }
});

for (
  const [listenOn, connectTo] of [["127.0.0.1", "127.0.0.1"], ["::", "127.0.0.1"], ["::", "::1"]]
) {
  Deno.test(`the fd of an accepted conn is that socket (listen ${listenOn}, connect ${connectTo})`, async () => {
    const libc = openLibc();
    const { listener, client, server } = await loopbackPair(listenOn, connectTo);
    try {
      const symbol = fdSymbolOf(server);
      assert.ok(symbol);
      const fd = rawFdOf(server, symbol);
      assert.ok(fd !== undefined && fd > 2);
      const local = socketAddressOf(libc, fd, "getsockname");
      const peer = socketAddressOf(libc, fd, "getpeername");
      assert.ok(local.ok && peer.ok);
      assert.ok(fdMatchesConn(server, local.address, peer.address));
      assert.equal(local.address.port, listener.addr.port);
      assert.equal(peer.address.port, client.localAddr.port);
      assert.equal(local.address.family, listenOn === "::" ? 6 : 4);
      // The client's addresses are the server's, swapped: a fd of the wrong end must not match.
      assert.equal(fdMatchesConn(client, local.address, peer.address), false);
    } finally {
      closeAll(server, client, listener);
      libc.close();
    }
  });
}

Deno.test("originalDestination on a closed or reused fd fails without throwing", async () => {
  const libc = openLibc();
  const first = await loopbackPair("127.0.0.1", "127.0.0.1");
  const opened: { close(): void }[] = [first.client, first.listener];
  try {
    const symbol = fdSymbolOf(first.server)!;
    const oldFd = rawFdOf(first.server, symbol);
    first.server.close();
    const closed = originalDestination(libc, first.server, symbol);
    assert.deepEqual(closed, { ok: false, reason: "getpeername_failed:EBADF" });

    // The kernel hands out the lowest free fd, so the next socket reuses the number; the
    // address check must notice that it belongs to another connection.
    const [client2, server2] = await Promise.all([
      Deno.connect({ hostname: "127.0.0.1", port: first.listener.addr.port }),
      first.listener.accept(),
    ]);
    opened.push(client2, server2);
    const reused = originalDestination(libc, first.server, symbol);
    assert.equal(reused.ok, false);
    assert.equal(reused.ok ? "" : reused.reason, "fd_mismatch", `old fd ${oldFd}`);
  } finally {
    closeAll(...opened);
    libc.close();
  }
});

Deno.test("originalDestination without the fd symbol reports no_fd", async () => {
  const libc = openLibc();
  const { listener, client, server } = await loopbackPair("127.0.0.1", "127.0.0.1");
  try {
    const result = originalDestination(libc, server, Symbol("not the fd"));
    assert.deepEqual(result, { ok: false, reason: "no_fd" });
  } finally {
    closeAll(server, client, listener);
    libc.close();
  }
});
