/**
 * Grants each electing pod's ServiceAccount the elector's Role, without the app's owner doing
 * anything, and outside the admission path (admission makes no API call; this runs beside it,
 * in the webhook process).
 *
 * How: an informer watches, in all namespaces, only the pods carrying the label the webhook
 * stamps on every injected pod (`lifelease.dev/election=<election>`). For each
 * (namespace, election) with at least one pod that has not finished, it applies (server-side
 * apply, one field manager) the Role from `common/rbac.ts` and a RoleBinding to the
 * ServiceAccounts those pods run as; when an election has no such pod left, both are
 * deleted. A periodic resync also visits every Role we own, so grants left behind while the
 * webhook was down are removed. Every replica runs it: applies are idempotent, and the
 * replicas converge on the same state.
 *
 * An elector that starts before its RoleBinding exists gets 403 and retries with backoff;
 * the reconciler reacts to the pod's creation within milliseconds.
 */
import {
  CoreV1Api,
  DiscoveryV1Api,
  makeInformer,
  NetworkingV1Api,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type KubeConfig,
  type V1Pod,
  type V1PolicyRule,
} from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { DOMAIN, LABEL_ELECTION, PROJECT } from '../common/constants.ts';
import { electorRole, electorRoleBinding, electorRoleName, RBAC_LABEL_MANAGED_BY } from '../common/rbac.ts';
import {
  electorEgressPolicy,
  needsEgressPolicy,
  targetFromEndpointSlice,
  type ApiServerTarget,
  type EgressPolicyMode,
} from './egress-policy.ts';
import type { WebhookMetrics } from './metrics.ts';

/** The field manager of our server-side applies. */
export const FIELD_MANAGER = `${PROJECT}-webhook`;

/**
 * What the webhook's own ServiceAccount needs (its ClusterRole in the manifests):
 * - pods get/list/watch: the informer (list/watch) and the own-image lookup (get);
 * - roles and rolebindings: the grants themselves;
 * - leases create/get/list/watch/delete: RBAC only lets a subject grant what it holds itself
 *   (no `escalate` or `bind` needed, which would let it grant anything).
 */
