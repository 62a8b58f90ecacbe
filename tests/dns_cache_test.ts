import assert from "node:assert/strict";
import { type DnsAnswer, DnsCache, type ResolveFn } from "../src/dns_cache.ts";

// ------------------------------------------- unit tests: injected resolver, fake clock

class FakeDns {
  t = 1_000_000;
  calls: string[] = [];
  records = new Map<string, DnsAnswer[] | string>(); // "name/4" → answers or an error code
  now = () => this.t;
  resolve: ResolveFn = (name, family) => {
    this.calls.push(`${name}/${family}`);
    const r = this.records.get(`${name}/${family}`) ?? "ENOTFOUND";
    if (typeof r === "string") return Promise.reject(Object.assign(new Error(r), { code: r }));
    return Promise.resolve(r);
  };
  set(name: string, family: 4 | 6, answers: DnsAnswer[] | string) {
    this.records.set(`${name}/${family}`, answers);
  }
}

const a = (address: string, ttl: number): DnsAnswer => ({ address, ttl });

Deno.test("A and AAAA are combined, canonicalized, and cached for the TTL", async () => {
  const f = new FakeDns();
  f.set("x.test", 4, [a("198.19.0.10", 30)]);
  f.set("x.test", 6, [a("2001:DB8:0:0::10", 30)]);
  const c = new DnsCache({ resolve: f.resolve, now: f.now });
  assert.deepEqual(await c.lookup("x.test"), {
    ok: true,
    addresses: ["198.19.0.10", "2001:db8::10"],
  });
  assert.deepEqual(f.calls.sort(), ["x.test/4", "x.test/6"]);
  f.t += 29_000;
  assert.deepEqual(await c.lookup("X.Test."), {
    ok: true,
    addresses: ["198.19.0.10", "2001:db8::10"],
  });
  assert.equal(f.calls.length, 2, "same entry for case and trailing dot; no query within TTL");
  f.t += 1_000;
  await c.lookup("x.test");
  assert.equal(f.calls.length, 4, "asked again once the TTL ran out");
});

Deno.test("one family is enough; both failing is a failure with a meaningful reason", async () => {
  const f = new FakeDns();
  f.set("v4.test", 4, [a("198.19.0.1", 5)]);
  f.set("v4.test", 6, "ENODATA");
  f.set("nodata.test", 4, "ENODATA");
  f.set("nodata.test", 6, "ENODATA");
  f.set("fail.test", 4, "ESERVFAIL");
  f.set("fail.test", 6, "ENODATA");
  const c = new DnsCache({ resolve: f.resolve, now: f.now });
  assert.deepEqual(await c.lookup("v4.test"), { ok: true, addresses: ["198.19.0.1"] });
  assert.deepEqual(await c.lookup("nx.test"), { ok: false, reason: "nxdomain" });
  assert.deepEqual(await c.lookup("nodata.test"), { ok: false, reason: "no_data" });
  assert.deepEqual(await c.lookup("fail.test"), { ok: false, reason: "servfail" });
});

Deno.test("failures are cached briefly", async () => {
  const f = new FakeDns();
  const c = new DnsCache({ resolve: f.resolve, now: f.now, negativeTtl: 5 });
  assert.equal((await c.lookup("nx.test")).ok, false);
  f.t += 4_999;
  assert.equal((await c.lookup("nx.test")).ok, false);
  assert.equal(f.calls.length, 2);
  f.t += 1;
  f.set("nx.test", 4, [a("198.19.0.7", 5)]);
  assert.deepEqual(await c.lookup("nx.test"), { ok: true, addresses: ["198.19.0.7"] });
});

Deno.test("CDN rotation: every address seen stays known until its own TTL runs out", async () => {
  const f = new FakeDns();
  f.set("cdn.test", 4, [a("198.19.1.1", 60), a("198.19.9.9", 5)]);
  const c = new DnsCache({ resolve: f.resolve, now: f.now });
  assert.deepEqual(await c.lookup("cdn.test"), {
    ok: true,
    addresses: ["198.19.1.1", "198.19.9.9"],
  });
  f.t += 6_000; // the short TTL forces a new query; the CDN now answers differently
  f.set("cdn.test", 4, [a("198.19.2.2", 60), a("198.19.9.9", 5)]);
  assert.deepEqual(await c.lookup("cdn.test"), {
    ok: true,
    addresses: ["198.19.2.2", "198.19.9.9", "198.19.1.1"], // freshest first, then still-valid old ones
  });
  assert.deepEqual(c.knownAddresses("cdn.test"), ["198.19.2.2", "198.19.9.9", "198.19.1.1"]);
  f.t += 55_000; // 61 s after the first answer: 198.19.1.1 has expired
  assert.deepEqual(c.knownAddresses("cdn.test"), ["198.19.2.2"]);
});

