/**
 * The failover and footprint benchmarks on the real node (packages/harness/src/node.ts): the product
 * installed with `kubectl apply -k manifests`, the electors run by the kubelet as native
 * sidecars from the project image, exactly as the webhook injects them. Needs root; takes the
 * host's one node (set LIFELEASE_NODE_WAIT to wait for another run's).
 *
 * - failover: a Deployment of N opted-in pods whose app follows `$ELECTOR_SSE_URL` and logs
 *   each event with the time. Each round deletes the leader's pod (`kubectl delete pod`,
 *   graceful) and times, from the DELETE:
 *     - pod gone + GC: the Lease deleted (the kubelet stops the pod, SIGTERM to each
 *       container, reports it; the API server removes the object; the garbage collector
 *       deletes the Lease its ownerReference ties to the pod);
 *     - campaign: Lease deleted -> the new Lease (held by a survivor);
 *     - total: every surviving app's SSE stream reports the new leader.
 *   Leases are polled every 20 ms from the host (a bound on those two phases' resolution);
 *   app times are the containers' own clocks (the host's). The round ends once the
 *   replacement pod runs and every app agrees again.
 * - footprint: pod create -> the app container starts (the elector's startup probe passed:
 *   the leader is known), and each elector container's RSS (its process, /proc) and its
 *   container's memory cgroup usage after 30 s idle, for the leader and a follower.
 *
 *   node bench/node.ts failover [rounds = 10] [N = 3]
 *   node bench/node.ts footprint [pods = 3]
 *   node bench/node.ts all        # both, on one node start, default arguments
 */
