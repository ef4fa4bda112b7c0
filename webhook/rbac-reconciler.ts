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
 *
 * The decisions (which grants the pods need) are in `grants.ts` and `egress-policy.ts`; this
 * file reads, writes and retries through an {@link RbacStore} and a {@link PodSource} (the
 * Kubernetes ones are in kube.ts; unit tests use strict fakes), on an injected clock.
 */
import type {
  KubeConfig,
  V1EndpointSlice,
  V1NetworkPolicy,
  V1Pod,
  V1PolicyRule,
  V1Role,
  V1RoleBinding,
} from '@kubernetes/client-node';
import type { Logger } from '../common/logger.ts';
import { isNotFound } from '../common/api-error.ts';
import { backoffDelay, type BackoffPolicy } from '../common/backoff.ts';
import { systemClock, type Clock } from '../common/clock.ts';
import { DOMAIN, PROJECT } from '../common/constants.ts';
import { electorRole, electorRoleBinding, electorRoleName, RBAC_LABEL_MANAGED_BY } from '../common/rbac.ts';
import {
  electorEgressPolicy,
  needsEgressPolicy,
  targetFromEndpointSlice,
  type ApiServerTarget,
  type EgressPolicyMode,
} from './egress-policy.ts';
import { ActiveElections, desiredGrants, electionOf, grantKey, isActive, parseGrantKey } from './grants.ts';
import { kubePodSource, kubeRbacStore } from './kube.ts';
import type { WebhookMetrics } from './metrics.ts';

export { desiredGrants, grantKey, type Grant } from './grants.ts';

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

/**
 * The API writes and reads of the reconciler. Applies are server-side applies with
 * {@link FIELD_MANAGER}, forced; every method rejects with the API's error (read by
 * `common/api-error.ts`): deletes with 404 when the object is already gone.
 */
export interface RbacStore {
  applyRole(role: V1Role): Promise<void>;
  applyRoleBinding(binding: V1RoleBinding): Promise<void>;
  applyNetworkPolicy(policy: V1NetworkPolicy): Promise<void>;
  deleteRoleBinding(namespace: string, name: string): Promise<void>;
  deleteRole(namespace: string, name: string): Promise<void>;
  deleteNetworkPolicy(namespace: string, name: string): Promise<void>;
  /** Roles matching `labelSelector` in `namespace`, or in all namespaces. */
  listRoles(namespace: string | undefined, labelSelector: string): Promise<V1Role[]>;
  /** NetworkPolicies matching `labelSelector` (all when undefined) in `namespace`, or everywhere. */
  listNetworkPolicies(namespace: string | undefined, labelSelector?: string): Promise<V1NetworkPolicy[]>;
  /** The `kubernetes` EndpointSlice in `default`: where pods reach the API server. */
  readApiServerEndpointSlice(): Promise<V1EndpointSlice>;
}

/**
 * The electing pods as a cache that follows the API (an informer): `start` lists them and
 * then watches, resolving after the first list attempt; a failed watch is reported through
 * `error` and restarted by calling `start` again.
 */
export interface PodSource {
  list(namespace?: string): readonly V1Pod[];
  onChange(fn: (pod: V1Pod, kind: 'add' | 'update' | 'delete') => void): void;
  onError(fn: (err: unknown) => void): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface RbacReconcilerOptions {
  /** The API writes and the pods; or `kubeConfig` to use the Kubernetes API for both. */
  store?: RbacStore;
  pods?: PodSource;
  kubeConfig?: KubeConfig;
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
  /** Default the system clock. */
  clock?: Clock;
}

/** How long API server endpoints read from the EndpointSlice are reused. */
const TARGET_TTL_MS = 60_000;

export class RbacReconciler {
  readonly #store: RbacStore;
  readonly #pods: PodSource;
  readonly #clock: Clock;
  readonly #egress: { mode: EgressPolicyMode; addresses?: string[]; port?: number };
  #target: { value: ApiServerTarget; at: number } | undefined;
  readonly #log: Logger;
  readonly #metrics: WebhookMetrics;
  readonly #resyncMs: number;
  readonly #backoff: BackoffPolicy;
  readonly #namespace: string | undefined;
  readonly #queue = new Set<string>();
  readonly #attempts = new Map<string, number>();
  readonly #timers = new Set<{ cancel(): void }>();
  /** Elections with an active pod, for the gauge: updated per pod event. */
  readonly #active = new ActiveElections();
  #wake: (() => void) | undefined;
  #worker: Promise<void> | undefined;
  #stopped = true;
  #synced = false;
  #informerErrors = 0;

