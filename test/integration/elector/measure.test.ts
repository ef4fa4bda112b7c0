/**
 * The elector's figures for the README, measured on the local control plane. Slow (an idle
 * window of minutes), so it runs only when asked:
 *
 *   npm run build && ELECTOR_MEASURE=1 npm test -- test/integration/elector/measure.test.ts
 *
 * ELECTOR_MEASURE_IDLE_S (default 180) sets the idle window; ELECTOR_ENTRY the entry point
 * (default `dist/elector.js` when built, else `elector/main.ts`); ELECTOR_NODE_OPTIONS the
 * elector's NODE_OPTIONS (e.g. `--max-semi-space-size=1`).
 *
 * Besides printing the figures it checks the properties they rest on: every elector became
 * ready, every failover settled within 60 s, and an idle elector (leader or follower) stays
 * under the memory limit the webhook injects by default.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { deletePod, httpGet, type ElectorProcess } from '@lifelease/harness/elector-process';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { defaultOf, quantityValue } from '../../../webhook/config.ts';
import { TestElection, allAgree } from './helpers.ts';

const enabled = process.env['ELECTOR_MEASURE'] === '1';
const idleSeconds = Number(process.env['ELECTOR_MEASURE_IDLE_S'] ?? '180');
const root = path.resolve(import.meta.dirname, '../../..');
const entry =
  process.env['ELECTOR_ENTRY'] ??
  (existsSync(path.join(root, 'dist/elector.js')) ? 'dist/elector.js' : 'elector/main.ts');
const nodeOptions = process.env['ELECTOR_NODE_OPTIONS'];
const env: Record<string, string> = nodeOptions ? { NODE_OPTIONS: nodeOptions } : {};

let cluster: TestCluster;
const elections: TestElection[] = [];
before(async () => {
  if (enabled) cluster = await sharedCluster();
});
after(async () => {
  await Promise.all(elections.map((e) => e.close()));
  if (enabled) await cluster.release();
});

async function election(prefix: string): Promise<TestElection> {
  const e = await TestElection.create(cluster, prefix);
  elections.push(e);
  return e;
}

const rssMiB = (pid: number) =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `median ${s[Math.floor(s.length / 2)]!.toFixed(0)} ms (min ${s[0]!.toFixed(0)}, max ${s.at(-1)!.toFixed(0)}, n=${s.length})`;
};

async function readyAfterSpawn(el: ElectorProcess): Promise<number> {
  for (;;) {
    try {
      if ((await httpGet(`${el.probeUrl}/readyz`, 1000)).status === 200)
        return performance.now() - el.spawnedAt;
    } catch {
      // not yet
    }
    await sleep(5);
  }
}

async function requests(el: ElectorProcess): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const line of (await el.metrics()).split('\n')) {
    const m = /^elector_api_requests_total\{operation="([^"]+)"\} (\d+)/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

test(
  'figures: start-to-ready, failover, idle RSS, API requests per hour',
  { skip: !enabled && 'set ELECTOR_MEASURE=1' },
  async (t) => {
    t.diagnostic(`entry ${entry}${nodeOptions ? ` with NODE_OPTIONS=${nodeOptions}` : ''}`);

    // Start-to-ready: process spawn to /readyz 200, as a leader (creates the Lease) and as a follower.
    const leaderMs: number[] = [];
    const followerMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const e = await election('measure-start');
      const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
      const ea = await e.start(a, { entry, env });
      leaderMs.push(await readyAfterSpawn(ea));
      const eb = await e.start(b, { entry, env });
      followerMs.push(await readyAfterSpawn(eb));
      await e.close();
    }
    assert.equal(leaderMs.length, 5);
    assert.equal(followerMs.length, 5);
    t.diagnostic(`start-to-ready as leader: ${stats(leaderMs)}`);
    t.diagnostic(`start-to-ready as follower: ${stats(followerMs)}`);

    // Failover: leader pod deleted to every remaining candidate answering the new leader.
    const failoverMs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const e = await election('measure-failover');
      const pods = await Promise.all(['app-0', 'app-1', 'app-2'].map((n) => e.pod(n)));
      const electors = await Promise.all(pods.map((p) => e.start(p, { entry, env })));
      const first = await allAgree(electors);
      const old = electors.find((x) => x.hostname === first)!;
      const rest = electors.filter((x) => x !== old);
      await old.kill();
      const t0 = performance.now();
      await deletePod(e.kc, old.pod);
      for (;;) {
        assert.ok(performance.now() - t0 < 60_000, 'failover did not settle within 60 s');
        const answers = await Promise.all(rest.map((x) => x.get()));
        const names = new Set(answers.map((a) => a.body.name));
        if (names.size === 1 && !names.has('') && !names.has(first)) break;
        await sleep(5);
      }
      failoverMs.push(performance.now() - t0);
      await e.close();
    }
    t.diagnostic(`failover (default settings, GC running): ${stats(failoverMs)}`);

    // Idle: RSS and API requests over the idle window, leader and follower, default settings.
    const e = await election('measure-idle');
    const [a, b] = await Promise.all([e.pod('app-a'), e.pod('app-b')]);
    const ea = await e.start(a, { entry, env });
    await ea.waitFor((r) => r.is_leader);
    const eb = await e.start(b, { entry, env });
    await eb.waitFor((r) => r.name === 'app-a');
    await sleep(5000);
    const [ra0, rb0] = await Promise.all([requests(ea), requests(eb)]);
    const t0 = performance.now();
    await sleep(idleSeconds * 1000);
    const [ra1, rb1] = await Promise.all([requests(ea), requests(eb)]);
    const hours = (performance.now() - t0) / 3_600_000;
    const rate = (r0: Record<string, number>, r1: Record<string, number>) => {
      const total = Object.keys(r1).reduce((sum, k) => sum + ((r1[k] ?? 0) - (r0[k] ?? 0)), 0);
      const parts = Object.keys(r1)
        .filter((k) => (r1[k] ?? 0) > (r0[k] ?? 0))
        .map((k) => `${k} ${(((r1[k] ?? 0) - (r0[k] ?? 0)) / hours).toFixed(0)}`);
      return `${(total / hours).toFixed(0)}/h (${parts.join(', ')})`;
    };
    const [leaderRss, followerRss] = [rssMiB(ea.pid!), rssMiB(eb.pid!)];
    t.diagnostic(
      `idle RSS after ${idleSeconds} s: leader ${leaderRss.toFixed(1)} MiB, follower ${followerRss.toFixed(1)} MiB`,
    );
    const limitMiB = quantityValue(defaultOf('electorMemoryLimit'))! / 2 ** 20;
    for (const [who, rss] of [
      ['leader', leaderRss],
      ['follower', followerRss],
    ] as const) {
      assert.ok(
        rss > 0 && rss < limitMiB,
        `idle ${who} RSS ${rss.toFixed(1)} MiB is not under the ${limitMiB} MiB limit`,
      );
    }
    t.diagnostic(`API requests in steady state: leader ${rate(ra0, ra1)}; follower ${rate(rb0, rb1)}`);
  },
);
