/**
 * Security checks with the product installed as an admin would (`kubectl apply -k
 * manifests`, self-managed TLS, the webhook's RBAC reconciler) on the real node
 * (packages/harness/src/node.ts), and an opted-in pod created in a Pod Security `restricted`
 * namespace, its elector run by the kubelet from the project image with the token the kubelet
 * mounted for it:
 *
 * - the election API answers on the pod's loopback only: from inside the pod (`kubectl exec`
 *   in the app container) it answers; podIP:4040 refuses from the node; podIP:4041 (probes)
 *   answers;
 * - the elector's real identity (its pod-bound token, with what the reconciler granted) can
 *   do what the election needs and nothing else: no Secrets, no listing or watching Pods,
 *   no other Lease, no update or patch of any Lease; the token dies with the pod;
 * - the injected pod is accepted under `restricted` enforcement, and runs;
 * - no token or key material appears in the elector's or the webhook's logs (`kubectl logs`).
 *   The elector logs at its default level here (its level is not a pod setting) and the
 *   API-server outage path is not exercised: cutting one pod's network path is the fault
 *   suite's (test/chaos); the webhook's refusal path is.
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
import { CONTAINER_NAME } from '../../../common/constants.ts';
import { NODE_ROOT } from '@lifelease/harness/node';
import { installProduct, uninstallProduct, WEBHOOK_NAMESPACE } from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const RESTRICTED = {
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  runAsNonRoot: true,
  runAsUser: 10001,
  seccompProfile: { type: 'RuntimeDefault' as const },
};

let cluster: TestNode;
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

/** The token the kubelet mounted for the elector container, read from the kubelet's pod folder. */
function electorToken(p: V1Pod): string {
  const elector = [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])].find(
    (c) => c.name === CONTAINER_NAME,
  )!;
  const mount = elector.volumeMounts?.find((m) => m.mountPath.includes('serviceaccount'));
  assert.ok(mount, `the elector mounts a token: ${JSON.stringify(elector.volumeMounts)}`);
  const volumes = path.join(NODE_ROOT, 'kubelet/pods', p.metadata!.uid!, 'volumes/kubernetes.io~projected');
  return readFileSync(path.join(volumes, mount.name, 'token'), 'utf8').trim();
}

before(async () => {
  if (nodeSkip()) return;
  cluster = await sharedNode();
  await installProduct(cluster);
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
        terminationGracePeriodSeconds: 2,
        securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [
          {
            name: 'app',
            image: cluster.node.images.app,
            imagePullPolicy: 'Never',
            command: ['sh', '-c', 'trap "exit 0" TERM; while sleep 1; do :; done'],
            securityContext: RESTRICTED,
          },
        ],
      },
    },
  });
  pod = await eventually(
    'the pod to run with every container ready',
    async () => {
      const p = await core.readNamespacedPod({ name: 'secure-0', namespace: ns });
      return p.status?.phase === 'Running' && p.status.containerStatuses?.every((s) => s.ready) && p;
    },
    120_000,
  );
  token = electorToken(pod);
});

after(async () => {
  if (!cluster) return;
  await cluster.kubeConfig
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name: ns })
    .catch(() => {});
  await uninstallProduct(cluster);
  await cluster.release();
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

describe('security, on the real node', { skip: nodeSkip() }, () => {
  test('the injected pod is accepted under Pod Security restricted enforcement', () => {
    const elector = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find(
      (c) => c.name === CONTAINER_NAME,
    );
    assert.ok(elector, 'the webhook injected the elector');
    assert.equal(pod.metadata?.namespace, ns);
  });

  test('the election API is on the pod loopback only; probes answer on the pod IP', async () => {
    const podIP = pod.status!.podIP!;
    assert.match(podIP, /^10\.88\./);
    const inside = JSON.parse(
      await cluster.kubectl([
        '-n',
        ns,
        'exec',
        'secure-0',
        '-c',
        'app',
        '--',
        'node',
        '-e',
        'fetch("http://localhost:4040/").then(async (r) => console.log(JSON.stringify({ status: r.status, body: await r.json() })))',
      ]),
    ) as { status: number; body: { is_leader: boolean } };
    assert.equal(inside.status, 200, 'GET / from inside the pod');
    assert.equal(inside.body.is_leader, true);
    assert.equal(await httpStatus(podIP, 4040, '/'), 'ECONNREFUSED');
    assert.equal(await httpStatus(podIP, 4040, '/sse'), 'ECONNREFUSED');
    assert.equal(await httpStatus(podIP, 4041, '/healthz'), 200);
    assert.equal(await httpStatus(podIP, 4041, '/readyz'), 200);
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
    // An error path too: the webhook refuses a pod.
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
    const webhookPods = (
      await core.listNamespacedPod({
        namespace: WEBHOOK_NAMESPACE,
        labelSelector: 'app.kubernetes.io/name=lifelease-webhook',
      })
    ).items;
    const logOf = (namespace: string, name: string, container: string) =>
      core.readNamespacedPodLog({ name, namespace, container });
    const logs = await eventually(
      'the webhook to log the refusal',
      async () => {
        const all = [
          { who: 'elector', text: await logOf(ns, 'secure-0', CONTAINER_NAME) },
          ...(await Promise.all(
            webhookPods.map(async (p) => ({
              who: `webhook ${p.metadata?.name}`,
              text: await logOf(WEBHOOK_NAMESPACE, p.metadata!.name!, 'webhook'),
            })),
          )),
        ];
        return all.slice(1).some((l) => /pod refused/.test(l.text)) && all;
      },
      30_000,
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
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      try {
        await kc.makeApiClient(CoordinationV1Api).readNamespacedLease({ name: 'secure', namespace: ns });
        code = 200;
      } catch (err) {
        code = (err as { code?: number }).code;
      }
      seen.add(code);
      if (code === 401) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(code, 401);
    t.diagnostic(`answers to the token after its pod was deleted: ${[...seen].join(', ')}`);
  });
});
