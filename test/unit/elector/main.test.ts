/**
 * The elector command in process: `run({ argv, env, stdout, stderr, signal })` returns its
 * exit code: 0 for --help and after its signal aborts, 2 for invalid configuration (every
 * problem on stderr), 1 when it has no credentials. Against an API server that does not
 * answer, it listens, is alive and not ready, and shuts down at once when aborted.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { run } from '../../../elector/main.ts';
import { eventually } from '@lifelease/harness/wait';

function streams() {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    stdout: { write: (s: string) => out.push(s) },
    stderr: { write: (s: string) => err.push(s) },
    lines: () =>
      out
        .join('')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

const POD = { POD_NAME: 'app-0', POD_NAMESPACE: 'default', POD_UID: 'uid-0', HOSTNAME: 'app-0' };

function status(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    request(url, { agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    })
      .on('error', reject)
      .end();
  });
}

describe('run()', () => {
  test('--help: usage on stdout, 0', async () => {
    const s = streams();
    const code = await run({ argv: ['--help'], env: {}, ...s, signal: new AbortController().signal });
    assert.equal(code, 0);
    assert.match(s.out.join(''), /--election/);
  });

  test('invalid configuration: every problem on stderr, 2', async () => {
    const s = streams();
    const code = await run({
      argv: ['--election=Not_A_Name', '--log-level=loud'],
      env: POD,
      ...s,
      signal: new AbortController().signal,
    });
    assert.equal(code, 2);
    const text = s.err.join('');
    assert.match(text, /invalid configuration/);
    assert.match(text, /loud/);
    assert.equal(s.out.length, 0);
  });

  test('no credentials: a fatal log line, 1', async () => {
    const s = streams();
    const home = mkdtempSync(path.join(tmpdir(), 'elector-run-'));
    const code = await run({
      argv: ['--election=app', '--http=127.0.0.1:0', '--probe-address=127.0.0.1:0'],
      env: { ...POD, HOME: home, KUBECONFIG: path.join(home, 'missing.json') },
      ...s,
      signal: new AbortController().signal,
    });
    assert.equal(code, 1);
    assert.deepEqual(
      s.lines().map((l) => [l['level'], l['msg']]),
      [['fatal', 'cannot load Kubernetes credentials (in-cluster service account or KUBECONFIG)']],
    );
  });

  test('an unreachable API server: it listens, is alive and not ready; aborting ends it with 0', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'elector-run-'));
    const kubeconfig = path.join(dir, 'kubeconfig.json');
    // Port 9 (discard) on loopback: nothing listens, every request fails at once.
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        'current-context': 'c',
        contexts: [{ name: 'c', context: { cluster: 'c', user: 'u' } }],
        clusters: [{ name: 'c', cluster: { server: 'http://127.0.0.1:9' } }],
        users: [{ name: 'u', user: { token: 't' } }],
      }),
    );
    const s = streams();
    const controller = new AbortController();
    const running = run({
      argv: ['--election=app', '--http=127.0.0.1:0', '--probe-address=127.0.0.1:0'],
      env: { ...POD, KUBECONFIG: kubeconfig },
      ...s,
      signal: controller.signal,
    });
    const started = await eventually('the elector listens', () =>
      s.lines().find((l) => l['msg'] === 'elector started'),
    );
    const probe = `http://${String(started['probe'])}`;
    const api = `http://${(started['http'] as string[])[0]}`;
    assert.equal(await status(`${probe}/healthz`), 200);
    assert.equal(await status(`${probe}/readyz`), 503);
    assert.equal(await status(`${api}/`), 503);
    for (const l of s.lines()) {
      assert.equal(l['election'], 'app');
      assert.equal(l['pod'], 'app-0');
      assert.equal(typeof l['time'], 'string');
    }
    controller.abort('SIGTERM');
    assert.equal(await running, 0);
    assert.ok(
      s.lines().some((l) => l['msg'] === 'shutting down (the lease stays)' && l['signal'] === 'SIGTERM'),
    );
    await assert.rejects(status(`${probe}/healthz`), /ECONNREFUSED/);
  });
});
