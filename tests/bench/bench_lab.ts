/**
 * The lab as the benchmark needs it: the lab library's namespaces, PKI, servers and firewall
 * (prefix `ppbench-`, no proxy started), then benchmark content and limits on top: a large
 * download file and a 1/8 part file, nginx reloaded with room for thousands of idle
 * connections and no access log, and wide ephemeral port ranges in the client and router.
 * @module
 */

import { run } from "../lab/command.ts";
import { downLab, type Lab, upLab } from "../lab/lab.ts";
import { writeNetnsEtc } from "../lab/network.ts";
import { nginxConfig } from "../lab/servers.ts";
import { hostsFile } from "../lab/topology.ts";

/** The benchmark's namespace prefix. */
export const BENCH_PREFIX = "ppbench-";

/** Paths (URL) of the bulk files on the lab's server. */
export interface BenchFiles {
  /** The single-download file and its size. */
  bulkPath: string;
  bulkBytes: number;
  /** The file each of the parallel downloads fetches (1/8 of the bulk size). */
  partPath: string;
  partBytes: number;
}

/** The nginx configuration for benchmarking: the lab's, with more connections and no logging. */
export function benchNginxConfig(labConfig: string): string {
  return labConfig
    .replace("worker_connections 8192;", "worker_connections 16000;")
    .replace("worker_rlimit_nofile 16384;", "worker_rlimit_nofile 19000;")
    .replace(/access_log \S+server-access\.log lab;/, "access_log off;");
}

/** The lines of a hosts file that map names to IPv4 addresses. */
export function ipv4Only(hosts: string): string {
  return hosts.split("\n").filter((line) => line !== "" && !line.split(" ")[0].includes(":"))
    .join("\n") + "\n";
}

/** Writes a file of `bytes` random bytes (random: nothing on the path may compress it). */
async function randomFile(path: string, bytes: number): Promise<void> {
  const mib = bytes / (1024 * 1024);
  await run(["dd", "if=/dev/urandom", `of=${path}`, "bs=1M", `count=${mib}`, "status=none"], {
    timeoutMs: 120_000,
  });
  await Deno.chmod(path, 0o644);
}

/** Builds the benchmark lab; on failure nothing is left behind. */
export async function upBenchLab(
  bulkBytes: number,
  { prefix = BENCH_PREFIX, log = (line: string) => console.error(line) } = {},
): Promise<{ lab: Lab; files: BenchFiles }> {
  const lab = await upLab({ prefix, proxy: false, log });
  try {
    const t = lab.t;
    const dir = `${t.stateDir}/www/files`;
    const files: BenchFiles = {
      bulkPath: "/files/bulk.bin",
      bulkBytes,
      partPath: "/files/part.bin",
      partBytes: bulkBytes / 8,
    };
    log(`bench: writing ${bulkBytes / 2 ** 20} MiB of random content`);
    await randomFile(`${dir}/bulk.bin`, files.bulkBytes);
    await randomFile(`${dir}/part.bin`, files.partBytes);
    const conf = `${t.stateDir}/nginx.conf`;
    await Deno.writeTextFile(conf, benchNginxConfig(nginxConfig(t, lab.pki)));
    await run(["nginx", "-c", conf, "-p", t.stateDir, "-s", "reload"], { ns: t.ns.internet });
    // IPv4 only: every client (curl, wrk, Deno) then takes the same path through every system
    // (HAProxy recovers original destinations for IPv4 only), never a happy-eyeballs mix.
    await writeNetnsEtc(t.ns.client, "hosts", ipv4Only(hostsFile(t)));
    // Many short connections in a row: no waiting for ports held in TIME_WAIT.
    for (const ns of [t.ns.client, t.ns.router]) {
      await run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"], { ns });
      await run(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"], { ns });
    }
    // Give the reloaded nginx a moment to replace its worker.
    await new Promise((r) => setTimeout(r, 500));
    return { lab, files };
  } catch (error) {
    await lab.down().catch(() => {});
    throw error;
  }
}

/** Removes the benchmark lab. */
export function downBenchLab(prefix = BENCH_PREFIX): Promise<void> {
  return downLab(prefix);
}
