/**
 * A small Prometheus registry for the elector: counters, gauges and histograms with labels,
 * default labels on every series, and the text exposition format 0.0.4 (`# HELP`, `# TYPE`,
 * escaped label values), plus the Node.js process metrics prom-client's
 * `collectDefaultMetrics` exports, under the same names, types and labels.
 *
 * Why not prom-client: the elector is a sidecar in every opted-in pod, and importing
 * prom-client costs a Node 24 process ~21 MiB of RSS (README "Measured figures"); the
 * elector needs a dozen series. The webhook keeps prom-client.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, PerformanceObserver, constants as perf } from 'node:perf_hooks';
import { getHeapSpaceStatistics } from 'node:v8';

type Labels<L extends string> = Partial<Record<L, string | number>>;

/** The content type of the text format. */
export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** `\`, newline and `"` escaped, as the text format wants label values. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

/** `\` and newline escaped, as the text format wants HELP text. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** A sample value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`). */
function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

function labelText(pairs: [string, string | number][]): string {
  if (pairs.length === 0) return '';
  return `{${pairs.map(([k, v]) => `${k}="${escapeLabelValue(String(v))}"`).join(',')}}`;
}

interface MetricOptions<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** Called before each exposition, to set values read from elsewhere. */
  collect?: () => void | Promise<void>;
}

type MetricType = 'counter' | 'gauge' | 'histogram';

abstract class Metric<L extends string> {
  readonly name: string;
  readonly help: string;
  abstract readonly type: MetricType;
  protected readonly labelNames: readonly L[];
  readonly #collect: (() => void | Promise<void>) | undefined;

  constructor(options: MetricOptions<L>) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(options.name))
      throw new Error(`invalid metric name ${options.name}`);
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames ?? [];
    this.#collect = options.collect;
  }

  /** The key of a label set, checking that only declared labels are used. */
  protected key(labels: Labels<L> = {}): string {
    for (const k of Object.keys(labels)) {
      if (!this.labelNames.includes(k as L)) throw new Error(`${this.name}: unknown label ${k}`);
    }
    return JSON.stringify(this.labelNames.map((n) => (labels[n] === undefined ? null : String(labels[n]))));
  }

  protected pairs(key: string): [string, string][] {
    const values = JSON.parse(key) as (string | null)[];
    return this.labelNames.flatMap((n, i) =>
      values[i] === null ? [] : [[n, values[i]!] as [string, string]],
    );
  }

  /** The family's lines: HELP, TYPE, then samples; `defaults` are appended to every label set. */
  async expose(defaults: [string, string][]): Promise<string> {
    await this.#collect?.();
    const head = `# HELP ${this.name} ${escapeHelp(this.help)}\n# TYPE ${this.name} ${this.type}\n`;
    return head + this.samples(defaults).join('');
  }

  protected abstract samples(defaults: [string, string][]): string[];
}

/** Values by label set, for counters and gauges. */
abstract class Scalar<L extends string> extends Metric<L> {
  protected readonly values = new Map<string, number>();

  constructor(options: MetricOptions<L>) {
    super(options);
    // Without labels there is one series from the start, as prom-client has it.
    if (this.labelNames.length === 0) this.values.set(this.key(), 0);
  }

  protected samples(defaults: [string, string][]): string[] {
    return [...this.values].map(
      ([key, v]) => `${this.name}${labelText([...this.pairs(key), ...defaults])} ${formatValue(v)}\n`,
    );
  }

  /** Drops every series (for label sets that come and go, like handle types). */
  reset(): void {
    this.values.clear();
    if (this.labelNames.length === 0) this.values.set(this.key(), 0);
  }
}

export class Counter<L extends string = never> extends Scalar<L> {
  readonly type = 'counter';

