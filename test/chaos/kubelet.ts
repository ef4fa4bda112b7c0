/**
 * The kubelet stand-in of the chaos runs: like test/harness/kubelet.ts it runs the elector
 * container of every pod of a namespace in a pod sandbox, but it also does what a node
 * does under faults, which the fault schedules need:
 *
 * - pods are bound to a node (`spec.nodeName`), so deletion is graceful as in a cluster:
 *   the API server sets `deletionTimestamp`, the kubelet stops the containers (SIGTERM,
 *   SIGKILL after the grace period) and then deletes the object with grace 0;
 * - a container that dies is restarted (a native sidecar has `restartPolicy: Always`);
 * - a pod can be "held": its node is cut off, so the kubelet neither sees its deletion nor
 *   stops it until the runner heals the partition;
 * - pods that are Succeeded or Failed are not (re)started.
 *
 * The elector container runs exactly as injected, plus `extraArgs` (the chaos runs shorten
 * the fencing bound and the owner-check interval so that faults heal in seconds).
 *
 * A real node (real-node.ts) does all of this with the real kubelet, containerd and the
 * project image; this stand-in stays for what a real node cannot give every run: it needs
 * root and the host's one node (a lock other runs wait on), so `npm test`'s sample and the
 * default `npm run chaos` run here, several at once, in seconds per schedule.
 */
import { CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import type { ChaosPods, PodsOptions, PodState as BasePodState } from './pods.ts';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_NAME } from '../../common/constants.ts';
import type { ClusterClient } from '@lifelease/harness/client';
import { PodSandbox } from '@lifelease/harness/pod-sandbox';
import { reportPodStopped } from '@lifelease/harness/pod-status';

export const CHAOS_NODE = 'chaos-node';

export interface PodState extends BasePodState {
  sandbox: PodSandbox | undefined;
  starts: number;
  /** Earliest time (performance.now) of the next (re)start. */
  restartAt: number;
  /** The kubelet has begun removing the deleted object (its last word on the pod). */
  finalizing: boolean;
  /** Settles once the container the kubelet last stopped has exited. */
  stopped: Promise<void>;
}

export interface ChaosKubeletOptions extends PodsOptions {
  cluster: ClusterClient;
  entrypoint: (image: string, command: string[] | undefined) => string[];
  pollMs?: number;
  /** At most this many containers starting at once (2 cores). */
  maxStarting?: number;
}

function withExtraArgs(pod: V1Pod, extra: string[]): V1Pod {
  const copy = structuredClone(pod);
  const all: V1Container[] = [...(copy.spec?.initContainers ?? []), ...(copy.spec?.containers ?? [])];
  const c = all.find((x) => x.name === CONTAINER_NAME);
  if (!c) throw new Error(`pod ${pod.metadata?.name} has no ${CONTAINER_NAME} container: not injected?`);
  c.args = [...(c.args ?? []), ...extra];
  return copy;
}

