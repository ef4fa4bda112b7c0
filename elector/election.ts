/**
 * Lease-for-life leader election on one `coordination.k8s.io/v1` Lease.
 *
 * The first pod to CREATE the Lease leads until its Pod is gone; nothing is ever renewed.
 * This module holds the protocol: pure decisions (what a Lease means, whom it names, when to
 * campaign, when a Lease may be reclaimed, when to stop claiming anything) and a driver,
 * {@link Election}, that carries them out through an injected {@link ElectionStore} (the
 * Kubernetes API, see kube.ts) and an injected {@link Clock}. No I/O, no logging: the driver
 * reports {@link Note}s and {@link Verdict}s, and main.ts turns them into logs and metrics.
 *
 * The protocol, step by step (the numbers appear in the code below):
 *  1. List the Lease by name (field selector) to learn its state and a resourceVersion.
 *  2. Watch that one Lease from the resourceVersion; every event, bookmark and successful
 *     (re)start of the watch confirms the view. The server ends the watch every
 *     `watchTimeoutSeconds`, so the view is re-confirmed at least that often.
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

// ---------------------------------------------------------------------------------------
// Data the core works on (the adapter translates API objects into these).

/** Who this elector is and which election it takes part in. */
export interface Identity {
  election: string;
  namespace: string;
  podName: string;
  podUid: string;
  hostname: string;
}

export interface OwnerRef {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
}

/** The parts of a Lease the election reads. */
export interface LeaseRecord {
  name: string;
  uid: string;
  resourceVersion: string;
  holderIdentity: string | undefined;
  leaseDurationSeconds: number | undefined;
  renewTime: string | undefined;
  owners: OwnerRef[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** The parts of a Pod the election reads. */
export interface PodRecord {
  name: string;
  uid: string;
  resourceVersion: string;
  phase: string | undefined;
  /** metadata.deletionTimestamp is set: the pod is shutting down. */
  terminating: boolean;
  /**
   * The elector container's state as the kubelet last reported it (a native sidecar's
   * init container status, or a classic container's); undefined when not reported.
   */
  elector: 'running' | 'waiting' | 'terminated' | undefined;
}

/** The Lease a campaign creates, as plain data (the adapter builds the API object). */
export interface LeaseDraft {
  name: string;
  namespace: string;
  holderIdentity: string;
  acquireTimeMs: number;
  owner: OwnerRef;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export type WatchEvent =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; lease: LeaseRecord }
  | { type: 'BOOKMARK'; resourceVersion: string }
  | { type: 'ERROR'; code: number; reason: string; message: string };

export type PodWatchEvent =
  | { type: 'ADDED' | 'MODIFIED' | 'DELETED'; pod: PodRecord }
  | { type: 'BOOKMARK'; resourceVersion: string }
  | { type: 'ERROR'; code: number; reason: string; message: string };

export type Operation = 'list' | 'watch' | 'create' | 'get-pod' | 'watch-pod' | 'delete';

/** An error from the API, by HTTP status; `code` 0 means no response (network, timeout). */
export class ApiError extends Error {
  readonly code: number;
  /** Kubernetes Status reason (`AlreadyExists`, `Conflict`, `Expired`, ...) or ''. */
  readonly reason: string;
  constructor(message: string, code: number, reason = '') {
    super(message);
    this.name = 'ApiError';
    this.code = code;
    this.reason = reason;
  }
}

/** Any thrown value as an ApiError (code 0 when it did not come from the API). */
export function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(err instanceof Error ? err.message : String(err), 0);
}

/**
 * The Kubernetes API as the election needs it, for one Lease in one namespace. Every method
 * rejects with an {@link ApiError}. Implemented by kube.ts; faked in unit tests.
 */
export interface ElectionStore {
  /** LIST with `fieldSelector=metadata.name=<election>`: the Lease or null, and the list's resourceVersion. */
  list(signal: AbortSignal): Promise<{ lease: LeaseRecord | null; resourceVersion: string }>;
  /**
   * WATCH the Lease from `resourceVersion`. Calls `onOpen` once the server accepted the
   * watch, `onEvent` per event; resolves when the stream ends, rejects when it fails.
   */
  watch(request: {
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: WatchEvent) => void;
  }): Promise<void>;
  /** CREATE the Lease; rejects with code 409 when it already exists. */
  create(draft: LeaseDraft, signal: AbortSignal): Promise<LeaseRecord>;
  /** GET a Pod in the election's namespace; null when it does not exist (404). */
  getPod(name: string, signal: AbortSignal): Promise<PodRecord | null>;
  /**
   * WATCH one Pod (`fieldSelector=metadata.name=<name>`) from `resourceVersion`: the leader's,
   * so that its last state before deletion (did the kubelet stop its elector?) is known.
   */
  watchPod(request: {
    name: string;
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: PodWatchEvent) => void;
  }): Promise<void>;
  /** DELETE the Lease only if it still has this UID and resourceVersion (409 otherwise). */
  deleteLease(preconditions: { uid: string; resourceVersion: string }, signal: AbortSignal): Promise<void>;
}

