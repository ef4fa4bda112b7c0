/**
 * Where the control-plane binaries come from, in order:
 * 1. `KUBEBUILDER_ASSETS` (envtest's convention: a folder with `etcd` and `kube-apiserver`)
 *    plus `KUBE_CONTROLLER_MANAGER` (a path to the binary; defaults to the same folder);
 * 2. the versioned cache that `scripts/build-control-plane.sh` fills from the Go module proxy
 *    (built on first use).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { access, constants } from 'node:fs/promises';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

/** The versions we build; the README and `scripts/build-control-plane.sh` default to these too. */
export const KUBE_VERSION = process.env['KUBE_VERSION'] ?? 'v1.36.3';
export const ETCD_VERSION = process.env['ETCD_VERSION'] ?? 'v3.6.16';
export const KUSTOMIZE_VERSION = process.env['KUSTOMIZE_VERSION'] ?? 'v5.8.1';
/** helm and promtool: `scripts/build-platform-tools.sh` defaults to these too. */
export const HELM_VERSION = process.env['HELM_VERSION'] ?? 'v4.3.2';
export const PROMETHEUS_VERSION = process.env['PROMETHEUS_VERSION'] ?? 'v3.16.0';
export const PROMETHEUS_OPERATOR_VERSION = process.env['PROMETHEUS_OPERATOR_VERSION'] ?? 'v0.85.0';

export interface Binaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
}

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** Whether `file` exists and may be executed. */
export async function executable(file: string): Promise<boolean> {
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
  return process.env['CONTROL_PLANE_CACHE'] ?? defaultCacheRoot();
}

/**
 * `~/.cache/lifelease` (or under `$XDG_CACHE_HOME`). The folder was `k8s-leader-elector`
 * before the package was named lifelease: a warm one is still used until it is moved.
 */
export function defaultCacheRoot(): string {
  const base = process.env['XDG_CACHE_HOME'] ?? path.join(homedir(), '.cache');
  const current = path.join(base, 'lifelease');
  const legacy = path.join(base, 'k8s-leader-elector');
  return !existsSync(current) && existsSync(legacy) ? legacy : current;
}

export function cachedBinDir(): string {
  return path.join(cacheRoot(), `k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}`, 'bin');
}

/** Where build progress goes: one line at a time (the build script prints one at least every 10 s). */
export type BuildLog = (line: string) => void;

/**
 * kustomize, which renders `manifests/` in the tests: `$KUSTOMIZE` when set, else the one
 * the build script caches (built with the control plane).
 */
export async function resolveKustomize(log?: BuildLog): Promise<string> {
  const fromEnv = process.env['KUSTOMIZE'];
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`KUSTOMIZE=${fromEnv} is not an executable file`);
  }
  const file = path.join(cacheRoot(), `kustomize-${KUSTOMIZE_VERSION}`, 'bin', 'kustomize');
  if (!(await executable(file))) await runBuildScript(log);
  if (!(await executable(file))) throw new Error(`the build script left no ${file}`);
  return file;
}

/**
 * helm (renders and installs charts/lifelease) and promtool (checks the shipped alert rules):
 * `$HELM` / `$PROMTOOL` when set, else the ones `scripts/build-platform-tools.sh` caches
 * (built on first use: minutes on a cold cache, with progress on `log`).
 */
export async function resolvePlatformTool(tool: 'helm' | 'promtool', log?: BuildLog): Promise<string> {
  const variable = tool === 'helm' ? 'HELM' : 'PROMTOOL';
  const fromEnv = process.env[variable];
  if (fromEnv) {
    if (await executable(fromEnv)) return fromEnv;
    throw new Error(`${variable}=${fromEnv} is not an executable file`);
  }
  const dir = tool === 'helm' ? `helm-${HELM_VERSION}` : `promtool-${PROMETHEUS_VERSION}`;
  const file = path.join(cacheRoot(), dir, 'bin', tool);
  if (!(await executable(file))) {
    await runBuildScript(log, 'packages/harness/scripts/build-platform-tools.sh', {
      HELM_VERSION,
      PROMETHEUS_VERSION,
      PROMETHEUS_OPERATOR_VERSION,
    });
  }
  if (!(await executable(file))) throw new Error(`the build script left no ${file}`);
  return file;
}

/**
 * A folder with prometheus-operator's PodMonitor, ServiceMonitor and PrometheusRule CRDs
 * (`monitoring.coreos.com_<plural>.yaml`), which `scripts/build-platform-tools.sh` takes from
 * the operator's Go module.
 */
export async function resolvePrometheusOperatorCrds(log?: BuildLog): Promise<string> {
  const dir = path.join(cacheRoot(), `prometheus-operator-crds-${PROMETHEUS_OPERATOR_VERSION}`);
  const file = path.join(dir, 'monitoring.coreos.com_prometheusrules.yaml');
  const present = async () => {
    try {
      await access(file, constants.R_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (!(await present())) {
    await runBuildScript(log, 'packages/harness/scripts/build-platform-tools.sh', {
      HELM_VERSION,
      PROMETHEUS_VERSION,
      PROMETHEUS_OPERATOR_VERSION,
    });
  }
  if (!(await present())) throw new Error(`the build script left no ${file}`);
  return dir;
}

/**
 * Runs a build script (`scripts/build-control-plane.sh` unless told), passing each line it
 * prints on stderr (its progress) to `log` as it comes, so a cold build of many minutes is
 * never silent; without `log`, to our own stderr. A failure carries the script's last 30 lines.
 */
async function runBuildScript(
  log: BuildLog = (line) => process.stderr.write(`${line}\n`),
  script = 'packages/harness/scripts/build-control-plane.sh',
  versions: Record<string, string> = { KUBE_VERSION, ETCD_VERSION, KUSTOMIZE_VERSION },
): Promise<void> {
  const child = spawn('bash', [path.join(REPO_ROOT, script)], {
    env: { ...process.env, ...versions },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const tail: string[] = [];
  const lines = createInterface({ input: child.stderr });
  lines.on('line', (line) => {
    tail.push(line);
    if (tail.length > 30) tail.shift();
    log(line);
  });
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, signal) => resolve(c ?? (signal ? 128 : 1)));
  });
  if (code !== 0) throw new Error(`${script} failed:\n${tail.join('\n')}`);
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
export async function resolveBinaries(options: { build?: boolean; log?: BuildLog } = {}): Promise<Binaries> {
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
  await runBuildScript(options.log);
  const gone = await missing(bins);
  if (gone.length > 0) throw new Error(`the control-plane build finished but left no ${gone.join(', ')}`);
  return bins;
}
