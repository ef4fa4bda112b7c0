/**
 * Runs fault schedules (schedule.ts) against the real product on a real control plane:
 * a private cluster (these runs break it), the webhook installed from manifests/, and
 * 3-10 candidate pods created through the API server (so the webhook injects them) and
 * run by the kubelet stand-in (kubelet.ts: why it remains is there) or by a real node
 * (real-node.ts, `--real-node`). Every elector's answers are recorded from inside
 * its pod (recorder.ts) and judged by the history checker (history.ts):
 *
 * - safety: never two pods told they lead at once, with no allowance for anyone (a partitioned
 *   leader keeps its Lease while its Pod exists, and a takeover after a forced deletion
 *   waits out its fencing bound); a partitioned pod stops claiming once the bound has
 *   passed; nobody claims while a foreign Lease holds the name;
 * - liveness: after each fault heals, every candidate agrees on one leader, which says it
 *   leads, within `agreeBoundMs` (no leader is the designed answer while a foreign Lease
 *   holds the name, which the runner tells the checker);
 * - gaps: the longest time no pod claimed, per fault, inside and outside the windows where
 *   no leader is the designed answer.
 */
import { stretched } from '@lifelease/harness/wait';
import { CoordinationV1Api, CoreV1Api, V1MicroTime, type V1Pod } from '@kubernetes/client-node';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_NAME } from '../../common/constants.ts';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import { installWebhook, type InstalledWebhook } from '@lifelease/harness/system';
import { buildBundle, type Bundle } from './bundle.ts';
import { check, type Interval, type Observation, type Partition } from './history.ts';
import { ChaosKubelet } from './kubelet.ts';
import type { ChaosPods, PodsOptions, PodState } from './pods.ts';
import { RealNodeEnv } from './real-node.ts';
import { Recorder } from './recorder.ts';
import { Rng } from './rng.ts';
import {
  describeSchedule,
  faultType,
  reportType,
  type Fault,
  type Schedule,
  type Target,
} from './schedule.ts';

export const ELECTION = 'chaos';
/**
 * How long a deleted pod's object may take to go: a `--cascade=orphan` delete holds it until
 * the garbage collector has orphaned its dependents, which took over 30 s once under load.
 */
const GONE_MS = 120_000;
const ELECTION_PORT = 4040;

export interface ChaosOptions {
  /** The electors' self-fencing bound (`--fencing-timeout`). */
  fencingMs: number;
  /** `--owner-check-interval`. */
  ownerCheckMs: number;
  /** How soon after a fault heals every candidate must agree on one leader. */
  agreeBoundMs: number;
  /** Allowance on the fencing bound for timers and polling on a loaded machine. */
  slackMs: number;
  pollMs: number;
  /** Where failing schedules leave their histories and elector logs. */
  artifactsDir: string;
  /**
   * Run the pods on a real node (kubelet + containerd + runc + CNI, the project image, the
   * webhook as a Deployment): real-node.ts. Needs root and the host's one node. Default: the
   * kubelet stand-in (kubelet.ts).
   */
  realNode?: boolean;
  log: (msg: string) => void;
}

export const DEFAULT_CHAOS: Omit<ChaosOptions, 'artifactsDir' | 'log'> = {
  fencingMs: 4000,
  ownerCheckMs: 1000,
  agreeBoundMs: 20_000,
  slackMs: 1000,
  pollMs: 50,
};

export interface FaultRecord {
  type: string;
  reportType: string;
  fault: Fault;
  injectedAt: number;
  healedAt: number;
  /** When every candidate agreed on one leader again; undefined if they did not in time. */
  agreedAt: number | undefined;
  /** Windows where no leader was the designed answer. */
  designed: { from: number; to: number; reason: string }[];
  notes: string[];
  /** The leader's pod deleted: which, when, and when its object was gone (if seen). */
  deleted?: { pod: string; at: number; goneAt: number | undefined };
  /** Filled in by the checker. */
  longestGapMs?: number;
  longestUndesignedGapMs?: number;
  /** From the leader's deletion to the first claim of another pod (the takeover). */
  takeoverMs?: number;
  /** From the deleted leader's object being gone to that claim. */
  takeoverAfterGoneMs?: number;
}

export interface ScheduleResult {
  schedule: Schedule;
  ok: boolean;
  problems: string[];
  faults: FaultRecord[];
  observations: number;
  pods: number;
  durationMs: number;
  artifacts: string | undefined;
  /** What the checker judged: every observation; and the partitions injected (not excused). */
  history: Observation[];
  partitions: Partition[];
}

