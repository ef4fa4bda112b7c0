/**
 * The election driver on a fake clock and a fake store that fails on unexpected calls:
 * each test scripts the API's answers and checks the calls made and the verdicts reached.
 */
import assert from 'node:assert/strict';
import { afterEach, describe, test } from 'node:test';
import {
  ApiError,
  FENCED_CAMPAIGN_DELAY_MS,
  LOOP_BEAT_MS,
  TAKEOVER_MARGIN_MS,
  takeoverAt,
  type LeaseDraft,
  type LeaseRecord,
} from '../../../elector/election.ts';
import { LEASE_ANNOTATION_TAKEOVER_AT } from '../../../common/constants.ts';
import { ME, SELF, TIMING, naisLease, ourLease, pod, startElection } from './fakes.ts';
import { FakeClock } from '../../support/clock.ts';
import { MAX_TIMER_MS } from '../../../common/clock.ts';
import { LeaderBoard } from '../../../elector/leader.ts';

/** Timers fire 5 s after their moment (a starved or CPU-throttled process). */
class LateTimersClock extends FakeClock {
  override setTimer(ms: number, fn: () => void): { cancel(): void } {
    return super.setTimer(Math.min(ms + 5000, MAX_TIMER_MS), fn);
  }
}

/**
 * Timers fire 1 ms before their moment (as Node's can, started from a stale loop time), and,
 * while `moving`, every read of the clock finds it 1 ms later than the last.
 */
class EarlyTimersClock extends FakeClock {
  moving = false;
  #drift = 0;
  override now(): number {
    const t = super.now() + this.#drift;
    if (this.moving) this.#drift += 1;
    return t;
  }
  override setTimer(ms: number, fn: () => void): { cancel(): void } {
    return super.setTimer(Math.max(0, ms - 1), fn);
  }
}

/**
 * `pause(ms)`: time passes and no timer runs (the process starved of CPU, or its VM paused).
 * Timers due meanwhile fire on the next `advance`, after what the test delivers first: the
 * event loop handles the I/O it was woken for before it looks at its timers. (After SIGCONT
 * Linux fails the loop's epoll_wait with EINTR and the timers run first; the integration test
 * covers that.)
 */
class PausableClock extends FakeClock {
  #paused = 0;
  override now(): number {
    return super.now() + this.#paused;
  }
  pause(ms: number): void {
    this.#paused += ms;
  }
}

const OTHER = { name: 'app-1', uid: 'uid-other' };
const mine = ourLease({ name: ME.podName, uid: ME.podUid }, { uid: 'lease-mine', rv: '11' });
const theirs = ourLease(OTHER, { uid: 'lease-theirs', rv: '20' });

let current: ReturnType<typeof startElection> | undefined;
function start(...args: Parameters<typeof startElection>) {
  current = startElection(...args);
  return current;
}
afterEach(async () => {
  const e = current;
  current = undefined;
  if (!e) return;
  await e.stop();
  e.store.assertNoSurprises();
});

/**
 * An elector leading on `clock` (its Lease listed, the watch open), its verdicts published to
 * a board that decides every answer when it is read, as main.ts wires it.
 */
async function leaderWithBoard<C extends FakeClock>(clock: C) {
  const board = new LeaderBoard();
  const e = start({ clock, onVerdict: (v) => board.publish(v, clock.now()) });
  board.decideOnRead(() => e.election.refresh());
  e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
  await e.clock.advance(0);
  e.store.watch0.open();
  await e.clock.advance(0);
  assert.equal(board.snapshot().result.is_leader, true);
  return { e, board };
}

