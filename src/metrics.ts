/**
 * A tiny, dependency-free metrics registry rendering the Prometheus text
 * exposition format 0.0.4, and {@linkcode ProxyMetrics}: the proxy's own
 * metrics behind intention-revealing methods.
 *
 * Hot-path updates are a few array/map lookups and an addition; strings are
 * built only when `/metrics` is scraped. Label values on the hot path come
 * from closed sets (unknown denial reasons are counted as `other`), so a
 * client can never grow the number of series.
 *
 * @module
 */

/** Content type of {@linkcode Registry.render} output. */
export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Escapes a label value: backslash, double quote and line feed, as the format requires. */
export function escapeLabelValue(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === "\\" ? "\\\\" : c === '"' ? '\\"' : "\\n"));
}

/** Escapes HELP text: backslash and line feed (quotes stay as they are there). */
export function escapeHelp(text: string): string {
  return text.replace(/[\\\n]/g, (c) => (c === "\\" ? "\\\\" : "\\n"));
}

/** Formats a sample value: integers and floats as JS prints them, plus `+Inf`, `-Inf`, `NaN`. */
export function formatSampleValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function checkMetricName(name: string): void {
  if (!METRIC_NAME.test(name)) throw new TypeError(`invalid metric name ${JSON.stringify(name)}`);
}

function checkLabelNames(names: readonly string[]): void {
  for (const n of names) {
    if (!LABEL_NAME.test(n) || n.startsWith("__")) {
      throw new TypeError(`invalid label name ${JSON.stringify(n)}`);
    }
  }
  if (new Set(names).size !== names.length) {
    throw new TypeError(`duplicate label name in ${JSON.stringify(names)}`);
  }
}

function labelText(names: readonly string[], values: readonly string[], extra = ""): string {
  const parts = names.map((n, i) => `${n}="${escapeLabelValue(values[i])}"`);
  if (extra !== "") parts.push(extra);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

/** Anything a {@linkcode Registry} can render. */
export interface Metric {
  /** Metric family name. */
  readonly name: string;
  /** Appends this family's HELP, TYPE and sample lines. */
  renderInto(out: string[]): void;
}

/** One labelled series of a {@linkcode Counter}; keep a reference to update it without lookups. */
export class CounterChild {
  /** Current value. */
  value = 0;
  /** Adds `by` (default 1); negative or non-finite amounts are ignored, as counters only go up. */
  inc(by = 1): void {
    if (by >= 0 && by !== Infinity) this.value += by;
  }
}

/** A monotonically increasing counter, optionally with labels. */
export class Counter implements Metric {
  readonly #children = new Map<string, { values: readonly string[]; child: CounterChild }>();

  /** `labelNames` fixes the label set; every series gives a value for each. */
  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[] = [],
  ) {
    checkMetricName(name);
    checkLabelNames(labelNames);
    if (labelNames.length === 0) this.labels();
  }

  /**
   * The series for these label values (created at 0 on first use, so it is
   * exported even before it counts anything). Callers must keep values from a
   * closed set: each distinct combination is a series kept forever.
   */
  labels(...values: string[]): CounterChild {
    if (values.length !== this.labelNames.length) {
      throw new TypeError(
        `${this.name} takes ${this.labelNames.length} label values, got ${values.length}`,
      );
    }
    // NUL cannot be confused with a separator inside any value.
    const key = values.join("\u0000");
    let entry = this.#children.get(key);
    if (entry === undefined) {
      entry = { values: [...values], child: new CounterChild() };
      this.#children.set(key, entry);
    }
    return entry.child;
  }

  /** Increments the unlabelled series. */
  inc(by = 1): void {
    this.labels().inc(by);
  }

  /** Appends the exposition lines. */
  renderInto(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} counter`);
    for (const { values, child } of this.#children.values()) {
      out.push(
        `${this.name}${labelText(this.labelNames, values)} ${formatSampleValue(child.value)}`,
      );
    }
  }
}

/** A value that goes up and down, without labels. */
export class Gauge implements Metric {
  /** Current value. */
  value = 0;

  /** Creates the gauge at 0. */
  constructor(readonly name: string, readonly help: string) {
    checkMetricName(name);
  }

  /** Sets the value. */
  set(v: number): void {
    this.value = v;
  }

  /** Adds `by` (default 1). */
  inc(by = 1): void {
    this.value += by;
  }

  /** Subtracts `by` (default 1). */
  dec(by = 1): void {
    this.value -= by;
  }

  /** Appends the exposition lines. */
  renderInto(out: string[]): void {
    out.push(
      `# HELP ${this.name} ${escapeHelp(this.help)}`,
      `# TYPE ${this.name} gauge`,
      `${this.name} ${formatSampleValue(this.value)}`,
    );
  }
}