type DesignedWindow = FaultRecord['designed'][number];

const apiCode = (err: unknown): unknown => (err as { code?: unknown }).code;

/** Retries an admin API call while the control plane is down (faults), up to `timeoutMs`. */
export async function retryApi<T>(what: string, fn: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      const code = apiCode(err);
      // No HTTP status (ECONNREFUSED, ECONNRESET: the code is then a string or absent), 5xx, 429.
      const transient = typeof code !== 'number' || code === 0 || code >= 500 || code === 429;
      if (!transient || performance.now() > deadline) {
        throw new Error(`${what}: ${(err as Error).message}`, { cause: err });
      }
      await sleep(Math.min(1000, 50 * 2 ** attempt));
    }
  }
}

/**
 * The control plane, the webhook and the elector bundle (or the real node), shared by the
 * schedules of a run.
 */
export class ChaosEnv {
  readonly cluster: Cluster;
  readonly webhook: InstalledWebhook | undefined;
  readonly bundle: Bundle | undefined;
  readonly realNode: RealNodeEnv | undefined;
  readonly options: ChaosOptions;
  /** Things the runner had to do for a slow control plane, for the report. */
  readonly stats = { serviceAccountsCreated: 0 };
  /** Set by {@link stop}: a schedule still running ends at its next step and repairs nothing. */
  #stopping = false;
  /** The schedule running now, if any. */
  #running: Promise<ScheduleResult> | undefined;

  private constructor(
    cluster: Cluster,
    options: ChaosOptions,
    parts: { webhook?: InstalledWebhook; bundle?: Bundle; realNode?: RealNodeEnv },
  ) {
    this.cluster = cluster;
    this.webhook = parts.webhook;
    this.bundle = parts.bundle;
    this.realNode = parts.realNode;
    this.options = options;
  }

  static async start(options: ChaosOptions): Promise<ChaosEnv> {
    if (options.realNode) {
      const realNode = await RealNodeEnv.start({ log: options.log });
      return new ChaosEnv(realNode.cluster, options, { realNode });
    }
    const bundle = await buildBundle();
    let cluster: Cluster | undefined;
    try {
      cluster = await startCluster();
      // installWebhook runs the webhook pods from the shared dist/: build it once if missing.
      const webhook = await installWebhook(cluster, { log: options.log });
      return new ChaosEnv(cluster, options, { webhook, bundle });
    } catch (err) {
      await cluster?.stop();
      bundle.remove();
      throw err;
    }
  }

  /** Whether {@link stop} was called. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /**
   * Stops the control plane, the webhook and the node. A schedule still running (its test
   * timed out) is told to end first, and waited for (bounded): left running, it would go on
   * through its steps and its repairs (restarting the API server) after the control plane
   * was stopped, and keep the test file's process alive for many minutes.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    if (this.#running)
      await Promise.race([this.#running.catch(() => undefined), sleep(60_000, undefined, { ref: false })]);
    if (this.realNode) return this.realNode.stop();
    await this.webhook?.stop().catch(() => undefined);
    await this.cluster.stop();
    this.bundle?.remove();
  }

  /** Runs one schedule in a fresh namespace; never throws for what the electors do. */
  async run(schedule: Schedule): Promise<ScheduleResult> {
    if (this.#stopping) throw new Error('the chaos environment is stopped');
    const run = new ScheduleRun(this, schedule);
    this.#running = run.execute();
    try {
      return await this.#running;
    } finally {
      this.#running = undefined;
    }
  }
}

class ScheduleRun {
  readonly env: ChaosEnv;
  readonly schedule: Schedule;
  readonly o: ChaosOptions;
  readonly rng: Rng;
  readonly recorder: Recorder;
  readonly core: CoreV1Api;
  readonly leases: CoordinationV1Api;
  readonly partitions: Partition[] = [];
  readonly faults: FaultRecord[] = [];
  readonly problems: string[] = [];
  /** Windows where no pod may claim (a foreign Lease holds the name). */
  readonly noClaims: { from: number; to: number; reason: string }[] = [];
  /** Partitioned pods that must have fenced themselves: claim nothing in [from, to]. */
  readonly mustBeFenced: { pod: string; from: number; to: number }[] = [];
  readonly logDir: string;
  readonly attachments = new Map<string, { detach(): Promise<void> }>();
  namespace = '';
  kubelet: ChaosPods | undefined;
  #names = 0;

