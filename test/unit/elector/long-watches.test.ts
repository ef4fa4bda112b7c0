/**
 * Long watches (the default from a 45 s fencing bound): two watches on the Lease, each 5-10
 * minutes, confirmed by the API server's bookmarks about once a minute and opened half a
 * minute apart; a silence past a bookmark period is a stall; a lane behind the view changes
 * and confirms nothing; a partition still fences the elector at its bound.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import {
  ApiError,
  BOOKMARK_PERIOD_MS,
  compareResourceVersions,
  longWatchSeconds,
  timingFor,
} from '../../../elector/election.ts';
import { LONG_TIMING, ME, naisLease, ourLease, pod, startElection } from './fakes.ts';

const OTHER = { name: 'app-1', uid: 'uid-other' };
const mine = ourLease({ name: ME.podName, uid: ME.podUid }, { uid: 'lease-mine', rv: '11' });
const theirs = ourLease(OTHER, { uid: 'lease-theirs', rv: '20' });
const HALF = BOOKMARK_PERIOD_MS / 2;
const SILENCE = BOOKMARK_PERIOD_MS + LONG_TIMING.watchGraceMs;

let current: ReturnType<typeof startElection> | undefined;
function start(options: Parameters<typeof startElection>[0] = {}) {
  current = startElection({ timing: LONG_TIMING, ...options });
  return current;
}
afterEach(async () => {
  const e = current;
  current = undefined;
  if (!e) return;
  await e.stop();
  e.store.assertNoSurprises();
});

/** A leader with both lanes open: lane a at t0, lane b at t0 + 30 s. */
async function leading(options: Parameters<typeof startElection>[0] = {}) {
  const e = start(options);
  e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
  await e.clock.advance(0);
  const a = e.store.watch0.open();
  const t0 = e.clock.now();
  await e.clock.advance(HALF - 1);
  assert.equal(e.store.watches.length, 1, 'the second lane waits half a bookmark period');
  await e.clock.advance(1);
  assert.equal(e.store.watches.length, 2);
  const b = e.store.watch0.open();
  return { e, a, b, t0 };
}

describe('timing', () => {
  test('on from a 45 s fencing bound (the default 60 s included), off below it or when asked', () => {
    const t = (fencingTimeoutMs: number, longWatches?: boolean) =>
      timingFor({
        fencingTimeoutMs,
        ownerCheckIntervalMs: 1,
        campaignJitterMs: 0,
        ...(longWatches === undefined ? {} : { longWatches }),
      }).longWatches;
    assert.deepEqual(
      [t(60_000), t(45_000), t(44_999), t(6_000), t(60_000, false)],
      [true, true, false, false, false],
    );
  });

  test('a long watch lasts 5 to 10 minutes plus 2 s (its last bookmark falls on its minute)', () => {
    assert.equal(
      longWatchSeconds(() => 0),
      302,
    );
    assert.equal(
      longWatchSeconds(() => 0.5),
      482,
    );
    assert.equal(
      longWatchSeconds(() => 0.999999),
      602,
    );
  });

  test('resourceVersions compare as etcd revisions, or not at all', () => {
    assert.equal(compareResourceVersions('99', '100'), -1);
    assert.equal(compareResourceVersions('100', '99'), 1);
    assert.equal(compareResourceVersions('100', '100'), 0);
    assert.equal(compareResourceVersions('abc', '100'), undefined);
    assert.equal(compareResourceVersions('', '100'), undefined);
    assert.equal(compareResourceVersions('0100', '100'), undefined);
  });
});

