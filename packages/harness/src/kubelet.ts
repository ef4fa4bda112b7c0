/**
 * The kubelet stand-in (the only one: test/chaos/kubelet.ts is the fault suite's adapter on
 * top of it): watches the pods of a namespace and runs one container of each in a pod sandbox
 * (pod-sandbox.ts), as a kubelet and container runtime would:
 *
 * - a pod appears: its container starts (at most `maxStarting` at once: 2 cores);
 * - its container dies: it is restarted (after `restartAt`, which a fault may push back)
 *   unless the pod's restart policy says otherwise, a native sidecar always;
 * - the pod is deleting, gone, Succeeded or Failed: its container is stopped (SIGTERM, then
 *   SIGKILL after the pod's grace period, at most 10 s); a pod bound to a node and deleted
 *   gracefully is then reported stopped (the status the elector's watch on the leader's Pod
 *   reads) and its object removed with grace 0, the kubelet's last word on it;
 * - a pod can be "held": its node is cut off, so the kubelet neither sees its deletion nor
 *   restarts or stops its container until it is released.
 *
 * Pods are listed every `pollMs` rather than watched: a stand-in values simple and certain
 * over efficient.
 *
 * Why it remains next to the real node (node.ts, which runs the install, helm,
 * snippet, security and pod-lifecycle tests, the demo and `npm run chaos -- --real-node`):
 * the fault suite's stand-in mode, through test/chaos/kubelet.ts (its sample in `npm test`,
 * test/integration/chaos/schedules.test.ts, and the default `npm run chaos`) and system.ts'
 * `installWebhook` for that mode's webhook pods. It needs no root, starts no node (the host
 * has one, held by the shared node's test files while the sample runs beside them), runs
 * many clusters at once and a schedule in seconds, and does a fault the real node cannot:
 * an elector killed and restarted after a delay the schedule chooses (the real kubelet uses
 * its own back-off).
 */
import { CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { IMAGE_ENTRYPOINT } from '../../../common/constants.ts';
import type { ClusterClient } from './client.ts';
import { PodSandbox } from './pod-sandbox.ts';
import { reportPodStopped } from './pod-status.ts';

export const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

/**
 * How a pod is named by whatever runs it: a log key (name and the uid's first 8 characters,
 * apart across a reused name) and the hostname its containers get (the name, cut at 63).
 */
export function podIdentity(pod: V1Pod): { key: string; name: string; uid: string; hostname: string } {
  const name = pod.metadata!.name!;
  const uid = pod.metadata!.uid!;
  return { key: `${name}#${uid.slice(0, 8)}`, name, uid, hostname: name.slice(0, 63) };
}

/**
 * Builds dist/ unless it is there. `npm test` builds once before any test file runs; files
 * never rebuild it themselves, since the build replaces dist/ and another file's pods may be
 * starting or restarting from it at that moment.
 */
export function ensureBuilt(): void {
  if (existsSync(path.join(REPO_ROOT, 'dist/cli.js'))) return;
  execFileSync(process.execPath, ['scripts/build.ts'], { cwd: REPO_ROOT, stdio: 'ignore' });
}

/**
 * Our image's entrypoint on this host: `node dist/cli.js` (run `npm run build` first), for
 * any image named like ours; everything else is refused. A `command` is our image's node and
 * CLI with Node/V8 flags between them (the manifests' elector command): the same flags go to
 * this node. Any other command is refused. `cli` and `nodeFlags` serve another build of it.
 */
export function lifeleaseEntrypoint(
  image: string,
  command: string[] | undefined,
  cli = path.join(REPO_ROOT, 'dist/cli.js'),
  nodeFlags: readonly string[] = [],
): string[] {
  if (!/(^|\/)lifelease(:|@|$)/.test(image)) throw new Error(`no stand-in entrypoint for image ${image}`);
  if (!command) return [process.execPath, ...nodeFlags, cli];
  const [node, ...rest] = command;
  const flags = rest.slice(0, -1);
  if (
    node !== IMAGE_ENTRYPOINT[0] ||
    rest.at(-1) !== IMAGE_ENTRYPOINT[1] ||
    !flags.every((f) => f.startsWith('--'))
  )
    throw new Error(
      `container command ${JSON.stringify(command)} is not our image's entrypoint (${IMAGE_ENTRYPOINT.join(' ')}) with flags between`,
    );
  return [process.execPath, ...nodeFlags, ...flags, cli];
}

/** Whether a pod's object says its containers are over: deleting, Succeeded or Failed. */
export function podOver(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return pod.metadata?.deletionTimestamp !== undefined || phase === 'Succeeded' || phase === 'Failed';
}

/** One answer to a list of a namespace's pods. */
export class PodList {
  readonly #pods: Map<string, V1Pod>;
  readonly #knownBefore: Set<string>;

  constructor(pods: V1Pod[], knownBefore: Set<string>) {
    this.#pods = new Map(pods.map((p) => [p.metadata!.uid!, p]));
    this.#knownBefore = knownBefore;
  }

  get pods(): V1Pod[] {
    return [...this.#pods.values()];
  }

  get(uid: string): V1Pod | undefined {
    return this.#pods.get(uid);
  }

  /**
   * The pod's containers are over: listed deleting, Succeeded or Failed, or known before the
   * list was asked for and absent from it (gone). A pod its creator registered while the list
   * was on its way is not gone: the answer predates it.
   */
  over(uid: string): boolean {
    const pod = this.#pods.get(uid);
    return pod ? podOver(pod) : this.#knownBefore.has(uid);
  }
}

/**
 * The poll loop of a kubelet (this stand-in's, and the fault suite's pods on the real node,
 * test/chaos/real-node.ts): while `running()`, lists the namespace's pods and hands `step`
 * the answer (undefined while the API server does not answer: it may be down on purpose, and
 * the containers keep running), then waits `pollMs`. `known()`: the uids known so far.
 */
export async function pollPods(o: {
  core: CoreV1Api;
  namespace: string;
  labelSelector?: string | undefined;
  pollMs: number;
  running: () => boolean;
  known: () => Iterable<string>;
  step: (listed: PodList | undefined) => void;
}): Promise<void> {
  const { namespace, labelSelector } = o;
  while (o.running()) {
    let listed: PodList | undefined;
    const knownBefore = new Set(o.known());
    try {
      const items = (
        await o.core.listNamespacedPod({ namespace, ...(labelSelector ? { labelSelector } : {}) })
      ).items;
      listed = new PodList(items, knownBefore);
    } catch {
      // down on purpose (faults), or a blip: the next round sees it
    }
    o.step(listed);
    await sleep(o.pollMs);
  }
}

/** One pod as the stand-in knows it. */
export interface KubeletPod {
  /** Unique per pod object: `<name>#<uid prefix>` (names are reused). */
  key: string;
  name: string;
  uid: string;
  hostname: string;
  /** The object as first seen (the container starts from it). */
  pod: V1Pod;
  sandbox: PodSandbox | undefined;
  /** The pod object is gone, terminating or finished: never (re)start it. */
  done: boolean;
  /** Its node is cut off: the kubelet does not act on it. */
  held: boolean;
  starts: number;
  /** Earliest time (performance.now) of the next (re)start. */
  restartAt: number;
  /** The kubelet has begun removing the deleted object (its last word on the pod). */
  finalizing: boolean;
  /** Settles once the container the kubelet last stopped has exited. */
  stopped: Promise<void>;
}

export type KubeletEvent =
  | { type: 'started'; state: KubeletPod; sandbox: PodSandbox }
  /** The container ended (died, or was stopped): nothing answers in it any more. */
  | { type: 'stopped'; state: KubeletPod; sandbox: PodSandbox }
  | { type: 'error'; state: KubeletPod; error: Error };

export interface KubeletOptions {
  cluster: ClusterClient;
  namespace: string;
  /** Which container to run in each pod. */
  container: string;
  labelSelector?: string;
  entrypoint?: (image: string, command: string[] | undefined) => string[];
  podNetwork?: boolean;
  pollMs?: number;
  /** At most this many containers starting at once (each is two Node.js processes). */
  maxStarting?: number;
  /** The pod the container is started from (e.g. with extra args); the object itself by default. */
  podForStart?: (pod: V1Pod) => V1Pod;
  /** Where the output of a pod's `start`th container goes; a file in its sandbox folder by default. */
  logFile?: (state: KubeletPod, start: number) => string;
  onEvent?: (event: KubeletEvent) => void;
  log?: (msg: string) => void;
}

/**
 * pod-init starts the container as a plain child, so a container outlives a sandbox whose
 * pod-init is SIGKILLed (what the harness's exit hook does on Ctrl-C). Every running
 * container of every stand-in is killed on exit as well.
 */
const runningSandboxes = new Set<PodSandbox>();
let exitHook = false;
function killContainersOnExit(sandbox: PodSandbox): void {
  runningSandboxes.add(sandbox);
  void sandbox.process.exited.then(() => runningSandboxes.delete(sandbox));
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const s of runningSandboxes) {
      const pid = s.containerPid;
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

function findContainer(pod: V1Pod, name: string): V1Container | undefined {
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find((c) => c.name === name);
}

/** Whether the kubelet restarts the container when it exits: a native sidecar always, else per the pod. */
function restartable(pod: V1Pod, container: string): boolean {
  const c = findContainer(pod, container);
  if (c?.restartPolicy === 'Always') return true;
  return (pod.spec?.restartPolicy ?? 'Always') === 'Always';
}

export class Kubelet {
  readonly pods = new Map<string, KubeletPod>();
  readonly #o: KubeletOptions;
  readonly #core: CoreV1Api;
  #running = false;
  #loop: Promise<void> | undefined;
  readonly #busy = new Set<Promise<unknown>>();
  #starting = 0;

  constructor(options: KubeletOptions) {
    this.#o = options;
    this.#core = options.cluster.kubeConfig.makeApiClient(CoreV1Api);
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  /** The sandboxes whose container runs now. */
  sandboxes(): PodSandbox[] {
    return [...this.pods.values()].flatMap((p) => (p.sandbox?.running ? [p.sandbox] : []));
  }

  /** The running sandbox of `podName`, if any. */
  sandbox(podName: string): PodSandbox | undefined {
    return this.sandboxes().find((s) => s.pod.metadata?.name === podName);
  }

  #emit(event: KubeletEvent): void {
    this.#o.onEvent?.(event);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#busy.add(p);
    void p.finally(() => this.#busy.delete(p)).catch(() => {});
    return p;
  }

  /** Knows a pod from now on (its creator may register it before the next list sees it). */
  register(pod: V1Pod): KubeletPod {
    const existing = this.pods.get(pod.metadata!.uid!);
    if (existing) return existing;
    const state: KubeletPod = {
      ...podIdentity(pod),
      pod,
      sandbox: undefined,
      done: false,
      held: false,
      starts: 0,
      restartAt: 0,
      finalizing: false,
      stopped: Promise.resolve(),
    };
    this.pods.set(state.uid, state);
    return state;
  }

  #run(): Promise<void> {
    return pollPods({
      core: this.#core,
      namespace: this.#o.namespace,
      labelSelector: this.#o.labelSelector,
      pollMs: this.#o.pollMs ?? 100,
      running: () => this.#running,
      known: () => this.pods.keys(),
      step: (listed) => this.#step(listed),
    });
  }

  /** One round: stop what is over, restart what died, start what is new. */
  #step(listed: PodList | undefined): void {
    if (listed) {
      for (const pod of listed.pods) this.register(pod);
      for (const state of this.pods.values()) {
        if (state.held || state.finalizing) continue;
        const pod = listed.get(state.uid);
        const deleting = pod?.metadata?.deletionTimestamp !== undefined;
        // A pod finished earlier (its containers stopped) and deleted now still needs the
        // kubelet to remove its object, as a real kubelet does.
        if (state.done && !deleting) continue;
        if (listed.over(state.uid)) {
          state.done = true;
          state.finalizing = deleting;
          void this.#track(this.#terminate(state, pod));
        }
      }
    }
    for (const state of this.pods.values()) {
      if (state.done || state.held) continue;
      const s = state.sandbox;
      if (s && !s.running) {
        // The container died (a fault): clean up, restart after a delay.
        state.sandbox = undefined;
        this.#emit({ type: 'stopped', state, sandbox: s });
        void this.#track(s.stop(0).catch(() => undefined));
        state.restartAt = Math.max(state.restartAt, performance.now());
        if (!restartable(state.pod, this.#o.container)) {
          state.done = true;
          continue;
        }
      }
      if (
        !state.sandbox &&
        performance.now() >= state.restartAt &&
        this.#starting < (this.#o.maxStarting ?? Infinity)
      ) {
        state.restartAt = Infinity; // until started
        void this.#track(this.#startContainer(state));
      }
    }
  }

  async #startContainer(state: KubeletPod): Promise<void> {
    this.#starting++;
    try {
      const n = ++state.starts;
      const logFile = this.#o.logFile?.(state, n);
      const sandbox = await PodSandbox.start({
        cluster: this.#o.cluster,
        pod: this.#o.podForStart ? this.#o.podForStart(state.pod) : state.pod,
        container: this.#o.container,
        entrypoint: this.#o.entrypoint ?? lifeleaseEntrypoint,
        ...(logFile ? { logFile } : {}),
        ...(this.#o.podNetwork ? { podNetwork: true } : {}),
      });
      if (!this.#running || state.done) {
        await sandbox.stop(0);
        return;
      }
      state.sandbox = sandbox;
      state.restartAt = 0;
      killContainersOnExit(sandbox);
      this.#emit({ type: 'started', state, sandbox });
    } catch (err) {
      this.#o.log?.(`start of ${state.key} failed: ${(err as Error).message.split('\n')[0]}`);
      state.restartAt = performance.now() + 500;
      this.#emit({ type: 'error', state, error: err as Error });
    } finally {
      this.#starting--;
    }
  }

  /** Stops a pod's container as its kubelet would: SIGTERM, SIGKILL after the grace period. */
  async stopContainer(state: KubeletPod, graceMs?: number): Promise<void> {
    const s = state.sandbox;
    if (!s) return state.stopped;
    state.sandbox = undefined;
    const grace = graceMs ?? (state.pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000;
    const stopped = () => this.#emit({ type: 'stopped', state, sandbox: s });
    state.stopped = s.stop(Math.min(grace, 10_000)).then(stopped, stopped);
    return state.stopped;
  }

  /**
   * SIGKILLs a pod's container (not its sandbox): the loop sees it die and restarts it, not
   * before `restartDelayMs`. False when it did not run.
   */
  killContainer(state: KubeletPod, restartDelayMs: number): boolean {
    const pid = state.sandbox?.containerPid;
    if (pid === undefined) return false;
    state.restartAt = performance.now() + restartDelayMs;
    try {
      process.kill(pid, 'SIGKILL');
      return true;
    } catch {
      return false;
    }
  }

  /** The pod's node is cut off: the kubelet no longer acts on it. */
  hold(state: KubeletPod): void {
    state.held = true;
  }

  /** The node is back: the kubelet acts on what the API now says (stops it if it is gone). */
  release(state: KubeletPod): void {
    state.held = false;
  }

  /** The pod is gone, terminating or finished: stop its container; finish a graceful deletion. */
  async #terminate(state: KubeletPod, pod: V1Pod | undefined): Promise<void> {
    await this.stopContainer(state);
    if (!pod?.metadata?.deletionTimestamp) return;
    // The kubelet's last word: the containers are gone, report them terminated (the status
    // the elector's watch on the leader's Pod reads), then remove the object (both retried
    // while the API server is down).
    const ref = { name: state.name, namespace: this.#o.namespace, uid: state.uid };
    let reported = false;
    for (let attempt = 0; this.#running || attempt === 0; attempt++) {
      try {
        if (!reported) {
          try {
            await reportPodStopped(this.#core, ref);
          } catch (err) {
            const code = (err as { code?: number }).code;
            if (code === 404) return;
            // 409: the object changed since it was read (the orphan finalizer removed, say):
            // read it again. Another refusal: remove the object without the report.
            if (code === 409 || code === undefined || code >= 500) {
              await sleep(Math.min(1000, 100 * 2 ** attempt));
              continue;
            }
            this.#o.log?.(`status report for ${state.key} refused (${code}): removing it without`);
          }
          reported = true;
        }
        await this.#core.deleteNamespacedPod({
          name: state.name,
          namespace: this.#o.namespace,
          // In the body: with a body, the API server ignores the query's gracePeriodSeconds.
          body: { gracePeriodSeconds: 0, preconditions: { uid: state.uid } },
        });
        return;
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (code === 404 || code === 409) return;
        await sleep(Math.min(1000, 100 * 2 ** attempt));
      }
    }
  }

  /** Stops the loop and every container (SIGKILL after `graceMs`). */
  async stop(graceMs = 5000): Promise<void> {
    this.#running = false;
    await this.#loop;
    await Promise.allSettled([...this.#busy]);
    await Promise.allSettled(
      [...this.pods.values()].map(async (state) => {
        state.done = true;
        state.held = false;
        await this.stopContainer(state, graceMs);
      }),
    );
  }
}
