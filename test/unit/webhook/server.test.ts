/**
 * The HTTP layer: routes through `app.inject()`, then the real thing over HTTPS on loopback
 * (TLS versions, certificate reload without dropping keep-alive connections).
 */
import type { FastifyInstance } from 'fastify';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request as httpsRequest, type RequestOptions } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect as tlsConnect, type Server as TlsServer, type TLSSocket } from 'node:tls';
import pino from 'pino';
import { eventually } from '@lifelease/harness/wait';
import { createLogger } from '../../../common/logger.ts';
import { createServingCertificate } from '../../../common/pki.ts';
import { createMetrics } from '../../../webhook/metrics.ts';
import { buildServer, KEEP_ALIVE_TIMEOUT_MS, type Readiness } from '../../../webhook/server.ts';
import { CertificateReloader, secureContextOptions } from '../../../webhook/tls.ts';
import { createReview, decodePatch, TEST_CONFIG } from '../../support/admission-reviews.ts';

const silent = pino({ level: 'silent' });
const LIMIT = 2 * 1024 * 1024;

const opted = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { generateName: 'web-', namespace: 'team', labels: { app: 'web', leaderElection: 'true' } },
  spec: { containers: [{ name: 'web', image: 'web:1' }] },
};

function app(readiness: () => Readiness = () => ({ ready: true })) {
  const metrics = createMetrics({ defaultMetrics: false });
  return {
    metrics,
    app: buildServer({ logger: silent, injection: TEST_CONFIG, metrics, maxRequestBytes: LIMIT, readiness }),
  };
}

describe('routes (inject)', () => {
  let server: FastifyInstance;
  let metricsText: () => Promise<string>;
  before(async () => {
    const built = app();
    server = built.app;
    metricsText = () => built.metrics.registry.metrics();
    await server.ready();
  });
  after(() => server.close());

  test('POST /mutate answers an AdmissionReview with the uid and a patch', async () => {
    const body = createReview(opted);
    const res = await server.inject({ method: 'POST', url: '/mutate', payload: body });
    assert.equal(res.statusCode, 200);
    assert.match(res.headers['content-type'] ?? '', /application\/json/);
    const review = res.json<Parameters<typeof decodePatch>[0]>();
    assert.equal(review.response.uid, body.request.uid);
    assert.ok(decodePatch(review).length > 0);
  });

  test('refusals are 200 AdmissionReviews with allowed: false', async () => {
    const body = createReview({ ...opted, spec: { ...opted.spec, hostNetwork: true } });
    const res = await server.inject({ method: 'POST', url: '/mutate', payload: body });
    assert.equal(res.statusCode, 200);
    const r = res.json<{ response: { uid: string; allowed: boolean; status: { message: string } } }>();
    assert.equal(r.response.uid, body.request.uid);
    assert.equal(r.response.allowed, false);
    assert.match(r.response.status.message, /hostNetwork/);
  });

  const bad: {
    name: string;
    headers: Record<string, string>;
    payload: string;
    status: number;
    message: RegExp;
  }[] = [
    {
      name: 'another content type',
      headers: { 'content-type': 'text/plain' },
      payload: 'hello',
      status: 415,
      message: /Content-Type: application\/json/,
    },
    {
      name: 'YAML',
      headers: { 'content-type': 'application/yaml' },
      payload: 'a: 1',
      status: 415,
      message: /as JSON/,
    },
    {
      name: 'broken JSON',
      headers: { 'content-type': 'application/json' },
      payload: '{"a":',
      status: 400,
      message: /not valid JSON/,
    },
    {
      name: 'empty JSON body',
      headers: { 'content-type': 'application/json' },
      payload: '',
      status: 400,
      message: /empty/,
    },
    {
      name: 'not an AdmissionReview',
      headers: { 'content-type': 'application/json' },
      payload: JSON.stringify({ apiVersion: 'v1', kind: 'Pod' }),
      status: 400,
      message: /expected apiVersion "admission.k8s.io\/v1"/,
    },
    {
      name: 'a JSON array',
      headers: { 'content-type': 'application/json' },
      payload: '[]',
      status: 400,
      message: /JSON object/,
    },
    {
      name: 'proto poisoning',
      headers: { 'content-type': 'application/json' },
      payload: '{"__proto__":{"x":1}}',
      status: 400,
      message: /.+/,
    },
  ];
  for (const c of bad) {
    test(`${c.name}: ${c.status} with a clear message`, async () => {
      const res = await server.inject({
        method: 'POST',
        url: '/mutate',
        headers: c.headers,
        payload: c.payload,
      });
      assert.equal(res.statusCode, c.status, res.body);
      assert.match(res.json<{ message: string }>().message, c.message);
    });
  }

  test('a body above the limit is 413; one just below is served', async () => {
    const big = createReview({
      ...opted,
      metadata: { ...opted.metadata, annotations: { pad: 'x'.repeat(LIMIT) } },
    });
    const res = await server.inject({ method: 'POST', url: '/mutate', payload: big });
    assert.equal(res.statusCode, 413);
    assert.match(res.json<{ message: string }>().message, /larger than 2097152 bytes/);

    // Over fastify's 1 MiB default, under our limit: a large but legal pod.
    const large = createReview({
      ...opted,
      metadata: { ...opted.metadata, annotations: { pad: 'x'.repeat(1_500_000) } },
    });
    const ok = await server.inject({ method: 'POST', url: '/mutate', payload: large });
    assert.equal(ok.statusCode, 200);
  });

  test('probes, 404, and metrics with outcome/reason and ms buckets', async () => {
    assert.equal((await server.inject('/healthz')).statusCode, 200);
    assert.equal((await server.inject('/readyz')).statusCode, 200);
    const nf = await server.inject('/nope');
    assert.equal(nf.statusCode, 404);
    assert.match(nf.json<{ message: string }>().message, /POST \/mutate/);
    assert.equal((await server.inject('/mutate')).statusCode, 404);

    const text = await metricsText();
    assert.match(
      text,
      /lifelease_webhook_admission_reviews_total\{outcome="patched",reason="injected"\} [1-9]/,
    );
    assert.match(
      text,
      /lifelease_webhook_admission_reviews_total\{outcome="denied",reason="host-network"\} 1/,
    );
    assert.match(text, /lifelease_webhook_rejected_requests_total\{reason="unsupported-media-type"\} 2/);
    assert.match(text, /lifelease_webhook_rejected_requests_total\{reason="too-large"\} 1/);
    assert.match(text, /lifelease_webhook_rejected_requests_total\{reason="invalid-review"\} 2/);
    assert.match(
      text,
      /lifelease_webhook_admission_duration_seconds_bucket\{le="0.00025",outcome="patched"\}/,
    );
    assert.match(text, /lifelease_webhook_admission_duration_seconds_count\{outcome="rejected"\} [1-9]/);
  });

  test('readyz reports why it is not ready', async () => {
    const built = app(() => ({ ready: false, reason: 'shutting down' }));
    const res = await built.app.inject('/readyz');
    assert.equal(res.statusCode, 503);
    assert.deepEqual(res.json(), { status: 'not ready', reason: 'shutting down' });
    await built.app.close();
  });
});

