/**
 * The README's client snippets, run as an app runs them: in the app container of an opted-in
 * pod on the real node (packages/harness/src/node.ts), with the ELECTOR_* env the webhook injected,
 * against the pod's elector, which the kubelet runs as a native sidecar; as leader and as
 * follower (`kubectl exec`, the snippets mounted from a ConfigMap). The SSE loops must print
 * the current leader on connect, and print it again after the elector container is killed
 * through the runtime and the kubelet restarts it (reconnect).
 *
 * The app image is the bookworm stand-in with Debian's curl, jq, python3 and
 * openjdk-17-jdk-headless and the Node 24 binary (packages/harness/src/image.ts
 * `ensureSnippetsImage`): sh, TypeScript, Python and Java (`java Leader.java`, the JDK's
 * single-file source launcher) run in it.
 */
import { AppsV1Api, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CONTAINER_NAME } from '../../../common/constants.ts';
import { ensureSnippetsImage } from '@lifelease/harness/image';
import { electingDeployment, installProduct, livePods, uninstallProduct } from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually, stretched } from '@lifelease/harness/wait';

const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');

/** The fenced block that follows `<!-- snippet: NAME -->` in the README. */
function snippet(name: string): string {
  const readme = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
  const m = new RegExp(
    `<!-- snippet: ${name.replace('.', '\\.')} -->\\n+\`\`\`\\w+\\n([\\s\\S]*?)\`\`\``,
  ).exec(readme);
  if (!m) throw new Error(`README.md has no snippet ${name}`);
  return m[1]!;
}

interface Lang {
  file: string;
  run: (file: string) => string[];
  /** Why it cannot run here, or false. */
  skip: string | false;
  /** Follows SSE after its first answer. */
  follows: boolean;
}
const LANGS: Lang[] = [
  { file: 'leader.sh', run: (f) => ['sh', f], skip: false, follows: false },
  { file: 'leader.ts', run: (f) => ['node', f], skip: false, follows: true },
  { file: 'leader.py', run: (f) => ['python3', '-u', f], skip: false, follows: true },
  { file: 'Leader.java', run: (f) => ['java', f], skip: false, follows: true },
];

let node: TestNode;
let ns: string;
let leader: V1Pod;
let follower: V1Pod;

