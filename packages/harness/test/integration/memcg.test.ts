/**
 * The harness's memory cgroup: the kernel enforces the limit (a process over it is
 * OOM-killed, as in a pod over its memory limit) and reports what was charged.
 */
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { createMemoryCgroup } from '@lifelease/harness/memcg';
import { ManagedProcess } from '@lifelease/harness/process';

const cgroup = createMemoryCgroup('self-test', 64);
cgroup?.remove();
const skip = cgroup
  ? false
  : 'this machine lets us make no memory cgroup (no memory controller, or not root)';

/** Runs `node -e script` in a fresh 64 MiB group; its exit and the group's figures. */
async function inGroup(script: string) {
  const cg = createMemoryCgroup('self-test', 64);
  assert.ok(cg);
  const proc = new ManagedProcess({
    name: 'memcg-probe',
    command: process.execPath,
    args: ['-e', script],
    logFile: path.join(mkdtempSync(path.join(tmpdir(), 'lifelease-memcg-')), 'probe.log'),
    cgroup: cg,
  });
  const exit = await proc.exited;
  const figures = { exit, oomKills: cg.oomKills(), peakMiB: cg.peakMiB(), log: proc.tail() };
  cg.remove();
  return figures;
}

describe('memory cgroup', { skip }, () => {
  test('a process that stays under the limit runs to its end; its memory is charged to the group', async () => {
    const r = await inGroup('const b = Buffer.alloc(16 * 2 ** 20, 1); console.log("ok", b.length)');
    assert.deepEqual(r.exit, { code: 0, signal: null }, r.log);
    assert.equal(r.oomKills, 0);
    assert.ok(r.peakMiB > 16 && r.peakMiB <= 64, `peak ${r.peakMiB} MiB`);
  });

  test('a process that goes over the limit is OOM-killed by the kernel', async () => {
    const r = await inGroup(
      'const a = []; for (let i = 0; i < 40; i++) a.push(Buffer.alloc(8 * 2 ** 20, 1)); console.log("survived")',
    );
    assert.equal(r.exit.signal, 'SIGKILL', r.log);
    assert.ok(r.oomKills >= 1, `oom kills: ${r.oomKills}`);
    assert.doesNotMatch(r.log, /survived/);
  });
});
