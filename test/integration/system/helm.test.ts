/**
 * The chart installed with the real helm onto a real cluster (control plane + the real node,
 * packages/harness/src/node.ts), as a cluster admin would (`helm install`, `helm upgrade`,
 * `helm uninstall`), with the egress option on (if-isolated) in a namespace that denies
 * egress by default:
 * - install: the webhook pods run from the project image as the release's Deployment says,
 *   make their certificate and caBundle, and an opted-in Deployment is injected, granted its
 *   Role and its egress NetworkPolicy, and its apps (asking `$ELECTOR_GET_URL` in their
 *   containers) agree on one leader;
 * - upgrade: a changed value reaches the webhook's flags, and what the webhook made at run
 *   time (the caBundle, its certificate Secret) survives;
 * - uninstall: once the app is gone, nothing the chart or the webhook made is left: the
 *   webhook's certificate Secret (made at run time, unknown to helm) is owned by the
 *   MutatingWebhookConfiguration, so the garbage collector deletes it with the release.
 * The harness's API server keeps no `kubernetes` EndpointSlice (no endpoint reconciler): the
 * test publishes the one a real API server keeps. The node's bridge CNI does not enforce
 * NetworkPolicies: the policy is checked as an object (what it selects and allows), not by a
 * blocked connection.
 */
