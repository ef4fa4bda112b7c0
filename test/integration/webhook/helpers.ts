/**
 * Registering a running webhook with the real API server, the way the shipped manifests do
 * (two webhooks: label `objectSelector`, and a CEL `matchCondition` for the annotation;
 * `failurePolicy: Fail`), but through `clientConfig.url` and scoped by a namespace label to
 * the test's own namespaces, since a MutatingWebhookConfiguration is cluster-wide.
 */
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  type KubeConfig,
  type V1MutatingWebhook,
  type V1Pod,
} from '@kubernetes/client-node';
import { eventually } from '@lifelease/harness/wait';
export { eventually };

export const apiStatus = (err: unknown): number | undefined => (err as { code?: number }).code;

/** The message in an ApiException's Status body. */
export function apiMessage(err: unknown): string {
  const body = (err as { body?: unknown }).body;
  if (typeof body === 'string') {
    try {
      const message = (JSON.parse(body) as { message?: unknown }).message;
      return typeof message === 'string' ? message : body;
    } catch {
      return body;
    }
  }
  return String(err);
}

export interface Registration {
  name: string;
  /** Label every namespace the webhook should see must carry (`<selectorKey>=<name>`). */
  selectorKey: string;
  delete(): Promise<void>;
}

/** Creates the MutatingWebhookConfiguration `name`, reaching namespaces labelled `lifelease-test=<name>`. */
export async function registerWebhook(
  kc: KubeConfig,
  options: {
    name: string;
    url: string;
    caPem: string;
    timeoutSeconds?: number;
    /** Put before the two webhooks' names (the API server's metrics label them by name). */
    namePrefix?: string;
    /** The label webhook's opt-out as a CEL matchCondition, as registered before 2026-12-01 (benches). */
    celOptOut?: boolean;
    /** Default `IfNeeded`, as the manifests register it; `Never` to measure what that costs (benches). */
    reinvocationPolicy?: 'IfNeeded' | 'Never';
  },
): Promise<Registration> {
  const api = kc.makeApiClient(AdmissionregistrationV1Api);
  const selectorKey = 'lifelease-test';
  const common = (name: string): V1MutatingWebhook => ({
    name,
    admissionReviewVersions: ['v1'],
    clientConfig: { url: `${options.url}/mutate`, caBundle: Buffer.from(options.caPem).toString('base64') },
    rules: [
      {
        operations: ['CREATE'],
        apiGroups: [''],
        apiVersions: ['v1'],
        resources: ['pods'],
        scope: 'Namespaced',
      },
    ],
    namespaceSelector: { matchLabels: { [selectorKey]: options.name } },
    failurePolicy: 'Fail',
    sideEffects: 'None',
    reinvocationPolicy: options.reinvocationPolicy ?? 'IfNeeded',
    timeoutSeconds: options.timeoutSeconds ?? 5,
    matchPolicy: 'Equivalent',
  });
  await api.createMutatingWebhookConfiguration({
    body: {
      metadata: { name: options.name },
      webhooks: [
        {
          ...common(`${options.namePrefix ?? ''}label.inject.lifelease.dev`),
          // An explicit opt-out never waits on the webhook either (any other value, even an
          // invalid one, is sent so that it can be refused with a message). A label selector,
          // not CEL: cheaper in the API server (manifests/base/mutatingwebhookconfiguration.yaml).
          ...(options.celOptOut
            ? {
                objectSelector: { matchExpressions: [{ key: 'leaderElection', operator: 'Exists' }] },
                matchConditions: [
                  {
                    name: 'not-opted-out',
                    expression: "object.metadata.labels['leaderElection'].lowerAscii() != 'false'",
                  },
                ],
              }
            : {
                objectSelector: {
                  matchExpressions: [
                    { key: 'leaderElection', operator: 'Exists' },
                    { key: 'leaderElection', operator: 'NotIn', values: ['false', 'False', 'FALSE'] },
                  ],
                },
              }),
        },
        {
          ...common(`${options.namePrefix ?? ''}annotation.inject.lifelease.dev`),
          objectSelector: { matchExpressions: [{ key: 'leaderElection', operator: 'DoesNotExist' }] },
          matchConditions: [
            {
              name: 'opted-in-by-annotation',
              expression:
                "has(object.metadata.annotations) && 'leaderElection' in object.metadata.annotations && object.metadata.annotations['leaderElection'].lowerAscii() != 'false'",
            },
          ],
        },
      ],
    },
  });
  return {
    name: options.name,
    selectorKey,
    async delete() {
      try {
        await api.deleteMutatingWebhookConfiguration({ name: options.name });
      } catch (err) {
        if (apiStatus(err) !== 404) throw err;
      }
    },
  };
}

export function electorOf(pod: V1Pod) {
  return [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])].find(
    (c) => c.name === 'elector',
  );
}

/**
 * Waits until the configuration takes effect (the API server picks it up asynchronously): a
 * dry-run CREATE of an opted-in marker pod comes back with an elector.
 */
export async function waitUntilActive(kc: KubeConfig, namespace: string, timeoutMs = 30_000): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await eventually(
    'the webhook configuration to take effect',
    async () => {
      const pod = await core.createNamespacedPod({
        namespace,
        dryRun: 'All',
        body: {
          metadata: { generateName: 'marker-', labels: { leaderElection: 'true', app: 'marker' } },
          spec: { containers: [{ name: 'c', image: 'registry.example/marker:1' }] },
        },
      });
      return electorOf(pod) ? true : undefined;
    },
    timeoutMs,
  );
}
