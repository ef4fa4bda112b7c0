/**
 * The election's actions: campaign (step 4), reclaim a Lease whose owner is gone (step 5),
 * the fenced takeover that keeps two leaders apart under forced deletion, and the self-fencing
 * loop (step 6) that withdraws a claim the API server has not confirmed in time. Each acts
 * through the driver's {@link Ctx}: the shared view and memory, the store and the clock.
 */
import {
  FENCED_CAMPAIGN_DELAY_MS,
  TAKEOVER_MARGIN_MS,
  backoffMs,
  campaignBlocker,
  electorStopped,
  judgeOwner,
  leaseDraft,
  takeoverAt,
  type Memory,
  type View,
} from './decisions.ts';
import type { ElectionOptions } from './election.ts';
import type { Wakeup } from './reflector.ts';
import { asApiError, type ApiError, type LeaseRecord, type Operation, type PodRecord } from './store.ts';

/** What a follower knows of the leader's Pod, from its own watch on that one Pod. */
export interface PodTrack {
  podName: string;
  podUid: string;
  /** The last state seen (the final one once deleted); undefined when never seen. */
  last: PodRecord | undefined;
  /** The object is gone (or its name now belongs to another Pod). */
  deleted: boolean;
  /** Where the watch resumes; undefined: GET the Pod first. */
  resourceVersion: string | undefined;
}

/** The election's state, shared by its loops (election.ts owns it). */
export interface ElectionState {
  view: View;
  memory: Memory;
  /** The leader's Pod as this follower's watch on it last saw it (see {@link PodTrack}). */
  track: PodTrack | undefined;
}

/** What the actions need from the driver. */
export interface Ctx {
  readonly o: ElectionOptions;
  readonly s: ElectionState;
  readonly changed: Wakeup;
  /** Republishes the verdict as of `now` (default: the clock's reading). */
  publish(now?: number): void;
  apiError(operation: Operation, err: unknown, retryInMs: number | undefined): ApiError;
  /** Waits until `until` (ms, clock time), a change of state, or abort. */
  wait(until: number | undefined, signal: AbortSignal): Promise<void>;
  /** The Pod to watch: the one the current Lease names, when it is another's. */
  podTarget(): { podName: string; podUid: string } | undefined;
  /** A state of the tracked Pod arrived. */
  podSeen(t: PodTrack, pod: PodRecord, how: 'checked' | 'watched' | 'deleted'): void;
}

// --- 4: campaign --------------------------------------------------------------------------

/** Step 4: campaigns for the Lease of the current "no Lease" view. */
export async function campaign(ctx: Ctx, signal: AbortSignal): Promise<void> {
  const { identity, store, clock, timing, random } = ctx.o;
  const generation = ctx.s.view.generation;
  const c = ctx.s.memory.campaign?.generation === generation ? ctx.s.memory.campaign : undefined;
  const failures = c?.failures ?? 0;
  const finish = (done: boolean, retry: boolean) => {
    if (ctx.s.view.generation !== generation) return; // the view moved on; decide afresh
    const nextFailures = retry ? failures + 1 : failures;
    ctx.s.memory = {
      ...ctx.s.memory,
      campaign: {
        generation,
        done,
        failures: nextFailures,
        notBefore: retry ? clock.now() + backoffMs(failures, timing, random) : clock.now(),
        ...(c?.after ? { after: c.after } : {}),
      },
    };
  };

  // 4a. Only a pod that can still run may lead: not finished, not terminating, and the
  //     pod of that name is really ours (a stale elector of a replaced pod must not win).
  let self: PodRecord | null;
  try {
    self = await store.getPod(identity.podName, signal);
  } catch (err) {
    if (signal.aborted) return;
    ctx.apiError('get-pod', err, undefined);
    ctx.o.onNote({ type: 'campaign', result: 'error', detail: 'could not read the own pod' });
    finish(false, true);
    return;
  }
  if (signal.aborted) return;
  const blocker = campaignBlocker(identity, self);
  if (blocker !== undefined) {
    ctx.o.onNote({ type: 'campaign', result: 'skipped', detail: blocker });
    finish(true, false);
    return;
  }

  // 4b. Whether the previous leader's elector is known to have stopped. If not (its Pod
  //     vanished without the kubelet confirming that: forced deletion, node cut off), the
  //     takeover is fenced: the Lease is won now, so that no other candidate wins one, but
  //     it names the moment its leader may start, once the old elector's fencing bound
  //     (counted from the Lease's disappearance, after which it could confirm nothing) has
  //     run out.
  let takeover: { at: number; why: string } | undefined;
  try {
    takeover = c?.after ? await takeoverFence(ctx, c.after, signal) : undefined;
  } catch (err) {
    if (signal.aborted) return;
    ctx.apiError('get-pod', err, undefined);
    ctx.o.onNote({
      type: 'campaign',
      result: 'error',
      detail: "could not read the previous leader's pod",
    });
    finish(false, true);
    return;
  }
  if (signal.aborted) return;
  if (takeover) {
    // A candidate that saw the old leader end takes over at once: give it the head start,
    // so that one that knows less (it started late) does not impose a needless fence. The
    // fence counts from the Lease's disappearance, so waiting here does not lengthen it.
    const until = clock.now() + FENCED_CAMPAIGN_DELAY_MS;
    while (!signal.aborted && ctx.s.view.generation === generation && clock.now() < until) {
      await ctx.wait(until, signal);
    }
    if (signal.aborted) return;
    if (ctx.s.view.generation !== generation) {
      ctx.o.onNote({ type: 'campaign', result: 'lost', detail: 'another candidate took over first' });
      return;
    }
  }

  // 4c. CREATE the Lease. 201 = won, 409 = lost; the watch reports the winner either way.
  try {
    await store.create(leaseDraft(identity, clock.now(), takeover?.at), signal);
    ctx.o.onNote({
      type: 'campaign',
      result: 'won',
      detail: takeover
        ? `created Lease ${identity.election}, leading from ${new Date(takeover.at).toISOString()} (${takeover.why})`
        : `created Lease ${identity.election}`,
    });
    finish(true, false);
  } catch (err) {
    if (signal.aborted) return;
    const error = asApiError(err);
    if (error.code === 409) {
      ctx.o.onNote({ type: 'campaign', result: 'lost', detail: 'the Lease already exists' });
      finish(true, false);
      return;
    }
    ctx.apiError('create', error, undefined);
    ctx.o.onNote({ type: 'campaign', result: 'error', detail: error.message });
    finish(false, true);
  }
}

