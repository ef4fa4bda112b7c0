/**
 * `npm run chaos`: the long fault and abuse suite (the test command runs a short sample).
 *
 *   npm run chaos                          # everything: 100,000 fuzz cases, the abuse, 300 schedules (about 75 min on 2 cores)
 *   npm run chaos -- --schedules=20        # fewer fault schedules
 *   npm run chaos -- --seed=123 --schedules=1   # replay one schedule (printed on failure)
 *   npm run chaos -- --only=elections|fuzz|abuse
 *   npm run chaos -- --fuzz-cases=50000 --budget=30m
 *   LIFELEASE_NODE_WAIT=3600 npm run chaos -- --only=elections --real-node --schedules=10
 *                                          # the schedules on a real node (root; the host's one node)
 *
 * Exit 0 when nothing failed; 1 otherwise. Failing schedules leave their histories and
 * elector logs under the artifacts folder it prints.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runAbuse } from './abuse.ts';
import { runWebhookFuzz } from './fuzz.ts';
import { statsByType, statsTable } from './report.ts';
import { ChaosEnv, DEFAULT_CHAOS, type ScheduleResult } from './runner.ts';
import { DEFAULT_PLAN, describeSchedule, planSchedule } from './schedule.ts';
import { Rng } from './rng.ts';

const { values } = parseArgs({
  options: {
    schedules: { type: 'string', default: '300' },
    seed: { type: 'string' },
    budget: { type: 'string', default: '90m' },
    'fuzz-cases': { type: 'string', default: '100000' },
    only: { type: 'string' },
    'real-node': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log(
    'usage: npm run chaos -- [--schedules=N] [--seed=S] [--budget=90m] [--fuzz-cases=N] [--only=elections|fuzz|abuse] [--real-node]',
  );
  process.exit(0);
}

function duration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) throw new Error(`bad duration ${text}`);
  const f = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Number(m[1]) * f;
}

const t0 = performance.now();
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const log = (m: string) => console.log(`[${secs(performance.now() - t0)}] ${m}`);
const only = values.only;
const budgetMs = duration(values.budget);
const count = Number(values.schedules);
const baseSeed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 32);
let failed = false;

async function elections(): Promise<void> {
  const artifactsDir = mkdtempSync(path.join(tmpdir(), 'lifelease-chaos-'));
  log(
    `fault schedules: ${count}, base seed ${baseSeed}, budget ${values.budget}; artifacts in ${artifactsDir}`,
  );
  const realNode = values['real-node'];
  if (realNode) log('on a real node: kubelet + containerd + runc + CNI, the project image');
  const env = await ChaosEnv.start({
    ...DEFAULT_CHAOS,
    artifactsDir,
    realNode,
    log: realNode ? (m) => log(`  ${m}`) : () => {},
  });
  const results: ScheduleResult[] = [];
  // One schedule's seed is the base seed itself (so --seed=S --schedules=1 replays S);
  // the rest derive from it.
  const seeds = new Rng(baseSeed);
  try {
    for (let i = 0; i < count; i++) {
      if (performance.now() - t0 > budgetMs) {
        log(`time budget spent after ${i} schedules`);
        break;
      }
      const seed = i === 0 ? baseSeed >>> 0 : seeds.fork();
      // On the real node every pod is a real elector (a Node.js process, its shim, a portal
      // into its network): at most 6 at once on 2 cores.
      const schedule = planSchedule(seed, realNode ? { ...DEFAULT_PLAN, maxPods: 6 } : DEFAULT_PLAN);
      const result = await env.run(schedule);
      results.push(result);
      const faults = result.faults.map((f) => f.type).join(', ');
      if (result.ok) {
        log(
          `schedule ${i + 1}/${count} seed ${seed}: ok (${schedule.pods} pods; ${faults}) ${secs(result.durationMs)}`,
        );
      } else {
        failed = true;
        log(`schedule ${i + 1}/${count} seed ${seed}: FAILED\n${describeSchedule(schedule)}`);
        for (const p of result.problems) log(`  ${p}`);
        log(`  replay: npm run chaos -- --only=elections --seed=${seed} --schedules=1`);
        log(`  artifacts: ${result.artifacts}`);
      }
    }
  } finally {
    if (env.stats.serviceAccountsCreated > 0)
      log(
        `the runner created ${env.stats.serviceAccountsCreated} default ServiceAccounts the controller was slow to make`,
      );
    await env.stop();
  }
  const faults = results.flatMap((r) => r.faults);
  const bad = results.filter((r) => !r.ok);
  log(
    `${results.length} schedules, ${faults.length} faults injected (${faults.filter((f) => f.fault.kind === 'storm').length} storms of two), ` +
      `${results.reduce((s, r) => s + r.pods, 0)} pods, ${results.reduce((s, r) => s + r.observations, 0)} observations; ${bad.length} failed`,
  );
  console.log(`\nPer fault type (storms grouped):\n${statsTable(statsByType(results))}`);
  console.log(
    `\nPer fault type (storms split by their parts):\n${statsTable(statsByType(results, 'type'))}\n`,
  );
  if (bad.length === 0) rmSync(artifactsDir, { recursive: true, force: true });
}

async function fuzz(): Promise<void> {
  const cases = Number(values['fuzz-cases']);
  log(`webhook fuzzing: ${cases} cases`);
  const r = await runWebhookFuzz({ cases, seed: baseSeed, log });
  log(`webhook fuzzing: ${r.cases} cases run, ${r.failures.length} failures`);
  for (const f of r.failures) log(`  ${f}`);
  if (r.failures.length > 0) failed = true;
}

async function abuse(): Promise<void> {
  const r = await runAbuse({ log, scale: 'full' });
  for (const line of r.summary) log(line);
  if (r.failures.length > 0) {
    failed = true;
    for (const f of r.failures) log(`  FAILED: ${f}`);
  }
}

// A promise of the runner that rejected with no one waiting is a bug of the runner: it
// fails the run, but the schedules go on and the report is still printed.
process.on('unhandledRejection', (err) => {
  failed = true;
  log(`FAILED: a runner bug (unhandled rejection): ${(err as Error)?.stack ?? String(err)}`);
});
// Ctrl-C or SIGTERM: exit, so the exit hooks stop every process this run started.
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => process.exit(130));
mkdirSync(tmpdir(), { recursive: true });
if (!only || only === 'fuzz') await fuzz();
if (!only || only === 'abuse') await abuse();
if (!only || only === 'elections') await elections();
log(failed ? 'FAILED' : 'all passed');
process.exit(failed ? 1 : 0);
