/**
 * Elector processes "as pods" on the local control plane: there is no kubelet, so a Pod is
 * an API object and its elector runs here as a host process with that Pod's identity
 * (POD_NAME, POD_NAMESPACE, POD_UID, its own HOSTNAME) and the credentials of a service
 * account bound to exactly the Role of common/rbac.ts.
 *
 *   const kubeconfig = await grantElection(cluster, ns, 'my-app');
 *   const pod = await createPod(cluster.kubeConfig, ns, 'my-app-0');
 *   const e = await startElector({ election: 'my-app', pod, kubeconfigPath: kubeconfig });
 *   await e.waitFor((r) => r.state === 'leader');
 *   await e.stop();
 *
 * Ports are picked by the elector itself (port 0) and read back from its start-up log, so
 * parallel tests never race for a port. Every process dies with the test process.
 *
 * Not a kubelet stand-in (no pod lifecycle: `deletePod` only writes the stopped status a
 * kubelet would, through pod-status.ts, before deleting): the elector under test as a bare
 * process. Why it remains next to the real node, which runs the elector tests that depend on
 * pod lifecycle (test/integration/elector/lifecycle.test.ts): the elector's own tests and
 * the benchmarks choose each elector's flags, stop and restart the API server under it, put
 * a proxy between it and the API server, read its log and pid, and run dozens at once in
 * parallel files without root, which the webhook's injected pod on the host's one node does
 * not allow.
 */
import { CoreV1Api, RbacAuthorizationV1Api, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { electorRole, electorRoleBinding } from '../../../common/rbac.ts';
import type { ClusterClient } from './client.ts';
import { ManagedProcess, startBudget } from './process.ts';
import { stretched } from './wait.ts';
import { reportPodStopped } from './pod-status.ts';

const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

/** The JSON of `GET /` (and of each SSE event). */
export interface ElectorResult {
  name: string;
  last_update: string;
  is_leader: boolean;
  state: 'leader' | 'follower' | 'unknown';
  leader_pod: string;
}

export interface PodRef {
  name: string;
  namespace: string;
  uid: string;
}

/**
 * Creates a Pod object without `spec.nodeName` (never scheduled, deleted at once when
 * deleted), as the identity an elector process takes on.
 */
export async function createPod(
  kc: KubeConfig,
  namespace: string,
  name: string,
  options: { serviceAccountName?: string; labels?: Record<string, string> } = {},
): Promise<PodRef> {
  const core = kc.makeApiClient(CoreV1Api);
  const body: V1Pod = {
    metadata: { name, labels: options.labels ?? {} },
    spec: {
      serviceAccountName: options.serviceAccountName ?? 'default',
      containers: [{ name: 'app', image: 'registry.invalid/app:1' }],
    },
  };
  const pod = await core.createNamespacedPod({ namespace, body });
  return { name, namespace, uid: pod.metadata!.uid! };
}

/**
 * Ends a Pod as a kubelet does on a graceful deletion: reports its containers terminated
 * and a final phase, then removes the object. (The pod is unscheduled, so the API server
 * removes it at once; the status comes first, as from a kubelet.) The elector process itself
 * is the caller's to stop.
 */
export async function deletePod(kc: KubeConfig, pod: PodRef): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await reportPodStopped(core, pod);
  await core.deleteNamespacedPod({ name: pod.name, namespace: pod.namespace });
}

/**
 * Deletes a Pod object while its status still says it runs: `kubectl delete --grace-period=0
 * --force`, or the object of a pod on an unreachable node. Its elector may still run.
 */
export async function forceDeletePod(kc: KubeConfig, pod: PodRef): Promise<void> {
  await kc
    .makeApiClient(CoreV1Api)
    .deleteNamespacedPod({ name: pod.name, namespace: pod.namespace, gracePeriodSeconds: 0 });
}

/** Sets a Pod's phase through the status subresource (e.g. Succeeded, Failed). */
export async function setPodPhase(
  kc: KubeConfig,
  pod: PodRef,
  phase: 'Succeeded' | 'Failed' | 'Running',
): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const current = await core.readNamespacedPodStatus({ name: pod.name, namespace: pod.namespace });
  current.status = { ...(current.status ?? {}), phase };
  await core.replaceNamespacedPodStatus({ name: pod.name, namespace: pod.namespace, body: current });
}

/**
 * Creates a ServiceAccount, the elector Role of common/rbac.ts for `election` and its
 * RoleBinding, and returns a kubeconfig file for that service account (non-admin).
 */
