/**
 * Names and addresses of the lab's three network namespaces, derived from a name prefix.
 *
 * The prefix keeps concurrent users apart: `deno task lab` uses `pplab-` and the end-to-end
 * suite `ppe2e-`, so a lab left running with `--keep` does not collide with the tests.
 * Addresses come only from the documentation/benchmark ranges 198.18.0.0/15 and 2001:db8::/32;
 * they can repeat between prefixes because every lab has its own namespaces.
 * @module
 */

/** Default prefix for `deno task lab`. */
export const LAB_PREFIX = "pplab-";
/** Prefix used by the end-to-end suite. */
export const E2E_PREFIX = "ppe2e-";

/** Everything that names or addresses a piece of one lab. */
export interface Topology {
  prefix: string;
  /** Namespace names. */
  ns: { client: string; router: string; internet: string };
  /** veth interface names: client side, router towards client, router towards internet, internet side. */
  links: { client: string; routerLan: string; routerWan: string; internet: string };
  /** Addresses, without prefix length. */
  addr: {
    client4: string;
    client6: string;
    routerLan4: string;
    routerLan6: string;
    routerWan4: string;
    routerWan6: string;
    /** nginx with the real virtual hosts. */
    server4: string;
    server6: string;
    /** A server that must never be reached: every hit on it is a failure. */
    never4: string;
    never6: string;
    /** dnsmasq, which the router resolves through. */
    dns4: string;
    dns6: string;
    /**
     * The half-close server (port 80): answers only after the client's FIN, then sends a
     * 64 MiB body (nginx aborts a response when the client half-closes, so it cannot).
     */
    halfClose4: string;
    halfClose6: string;
  };
  /** The LAN (client) subnets, with prefix length. */
  lan: { v4: string; v6: string };
  /** The proxy's listening ports inside the router. */
  ports: { http: number; https: number };
  /** A TCP port on the servers that the firewall does not redirect. */
  unredirectedPort: number;
  /** Directory for configuration, certificates, logs and pid files of this lab. */
  stateDir: string;
}

/** Host names the lab's DNS, hosts files and certificates know, and where they point. */
export const LAB_HOSTS = {
  /** Allowed exactly. */
  allowed: "allowed.test",
  /** Allowed through `*.wild.test`. */
  wildOne: "www.wild.test",
  /** Two labels below the wildcard: not allowed. */
  wildTwo: "a.b.wild.test",
  /** The wildcard's apex: not allowed. */
  wildApex: "wild.test",
  /** Not on the allowlist; resolves to the never-reached server. */
  blocked: "blocked.test",
  /** Allowed through `*.wild.test`; resolves to the half-close server. */
  halfClose: "halfclose.wild.test",
} as const;

/** The allowlist the lab gives the proxy. */
export const LAB_ALLOWED_HOSTS = "allowed.test,*.wild.test";

/** Builds the topology for `prefix`; the prefix must leave room for interface names (<= 15 chars). */
export function topology(prefix: string = LAB_PREFIX, stateRoot = defaultStateRoot()): Topology {
  if (!/^[a-z0-9-]{1,11}$/.test(prefix)) {
    throw new Error(`lab prefix ${JSON.stringify(prefix)} must be 1-11 of [a-z0-9-]`);
  }
  return {
    prefix,
    ns: { client: `${prefix}client`, router: `${prefix}router`, internet: `${prefix}inet` },
    links: {
      client: `${prefix}c0`,
      routerLan: `${prefix}r0`,
      routerWan: `${prefix}r1`,
      internet: `${prefix}i0`,
    },
    addr: {
      client4: "198.18.1.10",
      client6: "2001:db8:1::10",
      routerLan4: "198.18.1.1",
      routerLan6: "2001:db8:1::1",
      routerWan4: "198.19.0.1",
      routerWan6: "2001:db8:2::1",
      server4: "198.19.0.10",
      server6: "2001:db8:2::10",
      never4: "198.19.0.66",
      never6: "2001:db8:2::66",
      dns4: "198.19.0.53",
      dns6: "2001:db8:2::53",
      halfClose4: "198.19.0.20",
      halfClose6: "2001:db8:2::20",
    },
    lan: { v4: "198.18.1.0/24", v6: "2001:db8:1::/64" },
    ports: { http: 8080, https: 8443 },
    unredirectedPort: 8081,
    stateDir: `${stateRoot}/${prefix.replace(/-+$/, "")}`,
  };
}

/** The repository root (two levels above this file). */
export function repoRoot(): string {
  return new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
}

/**
 * Where labs keep their state: `/var/tmp/proxy-please-lab` (or `PROXY_PLEASE_LAB_STATE`).
 * Not inside the checkout: nginx's workers, Squid and the unprivileged test users must reach
 * these files, and a checkout may sit under a directory they cannot enter (a 0700 /tmp).
 */
export function defaultStateRoot(): string {
  return Deno.env.get("PROXY_PLEASE_LAB_STATE") ?? "/var/tmp/proxy-please-lab";
}

/** Lines for an /etc/hosts file that points the lab names at the servers (IPv4 and IPv6). */
export function hostsFile(t: Topology): string {
  const lines = ["127.0.0.1 localhost", "::1 localhost"];
  for (
    const name of [LAB_HOSTS.allowed, LAB_HOSTS.wildOne, LAB_HOSTS.wildTwo, LAB_HOSTS.wildApex]
  ) {
    lines.push(`${t.addr.server4} ${name}`, `${t.addr.server6} ${name}`);
  }
  lines.push(`${t.addr.never4} ${LAB_HOSTS.blocked}`, `${t.addr.never6} ${LAB_HOSTS.blocked}`);
  lines.push(
    `${t.addr.halfClose4} ${LAB_HOSTS.halfClose}`,
    `${t.addr.halfClose6} ${LAB_HOSTS.halfClose}`,
  );
  return lines.join("\n") + "\n";
}
