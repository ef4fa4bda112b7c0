/**
 * Long watches against a real kube-apiserver (the default fencing bound, 60 s): the electors'
 * Lease watches last 5-10 minutes, so only the server's bookmarks (about one a minute per
 * watch) confirm the view between them. Over 150 s (two bookmark periods past the second
 * watch's start) a leader and a follower must never be fenced (`unknown`), no watch may be
 * abandoned as stalled, and no Lease watch may restart (none lasts under 302 s).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { TestElection, allAgree } from './helpers.ts';

let cluster: TestCluster;
let e: TestElection | undefined;
before(async () => {
  cluster = await sharedCluster();
});
after(async () => {
  await e?.close();
  await cluster.release();
});

test('bookmarks alone keep the view confirmed: never fenced, no stall, no restart in 150 s', async () => {
  e = await TestElection.create(cluster, 'long-watches');
  const electors = [await e.start(await e.pod('app-0')), await e.start(await e.pod('app-1'))];
  await allAgree(electors, 60_000);
  const restarts = async () => {
    let sum = 0;
    for (const el of electors) {
      for (const reason of ['closed', 'stalled', 'error', 'expired']) {
        sum += (await el.metric(`elector_watch_restarts_total{reason="${reason}"}`)) ?? 0;
      }
    }
    return sum;
  };
  const restartsBefore = await restarts();
  let maxAgeS = 0;
  const states = new Set<string>();
  const end = Date.now() + 150_000; // a bounded window; not a wait for an outcome
  while (Date.now() < end) {
    for (const el of electors) {
      states.add((await el.get()).body.state);
      maxAgeS = Math.max(maxAgeS, (await el.metric('elector_confirmation_age_seconds')) ?? Infinity);
    }
    await sleep(1000);
  }
  assert.ok(!states.has('unknown'), `an elector was fenced: states ${[...states].join(', ')}`);
  assert.equal(await restarts(), restartsBefore, 'a watch restarted (stalled, failed or ended early)');
  assert.ok(maxAgeS < 60, `confirmation age reached ${maxAgeS} s`);
  console.log(`# long watches: largest confirmation age ${maxAgeS.toFixed(1)} s over 150 s`);
});
