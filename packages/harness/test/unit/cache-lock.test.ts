/**
 * scripts/lib/cache.sh `cache_lock`: `npm test` starts its two phases at once, and on a cold
 * cache both ask for the same build. The second waits for the first (saying so every
 * PROGRESS_EVERY seconds) instead of building beside it in the same folder, then goes on.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const LIB = path.resolve(import.meta.dirname, '../../scripts/lib/cache.sh');

/** A bash that takes the lock, says so on stdout, then holds it until its stdin closes. */
function holder(cache: string) {
  const script = `
    log() { printf '[build] %s\\n' "$*" >&2; }
    source "$1"
    cache_lock tools
    echo locked
    cat >/dev/null
  `;
  return spawn('bash', ['--norc', '-c', script, 'bash', LIB], {
    env: { PATH: '/usr/bin:/bin', CONTROL_PLANE_CACHE: cache, PROGRESS_EVERY: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

const output = (p: ReturnType<typeof holder>, stream: 'stdout' | 'stderr') => {
  let text = '';
  p[stream].on('data', (d: Buffer) => (text += String(d)));
  return () => text;
};

const until = async (what: string, cond: () => boolean, ms = 60_000) => {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('cache_lock: a second build waits, says so, and goes on once the first ends', async () => {
  const cache = mkdtempSync(path.join(os.tmpdir(), 'lifelease-cache-lock-'));
  const first = holder(cache);
  const firstOut = output(first, 'stdout');
  let second: ReturnType<typeof holder> | undefined;
  try {
    await until('the first to take the lock', () => firstOut().includes('locked'));
    second = holder(cache);
    const secondOut = output(second, 'stdout');
    const secondErr = output(second, 'stderr');
    // The second has said at least twice that it waits, and has not taken the lock.
    await until(
      'the second to say it waits',
      () => (secondErr().match(/waiting for another build/g) ?? []).length >= 2,
    );
    assert.equal(secondOut(), '');
    assert.match(secondErr(), /waiting for another build of the tools binaries in .* to end \(\d+s so far\)/);
    first.stdin.end();
    await until('the second to take the lock', () => secondOut().includes('locked'));
    second.stdin.end();
    const codes = await Promise.all(
      [first, second].map(
        (p) =>
          new Promise((resolve) => (p.exitCode !== null ? resolve(p.exitCode) : p.once('exit', resolve))),
      ),
    );
    assert.deepEqual(codes, [0, 0]);
  } finally {
    first.kill();
    second?.kill();
    rmSync(cache, { recursive: true, force: true });
  }
});
