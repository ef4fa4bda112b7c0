/**
 * `npm run demo`: the whole story on a real local cluster, nothing faked.
 *
 * A control plane and one real node (containerd + kubelet; packages/harness/src/node.ts) with the
 * project's image built from the Dockerfile (packages/harness/src/image.ts). lifelease is installed
 * with the built kubectl exactly as the README tells an admin (`kubectl apply -k manifests`);
 * the webhook runs as a Deployment from the image; a Deployment of 3 opted-in replicas gets
 * its elector injected as a native sidecar that the kubelet starts, and the app container
 * starts only after the elector's startup probe passes. Each app asks $ELECTOR_GET_URL from
 * inside its container. Then the leader's pod is deleted gracefully and the failover is
 * timed end to end, as the apps saw it. Needs root (the node).
 */
import './require-node.ts';
import {
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  type V1Container,
  type V1Pod,
} from '@kubernetes/client-node';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { ANNOTATION_INJECTED, CONTAINER_NAME, LEASE_LABEL_ELECTION } from '../common/constants.ts';
import { resolveBinaries } from '@lifelease/harness/binaries';
import { startCluster, type Cluster } from '@lifelease/harness/cluster';
import { ensureImages } from '@lifelease/harness/image';
import { resolveNodeBinaries } from '@lifelease/harness/node-binaries';
import { assertCanRunNode, nodeClusterOptions, startNode, type RealNode } from '@lifelease/harness/node';
import { pollingApp } from '@lifelease/harness/on-node';
import { ensureHostPackages } from '@lifelease/harness/host-packages';

const REPO_ROOT = path.resolve(import.meta.dirname, '..');
const NS = 'demo';
const APP = 'batch-worker';
const REPLICAS = 3;
const tty = process.stdout.isTTY;
const c = (code: string) => (s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const bold = c('1');
const dim = c('2');
const green = c('32');
const cyan = c('36');
const yellow = c('33');
const t0 = performance.now();
const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const execFileAsync = promisify(execFile);

let step = 0;
const STEPS = 10;
function heading(text: string): void {
  step++;
  console.log(`\n${bold(`[${step}/${STEPS}]`)} ${bold(text)} ${dim(`(t+${secs(performance.now() - t0)})`)}`);
}
const say = (text = '') => console.log(`      ${text}`);

/** What each app container prints, once per poll of $ELECTOR_GET_URL (one JSON line). */
const APP_SCRIPT = pollingApp({ everyMs: 200, timeoutMs: 1000 });

interface AppLine {
  t: number;
  name?: string;
  me?: string;
  started?: boolean;
  url?: string;
  error?: string;
}

let kubectlPath = '';
let kubeconfig = '';
async function kubectl(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(kubectlPath, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, KUBECONFIG: kubeconfig },
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

function electorOf(pod: V1Pod): V1Container {
  const all = [...(pod.spec?.initContainers ?? []), ...(pod.spec?.containers ?? [])];
  const found = all.find((x) => x.name === CONTAINER_NAME);
  if (!found)
    throw new Error(`pod ${pod.metadata?.name} has no ${CONTAINER_NAME} container: was it injected?`);
  return found;
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
  const probe = e.startupProbe?.httpGet;
  if (probe)
    say(
      `    startupProbe: GET :${String(probe.port)}${probe.path} ${dim('(the app starts once the leader is known)')}`,
    );
  say(`    resources: ${JSON.stringify(e.resources)}`);
  say(`    securityContext: ${JSON.stringify(e.securityContext)}`);
  for (const app of pod.spec?.containers ?? []) {
    if (app.name === CONTAINER_NAME) continue;
    say(`  ${cyan('containers')}: ${bold(app.name)} ${dim(`image ${app.image}`)}`);
    for (const env of app.env ?? [])
      if (env.name.startsWith('ELECTOR_')) say(`    env ${env.name} = ${env.value}`);
  }
  say(`  ${cyan('annotation')} ${ANNOTATION_INJECTED} = ${pod.metadata?.annotations?.[ANNOTATION_INJECTED]}`);
}

async function appLines(core: CoreV1Api, pod: string): Promise<AppLine[]> {
  try {
    const text = await core.readNamespacedPodLog({ name: pod, namespace: NS, container: 'app' });
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as AppLine);
  } catch {
    return [];
  }
}

/** The first line in which the app reports what $ELECTOR_GET_URL answered (waits up to 60 s). */
async function firstAnswer(core: CoreV1Api, pod: string): Promise<AppLine> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const found = (await appLines(core, pod)).find((l) => l.name !== undefined || l.error !== undefined);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`the app in ${pod} printed no answer in 60 s`);
    await sleep(200);
  }
}

