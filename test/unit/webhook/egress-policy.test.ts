/** The egress NetworkPolicy of an election: what it allows, and when it is made. */
import type { V1NetworkPolicy, V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  electorEgressPolicy,
  needsEgressPolicy,
  selects,
  targetFromEndpointSlice,
  toCidr,
} from '../../../webhook/egress-policy.ts';

const pod = (labels: Record<string, string>): V1Pod => ({ metadata: { name: 'p', labels } });
const policy = (spec: V1NetworkPolicy['spec'], labels: Record<string, string> = {}): V1NetworkPolicy => ({
  metadata: { name: 'x', labels },
  spec: spec!,
});

describe('elector egress policy', () => {
  test('only the election pods, only TCP to the API server addresses and port', () => {
    assert.deepEqual(electorEgressPolicy('team-a', 'reports', { cidrs: ['10.0.0.1/32'], port: 6443 }), {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: {
        name: 'lifelease-elector-reports',
        namespace: 'team-a',
        labels: { 'app.kubernetes.io/managed-by': 'lifelease', 'lifelease.dev/election': 'reports' },
      },
      spec: {
        podSelector: { matchLabels: { 'lifelease.dev/election': 'reports' } },
        policyTypes: ['Egress'],
        egress: [{ to: [{ ipBlock: { cidr: '10.0.0.1/32' } }], ports: [{ protocol: 'TCP', port: 6443 }] }],
      },
    });
  });

  test('addresses become host CIDRs', () => {
    assert.equal(toCidr('10.1.2.3'), '10.1.2.3/32');
    assert.equal(toCidr('fd00::1'), 'fd00::1/128');
    assert.equal(toCidr('10.1.0.0/16'), '10.1.0.0/16');
  });

  test('the kubernetes EndpointSlice: ready addresses and the https port', () => {
    assert.deepEqual(
      targetFromEndpointSlice({
        addressType: 'IPv4',
        endpoints: [
          { addresses: ['10.0.0.3'], conditions: { ready: true } },
          { addresses: ['10.0.0.2'] },
          { addresses: ['10.0.0.9'], conditions: { ready: false } },
        ],
        ports: [{ name: 'https', port: 6443, protocol: 'TCP' }],
      }),
      { cidrs: ['10.0.0.2/32', '10.0.0.3/32'], port: 6443 },
    );
    assert.equal(
      targetFromEndpointSlice({ addressType: 'IPv4', endpoints: [], ports: [{ port: 6443 }] }),
      undefined,
    );
    assert.equal(
      targetFromEndpointSlice({ addressType: 'IPv4', endpoints: [{ addresses: ['10.0.0.2'] }] }),
      undefined,
    );
  });

  test('label selectors', () => {
    const labels = { app: 'a', tier: 'web' };
    const cases: [Parameters<typeof selects>[0], boolean][] = [
      [{}, true],
      [{ matchLabels: { app: 'a' } }, true],
      [{ matchLabels: { app: 'b' } }, false],
      [{ matchExpressions: [{ key: 'tier', operator: 'In', values: ['web', 'db'] }] }, true],
      [{ matchExpressions: [{ key: 'tier', operator: 'NotIn', values: ['web'] }] }, false],
      [{ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['x'] }] }, true],
      [{ matchExpressions: [{ key: 'app', operator: 'Exists' }] }, true],
      [{ matchExpressions: [{ key: 'app', operator: 'DoesNotExist' }] }, false],
      [{ matchExpressions: [{ key: 'app', operator: 'Bogus' }] }, false],
    ];
    for (const [selector, want] of cases)
      assert.equal(selects(selector, labels), want, JSON.stringify(selector));
  });

  test('when a policy is needed: off never, always always, if-isolated when another policy isolates a pod', () => {
    const pods = [pod({ app: 'reports', 'lifelease.dev/election': 'reports' })];
    const denyAll = policy({ podSelector: {}, policyTypes: ['Egress'] });
    const ingressOnly = policy({ podSelector: {}, policyTypes: ['Ingress'] });
    const otherPods = policy({ podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Egress'] });
    const legacyEgress = policy({
      podSelector: {},
      egress: [{ to: [{ ipBlock: { cidr: '10.9.0.0/16' } }] }],
    });
    const ours = policy(
      { podSelector: {}, policyTypes: ['Egress'] },
      { 'app.kubernetes.io/managed-by': 'lifelease' },
    );
    assert.equal(needsEgressPolicy('off', pods, [denyAll]), false);
    assert.equal(needsEgressPolicy('always', pods, []), true);
    assert.equal(needsEgressPolicy('if-isolated', pods, []), false);
    assert.equal(needsEgressPolicy('if-isolated', pods, [denyAll]), true);
    assert.equal(needsEgressPolicy('if-isolated', pods, [ingressOnly]), false);
    assert.equal(needsEgressPolicy('if-isolated', pods, [otherPods]), false);
    assert.equal(needsEgressPolicy('if-isolated', pods, [legacyEgress]), true);
    // Our own policies (of this or another election) do not count as a default deny.
    assert.equal(needsEgressPolicy('if-isolated', pods, [ours]), false);
  });
});
