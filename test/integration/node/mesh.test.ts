/**
 * A service mesh whose CNI plugin redirects all of a pod's outbound TCP to a proxy sidecar
 * (Istio CNI, Linkerd CNI), on the real node (packages/harness/src/node.ts through `sharedNode()`):
 * the proof of the README's "Why last" for the elector's place among the init containers.
 *
 * The miniature mesh, faithful where it matters and built only from the project's images:
 * - the redirection is istio-cni's: iptables nat rules in the POD's network namespace (our
 *   chains MESH_OUTPUT / MESH_REDIRECT, jumped to from OUTPUT) that return loopback traffic
 *   and the proxy's own uid (1337, `-m owner --uid-owner`) and REDIRECT every other outbound
 *   TCP connection to the proxy's port 15001. The test installs them from the host with
 *   `nsenter --net=/proc/<pause pid>/ns/net iptables ...`, as the CNI plugin does from the
 *   node, while the pod's first init container waits for them: `mesh-validation`, istio-cni's
 *   `istio-validation` in small (it listens on 15001, connects to the API server's address and
 *   ends only once its own listener received that connection: the redirect is in place). So
 *   the redirect is in force before any other container of the pod runs, as with the plugin.
 * - the proxy (`mesh-proxy`, the test app image's node, uid 1337) is a TCP relay on 15001 that
 *   counts connections and bytes and prints them. Istio's sidecar reads each connection's
 *   original destination (SO_ORIGINAL_DST), which Node cannot; this one sends everything to
 *   `$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the only outbound destination these
 *   pods have. As a native sidecar it has a startup probe on its port, as Istio's has (the
 *   kubelet starts the next init container once it passes).
 * - the elector's redirected connections are also counted by the kernel: a rule matching its
 *   uid (65532, the image's USER) just before the REDIRECT, whose packet counter is the number
 *   of connections it opened through the redirect (nat sees each connection's first packet).
 *
 * What this proves (each test says how): in native-sidecar mode the webhook puts the elector
 * after the proxy, the elector's API traffic goes through the proxy, it becomes ready, the app
 * starts after it and one pod leads; with the redirect off the same proxy counts nothing (so
 * the count is the redirect's doing); with the proxy as a regular container and everything
 * redirected the elector, an init container, cannot reach the API server and the pod stays in
 * init, and each documented way out works: the API server's port excluded from the redirect,
 * or `--elector-mode=container`; every rule lives in the pod's network namespace and is gone
 * with it, and the host's rules are as before.
 *
 * What it does not prove: Istio's or Linkerd's own code (their proxies, CNI plugin, injector,
 * `holdApplicationUntilProxyStarts`, the order in which their webhook and ours run: our
 * reinvocation moving the elector last is proven in test/integration/webhook/
 * reinvocation.test.ts, without a kubelet); mTLS or HTTP-aware proxying (the proxy here is
 * plain TCP); the 600 s after which the kubelet restarts an elector whose startup probe never
 * passed (the deadlock test watches the pod held in init for a bounded while, not 10 minutes;
 * a restarted elector meets the same redirect, so nothing changes).
 */
import { CoordinationV1Api, CoreV1Api, type V1Container, type V1Pod } from '@kubernetes/client-node';
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ANNOTATION_ELECTION, CONTAINER_NAME } from '../../../common/constants.ts';
import { ELECTOR_UID } from '../../../webhook/render.ts';
import {
  appLines,
  installProduct,
  POLLING_APP,
  uninstallProduct,
  WEBHOOK_DEPLOYMENT,
  WEBHOOK_NAMESPACE,
  webhookRollout,
} from '@lifelease/harness/on-node';
import { nodeSkip, sharedNode, type TestNode } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const PROXY_PORT = 15001;
const PROXY_UID = 1337;
/** The port of the API server as pods dial it (`kubernetes.default`, 10.0.0.1:443 on this node). */
const API_PORT = 443;
/** Where the validation dials (any port the redirect takes: istio-validation's is 15002). */
const PROBE_PORT = 15002;
/** Every rule we add carries it: the host's rules must never show it. */
const MARK = 'lifelease-mesh';

let node: TestNode;
let ns: string;
let core: CoreV1Api;
let hostRulesBefore: string;

