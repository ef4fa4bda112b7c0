/**
 * Pod specs that real manifests have and that once went wrong (issue 12): pod-level
 * resources, Windows pods, a hostname shared by replicas, pods running as root, elections
 * merged across workloads, native sidecars, init containers, envFrom. Each case is the
 * decision a cluster admin should see; the goldens (test/fixtures/golden) hold one pod of
 * each, and test/integration/webhook/real-world.test.ts sends them through kube-apiserver.
 */
import type { V1Container, V1OwnerReference, V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { handleAdmission, parseReview } from '../../../webhook/admission.ts';
import { decide, electionName, ELECTOR_UID, inject } from '../../../webhook/inject.ts';
import { createReview, decodePatch, patchedPod, TEST_CONFIG } from '../../support/admission-reviews.ts';

const owner = (kind: string, name: string): V1OwnerReference => ({
  apiVersion: kind === 'Job' ? 'batch/v1' : 'apps/v1',
  kind,
  name,
  uid: `uid-${name}`,
  controller: true,
  blockOwnerDeletion: true,
});

function pod(
  meta: V1Pod['metadata'] = {},
  spec: Partial<NonNullable<V1Pod['spec']>> = {},
  labels: Record<string, string> = { app: 'web' },
): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'ns', ...meta, labels: { leaderElection: 'true', ...labels } },
    spec: { containers: [{ name: 'app', image: 'app:1' }], ...spec },
  };
}

function review(p: V1Pod) {
  const parsed = parseReview(createReview(p, 'ns'));
  assert.ok(parsed.ok);
  return handleAdmission(parsed.request, TEST_CONFIG);
}

/** Injects through the whole handler and checks the patch applies and a re-review is a no-op. */
function injected(p: V1Pod) {
  const first = review(p);
  assert.equal(first.outcome, 'patched', first.message);
  const out = patchedPod(p, first.review);
  assert.deepEqual(decodePatch(review(out).review), [], 're-review changed the pod');
  return { pod: out, warnings: first.review.response.warnings ?? [], ops: decodePatch(first.review) };
}

function refused(p: V1Pod, reason: string, message: RegExp) {
  const d = decide(p, 'ns', TEST_CONFIG);
  assert.equal(d.kind, 'refuse', JSON.stringify(d));
  if (d.kind !== 'refuse') return;
  assert.equal(d.reason, reason);
  assert.match(d.message, message);
}

const electorOf = (p: V1Pod): V1Container | undefined =>
  [...(p.spec?.initContainers ?? []), ...(p.spec?.containers ?? [])].find((c) => c.name === 'elector');

describe('1. pod-level resources account for the elector', () => {
  test('requests and limits grow by the elector’s (10m/48Mi, 250m/128Mi)', () => {
    const out = injected(
      pod(
        {},
        {
          resources: { requests: { cpu: '500m', memory: '50Mi' }, limits: { cpu: '1', memory: '1Gi' } },
          containers: [{ name: 'app', image: 'a', resources: { requests: { cpu: '500m', memory: '50Mi' } } }],
        },
      ),
    );
    assert.deepEqual(out.pod.spec?.resources, {
      requests: { cpu: '510m', memory: '98Mi' },
      limits: { cpu: '1250m', memory: '1152Mi' },
    });
  });

  test('only what the pod sets is touched; other resources kept as they are', () => {
    const out = injected(pod({}, { resources: { limits: { memory: '300M', 'hugepages-2Mi': '4Mi' } } }));
    assert.deepEqual(out.pod.spec?.resources, {
      limits: { memory: '434217728', 'hugepages-2Mi': '4Mi' },
    });
  });

  test('a pod-level value in the exponent form (1e9 bytes) is read too', () => {
    const out = injected(pod({}, { resources: { requests: { memory: '1e9' } } }));
    assert.deepEqual(out.pod.spec?.resources, { requests: { memory: '1050331648' } });
  });

  test('an elector without a limit adds its request to the pod limit, so requests stay within limits', () => {
    const config = { ...TEST_CONFIG, resources: { ...TEST_CONFIG.resources, memoryLimit: '' } };
    const p = pod({}, { resources: { requests: { memory: '64Mi' }, limits: { memory: '64Mi' } } });
    const d = decide(p, 'ns', config);
    assert.equal(d.kind, 'inject');
    if (d.kind !== 'inject') return;
    const out = inject(p, d.plan, config).pod;
    assert.deepEqual(out.spec?.resources, { requests: { memory: '112Mi' }, limits: { memory: '112Mi' } });
  });

  test('re-rendering an elector (new limits) adds only the difference', () => {
    const first = injected(pod({}, { resources: { limits: { memory: '1Gi' } } })).pod;
    const config = { ...TEST_CONFIG, resources: { ...TEST_CONFIG.resources, memoryLimit: '256Mi' } };
    const d = decide(first, 'ns', config);
    assert.equal(d.kind, 'inject');
    if (d.kind !== 'inject') return;
    const again = inject(first, d.plan, config).pod;
    assert.deepEqual(again.spec?.resources, { limits: { memory: '1280Mi' } });
  });
});

