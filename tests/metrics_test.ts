import assert from "node:assert/strict";
import fc from "fast-check";
import {
  Counter,
  escapeHelp,
  escapeLabelValue,
  formatSampleValue,
  Gauge,
  Histogram,
  Info,
  KNOWN_REASONS,
  ProxyMetrics,
  Registry,
} from "../src/metrics.ts";

/** A strict reader for one sample line, written from the 0.0.4 spec, independent of the renderer. */
function parseSample(line: string): { name: string; labels: [string, string][]; value: string } {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{|\s)/.exec(line);
  if (m === null) throw new Error(`bad sample line ${JSON.stringify(line)}`);
  const name = m[1];
  let i = name.length;
  const labels: [string, string][] = [];
  if (line[i] === "{") {
    i++;
    while (line[i] !== "}") {
      const ln = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(line.slice(i));
      if (ln === null) throw new Error(`bad label at ${i} in ${JSON.stringify(line)}`);
      i += ln[0].length;
      let value = "";
      for (;;) {
        const c = line[i++];
        if (c === undefined || c === "\n") throw new Error("unterminated label value");
        if (c === '"') break;
        if (c === "\\") {
          const e = line[i++];
          if (e === "\\") value += "\\";
          else if (e === '"') value += '"';
          else if (e === "n") value += "\n";
          else throw new Error(`bad escape \\${e}`);
        } else value += c;
      }
      labels.push([ln[1], value]);
      if (line[i] === ",") i++;
      else if (line[i] !== "}") throw new Error(`expected , or } at ${i}`);
    }
    i++;
  }
  if (line[i] !== " ") throw new Error(`expected space at ${i} in ${JSON.stringify(line)}`);
  return { name, labels, value: line.slice(i + 1) };
}

function samples(text: string) {
  assert.ok(text.endsWith("\n"));
  return text.slice(0, -1).split("\n").filter((l) => !l.startsWith("#")).map(parseSample);
}

function sampleValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): string | undefined {
  const want = JSON.stringify(Object.entries(labels).sort());
  return samples(text).find((s) => s.name === name && JSON.stringify([...s.labels].sort()) === want)
    ?.value;
}

