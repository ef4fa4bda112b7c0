import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  bundleContains,
  caBundle,
  plan,
  type RotationPolicy,
  type StoredCertificates,
} from '../../../webhook/certs.ts';

const DAY = 86_400_000;
const T0 = new Date('2026-01-01T00:00:00Z');
const at = (days: number) => new Date(T0.getTime() + days * DAY);
const policy: RotationPolicy = {
  caValidityMs: 3650 * DAY,
  servingValidityMs: 365 * DAY,
  renewFraction: 1 / 3,
  caPropagationMs: 5 * 60_000,
  dnsNames: ['svc.ns.svc'],
};

function stored(over: Partial<StoredCertificates> = {}): StoredCertificates {
  return {
    ca: { certPem: 'CA1', keyPem: 'K1', notBefore: at(0), notAfter: at(3650) },
    serving: {
      certPem: 'S',
      keyPem: 'SK',
      notBefore: at(0),
      notAfter: at(365),
      dnsNames: ['svc.ns.svc'],
      issuedByCa: true,
    },
    ...over,
  };
}

describe('self-managed TLS plan', () => {
  const cases: [string, StoredCertificates | undefined, Date, string][] = [
    ['nothing stored', undefined, at(0), 'create'],
    ['fresh', stored(), at(1), 'none'],
    ['serving with more than a third left', stored(), at(243), 'none'],
    ['serving with less than a third left', stored(), at(244), 'renew-serving'],
    [
      'serving not covering the service',
      stored({ serving: { ...stored().serving, dnsNames: ['old'] } }),
      at(1),
      'renew-serving',
    ],
    [
      'serving from another CA',
      stored({ serving: { ...stored().serving, issuedByCa: false } }),
      at(1),
      'renew-serving',
    ],
    ['CA with less than a third left', stored(), at(2434), 'stage-ca'],
    ['CA expired', stored(), at(3651), 'create'],
    [
      'staged CA, not yet propagated',
      stored({
        next: { certPem: 'CA2', keyPem: 'K2', stagedAt: at(2434), notAfter: at(6084) },
        serving: { ...stored().serving, notBefore: at(2400), notAfter: at(2765) },
      }),
      new Date(at(2434).getTime() + 60_000),
      'none',
    ],
    [
      'staged CA, propagated',
      stored({ next: { certPem: 'CA2', keyPem: 'K2', stagedAt: at(2434), notAfter: at(6084) } }),
      new Date(at(2434).getTime() + 5 * 60_000),
      'promote-ca',
    ],
  ];
  for (const [name, s, now, want] of cases) {
    test(name, () => assert.equal(plan(s, policy, now).action, want));
  }

  test('when nothing is due, the next check is the earliest due time', () => {
    const p = plan(stored(), policy, at(1));
    assert.equal(p.action, 'none');
    assert.equal(p.action === 'none' && p.nextCheckAt.getTime(), at(0).getTime() + (365 * DAY * 2) / 3);
  });

  test('caBundle: current, staged, and the previous CA until it expires', () => {
    const s = stored({
      next: { certPem: 'CA2', keyPem: 'K2', stagedAt: at(1), notAfter: at(10) },
      previous: { certPem: 'CA0', notAfter: at(5) },
    });
    assert.equal(caBundle(s, at(2)), 'CA1\nCA2\nCA0\n');
    assert.equal(caBundle(s, at(6)), 'CA1\nCA2\n');
    assert.ok(bundleContains('CA1\nCA2\n', 'CA2'));
    assert.ok(!bundleContains('CA1\n', 'CA2'));
  });
});
