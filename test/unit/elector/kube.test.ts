/**
 * The Kubernetes adapter against a scripted HTTP server on loopback: the requests it sends
 * (paths, selectors, bodies, preconditions) and how it reads answers, watch streams and
 * failures. The real API server is exercised by the integration tests.
 */
import { KubeConfig, type V1ContainerStatus } from '@kubernetes/client-node';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiError,
  leaseDraft,
  type ElectionStore,
  type PodWatchEvent,
  type WatchEvent,
} from '../../../elector/election.ts';
import { kubeConfigAccess } from '../../../elector/credentials.ts';
import { createKubeStore, podRecord } from '../../../elector/kube.ts';
import { ME } from './fakes.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;
let handler: Handler = (_req, res) => {
  res.statusCode = 500;
  res.end();
};
const seen: { method: string; url: URL; body: string; auth: string | undefined }[] = [];
let server: Server;
let store: ElectionStore;
const openSockets = new Set<Socket>();

before(async () => {
  server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => {
      seen.push({
        method: req.method ?? '',
        url: new URL(req.url ?? '/', 'http://x'),
        body,
        auth: req.headers.authorization,
      });
      handler(req, res, body);
    });
  });
  server.on('connection', (s) => {
    openSockets.add(s);
    s.on('close', () => openSockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'secret-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  store = createKubeStore({
    access: kubeConfigAccess(kc, 'test'),
    namespace: 'ns',
    election: 'app',
    requestTimeoutMs: 500,
  });
});
after(async () => {
  for (const s of openSockets) s.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});
beforeEach(() => {
  seen.length = 0;
});

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};
const status = (code: number, reason: string, message = reason) => ({
  kind: 'Status',
  apiVersion: 'v1',
  status: 'Failure',
  code,
  reason,
  message,
});
const leaseJson = (rv: string) => ({
  apiVersion: 'coordination.k8s.io/v1',
  kind: 'Lease',
  metadata: {
    name: 'app',
    namespace: 'ns',
    uid: 'lease-uid',
    resourceVersion: rv,
    ownerReferences: [{ apiVersion: 'v1', kind: 'Pod', name: 'app-1', uid: 'pod-uid' }],
    labels: { a: 'b' },
  },
  spec: { holderIdentity: 'app-1', acquireTime: '2024-01-01T00:00:00.000000Z' },
});

