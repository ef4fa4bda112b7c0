/**
 * nais/elector beside ours, in one run on one control plane, when the reader provides its
 * binary (`NAIS_ELECTOR_BIN`, see bench/README.md and bench/nais.ts); ours from another build
 * too when `LIFELEASE_BEFORE_ELECTOR` names its `elector.js` (before/after in one run; its
 * options in `LIFELEASE_BEFORE_NODE_OPTIONS`). Ours runs as injected: NODE_OPTIONS and the V8
 * flags of the manifests' elector command.
 * (API requests, bytes and events per minute for the same groups: api-cost.ts.)
 *
 *   1. Footprint, per kind: `starts` candidates of one election started one after the other;
 *      start-to-ready (spawn -> `/readyz` 200) of the first (it leads) and of the followers;
 *      RSS and PSS of each after 20 s idle.
 *   2. Failover, per kind alone: 3 candidates, the leader's Pod ended `rounds` times as a
 *      kubelet ends it (process stopped, final status reported, object deleted); time from the
 *      DELETE until both survivors answer the new leader (`GET /` polled every 10 ms).
 *   3. Interop: 3 of ours and 3 nais/elector in one election, in both start orders, the
 *      leader's Pod ended `rounds` times each; every candidate's `GET /` is polled every
 *      20 ms throughout, and a claimant is one that answers its own hostname (what a NAIS
 *      client concludes): no sample may have two.
 *
 *   NAIS_ELECTOR_BIN=... node bench/side-by-side.ts [rounds = 10] [starts = 5] [parts = footprint,failover,interop]
 */
import { CoreV1Api } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import {
  createPod,
  forceDeletePod,
  grantElection,
  httpGet,
  startElector,
  type ElectorProcess,
  type PodRef,
} from '@lifelease/harness/elector-process';
import { reportPodStopped } from '@lifelease/harness/pod-status';
import { fmt, loadAverage, printTable, pssMiB, requireBuild, rssMiB, stats, writeReport } from './lib.ts';
import { grantNais, naisBinary, serviceAccount, startNais, type NaisProcess } from './nais.ts';
import path from 'node:path';
import { AS_INJECTED, INJECTED_NODE_OPTIONS } from '../webhook/render.ts';
import { numberArgs } from './args.ts';

/** Which parts to run: footprint, failover, interop (comma-separated); default all. */
const parts = (process.argv[4] ?? 'footprint,failover,interop').split(',');
const { rounds, starts } = numberArgs(
  'side-by-side',
  [
    { name: 'rounds', default: 10 },
    { name: 'starts', default: 5, min: 2 },
  ],
  process.argv.slice(2, 4),
);
const ELECTION = 'app';

requireBuild();
const naisBin = naisBinary();
if (!naisBin) process.exit(0);
const beforeEntry = process.env['LIFELEASE_BEFORE_ELECTOR'];
/**
 * How each of ours runs: as injected (the injected NODE_OPTIONS, and the V8 flags the
 * manifests' elector command adds); the other build with `LIFELEASE_BEFORE_NODE_OPTIONS` (its
 * own commit's injected options; default the same as ours, without the command-line flags).
 */
const runAs: Record<'ours' | 'before', { env: Record<string, string>; nodeArgs: readonly string[] }> = {
  ours: AS_INJECTED,
  before: {
    env: { NODE_OPTIONS: process.env['LIFELEASE_BEFORE_NODE_OPTIONS'] ?? INJECTED_NODE_OPTIONS },
    nodeArgs: [],
  },
};

type Kind = 'ours' | 'before' | 'nais';
const kinds: Kind[] = ['nais', ...(beforeEntry ? (['before'] as const) : []), 'ours'];
const label = (k: Kind) => ({ ours: 'lifelease', before: 'lifelease before', nais: 'nais/elector' })[k];

/** One candidate of either kind. */
interface Member {
  kind: Kind;
  pod: PodRef;
  hostname: string;
  pid: number | undefined;
  spawnedAt: number;
  probeUrl: string;
  proc: ElectorProcess | NaisProcess;
}

/** The leader this member names, or undefined when it cannot answer. */
async function leaderOf(m: Member): Promise<string | undefined> {
  try {
    const res = await httpGet(`${m.proc.apiUrl}/`, 1000);
    if (res.status !== 200) return undefined;
    return (JSON.parse(res.body) as { name?: string }).name ?? '';
  } catch {
    return undefined;
  }
}

async function readyAfter(m: Member, timeoutMs = 120_000): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      if ((await httpGet(`${m.probeUrl}/readyz`, 1000)).status === 200)
        return performance.now() - m.spawnedAt;
    } catch {
      // not listening yet
    }
    await sleep(5);
  }
  throw new Error(`${m.kind} ${m.pod.name} not ready in ${timeoutMs} ms`);
}