describe('two lanes', () => {
  test('one list; the second lane starts from the view, half a bookmark period later; long timeouts', async () => {
    const { e, a, b } = await leading();
    assert.equal(e.store.callsOf('list').length, 1);
    assert.deepEqual(e.store.callsOf('watch'), ['30', '30']);
    for (const w of [a, b]) {
      assert.ok(w.timeoutSeconds >= 302 && w.timeoutSeconds <= 602, `timeout ${w.timeoutSeconds}`);
      assert.equal(w.timeoutSeconds % 60, 2);
    }
    assert.equal(e.verdict.state, 'leader');
  });

  test('bookmarks alone keep a leader leading: the view is never older than half a period', async () => {
    const { e, a, b } = await leading();
    const verdicts = e.verdicts.length;
    let rv = 31;
    // Eight minutes: lane a bookmarks at t0 + 60 s, 120 s, ...; lane b 30 s later each time.
    for (let i = 0; i < 15; i++) {
      await e.clock.advance(HALF);
      (i % 2 === 0 ? a : b).event({ type: 'BOOKMARK', resourceVersion: String(rv++) });
      assert.ok(e.election.confirmationAgeMs()! <= 1, 'confirmed by the bookmark');
      assert.equal(e.verdict.state, 'leader');
    }
    assert.equal(e.verdicts.length, verdicts, 'no verdict changed');
    assert.equal(e.store.watches.length, 2, 'no watch restarted');
    assert.equal(e.store.callsOf('list').length, 1);
    assert.deepEqual(e.notesOf('watch-restart'), []);
  });

  test('a lane the server ends reopens from its resourceVersion, half a period after the other lane', async () => {
    // Lane a's watch lasts 302 s, lane b's 602 s; later ones 482 s.
    const draws = [0, 0.999];
    const { e, a, b } = await leading({ random: () => draws.shift() ?? 0.5 });
    assert.deepEqual([a.timeoutSeconds, b.timeoutSeconds], [302, 602]);
    let rv = 31;
    for (let i = 0; i < 9; i++) {
      await e.clock.advance(HALF);
      (i % 2 === 0 ? a : b).event({ type: 'BOOKMARK', resourceVersion: String(rv++) });
    }
    // Lane a's last bookmark came at t0 + 300 s (2 s before its timeout), lane b's at
    // t0 + 270 s. The server ends lane a at t0 + 302 s.
    const lastOfA = String(rv - 1);
    await e.clock.advance(2000);
    a.end();
    await e.clock.advance(0);
    assert.equal(e.store.watches.length, 2, 'lane a waits for its slot');
    // Its slot: lane b's phase + 30 s = t0 + 270 s + 90 s, 58 s from now.
    await e.clock.advance(HALF - 2000); // lane b's bookmark at t0 + 330 s
    b.event({ type: 'BOOKMARK', resourceVersion: String(rv++) });
    await e.clock.advance(HALF - 1);
    assert.equal(e.store.watches.length, 2);
    await e.clock.advance(1);
    assert.equal(e.store.watches.length, 3);
    assert.equal(e.store.watch0.resourceVersion, lastOfA);
    e.store.watch0.open();
    assert.equal(e.store.callsOf('list').length, 1);
    assert.equal(e.verdict.state, 'leader');
    assert.deepEqual(
      e.notesOf('watch-restart').map((n) => n.reason),
      ['closed'],
    );
  });

  test('a lane silent past a bookmark period plus grace is abandoned and reopened at once', async () => {
    const { e, a, b } = await leading();
    // Lane a opened at t0 and has gone silent (a half-open connection): abandoned at t0 + 65 s.
    await e.clock.advance(SILENCE - HALF - 1);
    assert.ok(!a.aborted);
    await e.clock.advance(1);
    assert.ok(a.aborted, 'the silent lane was abandoned');
    assert.ok(!b.aborted);
    assert.equal(e.store.watches.length, 3);
    assert.equal(e.store.watch0.resourceVersion, '30');
    assert.deepEqual(
      e.notesOf('watch-restart').map((n) => n.reason),
      ['stalled'],
    );
    assert.equal(e.verdict.state, 'leader');
  });

  test('a lane behind the view changes nothing and confirms nothing', async () => {
    const e = start();
    const lock = { ...naisLease(OTHER), owners: [] }; // followed by name, nothing to look up
    e.store.expect('list', () => ({ lease: { ...lock, resourceVersion: '30' }, resourceVersion: '30' }));
    await e.clock.advance(0);
    const a = e.store.watch0.open();
    await e.clock.advance(HALF);
    const b = e.store.watch0.open();
    assert.equal(e.verdict.name, OTHER.name);
    // Lane a: the lock now names app-2.
    a.event({ type: 'MODIFIED', lease: { ...lock, holderIdentity: 'app-2', resourceVersion: '50' } });
    await e.clock.advance(0);
    assert.equal(e.verdict.name, 'app-2');
    // Lane b, behind (another API server's cache): an older version, and a bookmark before 50.
    b.event({ type: 'MODIFIED', lease: { ...lock, holderIdentity: 'app-1', resourceVersion: '40' } });
    await e.clock.advance(10_000);
    b.event({ type: 'BOOKMARK', resourceVersion: '45' });
    await e.clock.advance(0);
    assert.equal(e.verdict.name, 'app-2', 'the older version is not news');
    assert.equal(e.election.confirmationAgeMs(), 10_000, 'a bookmark behind the view confirms nothing');
    // Lane b catches up: the same version again is not news either; its bookmark at 55 confirms.
    b.event({ type: 'MODIFIED', lease: { ...lock, holderIdentity: 'app-2', resourceVersion: '50' } });
    b.event({ type: 'BOOKMARK', resourceVersion: '55' });
    await e.clock.advance(0);
    assert.equal(e.election.confirmationAgeMs(), 0);
    assert.equal(e.verdict.name, 'app-2');
  });

  test('a partition (both lanes silent, nothing answers) fences the leader at its bound, as with short watches', async () => {
    const { e, a, b } = await leading();
    a.event({ type: 'BOOKMARK', resourceVersion: '31' });
    const confirmedAt = e.clock.now();
    // From now on nothing answers: the open watches stay silent, lists fail.
    e.store.allow('list', () => {
      throw new ApiError('connection refused', 0);
    });
    await e.clock.advance(LONG_TIMING.fencingTimeoutMs);
    assert.equal(e.verdict.state, 'leader', 'within the bound');
    assert.equal(e.clock.now() - confirmedAt, LONG_TIMING.fencingTimeoutMs);
    await e.clock.advance(1);
    assert.equal(e.verdict.state, 'unknown');
    assert.equal(e.verdict.reason, 'unconfirmed');
    // Both silent lanes are abandoned; once unconfirmed, nothing is resumed: lane 0 lists
    // afresh (refused here) and lane 1 waits for a confirmed view.
    await e.clock.advance(SILENCE);
    assert.ok(a.aborted && b.aborted, 'both silent lanes were abandoned');
    assert.ok(e.store.callsOf('list').length >= 2);
    assert.equal(e.store.watches.length, 2, 'no watch resumed from the unconfirmed view');
    assert.equal(e.verdict.state, 'unknown');
  });
});

