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
 *
 * Where the elector goes: last among the init containers (native-sidecar mode).
 *  - Regular init containers (migrations, config rendering, wait-for-database) run before it:
 *    none of them should wait for an election (up to a lease duration), and none can ask the
 *    elector (not running yet), so they get no ELECTOR_* env.
 *  - Native sidecars declared before it (log shippers, database proxies, mesh proxies) start
 *    first. A mesh whose CNI plugin redirects all pod traffic to its proxy (Istio CNI,
 *    Linkerd CNI) in native-sidecar mode has its proxy up before the elector, which then
 *    reaches the API server through it. Elector first would deadlock: its startup probe waits
 *    for the API server, which needs the proxy, which waits for the elector to be started.
 *  - A webhook that appends an init container after ours reinvokes us; the elector moves to
 *    the end again. A mesh proxy that is a regular container starts after all init containers:
 *    no init container, ours included, reaches the network there; the README says what to
 *    exclude from the redirection.
 * The user's native sidecars run beside the app and get the ELECTOR_* env like it.
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
/** The uid and gid of the image's USER (Dockerfile), given to the elector in pods that run as root. */
export const ELECTOR_UID = 65532;
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
  | 'windows'
  | 'shared-hostname'
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
 * refused when invalid), the owning workload (a ReplicaSet's pod-template-hash stripped, so
 * a Deployment's pods share one across rollouts; a CronJob's Jobs share one), the `app`
 * label, the `app.kubernetes.io/name` label, the `generateName`, and finally the pod's own
 * name. The workload comes before the labels because real manifests share `app` labels
 * across components (a controller and its admission Jobs, a primary and its replicas, the
 * versions of one service): two workloads never share an election unless the user names it.
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
  const candidates: { raw: string | undefined; source: ElectionSource }[] = [];
  const workload = workloadName(pod);
  if (workload?.source === 'owner') candidates.push({ raw: workload.name, source: 'owner' });
  candidates.push(
    { raw: labels['app'], source: 'app-label' },
    { raw: labels['app.kubernetes.io/name'], source: 'app-kubernetes-io-name-label' },
  );
  if (workload?.source === 'generate-name') candidates.push({ raw: workload.name, source: 'generate-name' });
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

/** Node labels that name a node's operating system (the beta one is still set by kubelets). */
const OS_LABELS = ['kubernetes.io/os', 'beta.kubernetes.io/os'];

/**
 * Why the pod runs on Windows nodes only, or undefined: `spec.os.name: windows`, a nodeSelector
 * on the OS label, or a required node affinity whose every term allows Windows only. The
 * elector is a Linux container: in a Windows pod the API server rejects its Linux
 * securityContext, and on a Windows node it could never start, so its startup probe would hold
 * the app back for ever.
 */
function windowsOnly(spec: Record<string, unknown>): string | undefined {
  const os = spec['os'];
  if (isRecord(os) && typeof os['name'] === 'string' && os['name'].toLowerCase() === 'windows')
    return 'spec.os.name is windows';
  const selector = stringMap(spec['nodeSelector']);
  for (const key of OS_LABELS)
    if (selector[key]?.toLowerCase() === 'windows') return `its nodeSelector ${key} is windows`;
  const affinity = isRecord(spec['affinity']) ? spec['affinity']['nodeAffinity'] : undefined;
  const required = isRecord(affinity)
    ? affinity['requiredDuringSchedulingIgnoredDuringExecution']
    : undefined;
  const terms =
    isRecord(required) && Array.isArray(required['nodeSelectorTerms']) ? required['nodeSelectorTerms'] : [];
  // Terms are ORed: Windows only when every term excludes Linux.
  const excludesLinux = (term: unknown) =>
    isRecord(term) &&
    Array.isArray(term['matchExpressions']) &&
    term['matchExpressions'].some((e: unknown) => {
      if (!isRecord(e) || typeof e['key'] !== 'string' || !OS_LABELS.includes(e['key'])) return false;
      const values = Array.isArray(e['values']) ? e['values'].map((v) => String(v).toLowerCase()) : [];
      if (e['operator'] === 'In') return !values.includes('linux');
      if (e['operator'] === 'NotIn') return values.includes('linux');
      return e['operator'] === 'DoesNotExist';
    });
  if (terms.length > 0 && terms.every(excludesLinux))
    return 'its required node affinity allows Windows nodes only';
  return undefined;
}

/** Annotation the Job controller sets on the pods of an Indexed Job (it sets their hostname too). */
const JOB_COMPLETION_INDEX = 'batch.kubernetes.io/job-completion-index';

/**
 * The controller whose pods would all carry the same user-set `spec.hostname`, or undefined.
 * The elector names a leader by its hostname (NAIS's contract: the app compares it with its
 * own), so replicas sharing a hostname would all believe they lead. A StatefulSet sets each
 * pod's hostname to its name, and the Job controller sets `<job>-<index>` for an Indexed Job:
 * both distinct, so both fine. A pod without a controller is alone.
 */
