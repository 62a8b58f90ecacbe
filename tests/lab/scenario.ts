/**
 * The lab's demonstration script: real clients against the lab, each with what should happen
 * (client outcome and proxy decision) and what did.
 *
 * A step passes only when both the client's observation and the proxy's log match; the last
 * steps check that nothing ever reached the never-reached server or UDP 443.
 * @module
 */

import {
  clientScript,
  curl,
  type CurlResult,
  denoClient,
  describeCurl,
  sClient,
} from "./clients.ts";
import type { Plan, Report } from "../e2e/clients/raw_client.ts";
import type { Lab } from "./lab.ts";
import { endpointPort, formatEvent, type ProxyEvent } from "./proxy.ts";
import { BIG_FILE_BYTES } from "./servers.ts";
import { LAB_HOSTS } from "./topology.ts";

/** What the proxy should log for a step: a decision, or nothing at all. */
export type ExpectedDecision =
  | { event: "ALLOWED" | "DENIED"; proto: "HTTP" | "HTTPS"; name?: string; reason?: string }
  | "none";

/** One row of the lab's table. */
export interface StepResult {
  request: string;
  expected: string;
  observed: string;
  /** The proxy's log lines for this step, in text form. */
  proxyLog: string[];
  ok: boolean;
}

/** A step: a labelled client action plus its expectations. */
interface Step {
  request: string;
  /** Expected client outcome, in words. */
  expected: string;
  decision: ExpectedDecision;
  /** Runs the client; returns whether the client saw the expected outcome, and what it saw. */
  act(lab: Lab): Promise<{ ok: boolean; observed: string; localPort?: number }>;
}

/** The text of an expected decision, e.g. `DENIED HTTPS sni=blocked.test reason=not_allowed`. */
export function describeDecision(d: ExpectedDecision): string {
  if (d === "none") return "no proxy decision";
  const key = d.proto === "HTTP" ? "host" : "sni";
  return [d.event, d.proto, d.name ? `${key}=${d.name}` : "", d.reason ? `reason=${d.reason}` : ""]
    .filter((s) => s !== "").join(" ");
}

/** True when `e` is the decision `d` describes. */
export function decisionMatches(e: ProxyEvent, d: Exclude<ExpectedDecision, "none">): boolean {
  if (e.event !== d.event || e.proto !== d.proto) return false;
  const name = d.proto === "HTTP" ? e.host : e.sni;
  if (d.name !== undefined && name !== d.name) return false;
  if (d.reason !== undefined && e.reason !== d.reason) return false;
  return true;
}

const isDecision = (e: ProxyEvent) => e.event === "ALLOWED" || e.event === "DENIED";

function curlOk(r: CurlResult, host: string) {
  return { ok: r.status === 200 && r.body === `hello from ${host}\n`, observed: describeCurl(r) };
}

function curlBlocked(r: CurlResult) {
  // Denied means no answer from any server: the proxy's own 403 or a closed connection.
  return {
    ok: r.status !== 200 && !r.body.includes("hello from") && !r.body.includes("never-reached"),
    observed: describeCurl(r),
  };
}