describe("the leader's Pod watch", () => {
  test('lasts 5-10 minutes and is abandoned once silent past a bookmark period plus grace', async () => {
    const e = start({ random: () => 0 });
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid, { resourceVersion: '25' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    await e.clock.advance(0);
    const p = e.store.podWatch.open();
    assert.equal(p.timeoutSeconds, 302);
    // Lane b opens 30 s later; both lanes and the Pod watch bookmark.
    await e.clock.advance(HALF);
    const b = e.store.watch0.open();
    const a = e.store.watches[0]!;
    await e.clock.advance(HALF);
    a.event({ type: 'BOOKMARK', resourceVersion: '31' });
    p.event({ type: 'BOOKMARK', resourceVersion: '32' });
    await e.clock.advance(HALF);
    b.event({ type: 'BOOKMARK', resourceVersion: '33' });
    await e.clock.advance(HALF);
    a.event({ type: 'BOOKMARK', resourceVersion: '34' });
    assert.ok(!p.aborted, 'bookmarked 60 s ago: still trusted');
    assert.equal(e.store.callsOf('getPod').length, 1, 'no owner GET while the Pod watch runs');
    // Now the Pod watch goes silent: abandoned at its last bookmark + 65 s, reopened from it.
    await e.clock.advance(SILENCE - BOOKMARK_PERIOD_MS - 1);
    assert.ok(!p.aborted);
    await e.clock.advance(1);
    assert.ok(p.aborted, 'the silent Pod watch was abandoned');
    assert.equal(e.store.podWatches.length, 2);
    assert.equal(e.store.podWatch.resourceVersion, '32');
    assert.deepEqual(e.store.callsOf('watchPod'), [`${OTHER.name}@25`, `${OTHER.name}@32`]);
  });
});
