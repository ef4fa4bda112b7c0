/** The `webhook` command as a process: start-up, serving, exit codes, shutdown, cert reload. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:https';
import path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServingCertificate } from '../../../common/pki.ts';
import { eventually, stretched } from '@lifelease/harness/wait';
import { createReview } from '../../support/admission-reviews.ts';
import { startWebhookProcess } from '../../support/webhook-process.ts';

const MAIN = path.resolve(import.meta.dirname, '../../../webhook/main.ts');

function post(
  url: string,
  ca: string,
  body: unknown,
  agent: Agent | false = false,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const req = request(
      `${url}/mutate`,
      { method: 'POST', ca, agent, headers: { 'content-type': 'application/json' }, timeout: 5000 },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (data += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(data) as unknown }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

const pod = {
  metadata: { name: 'p', namespace: 'n', labels: { leaderElection: 'true', app: 'a' } },
  spec: { containers: [{ name: 'a', image: 'a' }] },
};

describe('webhook process', () => {
  test('invalid configuration: every problem on stderr, exit 2', () => {
    const r = spawnSync(process.execPath, [MAIN, '--elector-mode=nope', '--listen-address=x'], {
      encoding: 'utf8',
      env: { PATH: process.env['PATH'] ?? '' },
      timeout: stretched(20_000),
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--tls-cert-file .* is required/);
    assert.match(r.stderr, /--elector-mode/);
    assert.match(r.stderr, /--listen-address/);
  });

  test('unreadable TLS files: a fatal log, exit 1', () => {
    const r = spawnSync(
      process.execPath,
      [
        MAIN,
        '--tls-cert-file=/nonexistent/c',
        '--tls-private-key-file=/nonexistent/k',
        '--elector-image=i',
        '--reconcile-rbac=false',
      ],
      { encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '' }, timeout: stretched(20_000) },
    );
    assert.equal(r.status, 1);
    assert.match(r.stdout, /cannot read the TLS files/);
  });

  test('serves over HTTPS, reloads a rotated certificate, stops on SIGTERM with exit 0', async () => {
    const wh = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--log-level=debug'] });
    try {
      const res = await post(wh.url, wh.caPem, createReview(pod));
      assert.equal(res.status, 200);
      assert.equal((res.json as { response: { allowed: boolean } }).response.allowed, true);
      await wh.waitForLog('elector injected', 5000, (l) => l['election'] === 'a');

      const next = await createServingCertificate(['127.0.0.1']);
      await writeFile(wh.keyFile, next.serving.keyPem);
      await writeFile(wh.certFile, next.serving.certPem);
      await wh.waitForLog('serving certificate reloaded', 10_000);
      // The reload interval is 200 ms; give a fresh connection the new certificate.
      await sleep(50);
      assert.equal((await post(wh.url, next.ca.certPem, createReview(pod))).status, 200);
    } finally {
      assert.equal(await wh.stop(), 0);
    }
    await wh.waitForLog('webhook stopped', 1000);
  });

  test('a log reader that stops reading holds no review back; its lines follow once it reads', async () => {
    const wh = await startWebhookProcess({ args: ['--reconcile-rbac=false'] });
    const agent = new Agent({ keepAlive: true, maxSockets: 8, ca: wh.caPem });
    try {
      wh.child.stdout!.pause();
      // ~250 KB of log lines: more than the pipe and the reader's buffer hold.
      const reviews = 1000;
      for (let sent = 0; sent < reviews; sent += 50) {
        const answers = await Promise.all(
          Array.from({ length: 50 }, () => post(wh.url, wh.caPem, createReview(pod), agent)),
        );
        for (const a of answers) assert.equal(a.status, 200);
      }
      const injected = () => wh.logs.filter((l) => l['msg'] === 'elector injected').length;
      assert.ok(
        injected() < reviews,
        `the reader got all ${reviews} lines while paused: the pipe never filled`,
      );
      wh.child.stdout!.resume();
      await eventually('every review line', () => injected() === reviews, 20_000);
    } finally {
      agent.destroy();
      assert.equal(await wh.stop(), 0);
    }
  });

  test('--shutdown-delay: not ready, still serving, then exit 0', async () => {
    const wh = await startWebhookProcess({ args: ['--reconcile-rbac=false', '--shutdown-delay=1500ms'] });
    wh.child.kill('SIGTERM');
    await wh.waitForLog('draining: not ready, still serving');
    const ready = await new Promise<number>((resolve, reject) => {
      request(`${wh.url}/readyz`, { ca: wh.caPem, agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on('error', reject)
        .end();
    });
    assert.equal(ready, 503);
    assert.equal((await post(wh.url, wh.caPem, createReview(pod))).status, 200);
    assert.equal(await wh.exited, 0);
    await wh.stop();
  });
});
