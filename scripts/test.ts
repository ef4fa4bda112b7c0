/**
 * `npm test`: builds or finds the control-plane binaries, starts one control plane for the
 * whole run, runs every test file against it with node's test runner, and stops it, on
 * success, failure or Ctrl-C alike.
 *
 *   npm test                         # everything
 *   npm test -- test/unit            # files under a folder (or a single file)
 *   LIFELEASE_CLUSTER_DIR=.cluster npm test   # reuse a cluster from `npm run cluster:up`
 */
import './require-node.ts';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, globSync, statSync } from 'node:fs';
import path from 'node:path';
import { startCluster, type Cluster } from '../test/harness/cluster.ts';
import { CLUSTER_DIR_ENV } from '../test/harness/shared.ts';
import { sweepMemoryCgroups } from '../test/harness/memcg.ts';
import { ensureHostPackages } from './lib/host-packages.ts';

const root = path.resolve(import.meta.dirname, '..');
process.chdir(root);

function testFiles(args: string[]): string[] {
  const targets = args.length > 0 ? args : ['test'];
  const files = new Set<string>();
  for (const t of targets) {
    if (!existsSync(t)) throw new Error(`no such test file or folder: ${t}`);
    if (statSync(t).isDirectory()) {
      for (const f of globSync(`${t}/**/*.test.ts`)) files.add(f);
    } else {
      files.add(t);
    }
  }
  return [...files].sort();
}

const files = testFiles(process.argv.slice(2));
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}

// The kubelet stand-in runs dist/cli.js: build it once, before any test file runs.
execFileSync(process.execPath, ['scripts/build.ts'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });

// As root, the real-node and image tests run (not as root they skip): install what they need.
if (process.getuid?.() === 0) ensureHostPackages((m) => console.error(`# ${m}`));

let cluster: Cluster | undefined;
const env = { ...process.env };
if (!env[CLUSTER_DIR_ENV]) {
  const t0 = performance.now();
  console.error('# starting the local control plane (the first run builds it from the Go module proxy)');
  cluster = await startCluster({ log: (m) => console.error(`#   ${m}`) });
  console.error(
    `# control plane ready in ${((performance.now() - t0) / 1000).toFixed(1)} s at ${cluster.server}`,
  );
  env[CLUSTER_DIR_ENV] = cluster.stateDir;
}

// node --test runs each file in its own process; most integration tests wait on the API
// server, so a little more concurrency than cores pays off.
const concurrency = process.env['TEST_CONCURRENCY'] ?? '3';
const child = spawn(
  process.execPath,
  [
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-timeout=600000',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    `--test-reporter=${path.join(root, 'scripts/summary-reporter.ts')}`,
    '--test-reporter-destination=stdout',
    ...files,
  ],
  { stdio: 'inherit', env },
);
const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
process.on('SIGINT', forward('SIGINT'));
process.on('SIGTERM', forward('SIGTERM'));
const code: number = await new Promise((resolve) => child.on('close', (c, s) => resolve(c ?? (s ? 1 : 0))));
await cluster?.stop();
// Memory cgroups of pod containers the test files had not stopped when they ended.
sweepMemoryCgroups();
process.exit(code);
