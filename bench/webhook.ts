/**
 * The webhook's cost per AdmissionReview, for a small, a typical (3 containers, probes,
 * env) and a large (~100 KB) pod, opted in (patched) and not (allowed untouched):
 *   1. the pure handler in process (JSON parse + review + patch + JSON encode);
 *   2. the `webhook` process over HTTPS keep-alive under autocannon: reviews per second and
 *      p50/p99/p99.9 latency, against the ceiling of this stack, a trivial fastify HTTPS
 *      route (bench/ceiling-server.ts) parsing the same body and returning a fixed review,
 *      run on the same machine in the same run. Ratios are within one run.
 * Latencies are every response's own time as autocannon measures it (hrtime, not its
 * 1 ms-resolution histogram). The webhook logs at its default level (info: one line per
 * patched review), as deployed.
 *
 *   node bench/webhook.ts [seconds per HTTPS run = 5] [connections = 8]
 */
import autocannon from 'autocannon';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createServingCertificate } from '../common/pki.ts';
import { handleAdmission, parseReview } from '../webhook/admission.ts';
import { createReview, TEST_CONFIG } from '../test/support/admission-reviews.ts';
import { startWebhookProcess } from '../test/support/webhook-process.ts';
import { cpuSeconds, fmt, printTable, stats, writeReport, type Stats } from './lib.ts';
import { benchPod, POD_SIZES, type PodSize } from './pods.ts';
import { numberArgs } from './args.ts';

const { seconds, connections } = numberArgs('webhook', [
  { name: 'seconds', default: 5 },
  { name: 'connections', default: 8 },
]);

const bodies = new Map<string, string>();
for (const size of POD_SIZES)
  for (const opted of [true, false])
    bodies.set(`${size}/${opted}`, JSON.stringify(createReview(benchPod(size, opted), 'shop')));
const bodyOf = (size: PodSize, opted: boolean) => bodies.get(`${size}/${opted}`)!;

// 1. The pure handler: bounded in count and in time.
const handler: Record<string, { bytes: number; outcome: string; us: Stats }> = {};
for (const size of POD_SIZES) {
  for (const opted of [true, false]) {
    const body = bodyOf(size, opted);
    const times: number[] = [];
    let outcome = '';
    const iterations = size === 'large' ? 3_000 : 20_000;
    const until = performance.now() + 10_000;
    for (let i = 0; i < iterations && performance.now() < until; i++) {
      const t0 = performance.now();
      const parsed = parseReview(JSON.parse(body));
      if (!parsed.ok) throw new Error(parsed.message);
      const r = handleAdmission(parsed.request, TEST_CONFIG);
      JSON.stringify(r.review);
      outcome = r.outcome;
      if (i >= iterations / 5) times.push((performance.now() - t0) * 1000);
    }
    handler[`${size}/${opted ? 'opted-in' : 'not-opted'}`] = {
      bytes: body.length,
      outcome,
      us: stats(times),
    };
  }
}
printTable(
  'Webhook handler in process (JSON parse + review + patch + JSON encode), microseconds',
  ['pod', 'review bytes', 'outcome', 'p50 µs', 'p99 µs', 'p99.9 µs', 'n'],
  Object.entries(handler).map(([k, v]) => [
    k,
    v.bytes,
    v.outcome,
    fmt(v.us.p50),
    fmt(v.us.p99),
    fmt(v.us.p999),
    v.us.n,
  ]),
);

// 2. Over HTTPS keep-alive, the webhook process against the ceiling.
interface LoadResult {
  rps: number;
  ms: Stats;
  errors: number;
  non2xx: number;
  /** CPU cores the server process used during the run (1.0 = one core busy). */
  serverCores: number;
  /** CPU cores the load generator (this process) used. */
  loadCores: number;
}