  constructor(env: ChaosEnv, schedule: Schedule) {
    this.env = env;
    this.schedule = schedule;
    this.o = env.options;
    // Target picks (which follower) come from the seed too, after the plan's own draws.
    this.rng = new Rng(schedule.seed ^ 0x5bd1e995);
    this.recorder = new Recorder({ pollMs: this.o.pollMs });
    this.core = env.cluster.kubeConfig.makeApiClient(CoreV1Api);
    this.leases = env.cluster.kubeConfig.makeApiClient(CoordinationV1Api);
    this.logDir = path.join(this.o.artifactsDir, `seed-${schedule.seed}`);
  }

  log(msg: string): void {
    this.o.log(`[seed ${this.schedule.seed}] ${msg}`);
  }

  get k(): ChaosPods {
    if (!this.kubelet) throw new Error('not started');
    return this.kubelet;
  }

  async execute(): Promise<ScheduleResult> {
    const started = performance.now();
    mkdirSync(this.logDir, { recursive: true });
    try {
      await this.setUp();
      for (const [i, step] of this.schedule.steps.entries()) {
        if (this.env.stopping) throw new Error(`stopped before fault ${i + 1} (the test timed out?)`);
        await sleep(step.quietMs);
        const record = await this.inject(step.fault);
        this.faults.push(record);
        const agreed = await this.agreement(record.healedAt, this.o.agreeBoundMs);
        if (this.env.stopping) throw new Error(`stopped after fault ${i + 1} (the test timed out?)`);
        record.agreedAt = agreed?.at;
        for (const d of record.designed) if (d.to === Infinity) d.to = agreed?.at ?? performance.now();
        if (!agreed) {
          this.problems.push(
            `liveness: no agreed leader within ${this.o.agreeBoundMs} ms (stretched by the load) after fault ${i + 1} (${record.type}) healed: ${this.describeAnswers()}`,
          );
          break;
        }
        this.log(
          `${record.type}: healed, ${agreed.leader} leads, all agree ${(agreed.at - record.healedAt).toFixed(0)} ms after the heal`,
        );
      }
    } catch (err) {
      this.problems.push(`runner: ${(err as Error).stack ?? String(err)}`);
    } finally {
      await this.tearDown();
    }
    this.judge();
    const ok = this.problems.length === 0;
    let artifacts: string | undefined;
    if (ok) {
      rmSync(this.logDir, { recursive: true, force: true });
    } else {
      artifacts = this.logDir;
      writeFileSync(
        path.join(this.logDir, 'report.json'),
        JSON.stringify(
          {
            schedule: this.schedule,
            problems: this.problems,
            faults: this.faults,
            partitions: this.partitions,
            history: this.recorder.history,
          },
          (_k, v: unknown) => (v === Infinity ? 'Infinity' : v),
          1,
        ),
      );
      writeFileSync(path.join(this.logDir, 'schedule.txt'), `${describeSchedule(this.schedule)}\n`);
    }
    return {
      schedule: this.schedule,
      ok,
      problems: this.problems,
      faults: this.faults,
      observations: this.recorder.history.length,
      pods: this.kubelet?.pods.size ?? 0,
      durationMs: performance.now() - started,
      artifacts,
      history: this.recorder.history,
      partitions: this.partitions,
    };
  }

  // --- set-up and tear-down ---------------------------------------------------------------

  async setUp(): Promise<void> {
    const cluster = this.env.cluster;
    this.namespace = await this.createNamespace();
    const options: PodsOptions = {
      namespace: this.namespace,
      extraArgs: [
        `--fencing-timeout=${this.o.fencingMs}ms`,
        `--owner-check-interval=${this.o.ownerCheckMs}ms`,
        '--log-level=debug',
      ],
      logDir: this.logDir,
      onStart: (state, sandbox) => {
        this.attachments.set(
          state.key,
          this.recorder.attach(state.key, state.hostname, sandbox, ELECTION_PORT),
        );
      },
      onStop: (state) => {
        const a = this.attachments.get(state.key);
        this.attachments.delete(state.key);
        void a?.detach();
      },
      log: (m) => this.log(m),
    };
    this.kubelet = this.env.realNode
      ? this.env.realNode.pods(options)
      : new ChaosKubelet({ ...options, cluster, entrypoint: this.env.bundle!.entrypoint });
    this.kubelet.start();
    await Promise.all(Array.from({ length: this.schedule.pods }, () => this.createPod()));
    // Starting the pods is a wait, stretched by the machine's load (5 pods, each two Node.js
    // processes, at a tenth of a core apiece at load 20); the liveness bound after each fault
    // is a property and is not.
    const settleMs = stretched(90_000);
    const agreed = await this.agreement(performance.now(), settleMs);
    if (!agreed)
      throw new Error(
        `the first election did not settle in ${(settleMs / 1000).toFixed(0)} s: ${this.describeAnswers()}`,
      );
    this.log(`${this.schedule.pods} pods, ${agreed.leader} leads`);
  }