function sharedHostnameOwner(pod: V1Pod): { kind: string; name: string } | undefined {
  const hostname = pod.spec?.hostname;
  if (typeof hostname !== 'string' || hostname === '') return undefined;
  const meta = pod.metadata ?? {};
  const owners = Array.isArray(meta.ownerReferences) ? meta.ownerReferences.filter(isRecord) : [];
  const owner = owners.find((o) => o.controller === true);
  if (!owner) return undefined;
  const kind = typeof owner.kind === 'string' ? owner.kind : '';
  if (kind === 'StatefulSet') return undefined;
  if (kind === 'Job' && stringMap(meta.annotations)[JOB_COMPLETION_INDEX] !== undefined) return undefined;
  return { kind, name: typeof owner.name === 'string' ? owner.name : '' };
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
  const windows = windowsOnly(spec as unknown as Record<string, unknown>);
  if (windows !== undefined) {
    return {
      kind: 'refuse',
      reason: 'windows',
      message:
        `this pod runs on Windows nodes (${windows}), and the elector is a Linux container; ` +
        `set ${OPT_IN_KEY}: "false" on Windows pods`,
    };
  }
  const sharer = sharedHostnameOwner(p);
  if (sharer !== undefined) {
    return {
      kind: 'refuse',
      reason: 'shared-hostname',
      message:
        `spec.hostname ${clip(spec.hostname)} is the same in every pod of ${sharer.kind} ${clip(sharer.name)}, ` +
        'and the elector names the leader by hostname, so every replica would believe it leads; ' +
        'remove spec.hostname from the pod template',
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

/**
 * True when an `envFrom` source of the container could hold an `ELECTOR_*` name: a source
 * without prefix, or with a prefix that an `ELECTOR_*` name starts with. Admission makes no API
 * call, so the ConfigMap or Secret itself cannot be read: we assume it may.
 */
function envFromMayProvide(c: V1Container): boolean {
  if (!Array.isArray(c.envFrom)) return false;
  return c.envFrom.some((source) => {
    if (!isRecord(source)) return false;
    const prefix = typeof source.prefix === 'string' ? source.prefix : '';
    return 'ELECTOR_'.startsWith(prefix) || prefix.startsWith('ELECTOR_');
  });
}

/** The resources the pod-level `spec.resources` account for the elector (Kubernetes 1.34+). */
const POD_LEVEL = ['cpu', 'memory'] as const;

/** A container's request of a resource as the API server counts it: the request, else the limit. */
function requestOf(c: V1Container | undefined, resource: string): number {
  const r = isRecord(c?.resources) ? c.resources : {};
  const text = stringMap(r.requests)[resource] ?? stringMap(r.limits)[resource];
  return text === undefined ? 0 : (quantityValue(text) ?? 0);
}

/** A container's limit of a resource, else its request (what it may use of a pod-level limit). */
function limitOf(c: V1Container | undefined, resource: string): number {
  const r = isRecord(c?.resources) ? c.resources : {};
  const text = stringMap(r.limits)[resource] ?? stringMap(r.requests)[resource];
  return text === undefined ? 0 : (quantityValue(text) ?? 0);
}

/** A quantity for a value: whole millicores for CPU, whole bytes (in Mi or Ki when exact) for memory. */
function formatQuantity(resource: string, value: number): string {
  if (resource === 'cpu') return `${Math.ceil(Math.round(value * 1e9) / 1e6)}m`;
  const bytes = Math.ceil(value);
  if (bytes % 2 ** 20 === 0) return `${bytes / 2 ** 20}Mi`;
  if (bytes % 2 ** 10 === 0) return `${bytes / 2 ** 10}Ki`;
  return String(bytes);
}

/**
 * Pod-level resources (`spec.resources`) must hold the containers' aggregate requests, and
 * each container's limit, or the API server rejects the pod. Where the pod sets a pod-level
 * request or limit of CPU or memory, the elector's share is added to it (minus what an
 * elector injected before had), so the pod's budget grows by exactly the elector's.
 * Requests grow by the elector's request (its limit when it has none: the API server defaults
 * it so), limits by its limit (its request when it has none), so requests stay within limits.
 * A value we cannot read is left alone (the API server will say what is wrong with it).
 */
function adjustPodResources(
  spec: NonNullable<V1Pod['spec']>,
  previous: V1Container | undefined,
  elector: V1Container,
): void {
  if (!isRecord(spec.resources)) return;
  const resources = spec.resources;
  for (const [field, amount] of [
    ['requests', requestOf],
    ['limits', limitOf],
  ] as const) {
    const values = resources[field];
    if (!isRecord(values)) continue;
    const next = { ...values };
    let changed = false;
    for (const resource of POD_LEVEL) {
      const text = values[resource];
      if (typeof text !== 'string') continue;
      const current = quantityValue(text);
      const delta = amount(elector, resource) - amount(previous, resource);
      if (current === undefined || delta === 0) continue;
      next[resource] = formatQuantity(resource, Math.max(0, current + delta));
      changed = true;
    }
    if (changed) spec.resources = { ...spec.resources, [field]: next };
  }
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
  const podRunsAsRoot = isRecord(spec.securityContext) && spec.securityContext.runAsUser === 0;
  let elector = electorContainer(plan, config, token.mount, podRunsAsRoot);
  const volume = token.ownVolume ? tokenVolume() : undefined;
  const hash = shortHash(canonical({ elector, volume: volume ?? null, mode: config.mode }), 12);
  const current = status?.hash === hash && previous !== undefined;
  if (current) elector = previous;
  const rendered = elector;
  if (!current) adjustPodResources(spec, previous, rendered);

  if (config.mode === 'native-sidecar') {
    // Last among the init containers (see the header): after every native sidecar (a mesh
    // proxy must be up before the elector can reach the API server) and after every regular
    // init container (none of them waits for an election). One that another webhook added
    // after ours moves it to the end again when we are reinvoked.
    initContainers.push(elector);
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
  const appContainers = [
    // Native sidecars run next to the app, so they can ask the elector too; regular init
    // containers all finish before it starts and get nothing.
    ...initContainers.filter((c) => c !== elector && c.restartPolicy === 'Always'),
    ...containers.filter((c) => c !== elector),
  ];
  for (const c of appContainers) {
    const present = envNames(c);
    if (envFromMayProvide(c)) {
      warnings.push(
        `container ${clip(c.name)} has envFrom that may set ELECTOR_*; env set by the webhook wins, set them in env to keep yours`,
      );
    }
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
