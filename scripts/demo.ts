/**
 * `npm run demo`: the whole story on a real local control plane, nothing faked.
 *
 * The webhook is installed from manifests/ as a cluster admin would; a Deployment of 3
 * opted-in replicas is created; the real deployment/replica-set controllers make its pods,
 * the API server sends them through the webhook, and for each pod the elector container
 * runs exactly as injected (its args, its env, the pod's downward-API values, its own
 * hostname and loopback, a token bound to the pod) by a kubelet stand-in. Then the leader's
 * pod is deleted, and the failover is timed.
 */
import './require-node.ts';
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  type V1Container,
  type V1Pod,
} from '@kubernetes/client-node';
import { execFileSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { ANNOTATION_INJECTED, CONTAINER_NAME } from '../common/constants.ts';
import { startCluster, type Cluster } from '../test/harness/cluster.ts';
import { Kubelet, REPO_ROOT } from '../test/harness/kubelet.ts';
import type { PodSandbox } from '../test/harness/pod-sandbox.ts';
import { installWebhook, type InstalledWebhook } from '../test/harness/system.ts';
import { onSseEvents } from '../test/harness/sse.ts';

const NS = 'demo';
const APP = 'batch-worker';
const tty = process.stdout.isTTY;
const c = (code: string) => (s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = c('1');
const dim = c('2');
const green = c('32');
const cyan = c('36');
const yellow = c('33');
const t0 = performance.now();
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

let step = 0;
const STEPS = 9;
function heading(text: string): void {
  step++;
  console.log(`\n${bold(`[${step}/${STEPS}]`)} ${bold(text)} ${dim(`(t+${secs(performance.now() - t0)})`)}`);
}
const say = (text = '') => console.log(`      ${text}`);

interface Answer {
  name?: string;
  last_update?: string;
  is_leader?: boolean;
  state?: string;
}

async function ask(sandbox: PodSandbox, port: number): Promise<Answer | undefined> {
  try {
    const res = await sandbox.get(port, '/', 1000);
    return JSON.parse(res.body) as Answer;
  } catch {
    return undefined;
  }
}

function electorOf(pod: V1Pod): V1Container {
  const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  const found = all.find((x) => x.name === CONTAINER_NAME);
  if (!found)
    throw new Error(`pod ${pod.metadata?.name} has no ${CONTAINER_NAME} container: was it injected?`);
  return found;
}

function electionPort(pod: V1Pod): number {
  const arg = electorOf(pod).args?.find((a) => a.startsWith('--http='));
  return Number(arg?.split(':').at(-1) ?? 4040);
}

function showInjected(pod: V1Pod): void {
  const e = electorOf(pod);
  const native = pod.spec?.initContainers?.some(
    (x) => x.name === CONTAINER_NAME && x.restartPolicy === 'Always',
  );
  say(`${cyan('pod')} ${pod.metadata?.name}`);
  say(
    `  ${cyan(native ? 'initContainers' : 'containers')}: ${bold(e.name)} ${dim(native ? '(native sidecar: restartPolicy Always)' : '')}`,
  );
  say(`    image: ${e.image}`);
  say(`    args: ${JSON.stringify(e.args)}`);
  for (const env of e.env ?? []) {
    say(
      `    env ${env.name} = ${env.value ?? `(downward API: ${env.valueFrom?.fieldRef?.fieldPath ?? '?'})`}`,
    );
  }
  const probe = e.startupProbe?.httpGet;
  if (probe)
    say(
      `    startupProbe: GET :${String(probe.port)}${probe.path} ${dim('(the app starts once the leader is known)')}`,
    );
  say(`    resources: ${JSON.stringify(e.resources)}`);
  say(`    securityContext: ${JSON.stringify(e.securityContext)}`);
  for (const app of pod.spec?.containers ?? []) {
    if (app.name === CONTAINER_NAME) continue;
    say(`  ${cyan('containers')}: ${bold(app.name)}`);
    for (const env of app.env ?? [])
      if (env.name.startsWith('ELECTOR_')) say(`    env ${env.name} = ${env.value}`);
  }
  say(`  ${cyan('annotation')} ${ANNOTATION_INJECTED} = ${pod.metadata?.annotations?.[ANNOTATION_INJECTED]}`);
}

async function main(): Promise<void> {
  console.log(bold('lifelease demo: lease-for-life leader election, on a real local control plane'));

  heading('Building the bundles (esbuild): the stand-in runs dist/cli.js as the image entrypoint');
  execFileSync(process.execPath, ['scripts/build.ts'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  say(green('built dist/cli.js, dist/elector.js, dist/webhook.js'));

  heading('Starting etcd, kube-apiserver and kube-controller-manager');
  say(dim('(the first run builds them from the Go module proxy: about 6 minutes on 2 cores)'));
  const started = performance.now();
  cluster = await startCluster({ log: (m) => say(dim(m)) });
  say(green(`control plane ready in ${secs(performance.now() - started)} at ${cluster.server}`));

  heading('Installing lifelease from manifests/ (kustomize build | server-side apply)');
  webhook = await installWebhook(cluster, { log: (m) => say(dim(m)) });
  const kinds = webhook.objects.map((o) => `${o.kind}/${o.metadata?.name}`);
  say(`${kinds.length} objects: ${kinds.join(', ')}`);
  say(
    green(
      `${webhook.pods.length} webhook pods serving; they made their own CA and certificate and set the caBundle`,
    ),
  );

  heading(`Creating Deployment ${NS}/${APP}: 3 replicas whose pods are labelled leaderElection: "true"`);
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  for (let i = 0; ; i++) {
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: NS });
      break;
    } catch {
      if (i > 300) throw new Error('no default ServiceAccount');
      await sleep(50);
    }
  }
  const events: string[] = [];
  kubelet = new Kubelet({
    cluster,
    namespace: NS,
    container: CONTAINER_NAME,
    onEvent: (e) => {
      if (e.type === 'error') events.push(`kubelet: ${e.pod.metadata?.name}: ${e.error.message}`);
    },
  });
  kubelet.start();
  await cluster.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace: NS,
    body: {
      metadata: { name: APP },
      spec: {
        replicas: 3,
        selector: { matchLabels: { app: APP } },
        template: {
          metadata: { labels: { app: APP, leaderElection: 'true' } },
          spec: { containers: [{ name: 'app', image: 'example.invalid/batch-worker:1.0' }] },
        },
      },
    },
  });
  let pods: V1Pod[] = [];
  while (pods.length < 3) {
    pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${APP}` })).items;
    await sleep(100);
  }
  say(`the replica set made ${pods.map((p) => p.metadata?.name).join(', ')}`);

  heading('The pod spec as the API server stored it, after the webhook');
  showInjected(pods[0]!);

  heading(
    "Running each pod's elector exactly as injected (kubelet stand-in: own netns, hostname, pod-bound token)",
  );
  const sandboxes = new Map<string, PodSandbox>();
  for (const pod of pods) {
    const name = pod.metadata!.name!;
    for (let i = 0; !kubelet.sandbox(name); i++) {
      if (i > 300) throw new Error(`the elector of ${name} did not start: ${events.join('; ')}`);
      await sleep(50);
    }
    sandboxes.set(name, kubelet.sandbox(name)!);
  }
  await Promise.all(
    [...sandboxes].map(async ([name, sandbox]) => {
      const ms = await sandbox.waitForStartupProbe(60_000);
      say(`${name}: startup probe passed after ${secs(ms)}: the app container may start`);
    }),
  );
  const port = electionPort(pods[0]!);
  say('');
  say(bold('curl $ELECTOR_GET_URL, from inside each pod:'));
  let leader = '';
  for (const [name, sandbox] of sandboxes) {
    const answer = await ask(sandbox, port);
    const leads = answer?.name === sandbox.hostname;
    if (leads) leader = name;
    say(`${name}: ${JSON.stringify(answer)} ${leads ? green('<- name == hostname: this pod leads') : ''}`);
  }
  if (!leader) throw new Error('no pod leads');

  heading(
    `Failover: following ${'$ELECTOR_SSE_URL'} from a follower, then deleting the leader's pod ${leader}`,
  );
  const follower = [...sandboxes.keys()].find((n) => n !== leader)!;
  let deleteAt = performance.now();
  const sse = sandboxes.get(follower)!.raw(port, '/sse', { headers: { accept: 'text/event-stream' } });
  const sseLines: string[] = [];
  sse.on('response', (res) => {
    onSseEvents(res, (event) => {
      if (event.data === undefined) return;
      const line = `sse(${follower}) +${secs(performance.now() - deleteAt)}: data: ${event.data}`;
      sseLines.push(line);
      say(dim(line));
    });
    res.on('error', () => {});
  });
  sse.on('error', () => {});
  sse.end();
  await sleep(500);

  const coord = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
  await core.deleteNamespacedPod({ name: leader, namespace: NS });
  deleteAt = performance.now();
  say(`deleted pod ${leader} ${dim('(the kubelet stand-in stops its containers, as a kubelet would)')}`);
  let leaseGoneAt = 0;
  let newLeader = '';
  let newLeaderAt = 0;
  let agreedAt = 0;
  while (!agreedAt && performance.now() - deleteAt < 120_000) {
    if (!leaseGoneAt) {
      try {
        const lease = await coord.readNamespacedLease({ name: APP, namespace: NS });
        if (lease.metadata?.ownerReferences?.[0]?.name !== leader) leaseGoneAt = performance.now();
      } catch {
        leaseGoneAt = performance.now();
      }
      if (leaseGoneAt)
        say(`the garbage collector deleted the Lease owned by ${leader}: +${secs(leaseGoneAt - deleteAt)}`);
    }
    const live = [...kubelet.sandboxes.values()].filter((s) => s.pod.metadata?.name !== leader);
    const answers = await Promise.all(live.map(async (s) => ({ s, a: await ask(s, port) })));
    const claimant = answers.find(({ s, a }) => a?.name === s.hostname);
    if (claimant && !newLeader) {
      newLeader = claimant.s.hostname;
      newLeaderAt = performance.now();
      say(`${newLeader} won the new election: +${secs(newLeaderAt - deleteAt)}`);
    }
    if (newLeader && live.length >= 3 && answers.every(({ a }) => a?.name === newLeader)) {
      agreedAt = performance.now();
      say(
        `all ${live.length} pods, the replacement included, answer ${newLeader}: +${secs(agreedAt - deleteAt)}`,
      );
    }
    await sleep(25);
  }
  if (!agreedAt) throw new Error('the pods did not agree on a new leader within 2 minutes');

  heading('Result');
  const final = (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${APP}` })).items;
  for (const pod of final) {
    const s = kubelet.sandbox(pod.metadata!.name!);
    const a = s ? await ask(s, port) : undefined;
    say(
      `${pod.metadata?.name}: ${JSON.stringify(a)}${a?.name === pod.metadata?.name ? green('  <- leads') : ''}`,
    );
  }
  say('');
  say(
    yellow(
      `failover: pod deleted -> Lease garbage-collected ${secs(leaseGoneAt - deleteAt)} -> new leader ${secs(newLeaderAt - deleteAt)} -> every pod agrees ${secs(agreedAt - deleteAt)}`,
    ),
  );
  say(`SSE events seen by ${follower} after the deletion: ${sseLines.length}`);
  const running = kubelet;
  const groups = final.flatMap((pod) => {
    const g = running.sandbox(pod.metadata!.name!)?.memoryCgroup;
    return g ? [g] : [];
  });
  if (groups.length > 0) {
    const peaks = groups.map((g) => g.peakMiB().toFixed(0)).join(', ');
    const kills = groups.reduce((n, g) => n + g.oomKills(), 0);
    say(
      `electors under their ${groups[0]!.limitMiB} MiB limit (a kernel memory cgroup each): peak charge ${peaks} MiB, ${kills} OOM kills`,
    );
  }
  sse.destroy();
}

let cluster: Cluster | undefined;
let webhook: InstalledWebhook | undefined;
let kubelet: Kubelet | undefined;
async function cleanup(): Promise<void> {
  await kubelet?.stop();
  await webhook?.stop();
  await cluster?.stop();
}
process.once('SIGINT', () => {
  console.log('\ninterrupted: cleaning up');
  void cleanup().then(() => process.exit(130));
});

try {
  await main();
  heading('Cleaning up: stopping every pod and the control plane');
  await cleanup();
  say(green(`done in ${secs(performance.now() - t0)}; nothing left running`));
} catch (err) {
  console.error(`\ndemo failed: ${(err as Error).stack ?? String(err)}`);
  await cleanup();
  process.exit(1);
}
