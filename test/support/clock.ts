/**
 * A clock that moves only when a test tells it to, for controllers that take a
 * `common/clock.ts` `Clock` (the elector's unit tests use it too). `pendingTimers` lets a
 * test check that a stopped controller left no timer behind.
 */
import { MAX_TIMER_MS, type Clock } from '../../common/clock.ts';

/** Lets every pending promise callback and immediate run. */
export async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

interface FakeTimer {
  at: number;
  seq: number;
  fn: () => void;
  cancelled: boolean;
}

export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #timers: FakeTimer[] = [];

  constructor(start = Date.parse('2030-01-01T00:00:00Z')) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimer(ms: number, fn: () => void): { cancel(): void } {
    // Strict like Node: setTimeout fires a delay above 2^31-1 ms after 1 ms instead (with a
    // TimeoutOverflowWarning), so such a timer is a busy loop in production, not a long wait.
    if (!(ms <= MAX_TIMER_MS)) throw new Error(`setTimer(${ms}): Node would fire this after 1 ms`);
    const timer: FakeTimer = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#timers.push(timer);
    return {
      cancel: () => {
        timer.cancelled = true;
      },
    };
  }

  /** Live timers (not fired, not cancelled). */
  get pendingTimers(): number {
    return this.#timers.filter((t) => !t.cancelled).length;
  }

  /** Delays of the live timers from now, soonest first. */
  get pendingDelays(): number[] {
    return this.#timers
      .filter((t) => !t.cancelled)
      .map((t) => t.at - this.#now)
      .sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing due timers in order and letting their effects run. */
  async advance(ms: number): Promise<void> {
    const target = this.#now + ms;
    for (;;) {
      await flush();
      this.#timers = this.#timers.filter((t) => !t.cancelled);
      const due = this.#timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!due) break;
      this.#timers.splice(this.#timers.indexOf(due), 1);
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = target;
    await flush();
  }
}

/**
 * Waits (in real time, bounded) until `condition` holds: for effects of a fired timer that
 * take real work (key generation) and so outlast `flush()`. The fake clock does not move
 * meanwhile, so whatever happens was caused by timers already fired.
 */
export async function until(condition: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
