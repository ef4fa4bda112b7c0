/**
 * Fakes for the election's unit tests: a clock that moves only when told, and a store that
 * answers only the calls a test expects and records every other call as a failure.
 */
import assert from 'node:assert/strict';
import {
  ApiError,
  Election,
  timingFor,
  type ElectionStore,
  type Identity,
  type LeaseDraft,
  type LeaseRecord,
  type Note,
  type PodRecord,
  type PodWatchEvent,
  type Timing,
  type WatchEvent,
} from '../../../elector/election.ts';
import type { Verdict } from '../../../elector/leader.ts';
import {
  LEASE_ANNOTATION_LEADER_HOSTNAME,
  LEASE_ANNOTATION_LEADER_POD,
  LEASE_ANNOTATION_LEADER_UID,
  LEASE_LABEL_ELECTION,
  LEASE_LABEL_MANAGED_BY,
  PROJECT,
} from '../../../common/constants.ts';
import { FakeClock as SupportFakeClock, flush } from '../../support/clock.ts';

export { flush };

/** The elector's tests start the fake clock at 1,000,000 ms (their timestamps assume it). */
export class FakeClock extends SupportFakeClock {
  constructor() {
    super(1_000_000);
  }
}

/** One watch request (on the Lease, or on a Pod), driven by the test. */
export class FakeWatch<E = WatchEvent> {
  readonly resourceVersion: string;
  readonly timeoutSeconds: number;
  readonly signal: AbortSignal;
  #onOpen: () => void;
  #onEvent: (event: E) => void;
  #resolve!: () => void;
  #reject!: (err: unknown) => void;
  done = false;
  readonly promise: Promise<void>;

  readonly name: string | undefined;

  constructor(request: {
    name?: string;
    resourceVersion: string;
    timeoutSeconds: number;
    signal: AbortSignal;
    onOpen: () => void;
    onEvent: (event: E) => void;
  }) {
    this.name = request.name;
    this.resourceVersion = request.resourceVersion;
    this.timeoutSeconds = request.timeoutSeconds;
    this.signal = request.signal;
    this.#onOpen = request.onOpen;
    this.#onEvent = request.onEvent;
    this.promise = new Promise<void>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    const onAbort = () => this.end();
    if (request.signal.aborted) this.end();
    else request.signal.addEventListener('abort', onAbort, { once: true });
  }

  get aborted(): boolean {
    return this.signal.aborted;
  }

  open(): this {
    assert.ok(!this.done, 'open() on an ended watch');
    this.#onOpen();
    return this;
  }

  event(event: E): this {
    assert.ok(!this.done, 'event() on an ended watch');
    this.#onEvent(event);
    return this;
  }

  end(): void {
    if (this.done) return;
    this.done = true;
    this.#resolve();
  }

  fail(err: ApiError): void {
    if (this.done) return;
    this.done = true;
    this.#reject(err);
  }
}

type Answer<T> = T | Promise<T>;
/** Answers may be plain values (or throw) or promises. */
type Handlers = {
  list: () => Answer<{ lease: LeaseRecord | null; resourceVersion: string }>;
  create: (draft: LeaseDraft) => Answer<LeaseRecord>;
  getPod: (name: string) => Answer<PodRecord | null>;
  deleteLease: (pre: { uid: string; resourceVersion: string }) => Answer<void>;
};
type Op = keyof Handlers;

/**
 * A store that answers only what the test expects: `expect(op, handler)` queues a one-shot
 * answer, `allow(op, handler)` a standing one. Any other call is recorded in `unexpected`
 * (checked by `assertNoSurprises`) and rejected.
 */
export class FakeStore implements ElectionStore {
  readonly calls: { op: Op | 'watch' | 'watchPod'; arg?: unknown }[] = [];
  readonly unexpected: string[] = [];
  readonly watches: FakeWatch[] = [];
  /** Watches on the leader's Pod, apart from the Lease's (`watch0`). */
  readonly podWatches: FakeWatch<PodWatchEvent>[] = [];
  #once: { [K in Op]: Handlers[K][] } = { list: [], create: [], getPod: [], deleteLease: [] };
  #always: Partial<Handlers> = {};

