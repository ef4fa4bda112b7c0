/**
 * Lease-for-life leader election on one `coordination.k8s.io/v1` Lease.
 *
 * The first pod to CREATE the Lease leads until its Pod is gone; nothing is ever renewed.
 * This module is the driver, {@link Election}: it carries the protocol out through an injected
 * {@link ElectionStore} (the Kubernetes API, see kube.ts) and an injected {@link Clock}. The
 * protocol lives in layers, each its own module:
 *  - store.ts: the data the election works on and the store interface (no logic);
 *  - decisions.ts: the pure decisions (what a Lease means, whom it names, when to campaign,
 *    when a Lease may be reclaimed, when to stop claiming anything, the verdict);
 *  - reflector.ts: the one-object watch loop (resume, stall, backoff) both watches run on;
 *  - campaign.ts: campaign, reclaim, the fenced takeover and self-fencing;
 *  - this file: the view (the only writer of it), the Lease and leader-Pod watches, and the
 *    loops that tie them together. It re-exports the layers, so callers import one module.
 * No I/O, no logging: the driver reports {@link Note}s and {@link Verdict}s, and main.ts
 * turns them into logs and metrics.
 *
 * The protocol, step by step (the numbers appear in the code below):
 *  1. List the Lease by name (field selector) to learn its state and a resourceVersion.
 *  2. Watch that one Lease from the resourceVersion; every event, bookmark and successful
 *     (re)start of the watch confirms the view. Short watches (a fencing bound under 45 s):
 *     the server ends the watch every `watchTimeoutSeconds`, so the view is re-confirmed at
 *     least that often. Long watches (the default): two watches of 5-10 minutes each, half a
 *     minute apart, whose bookmarks (kube-apiserver sends one about every minute) confirm the
 *     view about every 30 s; a watch silent past a bookmark period is abandoned as stalled.
 *     An event or bookmark older than what the view holds (the other watch brought it
 *     already) changes and confirms nothing: about 0.3 requests a minute instead of 3.
 *  3. When the watch ends, resume from the last resourceVersion seen (no gap); when the
 *     server says it has expired (410), or the view went unconfirmed meanwhile, list again;
 *     on errors, back off and retry. Never give up.
 *  4. No Lease: wait a random jitter, make sure the own Pod is still a candidate, then
 *     CREATE the Lease with an ownerReference to the own Pod. 201 = won, 409 = lost; either
 *     way the watch reports the winner.
 *  5. A Lease held by another Pod: check that Pod now and every `ownerCheckIntervalMs`.
 *     If it is gone, replaced by a new Pod of the same name, or finished (Succeeded/Failed),
 *     DELETE the Lease with UID and resourceVersion preconditions (exactly that Lease, as
 *     judged) and go to 4 when the watch reports the deletion. A Lease that names only a
 *     holder (no owner, not ours: a lock made by hand) is followed by name, never reclaimed.
 *  6. The verdict: leader when the Lease's owner UID is the own Pod's UID; follower of the
 *     named leader otherwise; `unknown` when the view is older than `fencingTimeoutMs`
 *     (self-fencing), when the Lease is not an election Lease, or when the leader's name is
 *     the own hostname but the owner is another Pod (a recreated StatefulSet pod).
 */
import type { Verdict } from './leader.ts';
import { campaign, checkOwner, fenceLoop, type Ctx, type ElectionState, type PodTrack } from './campaign.ts';
import {
  BOOKMARK_PERIOD_MS,
  LOOP_BEAT_MS,
  POD_WATCH_SECONDS,
  backoffMs,
  isNews,
  longWatchSeconds,
  classifyLease,
  decideAction,
  decideVerdict,
  isConfirmed,
  type Holder,
  type ReclaimReason,
  type Timing,
  type View,
} from './decisions.ts';
import {
  halfPeriodAfter,
  runWatchLoop,
  sleep,
  waitFor,
  Wakeup,
  type Lane,
  type WatchSession,
} from './reflector.ts';
import {
  asApiError,
  type ApiError,
  type Clock,
  type ElectionStore,
  type Identity,
  type LeaseRecord,
  type Operation,
  type PodRecord,
  type PodWatchEvent,
  type WatchEvent,
} from './store.ts';

