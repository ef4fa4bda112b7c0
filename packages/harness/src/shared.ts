/**
 * The run-wide control plane. `npm test` starts one cluster and passes its folder to every
 * test file in `LIFELEASE_CLUSTER_DIR`; a test file run on its own starts a private one.
 * Tests share it by working in their own namespaces (`createNamespace`), and use
 * `startCluster()` instead only when they break the control plane on purpose.
 *
 *   let cluster: TestCluster;
 *   before(async () => { cluster = await sharedCluster(); });
 *   after(() => cluster.release());
 *
 * The run-wide real node (`sharedNode()`): as root, `npm test` also starts a second control
 * plane with the host's one real node (node.ts) and passes its folder in
 * `LIFELEASE_NODE_CLUSTER_DIR`; `node.json` in that folder says where the node's kubectl,
 * containerd and images are. It is a second control plane, not the first one with a node
 * added, because kube-scheduler would otherwise bind every pod of the stand-in tests (which
 * rely on unscheduled pods, see cluster.ts) to the node, and the real kubelet would run them.
 * The files that use it (found by `sharedNode(` in their text) run one at a time, in a test
 * process of their own: they install the product cluster-wide (`kubectl apply -k`) and remove
 * it again, which two files at once could not do.
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { connectCluster, type ClusterClient } from './client.ts';
import { startCluster, type Cluster } from './cluster.ts';
import { ensureImages } from './image.ts';
import { resolveNodeBinaries } from './node-binaries.ts';
import { nodeClusterOptions, startNode, type RealNode } from './node.ts';

export const CLUSTER_DIR_ENV = 'LIFELEASE_CLUSTER_DIR';
/** The control plane with the real node (`npm test` as root sets it for the files that use it). */
export const NODE_CLUSTER_DIR_ENV = 'LIFELEASE_NODE_CLUSTER_DIR';
const NODE_INFO = 'node.json';

export interface TestCluster extends ClusterClient {
  /** Stops the cluster if this file started it; leaves the run-wide one alone. */
  release(): Promise<void>;
}

export async function sharedCluster(): Promise<TestCluster> {
  const dir = process.env[CLUSTER_DIR_ENV];
  if (dir) {
    const client = await connectCluster(dir);
    return { ...client, release: async () => {} };
  }
  const cluster = await startCluster();
  return { ...cluster, release: () => cluster.stop() };
}

/** What a test needs to use a node another process started (written next to its kubeconfig). */
export interface NodeInfo {
  name: string;
  /** The built kubectl (same version as the cluster). */
  kubectl: string;
  ctr: string;
  containerdSocket: string;
  /** Names in the node's containerd: the project image (from the Dockerfile) and the test app image (sh + node). */
  images: { project: string; app: string };
}

export function writeNodeInfo(stateDir: string, info: NodeInfo): void {
  writeFileSync(path.join(stateDir, NODE_INFO), JSON.stringify(info, null, 2));
}

