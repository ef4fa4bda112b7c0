/**
 * A short sample of the fault suite (`npm run chaos` runs several hundred random schedules):
 * two hand-picked schedules that between them inject every kind of fault, on a private
 * control plane with the webhook installed from manifests/, candidates created through the
 * API server and run by the kubelet stand-in (test/chaos/kubelet.ts on packages/harness/src/kubelet.ts;
 * why a stand-in here: this sample runs in every `npm test`, root or not, beside the shared
 * node's files, which hold the host's one node; real-node.test.ts runs a schedule on it). The
 * checker must find no two leaders (with no allowance for partitioned pods), a fenced
 * partitioned pod, and one agreed leader after every fault; and, to show it can see a real
 * overlap, it must flag the force-deleted leader's claims once they are moved past the
 * fenced takeover.
 *
 *   CHAOS_SEEDS=1,2,3 npm test -- test/integration/chaos/schedules.test.ts   # add random seeds
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { check } from '../../chaos/history.ts';
import { statsByType, statsTable } from '../../chaos/report.ts';
import { ChaosEnv, DEFAULT_CHAOS, type ScheduleResult } from '../../chaos/runner.ts';
import { describeSchedule, planSchedule, type Schedule } from '../../chaos/schedule.ts';

const SCHEDULES: Schedule[] = [
  {
    seed: 900001,
    pods: 5,
    steps: [
      { fault: { kind: 'partition-force-delete', deleteAfterMs: 500 }, quietMs: 100 },
      {
        fault: { kind: 'delete', target: 'leader', mode: 'orphan', replacements: 1, reuseName: true },
        quietMs: 100,
      },
      { fault: { kind: 'finish', phase: 'Succeeded', replacements: 1 }, quietMs: 100 },
      { fault: { kind: 'elector-kill', target: 'leader', restartDelayMs: 300 }, quietMs: 100 },
      { fault: { kind: 'partition', target: 'follower', durationMs: 800 }, quietMs: 100 },
      {
        // The leader deleted while it finishes: its kubelet must still remove the object, or
        // the name waits for ever (a runner bug the full run found, seed 1794973041).
        fault: {
          kind: 'storm',
          faults: [
            { kind: 'delete', target: 'leader', mode: 'orphan', replacements: 2, reuseName: true },
            { kind: 'finish', phase: 'Succeeded', replacements: 2 },
          ],
        },
        quietMs: 100,
      },
    ],
  },
  {
    seed: 900002,
    pods: 3,
    steps: [
      { fault: { kind: 'apiserver-restart', kill: true, downMs: 1500 }, quietMs: 100 },
      { fault: { kind: 'etcd-pause', pauseMs: 1500 }, quietMs: 100 },
      {
        fault: { kind: 'delete', target: 'leader', mode: 'graceful', replacements: 2, reuseName: false },
        quietMs: 100,
      },
      { fault: { kind: 'lease-delete' }, quietMs: 100 },
      { fault: { kind: 'foreign-lease', holdMs: 800 }, quietMs: 100 },
      {
        fault: {
          kind: 'storm',
          faults: [
            { kind: 'delete', target: 'leader', mode: 'grace0', replacements: 1, reuseName: false },
            { kind: 'elector-kill', target: 'follower', restartDelayMs: 0 },
          ],
        },
        quietMs: 100,
      },
    ],
  },
  ...(process.env['CHAOS_SEEDS'] ?? '')
    .split(',')
    .filter((s) => s.trim() !== '')
    .map((s) => planSchedule(Number(s))),
];

let env: ChaosEnv;
let artifactsDir: string;
const results: ScheduleResult[] = [];

before(async () => {
  artifactsDir = mkdtempSync(path.join(tmpdir(), 'lifelease-chaos-test-'));
  env = await ChaosEnv.start({ ...DEFAULT_CHAOS, artifactsDir, log: () => {} });
});
after(async () => {
  await env?.stop();
  if (results.every((r) => r.ok)) rmSync(artifactsDir, { recursive: true, force: true });
});

describe('fault schedules (sample)', () => {
  for (const schedule of SCHEDULES) {
    test(`seed ${schedule.seed}: ${schedule.steps.map((s) => s.fault.kind).join(', ')}`, async (t) => {
      const r = await env.run(schedule);
      results.push(r);
      for (const f of r.faults) {
        t.diagnostic(
          `${f.type}: longest no-leader gap ${(f.longestGapMs ?? 0).toFixed(0)} ms (outside designed windows ${(f.longestUndesignedGapMs ?? 0).toFixed(0)} ms), agreed ${f.agreedAt === undefined ? 'never' : `${(f.agreedAt - f.healedAt).toFixed(0)} ms after the heal`}`,
        );
      }
      assert.ok(
        r.ok,
        `${describeSchedule(schedule)}\n${r.problems.join('\n')}\nartifacts: ${r.artifacts ?? '-'}`,
      );
      assert.equal(r.faults.length, schedule.steps.length);
      assert.ok(r.faults.every((f) => f.agreedAt !== undefined));
      assert.ok(r.observations > 100, `only ${r.observations} observations`);
      // Deleted pods go as in a cluster: no object lingers, every reused name is taken.
      const lingering = r.faults.flatMap((f) => f.notes).filter((n) => /still there after/.test(n));
      assert.deepEqual(lingering, []);
    });
  }

  test('partition + force-delete: no overlap even without any allowance; the checker would see one', (t) => {
    const forced = results.find((r) => r.faults.some((f) => f.fault.kind === 'partition-force-delete'));
    assert.ok(forced, 'the partition-force-delete schedule ran');
    // No allowance for anybody: the others waited until the cut-off leader had fenced itself.
    assert.equal(
      check(forced.history, { partitions: [], fencingBoundMs: 0, slackMs: 0 }).violations.length,
      0,
    );
    // The checker is not blind to it: the cut-off leader's answers moved 8 s later (past the
    // fenced takeover, 4 s + 2 s after the deletion) overlap the new leader's and are flagged.
    const note = forced.faults
      .flatMap((f) => f.notes)
      .map((n) => /^cut (\S+) off, force-deleted/.exec(n)?.[1])
      .find((k) => k !== undefined);
    assert.ok(note, 'the cut-off pod is named in the notes');
    const shifted = forced.history.map((o) =>
      o.pod === note
        ? { ...o, t: o.t + 8000, ...(o.since === undefined ? {} : { since: o.since + 8000 }) }
        : o,
    );
    const strict = check(shifted, { partitions: [], fencingBoundMs: 0, slackMs: 0 });
    assert.ok(strict.violations.length > 0, 'a moved overlap is flagged');
    t.diagnostic(strict.violations[0]!.reason);
    t.diagnostic(`\n${statsTable(statsByType(results, 'type'))}`);
  });
});
