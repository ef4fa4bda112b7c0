/**
 * The real clocks. The elector's must not follow the wall clock when that is stepped: its
 * fencing bound is a duration, and a wall clock set back would stretch it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { monotonicClock, systemClock } from '../../../common/clock.ts';

test('monotonicClock reads like Date.now() and ignores a wall clock set back or forward', (t) => {
  assert.ok(Math.abs(monotonicClock.now() - Date.now()) < 1000, 'epoch milliseconds, near the wall clock');
  const before = monotonicClock.now();
  const wall = Date.now();
  // Set the wall clock back by a minute, then forward by an hour.
  const stepped = t.mock.method(Date, 'now', () => wall - 60_000);
  assert.equal(systemClock.now(), wall - 60_000, 'the wall clock moved back');
  const during = monotonicClock.now();
  stepped.mock.mockImplementation(() => wall + 3_600_000);
  const later = monotonicClock.now();
  t.mock.restoreAll();
  assert.ok(during >= before && later >= during, `${before} ≤ ${during} ≤ ${later}`);
  assert.ok(later - before < 1000, `moved ${later - before} ms, not by the wall clock's steps`);
});
