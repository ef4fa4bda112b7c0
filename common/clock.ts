/**
 * Time as the controllers see it: the current time and one-shot timers that can be
 * cancelled. Injected everywhere a controller waits, so unit tests move time by hand (see
 * test/support/clock.ts) and nothing sleeps for real. Same shape as the elector's `Clock`.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` once after `ms`, unless cancelled. */
  setTimer(ms: number, fn: () => void): { cancel(): void };
}

/** The longest delay setTimeout keeps (2^31-1 ms); Node fires a longer one after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The real clock: `Date.now()` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer(ms, fn) {
    const timer = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(timer) };
  },
};
