/**
 * What to inject, and whether to: the pure policy ("should this pod get an elector, and if
 * not, why") and the pure transformation (a mutated copy of the pod). No I/O, no clock, no
 * logging: values in, values out; `admission.ts` turns the result into a response.
 *
 * The transformation is idempotent by construction: the elector's container and volume are
 * rendered from the pod and the configuration alone, their hash is stamped on the pod
 * (`lifelease.dev/injected`), and a pod that already carries the same hash keeps what it has
 * (the API server defaults fields of what we injected, so re-rendering would differ).
 * Environment entries are only ever added when missing, never replaced.
 */
import type {
  V1Container,
  V1ContainerPort,
  V1EnvVar,
  V1Pod,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import { createHash } from 'node:crypto';
import {
  ANNOTATION_ELECTION,
  ANNOTATION_ELECTION_PORT,
  ANNOTATION_INJECTED,
  ANNOTATION_PROBE_PORT,
  appEnv,
  CONTAINER_NAME,
  ENV_POD_NAME,
  ENV_POD_NAMESPACE,
  ENV_POD_UID,
  ELECTOR_NODE_OPTIONS,
  LABEL_ELECTION,
  OPT_IN_KEY,
  PROJECT,
} from '../common/constants.ts';
import { defaultOf, quantityValue, type ElectorMode, type ElectorResources } from './config.ts';

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
/** Maximum length of a Lease name we produce (also a label value and part of a Role name). */
export const MAX_ELECTION_NAME = 63;

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why a pod is left alone; low cardinality (a metrics label). */
export type SkipReason = 'not-opted-in' | 'opted-out';
/** Why a pod is refused; low cardinality (a metrics label). */
export type RefuseReason =
  | 'invalid-opt-in'
  | 'host-network'
  | 'port-clash'
  | 'invalid-port'
  | 'invalid-election-name'
  | 'name-taken'
  | 'malformed-pod';

/** Where the election name came from. */
export type ElectionSource =
  'annotation' | 'app-label' | 'app-kubernetes-io-name-label' | 'owner' | 'generate-name' | 'pod-name';

export interface Election {
  name: string;
  source: ElectionSource;
  /** The value the name was derived from, when it had to be changed to be a valid name. */
  derivedFrom?: string;
}

export interface InjectionPlan {
  election: Election;
  namespace: string;
  electionPort: number;
  probePort: number;
}

export type Decision =
  | { kind: 'skip'; reason: SkipReason }
  | { kind: 'refuse'; reason: RefuseReason; message: string }
  | { kind: 'inject'; plan: InjectionPlan };

export interface InjectionResult {
  pod: V1Pod;
  warnings: string[];
}

/** The value of our status annotation. */
export interface InjectedStatus {
  version: string;
  /** Hash of the rendered elector container, volume and election. */
  hash: string;
  election: string;
  mode: ElectorMode;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function stringMap(v: unknown): Record<string, string> {
  if (!isRecord(v)) return {};
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) if (typeof val === 'string') out[k] = val;
  return out;
}

function containersOf(list: unknown): V1Container[] {
  return Array.isArray(list) ? list.filter(isRecord).map((c) => c as unknown as V1Container) : [];
}

/** True when the pod carries our status annotation (so an `elector` container is ours). */
function injectedStatus(pod: V1Pod): InjectedStatus | undefined {
  const text = stringMap(pod.metadata?.annotations)[ANNOTATION_INJECTED];
  if (text === undefined) return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (isRecord(parsed) && typeof parsed['hash'] === 'string') return parsed as unknown as InjectedStatus;
  } catch {
    // Not ours, or damaged: treated as present but unmatched.
  }
  return { version: '', hash: '', election: '', mode: 'native-sidecar' };
}

// ---------------------------------------------------------------------------------------
// Opt-in
// ---------------------------------------------------------------------------------------

type OptIn = { kind: 'yes' } | { kind: 'no'; reason: SkipReason } | { kind: 'invalid'; message: string };