describe('log lines', () => {
  test('one line per review through the server logger, with the request id; request.log still logs an error', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({
      level: 'debug',
      stream: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) },
      base: { component: 'webhook' },
    });
    const server = buildServer({
      logger,
      injection: TEST_CONFIG,
      metrics: createMetrics({ defaultMetrics: false }),
      maxRequestBytes: LIMIT,
      readiness: () => ({ ready: true }),
    });
    server.get('/boom', () => {
      throw new Error('boom');
    });
    try {
      const review = createReview(opted);
      const res = await server.inject({ method: 'POST', url: '/mutate', payload: review });
      assert.equal(res.statusCode, 200);
      const line = await eventually('the review line', () =>
        lines.find((l) => l['msg'] === 'elector injected'),
      );
      assert.deepEqual(Object.keys(line), [
        'level',
        'time',
        'component',
        'reqId',
        'uid',
        'namespace',
        'pod',
        'outcome',
        'reason',
        'election',
        'msg',
      ]);
      assert.match(String(line['reqId']), /^req-/);
      assert.equal(line['uid'], review.request.uid);
      assert.equal(line['outcome'], 'patched');
      assert.equal(line['level'], 'info');

      const notOpted = { ...opted, metadata: { ...opted.metadata, labels: { app: 'web' } } };
      await server.inject({ method: 'POST', url: '/mutate', payload: createReview(notOpted) });
      const allowed = await eventually('the allowed line', () =>
        lines.find((l) => l['msg'] === 'pod allowed'),
      );
      assert.equal(allowed['level'], 'debug');
      assert.equal(allowed['reason'], 'not-opted-in');

      assert.equal((await server.inject('/boom')).statusCode, 500);
      const failed = await eventually('the error line', () =>
        lines.find((l) => l['msg'] === 'request failed'),
      );
      assert.match(String(failed['reqId']), /^req-/);
      assert.equal((failed['err'] as { message: string }).message, 'boom');
      assert.equal(failed['level'], 'error');
    } finally {
      await server.close();
    }
  });
});

