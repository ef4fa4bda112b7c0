/**
 * The README's client snippets, run as an app would run them: inside a pod's own network
 * and hostname (nsenter into the pod sandbox), with the ELECTOR_* env the webhook injected,
 * against the pod's real elector; as leader and as follower. The SSE loops must print the
 * current leader on connect, and print it again after the elector restarts (reconnect).
 * Python and Java run when their runtimes are installed (skipped otherwise, visibly).
 */
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startCluster, type Cluster } from '../../harness/cluster.ts';
import { ensureBuilt, Kubelet, REPO_ROOT } from '../../harness/kubelet.ts';
import type { PodSandbox } from '../../harness/pod-sandbox.ts';
import { installWebhook, type InstalledWebhook } from '../../harness/system.ts';
import { eventually } from '../../harness/wait.ts';

/** The fenced block that follows `<!-- snippet: NAME -->` in the README. */
function snippet(name: string): string {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const m = new RegExp(
    `<!-- snippet: ${name.replace('.', '\\.')} -->\\n+\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``,
  ).exec(readme);
  if (!m) throw new Error(`README.md has no snippet ${name}`);
  return m[1]!;
}

const has = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

interface Lang {
  file: string;
  run: (file: string) => string[];
  available: boolean;
  /** Follows SSE after its first answer. */
  follows: boolean;
}
const LANGS: Lang[] = [
  { file: 'leader.sh', run: (f) => ['sh', f], available: has('curl') && has('jq'), follows: false },
  { file: 'leader.ts', run: (f) => [process.execPath, f], available: true, follows: true },
  { file: 'leader.py', run: (f) => ['python3', '-u', f], available: has('python3'), follows: true },
  { file: 'Leader.java', run: (f) => ['java', f], available: has('java'), follows: true },
];

let cluster: Cluster;
let webhook: InstalledWebhook;
let kubelet: Kubelet;
let dir: string;
let pods: V1Pod[];
let leader: PodSandbox;
let follower: PodSandbox;

/** The app container's ELECTOR_* env, as the webhook injected it. */
function electorEnv(pod: V1Pod): Record<string, string> {
  const app = pod.spec!.containers.find((c) => c.name === 'app')!;
  return Object.fromEntries(
    (app.env ?? []).filter((e) => e.name.startsWith('ELECTOR_')).map((e) => [e.name, e.value!]),
  );
}

/** Starts `argv` inside the pod's network and UTS namespaces; collects stdout lines. */
function runInPod(sandbox: PodSandbox, pod: V1Pod, argv: string[]) {
  const child = spawn('nsenter', ['-t', String(sandbox.pid), '-n', '-u', '--', ...argv], {
    env: {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin',
      HOME: dir,
      HOSTNAME: sandbox.hostname,
      ...electorEnv(pod),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let stderr = '';
  let buf = '';
  child.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    const parts = buf.split('\n');
    buf = parts.pop()!;
    lines.push(...parts);
  });
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const waitLines = async (n: number, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    while (lines.length < n) {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(
          `expected ${n} lines, got ${JSON.stringify(lines)}; stderr: ${stderr.slice(-2000)}\n` +
            `pod ${sandbox.hostname} running: ${sandbox.running}; its elector's log:\n${sandbox.logs().slice(-3000)}`,
        );
      }
      await sleep(50);
    }
    return lines;
  };
  return { child, lines, waitLines, kill: () => child.kill('SIGKILL') };
}

before(async () => {
  ensureBuilt();
  dir = mkdtempSync(path.join(tmpdir(), 'lifelease-snippets-'));
  for (const l of LANGS) writeFileSync(path.join(dir, l.file), snippet(l.file));
  cluster = await startCluster();
  webhook = await installWebhook(cluster, { timeoutMs: 180_000 });
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: 'app' } } });
  for (let i = 0; ; i++) {
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: 'app' });
      break;
    } catch (err) {
      if (i > 300) throw err;
      await sleep(50);
    }
  }
  kubelet = new Kubelet({ cluster, namespace: 'app', container: 'elector' });
  kubelet.start();
  await cluster.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace: 'app',
    body: {
      metadata: { name: 'worker' },
      spec: {
        replicas: 2,
        selector: { matchLabels: { app: 'worker' } },
        template: {
          metadata: { labels: { app: 'worker', leaderElection: 'true' } },
          spec: { containers: [{ name: 'app', image: 'example.invalid/worker' }] },
        },
      },
    },
  });
  for (let i = 0; ; i++) {
    const boxes = [...kubelet.sandboxes.values()];
    const answers = await Promise.all(
      boxes.map((b) =>
        b.get(4040, '/').then(
          (r) => (r.status === 200 ? (JSON.parse(r.body) as { is_leader: boolean }) : undefined),
          () => undefined,
        ),
      ),
    );
    if (
      boxes.length === 2 &&
      answers.every((a) => a !== undefined) &&
      answers.filter((a) => a.is_leader).length === 1
    ) {
      leader = boxes[answers.findIndex((a) => a.is_leader)]!;
      follower = boxes[answers.findIndex((a) => !a.is_leader)]!;
      break;
    }
    if (i > 1800) throw new Error('no leader elected in 3 minutes');
    await sleep(100);
  }
  pods = (await core.listNamespacedPod({ namespace: 'app' })).items;
});

after(async () => {
  await kubelet?.stop();
  await webhook?.stop();
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const podOf = (s: PodSandbox) => pods.find((p) => p.metadata?.uid === s.pod.metadata?.uid)!;

describe('README client snippets, inside the pods', () => {
  for (const lang of LANGS) {
    test(
      `${lang.file}: leader and follower`,
      { skip: lang.available ? false : `${lang.file}: runtime not installed` },
      async () => {
        const file = path.join(dir, lang.file);
        for (const [sandbox, role] of [
          [leader, 'leader'],
          [follower, 'follower'],
        ] as const) {
          const run = runInPod(sandbox, podOf(sandbox), lang.run(file));
          try {
            const lines = await run.waitLines(lang.follows ? 2 : 1);
            assert.match(
              lines[0]!,
              role === 'leader' ? /^leader$/ : /^follower/,
              `${lang.file} in the ${role}`,
            );
            if (lang.follows) {
              const me = role === 'leader' ? 'me' : 'not me';
              assert.equal(lines[1], `leader is now ${leader.hostname} (${me})`);
            }
          } finally {
            run.kill();
          }
        }
      },
    );

    if (lang.follows) {
      test(
        `${lang.file}: the SSE loop reconnects after the elector restarts`,
        { skip: lang.available ? false : `${lang.file}: runtime not installed` },
        async () => {
          const run = runInPod(follower, podOf(follower), lang.run(path.join(dir, lang.file)));
          try {
            await run.waitLines(2);
            follower.restartContainer();
            // The restarted elector sends its state on the new stream: the current leader, or
            // first "nobody yet" (name "") when the client reconnects before it knows.
            const want = `leader is now ${leader.hostname} (not me)`;
            await run.waitLines(3, 40_000);
            await eventually(
              'the leader again on the new stream',
              () => run.lines.slice(2).includes(want),
              40_000,
            );
            const after = run.lines.slice(2);
            assert.ok(
              after.every((l) => l === want || l === 'leader is now  (not me)'),
              after.join('\n'),
            );
          } finally {
            run.kill();
          }
        },
      );
    }
  }
});