describe('start-up', () => {
  test('no Lease: campaigns at once with the own pod as owner, leads once the watch shows it', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: null, resourceVersion: '10' }));
    e.store.expect('getPod', (name) => (name === ME.podName ? SELF : null));
    e.store.expect('create', () => mine);
    await e.clock.advance(0);

    assert.deepEqual(e.store.callsOf('watch'), ['10']);
    const [draft] = e.store.callsOf('create') as LeaseDraft[];
    assert.ok(draft);
    assert.deepEqual(draft.owner, { apiVersion: 'v1', kind: 'Pod', name: ME.podName, uid: ME.podUid });
    assert.equal(draft.holderIdentity, ME.hostname);
    assert.equal(draft.name, ME.election);
    assert.equal(draft.namespace, ME.namespace);
    // Won, but the verdict waits for the watch: the view has one source of truth.
    assert.equal(e.verdict.state, 'follower');
    assert.equal(e.verdict.reason, 'no-lease');

    e.store.watch0.open().event({ type: 'ADDED', lease: mine });
    await e.clock.advance(0);
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, pod: e.verdict.pod },
      { state: 'leader', name: ME.hostname, pod: ME.podName },
    );
    assert.deepEqual(
      e.notesOf('campaign').map((n) => n.result),
      ['won'],
    );
  });

  test('409 on create: lost, and the watch names the winner', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: null, resourceVersion: '10' }));
    e.store.expect('getPod', () => SELF);
    e.store.expect('create', () => {
      throw new ApiError('exists', 409, 'AlreadyExists');
    });
    e.store.allow('getPod', (name) => (name === OTHER.name ? pod(OTHER.name, OTHER.uid) : null));
    await e.clock.advance(0);
    e.store.watch0.open().event({ type: 'ADDED', lease: theirs });
    await e.clock.advance(0);
    assert.deepEqual(
      e.notesOf('campaign').map((n) => n.result),
      ['lost'],
    );
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name },
      { state: 'follower', name: OTHER.name },
    );
    // No second campaign while the Lease exists.
    await e.clock.advance(5000);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('own Lease already there (elector restarted in the leader pod): leader without any write', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
    assert.equal(e.store.callsOf('create').length, 0);
    assert.equal(e.store.callsOf('getPod').length, 0);
  });

  test('list fails: retries with backoff, serving unknown meanwhile', async () => {
    const e = start();
    e.store.expect('list', () => {
      throw new ApiError('boom', 503);
    });
    e.store.expect('list', () => {
      throw new ApiError('slow down', 429);
    });
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('list').length, 1);
    assert.equal(e.verdict.state, 'unknown');
    await e.clock.advance(TIMING.backoffInitialMs);
    assert.equal(e.store.callsOf('list').length, 2);
    await e.clock.advance(TIMING.backoffInitialMs * 2);
    assert.equal(e.store.callsOf('list').length, 3);
    assert.equal(e.verdict.state, 'leader');
    assert.deepEqual(
      e.notesOf('api-error').map((n) => n.error.code),
      [503, 429],
    );
  });
});

describe('watch', () => {
  test('a watch that ends resumes from the last resourceVersion seen, without listing again', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    const w1 = e.store.watch0;
    assert.equal(w1.resourceVersion, '30');
    assert.equal(w1.timeoutSeconds, TIMING.watchTimeoutSeconds);
    w1.open().event({ type: 'BOOKMARK', resourceVersion: '35' });
    await e.clock.advance(2000);
    w1.end();
    await e.clock.advance(0);
    assert.deepEqual(e.store.callsOf('watch'), ['30', '35']);
    e.store.watch0.open().event({ type: 'MODIFIED', lease: { ...mine, resourceVersion: '40' } });
    await e.clock.advance(2000);
    e.store.watch0.end();
    await e.clock.advance(0);
    assert.deepEqual(e.store.callsOf('watch'), ['30', '35', '40']);
    assert.equal(e.store.callsOf('list').length, 1);
  });

  test('410 Expired (as an ERROR event or a status) means list again', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '90' }));
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '95' }));
    await e.clock.advance(0);
    e.store.watch0
      .open()
      .event({ type: 'ERROR', code: 410, reason: 'Expired', message: 'too old resource version' });
    e.store.watch0.end();
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('list').length, 2);
    assert.equal(e.store.watch0.resourceVersion, '90');
    e.store.watch0.fail(new ApiError('gone', 410, 'Gone'));
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('list').length, 3);
    assert.equal(e.store.watch0.resourceVersion, '95');
    assert.deepEqual(
      e.notesOf('watch-restart').map((n) => n.reason),
      ['expired', 'expired'],
    );
  });

  test('a failing watch backs off and resumes from the same resourceVersion', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.fail(new ApiError('connection refused', 0));
    await e.clock.advance(0);
    assert.equal(e.store.watches.length, 1, 'no immediate retry');
    await e.clock.advance(TIMING.backoffInitialMs);
    assert.equal(e.store.watches.length, 2);
    assert.equal(e.store.watch0.resourceVersion, '30');
    assert.equal(e.store.callsOf('list').length, 1);
  });

  test('a silent watch is abandoned after its timeout plus grace, and resumed', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    const w1 = e.store.watch0.open();
    await e.clock.advance(TIMING.watchTimeoutSeconds * 1000 + TIMING.watchGraceMs - 1);
    assert.ok(!w1.aborted);
    await e.clock.advance(1);
    assert.ok(w1.aborted, 'the stalled watch was aborted');
    assert.equal(e.store.watches.length, 2);
    assert.deepEqual(
      e.notesOf('watch-restart').map((n) => n.reason),
      ['stalled'],
    );
  });

  test('events for another Lease name are ignored', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open().event({ type: 'DELETED', lease: { ...theirs, name: 'other-election' } });
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
  });
});