async function main(): Promise<void> {
  console.log(bold('lifelease demo: lease-for-life leader election, on a real local node'));
  try {
    ensureHostPackages((m) => say(dim(m)));
    assertCanRunNode();
  } catch (err) {
    console.error((err as Error).message);
    process.exit(1);
  }

  heading('Building (or finding in the cache) the control plane, the node and the images');
  say(dim('(a cold cache builds everything from the Go module proxy and the Dockerfile: many minutes)'));
  const progress = (m: string) => say(dim(m));
  let t = performance.now();
  const cpBinaries = await resolveBinaries({ log: progress });
  const nodeBinaries = await resolveNodeBinaries({ log: progress });
  const images = await ensureImages({ log: (l) => progress(`[image] ${l}`) });
  say(green(`ready in ${secs(performance.now() - t)}: ${images.project.name}, ${images.app.name}`));

  heading('Starting etcd, kube-apiserver, kube-controller-manager, then containerd, kubelet, kube-scheduler');
  t = performance.now();
  cluster = await startCluster({ binaries: cpBinaries, ...nodeClusterOptions(), log: progress });
  const tn = performance.now();
  node = await startNode(cluster, {
    binaries: nodeBinaries,
    images: [images.project, images.app],
    log: progress,
  });
  say(
    green(
      `control plane ${secs(tn - t)}, node ${node.name} Ready ${secs(performance.now() - tn)} later (images imported)`,
    ),
  );
  kubectlPath = nodeBinaries.kubectl;
  kubeconfig = cluster.kubeconfigPath;

  heading('Installing lifelease as the README says: kubectl apply -k manifests');
  t = performance.now();
  for (const line of (await kubectl(['apply', '-k', 'manifests'])).trim().split('\n')) say(dim(line));
  say('waiting for the webhook Deployment (its pods make their own certificate and set the caBundle)');
  await kubectl([
    '-n',
    'lifelease-system',
    'rollout',
    'status',
    'deployment/lifelease-webhook',
    '--timeout=300s',
  ]);
  const webhookPods = await kubectl([
    '-n',
    'lifelease-system',
    'get',
    'pods',
    '-o',
    'custom-columns=POD:.metadata.name,NODE:.spec.nodeName,IP:.status.podIP,IMAGE:.spec.containers[0].image,READY:.status.containerStatuses[0].ready',
  ]);
  for (const line of webhookPods.trim().split('\n')) say(line);
  say(green(`webhook available in ${secs(performance.now() - t)}`));

  heading(`Creating Deployment ${NS}/${APP}: ${REPLICAS} replicas labelled leaderElection: "true"`);
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  for (let i = 0; ; i++) {
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: NS });
      break;
    } catch {
      if (i > 600) throw new Error('no default ServiceAccount');
      await sleep(50);
    }
  }
  const created = performance.now();
  await cluster.kubeConfig.makeApiClient(AppsV1Api).createNamespacedDeployment({
    namespace: NS,
    body: {
      metadata: { name: APP },
      spec: {
        replicas: REPLICAS,
        selector: { matchLabels: { app: APP } },
        template: {
          metadata: { labels: { app: APP, leaderElection: 'true' } },
          spec: {
            terminationGracePeriodSeconds: 10,
            containers: [
              {
                name: 'app',
                image: images.app.name,
                imagePullPolicy: 'Never',
                command: ['node', '-e', APP_SCRIPT],
                resources: { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } },
              },
            ],
          },
        },
      },
    },
  });
  let pods: V1Pod[] = [];
  for (;;) {
    pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${APP}` })).items;
    const running = pods.filter(
      (p) => p.status?.phase === 'Running' && p.status.containerStatuses?.every((s) => s.ready),
    );
    if (running.length === REPLICAS) break;
    if (performance.now() - created > 180_000)
      throw new Error(`pods not running: ${JSON.stringify(pods.map((p) => p.status))}`);
    await sleep(200);
  }
  say(
    green(
      `${REPLICAS} pods Running and ready ${secs(performance.now() - created)} after the Deployment was created`,
    ),
  );

  heading('The pod spec as the API server stored it, after the webhook');
  showInjected(pods[0]!);

  heading("Start order, from the pod status and events: the app waits for the elector's startup probe");
  for (const pod of pods) {
    const name = pod.metadata!.name!;
    // The app's first poll, once its Node.js has started (bounded: it runs within seconds).
    const first = await firstAnswer(core, name);
    const status = (await core.readNamespacedPod({ name, namespace: NS })).status;
    const elector = status?.initContainerStatuses?.find((s) => s.name === CONTAINER_NAME);
    const app = status?.containerStatuses?.find((s) => s.name === 'app');
    const electorAt = elector?.state?.running?.startedAt;
    const appAt = app?.state?.running?.startedAt;
    say(
      `${cyan(name)}: elector started ${electorAt?.toISOString().slice(11, 19)}, startup probe passed (started=${elector?.started}), ` +
        `then the app started ${appAt?.toISOString().slice(11, 19)}`,
    );
    const events = (
      await core.listNamespacedEvent({ namespace: NS, fieldSelector: `involvedObject.name=${name}` })
    ).items
      .sort((a, b) => +(a.firstTimestamp ?? a.eventTime ?? 0) - +(b.firstTimestamp ?? b.eventTime ?? 0))
      .filter((e) => e.reason !== 'MissingClusterDNS')
      .map((e) => {
        const container = /container:? "?([a-z0-9-]+)"?/.exec(e.message ?? '')?.[1];
        if (e.reason === 'Unhealthy') return `${e.reason} (${e.message?.split(':')[0]}, not yet)`;
        return `${e.reason}${container ? ` ${container}` : ''}`;
      });
    say(dim(`  events: ${events.join(' -> ')}`));
    say(
      `  the app's first answer from $ELECTOR_GET_URL: ${JSON.stringify({ name: first.name })}` +
        (first.name ? green(' (the leader was known before the app ran)') : yellow(' (no leader yet)')),
    );
  }

  heading('Each app asks $ELECTOR_GET_URL from inside its container');
  let leader = '';
  for (const pod of pods) {
    const name = pod.metadata!.name!;
    const last = (await appLines(core, name)).filter((l) => l.name !== undefined).at(-1);
    if (last?.name === name) leader = name;
    say(
      `${name}: ${JSON.stringify({ name: last?.name })} ${last?.name === name ? green('<- name == hostname: this pod leads') : ''}`,
    );
  }
  if (!leader) throw new Error('no pod leads');

  heading(`Failover: kubectl delete pod ${leader} (graceful), timed from the apps' own answers`);
  const coord = cluster.kubeConfig.makeApiClient(CoordinationV1Api);
  const deleteAt = Date.now();
  await kubectl(['-n', NS, 'delete', 'pod', leader, '--wait=false']);
  say(
    `deleted pod ${leader} at +0.0 s ${dim('(the kubelet sends SIGTERM; the elector releases; the GC deletes its Lease)')}`,
  );
  let leaseChangedAt = 0;
  let newLeader = '';
  let agreedAt = 0;
  while (!agreedAt && Date.now() - deleteAt < 120_000) {
    if (!leaseChangedAt) {
      const leases = (await coord.listNamespacedLease({ namespace: NS, labelSelector: LEASE_LABEL_ELECTION }))
        .items;
      const holder = leases[0]?.spec?.holderIdentity;
      if (leases.length === 0 || (holder && holder !== leader)) {
        leaseChangedAt = Date.now();
        say(
          `the Lease ${leases.length === 0 ? 'is gone' : `is held by ${holder}`}: +${secs(leaseChangedAt - deleteAt)}`,
        );
      }
    }
    const live = (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${APP}` })).items.filter(
      (p) => p.metadata?.name !== leader && p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp,
    );
    const answers = await Promise.all(
      live.map(async (p) =>
        (await appLines(core, p.metadata!.name!)).filter((l) => l.t > deleteAt && l.name).at(-1),
      ),
    );
    const claimant = answers.find((a) => a?.name && a.name === a.me);
    if (claimant && !newLeader) {
      newLeader = claimant.name!;
      say(`${newLeader}'s app sees itself leading: +${secs(claimant.t - deleteAt)}`);
    }
    if (newLeader && live.length >= REPLICAS && answers.every((a) => a?.name === newLeader)) {
      agreedAt = Math.max(...answers.map((a) => a!.t));
      say(
        `all ${live.length} apps, the replacement's included, answer ${newLeader}: +${secs(agreedAt - deleteAt)}`,
      );
    }
    await sleep(250);
  }
  if (!agreedAt) throw new Error('the apps did not agree on a new leader within 2 minutes');
  // The exact moment each surviving app first saw the new leader, from its own timestamps.
  const firstSeen: string[] = [];
  const before = new Set(pods.map((p) => p.metadata!.name!));
  for (const p of (await core.listNamespacedPod({ namespace: NS, labelSelector: `app=${APP}` })).items) {
    const name = p.metadata!.name!;
    const seen = (await appLines(core, name)).find((l) => l.t > deleteAt && l.name === newLeader);
    if (seen && name !== leader)
      firstSeen.push(`${name}${before.has(name) ? '' : ' (the replacement)'} ${secs(seen.t - deleteAt)}`);
  }

  heading('Result');
  for (const line of (await kubectl(['-n', NS, 'get', 'pods', '-o', 'wide'])).trim().split('\n')) say(line);
  say('');
  say(
    yellow(
      `failover as the apps saw it: pod deleted -> old Lease gone or taken over ${secs(leaseChangedAt - deleteAt)} -> each app first answers ${newLeader}: ${firstSeen.join(', ')}`,
    ),
  );
  say(dim(`use the built kubectl yourself: KUBECONFIG=<cluster:up's> ${kubectlPath}`));
}

let cluster: Cluster | undefined;
let node: RealNode | undefined;
async function cleanup(): Promise<void> {
  await node?.stop();
  await cluster?.stop();
}
process.once('SIGINT', () => {
  console.log('\ninterrupted: cleaning up (stopping the node restores the host)');
  void cleanup().then(() => process.exit(130));
});

try {
  await main();
  heading('Cleaning up: stopping the node (the host is restored) and the control plane');
  await cleanup();
  say(green(`done in ${secs(performance.now() - t0)}; nothing left running`));
} catch (err) {
  console.error(`\ndemo failed: ${(err as Error).stack ?? String(err)}`);
  await cleanup();
  process.exit(1);
}