export async function grantElection(
  cluster: Pick<ClusterClient, 'kubeConfig' | 'serviceAccountKubeconfig'>,
  namespace: string,
  election: string,
  serviceAccount = `elector-${election}`.slice(0, 63),
): Promise<string> {
  const kc = cluster.kubeConfig;
  const core = kc.makeApiClient(CoreV1Api);
  const rbac = kc.makeApiClient(RbacAuthorizationV1Api);
  await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: serviceAccount } } });
  await rbac.createNamespacedRole({ namespace, body: electorRole(namespace, election) });
  await rbac.createNamespacedRoleBinding({
    namespace,
    body: electorRoleBinding(namespace, election, [serviceAccount]),
  });
  return cluster.serviceAccountKubeconfig(namespace, serviceAccount);
}

export interface StartElectorOptions {
  election: string;
  pod: PodRef;
  kubeconfigPath: string;
  /** HOSTNAME the elector reports when it leads; default the pod name. */
  hostname?: string;
  /** Extra flags, e.g. `--fencing-timeout=6s`. */
  args?: string[];
  /** Extra environment. */
  env?: Record<string, string>;
  /** Node/V8 flags before the entry point (those NODE_OPTIONS refuses, as an injected command has them). */
  nodeArgs?: readonly string[];
  /** Entry point, relative to the repository; default `elector/main.ts` (or `dist/elector.js`). */
  entry?: string;
  /** Where the log goes; default a fresh temp file. */
  logFile?: string;
  /**
   * Wall-clock bound for the servers to listen, for an elector that hangs without running;
   * default 300 s. What really bounds the start is its own CPU time (`startCpuMs`).
   */
  startTimeoutMs?: number;
  /** CPU time the elector may use before it listens; default 20 s (it needs well under 2 s). */
  startCpuMs?: number;
  /** Run inside this memory cgroup (harness/memcg.ts), as under a container memory limit. */
  cgroup?: { procsFile: string };
}

interface LogLine {
  msg?: string;
  http?: string[];
  probe?: string;
  [key: string]: unknown;
}

export class ElectorProcess {
  readonly process: ManagedProcess;
  readonly pod: PodRef;
  readonly hostname: string;
  /** When `startElector` spawned the process (performance.now()). */
  readonly spawnedAt: number;
  #apiUrls: string[] = [];
  #probeUrl = '';

  constructor(proc: ManagedProcess, pod: PodRef, hostname: string, spawnedAt: number) {
    this.process = proc;
    this.pod = pod;
    this.hostname = hostname;
    this.spawnedAt = spawnedAt;
  }

  /** `http://127.0.0.1:<port>` (first) and `http://[::1]:<port>` when IPv6 is available. */
  get apiUrls(): string[] {
    return this.#apiUrls;
  }
  get apiUrl(): string {
    return this.#apiUrls[0]!;
  }
  get probeUrl(): string {
    return this.#probeUrl;
  }
  get pid(): number | undefined {
    return this.process.pid;
  }
  get running(): boolean {
    return this.process.running;
  }

  /** @internal */
  setUrls(api: string[], probe: string): void {
    this.#apiUrls = api;
    this.#probeUrl = probe;
  }

