/**
 * The package itself: its `exports` map names every module the rest of the repository may
 * import (and each resolves to the real file, outside node_modules, so Node strips its types),
 * nothing imports the harness by a path around the package name, the scripts the code runs
 * are where it looks for them, and the image holds nothing of the harness.
 */
import assert from 'node:assert/strict';
import { existsSync, globSync, readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { dockerfileSources } from '@lifelease/harness/image';

const PACKAGE = path.resolve(import.meta.dirname, '../..');
const REPO = path.resolve(PACKAGE, '../..');
const manifest = JSON.parse(readFileSync(path.join(PACKAGE, 'package.json'), 'utf8')) as {
  name: string;
  exports: Record<string, string>;
};
/** Modules only the package's own files use (pod-init.ts is a program pod-sandbox.ts starts). */
const INTERNAL = new Set(['pod-init.ts']);

describe('@lifelease/harness', () => {
  test('exports every module under src/ but the internal ones, each one file that exists', () => {
    const modules = readdirSync(path.join(PACKAGE, 'src')).filter(
      (f) => f.endsWith('.ts') && !INTERNAL.has(f),
    );
    const exported = Object.entries(manifest.exports).filter(([name]) => name !== './package.json');
    assert.deepEqual(exported.map(([name]) => name).sort(), modules.map((f) => `./${f.slice(0, -3)}`).sort());
    for (const [name, target] of exported) {
      assert.equal(target, `./src/${name.slice(2)}.ts`);
      assert.ok(existsSync(path.join(PACKAGE, target)), target);
    }
  });

  test('the package name resolves to the real files, not a path under node_modules', () => {
    for (const name of Object.keys(manifest.exports)) {
      const file = new URL(import.meta.resolve(`${manifest.name}${name.slice(1)}`)).pathname;
      assert.ok(file.startsWith(`${PACKAGE}/`), `${name} -> ${file}`);
      assert.ok(!file.includes('/node_modules/'), `${name} -> ${file}: Node would refuse to strip its types`);
    }
  });

  test('nothing outside the package imports its files by path', () => {
    const files = globSync('{test,bench,scripts,common,elector,webhook}/**/*.ts', { cwd: REPO });
    assert.ok(files.length > 50, `only ${files.length} files found`);
    const byPath = /from\s+'[^']*(?:harness\/|packages\/)[^']*'|import\(\s*'[^']*(?:harness\/|packages\/)/;
    const offenders = files.filter((f) => {
      const text = readFileSync(path.join(REPO, f), 'utf8').replaceAll(`'${manifest.name}/`, "'");
      return byPath.test(text);
    });
    assert.deepEqual(offenders, [], `import these through ${manifest.name}/<name>`);
  });

  test('the build scripts the code runs are where it looks for them', () => {
    const named = new Set<string>();
    for (const f of readdirSync(path.join(PACKAGE, 'src'))) {
      const text = readFileSync(path.join(PACKAGE, 'src', f), 'utf8');
      for (const m of text.matchAll(/'(packages\/harness\/scripts\/[\w.-]+\.sh)'/g)) named.add(m[1]!);
    }
    assert.ok(named.size >= 3, `found ${[...named].join(', ')}`);
    for (const script of named) assert.ok(existsSync(path.join(REPO, script)), script);
  });

  test('the project image is built from nothing of the harness', () => {
    const sources = dockerfileSources(REPO);
    assert.ok(sources.includes('package.json'), sources.join(', '));
    assert.deepEqual(
      sources.filter((s) => s.startsWith('packages') || s.includes('harness')),
      [],
    );
  });
});
