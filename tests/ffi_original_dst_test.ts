import assert from "node:assert/strict";

const FIXTURE = new URL("./fixtures/ffi_original_dst_fixture.ts", import.meta.url).pathname;
const DEADLINE_MS = 60_000;

async function run(cmd: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(DEADLINE_MS),
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    const stderr = new TextDecoder().decode(out.stderr);
    throw new Error(`${cmd} ${args.join(" ")} exited ${out.code}: ${stderr}${stdout}`);
  }
  return stdout;
}

/** A namespace with lo, a veth link holding 198.18.0.1/24 and 2001:db8:ff::1/64, and REDIRECT rules. */
async function setUpNamespace(ns: string, port: number): Promise<void> {
  await run("ip", ["netns", "add", ns]);
  const nsIp = (...args: string[]) => run("ip", ["-n", ns, ...args]);
  const nsExec = (...args: string[]) => run("ip", ["netns", "exec", ns, ...args]);
  await nsIp("link", "set", "lo", "up");
  // Both veth ends stay inside the namespace (no dummy driver on this kernel); .99 is on-link.
  await nsIp("link", "add", "ppffi0", "type", "veth", "peer", "name", "ppffi1");
  await nsIp("link", "set", "ppffi1", "up");
  await nsIp("addr", "add", "198.18.0.1/24", "dev", "ppffi0");
  await nsIp("addr", "add", "198.18.0.2/24", "dev", "ppffi0");
  await nsIp("addr", "add", "2001:db8:ff::1/64", "dev", "ppffi0", "nodad");
  await nsIp("link", "set", "ppffi0", "up");
  for (const [tool, dst] of [["iptables", "198.18.0.99"], ["ip6tables", "2001:db8:ff::99"]]) {
    await nsExec(
      tool,
      ...["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", dst, "--dport", "80"],
      ...["-j", "REDIRECT", "--to-ports", String(port)],
    );
  }
  // Traffic to or from 198.18.0.2 is untracked, so SO_ORIGINAL_DST has no conntrack entry.
  for (const chain of ["OUTPUT", "PREROUTING"]) {
    for (const dir of ["-d", "-s"]) {
      await nsExec(
        "iptables",
        "-t",
        "raw",
        "-A",
        chain,
        dir,
        "198.18.0.2",
        "-j",
        "CT",
        "--notrack",
      );
    }
  }
}

Deno.test("SO_ORIGINAL_DST through real iptables/ip6tables REDIRECT", async () => {
  const ns = `ppffi-${crypto.randomUUID().slice(0, 8)}`;
  const port = 20000 + Math.floor(Math.random() * 20000);
  try {
    await setUpNamespace(ns, port);
    const stdout = await run("ip", [
      ...["netns", "exec", ns, Deno.execPath(), "run", "--allow-all", FIXTURE, String(port)],
    ]);
    if (Deno.env.get("PPFFI_DEBUG")) console.log(stdout);
    const report = JSON.parse(stdout.trim().split("\n").at(-1)!);
    assert.equal(report.probe.ok, true, stdout);
    const r = report.results;
    const context = JSON.stringify(r, null, 1);

    // IPv4 client seen through a dual-stack listener: v4-mapped socket, asked with SOL_IP.
    assert.equal(r.dual_v4_redirected.local, `::ffff:127.0.0.1 ${port}`, context);
    assert.deepEqual(r.dual_v4_redirected.result, {
      ok: true,
      destination: { family: 4, address: "198.18.0.99", port: 80 },
      redirected: true,
    }, context);
    assert.equal(r.dual_v6_redirected.local, `::1 ${port}`, context);
    assert.deepEqual(r.dual_v6_redirected.result, {
      ok: true,
      destination: { family: 6, address: "2001:db8:ff::99", port: 80 },
      redirected: true,
    }, context);
    assert.deepEqual(r.v4_redirected.result, {
      ok: true,
      destination: { family: 4, address: "198.18.0.99", port: 80 },
      redirected: true,
    }, context);

    // Dialling the proxy port directly: the original destination is the socket itself.
    assert.deepEqual(r.dual_v4_direct.result, {
      ok: true,
      destination: { family: 4, address: "198.18.0.1", port },
      redirected: false,
    }, context);
    assert.deepEqual(r.dual_v6_direct.result, {
      ok: true,
      destination: { family: 6, address: "2001:db8:ff::1", port },
      redirected: false,
    }, context);
    assert.deepEqual(r.v4_direct.result, {
      ok: true,
      destination: { family: 4, address: "198.18.0.1", port },
      redirected: false,
    }, context);

    // No conntrack entry: the kernel's errno comes back by name.
    assert.deepEqual(
      r.v4_untracked.result,
      { ok: false, reason: "getsockopt_failed:ENOENT" },
      context,
    );
    assert.deepEqual(r.dual_v4_untracked.result, {
      ok: false,
      reason: "getsockopt_failed:ENOENT",
    }, context);

    // Closed conns: a value, not an exception.
    for (const name of ["dual_v4_closed", "dual_v6_closed", "v4_closed"]) {
      assert.equal(r[name].error, undefined, context);
      assert.equal(r[name].result.ok, false, context);
      assert.match(r[name].result.reason, /^(getpeername_failed:EBADF|fd_mismatch)$/, context);
    }
  } finally {
    // Deleting the namespace also removes its links and its iptables rules.
    await new Deno.Command("ip", { args: ["netns", "del", ns], stdout: "null", stderr: "null" })
      .output();
  }
});
