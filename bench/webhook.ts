/**
 * The webhook's cost per AdmissionReview, for a small, a typical (3 containers, probes,
 * env) and a large (~100 KB) pod, opted in (patched) and not (allowed untouched):
 *   1. the pure handler in process (JSON parse + review + patch + JSON encode);
 *   2. the `webhook` process over HTTPS keep-alive under autocannon: reviews per second and
 *      p50/p99/p99.9 latency, against the ceiling of this stack, a trivial fastify HTTPS
 *      route (bench/ceiling-server.ts) parsing the same body and returning a fixed review,
 *      run on the same machine in the same run. Ratios are within one run.
 * Latencies are every response's own time as autocannon measures it (hrtime, not its
 * 1 ms-resolution histogram). The webhook runs with its default log level (info: one line per
 * patched review) and certificate reload interval, as deployed.
 *
 * On a shared machine the CPU the processes get drifts within a run, so each size runs
 * `rounds` times through the three targets in turn; figures pool the rounds, and the ratio
 * of each round (its runs one right after the other) is reported beside the pooled one.
 *
 * A second ceiling target answers with a patch as large as the webhook's (the same route, a
 * padded fixed review): the part of the gap that is the answer's size, not the webhook's work.
 * The load generator reads the webhook's log lines without parsing them, as a container
 * runtime copies them (parsing each line took CPU from it, on the cores the servers share).
 *
 * `LIFELEASE_BEFORE_WEBHOOK=<another build's webhook/main.ts or webhook.js>` adds that build,
 * opted in, as a further target in the same rounds (before/after from one run).
 *
 *   node bench/webhook.ts [seconds per HTTPS run = 5] [connections = 8] [rounds = 3]
 */
import autocannon from 'autocannon';
import path from 'node:path';
import { handleAdmission, parseReview } from '../webhook/admission.ts';
import { createReview, TEST_CONFIG } from '../test/support/admission-reviews.ts';
import { startWebhookProcess } from '../test/support/webhook-process.ts';
import { startCeiling } from './ceiling.ts';
import { cpuSeconds, fmt, printTable, stats, writeReport, type Stats } from './lib.ts';
import { benchPod, POD_SIZES, type PodSize } from './pods.ts';
import { numberArgs } from './args.ts';

const { seconds, connections, rounds } = numberArgs('webhook', [
  { name: 'seconds', default: 5 },
  { name: 'connections', default: 8 },
  { name: 'rounds', default: 3 },
]);

const bodies = new Map<string, string>();
for (const size of POD_SIZES)
  for (const opted of [true, false])
    bodies.set(`${size}/${opted}`, JSON.stringify(createReview(benchPod(size, opted), 'shop')));
const bodyOf = (size: PodSize, opted: boolean) => bodies.get(`${size}/${opted}`)!;

// 1. The pure handler: bounded in count and in time.
const handler: Record<string, { bytes: number; outcome: string; us: Stats }> = {};
/** The length of the webhook's patch (base64) for each size's opted-in pod. */
const patchBytes = new Map<PodSize, number>();
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
      if (opted) patchBytes.set(size, r.review.response.patch?.length ?? 0);
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
interface LoadRun {
  latencies: number[];
  elapsedS: number;
  errors: number;
  non2xx: number;
  serverCpuS: number;
  loadCpuS: number;
}

interface LoadResult {
  rps: number;
  /** The reviews/s of each round. */
  roundRps: number[];
  /** The server's CPU per review of each round, µs. */
  roundCpuUs: number[];
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
  headers: Record<string, string> = {},
): Promise<LoadRun> {
  const latencies: number[] = [];
  const cpu0 = cpuSeconds(serverPid);
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: `${url}/mutate`,
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
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
  const self = process.cpuUsage(self0);
  return {
    latencies,
    elapsedS: (performance.now() - t0) / 1000,
    errors: result.errors,
    non2xx: result.non2xx,
    serverCpuS: cpuSeconds(serverPid) - cpu0,
    loadCpuS: (self.user + self.system) / 1e6,
  };
}

/** The rounds of one target pooled: all responses over all the time. */
function pool(runs: LoadRun[]): LoadResult {
  const elapsed = runs.reduce((s, r) => s + r.elapsedS, 0);
  return {
    rps: runs.reduce((s, r) => s + r.latencies.length, 0) / elapsed,
    roundRps: runs.map((r) => r.latencies.length / r.elapsedS),
    roundCpuUs: runs.map((r) => (r.serverCpuS / r.latencies.length) * 1e6),
    ms: stats(runs.flatMap((r) => r.latencies)),
    errors: runs.reduce((s, r) => s + r.errors, 0),
    non2xx: runs.reduce((s, r) => s + r.non2xx, 0),
    serverCores: runs.reduce((s, r) => s + r.serverCpuS, 0) / elapsed,
    loadCores: runs.reduce((s, r) => s + r.loadCpuS, 0) / elapsed,
  };
}

const ceilingServer = await startCeiling();
// The certificate reload interval as deployed (the test helper's 200 ms polls the files 50
// times as often, which the ceiling does not do).
const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--tls-reload-interval=10s'] });
const beforeEntry = process.env['LIFELEASE_BEFORE_WEBHOOK'];
const beforeHook = beforeEntry
  ? await startWebhookProcess({
      args: ['--reconcile-rbac=false', '--tls-reload-interval=10s'],
      entry: path.resolve(beforeEntry),
    })
  : undefined;
