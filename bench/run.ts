/**
 * `npm run bench`: builds the bundles, runs every benchmark script in sequence (each prints
 * its tables), and writes one JSON report, `bench/results/<date>.json`, with the machine,
 * the commit, each script's command, figures, duration and the load average before and after.
 *
 *   npm run bench                      # all of them (about 25 minutes on 2 cores)
 *   npm run bench -- failover scale    # some of them (replacing theirs in the day's report)
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BENCH_DIR, loadAverage, machine, REPO_ROOT } from './lib.ts';

const ALL = [
  'control-plane',
  'webhook',
  'pod-create',
  'failover',
  'api-cost',
  'footprint',
  'scale',
  'side-by-side',
];
const wanted = process.argv.slice(2);
const unknown = wanted.filter((w) => !ALL.includes(w));
if (unknown.length > 0)
  throw new Error(`unknown benchmark(s) ${unknown.join(', ')}; known: ${ALL.join(', ')}`);
const scripts = wanted.length > 0 ? ALL.filter((s) => wanted.includes(s)) : ALL;

execFileSync(process.execPath, ['scripts/build.ts'], {
  cwd: REPO_ROOT,
  stdio: ['ignore', 'ignore', 'inherit'],
});
const commit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
  cwd: REPO_ROOT,
  encoding: 'utf8',
}).trim();
const dirty = execFileSync('git', ['status', '--porcelain', '--', 'bench', 'elector', 'webhook', 'common'], {
  cwd: REPO_ROOT,
  encoding: 'utf8',
}).trim();
const reportDir = mkdtempSync(path.join(tmpdir(), 'lifelease-bench-'));
const started = new Date();
const results: Record<string, unknown> = {};
let failed = 0;

for (const name of scripts) {
  console.log(`\n=== ${name} ===`);
  const before = loadAverage();
  const t0 = performance.now();
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [path.join(BENCH_DIR, `${name}.ts`)], {
      cwd: REPO_ROOT,
      stdio: 'inherit',
      env: { ...process.env, BENCH_REPORT_DIR: reportDir },
    });
    child.on('close', (c) => resolve(c ?? 1));
  });
  let report: unknown = null;
  try {
    report = JSON.parse(readFileSync(path.join(reportDir, `${name}.json`), 'utf8'));
  } catch {
    // the script failed before writing it
  }
  if (code !== 0) failed++;
  results[name] = {
    exitCode: code,
    seconds: Number(((performance.now() - t0) / 1000).toFixed(1)),
    loadAverageBefore: before,
    loadAverageAfter: loadAverage(),
    report,
  };
}
rmSync(reportDir, { recursive: true, force: true });

const out = path.join(BENCH_DIR, 'results', `${started.toISOString().slice(0, 10)}.json`);
mkdirSync(path.dirname(out), { recursive: true });
const run = {
  command: `npm run bench${wanted.length > 0 ? ` -- ${wanted.join(' ')}` : ''}`,
  startedAt: started.toISOString(),
  finishedAt: new Date().toISOString(),
  commit: dirty ? `${commit} (with local changes)` : commit,
};
// A run of some benchmarks replaces theirs in the day's report and keeps the others.
let previous: { runs?: unknown[]; results?: Record<string, unknown> } = {};
if (wanted.length > 0) {
  try {
    previous = JSON.parse(readFileSync(out, 'utf8')) as typeof previous;
  } catch {
    // no report yet today
  }
}
for (const r of Object.values(results))
  Object.assign(r as object, { run: run.startedAt, commit: run.commit });
writeFileSync(
  out,
  `${JSON.stringify(
    {
      runs: [...(previous.runs ?? []), run],
      machine: machine(),
      results: { ...(previous.results ?? {}), ...results },
    },
    null,
    2,
  )}\n`,
);
console.log(
  `\nreport: ${path.relative(REPO_ROOT, out)}${failed > 0 ? ` (${failed} benchmark(s) failed)` : ''}`,
);
process.exitCode = failed > 0 ? 1 : 0;
