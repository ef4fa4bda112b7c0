/**
 * Captures real AdmissionReview bodies from kube-apiserver as fuzzing seeds
 * (test/fixtures/admission-reviews/*.json): a throwaway HTTPS endpoint is registered as a
 * mutating webhook, and pods are created directly and by a Deployment, a Job, a StatefulSet
 * and a CronJob's Job; every body the API server sends is saved as it came (uids and times
 * included; they are fixtures, not secrets). Rerun after a Kubernetes upgrade:
 *
 *   node test/chaos/capture-reviews.ts
 */
import { AppsV1Api, BatchV1Api, CoreV1Api } from '@kubernetes/client-node';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServingCertificate } from '../../common/pki.ts';
import { startCluster } from '@lifelease/harness/cluster';
import { registerWebhook } from '../integration/webhook/helpers.ts';
import { REVIEWS_DIR } from './fuzz.ts';

const captured: { name: string; body: unknown }[] = [];
const { ca, serving } = await createServingCertificate(['127.0.0.1']);
const server = createServer({ cert: serving.certPem, key: serving.keyPem }, (req, res) => {
  let text = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => (text += c));
  req.on('end', () => {
    const body = JSON.parse(text) as {
      request: { uid: string; object?: { metadata?: { name?: string; generateName?: string } } };
    };
    const meta = body.request.object?.metadata;
    captured.push({ name: meta?.name ?? `${meta?.generateName ?? 'pod-'}x`, body });
    res.setHeader('content-type', 'application/json');
    res.end(
      JSON.stringify({
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        response: { uid: body.request.uid, allowed: true },
      }),
    );
  });
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = (server.address() as AddressInfo).port;

const cluster = await startCluster();
try {
  const registration = await registerWebhook(cluster.kubeConfig, {
    name: 'capture',
    url: `https://127.0.0.1:${port}`,
    caPem: ca.certPem,
  });
  const ns = await cluster.createNamespace('capture', { [registration.selectorKey]: 'capture' });
  await sleep(2000); // the configuration takes effect asynchronously
  const labels = { leaderElection: 'true' };
  const template = (app: string) => ({
    metadata: { labels: { ...labels, app } },
    spec: {
      containers: [{ name: app, image: `registry.example/${app}:1`, ports: [{ containerPort: 8080 }] }],
    },
  });
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
  const batch = cluster.kubeConfig.makeApiClient(BatchV1Api);
  await core.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name: 'direct', labels, annotations: { 'lifelease.dev/election': 'payments' } },
      spec: {
        automountServiceAccountToken: false,
        containers: [
          {
            name: 'app',
            image: 'registry.example/app:1',
            env: [{ name: 'ELECTOR_PATH', value: 'localhost:9999' }],
          },
          {
            name: 'proxy',
            image: 'registry.example/proxy:1',
            ports: [{ containerPort: 4040, protocol: 'UDP' }],
          },
        ],
        initContainers: [{ name: 'migrate', image: 'registry.example/migrate:1' }],
      },
    },
  });
  await apps.createNamespacedDeployment({
    namespace: ns,
    body: {
      metadata: { name: 'orders' },
      spec: { replicas: 1, selector: { matchLabels: { app: 'orders' } }, template: template('orders') },
    },
  });
  await apps.createNamespacedStatefulSet({
    namespace: ns,
    body: {
      metadata: { name: 'ledger' },
      spec: {
        replicas: 1,
        serviceName: 'ledger',
        selector: { matchLabels: { app: 'ledger' } },
        template: template('ledger'),
      },
    },
  });
  const job = template('report');
  await batch.createNamespacedJob({
    namespace: ns,
    body: {
      metadata: { name: 'report' },
      spec: { template: { ...job, spec: { ...job.spec, restartPolicy: 'Never' } } },
    },
  });
  for (let i = 0; i < 100 && captured.length < 4; i++) await sleep(100);
  await registration.delete();
} finally {
  await cluster.stop();
  server.close();
}

mkdirSync(REVIEWS_DIR, { recursive: true });
for (const { name, body } of captured) {
  const file = path.join(REVIEWS_DIR, `${name.replace(/[^a-z0-9-]/g, '-')}.json`);
  writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}
