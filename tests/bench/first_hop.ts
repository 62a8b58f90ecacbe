/**
 * A proxy's first hop, read off the wire in the router: from a client's first data segment
 * arriving (its request head or ClientHello) to the first data segment leaving on the upstream
 * connection the proxy opened for it. The hop holds the proxy's accept, read, decision and
 * upstream connect (the lab's round trip to the server, about 15 µs, the same for every
 * system), and none of the client's own time, which dominates the latency client's figures.
 *
 * Pure: parses `tcpdump -tt -n -i any` text lines (IPv4), pairs and measures.
 * @module
 */

/** One TCP segment as tcpdump printed it. */
export interface Segment {
  /** Seconds since the epoch. */
  at: number;
  inbound: boolean;
  src: string;
  srcPort: number;
  dstPort: number;
  /** A SYN without ACK: a connection being opened. */
  syn: boolean;
  /** Payload bytes. */
  length: number;
}

const LINE =
  /^(\d+\.\d+) \S+ (In|Out) +IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > \d+\.\d+\.\d+\.\d+\.(\d+): Flags \[([^\]]*)\].*?, length (\d+)/;

/** A segment from one line of `tcpdump -tt -n -i any` output; null for any other line. */
export function parseTcpdumpLine(line: string): Segment | null {
  const m = LINE.exec(line);
  if (m === null) return null;
  return {
    at: Number(m[1]),
    inbound: m[2] === "In",
    src: m[3],
    srcPort: Number(m[4]),
    dstPort: Number(m[5]),
    syn: m[6] === "S",
    length: Number(m[7]),
  };
}

/** Longest wait from a client's first data to its upstream SYN that still pairs them. */
const MAX_PAIRING_GAP_S = 0.005;

/**
 * First-hop delays in microseconds, one per client connection whose first data segment was
 * followed by an upstream connection (a SYN from `upstreamFrom` to `port`) that carried data.
 * Client connections are paired with upstream ones in time order: each takes the first upstream
 * SYN sent after its first data arrived, which is unambiguous while connections are further
 * apart than the hop (the benchmark opens one every 10 ms; a SYN more than 5 ms after a client's
 * data is not its own) and every one is allowed. Upstream connections that carried no data are not
 * counted. The lines may come in any order.
 */
export function firstHops(
  segments: readonly Segment[],
  upstreamFrom: string,
  port: number,
): number[] {
  const clientFirst = new Map<string, number>();
  const upstreams = new Map<string, { syn: number; data: number }>();
  for (const s of segments) {
    if (s.dstPort !== port) continue;
    const key = `${s.src}:${s.srcPort}`;
    if (s.inbound && s.src !== upstreamFrom) {
      if (s.length > 0) clientFirst.set(key, Math.min(s.at, clientFirst.get(key) ?? Infinity));
    } else if (!s.inbound && s.src === upstreamFrom) {
      const up = upstreams.get(key) ?? { syn: Infinity, data: Infinity };
      upstreams.set(key, up);
      if (s.syn) up.syn = Math.min(up.syn, s.at);
      else if (s.length > 0) up.data = Math.min(up.data, s.at);
    }
  }
  const clients = [...clientFirst.values()].sort((a, b) => a - b);
  // A port reused within the capture would merge two connections: not at one per 10 ms.
  const opened = [...upstreams.values()].filter((u) => u.syn !== Infinity)
    .sort((a, b) => a.syn - b.syn);
  const hops: number[] = [];
  let next = 0;
  for (const arrived of clients) {
    while (next < opened.length && opened[next].syn < arrived) next++;
    if (next === opened.length) break;
    // A SYN the capture missed would hand every later client its successor's: a client with no
    // SYN soon enough is left out, and the SYN stays for the next one.
    if (opened[next].syn - arrived > MAX_PAIRING_GAP_S) continue;
    const up = opened[next++];
    if (up.data !== Infinity) hops.push(Math.round((up.data - arrived) * 1e6));
  }
  return hops;
}