function parseFlag(value: string | undefined): boolean | undefined | 'invalid' {
  if (value === undefined) return undefined;
  const v = value.trim().toLowerCase();
  if (v === 'true') return true;
  if (v === 'false') return false;
  return 'invalid';
}

/** Reads the opt-in from the label and the annotation `leaderElection` ("true"/"false", any case). */
export function optIn(pod: V1Pod): OptIn {
  const labelValue = stringMap(pod.metadata?.labels)[OPT_IN_KEY];
  const annotationValue = stringMap(pod.metadata?.annotations)[OPT_IN_KEY];
  const label = parseFlag(labelValue);
  const annotation = parseFlag(annotationValue);
  const bad: string[] = [];
  if (label === 'invalid') bad.push(`label ${OPT_IN_KEY}=${JSON.stringify(labelValue)}`);
  if (annotation === 'invalid') bad.push(`annotation ${OPT_IN_KEY}=${JSON.stringify(annotationValue)}`);
  if (bad.length > 0) {
    return {
      kind: 'invalid',
      message: `${bad.join(' and ')} must be "true" or "false" (any case); set "true" to take part in leader election`,
    };
  }
  if (label !== undefined && annotation !== undefined && label !== annotation) {
    return {
      kind: 'invalid',
      message: `label ${OPT_IN_KEY}="${labelValue}" and annotation ${OPT_IN_KEY}="${annotationValue}" disagree; remove one or make them equal`,
    };
  }
  if (label === true || annotation === true) return { kind: 'yes' };
  if (label === false || annotation === false) return { kind: 'no', reason: 'opted-out' };
  return { kind: 'no', reason: 'not-opted-in' };
}

// ---------------------------------------------------------------------------------------
// Election name
// ---------------------------------------------------------------------------------------

function shortHash(text: string, length = 6): string {
  return createHash('sha256').update(text).digest('hex').slice(0, length);
}

/** True when `name` is a valid election name: a lowercase DNS subdomain of at most 63 characters. */
export function isValidElectionName(name: string): boolean {
  return name.length > 0 && name.length <= MAX_ELECTION_NAME && DNS_SUBDOMAIN.test(name);
}

/** Lowercases and replaces what a Lease name cannot hold; '' when nothing usable is left. */
function sanitize(raw: string): string {
  return raw
    .toLowerCase()
    .replace(/[^a-z0-9.-]/g, '-')
    .split('.')
    .map((segment) => segment.replace(/^-+|-+$/g, ''))
    .filter((segment) => segment !== '')
    .join('.');
}

/**
 * Turns a label value or workload name into a valid election name. Unchanged when already
 * valid. Otherwise sanitized and suffixed with a short hash of the original, so two values
 * that sanitize alike ("My_App", "my-app") never share an election; too long names are cut
 * and suffixed the same way. Deterministic, so every pod of a workload gets the same name.
 */
export function toElectionName(raw: string): string | undefined {
  if (isValidElectionName(raw)) return raw;
  const clean = sanitize(raw);
  if (clean === '') return undefined;
  const suffix = `-${shortHash(raw)}`;
  const head = clean.slice(0, MAX_ELECTION_NAME - suffix.length).replace(/[.-]+$/, '');
  return head === '' ? undefined : `${head}${suffix}`;
}

/** A CronJob names its Jobs `<cronjob>-<scheduled minute since the epoch>`. */
const CRONJOB_JOB = /^(.+)-(\d{8,})$/;

