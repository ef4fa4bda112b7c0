/**
 * Renders `manifests/` with the real kustomize and applies the result to a cluster with
 * server-side apply, as `kubectl apply --server-side` would.
 */
import {
  KubernetesObjectApi,
  PatchStrategy,
  loadAllYaml,
  type KubeConfig,
  type KubernetesObject,
} from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { resolveKustomize } from './binaries.ts';

export const MANIFESTS_DIR = path.resolve(import.meta.dirname, '../../../manifests');

/** `kustomize build <dir>`; `dir` is relative to manifests/ unless absolute. */
export async function renderManifests(dir: string): Promise<KubernetesObject[]> {
  const kustomize = await resolveKustomize();
  const target = path.isAbsolute(dir) ? dir : path.join(MANIFESTS_DIR, dir);
  const { stdout } = await promisify(execFile)(kustomize, ['build', target], { maxBuffer: 16 * 1024 * 1024 });
  return (loadAllYaml(stdout) as (KubernetesObject | null)[]).filter(
    (o): o is KubernetesObject => o !== null,
  );
}

/** Order in which kinds must exist before others can refer to them. */
const ORDER = ['Namespace', 'CustomResourceDefinition', 'ServiceAccount', 'ClusterRole', 'Role'];

function rank(kind: string | undefined): number {
  const i = ORDER.indexOf(kind ?? '');
  return i === -1 ? ORDER.length : i;
}

/** Server-side applies every object (namespaces and RBAC first); returns what the server stored. */
export async function applyManifests(
  kc: KubeConfig,
  objects: KubernetesObject[],
  fieldManager = 'lifelease-tests',
): Promise<KubernetesObject[]> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const sorted = [...objects].sort((a, b) => rank(a.kind) - rank(b.kind));
  const applied: KubernetesObject[] = [];
  for (const obj of sorted) {
    applied.push(
      await api.patch(obj, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply),
    );
  }
  return applied;
}

/** The one object of `kind` (and `name`, if given) in a rendered set; throws when not exactly one. */
export function pick<T extends KubernetesObject>(
  objects: KubernetesObject[],
  kind: string,
  name?: string,
): T {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));
  if (found.length !== 1)
    throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as T;
}
