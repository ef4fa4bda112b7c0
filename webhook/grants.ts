/**
 * The RBAC grant decision, pure: which (namespace, election) needs the elector's Role and a
 * RoleBinding, and for which ServiceAccounts, given the electing pods. A pod counts while
 * it has not finished (its elector may still run); a pod's ServiceAccount is `default` when
 * none is named. `rbac-reconciler.ts` applies these decisions.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { LABEL_ELECTION } from '../common/constants.ts';

export interface Grant {
  namespace: string;
  election: string;
  /** Sorted, distinct. */
  serviceAccounts: string[];
}

export function grantKey(namespace: string, election: string): string {
  return `${namespace}/${election}`;
}

export function parseGrantKey(key: string): { namespace: string; election: string } {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), election: key.slice(i + 1) };
}

/** A pod whose elector may still run: not finished. */
export function isActive(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return phase !== 'Succeeded' && phase !== 'Failed';
}

/** The grant key of an electing pod, whether or not it is active; undefined for others. */
export function electionOf(pod: V1Pod): string | undefined {
  const namespace = pod.metadata?.namespace;
  const election = pod.metadata?.labels?.[LABEL_ELECTION];
  return namespace && election ? grantKey(namespace, election) : undefined;
}

/** The grants the given pods need, by `grantKey`. */
export function desiredGrants(pods: readonly V1Pod[]): Map<string, Grant> {
  const out = new Map<string, Grant>();
  for (const pod of pods) {
    const namespace = pod.metadata?.namespace;
    const election = pod.metadata?.labels?.[LABEL_ELECTION];
    if (!namespace || !election || !isActive(pod)) continue;
    const key = grantKey(namespace, election);
    const grant = out.get(key) ?? { namespace, election, serviceAccounts: [] };
    const sa = pod.spec?.serviceAccountName || 'default';
    if (!grant.serviceAccounts.includes(sa)) grant.serviceAccounts = [...grant.serviceAccounts, sa].sort();
    out.set(key, grant);
  }
  return out;
}

/**
 * How many elections have at least one active pod, kept up to date one pod event at a time
 * (O(1) per event) instead of recomputing every grant over every pod. `reset` rebuilds it
 * from a full pod list, after a (re)list of the pods.
 */
export class ActiveElections {
  /** Active pod (namespace/name) -> its grant key. */
  readonly #electionOf = new Map<string, string>();
  /** Grant key -> number of its active pods (entries are removed at 0). */
  readonly #count = new Map<string, number>();

  /** The number of elections with an active pod. */
  get size(): number {
    return this.#count.size;
  }

  /** A pod was added or changed: it counts for its election while active. */
  update(pod: V1Pod): void {
    this.remove(pod);
    const key = electionOf(pod);
    if (key === undefined || !isActive(pod)) return;
    this.#electionOf.set(podKey(pod), key);
    this.#count.set(key, (this.#count.get(key) ?? 0) + 1);
  }

  /** A pod is gone. */
  remove(pod: V1Pod): void {
    const id = podKey(pod);
    const key = this.#electionOf.get(id);
    if (key === undefined) return;
    this.#electionOf.delete(id);
    const n = (this.#count.get(key) ?? 1) - 1;
    if (n > 0) this.#count.set(key, n);
    else this.#count.delete(key);
  }

  /** Forgets everything and counts `pods`. */
  reset(pods: readonly V1Pod[]): void {
    this.#electionOf.clear();
    this.#count.clear();
    for (const pod of pods) this.update(pod);
  }
}

function podKey(pod: V1Pod): string {
  return `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
}