/** The elector's own pid inside a sandbox (pod-init writes it to its ready file). */
export function electorPid(sandbox: PodSandbox): number | undefined {
  try {
    const pid = Number(readFileSync(path.join(sandbox.dir, 'started'), 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * pod-init starts the container as a plain child, so a container outlives a sandbox whose
 * pod-init is SIGKILLed (what the harness's exit hook does on Ctrl-C). Every running
 * elector of every chaos kubelet is killed on exit as well.
 */
const running = new Set<PodSandbox>();
let exitHook = false;
function killContainersOnExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const s of running) {
      const pid = electorPid(s);
      try {
        if (pid !== undefined) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}

export class ChaosKubelet implements ChaosPods {
  readonly pods = new Map<string, PodState>();
  readonly nodeWide = false;
  /** The sandbox a partition cut (held pods are not restarted, so it stays the one). */
  readonly #cut = new Map<PodState, PodSandbox>();
  readonly #o: ChaosKubeletOptions;
  readonly #core: CoreV1Api;
  #running = false;
  #loop: Promise<void> | undefined;
  #busy = new Set<Promise<unknown>>();
  #starting = 0;

  constructor(options: ChaosKubeletOptions) {
    this.#o = options;
    this.#core = options.cluster.kubeConfig.makeApiClient(CoreV1Api);
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  byName(name: string): PodState[] {
    return [...this.pods.values()].filter((p) => p.name === name);
  }

  /** Pods whose container runs and which nobody is taking down: the candidates. */
  live(): PodState[] {
    return [...this.pods.values()].filter((p) => !p.done && !p.held && p.sandbox?.running === true);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#busy.add(p);
    void p.finally(() => this.#busy.delete(p)).catch(() => {});
    return p;
  }

  /** Registers a pod the runner created (so it is known before the next list). */
  register(pod: V1Pod): PodState {
    const uid = pod.metadata!.uid!;
    const existing = this.pods.get(uid);
    if (existing) return existing;
    const name = pod.metadata!.name!;
    const state: PodState = {
      key: `${name}#${uid.slice(0, 8)}`,
      name,
      uid,
      hostname: name.slice(0, 63),
      pod,
      sandbox: undefined,
      done: false,
      held: false,
      starts: 0,
      restartAt: 0,
      finalizing: false,
      stopped: Promise.resolve(),
    };
    this.pods.set(uid, state);
    return state;
  }

  async #run(): Promise<void> {
    const pollMs = this.#o.pollMs ?? 100;
    while (this.#running) {
      let listed: V1Pod[] | undefined;
      try {
        listed = (await this.#core.listNamespacedPod({ namespace: this.#o.namespace })).items;
      } catch {
        // The API server may be down on purpose: keep the containers running.
      }
      if (listed) {
        const live = new Map(listed.map((p) => [p.metadata!.uid!, p]));
        for (const pod of listed) this.register(pod);
        for (const state of this.pods.values()) {
          if (state.held || state.finalizing) continue;
          const pod = live.get(state.uid);
          const phase = pod?.status?.phase;
          const deleting = pod?.metadata?.deletionTimestamp !== undefined;
          // A pod finished earlier (its containers stopped) and deleted now still needs the
          // kubelet to remove its object, as a real kubelet does.
          if (state.done && !deleting) continue;
          if (!pod || deleting || phase === 'Succeeded' || phase === 'Failed') {
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
          this.#o.onStop(state, s);
          void this.#track(s.stop(0).catch(() => undefined));
          state.restartAt = Math.max(state.restartAt, performance.now());
        }
        if (
          !state.sandbox &&
          performance.now() >= state.restartAt &&
          this.#starting < (this.#o.maxStarting ?? 3)
        ) {
          state.restartAt = Infinity; // until started
          void this.#track(this.#startContainer(state));
        }
      }
      await sleep(pollMs);
    }
  }

  async #startContainer(state: PodState): Promise<void> {
    this.#starting++;
    try {
      const n = ++state.starts;
      const sandbox = await PodSandbox.start({
        cluster: this.#o.cluster,
        pod: withExtraArgs(state.pod, this.#o.extraArgs),
        container: CONTAINER_NAME,
        entrypoint: this.#o.entrypoint,
        logFile: path.join(this.#o.logDir, `${state.name}-${state.uid.slice(0, 8)}-${n}.log`),
      });
      if (!this.#running || state.done) {
        await sandbox.stop(0);
        return;
      }
      state.sandbox = sandbox;
      state.restartAt = 0;
      killContainersOnExit();
      running.add(sandbox);
      void sandbox.process.exited.then(() => running.delete(sandbox));
      this.#o.onStart(state, sandbox);
    } catch (err) {
      this.#o.log?.(`start of ${state.key} failed: ${(err as Error).message.split('\n')[0]}`);
      state.restartAt = performance.now() + 500;
    } finally {
      this.#starting--;
    }
  }

  /** Stops a pod's container as its kubelet would: SIGTERM, SIGKILL after the grace period. */
  async stopContainer(state: PodState, graceMs?: number): Promise<void> {
    const s = state.sandbox;
    if (!s) return state.stopped;
    state.sandbox = undefined;
    const grace = graceMs ?? (state.pod.spec?.terminationGracePeriodSeconds ?? 30) * 1000;
    state.stopped = s.stop(Math.min(grace, 10_000)).then(
      () => this.#o.onStop(state, s),
      () => this.#o.onStop(state, s),
    );
    return state.stopped;
  }

  /** The pod is gone, terminating or finished: stop its container; finish a graceful deletion. */
  async #terminate(state: PodState, pod: V1Pod | undefined): Promise<void> {
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

  podBody(name: string): V1Pod {
    return {
      metadata: { name },
      spec: {
        nodeName: CHAOS_NODE,
        terminationGracePeriodSeconds: 2,
        containers: [{ name: 'app', image: 'example.invalid/app:1' }],
      },
    };
  }

  /** The stand-in appends `extraArgs` when it starts the container. */
  prepare(_core: CoreV1Api, _namespace: string, body: V1Pod): Promise<V1Pod> {
    return Promise.resolve(body);
  }

  /** SIGKILLs the elector process of a pod (the container dies; the loop restarts it). */
  killElector(state: PodState, restartDelayMs: number, onKilled?: () => void): Promise<boolean> {
    return Promise.resolve(this.#killElector(state, restartDelayMs, onKilled));
  }

  #killElector(state: PodState, restartDelayMs: number, onKilled?: () => void): boolean {
    const s = state.sandbox;
    const pid = s ? electorPid(s) : undefined;
    if (!s || pid === undefined) return false;
    state.restartAt = performance.now() + restartDelayMs;
    try {
      process.kill(pid, 'SIGKILL');
      onKilled?.();
      return true;
    } catch {
      return false;
    }
  }

  /** The pod's node is cut off: the kubelet no longer acts on it. */
  hold(state: PodState): void {
    state.held = true;
  }

  /** The node is back: the kubelet acts on what the API now says (stop it if it is gone). */
  release(state: PodState): void {
    state.held = false;
  }

  /** Marks a pod finished and stops its container; the runner then sets its phase. */
  async finish(state: PodState): Promise<boolean> {
    state.done = true;
    await this.stopContainer(state);
    return false;
  }

  cutApiServer(state: PodState): void {
    const s = state.sandbox;
    if (!s) return;
    this.hold(state);
    s.cutApiServer();
    this.#cut.set(state, s);
  }

  restoreApiServer(state: PodState): void {
    this.#cut.get(state)?.restoreApiServer();
    this.#cut.delete(state);
    this.release(state);
  }

  /** The stand-in's pods have no shared node: the pod is held and cut off. */
  cutNode(state: PodState): void {
    this.cutApiServer(state);
  }

  /** Reconnected, then stopped as its kubelet does once it learns the pod was deleted. */
  async restoreNode(state: PodState): Promise<void> {
    this.#cut.get(state)?.restoreApiServer();
    this.#cut.delete(state);
    await this.stopContainer(state);
    this.release(state);
  }

  /** Stops the loop and every container (fast: SIGKILL after `graceMs`). */
  async stop(graceMs = 1000): Promise<void> {
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
