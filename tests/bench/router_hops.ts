/**
 * A proxy's two hops, read off the wire in the router. The first: from a client's first data
 * segment arriving (its request head or ClientHello) to the first data segment leaving on the
 * upstream connection the proxy opened for it; it holds the proxy's accept, read, decision and
 * upstream connect (the lab's round trip to the server, about 15 µs, the same for every
 * system), and none of the client's own time, which dominates the latency client's figures.
 * The answer hop: from the server's first data arriving on that upstream connection to the
 * first data leaving to the client, the relay of the answer's start.
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
  dst: string;
  dstPort: number;
  /** A SYN without ACK: a connection being opened. */
  syn: boolean;
  /** Payload bytes. */
  length: number;
}

const LINE =
  /^(\d+\.\d+) \S+ (In|Out) +IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): Flags \[([^\]]*)\].*?, length (\d+)/;

/** A segment from one line of `tcpdump -tt -n -i any` output; null for any other line. */
export function parseTcpdumpLine(line: string): Segment | null {
  const m = LINE.exec(line);
  if (m === null) return null;
  return {
    at: Number(m[1]),
    inbound: m[2] === "In",
    src: m[3],
    srcPort: Number(m[4]),
    dst: m[5],
    dstPort: Number(m[6]),
    syn: m[7] === "S",
    length: Number(m[8]),
  };
}

/** Longest wait from a client's first data to its upstream SYN that still pairs them. */
const MAX_PAIRING_GAP_S = 0.005;

/** A client connection and the upstream one the proxy opened for it, as seen on the wire. */
interface Pair {
  /** The client's first data in. */
  requestIn: number;
  /** The first data out upstream (Infinity: none). */
  requestOut: number;
  /** The server's first data in on the upstream connection (Infinity: none). */
  answerIn: number;
  /** The first data out to the client from `answerIn` on (Infinity: none). */
  answerOut: number;
}

interface Upstream {
  syn: number;
  data: number;
  answer: number;
}

/**
 * Client connections paired with the upstream ones opened for them, in time order: each takes
 * the first upstream SYN (from `upstreamFrom` to `port`) sent after its first data arrived, which
 * is unambiguous while connections are further apart than the hop (the benchmark opens one every
 * 10 ms; a SYN more than 5 ms after a client's data is not its own, and the client is left out)
 * and every one is allowed. The lines may come in any order.
 */
function pairs(segments: readonly Segment[], upstreamFrom: string, port: number): Pair[] {
  const clientFirst = new Map<string, number>();
  const upstreams = new Map<string, Upstream>();
  const upstream = (key: string) => {
    let up = upstreams.get(key);
    if (up === undefined) {
      upstreams.set(key, up = { syn: Infinity, data: Infinity, answer: Infinity });
    }
    return up;
  };
  // Data out to each client, in time order once sorted.
  const toClient = new Map<string, number[]>();
  for (const s of segments) {
    if (s.dstPort === port) {
      const key = `${s.src}:${s.srcPort}`;
      if (s.inbound && s.src !== upstreamFrom) {
        if (s.length > 0) clientFirst.set(key, Math.min(s.at, clientFirst.get(key) ?? Infinity));
      } else if (!s.inbound && s.src === upstreamFrom) {
        const up = upstream(key);
        if (s.syn) up.syn = Math.min(up.syn, s.at);
        else if (s.length > 0) up.data = Math.min(up.data, s.at);
      }
    } else if (s.srcPort === port && s.length > 0) {
      const key = `${s.dst}:${s.dstPort}`;
      if (s.inbound && s.dst === upstreamFrom) {
        const up = upstream(key);
        up.answer = Math.min(up.answer, s.at);
      } else if (!s.inbound && s.dst !== upstreamFrom) {
        const sent = toClient.get(key);
        if (sent === undefined) toClient.set(key, [s.at]);
        else sent.push(s.at);
      }
    }
  }
  const clients = [...clientFirst].sort((a, b) => a[1] - b[1]);
  // A port reused within the capture would merge two connections: not at one per 10 ms.
  const opened = [...upstreams.values()].filter((u) => u.syn !== Infinity)
    .sort((a, b) => a.syn - b.syn);
  const out: Pair[] = [];
  let next = 0;
  for (const [key, arrived] of clients) {
    while (next < opened.length && opened[next].syn < arrived) next++;
    if (next === opened.length) break;
    // A SYN the capture missed would hand every later client its successor's: a client with no
    // SYN soon enough is left out, and the SYN stays for the next one.
    if (opened[next].syn - arrived > MAX_PAIRING_GAP_S) continue;
    const up = opened[next++];
    const answerOut = (toClient.get(key) ?? []).filter((at) => at >= up.answer)
      .reduce((a, b) => Math.min(a, b), Infinity);
    out.push({ requestIn: arrived, requestOut: up.data, answerIn: up.answer, answerOut });
  }
  return out;
}

/** A capture's hop delays in microseconds, from one pairing of its connections (see above). */
export interface RouterHops {
  /** One per client connection whose upstream connection carried data. */
  first: number[];
  /** One per client connection whose server answered and whose answer reached it. */
  answer: number[];
}

/** Both hops of every paired connection in `segments`. */
export function routerHops(
  segments: readonly Segment[],
  upstreamFrom: string,
  port: number,
): RouterHops {
  const paired = pairs(segments, upstreamFrom, port);
  const delays = (from: (p: Pair) => number, to: (p: Pair) => number) =>
    paired.filter((p) => to(p) !== Infinity).map((p) => Math.round((to(p) - from(p)) * 1e6));
  return {
    first: delays((p) => p.requestIn, (p) => p.requestOut),
    answer: delays((p) => p.answerIn, (p) => p.answerOut),
  };
}
