/**
 * The kubelet stand-in runs our image's containers as host processes: `lifeleaseEntrypoint`
 * maps the image's entrypoint, and the manifests' elector command (the image's node and CLI
 * with V8 flags between them), to this host's node and dist/cli.js, and refuses the rest.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { ELECTOR_V8_FLAGS, IMAGE_ENTRYPOINT } from '../../../../common/constants.ts';
import { lifeleaseEntrypoint, REPO_ROOT } from '../../src/kubelet.ts';

const IMAGE = 'ghcr.io/lifelease/lifelease:0.1.0';
const cli = path.join(REPO_ROOT, 'dist/cli.js');

test("lifeleaseEntrypoint: the image's entrypoint, and the manifests' elector command", () => {
  assert.deepEqual(lifeleaseEntrypoint(IMAGE, undefined), [process.execPath, cli]);
  const command = [IMAGE_ENTRYPOINT[0], ...ELECTOR_V8_FLAGS, IMAGE_ENTRYPOINT[1]];
  assert.deepEqual(lifeleaseEntrypoint(IMAGE, command), [process.execPath, ...ELECTOR_V8_FLAGS, cli]);
  assert.deepEqual(lifeleaseEntrypoint(IMAGE, command, '/b/cli.js', ['--enable-source-maps']), [
    process.execPath,
    '--enable-source-maps',
    ...ELECTOR_V8_FLAGS,
    '/b/cli.js',
  ]);
});

test('lifeleaseEntrypoint: another image or another command is refused', () => {
  assert.throws(() => lifeleaseEntrypoint('busybox', undefined), /no stand-in entrypoint for image busybox/);
  assert.throws(() => lifeleaseEntrypoint(IMAGE, ['sh', '-c', 'true']), /not our image's entrypoint/);
  assert.throws(
    () => lifeleaseEntrypoint(IMAGE, [IMAGE_ENTRYPOINT[0], 'evil.js', IMAGE_ENTRYPOINT[1]]),
    /not our image's entrypoint/,
  );
});
