/**
 * Pod CREATE through the real kube-apiserver, with the webhook registered (the repo's two
 * webhooks: object selector plus CEL match conditions) and the `webhook` process serving it:
 *   - baseline: a namespace the webhook does not select (no call);
 *   - selected namespace, pod not opted in (the API server skips the call on the selector);
 *   - selected namespace, pod opted in (a call, a patch, the API server applies it);
 *   - the floor of any webhook: the same opted-in pod in namespaces served, through the same
 *     registration, by a webhook that does no work (bench/ceiling-server.ts): one that allows
 *     the pod unpatched, and one that answers every review with the webhook's own patch for
 *     this pod (captured once from the webhook, for the pod as the API server sends it), so
 *     the API server applies the same patch; and that one again registered with
 *     `reinvocationPolicy: Never` (ours is `IfNeeded`, so that a later webhook's change is
 *     seen: a patched pod then makes the API server run the mutating webhooks' plugin again).
 *     What the webhook adds beyond these is its own; what they add is the price of a webhook
 *     call on this machine;
 *   - with `LIFELEASE_BEFORE_WEBHOOK=<another build's webhook/main.ts or webhook.js>`: the same
 *     opted-in pod in a namespace served by that build, through the registration before
 *     2026-12-01 (the label opt-out as a CEL matchCondition, not a label selector).
 * Pods are the "typical" benchmark pod (3 containers, probes, env), sent as JSON over one
 * keep-alive connection and parsed with JSON.parse (no typed client: decoding the bigger
 * patched pod into models would be the client's cost, not the API server's).
 *
 * On a loaded machine one create's time moves by tens of milliseconds, so every round creates
 * one pod of each case back to back (the order rotating round by round) and the figure that
 * matters is the per-round difference to the baseline: its p50/p90/p99. Beside it, what the
 * API server itself measured around the webhook call
 * (`apiserver_admission_webhook_admission_duration_seconds`, per registration) and what the
 * webhook process measured (`lifelease_webhook_admission_duration_seconds`): those isolate the
 * call from etcd and scheduling noise on the rest of the request.
 *
 *   node bench/pod-create.ts [rounds = 300]
 */
import type { KubeConfig } from '@kubernetes/client-node';
import { Agent, request, type RequestOptions } from 'node:https';
import path from 'node:path';
import { startCluster } from '@lifelease/harness/cluster';
import { registerWebhook, waitUntilActive } from '../test/integration/webhook/helpers.ts';
import { startWebhookProcess, type WebhookProcess } from '../test/support/webhook-process.ts';
import { createReview } from '../test/support/admission-reviews.ts';
import {
  apiServerMetrics,
  fmt,
  loadAverage,
  metricDelta,
  parsePrometheus,
  printTable,
  stats,
  writeReport,
  type Samples,
} from './lib.ts';
import { benchPod } from './pods.ts';
import { startCeiling, type Ceiling } from './ceiling.ts';
import { numberArgs } from './args.ts';

const { rounds } = numberArgs('pod-create', [{ name: 'rounds', default: 300 }]);
const beforeEntry = process.env['LIFELEASE_BEFORE_WEBHOOK'];

/** POST of a JSON body to the API server over one keep-alive connection; the parsed reply. */
async function apiPoster(kc: KubeConfig) {
  const server = kc.getCurrentCluster()!.server;
  const options: RequestOptions & { headers: Record<string, string> } = { headers: {} };
  await kc.applyToHTTPSOptions(options);
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  return (pathname: string, body: unknown) => {
    const payload = JSON.stringify(body);
    const headers = {
      ...options.headers,
      accept: 'application/json',
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(payload)),
    };
    return new Promise<{ status: number; body: unknown }>((resolve, reject) => {
      const req = request(
        new URL(pathname, server),
        { ...options, headers, agent, method: 'POST', timeout: 30_000 },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`POST ${pathname}: timeout`)));
      req.on('error', reject);
      req.end(payload);
    });
  };
}