/** The steps of `deno task lab`, in order. */
export function labSteps(lab: Lab): Step[] {
  const { allowed, blocked, wildOne, wildTwo, wildApex, halfClose } = LAB_HOSTS;
  const port = lab.t.unredirectedPort;
  const get = (url: string, family?: 4 | 6) => curl(lab, url, { family });
  return [
    {
      request: `curl http://${allowed}/`,
      expected: "200 from the server",
      decision: { event: "ALLOWED", proto: "HTTP", name: allowed },
      act: async () => {
        const r = await get(`http://${allowed}/`, 4);
        return { ...curlOk(r, allowed), localPort: r.localPort };
      },
    },
    {
      request: `curl http://${blocked}/`,
      expected: "refused by the proxy",
      decision: { event: "DENIED", proto: "HTTP", name: blocked, reason: "not_allowed" },
      act: async () => {
        const r = await get(`http://${blocked}/`, 4);
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `curl https://${allowed}/`,
      expected: "200 over verified TLS",
      decision: { event: "ALLOWED", proto: "HTTPS", name: allowed },
      act: async () => {
        const r = await get(`https://${allowed}/`, 4);
        return { ...curlOk(r, allowed), localPort: r.localPort };
      },
    },
    {
      request: `curl https://${blocked}/`,
      expected: "no TLS session",
      decision: { event: "DENIED", proto: "HTTPS", name: blocked, reason: "not_allowed" },
      act: async () => {
        const r = await get(`https://${blocked}/`, 4);
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `openssl s_client ${allowed}:443`,
      expected: "handshake, cert verified",
      decision: { event: "ALLOWED", proto: "HTTPS", name: allowed },
      act: async () => {
        const r = await sClient(lab, `${allowed}:443`, allowed);
        return { ok: r.handshake, observed: r.detail };
      },
    },
    {
      request: `openssl s_client ${allowed}:443 (no SNI)`,
      expected: "no handshake",
      decision: { event: "DENIED", proto: "HTTPS", reason: "no_sni" },
      act: async () => {
        const r = await sClient(lab, `${lab.t.addr.server4}:443`, null);
        return { ok: !r.handshake, observed: r.detail };
      },
    },
    {
      request: `curl https://${wildOne}/ (*.wild.test)`,
      expected: "200 over verified TLS",
      decision: { event: "ALLOWED", proto: "HTTPS", name: wildOne },
      act: async () => {
        const r = await get(`https://${wildOne}/`, 4);
        return { ...curlOk(r, wildOne), localPort: r.localPort };
      },
    },
    {
      request: `curl https://${wildTwo}/ (two labels)`,
      expected: "no TLS session",
      decision: { event: "DENIED", proto: "HTTPS", name: wildTwo, reason: "not_allowed" },
      act: async () => {
        const r = await get(`https://${wildTwo}/`, 4);
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `curl http://${wildApex}/ (apex)`,
      expected: "refused by the proxy",
      decision: { event: "DENIED", proto: "HTTP", name: wildApex, reason: "not_allowed" },
      act: async () => {
        const r = await get(`http://${wildApex}/`, 4);
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `curl -6 https://${allowed}/`,
      expected: "200 over IPv6",
      decision: { event: "ALLOWED", proto: "HTTPS", name: allowed },
      act: async () => {
        const r = await get(`https://${allowed}/`, 6);
        return { ...curlOk(r, allowed), localPort: r.localPort };
      },
    },
    {
      request: `curl -6 http://${blocked}/`,
      expected: "refused by the proxy",
      decision: { event: "DENIED", proto: "HTTP", name: blocked, reason: "not_allowed" },
      act: async () => {
        const r = await get(`http://${blocked}/`, 6);
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `curl http://${allowed}/ dialled at ${lab.t.addr.never4}`,
      expected: "200 from the name's own server",
      decision: { event: "ALLOWED", proto: "HTTP", name: allowed },
      act: async () => {
        // The client insists on the wrong address; DST_POLICY=pin (the default) must connect
        // to an address the allowed name resolves to, so the never-reached server stays unhit.
        const r = await curl(lab, `http://${allowed}/`, {
          family: 4,
          args: ["--resolve", `${allowed}:80:${lab.t.addr.never4}`],
        });
        return { ...curlOk(r, allowed), localPort: r.localPort };
      },
    },
    {
      request: `GET http://${halfClose}/ then FIN (half-close)`,
      expected: "server sees the FIN, all 64 MiB arrive after it",
      decision: { event: "ALLOWED", proto: "HTTP", name: halfClose },
      act: () => halfCloseStep(lab),
    },
    {
      request: `curl http://${allowed}:${port}/ (not redirected)`,
      expected: "no connection",
      decision: "none",
      act: async () => {
        const r = await curl(lab, `http://${allowed}:${port}/`, { family: 4, maxTime: 3 });
        return { ...curlBlocked(r), localPort: r.localPort };
      },
    },
    {
      request: `UDP ${lab.t.addr.server4}:443 (QUIC)`,
      expected: "no reply",
      decision: "none",
      act: async () => {
        const script = clientScript("lab/clients/udp_probe.ts");
        const r = await denoClient(lab, script, [lab.t.addr.server4, "443", "2000"]);
        return {
          ok: r.code === 0 && r.stdout.startsWith("no-reply"),
          observed: r.stdout || r.stderr,
        };
      },
    },
  ];
}

/**
 * A client that sends its request and shuts its sending side, to the half-close server (which
 * answers only after that FIN): the answer must still arrive whole.
 */
async function halfCloseStep(
  lab: Lab,
): Promise<{ ok: boolean; observed: string; localPort?: number }> {
  const request = `GET /lab HTTP/1.1\r\nHost: ${LAB_HOSTS.halfClose}\r\nConnection: close\r\n\r\n`;
  const plan: Plan = {
    host: lab.t.addr.halfClose4,
    port: 80,
    parts: [btoa(request)],
    closeWrite: true,
    keepBytes: 4096,
    readDeadlineMs: 60_000,
  };
  const out = await denoClient(lab, clientScript("e2e/clients/raw_client.ts"), [], {
    stdin: JSON.stringify(plan),
    timeoutMs: 90_000,
  });
  let r: Report;
  try {
    r = JSON.parse(out.stdout) as Report;
  } catch {
    return { ok: false, observed: `raw client failed (exit ${out.code}): ${out.stderr}` };
  }
  const records = await lab.halfCloseRecords();
  const sawFin = records.some((x) => x.event === "eof" && x.requestBytes === request.length);
  const whole = r.end === "eof" && r.statusLine === "HTTP/1.1 200 OK" &&
    r.bodyBytes === BIG_FILE_BYTES && r.bodySha256 === lab.files.bigSha256;
  const body = r.bodySha256 === lab.files.bigSha256 ? "sha256 matches" : "sha256 DIFFERS";
  return {
    ok: sawFin && whole,
    observed:
      `${r.statusLine ?? `no answer (${r.end})`}, ${r.bodyBytes ?? 0} body bytes, ${body}; ` +
      `server ${sawFin ? "saw" : "did NOT see"} the FIN`,
    localPort: r.localPort,
  };
}

/** Runs every step in order and returns one row per step plus the final "never reached" rows. */
export async function runLabScript(lab: Lab): Promise<StepResult[]> {
  const proxy = lab.proxy;
  if (!proxy) throw new Error("the lab script needs the proxy running");
  await lab.resetServerLogs();
  const results: StepResult[] = [];
  for (const step of labSteps(lab)) {
    const from = await proxy.log.mark();
    const seen = await step.act(lab);
    let proxyOk: boolean;
    let lines: ProxyEvent[];
    if (step.decision === "none") {
      lines = (await proxy.log.since(from)).filter(isDecision);
      proxyOk = lines.length === 0;
    } else {
      const want = step.decision;
      // The decision for this very connection: same source port when the client told us.
      const mine = (e: ProxyEvent) =>
        isDecision(e) &&
        (seen.localPort === undefined || endpointPort(e.peer) === seen.localPort);
      const found = await proxy.log.waitFor(mine, { from, timeoutMs: 5_000 });
      proxyOk = found !== undefined && decisionMatches(found, want);
      lines = (await proxy.log.since(from)).filter(isDecision);
    }
    results.push({
      request: step.request,
      expected: `${step.expected}; ${describeDecision(step.decision)}`,
      observed: seen.observed,
      proxyLog: lines.map(formatEvent),
      ok: seen.ok && proxyOk,
    });
  }
  const never = await lab.neverHits();
  results.push({
    request: `never-reached server ${lab.t.addr.never4} / :${lab.t.unredirectedPort}`,
    expected: "0 requests",
    observed: `${never.length} requests`,
    proxyLog: never.slice(0, 3),
    ok: never.length === 0,
  });
  const udp = await lab.udpHits();
  results.push({
    request: "UDP 443 listener in the internet",
    expected: "0 datagrams",
    observed: `${udp.length} datagrams`,
    proxyLog: udp.slice(0, 3),
    ok: udp.length === 0,
  });
  return results;
}
