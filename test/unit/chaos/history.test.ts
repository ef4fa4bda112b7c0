import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { check, claimIntervals, claims, type Observation } from '../../chaos/history.ts';

const obs = (t: number, pod: string, answer?: Observation['answer'], hostname = pod): Observation => ({
  t,
  pod,
  hostname,
  via: 'poll',
  ...(answer ? { answer } : {}),
});
const lead = (t: number, pod: string) => obs(t, pod, { name: pod, is_leader: true, state: 'leader' });
const follow = (t: number, pod: string, leader: string) =>
  obs(t, pod, { name: leader, is_leader: false, state: 'follower' });

describe('history checker', () => {
  test('a claim is is_leader, or name equal to the own hostname (the NAIS client pattern)', () => {
    const cases: [Observation, boolean][] = [
      [lead(0, 'a'), true],
      [follow(0, 'a', 'b'), false],
      [obs(0, 'a', { name: 'a', is_leader: false }), true], // an old client would act on the name
      [obs(0, 'a', { name: 'a-0' }, 'a-0'), true],
      [obs(0, 'a', { state: 'unknown' }), false],
      [obs(0, 'a'), false],
    ];
    for (const [o, want] of cases) assert.equal(claims(o), want, JSON.stringify(o));
  });

  test('a clean handover has no violation and measures the gap', () => {
    const h = [
      lead(0, 'a'),
      follow(0, 'b', 'a'),
      lead(100, 'a'),
      obs(150, 'b'),
      lead(400, 'b'),
      obs(400, 'a'),
    ];
    const v = check(h);
    assert.deepEqual(v.violations, []);
    assert.deepEqual(
      v.intervals.map((i) => [i.pod, i.from, i.to]),
      [
        ['a', 0, 100],
        ['b', 400, 400],
      ],
    );
    assert.equal(v.longestGapMs, 300);
  });

  test('two pods claiming at once is a violation', () => {
    const v = check([lead(0, 'a'), lead(50, 'b'), lead(100, 'a'), lead(120, 'b')]);
    assert.equal(v.violations.length, 1);
    assert.equal(v.violations[0]!.overlapMs, 50);
  });

  test('a partitioned pod may overlap only within the self-fencing bound', () => {
    const h = [lead(0, 'a'), lead(1000, 'a'), lead(1500, 'b'), lead(2500, 'a'), lead(3000, 'b')];
    const partitions = [{ pod: 'a', from: 900, to: Infinity }];
    assert.equal(check(h, { partitions, fencingBoundMs: 2000 }).violations.length, 0);
    assert.equal(check(h, { partitions, fencingBoundMs: 1000 }).violations.length, 1);
    assert.equal(check(h).violations.length, 1);
  });

  // Answers carrying the elector's own statement of when they took effect (`since`).
  const stated = (t: number, pod: string, since: number, leads: boolean, leader = leads ? pod : 'x') =>
    ({
      t,
      pod,
      hostname: pod,
      via: 'poll',
      since,
      answer: { name: leader, is_leader: leads, state: leads ? 'leader' : 'follower' },
    }) as Observation;

  test('stated times: a claim runs from its since to the start of the next state', () => {
    // a leads from 10; the poll that says so arrives at 100; a stops at 150 (seen at 300).
    const h = [stated(100, 'a', 10, true), stated(300, 'a', 150, false, 'b'), stated(320, 'b', 200, true)];
    const v = check(h);
    assert.deepEqual(
      v.intervals.map((i) => [i.pod, i.from, i.to]),
      [
        ['a', 10, 150],
        ['b', 200, 320],
      ],
    );
    assert.deepEqual(v.violations, []);
    assert.equal(v.longestGapMs, 50);
  });

  test('stated times: transport latency neither invents nor hides an overlap', () => {
    // A slow poll of a arrives (t=400) after b already leads (since 200), but a's answer
    // was produced before a stopped (its next state began at 150): no violation.
    const late = [
      stated(100, 'a', 10, true),
      stated(160, 'a', 150, false, 'b'),
      stated(400, 'a', 10, true),
      stated(250, 'b', 200, true),
    ];
    assert.deepEqual(check(late).violations, []);
    // a stopped claiming only at 260 (stated), b began at 200: a real overlap, even though
    // every sample of a that claims arrived before b's first one.
    const real = [stated(100, 'a', 10, true), stated(500, 'a', 260, false, 'b'), stated(300, 'b', 200, true)];
    const v = check(real);
    assert.equal(v.violations.length, 1);
    assert.equal(v.violations[0]!.overlapMs, 60);
  });

  test('stated times: a claim ends at the first unanswered request after it was last seen', () => {
    const h = [
      stated(100, 'a', 10, true),
      stated(150, 'a', 10, true),
      obs(200, 'a'),
      stated(900, 'a', 800, true),
    ];
    assert.deepEqual(
      claimIntervals(h).map((i) => [i.from, i.to]),
      [
        [10, 200],
        [800, 900],
      ],
    );
  });

  test('designed windows: gaps are also measured outside them', () => {
    const h = [lead(0, 'a'), obs(100, 'a', { state: 'unknown' }), lead(1000, 'a'), lead(1100, 'a')];
    const v = check(h, { designed: [{ from: 150, to: 900, reason: 'partitioned' }] });
    assert.equal(v.longestGapMs, 1000);
    assert.equal(v.longestUndesignedGapMs, 150);
    assert.equal(check(h).longestUndesignedGapMs, 1000);
  });

  test('property: histories where at most one pod ever claims at a time never violate', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({ dt: fc.integer({ min: 1, max: 50 }), leader: fc.constantFrom('a', 'b', 'c', null) }),
          {
            maxLength: 60,
          },
        ),
        (steps) => {
          // Each step: the current leader (or none) answers, then everyone else answers "not me".
          const h: Observation[] = [];
          let t = 0;
          for (const s of steps) {
            t += s.dt;
            for (const p of ['a', 'b', 'c']) {
              h.push(
                p === s.leader
                  ? lead(t, p)
                  : s.leader
                    ? follow(t, p, s.leader)
                    : obs(t, p, { state: 'unknown' }),
              );
            }
          }
          return check(h).violations.length === 0;
        },
      ),
    );
  });

  test('property: injecting a simultaneous second claim is always caught', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 100 }), (t, d) => {
        const h = [lead(t, 'a'), lead(t + d, 'a'), lead(t + Math.floor(d / 2), 'b')];
        return check(h).violations.length === 1 && claimIntervals(h).length === 2;
      }),
    );
  });
});
