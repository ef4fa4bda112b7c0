/**
 * The elector's footprint, run as the webhook injects it (`dist/elector.js` with the
 * injected NODE_OPTIONS), each with its own Pod object and least-privilege ServiceAccount:
 *   - start-to-ready: process spawned -> `/readyz` 200 (leader known and confirmed), for
 *     the first candidate (creates the Lease) and for followers; beside it, in the same run,
 *     a bare Node HTTP server's spawn -> first 200 (the floor a Node sidecar cannot beat),
 *     measured the same way (wait for its "listening" line, then poll every 5 ms);
 *   - idle RSS and PSS of a leader and a follower after 20 s, with V8's heap figures from
 *     the elector's own /metrics, and their CPU over those 20 s (ms per second, all threads),
 *     beside an idle bare Node HTTP server with the same options;
 *   - RSS after 10,000 SSE connect/disconnect cycles (20 at a time) on a follower, again
 *     after 20 s idle, and after a second 10,000 (a leak grows again, a high-water mark
 *     does not); open streams must be back to 0;
 *   - RSS with 1,000 other pods in the namespace (the elector watches only its Lease).
 *
 * `FOOTPRINT_IDLE_SECONDS=N` makes each idle wait N seconds instead of 20: the idle CPU
 * figure right after start-up still carries the start's work, and is steadier over minutes.
 *
 * `FOOTPRINT_BEFORE=<dir>/elector.js` runs another build (for example the previous commit's
 * `dist/`, copied aside) beside this one in the same run, on the same cluster, one start
 * after the other: a before/after comparison that the machine's load moves together.
 *
 * Runtime settings side by side: every build runs with each NODE_OPTIONS setting, and so does
 * the bare server (its floor for that setting): by default Node's defaults (no NODE_OPTIONS)
 * and the injected ones (NODE_OPTIONS plus ELECTOR_V8_FLAGS on the command line, as the
 * deploy manifests' elector command has them); `FOOTPRINT_NODE_OPTIONS='label=options;...'`
 * adds more (for example the options of a previous commit), and `label=options | flags` puts
 * flags NODE_OPTIONS refuses on the command line. bench/runtime-flags.ts compares more
 * settings for memory alone.
 *
 *   node bench/footprint.ts [starts = 10] [SSE cycles = 10000] [pods = 1000]
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { ELECTOR_V8_FLAGS } from '../common/constants.ts';
import { INJECTED_NODE_OPTIONS } from '../webhook/inject.ts';
import { startCluster } from '@lifelease/harness/cluster';
import {
  createPod,
  grantElection,
  httpGet,
  startElector,
  type ElectorProcess,
} from '@lifelease/harness/elector-process';
import {
  cpuSeconds,
  fmt,
  parsePrometheus,
  printTable,
  pssMiB,
  requireBuild,
  rssMiB,
  runSeconds,
  sseChurn,
  stats,
  writeReport,
} from './lib.ts';
import { numberArgs } from './args.ts';

const {
  starts,
  sse: sseCycles,
  pods: podCount,
} = numberArgs('footprint', [
  { name: 'starts', default: 10 },
  { name: 'sse', default: 10_000, min: 0 },
  { name: 'pods', default: 1000, min: 0 },
]);
/** Each idle wait; `FOOTPRINT_IDLE_SECONDS` lengthens it (a steadier idle CPU figure). */
const IDLE_MS = Number(process.env['FOOTPRINT_IDLE_SECONDS'] ?? 20) * 1000;
if (!(IDLE_MS >= 1000 && IDLE_MS <= 3_600_000))
  throw new Error('FOOTPRINT_IDLE_SECONDS must be a number of seconds from 1 to 3600');
const ELECTION = 'app';

requireBuild();

