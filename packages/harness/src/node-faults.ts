/**
 * Faults on a real node (node.ts), for the fault suite (test/chaos/) and tests: what a real
 * cluster's failures look like from one node, done with the node's own machinery.
 *
 * - A pod cut off from the API server: DROP rules in our own iptables chain (filter table,
 *   `LIFELEASE-CHAOS`, jumped to first from INPUT and OUTPUT) on the pod's own network path.
 *   A pod reaches the API server as `kubernetes.default` (10.0.0.1:443), which the node's
 *   DNAT sends to the relay on the bridge address (10.88.0.1:<api port>): so the rules drop
 *   the pod's packets to that relay and the relay's packets back to the pod, established
 *   connections included (a partition, not a refusal: the elector's requests hang).
 * - A node cut off (unreachable): its kubelet SIGSTOPped, so it neither renews its heartbeat
 *   nor sees a deletion nor stops a container, while containerd and the containers run on;
 *   SIGCONT brings it back and it acts on what the API says (kills a force-deleted pod's
 *   containers). Together with the pod's partition this is "the node is unreachable".
 * - A container killed: `ctr task kill` through containerd, as the OOM killer or a crash
 *   would end it; the kubelet restarts it (its own back-off).
 * - What the app in a pod sees: a "portal", a small relay process started inside the pod's
 *   network namespace (`nsenter --net`) that listens on a unix socket on the host and
 *   connects to the pod's loopback, so a test asks `localhost:4040` from inside the pod as the
 *   app does (the elector's API listens on the pod's loopback only).
 *
 * Everything added to the host is removed by `restore()`, which also runs on process exit and
 * on SIGINT/SIGTERM/SIGHUP (synchronously); node.ts's own sweep removes a leftover
 * `LIFELEASE-*` chain too (after a SIGKILL of the owner).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { request, type ClientRequest } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { BRIDGE_IP, type RealNode } from './node.ts';

const execFileAsync = promisify(execFile);

/** Our chain in the filter table; node.ts's sweep removes any `LIFELEASE-*` chain left over. */
export const FAULT_CHAIN = 'LIFELEASE-CHAOS';

