/**
 * Rendering the elector: its container, its token volume and the hash stamped on the pod,
 * from the plan and the configuration alone (no I/O, no clock), so the same pod and
 * configuration always render the same elector.
 */
import type { V1Container, V1EnvVar, V1Volume, V1VolumeMount } from '@kubernetes/client-node';
import {
  CONTAINER_NAME,
  ELECTOR_NODE_OPTIONS,
  ELECTOR_V8_FLAGS,
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
  ENV_POD_UID,
  PROJECT,
} from '../common/constants.ts';
import { defaultOf, quantityValue, type ElectorMode, type ElectorResources } from './config.ts';
import { preSerialized } from './patch.ts';
import { shortHash } from './pod.ts';
import type { InjectedStatus, InjectionPlan } from './policy.ts';

/** What the transformation needs from the configuration. */
export interface InjectionConfig {
  image: string;
  /** The container's `command`; empty leaves it unset (the image's entrypoint). */
  command: string[];
  /** Words before the elector's flags in `args` (e.g. `elector` for our image's entrypoint). */
  argsPrefix: string[];
  mode: ElectorMode;
  electionPort: number;
  probePort: number;
  resources: ElectorResources;
  /** This webhook's version, stamped on injected pods. */
  version: string;
}

/** Where the service-account token is mounted for in-cluster clients. */
export const TOKEN_MOUNT_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';
/** Our own projected token volume, added when the pod has none (automount disabled). */
export const TOKEN_VOLUME_NAME = `${PROJECT}-elector-token`;
/** Lifetime kubelet gives the default token (it refreshes it well before). */
const TOKEN_EXPIRATION_SECONDS = 3607;
/** The uid and gid of the image's USER (Dockerfile), given to the elector in pods that run as root. */
export const ELECTOR_UID = 65532;
/**
 * The elector's NODE_OPTIONS for a container memory limit: the fixed options plus an old
 * space of half the limit (at least 32 MiB), so V8 collects garbage before the kernel's OOM
 * killer acts (V8 sizes its heap from the machine, not from the limit: 259 MiB of heap under a
 * 128 MiB limit). Measured under a 128 MiB kernel limit with 10,000 SSE clients, 500 that
 * never read and 113,000 unread pipelined requests: peak charge 102-117 MiB without the cap,
 * 93-102 MiB with it, no OOM kill either way (`npm run chaos -- --only=abuse`). No limit: no cap.
 */
export function electorNodeOptions(memoryLimit: string): string {
  const bytes = memoryLimit === '' ? undefined : quantityValue(memoryLimit);
  if (bytes === undefined) return ELECTOR_NODE_OPTIONS;
  const oldSpaceMiB = Math.max(32, Math.floor(bytes / 2 ** 20 / 2));
  return `${ELECTOR_NODE_OPTIONS} --max-old-space-size=${oldSpaceMiB}`;
}

/** NODE_OPTIONS of an elector injected with the default memory limit (benchmarks, abuse tests). */
export const INJECTED_NODE_OPTIONS = electorNodeOptions(defaultOf('electorMemoryLimit'));

/**
 * How an elector injected with the defaults by a webhook deployed from the manifests runs, for
 * benchmarks and abuse tests that start one as a process: its NODE_OPTIONS, and the V8 flags
 * the manifests' elector command puts before the entry point.
 */
export const AS_INJECTED = {
  env: { NODE_OPTIONS: INJECTED_NODE_OPTIONS },
  nodeArgs: ELECTOR_V8_FLAGS,
} as const;

function fieldEnv(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } } };
}

/** The elector container for a plan, with no defaults left for the API server to fill in that matter. */
export function electorContainer(
  plan: InjectionPlan,
  config: InjectionConfig,
  tokenMount: V1VolumeMount | undefined,
  podRunsAsRoot = false,
): V1Container {
  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  if (config.resources.cpuRequest) requests['cpu'] = config.resources.cpuRequest;
  if (config.resources.memoryRequest) requests['memory'] = config.resources.memoryRequest;
  if (config.resources.cpuLimit) limits['cpu'] = config.resources.cpuLimit;
  if (config.resources.memoryLimit) limits['memory'] = config.resources.memoryLimit;
  const container: V1Container = {
    name: CONTAINER_NAME,
    image: config.image,
    ...(config.command.length > 0 ? { command: [...config.command] } : {}),
    args: [
      ...config.argsPrefix,
      `--election=${plan.election.name}`,
      `--election-namespace=${plan.namespace}`,
      `--http=127.0.0.1:${plan.electionPort}`,
      `--probe-address=0.0.0.0:${plan.probePort}`,
    ],
    env: [
      fieldEnv(ENV_POD_NAME, 'metadata.name'),
      fieldEnv(ENV_POD_NAMESPACE, 'metadata.namespace'),
      fieldEnv(ENV_POD_UID, 'metadata.uid'),
      { name: 'NODE_OPTIONS', value: electorNodeOptions(config.resources.memoryLimit) },
    ],
    ports: [{ name: 'elector-probe', containerPort: plan.probePort, protocol: 'TCP' }],
    resources: {
      ...(Object.keys(requests).length > 0 ? { requests } : {}),
      ...(Object.keys(limits).length > 0 ? { limits } : {}),
    },
    // Passes the Pod Security "restricted" profile on its own, whatever the pod sets. No
    // runAsUser as a rule: the pod's uid, else the image's numeric non-root USER applies (and
    // OpenShift assigns one from the namespace's range, which a fixed uid would fall outside).
    // A pod that runs as root (runAsUser: 0) would give the elector uid 0, which
    // runAsNonRoot makes the kubelet refuse: then the elector gets the image's own uid/gid.
    securityContext: {
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      privileged: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      ...(podRunsAsRoot ? { runAsUser: ELECTOR_UID, runAsGroup: ELECTOR_UID } : {}),
      seccompProfile: { type: 'RuntimeDefault' },
    },
    // Ready means "knows the leader": as a native sidecar this holds the app back until its
    // first question can be answered. Up to 10 minutes, then the kubelet restarts it.
    startupProbe: {
      httpGet: { path: '/readyz', port: plan.probePort, scheme: 'HTTP' },
      periodSeconds: 1,
      timeoutSeconds: 1,
      successThreshold: 1,
      failureThreshold: 600,
    },
    // No readiness probe: an elector that lost the API server must not take the app's pod
    // out of its Services. Liveness only catches a hung process.
    livenessProbe: {
      httpGet: { path: '/healthz', port: plan.probePort, scheme: 'HTTP' },
      periodSeconds: 10,
      timeoutSeconds: 1,
      successThreshold: 1,
      failureThreshold: 3,
    },
    ...(tokenMount ? { volumeMounts: [tokenMount] } : {}),
    terminationMessagePolicy: 'FallbackToLogsOnError',
    ...(config.mode === 'native-sidecar' ? { restartPolicy: 'Always' } : {}),
  };
  return container;
}

