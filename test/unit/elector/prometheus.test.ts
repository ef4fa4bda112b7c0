/**
 * elector/prometheus.ts: the text exposition format 0.0.4 exactly (HELP/TYPE lines, label
 * escaping, default labels, histogram buckets), and the process metrics under prom-client's
 * names, types and help texts (dashboards and the abuse suite read them).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { collectDefaultMetrics, Registry as PromRegistry } from 'prom-client';
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  escapeLabelValue,
  registerProcessMetrics,
} from '../../../elector/prometheus.ts';

describe('text format', () => {
  test('HELP, TYPE, samples, label escaping, default labels after the own ones, a blank line between families', async () => {
    const r = new Registry();
    r.setDefaultLabels({ election: 'a"b\\c\nd' });
    const c = r.register(
      new Counter({ name: 'x_total', help: 'Counts\\things\nhere.', labelNames: ['result'] }),
    );
    const g = r.register(new Gauge({ name: 'y', help: 'A gauge.' }));
    c.inc({ result: 'won' });
    c.inc({ result: 'won' }, 2);
    c.inc({ result: 'lost' }, 0);
    g.set(-1.5);
    assert.equal(
      await r.metrics(),
      [
        '# HELP x_total Counts\\\\things\\nhere.',
        '# TYPE x_total counter',
        'x_total{result="won",election="a\\"b\\\\c\\nd"} 3',
        'x_total{result="lost",election="a\\"b\\\\c\\nd"} 0',
        '',
        '# HELP y A gauge.',
        '# TYPE y gauge',
        'y{election="a\\"b\\\\c\\nd"} -1.5',
        '',
      ].join('\n'),
    );
    assert.equal(r.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  });

  test('histograms: cumulative buckets with le last, +Inf, _sum and _count; special values', async () => {
    const r = new Registry();
    const h = r.register(
      new Histogram({ name: 'd_seconds', help: 'D.', labelNames: ['kind'], buckets: [0.1, 1] }),
    );
    h.observe({ kind: 'minor' }, 0.05);
    h.observe({ kind: 'minor' }, 0.5);
    h.observe({ kind: 'minor' }, 5);
    const g = r.register(new Gauge({ name: 'z', help: 'Z.' }));
    g.set(NaN);
    assert.equal(
      await r.metrics(),
      [
        '# HELP d_seconds D.',
        '# TYPE d_seconds histogram',
        'd_seconds_bucket{kind="minor",le="0.1"} 1',
        'd_seconds_bucket{kind="minor",le="1"} 2',
        'd_seconds_bucket{kind="minor",le="+Inf"} 3',
        'd_seconds_sum{kind="minor"} 5.55',
        'd_seconds_count{kind="minor"} 3',
        '',
        '# HELP z Z.',
        '# TYPE z gauge',
        'z NaN',
        '',
      ].join('\n'),
    );
  });

  test('misuse is an error: an undeclared label, a decreasing counter, a name twice', () => {
    const r = new Registry();
    const c = r.register(new Counter({ name: 'a_total', help: 'A.', labelNames: ['x'] }));
    assert.throws(() => c.inc({ y: '1' }), /unknown label y/);
    assert.throws(() => c.inc({ x: '1' }, -1), /cannot decrease/);
    assert.throws(() => r.register(new Counter({ name: 'a_total', help: 'A.' })), /already registered/);
    assert.equal(escapeLabelValue('a\\"\n'), 'a\\\\\\"\\n');
  });
});

describe('process metrics', () => {
  test("the same families, types and help texts as prom-client's collectDefaultMetrics", async () => {
    const ours = new Registry();
    registerProcessMetrics(ours, { eventLoopSampleMs: 1000 });
    const theirs = new PromRegistry();
    collectDefaultMetrics({ register: theirs, eventLoopMonitoringPrecision: 1000 });
    const shape = (ms: { name: string; type: unknown; help: string }[]) =>
      ms.map((m) => `${m.name} ${String(m.type)} ${m.help}`).sort();
    assert.deepEqual(shape(ours.getMetricsAsJSON()), shape(await theirs.getMetricsAsJSON()));
    const text = await ours.metrics();
    for (const line of [
      /^process_resident_memory_bytes \d+$/m,
      /^process_cpu_seconds_total [\d.e-]+$/m,
      /^nodejs_heap_size_used_bytes \d+$/m,
      /^nodejs_external_memory_bytes \d+$/m,
      /^nodejs_heap_space_size_used_bytes\{space="old"\} \d+$/m,
      /^nodejs_version_info\{version="v[\d.]+",major="\d+",minor="\d+",patch="\d+"\} 1$/m,
      /^process_open_fds \d+$/m,
    ])
      assert.match(text, line);
  });
});
