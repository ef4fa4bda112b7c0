import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * A wait's bound, written for a quiet machine, stretched by how oversubscribed the CPUs are
 * now (1-minute load average per core, at least 1). A bound only decides how long a failing
 * test takes to say so: an outcome that holds ends the wait at once. At a load average of
 * 20-30 on 2 cores every process gets a tenth of a core or less, so an elector that starts,
 * campaigns and answers within 3 s here needs 30-45 s there; tests with fixed 30 s bounds
 * failed that way (10 electors not listening; a StatefulSet pod not leading). Bounds that
 * are properties of the product (the fencing bound, "never unknown early") are not waits and
 * are not stretched.
 */
export function stretched(ms: number): number {
  let load = 0;
  try {
    load = Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    // not Linux: no stretch
  }
  return Math.round(ms * Math.max(1, load / availableParallelism()));
}

/**
 * Polls `fn` until it returns a value other than `undefined` or `false`, and returns that
 * value; errors count as "not yet". Throws, naming `what` and the last error, after
 * `timeoutMs` (stretched by the machine's load, see `stretched`). The one wait helper of the tests (the API server and controllers act
 * asynchronously; a test waits for an outcome, never for a fixed time).
 */
export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
): Promise<T> {
  const bound = stretched(timeoutMs);
  const deadline = Date.now() + bound;
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
      throw new Error(
        `timed out after ${bound} ms (${timeoutMs} ms on a quiet machine) waiting for ${what}${why}`,
      );
    }
    await sleep(50);
  }
}
