/**
 * The metrics of an idle elector cost no CPU to speak of: the process is not woken a hundred
 * times a second by the event-loop lag sampler (prom-client's default 10 ms timer).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const OBSERVE = path.resolve(import.meta.dirname, '../../../elector/observe.ts');

test('an idle process with the elector metrics wakes up only a few times a second', () => {
  // Voluntary context switches of the process over 2 s, with the metrics registered.
  const script = `
    import { readFileSync } from 'node:fs';
    const { createMetrics } = await import(${JSON.stringify(OBSERVE)});
    createMetrics({ confirmationAgeSeconds: () => undefined, sseClients: () => 0 });
    const switches = () => Number(/voluntary_ctxt_switches:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
    await new Promise((r) => setTimeout(r, 300));
    const before = switches();
    setTimeout(() => console.log((switches() - before) / 2), 2000);
  `;
  const perSecond = Number(
    execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }).trim(),
  );
  assert.ok(perSecond < 20, `${perSecond} wakeups per second (the 10 ms sampler makes about 100)`);
});
