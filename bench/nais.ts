/**
 * nais/elector beside ours, when the reader provides its binary: `NAIS_ELECTOR_BIN` names an
 * executable built from github.com/nais/elector (`cmd/elector`; bench/README.md says how).
 * Without it the side-by-side figures are skipped. Nothing here builds or fetches it.
 *
 * nais/elector takes its identity from `os.Hostname()` and looks its own Pod up by that name,
 * so each one runs in its own UTS namespace (`unshare --uts`, root) whose hostname is its Pod's
 * name: the host processes then stand for pods as ours do (POD_NAME, POD_UID). It reads the API
 * through controller-runtime (`KUBECONFIG`), watches every Pod and Lease of its namespace, and
 * needs its chart's grants (leases get/create/list/watch, pods get/list/watch), given here as a
 * namespaced Role for the benchmark only.
 */
import { CoreV1Api, RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { httpGet, type PodRef } from '@lifelease/harness/elector-process';
import { freePort } from '@lifelease/harness/ports';
import { ManagedProcess } from '@lifelease/harness/process';

/** The binary from `NAIS_ELECTOR_BIN`, or undefined (with the reason printed once). */
export function naisBinary(): string | undefined {
  const bin = process.env['NAIS_ELECTOR_BIN'];
  if (!bin) {
    console.error('NAIS_ELECTOR_BIN is not set: nais/elector is left out (see bench/README.md)');
    return undefined;
  }
  try {
    if (!(statSync(bin).mode & 0o111)) throw new Error('not executable');
  } catch (err) {
    throw new Error(`NAIS_ELECTOR_BIN=${bin}: ${(err as Error).message}`, { cause: err });
  }
  if (process.getuid?.() !== 0) {
    throw new Error('nais/elector needs its own hostname per process: run as root (unshare --uts)');
  }
  return bin;
}

/** nais/elector's chart grants, as a Role in `namespace`, bound to `serviceAccounts`. */
export async function grantNais(kc: KubeConfig, namespace: string, serviceAccounts: string[]): Promise<void> {
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  const name = 'nais-elector';
  try {
    await rbac.createNamespacedRole({
      namespace,
      body: {
        metadata: { name },
        rules: [
          {
            apiGroups: ['coordination.k8s.io'],
            resources: ['leases'],
            verbs: ['get', 'create', 'list', 'watch'],
          },
          { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
        ],
      },
    });
  } catch (err) {
    if ((err as { code?: number }).code !== 409) throw err;
  }
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: {
      metadata: { name: `${name}-${serviceAccounts[0]}`.slice(0, 63) },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
      subjects: serviceAccounts.map((sa) => ({ kind: 'ServiceAccount', name: sa, namespace })),
    },
  });
}

/** A ServiceAccount per candidate, so that the audit log tells them apart. */
export async function serviceAccount(kc: KubeConfig, namespace: string, name: string): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
}

export class NaisProcess {
  readonly process: ManagedProcess;
  readonly pod: PodRef;
  readonly apiUrl: string;
  readonly probeUrl: string;
  readonly spawnedAt: number;
  constructor(proc: ManagedProcess, pod: PodRef, apiUrl: string, probeUrl: string, spawnedAt: number) {
    this.process = proc;
    this.pod = pod;
    this.apiUrl = apiUrl;
    this.probeUrl = probeUrl;
    this.spawnedAt = spawnedAt;
  }
  get pid(): number | undefined {
    return this.process.pid;
  }
  get hostname(): string {
    return this.pod.name;
  }
  /** `GET /`: `{ name, last_update }` (`{}` before its first result). */
  async get(): Promise<{ status: number; body: { name?: string } }> {
    const res = await httpGet(`${this.apiUrl}/`, 2000);
    let body: { name?: string } = {};
    try {
      body = JSON.parse(res.body) as { name?: string };
    } catch {
      // not JSON: leave empty
    }
    return { status: res.status, body };
  }
  /** Milliseconds from spawn until `/readyz` answered 200 (polled every 5 ms). */
  async readyAfter(timeoutMs = 60_000): Promise<number> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      try {
        if ((await httpGet(`${this.probeUrl}/readyz`, 1000)).status === 200) {
          return performance.now() - this.spawnedAt;
        }
      } catch {
        // not listening yet
      }
      if (!this.process.running) throw new Error(`nais ${this.pod.name} exited:\n${this.process.tail()}`);
      await sleep(5);
    }
    throw new Error(`nais ${this.pod.name} not ready in ${timeoutMs} ms:\n${this.process.tail()}`);
  }
  stop(): Promise<void> {
    return this.process.stop();
  }
}

/** Starts nais/elector as `pod` (hostname = the Pod's name) in `election`. */
export async function startNais(options: {
  bin: string;
  election: string;
  pod: PodRef;
  kubeconfigPath: string;
}): Promise<NaisProcess> {
  const { bin, election, pod } = options;
  const [http, probe, metrics] = [await freePort(), await freePort(), await freePort()];
  const logFile = path.join(mkdtempSync(path.join(tmpdir(), 'lifelease-nais-')), `${pod.name}.log`);
  const spawnedAt = performance.now();
  const proc = new ManagedProcess({
    name: `nais-${pod.name}`,
    command: 'unshare',
    args: [
      '--uts',
      '--',
      'sh',
      '-c',
      'hostname "$0" && exec "$@"',
      pod.name,
      bin,
      `--election=${election}`,
      `--election-namespace=${pod.namespace}`,
      `--http=127.0.0.1:${http}`,
      `--probe-address=127.0.0.1:${probe}`,
      `--metrics-address=127.0.0.1:${metrics}`,
      '--log-format=json',
    ],
    logFile,
    env: {
      PATH: process.env['PATH'] ?? '',
      HOME: process.env['HOME'] ?? '',
      KUBECONFIG: options.kubeconfigPath,
    },
  });
  return new NaisProcess(proc, pod, `http://127.0.0.1:${http}`, `http://127.0.0.1:${probe}`, spawnedAt);
}
