/**
 * `npm run cluster:up` / `npm run cluster:down`: a local control plane that outlives the
 * command, for the demo and for trying things by hand.
 *
 * `up` starts a small supervisor process (`serve`) in the background, which runs the
 * control plane with its state in `.cluster/` and stops it on SIGTERM; `up` returns once
 * the cluster is ready. `down` stops the supervisor and removes `.cluster/`.
 */
import './require-node.ts';
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster } from '../test/harness/cluster.ts';

const root = path.resolve(import.meta.dirname, '..');
const dir = path.join(root, '.cluster');
const pidFile = path.join(dir, 'supervisor.pid');
const readyFile = path.join(dir, 'ready');
const logFile = path.join(dir, 'supervisor.log');

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
  const rel = path.relative(process.cwd(), path.join(dir, 'kubeconfig')) || '.cluster/kubeconfig';
  console.log(`The control plane is running. Its admin kubeconfig: ${rel}
  export KUBECONFIG=${path.join(dir, 'kubeconfig')}
  API server: ${readFileSync(readyFile, 'utf8').trim()}
  Run the tests against it:   LIFELEASE_CLUSTER_DIR=${dir} npm test
  Logs:                        ${dir}/*.log
  Stop it:                     npm run cluster:down`);
}

async function up(): Promise<void> {
  if (supervisorPid() && existsSync(readyFile)) {
    usage();
    return;
  }
  await down(true);
  mkdirSync(dir, { recursive: true });
  const out = openSync(logFile, 'a');
  const child = spawn(process.execPath, [path.join(root, 'scripts/cluster.ts'), 'serve'], {
    detached: true,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  child.unref();
  console.error(
    'starting the local control plane (the first run builds it from the Go module proxy, which takes minutes)',
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
  usage();
}

async function serve(): Promise<void> {
  writeFileSync(pidFile, String(process.pid));
  const cluster = await startCluster({
    stateDir: dir,
    keepStateDir: true,
    log: (m) => console.error(m),
  });
  writeFileSync(readyFile, `${cluster.server}\n`);
  const stop = async () => {
    rmSync(readyFile, { force: true });
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
  rmSync(dir, { recursive: true, force: true });
  if (!quiet) console.log(pid ? 'control plane stopped' : 'no control plane was running');
}

const command = process.argv[2];
if (command === 'up') await up();
else if (command === 'serve') await serve();
else if (command === 'down') await down();
else {
  console.error('usage: node scripts/cluster.ts up|down');
  process.exit(2);
}