export * from './store.ts';
export * from './decisions.ts';

// ---------------------------------------------------------------------------------------
// What the driver reports (main.ts logs these and counts them in metrics).

export type Note =
  | { type: 'listed'; lease: LeaseRecord | null }
  | { type: 'lease-changed'; lease: LeaseRecord | null; holder: Holder | undefined }
  | { type: 'watch-restart'; reason: 'closed' | 'expired' | 'stalled' | 'error' }
  | { type: 'api-error'; operation: Operation; error: ApiError; retryInMs: number | undefined }
  | { type: 'campaign'; result: 'won' | 'lost' | 'error' | 'skipped'; detail: string }
  | {
      type: 'reclaim';
      result: 'deleted' | 'conflict' | 'gone' | 'error';
      reason: ReclaimReason;
      detail: string;
      lease: { uid: string; resourceVersion: string };
    }
  | { type: 'owner-checked'; podName: string; alive: boolean }
  | { type: 'verdict'; verdict: Verdict; previous: Verdict };

export interface ElectionOptions {
  identity: Identity;
  timing: Timing;
  store: ElectionStore;
  clock: Clock;
  /** Uniform in [0, 1): jitter and backoff. */
  random: () => number;
  onVerdict: (verdict: Verdict) => void;
  onNote: (note: Note) => void;
}

/**
 * Runs the election until its signal aborts. Four loops share one view: the sync loop
 * (list + watch) is the only writer of the view; the act loop campaigns and reclaims; the
 * fence loop republishes the verdict when the view grows too old or a fenced takeover's
 * moment comes; the pod loop watches the leader's one Pod, so that its last state before it
 * vanished is known.
 */
