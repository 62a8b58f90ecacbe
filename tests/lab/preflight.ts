/**
 * Checks that the lab can run here (root, network namespaces) and installs missing Debian
 * packages, saying what it does.
 *
 * The end-to-end suite must fail loudly on a machine that cannot run it rather than skip, so
 * these checks throw {@linkcode PreflightError} with a message that says what is missing.
 * @module
 */

import { haveCommand, run } from "./command.ts";

/** The lab cannot run on this machine; the message says why and what to do. */
export class PreflightError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PreflightError";
  }
}

/** Programs the lab runs, and the Debian package that provides each. */
export const REQUIRED_PROGRAMS: ReadonlyArray<{ program: string; pkg: string }> = [
  { program: "ip", pkg: "iproute2" },
  { program: "ss", pkg: "iproute2" },
  { program: "iptables", pkg: "iptables" },
  { program: "ip6tables", pkg: "iptables" },
  { program: "nginx", pkg: "nginx-light" },
  { program: "dnsmasq", pkg: "dnsmasq-base" },
  { program: "curl", pkg: "curl" },
  { program: "openssl", pkg: "openssl" },
  { program: "setsid", pkg: "util-linux" },
  { program: "sha256sum", pkg: "coreutils" },
];

/** Throws unless we are root; network namespaces and iptables need it. */
export function requireRoot(): void {
  if (Deno.uid() !== 0) {
    throw new PreflightError(
      "the lab needs root (it creates network namespaces and iptables rules); run it as root, " +
        "e.g. `sudo deno task lab` -- not skipping",
    );
  }
}

/** Installs the Debian packages for any missing program, printing a clear message first. */
export async function ensurePackages(log: (line: string) => void = console.error): Promise<void> {
  const missing = new Set<string>();
  for (const { program, pkg } of REQUIRED_PROGRAMS) {
    if (!(await haveCommand(program))) missing.add(pkg);
  }
  if (missing.size === 0) return;
  const pkgs = [...missing].sort();
  if (!(await haveCommand("apt-get"))) {
    throw new PreflightError(
      `missing programs from Debian packages ${pkgs.join(" ")}, and apt-get is not available ` +
        "to install them",
    );
  }
  log(`lab: installing missing Debian packages: ${pkgs.join(" ")} (apt-get install -y)`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update", "-q"], { env, timeoutMs: 300_000 });
  await run(["apt-get", "install", "-y", "-q", "--no-install-recommends", ...pkgs], {
    env,
    timeoutMs: 600_000,
  });
}

/** Throws unless a network namespace can be created and removed here. */
export async function requireNetns(probeName: string): Promise<void> {
  await run(["ip", "netns", "del", probeName], { check: false });
  const add = await run(["ip", "netns", "add", probeName], { check: false });
  await run(["ip", "netns", "del", probeName], { check: false });
  if (add.code !== 0) {
    throw new PreflightError(
      `cannot create network namespaces here (ip netns add: ${add.stderr.trim()}); ` +
        "the lab needs a kernel and container that allow them -- not skipping",
    );
  }
}

/** Runs every check: root, packages, namespaces. */
export async function preflight(prefix: string, log?: (line: string) => void): Promise<void> {
  requireRoot();
  await ensurePackages(log);
  await requireNetns(`${prefix}probe`);
}