/** The host's iptables rules without counters (the node's own and the CNI's). */
function hostRules(): string {
  const r = spawnSync('iptables-save', [], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`iptables-save failed: ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, ''))
    .join('\n');
}

before(async () => {
  if (nodeSkip()) return;
  node = await sharedNode();
  await installProduct(node);
  ns = await node.createNamespace('mesh');
  core = node.kubeConfig.makeApiClient(CoreV1Api);
  hostRulesBefore = hostRules();
});

after(async () => {
  if (!node) return;
  await core.deleteNamespace({ name: ns }).catch(() => {});
  await uninstallProduct(node);
  await node.release();
});

// --- the miniature mesh -----------------------------------------------------------------

/**
 * istio-validation in small: exits 0 once a connection to the API server's address, on a port
 * no pod excludes, reached its own listener on the proxy's port.
 */
const VALIDATION = `
const net = require('node:net');
const host = process.env.KUBERNETES_SERVICE_HOST;
let tries = 0;
const server = net.createServer((c) => {
  console.log(JSON.stringify({ t: Date.now(), redirected: true, tries }));
  c.destroy();
  process.exit(0);
});
const attempt = () => {
  tries++;
  const c = net.connect({ port: ${PROBE_PORT}, host, timeout: 1000 });
  const again = () => { c.destroy(); setTimeout(attempt, 200); };
  c.on('connect', again); c.on('timeout', again); c.on('error', again);
};
server.listen(${PROXY_PORT}, '0.0.0.0', attempt);
`;

/** The proxy: a TCP relay to the API server that counts the redirected connections and their bytes. */
const PROXY = `
const net = require('node:net'), os = require('node:os');
const host = process.env.KUBERNETES_SERVICE_HOST, port = Number(process.env.KUBERNETES_SERVICE_PORT);
const s = { conns: 0, up: 0, down: 0, probes: 0 };
const report = () => console.log(JSON.stringify({ t: Date.now(), ...s }));
net.createServer((c) => {
  // Redirected connections come from the pod itself (one of its own addresses); the
  // kubelet's startup probe comes from the node.
  const own = Object.values(os.networkInterfaces()).flat().map((i) => i.address.replace(/^::ffff:/, ''));
  if (!own.includes((c.remoteAddress ?? '').replace(/^::ffff:/, ''))) { s.probes++; c.destroy(); return; }
  s.conns++;
  report();
  const u = net.connect(port, host);
  c.on('data', (d) => { s.up += d.length; });
  u.on('data', (d) => { s.down += d.length; });
  c.pipe(u); u.pipe(c);
  const end = () => { c.destroy(); u.destroy(); };
  c.on('error', end); u.on('error', end); c.on('close', end); u.on('close', end);
}).listen(${PROXY_PORT}, '0.0.0.0', report);
setInterval(report, 1000);
process.on('SIGTERM', () => process.exit(0));
`;

const small = { requests: { cpu: '10m', memory: '32Mi' }, limits: { memory: '128Mi' } };

function validationContainer(): V1Container {
  return {
    name: 'mesh-validation',
    image: node.node.images.app,
    imagePullPolicy: 'Never',
    command: ['node', '-e', VALIDATION],
    resources: small,
  };
}

function proxyContainer(nativeSidecar: boolean): V1Container {
  return {
    name: 'mesh-proxy',
    image: node.node.images.app,
    imagePullPolicy: 'Never',
    command: ['node', '-e', PROXY],
    securityContext: { runAsUser: PROXY_UID, runAsGroup: PROXY_UID },
    resources: small,
    ...(nativeSidecar
      ? {
          restartPolicy: 'Always',
          startupProbe: { tcpSocket: { port: PROXY_PORT }, periodSeconds: 1, failureThreshold: 120 },
        }
      : {}),
  };
}

/** An opted-in pod of election `election`: [validation?] + proxy (native sidecar or regular) + the polling app. */
function meshPod(
  name: string,
  election: string,
  options: { proxy: 'native-sidecar' | 'container'; validation: boolean },
): V1Pod {
  const native = options.proxy === 'native-sidecar';
  const app: V1Container = {
    name: 'app',
    image: node.node.images.app,
    imagePullPolicy: 'Never',
    command: ['node', '-e', POLLING_APP],
    resources: small,
  };
  return {
    metadata: {
      name,
      labels: { leaderElection: 'true', mesh: election },
      annotations: { [ANNOTATION_ELECTION]: election },
    },
    spec: {
      terminationGracePeriodSeconds: 5,
      initContainers: [
        ...(options.validation ? [validationContainer()] : []),
        ...(native ? [proxyContainer(true)] : []),
      ],
      containers: [...(native ? [] : [proxyContainer(false)]), app],
    },
  };
}

function podUid(pod: V1Pod): string {
  return pod.metadata!.uid!;
}

/** The running pause process of the pod's sandbox (its network namespace), once there is one. */
function sandboxPid(uid: string): number | undefined {
  const ids = node
    .ctr(['containers', 'ls', '-q', `labels."io.kubernetes.pod.uid"==${uid}`])
    .split('\n')
    .filter(Boolean);
  const sandbox = ids.find(
    (id) =>
      (JSON.parse(node.ctr(['containers', 'info', id])) as { Labels?: Record<string, string> }).Labels?.[
        'io.cri-containerd.kind'
      ] === 'sandbox',
  );
  if (!sandbox) return undefined;
  for (const line of node.ctr(['tasks', 'ls']).split('\n').slice(1)) {
    const [id, pid, status] = line.trim().split(/\s+/);
    if (id === sandbox && status === 'RUNNING') return Number(pid);
  }
  return undefined;
}

/** `iptables -t nat <args>` in the network namespace of the process `pid`. */
function podIptables(pid: number, args: string[]): string {
  const r = spawnSync('nsenter', [`--net=/proc/${pid}/ns/net`, '--', 'iptables', '-w', '5', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  if (r.status !== 0) throw new Error(`iptables ${args.join(' ')} in ${pid}'s netns failed: ${r.stderr}`);
  return r.stdout;
}

const comment = (what: string) => ['-m', 'comment', '--comment', `${MARK} ${what}`];

/**
 * istio-cni's redirect, installed into the pod's network namespace from the host. With
 * `excludePorts`, connections to those destination ports are left alone
 * (`traffic.sidecar.istio.io/excludeOutboundPorts`, `config.linkerd.io/skip-outbound-ports`).
 */
function installRedirect(pid: number, excludePorts: number[] = []): void {
  const nat = (args: string[]) => podIptables(pid, ['-t', 'nat', ...args]);
  nat(['-N', 'MESH_REDIRECT']);
  nat([
    '-A',
    'MESH_REDIRECT',
    '-p',
    'tcp',
    '-j',
    'REDIRECT',
    '--to-ports',
    String(PROXY_PORT),
    ...comment('to the proxy'),
  ]);
  nat(['-N', 'MESH_OUTPUT']);
  nat(['-A', 'OUTPUT', '-p', 'tcp', '-j', 'MESH_OUTPUT', ...comment('all outbound TCP')]);
  nat(['-A', 'MESH_OUTPUT', '-d', '127.0.0.0/8', '-j', 'RETURN', ...comment('loopback')]);
  nat([
    '-A',
    'MESH_OUTPUT',
    '-m',
    'owner',
    '--uid-owner',
    String(PROXY_UID),
    '-j',
    'RETURN',
    ...comment('the proxy itself'),
  ]);
  for (const port of excludePorts)
    nat([
      '-A',
      'MESH_OUTPUT',
      '-p',
      'tcp',
      '--dport',
      String(port),
      '-j',
      'RETURN',
      ...comment('excluded port'),
    ]);
  nat(['-A', 'MESH_OUTPUT', '-m', 'owner', '--uid-owner', String(ELECTOR_UID), ...comment('elector')]);
  nat(['-A', 'MESH_OUTPUT', '-j', 'MESH_REDIRECT']);
}

/** How many connections the elector's uid opened through the redirect (the counting rule's packets). */
function electorRedirected(pid: number): number {
  const line = podIptables(pid, ['-t', 'nat', '-L', 'MESH_OUTPUT', '-v', '-x', '-n'])
    .split('\n')
    .find((l) => l.includes(`${MARK} elector`));
  if (!line) throw new Error('no elector counting rule');
  return Number(line.trim().split(/\s+/)[0]);
}

/** Waits for the pod's sandbox and installs the redirect into it (the CNI plugin's moment). */
async function redirectPod(pod: V1Pod, excludePorts: number[] = []): Promise<number> {
  const pid = await eventually(
    `the sandbox of ${pod.metadata?.name}`,
    () => sandboxPid(podUid(pod)),
    120_000,
  );
  installRedirect(pid, excludePorts);
  assert.ok(!hostRules().includes(MARK), 'no rule of ours on the host');
  return pid;
}

interface ProxyStats {
  t: number;
  conns: number;
  up: number;
  down: number;
}

async function proxyStats(pod: string): Promise<ProxyStats | undefined> {
  try {
    const text = await core.readNamespacedPodLog({ name: pod, namespace: ns, container: 'mesh-proxy' });
    return text
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as ProxyStats)
      .at(-1);
  } catch {
    return undefined;
  }
}