async function load(
  url: string,
  body: string,
  ca: string,
  serverPid: number,
  durationS: number,
  record: boolean,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const cpu0 = cpuSeconds(serverPid);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${url}/mutate`,
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        connections,
        duration: durationS,
        timeout: 10,
        tlsOptions: { ca },
      },
      (err: unknown, res: autocannon.Result) =>
        err ? reject(err instanceof Error ? err : new Error(JSON.stringify(err))) : resolve(res),
    );
    if (record) instance.on('response', (_client, _status, _bytes, ms) => latencies.push(ms));
  });
  const elapsed = (performance.now() - t0) / 1000;
  const self = process.cpuUsage(self0);
  return {
    rps: latencies.length / elapsed,
    ms: stats(latencies),
    errors: result.errors,
    non2xx: result.non2xx,
    serverCores: (cpuSeconds(serverPid) - cpu0) / elapsed,
    loadCores: (self.user + self.system) / 1e6 / elapsed,
  };
}

const dir = await mkdtemp(path.join(tmpdir(), 'lifelease-bench-ceiling-'));
const { ca, serving } = await createServingCertificate(['127.0.0.1', 'localhost']);
await writeFile(path.join(dir, 'tls.crt'), serving.certPem);
await writeFile(path.join(dir, 'tls.key'), serving.keyPem, { mode: 0o600 });
const ceilingChild = spawn(
  process.execPath,
  [path.join(import.meta.dirname, 'ceiling-server.ts'), path.join(dir, 'tls.crt'), path.join(dir, 'tls.key')],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false'] });
const https: Record<string, { target: string; pod: string } & LoadResult> = {};
try {
  const ceilingPort = await new Promise<number>((resolve, reject) => {
    const lines = createInterface({ input: ceilingChild.stdout });
    lines.once('line', (l) => resolve((JSON.parse(l) as { port: number }).port));
    ceilingChild.once('exit', (code) => reject(new Error(`ceiling server exited (${code})`)));
  });
  const ceiling = { url: `https://127.0.0.1:${ceilingPort}`, ca: ca.certPem, pid: ceilingChild.pid! };
  const hook = { url: webhook.url, ca: webhook.caPem, pid: webhook.child.pid! };

  for (const size of POD_SIZES) {
    // Interleaved per size, each warmed up first, so drift spreads over all three.
    const runs: [string, typeof hook, boolean][] = [
      ['ceiling (trivial route)', ceiling, true],
      ['webhook, opted in', hook, true],
      ['webhook, not opted in', hook, false],
    ];
    for (const [target, t, opted] of runs) {
      const body = bodyOf(size, opted);
      await load(t.url, body, t.ca, t.pid, 1, false);
      const r = await load(t.url, body, t.ca, t.pid, seconds, true);
      if (r.errors > 0 || r.non2xx > 0)
        throw new Error(`${target} ${size}: ${r.errors} errors, ${r.non2xx} non-2xx responses`);
      https[`${size}/${target}`] = { target, pod: size, ...r };
    }
  }
} finally {
  ceilingChild.kill('SIGTERM');
  await webhook.stop();
  await rm(dir, { recursive: true, force: true });
}

const ratios: Record<
  string,
  { opted: { rps: number; p50: number }; notOpted: { rps: number; p50: number } }
> = {};
const rows: (string | number)[][] = [];
for (const size of POD_SIZES) {
  const c = https[`${size}/ceiling (trivial route)`]!;
  const o = https[`${size}/webhook, opted in`]!;
  const n = https[`${size}/webhook, not opted in`]!;
  ratios[size] = {
    opted: { rps: o.rps / c.rps, p50: o.ms.p50 / c.ms.p50 },
    notOpted: { rps: n.rps / c.rps, p50: n.ms.p50 / c.ms.p50 },
  };
  for (const r of [c, o, n]) {
    rows.push([
      size,
      r.target,
      fmt(r.rps, 0),
      r === c ? '1.00' : fmt(r.rps / c.rps, 2),
      fmt(r.ms.p50, 2),
      fmt(r.ms.p99, 2),
      fmt(r.ms.p999, 2),
      fmt(r.serverCores, 2),
      fmt(r.loadCores, 2),
    ]);
  }
}
printTable(
  `HTTPS keep-alive, ${connections} connections, ${seconds} s per run (autocannon in this process)`,
  [
    'pod',
    'target',
    'reviews/s',
    'x ceiling',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'server cores',
    'loadgen cores',
  ],
  rows,
);

writeReport('webhook', {
  command: `node bench/webhook.ts ${seconds} ${connections}`,
  reviewBytes: Object.fromEntries([...bodies].map(([k, v]) => [k, v.length])),
  handlerMicroseconds: handler,
  https: { connections, seconds, runs: https, ratiosToCeiling: ratios },
});
