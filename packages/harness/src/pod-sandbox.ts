/**
 * A kubelet stand-in: runs one container of a Pod (an API object in the local control
 * plane) as a host process inside its own network, UTS and mount namespaces, the way a
 * kubelet and container runtime would:
 *
 * - the container's command, args and env exactly as the Pod spec says, with downward-API
 *   `fieldRef`/`resourceFieldRef` values resolved from the Pod and `$(VAR)` expanded;
 * - the kubelet's env (`KUBERNETES_SERVICE_HOST/PORT`, `HOSTNAME`), the pod's hostname
 *   (`spec.hostname` or the name cut to 63 characters) and its own loopback, so every pod
 *   binds the same ports without clashing;
 * - a token bound to the Pod at /var/run/secrets/kubernetes.io/serviceaccount when the
 *   container mounts that path (as the ServiceAccount admission plugin or a projected
 *   volume arranges): once the Pod is deleted, its token stops working, as in a cluster.
 *
 * The host reaches the pod's loopback ports through unix sockets (`request`, `get`), and a
 * test can cut the pod off from the API server (`cutApiServer`) to simulate a partition.
 * Needs Linux namespaces: root, or unprivileged user namespaces (`--map-root-user`).
 *
 * Why a stand-in remains next to the real node (node.ts): the fault suite's
 * stand-in mode (its sample in `npm test` and the default `npm run chaos`) needs what a
 * kubelet does not give per pod: an elector process with the flags a test chooses, its path
 * to the API server cut and restored on cue (`cutApiServer`), its pid to kill with a restart
 * delay of its choosing, and no root and no node (the host's one node is busy with other test
 * files). The one kubelet stand-in built on it is kubelet.ts (test/chaos/kubelet.ts adapts it
 * to the fault runner); test/integration/harness/pod-sandbox.test.ts tests the sandbox itself.
 */
import { stretched } from './wait.ts';
import { CoreV1Api, type V1Container, type V1EnvVar, type V1Pod } from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterClient } from './client.ts';
import type { PodInitConfig } from './pod-init.ts';
import { quantityValue } from '../../../webhook/config.ts';
import { createMemoryCgroup, type MemoryCgroup } from './memcg.ts';
import { ManagedProcess } from './process.ts';

const SA_MOUNT = '/var/run/secrets/kubernetes.io/serviceaccount';
const POD_INIT = path.join(import.meta.dirname, 'pod-init.ts');

export interface PodSandboxOptions {
  cluster: ClusterClient;
  /** The Pod as the API server returned it (with `metadata.uid`). */
  pod: V1Pod;
  /** Which container (or init container) to run. */
  container: string;
  /**
   * Maps a container's image (and its `command`, if set) to the host argv that stands in
   * for the image's entrypoint; `args` are appended. E.g. our image -> node dist/cli.js.
   */
  entrypoint: (image: string, command: string[] | undefined) => string[];
  /** Where the container's output goes; a file in the sandbox folder when omitted. */
  logFile?: string;
  /**
   * Give the pod a routable IP (a veth pair: host end .1, pod end .2 of a private /30),
   * as a CNI plugin would, so the API server can reach it through a Service. Needs root.
   */
  podNetwork?: boolean;
}

export interface PodResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** The hostname a container runtime gives a pod. */
export function podHostname(pod: V1Pod): string {
  const name = pod.spec?.hostname ?? pod.metadata?.name ?? '';
  return name.slice(0, 63).replace(/[-.]+$/, '');
}

function findContainer(pod: V1Pod, name: string): V1Container {
  const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  const found = all.find((c) => c.name === name);
  if (!found) throw new Error(`pod ${pod.metadata?.name} has no container named ${name}`);
  return found;
}

