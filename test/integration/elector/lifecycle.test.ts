/**
 * The elector under the pod lifecycle of a real kubelet (packages/harness/src/node.ts): the product
 * installed with `kubectl apply -k manifests`, opted-in pods whose elector the kubelet runs
 * as a native sidecar from the project image, apps asking `$ELECTOR_GET_URL` from inside
 * their containers (packages/harness/src/on-node.ts). What the kubelet does here is its own: SIGTERM
 * and the grace period on deletion, the final status it reports, killing containers on a
 * forced deletion, the pod phase when the app exits, restarting a killed sidecar.
 *
 * The elector's own edge cases with exact control over its process (flags, partitions from
 * the API server, a status written by hand, orphaned Leases) stay in election.test.ts and
 * faults.test.ts, which run elector processes against the control plane: their elector
 * arguments are not the webhook's, and a partition of one pod's path to the API server on the
 * node is the fault suite's (test/chaos).
 */
import { CoordinationV1Api, CoreV1Api, type V1Lease, type V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ANNOTATION_ELECTION,
  CONTAINER_NAME,
  LEASE_ANNOTATION_TAKEOVER_AT,
} from '../../../common/constants.ts';
import {
  agreedLeader,
  appLines,
  electingDeployment,
  installProduct,
  runElectingDeployment,
  uninstallProduct,
} from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

let node: TestNode;
let ns: string;
let core: CoreV1Api;
let coord: CoordinationV1Api;

before(async () => {
  if (nodeSkip()) return;
  node = await sharedNode();
  await installProduct(node);
  ns = await node.createNamespace('lifecycle');
  core = node.kubeConfig.makeApiClient(CoreV1Api);
  coord = node.kubeConfig.makeApiClient(CoordinationV1Api);
});

after(async () => {
  if (!node) return;
  await core.deleteNamespace({ name: ns }).catch(() => {});
  await uninstallProduct(node);
  await node.release();
});

async function lease(name: string): Promise<V1Lease | undefined> {
  try {
    return await coord.readNamespacedLease({ name, namespace: ns });
  } catch (err) {
    if ((err as { code?: number }).code === 404) return undefined;
    throw err;
  }
}

const ownerUid = (l: V1Lease | undefined) => l?.metadata?.ownerReferences?.[0]?.uid;
const electorStatus = (p: V1Pod) => p.status?.initContainerStatuses?.find((s) => s.name === CONTAINER_NAME);

