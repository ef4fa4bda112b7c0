/**
 * What the fault runner needs from whatever runs its pods: the kubelet stand-in (kubelet.ts,
 * host processes in pod sandboxes) or a real node (real-node.ts: kubelet + containerd + runc
 * + CNI, the project image). The runner creates pods through the API server either way;
 * this is how it finds their electors, breaks them, and watches them end.
 */
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import type { ClientRequest } from 'node:http';
import type { Socket } from 'node:net';

/** A way into a running pod: its loopback, as the app in the pod sees it. */
export interface PodEndpoint {
  readonly running: boolean;
  connect(port: number): Socket;
  raw(
    port: number,
    pathname: string,
    init?: { method?: string; headers?: Record<string, string> },
  ): ClientRequest;
}

export interface PodState {
  /** Unique per pod object: `<name>#<uid prefix>` (names are reused). */
  key: string;
  name: string;
  uid: string;
  hostname: string;
  pod: V1Pod;
  /** Set while the pod runs (the recorder is attached to it). */
  sandbox: PodEndpoint | undefined;
  /** The pod object is gone, terminating or finished: never (re)start it. */
  done: boolean;
  /** The pod (or its node) is cut off: not a candidate the others must agree with. */
  held: boolean;
}

export interface PodsOptions {
  namespace: string;
  /** Appended to the injected elector's args (shorter fencing bound and owner check). */
  extraArgs: string[];
  logDir: string;
  /** A pod's elector can be asked from now on: attach recorders. */
  onStart: (state: PodState, endpoint: PodEndpoint) => void;
  /** It can no longer be (its container or sandbox ended). */
  onStop: (state: PodState, endpoint: PodEndpoint) => void;
  log?: (msg: string) => void;
}

export interface ChaosPods {
  readonly pods: Map<string, PodState>;
  /** A failure takes down the whole node (every pod's kubelet), not one pod's. */
  readonly nodeWide: boolean;
  start(): void;
  /** The pod the runner asks the API server to create (the webhook injects it). */
  podBody(name: string): V1Pod;
  /** What to create after admission (the real node appends `extraArgs` to what the webhook rendered). */
  prepare(core: CoreV1Api, namespace: string, body: V1Pod): Promise<V1Pod>;
  register(pod: V1Pod): PodState;
  /** Pods that run and that nobody is taking down: the candidates. */
  live(): PodState[];
  /** Kills the pod's elector container (the node restarts it). False when there was none. */
  killElector(state: PodState, restartDelayMs: number, onKilled: () => void): Promise<boolean>;
  /** The pod cut off from the API server (its node fine). */
  cutApiServer(state: PodState): void;
  restoreApiServer(state: PodState): void;
  /** The pod's node unreachable: neither it nor its kubelet reach the API server. */
  cutNode(state: PodState): void;
  /** The node is back: it acts on what the API says; resolves once a deleted pod's container stopped. */
  restoreNode(state: PodState): Promise<void>;
  /**
   * The pod's app ends (Succeeded: exit 0; Failed: killed). True when the node reports the
   * phase itself (the real kubelet); false when the runner must write it (the stand-in);
   * 'gone' when the app had already stopped (another fault of a storm ended the pod).
   */
  finish(state: PodState, phase: 'Succeeded' | 'Failed'): Promise<boolean | 'gone'>;
  /** Stops every pod (fast) and restores what the faults changed. */
  stop(graceMs?: number): Promise<void>;
}
