import assert from "node:assert/strict";
import { parseTcpdumpLine, routerHops, type Segment } from "./router_hops.ts";

const firstHops = (segments: Segment[], from: string, port: number) =>
  routerHops(segments, from, port).first;
const answerHops = (segments: Segment[], from: string, port: number) =>
  routerHops(segments, from, port).answer;

const CLIENT = "198.18.1.10";
const ROUTER = "198.19.0.1";
const SERVER = "198.19.0.10";

Deno.test("parseTcpdumpLine reads time, direction, ends, SYN and payload length", () => {
  assert.deepEqual(
    parseTcpdumpLine(
      `1796299949.436898 ppx-r0 In  IP ${CLIENT}.49416 > ${SERVER}.443: Flags [S], seq 811895115, win 64240, options [mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 10], length 0`,
    ),
    {
      at: 1796299949.436898,
      inbound: true,
      src: CLIENT,
      srcPort: 49416,
      dst: SERVER,
      dstPort: 443,
      syn: true,
      length: 0,
    },
  );
  // tcpdump names HTTP requests after the length; a SYN-ACK is not an opening SYN.
  const http = parseTcpdumpLine(
    `1.000002 ppx-r1 Out IP ${ROUTER}.40000 > ${SERVER}.80: Flags [P.], seq 1:79, ack 1, win 502, options [nop,nop,TS val 1 ecr 2], length 78: HTTP: GET / HTTP/1.1`,
  );
  assert.equal(http?.length, 78);
  assert.equal(http?.inbound, false);
  assert.equal(
    parseTcpdumpLine(`1.5 ppx-r0 Out IP ${SERVER}.443 > ${CLIENT}.49416: Flags [S.], length 0`)
      ?.syn,
    false,
  );
  assert.equal(parseTcpdumpLine("tcpdump: listening on any, link-type LINUX_SLL2"), null);
  assert.equal(
    parseTcpdumpLine(`1.0 ppx-r0 In  IP6 2001:db8::1.5 > 2001:db8::2.80: Flags [S]`),
    null,
  );
});

function seg(
  at: number,
  inbound: boolean,
  src: string,
  srcPort: number,
  length: number,
  syn = false,
): Segment {
  return { at, inbound, src, srcPort, dst: SERVER, dstPort: 443, syn, length };
}

/** A segment from the server's port: to the proxy's upstream socket (in) or to a client (out). */
function back(at: number, inbound: boolean, dst: string, dstPort: number, length: number): Segment {
  return { at, inbound, src: SERVER, srcPort: 443, dst, dstPort, syn: false, length };
}

Deno.test("routerHops: the first hop pairs each client's first data with the next upstream SYN, in time order", () => {
  const segments: Segment[] = [
    seg(10.0, true, CLIENT, 1001, 0, true), // client SYN: no data yet
    seg(10.001, true, CLIENT, 1001, 243), // ClientHello in
    seg(10.0012, false, ROUTER, 2001, 0, true), // upstream SYN
    seg(10.0013, false, ROUTER, 2001, 243), // ClientHello out: 300 us
    seg(10.002, true, CLIENT, 1001, 159), // later data counts for nothing
    seg(10.0021, false, ROUTER, 2001, 159),
    seg(10.01, true, CLIENT, 1002, 243),
    seg(10.0101, false, ROUTER, 2002, 0, true),
    seg(10.0106, false, ROUTER, 2002, 243), // 600 us
    seg(10.02, true, CLIENT, 1003, 243), // its upstream never carried data: not counted
    seg(10.0201, false, ROUTER, 2003, 0, true),
    seg(10.03, true, CLIENT, 1004, 243), // no upstream at all (the capture ended)
  ];
  assert.deepEqual(firstHops(segments, ROUTER, 443), [300, 600]);
  // The order of the lines does not matter, nor do other ports.
  const shuffled = [...segments].reverse().concat([{ ...segments[1], dstPort: 80 }]);
  assert.deepEqual(firstHops(shuffled, ROUTER, 443), [300, 600]);
  assert.deepEqual(firstHops(segments, "198.19.0.2", 443), []);
});

Deno.test("routerHops leaves out a client whose upstream SYN the capture missed, and no other", () => {
  const segments: Segment[] = [
    seg(20.0, true, CLIENT, 1001, 243), // its SYN was not captured
    seg(20.0003, false, ROUTER, 2001, 243),
    seg(20.01, true, CLIENT, 1002, 243),
    seg(20.0101, false, ROUTER, 2002, 0, true),
    seg(20.0104, false, ROUTER, 2002, 243), // 400 us
    seg(20.02, true, CLIENT, 1003, 243),
    seg(20.0201, false, ROUTER, 2003, 0, true),
    seg(20.0203, false, ROUTER, 2003, 243), // 300 us
  ];
  assert.deepEqual(firstHops(segments, ROUTER, 443), [400, 300]);
});

Deno.test("routerHops: the answer hop measures from the server's first data in to the first data out to its client", () => {
  const segments: Segment[] = [
    seg(30.0, true, CLIENT, 1001, 243),
    seg(30.0001, false, ROUTER, 2001, 0, true),
    back(30.00012, true, ROUTER, 2001, 0), // SYN-ACK: no data
    seg(30.0002, false, ROUTER, 2001, 243),
    back(30.0003, true, ROUTER, 2001, 1400), // ServerHello in
    back(30.00037, false, CLIENT, 1001, 1400), // out to its client: 70 us
    back(30.0004, true, ROUTER, 2001, 900), // later data counts for nothing
    back(30.00045, false, CLIENT, 1001, 900),
    seg(30.01, true, CLIENT, 1002, 243),
    seg(30.0101, false, ROUTER, 2002, 0, true),
    seg(30.0102, false, ROUTER, 2002, 243),
    back(30.0103, true, ROUTER, 2002, 1400),
    back(30.0105, false, CLIENT, 1001, 10), // another client's: not this one's
    back(30.0107, false, CLIENT, 1002, 1400), // 400 us
    seg(30.02, true, CLIENT, 1003, 243),
    seg(30.0201, false, ROUTER, 2003, 0, true),
    seg(30.0202, false, ROUTER, 2003, 243),
    back(30.0203, true, ROUTER, 2003, 1400), // never reached its client: not counted
  ];
  assert.deepEqual(answerHops(segments, ROUTER, 443), [70, 400]);
  assert.deepEqual(answerHops([...segments].reverse(), ROUTER, 443), [70, 400]);
  // The first hops of the same connections, from the same pairing.
  assert.deepEqual(firstHops(segments, ROUTER, 443), [200, 200, 200]);
});
