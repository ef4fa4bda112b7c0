/**
 * A real, throwaway Kubernetes control plane on loopback: etcd, kube-apiserver and
 * kube-controller-manager (garbage collector, service accounts, namespaces, deployments,
 * replica sets, stateful sets, jobs), as controller-runtime's envtest does, plus the
 * controllers envtest leaves out. No kubelet and no scheduler: pods are API objects, and
 * an unscheduled pod (empty `spec.nodeName`) is deleted at once.
 *
 *   const cluster = await startCluster();
 *   try { ... cluster.kubeConfig ... } finally { await cluster.stop(); }
 *
 * Several clusters can run at once (each takes its own ports and folder). Every process
 * dies with its parent, and `stop()`, process exit and SIGINT/SIGTERM remove the folder.
 */
import { CoreV1Api, type KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveBinaries, type Binaries } from './binaries.ts';
import { generateKeyPairSync } from 'node:crypto';
import { createCertificateAuthority } from '../../../common/pki.ts';
import { exitedEarly, ManagedProcess } from './process.ts';
import { freePort } from './ports.ts';
import { connectCluster, type ClusterClient } from './client.ts';

/** The controllers a real cluster runs that our tests rely on. */
export const CONTROLLERS = [
  'garbage-collector-controller',
  'serviceaccount-controller',
  'namespace-controller',
  'deployment-controller',
  'replicaset-controller',
  'statefulset-controller',
  'job-controller',
  'cronjob-controller',
];

export interface StartClusterOptions {
  /**
   * Binaries to run, or how to get them; found or built by `resolveBinaries()` when omitted.
   * Getting them (a cold build takes many minutes) does not count against `timeoutMs`.
   */
  binaries?: Binaries | (() => Promise<Binaries>);
  /** Folder for certificates, etcd data and logs; a fresh temp folder when omitted. */
  stateDir?: string;
  /** Keep `stateDir` after `stop()` (logs for debugging); default false. */
  keepStateDir?: boolean;
  /** Progress messages (e.g. `console.error`); silent when omitted. */
  log?: (message: string) => void;
  /** How long starting (not building) may take before it fails; default 120 s. */
  timeoutMs?: number;
  /** The clock start-up deadlines are measured on (milliseconds); tests pass a fake one. */
  now?: () => number;
  /** Extra kube-apiserver flags (e.g. an audit policy for the benchmarks). */
  apiServerArgs?: string[];
  /** Extra names and IPs in the API server's certificate (a real node's bridge address). */
  apiServerAltNames?: string[];
  /** Controllers to run besides `CONTROLLERS` (a real node needs more: see harness/node.ts). */
  extraControllers?: string[];
}

export interface Cluster extends ClusterClient {
  readonly binaries: Binaries;
  readonly etcd: ManagedProcess;
  readonly apiServer: ManagedProcess;
  readonly controllerManager: ManagedProcess;
  /** Stops kube-apiserver (SIGTERM, then SIGKILL), as a fault. */
  stopApiServer(options?: { kill?: boolean }): Promise<void>;
  /** Starts kube-apiserver again on the same address and waits until `/readyz` answers. */
  startApiServer(): Promise<void>;
  stopControllerManager(): Promise<void>;
  startControllerManager(): Promise<void>;
  /** SIGSTOP / SIGCONT etcd, as a fault. */
  pauseEtcd(): void;
  resumeEtcd(): void;
  /** Stops everything in reverse order and removes the state folder. Safe to call twice. */
  stop(): Promise<void>;
}

/** The Service range, and the `kubernetes` Service's ClusterIP (its first address). */
export const SERVICE_CIDR = '10.0.0.0/24';
export const SERVICE_IP = '10.0.0.1';

const STATE_PREFIX = 'lifelease-cluster-';
const liveStateDirs = new Set<string>();
let signalHooks = false;

function cleanupSync(): void {
  for (const dir of liveStateDirs) rmSync(dir, { recursive: true, force: true });
  liveStateDirs.clear();
}

