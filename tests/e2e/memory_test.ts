/**
 * End to end: after a burst of connections, the main thread and the relay thread each collect
 * their garbage once they are quiet (src/idle_collect.ts), counted in
 * `proxy_please_idle_collections_total`. The relay thread is the one V8 would never collect by
 * itself while it blocks in epoll_wait.
 */

import assert from "node:assert/strict";
import { run, sleep } from "../lab/command.ts";
import { type CaseContext, labTest } from "./lab_fixture.ts";

const SERIES = "proxy_please_idle_collections_total";

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

/** One curl process making `count` new connections to `url`; their status codes. */
async function burst(c: CaseContext, url: string, count: number): Promise<number[]> {
  const out = await c.lab.client([
    "curl",
    "--silent",
    "--max-time",
    "60",
    "--cacert",
    c.lab.pki.caCert,
    "--header",
    "Connection: close",
    "--write-out",
    "%{http_code}\n",
    ...Array(count).fill(url).flatMap((u) => ["--output", "/dev/null", u]),
  ], { check: false, timeoutMs: 90_000 });
  return out.stdout.trim().split("\n").map(Number);
}

labTest("e2e: idle memory", [
  [
    "after a burst, each thread collects its garbage once quiet",
    async (c) => {
      const before = await collections(c);
      for (const url of ["http://allowed.test/", "https://allowed.test/"]) {
        const codes = await burst(c, url, 300);
        assert.deepEqual(codes, Array(300).fill(200), url);
      }
      // Scraped once a second: a busier poll would itself keep the main thread from quiet.
      let now = before;
      for (let i = 0; i < 20 && (now.main <= before.main || now.relay <= before.relay); i++) {
        await sleep(1000);
        now = await collections(c);
      }
      assert.ok(now.relay > before.relay, `relay thread: ${JSON.stringify({ before, now })}`);
      assert.ok(now.main > before.main, `main thread: ${JSON.stringify({ before, now })}`);
    },
  ],
]);