describe('requests', () => {
  test('list: one Lease by field selector, with the list resourceVersion; token sent', async () => {
    handler = (_req, res) =>
      json(res, 200, { kind: 'LeaseList', metadata: { resourceVersion: '77' }, items: [leaseJson('70')] });
    const r = await store.list(AbortSignal.timeout(2000));
    assert.equal(r.resourceVersion, '77');
    assert.deepEqual(r.lease, {
      name: 'app',
      uid: 'lease-uid',
      resourceVersion: '70',
      holderIdentity: 'app-1',
      leaseDurationSeconds: undefined,
      renewTime: undefined,
      owners: [{ apiVersion: 'v1', kind: 'Pod', name: 'app-1', uid: 'pod-uid' }],
      labels: { a: 'b' },
      annotations: {},
    });
    const req = seen[0]!;
    assert.equal(req.url.pathname, '/apis/coordination.k8s.io/v1/namespaces/ns/leases');
    assert.equal(req.url.searchParams.get('fieldSelector'), 'metadata.name=app');
    assert.equal(req.auth, 'Bearer secret-token');
  });

  test('list: empty', async () => {
    handler = (_req, res) =>
      json(res, 200, { kind: 'LeaseList', metadata: { resourceVersion: '5' }, items: [] });
    assert.deepEqual(await store.list(AbortSignal.timeout(2000)), { lease: null, resourceVersion: '5' });
  });

  test('create: the Lease body (owner, holder, MicroTime with 6 digits, labels); 409 maps to code 409', async () => {
    handler = (_req, res) => json(res, 409, status(409, 'AlreadyExists', 'leases "app" already exists'));
    await assert.rejects(
      store.create(leaseDraft(ME, Date.parse('2024-02-03T04:05:06.789Z')), AbortSignal.timeout(2000)),
      (err) => {
        assert.ok(err instanceof ApiError);
        assert.equal(err.code, 409);
        assert.equal(err.reason, 'AlreadyExists');
        return true;
      },
    );
    const req = seen[0]!;
    assert.equal(req.method, 'POST');
    const body = JSON.parse(req.body) as {
      metadata: { name: string; ownerReferences: unknown[]; labels: Record<string, string> };
      spec: { holderIdentity: string; acquireTime: string; leaseDurationSeconds?: number };
    };
    assert.equal(body.metadata.name, 'app');
    assert.deepEqual(body.metadata.ownerReferences, [
      { apiVersion: 'v1', kind: 'Pod', name: ME.podName, uid: ME.podUid },
    ]);
    assert.equal(body.spec.holderIdentity, ME.hostname);
    assert.equal(body.spec.acquireTime, '2024-02-03T04:05:06.789000Z');
    assert.equal(body.spec.leaseDurationSeconds, undefined);
  });

  test('getPod: 404 is null, other errors are ApiErrors', async () => {
    handler = (_req, res) => json(res, 404, status(404, 'NotFound'));
    assert.equal(await store.getPod('gone', AbortSignal.timeout(2000)), null);
    assert.equal(seen[0]!.url.pathname, '/api/v1/namespaces/ns/pods/gone');
    handler = (_req, res) => json(res, 403, status(403, 'Forbidden'));
    await assert.rejects(
      store.getPod('x', AbortSignal.timeout(2000)),
      (err) => err instanceof ApiError && err.code === 403,
    );
  });

  test('getPod: phase, deletion, resourceVersion and the elector container state', async () => {
    handler = (_req, res) =>
      json(res, 200, {
        metadata: { name: 'p', uid: 'u', resourceVersion: '81', deletionTimestamp: '2024-01-01T00:00:00Z' },
        status: { phase: 'Running' },
      });
    assert.deepEqual(await store.getPod('p', AbortSignal.timeout(2000)), {
      name: 'p',
      uid: 'u',
      resourceVersion: '81',
      phase: 'Running',
      terminating: true,
      elector: undefined,
    });
  });

  test('podRecord: the elector as a native sidecar (init container) or a classic container', () => {
    const base = { metadata: { name: 'p', uid: 'u', resourceVersion: '1' } };
    const sidecar = podRecord({
      ...base,
      status: {
        initContainerStatuses: [
          { name: 'elector', state: { terminated: { exitCode: 0 } } } as V1ContainerStatus,
        ],
        containerStatuses: [{ name: 'app', state: { running: {} } } as V1ContainerStatus],
      },
    });
    assert.equal(sidecar.elector, 'terminated');
    const classic = podRecord({
      ...base,
      status: { containerStatuses: [{ name: 'elector', state: { running: {} } } as V1ContainerStatus] },
    });
    assert.equal(classic.elector, 'running');
    const waiting = podRecord({
      ...base,
      status: {
        containerStatuses: [
          { name: 'elector', state: { waiting: { reason: 'CrashLoopBackOff' } } } as V1ContainerStatus,
        ],
      },
    });
    assert.equal(waiting.elector, 'waiting');
  });

  test('deleteLease: uid and resourceVersion preconditions in the body', async () => {
    handler = (_req, res) => json(res, 200, { kind: 'Status', status: 'Success' });
    await store.deleteLease({ uid: 'lease-uid', resourceVersion: '70' }, AbortSignal.timeout(2000));
    const req = seen[0]!;
    assert.equal(req.method, 'DELETE');
    assert.equal(req.url.pathname, '/apis/coordination.k8s.io/v1/namespaces/ns/leases/app');
    assert.deepEqual((JSON.parse(req.body) as { preconditions: unknown }).preconditions, {
      uid: 'lease-uid',
      resourceVersion: '70',
    });
  });

  test('a server that never answers: the request deadline ends it with code 0', async () => {
    handler = () => {};
    const t0 = Date.now();
    await assert.rejects(
      store.list(AbortSignal.timeout(10_000)),
      (err) => err instanceof ApiError && err.code === 0,
    );
    assert.ok(Date.now() - t0 < 2000);
  });

  test('a refused connection: code 0', async () => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: 'http://127.0.0.1:1', skipTLSVerify: true }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const dead = createKubeStore({ access: kubeConfigAccess(kc, 'test'), namespace: 'ns', election: 'app' });
    await assert.rejects(
      dead.list(AbortSignal.timeout(2000)),
      (err) => err instanceof ApiError && err.code === 0,
    );
  });
});