let serial = 0;
/** Access for both kinds in one namespace: our Role and nais's, each candidate its own account. */
async function addMember(cluster: Cluster, ns: string, kind: Kind, oursKubeconfig: string): Promise<Member> {
  const name = `${kind}-${serial++}`;
  if (kind === 'nais') {
    await serviceAccount(cluster.kubeConfig, ns, name);
    await grantNais(cluster.kubeConfig, ns, [name]);
    const pod = await createPod(cluster.kubeConfig, ns, name, { serviceAccountName: name });
    const kubeconfigPath = await cluster.serviceAccountKubeconfig(ns, name, 7200);
    const p = await startNais({ bin: naisBin!, election: ELECTION, pod, kubeconfigPath });
    return { kind, pod, hostname: name, pid: p.pid, spawnedAt: p.spawnedAt, probeUrl: p.probeUrl, proc: p };
  }
  const pod = await createPod(cluster.kubeConfig, ns, name);
  const entry = kind === 'before' ? path.resolve(beforeEntry!) : 'dist/elector.js';
  const e = await startElector({
    election: ELECTION,
    pod,
    kubeconfigPath: oursKubeconfig,
    entry,
    ...runAs[kind],
  });
  return { kind, pod, hostname: name, pid: e.pid, spawnedAt: e.spawnedAt, probeUrl: e.probeUrl, proc: e };
}

/** Ends the leader's Pod as a kubelet does: its process stops, its final status, then the DELETE. */
async function endPod(cluster: Cluster, m: Member): Promise<number> {
  await m.proc.stop();
  await reportPodStopped(cluster.kubeConfig.makeApiClient(CoreV1Api), m.pod);
  const t0 = performance.now();
  await forceDeletePod(cluster.kubeConfig, m.pod);
  return t0;
}

/** Polls every member's `GET /` every `everyMs` until all agree on a live member, or the bound. */
async function agreement(
  members: Member[],
  everyMs: number,
  boundMs: number,
  onSample?: (answers: (string | undefined)[]) => void,
): Promise<{ leader: string; at: number }> {
  const deadline = performance.now() + boundMs;
  for (;;) {
    const answers = await Promise.all(members.map(leaderOf));
    const at = performance.now();
    onSample?.(answers);
    const first = answers[0];
    if (first && answers.every((a) => a === first) && members.some((m) => m.hostname === first)) {
      return { leader: first, at };
    }
    if (at > deadline) throw new Error(`no agreement in ${boundMs} ms: ${JSON.stringify(answers)}`);
    await sleep(everyMs);
  }
}

