/**
 * PID 1 of a pod sandbox (see pod-sandbox.ts): runs inside fresh network, UTS and mount
 * namespaces, sets them up the way a kubelet and container runtime would, then runs the
 * container's command and relays its exit.
 *
 * - loopback up; hostname = the pod's hostname;
 * - a tmpfs over /run with the service-account token, CA and namespace at the standard
 *   in-cluster path, so `KubeConfig.loadFromDefault()` finds in-cluster credentials;
 * - 127.0.0.1:<api port> inside the pod forwards to the host's API server through a unix
 *   socket (the host end of which a test can cut);
 * - each exposed pod port is reachable from the host through a unix socket.
 *
 * Usage: node pod-init.ts <config.json>   (only pod-sandbox.ts starts it)
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, createServer, type Socket } from 'node:net';
import { inCgroup } from './memcg.ts';

export interface PodInitConfig {
  hostname: string;
  /** Port the API server has on the host; the same port is served inside the pod. */
  apiPort: number;
  /** Unix socket on the host that forwards to the API server. */
  apiSocket: string;
  /**
   * A unix socket through which the host reaches any port on the pod's loopback: the host
   * writes `<port>\n`, then the connection is piped to 127.0.0.1:<port> inside the pod.
   */
  loopbackSocket: string;
  serviceAccount?: { token: string; caCrt: string; namespace: string };
  /** Files to place under /var/run (Secret volumes): absolute path -> content (base64). */
  files?: Record<string, string>;
  command: string[];
  env: Record<string, string>;
  /** Written once the sandbox is set up and the command started. */
  readyFile: string;
  /** The container's memory cgroup (`cgroup.procs`), when its memory limit is enforced. */
  cgroupProcs?: string;
  /** With a pod network: written once the namespaces exist; then wait for `networkReadyFile`. */
  namespaceReadyFile?: string;
  networkReadyFile?: string;
}

function pipe(a: Socket, b: Socket): void {
  a.pipe(b);
  b.pipe(a);
  const end = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', end);
  b.on('error', end);
  a.on('close', end);
  b.on('close', end);
}

const config = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as PodInitConfig;

// 1. Network and hostname.
execFileSync('ip', ['link', 'set', 'lo', 'up']);
execFileSync('hostname', [config.hostname]);

// 2. A private /var/run with in-cluster credentials at
//    /var/run/secrets/kubernetes.io/serviceaccount and the pod's Secret volumes.
if (config.serviceAccount || config.files) {
  const run = realpathSync('/var/run');
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'mode=755', 'tmpfs', run]);
  const place = (file: string, content: string | Buffer) => {
    const real = file.replace(/^\/var\/run\//, `${run}/`);
    mkdirSync(path.dirname(real), { recursive: true });
    writeFileSync(real, content, { mode: 0o644 });
  };
  if (config.serviceAccount) {
    const dir = '/var/run/secrets/kubernetes.io/serviceaccount';
    place(`${dir}/token`, config.serviceAccount.token);
    place(`${dir}/ca.crt`, config.serviceAccount.caCrt);
    place(`${dir}/namespace`, config.serviceAccount.namespace);
  }
  for (const [file, b64] of Object.entries(config.files ?? {})) place(file, Buffer.from(b64, 'base64'));
}

// 3. The API server, at the address the pod's env names.
await new Promise<void>((resolve, reject) => {
  const srv = createServer((inner) => pipe(inner, connect(config.apiSocket)));
  srv.once('error', reject);
  srv.listen(config.apiPort, '127.0.0.1', () => resolve());
});

// 4. The pod's loopback, reachable from the host: `<port>\n`, then the connection.
await new Promise<void>((resolve, reject) => {
  const srv = createServer((outer) => {
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const nl = head.indexOf(10);
      if (nl === -1) {
        if (head.length > 16) outer.destroy();
        return;
      }
      outer.off('data', onData);
      outer.pause();
      const port = Number(head.subarray(0, nl).toString());
      const rest = head.subarray(nl + 1);
      const inner = connect(port, '127.0.0.1', () => {
        if (rest.length > 0) inner.write(rest);
        pipe(outer, inner);
        outer.resume();
      });
      inner.on('error', () => outer.destroy());
    };
    outer.on('data', onData);
    outer.on('error', () => outer.destroy());
  });
  srv.once('error', reject);
  srv.listen(config.loopbackSocket, () => resolve());
});

// 5. The pod network (a veth the host end attaches), before the container starts.
if (config.namespaceReadyFile && config.networkReadyFile) {
  writeFileSync(config.namespaceReadyFile, String(process.pid));
  const deadline = Date.now() + 10_000;
  while (!existsSync(config.networkReadyFile)) {
    if (Date.now() > deadline) throw new Error('the pod network was not attached in 10 s');
    await sleep(10);
  }
}

// 6. The container. SIGUSR2 restarts it inside the same pod (as a kubelet restarts a
//    crashed container: same network, same hostname); otherwise its exit ends the pod.
const [cmd, ...args] = config.command;
let restarting = false;
// The container dies with this process even when it is SIGKILLed (parent-death signal).
const pdeathsig =
  spawnSync('setpriv', ['--help'], { encoding: 'utf8' }).stdout?.includes('--pdeathsig') ?? false;
function startContainer(): ChildProcess {
  // In its memory cgroup from its first instruction (the limit binds the container, not pod-init).
  const inGroup = config.cgroupProcs ? inCgroup(config.cgroupProcs, [cmd!, ...args]) : [cmd!, ...args];
  const argv = pdeathsig ? ['setpriv', '--pdeathsig', 'SIGKILL', '--', ...inGroup] : inGroup;
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit', env: config.env });
  child.on('exit', (code, signal) => {
    if (restarting) {
      restarting = false;
      current = startContainer();
      return;
    }
    process.exit(code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : 1));
  });
  return child;
}
let current = startContainer();
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(sig, () => current.kill(sig));
process.on('SIGUSR2', () => {
  restarting = true;
  current.kill('SIGTERM');
});
writeFileSync(config.readyFile, String(current.pid));
