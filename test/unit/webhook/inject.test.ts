/** The pure policy and transformation: opt-in, refusals with their messages, election names. */
import type { V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  decide,
  electionName,
  electorContainer,
  electorNodeOptions,
  ELECTOR_UID,
  inject,
  INJECTED_NODE_OPTIONS,
  isValidElectionName,
  optIn,
  toElectionName,
  TOKEN_MOUNT_PATH,
  TOKEN_VOLUME_NAME,
  type InjectionConfig,
} from '../../../webhook/inject.ts';
import { MAX_CACHED_RENDERINGS, renderElector } from '../../../webhook/render.ts';
import { TEST_CONFIG } from '../../support/admission-reviews.ts';

function pod(meta: V1Pod['metadata'] = {}, spec: Partial<NonNullable<V1Pod['spec']>> = {}): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'p', namespace: 'ns', labels: { leaderElection: 'true', app: 'web' }, ...meta },
    spec: { containers: [{ name: 'app', image: 'app:1' }], ...spec },
  };
}

function injected(p: V1Pod, config: InjectionConfig = TEST_CONFIG) {
  const d = decide(p, 'ns', config);
  assert.equal(d.kind, 'inject', JSON.stringify(d));
  if (d.kind !== 'inject') throw new Error('unreachable');
  return inject(p, d.plan, config);
}

describe('opt-in', () => {
  const cases: {
    name: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    want: string;
  }[] = [
    { name: 'no key', want: 'no:not-opted-in' },
    { name: 'label true', labels: { leaderElection: 'true' }, want: 'yes' },
    { name: 'label TRUE', labels: { leaderElection: 'TRUE' }, want: 'yes' },
    { name: 'label " True " (trimmed)', labels: { leaderElection: ' True ' }, want: 'yes' },
    { name: 'annotation true', annotations: { leaderElection: 'true' }, want: 'yes' },
    { name: 'label false', labels: { leaderElection: 'False' }, want: 'no:opted-out' },
    { name: 'annotation false', annotations: { leaderElection: 'false' }, want: 'no:opted-out' },
    {
      name: 'both true',
      labels: { leaderElection: 'true' },
      annotations: { leaderElection: 'True' },
      want: 'yes',
    },
    { name: 'label yes', labels: { leaderElection: 'yes' }, want: 'invalid' },
    { name: 'annotation 1', annotations: { leaderElection: '1' }, want: 'invalid' },
    { name: 'empty label', labels: { leaderElection: '' }, want: 'invalid' },
    {
      name: 'disagreeing',
      labels: { leaderElection: 'true' },
      annotations: { leaderElection: 'false' },
      want: 'invalid',
    },
    { name: 'other key case', labels: { leaderelection: 'true' }, want: 'no:not-opted-in' },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const r = optIn({ metadata: { labels: c.labels ?? {}, annotations: c.annotations ?? {} } });
      const got = r.kind === 'no' ? `no:${r.reason}` : r.kind;
      assert.equal(got, c.want);
      if (r.kind === 'invalid') assert.match(r.message, /true" or "false|disagree/);
    });
  }
});