describe('self-fencing', () => {
  test('unknown once the view is older than the bound; leader again once listed afresh', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
    // The API server goes away: every watch attempt fails.
    e.store.watch0.fail(new ApiError('connection refused', 0));
    const failWatches = () => {
      for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('connection refused', 0));
    };
    for (let t = 0; t < TIMING.fencingTimeoutMs - 1000; t += 500) {
      failWatches();
      await e.clock.advance(500);
    }
    assert.equal(e.verdict.state, 'leader', 'still within the bound');
    for (let t = 0; t < 2000; t += 500) {
      failWatches();
      await e.clock.advance(500);
    }
    assert.equal(e.verdict.state, 'unknown');
    assert.equal(e.verdict.reason, 'unconfirmed');
    assert.equal(e.verdict.name, '');
    // Back: the view is listed afresh (not resumed: see the next test), then watched.
    const watches = e.store.watches.length;
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '31' }));
    await e.clock.advance(TIMING.backoffMaxMs);
    assert.equal(e.verdict.state, 'leader');
    assert.equal(e.store.watches.length, watches + 1);
    assert.equal(e.store.watch0.resourceVersion, '31');
    e.store.watch0.open();
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
  });

  test('a fenced leader whose Lease was replaced meanwhile never claims it again (found by the fault suite)', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
    const failWatches = () => {
      for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('connection refused', 0));
    };
    for (let t = 0; t < TIMING.fencingTimeoutMs + 1000; t += 500) {
      failWatches();
      await e.clock.advance(500);
    }
    assert.equal(e.verdict.state, 'unknown');
    // Meanwhile an admin deleted the Lease and another pod won a new one. The API server is
    // back: the elector must learn that from a fresh list, not confirm its old view when a
    // watch from the old resourceVersion opens (before it replays the DELETED and ADDED).
    const verdictsBefore = e.verdicts.length;
    e.store.allow('list', () => ({ lease: theirs, resourceVersion: '50' }));
    e.store.allow('getPod', (name) => (name === OTHER.name ? pod(OTHER.name, OTHER.uid) : SELF));
    await e.clock.advance(TIMING.backoffMaxMs);
    const w = e.store.watch0;
    if (w.resourceVersion === '30') {
      // A resumed watch would open first and replay the changes after.
      w.open();
      w.event({ type: 'DELETED', lease: { ...mine, resourceVersion: '40' } });
      w.event({ type: 'ADDED', lease: theirs });
    } else {
      w.open();
    }
    await e.clock.advance(0);
    const after = e.verdicts.slice(verdictsBefore);
    assert.ok(after.length > 0);
    assert.deepEqual(
      after.filter((v) => v.state === 'leader'),
      [],
      `claimed a Lease it no longer held: ${JSON.stringify(after)}`,
    );
    assert.equal(e.verdict.state, 'follower');
    assert.equal(e.verdict.pod, OTHER.name);
    e.store.allow('list', undefined);
    e.store.allow('getPod', undefined);
  });

  test('a timer that fires a moment early, with the clock moving as it is read: still fenced on time (found by CI)', async () => {
    // Node starts a timer from the loop's cached time, so it can fire a little before the
    // moment it was set for; and the clock moves between two reads. The fence loop once read
    // the clock twice: the verdict at one reading (a millisecond before the bound: still
    // leader), the next deadline at the other (the bound reached: no deadline left), and
    // then waited for a change that a silent partition never brings, claiming meanwhile
    // (CI, real node, seed 910001: the cut-off leader claimed 2.5 s past its bound).
    const clock = new EarlyTimersClock();
    const e = start({ clock });
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
    const confirmedAt = clock.now();
    // A silent partition from here: watches hang, then are abandoned and retried, silently.
    await e.clock.advance(TIMING.fencingTimeoutMs - 5);
    assert.equal(e.verdict.state, 'leader', 'still within the bound');
    clock.moving = true;
    await e.clock.advance(10);
    clock.moving = false;
    assert.ok(clock.now() - confirmedAt > TIMING.fencingTimeoutMs);
    assert.equal(e.verdict.state, 'unknown', 'fenced once the bound has passed');
    assert.equal(e.verdict.reason, 'unconfirmed');
    for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    e.store.allow('list', () => {
      throw new ApiError('no route to host', 0);
    });
  });

  test('an answer read past the bound is fenced even when the fence timer is late (the board decides on read)', async () => {
    // Timers 5 s late (a starved or throttled process): the verdict published by the fence
    // timer lags, but what an app reads is decided at the moment it reads.
    const clock = new LateTimersClock();
    const { e, board } = await leaderWithBoard(clock);
    const confirmedAt = clock.now();
    await e.clock.advance(TIMING.fencingTimeoutMs + 1);
    assert.ok(clock.now() - confirmedAt > TIMING.fencingTimeoutMs);
    const { result, reason } = board.snapshot();
    assert.deepEqual(
      { is_leader: result.is_leader, name: result.name, state: result.state, reason },
      {
        is_leader: false,
        name: '',
        state: 'unknown',
        reason: 'unconfirmed',
      },
    );
    for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    e.store.allow('list', () => {
      throw new ApiError('no route to host', 0);
    });
  });

  test('a leader paused past its bound is fenced when it wakes, by whatever it reads first', async () => {
    // A bookmark that waited in the socket through the pause is read before any timer runs
    // again. Counted as fresh, it would have the leader claim until the Lease's deletion,
    // queued behind it, was read; meanwhile another pod may lead.
    const clock = new PausableClock();
    const { e, board } = await leaderWithBoard(clock);
    await e.clock.advance(1000);

    clock.pause(TIMING.fencingTimeoutMs + 1000);
    e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: '31' });
    await e.clock.advance(0);
    const { result, reason } = board.snapshot();
    assert.deepEqual(
      { is_leader: result.is_leader, state: result.state, reason },
      {
        is_leader: false,
        state: 'unknown',
        reason: 'unconfirmed',
      },
    );

    // Awake again (the beat has run): a bookmark read now confirms the view as of now.
    await e.clock.advance(LOOP_BEAT_MS);
    e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: '32' });
    await e.clock.advance(0);
    assert.equal(board.snapshot().result.is_leader, true, 'leads again once confirmed after the pause');
    for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    e.store.allow('list', () => ({ lease: mine, resourceVersion: '33' }));
  });

  test('a short pause (up to two beats) does not age what is read after it', async () => {
    const clock = new PausableClock();
    const e = start({ clock });
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    await e.clock.advance(10_000);
    clock.pause(LOOP_BEAT_MS);
    e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: '31' });
    const confirmedAt = clock.now();
    // Still leader 100 ms before the bound counted from the moment of the read.
    await e.clock.advance(TIMING.fencingTimeoutMs - 100);
    assert.equal(clock.now() - confirmedAt, TIMING.fencingTimeoutMs - 100);
    assert.equal(e.verdict.state, 'leader');
    await e.clock.advance(200);
    assert.equal(e.verdict.state, 'unknown', 'and fenced past it');
    for (const w of e.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    e.store.allow('list', () => {
      throw new ApiError('no route to host', 0);
    });
  });

  test('the beat runs while the elector leads or may lead, not while it follows', async () => {
    const beats = (clock: FakeClock) => clock.pendingDelays.filter((d) => d === LOOP_BEAT_MS).length;
    const leader = start();
    leader.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await leader.clock.advance(0);
    leader.store.watch0.open();
    await leader.clock.advance(1000);
    assert.equal(leader.verdict.state, 'leader');
    assert.equal(beats(leader.clock), 1, 'a leader beats');
    for (const w of leader.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    leader.store.allow('list', () => ({ lease: mine, resourceVersion: '31' }));
    current = undefined;
    await leader.stop();

    const follower = start();
    follower.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    follower.store.allow('getPod', () => pod(OTHER.name, OTHER.uid));
    await follower.clock.advance(0);
    follower.store.watch0.open();
    await follower.clock.advance(1000);
    assert.equal(follower.verdict.state, 'follower');
    assert.equal(beats(follower.clock), 0, 'a follower does not');
    // The leader's Lease goes: a campaign may make this elector the leader.
    follower.store.watch0.event({ type: 'DELETED', lease: theirs });
    await follower.clock.advance(0);
    assert.equal(beats(follower.clock), 1, 'a candidate beats once no Lease stands');
    for (const w of follower.store.watches) if (!w.done) w.fail(new ApiError('stopped', 0));
    follower.store.allow('list', () => ({ lease: theirs, resourceVersion: '31' }));
    follower.store.allow('create', () => {
      throw new ApiError('exists', 409, 'AlreadyExists');
    });
  });

  test('an unconfirmed follower neither checks nor reclaims', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    // Once unconfirmed, the elector lists afresh; in a partition that fails too.
    e.store.allow('list', () => {
      throw new ApiError('no route to host', 0);
    });
    e.store.allow('getPod', () => null);
    e.store.allow('deleteLease', () => {
      throw new ApiError('etcd unavailable', 503);
    });
    await e.clock.advance(0);
    // The watch never opens again (a silent partition): no confirmation after the list.
    await e.clock.advance(TIMING.fencingTimeoutMs + 1);
    assert.equal(e.verdict.state, 'unknown');
    const checks = e.store.callsOf('getPod').length;
    const deletes = e.store.callsOf('deleteLease').length;
    await e.clock.advance(TIMING.ownerCheckIntervalMs * 3);
    assert.equal(e.store.callsOf('getPod').length, checks, 'no owner checks while unconfirmed');
    assert.equal(e.store.callsOf('deleteLease').length, deletes, 'no deletes while unconfirmed');
    assert.equal(e.store.callsOf('create').length, 0);
  });
});