/** The owning workload's name, as stable as Kubernetes allows: survives rollouts and CronJob runs. */
function workloadName(pod: V1Pod): { name: string; source: ElectionSource } | undefined {
  const meta = pod.metadata ?? {};
  const labels = stringMap(meta.labels);
  const templateHash = labels['pod-template-hash'];
  const stripHash = (name: string) =>
    templateHash && name.endsWith(`-${templateHash}`) ? name.slice(0, -templateHash.length - 1) : name;

  const owners = Array.isArray(meta.ownerReferences) ? meta.ownerReferences.filter(isRecord) : [];
  const owner = owners.find((o) => o.controller === true) ?? owners[0];
  if (owner && typeof owner.name === 'string' && owner.name !== '') {
    if (owner.kind === 'ReplicaSet') return { name: stripHash(owner.name), source: 'owner' };
    if (owner.kind === 'Job') {
      const m = CRONJOB_JOB.exec(owner.name);
      return { name: m?.[1] ?? owner.name, source: 'owner' };
    }
    return { name: owner.name, source: 'owner' };
  }
  if (typeof meta.generateName === 'string' && meta.generateName.replace(/-+$/, '') !== '') {
    return { name: stripHash(meta.generateName.replace(/-+$/, '')), source: 'generate-name' };
  }
  return undefined;
}

/**
 * The election's name, from (in order) the `lifelease.dev/election` annotation (used as is,
 * refused when invalid), the `app` label, the `app.kubernetes.io/name` label, the owning
 * workload (ReplicaSet hash stripped; a CronJob's Jobs share one), the `generateName`, and
 * finally the pod's own name.
 */
export function electionName(pod: V1Pod): Election | { invalid: string } {
  const meta = pod.metadata ?? {};
  const explicit = stringMap(meta.annotations)[ANNOTATION_ELECTION];
  if (explicit !== undefined) {
    if (isValidElectionName(explicit)) return { name: explicit, source: 'annotation' };
    const suggestion = sanitize(explicit)
      .slice(0, MAX_ELECTION_NAME)
      .replace(/[.-]+$/, '');
    return {
      invalid:
        `annotation ${ANNOTATION_ELECTION}=${JSON.stringify(explicit)} is not a valid election name: ` +
        `use at most ${MAX_ELECTION_NAME} lowercase letters, digits, '-' and '.', starting and ending with a letter or digit` +
        (suggestion !== '' ? ` (e.g. "${suggestion}")` : ''),
    };
  }
  const labels = stringMap(meta.labels);
  const candidates: { raw: string | undefined; source: ElectionSource }[] = [
    { raw: labels['app'], source: 'app-label' },
    { raw: labels['app.kubernetes.io/name'], source: 'app-kubernetes-io-name-label' },
  ];
  const workload = workloadName(pod);
  if (workload) candidates.push({ raw: workload.name, source: workload.source });
  candidates.push({ raw: typeof meta.name === 'string' ? meta.name : undefined, source: 'pod-name' });
  for (const { raw, source } of candidates) {
    if (raw === undefined || raw === '') continue;
    const name = toElectionName(raw);
    if (name === undefined) continue;
    return name === raw ? { name, source } : { name, source, derivedFrom: raw };
  }
  return { invalid: 'the pod has no name, generateName or labels to derive an election name from' };
}

// ---------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------

function portAnnotation(
  annotations: Record<string, string>,
  key: string,
  fallback: number,
): number | { invalid: string } {
  const text = annotations[key];
  if (text === undefined) return fallback;
  const n = /^\d+$/.test(text.trim()) ? Number(text.trim()) : NaN;
  if (n >= 1024 && n <= 65535) return n;
  return { invalid: `annotation ${key}=${JSON.stringify(text)} must be a port number in 1024..65535` };
}

function declaredPorts(container: V1Container): V1ContainerPort[] {
  return Array.isArray(container.ports) ? container.ports.filter(isRecord) : [];
}

/**
 * Should this pod get an elector? Returns why not (skip or refuse, with a message that says
 * what to change), or the plan: election name and ports.
 */
