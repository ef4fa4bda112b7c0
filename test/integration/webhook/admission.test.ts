/**
 * The webhook process against the real kube-apiserver: registered with a
 * MutatingWebhookConfiguration (URL + caBundle), pods created directly and through a
 * Deployment come back injected and are accepted (Pod Security `restricted` included),
 * refusals reach the user with their message, pods that did not opt in are untouched, and
 * with the webhook stopped only opted-in pods fail.
 */
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request, type RequestOptions } from 'node:https';
import { after, before, describe, test } from 'node:test';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { handleAdmission } from '../../../webhook/admission.ts';
import { TEST_CONFIG } from '../../support/admission-reviews.ts';
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

const IMAGE = 'registry.example/lifelease:it';
const RESTRICTED_APP = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  runAsUser: 10001,
  seccompProfile: { type: 'RuntimeDefault' },
};

let cluster: TestCluster;
let webhook: WebhookProcess;
let registration: Registration;
let ns: string;
let restrictedNs: string;
let core: CoreV1Api;

before(async () => {
  cluster = await sharedCluster();
  core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  webhook = await startWebhookProcess({ electorImage: IMAGE, args: ['--reconcile-rbac=false'] });
  const name = `lifelease-test-${randomBytes(4).toString('hex')}`;
  registration = await registerWebhook(cluster.kubeConfig, { name, url: webhook.url, caPem: webhook.caPem });
  ns = await cluster.createNamespace('webhook', { 'lifelease-test': name });
  restrictedNs = await cluster.createNamespace('webhook-psa', {
    'lifelease-test': name,
    'pod-security.kubernetes.io/enforce': 'restricted',
    'pod-security.kubernetes.io/enforce-version': 'latest',
  });
  await waitUntilActive(cluster.kubeConfig, ns);
});

after(async () => {
  await registration?.delete();
  await webhook?.stop();
  await cluster?.release();
});

function appPod(
  name: string,
  labels: Record<string, string>,
  extra: Partial<NonNullable<V1Pod['spec']>> = {},
): V1Pod {
  return {
    metadata: { name, labels },
    spec: {
      containers: [{ name: 'app', image: 'registry.example/app:1', ports: [{ containerPort: 8080 }] }],
      ...extra,
    },
  };
}

async function createRefused(
  namespace: string,
  pod: V1Pod,
): Promise<{ code: number | undefined; message: string }> {
  try {
    await core.createNamespacedPod({ namespace, body: pod });
  } catch (err) {
    return { code: apiStatus(err), message: apiMessage(err) };
  }
  assert.fail(`pod ${pod.metadata?.name} was accepted`);
}

