/**
 * The elector's footprint, run as the webhook injects it (`dist/elector.js` with the
 * injected NODE_OPTIONS), each with its own Pod object and least-privilege ServiceAccount:
 *   - start-to-ready: process spawned -> `/readyz` 200 (leader known and confirmed), for
 *     the first candidate (creates the Lease) and for followers; beside it, how long a bare
 *     `node -e 0` takes on this machine (the floor);
 *   - idle RSS of a leader and a follower after 30 s, with V8's heap figures from the
 *     elector's own /metrics, beside an idle bare Node process with the same options;
 *   - RSS after 10,000 SSE connect/disconnect cycles (20 at a time) on a follower, again
 *     after 30 s idle, and after a second 10,000 (a leak grows again, a high-water mark
 *     does not); open streams must be back to 0;
 *   - RSS with 1,000 other pods in the namespace (the elector watches only its Lease).
 *
 *   node bench/footprint.ts [starts = 10] [SSE cycles = 10000] [pods = 1000]
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { spawn, spawnSync } from 'node:child_process';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { INJECTED_NODE_OPTIONS } from '../webhook/inject.ts';
import { startCluster } from '../test/harness/cluster.ts';
import {
  createPod,
  grantElection,
  httpGet,
  startElector,
  type ElectorProcess,
} from '../test/harness/elector-process.ts';
import { fmt, parsePrometheus, printTable, requireBuild, rssMiB, stats, writeReport } from './lib.ts';

const starts = Number(process.argv[2] ?? 10);
const sseCycles = Number(process.argv[3] ?? 10_000);
const podCount = Number(process.argv[4] ?? 1000);
const ELECTION = 'app';
const INJECTED_ENV = { NODE_OPTIONS: INJECTED_NODE_OPTIONS };

requireBuild();

interface Mem {
  rssMiB: number;
  heapUsed?: number;
  heapTotal?: number;
  external?: number;
}

/** V8 figures from the elector's /metrics, in MiB. */
async function heapFigures(e: ElectorProcess): Promise<Omit<Mem, 'rssMiB'>> {
  const samples = parsePrometheus(await e.metrics());
  const get = (name: string) =>
    [...samples.values()].find((s) => s.name === name && Object.keys(s.labels).every((k) => k === 'election'))
      ?.value ?? NaN;
  const mib = (v: number) => Number((v / 1024 / 1024).toFixed(1));
  return {
    heapUsed: mib(get('nodejs_heap_size_used_bytes')),
    heapTotal: mib(get('nodejs_heap_size_total_bytes')),
    external: mib(get('nodejs_external_memory_bytes')),
  };
}

async function readyAfter(e: ElectorProcess, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await httpGet(`${e.probeUrl}/readyz`, 1000)).status === 200)
        return performance.now() - e.spawnedAt;
    } catch {
      // not yet
    }
    await sleep(5);
  }
  throw new Error(`${e.pod.name} not ready in ${timeoutMs} ms:\n${e.process.tail()}`);
}

