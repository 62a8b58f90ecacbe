/**
 * Captures real TLS ClientHellos from local clients (openssl, curl, Python,
 * Deno, headless Chromium) on a loopback listener and writes them, with an
 * index, to `tests/testdata/client_hellos/`.
 *
 * The listener records every byte a client sends until the client falls
 * silent (it waits for a ServerHello that never comes), so the end of a
 * capture does not depend on the parser under test. Only 127.0.0.1 is used.
 *
 * Run: `deno run --allow-all tests/testdata/capture_client_hellos.ts [name...]`
 *
 * @module
 */

import {
  handshakeBytes,
  hex16,
  keyShareGroups,
  listExtensions,
  splitRecords,
} from "../tls_records.ts";

const OUT_DIR = new URL("./client_hellos/", import.meta.url);
const INDEX = new URL("./client_hellos.json", import.meta.url);
const MAX_BYTES = 65536;
const SILENCE_MS = 1500;
const ACCEPT_TIMEOUT_MS = 20_000;
const CAPTURE_TIMEOUT_MS = 15_000;
const X25519MLKEM768 = 0x11ec;

/** One client to capture, and what it was told to send. */
type ClientSpec = {
  name: string;
  client: string;
  description: string;
  serverName: string | null;
  alpn: string[];
  command: (port: number) => string[];
};

/** One entry of `client_hellos.json`. */
type IndexEntry = {
  file: string;
  client: string;
  clientVersion: string;
  description: string;
  serverName: string | null;
  alpn: string[];
  /** An encrypted_client_hello (0xfe0d) extension is present (Chromium sends GREASE ECH). */
  ech: boolean;
  bytes: number;
  records: number;
  tcpReads: number;
  keyShareGroups: string[];
  postQuantumKeyShare: boolean;
};

const python = `
import socket, ssl, sys
host, port, alpn = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
if alpn:
    ctx.set_alpn_protocols(alpn.split(","))
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
try:
    ctx.wrap_socket(sock, server_hostname=host)
except Exception:
    pass
`;

const denoClient = `
const [host, port, alpn] = Deno.args;
const tcp = await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
try {
  const tls = await Deno.startTls(tcp, { hostname: host, alpnProtocols: alpn ? alpn.split(",") : undefined });
  await tls.handshake();
} catch { /* the capture server closes without answering */ }
`;

const tempDirs: string[] = [];

const chromiumFlags = (port: number) => [
  "chromium",
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  `--user-data-dir=${tempDir()}`,
  "--host-resolver-rules=MAP * 127.0.0.1",
  `https://www.allowed.test:${port}/`,
];

function tempDir(): string {
  const dir = Deno.makeTempDirSync({ prefix: "pptls-chromium-" });
  tempDirs.push(dir);
  return dir;
}

const opensslClient = (extra: string[]) => (port: number) => [
  "openssl",
  "s_client",
  "-connect",
  `127.0.0.1:${port}`,
  ...extra,
];

const CLIENTS: ClientSpec[] = [
  {
    name: "openssl_tls13",
    client: "openssl",
    description: "openssl s_client, TLS 1.3 default, no ALPN",
    serverName: "www.allowed.test",
    alpn: [],
    command: opensslClient(["-servername", "www.allowed.test"]),
  },
  {
    name: "openssl_tls13_alpn",
    client: "openssl",
    description: "openssl s_client, TLS 1.3 default, -alpn h2,http/1.1",
    serverName: "api.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: opensslClient(["-servername", "api.allowed.test", "-alpn", "h2,http/1.1"]),
  },
  {
    name: "openssl_tls12_alpn",
    client: "openssl",
    description: "openssl s_client -tls1_2 -alpn h2,http/1.1",
    serverName: "old.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: opensslClient(["-tls1_2", "-servername", "old.allowed.test", "-alpn", "h2,http/1.1"]),
  },
  {
    name: "openssl_no_sni",
    client: "openssl",
    description: "openssl s_client -noservername (no server_name extension)",
    serverName: null,
    alpn: [],
    command: opensslClient(["-noservername"]),
  },
  {
    name: "curl",
    client: "curl",
    description: "curl --resolve name:port:127.0.0.1 https://curl.allowed.test:port/",
    serverName: "curl.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: (port) => [
      "curl",
      "-sS",
      "--max-time",
      "10",
      "--resolve",
      `curl.allowed.test:${port}:127.0.0.1`,
      `https://curl.allowed.test:${port}/`,
    ],
  },
  {
    name: "curl_http11",
    client: "curl",
    description: "curl --http1.1 (ALPN http/1.1 only)",
    serverName: "curl11.allowed.test",
    alpn: ["http/1.1"],
    command: (port) => [
      "curl",
      "-sS",
      "--http1.1",
      "--max-time",
      "10",
      "--resolve",
      `curl11.allowed.test:${port}:127.0.0.1`,
      `https://curl11.allowed.test:${port}/`,
    ],
  },
  {
    name: "python_ssl",
    client: "python",
    description: "Python ssl.create_default_context().wrap_socket, no ALPN",
    serverName: "py.allowed.test",
    alpn: [],
    command: (port) => ["python3", "-c", python, "py.allowed.test", String(port), ""],
  },
  {
    name: "python_ssl_alpn",
    client: "python",
    description: "Python ssl with set_alpn_protocols(['h2', 'http/1.1'])",
    serverName: "py2.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: (port) => ["python3", "-c", python, "py2.allowed.test", String(port), "h2,http/1.1"],
  },
  {
    name: "deno_tls",
    client: "deno",
    description: "Deno.startTls over Deno.connect (rustls), alpnProtocols h2,http/1.1",
    serverName: "deno.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: (port) => [
      Deno.execPath(),
      "eval",
      denoClient,
      "deno.allowed.test",
      String(port),
      "h2,http/1.1",
    ],
  },
  {
    name: "chromium",
    client: "chromium",
    description: "headless Chromium, https://www.allowed.test:port/ (X25519MLKEM768 key share)",
    serverName: "www.allowed.test",
    alpn: ["h2", "http/1.1"],
    command: chromiumFlags,
  },
];

