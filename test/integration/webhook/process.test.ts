/**
 * The `webhook` process as deployed: no `--elector-image` (it reads its own Pod through the
 * downward-API env and injects its own image), the RBAC reconciler on, running as a
 * ServiceAccount with exactly `WEBHOOK_RBAC_RULES`. A pod created through the API server
 * comes back injected with that image, and its ServiceAccount is granted the elector's Role.
 */
import { CoreV1Api, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { electorRoleName } from '../../../common/rbac.ts';
import { WEBHOOK_RBAC_RULES } from '../../../webhook/rbac-reconciler.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { startWebhookProcess, type WebhookProcess } from '../../support/webhook-process.ts';
import {
  apiStatus,
  electorOf,
  eventually,
  registerWebhook,
  waitUntilActive,
  type Registration,
} from './helpers.ts';

const OWN_IMAGE =
  'registry.example/lifelease@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef';

let cluster: TestCluster;
let webhook: WebhookProcess | undefined;
let registration: Registration | undefined;
let clusterRole: string;

before(async () => {
  cluster = await sharedCluster();
});
after(async () => {
  await registration?.delete();
  await webhook?.stop();
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  await rbac.deleteClusterRole({ name: clusterRole }).catch(() => undefined);
  await cluster.release();
});

test('deployed shape: own image from its Pod, RBAC granted for a pod created through the API server', async () => {
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  const name = `lifelease-test-${randomBytes(4).toString('hex')}`;
  const system = await cluster.createNamespace('webhook-system');
  const apps = await cluster.createNamespace('webhook-apps', { 'lifelease-test': name });

  // The webhook's own Pod object (no kubelet runs it; the process below plays its container).
  await core.createNamespacedServiceAccount({
    namespace: system,
    body: { metadata: { name: 'lifelease-webhook' } },
  });
  await core.createNamespacedPod({
    namespace: system,
    body: {
      metadata: { name: 'lifelease-webhook-0' },
      spec: {
        serviceAccountName: 'lifelease-webhook',
        containers: [
          { name: 'webhook', image: OWN_IMAGE },
          { name: 'other', image: 'registry.example/other:1' },
        ],
      },
    },
  });
  // Its rights: the manifests' ClusterRole rules, bound in the apps namespace only (the
  // reconciler is scoped to it with --rbac-namespace, so other tests' namespaces are left
  // alone), plus reading its own Pod.
  clusterRole = `lifelease-webhook-test-${randomBytes(4).toString('hex')}`;
  await rbac.createClusterRole({ body: { metadata: { name: clusterRole }, rules: WEBHOOK_RBAC_RULES } });
  for (const namespace of [system, apps]) {
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'lifelease-webhook' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
        subjects: [{ kind: 'ServiceAccount', name: 'lifelease-webhook', namespace: system }],
      },
    });
  }
  const kubeconfig = await cluster.serviceAccountKubeconfig(system, 'lifelease-webhook');

  webhook = await startWebhookProcess({
    electorImage: null,
    args: [`--kubeconfig=${kubeconfig}`, `--rbac-namespace=${apps}`, '--metrics-address=127.0.0.1:0'],
    env: { POD_NAME: 'lifelease-webhook-0', POD_NAMESPACE: system },
  });
  assert.ok(
    webhook.logs.some(
      (l) => l['msg'] === 'elector image is the webhook own image' && l['image'] === OWN_IMAGE,
    ),
  );
  registration = await registerWebhook(cluster.kubeConfig, { name, url: webhook.url, caPem: webhook.caPem });
  await waitUntilActive(cluster.kubeConfig, apps);

  await core.createNamespacedServiceAccount({ namespace: apps, body: { metadata: { name: 'reports' } } });
  const pod = await core.createNamespacedPod({
    namespace: apps,
    body: {
      metadata: { name: 'reports-1', labels: { app: 'reports', leaderElection: 'true' } },
      spec: {
        serviceAccountName: 'reports',
        containers: [{ name: 'app', image: 'registry.example/reports:1' }],
      },
    },
  });
  assert.equal(electorOf(pod)?.image, OWN_IMAGE);

  const binding = await eventually('the elector RoleBinding', async () => {
    try {
      return await rbac.readNamespacedRoleBinding({ name: electorRoleName('reports'), namespace: apps });
    } catch (err) {
      if (apiStatus(err) === 404) return undefined;
      throw err;
    }
  });
  assert.deepEqual(
    binding.subjects?.map((s) => `${s.namespace}/${s.name}`),
    [`${apps}/reports`],
  );

  // The metrics listener (plain HTTP) counts the review.
  const metricsLog = webhook.logs.find((l) => l['msg'] === 'webhook listening');
  const metricsUrl = `http://${String(metricsLog?.['metricsAddress'])}/metrics`;
  const text = await (await fetch(metricsUrl)).text();
  assert.match(
    text,
    /lifelease_webhook_admission_reviews_total\{outcome="patched",reason="injected"\} [1-9]/,
  );
  assert.match(text, /lifelease_webhook_rbac_reconciles_total\{result="applied"\} [1-9]/);
  assert.match(text, /lifelease_webhook_certificate_expiry_timestamp_seconds [1-9]/);

  assert.equal(await webhook.stop(), 0);
  webhook = undefined;
});
