/**
 * The shipped alert rules and their promtool unit tests use the metric names the elector and
 * the webhook really export: a renamed metric fails here, not silently in a cluster.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { createMetrics as electorMetrics } from '../../../elector/observe.ts';
import { createMetrics as webhookMetrics } from '../../../webhook/metrics.ts';

const ROOT = path.resolve(import.meta.dirname, '../../..');
const FILES = ['charts/lifelease/files/prometheus-rules.yaml', 'test/fixtures/monitoring/rules.test.yaml'];

async function exported(): Promise<Set<string>> {
  const elector = electorMetrics({ confirmationAgeSeconds: () => 1, sseClients: () => 0 });
  const webhook = webhookMetrics({ defaultMetrics: false });
  const names = new Set<string>();
  for (const registry of [elector.registry, webhook.registry]) {
    for (const m of await registry.getMetricsAsJSON()) {
      names.add(m.name);
      if (String(m.type) === 'histogram')
        for (const s of ['_bucket', '_sum', '_count']) names.add(m.name + s);
    }
  }
  return names;
}

test('every elector_* and lifelease_webhook_* name in the rules and their tests is exported', async () => {
  const names = await exported();
  for (const file of FILES) {
    const text = readFileSync(path.join(ROOT, file), 'utf8');
    const used = new Set(text.match(/\b(elector_[a-z_]+|lifelease_webhook_[a-z_]+)\b/g) ?? []);
    assert.ok(used.size >= 5, `${file} uses our metrics`);
    for (const name of used) assert.ok(names.has(name), `${file}: ${name} is not a metric we export`);
  }
});

test('the check can fail: a name we do not export is caught', async () => {
  assert.equal((await exported()).has('elector_leader'), false);
});
