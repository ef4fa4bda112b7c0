/**
 * `npm test`: builds or finds the control-plane binaries, starts one control plane for the
 * whole run, runs every test file against it with node's test runner, and stops it, on
 * success, failure or Ctrl-C alike.
 *
 *   npm test                         # everything
 *   npm test -- test/unit            # files under a folder (or a single file)
 *   LIFELEASE_CLUSTER_DIR=.cluster npm test   # reuse a cluster from `npm run cluster:up`
 *
 * The real node: the files that use `sharedNode()` (packages/harness/src/shared.ts) run on a second
 * control plane with the host's one real node (kubelet + containerd, packages/harness/src/node.ts),
 * which this runner starts as root and passes in `LIFELEASE_NODE_CLUSTER_DIR`. They run one
 * at a time, in their own `node --test` process next to the other files (their lines are
 * prefixed `[node]`), and the node is stopped as soon as they are done, so another run on
 * this host waiting for the node (`LIFELEASE_NODE_WAIT=<seconds>`) gets it. Not root, those
 * files skip (a node needs root); as root, a node that cannot start fails the run.
 */
import './require-node.ts';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, globSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import { CLUSTER_DIR_ENV, NODE_CLUSTER_DIR_ENV, startNodeCluster } from '@lifelease/harness/shared';
import { sweepMemoryCgroups } from '@lifelease/harness/memcg';
import { ensureHostPackages } from '@lifelease/harness/host-packages';
import { resolvePlatformTool, resolvePrometheusOperatorCrds } from '@lifelease/harness/binaries';
import { ensureImages, ensureSnippetsImage } from '@lifelease/harness/image';

const root = path.resolve(import.meta.dirname, '..');
process.chdir(root);