Deno.test("a resolver failure within TTL of earlier answers still returns those answers", async () => {
  const f = new FakeDns();
  f.set("flaky.test", 4, [a("198.19.0.1", 60), a("198.19.0.2", 1)]);
  const c = new DnsCache({ resolve: f.resolve, now: f.now, negativeTtl: 5 });
  await c.lookup("flaky.test");
  f.t += 2_000;
  f.set("flaky.test", 4, "ETIMEOUT");
  assert.deepEqual(await c.lookup("flaky.test"), { ok: true, addresses: ["198.19.0.1"] });
  const calls = f.calls.length;
  f.t += 4_000;
  await c.lookup("flaky.test");
  assert.equal(f.calls.length, calls, "not asked again while the failure is remembered");
});

Deno.test("TTLs are clamped to [minTtl, maxTtl]", async () => {
  const f = new FakeDns();
  f.set("zero.test", 4, [a("198.19.0.1", 0)]);
  f.set("long.test", 4, [a("198.19.0.2", 86400 * 7)]);
  const c = new DnsCache({ resolve: f.resolve, now: f.now, minTtl: 2, maxTtl: 100 });
  await c.lookup("zero.test");
  await c.lookup("long.test");
  f.t += 1_999;
  assert.deepEqual(c.knownAddresses("zero.test"), ["198.19.0.1"]);
  f.t += 1;
  assert.deepEqual(c.knownAddresses("zero.test"), []);
  f.t += 98_000;
  assert.deepEqual(c.knownAddresses("long.test"), []);
});

Deno.test("concurrent lookups of one name share one query", async () => {
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let calls = 0;
  const c = new DnsCache({
    resolve: async (_name, family) => {
      calls++;
      await gate;
      return family === 4 ? [a("198.19.0.1", 5)] : [];
    },
  });
  const results = [c.lookup("s.test"), c.lookup("S.TEST"), c.lookup("s.test.")];
  release();
  for (const r of await Promise.all(results)) {
    assert.deepEqual(r, { ok: true, addresses: ["198.19.0.1"] });
  }
  assert.equal(calls, 2, "one A and one AAAA query in all");
});

Deno.test("each lookup has a deadline; a family that answers in time is still used", async () => {
  let aborted = 0;
  const hang = (signal: AbortSignal) =>
    new Promise<DnsAnswer[]>((_, reject) => {
      signal.addEventListener("abort", () => {
        aborted++;
        reject(Object.assign(new Error("cancelled"), { code: "ECANCELLED" }));
      });
    });
  const c = new DnsCache({
    timeoutMs: 50,
    resolve: (name, family, signal) =>
      name === "half.test" && family === 4 ? Promise.resolve([a("198.19.0.1", 5)]) : hang(signal),
  });
  assert.deepEqual(await c.lookup("hang.test"), { ok: false, reason: "timeout" });
  assert.deepEqual(await c.lookup("half.test"), { ok: true, addresses: ["198.19.0.1"] });
  assert.equal(aborted, 3, "the resolver was told to stop");
  // A resolver that ignores the signal and never settles still cannot hang a lookup.
  const c2 = new DnsCache({ timeoutMs: 20, resolve: () => new Promise(() => {}) });
  assert.deepEqual(await c2.lookup("never.test"), { ok: false, reason: "timeout" });
});

Deno.test("a resolver that throws, rejects oddly or returns junk cannot crash a lookup", async () => {
  const cases: ResolveFn[] = [
    () => {
      throw new Error("sync");
    },
    () => Promise.reject("a string"),
    () => Promise.reject(null),
    () => Promise.resolve(null as unknown as DnsAnswer[]),
    () => Promise.resolve([a("not-an-ip", 5), a("198.19.0.1", NaN)]),
  ];
  for (const resolve of cases) {
    const r = await new DnsCache({ resolve }).lookup("x.test");
    assert.ok(
      r.ok === false || (r.ok && r.addresses.every((x) => x === "198.19.0.1")),
      String(resolve),
    );
  }
});

Deno.test("names are bounded (LRU), addresses per name are bounded", async () => {
  const f = new FakeDns();
  for (const n of ["a", "b", "c"]) f.set(`${n}.test`, 4, [a("198.19.0.1", 60)]);
  f.set("many.test", 4, [1, 2, 3, 4, 5].map((k) => a(`198.19.0.${k}`, 60 + k)));
  const c = new DnsCache({ resolve: f.resolve, now: f.now, maxNames: 2, maxAddressesPerName: 3 });
  await c.lookup("a.test");
  await c.lookup("b.test");
  c.knownAddresses("a.test"); // a is now more recent than b
  await c.lookup("c.test");
  assert.equal(c.size, 2);
  assert.deepEqual(c.knownAddresses("b.test"), []);
  assert.deepEqual(c.knownAddresses("a.test"), ["198.19.0.1"]);
  const many = await c.lookup("many.test");
  assert.ok(many.ok);
  assert.deepEqual(many.addresses, ["198.19.0.3", "198.19.0.4", "198.19.0.5"]);
});

