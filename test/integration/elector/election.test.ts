/**
 * The elector against a real control plane: several elector processes as pods, each with
 * a service account bound to exactly the Role of common/rbac.ts. Every test works in its own
 * namespace of the run-wide cluster.
 */
import {
  AuthorizationV1Api,
  CoordinationV1Api,
  CoreV1Api,
  KubeConfig,
  RbacAuthorizationV1Api,
  V1MicroTime,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  LEASE_ANNOTATION_LEADER_HOSTNAME,
  LEASE_ANNOTATION_LEADER_POD,
  LEASE_ANNOTATION_LEADER_UID,
  LEASE_ANNOTATION_TAKEOVER_AT,
  LEASE_LABEL_ELECTION,
  LEASE_LABEL_MANAGED_BY,
} from '../../../common/constants.ts';
import { electorRules } from '../../../common/rbac.ts';
import { deletePod, forceDeletePod, setPodPhase } from '@lifelease/harness/elector-process';
import { reportPodStopped } from '@lifelease/harness/pod-status';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { stretched } from '@lifelease/harness/wait';
import {
  ELECTION,
  TestElection,
  allAgree,
  eventually,
  naisLease,
  overlaps,
  ownerUid,
  partitionableApi,
  recordClaims,
} from './helpers.ts';

let cluster: TestCluster;
let current: TestElection[] = [];
before(async () => {
  cluster = await sharedCluster();
});
after(async () => {
  await cluster.release();
});
afterEach(async () => {
  await Promise.all(current.map((e) => e.close()));
  current = [];
});
async function election(prefix: string): Promise<TestElection> {
  const e = await TestElection.create(cluster, prefix);
  current.push(e);
  return e;
}