/** Runs the real Prometheus linter/parser over an exposition; returns its exit code and output. */
async function promtool(text: string): Promise<{ code: number; output: string } | null> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("promtool", {
      args: ["check", "metrics"],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  const dec = new TextDecoder();
  return { code, output: dec.decode(stdout) + dec.decode(stderr) };
}

Deno.test("escapeLabelValue escapes exactly backslash, quote and line feed", () => {
  assert.equal(escapeLabelValue(`a\\b"c\nd\te`), `a\\\\b\\"c\\nd\te`);
  assert.equal(escapeHelp(`a\\b"c\nd`), `a\\\\b"c\\nd`);
});

Deno.test("formatSampleValue handles the special values", () => {
  assert.equal(formatSampleValue(1), "1");
  assert.equal(formatSampleValue(0.25), "0.25");
  assert.equal(formatSampleValue(Infinity), "+Inf");
  assert.equal(formatSampleValue(-Infinity), "-Inf");
  assert.equal(formatSampleValue(NaN), "NaN");
});

Deno.test("Registry renders HELP/TYPE and samples in registration order", () => {
  const r = new Registry();
  const c = r.register(new Counter("demo_total", "A demo\ncounter with \\ in help.", ["kind"]));
  const g = r.register(new Gauge("demo_gauge", "A gauge."));
  const h = r.register(new Histogram("demo_seconds", "A histogram.", [0.1, 1]));
  const i = r.register(new Info("demo_info", "Info."));
  c.labels("a").inc();
  c.labels("b").inc(2);
  c.labels("a").inc(3);
  g.set(5);
  g.dec(2);
  for (const v of [0.05, 0.1, 0.5, 7]) h.observe(v);
  i.set({ version: `1"2` });
  assert.equal(
    r.render(),
    [
      "# HELP demo_total A demo\\ncounter with \\\\ in help.",
      "# TYPE demo_total counter",
      'demo_total{kind="a"} 4',
      'demo_total{kind="b"} 2',
      "# HELP demo_gauge A gauge.",
      "# TYPE demo_gauge gauge",
      "demo_gauge 3",
      "# HELP demo_seconds A histogram.",
      "# TYPE demo_seconds histogram",
      'demo_seconds_bucket{le="0.1"} 2', // le is inclusive
      'demo_seconds_bucket{le="1"} 3',
      'demo_seconds_bucket{le="+Inf"} 4',
      "demo_seconds_sum 7.65",
      "demo_seconds_count 4",
      "# HELP demo_info Info.",
      "# TYPE demo_info gauge",
      'demo_info{version="1\\"2"} 1',
      "",
    ].join("\n"),
  );
});

Deno.test("Counter ignores negative and non-finite increments; histogram ignores NaN", () => {
  const c = new Counter("x_total", "x");
  c.inc(-1);
  c.inc(Infinity);
  c.inc(NaN);
  c.inc(2);
  const h = new Histogram("h", "h", [1]);
  h.observe(NaN);
  h.observe(Infinity);
  const out: string[] = [];
  c.renderInto(out);
  h.renderInto(out);
  assert.deepEqual(out.filter((l) => !l.startsWith("#")), [
    "x_total 2",
    'h_bucket{le="1"} 0',
    'h_bucket{le="+Inf"} 1',
    "h_sum +Inf",
    "h_count 1",
  ]);
});

Deno.test("invalid names, label arity, buckets and duplicates are programming errors", () => {
  assert.throws(() => new Counter("1bad", "x"), /invalid metric name "1bad"/);
  assert.throws(() => new Counter("ok_total", "x", ["__reserved"]), /invalid label name/);
  assert.throws(() => new Counter("ok_total", "x", ["a", "a"]), /duplicate label name/);
  assert.throws(() => new Counter("ok_total", "x", ["a"]).labels(), /takes 1 label values, got 0/);
  assert.throws(() => new Histogram("h", "x", [1, 1]), /strictly increasing/);
  assert.throws(() => new Histogram("h", "x", [Infinity]), /finite/);
  const r = new Registry();
  r.register(new Gauge("g", "x"));
  assert.throws(() => r.register(new Gauge("g", "y")), /already registered/);
  assert.throws(() => new ProxyMetrics({ reasons: ["Bad Reason"] }), /snake_case/);
});

Deno.test("property: label values round-trip through escaping and a spec parser", () => {
  fc.assert(
    fc.property(
      fc.array(fc.string({ unit: "binary" }), { minLength: 1, maxLength: 3 }),
      (values) => {
        const names = values.map((_, i) => `l${i}`);
        const c = new Counter("rt_total", "round trip", names);
        c.labels(...values).inc();
        const out: string[] = [];
        c.renderInto(out);
        const [sample] = samples(out.join("\n") + "\n");
        assert.deepEqual(sample.labels, names.map((n, i) => [n, values[i]]));
        assert.equal(sample.value, "1");
      },
    ),
    { numRuns: 1000 },
  );
});

Deno.test("ProxyMetrics: connections by proto, decision and reason; unknown reasons are other", () => {
  const m = new ProxyMetrics({ version: "1.2.3", startTimeSeconds: 1700000000 });
  m.connection("http", "allowed");
  m.connection("HTTP", "allowed");
  m.connection("HTTPS", "denied", "no_sni");
  m.connection("https", "denied", "not_allowed");
  m.connection("https", "denied", 'made up by a client\n"');
  m.connection("https", "denied", "another_unknown");
  m.connection("https", "allowed", "not_allowed"); // audit mode: forwarded, would deny
  const text = m.render();
  const conn = (proto: string, decision: string, reason: string) =>
    sampleValue(text, "proxy_please_connections_total", { proto, decision, reason });
  assert.equal(conn("http", "allowed", "none"), "2");
  assert.equal(conn("https", "denied", "no_sni"), "1");
  assert.equal(conn("https", "denied", "not_allowed"), "1");
  assert.equal(conn("https", "denied", "other"), "2");
  assert.equal(conn("https", "allowed", "not_allowed"), "1");
  assert.equal(samples(text).filter((s) => s.name === "proxy_please_connections_total").length, 5);
  assert.equal(
    sampleValue(text, "proxy_please_build_info", { version: "1.2.3", deno: Deno.version.deno }),
    "1",
  );
  assert.equal(sampleValue(text, "process_start_time_seconds"), "1700000000");
});

Deno.test("ProxyMetrics: active gauge, bytes, connect histogram, reloads, config hash, collections", () => {
  const m = new ProxyMetrics();
  let text = m.render();
  // Series that matter at zero exist from the start, so rate() and alerts work before the first event.
  assert.equal(sampleValue(text, "proxy_please_config_reloads_total", { result: "ok" }), "0");
  assert.equal(sampleValue(text, "proxy_please_config_reloads_total", { result: "error" }), "0");
  assert.equal(sampleValue(text, "proxy_please_bytes_total", { direction: "upstream" }), "0");
  assert.equal(sampleValue(text, "proxy_please_active_connections"), "0");
  assert.equal(samples(text).some((s) => s.name === "proxy_please_config_hash"), false);
  const collections = (thread: string) =>
    sampleValue(m.render(), "proxy_please_idle_collections_total", { thread });
  assert.equal(collections("main"), "0");
  assert.equal(collections("relay"), "0");
  m.idleCollection("relay");
  m.idleCollection("relay");
  m.idleCollection("main");
  assert.equal(collections("main"), "1");
  assert.equal(collections("relay"), "2");

  let open = 3;
  m.countActiveWith(() => open);
  assert.equal(sampleValue(m.render(), "proxy_please_active_connections"), "3");
  open = 1; // read when scraped, not counted here
  m.bytes(517, 40960);
  m.bytes(3, 0);
  m.connectSeconds(0.004);
  m.connectSeconds(0.2);
  m.connectSeconds(30);
  m.reload(true);
  m.reload(false);
  m.reload(true);
  m.setConfigHash("abc");
  m.setConfigHash("sha256:0123");
  text = m.render();
  assert.equal(m.active, 1);
  assert.equal(sampleValue(text, "proxy_please_active_connections"), "1");
  assert.equal(sampleValue(text, "proxy_please_bytes_total", { direction: "upstream" }), "520");
  assert.equal(sampleValue(text, "proxy_please_bytes_total", { direction: "downstream" }), "40960");
  const bucket = (le: string) =>
    sampleValue(text, "proxy_please_upstream_connect_seconds_bucket", { le });
  assert.equal(bucket("0.0025"), "0");
  assert.equal(bucket("0.005"), "1");
  assert.equal(bucket("0.25"), "2");
  assert.equal(bucket("10"), "2");
  assert.equal(bucket("+Inf"), "3");
  assert.equal(sampleValue(text, "proxy_please_upstream_connect_seconds_count"), "3");
  assert.equal(Number(sampleValue(text, "proxy_please_upstream_connect_seconds_sum")), 30.204);
  assert.equal(sampleValue(text, "proxy_please_config_reloads_total", { result: "ok" }), "2");
  assert.equal(sampleValue(text, "proxy_please_config_reloads_total", { result: "error" }), "1");
  assert.equal(sampleValue(text, "proxy_please_config_hash", { hash: "sha256:0123" }), "1");
  assert.equal(samples(text).filter((s) => s.name === "proxy_please_config_hash").length, 1);
});

Deno.test("property: label cardinality stays bounded whatever reasons callers pass", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.tuple(
          fc.constantFrom("http", "https", "HTTP", "HTTPS") as fc.Arbitrary<"http" | "https">,
          fc.constantFrom("allowed", "denied") as fc.Arbitrary<"allowed" | "denied">,
          fc.oneof(fc.constantFrom(...KNOWN_REASONS), fc.string()),
        ),
        { maxLength: 200 },
      ),
      (events) => {
        const m = new ProxyMetrics();
        for (const [p, d, r] of events) m.connection(p, d, r);
        const series = samples(m.render()).filter((s) =>
          s.name === "proxy_please_connections_total"
        );
        assert.ok(series.length <= 2 * 2 * KNOWN_REASONS.length);
        for (const s of series) {
          const reason = s.labels.find(([k]) => k === "reason")![1];
          assert.ok(KNOWN_REASONS.includes(reason), reason);
        }
        const total = series.reduce((acc, s) => acc + Number(s.value), 0);
        assert.equal(total, events.length);
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("ProxyMetrics output passes the real Prometheus parser and linter (promtool)", async () => {
  const m = new ProxyMetrics({ version: `0.1.0 "quoted" \\ back\nslash` });
  m.connection("https", "denied", "not_allowed");
  m.connection("http", "allowed");
  m.countActiveWith(() => 1);
  m.bytes(1, 2);
  m.connectSeconds(0.01);
  m.reload(false);
  m.setConfigHash("0123abcd");
  const result = await promtool(m.render());
  // promtool comes with Debian's `prometheus` package (`.ci/run` installs it): without it the
  // check fails rather than passing unchecked.
  assert.ok(result !== null, "promtool is not installed (apt-get install prometheus)");
  assert.equal(result.code, 0, result.output);

  // The check is live: a broken exposition is refused.
  const broken = await promtool('demo_total{l="unterminated} 1\n');
  assert.notEqual(broken?.code, 0);
});
