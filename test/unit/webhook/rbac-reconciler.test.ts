/**
 * The RBAC reconciler against a strict fake store, a fake pod informer and a fake clock
 * (test/support): which grants it writes and in what order, stale grants removed, a new pod
 * racing a removal, retries with backoff on the clock, the informer's restarts, the gauge
 * kept per event, and nothing left behind after stop. The real API server version is
 * test/integration/webhook/rbac.test.ts.
 */
import type { V1Pod, V1Role, V1RoleBinding } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createLogger } from '../../../common/logger.ts';
import { ApiError } from '../../../common/api-error.ts';
import { ActiveElections, desiredGrants } from '../../../webhook/grants.ts';
import { createMetrics } from '../../../webhook/metrics.ts';
import { RbacReconciler } from '../../../webhook/rbac-reconciler.ts';
import { FakeClock, flush } from '../../support/clock.ts';
import { FakePods, FakeRbacStore } from '../../support/webhook-fakes.ts';

const NS = 'team';
const ROLE = 'lifelease-elector-e1';

function pod(
  name: string,
  over: { sa?: string; election?: string; phase?: string; ns?: string } = {},
): V1Pod {
  return {
    metadata: {
      name,
      namespace: over.ns ?? NS,
      labels: { 'lifelease.dev/election': over.election ?? 'e1' },
    },
    spec: { ...(over.sa ? { serviceAccountName: over.sa } : {}), containers: [] },
    ...(over.phase ? { status: { phase: over.phase } } : {}),
  };
}

const notFound = () => {
  throw new ApiError('not found', 404, 'NotFound');
};

function setup(options: { backoffMs?: number } = {}) {
  const store = new FakeRbacStore();
  const pods = new FakePods();
  const clock = new FakeClock();
  const metrics = createMetrics({ defaultMetrics: false });
  const reconciler = new RbacReconciler({
    store,
    pods,
    clock,
    logger: createLogger({ level: 'silent', stream: process.stdout }),
    metrics,
    resyncMs: 600_000,
    backoffMs: options.backoffMs ?? 100,
    maxBackoffMs: 1000,
  });
  const gauge = async () => (await metrics.rbacElections.get()).values[0]?.value;
  const results = async () =>
    Object.fromEntries(
      (await metrics.rbacReconciles.get()).values.map((v) => [String(v.labels['result']), v.value]),
    ) as Record<string, number>;
  return { store, pods, clock, reconciler, gauge, results };
}

/** Lets the reconciler's worker drain its queue. */
const settle = flush;

