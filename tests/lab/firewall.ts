/**
 * Puts the production firewall rules into the lab's router namespace.
 *
 * When the project's own setup script (`systemd/proxy-please-firewall`) exists it is used, so
 * the lab tests exactly what production installs. Until then (or with `useScript: false`) an
 * equivalent minimal rule set is installed: nat PREROUTING REDIRECT of TCP 80/443 arriving on
 * the LAN link to the proxy's ports, and a default-deny FORWARD chain, IPv4 and IPv6.
 * Everything happens inside the router namespace; the root namespace is never touched.
 * @module
 */

import { run } from "./command.ts";
import { repoRoot, type Topology } from "./topology.ts";

/** Path of the project's firewall setup script in the working tree. */
export function firewallScriptPath(): string {
  return `${repoRoot()}/systemd/proxy-please-firewall`;
}

/** Which rule set was installed. */
export type FirewallSource = "script" | "lab-stand-in";

/** The env file the setup script reads for this lab (shared keys with the proxy). */
export function firewallEnvFile(t: Topology): string {
  return [
    `HTTP_PORT=${t.ports.http}`,
    `HTTPS_PORT=${t.ports.https}`,
    `LAN_INTERFACE=${t.links.routerLan}`,
  ].join("\n") + "\n";
}

/** Which rule set to use: the project's script when present (default), or the stand-in. */
export type FirewallChoice = "auto" | "stand-in";

/**
 * Installs the firewall rules in the router and says which rule set it used. The choice can
 * be forced with `PROXY_PLEASE_LAB_FIREWALL=stand-in` (to tell a script bug from a proxy bug).
 */
export async function applyFirewall(
  t: Topology,
  { choice = envChoice() }: { choice?: FirewallChoice } = {},
): Promise<FirewallSource> {
  const script = firewallScriptPath();
  const haveScript = await Deno.stat(script).then((s) => s.isFile, () => false);
  if (choice === "auto" && haveScript) {
    const envFile = `${t.stateDir}/proxy-please.env`;
    await Deno.writeTextFile(envFile, firewallEnvFile(t));
    // The state file lives with the lab, so removing the lab removes it too.
    const stateFile = `${t.stateDir}/firewall/state`;
    await run(["bash", script, "apply", "--env-file", envFile, "--state-file", stateFile], {
      ns: t.ns.router,
    });
    return "script";
  }
  await applyStandInRules(t);
  return "lab-stand-in";
}

function envChoice(): FirewallChoice {
  return Deno.env.get("PROXY_PLEASE_LAB_FIREWALL") === "stand-in" ? "stand-in" : "auto";
}

/**
 * The lab's own stand-in for the setup script, with the same effect: TCP 80/443 from the LAN
 * redirected to the proxy, UDP 443 answered with port-unreachable, nothing forwarded.
 */
async function applyStandInRules(t: Topology): Promise<void> {
  const lan = t.links.routerLan;
  const { http, https } = t.ports;
  for (
    const [tool, reject] of [["iptables", "icmp-port-unreachable"], [
      "ip6tables",
      "icmp6-port-unreachable",
    ]]
  ) {
    const rules = [
      `-t nat -A PREROUTING -m addrtype --dst-type LOCAL -j RETURN`,
      `-t nat -A PREROUTING -i ${lan} -p tcp --dport 80 -j REDIRECT --to-ports ${http}`,
      `-t nat -A PREROUTING -i ${lan} -p tcp --dport 443 -j REDIRECT --to-ports ${https}`,
      `-t nat -A PREROUTING -i ${lan} -p udp --dport 443 -j REDIRECT --to-ports 443`,
      `-A INPUT -i ${lan} -p udp --dport 443 -j REJECT --reject-with ${reject}`,
      `-P FORWARD DROP`,
    ];
    for (const rule of rules) await run([tool, "-w", ...rule.split(" ")], { ns: t.ns.router });
  }
  await run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"], { ns: t.ns.router });
  await run(["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0"], { ns: t.ns.router });
}

/** The router's current nat and filter rules (for `--keep` and for failure reports). */
export async function firewallRules(t: Topology): Promise<string> {
  const parts: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const out = await run([tool], { ns: t.ns.router, check: false });
    parts.push(`# ${tool}\n${out.stdout}`);
  }
  return parts.join("\n");
}