describe('2. Windows pods are refused', () => {
  const cases: { name: string; spec: Partial<NonNullable<V1Pod['spec']>>; why: RegExp }[] = [
    { name: 'spec.os.name', spec: { os: { name: 'windows' } }, why: /spec.os.name is windows/ },
    {
      name: 'nodeSelector',
      spec: { nodeSelector: { 'kubernetes.io/os': 'windows' } },
      why: /nodeSelector kubernetes.io\/os is windows/,
    },
    {
      name: 'required node affinity, every term',
      spec: {
        affinity: {
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: [
                { matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['windows'] }] },
                { matchExpressions: [{ key: 'kubernetes.io/os', operator: 'NotIn', values: ['linux'] }] },
              ],
            },
          },
        },
      },
      why: /node affinity allows Windows nodes only/,
    },
  ];
  for (const c of cases) {
    test(c.name, () =>
      refused(
        pod({}, c.spec),
        'windows',
        new RegExp(`${c.why.source}.*Linux container; set leaderElection: "false"`),
      ),
    );
  }

  test('a Linux pod, or an affinity with one Linux term, is injected', () => {
    injected(pod({}, { os: { name: 'linux' }, nodeSelector: { 'kubernetes.io/os': 'linux' } }));
    injected(
      pod(
        {},
        {
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [
                  { matchExpressions: [{ key: 'kubernetes.io/os', operator: 'In', values: ['windows'] }] },
                  {
                    matchExpressions: [
                      { key: 'kubernetes.io/os', operator: 'In', values: ['linux', 'windows'] },
                    ],
                  },
                ],
              },
            },
          },
        },
      ),
    );
  });
});

describe('3. a hostname shared by replicas is refused', () => {
  for (const kind of ['ReplicaSet', 'DaemonSet', 'Job', 'ReplicationController', 'CloneSet']) {
    test(`${kind} owner`, () =>
      refused(
        pod({ ownerReferences: [owner(kind, 'web-1')] }, { hostname: 'web' }),
        'shared-hostname',
        new RegExp(`spec.hostname "web" is the same in every pod of ${kind} "web-1".*remove spec.hostname`),
      ));
  }

  test('StatefulSet (hostname = pod name), Indexed Job (hostname per index) and bare pods are injected', () => {
    injected(pod({ ownerReferences: [owner('StatefulSet', 'db')] }, { hostname: 'db-0' }));
    injected(
      pod(
        {
          ownerReferences: [owner('Job', 'work')],
          annotations: { 'batch.kubernetes.io/job-completion-index': '2' },
        },
        { hostname: 'work-2' },
      ),
    );
    injected(pod({}, { hostname: 'alone' }));
  });
});