export function decide(pod: unknown, namespace: string, config: InjectionConfig): Decision {
  if (!isRecord(pod) || !isRecord(pod['spec']) || !Array.isArray(pod['spec']['containers'])) {
    const opted = isRecord(pod) ? optIn(pod) : undefined;
    if (opted?.kind !== 'yes') return { kind: 'skip', reason: 'not-opted-in' };
    return { kind: 'refuse', reason: 'malformed-pod', message: 'the pod has no spec.containers' };
  }
  const p = pod as V1Pod;
  const opt = optIn(p);
  if (opt.kind === 'no') return { kind: 'skip', reason: opt.reason };
  if (opt.kind === 'invalid') return { kind: 'refuse', reason: 'invalid-opt-in', message: opt.message };

  const spec = p.spec!;
  if (spec.hostNetwork === true) {
    return {
      kind: 'refuse',
      reason: 'host-network',
      message:
        "pods with hostNetwork: true cannot take part in leader election: the elector's ports would be the node's, " +
        `shared with every other such pod; remove hostNetwork or set ${OPT_IN_KEY}: "false"`,
    };
  }
  if (namespace === '')
    return { kind: 'refuse', reason: 'malformed-pod', message: 'the pod has no namespace' };

  const election = electionName(p);
  if ('invalid' in election)
    return { kind: 'refuse', reason: 'invalid-election-name', message: election.invalid };

  const annotations = stringMap(p.metadata?.annotations);
  const electionPort = portAnnotation(annotations, ANNOTATION_ELECTION_PORT, config.electionPort);
  const probePort = portAnnotation(annotations, ANNOTATION_PROBE_PORT, config.probePort);
  const portProblems = [electionPort, probePort].flatMap((v) => (typeof v === 'number' ? [] : [v.invalid]));
  if (portProblems.length > 0)
    return { kind: 'refuse', reason: 'invalid-port', message: portProblems.join('; ') };
  const ports = { election: electionPort as number, probe: probePort as number };
  if (ports.election === ports.probe) {
    return {
      kind: 'refuse',
      reason: 'invalid-port',
      message: `the election port and the probe port are both ${ports.election}; set ${ANNOTATION_ELECTION_PORT} and ${ANNOTATION_PROBE_PORT} to different ports`,
    };
  }

  const ours = injectedStatus(p) !== undefined;
  const all = [...containersOf(spec.initContainers), ...containersOf(spec.containers)];
  for (const c of all) {
    if (c.name === CONTAINER_NAME && !ours) {
      return {
        kind: 'refuse',
        reason: 'name-taken',
        message: `the pod already has a container named "${CONTAINER_NAME}" (another injector's?); rename or remove it, or set ${OPT_IN_KEY}: "false"`,
      };
    }
  }
  const clashes: string[] = [];
  for (const c of all) {
    if (c.name === CONTAINER_NAME) continue;
    for (const port of declaredPorts(c)) {
      if ((port.protocol ?? 'TCP') !== 'TCP') continue;
      if (port.containerPort === ports.election) {
        clashes.push(
          `container "${c.name}" uses port ${ports.election}, the elector's election port; set annotation ${ANNOTATION_ELECTION_PORT} to a free port`,
        );
      }
      if (port.containerPort === ports.probe) {
        clashes.push(
          `container "${c.name}" uses port ${ports.probe}, the elector's probe port; set annotation ${ANNOTATION_PROBE_PORT} to a free port`,
        );
      }
    }
  }
  if (clashes.length > 0) return { kind: 'refuse', reason: 'port-clash', message: clashes.join('; ') };

  const volumes = Array.isArray(spec.volumes) ? spec.volumes.filter(isRecord) : [];
  if (!ours && volumes.some((v) => v.name === TOKEN_VOLUME_NAME)) {
    return {
      kind: 'refuse',
      reason: 'name-taken',
      message: `the pod already has a volume named "${TOKEN_VOLUME_NAME}"; rename it`,
    };
  }

  return {
    kind: 'inject',
    plan: { election, namespace, electionPort: ports.election, probePort: ports.probe },
  };
}

// ---------------------------------------------------------------------------------------
// Transformation
// ---------------------------------------------------------------------------------------

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

function fieldEnv(name: string, fieldPath: string): V1EnvVar {
  return { name, valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath } } };
}

