/**
 * The elector's own credential reader: the in-cluster service account (token read again on
 * every request, as the kubelet rotates it), a JSON kubeconfig with the common fields, and
 * the hand-over to client-node for anything else.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  inClusterAccess,
  jsonKubeconfigAccess,
  loadKubeAccess,
  type HeaderedOptions,
} from '../../../elector/credentials.ts';

function dir(files: Record<string, string>): string {
  const d = mkdtempSync(path.join(tmpdir(), 'lifelease-cred-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(d, name), text);
  return d;
}
async function auth(access: { apply(o: HeaderedOptions): Promise<void> }): Promise<string | undefined> {
  const o: HeaderedOptions = { headers: {} };
  await access.apply(o);
  return o.headers['Authorization'];
}
const kubeconfig = (cluster: object, user: object) =>
  JSON.stringify({
    'current-context': 'x',
    contexts: [
      { name: 'x', context: { cluster: 'c', user: 'u' } },
      { name: 'y', context: {} },
    ],
    clusters: [{ name: 'c', cluster }],
    users: [{ name: 'u', user }],
  });

describe('in-cluster', () => {
  test('server from the kubelet env (IPv6 in brackets); the token is read again on every request', async () => {
    const d = dir({ token: 'one\n', 'ca.crt': 'not checked here' });
    const access = inClusterAccess({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, d);
    assert.equal(access.server, 'https://[fd00::1]:443');
    assert.equal(await auth(access), 'Bearer one');
    writeFileSync(path.join(d, 'token'), 'two');
    assert.equal(await auth(access), 'Bearer two', 'a rotated token is used at once');
  });
  test('no env or no token: an error at start, not at the first request', () => {
    assert.throws(() => inClusterAccess({}, dir({ token: 't', 'ca.crt': 'x' })), /KUBERNETES_SERVICE_HOST/);
    assert.throws(() =>
      inClusterAccess({ KUBERNETES_SERVICE_HOST: 'h', KUBERNETES_SERVICE_PORT: '1' }, dir({ 'ca.crt': 'x' })),
    );
  });
});

describe('JSON kubeconfig', () => {
  test('token, or tokenFile relative to the kubeconfig; trailing slash of the server dropped', async () => {
    const d = dir({ tok: 'from-file' });
    const a = jsonKubeconfigAccess(
      kubeconfig({ server: 'https://h:6443/' }, { token: 't' }),
      path.join(d, 'c'),
    )!;
    assert.equal(a.server, 'https://h:6443');
    assert.equal(await auth(a), 'Bearer t');
    const b = jsonKubeconfigAccess(
      kubeconfig({ server: 'https://h:6443' }, { tokenFile: 'tok' }),
      path.join(d, 'c'),
    )!;
    assert.equal(await auth(b), 'Bearer from-file');
  });
  test('a client certificate: no Authorization header, the TLS material on the agent', async () => {
    const a = jsonKubeconfigAccess(
      kubeconfig(
        { server: 'https://h:6443', 'certificate-authority-data': Buffer.from('CA').toString('base64') },
        {
          'client-certificate-data': Buffer.from('CERT').toString('base64'),
          'client-key-data': Buffer.from('KEY').toString('base64'),
        },
      ),
      '/x/c',
    )!;
    const o: HeaderedOptions = { headers: {} };
    await a.apply(o);
    assert.equal(o.headers['Authorization'], undefined);
    const agent = o.agent as unknown as {
      options: { ca?: Buffer; cert?: Buffer; key?: Buffer; keepAlive?: boolean };
    };
    assert.deepEqual(
      [
        agent.options.ca?.toString(),
        agent.options.cert?.toString(),
        agent.options.key?.toString(),
        agent.options.keepAlive,
      ],
      ['CA', 'CERT', 'KEY', true],
    );
  });
  test('anything else is left to client-node: YAML, exec plugins, proxies, broken JSON', () => {
    for (const text of [
      'apiVersion: v1\nkind: Config\n',
      kubeconfig({ server: 'https://h' }, { exec: { command: 'aws' } }),
      kubeconfig({ server: 'https://h', 'proxy-url': 'http://p' }, { token: 't' }),
      '{"broken',
      kubeconfig({}, { token: 't' }),
    ])
      assert.equal(jsonKubeconfigAccess(text, '/x/c'), undefined, text);
  });
});

describe('which source', () => {
  test('KUBECONFIG wins over the in-cluster env; one JSON file is read without client-node', async () => {
    const d = dir({ c: kubeconfig({ server: 'https://k:1' }, { token: 't' }) });
    const a = await loadKubeAccess({
      KUBECONFIG: path.join(d, 'c'),
      KUBERNETES_SERVICE_HOST: 'in',
      KUBERNETES_SERVICE_PORT: '1',
    });
    assert.equal(a.server, 'https://k:1');
    assert.match(a.source, /^kubeconfig /);
  });
  test('a YAML kubeconfig goes to client-node (same server, same token)', async () => {
    const d = dir({
      c: [
        'apiVersion: v1',
        'kind: Config',
        'current-context: x',
        'contexts: [{name: x, context: {cluster: c, user: u}}]',
        'clusters: [{name: c, cluster: {server: "https://yaml:2", insecure-skip-tls-verify: true}}]',
        'users: [{name: u, user: {token: yaml-token}}]',
        '',
      ].join('\n'),
    });
    const a = await loadKubeAccess({ KUBECONFIG: path.join(d, 'c'), HOME: d });
    assert.equal(a.server, 'https://yaml:2');
    assert.equal(await auth(a), 'Bearer yaml-token');
  });
});
