/**
 * The fault suite on a real node (test/chaos/real-node.ts): one short schedule whose pods are
 * real pods (kubelet + containerd + runc + CNI, the project image, the elector injected by the
 * webhook running as its Deployment), with the faults done by the node's own machinery:
 * partitions as iptables rules on the pod's path to the API server, the node cut off by
 * stopping its kubelet, force deletion with grace 0, elector kills through containerd.
 *
 * The claim under test: a leader cut off from the API server whose Pod is force-deleted never
 * overlaps with a new leader. The checker gets no partition allowance: no moment with two
 * claimants anywhere in the history. The longest no-leader gap per fault is reported.
 *
 *   LIFELEASE_NODE_WAIT=3600 npm test -- test/integration/chaos/real-node.test.ts
 *
 * lifelease-test: starts its own real node (scripts/test.ts runs it after the shared node's files)
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { check } from '../../chaos/history.ts';
import { statsByType, statsTable } from '../../chaos/report.ts';
import { ChaosEnv, DEFAULT_CHAOS, type ScheduleResult } from '../../chaos/runner.ts';
import { describeSchedule, type Schedule } from '../../chaos/schedule.ts';

const SCHEDULE: Schedule = {
  seed: 910001,
  pods: 3,
  steps: [
    { fault: { kind: 'partition-force-delete', deleteAfterMs: 500 }, quietMs: 200 },
    {
      fault: { kind: 'delete', target: 'leader', mode: 'graceful', replacements: 1, reuseName: false },
      quietMs: 200,
    },
    { fault: { kind: 'partition-force-delete', deleteAfterMs: 0 }, quietMs: 200 },
    { fault: { kind: 'elector-kill', target: 'leader', restartDelayMs: 0 }, quietMs: 200 },
    { fault: { kind: 'partition', target: 'leader', durationMs: 1500 }, quietMs: 200 },
    {
      fault: { kind: 'delete', target: 'leader', mode: 'graceful', replacements: 1, reuseName: false },
      quietMs: 200,
    },
  ],
};

// Not root: no real node here (the stand-in sample, schedules.test.ts, still runs).
const skip = process.getuid?.() !== 0 ? 'a real node needs root' : false;
// The host has one node and other test files start one too: wait for theirs (this process only).
process.env['LIFELEASE_NODE_WAIT'] ??= '1800';

describe('fault schedule on a real node', { skip }, () => {
  let env: ChaosEnv | undefined;
  let artifactsDir: string;
  let result: ScheduleResult | undefined;

  before(async () => {
    artifactsDir = mkdtempSync(path.join(tmpdir(), 'lifelease-chaos-node-test-'));
    env = await ChaosEnv.start({ ...DEFAULT_CHAOS, artifactsDir, realNode: true, log: () => {} });
  });
  after(async () => {
    await env?.stop();
    if (result?.ok) rmSync(artifactsDir, { recursive: true, force: true });
  });

  test('partition + force-delete, graceful deletes, an elector kill, a partition: one leader at a time', async (t) => {
    const r = await env!.run(SCHEDULE);
    result = r;
    for (const f of r.faults) {
      t.diagnostic(
        `${f.type}: longest no-leader gap ${(f.longestGapMs ?? 0).toFixed(0)} ms${f.takeoverMs === undefined ? '' : `, next leader ${f.takeoverMs.toFixed(0)} ms after the deletion (${(f.takeoverAfterGoneMs ?? NaN).toFixed(0)} ms after the object was gone)`}, agreed ${f.agreedAt === undefined ? 'never' : `${(f.agreedAt - f.healedAt).toFixed(0)} ms after the heal`}; ${f.notes.join('; ')}`,
      );
    }
    t.diagnostic(`\n${statsTable(statsByType([r], 'type'))}`);
    assert.ok(
      r.ok,
      `${describeSchedule(SCHEDULE)}\n${r.problems.join('\n')}\nartifacts: ${r.artifacts ?? '-'}`,
    );
    assert.equal(r.faults.length, SCHEDULE.steps.length);
    assert.ok(r.observations > 100, `only ${r.observations} observations`);
    // No allowance for anybody, the partitioned pods included: never two claimants.
    const strict = check(r.history, { partitions: [], fencingBoundMs: 0, slackMs: 0 });
    assert.deepEqual(
      strict.violations.map((v) => v.reason),
      [],
    );
    // The force-deleted leaders really kept running (and claiming) while cut off: the fence,
    // not a dead elector, is what kept the others waiting.
    for (const f of r.faults.filter((x) => x.fault.kind === 'partition-force-delete')) {
      const cut = f.notes.map((n) => /^cut (\S+) off, force-deleted/.exec(n)?.[1]).find(Boolean);
      assert.ok(cut, `the cut-off pod is named: ${f.notes.join('; ')}`);
      const claimedAfterCut = r.history.some(
        (o) => o.pod === cut && o.t > f.injectedAt + 1000 && o.answer?.is_leader === true,
      );
      assert.ok(claimedAfterCut, `${cut} was still answering as leader a second after it was cut off`);
      // Fenced: nobody else claimed before the old elector's fencing bound ran out.
      assert.ok(
        f.takeoverMs !== undefined && f.takeoverMs >= DEFAULT_CHAOS.fencingMs,
        `takeover ${f.takeoverMs} ms after the forced deletion`,
      );
    }
    // Normal failover is not fenced: after a graceful deletion the kubelet reported the
    // elector stopped, so the next leader claims at once once the object is gone, well
    // within the fencing bound (a fenced takeover waits the bound + 2 s after the deletion).
    for (const f of r.faults.filter((x) => x.fault.kind === 'delete')) {
      assert.ok(
        f.takeoverAfterGoneMs !== undefined && f.takeoverAfterGoneMs < DEFAULT_CHAOS.fencingMs,
        `${f.type}: next leader ${f.takeoverAfterGoneMs} ms after the object was gone`,
      );
    }
  });
});