/** Time, injected so tests can drive it. */
export interface Clock {
  now(): number;
  /** Calls `fn` once after `ms`, unless cancelled. */
  setTimer(ms: number, fn: () => void): { cancel(): void };
}

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
}

/**
 * Derives the protocol's timing from the configured bounds. A watch lasts a third of the
 * fencing bound, so a lost watch leaves two more attempts before the elector fences itself.
 */
export function timingFor(opts: {
  fencingTimeoutMs: number;
  ownerCheckIntervalMs: number;
  campaignJitterMs: number;
}): Timing {
  const watchTimeoutSeconds = Math.max(1, Math.floor(opts.fencingTimeoutMs / 3000));
  return {
    ...opts,
    watchTimeoutSeconds,
    watchGraceMs: Math.min(5000, Math.max(1000, Math.floor(opts.fencingTimeoutMs / 6))),
    backoffInitialMs: 200,
    backoffMaxMs: Math.min(8000, Math.max(1000, Math.floor(opts.fencingTimeoutMs / 6))),
  };
}

/** Exponential backoff with jitter (50-100% of the step), capped. */
export function backoffMs(failures: number, timing: Timing, random: () => number): number {
  const step = Math.min(timing.backoffMaxMs, timing.backoffInitialMs * 2 ** Math.min(failures, 20));
  return Math.round(step * (0.5 + random() / 2));
}

// ---------------------------------------------------------------------------------------
// Pure decisions.

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

/** The longest delay setTimeout keeps (2^31-1 ms); Node fires a longer one after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

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

/** What a follower knows of the leader's Pod, from its own watch on that one Pod. */
interface PodTrack {
  podName: string;
  podUid: string;
  /** The last state seen (the final one once deleted); undefined when never seen. */
  last: PodRecord | undefined;
  /** The object is gone (or its name now belongs to another Pod). */
  deleted: boolean;
  /** Where the watch resumes; undefined: GET the Pod first. */
  resourceVersion: string | undefined;
}

/** Resolves all current waiters at once; a new wait starts a new round. */
class Wakeup {
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

/**
 * Runs the election until its signal aborts. Four loops share one view: the sync loop
 * (list + watch) is the only writer of the view; the act loop campaigns and reclaims; the
 * fence loop republishes the verdict when the view grows too old or a fenced takeover's
 * moment comes; the pod loop watches the leader's one Pod, so that its last state before it
 * vanished is known.
 */
export class Election {
  readonly #o: ElectionOptions;
  #view: View = { listed: false, lease: null, generation: 0, confirmedAt: undefined };
  #memory: Memory = { campaign: undefined, owner: undefined };
  #verdict: Verdict = { state: 'unknown', name: '', pod: '', uid: '', reason: 'starting' };
  #changed = new Wakeup();
  /** The leader's Pod as this follower's watch on it last saw it (see {@link PodTrack}). */
  #track: PodTrack | undefined;

  constructor(options: ElectionOptions) {
    this.#o = options;
  }

  /** The current verdict (as last published). */
  get verdict(): Verdict {
    return this.#verdict;
  }

  /** Milliseconds since the API server last confirmed the view; undefined before that. */
  confirmationAgeMs(): number | undefined {
    const at = this.#view.confirmedAt;
    return at === undefined ? undefined : Math.max(0, this.#o.clock.now() - at);
  }

  /** A copy of the current view, for diagnostics and tests. */
  get view(): Readonly<View> {
    return { ...this.#view };
  }

  /** Runs until `signal` aborts; never rejects because of the API. */
  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.#changed.fire();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.all([
        this.#syncLoop(signal),
        this.#actLoop(signal),
        this.#fenceLoop(signal),
        this.#podLoop(signal),
      ]);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  // --- view -----------------------------------------------------------------------------