/** One SSE cycle: connect, read the first event, disconnect. */
function sseCycle(url: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/sse`, { agent: false, timeout: 5000 }, (res) => {
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

// The floor: a bare Node start, and an idle bare Node process.
const bareStarts: number[] = [];
for (let i = 0; i < starts; i++) {
  const t0 = performance.now();
  spawnSync(process.execPath, ['-e', '0'], { env: { ...process.env, ...INJECTED_ENV } });
  bareStarts.push(performance.now() - t0);
}
const bare = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1e6)'], {
  env: { ...process.env, ...INJECTED_ENV },
  stdio: 'ignore',
});

const cluster = await startCluster();
const electors: ElectorProcess[] = [];
try {
  const ns = await cluster.createNamespace('footprint');
  const kubeconfigPath = await grantElection(cluster, ns, ELECTION);
  let serial = 0;
  const start = async () => {
    const pod = await createPod(cluster.kubeConfig, ns, `app-${serial++}`);
    const e = await startElector({
      election: ELECTION,
      pod,
      kubeconfigPath,
      entry: 'dist/elector.js',
      env: INJECTED_ENV,
    });
    electors.push(e);
    return e;
  };

  // Start-to-ready.
  const leader = await start();
  const leaderReadyMs = await readyAfter(leader);
  const followerReady: number[] = [];
  for (let i = 0; i < starts; i++) {
    const e = await start();
    followerReady.push(await readyAfter(e));
    if (i < starts - 1) {
      await e.stop();
      electors.splice(electors.indexOf(e), 1);
    }
  }
  const follower = electors.at(-1)!;

  // Idle.
  await sleep(30_000);
  const idle: Record<'leader' | 'follower' | 'bareNode', Mem> = {
    leader: { rssMiB: rssMiB(leader.pid!), ...(await heapFigures(leader)) },
    follower: { rssMiB: rssMiB(follower.pid!), ...(await heapFigures(follower)) },
    bareNode: { rssMiB: rssMiB(bare.pid!) },
  };

  // SSE churn on the follower.
  const churn = async () => {
    let done = 0;
    const until = Date.now() + 5 * 60_000;
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        while (done < sseCycles && Date.now() < until) {
          done++;
          await sseCycle(follower.apiUrl);
        }
      }),
    );
    return done;
  };
  const sseStarted = performance.now();
  const done = await churn();
  const sseSeconds = (performance.now() - sseStarted) / 1000;
  const afterSse: Mem = { rssMiB: rssMiB(follower.pid!), ...(await heapFigures(follower)) };
  await sleep(30_000);
  const afterSseIdle: Mem = { rssMiB: rssMiB(follower.pid!), ...(await heapFigures(follower)) };
  // A second round tells a leak (grows again) from a high-water mark (reuses what it has).
  const done2 = await churn();
  await sleep(10_000);
  const afterSecond: Mem = { rssMiB: rssMiB(follower.pid!), ...(await heapFigures(follower)) };
  const openStreams = await follower.metric('elector_sse_clients');

  // 1,000 other pods in the namespace.
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const before1000 = { leader: rssMiB(leader.pid!), follower: rssMiB(follower.pid!) };
  let made = 0;
  await Promise.all(
    Array.from({ length: 8 }, async () => {
      while (made < podCount) {
        const i = made++;
        await core.createNamespacedPod({
          namespace: ns,
          body: {
            metadata: { name: `other-${i}`, labels: { app: 'other' } },
            spec: { containers: [{ name: 'app', image: 'registry.invalid/other:1' }] },
          },
        });
      }
    }),
  );
  await sleep(30_000);
  const with1000: Record<'leader' | 'follower', Mem> = {
    leader: { rssMiB: rssMiB(leader.pid!), ...(await heapFigures(leader)) },
    follower: { rssMiB: rssMiB(follower.pid!), ...(await heapFigures(follower)) },
  };

  const bs = stats(bareStarts);
  const fs = stats(followerReady);
  printTable(
    'Elector start-to-ready (spawn -> /readyz 200), ms',
    ['what', 'p50', 'p90', 'max', 'n'],
    [
      ['bare `node -e 0` (the floor)', fmt(bs.p50, 0), fmt(bs.p90, 0), fmt(bs.max, 0), bs.n],
      ['first candidate (creates the Lease)', fmt(leaderReadyMs, 0), '-', '-', 1],
      ['follower', fmt(fs.p50, 0), fmt(fs.p90, 0), fmt(fs.max, 0), fs.n],
    ],
  );
  const row = (when: string, who: string, m: Mem) => [
    when,
    who,
    fmt(m.rssMiB),
    fmt(m.heapUsed),
    fmt(m.heapTotal),
    fmt(m.external),
  ];
  printTable(
    'Elector memory, MiB (heap figures from its /metrics)',
    ['when', 'process', 'RSS', 'heap used', 'heap total', 'external'],
    [
      row('idle 30 s', 'bare node (same NODE_OPTIONS)', idle.bareNode),
      row('idle 30 s', 'leader', idle.leader),
      row('idle 30 s', 'follower', idle.follower),
      row(`after ${done} SSE cycles`, 'follower', afterSse),
      row('  + 30 s idle', 'follower', afterSseIdle),
      row(`  + ${done2} more cycles, 10 s idle`, 'follower', afterSecond),
      row(`${podCount} pods in namespace`, 'leader', with1000.leader),
      row(`${podCount} pods in namespace`, 'follower', with1000.follower),
    ],
  );
  console.log(
    `\nSSE: ${done} cycles in ${sseSeconds.toFixed(1)} s (${(done / sseSeconds).toFixed(0)}/s); open streams afterwards: ${openStreams}; RSS just before the ${podCount} pods: leader ${before1000.leader.toFixed(1)}, follower ${before1000.follower.toFixed(1)} MiB`,
  );
  writeReport('footprint', {
    command: `node bench/footprint.ts ${starts} ${sseCycles} ${podCount}`,
    nodeOptions: INJECTED_NODE_OPTIONS,
    startToReadyMs: { bareNode: bs, firstCandidate: leaderReadyMs, follower: fs },
    idle,
    sse: {
      cycles: done,
      seconds: sseSeconds,
      after: afterSse,
      afterIdle: afterSseIdle,
      secondRound: { cycles: done2, after: afterSecond },
      openStreams,
    },
    pods: { count: podCount, before: before1000, after: with1000 },
  });
} finally {
  bare.kill('SIGTERM');
  await Promise.all(electors.map((e) => e.stop()));
  await cluster.stop();
}
