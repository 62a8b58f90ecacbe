import assert from "node:assert/strict";
import fc from "fast-check";
import { isAllowed, parseAllowlist } from "../src/allowlist.ts";
import {
  formatReport,
  isTooBroadParent,
  MAX_LINE_BYTES,
  runReport,
  suggestGroups,
  summarizeWouldDeny,
  tallyWouldDeny,
} from "../src/audit_report.ts";

function decision(fields: Record<string, unknown>): string {
  return JSON.stringify({
    time: "2026-04-23T10:00:01.000Z",
    level: "INFO",
    event: "ALLOWED",
    proto: "HTTPS",
    peer: "198.18.1.10:54321",
    dst: "198.19.0.10:443",
    ...fields,
  });
}

function streamOf(chunks: (string | Uint8Array)[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return ReadableStream.from(chunks.map((c) => (typeof c === "string" ? enc.encode(c) : c)));
}

/** The ALLOWED_HOSTS lines of a report, parsed as the proxy would parse them. */
function allowedLines(report: string): string[] {
  return report.split("\n").filter((l) => l.startsWith("ALLOWED_HOSTS=")).map((l) =>
    l.slice("ALLOWED_HOSTS=".length)
  );
}

const SAMPLE = [
  decision({ sni: "api.example.com", would_deny: true, reason: "not_allowed" }),
  decision({ sni: "api.example.com", would_deny: true, reason: "not_allowed" }),
  decision({ proto: "HTTP", host: "Cdn.Example.NET", would_deny: true, reason: "not_allowed" }),
  decision({ sni: "allowed.test" }), // allowed in audit and in enforce: not counted
  decision({ sni: "ok.test", would_deny: false }),
  decision({
    event: "CLOSED",
    sni: "api.example.com",
    would_deny: true,
    up: 1,
    down: 2,
    duration_ms: 3,
  }),
  decision({ event: "DENIED", sni: "x.test", reason: "not_allowed" }), // enforce-mode line, not audit
  decision({ would_deny: true, reason: "no_sni" }),
  decision({ would_deny: true, reason: "no_sni" }),
  decision({ host: "evil.com,*.com", would_deny: true, reason: "invalid_host" }),
  decision({ host: "10.0.0.1", would_deny: true, reason: "invalid_host" }),
  decision({ sni: "exämple.com", would_deny: true, reason: "invalid_host" }),
  decision({ sni: "bad.test", would_deny: "true" }), // only a JSON true counts
  "2026-04-23T10:00:01Z INFO ALLOWED HTTP peer=198.18.1.10:54321 dst=198.19.0.10:80 host=text.test",
  "{not json",
  "[1,2,3]",
  "",
  "Apr 23 10:00:01 vm proxy-please[42]: " +
  decision({ sni: "journal.example.com", would_deny: true }),
  decision({ sni: "crlf.example.com", would_deny: true }) + "\r",
];

Deno.test("summarizeWouldDeny counts audit would-deny lines by canonical hostname", () => {
  assert.deepEqual(
    summarizeWouldDeny(SAMPLE),
    new Map([
      ["api.example.com", 2],
      ["cdn.example.net", 1],
      ["journal.example.com", 1],
      ["crlf.example.com", 1],
    ]),
  );
});

Deno.test("tallyWouldDeny accounts for everything it did not list", () => {
  const s = tallyWouldDeny(SAMPLE);
  assert.equal(s.lines, SAMPLE.length);
  assert.equal(s.notJson, 3); // the text line, "{not json" and the array
  assert.deepEqual(s.withoutHost, new Map([["no_sni", 2], ["invalid_host", 3]]));
  assert.equal(s.overlong, 0);
});

Deno.test("formatReport: table by count, reasons, and an ALLOWED_HOSTS line the proxy accepts", () => {
  const report = formatReport(tallyWouldDeny(SAMPLE));
  assert.match(
    report,
    /^proxy-please report: 19 log lines read, 10 would-deny decisions, 4 hostnames\.$/m,
  );
  assert.match(report, /\(3 lines not JSON\.\)/);
  const table = report.split("\n").filter((l) => /^\s+\d+ {2}\S/.test(l)).map((l) => l.trim());
  assert.deepEqual(table, [
    "2  api.example.com",
    "1  cdn.example.net",
    "1  crlf.example.com",
    "1  journal.example.com",
    "3  invalid_host",
    "2  no_sni",
  ]);
  const [exact, grouped, ...more] = allowedLines(report);
  assert.equal(more.length, 0);
  assert.equal(exact, "api.example.com,cdn.example.net,crlf.example.com,journal.example.com");
  // Three distinct names one label below example.com: a wildcard is suggested, separately.
  assert.equal(grouped, "*.example.com,cdn.example.net");
  for (const line of [exact, grouped]) assert.ok(parseAllowlist(line).ok, line);
  // Client-chosen junk never reaches the output.
  assert.doesNotMatch(report, /evil|\*\.com|10\.0\.0\.1|exämple/);
});

Deno.test("formatReport: grouping needs 3 distinct names one label below, never a TLD or registry suffix", () => {
  const lines = [
    ...["a", "b", "c"].map((l) => decision({ sni: `${l}.cdn.example.org`, would_deny: true })),
    ...["a", "b"].map((l) => decision({ sni: `${l}.two.example`, would_deny: true })),
    ...["x", "y", "z"].map((l) => decision({ sni: `${l}.com`, would_deny: true })),
    ...["x", "y", "z"].map((l) => decision({ sni: `${l}.co.uk`, would_deny: true })),
    decision({ sni: "deep.a.cdn.example.org", would_deny: true }),
    decision({ sni: "cdn.example.org", would_deny: true }),
  ];
  const report = formatReport(tallyWouldDeny(lines));
  assert.match(report, /Grouping suggestion: at least 3 distinct names exactly one label below/);
  assert.match(
    report,
    /^ {2}\*\.cdn\.example\.org {2}\(a\.cdn\.example\.org, b\.cdn\.example\.org, c\.cdn\.example\.org\)$/m,
  );
  const [exact, grouped] = allowedLines(report);
  assert.equal(
    exact,
    "a.cdn.example.org,a.two.example,b.cdn.example.org,b.two.example,c.cdn.example.org," +
      "cdn.example.org,deep.a.cdn.example.org,x.co.uk,x.com,y.co.uk,y.com,z.co.uk,z.com",
  );
  assert.equal(
    grouped,
    "*.cdn.example.org,a.two.example,b.two.example,cdn.example.org,deep.a.cdn.example.org," +
      "x.co.uk,x.com,y.co.uk,y.com,z.co.uk,z.com",
  );
  // Both lines are valid allowlists, and the grouped one still allows every observed name.
  for (const line of [exact, grouped]) {
    const parsed = parseAllowlist(line);
    assert.ok(parsed.ok, line);
    for (const host of summarizeWouldDeny(lines).keys()) {
      assert.ok(isAllowed(parsed.allowlist, host), host);
    }
  }
});

Deno.test("suggestGroups and isTooBroadParent", () => {
  assert.deepEqual(suggestGroups(["a.x.test", "b.x.test", "a.x.test"]), new Map());
  assert.deepEqual(
    suggestGroups(["c.x.test", "a.x.test", "b.x.test"]),
    new Map([["x.test", ["a.x.test", "b.x.test", "c.x.test"]]]),
  );
  assert.equal(isTooBroadParent("com"), true);
  assert.equal(isTooBroadParent("co.uk"), true);
  assert.equal(isTooBroadParent("com.au"), true);
  assert.equal(isTooBroadParent("example.com"), false);
  assert.equal(isTooBroadParent("co.example"), false);
});

Deno.test("formatReport merges the current ALLOWED_HOSTS and skips names it already allows", () => {
  const lines = [
    decision({ sni: "new.example.com", would_deny: true }),
    decision({ sni: "a.covered.test", would_deny: true }), // allowed by *.covered.test (config changed since)
  ];
  const report = formatReport(tallyWouldDeny(lines), {
    current: "old.example.com, *.covered.test",
  });
  assert.deepEqual(allowedLines(report), ["*.covered.test,new.example.com,old.example.com"]);
  assert.match(report, /the current ALLOWED_HOSTS plus every hostname above/);
  const bad = formatReport(tallyWouldDeny(lines), { current: "*.com" });
  assert.match(
    bad,
    /Note: the current ALLOWED_HOSTS was not merged: invalid allowlist entry "\*\.com"/,
  );
  assert.deepEqual(allowedLines(bad), ["a.covered.test,new.example.com"]);
});

Deno.test("formatReport: nothing found says how to produce input", () => {
  const report = formatReport(tallyWouldDeny(["hello", decision({ sni: "ok.test" })]));
  assert.match(report, /0 would-deny decisions/);
  assert.match(report, /No would-deny decisions found/);
  assert.match(report, /MODE=audit and LOG_FORMAT=json/);
  assert.equal(allowedLines(report).length, 0);
});

Deno.test("runReport: streams lines; an over-long line is skipped without breaking neighbours", async () => {
  const long = decision({
    sni: "long.one.test",
    would_deny: true,
    pad: "x".repeat(MAX_LINE_BYTES),
  });
  const edge = decision({ sni: "edge.two.test", would_deny: true });
  const exactlyMax = edge.replace("}", `,"pad":"${"y".repeat(MAX_LINE_BYTES - edge.length - 9)}"}`);
  assert.equal(new TextEncoder().encode(exactlyMax).length, MAX_LINE_BYTES);
  const text = [
    decision({ sni: "before.three.test", would_deny: true }),
    long,
    decision({ sni: "after.four.test", would_deny: true }),
    exactlyMax,
    exactlyMax.replace("edge.two.test", "edge1.two.test"), // one byte too long: skipped
    decision({ sni: "last.five.test", would_deny: true }), // no trailing newline
  ].join("\n");
  // Feed it in awkward 1000-byte chunks so lines straddle chunk boundaries.
  const bytes = new TextEncoder().encode(text);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += 1000) chunks.push(bytes.slice(i, i + 1000));
  const report = await runReport(streamOf(chunks));
  assert.match(report, /6 log lines read, 4 would-deny decisions, 4 hostnames/);
  assert.match(report, /2 lines over 64 KiB skipped/);
  assert.deepEqual(allowedLines(report), [
    "after.four.test,before.three.test,edge.two.test,last.five.test", // no grouping: distinct parents
  ]);
});