describe('4. a pod that runs as root', () => {
  test('runAsUser: 0 at pod level: the elector runs as the image’s uid and gid', () => {
    const out = injected(pod({}, { securityContext: { runAsUser: 0, runAsGroup: 0 } })).pod;
    const sc = electorOf(out)?.securityContext;
    assert.equal(sc?.runAsUser, ELECTOR_UID);
    assert.equal(sc?.runAsGroup, ELECTOR_UID);
    assert.equal(sc?.runAsNonRoot, true);
  });

  test('a non-root or unset pod uid: no uid of its own (OpenShift assigns one from a range)', () => {
    for (const securityContext of [{}, { runAsUser: 1000 }]) {
      const sc = electorOf(injected(pod({}, { securityContext })).pod)?.securityContext;
      assert.equal(sc?.runAsUser, undefined);
      assert.equal(sc?.runAsGroup, undefined);
    }
  });
});

describe('5. the election is the owning workload’s, before labels (frozen rule)', () => {
  const rs = (name: string, hash: string) => ({
    generateName: `${name}-${hash}-`,
    labels: { 'pod-template-hash': hash },
    ownerReferences: [owner('ReplicaSet', `${name}-${hash}`)],
  });
  const cases: { name: string; meta: V1Pod['metadata']; want: string; source: string }[] = [
    {
      name: 'annotation beats owner and labels',
      meta: { ...rs('api', '6f7d8c9b5'), annotations: { 'lifelease.dev/election': 'shared' } },
      want: 'shared',
      source: 'annotation',
    },
    {
      name: 'Deployment (ReplicaSet, hash stripped) beats app',
      meta: {
        ...rs('reviews-v2', '5d4c3b2a1'),
        labels: { app: 'reviews', 'pod-template-hash': '5d4c3b2a1' },
      },
      want: 'reviews-v2',
      source: 'owner',
    },
    {
      name: 'StatefulSet beats app.kubernetes.io/name',
      meta: {
        labels: { 'app.kubernetes.io/name': 'redis' },
        ownerReferences: [owner('StatefulSet', 'redis-replicas')],
      },
      want: 'redis-replicas',
      source: 'owner',
    },
    {
      name: 'Job beats app',
      meta: { labels: { app: 'ingress' }, ownerReferences: [owner('Job', 'ingress-admission-create')] },
      want: 'ingress-admission-create',
      source: 'owner',
    },
    {
      name: 'CronJob (through its Job) beats app',
      meta: { labels: { app: 'backup' }, ownerReferences: [owner('Job', 'nightly-29000000')] },
      want: 'nightly',
      source: 'owner',
    },
    {
      name: 'DaemonSet',
      meta: { labels: { app: 'agent' }, ownerReferences: [owner('DaemonSet', 'agent-node')] },
      want: 'agent-node',
      source: 'owner',
    },
    {
      name: 'no owner: app label',
      meta: { name: 'p', generateName: 'x-', labels: { app: 'web', 'app.kubernetes.io/name': 'w' } },
      want: 'web',
      source: 'app-label',
    },
    {
      name: 'no owner: app.kubernetes.io/name',
      meta: { name: 'p', labels: { 'app.kubernetes.io/name': 'shop' } },
      want: 'shop',
      source: 'app-kubernetes-io-name-label',
    },
    {
      name: 'no owner, no labels: generateName',
      meta: { generateName: 'batch-' },
      want: 'batch',
      source: 'generate-name',
    },
    { name: 'no owner, no labels: pod name', meta: { name: 'lonely' }, want: 'lonely', source: 'pod-name' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const e = electionName({ metadata: c.meta ?? {} });
      assert.ok(!('invalid' in e), JSON.stringify(e));
      assert.deepEqual([e.name, e.source], [c.want, c.source]);
    });
  }

  test('workloads sharing labels get one election each', () => {
    const labels = { app: 'nginx', 'app.kubernetes.io/name': 'ingress-nginx' };
    const names = [
      { labels, ownerReferences: [owner('ReplicaSet', 'controller-abc12')] },
      { labels, ownerReferences: [owner('Job', 'admission-create')] },
      { labels, ownerReferences: [owner('Job', 'admission-patch')] },
    ].map((meta) => {
      const e = electionName({ metadata: meta });
      return 'invalid' in e ? '' : e.name;
    });
    assert.equal(new Set(names).size, 3, names.join(', '));
  });
});