import {
  AdmissionregistrationV1Api,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  NetworkingV1Api,
  RbacAuthorizationV1Api,
  loadAllYaml,
  type KubernetesObject,
  type V1Pod,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { CHART_DIR, helm, valuesFile } from '@lifelease/harness/helm';
import { electingDeployment, runElectingDeployment, webhookRollout } from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const NS = 'lifelease-system';
const VALUES = { networkPolicy: { electorEgress: { enabled: true } } };

describe('helm install, upgrade and uninstall, on the real node', { skip: nodeSkip() }, () => {
  let cluster: TestNode;
  let APP_NS = '';
  let webhook: V1Pod[] | undefined;
  let app: { leader: string } | undefined;
  const values = valuesFile(VALUES);
  const run = (args: string[]) => helm(args, { kubeconfig: cluster.kubeconfigPath });
  const notFound = async (read: () => Promise<unknown>): Promise<boolean> => {
    try {
      await read();
      return false;
    } catch (err) {
      if ((err as { code?: number }).code === 404) return true;
      throw err;
    }
  };

  before(async () => {
    cluster = await sharedNode();
  });
  after(async () => {
    values.remove();
    if (!cluster) return;
    // The node is shared with other files: leave no release, namespace or webhook behind.
    await run(['uninstall', 'lifelease', '-n', NS, '--wait']).catch(() => {});
    for (const ns of [APP_NS, NS].filter(Boolean))
      await cluster.kubectl([
        'delete',
        'namespace',
        ns,
        '--ignore-not-found',
        '--wait=true',
        '--timeout=300s',
      ]);
    await cluster.release();
  });

  test('install: the webhook runs from the release; an opted-in Deployment gets its Role and egress policy and elects one leader', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    // README, "Install with Helm": the namespace first, labelled for Pod Security.
    await core.createNamespace({
      body: { metadata: { name: NS, labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } },
    });
    const { stdout } = await run(['install', 'lifelease', CHART_DIR, '-n', NS, '-f', values.file]);
    assert.match(stdout, /STATUS: deployed/);
    const manifest = await run(['get', 'manifest', 'lifelease', '-n', NS]);
    const objects = (loadAllYaml(manifest.stdout) as (KubernetesObject | null)[]).filter(
      (o): o is KubernetesObject => o !== null,
    );
    assert.ok(objects.some((o) => o.kind === 'Deployment'));
    webhook = await webhookRollout(cluster);
    assert.equal(webhook.length, 2);
    for (const p of webhook) assert.equal(p.spec?.containers[0]?.image, cluster.node.images.project);

    // The app's namespace denies all egress by default.
    APP_NS = await cluster.createNamespace('team-a');
    const networking = cluster.kubeConfig.makeApiClient(NetworkingV1Api);
    await networking.createNamespacedNetworkPolicy({
      namespace: APP_NS,
      body: {
        metadata: { name: 'default-deny' },
        spec: { podSelector: {}, policyTypes: ['Ingress', 'Egress'] },
      },
    });

    // The harness's API server runs without an endpoint reconciler: publish the `kubernetes`
    // EndpointSlice a real one keeps (the machine's address, as it would advertise, and its
    // secure port; loopback addresses are refused in EndpointSlices).
    const server = new URL(cluster.server);
    const advertised = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;
    assert.ok(advertised, 'the machine has a non-loopback IPv4 address');
    await cluster.kubeConfig
      .makeApiClient(DiscoveryV1Api)
      .createNamespacedEndpointSlice({
        namespace: 'default',
        body: {
          metadata: { name: 'kubernetes', labels: { 'kubernetes.io/service-name': 'kubernetes' } },
          addressType: 'IPv4',
          endpoints: [{ addresses: [advertised], conditions: { ready: true } }],
          ports: [{ name: 'https', port: Number(server.port), protocol: 'TCP' }],
        },
      })
      .catch((err: unknown) => {
        // Another run on this shared control plane published it already.
        if ((err as { code?: number }).code !== 409) throw err;
      });

    app = await runElectingDeployment(
      cluster,
      APP_NS,
      electingDeployment(cluster, { name: 'reports', replicas: 3, optIn: 'annotation' }),
    );
    const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await rbac.readNamespacedRole({ name: 'lifelease-elector-reports', namespace: APP_NS });

    // The egress policy: those pods, TCP to the API server's endpoints, nothing else.
    const slice = await cluster.kubeConfig
      .makeApiClient(DiscoveryV1Api)
      .readNamespacedEndpointSlice({ name: 'kubernetes', namespace: 'default' });
    const policy = await eventually('the egress NetworkPolicy', () =>
      networking.readNamespacedNetworkPolicy({ name: 'lifelease-elector-reports', namespace: APP_NS }),
    );
    console.log(
      `# the election's NetworkPolicy:\n${JSON.stringify({ metadata: { name: policy.metadata?.name, namespace: policy.metadata?.namespace, labels: policy.metadata?.labels }, spec: policy.spec }, null, 2)}`,
    );
    assert.deepEqual(JSON.parse(JSON.stringify(policy.spec)), {
      podSelector: { matchLabels: { 'lifelease.dev/election': 'reports' } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: slice.endpoints.flatMap((e) => e.addresses).map((a) => ({ ipBlock: { cidr: `${a}/32` } })),
          ports: [{ protocol: 'TCP', port: slice.ports!.find((p) => p.name === 'https')!.port! }],
        },
      ],
    });
  });

  test('upgrade: a new value reaches the webhook; its caBundle and certificate Secret survive', async () => {
    assert.ok(webhook, 'installed');
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const secretBefore = await core.readNamespacedSecret({ name: 'lifelease-webhook-tls', namespace: NS });
    const bundleBefore = (
      await admission.readMutatingWebhookConfiguration({ name: 'lifelease' })
    ).webhooks?.map((w) => w.clientConfig.caBundle);
    const { stdout } = await run([
      'upgrade',
      'lifelease',
      CHART_DIR,
      '-n',
      NS,
      '-f',
      values.file,
      '--set',
      'elector.resources.limits.memory=160Mi',
    ]);
    assert.match(stdout, /REVISION: 2/);
    const deployment = await cluster.kubeConfig
      .makeApiClient(AppsV1Api)
      .readNamespacedDeployment({ name: 'lifelease-webhook', namespace: NS });
    assert.ok(deployment.spec?.template.spec?.containers[0]?.args?.includes('--elector-memory-limit=160Mi'));
    const secretAfter = await core.readNamespacedSecret({ name: 'lifelease-webhook-tls', namespace: NS });
    assert.equal(secretAfter.metadata?.uid, secretBefore.metadata?.uid);
    assert.equal(secretAfter.data?.['ca.crt'], secretBefore.data?.['ca.crt']);
    const bundleAfter = (
      await admission.readMutatingWebhookConfiguration({ name: 'lifelease' })
    ).webhooks?.map((w) => w.clientConfig.caBundle);
    assert.ok(
      bundleBefore?.every((b) => b),
      'the caBundle was set',
    );
    assert.deepEqual(bundleAfter, bundleBefore, 'helm upgrade left the caBundle the webhook wrote');
    // The new pods roll out; still called through the Service with that caBundle: a pod is injected.
    await webhookRollout(cluster);
    const probe = await eventually('an opted-in pod injected after the upgrade', () =>
      core.createNamespacedPod({
        namespace: APP_NS,
        dryRun: 'All',
        body: {
          metadata: { name: 'after-upgrade', labels: { leaderElection: 'true' } },
          spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
        },
      }),
    );
    assert.ok(probe.spec?.initContainers?.some((c) => c.name === 'elector'));
  });

  test('uninstall: once the app is gone, nothing is left, the certificate Secret the webhook made included', async () => {
    assert.ok(webhook && app, 'installed');
    const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
    const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    const networking = cluster.kubeConfig.makeApiClient(NetworkingV1Api);
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    // 1. The app goes: its election ends, and the webhook removes the Role, RoleBinding and policy.
    await apps.deleteNamespacedDeployment({
      name: 'reports',
      namespace: APP_NS,
      propagationPolicy: 'Foreground',
    });
    const managed = 'app.kubernetes.io/managed-by=lifelease';
    await eventually(
      'the election objects removed',
      async () =>
        (await rbac.listRoleForAllNamespaces({ labelSelector: managed })).items.length === 0 &&
        (await rbac.listRoleBindingForAllNamespaces({ labelSelector: managed })).items.length === 0 &&
        (await networking.listNetworkPolicyForAllNamespaces({ labelSelector: managed })).items.length === 0,
      60_000,
    );
    app = undefined;

    // 2. helm uninstall, then the webhook's pods go.
    const { stdout } = await run(['uninstall', 'lifelease', '-n', NS, '--wait']);
    assert.match(stdout, /release "lifelease" uninstalled/);
    await eventually(
      'the webhook pods gone',
      async () => (await core.listNamespacedPod({ namespace: NS })).items.length === 0,
      60_000,
    );
    webhook = undefined;

    // 3. What is left.
    const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    assert.ok(await notFound(() => admission.readMutatingWebhookConfiguration({ name: 'lifelease' })));
    const clusterRoles = (await rbac.listClusterRole()).items.map((r) => r.metadata!.name!);
    assert.deepEqual(
      clusterRoles.filter((n) => n.startsWith('lifelease')),
      [],
    );
    const bindings = (await rbac.listClusterRoleBinding()).items.map((r) => r.metadata!.name!);
    assert.deepEqual(
      // The node's own binding (system:node for its kubelet; packages/harness/src/node.ts) is not the chart's.
      bindings.filter((n) => n.startsWith('lifelease') && n !== 'lifelease-local-nodes'),
      [],
    );
    const leases = (
      await cluster.kubeConfig.makeApiClient(CoordinationV1Api).listNamespacedLease({ namespace: APP_NS })
    ).items;
    assert.deepEqual(
      leases.map((l) => l.metadata?.name),
      [],
    );
    const left: string[] = [];
    const inNs = async (list: () => Promise<{ items: KubernetesObject[] }>, kind: string) => {
      for (const o of (await list()).items) left.push(`${kind}/${o.metadata!.name}`);
    };
    await eventually(
      'the garbage collector',
      async () => {
        left.length = 0;
        await inNs(() => core.listNamespacedSecret({ namespace: NS }), 'Secret');
        await inNs(() => core.listNamespacedService({ namespace: NS }), 'Service');
        await inNs(() => core.listNamespacedServiceAccount({ namespace: NS }), 'ServiceAccount');
        await inNs(() => apps.listNamespacedDeployment({ namespace: NS }), 'Deployment');
        await inNs(() => apps.listNamespacedReplicaSet({ namespace: NS }), 'ReplicaSet');
        await inNs(() => rbac.listNamespacedRole({ namespace: NS }), 'Role');
        await inNs(() => rbac.listNamespacedRoleBinding({ namespace: NS }), 'RoleBinding');
        await inNs(
          () =>
            cluster.kubeConfig.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace: NS }),
          'EndpointSlice',
        );
        // The namespace's own `default` ServiceAccount comes with every namespace.
        return left.sort().join(',') === 'ServiceAccount/default' ? left : undefined;
      },
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`left in ${NS}: ${left.join(', ')} (${String(err)})`);
    });
  });
});
