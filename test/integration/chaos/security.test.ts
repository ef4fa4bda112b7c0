/**
 * Security checks with the product installed as an admin would (manifests/, self-managed
 * TLS, the webhook's RBAC reconciler) on a private control plane, and an elector pod created
 * through the API server in a Pod Security `restricted` namespace, run by the kubelet
 * stand-in with a routable pod IP and a token bound to the pod:
 *
 * - the election API answers on the pod's loopback only: podIP:4040 refuses, podIP:4041
 *   (probes) answers;
 * - the elector's real identity (its pod-bound token, with what the reconciler granted) can
 *   do what the election needs and nothing else: no Secrets, no listing or watching Pods,
 *   no other Lease, no update or patch of any Lease; the token dies with the pod;
 * - the injected pod is accepted under `restricted` enforcement;
 * - no token or key material appears in the elector's or the webhook's logs.
 *
 * Covered elsewhere and not repeated here: Pod Security `restricted` with a non-compliant
 * control (test/integration/webhook/admission.test.ts), certificate reload without restart
 * (test/unit/webhook/main.test.ts and server.test.ts over HTTPS,
 * test/integration/webhook/self-managed-tls.test.ts for rotation through the Secret).
 */
import {
  AuthorizationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  V1MicroTime,
  type V1Pod,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_NAME } from '../../../common/constants.ts';
import { buildBundle, type Bundle } from '../../chaos/bundle.ts';
import { startCluster, type Cluster } from '../../harness/cluster.ts';
import { PodSandbox } from '../../harness/pod-sandbox.ts';
import { installWebhook, WEBHOOK_NAMESPACE, type InstalledWebhook } from '../../harness/system.ts';

const RESTRICTED = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  runAsUser: 10001,
  seccompProfile: { type: 'RuntimeDefault' as const },
};

let cluster: Cluster;
let bundle: Bundle;
let webhook: InstalledWebhook;
let sandbox: PodSandbox;
let pod: V1Pod;
let ns: string;
let token: string;

function httpStatus(host: string, port: number, pathname: string): Promise<number | string> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: pathname, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    req.end();
  });
}

before(async () => {
  bundle = await buildBundle();
  cluster = await startCluster();
  webhook = await installWebhook(cluster);
  ns = await cluster.createNamespace('security', {
    'pod-security.kubernetes.io/enforce': 'restricted',
    'pod-security.kubernetes.io/enforce-version': 'latest',
  });
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  // A restricted-compliant app; the webhook adds the elector, which must comply as well.
  pod = await core.createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name: 'secure-0', labels: { app: 'secure', leaderElection: 'true' } },
      spec: {
        securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [{ name: 'app', image: 'example.invalid/app:1', securityContext: RESTRICTED }],
      },
    },
  });
  // The elector as injected, at debug level so that every log line it has is written.
  const run = structuredClone(pod);
  const elector = [...(run.spec?.initContainers ?? []), ...(run.spec?.containers ?? [])].find(
    (c) => c.name === CONTAINER_NAME,
  )!;
  elector.args = [...(elector.args ?? []), '--log-level=debug'];
  sandbox = await PodSandbox.start({
    cluster,
    pod: run,
    container: CONTAINER_NAME,
    entrypoint: bundle.entrypoint,
    podNetwork: true,
  });
  // The pod-bound token the sandbox mounted at the in-cluster path.
  token = (
    JSON.parse(readFileSync(path.join(sandbox.dir, 'config.json'), 'utf8')) as {
      serviceAccount: { token: string };
    }
  ).serviceAccount.token;
  await sandbox.waitForStartupProbe(60_000);
});

after(async () => {
  await sandbox?.stop();
  await webhook?.stop();
  await cluster?.stop();
  bundle?.remove();
});

/** Credentials of the elector's own identity: the token mounted in its pod. */
function electorKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [
      { name: 'c', server: cluster.server, caData: Buffer.from(cluster.caCertPem).toString('base64') },
    ],
    users: [{ name: 'elector', token }],
    contexts: [{ name: 'c', cluster: 'c', user: 'elector' }],
    currentContext: 'c',
  });
  return kc;
}

