/**
 * SSE churn against a real elector process: 1,000 clients connect, read their first event
 * and go (half hang up abruptly, half after a clean close), on both loopbacks. Afterwards
 * the elector has no subscriber left and no more sockets than before.
 */
import assert from 'node:assert/strict';
import { readdirSync, readlinkSync } from 'node:fs';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ElectorProcess } from '@lifelease/harness/elector-process';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { TestElection, eventually } from './helpers.ts';

let cluster: TestCluster;
let e: TestElection | undefined;
before(async () => {
  cluster = await sharedCluster();
});
after(async () => {
  await e?.close();
  await cluster.release();
});

/** Sockets the process holds open (Linux: /proc/<pid>/fd links to socket:[inode]). */
function socketCount(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** Connects to /sse, waits for the first event, then hangs up (abruptly or not). */
function cycle(base: string, abrupt: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/sse`, { agent: false, timeout: 10_000 }, (res) => {
      if (res.statusCode !== 200) {
        reject(new Error(`status ${res.statusCode}`));
        return;
      }
      res.setEncoding('utf8');
      let got = '';
      res.on('data', (chunk: string) => {
        got += chunk;
        if (got.includes('\n\n')) {
          if (abrupt) res.socket.resetAndDestroy();
          else req.destroy();
          resolve();
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('no first event')));
    req.on('error', (err) => {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
    req.end();
  });
}

test('1,000 SSE connect/disconnect cycles: no subscriber and no socket left behind', async (t) => {
  e = await TestElection.create(cluster, 'el-sse');
  const pod = await e.pod('app-0');
  const el: ElectorProcess = await e.start(pod);
  await el.waitFor((r) => r.is_leader, 30_000, 'leadership');
  const pid = el.pid!;
  await sleep(500);
  const socketsBefore = socketCount(pid);
  const rssBefore = await el.metric('process_resident_memory_bytes');

  const total = 1000;
  const parallel = 25;
  const bases = el.apiUrls;
  let done = 0;
  const t0 = performance.now();
  for (let batch = 0; batch < total / parallel; batch++) {
    await Promise.all(
      Array.from({ length: parallel }, (_, i) => {
        const n = batch * parallel + i;
        return cycle(bases[n % bases.length]!, n % 2 === 0).then(() => done++);
      }),
    );
  }
  assert.equal(done, total);
  t.diagnostic(`${total} cycles in ${(performance.now() - t0).toFixed(0)} ms over ${bases.join(', ')}`);

  await eventually('no SSE client left', async () => (await el.metric('elector_sse_clients')) === 0, 5000);
  let socketsAfter = 0;
  await eventually(
    'sockets back to the baseline',
    () => {
      socketsAfter = socketCount(pid);
      // Slack of 2: the API watch may be reconnecting at this moment.
      return socketsAfter <= socketsBefore + 2;
    },
    5000,
  );
  const rssAfter = await el.metric('process_resident_memory_bytes');
  t.diagnostic(
    `sockets ${socketsBefore} -> ${socketsAfter}; RSS ${((rssBefore ?? 0) / 2 ** 20).toFixed(1)} -> ${((rssAfter ?? 0) / 2 ** 20).toFixed(1)} MiB`,
  );
  assert.equal((await el.get()).body.is_leader, true, 'still answering');
  assert.ok(el.running);
});