// --- 5: reclaim -----------------------------------------------------------------------------

/** Step 5: checks the Pod a Lease names, and reclaims the Lease when it is gone or finished. */
export async function checkOwner(
  ctx: Ctx,
  lease: LeaseRecord,
  podName: string,
  podUid: string | undefined,
  signal: AbortSignal,
): Promise<void> {
  const { store, clock, timing, random } = ctx.o;
  const prevFailures = ctx.s.memory.owner?.leaseUid === lease.uid ? ctx.s.memory.owner.failures : 0;
  const schedule = (failures: number, resolvedUid: string | undefined) => {
    const wait = failures > 0 ? backoffMs(failures - 1, timing, random) : timing.ownerCheckIntervalMs;
    ctx.s.memory = {
      ...ctx.s.memory,
      owner: { leaseUid: lease.uid, nextCheckAt: clock.now() + wait, failures, resolvedUid },
    };
  };

  // 5a. Look at the Pod the Lease names.
  let pod: PodRecord | null;
  try {
    pod = await store.getPod(podName, signal);
  } catch (err) {
    if (signal.aborted) return;
    schedule(prevFailures + 1, undefined);
    ctx.apiError('get-pod', err, ctx.s.memory.owner!.nextCheckAt - clock.now());
    return;
  }
  if (signal.aborted) return;
  const judgement = judgeOwner({ podName, podUid }, pod);
  schedule(0, judgement.reclaim ? undefined : judgement.ownerUid);
  // What the Pod watch starts from (or learns from: a Pod gone before we saw how it ended).
  const target = ctx.podTarget();
  if (target) {
    let t = ctx.s.track;
    if (t === undefined || t.podUid !== target.podUid) {
      t = { ...target, last: undefined, deleted: false, resourceVersion: undefined };
      ctx.s.track = t;
    }
    if (pod !== null && pod.uid === t.podUid) {
      if (!t.deleted) ctx.podSeen(t, pod, 'checked');
    } else if (!t.deleted) {
      t.deleted = true;
      ctx.changed.fire();
    }
  }
  ctx.o.onNote({ type: 'owner-checked', podName, alive: !judgement.reclaim });
  ctx.publish();
  if (!judgement.reclaim) return;

  // 5b. Reclaim exactly the Lease version that was judged, and only if the view still
  //     shows it; the preconditions make the API server refuse anything newer.
  const current = ctx.s.view.lease;
  if (current?.uid !== lease.uid || current.resourceVersion !== lease.resourceVersion) {
    if (current?.uid === lease.uid)
      ctx.s.memory = { ...ctx.s.memory, owner: { ...ctx.s.memory.owner!, nextCheckAt: clock.now() } };
    return;
  }
  const pre = { uid: lease.uid, resourceVersion: lease.resourceVersion };
  try {
    await store.deleteLease(pre, signal);
    ctx.o.onNote({
      type: 'reclaim',
      result: 'deleted',
      reason: judgement.reason,
      detail: judgement.detail,
      lease: pre,
    });
  } catch (err) {
    if (signal.aborted) return;
    const error = asApiError(err);
    if (error.code === 409) {
      // The Lease changed since it was judged: judge the new version soon (after a
      // short backoff, in case the watch has not delivered it yet).
      schedule(prevFailures + 1, undefined);
      ctx.o.onNote({
        type: 'reclaim',
        result: 'conflict',
        reason: judgement.reason,
        detail: judgement.detail,
        lease: pre,
      });
    } else if (error.code === 404) {
      ctx.o.onNote({
        type: 'reclaim',
        result: 'gone',
        reason: judgement.reason,
        detail: judgement.detail,
        lease: pre,
      });
    } else {
      schedule(prevFailures + 1, undefined);
      ctx.apiError('delete', error, ctx.s.memory.owner!.nextCheckAt - clock.now());
      ctx.o.onNote({
        type: 'reclaim',
        result: 'error',
        reason: judgement.reason,
        detail: error.message,
        lease: pre,
      });
    }
  }
}