describe('refusals say what to change', () => {
  const cases: { name: string; pod: V1Pod; reason: string; message: RegExp }[] = [
    {
      name: 'hostNetwork',
      pod: pod({}, { hostNetwork: true }),
      reason: 'host-network',
      message: /hostNetwork: true.*remove hostNetwork or set leaderElection: "false"/,
    },
    {
      name: 'app port clashes with the election port',
      pod: pod({}, { containers: [{ name: 'web', image: 'x', ports: [{ containerPort: 4040 }] }] }),
      reason: 'port-clash',
      message: /container "web" uses port 4040.*set annotation lifelease.dev\/election-port to a free port/,
    },
    {
      name: 'init container clashes with the probe port',
      pod: pod(
        {},
        {
          initContainers: [
            { name: 'proxy', image: 'x', restartPolicy: 'Always', ports: [{ containerPort: 4041 }] },
          ],
        },
      ),
      reason: 'port-clash',
      message: /container "proxy" uses port 4041.*lifelease.dev\/probe-port/,
    },
    {
      name: 'overridden port still clashing',
      pod: pod(
        { annotations: { 'lifelease.dev/election-port': '8080' } },
        { containers: [{ name: 'web', image: 'x', ports: [{ containerPort: 8080 }] }] },
      ),
      reason: 'port-clash',
      message: /uses port 8080/,
    },
    {
      name: 'port annotation not a number',
      pod: pod({ annotations: { 'lifelease.dev/probe-port': 'http' } }),
      reason: 'invalid-port',
      message: /lifelease.dev\/probe-port="http" must be a port number in 1024..65535/,
    },
    {
      name: 'privileged port annotation',
      pod: pod({ annotations: { 'lifelease.dev/election-port': '80' } }),
      reason: 'invalid-port',
      message: /1024..65535/,
    },
    {
      name: 'equal ports',
      pod: pod({
        annotations: { 'lifelease.dev/election-port': '5000', 'lifelease.dev/probe-port': '5000' },
      }),
      reason: 'invalid-port',
      message: /both 5000/,
    },
    {
      name: 'invalid explicit election name',
      pod: pod({ annotations: { 'lifelease.dev/election': 'My_Election' } }),
      reason: 'invalid-election-name',
      message: /lifelease.dev\/election="My_Election" is not a valid election name.*\(e.g. "my-election"\)/,
    },
    {
      name: 'explicit election name too long',
      pod: pod({ annotations: { 'lifelease.dev/election': 'a'.repeat(64) } }),
      reason: 'invalid-election-name',
      message: /at most 63/,
    },
    {
      name: 'invalid opt-in value',
      pod: pod({ labels: { leaderElection: 'on' } }),
      reason: 'invalid-opt-in',
      message: /label leaderElection="on" must be "true" or "false"/,
    },
    {
      name: 'a container named elector that is not ours',
      pod: pod(
        {},
        {
          containers: [
            { name: 'app', image: 'x' },
            { name: 'elector', image: 'nais/elector' },
          ],
        },
      ),
      reason: 'name-taken',
      message: /already has a container named "elector"/,
    },
    {
      name: 'our volume name taken',
      pod: pod({}, { volumes: [{ name: TOKEN_VOLUME_NAME, emptyDir: {} }] }),
      reason: 'name-taken',
      message: /volume named "lifelease-elector-token"/,
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const d = decide(c.pod, 'ns', TEST_CONFIG);
      assert.equal(d.kind, 'refuse', JSON.stringify(d));
      if (d.kind !== 'refuse') return;
      assert.equal(d.reason, c.reason);
      assert.match(d.message, c.message);
    });
  }

  test('a UDP port 4040 is no clash', () => {
    const p = pod(
      {},
      { containers: [{ name: 'dns', image: 'x', ports: [{ containerPort: 4040, protocol: 'UDP' }] }] },
    );
    assert.equal(decide(p, 'ns', TEST_CONFIG).kind, 'inject');
  });

  test('not opted in: skipped even when it would be refused', () => {
    const p = pod({ labels: {} }, { hostNetwork: true });
    assert.deepEqual(decide(p, 'ns', TEST_CONFIG), { kind: 'skip', reason: 'not-opted-in' });
  });

  test('not an object, or no containers: skipped unless opted in', () => {
    assert.equal(decide(null, 'ns', TEST_CONFIG).kind, 'skip');
    assert.equal(
      decide({ metadata: { labels: { leaderElection: 'true' } } }, 'ns', TEST_CONFIG).kind,
      'refuse',
    );
  });
});

