/**
 * The "internet" namespace's real servers: nginx (HTTP and HTTPS virtual hosts, plus a server
 * that must never be reached), dnsmasq, a UDP listener on port 443, and a server that honours
 * half-close (`clients/half_close_server.ts`, for what nginx cannot show).
 *
 * Configuration text is built by pure functions so it can be read and tested apart from the
 * processes; every server writes its pid and log into the lab's state directory.
 * @module
 */

import { run, spawnDetached } from "./command.ts";
import type { Pki } from "./pki.ts";
import { LAB_HOSTS, repoRoot, type Topology } from "./topology.ts";

/** Size of the download test file: 64 MiB. */
export const BIG_FILE_BYTES = 64 * 1024 * 1024;

/** Paths of files the servers write that tests read. */
export interface ServerFiles {
  /** nginx access log of the real virtual hosts. */
  serverLog: string;
  /** nginx access log of the never-reached server; must stay empty. */
  neverLog: string;
  /** One line per datagram that reached the UDP 443 listener; must stay empty. */
  udpLog: string;
  /** JSON lines of the half-close server (see `clients/half_close_server.ts`). */
  halfCloseLog: string;
  /** The 64 MiB random file on disk; the half-close server sends it as its answer's body. */
  bigFile: string;
  /** URL path of the 64 MiB random file, and its sha256 (hex). */
  bigPath: string;
  bigSha256: string;
}

/** The nginx configuration for a lab. */
export function nginxConfig(t: Topology, pki: Pki): string {
  const s = t.stateDir;
  const { server4, server6, never4, never6 } = t.addr;
  const listen = (a: string, port: number, ssl: boolean) =>
    `    listen ${a.includes(":") ? `[${a}]` : a}:${port}${ssl ? " ssl" : ""};`;
  return `worker_processes 1;
worker_rlimit_nofile 16384;
pid ${s}/nginx.pid;
error_log ${s}/nginx-error.log warn;
events { worker_connections 8192; }
http {
  default_type application/octet-stream;
  log_format lab '$server_addr:$server_port host=$host "$request" $status $body_bytes_sent';
  client_body_temp_path ${s}/nginx-tmp/body;
  proxy_temp_path ${s}/nginx-tmp/proxy;
  fastcgi_temp_path ${s}/nginx-tmp/fastcgi;
  uwsgi_temp_path ${s}/nginx-tmp/uwsgi;
  scgi_temp_path ${s}/nginx-tmp/scgi;
  ssl_certificate ${pki.serverCert};
  ssl_certificate_key ${pki.serverKey};
  # nginx 1.22 leaves TLS 1.3 out by default; clients must get what browsers get.
  ssl_protocols TLSv1.2 TLSv1.3;
  keepalive_requests 10000;
  sendfile on;
  server {
${listen(server4, 80, false)}
${listen(server6, 80, false)}
${listen(server4, 443, true)}
${listen(server6, 443, true)}
    server_name ${LAB_HOSTS.allowed} ${LAB_HOSTS.wildOne} ${LAB_HOSTS.wildTwo} ${LAB_HOSTS.wildApex};
    access_log ${s}/server-access.log lab;
    location = / { default_type text/plain; return 200 "hello from $host\\n"; }
    location /files/ { alias ${s}/www/files/; }
  }
  server {
${listen(never4, 80, false)}
${listen(never6, 80, false)}
${listen(never4, 443, true)}
${listen(never6, 443, true)}
${listen(server4, t.unredirectedPort, false)}
${listen(server6, t.unredirectedPort, false)}
    server_name _;
    access_log ${s}/never-access.log lab;
    location / { default_type text/plain; return 200 "never-reached server: this must not happen\\n"; }
  }
}
`;
}

/** dnsmasq arguments: answers the lab names (A and AAAA) and nothing else. */
export function dnsmasqArgs(t: Topology): string[] {
  const { server4, server6, never4, never6, dns4, dns6, halfClose4, halfClose6 } = t.addr;
  return [
    "dnsmasq",
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--bind-interfaces",
    `--listen-address=${dns4}`,
    `--listen-address=${dns6}`,
    "--pid-file=",
    "--log-queries",
    "--log-facility=-",
    `--host-record=${LAB_HOSTS.blocked},${never4},${never6}`,
    // A host record wins over the --address for wild.test below, which would otherwise answer.
    `--host-record=${LAB_HOSTS.halfClose},${halfClose4},${halfClose6}`,
    // Each matches the name and every name below it (the captured ClientHellos in
    // tests/testdata use names under allowed.test).
    `--address=/${LAB_HOSTS.allowed}/${server4}`,
    `--address=/${LAB_HOSTS.allowed}/${server6}`,
    `--address=/${LAB_HOSTS.wildApex}/${server4}`,
    `--address=/${LAB_HOSTS.wildApex}/${server6}`,
  ];
}

