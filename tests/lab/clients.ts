/**
 * Real clients run from the lab's client namespace: curl, openssl s_client, and the small
 * Deno client scripts under `tests/lab/clients/` and `tests/e2e/clients/`.
 *
 * Each returns what the client saw, reduced to the facts tests assert on.
 * @module
 */

import { run } from "./command.ts";
import type { Lab } from "./lab.ts";

/** What curl saw. */
export interface CurlResult {
  /** curl's exit status (0 = a response came back). */
  exit: number;
  /** HTTP status, 0 when there was no response. */
  status: number;
  body: string;
  /** The client's source port, to find the proxy's log line for this very connection. */
  localPort: number | undefined;
  /** curl's error message, if any. */
  error: string;
}

const MARK = "\n--lab-curl-write-out--";

/** Options for {@linkcode curl}. */
export interface CurlOptions {
  /** Force IPv4 or IPv6. */
  family?: 4 | 6;
  /** Extra curl arguments. */
  args?: string[];
  /** curl's own overall deadline in seconds (default 10). */
  maxTime?: number;
}

/** Runs curl in the client namespace, trusting the lab CA. */
export async function curl(lab: Lab, url: string, options: CurlOptions = {}): Promise<CurlResult> {
  const maxTime = options.maxTime ?? 10;
  const argv = [
    "curl",
    "--silent",
    "--show-error",
    "--cacert",
    lab.pki.caCert,
    "--max-time",
    String(maxTime),
    "--connect-timeout",
    String(Math.min(maxTime, 5)),
    "--write-out",
    `${MARK}%{http_code} %{local_port}`,
    ...(options.family ? [`-${options.family}`] : []),
    ...(options.args ?? []),
    url,
  ];
  const out = await lab.client(argv, { check: false, timeoutMs: (maxTime + 10) * 1000 });
  const at = out.stdout.lastIndexOf(MARK);
  const body = at >= 0 ? out.stdout.slice(0, at) : out.stdout;
  const [status, port] = at >= 0 ? out.stdout.slice(at + MARK.length).trim().split(" ") : [];
  const localPort = Number(port);
  return {
    exit: out.code,
    status: Number(status) || 0,
    body,
    localPort: localPort > 0 ? localPort : undefined,
    error: out.stderr.trim(),
  };
}

/** A short human description of a curl result, e.g. `200 "hello from allowed.test"`. */
export function describeCurl(r: CurlResult): string {
  if (r.status > 0) {
    const body = r.body.trim().slice(0, 40);
    return `${r.status}${body ? ` ${JSON.stringify(body)}` : ""}`;
  }
  const reason = r.error.replace(/^curl: \(\d+\) /, "").split("\n")[0].slice(0, 60);
  return `no response (curl exit ${r.exit}${reason ? `: ${reason}` : ""})`;
}

/** What openssl s_client saw. */
export interface TlsResult {
  /** True when the handshake completed and the certificate verified against the lab CA. */
  handshake: boolean;
  /** The negotiated protocol, e.g. `TLSv1.3`, when there was one. */
  protocol: string | undefined;
  detail: string;
}

/** Runs `openssl s_client` in the client namespace (no SNI when `servername` is null). */
export async function sClient(
  lab: Lab,
  connect: string,
  servername: string | null,
): Promise<TlsResult> {
  const argv = [
    "openssl",
    "s_client",
    "-connect",
    connect,
    "-CAfile",
    lab.pki.caCert,
    "-verify_return_error",
    ...(servername === null ? ["-noservername"] : ["-servername", servername]),
    ...(servername === null ? [] : ["-verify_hostname", servername]),
    "-brief",
  ];
  // Empty stdin: s_client ends after the handshake (or its failure).
  const out = await lab.client(argv, { check: false, stdin: "", timeoutMs: 15_000 });
  const text = `${out.stdout}\n${out.stderr}`;
  const protocol = /Protocol version: (\S+)/.exec(text)?.[1];
  const verified = /Verification: OK/.test(text);
  const handshake = out.code === 0 && protocol !== undefined && verified;
  const firstError = text.split("\n").find((l) => /error|errno|fail/i.test(l))?.trim() ?? "";
  return {
    handshake,
    protocol,
    detail: handshake
      ? `handshake ok (${protocol}, certificate verified)`
      : `no handshake${firstError ? ` (${firstError.slice(0, 60)})` : ""}`,
  };
}

/** Path of a client script shipped with the lab or the e2e suite. */
export function clientScript(name: string): string {
  return new URL(`../${name}`, import.meta.url).pathname;
}

/** Runs a Deno client script in the client namespace and returns its stdout (trimmed). */
export async function denoClient(
  lab: Lab,
  script: string,
  args: string[],
  { timeoutMs = 30_000, stdin }: { timeoutMs?: number; stdin?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await run(
    [Deno.execPath(), "run", "--allow-all", "--unstable-net", "--quiet", script, ...args],
    { ns: lab.t.ns.client, check: false, timeoutMs, stdin },
  );
  return { code: out.code, stdout: out.stdout.trim(), stderr: out.stderr.trim() };
}