describe('election name', () => {
  const cases: { name: string; meta: V1Pod['metadata']; want: string; source: string }[] = [
    {
      name: 'explicit annotation wins',
      meta: { annotations: { 'lifelease.dev/election': 'x.y' }, labels: { app: 'web' } },
      want: 'x.y',
      source: 'annotation',
    },
    {
      name: 'app label',
      meta: { labels: { app: 'web', 'app.kubernetes.io/name': 'other' } },
      want: 'web',
      source: 'app-label',
    },
    {
      name: 'app.kubernetes.io/name',
      meta: { labels: { 'app.kubernetes.io/name': 'shop' }, name: 'p' },
      want: 'shop',
      source: 'app-kubernetes-io-name-label',
    },
    {
      name: 'ReplicaSet owner, hash stripped',
      meta: {
        generateName: 'api-6f7d8c9b5-',
        labels: { 'pod-template-hash': '6f7d8c9b5' },
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'api-6f7d8c9b5', uid: 'u', controller: true },
        ],
      },
      want: 'api',
      source: 'owner',
    },
    {
      name: 'ReplicaSet owner without hash label',
      meta: {
        ownerReferences: [
          { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'plain-rs', uid: 'u', controller: true },
        ],
      },
      want: 'plain-rs',
      source: 'owner',
    },
    {
      name: 'CronJob run',
      meta: {
        ownerReferences: [
          { apiVersion: 'batch/v1', kind: 'Job', name: 'backup-29000000', uid: 'u', controller: true },
        ],
      },
      want: 'backup',
      source: 'owner',
    },
    {
      name: 'plain Job with a short number',
      meta: {
        ownerReferences: [
          { apiVersion: 'batch/v1', kind: 'Job', name: 'migrate-42', uid: 'u', controller: true },
        ],
      },
      want: 'migrate-42',
      source: 'owner',
    },
    {
      name: 'controller owner preferred over others',
      meta: {
        ownerReferences: [
          { apiVersion: 'v1', kind: 'ConfigMap', name: 'cm', uid: 'u1' },
          { apiVersion: 'apps/v1', kind: 'StatefulSet', name: 'db', uid: 'u2', controller: true },
        ],
      },
      want: 'db',
      source: 'owner',
    },
    {
      name: 'generateName without owner, hash stripped',
      meta: { generateName: 'web-5d4c3b2a1-', labels: { 'pod-template-hash': '5d4c3b2a1' } },
      want: 'web',
      source: 'generate-name',
    },
    { name: 'pod name', meta: { name: 'lonely' }, want: 'lonely', source: 'pod-name' },
    {
      name: 'unusable app label falls through',
      meta: { labels: { app: '___' }, name: 'p1' },
      want: 'p1',
      source: 'pod-name',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const e = electionName({ metadata: c.meta ?? {} });
      assert.ok(!('invalid' in e), JSON.stringify(e));
      assert.equal(e.name, c.want);
      assert.equal(e.source, c.source);
    });
  }

  test('toElectionName keeps valid names and makes invalid ones valid, distinct and stable', () => {
    assert.equal(toElectionName('web'), 'web');
    assert.equal(toElectionName('a.b-c'), 'a.b-c');
    const a = toElectionName('My_App');
    const b = toElectionName('my-app');
    assert.match(a ?? '', /^my-app-[0-9a-f]{6}$/);
    assert.notEqual(a, b);
    assert.equal(toElectionName('My_App'), a);
    const long = toElectionName('x'.repeat(200));
    assert.ok(long && long.length <= 63 && isValidElectionName(long));
    assert.notEqual(toElectionName('x'.repeat(200)), toElectionName(`${'x'.repeat(199)}y`));
    assert.equal(toElectionName('---'), undefined);
    assert.ok(isValidElectionName(toElectionName('-.a..b.-') ?? ''));
  });
});