  /**
   * A fresh namespace with its `default` ServiceAccount. After an API server restart the
   * service-account controller can take half a minute to resync; past a few seconds the
   * runner creates the account itself (as the controller would) and says so.
   */
  async createNamespace(): Promise<string> {
    const name = `chaos-${this.schedule.seed}-${Math.floor(Math.random() * 0xffffff).toString(16)}`;
    await retryApi('create namespace', () => this.core.createNamespace({ body: { metadata: { name } } }));
    const deadline = performance.now() + 5000;
    for (;;) {
      try {
        await this.core.readNamespacedServiceAccount({ name: 'default', namespace: name });
        return name;
      } catch (err) {
        if (apiCode(err) !== 404 && typeof apiCode(err) === 'number') throw err;
      }
      if (performance.now() > deadline) break;
      await sleep(50);
    }
    this.log('the service-account controller is slow: creating the default ServiceAccount');
    this.env.stats.serviceAccountsCreated++;
    await retryApi('create service account', async () => {
      try {
        await this.core.createNamespacedServiceAccount({
          namespace: name,
          body: { metadata: { name: 'default' } },
        });
      } catch (err) {
        if (apiCode(err) !== 409) throw err;
      }
    });
    return name;
  }

  async tearDown(): Promise<void> {
    // Whatever a fault left broken, the next schedule needs a whole control plane; but when
    // the environment is being stopped, nothing is repaired (that would start the API server
    // again after its stop) and only this schedule's pods and recorders end.
    const repair = !this.env.stopping;
    this.env.cluster.resumeEtcd();
    if (repair) {
      await this.env.cluster
        .startApiServer()
        .catch((err: Error) => this.problems.push(`restart: ${err.message}`));
      // kube-controller-manager may give up while the API server is down: the next schedule
      // needs its garbage collector and service-account controller.
      if (!this.env.cluster.controllerManager.running) {
        this.log('kube-controller-manager had exited: restarting it');
        await this.env.cluster
          .startControllerManager()
          .catch((err: Error) => this.problems.push(`kube-controller-manager: ${err.message}`));
      }
    }
    await this.kubelet?.stop(500);
    await Promise.all([...this.attachments.values()].map((a) => a.detach()));
    this.attachments.clear();
    if (repair && this.namespace) {
      // Pods bound to the (absent) node wait for a kubelet to finish their deletion; the
      // namespace controller would retry them for ever and starve the other controllers.
      await retryApi('delete pods', () =>
        this.core.deleteCollectionNamespacedPod({
          namespace: this.namespace,
          body: { gracePeriodSeconds: 0 },
        }),
      ).catch(() => undefined);
      await retryApi('delete namespace', () => this.core.deleteNamespace({ name: this.namespace })).catch(
        () => undefined,
      );
    }
  }

  // --- pods -------------------------------------------------------------------------------

  async createPod(name?: string): Promise<PodState> {
    const podName = name ?? `c-${++this.#names}`;
    const spec = this.k.podBody(podName);
    const body: V1Pod = {
      ...spec,
      metadata: { ...spec.metadata, name: podName, labels: { app: ELECTION, leaderElection: 'true' } },
    };
    const pod = await retryApi(`create pod ${podName}`, async () => {
      try {
        const prepared = await this.k.prepare(this.core, this.namespace, body);
        return await this.core.createNamespacedPod({ namespace: this.namespace, body: prepared });
      } catch (err) {
        // A create whose answer was lost to a fault: take what was stored.
        if (apiCode(err) === 409) {
          const found = await this.core.readNamespacedPod({ name: podName, namespace: this.namespace });
          if (!this.k.pods.has(found.metadata!.uid!)) return found;
        }
        throw err;
      }
    });
    const injected = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].some(
      (c) => c.name === CONTAINER_NAME,
    );
    if (!injected)
      throw new Error(`pod ${podName} came back without an elector: the webhook did not inject it`);
    return this.k.register(pod);
  }

  /** Pods that exist and are not being taken down (running or about to). */
  candidates(): PodState[] {
    return [...this.k.pods.values()].filter((p) => !p.done);
  }