export interface TestNode extends TestCluster {
  readonly node: NodeInfo;
  /** True when this process started the node (`release()` stops it and restores the host). */
  readonly ownsNode: boolean;
  /** Runs the built kubectl with the admin kubeconfig (cwd: the repository); returns stdout. */
  kubectl(args: string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** `ctr -n k8s.io <args>` on the node's containerd; returns stdout. */
  ctr(args: string[]): string;
  /** Imports an OCI archive into the node's containerd and checks the name arrived. */
  importImage(image: { archive: string; name: string }): Promise<void>;
}

/** Set (to 1) where the real-node tests must run (CI): not root then fails instead of skipping. */
export const REQUIRE_NODE_ENV = 'LIFELEASE_REQUIRE_NODE';

/**
 * Why a real-node test cannot run here (not root), or false. As root a missing piece fails,
 * never skips; with `LIFELEASE_REQUIRE_NODE=1` (`.ci/run`) not being root fails too.
 */
export function nodeSkip(): string | false {
  if (process.getuid?.() === 0) return false;
  const why =
    'a real node needs root (kubelet + containerd change mounts, cgroups, iptables and kernel settings)';
  if (process.env[REQUIRE_NODE_ENV] === '1') throw new Error(`${REQUIRE_NODE_ENV}=1 and ${why}`);
  return why;
}

const execFileAsync = promisify(execFile);
const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

function nodeClient(
  client: ClusterClient,
  info: NodeInfo,
  release: () => Promise<void>,
  ownsNode: boolean,
): TestNode {
  const ctr = (args: string[]): string => {
    const r = spawnSync(info.ctr, ['--address', info.containerdSocket, '-n', 'k8s.io', ...args], {
      encoding: 'utf8',
      timeout: 120_000,
    });
    if (r.status !== 0) throw new Error(`ctr ${args.join(' ')} failed: ${r.stderr || r.error?.message}`);
    return r.stdout;
  };
  return {
    ...client,
    node: info,
    ownsNode,
    release,
    ctr,
    async kubectl(args, options = {}) {
      const run = execFileAsync(info.kubectl, args, {
        cwd: REPO_ROOT,
        env: { ...process.env, KUBECONFIG: client.kubeconfigPath },
        maxBuffer: 64 * 1024 * 1024,
        timeout: options.timeoutMs ?? 600_000,
      });
      if (options.input !== undefined) {
        run.child.stdin?.end(options.input);
      }
      try {
        return (await run).stdout;
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`kubectl ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
      }
    },
    async importImage(image) {
      await execFileAsync(
        info.ctr,
        ['--address', info.containerdSocket, '-n', 'k8s.io', 'images', 'import', image.archive],
        { timeout: 300_000 },
      );
      if (!ctr(['images', 'list', '-q']).split('\n').includes(image.name))
        throw new Error(`importing ${image.archive} did not produce the image ${image.name}`);
    },
  };
}

/**
 * The control plane with the real node: the run-wide one (`LIFELEASE_NODE_CLUSTER_DIR`, or
 * a `LIFELEASE_CLUSTER_DIR` from `npm run cluster:up` that has a node), else a private
 * control plane and node started here (the host's one node: set `LIFELEASE_NODE_WAIT` to
 * wait for another run's). Check `nodeSkip()` first.
 */
export async function sharedNode(
  options: { log?: (m: string) => void; afterLock?: () => void } = {},
): Promise<TestNode> {
  const candidates = [process.env[NODE_CLUSTER_DIR_ENV], process.env[CLUSTER_DIR_ENV]];
  const dir = candidates.find((d) => d && existsSync(path.join(d, NODE_INFO)));
  if (dir) {
    const info = JSON.parse(readFileSync(path.join(dir, NODE_INFO), 'utf8')) as NodeInfo;
    return nodeClient(await connectCluster(dir), info, async () => {}, false);
  }
  if (process.env[NODE_CLUSTER_DIR_ENV])
    throw new Error(
      `${NODE_CLUSTER_DIR_ENV}=${process.env[NODE_CLUSTER_DIR_ENV]} has no ${NODE_INFO}: no node runs there`,
    );
  const { cluster, info, stop } = await startNodeCluster(options);
  return nodeClient(cluster, info, stop, true);
}

/**
 * Starts a control plane (`nodeClusterOptions()`) and the real node with the project and test
 * app images imported, and writes `node.json` into the control plane's folder.
 */
export async function startNodeCluster(
  options: {
    log?: (m: string) => void;
    stateDir?: string;
    keepStateDir?: boolean;
    /** Called once this process holds the host's node lock (startNode's `afterLock`). */
    afterLock?: () => void;
  } = {},
): Promise<{ cluster: Cluster; info: NodeInfo; stop: () => Promise<void> }> {
  const log = options.log ?? (() => {});
  const binaries = await resolveNodeBinaries({ log });
  const images = await ensureImages({ log: (l) => log(`[image] ${l}`) });
  const cluster = await startCluster({
    ...nodeClusterOptions(),
    log,
    timeoutMs: 600_000,
    ...(options.stateDir ? { stateDir: options.stateDir } : {}),
    ...(options.keepStateDir ? { keepStateDir: true } : {}),
  });
  let node: RealNode;
  try {
    node = await startNode(cluster, {
      binaries,
      images: [images.project, images.app],
      log,
      timeoutMs: 180_000,
      ...(options.afterLock ? { afterLock: options.afterLock } : {}),
    });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  const info: NodeInfo = {
    name: node.name,
    kubectl: binaries.kubectl,
    ctr: binaries.ctr,
    containerdSocket: node.containerdSocket,
    images: { project: images.project.name, app: images.app.name },
  };
  writeNodeInfo(cluster.stateDir, info);
  let stopped = false;
  return {
    cluster,
    info,
    stop: async () => {
      if (stopped) return;
      stopped = true;
      await node.stop();
      await cluster.stop();
    },
  };
}