function run(cmd: string, args: string[]): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  return { ok: r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (!r.ok) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

const ipt = (args: string[]) => ['-w', '5', '-t', 'filter', ...args];

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * The relay inside a pod's network namespace: a client writes `<port>\n`, then talks to
 * 127.0.0.1:<port> in the pod (the stand-in's loopback socket speaks the same).
 */
const PORTAL_SCRIPT = `
const net = require('node:net');
const [sock] = process.argv.slice(1);
const server = net.createServer((c) => {
  let head = Buffer.alloc(0);
  const onData = (d) => {
    head = Buffer.concat([head, d]);
    const nl = head.indexOf(10);
    if (nl < 0) return;
    c.off('data', onData);
    c.pause();
    const u = net.connect(Number(head.subarray(0, nl).toString()), '127.0.0.1');
    const rest = head.subarray(nl + 1);
    if (rest.length > 0) u.write(rest);
    c.pipe(u); u.pipe(c); c.resume();
    u.on('error', () => c.destroy()); c.on('error', () => u.destroy());
    u.on('close', () => c.destroy()); c.on('close', () => u.destroy());
  };
  c.on('data', onData);
  c.on('error', () => {});
});
server.listen(sock, () => process.stdout.write('ready\\n'));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

/** A way into one pod's network namespace (see the header). */
export class PodPortal {
  readonly socketPath: string;
  readonly #child: ChildProcess;
  readonly #dir: string;
  /** The pod sandbox's (pause) process: the pod's network lives while it does. */
  readonly sandboxPid: number;
  #closed = false;

  private constructor(child: ChildProcess, dir: string, sandboxPid: number) {
    this.#child = child;
    this.#dir = dir;
    this.socketPath = path.join(dir, 'portal.sock');
    this.sandboxPid = sandboxPid;
  }

  static async open(sandboxPid: number, timeoutMs = 60_000): Promise<PodPortal> {
    const dir = mkdtempSync(path.join(tmpdir(), 'lifelease-portal-'));
    const child = spawn(
      'nsenter',
      [
        `--net=/proc/${sandboxPid}/ns/net`,
        '--',
        process.execPath,
        '-e',
        PORTAL_SCRIPT,
        path.join(dir, 'portal.sock'),
      ],
      // stdin is a pipe: when this process dies (even SIGKILLed), the relay reads EOF and exits.
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const portal = new PodPortal(child, dir, sandboxPid);
    portals.add(portal);
    installHooks();
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('the pod portal did not start')), timeoutMs);
        child.stdout.once('data', () => {
          clearTimeout(timer);
          resolve();
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`the pod portal exited (${code}) before it was ready`));
        });
      });
    } catch (err) {
      portal.close();
      throw err;
    }
    return portal;
  }

  /** The relay runs and the pod's sandbox still exists. */
  get running(): boolean {
    return !this.#closed && this.#child.exitCode === null && alive(this.sandboxPid);
  }

  /** A TCP connection to `port` on the pod's loopback. */
  connect(port: number): Socket {
    const s = connect(this.socketPath);
    s.write(`${port}\n`);
    return s;
  }

  /** An HTTP request to the pod's loopback (what the app in the pod would send). */
  raw(
    port: number,
    pathname: string,
    init: { method?: string; headers?: Record<string, string> } = {},
  ): ClientRequest {
    return request({
      createConnection: () => this.connect(port),
      path: pathname,
      method: init.method ?? 'GET',
      headers: { host: `localhost:${port}`, ...init.headers },
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    portals.delete(this);
    try {
      this.#child.kill('SIGKILL');
    } catch {
      // gone
    }
    rmSync(this.#dir, { recursive: true, force: true });
  }
}

export interface CriContainer {
  id: string;
  /** `io.kubernetes.container.name`; `POD` for the sandbox. */
  name: string;
  sandbox: boolean;
  pid: number | undefined;
}

/** Faults on one real node. One at a time per host (the node is). */
export class NodeFaults {
  readonly node: RealNode;
  readonly apiPort: number;
  readonly #cut = new Set<string>();
  #chain = false;
  #kubeletStopped = false;

  constructor(node: RealNode, apiServer: string) {
    this.node = node;
    this.apiPort = Number(new URL(apiServer).port);
    active.add(this);
    installHooks();
  }

  #rules(podIp: string): string[][] {
    const port = String(this.apiPort);
    return [
      ['-s', podIp, '-d', BRIDGE_IP, '-p', 'tcp', '--dport', port, '-j', 'DROP'],
      ['-s', BRIDGE_IP, '-d', podIp, '-p', 'tcp', '--sport', port, '-j', 'DROP'],
    ];
  }

  #ensureChain(): void {
    if (this.#chain) return;
    must('iptables', ipt(['-N', FAULT_CHAIN]));
    this.#chain = true;
    must('iptables', ipt(['-I', 'INPUT', '1', '-j', FAULT_CHAIN]));
    must('iptables', ipt(['-I', 'OUTPUT', '1', '-j', FAULT_CHAIN]));
  }

  /** Cuts the pod at `podIp` off from the API server (both directions, live connections too). */
  cutApiServer(podIp: string): void {
    if (this.#cut.has(podIp)) return;
    this.#ensureChain();
    for (const rule of this.#rules(podIp)) must('iptables', ipt(['-A', FAULT_CHAIN, ...rule]));
    this.#cut.add(podIp);
  }

  restoreApiServer(podIp: string): void {
    if (!this.#cut.delete(podIp)) return;
    for (const rule of this.#rules(podIp)) run('iptables', ipt(['-D', FAULT_CHAIN, ...rule]));
  }

  /** The node unreachable: its kubelet stops acting and heartbeating; containers run on. */
  stopKubelet(): void {
    this.node.kubelet.signal('SIGSTOP');
    this.#kubeletStopped = true;
  }

  resumeKubelet(): void {
    if (!this.#kubeletStopped) return;
    this.node.kubelet.signal('SIGCONT');
    this.#kubeletStopped = false;
  }

  get kubeletStopped(): boolean {
    return this.#kubeletStopped;
  }

  #ctr(args: string[]): Promise<string> {
    return execFileAsync(
      this.node.binaries.ctr,
      ['--address', this.node.containerdSocket, '-n', 'k8s.io', ...args],
      { maxBuffer: 16 * 1024 * 1024, timeout: 60_000 },
    ).then((r) => r.stdout);
  }

  /** The pod's containers in containerd (the sandbox too), with their tasks' pids. */
  async containers(podUid: string): Promise<CriContainer[]> {
    const ids = (await this.#ctr(['containers', 'ls', '-q', `labels."io.kubernetes.pod.uid"==${podUid}`]))
      .split('\n')
      .filter(Boolean);
    if (ids.length === 0) return [];
    const pids = new Map<string, number>();
    for (const line of (await this.#ctr(['tasks', 'ls'])).split('\n').slice(1)) {
      const [id, pid, status] = line.trim().split(/\s+/);
      if (id && status === 'RUNNING') pids.set(id, Number(pid));
    }
    const out: CriContainer[] = [];
    for (const id of ids) {
      const info = JSON.parse(await this.#ctr(['containers', 'info', id])) as {
        Labels?: Record<string, string>;
      };
      const labels = info.Labels ?? {};
      out.push({
        id,
        name: labels['io.kubernetes.container.name'] ?? '',
        sandbox: labels['io.cri-containerd.kind'] === 'sandbox',
        pid: pids.get(id),
      });
    }
    return out;
  }

  /** The running pause process of a pod's sandbox, once it has one. */
  async sandboxPid(podUid: string): Promise<number | undefined> {
    return (await this.containers(podUid)).find((c) => c.sandbox && c.pid !== undefined)?.pid;
  }

  /** `ctr task kill -s <signal>` of a container (id as in the pod status, without `containerd://`). */
  async killContainer(id: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await this.#ctr(['tasks', 'kill', '-s', signal, id.replace(/^containerd:\/\//, '')]);
  }

  /** Undoes every fault: reconnects every pod, resumes the kubelet, removes our chain. Sync. */
  restore(): void {
    this.resumeKubelet();
    for (const ip of [...this.#cut]) this.restoreApiServer(ip);
    if (this.#chain) {
      run('iptables', ipt(['-D', 'INPUT', '-j', FAULT_CHAIN]));
      run('iptables', ipt(['-D', 'OUTPUT', '-j', FAULT_CHAIN]));
      run('iptables', ipt(['-F', FAULT_CHAIN]));
      run('iptables', ipt(['-X', FAULT_CHAIN]));
      this.#chain = false;
    }
    active.delete(this);
  }
}

/** Waits until `pid` has exited (bounded); true if it did. */
export async function waitExited(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (alive(pid)) {
    if (performance.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

// --- exit hooks: restore the host whatever happens to this process -------------------------

const active = new Set<NodeFaults>();
const portals = new Set<PodPortal>();
let hooked = false;

function restoreAll(): void {
  for (const f of [...active]) f.restore();
  for (const p of [...portals]) p.close();
}

function installHooks(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', restoreAll);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    // Runs before the node's own hook re-raises the signal (both are listeners of it).
    process.prependListener(sig, restoreAll);
  }
}
