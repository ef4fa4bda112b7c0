/**
 * Failover: N candidates (N = 3, 10, 30) in one election, each an elector process (the
 * `dist/elector.js` bundle, default flags) with its own Pod object and the least-privilege
 * ServiceAccount of common/rbac.ts. Each round deletes the leader's Pod (and stops its
 * elector, as the kubelet would) and times:
 *   - garbage collector: Pod DELETE sent -> the Lease's DELETED event (kube-controller-manager
 *     deletes the Lease its ownerReference ties to the Pod);
 *   - campaign: Lease DELETED -> the new Lease's ADDED event (watch delivery, the random
 *     campaign jitter of up to 200 ms, the own-Pod check, the CREATE);
 *   - propagation: new Lease ADDED -> every remaining candidate reports the new leader;
 *   - elector reaction = campaign + propagation; total = all three.
 * "Reports" is timed on each candidate's `/sse` stream (the event is published at the moment
 * `GET /` changes its answer), and then checked with a `GET /` on every candidate. The
 * round ends with a replacement candidate, so every round starts with N.
 *
 *   node bench/failover.ts [rounds for N=3 = 30] [rounds for N=10 = 20] [rounds for N=30 = 12]
 */
import { request, type ClientRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import { CoreV1Api } from '@kubernetes/client-node';
import { reportPodStopped } from '@lifelease/harness/pod-status';
import {
  createPod,
  forceDeletePod,
  grantElection,
  startElector,
  type ElectorProcess,
} from '@lifelease/harness/elector-process';
import {
  fmt,
  loadAverage,
  openWatch,
  printTable,
  requireBuild,
  stats,
  writeReport,
  type Stats,
} from './lib.ts';
import { onSseEvents } from '@lifelease/harness/sse';
import { numberArgs } from './args.ts';

const ELECTION = 'app';
const rounds = numberArgs('failover', [
  { name: 'rounds3', default: 30 },
  { name: 'rounds10', default: 20 },
  { name: 'rounds30', default: 12 },
]);
const plan: [number, number][] = [
  [3, rounds.rounds3],
  [10, rounds.rounds10],
  [30, rounds.rounds30],
];
const ROUND_TIMEOUT_MS = 90_000;

requireBuild();

/** A candidate: its elector and an SSE subscription recording each reported leader name. */
class Candidate {
  readonly elector: ElectorProcess;
  /** (time, name) of every SSE event received. */
  readonly reports: { at: number; name: string }[] = [];
  #req: ClientRequest | undefined;
  constructor(elector: ElectorProcess) {
    this.elector = elector;
  }
  get name(): string {
    return this.elector.hostname;
  }
  subscribe(): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = request(`${this.elector.apiUrl}/sse`, { agent: false }, (res) => {
        onSseEvents(res, (event) => {
          if (event.data === undefined) return;
          this.reports.push({
            at: performance.now(),
            name: (JSON.parse(event.data) as { name: string }).name,
          });
        });
        res.once('data', () => resolve());
        res.on('error', () => {});
      });
      req.on('error', reject);
      req.end();
      this.#req = req;
    });
  }
  /** When this candidate first reported `name` after `since` (and kept reporting it). */
  reportedAt(name: string, since: number): number | undefined {
    const after = this.reports.filter((r) => r.at >= since);
    const last = after.at(-1);
    if (last?.name !== name) return undefined;
    let i = after.length - 1;
    while (i > 0 && after[i - 1]!.name === name) i--;
    return after[i]!.at;
  }
  async stop(): Promise<void> {
    this.#req?.destroy();
    await this.elector.stop();
  }
}

interface Round {
  gcMs: number;
  campaignMs: number;
  propagationMs: number;
  reactionMs: number;
  totalMs: number;
}

let serial = 0;
async function addCandidate(cluster: Cluster, ns: string, kubeconfig: string): Promise<Candidate> {
  const pod = await createPod(cluster.kubeConfig, ns, `app-${serial++}`);
  const elector = await startElector({
    election: ELECTION,
    pod,
    kubeconfigPath: kubeconfig,
    entry: 'dist/elector.js',
  });
  const c = new Candidate(elector);
  await elector.waitFor((r) => r.name !== '', 30_000, 'a leader');
  await c.subscribe();
  return c;
}

