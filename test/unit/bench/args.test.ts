/** bench/args.ts: the bench scripts' numbers, by name or position, checked before anything runs. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { numberArgs } from '../../../bench/args.ts';

const SPEC = [
  { name: 'seconds', default: 120 },
  { name: 'pods', default: 1000, min: 0 },
] as const;

test('defaults, positions and names', () => {
  assert.deepEqual(numberArgs('x', SPEC, []), { seconds: 120, pods: 1000 });
  assert.deepEqual(numberArgs('x', SPEC, ['30', '0']), { seconds: 30, pods: 0 });
  assert.deepEqual(numberArgs('x', SPEC, ['--pods=5']), { seconds: 120, pods: 5 });
});

test('anything else stops with the usage line', () => {
  for (const argv of [['abc'], ['0'], ['1.5'], ['-3'], ['1', '2', '3'], ['--nope=1']]) {
    assert.throws(
      () => numberArgs('node failover', SPEC, argv),
      /usage: node bench\/node\.ts failover /,
      argv.join(' '),
    );
  }
});
