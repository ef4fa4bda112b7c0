/**
 * `npm run build`: one self-contained ESM bundle per command with esbuild, so the image
 * ships `dist/*.js` and production dependencies' code only inside them (no node_modules).
 */
import { build, type Plugin } from 'esbuild';
import { rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
rmSync(path.join(root, 'dist'), { recursive: true, force: true });

/**
 * Node's built-in modules through `require()`, not ESM `import`. Importing a built-in as ESM
 * builds its ESM facade, which reads every export, lazy getters included: `import 'node:http'`
 * grows a Node 24 process by ~17 MiB of RSS (it loads the bundled fetch/WebSocket client
 * behind http's lazy exports), `require('node:http')` by ~3 MiB (README "Measured figures").
 * Each built-in becomes a one-line CommonJS module, and esbuild's interop gives the bundle's
 * named imports their values from it; `require` is the banner's.
 */
const builtinsByRequire: Plugin = {
  name: 'builtins-by-require',
  setup(b) {
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    b.onResolve({ filter: /^[a-z_:/]+$/ }, (args) => {
      if (!builtins.has(args.path)) return undefined;
      if (args.namespace === 'builtin') return { path: args.path, external: true };
      return { path: args.path.replace(/^node:/, ''), namespace: 'builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'builtin' }, (args) => ({
      contents: `module.exports = require(${JSON.stringify(`node:${args.path}`)});`,
      loader: 'js',
    }));
  },
};

const started = performance.now();
const result = await build({
  absWorkingDir: root,
  entryPoints: { elector: 'elector/main.ts', webhook: 'webhook/main.ts' },
  outdir: 'dist',
  bundle: true,
  platform: 'node',
  target: 'node24',
  format: 'esm',
  // Code loaded only on demand goes into its own chunk: the elector imports client-node only
  // for a kubeconfig its own reader does not handle (elector/credentials.ts), so the sidecar
  // does not carry it in memory.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  minifySyntax: true,
  legalComments: 'linked',
  metafile: true,
  plugins: [builtinsByRequire],
  // Some CommonJS dependencies call require(); give the ESM bundle one.
  banner: {
    js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);",
  },
  logLevel: 'warning',
});
// The image's entrypoint dispatches to the two bundles; it is not bundled with them.
const cli = await build({
  absWorkingDir: root,
  entryPoints: { cli: 'common/cli.ts' },
  outdir: 'dist',
  bundle: false,
  platform: 'node',
  target: 'node24',
  format: 'esm',
  metafile: true,
  logLevel: 'warning',
});
for (const [file, out] of Object.entries({ ...result.metafile.outputs, ...cli.metafile.outputs })) {
  if (file.endsWith('.js')) console.log(`${file}  ${(out.bytes / 1024).toFixed(0)} KiB`);
}
console.log(`built in ${(performance.now() - started).toFixed(0)} ms`);
