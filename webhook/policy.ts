/**
 * Should this pod get an elector, and if not, why: the opt-in, the election's name, and the
 * pods we refuse with a message that says what to change. Pure: the pod in, a decision out.
 */
import type { V1Container, V1ContainerPort, V1Pod } from '@kubernetes/client-node';
import {
  ANNOTATION_ELECTION,
  ANNOTATION_ELECTION_PORT,
  ANNOTATION_INJECTED,
  ANNOTATION_PROBE_PORT,
  CONTAINER_NAME,
  OPT_IN_KEY,
} from '../common/constants.ts';
import type { ElectorMode } from './config.ts';
import { clip, containersOf, isRecord, shortHash, stringAt } from './pod.ts';
import { TOKEN_VOLUME_NAME, type InjectionConfig } from './render.ts';

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

/** The election a pod takes part in: its Lease's name, and where the name came from. */
export interface Election {
  name: string;
  source: ElectionSource;
  /** The value the name was derived from, when it had to be changed to be a valid name. */
  derivedFrom?: string;
}

/** What the policy decided for a pod to inject: the election and the elector's ports. */
export interface InjectionPlan {
  election: Election;
  namespace: string;
  electionPort: number;
  probePort: number;
}

/** The policy's answer: leave the pod alone, refuse it (with what to change), or inject. */
export type Decision =
  | { kind: 'skip'; reason: SkipReason }
  | { kind: 'refuse'; reason: RefuseReason; message: string }
  | { kind: 'inject'; plan: InjectionPlan };

/** The value of our status annotation. */
export interface InjectedStatus {
  version: string;
  /** Hash of the rendered elector container, volume and election. */
  hash: string;
  election: string;
  mode: ElectorMode;
}

/** True when the pod carries our status annotation (so an `elector` container is ours). */
export function injectedStatus(pod: V1Pod): InjectedStatus | undefined {
  const text = stringAt(pod.metadata?.annotations, ANNOTATION_INJECTED);
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
  const labelValue = stringAt(pod.metadata?.labels, OPT_IN_KEY);
  const annotationValue = stringAt(pod.metadata?.annotations, OPT_IN_KEY);
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
  const templateHash = stringAt(meta.labels, 'pod-template-hash');
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
  const explicit = stringAt(meta.annotations, ANNOTATION_ELECTION);
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
  const candidates: { raw: string | undefined; source: ElectionSource }[] = [];
  const workload = workloadName(pod);
  if (workload?.source === 'owner') candidates.push({ raw: workload.name, source: 'owner' });
  candidates.push(
    { raw: stringAt(meta.labels, 'app'), source: 'app-label' },
    { raw: stringAt(meta.labels, 'app.kubernetes.io/name'), source: 'app-kubernetes-io-name-label' },
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

function portAnnotation(annotations: unknown, key: string, fallback: number): number | { invalid: string } {
  const text = stringAt(annotations, key);
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
  for (const key of OS_LABELS)
    if (stringAt(spec['nodeSelector'], key)?.toLowerCase() === 'windows')
      return `its nodeSelector ${key} is windows`;
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
  if (kind === 'Job' && stringAt(meta.annotations, JOB_COMPLETION_INDEX) !== undefined) return undefined;
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

  const annotations = p.metadata?.annotations;
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
