/**
 * The README tells the truth where it can be checked mechanically: its configuration tables
 * are exactly what the parsers generate, every script it names exists, and every file it
 * points at is there.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { README, render } from '../../../scripts/docs.ts';

const root = path.dirname(README);
const readme = readFileSync(README, 'utf8');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
};

describe('README', () => {
  test('configuration tables match the parsers (run `npm run docs` after changing an option)', () => {
    assert.equal(readme, render(readme));
  });

  test('every `npm run X` / `npm X` it mentions is a script', () => {
    const named = new Set([...readme.matchAll(/`npm (?:run )?([a-z:-]+)/g)].map((m) => m[1]!));
    for (const builtin of ['ci', 'install', 'test']) named.delete(builtin);
    assert.ok(named.size > 3);
    for (const script of named) assert.ok(pkg.scripts[script], `README mentions npm script "${script}"`);
    assert.ok(pkg.scripts['test']);
  });

  test('every repository path it names in backticks exists', () => {
    const paths = [
      ...readme.matchAll(/`((?:manifests|test|bench|scripts|elector|webhook|common)\/[\w./-]*)`/g),
    ].map((m) => m[1]!);
    assert.ok(paths.length > 5);
    for (const p of paths) assert.ok(existsSync(path.join(root, p)), `README names ${p}`);
  });
});
