/**
 * The election's pure decisions: its timing, what a Lease means and whom it names, when to
 * campaign, when a Lease may be reclaimed, when a takeover must be fenced, and the verdict
 * the app sees. Values in, values out: no I/O, no clock, no logging (election.ts drives them).
 */
import {
  CONTAINER_NAME,
  LEASE_ANNOTATION_LEADER_HOSTNAME,
  LEASE_ANNOTATION_LEADER_POD,
  LEASE_ANNOTATION_LEADER_UID,
  LEASE_ANNOTATION_TAKEOVER_AT,
  LEASE_LABEL_ELECTION,
  LEASE_LABEL_MANAGED_BY,
  PROJECT,
} from '../common/constants.ts';
import type { Verdict } from './leader.ts';
import type { Identity, LeaseDraft, LeaseRecord, PodRecord } from './store.ts';

export interface Timing {
  fencingTimeoutMs: number;
  ownerCheckIntervalMs: number;
  campaignJitterMs: number;
  /** Server-side watch timeout; the view is re-confirmed at least this often. */
  watchTimeoutSeconds: number;
  /** How long past `watchTimeoutSeconds` a silent watch is trusted before it is abandoned. */
  watchGraceMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /**
   * Long watches (see {@link LONG_WATCH_MIN_FENCING_MS}): each watch lasts 5-10 minutes
   * (jittered, {@link longWatchSeconds}) and is abandoned once silent for a bookmark period
   * plus `watchGraceMs`; two watches on the Lease, half a bookmark period apart, confirm the
   * view about every 30 s. Off: one Lease watch of `watchTimeoutSeconds` at a time, and the
   * leader's Pod watch lasts {@link POD_WATCH_SECONDS}.
   */
  longWatches: boolean;
}

/**
 * How often kube-apiserver sends a bookmark on a watch that asked for them: about once a
 * minute, and 2 s before the watch's timeout (k8s.io/apiserver storage/cacher,
 * `defaultBookmarkFrequency`, `nextBookmarkTime`). Each bookmark confirms the view.
 */
export const BOOKMARK_PERIOD_MS = 60_000;

/**
 * The smallest fencing bound for long watches. Two Lease watches half a bookmark period apart
 * confirm the view every ~30 s (up to ~32 s with the server's bookmark buckets): a bound well
 * above that never fences a healthy elector. Under it, one short watch at a time, as before.
 */
export const LONG_WATCH_MIN_FENCING_MS = 45_000;

/**
 * A long watch's server-side timeout: 5 to 10 minutes (jittered, so that many electors do not
 * reconnect together), plus 2 s so that the server's bookmark 2 s before the timeout falls on
 * its minute bookmark (one bookmark, not two close together).
 */
export function longWatchSeconds(random: () => number): number {
  return 60 * (5 + Math.min(5, Math.floor(random() * 6))) + 2;
}

/**
 * Derives the protocol's timing from the configured bounds. With long watches, bookmarks
 * confirm the view; otherwise a watch lasts a third of the fencing bound, so a lost watch
 * leaves two more attempts before the elector fences itself.
 */
export function timingFor(opts: {
  fencingTimeoutMs: number;
  ownerCheckIntervalMs: number;
  campaignJitterMs: number;
  /** Default: on when the fencing bound is at least {@link LONG_WATCH_MIN_FENCING_MS}. */
  longWatches?: boolean;
}): Timing {
  const { longWatches, ...bounds } = opts;
  const watchTimeoutSeconds = Math.max(1, Math.floor(opts.fencingTimeoutMs / 3000));
  return {
    ...bounds,
    longWatches: longWatches ?? opts.fencingTimeoutMs >= LONG_WATCH_MIN_FENCING_MS,
    watchTimeoutSeconds,
    watchGraceMs: Math.min(5000, Math.max(1000, Math.floor(opts.fencingTimeoutMs / 6))),
    backoffInitialMs: 200,
    backoffMaxMs: Math.min(8000, Math.max(1000, Math.floor(opts.fencingTimeoutMs / 6))),
  };
}

