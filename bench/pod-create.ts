/**
 * Pod CREATE through the real kube-apiserver, with the webhook registered (the repo's two
 * webhooks: object selector plus CEL match conditions) and the `webhook` process serving it:
 *   - baseline: a namespace the webhook does not select (no call);
 *   - selected namespace, pod not opted in (the API server skips the call on the selector);
 *   - selected namespace, pod opted in (a call, a patch, the API server applies it).
 * Pods are the "typical" benchmark pod (3 containers, probes, env). The three cases are
 * interleaved in chunks, so drift spreads over all of them; the figure that matters is the
 * difference to the baseline within this run.
 *
 *   node bench/pod-create.ts [pods per case = 300]
 */
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { startCluster } from '@lifelease/harness/cluster';
import { registerWebhook, waitUntilActive } from '../test/integration/webhook/helpers.ts';
import { startWebhookProcess } from '../test/support/webhook-process.ts';
import { fmt, printTable, stats, writeReport } from './lib.ts';
import { benchPod } from './pods.ts';
import { numberArgs } from './args.ts';

const { podsPerCase } = numberArgs('pod-create', [{ name: 'podsPerCase', default: 300 }]);
const CHUNK = 25;

const cluster = await startCluster();
const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false'] });
try {
  const reg = await registerWebhook(cluster.kubeConfig, {
    name: 'lifelease-bench',
    url: webhook.url,
    caPem: webhook.caPem,
  });
  const plainNs = await cluster.createNamespace('bench-plain');
  const hookNs = await cluster.createNamespace('bench-webhook', { [reg.selectorKey]: reg.name });
  await waitUntilActive(cluster.kubeConfig, hookNs);
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const pod = (name: string, opted: boolean): V1Pod => {
    const p = benchPod('typical', opted);
    p.metadata = { name, labels: { ...p.metadata!.labels, app: 'orders-api' } };
    return p;
  };
  const cases = [
    { key: 'baseline', label: 'namespace not selected (no call)', namespace: plainNs, opted: true },
    { key: 'skipped', label: 'selected, pod not opted in (no call)', namespace: hookNs, opted: false },
    { key: 'injected', label: 'selected, opted in (webhook call + patch)', namespace: hookNs, opted: true },
  ] as const;
  const times: Record<string, number[]> = { baseline: [], skipped: [], injected: [] };
  let serial = 0;
  // Warm-up: connections, the webhook's JIT, the API server's caches.
  for (const c of cases)
    for (let i = 0; i < 20; i++)
      await core.createNamespacedPod({ namespace: c.namespace, body: pod(`warm-${serial++}`, c.opted) });
  const deadline = Date.now() + 5 * 60_000;
  let injectedOk = 0;
  while (times['injected']!.length < podsPerCase && Date.now() < deadline) {
    for (const c of cases) {
      for (let i = 0; i < CHUNK && times[c.key]!.length < podsPerCase; i++) {
        const t0 = performance.now();
        const created = await core.createNamespacedPod({
          namespace: c.namespace,
          body: pod(`p-${serial++}`, c.opted),
        });
        times[c.key]!.push(performance.now() - t0);
        if (c.key === 'injected' && created.spec?.initContainers?.some((x) => x.name === 'elector'))
          injectedOk++;
      }
    }
  }
  if (injectedOk !== times['injected']!.length)
    throw new Error(`only ${injectedOk}/${times['injected']!.length} opted-in pods got an elector`);
  const s = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, stats(v)]));
  const base = s['baseline']!;
  printTable(
    `Pod CREATE through kube-apiserver, ${podsPerCase} pods per case, one at a time (typical pod), ms`,
    ['case', 'p50', 'p90', 'p99', 'max', 'added p50', 'added p99', 'n'],
    cases.map((c) => {
      const x = s[c.key]!;
      return [
        c.label,
        fmt(x.p50, 2),
        fmt(x.p90, 2),
        fmt(x.p99, 2),
        fmt(x.max, 2),
        c.key === 'baseline' ? '-' : fmt(x.p50 - base.p50, 2),
        c.key === 'baseline' ? '-' : fmt(x.p99 - base.p99, 2),
        x.n,
      ];
    }),
  );
  writeReport('pod-create', {
    command: `node bench/pod-create.ts ${podsPerCase}`,
    milliseconds: s,
    addedMs: {
      injected: { p50: s['injected']!.p50 - base.p50, p99: s['injected']!.p99 - base.p99 },
      skipped: { p50: s['skipped']!.p50 - base.p50, p99: s['skipped']!.p99 - base.p99 },
    },
  });
  await reg.delete();
} finally {
  await webhook.stop();
  await cluster.stop();
}
