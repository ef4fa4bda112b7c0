/**
 * The one-object reflector: a watch on one object (the Lease, or the leader's Pod), resumed
 * from the last resourceVersion without a gap, abandoned when it stalls, backed off when it
 * fails. What each watch means (which events count, what a bookmark confirms, what to do when
 * the server has forgotten the resourceVersion) is the caller's: it hands in a
 * {@link WatchSession} per request; this module only runs it. Also the election's two ways
 * of waiting ({@link waitFor}, {@link sleep}) on its injected {@link Clock}.
 */
import { BOOKMARK_PERIOD_MS, backoffMs, type Timing } from './decisions.ts';
import { ApiError, asApiError, type Clock } from './store.ts';
import { MAX_TIMER_MS } from '../common/clock.ts';

/** Resolves all current waiters at once; a new wait starts a new round. */
export class Wakeup {
  #resolve: (() => void) | undefined;
  #promise: Promise<void> | undefined;
  wait(): Promise<void> {
    this.#promise ??= new Promise<void>((resolve) => (this.#resolve = resolve));
    return this.#promise;
  }
  fire(): void {
    const resolve = this.#resolve;
    this.#promise = undefined;
    this.#resolve = undefined;
    resolve?.();
  }
}

/** Waits until `until` (ms, clock time), a wake-up of `changed`, or abort. */
export async function waitFor(
  clock: Clock,
  changed: Wakeup,
  until: number | undefined,
  signal: AbortSignal,
): Promise<void> {
  if (signal.aborted) return;
  const next = changed.wait();
  // MAX_SAFE_INTEGER stands for "never" (an owner check the Pod watch made needless, an
  // unreadable takeover time): wait for a change only.
  if (until === undefined || until >= Number.MAX_SAFE_INTEGER) {
    await next;
    return;
  }
  // Node fires a longer timer after 1 ms: wait at most the longest timer, then look again.
  const delay = Math.min(MAX_TIMER_MS, Math.max(0, until - clock.now()));
  let timer: { cancel(): void } | undefined;
  const elapsed = new Promise<void>((resolve) => (timer = clock.setTimer(delay, resolve)));
  try {
    await Promise.race([next, elapsed]);
  } finally {
    timer?.cancel();
  }
}

/** Sleeps `ms` unless aborted first. */
export async function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  let timer: { cancel(): void } | undefined;
  let onAbort: (() => void) | undefined;
  await new Promise<void>((resolve) => {
    timer = clock.setTimer(ms, resolve);
    onAbort = resolve;
    signal.addEventListener('abort', onAbort, { once: true });
  });
  timer?.cancel();
  if (onAbort) signal.removeEventListener('abort', onAbort);
}

/** A watch request as the store takes it. */
export interface WatchRequest<E> {
  resourceVersion: string;
  timeoutSeconds: number;
  signal: AbortSignal;
  onOpen: () => void;
  onEvent: (event: E) => void;
}

/** One watch request and what its outcomes mean to the caller. */
export interface WatchSession<E extends { type: string }> {
  resourceVersion: string;
  timeoutSeconds: number;
  /** The watch is abandoned (`stalled`) this long after it started: a half-open connection never ends. */
  stallMs: number;
  /**
   * Also abandoned once nothing (open, event, bookmark) came for this long: with bookmarks a
   * healthy watch is never silent for much more than the server's bookmark period.
   */
  silenceMs?: number;
  /** Opens the watch through the store. */
  start(request: WatchRequest<E>): Promise<void>;
  /** The server accepted the watch (`startedAt`: when it was requested). */
  onOpen(startedAt: number): void;
  /** An event that is not an ERROR; `'stop'` ends this watch (it then counts as stopped). */
  onEvent(event: Exclude<E, { type: 'ERROR' }>): 'stop' | undefined;
  /** Checked on every wake-up while the watch runs: false ends it (stopped). */
  keep?: () => boolean;
  /** The server no longer has `resourceVersion` (410): the next session must start afresh. */
  expired(): void;
  /** Nothing ended the watch in `stallMs`; it is opened again at once. */
  stalled(): void;
  /** The watch failed; it is opened again after `retryInMs`. */
  failed(error: ApiError, retryInMs: number): void;
  /** The server ended the watch (its timeout), or the caller stopped it. */
  closed(stopped: boolean): void;
}

export interface WatchLoopDeps {
  clock: Clock;
  timing: Timing;
  random: () => number;
  /** Fired when a watch with `keep` ends, so that its keeper stops waiting. */
  changed: Wakeup;
}

/** Consecutive failures of a watch loop; a successful open (or the caller) resets them. */
export interface WatchLoopState {
  failures: number;
}

/**
 * Runs watches on one object until `signal` aborts. `prepare` returns the next
 * {@link WatchSession}, or undefined after it has waited (for a change of state, or a
 * backoff) to be asked again. A stream that closes at once, again and again, must not spin:
 * a watch that closed without opening, or within a second, is followed by a backoff.
 */