const read = (name: string) => core.readNamespacedPod({ name, namespace: ns });
const startedAt = (s: { state?: { running?: { startedAt?: Date } } } | undefined) =>
  s?.state?.running?.startedAt ? new Date(s.state.running.startedAt).getTime() : undefined;

async function runningReady(name: string, timeoutMs = 180_000): Promise<V1Pod> {
  return eventually(
    `${name} running with every container ready`,
    async () => {
      const p = await read(name);
      return p.status?.phase === 'Running' && p.status.containerStatuses?.every((s) => s.ready) && p;
    },
    timeoutMs,
  );
}

/** The pod's app has answered with a leader; returns the first such line's leader. */
async function appLeader(name: string): Promise<string> {
  return eventually(
    `${name}'s app to name a leader`,
    async () => (await appLines(node, ns, name)).find((l) => l.name)?.name,
    60_000,
  );
}

async function leaseHolder(election: string): Promise<string | undefined> {
  const coord = node.kubeConfig.makeApiClient(CoordinationV1Api);
  try {
    return (
      (await coord.readNamespacedLease({ name: election, namespace: ns })).spec?.holderIdentity ?? undefined
    );
  } catch {
    return undefined;
  }
}

// --- the tests ----------------------------------------------------------------------------

const sandboxes: number[] = [];