/**
 * Orders two resourceVersions when both are etcd revisions (decimal integers, which is what
 * kube-apiserver serves; client-go's `CompareResourceVersion` reads them the same way);
 * undefined when either is not one.
 */
export function compareResourceVersions(a: string, b: string): number | undefined {
  const revision = /^[1-9][0-9]*$/;
  if (!revision.test(a) || !revision.test(b)) return undefined;
  if (a.length !== b.length) return a.length < b.length ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Whether a Lease event or bookmark at `resourceVersion` is news to a view current at
 * `viewRv`, on watch lane `lane` (long watches: the other lane may have delivered it already;
 * `orSame` for a bookmark, which confirms a view at its own version). Not comparable (not an
 * etcd revision): lane 0 alone is believed, as with one watch.
 */
export function isNews(
  longWatches: boolean,
  viewRv: string | undefined,
  resourceVersion: string,
  lane: 0 | 1,
  orSame: boolean,
): boolean {
  if (!longWatches || viewRv === undefined) return true;
  const c = compareResourceVersions(resourceVersion, viewRv);
  if (c === undefined) return lane === 0;
  return orSame ? c >= 0 : c > 0;
}

/** Exponential backoff with jitter (50-100% of the step), capped. */
export function backoffMs(failures: number, timing: Timing, random: () => number): number {
  const step = Math.min(timing.backoffMaxMs, timing.backoffInitialMs * 2 ** Math.min(failures, 20));
  return Math.round(step * (0.5 + random() / 2));
}

/** Whom a Lease names, and how sure we can be. */
export type Holder =
  | {
      /** Owned by a Pod (our Leases and NAIS's): the owner UID is the leader's identity. */
      kind: 'pod';
      name: string;
      podName: string;
      podUid: string;
      format: 'lifelease' | 'nais';
    }
  | {
      /** Our Lease whose ownerReference is gone (`--cascade=orphan`): judge by the pod it names. */
      kind: 'orphan';
      name: string;
      podName: string;
      /** From our annotation; undefined when someone removed it (resolved by the owner check). */
      podUid: string | undefined;
    }
  | {
      /**
       * A lock someone made by hand (or any other writer): a `holderIdentity`, but neither an
       * owner nor our labels. Followed by name, never reclaimed: nothing says which Pod it
       * means or whether that Pod is gone, and deleting a lock a person set is not ours to do.
       */
      kind: 'held';
      name: string;
    }
  | { kind: 'foreign'; reason: string };

/** What a Lease of the election's name means. */
export function classifyLease(lease: LeaseRecord): Holder {
  if (lease.leaseDurationSeconds !== undefined || lease.renewTime !== undefined) {
    return {
      kind: 'foreign',
      reason:
        'the Lease has leaseDurationSeconds/renewTime: it is a renewed lock (e.g. client-go leader election), not a lease-for-life election Lease',
    };
  }
  const ours = lease.labels[LEASE_LABEL_MANAGED_BY] === PROJECT;
  const holderIdentity = lease.holderIdentity ?? '';
  const annotatedName = lease.annotations[LEASE_ANNOTATION_LEADER_HOSTNAME] ?? '';
  const podOwners = lease.owners.filter(
    (o) => o.kind === 'Pod' && (o.apiVersion === 'v1' || o.apiVersion === ''),
  );
  if (podOwners.length > 1) {
    return {
      kind: 'foreign',
      reason: 'the Lease is owned by several Pods; an election Lease has exactly one',
    };
  }
  const owner = podOwners[0];
  if (owner) {
    return {
      kind: 'pod',
      name: annotatedName || holderIdentity || owner.name,
      podName: owner.name,
      podUid: owner.uid,
      format: ours ? 'lifelease' : 'nais',
    };
  }
  if (lease.owners.length > 0) {
    const o = lease.owners[0]!;
    return { kind: 'foreign', reason: `the Lease is owned by ${o.kind} ${o.name}, not by a Pod` };
  }
  if (ours) {
    const podName = lease.annotations[LEASE_ANNOTATION_LEADER_POD] || holderIdentity;
    const podUid = lease.annotations[LEASE_ANNOTATION_LEADER_UID] || undefined;
    if (podName) return { kind: 'orphan', name: annotatedName || holderIdentity || podName, podName, podUid };
  } else if (holderIdentity) {
    // NAIS's own Leases always carry an owner; without one this is a hand-made lock (or a NAIS
    // Lease orphaned by hand, which looks the same): follow it, never delete it.
    return { kind: 'held', name: holderIdentity };
  }
  return { kind: 'foreign', reason: 'the Lease has neither an owner Pod nor a holderIdentity' };
}

/** The Lease this elector creates when it campaigns; `takeoverAtMs` for a fenced takeover. */
export function leaseDraft(identity: Identity, nowMs: number, takeoverAtMs?: number): LeaseDraft {
  const takeover =
    takeoverAtMs === undefined
      ? {}
      : { [LEASE_ANNOTATION_TAKEOVER_AT]: new Date(Math.ceil(takeoverAtMs)).toISOString() };
  return {
    name: identity.election,
    namespace: identity.namespace,
    holderIdentity: identity.hostname,
    acquireTimeMs: nowMs,
    owner: { apiVersion: 'v1', kind: 'Pod', name: identity.podName, uid: identity.podUid },
    labels: { [LEASE_LABEL_MANAGED_BY]: PROJECT, [LEASE_LABEL_ELECTION]: identity.election },
    annotations: {
      [LEASE_ANNOTATION_LEADER_HOSTNAME]: identity.hostname,
      [LEASE_ANNOTATION_LEADER_POD]: identity.podName,
      [LEASE_ANNOTATION_LEADER_UID]: identity.podUid,
      ...takeover,
    },
  };
}

/** When a fenced takeover's leader may start to lead (ms), or undefined for an ordinary Lease. */
export function takeoverAt(lease: LeaseRecord): number | undefined {
  const text = lease.annotations[LEASE_ANNOTATION_TAKEOVER_AT];
  if (text === undefined) return undefined;
  const ms = Date.parse(text);
  // Unreadable: the safe reading is "not yet", for as long as any fencing bound can last.
  return Number.isNaN(ms) ? Number.MAX_SAFE_INTEGER : ms;
}

/**
 * How long one watch on the leader's Pod lasts. It is not what confirms the view (the Lease
 * watch is), so it can be long: a stalled one only costs knowledge of how the Pod ended,
 * which makes a takeover fenced (slower), never unsafe.
 */
export const POD_WATCH_SECONDS = 300;

/** How long a fenced campaign waits for a candidate that can take over at once. */
export const FENCED_CAMPAIGN_DELAY_MS = 1000;

/** Extra wait of a fenced takeover beyond the fencing bound: timers of a loaded node run late. */
export const TAKEOVER_MARGIN_MS = 2000;

/**
 * How often the election notes that its event loop runs (the beat), while it leads or may
 * lead (a follower that reads old data after a pause only follows an old leader for a
 * moment). A watch event or bookmark read more than two beats after the last one came after
 * a pause of the whole process that handed it over before any timer ran (a CPU starved for
 * seconds, a paused VM; after SIGSTOP/SIGCONT or a cgroup freezer, Linux fails the event
 * loop's epoll_wait with EINTR and the timers run first): it may have waited in the socket
 * since before the pause, so it confirms the view as of one beat before the last beat, not
 * as of the moment it is read. Otherwise a leader frozen past its bound would, on waking,
 * count a bookmark sent before the pause as fresh and claim until the Lease's deletion,
 * queued behind it, is read. A beat of 250 ms errs by at most 500 ms, well inside the
 * takeover margin.
 */
export const LOOP_BEAT_MS = 250;

/**
 * Whether the kubelet has confirmed that this Pod's elector stopped for good: the Pod reached
 * a final phase (all its containers stopped), or it was being deleted and its elector
 * container is reported terminated (a terminating Pod's containers are not restarted).
 * A Pod object deleted while this is false (forced deletion, its node cut off) may still
 * run an elector that believes it leads, until its own fencing bound runs out.
 */
export function electorStopped(pod: PodRecord): boolean {
  if (pod.phase === 'Succeeded' || pod.phase === 'Failed') return true;
  return pod.terminating && pod.elector === 'terminated';
}

/** The elector container's state from a Pod's status, as {@link PodRecord.elector}. */
export function electorContainerState(
  statuses: readonly {
    name?: string;
    state?: { running?: unknown; waiting?: unknown; terminated?: unknown };
  }[],
): PodRecord['elector'] {
  const s = statuses.find((c) => c.name === CONTAINER_NAME)?.state;
  if (!s) return undefined;
  if (s.running) return 'running';
  if (s.terminated) return 'terminated';
  if (s.waiting) return 'waiting';
  return undefined;
}

export type ReclaimReason = 'owner-missing' | 'owner-replaced' | 'owner-finished';

export type OwnerJudgement =
  | { reclaim: false; ownerUid: string; reason: 'owner-alive' }
  | { reclaim: true; reason: ReclaimReason; detail: string };

/**
 * Whether the Pod a Lease names may still run. Reclaim only when it certainly cannot: the
 * Pod is gone, a different Pod has its name, or it reached a final phase. A terminating
 * Pod may still run, so it keeps the Lease until its object is gone.
 */
export function judgeOwner(
  holder: { podName: string; podUid: string | undefined },
  pod: PodRecord | null,
): OwnerJudgement {
  if (pod === null)
    return { reclaim: true, reason: 'owner-missing', detail: `pod ${holder.podName} does not exist` };
  if (holder.podUid !== undefined && pod.uid !== holder.podUid) {
    return {
      reclaim: true,
      reason: 'owner-replaced',
      detail: `pod ${holder.podName} is now a different pod (uid ${pod.uid}, the Lease names ${holder.podUid})`,
    };
  }
  if (pod.phase === 'Succeeded' || pod.phase === 'Failed') {
    return { reclaim: true, reason: 'owner-finished', detail: `pod ${holder.podName} is ${pod.phase}` };
  }
  return { reclaim: false, ownerUid: pod.uid, reason: 'owner-alive' };
}

/** Why the own pod may not campaign, or undefined when it may. */
export function campaignBlocker(identity: Identity, self: PodRecord | null): string | undefined {
  if (self === null) return `own pod ${identity.podName} does not exist`;
  if (self.uid !== identity.podUid)
    return `pod ${identity.podName} has uid ${self.uid}, not this elector's ${identity.podUid}`;
  if (self.terminating) return `own pod ${identity.podName} is terminating`;
  if (self.phase === 'Succeeded' || self.phase === 'Failed')
    return `own pod ${identity.podName} is ${self.phase}`;
  return undefined;
}

/** What the elector knows about the Lease, and since when. */
export interface View {
  /** The first list succeeded. */
  listed: boolean;
  lease: LeaseRecord | null;
  /** Increases whenever the Lease appears, disappears or changes. */
  generation: number;
  /** When the API server last confirmed this view (ms); undefined before the first list. */
  confirmedAt: number | undefined;
}

/** What the election remembers between actions. */
export interface Memory {
  campaign:
    | {
        /** The view generation (a "no Lease" view) this campaign is for. */
        generation: number;
        notBefore: number;
        /** 201 or 409 came back, or the own pod may not campaign: wait for the next "no Lease". */
        done: boolean;
        failures: number;
        /** The Lease whose disappearance this campaign follows (none at start-up), and when it went. */
        after?:
          { lease: LeaseRecord; podName: string; podUid: string | undefined; goneAt: number } | undefined;
      }
    | undefined;
  owner:
    | {
        leaseUid: string;
        nextCheckAt: number;
        failures: number;
        /** The owner Pod's UID as found by the last check (for orphaned NAIS Leases). */
        resolvedUid: string | undefined;
      }
    | undefined;
}

export type Action =
  | { type: 'wait'; until: number | undefined; why: string }
  | { type: 'campaign' }
  | { type: 'check-owner'; lease: LeaseRecord; podName: string; podUid: string | undefined };

/** Whether the view is recent enough to act on and to claim anything from. */
export function isConfirmed(view: View, now: number, timing: Timing): boolean {
  return view.listed && view.confirmedAt !== undefined && now - view.confirmedAt <= timing.fencingTimeoutMs;
}

/** The next thing to do, given what is known. Pure. */
export function decideAction(
  view: View,
  memory: Memory,
  identity: Identity,
  timing: Timing,
  now: number,
): Action {
  if (!isConfirmed(view, now, timing)) return { type: 'wait', until: undefined, why: 'unconfirmed' };
  const lease = view.lease;
  if (lease === null) {
    const c = memory.campaign;
    if (c === undefined || c.generation !== view.generation) return { type: 'campaign' };
    if (c.done) return { type: 'wait', until: undefined, why: 'campaigned' };
    if (now < c.notBefore) return { type: 'wait', until: c.notBefore, why: 'campaign-jitter' };
    return { type: 'campaign' };
  }
  const holder = classifyLease(lease);
  if (holder.kind === 'foreign') return { type: 'wait', until: undefined, why: 'foreign-lease' };
  if (holder.kind === 'held') return { type: 'wait', until: undefined, why: 'held-lock' };
  if (holder.podUid === identity.podUid) return { type: 'wait', until: undefined, why: 'leading' };
  const o = memory.owner;
  if (o === undefined || o.leaseUid !== lease.uid || now >= o.nextCheckAt) {
    return { type: 'check-owner', lease, podName: holder.podName, podUid: holder.podUid };
  }
  return { type: 'wait', until: o.nextCheckAt, why: 'owner-check-interval' };
}

/** The verdict the app sees, given what is known. Pure. */
export function decideVerdict(
  view: View,
  memory: Memory,
  identity: Identity,
  timing: Timing,
  now: number,
): Verdict {
  const none = (state: Verdict['state'], reason: string): Verdict => ({
    state,
    name: '',
    pod: '',
    uid: '',
    reason,
  });
  if (!view.listed || view.confirmedAt === undefined) return none('unknown', 'starting');
  if (now - view.confirmedAt > timing.fencingTimeoutMs) return none('unknown', 'unconfirmed');
  const lease = view.lease;
  if (lease === null) return none('follower', 'no-lease');
  const holder = classifyLease(lease);
  if (holder.kind === 'foreign') return none('unknown', 'foreign-lease');
  // A fenced takeover: the previous leader may still believe it leads until this moment.
  const takeover = takeoverAt(lease);
  if (takeover !== undefined && now < takeover) return none('follower', 'takeover-wait');
  if (holder.kind === 'held') {
    // Only a name: this pod leads when the lock names its hostname (what a NAIS client
    // concludes from the same Lease), and follows it otherwise.
    if (holder.name === identity.hostname) {
      return {
        state: 'leader',
        name: identity.hostname,
        pod: identity.podName,
        uid: identity.podUid,
        reason: 'held-lock',
      };
    }
    return { state: 'follower', name: holder.name, pod: '', uid: '', reason: 'held-lock' };
  }
  let uid = holder.podUid;
  if (uid === undefined && memory.owner?.leaseUid === lease.uid) uid = memory.owner.resolvedUid;
  if (uid === undefined) return none('unknown', 'owner-pending');
  if (uid === identity.podUid) {
    return { state: 'leader', name: identity.hostname, pod: identity.podName, uid, reason: 'leader' };
  }
  // Another pod leads under the own hostname (a StatefulSet pod recreated with the same name
  // while its predecessor's Lease is still there): an app comparing names would think it
  // leads. Claim nothing until the Lease is reclaimed or collected.
  if (holder.name === identity.hostname) return none('unknown', 'name-collision');
  return { state: 'follower', name: holder.name, pod: holder.podName, uid, reason: 'follower' };
}
