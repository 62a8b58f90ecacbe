import assert from "node:assert/strict";
import { emptyResults, renderTable, shown, targetCell } from "./report.ts";
import {
  median,
  parseProcStat,
  parseStatCpuTicks,
  parseStatusRssKiB,
  quantile,
} from "./measure.ts";
import { parseWrk } from "./workloads.ts";
import { replaceResults, roundsFigure } from "./main.ts";
import { renderConfig, withThreads } from "./peers.ts";
import { ipv4Only } from "./bench_lab.ts";

Deno.test("parseWrk reads the rate, the request count and every error wrk counts", () => {
  const text = `Running 1s test @ http://allowed.test/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.04ms  380.12us   5.00ms   80.00%
    Req/Sec     3.50k   200.00     3.80k    70.00%
  3512 requests in 1.00s, 0.89MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:   3507.12
Transfer/sec:    0.89MB
`;
  assert.deepEqual(parseWrk(text), { rps: 3507.12, requests: 3512, non2xx: 2, socketErrors: 4 });
  const clean = text.replace(/ {2}Socket errors.*\n/, "").replace(/ {2}Non-2xx.*\n/, "");
  assert.deepEqual(parseWrk(clean), { rps: 3507.12, requests: 3512, non2xx: 0, socketErrors: 0 });
  assert.ok(Number.isNaN(parseWrk("unable to connect").rps));
});

Deno.test("/proc parsers take utime+stime past a command name with spaces, VmRSS and busy time", () => {
  const stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 101 0 0 0 70 30 0 0 20 0 1 0 137428";
  assert.equal(parseStatCpuTicks(stat), 100);
  assert.equal(parseStatusRssKiB("Name:\tx\nVmRSS:\t   1234 kB\nThreads: 1\n"), 1234);
  assert.equal(parseStatusRssKiB("Name:\tkthreadd\n"), 0);
  const p = parseProcStat("cpu  100 5 20 1000 10 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n");
  assert.deepEqual(p, { busy: 131, total: 1141 });
  assert.throws(() => parseProcStat("intr 1 2 3\n"), /no aggregate cpu line/);
});

Deno.test("median is the middle value, or the mean of the middle two", () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.ok(Number.isNaN(median([])));
});

Deno.test("quantile is the nearest rank", () => {
  const v = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(quantile(v, 0.5), 50);
  assert.equal(quantile(v, 0.99), 99);
  assert.equal(quantile([7], 0.99), 7);
  assert.ok(Number.isNaN(quantile([], 0.5)));
});

Deno.test("ipv4Only keeps only IPv4 host lines", () => {
  const hosts = "127.0.0.1 localhost\n::1 localhost\n198.19.0.10 a.test\n2001:db8:2::10 a.test\n";
  assert.equal(ipv4Only(hosts), "127.0.0.1 localhost\n198.19.0.10 a.test\n");
});

Deno.test("replaceResults replaces only the marked section, or appends one", () => {
  const doc =
    "# B\n\nintro\n<!-- bench:results:start -->\nold\n<!-- bench:results:end -->\nafter\n";
  assert.equal(
    replaceResults(doc, "new"),
    "# B\n\nintro\n<!-- bench:results:start -->\nnew\n<!-- bench:results:end -->\nafter\n",
  );
  assert.equal(
    replaceResults("# B\n", "new"),
    "# B\n\n<!-- bench:results:start -->\nnew\n<!-- bench:results:end -->\n",
  );
});

Deno.test("the table shows ratios to direct, added latency, and targets against the peers", () => {
  const r = emptyResults();
  r.bulk1.http = {
    direct: { value: 1000 },
    "proxy-please": { value: 800 },
    haproxy: { value: 500 },
    squid: { value: null, note: "curl exit 28" },
  };
  r.p99.https = {
    direct: { value: 10 },
    "proxy-please": { value: 50 },
    haproxy: { value: 8 },
    squid: { value: 12 },
  };
  assert.equal(shown(r, "p99", "https", "proxy-please"), 40);
  assert.equal(shown(r, "p99", "https", "haproxy"), -2);
  assert.equal(targetCell(r, "bulk1", "http"), "met vs HAProxy");
  assert.equal(targetCell(r, "p99", "https"), "missed vs HAProxy, missed vs Squid");
  const table = renderTable(r);
  assert.match(
    table,
    /\| bulk, 1 download \| HTTP \| MB\/s \| 1000 \| 800 \(0\.80×\) \| 500 \(0\.50×\) \| failed \(curl exit 28\) \| 1\.60× \| met vs HAProxy \|/,
  );
  assert.match(
    table,
    /\| latency p99 added over direct \| TLS \| ms \| \(10\.0 abs\.\) \| 40\.0 \| -2\.00 \| 2\.00 \| \+42\.0 ms \|/,
  );
  // The alternating rounds compare with HAProxy alone: no direct, no Squid.
  r.rateRounds.http = { "proxy-please": { value: 950 }, haproxy: { value: 1000 } };
  assert.match(
    renderTable(r),
    /\| connection rate, rounds alternating with HAProxy \(median\) \| HTTP \| conn\/s \| n\/a \| 950 \| 1000 \| — \| 0\.95× \| missed vs HAProxy \|/,
  );
  r.idleRounds.http = { "proxy-please": { value: 1.2 }, haproxy: { value: 1.5 } };
  assert.match(
    renderTable(r),
    /\| memory per idle connection, rounds alternating with HAProxy \(median\) \| HTTP \| KiB \| n\/a \| 1\.20 \| 1\.50 \| — \| 0\.80× \| met vs HAProxy \|/,
  );
  // Latency rounds are absolute figures, compared by difference in the row's unit.
  r.p99Rounds.https = { "proxy-please": { value: 9.5 }, haproxy: { value: 8.25 } };
  assert.match(
    renderTable(r),
    /\| latency p99, rounds alternating with HAProxy \(median\) \| TLS \| ms \| n\/a \| 9\.50 \| 8\.25 \| — \| \+1\.25 ms \| missed vs HAProxy \|/,
  );
  // HAProxy on one thread is shown beside, not a target.
  r.rateRoundsOneThread.http = { "proxy-please": { value: 950 }, haproxy: { value: 1100 } };
  assert.match(
    renderTable(r),
    /\| connection rate, same rounds, HAProxy with nbthread 1 \(median\) \| HTTP \| conn\/s \| n\/a \| 950 \| 1100 \| — \| 0\.86× \| — \|/,
  );
  // Rows with nothing measured stay readable.
  assert.match(
    table,
    /\| memory per idle connection \| HTTP \| KiB \| n\/a \| — \| — \| — \| — \| — \|/,
  );
});

Deno.test("roundsFigure is the median of the rounds, each noted, and fails if any round failed", () => {
  assert.deepEqual(roundsFigure([5, 1, 3], 3, 1), { value: 3, note: "rounds 5.0, 1.0, 3.0" });
  assert.deepEqual(roundsFigure([5, 1], 3, 0), { value: null, note: "1 of 3 rounds failed" });
});

Deno.test("withThreads sets nbthread in haproxy.cfg's global section, and only there", async () => {
  const file = await Deno.readTextFile(new URL("./haproxy.cfg", import.meta.url));
  const text = renderConfig(file, { state: "/s", dns: "198.18.0.53" });
  const one = withThreads(text, 1);
  assert.match(one, /^global\n {4}nbthread 1\n/m);
  assert.equal(one.match(/nbthread/g)?.length, 1);
  assert.equal(one.replace("\n    nbthread 1", ""), text);
  assert.throws(() => withThreads("defaults\n", 1), /no global section/);
});
