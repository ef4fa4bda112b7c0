/**
 * The fault suite on a real node (packages/harness/src/node.ts): the control plane, one node
 * (kubelet + containerd + runc + the CNI bridge), the project image imported, lifelease
 * installed from manifests/ (the webhook runs as its Deployment on the node), and the
 * schedules' pods created through the API server, injected by the webhook, scheduled by
 * kube-scheduler and run by the kubelet, the elector as the image's native sidecar.
 *
 * What each fault becomes (packages/harness/src/node-faults.ts does the node side):
 * - partition: DROP rules for the pod's IP on its path to the API server (the DNAT'd relay);
 * - partition + force-delete: the same, and the node's kubelet SIGSTOPped (the node is
 *   unreachable: no heartbeat, it does not see the deletion), then `delete --grace-period=0
 *   --force`; once the fencing bound has passed the node comes back (SIGCONT) and its kubelet
 *   kills the deleted pod's containers;
 * - elector kill: `ctr task kill -s SIGKILL` of the elector container; the kubelet restarts
 *   it with its own back-off (the schedule's `restartDelayMs` does not apply);
 * - finish: the app container ends through the runtime (SIGTERM: the pause process exits 0,
 *   Succeeded; SIGKILL: Failed; the pods have `restartPolicy: Never`), and the kubelet stops
 *   the sidecar and reports the phase;
 * - deletions, Lease faults, API server and etcd faults: as on the stand-in (the API), with
 *   the real kubelet doing the node's part.
 *
 * What the app sees is recorded from inside each pod: a portal (node-faults.ts) into the
 * pod's network namespace asks the elector on the pod's loopback, as the app would.
 *
 * The electors get the shortened timing of every chaos run (`extraArgs`): the webhook's
 * rendering is taken from a dry-run create (its hash stamped on the pod), the flags are
 * appended, and the pod is created; admission sees the same hash and keeps the container.
 */
import { AppsV1Api, CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CONTAINER_NAME } from '../../common/constants.ts';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import { ensureImages } from '@lifelease/harness/image';
import { podIdentity, pollPods, type PodList } from '@lifelease/harness/kubelet';
import { applyManifests, renderManifests } from '@lifelease/harness/manifests';
import { pauseVersion } from '@lifelease/harness/node-binaries';
import { NodeFaults, PodPortal } from '@lifelease/harness/node-faults';
import {
  assertCanRunNode,
  NODE_ROOT,
  nodeClusterOptions,
  startNode,
  type RealNode,
} from '@lifelease/harness/node';
import { stretched } from '@lifelease/harness/wait';
import type { ChaosPods, PodsOptions, PodState } from './pods.ts';

const WEBHOOK_NAMESPACE = 'lifelease-system';
const WEBHOOK_DEPLOYMENT = 'lifelease-webhook';

interface RealPodState extends PodState {
  portal: PodPortal | undefined;
  attaching: boolean;
}

const apiCode = (err: unknown): unknown => (err as { code?: unknown }).code;

/** The cluster, the node and the installed webhook, shared by the schedules of a run. */
export class RealNodeEnv {
  readonly cluster: Cluster;
  readonly node: RealNode;
  readonly faults: NodeFaults;
  readonly pauseImage: string;

  private constructor(cluster: Cluster, node: RealNode, pauseImage: string) {
    this.cluster = cluster;
    this.node = node;
    this.pauseImage = pauseImage;
    this.faults = new NodeFaults(node, cluster.server);
  }

  static async start(options: { log: (m: string) => void }): Promise<RealNodeEnv> {
    const log = options.log;
    assertCanRunNode(); // root, before anything is built
    const images = await ensureImages({ log: (l) => log(`[image] ${l}`) });
    const cluster = await startCluster({ ...nodeClusterOptions(), log, timeoutMs: 600_000 });
    let node: RealNode | undefined;
    try {
      node = await startNode(cluster, { images: [images.project], log, timeoutMs: 180_000 });
      const env = new RealNodeEnv(
        cluster,
        node,
        `registry.k8s.io/pause:${await pauseVersion(node.binaries)}`,
      );
      await env.#installWebhook(log);
      return env;
    } catch (err) {
      await node?.stop();
      await cluster.stop();
      throw err;
    }
  }