  /** Adds `value` (default 1; 0 creates the series) to the label set's count. */
  inc(labels?: Labels<L> | number, value = 1): void {
    if (typeof labels === 'number') [labels, value] = [undefined, labels];
    if (!(value >= 0)) throw new Error(`${this.name}: a counter cannot decrease (${value})`);
    const key = this.key(labels);
    this.values.set(key, (this.values.get(key) ?? 0) + value);
  }

  /** Sets the count (for totals read from elsewhere, like CPU time). */
  protected setTotal(value: number): void {
    this.values.set(this.key(), value);
  }
}

export class Gauge<L extends string = never> extends Scalar<L> {
  readonly type = 'gauge';

  set(labels: Labels<L> | number, value?: number): void {
    if (typeof labels === 'number') this.values.set(this.key(), labels);
    else this.values.set(this.key(labels), value ?? 0);
  }
}

export class Histogram<L extends string = never> extends Metric<L> {
  readonly type = 'histogram';
  readonly #buckets: number[];
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(options: MetricOptions<L> & { buckets: readonly number[] }) {
    super(options);
    this.#buckets = [...options.buckets].sort((a, b) => a - b);
  }

  observe(labels: Labels<L> | number, value?: number): void {
    if (typeof labels === 'number') [labels, value] = [{}, labels];
    const v = value ?? 0;
    const key = this.key(labels);
    let s = this.#series.get(key);
    if (!s) this.#series.set(key, (s = { counts: this.#buckets.map(() => 0), sum: 0, count: 0 }));
    for (const [i, le] of this.#buckets.entries()) if (v <= le) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }

  protected samples(defaults: [string, string][]): string[] {
    const out: string[] = [];
    for (const [key, s] of this.#series) {
      const pairs = [...this.pairs(key), ...defaults];
      for (const [i, le] of this.#buckets.entries())
        out.push(`${this.name}_bucket${labelText([...pairs, ['le', formatValue(le)]])} ${s.counts[i]}\n`);
      out.push(`${this.name}_bucket${labelText([...pairs, ['le', '+Inf']])} ${s.count}\n`);
      out.push(`${this.name}_sum${labelText(pairs)} ${formatValue(s.sum)}\n`);
      out.push(`${this.name}_count${labelText(pairs)} ${s.count}\n`);
    }
    return out;
  }
}

/** The metrics of one process, exposed together. */
export class Registry {
  readonly contentType = CONTENT_TYPE;
  readonly #metrics: Metric<string>[] = [];
  #defaults: [string, string][] = [];

  /** Labels added to every series, e.g. `{ election }`. */
  setDefaultLabels(labels: Record<string, string>): void {
    this.#defaults = Object.entries(labels);
  }

  register<M extends Metric<string>>(metric: M): M {
    if (this.#metrics.some((m) => m.name === metric.name))
      throw new Error(`${metric.name} is already registered`);
    this.#metrics.push(metric);
    return metric;
  }

  /** Every family in the text format, a blank line between families (as prom-client writes). */
  async metrics(): Promise<string> {
    const families: string[] = [];
    for (const m of this.#metrics) families.push(await m.expose(this.#defaults));
    return families.join('\n');
  }

  /** Names and types, as prom-client's `getMetricsAsJSON` gives them (tests read these). */
  getMetricsAsJSON(): { name: string; type: MetricType; help: string }[] {
    return this.#metrics.map((m) => ({ name: m.name, type: m.type, help: m.help }));
  }
}

/** A counter whose total is read from elsewhere at each exposition. */
class TotalCounter extends Counter {
  constructor(name: string, help: string, read: () => number) {
    super({ name, help, collect: () => this.setTotal(read()) });
  }
}

function procStatus(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const m of readFileSync('/proc/self/status', 'utf8').matchAll(/^(Vm\w+):\s+(\d+) kB$/gm))
      out[m[1]!] = Number(m[2]) * 1024;
  } catch {
    // not Linux
  }
  return out;
}

function maxFds(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

const GC_KINDS: Record<number, string> = {
  [perf.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perf.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perf.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perf.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};

/**
 * prom-client's default metrics (process_*, nodejs_*), same names, help, types and labels.
 * The event-loop delay histogram samples once per `eventLoopSampleMs` (prom-client's option
 * `eventLoopMonitoringPrecision`), and is reset after each exposition as prom-client does.
 */
export function registerProcessMetrics(registry: Registry, options: { eventLoopSampleMs: number }): void {
  const r = <M extends Metric<string>>(m: M) => registry.register(m);
  const cpu = () => process.cpuUsage();
  r(
    new TotalCounter(
      'process_cpu_user_seconds_total',
      'Total user CPU time spent in seconds.',
      () => cpu().user / 1e6,
    ),
  );
  r(
    new TotalCounter(
      'process_cpu_system_seconds_total',
      'Total system CPU time spent in seconds.',
      () => cpu().system / 1e6,
    ),
  );
  r(
    new TotalCounter('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', () => {
      const c = cpu();
      return (c.user + c.system) / 1e6;
    }),
  );
  const startTime = Math.round(Date.now() / 1000 - process.uptime());
  const gauge = (name: string, help: string, read: () => number | undefined | Promise<number>) => {
    const g: Gauge = r(
      new Gauge({
        name,
        help,
        collect: async () => {
          const v = await read();
          if (v !== undefined) g.set(v);
        },
      }),
    );
  };
  gauge(
    'process_start_time_seconds',
    'Start time of the process since unix epoch in seconds.',
    () => startTime,
  );
  // One read of /proc/self/status serves the three figures of one exposition.
  let status: Record<string, number> = {};
  gauge('process_resident_memory_bytes', 'Resident memory size in bytes.', () => {
    status = procStatus();
    return status['VmRSS'] ?? process.memoryUsage.rss();
  });
  gauge('process_virtual_memory_bytes', 'Virtual memory size in bytes.', () => status['VmSize']);
  gauge('process_heap_bytes', 'Process heap size in bytes.', () => status['VmData']);
  gauge('process_open_fds', 'Number of open file descriptors.', () => {
    try {
      return readdirSync('/proc/self/fd').length - 1; // minus the one readdir opened
    } catch {
      return undefined;
    }
  });
  const max = maxFds();
  gauge('process_max_fds', 'Maximum number of open file descriptors.', () => max);

  const delay = monitorEventLoopDelay({ resolution: options.eventLoopSampleMs });
  delay.enable();
  // prom-client's figure: how long a setImmediate callback waits, now.
  gauge('nodejs_eventloop_lag_seconds', 'Lag of event loop in seconds.', async () => {
    const start = process.hrtime.bigint();
    await new Promise((resolve) => setImmediate(resolve));
    return Number(process.hrtime.bigint() - start) / 1e9;
  });
  const fromDelay = (name: string, help: string, read: () => number) => gauge(name, help, () => read() / 1e9);
  fromDelay('nodejs_eventloop_lag_min_seconds', 'The minimum recorded event loop delay.', () => delay.min);
  fromDelay('nodejs_eventloop_lag_max_seconds', 'The maximum recorded event loop delay.', () => delay.max);
  fromDelay(
    'nodejs_eventloop_lag_mean_seconds',
    'The mean of the recorded event loop delays.',
    () => delay.mean,
  );
  fromDelay(
    'nodejs_eventloop_lag_stddev_seconds',
    'The standard deviation of the recorded event loop delays.',
    () => delay.stddev,
  );
  fromDelay(
    'nodejs_eventloop_lag_p50_seconds',
    'The 50th percentile of the recorded event loop delays.',
    () => delay.percentile(50),
  );
  fromDelay(
    'nodejs_eventloop_lag_p90_seconds',
    'The 90th percentile of the recorded event loop delays.',
    () => delay.percentile(90),
  );
  fromDelay(
    'nodejs_eventloop_lag_p99_seconds',
    'The 99th percentile of the recorded event loop delays.',
    () => {
      const v = delay.percentile(99);
      delay.reset(); // the last of the family: the next exposition covers the next interval
      return v;
    },
  );

  const grouped = (name: string, help: string, list: () => string[]) => {
    const g: Gauge<'type'> = r(
      new Gauge<'type'>({
        name,
        help,
        labelNames: ['type'],
        collect: () => {
          g.reset();
          const counts = new Map<string, number>();
          for (const t of list()) counts.set(t, (counts.get(t) ?? 0) + 1);
          for (const [type, n] of counts) g.set({ type }, n);
        },
      }),
    );
  };
  const internals = process as unknown as {
    _getActiveHandles?: () => object[];
    _getActiveRequests?: () => object[];
  };
  const names = (objects: object[] | undefined) =>
    (objects ?? []).map((o) => o?.constructor?.name ?? 'Unknown');
  grouped(
    'nodejs_active_resources',
    'Number of active resources that are currently keeping the event loop alive, grouped by async resource type.',
    () => process.getActiveResourcesInfo(),
  );
  gauge(
    'nodejs_active_resources_total',
    'Total number of active resources.',
    () => process.getActiveResourcesInfo().length,
  );
  grouped(
    'nodejs_active_handles',
    'Number of active libuv handles grouped by handle type. Every handle type is C++ class name.',
    () => names(internals._getActiveHandles?.()),
  );
  gauge(
    'nodejs_active_handles_total',
    'Total number of active handles.',
    () => internals._getActiveHandles?.().length,
  );
  grouped(
    'nodejs_active_requests',
    'Number of active libuv requests grouped by request type. Every request type is C++ class name.',
    () => names(internals._getActiveRequests?.()),
  );
  gauge(
    'nodejs_active_requests_total',
    'Total number of active requests.',
    () => internals._getActiveRequests?.().length,
  );

  let memory = process.memoryUsage();
  gauge('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', () => {
    memory = process.memoryUsage();
    return memory.heapTotal;
  });
  gauge(
    'nodejs_heap_size_used_bytes',
    'Process heap size used from Node.js in bytes.',
    () => memory.heapUsed,
  );
  gauge('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', () => memory.external);
  const spaces = (
    name: string,
    help: string,
    pick: (s: ReturnType<typeof getHeapSpaceStatistics>[number]) => number,
  ) => {
    const g: Gauge<'space'> = r(
      new Gauge<'space'>({
        name,
        help,
        labelNames: ['space'],
        collect: () => {
          for (const s of getHeapSpaceStatistics())
            g.set({ space: s.space_name.replace(/_space$/, '') }, pick(s));
        },
      }),
    );
  };
  spaces(
    'nodejs_heap_space_size_total_bytes',
    'Process heap space size total from Node.js in bytes.',
    (s) => s.space_size,
  );
  spaces(
    'nodejs_heap_space_size_used_bytes',
    'Process heap space size used from Node.js in bytes.',
    (s) => s.space_used_size,
  );
  spaces(
    'nodejs_heap_space_size_available_bytes',
    'Process heap space size available from Node.js in bytes.',
    (s) => s.space_available_size,
  );
  const version = r(
    new Gauge<'version' | 'major' | 'minor' | 'patch'>({
      name: 'nodejs_version_info',
      help: 'Node.js version info.',
      labelNames: ['version', 'major', 'minor', 'patch'],
    }),
  );
  const [major, minor, patch] = process.versions.node.split('.');
  version.set({ version: process.version, major: major ?? '', minor: minor ?? '', patch: patch ?? '' }, 1);

  const gc = r(
    new Histogram<'kind'>({
      name: 'nodejs_gc_duration_seconds',
      help: 'Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
      labelNames: ['kind'],
      buckets: [0.001, 0.01, 0.1, 1, 2, 5],
    }),
  );
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind = GC_KINDS[(entry as { detail?: { kind?: number } }).detail?.kind ?? -1];
      if (kind) gc.observe({ kind }, entry.duration / 1000);
    }
  });
  observer.observe({ entryTypes: ['gc'] });
}
