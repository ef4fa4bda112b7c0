/**
 * Input abuse of the webhook, sample counts (`npm run chaos` runs tens of thousands of fuzz
 * cases and larger abuse): fuzzing through its HTTP layer (test/chaos/fuzz.ts), then the
 * real process (the bundle, as the image runs it, under the Deployment's memory limit in a
 * kernel memory cgroup where this machine has one) over HTTPS: slowloris, oversized and truncated bodies, many concurrent
 * connections, failing TLS handshakes, with a canary client answered throughout.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { webhookHttpsAbuse } from '../../chaos/abuse.ts';
import { buildBundle } from '../../chaos/bundle.ts';
import { runWebhookFuzz } from '../../chaos/fuzz.ts';

const FUZZ_CASES = Number(process.env['FUZZ_CASES'] ?? 4000);

describe('webhook abuse', () => {
  test(`fuzzing: ${FUZZ_CASES} mutated AdmissionReviews, each answered well-formed, never a patch for a pod that did not opt in`, async (t) => {
    const seed = Number(process.env['FUZZ_SEED'] ?? 20251123);
    const r = await runWebhookFuzz({ cases: FUZZ_CASES, seed });
    t.diagnostic(`outcomes: ${JSON.stringify(r.outcomes)}`);
    // The failures first: they carry the failing payload (a failure also ends the run early).
    assert.deepEqual(r.failures, []);
    assert.equal(r.cases, FUZZ_CASES);
    // The generator reaches every outcome, or it tests less than it claims.
    for (const o of ['patched', 'allowed', 'denied', 'http 400']) assert.ok((r.outcomes[o] ?? 0) > 0, o);
  });

  test('over HTTPS: slowloris, oversized and truncated bodies, many connections, failing handshakes', async (t) => {
    const bundle = await buildBundle();
    const results = await webhookHttpsAbuse('sample', bundle).finally(() => bundle.remove());
    for (const r of results) t.diagnostic(`${r.name}: ${r.figures.join('; ')}`);
    assert.deepEqual(
      results.flatMap((r) => r.problems.map((p) => `${r.name}: ${p}`)),
      [],
    );
  });
});
