/**
 * Every manifest is applied to a real cluster (control plane + the real node,
 * packages/harness/src/node.ts) with the built kubectl, exactly as the README tells an admin, and the
 * product runs from them:
 * - the default install (`kubectl apply -k manifests`, self-managed TLS): the webhook runs as
 *   a Deployment from the project image (2 pods run by the kubelet), makes its certificate,
 *   sets the caBundle and is called through its Service; a Deployment of opted-in pods is
 *   injected, the kubelet starts each elector as a native sidecar, the RBAC reconciler grants
 *   the Role, and the apps, asking `$ELECTOR_GET_URL` from inside their containers, agree on
 *   one leader whose Lease the leader's pod owns;
 * - the cert-manager overlay (`kubectl apply -k manifests/overlays/cert-manager`), with the
 *   test doing cert-manager's job (issuing the Certificate into its Secret and injecting the
 *   CA named by `inject-ca-from`): the webhook pods wait for the Secret, then serve with it.
 * Each install is removed again with `kubectl delete -k` (the node is shared with other files).
 */
import {
  AdmissionregistrationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  RbacAuthorizationV1Api,
  loadAllYaml,
  type KubernetesObject,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCertificateAuthority } from '../../../common/pki.ts';
import { CONTAINER_NAME } from '../../../common/constants.ts';
import { renderManifests, MANIFESTS_DIR } from '@lifelease/harness/manifests';
import {
  electingDeployment,
  installProduct,
  runElectingDeployment,
  uninstallProduct,
  WEBHOOK_NAMESPACE,
} from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const REPO_ROOT = path.resolve(MANIFESTS_DIR, '..');
const pem = (b64: string | undefined) =>
  Buffer.from(b64 ?? '', 'base64')
    .toString()
    .trim();

test('`manifests/` renders the self-managed overlay', async () => {
  assert.deepEqual(await renderManifests('.'), await renderManifests('overlays/self-managed-tls'));
});

describe(
  'kubectl apply -k manifests (self-managed TLS, the default), on the real node',
  { skip: nodeSkip() },
  () => {
    let node: TestNode;
    let webhookPods: Awaited<ReturnType<typeof installProduct>>;
    const namespaces: string[] = [];
    before(async () => {
      node = await sharedNode();
      webhookPods = await installProduct(node);
    });
    after(async () => {
      if (node) {
        const core = node.kubeConfig.makeApiClient(CoreV1Api);
        for (const ns of namespaces) await core.deleteNamespace({ name: ns }).catch(() => {});
        await uninstallProduct(node);
        await node.release();
      }
    });

    test('the webhook runs from its image on the node: 2 ready pods, caBundle set from its own Secret', async () => {
      assert.equal(webhookPods.length, 2);
      for (const p of webhookPods) {
        assert.equal(p.spec?.nodeName, node.node.name);
        assert.equal(p.spec?.containers[0]?.image, node.node.images.project);
        assert.ok(p.status?.containerStatuses?.every((s) => s.ready && s.restartCount === 0));
      }
      const core = node.kubeConfig.makeApiClient(CoreV1Api);
      const secret = await core.readNamespacedSecret({
        name: 'lifelease-webhook-tls',
        namespace: WEBHOOK_NAMESPACE,
      });
      assert.ok(secret.data?.['tls.crt'] && secret.data['ca.crt']);
      const mwc = await node.kubeConfig
        .makeApiClient(AdmissionregistrationV1Api)
        .readMutatingWebhookConfiguration({ name: 'lifelease' });
      for (const w of mwc.webhooks ?? [])
        assert.equal(pem(w.clientConfig.caBundle), pem(secret.data['ca.crt']));
    });

    test('a Deployment of opted-in pods: elector injected as a native sidecar, started first, Role granted, one leader', async () => {
      const ns = await node.createNamespace('team-a');
      namespaces.push(ns);
      const { pods, leader } = await runElectingDeployment(
        node,
        ns,
        electingDeployment(node, { name: 'reports', replicas: 3, optIn: 'annotation' }),
      );
      for (const pod of pods) {
        const elector = pod.spec?.initContainers?.find((c) => c.name === CONTAINER_NAME);
        assert.equal(elector?.restartPolicy, 'Always', 'a native sidecar');
        assert.equal(elector?.image, node.node.images.project, "the webhook's own image");
        const started = pod.status?.initContainerStatuses?.find((s) => s.name === CONTAINER_NAME);
        assert.equal(started?.started, true, 'its startup probe passed');
        const app = pod.status?.containerStatuses?.find((s) => s.name === 'app');
        const electorAt = started?.state?.running?.startedAt;
        const appAt = app?.state?.running?.startedAt;
        assert.ok(
          electorAt && appAt && +electorAt <= +appAt,
          'the kubelet started the elector before the app',
        );
      }
      const rbac = node.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
      const binding = await rbac.readNamespacedRoleBinding({
        name: 'lifelease-elector-reports',
        namespace: ns,
      });
      assert.deepEqual(
        binding.subjects?.map((s) => s.name),
        ['default'],
      );
      const lease = await node.kubeConfig
        .makeApiClient(CoordinationV1Api)
        .readNamespacedLease({ name: 'reports', namespace: ns });
      const leaderPod = pods.find((p) => p.metadata?.name === leader)!;
      assert.equal(lease.metadata?.ownerReferences?.[0]?.uid, leaderPod.metadata?.uid);
    });
  },
);

