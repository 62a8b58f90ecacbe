/**
 * Builds and removes the lab's namespaces and veth links.
 *
 * client (198.18.1.10, 2001:db8:1::10) -- router -- internet (198.19.0.0/24, 2001:db8:2::/64).
 * The veth pairs are created directly inside the namespaces, so nothing ever appears in the
 * root namespace, whose settings the lab never touches.
 * @module
 */

import { run, sleep, terminate } from "./command.ts";
import type { Topology } from "./topology.ts";

/** Namespaces of this lab that currently exist. */
export async function existingNamespaces(t: Topology): Promise<string[]> {
  const out = await run(["ip", "netns", "list"], { check: false });
  const present = new Set(out.stdout.split("\n").map((line) => line.split(" ")[0]));
  return Object.values(t.ns).filter((name) => present.has(name));
}

/** Kills every process inside the lab's namespaces (ours: nothing else runs there). */
export async function killNamespaceProcesses(t: Topology): Promise<void> {
  for (const ns of await existingNamespaces(t)) {
    const out = await run(["ip", "netns", "pids", ns], { check: false });
    const pids = out.stdout.split("\n").map((s) => Number.parseInt(s, 10)).filter((n) => n > 0);
    await Promise.all(pids.map((pid) => terminate(pid, 3_000)));
  }
}

/** Removes the namespaces, their /etc/netns entries, and every process inside them. */
export async function destroyNetwork(t: Topology): Promise<void> {
  await killNamespaceProcesses(t);
  for (const ns of Object.values(t.ns)) {
    await run(["ip", "netns", "del", ns], { check: false });
    await Deno.remove(`/etc/netns/${ns}`, { recursive: true }).catch(() => {});
  }
}

/** Creates the three namespaces, links, addresses and routes. */
export async function createNetwork(t: Topology, { routerForwarding = true } = {}): Promise<void> {
  const { ns, links, addr } = t;
  for (const name of Object.values(ns)) {
    await run(["ip", "netns", "add", name]);
    await run(["ip", "-n", name, "link", "set", "lo", "up"]);
  }
  await run([
    "ip",
    "-n",
    ns.router,
    "link",
    "add",
    links.routerLan,
    "type",
    "veth",
    "peer",
    "name",
    links.client,
    "netns",
    ns.client,
  ]);
  await run([
    "ip",
    "-n",
    ns.router,
    "link",
    "add",
    links.routerWan,
    "type",
    "veth",
    "peer",
    "name",
    links.internet,
    "netns",
    ns.internet,
  ]);

  const addrs: Array<[string, string, string]> = [
    [ns.client, links.client, `${addr.client4}/24`],
    [ns.client, links.client, `${addr.client6}/64`],
    [ns.router, links.routerLan, `${addr.routerLan4}/24`],
    [ns.router, links.routerLan, `${addr.routerLan6}/64`],
    [ns.router, links.routerWan, `${addr.routerWan4}/24`],
    [ns.router, links.routerWan, `${addr.routerWan6}/64`],
    [ns.internet, links.internet, `${addr.server4}/24`],
    [ns.internet, links.internet, `${addr.server6}/64`],
    [ns.internet, links.internet, `${addr.never4}/24`],
    [ns.internet, links.internet, `${addr.never6}/64`],
    [ns.internet, links.internet, `${addr.dns4}/24`],
    [ns.internet, links.internet, `${addr.dns6}/64`],
    [ns.internet, links.internet, `${addr.halfClose4}/24`],
    [ns.internet, links.internet, `${addr.halfClose6}/64`],
  ];
  for (const [n, dev, cidr] of addrs) {
    // nodad: the address is usable at once instead of after duplicate address detection.
    const extra = cidr.includes(":") ? ["nodad"] : [];
    await run(["ip", "-n", n, "addr", "add", cidr, "dev", dev, ...extra]);
  }
  for (
    const [n, dev] of [
      [ns.client, links.client],
      [ns.router, links.routerLan],
      [ns.router, links.routerWan],
      [ns.internet, links.internet],
    ]
  ) {
    await run(["ip", "-n", n, "link", "set", dev, "up"]);
  }
  await run(["ip", "-n", ns.client, "route", "add", "default", "via", addr.routerLan4]);
  await run(["ip", "-n", ns.client, "-6", "route", "add", "default", "via", addr.routerLan6]);
  // The internet knows the way back to the LAN only through the router, as on a real network;
  // whether the router forwards anything is for its firewall to decide.
  await run(["ip", "-n", ns.internet, "route", "add", t.lan.v4, "via", addr.routerWan4]);
  await run(["ip", "-n", ns.internet, "-6", "route", "add", t.lan.v6, "via", addr.routerWan6]);
  const forward = routerForwarding ? "1" : "0";
  await run(["sysctl", "-q", "-w", `net.ipv4.ip_forward=${forward}`], { ns: ns.router });
  await run(["sysctl", "-q", "-w", `net.ipv6.conf.all.forwarding=${forward}`], { ns: ns.router });
  await waitForLinks(t);
}

/** Waits (bounded) until no IPv6 address in the lab is still tentative (link-locals do DAD). */
async function waitForLinks(t: Topology): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (const ns of Object.values(t.ns)) {
    while (true) {
      const out = await run(["ip", "-n", ns, "-6", "addr", "show"]);
      if (!out.stdout.includes("tentative")) break;
      if (Date.now() > deadline) {
        throw new Error(`lab network not up: tentative addresses in ${ns}`);
      }
      await sleep(50);
    }
  }
}

/** Writes `/etc/netns/<ns>/<file>`, which `ip netns exec` mounts over `/etc/<file>`. */
export async function writeNetnsEtc(ns: string, file: string, text: string): Promise<void> {
  await Deno.mkdir(`/etc/netns/${ns}`, { recursive: true });
  await Deno.writeTextFile(`/etc/netns/${ns}/${file}`, text);
}