  /** The log as text. */
  logs(): string {
    try {
      return readFileSync(this.process.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** The JSON log lines (others skipped). */
  logLines(): LogLine[] {
    const out: LogLine[] = [];
    for (const line of this.logs().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as LogLine);
      } catch {
        // a line being written
      }
    }
    return out;
  }

  /** `GET /` on the election API. */
  async get(url = this.apiUrl): Promise<{ status: number; body: ElectorResult }> {
    const res = await httpGet(`${url}/`);
    return { status: res.status, body: JSON.parse(res.body) as ElectorResult };
  }

  async readyz(): Promise<number> {
    return (await httpGet(`${this.#probeUrl}/readyz`)).status;
  }

  async metrics(): Promise<string> {
    return (await httpGet(`${this.#probeUrl}/metrics`)).body;
  }

  /**
   * One sample's value: `name` or `name{label="value",...}`, matching the first series with
   * that name whose labels include the given ones (other labels, e.g. `election`, may be there).
   */
  async metric(query: string): Promise<number | undefined> {
    const parse = (text: string) => {
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?$/.exec(text);
      const labels = new Map(
        [...(m?.[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]),
      );
      return { name: m?.[1] ?? text, labels };
    };
    const want = parse(query);
    for (const line of (await this.metrics()).split('\n')) {
      if (line.startsWith('#') || line.trim() === '') continue;
      const sep = line.lastIndexOf(' ');
      const got = parse(line.slice(0, sep));
      if (got.name !== want.name) continue;
      if ([...want.labels].every(([k, v]) => got.labels.get(k) === v)) return Number(line.slice(sep + 1));
    }
    return undefined;
  }

  /**
   * Polls `GET /` until `predicate` holds (the bound stretched by the machine's load, see
   * `stretched`); throws with the last answer and the log tail on timeout.
   */
  async waitFor(
    predicate: (r: ElectorResult, status: number) => boolean,
    timeoutMs = 30_000,
    what = 'condition',
  ): Promise<ElectorResult> {
    const bound = stretched(timeoutMs);
    const deadline = Date.now() + bound;
    let last = '';
    while (Date.now() < deadline) {
      if (!this.running)
        throw new Error(`elector ${this.pod.name} exited while waiting for ${what}:\n${this.process.tail()}`);
      try {
        const { status, body } = await this.get();
        last = `${status} ${JSON.stringify(body)}`;
        if (predicate(body, status)) return body;
      } catch (err) {
        last = (err as Error).message;
      }
      await sleep(50);
    }
    throw new Error(
      `elector ${this.pod.name}: timed out after ${bound} ms (${timeoutMs} ms on a quiet machine) waiting for ${what}; last answer ${last}\n${this.process.tail(20)}`,
    );
  }

  /** SIGTERM (or `signal`); resolves with the exit and how long it took. */
  async stop(
    signal: NodeJS.Signals = 'SIGTERM',
    graceMs = 5000,
  ): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const t0 = performance.now();
    if (!this.running) return { ...(await this.process.exited), ms: 0 };
    this.process.signal(signal);
    const timer = setTimeout(() => this.process.signal('SIGKILL'), graceMs);
    try {
      const exit = await this.process.exited;
      return { ...exit, ms: performance.now() - t0 };
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL: the process dies without any cleanup (a crash). */
  async kill(): Promise<void> {
    this.process.signal('SIGKILL');
    await this.process.exited;
  }
}

function urlOf(address: string): string {
  return `http://${address}`;
}

/** Spawns an elector for `pod` and resolves once its servers listen (not yet elected). */
export async function startElector(options: StartElectorOptions): Promise<ElectorProcess> {
  const hostname = options.hostname ?? options.pod.name;
  const logFile =
    options.logFile ?? path.join(mkdtempSync(path.join(tmpdir(), 'lifelease-elector-')), `${hostname}.log`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'] ?? '',
    HOME: process.env['HOME'] ?? '',
    KUBECONFIG: options.kubeconfigPath,
    POD_NAME: options.pod.name,
    POD_NAMESPACE: options.pod.namespace,
    POD_UID: options.pod.uid,
    HOSTNAME: hostname,
    ...options.env,
  };
  const args = [
    ...(options.nodeArgs ?? []),
    path.resolve(REPO_ROOT, options.entry ?? 'elector/main.ts'),
    `--election=${options.election}`,
    '--http=127.0.0.1:0',
    '--probe-address=127.0.0.1:0',
    ...(options.args ?? []),
  ];
  const spawnedAt = performance.now();
  const proc = new ManagedProcess({
    name: `elector-${hostname}`,
    command: process.execPath,
    args,
    logFile,
    env,
    cwd: REPO_ROOT,
    ...(options.cgroup ? { cgroup: options.cgroup } : {}),
  });
  const elector = new ElectorProcess(proc, options.pod, hostname, spawnedAt);

  // Ten electors starting at once on a loaded machine each get a sliver of a core: bound the
  // start by the elector's own CPU time, not by the clock (see startBudget).
  const budget = startBudget(proc, {
    cpuMs: options.startCpuMs ?? 20_000,
    wallMs: options.startTimeoutMs ?? 300_000,
  });
  for (;;) {
    const started = elector.logLines().find((l) => l.msg === 'elector started');
    if (started?.http && started.probe) {
      elector.setUrls(started.http.map(urlOf), urlOf(started.probe));
      return elector;
    }
    if (!proc.running) {
      throw new Error(`elector ${hostname} exited before listening:\n${proc.tail()}`);
    }
    const over = budget.exceeded();
    if (over) {
      await elector.stop('SIGKILL');
      throw new Error(`elector ${hostname} did not start listening: ${over}\n${proc.tail()}`);
    }
    await sleep(25);
  }
}

/** A plain HTTP GET with a deadline (the elector API is loopback HTTP). */
export function httpGet(
  url: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: timeout`)));
    req.on('error', reject);
    req.end();
  });
}
