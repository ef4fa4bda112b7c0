/** The pure AdmissionReview handler, its response constructors, and the patch it computes. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  allowed,
  denied,
  encodeReview,
  errored,
  handleAdmission,
  parseReview,
  patched,
  podDisplayName,
  type AdmissionRequest,
} from '../../../webhook/admission.ts';
import { applyPatch, createPatch } from '../../../webhook/patch.ts';
import { createReview, decodePatch, patchedPod, TEST_CONFIG } from '../../support/admission-reviews.ts';

function handle(body: unknown) {
  const parsed = parseReview(body);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.message);
  return handleAdmission(parsed.request, TEST_CONFIG);
}

const optedPod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'web-1', namespace: 'team', labels: { app: 'web', leaderElection: 'true' } },
  spec: { containers: [{ name: 'web', image: 'web:1' }] },
};

describe('response constructors', () => {
  test('every constructor echoes the uid and the v1 envelope', () => {
    for (const r of [
      allowed('u1'),
      denied('u1', 'no'),
      errored('u1', 400, 'bad'),
      patched('u1', [{ op: 'add', path: '/x', value: 1 }]),
      patched('u1', []),
    ]) {
      assert.equal(r.apiVersion, 'admission.k8s.io/v1');
      assert.equal(r.kind, 'AdmissionReview');
      assert.equal(r.response.uid, 'u1');
    }
  });
  test('denied is 403 Forbidden with the message; errored carries its code', () => {
    assert.deepEqual(denied('u', 'why').response, {
      uid: 'u',
      allowed: false,
      status: { code: 403, reason: 'Forbidden', message: 'why' },
    });
    assert.deepEqual(errored('u', 500, 'oops').response.status, { code: 500, message: 'oops' });
  });
  test('patched with no operations is plain allowed (no patch fields)', () => {
    assert.deepEqual(patched('u', [], ['w']).response, { uid: 'u', allowed: true, warnings: ['w'] });
    assert.deepEqual(allowed('u').response, { uid: 'u', allowed: true });
  });
  test('patched encodes the operations as base64 JSON', () => {
    const ops = [{ op: 'add' as const, path: '/metadata/labels/a', value: 'b' }];
    const r = patched('u', ops);
    assert.equal(r.response.patchType, 'JSONPatch');
    assert.deepEqual(decodePatch(r), ops);
  });
  test('encodeReview writes what JSON.stringify would, byte for byte', () => {
    const ops = [{ op: 'add' as const, path: '/metadata/labels/a', value: 'b"\\\u2028' }];
    for (const r of [
      allowed('u"1'),
      allowed('u', ['a "quoted" warning', 'ü']),
      denied('u', 'no "way"\n'),
      errored('u', 500, 'oops'),
      patched('u', ops, ['w']),
      patched('u', []),
    ])
      assert.equal(encodeReview(r), JSON.stringify(r));
  });
});

describe('parseReview', () => {
  const bad: [string, unknown, RegExp][] = [
    ['not an object', [1, 2], /JSON object/],
    ['null', null, /JSON object/],
    [
      'v1beta1',
      { apiVersion: 'admission.k8s.io/v1beta1', kind: 'AdmissionReview', request: { uid: 'u' } },
      /admissionReviewVersions/,
    ],
    ['wrong kind', { apiVersion: 'admission.k8s.io/v1', kind: 'Pod' }, /expected apiVersion/],
    ['no request', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview' }, /no request/],
    ['no uid', { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: {} }, /no uid/],
    [
      'numeric uid',
      { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', request: { uid: 7 } },
      /no uid/,
    ],
  ];
  for (const [name, body, message] of bad) {
    test(`refuses ${name}`, () => {
      const r = parseReview(body);
      assert.equal(r.ok, false);
      if (!r.ok) assert.match(r.message, message);
    });
  }
});

describe('handleAdmission', () => {
  test('an opted-in pod is patched; the patch applies and adds the elector', () => {
    const body = createReview(optedPod);
    const r = handle(body);
    assert.equal(r.outcome, 'patched');
    assert.equal(r.reason, 'injected');
    assert.equal(r.election, 'web');
    assert.equal(r.review.response.uid, body.request.uid);
    const out = patchedPod(optedPod, r.review) as unknown as { spec: { initContainers: { name: string }[] } };
    assert.equal(out.spec.initContainers[0]?.name, 'elector');
  });

  test('a pod that did not opt in is allowed with no patch', () => {
    const r = handle(createReview({ ...optedPod, metadata: { name: 'x', namespace: 'team' } }));
    assert.deepEqual(r.review.response, { uid: r.review.response.uid, allowed: true });
    assert.equal(r.reason, 'not-opted-in');
  });

  test('a refusal is denied with the message and the uid', () => {
    const body = createReview({ ...optedPod, spec: { ...optedPod.spec, hostNetwork: true } });
    const r = handle(body);
    assert.equal(r.outcome, 'denied');
    assert.equal(r.review.response.allowed, false);
    assert.equal(r.review.response.uid, body.request.uid);
    assert.match(r.review.response.status?.message ?? '', /hostNetwork/);
  });

  test('dryRun is answered exactly like a real request', () => {
    const a = handle(createReview(optedPod, 'team', { uid: 'same', dryRun: true }));
    const b = handle(createReview(optedPod, 'team', { uid: 'same', dryRun: false }));
    assert.deepEqual(a.review, b.review);
  });

  test('not a pod CREATE: allowed untouched', () => {
    for (const extra of [
      { operation: 'UPDATE' },
      { operation: 'DELETE' },
      { kind: { group: 'apps', version: 'v1', kind: 'Deployment' } },
      { subResource: 'status' },
    ]) {
      const r = handle(createReview(optedPod, 'team', extra));
      assert.deepEqual(
        r.review.response,
        { uid: r.review.response.uid, allowed: true },
        JSON.stringify(extra),
      );
      assert.equal(r.reason, 'not-a-pod-create');
    }
  });

  test('a pod CREATE without an object is errored 400', () => {
    const r = handle(createReview(undefined, 'team'));
    assert.equal(r.outcome, 'errored');
    assert.equal(r.review.response.status?.code, 400);
  });

  test('the namespace comes from the request, else from the object', () => {
    const r = handle(createReview(optedPod, ''));
    assert.equal(r.outcome, 'patched');
    const noNs = { ...optedPod, metadata: { ...optedPod.metadata, namespace: undefined } };
    const r2 = handle(createReview(noNs, ''));
    assert.equal(r2.outcome, 'errored');
    assert.match(r2.message ?? '', /no namespace/);
  });

  test('a defect inside becomes errored 500, never a throw', () => {
    const hostile = {
      ...optedPod,
      get spec(): unknown {
        throw new Error('boom');
      },
    };
    const r = handleAdmission(
      {
        uid: 'u',
        kind: { group: '', version: 'v1', kind: 'Pod' },
        operation: 'CREATE',
        namespace: 'n',
        object: hostile,
      },
      TEST_CONFIG,
    );
    assert.equal(r.outcome, 'errored');
    assert.equal(r.review.response.status?.code, 500);
    assert.equal(r.review.response.uid, 'u');
    assert.match(r.message ?? '', /boom/);
  });

  test('podDisplayName', () => {
    const req = (name: string, object: unknown): AdmissionRequest => ({ uid: 'u', name, object });
    assert.equal(podDisplayName(req('a', {})), 'a');
    assert.equal(podDisplayName(req('', { metadata: { name: 'b' } })), 'b');
    assert.equal(podDisplayName(req('', { metadata: { generateName: 'c-' } })), 'c-*');
    assert.equal(podDisplayName(req('', null)), '');
  });
});

describe('patch', () => {
  test('managedFields are never diffed', () => {
    const a = { metadata: { name: 'x', managedFields: [{ manager: 'm' }] }, spec: {} };
    const b = { metadata: { name: 'x', managedFields: [] }, spec: { y: 1 } };
    assert.deepEqual(createPatch(a, b), [{ op: 'add', path: '/spec/y', value: 1 }]);
  });
  test('keys with / and ~ are escaped, and the patch applies', () => {
    const a = { metadata: { annotations: { 'example.com/a': '1' } } };
    const b = {
      metadata: { annotations: { 'example.com/a': '1', 'lifelease.dev/injected': 'x', 'a~b': 'y' } },
    };
    const ops = createPatch(a, b);
    assert.ok(ops.some((o) => o.path === '/metadata/annotations/lifelease.dev~1injected'));
    assert.ok(ops.some((o) => o.path === '/metadata/annotations/a~0b'));
    assert.deepEqual(applyPatch(a, ops), b);
  });
  test('undefined values in the mutated copy are dropped, as on the wire', () => {
    assert.deepEqual(createPatch({ a: 1 }, { a: 1, b: undefined }), []);
  });
});
