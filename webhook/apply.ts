/**
 * Applying a plan to a pod: the JSON Patch (RFC 6902) that adds the elector and its env, built
 * from the decisions (adds at known indexes), never by diffing a mutated copy. The pod as
 * received is only read: no clone, no re-serialisation. Each operation says what happened:
 * the elector is one `add` at its index (a `move` when another webhook put an init container
 * after it, a `replace` when it is re-rendered in place), the env entries are `add`s at the
 * front of a container's `env`, the user's containers are never rewritten.
 *
 * Operations apply in order; env operations come first (they do not change any array's
 * length), then the container lists, volumes, pod-level resources and metadata.
 */
import type { V1Container, V1EnvVar, V1Pod, V1VolumeMount } from '@kubernetes/client-node';
import {
  ANNOTATION_ELECTION,
  ANNOTATION_INJECTED,
  appEnv,
  CONTAINER_NAME,
  LABEL_ELECTION,
} from '../common/constants.ts';
import { quantityValue } from './config.ts';

/**
 * A quantity's value, also in the decimal-exponent form the API server accepts (`1e3`, `5E-1`)
 * that the configuration's parser refuses; undefined when it is neither.
 */
function quantity(text: string): number | undefined {
  const m = /^([+]?(\d+(\.\d*)?|\.\d+))[eE]([+-]?\d+)$/.exec(text.trim());
  return m ? Number(m[1]) * 10 ** Number(m[4]) : quantityValue(text.trim());
}
import { applyPatch, type Operation } from './patch.ts';
import { canonical, clip, isRecord, stringAt } from './pod.ts';
import { injectedStatus, type InjectionPlan } from './policy.ts';
import { renderElector, TOKEN_MOUNT_PATH, TOKEN_VOLUME_NAME, type InjectionConfig } from './render.ts';

/** The operations that inject the elector, and the warnings for the user. */
export interface Applied {
  operations: Operation[];
  warnings: string[];
}

/** The pod after injection, and the warnings (for tests and tools: admission sends the patch). */
export interface InjectionResult {
  pod: V1Pod;
  warnings: string[];
}

/** A JSON Pointer token: `~` and `/` escaped. */
const token = (key: string) => key.replace(/~/g, '~0').replace(/\//g, '~1');
const LABEL_POINTER = `/metadata/labels/${token(LABEL_ELECTION)}`;
const INJECTED_POINTER = `/metadata/annotations/${token(ANNOTATION_INJECTED)}`;

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
  const text = stringAt(r.requests, resource) ?? stringAt(r.limits, resource);
  return text === undefined ? 0 : (quantity(text) ?? 0);
}

