import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { LeaderBoard, type Snapshot, type Verdict } from '../../../elector/leader.ts';

const T0 = Date.parse('2024-05-01T10:00:00.000Z');
const v = (state: Verdict['state'], name = '', uid = '', reason: string = state): Verdict => ({
  state,
  name,
  pod: name ? `${name}-pod` : '',
  uid,
  reason,
});

describe('LeaderBoard', () => {
  test('not known before the first leader is known (503), with the full result shape', () => {
    const b = new LeaderBoard();
    assert.deepEqual(b.snapshot().result, {
      name: '',
      last_update: '',
      is_leader: false,
      state: 'unknown',
      leader_pod: '',
    });
    assert.equal(b.snapshot().known, false);
    // No Lease yet (campaign running) is not an answer either.
    b.publish(v('follower', '', '', 'no-lease'), T0);
    assert.equal(b.snapshot().known, false);
    assert.equal(b.snapshot().result.last_update, '');
    b.publish(v('follower', 'a', 'ua'), T0 + 5);
    assert.equal(b.snapshot().known, true);
    assert.equal(b.snapshot().result.last_update, '2024-05-01T10:00:00.005Z');
  });

  test('last_update moves only when the leader changes; ids only when the result changes', () => {
    const b = new LeaderBoard();
    const seen: Snapshot[] = [];
    b.subscribe((s) => seen.push(s));
    b.publish(v('follower', 'a', 'ua'), T0);
    b.publish(v('follower', 'a', 'ua'), T0 + 1000); // a resync: nothing
    assert.equal(seen.length, 1);
    b.publish(v('follower', 'b', 'ub'), T0 + 2000);
    assert.equal(seen.length, 2);
    assert.equal(seen[1]!.result.last_update, new Date(T0 + 2000).toISOString());
    assert.deepEqual(
      seen.map((s) => s.id),
      [1, 2],
    );
  });

  test('same name, different pod (StatefulSet pod recreated): a new leader', () => {
    const b = new LeaderBoard();
    b.publish(v('follower', 'web-0', 'u1'), T0);
    b.publish(v('follower', 'web-0', 'u2'), T0 + 10);
    assert.equal(b.snapshot().result.last_update, new Date(T0 + 10).toISOString());
  });

  test('unknown after a result: 200 with no name (no app may think it leads), then back', () => {
    const b = new LeaderBoard();
    b.publish(v('leader', 'me', 'u'), T0);
    assert.equal(b.snapshot().result.is_leader, true);
    b.publish(v('unknown', 'me', 'u', 'unconfirmed'), T0 + 60_000);
    const s = b.snapshot();
    assert.equal(s.known, true);
    assert.deepEqual(s.result, {
      name: '',
      last_update: new Date(T0 + 60_000).toISOString(),
      is_leader: false,
      state: 'unknown',
      leader_pod: '',
    });
    assert.equal(s.reason, 'unconfirmed');
    b.publish(v('leader', 'me', 'u'), T0 + 70_000);
    assert.equal(b.snapshot().result.is_leader, true);
    assert.equal(b.snapshot().result.last_update, new Date(T0 + 70_000).toISOString());
  });

  test('a reason-only change updates the snapshot without an event', () => {
    const b = new LeaderBoard();
    let events = 0;
    b.subscribe(() => events++);
    b.publish(v('unknown', '', '', 'starting'), T0);
    b.publish(v('unknown', '', '', 'foreign-lease'), T0);
    assert.equal(events, 0);
    assert.equal(b.snapshot().reason, 'foreign-lease');
  });

  test('unsubscribe removes the listener at once', () => {
    const b = new LeaderBoard();
    let calls = 0;
    const off = b.subscribe(() => calls++);
    assert.equal(b.subscriberCount, 1);
    off();
    assert.equal(b.subscriberCount, 0);
    b.publish(v('leader', 'me', 'u'), T0);
    assert.equal(calls, 0);
  });
});