for (const w of [webhook, beforeHook]) {
  w?.child.stdout?.removeAllListeners('data');
  w?.child.stdout?.on('data', () => undefined);
}
const https: Record<string, { target: string; pod: string } & LoadResult> = {};
try {
  const ceiling = { url: ceilingServer.url, ca: ceilingServer.caPem, pid: ceilingServer.pid };
  const hook = { url: webhook.url, ca: webhook.caPem, pid: webhook.child.pid! };

  for (const size of POD_SIZES) {
    // Interleaved per size, each warmed up first, then the three in turn for each round, so
    // drift spreads over all three.
    const padded = { 'x-patch-bytes': String(patchBytes.get(size) ?? 0) };
    const runs: [string, typeof hook, boolean, Record<string, string>?][] = [
      ['ceiling (trivial route)', ceiling, true],
      ['ceiling, answer as large', ceiling, true, padded],
      ['webhook, opted in', hook, true],
      ['webhook, not opted in', hook, false],
      ...(beforeHook
        ? ([
            [
              'build before, opted in',
              { url: beforeHook.url, ca: beforeHook.caPem, pid: beforeHook.child.pid! },
              true,
            ],
          ] as [string, typeof hook, boolean][])
        : []),
    ];
    for (const [, t, opted, headers] of runs)
      await load(t.url, bodyOf(size, opted), t.ca, t.pid, 1, false, headers);
    const results = new Map<string, LoadRun[]>(runs.map(([target]) => [target, []]));
    for (let round = 0; round < rounds; round++) {
      for (const [target, t, opted, headers] of runs) {
        const r = await load(t.url, bodyOf(size, opted), t.ca, t.pid, seconds, true, headers);
        if (r.errors > 0 || r.non2xx > 0)
          throw new Error(`${target} ${size}: ${r.errors} errors, ${r.non2xx} non-2xx responses`);
        results.get(target)!.push(r);
      }
    }
    for (const [target] of runs)
      https[`${size}/${target}`] = { target, pod: size, ...pool(results.get(target)!) };
  }
} finally {
  await ceilingServer.stop();
  await webhook.stop();
  await beforeHook?.stop();
}

interface Ratio {
  rps: number;
  /** Reviews/s ratio of each round. */
  roundRps: number[];
  p50: number;
  /** The ceiling's server CPU per review over this one's (1 = as cheap as the ceiling). */
  cpu: number;
}
const cpuPerReview = (r: LoadResult) => r.serverCores / r.rps;
const ratio = (r: LoadResult, c: LoadResult): Ratio => ({
  rps: r.rps / c.rps,
  roundRps: r.roundRps.map((x, i) => x / c.roundRps[i]!),
  p50: r.ms.p50 / c.ms.p50,
  cpu: cpuPerReview(c) / cpuPerReview(r),
});
const ratios: Record<
  string,
  { opted: Ratio; notOpted: Ratio; before?: Ratio; optedToLarge: Ratio; beforeToLarge?: Ratio }
> = {};
const rows: (string | number)[][] = [];
for (const size of POD_SIZES) {
  const c = https[`${size}/ceiling (trivial route)`]!;
  const l = https[`${size}/ceiling, answer as large`]!;
  const o = https[`${size}/webhook, opted in`]!;
  const n = https[`${size}/webhook, not opted in`]!;
  const b = https[`${size}/build before, opted in`];
  ratios[size] = {
    opted: ratio(o, c),
    notOpted: ratio(n, c),
    ...(b ? { before: ratio(b, c) } : {}),
    optedToLarge: ratio(o, l),
    ...(b ? { beforeToLarge: ratio(b, l) } : {}),
  };
  for (const r of b ? [c, l, o, n, b] : [c, l, o, n]) {
    rows.push([
      size,
      r.target,
      fmt(r.rps, 0),
      fmt(r.rps / c.rps, 2),
      ratio(r, c)
        .roundRps.map((x) => fmt(x, 2))
        .join(' '),
      fmt(stats(ratio(r, c).roundRps).p50, 2),
      fmt(r.rps / l.rps, 2),
      fmt(cpuPerReview(r) * 1e6, 0),
      fmt(stats(r.roundCpuUs).p50, 0),
      fmt(r.ms.p50, 2),
      fmt(r.ms.p99, 2),
      fmt(r.ms.p999, 2),
      fmt(r.serverCores, 2),
      fmt(r.loadCores, 2),
    ]);
  }
}
printTable(
  `HTTPS keep-alive, ${connections} connections, ${rounds} rounds of ${seconds} s per target (autocannon in this process)`,
  [
    'pod',
    'target',
    'reviews/s',
    'x ceiling',
    'each round',
    'round median',
    'x large ceiling',
    'server CPU µs/review',
    'CPU round median',
    'p50 ms',
    'p99 ms',
    'p99.9 ms',
    'server cores',
    'loadgen cores',
  ],
  rows,
);

writeReport('webhook', {
  command: `${beforeEntry ? 'LIFELEASE_BEFORE_WEBHOOK=<build> ' : ''}node bench/webhook.ts ${seconds} ${connections} ${rounds}`,
  reviewBytes: Object.fromEntries([...bodies].map(([k, v]) => [k, v.length])),
  handlerMicroseconds: handler,
  https: { connections, seconds, rounds, runs: https, ratiosToCeiling: ratios },
});