describe('transformation', () => {
  test('native sidecar: last among init containers; native sidecars get the env, regular init containers not', () => {
    const r = injected(
      pod(
        {},
        {
          initContainers: [
            { name: 'setup', image: 'x' },
            { name: 'shipper', image: 'x', restartPolicy: 'Always' },
            { name: 'migrate', image: 'x' },
          ],
        },
      ),
    );
    assert.deepEqual(
      r.pod.spec?.initContainers?.map((c) => c.name),
      ['setup', 'shipper', 'migrate', 'elector'],
    );
    const env = (name: string) =>
      r.pod.spec?.initContainers?.find((c) => c.name === name)?.env?.map((e) => e.name);
    assert.equal(env('setup'), undefined);
    assert.equal(env('migrate'), undefined);
    assert.deepEqual(env('shipper'), ['ELECTOR_PATH', 'ELECTOR_GET_URL', 'ELECTOR_SSE_URL']);
  });

  test('an elector that another webhook put an init container after moves to the end', () => {
    const first = injected(pod({}, { initContainers: [{ name: 'setup', image: 'x' }] })).pod;
    first.spec?.initContainers?.push({ name: 'late', image: 'x' });
    const again = injected(first).pod;
    assert.deepEqual(
      again.spec?.initContainers?.map((c) => c.name),
      ['setup', 'late', 'elector'],
    );
    assert.deepEqual(injected(again).pod, again);
  });

  test('classic mode: appended to the containers, init containers untouched, warning for Jobs', () => {
    const cfg: InjectionConfig = { ...TEST_CONFIG, mode: 'container' };
    const r = injected(
      pod({}, { restartPolicy: 'Never', initContainers: [{ name: 'setup', image: 'x' }] }),
      cfg,
    );
    assert.deepEqual(
      r.pod.spec?.containers.map((c) => c.name),
      ['app', 'elector'],
    );
    const elector = r.pod.spec?.containers[1];
    assert.equal(elector?.restartPolicy, undefined);
    assert.equal(r.pod.spec?.initContainers?.[0]?.env, undefined);
    assert.match(r.warnings.join('\n'), /restartPolicy Never pod keeps running/);
  });

  test('a pod injected in one mode and reviewed in the other is re-rendered, not duplicated', () => {
    const native = injected(pod()).pod;
    const classic = injected(native, { ...TEST_CONFIG, mode: 'container' }).pod;
    assert.equal(classic.spec?.initContainers?.length ?? 0, 0);
    assert.deepEqual(
      classic.spec?.containers.map((c) => c.name),
      ['app', 'elector'],
    );
    assert.equal(classic.spec?.containers[0]?.env?.length, 3);
  });

  test('a newer image replaces an older injected elector in place and restamps', () => {
    const first = injected(pod({}, { initContainers: [{ name: 'a', image: 'x' }] })).pod;
    const next = injected(first, {
      ...TEST_CONFIG,
      image: 'registry.example/lifelease:0.2.0',
      version: 'v2',
    }).pod;
    assert.deepEqual(
      next.spec?.initContainers?.map((c) => c.name),
      ['a', 'elector'],
    );
    assert.equal(next.spec?.initContainers?.[1]?.image, 'registry.example/lifelease:0.2.0');
    assert.match(next.metadata?.annotations?.['lifelease.dev/injected'] ?? '', /"version":"v2"/);
    assert.equal(next.spec?.containers[0]?.env?.length, 3, 'env not duplicated');
  });

  test('an elector whose fields the API server defaulted is kept as is (same hash)', () => {
    const first = injected(pod()).pod;
    const stored = structuredClone(first);
    const elector = stored.spec?.initContainers?.[0];
    assert.ok(elector);
    elector.imagePullPolicy = 'IfNotPresent';
    elector.terminationMessagePath = '/dev/termination-log';
    const again = injected(stored);
    assert.deepEqual(again.pod, stored);
  });

  test('the label lifelease.dev/election is set, a different user value replaced with a warning', () => {
    const r = injected(
      pod({ labels: { leaderElection: 'true', app: 'web', 'lifelease.dev/election': 'mine' } }),
    );
    assert.equal(r.pod.metadata?.labels?.['lifelease.dev/election'], 'web');
    assert.match(r.warnings.join('\n'), /replaced by "web"/);
  });

  test('the user env is never overridden, even via valueFrom', () => {
    const p = pod(
      {},
      {
        containers: [
          {
            name: 'app',
            image: 'x',
            env: [{ name: 'ELECTOR_PATH', valueFrom: { configMapKeyRef: { name: 'c', key: 'k' } } }],
          },
        ],
      },
    );
    const r = injected(p);
    const env = r.pod.spec?.containers[0]?.env ?? [];
    assert.deepEqual(
      env.map((e) => e.name),
      ['ELECTOR_GET_URL', 'ELECTOR_SSE_URL', 'ELECTOR_PATH'],
    );
    assert.deepEqual(env[2], p.spec?.containers[0]?.env?.[0]);
    assert.match(r.warnings.join('\n'), /keeps its own ELECTOR_PATH/);
  });

  test('the input pod is not modified', () => {
    const p = pod();
    const before = structuredClone(p);
    injected(p);
    assert.deepEqual(p, before);
  });

  test('the elector is rendered once per election and configuration, frozen, and never shared with a result', () => {
    const plan = (p: V1Pod, config: InjectionConfig = TEST_CONFIG) => {
      const d = decide(p, 'ns', config);
      if (d.kind !== 'inject') throw new Error(JSON.stringify(d));
      return d.plan;
    };
    const mount = { name: TOKEN_VOLUME_NAME, mountPath: TOKEN_MOUNT_PATH, readOnly: true };
    const render = (p: V1Pod, config: InjectionConfig = TEST_CONFIG, root = false) =>
      renderElector(plan(p, config), config, mount, true, root);
    const first = render(pod({ name: 'a' }));
    // Another pod of the same election: the same rendering, not a new one.
    assert.equal(render(pod({ name: 'b' })), first);
    assert.ok(Object.isFrozen(first.container) && Object.isFrozen(first.container.securityContext));
    assert.throws(() => {
      (first.container.args as string[]).push('--x');
    }, TypeError);
    // What the rendering reads changes it: election, configuration, a root pod.
    const other = render(pod({ labels: { leaderElection: 'true', app: 'other' } }));
    assert.notEqual(other.hash, first.hash);
    assert.notEqual(render(pod({ name: 'a' }), { ...TEST_CONFIG, image: 'x:2' }).hash, first.hash);
    assert.equal(
      render(pod({ name: 'a' }), TEST_CONFIG, true).container.securityContext?.runAsUser,
      ELECTOR_UID,
    );
    // Each equals what a fresh rendering gives.
    assert.deepEqual(first.container, electorContainer(plan(pod()), TEST_CONFIG, mount));
    // A pod made from the patch owns its elector: changing it changes nothing shared.
    const out = injected(pod()).pod;
    out.spec!.initContainers![0]!.image = 'changed';
    assert.equal(injected(pod()).pod.spec!.initContainers![0]!.image, TEST_CONFIG.image);
  });

  test('the renderings kept are bounded', () => {
    const config = { ...TEST_CONFIG };
    const mount = { name: TOKEN_VOLUME_NAME, mountPath: TOKEN_MOUNT_PATH, readOnly: true };
    const planFor = (name: string) => {
      const d = decide(pod({ annotations: { 'lifelease.dev/election': name } }), 'ns', config);
      if (d.kind !== 'inject') throw new Error(JSON.stringify(d));
      return d.plan;
    };
    const oldest = renderElector(planFor('e-0'), config, mount, true, false);
    for (let i = 1; i <= MAX_CACHED_RENDERINGS; i++)
      renderElector(planFor(`e-${i}`), config, mount, true, false);
    // e-0 was dropped (oldest first): asked again, it is rendered anew, equal but not the same.
    const again = renderElector(planFor('e-0'), config, mount, true, false);
    assert.notEqual(again, oldest);
    assert.deepEqual(again, oldest);
  });

  test('resources: an empty setting leaves that value out', () => {
    const cfg: InjectionConfig = {
      ...TEST_CONFIG,
      resources: { cpuRequest: '10m', memoryRequest: '', cpuLimit: '', memoryLimit: '' },
    };
    const elector = injected(pod(), cfg).pod.spec?.initContainers?.[0];
    assert.deepEqual(elector?.resources, { requests: { cpu: '10m' } });
  });

  test('command: empty keeps the image entrypoint; the subcommand leads the args', () => {
    const elector = injected(pod()).pod.spec?.initContainers?.[0];
    assert.equal(elector?.command, undefined);
    assert.equal(elector?.args?.[0], 'elector');
    const custom = injected(pod(), {
      ...TEST_CONFIG,
      command: ['node', '/app/dist/elector.js'],
      argsPrefix: [],
    }).pod.spec?.initContainers?.[0];
    assert.deepEqual(custom?.command, ['node', '/app/dist/elector.js']);
    assert.match(custom?.args?.[0] ?? '', /^--election=/);
  });
});

