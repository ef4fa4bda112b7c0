/**
 * The shipped alert rules (charts/lifelease/files/prometheus-rules.yaml, equal to the
 * PrometheusRule of manifests/components/monitoring: see test/integration/system/chart.test.ts)
 * checked by the real promtool, built from the Go module proxy:
 * - `promtool check rules` parses every rule;
 * - `promtool test rules` runs test/fixtures/monitoring/rules.test.yaml, one test group at a time;
 * - every alert has a case where it fires and one where it stays silent;
 * - a broken rule fails its unit test (the tests can fail).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { resolvePlatformTool } from '@lifelease/harness/binaries';
import { REPO_ROOT } from '@lifelease/harness/kubelet';

const RULES = path.join(REPO_ROOT, 'charts/lifelease/files/prometheus-rules.yaml');
const TESTS = path.join(REPO_ROOT, 'test/fixtures/monitoring/rules.test.yaml');

let promtool: string;
const run = async (args: string[]): Promise<{ code: number; out: string }> => {
  try {
    const { stdout, stderr } = await promisify(execFile)(promtool, args, { maxBuffer: 8 * 1024 * 1024 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : 1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
};

const ruleText = readFileSync(RULES, 'utf8');
const alerts = [...ruleText.matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1]!);
const testText = readFileSync(TESTS, 'utf8');
const groups = [...testText.matchAll(/^ {2}- name: (.+)$/gm)].map((m) => m[1]!);

/** For each alert: does some case expect it to fire, and some case expect silence? */
function coverage(): Map<string, { fires: boolean; silent: boolean }> {
  const out = new Map(alerts.map((a) => [a, { fires: false, silent: false }]));
  const cases = testText.split(/^\s*- eval_time: /m).slice(1);
  for (const c of cases) {
    const name = /alertname: (\S+)/.exec(c)?.[1];
    const entry = name ? out.get(name) : undefined;
    assert.ok(entry, `a case tests an alert that does not exist: ${name}`);
    if (/exp_alerts: \[\]/.test(c)) entry.silent = true;
    else entry.fires = true;
  }
  return out;
}

before(async () => {
  promtool = await resolvePlatformTool('promtool');
});

describe('alert rules, checked by promtool', () => {
  test('promtool check rules: every rule parses', async () => {
    const { code, out } = await run(['check', 'rules', RULES]);
    assert.equal(code, 0, out);
    assert.match(out, new RegExp(`SUCCESS: ${alerts.length} rules found`));
    assert.equal(alerts.length, 10);
  });

  test('every alert has a firing and a silent unit test', () => {
    for (const [alert, c] of coverage()) {
      assert.ok(c.fires, `${alert} has no case where it fires`);
      assert.ok(c.silent, `${alert} has no case where it stays silent`);
    }
  });

  for (const group of groups) {
    test(`promtool test rules: ${group}`, async () => {
      const escaped = group.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      const { code, out } = await run(['test', 'rules', `--run=^${escaped}$`, TESTS]);
      assert.equal(code, 0, out);
      assert.match(out, /SUCCESS/);
    });
  }

  describe('the unit tests can fail', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'lifelease-rules-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    test('an alert that waits 1 minute instead of 5 fails its case', async () => {
      const broken = ruleText.replace(
        /(expr: max by \(namespace, election\) \(elector_is_leader\) == 0\n\s*for: )5m/,
        '$11m',
      );
      assert.notEqual(broken, ruleText);
      writeFileSync(path.join(dir, 'rules.yaml'), broken);
      writeFileSync(
        path.join(dir, 'rules.test.yaml'),
        testText.replace('../../../charts/lifelease/files/prometheus-rules.yaml', 'rules.yaml'),
      );
      const { code, out } = await run(['test', 'rules', path.join(dir, 'rules.test.yaml')]);
      assert.notEqual(code, 0);
      assert.match(out, /alertname: LifeleaseElectionWithoutLeader, time: 4m/);
    });
  });
});
