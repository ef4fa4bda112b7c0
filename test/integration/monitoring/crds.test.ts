/**
 * The shipped PrometheusRule, PodMonitor and ServiceMonitor (kustomize's component and the
 * chart's, with labels) are valid for prometheus-operator: its real CRDs (v0.85.0, from its Go
 * module) are installed on the local control plane and the API server validates each object
 * against their schemas, with strict field validation (an unknown field is an error), in a
 * dry-run create.
 */
import {
  ApiextensionsV1Api,
  CustomObjectsApi,
  loadAllYaml,
  type KubernetesObject,
  type V1CustomResourceDefinition,
} from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { resolvePrometheusOperatorCrds } from '@lifelease/harness/binaries';
import { renderChart } from '@lifelease/harness/helm';
import { REPO_ROOT } from '@lifelease/harness/kubelet';
import { applyManifests, renderManifests } from '@lifelease/harness/manifests';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const KINDS: Record<string, string> = {
  PrometheusRule: 'prometheusrules',
  PodMonitor: 'podmonitors',
  ServiceMonitor: 'servicemonitors',
};

let cluster: TestCluster;
let ns: string;

before(async () => {
  cluster = await sharedCluster();
  const dir = await resolvePrometheusOperatorCrds();
  const crds = Object.values(KINDS).map(
    (plural) =>
      loadAllYaml(
        readFileSync(path.join(dir, `monitoring.coreos.com_${plural}.yaml`), 'utf8'),
      )[0] as V1CustomResourceDefinition & KubernetesObject,
  );
  await applyManifests(cluster.kubeConfig, crds);
  const ext = cluster.kubeConfig.makeApiClient(ApiextensionsV1Api);
  for (const crd of crds) {
    await eventually(`CRD ${crd.metadata?.name} established`, async () => {
      const live = await ext.readCustomResourceDefinition({ name: crd.metadata!.name! });
      return live.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True');
    });
  }
  ns = await cluster.createNamespace('monitoring-crds');
});

/** Creates the object in dry-run with strict field validation; rejects with the server's reason. */
async function validate(o: KubernetesObject): Promise<void> {
  const [group, version] = o.apiVersion!.split('/') as [string, string];
  await eventually(`the ${o.kind} API served`, () =>
    cluster.kubeConfig
      .makeApiClient(CustomObjectsApi)
      .listNamespacedCustomObject({ group, version, namespace: ns, plural: KINDS[o.kind!]! }),
  );
  await cluster.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group,
    version,
    namespace: ns,
    plural: KINDS[o.kind!]!,
    body: { ...o, metadata: { ...o.metadata, namespace: ns } },
    dryRun: 'All',
    fieldValidation: 'Strict',
  });
}

const monitoringObjects = (objects: KubernetesObject[]) => objects.filter((o) => o.kind! in KINDS);

describe('monitoring objects against the prometheus-operator CRDs', () => {
  test('kustomize: manifests/components/monitoring', async () => {
    const objects = monitoringObjects(
      await renderManifests(path.join(REPO_ROOT, 'test/fixtures/kustomize/monitoring-egress')),
    );
    assert.deepEqual(objects.map((o) => o.kind).sort(), ['PodMonitor', 'PrometheusRule', 'ServiceMonitor']);
    for (const o of objects) await validate(o);
  });

  test('helm: monitoring.enabled with labels', async () => {
    const objects = monitoringObjects(
      await renderChart({ monitoring: { enabled: true, labels: { release: 'kube-prometheus-stack' } } }),
    );
    assert.equal(objects.length, 3);
    for (const o of objects) {
      assert.equal(o.metadata?.labels?.['release'], 'kube-prometheus-stack');
      await validate(o);
    }
  });

  test('the validation can fail: a misspelt field and a wrong type are refused', async () => {
    const objects = monitoringObjects(
      await renderManifests(path.join(REPO_ROOT, 'test/fixtures/kustomize/monitoring-egress')),
    );
    const pm = structuredClone(objects.find((o) => o.kind === 'PodMonitor')!) as KubernetesObject & {
      spec: Record<string, unknown>;
    };
    pm.spec['podMetricEndpoints'] = pm.spec['podMetricsEndpoints'];
    delete pm.spec['podMetricsEndpoints'];
    await assert.rejects(validate(pm), /strict decoding error: unknown field .*spec.podMetricEndpoints/);
    const rule = structuredClone(objects.find((o) => o.kind === 'PrometheusRule')!) as KubernetesObject & {
      spec: { groups: { rules: Record<string, unknown>[] }[] };
    };
    rule.spec.groups[0]!.rules[0]!['for'] = 5;
    await assert.rejects(validate(rule), /Invalid value/);
  });
});
