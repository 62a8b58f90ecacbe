/**
 * End to end: with many connections held open and the proxy then quiet, the main thread and the
 * relay thread each collect their garbage (src/idle_collect.ts), counted in
 * `proxy_please_idle_collections_total`. The relay thread is the one V8 would never collect by
 * itself while it blocks in epoll_wait.
 */

import assert from "node:assert/strict";
import { holdIdle } from "../bench/workloads.ts";
import { run, sleep } from "../lab/command.ts";
import { type CaseContext, labTest } from "./lab_fixture.ts";

const SERIES = "proxy_please_idle_collections_total";
/**
 * Held connections: each leaves records that outlive the young generation in both threads
 * (about 0.5 KiB on the relay thread, 0.3 on the main thread), several times the growth that
 * makes a collection worth it.
 */
const HELD = 2000;

/** The idle collections counted so far, by thread. */
async function collections(c: CaseContext): Promise<{ main: number; relay: number }> {
  const out = await run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics"], {
    ns: c.lab.t.ns.router,
  });
  const value = (thread: string) => {
    const line = out.stdout.split("\n").find((l) => l.startsWith(`${SERIES}{thread="${thread}"} `));
    assert.ok(line !== undefined, `no ${SERIES} for the ${thread} thread`);
    return Number(line.split(" ")[1]);
  };
  return { main: value("main"), relay: value("relay") };
}

labTest("e2e: idle memory", [
  [
    `with ${HELD} connections held open, each thread collects its garbage once quiet`,
    async (c) => {
      const before = await collections(c);
      const held = await holdIdle(c.lab, "http", HELD);
      assert.ok(typeof held !== "string", String(held));
      try {
        assert.equal(held.open, HELD, `${held.failed} failed: ${held.error}`);
        // Scraped once a second: a busier poll would itself keep the main thread from quiet.
        let now = await collections(c);
        for (let i = 0; i < 20 && (now.main <= before.main || now.relay <= before.relay); i++) {
          await sleep(1000);
          now = await collections(c);
        }
        assert.ok(now.relay > before.relay, `relay thread: ${JSON.stringify({ before, now })}`);
        assert.ok(now.main > before.main, `main thread: ${JSON.stringify({ before, now })}`);
      } finally {
        await held.release();
      }
    },
  ],
]);
