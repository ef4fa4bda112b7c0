/**
 * The product on the real node (node.ts, through `sharedNode()`), installed and
 * used exactly as the README tells an admin and an app: `kubectl apply -k manifests/...` with
 * the built kubectl, the webhook as a Deployment run by the kubelet from the project image,
 * opted-in pods whose elector the kubelet starts as a native sidecar, and an app container
 * (the test app image: sh + node) that asks `$ELECTOR_GET_URL` from inside the pod and
 * prints each answer as one JSON line, which the tests read with `kubectl logs`.
 */
import { AppsV1Api, CoreV1Api, type V1Deployment, type V1Pod } from '@kubernetes/client-node';
import type { TestNode } from './shared.ts';
import { eventually } from './wait.ts';

export const WEBHOOK_NAMESPACE = 'lifelease-system';
export const WEBHOOK_DEPLOYMENT = 'lifelease-webhook';

/**
 * `kubectl apply -k <dir>` (relative to the repository), then `afterApply` (e.g. doing
 * cert-manager's job), then waits for the webhook Deployment's rollout: its pods run and are
 * ready (for self-managed TLS: made their certificate and set the caBundle).
 */
export async function installProduct(
  node: TestNode,
  options: { dir?: string; afterApply?: () => Promise<void>; timeoutMs?: number } = {},
): Promise<V1Pod[]> {
  const dir = options.dir ?? 'manifests';
  await node.kubectl(['apply', '-k', dir]);
  await options.afterApply?.();
  return webhookRollout(node, options.timeoutMs);
}

/** Waits for the webhook Deployment's rollout (however it was installed); returns its live pods. */
export async function webhookRollout(node: TestNode, timeoutMs = 300_000): Promise<V1Pod[]> {
  const timeout = Math.round(timeoutMs / 1000);
  await node.kubectl([
    '-n',
    WEBHOOK_NAMESPACE,
    'rollout',
    'status',
    `deployment/${WEBHOOK_DEPLOYMENT}`,
    `--timeout=${timeout}s`,
  ]);
  const core = node.kubeConfig.makeApiClient(CoreV1Api);
  const pods = (
    await core.listNamespacedPod({
      namespace: WEBHOOK_NAMESPACE,
      labelSelector: 'app.kubernetes.io/name=lifelease-webhook',
    })
  ).items.filter((p) => !p.metadata?.deletionTimestamp);
  return pods;
}

/** `kubectl delete -k <dir> --wait`: the next install (another overlay, another file) starts clean. */
export async function uninstallProduct(node: TestNode, dir = 'manifests'): Promise<void> {
  await node.kubectl(['delete', '-k', dir, '--ignore-not-found', '--wait=true', '--timeout=300s']);
}

/**
 * What an app container runs (`node -e`): one JSON line per answer of `$ELECTOR_GET_URL`,
 * asked every `everyMs` with a `timeoutMs` bound (the tests' apps and the demo's).
 */
export function pollingApp({ everyMs = 250, timeoutMs = 2000 } = {}): string {
  return `
const url = process.env.ELECTOR_GET_URL;
console.log(JSON.stringify({ t: Date.now(), started: true, url }));
const poll = async () => {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(${timeoutMs}) });
    const body = await res.json();
    console.log(JSON.stringify({ t: Date.now(), status: res.status, name: body.name, me: process.env.HOSTNAME }));
  } catch (err) {
    console.log(JSON.stringify({ t: Date.now(), error: String(err) }));
  }
};
setInterval(poll, ${everyMs});
process.on('SIGTERM', () => process.exit(0));
`;
}

/** The tests' app: {@link pollingApp} with its defaults. */
export const POLLING_APP = pollingApp();

export interface AppLine {
  t: number;
  started?: boolean;
  url?: string;
  status?: number;
  name?: string;
  me?: string;
  error?: string;
}

/** The app container's JSON lines so far (empty while it has not started). */
export async function appLines(node: TestNode, namespace: string, pod: string): Promise<AppLine[]> {
  const core = node.kubeConfig.makeApiClient(CoreV1Api);
  try {
    const text = await core.readNamespacedPodLog({ name: pod, namespace, container: 'app' });
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as AppLine);
  } catch {
    return [];
  }
}

/** A Deployment of opted-in pods (label `leaderElection: "true"`) whose app polls its elector. */
export function electingDeployment(
  node: TestNode,
  options: {
    name: string;
    replicas: number;
    /** The pod template's opt-in: the label (default) or the annotation. */
    optIn?: 'label' | 'annotation';
    terminationGracePeriodSeconds?: number;
    command?: string[];
  },
): V1Deployment {
  const { name, replicas } = options;
  const optIn = { leaderElection: 'true' };
  return {
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: {
          labels: { app: name, ...(options.optIn === 'annotation' ? {} : optIn) },
          ...(options.optIn === 'annotation' ? { annotations: optIn } : {}),
        },
        spec: {
          terminationGracePeriodSeconds: options.terminationGracePeriodSeconds ?? 10,
          containers: [
            {
              name: 'app',
              image: node.node.images.app,
              imagePullPolicy: 'Never',
              command: options.command ?? ['node', '-e', POLLING_APP],
              resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
            },
          ],
        },
      },
    },
  };
}

/** Live pods of a Deployment (`app=<name>`), not being deleted. */
export async function livePods(node: TestNode, namespace: string, name: string): Promise<V1Pod[]> {
  const core = node.kubeConfig.makeApiClient(CoreV1Api);
  return (await core.listNamespacedPod({ namespace, labelSelector: `app=${name}` })).items.filter(
    (p) => !p.metadata?.deletionTimestamp,
  );
}

/**
 * Creates the Deployment and waits until `replicas` pods run with every container ready and
 * every app's latest answer names the same leader, exactly one of them itself. Returns the
 * pods and the leader's name.
 */
export async function runElectingDeployment(
  node: TestNode,
  namespace: string,
  deployment: V1Deployment,
  timeoutMs = 180_000,
): Promise<{ pods: V1Pod[]; leader: string }> {
  await node.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({ namespace, body: deployment });
  return agreedLeader(node, namespace, deployment.metadata!.name!, deployment.spec!.replicas!, timeoutMs);
}

/** Waits until `replicas` live pods run, ready, and their apps agree on one leader among them. */
export async function agreedLeader(
  node: TestNode,
  namespace: string,
  name: string,
  replicas: number,
  timeoutMs = 180_000,
  since = 0,
): Promise<{ pods: V1Pod[]; leader: string }> {
  return eventually(
    `${replicas} pods of ${namespace}/${name} running and agreeing on one leader`,
    async () => {
      const pods = (await livePods(node, namespace, name)).filter(
        (p) => p.status?.phase === 'Running' && p.status.containerStatuses?.every((s) => s.ready),
      );
      if (pods.length !== replicas) return undefined;
      const last = await Promise.all(
        pods.map(async (p) =>
          (await appLines(node, namespace, p.metadata!.name!)).filter((l) => l.t > since && l.name).at(-1),
        ),
      );
      const names = new Set(last.map((l) => l?.name));
      const leader = last[0]?.name;
      if (names.size !== 1 || !leader || !pods.some((p) => p.metadata?.name === leader)) return undefined;
      return { pods, leader };
    },
    timeoutMs,
  );
}
