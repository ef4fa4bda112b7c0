/**
 * The least-privilege permissions an elector needs, in one place: the webhook's RBAC
 * reconciler grants exactly these, and the integration tests run electors with exactly these.
 *
 * Why each rule:
 * - leases `create`: the campaign. RBAC cannot restrict `create` by name (the name is not
 *   known at authorization time), so it is granted on leases in the namespace.
 * - leases `get`, `list`, `watch` on the election's Lease only (`resourceNames`; list/watch
 *   are authorized by name when the request has `fieldSelector=metadata.name=<election>`).
 * - leases `delete` on the election's Lease only: reclaiming a Lease whose owner Pod is gone
 *   or finished, always with UID and resourceVersion preconditions.
 * - pods `get`: to learn whether a Lease's owner Pod still exists and whether it finished.
 * - pods `watch`: a follower watches the leader's one Pod (`fieldSelector=metadata.name=`),
 *   because only the watch's DELETED event carries the Pod's last status: whether the kubelet
 *   confirmed that the old elector stopped (then the takeover is immediate) or the object was
 *   force-deleted while it ran (then the takeover waits out its fencing bound). RBAC cannot
 *   name the Pods (they come and go), so the grant covers the namespace's Pods: a token that
 *   can `get` any Pod of the namespace by name can now also stream them. It still cannot
 *   `list` them, and the elector only ever watches one Pod by name.
 * No update or patch of any Lease, nothing on Secrets, no list of pods, nothing cluster-wide
 * (the node's heartbeat Lease in kube-node-lease would need a ClusterRole; it is not used).
 */
import type { V1PolicyRule, V1Role, V1RoleBinding } from '@kubernetes/client-node';
import { DOMAIN, PROJECT } from './constants.ts';

/** Labels on every RBAC object we create, so they can be found and cleaned up. */
export const RBAC_LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';

export function electorRules(election: string): V1PolicyRule[] {
  return [
    { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    {
      apiGroups: ['coordination.k8s.io'],
      resources: ['leases'],
      resourceNames: [election],
      verbs: ['get', 'list', 'watch', 'delete'],
    },
    { apiGroups: [''], resources: ['pods'], verbs: ['get', 'watch'] },
  ];
}

/** Name of the Role (and RoleBinding) that grants an election's electors their rights. */
export function electorRoleName(election: string): string {
  // Role names are DNS subdomains (<= 253 chars); an election name is <= 63.
  return `${PROJECT}-elector-${election}`;
}

export function electorRole(namespace: string, election: string): V1Role {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'Role',
    metadata: {
      name: electorRoleName(election),
      namespace,
      labels: { [RBAC_LABEL_MANAGED_BY]: PROJECT, [`${DOMAIN}/election`]: election },
    },
    rules: electorRules(election),
  };
}

/** Binds the election's Role to every ServiceAccount whose pods take part in it. */
export function electorRoleBinding(
  namespace: string,
  election: string,
  serviceAccounts: string[],
): V1RoleBinding {
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: {
      name: electorRoleName(election),
      namespace,
      labels: { [RBAC_LABEL_MANAGED_BY]: PROJECT, [`${DOMAIN}/election`]: election },
    },
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: electorRoleName(election) },
    subjects: [...new Set(serviceAccounts)]
      .sort()
      .map((name) => ({ kind: 'ServiceAccount', name, namespace })),
  };
}
