/**
 * Steady-state API cost of electors in a noisy namespace, from the API server's own records:
 * its audit log (every request with its identity: each candidate has its own ServiceAccount)
 * and its Prometheus metrics (response bytes, watch events and their bytes).
 *
 * The namespace is noisy throughout: 100 other pods, one deleted and one created every 200 ms,
 * and 10 client-go-style Leases (leaseDurationSeconds 15), each read and renewed every 2 s.
 * Three windows of the same length, back to back:
 *   A. noise only (the baseline);
 *   B. noise + E elections of C candidates each (electors started and settled before);
 *   C. noise + a namespace-wide watch of Pods and of Leases, counted on the client: what an
 *      elector holds that watches every Pod and Lease of its namespace, as anchors.md says
 *      nais/elector does (its binary is measured too when provided: see below).
 * Requests per elector come straight from the audit log (window B, by identity). Bytes and
 * watch events come from the metrics, as B minus A (the noise is the same in both), divided
 * by the number of electors; C minus A against the client-side count checks that method.
 *
 * Window B runs once per group of electors, one after the other, each with the same noise:
 * ours (`dist/elector.js`); ours from another build when `LIFELEASE_BEFORE_ELECTOR` names its
 * `elector.js` (before/after in one run); nais/elector when `NAIS_ELECTOR_BIN` names its
 * binary (bench/nais.ts). Long watches last 5-10 minutes: give windows of 300 s or more.
 *
 *   node bench/api-cost.ts [seconds per window = 120] [elections = 10] [candidates each = 3]
 */