export async function runWatchLoop<E extends { type: string }>(
  deps: WatchLoopDeps,
  prepare: (state: WatchLoopState, signal: AbortSignal) => Promise<WatchSession<E> | undefined>,
  signal: AbortSignal,
): Promise<void> {
  const { clock, timing, random } = deps;
  const state: WatchLoopState = { failures: 0 };
  while (!signal.aborted) {
    const session = await prepare(state, signal);
    if (signal.aborted) return;
    if (session === undefined) continue;
    const end = await watchOnce(deps, session, state, signal);
    if (signal.aborted) return;
    switch (end.kind) {
      case 'expired':
        session.expired();
        break;
      case 'stalled':
        session.stalled();
        break;
      case 'failed': {
        const wait = backoffMs(state.failures++, timing, random);
        session.failed(end.error, wait);
        await sleep(clock, wait, signal);
        break;
      }
      case 'closed':
        session.closed(end.stopped);
        if (!end.stopped && (!end.opened || end.lastedMs < 1000)) {
          await sleep(clock, backoffMs(state.failures++, timing, random), signal);
        }
        break;
    }
  }
}

type WatchEnd =
  | { kind: 'expired' }
  | { kind: 'stalled' }
  | { kind: 'failed'; error: ApiError }
  | { kind: 'closed'; opened: boolean; stopped: boolean; lastedMs: number };

/** One watch request, from open to end. */
async function watchOnce<E extends { type: string }>(
  deps: WatchLoopDeps,
  s: WatchSession<E>,
  state: WatchLoopState,
  signal: AbortSignal,
): Promise<WatchEnd> {
  const { clock, changed } = deps;
  const startedAt = clock.now();
  const stop = new AbortController();
  let opened = false;
  let stalled = false;
  let expired = false;
  let failure: ApiError | undefined;
  const deadline = startedAt + s.stallMs;
  const onStall = () => {
    stalled = true;
    stop.abort();
  };
  const silence = s.silenceMs;
  let stallTimer = clock.setTimer(Math.min(s.stallMs, silence ?? Infinity), onStall);
  /** Something came: with `silenceMs`, the silence counts afresh. */
  const heard = () => {
    if (silence === undefined || stalled) return;
    stallTimer.cancel();
    const now = clock.now();
    stallTimer = clock.setTimer(Math.max(0, Math.min(deadline, now + silence) - now), onStall);
  };
  let watching = true;
  const keep = s.keep;
  if (keep) {
    void (async () => {
      while (watching && !stop.signal.aborted) {
        await changed.wait();
        if (watching && !keep()) stop.abort();
      }
    })();
  }
  try {
    await s.start({
      resourceVersion: s.resourceVersion,
      timeoutSeconds: s.timeoutSeconds,
      signal: AbortSignal.any([signal, stop.signal]),
      onOpen: () => {
        opened = true;
        state.failures = 0;
        heard();
        s.onOpen(startedAt);
      },
      onEvent: (event) => {
        if (signal.aborted || stop.signal.aborted) return;
        heard();
        if (isError(event)) {
          if (event.code === 410) expired = true;
          else failure ??= new ApiError(event.message || event.reason, event.code, event.reason);
          return;
        }
        if (s.onEvent(event as Exclude<E, { type: 'ERROR' }>) === 'stop') stop.abort();
      },
    });
  } catch (err) {
    if (!stop.signal.aborted) failure ??= asApiError(err);
  } finally {
    watching = false;
    stallTimer.cancel();
    if (keep) changed.fire(); // ends the keeper above
  }
  if (expired || failure?.code === 410) return { kind: 'expired' };
  if (stalled) return { kind: 'stalled' };
  if (failure) return { kind: 'failed', error: failure };
  return { kind: 'closed', opened, stopped: stop.signal.aborted, lastedMs: clock.now() - startedAt };
}

function isError(event: {
  type: string;
}): event is { type: 'ERROR'; code: number; reason: string; message: string } {
  return event.type === 'ERROR';
}

/** One watch on the Lease after another (see election.ts's sync loop). */
export interface Lane {
  index: 0 | 1;
  /** Where the next watch starts; undefined: list first (lane 0) or start from the view's. */
  resourceVersion: string | undefined;
  /** When the lane's bookmark schedule was last set: its watch opened, or a bookmark came. */
  phaseAt: number | undefined;
  /** Its watch is open now. */
  open: boolean;
  /** Its next watch opens half a bookmark period after the other lane's. */
  stagger: boolean;
}

/** How long until half a bookmark period after `phaseAt` (mod the period): a lane's slot. */
export function halfPeriodAfter(phaseAt: number, now: number): number {
  const p = BOOKMARK_PERIOD_MS;
  return (((phaseAt + p / 2 - now) % p) + p) % p;
}