interface Setting {
  label: string;
  nodeOptions: string;
  /** Flags on the command line (those NODE_OPTIONS refuses). */
  nodeArgs?: readonly string[];
}
const settings: Setting[] = [
  { label: 'node defaults', nodeOptions: '' },
  ...(process.env['FOOTPRINT_NODE_OPTIONS'] ?? '')
    .split(';')
    .filter((s) => s.includes('='))
    .map((s) => {
      const [options = '', args = ''] = s.slice(s.indexOf('=') + 1).split('|');
      return {
        label: s.slice(0, s.indexOf('=')).trim(),
        nodeOptions: options.trim(),
        ...(args.trim() ? { nodeArgs: args.trim().split(/\s+/) } : {}),
      };
    }),
  { label: 'injected', nodeOptions: INJECTED_NODE_OPTIONS, nodeArgs: ELECTOR_V8_FLAGS },
];
const envOf = (s: Setting) => (s.nodeOptions ? { NODE_OPTIONS: s.nodeOptions } : {});

interface Variant {
  label: string;
  entry: string;
  setting: Setting;
}
const builds = [
  ...(process.env['FOOTPRINT_BEFORE'] ? [{ label: 'before', entry: process.env['FOOTPRINT_BEFORE'] }] : []),
  { label: process.env['FOOTPRINT_BEFORE'] ? 'after' : 'elector', entry: 'dist/elector.js' },
];
const variants: Variant[] = builds.flatMap((b) =>
  settings.map((setting) => ({ label: `${b.label}, ${setting.label}`, entry: b.entry, setting })),
);

interface Mem {
  rssMiB: number;
  pssMiB?: number;
  /** CPU over the idle window, ms per second (all threads, ns resolution). */
  idleCpuMsPerS?: number;
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

async function memOf(e: ElectorProcess): Promise<Mem> {
  return { rssMiB: rssMiB(e.pid!), pssMiB: pssMiB(e.pid!), ...(await heapFigures(e)) };
}

async function firstOk(url: string, since: number, what: string, timeoutMs = 30_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      if ((await httpGet(url, 1000)).status === 200) return performance.now() - since;
    } catch {
      // not yet
    }
    await sleep(5);
  }
  throw new Error(`${what} not ready in ${timeoutMs} ms`);
}

const readyAfter = (e: ElectorProcess) => firstOk(`${e.probeUrl}/readyz`, e.spawnedAt, e.pod.name);

const BARE_SERVER = `
  const s = require('node:http').createServer((q, r) => r.end('ok'));
  s.listen(0, '127.0.0.1', () => console.log(s.address().port));
`;

/** A bare Node HTTP server with a setting's options: spawn, its port line, polled like /readyz. */
async function bareServer(setting: Setting): Promise<{ child: ChildProcess; readyMs: number }> {
  const spawnedAt = performance.now();
  const env = { ...process.env, ...envOf(setting) };
  if (!setting.nodeOptions) delete env['NODE_OPTIONS'];
  const child = spawn(process.execPath, [...(setting.nodeArgs ?? []), '-e', BARE_SERVER], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    child.once('exit', (code) => reject(new Error(`bare server exited ${code}`)));
  });
  const readyMs = await firstOk(`http://127.0.0.1:${port}/`, spawnedAt, 'bare server');
  return { child, readyMs };
}

// Make sure the port of a throwaway server is free again before we start (warms the loader).
await new Promise<void>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    void (s.address() as AddressInfo).port;
    s.close(() => resolve());
  });
});

