/**
 * `npm run cluster:up` / `npm run cluster:down`: a local cluster that outlives the command,
 * for the demo and for trying things by hand: the control plane and one real node
 * (containerd + kubelet, kube-scheduler; packages/harness/src/node.ts), with the project's images
 * imported. `npm run cluster:up -- --no-node` starts the control plane alone (no root needed).
 *
 * `up` starts a small supervisor process (`serve`) in the background, which runs the
 * cluster with its state in `.cluster/` and stops it on SIGTERM; `up` returns once the node
 * is Ready. `down` stops the supervisor, which restores the host the node changed, and
 * removes `.cluster/`; after a supervisor that was SIGKILLed, `down` restores the host itself.
 */
import './require-node.ts';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster } from '@lifelease/harness/cluster';
import { assertCanRunNode, nodeClusterOptions, startNode, sweepStaleNode } from '@lifelease/harness/node';
import { ensureHostPackages } from '@lifelease/harness/host-packages';
import { resolveNodeBinaries } from '@lifelease/harness/node-binaries';
import { ensureImages } from '@lifelease/harness/image';
import { writeNodeInfo } from '@lifelease/harness/shared';

const root = path.resolve(import.meta.dirname, '..');
const dir = path.join(root, '.cluster');
const pidFile = path.join(dir, 'supervisor.pid');
const readyFile = path.join(dir, 'ready');
const logFile = path.join(dir, 'supervisor.log');
const withNode = !process.argv.includes('--no-node');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function supervisorPid(): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  return Number.isInteger(pid) && pid > 0 && alive(pid) ? pid : undefined;
}

function usage(): void {
  const [server, kubectl, projectImage, appImage] = readFileSync(readyFile, 'utf8').trim().split('\n');
  const rel = path.relative(process.cwd(), path.join(dir, 'kubeconfig')) || '.cluster/kubeconfig';
  console.log(`The ${kubectl ? 'cluster (control plane + node lifelease-node)' : 'control plane'} is running. Its admin kubeconfig: ${rel}
  export KUBECONFIG=${path.join(dir, 'kubeconfig')}
  API server: ${server}${
    kubectl
      ? `
  kubectl (built, same version as the cluster):
    alias kubectl=${kubectl}
    kubectl get nodes,pods -A -o wide
  Images in the node's containerd: ${projectImage} (the project's, from the Dockerfile),
    ${appImage} (sh + node, for test apps)
  Install lifelease as an admin would:  kubectl apply -k manifests`
      : ''
  }
  Run the tests against it:   LIFELEASE_CLUSTER_DIR=${dir} npm test
  Logs:                        ${dir}/*.log${kubectl ? ` (node: ${dir}/node-logs after down; live: /tmp/lifelease-node/*.log)` : ''}
  Stop it:                     npm run cluster:down`);
}

async function up(): Promise<void> {
  if (supervisorPid() && existsSync(readyFile)) {
    usage();
    return;
  }
  // A real node needs root: say so before anything is built.
  if (withNode) {
    try {
      if (process.getuid?.() === 0) ensureHostPackages((m) => console.error(m));
      assertCanRunNode();
    } catch (err) {
      console.error(
        `${(err as Error).message}\nThe control plane alone needs no root: npm run cluster:up -- --no-node`,
      );
      process.exit(1);
    }
  }
  await down(true);
  mkdirSync(dir, { recursive: true });
  const out = openSync(logFile, 'a');
  const args = [path.join(root, 'scripts/cluster.ts'), 'serve', ...(withNode ? [] : ['--no-node'])];
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  child.unref();
  const t0 = performance.now();
  console.error(
    `starting the local control plane${withNode ? ' and a real node' : ''} (the first run builds them from the Go module proxy, which takes many minutes)`,
  );
  // The first run builds the binaries (minutes; the build prints progress at least every
  // 10 s). The supervisor bounds the start itself (startCluster's timeout, counted after the
  // build) and exits on failure, so waiting for it to be ready or gone is bounded.
  let shown = 0;
  while (!existsSync(readyFile)) {
    if (child.pid === undefined || !alive(child.pid)) {
      console.error(
        `the control plane did not start; see ${logFile}:\n${readFileSync(logFile, 'utf8').slice(-3000)}`,
      );
      process.exit(1);
    }
    const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    if (text.length > shown) {
      process.stderr.write(text.slice(shown));
      shown = text.length;
    }
    await sleep(200);
  }
  const text = readFileSync(logFile, 'utf8');
  if (text.length > shown) process.stderr.write(text.slice(shown));
  console.error(`ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  usage();
}

async function serve(): Promise<void> {
  writeFileSync(pidFile, String(process.pid));
  const log = (m: string) => console.error(`${new Date().toISOString().slice(11, 19)} ${m}`);
  // Build (or find) the node's binaries before the control plane's clock starts.
  const nodeBinaries = withNode ? await resolveNodeBinaries({ log }) : undefined;
  // The project image (from the Dockerfile) and the test app image (sh + node), for the node.
  const images = withNode ? await ensureImages({ log: (l) => log(`[image] ${l}`) }) : undefined;
  const cluster = await startCluster({
    stateDir: dir,
    keepStateDir: true,
    log,
    ...(withNode ? nodeClusterOptions() : {}),
  });
  const t0 = performance.now();
  const node =
    nodeBinaries && images
      ? await startNode(cluster, { binaries: nodeBinaries, images: [images.project, images.app], log })
      : undefined;
  if (node) log(`node Ready ${((performance.now() - t0) / 1000).toFixed(1)} s after the control plane`);
  // For `LIFELEASE_CLUSTER_DIR=.cluster npm test`: the real-node test files use this node.
  if (node && images)
    writeNodeInfo(dir, {
      name: node.name,
      kubectl: node.binaries.kubectl,
      ctr: node.binaries.ctr,
      containerdSocket: node.containerdSocket,
      images: { project: images.project.name, app: images.app.name },
    });
  writeFileSync(
    readyFile,
    `${cluster.server}\n${node && images ? `${node.binaries.kubectl}\n${images.project.name}\n${images.app.name}\n` : ''}`,
  );
  const stop = async () => {
    rmSync(readyFile, { force: true });
    await node?.stop();
    await cluster.stop();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  // Stay alive until told to stop; the control plane's processes die with this one.
  setInterval(() => {}, 1 << 30);
}

async function down(quiet = false): Promise<void> {
  const pid = supervisorPid();
  if (pid) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 20_000;
    while (alive(pid) && Date.now() < deadline) await sleep(100);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  // A supervisor that was SIGKILLed (or a node whose owner died) left the host changed.
  const problems = sweepStaleNode((m) => console.error(m));
  if (problems.length > 0) console.error(`could not restore everything: ${problems.join('; ')}`);
  rmSync(dir, { recursive: true, force: true });
  if (!quiet) console.log(pid ? 'cluster stopped, host restored' : 'no cluster was running');
}

const command = process.argv[2];
if (command === 'up') await up();
else if (command === 'serve') await serve();
else if (command === 'down') await down();
else {
  console.error('usage: node scripts/cluster.ts up|down');
  process.exit(2);
}