describe('re-election', () => {
  test("Lease deleted while its holder's Pod runs: a fenced takeover (its elector may not have seen the deletion)", async () => {
    // Found by the fault suite (fault lease-delete, seed 900002): the holder's Lease watch was
    // reconnecting, and it claimed for 55 ms after another candidate took over at once.
    const e = start({ random: () => 0.5 });
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid));
    await e.clock.advance(0);
    e.store.watch0.open().event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '31' } });
    const goneAt = e.clock.now();
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'follower');
    assert.equal(e.verdict.name, '');
    e.store.expect('getPod', () => SELF);
    // The holder's Pod: it runs, so its elector may still claim until its fencing bound.
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid));
    let created: LeaseRecord | undefined;
    e.store.expect('create', (d) => {
      const at = d.annotations[LEASE_ANNOTATION_TAKEOVER_AT];
      assert.ok(at, 'a fenced takeover');
      assert.ok(Date.parse(at) >= goneAt + TIMING.fencingTimeoutMs + TAKEOVER_MARGIN_MS);
      created = { ...mine, annotations: { ...mine.annotations, ...d.annotations } };
      return created;
    });
    await e.clock.advance(TIMING.campaignJitterMs / 2);
    // The head start for the holder itself, which takes its Lease back unfenced.
    await e.clock.advance(FENCED_CAMPAIGN_DELAY_MS - 1);
    assert.equal(e.store.callsOf('create').length, 0, 'the old holder gets a head start');
    await e.clock.advance(1);
    assert.ok(created);
    e.store.watch0.event({ type: 'ADDED', lease: created });
    await e.clock.advance(0);
    assert.equal(e.verdict.reason, 'takeover-wait');
    const until = takeoverAt(created)!;
    while (e.clock.now() < until - 10_000) {
      await e.clock.advance(10_000);
      e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: '43' });
    }
    await e.clock.advance(until - e.clock.now() - 1);
    assert.ok(!e.verdicts.some((v) => v.state === 'leader'), 'never leader before the takeover moment');
    await e.clock.advance(2);
    assert.equal(e.verdict.state, 'leader');
  });

  test('Lease deleted while its holder runs: the holder takes it back at once, unfenced, and the others follow', async () => {
    const e = start({ random: () => 0.5 });
    e.store.expect('list', () => ({ lease: mine, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
    e.store.watch0.open().event({ type: 'DELETED', lease: { ...mine, resourceVersion: '31' } });
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'follower', 'no claim without a Lease');
    e.store.expect('getPod', () => SELF);
    const again = { ...mine, uid: 'lease-mine-2', resourceVersion: '32' };
    e.store.expect('create', (d) => {
      assert.equal(d.annotations[LEASE_ANNOTATION_TAKEOVER_AT], undefined, 'no fence: its own Lease went');
      return again;
    });
    await e.clock.advance(TIMING.campaignJitterMs / 2);
    assert.equal(e.store.callsOf('create').length, 1, 'after the jitter only, within the head start');
    assert.ok(TIMING.campaignJitterMs / 2 < FENCED_CAMPAIGN_DELAY_MS);
    e.store.watch0.event({ type: 'ADDED', lease: again });
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
  });

  test('create fails with 500: retried with backoff while no Lease exists', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: null, resourceVersion: '10' }));
    e.store.allow('getPod', () => SELF);
    e.store.expect('create', () => {
      throw new ApiError('etcd timeout', 500);
    });
    e.store.expect('create', () => mine);
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
    await e.clock.advance(TIMING.backoffInitialMs);
    assert.equal(e.store.callsOf('create').length, 2);
    assert.deepEqual(
      e.notesOf('campaign').map((n) => n.result),
      ['error', 'won'],
    );
  });

  for (const [label, self] of [
    ['terminating', pod(ME.podName, ME.podUid, { terminating: true })],
    ['Succeeded', pod(ME.podName, ME.podUid, { phase: 'Succeeded' })],
    ['missing', null],
    ['replaced by a pod with the same name', pod(ME.podName, 'uid-newer')],
  ] as const) {
    test(`own pod ${label}: no campaign`, async () => {
      const e = start();
      e.store.expect('list', () => ({ lease: null, resourceVersion: '10' }));
      e.store.expect('getPod', () => self);
      await e.clock.advance(0);
      await e.clock.advance(10_000);
      assert.equal(e.store.callsOf('create').length, 0);
      assert.deepEqual(
        e.notesOf('campaign').map((n) => n.result),
        ['skipped'],
      );
    });
  }
});

