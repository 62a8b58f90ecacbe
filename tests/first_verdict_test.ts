import assert from "node:assert/strict";
import fc from "fast-check";
import type { OriginalDstResult } from "../ffi/original_dst.ts";
import { parseAllowlist } from "../src/allowlist.ts";
import { decideHttp, decideTls } from "../src/decision.ts";
import {
  type FirstFlight,
  type QuickInput,
  type QuickPolicy,
  quickVerdict,
} from "../src/first_verdict.ts";
import { HttpHeadScanner } from "../src/http_head.ts";
import { parseSourcePolicy } from "../src/source_policy.ts";
import { scanClientHello } from "../src/tls_client_hello.ts";
import { alpnData, ascii, buildHello, extension, serverNameData } from "./tls_records.ts";

function allowlistOf(hosts: string) {
  const parsed = parseAllowlist(hosts);
  if (!parsed.ok) throw new Error(parsed.reason);
  return parsed.allowlist;
}

const POLICY: QuickPolicy = {
  allowlist: allowlistOf("allowed.test,*.wild.test"),
  sourcePolicy: [],
  echDeny: false,
  dstPolicy: "pin",
  ownPorts: [8080, 8443],
};

function head(host: string): FirstFlight {
  const r = new HttpHeadScanner().scan(ascii(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
  assert.notEqual(r.kind, "incomplete");
  return { head: r as Exclude<typeof r, { kind: "incomplete" }> };
}

function scanned(bytes: Uint8Array) {
  const r = scanClientHello(bytes);
  assert.notEqual(r.kind, "incomplete");
  return r as Exclude<typeof r, { kind: "incomplete" }>;
}

function hello(name: string, more: Uint8Array[] = []): FirstFlight {
  const sni = extension(0, serverNameData([[0, ascii(name)]]));
  return { hello: scanned(buildHello({ extensions: [sni, ...more] })) };
}

const REDIRECTED: OriginalDstResult = {
  ok: true,
  destination: { family: 4, address: "198.19.0.10", port: 443 },
  redirected: true,
};

function input(read: FirstFlight, over: Partial<QuickInput> = {}): QuickInput {
  return {
    proto: "head" in read ? "HTTP" : "HTTPS",
    source: "198.18.1.10",
    port: 40000,
    origin: REDIRECTED,
    loop: false,
    read,
    ...over,
  };
}

/** What the cache would answer without asking: allowed.test resolves to 198.19.0.10 and a v6. */
const KNOWN = (name: string) => name === "allowed.test" ? ["198.19.0.10", "2001:db8::10"] : null;

Deno.test("quick verdict: a plain allow carries the ALLOWED line's fields, HTTP and TLS", () => {
  assert.deepEqual(quickVerdict(input(head("Allowed.Test")), POLICY, KNOWN), {
    connectTo: { address: "198.19.0.10", port: 443 },
    name: "allowed.test",
    fields: {
      event: "ALLOWED",
      proto: "HTTP",
      peer: "198.18.1.10:40000",
      dst: "198.19.0.10:443",
      host: "allowed.test",
    },
  });
  const tls = quickVerdict(
    input(hello("allowed.test", [extension(16, alpnData(["h2", "http/1.1"]))])),
    POLICY,
    KNOWN,
  );
  assert.deepEqual(tls?.fields, {
    event: "ALLOWED",
    proto: "HTTPS",
    peer: "198.18.1.10:40000",
    dst: "198.19.0.10:443",
    sni: "allowed.test",
    alpn: "h2,http/1.1",
  });
});

Deno.test("quick verdict: pinning as the main thread does it, from the copied answers", () => {
  const elsewhere: OriginalDstResult = {
    ok: true,
    destination: { family: 4, address: "198.19.0.99", port: 443 },
    redirected: true,
  };
  // pin: a dialled address the name does not have is replaced by one it has, and logged.
  const pinned = quickVerdict(input(hello("allowed.test"), { origin: elsewhere }), POLICY, KNOWN);
  assert.deepEqual(pinned?.connectTo, { address: "198.19.0.10", port: 443 });
  assert.equal(pinned?.fields.connect, "198.19.0.10:443");
  assert.equal(pinned?.fields.dst, "198.19.0.99:443");
  // strict: that is a denial, which is the main thread's to make.
  const strict = { ...POLICY, dstPolicy: "strict" as const };
  assert.equal(
    quickVerdict(input(hello("allowed.test"), { origin: elsewhere }), strict, KNOWN),
    null,
  );
  assert.notEqual(quickVerdict(input(hello("allowed.test")), strict, KNOWN), null);
  // No copied answers: asked of the main thread, which resolves.
  assert.equal(quickVerdict(input(hello("a.wild.test")), POLICY, KNOWN), null);
  assert.equal(quickVerdict(input(hello("allowed.test")), POLICY, () => null), null);
  // off: nothing to resolve, the dialled address is used.
  const off = { ...POLICY, dstPolicy: "off" as const };
  const direct = quickVerdict(input(hello("a.wild.test"), { origin: elsewhere }), off, () => null);
  assert.deepEqual(direct?.connectTo, elsewhere.ok ? elsewhere.destination : null);
  assert.equal(direct?.fields.connect, undefined);
});

Deno.test("quick verdict: everything but a plain allow is left to the main thread", () => {
  const cases: [string, QuickInput, QuickPolicy][] = [
    ["denied name", input(head("denied.test")), POLICY],
    ["wildcard apex", input(hello("wild.test")), POLICY],
    ["two labels below the wildcard", input(hello("a.b.wild.test")), POLICY],
    ["no SNI", input({ hello: scanned(buildHello({ extensions: [] })) }), POLICY],
    [
      "no original destination",
      input(head("allowed.test"), { origin: { ok: false, reason: "ENOENT" } }),
      POLICY,
    ],
    [
      "not redirected",
      input(head("allowed.test"), { origin: { ...REDIRECTED, redirected: false } }),
      POLICY,
    ],
    ["the thread's own upstream came back", input(head("allowed.test"), { loop: true }), POLICY],
    [
      "dialled one of the proxy's ports",
      input(head("allowed.test"), {
        origin: {
          ok: true,
          destination: { family: 4, address: "198.18.0.1", port: 8443 },
          redirected: true,
        },
      }),
      POLICY,
    ],
    [
      "ECH offered under ECH_POLICY=deny",
      input(hello("allowed.test", [extension(0xfe0d, new Uint8Array([0, 1, 2, 3]))])),
      { ...POLICY, echDeny: true },
    ],
  ];
  for (const [what, i, policy] of cases) {
    assert.equal(quickVerdict(i, policy, KNOWN), null, what);
  }
  // The same ECH hello is a plain allow when ECH is allowed, and says so.
  const ech = quickVerdict(
    input(hello("allowed.test", [extension(0xfe0d, new Uint8Array([0, 1, 2, 3]))])),
    POLICY,
    KNOWN,
  );
  assert.equal(ech?.fields.ech, true);
});

Deno.test("quick verdict: the source's own allowlist applies", () => {
  const rules = parseSourcePolicy("198.18.1.0/24=other.test");
  if (!rules.ok) throw new Error(rules.reason);
  const policy = { ...POLICY, sourcePolicy: rules.rules };
  assert.equal(quickVerdict(input(head("allowed.test")), policy, KNOWN), null);
  const outside = input(head("allowed.test"), { source: "198.18.2.10" });
  assert.equal(quickVerdict(outside, policy, KNOWN)?.name, "allowed.test");
});

Deno.test("quick verdict: never allows a name the policy denies (property)", () => {
  const label = fc.stringMatching(/^[a-z0-9-]{1,8}$/);
  const name = fc.oneof(
    fc.constantFrom("allowed.test", "wild.test", "ALLOWED.TEST.", "allowed.test.evil"),
    fc.tuple(label, fc.constantFrom(".wild.test", ".allowed.test", ".test", "")).map(
      ([l, s]) => l + s,
    ),
    fc.tuple(label, label).map(([a, b]) => `${a}.${b}.wild.test`),
    fc.string({ maxLength: 40 }),
  );
  fc.assert(
    fc.property(name, fc.boolean(), (n, tls) => {
      if (/[\r\n]/.test(n)) return; // not a header value
      const read = tls ? hello(n) : head(n);
      const quick = quickVerdict(input(read), { ...POLICY, dstPolicy: "off" }, () => null);
      const main = "head" in read
        ? decideHttp(read.head, POLICY.allowlist)
        : decideTls(read.hello, POLICY.allowlist);
      if (quick === null) return;
      assert.ok(main.allowed, `${n}: allowed on the thread only`);
      assert.equal(quick.name, main.name);
    }),
    { numRuns: 500 },
  );
});