function fieldRef(pod: V1Pod, fieldPath: string): string {
  const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (m) return (m[1] === 'labels' ? pod.metadata?.labels : pod.metadata?.annotations)?.[m[2]!] ?? '';
  const simple: Record<string, string | undefined> = {
    'metadata.name': pod.metadata?.name,
    'metadata.namespace': pod.metadata?.namespace,
    'metadata.uid': pod.metadata?.uid,
    'spec.nodeName': pod.spec?.nodeName,
    'spec.serviceAccountName': pod.spec?.serviceAccountName,
    'status.podIP': pod.status?.podIP ?? '127.0.0.1',
    'status.podIPs': pod.status?.podIP ?? '127.0.0.1',
    'status.hostIP': '127.0.0.1',
  };
  if (!(fieldPath in simple)) throw new Error(`pod sandbox: unsupported downward-API fieldPath ${fieldPath}`);
  return simple[fieldPath] ?? '';
}

/** A Kubernetes quantity's value (cpu in cores, memory in bytes). */
function quantity(q: string): number {
  const v = quantityValue(q);
  if (v === undefined) throw new Error(`pod sandbox: bad quantity ${q}`);
  return v;
}

function resourceFieldRef(container: V1Container, resource: string, divisor?: string): string {
  const [kind, name] = resource.split('.') as ['limits' | 'requests', string];
  const value = container.resources?.[kind]?.[name];
  if (value === undefined) throw new Error(`pod sandbox: ${resource} is not set on ${container.name}`);
  const v = quantity(String(value)) / quantity(divisor ?? '1');
  return String(Math.ceil(v));
}

/** `$(VAR)` expansion as the kubelet does it; `$$(` escapes; unknown names stay as they are. */
export function expand(text: string, env: Record<string, string>): string {
  return text.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (whole, name: string | undefined) =>
    whole === '$$' ? '$' : name !== undefined && name in env ? env[name]! : whole,
  );
}

function containerEnv(
  pod: V1Pod,
  container: V1Container,
  base: Record<string, string>,
): Record<string, string> {
  const env: Record<string, string> = { ...base };
  for (const e of container.env ?? ([] as V1EnvVar[])) {
    if (e.value !== undefined) env[e.name] = expand(e.value, env);
    else if (e.valueFrom?.fieldRef) env[e.name] = fieldRef(pod, e.valueFrom.fieldRef.fieldPath);
    else if (e.valueFrom?.resourceFieldRef) {
      const r = e.valueFrom.resourceFieldRef;
      env[e.name] = resourceFieldRef(container, r.resource, r.divisor);
    } else if (e.valueFrom) throw new Error(`pod sandbox: unsupported valueFrom for env ${e.name}`);
    else env[e.name] = '';
  }
  if ((container.envFrom ?? []).length > 0) throw new Error('pod sandbox: envFrom is not supported');
  return env;
}

/**
 * The files of the container's Secret volumes, read from the API as the kubelet does.
 * Supported where the sandbox can place them without touching the host: under /var/run.
 */
async function secretVolumeFiles(
  cluster: ClusterClient,
  pod: V1Pod,
  container: V1Container,
): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  for (const mount of container.volumeMounts ?? []) {
    if (mount.mountPath === SA_MOUNT) continue;
    const volume = pod.spec?.volumes?.find((v) => v.name === mount.name);
    if (!volume?.secret) {
      if (volume?.projected || volume?.emptyDir) continue; // token volumes are handled above; emptyDirs unused
      throw new Error(`pod sandbox: volume ${mount.name} is not supported (only secret volumes)`);
    }
    if (!/^\/var\/run\/[^.]/.test(mount.mountPath)) {
      throw new Error(`pod sandbox: mount secret volumes under /var/run/ (got ${mount.mountPath})`);
    }
    const secret = await core.readNamespacedSecret({
      name: volume.secret.secretName!,
      namespace: pod.metadata!.namespace!,
    });
    const items = volume.secret.items ?? Object.keys(secret.data ?? {}).map((key) => ({ key, path: key }));
    for (const { key, path: rel } of items) {
      const data = secret.data?.[key];
      if (data !== undefined) files[path.posix.join(mount.mountPath, rel)] = data;
    }
  }
  return files;
}

interface PodNetwork {
  hostIP: string;
  podIP: string;
  hostLink: string;
  podLink: string;
}

/**
 * Picks a free /30 of 10.250.0.0/16 for a veth pair: host end .1, pod end .2 (a CNI
 * plugin's job). Both ends vanish with the pod's namespace: nothing to clean up.
 */