export class Election {
  readonly #o: ElectionOptions;
  readonly #s: ElectionState = {
    view: { listed: false, lease: null, generation: 0, confirmedAt: undefined },
    memory: { campaign: undefined, owner: undefined },
    track: undefined,
  };
  #verdict: Verdict = { state: 'unknown', name: '', pod: '', uid: '', reason: 'starting' };
  readonly #changed = new Wakeup();
  /** What campaign.ts acts through. */
  readonly #ctx: Ctx;
  /** Long watches: the resourceVersion the view is current at (events of both lanes, in order). */
  #viewRv: string | undefined;
  /** When the event loop last ran the beat ({@link LOOP_BEAT_MS}); undefined before run(). */
  #beatAt: number | undefined;

  constructor(options: ElectionOptions) {
    this.#o = options;
    this.#ctx = {
      o: options,
      s: this.#s,
      changed: this.#changed,
      publish: (now) => this.#publish(now),
      apiError: (operation, err, retryInMs) => this.#apiError(operation, err, retryInMs),
      wait: (until, signal) => this.#wait(until, signal),
      podTarget: () => this.#podTarget(),
      podSeen: (t, pod, how) => this.#podSeen(t, pod, how),
    };
  }

  /** The current verdict (as last published). */
  get verdict(): Verdict {
    return this.#verdict;
  }

  /** Brings the verdict up to now (publishing it if it changed); for answers given now. */
  refresh(): void {
    this.#publish();
  }

  /** Milliseconds since the API server last confirmed the view; undefined before that. */
  confirmationAgeMs(): number | undefined {
    const at = this.#s.view.confirmedAt;
    return at === undefined ? undefined : Math.max(0, this.#o.clock.now() - at);
  }

  /** A copy of the current view, for diagnostics and tests. */
  get view(): Readonly<View> {
    return { ...this.#s.view };
  }

  /** Runs until `signal` aborts; never rejects because of the API. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.#changed.fire();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.all([
        this.#syncLoop(signal),
        this.#actLoop(signal),
        fenceLoop(this.#ctx, signal),
        this.#podLoop(signal),
        this.#beatLoop(signal),
      ]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  // --- view -----------------------------------------------------------------------------

  /**
   * Notes, every {@link LOOP_BEAT_MS}, that the event loop runs (see {@link #readAt}), while
   * this elector leads or may come to lead: a paused follower that reads old data on waking
   * follows an old leader for a moment, which is safe, and an idle follower's process then
   * sleeps (four wakeups a second cost about 1 ms of CPU a second here).
   */
  async #beatLoop(signal: AbortSignal): Promise<void> {
    const { clock } = this.#o;
    // A bare timer chain: a promise and an abort listener per beat cost half as much again.
    let timer: { cancel(): void } | undefined;
    const beat = () => {
      this.#beatAt = clock.now();
      timer = clock.setTimer(LOOP_BEAT_MS, beat);
    };
    try {
      while (!signal.aborted) {
        const mayLead = this.#mayLead();
        if (mayLead && !timer) beat();
        if (!mayLead && timer) {
          timer.cancel();
          timer = undefined;
          this.#beatAt = undefined;
        }
        await this.#wait(undefined, signal);
      }
    } finally {
      timer?.cancel();
    }
  }

  /**
   * Whether the view lets this elector lead, now or later, fencing and a takeover's wait
   * aside: not listed yet, no Lease (a campaign), or a Lease that names it.
   */
  #mayLead(): boolean {
    const view = this.#s.view;
    if (!view.listed || view.lease === null) return true;
    const far = Number.MAX_SAFE_INTEGER;
    const { identity, timing } = this.#o;
    return (
      decideVerdict({ ...view, confirmedAt: far }, this.#s.memory, identity, timing, far).state === 'leader'
    );
  }

  /**
   * The moment a watch event or bookmark read now shows the API server's state at. Read in a
   * loop turn that came on time: now (it cannot have waited in the socket longer than a turn).
   * Read after a pause of the process: the socket may hold data from before the pause, and it
   * is read before any timer runs again, so it counts as of one beat before the last beat
   * (see {@link LOOP_BEAT_MS}). Without a beat (this elector cannot lead): now. A list or a
   * watch's opening confirms as of its request's start instead, which no pause makes too late.
   */
  #readAt(): number {
    const now = this.#o.clock.now();
    const beat = this.#beatAt;
    if (beat === undefined || now - beat <= 2 * LOOP_BEAT_MS) return now;
    return beat - LOOP_BEAT_MS;
  }

  #observe(lease: LeaseRecord | null, at: number): void {
    const prev = this.#s.view.lease;
    const first = !this.#s.view.listed;
    const same =
      prev === lease ||
      (prev !== null &&
        lease !== null &&
        prev.uid === lease.uid &&
        prev.resourceVersion === lease.resourceVersion);
    if (first || !same) {
      this.#s.view = { ...this.#s.view, lease, generation: this.#s.view.generation + 1 };
      const holder = lease ? classifyLease(lease) : undefined;
      if (first || prev?.uid !== lease?.uid) this.#o.onNote({ type: 'lease-changed', lease, holder });
      if (lease === null) {
        // 4. (prepare) A new "no Lease" view: campaign, after a random jitter when the Lease
        //    just went away (every candidate sees that at once); at start-up without delay.
        //    Remember whose Lease went: whether its elector is known to have stopped decides
        //    whether the takeover must be fenced.
        const jitter = first ? 0 : Math.floor(this.#o.random() * this.#o.timing.campaignJitterMs);
        const gone = prev === null ? undefined : classifyLease(prev);
        const after =
          gone && (gone.kind === 'pod' || gone.kind === 'orphan')
            ? {
                lease: prev!,
                podName: gone.podName,
                podUid:
                  gone.podUid ??
                  (this.#s.memory.owner?.leaseUid === prev!.uid
                    ? this.#s.memory.owner.resolvedUid
                    : undefined),
                // Now, not `at` (a list's start): the deletion happened before we saw it.
                goneAt: this.#o.clock.now(),
              }
            : undefined;
        this.#s.memory = {
          ...this.#s.memory,
          campaign: {
            generation: this.#s.view.generation,
            notBefore: this.#o.clock.now() + jitter,
            done: false,
            failures: 0,
            ...(after ? { after } : {}),
          },
        };
      }
    }
    this.#s.view = { ...this.#s.view, listed: true };
    this.#confirm(at);
  }

  #confirm(at: number): void {
    const prev = this.#s.view.confirmedAt;
    if (prev === undefined || at > prev) this.#s.view = { ...this.#s.view, confirmedAt: at };
    this.#publish();
    this.#changed.fire();
  }

  #publish(now = this.#o.clock.now()): void {
    const { identity, timing } = this.#o;
    const next = decideVerdict(this.#s.view, this.#s.memory, identity, timing, now);
    const prev = this.#verdict;
    if (
      next.state === prev.state &&
      next.name === prev.name &&
      next.pod === prev.pod &&
      next.uid === prev.uid &&
      next.reason === prev.reason
    ) {
      return;
    }
    this.#verdict = next;
    this.#o.onVerdict(next);
    this.#o.onNote({ type: 'verdict', verdict: next, previous: prev });
  }

  /** Waits until `until` (ms, clock time), a view change, or abort. */
  #wait(until: number | undefined, signal: AbortSignal): Promise<void> {
    return waitFor(this.#o.clock, this.#changed, until, signal);
  }

  #apiError(operation: Operation, err: unknown, retryInMs: number | undefined): ApiError {
    const error = asApiError(err);
    this.#o.onNote({ type: 'api-error', operation, error, retryInMs });
    return error;
  }

  // --- 1-3: list and watch the Lease -------------------------------------------------------

  /**
   * With long watches, two lanes each hold a watch on the Lease (kube-apiserver bookmarks each
   * about once a minute; half a minute apart, they confirm the view about every 30 s);
   * otherwise one lane with short watches. Lane 0 lists when it must; lane 1 starts from the
   * view's resourceVersion, never lists, and opens half a bookmark period after lane 0.
   */
  async #syncLoop(signal: AbortSignal): Promise<void> {
    const lane = (index: 0 | 1): Lane => ({
      index,
      resourceVersion: undefined,
      phaseAt: undefined,
      open: false,
      stagger: index === 1,
    });
    if (!this.#o.timing.longWatches) return this.#leaseLane(lane(0), undefined, signal);
    const lanes = [lane(0), lane(1)] as const;
    await Promise.all([
      this.#leaseLane(lanes[0], lanes[1], signal),
      this.#leaseLane(lanes[1], lanes[0], signal),
    ]);
  }

  #leaseLane(lane: Lane, other: Lane | undefined, signal: AbortSignal): Promise<void> {
    const { store, clock, timing, random } = this.#o;
    const long = timing.longWatches;
    return runWatchLoop<WatchEvent>(
      { clock, timing, random, changed: this.#changed },
      async (state, signal): Promise<WatchSession<WatchEvent> | undefined> => {
        // A view that has gone unconfirmed (the API server was out of reach past the fencing
        // bound) is not resumed: a watch from its old resourceVersion opens before it replays
        // what was missed, and confirming the old view at that moment would have this elector
        // claim, for a moment, a Lease that was deleted and won by another pod meanwhile.
        if (lane.resourceVersion !== undefined && !isConfirmed(this.#s.view, clock.now(), timing)) {
          lane.resourceVersion = undefined;
        }
        if (lane.resourceVersion === undefined && lane.index === 1) {
          // The second lane starts where the (confirmed) view is; it never lists.
          if (this.#viewRv === undefined || !isConfirmed(this.#s.view, clock.now(), timing)) {
            await this.#wait(undefined, signal);
            return undefined;
          }
          lane.resourceVersion = this.#viewRv;
        }
        // 1. List the Lease by name: its state, and a resourceVersion to watch from.
        if (lane.resourceVersion === undefined) {
          const startedAt = clock.now();
          try {
            const listed = await store.list(signal);
            if (signal.aborted) return undefined;
            state.failures = 0;
            lane.resourceVersion = listed.resourceVersion;
            if (long) this.#viewRv = listed.resourceVersion;
            this.#o.onNote({ type: 'listed', lease: listed.lease });
            this.#observe(listed.lease, startedAt);
          } catch (err) {
            if (signal.aborted) return undefined;
            const wait = backoffMs(state.failures++, timing, random);
            this.#apiError('list', err, wait);
            await sleep(clock, wait, signal);
            return undefined;
          }
        }
        if (long && lane.stagger && other) {
          // Open half a bookmark period after the other lane's bookmarks, so that the two
          // confirm the view in turn (at start, and after each timeout, since a lane's phase
          // drifts by its reconnection).
          if (!other.open || other.phaseAt === undefined) {
            if (lane.index === 1 && other.phaseAt === undefined) {
              await this.#wait(undefined, signal); // lane 0 has not opened yet
              return undefined;
            }
          } else {
            const delay = halfPeriodAfter(other.phaseAt, clock.now());
            lane.stagger = false;
            if (delay > 0) {
              await sleep(clock, delay, signal);
              return undefined;
            }
          }
          lane.stagger = false;
        }

        // 2. Watch the Lease from resourceVersion. Short watches: the server ends the watch
        //    after timeoutSeconds, and a watch silent for longer than that (plus grace) is
        //    abandoned, since a half-open connection would otherwise hide a partition forever.
        //    Long watches: the same, and also once silent past a bookmark period plus grace.
        // 3. Resume without a gap: from the last resourceVersion seen, or by listing again
        //    when the server no longer has it (410 Expired/Gone).
        const timeoutSeconds = long ? longWatchSeconds(random) : timing.watchTimeoutSeconds;
        const closed = () => {
          lane.open = false;
        };
        return {
          resourceVersion: lane.resourceVersion,
          timeoutSeconds,
          stallMs: timeoutSeconds * 1000 + timing.watchGraceMs,
          ...(long ? { silenceMs: BOOKMARK_PERIOD_MS + timing.watchGraceMs } : {}),
          start: (request) => store.watch(request),
          onOpen: (startedAt) => {
            lane.open = true;
            lane.phaseAt = clock.now();
            this.#confirm(startedAt);
          },
          onEvent: (event) => {
            switch (event.type) {
              case 'ADDED':
              case 'MODIFIED':
              case 'DELETED': {
                if (event.lease.name !== this.#o.identity.election) return undefined;
                const rv = event.lease.resourceVersion;
                lane.resourceVersion = rv;
                if (!isNews(timing.longWatches, this.#viewRv, rv, lane.index, false)) return undefined;
                if (long) this.#viewRv = rv;
                this.#observe(event.type === 'DELETED' ? null : event.lease, this.#readAt());
                return undefined;
              }
              case 'BOOKMARK': {
                const rv = event.resourceVersion;
                if (rv) lane.resourceVersion = rv;
                lane.phaseAt = clock.now();
                // A lane behind the view (another API server's cache) confirms nothing.
                if (long && rv && !isNews(timing.longWatches, this.#viewRv, rv, lane.index, true))
                  return undefined;
                if (long && rv) this.#viewRv = rv;
                this.#confirm(this.#readAt());
                return undefined;
              }
            }
          },
          expired: () => {
            closed();
            this.#o.onNote({ type: 'watch-restart', reason: 'expired' });
            lane.resourceVersion = undefined;
          },
          stalled: () => {
            closed();
            this.#o.onNote({ type: 'watch-restart', reason: 'stalled' });
          },
          failed: (error, wait) => {
            closed();
            this.#apiError('watch', error, wait);
            this.#o.onNote({ type: 'watch-restart', reason: 'error' });
          },
          closed: () => {
            closed();
            lane.stagger = long;
            this.#o.onNote({ type: 'watch-restart', reason: 'closed' });
          },
        };
      },
      signal,
    );
  }

  // --- 4-5: campaign and reclaim -----------------------------------------------------------

  async #actLoop(signal: AbortSignal): Promise<void> {
    const { identity, timing, clock } = this.#o;
    while (!signal.aborted) {
      const action = decideAction(this.#s.view, this.#s.memory, identity, timing, clock.now());
      switch (action.type) {
        case 'wait':
          await this.#wait(action.until, signal);
          break;
        case 'campaign':
          await campaign(this.#ctx, signal);
          break;
        case 'check-owner':
          await checkOwner(this.#ctx, action.lease, action.podName, action.podUid, signal);
          break;
      }
    }
  }

  // --- the leader's Pod ------------------------------------------------------------------

  /** The Pod to watch: the one the current Lease names, when it is another's. */
  #podTarget(): { podName: string; podUid: string } | undefined {
    const lease = this.#s.view.lease;
    if (lease === null) return undefined;
    const holder = classifyLease(lease);
    if (holder.kind !== 'pod' && holder.kind !== 'orphan') return undefined;
    const podUid =
      holder.podUid ??
      (this.#s.memory.owner?.leaseUid === lease.uid ? this.#s.memory.owner.resolvedUid : undefined);
    if (podUid === undefined || podUid === this.#o.identity.podUid) return undefined;
    return { podName: holder.podName, podUid };
  }

  /** Moves the next owner check of the Lease naming `t`'s Pod to `at` (a GET the watch makes needless). */
  #deferOwnerCheck(t: PodTrack, at: number): void {
    const o = this.#s.memory.owner;
    const target = this.#podTarget();
    if (!o || !target || target.podUid !== t.podUid || o.leaseUid !== this.#s.view.lease?.uid) return;
    const nextCheckAt = at === Infinity ? Number.MAX_SAFE_INTEGER : Math.min(o.nextCheckAt, at);
    if (nextCheckAt === o.nextCheckAt) return;
    this.#s.memory = { ...this.#s.memory, owner: { ...o, nextCheckAt } };
    this.#changed.fire();
  }

  /** A state of the tracked Pod arrived; a finished leader seen by the watch is judged at once. */
  #podSeen(t: PodTrack, pod: PodRecord, how: 'checked' | 'watched' | 'deleted'): void {
    t.last = pod;
    t.resourceVersion = pod.resourceVersion;
    if (how === 'deleted') t.deleted = true;
    const o = this.#s.memory.owner;
    const finished = pod.phase === 'Succeeded' || pod.phase === 'Failed';
    if (how === 'deleted' && o) {
      // The garbage collector removes a Lease its owner's deletion leaves behind; an orphaned
      // Lease has none, so the owner check (404: reclaim) runs now. For an owned Lease it
      // runs after the usual interval, in case the garbage collector is down.
      const lease = this.#s.view.lease;
      const orphan = lease !== null && classifyLease(lease).kind === 'orphan';
      const now = this.#o.clock.now();
      this.#s.memory = {
        ...this.#s.memory,
        owner: { ...o, nextCheckAt: orphan ? now : now + this.#o.timing.ownerCheckIntervalMs },
      };
    } else if (how === 'watched' && finished && o && o.nextCheckAt > this.#o.clock.now()) {
      this.#s.memory = { ...this.#s.memory, owner: { ...o, nextCheckAt: this.#o.clock.now() } };
    }
    this.#changed.fire();
  }

  /**
   * Watches the leader's one Pod (by name), from the owner check's GET, resuming without
   * a gap. The DELETED event carries the Pod's last state: whether the kubelet confirmed that
   * its elector stopped. A Pod seen finished is judged at once (no owner-check interval).
   */

  /**
   * Watches the leader's one Pod (by name), from the owner check's GET, resuming without
   * a gap. The DELETED event carries the Pod's last state: whether the kubelet confirmed that
   * its elector stopped. A Pod seen finished is judged at once (no owner-check interval).
   */
  #podLoop(signal: AbortSignal): Promise<void> {
    const { store, clock, timing, random } = this.#o;
    return runWatchLoop<PodWatchEvent>(
      { clock, timing, random, changed: this.#changed },
      async (state, signal): Promise<WatchSession<PodWatchEvent> | undefined> => {
        const target = this.#podTarget();
        let t = this.#s.track;
        if (target && (t === undefined || t.podUid !== target.podUid)) {
          t = { ...target, last: undefined, deleted: false, resourceVersion: undefined };
          this.#s.track = t;
          state.failures = 0;
        }
        if (!target || !t || t.deleted || !isConfirmed(this.#s.view, clock.now(), timing)) {
          await this.#wait(undefined, signal);
          return undefined;
        }
        if (t.resourceVersion === undefined) {
          // The owner check's GET gives the state to start from (no GET of our own).
          await this.#wait(undefined, signal);
          return undefined;
        }
        const track = t;
        // Long watches: 5-10 minutes, and a silence past a bookmark period is a stall.
        const timeoutSeconds = timing.longWatches ? longWatchSeconds(random) : POD_WATCH_SECONDS;
        return {
          resourceVersion: track.resourceVersion!,
          timeoutSeconds,
          stallMs: timeoutSeconds * 1000 + timing.watchGraceMs,
          ...(timing.longWatches ? { silenceMs: BOOKMARK_PERIOD_MS + timing.watchGraceMs } : {}),
          start: (request) => store.watchPod({ name: track.podName, ...request }),
          onOpen: () => {
            // While the watch runs it reports what the periodic owner check would find, at
            // once: the check (a GET) waits; it comes back when the watch fails.
            this.#deferOwnerCheck(track, Infinity);
          },
          onEvent: (event) => {
            switch (event.type) {
              case 'ADDED':
              case 'MODIFIED':
              case 'DELETED':
                if (event.pod.name !== track.podName) return undefined;
                if (event.pod.uid !== track.podUid) {
                  // The name belongs to another Pod now: ours was deleted unseen.
                  track.deleted = true;
                  this.#changed.fire();
                  return 'stop';
                }
                this.#podSeen(track, event.pod, event.type === 'DELETED' ? 'deleted' : 'watched');
                return event.type === 'DELETED' ? 'stop' : undefined;
              case 'BOOKMARK':
                if (event.resourceVersion) track.resourceVersion = event.resourceVersion;
                return undefined;
            }
          },
          // Another leader: stop watching this one's Pod.
          keep: () => {
            const next = this.#podTarget();
            return !(next && next.podUid !== track.podUid);
          },
          expired: () => {
            // Too old to resume: the owner check reads the Pod afresh, now.
            track.resourceVersion = undefined;
            const o = this.#s.memory.owner;
            if (o) this.#s.memory = { ...this.#s.memory, owner: { ...o, nextCheckAt: clock.now() } };
            this.#changed.fire();
          },
          stalled: () => this.#deferOwnerCheck(track, clock.now() + timing.ownerCheckIntervalMs),
          failed: (error, wait) => {
            this.#deferOwnerCheck(track, clock.now() + timing.ownerCheckIntervalMs);
            this.#apiError('watch-pod', error, wait);
          },
          closed: () => {},
        };
      },
      signal,
    );
  }
}