/** A histogram with fixed upper bounds, without labels. */
export class Histogram implements Metric {
  readonly #bounds: readonly number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** `buckets` are finite upper bounds in strictly increasing order; `+Inf` is implied. */
  constructor(readonly name: string, readonly help: string, buckets: readonly number[]) {
    checkMetricName(name);
    for (let i = 0; i < buckets.length; i++) {
      if (!Number.isFinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1])) {
        throw new TypeError(`${name}: buckets must be finite and strictly increasing`);
      }
    }
    this.#bounds = [...buckets];
    this.#counts = new Array(buckets.length + 1).fill(0);
  }

  /** Records one observation; NaN is ignored rather than poisoning `_sum`. */
  observe(v: number): void {
    if (Number.isNaN(v)) return;
    let i = 0;
    while (i < this.#bounds.length && v > this.#bounds[i]) i++;
    this.#counts[i]++;
    this.#sum += v;
    this.#count++;
  }

  /** Appends the exposition lines, with cumulative buckets. */
  renderInto(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} histogram`);
    let cumulative = 0;
    for (let i = 0; i < this.#bounds.length; i++) {
      cumulative += this.#counts[i];
      out.push(`${this.name}_bucket{le="${formatSampleValue(this.#bounds[i])}"} ${cumulative}`);
    }
    out.push(
      `${this.name}_bucket{le="+Inf"} ${this.#count}`,
      `${this.name}_sum ${formatSampleValue(this.#sum)}`,
      `${this.name}_count ${this.#count}`,
    );
  }
}

/**
 * An info metric: one series with value 1 whose labels carry the information
 * (build version, configuration hash). Rendered as a gauge, the 0.0.4 idiom.
 */
export class Info implements Metric {
  #labels: [string, string][] | null = null;

  /** Creates the metric with no series until {@linkcode Info.set} is called. */
  constructor(readonly name: string, readonly help: string) {
    checkMetricName(name);
  }

  /** Replaces the labels of the single series. */
  set(labels: Record<string, string>): void {
    const entries = Object.entries(labels);
    checkLabelNames(entries.map(([k]) => k));
    this.#labels = entries;
  }

