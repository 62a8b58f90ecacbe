import assert from "node:assert/strict";
import fc from "fast-check";
import {
  exposedGc,
  IDLE_COLLECT_DEFAULTS,
  IdleCollector,
  oldGenerationUsed,
  shouldCollect,
} from "../src/idle_collect.ts";

const KIB = 1024;
const { growthBytes, quietBytes, quietConnections, intervalMs } = IDLE_COLLECT_DEFAULTS;

/** A heap whose size the test sets; `gc` drops it to `live` and counts the calls. */
function fakeHeap(start: number) {
  const heap = { used: start, live: start, collections: 0 };
  const gc = () => {
    heap.collections++;
    heap.used = heap.live;
  };
  return { heap, collector: new IdleCollector(gc, () => heap.used) };
}

Deno.test("idle collect: only grown heaps of quiet threads are collected, and not too often", () => {
  fc.assert(
    fc.property(
      fc.nat(1 << 30),
      fc.integer({ min: -(1 << 20), max: 1 << 22 }),
      fc.integer({ min: -(1 << 20), max: 1 << 22 }),
      fc.integer({ min: 0, max: 4 * intervalMs }),
      fc.nat(4 * quietConnections),
      (afterLast, sinceLast, sincePrevious, sinceLastMs, connections) => {
        const used = afterLast + sinceLast;
        const heap = { used, previous: used - sincePrevious, afterLast, sinceLastMs, connections };
        assert.equal(
          shouldCollect(heap, IDLE_COLLECT_DEFAULTS),
          sinceLast >= growthBytes && sincePrevious < quietBytes &&
            connections <= quietConnections && sinceLastMs >= intervalMs,
        );
      },
    ),
  );
});

Deno.test("idle collect: a burst is collected once the heap holds still, and only once", () => {
  const { heap, collector } = fakeHeap(4096 * KIB);
  assert.equal(collector.enabled, true);
  assert.equal(collector.settled, true, "what the thread holds at start is not owed");
  let now = 1_000;
  let admitted = 7;
  assert.equal(collector.sample(now, admitted), undefined, "a first sample knows no rate");
  // Busy: the heap grows fast between samples.
  heap.used += 2048 * KIB;
  admitted += 500;
  assert.equal(collector.sample(now += 250, admitted), undefined);
  assert.equal(collector.settled, false, "owed, so a thread with nothing open must wake again");
  heap.live = heap.used - 1536 * KIB; // what a collection would leave
  heap.used += 8 * KIB;
  const collection = collector.sample(now += 250, admitted);
  assert.equal(heap.collections, 1);
  assert.equal(collection?.before, 4096 * KIB + 2056 * KIB);
  assert.equal(collector.sample(now += 250, admitted), undefined, "nothing owed any more");
  assert.equal(collection?.after, heap.live);
  assert.ok(collection !== undefined && collection.ms >= 0);
  assert.equal(collector.settled, true);
  // Quiet from then on: no collection without new growth, however often sampled.
  for (let i = 0; i < 100; i++) assert.equal(collector.sample(now += 250, admitted), undefined);
  heap.used += growthBytes - 1;
  assert.equal(
    collector.sample(now += 250, admitted),
    undefined,
    "grown, but less than the threshold",
  );
  assert.equal(collector.sample(now += 250, admitted), undefined);
  assert.equal(heap.collections, 1);
  assert.equal(collector.settled, true);
});

Deno.test("idle collect: connections coming in keep a thread busy, even if its heap looks still", () => {
  const { heap, collector } = fakeHeap(1024 * KIB);
  let now = 0;
  // The counter wraps at 2^32, as Admission's does.
  let admitted = 2 ** 32 - 2;
  collector.sample(now, admitted);
  heap.used += 4 * growthBytes;
  heap.live = heap.used - 2 * growthBytes;
  for (let i = 0; i < 100; i++) {
    // A young-generation collection just before each sample: the heap looks still.
    admitted = (admitted + quietConnections + 1) % 2 ** 32;
    assert.equal(collector.sample(now += 250, admitted), undefined);
  }
  assert.equal(heap.collections, 0);
  assert.equal(collector.settled, false);
  admitted = (admitted + quietConnections) % 2 ** 32;
  assert.notEqual(collector.sample(now += 250, admitted), undefined, "quiet enough now");
  assert.equal(heap.collections, 1);
});

Deno.test("idle collect: a thread that keeps growing slowly collects at most every intervalMs", () => {
  const { heap, collector } = fakeHeap(1024 * KIB);
  let now = 0;
  const admitted = 0;
  const times: number[] = [];
  for (let i = 0; i < 400; i++) {
    heap.used += quietBytes - 1; // quiet by each sample, but never done
    heap.live = heap.used - KIB;
    if (collector.sample(now += 250, admitted) !== undefined) times.push(now);
  }
  assert.ok(times.length >= 2, `${times.length} collections`);
  for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= intervalMs);
  assert.equal(heap.collections, times.length);
});

Deno.test("idle collect: live data that survives a collection is not collected again", () => {
  const { heap, collector } = fakeHeap(1024 * KIB);
  const admitted = 2 ** 32 - 1;
  // Ten thousand idle connections: the growth is live, the collection frees little.
  heap.used += 16 * growthBytes;
  heap.live = heap.used - 64 * KIB;
  collector.sample(intervalMs, admitted);
  assert.notEqual(collector.sample(intervalMs + 250, admitted), undefined);
  for (let i = 2; i < 100; i++) assert.equal(collector.sample(intervalMs * i, admitted), undefined);
  assert.equal(heap.collections, 1);
});

Deno.test("idle collect: without V8's gc nothing is sampled and nothing is owed", () => {
  let sampled = 0;
  const collector = new IdleCollector(undefined, () => ++sampled);
  const admitted = 0;
  assert.equal(collector.enabled, false);
  assert.equal(collector.sample(intervalMs, admitted), undefined);
  assert.equal(collector.settled, true);
  assert.equal(sampled, 0);
  // `deno test` runs without --expose-gc; the tasks that start the proxy pass it.
  assert.equal(exposedGc(), undefined);
});

Deno.test("idle collect: the old generation is part of the heap in use", () => {
  const old = oldGenerationUsed();
  assert.ok(old > 0);
  assert.ok(old <= Deno.memoryUsage().heapUsed, `${old} > ${Deno.memoryUsage().heapUsed}`);
});