  /** `kubectl apply -k manifests` (server-side apply), then until an opted-in pod comes back injected. */
  async #installWebhook(log: (m: string) => void): Promise<void> {
    const objects = await renderManifests('.');
    log(`applying ${objects.length} objects from manifests/`);
    await applyManifests(this.cluster.kubeConfig, objects);
    const apps = this.cluster.kubeConfig.makeApiClient(AppsV1Api);
    const core = this.cluster.kubeConfig.makeApiClient(CoreV1Api);
    const deadline = performance.now() + stretched(300_000);
    let last = '';
    for (;;) {
      try {
        const d = await apps.readNamespacedDeployment({
          name: WEBHOOK_DEPLOYMENT,
          namespace: WEBHOOK_NAMESPACE,
        });
        if ((d.status?.availableReplicas ?? 0) > 0) {
          const probe = await core.createNamespacedPod({
            namespace: 'default',
            dryRun: 'All',
            body: {
              metadata: { name: 'probe', labels: { leaderElection: 'true' } },
              spec: { containers: [{ name: 'app', image: this.pauseImage }] },
            },
          });
          if (electorOf(probe)) break;
          last = 'a dry-run pod came back without an elector';
        } else last = `webhook Deployment: ${JSON.stringify(d.status?.conditions ?? [])}`;
      } catch (err) {
        last = (err as Error).message.split('\n')[0] ?? '';
      }
      if (performance.now() > deadline) throw new Error(`the webhook did not start injecting: ${last}`);
      await sleep(500);
    }
    log('webhook Deployment available and injecting');
  }

  pods(options: PodsOptions): RealNodePods {
    return new RealNodePods(this, options);
  }

  async stop(): Promise<void> {
    this.faults.restore();
    await this.node.stop();
    await this.cluster.stop();
  }
}

function electorOf(pod: V1Pod): V1Container | undefined {
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find(
    (c) => c.name === CONTAINER_NAME,
  );
}

/** The runner's pods on the real node (see the header). */
export class RealNodePods implements ChaosPods {
  readonly pods = new Map<string, RealPodState>();
  readonly nodeWide = true;
  readonly #env: RealNodeEnv;
  readonly #o: PodsOptions;
  readonly #core: CoreV1Api;
  #running = false;
  #loop: Promise<void> | undefined;
  readonly #busy = new Set<Promise<unknown>>();
  /** Container log files already linked into `logDir`. */
  readonly #logs = new Set<string>();
  #logsAt = 0;

  constructor(env: RealNodeEnv, options: PodsOptions) {
    this.#env = env;
    this.#o = options;
    this.#core = env.cluster.kubeConfig.makeApiClient(CoreV1Api);
  }

