/**
 * Every manifest is applied to a real control plane, and the product runs from them:
 * - the default install (`manifests/`, self-managed TLS): the webhook pods run exactly as
 *   the Deployment says, make their certificate, set the caBundle, are called through the
 *   Service; a Deployment of opted-in pods is injected; its electors, granted their Role by
 *   the webhook's RBAC reconciler and running on pod-bound tokens, agree on one leader;
 * - the cert-manager overlay, with the test doing cert-manager's job (issuing the
 *   Certificate into its Secret and injecting the CA named by `inject-ca-from`).
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
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCertificateAuthority } from '../../../common/pki.ts';
import { startCluster, type Cluster } from '../../harness/cluster.ts';
import { ensureBuilt, REPO_ROOT, type Kubelet } from '../../harness/kubelet.ts';
import { applyManifests, pick, renderManifests } from '../../harness/manifests.ts';
import {
  installWebhook,
  runElectingApp,
  WEBHOOK_NAMESPACE,
  type InstalledWebhook,
} from '../../harness/system.ts';
import { eventually } from '../../harness/wait.ts';

before(() => {
  // The kubelet stand-in runs the image's entrypoint as dist/cli.js.
  ensureBuilt();
});

describe('install from manifests/ (self-managed TLS, the default)', () => {
  let cluster: Cluster;
  let webhook: InstalledWebhook;
  let electors: Kubelet | undefined;
  before(async () => {
    cluster = await startCluster();
    webhook = await installWebhook(cluster, { timeoutMs: 180_000 });
  });
  after(async () => {
    await electors?.stop();
    await webhook?.stop();
    await cluster?.stop();
  });

  test('`manifests/` renders the self-managed overlay', async () => {
    assert.deepEqual(await renderManifests('.'), await renderManifests('overlays/self-managed-tls'));
  });

  test('the webhook runs from the manifests: 2 replicas, its own image injected, caBundle set', async () => {
    assert.equal(webhook.pods.length, 2);
    const deployment = pick<
      { spec: { template: { spec: { containers: { image: string }[] } } } } & KubernetesObject
    >(webhook.objects, 'Deployment');
    const image = deployment.spec.template.spec.containers[0]!.image;
    const secret = await cluster.kubeConfig
      .makeApiClient(CoreV1Api)
      .readNamespacedSecret({ name: 'lifelease-webhook-tls', namespace: WEBHOOK_NAMESPACE });
    assert.ok(secret.data?.['tls.crt'] && secret.data['ca.crt']);
    const mwc = await cluster.kubeConfig
      .makeApiClient(AdmissionregistrationV1Api)
      .readMutatingWebhookConfiguration({ name: 'lifelease' });
    const pem = (b64: string | undefined) =>
      Buffer.from(b64 ?? '', 'base64')
        .toString()
        .trim();
    for (const w of mwc.webhooks ?? [])
      assert.equal(pem(w.clientConfig.caBundle), pem(secret.data['ca.crt']));
    // The injected elector uses the webhook's own image (kustomize copies it).
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const probe = await core.createNamespacedPod({
      namespace: 'default',
      dryRun: 'All',
      body: {
        metadata: { name: 'image-check', labels: { leaderElection: 'true' } },
        spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
      },
    });
    assert.equal(probe.spec?.initContainers?.find((c) => c.name === 'elector')?.image, image);
  });

  test('a Deployment of opted-in pods is injected, granted its Role, and elects one leader', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const ns = 'team-a';
    await core.createNamespace({ body: { metadata: { name: ns } } });
    await eventually('the default ServiceAccount', () =>
      core.readNamespacedServiceAccount({ name: 'default', namespace: ns }),
    );
    // The electors (pod-bound tokens, exactly the Role the webhook grants) agree on one leader.
    const app = await runElectingApp(cluster, { namespace: ns, name: 'reports', replicas: 3 });
    electors = app.electors;
    const pods = (await core.listNamespacedPod({ namespace: ns })).items;
    assert.equal(pods.length, 3);
    for (const pod of pods) {
      assert.ok(pod.spec?.initContainers?.some((c) => c.name === 'elector' && c.restartPolicy === 'Always'));
    }
    // The RBAC reconciler granted the election's Role to the pods' ServiceAccount.
    const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    const binding = await rbac.readNamespacedRoleBinding({
      name: 'lifelease-elector-reports',
      namespace: ns,
    });
    assert.deepEqual(
      binding.subjects?.map((s) => s.name),
      ['default'],
    );
    assert.equal(app.leader.answer['name'], app.leader.sandbox.hostname);
    const lease = await cluster.kubeConfig
      .makeApiClient(CoordinationV1Api)
      .readNamespacedLease({ name: 'reports', namespace: ns });
    assert.equal(lease.metadata?.ownerReferences?.[0]?.uid, app.leader.sandbox.pod.metadata?.uid);
  });
});

describe('install from manifests/overlays/cert-manager (the test plays cert-manager)', () => {
  let cluster: Cluster;
  let webhook: InstalledWebhook | undefined;
  before(async () => {
    cluster = await startCluster();
  });
  after(async () => {
    await webhook?.stop();
    await cluster?.stop();
  });

  test('the Certificate, the inject-ca-from annotation and the mounted Secret fit together', async () => {
    const crds = loadAllYaml(
      readFileSync(path.join(REPO_ROOT, 'test/fixtures/crds/cert-manager-stand-in.yaml'), 'utf8'),
    ) as KubernetesObject[];
    await applyManifests(cluster.kubeConfig, crds);
    await eventually('the stand-in CRDs to be served', () =>
      cluster.kubeConfig.makeApiClient(CustomObjectsApi).listNamespacedCustomObject({
        group: 'cert-manager.io',
        version: 'v1',
        namespace: 'default',
        plural: 'certificates',
      }),
    );

    webhook = await installWebhook(cluster, {
      overlay: 'overlays/cert-manager',
      timeoutMs: 180_000,
      afterApply: async (objects) => {
        // cert-manager's job: issue the Certificate the injector annotation names into its Secret…
        const mwc = pick<KubernetesObject>(objects, 'MutatingWebhookConfiguration');
        const ref = mwc.metadata?.annotations?.['cert-manager.io/inject-ca-from'];
        assert.ok(ref, 'the configuration names a Certificate for its caBundle');
        const [ns, name] = ref.split('/') as [string, string];
        const cert = pick<{ spec: { secretName: string; dnsNames: string[] } } & KubernetesObject>(
          objects,
          'Certificate',
          name,
        );
        assert.equal(cert.metadata?.namespace, ns, 'the Certificate lives where inject-ca-from says');
        const ca = await createCertificateAuthority('stand-in cert-manager CA');
        const serving = await ca.issue({
          commonName: cert.spec.dnsNames[0]!,
          altNames: cert.spec.dnsNames,
          usage: 'server',
        });
        await cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespacedSecret({
          namespace: ns,
          body: {
            metadata: { name: cert.spec.secretName },
            type: 'kubernetes.io/tls',
            stringData: { 'tls.crt': serving.certPem, 'tls.key': serving.keyPem, 'ca.crt': ca.certPem },
          },
        });
        // …and the CA injector's: the caBundle of every webhook.
        const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
        const live = await admission.readMutatingWebhookConfiguration({ name: mwc.metadata!.name! });
        for (const w of live.webhooks ?? [])
          w.clientConfig.caBundle = Buffer.from(ca.certPem).toString('base64');
        await admission.replaceMutatingWebhookConfiguration({ name: live.metadata!.name!, body: live });
      },
    });
    // installWebhook only returns once the API server has called the webhook through the
    // Service and verified its certificate against the injected CA.
    assert.equal(webhook.pods.length, 2, JSON.stringify(webhook.pods.map((p) => p.metadata?.name)));
  });
});
