/**
 * The `webhook` command in process: `run()` with its argv, env, streams and an AbortSignal,
 * as cli.ts and the program entry call it. Exit codes, logs, serving, and shutdown by
 * signal or crash, without spawning a process (main.test.ts runs it as one).
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { createServingCertificate } from '../../../common/pki.ts';
import { run } from '../../../webhook/main.ts';
import { until } from '../../support/clock.ts';
import { createReview } from '../../support/admission-reviews.ts';

/** A stream that keeps what was written, as text and as JSON log lines. */
function capture() {
  const stream = new PassThrough();
  let text = '';
  stream.setEncoding('utf8');
  stream.on('data', (c: string) => (text += c));
  return {
    stream,
    get text() {
      return text;
    },
    get logs(): Record<string, unknown>[] {
      return text
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

function start(argv: string[], env: Record<string, string> = {}) {
  const stdout = capture();
  const stderr = capture();
  const stop = new AbortController();
  const exit = run({ argv, env, stdout: stdout.stream, stderr: stderr.stream, signal: stop.signal });
  return { stdout, stderr, stop, exit };
}

let dir: string;
let tlsArgs: string[];
let caPem: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'webhook-run-'));
  const { ca, serving } = await createServingCertificate(['127.0.0.1']);
  caPem = ca.certPem;
  await writeFile(path.join(dir, 'tls.crt'), serving.certPem);
  await writeFile(path.join(dir, 'tls.key'), serving.keyPem, { mode: 0o600 });
  tlsArgs = [
    `--tls-cert-file=${path.join(dir, 'tls.crt')}`,
    `--tls-private-key-file=${path.join(dir, 'tls.key')}`,
    '--listen-address=127.0.0.1:0',
    '--elector-image=registry.example/lifelease:test',
    '--reconcile-rbac=false',
    '--shutdown-delay=0s',
  ];
});
after(() => rm(dir, { recursive: true, force: true }));

function post(url: string, body: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    request(
      `${url}/mutate`,
      { method: 'POST', ca: caPem, agent: false, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    )
      .on('error', reject)
      .end(JSON.stringify(body));
  });
}

describe('webhook run()', () => {
  test('--help: the flags on stdout, exit 0; invalid: every problem on stderr, exit 2', async () => {
    const help = start(['--help']);
    assert.equal(await help.exit, 0);
    assert.match(help.stdout.text, /--tls-cert-file/);
    assert.equal(help.stderr.text, '');

    const bad = start(['--elector-mode=nope', '--listen-address=x']);
    assert.equal(await bad.exit, 2);
    assert.match(bad.stderr.text, /--tls-cert-file .* is required/);
    assert.match(bad.stderr.text, /--elector-mode/);
    assert.match(bad.stderr.text, /--listen-address/);
  });

  test('the environment it is given is the one it reads (not process.env)', async () => {
    const r = start([], { WEBHOOK_ELECTOR_MODE: 'nope' });
    assert.equal(await r.exit, 2);
    assert.match(r.stderr.text, /WEBHOOK_ELECTOR_MODE/);
  });

  test('unreadable TLS files: a fatal log line, exit 1', async () => {
    const r = start([
      '--tls-cert-file=/nonexistent/c',
      '--tls-private-key-file=/nonexistent/k',
      '--elector-image=i',
      '--reconcile-rbac=false',
    ]);
    assert.equal(await r.exit, 1);
    const fatal = r.stdout.logs.find((l) => l['msg'] === 'webhook failed to start');
    assert.ok(fatal, r.stdout.text);
    assert.match(JSON.stringify(fatal), /cannot read the TLS files/);
  });

  test('serves reviews until its signal aborts with a signal name: exit 0', async () => {
    const r = start(tlsArgs);
    await until(() => r.stdout.logs.some((l) => l['msg'] === 'webhook listening'), 'listening');
    const listening = r.stdout.logs.find((l) => l['msg'] === 'webhook listening')!;
    const url = `https://${String(listening['address'])}`;
    const pod = {
      metadata: { name: 'p', namespace: 'n', labels: { leaderElection: 'true' } },
      spec: { containers: [{ name: 'a', image: 'a' }] },
    };
    assert.equal(await post(url, createReview(pod)), 200);
    r.stop.abort('SIGTERM');
    assert.equal(await r.exit, 0);
    const stopped = r.stdout.logs.find((l) => l['msg'] === 'webhook stopped');
    assert.equal(stopped?.['signal'], 'SIGTERM');
    await assert.rejects(post(url, createReview(pod)), /ECONNREFUSED/, 'the port is closed');
  });

  test('aborted with an Error (a crash): logged, stopped without draining, exit 1', async () => {
    const r = start([...tlsArgs, '--shutdown-delay=30s']);
    await until(() => r.stdout.logs.some((l) => l['msg'] === 'webhook listening'), 'listening');
    r.stop.abort(new Error('boom'));
    assert.equal(await r.exit, 1);
    const msgs = r.stdout.logs.map((l) => l['msg']);
    assert.ok(msgs.includes('webhook crashed'));
    assert.ok(!msgs.includes('draining: not ready, still serving'), 'a crash does not drain');
    assert.ok(msgs.includes('webhook stopped'));
  });
});