// ---------------------------------------------------------------------------------------

interface Response {
  status: number;
  body: string;
  socket: TLSSocket;
}

function post(port: number, options: RequestOptions, body: unknown): Promise<Response> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
        timeout: 5000,
        ...options,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data, socket }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

function handshake(port: number, options: { ca: string; maxVersion?: 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3' }) {
  return new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({
      host: '127.0.0.1',
      port,
      ca: options.ca,
      ...(options.maxVersion ? { maxVersion: options.maxVersion } : {}),
    });
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

describe('over HTTPS', () => {
  let dir: string;
  let server: FastifyInstance;
  let reloader: CertificateReloader;
  let port: number;
  let caPem: string;
  const certFile = () => path.join(dir, 'tls.crt');
  const keyFile = () => path.join(dir, 'tls.key');
  const agents: Agent[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'webhook-tls-'));
    const { ca, serving } = await createServingCertificate(['127.0.0.1', 'localhost']);
    caPem = ca.certPem;
    await writeFile(certFile(), serving.certPem);
    await writeFile(keyFile(), serving.keyPem);
    reloader = await CertificateReloader.load({
      certFile: certFile(),
      keyFile: keyFile(),
      intervalMs: 60_000,
    });
    const metrics = createMetrics({ defaultMetrics: false });
    server = buildServer({
      logger: silent,
      injection: TEST_CONFIG,
      metrics,
      maxRequestBytes: LIMIT,
      readiness: () => ({ ready: true }),
      tls: secureContextOptions(reloader.current),
    });
    await server.listen({ host: '127.0.0.1', port: 0 });
    reloader.start(server.server as unknown as TlsServer);
    port = (server.server.address() as AddressInfo).port;
  });
  after(async () => {
    reloader.stop();
    for (const a of agents) a.destroy();
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('serves an AdmissionReview over TLS, verified against the CA, SAN 127.0.0.1', async () => {
    const res = await post(port, { ca: caPem, agent: false }, createReview(opted));
    assert.equal(res.status, 200);
    assert.equal((JSON.parse(res.body) as { response: { allowed: boolean } }).response.allowed, true);
  });

  test('an idle keep-alive connection outlives the API server’s (client-go closes idle ones at 90 s)', () => {
    const https = server.server as unknown as { keepAliveTimeout: number };
    assert.equal(https.keepAliveTimeout, KEEP_ALIVE_TIMEOUT_MS);
    assert.ok(KEEP_ALIVE_TIMEOUT_MS > 90_000);
  });

  test('TLS 1.1 is refused; 1.2 and 1.3 are accepted', async () => {
    await assert.rejects(handshake(port, { ca: caPem, maxVersion: 'TLSv1.1' }));
    for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
      const s = await handshake(port, { ca: caPem, maxVersion: v });
      assert.equal(s.getProtocol(), v);
      s.destroy();
    }
  });

  test('a rotated certificate is used for new connections; a keep-alive connection carries on', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1, ca: caPem });
    agents.push(agent);
    const first = await post(port, { agent }, createReview(opted));
    assert.equal(first.status, 200);
    const oldSerial = first.socket.getPeerCertificate().serialNumber;

    // A half-done rotation (new certificate, old key) is not applied.
    const next = await createServingCertificate(['127.0.0.1']);
    await writeFile(certFile(), next.serving.certPem);
    const half = await reloader.check();
    assert.equal(half.kind, 'failed');

    await writeFile(keyFile(), next.serving.keyPem);
    const done = await reloader.check();
    assert.equal(done.kind, 'reloaded');
    assert.equal((await reloader.check()).kind, 'unchanged');

    // The established connection keeps working, on the same socket.
    const second = await post(port, { agent }, createReview(opted));
    assert.equal(second.status, 200);
    assert.equal(second.socket, first.socket, 'the keep-alive socket was reused');

    // New connections see the new certificate: the old CA no longer verifies it.
    await assert.rejects(
      post(port, { ca: caPem, agent: false }, createReview(opted)),
      /self-signed|unable to verify|certificate/i,
    );
    const fresh = await post(port, { ca: next.ca.certPem, agent: false }, createReview(opted));
    assert.equal(fresh.status, 200);
    assert.notEqual(fresh.socket.getPeerCertificate().serialNumber, oldSerial);
  });
});
