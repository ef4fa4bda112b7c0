/**
 * Living with another injector, on the real API server: a second mutating webhook (a stand-in
 * for a mesh injector) that runs after ours adds a native sidecar and an app container. With
 * `reinvocationPolicy: IfNeeded` the API server calls ours again; the result has one
 * elector, the env in the newcomer's app container too, and nothing duplicated.
 */
import { AdmissionregistrationV1Api, CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import Fastify from 'fastify';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createServingCertificate } from '../../../common/pki.ts';
import { createPatch } from '../../../webhook/patch.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { startWebhookProcess, type WebhookProcess } from '../../support/webhook-process.ts';
import { electorOf, registerWebhook, waitUntilActive, type Registration } from './helpers.ts';

let cluster: TestCluster;
let ours: WebhookProcess | undefined;
let registration: Registration | undefined;
let other: { close(): PromiseLike<unknown> } | undefined;
let otherName = '';
let otherCalls = 0;

before(async () => {
  cluster = await sharedCluster();
});
after(async () => {
  await registration?.delete();
  if (otherName) {
    await cluster.kubeConfig
      .makeApiClient(AdmissionregistrationV1Api)
      .deleteMutatingWebhookConfiguration({ name: otherName })
      .catch(() => undefined);
  }
  await other?.close();
  await ours?.stop();
  await cluster.release();
});

/** The other injector: adds `mesh-proxy` (native sidecar) and `mesh-agent` (app container) once. */
async function startOtherInjector(): Promise<{ url: string; caPem: string }> {
  const { ca, serving } = await createServingCertificate(['127.0.0.1']);
  const app = Fastify({ https: { cert: serving.certPem, key: serving.keyPem } });
  other = app;
  app.post('/mutate', (request) => {
    otherCalls += 1;
    const review = request.body as { request: { uid: string; object: V1Pod } };
    const pod = review.request.object;
    const out = structuredClone(pod);
    const spec = out.spec!;
    const has = (name: string) =>
      [...(spec.initContainers ?? []), ...spec.containers].some((c) => c.name === name);
    if (!has('mesh-proxy')) {
      const proxy: V1Container = {
        name: 'mesh-proxy',
        image: 'registry.example/mesh:1',
        restartPolicy: 'Always',
      };
      spec.initContainers = [proxy, ...(spec.initContainers ?? [])];
    }
    if (!has('mesh-agent'))
      spec.containers = [...spec.containers, { name: 'mesh-agent', image: 'registry.example/agent:1' }];
    const ops = createPatch(pod, out);
    return {
      apiVersion: 'admission.k8s.io/v1',
      kind: 'AdmissionReview',
      response: {
        uid: review.request.uid,
        allowed: true,
        ...(ops.length > 0
          ? { patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(ops)).toString('base64') }
          : {}),
      },
    };
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { url: `https://127.0.0.1:${(app.server.address() as AddressInfo).port}`, caPem: ca.certPem };
}

test('another injector after ours: reinvoked, one elector, env in every app container, nothing twice', async () => {
  const id = randomBytes(4).toString('hex');
  ours = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--log-level=debug'] });
  // Webhooks run in the order of their configurations' names: ours ("a-…") first, then theirs ("z-…").
  registration = await registerWebhook(cluster.kubeConfig, {
    name: `a-lifelease-test-${id}`,
    url: ours.url,
    caPem: ours.caPem,
  });
  const ns = await cluster.createNamespace('webhook-reinvoke', { 'lifelease-test': registration.name });
  const mesh = await startOtherInjector();
  otherName = `z-mesh-test-${id}`;
  await cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api).createMutatingWebhookConfiguration({
    body: {
      metadata: { name: otherName },
      webhooks: [
        {
          name: 'inject.mesh.example',
          admissionReviewVersions: ['v1'],
          clientConfig: { url: `${mesh.url}/mutate`, caBundle: Buffer.from(mesh.caPem).toString('base64') },
          rules: [{ operations: ['CREATE'], apiGroups: [''], apiVersions: ['v1'], resources: ['pods'] }],
          namespaceSelector: { matchLabels: { 'lifelease-test': registration.name } },
          failurePolicy: 'Fail',
          sideEffects: 'None',
          reinvocationPolicy: 'Never',
        },
      ],
    },
  });
  await waitUntilActive(cluster.kubeConfig, ns);
  // Both active: the marker now also gets the mesh's containers.
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  for (let i = 0; i < 300; i++) {
    const p = await core.createNamespacedPod({
      namespace: ns,
      dryRun: 'All',
      body: {
        metadata: { generateName: 'm-', labels: { leaderElection: 'true', app: 'm' } },
        spec: { containers: [{ name: 'c', image: 'x' }] },
      },
    });
    if (p.spec?.containers.some((c) => c.name === 'mesh-agent')) break;
    await new Promise((r) => setTimeout(r, 100));
  }

  const pod = await core.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name: 'shop-0', labels: { app: 'shop', leaderElection: 'true' } },
      spec: { containers: [{ name: 'shop', image: 'registry.example/shop:1' }] },
    },
  });

  assert.deepEqual(
    pod.spec?.initContainers?.map((c) => c.name),
    ['mesh-proxy', 'elector'],
    'the mesh prepends its proxy; ours stays in place',
  );
  assert.deepEqual(
    pod.spec?.containers.map((c) => c.name),
    ['shop', 'mesh-agent'],
  );
  assert.ok(electorOf(pod));
  for (const c of pod.spec?.containers ?? []) {
    assert.deepEqual(
      c.env?.map((e) => e.name),
      ['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL'],
      `${c.name} has the env exactly once`,
    );
  }
  assert.ok(otherCalls > 0);
  // Ours ran twice for this pod: the first injection, and the reinvocation that added the
  // env to mesh-agent (logged at info as 'elector injected' because it patched).
  await new Promise((r) => setTimeout(r, 200));
  const forPod = ours.logs.filter((l) => l['pod'] === 'shop-0');
  assert.deepEqual(
    forPod.map((l) => l['msg']),
    ['elector injected', 'elector injected'],
    JSON.stringify(forPod),
  );
});
