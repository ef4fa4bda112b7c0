/**
 * Golden files, after Istio's injection tests: each `test/fixtures/golden/<case>.input.json`
 * holds a pod as the API server sends it, `<case>.golden.json` the pod we expect after
 * injection and the warnings. For each case: the response's patch applied to the input gives
 * the golden pod; reviewing the golden pod again gives no patch (idempotent); a golden file
 * that differs from what the code produces, or has no input, fails.
 *
 *   UPDATE_GOLDEN=1 npx node --test test/unit/webhook/golden.test.ts   # rewrite, then review the diff
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { handleAdmission, parseReview } from '../../../webhook/admission.ts';
import type { InjectionConfig } from '../../../webhook/inject.ts';
import { createReview, decodePatch, patchedPod, TEST_CONFIG } from '../../support/admission-reviews.ts';

const DIR = path.resolve(import.meta.dirname, '../../fixtures/golden');
const UPDATE = process.env['UPDATE_GOLDEN'] === '1';

interface Input {
  description: string;
  config?: Partial<InjectionConfig>;
  pod: { metadata?: { namespace?: string } };
}
interface Golden {
  warnings: string[];
  pod: unknown;
}

function review(pod: Input['pod'], config: InjectionConfig) {
  const parsed = parseReview(createReview(pod));
  assert.ok(parsed.ok);
  return handleAdmission(parsed.request, config);
}

/** Does the JSON pointer `pointer` (an appending `/-` means the array's last item) resolve in `doc`? */
function written(doc: unknown, pointer: string): boolean {
  let node = doc;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(node)) {
      const i = key === '-' ? node.length - 1 : Number(key);
      if (!(i >= 0 && i < node.length)) return false;
      node = node[i] as unknown;
    } else if (node !== null && typeof node === 'object' && key in node) {
      node = (node as Record<string, unknown>)[key];
    } else {
      return false;
    }
  }
  return true;
}

const files = readdirSync(DIR);
const cases = files.filter((f) => f.endsWith('.input.json')).map((f) => f.slice(0, -'.input.json'.length));

describe('golden injection', () => {
  test('every golden file has an input, and there are cases', () => {
    assert.ok(cases.length >= 10, `only ${cases.length} cases`);
    const orphans = files
      .filter((f) => f.endsWith('.golden.json'))
      .filter((f) => !cases.includes(f.slice(0, -'.golden.json'.length)));
    assert.deepEqual(orphans, [], 'golden files without an input (stale: delete them)');
  });

  for (const name of cases) {
    test(name, () => {
      const input = JSON.parse(readFileSync(path.join(DIR, `${name}.input.json`), 'utf8')) as Input;
      const config = { ...TEST_CONFIG, ...input.config };
      const first = review(input.pod, config);
      assert.equal(first.review.response.allowed, true, first.message);
      assert.equal(first.outcome, 'patched');
      const injected = patchedPod(input.pod, first.review);
      const actual: Golden = { warnings: first.review.response.warnings ?? [], pod: injected };

      const goldenFile = path.join(DIR, `${name}.golden.json`);
      if (UPDATE) writeFileSync(goldenFile, `${JSON.stringify(actual, null, 2)}\n`);
      let expected: Golden;
      try {
        expected = JSON.parse(readFileSync(goldenFile, 'utf8')) as Golden;
      } catch {
        assert.fail(`${goldenFile} is missing: run with UPDATE_GOLDEN=1 and review it`);
      }
      assert.deepEqual(
        actual,
        expected,
        `${name}: output differs from the golden file (UPDATE_GOLDEN=1 rewrites it)`,
      );

      // The patch never touches managedFields, and every path it writes exists in the result.
      for (const op of decodePatch(first.review)) {
        assert.ok(!op.path.includes('managedFields'), op.path);
        if (op.op === 'add' || op.op === 'replace')
          assert.ok(written(injected, op.path), `${name}: ${op.path}`);
      }

      // Re-review of the injected pod: nothing to change, same warnings.
      const again = review(expected.pod as Input['pod'], config);
      assert.equal(again.review.response.allowed, true);
      assert.deepEqual(decodePatch(again.review), [], `${name}: re-review changed the pod`);
      assert.equal(again.reason, 'already-injected');
    });
  }
});