/** A histogram's change between two scrapes: count, sum (seconds), cumulative buckets. */
function histogramDelta(before: Samples, after: Samples, name: string, where: Record<string, string>) {
  const count = metricDelta(before, after, `${name}_count`, where)[''] ?? 0;
  const sum = metricDelta(before, after, `${name}_sum`, where)[''] ?? 0;
  const byLe = metricDelta(before, after, `${name}_bucket`, where, 'le');
  const buckets = Object.entries(byLe)
    .map(([le, n]) => [le === '+Inf' ? Infinity : Number(le), n] as const)
    .sort((a, b) => a[0] - b[0]);
  /** The bucket bound (ms) that holds quantile q: "at most this". */
  const upTo = (q: number) => {
    const b = buckets.find(([, n]) => n >= q * count);
    return b ? b[0] * 1000 : NaN;
  };
  return { count, meanMs: count ? (sum / count) * 1000 : NaN, p50UpToMs: upTo(0.5), p99UpToMs: upTo(0.99) };
}

/** One HTTPS request to a webhook process; the response body as text. */
function fetchText(proc: WebhookProcess, pathname: string, body?: string): Promise<string> {
  const what = `${body === undefined ? 'GET' : 'POST'} ${pathname}`;
  return new Promise((resolve, reject) => {
    const req = request(
      `${proc.url}${pathname}`,
      {
        method: body === undefined ? 'GET' : 'POST',
        ca: proc.caPem,
        timeout: 20_000,
        ...(body === undefined
          ? {}
          : {
              headers: {
                'content-type': 'application/json',
                'content-length': String(Buffer.byteLength(body)),
              },
            }),
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve(text));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${what}: timeout`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** The webhook process's own `/metrics` (served on its HTTPS port). */
const metricsOf = (proc: WebhookProcess): Promise<string> => fetchText(proc, '/metrics');

/** The webhook's answer to a review of `pod` (as the API server would send it): its base64 patch. */
async function patchOf(proc: WebhookProcess, review: unknown): Promise<string> {
  const text = await fetchText(proc, '/mutate', JSON.stringify(review));
  const patch = (JSON.parse(text) as { response?: { patch?: string } }).response?.patch;
  if (!patch) throw new Error(`the webhook answered no patch: ${text.slice(0, 300)}`);
  return patch;
}

/** The no-work webhooks (see the top): what each answers, how it is registered. */
const FLOORS = [
  {
    key: 'floor',
    label: 'opted in, a webhook that does no work (allowed, no patch)',
    patched: false,
    reinvocationPolicy: 'IfNeeded',
  },
  {
    key: 'floor-patch',
    label: 'opted in, a webhook that does no work but answers our patch',
    patched: true,
    reinvocationPolicy: 'IfNeeded',
  },
  {
    key: 'floor-never',
    label: 'the same, registered with reinvocationPolicy: Never',
    patched: true,
    reinvocationPolicy: 'Never',
  },
] as const;

const cluster = await startCluster();
const hooks: { key: 'after' | 'before'; process: WebhookProcess; prefix: string }[] = [];
const floors: ((typeof FLOORS)[number] & { server: Ceiling; prefix: string })[] = [];
try {
  hooks.push({
    key: 'after',
    process: await startWebhookProcess({ args: ['--reconcile-rbac=false'] }),
    prefix: '',
  });
  if (beforeEntry)
    hooks.push({
      key: 'before',
      process: await startWebhookProcess({
        args: ['--reconcile-rbac=false'],
        entry: path.resolve(beforeEntry),
      }),
      prefix: 'before.',
    });
  const namespaces: Record<string, string> = {};
  namespaces['plain'] = await cluster.createNamespace('bench-plain');
  const registrations: Awaited<ReturnType<typeof registerWebhook>>[] = [];
  /** Registers a server as the webhook of namespace `bench-<key>`, made here. */
  const serve = async (
    key: string,
    server: { url: string; caPem: string },
    prefix: string,
    reinvocationPolicy: 'IfNeeded' | 'Never' = 'IfNeeded',
  ) => {
    const reg = await registerWebhook(cluster.kubeConfig, {
      name: `lifelease-bench-${key}`,
      url: server.url,
      caPem: server.caPem,
      namePrefix: prefix,
      // The build before with the registration before (the label opt-out in CEL).
      celOptOut: key === 'before',
      reinvocationPolicy,
    });
    registrations.push(reg);
    namespaces[key] = await cluster.createNamespace(`bench-${key}`, { [reg.selectorKey]: reg.name });
    return namespaces[key];
  };
  for (const h of hooks) await waitUntilActive(cluster.kubeConfig, await serve(h.key, h.process, h.prefix));
  const post = await apiPoster(cluster.kubeConfig);
  // The pod as the API server sends it to a webhook (defaulted): a dry-run create where no
  // webhook is called. The webhook's patch for it is what the second floor answers.
  const sent = benchPod('typical', true);
  sent.metadata = { name: 'p-dry-run', labels: { ...sent.metadata!.labels, app: 'orders-api' } };
  const dry = await post(`/api/v1/namespaces/${namespaces['plain']}/pods?dryRun=All`, sent);
  if (dry.status !== 201) throw new Error(`dry-run create: HTTP ${dry.status} ${JSON.stringify(dry.body)}`);
  const ourPatch = await patchOf(hooks[0]!.process, createReview(dry.body, namespaces['after']));
  for (const f of FLOORS) {
    const server = await startCeiling(f.patched ? { patch: ourPatch } : {});
    floors.push({ ...f, server, prefix: `${f.key}.` });
  }
  for (const f of floors) {
    await serve(f.key, f.server, f.prefix, f.reinvocationPolicy);
    // Active once the API server calls it: a dry-run create there shows in its metrics.
    const calls = async () =>
      metricDelta(
        new Map(),
        await apiServerMetrics(cluster.kubeConfig),
        'apiserver_admission_webhook_admission_duration_seconds_count',
        {
          name: `${f.prefix}label.inject.lifelease.dev`,
        },
      )[''] ?? 0;
    const deadline = performance.now() + 30_000;
    for (;;) {
      const r = await post(`/api/v1/namespaces/${namespaces[f.key]}/pods?dryRun=All`, sent);
      if (r.status === 201 && (await calls()) > 0) break;
      if (performance.now() > deadline)
        throw new Error(`${f.key}: the API server did not call it within 30 s (last: HTTP ${r.status})`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  /** `elector`: whether the created pod must come back with the elector. */
  const cases: { key: string; label: string; namespace: string; opted: boolean; elector: boolean }[] = [
    {
      key: 'baseline',
      label: 'namespace not selected (no call)',
      namespace: namespaces['plain'],
      opted: true,
      elector: false,
    },
    {
      key: 'skipped',
      label: 'selected, pod not opted in (no call)',
      namespace: namespaces['after']!,
      opted: false,
      elector: false,
    },
    {
      key: 'injected',
      label: 'selected, opted in (webhook call + patch)',
      namespace: namespaces['after']!,
      opted: true,
      elector: true,
    },
    ...floors.map((f) => ({
      key: f.key,
      label: f.label,
      namespace: namespaces[f.key]!,
      opted: true,
      elector: f.patched,
    })),
    ...(beforeEntry
      ? [
          {
            key: 'before',
            label: 'opted in, served by the build before',
            namespace: namespaces['before']!,
            opted: true,
            elector: true,
          },
        ]
      : []),
  ];
  let serial = 0;
  const create = async (c: (typeof cases)[number]): Promise<number> => {
    const pod = benchPod('typical', c.opted);
    pod.metadata = { name: `p-${serial++}`, labels: { ...pod.metadata!.labels, app: 'orders-api' } };
    const t0 = performance.now();
    const res = await post(`/api/v1/namespaces/${c.namespace}/pods`, pod);
    const ms = performance.now() - t0;
    if (res.status !== 201) throw new Error(`${c.key}: HTTP ${res.status} ${JSON.stringify(res.body)}`);
    const spec = (res.body as { spec?: { initContainers?: { name: string }[] } }).spec;
    const injected = spec?.initContainers?.some((x) => x.name === 'elector') ?? false;
    if (injected !== c.elector)
      throw new Error(`${c.key}: the pod ${injected ? 'got' : 'did not get'} an elector`);
    return ms;
  };
  // Warm-up: connections, the webhooks' JIT, the API server's caches.
  for (let i = 0; i < 20; i++) for (const c of cases) await create(c);

  const scrapeHooks = async () =>
    Object.fromEntries(
      await Promise.all(
        hooks.map(async (h) => [h.key, parsePrometheus(await metricsOf(h.process))] as const),
      ),
    );
  const api0 = await apiServerMetrics(cluster.kubeConfig);
  const own0 = await scrapeHooks();
  const load0 = loadAverage();
  const times: Record<string, number[]> = Object.fromEntries(cases.map((c) => [c.key, []]));
  const diffs: Record<string, number[]> = Object.fromEntries(cases.slice(1).map((c) => [c.key, []]));
  const deadline = Date.now() + 10 * 60_000;
  let done = 0;
  for (; done < rounds && Date.now() < deadline; done++) {
    const round: Record<string, number> = {};
    for (let i = 0; i < cases.length; i++) {
      const c = cases[(i + done) % cases.length]!;
      round[c.key] = await create(c);
      times[c.key]!.push(round[c.key]!);
    }
    for (const c of cases.slice(1)) diffs[c.key]!.push(round[c.key]! - round['baseline']!);
  }
  const api1 = await apiServerMetrics(cluster.kubeConfig);
  const own1 = await scrapeHooks();
  const load1 = loadAverage();

  const s = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, stats(v)]));
  const d = Object.fromEntries(Object.entries(diffs).map(([k, v]) => [k, stats(v)]));
  printTable(
    `Pod CREATE through kube-apiserver, ${done} rounds (one pod per case, back to back), typical pod, ms`,
    ['case', 'p50', 'p90', 'p99', 'max', 'n'],
    cases.map((c) => {
      const x = s[c.key]!;
      return [c.label, fmt(x.p50, 2), fmt(x.p90, 2), fmt(x.p99, 2), fmt(x.max, 2), x.n];
    }),
  );
  printTable(
    'Added to the baseline, per round (this case minus the round’s baseline create), ms',
    ['case', 'p10', 'p50', 'p90', 'p99', 'mean', 'p99 - p99 of the pooled times'],
    cases.slice(1).map((c) => {
      const v = [...diffs[c.key]!].sort((a, b) => a - b);
      const p10 = v[Math.max(0, Math.ceil(0.1 * v.length) - 1)]!;
      const x = d[c.key]!;
      return [
        c.label,
        fmt(p10, 2),
        fmt(x.p50, 2),
        fmt(x.p90, 2),
        fmt(x.p99, 2),
        fmt(x.mean, 2),
        fmt(s[c.key]!.p99 - s['baseline']!.p99, 2),
      ];
    }),
  );
  const apiView = (prefix: string) =>
    histogramDelta(api0, api1, 'apiserver_admission_webhook_admission_duration_seconds', {
      name: `${prefix}label.inject.lifelease.dev`,
      type: 'admit',
      operation: 'CREATE',
    });
  const calls = [
    ...hooks.map((h) => {
      const api = apiView(h.prefix);
      const own = histogramDelta(own0[h.key]!, own1[h.key]!, 'lifelease_webhook_admission_duration_seconds', {
        outcome: 'patched',
      });
      return { key: h.key, api, own };
    }),
    ...floors.map((f) => ({ key: f.key, api: apiView(f.prefix), own: undefined })),
  ];
  printTable(
    'The webhook call, opted-in pods: the API server’s view and the webhook’s own, ms (p50/p99: the histogram bucket that holds it)',
    [
      'build',
      'API server: calls',
      'mean',
      'p50 <=',
      'p99 <=',
      'webhook: reviews',
      'mean',
      'p50 <=',
      'p99 <=',
    ],
    calls.map(({ key, api, own }) => [
      key,
      api.count,
      fmt(api.meanMs, 2),
      fmt(api.p50UpToMs, 1),
      fmt(api.p99UpToMs, 1),
      own?.count ?? '-',
      own ? fmt(own.meanMs, 2) : '-',
      own ? fmt(own.p50UpToMs, 2) : '-',
      own ? fmt(own.p99UpToMs, 2) : '-',
    ]),
  );
  console.log(`load average ${load0.join(' ')} -> ${load1.join(' ')}`);
  writeReport('pod-create', {
    command: `${beforeEntry ? 'LIFELEASE_BEFORE_WEBHOOK=<build> ' : ''}node bench/pod-create.ts ${rounds}`,
    rounds: done,
    milliseconds: s,
    addedPerRoundMs: d,
    webhookCall: calls,
  });
  for (const r of registrations) await r.delete();
} finally {
  for (const h of hooks) await h.process.stop();
  for (const f of floors) await f.server.stop();
  await cluster.stop();
}
