/**
 * The chart installed with the real helm onto a real control plane, as a cluster admin would
 * (`helm install`, `helm upgrade`, `helm uninstall`), with the egress option on (if-isolated)
 * in a namespace that denies egress by default:
 * - install: the webhook pods run as the release's Deployment says (kubelet stand-in), make
 *   their certificate and caBundle, and an opted-in Deployment is injected, granted its Role
 *   and its egress NetworkPolicy, and elects one leader;
 * - upgrade: a changed value reaches the webhook's flags, and what the webhook made at run
 *   time (the caBundle, its certificate Secret) survives;
 * - uninstall: once the app is gone, nothing the chart or the webhook made is left but the
 *   webhook's certificate Secret (made at run time, unknown to helm: see the README).
 * The harness's API server keeps no `kubernetes` EndpointSlice (no endpoint reconciler): the
 * test publishes the one a real API server keeps. The local cluster has no CNI that enforces NetworkPolicies: the policy is checked as an
 * object (what it selects and allows), not by a blocked connection.
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
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { networkInterfaces } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { startCluster, type Cluster } from '../../harness/cluster.ts';
import { CHART_DIR, helm, valuesFile } from '../../harness/helm.ts';
import { ensureBuilt } from '../../harness/kubelet.ts';
import {
  installWebhook,
  runElectingApp,
  type ElectingApp,
  type InstalledWebhook,
} from '../../harness/system.ts';
import { eventually } from '../../harness/wait.ts';

const NS = 'lifelease-system';
const APP_NS = 'team-a';
const VALUES = { networkPolicy: { electorEgress: { enabled: true } } };

before(() => ensureBuilt());

describe('helm install, upgrade and uninstall', () => {
  let cluster: Cluster;
  let webhook: InstalledWebhook | undefined;
  let app: ElectingApp | undefined;
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
    cluster = await startCluster();
  });
  after(async () => {
    await app?.electors.stop();
    await webhook?.stop();
    await cluster?.stop();
    values.remove();
  });

  test('install: the webhook runs from the release; an opted-in Deployment gets its Role and egress policy and elects one leader', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    // README, "Install with Helm": the namespace first, labelled for Pod Security.
    await core.createNamespace({
      body: { metadata: { name: NS, labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } },
    });
    webhook = await installWebhook(cluster, {
      timeoutMs: 180_000,
      install: async () => {
        const { stdout } = await run(['install', 'lifelease', CHART_DIR, '-n', NS, '-f', values.file]);
        assert.match(stdout, /STATUS: deployed/);
        const manifest = await run(['get', 'manifest', 'lifelease', '-n', NS]);
        return (loadAllYaml(manifest.stdout) as (KubernetesObject | null)[]).filter(
          (o): o is KubernetesObject => o !== null,
        );
      },
    });
    assert.equal(webhook.pods.length, 2);

    // The app's namespace denies all egress by default.
    await core.createNamespace({ body: { metadata: { name: APP_NS } } });
    await eventually('the default ServiceAccount', () =>
      core.readNamespacedServiceAccount({ name: 'default', namespace: APP_NS }),
    );
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
    await cluster.kubeConfig.makeApiClient(DiscoveryV1Api).createNamespacedEndpointSlice({
      namespace: 'default',
      body: {
        metadata: { name: 'kubernetes', labels: { 'kubernetes.io/service-name': 'kubernetes' } },
        addressType: 'IPv4',
        endpoints: [{ addresses: [advertised], conditions: { ready: true } }],
        ports: [{ name: 'https', port: Number(server.port), protocol: 'TCP' }],
      },
    });

    app = await runElectingApp(cluster, { namespace: APP_NS, name: 'reports', replicas: 3 });
    assert.equal(app.leader.answer['name'], app.leader.sandbox.hostname);
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
    // Still called through the Service with that caBundle: a pod is injected.
    const probe = await core.createNamespacedPod({
      namespace: APP_NS,
      dryRun: 'All',
      body: {
        metadata: { name: 'after-upgrade', labels: { leaderElection: 'true' } },
        spec: { containers: [{ name: 'app', image: 'example.invalid/app' }] },
      },
    });
    assert.ok(probe.spec?.initContainers?.some((c) => c.name === 'elector'));
  });

  test('uninstall: once the app is gone, nothing is left but the certificate Secret the webhook made', async () => {
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
    await app.electors.stop();
    app = undefined;

    // 2. helm uninstall, then the webhook's pods go.
    const { stdout } = await run(['uninstall', 'lifelease', '-n', NS, '--wait']);
    assert.match(stdout, /release "lifelease" uninstalled/);
    await eventually(
      'the webhook pods gone',
      async () => (await core.listNamespacedPod({ namespace: NS })).items.length === 0,
      60_000,
    );
    await webhook.stop();
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
      bindings.filter((n) => n.startsWith('lifelease')),
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
        return left.sort().join(',') === 'Secret/lifelease-webhook-tls,ServiceAccount/default'
          ? left
          : undefined;
      },
      60_000,
    ).catch((err: unknown) => {
      throw new Error(`left in ${NS}: ${left.join(', ')} (${String(err)})`);
    });
  });
});