describe('winning', () => {
  test('simple win: leader on both loopbacks, Lease owned by the pod, ready, metrics', async (t) => {
    const e = await election('el-win');
    const pod = await e.pod('app-0');
    const elector = await e.start(pod, { hostname: 'host-app-0' });
    const r = await elector.waitFor((x) => x.is_leader, 30_000, 'leadership');
    const readyMs = performance.now() - elector.spawnedAt;
    t.diagnostic(`start-to-leader: ${readyMs.toFixed(0)} ms (process spawn to GET / is_leader)`);
    assert.equal(r.name, 'host-app-0');
    assert.equal(r.state, 'leader');
    assert.equal(r.leader_pod, 'app-0');
    assert.match(r.last_update, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
    for (const url of elector.apiUrls) assert.deepEqual((await elector.get(url)).body, r, url);
    assert.equal(await elector.readyz(), 200);
    assert.equal(await elector.metric('elector_is_leader'), 1);

    const lease = await e.lease();
    assert.ok(lease);
    assert.deepEqual(
      lease.metadata?.ownerReferences?.map((o) => ({ ...o })),
      [{ apiVersion: 'v1', kind: 'Pod', name: 'app-0', uid: pod.uid }],
    );
    assert.equal(lease.spec?.holderIdentity, 'host-app-0');
    assert.equal(lease.spec?.leaseDurationSeconds, undefined);
    assert.equal(lease.spec?.renewTime, undefined);
    assert.ok(lease.spec?.acquireTime);
    assert.equal(lease.metadata?.labels?.[LEASE_LABEL_MANAGED_BY], 'lifelease');
    assert.equal(lease.metadata?.labels?.[LEASE_LABEL_ELECTION], ELECTION);
    assert.equal(lease.metadata?.annotations?.[LEASE_ANNOTATION_LEADER_HOSTNAME], 'host-app-0');
    assert.equal(lease.metadata?.annotations?.[LEASE_ANNOTATION_LEADER_POD], 'app-0');
    assert.equal(lease.metadata?.annotations?.[LEASE_ANNOTATION_LEADER_UID], pod.uid);

    // Every log line carries election, namespace, pod and leader.
    const line = elector.logLines().find((l) => l.msg === 'this pod is the leader');
    assert.ok(line);
    assert.equal(line['election'], ELECTION);
    assert.equal(line['namespace'], e.namespace);
    assert.equal(line['pod'], 'app-0');
    assert.equal(line['leader'], 'host-app-0');
  });

  test('10 candidates racing: exactly one Lease, one leader, all agree', async (t) => {
    const e = await election('el-race');
    const pods = await Promise.all(Array.from({ length: 10 }, (_, i) => e.pod(`app-${i}`)));
    const t0 = performance.now();
    const electors = await Promise.all(pods.map((p) => e.start(p)));
    const name = await allAgree(electors, 60_000);
    t.diagnostic(`10 electors spawned to all agreeing: ${(performance.now() - t0).toFixed(0)} ms`);
    const leases = await e.leases();
    assert.equal(leases.length, 1);
    const winner = electors.find((x) => x.hostname === name);
    assert.ok(winner);
    assert.equal(ownerUid(leases[0]), winner.pod.uid);
    let won = 0;
    for (const x of electors) won += (await x.metric('elector_campaigns_total{result="won"}')) ?? 0;
    assert.equal(won, 1, 'exactly one campaign won');
  });

  test('elector restarted in the leader pod: SIGTERM exits 0 fast, the Lease stays, still leader after', async (t) => {
    const e = await election('el-restart');
    const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
    const ea = await e.start(a);
    await ea.waitFor((r) => r.is_leader, 30_000, 'a leads');
    const eb = await e.start(b);
    await eb.waitFor((r) => r.name === 'app-a', 30_000, 'b follows a');
    const leaseBefore = await e.lease();

    const exit = await ea.stop('SIGTERM');
    t.diagnostic(`SIGTERM to exit: ${exit.ms.toFixed(0)} ms`);
    assert.equal(exit.code, 0);
    assert.ok(exit.ms < 2000, `exit took ${exit.ms} ms`);
    assert.ok(ea.logLines().some((l) => l.msg === 'shutting down (the lease stays)'));
    const leaseAfter = await e.lease();
    assert.equal(leaseAfter?.metadata?.uid, leaseBefore?.metadata?.uid, 'the Lease was not deleted');
    assert.equal((await eb.get()).body.name, 'app-a', 'the follower still names a');

    const ea2 = await e.start(a);
    await ea2.waitFor((r) => r.is_leader, 30_000, 'a leads again');
    assert.equal((await e.lease())?.metadata?.uid, leaseBefore?.metadata?.uid, 'same Lease: no new campaign');
    assert.equal(await ea2.metric('elector_campaigns_total{result="won"}'), 0);
  });
});

describe('failover', () => {
  test('leader pod deleted: a new leader once the garbage collector removes the Lease', async (t) => {
    const e = await election('el-failover');
    const pods = await Promise.all(['app-0', 'app-1', 'app-2'].map((n) => e.pod(n)));
    const electors = [];
    for (const p of pods) electors.push(await e.start(p));
    const first = await allAgree(electors);
    const old = electors.find((x) => x.hostname === first)!;
    const rest = electors.filter((x) => x !== old);

    const t0 = performance.now();
    await deletePod(e.kc, old.pod);
    // The old elector stays up (its pod's containers would be killed; here we check it
    // never claims again): its pod is gone, so it must not campaign.
    let second = '';
    await eventually('every remaining candidate to answer one new leader', async () => {
      const answers = await Promise.all(rest.map((x) => x.get()));
      const names = new Set(answers.map((a) => a.body.name));
      second = answers[0]!.body.name;
      return names.size === 1 && second !== '' && second !== first && answers.some((a) => a.body.is_leader);
    });
    const failoverMs = performance.now() - t0;
    t.diagnostic(
      `failover (leader pod deletion to every candidate answering the new leader): ${failoverMs.toFixed(0)} ms`,
    );
    const oldView = await old.get();
    assert.equal(oldView.body.is_leader, false, 'the deleted pod claims nothing');
    const lease = await e.lease();
    assert.equal(ownerUid(lease), rest.find((x) => x.hostname === second)!.pod.uid);
    // The kubelet's last status said the old elector stopped: no fenced takeover.
    assert.equal(lease?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT], undefined);
    assert.ok(failoverMs < 10_000, `failover took ${failoverMs.toFixed(0)} ms`);
  });

  test('a leader cut off from the API server and force-deleted: the takeover waits until it has fenced itself, never two claims', async (t) => {
    const e = await election('el-forced');
    const fencing = ['--fencing-timeout=4s'];
    const [a, b, c] = await Promise.all(['app-a', 'app-b', 'app-c'].map((n) => e.pod(n)));
    const relay = await partitionableApi(e.kubeconfigPath);
    try {
      const ea = await e.start(a!, { args: fencing, kubeconfigPath: relay.kubeconfig });
      await ea.waitFor((x) => x.is_leader, 30_000, 'a leads');
      const others = [await e.start(b!, { args: fencing }), await e.start(c!, { args: fencing })];
      await allAgree([ea, ...others]);
      const recorder = recordClaims([ea, ...others]);

      // The node of a is cut off, and its pod is force-deleted (the runbook step for a pod
      // stuck on an unreachable node): the object goes while its status says running.
      const cutAt = performance.now();
      relay.cut();
      await forceDeletePod(e.kc, a!);
      const deletedAt = performance.now();
      let leader = '';
      await eventually(
        'a new leader among the others',
        async () => {
          const answers = await Promise.all(others.map((x) => x.get()));
          const l = answers.find((r) => r.body.is_leader);
          leader = l?.body.name ?? '';
          return l !== undefined && answers.every((r) => r.body.name === leader);
        },
        60_000,
      );
      const ledAt = performance.now();
      // Keep watching a while: a must stay fenced, the new leader alone.
      await sleep(1000);
      const samples = await recorder.stop();
      assert.deepEqual(overlaps(samples), [], 'two pods claimed at once');
      const aLastClaim = Math.max(
        ...samples.filter((x) => x.who === ea.hostname && x.claims).map((x) => x.at),
      );
      const newFirstClaim = Math.min(...samples.filter((x) => x.who === leader && x.claims).map((x) => x.at));
      t.diagnostic(
        `cut -> a stopped claiming: ${(aLastClaim - cutAt).toFixed(0)} ms (bound 4000); force delete -> new leader claims: ${(newFirstClaim - deletedAt).toFixed(0)} ms; no-leader gap ${(newFirstClaim - aLastClaim).toFixed(0)} ms`,
      );
      assert.ok(aLastClaim < newFirstClaim);
      assert.ok(ea.running, 'the cut-off elector kept running throughout');
      const lease = await e.lease();
      assert.ok(lease?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT], 'a fenced takeover');
      assert.ok(ledAt - deletedAt >= 4000, 'not before the fencing bound');
    } finally {
      await relay.close();
    }
  });

  test('a leader paused (SIGSTOP) past its bound with a Lease event waiting in its socket claims nothing when it wakes', async (t) => {
    // The event reaches the paused process's socket, then its node is cut off and its pod
    // force-deleted; another pod leads after the fenced wait. Counted as fresh when read, the
    // event would have the old leader claim for a fencing bound beside the new one. On Linux,
    // SIGCONT (like thawing a cgroup freezer) makes the event loop's epoll_wait fail with EINTR,
    // so its overdue timers run before the socket is read and fence it first: this passes with
    // or without the beat (LOOP_BEAT_MS), which covers the pauses that hand over the data first
    // (a starved CPU, a paused VM; unit test "a leader paused past its bound is fenced when it
    // wakes"). Fencing 6 s: the Lease watch lasts 2 s, so the event comes within it.
    const e = await election('el-paused');
    const fencing = ['--fencing-timeout=6s'];
    const [a, b, c] = await Promise.all(['app-a', 'app-b', 'app-c'].map((n) => e.pod(n)));
    const relay = await partitionableApi(e.kubeconfigPath);
    const leases = e.kc.makeApiClient(CoordinationV1Api);
    try {
      const ea = await e.start(a!, { args: fencing, kubeconfigPath: relay.kubeconfig });
      await ea.waitFor((x) => x.is_leader, 30_000, 'a leads');
      const others = [await e.start(b!, { args: fencing }), await e.start(c!, { args: fencing })];
      await allAgree([ea, ...others]);

      // Pause a, then change its Lease (an annotation: the Lease still names a). If a's watch
      // had just ended, the event does not reach it: let it run, lead again, and try anew.
      let delivered = false;
      for (let attempt = 1; attempt <= 5 && !delivered; attempt++) {
        process.kill(ea.pid!, 'SIGSTOP');
        const before = relay.bytesToElector();
        const lease = (await e.lease())!;
        lease.metadata!.annotations = {
          ...lease.metadata!.annotations,
          'test.lifelease.dev/poke': String(attempt),
        };
        await leases.replaceNamespacedLease({ name: e.election, namespace: e.namespace, body: lease });
        // An event is hundreds of bytes; a watch's end is a few dozen.
        const deadline = performance.now() + stretched(1000);
        while (performance.now() < deadline && relay.bytesToElector() - before < 300) await sleep(10);
        delivered = relay.bytesToElector() - before >= 300;
        if (!delivered) {
          process.kill(ea.pid!, 'SIGCONT');
          await ea.waitFor((x) => x.is_leader, 30_000, 'a leads again');
        }
        t.diagnostic(`attempt ${attempt}: the event ${delivered ? 'reached' : 'did not reach'} a's socket`);
      }
      assert.ok(delivered, "no attempt delivered a Lease event into the paused leader's socket");

      relay.cut();
      await forceDeletePod(e.kc, a!);
      let leader = '';
      await eventually(
        'a new leader among the others',
        async () => {
          const answers = await Promise.all(others.map((x) => x.get()));
          leader = answers.find((r) => r.body.is_leader)?.body.name ?? '';
          return leader !== '' && answers.every((r) => r.body.name === leader);
        },
        60_000,
      );

      // a wakes, still cut off, its pod gone: every answer it gives must claim nothing.
      const recorder = recordClaims([ea, ...others], 20);
      process.kill(ea.pid!, 'SIGCONT');
      await eventually('a answers after waking', async () => (await ea.get()).status === 200, 30_000);
      await sleep(3000);
      const samples = await recorder.stop();
      const aAnswers = samples.filter((x) => x.who === ea.hostname);
      t.diagnostic(`a answered ${aAnswers.length} times in the 3 s after waking`);
      assert.ok(aAnswers.length > 20, `a answered only ${aAnswers.length} times`);
      assert.deepEqual(
        aAnswers.filter((x) => x.claims).map((x) => x.at),
        [],
        'the woken leader claimed',
      );
      assert.deepEqual(overlaps(samples), [], 'two pods claimed at once');
    } finally {
      await relay.close();
    }
  });

  for (const phase of ['Succeeded', 'Failed'] as const) {
    test(`owner pod ${phase}: its Lease is reclaimed`, async () => {
      const e = await election(`el-${phase.toLowerCase()}`);
      const [a, b] = await Promise.all([e.pod('job-a'), e.pod('job-b')]);
      const ea = await e.start(a);
      await ea.waitFor((r) => r.is_leader, 30_000, 'a leads');
      const oldLease = await e.lease();
      // The kubelet stops the containers before it reports a final phase.
      await ea.kill();
      let eb;
      if (phase === 'Succeeded') {
        // A completed CronJob run: the next run starts and must not be blocked.
        await setPodPhase(e.kc, a, phase);
        eb = await e.start(b);
      } else {
        // An evicted leader while a follower runs: found by the periodic owner check.
        eb = await e.start(b, { args: ['--owner-check-interval=1s'] });
        await eb.waitFor((r) => r.name === 'job-a', 30_000, 'b follows a');
        await setPodPhase(e.kc, a, phase);
      }
      await eb.waitFor((r) => r.is_leader, 30_000, 'b leads');
      const lease = await e.lease();
      assert.notEqual(lease?.metadata?.uid, oldLease?.metadata?.uid);
      assert.equal(ownerUid(lease), b.uid);
      const reclaim = eb.logLines().find((l) => l.msg === 'lease reclaimed');
      assert.ok(reclaim, 'b reclaimed the Lease');
      assert.equal(reclaim['reason'], 'owner-finished');
    });
  }

  test('a Lease orphaned by --cascade=orphan is reclaimed once its pod is gone, at once when the end was seen', async () => {
    const e = await election('el-orphan');
    const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
    const ea = await e.start(a);
    await ea.waitFor((r) => r.is_leader, 30_000, 'a leads');
    const eb = await e.start(b);
    await eb.waitFor((r) => r.name === 'app-a', 30_000, 'b follows a');
    // A graceful end as a kubelet carries it out: containers stopped and reported, then the
    // object goes; `--cascade=orphan` leaves the Lease without its owner.
    const t0 = performance.now();
    await ea.kill();
    await reportPodStopped(e.kc.makeApiClient(CoreV1Api), a);
    await e.kc
      .makeApiClient(CoreV1Api)
      .deleteNamespacedPod({ name: 'app-a', namespace: e.namespace, propagationPolicy: 'Orphan' });
    await eb.waitFor((r) => r.is_leader, 10_000, 'b leads');
    const lease = await e.lease();
    assert.equal(ownerUid(lease), b.uid);
    assert.equal(lease?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT], undefined, 'no fence');
    // At once: not after the 30 s owner-check interval nor the 60 s fencing bound (the bound
    // stretched by the machine's load, as every wait of the tests is).
    assert.ok(performance.now() - t0 < stretched(10_000), 'reclaimed at once');
    // Seen finished (the kubelet's report) or gone: either way reclaimed by b.
    assert.ok(
      ['owner-finished', 'owner-missing'].includes(
        String(eb.logLines().find((l) => l.msg === 'lease reclaimed')?.['reason']),
      ),
    );
  });

  test('an orphaned Lease met by a candidate that did not see its pod end: reclaimed, the takeover fenced', async () => {
    const e = await election('el-orphan-late');
    const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
    const ea = await e.start(a, { args: ['--fencing-timeout=3s'] });
    await ea.waitFor((r) => r.is_leader, 30_000, 'a leads');
    await ea.kill();
    await e.kc
      .makeApiClient(CoreV1Api)
      .deleteNamespacedPod({ name: 'app-a', namespace: e.namespace, propagationPolicy: 'Orphan' });
    await eventually('the orphaned Lease to lose its ownerReference', async () => {
      const l = await e.lease();
      return l !== undefined && (l.metadata?.ownerReferences ?? []).length === 0;
    });
    const t0 = performance.now();
    const eb = await e.start(b, { args: ['--fencing-timeout=3s'] });
    await eb.waitFor((r) => r.is_leader, 30_000, 'b leads');
    assert.ok(performance.now() - t0 >= 3000, 'not before the fencing bound');
    assert.ok((await e.lease())?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT], 'fenced');
    assert.equal(eb.logLines().find((l) => l.msg === 'lease reclaimed')?.['reason'], 'owner-missing');
  });
});

