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

/**
 * The elector's clock: reads like `Date.now()` (the wall clock as of the process's start, plus
 * the time elapsed since) but never steps. The fencing bound and a fenced takeover's wait are
 * durations: on the wall clock, setting it back by N seconds (an NTP step, an admin) would
 * have a cut-off leader claim N seconds past its bound. NTP's rate corrections apply to this
 * clock too, so it stays with the wall clock unless that is stepped. Times meant for people
 * (`last_update`, log lines) still come from the wall clock.
 */
export const monotonicClock: Clock = {
  now: () => performance.timeOrigin + performance.now(),
  setTimer: (ms, fn) => systemClock.setTimer(ms, fn),
};