describe('watch', () => {
  function watch(signal: AbortSignal, timeoutSeconds = 5) {
    const events: WatchEvent[] = [];
    let opened = 0;
    const done = store.watch({
      resourceVersion: '70',
      timeoutSeconds,
      signal,
      onOpen: () => opened++,
      onEvent: (e) => events.push(e),
    });
    return { events, done, opened: () => opened };
  }

  test('query, events (added, bookmark, error), normal end', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'ADDED', object: leaseJson('71') })}\n`);
      res.write(
        `${JSON.stringify({ type: 'BOOKMARK', object: { kind: 'Lease', metadata: { resourceVersion: '72' } } })}\n{"type":"ERR`,
      );
      setTimeout(() => {
        res.write(`OR","object":${JSON.stringify(status(410, 'Expired', 'too old resource version'))}}\n`);
        res.end();
      }, 20);
    };
    const w = watch(AbortSignal.timeout(5000));
    await w.done;
    assert.equal(w.opened(), 1);
    assert.deepEqual(
      w.events.map((e) => e.type),
      ['ADDED', 'BOOKMARK', 'ERROR'],
    );
    assert.equal(w.events[0]!.type === 'ADDED' && w.events[0]!.lease.resourceVersion, '71');
    assert.deepEqual(w.events[1], { type: 'BOOKMARK', resourceVersion: '72' });
    assert.deepEqual(w.events[2], {
      type: 'ERROR',
      code: 410,
      reason: 'Expired',
      message: 'too old resource version',
    });
    const q = seen[0]!.url.searchParams;
    assert.equal(q.get('watch'), 'true');
    assert.equal(q.get('fieldSelector'), 'metadata.name=app');
    assert.equal(q.get('resourceVersion'), '70');
    assert.equal(q.get('allowWatchBookmarks'), 'true');
    assert.equal(q.get('timeoutSeconds'), '5');
    assert.equal(seen[0]!.auth, 'Bearer secret-token');
  });

  test('watchPod: the one Pod by field selector, from a resourceVersion; its last state on DELETED', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const podJson = (rv: string, extra: object) => ({
        kind: 'Pod',
        metadata: { name: 'leader-0', uid: 'u0', resourceVersion: rv, ...extra },
        status: {
          phase: 'Running',
          containerStatuses: [{ name: 'elector', state: { terminated: { exitCode: 0 } } }],
        },
      });
      res.write(
        `${JSON.stringify({ type: 'MODIFIED', object: podJson('91', { deletionTimestamp: 'x' }) })}\n`,
      );
      res.end(`${JSON.stringify({ type: 'DELETED', object: podJson('92', { deletionTimestamp: 'x' }) })}\n`);
    };
    const events: PodWatchEvent[] = [];
    await store.watchPod({
      name: 'leader-0',
      resourceVersion: '90',
      timeoutSeconds: 7,
      signal: AbortSignal.timeout(5000),
      onOpen: () => {},
      onEvent: (e) => events.push(e),
    });
    assert.deepEqual(
      events.map((e) => e.type),
      ['MODIFIED', 'DELETED'],
    );
    const last = events[1]!;
    assert.ok(last.type === 'DELETED');
    assert.deepEqual(
      { rv: last.pod.resourceVersion, terminating: last.pod.terminating, elector: last.pod.elector },
      { rv: '92', terminating: true, elector: 'terminated' },
    );
    assert.equal(seen[0]!.url.pathname, '/api/v1/namespaces/ns/pods');
    const q = seen[0]!.url.searchParams;
    assert.equal(q.get('watch'), 'true');
    assert.equal(q.get('fieldSelector'), 'metadata.name=leader-0');
    assert.equal(q.get('resourceVersion'), '90');
    assert.equal(q.get('timeoutSeconds'), '7');
  });

  test('non-200 answer: rejects with the status code and reason, never opens', async () => {
    handler = (_req, res) => json(res, 403, status(403, 'Forbidden', 'leases is forbidden'));
    const w = watch(AbortSignal.timeout(5000));
    await assert.rejects(
      w.done,
      (err) => err instanceof ApiError && err.code === 403 && err.reason === 'Forbidden',
    );
    assert.equal(w.opened(), 0);
  });

  test('a stream cut mid-way rejects (code 0)', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'ADDED', object: leaseJson('71') })}\n`);
      setTimeout(() => res.socket?.destroy(), 20);
    };
    const w = watch(AbortSignal.timeout(5000));
    await assert.rejects(w.done, (err) => err instanceof ApiError && err.code === 0);
    assert.equal(w.events.length, 1);
  });

  test('abort ends an open stream at once and closes the connection', async () => {
    handler = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('\n');
    };
    const ac = new AbortController();
    const w = watch(ac.signal);
    while (w.opened() === 0) await sleep(5);
    const sockets = openSockets.size;
    ac.abort();
    await w.done;
    for (let i = 0; i < 100 && openSockets.size >= sockets; i++) await sleep(5);
    assert.ok(openSockets.size < sockets, 'the connection was closed');
  });

  test('abort before the server answers ends it too (no hanging request)', async () => {
    handler = () => {};
    const ac = new AbortController();
    const w = watch(ac.signal);
    await sleep(50);
    const t0 = Date.now();
    ac.abort();
    await w.done;
    assert.ok(Date.now() - t0 < 200);
    assert.equal(w.opened(), 0);
  });

  test('no answer at all: the connect deadline rejects with code 0', async () => {
    handler = () => {};
    const w = watch(AbortSignal.timeout(10_000));
    await assert.rejects(w.done, (err) => err instanceof ApiError && err.code === 0);
  });
});
