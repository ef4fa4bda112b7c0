/**
 * Shared pieces of the elector's integration tests: a per-test election (namespace, RBAC,
 * pods, elector processes) that cleans up after itself, and Lease helpers.
 *
 * The electors run as host processes (packages/harness/src/elector-process.ts), not on the real
 * node: these tests choose each elector's flags, break its path to the API server and run
 * many at once without root (why, in that file's header); lifecycle.test.ts is the one on
 * the real node (graceful and forced deletion, Succeeded/Failed pods, restarts).
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import type { ClusterClient } from '@lifelease/harness/client';
import {
  createPod,
  grantElection,
  startElector,
  type ElectorProcess,
  type PodRef,
  type StartElectorOptions,
} from '@lifelease/harness/elector-process';
import { eventually } from '@lifelease/harness/wait';
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

/**
 * A TCP relay between one elector and the API server that a test can cut like a network
 * partition: from `cut()` on, nothing passes either way and nothing is closed (packets
 * dropped, as to a node that became unreachable), so the elector learns of it only by its
 * own deadlines. `kubeconfig` is a copy of the elector's kubeconfig pointed at the relay.
 */
export async function partitionableApi(kubeconfigPath: string): Promise<{
  kubeconfig: string;
  cut(): void;
  /** Bytes passed from the API server to the elector so far. */
  bytesToElector(): number;
  close(): Promise<void>;
}> {
  const doc = JSON.parse(readFileSync(kubeconfigPath, 'utf8')) as {
    clusters: { cluster: { server: string } }[];
  };
  const target = new URL(doc.clusters[0]!.cluster.server);
  const sockets = new Set<Socket>();
  const pairs: [Socket, Socket][] = [];
  let isCut = false;
  let toElector = 0;
  const server = createServer((client) => {
    sockets.add(client);
    client.on('error', () => {});
    client.on('close', () => sockets.delete(client));
    if (isCut) return; // accepted, never answered
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(upstream);
    upstream.on('error', () => client.destroy());
    upstream.on('close', () => sockets.delete(upstream));
    client.on('close', () => upstream.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on('data', (chunk: Buffer) => (toElector += chunk.length));
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  doc.clusters[0]!.cluster.server = `${target.protocol}//127.0.0.1:${port}`;
  const kubeconfig = `${kubeconfigPath}.relay-${port}`;
  writeFileSync(kubeconfig, JSON.stringify(doc), { mode: 0o600 });
  return {
    kubeconfig,
    cut() {
      isCut = true;
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
    bytesToElector: () => toElector,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One observation of an elector's answer. */
export interface Sample {
  at: number;
  who: string;
  claims: boolean;
}

/**
 * Polls `GET /` of each elector every `everyMs` in the background. A pod claims when its
 * app would lead by either NAIS-compatible reading: `is_leader`, or `name` equal to its
 * hostname.
 */
export function recordClaims(electors: ElectorProcess[], everyMs = 25) {
  const samples: Sample[] = [];
  let running = true;
  const loop = (async () => {
    // Ends by itself once no elector runs, so a test that fails before `stop()` does not keep
    // its file alive for ever (the afterEach hooks stop the electors).
    while (running && electors.some((e) => e.running)) {
      await Promise.all(
        electors.map(async (e) => {
          if (!e.running) return;
          try {
            const { status, body } = await e.get();
            const claims = status === 200 && (body.is_leader || body.name === e.hostname);
            samples.push({ at: performance.now(), who: e.hostname, claims });
          } catch {
            // not answering: claims nothing
          }
        }),
      );
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    samples,
    async stop(): Promise<Sample[]> {
      running = false;
      await loop;
      return samples;
    },
  };
}

/** Moments where two pods claimed: a claim sample of one between two claim samples of another. */
export function overlaps(samples: Sample[]): string[] {
  const byWho = new Map<string, Sample[]>();
  for (const s of samples) byWho.set(s.who, [...(byWho.get(s.who) ?? []), s]);
  // Each pod's claim intervals: from a claiming sample to the next non-claiming one.
  const intervals: { who: string; from: number; to: number }[] = [];
  for (const [who, list] of byWho) {
    let from: number | undefined;
    for (const s of list) {
      if (s.claims && from === undefined) from = s.at;
      if (!s.claims && from !== undefined) {
        intervals.push({ who, from, to: s.at });
        from = undefined;
      }
    }
    if (from !== undefined) intervals.push({ who, from, to: list.at(-1)!.at });
  }
  const found: string[] = [];
  for (const a of intervals)
    for (const b of intervals)
      if (a.who < b.who && a.from < b.to && b.from < a.to)
        found.push(
          `${a.who} [${a.from.toFixed(0)}, ${a.to.toFixed(0)}] and ${b.who} [${b.from.toFixed(0)}, ${b.to.toFixed(0)}]`,
        );
  return found;
}
