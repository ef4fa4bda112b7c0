/**
 * The Helm chart cannot drift from manifests/: for the same settings, `helm template` (the
 * real helm) and `kustomize build` (the real kustomize) render the same objects with the same
 * fields, Helm's four recommended labels apart. Each setting the chart offers is covered by a
 * case whose kustomize side is an overlay (the shipped ones, or one under
 * test/fixtures/kustomize that makes the same change the kustomize way). The webhook's flags
 * the chart renders are parsed by the webhook's own parser, and `helm lint` passes.
 */
import type { KubernetesObject, V1Deployment } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { parseConfig } from '../../../webhook/config.ts';
import { WEBHOOK_EGRESS_RULES } from '../../../webhook/egress-policy.ts';
import {
  CHART_DIR,
  helm,
  objectKey,
  renderChart,
  valuesFile,
  withoutHelmLabels,
} from '@lifelease/harness/helm';
import { REPO_ROOT } from '@lifelease/harness/kubelet';
import { pick, renderManifests } from '@lifelease/harness/manifests';

const FIXTURES = path.join(REPO_ROOT, 'test/fixtures/kustomize');

interface Case {
  name: string;
  values: Record<string, unknown>;
  /** Relative to manifests/, or absolute. */
  overlay: string;
}

const CUSTOM_VALUES = {
  namespace: { create: true },
  image: { repository: 'registry.example/lifelease', tag: '1.2.3', pullPolicy: 'Always' },
  replicas: 3,
  resources: { requests: { cpu: '50m', memory: '96Mi' }, limits: { memory: '300Mi' } },
  podDisruptionBudget: { minAvailable: 2 },
  excludedNamespaces: ['kube-system', 'monitoring'],
  certificates: { mode: 'cert-manager' },
  webhook: { logLevel: 'debug', extraArgs: ['--shutdown-delay=10s'] },
  elector: {
    mode: 'container',
    electionPort: 5050,
    probePort: 5051,
    resources: { requests: { cpu: '20m', memory: '100Mi' }, limits: { cpu: '', memory: '160Mi' } },
  },
  networkPolicy: {
    electorEgress: {
      enabled: true,
      mode: 'always',
      apiServerAddresses: ['10.0.0.1/32', '10.0.0.2/32'],
      apiServerPort: 6443,
    },
  },
  nodeSelector: { 'kubernetes.io/os': 'linux' },
};

const CASES: Case[] = [
  {
    name: 'defaults = manifests/ (self-managed TLS)',
    values: { namespace: { create: true } },
    overlay: 'overlays/self-managed-tls',
  },
  {
    name: 'certificates.mode=cert-manager = overlays/cert-manager',
    values: { namespace: { create: true }, certificates: { mode: 'cert-manager' } },
    overlay: 'overlays/cert-manager',
  },
  {
    name: 'monitoring and electorEgress on = components/monitoring + components/elector-egress',
    values: {
      namespace: { create: true },
      monitoring: { enabled: true },
      networkPolicy: { electorEgress: { enabled: true } },
    },
    overlay: path.join(FIXTURES, 'monitoring-egress'),
  },
  {
    name: 'every other value changed = the same changes made with kustomize',
    values: CUSTOM_VALUES,
    overlay: path.join(FIXTURES, 'custom'),
  },
];

/** Plain data (the YAML loader makes class instances). */
const plain = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;

function deployment(objects: KubernetesObject[]): V1Deployment & KubernetesObject {
  return pick<V1Deployment & KubernetesObject>(objects, 'Deployment', 'lifelease-webhook');
}

