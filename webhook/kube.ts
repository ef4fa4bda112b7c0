/**
 * The webhook's only Kubernetes client set-up, and the one read it makes at start-up: its own
 * Pod, to learn the image it runs, which is the default elector image (so the sidecar and
 * the webhook that injected it are always the same build). Never used on the admission path.
 */
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';

/** In-cluster config, `$KUBECONFIG` or ~/.kube/config (`loadFromDefault`), or the given file. */
export function loadKubeConfig(file: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromDefault();
  return kc;
}

/**
 * The image of `containerName` in the pod `namespace/name` (the only container's when
 * there is just one and none has that name). Retries for `timeoutMs` on errors other than
 * 403/404, because the API server may be briefly unreachable when the webhook starts.
 */
export async function ownImage(
  kc: KubeConfig,
  pod: { name: string; namespace: string; containerName: string },
  options: { timeoutMs?: number; signal?: AbortSignal } = {},
): Promise<string> {
  const core = kc.makeApiClient(CoreV1Api);
  const deadline = performance.now() + (options.timeoutMs ?? 60_000);
  let delay = 250;
  for (;;) {
    let containers;
    try {
      containers =
        (await core.readNamespacedPod({ name: pod.name, namespace: pod.namespace })).spec?.containers ?? [];
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const fatal = code === 401 || code === 403 || code === 404;
      if (fatal || performance.now() + delay > deadline || options.signal?.aborted) {
        throw new Error(
          `cannot read the webhook's own pod ${pod.namespace}/${pod.name} to find its image (set --elector-image): ${(err as Error).message}`,
          { cause: err },
        );
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 5000);
      continue;
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
}