async function runN(cluster: Cluster, n: number, rounds: number): Promise<Round[]> {
  const ns = await cluster.createNamespace(`failover-${n}`);
  const kubeconfig = await grantElection(cluster, ns, ELECTION);
  const candidates: Candidate[] = [];
  const results: Round[] = [];
  try {
    // The first one wins at once; the rest join in small batches (2 cores).
    candidates.push(await addCandidate(cluster, ns, kubeconfig));
    while (candidates.length < n) {
      const batch = Math.min(5, n - candidates.length);
      candidates.push(
        ...(await Promise.all(Array.from({ length: batch }, () => addCandidate(cluster, ns, kubeconfig)))),
      );
    }
    const deadline = Date.now() + 10 * 60_000;
    for (let round = 0; round < rounds && Date.now() < deadline; round++) {
      const { body } = await candidates[0]!.elector.get();
      const leader = candidates.find((c) => c.elector.pod.name === body.leader_pod);
      if (!leader) throw new Error(`no candidate runs the leader pod ${body.leader_pod}`);
      const rest = candidates.filter((c) => c !== leader);

      let deletedAt = 0;
      let addedAt = 0;
      let newLeader = '';
      const watch = await openWatch(
        cluster.kubeConfig,
        `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases?watch=true&fieldSelector=metadata.name%3D${ELECTION}`,
        (type, object) => {
          const t = performance.now();
          const spec = object['spec'] as { holderIdentity?: string } | undefined;
          if (type === 'DELETED' && !deletedAt) deletedAt = t;
          if (type === 'ADDED' && deletedAt && !addedAt) {
            addedAt = t;
            newLeader = spec?.holderIdentity ?? '';
          }
        },
      );
      await sleep(100); // the watch's initial ADDED for the current Lease
      // A graceful deletion as a kubelet ends it: the containers' final status first (in a
      // cluster that precedes the object's removal; it is not timed, as before the elector
      // read it), then the object goes. The followers may reclaim the Lease of a finished
      // pod even before its object goes: the garbage-collector part is then 0.
      await reportPodStopped(cluster.kubeConfig.makeApiClient(CoreV1Api), leader.elector.pod);
      const t0 = performance.now();
      await forceDeletePod(cluster.kubeConfig, leader.elector.pod);
      const stopping = leader.stop();
      candidates.splice(candidates.indexOf(leader), 1);

      let agreedAt: number | undefined;
      while (performance.now() - t0 < ROUND_TIMEOUT_MS) {
        if (addedAt) {
          const times = rest.map((c) => c.reportedAt(newLeader, t0));
          if (times.every((t) => t !== undefined)) {
            agreedAt = Math.max(...times);
            break;
          }
        }
        await sleep(5);
      }
      watch.close();
      await stopping;
      if (agreedAt === undefined) throw new Error(`N=${n} round ${round}: no agreement in time`);
      for (const c of rest) {
        const { body: now } = await c.elector.get();
        if (now.name !== newLeader)
          throw new Error(`${c.name}: GET / says ${now.name}, SSE said ${newLeader}`);
      }
      results.push({
        gcMs: Math.max(0, deletedAt - t0),
        campaignMs: addedAt - Math.max(deletedAt, t0),
        propagationMs: agreedAt - addedAt,
        reactionMs: agreedAt - Math.max(deletedAt, t0),
        totalMs: agreedAt - t0,
      });
      candidates.push(await addCandidate(cluster, ns, kubeconfig));
      await sleep(200);
    }
  } finally {
    await Promise.all(candidates.map((c) => c.stop()));
  }
  return results;
}

const cluster = await startCluster();
const figures: Record<string, Record<keyof Round, Stats>> = {};
try {
  for (const [n, rounds] of plan) {
    if (rounds === 0) continue; // `node bench/failover.ts 10 0 0`: N=3 only
    const r = await runN(cluster, n, rounds);
    figures[`N=${n}`] = {
      gcMs: stats(r.map((x) => x.gcMs)),
      campaignMs: stats(r.map((x) => x.campaignMs)),
      propagationMs: stats(r.map((x) => x.propagationMs)),
      reactionMs: stats(r.map((x) => x.reactionMs)),
      totalMs: stats(r.map((x) => x.totalMs)),
    };
    console.error(`N=${n}: ${r.length} rounds done (load average ${loadAverage().join(' ')})`);
  }
} finally {
  await cluster.stop();
}

const rows: (string | number)[][] = [];
for (const [n, f] of Object.entries(figures)) {
  for (const [part, label] of [
    ['gcMs', 'garbage collector (Pod deleted -> Lease gone)'],
    ['campaignMs', 'campaign (Lease gone -> new Lease)'],
    ['propagationMs', 'propagation (new Lease -> all report it)'],
    ['reactionMs', 'elector reaction (Lease gone -> all report)'],
    ['totalMs', 'total (Pod deleted -> all report)'],
  ] as const) {
    const s = f[part];
    rows.push([n, label, fmt(s.p50, 0), fmt(s.p90, 0), fmt(s.p99, 0), fmt(s.max, 0), s.n]);
  }
}
printTable(
  'Failover, ms (p99 of fewer than 100 rounds is the maximum)',
  ['N', 'part', 'p50', 'p90', 'p99', 'max', 'rounds'],
  rows,
);
writeReport('failover', {
  command: `node bench/failover.ts ${plan.map(([, r]) => r).join(' ')}`,
  milliseconds: figures,
});