import { KubeConfig, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { electorRole, electorRoleBinding } from '../common/rbac.ts';
import { startCluster } from '@lifelease/harness/cluster';
import { createPod, startElector, type ElectorProcess } from '@lifelease/harness/elector-process';
import { grantNais, naisBinary, serviceAccount, startNais, type NaisProcess } from './nais.ts';
import {
  apiJson,
  apiServerMetrics,
  cpuSeconds,
  fmt,
  loadAverage,
  metricDelta,
  microTime,
  openWatch,
  printTable,
  requireBuild,
  total,
  writeReport,
  type Samples,
} from './lib.ts';
import { numberArgs } from './args.ts';

const {
  seconds: period,
  elections,
  candidates: perElection,
} = numberArgs('api-cost', [
  { name: 'seconds', default: 120 },
  { name: 'elections', default: 10 },
  { name: 'candidates', default: 3 },
]);
const NOISE_PODS = 100;
const NOISE_LEASES = 10;
const CHURN_MS = 200;
const RENEW_MS = 2000;

requireBuild();
const naisBin = naisBinary();
const beforeEntry = process.env['LIFELEASE_BEFORE_ELECTOR'];
/** The groups of electors, each measured in its own window B. */
const groups: { label: string; kind: 'ours' | 'nais'; entry: string }[] = [
  ...(naisBin ? [{ label: 'nais/elector', kind: 'nais' as const, entry: naisBin }] : []),
  ...(beforeEntry
    ? [{ label: 'lifelease before', kind: 'ours' as const, entry: path.resolve(beforeEntry) }]
    : []),
  { label: 'lifelease', kind: 'ours', entry: 'dist/elector.js' },
];

const auditDir = await mkdtemp(path.join(tmpdir(), 'lifelease-bench-audit-'));
const auditLog = path.join(auditDir, 'audit.log');
const policy = path.join(auditDir, 'policy.yaml');
// Metadata level: who, what, when; watches once, when they start.
await writeFile(
  policy,
  'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n',
);
const cluster = await startCluster({
  apiServerArgs: [`--audit-policy-file=${policy}`, `--audit-log-path=${auditLog}`],
});
const kcFrom = (file: string) => {
  const kc = new KubeConfig();
  kc.loadFromFile(file);
  return kc;
};

const electors: (ElectorProcess | NaisProcess)[] = [];
const noise = new AbortController();
const noiseCount = { podCreates: 0, podDeletes: 0, renewals: 0, errors: 0 };
let noiseDone: Promise<unknown> = Promise.resolve();

interface Window {
  start: number;
  end: number;
  before: Samples;
  after: Samples;
  apiServerCpu: number;
  electorCpu: number;
}

async function window(pids: number[] = []): Promise<Window> {
  const before = await apiServerMetrics(cluster.kubeConfig);
  const cpu0 = cpuSeconds(cluster.apiServer.pid!);
  const e0 = pids.reduce((a, p) => a + cpuSeconds(p), 0);
  const start = Date.now();
  await sleep(period * 1000);
  const end = Date.now();
  const after = await apiServerMetrics(cluster.kubeConfig);
  return {
    start,
    end,
    before,
    after,
    apiServerCpu: (cpuSeconds(cluster.apiServer.pid!) - cpu0) / period,
    electorCpu: pids.reduce((a, p) => a + cpuSeconds(p), 0) - e0,
  };
}

try {
  const ns = await cluster.createNamespace('noisy');
  const noiseKc = kcFrom(await cluster.clientCertKubeconfig('bench-noise', ['system:masters']));
  const renewerKc = kcFrom(await cluster.clientCertKubeconfig('bench-renewer', ['system:masters']));

  // The noise: pod churn and client-go-style renewals, until the end.
  const pods = `/api/v1/namespaces/${ns}/pods`;
  const leases = `/apis/coordination.k8s.io/v1/namespaces/${ns}/leases`;
  const podBody = (name: string) => ({
    metadata: { name, labels: { app: 'noise' } },
    spec: { containers: [{ name: 'app', image: 'registry.invalid/noise:1' }] },
  });
  const check = (status: number) => {
    if (status >= 300) noiseCount.errors++;
  };
  const churn = async () => {
    const live: string[] = [];
    let serial = 0;
    while (live.length < NOISE_PODS) {
      const name = `noise-${serial++}`;
      check((await apiJson(noiseKc, 'POST', pods, podBody(name))).status);
      live.push(name);
    }
    while (!noise.signal.aborted) {
      const next = performance.now() + CHURN_MS;
      check((await apiJson(noiseKc, 'DELETE', `${pods}/${live.shift()!}`)).status);
      noiseCount.podDeletes++;
      const name = `noise-${serial++}`;
      check((await apiJson(noiseKc, 'POST', pods, podBody(name))).status);
      noiseCount.podCreates++;
      live.push(name);
      await sleep(Math.max(0, next - performance.now()));
    }
  };
  const renewer = async (k: number) => {
    const name = `client-go-${k}`;
    const spec = () => ({
      holderIdentity: `worker-${k}`,
      leaseDurationSeconds: 15,
      acquireTime: microTime(),
      renewTime: microTime(),
    });
    check((await apiJson(renewerKc, 'POST', leases, { metadata: { name }, spec: spec() })).status);
    await sleep((k * RENEW_MS) / NOISE_LEASES);
    while (!noise.signal.aborted) {
      const next = performance.now() + RENEW_MS;
      const got = await apiJson<{ metadata: unknown; spec: Record<string, unknown> }>(
        renewerKc,
        'GET',
        `${leases}/${name}`,
      );
      check(got.status);
      const lease = { ...got.body, spec: { ...got.body.spec, renewTime: microTime() } };
      check((await apiJson(renewerKc, 'PUT', `${leases}/${name}`, lease)).status);
      noiseCount.renewals++;
      await sleep(Math.max(0, next - performance.now()));
    }
  };
  noiseDone = Promise.all([churn(), ...Array.from({ length: NOISE_LEASES }, (_, k) => renewer(k))]).catch(
    (err: unknown) => {
      noiseCount.errors++;
      console.error(`noise stopped: ${String(err)}`);
    },
  );
  await sleep(10_000); // the pool is full and the renewals run

  // A. The baseline.
  console.error(`window A (noise only, ${period} s)...`);
  const a = await window();

  // B. Electors, each candidate with its own ServiceAccount (so the audit log tells them
  //    apart); one window per group, one group after the other.
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  interface GroupRun {
    label: string;
    window: Window;
    roles: Map<string, 'leader' | 'follower'>;
    n: number;
    rssMiB: number[];
  }
  const runs: GroupRun[] = [];
  for (const [g, group] of groups.entries()) {
    const started: (ElectorProcess | NaisProcess)[] = [];
    for (let i = 0; i < elections; i++) {
      const election = `g${g}e${i}`;
      const sas = Array.from({ length: perElection }, (_, j) => `${election}-c${j}`);
      if (group.kind === 'ours') {
        await rbac.createNamespacedRole({ namespace: ns, body: electorRole(ns, election) });
        await rbac.createNamespacedRoleBinding({
          namespace: ns,
          body: electorRoleBinding(ns, election, sas),
        });
      } else {
        await grantNais(cluster.kubeConfig, ns, sas);
      }
      for (const sa of sas) {
        await serviceAccount(cluster.kubeConfig, ns, sa);
        const pod = await createPod(cluster.kubeConfig, ns, sa, { serviceAccountName: sa });
        const kubeconfigPath = await cluster.serviceAccountKubeconfig(ns, sa, 7200);
        const e =
          group.kind === 'ours'
            ? await startElector({ election, pod, kubeconfigPath, entry: group.entry })
            : startNais({ bin: group.entry, election, pod, kubeconfigPath });
        started.push(await e);
        electors.push(await e);
      }
    }
    const leaderOf = async (e: ElectorProcess | NaisProcess) => {
      try {
        return (await e.get()).body.name ?? '';
      } catch {
        return ''; // not listening yet
      }
    };
    const deadline = Date.now() + 120_000;
    while ((await Promise.all(started.map(leaderOf))).some((name) => name === '')) {
      if (Date.now() > deadline) throw new Error(`${group.label}: no leader everywhere in 120 s`);
      await sleep(250);
    }
    const roles = new Map<string, 'leader' | 'follower'>();
    for (const e of started)
      roles.set(e.pod.name, (await leaderOf(e)) === e.hostname ? 'leader' : 'follower');
    await sleep(45_000); // past the start-up requests (and the second Lease watch, 30 s later)
    console.error(`window B (noise + ${started.length} ${group.label} electors, ${period} s)...`);
    const w = await window(started.map((e) => e.pid!));
    const rssMiB = started.map(
      (e) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${e.pid}/status`, 'utf8'))![1]) / 1024,
    );
    await Promise.all(started.map((e) => e.stop()));
    runs.push({ label: group.label, window: w, roles, n: started.length, rssMiB });
  }

  // C. The namespace-wide watcher stand-in.
  console.error(`window C (noise + namespace-wide Pod and Lease watches, ${period} s)...`);
  const podWatch = await openWatch(cluster.kubeConfig, `${pods}?watch=true&allowWatchBookmarks=true`);
  const leaseWatch = await openWatch(cluster.kubeConfig, `${leases}?watch=true&allowWatchBookmarks=true`);
  await sleep(2000); // the initial ADDED events of what exists
  const [pe0, pb0, le0, lb0] = [podWatch.events, podWatch.bytes, leaseWatch.events, leaseWatch.bytes];
  const c = await window();
  const standIn = {
    podEvents: podWatch.events - pe0,
    podBytes: podWatch.bytes - pb0,
    leaseEvents: leaseWatch.events - le0,
    leaseBytes: leaseWatch.bytes - lb0,
  };
  podWatch.close();
  leaseWatch.close();
  noise.abort();
  await noiseDone;

  // Requests by identity from the audit log, per window B.
  interface AuditEvent {
    stage: string;
    verb: string;
    user: { username: string };
    objectRef?: { resource?: string };
    requestReceivedTimestamp: string;
  }
  const audit: { t: number; user: string; key: string }[] = [];
  for (const line of readFileSync(auditLog, 'utf8').split('\n')) {
    if (!line) continue;
    const ev = JSON.parse(line) as AuditEvent;
    // A watch is audited when it starts (ResponseStarted) and ends; count its start only.
    if (ev.verb === 'watch' ? ev.stage !== 'ResponseStarted' : ev.stage !== 'ResponseComplete') continue;
    const t = Date.parse(ev.requestReceivedTimestamp.slice(0, 23) + 'Z');
    audit.push({ t, user: ev.user.username, key: `${ev.verb} ${ev.objectRef?.resource ?? ''}` });
  }
  const requestsIn = (w: Window) => {
    const perUser = new Map<string, Record<string, number>>();
    for (const ev of audit) {
      if (ev.t < w.start || ev.t >= w.end) continue;
      const u = perUser.get(ev.user) ?? {};
      u[ev.key] = (u[ev.key] ?? 0) + 1;
      perUser.set(ev.user, u);
    }
    return perUser;
  };
  const minutes = period / 60;
  const perMinute = (r: Record<string, number>, n: number) =>
    Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v / n / minutes]));
  const writes = (r: Record<string, number>) =>
    total(Object.fromEntries(Object.entries(r).filter(([k]) => /^(create|update|patch|delete) /.test(k))));

  // Bytes and watch events from the metrics: B - A per elector, C - A for the stand-in.
  const diff = (w: Window, name: string, where: Record<string, string | RegExp>, by?: string) =>
    metricDelta(w.before, w.after, name, where, by);
  const minus = (x: Record<string, number>, y: Record<string, number>) =>
    Object.fromEntries(Object.keys({ ...x, ...y }).map((k) => [k, (x[k] ?? 0) - (y[k] ?? 0)]));
  const watchEvents = (w: Window, resource: string) =>
    total(diff(w, 'apiserver_watch_events_total', { resource }));
  const watchBytes = (w: Window, resource: string) =>
    total(diff(w, 'apiserver_watch_events_sizes_sum', { resource }));
  const figures = runs.map((r) => {
    const b = r.window;
    const perUser = requestsIn(b);
    const byRole = { leader: {} as Record<string, number>, follower: {} as Record<string, number> };
    const count = { leader: 0, follower: 0 };
    for (const [pod, role] of r.roles) {
      count[role]++;
      for (const [k, v] of Object.entries(perUser.get(`system:serviceaccount:${ns}:${pod}`) ?? {}))
        byRole[role][k] = (byRole[role][k] ?? 0) + v;
    }
    const n = r.n;
    const both = (w: Window, f: (w: Window, res: string) => number) => f(w, 'leases') + f(w, 'pods');
    const responseBytes = minus(
      diff(b, 'apiserver_response_sizes_sum', { resource: /^(pods|leases)$/ }, 'verb'),
      diff(a, 'apiserver_response_sizes_sum', { resource: /^(pods|leases)$/ }, 'verb'),
    );
    return {
      label: r.label,
      n,
      count,
      leader: perMinute(byRole.leader, Math.max(1, count.leader)),
      follower: perMinute(byRole.follower, Math.max(1, count.follower)),
      requests: (total(byRole.leader) + total(byRole.follower)) / n / minutes,
      writes: (writes(byRole.leader) + writes(byRole.follower)) / n / minutes,
      watchEvents: (both(b, watchEvents) - both(a, watchEvents)) / n / minutes,
      watchBytes: (both(b, watchBytes) - both(a, watchBytes)) / n / minutes,
      responseBytes: ((responseBytes['GET'] ?? 0) + (responseBytes['LIST'] ?? 0)) / n / minutes,
      requestsByVerbBminusA: Object.fromEntries(
        Object.entries(
          minus(
            diff(b, 'apiserver_request_total', { resource: /^(pods|leases)$/ }, 'verb'),
            diff(a, 'apiserver_request_total', { resource: /^(pods|leases)$/ }, 'verb'),
          ),
        ).map(([k, v]) => [k, v / n / minutes]),
      ),
      apiServerCores: b.apiServerCpu,
      electorCpuSecondsPerMinute: b.electorCpu / n / minutes,
      electorRssMiB: { min: Math.min(...r.rssMiB), max: Math.max(...r.rssMiB) },
    };
  });
  const renewerPerLease = perMinute(requestsIn(a).get('bench-renewer') ?? {}, NOISE_LEASES);
  const standInMetric = {
    events:
      watchEvents(c, 'leases') + watchEvents(c, 'pods') - watchEvents(a, 'leases') - watchEvents(a, 'pods'),
    bytes: watchBytes(c, 'leases') + watchBytes(c, 'pods') - watchBytes(a, 'leases') - watchBytes(a, 'pods'),
  };

  const verbs = [
    'list leases',
    'watch leases',
    'get pods',
    'list pods',
    'watch pods',
    'create leases',
    'delete leases',
  ];
  printTable(
    `API requests per elector per minute, noisy namespace, ${period} s window each (audit log, by identity)`,
    ['who', ...verbs, 'all', 'writes', 'n'],
    figures.flatMap((f) =>
      (['leader', 'follower'] as const).map((role) => [
        `${f.label} ${role}`,
        ...verbs.map((v) => fmt(f[role][v] ?? 0, 2)),
        fmt(total(f[role]), 2),
        fmt(writes(f[role]), 2),
        f.count[role],
      ]),
    ),
  );
  printTable(
    'Per elector per minute, same namespace (requests: audit log; events and bytes: metrics B - A; stand-in: client-side count)',
    ['who', 'requests', 'writes', 'watch events in', 'watch KiB in', 'response KiB', 'CPU s', 'RSS MiB'],
    [
      ...figures.map((f) => [
        `${f.label} (mean of ${f.n})`,
        fmt(f.requests, 2),
        fmt(f.writes, 2),
        fmt(f.watchEvents, 2),
        fmt(f.watchBytes / 1024, 2),
        fmt(f.responseBytes / 1024, 2),
        fmt(f.electorCpuSecondsPerMinute, 3),
        `${fmt(f.electorRssMiB.min, 0)}-${fmt(f.electorRssMiB.max, 0)}`,
      ]),
      [
        'client-go-style renewer, per Lease (leader side only)',
        fmt(total(renewerPerLease), 1),
        fmt(writes(renewerPerLease), 1),
        '-',
        '-',
        '-',
        '-',
        '-',
      ],
      [
        'namespace-wide Pod+Lease watcher (the nais/elector pattern)',
        '-',
        '-',
        fmt((standIn.podEvents + standIn.leaseEvents) / minutes, 0),
        fmt((standIn.podBytes + standIn.leaseBytes) / 1024 / minutes, 0),
        '-',
        '-',
        '-',
      ],
    ],
  );
  printTable(
    'Server side',
    ['window', 'kube-apiserver cores', 'pod+lease requests/s', 'electors CPU s (sum)'],
    [
      [
        'A noise only',
        fmt(a.apiServerCpu, 3),
        fmt(total(diff(a, 'apiserver_request_total', { resource: /^(pods|leases)$/ })) / period, 1),
        '-',
      ],
      ...runs.map((r) => [
        `B + ${r.n} ${r.label}`,
        fmt(r.window.apiServerCpu, 3),
        fmt(total(diff(r.window, 'apiserver_request_total', { resource: /^(pods|leases)$/ })) / period, 1),
        fmt(r.window.electorCpu, 2),
      ]),
      [
        'C + namespace-wide watches',
        fmt(c.apiServerCpu, 3),
        fmt(total(diff(c, 'apiserver_request_total', { resource: /^(pods|leases)$/ })) / period, 1),
        '-',
      ],
    ],
  );
  console.log(
    `\ncheck: stand-in watch events, client ${standIn.podEvents + standIn.leaseEvents} vs metrics C-A ${standInMetric.events}; noise ${JSON.stringify(noiseCount)}`,
  );
  writeReport('api-cost', {
    command: `node bench/api-cost.ts ${period} ${elections} ${perElection}`,
    windowSeconds: period,
    groups: groups.map((g) => g.label),
    electors: { elections, perElection },
    noise: {
      pods: NOISE_PODS,
      churnEveryMs: CHURN_MS,
      leases: NOISE_LEASES,
      renewEveryMs: RENEW_MS,
      ...noiseCount,
    },
    perElectorPerMinute: figures,
    clientGoRenewerPerLease: renewerPerLease,
    namespaceWideWatcherPerMinute: {
      events: (standIn.podEvents + standIn.leaseEvents) / minutes,
      bytes: (standIn.podBytes + standIn.leaseBytes) / minutes,
      ...standIn,
      metricsCminusA: standInMetric,
    },
    apiServerCores: { A: a.apiServerCpu, C: c.apiServerCpu },
    loadAverageAtEnd: loadAverage(),
  });
} finally {
  noise.abort();
  await noiseDone.catch(() => {});
  await Promise.all(electors.map((e) => e.stop()));
  await cluster.stop();
  await rm(auditDir, { recursive: true, force: true });
}
