/**
 * Scale: as many concurrent elections as this machine allows, in steps (default 50, 100,
 * 200, 300 electors: elections of 2 candidates, so half lead and half follow). Electors run as
 * injected (`dist/elector.js`, the injected NODE_OPTIONS), one ServiceAccount per election.
 * Before each step the memory it needs is checked against MemAvailable (keeping 2 GiB);
 * the run stops early, and says so, when it would not fit. Per step, after a settling pause,
 * over a fixed window: kube-apiserver and etcd CPU and RSS, the API request rate by verb
 * (from the API server's metrics), and the electors' CPU, RSS and PSS.
 *
 *   node bench/scale.ts [steps = 50,100,200,300] [window seconds = 60]
 */
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { AS_INJECTED } from '../webhook/render.ts';
import { startCluster } from '@lifelease/harness/cluster';
import {
  createPod,
  grantElection,
  startElector,
  type ElectorProcess,
} from '@lifelease/harness/elector-process';
import {
  apiServerMetrics,
  cpuSeconds,
  fmt,
  loadAverage,
  memAvailableMiB,
  metricDelta,
  printTable,
  pssMiB,
  requireBuild,
  rssMiB,
  total,
  writeReport,
} from './lib.ts';

const { values: scaleArgs, positionals } = parseArgs({
  allowPositionals: true,
  options: { steps: { type: 'string' }, window: { type: 'string' } },
});
const stepsText = scaleArgs.steps ?? positionals[0] ?? '50,100,200,300';
const windowText = scaleArgs.window ?? positionals[1] ?? '60';
const steps = stepsText.split(',').map((t) => (/^\d+$/.test(t) && Number(t) > 0 ? Number(t) : NaN));
const windowS = /^\d+$/.test(windowText) ? Number(windowText) : NaN;
if (positionals.length > 2 || steps.some(Number.isNaN) || !(windowS > 0)) {
  throw new Error(
    `usage: node bench/scale.ts [--steps=50,100,200,300 | 50,100,...] [--window=60 | 60] (got ${process.argv.slice(2).join(' ')})`,
  );
}
const PER_ELECTION = 2;
const RESERVE_MIB = 2048;
const START_BATCH = 4;
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

requireBuild();

interface Step {
  electors: number;
  startSeconds: number;
  apiServerCores: number;
  etcdCores: number;
  apiServerRssMiB: number;
  etcdRssMiB: number;
  requestsPerSecond: Record<string, number>;
  electorCoresTotal: number;
  electorRssMiB: { mean: number; total: number };
  electorPssMiB: { mean: number; total: number };
  memAvailableMiB: number;
  loadAverage: number[];
}

const cluster = await startCluster();
const electors: ElectorProcess[] = [];
const results: Step[] = [];
let stoppedEarly = '';
try {
  const ns = await cluster.createNamespace('scale');
  let elections = 0;
  const addElection = async () => {
    const election = `s${elections++}`;
    const kubeconfigPath = await grantElection(cluster, ns, election);
    for (let j = 0; j < PER_ELECTION; j++) {
      const pod = await createPod(cluster.kubeConfig, ns, `${election}-${j}`);
      electors.push(
        await startElector({
          election,
          pod,
          kubeconfigPath,
          entry: 'dist/elector.js',
          ...AS_INJECTED,
          startTimeoutMs: 120_000,
        }),
      );
    }
  };
  for (const target of steps) {
    const toAdd = target - electors.length;
    const perElector = electors.length > 0 ? rssMiB(electors[0]!.pid!) : 110;
    if (memAvailableMiB() - toAdd * perElector < RESERVE_MIB) {
      stoppedEarly = `stopped before ${target} electors: ${memAvailableMiB().toFixed(0)} MiB available, ${toAdd} more electors need about ${(toAdd * perElector).toFixed(0)} MiB`;
      console.error(stoppedEarly);
      break;
    }
    const t0 = performance.now();
    while (electors.length < target) {
      const batch = Math.min(START_BATCH, (target - electors.length) / PER_ELECTION);
      await Promise.all(Array.from({ length: batch }, addElection));
    }
    await Promise.all(electors.map((e) => e.waitFor((r) => r.name !== '', 120_000, 'a leader')));
    const startSeconds = (performance.now() - t0) / 1000;
    await sleep(20_000);

    const pids = electors.map((e) => e.pid!);
    const before = await apiServerMetrics(cluster.kubeConfig);
    const api0 = cpuSeconds(cluster.apiServer.pid!);
    const etcd0 = cpuSeconds(cluster.etcd.pid!);
    const el0 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
    await sleep(windowS * 1000);
    const after = await apiServerMetrics(cluster.kubeConfig);
    const rss = pids.map(rssMiB);
    const pss = pids.map(pssMiB);
    const byVerb = metricDelta(before, after, 'apiserver_request_total', {}, 'verb');
    const step: Step = {
      electors: electors.length,
      startSeconds,
      apiServerCores: (cpuSeconds(cluster.apiServer.pid!) - api0) / windowS,
      etcdCores: (cpuSeconds(cluster.etcd.pid!) - etcd0) / windowS,
      apiServerRssMiB: rssMiB(cluster.apiServer.pid!),
      etcdRssMiB: rssMiB(cluster.etcd.pid!),
      requestsPerSecond: Object.fromEntries(
        Object.entries(byVerb)
          .filter(([, v]) => v > 0)
          .map(([k, v]) => [k, v / windowS]),
      ),
      electorCoresTotal: (pids.reduce((a, p) => a + cpuSeconds(p), 0) - el0) / windowS,
      electorRssMiB: { mean: sum(rss) / rss.length, total: sum(rss) },
      electorPssMiB: { mean: sum(pss) / pss.length, total: sum(pss) },
      memAvailableMiB: memAvailableMiB(),
      loadAverage: loadAverage(),
    };
    results.push(step);
    console.error(
      `${step.electors} electors: started in ${startSeconds.toFixed(1)} s; load average ${step.loadAverage.join(' ')}`,
    );
  }
} finally {
  await Promise.all(electors.map((e) => e.stop()));
  await cluster.stop();
}

printTable(
  `Scale: elections of ${PER_ELECTION}, ${windowS} s window per step (after 20 s settling)`,
  [
    'electors',
    'start s',
    'apiserver cores',
    'apiserver RSS MiB',
    'etcd cores',
    'API req/s (all)',
    'WATCH/s',
    'GET/s',
    'electors cores',
    'elector RSS MiB',
    'elector PSS MiB',
    'PSS total GiB',
  ],
  results.map((s) => [
    s.electors,
    fmt(s.startSeconds, 1),
    fmt(s.apiServerCores, 3),
    fmt(s.apiServerRssMiB, 0),
    fmt(s.etcdCores, 3),
    fmt(total(s.requestsPerSecond), 2),
    fmt(s.requestsPerSecond['WATCH'] ?? 0, 2),
    fmt(s.requestsPerSecond['GET'] ?? 0, 2),
    fmt(s.electorCoresTotal, 3),
    fmt(s.electorRssMiB.mean, 1),
    fmt(s.electorPssMiB.mean, 1),
    fmt(s.electorPssMiB.total / 1024, 2),
  ]),
);
if (stoppedEarly) console.log(stoppedEarly);
writeReport('scale', {
  command: `node bench/scale.ts ${steps.join(',')} ${windowS}`,
  perElection: PER_ELECTION,
  steps: results,
  stoppedEarly,
});
