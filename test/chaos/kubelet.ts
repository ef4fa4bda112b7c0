/**
 * The fault runner's pods on the kubelet stand-in: packages/harness/src/kubelet.ts (the one stand-in;
 * pod lifecycle, restarts, graceful deletion and holding a cut-off pod live there) runs the
 * elector container of every pod of the schedule's namespace, and this adapts it to what the
 * runner asks of its pods (pods.ts):
 *
 * - pods are bound to a node (`spec.nodeName`), so deletion is graceful as in a cluster;
 * - the elector runs exactly as injected, plus `extraArgs` (the chaos runs shorten the
 *   fencing bound and the owner-check interval so that faults heal in seconds);
 * - a partition cuts the pod's sandbox off from the API server and holds the pod (its
 *   kubelet no longer acts on it); an unreachable node is the same, per pod;
 * - an elector kill is a SIGKILL of the container, restarted after the schedule's delay;
 * - a finished pod's container stops and the runner writes its phase.
 *
 * Why a stand-in remains although a real node (real-node.ts, `npm run chaos -- --real-node`)
 * runs every one of these faults with the real kubelet, containerd and the project image:
 * the real node needs root and is the host's one node, which the shared node's test files
 * hold while `npm test` runs this suite's sample (test/integration/chaos/schedules.test.ts)
 * beside them; the stand-in runs without root, several at once, a schedule in seconds and
 * up to 10 pods on 2 cores (the real node: 6), so the default `npm run chaos` (300
 * schedules) and CI's sample run here. And the schedule's elector restart delay
 * (`restartDelayMs`) exists only here: the real kubelet restarts with its own back-off.
 */
import type { CoreV1Api, V1Container, V1Pod } from '@kubernetes/client-node';
import type { ChaosPods, PodsOptions } from './pods.ts';
import path from 'node:path';
import { CONTAINER_NAME } from '../../common/constants.ts';
import type { ClusterClient } from '@lifelease/harness/client';
import { Kubelet, type KubeletPod } from '@lifelease/harness/kubelet';
import type { PodSandbox } from '@lifelease/harness/pod-sandbox';

export const CHAOS_NODE = 'chaos-node';

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

export class ChaosKubelet implements ChaosPods {
  readonly nodeWide = false;
  readonly #kubelet: Kubelet;
  /** The sandbox a partition cut (held pods are not restarted, so it stays the one). */
  readonly #cut = new Map<KubeletPod, PodSandbox>();

  constructor(o: ChaosKubeletOptions) {
    this.#kubelet = new Kubelet({
      cluster: o.cluster,
      namespace: o.namespace,
      container: CONTAINER_NAME,
      entrypoint: o.entrypoint,
      pollMs: o.pollMs ?? 100,
      maxStarting: o.maxStarting ?? 3,
      podForStart: (pod) => withExtraArgs(pod, o.extraArgs),
      logFile: (state, n) => path.join(o.logDir, `${state.name}-${state.uid.slice(0, 8)}-${n}.log`),
      onEvent: (e) => {
        if (e.type === 'started') o.onStart(e.state, e.sandbox);
        else if (e.type === 'stopped') o.onStop(e.state, e.sandbox);
      },
      ...(o.log ? { log: o.log } : {}),
    });
  }

  get pods(): Map<string, KubeletPod> {
    return this.#kubelet.pods;
  }

  start(): void {
    this.#kubelet.start();
  }

  register(pod: V1Pod): KubeletPod {
    return this.#kubelet.register(pod);
  }

  /** Pods whose container runs and which nobody is taking down: the candidates. */
  live(): KubeletPod[] {
    return [...this.pods.values()].filter((p) => !p.done && !p.held && p.sandbox?.running === true);
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

  /** SIGKILLs the elector process of a pod (the container dies; the kubelet restarts it). */
  killElector(state: KubeletPod, restartDelayMs: number, onKilled?: () => void): Promise<boolean> {
    const killed = this.#kubelet.killContainer(state, restartDelayMs);
    if (killed) onKilled?.();
    return Promise.resolve(killed);
  }

  /** Marks a pod finished and stops its container; the runner then sets its phase. */
  async finish(state: KubeletPod): Promise<boolean> {
    state.done = true;
    await this.#kubelet.stopContainer(state);
    return false;
  }

  cutApiServer(state: KubeletPod): void {
    const s = state.sandbox;
    if (!s) return;
    this.#kubelet.hold(state);
    s.cutApiServer();
    this.#cut.set(state, s);
  }

  restoreApiServer(state: KubeletPod): void {
    this.#cut.get(state)?.restoreApiServer();
    this.#cut.delete(state);
    this.#kubelet.release(state);
  }

  /** The stand-in's pods have no shared node: the pod is held and cut off. */
  cutNode(state: KubeletPod): void {
    this.cutApiServer(state);
  }

  /** Reconnected, then stopped as its kubelet does once it learns the pod was deleted. */
  async restoreNode(state: KubeletPod): Promise<void> {
    this.#cut.get(state)?.restoreApiServer();
    this.#cut.delete(state);
    await this.#kubelet.stopContainer(state);
    this.#kubelet.release(state);
  }

  /** Stops the loop and every container (fast: SIGKILL after `graceMs`). */
  stop(graceMs = 1000): Promise<void> {
    return this.#kubelet.stop(graceMs);
  }
}