  get #faults(): NodeFaults {
    return this.#env.faults;
  }

  start(): void {
    this.#running = true;
    this.#loop = this.#run();
  }

  podBody(name: string): V1Pod {
    return {
      metadata: { name },
      spec: {
        terminationGracePeriodSeconds: 2,
        // `finish` ends the app for good: Succeeded on exit 0, Failed when killed.
        restartPolicy: 'Never',
        containers: [
          {
            // The pause process: idle, exits 0 on SIGTERM.
            name: 'app',
            image: this.#env.pauseImage,
            imagePullPolicy: 'Never',
            resources: { requests: { cpu: '1m', memory: '4Mi' } },
          },
        ],
      },
    };
  }

  async prepare(core: CoreV1Api, namespace: string, body: V1Pod): Promise<V1Pod> {
    const rendered = await core.createNamespacedPod({ namespace, body, dryRun: 'All' });
    const elector = electorOf(rendered);
    if (!elector) return body; // the runner reports the missing injection
    elector.args = [...(elector.args ?? []), ...this.#o.extraArgs];
    const meta = { ...rendered.metadata };
    delete meta.uid;
    delete meta.resourceVersion;
    delete meta.creationTimestamp;
    delete meta.managedFields;
    return { apiVersion: 'v1', kind: 'Pod', metadata: meta, spec: rendered.spec! };
  }

  register(pod: V1Pod): RealPodState {
    const existing = this.pods.get(pod.metadata!.uid!);
    if (existing) {
      existing.pod = pod;
      return existing;
    }
    const state: RealPodState = {
      ...podIdentity(pod),
      pod,
      sandbox: undefined,
      done: false,
      held: false,
      portal: undefined,
      attaching: false,
    };
    this.pods.set(state.uid, state);
    return state;
  }

  live(): PodState[] {
    return [...this.pods.values()].filter((p) => !p.done && !p.held && p.sandbox?.running === true);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#busy.add(p);
    void p.finally(() => this.#busy.delete(p)).catch(() => {});
    return p;
  }

  async #run(): Promise<void> {
    await pollPods({
      core: this.#core,
      namespace: this.#o.namespace,
      pollMs: 100,
      running: () => this.#running,
      known: () => this.pods.keys(),
      step: (listed) => this.#step(listed),
    });
    this.#keepLogs();
  }

  /** One round: what is over is done; a pod whose sandbox ended is detached; a new one attached. */
  #step(listed: PodList | undefined): void {
    if (listed) {
      for (const pod of listed.pods) this.register(pod);
      for (const state of this.pods.values()) if (listed.over(state.uid)) state.done = true;
    }
    for (const state of this.pods.values()) {
      const portal = state.portal;
      if (portal && !portal.running) {
        // The pod's sandbox is gone (the kubelet stopped the pod): nothing answers any more.
        state.portal = undefined;
        state.sandbox = undefined;
        this.#o.onStop(state, portal);
        portal.close();
      }
      if (!state.portal && !state.attaching && !state.done && state.pod.status?.podIP) {
        state.attaching = true;
        void this.#track(this.#attach(state));
      }
    }
    if (performance.now() - this.#logsAt > 1000) this.#keepLogs();
  }

  /**
   * Hard-links every container log file of this namespace into `logDir` (the runner keeps it
   * for a failing schedule), so that it outlives the kubelet's removal of the pod's logs.
   */
  #keepLogs(): void {
    this.#logsAt = performance.now();
    const root = path.join(NODE_ROOT, 'pod-logs');
    try {
      for (const podDir of readdirSync(root)) {
        if (!podDir.startsWith(`${this.#o.namespace}_`)) continue;
        const [, pod, uid] = podDir.split('_');
        for (const container of readdirSync(path.join(root, podDir))) {
          for (const file of readdirSync(path.join(root, podDir, container))) {
            const from = path.join(root, podDir, container, file);
            if (this.#logs.has(from)) continue;
            const to = path.join(this.#o.logDir, `${pod}-${uid?.slice(0, 8)}-${container}-${file}`);
            mkdirSync(this.#o.logDir, { recursive: true });
            try {
              if (!existsSync(to)) linkSync(from, to);
            } catch {
              copyFileSync(from, to); // another filesystem: what it holds now
            }
            this.#logs.add(from);
          }
        }
      }
    } catch {
      // a pod's folder went while we read it: the next round takes the rest
    }
  }

  /** Opens a portal into the pod's network namespace once its sandbox runs. */
  async #attach(state: RealPodState): Promise<void> {
    try {
      const pid = await this.#faults.sandboxPid(state.uid);
      if (pid === undefined || !this.#running) return;
      const portal = await PodPortal.open(pid);
      if (!this.#running) return portal.close();
      state.portal = portal;
      state.sandbox = portal;
      this.#o.onStart(state, portal);
    } catch (err) {
      this.#o.log?.(`portal into ${state.key} failed: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      state.attaching = false;
    }
  }

  async #container(state: PodState, name: string): Promise<string | undefined> {
    const found = await this.#faults.containers(state.uid);
    return found.find((c) => c.name === name && c.pid !== undefined)?.id;
  }

  async killElector(state: PodState, _restartDelayMs: number, onKilled: () => void): Promise<boolean> {
    const id = await this.#container(state, CONTAINER_NAME);
    if (!id) return false;
    try {
      await this.#faults.killContainer(id, 'SIGKILL');
    } catch (err) {
      // The container stopped between the look-up and the kill (a storm's graceful delete
      // of the same pod: containerd answered "ttrpc: closed", seed 1703505249): no elector.
      if ((await this.#container(state, CONTAINER_NAME)) !== id) return false;
      throw err;
    }
    onKilled();
    return true;
  }

  #ip(state: PodState): string {
    const ip = state.pod.status?.podIP;
    if (!ip) throw new Error(`${state.key} has no pod IP`);
    return ip;
  }

  cutApiServer(state: PodState): void {
    this.#faults.cutApiServer(this.#ip(state));
    state.held = true;
  }

  restoreApiServer(state: PodState): void {
    this.#faults.restoreApiServer(this.#ip(state));
    state.held = false;
  }

  cutNode(state: PodState): void {
    this.cutApiServer(state);
    this.#faults.stopKubelet();
  }

  async restoreNode(state: PodState): Promise<void> {
    this.restoreApiServer(state);
    this.#faults.resumeKubelet();
    // The kubelet learns the pod is gone and stops it; the loop sees its sandbox end.
    const bound = stretched(60_000);
    const deadline = performance.now() + bound;
    while ((state as RealPodState).portal?.running && performance.now() < deadline) await sleep(50);
    if ((state as RealPodState).portal?.running)
      throw new Error(`${state.key}'s containers still ran ${bound} ms after its node came back`);
  }

  async finish(state: PodState, phase: 'Succeeded' | 'Failed'): Promise<boolean | 'gone'> {
    // The app starts after the elector's startup probe passes, so a leader may not have a
    // running app yet (seed 3823641783: 0.5 s after the election settled): wait for it. If
    // the pod goes meanwhile (another fault of a storm deleted or ended it, seed 1215767109),
    // there is nothing to end: the kubelet reports whatever it became.
    const bound = stretched(60_000);
    const deadline = performance.now() + bound;
    let id: string | undefined;
    while ((id = await this.#container(state, 'app')) === undefined) {
      const p = await this.#core
        .readNamespacedPod({ name: state.name, namespace: this.#o.namespace })
        .catch((err: unknown) => {
          if (apiCode(err) === 404) return undefined;
          throw err;
        });
      const over = p?.status?.phase === 'Succeeded' || p?.status?.phase === 'Failed';
      if (!p || p.metadata?.uid !== state.uid || p.metadata?.deletionTimestamp || over) {
        state.done = true;
        return 'gone';
      }
      if (performance.now() > deadline)
        throw new Error(`${state.key}'s app did not start within ${bound} ms`);
      await sleep(100);
    }
    state.done = true;
    await this.#faults.killContainer(id, phase === 'Succeeded' ? 'SIGTERM' : 'SIGKILL');
    for (;;) {
      try {
        const p = await this.#core.readNamespacedPod({ name: state.name, namespace: this.#o.namespace });
        if (p.metadata?.uid !== state.uid) return true;
        const got = p.status?.phase;
        if (got === 'Succeeded' || got === 'Failed') {
          if (got !== phase) throw new Error(`${state.key} ended ${got}, not ${phase}`);
          return true;
        }
      } catch (err) {
        if (apiCode(err) === 404) return true;
        if (typeof apiCode(err) === 'number') throw err;
      }
      if (performance.now() > deadline)
        throw new Error(`${state.key} was not ${phase} ${bound} ms after its app ended`);
      await sleep(100);
    }
  }

  async stop(): Promise<void> {
    for (const s of this.pods.values()) s.done = true;
    this.#faults.restore();
    // Every pod goes at once (grace 0); the kubelet stops them and the loop sees the sandboxes end.
    await this.#core
      .deleteCollectionNamespacedPod({ namespace: this.#o.namespace, body: { gracePeriodSeconds: 0 } })
      .catch(() => undefined);
    const deadline = performance.now() + stretched(60_000);
    while ([...this.pods.values()].some((s) => s.portal?.running) && performance.now() < deadline)
      await sleep(100);
    this.#running = false;
    await this.#loop;
    await Promise.allSettled([...this.#busy]);
    for (const s of this.pods.values()) {
      const portal = s.portal;
      if (!portal) continue;
      s.portal = undefined;
      s.sandbox = undefined;
      this.#o.onStop(s, portal);
      portal.close();
    }
  }
}
