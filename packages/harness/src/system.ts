/**
 * The whole product on the local control plane, installed as a cluster admin would:
 * `kustomize build manifests/<overlay>` applied with server-side apply; the webhook
 * Deployment's pods (made by the real deployment and replica-set controllers) run by the
 * kubelet stand-in with routable pod IPs; their endpoints published for the Service, so the
 * API server calls the webhook through `clientConfig.service` and verifies the certificate
 * the webhook made for itself. Requires `npm run build` (the stand-in runs dist/cli.js).
 *
 * The tests install the product on the real node instead (on-node.ts:
 * `kubectl apply -k`, the webhook run by the kubelet from the image); this stays for the
 * fault suite's stand-in mode (test/chaos/runner.ts without `--real-node`: no root, no node;
 * why that mode remains is in test/chaos/kubelet.ts), whose pods the same stand-in runs.
 */
import {
  AdmissionregistrationV1Api,
  AppsV1Api,
  CoreV1Api,
  type KubernetesObject,
  type V1Pod,
} from '@kubernetes/client-node';
import { request } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterClient } from './client.ts';
import { publishEndpoints } from './endpoints.ts';
import { Kubelet, type KubeletEvent } from './kubelet.ts';
import { applyManifests, renderManifests } from './manifests.ts';

export const WEBHOOK_NAMESPACE = 'lifelease-system';
export const WEBHOOK_SERVICE = 'lifelease-webhook';
export const WEBHOOK_CONFIGURATION = 'lifelease';

export interface InstalledWebhook {
  objects: KubernetesObject[];
  kubelet: Kubelet;
  pods: V1Pod[];
  /** Stops the webhook pods (the objects stay; the control plane is throwaway). */
  stop(): Promise<void>;
}

async function readyz(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(
      { host: ip, port, path: '/readyz', rejectUnauthorized: false, timeout: 1000 },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export async function installWebhook(
  cluster: ClusterClient,
  options: {
    overlay?: string;
    log?: (msg: string) => void;
    onEvent?: (e: KubeletEvent) => void;
    timeoutMs?: number;
    /** Runs after the objects are applied and before the webhook pods start (e.g. to stand in for cert-manager). */
    afterApply?: (objects: KubernetesObject[]) => Promise<void>;
    /**
     * Installs the product another way than applying `kustomize build manifests/<overlay>`
     * (e.g. `helm install`); returns the objects it installed.
     */
    install?: () => Promise<KubernetesObject[]>;
  } = {},
): Promise<InstalledWebhook> {
  const log = options.log ?? (() => {});
  // Rendering or installing may build kustomize or helm first (minutes, cold): the deadline
  // starts after it.
  let objects: KubernetesObject[];
  if (options.install) {
    objects = await options.install();
  } else {
    objects = await renderManifests(options.overlay ?? '.');
    log(`applying ${objects.length} objects from manifests/${options.overlay ?? ''}`);
    await applyManifests(cluster.kubeConfig, objects);
  }
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  await options.afterApply?.(objects);

  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  const apps = cluster.kubeConfig.makeApiClient(AppsV1Api);
  const deployment = await apps.readNamespacedDeployment({
    name: WEBHOOK_SERVICE,
    namespace: WEBHOOK_NAMESPACE,
  });
  const replicas = deployment.spec?.replicas ?? 1;
  const selector = Object.entries(deployment.spec?.selector.matchLabels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(',');

  const kubelet = new Kubelet({
    cluster,
    namespace: WEBHOOK_NAMESPACE,
    labelSelector: selector,
    container: 'webhook',
    podNetwork: true,
    ...(options.onEvent ? { onEvent: options.onEvent } : {}),
  });
  kubelet.start();
  try {
    // The deployment and replica-set controllers make the pods; the stand-in runs them.
    log(`waiting for ${replicas} webhook pods`);
    for (;;) {
      if (kubelet.sandboxes().length >= replicas) break;
      if (Date.now() > deadline)
        throw new Error(`only ${kubelet.sandboxes().length}/${replicas} webhook pods started`);
      await sleep(100);
    }
    const sandboxes = kubelet.sandboxes();
    const httpsPort = sandboxes[0]!.container.ports?.find((p) => p.name === 'https')?.containerPort ?? 8443;
    log('waiting for the webhook to make its certificate, set the caBundle and report ready');
    for (const sandbox of sandboxes) {
      while (!(await readyz(sandbox.podIP, httpsPort))) {
        if (!sandbox.running) throw new Error(`webhook pod exited:\n${sandbox.logs()}`);
        if (Date.now() > deadline) throw new Error(`webhook pod never became ready:\n${sandbox.logs()}`);
        await sleep(100);
      }
    }
    await publishEndpoints(
      cluster,
      WEBHOOK_NAMESPACE,
      WEBHOOK_SERVICE,
      sandboxes.map((s) => ({ pod: s.pod, ip: s.podIP })),
    );
    const admission = cluster.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
    const mwc = await admission.readMutatingWebhookConfiguration({ name: WEBHOOK_CONFIGURATION });
    if (!mwc.webhooks?.every((w) => w.clientConfig.caBundle))
      throw new Error('caBundle not set on every webhook');
    const pods = (await core.listNamespacedPod({ namespace: WEBHOOK_NAMESPACE, labelSelector: selector }))
      .items;
    return { objects, kubelet, pods, stop: () => kubelet.stop() };
  } catch (err) {
    await kubelet.stop();
    throw err;
  }
}