Deno.test("IP literals answer themselves; invalid names never reach the resolver", async () => {
  const f = new FakeDns();
  const c = new DnsCache({ resolve: f.resolve, now: f.now });
  assert.deepEqual(await c.lookup("198.19.0.1"), { ok: true, addresses: ["198.19.0.1"] });
  assert.deepEqual(await c.lookup("[2001:DB8::1]"), { ok: true, addresses: ["2001:db8::1"] });
  for (const bad of ["", ".", "a..b", "a b", "x".repeat(254), "a/b", "\u00e9.test"]) {
    assert.deepEqual(await c.lookup(bad), { ok: false, reason: "invalid_name" }, bad);
  }
  assert.equal(f.calls.length, 0);
  assert.throws(() => new DnsCache({ maxNames: 0 }), RangeError);
  assert.throws(() => new DnsCache({ minTtl: 10, maxTtl: 5 }), RangeError);
});

// ------------------------------- real resolver: dnsmasq in a namespace, system config

/** Runs a command and returns its stdout; throws naming the command on failure. */
async function run(cmd: string, ...args: string[]): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** The child's scenario, run inside the namespace with the default (system) resolver. */
const CHILD = `
import { DnsCache } from ${JSON.stringify(new URL("../src/dns_cache.ts", import.meta.url).href)};
import { decideDestination } from ${
  JSON.stringify(new URL("../src/destination_pin.ts", import.meta.url).href)
};
const [hostsFile, dnsmasqPid] = Deno.args;
let t = Date.now();
const cache = new DnsCache({ now: () => t, timeoutMs: 3000 });
const out = {};
out.dual = await cache.lookup("dual.test");
out.v6only = await cache.lookup("v6only.test");
out.nx = await cache.lookup("nx.test");
out.hostsOnly = await cache.lookup("hostsonly.test");
out.shared = await Promise.all([1, 2, 3, 4, 5].map(() => cache.lookup("share.test")));
out.loop = decideDestination("pin", { address: "198.19.0.99", port: 80 }, await cache.lookup("loop.test"));
out.rot1 = await cache.lookup("rot.test");
await Deno.writeTextFile(hostsFile, "198.19.0.51 rot.test\\n");
Deno.kill(Number(dnsmasqPid), "SIGHUP");
// dnsmasq rereads its hosts file on SIGHUP; wait (bounded) until it answers with the new one.
for (let k = 0; k < 50; k++) {
  t += 3000; // past the short-TTL record, within the rotating record's 60 s
  out.rot2 = await cache.lookup("rot.test");
  if (out.rot2.ok && out.rot2.addresses.includes("198.19.0.51")) break;
  await new Promise((r) => setTimeout(r, 100));
}
t += 120000; // everything from the first answers has expired
out.rot3 = await cache.lookup("rot.test");
console.log(JSON.stringify(out));
`;

