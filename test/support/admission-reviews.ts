/** Shared by the webhook's unit tests: a fixed injection config and AdmissionReview builders. */
import type { V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import type { AdmissionReviewResponse } from '../../webhook/admission.ts';
import type { InjectionConfig } from '../../webhook/inject.ts';
import { applyPatch, type Operation } from '../../webhook/patch.ts';

export const TEST_CONFIG: InjectionConfig = {
  image: 'registry.example/lifelease:0.1.0',
  command: [],
  argsPrefix: ['elector'],
  mode: 'native-sidecar',
  electionPort: 4040,
  probePort: 4041,
  resources: { cpuRequest: '10m', memoryRequest: '48Mi', cpuLimit: '250m', memoryLimit: '128Mi' },
  version: 'test',
};

let counter = 0;

/** An AdmissionReview for the CREATE of `pod` in its namespace (or `namespace`). */
export function createReview(pod: unknown, namespace?: string, extra: Record<string, unknown> = {}) {
  const meta = (pod as V1Pod | undefined)?.metadata;
  counter += 1;
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: `00000000-0000-4000-8000-${String(counter).padStart(12, '0')}`,
      kind: { group: '', version: 'v1', kind: 'Pod' },
      resource: { group: '', version: 'v1', resource: 'pods' },
      requestKind: { group: '', version: 'v1', kind: 'Pod' },
      requestResource: { group: '', version: 'v1', resource: 'pods' },
      name: meta?.name ?? '',
      namespace: namespace ?? meta?.namespace ?? 'default',
      operation: 'CREATE',
      userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
      object: pod,
      oldObject: null,
      dryRun: false,
      options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
      ...extra,
    },
  };
}

/** Decodes a response's patch (asserting its shape); [] when it carries none. */
export function decodePatch(res: AdmissionReviewResponse): Operation[] {
  const r = res.response;
  if (r.patch === undefined) {
    assert.equal(r.patchType, undefined, 'patchType without patch');
    return [];
  }
  assert.equal(r.patchType, 'JSONPatch');
  const ops: unknown = JSON.parse(Buffer.from(r.patch, 'base64').toString('utf8'));
  assert.ok(Array.isArray(ops), 'the patch is a JSON array');
  return ops as Operation[];
}

/** The pod after applying the response's patch to it. */
export function patchedPod<T>(pod: T, res: AdmissionReviewResponse): T {
  return applyPatch(pod, decodePatch(res));
}