describe('a service mesh with CNI redirection on a real node', { skip: nodeSkip() }, () => {
  test('native-sidecar proxy: the elector goes after it, reaches the API server through it, one leader', async (t) => {
    const election = 'meshed';
    const names = ['meshed-a', 'meshed-b'];
    const created = await Promise.all(
      names.map((name) =>
        core.createNamespacedPod({
          namespace: ns,
          body: meshPod(name, election, { proxy: 'native-sidecar', validation: true }),
        }),
      ),
    );
    // A control pod: the same proxy, no redirect (and so no validation): it must count nothing.
    const control = await core.createNamespacedPod({
      namespace: ns,
      body: meshPod('direct', 'direct', { proxy: 'native-sidecar', validation: false }),
    });
    const createdAt = Date.now();
    const pids = await Promise.all(created.map((p) => redirectPod(p)));
    sandboxes.push(...pids);

    const pods = await Promise.all(names.map((n) => runningReady(n)));
    t.diagnostic(`two meshed pods created -> both running and ready: ${Date.now() - createdAt} ms`);
    for (const pod of pods) {
      const name = pod.metadata!.name!;
      // The webhook put the elector last, after the proxy.
      assert.deepEqual(
        pod.spec?.initContainers?.map((c) => c.name),
        ['mesh-validation', 'mesh-proxy', CONTAINER_NAME],
      );
      const init = new Map(pod.status?.initContainerStatuses?.map((s) => [s.name, s]));
      const validation = init.get('mesh-validation')?.state?.terminated;
      assert.equal(validation?.exitCode, 0, 'the validation saw the redirect');
      const proxyAt = startedAt(init.get('mesh-proxy'))!;
      const electorAt = startedAt(init.get(CONTAINER_NAME))!;
      const appAt = startedAt(pod.status?.containerStatuses?.find((s) => s.name === 'app'))!;
      assert.ok(
        proxyAt <= electorAt && electorAt <= appAt,
        `proxy ${proxyAt} <= elector ${electorAt} <= app ${appAt}`,
      );
      // The app started once the leader was known: its very first answer names one.
      const first = await eventually(`${name}'s app's first answer`, async () =>
        (await appLines(node, ns, name)).find((l) => !l.started),
      );
      assert.equal(first?.status, 200, `${name}'s first answer: ${JSON.stringify(first)}`);
      assert.ok(first?.name, `${name}'s first answer names a leader`);
    }
    // The elector's API traffic went through the proxy: the kernel counted its redirected
    // connections, the proxy its connections and bytes both ways.
    for (const [i, name] of names.entries()) {
      const redirected = electorRedirected(pids[i]!);
      const stats = await eventually(`${name}'s proxy stats`, async () => {
        const s = await proxyStats(name);
        return s && s.conns > 0 && s.down > 0 && s;
      });
      t.diagnostic(
        `${name}: elector connections through the redirect ${redirected}; proxy: ${stats.conns} connections, ${stats.up} bytes up, ${stats.down} down`,
      );
      assert.ok(redirected >= 1, 'the elector opened connections through the redirect');
      assert.ok(stats.conns >= redirected, 'each of them reached the proxy');
      assert.ok(stats.up > 1000 && stats.down > 1000, 'TLS and API requests both ways');
    }
    // One leader: both apps name the same pod, which holds the Lease.
    const leaders = await Promise.all(
      names.map((n) =>
        eventually(`${n}'s app to name the Lease holder`, async () => {
          const holder = await leaseHolder(election);
          const last = (await appLines(node, ns, n)).filter((l) => l.name).at(-1);
          return holder && last?.name === holder && holder;
        }),
      ),
    );
    assert.equal(new Set(leaders).size, 1);
    assert.ok(names.includes(leaders[0]!));

    // The control: same pod, no redirect. Its elector is ready, its proxy saw nothing.
    await runningReady('direct');
    await appLeader('direct');
    const direct = await proxyStats('direct');
    assert.equal(direct?.conns, 0, 'without the redirect the proxy counts no connection');
    const controlPid = sandboxPid(podUid(control))!;
    assert.ok(!podIptables(controlPid, ['-t', 'nat', '-S']).includes(MARK));
    sandboxes.push(controlPid);
  });

  test('a regular-container proxy with everything redirected: the elector cannot reach the API server and the pod stays in init; excluding the port lets it through', async (t) => {
    const name = 'stuck';
    const pod = await core.createNamespacedPod({
      namespace: ns,
      body: meshPod(name, 'stuck', { proxy: 'container', validation: true }),
    });
    const pid = await redirectPod(pod);
    sandboxes.push(pid);
    assert.deepEqual(
      (await read(name)).spec?.initContainers?.map((c) => c.name),
      ['mesh-validation', CONTAINER_NAME],
    );
    // The elector runs, its startup probe fails again and again (it does not know a leader:
    // every API connection it opens is redirected to a port nobody listens on yet), and the
    // proxy and the app, which would start after it, do not.
    const failures = await eventually(
      'the elector startup probe to fail 5 times',
      async () => {
        const events = (
          await core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.name=${name}` })
        ).items.filter((e) => e.reason === 'Unhealthy' && e.message?.startsWith('Startup probe failed'));
        const count = events.reduce((n, e) => n + (e.count ?? 1), 0);
        // 503: the elector answers its probe, and says it does not know the leader.
        return count >= 5 && events.some((e) => e.message?.includes('503')) && events;
      },
      120_000,
    );
    t.diagnostic(`events: ${failures.map((e) => `${e.reason} x${e.count ?? 1}: ${e.message}`).join('; ')}`);
    assert.ok(failures.every((e) => e.involvedObject.fieldPath?.includes(CONTAINER_NAME)));
    const held = await read(name);
    assert.equal(held.status?.phase, 'Pending');
    const elector = held.status?.initContainerStatuses?.find((s) => s.name === CONTAINER_NAME);
    assert.ok(elector?.state?.running, 'the elector runs');
    assert.equal(elector?.started, false, 'but never passed its startup probe');
    for (const s of held.status?.containerStatuses ?? [])
      assert.equal(s.state?.waiting?.reason, 'PodInitializing', `${s.name} has not started`);
    assert.ok(electorRedirected(pid) >= 1, "the elector's connections were redirected");
    assert.equal(await leaseHolder('stuck'), undefined, 'no Lease: the elector never reached the API server');
    const log = await core.readNamespacedPodLog({ name, namespace: ns, container: CONTAINER_NAME });
    t.diagnostic(`elector log tail: ${log.trim().split('\n').slice(-2).join(' | ')}`);

    // The way out: the API server's port excluded from the redirect (what
    // excludeOutboundPorts / skip-outbound-ports make the CNI plugin write), here added to the
    // stuck pod's rules: the elector gets through, the proxy and the app start.
    const fixedAt = Date.now();
    podIptables(pid, [
      '-t',
      'nat',
      '-I',
      'MESH_OUTPUT',
      '1',
      '-p',
      'tcp',
      '--dport',
      String(API_PORT),
      '-j',
      'RETURN',
      ...comment('excluded port'),
    ]);
    await runningReady(name);
    t.diagnostic(`port excluded -> pod running and ready: ${Date.now() - fixedAt} ms`);
    assert.equal(await appLeader(name), name);
    assert.equal(await leaseHolder('stuck'), name);
  });

  test('the same pod with the API server port excluded from the start: runs, and the elector bypasses the proxy', async () => {
    const name = 'excluded';
    const pod = await core.createNamespacedPod({
      namespace: ns,
      body: meshPod(name, 'excluded', { proxy: 'container', validation: true }),
    });
    const pid = await redirectPod(pod, [API_PORT]);
    sandboxes.push(pid);
    await runningReady(name);
    assert.equal(await appLeader(name), name);
    assert.equal(electorRedirected(pid), 0, 'no elector connection went to the proxy');
  });

  test('--elector-mode=container: a regular-container proxy with everything redirected, and the elector reaches the API server through it', async (t) => {
    await node.kubectl([
      '-n',
      WEBHOOK_NAMESPACE,
      'set',
      'env',
      `deployment/${WEBHOOK_DEPLOYMENT}`,
      'WEBHOOK_ELECTOR_MODE=container',
    ]);
    try {
      await webhookRollout(node);
      // Every webhook pod the API server may call is a new one (a terminating old pod can
      // still answer), and a dry run is injected in container mode.
      const name = 'container-mode';
      await eventually(
        'only webhook pods in container mode, and a dry run injected so',
        async () => {
          const pods = (await core.listNamespacedPod({ namespace: WEBHOOK_NAMESPACE })).items;
          const allNew = pods.every(
            (p) =>
              !p.metadata?.deletionTimestamp &&
              p.spec?.containers[0]?.env?.some(
                (e) => e.name === 'WEBHOOK_ELECTOR_MODE' && e.value === 'container',
              ),
          );
          const dry = await core.createNamespacedPod({
            namespace: ns,
            body: meshPod(name, 'container-mode', { proxy: 'container', validation: true }),
            dryRun: 'All',
          });
          return allNew && dry.spec?.containers.some((c) => c.name === CONTAINER_NAME);
        },
        120_000,
      );
      const pod = await core.createNamespacedPod({
        namespace: ns,
        body: meshPod(name, 'container-mode', { proxy: 'container', validation: true }),
      });
      assert.deepEqual(
        pod.spec?.initContainers?.map((c) => c.name),
        ['mesh-validation'],
      );
      assert.deepEqual(
        pod.spec?.containers.map((c) => c.name),
        ['mesh-proxy', 'app', CONTAINER_NAME],
      );
      const pid = await redirectPod(pod);
      sandboxes.push(pid);
      await runningReady(name);
      assert.equal(await appLeader(name), name);
      const redirected = electorRedirected(pid);
      const stats = (await proxyStats(name))!;
      t.diagnostic(
        `container mode: elector connections through the redirect ${redirected}; proxy ${stats.conns} connections, ${stats.down} bytes down`,
      );
      assert.ok(redirected >= 1 && stats.conns >= redirected && stats.down > 1000);
    } finally {
      await node.kubectl([
        '-n',
        WEBHOOK_NAMESPACE,
        'set',
        'env',
        `deployment/${WEBHOOK_DEPLOYMENT}`,
        'WEBHOOK_ELECTOR_MODE-',
      ]);
      await webhookRollout(node);
    }
  });

  test('tidy: the rules lived in the pods network namespaces only, and went with them', async () => {
    assert.ok(sandboxes.length > 0, 'the tests above made pods');
    await core.deleteCollectionNamespacedPod({ namespace: ns, gracePeriodSeconds: 0 });
    await eventually(
      'every pod gone with its sandbox',
      async () =>
        (await core.listNamespacedPod({ namespace: ns })).items.length === 0 &&
        sandboxes.every((pid) => {
          try {
            process.kill(pid, 0);
            return false;
          } catch {
            return true;
          }
        }),
      120_000,
    );
    const now = hostRules();
    assert.ok(!now.includes(MARK), 'no rule of ours on the host');
    assert.equal(now, hostRulesBefore, "the host's rules are as before");
  });
});
