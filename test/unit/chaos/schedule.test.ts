import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Rng } from '../../chaos/rng.ts';
import { DEFAULT_PLAN, describeSchedule, faultType, planSchedule } from '../../chaos/schedule.ts';

describe('fault schedules', () => {
  test('the same seed gives the same schedule; another seed another one', () => {
    assert.deepEqual(planSchedule(42), planSchedule(42));
    assert.notDeepEqual(planSchedule(42), planSchedule(43));
    assert.equal(describeSchedule(planSchedule(7)), describeSchedule(planSchedule(7)));
  });

  test('within bounds, and over many seeds every fault kind and delete mode appears', () => {
    const kinds = new Set<string>();
    const types = new Set<string>();
    for (let seed = 0; seed < 400; seed++) {
      const s = planSchedule(seed);
      assert.equal(s.seed, seed);
      assert.ok(s.pods >= DEFAULT_PLAN.minPods && s.pods <= DEFAULT_PLAN.maxPods);
      assert.ok(s.steps.length >= DEFAULT_PLAN.minFaults && s.steps.length <= DEFAULT_PLAN.maxFaults);
      for (const { fault } of s.steps) {
        kinds.add(fault.kind);
        types.add(faultType(fault));
        if (fault.kind === 'storm') {
          assert.notEqual(fault.faults[0].kind, fault.faults[1].kind);
          for (const f of fault.faults)
            assert.ok(!['storm', 'foreign-lease', 'partition-force-delete'].includes(f.kind));
        }
      }
    }
    for (const k of [
      'apiserver-restart',
      'etcd-pause',
      'elector-kill',
      'partition',
      'partition-force-delete',
      'delete',
      'finish',
      'lease-delete',
      'foreign-lease',
      'storm',
    ])
      assert.ok(kinds.has(k), k);
    for (const t of [
      'delete-graceful-leader',
      'delete-grace0-follower',
      'delete-orphan-leader',
      'finish-succeeded',
      'finish-failed',
    ])
      assert.ok(types.has(t), t);
  });

  test('Rng: deterministic, uniform enough, ints within bounds', () => {
    const a = new Rng(1);
    const b = new Rng(1);
    const xs = Array.from({ length: 1000 }, () => a.next());
    assert.deepEqual(
      xs,
      Array.from({ length: 1000 }, () => b.next()),
    );
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    assert.ok(Math.abs(mean - 0.5) < 0.05, String(mean));
    for (let i = 0; i < 1000; i++) {
      const n = a.int(3, 10);
      assert.ok(n >= 3 && n <= 10 && Number.isInteger(n));
    }
  });
});
