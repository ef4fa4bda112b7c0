/**
 * A real node for the local control plane: containerd + runc + the CNI bridge + kubelet,
 * plus kube-scheduler, all built by `scripts/build-node.sh`. Pods are scheduled, their
 * images run in containers, probes and restarts and graceful deletion are the kubelet's.
 *
 *   const cluster = await startCluster(nodeClusterOptions());
 *   const node = await startNode(cluster, { images: [...] });
 *   try { ... } finally { await node.stop(); await cluster.stop(); }
 *
 * A node needs root and changes global host state: kernel settings (the kubelet's
 * `vm.overcommit_memory`, `vm.panic_on_oom`, `kernel.panic`, `kernel.panic_on_oops`,
 * `kernel.keys.root_max*`; the CNI bridge's `net.ipv4.ip_forward`), iptables chains (the
 * kubelet's KUBE-FIREWALL / KUBE-KUBELET-CANARY, CNI-*, ours LIFELEASE-NODE), a bridge with
 * veths, mounts, `kubepods` cgroups and a few fixed paths (/var/lib/cni, /var/log/containers,
 * /var/lib/kubelet/device-plugins). Before it changes anything it records the host's state
 * in `NODE_ROOT/host-before.json`; `stop()`, process exit, SIGINT/SIGTERM/SIGHUP and, after
 * a SIGKILL of the owner, the next `startNode()` or `sweepNode()` restore it. One node runs
 * at a time on a host (a lock file); a second start refuses with a clear message.
 *
 * Network: pods get addresses on a private bridge (10.88.0.0/16, the host is 10.88.0.1, no
 * masquerade, no default route): they reach the host's bridge address and the Service range,
 * nothing beyond the machine. There is no kube-proxy. The kubelet gives every pod
 * `KUBERNETES_SERVICE_HOST=10.0.0.1` (the `kubernetes` Service's ClusterIP), as in any
 * cluster; a DNAT rule in our own chain sends 10.0.0.1:443 to a relay on 10.88.0.1 that
 * forwards bytes to the API server on 127.0.0.1 (its certificate names 10.0.0.1), so the
 * API server keeps listening on loopback only and in-cluster clients work unchanged.
 */
import { CoreV1Api, RbacAuthorizationV1Api, type V1Node } from '@kubernetes/client-node';
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  lstatSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadCertificateAuthority } from '../../../common/pki.ts';
import { SERVICE_CIDR, SERVICE_IP, type Cluster, type StartClusterOptions } from './cluster.ts';
import { pauseVersion, resolveNodeBinaries, type NodeBinaries } from './node-binaries.ts';
import { writeOciArchive } from './oci.ts';
import { freePort } from './ports.ts';
import { exitedEarly, ManagedProcess, type ManagedProcessOptions } from './process.ts';

const execFileAsync = promisify(execFile);

/** Everything the node writes lives here (short: the shim socket folder must be <= 42 chars). */
export const NODE_ROOT = '/tmp/lifelease-node';
const LOCK_FILE = '/run/lifelease-node.lock';
export const NODE_NAME = 'lifelease-node';
export const BRIDGE = 'lifelease0';
export const POD_CIDR = '10.88.0.0/16';
export const BRIDGE_IP = '10.88.0.1';
const CHAIN = 'LIFELEASE-NODE';
const CNI_NETWORK = 'lifelease';

/** Controllers a real cluster runs that pods on a node need (beyond cluster.ts's CONTROLLERS). */
export const NODE_CONTROLLERS = [
  'root-ca-certificate-publisher-controller', // kube-root-ca.crt, which every token volume mounts
  'clusterrole-aggregation-controller', // the built-in admin/edit/view roles
  'node-lifecycle-controller', // NotReady nodes, their pods' Ready condition
  'taint-eviction-controller',
  'endpoints-controller',
  'endpointslice-controller', // Services (the webhook's) find ready pods
  'endpointslice-mirroring-controller',
  'pod-garbage-collector-controller',
  'ttl-controller',
  'disruption-controller',
];

/** Options for `startCluster()` when a real node will join it. */
export function nodeClusterOptions(): Pick<
  StartClusterOptions,
  'apiServerArgs' | 'apiServerAltNames' | 'extraControllers'
> {
  return {
    // The kubelet serves on the bridge address, its node's InternalIP; never resolve the node's name.
    apiServerArgs: ['--kubelet-preferred-address-types=InternalIP'],
    apiServerAltNames: [BRIDGE_IP],
    extraControllers: NODE_CONTROLLERS,
  };
}

/** Kernel settings the kubelet (setupKernelTunables) and the CNI bridge change. */
const SYSCTLS = [
  'vm.overcommit_memory',
  'vm.panic_on_oom',
  'kernel.panic',
  'kernel.panic_on_oops',
  'kernel.keys.root_maxkeys',
  'kernel.keys.root_maxbytes',
  'net.ipv4.ip_forward',
];