function allocatePodNetwork(): PodNetwork {
  if (process.getuid?.() !== 0)
    throw new Error('pod sandbox: podNetwork needs root (it creates a veth pair)');
  for (let attempt = 0; attempt < 20; attempt++) {
    const block = randomInt(0, 16384) * 4;
    const prefix = `10.250.${block >> 8}`;
    const last = block & 255;
    const hostIP = `${prefix}.${last + 1}`;
    if (
      execFileSync('ip', ['-4', '-o', 'addr', 'show', 'to', `${prefix}.${last}/30`], {
        encoding: 'utf8',
      }).trim()
    ) {
      continue;
    }
    const id = randomBytes(3).toString('hex');
    return { hostIP, podIP: `${prefix}.${last + 2}`, hostLink: `lflh${id}`, podLink: `lflp${id}` };
  }
  throw new Error('pod sandbox: no free /30 in 10.250.0.0/16');
}

function attachPodNetwork(pid: number, net: PodNetwork): void {
  const run = (...args: string[]) =>
    execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  const inPod = (...args: string[]) => run('nsenter', '-t', String(pid), '-n', 'ip', ...args);
  run('ip', 'link', 'add', net.hostLink, 'type', 'veth', 'peer', 'name', net.podLink);
  run('ip', 'link', 'set', net.podLink, 'netns', String(pid));
  run('ip', 'addr', 'add', `${net.hostIP}/30`, 'dev', net.hostLink);
  run('ip', 'link', 'set', net.hostLink, 'up');
  inPod('link', 'set', net.podLink, 'name', 'eth0');
  inPod('addr', 'add', `${net.podIP}/30`, 'dev', 'eth0');
  inPod('link', 'set', 'eth0', 'up');
}

/** The host end of a pod's path to the API server: a unix socket forwarding to its port. */
interface ApiLink {
  server: Server;
  sockets: Set<Socket>;
  /** While true, open connections are dropped and new ones refused. */
  cut: boolean;
}

async function linkApiServer(socketPath: string, apiPort: number): Promise<ApiLink> {
  const link: ApiLink = { server: createServer(), sockets: new Set(), cut: false };
  link.server.on('connection', (outer) => {
    if (link.cut) return outer.destroy();
    const inner = connect(apiPort, '127.0.0.1');
    for (const s of [outer, inner]) {
      link.sockets.add(s);
      s.on('close', () => link.sockets.delete(s));
      s.on('error', () => {
        outer.destroy();
        inner.destroy();
      });
    }
    outer.pipe(inner);
    inner.pipe(outer);
  });
  await new Promise<void>((resolve) => link.server.listen(socketPath, resolve));
  return link;
}

export class PodSandbox {
  readonly pod: V1Pod;
  readonly container: V1Container;
  readonly hostname: string;
  readonly process: ManagedProcess;
  readonly dir: string;
  /** The pod's IP when started with `podNetwork`, else 127.0.0.1 (its own loopback). */
  podIP = '127.0.0.1';
  /** The container's memory cgroup: null without a memory limit, or where cgroups are read-only. */
  readonly memoryCgroup: MemoryCgroup | null;
  private readonly apiLink: ApiLink;

  private constructor(
    pod: V1Pod,
    container: V1Container,
    proc: ManagedProcess,
    dir: string,
    apiLink: ApiLink,
    memoryCgroup: MemoryCgroup | null,
  ) {
    this.pod = pod;
    this.container = container;
    this.hostname = podHostname(pod);
    this.process = proc;
    this.dir = dir;
    this.apiLink = apiLink;
    this.memoryCgroup = memoryCgroup;
  }

  /** Times the kernel OOM-killed the container at its memory limit (0 when not enforced). */
  oomKills(): number {
    return this.memoryCgroup?.oomKills() ?? 0;
  }