describe('reclaim', () => {
  const cases = [
    { label: 'owner pod gone', owner: null, reason: 'owner-missing' },
    {
      label: 'owner pod Succeeded',
      owner: pod(OTHER.name, OTHER.uid, { phase: 'Succeeded' }),
      reason: 'owner-finished',
    },
    {
      label: 'owner pod Failed',
      owner: pod(OTHER.name, OTHER.uid, { phase: 'Failed' }),
      reason: 'owner-finished',
    },
    { label: 'owner name reused by a new pod', owner: pod(OTHER.name, 'uid-new'), reason: 'owner-replaced' },
  ] as const;
  for (const c of cases) {
    test(`${c.label}: deleted with uid and resourceVersion preconditions`, async () => {
      const e = start();
      e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
      e.store.expect('getPod', (name) => {
        assert.equal(name, OTHER.name);
        return c.owner;
      });
      e.store.expect('deleteLease', () => {});
      await e.clock.advance(0);
      assert.deepEqual(e.store.callsOf('deleteLease'), [
        { uid: theirs.uid, resourceVersion: theirs.resourceVersion },
      ]);
      assert.deepEqual(
        e.notesOf('reclaim').map((n) => [n.result, n.reason]),
        [['deleted', c.reason]],
      );
    });
  }

  test('owner alive: no delete; checked again every interval', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    e.store.allow('getPod', () => pod(OTHER.name, OTHER.uid, { terminating: true }));
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('getPod').length, 1);
    // Keep the view confirmed, as a healthy watch would.
    for (let i = 0; i < 6; i++) {
      const w = e.store.watch0.open();
      await e.clock.advance(TIMING.ownerCheckIntervalMs / 2);
      w.end();
      await e.clock.advance(0);
    }
    assert.equal(e.store.callsOf('getPod').length, 4);
    assert.equal(e.store.callsOf('deleteLease').length, 0);
  });

  test('the Lease changed while its owner was checked: not deleted', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    let release!: () => void;
    e.store.expect('getPod', () => new Promise((resolve) => (release = () => resolve(null))));
    await e.clock.advance(0);
    e.store.watch0.open().event({ type: 'MODIFIED', lease: { ...theirs, resourceVersion: '21' } });
    release();
    e.store.expect('getPod', () => null);
    e.store.expect('deleteLease', () => {});
    await e.clock.advance(0);
    // The stale judgement is dropped; the new version is judged and deleted by its own rv.
    assert.deepEqual(e.store.callsOf('deleteLease'), [{ uid: theirs.uid, resourceVersion: '21' }]);
  });

  test('409 on delete (the Lease moved on) is not an error', async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    e.store.expect('getPod', () => null);
    e.store.expect('deleteLease', () => {
      throw new ApiError('precondition failed', 409, 'Conflict');
    });
    await e.clock.advance(0);
    assert.deepEqual(
      e.notesOf('reclaim').map((n) => n.result),
      ['conflict'],
    );
    assert.equal(e.notesOf('api-error').length, 0);
  });
});