  /** The pod the election's Lease names (by owner uid), if it is a candidate. */
  async leader(): Promise<PodState | undefined> {
    const lease = await retryApi('read lease', async () => {
      try {
        return await this.leases.readNamespacedLease({ name: ELECTION, namespace: this.namespace });
      } catch (err) {
        if (apiCode(err) === 404) return undefined;
        throw err;
      }
    });
    const uid = lease?.metadata?.ownerReferences?.[0]?.uid;
    return [...this.k.pods.values()].find((p) => p.uid === uid && !p.done);
  }

  async target(t: Target): Promise<PodState | undefined> {
    const leader = await this.leader();
    if (t === 'leader') return leader;
    const followers = this.k.live().filter((p) => p !== leader);
    return followers.length > 0 ? this.rng.pick(followers) : undefined;
  }

  /**
   * Keeps 2..10 candidates: a ReplicaSet-like floor so that someone can take over. With
   * `reuse`, the first new pod takes that name once the old object is gone (StatefulSet-like);
   * an object still there after `GONE_MS` (a finalizer the garbage collector has not
   * cleared) leaves the name alone, and the result says so.
   */
  async replace(count: number, reuse?: string): Promise<string | undefined> {
    const room = 10 - this.candidates().length;
    const floor = Math.max(0, 2 - this.candidates().length);
    const n = Math.min(room, Math.max(count, floor));
    const names: (string | undefined)[] = Array.from({ length: n }, () => undefined);
    let note: string | undefined;
    if (reuse !== undefined && n > 0) {
      const gone = await this.waitGone(reuse, GONE_MS).then(
        () => true,
        () => false,
      );
      if (gone) names[0] = reuse;
      else note = `${reuse} was still there after ${GONE_MS} ms: its name was not reused`;
    }
    await Promise.all(names.map((name) => this.createPod(name)));
    return note;
  }