/** The elector container for a plan, with no defaults left for the API server to fill in that matter. */
export function electorContainer(
  plan: InjectionPlan,
  config: InjectionConfig,
  tokenMount: V1VolumeMount | undefined,
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
    // runAsUser: the image's numeric non-root USER applies (and OpenShift may assign one).
    securityContext: {
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
      privileged: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
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
 * The token mount for the elector: the one the pod's containers already use (the
 * ServiceAccount admission plugin runs before webhooks and adds it, unless automount is off
 * for the pod or its ServiceAccount), else our own volume, mounted into the elector only.
 */
function tokenMountFor(containers: V1Container[]): { mount: V1VolumeMount; ownVolume: boolean } {
  for (const c of containers) {
    if (c.name === CONTAINER_NAME || !Array.isArray(c.volumeMounts)) continue;
    const m = c.volumeMounts.find((vm) => isRecord(vm) && vm.mountPath === TOKEN_MOUNT_PATH);
    if (m && typeof m.name === 'string') {
      return { mount: { name: m.name, mountPath: TOKEN_MOUNT_PATH, readOnly: true }, ownVolume: false };
    }
  }
  return { mount: { name: TOKEN_VOLUME_NAME, mountPath: TOKEN_MOUNT_PATH, readOnly: true }, ownVolume: true };
}

/**
 * A value quoted for a warning, cut to 40 characters so warnings stay short. Takes anything:
 * mutating admission runs before validation, so a pod may come with a container without a
 * name (or with a number for one), and the API server refuses it only after us.
 */
function clip(value: unknown): string {
  const text = typeof value === 'string' ? value : String(JSON.stringify(value) ?? value);
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 39)}…` : text);
}

/** Stable JSON (sorted keys) for hashing. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (isRecord(v)) {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** Where the elector goes among init containers: after other injectors' native sidecars. */
function sidecarIndex(initContainers: V1Container[]): number {
  let index = 0;
  initContainers.forEach((c, i) => {
    if (c.restartPolicy === 'Always') index = i + 1;
  });
  return index;
}

function envNames(c: V1Container): Map<string, V1EnvVar> {
  const out = new Map<string, V1EnvVar>();
  if (Array.isArray(c.env))
    for (const e of c.env) if (isRecord(e) && typeof e.name === 'string') out.set(e.name, e);
  return out;
}

/**
 * Applies a plan to a copy of the pod: the elector container (and its token volume when
 * needed), the `ELECTOR_*` env on every app container that lacks it, the election label and
 * the status annotation. Returns the copy and the warnings for the user.
 */
export function inject(original: V1Pod, plan: InjectionPlan, config: InjectionConfig): InjectionResult {
  const pod = structuredClone(original);
  const warnings: string[] = [];
  const meta = (pod.metadata ??= {});
  const spec = pod.spec!;
  const labels = (meta.labels = isRecord(meta.labels) ? meta.labels : {});
  const annotations = (meta.annotations = isRecord(meta.annotations) ? meta.annotations : {});
  const election = plan.election;

  // 1. Warnings about the election's name (kept under ~120 characters, as Kubernetes asks).
  if (election.source === 'pod-name') {
    warnings.push(
      `election ${JSON.stringify(election.name)} is this pod's own name, so it is alone; group pods with label app or annotation ${ANNOTATION_ELECTION}`,
    );
  } else if (election.derivedFrom !== undefined) {
    warnings.push(
      `election ${JSON.stringify(election.name)} derived from ${clip(election.derivedFrom)}; pick a name with annotation ${ANNOTATION_ELECTION}`,
    );
  }
  const previousLabel = labels[LABEL_ELECTION];
  if (previousLabel !== undefined && previousLabel !== election.name) {
    warnings.push(
      `label ${LABEL_ELECTION}=${clip(previousLabel)} replaced by ${JSON.stringify(election.name)}; name elections with the annotation`,
    );
  }

  // 2. Take out an elector we injected earlier, remembering where it was.
  let initContainers = containersOf(spec.initContainers);
  let containers = containersOf(spec.containers);
  const status = injectedStatus(original);
  const previous =
    initContainers.find((c) => c.name === CONTAINER_NAME) ??
    containers.find((c) => c.name === CONTAINER_NAME);
  const previousIndex = {
    init: initContainers.findIndex((c) => c.name === CONTAINER_NAME),
    app: containers.findIndex((c) => c.name === CONTAINER_NAME),
  };
  initContainers = initContainers.filter((c) => c.name !== CONTAINER_NAME);
  containers = containers.filter((c) => c.name !== CONTAINER_NAME);

  // 3. Render the elector and its token volume; keep the existing one if it is what we render.
  const token = tokenMountFor([...containers, ...initContainers]);
  let elector = electorContainer(plan, config, token.mount);
  const volume = token.ownVolume ? tokenVolume() : undefined;
  const hash = shortHash(canonical({ elector, volume: volume ?? null, mode: config.mode }), 12);
  const current = status?.hash === hash && previous !== undefined;
  if (current) elector = previous;

  if (config.mode === 'native-sidecar') {
    const at =
      previousIndex.init >= 0
        ? Math.min(previousIndex.init, initContainers.length)
        : sidecarIndex(initContainers);
    initContainers.splice(at, 0, elector);
  } else {
    const at = previousIndex.app >= 0 ? Math.min(previousIndex.app, containers.length) : containers.length;
    containers.splice(at, 0, elector);
    if (spec.restartPolicy === 'Never' || spec.restartPolicy === 'OnFailure') {
      warnings.push(
        `the elector runs as a plain container here, so this restartPolicy ${spec.restartPolicy} pod keeps running after the app exits`,
      );
    }
  }

  const volumes = Array.isArray(spec.volumes) ? [...spec.volumes] : [];
  const existingVolume = volumes.findIndex((v) => isRecord(v) && v.name === TOKEN_VOLUME_NAME);
  if (volume && existingVolume === -1) {
    spec.volumes = [...volumes, volume];
  } else if (volume && !current) {
    volumes.splice(existingVolume, 1, volume);
    spec.volumes = volumes;
  } else if (!volume && existingVolume !== -1) {
    volumes.splice(existingVolume, 1);
    spec.volumes = volumes;
  }

  // 4. The app's env: prepended (so the user's own entries can refer to them with $(VAR)),
  // only where missing; a different value the user set is kept, with a warning.
  const wanted = appEnv(plan.electionPort);
  const electorAt = initContainers.indexOf(elector);
  const appContainers = [
    ...containers.filter((c) => c !== elector),
    // Init containers that start after a native-sidecar elector can ask it too.
    ...(config.mode === 'native-sidecar' ? initContainers.slice(electorAt + 1) : []),
  ];
  for (const c of appContainers) {
    const present = envNames(c);
    const missing = wanted.filter((w) => !present.has(w.name));
    for (const w of wanted) {
      const own = present.get(w.name);
      if (own && (own.value !== w.value || own.valueFrom !== undefined)) {
        warnings.push(`container ${clip(c.name)} keeps its own ${w.name}; the elector answers at ${w.value}`);
      }
    }
    if (missing.length > 0) c.env = [...missing, ...(Array.isArray(c.env) ? c.env : [])];
  }

  // 5. Write back, plus the label (to find electing pods) and the status annotation.
  if (initContainers.length > 0) spec.initContainers = initContainers;
  else if (previousIndex.init >= 0) delete spec.initContainers;
  spec.containers = containers;
  labels[LABEL_ELECTION] = election.name;
  if (!current) {
    const stamp: InjectedStatus = {
      version: config.version,
      hash,
      election: election.name,
      mode: config.mode,
    };
    annotations[ANNOTATION_INJECTED] = JSON.stringify(stamp);
  }

  return { pod, warnings };
}