  /** Starts the container and resolves once it runs (not once it is ready: see `waitForStartupProbe`). */
  static async start(options: PodSandboxOptions): Promise<PodSandbox> {
    const { cluster, pod } = options;
    const container = findContainer(pod, options.container);
    const dir = await mkdtemp(path.join(tmpdir(), 'lifelease-pod-'));
    const apiPort = Number(new URL(cluster.server).port);
    const apiSocket = path.join(dir, 'api.sock');

    const apiLink = await linkApiServer(apiSocket, apiPort);

    let serviceAccount: PodInitConfig['serviceAccount'];
    if ((container.volumeMounts ?? []).some((m) => m.mountPath === SA_MOUNT)) {
      const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
      const token = await core.createNamespacedServiceAccountToken({
        name: pod.spec?.serviceAccountName ?? 'default',
        namespace: pod.metadata!.namespace!,
        body: {
          spec: {
            audiences: [],
            expirationSeconds: 3607,
            boundObjectRef: {
              apiVersion: 'v1',
              kind: 'Pod',
              name: pod.metadata!.name!,
              uid: pod.metadata!.uid!,
            },
          },
        },
      });
      serviceAccount = {
        token: token.status!.token,
        caCrt: cluster.caCertPem,
        namespace: pod.metadata!.namespace!,
      };
    }

    const files = await secretVolumeFiles(cluster, pod, container);
    const network = options.podNetwork ? allocatePodNetwork() : undefined;
    const podWithIP: V1Pod = network ? { ...pod, status: { ...pod.status, podIP: network.podIP } } : pod;
    const hostname = podHostname(pod);
    const base: Record<string, string> = {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOSTNAME: hostname,
      KUBERNETES_SERVICE_HOST: '127.0.0.1',
      KUBERNETES_SERVICE_PORT: String(apiPort),
      KUBERNETES_SERVICE_PORT_HTTPS: String(apiPort),
    };
    const env = containerEnv(podWithIP, container, base);
    const command = [
      ...options.entrypoint(
        container.image ?? '',
        container.command?.map((c) => expand(c, env)),
      ),
      ...(container.args ?? []).map((a) => expand(a, env)),
    ];
    const config: PodInitConfig = {
      hostname,
      apiPort,
      apiSocket,
      loopbackSocket: path.join(dir, 'loopback.sock'),
      ...(serviceAccount ? { serviceAccount } : {}),
      ...(Object.keys(files).length > 0 ? { files } : {}),
      command,
      env,
      readyFile: path.join(dir, 'started'),
      ...(network
        ? {
            namespaceReadyFile: path.join(dir, 'netns-ready'),
            networkReadyFile: path.join(dir, 'network-ready'),
          }
        : {}),
    };
    // The container's memory limit, enforced by the kernel where this machine allows it.
    const memoryLimit = container.resources?.limits?.['memory'];
    const cgroup =
      memoryLimit === undefined
        ? null
        : createMemoryCgroup(
            `${pod.metadata?.name ?? 'pod'}-${container.name}`.slice(0, 80),
            Math.ceil(quantity(String(memoryLimit)) / 2 ** 20),
          );
    if (cgroup) config.cgroupProcs = cgroup.procsFile;
    const configFile = path.join(dir, 'config.json');
    await writeFile(configFile, JSON.stringify(config), { mode: 0o600 });

    const userns = process.getuid?.() === 0 ? [] : ['--map-root-user'];
    const proc = new ManagedProcess({
      name: `pod ${pod.metadata?.namespace}/${pod.metadata?.name} container ${container.name}`,
      command: 'unshare',
      args: [
        ...userns,
        '--net',
        '--uts',
        '--mount',
        '--propagation',
        'private',
        '--',
        process.execPath,
        POD_INIT,
        configFile,
      ],
      logFile: options.logFile ?? path.join(dir, 'container.log'),
    });
    const sandbox = new PodSandbox(pod, container, proc, dir, apiLink, cgroup);
    if (network) {
      sandbox.podIP = network.podIP;
      try {
        // pod-init waits for this file before it starts the container.
        const deadline = Date.now() + stretched(10_000);
        while (!existsSync(config.namespaceReadyFile!)) {
          if (!proc.running || Date.now() > deadline)
            throw new Error(`pod sandbox did not start:\n${proc.tail()}`);
          await sleep(10);
        }
        attachPodNetwork(proc.pid!, network);
        await writeFile(config.networkReadyFile!, network.podIP);
      } catch (err) {
        await sandbox.stop();
        throw err;
      }
    }

    // Waits on the sandbox's own start (two Node.js processes), stretched by the machine's load.
    const deadline = Date.now() + stretched(20_000);
    while (!existsSync(config.readyFile)) {
      if (!proc.running || Date.now() > deadline) {
        await sandbox.stop();
        throw new Error(`pod sandbox did not start:\n${proc.tail()}`);
      }
      await sleep(20);
    }
    return sandbox;
  }

