/**
 * Shared set-up for the end-to-end suite: one lab per test file (prefix `ppe2e-`, so a lab
 * left running with `deno task lab --keep` is not disturbed), torn down even when a case fails.
 * `PROXY_PLEASE_E2E_PREFIX` chooses another prefix, so two people can run the suite at once.
 *
 * Each case runs as a step that starts from a clean state: the server hit logs are emptied
 * and the proxy log is read from a fresh mark. A machine without root or network namespaces
 * makes the test fail with the reason, never skip.
 * @module
 */

import { type Lab, type LabOptions, upLab } from "../lab/lab.ts";
import { processAlive } from "../lab/command.ts";
import { endpointPort, type ProxyEvent, type ProxyProcess } from "../lab/proxy.ts";
import { E2E_PREFIX } from "../lab/topology.ts";

/** The namespace prefix of the suite's labs: `PROXY_PLEASE_E2E_PREFIX`, or `ppe2e-`. */
export function e2ePrefix(): string {
  return Deno.env.get("PROXY_PLEASE_E2E_PREFIX") || E2E_PREFIX;
}

/** What a case gets: the lab and the proxy-log position at the start of the case. */
export interface CaseContext {
  lab: Lab;
  /** Waits for a proxy event after the start of this case (undefined on deadline). */
  waitForEvent(
    predicate: (e: ProxyEvent) => boolean,
    timeoutMs?: number,
  ): Promise<ProxyEvent | undefined>;
  /**
   * Waits for the decision on the connection from client source port `port` (the proxy may
   * log it after the client has already seen the connection close).
   */
  decisionFor(port: number | undefined, timeoutMs?: number): Promise<ProxyEvent | undefined>;
  /** Proxy events logged since the start of this case. */
  events(): Promise<ProxyEvent[]>;
  /**
   * The events since the start of this case that satisfy `predicate`, once there are `count`
   * of them (or what there is at the deadline): lines may come after the client saw the close.
   */
  eventsWhen(
    predicate: (e: ProxyEvent) => boolean,
    count: number,
    timeoutMs?: number,
  ): Promise<ProxyEvent[]>;
}

/** A named case of a lab test. */
export type LabCase = [name: string, fn: (c: CaseContext) => Promise<void>];

/**
 * Registers one `Deno.test` named `name` that builds a lab, runs each case as a step from a
 * clean state, and removes the lab afterwards.
 */
export function labTest(name: string, cases: LabCase[], options: LabOptions = {}): void {
  Deno.test({
    name,
    // Child processes and files outlive single ops by design; the lab cleans them up itself.
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      const lab = await upLab({ prefix: e2ePrefix(), log: () => {}, ...options });
      try {
        for (const [caseName, fn] of cases) {
          await t.step(caseName, async () => {
            await lab.resetServerLogs();
            const proxy = lab.proxy;
            if (!proxy) throw new Error("the lab has no proxy running");
            const from = await proxy.log.mark();
            await runCase(lab, proxy, () =>
              fn({
                lab,
                waitForEvent: (predicate, timeoutMs = 5_000) =>
                  proxy.log.waitFor(predicate, { from, timeoutMs }),
                decisionFor: (port, timeoutMs = 5_000) => {
                  if (!port) throw new Error("the client reported no source port");
                  return proxy.log.waitFor(
                    (e) => isDecision(e) && endpointPort(e.peer) === port,
                    { from, timeoutMs },
                  );
                },
                events: () => proxy.log.since(from),
                eventsWhen: (predicate, count, timeoutMs = 10_000) =>
                  proxy.log.waitForCount(predicate, count, { from, timeoutMs }),
              }));
          });
        }
      } finally {
        await lab.down();
      }
    },
  });
}

/** Runs a case; when it fails, adds the proxy's state and its last non-decision lines. */
async function runCase(lab: Lab, proxy: ProxyProcess, fn: () => Promise<void>): Promise<void> {
  try {
    await fn();
  } catch (error) {
    const other = proxy.log.lines().filter((l) => !l.event || !("event" in l.event)).slice(-8);
    const state = processAlive(proxy.pid) ? "still running" : "EXITED";
    const detail =
      `\n[lab ${lab.t.prefix}] proxy pid ${proxy.pid} ${state}; its last other lines:\n` +
      other.map((l) => `  ${l.raw}`).join("\n");
    if (error instanceof Error) {
      error.message += detail;
      throw error;
    }
    throw new Error(`${error}${detail}`);
  }
}

/** True for decision events (ALLOWED or DENIED). */
export function isDecision(e: ProxyEvent): boolean {
  return e.event === "ALLOWED" || e.event === "DENIED";
}
