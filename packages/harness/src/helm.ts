/**
 * charts/lifelease with the real helm: render it (`helm template`), lint it, and install,
 * upgrade and uninstall it on a cluster. helm's own state (cache, config, plugins) lives in a
 * throwaway folder, so the tests neither read nor write the user's.
 */
import { loadAllYaml, type KubernetesObject } from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { resolvePlatformTool } from './binaries.ts';

export const CHART_DIR = path.resolve(import.meta.dirname, '../../../charts/lifelease');

/** Labels the chart adds that manifests/ does not (Helm's recommended labels). */
export const HELM_ONLY_LABELS = [
  'helm.sh/chart',
  'app.kubernetes.io/managed-by',
  'app.kubernetes.io/instance',
  'app.kubernetes.io/version',
] as const;

export interface HelmResult {
  stdout: string;
  stderr: string;
}

/** Runs helm with its state in a throwaway folder; rejects with helm's output on failure. */
export async function helm(args: string[], options: { kubeconfig?: string } = {}): Promise<HelmResult> {
  const binary = await resolvePlatformTool('helm');
  const home = mkdtempSync(path.join(tmpdir(), 'lifelease-helm-'));
  try {
    const env: NodeJS.ProcessEnv = {
      PATH: process.env['PATH'] ?? '',
      HOME: home,
      HELM_CACHE_HOME: path.join(home, 'cache'),
      HELM_CONFIG_HOME: path.join(home, 'config'),
      HELM_DATA_HOME: path.join(home, 'data'),
      ...(options.kubeconfig ? { KUBECONFIG: options.kubeconfig } : {}),
    };
    return await promisify(execFile)(binary, args, { env, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`helm ${args.join(' ')} failed: ${e.stderr || e.message}\n${e.stdout ?? ''}`);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
}

/** Writes values to a throwaway file for `-f` (JSON is YAML). */
export function valuesFile(values: Record<string, unknown>): { file: string; remove: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'lifelease-values-'));
  const file = path.join(dir, 'values.json');
  writeFileSync(file, JSON.stringify(values));
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** `helm template` of the chart with these values, as objects. */
export async function renderChart(
  values: Record<string, unknown>,
  options: { namespace?: string; release?: string } = {},
): Promise<KubernetesObject[]> {
  const v = valuesFile(values);
  try {
    const { stdout } = await helm([
      'template',
      options.release ?? 'lifelease',
      CHART_DIR,
      '--namespace',
      options.namespace ?? 'lifelease-system',
      '-f',
      v.file,
    ]);
    return (loadAllYaml(stdout) as (KubernetesObject | null)[]).filter(
      (o): o is KubernetesObject => o !== null,
    );
  } finally {
    v.remove();
  }
}

export function objectKey(o: KubernetesObject): string {
  return `${o.kind}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
}

/** A copy without Helm's own labels, keyed and sorted for comparison with kustomize's output. */
export function withoutHelmLabels(objects: KubernetesObject[]): Map<string, KubernetesObject> {
  const out = new Map<string, KubernetesObject>();
  for (const o of [...objects].sort((a, b) => objectKey(a).localeCompare(objectKey(b)))) {
    // Plain data (the YAML loader makes class instances).
    const copy = JSON.parse(JSON.stringify(o)) as KubernetesObject;
    const labels = copy.metadata?.labels;
    if (labels) for (const l of HELM_ONLY_LABELS) delete labels[l];
    out.set(objectKey(copy), copy);
  }
  return out;
}
