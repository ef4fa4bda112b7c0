/**
 * The pod specs of issue 12 through the real kube-apiserver (v1.36, its validation and
 * defaulting) with the webhook registered as shipped: what we inject is accepted, what we
 * refuse reaches the user with a message, and Deployments whose template has pod-level
 * resources or shared labels make their pods (the controllers run in the shared cluster).
 */
import { AppsV1Api, CoreV1Api, type V1Pod, type V1PodSpec } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { startWebhookProcess, type WebhookProcess } from '../../support/webhook-process.ts';
import {
  apiMessage,
  apiStatus,
  electorOf,
  eventually,
  registerWebhook,
  waitUntilActive,
  type Registration,
} from './helpers.ts';

let cluster: TestCluster;
let webhook: WebhookProcess;
let registration: Registration;
let ns: string;
let core: CoreV1Api;
let apps: AppsV1Api;

before(async () => {
  cluster = await sharedCluster();
  core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
  webhook = await startWebhookProcess({
    electorImage: 'registry.example/lifelease:it',
    args: ['--reconcile-rbac=false'],
  });
  const name = `lifelease-test-${randomBytes(4).toString('hex')}`;
  registration = await registerWebhook(cluster.kubeConfig, { name, url: webhook.url, caPem: webhook.caPem });
  ns = await cluster.createNamespace('real-world', { 'lifelease-test': name });
  await waitUntilActive(cluster.kubeConfig, ns);
});

after(async () => {
  await registration?.delete();
  await webhook?.stop();
  await cluster?.release();
});

const APP = { name: 'app', image: 'registry.example/app:1' };

function appPod(name: string, spec: Partial<V1PodSpec> = {}, meta: V1Pod['metadata'] = {}): V1Pod {
  return {
    metadata: { name, ...meta, labels: { app: 'shared', leaderElection: 'true', ...meta.labels } },
    spec: { containers: [APP], ...spec },
  };
}

async function refused(pod: V1Pod): Promise<{ code: number | undefined; message: string }> {
  try {
    await core.createNamespacedPod({ namespace: ns, body: pod });
  } catch (err) {
    return { code: apiStatus(err), message: apiMessage(err) };
  }
  assert.fail(`pod ${pod.metadata?.name} was accepted`);
}

/** A ReplicaSet (or other) owner reference; the API server does not check that it exists. */
const ownedBy = (kind: string, name: string) => ({
  ownerReferences: [
    {
      apiVersion: kind === 'Job' ? 'batch/v1' : 'apps/v1',
      kind,
      name,
      uid: `${randomBytes(8).toString('hex')}`,
      controller: true,
    },
  ],
});

