/**
 * A private build of the image's entrypoint (cli.js, elector.js, webhook.js) for the chaos runs, in a
 * folder of their own: the shared dist/ may be rebuilt (removed, then written) by another
 * command while a long run restarts electors. Same esbuild settings as scripts/build.ts.
 */
import { build } from 'esbuild';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { lifeleaseEntrypoint, REPO_ROOT } from '@lifelease/harness/kubelet';

export interface Bundle {
  dir: string;
  /** The image entrypoint on this host: `node <dir>/cli.js` for our image (lifeleaseEntrypoint). */
  entrypoint: (image: string, command: string[] | undefined) => string[];
  remove(): void;
}

export async function buildBundle(): Promise<Bundle> {
  const dir = mkdtempSync(path.join(tmpdir(), 'lifelease-chaos-dist-'));
  const common = {
    absWorkingDir: REPO_ROOT,
    outdir: dir,
    platform: 'node',
    target: 'node24',
    format: 'esm',
    logLevel: 'warning',
  } as const;
  await build({
    ...common,
    entryPoints: { elector: 'elector/main.ts', webhook: 'webhook/main.ts' },
    bundle: true,
    splitting: true,
    chunkNames: 'chunks/[name]-[hash]',
    sourcemap: 'linked',
    minifySyntax: true,
    banner: {
      js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
    },
  });
  await build({ ...common, entryPoints: { cli: 'common/cli.ts' }, bundle: false });
  return {
    dir,
    entrypoint: (image, command) =>
      lifeleaseEntrypoint(image, command, path.join(dir, 'cli.js'), ['--enable-source-maps']),
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