describe('6. a native sidecar the user declared gets the env', () => {
  test('like every app container, its own values kept', () => {
    const out = injected(
      pod(
        {},
        {
          initContainers: [
            {
              name: 'shipper',
              image: 's',
              restartPolicy: 'Always',
              env: [{ name: 'ELECTOR_PATH', value: 'localhost:4040' }],
            },
          ],
        },
      ),
    ).pod;
    const shipper = out.spec?.initContainers?.find((c) => c.name === 'shipper');
    assert.deepEqual(
      shipper?.env?.map((e) => e.name),
      ['ELECTOR_GET_URL', 'ELECTOR_SSE_URL', 'ELECTOR_PATH'],
    );
  });
});

describe('7. init containers', () => {
  test('the elector is one add at the end, the user’s init containers are never rewritten', () => {
    const out = injected(
      pod(
        {},
        {
          initContainers: [
            { name: 'vault-init', image: 'v' },
            { name: 'istio-proxy', image: 'i', restartPolicy: 'Always' },
            { name: 'migrate', image: 'm' },
          ],
        },
      ),
    );
    const initOps = out.ops.filter((o) => o.path.startsWith('/spec/initContainers'));
    assert.deepEqual(
      initOps.map((o) => `${o.op} ${o.path}`),
      ['add /spec/initContainers/1/env', 'add /spec/initContainers/3'],
    );
  });
});

describe('7. init containers: reinvocation', () => {
  test('an init container another webhook appended after the elector: one move, then nothing', () => {
    const first = injected(pod({}, { initContainers: [{ name: 'setup', image: 's' }] })).pod;
    first.spec?.initContainers?.push({ name: 'late', image: 'l' });
    const again = review(first);
    assert.deepEqual(decodePatch(again.review), [
      { op: 'move', from: '/spec/initContainers/1', path: '/spec/initContainers/2' },
    ]);
    const moved = patchedPod(first, again.review);
    assert.deepEqual(
      moved.spec?.initContainers?.map((c) => c.name),
      ['setup', 'late', 'elector'],
    );
    assert.deepEqual(decodePatch(review(moved).review), []);
  });

  test('a re-rendered elector (a new image) is one replace at its index', () => {
    const first = injected(pod({}, { initContainers: [{ name: 'setup', image: 's' }] })).pod;
    const config = { ...TEST_CONFIG, image: 'registry.example/lifelease:0.2.0' };
    const parsed = parseReview(createReview(first, 'ns'));
    assert.ok(parsed.ok);
    const ops = decodePatch(handleAdmission(parsed.request, config).review);
    assert.deepEqual(
      ops.map((o) => `${o.op} ${o.path}`),
      ['replace /spec/initContainers/1', 'add /metadata/annotations/lifelease.dev~1injected'],
    );
  });
});

describe('8. envFrom', () => {
  const cases: { name: string; envFrom: NonNullable<V1Container['envFrom']>; warns: boolean }[] = [
    { name: 'unprefixed ConfigMap', envFrom: [{ configMapRef: { name: 'c' } }], warns: true },
    { name: 'prefix ELECTOR_', envFrom: [{ secretRef: { name: 's' }, prefix: 'ELECTOR_' }], warns: true },
    { name: 'prefix ELEC', envFrom: [{ configMapRef: { name: 'c' }, prefix: 'ELEC' }], warns: true },
    { name: 'prefix APP_', envFrom: [{ configMapRef: { name: 'c' }, prefix: 'APP_' }], warns: false },
  ];
  for (const c of cases) {
    test(`${c.name}: env added${c.warns ? ', with a warning' : ''}`, () => {
      const out = injected(pod({}, { containers: [{ name: 'app', image: 'a', envFrom: c.envFrom }] }));
      assert.equal(out.pod.spec?.containers[0]?.env?.length, 3);
      assert.equal(
        out.warnings.some((w) => /envFrom that may set ELECTOR_/.test(w)),
        c.warns,
        out.warnings.join(),
      );
    });
  }
});
