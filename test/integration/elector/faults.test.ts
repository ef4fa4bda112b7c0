/**
 * The elector under control-plane faults, on a private cluster (these tests stop parts of
 * it): the API server down and back (self-fencing, then recovery), and the garbage
 * collector down (the electors' own reclaim is then the only way forward).
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import {
  createPod,
  deletePod,
  type ElectorProcess,
  type ElectorResult,
} from '@lifelease/harness/elector-process';
import { TestElection, allAgree, eventually, ownerUid } from './helpers.ts';

let cluster: Cluster;
let current: TestElection[] = [];
/** Recorders still polling: a test that fails before stopping its own must not keep the file alive. */
const recorders = new Set<{ stop(): Promise<void> }>();
before(async () => {
  cluster = await startCluster();
});
after(async () => {
  await cluster?.stop();
});
afterEach(async () => {
  await Promise.all([...recorders].map((r) => r.stop()));
  await Promise.all(current.map((e) => e.close()));
  current = [];
  await cluster.startApiServer();
  await cluster.startControllerManager();
});
async function election(prefix: string): Promise<TestElection> {
  const e = await TestElection.create(cluster, prefix);
  current.push(e);
  return e;
}

/** Polls `GET /` of each elector every 100 ms in the background and keeps a timeline. */
function record(electors: ElectorProcess[]) {
  const timeline: { at: number; who: string; status: number; body: ElectorResult | undefined }[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      await Promise.all(
        electors.map(async (e) => {
          try {
            const { status, body } = await e.get();
            timeline.push({ at: performance.now(), who: e.hostname, status, body });
          } catch {
            timeline.push({ at: performance.now(), who: e.hostname, status: 0, body: undefined });
          }
        }),
      );
      await sleep(100);
    }
  })();
  const recorder = {
    timeline,
    async stop() {
      running = false;
      recorders.delete(recorder);
      await loop;
    },
  };
  recorders.add(recorder);
  return recorder;
}

describe('API server outage', () => {
  test('state unknown after the fencing bound, never before; leader and follower recover after', async (t) => {
    const e = await election('el-outage');
    const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
    const args = ['--fencing-timeout=6s', '--log-level=debug'];
    const ea = await e.start(a, { args });
    await ea.waitFor((r) => r.is_leader, 30_000, 'a leads');
    const eb = await e.start(b, { args });
    await eb.waitFor((r) => r.name === 'app-a', 30_000, 'b follows');
    const leaseUid = (await e.lease())?.metadata?.uid;
    const rec = record([ea, eb]);

    const stoppedAt = performance.now();
    await cluster.stopApiServer();
    const down = performance.now();
    t.diagnostic(`kube-apiserver stopped in ${(down - stoppedAt).toFixed(0)} ms`);
    await eventually(
      'both electors to report unknown',
      async () => {
        const [ra, rb] = await Promise.all([ea.get(), eb.get()]);
        return ra.body.state === 'unknown' && rb.body.state === 'unknown';
      },
      20_000,
    );
    const fencedAt = performance.now();
    t.diagnostic(`unknown ${(fencedAt - stoppedAt).toFixed(0)} ms after the stop began (bound 6 s)`);
    // Transient errors never end the process; the servers keep answering.
    assert.ok(ea.running && eb.running);
    const fenced = (await ea.get()).body;
    assert.deepEqual({ name: fenced.name, is_leader: fenced.is_leader }, { name: '', is_leader: false });
    assert.equal(await ea.readyz(), 503);

    await cluster.startApiServer();
    const upAt = performance.now();
    await ea.waitFor((r) => r.is_leader, 30_000, 'a leads again');
    await eb.waitFor((r) => r.state === 'follower' && r.name === 'app-a', 30_000, 'b follows again');
    t.diagnostic(`recovered ${(performance.now() - upAt).toFixed(0)} ms after the API server was ready`);
    await rec.stop();
    assert.equal((await e.lease())?.metadata?.uid, leaseUid, 'the same Lease throughout');

    // Never unknown early: while within the bound of the last confirmation (at most one
    // watch period, 2 s, before the stop), the last confirmed state stands.
    const early = rec.timeline.filter((x) => x.at < stoppedAt + 3500 && x.status === 200);
    assert.ok(early.length > 0);
    for (const x of early)
      assert.notEqual(
        x.body?.state,
        'unknown',
        `${x.who} unknown ${(x.at - stoppedAt).toFixed(0)} ms after the stop`,
      );
    // And never anyone else as leader.
    for (const x of rec.timeline) {
      if (x.body?.is_leader) assert.equal(x.who, 'app-a');
      if (x.body && x.body.name !== '') assert.equal(x.body.name, 'app-a');
    }
  });
});

describe('garbage collector down', () => {
  test('StatefulSet name reuse: the new pod is not the old leader; it reclaims and leads', async () => {
    const e = await election('el-sts'); // (needs the service-account controller)
    await cluster.stopControllerManager();
    const old = await e.pod('web-0');
    const eOld = await e.start(old);
    await eOld.waitFor((r) => r.is_leader, 30_000, 'old web-0 leads');
    await eOld.kill();
    await deletePod(e.kc, old);
    const fresh = await createPod(e.kc, e.namespace, 'web-0', { serviceAccountName: 'elector-app' });
    assert.notEqual(fresh.uid, old.uid);
    assert.equal(ownerUid(await e.lease()), old.uid, 'the old Lease is still there (no GC)');

    // It did not see the old web-0 end, so its takeover is fenced: a short bound keeps it brief.
    const eNew = await e.start(fresh, { args: ['--fencing-timeout=3s'] });
    const rec = record([eNew]);
    await eNew.waitFor((r) => r.is_leader, 30_000, 'new web-0 leads');
    await rec.stop();
    assert.equal(ownerUid(await e.lease()), fresh.uid);
    assert.equal(eNew.logLines().find((l) => l.msg === 'lease reclaimed')?.['reason'], 'owner-replaced');
    // Until its own Lease existed, it never answered its own hostname as the leader.
    const firstLeader = rec.timeline.findIndex((x) => x.body?.is_leader);
    for (const x of rec.timeline.slice(0, firstLeader === -1 ? undefined : firstLeader)) {
      assert.notEqual(x.body?.name, 'web-0', "claimed the old pod's leadership by name");
    }
  });

  test('leader pod deleted: followers find the owner gone and reclaim', async (t) => {
    const e = await election('el-nogc');
    await cluster.stopControllerManager();
    const pods = await Promise.all(['app-0', 'app-1', 'app-2'].map((n) => e.pod(n)));
    const electors = [];
    for (const p of pods) electors.push(await e.start(p, { args: ['--owner-check-interval=1s'] }));
    const first = await allAgree(electors);
    const old = electors.find((x) => x.hostname === first)!;
    await old.kill();
    const t0 = performance.now();
    await deletePod(e.kc, old.pod);
    const rest = electors.filter((x) => x !== old);
    const second = await allAgree(rest);
    t.diagnostic(`failover without GC (owner check every 1 s): ${(performance.now() - t0).toFixed(0)} ms`);
    assert.notEqual(second, first);
    const reclaims = rest.flatMap((x) =>
      x.logLines().filter((l) => l.msg === 'lease reclaimed' && l['result'] === 'deleted'),
    );
    assert.equal(reclaims.length, 1, 'exactly one reclaim deleted the Lease');
    // The kubelet reports the pod finished before removing it: the followers' watch on it sees
    // that first (owner-finished); a follower that only saw the 404 says owner-missing.
    assert.ok(['owner-finished', 'owner-missing'].includes(String(reclaims[0]?.['reason'])));
  });
});
