/**
 * Where the control-plane binaries come from, in order:
 * 1. `KUBEBUILDER_ASSETS` (envtest's convention: a folder with `etcd` and `kube-apiserver`)
 *    plus `KUBE_CONTROLLER_MANAGER` (a path to the binary; defaults to the same folder);
 * 2. the versioned cache that `scripts/build-control-plane.sh` fills from the Go module proxy
 *    (built on first use).
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

/** The versions we build; the README and `scripts/build-control-plane.sh` default to these too. */
export const KUBE_VERSION = process.env['KUBE_VERSION'] ?? 'v1.36.3';
export const ETCD_VERSION = process.env['ETCD_VERSION'] ?? 'v3.6.16';
export const KUSTOMIZE_VERSION = process.env['KUSTOMIZE_VERSION'] ?? 'v5.8.1';
/** helm and promtool: `scripts/build-platform-tools.sh` defaults to these too. */
export const HELM_VERSION = process.env['HELM_VERSION'] ?? 'v4.3.2';
export const PROMETHEUS_VERSION = process.env['PROMETHEUS_VERSION'] ?? 'v3.16.0';

export interface Binaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

async function executable(file: string): Promise<boolean> {
  try {
    await access(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The cache folder `scripts/build-control-plane.sh` writes to, for the pinned versions. */
function cacheRoot(): string {
  // Kept in step with scripts/build-control-plane.sh.
  return (
    process.env['CONTROL_PLANE_CACHE'] ??
    path.join(process.env['XDG_CACHE_HOME'] ?? path.join(homedir(), '.cache'), 'k8s-leader-elector')
  );
}

export function cachedBinDir(): string {
  return path.join(cacheRoot(), `k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}`, 'bin');
}

/**
 * kustomize, which renders `manifests/` in the tests: `$KUSTOMIZE` when set, else the one
 * the build script caches (built with the control plane).
 */
export async function resolveKustomize(): Promise<string> {
  const fromEnv = process.env['KUSTOMIZE'];
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`KUSTOMIZE=${fromEnv} is not an executable file`);
  }
  const file = path.join(cacheRoot(), `kustomize-${KUSTOMIZE_VERSION}`, 'bin', 'kustomize');
  if (!(await executable(file))) await runBuildScript();
  if (!(await executable(file))) throw new Error(`the build script left no ${file}`);
  return file;
}

/**
 * helm (renders and installs charts/lifelease) and promtool (checks the shipped alert rules):
 * `$HELM` / `$PROMTOOL` when set, else the ones `scripts/build-platform-tools.sh` caches
 * (built on first use: minutes on a cold cache).
 */
export async function resolvePlatformTool(tool: 'helm' | 'promtool'): Promise<string> {
  const variable = tool === 'helm' ? 'HELM' : 'PROMTOOL';
  const fromEnv = process.env[variable];
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`${variable}=${fromEnv} is not an executable file`);
  }
  const dir = tool === 'helm' ? `helm-${HELM_VERSION}` : `promtool-${PROMETHEUS_VERSION}`;
  const file = path.join(cacheRoot(), dir, 'bin', tool);
  if (!(await executable(file))) {
    try {
      await promisify(execFile)('bash', [path.join(REPO_ROOT, 'scripts/build-platform-tools.sh')], {
        env: { ...process.env, HELM_VERSION, PROMETHEUS_VERSION },
        maxBuffer: 64 * 1024 * 1024,
      });
    } catch (err) {
      const stderr = (err as { stderr?: string }).stderr ?? '';
      throw new Error(`building helm and promtool failed:\n${stderr.split('\n').slice(-30).join('\n')}`);
    }
  }
  if (!(await executable(file))) throw new Error(`the build script left no ${file}`);
  return file;
}

async function runBuildScript(): Promise<void> {
  try {
    await promisify(execFile)('bash', [path.join(REPO_ROOT, 'scripts/build-control-plane.sh')], {
      env: { ...process.env, KUBE_VERSION, ETCD_VERSION, KUSTOMIZE_VERSION },
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? '';
    throw new Error(
      `building the control-plane binaries failed:\n${stderr.split('\n').slice(-30).join('\n')}`,
    );
  }
}

function inDir(dir: string): Binaries {
  return {
    etcd: path.join(dir, 'etcd'),
    kubeApiserver: path.join(dir, 'kube-apiserver'),
    kubeControllerManager: path.join(dir, 'kube-controller-manager'),
  };
}

async function missing(bins: Binaries): Promise<string[]> {
  const out: string[] = [];
  for (const file of [bins.etcd, bins.kubeApiserver, bins.kubeControllerManager])
    if (!(await executable(file))) out.push(file);
  return out;
}

/**
 * Finds the binaries, building them once (minutes on a cold cache) when nothing is found.
 * Throws with what to install or set when neither works.
 */
export async function resolveBinaries(options: { build?: boolean } = {}): Promise<Binaries> {
  const assets = process.env['KUBEBUILDER_ASSETS'];
  if (assets) {
    const bins = inDir(assets);
    bins.kubeControllerManager = process.env['KUBE_CONTROLLER_MANAGER'] ?? bins.kubeControllerManager;
    const gone = await missing(bins);
    if (gone.length > 0) {
      throw new Error(
        `KUBEBUILDER_ASSETS=${assets} is set, but these are missing or not executable: ${gone.join(', ')}. ` +
          'Put etcd and kube-apiserver there and set KUBE_CONTROLLER_MANAGER to a kube-controller-manager binary, ' +
          'or unset KUBEBUILDER_ASSETS to build them from the Go module proxy.',
      );
    }
    return bins;
  }
  const bins = inDir(cachedBinDir());
  if ((await missing(bins)).length === 0) return bins;
  if (options.build === false) {
    throw new Error(
      `control-plane binaries not found in ${cachedBinDir()}; run \`npm run control-plane:build\``,
    );
  }
  await runBuildScript();
  const gone = await missing(bins);
  if (gone.length > 0) throw new Error(`the control-plane build finished but left no ${gone.join(', ')}`);
  return bins;
}
