/**
 * What a kubelet writes when it has stopped every container of a pod: each container
 * `terminated`, the pod in a final phase (since Kubernetes 1.27 a deleted pod gets one before
 * its object is removed). The elector reads this last status from its watch on the leader's
 * Pod to know that the old elector is gone; the kubelet stand-ins write it as a real one does.
 */
import type { CoreV1Api, V1Container, V1ContainerStatus } from '@kubernetes/client-node';

export async function reportPodStopped(
  core: CoreV1Api,
  pod: { name: string; namespace: string; uid: string },
  exitCode = 0,
): Promise<void> {
  // Read, change, replace; another writer of the status in between (a test marking the pod
  // finished) makes it a 409: read again, a bounded number of times.
  for (let attempt = 1; ; attempt++) {
    try {
      await replaceStatus(core, pod, exitCode);
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 409 || attempt >= 20) throw err;
    }
  }
}

async function replaceStatus(
  core: CoreV1Api,
  pod: { name: string; namespace: string; uid: string },
  exitCode: number,
): Promise<void> {
  const current = await core.readNamespacedPodStatus({ name: pod.name, namespace: pod.namespace });
  if (current.metadata?.uid !== pod.uid) return;
  const finishedAt = new Date();
  const terminated = (c: V1Container): V1ContainerStatus => ({
    name: c.name,
    image: c.image ?? '',
    imageID: '',
    ready: false,
    restartCount: 0,
    state: { terminated: { exitCode, reason: exitCode === 0 ? 'Completed' : 'Error', finishedAt } },
  });
  current.status = {
    ...current.status,
    phase: exitCode === 0 ? 'Succeeded' : 'Failed',
    containerStatuses: (current.spec?.containers ?? []).map(terminated),
    ...(current.spec?.initContainers?.length
      ? { initContainerStatuses: current.spec.initContainers.map(terminated) }
      : {}),
  };
  await core.replaceNamespacedPodStatus({ name: pod.name, namespace: pod.namespace, body: current });
}