describe('other writers of the Lease', () => {
  test("a NAIS elector's Lease is followed by hostname; the owner's uid decides", async () => {
    const e = await election('el-nais');
    const [nais, ours] = await Promise.all([e.pod('nais-0'), e.pod('ours-0')]);
    await e.createLease(naisLease(nais, 'nais-0'));
    const eo = await e.start(ours);
    const r = await eo.waitFor(
      (x) => x.state === 'follower' && x.name !== '',
      30_000,
      'follower of the NAIS leader',
    );
    assert.equal(r.name, 'nais-0');
    assert.equal(r.is_leader, false);
    assert.equal(await eo.readyz(), 200);
    // Our Lease is what a NAIS elector understands: holderIdentity is the leader's hostname.
    await deletePod(e.kc, nais);
    await eo.waitFor((x) => x.is_leader, 30_000, 'ours leads after the NAIS pod is gone');
    assert.equal((await e.lease())?.spec?.holderIdentity, 'ours-0');
  });

  test('a lock made by hand (a holderIdentity, no owner, none of our metadata) is followed, never deleted', async () => {
    const e = await election('el-hand');
    const pod = await e.pod('app-0');
    const lock = await e.createLease({
      metadata: { name: ELECTION },
      spec: { holderIdentity: 'pinned-by-hand', acquireTime: new V1MicroTime(Date.now()) },
    });
    // A 3 s fencing bound renews the watch every second, and the owner check would run every
    // second: several rounds in which the lock could have been judged and deleted.
    const el = await e.start(pod, { args: ['--fencing-timeout=3s', '--owner-check-interval=1s'] });
    const r = await el.waitFor((x) => x.state === 'follower' && x.name !== '', 30_000, 'following the lock');
    assert.equal(r.name, 'pinned-by-hand');
    assert.equal(r.is_leader, false);
    assert.equal(await el.readyz(), 200);
    await eventually(
      'five watch rounds',
      async () => ((await el.metric('elector_api_requests_total{operation="watch"}')) ?? 0) >= 5,
    );
    assert.equal(await el.metric('elector_api_requests_total{operation="delete"}'), 0);
    assert.equal(await el.metric('elector_api_requests_total{operation="get-pod"}'), 0);
    assert.equal((await e.lease())?.metadata?.resourceVersion, lock.metadata?.resourceVersion, 'untouched');
    assert.equal((await el.get()).body.name, 'pinned-by-hand');
    // Its maker removes it: an ordinary election follows.
    await e.deleteLease();
    await el.waitFor((x) => x.is_leader, 30_000, 'leads once the lock is gone');
  });

  test('a foreign client-go Lease of the same name: unknown, clear log, no write; recovers when it goes', async () => {
    const e = await election('el-foreign');
    const pod = await e.pod('app-0');
    const foreign = await e.createLease({
      metadata: { name: ELECTION },
      spec: {
        holderIdentity: 'some-controller-7f9',
        leaseDurationSeconds: 15,
        acquireTime: new V1MicroTime(Date.now()),
        renewTime: new V1MicroTime(Date.now()),
        leaseTransitions: 3,
      },
    });
    const el = await e.start(pod);
    await eventually('the foreign lease to be logged', () =>
      el.logLines().some((l) => l.level === 'error' && /not an election lease/.test(String(l.msg))),
    );
    await sleep(1000);
    const { status, body } = await el.get();
    assert.equal(status, 503);
    assert.deepEqual(body, { name: '', last_update: '', is_leader: false, state: 'unknown', leader_pod: '' });
    assert.equal(await el.readyz(), 503);
    assert.ok(el.running);
    assert.equal(
      (await e.lease())?.metadata?.resourceVersion,
      foreign.metadata?.resourceVersion,
      'untouched',
    );
    await e.deleteLease();
    await el.waitFor((x) => x.is_leader, 30_000, 'leads once the foreign Lease is gone');
  });
});

