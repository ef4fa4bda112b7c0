/**
 * Stopping the fault suite's environment while a schedule runs (what happens when a schedule's
 * test times out and the file's `after` hook stops the environment): the schedule ends at its
 * next step, repairs nothing, and the control plane stays stopped. Before, the schedule went
 * on through its steps and its repairs, started the API server again after its stop, and kept
 * the test file's process alive for about ten minutes.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { eventually } from '@lifelease/harness/wait';
import { ChaosEnv, DEFAULT_CHAOS } from '../../chaos/runner.ts';
import type { Schedule } from '../../chaos/schedule.ts';

test('stopping the environment mid-schedule ends the schedule and restarts nothing', async () => {
  const artifactsDir = mkdtempSync(path.join(tmpdir(), 'lifelease-chaos-stop-'));
  const lines: string[] = [];
  const env = await ChaosEnv.start({ ...DEFAULT_CHAOS, artifactsDir, log: (m) => lines.push(m) });
  try {
    const cut = { kind: 'partition', target: 'follower', durationMs: 1500 } as const;
    const schedule: Schedule = {
      seed: 900010,
      pods: 3,
      steps: [1, 2, 3, 4].map(() => ({ fault: cut, quietMs: 100 })),
    };
    const running = env.run(schedule);
    await eventually('the first fault to heal', () => lines.some((l) => /healed/.test(l)), 180_000);
    const stopped = env.stop();
    const result = await running;
    await stopped;
    assert.equal(result.ok, false);
    assert.ok(
      result.problems.some((p) => /stopped (before|after) fault [2-4]/.test(p)),
      result.problems.join('\n'),
    );
    assert.ok(result.faults.length < schedule.steps.length, 'the schedule did not run to its end');
    assert.equal(env.cluster.apiServer.running, false, 'the API server stays stopped');
    assert.equal(env.cluster.controllerManager.running, false);
  } finally {
    await env.stop();
    rmSync(artifactsDir, { recursive: true, force: true });
  }
});