describe('security', () => {
  test('the injected pod is accepted under Pod Security restricted enforcement', () => {
    const elector = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find(
      (c) => c.name === CONTAINER_NAME,
    );
    assert.ok(elector, 'the webhook injected the elector');
    assert.equal(pod.metadata?.namespace, ns);
  });

  test('the election API is on the pod loopback only; probes answer on the pod IP', async () => {
    assert.notEqual(sandbox.podIP, '127.0.0.1');
    const inside = await sandbox.get(4040, '/');
    assert.equal(inside.status, 200, 'GET / from inside the pod');
    assert.equal((JSON.parse(inside.body) as { is_leader: boolean }).is_leader, true);
    assert.equal(await httpStatus(sandbox.podIP, 4040, '/'), 'ECONNREFUSED');
    assert.equal(await httpStatus(sandbox.podIP, 4040, '/sse'), 'ECONNREFUSED');
    assert.equal(await httpStatus(sandbox.podIP, 4041, '/healthz'), 200);
    assert.equal(await httpStatus(sandbox.podIP, 4041, '/readyz'), 200);
  });

  test("the elector's own token may do what the election needs, nothing more", async () => {
    const kc = electorKubeConfig();
    const authz = kc.makeApiClient(AuthorizationV1Api);
    type Ask = {
      verb: string;
      resource: string;
      group?: string;
      name?: string;
      sub?: string;
      namespace?: string;
    };
    const can = async (q: Ask) =>
      (
        await authz.createSelfSubjectAccessReview({
          body: {
            spec: {
              resourceAttributes: {
                namespace: q.namespace ?? ns,
                verb: q.verb,
                group: q.group ?? '',
                resource: q.resource,
                ...(q.name ? { name: q.name } : {}),
                ...(q.sub ? { subresource: q.sub } : {}),
              },
            },
          },
        })
      ).status?.allowed === true;
    const lease = 'coordination.k8s.io';
    const election = 'secure';
    const allowed: Ask[] = [
      { verb: 'create', resource: 'leases', group: lease },
      ...['get', 'list', 'watch', 'delete'].map((verb) => ({
        verb,
        resource: 'leases',
        group: lease,
        name: election,
      })),
      { verb: 'get', resource: 'pods', name: 'any-pod' },
      // The leader's one Pod, watched by name (common/rbac.ts says why).
      { verb: 'watch', resource: 'pods', name: 'any-pod' },
    ];
    const refused: Ask[] = [
      ...['update', 'patch'].map((verb) => ({ verb, resource: 'leases', group: lease, name: election })),
      ...['get', 'delete', 'update'].map((verb) => ({
        verb,
        resource: 'leases',
        group: lease,
        name: 'another-election',
      })),
      ...['list', 'watch', 'deletecollection'].map((verb) => ({ verb, resource: 'leases', group: lease })),
      { verb: 'get', resource: 'secrets', name: 'any' },
      ...['list', 'watch'].map((verb) => ({ verb, resource: 'secrets' })),
      ...['list', 'create'].map((verb) => ({ verb, resource: 'pods' })),
      ...['delete', 'patch', 'update'].map((verb) => ({ verb, resource: 'pods', name: 'secure-0' })),
      { verb: 'update', resource: 'pods', name: 'secure-0', sub: 'status' },
      { verb: 'create', resource: 'pods', name: 'secure-0', sub: 'exec' },
      { verb: 'get', resource: 'configmaps', name: 'any' },
      { verb: 'create', resource: 'serviceaccounts', name: 'default', sub: 'token' },
      { verb: 'create', resource: 'rolebindings', group: 'rbac.authorization.k8s.io' },
      { verb: 'get', resource: 'leases', group: lease, name: election, namespace: WEBHOOK_NAMESPACE },
      { verb: 'get', resource: 'secrets', name: 'lifelease-webhook-tls', namespace: WEBHOOK_NAMESPACE },
      { verb: 'list', resource: 'namespaces', namespace: '' },
      { verb: 'get', resource: 'leases', group: lease, name: 'any-node', namespace: 'kube-node-lease' },
    ];
    for (const q of allowed) assert.equal(await can(q), true, `${JSON.stringify(q)} must be allowed`);
    for (const q of refused) assert.equal(await can(q), false, `${JSON.stringify(q)} must be refused`);

    // The same with real requests, as the elector would make them.
    const core = kc.makeApiClient(CoreV1Api);
    const leases = kc.makeApiClient(CoordinationV1Api);
    const status = async (fn: () => Promise<unknown>) => {
      try {
        await fn();
        return 200;
      } catch (err) {
        return (err as { code?: number }).code;
      }
    };
    assert.equal(await status(() => core.readNamespacedPod({ name: 'secure-0', namespace: ns })), 200);
    assert.equal(await status(() => leases.readNamespacedLease({ name: election, namespace: ns })), 200);
    assert.equal(await status(() => core.listNamespacedSecret({ namespace: ns })), 403);
    assert.equal(await status(() => core.listNamespacedPod({ namespace: ns })), 403);
    assert.equal(await status(() => leases.listNamespacedLease({ namespace: ns })), 403);
    assert.equal(
      await status(() =>
        leases.patchNamespacedLease({
          name: election,
          namespace: ns,
          body: [{ op: 'replace', path: '/spec/holderIdentity', value: 'me' }],
        }),
      ),
      403,
    );
    // create cannot be limited by name in RBAC (common/rbac.ts): creating another Lease is
    // possible, but reading or deleting it afterwards is not.
    assert.equal(
      await status(() =>
        leases.createNamespacedLease({
          namespace: ns,
          body: {
            metadata: { name: 'decoy' },
            spec: { holderIdentity: 'x', acquireTime: new V1MicroTime() },
          },
        }),
      ),
      200,
    );
    assert.equal(await status(() => leases.deleteNamespacedLease({ name: 'decoy', namespace: ns })), 403);
  });

  test('no token or key material in the logs of the elector and the webhook', async () => {
    // Some error paths too: the elector loses the API server for a while (its retries log
    // the errors), and the webhook refuses a pod.
    sandbox.cutApiServer();
    await sleep(1500);
    sandbox.restoreApiServer();
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await core
      .createNamespacedPod({
        namespace: ns,
        body: {
          metadata: { name: 'refused', labels: { leaderElection: 'yes' } },
          spec: { containers: [{ name: 'a', image: 'x' }] },
        },
      })
      .then(
        () => assert.fail('an invalid opt-in value must be refused'),
        () => undefined,
      );
    await sleep(500);

    const secret = await core.readNamespacedSecret({
      name: 'lifelease-webhook-tls',
      namespace: WEBHOOK_NAMESPACE,
    });
    const secretValues = Object.values(secret.data ?? {}).map((b64) =>
      Buffer.from(b64, 'base64').toString('utf8'),
    );
    const keys = secretValues.filter((v) => v.includes('PRIVATE KEY'));
    assert.ok(keys.length > 0, 'the webhook keeps its keys in the Secret');
    const keyBodies = keys.map((k) => k.split('\n').filter((l) => l && !l.startsWith('-----'))[0]!);
    const [, payload, signature] = token.split('.');
    const needles = [token, payload!, signature!, ...keyBodies, 'PRIVATE KEY', 'Bearer '];
    const logs = [
      { who: 'elector', text: sandbox.logs() },
      ...[...webhook.kubelet.sandboxes.values()].map((s) => ({
        who: `webhook ${s.pod.metadata?.name}`,
        text: s.logs(),
      })),
    ];
    assert.ok(logs[0]!.text.includes('"level":"debug"'), 'the elector logged at debug level');
    assert.ok(
      logs.slice(1).some((l) => /pod refused/.test(l.text)),
      'the webhook logged the refusal',
    );
    for (const { who, text } of logs) {
      assert.ok(text.length > 0, `${who} logged something`);
      for (const needle of needles) {
        assert.ok(
          !text.toLowerCase().includes(needle.toLowerCase()),
          `${who}'s log contains ${needle.slice(0, 24)}…`,
        );
      }
      // No JWT at all (the token, or another one).
      assert.doesNotMatch(text, /eyJ[\w-]{10,}\.eyJ[\w-]{10,}\./, `${who}'s log contains a JWT`);
    }
  });

  test("the elector's token stops working once its pod is gone", async (t) => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await core.deleteNamespacedPod({ name: 'secure-0', namespace: ns, gracePeriodSeconds: 0 });
    const kc = electorKubeConfig();
    // First the grant goes (the reconciler drops a binding nobody needs: 403), then the
    // token itself (bound to the pod; the API server caches token checks for ~10 s: 401).
    let code: number | undefined;
    const seen = new Set<number | undefined>();
    for (let i = 0; i < 300; i++) {
      try {
        await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'secure', namespace: ns });
        code = 200;
      } catch (err) {
        code = (err as { code?: number }).code;
      }
      seen.add(code);
      if (code === 401) break;
      await sleep(100);
    }
    assert.equal(code, 401);
    t.diagnostic(`answers to the token after its pod was deleted: ${[...seen].join(', ')}`);
  });
});