async function clientVersion(client: string): Promise<string> {
  const argv: Record<string, string[]> = {
    openssl: ["openssl", "version"],
    curl: ["curl", "--version"],
    python: ["python3", "-c", "import ssl,sys; print(sys.version.split()[0], ssl.OPENSSL_VERSION)"],
    chromium: ["chromium", "--version"],
  };
  if (client === "deno") return `Deno ${Deno.version.deno}`;
  const [cmd, ...args] = argv[client];
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
  return new TextDecoder().decode(out.stdout).split("\n")[0].trim();
}

/** Reads from `conn` until it is silent for SILENCE_MS, closes, or hits a bound. */
async function readUntilSilent(conn: Deno.Conn): Promise<{ bytes: Uint8Array; reads: number }> {
  const chunks: Uint8Array[] = [];
  let total = 0;
  let reads = 0;
  const deadline = Date.now() + CAPTURE_TIMEOUT_MS;
  while (total < MAX_BYTES && Date.now() < deadline) {
    const buffer = new Uint8Array(MAX_BYTES - total);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const silence = new Promise<"silent">((resolve) => {
      timer = setTimeout(() => resolve("silent"), SILENCE_MS);
    });
    const read = conn.read(buffer);
    const result = await Promise.race([read, silence]);
    clearTimeout(timer);
    if (result === "silent") {
      conn.close();
      await read.catch(() => null);
      return { bytes: join(chunks, total), reads };
    }
    if (result === null) break;
    chunks.push(buffer.slice(0, result));
    total += result;
    reads++;
  }
  conn.close();
  return { bytes: join(chunks, total), reads };
}

function join(chunks: Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

async function capture(spec: ClientSpec): Promise<IndexEntry> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  const [cmd, ...args] = spec.command(port);
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), ACCEPT_TIMEOUT_MS);
    });
    const conn = await Promise.race([listener.accept(), timeout]);
    clearTimeout(timer);
    if (conn === null) throw new Error(`${spec.name}: no connection within ${ACCEPT_TIMEOUT_MS}ms`);
    const { bytes, reads } = await readUntilSilent(conn);
    const records = splitRecords(bytes);
    if (records.some((r) => r.type !== 22)) throw new Error(`${spec.name}: non-handshake record`);
    const handshake = handshakeBytes(bytes);
    const groups = keyShareGroups(handshake);
    const file = `client_hellos/${spec.name}.bin`;
    await Deno.writeFile(new URL(`${spec.name}.bin`, OUT_DIR), bytes);
    return {
      file,
      client: spec.client,
      clientVersion: await clientVersion(spec.client),
      description: spec.description,
      serverName: spec.serverName,
      alpn: spec.alpn,
      ech: listExtensions(handshake).some((e) => e.type === 0xfe0d),
      bytes: bytes.length,
      records: records.length,
      tcpReads: reads,
      keyShareGroups: groups.map(hex16),
      postQuantumKeyShare: groups.includes(X25519MLKEM768),
    };
  } finally {
    listener.close();
    try {
      child.kill("SIGTERM");
    } catch {
      // Already exited.
    }
    await child.status;
  }
}

/**
 * Chromium's helper processes can outlive the browser process for a moment:
 * wait for every process whose command line names `dir` (a unique temp dir
 * of ours) to exit, killing stragglers by pid after a grace period.
 */
async function killUsers(dir: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const pids: number[] = [];
    for (const entry of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(entry.name)) continue;
      try {
        if (Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).includes(dir)) {
          pids.push(Number(entry.name));
        }
      } catch {
        // The process exited while we looked.
      }
    }
    if (pids.length === 0) return;
    if (attempt >= 30) {
      for (const pid of pids) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function main(): Promise<void> {
  await Deno.mkdir(OUT_DIR, { recursive: true });
  const only = new Set(Deno.args);
  let index: IndexEntry[] = [];
  try {
    index = JSON.parse(await Deno.readTextFile(INDEX));
  } catch {
    // First run: no index yet.
  }
  for (const spec of CLIENTS) {
    if (only.size > 0 && !only.has(spec.name)) continue;
    let entry: IndexEntry;
    try {
      entry = await capture(spec);
    } finally {
      for (const dir of tempDirs.splice(0)) {
        await killUsers(dir);
        await Deno.remove(dir, { recursive: true });
      }
    }
    index = index.filter((e) => e.file !== entry.file);
    index.push(entry);
    console.log(
      `${spec.name}: ${entry.bytes} bytes, ${entry.records} record(s), ${entry.tcpReads} read(s), ` +
        `groups ${entry.keyShareGroups.join(",")}`,
    );
  }
  const order = CLIENTS.map((c) => `client_hellos/${c.name}.bin`);
  index.sort((a, b) => order.indexOf(a.file) - order.indexOf(b.file));
  await Deno.writeTextFile(INDEX, JSON.stringify(index, null, 2) + "\n");
}

if (import.meta.main) await main();
