/**
 * No file of the repository names a package registry's host: the project reaches its
 * registries through the ordinary clients as the machine sets them up (npm's, Go's, apt's
 * configuration), never through an address of its own.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(import.meta.dirname, '../../..');
// Written in parts, so this file does not name them either.
const hosts = [
  ['registry', 'npmjs', 'org'],
  ['registry', 'yarnpkg', 'com'],
  ['proxy', 'golang', 'org'],
  ['sum', 'golang', 'org'],
  ['deb', 'debian', 'org'],
  ['security', 'debian', 'org'],
  ['pypi', 'org'],
  ['files', 'pythonhosted', 'org'],
].map((parts) => parts.join('.'));

test('no tracked file names a package registry host', () => {
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: root, encoding: 'utf8' })
    .split('\0')
    .filter(Boolean);
  assert.ok(files.length > 50, 'git lists the repository');
  const found: string[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = readFileSync(path.join(root, file), 'utf8');
    } catch {
      continue; // deleted in the work tree
    }
    for (const host of hosts) if (text.includes(host)) found.push(`${file}: ${host}`);
  }
  assert.deepEqual(found, []);
});
