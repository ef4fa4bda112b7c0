/**
 * The egress NetworkPolicies of the RBAC reconciler on the real API server, running as a
 * ServiceAccount that holds exactly `WEBHOOK_RBAC_RULES` and `WEBHOOK_EGRESS_RULES` (what the
 * manifests and the chart grant with the option on):
 * - `always`, addresses and port from the flags: a policy per election with exactly those,
 *   removed with the election's last pod;
 * - `if-isolated`: no policy while nothing isolates the pods' egress; one once a default deny
 *   exists (at the next reconcile); removed again once the default deny is gone.
 * The local cluster's CNI stand-in does not enforce NetworkPolicies: these are object checks.
 */
import {
  CoreV1Api,
  KubeConfig,
  NetworkingV1Api,
  RbacAuthorizationV1Api,
  type V1NetworkPolicy,
  type V1Pod,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../../../common/logger.ts';
import { WEBHOOK_EGRESS_RULES, type EgressPolicyMode } from '../../../webhook/egress-policy.ts';
import { createMetrics } from '../../../webhook/metrics.ts';
import { RbacReconciler, WEBHOOK_RBAC_RULES } from '../../../webhook/rbac-reconciler.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { apiStatus, eventually } from './helpers.ts';

let cluster: TestCluster;
let ns: string;
let clusterRole: string;
let webhookKc: KubeConfig;
let core: CoreV1Api;
let networking: NetworkingV1Api;
let rbac: RbacAuthorizationV1Api;
const reconcilers: RbacReconciler[] = [];

function start(egress: { mode: EgressPolicyMode; addresses?: string[]; port?: number }): RbacReconciler {
  const r = new RbacReconciler({
    kubeConfig: webhookKc,
    logger: createLogger({ level: 'silent', stream: process.stdout }),
    metrics: createMetrics({ defaultMetrics: false }),
    namespace: ns,
    resyncMs: 500,
    backoffMs: 100,
    egress,
  });
  reconcilers.push(r);
  return r;
}

const pod = (name: string, election: string): V1Pod => ({
  metadata: { name, labels: { 'lifelease.dev/election': election } },
  spec: { containers: [{ name: 'app', image: 'registry.example/app:1' }] },
});

async function policy(election: string): Promise<V1NetworkPolicy | undefined> {
  try {
    return await networking.readNamespacedNetworkPolicy({
      name: `lifelease-elector-${election}`,
      namespace: ns,
    });
  } catch (err) {
    if (apiStatus(err) === 404) return undefined;
    throw err;
  }
}

before(async () => {
  cluster = await sharedCluster();
  core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  networking = cluster.kubeConfig.makeApiClient(NetworkingV1Api);
  rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
  ns = await cluster.createNamespace('webhook-egress');
  clusterRole = `lifelease-webhook-egress-test-${randomBytes(4).toString('hex')}`;
  await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'webhook' } } });
  await rbac.createClusterRole({
    body: { metadata: { name: clusterRole }, rules: [...WEBHOOK_RBAC_RULES, ...WEBHOOK_EGRESS_RULES] },
  });
  await rbac.createClusterRoleBinding({
    body: {
      metadata: { name: clusterRole },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: clusterRole },
      subjects: [{ kind: 'ServiceAccount', name: 'webhook', namespace: ns }],
    },
  });
  webhookKc = new KubeConfig();
  webhookKc.loadFromFile(await cluster.serviceAccountKubeconfig(ns, 'webhook'));
});

after(async () => {
  for (const r of reconcilers) await r.stop();
  await rbac.deleteClusterRoleBinding({ name: clusterRole }).catch(() => undefined);
  await rbac.deleteClusterRole({ name: clusterRole }).catch(() => undefined);
  await cluster?.release();
});

describe('elector egress NetworkPolicies', () => {
  test('always, from the flags: exactly those addresses and port for that election, gone with its pods', async () => {
    const r = start({ mode: 'always', addresses: ['10.9.0.1/32', '10.9.0.2/32'], port: 6443 });
    await r.start();
    await core.createNamespacedPod({ namespace: ns, body: pod('a-1', 'alpha') });
    const p = await eventually('the policy of alpha', () => policy('alpha'));
    assert.deepEqual(JSON.parse(JSON.stringify(p.spec)), {
      podSelector: { matchLabels: { 'lifelease.dev/election': 'alpha' } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: [{ ipBlock: { cidr: '10.9.0.1/32' } }, { ipBlock: { cidr: '10.9.0.2/32' } }],
          ports: [{ protocol: 'TCP', port: 6443 }],
        },
      ],
    });
    assert.deepEqual(p.metadata?.labels, {
      'app.kubernetes.io/managed-by': 'lifelease',
      'lifelease.dev/election': 'alpha',
    });
    await core.deleteNamespacedPod({ name: 'a-1', namespace: ns, gracePeriodSeconds: 0 });
    await eventually('the policy of alpha removed', async () => (await policy('alpha')) === undefined);
    await r.stop();
  });

  test('if-isolated: a policy only while another policy isolates the pods', async () => {
    const r = start({ mode: 'if-isolated', addresses: ['10.9.0.1/32'], port: 6443 });
    await r.start();
    await core.createNamespacedPod({ namespace: ns, body: pod('b-1', 'beta') });
    // The Role comes; no policy, since nothing restricts the pod's egress.
    await eventually('the Role of beta', () =>
      rbac.readNamespacedRole({ name: 'lifelease-elector-beta', namespace: ns }),
    );
    r.enqueue(`${ns}/beta`);
    await eventually('a reconcile after the Role', async () => {
      await rbac.readNamespacedRoleBinding({ name: 'lifelease-elector-beta', namespace: ns });
      return true;
    });
    assert.equal(await policy('beta'), undefined);
    // A default deny appears: at the next reconcile (a resync here) the policy follows.
    await networking.createNamespacedNetworkPolicy({
      namespace: ns,
      body: { metadata: { name: 'default-deny' }, spec: { podSelector: {}, policyTypes: ['Egress'] } },
    });
    await eventually('the policy of beta', () => policy('beta'));
    // And it goes when the default deny goes.
    await networking.deleteNamespacedNetworkPolicy({ name: 'default-deny', namespace: ns });
    await eventually('the policy of beta removed', async () => (await policy('beta')) === undefined);
    await core.deleteNamespacedPod({ name: 'b-1', namespace: ns, gracePeriodSeconds: 0 });
    await r.stop();
  });
});
