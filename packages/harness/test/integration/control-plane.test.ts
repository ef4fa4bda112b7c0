/**
 * What every other test relies on, proven against the real control plane: the built
 * version, the garbage collector, the deployment and replica-set controllers, and RBAC
 * refusing a non-admin identity.
 */
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  VersionApi,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KUBE_VERSION } from '@lifelease/harness/binaries';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

let cluster: TestCluster;
before(async () => {
  cluster = await sharedCluster();
});
after(() => cluster.release());

const status = (err: unknown) => (err as { code?: number }).code;

describe('local control plane', () => {
  test('kube-apiserver /version reports the version we built', async () => {
    const info = await cluster.kubeConfig.makeApiClient(VersionApi).getCode();
    assert.equal(info.gitVersion, KUBE_VERSION);
    assert.equal(`v${info.major}.${info.minor}`, KUBE_VERSION.split('.').slice(0, 2).join('.'));
  });

  test('a Lease owned by a Pod is garbage-collected after the Pod is deleted', async () => {
    const ns = await cluster.createNamespace('gc');
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const coord = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
    const pod = await core.createNamespacedPod({
      namespace: ns,
      body: {
        metadata: { name: 'owner' },
        spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
      },
    });
    await coord.createNamespacedLease({
      namespace: ns,
      body: {
        metadata: {
          name: 'election',
          ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'owner', uid: pod.metadata!.uid! }],
        },
        spec: { holderIdentity: 'owner' },
      },
    });
    // Still there while the owner exists (so the deletion below is what removes it).
    await sleep(1000);
    assert.equal(
      (await coord.readNamespacedLease({ name: 'election', namespace: ns })).spec?.holderIdentity,
      'owner',
    );

    await core.deleteNamespacedPod({ name: 'owner', namespace: ns });
    await eventually('the Lease to be garbage-collected', async () => {
      try {
        await coord.readNamespacedLease({ name: 'election', namespace: ns });
        return undefined;
      } catch (err) {
        if (status(err) === 404) return true;
        throw err;
      }
    });
  });

  test('a Deployment yields Pods through the deployment and replica-set controllers', async () => {
    const ns = await cluster.createNamespace('deploy');
    const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name: 'web' },
        spec: {
          replicas: 3,
          selector: { matchLabels: { app: 'web' } },
          template: {
            metadata: { labels: { app: 'web' } },
            spec: { containers: [{ name: 'app', image: 'example.invalid/web' }] },
          },
        },
      },
    });
    const pods = await eventually('3 pods of the Deployment', async () => {
      const list = await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=web' });
      return list.items.length === 3 ? list.items : undefined;
    });
    for (const pod of pods) {
      const owner = pod.metadata?.ownerReferences?.[0];
      assert.equal(owner?.kind, 'ReplicaSet');
      assert.match(pod.metadata?.generateName ?? '', /^web-[a-z0-9]+-$/);
    }
  });

  for (const identity of ['service account token', 'client certificate'] as const) {
    test(`a non-admin identity (${identity}) gets exactly what its Role allows, and 403 otherwise`, async () => {
      const ns = await cluster.createNamespace('rbac');
      const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
      const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
      let subject;
      let kubeconfigPath;
      if (identity === 'service account token') {
        await core.createNamespacedServiceAccount({ namespace: ns, body: { metadata: { name: 'reader' } } });
        subject = { kind: 'ServiceAccount', name: 'reader', namespace: ns };
        kubeconfigPath = await cluster.serviceAccountKubeconfig(ns, 'reader');
      } else {
        subject = { kind: 'User', name: `reader-${ns}`, apiGroup: 'rbac.authorization.k8s.io' };
        kubeconfigPath = await cluster.clientCertKubeconfig(`reader-${ns}`, ['testers']);
      }
      await rbac.createNamespacedRole({
        namespace: ns,
        body: {
          metadata: { name: 'configmap-reader' },
          rules: [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list'] }],
        },
      });
      await rbac.createNamespacedRoleBinding({
        namespace: ns,
        body: {
          metadata: { name: 'configmap-reader' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'configmap-reader' },
          subjects: [subject],
        },
      });
      const kc = new KubeConfig();
      kc.loadFromFile(kubeconfigPath);
      const asUser = kc.makeApiClient(CoreV1Api);
      // Allowed: RBAC bindings take effect asynchronously, so allow a short settle.
      const list = await eventually('the binding to take effect', async () => {
        try {
          return await asUser.listNamespacedConfigMap({ namespace: ns });
        } catch (err) {
          if (status(err) === 403) return undefined;
          throw err;
        }
      });
      assert.ok(Array.isArray(list.items));
      // Refused: not in the Role.
      await assert.rejects(asUser.listNamespacedSecret({ namespace: ns }), (err) => status(err) === 403);
      await assert.rejects(
        asUser.createNamespacedConfigMap({ namespace: ns, body: { metadata: { name: 'nope' } } }),
        (err) => status(err) === 403,
      );
      await assert.rejects(
        asUser.listNamespacedConfigMap({ namespace: 'default' }),
        (err) => status(err) === 403,
      );
    });
  }
});