describe("the elector's NODE_OPTIONS follow its memory limit", () => {
  test('old space is half the limit, at least 32 MiB; no limit, no cap', () => {
    const base = '--max-semi-space-size=1 --jitless --no-deprecation';
    assert.equal(electorNodeOptions('128Mi'), `${base} --max-old-space-size=64`);
    assert.equal(electorNodeOptions('1Gi'), `${base} --max-old-space-size=512`);
    assert.equal(electorNodeOptions('300M'), `${base} --max-old-space-size=143`);
    assert.equal(electorNodeOptions('48Mi'), `${base} --max-old-space-size=32`);
    assert.equal(electorNodeOptions(''), base);
    assert.equal(INJECTED_NODE_OPTIONS, electorNodeOptions('128Mi'));
  });

  test('the injected container gets them from the configured limit', () => {
    const config = { ...TEST_CONFIG, resources: { ...TEST_CONFIG.resources, memoryLimit: '256Mi' } };
    const out = injected(pod(), config);
    const elector = [...(out.pod.spec?.initContainers ?? []), ...(out.pod.spec?.containers ?? [])].find(
      (c) => c.name === 'elector',
    );
    assert.equal(elector?.resources?.limits?.['memory'], '256Mi');
    assert.equal(elector?.env?.find((e) => e.name === 'NODE_OPTIONS')?.value, electorNodeOptions('256Mi'));
  });
});