/** Writes configuration and content (a 64 MiB random file), then starts every server. */
export async function startServers(t: Topology, pki: Pki): Promise<ServerFiles> {
  const s = t.stateDir;
  for (const dir of ["nginx-tmp", "www/files"]) {
    await Deno.mkdir(`${s}/${dir}`, { recursive: true });
  }
  const bigFile = `${s}/www/files/big.bin`;
  await run(["sh", "-c", `head -c ${BIG_FILE_BYTES} /dev/urandom > "$1"`, "sh", bigFile]);
  await Deno.chmod(bigFile, 0o644);
  const sum = await run(["sha256sum", bigFile]);
  const files: ServerFiles = {
    serverLog: `${s}/server-access.log`,
    neverLog: `${s}/never-access.log`,
    udpLog: `${s}/udp443.log`,
    halfCloseLog: `${s}/half-close.log`,
    bigFile,
    bigPath: "/files/big.bin",
    bigSha256: sum.stdout.split(" ")[0],
  };
  for (const f of [files.serverLog, files.neverLog, files.udpLog, files.halfCloseLog]) {
    await Deno.writeTextFile(f, "");
  }

  await Deno.writeTextFile(`${s}/nginx.conf`, nginxConfig(t, pki));
  // nginx daemonizes itself and writes its own pid file.
  await run(["nginx", "-c", `${s}/nginx.conf`, "-p", s], { ns: t.ns.internet });
  await spawnDetached(dnsmasqArgs(t), {
    ns: t.ns.internet,
    logFile: `${s}/dnsmasq.log`,
    pidFile: `${s}/dnsmasq.pid`,
  });
  await spawnDetached(
    [
      Deno.execPath(),
      "run",
      "--allow-all",
      // Deno.listenDatagram is still behind this flag.
      "--unstable-net",
      `${repoRoot()}/tests/lab/clients/udp_sink.ts`,
      files.udpLog,
      `${t.addr.server4}:443`,
      `[${t.addr.server6}]:443`,
      `${t.addr.never4}:443`,
    ],
    { ns: t.ns.internet, logFile: `${s}/udp-sink.out`, pidFile: `${s}/udp-sink.pid` },
  );
  await spawnDetached(
    [
      Deno.execPath(),
      "run",
      "--allow-all",
      `${repoRoot()}/tests/lab/clients/half_close_server.ts`,
      files.halfCloseLog,
      bigFile,
      `${t.addr.halfClose4}:80`,
      `[${t.addr.halfClose6}]:80`,
    ],
    { ns: t.ns.internet, logFile: `${s}/half-close.out`, pidFile: `${s}/half-close.pid` },
  );
  await waitForListeners(t, [
    ["tcp", `${t.addr.server4}:443`],
    ["tcp", `[${t.addr.never6}]:80`],
    ["udp", `${t.addr.dns4}:53`],
    ["udp", `${t.addr.server4}:443`],
    ["tcp", `${t.addr.halfClose4}:80`],
    ["tcp", `[${t.addr.halfClose6}]:80`],
  ]);
  return files;
}

/** Waits (bounded) until each (protocol, address:port) is listening in the internet namespace. */
async function waitForListeners(t: Topology, want: Array<["tcp" | "udp", string]>): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (const [proto, local] of want) {
    while (true) {
      const out = await run(["ss", "-Hln", proto === "tcp" ? "-t" : "-u"], { ns: t.ns.internet });
      if (out.stdout.split(/\s+/).includes(local)) break;
      if (Date.now() > deadline) {
        throw new Error(`server not listening on ${proto} ${local} in ${t.ns.internet}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** Lines in a server log file (empty lines dropped). */
export async function logLines(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path).catch(() => "");
  return text.split("\n").filter((line) => line !== "");
}

/**
 * The log's lines once it has at least `atLeast` of them, or what it has after `timeoutMs`:
 * a server logs a request just after answering it, so a fast client can look first.
 */
export async function logLinesWhen(
  path: string,
  atLeast: number,
  timeoutMs = 3_000,
): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const lines = await logLines(path);
    if (lines.length >= atLeast || Date.now() > deadline) return lines;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