/** `kubectl exec` of `argv` in the pod's app container (bounded by `timeout` inside); collects stdout lines. */
function runInPod(pod: V1Pod, argv: string[]) {
  const child = spawn(
    node.node.kubectl,
    ['-n', ns, 'exec', pod.metadata!.name!, '-c', 'app', '--', 'timeout', '300', ...argv],
    { env: { ...process.env, KUBECONFIG: node.kubeconfigPath }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
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
  const waitLines = async (n: number, timeoutMs = 30_000) => {
    const deadline = Date.now() + stretched(timeoutMs);
    while (lines.length < n) {
      if (Date.now() > deadline || child.exitCode !== null) {
        throw new Error(
          `expected ${n} lines, got ${JSON.stringify(lines)}; stderr: ${stderr.slice(-2000)} (exit ${child.exitCode})`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return lines;
  };
  // Ending kubectl ends the stream; `timeout` inside bounds the process if the runtime keeps it.
  return { child, lines, waitLines, kill: () => child.kill('SIGKILL') };
}

before(async () => {
  if (nodeSkip()) return;
  node = await sharedNode();
  const image = await ensureSnippetsImage();
  await node.importImage(image);
  await installProduct(node);
  ns = await node.createNamespace('snippets');
  const core = node.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespacedConfigMap({
    namespace: ns,
    body: {
      metadata: { name: 'snippets' },
      data: Object.fromEntries(LANGS.map((l) => [l.file, snippet(l.file)])),
    },
  });
  const deployment = electingDeployment(node, {
    name: 'worker',
    replicas: 2,
    terminationGracePeriodSeconds: 2,
    command: ['sh', '-c', 'trap "exit 0" TERM; while sleep 1; do :; done'],
  });
  const spec = deployment.spec!.template.spec!;
  spec.containers[0]!.image = image.name;
  // The JVM compiling Leader.java from source needs more than the helper's 128Mi (it was
  // OOM-killed, exit 137); each snippet runs alone in the app container.
  spec.containers[0]!.resources = { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '512Mi' } };
  spec.containers[0]!.volumeMounts = [{ name: 'snippets', mountPath: '/snippets', readOnly: true }];
  spec.volumes = [{ name: 'snippets', configMap: { name: 'snippets' } }];
  await node.kubeConfig
    .makeApiClient(AppsV1Api)
    .createNamespacedDeployment({ namespace: ns, body: deployment });
  // The leader from the Lease (its holder is the leader pod's name), once both pods are ready.
  const { pods, holder } = await eventually(
    'two ready pods and a Lease holder among them',
    async () => {
      const pods = (await livePods(node, ns, 'worker')).filter((p) =>
        p.status?.containerStatuses?.every((s) => s.ready),
      );
      if (pods.length !== 2) return undefined;
      const out = await node.kubectl([
        '-n',
        ns,
        'get',
        'lease',
        'worker',
        '-o',
        'jsonpath={.spec.holderIdentity}',
      ]);
      return pods.some((p) => p.metadata?.name === out) && { pods, holder: out };
    },
    180_000,
  );
  leader = pods.find((p) => p.metadata?.name === holder)!;
  follower = pods.find((p) => p.metadata?.name !== holder)!;
});

after(async () => {
  if (!node) return;
  await node.kubeConfig
    .makeApiClient(CoreV1Api)
    .deleteNamespace({ name: ns })
    .catch(() => {});
  await uninstallProduct(node);
  await node.release();
});

/** Kills the pod's elector container through the runtime; resolves once the kubelet restarted it. */
async function killElector(pod: V1Pod): Promise<void> {
  const core = node.kubeConfig.makeApiClient(CoreV1Api);
  const status = (p: V1Pod) => p.status?.initContainerStatuses?.find((s) => s.name === CONTAINER_NAME);
  const now = await core.readNamespacedPod({ name: pod.metadata!.name!, namespace: ns });
  const before = status(now)!;
  const id = before.containerID!.replace(/^containerd:\/\//, '');
  node.ctr(['tasks', 'kill', '--signal', 'SIGKILL', id]);
  await eventually(
    'the kubelet to restart the elector container',
    async () => {
      const s = status(await core.readNamespacedPod({ name: pod.metadata!.name!, namespace: ns }));
      return (s?.restartCount ?? 0) > (before.restartCount ?? 0) && s?.state?.running !== undefined;
    },
    60_000,
  );
}

describe(
  'README client snippets, in the app containers of pods on the real node',
  { skip: nodeSkip() },
  () => {
    for (const lang of LANGS) {
      test(`${lang.file}: leader and follower`, { skip: lang.skip }, async () => {
        const file = `/snippets/${lang.file}`;
        for (const [pod, role] of [
          [leader, 'leader'],
          [follower, 'follower'],
        ] as const) {
          const run = runInPod(pod, lang.run(file));
          try {
            const lines = await run.waitLines(lang.follows ? 2 : 1);
            assert.match(
              lines[0]!,
              role === 'leader' ? /^leader$/ : /^follower/,
              `${lang.file} in the ${role}`,
            );
            if (lang.follows) {
              const me = role === 'leader' ? 'me' : 'not me';
              assert.equal(lines[1], `leader is now ${leader.metadata!.name} (${me})`);
            }
          } finally {
            run.kill();
          }
        }
      });

      if (lang.follows) {
        test(
          `${lang.file}: the SSE loop reconnects after the kubelet restarts the elector`,
          { skip: lang.skip },
          async () => {
            const run = runInPod(follower, lang.run(`/snippets/${lang.file}`));
            try {
              await run.waitLines(2);
              await killElector(follower);
              // The restarted elector sends its state on the new stream: the current leader, or
              // first "nobody yet" (name "") when the client reconnects before it knows.
              const want = `leader is now ${leader.metadata!.name} (not me)`;
              await run.waitLines(3, 60_000);
              await eventually(
                'the leader again on the new stream',
                () => run.lines.slice(2).includes(want),
                60_000,
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
  },
);