const cluster = await startCluster();
const everyone: Member[] = [];
/** Set when the run ends, so that no sampler outlives it (a failed round included). */
let ending = false;
try {
  // 1. Footprint.
  const footprint: Record<string, unknown> = {};
  const footRows: (string | number)[][] = [];
  for (const kind of parts.includes('footprint') ? kinds : []) {
    const ns = await cluster.createNamespace(`fp-${kind}`);
    const kubeconfig = await grantElection(cluster, ns, ELECTION);
    const members: Member[] = [];
    const ready: number[] = [];
    for (let i = 0; i < starts; i++) {
      const m = await addMember(cluster, ns, kind, kubeconfig);
      members.push(m);
      everyone.push(m);
      ready.push(await readyAfter(m));
    }
    await sleep(20_000);
    const { leader } = await agreement(members, 50, 60_000);
    const mem = members.map((m) => ({
      leader: m.hostname === leader,
      rss: rssMiB(m.pid!),
      pss: pssMiB(m.pid!),
    }));
    const followers = stats(ready.slice(1));
    const lead = mem.filter((x) => x.leader);
    const foll = mem.filter((x) => !x.leader);
    const range = (xs: number[]) => `${fmt(Math.min(...xs), 0)}-${fmt(Math.max(...xs), 0)}`;
    footRows.push([
      label(kind),
      fmt(ready[0], 0),
      fmt(followers.p50, 0),
      fmt(followers.max, 0),
      range(lead.map((x) => x.rss)),
      range(lead.map((x) => x.pss)),
      range(foll.map((x) => x.rss)),
      range(foll.map((x) => x.pss)),
    ]);
    footprint[kind] = { readyMs: ready, memory: mem };
    await Promise.all(members.map((m) => m.proc.stop()));
  }
  printTable(
    `Footprint: ${starts} candidates started one after the other; memory after 20 s idle (MiB)`,
    [
      'kind',
      'ready first ms',
      'ready follower p50',
      'max',
      'leader RSS',
      'leader PSS',
      'follower RSS',
      'follower PSS',
    ],
    footRows,
  );

  // 2. Failover, each kind alone, in its own namespace; the rounds interleave the kinds
  //    (one round of each in turn), so that a change in the machine's load hits all alike.
  const failover: Record<string, number[]> = {};
  if (parts.includes('failover')) {
    const setups: { kind: Kind; ns: string; kubeconfig: string; members: Member[] }[] = [];
    for (const kind of kinds) {
      const ns = await cluster.createNamespace(`fo-${kind}`);
      const kubeconfig = await grantElection(cluster, ns, ELECTION);
      const members: Member[] = [];
      for (let i = 0; i < 3; i++) {
        const m = await addMember(cluster, ns, kind, kubeconfig);
        members.push(m);
        everyone.push(m);
        await readyAfter(m);
      }
      setups.push({ kind, ns, kubeconfig, members });
      failover[kind] = [];
    }
    for (let r = 0; r < rounds; r++) {
      for (const { kind, ns, kubeconfig, members } of setups) {
        const { leader } = await agreement(members, 20, 60_000);
        const old = members.find((m) => m.hostname === leader)!;
        members.splice(members.indexOf(old), 1);
        const t0 = await endPod(cluster, old);
        const { at } = await agreement(members, 10, 120_000);
        failover[kind]!.push(at - t0);
        const m = await addMember(cluster, ns, kind, kubeconfig);
        members.push(m);
        everyone.push(m);
        await readyAfter(m);
      }
    }
    for (const { members } of setups) await Promise.all(members.map((m) => m.proc.stop()));
    printTable(
      `Failover, 3 candidates, ${rounds} rounds (the kinds in turn): Pod DELETE -> both survivors answer the new leader (ms)`,
      ['kind', 'p50', 'p90', 'max'],
      kinds.map((k) => {
        const s = stats(failover[k]!);
        return [label(k), fmt(s.p50, 0), fmt(s.p90, 0), fmt(s.max, 0)];
      }),
    );
  }

  // 3. Interop: 3 + 3 in one election, both start orders.
  const interop: Record<string, unknown>[] = [];
  const orders = [
    ['ours', 'nais'],
    ['nais', 'ours'],
  ] as const;
  for (const order of parts.includes('interop') ? orders : []) {
    const ns = await cluster.createNamespace(`mix-${order[0]}-first`);
    const kubeconfig = await grantElection(cluster, ns, ELECTION);
    const members: Member[] = [];
    let samples = 0;
    let overlaps = 0;
    let disagreements = 0;
    const claimantsOf = (answers: (string | undefined)[]) =>
      members.filter((m, i) => answers[i] !== undefined && answers[i] === m.hostname).length;
    const sample = (answers: (string | undefined)[]) => {
      samples++;
      if (claimantsOf(answers) > 1) overlaps++;
      const named = new Set(answers.filter((a) => a));
      if (named.size > 1) disagreements++;
    };
    // Sampled all along, not only while waiting for agreement (starts included).
    let sampling = true;
    const sampler = (async () => {
      while (sampling && !ending) {
        const now = [...members];
        const answers = await Promise.all(now.map(leaderOf));
        samples++;
        if (now.filter((m, i) => answers[i] === m.hostname).length > 1) overlaps++;
        if (new Set(answers.filter((a) => a)).size > 1) disagreements++;
        await sleep(20);
      }
    })();
    for (const kind of order) {
      for (let i = 0; i < 3; i++) {
        const m = await addMember(cluster, ns, kind, kubeconfig);
        members.push(m);
        everyone.push(m);
        await readyAfter(m);
      }
    }
    const times: number[] = [];
    const winners: Record<string, number> = { ours: 0, nais: 0 };
    for (let r = 0; r < rounds; r++) {
      const { leader } = await agreement(members, 20, 60_000, sample);
      const old = members.find((m) => m.hostname === leader)!;
      members.splice(members.indexOf(old), 1);
      const t0 = await endPod(cluster, old);
      const next = await agreement(members, 20, 120_000, sample);
      times.push(next.at - t0);
      const w = members.find((m) => m.hostname === next.leader)!;
      winners[w.kind === 'nais' ? 'nais' : 'ours']!++;
      // A replacement of the same kind, so the election stays 3 + 3.
      const m = await addMember(cluster, ns, old.kind, kubeconfig);
      members.push(m);
      everyone.push(m);
      await readyAfter(m);
    }
    await agreement(members, 20, 60_000, sample);
    sampling = false;
    await sampler;
    interop.push({
      order: `${order[0]} first`,
      samples,
      overlaps,
      disagreements,
      failoverMs: times,
      winners,
    });
    await Promise.all(members.map((m) => m.proc.stop()));
  }
  printTable(
    `Interop: 3 lifelease + 3 nais/elector in one election, leader's Pod ended ${rounds} times; GET / on all every 20 ms`,
    [
      'start order',
      'samples',
      'two claimants',
      'samples naming 2+ leaders',
      'failover p50 ms',
      'max',
      'new leader ours/nais',
    ],
    interop.map((x) => {
      const s = stats(x['failoverMs'] as number[]);
      const w = x['winners'] as Record<string, number>;
      return [
        x['order'] as string,
        x['samples'] as number,
        x['overlaps'] as number,
        x['disagreements'] as number,
        fmt(s.p50, 0),
        fmt(s.max, 0),
        `${w['ours']}/${w['nais']}`,
      ];
    }),
  );
  writeReport('side-by-side', {
    command: `node bench/side-by-side.ts ${rounds} ${starts}`,
    nais: naisBin,
    before: beforeEntry ? { entry: beforeEntry, nodeOptions: runAs.before.env['NODE_OPTIONS'] } : null,
    ours: AS_INJECTED,
    footprint,
    failoverMs: failover,
    interop,
    loadAverageAtEnd: loadAverage(),
  });
} finally {
  ending = true;
  await Promise.all(everyone.map((m) => m.proc.stop()));
  await cluster.stop();
}
