/**
 * The harness cleans up after itself: two clusters run side by side; stop(), Ctrl-C and
 * even SIGKILL of the owning process leave no control-plane process and no folder behind.
 */
import { CoreV1Api } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { resolveBinaries } from '@lifelease/harness/binaries';
import { startCluster } from '@lifelease/harness/cluster';

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    // A zombie still answers kill(0); treat it as gone.
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(' ')[2]?.startsWith('Z');
  } catch {
    return false;
  }
}

async function gone(pids: number[], timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!pids.some(alive)) return true;
    await sleep(100);
  }
  return false;
}

describe('control-plane harness lifecycle', () => {
  test('a build that takes longer than the start-up timeout leaves the start its whole timeout', async () => {
    // A newcomer's first run builds the binaries (minutes) before starting them. Simulate a
    // 30-minute build on a clock the harness reads, not by waiting: the start-up deadline
    // must begin after the build, so the start still succeeds.
    const real = await resolveBinaries();
    let offset = 0;
    const slowBuild = () => {
      offset += 30 * 60_000;
      return Promise.resolve(real);
    };
    const c = await startCluster({ binaries: slowBuild, now: () => Date.now() + offset, timeoutMs: 120_000 });
    try {
      assert.equal(offset, 30 * 60_000, 'the simulated build ran');
      const ns = await c.kubeConfig.makeApiClient(CoreV1Api).readNamespace({ name: 'default' });
      assert.equal(ns.metadata?.name, 'default');
    } finally {
      await c.stop();
    }
  });

  test('two clusters run at once, and stop() leaves no process or folder', async () => {
    const [a, b] = await Promise.all([startCluster(), startCluster()]);
    try {
      assert.notEqual(a.server, b.server);
      await a.kubeConfig
        .makeApiClient(CoreV1Api)
        .createNamespace({ body: { metadata: { name: 'only-in-a' } } });
      const inB = await b.kubeConfig.makeApiClient(CoreV1Api).listNamespace();
      assert.ok(!inB.items.some((n) => n.metadata?.name === 'only-in-a'), 'clusters must not share state');
    } finally {
      const pids = [a, b].flatMap((c) => [c.etcd.pid!, c.apiServer.pid!, c.controllerManager.pid!]);
      await Promise.all([a.stop(), b.stop()]);
      assert.ok(await gone(pids), 'all control-plane processes exit');
      assert.ok(!existsSync(a.stateDir) && !existsSync(b.stateDir), 'state folders removed');
    }
  });

  test('the API server can be stopped and started again on the same address', async () => {
    const c = await startCluster();
    try {
      const core = c.kubeConfig.makeApiClient(CoreV1Api);
      await core.createNamespace({ body: { metadata: { name: 'survives' } } });
      await c.stopApiServer();
      await assert.rejects(core.readNamespace({ name: 'survives' }));
      await c.startApiServer();
      assert.equal((await core.readNamespace({ name: 'survives' })).metadata?.name, 'survives');
    } finally {
      await c.stop();
    }
  });

  for (const signal of ['SIGINT', 'SIGKILL'] as const) {
    test(`${signal} to the owning process leaves no control-plane process behind`, async () => {
      const dir = await mkdtemp(path.join(tmpdir(), 'lifelease-owner-'));
      const script = path.join(dir, 'owner.ts');
      const harness = path.resolve(import.meta.dirname, '../../src/cluster.ts');
      await writeFile(
        script,
        `import { startCluster } from ${JSON.stringify(harness)};
const c = await startCluster();
console.log(JSON.stringify({ dir: c.stateDir, pids: [c.etcd.pid, c.apiServer.pid, c.controllerManager.pid] }));
setInterval(() => {}, 1000);
`,
      );
      const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        const line: string = await new Promise((resolve, reject) => {
          let buf = '';
          child.stdout.on('data', (d: Buffer) => {
            buf += d.toString();
            if (buf.includes('\n')) resolve(buf.split('\n')[0]!);
          });
          child.once('exit', () => reject(new Error('owner exited before the cluster was ready')));
        });
        const { dir: stateDir, pids } = JSON.parse(line) as { dir: string; pids: number[] };
        assert.ok(pids.every(alive), 'cluster is running');
        child.kill(signal);
        assert.ok(await gone(pids), `control-plane processes die with their owner on ${signal}`);
        if (signal === 'SIGINT') {
          assert.ok(!existsSync(stateDir), 'the state folder is removed on Ctrl-C');
        } else {
          // Nothing can run in a SIGKILLed process; the next harness sweeps its folder.
          const next = await startCluster();
          await next.stop();
          assert.ok(!existsSync(stateDir), 'the next start sweeps the folder of a killed owner');
        }
      } finally {
        child.kill('SIGKILL');
        await rm(dir, { recursive: true, force: true });
      }
    });
  }
});
