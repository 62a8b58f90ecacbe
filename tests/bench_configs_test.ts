/**
 * The benchmark compares equal work only if HAProxy and Squid, configured from
 * `tests/bench/haproxy.cfg` and `tests/bench/squid.conf`, make the same allow/deny decisions
 * as proxy-please. This test runs the lab's decision cases through each of them in turn, in
 * one lab (prefix `ppbench-t-`), and asserts identical outcomes, each also equal to the
 * policy's expected one. Cases where a peer cannot match are listed apart, with the outcome
 * each system really has, and documented in BENCHMARKS.md.
 * @module
 */

import assert from "node:assert/strict";
import type { Lab } from "./lab/lab.ts";
import { upLab } from "./lab/lab.ts";
import { LAB_HOSTS } from "./lab/topology.ts";
import { curlThroughSplitter } from "./e2e/raw.ts";
import { PROXIES, startSystem, type SystemName } from "./bench/peers.ts";

type Outcome = "allowed" | "denied";

/** One decision case: what a client does, and what the allowlist says must happen. */
interface DecisionCase {
  name: string;
  expected: Outcome;
  run: (lab: Lab) => Promise<Outcome>;
}

/** curl in the client namespace; allowed when the real server's greeting for `name` came back. */
async function curlOutcome(lab: Lab, url: string, greets: string, args: string[] = []) {
  const out = await lab.client([
    "curl",
    "--silent",
    "--cacert",
    lab.pki.caCert,
    "--max-time",
    "10",
    ...args,
    url,
  ], { check: false, timeoutMs: 30_000 });
  return outcomeOf(out.stdout, greets);
}

function outcomeOf(body: string, greets: string): Outcome {
  return body.includes(`hello from ${greets}\n`) ? "allowed" : "denied";
}

const { allowed, wildOne, wildTwo, wildApex, blocked } = LAB_HOSTS;

const CASES: DecisionCase[] = [
  ...[
    [allowed, "allowed"],
    [wildOne, "allowed"],
    [wildTwo, "denied"],
    [wildApex, "denied"],
    [blocked, "denied"],
  ].flatMap(([host, expected]) => [
    {
      name: `HTTP Host ${host}`,
      expected: expected as Outcome,
      run: (lab: Lab) => curlOutcome(lab, `http://${host}/`, host),
    },
    {
      name: `TLS SNI ${host}`,
      expected: expected as Outcome,
      run: (lab: Lab) => curlOutcome(lab, `https://${host}/`, host),
    },
  ]),
  {
    name: "HTTP Host in upper case",
    expected: "allowed",
    run: (lab) => curlOutcome(lab, `http://${allowed}/`, allowed, ["-H", "Host: ALLOWED.TEST"]),
  },
  {
    name: "HTTP Host with a port",
    expected: "allowed",
    run: (lab) => curlOutcome(lab, `http://${allowed}/`, allowed, ["-H", `Host: ${allowed}:80`]),
  },
  {
    name: "HTTP to an allowed server's address with a blocked Host",
    expected: "denied",
    run: (lab) => curlOutcome(lab, `http://${allowed}/`, blocked, ["-H", `Host: ${blocked}`]),
  },
  {
    name: "HTTP second request on a kept-alive connection for a blocked Host",
    expected: "denied",
    async run(lab) {
      // --next reuses the first request's connection: the second request must be checked too.
      const out = await lab.client([
        "curl",
        "--silent",
        "--max-time",
        "10",
        "--write-out",
        "[%{num_connects}]",
        `http://${allowed}/`,
        "--next",
        "--max-time",
        "10",
        "--write-out",
        "[%{num_connects}]",
        "-H",
        `Host: ${blocked}`,
        `http://${allowed}/`,
      ], { check: false, timeoutMs: 30_000 });
      assert.match(
        out.stdout,
        /^hello from allowed\.test\n\[1\]/,
        `first request allowed: ${out.stdout} ${out.stderr}`,
      );
      // [0]: the second request went over the same connection. Any new connection (a proxy that
      // closed it) is fine too: what counts is that blocked.test's page never comes back.
      return outcomeOf(out.stdout.replace(/^hello from allowed\.test\n/, ""), blocked);
    },
  },
  {
    name: "TLS without SNI",
    expected: "denied",
    run: (lab) => curlOutcome(lab, `https://${lab.t.addr.server4}/`, allowed, ["-k"]),
  },
  {
    name: "TLS ClientHello in many TCP segments",
    expected: "allowed",
    async run(lab) {
      const r = await curlThroughSplitter(
        lab,
        "segments",
        { host: lab.t.addr.server4, port: 443 },
        `https://${allowed}/`,
      );
      return outcomeOf(r.stdout, allowed);
    },
  },
];

/**
 * Cases where a peer cannot do what proxy-please does, with each system's real outcome.
 * Asserted as they are, so a change in any of them is noticed and BENCHMARKS.md updated.
 */
const KNOWN_DIFFERENCES: Array<
  {
    name: string;
    outcomes: Record<Exclude<SystemName, "direct">, Outcome>;
    run: DecisionCase["run"];
  }
> = [
  {
    // A ClientHello split over several TLS records (legal, rare): HAProxy's req.ssl_sni looks
    // at the first record only.
    name: "TLS ClientHello split over several TLS records",
    outcomes: { "proxy-please": "allowed", haproxy: "denied", squid: "allowed" },
    async run(lab) {
      const r = await curlThroughSplitter(
        lab,
        "records",
        { host: lab.t.addr.server4, port: 443 },
        `https://${allowed}/`,
      );
      return outcomeOf(r.stdout, allowed);
    },
  },
];

Deno.test({
  name: "bench peers (HAProxy, Squid) make the same decisions as proxy-please on the lab's cases",
  // Child processes and files outlive single ops by design; the lab removes them itself.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const lab = await upLab({ prefix: "ppbench-t-", proxy: false, log: () => {} });
    try {
      const seen: Record<string, Record<string, Outcome>> = {};
      for (const system of PROXIES) {
        const running = await startSystem(lab, system);
        try {
          await lab.resetServerLogs();
          seen[system] = {};
          for (const c of [...CASES, ...KNOWN_DIFFERENCES]) {
            seen[system][c.name] = await c.run(lab);
          }
          assert.deepEqual(
            await lab.neverHits(),
            [],
            `${system} let a request reach the never-reached server`,
          );
        } finally {
          await running.stop();
        }
      }
      const expected = Object.fromEntries(CASES.map((c) => [c.name, c.expected]));
      for (const system of PROXIES) {
        const common = Object.fromEntries(CASES.map((c) => [c.name, seen[system][c.name]]));
        assert.deepEqual(common, expected, `${system}'s decisions differ from the policy`);
        for (const d of KNOWN_DIFFERENCES) {
          assert.equal(
            seen[system][d.name],
            d.outcomes[system],
            `${system} on "${d.name}" (a documented difference) changed: update BENCHMARKS.md`,
          );
        }
      }
    } finally {
      await lab.down();
    }
  },
});
