/**
 * The Dockerfile as text (the image it builds is checked in image.test.ts, from the OCI
 * archive buildah makes of it):
 * - it lints clean (dockerfile-utils, the validator behind VS Code's Docker support);
 * - the runtime stage is distroless Node 24, non-root by number, and copies only dist/;
 * - the elector command the deploy manifests and the chart give the webhook is this
 *   ENTRYPOINT with the V8 flags NODE_OPTIONS refuses (ELECTOR_V8_FLAGS).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { validate } from 'dockerfile-utils';
import yaml from 'js-yaml';
import { ELECTOR_V8_FLAGS, IMAGE_ENTRYPOINT } from '../../../common/constants.ts';

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

  test("the manifests' and the chart's elector command is the ENTRYPOINT with ELECTOR_V8_FLAGS", () => {
    const [node, ...script] = JSON.parse(
      runtimeStage.find((i) => i.keyword === 'ENTRYPOINT')!.args,
    ) as string[];
    assert.deepEqual([node, ...script], IMAGE_ENTRYPOINT);
    const expected = [node, ...ELECTOR_V8_FLAGS, ...script].join(' ');
    assert.ok(ELECTOR_V8_FLAGS.length > 0);
    const deployment = yaml.load(readFileSync(path.join(root, 'manifests/base/deployment.yaml'), 'utf8')) as {
      spec: {
        template: { spec: { containers: { name: string; env: { name: string; value?: string }[] }[] } };
      };
    };
    const env = deployment.spec.template.spec.containers.find((c) => c.name === 'webhook')!.env;
    assert.equal(env.find((e) => e.name === 'WEBHOOK_ELECTOR_COMMAND')?.value, expected);
    const values = yaml.load(readFileSync(path.join(root, 'charts/lifelease/values.yaml'), 'utf8')) as {
      elector: { command: string };
    };
    assert.equal(values.elector.command, expected);
  });
});