describe('RBAC', () => {
  test('the elector needs nothing beyond common/rbac.ts, and that Role grants nothing more', async () => {
    const e = await election('el-rbac');
    const pod = await e.pod('app-0');
    const el = await e.start(pod);
    await el.waitFor((x) => x.is_leader, 30_000, 'leadership with the Role alone');
    const role = await e.kc.makeApiClient(RbacAuthorizationV1Api).readNamespacedRole({
      name: `lifelease-elector-${ELECTION}`,
      namespace: e.namespace,
    });
    assert.deepEqual(
      JSON.parse(JSON.stringify(role.rules)),
      JSON.parse(JSON.stringify(electorRules(ELECTION))),
    );

    // As the elector's service account: what it may and may not do.
    const sa = new KubeConfig();
    sa.loadFromFile(e.kubeconfigPath);
    const review = sa.makeApiClient(AuthorizationV1Api);
    const can = async (verb: string, resource: string, name?: string, group = 'coordination.k8s.io') => {
      const r = await review.createSelfSubjectAccessReview({
        body: {
          spec: {
            resourceAttributes: { namespace: e.namespace, verb, group, resource, ...(name ? { name } : {}) },
          },
        },
      });
      return r.status?.allowed === true;
    };
    assert.equal(await can('create', 'leases'), true);
    for (const verb of ['get', 'list', 'watch', 'delete'])
      assert.equal(await can(verb, 'leases', ELECTION), true, verb);
    assert.equal(await can('get', 'pods', 'x', ''), true);
    for (const verb of ['update', 'patch']) assert.equal(await can(verb, 'leases', ELECTION), false, verb);
    assert.equal(await can('get', 'leases', 'another-election'), false);
    assert.equal(await can('list', 'leases'), false, 'list of all leases');
    assert.equal(await can('list', 'pods', undefined, ''), false);
    // Watching the leader's one Pod (its last status before deletion): granted on purpose.
    assert.equal(await can('watch', 'pods', 'x', ''), true);
    assert.equal(await can('get', 'secrets', 'x', ''), false);
  });

  test('without the Role: no crash, unknown, a log line that says what to fix', async () => {
    const e = await election('el-norbac');
    const core = e.kc.makeApiClient(CoreV1Api);
    await core.createNamespacedServiceAccount({
      namespace: e.namespace,
      body: { metadata: { name: 'bare' } },
    });
    const kubeconfigPath = await cluster.serviceAccountKubeconfig(e.namespace, 'bare');
    const pod = await e.pod('app-0');
    const el = await e.start(pod, { kubeconfigPath });
    await eventually('the refusal to be logged', () =>
      el.logLines().some((l) => l.level === 'error' && l['code'] === 403 && /rbac/.test(String(l.msg))),
    );
    assert.equal((await el.get()).status, 503);
    assert.equal(await el.readyz(), 503);
    const health = await fetch(`${el.probeUrl}/healthz`);
    assert.equal(health.status, 200);
    assert.ok(el.running);
    assert.equal(await e.lease(), undefined);
  });
});

describe('SSE on shutdown', () => {
  test('SIGTERM ends open SSE streams and exits 0', async () => {
    const e = await election('el-sse-stop');
    const pod = await e.pod('app-0');
    const el = await e.start(pod);
    await el.waitFor((x) => x.is_leader, 30_000, 'leadership');
    const res = await fetch(`${el.apiUrl}/sse`);
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    const chunk = (await reader.read()).value as Uint8Array | undefined;
    const first = new TextDecoder().decode(chunk);
    assert.match(first, /^data: \{.*"is_leader":true.*\}\nid: \d+\nretry: \d+\n\n$/);
    const ended = (async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) return true;
      }
    })();
    const exit = await el.stop('SIGTERM');
    assert.equal(exit.code, 0);
    assert.equal(await ended, true);
  });
});
