import assert from "node:assert/strict";
import {
  createNotifier,
  encodeNotifyAddress,
  MAX_MESSAGE_BYTES,
  READY,
  SOCKADDR_UN_SIZE,
  STOPPING,
} from "../ffi/sd_notify.ts";

/**
 * A real AF_UNIX datagram receiver in python3: binds `address` (`@name` =
 * abstract), prints "ready", then prints each datagram as a JSON line with the
 * receiver's CLOCK_MONOTONIC in microseconds. It exits after `count`
 * datagrams, or fails after 10 s without one (the test then fails, not hangs).
 */
const RECEIVER = `
import json, socket, sys, time
addr, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\\0" + addr[1:] if addr.startswith("@") else addr)
s.settimeout(10)
print("ready", flush=True)
for _ in range(count):
    data = s.recv(65536)
    print(json.dumps({"data": data.decode("utf-8", "replace"), "now_usec": time.monotonic_ns() // 1000}), flush=True)
`;

interface Received {
  data: string;
  now_usec: number;
}

async function withReceiver(
  address: string,
  count: number,
  send: () => void | Promise<void>,
): Promise<Received[]> {
  const child = new Deno.Command("python3", {
    args: ["-c", RECEIVER, address, String(count)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  const nextLine = async (): Promise<string | null> => {
    for (;;) {
      const nl = buffered.indexOf("\n");
      if (nl !== -1) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        return line;
      }
      const { value, done } = await lines.read();
      if (done) return null;
      buffered += value;
    }
  };
  const got: Received[] = [];
  let stderr = "";
  try {
    assert.equal(await nextLine(), "ready");
    await send();
    for (let i = 0; i < count; i++) {
      const line = await nextLine();
      if (line === null) break;
      got.push(JSON.parse(line));
    }
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // already exited
    }
    await lines.cancel().catch(() => {});
    await child.status;
    stderr = await new Response(child.stderr).text();
  }
  assert.equal(
    got.length,
    count,
    `receiver got ${got.length} of ${count} datagrams; stderr: ${stderr}`,
  );
  return got;
}

Deno.test("encodeNotifyAddress: filesystem path is NUL-terminated", () => {
  const r = encodeNotifyAddress("/run/systemd/notify");
  assert.ok(r.ok);
  assert.equal(r.sockaddr.length, SOCKADDR_UN_SIZE);
  assert.equal(new Uint16Array(r.sockaddr.buffer, 0, 1)[0], 1); // AF_UNIX, host order
  assert.equal(new TextDecoder().decode(r.sockaddr.subarray(2, 21)), "/run/systemd/notify");
  assert.equal(r.sockaddr[21], 0);
  assert.equal(r.length, 2 + 19 + 1);
});

Deno.test("encodeNotifyAddress: abstract name has a leading NUL and no terminator", () => {
  const r = encodeNotifyAddress("@sd-notify");
  assert.ok(r.ok);
  assert.equal(r.sockaddr[2], 0);
  assert.equal(new TextDecoder().decode(r.sockaddr.subarray(3, 12)), "sd-notify");
  assert.equal(r.length, 2 + 1 + 9);
});

Deno.test("encodeNotifyAddress: refuses unusable addresses with a reason", () => {
  const cases: [string, RegExp][] = [
    ["relative/path", /absolute path or an @abstract/],
    ["vsock:2:1234", /absolute path or an @abstract/],
    ["@", /empty/],
    ["/" + "a".repeat(107), /longer than 107/],
    ["@" + "a".repeat(108), /longer than 107/],
    ["/run/\0x", /NUL/],
  ];
  for (const [address, re] of cases) {
    const r = encodeNotifyAddress(address);
    assert.equal(r.ok, false, address);
    if (!r.ok) assert.match(r.reason, re);
  }
  assert.ok(encodeNotifyAddress("/" + "a".repeat(106)).ok);
  assert.ok(encodeNotifyAddress("@" + "a".repeat(107)).ok);
});

Deno.test("createNotifier: null when NOTIFY_SOCKET is unset or empty", () => {
  assert.equal(createNotifier(undefined), null);
  assert.equal(createNotifier(""), null);
});

Deno.test("createNotifier: an unusable address gives a notifier that reports why", () => {
  const n = createNotifier("relative");
  assert.ok(n !== null);
  assert.match(n.lastError ?? "", /absolute path/);
  assert.equal(n.notify(READY), false);
  n.close();
  const noLibc = createNotifier("/run/x", ["/nonexistent/libc.so.6"]);
  assert.ok(noLibc !== null);
  assert.match(noLibc.lastError ?? "", /libc could not be loaded.*nonexistent/);
  assert.equal(noLibc.notify(READY), false);
});

Deno.test("sd_notify reaches a real receiver on a filesystem socket", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sd_notify_test_" });
  const path = `${dir}/notify.sock`;
  const n = createNotifier(path);
  assert.ok(n !== null);
  try {
    const got = await withReceiver(path, 4, () => {
      assert.equal(n.notify(READY), true, n.lastError ?? "");
      assert.equal(n.reloading(), true, n.lastError ?? "");
      assert.equal(n.notify("READY=1\nSTATUS=reloaded"), true, n.lastError ?? "");
      assert.equal(n.notify(STOPPING), true, n.lastError ?? "");
    });
    assert.equal(n.lastError, null);
    assert.deepEqual(got.map((g) => g.data.split("\n")[0]), [
      "READY=1",
      "RELOADING=1",
      "READY=1",
      "STOPPING=1",
    ]);
    assert.equal(got[2].data, "READY=1\nSTATUS=reloaded");
    // MONOTONIC_USEC is CLOCK_MONOTONIC: positive and not after the receiver's own reading.
    const m = /^RELOADING=1\nMONOTONIC_USEC=(\d+)$/.exec(got[1].data);
    assert.ok(m !== null, got[1].data);
    const usec = Number(m[1]);
    assert.ok(usec > 0 && usec <= got[1].now_usec, `${usec} vs ${got[1].now_usec}`);
  } finally {
    n.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sd_notify reaches a real receiver on an abstract socket", async () => {
  const address = `@proxy-please-test-${Deno.pid}-${crypto.randomUUID()}`;
  const n = createNotifier(address);
  assert.ok(n !== null);
  try {
    const got = await withReceiver(address, 1, () => {
      assert.equal(n.notify(READY), true, n.lastError ?? "");
    });
    assert.deepEqual(got.map((g) => g.data), ["READY=1"]);
  } finally {
    n.close();
  }
});

Deno.test("sd_notify failures return false with the errno, never throw", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sd_notify_test_" });
  try {
    const missing = createNotifier(`${dir}/absent.sock`);
    assert.ok(missing !== null);
    assert.equal(missing.notify(READY), false);
    assert.match(missing.lastError ?? "", /absent\.sock: ENOENT/);
    missing.close();

    const nobody = createNotifier(`@proxy-please-test-nobody-${crypto.randomUUID()}`);
    assert.ok(nobody !== null);
    assert.equal(nobody.notify(READY), false);
    assert.match(
      nobody.lastError ?? "",
      /sendto @proxy-please-test-nobody-.*: (ECONNREFUSED|errno 111)/,
    );

    assert.equal(nobody.notify(""), false);
    assert.match(nobody.lastError ?? "", /1\.\.4096 bytes, got 0/);
    assert.equal(nobody.notify("x".repeat(MAX_MESSAGE_BYTES + 1)), false);

    nobody.close();
    nobody.close();
    assert.equal(nobody.notify(READY), false);
    assert.equal(nobody.reloading(), false);
    assert.equal(nobody.lastError, "notifier is closed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sd_notify works under the scoped --allow-ffi=<dirs> the service runs with", async () => {
  // Deno.UnsafePointerView needs an unscoped --allow-ffi; run in a child with the production flags.
  const dir = await Deno.makeTempDir({ prefix: "sd_notify_test_" });
  try {
    const script = `${dir}/probe.ts`;
    const module = new URL("../ffi/sd_notify.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { createNotifier } from ${JSON.stringify(module)};\n` +
        `const n = createNotifier();\n` +
        `console.log(JSON.stringify([n?.notify("READY=1"), n?.lastError]));\n`,
    );
    const address = `@proxy-please-test-scoped-${crypto.randomUUID()}`;
    const run = () =>
      new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-config",
          "--allow-env=NOTIFY_SOCKET",
          "--allow-ffi=/lib,/lib64,/usr/lib,/usr/lib64",
          script,
        ],
        env: { NOTIFY_SOCKET: address, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
    // Nobody listening: the failure path reads errno.
    let out = await run();
    const dec = new TextDecoder();
    assert.equal(out.code, 0, dec.decode(out.stderr));
    const [sent, error] = JSON.parse(dec.decode(out.stdout));
    assert.equal(sent, false);
    assert.match(error, /: (ECONNREFUSED|errno 111)$/);
    // And the success path reaches a real receiver.
    const got = await withReceiver(address, 1, async () => {
      out = await run();
    });
    assert.equal(out.code, 0, dec.decode(out.stderr));
    assert.deepEqual(JSON.parse(dec.decode(out.stdout)), [true, null]);
    assert.deepEqual(got.map((g) => g.data), ["READY=1"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