  #observe(lease: LeaseRecord | null, at: number): void {
    const prev = this.#view.lease;
    const first = !this.#view.listed;
    const same =
      prev === lease ||
      (prev !== null &&
        lease !== null &&
        prev.uid === lease.uid &&
        prev.resourceVersion === lease.resourceVersion);
    if (first || !same) {
      this.#view = { ...this.#view, lease, generation: this.#view.generation + 1 };
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
                  (this.#memory.owner?.leaseUid === prev!.uid ? this.#memory.owner.resolvedUid : undefined),
                // Now, not `at` (a list's start): the deletion happened before we saw it.
                goneAt: this.#o.clock.now(),
              }
            : undefined;
        this.#memory = {
          ...this.#memory,
          campaign: {
            generation: this.#view.generation,
            notBefore: this.#o.clock.now() + jitter,
            done: false,
            failures: 0,
            ...(after ? { after } : {}),
          },
        };
      }
    }
    this.#view = { ...this.#view, listed: true };
    this.#confirm(at);
  }

  #confirm(at: number): void {
    const prev = this.#view.confirmedAt;
    if (prev === undefined || at > prev) this.#view = { ...this.#view, confirmedAt: at };
    this.#publish();
    this.#changed.fire();
  }

  #publish(): void {
    const { identity, timing, clock } = this.#o;
    const next = decideVerdict(this.#view, this.#memory, identity, timing, clock.now());
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

  // --- waiting --------------------------------------------------------------------------

  /** Waits until `until` (ms, clock time), a view change, or abort. */
  async #wait(until: number | undefined, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    const changed = this.#changed.wait();
    // MAX_SAFE_INTEGER stands for "never" (an owner check the Pod watch made needless, an
    // unreadable takeover time): wait for a change only.
    if (until === undefined || until >= Number.MAX_SAFE_INTEGER) {
      await changed;
      return;
    }
    // Node fires a longer timer after 1 ms: wait at most the longest timer, then look again.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, until - this.#o.clock.now()));
    let timer: { cancel(): void } | undefined;
    const elapsed = new Promise<void>((resolve) => (timer = this.#o.clock.setTimer(delay, resolve)));
    try {
      await Promise.race([changed, elapsed]);
    } finally {
      timer?.cancel();
    }
  }

  /** Sleeps `ms` unless aborted first. */
  async #sleep(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    let timer: { cancel(): void } | undefined;
    let onAbort: (() => void) | undefined;
    await new Promise<void>((resolve) => {
      timer = this.#o.clock.setTimer(ms, resolve);
      onAbort = resolve;
      signal.addEventListener('abort', onAbort, { once: true });
    });
    timer?.cancel();
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }

  #apiError(operation: Operation, err: unknown, retryInMs: number | undefined): ApiError {
    const error = asApiError(err);
    this.#o.onNote({ type: 'api-error', operation, error, retryInMs });
    return error;
  }

  // --- 1-3: list and watch ----------------------------------------------------------------

  async #syncLoop(signal: AbortSignal): Promise<void> {
    const { store, clock, timing, random } = this.#o;
    let resourceVersion: string | undefined;
    let failures = 0;
    while (!signal.aborted) {
      // A view that has gone unconfirmed (the API server was out of reach past the fencing
      // bound) is not resumed: a watch from its old resourceVersion opens before it replays
      // what was missed, and confirming the old view at that moment would have this elector
      // claim, for a moment, a Lease that was deleted and won by another pod meanwhile.
      if (resourceVersion !== undefined && !isConfirmed(this.#view, clock.now(), timing)) {
        resourceVersion = undefined;
      }
      // 1. List the Lease by name: its state, and a resourceVersion to watch from.
      if (resourceVersion === undefined) {
        const startedAt = clock.now();
        try {
          const listed = await store.list(signal);
          if (signal.aborted) return;
          failures = 0;
          resourceVersion = listed.resourceVersion;
          this.#o.onNote({ type: 'listed', lease: listed.lease });
          this.#observe(listed.lease, startedAt);
        } catch (err) {
          if (signal.aborted) return;
          const wait = backoffMs(failures++, timing, random);
          this.#apiError('list', err, wait);
          await this.#sleep(wait, signal);
          continue;
        }
      }

      // 2. Watch the Lease from resourceVersion. The server ends the watch after
      //    timeoutSeconds; a watch silent for longer than that (plus grace) is abandoned,
      //    since a half-open connection would otherwise hide a partition forever.
      const startedAt = clock.now();
      const abandon = new AbortController();
      let opened = false;
      let stalled = false;
      let expired = false;
      let failure: ApiError | undefined;
      const stallTimer = clock.setTimer(timing.watchTimeoutSeconds * 1000 + timing.watchGraceMs, () => {
        stalled = true;
        abandon.abort();
      });
      try {
        await store.watch({
          resourceVersion,
          timeoutSeconds: timing.watchTimeoutSeconds,
          signal: AbortSignal.any([signal, abandon.signal]),
          onOpen: () => {
            opened = true;
            failures = 0;
            this.#confirm(startedAt);
          },
          onEvent: (event) => {
            if (signal.aborted || stalled) return;
            switch (event.type) {
              case 'ADDED':
              case 'MODIFIED':
                if (event.lease.name !== this.#o.identity.election) return;
                resourceVersion = event.lease.resourceVersion;
                this.#observe(event.lease, clock.now());
                return;
              case 'DELETED':
                if (event.lease.name !== this.#o.identity.election) return;
                resourceVersion = event.lease.resourceVersion;
                this.#observe(null, clock.now());
                return;
              case 'BOOKMARK':
                if (event.resourceVersion) resourceVersion = event.resourceVersion;
                this.#confirm(clock.now());
                return;
              case 'ERROR':
                if (event.code === 410) expired = true;
                else failure ??= new ApiError(event.message || event.reason, event.code, event.reason);
                return;
            }
          },
        });
      } catch (err) {
        if (!stalled) failure ??= asApiError(err);
      } finally {
        stallTimer.cancel();
      }
      if (signal.aborted) return;

      // 3. Resume without a gap: from the last resourceVersion seen, or by listing again
      //    when the server no longer has it (410 Expired/Gone).
      if (expired || failure?.code === 410) {
        this.#o.onNote({ type: 'watch-restart', reason: 'expired' });
        resourceVersion = undefined;
        continue;
      }
      if (stalled) {
        this.#o.onNote({ type: 'watch-restart', reason: 'stalled' });
        continue;
      }
      if (failure) {
        const wait = backoffMs(failures++, timing, random);
        this.#apiError('watch', failure, wait);
        this.#o.onNote({ type: 'watch-restart', reason: 'error' });
        await this.#sleep(wait, signal);
        continue;
      }
      this.#o.onNote({ type: 'watch-restart', reason: 'closed' });
      if (!opened || clock.now() - startedAt < 1000) {
        // A stream that closes at once, again and again, must not spin.
        await this.#sleep(backoffMs(failures++, timing, random), signal);
      }
    }
  }

  // --- 4-5: campaign and reclaim -----------------------------------------------------------

  async #actLoop(signal: AbortSignal): Promise<void> {
    const { identity, timing, clock } = this.#o;
    while (!signal.aborted) {
      const action = decideAction(this.#view, this.#memory, identity, timing, clock.now());
      switch (action.type) {
        case 'wait':
          await this.#wait(action.until, signal);
          break;
        case 'campaign':
          await this.#campaign(signal);
          break;
        case 'check-owner':
          await this.#checkOwner(action.lease, action.podName, action.podUid, signal);
          break;
      }
    }
  }

  async #campaign(signal: AbortSignal): Promise<void> {
    const { identity, store, clock, timing, random } = this.#o;
    const generation = this.#view.generation;
    const c = this.#memory.campaign?.generation === generation ? this.#memory.campaign : undefined;
    const failures = c?.failures ?? 0;
    const finish = (done: boolean, retry: boolean) => {
      if (this.#view.generation !== generation) return; // the view moved on; decide afresh
      const nextFailures = retry ? failures + 1 : failures;
      this.#memory = {
        ...this.#memory,
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
      this.#apiError('get-pod', err, undefined);
      this.#o.onNote({ type: 'campaign', result: 'error', detail: 'could not read the own pod' });
      finish(false, true);
      return;
    }
    if (signal.aborted) return;
    const blocker = campaignBlocker(identity, self);
    if (blocker !== undefined) {
      this.#o.onNote({ type: 'campaign', result: 'skipped', detail: blocker });
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
      takeover = c?.after ? await this.#takeoverFence(c.after, signal) : undefined;
    } catch (err) {
      if (signal.aborted) return;
      this.#apiError('get-pod', err, undefined);
      this.#o.onNote({
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
      while (!signal.aborted && this.#view.generation === generation && clock.now() < until) {
        await this.#wait(until, signal);
      }
      if (signal.aborted) return;
      if (this.#view.generation !== generation) {
        this.#o.onNote({ type: 'campaign', result: 'lost', detail: 'another candidate took over first' });
        return;
      }
    }

    // 4c. CREATE the Lease. 201 = won, 409 = lost; the watch reports the winner either way.
    try {
      await store.create(leaseDraft(identity, clock.now(), takeover?.at), signal);
      this.#o.onNote({
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
        this.#o.onNote({ type: 'campaign', result: 'lost', detail: 'the Lease already exists' });
        finish(true, false);
        return;
      }
      this.#apiError('create', error, undefined);
      this.#o.onNote({ type: 'campaign', result: 'error', detail: error.message });
      finish(false, true);
    }
  }

  async #checkOwner(
    lease: LeaseRecord,
    podName: string,
    podUid: string | undefined,
    signal: AbortSignal,
  ): Promise<void> {
    const { store, clock, timing, random } = this.#o;
    const prevFailures = this.#memory.owner?.leaseUid === lease.uid ? this.#memory.owner.failures : 0;
    const schedule = (failures: number, resolvedUid: string | undefined) => {
      const wait = failures > 0 ? backoffMs(failures - 1, timing, random) : timing.ownerCheckIntervalMs;
      this.#memory = {
        ...this.#memory,
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
      this.#apiError('get-pod', err, this.#memory.owner!.nextCheckAt - clock.now());
      return;
    }
    if (signal.aborted) return;
    const judgement = judgeOwner({ podName, podUid }, pod);
    schedule(0, judgement.reclaim ? undefined : judgement.ownerUid);
    // What the Pod watch starts from (or learns from: a Pod gone before we saw how it ended).
    const target = this.#podTarget();
    if (target) {
      let t = this.#track;
      if (t === undefined || t.podUid !== target.podUid) {
        t = { ...target, last: undefined, deleted: false, resourceVersion: undefined };
        this.#track = t;
      }
      if (pod !== null && pod.uid === t.podUid) {
        if (!t.deleted) this.#podSeen(t, pod, 'checked');
      } else if (!t.deleted) {
        t.deleted = true;
        this.#changed.fire();
      }
    }
    this.#o.onNote({ type: 'owner-checked', podName, alive: !judgement.reclaim });
    this.#publish();
    if (!judgement.reclaim) return;

    // 5b. Reclaim exactly the Lease version that was judged, and only if the view still
    //     shows it; the preconditions make the API server refuse anything newer.
    const current = this.#view.lease;
    if (current?.uid !== lease.uid || current.resourceVersion !== lease.resourceVersion) {
      if (current?.uid === lease.uid)
        this.#memory = { ...this.#memory, owner: { ...this.#memory.owner!, nextCheckAt: clock.now() } };
      return;
    }
    const pre = { uid: lease.uid, resourceVersion: lease.resourceVersion };
    try {
      await store.deleteLease(pre, signal);
      this.#o.onNote({
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
        this.#o.onNote({
          type: 'reclaim',
          result: 'conflict',
          reason: judgement.reason,
          detail: judgement.detail,
          lease: pre,
        });
      } else if (error.code === 404) {
        this.#o.onNote({
          type: 'reclaim',
          result: 'gone',
          reason: judgement.reason,
          detail: judgement.detail,
          lease: pre,
        });
      } else {
        schedule(prevFailures + 1, undefined);
        this.#apiError('delete', error, this.#memory.owner!.nextCheckAt - clock.now());
        this.#o.onNote({
          type: 'reclaim',
          result: 'error',
          reason: judgement.reason,
          detail: error.message,
          lease: pre,
        });
      }
    }
  }

  // --- 6: self-fencing -----------------------------------------------------------------

  async #fenceLoop(signal: AbortSignal): Promise<void> {
    const { clock, timing } = this.#o;
    while (!signal.aborted) {
      this.#publish();
      const now = clock.now();
      const at = this.#view.confirmedAt;
      const fence = at === undefined ? undefined : at + timing.fencingTimeoutMs + 1;
      const takeover = this.#view.lease ? takeoverAt(this.#view.lease) : undefined;
      const deadlines = [fence, takeover === undefined ? undefined : takeover + 1].filter(
        (d): d is number => d !== undefined && d > now && d < Number.MAX_SAFE_INTEGER,
      );
      await this.#wait(deadlines.length > 0 ? Math.min(...deadlines) : undefined, signal);
    }
  }

  // --- the leader's Pod ------------------------------------------------------------------

  /** The Pod to watch: the one the current Lease names, when it is another's. */
  #podTarget(): { podName: string; podUid: string } | undefined {
    const lease = this.#view.lease;
    if (lease === null) return undefined;
    const holder = classifyLease(lease);
    if (holder.kind !== 'pod' && holder.kind !== 'orphan') return undefined;
    const podUid =
      holder.podUid ??
      (this.#memory.owner?.leaseUid === lease.uid ? this.#memory.owner.resolvedUid : undefined);
    if (podUid === undefined || podUid === this.#o.identity.podUid) return undefined;
    return { podName: holder.podName, podUid };
  }

  /** Moves the next owner check of the Lease naming `t`'s Pod to `at` (a GET the watch makes needless). */
  #deferOwnerCheck(t: PodTrack, at: number): void {
    const o = this.#memory.owner;
    const target = this.#podTarget();
    if (!o || !target || target.podUid !== t.podUid || o.leaseUid !== this.#view.lease?.uid) return;
    const nextCheckAt = at === Infinity ? Number.MAX_SAFE_INTEGER : Math.min(o.nextCheckAt, at);
    if (nextCheckAt === o.nextCheckAt) return;
    this.#memory = { ...this.#memory, owner: { ...o, nextCheckAt } };
    this.#changed.fire();
  }

  /** A state of the tracked Pod arrived; a finished leader seen by the watch is judged at once. */
  #podSeen(t: PodTrack, pod: PodRecord, how: 'checked' | 'watched' | 'deleted'): void {
    t.last = pod;
    t.resourceVersion = pod.resourceVersion;
    if (how === 'deleted') t.deleted = true;
    const o = this.#memory.owner;
    const finished = pod.phase === 'Succeeded' || pod.phase === 'Failed';
    if (how === 'deleted' && o) {
      // The garbage collector removes a Lease its owner's deletion leaves behind; an orphaned
      // Lease has none, so the owner check (404: reclaim) runs now. For an owned Lease it
      // runs after the usual interval, in case the garbage collector is down.
      const lease = this.#view.lease;
      const orphan = lease !== null && classifyLease(lease).kind === 'orphan';
      const now = this.#o.clock.now();
      this.#memory = {
        ...this.#memory,
        owner: { ...o, nextCheckAt: orphan ? now : now + this.#o.timing.ownerCheckIntervalMs },
      };
    } else if (how === 'watched' && finished && o && o.nextCheckAt > this.#o.clock.now()) {
      this.#memory = { ...this.#memory, owner: { ...o, nextCheckAt: this.#o.clock.now() } };
    }
    this.#changed.fire();
  }

  /**
   * Watches the leader's one Pod (by name), from the owner check's GET, resuming without
   * a gap. The DELETED event carries the Pod's last state: whether the kubelet confirmed that
   * its elector stopped. A Pod seen finished is judged at once (no owner-check interval).
   */
  async #podLoop(signal: AbortSignal): Promise<void> {
    const { store, clock, timing, random } = this.#o;
    let failures = 0;
    while (!signal.aborted) {
      const target = this.#podTarget();
      let t = this.#track;
      if (target && (t === undefined || t.podUid !== target.podUid)) {
        t = { ...target, last: undefined, deleted: false, resourceVersion: undefined };
        this.#track = t;
        failures = 0;
      }
      if (!target || !t || t.deleted || !isConfirmed(this.#view, clock.now(), timing)) {
        await this.#wait(undefined, signal);
        continue;
      }
      if (t.resourceVersion === undefined) {
        // The owner check's GET gives the state to start from (no GET of our own).
        await this.#wait(undefined, signal);
        continue;
      }

      const track = t;
      const stop = new AbortController();
      let expired = false;
      let failure: ApiError | undefined;
      let stalled = false;
      const startedAt = clock.now();
      const stallTimer = clock.setTimer(POD_WATCH_SECONDS * 1000 + timing.watchGraceMs, () => {
        stalled = true;
        stop.abort();
      });
      // Another leader: stop watching this one's Pod.
      let watching = true;
      void (async () => {
        while (watching && !stop.signal.aborted) {
          await this.#changed.wait();
          const next = this.#podTarget();
          if (next && next.podUid !== track.podUid) stop.abort();
        }
      })();
      try {
        await store.watchPod({
          name: track.podName,
          resourceVersion: track.resourceVersion!,
          timeoutSeconds: POD_WATCH_SECONDS,
          signal: AbortSignal.any([signal, stop.signal]),
          onOpen: () => {
            failures = 0;
            // While the watch runs it reports what the periodic owner check would find, at
            // once: the check (a GET) waits; it comes back when the watch fails.
            this.#deferOwnerCheck(track, Infinity);
          },
          onEvent: (event) => {
            if (signal.aborted || stop.signal.aborted) return;
            switch (event.type) {
              case 'ADDED':
              case 'MODIFIED':
              case 'DELETED':
                if (event.pod.name !== track.podName) return;
                if (event.pod.uid !== track.podUid) {
                  // The name belongs to another Pod now: ours was deleted unseen.
                  track.deleted = true;
                  this.#changed.fire();
                  stop.abort();
                  return;
                }
                this.#podSeen(track, event.pod, event.type === 'DELETED' ? 'deleted' : 'watched');
                if (event.type === 'DELETED') stop.abort();
                return;
              case 'BOOKMARK':
                if (event.resourceVersion) track.resourceVersion = event.resourceVersion;
                return;
              case 'ERROR':
                if (event.code === 410) expired = true;
                else failure ??= new ApiError(event.message || event.reason, event.code, event.reason);
                return;
            }
          },
        });
      } catch (err) {
        if (!stop.signal.aborted) failure ??= asApiError(err);
      } finally {
        watching = false;
        stallTimer.cancel();
        this.#changed.fire(); // ends the target watcher above
      }
      if (signal.aborted) return;
      if (expired || failure?.code === 410) {
        // Too old to resume: the owner check reads the Pod afresh, now.
        track.resourceVersion = undefined;
        const o = this.#memory.owner;
        if (o) this.#memory = { ...this.#memory, owner: { ...o, nextCheckAt: clock.now() } };
        this.#changed.fire();
        continue;
      }
      if (failure || stalled) this.#deferOwnerCheck(track, clock.now() + timing.ownerCheckIntervalMs);
      if (failure && !stalled) {
        const wait = backoffMs(failures++, timing, random);
        this.#apiError('watch-pod', failure, wait);
        await this.#sleep(wait, signal);
        continue;
      }
      if (!stalled && !stop.signal.aborted && clock.now() - startedAt < 1000) {
        await this.#sleep(backoffMs(failures++, timing, random), signal);
      }
    }
  }

  /**
   * Whether taking over after `after`'s Lease went must be fenced, and until when. Not when
   * the previous leader's elector is known to have stopped (the kubelet reported it: a
   * graceful deletion, a finished Pod), nor when its Pod still exists and runs (the Lease was
   * deleted by hand: its elector saw that, or fences itself as it always does).
   */
  async #takeoverFence(
    after: NonNullable<NonNullable<Memory['campaign']>['after']>,
    signal: AbortSignal,
  ): Promise<{ at: number; why: string } | undefined> {
    const { identity, store, timing, clock } = this.#o;
    if (after.podUid === identity.podUid) return undefined; // our own Lease: we saw it go
    const fenced = (why: string) => ({
      at: after.goneAt + timing.fencingTimeoutMs + TAKEOVER_MARGIN_MS,
      why,
    });
    const known = () => {
      const t = this.#track;
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
      if (electorStopped(pod) || !pod.terminating) return undefined;
    }
    // Gone (or going) without the kubelet's word yet. Our watch on it may lag the Lease's
    // watch by a moment: give it a second to deliver the Pod's last state.
    const t = known();
    if (t && !t.deleted) {
      const until = clock.now() + 1000;
      while (!signal.aborted && !t.deleted && clock.now() < until) await this.#wait(until, signal);
      if (stopped()) return undefined;
    }
    if (t?.deleted && t.last) return fenced(`pod ${after.podName} was deleted while its elector ran`);
    return fenced(`pod ${after.podName} is gone and nothing says its elector stopped`);
  }
}