const cluster = await startCluster();
const electors: ElectorProcess[] = [];
const bares = new Map<Setting, ChildProcess>();
try {
  const ns = await cluster.createNamespace('footprint');
  let serial = 0;
  const per = new Map<
    string,
    {
      kubeconfigPath: string;
      leader?: ElectorProcess;
      follower?: ElectorProcess;
      leaderReadyMs?: number;
      followerReady: number[];
    }
  >();
  for (const [i, v] of variants.entries()) {
    per.set(v.label, {
      kubeconfigPath: await grantElection(cluster, ns, `${ELECTION}-${i}`),
      followerReady: [],
    });
  }
  const start = async (v: Variant, i: number) => {
    const pod = await createPod(cluster.kubeConfig, ns, `app-${serial++}`);
    const e = await startElector({
      election: `${ELECTION}-${i}`,
      pod,
      kubeconfigPath: per.get(v.label)!.kubeconfigPath,
      entry: v.entry,
      env: envOf(v.setting),
      ...(v.setting.nodeArgs ? { nodeArgs: v.setting.nodeArgs } : {}),
    });
    electors.push(e);
    return e;
  };

  // Start-to-ready: one election per variant; followers started in turns, each setting's
  // bare server before its followers, so that the machine's load weighs on all of them alike.
  for (const [i, v] of variants.entries()) {
    const p = per.get(v.label)!;
    p.leader = await start(v, i);
    p.leaderReadyMs = await readyAfter(p.leader);
  }
  const bareReady = new Map<Setting, number[]>(settings.map((s) => [s, []]));
  for (let round = 0; round < starts; round++) {
    for (const setting of settings) {
      const bare = await bareServer(setting);
      bareReady.get(setting)!.push(bare.readyMs);
      if (round < starts - 1) bare.child.kill('SIGTERM');
      else bares.set(setting, bare.child);
    }
    for (const [i, v] of variants.entries()) {
      const p = per.get(v.label)!;
      const e = await start(v, i);
      p.followerReady.push(await readyAfter(e));
      if (round < starts - 1) {
        await e.stop();
        electors.splice(electors.indexOf(e), 1);
      } else p.follower = e;
    }
  }

  // Idle: memory at the end, CPU over the whole window.
  const idlePids = new Map<string, number>();
  for (const [setting, child] of bares) idlePids.set(`bare server, ${setting.label}`, child.pid!);
  for (const v of variants) {
    const p = per.get(v.label)!;
    idlePids.set(`${v.label} leader`, p.leader!.pid!);
    idlePids.set(`${v.label} follower`, p.follower!.pid!);
  }
  const run0 = new Map([...idlePids].map(([k, pid]) => [k, runSeconds(pid)]));
  const idleFrom = performance.now();
  await sleep(IDLE_MS);
  const idleCpu = (k: string) =>
    ((runSeconds(idlePids.get(k)!) - run0.get(k)!) * 1e6) / (performance.now() - idleFrom);
  const idle: Record<string, Mem> = {};
  for (const [setting, child] of bares) {
    const k = `bare server, ${setting.label}`;
    idle[k] = { rssMiB: rssMiB(child.pid!), pssMiB: pssMiB(child.pid!), idleCpuMsPerS: idleCpu(k) };
  }
  for (const v of variants) {
    const p = per.get(v.label)!;
    for (const [role, e] of [
      ['leader', p.leader!],
      ['follower', p.follower!],
    ] as const) {
      const k = `${v.label} ${role}`;
      idle[k] = { idleCpuMsPerS: idleCpu(k), ...(await memOf(e)) };
    }
  }

  // SSE churn on each variant's follower, one after the other.
  const sse: Record<string, unknown> = {};
  const sseRows: (string | number)[][] = [];
  if (sseCycles > 0) {
    for (const v of variants) {
      const f = per.get(v.label)!.follower!;
      const t0 = performance.now();
      const cpu0 = cpuSeconds(f.pid!);
      const done = await sseChurn(f.apiUrl, sseCycles);
      const seconds = (performance.now() - t0) / 1000;
      const cpuMsPerCycle = ((cpuSeconds(f.pid!) - cpu0) * 1000) / done;
      const after = await memOf(f);
      await sleep(IDLE_MS);
      const afterIdle = await memOf(f);
      const done2 = await sseChurn(f.apiUrl, sseCycles);
      await sleep(10_000);
      const afterSecond = await memOf(f);
      const openStreams = await f.metric('elector_sse_clients');
      sse[v.label] = {
        cycles: done,
        seconds,
        cpuMsPerCycle,
        after,
        afterIdle,
        secondRound: { cycles: done2, after: afterSecond },
        openStreams,
      };
      sseRows.push(
        [
          v.label,
          `after ${done} cycles (${(done / seconds).toFixed(0)}/s, CPU ${cpuMsPerCycle.toFixed(2)} ms each)`,
          ...memCells(after),
        ],
        [v.label, `  + ${IDLE_MS / 1000} s idle`, ...memCells(afterIdle)],
        [v.label, `  + ${done2} more, 10 s idle; open streams ${openStreams}`, ...memCells(afterSecond)],
      );
    }
  }

  // Other pods in the namespace.
  let with1000: Record<string, Mem> = {};
  if (podCount > 0) {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
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
    await sleep(IDLE_MS);
    with1000 = {};
    for (const v of variants) {
      const p = per.get(v.label)!;
      with1000[`${v.label} leader`] = await memOf(p.leader!);
      with1000[`${v.label} follower`] = await memOf(p.follower!);
    }
  }

  const readyRows: (string | number)[][] = [];
  const ready: Record<string, unknown> = {};
  const floor = stats(bareReady.get(settings[0]!)!);
  for (const setting of settings) {
    const bs = stats(bareReady.get(setting)!);
    readyRows.push([
      `bare server, ${setting.label}`,
      fmt(bs.p50 - floor.p50, 0),
      fmt(bs.p50, 0),
      fmt(bs.p90, 0),
      fmt(bs.max, 0),
      bs.n,
    ]);
    ready[`bare server, ${setting.label}`] = bs;
  }
  for (const v of variants) {
    const p = per.get(v.label)!;
    const fs = stats(p.followerReady);
    readyRows.push(
      [`${v.label}: first candidate (creates the Lease)`, '-', fmt(p.leaderReadyMs, 0), '-', '-', 1],
      [
        `${v.label}: follower`,
        fmt(fs.p50 - floor.p50, 0),
        fmt(fs.p50, 0),
        fmt(fs.p90, 0),
        fmt(fs.max, 0),
        fs.n,
      ],
    );
    ready[v.label] = { firstCandidate: p.leaderReadyMs, follower: fs };
  }
  printTable(
    `Start-to-ready (spawn -> first 200 of /readyz, or of the bare server), ms; the floor: the bare server with ${settings[0]!.label}`,
    ['what', 'p50 - floor', 'p50', 'p90', 'max', 'n'],
    readyRows,
  );
  printTable(
    `Memory, MiB (heap figures from the elector's /metrics), after ${IDLE_MS / 1000} s idle, and CPU over those ${IDLE_MS / 1000} s`,
    ['process', 'RSS', 'PSS', 'heap used', 'heap total', 'external', 'CPU ms/s'],
    Object.entries(idle).map(([k, m]) => [k, ...memCells(m), fmt(m.idleCpuMsPerS, 2)]),
  );
  if (sseRows.length > 0)
    printTable(
      'SSE churn on a follower, MiB',
      ['build', 'when', 'RSS', 'PSS', 'heap used', 'heap total', 'external'],
      sseRows,
    );
  if (podCount > 0)
    printTable(
      `${podCount} other pods in the namespace, MiB`,
      ['process', 'RSS', 'PSS', 'heap used', 'heap total', 'external'],
      Object.entries(with1000).map(([k, m]) => [k, ...memCells(m)]),
    );
  writeReport('footprint', {
    command: `${process.env['FOOTPRINT_IDLE_SECONDS'] ? `FOOTPRINT_IDLE_SECONDS=${process.env['FOOTPRINT_IDLE_SECONDS']} ` : ''}${process.env['FOOTPRINT_BEFORE'] ? `FOOTPRINT_BEFORE=${process.env['FOOTPRINT_BEFORE']} ` : ''}${process.env['FOOTPRINT_NODE_OPTIONS'] ? `FOOTPRINT_NODE_OPTIONS='${process.env['FOOTPRINT_NODE_OPTIONS']}' ` : ''}node bench/footprint.ts ${starts} ${sseCycles} ${podCount}`,
    nodeOptions: INJECTED_NODE_OPTIONS,
    nodeArgs: ELECTOR_V8_FLAGS,
    settings,
    variants,
    startToReadyMs: ready,
    idle,
    sse,
    pods: { count: podCount, after: with1000 },
  });
} finally {
  for (const b of bares.values()) b.kill('SIGTERM');
  await Promise.all(electors.map((e) => e.stop()));
  await cluster.stop();
}

function memCells(m: Mem): string[] {
  return [fmt(m.rssMiB), fmt(m.pssMiB), fmt(m.heapUsed), fmt(m.heapTotal), fmt(m.external)];
}
