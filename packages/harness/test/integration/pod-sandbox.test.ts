/**
 * The kubelet stand-in runs a container as its Pod spec says: own hostname and loopback,
 * downward-API env, in-cluster credentials bound to the Pod, a cuttable API path, and its
 * memory limit enforced by the kernel.
 */
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createMemoryCgroup } from '@lifelease/harness/memcg';
import { expand, PodSandbox, podHostname } from '@lifelease/harness/pod-sandbox';
import { sharedCluster, type TestCluster } from '@lifelease/harness/shared';
import { eventually } from '@lifelease/harness/wait';

const APP = path.resolve(import.meta.dirname, '../../../../test/fixtures/pod-app.ts');
const entrypoint = (image: string) => {
  assert.equal(image, 'example.invalid/pod-app');
  return [process.execPath, APP];
};

let cluster: TestCluster;
let ns: string;
before(async () => {
  cluster = await sharedCluster();
  ns = await cluster.createNamespace('sandbox');
});
after(() => cluster.release());

async function createPod(name: string, extra: Partial<V1Pod['spec']> = {}): Promise<V1Pod> {
  return cluster.kubeConfig.makeApiClient(CoreV1Api).createNamespacedPod({
    namespace: ns,
    body: {
      metadata: { name, labels: { team: 'blue' } },
      spec: {
        containers: [
          {
            name: 'app',
            image: 'example.invalid/pod-app',
            args: ['$(PORT)'],
            ports: [{ containerPort: 4040 }],
            // The kernel enforces it (a memory cgroup): the app with its client library needs ~120 MiB.
            resources: { limits: { memory: '192Mi' } },
            env: [
              { name: 'PORT', value: '4040' },
              { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
              { name: 'POD_UID', valueFrom: { fieldRef: { fieldPath: 'metadata.uid' } } },
              { name: 'TEAM', valueFrom: { fieldRef: { fieldPath: "metadata.labels['team']" } } },
              { name: 'MEM', valueFrom: { resourceFieldRef: { resource: 'limits.memory', divisor: '1Mi' } } },
              { name: 'URL', value: 'http://localhost:$(PORT)/' },
            ],
          },
        ],
        ...extra,
      },
    },
  });
}

describe('pod sandbox (kubelet stand-in)', () => {
  test('expands $(VAR) like the kubelet', () => {
    assert.equal(expand('a $(X) $(Y) $$(X)', { X: '1' }), 'a 1 $(Y) $(X)');
  });

  test('hostname is spec.hostname, else the pod name cut to 63 characters', () => {
    assert.equal(podHostname({ metadata: { name: 'a'.repeat(70) } }), 'a'.repeat(63));
    assert.equal(podHostname({ metadata: { name: 'p' }, spec: { hostname: 'h', containers: [] } }), 'h');
  });

  test('two pods bind the same port, each with its own hostname and downward-API env', async () => {
    const pods = await Promise.all([createPod('app-a'), createPod('app-b')]);
    const boxes = await Promise.all(
      pods.map((pod) => PodSandbox.start({ cluster, pod, container: 'app', entrypoint })),
    );
    try {
      for (const [i, box] of boxes.entries()) {
        const res = await eventually('the app to answer', () => box.get(4040, '/info'));
        const info = JSON.parse(res.body) as { hostname: string; env: Record<string, string> };
        const pod = pods[i]!;
        assert.equal(info.hostname, pod.metadata!.name);
        assert.equal(info.env['HOSTNAME'], pod.metadata!.name);
        assert.equal(info.env['POD_NAME'], pod.metadata!.name);
        assert.equal(info.env['POD_UID'], pod.metadata!.uid);
        assert.equal(info.env['TEAM'], 'blue');
        assert.equal(info.env['MEM'], '192');
        assert.equal(info.env['URL'], 'http://localhost:4040/');
      }
    } finally {
      await Promise.all(boxes.map((b) => b.stop()));
    }
  });

  test('with podNetwork, the pod has a routable IP the host reaches, known to the container as status.podIP', async () => {
    const pod = await createPod('app-net');
    pod.spec!.containers[0]!.args = ['$(PORT)', '$(POD_IP)'];
    pod.spec!.containers[0]!.env!.push({
      name: 'POD_IP',
      valueFrom: { fieldRef: { fieldPath: 'status.podIP' } },
    });
    const box = await PodSandbox.start({ cluster, pod, container: 'app', entrypoint, podNetwork: true });
    try {
      assert.match(box.podIP, /^10\.250\.\d+\.\d+$/);
      const body = await eventually('the app to answer', async () =>
        (await fetch(`http://${box.podIP}:4040/info`)).text(),
      );
      const info = JSON.parse(body) as { hostname: string; env: Record<string, string> };
      assert.equal(info.hostname, 'app-net');
      assert.equal(info.env['POD_IP'], box.podIP);
    } finally {
      await box.stop();
    }
  });

  test('secret volumes under /var/run are projected into the pod only', async () => {
    const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 'conf' }, stringData: { 'tls.crt': 'CERT', other: 'x' } },
    });
    const pod = await createPod('app-vol', {
      volumes: [
        { name: 'conf', secret: { secretName: 'conf', items: [{ key: 'tls.crt', path: 'tls.crt' }] } },
      ],
    });
    pod.spec!.containers[0]!.volumeMounts = [
      ...(pod.spec!.containers[0]!.volumeMounts ?? []),
      { name: 'conf', mountPath: '/var/run/secrets/app/conf', readOnly: true },
    ];
    const box = await PodSandbox.start({ cluster, pod, container: 'app', entrypoint });
    try {
      const res = await eventually('the app to answer', () =>
        box.get(4040, '/file?path=/var/run/secrets/app/conf/tls.crt'),
      );
      assert.deepEqual(JSON.parse(res.body), { content: 'CERT' });
      assert.equal((await box.get(4040, '/file?path=/var/run/secrets/app/conf/other')).status, 404);
      assert.ok(!existsSync('/var/run/secrets/app/conf/tls.crt'), 'the host does not see it');
    } finally {
      await box.stop();
    }
  });

  test("the container memory limit is the kernel's: within it the app runs, beyond it the kernel OOM-kills it", async (t) => {
    const probe = createMemoryCgroup('probe', 64);
    if (!probe) return t.skip('this machine lets us make no memory cgroup');
    probe.remove();
    const pod = await createPod('app-oom');
    const box = await PodSandbox.start({ cluster, pod, container: 'app', entrypoint });
    try {
      assert.ok(box.memoryCgroup, 'a container with a memory limit runs in a memory cgroup');
      assert.equal(box.memoryCgroup.limitMiB, 192);
      const within = await eventuallyGet(box, '/alloc?mib=16');
      assert.equal(within.status, 200, within.body);
      assert.equal(box.oomKills(), 0);
      await box.get(4040, '/alloc?mib=400').catch(() => undefined);
      const exit = await box.process.exited;
      assert.equal(exit.code, 137, `exit ${JSON.stringify(exit)}`);
      assert.ok(box.oomKills() >= 1, `oom kills: ${box.oomKills()}`);
    } finally {
      await box.stop();
    }
  });

  test('in-cluster credentials are bound to the pod, and the API path can be cut', async () => {
    // The ServiceAccount admission plugin mounts the token into every container.
    const pod = await createPod('app-creds');
    assert.ok(
      pod.spec!.containers[0]!.volumeMounts?.some(
        (m) => m.mountPath === '/var/run/secrets/kubernetes.io/serviceaccount',
      ),
    );
    const box = await PodSandbox.start({ cluster, pod, container: 'app', entrypoint });
    try {
      const who = await eventually('the app to answer', () => box.get(4040, '/whoami'));
      assert.equal(who.status, 200, who.body);
      assert.deepEqual(JSON.parse(who.body), {
        user: `system:serviceaccount:${ns}:default`,
        server: `https://127.0.0.1:${new URL(cluster.server).port}`,
      });
      box.cutApiServer();
      assert.equal((await box.get(4040, '/whoami')).status, 502);
      box.restoreApiServer();
      assert.equal((await box.get(4040, '/whoami')).status, 200);
      // Deleting the pod invalidates its bound token, as in a real cluster (after the API
      // server's token-authentication cache, 10 s, expires).
      await cluster.kubeConfig
        .makeApiClient(CoreV1Api)
        .deleteNamespacedPod({ name: 'app-creds', namespace: ns });
      let status = 200;
      for (let i = 0; i < 300 && status === 200; i++) {
        status = (await box.get(4040, '/whoami')).status;
        if (status === 200) await sleep(100);
      }
      assert.equal(status, 502);
    } finally {
      const { code } = await box.stop();
      assert.equal(code, 0, 'SIGTERM reaches the container, which exits cleanly');
    }
  });
});

/** GET on the pod's loopback, retried while the app starts. */
async function eventuallyGet(box: PodSandbox, url: string): Promise<{ status: number; body: string }> {
  return eventually(`GET ${url} to answer`, () => box.get(4040, url));
}
