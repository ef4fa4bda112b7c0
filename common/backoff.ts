/**
 * The one backoff of both commands' controllers, and the one way they wait: every wait
 * ends early when its `AbortSignal` fires, and runs on an injected {@link Clock} so tests
 * move time by hand. Pure apart from the timer it asks the clock for.
 */
import { systemClock, type Clock } from './clock.ts';

export interface BackoffPolicy {
  /** The first delay. */
  initialMs: number;
  /** Delays double up to this. */
  maxMs: number;
}

/** The delay before retry number `attempt` (0 = first retry): initial × 2^attempt, capped. */
export function backoffDelay(attempt: number, policy: BackoffPolicy): number {
  return Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.max(0, attempt), 30));
}

/** Counts failures and hands out the next delay; `reset()` after a success. */
export class Backoff {
  readonly #policy: BackoffPolicy;
  #attempt = 0;

  constructor(policy: BackoffPolicy) {
    this.#policy = policy;
  }

  /** The delay for the next retry; each call counts one more failure. */
  next(): number {
    return backoffDelay(this.#attempt++, this.#policy);
  }

  reset(): void {
    this.#attempt = 0;
  }

  get failures(): number {
    return this.#attempt;
  }
}

/** The reason a wait was abandoned: the signal's reason when it is an Error, else an `AbortError`. */
function abortReason(signal: AbortSignal): Error {
  return signal.reason instanceof Error
    ? signal.reason
    : new DOMException('The operation was aborted', 'AbortError');
}

/**
 * Resolves after `ms` on `clock`; rejects with the signal's reason as soon as `signal`
 * aborts (the timer is cancelled, nothing is left behind).
 */
export function sleep(ms: number, options: { signal?: AbortSignal; clock?: Clock } = {}): Promise<void> {
  const { signal, clock = systemClock } = options;
  if (signal?.aborted) return Promise.reject(abortReason(signal));
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      timer.cancel();
      reject(abortReason(signal!));
    };
    const timer = clock.setTimer(ms, () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export interface RetryOptions {
  policy: BackoffPolicy;
  signal?: AbortSignal;
  clock?: Clock;
  /** False for errors not worth retrying (they are thrown at once); default: retry all. */
  retryable?: (err: unknown) => boolean;
  /** Gives up (throwing the last error) once the next retry would start after this long. */
  timeoutMs?: number;
  /** Told about each failure that will be retried, and after how long. */
  onRetry?: (err: unknown, delayMs: number) => void;
}

/**
 * Runs `fn` until it resolves, waiting with {@link backoffDelay} between failures.
 * Throws the last error when it is not retryable or the time is up, and the signal's reason
 * when the signal aborts.
 */
export async function retry<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const clock = options.clock ?? systemClock;
  const deadline = options.timeoutMs === undefined ? Infinity : clock.now() + options.timeoutMs;
  const backoff = new Backoff(options.policy);
  for (;;) {
    options.signal?.throwIfAborted();
    try {
      return await fn();
    } catch (err) {
      if (options.retryable && !options.retryable(err)) throw err;
      const delay = backoff.next();
      if (clock.now() + delay > deadline) throw err;
      options.onRetry?.(err, delay);
      await sleep(delay, { clock, ...(options.signal ? { signal: options.signal } : {}) });
    }
  }
}