describe(
  'kubectl apply -k manifests/overlays/cert-manager (the test plays cert-manager), on the real node',
  { skip: nodeSkip() },
  () => {
    let node: TestNode;
    const crdFile = path.join(REPO_ROOT, 'test/fixtures/crds/cert-manager-stand-in.yaml');
    before(async () => {
      node = await sharedNode();
    });
    after(async () => {
      if (node) {
        await uninstallProduct(node, 'manifests/overlays/cert-manager');
        await node.kubectl(['delete', '-f', crdFile, '--ignore-not-found', '--wait=true']);
        await node.release();
      }
    });

    test('the Certificate, the inject-ca-from annotation and the mounted Secret fit together', async () => {
      await node.kubectl(['apply', '-f', crdFile]);
      await eventually('the stand-in CRDs to be served', () =>
        node.kubeConfig.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
          group: 'cert-manager.io',
          version: 'v1',
          namespace: 'default',
          plural: 'certificates',
        }),
      );
      const objects = loadAllYaml(
        await node.kubectl(['kustomize', 'manifests/overlays/cert-manager']),
      ) as KubernetesObject[];
      const pods = await installProduct(node, {
        dir: 'manifests/overlays/cert-manager',
        afterApply: async () => {
          // cert-manager's job: issue the Certificate the injector annotation names into its Secret…
          const admission = node.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
          const live = await admission.readMutatingWebhookConfiguration({ name: 'lifelease' });
          const ref = live.metadata?.annotations?.['cert-manager.io/inject-ca-from'];
          assert.ok(ref, 'the configuration names a Certificate for its caBundle');
          const [ns, name] = ref.split('/') as [string, string];
          const cert = objects.find((o) => o.kind === 'Certificate' && o.metadata?.name === name) as
            ({ spec: { secretName: string; dnsNames: string[] } } & KubernetesObject) | undefined;
          assert.ok(cert, `the overlay has the Certificate ${ref}`);
          assert.equal(cert.metadata?.namespace, ns, 'the Certificate lives where inject-ca-from says');
          const ca = await createCertificateAuthority('stand-in cert-manager CA');
          const serving = await ca.issue({
            commonName: cert.spec.dnsNames[0]!,
            altNames: cert.spec.dnsNames,
            usage: 'server',
          });
          await node.kubeConfig.makeApiClient(CoreV1Api).createNamespacedSecret({
            namespace: ns,
            body: {
              metadata: { name: cert.spec.secretName },
              type: 'kubernetes.io/tls',
              stringData: { 'tls.crt': serving.certPem, 'tls.key': serving.keyPem, 'ca.crt': ca.certPem },
            },
          });
          // …and the CA injector's: the caBundle of every webhook.
          for (const w of live.webhooks ?? [])
            w.clientConfig.caBundle = Buffer.from(ca.certPem).toString('base64');
          await admission.replaceMutatingWebhookConfiguration({ name: 'lifelease', body: live });
        },
      });
      assert.equal(pods.length, 2, JSON.stringify(pods.map((p) => p.metadata?.name)));
      // The API server calls the webhook through the Service and trusts the injected CA.
      const ns = await node.createNamespace('cm');
      try {
        const probe = await eventually('an opted-in pod injected through the cert-manager install', () =>
          node.kubeConfig.makeApiClient(CoreV1Api).createNamespacedPod({
            namespace: ns,
            dryRun: 'All',
            body: {
              metadata: { name: 'probe', labels: { leaderElection: 'true' } },
              spec: { containers: [{ name: 'app', image: node.node.images.app }] },
            },
          }),
        );
        assert.ok(probe.spec?.initContainers?.some((c) => c.name === CONTAINER_NAME));
      } finally {
        await node.kubeConfig.makeApiClient(CoreV1Api).deleteNamespace({ name: ns });
      }
    });
  },
);
