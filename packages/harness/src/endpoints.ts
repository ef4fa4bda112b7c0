/**
 * Stands in for the EndpointSlice controller, which skips pods that are not bound to a
 * Node (there are no Nodes here): publishes a Service's ready endpoints (pod IPs from pod
 * sandboxes) so that kube-apiserver reaches a webhook through its Service, as in a cluster.
 */
import { CoreV1Api, DiscoveryV1Api, type V1Pod } from '@kubernetes/client-node';
import type { ClusterClient } from './client.ts';

export interface Endpoint {
  pod: V1Pod;
  ip: string;
}

/** A Service port's target: a number, a container port name (looked up in the pod), or the port itself. */
function targetPort(target: number | string | undefined, port: number, pod: V1Pod | undefined): number {
  if (typeof target === 'number') return target;
  if (target === undefined) return port;
  const containers = [...(pod?.spec?.initContainers ?? []), ...(pod?.spec?.containers ?? [])];
  const found = containers.flatMap((c) => c.ports ?? []).find((p) => p.name === target);
  if (!found) throw new Error(`no container port named ${target} in pod ${pod?.metadata?.name}`);
  return found.containerPort;
}

/** Creates or replaces the EndpointSlice `<service>-harness` with these ready endpoints. */
export async function publishEndpoints(
  cluster: ClusterClient,
  namespace: string,
  service: string,
  endpoints: Endpoint[],
): Promise<void> {
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const discovery = cluster.kubeConfig.makeApiClient(DiscoveryV1Api);
  const svc = await core.readNamespacedService({ name: service, namespace });
  const name = `${service}-harness`;
  const body = {
    metadata: {
      name,
      namespace,
      labels: {
        'kubernetes.io/service-name': service,
        'endpointslice.kubernetes.io/managed-by': 'lifelease-test-harness',
      },
      // Owned by the Service, as the endpointslice controller's are: gone with it.
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Service',
          name: service,
          uid: svc.metadata!.uid!,
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    addressType: 'IPv4',
    ports: (svc.spec?.ports ?? []).map((p) => ({
      ...(p.name ? { name: p.name } : {}),
      port: targetPort(p.targetPort, p.port, endpoints[0]?.pod),
      protocol: p.protocol ?? 'TCP',
    })),
    endpoints: endpoints.map(({ pod, ip }) => ({
      addresses: [ip],
      conditions: { ready: true, serving: true, terminating: false },
      targetRef: { kind: 'Pod', name: pod.metadata!.name!, namespace, uid: pod.metadata!.uid! },
    })),
  };
  try {
    await discovery.replaceNamespacedEndpointSlice({ name, namespace, body });
  } catch (err) {
    if ((err as { code?: number }).code !== 404) throw err;
    await discovery.createNamespacedEndpointSlice({ namespace, body });
  }
}