/** Paths outside NODE_ROOT that the kubelet, containerd or CNI create; removed if they were absent. */
const HOST_PATHS = [
  '/var/lib/cni',
  '/var/log/containers',
  '/var/log/pods',
  '/var/lib/kubelet',
  '/run/containerd',
  '/var/lib/containerd',
  '/run/netns',
  '/etc/cni',
  '/opt/cni',
];

const IPTABLES = ['iptables', 'ip6tables'] as const;
const TABLES = ['filter', 'nat', 'mangle', 'raw'] as const;
/** Chains the node may create (ours, the kubelet's, the CNI plugins'). */
const OUR_CHAIN = /^(LIFELEASE-|KUBE-|CNI-)/;

interface HostBefore {
  sysctls: Record<string, string>;
  paths: Record<string, boolean>;
  /** `${tool} ${table}` -> chains that existed. */
  chains: Record<string, string[]>;
  /** `nft list tables` lines (iptables-nft makes a table on first use; an emptied new one goes). */
  nftTables?: string[];
  cgroups: string[];
}

export interface NodeImage {
  /** An OCI archive (docker-archive works too) for `ctr images import`. */
  archive: string;
  /** The name it must have in containerd (checked after the import). */
  name: string;
}

export interface StartNodeOptions {
  binaries?: NodeBinaries;
  /** Images to import besides the pause image. */
  images?: NodeImage[];
  log?: (message: string) => void;
  /** How long start-up may take after the binaries are found and the lock is taken; default 120 s. */
  timeoutMs?: number;
  /**
   * How long to wait for another process's node to stop before refusing; default from
   * `LIFELEASE_NODE_WAIT` (seconds), else 0 (refuse at once).
   */
  lockWaitMs?: number;
  /** Called once this process holds the host's node lock, before anything on the host changes. */
  afterLock?: () => void;
}

export interface RealNode {
  readonly name: string;
  readonly binaries: NodeBinaries;
  readonly containerd: ManagedProcess;
  readonly kubelet: ManagedProcess;
  /** The running kube-scheduler (started again if it exits: see startNode). */
  readonly scheduler: ManagedProcess;
  /** How many times kube-scheduler exited while the node ran and was started again. */
  readonly schedulerRestarts: number;
  /** containerd's socket, for `ctr --address`. */
  readonly containerdSocket: string;
  /** `ctr -n k8s.io images import` of an OCI archive; checks the name arrived. */
  importImage(image: NodeImage): Promise<void>;
  /** Runs `ctr --address <socket> -n k8s.io <args>` and returns stdout. */
  ctr(args: string[]): string;
  /** Stops kubelet, scheduler, containers, containerd, and restores the host. Safe to call twice. */
  stop(): Promise<void>;
}

// --- small synchronous helpers (teardown must also run from the 'exit' hook) -----------------

function run(cmd: string, args: string[], options: { input?: string } = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: options.input, timeout: 30_000 });
  return { ok: r.status === 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (!r.ok) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return r.stdout;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const sysctlFile = (key: string) => `/proc/sys/${key.replaceAll('.', '/')}`;

function readSysctl(key: string): string | undefined {
  try {
    return readFileSync(sysctlFile(key), 'utf8').trim();
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A killed process its parent has not reaped yet is a zombie: gone all the same.
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function chainsOf(tool: string, table: string): string[] {
  const r = run(tool, ['-w', '5', '-t', table, '-S']);
  if (!r.ok) return [];
  return r.stdout
    .split('\n')
    .filter((l) => l.startsWith('-N ') || l.startsWith('-P '))
    .map((l) => l.split(' ')[1]!);
}

/** The v1 cgroup controller folders (or the v2 root). */
function cgroupRoots(): string[] {
  const base = '/sys/fs/cgroup';
  if (existsSync(path.join(base, 'cgroup.controllers'))) return [base];
  return readdirSync(base)
    .map((d) => path.join(base, d))
    .filter((d) => {
      try {
        // cpu and cpuacct are symlinks to cpu,cpuacct: count each hierarchy once.
        return (
          !lstatSync(d).isSymbolicLink() &&
          statSync(d).isDirectory() &&
          existsSync(path.join(d, 'cgroup.procs'))
        );
      } catch {
        return false;
      }
    });
}

function kubepodsCgroups(): string[] {
  const out: string[] = [];
  for (const root of cgroupRoots())
    for (const d of readdirSync(root)) if (d.startsWith('kubepods')) out.push(path.join(root, d));
  return out;
}

function recordHost(): HostBefore {
  const chains: Record<string, string[]> = {};
  for (const tool of IPTABLES) for (const table of TABLES) chains[`${tool} ${table}`] = chainsOf(tool, table);
  return {
    sysctls: Object.fromEntries(SYSCTLS.map((k) => [k, readSysctl(k) ?? ''])),
    paths: Object.fromEntries(HOST_PATHS.map((p) => [p, existsSync(p)])),
    chains,
    nftTables: nftTables(),
    cgroups: kubepodsCgroups(),
  };
}

function nftTables(): string[] {
  return run('nft', ['list', 'tables']).stdout.split('\n').filter(Boolean);
}

/** Tables iptables-nft created for the node, once they hold no rule (ours are gone by then). */
function removeEmptyNewTables(before: HostBefore | undefined): void {
  if (!before?.nftTables) return;
  const existed = new Set(before.nftTables);
  for (const line of nftTables()) {
    if (existed.has(line)) continue;
    const [, family, name] = line.split(' ');
    if (!family || !name) continue;
    const body = run('nft', ['list', 'table', family, name])
      .stdout.split('\n')
      .map((l) => l.trim());
    const rules = body.filter(
      (l) => l && l !== '}' && !l.startsWith('table ') && !l.startsWith('chain ') && !l.startsWith('type '),
    );
    if (rules.length === 0) run('nft', ['delete', 'table', family, name]);
  }
}

// --- teardown ---------------------------------------------------------------------------------

/** Processes whose command line names NODE_ROOT (kubelet, containerd, shims, scheduler). */
function ourProcesses(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(NODE_ROOT)) pids.push(pid);
    } catch {
      // gone
    }
  }
  return pids;
}

