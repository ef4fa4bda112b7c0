/**
 * Shared by the benchmark scripts: quantiles, tables, process figures from /proc, the
 * API server's own Prometheus metrics, and the JSON report.
 *
 * A script prints its tables and calls `writeReport(name, data)`: under `npm run bench`
 * (bench/run.ts sets BENCH_REPORT_DIR) the data goes into that run's combined report
 * `bench/results/<date>.json`; run alone, into `bench/tmp/<name>.json` (not committed).
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request, type RequestOptions } from 'node:https';
import { cpus, loadavg, totalmem } from 'node:os';
import path from 'node:path';

export const BENCH_DIR = import.meta.dirname;
export const REPO_ROOT = path.resolve(BENCH_DIR, '..');

// ---------------------------------------------------------------------------------------
// Figures.

export interface Stats {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

/** Nearest-rank quantiles of `values` (any unit). With n < 100, p99 is the maximum: say so. */
export function stats(values: readonly number[]): Stats {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return { n: 0, min: NaN, p50: NaN, p90: NaN, p99: NaN, p999: NaN, max: NaN, mean: NaN };
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
  return {
    n: s.length,
    min: s[0]!,
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    p999: q(0.999),
    max: s[s.length - 1]!,
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

/** A number for a table: `digits` decimals, or '-' when not a number. */
export function fmt(value: number | undefined, digits = 1): string {
  return value === undefined || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}

/** Prints an aligned table (numbers right-aligned) under a title. */
export function printTable(title: string, header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const numeric = header.map((_, i) => rows.every((r) => /^[-+]?[\d.,x%]+$|^-$/.test(String(r[i]))));
  const line = (r: string[]) =>
    r.map((c, i) => (numeric[i] && i > 0 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
  console.log(`\n${title}`);
  console.log(line(header));
  console.log(widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of cells.slice(1)) console.log(line(r));
}

// ---------------------------------------------------------------------------------------
// Processes (Linux /proc).

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** Resident set size of `pid` in MiB. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN) / 1024;
}

/** Proportional set size of `pid` in MiB: shared pages (the node binary) split among their users. */
export function pssMiB(pid: number): number {
  const m = /^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(m?.[1] ?? NaN) / 1024;
}

/** CPU time (user + system) `pid` has used so far, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may contain spaces) in parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * CPU time of a process's live threads, in seconds, at nanosecond resolution (the first field
 * of each `/proc/<pid>/task/<tid>/schedstat`): for small figures over a window, where
 * {@link cpuSeconds}'s 10 ms ticks are too coarse. Threads that exit take their time with
 * them, so compare it only over a window in which none do (an idle process).
 */
export function runSeconds(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`))
    ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  return ns / 1e9;
}

/** MemAvailable in MiB. */
export function memAvailableMiB(): number {
  const m = /MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'));
  return Number(m?.[1] ?? NaN) / 1024;
}

export function loadAverage(): [number, number, number] {
  const [a, b, c] = loadavg();
  return [Number(a!.toFixed(2)), Number(b!.toFixed(2)), Number(c!.toFixed(2))];
}

export function machine() {
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Number((totalmem() / 1024 ** 3).toFixed(1)),
    node: process.version,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
  };
}

// ---------------------------------------------------------------------------------------
// The API server's own metrics (admin credentials).

/** Prometheus samples: `name{labels}` -> value. */
export type Samples = Map<string, { name: string; labels: Record<string, string>; value: number }>;

export function parsePrometheus(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!;
    out.set(`${m[1]}{${m[3] ?? ''}}`, { name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** GET `path` on the API server with the KubeConfig's credentials; the body as text. */
export async function apiGetText(kc: KubeConfig, pathname: string): Promise<string> {
  const server = kc.getCurrentCluster()!.server;
  const options: RequestOptions = {};
  await kc.applyToHTTPSOptions(options);
  return new Promise((resolve, reject) => {
    const req = request(new URL(pathname, server), { ...options, method: 'GET', timeout: 20_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () =>
        res.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${pathname}: ${res.statusCode}`)),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${pathname}: timeout`)));
    req.on('error', reject);
    req.end();
  });
}

export async function apiServerMetrics(kc: KubeConfig): Promise<Samples> {
  return parsePrometheus(await apiGetText(kc, '/metrics'));
}

/**
 * Sum over samples of metric `name` whose labels match `where`, after minus before, grouped
 * by the label `by` (or '' for one total).
 */
export function metricDelta(
  before: Samples,
  after: Samples,
  name: string,
  where: Record<string, string | RegExp> = {},
  by?: string,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [key, s] of after) {
    if (s.name !== name) continue;
    if (
      !Object.entries(where).every(([k, v]) =>
        typeof v === 'string' ? s.labels[k] === v : v.test(s.labels[k] ?? ''),
      )
    )
      continue;
    const group = by ? (s.labels[by] ?? '') : '';
    out[group] = (out[group] ?? 0) + s.value - (before.get(key)?.value ?? 0);
  }
  return out;
}

export function total(record: Record<string, number>): number {
  return Object.values(record).reduce((a, b) => a + b, 0);
}

// ---------------------------------------------------------------------------------------
// The report.

/** Writes this script's figures for the combined report (see the header). */
export function writeReport(name: string, data: unknown): void {
  const dir = process.env['BENCH_REPORT_DIR'] ?? path.join(BENCH_DIR, 'tmp');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  writeFileSync(
    file,
    `${JSON.stringify({ name, finishedAt: new Date().toISOString(), loadAverage: loadAverage(), data }, null, 2)}\n`,
  );
  console.log(
    `\n(figures written to ${path.relative(REPO_ROOT, file)}; load average ${loadAverage().join(' ')})`,
  );
}

/** Throws unless `dist/elector.js` exists (the benchmarks run the bundle that ships). */
export function requireBuild(): void {
  try {
    readFileSync(path.join(REPO_ROOT, 'dist/elector.js'));
  } catch {
    throw new Error('dist/elector.js is missing: run `npm run build` first (npm run bench does)');
  }
}

export interface WatchHandle {
  /** Events received so far (all types, bookmarks included) and their bytes. */
  events: number;
  bytes: number;
  close(): void;
}

/**
 * Opens a watch (`path` with `watch=true` in its query) with the KubeConfig's credentials;
 * resolves once the server accepted it. `onEvent` gets each event's type and object.
 */
export async function openWatch(
  kc: KubeConfig,
  pathname: string,
  onEvent: (type: string, object: Record<string, unknown>) => void = () => {},
): Promise<WatchHandle> {
  const server = kc.getCurrentCluster()!.server;
  const options: RequestOptions = {};
  await kc.applyToHTTPSOptions(options);
  const handle: WatchHandle = { events: 0, bytes: 0, close: () => {} };
  return new Promise((resolve, reject) => {
    const req = request(new URL(pathname, server), { ...options, method: 'GET' }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`watch ${pathname}: ${res.statusCode}`));
        return;
      }
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        handle.bytes += Buffer.byteLength(chunk);
        buffer += chunk;
        let nl: number;
        while ((nl = buffer.indexOf('\n')) >= 0) {
          const line = buffer.slice(0, nl);
          buffer = buffer.slice(nl + 1);
          if (line.trim() === '') continue;
          handle.events++;
          const e = JSON.parse(line) as { type: string; object: Record<string, unknown> };
          onEvent(e.type, e.object);
        }
      });
      res.on('error', () => {});
      resolve(handle);
    });
    handle.close = () => req.destroy();
    req.on('error', reject);
    req.end();
  });
}

/** One JSON request to the API server with the KubeConfig's credentials; the parsed body. */
export async function apiJson<T = unknown>(
  kc: KubeConfig,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  pathname: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  const server = kc.getCurrentCluster()!.server;
  const options: RequestOptions & { headers: Record<string, string> } = { headers: {} };
  await kc.applyToHTTPSOptions(options);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  options.headers['accept'] = 'application/json';
  if (payload !== undefined) {
    options.headers['content-type'] = 'application/json';
    options.headers['content-length'] = String(Buffer.byteLength(payload));
  }
  return new Promise((resolve, reject) => {
    const req = request(new URL(pathname, server), { ...options, method, timeout: 20_000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as T });
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${pathname}: timeout`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/** MicroTime as the API server wants it (six fractional digits). */
export function microTime(ms = Date.now()): string {
  return new Date(ms).toISOString().replace(/Z$/, '000Z');
}

/** One SSE cycle against an elector's plain-HTTP API: connect, read the first event, disconnect. */
export function sseCycle(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}/sse`, { agent: false, timeout: 5000 }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
      res.on('error', () => {});
    });
    req.on('timeout', () => req.destroy(new Error('sse timeout')));
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET' && err.message !== 'socket hang up')
        reject(err);
    });
    req.end();
  });
}

/** `cycles` SSE cycles over 20 clients at once (bounded: at most 5 minutes); how many were done. */
export async function sseChurn(url: string, cycles: number): Promise<number> {
  let done = 0;
  const until = Date.now() + 5 * 60_000;
  await Promise.all(
    Array.from({ length: 20 }, async () => {
      while (done < cycles && Date.now() < until) {
        done++;
        await sseCycle(url);
      }
    }),
  );
  return done;
}