/** On exit or Ctrl-C, leave no folder behind (children die through their parent-death signal). */
function installCleanupHooks(): void {
  if (signalHooks) return;
  signalHooks = true;
  process.once('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync();
      process.removeListener(sig, onSignal);
      // Only re-raise when nobody else handles the signal; otherwise let them decide.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

/** Removes folders of earlier runs whose owning process is gone (e.g. after SIGKILL). */
function sweepStaleStateDirs(): void {
  const root = tmpdir();
  for (const entry of readdirSync(root)) {
    if (!entry.startsWith(STATE_PREFIX)) continue;
    const dir = path.join(root, entry);
    try {
      const pid = Number(readFileSync(path.join(dir, 'owner.pid'), 'utf8'));
      process.kill(pid, 0);
      // A killed owner its parent has not reaped yet is a zombie: gone all the same.
      if (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z')) {
        rmSync(dir, { recursive: true, force: true });
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') rmSync(dir, { recursive: true, force: true });
    }
  }
}

/** A point in time on a clock, by which something must have happened. */
interface Deadline {
  at: number;
  now: () => number;
}

/** Races `fn` until it returns true, the deadline passes, or `proc` dies. */
async function waitFor(
  what: string,
  fn: () => Promise<boolean>,
  deadline: Deadline,
  proc?: ManagedProcess,
): Promise<void> {
  const loop = async (): Promise<void> => {
    let lastError = '';
    while (deadline.now() < deadline.at) {
      try {
        if (await fn()) return;
      } catch (err) {
        lastError = (err as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}`);
  };
  await (proc ? Promise.race([loop(), exitedEarly(proc)]) : loop());
}

function get(
  url: string,
  tls?: { ca: string; cert: string; key: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      url,
      { method: 'GET', timeout: 2000, ...(tls ?? {}) },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** A key pair for signing service-account tokens (kube-apiserver takes PKCS#8 and SPKI PEM). */
function createServiceAccountKeyPair(): { privateKeyPem: string; publicKeyPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return {
    privateKeyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

/** Starts a control plane and returns once it is fully usable (GC and SA controller proven). */
export async function startCluster(options: StartClusterOptions = {}): Promise<Cluster> {
  const log = options.log ?? (() => {});
  const now = options.now ?? Date.now;
  installCleanupHooks();
  sweepStaleStateDirs();

  // Building the binaries on first use takes minutes; the start-up deadline starts after it.
  const binaries =
    typeof options.binaries === 'function'
      ? await options.binaries()
      : (options.binaries ?? (await resolveBinaries({ log })));
  const deadline: Deadline = { at: now() + (options.timeoutMs ?? 120_000), now };
  const stateDir = options.stateDir ?? (await mkdtemp(path.join(tmpdir(), STATE_PREFIX)));
  mkdirSync(stateDir, { recursive: true });
  if (!options.keepStateDir) liveStateDirs.add(stateDir);
  writeFileSync(path.join(stateDir, 'owner.pid'), String(process.pid));
  const file = (name: string) => path.join(stateDir, name);

  // 1. Certificates: a CA for serving and client certificates, and a service-account key.
  log('creating certificates');
  const ca = await createCertificateAuthority('lifelease-local-ca');
  const serving = await ca.issue({
    commonName: 'kube-apiserver',
    // The names a pod uses for the API server (the `kubernetes` Service's ClusterIP and DNS names).
    altNames: [
      '127.0.0.1',
      'localhost',
      SERVICE_IP,
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      'kubernetes.default.svc.cluster.local',
      ...(options.apiServerAltNames ?? []),
    ],
    usage: 'server',
  });
  const admin = await ca.issue({ commonName: 'admin', organizations: ['system:masters'], usage: 'client' });
  const saKeys = createServiceAccountKeyPair();
  await Promise.all([
    writeFile(file('ca.crt'), ca.certPem),
    writeFile(file('ca.key'), ca.keyPem, { mode: 0o600 }),
    writeFile(file('apiserver.crt'), serving.certPem),
    writeFile(file('apiserver.key'), serving.keyPem, { mode: 0o600 }),
    writeFile(file('admin.crt'), admin.certPem),
    writeFile(file('admin.key'), admin.keyPem, { mode: 0o600 }),
    writeFile(file('sa.key'), saKeys.privateKeyPem, { mode: 0o600 }),
    writeFile(file('sa.pub'), saKeys.publicKeyPem),
  ]);

  const [etcdClientPort, etcdPeerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
  const server = `https://127.0.0.1:${apiPort}`;
  const etcdUrl = `http://127.0.0.1:${etcdClientPort}`;

  // 2. etcd.
  const etcdArgs = [
    '--name=default',
    `--data-dir=${file('etcd')}`,
    `--listen-client-urls=${etcdUrl}`,
    `--advertise-client-urls=${etcdUrl}`,
    `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
    `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
    '--unsafe-no-fsync=true',
    '--log-level=warn',
  ];
  log('starting etcd');
  const etcd = new ManagedProcess({
    name: 'etcd',
    command: binaries.etcd,
    args: etcdArgs,
    logFile: file('etcd.log'),
  });
  const processes: ManagedProcess[] = [etcd];
  const killAll = async () => {
    for (const p of [...processes].reverse()) await p.stop();
  };

  try {
    await waitFor(
      'etcd /health',
      async () => (await get(`${etcdUrl}/health`)).body.includes('"true"'),
      deadline,
      etcd,
    );

    // 3. kube-apiserver.
    const apiArgs = [
      `--etcd-servers=${etcdUrl}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--secure-port=${apiPort}`,
      `--cert-dir=${file('apiserver-certs')}`,
      `--tls-cert-file=${file('apiserver.crt')}`,
      `--tls-private-key-file=${file('apiserver.key')}`,
      `--client-ca-file=${file('ca.crt')}`,
      '--authorization-mode=RBAC',
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      // How it authenticates to a kubelet (logs, exec), when a real node runs (harness/node.ts).
      `--kubelet-client-certificate=${file('admin.crt')}`,
      `--kubelet-client-key=${file('admin.key')}`,
      '--allow-privileged=true',
      `--service-account-issuer=${server}/`,
      `--service-account-key-file=${file('sa.pub')}`,
      `--service-account-signing-key-file=${file('sa.key')}`,
      // No node runs the kubernetes Service's endpoints here, and a loopback address is
      // invalid in Endpoints: leave them alone.
      '--endpoint-reconciler-type=none',
      // Reach webhooks' Services through their EndpointSlices (a pod IP), as there is no
      // kube-proxy to route a ClusterIP; the webhook is then called exactly as in a cluster.
      '--enable-aggregator-routing=true',
      '--profiling=false',
      ...(options.apiServerArgs ?? []),
    ];
    const tls = { ca: ca.certPem, cert: admin.certPem, key: admin.keyPem };
    let apiServer = new ManagedProcess({
      name: 'kube-apiserver',
      command: binaries.kubeApiserver,
      args: apiArgs,
      logFile: file('kube-apiserver.log'),
    });
    processes.push(apiServer);
    log('starting kube-apiserver');
    const apiReady = (proc: ManagedProcess, until: Deadline) =>
      waitFor(
        'kube-apiserver /readyz',
        async () => (await get(`${server}/readyz`, tls)).status === 200,
        until,
        proc,
      );
    await apiReady(apiServer, deadline);

    // 4. Admin kubeconfig (certificates inline, so the file stands alone).
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const kubeconfigPath = file('kubeconfig');
    const kubeconfigDoc = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'local', cluster: { server, 'certificate-authority-data': b64(ca.certPem) } }],
      users: [
        {
          name: 'admin',
          user: { 'client-certificate-data': b64(admin.certPem), 'client-key-data': b64(admin.keyPem) },
        },
      ],
      contexts: [{ name: 'local', context: { cluster: 'local', user: 'admin' } }],
      'current-context': 'local',
    };
    await writeFile(kubeconfigPath, JSON.stringify(kubeconfigDoc, null, 2), { mode: 0o600 });

    // 5. kube-controller-manager.
    const kcmPort = await freePort();
    const kcmArgs = [
      `--kubeconfig=${kubeconfigPath}`,
      `--authentication-kubeconfig=${kubeconfigPath}`,
      `--authorization-kubeconfig=${kubeconfigPath}`,
      '--leader-elect=false',
      '--use-service-account-credentials=false',
      `--controllers=${[...CONTROLLERS, ...(options.extraControllers ?? [])].join(',')}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${kcmPort}`,
      `--cert-dir=${file('kcm-certs')}`,
      '--profiling=false',
    ];
    const startKcm = () => {
      const proc = new ManagedProcess({
        name: 'kube-controller-manager',
        command: binaries.kubeControllerManager,
        args: kcmArgs,
        logFile: file('kube-controller-manager.log'),
      });
      processes.push(proc);
      return proc;
    };
    log('starting kube-controller-manager');
    let controllerManager = startKcm();

    const client = await connectCluster(stateDir);
    await proveControllers(client.kubeConfig, controllerManager, deadline);
    log(`control plane ready at ${server}`);

    const cluster: Cluster = {
      ...client,
      binaries,
      get etcd() {
        return etcd;
      },
      get apiServer() {
        return apiServer;
      },
      get controllerManager() {
        return controllerManager;
      },
      async stopApiServer(opts = {}) {
        if (opts.kill) apiServer.signal('SIGKILL');
        await apiServer.stop();
      },
      async startApiServer() {
        if (apiServer.running) return;
        apiServer = new ManagedProcess({
          name: 'kube-apiserver',
          command: binaries.kubeApiserver,
          args: apiArgs,
          logFile: file('kube-apiserver.log'),
        });
        processes.push(apiServer);
        await apiReady(apiServer, { at: now() + 60_000, now });
      },
      async stopControllerManager() {
        await controllerManager.stop();
      },
      async startControllerManager() {
        if (controllerManager.running) return;
        controllerManager = startKcm();
        await sleep(100);
        if (!controllerManager.running)
          throw new Error(`kube-controller-manager failed:\n${controllerManager.tail()}`);
      },
      pauseEtcd() {
        etcd.signal('SIGSTOP');
      },
      resumeEtcd() {
        etcd.signal('SIGCONT');
      },
      async stop() {
        await killAll();
        if (!options.keepStateDir) {
          rmSync(stateDir, { recursive: true, force: true });
          liveStateDirs.delete(stateDir);
        }
      },
    };
    return cluster;
  } catch (err) {
    const logs = processes.map((p) => `--- ${p.name} (${p.logFile}) ---\n${p.tail(15)}`).join('\n');
    await killAll();
    if (!options.keepStateDir) {
      rmSync(stateDir, { recursive: true, force: true });
      liveStateDirs.delete(stateDir);
    }
    throw new Error(`control plane failed to start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
}

/**
 * Ready means the controllers we rely on work, not just that the process runs:
 * the `default` ServiceAccount exists (serviceaccount controller), and a dependent is
 * garbage-collected after its owner is deleted (the GC has synced its graph).
 */
async function proveControllers(kc: KubeConfig, kcm: ManagedProcess, deadline: Deadline): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await waitFor(
    'the default ServiceAccount (serviceaccount controller)',
    async () => {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
      return true;
    },
    deadline,
    kcm,
  );
  const owner = await core.createNamespacedConfigMap({
    namespace: 'default',
    body: { metadata: { generateName: 'gc-probe-owner-' } },
  });
  const dependent: V1ConfigMap = {
    metadata: {
      generateName: 'gc-probe-dependent-',
      ownerReferences: [
        { apiVersion: 'v1', kind: 'ConfigMap', name: owner.metadata!.name!, uid: owner.metadata!.uid! },
      ],
    },
  };
  const dep = await core.createNamespacedConfigMap({ namespace: 'default', body: dependent });
  await core.deleteNamespacedConfigMap({ name: owner.metadata!.name!, namespace: 'default' });
  await waitFor(
    'the garbage collector to delete a dependent',
    async () => {
      try {
        await core.readNamespacedConfigMap({ name: dep.metadata!.name!, namespace: 'default' });
        return false;
      } catch (err) {
        if ((err as { code?: number }).code === 404) return true;
        throw err;
      }
    },
    deadline,
    kcm,
  );
}