/**
 * Whether taking over after `after`'s Lease went must be fenced, and until when. Not when
 * the previous leader's elector is known to have stopped (the kubelet reported it: a
 * graceful deletion, a finished Pod). Fenced when it may still run: its Pod went without
 * that word (forced deletion, node cut off), and also when its Pod still runs (the Lease was
 * deleted by hand or by a tool): that elector learns of the deletion only from its own watch,
 * which may be reconnecting, and until then it claims, for up to its fencing bound (the fault
 * suite found 55 ms of two claimants when this case took over at once). The old leader itself
 * campaigns unfenced (its own Lease went) with the head start that fenced candidates give, so
 * a Lease deleted under a healthy leader normally goes back to that same leader at once.
 */
async function takeoverFence(
  ctx: Ctx,
  after: NonNullable<NonNullable<Memory['campaign']>['after']>,
  signal: AbortSignal,
): Promise<{ at: number; why: string } | undefined> {
  const { identity, store, timing, clock } = ctx.o;
  if (after.podUid === identity.podUid) return undefined; // our own Lease: we saw it go
  const fenced = (why: string) => ({
    at: after.goneAt + timing.fencingTimeoutMs + TAKEOVER_MARGIN_MS,
    why,
  });
  const known = () => {
    const t = ctx.s.track;
    return t !== undefined && after.podUid !== undefined && t.podUid === after.podUid ? t : undefined;
  };
  const stopped = () => {
    const last = known()?.last;
    return last !== undefined && electorStopped(last);
  };
  if (stopped()) return undefined;
  // Not seen stopped: read the Pod (a consistent read).
  const pod = await store.getPod(after.podName, signal);
  if (pod !== null && (after.podUid === undefined || pod.uid === after.podUid)) {
    if (electorStopped(pod)) return undefined;
    if (!pod.terminating)
      return fenced(`pod ${after.podName} still runs and its elector may not have seen its Lease go`);
  }
  // Gone (or going) without the kubelet's word yet. Our watch on it may lag the Lease's
  // watch by a moment: give it a second to deliver the Pod's last state.
  const t = known();
  if (t && !t.deleted) {
    const until = clock.now() + 1000;
    while (!signal.aborted && !t.deleted && clock.now() < until) await ctx.wait(until, signal);
    if (stopped()) return undefined;
  }
  if (t?.deleted && t.last) return fenced(`pod ${after.podName} was deleted while its elector ran`);
  return fenced(`pod ${after.podName} is gone and nothing says its elector stopped`);
}

// --- 6: self-fencing -------------------------------------------------------------------------

/** Step 6: republishes the verdict when the view grows too old or a fenced takeover's moment comes. */
export async function fenceLoop(ctx: Ctx, signal: AbortSignal): Promise<void> {
  const { clock, timing } = ctx.o;
  while (!signal.aborted) {
    // One reading of the clock for both the verdict and the next deadline: with two, the
    // bound could pass between them (a timer fires a moment early, the clock moves on), so
    // that the verdict still claimed and no deadline was left to withdraw the claim.
    const now = clock.now();
    ctx.publish(now);
    const at = ctx.s.view.confirmedAt;
    const fence = at === undefined ? undefined : at + timing.fencingTimeoutMs + 1;
    const takeover = ctx.s.view.lease ? takeoverAt(ctx.s.view.lease) : undefined;
    const deadlines = [fence, takeover === undefined ? undefined : takeover + 1].filter(
      (d): d is number => d !== undefined && d > now && d < Number.MAX_SAFE_INTEGER,
    );
    await ctx.wait(deadlines.length > 0 ? Math.min(...deadlines) : undefined, signal);
  }
}
