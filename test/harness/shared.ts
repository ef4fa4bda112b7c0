/**
 * The run-wide control plane. `npm test` starts one cluster and passes its folder to every
 * test file in `LIFELEASE_CLUSTER_DIR`; a test file run on its own starts a private one.
 * Tests share it by working in their own namespaces (`createNamespace`), and use
 * `startCluster()` instead only when they break the control plane on purpose.
 *
 *   let cluster: TestCluster;
 *   before(async () => { cluster = await sharedCluster(); });
 *   after(() => cluster.release());
 */
import { connectCluster, type ClusterClient } from './client.ts';
import { startCluster } from './cluster.ts';

export const CLUSTER_DIR_ENV = 'LIFELEASE_CLUSTER_DIR';

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
