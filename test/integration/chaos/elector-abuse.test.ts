/**
 * Input abuse of the elector (the bundled sidecar, leading an election on the shared control
 * plane), sample counts: garbage HTTP, SSE clients that connect and vanish, clients that
 * never read, a client leaking streams past the cap, memory under the injected limit (a
 * kernel memory cgroup where this machine has one); and Leases of its election's name with
 * missing or odd fields or of another kind of election. A Pod with a reused name is covered
 * by the fault schedules (`reuseName`, test/integration/chaos/schedules.test.ts) and by
 * test/integration/elector/faults.test.ts (StatefulSet name reuse).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { electorHttpAbuse, leaseAbuse, type CheckResult } from '../../chaos/abuse.ts';
import { buildBundle, type Bundle } from '../../chaos/bundle.ts';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';

let cluster: TestCluster;
let bundle: Bundle;
before(async () => {
  bundle = await buildBundle();
  cluster = await sharedCluster();
});
after(async () => {
  await cluster?.release();
  bundle?.remove();
});

function report(t: { diagnostic(m: string): void }, results: CheckResult[]): void {
  for (const r of results) t.diagnostic(`${r.name}: ${r.figures.join('; ')}`);
  assert.deepEqual(
    results.flatMap((r) => r.problems.map((p) => `${r.name}: ${p}`)),
    [],
  );
}

describe('elector abuse', () => {
  test('HTTP: garbage, SSE churn, clients that never read or leak streams; it keeps answering under its memory limit', async (t) => {
    report(t, await electorHttpAbuse(cluster, bundle, 'sample'));
  });

  test('odd Leases of its election: no crash, no claim it does not hold, leads again after', async (t) => {
    report(t, await leaseAbuse(cluster, bundle));
  });
});