function killAndWait(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const deadline = Date.now() + 10_000;
  while (pids.some(alive) && Date.now() < deadline) sleepSync(50);
}

function cgroupProcesses(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string) => {
    try {
      for (const line of readFileSync(path.join(d, 'cgroup.procs'), 'utf8').split('\n'))
        if (line) pids.push(Number(line));
      for (const e of readdirSync(d, { withFileTypes: true }))
        if (e.isDirectory()) walk(path.join(d, e.name));
    } catch {
      // gone
    }
  };
  walk(dir);
  return pids;
}

function removeCgroup(dir: string): void {
  try {
    for (const e of readdirSync(dir, { withFileTypes: true }))
      if (e.isDirectory()) removeCgroup(path.join(dir, e.name));
    rmdirSync(dir);
  } catch {
    // best effort; what is left is reported by sweepNode's check
  }
}

function removeChains(before: HostBefore | undefined): void {
  for (const tool of IPTABLES) {
    for (const table of TABLES) {
      const existed = new Set(before?.chains[`${tool} ${table}`] ?? []);
      const all = chainsOf(tool, table);
      const ours = all.filter((c) => OUR_CHAIN.test(c) && !existed.has(c));
      if (ours.length === 0) continue;
      const set = new Set(ours);
      // Rules elsewhere that jump to our chains, deleted by number from the bottom.
      for (const chain of all.filter((c) => !set.has(c))) {
        const listing = run(tool, ['-w', '5', '-t', table, '-L', chain, '-n', '--line-numbers']).stdout;
        const nums = listing
          .split('\n')
          .map((l) => l.trim().split(/\s+/))
          .filter((f) => /^\d+$/.test(f[0] ?? '') && set.has(f[1] ?? ''))
          .map((f) => Number(f[0]))
          .sort((a, b) => b - a);
        for (const n of nums) run(tool, ['-w', '5', '-t', table, '-D', chain, String(n)]);
      }
      for (const chain of ours) run(tool, ['-w', '5', '-t', table, '-F', chain]);
      for (const chain of ours) run(tool, ['-w', '5', '-t', table, '-X', chain]);
    }
  }
}

function mountsUnder(prefixes: string[]): string[] {
  const targets = run('findmnt', ['-rn', '-o', 'TARGET']).stdout.split('\n').filter(Boolean);
  return targets
    .map((t) => t.replace(/\\x20/g, ' '))
    .filter((t) => prefixes.some((p) => t === p || t.startsWith(`${p}/`)))
    .sort((a, b) => b.length - a.length);
}

/**
 * Undoes everything a node did to the host, from whatever state it is in: running, half
 * started, or its owner SIGKILLed. Synchronous, so the 'exit' hook can run it. Returns what
 * it could not restore (empty when the host is back as it was).
 */