Deno.test({
  name:
    "real resolver: dnsmasq in a namespace via /etc/resolv.conf (A+AAAA, NXDOMAIN, rotation, sharing)",
  sanitizeResources: true,
  async fn() {
    const ns = `ppdns-${crypto.randomUUID().slice(0, 8)}`;
    const dir = await Deno.makeTempDir({ prefix: "ppdns-" });
    const netnsDir = `/etc/netns/${ns}`;
    let dnsmasq: Deno.ChildProcess | null = null;
    try {
      await run("ip", "netns", "add", ns);
      await run("ip", "-n", ns, "link", "set", "lo", "up");
      await run("ip", "-n", ns, "addr", "add", "198.18.53.1/32", "dev", "lo");
      await Deno.mkdir(netnsDir, { recursive: true });
      await Deno.writeTextFile(
        `${netnsDir}/resolv.conf`,
        "nameserver 198.18.53.1\noptions timeout:1 attempts:2\n",
      );
      // `ip netns exec` mounts this over /etc/hosts: a name dnsmasq does not know.
      await Deno.writeTextFile(
        `${netnsDir}/hosts`,
        "127.0.0.1 localhost\n198.19.0.70 hostsonly.test\n",
      );
      const hosts = `${dir}/hosts`;
      const log = `${dir}/dnsmasq.log`;
      await Deno.writeTextFile(hosts, "198.19.0.50 rot.test\n");
      dnsmasq = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns,
          "dnsmasq",
          "--keep-in-foreground",
          "--conf-file=/dev/null",
          "--user=root",
          "--no-resolv",
          "--no-hosts",
          `--addn-hosts=${hosts}`,
          "--local=/test/",
          "--local-ttl=60",
          "--listen-address=198.18.53.1",
          "--bind-interfaces",
          "--port=53",
          "--log-queries",
          `--log-facility=${log}`,
          `--pid-file=${dir}/dnsmasq.pid`,
          "--host-record=dual.test,198.19.0.20,2001:db8::20",
          "--host-record=v6only.test,2001:db8::30",
          "--host-record=share.test,198.19.0.40",
          "--host-record=loop.test,127.0.0.1,::1",
          "--host-record=rot.test,198.19.0.60,2",
        ],
        stdout: "null",
        stderr: "null",
      }).spawn();
      // Wait (bounded) until dnsmasq listens.
      for (let k = 0;; k++) {
        const ss = await run("ip", "netns", "exec", ns, "ss", "-lun");
        if (ss.includes("198.18.53.1:53")) break;
        if (k >= 100) throw new Error("dnsmasq did not start listening");
        await new Promise((r) => setTimeout(r, 50));
      }
      const script = `${dir}/child.ts`;
      await Deno.writeTextFile(script, CHILD);
      const out = await run(
        "ip",
        "netns",
        "exec",
        ns,
        Deno.execPath(),
        "run",
        "--allow-all",
        "--no-lock",
        script,
        hosts,
        String(dnsmasq.pid),
      );
      const r = JSON.parse(out);
      assert.deepEqual(r.dual, { ok: true, addresses: ["198.19.0.20", "2001:db8::20"] });
      assert.deepEqual(r.v6only, { ok: true, addresses: ["2001:db8::30"] });
      assert.deepEqual(r.nx, { ok: false, reason: "nxdomain" });
      // Not in DNS, only in the namespace's /etc/hosts: the system resolver's view counts.
      assert.deepEqual(r.hostsOnly, { ok: true, addresses: ["198.19.0.70"] });
      for (const s of r.shared) assert.deepEqual(s, { ok: true, addresses: ["198.19.0.40"] });
      assert.deepEqual(r.loop, { ok: false, reason: "no_usable_address" });
      assert.deepEqual(r.rot1.addresses.sort(), ["198.19.0.50", "198.19.0.60"]);
      // The new answer first, the old rotating address kept within its 60 s TTL.
      assert.deepEqual(r.rot2.addresses.sort(), ["198.19.0.50", "198.19.0.51", "198.19.0.60"]);
      assert.equal(r.rot2.addresses.includes("198.19.0.51"), true);
      assert.deepEqual(r.rot3.addresses.sort(), ["198.19.0.51", "198.19.0.60"]);
      const queries = (await Deno.readTextFile(log)).split("\n");
      const shareA = queries.filter((l) => l.includes("query[A] share.test"));
      assert.equal(shareA.length, 1, "five concurrent lookups, one A query");
    } finally {
      if (dnsmasq !== null) {
        try {
          dnsmasq.kill("SIGTERM");
        } catch { /* already gone */ }
        await dnsmasq.status;
      }
      await run("ip", "netns", "del", ns).catch(() => {});
      await Deno.remove(netnsDir, { recursive: true }).catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test("refreshAhead asks again in the last quarter of freshness, once, and only for a cached name", async () => {
  const f = new FakeDns();
  f.set("x.test", 4, [a("198.19.0.10", 8)]);
  f.set("x.test", 6, "ENODATA");
  const c = new DnsCache({ resolve: f.resolve, now: f.now });
  assert.equal(c.refreshAhead("x.test"), null, "not cached: lookup's job");
  await c.lookup("x.test");
  assert.equal(f.calls.length, 2);
  f.t += 5_999;
  assert.equal(c.refreshAhead("x.test"), null, "not due before the last quarter");
  f.t += 1;
  f.set("x.test", 4, [a("198.19.0.11", 8)]);
  const refreshed = c.refreshAhead("X.test.");
  assert.notEqual(refreshed, null);
  assert.equal(c.refreshAhead("x.test"), null, "already asking");
  assert.deepEqual(await refreshed, { ok: true, addresses: ["198.19.0.11", "198.19.0.10"] });
  assert.equal(f.calls.length, 4);
  // Fresh again for the new TTL: nothing due, and the old address keeps only its own TTL.
  assert.equal(c.refreshAhead("x.test"), null);
  f.t += 2_000;
  assert.deepEqual(await c.lookup("x.test"), { ok: true, addresses: ["198.19.0.11"] });
  assert.equal(f.calls.length, 4);
  f.t += 10_000;
  assert.equal(c.refreshAhead("x.test"), null, "stale: lookup's job");
  f.set("gone.test", 4, "ENOTFOUND");
  await c.lookup("gone.test");
  assert.equal(c.refreshAhead("gone.test"), null, "a failure is not refreshed ahead");
});