describe('injection through the API server', () => {
  test('a pod created directly comes back injected, accepted, with the token mounted into the elector', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('direct', { app: 'orders', leaderElection: 'true' }),
    });
    const elector = electorOf(created);
    assert.ok(elector, 'no elector');
    assert.equal(created.spec?.initContainers?.[0]?.name, 'elector');
    assert.equal(elector.restartPolicy, 'Always');
    assert.equal(elector.image, IMAGE);
    assert.deepEqual(elector.args, [
      'elector',
      '--election=orders',
      `--election-namespace=${ns}`,
      '--http=127.0.0.1:4040',
      '--probe-address=0.0.0.0:4041',
    ]);
    assert.equal(created.metadata?.labels?.['lifelease.dev/election'], 'orders');
    assert.match(created.metadata?.annotations?.['lifelease.dev/injected'] ?? '', /"election":"orders"/);
    const env = created.spec?.containers[0]?.env?.map((e) => `${e.name}=${e.value}`);
    assert.deepEqual(env, [
      'ELECTOR_PATH=localhost:4040',
      'ELECTOR_GET_URL=http://localhost:4040/',
      'ELECTOR_SSE_URL=http://localhost:4040/sse',
    ]);
    // The ServiceAccount admission plugin ran before us; the elector uses its token volume.
    const mount = elector.volumeMounts?.find(
      (m) => m.mountPath === '/var/run/secrets/kubernetes.io/serviceaccount',
    );
    assert.match(mount?.name ?? '', /^kube-api-access-/);
    assert.ok(created.spec?.volumes?.some((v) => v.name === mount?.name));

    // What the API server stored (defaults filled in) is a fixed point: re-review changes nothing.
    const stored = await core.readNamespacedPod({ name: 'direct', namespace: ns });
    const again = handleAdmission(
      {
        uid: 'rereview',
        kind: { group: '', version: 'v1', kind: 'Pod' },
        operation: 'CREATE',
        namespace: ns,
        object: JSON.parse(JSON.stringify(stored)) as unknown,
      },
      { ...TEST_CONFIG, image: IMAGE },
    );
    assert.equal(again.reason, 'already-injected', JSON.stringify(again.review));
  });

  test('opt-in by annotation only (the CEL matchCondition webhook)', async () => {
    const pod = appPod('annotated', { app: 'billing' });
    pod.metadata!.annotations = { leaderElection: 'TRUE' };
    const created = await core.createNamespacedPod({ namespace: ns, body: pod });
    assert.ok(electorOf(created));
    assert.equal(created.metadata?.labels?.['lifelease.dev/election'], 'billing');
  });

  test('automountServiceAccountToken: false gets a projected token in the elector only', async () => {
    const created = await core.createNamespacedPod({
      namespace: ns,
      body: appPod(
        'no-automount',
        { app: 'quiet', leaderElection: 'true' },
        { automountServiceAccountToken: false },
      ),
    });
    const elector = electorOf(created);
    assert.deepEqual(
      elector?.volumeMounts?.map((m) => m.name),
      ['lifelease-elector-token'],
    );
    assert.equal(created.spec?.containers[0]?.volumeMounts, undefined);
    assert.ok(created.spec?.volumes?.some((v) => v.name === 'lifelease-elector-token' && v.projected));
  });

  test('pods of a Deployment come back injected, named after the Deployment', async () => {
    const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'ledger' },
        spec: {
          replicas: 2,
          selector: { matchLabels: { component: 'ledger' } },
          template: {
            metadata: { labels: { component: 'ledger', leaderElection: 'true' } },
            spec: { containers: [{ name: 'ledger', image: 'registry.example/ledger:1' }] },
          },
        },
      },
    });
    const pods = await eventually('two ledger pods', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'component=ledger' });
      return list.items.length >= 2 ? list.items : undefined;
    });
    for (const p of pods) {
      assert.ok(electorOf(p), `${p.metadata?.name} has no elector`);
      assert.equal(p.metadata?.labels?.['lifelease.dev/election'], 'ledger', 'ReplicaSet hash stripped');
      assert.deepEqual(
        p.spec?.containers[0]?.env?.map((e) => e.name),
        ['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL'],
      );
    }
  });

  test('Pod Security restricted: an injected pod is accepted; a non-compliant one is not', async () => {
    const compliant = appPod(
      'secure',
      { app: 'secure', leaderElection: 'true' },
      { securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } } },
    );
    compliant.spec!.containers[0]!.securityContext = RESTRICTED_APP;
    const created = await core.createNamespacedPod({ namespace: restrictedNs, body: compliant });
    assert.ok(electorOf(created));

    // The control: enforcement is on (an app without a security context is refused).
    const refused = await createRefused(
      restrictedNs,
      appPod('insecure', { app: 'insecure', leaderElection: 'true' }),
    );
    assert.equal(refused.code, 403);
    assert.match(refused.message, /violates PodSecurity "restricted/);
    assert.doesNotMatch(refused.message, /"elector"/, 'the elector itself must never be the violation');
  });

  const refusals: { name: string; pod: () => V1Pod; message: RegExp }[] = [
    {
      name: 'hostNetwork',
      pod: () => appPod('hostnet', { app: 'h', leaderElection: 'true' }, { hostNetwork: true }),
      message: /denied the request: pods with hostNetwork: true cannot take part/,
    },
    {
      name: 'an opt-in value other than true/false',
      pod: () => appPod('yes', { app: 'y', leaderElection: 'yes' }),
      message: /label leaderElection="yes" must be "true" or "false"/,
    },
    {
      name: 'a port clash',
      pod: () => ({
        metadata: { name: 'clash', labels: { app: 'c', leaderElection: 'true' } },
        spec: { containers: [{ name: 'web', image: 'x', ports: [{ containerPort: 4040 }] }] },
      }),
      message: /container "web" uses port 4040.*lifelease.dev\/election-port/,
    },
    {
      name: 'an invalid explicit election name',
      pod: () => ({
        ...appPod('badname', { leaderElection: 'true' }),
        metadata: {
          name: 'badname',
          labels: { leaderElection: 'true' },
          annotations: { 'lifelease.dev/election': 'Not_Valid' },
        },
      }),
      message: /lifelease.dev\/election="Not_Valid" is not a valid election name/,
    },
  ];
  for (const r of refusals) {
    test(`refused with its message: ${r.name}`, async () => {
      const { code, message } = await createRefused(ns, r.pod());
      assert.equal(code, 403);
      assert.match(message, r.message);
    });
  }

  test('pods that did not opt in (or opted out) are untouched', async () => {
    for (const [name, labels] of [
      ['plain', { app: 'plain' }],
      ['opted-out', { app: 'out', leaderElection: 'False' }],
    ] as const) {
      const body = appPod(name, labels);
      const created = await core.createNamespacedPod({ namespace: ns, body });
      assert.equal(electorOf(created), undefined);
      assert.equal(created.spec?.initContainers, undefined);
      assert.equal(created.spec?.containers[0]?.env, undefined);
      assert.equal(created.metadata?.annotations?.['lifelease.dev/injected'], undefined);
    }
  });

  test('dryRun: answered the same, nothing stored', async () => {
    const pod = await core.createNamespacedPod({
      namespace: ns,
      dryRun: 'All',
      body: appPod('dry', { app: 'dry', leaderElection: 'true' }),
    });
    assert.ok(electorOf(pod));
    await assert.rejects(core.readNamespacedPod({ name: 'dry', namespace: ns }), (e) => apiStatus(e) === 404);
  });

  test('admission warnings reach the client (Warning header)', async () => {
    const opts: RequestOptions = {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
    };
    await cluster.kubeConfig.applyToHTTPSOptions(opts);
    const body = JSON.stringify(appPod('lonely', { leaderElection: 'true' }));
    const warning = await new Promise<string>((resolve, reject) => {
      const req = request(`${cluster.server}/api/v1/namespaces/${ns}/pods`, opts, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.headers['warning'] ?? '')));
      });
      req.on('error', reject);
      req.end(body);
    });
    assert.match(warning, /election \\?"lonely\\?" is this pod's own name/);
  });

  // Last: stops the webhook.
  test('with the webhook stopped: pods that did not opt in are still created, opted-in pods fail loudly', async () => {
    await webhook.stop();
    const plain = await core.createNamespacedPod({
      namespace: ns,
      body: appPod('after-stop', { app: 'plain' }),
    });
    assert.equal(electorOf(plain), undefined);
    // Explicitly opted out, by label or annotation: never sent to the webhook either.
    await core.createNamespacedPod({
      namespace: ns,
      body: appPod('out-after-stop', { app: 'o', leaderElection: 'FALSE' }),
    });
    await core.createNamespacedPod({
      namespace: ns,
      body: {
        ...appPod('out-ann-after-stop', { app: 'o' }),
        metadata: { name: 'out-ann-after-stop', annotations: { leaderElection: 'false' } },
      },
    });
    const annotatedOnlyOther = appPod('other-annotation', { app: 'other' });
    annotatedOnlyOther.metadata!.annotations = { 'example.com/unrelated': 'x' };
    await core.createNamespacedPod({ namespace: ns, body: annotatedOnlyOther });

    for (const pod of [
      appPod('opted-after-stop', { app: 'x', leaderElection: 'true' }),
      appPod('invalid-after-stop', { app: 'x', leaderElection: 'yes' }),
      {
        ...appPod('annotated-after-stop', { app: 'x' }),
        metadata: { name: 'annotated-after-stop', annotations: { leaderElection: 'true' } },
      },
    ]) {
      const { code, message } = await createRefused(ns, pod);
      assert.equal(code, 500);
      assert.match(message, /failed calling webhook "(label|annotation)\.inject\.lifelease\.dev"/);
    }
  });
});