export function sweepNode(log: (message: string) => void = () => {}): string[] {
  let before: HostBefore | undefined;
  try {
    before = JSON.parse(readFileSync(path.join(NODE_ROOT, 'host-before.json'), 'utf8')) as HostBefore;
  } catch {
    before = undefined;
  }
  const problems: string[] = [];

  // 1. Processes: kubelet and scheduler first (they would restart containers), then every
  //    container (runc), the shims, containerd, and anything left in the kubepods cgroups.
  killAndWait(
    ourProcesses().filter((pid) => {
      try {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        return cmd.includes('kubelet') || cmd.includes('kube-scheduler');
      } catch {
        return false;
      }
    }),
  );
  const runcRoot = path.join(NODE_ROOT, 'runc', 'k8s.io');
  const runc = readRuncPath();
  if (runc && existsSync(runcRoot)) {
    for (const id of run(runc, ['--root', runcRoot, 'list', '-q']).stdout.split('\n').filter(Boolean))
      run(runc, ['--root', runcRoot, 'delete', '-f', id]);
  }
  killAndWait(ourProcesses());
  const cgroupsBefore = new Set(before?.cgroups ?? []);
  const newCgroups = kubepodsCgroups().filter((d) => !cgroupsBefore.has(d));
  killAndWait(newCgroups.flatMap(cgroupProcesses));

  // 2. Network: veths on our bridge, the bridge, our iptables chains (and jumps to them).
  for (const line of run('ip', ['-o', 'link', 'show', 'master', BRIDGE]).stdout.split('\n')) {
    const name = line.split(':')[1]?.trim().split('@')[0];
    if (name) run('ip', ['link', 'delete', name]);
  }
  if (run('ip', ['link', 'show', BRIDGE]).ok) run('ip', ['link', 'delete', BRIDGE]);
  removeChains(before);
  removeEmptyNewTables(before);

  // 3. Mounts under the node's folders, deepest first.
  const mountRoots = [NODE_ROOT, '/var/lib/kubelet', '/run/containerd', '/run/netns'].filter(
    (p) => p === NODE_ROOT || !before?.paths[p],
  );
  for (const target of mountsUnder(mountRoots)) {
    if (!run('umount', [target]).ok) run('umount', ['-l', target]);
  }

  // 4. cgroups the kubelet made.
  for (const dir of newCgroups) removeCgroup(dir);

  // 5. Kernel settings, as they were.
  for (const [key, value] of Object.entries(before?.sysctls ?? {})) {
    if (value === '' || readSysctl(key) === value) continue;
    try {
      writeFileSync(sysctlFile(key), value);
    } catch (err) {
      problems.push(`sysctl ${key}: ${(err as Error).message}`);
    }
  }

  // 6. Paths outside NODE_ROOT that were not there before; then NODE_ROOT itself.
  if (before) {
    for (const [p, existed] of Object.entries(before.paths)) {
      if (!existed && existsSync(p)) rmSync(p, { recursive: true, force: true });
    }
  } else {
    // No record (the owner died before writing it): remove only what only a node makes.
    for (const p of ['/var/lib/kubelet/device-plugins']) rmSync(p, { recursive: true, force: true });
  }
  try {
    rmSync(NODE_ROOT, { recursive: true, force: true });
  } catch (err) {
    problems.push(`${NODE_ROOT}: ${(err as Error).message}`);
  }

  // What is still not as it was.
  if (run('ip', ['link', 'show', BRIDGE]).ok) problems.push(`bridge ${BRIDGE} still exists`);
  const leftMounts = mountsUnder([NODE_ROOT]);
  if (leftMounts.length > 0) problems.push(`mounts left: ${leftMounts.join(', ')}`);
  const leftCgroups = kubepodsCgroups().filter((d) => !cgroupsBefore.has(d));
  if (leftCgroups.length > 0) problems.push(`cgroups left: ${leftCgroups.join(', ')}`);
  if (ourProcesses().length > 0) problems.push(`processes left: ${ourProcesses().join(', ')}`);
  rmSync(LOCK_FILE, { force: true });
  if (problems.length > 0) log(`host not fully restored: ${problems.join('; ')}`);
  return problems;
}

/**
 * Restores the host after a node whose owner is gone (SIGKILLed): a no-op when no node ran,
 * and it leaves a node whose owner is alive alone. Returns what it could not restore.
 */
export function sweepStaleNode(log: (message: string) => void = () => {}): string[] {
  if (!existsSync(LOCK_FILE) && !existsSync(NODE_ROOT)) return [];
  try {
    const owner = Number(readFileSync(LOCK_FILE, 'utf8').trim());
    if (owner > 0 && alive(owner)) {
      log(`a node owned by the live process ${owner} runs; leaving it alone`);
      return [];
    }
  } catch {
    // no lock: the owner died between removing it and NODE_ROOT, or never took it
  }
  log('restoring the host after a node whose owner is gone');
  return sweepNode(log);
}

function readRuncPath(): string | undefined {
  try {
    return readFileSync(path.join(NODE_ROOT, 'runc-path'), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

// --- lock -------------------------------------------------------------------------------------

/**
 * `LIFELEASE_NODE_WAIT=<seconds>`: when another live process holds the node, wait up to that
 * long for it to stop instead of refusing at once (for shared machines where several test runs
 * take turns with the one node a host can have). Unset or 0: refuse at once.
 */
export const NODE_WAIT_ENV = 'LIFELEASE_NODE_WAIT';

function nodeWaitMs(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[NODE_WAIT_ENV];
  if (raw === undefined || raw === '') return 0;
  const seconds = Number(raw);
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new Error(`${NODE_WAIT_ENV}=${raw}: expected a number of seconds (0 or more)`);
  }
  return seconds * 1000;
}

/**
 * Takes the host's node lock, sweeping after an owner that died without cleaning up; with
 * `LIFELEASE_NODE_WAIT`, waits (bounded) for a live owner to finish.
 */
async function acquireLock(log: (message: string) => void, waitMs: number): Promise<void> {
  const waitUntil = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      tryAcquireLock(log);
      return;
    } catch (err) {
      if (!(err instanceof NodeBusyError) || Date.now() >= waitUntil) throw err;
      if (!told) log(`${err.message.split('.')[0]}; waiting for it (${NODE_WAIT_ENV})`);
      told = true;
      await sleep(500);
    }
  }
}