function testFiles(args: string[]): string[] {
  // Everything: the repository's tests and the workspace packages' (packages/harness/test).
  const targets = args.length > 0 ? args : ['test', ...globSync('packages/*/test')];
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

// Files that need the real node (they call sharedNode()) run apart, one at a time. Files that
// start a node of their own (marked OWN_NODE_MARK: the fault suite's, which sets the node up
// its own way) run after those, once the shared node has stopped: the host has one node, and
// a file waiting for it would spend its test timeout waiting.
const OWN_NODE_MARK = 'lifelease-test: starts its own real node';
const text = new Map(files.map((f) => [f, readFileSync(f, 'utf8')]));
const ownNodeFiles = files.filter((f) => text.get(f)!.includes(OWN_NODE_MARK));
const nodeFiles = files.filter((f) => !ownNodeFiles.includes(f) && text.get(f)!.includes('sharedNode('));
const otherFiles = files.filter((f) => !nodeFiles.includes(f) && !ownNodeFiles.includes(f));

// helm and promtool (and prometheus-operator's CRDs), which the chart, install and monitoring
// tests use: built before any test file starts, as the control plane is, so that no test
// spends its timeout on a build (a cold build takes 10-35 minutes here). Both phases' files use
// them; the build script lets one build run at a time and the other caller wait.
const needsTools = files.some((f) => !/(^|\/)test\/unit\//.test(f));
const buildTools = async (): Promise<void> => {
  if (!needsTools) return;
  const log = (m: string) => console.error(`#   ${m}`);
  await resolvePlatformTool('helm', log);
  await resolvePlatformTool('promtool', log);
  await resolvePrometheusOperatorCrds(log);
};
// The container images, for the same reason (cold: 5-10 minutes each here): the project's and
// the test app's (the real node's set-up imports them, the image test inspects them) and the
// README snippets' (curl, Python, a JDK). As root only: not root, the files using them skip.
const usesImages = (pattern: RegExp) =>
  process.getuid?.() === 0 && files.some((f) => pattern.test(text.get(f)!));
const buildImages = async (): Promise<void> => {
  const log = (m: string) => console.error(`#   [image] ${m}`);
  if (usesImages(/sharedNode\(|ensureImages\(/)) await ensureImages({ log });
  if (usesImages(/ensureSnippetsImage\(/)) await ensureSnippetsImage({ log });
};

let cluster: Cluster | undefined;
const env = { ...process.env };
const startMain = async (): Promise<void> => {
  if (env[CLUSTER_DIR_ENV] || otherFiles.length === 0) return;
  const t0 = performance.now();
  console.error('# starting the local control plane (the first run builds it from the Go module proxy)');
  cluster = await startCluster({ log: (m) => console.error(`#   ${m}`) });
  console.error(
    `# control plane ready in ${((performance.now() - t0) / 1000).toFixed(1)} s at ${cluster.server}`,
  );
  env[CLUSTER_DIR_ENV] = cluster.stateDir;
};

let stopNode: (() => Promise<void>) | undefined;
const hostProblems: string[] = [];
const nodeEnv = { ...process.env };
const startRealNode = async (): Promise<void> => {
  if (nodeFiles.length === 0 || process.getuid?.() !== 0 || nodeEnv[NODE_CLUSTER_DIR_ENV]) return;
  // A cluster from `npm run cluster:up` (LIFELEASE_CLUSTER_DIR) with its node: use that node.
  const given = nodeEnv[CLUSTER_DIR_ENV];
  if (given && existsSync(path.join(given, 'node.json'))) {
    nodeEnv[NODE_CLUSTER_DIR_ENV] = given;
    return;
  }
  const t0 = performance.now();
  console.error(
    `# starting a second control plane with the real node for ${nodeFiles.length} file(s) (the host's one node; waits for another run's with LIFELEASE_NODE_WAIT)`,
  );
  const started = await startNodeCluster({
    log: (m) => {
      if (m.startsWith('host not fully restored')) hostProblems.push(m);
      console.error(`#   [node] ${m}`);
    },
  });
  stopNode = started.stop;
  nodeEnv[NODE_CLUSTER_DIR_ENV] = started.cluster.stateDir;
  console.error(`# real node Ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
};

const children = new Set<ChildProcess>();
// Ctrl-C: the test runs end (and then the node and control planes stop in order); while no
// test process runs yet (say, waiting for the host's node), exit at once: the harness's exit
// hooks restore the host and the control planes' children die with this process.
const forward = (sig: NodeJS.Signals) => () => {
  if (children.size === 0) process.exit(130);
  for (const c of children) c.kill(sig);
};
process.on('SIGINT', forward('SIGINT'));
process.on('SIGTERM', forward('SIGTERM'));

/** One `node --test` run; with a prefix, its output lines are prefixed (two runs share the terminal). */
async function runTests(
  list: string[],
  runEnv: NodeJS.ProcessEnv,
  concurrency: string,
  prefix = '',
): Promise<number> {
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
      ...list,
    ],
    { stdio: prefix ? ['inherit', 'pipe', 'pipe'] : 'inherit', env: runEnv },
  );
  children.add(child);
  if (prefix) {
    for (const [from, to] of [
      [child.stdout, process.stdout],
      [child.stderr, process.stderr],
    ] as const) {
      let buf = '';
      from?.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) to.write(`${prefix}${l}\n`);
      });
      from?.on('end', () => buf && to.write(`${prefix}${buf}\n`));
    }
  }
  const code: number = await new Promise((resolve) => child.on('close', (c, s) => resolve(c ?? (s ? 1 : 0))));
  children.delete(child);
  return code;
}

let code = 0;
try {
  const nodeStart = startRealNode();
  await startMain();
  await buildTools();
  await buildImages();
  const main = otherFiles.length > 0 ? runTests(otherFiles, env, process.env['TEST_CONCURRENCY'] ?? '3') : 0;
  const prefix = otherFiles.length > 0 ? '[node] ' : '';
  const onNode = (async () => {
    let shared = 0;
    if (nodeFiles.length > 0) {
      await nodeStart;
      try {
        shared = await runTests(nodeFiles, nodeEnv, '1', prefix);
      } finally {
        await stopNode?.();
        stopNode = undefined;
      }
    }
    const own = ownNodeFiles.length > 0 ? await runTests(ownNodeFiles, process.env, '1', prefix) : 0;
    return shared !== 0 ? shared : own;
  })();
  // node --test runs each file in its own process; most integration tests wait on the API
  // server, so a little more concurrency than cores pays off.
  const codes = await Promise.allSettled([main, onNode]);
  for (const r of codes) {
    if (r.status === 'rejected') {
      console.error(`# ${(r.reason as Error).stack ?? String(r.reason)}`);
      code = 1;
    } else if (r.value !== 0) code = r.value;
  }
} finally {
  await stopNode?.();
  await cluster?.stop();
}
if (hostProblems.length > 0) {
  console.error(`# the real node did not leave the host as it found it: ${hostProblems.join('; ')}`);
  code = 1;
}
// Memory cgroups of pod containers the test files had not stopped when they ended.
sweepMemoryCgroups();
process.exit(code);