  /** Appends the exposition lines. */
  renderInto(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} gauge`);
    if (this.#labels === null) return;
    const names = this.#labels.map(([k]) => k);
    const values = this.#labels.map(([, v]) => v);
    out.push(`${this.name}${labelText(names, values)} 1`);
  }
}

/** An ordered set of metrics rendered together. */
export class Registry {
  readonly #metrics: Metric[] = [];

  /** Adds `metric` and returns it; a second metric with the same name is a programming error. */
  register<M extends Metric>(metric: M): M {
    if (this.#metrics.some((m) => m.name === metric.name)) {
      throw new TypeError(`metric ${metric.name} is already registered`);
    }
    this.#metrics.push(metric);
    return metric;
  }

  /** The whole exposition, ending with a line feed. */
  render(): string {
    const out: string[] = [];
    for (const m of this.#metrics) m.renderInto(out);
    return out.join("\n") + "\n";
  }
}

/**
 * Denial reasons counted under their own name; anything else becomes `other`.
 * `none` is the reason of an ordinary allowed connection.
 */
export const KNOWN_REASONS: readonly string[] = Object.freeze([
  "none",
  "not_allowed",
  "no_host",
  "no_sni",
  "invalid_host",
  "malformed",
  "timeout",
  "not_redirected",
  "loop",
  "too_large",
  "ech",
  "dst_mismatch",
  "connect_failed",
  "too_many_connections",
  "per_source_limit",
  "draining",
  "other",
]);

/** Upper bounds (seconds) for the upstream connect histogram: 1 ms up to the default 10 s timeout. */
export const CONNECT_BUCKETS: readonly number[] = Object.freeze([
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
]);

/** Protocol label as passed by callers; both spellings used in the code base are accepted. */
export type Proto = "http" | "https" | "HTTP" | "HTTPS";

/** Decision label. */
export type DecisionLabel = "allowed" | "denied";

/** The threads that collect garbage once quiet: the main thread and the relay thread. */
export type CollectingThread = "main" | "relay";

/** Options for {@linkcode ProxyMetrics}. */
export interface ProxyMetricsOptions {
  /** Application version for `proxy_please_build_info`. */
  version?: string;
  /** Reason words counted by name (default {@linkcode KNOWN_REASONS}); others count as `other`. */
  reasons?: readonly string[];
  /** Process start time in Unix seconds (default: now). */
  startTimeSeconds?: number;
}

const PROTO_INDEX: Record<Proto, number> = { http: 0, HTTP: 0, https: 1, HTTPS: 1 };
const PROTO_LABEL = ["http", "https"] as const;
const DECISION_LABEL = ["allowed", "denied"] as const;

/**
 * The proxy's metrics. Method names say what happened; metric names follow
 * the issue: `proxy_please_connections_total{proto,decision,reason}`,
 * `proxy_please_active_connections`, `proxy_please_bytes_total{direction}`,
 * `proxy_please_upstream_connect_seconds`, `proxy_please_config_reloads_total{result}`,
 * `proxy_please_config_hash{hash}`, `proxy_please_build_info`.
 *
 * In audit mode a connection that enforce mode would deny is forwarded, so it
 * is counted with `decision="allowed"` and the reason it would have been
 * denied: `decision="allowed",reason!="none"` is the would-deny rate.
 */
export class ProxyMetrics {
  /** The underlying registry, should a caller want to add more metrics. */
  readonly registry = new Registry();
  readonly #connections: Counter;
  readonly #reasonIndex: Map<string, number>;
  readonly #reasonNames: readonly string[];
  readonly #otherIndex: number;
  /** Series cache indexed [proto][decision][reason]; filled lazily on first use. */
  readonly #cells: (CounterChild | undefined)[][][];
  readonly #active: Gauge;
  #activeSource: () => number = () => 0;
  readonly #up: CounterChild;
  readonly #down: CounterChild;
  readonly #connect: Histogram;
  readonly #onThread: CounterChild;
  readonly #collections: Record<CollectingThread, CounterChild>;
  readonly #reloadOk: CounterChild;
  readonly #reloadError: CounterChild;
  readonly #configHash: Info;
  readonly #rss: Gauge;
  readonly #heap: Gauge;

  /** Registers every metric; counters that matter at zero (reloads, bytes) exist from the start. */
  constructor(options: ProxyMetricsOptions = {}) {
    const r = this.registry;
    const reasons = [...new Set([...(options.reasons ?? KNOWN_REASONS), "none", "other"])];
    for (const reason of reasons) {
      if (!/^[a-z][a-z0-9_]*$/.test(reason)) {
        throw new TypeError(`reason ${JSON.stringify(reason)} is not a snake_case word`);
      }
    }
    this.#reasonNames = reasons;
    this.#reasonIndex = new Map(reasons.map((name, i) => [name, i]));
    this.#otherIndex = this.#reasonIndex.get("other")!;
    this.#cells = PROTO_LABEL.map(() => DECISION_LABEL.map(() => new Array(reasons.length)));

    this.#connections = r.register(
      new Counter(
        "proxy_please_connections_total",
        "Connections by protocol, decision and denial reason (none when allowed).",
        ["proto", "decision", "reason"],
      ),
    );
    this.#active = r.register(
      new Gauge("proxy_please_active_connections", "Connections currently being handled."),
    );
    const bytes = r.register(
      new Counter(
        "proxy_please_bytes_total",
        "Bytes relayed: upstream is client to server, downstream is server to client.",
        ["direction"],
      ),
    );
    this.#up = bytes.labels("upstream");
    this.#down = bytes.labels("downstream");
    this.#connect = r.register(
      new Histogram(
        "proxy_please_upstream_connect_seconds",
        "Time to establish the upstream TCP connection.",
        CONNECT_BUCKETS,
      ),
    );
    this.#onThread = r.register(
      new Counter(
        "proxy_please_thread_decisions_total",
        "Connections the relay thread allowed by itself, with no round trip to the main thread " +
          "(also counted in proxy_please_connections_total).",
      ),
    ).labels();
    const collections = r.register(
      new Counter(
        "proxy_please_idle_collections_total",
        "Garbage collections a thread ran once quiet (see src/idle_collect.ts).",
        ["thread"],
      ),
    );
    this.#collections = { main: collections.labels("main"), relay: collections.labels("relay") };
    const reloads = r.register(
      new Counter("proxy_please_config_reloads_total", "Configuration reloads by result.", [
        "result",
      ]),
    );
    this.#reloadOk = reloads.labels("ok");
    this.#reloadError = reloads.labels("error");
    this.#configHash = r.register(
      new Info("proxy_please_config_hash", "Hash of the configuration in effect, as a label."),
    );
    const build = r.register(
      new Info("proxy_please_build_info", "Build information: application and runtime versions."),
    );
    build.set({ version: options.version ?? "unknown", deno: Deno.version.deno });
    this.#rss = r.register(
      new Gauge("process_resident_memory_bytes", "Resident memory size in bytes."),
    );
    this.#heap = r.register(
      new Gauge("proxy_please_js_heap_used_bytes", "JavaScript heap in use, in bytes."),
    );
    const start = r.register(
      new Gauge("process_start_time_seconds", "Start time of the process since the Unix epoch."),
    );
    start.set(options.startTimeSeconds ?? Math.floor(Date.now() / 1000));
  }

  /**
   * Counts `count` decided connections (one by default). `reason` defaults to `none` (allowed);
   * a reason outside the known set is counted as `other`.
   */
  connection(proto: Proto, decision: DecisionLabel, reason = "none", count = 1): void {
    const p = PROTO_INDEX[proto];
    if (p === undefined) return; // unreachable for typed callers; never throw on the hot path
    const d = decision === "allowed" ? 0 : 1;
    const ri = this.#reasonIndex.get(reason) ?? this.#otherIndex;
    const row = this.#cells[p][d];
    let cell = row[ri];
    if (cell === undefined) {
      cell = this.#connections.labels(PROTO_LABEL[p], DECISION_LABEL[d], this.#reasonNames[ri]);
      row[ri] = cell;
    }
    cell.inc(count);
  }

  /**
   * Where the active-connections gauge reads its value when scraped: the shared connection
   * count, which also knows the connections another thread holds.
   */
  countActiveWith(source: () => number): void {
    this.#activeSource = source;
  }

  /** Adds relayed byte counts: `up` client to server, `down` server to client. */
  bytes(up: number, down: number): void {
    this.#up.inc(up);
    this.#down.inc(down);
  }

  /** Counts connections the relay thread allowed by itself (one by default). */
  decidedOnThread(count = 1): void {
    this.#onThread.inc(count);
  }

  /** Counts a garbage collection `thread` ran once quiet. */
  idleCollection(thread: CollectingThread): void {
    this.#collections[thread].value++;
  }

  /** Records how long an upstream connect took, in seconds. */
  connectSeconds(seconds: number): void {
    this.#connect.observe(seconds);
  }

  /** Counts a configuration reload attempt. */
  reload(ok: boolean): void {
    (ok ? this.#reloadOk : this.#reloadError).value++;
  }

  /** Publishes the hash of the configuration now in effect. */
  setConfigHash(hash: string): void {
    this.#configHash.set({ hash });
  }

  /** The current value of the active-connections gauge. */
  get active(): number {
    return this.#activeSource();
  }

  /** The exposition text for `/metrics`. */
  render(): string {
    // Memory is read when scraped, not tracked: it costs nothing between scrapes.
    const memory = Deno.memoryUsage();
    this.#rss.set(memory.rss);
    this.#heap.set(memory.heapUsed);
    this.#active.set(this.#activeSource());
    return this.registry.render();
  }
}
