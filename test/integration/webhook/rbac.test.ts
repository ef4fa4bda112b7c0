/**
 * The RBAC reconciler on the real API server, running as a ServiceAccount that holds exactly
 * `WEBHOOK_RBAC_RULES` (what the manifests grant the webhook): electing pods' ServiceAccounts
 * get the elector's Role, which allows exactly what `common/rbac.ts` says; the binding
 * follows the pods; finished pods and stale grants are cleaned up.
 */
import {
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  V1MicroTime,
  type V1Pod,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../../../common/logger.ts';
import { electorRole, electorRoleName } from '../../../common/rbac.ts';
import { createMetrics } from '../../../webhook/metrics.ts';
import { RbacReconciler, WEBHOOK_RBAC_RULES } from '../../../webhook/rbac-reconciler.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { apiStatus, eventually } from './helpers.ts';

const ELECTION = 'jobs';
let cluster: TestCluster;
let ns: string;
let clusterRole: string;
let reconciler: RbacReconciler | undefined;
let webhookKc: KubeConfig;
let core: CoreV1Api;
let rbac: RbacAuthorizationV1Api;

async function kubeConfigAs(serviceAccount: string): Promise<KubeConfig> {
  const kc = new KubeConfig();
  kc.loadFromFile(await cluster.serviceAccountKubeconfig(ns, serviceAccount));
  return kc;
}

function startReconciler(): RbacReconciler {
  const r = new RbacReconciler({
    kubeConfig: webhookKc,
    logger: createLogger({ level: 'silent', stream: process.stdout }),
    metrics: createMetrics({ defaultMetrics: false }),
    namespace: ns,
    resyncMs: 1000,
    backoffMs: 100,
  });
  return r;
}

function electingPod(name: string, serviceAccountName: string): V1Pod {
  return {
    metadata: { name, labels: { 'lifelease.dev/election': ELECTION } },
    spec: { serviceAccountName, containers: [{ name: 'app', image: 'registry.example/app:1' }] },
  };
}

async function bindingSubjects(): Promise<string[] | undefined> {
  try {
    const rb = await rbac.readNamespacedRoleBinding({ name: electorRoleName(ELECTION), namespace: ns });
    return (rb.subjects ?? []).map((s) => s.name);
  } catch (err) {
    if (apiStatus(err) === 404) return undefined;
    throw err;
  }
}

before(async () => {
  cluster = await sharedCluster();
  core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  ns = await cluster.createNamespace('webhook-rbac');
  clusterRole = `lifelease-webhook-test-${randomBytes(4).toString('hex')}`;
  // The webhook's identity: exactly the rules the manifests give it, nothing else.
  await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'webhook' } } });
  await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'worker' } } });
  await rbac.createClusterRole({ body: { metadata: { name: clusterRole }, rules: WEBHOOK_RBAC_RULES } });
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name: clusterRole },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
      subjects: [{ kind: 'ServiceAccount', name: 'webhook', namespace: ns }],
    },
  });
  webhookKc = await kubeConfigAs('webhook');
});

after(async () => {
  await reconciler?.stop();
  await rbac.deleteClusterRoleBinding({ name: clusterRole }).catch(() => undefined);
  await rbac.deleteClusterRole({ name: clusterRole }).catch(() => undefined);
  await cluster?.release();
});

describe('RBAC reconciler', () => {
  test('grants the Role to every electing ServiceAccount, and the Role allows exactly the elector rules', async () => {
    reconciler = startReconciler();
    await reconciler.start();
    assert.equal(reconciler.synced, true);
    await core.createNamespacedPod({ namespace: ns, body: electingPod('a', 'worker') });
    await core.createNamespacedPod({ namespace: ns, body: electingPod('b', 'default') });
    await eventually('a RoleBinding for worker and default', async () => {
      const s = await bindingSubjects();
      return s?.join() === 'default,worker' ? s : undefined;
    });
    const role = await rbac.readNamespacedRole({ name: electorRoleName(ELECTION), namespace: ns });
    assert.deepEqual(JSON.parse(JSON.stringify(role.rules)), electorRole(ns, ELECTION).rules);

    // Seen from the elector's side: what it needs works, nothing more.
    const leases = (await kubeConfigAs('worker')).makeApiClient(CoordinationV1Api);
    const pods = (await kubeConfigAs('worker')).makeApiClient(CoreV1Api);
    await leases.createNamespacedLease({
      namespace: ns,
      body: {
        metadata: { name: ELECTION },
        spec: { holderIdentity: 'a', acquireTime: new V1MicroTime() },
      },
    });
    await leases.readNamespacedLease({ name: ELECTION, namespace: ns });
    await leases.listNamespacedLease({ namespace: ns, fieldSelector: `metadata.name=${ELECTION}` });
    await pods.readNamespacedPod({ name: 'a', namespace: ns });
    const forbidden = async (what: string, fn: () => Promise<unknown>) =>
      assert.rejects(fn(), (e) => apiStatus(e) === 403, `${what} should be forbidden`);
    await forbidden('reading another Lease', () =>
      leases.readNamespacedLease({ name: 'other', namespace: ns }),
    );
    await forbidden('listing all Leases', () => leases.listNamespacedLease({ namespace: ns }));
    await forbidden('updating the Lease', () =>
      leases.patchNamespacedLease({
        name: ELECTION,
        namespace: ns,
        body: [{ op: 'add', path: '/metadata/labels', value: { x: 'y' } }],
      }),
    );
    await forbidden('listing pods', () => pods.listNamespacedPod({ namespace: ns }));
    await forbidden('reading Secrets', () => pods.listNamespacedSecret({ namespace: ns }));
  });

  test('the binding follows the pods; finished pods no longer count', async () => {
    await core.deleteNamespacedPod({ name: 'b', namespace: ns, gracePeriodSeconds: 0 });
    await eventually('only worker bound', async () =>
      (await bindingSubjects())?.join() === 'worker' ? true : undefined,
    );

    // The last pod finishes (as a completed Job's would): the grant goes away.
    const a = await core.readNamespacedPod({ name: 'a', namespace: ns });
    await core.replaceNamespacedPodStatus({
      name: 'a',
      namespace: ns,
      body: { ...a, status: { ...a.status, phase: 'Succeeded' } },
    });
    await eventually('the RoleBinding removed', async () =>
      (await bindingSubjects()) === undefined ? true : undefined,
    );
    // The binding goes first (so no subject ever holds a half-removed grant), then the Role.
    await eventually('the Role removed', async () => {
      try {
        await rbac.readNamespacedRole({ name: electorRoleName(ELECTION), namespace: ns });
        return undefined;
      } catch (err) {
        return apiStatus(err) === 404 ? true : undefined;
      }
    });
  });

  test('a grant left behind while the reconciler was down is removed at start', async () => {
    await reconciler?.stop();
    reconciler = undefined;
    await rbac.createNamespacedRole({ namespace: ns, body: electorRole(ns, 'gone') });
    reconciler = startReconciler();
    await reconciler.start();
    await eventually('the stale Role removed', async () => {
      try {
        await rbac.readNamespacedRole({ name: electorRoleName('gone'), namespace: ns });
        return undefined;
      } catch (err) {
        return apiStatus(err) === 404 ? true : undefined;
      }
    });
  });
});