  expect<K extends Op>(op: K, handler: Handlers[K]): this {
    (this.#once[op] as Handlers[K][]).push(handler);
    return this;
  }

  allow<K extends Op>(op: K, handler: Handlers[K] | undefined): this {
    if (handler) this.#always[op] = handler;
    else delete this.#always[op];
    return this;
  }

  /** The newest Pod watch; fails if there is none. */
  get podWatch(): FakeWatch<PodWatchEvent> {
    const w = this.podWatches.at(-1);
    assert.ok(w, 'no pod watch was started');
    return w;
  }

  callsOf(op: Op | 'watch' | 'watchPod'): unknown[] {
    return this.calls.filter((c) => c.op === op).map((c) => c.arg);
  }

  /** The newest watch; fails if there is none. */
  get watch0(): FakeWatch {
    const w = this.watches.at(-1);
    assert.ok(w, 'no watch was started');
    return w;
  }

  #handler<K extends Op>(op: K, arg: unknown): Handlers[K] {
    this.calls.push({ op, arg });
    const once = (this.#once[op] as Handlers[K][]).shift();
    const handler = once ?? this.#always[op];
    if (!handler) {
      this.unexpected.push(`${op}(${JSON.stringify(arg)})`);
      throw new ApiError(`unexpected call ${op}`, 599, 'Unexpected');
    }
    return handler;
  }

  // Each call looks its answer up a tick later, so a test may start the election and
  // then script the answers in the same synchronous block.
  async list(_signal: AbortSignal) {
    await Promise.resolve();
    return this.#handler('list', undefined)();
  }
  async create(draft: LeaseDraft, _signal: AbortSignal) {
    await Promise.resolve();
    return this.#handler('create', draft)(draft);
  }
  async getPod(name: string, _signal: AbortSignal) {
    await Promise.resolve();
    return this.#handler('getPod', name)(name);
  }
  async deleteLease(pre: { uid: string; resourceVersion: string }, _signal: AbortSignal) {
    await Promise.resolve();
    return this.#handler('deleteLease', pre)(pre);
  }
  watch(request: Parameters<ElectionStore['watch']>[0]): Promise<void> {
    this.calls.push({ op: 'watch', arg: request.resourceVersion });
    const w = new FakeWatch(request);
    this.watches.push(w);
    return w.promise;
  }

  watchPod(request: Parameters<ElectionStore['watchPod']>[0]): Promise<void> {
    this.calls.push({ op: 'watchPod', arg: `${request.name}@${request.resourceVersion}` });
    const w = new FakeWatch<PodWatchEvent>(request);
    this.podWatches.push(w);
    return w.promise;
  }

  /** Fails when a call came that no test expectation covered, or an expected call never came. */
  assertNoSurprises(): void {
    assert.deepEqual(this.unexpected, [], 'unexpected store calls');
    const left = Object.entries(this.#once)
      .filter(([, q]) => q.length > 0)
      .map(([op, q]) => `${op} x${q.length}`);
    assert.deepEqual(left, [], 'expected store calls that never came');
  }
}

export const ME: Identity = {
  election: 'app',
  namespace: 'ns',
  podName: 'app-0',
  podUid: 'uid-me',
  hostname: 'app-0',
};

/** One short Lease watch at a time (the tests written for it); long watches: `LONG_TIMING`. */
export const TIMING: Timing = timingFor({
  fencingTimeoutMs: 60_000,
  ownerCheckIntervalMs: 30_000,
  campaignJitterMs: 200,
  longWatches: false,
});

/** The default at this fencing bound: two long Lease watches confirmed by bookmarks. */
export const LONG_TIMING: Timing = timingFor({
  fencingTimeoutMs: 60_000,
  ownerCheckIntervalMs: 30_000,
  campaignJitterMs: 200,
});

/** A Lease as our elector writes it, for `pod`. */
export function ourLease(
  pod: { name: string; uid: string; hostname?: string },
  meta: { uid?: string; rv?: string } = {},
): LeaseRecord {
  const hostname = pod.hostname ?? pod.name;
  return {
    name: ME.election,
    uid: meta.uid ?? `lease-${pod.uid}`,
    resourceVersion: meta.rv ?? '100',
    holderIdentity: hostname,
    leaseDurationSeconds: undefined,
    renewTime: undefined,
    owners: [{ apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid }],
    labels: { [LEASE_LABEL_MANAGED_BY]: PROJECT, [LEASE_LABEL_ELECTION]: ME.election },
    annotations: {
      [LEASE_ANNOTATION_LEADER_HOSTNAME]: hostname,
      [LEASE_ANNOTATION_LEADER_POD]: pod.name,
      [LEASE_ANNOTATION_LEADER_UID]: pod.uid,
    },
  };
}

/** A Lease as NAIS's elector writes it: holderIdentity = hostname, owner = pod, no labels. */
export function naisLease(
  pod: { name: string; uid: string },
  meta: { uid?: string; rv?: string } = {},
): LeaseRecord {
  return {
    name: ME.election,
    uid: meta.uid ?? `nais-${pod.uid}`,
    resourceVersion: meta.rv ?? '100',
    holderIdentity: pod.name,
    leaseDurationSeconds: undefined,
    renewTime: undefined,
    owners: [{ apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid }],
    labels: {},
    annotations: {},
  };
}

export function pod(name: string, uid: string, extra: Partial<PodRecord> = {}): PodRecord {
  return {
    name,
    uid,
    resourceVersion: '1',
    phase: 'Running',
    terminating: false,
    elector: 'running',
    ...extra,
  };
}

export const SELF = pod(ME.podName, ME.podUid);

/** An election on fakes, started; `stop()` ends it and checks nothing leaked. */
export function startElection<C extends FakeClock = FakeClock>(
  options: {
    identity?: Identity;
    timing?: Timing;
    random?: () => number;
    clock?: C;
    /** Also told every verdict (a LeaderBoard, as main.ts wires it). */
    onVerdict?: (v: Verdict) => void;
  } = {},
) {
  const clock = options.clock ?? (new FakeClock() as C);
  const store = new FakeStore();
  const verdicts: Verdict[] = [];
  const notes: Note[] = [];
  const election = new Election({
    identity: options.identity ?? ME,
    timing: options.timing ?? TIMING,
    store,
    clock,
    random: options.random ?? (() => 0.5),
    onVerdict: (v) => {
      verdicts.push(v);
      options.onVerdict?.(v);
    },
    onNote: (n) => notes.push(n),
  });
  const controller = new AbortController();
  let stopped = false;
  const running = election.run(controller.signal);
  return {
    clock,
    store,
    election,
    verdicts,
    notes,
    /** The latest verdict. */
    get verdict(): Verdict {
      return election.verdict;
    },
    notesOf<T extends Note['type']>(type: T): Extract<Note, { type: T }>[] {
      return notes.filter((n): n is Extract<Note, { type: T }> => n.type === type);
    },
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      controller.abort();
      await flush();
      await running;
      assert.equal(clock.pendingTimers, 0, 'timers left after stop');
      for (const w of [...store.watches, ...store.podWatches]) assert.ok(w.done, 'a watch was left open');
    },
  };
}
