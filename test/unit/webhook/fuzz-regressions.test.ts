/**
 * Cases the fault suite's webhook fuzzer (test/chaos/fuzz.ts) found, kept as regression
 * tests. Mutating admission runs before the API server validates the pod, so the webhook
 * sees pods that will be refused later; it must answer them without an internal error.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { handleAdmission, parseReview } from '../../../webhook/admission.ts';
import { createReview, decodePatch, patchedPod, TEST_CONFIG } from '../../support/admission-reviews.ts';

function review(pod: unknown) {
  const parsed = parseReview(JSON.parse(JSON.stringify(createReview(pod))));
  assert.ok(parsed.ok);
  return handleAdmission(parsed.request, TEST_CONFIG);
}

describe('fuzzer findings', () => {
  test('a container without a name that keeps its own ELECTOR_GET_URL: injected with a warning, no internal error', () => {
    const pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'p', namespace: 'ns', labels: { app: 'poller', leaderElection: 'true' } },
      spec: {
        containers: [{ image: 'x', env: [{ name: 'ELECTOR_GET_URL', value: 'http://localhost:9999/' }] }],
      },
    };
    const r = review(pod);
    assert.equal(r.outcome, 'patched', r.message);
    assert.ok(r.review.response.warnings?.some((w) => /keeps its own ELECTOR_GET_URL/.test(w)));
    patchedPod(pod, r.review); // applies
    assert.ok(decodePatch(r.review).length > 0);
  });

  test('a request namespace that is an object whose toString is not a function: 400 with the field named, no internal error', () => {
    const body = JSON.parse(
      JSON.stringify(
        createReview({
          metadata: { name: 'p', annotations: { leaderElection: 'false' } },
          spec: { containers: [{ name: 'app', image: 'x' }] },
        }),
      ),
    ) as { request: Record<string, unknown> };
    body.request['namespace'] = { 'lifelease.dev/election-port': '4041', toString: null };
    const parsed = parseReview(body);
    assert.deepEqual(parsed, {
      ok: false,
      message: "the AdmissionReview request's namespace must be a string, got object",
    });
    for (const [field, value, got] of [
      ['name', 7, 'number'],
      ['operation', ['CREATE'], 'an array'],
      ['subResource', true, 'boolean'],
    ] as const) {
      const b = structuredClone(body);
      b.request['namespace'] = 'ns';
      b.request[field] = value;
      assert.deepEqual(parseReview(b), {
        ok: false,
        message: `the AdmissionReview request's ${field} must be a string, got ${got}`,
      });
    }
    body.request['namespace'] = null;
    assert.ok(parseReview(body).ok, 'null is as good as absent');
  });

  test('a container whose name is not a string: no internal error', () => {
    const pod = {
      metadata: { name: 'p', namespace: 'ns', labels: { app: 'x', leaderElection: 'true' } },
      spec: { containers: [{ name: 42, image: 'x', env: [{ name: 'ELECTOR_PATH', value: 'elsewhere:1' }] }] },
    };
    const r = review(pod);
    assert.notEqual(r.reason, 'internal-error', r.message);
  });
});