describe('real-world pod specs through the API server', () => {
  test('1. pod-level resources: a Deployment makes its pods, the pod budget grown by the elector', async () => {
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'budget' },
        spec: {
          replicas: 1,
          selector: { matchLabels: { component: 'budget' } },
          template: {
            metadata: { labels: { component: 'budget', leaderElection: 'true' } },
            spec: {
              resources: { requests: { cpu: '250m', memory: '50Mi' }, limits: { cpu: '1', memory: '256Mi' } },
              containers: [{ ...APP, resources: { requests: { cpu: '250m', memory: '50Mi' } } }],
            },
          },
        },
      },
    });
    const [pod] = await eventually('a budget pod', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'component=budget' });
      return list.items.length >= 1 ? list.items : undefined;
    });
    assert.ok(pod && electorOf(pod));
    assert.deepEqual(
      { ...pod.spec?.resources },
      {
        requests: { cpu: '260m', memory: '98Mi' },
        limits: { cpu: '1250m', memory: '384Mi' },
      },
    );
  });

  test('1. pod-level limits only: the API server defaults requests, and accepts the injected pod', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('limits-only', { resources: { limits: { cpu: '500m', memory: '100Mi' } } }),
    });
    assert.ok(electorOf(created));
    assert.deepEqual(created.spec?.resources?.limits, { cpu: '750m', memory: '228Mi' });
  });

  test('2. Windows pods are refused with what to change', async () => {
    for (const [name, spec] of [
      ['win-os', { os: { name: 'windows' } }],
      ['win-selector', { nodeSelector: { 'kubernetes.io/os': 'windows' } }],
    ] as const) {
      const r = await refused(appPod(name, spec));
      assert.equal(r.code, 403);
      assert.match(r.message, /runs on Windows nodes .*Linux container; set leaderElection: "false"/);
    }
  });

  test('3. a hostname in a ReplicaSet’s pods is refused; in a StatefulSet’s pods and a bare pod accepted', async () => {
    const r = await refused(
      appPod('', { hostname: 'web' }, { generateName: 'web-1-', ...ownedBy('ReplicaSet', 'web-1') }),
    );
    assert.equal(r.code, 403);
    assert.match(
      r.message,
      /spec.hostname "web" is the same in every pod of ReplicaSet "web-1".*remove spec.hostname/,
    );
    const sts = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('db-0', { hostname: 'db-0' }, ownedBy('StatefulSet', 'db')),
    });
    assert.equal(sts.metadata?.labels?.['lifelease.dev/election'], 'db');
    assert.ok(
      electorOf(
        await core.createNamespacedPod({ namespace: ns, body: appPod('alone', { hostname: 'alone' }) }),
      ),
    );
  });

  test('4. a pod that runs as root: the elector gets a non-root uid/gid of its own', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('root', { securityContext: { runAsUser: 0, runAsGroup: 0 } }),
    });
    const sc = electorOf(created)?.securityContext;
    assert.equal(sc?.runAsUser, 65532);
    assert.equal(sc?.runAsGroup, 65532);
    assert.equal(sc?.runAsNonRoot, true);
  });

  test('5. two Deployments with the same app label get an election each', async () => {
    for (const version of ['v1', 'v2']) {
      await apps.createNamespacedDeployment({
        namespace: ns,
        body: {
          metadata: { name: `reviews-${version}` },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: 'reviews', version } },
            template: {
              metadata: { labels: { app: 'reviews', version, leaderElection: 'true' } },
              spec: { containers: [APP] },
            },
          },
        },
      });
    }
    const pods = await eventually('a pod of each reviews Deployment', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=reviews' });
      return list.items.length >= 2 ? list.items : undefined;
    });
    const elections = pods.map((p) => p.metadata?.labels?.['lifelease.dev/election']).sort();
    assert.deepEqual(elections, ['reviews-v1', 'reviews-v2']);
  });

  test('6 and 7. the elector is the last init container; the user’s native sidecar gets the env', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('sidecars', {
        initContainers: [
          { name: 'setup', image: 'registry.example/setup:1' },
          { name: 'shipper', image: 'registry.example/shipper:1', restartPolicy: 'Always' },
        ],
      }),
    });
    assert.deepEqual(
      created.spec?.initContainers?.map((c) => c.name),
      ['setup', 'shipper', 'elector'],
    );
    const envOf = (name: string) =>
      created.spec?.initContainers?.find((c) => c.name === name)?.env?.map((e) => e.name);
    assert.equal(envOf('setup'), undefined);
    assert.deepEqual(envOf('shipper'), ['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL']);
  });

  test('8. envFrom: the env is added, and its own ELECTOR_* in env kept', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('envfrom', {
        containers: [
          {
            ...APP,
            envFrom: [{ configMapRef: { name: 'settings', optional: true } }],
            env: [{ name: 'ELECTOR_GET_URL', value: 'http://localhost:4040/' }],
          },
        ],
      }),
    });
    assert.deepEqual(
      created.spec?.containers[0]?.env?.map((e) => e.name),
      ['ELECTOR_PATH', 'ELECTOR_SSE_URL', 'ELECTOR_GET_URL'],
    );
  });
});