describe('charts/lifelease renders what manifests/ installs', () => {
  for (const c of CASES) {
    test(c.name, async () => {
      const [chart, kustomize] = await Promise.all([renderChart(c.values), renderManifests(c.overlay)]);
      const fromHelm = withoutHelmLabels(chart);
      const fromKustomize = new Map(kustomize.map((o) => [objectKey(o), plain(o)]));
      assert.deepEqual([...fromHelm.keys()].sort(), [...fromKustomize.keys()].sort(), 'the same objects');
      for (const [key, o] of fromKustomize) assert.deepEqual(fromHelm.get(key), o, `${key} differs`);
      // Every object the chart makes carries Helm's labels (helm uninstall finds them by its
      // release record, people by these).
      for (const o of chart)
        assert.equal(o.metadata?.labels?.['app.kubernetes.io/instance'], 'lifelease', objectKey(o));
    });
  }

  test('without namespace.create the chart leaves the Namespace to helm install -n', async () => {
    const objects = await renderChart({});
    assert.equal(
      objects.some((o) => o.kind === 'Namespace'),
      false,
    );
    const withNs = await renderChart({ namespace: { create: true } });
    assert.equal(objects.length, withNs.length - 1);
  });

  test('another release namespace is used everywhere the webhook names its own', async () => {
    const objects = await renderChart({ certificates: { mode: 'cert-manager' } }, { namespace: 'platform' });
    const text = JSON.stringify(objects);
    assert.equal(text.includes('lifelease-system'), false, 'no object names lifelease-system');
    const mwc = pick<KubernetesObject & { webhooks: { namespaceSelector: unknown }[] }>(
      objects,
      'MutatingWebhookConfiguration',
    );
    assert.deepEqual(plain(mwc.webhooks[0]!.namespaceSelector), {
      matchExpressions: [
        { key: 'kubernetes.io/metadata.name', operator: 'NotIn', values: ['kube-system', 'platform'] },
      ],
    });
    assert.equal(mwc.metadata?.annotations?.['cert-manager.io/inject-ca-from'], 'platform/lifelease-webhook');
  });

  test("the webhook's own parser accepts the flags the chart renders, with the values given", async () => {
    const parse = async (values: Record<string, unknown>) => {
      const d = deployment(await renderChart(values));
      const container = d.spec!.template.spec!.containers[0]!;
      const env = Object.fromEntries(
        (container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]),
      );
      return {
        container,
        parsed: parseConfig({
          argv: container.args!.slice(1),
          env: { ...env, POD_NAME: 'lifelease-webhook-x', POD_NAMESPACE: 'lifelease-system' },
        }),
      };
    };
    for (const c of CASES) {
      const { parsed } = await parse(c.values);
      assert.equal(parsed.kind, 'ok', `${c.name}: ${JSON.stringify(parsed)}`);
    }
    const { container, parsed } = await parse(CUSTOM_VALUES);
    if (parsed.kind !== 'ok') throw new Error(JSON.stringify(parsed));
    const config = parsed.config;
    assert.equal(config.electorMode, 'container');
    assert.equal(config.electionPort, 5050);
    assert.equal(config.probePort, 5051);
    assert.deepEqual(config.electorResources, {
      cpuRequest: '20m',
      memoryRequest: '100Mi',
      cpuLimit: '',
      memoryLimit: '160Mi',
    });
    assert.equal(config.logLevel, 'debug');
    assert.equal(config.shutdownDelayMs, 10_000);
    assert.equal(config.electorEgressPolicy, 'always');
    assert.deepEqual(config.egressApiServerAddresses, ['10.0.0.1/32', '10.0.0.2/32']);
    assert.equal(config.egressApiServerPort, 6443);
    assert.equal(container.image, 'registry.example/lifelease:1.2.3');
  });

  test("the egress option's ClusterRole holds exactly what the reconciler is tested with", async () => {
    const objects = await renderManifests(path.join(FIXTURES, 'monitoring-egress'));
    const role = pick<KubernetesObject & { rules: unknown }>(
      objects,
      'ClusterRole',
      'lifelease-webhook-egress',
    );
    assert.deepEqual(plain(role.rules), WEBHOOK_EGRESS_RULES);
  });

  test('helm lint passes (strict) for the defaults and for every option on', async () => {
    for (const values of [{}, ...CASES.map((c) => c.values)]) {
      const v = valuesFile(values);
      try {
        const { stdout } = await helm(['lint', '--strict', CHART_DIR, '-f', v.file]);
        assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
      } finally {
        v.remove();
      }
    }
  });

  test('an unknown certificates.mode fails the render with a message', async () => {
    await assert.rejects(
      renderChart({ certificates: { mode: 'vault' } }),
      /certificates.mode must be self-managed or cert-manager/,
    );
  });
});