describe('the elector on a real kubelet', { skip: nodeSkip() }, () => {
  test('graceful deletion of the leader pod: the kubelet stops it, its Lease goes, a new leader without a fenced takeover', async (t) => {
    const { pods, leader } = await runElectingDeployment(
      node,
      ns,
      electingDeployment(node, { name: 'graceful', replicas: 3 }),
    );
    const deletedAt = Date.now();
    await node.kubectl(['-n', ns, 'delete', 'pod', leader, '--wait=false']);
    const after = await agreedLeader(node, ns, 'graceful', 3, 120_000, deletedAt);
    assert.notEqual(after.leader, leader);
    const agreedAt = Math.max(
      ...(await Promise.all(
        after.pods.map(async (p) => {
          const seen = (await appLines(node, ns, p.metadata!.name!)).find(
            (l) => l.t > deletedAt && l.name === after.leader,
          );
          return seen?.t ?? Date.now();
        }),
      )),
    );
    t.diagnostic(
      `graceful failover, deletion -> every app answers the new leader: ${agreedAt - deletedAt} ms`,
    );
    const l = await lease('graceful');
    assert.equal(ownerUid(l), after.pods.find((p) => p.metadata?.name === after.leader)?.metadata?.uid);
    // The kubelet's final status said the old elector stopped: the takeover needs no fence.
    assert.equal(l?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT], undefined);
    // No surviving app ever named a third pod as leader after the deletion.
    for (const p of pods.filter((x) => x.metadata?.name !== leader)) {
      const names = new Set(
        (await appLines(node, ns, p.metadata!.name!))
          .filter((x) => x.t > deletedAt && x.name)
          .map((x) => x.name),
      );
      for (const n of names) assert.ok(n === leader || n === after.leader, `${p.metadata?.name} named ${n}`);
    }
  });

  test('forced deletion of the leader pod (grace 0): the kubelet kills it, a new leader is elected', async (t) => {
    const { leader } = await runElectingDeployment(
      node,
      ns,
      electingDeployment(node, { name: 'forced', replicas: 2 }),
    );
    const deletedAt = Date.now();
    await node.kubectl(['-n', ns, 'delete', 'pod', leader, '--grace-period=0', '--force', '--wait=false']);
    // The fenced takeover may wait up to the fencing bound (60 s) when the end was not seen.
    const after = await agreedLeader(node, ns, 'forced', 2, 180_000, deletedAt);
    assert.notEqual(after.leader, leader);
    t.diagnostic(
      `forced deletion -> agreed new leader: ${Date.now() - deletedAt} ms (takeover-at: ${(await lease('forced'))?.metadata?.annotations?.[LEASE_ANNOTATION_TAKEOVER_AT] ?? 'none'})`,
    );
    assert.equal(
      ownerUid(await lease('forced')),
      after.pods.find((p) => p.metadata?.name === after.leader)?.metadata?.uid,
    );
  });

  test('the kubelet restarts a killed elector container: same Lease, the same pod still leads', async () => {
    const { pods, leader } = await runElectingDeployment(
      node,
      ns,
      electingDeployment(node, { name: 'restart', replicas: 2 }),
    );
    const leaderPod = pods.find((p) => p.metadata?.name === leader)!;
    const before = electorStatus(leaderPod)!;
    const leaseBefore = await lease('restart');
    const killedAt = Date.now();
    node.ctr(['tasks', 'kill', '--signal', 'SIGKILL', before.containerID!.replace(/^containerd:\/\//, '')]);
    await eventually(
      'the kubelet to restart the elector container',
      async () => {
        const s = electorStatus(await core.readNamespacedPod({ name: leader, namespace: ns }));
        return (s?.restartCount ?? 0) > (before.restartCount ?? 0) && s?.state?.running !== undefined;
      },
      60_000,
    );
    const after = await agreedLeader(node, ns, 'restart', 2, 120_000, killedAt);
    assert.equal(after.leader, leader, 'the same pod leads after its elector restarted');
    assert.equal(
      (await lease('restart'))?.metadata?.uid,
      leaseBefore?.metadata?.uid,
      'the Lease was not replaced',
    );
    const follower = pods.find((p) => p.metadata?.name !== leader)!;
    const named = (await appLines(node, ns, follower.metadata!.name!)).filter(
      (l) => l.t > killedAt && l.name,
    );
    assert.ok(
      named.every((l) => l.name === leader),
      `the follower named only ${leader}: ${JSON.stringify([...new Set(named.map((l) => l.name))])}`,
    );
  });

  for (const [phase, exitCode] of [
    ['Succeeded', 0],
    ['Failed', 3],
  ] as const) {
    test(`the leader's app exits ${exitCode} (pod ${phase}): the kubelet stops the elector, the follower reclaims the Lease`, async () => {
      const election = `jobs-${phase.toLowerCase()}`;
      const jobPod = (name: string): V1Pod => ({
        metadata: {
          name,
          labels: { leaderElection: 'true' },
          annotations: { [ANNOTATION_ELECTION]: election },
        },
        spec: {
          restartPolicy: 'Never',
          terminationGracePeriodSeconds: 5,
          containers: [
            {
              name: 'app',
              image: node.node.images.app,
              imagePullPolicy: 'Never',
              // A second after the file appears: the app is the pid namespace's init, and its
              // exit kills every process left in it, so exiting at once could kill the
              // `kubectl exec ... touch` that made the file (exit 137) before it returned.
              command: [
                'sh',
                '-c',
                `while [ ! -e /tmp/stop ]; do sleep 0.2; done; sleep 1; exit ${exitCode}`,
              ],
            },
          ],
        },
      });
      const running = (name: string) =>
        eventually(
          `${name} running with every container ready`,
          async () => {
            const p = await core.readNamespacedPod({ name, namespace: ns });
            return p.status?.phase === 'Running' && p.status.containerStatuses?.every((s) => s.ready) && p;
          },
          120_000,
        );
      const a = `${election}-a`;
      const b = `${election}-b`;
      await core.createNamespacedPod({ namespace: ns, body: jobPod(a) });
      const podA = await running(a);
      await eventually(
        `${a} to hold the Lease`,
        async () => ownerUid(await lease(election)) === podA.metadata?.uid,
      );
      const oldLease = await lease(election);
      await core.createNamespacedPod({ namespace: ns, body: jobPod(b) });
      const podB = await running(b);

      await node.kubectl(['-n', ns, 'exec', a, '-c', 'app', '--', 'touch', '/tmp/stop']);
      await eventually(
        `${a} to end ${phase}`,
        async () => (await core.readNamespacedPod({ name: a, namespace: ns })).status?.phase === phase,
        60_000,
      );
      const l = await eventually(
        `${b} to reclaim the Lease`,
        async () => {
          const now = await lease(election);
          return ownerUid(now) === podB.metadata?.uid && now;
        },
        60_000,
      );
      assert.notEqual(l.metadata?.uid, oldLease?.metadata?.uid, 'a new Lease');
      assert.equal(l.spec?.holderIdentity, b);
      const finished = await core.readNamespacedPod({ name: a, namespace: ns });
      assert.equal(
        electorStatus(finished)?.state?.terminated !== undefined,
        true,
        'the kubelet stopped the elector',
      );
    });
  }
});