/** The projected service-account token volume for pods that mount none (automount disabled). */
export function tokenVolume(): V1Volume {
  return {
    name: TOKEN_VOLUME_NAME,
    projected: {
      defaultMode: 420,
      sources: [
        { serviceAccountToken: { path: 'token', expirationSeconds: TOKEN_EXPIRATION_SECONDS } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        {
          downwardAPI: {
            items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }],
          },
        },
      ],
    },
  };
}

/**
 * The hash stamped on an injected pod: of the rendered elector, its volume and the mode. A pod
 * that carries the hash of what we would render keeps the elector it has (the API server
 * defaults fields in it, so comparing containers would see a difference). Plain JSON of
 * objects this module builds, so the key order is this code's: stable for a given version,
 * and several times cheaper than sorting keys (this runs on every injection). A version that
 * renders differently re-renders the elector of a pod it reviews again, as it should.
 */
export function renderHash(elector: V1Container, volume: V1Volume | undefined, mode: ElectorMode): string {
  return shortHash(JSON.stringify({ elector, volume: volume ?? null, mode }), 12);
}

/** The elector as rendered for a pod: container, token volume (when ours), and their hash. */
export interface RenderedElector {
  container: V1Container;
  /** `[container]`, the value that adds the list to a pod without one. */
  containerAlone: readonly V1Container[];
  volume: V1Volume | undefined;
  /** `[volume]`, likewise. */
  volumeAlone: readonly V1Volume[] | undefined;
  hash: string;
  /** The status annotation's value: an {@link InjectedStatus} as JSON. */
  status: string;
}

/** Rendered electors by configuration, then by what else the rendering reads; bounded. */
const rendered = new WeakMap<InjectionConfig, Map<string, RenderedElector>>();
/** Distinct renderings kept per configuration (an election and namespace each, in practice). */
export const MAX_CACHED_RENDERINGS = 1024;

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

/**
 * {@link electorContainer}, {@link tokenVolume} and {@link renderHash} for a pod, remembered:
 * the rendering is a pure function of the plan, the configuration, the token mount and
 * whether the pod runs as root, and every pod of a workload asks for the same one, so each
 * is rendered and hashed once (the hash was the largest part of an injection). The results
 * are frozen, as they are shared between reviews, and their JSON is made once too (the patch
 * copies it: serialising the container was the largest part of a review left). The
 * configuration must not change after its first use (it is the process's, made once at
 * start-up).
 */
export function renderElector(
  plan: InjectionPlan,
  config: InjectionConfig,
  tokenMount: V1VolumeMount,
  ownVolume: boolean,
  podRunsAsRoot: boolean,
): RenderedElector {
  let cache = rendered.get(config);
  if (!cache) rendered.set(config, (cache = new Map<string, RenderedElector>()));
  const key = JSON.stringify([
    plan.election.name,
    plan.namespace,
    plan.electionPort,
    plan.probePort,
    tokenMount.name,
    tokenMount.mountPath,
    tokenMount.readOnly ?? null,
    ownVolume,
    podRunsAsRoot,
  ]);
  const hit = cache.get(key);
  if (hit) return hit;
  const container = preSerialized(deepFreeze(electorContainer(plan, config, tokenMount, podRunsAsRoot)));
  const volume = ownVolume ? preSerialized(deepFreeze(tokenVolume())) : undefined;
  const hash = renderHash(container, volume, config.mode);
  const status: InjectedStatus = {
    version: config.version,
    hash,
    election: plan.election.name,
    mode: config.mode,
  };
  const entry: RenderedElector = Object.freeze({
    container,
    containerAlone: preSerialized(Object.freeze([container])),
    volume,
    volumeAlone: volume ? preSerialized(Object.freeze([volume])) : undefined,
    hash,
    status: JSON.stringify(status),
  });
  // Oldest first out: a Map iterates in insertion order.
  if (cache.size >= MAX_CACHED_RENDERINGS) cache.delete(cache.keys().next().value!);
  cache.set(key, entry);
  return entry;
}