import { AppsV1Api, CoordinationV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_NAME } from '../common/constants.ts';
import {
  agreedLeader,
  appLines,
  electingDeployment,
  installProduct,
  livePods,
  runElectingDeployment,
} from '@lifelease/harness/on-node';
import { sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';
import { fmt, loadAverage, printTable, rssMiB, stats, writeReport } from './lib.ts';
import { numberArgs } from './args.ts';

const mode = process.argv[2];
if (mode !== 'failover' && mode !== 'footprint' && mode !== 'all') {
  console.error('usage: node bench/node.ts failover [rounds] [N] | footprint [pods] | all');
  process.exit(2);
}

/** The app: follows the elector's SSE stream, one JSON line per event. */
const SSE_APP = `
const url = process.env.ELECTOR_SSE_URL;
const follow = async () => {
  for (;;) {
    try {
      const res = await fetch(url, { headers: { accept: 'text/event-stream' } });
      let buf = '';
      for await (const chunk of res.body) {
        buf += Buffer.from(chunk).toString();
        let i;
        while ((i = buf.indexOf('\\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line.startsWith('data:')) {
            const ev = JSON.parse(line.slice(5));
            console.log(JSON.stringify({ t: Date.now(), name: ev.name, me: process.env.HOSTNAME }));
          }
        }
      }
    } catch {}
    await new Promise((r) => setTimeout(r, 200));
  }
};
follow();
process.on('SIGTERM', () => process.exit(0));
`;

const node: TestNode = await sharedNode({ log: (m) => console.error(`  ${m}`) });
const core = node.kubeConfig.makeApiClient(CoreV1Api);
const coord = node.kubeConfig.makeApiClient(CoordinationV1Api);
try {
  const t0 = performance.now();
  await installProduct(node);
  console.error(
    `  installed (kubectl apply -k manifests) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  if (mode !== 'footprint') await failover(await node.createNamespace('bench'));
  if (mode !== 'failover') await footprint(await node.createNamespace('bench'));
} finally {
  await node.release();
}

async function failover(ns: string): Promise<void> {
  const { rounds, n } = numberArgs(
    'node failover',
    [
      { name: 'rounds', default: 10 },
      { name: 'n', default: 3, min: 2 },
    ],
    mode === 'failover' ? process.argv.slice(3) : [],
  );
  const name = 'bench';
  const deployment = electingDeployment(node, { name, replicas: n, command: ['node', '-e', SSE_APP] });
  await runElectingDeployment(node, ns, deployment);
  const rows: { gc: number; campaign: number; total: number; takeover: boolean }[] = [];
  for (let round = 0; round < rounds; round++) {
    const { pods, leader } = await agreedLeader(node, ns, name, n);
    const before = await coord.readNamespacedLease({ name, namespace: ns });
    const deletedAt = Date.now();
    await core.deleteNamespacedPod({ name: leader, namespace: ns });
    let goneAt = 0;
    let newAt = 0;
    let holder = '';
    let takeover = false;
    const deadline = Date.now() + 120_000;
    while (!newAt && Date.now() < deadline) {
      const lease = await coord.readNamespacedLease({ name, namespace: ns }).catch(() => undefined);
      const now = Date.now();
      if (!lease || lease.metadata?.uid !== before.metadata?.uid) goneAt ||= now;
      if (lease && lease.metadata?.uid !== before.metadata?.uid && lease.spec?.holderIdentity) {
        newAt = now;
        holder = lease.spec.holderIdentity;
        takeover = lease.metadata?.annotations?.['lifelease.dev/takeover-at'] !== undefined;
      }
      await sleep(20);
    }
    if (!newAt) throw new Error(`round ${round}: no new Lease in 120 s`);
    const survivors = pods.filter((p) => p.metadata?.name !== leader).map((p) => p.metadata!.name!);
    const seen = await eventually(
      'every surviving app to report the new leader',
      async () => {
        const at = await Promise.all(
          survivors.map(
            async (p) => (await appLines(node, ns, p)).find((l) => l.t > deletedAt && l.name === holder)?.t,
          ),
        );
        return at.every((x) => x !== undefined) && at;
      },
      60_000,
    );
    const total = Math.max(...seen) - deletedAt;
    rows.push({ gc: goneAt - deletedAt, campaign: newAt - goneAt, total, takeover });
    console.error(
      `  round ${round + 1}/${rounds}: lease gone ${goneAt - deletedAt} ms, new lease +${newAt - goneAt} ms, every survivor reports ${holder} at ${total} ms${takeover ? ' (fenced takeover)' : ''}`,
    );
    // The replacement joins before the next round.
    await eventually('the replacement pod', async () => (await livePods(node, ns, name)).length === n);
  }
  const s = (k: 'gc' | 'campaign' | 'total') => stats(rows.map((r) => r[k]));
  printTable(
    `Failover on the real node, N=${n}, ${rounds} rounds (graceful delete of the leader's pod), ms`,
    ['phase', 'p50', 'p90', 'max'],
    (['gc', 'campaign', 'total'] as const).map((k) => [
      {
        gc: 'DELETE -> Lease deleted (kubelet stop + GC)',
        campaign: 'Lease deleted -> new Lease',
        total: 'DELETE -> every survivor reports',
      }[k],
      fmt(s(k).p50, 0),
      fmt(s(k).p90, 0),
      fmt(s(k).max, 0),
    ]),
  );
  console.log(`fenced takeovers: ${rows.filter((r) => r.takeover).length} of ${rows.length}`);
  writeReport('failover-node', { n, rounds, rows, gc: s('gc'), campaign: s('campaign'), total: s('total') });
}

/**
 * The elector's process on the host and its memory cgroup, from the pod's container ID: the
 * charge and the working set the kubelet reports (the charge less inactive file pages).
 */
function electorProcess(pod: V1Pod): { pid: number; cgroupMiB: number; workingSetMiB: number } {
  const id = pod.status?.initContainerStatuses
    ?.find((s) => s.name === CONTAINER_NAME)
    ?.containerID?.replace(/^containerd:\/\//, '');
  if (!id) throw new Error(`${pod.metadata?.name}: no elector container ID`);
  const line = node
    .ctr(['tasks', 'ls'])
    .split('\n')
    .find((l) => l.startsWith(id));
  const pid = Number(line?.split(/\s+/)[1]);
  const memPath = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((f) => f[1] === 'memory' || f[1] === '')?.[2];
  let cgroupMiB = NaN;
  let workingSetMiB = NaN;
  for (const [dir, usage, inactive] of [
    [`/sys/fs/cgroup/memory${memPath}`, 'memory.usage_in_bytes', 'total_inactive_file'],
    [`/sys/fs/cgroup${memPath}`, 'memory.current', 'inactive_file'],
  ] as const) {
    try {
      cgroupMiB = Number(readFileSync(`${dir}/${usage}`, 'utf8').trim()) / 1024 / 1024;
      const stat = readFileSync(`${dir}/memory.stat`, 'utf8');
      const inactiveBytes = Number(new RegExp(`^${inactive} (\\d+)$`, 'm').exec(stat)?.[1] ?? NaN);
      workingSetMiB = cgroupMiB - inactiveBytes / 1024 / 1024;
      break;
    } catch {
      // the other cgroup version
    }
  }
  return { pid, cgroupMiB, workingSetMiB };
}

async function footprint(ns: string): Promise<void> {
  const { pods: count } = numberArgs(
    'node footprint',
    [{ name: 'pods', default: 3 }],
    mode === 'footprint' ? process.argv.slice(3) : [],
  );
  const apps = node.kubeConfig.makeApiClient(AppsV1Api);
  const startToApp: number[] = [];
  // One pod at a time: pod create -> the app container runs (the elector's startup probe passed).
  for (let i = 0; i < count; i++) {
    const name = `fp-${i}`;
    const created = Date.now();
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        ...electingDeployment(node, { name, replicas: 1 }),
        metadata: { name, annotations: {} },
      },
    });
    // Each Deployment its own election (named after it): every pod leads its own.
    const running = await eventually(
      `${name}'s app container to run`,
      async () => {
        const p = (await livePods(node, ns, name))[0];
        return p?.status?.containerStatuses?.find((s) => s.name === 'app')?.state?.running && p;
      },
      120_000,
    );
    startToApp.push(Date.now() - created);
    console.error(`  ${running.metadata?.name}: pod create -> app running ${Date.now() - created} ms`);
  }
  // A follower too: a second replica of the first election.
  await apps.patchNamespacedDeploymentScale({
    name: 'fp-0',
    namespace: ns,
    body: [{ op: 'replace', path: '/spec/replicas', value: 2 }],
  });
  const { pods, leader } = await agreedLeader(node, ns, 'fp-0', 2);
  console.error('  idle 30 s');
  await sleep(30_000);
  const rows = pods.map((p) => {
    const e = electorProcess(p);
    return {
      role: p.metadata?.name === leader ? 'leader' : 'follower',
      rssMiB: rssMiB(e.pid),
      cgroupMiB: e.cgroupMiB,
      workingSetMiB: e.workingSetMiB,
    };
  });
  const st = stats(startToApp);
  printTable(
    'Elector footprint on the real node',
    ['figure', 'value'],
    [
      [
        `pod create -> app running (startup probe passed), ${count} pods one by one, p50 / max ms`,
        `${fmt(st.p50, 0)} / ${fmt(st.max, 0)}`,
      ],
      ...rows.map((r) => [
        `${r.role} after 30 s idle: RSS / container memory cgroup charge / its working set, MiB`,
        `${fmt(r.rssMiB)} / ${fmt(r.cgroupMiB)} / ${fmt(r.workingSetMiB)}`,
      ]),
    ],
  );
  writeReport('footprint-node', { startToApp, rows, loadAverage: loadAverage() });
}
