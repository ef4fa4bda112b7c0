/**
 * The webhook's only Kubernetes client set-up: the stores its controllers use (self-managed
 * TLS, the RBAC reconciler's writes and its pod informer), and the one read it makes at
 * start-up: its own Pod, to learn the image it runs, which is the default elector image (so
 * the sidecar and the webhook that injected it are always the same build). Never used on the
 * admission path. Thin: no decisions here; errors pass through as the client throws them
 * (read by `common/api-error.ts`).
 */
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  makeInformer,
  NetworkingV1Api,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type V1Pod,
} from '@kubernetes/client-node';
import { isForbidden, isNotFound } from '../common/api-error.ts';
import { retry } from '../common/backoff.ts';
import type { Clock } from '../common/clock.ts';
import { LABEL_ELECTION } from '../common/constants.ts';
import type { PodSource, RbacStore } from './rbac-reconciler.ts';
import type { TlsStore } from './self-managed-tls.ts';

/** In-cluster config, `$KUBECONFIG` or ~/.kube/config (`loadFromDefault`), or the given file. */
export function loadKubeConfig(file: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}

/** Self-managed TLS's Secret and MutatingWebhookConfiguration. */
export function kubeTlsStore(
  kc: KubeConfig,
  names: { namespace: string; secretName: string; webhookConfigurationName: string },
): TlsStore {
  const core = kc.makeApiClient(CoreV1Api);
  const admission = kc.makeApiClient(AdmissionregistrationV1Api);
  const { namespace, secretName: name, webhookConfigurationName } = names;
  return {
    readSecret: () => core.readNamespacedSecret({ name, namespace }),
    createSecret: async (body) => void (await core.createNamespacedSecret({ namespace, body })),
    replaceSecret: async (body) => void (await core.replaceNamespacedSecret({ name, namespace, body })),
    readWebhookConfiguration: () =>
      admission.readMutatingWebhookConfiguration({ name: webhookConfigurationName }),
    replaceWebhookConfiguration: async (body) =>
      void (await admission.replaceMutatingWebhookConfiguration({ name: webhookConfigurationName, body })),
  };
}

/** The RBAC reconciler's writes: server-side applies as `fieldManager`, forced. */
export function kubeRbacStore(kc: KubeConfig, fieldManager: string): RbacStore {
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const networking = kc.makeApiClient(NetworkingV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);
  const apply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);
  const target = (o: { metadata?: { name?: string; namespace?: string } }) => ({
    name: o.metadata?.name ?? '',
    namespace: o.metadata?.namespace ?? '',
    fieldManager,
    force: true,
  });
  return {
    applyRole: async (body) => void (await rbac.patchNamespacedRole({ ...target(body), body }, apply)),
    applyRoleBinding: async (body) =>
      void (await rbac.patchNamespacedRoleBinding({ ...target(body), body }, apply)),
    applyNetworkPolicy: async (body) =>
      void (await networking.patchNamespacedNetworkPolicy({ ...target(body), body }, apply)),
    deleteRoleBinding: async (namespace, name) =>
      void (await rbac.deleteNamespacedRoleBinding({ name, namespace })),
    deleteRole: async (namespace, name) => void (await rbac.deleteNamespacedRole({ name, namespace })),
    deleteNetworkPolicy: async (namespace, name) =>
      void (await networking.deleteNamespacedNetworkPolicy({ name, namespace })),
    listRoles: async (namespace, labelSelector) =>
      (namespace
        ? await rbac.listNamespacedRole({ namespace, labelSelector })
        : await rbac.listRoleForAllNamespaces({ labelSelector })
      ).items,
    listNetworkPolicies: async (namespace, labelSelector) => {
      const selector = labelSelector === undefined ? {} : { labelSelector };
      return (
        namespace
          ? await networking.listNamespacedNetworkPolicy({ namespace, ...selector })
          : await networking.listNetworkPolicyForAllNamespaces(selector)
      ).items;
    },
    readApiServerEndpointSlice: () =>
      discovery.readNamespacedEndpointSlice({ name: 'kubernetes', namespace: 'default' }),
  };
}

/**
 * An informer on the pods carrying the election label, in one namespace or all: the API
 * server filters by label, so unrelated pods never reach the webhook.
 */
export function kubePodSource(kc: KubeConfig, namespace: string | undefined): PodSource {
  const core = kc.makeApiClient(CoreV1Api);
  const informer = makeInformer<V1Pod>(
    kc,
    namespace ? `/api/v1/namespaces/${namespace}/pods` : '/api/v1/pods',
    () =>
      namespace
        ? core.listNamespacedPod({ namespace, labelSelector: LABEL_ELECTION })
        : core.listPodForAllNamespaces({ labelSelector: LABEL_ELECTION }),
    LABEL_ELECTION,
  );
  return {
    list: (ns) => informer.list(ns),
    onChange(fn) {
      informer.on('add', (pod: V1Pod) => fn(pod, 'add'));
      informer.on('update', (pod: V1Pod) => fn(pod, 'update'));
      informer.on('delete', (pod: V1Pod) => fn(pod, 'delete'));
    },
    onError(fn) {
      informer.on('error', (err: unknown) => fn(err));
    },
    start: () => informer.start(),
    stop: () => informer.stop(),
  };
}

/** Reads one Pod; rejects with the API's error. */
export type PodReader = (namespace: string, name: string) => Promise<V1Pod>;

export function kubePodReader(kc: KubeConfig): PodReader {
  const core = kc.makeApiClient(CoreV1Api);
  return (namespace, name) => core.readNamespacedPod({ name, namespace });
}

/**
 * The image of `containerName` in the pod `namespace/name` (the only container's when
 * there is just one and none has that name). Retries with backoff for `timeoutMs` on errors
 * other than 401/403/404, because the API server may be briefly unreachable when the webhook
 * starts; stops at once when `signal` aborts.
 */
export async function ownImage(
  readPod: PodReader,
  pod: { name: string; namespace: string; containerName: string },
  options: { timeoutMs?: number; signal?: AbortSignal; clock?: Clock } = {},
): Promise<string> {
  let containers;
  try {
    containers =
      (
        await retry(() => readPod(pod.namespace, pod.name), {
          policy: { initialMs: 250, maxMs: 5000 },
          timeoutMs: options.timeoutMs ?? 60_000,
          retryable: (err) => !isForbidden(err) && !isNotFound(err),
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.clock ? { clock: options.clock } : {}),
        })
      ).spec?.containers ?? [];
  } catch (err) {
    throw new Error(
      `cannot read the webhook's own pod ${pod.namespace}/${pod.name} to find its image (set --elector-image): ${(err as Error).message}`,
      { cause: err },
    );
  }
  const container =
    containers.find((c) => c.name === pod.containerName) ??
    (containers.length === 1 ? containers[0] : undefined);
  if (!container?.image) {
    throw new Error(
      `pod ${pod.namespace}/${pod.name} has no container "${pod.containerName}"; set --container-name or --elector-image`,
    );
  }
  return container.image;
}