  constructor(options: RbacReconcilerOptions) {
    this.#namespace = options.namespace;
    if (options.store && options.pods) {
      this.#store = options.store;
      this.#pods = options.pods;
    } else if (options.kubeConfig) {
      this.#store = options.store ?? kubeRbacStore(options.kubeConfig, FIELD_MANAGER);
      this.#pods = options.pods ?? kubePodSource(options.kubeConfig, options.namespace);
    } else {
      throw new Error('RbacReconciler needs a store and pods, or a kubeConfig');
    }
    this.#clock = options.clock ?? systemClock;
    this.#egress = options.egress ?? { mode: 'off' };
    this.#log = options.logger;
    this.#metrics = options.metrics;
    this.#resyncMs = options.resyncMs ?? 10 * 60_000;
    this.#backoff = { initialMs: options.backoffMs ?? 500, maxMs: options.maxBackoffMs ?? 5 * 60_000 };
    this.#pods.onChange((pod, kind) => {
      if (kind === 'delete') this.#active.remove(pod);
      else this.#active.update(pod);
      this.#metrics.rbacElections.set(this.#active.size);
      const key = electionOf(pod);
      if (key) this.enqueue(key);
    });
    this.#pods.onError((err: unknown) => {
      this.#synced = false;
      if (this.#stopped) return;
      this.#informerErrors += 1;
      const delay = backoffDelay(this.#informerErrors, this.#backoff);
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

  /** Stops watching and reconciling; cancels every pending retry and resync. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) t.cancel();
    this.#timers.clear();
    await this.#pods.stop();
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
    await this.#pods.start();
    if (this.#informerErrors === errorsBefore && !this.#stopped) {
      this.#synced = true;
      this.#informerErrors = 0;
      // Whatever changed while we were not watching is caught up by a resync.
      await this.resync();
    }
  }

  #after(ms: number, fn: () => void): void {
    const timer = this.#clock.setTimer(ms, () => {
      this.#timers.delete(timer);
      fn();
    });
    this.#timers.add(timer);
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
    const pods = this.#pods.list();
    // A (re)list may have missed deletions: count the elections afresh.
    this.#active.reset(pods);
    this.#metrics.rbacElections.set(this.#active.size);
    for (const key of desiredGrants(pods).keys()) this.enqueue(key);
    try {
      const labelSelector = `${RBAC_LABEL_MANAGED_BY}=${PROJECT}`;
      const roles = await this.#store.listRoles(this.#namespace, labelSelector);
      const policies =
        this.#egress.mode === 'off'
          ? []
          : await this.#store.listNetworkPolicies(this.#namespace, labelSelector);
      for (const owned of [...roles, ...policies]) {
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
        const attempt = this.#attempts.get(key) ?? 0;
        this.#attempts.set(key, attempt + 1);
        const delay = backoffDelay(attempt, this.#backoff);
        this.#log.warn({ err, election: key, retryInMs: delay }, 'rbac reconcile failed');
        if (!this.#stopped) this.#after(delay, () => this.enqueue(key));
      }
    }
  }

  /** Brings one election's Role and RoleBinding to what its pods need now. */
  async reconcile(key: string): Promise<'applied' | 'deleted' | 'unchanged'> {
    const { namespace, election } = parseGrantKey(key);
    // 1. Decide: the grant this election's pods need now, if any.
    const grant = desiredGrants(this.#pods.list(namespace)).get(key);
    const name = electorRoleName(election);
    if (!grant) {
      // 2a. No active pod: remove the binding first (it is what grants), then the Role.
      let deleted = false;
      for (const del of [
        () => this.#store.deleteRoleBinding(namespace, name),
        () => this.#store.deleteRole(namespace, name),
        ...(this.#egress.mode === 'off' ? [] : [() => this.#store.deleteNetworkPolicy(namespace, name)]),
      ]) {
        try {
          await del();
          deleted = true;
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
      if (deleted) this.#log.info({ namespace, election }, 'elector rbac removed');
      return deleted ? 'deleted' : 'unchanged';
    }
    // 2b. Active pods: the Role before the binding that refers to it.
    await this.#store.applyRole(electorRole(namespace, election));
    await this.#store.applyRoleBinding(electorRoleBinding(namespace, election, grant.serviceAccounts));
    if (this.#egress.mode !== 'off') await this.#reconcileEgress(namespace, election);
    this.#log.debug({ namespace, election, serviceAccounts: grant.serviceAccounts }, 'elector rbac applied');
    return 'applied';
  }

  /** The election's egress NetworkPolicy: applied when its mode asks for one, else removed. */
  async #reconcileEgress(namespace: string, election: string): Promise<void> {
    const name = electorRoleName(election);
    const pods = this.#pods
      .list(namespace)
      .filter((p) => electionOf(p) === grantKey(namespace, election) && isActive(p));
    const policies =
      this.#egress.mode === 'if-isolated' ? await this.#store.listNetworkPolicies(namespace) : [];
    if (!needsEgressPolicy(this.#egress.mode, pods, policies)) {
      try {
        await this.#store.deleteNetworkPolicy(namespace, name);
        this.#log.info({ namespace, election }, 'elector egress policy removed: no policy isolates its pods');
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      return;
    }
    const target = await this.#apiServerTarget();
    await this.#store.applyNetworkPolicy(electorEgressPolicy(namespace, election, target));
  }

  /** The API server as pods reach it: the flags, completed from the `kubernetes` EndpointSlice. */
  async #apiServerTarget(): Promise<ApiServerTarget> {
    const { addresses, port } = this.#egress;
    if (addresses?.length && port !== undefined) return { cidrs: addresses, port };
    const now = this.#clock.now();
    if (this.#target && now - this.#target.at < TARGET_TTL_MS) return this.#target.value;
    const found = targetFromEndpointSlice(await this.#store.readApiServerEndpointSlice());
    if (!found) throw new Error('the kubernetes EndpointSlice in default has no ready address or no port');
    const value = { cidrs: addresses?.length ? addresses : found.cidrs, port: port ?? found.port };
    this.#target = { value, at: now };
    return value;
  }
}
