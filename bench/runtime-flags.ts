/**
 * Node/V8 runtime settings one by one, each on a bare Node HTTP server and on the elector
 * (`dist/elector.js`, a leader and a follower of its own election) in the same run: RSS and
 * anonymous memory after 20 s idle, then after 10,000 SSE connect/disconnect cycles on the
 * follower (20 at a time) with its CPU, and after 20 s more idle. Every setting starts from
 * the injected `NODE_OPTIONS` without `--jitless`; flags that NODE_OPTIONS refuses go on
 * node's command line, before the script (startElector's `nodeArgs`).
 *
 *   node bench/runtime-flags.ts [SSE cycles = 10000]
 *
 * Rows measured later after the churn have had more idle time: read the "+20 s" column
 * with that in mind.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster } from '@lifelease/harness/cluster';
import {
  createPod,
  grantElection,
  startElector,
  type ElectorProcess,
} from '@lifelease/harness/elector-process';
import { numberArgs } from './args.ts';
import { cpuSeconds, fmt, printTable, requireBuild, rssMiB, sseChurn, writeReport } from './lib.ts';

const { sse: SSE } = numberArgs('runtime-flags', [{ name: 'sse', default: 10_000, min: 1 }]);
const BASE = '--max-semi-space-size=1 --no-deprecation --max-old-space-size=64';
const SETTINGS: Record<string, { args?: string[]; env?: Record<string, string> }> = {
  'as injected before --jitless': {},
  'MALLOC_ARENA_MAX=2': { env: { MALLOC_ARENA_MAX: '2' } },
  '--v8-pool-size=1': { args: ['--v8-pool-size=1'] },
  '--single-threaded-gc': { args: ['--single-threaded-gc'] },
  '--optimize-for-size': { args: ['--optimize-for-size'] },
  '--no-opt': { args: ['--no-opt'] },
  '--no-opt --no-maglev': { args: ['--no-opt', '--no-maglev'] },
  '--lite-mode': { args: ['--lite-mode'] },
  '--jitless': { args: ['--jitless'] },
  '--jitless, MALLOC_ARENA_MAX=2': { args: ['--jitless'], env: { MALLOC_ARENA_MAX: '2' } },
  '--jitless --optimize-for-size': { args: ['--jitless', '--optimize-for-size'] },
};
const BARE = `const s=require('node:http').createServer((q,r)=>r.end('ok'));s.listen(0,'127.0.0.1',()=>console.log(s.address().port));`;

requireBuild();

const anonMiB = (pid: number) =>
  Number(/^Anonymous:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? NaN) / 1024;
const mem = (pid: number) => [rssMiB(pid), anonMiB(pid)];

interface Row {
  bare: ChildProcess;
  leader: ElectorProcess;
  follower: ElectorProcess;
  idle?: { bare: number[]; leader: number[]; follower: number[] };
  churn?: { cycles: number; cpuMsPerCycle: number; after: number[] };
  later?: number[];
}

const cluster = await startCluster();
const rows = new Map<string, Row>();
try {
  const ns = await cluster.createNamespace('flags');
  for (const [i, [name, s]] of Object.entries(SETTINGS).entries()) {
    const nodeArgs = s.args ?? [];
    const env = { NODE_OPTIONS: BASE, ...s.env };
    const bare = spawn(process.execPath, [...nodeArgs, '-e', BARE], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise((resolve) => bare.stdout.once('data', resolve));
    const kubeconfigPath = await grantElection(cluster, ns, `e${i}`);
    const start = async (pod: string) =>
      startElector({
        election: `e${i}`,
        pod: await createPod(cluster.kubeConfig, ns, pod),
        kubeconfigPath,
        entry: 'dist/elector.js',
        env,
        nodeArgs,
      });
    const leader = await start(`l${i}`);
    rows.set(name, { bare, leader, follower: await start(`f${i}`) });
  }
  await sleep(20_000);
  for (const r of rows.values())
    r.idle = { bare: mem(r.bare.pid!), leader: mem(r.leader.pid!), follower: mem(r.follower.pid!) };
  for (const r of rows.values()) {
    const cpu0 = cpuSeconds(r.follower.pid!);
    const cycles = await sseChurn(r.follower.apiUrl, SSE);
    r.churn = {
      cycles,
      cpuMsPerCycle: ((cpuSeconds(r.follower.pid!) - cpu0) * 1000) / cycles,
      after: mem(r.follower.pid!),
    };
  }
  await sleep(20_000);
  for (const r of rows.values()) r.later = mem(r.follower.pid!);

  const cell = (m: number[] | undefined) => `${fmt(m?.[0])} / ${fmt(m?.[1])}`;
  printTable(
    `RSS / anonymous memory, MiB (NODE_OPTIONS '${BASE}' plus the setting); SSE: ${SSE} cycles on the follower`,
    ['setting', 'bare server idle', 'leader idle', 'follower idle', 'after SSE', '+20 s', 'CPU ms/cycle'],
    [...rows].map(([name, r]) => [
      name,
      cell(r.idle?.bare),
      cell(r.idle?.leader),
      cell(r.idle?.follower),
      cell(r.churn?.after),
      cell(r.later),
      fmt(r.churn?.cpuMsPerCycle, 2),
    ]),
  );
  writeReport('runtime-flags', {
    command: `node bench/runtime-flags.ts ${SSE}`,
    base: BASE,
    settings: SETTINGS,
    rows: Object.fromEntries(
      [...rows].map(([name, r]) => [name, { idle: r.idle, churn: r.churn, later: r.later }]),
    ),
  });
} finally {
  for (const r of rows.values()) r.bare.kill('SIGTERM');
  await Promise.all([...rows.values()].flatMap((r) => [r.leader.stop(), r.follower.stop()]));
  await cluster.stop();
}