  get running(): boolean {
    return this.process.running;
  }

  /** The container's output so far. */
  logs(): string {
    try {
      return readFileSync(this.process.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** A TCP connection to `port` on the pod's own loopback. */
  connect(port: number): Socket {
    const socket = connect(path.join(this.dir, 'loopback.sock'));
    socket.write(`${port}\n`);
    return socket;
  }

  /** An HTTP request to the pod's own loopback (what the app in the pod would see). */
  raw(port: number, pathname: string, init: { method?: string; headers?: Record<string, string> } = {}) {
    return request({
      createConnection: () => this.connect(port),
      path: pathname,
      method: init.method ?? 'GET',
      headers: { host: `localhost:${port}`, ...init.headers },
    });
  }

  /** `curl http://localhost:<port><path>` from inside the pod. */
  async get(port: number, pathname: string, timeoutMs = 5000): Promise<PodResponse> {
    return new Promise((resolve, reject) => {
      const req = this.raw(port, pathname);
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET ${pathname} timed out`)));
      req.on('response', (res: IncomingMessage) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  }

  /** Polls the container's startup probe (httpGet) as the kubelet would, until it passes. */
  async waitForStartupProbe(timeoutMs = 30_000): Promise<number> {
    const probe = this.container.startupProbe?.httpGet;
    if (!probe) throw new Error(`container ${this.container.name} has no httpGet startup probe`);
    const port =
      typeof probe.port === 'number'
        ? probe.port
        : this.container.ports?.find((p) => p.name === probe.port)?.containerPort;
    if (port === undefined) throw new Error(`startup probe port ${String(probe.port)} not found`);
    const started = performance.now();
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const res = await this.get(port, probe.path ?? '/', 1000);
        if (res.status >= 200 && res.status < 400) return performance.now() - started;
      } catch {
        // not listening yet
      }
      if (!this.running) throw new Error(`container exited before its startup probe passed:\n${this.logs()}`);
      if (Date.now() > deadline)
        throw new Error(`startup probe did not pass in ${timeoutMs} ms:\n${this.logs()}`);
      await sleep(50);
    }
  }

  /** Partitions the pod from the API server: open connections drop, new ones are refused. */
  cutApiServer(): void {
    this.apiLink.cut = true;
    for (const s of this.apiLink.sockets) s.destroy();
  }

  restoreApiServer(): void {
    this.apiLink.cut = false;
  }

  signal(sig: NodeJS.Signals): void {
    this.process.signal(sig);
  }

  /** Restarts the container in the same pod (same network and hostname), as a kubelet would. */
  restartContainer(): void {
    this.process.signal('SIGUSR2');
  }

  /** The container's own pid (pod-init writes it to its ready file), once it runs. */
  get containerPid(): number | undefined {
    try {
      const pid = Number(readFileSync(path.join(this.dir, 'started'), 'utf8'));
      return Number.isInteger(pid) && pid > 0 ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  /** The pid of the pod's first process: `nsenter -t <pid> -n -u` runs a command inside the pod. */
  get pid(): number {
    return this.process.pid!;
  }

  /** Stops the container (SIGTERM, then SIGKILL after `graceMs`) and removes the sandbox. */
  async stop(graceMs = 5000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    await this.process.stop(graceMs);
    this.cutApiServer();
    await new Promise<void>((resolve) => this.apiLink.server.close(() => resolve()));
    const result = await this.process.exited;
    this.memoryCgroup?.remove();
    await rm(this.dir, { recursive: true, force: true });
    return result;
  }
}
