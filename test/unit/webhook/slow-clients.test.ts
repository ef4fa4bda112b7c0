/**
 * Slow clients (slowloris) found by the fault suite's HTTPS abuse (test/chaos/abuse.ts):
 * a client trickling header bytes must lose its connection at the header deadline, not
 * when Node's default checks (every 30 s, headers 60 s) get round to it.
 */
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect } from 'node:tls';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { createServingCertificate } from '../../../common/pki.ts';
import { createMetrics } from '../../../webhook/metrics.ts';
import { buildServer } from '../../../webhook/server.ts';
import { TEST_CONFIG } from '../../support/admission-reviews.ts';

let server: FastifyInstance;
let port: number;
let caPem: string;

before(async () => {
  const { ca, serving } = await createServingCertificate(['127.0.0.1']);
  caPem = ca.certPem;
  server = buildServer({
    logger: pino({ level: 'silent' }),
    injection: TEST_CONFIG,
    metrics: createMetrics({ defaultMetrics: false }),
    maxRequestBytes: 1024 * 1024,
    readiness: () => ({ ready: true }),
    tls: { cert: serving.certPem, key: serving.keyPem },
    headersTimeoutMs: 500,
  });
  await server.listen({ host: '127.0.0.1', port: 0 });
  port = (server.server.address() as AddressInfo).port;
});
after(() => server.close());

test('a client trickling its headers is cut off at the header deadline; others are served', async () => {
  const started = performance.now();
  const slow = connect({ host: '127.0.0.1', port, ca: caPem });
  slow.on('error', () => undefined);
  await new Promise((resolve) => slow.once('secureConnect', resolve));
  slow.write('POST /mutate HTTP/1.1\r\nHost: x\r\n');
  const closed = new Promise<number>((resolve) =>
    slow.once('close', () => resolve(performance.now() - started)),
  );
  const trickle = setInterval(() => slow.write('X'), 100);
  try {
    const ms = await Promise.race([closed, sleep(5000).then(() => Infinity)]);
    assert.ok(ms < 3000, `the slow client kept its connection for ${ms.toFixed(0)} ms (deadline 500 ms)`);
  } finally {
    clearInterval(trickle);
    slow.destroy();
  }
  const ok = await new Promise<number>((resolve) => {
    const s = connect({ host: '127.0.0.1', port, ca: caPem }, () =>
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    );
    let text = '';
    s.on('data', (c: Buffer) => (text += c.toString()));
    s.on('close', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0)));
    s.on('error', () => resolve(0));
  });
  assert.equal(ok, 200);
});