describe('mixed and odd Leases', () => {
  test("NAIS's Lease: followed by hostname, leader by owner uid", async () => {
    const e = start();
    e.store.expect('list', () => ({ lease: naisLease(OTHER), resourceVersion: '30' }));
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid));
    await e.clock.advance(0);
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, uid: e.verdict.uid },
      { state: 'follower', name: OTHER.name, uid: OTHER.uid },
    );
  });

  test("NAIS's Lease naming this pod: leader", async () => {
    const e = start();
    e.store.expect('list', () => ({
      lease: naisLease({ name: ME.podName, uid: ME.podUid }),
      resourceVersion: '30',
    }));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
  });

  test('client-go Lease of the same name: unknown, no campaign, no delete', async () => {
    const e = start();
    const foreign = {
      ...theirs,
      owners: [],
      labels: {},
      annotations: {},
      leaseDurationSeconds: 15,
      renewTime: 'x',
    };
    e.store.expect('list', () => ({ lease: foreign, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    await e.clock.advance(TIMING.ownerCheckIntervalMs * 2);
    assert.equal(e.verdict.state, 'unknown');
    assert.equal(e.verdict.reason, 'foreign-lease');
  });

  test("a recreated pod with the leader's name and hostname: unknown until the old Lease is reclaimed", async () => {
    const old = { name: ME.podName, uid: 'uid-predecessor' };
    const e = start();
    e.store.expect('list', () => ({ lease: ourLease(old), resourceVersion: '30' }));
    let release!: () => void;
    e.store.expect('getPod', () => new Promise((resolve) => (release = () => resolve(SELF))));
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'unknown');
    assert.equal(e.verdict.reason, 'name-collision');
    assert.equal(e.verdict.name, '', 'never reports its own hostname for another pod');
    e.store.expect('deleteLease', () => {});
    release();
    await e.clock.advance(0);
    assert.deepEqual(
      e.notesOf('reclaim').map((n) => n.reason),
      ['owner-replaced'],
    );
  });

  test('a lock made by hand (holderIdentity only, no owner, not ours) whose pod does not exist: followed, never deleted', async () => {
    const e = start();
    const lock = { ...naisLease(OTHER), owners: [] };
    e.store.expect('list', () => ({ lease: lock, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    // Hours pass: no pod is looked up (the strict store fails any getPod), nothing deleted.
    for (let i = 0; i < 10; i++) {
      await e.clock.advance(TIMING.ownerCheckIntervalMs);
      e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: `${31 + i}` });
    }
    assert.deepEqual(e.store.callsOf('deleteLease'), []);
    assert.deepEqual(e.store.callsOf('getPod'), []);
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, reason: e.verdict.reason },
      { state: 'follower', name: OTHER.name, reason: 'held-lock' },
    );
  });

  test("a lock made by hand naming this pod's hostname: leader, as a NAIS client would conclude", async () => {
    const e = start();
    const lock = { ...naisLease({ name: ME.hostname, uid: 'whatever' }), owners: [] };
    e.store.expect('list', () => ({ lease: lock, resourceVersion: '30' }));
    await e.clock.advance(0);
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, reason: e.verdict.reason },
      { state: 'leader', name: ME.hostname, reason: 'held-lock' },
    );
  });

  test('a lock made by hand, then removed by its maker: campaign', async () => {
    const e = start();
    const lock = { ...naisLease(OTHER), owners: [] };
    e.store.expect('list', () => ({ lease: lock, resourceVersion: '30' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    e.store.expect('getPod', () => SELF);
    e.store.expect('create', (d) => ourLease({ name: d.owner.name, uid: d.owner.uid }));
    e.store.watch0.event({ type: 'DELETED', lease: lock });
    await e.clock.advance(TIMING.campaignJitterMs);
    assert.equal(e.store.callsOf('create').length, 1);
  });
});

describe("the leader's Pod vanished: take over at once only when its elector is known to have stopped", () => {
  /** A follower of `theirs`, its owner checked, watching the leader's Pod. */
  async function following() {
    const e = start({ random: () => 0 });
    e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid, { resourceVersion: '25' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    await e.clock.advance(0);
    // The Pod watch starts from the owner check's GET: no GET of its own.
    assert.deepEqual(e.store.callsOf('watchPod'), [`${OTHER.name}@25`]);
    e.store.podWatch.open();
    return e;
  }
  const takeoverAnnotation = (d: LeaseDraft) => d.annotations[LEASE_ANNOTATION_TAKEOVER_AT];

  test('graceful deletion (the kubelet reported the elector terminated, then removed the object): at once', async () => {
    const e = await following();
    const ending = pod(OTHER.name, OTHER.uid, { terminating: true, resourceVersion: '40' });
    e.store.podWatch.event({ type: 'MODIFIED', pod: ending });
    e.store.podWatch.event({
      type: 'DELETED',
      pod: { ...ending, elector: 'terminated', phase: 'Failed', resourceVersion: '41' },
    });
    e.store.expect('getPod', () => SELF);
    e.store.expect('create', (d) => {
      assert.equal(takeoverAnnotation(d), undefined, 'no fence');
      return mine;
    });
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
    e.store.watch0.event({ type: 'ADDED', lease: mine });
    await e.clock.advance(0);
    assert.equal(e.verdict.state, 'leader');
  });

  test('older kubelets: terminating and the elector container terminated (phase still Running) also counts', async () => {
    const e = await following();
    e.store.podWatch.event({
      type: 'DELETED',
      pod: pod(OTHER.name, OTHER.uid, { terminating: true, elector: 'terminated', resourceVersion: '41' }),
    });
    e.store.expect('getPod', () => SELF);
    e.store.expect('create', (d) => (assert.equal(takeoverAnnotation(d), undefined), mine));
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('forced deletion (the object went while its status said running): the Lease is won at once, leadership starts after the fencing bound', async () => {
    const e = await following();
    e.store.podWatch.event({ type: 'DELETED', pod: pod(OTHER.name, OTHER.uid, { resourceVersion: '41' }) });
    const goneAt = e.clock.now();
    let created: LeaseRecord | undefined;
    e.store.expect('getPod', () => SELF);
    e.store.expect('getPod', () => null); // the old leader's Pod: gone
    e.store.expect('create', (d) => {
      const at = takeoverAnnotation(d);
      assert.ok(at, 'a fenced takeover');
      assert.ok(Date.parse(at) >= goneAt + TIMING.fencingTimeoutMs + TAKEOVER_MARGIN_MS);
      created = { ...mine, annotations: { ...mine.annotations, ...d.annotations } };
      return created;
    });
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    await e.clock.advance(0);
    assert.equal(created, undefined, 'a head start for a candidate that can take over at once');
    await e.clock.advance(FENCED_CAMPAIGN_DELAY_MS);
    assert.ok(created);
    e.store.watch0.event({ type: 'ADDED', lease: created });
    await e.clock.advance(0);
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, reason: e.verdict.reason },
      { state: 'follower', name: '', reason: 'takeover-wait' },
      'no claim while the old elector may still claim',
    );
    const until = takeoverAt(created)!;
    // Bookmarks keep the view confirmed all along.
    while (e.clock.now() < until - 10_000) {
      await e.clock.advance(10_000);
      e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: '43' });
    }
    await e.clock.advance(until - e.clock.now() - 1);
    assert.equal(e.verdict.reason, 'takeover-wait');
    assert.ok(!e.verdicts.some((v) => v.state === 'leader'), 'never leader before the takeover moment');
    await e.clock.advance(2);
    assert.equal(e.verdict.state, 'leader');
  });

  test('a deletion the Pod watch never showed (the object is just gone): fenced', async () => {
    const e = await following();
    e.store.expect('getPod', () => SELF);
    e.store.expect('getPod', () => null);
    e.store.expect('create', (d) => (assert.ok(takeoverAnnotation(d)), mine));
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    // A second for the Pod watch to catch up, a second's head start for others, then the
    // fenced campaign.
    await e.clock.advance(999 + FENCED_CAMPAIGN_DELAY_MS);
    assert.equal(e.store.callsOf('create').length, 0);
    await e.clock.advance(2);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('a candidate that would fence yields to one that takes over at once meanwhile', async () => {
    const e = await following();
    e.store.podWatch.event({ type: 'DELETED', pod: pod(OTHER.name, OTHER.uid, { resourceVersion: '41' }) });
    e.store.expect('getPod', () => SELF);
    e.store.expect('getPod', () => null);
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    await e.clock.advance(500);
    const third = ourLease({ name: 'app-2', uid: 'uid-2' }, { uid: 'lease-2', rv: '43' });
    e.store.watch0.event({ type: 'ADDED', lease: third });
    e.store.allow('getPod', () => pod('app-2', 'uid-2'));
    await e.clock.advance(FENCED_CAMPAIGN_DELAY_MS);
    assert.deepEqual(e.store.callsOf('create'), [], 'no campaign once another has won');
    assert.deepEqual({ state: e.verdict.state, name: e.verdict.name }, { state: 'follower', name: 'app-2' });
  });

  test('the Pod watch delivers the graceful end while the takeover waits for it: at once', async () => {
    const e = await following();
    e.store.expect('getPod', () => SELF);
    e.store.expect('getPod', () => null);
    e.store.expect('create', (d) => (assert.equal(takeoverAnnotation(d), undefined), mine));
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '42' } });
    await e.clock.advance(100);
    e.store.podWatch.event({
      type: 'DELETED',
      pod: pod(OTHER.name, OTHER.uid, { phase: 'Succeeded', elector: 'terminated', resourceVersion: '41' }),
    });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('the leader finished (the Pod watch saw Succeeded): judged and reclaimed at once, no owner-check interval, no fence', async () => {
    const e = await following();
    const done = pod(OTHER.name, OTHER.uid, {
      phase: 'Succeeded',
      elector: 'terminated',
      resourceVersion: '50',
    });
    e.store.expect('getPod', () => done);
    e.store.expect('deleteLease', () => {});
    e.store.podWatch.event({ type: 'MODIFIED', pod: done });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('deleteLease').length, 1);
    e.store.expect('getPod', () => SELF);
    e.store.expect('create', (d) => (assert.equal(takeoverAnnotation(d), undefined), mine));
    e.store.watch0.event({ type: 'DELETED', lease: { ...theirs, resourceVersion: '51' } });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('while the Pod watch runs, no periodic owner GET; once it fails, the GETs come back', async () => {
    const e = await following();
    for (let i = 0; i < 4; i++) {
      await e.clock.advance(TIMING.ownerCheckIntervalMs);
      e.store.watch0.event({ type: 'BOOKMARK', resourceVersion: `${31 + i}` });
    }
    assert.equal(e.store.callsOf('getPod').length, 1, 'only the first check');
    e.store.allow('getPod', () => pod(OTHER.name, OTHER.uid, { resourceVersion: '26' }));
    e.store.podWatch.fail(new ApiError('connection reset', 0));
    await e.clock.advance(TIMING.ownerCheckIntervalMs);
    assert.equal(e.store.callsOf('getPod').length, 2);
  });

  test('an orphaned Lease whose Pod the watch saw deleted (gracefully) is reclaimed at once, and taken over at once', async () => {
    const e = start({ random: () => 0 });
    const orphan = { ...theirs, owners: [] };
    e.store.expect('list', () => ({ lease: orphan, resourceVersion: '30' }));
    e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid, { resourceVersion: '25' }));
    await e.clock.advance(0);
    e.store.watch0.open();
    e.store.podWatch.open();
    e.store.expect('getPod', () => null);
    e.store.expect('deleteLease', () => {});
    e.store.podWatch.event({
      type: 'DELETED',
      pod: pod(OTHER.name, OTHER.uid, { phase: 'Succeeded', terminating: true, elector: 'terminated' }),
    });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('deleteLease').length, 1);
    e.store.expect('getPod', () => SELF);
    e.store.expect(
      'create',
      (d) => (assert.equal(d.annotations[LEASE_ANNOTATION_TAKEOVER_AT], undefined), mine),
    );
    e.store.watch0.event({ type: 'DELETED', lease: { ...orphan, resourceVersion: '31' } });
    await e.clock.advance(0);
    assert.equal(e.store.callsOf('create').length, 1);
  });

  test('a candidate that starts during a fenced takeover follows it and claims nothing', async () => {
    const e = start();
    const fenced = ourLease(OTHER, { uid: 'lease-fenced', rv: '60' });
    const at = e.clock.now() + 30_000;
    fenced.annotations[LEASE_ANNOTATION_TAKEOVER_AT] = new Date(at).toISOString();
    e.store.expect('list', () => ({ lease: fenced, resourceVersion: '60' }));
    e.store.allow('getPod', () => pod(OTHER.name, OTHER.uid));
    await e.clock.advance(0);
    e.store.watch0.open();
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name, reason: e.verdict.reason },
      { state: 'follower', name: '', reason: 'takeover-wait' },
    );
    assert.deepEqual(e.store.callsOf('create'), []);
    await e.clock.advance(30_001 - (e.clock.now() - (at - 30_000)));
    assert.deepEqual(
      { state: e.verdict.state, name: e.verdict.name },
      { state: 'follower', name: OTHER.name },
    );
  });
});

test('stop: every loop ends, no timer and no watch left', async () => {
  const e = start();
  e.store.expect('list', () => ({ lease: theirs, resourceVersion: '30' }));
  e.store.expect('getPod', () => pod(OTHER.name, OTHER.uid));
  await e.clock.advance(0);
  e.store.watch0.open();
  await e.stop();
});
