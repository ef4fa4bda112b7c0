/**
 * The webhook's cost, three ways, for a typical pod (a Deployment's pod with one container,
 * the `deployment-pod` golden input):
 *   1. the pure handler (review -> response with patch), in process;
 *   2. the `webhook` process over HTTPS with keep-alive connections: latency per review
 *      and throughput, at 1 and 8 concurrent connections;
 *   3. pod CREATE through kube-apiserver: without the webhook, and opted in with it.
 *
 *   npx node bench/webhook.ts [seconds per HTTPS run = 5] [pods per API run = 200]
 */
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:https';
import path from 'node:path';
import { handleAdmission, parseReview } from '../webhook/admission.ts';
import { startCluster } from '../test/harness/cluster.ts';
import { createReview, TEST_CONFIG } from '../test/unit/webhook/helpers.ts';
import { startWebhookProcess } from '../test/unit/webhook/webhook-process.ts';
import { registerWebhook, waitUntilActive } from '../test/integration/webhook/helpers.ts';

const seconds = Number(process.argv[2] ?? 5);
const podsPerRun = Number(process.argv[3] ?? 200);
const input = JSON.parse(
  readFileSync(
    path.resolve(import.meta.dirname, '../test/fixtures/golden/deployment-pod.input.json'),
    'utf8',
  ),
) as { pod: V1Pod };

function quantiles(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `p50 ${q(0.5).toFixed(3)} ms, p99 ${q(0.99).toFixed(3)} ms, max ${q(1).toFixed(3)} ms (n=${s.length})`;
}

// 1. The pure handler.
{
  const body = JSON.stringify(createReview(input.pod));
  const times: number[] = [];
  for (let i = 0; i < 25_000; i++) {
    const t0 = performance.now();
    const parsed = parseReview(JSON.parse(body));
    if (!parsed.ok) throw new Error(parsed.message);
    const r = handleAdmission(parsed.request, TEST_CONFIG);
    JSON.stringify(r.review);
    if (i >= 5_000) times.push(performance.now() - t0);
  }
  console.log(`handler (JSON parse + review + patch + JSON encode): ${quantiles(times)}`);
}

// 2. Over HTTPS, keep-alive.
{
  const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--log-level=info'] });
  const payload = JSON.stringify(createReview(input.pod));
  const post = (agent: Agent) =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        `${webhook.url}/mutate`,
        {
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`)),
          );
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  for (const concurrency of [1, 8]) {
    const agent = new Agent({ keepAlive: true, maxSockets: concurrency, ca: webhook.caPem });
    const warmupEnd = performance.now() + 1000;
    const end = warmupEnd + seconds * 1000;
    const times: number[] = [];
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          const t0 = performance.now();
          await post(agent);
          if (t0 >= warmupEnd) times.push(performance.now() - t0);
        }
      }),
    );
    agent.destroy();
    console.log(
      `HTTPS keep-alive, ${concurrency} connection(s): ${quantiles(times)}, ${(times.length / seconds).toFixed(0)} reviews/s`,
    );
  }
  await webhook.stop();
}

// 3. Pod CREATE through the API server.
{
  const cluster = await startCluster();
  const webhook = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--log-level=info'] });
  try {
    const reg = await registerWebhook(cluster.kubeConfig, {
      name: 'lifelease-bench',
      url: webhook.url,
      caPem: webhook.caPem,
    });
    const plainNs = await cluster.createNamespace('bench-plain');
    const hookNs = await cluster.createNamespace('bench-webhook', { 'lifelease-test': reg.name });
    await waitUntilActive(cluster.kubeConfig, hookNs);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const pod = (i: number, opted: boolean): V1Pod => ({
      metadata: {
        name: `p-${opted ? 'o' : 'n'}-${i}`,
        labels: opted ? { app: 'bench', leaderElection: 'true' } : { app: 'bench' },
      },
      spec: { containers: [{ name: 'app', image: 'registry.example/app:1' }] },
    });
    const run = async (namespace: string, opted: boolean) => {
      for (let i = 0; i < 20; i++)
        await core.createNamespacedPod({ namespace, body: pod(1_000_000 + i, opted) });
      const times: number[] = [];
      for (let i = 0; i < podsPerRun; i++) {
        const t0 = performance.now();
        await core.createNamespacedPod({ namespace, body: pod(i, opted) });
        times.push(performance.now() - t0);
      }
      return times;
    };
    // Interleave to spread drift over both.
    const without = await run(plainNs, false);
    const withHook = await run(hookNs, true);
    const without2 = await run(plainNs, true);
    console.log(
      `pod CREATE without the webhook (namespace not selected): ${quantiles([...without, ...without2])}`,
    );
    console.log(`pod CREATE opted in, through the webhook:                ${quantiles(withHook)}`);
    await reg.delete();
  } finally {
    await webhook.stop();
    await cluster.stop();
  }
}