Deno.test("runReport: multi-byte characters split across chunks decode correctly", async () => {
  const line = decision({ sni: "utf8.example.com", would_deny: true, note: "é€😀" }) + "\n";
  const bytes = new TextEncoder().encode(line);
  const chunks = Array.from(bytes, (b) => new Uint8Array([b])); // one byte per chunk
  const report = await runReport(streamOf(chunks));
  assert.deepEqual(allowedLines(report), ["utf8.example.com"]);
});

Deno.test("property: runReport gives the same report however the input is chunked", async () => {
  const hostArb = fc.constantFrom(
    "a.example.com",
    "b.example.com",
    "c.example.com",
    "x.test",
    "y.test",
  );
  const lineArb = fc.oneof(
    hostArb.map((h) => decision({ sni: h, would_deny: true })),
    hostArb.map((h) => decision({ host: h, would_deny: true, proto: "HTTP" })),
    hostArb.map((h) => decision({ sni: h })),
    fc.string({ maxLength: 40 }).filter((s) => !s.includes("\n")),
  );
  await fc.assert(
    fc.asyncProperty(
      fc.array(lineArb, { maxLength: 30 }),
      fc.array(fc.nat({ max: 200 }), { maxLength: 20 }),
      async (
        lines,
        cuts,
      ) => {
        const text = lines.join("\n");
        const bytes = new TextEncoder().encode(text);
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const chunks: Uint8Array[] = [];
        let prev = 0;
        for (const p of [...points, bytes.length]) {
          chunks.push(bytes.slice(prev, p));
          prev = p;
        }
        // A final line feed ends the last line; it does not start an empty one.
        const split = text === "" ? [] : text.split("\n");
        if (text.endsWith("\n")) split.pop();
        const expected = formatReport(tallyWouldDeny(split));
        assert.equal(await runReport(streamOf(chunks)), expected);
      },
    ),
    { numRuns: 300 },
  );
});
