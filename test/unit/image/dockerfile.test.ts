/**
 * No Docker engine runs here, so the image is checked piece by piece:
 * - the Dockerfile lints clean (dockerfile-utils, the validator behind VS Code's Docker support);
 * - the runtime stage is distroless Node 24, non-root by number, and holds only dist/;
 * - the build stage's commands run as plain commands on a context holding only what the
 *   Dockerfile COPYs, and the bundles they make run with no node_modules anywhere above them.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { validate } from 'dockerfile-utils';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../../..');
const dockerfile = readFileSync(path.join(root, 'Dockerfile'), 'utf8');

interface Instruction {
  keyword: string;
  args: string;
}

/** Instructions per stage, continuation lines joined, comments dropped. */
function stages(text: string): Instruction[][] {
  const joined = text.replace(/\\\n\s*/g, ' ');
  const out: Instruction[][] = [];
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    const ins = { keyword: m[1]!, args: m[2]!.trim() };
    if (ins.keyword === 'FROM') out.push([]);
    out.at(-1)?.push(ins);
  }
  return out;
}

const [buildStage, runtimeStage] = stages(dockerfile) as [Instruction[], Instruction[]];

describe('Dockerfile', () => {
  test('lints clean, and the linter does catch mistakes', () => {
    assert.deepEqual(validate(dockerfile), []);
    assert.ok(validate('FROM node:24\nENTRYPOINT ["a"]\nENTRYPOINT ["b"]\nEXPOSE abc\n').length > 0);
  });

  test('two stages: a Node 24 build, a distroless Node 24 runtime', () => {
    assert.equal(stages(dockerfile).length, 2);
    assert.match(buildStage[0]!.args, /^node:\$\{NODE_MAJOR\}-\S+ AS build$/);
    assert.match(runtimeStage[0]!.args, /^gcr\.io\/distroless\/nodejs\$\{NODE_MAJOR\}-debian12:nonroot$/);
    assert.match(dockerfile, /^ARG NODE_MAJOR=24$/m);
  });

  test('the runtime stage runs as a numeric non-root user and copies only the bundles', () => {
    const user = runtimeStage.find((i) => i.keyword === 'USER');
    assert.match(user?.args ?? '', /^[1-9][0-9]*:[1-9][0-9]*$/);
    const copies = runtimeStage.filter((i) => i.keyword === 'COPY');
    assert.deepEqual(
      copies.map((c) => c.args),
      ['--from=build /src/dist/ /app/dist/'],
    );
    const entrypoint = JSON.parse(runtimeStage.find((i) => i.keyword === 'ENTRYPOINT')!.args) as string[];
    assert.equal(entrypoint.at(-1), '/app/dist/cli.js');
  });

  describe('build stage, replayed as plain commands', () => {
    let context: string;
    before(async () => {
      context = await mkdtemp(path.join(tmpdir(), 'lifelease-image-'));
    });
    after(() => rm(context, { recursive: true, force: true }));

    test('builds from only the files the Dockerfile copies, into self-contained bundles', async () => {
      const src = path.join(context, 'src');
      mkdirSync(src);
      for (const copy of buildStage.filter((i) => i.keyword === 'COPY')) {
        const parts = copy.args.split(/\s+/);
        for (const from of parts.slice(0, -1))
          cpSync(path.join(root, from), path.join(src, from), { recursive: true });
      }
      const runs = buildStage.filter((i) => i.keyword === 'RUN').map((i) => i.args);
      assert.deepEqual(runs, ['npm ci --no-audit --no-fund', 'npm run build']);
      // `npm ci` is what CI ran a moment ago; reuse its node_modules instead of a second download.
      symlinkSync(path.join(root, 'node_modules'), path.join(src, 'node_modules'));
      await run('npm', ['run', 'build'], { cwd: src });

      // The runtime stage: dist/ alone, no node_modules on any parent path.
      const app = path.join(context, 'app');
      cpSync(path.join(src, 'dist'), path.join(app, 'dist'), { recursive: true });
      for (let dir = app; dir !== path.dirname(dir); dir = path.dirname(dir)) {
        assert.ok(!existsSync(path.join(dir, 'node_modules')), `no node_modules at ${dir}`);
      }
      const cli = path.join(app, 'dist/cli.js');
      const help = await run(process.execPath, [cli, '--help']);
      assert.match(help.stdout, /usage: cli\.js <elector\|webhook>/);
      // Each command loads all of its code and reports its configuration problems.
      for (const command of ['elector', 'webhook']) {
        const res = await run(process.execPath, [cli, command, '--no-such-flag'], { env: {} }).then(
          () => assert.fail(`${command} accepted an unknown flag`),
          (err: { code: number; stderr: string; stdout: string }) => err,
        );
        assert.equal(res.code, 2, `${command}: ${res.stderr}${res.stdout}`);
        assert.match(res.stderr + res.stdout, /no-such-flag/);
      }
    });
  });
});
