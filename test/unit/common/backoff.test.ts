/** The shared backoff, cancellable sleep and retry loop, on a fake clock. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApiError, isConflict, isForbidden, isNotFound, statusOf } from '../../../common/api-error.ts';
import { Backoff, backoffDelay, retry, sleep } from '../../../common/backoff.ts';
import { FakeClock, flush } from '../../support/clock.ts';

const policy = { initialMs: 100, maxMs: 1000 };

describe('backoff', () => {
  test('doubles from the initial delay up to the cap', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 100].map((a) => backoffDelay(a, policy)),
      [100, 200, 400, 800, 1000, 1000, 1000],
    );
    const b = new Backoff(policy);
    assert.deepEqual([b.next(), b.next(), b.next()], [100, 200, 400]);
    assert.equal(b.failures, 3);
    b.reset();
    assert.equal(b.next(), 100);
  });

  test('sleep resolves on the clock and rejects at once on abort, leaving no timer', async () => {
    const clock = new FakeClock();
    let done = false;
    const p = sleep(500, { clock }).then(() => (done = true));
    await clock.advance(499);
    assert.equal(done, false);
    await clock.advance(1);
    await p;
    assert.equal(done, true);

    const ac = new AbortController();
    const q = sleep(500, { clock, signal: ac.signal });
    assert.equal(clock.pendingTimers, 1);
    ac.abort(new Error('stop'));
    await assert.rejects(q, /stop/);
    assert.equal(clock.pendingTimers, 0);
    await assert.rejects(sleep(1, { clock, signal: ac.signal }), /stop/);
  });

  test('retry: backs off between failures, stops on a fatal error, a deadline or an abort', async () => {
    const clock = new FakeClock();
    const delays: number[] = [];
    let calls = 0;
    const ok = retry(
      () => (++calls < 4 ? Promise.reject(new ApiError('unavailable', 503)) : Promise.resolve('done')),
      { policy, clock, onRetry: (_e, d) => delays.push(d) },
    );
    await clock.advance(10_000);
    assert.equal(await ok, 'done');
    assert.deepEqual(delays, [100, 200, 400]);

    let fatalCalls = 0;
    await assert.rejects(
      retry(() => (fatalCalls++, Promise.reject(new ApiError('forbidden', 403))), {
        policy,
        clock,
        retryable: (e) => !isForbidden(e),
      }),
      /forbidden/,
    );
    assert.equal(fatalCalls, 1);

    const late = retry(() => Promise.reject(new Error('refused')), { policy, clock, timeoutMs: 250 });
    const lateResult = assert.rejects(late, /refused/);
    await clock.advance(1000);
    await lateResult;

    const ac = new AbortController();
    const aborted = retry(() => Promise.reject(new Error('refused')), { policy, clock, signal: ac.signal });
    const abortedResult = assert.rejects(aborted, /aborted/i);
    await flush();
    ac.abort();
    await abortedResult;
    assert.equal(clock.pendingTimers, 0);
  });

  test('statusOf reads the numeric status of either client, none for network errors', () => {
    assert.equal(statusOf(new ApiError('x', 404)), 404);
    assert.equal(statusOf(Object.assign(new Error('ApiException'), { code: 409 })), 409);
    assert.equal(statusOf(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })), undefined);
    assert.equal(statusOf(new ApiError('no answer', 0)), undefined);
    assert.equal(statusOf('text'), undefined);
    assert.ok(isNotFound(new ApiError('x', 404)) && isConflict(new ApiError('x', 409)));
    assert.ok(isForbidden(new ApiError('x', 401)) && !isForbidden(new ApiError('x', 500)));
  });
});
