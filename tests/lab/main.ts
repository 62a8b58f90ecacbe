/**
 * `deno task lab`: builds the lab (client, router with the proxy, internet with real servers),
 * plays a short script of real clients, prints what was expected and what happened, and exits
 * 0 only when everything matched.
 *
 *     deno task lab           build, run the script, tear down
 *     deno task lab --keep    build, run the script, leave it running for manual tries
 *     deno task lab --down    remove a lab left running
 *
 * Needs root and network namespaces; installs missing Debian packages itself.
 * @module
 */

import { firewallRules } from "./firewall.ts";
import { downLab, type Lab, upLab } from "./lab.ts";
import { PreflightError } from "./preflight.ts";
import { runLabScript } from "./scenario.ts";
import { renderTable } from "./table.ts";
import { LAB_HOSTS, LAB_PREFIX } from "./topology.ts";

const USAGE = `usage: deno task lab [--keep | --down] [--prefix NAME-]

  (no flag)  build the lab, run the client script, print the table, tear down
  --keep     leave the lab running afterwards and print how to use it
  --down     remove a lab left running (namespaces, processes, files)
  --prefix   namespace/interface name prefix (default ${LAB_PREFIX})`;

/** Parsed command line. */
interface Args {
  mode: "run" | "keep" | "down";
  prefix: string;
}

/** Parses the command line; an error value names the bad argument. */
export function parseArgs(argv: readonly string[]): Args | { error: string } {
  const args: Args = { mode: "run", prefix: LAB_PREFIX };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--keep") args.mode = "keep";
    else if (a === "--down") args.mode = "down";
    else if (a === "--prefix" && i + 1 < argv.length) args.prefix = argv[++i];
    else if (a.startsWith("--prefix=")) args.prefix = a.slice("--prefix=".length);
    else if (a === "--help" || a === "-h") return { error: "" };
    else return { error: `unknown argument ${JSON.stringify(a)}` };
  }
  return args;
}

function keepInstructions(lab: Lab): string {
  const { ns, addr, stateDir } = lab.t;
  const ca = lab.pki.caCert;
  const rows: Array<[string, string]> = [
    [`ip netns exec ${ns.client} bash`, "a shell on the client subnet; then for example:"],
    [`  curl --cacert ${ca} https://${LAB_HOSTS.allowed}/`, "allowed"],
    [`  curl http://${LAB_HOSTS.blocked}/`, "denied (403 from the proxy)"],
    [`  curl -6 --cacert ${ca} https://${LAB_HOSTS.wildOne}/`, "allowed by *.wild.test, IPv6"],
    [`tail -f ${stateDir}/proxy.log`, "the proxy's decisions (JSON lines)"],
    [`ip netns exec ${ns.router} iptables -t nat -S`, "the router's redirect rules"],
    [`ip netns exec ${ns.router} bash`, "the router, where the proxy runs"],
    [
      `ip netns exec ${ns.internet} bash`,
      `the servers: ${addr.server4}, never-reached ${addr.never4}, DNS ${addr.dns4}, ` +
      `half-close ${addr.halfClose4}`,
    ],
  ];
  const width = Math.max(...rows.map(([cmd]) => cmd.length));
  const down = `deno task lab --down${
    lab.t.prefix === LAB_PREFIX ? "" : ` --prefix ${lab.t.prefix}`
  }`;
  return [
    "",
    `The lab is running (prefix ${lab.t.prefix}). Try it by hand:`,
    "",
    ...rows.map(([cmd, what]) => `  ${cmd.padEnd(width)}  # ${what}`),
    "",
    `Remove it with: ${down}`,
    "",
  ].join("\n");
}

async function main(): Promise<number> {
  const args = parseArgs(Deno.args);
  if ("error" in args) {
    console.error(args.error ? `lab: ${args.error}\n${USAGE}` : USAGE);
    return args.error ? 2 : 0;
  }
  if (args.mode === "down") {
    await downLab(args.prefix);
    console.error(`lab: removed every ${args.prefix}* namespace, process and file`);
    return 0;
  }
  let lab: Lab | undefined;
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    console.error("lab: interrupted, removing the lab");
    (lab ? lab.down() : downLab(args.prefix)).finally(() => Deno.exit(130));
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    lab = await upLab({ prefix: args.prefix });
    const rows = await runLabScript(lab);
    console.log("");
    console.log(renderTable(rows, { color: Deno.stdout.isTerminal() }));
    const ok = rows.every((r) => r.ok);
    if (!ok) {
      console.log(`\nrouter firewall rules (${lab.firewall}):\n${await firewallRules(lab.t)}`);
    }
    if (args.mode === "keep") console.log(keepInstructions(lab));
    return ok ? 0 : 1;
  } catch (error) {
    if (error instanceof PreflightError) {
      console.error(`lab: ${error.message}`);
      return 1;
    }
    console.error(`lab: ${error instanceof Error ? error.stack ?? error.message : error}`);
    return 1;
  } finally {
    if (!interrupted && args.mode !== "keep") {
      await (lab ? lab.down() : downLab(args.prefix)).catch((e) =>
        console.error(`lab: cleanup failed: ${e}`)
      );
    }
  }
}

if (import.meta.main) Deno.exit(await main());