export const WEBHOOK_RBAC_RULES: V1PolicyRule[] = [
  { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
  {
    apiGroups: ['rbac.authorization.k8s.io'],
    resources: ['roles', 'rolebindings'],
    verbs: ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'],
  },
  {
    apiGroups: ['coordination.k8s.io'],
    resources: ['leases'],
    verbs: ['create', 'get', 'list', 'watch', 'delete'],
  },
];

export interface Grant {
  namespace: string;
  election: string;
  /** Sorted, distinct. */
  serviceAccounts: string[];
}

export function grantKey(namespace: string, election: string): string {
  return `${namespace}/${election}`;
}

function parseKey(key: string): { namespace: string; election: string } {
  const i = key.indexOf('/');
  return { namespace: key.slice(0, i), election: key.slice(i + 1) };
}

/** A pod whose elector may still run: not finished. */
function active(pod: V1Pod): boolean {
  const phase = pod.status?.phase;
  return phase !== 'Succeeded' && phase !== 'Failed';
}

/** The grants the given pods need, by `grantKey`. Pure. */
export function desiredGrants(pods: readonly V1Pod[]): Map<string, Grant> {
  const out = new Map<string, Grant>();
  for (const pod of pods) {
    const namespace = pod.metadata?.namespace;
    const election = pod.metadata?.labels?.[LABEL_ELECTION];
    if (!namespace || !election || !active(pod)) continue;
    const key = grantKey(namespace, election);
    const grant = out.get(key) ?? { namespace, election, serviceAccounts: [] };
    const sa = pod.spec?.serviceAccountName || 'default';
    if (!grant.serviceAccounts.includes(sa)) grant.serviceAccounts = [...grant.serviceAccounts, sa].sort();
    out.set(key, grant);
  }
  return out;
}

export interface RbacReconcilerOptions {
  kubeConfig: KubeConfig;
  logger: Logger;
  metrics: WebhookMetrics;
  /** Watch one namespace only (tests); default all namespaces. */
  namespace?: string;
  /** Full resync interval; default 10 minutes. */
  resyncMs?: number;
  /** First retry delay after an error (doubling up to `maxBackoffMs`); default 500 ms. */
  backoffMs?: number;
  maxBackoffMs?: number;
  /**
   * Egress NetworkPolicies to the API server per election (`--elector-egress-policy`, see
   * egress-policy.ts); default off. Addresses and port not given are read from the
   * `kubernetes` EndpointSlice in `default`.
   */
  egress?: { mode: EgressPolicyMode; addresses?: string[]; port?: number };
}

/** How long API server endpoints read from the EndpointSlice are reused. */
const TARGET_TTL_MS = 60_000;

const status = (err: unknown): number | undefined => {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
};

export class RbacReconciler {
  readonly #core: CoreV1Api;
  readonly #rbac: RbacAuthorizationV1Api;
  readonly #networking: NetworkingV1Api;
  readonly #discovery: DiscoveryV1Api;
  readonly #egress: { mode: EgressPolicyMode; addresses?: string[]; port?: number };
  #target: { value: ApiServerTarget; at: number } | undefined;
  readonly #log: Logger;
  readonly #metrics: WebhookMetrics;
  readonly #resyncMs: number;
  readonly #backoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #informer;
  readonly #namespace: string | undefined;
  readonly #queue = new Set<string>();
  readonly #attempts = new Map<string, number>();
  readonly #timers = new Set<NodeJS.Timeout>();
  #wake: (() => void) | undefined;
  #worker: Promise<void> | undefined;
  #stopped = true;
  #synced = false;
  #informerErrors = 0;

  constructor(options: RbacReconcilerOptions) {
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#rbac = options.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    this.#networking = options.kubeConfig.makeApiClient(NetworkingV1Api);
    this.#discovery = options.kubeConfig.makeApiClient(DiscoveryV1Api);
    this.#egress = options.egress ?? { mode: 'off' };
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.#resyncMs = options.resyncMs ?? 10 * 60_000;
    this.#backoffMs = options.backoffMs ?? 500;
    this.#maxBackoffMs = options.maxBackoffMs ?? 5 * 60_000;
    const ns = (this.#namespace = options.namespace);
    this.#informer = makeInformer<V1Pod>(
      options.kubeConfig,
      ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods',
      () =>
        ns
          ? this.#core.listNamespacedPod({ namespace: ns, labelSelector: LABEL_ELECTION })
          : this.#core.listPodForAllNamespaces({ labelSelector: LABEL_ELECTION }),
      LABEL_ELECTION,
    );
    const onPod = (pod: V1Pod) => {
      const ns = pod.metadata?.namespace;
      const election = pod.metadata?.labels?.[LABEL_ELECTION];
      if (ns && election) this.enqueue(grantKey(ns, election));
    };
    this.#informer.on('add', onPod);
    this.#informer.on('update', onPod);
    this.#informer.on('delete', onPod);
    this.#informer.on('error', (err: unknown) => {
      this.#synced = false;
      if (this.#stopped) return;
      this.#informerErrors += 1;
      const delay = Math.min(this.#backoffMs * 2 ** Math.min(this.#informerErrors, 10), this.#maxBackoffMs);
      this.#log.warn({ err, retryInMs: delay }, 'pod watch failed; restarting');
      this.#after(delay, () => void this.#startInformer());
    });
  }

  /** True once the pod list was loaded and the watch runs. */
  get synced(): boolean {
    return this.#synced;
  }

  /** Starts watching and reconciling; resolves after the first attempt to list pods. */
  async start(): Promise<void> {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#worker = this.#work();
    await this.#startInformer();
    this.#scheduleResync();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    await this.#informer.stop();
    this.#wake?.();
    await this.#worker;
  }

  /** Queues an election for reconciliation. */
  enqueue(key: string): void {
    this.#queue.add(key);
    this.#wake?.();
  }

  async #startInformer(): Promise<void> {
    if (this.#stopped) return;
    const errorsBefore = this.#informerErrors;
    await this.#informer.start();
    if (this.#informerErrors === errorsBefore && !this.#stopped) {
      this.#synced = true;
      this.#informerErrors = 0;
      // Whatever changed while we were not watching is caught up by a resync.
      await this.resync();
    }
  }

  #after(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    this.#timers.add(t);
  }

  #scheduleResync(): void {
    this.#after(this.#resyncMs, () => {
      void this.resync().finally(() => {
        if (!this.#stopped) this.#scheduleResync();
      });
    });
  }

  /** Queues every election with pods, and every election we hold a Role for. */
  async resync(): Promise<void> {
    for (const key of desiredGrants(this.#informer.list()).keys()) this.enqueue(key);
    try {
      const labelSelector = `${RBAC_LABEL_MANAGED_BY}=${PROJECT}`;
      const roles = this.#namespace
        ? await this.#rbac.listNamespacedRole({ namespace: this.#namespace, labelSelector })
        : await this.#rbac.listRoleForAllNamespaces({ labelSelector });
      const policies =
        this.#egress.mode === 'off'
          ? []
          : this.#namespace
            ? (
                await this.#networking.listNamespacedNetworkPolicy({
                  namespace: this.#namespace,
                  labelSelector,
                })
              ).items
            : (await this.#networking.listNetworkPolicyForAllNamespaces({ labelSelector })).items;
      for (const owned of [...roles.items, ...policies]) {
        const ns = owned.metadata?.namespace;
        const election = owned.metadata?.labels?.[`${DOMAIN}/election`];
        if (ns && election) this.enqueue(grantKey(ns, election));
      }
      // The API server's endpoints may have moved: read them again at the next reconcile.
      this.#target = undefined;
    } catch (err) {
      this.#log.warn({ err }, 'cannot list our Roles; stale grants are removed at the next resync');
    }
  }

  async #work(): Promise<void> {
    while (!this.#stopped) {
      const next = this.#queue.values().next();
      if (next.done) {
        await new Promise<void>((resolve) => (this.#wake = resolve));
        this.#wake = undefined;
        continue;
      }
      const key = next.value;
      this.#queue.delete(key);
      try {
        const result = await this.reconcile(key);
        this.#metrics.rbacReconciles.inc({ result });
        this.#attempts.delete(key);
      } catch (err) {
        this.#metrics.rbacReconciles.inc({ result: 'error' });
        const attempt = (this.#attempts.get(key) ?? 0) + 1;
        this.#attempts.set(key, attempt);
        const delay = Math.min(this.#backoffMs * 2 ** (attempt - 1), this.#maxBackoffMs);
        this.#log.warn({ err, election: key, retryInMs: delay }, 'rbac reconcile failed');
        this.#after(delay, () => this.enqueue(key));
      }
    }
  }

  /** Brings one election's Role and RoleBinding to what its pods need now. */
  async reconcile(key: string): Promise<'applied' | 'deleted' | 'unchanged'> {
    const { namespace, election } = parseKey(key);
    const grant = desiredGrants(this.#informer.list(namespace)).get(key);
    this.#metrics.rbacElections.set(desiredGrants(this.#informer.list()).size);
    const name = electorRoleName(election);
    if (!grant) {
      let deleted = false;
      for (const del of [
        () => this.#rbac.deleteNamespacedRoleBinding({ name, namespace }),
        () => this.#rbac.deleteNamespacedRole({ name, namespace }),
        ...(this.#egress.mode === 'off'
          ? []
          : [() => this.#networking.deleteNamespacedNetworkPolicy({ name, namespace })]),
      ]) {
        try {
          await del();
          deleted = true;
        } catch (err) {
          if (status(err) !== 404) throw err;
        }
      }
      if (deleted) this.#log.info({ namespace, election }, 'elector rbac removed');
      return deleted ? 'deleted' : 'unchanged';
    }
    const apply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
    await this.#rbac.patchNamespacedRole(
      { name, namespace, body: electorRole(namespace, election), fieldManager: FIELD_MANAGER, force: true },
      apply,
    );
    await this.#rbac.patchNamespacedRoleBinding(
      {
        name,
        namespace,
        body: electorRoleBinding(namespace, election, grant.serviceAccounts),
        fieldManager: FIELD_MANAGER,
        force: true,
      },
      apply,
    );
    if (this.#egress.mode !== 'off') await this.#reconcileEgress(namespace, election, apply);
    this.#log.debug({ namespace, election, serviceAccounts: grant.serviceAccounts }, 'elector rbac applied');
    return 'applied';
  }

  /** The election's egress NetworkPolicy: applied when its mode asks for one, else removed. */
  async #reconcileEgress(
    namespace: string,
    election: string,
    apply: ReturnType<typeof setHeaderOptions>,
  ): Promise<void> {
    const name = electorRoleName(election);
    const pods = this.#informer
      .list(namespace)
      .filter((p) => p.metadata?.labels?.[LABEL_ELECTION] === election && active(p));
    const policies =
      this.#egress.mode === 'if-isolated'
        ? (await this.#networking.listNamespacedNetworkPolicy({ namespace })).items
        : [];
    if (!needsEgressPolicy(this.#egress.mode, pods, policies)) {
      try {
        await this.#networking.deleteNamespacedNetworkPolicy({ name, namespace });
        this.#log.info({ namespace, election }, 'elector egress policy removed: no policy isolates its pods');
      } catch (err) {
        if (status(err) !== 404) throw err;
      }
      return;
    }
    const target = await this.#apiServerTarget();
    await this.#networking.patchNamespacedNetworkPolicy(
      {
        name,
        namespace,
        body: electorEgressPolicy(namespace, election, target),
        fieldManager: FIELD_MANAGER,
        force: true,
      },
      apply,
    );
  }

  /** The API server as pods reach it: the flags, completed from the `kubernetes` EndpointSlice. */
  async #apiServerTarget(): Promise<ApiServerTarget> {
    const { addresses, port } = this.#egress;
    if (addresses?.length && port !== undefined) return { cidrs: addresses, port };
    const now = Date.now();
    if (this.#target && now - this.#target.at < TARGET_TTL_MS) return this.#target.value;
    const slice = await this.#discovery.readNamespacedEndpointSlice({
      name: 'kubernetes',
      namespace: 'default',
    });
    const found = targetFromEndpointSlice(slice);
    if (!found) throw new Error('the kubernetes EndpointSlice in default has no ready address or no port');
    const value = { cidrs: addresses?.length ? addresses : found.cidrs, port: port ?? found.port };
    this.#target = { value, at: now };
    return value;
  }
}
