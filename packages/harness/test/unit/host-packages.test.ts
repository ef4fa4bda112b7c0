/**
 * The Debian packages the demo and the test runner install for themselves are the ones CI
 * installs (.ci/run), so a newcomer's machine and CI's never differ.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { HOST_PACKAGES } from '@lifelease/harness/host-packages';

test('.ci/run installs exactly the host packages the scripts install', () => {
  const ci = readFileSync(path.resolve(import.meta.dirname, '../../../../.ci/run'), 'utf8');
  const line = /^apt-get install (.*)$/m.exec(ci)?.[1];
  assert.ok(line, '.ci/run has an apt-get install line');
  const packages = line.split(/\s+/).filter((w) => !w.startsWith('-') && !w.includes('='));
  assert.deepEqual([...packages].sort(), [...HOST_PACKAGES].sort());
});
