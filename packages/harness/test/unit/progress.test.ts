/**
 * scripts/lib/progress.sh prints a line at least every PROGRESS_EVERY seconds even when the
 * machine is so loaded that a `sleep 0.25` takes much longer (simulated: a `sleep` that
 * always takes 0.9 s). A loop that counted sleeps printed every 11 s here.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const LIB = path.resolve(import.meta.dirname, '../../scripts/lib/progress.sh');

test('heartbeat lines come at least every PROGRESS_EVERY seconds under a slow sleep', () => {
  const script = `
    log() { printf '%s %s\\n' "\${EPOCHREALTIME/./}" "$*"; }
    source "$1"
    sleep() { command sleep 0.9; }
    heartbeat step no_status command sleep 10
  `;
  const out = execFileSync('bash', ['-c', script, 'bash', LIB], {
    env: { ...process.env, PROGRESS_EVERY: '3' },
    encoding: 'utf8',
  });
  const times = out
    .trim()
    .split('\n')
    .map((l) => Number(l.split(' ')[0]) / 1e6);
  assert.ok(times.length >= 3, out);
  const gaps = times.slice(1).map((t, i) => t - times[i]!);
  for (const g of gaps) assert.ok(g <= 3, `a gap of ${g.toFixed(1)} s: ${out}`);
  assert.match(out, /step: \d+s elapsed/);
});
