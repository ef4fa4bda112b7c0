import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `fn` until it returns a value other than `undefined` or `false`, and returns that
 * value; errors count as "not yet". Throws, naming `what` and the last error, after
 * `timeoutMs`. The one wait helper of the tests (the API server and controllers act
 * asynchronously; a test waits for an outcome, never for a fixed time).
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(50);
  }
}