  /** Waits until no pod of this name (with this uid, when given) exists. */
  async waitGone(name: string, timeoutMs = 30_000, uid?: string): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      try {
        const pod = await this.core.readNamespacedPod({ name, namespace: this.namespace });
        if (uid !== undefined && pod.metadata?.uid !== uid) return;
      } catch (err) {
        if (apiCode(err) === 404) return;
      }
      await sleep(50);
    }
    throw new Error(`pod ${name} still exists after ${timeoutMs} ms`);
  }

  // --- agreement ------------------------------------------------------------------------

  describeAnswers(): string {
    return [...this.k.pods.values()]
      .filter((p) => !p.done)
      .map((p) => {
        const o = this.recorder.latest(p.key);
        const age = o ? `${(performance.now() - o.t).toFixed(0)} ms ago` : 'never';
        return `${p.key}${p.held ? ' (held)' : ''}${p.sandbox?.running ? '' : ' (not running)'}: ${JSON.stringify(o?.answer ?? null)} ${age}`;
      })
      .join('; ');
  }

  /**
   * Waits until every candidate runs and answers the same leader, which is one of them and
   * the only one saying it leads; answers must be newer than `after`.
   */
  /**
   * Waits until every candidate answers and all agree on one leader. The bound is written for
   * a quiet machine and stretched by the load: agreement after a fault includes starting a
   * replacement pod's elector, which at a load average of 30 on 2 cores took over 20 s.
   */
  async agreement(after: number, boundMs: number): Promise<{ at: number; leader: string } | undefined> {
    const deadline = after + stretched(boundMs);
    while (performance.now() < deadline && !this.env.stopping) {
      const pods = this.candidates().filter((p) => !p.held);
      const answers = pods.map((p) => ({ p, o: this.recorder.latest(p.key) }));
      const fresh = answers.every(
        ({ p, o }) => p.sandbox?.running && o?.answer && o.t > after && performance.now() - o.t < 1000,
      );
      if (pods.length > 0 && fresh) {
        const names = new Set(answers.map(({ o }) => o!.answer!.name ?? ''));
        const leaders = answers.filter(({ o }) => o!.answer!.is_leader === true);
        const [name] = [...names];
        if (
          names.size === 1 &&
          name &&
          leaders.length === 1 &&
          leaders[0]!.p.hostname === name &&
          answers.every(({ o }) => o!.answer!.state === 'leader' || o!.answer!.state === 'follower')
        ) {
          return { at: Math.max(...answers.map(({ o }) => o!.t)), leader: leaders[0]!.p.key };
        }
      }
      await sleep(25);
    }
    return undefined;
  }

  // --- faults ----------------------------------------------------------------------------

  record(fault: Fault): FaultRecord {
    const now = performance.now();
    return {
      type: faultType(fault),
      reportType: reportType(fault),
      fault,
      injectedAt: now,
      healedAt: now,
      agreedAt: undefined,
      designed: [],
      notes: [],
    };
  }

  async inject(fault: Fault): Promise<FaultRecord> {
    const r = this.record(fault);
    this.log(`inject ${r.type}`);
    await this.apply(fault, r);
    r.healedAt = performance.now();
    return r;
  }

  /** Carries out one fault (both of a storm at once), healing it before returning. */
  async apply(fault: Fault, r: FaultRecord): Promise<void> {
    const { cluster } = this.env;
    const F = this.o.fencingMs;
    const designedIf = (cond: boolean, reason: string, from = performance.now()) => {
      const w: DesignedWindow = { from, to: Infinity, reason };
      if (cond) r.designed.push(w);
      return w;
    };
    switch (fault.kind) {
      case 'storm': {
        // Both run to the end (healed) before anything else happens, even if one fails.
        const settled = await Promise.allSettled(fault.faults.map((f) => this.apply(f, r)));
        for (const s of settled) if (s.status === 'rejected') throw s.reason;
        return;
      }
      case 'apiserver-restart': {
        designedIf(
          fault.downMs >= 0.75 * F,
          'API server down around the fencing bound: unknown is the answer',
        );
        await cluster.stopApiServer({ kill: fault.kill });
        await sleep(fault.downMs);
        await cluster.startApiServer();
        return;
      }
      case 'etcd-pause': {
        designedIf(fault.pauseMs >= 0.75 * F, 'etcd paused around the fencing bound');
        cluster.pauseEtcd();
        await sleep(fault.pauseMs);
        cluster.resumeEtcd();
        return;
      }
      case 'elector-kill': {
        const t = await this.target(fault.target);
        if (!t) return void r.notes.push(`no ${fault.target} to kill`);
        const wasLeader = fault.target === 'leader';
        designedIf(wasLeader, "the leader's elector is down: the lease stays, nobody else may lead");
        // The moment of the SIGKILL is when its answers stop: the recorder is told, so the
        // checker ends the claim there rather than at the next failed poll.
        if (
          !(await this.k.killElector(t, fault.restartDelayMs, () => this.recorder.silence(t.key, t.hostname)))
        )
          r.notes.push(`${t.key}: no elector process to kill`);
        else r.notes.push(`killed the elector of ${t.key}`);
        return;
      }
      case 'partition': {
        const t = await this.target(fault.target);
        const s = t?.sandbox;
        if (!t || !s) return void r.notes.push(`no ${fault.target} to cut off`);
        const from = performance.now();
        designedIf(
          fault.target === 'leader' && fault.durationMs >= 0.75 * F,
          'the leader is cut off past its fencing bound: it fences itself, nobody else may lead',
          from,
        );
        this.k.cutApiServer(t);
        const p: Partition = { pod: t.key, from, to: Infinity };
        this.partitions.push(p);
        r.notes.push(`cut ${t.key} off for ${fault.durationMs} ms`);
        await sleep(fault.durationMs);
        this.k.restoreApiServer(t);
        p.to = performance.now();
        if (p.to - from > F + this.o.slackMs) {
          this.mustBeFenced.push({ pod: t.key, from: from + F + this.o.slackMs, to: p.to });
        }
        return;
      }
      case 'partition-force-delete': {
        // A whole node cut off starts nothing new: have three candidates before, so that two
        // remain to take over without a replacement.
        if (this.k.nodeWide && this.candidates().length < 3) {
          await this.replace(3 - this.candidates().length);
          const ready = await this.agreement(performance.now(), stretched(90_000));
          if (!ready) throw new Error(`the extra candidates did not join: ${this.describeAnswers()}`);
        }
        const t = await this.leader();
        const s = t?.sandbox;
        if (!t || !s) return void r.notes.push('no leader to cut off');
        const from = performance.now();
        // No allowance for the cut-off pod here (its partition is not reported to the
        // checker): the others must not lead until it has fenced itself, so any moment with
        // two claimants fails the schedule. That wait is the designed no-leader window.
        designedIf(
          true,
          'the leader was force-deleted while it may still run: nobody leads until its fencing bound ran out',
          from,
        );
        this.k.cutNode(t);
        const p: Partition = { pod: t.key, from, to: Infinity };
        await sleep(fault.deleteAfterMs);
        await retryApi('force-delete pod', () =>
          this.core.deleteNamespacedPod({ name: t.name, namespace: this.namespace, gracePeriodSeconds: 0 }),
        );
        t.done = true;
        r.deleted = { pod: t.key, at: performance.now(), goneAt: performance.now() };
        r.notes.push(`cut ${t.key} off, force-deleted it ${fault.deleteAfterMs} ms later`);
        await this.replace(0);
        // The others elect a new leader while the cut-off pod still runs; it must fence
        // itself within the bound. Its node comes back after that.
        const agreed = await this.agreement(performance.now(), this.o.agreeBoundMs);
        if (agreed) r.notes.push(`${agreed.leader} led ${(agreed.at - from).toFixed(0)} ms after the cut`);
        const fencedBy = from + F + this.o.slackMs;
        await sleep(Math.max(0, fencedBy + 1500 - performance.now()));
        this.mustBeFenced.push({ pod: t.key, from: fencedBy, to: performance.now() });
        p.to = performance.now();
        await this.k.restoreNode(t);
        return;
      }
      case 'delete': {
        const t = await this.target(fault.target);
        if (!t) return void r.notes.push(`no ${fault.target} to delete`);
        const options =
          fault.mode === 'grace0'
            ? { gracePeriodSeconds: 0 }
            : fault.mode === 'orphan'
              ? { propagationPolicy: 'Orphan' }
              : {};
        await retryApi('delete pod', async () => {
          try {
            await this.core.deleteNamespacedPod({ name: t.name, namespace: this.namespace, ...options });
          } catch (err) {
            if (apiCode(err) !== 404) throw err;
          }
        });
        r.notes.push(`deleted ${t.key} (${fault.mode}), ${fault.replacements} new pods`);
        const deletedAt = performance.now();
        // Runs alongside the wait below; settled here so that a failure is this schedule's,
        // reported when awaited, not an unhandled rejection that ends the whole run.
        const replaced = this.replace(fault.replacements, fault.reuseName ? t.name : undefined).then(
          (note) => ({ note }),
          (error: unknown) => ({ error }),
        );
        // A deleted pod's object stays while it terminates (its kubelet stops it, then
        // removes it) and while a finalizer holds it (`--cascade=orphan`: until the garbage
        // collector has orphaned the Lease). The elector keeps such a pod's Lease on purpose
        // (it may still run), so the fault heals when the object is gone.
        const gone = await this.waitGone(t.name, GONE_MS, t.uid).then(
          () => performance.now(),
          () => undefined,
        );
        if (fault.target === 'leader') {
          r.deleted = { pod: t.key, at: deletedAt, goneAt: gone };
          r.designed.push({
            from: deletedAt,
            to: gone ?? Infinity,
            reason: "the deleted leader's pod object still exists (terminating, or held by a finalizer)",
          });
          if (fault.mode === 'grace0') {
            // Removed while its status said running: its elector may still run, so the
            // takeover waits its fencing bound (plus the elector's 2 s margin).
            r.designed.push({
              from: deletedAt,
              to: deletedAt + F + 2000 + this.o.slackMs,
              reason: 'a leader deleted with grace 0 (forced): the takeover is fenced',
            });
          }
        }
        r.notes.push(
          gone === undefined
            ? `${t.key}'s object was still there after ${GONE_MS} ms`
            : `${t.key}'s object gone ${(gone - deletedAt).toFixed(0)} ms after the delete`,
        );
        const outcome = await replaced;
        if ('error' in outcome) throw outcome.error;
        if (outcome.note) r.notes.push(outcome.note);
        return;
      }
      case 'finish': {
        const t = await this.leader();
        if (!t) return void r.notes.push('no leader to finish');
        const finished = await this.k.finish(t, fault.phase);
        if (finished === 'gone') {
          r.notes.push(`${t.key} had no running app left to end (another fault ended it)`);
          await this.replace(fault.replacements);
          return;
        }
        if (finished) {
          r.notes.push(`${t.key} ${fault.phase} (its app container ended; the kubelet reported it)`);
          await this.replace(fault.replacements);
          return;
        }
        // Read, then replace the status; a 409 means another writer (the kubelet stand-in
        // reporting the pod stopped, in a storm that also deletes it) came in between: read
        // again (a bounded number of times).
        let set: boolean | undefined;
        for (let attempt = 0; set === undefined && attempt < 20; attempt++)
          set = await retryApi('set pod phase', async () => {
            try {
              const pod = await this.core.readNamespacedPodStatus({
                name: t.name,
                namespace: this.namespace,
              });
              if (pod.metadata?.uid !== t.uid) return false;
              pod.status = { ...(pod.status ?? {}), phase: fault.phase };
              await this.core.replaceNamespacedPodStatus({
                name: t.name,
                namespace: this.namespace,
                body: pod,
              });
              return true;
            } catch (err) {
              // Deleted meanwhile (a storm deleting the same pod): nothing left to finish.
              if (apiCode(err) === 404) return false;
              if (apiCode(err) === 409) return undefined;
              throw err;
            }
          });
        if (set === undefined) throw new Error(`set pod phase: 20 conflicts in a row on ${t.key}`);
        r.notes.push(
          set ? `${t.key} ${fault.phase}` : `${t.key} was gone before it could be marked ${fault.phase}`,
        );
        await this.replace(fault.replacements);
        return;
      }
      case 'lease-delete': {
        await retryApi('delete lease', async () => {
          try {
            await this.leases.deleteNamespacedLease({ name: ELECTION, namespace: this.namespace });
          } catch (err) {
            if (apiCode(err) !== 404) throw err;
          }
        });
        return;
      }
      case 'foreign-lease': {
        let createdAt: number | undefined;
        for (let attempt = 0; attempt < 50 && createdAt === undefined; attempt++) {
          await retryApi('delete lease', async () => {
            try {
              await this.leases.deleteNamespacedLease({ name: ELECTION, namespace: this.namespace });
            } catch (err) {
              if (apiCode(err) !== 404) throw err;
            }
          });
          try {
            await this.leases.createNamespacedLease({
              namespace: this.namespace,
              body: {
                metadata: { name: ELECTION },
                spec: {
                  holderIdentity: 'another-controller-7d9f',
                  leaseDurationSeconds: 15,
                  acquireTime: new V1MicroTime(),
                  renewTime: new V1MicroTime(),
                },
              },
            });
            createdAt = performance.now();
          } catch (err) {
            if (apiCode(err) !== 409) throw err; // a candidate was faster: again
          }
        }
        if (createdAt === undefined) return void r.notes.push('could not place a foreign Lease');
        const w = designedIf(true, 'a foreign Lease holds the name: unknown is the answer', createdAt);
        await sleep(fault.holdMs);
        await retryApi('delete foreign lease', () =>
          this.leases.deleteNamespacedLease({ name: ELECTION, namespace: this.namespace }),
        );
        w.to = performance.now();
        // Electors learn of the foreign Lease from their watch: allow the slack for that.
        this.noClaims.push({ from: createdAt + this.o.slackMs, to: w.to, reason: 'foreign Lease' });
        return;
      }
    }
  }

  // --- judging ---------------------------------------------------------------------------

  judge(): void {
    const history = this.recorder.history;
    if (history.length === 0) return;
    // No partition allowance: the partitions are in the result for the report, not excused.
    const verdict = check(history);
    for (const v of verdict.violations)
      this.problems.push(`safety: ${v.reason} (overlap ${v.overlapMs.toFixed(0)} ms)`);
    const overlaps = (iv: Interval, w: { from: number; to: number }) => iv.from < w.to && iv.to > w.from;
    for (const f of this.mustBeFenced) {
      for (const iv of verdict.intervals) {
        if (iv.pod === f.pod && overlaps(iv, f)) {
          this.problems.push(
            `fencing: ${f.pod} still claimed ${(Math.min(iv.to, f.to) - f.from + this.o.fencingMs + this.o.slackMs).toFixed(0)} ms after it was cut off (bound ${this.o.fencingMs} ms + ${this.o.slackMs} ms slack)`,
          );
        }
      }
    }
    for (const w of this.noClaims) {
      for (const iv of verdict.intervals) {
        if (overlaps(iv, w)) this.problems.push(`safety: ${iv.pod} claimed while ${w.reason} held the name`);
      }
    }
    for (const f of this.faults) {
      const to = f.agreedAt ?? f.healedAt + this.o.agreeBoundMs;
      const v = check(history, {
        window: { from: f.injectedAt, to },
        designed: f.designed,
      });
      f.longestGapMs = v.longestGapMs;
      f.longestUndesignedGapMs = v.longestUndesignedGapMs;
      const d = f.deleted;
      if (d) {
        const next = verdict.intervals
          .filter((iv) => iv.pod !== d.pod && iv.from >= d.at)
          .reduce((m, iv) => Math.min(m, iv.from), Infinity);
        if (next !== Infinity) {
          f.takeoverMs = next - d.at;
          if (d.goneAt !== undefined) f.takeoverAfterGoneMs = next - d.goneAt;
        }
      }
    }
  }
}
