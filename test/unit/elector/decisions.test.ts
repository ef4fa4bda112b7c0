/**
 * The election's pure decisions, table by table: what a Lease means, whether its owner may
 * still run, whether the own pod may campaign, what to do next, and what to report.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  backoffMs,
  campaignBlocker,
  classifyLease,
  decideAction,
  decideVerdict,
  judgeOwner,
  leaseDraft,
  timingFor,
  type LeaseRecord,
  type Memory,
  type View,
} from '../../../elector/election.ts';
import { ME, TIMING, naisLease, ourLease, pod } from './fakes.ts';

const OTHER = { name: 'app-1', uid: 'uid-other' };
const NOW = 5_000_000;
const fresh = (lease: LeaseRecord | null, generation = 1): View => ({
  listed: true,
  lease,
  generation,
  confirmedAt: NOW - 1000,
});
const noMemory: Memory = { campaign: undefined, owner: undefined };

describe('classifyLease', () => {
  const cases: { name: string; lease: LeaseRecord; expect: ReturnType<typeof classifyLease> }[] = [
    {
      name: 'our Lease',
      lease: ourLease({ name: 'app-1', uid: 'u1', hostname: 'host-1' }),
      expect: { kind: 'pod', name: 'host-1', podName: 'app-1', podUid: 'u1', format: 'lifelease' },
    },
    {
      name: "NAIS's Lease",
      lease: naisLease({ name: 'app-2', uid: 'u2' }),
      expect: { kind: 'pod', name: 'app-2', podName: 'app-2', podUid: 'u2', format: 'nais' },
    },
    {
      name: 'pod-owned Lease without holderIdentity (NAIS panics on it): named after the pod',
      lease: { ...naisLease({ name: 'app-3', uid: 'u3' }), holderIdentity: undefined },
      expect: { kind: 'pod', name: 'app-3', podName: 'app-3', podUid: 'u3', format: 'nais' },
    },
    {
      name: 'our Lease orphaned (--cascade=orphan): judged by the annotated pod and uid',
      lease: { ...ourLease({ name: 'app-1', uid: 'u1', hostname: 'host-1' }), owners: [] },
      expect: { kind: 'orphan', name: 'host-1', podName: 'app-1', podUid: 'u1' },
    },
    {
      name: 'a holderIdentity alone (a lock made by hand, or a NAIS Lease orphaned by hand): held, by name',
      lease: { ...naisLease({ name: 'app-2', uid: 'u2' }), owners: [] },
      expect: { kind: 'held', name: 'app-2' },
    },
  ];
  for (const c of cases) {
    test(c.name, () => assert.deepEqual(classifyLease(c.lease), c.expect));
  }

  const foreign: { name: string; lease: LeaseRecord }[] = [
    {
      name: 'client-go lock (leaseDurationSeconds)',
      lease: { ...naisLease(OTHER), leaseDurationSeconds: 15 },
    },
    { name: 'renewed (renewTime)', lease: { ...naisLease(OTHER), renewTime: '2024-01-01T00:00:00.000000Z' } },
    {
      name: 'owned by a Deployment',
      lease: {
        ...naisLease(OTHER),
        owners: [{ apiVersion: 'apps/v1', kind: 'Deployment', name: 'd', uid: 'x' }],
      },
    },
    {
      name: 'owned by two pods',
      lease: {
        ...naisLease(OTHER),
        owners: [
          { apiVersion: 'v1', kind: 'Pod', name: 'a', uid: '1' },
          { apiVersion: 'v1', kind: 'Pod', name: 'b', uid: '2' },
        ],
      },
    },
    { name: 'no owner and no holder', lease: { ...naisLease(OTHER), owners: [], holderIdentity: undefined } },
  ];
  for (const c of foreign) {
    test(`foreign: ${c.name}`, () => assert.equal(classifyLease(c.lease).kind, 'foreign'));
  }
});

test('leaseDraft: owner by uid, hostname as holderIdentity, labels and annotations for followers', () => {
  const d = leaseDraft(ME, 1234);
  assert.deepEqual(d.owner, { apiVersion: 'v1', kind: 'Pod', name: ME.podName, uid: ME.podUid });
  assert.equal(d.holderIdentity, ME.hostname);
  assert.equal(d.acquireTimeMs, 1234);
  assert.deepEqual(d.labels, {
    'app.kubernetes.io/managed-by': 'lifelease',
    'lifelease.dev/election': ME.election,
  });
  assert.deepEqual(d.annotations, {
    'lifelease.dev/leader-hostname': ME.hostname,
    'lifelease.dev/leader-pod': ME.podName,
    'lifelease.dev/leader-uid': ME.podUid,
  });
  // What we write is read back as our own Lease, naming us.
  const asRead: LeaseRecord = {
    name: d.name,
    uid: 'l',
    resourceVersion: '1',
    holderIdentity: d.holderIdentity,
    leaseDurationSeconds: undefined,
    renewTime: undefined,
    owners: [d.owner],
    labels: d.labels,
    annotations: d.annotations,
  };
  assert.deepEqual(classifyLease(asRead), {
    kind: 'pod',
    name: ME.hostname,
    podName: ME.podName,
    podUid: ME.podUid,
    format: 'lifelease',
  });
});

describe('judgeOwner', () => {
  const holder = { podName: 'app-1', podUid: 'u1' };
  const cases = [
    { name: 'running', pod: pod('app-1', 'u1'), reclaim: false },
    { name: 'pending', pod: pod('app-1', 'u1', { phase: 'Pending' }), reclaim: false },
    { name: 'phase unknown (node lost)', pod: pod('app-1', 'u1', { phase: 'Unknown' }), reclaim: false },
    { name: 'no phase yet', pod: pod('app-1', 'u1', { phase: undefined }), reclaim: false },
    { name: 'terminating (may still run)', pod: pod('app-1', 'u1', { terminating: true }), reclaim: false },
    { name: 'gone', pod: null, reclaim: true, reason: 'owner-missing' },
    {
      name: 'Succeeded',
      pod: pod('app-1', 'u1', { phase: 'Succeeded' }),
      reclaim: true,
      reason: 'owner-finished',
    },
    {
      name: 'Failed (evicted)',
      pod: pod('app-1', 'u1', { phase: 'Failed' }),
      reclaim: true,
      reason: 'owner-finished',
    },
    { name: 'name reused by another pod', pod: pod('app-1', 'u9'), reclaim: true, reason: 'owner-replaced' },
  ] as const;
  for (const c of cases) {
    test(c.name, () => {
      const j = judgeOwner(holder, c.pod);
      assert.equal(j.reclaim, c.reclaim);
      if (j.reclaim && 'reason' in c) assert.equal(j.reason, c.reason);
    });
  }
  test('uid unknown (orphaned NAIS Lease): a running pod of that name is the owner', () => {
    assert.deepEqual(judgeOwner({ podName: 'app-1', podUid: undefined }, pod('app-1', 'u5')), {
      reclaim: false,
      ownerUid: 'u5',
      reason: 'owner-alive',
    });
  });
});

describe('campaignBlocker', () => {
  const cases = [
    { name: 'running', self: pod(ME.podName, ME.podUid), blocked: false },
    { name: 'pending', self: pod(ME.podName, ME.podUid, { phase: 'Pending' }), blocked: false },
    { name: 'terminating', self: pod(ME.podName, ME.podUid, { terminating: true }), blocked: true },
    { name: 'Failed', self: pod(ME.podName, ME.podUid, { phase: 'Failed' }), blocked: true },
    { name: 'Succeeded', self: pod(ME.podName, ME.podUid, { phase: 'Succeeded' }), blocked: true },
    { name: 'missing', self: null, blocked: true },
    { name: 'another pod by our name', self: pod(ME.podName, 'uid-x'), blocked: true },
  ];
  for (const c of cases) {
    test(c.name, () => assert.equal(campaignBlocker(ME, c.self) !== undefined, c.blocked));
  }
});

describe('decideAction', () => {
  const mine = ourLease({ name: ME.podName, uid: ME.podUid });
  const theirs = ourLease(OTHER);
  const cases: { name: string; view: View; memory?: Memory; expect: string; until?: number }[] = [
    {
      name: 'never listed: wait',
      view: { ...fresh(null), listed: false, confirmedAt: undefined },
      expect: 'wait',
    },
    {
      name: 'stale view: wait, whatever it shows',
      view: { ...fresh(null), confirmedAt: NOW - TIMING.fencingTimeoutMs - 1 },
      expect: 'wait',
    },
    { name: 'no Lease, nothing remembered: campaign', view: fresh(null), expect: 'campaign' },
    {
      name: 'no Lease, jitter pending: wait until it passes',
      view: fresh(null, 3),
      memory: { ...noMemory, campaign: { generation: 3, notBefore: NOW + 50, done: false, failures: 0 } },
      expect: 'wait',
      until: NOW + 50,
    },
    {
      name: 'no Lease, jitter passed: campaign',
      view: fresh(null, 3),
      memory: { ...noMemory, campaign: { generation: 3, notBefore: NOW, done: false, failures: 0 } },
      expect: 'campaign',
    },
    {
      name: 'no Lease, already campaigned for this view: wait for the watch',
      view: fresh(null, 3),
      memory: { ...noMemory, campaign: { generation: 3, notBefore: NOW - 10, done: true, failures: 0 } },
      expect: 'wait',
    },
    {
      name: 'no Lease, a campaign for an older view: campaign',
      view: fresh(null, 4),
      memory: { ...noMemory, campaign: { generation: 3, notBefore: NOW - 10, done: true, failures: 0 } },
      expect: 'campaign',
    },
    { name: 'own Lease: nothing to do', view: fresh(mine), expect: 'wait' },
    {
      name: 'foreign Lease: nothing to do',
      view: fresh({ ...theirs, leaseDurationSeconds: 10 }),
      expect: 'wait',
    },
    {
      name: 'a lock made by hand: nothing to do, ever (no pod check, no reclaim)',
      view: fresh({ ...theirs, owners: [], labels: {}, annotations: {} }),
      expect: 'wait',
    },
    { name: "another's Lease, never checked: check its owner", view: fresh(theirs), expect: 'check-owner' },
    {
      name: "another's Lease, checked recently: wait for the interval",
      view: fresh(theirs),
      memory: {
        ...noMemory,
        owner: { leaseUid: theirs.uid, nextCheckAt: NOW + 100, failures: 0, resolvedUid: OTHER.uid },
      },
      expect: 'wait',
      until: NOW + 100,
    },
    {
      name: "another's Lease, interval passed: check again",
      view: fresh(theirs),
      memory: {
        ...noMemory,
        owner: { leaseUid: theirs.uid, nextCheckAt: NOW, failures: 0, resolvedUid: OTHER.uid },
      },
      expect: 'check-owner',
    },
    {
      name: 'a new Lease (different uid): check at once',
      view: fresh(theirs),
      memory: {
        ...noMemory,
        owner: { leaseUid: 'older', nextCheckAt: NOW + 100_000, failures: 0, resolvedUid: undefined },
      },
      expect: 'check-owner',
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const a = decideAction(c.view, c.memory ?? noMemory, ME, TIMING, NOW);
      assert.equal(a.type, c.expect);
      if (c.until !== undefined) assert.equal(a.type === 'wait' ? a.until : undefined, c.until);
    });
  }
});

describe('decideVerdict', () => {
  const mine = ourLease({ name: ME.podName, uid: ME.podUid });
  const theirs = ourLease({ ...OTHER, hostname: 'host-1' });
  const cases: { name: string; view: View; memory?: Memory; expect: [string, string, string] }[] = [
    {
      name: 'before the first list',
      view: { ...fresh(null), listed: false, confirmedAt: undefined },
      expect: ['unknown', '', 'starting'],
    },
    { name: 'own Lease', view: fresh(mine), expect: ['leader', ME.hostname, 'leader'] },
    {
      name: "another's Lease: its hostname",
      view: fresh(theirs),
      expect: ['follower', 'host-1', 'follower'],
    },
    { name: 'no Lease', view: fresh(null), expect: ['follower', '', 'no-lease'] },
    {
      name: 'own Lease, view older than the bound: fenced',
      view: { ...fresh(mine), confirmedAt: NOW - TIMING.fencingTimeoutMs - 1 },
      expect: ['unknown', '', 'unconfirmed'],
    },
    {
      name: 'own Lease, view exactly at the bound: still leader',
      view: { ...fresh(mine), confirmedAt: NOW - TIMING.fencingTimeoutMs },
      expect: ['leader', ME.hostname, 'leader'],
    },
    {
      name: 'foreign Lease',
      view: fresh({ ...theirs, renewTime: 'x' }),
      expect: ['unknown', '', 'foreign-lease'],
    },
    {
      name: 'a predecessor with our hostname leads: claim nothing',
      view: fresh(ourLease({ name: ME.podName, uid: 'uid-old', hostname: ME.hostname })),
      expect: ['unknown', '', 'name-collision'],
    },
    {
      name: 'a lock made by hand: followed by name, no pod check needed',
      view: fresh({ ...naisLease(OTHER), owners: [] }),
      expect: ['follower', OTHER.name, 'held-lock'],
    },
    {
      name: 'a lock made by hand naming our hostname: leader',
      view: fresh({ ...naisLease({ name: ME.hostname, uid: 'x' }), owners: [] }),
      expect: ['leader', ME.hostname, 'held-lock'],
    },
    {
      name: 'our orphaned Lease, owner not yet checked (uid annotation removed)',
      view: fresh({ ...ourLease(OTHER), owners: [], annotations: {} }),
      expect: ['unknown', '', 'owner-pending'],
    },
    {
      name: 'our orphaned Lease naming us by uid: leader',
      view: fresh({ ...mine, owners: [] }),
      expect: ['leader', ME.hostname, 'leader'],
    },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const v = decideVerdict(c.view, c.memory ?? noMemory, ME, TIMING, NOW);
      assert.deepEqual([v.state, v.name, v.reason], c.expect);
    });
  }
});

describe('timing', () => {
  test('a watch lasts a third of the fencing bound, so two more attempts fit before fencing', () => {
    assert.equal(
      timingFor({ fencingTimeoutMs: 60_000, ownerCheckIntervalMs: 1, campaignJitterMs: 0 })
        .watchTimeoutSeconds,
      20,
    );
    assert.equal(
      timingFor({ fencingTimeoutMs: 3_000, ownerCheckIntervalMs: 1, campaignJitterMs: 0 })
        .watchTimeoutSeconds,
      1,
    );
    const t = timingFor({ fencingTimeoutMs: 6_000, ownerCheckIntervalMs: 1, campaignJitterMs: 0 });
    assert.ok(t.watchTimeoutSeconds * 1000 + t.watchGraceMs < t.fencingTimeoutMs);
  });
  test('backoff grows, is capped, and is jittered within 50-100% of the step', () => {
    const lo = () => 0;
    const hi = () => 0.999999;
    assert.equal(backoffMs(0, TIMING, lo), TIMING.backoffInitialMs / 2);
    assert.equal(backoffMs(1, TIMING, hi), TIMING.backoffInitialMs * 2);
    assert.equal(backoffMs(50, TIMING, hi), TIMING.backoffMaxMs);
    assert.ok(backoffMs(50, TIMING, lo) >= TIMING.backoffMaxMs / 2);
  });
});