class NodeBusyError extends Error {}

function tryAcquireLock(log: (message: string) => void): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(LOCK_FILE, 'wx');
      writeFileSync(fd, `${process.pid}\n`);
      closeSync(fd);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = Number(readFileSync(LOCK_FILE, 'utf8').trim());
    if (Number.isInteger(owner) && owner > 0 && alive(owner)) {
      throw new NodeBusyError(
        `a real node is already running on this host (process ${owner}${owner === process.pid ? ', this one' : ''}, state in ${NODE_ROOT}; lock ${LOCK_FILE}). ` +
          'One node per host: it changes global kernel settings and iptables. Stop it first ' +
          '(`npm run cluster:down`, or end that process), then try again.',
      );
    }
    log(`a previous node's owner (process ${owner}) is gone: restoring the host it changed`);
    sweepNode(log);
  }
  throw new Error(`could not take ${LOCK_FILE}`);
}

/** A clear refusal before anything is built: a real node needs root. */
export function assertCanRunNode(): void {
  if (process.getuid?.() !== 0) {
    throw new Error(
      'a real node (kubelet + containerd) needs root: it mounts, makes cgroups, a bridge and ' +
        'iptables rules, and sets kernel settings (all restored when it stops). Run as root, ' +
        'or use the control plane alone (the default for `npm test`).',
    );
  }
  const missingTools = ['iptables', 'ip6tables', 'ip', 'findmnt', 'tar'].filter(
    (t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0,
  );
  if (missingTools.length > 0) {
    throw new Error(
      `a real node needs ${missingTools.join(', ')} on PATH (Debian: apt-get install iptables iproute2 util-linux tar)`,
    );
  }
}

// --- exit hooks -------------------------------------------------------------------------------

let liveNode: { teardown: () => void } | undefined;
let hooked = false;
function installHooks(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => liveNode?.teardown());
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      liveNode?.teardown();
      process.removeListener(sig, onSignal);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// --- start ------------------------------------------------------------------------------------

export function containerdConfig(bins: NodeBinaries): string {
  const d = (p: string) => JSON.stringify(path.join(NODE_ROOT, p));
  return `version = 3
root = ${d('containerd/root')}
state = ${d('containerd/state')}
disabled_plugins = ["io.containerd.nri.v1.nri"]

[grpc]
  address = ${d('containerd/containerd.sock')}

[ttrpc]
  address = ${d('containerd/containerd.sock.ttrpc')}

[debug]
  level = "warn"

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = ${d('s')}

[plugins.'io.containerd.internal.v1.opt']
  path = ${d('containerd/opt')}

[plugins.'io.containerd.cri.v1.images']
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "registry.k8s.io/pause:${PAUSE_TAG.value}"

[plugins.'io.containerd.cri.v1.runtime']
  # This VM lacks CAP_SYS_RESOURCE: runc init cannot lower oom_score_adj below its own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [${JSON.stringify(bins.cniBinDir)}]
    conf_dir = ${d('cni/net.d')}
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = ${JSON.stringify(bins.runc)}
        Root = ${d('runc')}
        SystemdCgroup = false
`;
}
const PAUSE_TAG = { value: '3.10.2' };

export function cniConfig(): string {
  return JSON.stringify(
    {
      cniVersion: '1.0.0',
      name: CNI_NETWORK,
      plugins: [
        {
          type: 'bridge',
          bridge: BRIDGE,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: path.join(NODE_ROOT, 'cni/ipam'),
            ranges: [[{ subnet: POD_CIDR, gateway: BRIDGE_IP }]],
            // The Service range only (for the kubernetes Service), never a default route.
            routes: [{ dst: SERVICE_CIDR, gw: BRIDGE_IP }],
          },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );
}

function kubeletConfig(caFile: string, port: number, healthzPort: number): string {
  const d = (p: string) => path.join(NODE_ROOT, p);
  return JSON.stringify(
    {
      apiVersion: 'kubelet.config.k8s.io/v1beta1',
      kind: 'KubeletConfiguration',
      cgroupDriver: 'cgroupfs',
      failCgroupV1: false,
      failSwapOn: false,
      containerRuntimeEndpoint: `unix://${d('containerd/containerd.sock')}`,
      address: BRIDGE_IP,
      port,
      readOnlyPort: 0,
      healthzBindAddress: '127.0.0.1',
      healthzPort,
      authentication: {
        anonymous: { enabled: false },
        webhook: { enabled: true },
        x509: { clientCAFile: caFile },
      },
      authorization: { mode: 'Webhook' },
      podLogsDir: d('pod-logs'),
      volumePluginDir: d('volume-plugins'),
      staticPodPath: d('manifests'),
      resolvConf: d('resolv.conf'),
      // A shared test machine: never evict or garbage-collect the images we imported.
      evictionHard: { 'memory.available': '1Mi', 'nodefs.available': '1%', 'imagefs.available': '1%' },
      imageGCHighThresholdPercent: 100,
      imageGCLowThresholdPercent: 99,
      kubeAPIQPS: 50,
      kubeAPIBurst: 100,
      serializeImagePulls: false,
      maxPods: 110,
    },
    null,
    2,
  );
}

/** A TCP relay from the bridge address to the API server on loopback (see the header). */
async function startRelay(apiPort: number): Promise<Server> {
  const sockets = new Set<Socket>();
  const server = createServer((inbound) => {
    const outbound = createConnection({ host: '127.0.0.1', port: apiPort });
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  // server.close() only stops accepting, and 'close' comes once every connection has ended:
  // destroy them first. Half-closed relays to pods already gone sat in FIN-WAIT-1 for minutes
  // and kept a finished test file's process alive.
  const close = server.close.bind(server);
  server.close = (callback?: (err?: Error) => void) => {
    for (const s of sockets) s.destroy();
    return close(callback);
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(apiPort, BRIDGE_IP, () => resolve());
  });
  return server;
}

async function waitFor(
  what: string,
  fn: () => Promise<boolean> | boolean,
  deadline: number,
  procs: ManagedProcess[] = [],
): Promise<void> {
  const loop = async (): Promise<void> => {
    let lastError = '';
    while (Date.now() < deadline) {
      try {
        if (await fn()) return;
      } catch (err) {
        lastError = (err as Error).message;
      }
      await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}${lastError ? ` (last error: ${lastError})` : ''}`);
  };
  await Promise.race([loop(), ...procs.map(exitedEarly)]);
}

function nodeReady(node: V1Node): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

/** The pause image as an OCI archive next to the pause binary (made once). */
function pauseArchive(bins: NodeBinaries, tag: string): NodeImage {
  const name = `registry.k8s.io/pause:${tag}`;
  const archive = path.join(NODE_ROOT, `pause-${tag}.oci.tar`);
  const rootfs = path.join(NODE_ROOT, 'pause-rootfs');
  mkdirSync(rootfs, { recursive: true });
  writeFileSync(path.join(rootfs, 'pause'), readFileSync(bins.pause), { mode: 0o755 });
  writeOciArchive({ rootfs, name, out: archive, config: { Entrypoint: ['/pause'], User: '65535:65535' } });
  rmSync(rootfs, { recursive: true, force: true });
  return { archive, name };
}

/**
 * Starts a real node joined to `cluster` (started with `nodeClusterOptions()`), imports the
 * pause image and `options.images`, and returns once the Node is Ready and kube-scheduler
 * runs. Throws (after restoring the host) when anything fails.
 */
export async function startNode(cluster: Cluster, options: StartNodeOptions = {}): Promise<RealNode> {
  const log = options.log ?? (() => {});
  assertCanRunNode();
  const binaries = options.binaries ?? (await resolveNodeBinaries({ log }));
  PAUSE_TAG.value = await pauseVersion(binaries);

  await acquireLock(log, options.lockWaitMs ?? nodeWaitMs());
  options.afterLock?.();
  // The start deadline covers starting, not waiting for another run's node to stop.
  const deadline = Date.now() + (options.timeoutMs ?? 120_000);
  installHooks();
  let stopped = false;
  /** stop() began: a scheduler that exits now is not started again. */
  let stopping = false;
  const processes: ManagedProcess[] = [];
  let relay: Server | undefined;
  const teardown = (): void => {
    if (stopped) return;
    stopped = true;
    relay?.close();
    for (const p of processes) p.signal('SIGKILL');
    // Keep the node's logs with the control plane's (NODE_ROOT goes away).
    try {
      const logs = path.join(cluster.stateDir, 'node-logs');
      mkdirSync(logs, { recursive: true });
      for (const f of readdirSync(NODE_ROOT))
        if (f.endsWith('.log')) writeFileSync(path.join(logs, f), readFileSync(path.join(NODE_ROOT, f)));
    } catch {
      // the control plane's folder may be gone already
    }
    sweepNode(log);
    liveNode = undefined;
  };
  liveNode = { teardown };

  try {
    // 1. Record the host as it is, before any change.
    rmSync(NODE_ROOT, { recursive: true, force: true });
    for (const d of [
      'containerd',
      'cni/net.d',
      'kubelet',
      'pod-logs',
      'manifests',
      'volume-plugins',
      's',
      'runc',
    ])
      mkdirSync(path.join(NODE_ROOT, d), { recursive: true });
    writeFileSync(path.join(NODE_ROOT, 'host-before.json'), JSON.stringify(recordHost(), null, 2));
    writeFileSync(path.join(NODE_ROOT, 'runc-path'), binaries.runc);
    writeFileSync(path.join(NODE_ROOT, 'owner.pid'), String(process.pid));
    const file = (p: string) => path.join(NODE_ROOT, p);

    // 2. The bridge exists before the kubelet, whose node IP (and serving address) it is.
    log(`creating bridge ${BRIDGE} (${BRIDGE_IP}/16)`);
    must('ip', ['link', 'add', BRIDGE, 'type', 'bridge']);
    must('ip', ['addr', 'add', `${BRIDGE_IP}/16`, 'dev', BRIDGE]);
    must('ip', ['link', 'set', BRIDGE, 'up']);

    // 3. Pods reach the API server as `kubernetes.default`: 10.0.0.1:443 -> relay -> 127.0.0.1.
    const apiPort = Number(new URL(cluster.server).port);
    relay = await startRelay(apiPort);
    must('iptables', ['-w', '5', '-t', 'nat', '-N', CHAIN]);
    must('iptables', [
      '-w', '5', '-t', 'nat', '-A', CHAIN, '-d', `${SERVICE_IP}/32`, '-p', 'tcp', '--dport', '443',
      '-j', 'DNAT', '--to-destination', `${BRIDGE_IP}:${apiPort}`,
    ]); // prettier-ignore
    must('iptables', ['-w', '5', '-t', 'nat', '-I', 'PREROUTING', '-i', BRIDGE, '-j', CHAIN]);

    // 4. containerd.
    writeFileSync(file('cni/net.d/10-lifelease.conflist'), cniConfig());
    writeFileSync(file('containerd/config.toml'), containerdConfig(binaries));
    writeFileSync(file('resolv.conf'), '# lifelease node: pods have no DNS (no network beyond this host)\n');
    const containerdSocket = file('containerd/containerd.sock');
    log('starting containerd');
    const containerd = new ManagedProcess({
      name: 'containerd',
      command: binaries.containerd,
      args: ['--config', file('containerd/config.toml')],
      logFile: file('containerd.log'),
      // The shim finds runc through PATH as well as through BinaryName.
      env: { ...process.env, PATH: `${path.dirname(binaries.containerdShim)}:${process.env['PATH'] ?? ''}` },
    });
    processes.push(containerd);
    const ctr = (args: string[]): string =>
      must(binaries.ctr, ['--address', containerdSocket, '-n', 'k8s.io', ...args]);
    await waitFor(
      'containerd to answer',
      () => run(binaries.ctr, ['--address', containerdSocket, 'version']).ok,
      deadline,
      [containerd],
    );

    const importImage = async (image: NodeImage): Promise<void> => {
      await execFileAsync(binaries.ctr, [
        '--address',
        containerdSocket,
        '-n',
        'k8s.io',
        'images',
        'import',
        image.archive,
      ]);
      if (!ctr(['images', 'list', '-q']).split('\n').includes(image.name))
        throw new Error(`importing ${image.archive} did not produce the image ${image.name}`);
    };
    const t0 = performance.now();
    const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
    const images = [pauseArchive(binaries, PAUSE_TAG.value), ...(options.images ?? [])];
    let imported = 0;
    // A big image takes a while on a loaded machine: say what is going on (under 10 s apart).
    const ticker = setInterval(
      () =>
        log(
          `importing images into containerd: ${imported} of ${images.length} done, ${elapsed()} (now ${images[imported]?.name ?? '-'})`,
        ),
      9_000,
    );
    try {
      for (const image of images) {
        await importImage(image);
        imported++;
      }
    } finally {
      clearInterval(ticker);
    }
    log(`imported ${images.length} images in ${elapsed()}`);

    // 5. The node's own credentials: CN=system:node:<name>, O=system:nodes, bound to system:node.
    const ca = await loadCertificateAuthority(
      cluster.caCertPem,
      readFileSync(path.join(cluster.stateDir, 'ca.key'), 'utf8'),
    );
    const cert = await ca.issue({
      commonName: `system:node:${NODE_NAME}`,
      organizations: ['system:nodes'],
      usage: 'client',
    });
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    writeFileSync(file('ca.crt'), cluster.caCertPem);
    writeFileSync(
      file('kubelet.kubeconfig'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          {
            name: 'local',
            cluster: { server: cluster.server, 'certificate-authority-data': b64(cluster.caCertPem) },
          },
        ],
        users: [
          {
            name: 'node',
            user: { 'client-certificate-data': b64(cert.certPem), 'client-key-data': b64(cert.keyPem) },
          },
        ],
        contexts: [{ name: 'local', context: { cluster: 'local', user: 'node' } }],
        'current-context': 'local',
      }),
      { mode: 0o600 },
    );
    const rbac = cluster.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    try {
      await rbac.createClusterRoleBinding({
        body: {
          metadata: { name: 'lifelease-local-nodes' },
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'system:node' },
          subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'Group', name: 'system:nodes' }],
        },
      });
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw err;
    }

    // 6. kubelet and kube-scheduler.
    const [kubeletPort, healthzPort, schedulerPort] = [await freePort(), await freePort(), await freePort()];
    writeFileSync(file('kubelet-config.json'), kubeletConfig(file('ca.crt'), kubeletPort, healthzPort));
    log('starting kubelet');
    const kubelet = new ManagedProcess({
      name: 'kubelet',
      command: binaries.kubelet,
      args: [
        `--config=${file('kubelet-config.json')}`,
        `--kubeconfig=${file('kubelet.kubeconfig')}`,
        `--root-dir=${file('kubelet')}`,
        `--cert-dir=${file('kubelet/pki')}`,
        `--hostname-override=${NODE_NAME}`,
        `--node-ip=${BRIDGE_IP}`,
        '--v=1',
      ],
      logFile: file('kubelet.log'),
    });
    processes.push(kubelet);
    log('starting kube-scheduler');
    const schedulerOptions: ManagedProcessOptions = {
      name: 'kube-scheduler',
      command: binaries.kubeScheduler,
      args: [
        `--kubeconfig=${cluster.kubeconfigPath}`,
        `--authentication-kubeconfig=${cluster.kubeconfigPath}`,
        `--authorization-kubeconfig=${cluster.kubeconfigPath}`,
        '--leader-elect=false',
        '--bind-address=127.0.0.1',
        `--secure-port=${schedulerPort}`,
        // (A path under NODE_ROOT on its command line: a sweep finds it after a SIGKILL of the owner.)
        `--cert-dir=${file('scheduler-certs')}`,
        '--profiling=false',
      ],
      logFile: file('kube-scheduler.log'),
    };
    let scheduler = new ManagedProcess(schedulerOptions);
    processes.push(scheduler);
    // kube-scheduler exits by design when it finds its cache inconsistent (klog.FlushAndExit
    // after "Pod updated on a different node than previously added to": seen here after an
    // API server restart while a pod's name was reused, seed 219077372) and relies on its
    // supervisor (the kubelet for a static pod, systemd) to start it again. This node is its
    // supervisor: one that exits while the node runs is started again, with a line in its
    // log, as a kubelet restarts a static pod: after 1 s, doubling up to 30 s if it keeps
    // exiting (a crash loop's back-off), and back to 1 s once it has run for 10 minutes (the
    // kubelet's reset). Without it, pods stay Pending.
    let schedulerRestarts = 0;
    let backoffSteps = 0;
    const superviseScheduler = (proc: ManagedProcess): void => {
      const startedAt = performance.now();
      void proc.exited.then(async ({ code, signal }) => {
        if (stopped || stopping) return;
        if (performance.now() - startedAt >= 10 * 60_000) backoffSteps = 0;
        await sleep(Math.min(30_000, 1000 * 2 ** backoffSteps++));
        if (stopped || stopping) return;
        schedulerRestarts++;
        appendFileSync(
          schedulerOptions.logFile,
          `lifelease: kube-scheduler exited (code ${code}, signal ${signal}); restart ${schedulerRestarts}\n`,
        );
        log(`kube-scheduler exited (code ${code}, signal ${signal}): starting it again, as a kubelet would`);
        scheduler = new ManagedProcess(schedulerOptions);
        processes.push(scheduler);
        superviseScheduler(scheduler);
      });
    };
    superviseScheduler(scheduler);

    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await waitFor(
      `node ${NODE_NAME} to be Ready`,
      async () => nodeReady(await core.readNode({ name: NODE_NAME })),
      deadline,
      [containerd, kubelet, scheduler],
    );
    log(`node ${NODE_NAME} Ready`);

    const node: RealNode = {
      name: NODE_NAME,
      binaries,
      containerd,
      kubelet,
      get scheduler() {
        return scheduler;
      },
      get schedulerRestarts() {
        return schedulerRestarts;
      },
      containerdSocket,
      importImage,
      ctr,
      async stop() {
        if (stopped) return;
        stopping = true;
        // Graceful first: the kubelet and scheduler stop; then containers and the host.
        await Promise.all([kubelet.stop(), scheduler.stop()]);
        relay?.close();
        teardown();
      },
    };
    return node;
  } catch (err) {
    const logs = processes.map((p) => `--- ${p.name} (${p.logFile}) ---\n${p.tail(20)}`).join('\n');
    teardown();
    throw new Error(`the node failed to start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
}
