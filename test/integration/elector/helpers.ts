/**
 * Shared pieces of the elector's integration tests: a per-test election (namespace, RBAC,
 * pods, elector processes) that cleans up after itself, and Lease helpers.
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import type { ClusterClient } from '../../harness/client.ts';
import {
  createPod,
  grantElection,
  startElector,
  type ElectorProcess,
  type PodRef,
  type StartElectorOptions,
} from '../../harness/elector-process.ts';
import { eventually } from '../../harness/wait.ts';
export { eventually };

export const ELECTION = 'app';

/** One election in its own namespace; `close()` stops every elector it started. */
export class TestElection {
  readonly cluster: Pick<ClusterClient, 'kubeConfig' | 'serviceAccountKubeconfig' | 'createNamespace'>;
  readonly namespace: string;
  readonly kubeconfigPath: string;
  readonly electors: ElectorProcess[] = [];
  readonly election: string;

  private constructor(
    cluster: TestElection['cluster'],
    namespace: string,
    kubeconfigPath: string,
    election: string,
  ) {
    this.cluster = cluster;
    this.namespace = namespace;
    this.kubeconfigPath = kubeconfigPath;
    this.election = election;
  }

  static async create(
    cluster: TestElection['cluster'],
    prefix: string,
    election = ELECTION,
  ): Promise<TestElection> {
    const namespace = await cluster.createNamespace(prefix);
    const kubeconfigPath = await grantElection(cluster, namespace, election);
    return new TestElection(cluster, namespace, kubeconfigPath, election);
  }

  get kc(): KubeConfig {
    return this.cluster.kubeConfig;
  }

  pod(name: string): Promise<PodRef> {
    return createPod(this.kc, this.namespace, name, { serviceAccountName: `elector-${this.election}` });
  }

  async start(pod: PodRef, options: Partial<StartElectorOptions> = {}): Promise<ElectorProcess> {
    const e = await startElector({
      election: this.election,
      pod,
      kubeconfigPath: this.kubeconfigPath,
      ...options,
    });
    this.electors.push(e);
    return e;
  }

  /** The election's Lease, or undefined. */
  async lease(): Promise<V1Lease | undefined> {
    const api = this.kc.makeApiClient(CoordinationV1Api);
    const list = await api.listNamespacedLease({ namespace: this.namespace });
    return list.items.find((l) => l.metadata?.name === this.election);
  }

  /** Every Lease in the namespace. */
  async leases(): Promise<V1Lease[]> {
    const api = this.kc.makeApiClient(CoordinationV1Api);
    return (await api.listNamespacedLease({ namespace: this.namespace })).items;
  }

  async createLease(body: V1Lease): Promise<V1Lease> {
    const api = this.kc.makeApiClient(CoordinationV1Api);
    return api.createNamespacedLease({
      namespace: this.namespace,
      body: { ...body, metadata: { ...body.metadata, name: this.election } },
    });
  }

  async deleteLease(): Promise<void> {
    await this.kc
      .makeApiClient(CoordinationV1Api)
      .deleteNamespacedLease({ name: this.election, namespace: this.namespace });
  }

  /** Stops all electors (SIGKILL: cleanup is not under test here); logs of failed tests stay on disk. */
  async close(): Promise<void> {
    await Promise.all(this.electors.map((e) => (e.running ? e.kill() : Promise.resolve())));
  }
}

/** A Lease as NAIS's elector writes it. */
export function naisLease(pod: PodRef, hostname: string): V1Lease {
  return {
    metadata: {
      name: ELECTION,
      ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: pod.name, uid: pod.uid }],
    },
    spec: { holderIdentity: hostname, acquireTime: new V1MicroTime(Date.now()) },
  };
}

/** Every elector answers the same leader name (non-empty); returns it. */
export async function allAgree(electors: ElectorProcess[], timeoutMs = 30_000): Promise<string> {
  let name = '';
  await eventually(
    'all electors to agree on one leader',
    async () => {
      const answers = await Promise.all(electors.map((e) => e.get()));
      const names = new Set(answers.map((a) => a.body.name));
      const leaders = answers.filter((a) => a.body.is_leader).length;
      name = answers[0]?.body.name ?? '';
      return answers.every((a) => a.status === 200) && names.size === 1 && name !== '' && leaders === 1;
    },
    timeoutMs,
  );
  return name;
}

/** The Lease's owner UID. */
export function ownerUid(lease: V1Lease | undefined): string | undefined {
  assert.ok(lease, 'no lease');
  return lease.metadata?.ownerReferences?.[0]?.uid;
}