/** A container's limit of a resource, else its request (what it may use of a pod-level limit). */
function limitOf(c: V1Container | undefined, resource: string): number {
  const r = isRecord(c?.resources) ? c.resources : {};
  const text = stringAt(r.limits, resource) ?? stringAt(r.requests, resource);
  return text === undefined ? 0 : (quantity(text) ?? 0);
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
function podResourceOps(
  spec: NonNullable<V1Pod['spec']>,
  previous: V1Container | undefined,
  elector: V1Container,
  ops: Operation[],
): void {
  const resources = spec.resources;
  if (!isRecord(resources)) return;
  for (const [field, amount] of [
    ['requests', requestOf],
    ['limits', limitOf],
  ] as const) {
    const values = resources[field];
    if (!isRecord(values)) continue;
    for (const resource of POD_LEVEL) {
      const text = values[resource];
      if (typeof text !== 'string') continue;
      const current = quantity(text);
      const delta = amount(elector, resource) - amount(previous, resource);
      if (current === undefined || delta === 0) continue;
      ops.push({
        op: 'replace',
        path: `/spec/resources/${field}/${resource}`,
        value: formatQuantity(resource, Math.max(0, current + delta)),
      });
    }
  }
}

/** The container's own `ELECTOR_*` env entries by name (the only ones we look up). */
function electorEnv(c: V1Container): Map<string, V1EnvVar> {
  const out = new Map<string, V1EnvVar>();
  if (Array.isArray(c.env))
    for (const e of c.env)
      if (isRecord(e) && typeof e.name === 'string' && e.name.startsWith('ELECTOR_')) out.set(e.name, e);
  return out;
}

/** A container list of the pod with the original index of each container object in it. */
function indexed(list: unknown): { c: V1Container; i: number }[] {
  if (!Array.isArray(list)) return [];
  const out: { c: V1Container; i: number }[] = [];
  list.forEach((c: unknown, i) => {
    if (isRecord(c)) out.push({ c: c as unknown as V1Container, i });
  });
  return out;
}

/**
 * The operations that inject a plan into a pod (read only, never modified): the elector
 * container (and its token volume when needed), the `ELECTOR_*` env on every app container
 * and native sidecar that lacks it, pod-level resources grown by the elector's, the election
 * label and the status annotation. No operations when the pod already has all of it.
 */
export function applyPlan(pod: V1Pod, plan: InjectionPlan, config: InjectionConfig): Applied {
  const ops: Operation[] = [];
  const warnings: string[] = [];
  const meta = isRecord(pod.metadata) ? pod.metadata : undefined;
  const spec = pod.spec!;

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
  const previousLabel = stringAt(meta?.labels, LABEL_ELECTION);
  if (previousLabel !== undefined && previousLabel !== election.name) {
    warnings.push(
      `label ${LABEL_ELECTION}=${clip(previousLabel)} replaced by ${JSON.stringify(election.name)}; name elections with the annotation`,
    );
  }

  // 2. The containers as they are, and an elector we injected earlier (policy refused any
  // other container of that name).
  const init = indexed(spec.initContainers);
  const app = indexed(spec.containers);
  const previousInit = init.find(({ c }) => c.name === CONTAINER_NAME);
  const previousApp = app.find(({ c }) => c.name === CONTAINER_NAME);
  const previous = previousInit?.c ?? previousApp?.c;
  const users = {
    init: init.filter(({ c }) => c.name !== CONTAINER_NAME),
    app: app.filter(({ c }) => c.name !== CONTAINER_NAME),
  };

  // 3. Render the elector and its token volume; keep the existing one if it is what we render.
  const mount = tokenMountFor([...users.app, ...users.init].map(({ c }) => c));
  const podRunsAsRoot = isRecord(spec.securityContext) && spec.securityContext.runAsUser === 0;
  const {
    container: rendered,
    containerAlone: renderedAlone,
    volume,
    volumeAlone,
    hash,
    status,
  } = renderElector(plan, config, mount.mount, mount.ownVolume, podRunsAsRoot);
  const current = injectedStatus(pod)?.hash === hash && previous !== undefined;

  // 4. The app's env: prepended (so the user's own entries can refer to them with $(VAR)),
  // only where missing; a different value the user set is kept, with a warning. Native
  // sidecars run beside the app and get it too; regular init containers finish before the
  // elector starts and get nothing.
  const wanted = appEnv(plan.electionPort);
  const targets: { c: V1Container; i: number; list: string }[] = [];
  for (const { c, i } of users.init)
    if (c.restartPolicy === 'Always') targets.push({ c, i, list: 'initContainers' });
  for (const { c, i } of users.app) targets.push({ c, i, list: 'containers' });
  for (const { c, i, list } of targets) {
    const present = electorEnv(c);
    if (envFromMayProvide(c)) {
      warnings.push(
        `container ${clip(c.name)} has envFrom that may set ELECTOR_*; env set by the webhook wins, set them in env to keep yours`,
      );
    }
    for (const w of wanted) {
      const own = present.get(w.name);
      if (own && (own.value !== w.value || own.valueFrom !== undefined)) {
        warnings.push(`container ${clip(c.name)} keeps its own ${w.name}; the elector answers at ${w.value}`);
      }
    }
    const missing = wanted.filter((w) => !present.has(w.name));
    if (missing.length === 0) continue;
    const path = `/spec/${list}/${i}/env`;
    if (Array.isArray(c.env))
      missing.forEach((w, k) => ops.push({ op: 'add', path: `${path}/${k}`, value: w }));
    else ops.push({ op: 'add', path, value: missing });
  }

  // 5. The elector: last among the init containers (see inject.ts), or where it was among
  // the containers (appended when new) in classic mode.
  const initLength = Array.isArray(spec.initContainers) ? spec.initContainers.length : 0;
  const appLength = Array.isArray(spec.containers) ? spec.containers.length : 0;
  if (config.mode === 'native-sidecar') {
    let length = initLength;
    if (previousApp) ops.push({ op: 'remove', path: `/spec/containers/${previousApp.i}` });
    if (previousInit && current) {
      if (previousInit.i !== length - 1)
        ops.push({
          op: 'move',
          from: `/spec/initContainers/${previousInit.i}`,
          path: `/spec/initContainers/${length - 1}`,
        });
    } else if (previousInit && previousInit.i === length - 1) {
      ops.push({ op: 'replace', path: `/spec/initContainers/${previousInit.i}`, value: rendered });
    } else {
      if (previousInit) {
        ops.push({ op: 'remove', path: `/spec/initContainers/${previousInit.i}` });
        length -= 1;
      }
      if (Array.isArray(spec.initContainers))
        ops.push({ op: 'add', path: `/spec/initContainers/${length}`, value: rendered });
      else ops.push({ op: 'add', path: '/spec/initContainers', value: renderedAlone });
    }
  } else {
    if (previousInit) {
      if (initLength === 1) ops.push({ op: 'remove', path: '/spec/initContainers' });
      else ops.push({ op: 'remove', path: `/spec/initContainers/${previousInit.i}` });
    }
    if (previousApp && !current)
      ops.push({ op: 'replace', path: `/spec/containers/${previousApp.i}`, value: rendered });
    else if (!previousApp) ops.push({ op: 'add', path: `/spec/containers/${appLength}`, value: rendered });
    if (spec.restartPolicy === 'Never' || spec.restartPolicy === 'OnFailure') {
      warnings.push(
        `the elector runs as a plain container here, so this restartPolicy ${spec.restartPolicy} pod keeps running after the app exits`,
      );
    }
  }

  // 6. Our token volume: added, re-rendered or removed as the token mount says.
  const volumes = Array.isArray(spec.volumes) ? spec.volumes : undefined;
  const existing = volumes ? volumes.findIndex((v) => isRecord(v) && v.name === TOKEN_VOLUME_NAME) : -1;
  if (volume && existing === -1) {
    if (volumes) ops.push({ op: 'add', path: `/spec/volumes/${volumes.length}`, value: volume });
    else ops.push({ op: 'add', path: '/spec/volumes', value: volumeAlone! });
  } else if (volume && !current && canonical(volumes?.[existing]) !== canonical(volume)) {
    ops.push({ op: 'replace', path: `/spec/volumes/${existing}`, value: volume });
  } else if (!volume && existing !== -1) {
    ops.push({ op: 'remove', path: `/spec/volumes/${existing}` });
  }

  // 7. Pod-level resources grow by the elector's (minus a previous elector's).
  if (!current) podResourceOps(spec, previous, rendered, ops);

  // 8. The label (to find electing pods) and the status annotation (see InjectedStatus).
  const labels = previousLabel !== election.name ? { [LABEL_ELECTION]: election.name } : undefined;
  const annotations = current ? undefined : { [ANNOTATION_INJECTED]: status };
  if (!meta) {
    if (labels || annotations)
      ops.push({
        op: 'add',
        path: '/metadata',
        value: { ...(labels && { labels }), ...(annotations && { annotations }) },
      });
  } else {
    if (labels && isRecord(meta.labels)) ops.push({ op: 'add', path: LABEL_POINTER, value: election.name });
    else if (labels) ops.push({ op: 'add', path: '/metadata/labels', value: labels });
    if (annotations && isRecord(meta.annotations))
      ops.push({ op: 'add', path: INJECTED_POINTER, value: status });
    else if (annotations) ops.push({ op: 'add', path: '/metadata/annotations', value: annotations });
  }
  return { operations: ops, warnings };
}

/**
 * Applies a plan to a copy of the pod (the input is not modified). Admission sends the
 * operations of {@link applyPlan} instead; this is the same result as a pod, for tests and tools.
 */
export function inject(original: V1Pod, plan: InjectionPlan, config: InjectionConfig): InjectionResult {
  const { operations, warnings } = applyPlan(original, plan, config);
  return { pod: applyPatch(original, operations), warnings };
}
