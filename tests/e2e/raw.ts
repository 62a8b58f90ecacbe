/**
 * Helpers that run the e2e client scripts in the lab's client namespace.
 * @module
 */

import { clientScript, denoClient } from "../lab/clients.ts";
import type { Lab } from "../lab/lab.ts";
import type { Plan, Report } from "./clients/raw_client.ts";

/** Base64 of bytes or text, for a raw client plan. */
export function b64(data: Uint8Array | string): string {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Runs `clients/raw_client.ts` with `plan` and returns its report. */
export async function rawClient(lab: Lab, plan: Plan): Promise<Report> {
  const timeoutMs = (plan.readDeadlineMs ?? 10_000) + 20_000;
  const out = await denoClient(lab, clientScript("e2e/clients/raw_client.ts"), [], {
    stdin: JSON.stringify(plan),
    timeoutMs,
  });
  if (out.code !== 0) throw new Error(`raw client failed (exit ${out.code}): ${out.stderr}`);
  return JSON.parse(out.stdout) as Report;
}

/** Reads a ClientHello capture from tests/testdata/client_hellos/. */
export async function capture(name: string): Promise<Uint8Array> {
  return await Deno.readFile(new URL(`../testdata/client_hellos/${name}`, import.meta.url));
}

/**
 * Runs `clients/hello_splitter.ts MODE` towards `target` in the client namespace, then runs
 * curl through it (`--connect-to`), and returns curl's stdout and the splitter's exit status.
 */
export async function curlThroughSplitter(
  lab: Lab,
  mode: "segments" | "records",
  target: { host: string; port: number },
  url: string,
  curlArgs: string[] = [],
): Promise<{ curlCode: number; stdout: string; stderr: string; splitterCode: number }> {
  const script = clientScript("e2e/clients/hello_splitter.ts");
  const splitter = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      lab.t.ns.client,
      Deno.execPath(),
      "run",
      "--allow-all",
      "--quiet",
      script,
      mode,
      target.host,
      String(target.port),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = splitter.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let first = "";
  const portDeadline = Date.now() + 30_000;
  while (!first.includes("\n") && Date.now() < portDeadline) {
    const { value, done } = await reader.read();
    if (done) break;
    first += value;
  }
  reader.releaseLock();
  const port = Number.parseInt(first, 10);
  try {
    if (!(port > 0)) throw new Error(`hello splitter printed no port: ${JSON.stringify(first)}`);
    const u = new URL(url);
    const out = await lab.client([
      "curl",
      "--silent",
      "--show-error",
      "--cacert",
      lab.pki.caCert,
      "--max-time",
      "30",
      "--connect-to",
      `${u.hostname}:${u.port || 443}:127.0.0.1:${port}`,
      ...curlArgs,
      url,
    ], { check: false, timeoutMs: 60_000 });
    const status = await splitter.status;
    await splitter.stdout.cancel().catch(() => {});
    await splitter.stderr.cancel().catch(() => {});
    return {
      curlCode: out.code,
      stdout: out.stdout,
      stderr: out.stderr,
      splitterCode: status.code,
    };
  } catch (error) {
    try {
      splitter.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await splitter.status;
    throw error;
  }
}
