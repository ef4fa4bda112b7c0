/**
 * Egress to the API server for the pods of an election, in clusters whose namespaces deny
 * egress by default (`--elector-egress-policy`). Pure: the RBAC reconciler reads and writes,
 * this decides.
 *
 * Least privilege: one NetworkPolicy per election, selecting only that election's pods (the
 * `lifelease.dev/election` label the webhook sets), allowing only TCP to the API server's
 * addresses and port. The addresses are those pods reach after the `kubernetes` Service's
 * translation (most CNIs apply policies after it): the `kubernetes` EndpointSlice in
 * `default`, or what the flags give.
 *
 * Why a mode: a NetworkPolicy that selects a pod for Egress isolates it, so in a namespace
 * where nothing restricted the pod's egress, this policy would take away everything but the
 * API server. `if-isolated` creates it only when another NetworkPolicy of the namespace
 * already isolates one of the election's pods for egress (the default-deny case);
 * `always` creates it regardless, for clusters whose default deny is not a namespaced
 * NetworkPolicy (AdminNetworkPolicy, a CNI's global policies).
 *
 * The trade-off: NetworkPolicies select pods, not containers, so the app's containers in
 * those pods can reach the API server too (what they may do there is still RBAC's business).
 */
import type {
  V1EndpointSlice,
  V1LabelSelector,
  V1NetworkPolicy,
  V1Pod,
  V1PolicyRule,
} from '@kubernetes/client-node';
import { DOMAIN, LABEL_ELECTION, PROJECT } from '../common/constants.ts';
import { electorRoleName, RBAC_LABEL_MANAGED_BY } from '../common/rbac.ts';

export type EgressPolicyMode = 'off' | 'if-isolated' | 'always';
export const EGRESS_POLICY_MODES: readonly EgressPolicyMode[] = ['off', 'if-isolated', 'always'];

/** Where the API server is, as pods reach it. */
export interface ApiServerTarget {
  /** CIDRs (`10.0.0.1/32`), sorted. */
  cidrs: string[];
  port: number;
}

/** An address as a CIDR: an IP gets /32 (IPv4) or /128 (IPv6); a CIDR stays. */
export function toCidr(address: string): string {
  if (address.includes('/')) return address;
  return address.includes(':') ? `${address}/128` : `${address}/32`;
}

/**
 * The API server's endpoints from the `kubernetes` EndpointSlice: the ready addresses and
 * the port named `https`. Undefined when the slice has none.
 */
export function targetFromEndpointSlice(slice: V1EndpointSlice): ApiServerTarget | undefined {
  const port = slice.ports?.find((p) => p.name === 'https')?.port ?? slice.ports?.[0]?.port;
  const cidrs = (slice.endpoints ?? [])
    .filter((e) => e.conditions?.ready !== false)
    .flatMap((e) => e.addresses)
    .map(toCidr);
  if (port === undefined || port === null || cidrs.length === 0) return undefined;
  return { cidrs: [...new Set(cidrs)].sort(), port };
}

/** The election's NetworkPolicy: egress from its pods to the API server, nothing else. */
export function electorEgressPolicy(
  namespace: string,
  election: string,
  target: ApiServerTarget,
): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: {
      name: electorRoleName(election),
      namespace,
      labels: { [RBAC_LABEL_MANAGED_BY]: PROJECT, [`${DOMAIN}/election`]: election },
    },
    spec: {
      podSelector: { matchLabels: { [LABEL_ELECTION]: election } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: target.cidrs.map((cidr) => ({ ipBlock: { cidr } })),
          ports: [{ protocol: 'TCP', port: target.port }],
        },
      ],
    },
  };
}

/** Whether a label selector selects a set of labels (an empty selector selects everything). */
export function selects(selector: V1LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    switch (e.operator) {
      case 'In':
        if (!has || !(e.values ?? []).includes(value!)) return false;
        break;
      case 'NotIn':
        if (has && (e.values ?? []).includes(value!)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
      default:
        return false;
    }
  }
  return true;
}

/** Whether a NetworkPolicy restricts egress of the pods it selects. */
function isolatesEgress(policy: V1NetworkPolicy): boolean {
  const types = policy.spec?.policyTypes;
  // Without policyTypes, a policy is an Egress policy when it has egress rules.
  return types ? types.includes('Egress') : (policy.spec?.egress?.length ?? 0) > 0;
}

/**
 * Whether the election needs its policy in `mode`: `always`; or `if-isolated` and another
 * policy of the namespace (not one of ours) isolates one of the election's pods for egress.
 */
export function needsEgressPolicy(
  mode: EgressPolicyMode,
  pods: readonly V1Pod[],
  policies: readonly V1NetworkPolicy[],
): boolean {
  if (mode === 'off') return false;
  if (mode === 'always') return true;
  return policies.some(
    (p) =>
      p.metadata?.labels?.[RBAC_LABEL_MANAGED_BY] !== PROJECT &&
      isolatesEgress(p) &&
      pods.some((pod) => selects(p.spec?.podSelector ?? {}, pod.metadata?.labels ?? {})),
  );
}

/**
 * What the webhook's ServiceAccount needs for this (ClusterRole `lifelease-webhook-egress` in
 * manifests/components/elector-egress and the chart): its NetworkPolicies, and the
 * `kubernetes` EndpointSlice, by name.
 */
export const WEBHOOK_EGRESS_RULES: V1PolicyRule[] = [
  {
    apiGroups: ['networking.k8s.io'],
    resources: ['networkpolicies'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  {
    apiGroups: ['discovery.k8s.io'],
    resources: ['endpointslices'],
    resourceNames: ['kubernetes'],
    verbs: ['get'],
  },
];