describe('RBAC reconciler against strict fakes', () => {
  test('grants the Role, then a RoleBinding to each distinct ServiceAccount of the running pods', async () => {
    const { store, pods, clock, reconciler, gauge } = setup();
    pods.seed(
      pod('a', { sa: 'worker' }),
      pod('b', { sa: 'api' }),
      pod('c', { sa: 'worker' }),
      pod('d'), // no ServiceAccount named: `default`
      pod('done', { sa: 'batch', phase: 'Succeeded' }), // finished: no grant for its account
    );
    store.expect('listRoles', () => []);
    store.expect('applyRole', () => {});
    store.expect('applyRoleBinding', () => {});
    await reconciler.start();
    await settle();
    assert.deepEqual(store.ops, ['listRoles', 'applyRole', 'applyRoleBinding'], 'Role before its binding');
    const role = store.callsOf('applyRole')[0]![0] as V1Role;
    assert.equal(role.metadata?.name, ROLE);
    assert.equal(role.metadata?.namespace, NS);
    const binding = store.callsOf('applyRoleBinding')[0]![0] as V1RoleBinding;
    assert.deepEqual(
      binding.subjects?.map((s) => s.name),
      ['api', 'default', 'worker'],
    );
    assert.equal(await gauge(), 1);
    await reconciler.stop();
    assert.equal(clock.pendingTimers, 0, 'stop cancels the resync');
    store.assertNoSurprises();
  });

  test('stale grants: a Role we own with no running pod left is removed (binding first); 404s are fine', async () => {
    const { store, reconciler, results } = setup();
    const owned = (election: string, ns = NS): V1Role => ({
      metadata: {
        name: `lifelease-elector-${election}`,
        namespace: ns,
        labels: { 'app.kubernetes.io/managed-by': 'lifelease', 'lifelease.dev/election': election },
      },
    });
    store.expect('listRoles', (namespace, selector) => {
      assert.equal(namespace, undefined, 'all namespaces');
      assert.equal(selector, 'app.kubernetes.io/managed-by=lifelease');
      return [owned('gone'), owned('half', 'other')];
    });
    store.expect('deleteRoleBinding', (ns, name) =>
      assert.deepEqual([ns, name], [NS, 'lifelease-elector-gone']),
    );
    store.expect('deleteRole', (ns, name) => assert.deepEqual([ns, name], [NS, 'lifelease-elector-gone']));
    // A half-removed grant (binding already gone) finishes; a fully gone one is 'unchanged'.
    store.expect('deleteRoleBinding', notFound);
    store.expect('deleteRole', () => {});
    await reconciler.start();
    await settle();
    assert.deepEqual(store.ops, [
      'listRoles',
      'deleteRoleBinding',
      'deleteRole',
      'deleteRoleBinding',
      'deleteRole',
    ]);
    assert.deepEqual(await results(), { deleted: 2 });

    store.expect('deleteRoleBinding', notFound).expect('deleteRole', notFound);
    reconciler.enqueue(`${NS}/gone`);
    await settle();
    assert.deepEqual(await results(), { deleted: 2, unchanged: 1 });
    await reconciler.stop();
    store.assertNoSurprises();
  });

  test('the last pod finishing or going removes the grant; the gauge follows each event', async () => {
    const { store, pods, reconciler, gauge } = setup();
    store.expect('listRoles', () => []);
    await reconciler.start();
    await settle();
    assert.equal(await gauge(), 0);

    store.expect('applyRole', () => {}).expect('applyRoleBinding', () => {});
    pods.add(pod('a', { sa: 'worker' }));
    assert.equal(await gauge(), 1, 'counted at the event, before any API call');
    await settle();
    store.expect('applyRole', () => {}).expect('applyRoleBinding', () => {});
    pods.add(pod('x', { election: 'e2' }));
    assert.equal(await gauge(), 2);
    await settle();

    store.expect('deleteRoleBinding', () => {}).expect('deleteRole', () => {});
    pods.update(pod('a', { sa: 'worker', phase: 'Failed' }));
    assert.equal(await gauge(), 1);
    await settle();
    store.expect('deleteRoleBinding', () => {}).expect('deleteRole', () => {});
    pods.remove(pod('x', { election: 'e2' }));
    assert.equal(await gauge(), 0);
    await settle();
    assert.deepEqual(
      store.callsOf('deleteRole').map((a) => a[1]),
      [ROLE, 'lifelease-elector-e2'],
    );
    await reconciler.stop();
    store.assertNoSurprises();
  });

  test('a pod that arrives while its grant is being removed gets the grant back', async () => {
    const { store, pods, reconciler } = setup();
    store.expect('listRoles', () => []);
    await reconciler.start();
    store.expect('applyRole', () => {}).expect('applyRoleBinding', () => {});
    pods.add(pod('a'));
    await settle();
    // The pod goes; while the binding is being deleted a new pod of the election appears.
    store.expect('deleteRoleBinding', () => pods.add(pod('b', { sa: 'late' })));
    store.expect('deleteRole', () => {});
    store.expect('applyRole', () => {}).expect('applyRoleBinding', () => {});
    pods.remove(pod('a'));
    await settle();
    assert.deepEqual(store.ops.slice(-4), [
      'deleteRoleBinding',
      'deleteRole',
      'applyRole',
      'applyRoleBinding',
    ]);
    const binding = store.callsOf('applyRoleBinding').at(-1)![0] as V1RoleBinding;
    assert.deepEqual(
      binding.subjects?.map((s) => s.name),
      ['late'],
      'the late pod ends up granted',
    );
    await reconciler.stop();
    store.assertNoSurprises();
  });

  test('a failed reconcile is retried with doubling delays on the clock; stop cancels the retry', async () => {
    const { store, pods, clock, reconciler, results } = setup({ backoffMs: 100 });
    pods.seed(pod('a'));
    store.expect('listRoles', () => []);
    const unavailable = () => {
      throw new ApiError('etcdserver: request timed out', 500);
    };
    store.expect('applyRole', unavailable).expect('applyRole', unavailable);
    await reconciler.start();
    await settle();
    assert.deepEqual(clock.pendingDelays, [100, 600_000], 'retry in 100 ms (and the resync)');
    await clock.advance(100);
    assert.deepEqual(clock.pendingDelays, [200, 599_900], 'then 200 ms');
    store.expect('applyRole', () => {}).expect('applyRoleBinding', () => {});
    await clock.advance(200);
    assert.deepEqual(await results(), { error: 2, applied: 1 });
    assert.deepEqual(clock.pendingDelays, [599_700], 'no retry left after success');

    // A failure right before stop: its retry timer does not outlive the reconciler.
    store.expect('applyRole', unavailable);
    reconciler.enqueue(`${NS}/e1`);
    await settle();
    assert.equal(clock.pendingTimers, 2);
    await reconciler.stop();
    assert.equal(clock.pendingTimers, 0);
    store.assertNoSurprises();
  });

  test('a failed pod watch restarts after a backoff, then resyncs', async () => {
    const { store, pods, clock, reconciler } = setup({ backoffMs: 100 });
    store.expect('listRoles', () => []);
    await reconciler.start();
    assert.equal(reconciler.synced, true);
    pods.error(new Error('watch closed: ECONNRESET'));
    assert.equal(reconciler.synced, false);
    assert.deepEqual(clock.pendingDelays, [200, 600_000], 'restart after 2 × backoff');
    store.expect('listRoles', () => []);
    await clock.advance(200);
    assert.equal(pods.started, 2);
    assert.equal(reconciler.synced, true);
    assert.equal(store.callsOf('listRoles').length, 2, 'resynced after the restart');
    await reconciler.stop();
    assert.equal(clock.pendingTimers, 0);
    store.assertNoSurprises();
  });

  test('the gauge is kept per event: a reconcile lists only its own namespace', async () => {
    const { store, pods, reconciler } = setup();
    const lists: (string | undefined)[] = [];
    const list = pods.list.bind(pods);
    pods.list = (ns?: string) => (lists.push(ns), list(ns));
    store.expect('listRoles', () => []);
    await reconciler.start();
    lists.length = 0;
    store.allow('applyRole', () => {}).allow('applyRoleBinding', () => {});
    for (let i = 0; i < 20; i++) pods.add(pod(`p${i}`, { election: `e${i % 4}`, ns: `ns${i % 3}` }));
    await settle();
    assert.ok(lists.length > 0);
    assert.ok(
      lists.every((ns) => ns !== undefined),
      'no reconcile walks every pod of the cluster',
    );
    await reconciler.stop();
    store.assertNoSurprises();
  });
});

describe('ActiveElections', () => {
  test('counts what desiredGrants counts, under any order of events', () => {
    const active = new ActiveElections();
    const all = new Map<string, V1Pod>();
    const events: [string, V1Pod | undefined][] = [
      ['a', pod('a')],
      ['b', pod('b', { election: 'e2' })],
      ['c', pod('c', { ns: 'other' })],
      ['a', pod('a', { phase: 'Running' })],
      ['b', pod('b', { election: 'e2', phase: 'Succeeded' })],
      ['d', pod('d', { election: 'e2' })],
      ['c', undefined],
      ['a', pod('a', { election: 'e3' })], // relabelled: moves to e3
      ['d', undefined],
      ['b', undefined],
    ];
    for (const [name, p] of events) {
      const before = all.get(name);
      if (p) {
        all.set(name, p);
        active.update(p);
      } else {
        all.delete(name);
        active.remove(before!);
      }
      assert.equal(active.size, desiredGrants([...all.values()]).size, `after ${name}`);
    }
    active.reset([pod('x'), pod('y'), pod('z', { election: 'e9' })]);
    assert.equal(active.size, 2);
  });
});
