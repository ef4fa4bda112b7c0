/**
 * Where the real node's programs come from, in order:
 * 1. environment variables pointing at binaries a user already has: `KUBELET`,
 *    `KUBE_SCHEDULER`, `KUBECTL`, `CONTAINERD_BIN_DIR` (containerd, containerd-shim-runc-v2,
 *    ctr), `RUNC`, `CNI_BIN_DIR` (bridge, host-local, loopback, portmap), `PAUSE` (a static
 *    pause binary, made into the sandbox image here);
 * 2. the versioned cache folders `scripts/build-node.sh` fills from the Go module proxy and
 *    gcc (built on first use, each folder keyed by its component's version).
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { executable, KUBE_VERSION } from './binaries.ts';

export const CONTAINERD_VERSION = process.env['CONTAINERD_VERSION'] ?? 'v2.4.2';
export const RUNC_VERSION = process.env['RUNC_VERSION'] ?? 'v1.5.3';
export const CNI_PLUGINS_VERSION = process.env['CNI_PLUGINS_VERSION'] ?? 'v1.10.0';
/** k8s.io/kubernetes build/pause/Makefile's TAG at KUBE_VERSION, and containerd's default sandbox image. */
export const PAUSE_VERSION = process.env['PAUSE_VERSION'] ?? '3.10.2';

export interface NodeBinaries {
  kubelet: string;
  kubeScheduler: string;
  kubectl: string;
  containerd: string;
  containerdShim: string;
  ctr: string;
  runc: string;
  /** Folder with the CNI plugins (bridge, host-local, loopback, portmap). */
  cniBinDir: string;
  /** A static pause binary: the sandbox image is made from it. */
  pause: string;
}

const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

function fromEnvAndFolders(folders: Map<string, string>): NodeBinaries {
  const env = process.env;
  const k8s = folders.get('kubernetes') ?? '';
  const containerd = env['CONTAINERD_BIN_DIR'] ?? folders.get('containerd') ?? '';
  return {
    kubelet: env['KUBELET'] ?? path.join(k8s, 'kubelet'),
    kubeScheduler: env['KUBE_SCHEDULER'] ?? path.join(k8s, 'kube-scheduler'),
    kubectl: env['KUBECTL'] ?? path.join(k8s, 'kubectl'),
    containerd: path.join(containerd, 'containerd'),
    containerdShim: path.join(containerd, 'containerd-shim-runc-v2'),
    ctr: path.join(containerd, 'ctr'),
    runc: env['RUNC'] ?? path.join(folders.get('runc') ?? '', 'runc'),
    cniBinDir: env['CNI_BIN_DIR'] ?? folders.get('cni') ?? '',
    pause: env['PAUSE'] ?? path.join(folders.get('pause') ?? '', 'pause'),
  };
}

async function missing(bins: NodeBinaries): Promise<string[]> {
  const files = [
    bins.kubelet,
    bins.kubeScheduler,
    bins.kubectl,
    bins.containerd,
    bins.containerdShim,
    bins.ctr,
    bins.runc,
    bins.pause,
    ...['bridge', 'host-local', 'loopback', 'portmap'].map((p) => path.join(bins.cniBinDir, p)),
  ];
  const out: string[] = [];
  for (const f of files) if (!(await executable(f))) out.push(f);
  return out;
}

/**
 * Runs `scripts/build-node.sh` (which builds only what is neither cached nor overridden),
 * streaming its progress to `log`, and returns the folders it reports.
 */
async function runBuildScript(log: (line: string) => void): Promise<Map<string, string>> {
  const child = spawn('bash', [path.join(REPO_ROOT, 'packages/harness/scripts/build-node.sh')], {
    env: { ...process.env, KUBE_VERSION, CONTAINERD_VERSION, RUNC_VERSION, CNI_PLUGINS_VERSION },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  const tail: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  let partial = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    const lines = (partial + s).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      tail.push(line);
      if (tail.length > 30) tail.shift();
      // go's own download chatter is noise; the script's lines are progress.
      if (!line.startsWith('go: downloading')) log(line);
    }
  });
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`building the node's binaries failed (exit ${code}):\n${tail.join('\n')}`);
  const folders = new Map<string, string>();
  for (const line of stdout.trim().split('\n')) {
    const [name, dir] = line.split(' ');
    if (name && dir) folders.set(name, dir);
  }
  return folders;
}

/**
 * Finds the node's binaries, building the missing ones once (a cold build takes many
 * minutes). Throws with what to install or set when that fails.
 */
export async function resolveNodeBinaries(
  options: { log?: (line: string) => void } = {},
): Promise<NodeBinaries> {
  const folders = await runBuildScript(options.log ?? (() => {}));
  const bins = fromEnvAndFolders(folders);
  const gone = await missing(bins);
  if (gone.length > 0)
    throw new Error(`these node binaries are missing or not executable: ${gone.join(', ')}`);
  return bins;
}

/** The pause image's version as built (its folder records it), else PAUSE_VERSION. */
export async function pauseVersion(bins: NodeBinaries): Promise<string> {
  try {
    return (await readFile(path.join(path.dirname(bins.pause), 'version'), 'utf8')).trim() || PAUSE_VERSION;
  } catch {
    return PAUSE_VERSION;
  }
}
